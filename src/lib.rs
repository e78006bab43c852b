//! reversa: backup, export and reversibility of SaaS tenants' data. See ARCHITECTURE.md for the
//! code map and the invariants, and DESIGN.md (shared) for the concepts.

// The CLI's future nests every verb's (a tick runs jobs that run the verbs): the compiler's
// layout query of it goes deeper than the default 128 in test builds.
#![recursion_limit = "256"]

pub mod api;
pub mod audit;
pub mod certificate;
pub mod chunker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod drill;
pub mod export;
pub mod generation;
pub mod jobs;
pub mod keys;
pub mod lifecycle;
pub mod notices;
pub mod pool;
pub mod progress;
pub mod repository;
pub mod retention;
pub mod seed;
pub mod signed;
pub mod source;
pub mod store;
pub mod tenant;
pub mod units;

/// Environment variable that sets reversa's clock (RFC 3339), for simulations of many days in
/// tests and drills. Never set it in production: generation times and retention follow it.
pub const NOW_ENV: &str = "REVERSA_NOW";

/// The simulated time, when the CLI was given one ([`NOW_ENV`]).
static SIMULATED: std::sync::OnceLock<jiff::Timestamp> = std::sync::OnceLock::new();

/// Run this process on a simulated clock stopped at `at` (the CLI does, for `REVERSA_NOW`;
/// the environment is read there and nowhere below). Only the first call counts.
pub fn simulate_clock(at: jiff::Timestamp) {
    let _ = SIMULATED.set(at);
}

/// The current time: the system clock, or the simulated one (see [`simulate_clock`]). Every
/// time reversa records or compares against goes through here.
pub fn now() -> jiff::Timestamp {
    SIMULATED.get().copied().unwrap_or_else(jiff::Timestamp::now)
}

/// The simulated time, when this process runs on one (recorded in the audit log).
pub fn simulated_now() -> Option<jiff::Timestamp> {
    SIMULATED.get().copied()
}

/// The current time as RFC 3339 UTC with seconds, for manifests and keystore entries.
pub fn now_rfc3339() -> String {
    now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An id that sorts by creation time: `20261123T064500.123456Z-1a2b3c4d` (UTC to the
/// microsecond, then 32 random bits so ids made at the same instant still differ). Generations
/// of a tenant are made one at a time under its lock, so microseconds order them; whole seconds
/// did not (two backups within one second sorted at random).
pub fn time_sortable_id() -> String {
    sortable_id_at(now())
}

/// A [`time_sortable_id`] for the time `at`.
pub fn sortable_id_at(at: jiff::Timestamp) -> String {
    format!("{}.{:06}Z-{:08x}", at.strftime("%Y%m%dT%H%M%S"), at.subsec_microsecond(), rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_made_in_sequence_sort_in_sequence() {
        let ids: Vec<String> = (0..200).map(|_| super::time_sortable_id()).collect();
        // Equal microseconds may swap; consecutive distinct instants never do.
        for w in ids.windows(2) {
            assert!(w[0][..23] <= w[1][..23], "{} then {}", w[0], w[1]);
        }
        assert_eq!(ids[0].len(), "20261123T064500.123456Z-1a2b3c4d".len());
    }
}
