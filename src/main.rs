//! The `reversa` binary: parse the command line, run one verb, exit with its code.

use clap::Parser;

fn main() {
    tune_allocator();
    let cli = reversa::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REVERSA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,aws_config=error")),
        )
        .with_writer(std::io::stderr)
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

/// The backup and restore pipelines pass buffers of up to a few MiB between threads. With glibc's
/// defaults each such buffer is a fresh mmap (page faults and zeroing on every use) and every
/// thread gets its own arena (memory that grows with the number of threads). Serving them from a
/// small number of heaps lets freed buffers be reused, which keeps both CPU and peak memory down.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}
