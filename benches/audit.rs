//! What the audit log costs. Two figures, against the targets:
//! - its share of the wall time of `backup --all` over 200 small tenants: the run itself is timed
//!   (release binary, `dir` store), then the audit steps of such a run (a start and an end entry
//!   per tenant, with the key entries of a first backup, each appended as the job runner does
//!   (an end entry fsynced with everything before it), then the seal and the upload
//!   of the segment) are timed in process on the same disk. Target: at most 2%.
//! - `reversa audit verify` over a log of 100,000 entries (100 sealed segments), timed as a
//!   process, and the chain verification alone in process. Target: at least 50,000 entries/s.
//!
//! Run: `cargo bench --bench audit`. Environment: `BENCH_DIR` (default `target/bench`),
//! `BENCH_TENANTS` (default 200), `BENCH_AUDIT_ENTRIES` (default 100000). Figures are printed,
//! never asserted.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[path = "measure.rs"]
mod measure;

use reversa::audit::{verify, AuditLog, Checkpoint, Entry, Event, Outcome, Produced, SignedCheckpoint, GENESIS};
use reversa::keys::{AgentKey, MasterKey};
use reversa::seed::{seed_tenant, Scale};

const TINY: Scale = Scale { rows: 40, file_bytes: 48 << 10, incompressible: 0.5 };
const PER_SEGMENT: u64 = 1000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = std::path::absolute(std::env::var("BENCH_DIR").unwrap_or_else(|_| "target/bench".into())).unwrap();
    let tenants: usize = std::env::var("BENCH_TENANTS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let entries: u64 = std::env::var("BENCH_AUDIT_ENTRIES").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let run = root.join("audit");
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(&run).unwrap();

    let backup = backup_all(&run, tenants);
    let backup_secs = backup.secs;
    let audit_secs = audit_steps(&run.join("steps"), tenants);
    println!(
        "backup --all of {tenants} tenants: {backup_secs:.2} s, peak RSS {:.0} MiB; the audit steps of that run ({} entries appended \
         (start, key made, keystore snapshot, end; each end fsynced; one segment sealed and uploaded): {:.1} ms = {:.2}% of \
         the run (target <= 2%)",
        backup.max_rss_mib,
        4 * tenants,
        audit_secs * 1e3,
        100.0 * audit_secs / backup_secs
    );

    let state = run.join("verify");
    let cfg = agent_with_log(&state, entries);
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_reversa"))
        .args(["--config", cfg.to_str().unwrap(), "audit", "verify"])
        .env_remove("REVERSA_MASTER_KEY")
        .output()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    println!(
        "reversa audit verify over {entries} entries in {} segments: {secs:.2} s = {:.0} entries/s (target >= 50000)",
        entries / PER_SEGMENT,
        entries as f64 / secs
    );
    let segments = read_segments(&state.join("state/audit/segments"));
    let key = AgentKey::load_or_create(&state.join("state")).unwrap().0;
    let started = Instant::now();
    let (chain, _) = verify::chain(&key.id(), Some(&key.public()), &segments, None).unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  of which the chain alone (parse, hash, link, signatures): {secs:.2} s = {:.0} entries/s",
        chain.entries as f64 / secs
    );
}

/// Seed `n` tiny tenants, init, and time `backup --all`.
fn backup_all(run: &Path, n: usize) -> measure::Measured {
    for i in 0..n {
        seed_tenant(&run.join("source"), &format!("ente-{i:03}"), TINY, i as u64).unwrap();
    }
    let cfg = write_config(run);
    let key = run.join("master.key");
    reversa(&cfg, &["init", "--generate-master-key", key.to_str().unwrap()]);
    measure::measure(Command::new(env!("CARGO_BIN_EXE_reversa")).args([
        "--config",
        cfg.to_str().unwrap(),
        "backup",
        "--all",
    ]))
}

fn write_config(run: &Path) -> std::path::PathBuf {
    let cfg = run.join("reversa.toml");
    std::fs::write(
        &cfg,
        "[source]\nkind = \"sqlite\"\nroot = \"source\"\n\n[store]\nkind = \"dir\"\npath = \"store\"\n\n\
         [keys]\nmaster_key_file = \"master.key\"\n\n[state]\ndir = \"state\"\n",
    )
    .unwrap();
    cfg
}

fn reversa(cfg: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_reversa")).arg("--config").arg(cfg).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The audit work of a `backup --all` over `n` tenants, timed: what the job runner appends for
/// each tenant, then the seal and the upload.
fn audit_steps(dir: &Path, n: usize) -> f64 {
    let store = reversa::store::dir::DirStore::open(&dir.join("store"), true).unwrap();
    let master = MasterKey::generate();
    let (log, _) = AuditLog::open(&dir.join("state")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    for i in 0..n {
        let tenant = format!("ente-{i:03}");
        let (start, end) = backup_entries(&tenant, &format!("job-{i}"));
        log.append(start).unwrap();
        // A tenant's first backup also makes its key and snapshots the keystore.
        for kind in ["key_created", "keystore_snapshot"] {
            let mut e = Entry::new(Event::Key, "reversa");
            e.kind = Some(kind.into());
            e.tenant = Some(tenant.clone());
            log.append(e).unwrap();
        }
        log.append(end).unwrap();
    }
    let sealed = rt.block_on(log.seal_and_upload(&store, &master)).unwrap();
    assert_eq!(sealed.uploaded.len(), 1);
    started.elapsed().as_secs_f64()
}

/// A backup's start and end entries, as the job runner writes them.
fn backup_entries(tenant: &str, job: &str) -> (Entry, Entry) {
    let mut start = Entry::new(Event::Start, "ops@host");
    start.job = Some(job.into());
    start.kind = Some("backup".into());
    start.tenant = Some(tenant.into());
    start.options = Some(serde_json::json!({}));
    let mut end = Entry { event: Event::End, options: None, outcome: Some(Outcome::Ok), ..start.clone() };
    for (k, v) in [("tables", 7), ("rows", 4711), ("files", 200), ("bytes_read", 8_764_193), ("bytes_added", 6_701_449)]
    {
        end.counts.insert(k.into(), v);
    }
    end.produced.push(Produced {
        what: "generation".into(),
        id: "20261202T020553.794578Z-31235931".into(),
        sha256: None,
    });
    (start, end)
}

/// A state folder whose log holds `entries` entries in sealed segments, written as the log
/// writes them (without an fsync per entry: only the verification is timed), and a
/// configuration for it. Returns the configuration file.
fn agent_with_log(base: &Path, entries: u64) -> std::path::PathBuf {
    std::fs::create_dir_all(base.join("source")).unwrap();
    let cfg = write_config(base);
    reversa(&cfg, &["init", "--generate-master-key", base.join("master.key").to_str().unwrap()]);
    let state = base.join("state");
    let (key, _) = AgentKey::load_or_create(&state).unwrap();
    let segments = state.join("audit/segments");
    // Only the generated log: init's own segment goes, here and in the store.
    for f in std::fs::read_dir(&segments).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    std::fs::remove_dir_all(base.join("store/audit")).unwrap();
    let (mut prev, mut seq) = (GENESIS.to_string(), 0u64);
    for s in 0..entries / PER_SEGMENT {
        let mut text = String::new();
        let first = seq + 1;
        for i in 0..PER_SEGMENT / 2 {
            let (a, b) = backup_entries(&format!("ente-{:03}", i % 200), &format!("job-{s}-{i}"));
            for mut e in [a, b] {
                seq += 1;
                e.seq = seq;
                e.time = "2026-12-02T02:05:53.770571Z".into();
                e.agent = key.id();
                e.host = "bench".into();
                e.prev = prev.clone();
                let hash = e.compute_hash();
                e.hash = Some(hash.clone());
                prev = hash;
                text += &serde_json::to_string(&e).unwrap();
                text.push('\n');
            }
        }
        let id = format!("{first:012}-20261202T{s:06}.000000Z-00000000");
        let cp = Checkpoint {
            agent: key.id(),
            segment: id.clone(),
            first_seq: first,
            seq,
            head: prev.clone(),
            time: "2026-12-02T03:00:00Z".into(),
        };
        let signed =
            SignedCheckpoint { signature: key.sign(&cp.signed_bytes()), checkpoint: cp, public_key: key.public() };
        text += &serde_json::to_string(&signed).unwrap();
        text.push('\n');
        std::fs::write(segments.join(format!("{id}.jsonl")), text).unwrap();
    }
    cfg
}

fn read_segments(dir: &Path) -> Vec<verify::Segment> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|p| verify::Segment {
            id: Some(p.file_stem().unwrap().to_str().unwrap().to_string()),
            text: std::fs::read_to_string(p).unwrap(),
        })
        .collect()
}
