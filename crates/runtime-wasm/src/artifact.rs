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

pub(crate) fn load<A: Artifact>(engine: &Engine, dir: &Path, key: &str) -> Option<A> {
    let file = dir.join(format!("{key}.{}", A::SUFFIX));
    let bytes = fs::read(&file).ok()?;
    let recorded = fs::read_to_string(dir.join(format!("{key}.{}.sha256", A::SUFFIX))).ok()?;
    if digest(&bytes) != recorded.trim() {
        tracing::warn!(
            artifact = %file.display(),
            "cached wasm artifact does not match its checksum; recompiling"
        );
        return None;
    }
    // SAFETY: the bytes were produced by `Artifact::serialize` in `store` below, in a directory
    // only this node writes, and match the checksum written with them; wasmtime additionally
    // rejects artifacts from another version or configuration of the engine.
    #[allow(unsafe_code)]
    let artifact = unsafe { A::deserialize(engine, &bytes) };
    match artifact {
        Ok(artifact) => Some(artifact),
        Err(e) => {
            tracing::info!(artifact = %file.display(), error = %e, "cached wasm artifact is stale; recompiling");
            None
        }
    }
}

pub(crate) fn store<A: Artifact>(dir: &Path, key: &str, artifact: &A) {
    let bytes = match artifact.serialize() {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(artifact = key, error = %e, "could not serialise compiled code");
            return;
        }
    };
    let suffix = A::SUFFIX;
    let tmp = dir.join(format!("{key}.{suffix}.tmp{}", std::process::id()));
    let result = fs::write(&tmp, &bytes)
        .and_then(|()| fs::write(dir.join(format!("{key}.{suffix}.sha256")), digest(&bytes)))
        .and_then(|()| fs::rename(&tmp, dir.join(format!("{key}.{suffix}"))));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        tracing::warn!(artifact = key, error = %e, "could not cache compiled code");
    }
}
