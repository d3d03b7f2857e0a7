//! Builds the Node.js runtime's SnapStart addon (`runtimes/node/snapshot.rs`, a Node-API
//! module without dependencies) into `OUT_DIR`, where `process.rs` embeds it.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "runtimes/node/snapshot.rs";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("snapshot.node");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("TARGET");
    let status = Command::new(rustc)
        .args([
            "--edition=2021",
            "--crate-type=cdylib",
            "--crate-name=nimbus_node_snapshot",
            "-Copt-level=2",
            "-Cpanic=abort",
            "-Cstrip=symbols",
            "--target",
            &target,
            source,
            "-o",
        ])
        .arg(&out)
        .status()
        .expect("running rustc for the Node.js SnapStart addon");
    assert!(
        status.success(),
        "building the Node.js SnapStart addon failed"
    );
}
