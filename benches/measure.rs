//! Shared by the benchmarks: wall time and peak RSS of a child process, the generated bench
//! tenant, and `openssl speed` as the physical limit.
//!
//! Peak RSS is read by GNU time (`/usr/bin/time -f %M`), not by our own wait4: on Linux a child
//! inherits the parent's RSS high-water mark through fork, so wait4's ru_maxrss reports the
//! benchmark process's own peak (inflated by in-process work) whenever that is the larger one.
//! `time` is small, so the process it forks starts from nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use reversa::seed::{seed_tenant, Scale};

pub struct Measured {
    pub secs: f64,
    pub max_rss_mib: f64,
    /// User plus system CPU time of the process and its children.
    #[allow(dead_code)]
    pub cpu_secs: f64,
}

/// Run `cmd` to completion; panics if it fails (a benchmark of a failed run means nothing).
pub fn measure(cmd: &mut Command) -> Measured {
    let out = tempfile::NamedTempFile::new().expect("a temporary file for time's report");
    let mut timed = Command::new("/usr/bin/time");
    timed.args(["-f", "%U %S %M", "-o"]).arg(out.path()).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    timed.stdout(std::process::Stdio::null());
    let started = Instant::now();
    let status = timed.status().unwrap_or_else(|e| panic!("cannot run /usr/bin/time (apt-get install time): {e}"));
    let secs = started.elapsed().as_secs_f64();
    assert!(status.success(), "{cmd:?} failed with {status}");
    let report = std::fs::read_to_string(out.path()).unwrap_or_default();
    let fields: Vec<f64> =
        report.lines().last().unwrap_or_default().split_whitespace().filter_map(|f| f.parse().ok()).collect();
    let [user, sys, kib] = fields[..] else {
        panic!("time reports user and system seconds and peak RSS in KiB: {report}")
    };
    Measured { secs, max_rss_mib: kib / 1024.0, cpu_secs: user + sys }
}

/// `openssl speed` for one EVP cipher or digest at 16 KiB blocks, in MB/s.
#[allow(dead_code)]
pub fn openssl_speed(alg: &str) -> Option<f64> {
    let out = Command::new("openssl").args(["speed", "-seconds", "2", "-bytes", "16384", "-evp", alg]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last()?;
    let kbs: f64 = last.split_whitespace().last()?.trim_end_matches('k').parse().ok()?;
    Some(kbs * 1000.0 / 1e6)
}

#[allow(dead_code)]
pub fn du(p: &Path) -> u64 {
    reversa::commands::demo::du(p)
}

#[allow(dead_code)]
pub fn tenant_of(root: &Path, mb: u64) -> PathBuf {
    let dir = root.join(format!("source-{mb}"));
    let tenant = dir.join("bench");
    if !tenant.join("database.sqlite").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let started = Instant::now();
        // About 1 KB of SQLite per case row (with its related rows); 30 % of the bytes in the
        // database, 70 % in files of which 90 % are incompressible.
        let rows = (mb as usize * 1_000_000 * 3 / 10) / 1_050;
        let scale = Scale { rows, file_bytes: mb * 1_000_000 * 7 / 10, incompressible: 0.9 };
        seed_tenant(&dir, "bench", scale, 42).expect("generate the bench tenant");
        eprintln!("generated {} MB in {:.1} s", du(&tenant) / 1_000_000, started.elapsed().as_secs_f64());
    }
    dir
}
