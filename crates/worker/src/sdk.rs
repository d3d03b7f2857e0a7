//! The AWS SDK for Python (boto3) that Python functions import without packaging it, as
//! AWS's Python runtimes provide it. nimbus installs a pinned version from PyPI once per
//! machine into a cache directory, with the Python that runs functions (so that its compiled
//! bytecode is the one the sandboxes use), and binds it read-only into every sandbox at
//! [`PYTHON_SDK_MOUNT`], after the function's own code on `sys.path`: a function that ships
//! its own boto3 gets its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The boto3 release functions get (botocore follows it).
pub const BOTO3_VERSION: &str = "1.43.11";

/// Where the SDK appears inside a sandbox.
pub const PYTHON_SDK_MOUNT: &str = "/var/runtime/python/sdk";

/// The cache directory for nimbus's downloads: `NIMBUS_CACHE_DIR`, else `XDG_CACHE_HOME/nimbus`,
/// else `~/.cache/nimbus`, else `/var/cache/nimbus`.
pub fn cache_root() -> PathBuf {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("NIMBUS_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("nimbus")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("nimbus")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/nimbus"))
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("could not run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        Err(format!(
            "{command:?} failed ({}): {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    }
}

/// The directory holding boto3 for `python3.MINOR` under `cache`, installed from PyPI the
/// first time. Blocking; takes a few seconds once per machine and Python version.
pub fn ensure_python_sdk(cache: &Path, minor: u8) -> Result<PathBuf, String> {
    let dir = cache.join(format!("python-sdk/boto3-{BOTO3_VERSION}-py3.{minor}"));
    if dir.join(".complete").is_file() {
        return Ok(dir);
    }
    let parent = dir.parent().unwrap_or(cache);
    std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    let staging = parent.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let python = format!("/usr/bin/python3.{minor}");
    let pin = format!("boto3=={BOTO3_VERSION}");
    let common = [
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-input",
        "--disable-pip-version-check",
        "--target",
    ];
    // The functions' own Python first; if it has no pip, another pip that fetches wheels for
    // that version (boto3 and its dependencies are pure Python).
    let installed =
        run(Command::new(&python).args(common).arg(&staging).arg(&pin)).or_else(|first| {
            let _ = std::fs::remove_dir_all(&staging);
            run(Command::new("python3")
                .args(common)
                .arg(&staging)
                .args([
                    "--only-binary=:all:",
                    "--python-version",
                    &format!("3.{minor}"),
                ])
                .arg(&pin))
            .map_err(|second| format!("{first}; then {second}"))
        });
    if let Err(e) = installed {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    // Bytecode for the functions' Python, since the sandbox cannot write it.
    let _ = run(Command::new(&python)
        .args(["-m", "compileall", "-q"])
        .arg(&staging));
    std::fs::write(staging.join(".complete"), BOTO3_VERSION)
        .map_err(|e| format!("marking {}: {e}", staging.display()))?;
    if std::fs::rename(&staging, &dir).is_err() {
        // Another node finished first: use its copy.
        let _ = std::fs::remove_dir_all(&staging);
        if !dir.join(".complete").is_file() {
            return Err(format!("could not move the SDK into {}", dir.display()));
        }
    }
    Ok(dir)
}
