//! # llm-common: the helpers every llm-e2e crate shares
//!
//! The lowest layer of the workspace; it depends on nothing but `std`.
//!
//! - [`fs::atomic_write`]: write a file so that a crash leaves the old file or the new one,
//!   never half of either (temporary file, `fsync`, rename, `fsync` of the directory);
//!   [`fs::atomic_write_with`] streams the contents in.
//! - [`fs::remove_stale_temps`]: clear the temporary files that a killed writer left behind.
//! - [`fs::DirLock`]: one process at a time in a directory (a run, say).
//! - [`failpoint`]: stop a writer at a chosen moment, so tests can `kill -9` it there.
//! - [`bench`]: what the benchmarks share (this process's RSS, medians of timed runs).
//! - [`hf`]: the Hugging Face hub cache, offline mode and endpoint, from the environment.

pub mod bench;
pub mod failpoint;
pub mod fs;
pub mod hf;
