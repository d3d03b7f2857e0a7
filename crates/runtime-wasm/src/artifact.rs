//! The on-disk cache of compiled modules.
//!
//! An artifact is native code, so loading one is `unsafe`: wasmtime trusts that the bytes are
//! what it produced. Artifacts live in the node's private data directory, are written only by
//! this module, and are checked against a sha256 recorded beside them before they are loaded, so
//! a truncated or corrupted file is recompiled instead of executed.

use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

pub(crate) fn digest(bytes: &[u8]) -> String {
    nimbus_types::hex::encode(&Sha256::digest(bytes))
}

pub(crate) fn load(engine: &Engine, dir: &Path, key: &str) -> Option<Module> {
    let bytes = fs::read(dir.join(format!("{key}.cwasm"))).ok()?;
    let recorded = fs::read_to_string(dir.join(format!("{key}.cwasm.sha256"))).ok()?;
    if digest(&bytes) != recorded.trim() {
        tracing::warn!(
            module = key,
            "cached wasm artifact does not match its checksum; recompiling"
        );
        return None;
    }
    // SAFETY: the bytes were produced by `Module::serialize` in `store` below, in a directory
    // only this node writes, and match the checksum written with them; wasmtime additionally
    // rejects artifacts from another version or configuration of the engine.
    #[allow(unsafe_code)]
    let module = unsafe { Module::deserialize(engine, &bytes) };
    match module {
        Ok(module) => Some(module),
        Err(e) => {
            tracing::info!(module = key, error = %e, "cached wasm artifact is stale; recompiling");
            None
        }
    }
}

pub(crate) fn store(dir: &Path, key: &str, module: &Module) {
    let bytes = match module.serialize() {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(module = key, error = %e, "could not serialise a compiled module");
            return;
        }
    };
    let tmp = dir.join(format!("{key}.cwasm.tmp{}", std::process::id()));
    let result = fs::write(&tmp, &bytes)
        .and_then(|()| fs::write(dir.join(format!("{key}.cwasm.sha256")), digest(&bytes)))
        .and_then(|()| fs::rename(&tmp, dir.join(format!("{key}.cwasm"))));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        tracing::warn!(module = key, error = %e, "could not cache a compiled module");
    }
}
