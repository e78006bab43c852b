//! reversa: backup, export and reversibility of SaaS tenants' data. See ARCHITECTURE.md for the
//! code map and the invariants, and DESIGN.md (shared) for the concepts.

pub mod chunker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod export;
pub mod generation;
pub mod keys;
pub mod progress;
pub mod repository;
pub mod seed;
pub mod source;
pub mod store;
pub mod tenant;

/// The current time as RFC 3339 UTC with seconds, for manifests and keystore entries.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An id that sorts by creation time: `20261123T064500Z-1a2b3c4d` (UTC, then 32 random bits so
/// two ids made in the same second differ).
pub fn time_sortable_id() -> String {
    let ts = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
    format!("{ts}-{:08x}", rand::random::<u32>())
}
