//! Whole nodes in one process, driven through their HTTP APIs: one test binary for all of them,
//! so the node's code is linked once.

// Test helpers panic on what a test did not expect.
#![allow(clippy::unwrap_used)]

mod support;

mod accounts;
mod gateway;
mod iam;
mod lambda_api;
mod queues;
mod schedules;
