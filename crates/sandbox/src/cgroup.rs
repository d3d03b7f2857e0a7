//! Per-sandbox cgroups: memory = MemorySize (no swap), a pids limit, a CPU weight proportional
//! to memory. Works with the unified hierarchy (v2) and with the v1 controllers mounted
//! separately.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Error, Result, os};

const ROOT: &str = "/sys/fs/cgroup";
/// The parent of every sandbox's cgroup.
const PARENT: &str = "nimbus";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// What a sandbox's cgroup reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Highest memory use since the last reset.
    pub peak_memory_bytes: u64,
    /// Processes the kernel killed for running out of memory.
    pub oom_kills: u64,
}

pub(crate) struct Cgroup {
    version: CgroupVersion,
    /// v2: one directory. v1: memory, pids, cpu, in that order.
    dirs: Vec<PathBuf>,
    /// The peak-memory file, kept open: it is read after every invocation.
    peak: Option<fs::File>,
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(os(format!("writing {}", path.display())))
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reads `key value` lines, as in memory.events or memory.oom_control.
fn read_key(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Removes the cgroups of sandboxes whose node is gone (killed without a chance to clean up):
/// cgroup names start with the node's pid. Their processes died with the node; what is left is
/// empty directories, or processes to kill first. Returns how many were removed.
pub fn remove_stale() -> usize {
    let alive = |pid: &str| Path::new("/proc").join(pid).exists();
    let parents = [
        Path::new(ROOT).join(PARENT),
        Path::new(ROOT).join("memory").join(PARENT),
        Path::new(ROOT).join("pids").join(PARENT),
        Path::new(ROOT).join("cpu").join(PARENT),
    ];
    let mut removed = 0;
    for parent in parents {
        let Ok(entries) = fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((pid, _)) = name.split_once('-') else {
                continue;
            };
            if !entry.path().is_dir() || alive(pid) {
                continue;
            }
            let stale = Cgroup {
                version: if parent.starts_with(Path::new(ROOT).join("memory"))
                    || parent.starts_with(Path::new(ROOT).join("pids"))
                    || parent.starts_with(Path::new(ROOT).join("cpu"))
                {
                    CgroupVersion::V1
                } else {
                    CgroupVersion::V2
                },
                dirs: vec![entry.path()],
                peak: None,
            };
            stale.kill_all();
            stale.remove();
            removed += 1;
        }
    }
    removed
}

impl Cgroup {
    pub(crate) fn detect() -> Result<CgroupVersion> {
        if Path::new(ROOT).join("cgroup.controllers").is_file() {
            return Ok(CgroupVersion::V2);
        }
        let v1_ok = ["memory", "pids", "cpu"]
            .iter()
            .all(|c| Path::new(ROOT).join(c).join("tasks").is_file());
        if v1_ok {
            Ok(CgroupVersion::V1)
        } else {
            Err(Error::Unsupported(
                "no usable cgroup hierarchy (need v2, or v1 with memory, pids and cpu)".into(),
            ))
        }
    }

    /// Creates the cgroup with no limits yet; [`Cgroup::set_limits`] follows before the program runs.
    pub(crate) fn create(name: &str) -> Result<Self> {
        let version = Self::detect()?;
        let cgroup = match version {
            CgroupVersion::V2 => {
                let parent = Path::new(ROOT).join(PARENT);
                if !parent.is_dir() {
                    fs::create_dir_all(&parent).map_err(os("creating the nimbus cgroup"))?;
                }
                // Controllers must be enabled from the root down to the sandbox's parent.
                let _ = fs::write(
                    Path::new(ROOT).join("cgroup.subtree_control"),
                    "+memory +pids +cpu",
                );
                write(&parent.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
                let dir = parent.join(name);
                fs::create_dir(&dir).map_err(os(format!("creating cgroup {}", dir.display())))?;
                let peak = fs::File::open(dir.join("memory.peak")).ok();
                Cgroup {
                    version,
                    dirs: vec![dir],
                    peak,
                }
            }
            CgroupVersion::V1 => {
                let mut dirs = Vec::new();
                for controller in ["memory", "pids", "cpu"] {
                    let dir = Path::new(ROOT).join(controller).join(PARENT).join(name);
                    fs::create_dir_all(&dir)
                        .map_err(os(format!("creating cgroup {}", dir.display())))?;
                    dirs.push(dir);
                }
                let peak = fs::File::open(dirs[0].join("memory.max_usage_in_bytes")).ok();
                Cgroup {
                    version,
                    dirs,
                    peak,
                }
            }
        };
        Ok(cgroup)
    }

    /// Memory = MemorySize without swap, the pids limit, and a CPU weight proportional to memory.
    pub(crate) fn set_limits(&self, memory_mb: u32, pids_max: u32) -> Result<()> {
        let memory = (memory_mb as u64) << 20;
        match self.version {
            CgroupVersion::V2 => {
                let dir = &self.dirs[0];
                write(&dir.join("memory.max"), &memory.to_string())?;
                let _ = fs::write(dir.join("memory.swap.max"), "0");
                write(&dir.join("pids.max"), &pids_max.to_string())?;
                let weight = (memory_mb as u64 * 100 / 1024).clamp(1, 10_000);
                write(&dir.join("cpu.weight"), &weight.to_string())?;
            }
            CgroupVersion::V1 => {
                let mem = &self.dirs[0];
                write(&mem.join("memory.limit_in_bytes"), &memory.to_string())?;
                // Without swap accounting the file is absent; with it, forbid swapping past the limit.
                let _ = fs::write(mem.join("memory.memsw.limit_in_bytes"), memory.to_string());
                let _ = fs::write(mem.join("memory.swappiness"), "0");
                write(&self.dirs[1].join("pids.max"), &pids_max.to_string())?;
                write(
                    &self.dirs[2].join("cpu.shares"),
                    &memory_mb.max(2).to_string(),
                )?;
            }
        }
        Ok(())
    }

    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// The highest memory use of the sandbox so far.
    pub(crate) fn peak_memory_bytes(&self) -> u64 {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 32];
        self.peak
            .as_ref()
            .and_then(|f| f.read_at(&mut buf, 0).ok())
            .and_then(|n| std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok())
            .unwrap_or(0)
    }

    pub(crate) fn stats(&self) -> CgroupStats {
        let Some(dir) = self.dirs.first() else {
            return CgroupStats::default();
        };
        match self.version {
            CgroupVersion::V2 => CgroupStats {
                peak_memory_bytes: read_u64(&dir.join("memory.peak")).unwrap_or(0),
                oom_kills: read_key(&dir.join("memory.events"), "oom_kill").unwrap_or(0),
            },
            CgroupVersion::V1 => CgroupStats {
                peak_memory_bytes: read_u64(&dir.join("memory.max_usage_in_bytes")).unwrap_or(0),
                oom_kills: read_key(&dir.join("memory.oom_control"), "oom_kill").unwrap_or(0),
            },
        }
    }

    pub(crate) fn pids(&self) -> Vec<i32> {
        let Some(dir) = self.dirs.first() else {
            return Vec::new();
        };
        fs::read_to_string(dir.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn kill_all(&self) {
        if self.version == CgroupVersion::V2
            && fs::write(self.dirs[0].join("cgroup.kill"), "1").is_ok()
        {
            return;
        }
        // v1 has no cgroup.kill: kill what is listed until nothing is (a fork may race a kill).
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    pub(crate) fn remove(&self) {
        for dir in &self.dirs {
            // The kernel refuses while dying processes are still accounted; retry briefly.
            for _ in 0..100 {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
                }
            }
        }
    }
}
