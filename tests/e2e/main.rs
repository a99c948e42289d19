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
mod files_catalog;
mod files_real;
mod gc_safety;
mod hostile;
mod incremental;
mod integration;
mod layout;
mod lifecycle;
mod lifecycle_review;
mod modules;
mod nbd;
mod operations;
mod pipes;
mod props;
mod recipes;
mod reliability;
mod roundtrip;
mod s3;
mod s3_cluster;
mod s3_config;
mod s3_lock;
mod serve;
mod signals;
mod snapshots;
mod util;
