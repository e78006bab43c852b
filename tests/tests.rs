//! One integration test binary (so the crate links once), one module per area.

mod common;
mod store_contract;

mod audit;
mod cli;
mod dir_store;
mod drill;
mod export;
mod foundation;
mod incremental;
mod integrity;
mod lifecycle;
mod prune;
mod retention;
mod s3_store;
mod snapshots;
mod vectors;
