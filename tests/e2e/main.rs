//! End-to-end tests: drive the built `mover` binary (`cargo build -p mover-cli` first) with
//! `std::process::Command`, each test in its own temporary directory.
//!
//! Tests that need root (tmpfs mounts, loop devices) skip loudly when not root, and fail
//! instead when `CI=true`.

mod archive;
mod corruption;
mod crash;
mod dedup;
mod devices;
mod diskfull;
mod encryption;
mod errors;
mod faultproxy;
mod files;
mod incremental;
mod integration;
mod layout;
mod lifecycle;
mod lifecycle_review;
mod nbd;
mod operations;
mod pipes;
mod props;
mod recipes;
mod roundtrip;
mod s3;
mod snapshots;
mod util;
