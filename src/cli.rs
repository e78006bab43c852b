//! The command line: flags are parsed by clap, the configuration is loaded and validated, then
//! one verb of `commands` runs. Output for people on stdout, `--json` for machines; diagnostics
//! on stderr. Exit codes are documented in README.md.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::{backup, check, demo, export, forget, generations, init, prune, restore, Agent, Error};
use crate::config::Config;
use crate::progress;
use crate::tenant::TenantId;

/// `println!` for a command's output. A reader that went away (`reversa generations --json |
/// head -1`) ends the process quietly, as ripgrep does, instead of the panic `println!` gives;
/// SIGPIPE stays ignored, so a server closing a socket mid-write is an error the verb handles.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            stdout_failed(e);
        }
    }};
}

/// Stdout cannot be written: quietly done when its reader left, else an error.
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(exit::OK);
    }
    eprintln!("error: cannot write to stdout: {e}");
    std::process::exit(1);
}

#[derive(Parser, Debug)]
#[command(
    name = "reversa",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("REVERSA_COMMIT"), ")"),
    about = "Backups, exports and reversibility for the data of SaaS tenants",
    after_help = "Environment: REVERSA_MASTER_KEY (base64 of the 32-byte master key; overrides [keys] \
                  master_key_file), REVERSA_LOG (diagnostics on stderr: warn, info, debug), REVERSA_CONFIG \
                  (the configuration file), REVERSA_ACTOR (who runs the command, as holds record it; else the OS user \
                  and host), NO_COLOR (no colour on a terminal). Exit codes: README.md."
)]
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
    #[command(group(clap::ArgGroup::new("which").required(true)))]
    Backup {
        /// The tenant id (as in [source] root and in the store).
        #[arg(long, group = "which")]
        tenant: Option<String>,
        /// Every tenant of the source (instead of --tenant).
        #[arg(long, group = "which")]
        all: bool,
        /// Print the report as JSON on stdout (byte counts in bytes).
        #[arg(long)]
        json: bool,
    },
    /// List a tenant's generations (with their holds), or place and release legal holds.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Generations {
        /// The tenant id (as in [source] root and in the store).
        #[arg(long, required = true)]
        tenant: Option<String>,
        /// Print the report as JSON on stdout (byte counts in bytes).
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: Option<GenerationsCommand>,
    },
    /// Apply the retention policy ([retention] in the configuration): delete the manifests of the
    /// generations it does not keep. Packs stay until prune.
    #[command(group(clap::ArgGroup::new("which").required(true)))]
    Forget {
        /// The tenant id (as in [source] root and in the store).
        #[arg(long, group = "which")]
        tenant: Option<String>,
        /// Every tenant that has a key, i.e. a repository in the store.
        #[arg(long, group = "which")]
        all: bool,
        /// Show what would be kept and forgotten; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON on stdout (byte counts in bytes).
        #[arg(long)]
        json: bool,
    },
    /// Restore a generation (the newest by default) into a folder.
    Restore {
        /// The tenant id (as in [source] root and in the store).
        #[arg(long)]
        tenant: String,
        /// The generation id, as `reversa generations` lists them.
        #[arg(long)]
        generation: Option<String>,
        /// The folder to restore into: database.sqlite, attachments/ and documents/.
        #[arg(long)]
        to: PathBuf,
        /// Restore into a folder that is not empty, replacing its database and file folders.
        #[arg(long)]
        force: bool,
        /// Salvage: restore everything that is intact, list what is not in RESTORE-REPORT.txt
        /// in the target, and exit 6 if anything is missing.
        #[arg(long)]
        partial: bool,
    },
    /// Check that every reference in a tenant's repository resolves.
    #[command(group(clap::ArgGroup::new("which").required(true)))]
    Check {
        /// The tenant id (as in [source] root and in the store).
        #[arg(long, group = "which")]
        tenant: Option<String>,
        /// Every tenant (instead of --tenant).
        #[arg(long, group = "which")]
        all: bool,
        /// Also read, decrypt and verify every blob.
        #[arg(long)]
        read_data: bool,
        /// Read and verify part of the packs: a share of the pack bytes (5%, the packs verified
        /// longest ago first) or a fixed slice n/t (1/20).
        #[arg(long, value_name = "N% | n/t", conflicts_with = "read_data")]
        read_data_subset: Option<check::Subset>,
        /// Abort the multipart uploads interrupted backups left behind (under the tenant lock).
        #[arg(long)]
        repair: bool,
        /// Print the report as JSON on stdout (byte counts in bytes).
        #[arg(long)]
        json: bool,
    },
    /// Delete the packs no generation references and rewrite half-empty ones (under the tenant
    /// lock; packs younger than [prune] grace_hours are left alone).
    #[command(group(clap::ArgGroup::new("which").required(true)))]
    Prune {
        /// The tenant id (as in [source] root and in the store).
        #[arg(long, group = "which")]
        tenant: Option<String>,
        /// Every tenant with a repository in the store.
        #[arg(long, group = "which")]
        all: bool,
        /// Report what would be deleted and repacked, and the bytes freed, changing nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON on stdout (byte counts in bytes).
        #[arg(long)]
        json: bool,
    },
    /// Write the customer's copy of a tenant: an AES-256 ZIP with its records as XLSX and CSV and
    /// its files (docs/EXPORT.md). Prints the passphrase once, or writes it to a file.
    Export {
        /// The tenant id (as in [source] root and in the store).
        #[arg(long)]
        tenant: String,
        /// Export this backup generation instead of the live source.
        #[arg(long)]
        generation: Option<String>,
        /// The folder that receives `<tenant>-<UTC time>.zip` (or its parts).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Data formats: xlsx, csv or both.
        #[arg(long, default_value = "xlsx,csv")]
        format: String,
        /// Cut the archive into parts of at most this size (e.g. 512MiB, 2GB).
        #[arg(long, default_value = "512MiB")]
        split_size: String,
        /// Write the passphrase to this new file (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Also put the parts under exports/<tenant>/<export id>/ in the store.
        #[arg(long)]
        upload: bool,
    },
    /// Exports uploaded to the store.
    Exports {
        #[command(subcommand)]
        command: ExportsCommand,
    },
    /// The tenants: those of the source and those with a repository in the store.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Remove a tenant's stale lock (left by a killed or vanished process); a live lock is
    /// refused and left in place.
    Unlock {
        /// The tenant id (as in [source] root and in the store).
        #[arg(long)]
        tenant: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        /// The shell, e.g. bash: `reversa completions bash > /etc/bash_completion.d/reversa`.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum GenerationsCommand {
    /// Put a generation on legal hold: `forget` keeps it until it is released.
    Hold {
        /// The tenant id (as in [source] root and in the store).
        #[arg(long)]
        tenant: String,
        /// The generation id, as `reversa generations` lists them.
        #[arg(long)]
        generation: String,
        /// Why (a case number, a request); stored sealed, shown by `generations` and `forget`.
        #[arg(long)]
        reason: Option<String>,
        /// Print the report as JSON on stdout (byte counts in bytes).
        #[arg(long)]
        json: bool,
    },
    /// Lift a legal hold: the generation falls under the retention policy again.
    Release {
        /// The tenant id (as in [source] root and in the store).
        #[arg(long)]
        tenant: String,
        /// The generation id, as `reversa generations` lists them.
        #[arg(long)]
        generation: String,
        /// Print the report as JSON on stdout (byte counts in bytes).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Every tenant of the source and of the store, with its key, generations and repository size.
    List {
        /// Print the report as JSON on stdout (byte counts in bytes).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ExportsCommand {
    /// List the uploaded exports.
    List {
        /// The tenant id (as in [source] root and in the store).
        #[arg(long)]
        tenant: Option<String>,
        /// Print the report as JSON on stdout (byte counts in bytes).
        #[arg(long)]
        json: bool,
    },
    /// Remove the uploaded exports older than [exports] keep_days.
    Prune {
        /// Print the report as JSON on stdout (byte counts in bytes).
        #[arg(long)]
        json: bool,
    },
}

/// Exit codes (README.md, "Exit codes").
pub mod exit {
    use crate::commands::ErrorKind;

    pub const OK: i32 = 0;
    pub const WARNINGS: i32 = 3;
    pub const DAMAGED: i32 = 6;
    pub const MISSING_KEY: i32 = 7;

    /// The exit code of a failure: only the CLI maps error kinds to codes.
    pub fn of(kind: ErrorKind) -> i32 {
        match kind {
            ErrorKind::BadInput => 2,
            ErrorKind::Locked => 4,
            ErrorKind::WrongKey => 5,
            ErrorKind::Damaged => DAMAGED,
            ErrorKind::MissingKey => MISSING_KEY,
            ErrorKind::NotFound => 8,
            ErrorKind::NotAllowed => 9,
            ErrorKind::Transient | ErrorKind::Internal => 1,
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, Error> {
    let path = cli.config.as_ref().ok_or_else(|| {
        Error::Usage(
            "this command needs a configuration file: pass --config FILE (see config/reversa.example.toml)".into(),
        )
    })?;
    let mut config = Config::load(path).map_err(|e| Error::Usage(e.to_string()))?;
    config.keys.master_key_env = master_key_from_env();
    if config.keys.master_key_file.is_none() && config.keys.master_key_env.is_none() {
        return Err(crate::keys::KeyError::NoMasterKey.into());
    }
    Ok(config)
}

/// `REVERSA_MASTER_KEY`: the environment is read here, in the CLI, and nowhere below it.
fn master_key_from_env() -> Option<crate::keys::KeyText> {
    // Not UTF-8 is kept (lossily), so that it fails as a bad key rather than passing unseen.
    std::env::var_os(crate::keys::MASTER_KEY_ENV).map(|v| crate::keys::KeyText::new(v.to_string_lossy().into_owned()))
}

/// The one human form of a size, everywhere (summaries, tables, progress bars): decimal MB, as
/// disks and links are sold. `--json` gives bytes.
fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

fn rate(bytes: u64, ms: u64) -> String {
    format!("{:.1} MB/s", bytes as f64 / 1e3 / ms.max(1) as f64)
}

fn print_json<T: serde::Serialize>(v: &T) {
    out!("{}", serde_json::to_string_pretty(v).expect("report serializes"));
}

/// What a verb run over tenants gave: the reports, and the exit code of the first tenant that
/// failed, if one did.
struct PerTenant<R> {
    reports: Vec<R>,
    failed: Option<i32>,
}

/// Run `verb` for each tenant in turn (it prints its own lines; `None` is a tenant it skipped),
/// then print the reports as JSON if asked. With `keep_going` (`--all`), a tenant's failure is
/// reported and the others still run; otherwise it is the command's error.
async fn per_tenant<R: serde::Serialize>(
    tenants: &[TenantId],
    keep_going: bool,
    json: bool,
    mut verb: impl AsyncFnMut(&TenantId) -> Result<Option<R>, Error>,
) -> Result<PerTenant<R>, Error> {
    let mut done = PerTenant { reports: Vec::new(), failed: None };
    for t in tenants {
        match verb(t).await {
            Ok(Some(r)) => done.reports.push(r),
            Ok(None) => {}
            Err(e) if keep_going => {
                eprintln!("error: {t}: {e}");
                done.failed.get_or_insert(exit::of(e.kind()));
            }
            Err(e) => return Err(e),
        }
    }
    if json {
        print_json(&done.reports);
    }
    Ok(done)
}

pub async fn run(cli: Cli) -> Result<i32, Error> {
    if let Ok(s) = std::env::var(crate::NOW_ENV) {
        match s.parse::<jiff::Timestamp>() {
            Ok(at) => crate::simulate_clock(at),
            Err(e) => {
                return Err(Error::Usage(format!(
                    "{}={s:?} is not an RFC 3339 time ({e}); unset it, or give a time such as 2026-11-23T02:00:00Z",
                    crate::NOW_ENV
                )))
            }
        }
    }
    let progress = progress::for_terminal();
    match &cli.command {
        Command::Demo { dir } => {
            let r = demo::demo(dir, master_key_from_env(), &*progress).await?;
            out!("reversa demo: {} sample tenants backed up, one restored and verified\n", r.backups.len());
            out!("  source   {}/source  ({})", r.base.display(), mb(r.source_bytes));
            out!(
                "  store    {}/store  ({} after dedup, compression and encryption)",
                r.base.display(),
                mb(r.store_bytes)
            );
            out!("  key      {}/master.key (mode 0600; keep it apart from the store)\n", r.base.display());
            for b in &r.backups {
                let s = &b.manifest.summary;
                out!(
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
            out!(
                "\n  restored {} ({} tables, {} rows, {} files) into {} in {} ms: identical to the source",
                demo::TENANTS[0],
                r.restored.tables,
                r.restored.rows,
                r.restored.files,
                r.restored_to.display(),
                r.restored.duration_ms
            );
            out!("  total {} ms\n", r.duration_ms);
            let c = r.config_file.display();
            out!("Next:");
            out!("  reversa --config {c} generations --tenant {}", demo::TENANTS[0]);
            out!("  reversa --config {c} backup --all          # a second run stores almost nothing");
            out!("  reversa --config {c} check --tenant {} --read-data", demo::TENANTS[0]);
            out!("  reversa --config {c} restore --tenant {} --to /tmp/restored", demo::TENANTS[1]);
            Ok(exit::OK)
        }
        Command::Init { generate_master_key, create_bucket } => {
            let cfg = load_config(&cli)?;
            let r = init::init_with(&cfg, generate_master_key.as_deref(), *create_bucket).await?;
            if let Some(k) = &r.master_key_file {
                out!("master key written to {k} (mode 0600); keep a copy apart from the store");
            }
            out!(
                "store {}: {}; keystore: {}",
                r.store,
                if r.store_created { "initialized" } else { "already initialized" },
                r.keystore
            );
            if let Some(rec) = &r.recovery {
                for snap in &rec.snapshots {
                    match &snap.damage {
                        None => out!("  snapshot {}: opened", snap.key),
                        Some(d) => out!("  snapshot {}: DOES NOT OPEN: {d}", snap.key),
                    }
                }
                for (tenant, from) in &rec.keys {
                    out!("  key of {tenant}: from {from}");
                }
                for (tenant, from) in &rec.shredded {
                    out!("  key of {tenant}: shredded (recorded in {from}); its backups stay unreadable");
                }
                if rec.snapshots.first().is_some_and(|s| s.damage.is_some()) {
                    out!(
                        "  warning: the newest snapshots did not open; a key shredded since the newest one that \
                         opened was taken from it and is in this keystore again"
                    );
                }
            }
            for t in &r.unreadable {
                out!(
                    "  tenant {t}: its repository is in the store, but no keystore snapshot holds its key: \
                     its data CANNOT BE READ"
                );
            }
            if let Some(region) = &r.facts.bucket_region {
                out!("bucket location: {region}");
            }
            match r.facts.conditional_writes {
                Some(true) => {
                    out!("conditional writes: honoured (tenant lock: one object created with If-None-Match)")
                }
                Some(false) => {
                    out!("conditional writes: ignored by this server (tenant lock: unique lock objects, oldest wins)")
                }
                None => {}
            }
            Ok(if r.unreadable.is_empty() { exit::OK } else { exit::MISSING_KEY })
        }
        Command::Backup { tenant, all, json } => {
            let agent = Agent::open(load_config(&cli)?).await?;
            let (tenants, warnings) = agent.tenants(tenant.as_deref(), *all)?;
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            let mut code = if warnings.is_empty() { exit::OK } else { exit::WARNINGS };
            let failed = per_tenant(&tenants, tenants.len() > 1, *json, async |t| {
                let r = backup::backup(&agent, t, &*progress).await?;
                if !r.manifest.warnings.is_empty() {
                    code = code.max(exit::WARNINGS);
                }
                if !json {
                    let s = &r.manifest.summary;
                    out!(
                        "{}: generation {}: {} tables, {} rows, {} files ({}); read {}, added {} in {} packs, {} ({})",
                        t,
                        r.manifest.id,
                        s.tables,
                        s.rows,
                        s.files,
                        mb(s.file_bytes),
                        mb(s.bytes_read),
                        mb(s.bytes_added),
                        s.packs_added,
                        format_ms(s.duration_ms),
                        rate(s.bytes_read, s.duration_ms)
                    );
                    for w in &r.manifest.warnings {
                        out!("  warning: {w}");
                    }
                }
                Ok(Some(r.manifest))
            })
            .await?
            .failed;
            Ok(failed.unwrap_or(code))
        }
        Command::Generations { tenant, json, command } => {
            let agent = Agent::open(load_config(&cli)?).await?;
            match command {
                None => {
                    let tenant = TenantId::parse(tenant.as_deref().unwrap_or_default())?;
                    let listing = generations::list(&agent, &tenant).await?;
                    print_generations(&listing, *json);
                    // One damaged manifest does not hide the others: it is named, and the exit
                    // code says so.
                    Ok(if listing.damaged.is_empty() { exit::OK } else { exit::DAMAGED })
                }
                Some(GenerationsCommand::Hold { tenant, generation, reason, json }) => {
                    let tenant = TenantId::parse(tenant)?;
                    let r = generations::hold(&agent, &tenant, generation, reason.as_deref(), &actor()).await?;
                    if *json {
                        print_json(&r);
                    } else {
                        let again = if r.replaced.is_some() {
                            " (it was already held; the earlier reason is kept in its history)"
                        } else {
                            ""
                        };
                        out!(
                            "{tenant}: generation {} is on {}{again}; forget keeps it until it is released",
                            generation,
                            r.hold.describe()
                        );
                    }
                    Ok(exit::OK)
                }
                Some(GenerationsCommand::Release { tenant, generation, json }) => {
                    let tenant = TenantId::parse(tenant)?;
                    let r = generations::release(&agent, &tenant, generation).await?;
                    if *json {
                        print_json(&r);
                    } else {
                        out!("{tenant}: generation {generation} released; the retention policy applies to it again");
                    }
                    Ok(exit::OK)
                }
            }
        }
        Command::Forget { tenant, all, dry_run, json } => {
            let agent = Agent::open(load_config(&cli)?).await?;
            let tenants: Vec<TenantId> = match tenant {
                Some(t) => vec![TenantId::parse(t)?],
                None => agent.keystore_tenants().iter().map(|t| TenantId::parse(t)).collect::<Result<_, _>>()?,
            };
            let mut code = exit::OK;
            let failed = per_tenant(&tenants, *all, *json, async |t| {
                match forget::forget(&agent, t, &forget::ForgetOptions { dry_run: *dry_run }).await {
                    Ok(r) => {
                        if !r.problems.is_empty() {
                            code = exit::DAMAGED;
                        }
                        if !json {
                            print_forget(&r);
                        }
                        Ok(Some(r))
                    }
                    // A shredded tenant has nothing readable left to apply a policy to.
                    Err(Error::Key(crate::keys::KeyError::Shredded { .. })) if *all => {
                        if !json {
                            out!("{t}: skipped, its key is shredded");
                        }
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            })
            .await?
            .failed;
            Ok(failed.unwrap_or(code))
        }
        Command::Restore { tenant, generation, to, force, partial } => {
            let agent = Agent::open(load_config(&cli)?).await?;
            let tenant = TenantId::parse(tenant)?;
            let opts = restore::RestoreOptions {
                generation: generation.clone(),
                to: to.clone(),
                force: *force,
                partial: *partial,
            };
            let r = restore::restore(&agent, &tenant, &opts, &*progress).await?;
            out!(
                "{tenant}: restored generation {} into {}: {} tables, {} rows, {} files, {} in {} ({}); every blob it read was verified",
                r.generation, to.display(), r.tables, r.rows, r.files, mb(r.bytes), format_ms(r.duration_ms), rate(r.bytes, r.duration_ms)
            );
            if r.lost.is_empty() {
                return Ok(exit::OK);
            }
            out!(
                "  {} entries COULD NOT BE RESTORED (listed in {}):",
                r.lost.len(),
                to.join(restore::REPORT_FILE).display()
            );
            for l in &r.lost {
                out!("  lost: {}: {}", l.what, l.cause);
            }
            Ok(exit::DAMAGED)
        }
        Command::Check { tenant, all, read_data, read_data_subset, repair, json } => {
            let read = match (read_data, read_data_subset) {
                (_, Some(s)) => check::ReadData::Subset(*s),
                (true, None) => check::ReadData::All,
                (false, None) => check::ReadData::None,
            };
            let agent = Agent::open(load_config(&cli)?).await?;
            let tenants = agent.repository_tenants(if *all { None } else { tenant.as_deref() })?;
            let keystore = agent.check_keystore(*repair).await?;
            if !json {
                print_keystore_check(&keystore);
            }
            let mut code = if keystore.problems.is_empty() { exit::OK } else { exit::DAMAGED };
            let failed = per_tenant(&tenants, tenants.len() > 1, *json, async |t| {
                let opts = check::CheckOptions { read_data: read, repair: *repair };
                let mut r = check::check(&agent, t, &opts, &*progress).await?;
                r.keystore = Some(keystore.clone());
                if !r.is_clean() {
                    code = exit::DAMAGED;
                }
                if !json {
                    print_check(&r, &read);
                }
                Ok(Some(r))
            })
            .await?
            .failed;
            // Damage found in one tenant is what check exists to say: it outranks another
            // tenant's failure to be checked (which is named on stderr).
            Ok(if code == exit::DAMAGED { code } else { failed.unwrap_or(code) })
        }
        Command::Prune { tenant, all, dry_run, json } => {
            let agent = Agent::open(load_config(&cli)?).await?;
            let tenants = agent.repository_tenants(if *all { None } else { tenant.as_deref() })?;
            let done = per_tenant(&tenants, tenants.len() > 1, *json, async |t| {
                let r = prune::prune(&agent, t, &prune::PruneOptions { dry_run: *dry_run }, &*progress).await?;
                if !json {
                    print_prune(&r);
                }
                Ok(Some(r))
            })
            .await?;
            Ok(match done.failed {
                Some(code) => code,
                None if done.reports.iter().any(|r| !r.warnings.is_empty()) => exit::WARNINGS,
                None => exit::OK,
            })
        }
        Command::Export { tenant, generation, out, format, split_size, passphrase_file, upload } => {
            // Flags first, so that a typo is reported before the store is opened.
            let mut opts = export::ExportOptions::new(out);
            opts.formats = crate::export::Formats::parse(format)?;
            opts.split_size = crate::export::parse_size(split_size)?;
            opts.generation = generation.clone();
            opts.passphrase_file = passphrase_file.clone();
            opts.upload = *upload;
            let tenant = TenantId::parse(tenant)?;
            let agent = Agent::open(load_config(&cli)?).await?;
            let r = export::export(&agent, &tenant, &opts, &*progress).await?;
            print_export(&r);
            Ok(if r.warnings.is_empty() { exit::OK } else { exit::WARNINGS })
        }
        Command::Tenant { command: TenantCommand::List { json } } => {
            let agent = Agent::open(load_config(&cli)?).await?;
            let list = crate::commands::tenant::list(&agent).await?;
            for w in &list.warnings {
                eprintln!("warning: {w}");
            }
            match json {
                true => print_json(&list.tenants),
                false => print_tenants(&list.tenants),
            }
            Ok(exit::OK)
        }
        Command::Unlock { tenant } => {
            let agent = Agent::open(load_config(&cli)?).await?;
            let tenant = TenantId::parse(tenant)?;
            let removed = crate::repository::lock::remove_stale(&*agent.store, &tenant).await?;
            if removed.is_empty() {
                out!("{tenant}: not locked");
            }
            for (key, info) in &removed {
                out!(
                    "{tenant}: removed the stale lock {key} of {} (pid {} on {}, since {})",
                    info.purpose,
                    info.pid,
                    info.host,
                    info.created
                );
            }
            Ok(exit::OK)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(*shell, &mut Cli::command(), "reversa", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Command::Exports { command } => {
            let agent = Agent::open(load_config(&cli)?).await?;
            match command {
                ExportsCommand::List { tenant, json } => {
                    let tenant = tenant.as_deref().map(TenantId::parse).transpose()?;
                    let (list, odd) = export::list_exports(&agent, tenant.as_ref()).await?;
                    for w in &odd {
                        eprintln!("warning: {w}");
                    }
                    if *json {
                        print_json(&list);
                    } else {
                        out!("{:<20} {:<26} {:<20} {:>6} {:>12}", "TENANT", "EXPORT", "CREATED", "FILES", "SIZE");
                        for e in &list {
                            out!(
                                "{:<20} {:<26} {:<20} {:>6} {:>12}",
                                e.tenant,
                                e.id,
                                e.created,
                                e.objects.len(),
                                mb(e.bytes)
                            );
                        }
                    }
                    Ok(exit::OK)
                }
                ExportsCommand::Prune { json } => {
                    let r = export::prune_exports(&agent, jiff::Timestamp::now()).await?;
                    for w in &r.warnings {
                        eprintln!("warning: {w}");
                    }
                    if *json {
                        print_json(&r);
                    } else {
                        for e in &r.removed {
                            out!(
                                "removed export {} of {} (made {}, {} files, {})",
                                e.id,
                                e.tenant,
                                e.created,
                                e.objects.len(),
                                mb(e.bytes)
                            );
                        }
                        out!("{} exports removed, {} kept (keep_days = {})", r.removed.len(), r.kept, r.keep_days);
                    }
                    Ok(exit::OK)
                }
            }
        }
    }
}

fn print_check(r: &check::CheckReport, read: &check::ReadData) {
    let verified = match (read, &r.subset) {
        (check::ReadData::None, _) => String::new(),
        (_, Some(subset)) => format!(
            ", subset {subset}: {} packs, {} blobs read and verified ({})",
            r.packs_read,
            r.blobs_read,
            mb(r.bytes_read)
        ),
        (_, None) => format!(", {} blobs read and verified ({})", r.blobs_read, mb(r.bytes_read)),
    };
    let verdict = if r.is_clean() { "no problems".to_string() } else { format!("{} PROBLEMS", r.problems.len()) };
    out!(
        "{}: {} generations, {} index files, {} packs, {} blobs{verified}: {verdict}",
        r.tenant,
        r.generations,
        r.index_files,
        r.packs,
        r.blobs
    );
    for p in &r.problems {
        out!("  damaged: {p}");
    }
    out!(
        "  verified in the last {} days: {:.1}% of the pack bytes ({} of {})",
        check::RECENT_DAYS,
        r.verified_recently_percent,
        mb(r.verified_recently_bytes),
        mb(r.pack_bytes)
    );
    if !r.unreferenced_packs.is_empty() {
        out!(
            "  note: {} unreferenced packs (left by an interrupted backup; harmless, prune removes them)",
            r.unreferenced_packs.len()
        );
    }
    for u in &r.leftover_uploads {
        let action = if u.action == "left" { "left (`check --repair` aborts it)" } else { &u.action };
        out!("  leftover upload: {} (started {}, id {}): {action}", u.key, u.initiated, u.upload_id);
    }
}

/// Who runs this command, as records name them: `REVERSA_ACTOR`, else the OS user and host.
fn actor() -> String {
    if let Some(a) = std::env::var("REVERSA_ACTOR").ok().filter(|a| !a.trim().is_empty()) {
        return a.trim().to_string();
    }
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", crate::repository::lock::hostname())
}

fn print_tenants(tenants: &[crate::commands::tenant::TenantLine]) {
    out!(
        "{:<24} {:<6} {:<5} {:<8} {:>11} {:<34} {:>12}",
        "TENANT",
        "SOURCE",
        "STORE",
        "KEY",
        "GENERATIONS",
        "LAST",
        "SIZE"
    );
    let yes = |b: bool| if b { "yes" } else { "no" };
    for t in tenants {
        out!(
            "{:<24} {:<6} {:<5} {:<8} {:>11} {:<34} {:>12}",
            t.tenant,
            yes(t.in_source),
            yes(t.in_store),
            t.key,
            t.generations,
            t.last_generation.as_deref().unwrap_or("-"),
            mb(t.repository_bytes)
        );
    }
}

fn print_keystore_check(k: &crate::keys::SnapshotCheck) {
    if let Some(up) = &k.uploaded {
        out!("keystore: uploaded a fresh snapshot {up} (--repair)");
    }
    match (&k.newest, k.problems.is_empty()) {
        (Some(newest), true) => {
            out!("keystore: {} snapshots open; the newest, {newest}, holds every key of this agent", k.snapshots)
        }
        (None, true) => out!("keystore: no snapshot in the store, and no key to keep"),
        (_, false) => out!("keystore: {} snapshots, {} PROBLEMS", k.snapshots, k.problems.len()),
    }
    for p in &k.problems {
        out!("  damaged: {p}");
    }
}

fn print_prune(r: &prune::PruneReport) {
    let (head, would) = if r.dry_run { ("dry run, nothing changed: ", "would be ") } else { ("", "") };
    out!(
        "{}: {head}{} generations read; packs: {} {would}deleted, {} {would}repacked into {}, {} left for the grace \
         period ({} h), {} -> {}; blobs: {} kept, {} {would}removed ({} moved); {} {would}freed ({} -> {})",
        r.tenant,
        r.generations,
        r.packs_deleted,
        r.packs_repacked,
        r.packs_written,
        r.packs_kept_for_grace,
        r.grace_hours,
        r.packs_before,
        r.packs_after,
        r.blobs_kept,
        r.blobs_removed,
        r.blobs_moved,
        mb(r.bytes_freed),
        mb(r.bytes_before),
        mb(r.bytes_after)
    );
    for w in &r.warnings {
        out!("  warning: {w}");
    }
}

fn print_generations(listing: &generations::Listing, json: bool) {
    for d in &listing.damaged {
        eprintln!("damaged: {d}");
    }
    if json {
        print_json(&listing.generations);
        return;
    }
    out!(
        "{:<34} {:<20} {:>10} {:>8} {:>12} {:>12} {:>9} {:>9} {:>9}  HOLD",
        "GENERATION",
        "TIME",
        "ROWS",
        "FILES",
        "SIZE",
        "ADDED",
        "INSERTED",
        "UPDATED",
        "DELETED"
    );
    for g in &listing.generations {
        let (m, s) = (&g.manifest, &g.manifest.summary);
        out!(
            "{:<34} {:<20} {:>10} {:>8} {:>12} {:>12} {:>9} {:>9} {:>9}  {}",
            m.id,
            m.time,
            s.rows,
            s.files,
            mb(s.table_bytes + s.file_bytes),
            mb(s.bytes_added),
            s.rows_inserted,
            s.rows_updated,
            s.rows_deleted,
            g.hold.as_ref().map(|h| h.describe()).unwrap_or_else(|| "-".into())
        );
    }
}

fn print_forget(r: &forget::ForgetReport) {
    out!("{}: policy {}{}", r.tenant, r.policy, if r.dry_run { " (dry run: nothing is deleted)" } else { "" });
    for w in &r.warnings {
        out!("  warning: {w}");
    }
    for d in &r.generations {
        let verdict = match (d.keep, r.dry_run) {
            (true, _) => "keep",
            (false, true) => "would forget",
            (false, false) => "forgot",
        };
        let line = format!("  {verdict:<12} {:<34} {:<20} {}", d.id, d.time, d.reasons.join(", "));
        out!("{}", line.trim_end());
    }
    for p in &r.problems {
        out!("  damaged: {p}");
    }
    out!(
        "{}: {} kept, {} {}",
        r.tenant,
        r.kept,
        r.forgotten,
        if r.dry_run { "would be forgotten" } else { "forgotten (their packs stay until prune)" }
    );
}

fn print_export(r: &export::ExportReport) {
    let source = match &r.source {
        crate::export::SourceInfo::Live { .. } => "the live source".to_string(),
        crate::export::SourceInfo::Generation { id, .. } => format!("generation {id}"),
    };
    let rows: u64 = r.tables.iter().map(|t| t.rows).sum();
    out!(
        "{}: export {} from {source}: {} tables, {rows} rows, {} files ({}) in {} ({})",
        r.tenant,
        r.export_id,
        r.tables.len(),
        r.files,
        mb(r.file_bytes),
        format_ms(r.duration_ms),
        mb(r.bytes)
    );
    for p in &r.parts {
        out!("  {}", p.display());
    }
    out!("  SHA-256 {}", r.sha256);
    if let Some(note) = &r.join_note {
        out!(
            "  the archive is in {} parts; {} says how to join them (cat, copy /b, or 7-Zip on NAME.zip.001)",
            r.parts.len(),
            note.display()
        );
    }
    for u in &r.uploaded {
        match &u.link {
            Some(link) => out!("  uploaded {}\n    download: {link}", u.key),
            None => out!("  uploaded {}", u.key),
        }
    }
    for w in &r.warnings {
        out!("  warning: {w}");
    }
    match (&r.passphrase, &r.passphrase_file) {
        (_, Some(f)) => {
            out!("passphrase written to {} (mode 0600); give it to the requester apart from the archive", f.display())
        }
        (Some(p), None) => out!(
            "passphrase (shown only now, stored nowhere; give it to the requester apart from the archive):\n{}",
            p.expose()
        ),
        (None, None) => {}
    }
}

fn format_ms(ms: u64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

/// Map an error to its exit code and print it with its whole chain.
pub fn report_error(e: &Error) -> i32 {
    eprintln!("error: {e}");
    exit::of(e.kind())
}
