//! One simulated day on the bench tenant: about 1% of the case rows change (half updated,
//! scattered, half inserted, a few deleted), about 1% new files arrive, a document is corrected
//! and a file removed. It reports what reversa and restic 0.14 store for that day and how long
//! each takes, on the same data in the same run; then it runs 13 more days and times the restore
//! of the generation at the end of the longest delta chain against the restore of the full base.
//!
//! Run: `cargo bench --bench daily`. Environment: `BENCH_DIR` (default `target/bench`),
//! `BENCH_SIZE_MB` (default 1000), `BENCH_NO_RESTIC=1`. Figures are printed, never asserted.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "measure.rs"]
mod measure;

use measure::{du, measure, tenant_of};
use reversa::seed::{simulate_day, Day};

const DAY: Day = Day { row_fraction: 0.01, file_fraction: 0.01 };
const SEED: u64 = 42;

fn night_of(n: u64) -> String {
    let t: jiff::Timestamp = "2026-11-01T01:00:00Z".parse().unwrap();
    (t + jiff::SignedDuration::from_hours(24 * n as i64)).to_string()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = PathBuf::from(std::env::var("BENCH_DIR").unwrap_or_else(|_| "target/bench".into()));
    let mb: u64 = std::env::var("BENCH_SIZE_MB").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let restic =
        std::env::var_os("BENCH_NO_RESTIC").is_none() && Command::new("restic").arg("version").output().is_ok();
    let bin = env!("CARGO_BIN_EXE_reversa");

    // A copy of the generated tenant, since the days change it.
    let pristine = tenant_of(&root, mb);
    let run = std::path::absolute(root.join(format!("daily-{mb}"))).unwrap();
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(run.join("source")).unwrap();
    let ok = Command::new("cp").arg("-a").arg(pristine.join("bench")).arg(run.join("source")).status().unwrap();
    assert!(ok.success(), "copy the bench tenant");
    let tenant = run.join("source/bench");
    let config = run.join("reversa.toml");
    std::fs::write(
        &config,
        "[source]\nkind = \"sqlite\"\nroot = \"source\"\n[store]\nkind = \"dir\"\npath = \"store\"\n\
         [keys]\nmaster_key_file = \"master.key\"\n[state]\ndir = \"state\"\n",
    )
    .unwrap();
    let reversa = |args: &[&str], day: u64| {
        let mut c = Command::new(bin);
        c.arg("--config").arg(&config).args(args).env(reversa::NOW_ENV, night_of(day));
        c
    };
    let repo = run.join("restic");
    let restic_cmd = |args: &[&str]| {
        let mut c = Command::new("restic");
        c.args(["-r", repo.to_str().unwrap(), "--quiet"])
            .args(args)
            .env("RESTIC_PASSWORD", "bench")
            .env("RESTIC_CACHE_DIR", run.join("restic-cache"));
        c
    };

    measure(&mut reversa(&["init", "--generate-master-key", run.join("master.key").to_str().unwrap()], 0));
    let full = measure(&mut reversa(&["backup", "--tenant", "bench"], 0));
    let store0 = du(&run.join("store"));
    let restic_full = restic.then(|| {
        measure(&mut restic_cmd(&["init", "--repository-version", "2"]));
        measure(&mut restic_cmd(&["backup", tenant.to_str().unwrap()]))
    });
    let restic0 = if restic { du(&repo) } else { 0 };

    let changes = simulate_day(&run.join("source"), "bench", DAY, SEED, 1).unwrap();
    let day = measure(&mut reversa(&["backup", "--tenant", "bench"], 1));
    let stored = du(&run.join("store")) - store0;
    let restic_day = restic.then(|| measure(&mut restic_cmd(&["backup", tenant.to_str().unwrap()])));
    let restic_stored = if restic { du(&repo) - restic0 } else { 0 };

    println!(
        "\n== one day on a tenant of {:.0} MB ({:.0} MB SQLite)",
        du(&tenant) as f64 / 1e6,
        std::fs::metadata(tenant.join("database.sqlite")).unwrap().len() as f64 / 1e6
    );
    println!(
        "changes: {} rows inserted, {} updated, {} deleted ({:.1} MB of rows); {} files added, {} changed, {} removed \
         ({:.1} MB); all compressed: {:.2} MB",
        changes.inserted,
        changes.updated,
        changes.deleted,
        changes.row_bytes as f64 / 1e6,
        changes.files_added,
        changes.files_changed,
        changes.files_removed,
        changes.file_bytes as f64 / 1e6,
        changes.compressed as f64 / 1e6
    );
    println!("reversa full backup  {:>7.2} s  peak RSS {:>6.1} MiB", full.secs, full.max_rss_mib);
    println!(
        "reversa day backup   {:>7.2} s  peak RSS {:>6.1} MiB  stored {:.2} MB = {:.2}x the compressed changes (target <= 1.5x)",
        day.secs,
        day.max_rss_mib,
        stored as f64 / 1e6,
        stored as f64 / changes.compressed as f64
    );
    if let (Some(rf), Some(rd)) = (restic_full, restic_day) {
        println!("restic full backup   {:>7.2} s  peak RSS {:>6.1} MiB", rf.secs, rf.max_rss_mib);
        println!(
            "restic day backup    {:>7.2} s  peak RSS {:>6.1} MiB  stored {:.2} MB = {:.2}x the compressed changes",
            rd.secs,
            rd.max_rss_mib,
            restic_stored as f64 / 1e6,
            restic_stored as f64 / changes.compressed as f64
        );
        println!(
            "reversa / restic for the day: {:.2}x the bytes, {:.2}x the wall time (target <= 0.33x)",
            stored as f64 / restic_stored as f64,
            day.secs / rd.secs
        );
    }

    // Thirteen more days: the newest generation then sits at the end of a chain of 14 deltas
    // (the default max_delta_chain), the longest restore has to replay.
    for n in 2..=14 {
        simulate_day(&run.join("source"), "bench", DAY, SEED, n).unwrap();
        measure(&mut reversa(&["backup", "--tenant", "bench"], n));
    }
    let listing = reversa(&["generations", "--tenant", "bench", "--json"], 14).output().unwrap();
    let gens: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let ids: Vec<String> = gens
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.get("id").or_else(|| g["manifest"].get("id")).and_then(|v| v.as_str()).unwrap().to_string())
        .collect();
    let restore = |id: &str, to: &Path| {
        let _ = std::fs::remove_dir_all(to);
        measure(&mut reversa(
            &[
                "restore",
                "--tenant",
                "bench",
                "--generation",
                id,
                "--to",
                to.to_str().unwrap(),
                "--recipient",
                "bench",
                "--recipient-kind",
                "provider",
            ],
            14,
        ))
    };
    let base = restore(&ids[0], &run.join("restored-base"));
    let chain = restore(ids.last().unwrap(), &run.join("restored-chain"));
    println!(
        "restore of the full base {:>7.2} s  peak RSS {:>6.1} MiB; of the end of a 14-delta chain {:>7.2} s  peak RSS \
         {:>6.1} MiB ({:.2}x the base)",
        base.secs,
        base.max_rss_mib,
        chain.secs,
        chain.max_rss_mib,
        chain.secs / base.secs
    );
    let total = du(&run.join("store"));
    println!(
        "store after 15 generations: {:.0} MB ({:.0} MB after the first)",
        total as f64 / 1e6,
        store0 as f64 / 1e6
    );
    let _ = std::fs::remove_dir_all(run.join("restored-base"));
    let _ = std::fs::remove_dir_all(run.join("restored-chain"));
}
