//! The node as a library: its configuration and the wiring of every component into a running
//! node. The `nimbus` binary parses arguments and calls [`node::run`]; the in-process test
//! harness (`tests/`) calls [`node::serve`] with a listener on port 0 and a data directory of
//! its own.

#![forbid(unsafe_code)]

pub mod config;
pub mod node;
