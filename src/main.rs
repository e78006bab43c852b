//! The `reversa` binary: parse the command line, run one verb, exit with its code.

use clap::Parser;

fn main() {
    let cli = reversa::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REVERSA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
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
