//! The command line: flags are parsed by clap, the configuration is loaded and validated, then
//! one verb of `commands` runs. Output for people on stdout, `--json` for machines; diagnostics
//! on stderr. Exit codes are documented in README.md.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::{backup, check, demo, init, restore, Agent, Error};
use crate::config::Config;
use crate::progress;
use crate::tenant::TenantId;

#[derive(Parser, Debug)]
#[command(name = "reversa", version, about = "Backups, exports and reversibility for the data of SaaS tenants")]
pub struct Cli {
    /// The configuration file (TOML); see config/reversa.example.toml.
    #[arg(long, global = true, env = "REVERSA_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Seed three sample tenants under ./reversa-demo, back them up, restore one and verify it.
    Demo {
        /// Where the demo writes everything.
        #[arg(long, default_value = "reversa-demo")]
        dir: PathBuf,
    },
    /// Create the store marker and the keystore (or recover the keystore from the store).
    Init {
        /// Write a new random 32-byte master key to PATH (mode 0600) and use it.
        #[arg(long, value_name = "PATH")]
        generate_master_key: Option<PathBuf>,
        /// Create the S3 bucket in the configured region if it does not exist.
        #[arg(long)]
        create_bucket: bool,
    },
    /// Back up one tenant, or all tenants of the source, into new generations.
    Backup {
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        tenant: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// List a tenant's generations.
    Generations {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Restore a generation (the newest by default) into a folder.
    Restore {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        generation: Option<String>,
        #[arg(long)]
        to: PathBuf,
        /// Restore into a folder that is not empty, replacing its database and file folders.
        #[arg(long)]
        force: bool,
    },
    /// Check that every reference in a tenant's repository resolves.
    Check {
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        tenant: Option<String>,
        #[arg(long)]
        all: bool,
        /// Also read, decrypt and verify every blob.
        #[arg(long)]
        read_data: bool,
        /// Abort the multipart uploads interrupted backups left behind (under the tenant lock).
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Exit codes (README.md, "Exit codes").
pub mod exit {
    pub const OK: i32 = 0;
    pub const WARNINGS: i32 = 3;
    pub const DAMAGED: i32 = 6;
}

fn load_config(cli: &Cli) -> Result<Config, Error> {
    let path = cli.config.as_ref().ok_or_else(|| {
        Error::Usage(
            "this command needs a configuration file: pass --config FILE (see config/reversa.example.toml)".into(),
        )
    })?;
    Config::load(path).map_err(|e| Error::Usage(e.to_string()))
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

fn rate(bytes: u64, ms: u64) -> String {
    format!("{:.1} MB/s", bytes as f64 / 1e3 / ms.max(1) as f64)
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("report serializes"));
}

pub async fn run(cli: Cli) -> Result<i32, Error> {
    let progress = progress::for_terminal();
    match &cli.command {
        Command::Demo { dir } => {
            let r = demo::demo(dir, &*progress).await?;
            println!("reversa demo: {} sample tenants backed up, one restored and verified\n", r.backups.len());
            println!("  source   {}/source  ({})", r.base.display(), mb(r.source_bytes));
            println!(
                "  store    {}/store  ({} after dedup, compression and encryption)",
                r.base.display(),
                mb(r.store_bytes)
            );
            println!("  key      {}/master.key (mode 0600; keep it apart from the store)\n", r.base.display());
            for b in &r.backups {
                let s = &b.manifest.summary;
                println!(
                    "  {:<16} generation {}  {} tables, {} rows, {} files, read {}, added {} in {} ms",
                    b.manifest.tenant,
                    b.manifest.id,
                    s.tables,
                    s.rows,
                    s.files,
                    mb(s.bytes_read),
                    mb(s.bytes_added),
                    s.duration_ms
                );
            }
            println!(
                "\n  restored {} ({} tables, {} rows, {} files) into {} in {} ms: identical to the source",
                demo::TENANTS[0],
                r.restored.tables,
                r.restored.rows,
                r.restored.files,
                r.restored_to.display(),
                r.restored.duration_ms
            );
            println!("  total {} ms\n", r.duration_ms);
            let c = r.config_file.display();
            println!("Next:");
            println!("  reversa --config {c} generations --tenant {}", demo::TENANTS[0]);
            println!("  reversa --config {c} backup --all          # a second run stores almost nothing");
            println!("  reversa --config {c} check --tenant {} --read-data", demo::TENANTS[0]);
            println!("  reversa --config {c} restore --tenant {} --to /tmp/restored", demo::TENANTS[1]);
            Ok(exit::OK)
        }
        Command::Init { generate_master_key, create_bucket } => {
            let cfg = load_config(&cli)?;
            let r = init::init_with(&cfg, generate_master_key.as_deref(), *create_bucket).await?;
            if let Some(k) = &r.master_key_file {
                println!("master key written to {k} (mode 0600); keep a copy apart from the store");
            }
            println!(
                "store {}: {}; keystore: {}",
                r.store,
                if r.store_created { "initialized" } else { "already initialized" },
                r.keystore
            );
            if let Some(region) = &r.facts.bucket_region {
                println!("bucket location: {region}");
            }
            match r.facts.conditional_writes {
                Some(true) => {
                    println!("conditional writes: honoured (tenant lock: one object created with If-None-Match)")
                }
                Some(false) => println!(
                    "conditional writes: ignored by this server (tenant lock: unique lock objects, oldest wins)"
                ),
                None => {}
            }
            Ok(exit::OK)
        }
        Command::Backup { tenant, all, json } => {
            let agent = Agent::open(load_config(&cli)?).await?;
            let (tenants, warnings) = agent.tenants(tenant.as_deref(), *all)?;
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            let mut code = if warnings.is_empty() { exit::OK } else { exit::WARNINGS };
            let mut reports = Vec::new();
            let mut failures = Vec::new();
            for t in &tenants {
                match backup::backup(&agent, t, &*progress).await {
                    Ok(r) => {
                        if !r.manifest.warnings.is_empty() {
                            code = code.max(exit::WARNINGS);
                        }
                        if !json {
                            let s = &r.manifest.summary;
                            println!(
                                "{}: generation {}: {} tables, {} rows, {} files ({}); read {}, added {} in {} packs, {} ({})",
                                t, r.manifest.id, s.tables, s.rows, s.files, mb(s.file_bytes), mb(s.bytes_read), mb(s.bytes_added),
                                s.packs_added, format_ms(s.duration_ms), rate(s.bytes_read, s.duration_ms)
                            );
                            for w in &r.manifest.warnings {
                                println!("  warning: {w}");
                            }
                        }
                        reports.push(r.manifest);
                    }
                    // With --all one tenant's failure does not stop the others.
                    Err(e) if tenants.len() > 1 => {
                        eprintln!("error: {t}: {e}");
                        failures.push(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            if *json {
                print_json(&reports);
            }
            Ok(match failures.first() {
                Some(e) => e.exit_code(),
                None => code,
            })
        }
        Command::Generations { tenant, json } => {
            let agent = Agent::open(load_config(&cli)?).await?;
            let tenant = TenantId::parse(tenant)?;
            let repo = agent.repository(&tenant, false).await?;
            let mut list = Vec::new();
            for id in repo.list_generations().await? {
                list.push(repo.load_generation(&id).await?);
            }
            if *json {
                print_json(&list);
            } else {
                println!(
                    "{:<28} {:<20} {:>10} {:>8} {:>12} {:>12}",
                    "GENERATION", "TIME", "ROWS", "FILES", "BYTES", "ADDED"
                );
                for m in &list {
                    let s = &m.summary;
                    println!(
                        "{:<28} {:<20} {:>10} {:>8} {:>12} {:>12}",
                        m.id,
                        m.time,
                        s.rows,
                        s.files,
                        s.table_bytes + s.file_bytes,
                        s.bytes_added
                    );
                }
            }
            Ok(exit::OK)
        }
        Command::Restore { tenant, generation, to, force } => {
            let agent = Agent::open(load_config(&cli)?).await?;
            let tenant = TenantId::parse(tenant)?;
            let r = restore::restore(&agent, &tenant, generation.as_deref(), to, *force, &*progress).await?;
            println!(
                "{tenant}: restored generation {} into {}: {} tables, {} rows, {} files, {} in {} ({}); every blob verified",
                r.generation, to.display(), r.tables, r.rows, r.files, mb(r.bytes), format_ms(r.duration_ms), rate(r.bytes, r.duration_ms)
            );
            Ok(exit::OK)
        }
        Command::Check { tenant, all, read_data, repair, json } => {
            let agent = Agent::open(load_config(&cli)?).await?;
            let tenants: Vec<TenantId> = match (tenant, all) {
                (Some(t), _) => vec![TenantId::parse(t)?],
                _ => {
                    let ks: Vec<String> = agent.keystore_tenants();
                    ks.iter().map(|t| TenantId::parse(t)).collect::<Result<_, _>>()?
                }
            };
            let mut code = exit::OK;
            let mut reports = Vec::new();
            for t in &tenants {
                let mut r = check::check(&agent, t, *read_data, &*progress).await?;
                r.leftover_uploads = check::leftover_uploads(&agent, t, *repair).await?;
                if !r.is_clean() {
                    code = exit::DAMAGED;
                }
                if !json {
                    println!(
                        "{t}: {} generations, {} index files, {} packs, {} blobs{}: {}",
                        r.generations,
                        r.index_files,
                        r.packs,
                        r.blobs,
                        if *read_data {
                            format!(", {} blobs read and verified ({})", r.blobs_read, mb(r.bytes_read))
                        } else {
                            String::new()
                        },
                        if r.is_clean() { "no problems".to_string() } else { format!("{} PROBLEMS", r.problems.len()) }
                    );
                    for p in &r.problems {
                        println!("  damaged: {p}");
                    }
                    if !r.unreferenced_packs.is_empty() {
                        println!(
                            "  note: {} unreferenced packs (left by an interrupted backup; harmless, prune removes them)",
                            r.unreferenced_packs.len()
                        );
                    }
                    for u in &r.leftover_uploads {
                        let action = if u.action == "left" { "left (`check --repair` aborts it)" } else { &u.action };
                        println!(
                            "  leftover upload: {} (started {}, id {}): {action}",
                            u.key, u.initiated, u.upload_id
                        );
                    }
                }
                reports.push(r);
            }
            if *json {
                print_json(&reports);
            }
            Ok(code)
        }
    }
}

fn format_ms(ms: u64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

/// Map an error to its exit code and print it with its whole chain.
pub fn report_error(e: &Error) -> i32 {
    eprintln!("error: {e}");
    e.exit_code()
}
