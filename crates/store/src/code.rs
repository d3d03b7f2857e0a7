//! The content-addressed code store: zips kept under their sha256, unpacked once for workers.
//!
//! Every zip is fully checked before it is accepted: entry names may not leave the package
//! (`..`, absolute paths, drive letters, backslashes), symlinks are refused, and the unpacked
//! size is counted from the bytes actually inflated, not from the sizes the zip claims.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use nimbus_types::CodeRef;
use nimbus_types::limits::{MAX_UNZIPPED_BYTES, MAX_ZIP_ENTRIES};
use sha2::{Digest, Sha256};

use crate::{Error, Result, io_err};

pub trait CodeStore: Send + Sync {
    /// Checks and stores a zip; returns its content address.
    fn put_zip(&self, zip: &[u8]) -> Result<CodeRef>;
    /// The directory holding the package unpacked, unpacking it first if needed.
    fn unpacked(&self, code: &CodeRef) -> Result<PathBuf>;
    /// The zip as it was uploaded.
    fn read_zip(&self, code: &CodeRef) -> Result<Vec<u8>>;
    /// Forgets a package no function uses any more.
    fn remove(&self, sha256: &str) -> Result<()>;
}

pub struct LocalCodeStore {
    root: PathBuf,
}

impl LocalCodeStore {
    pub fn open(root: &Path) -> Result<Self> {
        for sub in ["zips", "unpacked", "tmp"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        // Leftovers of an unpack interrupted by a crash.
        let tmp = root.join("tmp");
        if let Ok(entries) = fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// Whether the package with this digest is stored here.
    pub fn contains(&self, sha: &str) -> bool {
        is_sha_hex(sha) && self.zip_path(sha).is_file()
    }

    fn zip_path(&self, sha: &str) -> PathBuf {
        self.root.join("zips").join(format!("{sha}.zip"))
    }

    fn unpacked_path(&self, sha: &str) -> PathBuf {
        self.root.join("unpacked").join(sha)
    }

    /// Unpacks into a private temporary directory and renames it into place, so a reader never
    /// sees a half-written package.
    fn unpack_into_place(&self, zip: &[u8], sha: &str) -> Result<PathBuf> {
        let target = self.unpacked_path(sha);
        if target.is_dir() {
            return Ok(target);
        }
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{sha}-{}", std::process::id()))
            .join(format!("{:x}", rand_suffix()));
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let result = unpack(zip, &tmp).and_then(|()| match fs::rename(&tmp, &target) {
            Ok(()) => Ok(()),
            // Another request unpacked the same package first.
            Err(_) if target.is_dir() => Ok(()),
            Err(e) => Err(io_err(&target)(e)),
        });
        if let Some(parent) = tmp.parent() {
            let _ = fs::remove_dir_all(parent);
        }
        result.map(|()| target)
    }
}

fn rand_suffix() -> u128 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    nanos ^ (std::thread::current().id().as_u64_hint() as u128) << 64
}

trait ThreadIdHint {
    fn as_u64_hint(&self) -> u64;
}

impl ThreadIdHint for std::thread::ThreadId {
    fn as_u64_hint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

impl CodeStore for LocalCodeStore {
    fn put_zip(&self, zip: &[u8]) -> Result<CodeRef> {
        let sha = hex(&Sha256::digest(zip));
        self.unpack_into_place(zip, &sha)?;
        let path = self.zip_path(&sha);
        if !path.is_file() {
            let tmp = path.with_extension(format!("zip.{:x}", rand_suffix()));
            fs::write(&tmp, zip).map_err(io_err(&tmp))?;
            fs::rename(&tmp, &path).map_err(io_err(&path))?;
        }
        Ok(CodeRef {
            sha256: sha,
            size: zip.len() as u64,
        })
    }

    fn unpacked(&self, code: &CodeRef) -> Result<PathBuf> {
        let target = self.unpacked_path(&code.sha256);
        if is_sha_hex(&code.sha256) && target.is_dir() {
            return Ok(target);
        }
        let zip = self.read_zip(code)?;
        self.unpack_into_place(&zip, &code.sha256)
    }

    fn read_zip(&self, code: &CodeRef) -> Result<Vec<u8>> {
        if !is_sha_hex(&code.sha256) {
            return Err(Error::InvalidCode(format!(
                "malformed code digest {:?}",
                code.sha256
            )));
        }
        let path = self.zip_path(&code.sha256);
        let zip = fs::read(&path).map_err(io_err(&path))?;
        // The file is trusted only as far as its name says: check the digest again.
        if hex(&Sha256::digest(&zip)) != code.sha256 {
            return Err(Error::InvalidCode(format!(
                "code package {} is corrupt in the code store",
                code.sha256
            )));
        }
        Ok(zip)
    }

    fn remove(&self, sha256: &str) -> Result<()> {
        if !is_sha_hex(sha256) {
            return Ok(());
        }
        let zip = self.zip_path(sha256);
        match fs::remove_file(&zip) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&zip)(e)),
        }
        let dir = self.unpacked_path(sha256);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&dir)(e)),
        }
    }
}

pub use nimbus_types::hex::encode as hex;

fn is_sha_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks one entry name and turns it into a path below the package root.
fn safe_entry_path(name: &str) -> Result<PathBuf> {
    let invalid = |why: &str| Err(Error::InvalidCode(format!("zip entry {name:?} {why}")));
    if name.is_empty() || name.contains('\0') {
        return invalid("has an empty or invalid name");
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return invalid("is an absolute path");
    }
    if name.contains('\\') {
        return invalid("contains a backslash");
    }
    if name.as_bytes().get(1) == Some(&b':') {
        return invalid("starts with a drive letter");
    }
    let mut path = PathBuf::new();
    for part in name.split('/') {
        match part {
            "" | "." => continue,
            ".." => return invalid("leaves the package with '..'"),
            part => path.push(part),
        }
    }
    Ok(path)
}

fn unpack(zip: &[u8], dest: &Path) -> Result<()> {
    let bad = |e: zip::result::ZipError| {
        Error::InvalidCode(format!("could not unzip the code package: {e}"))
    };
    let mut archive = zip::ZipArchive::new(io::Cursor::new(zip)).map_err(bad)?;
    if archive.len() > MAX_ZIP_ENTRIES {
        return Err(Error::InvalidCode(format!(
            "the code package has {} entries; at most {MAX_ZIP_ENTRIES} are allowed",
            archive.len()
        )));
    }
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(bad)?;
        let relative = safe_entry_path(entry.name())?;
        if entry.is_symlink() {
            return Err(Error::InvalidCode(format!(
                "zip entry {:?} is a symbolic link; links are not allowed",
                entry.name()
            )));
        }
        if relative.as_os_str().is_empty() {
            continue;
        }
        let target = dest.join(&relative);
        if entry.is_dir() {
            fs::create_dir_all(&target).map_err(io_err(&target))?;
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Error::InvalidCode(format!("zip entry {:?} appears twice", entry.name()))
                } else {
                    io_err(&target)(e)
                }
            })?;
        // Never trust the size the zip declares: count what actually comes out.
        let allowed = MAX_UNZIPPED_BYTES - total;
        let mut limited = (&mut entry).take(allowed + 1);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = limited.read(&mut buf).map_err(|e| {
                Error::InvalidCode(format!("could not unzip the code package: {e}"))
            })?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > MAX_UNZIPPED_BYTES {
                return Err(Error::InvalidCode(format!(
                    "Unzipped size must be smaller than {MAX_UNZIPPED_BYTES} bytes"
                )));
            }
            file.write_all(&buf[..n]).map_err(io_err(&target))?;
        }
        let executable = entry.unix_mode().is_some_and(|m| m & 0o111 != 0);
        set_mode(&target, executable)?;
    }
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, executable: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if executable { 0o555 } else { 0o444 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _executable: bool) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        for (name, data) in entries {
            w.start_file(*name, SimpleFileOptions::default()).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn stores_by_digest_and_unpacks() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalCodeStore::open(dir.path()).unwrap();
        let zip = zip_of(&[("a/b.txt", b"hello"), ("c.wasm", b"\0asm")]);
        let code = store.put_zip(&zip).unwrap();
        assert_eq!(code.sha256, hex(&Sha256::digest(&zip)));
        let root = store.unpacked(&code).unwrap();
        assert_eq!(fs::read(root.join("a/b.txt")).unwrap(), b"hello");
        // Unpacking again after the directory is gone works from the stored zip.
        fs::remove_dir_all(&root).unwrap();
        assert!(store.unpacked(&code).unwrap().join("c.wasm").is_file());
        store.remove(&code.sha256).unwrap();
        assert!(store.unpacked(&code).is_err());
    }

    #[test]
    fn refuses_paths_that_escape() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalCodeStore::open(dir.path()).unwrap();
        for name in [
            "../evil",
            "a/../../evil",
            "/etc/evil",
            "C:/evil",
            "a\\..\\evil",
        ] {
            let err = store.put_zip(&zip_of(&[(name, b"x")])).unwrap_err();
            assert!(matches!(err, Error::InvalidCode(_)), "{name}: {err}");
        }
        assert!(!dir.path().parent().unwrap().join("evil").exists());
    }

    #[test]
    fn refuses_garbage_and_bombs() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalCodeStore::open(dir.path()).unwrap();
        assert!(matches!(
            store.put_zip(b"not a zip"),
            Err(Error::InvalidCode(_))
        ));
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        w.start_file("zeros", options).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..251 {
            w.write_all(&chunk).unwrap();
        }
        let bomb = w.finish().unwrap().into_inner();
        let err = store.put_zip(&bomb).unwrap_err();
        assert!(err.to_string().contains("Unzipped size"), "{err}");
        // Nothing half-unpacked is left behind.
        assert_eq!(
            fs::read_dir(dir.path().join("unpacked")).unwrap().count(),
            0
        );
    }
}
