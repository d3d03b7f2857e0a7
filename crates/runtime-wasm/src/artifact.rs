//! The on-disk cache of compiled modules and components.
//!
//! An artifact is native code, so loading one is `unsafe`: wasmtime trusts that the bytes are
//! what it produced. Artifacts live in the node's private data directory, are written only by
//! this module, and are checked against a sha256 recorded beside them before they are loaded, so
//! a truncated or corrupted file is recompiled instead of executed.

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

pub(crate) fn digest(bytes: &[u8]) -> String {
    nimbus_types::hex::encode(&Sha256::digest(bytes))
}

/// What can be cached: a core module (`KEY.cwasm`) or a component (`KEY.cwasm-component`).
pub(crate) trait Artifact: Sized + Clone {
    const SUFFIX: &'static str;
    /// What the user deployed, as error messages name it.
    const WHAT: &'static str;
    fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self>;
    fn serialize(&self) -> wasmtime::Result<Vec<u8>>;
    /// # Safety
    /// `bytes` must come from [`Artifact::serialize`] on an engine of the same configuration.
    #[allow(unsafe_code)]
    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self>;
}

impl Artifact for Module {
    const SUFFIX: &'static str = "cwasm";
    const WHAT: &'static str = "the wasm module";
    fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        Module::new(engine, bytes)
    }
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        Module::serialize(self)
    }
    #[allow(unsafe_code)]
    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: forwarded from the caller's promise.
        unsafe { Module::deserialize(engine, bytes) }
    }
}

impl Artifact for Component {
    const SUFFIX: &'static str = "cwasm-component";
    const WHAT: &'static str = "the component";
    fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        Component::new(engine, bytes)
    }
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        Component::serialize(self)
    }
    #[allow(unsafe_code)]
    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: forwarded from the caller's promise.
        unsafe { Component::deserialize(engine, bytes) }
    }
}

/// The bytes cached under `name`, if they match the checksum written with them.
pub(crate) fn load_bytes(dir: &Path, name: &str) -> Option<Vec<u8>> {
    let file = dir.join(name);
    let bytes = fs::read(&file).ok()?;
    let recorded = fs::read_to_string(dir.join(format!("{name}.sha256"))).ok()?;
    if digest(&bytes) != recorded.trim() {
        tracing::warn!(
            artifact = %file.display(),
            "cached wasm artifact does not match its checksum; making it again"
        );
        return None;
    }
    Some(bytes)
}

/// Caches `bytes` under `name`, with their checksum; each file appears whole or not at all,
/// and concurrent writers of one name never share a temporary file.
pub(crate) fn store_bytes(dir: &Path, name: &str, bytes: &[u8]) {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = format!(
        "tmp{}-{}",
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let tmp = dir.join(format!("{name}.{unique}"));
    let tmp_sum = dir.join(format!("{name}.sha256.{unique}"));
    let result = fs::write(&tmp, bytes)
        .and_then(|()| fs::write(&tmp_sum, digest(bytes)))
        .and_then(|()| fs::rename(&tmp_sum, dir.join(format!("{name}.sha256"))))
        .and_then(|()| fs::rename(&tmp, dir.join(name)));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        let _ = fs::remove_file(&tmp_sum);
        tracing::warn!(artifact = name, error = %e, "could not cache a wasm artifact");
    }
}

pub(crate) fn load<A: Artifact>(engine: &Engine, dir: &Path, key: &str) -> Option<A> {
    let name = format!("{key}.{}", A::SUFFIX);
    let bytes = load_bytes(dir, &name)?;
    // SAFETY: the bytes were produced by `Artifact::serialize` in `store` below, in a directory
    // only this node writes, and match the checksum written with them; wasmtime additionally
    // rejects artifacts from another version or configuration of the engine.
    #[allow(unsafe_code)]
    let artifact = unsafe { A::deserialize(engine, &bytes) };
    match artifact {
        Ok(artifact) => Some(artifact),
        Err(e) => {
            tracing::info!(artifact = %name, error = %e, "cached wasm artifact is stale; recompiling");
            None
        }
    }
}

pub(crate) fn store<A: Artifact>(dir: &Path, key: &str, artifact: &A) {
    match artifact.serialize() {
        Ok(bytes) => store_bytes(dir, &format!("{key}.{}", A::SUFFIX), &bytes),
        Err(e) => tracing::warn!(artifact = key, error = %e, "could not serialise compiled code"),
    }
}
