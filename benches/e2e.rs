//! End-to-end benchmark: a generated tenant of about 1 GB (300 MB of SQLite, the rest files, about
//! 70 % incompressible) backed up and restored by the release `reversa` binary, against the
//! physical limit (`openssl speed`) and against restic on the same data in the same run.
//!
//! Run: `cargo bench --bench e2e`. Environment:
//! - `BENCH_DIR`: where data and repositories go (default `target/bench`); needs about 4 GB free.
//! - `BENCH_SIZES_MB`: tenant sizes to run, comma-separated (default `250,1000`): two sizes show
//!   whether peak memory grows with the tenant.
//! - `BENCH_NO_RESTIC=1`: skip restic.
//! - `BENCH_S3=1`: also back up to a Ceph radosgw on loopback (started with scripts/s3-up.sh, or
//!   the one `REVERSA_TEST_S3_ENDPOINT` names), with restic to the same server. Each backup
//!   also prints its CPU time and, for a server started here, the server's: on one machine the
//!   two share the cores, so the server's cost bounds both tools' speed.
//!
//! Figures are printed, never asserted: speed is measured here, not in tests.

use std::path::{Path, PathBuf};
#[path = "measure.rs"]
mod measure;

use measure::{du, measure, openssl_speed, tenant_of};
use std::process::Command;

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing we need.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = PathBuf::from(std::env::var("BENCH_DIR").unwrap_or_else(|_| "target/bench".into()));
    std::fs::create_dir_all(&root).unwrap();
    let sizes: Vec<u64> = std::env::var("BENCH_SIZES_MB")
        .unwrap_or_else(|_| "250,1000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("BENCH_SIZES_MB is a list of numbers"))
        .collect();
    let restic =
        std::env::var_os("BENCH_NO_RESTIC").is_none() && Command::new("restic").arg("version").output().is_ok();
    let bin = env!("CARGO_BIN_EXE_reversa");
    let s3 = std::env::var_os("BENCH_S3").map(|_| S3::start(&root));

    let aes = openssl_speed("aes-256-gcm");
    let sha = openssl_speed("sha256");
    println!(
        "physical limit, one core: openssl AES-256-GCM {:.0} MB/s, SHA-256 {:.0} MB/s",
        aes.unwrap_or(0.0),
        sha.unwrap_or(0.0)
    );
    println!("cores: {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));

    for mb in sizes {
        let src = tenant_of(&root, mb);
        let tenant = src.join("bench");
        let bytes = du(&tenant);
        let db_bytes = std::fs::metadata(tenant.join("database.sqlite")).unwrap().len();
        let run = root.join(format!("run-{mb}"));
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(&run).unwrap();
        let config = run.join("reversa.toml");
        std::fs::write(
            &config,
            format!(
                "[source]\nkind = \"sqlite\"\nroot = \"{}\"\n[store]\nkind = \"dir\"\npath = \"store\"\n[keys]\nmaster_key_file = \"master.key\"\n[state]\ndir = \"state\"\n",
                std::path::absolute(&src).unwrap().display()
            ),
        )
        .unwrap();
        let reversa = |args: &[&str]| {
            let mut c = Command::new(bin);
            c.arg("--config").arg(&config).args(args).stdout(std::process::Stdio::null());
            c
        };
        measure(&mut reversa(&["init", "--generate-master-key", run.join("master.key").to_str().unwrap()]));
        // Drop the page cache effect of generation: both tools read the same warm data.
        let backup = measure(&mut reversa(&["backup", "--tenant", "bench"]));
        let second = measure(&mut reversa(&["backup", "--tenant", "bench"]));
        let stored = du(&run.join("store"));
        let restore = measure(&mut reversa(&[
            "restore",
            "--tenant",
            "bench",
            "--to",
            run.join("restored").to_str().unwrap(),
            "--recipient",
            "bench",
            "--recipient-kind",
            "provider",
        ]));
        let mbps = |secs: f64| bytes as f64 / 1e6 / secs;
        println!(
            "\n== tenant of {:.0} MB ({:.0} MB SQLite, {:.0} MB files)",
            bytes as f64 / 1e6,
            db_bytes as f64 / 1e6,
            (bytes - db_bytes) as f64 / 1e6
        );
        println!(
            "reversa backup   {:>8.1} MB/s  {:>6.2} s  peak RSS {:>6.1} MiB  stored {:.0} MB",
            mbps(backup.secs),
            backup.secs,
            backup.max_rss_mib,
            stored as f64 / 1e6
        );
        println!(
            "reversa 2nd run  {:>8.1} MB/s  {:>6.2} s  peak RSS {:>6.1} MiB (unchanged tenant)",
            mbps(second.secs),
            second.secs,
            second.max_rss_mib
        );
        println!(
            "reversa restore  {:>8.1} MB/s  {:>6.2} s  peak RSS {:>6.1} MiB",
            mbps(restore.secs),
            restore.secs,
            restore.max_rss_mib
        );
        if let Some(aes) = aes {
            println!("backup / openssl AES-256-GCM one core: {:.2}", mbps(backup.secs) / aes);
        }
        println!("restore / backup: {:.2}", backup.secs / restore.secs);
        if restic {
            let repo = run.join("restic");
            let restic = |args: &[&str]| {
                let mut c = Command::new("restic");
                c.args(["-r", repo.to_str().unwrap(), "--quiet"])
                    .args(args)
                    .env("RESTIC_PASSWORD", "bench")
                    .stdout(std::process::Stdio::null());
                c
            };
            measure(&mut restic(&["init", "--repository-version", "2"]));
            let rb = measure(
                restic(&["backup", tenant.to_str().unwrap()]).env("RESTIC_CACHE_DIR", run.join("restic-cache")),
            );
            let rstored = du(&repo);
            let rr =
                measure(&mut restic(&["restore", "latest", "--target", run.join("restic-restored").to_str().unwrap()]));
            println!(
                "restic backup    {:>8.1} MB/s  {:>6.2} s  peak RSS {:>6.1} MiB  stored {:.0} MB",
                mbps(rb.secs),
                rb.secs,
                rb.max_rss_mib,
                rstored as f64 / 1e6
            );
            println!(
                "restic restore   {:>8.1} MB/s  {:>6.2} s  peak RSS {:>6.1} MiB",
                mbps(rr.secs),
                rr.secs,
                rr.max_rss_mib
            );
            println!("reversa / restic backup throughput: {:.2}x (target >= 3x)", rb.secs / backup.secs);
            println!("reversa / restic restore throughput: {:.2}x", rr.secs / restore.secs);
        }
        let _ = std::fs::remove_dir_all(run.join("restored"));
        let _ = std::fs::remove_dir_all(run.join("restic-restored"));
        if let Some(s3) = &s3 {
            s3_run(s3, bin, &src, &run, bytes, restic);
        }
    }
    if let Some(s3) = &s3 {
        s3.stop();
    }
}

/// A radosgw for the benchmark, and how to reach it.
struct S3 {
    endpoint: String,
    region: String,
    dir: Option<PathBuf>,
}

impl S3 {
    /// The server `REVERSA_TEST_S3_ENDPOINT` names (credentials from the AWS variables), or one
    /// started with scripts/s3-up.sh.
    fn start(root: &Path) -> S3 {
        if let Ok(endpoint) = std::env::var("REVERSA_TEST_S3_ENDPOINT") {
            let region = std::env::var("REVERSA_TEST_S3_REGION").unwrap_or_else(|_| "eu-south-1".into());
            return S3 { endpoint, region, dir: None };
        }
        let dir = std::path::absolute(root.join("s3")).unwrap();
        let up = || Command::new("bash").arg("scripts/s3-up.sh").arg(&dir).output().expect("scripts/s3-up.sh runs");
        // One retry, as scripts/test.sh does.
        let out = match up() {
            out if out.status.success() => out,
            _ => up(),
        };
        assert!(out.status.success(), "s3-up failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut endpoint = String::new();
        let mut region = String::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((k, v)) = line.trim_start_matches("export ").split_once('=') else { continue };
            match k {
                "REVERSA_TEST_S3_ENDPOINT" => endpoint = v.to_string(),
                "REVERSA_TEST_S3_REGION" => region = v.to_string(),
                _ => {}
            }
            // SAFETY: single-threaded here; the children inherit the credentials.
            unsafe { std::env::set_var(k, v) };
        }
        S3 { endpoint, region, dir: Some(dir) }
    }

    /// CPU seconds used so far by the server's daemons (radosgw, ceph-osd, ceph-mon), from their
    /// pid files and /proc; `None` for a server this bench did not start. The server shares the
    /// machine's cores with the client, so its CPU is part of what a backup costs here.
    fn server_cpu(&self) -> Option<f64> {
        let run = self.dir.as_ref()?.join("run");
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let mut total = 0.0;
        for e in std::fs::read_dir(run).ok()?.flatten() {
            if e.path().extension().is_some_and(|x| x == "pid") {
                let pid = std::fs::read_to_string(e.path()).ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok()?;
                // Fields after the command name (which may hold spaces): utime and stime are
                // the 12th and 13th.
                let after = &stat[stat.rfind(')')? + 2..];
                let f: Vec<&str> = after.split_whitespace().collect();
                total += (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks;
            }
        }
        Some(total)
    }

    fn stop(&self) {
        if let Some(dir) = &self.dir {
            let _ = Command::new("bash").arg("scripts/s3-down.sh").arg(dir).output();
        }
    }
}

fn s3_run(s3: &S3, bin: &str, src: &Path, run: &Path, bytes: u64, restic: bool) {
    let bucket = format!("bench-{}", rand::random::<u32>());
    let config = run.join("reversa-s3.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"sqlite\"\nroot = \"{}\"\n[store]\nkind = \"s3\"\nbucket = \"{bucket}\"\nregion = \"{}\"\n\
             endpoint = \"{}\"\n[keys]\nmaster_key_file = \"master.key\"\n[state]\ndir = \"state-s3\"\n",
            std::path::absolute(src).unwrap().display(),
            s3.region,
            s3.endpoint
        ),
    )
    .unwrap();
    let reversa = |args: &[&str]| {
        let mut c = Command::new(bin);
        c.arg("--config").arg(&config).args(args).stdout(std::process::Stdio::null());
        c
    };
    measure(&mut reversa(&["init", "--create-bucket"]));
    let server_before = s3.server_cpu();
    let backup = measure(&mut reversa(&["backup", "--tenant", "bench"]));
    let server = |before: Option<f64>| match (before, s3.server_cpu()) {
        (Some(a), Some(b)) => format!(", server CPU {:.1} s", b - a),
        _ => String::new(),
    };
    let backup_server = server(server_before);
    let restore = measure(&mut reversa(&[
        "restore",
        "--tenant",
        "bench",
        "--to",
        run.join("restored-s3").to_str().unwrap(),
        "--recipient",
        "bench",
        "--recipient-kind",
        "provider",
    ]));
    let _ = std::fs::remove_dir_all(run.join("restored-s3"));
    let mbps = |secs: f64| bytes as f64 / 1e6 / secs;
    println!("-- to radosgw on loopback ({})", s3.endpoint);
    println!(
        "reversa backup   {:>8.1} MB/s  {:>6.2} s  peak RSS {:>6.1} MiB  CPU {:.1} s{backup_server}",
        mbps(backup.secs),
        backup.secs,
        backup.max_rss_mib,
        backup.cpu_secs
    );
    println!(
        "reversa restore  {:>8.1} MB/s  {:>6.2} s  peak RSS {:>6.1} MiB",
        mbps(restore.secs),
        restore.secs,
        restore.max_rss_mib
    );
    if restic {
        let repo = format!("s3:{}/{bucket}-restic", s3.endpoint);
        let restic = |args: &[&str]| {
            let mut c = Command::new("restic");
            c.args(["-r", &repo, "--quiet"])
                .args(args)
                .env("RESTIC_PASSWORD", "bench")
                .env("RESTIC_CACHE_DIR", run.join("restic-cache-s3"))
                .stdout(std::process::Stdio::null());
            c
        };
        measure(&mut restic(&["init", "--repository-version", "2"]));
        let server_before = s3.server_cpu();
        let rb = measure(&mut restic(&["backup", src.join("bench").to_str().unwrap()]));
        println!(
            "restic backup    {:>8.1} MB/s  {:>6.2} s  peak RSS {:>6.1} MiB  CPU {:.1} s{}",
            mbps(rb.secs),
            rb.secs,
            rb.max_rss_mib,
            rb.cpu_secs,
            server(server_before)
        );
        println!("reversa / restic backup throughput to radosgw: {:.2}x (target >= 3x)", rb.secs / backup.secs);
    }
}
