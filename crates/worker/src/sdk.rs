//! The AWS SDKs that functions import without packaging them, as AWS's runtimes provide them:
//! boto3 for Python, the AWS SDK for JavaScript v3 clients of the services nimbus serves for
//! Node.js. nimbus installs pinned versions once per machine into a cache directory (boto3 from
//! PyPI with the Python that runs functions, so that its compiled bytecode is the one the
//! sandboxes use; the JavaScript clients from the npm registry) and binds them read-only into
//! every sandbox, after the function's own code on the module path: a function that ships its
//! own copy gets its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The boto3 release functions get (botocore follows it).
pub const BOTO3_VERSION: &str = "1.43.11";

/// Where the Python SDK appears inside a sandbox.
pub const PYTHON_SDK_MOUNT: &str = "/var/runtime/python/sdk";

/// The release of the AWS SDK for JavaScript v3 Node.js functions get.
pub const JS_SDK_VERSION: &str = "3.1178.0";

/// The JavaScript clients installed: the services nimbus serves.
const JS_CLIENTS: &[&str] = &[
    "@aws-sdk/client-lambda",
    "@aws-sdk/client-s3",
    "@aws-sdk/client-dynamodb",
    "@aws-sdk/lib-dynamodb",
    "@aws-sdk/client-sqs",
    "@aws-sdk/client-eventbridge",
    "@aws-sdk/client-iam",
    "@aws-sdk/client-sts",
    "@aws-sdk/client-cognito-identity-provider",
];

/// Where the JavaScript SDK's `node_modules` appears inside a sandbox (on `NODE_PATH`).
pub const NODE_SDK_MOUNT: &str = "/var/runtime/node_modules";

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

/// `dir` under `cache`, made by `install` into a staging directory the first time and renamed
/// into place when complete (so that a node that stopped half way, or two nodes at once, never
/// leave a half-made copy in use).
fn cached(
    cache: &Path,
    name: &str,
    install: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let dir = cache.join(name);
    if dir.join(".complete").is_file() {
        return Ok(dir);
    }
    let parent = dir.parent().unwrap_or(cache);
    std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    let staging = parent.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    if let Err(e) = install(&staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    std::fs::write(staging.join(".complete"), name)
        .map_err(|e| format!("marking {}: {e}", staging.display()))?;
    if std::fs::rename(&staging, &dir).is_err() {
        // Another node finished first: use its copy.
        let _ = std::fs::remove_dir_all(&staging);
        if !dir.join(".complete").is_file() {
            return Err(format!("could not move {} into place", dir.display()));
        }
    }
    Ok(dir)
}

/// The release of AWS's `snapshot_restore_py` (SnapStart's runtime hooks for Python) functions
/// get, as Lambda's Python runtimes include it.
const SNAPSHOT_RESTORE_PY_VERSION: &str = "1.0.0";

/// The directory holding boto3 and snapshot_restore_py for `python3.MINOR` under `cache`,
/// installed from PyPI the first time. Blocking; takes a few seconds once per machine and
/// Python version.
pub fn ensure_python_sdk(cache: &Path, minor: u8) -> Result<PathBuf, String> {
    let name =
        format!("python-sdk/boto3-{BOTO3_VERSION}-srp-{SNAPSHOT_RESTORE_PY_VERSION}-py3.{minor}");
    cached(cache, &name, |staging| {
        let python = format!("/usr/bin/python3.{minor}");
        let pin = format!("boto3=={BOTO3_VERSION}");
        let hooks = format!("snapshot-restore-py=={SNAPSHOT_RESTORE_PY_VERSION}");
        let common = [
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-input",
            "--disable-pip-version-check",
            "--target",
        ];
        // The functions' own Python first; if it has no pip, another pip that fetches wheels
        // for that version (boto3 and its dependencies are pure Python).
        run(Command::new(&python)
            .args(common)
            .arg(staging)
            .args([&pin, &hooks]))
        .or_else(|first| {
            let _ = std::fs::remove_dir_all(staging);
            run(Command::new("python3")
                .args(common)
                .arg(staging)
                .args([
                    "--only-binary=:all:",
                    "--python-version",
                    &format!("3.{minor}"),
                ])
                .args([&pin, &hooks]))
            .map_err(|second| format!("{first}; then {second}"))
        })?;
        // Bytecode for the functions' Python, since the sandbox cannot write it.
        let _ = run(Command::new(&python)
            .args(["-m", "compileall", "-q"])
            .arg(staging));
        Ok(())
    })
}

/// The `node_modules` directory holding the JavaScript SDK's clients under `cache`,
/// installed from the npm registry the first time. Blocking.
pub fn ensure_node_sdk(cache: &Path) -> Result<PathBuf, String> {
    // The set of clients is part of the name: a cache made for fewer services is not reused.
    let clients = JS_CLIENTS.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
        c.bytes()
            .fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
    });
    let name = format!(
        "node-sdk/aws-sdk-js-{JS_SDK_VERSION}-{:08x}",
        clients as u32
    );
    let dir = cached(cache, &name, |staging| {
        std::fs::create_dir_all(staging)
            .map_err(|e| format!("creating {}: {e}", staging.display()))?;
        run(Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--omit=dev",
                "--no-package-lock",
                "--prefix",
            ])
            .arg(staging)
            .args(JS_CLIENTS.iter().map(|c| format!("{c}@{JS_SDK_VERSION}"))))
    })?;
    Ok(dir.join("node_modules"))
}
