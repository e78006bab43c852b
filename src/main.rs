//! The `reversa` binary: parse the command line, run one verb, exit with its code.

// As in lib.rs: the layout of `cli::run`'s future nests every verb's.
#![recursion_limit = "256"]

use clap::Parser;

fn main() {
    let cli = reversa::cli::Cli::parse();
    use reversa::cli::Command;
    tune_allocator(matches!(cli.command, Command::Backup { .. } | Command::Demo { .. } | Command::Restore { .. }));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REVERSA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,aws_config=error")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(reversa::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => reversa::cli::report_error(&e),
    };
    std::process::exit(code);
}

/// Colour only for a person at a terminal: never in cron mail, journald or a file, and never
/// when `NO_COLOR` is set (no-color.org).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The pipelines pass buffers of up to a few MiB between threads. Two arenas instead of one per
/// thread keep them compact, and buffers up to 64 MiB come from the heap, so a freed buffer is
/// reused without page faults: that is what restore and check want (measured flat, 57 to 79 MiB).
/// Backup's buffers vary more (chunks of 0.5 to 4 MiB, 8 MiB packs, 1 MiB reads) and fragment the
/// heap until peak RSS creeps up with the tenant (measured: 82, 94, 120 MiB at 0.3, 1.1 and
/// 2.3 GB); for backup, every buffer of 1 MiB or more is mapped and given back when freed, which
/// keeps it flat (57, 67, 71 MiB then) for more system time. Since then the chunk and pack
/// buffers are pooled (`reversa::pool`), so they are mapped once per backup rather than once per
/// use; pooled chunk buffers stay resident up to the largest chunk each held, and peak RSS is
/// 104 MiB at both 1.1 and 2.3 GB (`dir` store, benches/e2e.rs). Restore does the same since it
/// applies delta chains: their many small records between 1 MiB buffers took a restore at the end
/// of a 14-delta chain of the 1.1 GB bench tenant to 134 MiB, mapped it is 94 MiB.
fn tune_allocator(backup: bool) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, if backup { 1 << 20 } else { 64 << 20 });
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = backup;
}
