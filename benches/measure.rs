//! Wall time and peak RSS of a child process, shared by the benchmarks.
//!
//! Peak RSS is read by GNU time (`/usr/bin/time -f %M`), not by our own wait4: on Linux a child
//! inherits the parent's RSS high-water mark through fork, so wait4's ru_maxrss reports the
//! benchmark process's own peak (inflated by in-process work) whenever that is the larger one.
//! `time` is small, so the process it forks starts from nothing.

use std::process::Command;
use std::time::Instant;

pub struct Measured {
    pub secs: f64,
    pub max_rss_mib: f64,
}

/// Run `cmd` to completion; panics if it fails (a benchmark of a failed run means nothing).
pub fn measure(cmd: &mut Command) -> Measured {
    let out = tempfile::NamedTempFile::new().expect("a temporary file for time's report");
    let mut timed = Command::new("/usr/bin/time");
    timed.args(["-f", "%M", "-o"]).arg(out.path()).arg(cmd.get_program()).args(cmd.get_args());
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
    let kib: f64 = report.lines().last().and_then(|l| l.trim().parse().ok()).expect("time reports the peak RSS in KiB");
    Measured { secs, max_rss_mib: kib / 1024.0 }
}
