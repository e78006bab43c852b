//! The command line: flags are parsed by clap, the configuration is loaded and validated, then
//! one job runs through `jobs` per tenant, and the run's audit segment is sealed and uploaded.
//! Output for people on stdout (`render`), `--json` for machines; diagnostics on stderr. Exit
//! codes are documented in README.md. The environment is read here and nowhere below.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// `println!` for a command's output. A reader that went away (`reversa generations --json |
/// head -1`) is not the panic `println!` gives: the output stops quietly and the command runs
/// to its end (every tenant of `backup --all` is still backed up, the audit segment is still
/// sealed). SIGPIPE stays ignored, so a server closing a socket mid-write is an error the verb
/// handles.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if !$crate::cli::stdout_closed() {
            if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
                $crate::cli::stdout_failed(e);
            }
        }
    }};
}

mod audit;
mod render;

use crate::audit::RecipientKind;
use crate::commands::{check, demo, export, forget, generations, prune, restore, Agent, Error};
use crate::config::Config;
use crate::jobs::{self, BackupOptions, HoldOptions, Job, Recipient, ReleaseOptions, Report, Task, Who};
use crate::progress::{self, Progress};
use crate::tenant::TenantId;
use render::print_json;

static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Stdout cannot be written: no more output, quietly when its reader left, else said once.
pub(crate) fn stdout_failed(e: std::io::Error) {
    if !STDOUT_CLOSED.swap(true, std::sync::atomic::Ordering::Relaxed) && e.kind() != std::io::ErrorKind::BrokenPipe {
        eprintln!("error: cannot write to stdout: {e}; the command goes on without its output");
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "reversa",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("REVERSA_COMMIT"), ")"),
    about = "Backups, exports and reversibility for the data of SaaS tenants",
    after_help = "Environment: REVERSA_MASTER_KEY (base64 of the 32-byte master key; overrides [keys] \
                  master_key_file), REVERSA_LOG (diagnostics on stderr: warn, info, debug), REVERSA_CONFIG \
                  (the configuration file), REVERSA_ACTOR (who runs the command, as the audit log records it; \
                  else the OS user and host), NO_COLOR (no colour on a terminal). Exit codes: README.md."
)]
pub struct Cli {
    /// The configuration file (TOML); see config/reversa.example.toml.
    #[arg(long, global = true, env = "REVERSA_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub who: JobArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Who runs a command and why: recorded in every audit entry it writes.
#[derive(Args, Debug, Clone)]
pub struct JobArgs {
    /// Who runs the command, as the audit log records it (else REVERSA_ACTOR, else the OS user
    /// and host).
    #[arg(long, global = true, env = "REVERSA_ACTOR", value_name = "NAME")]
    pub actor: Option<String>,
    /// Why (a case number, a request): recorded in the audit log, and in a legal hold.
    #[arg(long, global = true, value_name = "TEXT")]
    pub reason: Option<String>,
    /// The ticket that authorises the operation: recorded in the audit log.
    #[arg(long, global = true, value_name = "ID")]
    pub ticket: Option<String>,
}

/// One tenant, or every tenant.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct TenantArgs {
    /// The tenant id (as in [source] root and in the store).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Every tenant: of the source for backup, with a repository in the store for the others.
    #[arg(long)]
    pub all: bool,
}

/// To whom a command gives tenant data: the disclosure register's record.
#[derive(Args, Debug, Clone)]
pub struct RecipientArgs {
    /// Who receives the data (a person, an office); required, recorded in the disclosure
    /// register (`reversa disclosures`).
    #[arg(long, value_name = "NAME")]
    pub recipient: Option<String>,
    /// What the recipient is: the customer, a public authority (needs --legal-basis; the
    /// customer is to be told), or the provider itself.
    #[arg(long, value_enum, default_value_t = RecipientKind::Customer)]
    pub recipient_kind: RecipientKind,
    /// For an authority: the law, order or request under which it asked.
    #[arg(long, value_name = "TEXT")]
    pub legal_basis: Option<String>,
}

impl RecipientArgs {
    fn recipient(&self) -> Option<Recipient> {
        let name = self.recipient.clone()?;
        Some(Recipient { name, kind: self.recipient_kind, legal_basis: self.legal_basis.clone() })
    }
}

/// `--json` or `--csv` for the readers of the audit log.
#[derive(Args, Debug, Clone)]
#[group(multiple = false)]
pub struct FormatArgs {
    /// One JSON document (entries: one JSON line each).
    #[arg(long)]
    pub json: bool,
    /// CSV (RFC 4180), one row each; opens in LibreOffice.
    #[arg(long)]
    pub csv: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum Format {
    Human,
    Json,
    Csv,
}

impl FormatArgs {
    fn format(&self) -> Format {
        match (self.json, self.csv) {
            (true, _) => Format::Json,
            (_, true) => Format::Csv,
            _ => Format::Human,
        }
    }
}

/// Which audit entries: a tenant, a time range, a kind.
#[derive(Args, Debug, Clone)]
pub struct EntryFilter {
    /// Only this tenant's entries.
    #[arg(long)]
    pub tenant: Option<String>,
    /// From this time (RFC 3339, or a date: 2026-11-01).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Before this time (RFC 3339, or a date).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Read the sealed segments of every agent in the store instead of this agent's local log.
    #[arg(long)]
    pub from_store: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Seed three sample tenants under ./reversa-demo, back them up, restore one and verify it.
    Demo {
        /// Where the demo writes everything.
        #[arg(long, default_value = "reversa-demo")]
        dir: PathBuf,
    },
    /// Create the store marker, the keystore and the agent key (or recover the keystore from
    /// the store).
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
        #[command(flatten)]
        which: TenantArgs,
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
    Forget {
        #[command(flatten)]
        which: TenantArgs,
        /// Show what would be kept and forgotten; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON on stdout (byte counts in bytes).
        #[arg(long)]
        json: bool,
    },
    /// Restore a generation (the newest by default) into a folder. A disclosure: needs
    /// --recipient.
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
        #[command(flatten)]
        to_whom: RecipientArgs,
    },
    /// Check that every reference in a tenant's repository resolves.
    Check {
        #[command(flatten)]
        which: TenantArgs,
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
    Prune {
        #[command(flatten)]
        which: TenantArgs,
        /// Report what would be deleted and repacked, and the bytes freed, changing nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON on stdout (byte counts in bytes).
        #[arg(long)]
        json: bool,
    },
    /// Write the customer's copy of a tenant: an AES-256 ZIP with its records as XLSX and CSV and
    /// its files (docs/EXPORT.md). Prints the passphrase once, or writes it to a file. A
    /// disclosure: needs --recipient.
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
        #[command(flatten)]
        to_whom: RecipientArgs,
        #[command(flatten)]
        extraordinary: ExtraordinaryArgs,
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
    /// The reversibility timeline of every tenant.
    Lifecycle {
        #[command(subcommand)]
        command: LifecycleCommand,
    },
    /// Restore drill: restore a generation into scratch space, verify every blob and every
    /// table's rows, run SQLite's integrity and foreign-key checks, time it against [drill]
    /// rto_hours, remove it, and sign the report (reports/<tenant>/drills/). A failed drill
    /// exits 6. `--verify FILE` checks a report; `--fleet-estimate` says whether every tenant
    /// could be restored within the objective.
    Drill {
        /// The tenant id.
        #[arg(long, required_unless_present_any = ["verify", "fleet_estimate"])]
        tenant: Option<String>,
        /// The generation id; the newest by default.
        #[arg(long)]
        generation: Option<String>,
        /// Also write the report (JSON and HTML) into this folder.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Check a drill report's signature and its audit entry.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["tenant", "fleet_estimate"])]
        verify: Option<PathBuf>,
        /// Estimate the whole fleet's restore time from the drills' throughput.
        #[arg(long, conflicts_with = "tenant")]
        fleet_estimate: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The end of a purged tenant's copies: the verification that they are gone.
    Expiry {
        #[command(subcommand)]
        command: ExpiryCommand,
    },
    /// Deletion certificates: the latest one of a tenant, and the check of a certificate file.
    Certificate {
        #[command(subcommand)]
        command: CertificateCommand,
    },
    /// Remove a tenant's stale lock (left by a killed or vanished process); a live lock is
    /// refused and left in place.
    Unlock {
        /// The tenant id (as in [source] root and in the store).
        #[arg(long)]
        tenant: String,
    },
    /// The audit log: its latest signed checkpoint, its verification, its entries.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The disclosure register: every time tenant data was given to someone (exports,
    /// restores), by whom, to whom, when and why.
    Disclosures {
        #[command(flatten)]
        filter: EntryFilter,
        /// Only the disclosures to an authority whose customer is still to be told.
        #[arg(long)]
        pending_notices: bool,
        #[command(flatten)]
        format: FormatArgs,
    },
    /// API tokens for the daemon.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        /// The shell, e.g. bash: `reversa completions bash > /etc/bash_completion.d/reversa`.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a fresh random token and print it once, with the [[api.tokens]] lines to paste into
    /// the configuration (which keeps only its SHA-256). Needs no configuration.
    New {
        /// The token's name: the actor the audit log records for what it asks.
        #[arg(long)]
        name: String,
        /// operator, auditor, or tenant:<id> (that tenant's designated administrator).
        #[arg(long)]
        scope: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum GenerationsCommand {
    /// Put a generation on legal hold: `forget` keeps it until it is released. --reason says
    /// why (stored sealed, shown by `generations` and `forget`); changing a hold needs one.
    Hold {
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
    /// Every tenant of the source and of the store, with its lifecycle state, key, generations
    /// and repository size.
    List {
        /// Only the tenants in this state.
        #[arg(long, value_enum)]
        state: Option<crate::lifecycle::State>,
        /// Print the report as JSON on stdout (byte counts in bytes).
        #[arg(long)]
        json: bool,
    },
    /// Record the customer's designated administrator and contacts (sealed in the store; the
    /// audit log only counts them).
    Set {
        /// The tenant id.
        tenant: String,
        /// The designated administrator's email address.
        #[arg(long, value_name = "EMAIL")]
        admin: String,
        /// Another address to tell of every step (repeatable).
        #[arg(long = "contact", value_name = "EMAIL")]
        contacts: Vec<String>,
    },
    /// Set the contract end: the export window opens then, and the timeline follows [lifecycle].
    Terminate {
        /// The tenant id.
        tenant: String,
        /// The contract end: RFC 3339, or a date (its midnight, UTC).
        #[arg(long, value_name = "DATE")]
        at: String,
        /// Accept a contract end so far back that the export window is already over (needs --reason).
        #[arg(long)]
        backdated: bool,
    },
    /// Undo a termination, while the tenant is still in its export window.
    CancelTermination {
        /// The tenant id.
        tenant: String,
    },
    /// Delete the tenant's source at the end of its safeguard, after reading its final
    /// generation back whole; uploaded exports go too. `lifecycle tick` runs it when
    /// [lifecycle] purge_source = true.
    Purge {
        /// The tenant id.
        tenant: String,
        /// Who deleted the source, when reversa does not ([lifecycle] purge_source = false).
        #[arg(long, value_name = "NAME")]
        confirmed_by: Option<String>,
        /// Purge before the safeguard ends (needs --reason).
        #[arg(long)]
        early: bool,
        /// Also write the certificate it issues (JSON and HTML) into this folder.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Destroy the tenant's data key (cryptographic erase) after its purge; every keystore
    /// snapshot holding it is deleted. `lifecycle tick` runs it per [lifecycle] shred.
    Shred {
        /// The tenant id.
        tenant: String,
        /// Also write the certificate it issues (JSON and HTML) into this folder.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The tenant's state, every date of its timeline, what is allowed now and what is next.
    Status {
        /// The tenant id.
        tenant: String,
        /// Print it as JSON (docs/LIFECYCLE.md).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum LifecycleCommand {
    /// Record the state each tenant's dates have reached; a second run changes nothing. Cron:
    /// `0 * * * * reversa --config /etc/reversa.toml lifecycle tick`.
    Tick {
        /// Tick as if it were this time (drills and tests; recorded in the audit log).
        #[arg(long, value_name = "DATE")]
        now: Option<String>,
        /// Print the transitions as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `export --extraordinary`: during the safeguard, from the final generation, by an operator
/// (needs --ticket, --reason and --recipient).
#[derive(clap::Args, Debug)]
pub struct ExtraordinaryArgs {
    /// An extraordinary extraction (safeguard only): --tables or --query.
    #[arg(long, requires = "extraction")]
    extraordinary: bool,
    /// Chosen tables, raw: CSV plus a SQLite file holding just them.
    #[arg(long, value_delimiter = ',', group = "extraction", requires = "extraordinary")]
    tables: Vec<String>,
    /// One read-only query, run on the final generation: its result as CSV and XLSX. Its text
    /// goes into the archive's manifest; the audit log keeps its SHA-256.
    #[arg(long, group = "extraction", requires = "extraordinary")]
    query: Option<String>,
    /// A query giving more rows fails.
    #[arg(long, default_value_t = crate::commands::extraction::ExtractionOptions::default_row_limit())]
    row_limit: u64,
    /// A query running longer is stopped (seconds, or "5m").
    #[arg(long, default_value = "300")]
    time_limit: String,
}

#[derive(Subcommand, Debug)]
pub enum ExpiryCommand {
    /// Verify by listing the store (every object version and delete marker), every keystore
    /// snapshot and this host that nothing of the tenant is left; issue the certificate (final
    /// once the VM replicas have expired, else partial). Anything left is named: exit 6, and
    /// nothing is issued. On a confirmed tenant, the re-check.
    Confirm {
        /// The tenant id.
        tenant: String,
        /// Also write the certificate (JSON and HTML) into this folder.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertificateCommand {
    /// Check a certificate: its signature against the agent's public key in the store, and the
    /// audit log's entry of its issue. An edited or foreign certificate exits 6.
    Verify {
        /// The certificate's JSON file.
        file: PathBuf,
    },
    /// Print the tenant's latest certificate.
    Show {
        /// The tenant id.
        tenant: String,
        /// Print it as JSON (the signed certificate itself).
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

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Print the latest signed checkpoint (sequence, head hash, time, signature), to keep apart.
    Head {
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify the chain, every checkpoint's signature and every segment against the store; exit
    /// 6 naming the first bad entry.
    Verify {
        /// Verify every agent's sealed segments in the store instead of this agent's local log
        /// (after the state folder is lost).
        #[arg(long)]
        from_store: bool,
        /// A head kept apart (`reversa audit head`): the log must still hold that entry.
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the entries, oldest first.
    Log {
        #[command(flatten)]
        filter: EntryFilter,
        /// Only this job kind (backup, restore, export, hold...) or key event (key_created...).
        #[arg(long)]
        kind: Option<String>,
        #[command(flatten)]
        format: FormatArgs,
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
            ErrorKind::Damaged | ErrorKind::Remains => DAMAGED,
            ErrorKind::MissingKey => MISSING_KEY,
            ErrorKind::NotFound => 8,
            ErrorKind::NotAllowed => 9,
            // As a shell reports a command stopped by SIGINT.
            ErrorKind::Cancelled => 130,
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
    notice_secrets_from_env(&mut config.notices);
    config
        .notices
        .check_secrets()
        .map_err(|(key, why)| Error::Usage(format!("configuration file {}: {key}: {why}", path.display())))?;
    Ok(config)
}

/// `REVERSA_WEBHOOK_SECRET`, `REVERSA_SMTP_USERNAME` and `REVERSA_SMTP_PASSWORD`, read here and
/// nowhere below.
fn notice_secrets_from_env(n: &mut crate::notices::NoticesConfig) {
    let text = |name: &str| std::env::var_os(name).map(|v| crate::keys::KeyText::new(v.to_string_lossy().into_owned()));
    n.webhook_secret_env = text("REVERSA_WEBHOOK_SECRET");
    if let (Ok(user), Some(password)) = (std::env::var("REVERSA_SMTP_USERNAME"), text("REVERSA_SMTP_PASSWORD")) {
        n.smtp_credentials = Some((user, password));
    }
}

/// `REVERSA_MASTER_KEY`: the environment is read here, in the CLI, and nowhere below it.
fn master_key_from_env() -> Option<crate::keys::KeyText> {
    // Not UTF-8 is kept (lossily), so that it fails as a bad key rather than passing unseen.
    std::env::var_os(crate::keys::MASTER_KEY_ENV).map(|v| crate::keys::KeyText::new(v.to_string_lossy().into_owned()))
}

/// `REVERSA_NOW`: run on a simulated clock (drills, tests).
fn simulated_clock_from_env() -> Result<(), Error> {
    let Ok(s) = std::env::var(crate::NOW_ENV) else { return Ok(()) };
    match s.parse::<jiff::Timestamp>() {
        Ok(at) => {
            crate::simulate_clock(at);
            Ok(())
        }
        Err(e) => Err(Error::Usage(format!(
            "{}={s:?} is not an RFC 3339 time ({e}); unset it, or give a time such as 2026-11-23T02:00:00Z",
            crate::NOW_ENV
        ))),
    }
}

/// Who runs this command, as records name them: `--actor` or `REVERSA_ACTOR`, else the OS
/// user and host.
fn actor(who: &JobArgs) -> String {
    if let Some(a) = who.actor.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        return a.to_string();
    }
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", crate::repository::lock::hostname())
}

/// A token that SIGINT or SIGTERM cancels: the job running stops cleanly (its lock released,
/// no upload left), and no other job starts. A second signal ends the process at once.
fn cancel_on_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        for signals in 0.. {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
            if signals > 0 {
                eprintln!("reversa: stopped at once (second signal); a lock left behind is stale and taken over");
                std::process::exit(exit::of(crate::commands::ErrorKind::Cancelled));
            }
            eprintln!("reversa: stopping: the running job ends cleanly and no other starts (again to stop at once)");
            token.cancel();
        }
    });
    cancel
}

/// What every command on an agent shares: the agent, who runs it, the token, the progress.
struct Session {
    agent: Agent,
    who: Who,
    cancel: CancellationToken,
    progress: Box<dyn Progress>,
}

fn who(args: &JobArgs) -> Who {
    Who { actor: actor(args), reason: args.reason.clone(), ticket: args.ticket.clone() }
}

/// The report of the kind asked for (the runner returns the report of the task it was given).
macro_rules! report {
    ($session:expr, $job:expr, $kind:ident) => {
        match $session.run(&$job).await? {
            Report::$kind(r) => r,
            other => unreachable!("{} gave {other:?}", stringify!($kind)),
        }
    };
}

impl Session {
    fn job(&self, task: Task, tenant: Option<&TenantId>) -> Job {
        Job::by(task, tenant.cloned(), &self.who)
    }

    async fn run(&self, job: &Job) -> Result<Report, Error> {
        // Boxed: the job's future is large, and each command would otherwise hold it inline.
        Box::pin(jobs::run(&self.agent, job, &self.cancel, &*self.progress)).await
    }

    /// Run `verb` for each tenant in turn (it prints its own lines; `None` is a tenant it
    /// skipped), then print the reports as JSON if asked. With several tenants (`--all`), a
    /// tenant's failure is reported and the others still run; otherwise it is the command's
    /// error. Once cancelled, no other tenant starts.
    async fn per_tenant<R: serde::Serialize>(
        &self,
        tenants: &[TenantId],
        json: bool,
        mut verb: impl AsyncFnMut(&TenantId) -> Result<Option<R>, Error>,
    ) -> Result<PerTenant<R>, Error> {
        let keep_going = tenants.len() > 1;
        let mut done = PerTenant { reports: Vec::new(), failed: None };
        for t in tenants {
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            match verb(t).await {
                Ok(Some(r)) => done.reports.push(r),
                Ok(None) => {}
                Err(e) if keep_going && !matches!(e, Error::Cancelled) => {
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
}

/// What a verb run over tenants gave: the reports, and the exit code of the first tenant that
/// failed, if one did.
struct PerTenant<R> {
    reports: Vec<R>,
    failed: Option<i32>,
}

pub async fn run(cli: Cli) -> Result<i32, Error> {
    simulated_clock_from_env()?;
    match &cli.command {
        Command::Demo { dir } => {
            let r = Box::pin(demo::demo(dir, master_key_from_env(), &*progress::for_terminal())).await?;
            render::print_demo(&r);
            Ok(exit::OK)
        }
        Command::Init { generate_master_key, create_bucket } => {
            let cfg = load_config(&cli)?;
            let who = who(&cli.who);
            let r = crate::commands::init::init(&cfg, generate_master_key.as_deref(), *create_bucket, &who).await?;
            render::print_init(&r);
            Ok(if r.unreadable.is_empty() { exit::OK } else { exit::MISSING_KEY })
        }
        Command::Token { command: TokenCommand::New { name, scope } } => {
            let scope = crate::api::Scope::try_from(scope.clone()).map_err(Error::Usage)?;
            if name.trim().is_empty() || name.contains(['"', '\\', '\n']) {
                return Err(Error::Usage(format!("--name {name:?}: give a plain name, such as ops-team")));
            }
            let (token, sha256) = crate::api::tokens::new_token();
            out!("# The token, shown this once: give it to its holder, as `Authorization: Bearer <token>`.");
            out!("# {}", token.expose());
            out!("[[api.tokens]]\nname = \"{name}\"\nscope = \"{}\"\nsha256 = \"{sha256}\"", String::from(scope));
            Ok(exit::OK)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "reversa", &mut script);
            out!("{}", String::from_utf8_lossy(&script).trim_end());
            Ok(exit::OK)
        }
        command => {
            let agent = Agent::open(load_config(&cli)?).await?;
            let session =
                Session { agent, who: who(&cli.who), cancel: cancel_on_signal(), progress: progress::for_terminal() };
            let code = Box::pin(on_agent(&session, command)).await;
            // Whatever the command gave, its audit entries go into a sealed segment.
            match session.agent.seal_audit().await {
                Ok(sealed) => {
                    for (segment, why) in &sealed.local_only {
                        eprintln!(
                            "warning: audit segment {segment} is only local for now (the next run uploads it): {why}"
                        );
                    }
                }
                Err(e) => eprintln!("error: the audit log could not be sealed: {e}"),
            }
            code
        }
    }
}

async fn on_agent(s: &Session, command: &Command) -> Result<i32, Error> {
    match command {
        Command::Backup { which, json } => backup(s, which, *json).await,
        Command::Generations { tenant, json, command } => match command {
            None => list_generations(s, tenant.as_deref().unwrap_or_default(), *json).await,
            Some(GenerationsCommand::Hold { tenant, generation, json }) => hold(s, tenant, generation, *json).await,
            Some(GenerationsCommand::Release { tenant, generation, json }) => {
                release(s, tenant, generation, *json).await
            }
        },
        Command::Forget { which, dry_run, json } => forget(s, which, *dry_run, *json).await,
        Command::Restore { tenant, generation, to, force, partial, to_whom } => {
            let opts = restore::RestoreOptions {
                generation: generation.clone(),
                to: to.clone(),
                force: *force,
                partial: *partial,
            };
            restore(s, tenant, opts, to_whom).await
        }
        Command::Check { which, read_data, read_data_subset, repair, json } => {
            let read = match (read_data, read_data_subset) {
                (_, Some(sub)) => check::ReadData::Subset(*sub),
                (true, None) => check::ReadData::All,
                (false, None) => check::ReadData::None,
            };
            check(s, which, check::CheckOptions { read_data: read, repair: *repair }, *json).await
        }
        Command::Prune { which, dry_run, json } => prune(s, which, *dry_run, *json).await,
        Command::Export { tenant, out, passphrase_file, to_whom, extraordinary: x, .. } if x.extraordinary => {
            let opts = crate::commands::extraction::ExtractionOptions {
                out: out.clone(),
                passphrase_file: passphrase_file.clone(),
                tables: x.tables.clone(),
                query: x.query.clone(),
                row_limit: x.row_limit,
                time_limit_secs: crate::config::parse_seconds(&x.time_limit)
                    .ok_or_else(|| {
                        Error::Usage(format!("--time-limit {:?} is not a duration (300, 90s, 5m)", x.time_limit))
                    })?
                    .as_secs(),
            };
            let tenant = TenantId::parse(tenant)?;
            let mut job = s.job(Task::Extract(opts), Some(&tenant));
            job.recipient = to_whom.recipient();
            let r = report!(s, job, Export);
            render::print_export(&r);
            Ok(exit::OK)
        }
        Command::Export { tenant, generation, out, format, split_size, passphrase_file, upload, to_whom, .. } => {
            // Flags first, so that a typo is reported before anything runs.
            let mut opts = export::ExportOptions::new(out);
            opts.formats = crate::export::Formats::parse(format)?;
            opts.split_size = crate::export::parse_size(split_size)?;
            opts.generation = generation.clone();
            opts.passphrase_file = passphrase_file.clone();
            opts.upload = *upload;
            export(s, tenant, opts, to_whom).await
        }
        Command::Tenant { command: TenantCommand::List { state, json } } => tenant_list(s, *state, *json).await,
        Command::Tenant { command } => tenant_lifecycle(s, command).await,
        Command::Lifecycle { command: LifecycleCommand::Tick { now, json } } => tick(s, now.as_deref(), *json).await,
        Command::Expiry { command: ExpiryCommand::Confirm { tenant, out, json } } => {
            confirm(s, tenant, out.as_deref(), *json).await
        }
        Command::Certificate { command } => certificate(s, command).await,
        Command::Drill { tenant, generation, out, verify, fleet_estimate, json } => {
            drill(s, tenant.as_deref(), generation, out.as_deref(), verify.as_deref(), *fleet_estimate, *json).await
        }
        Command::Unlock { tenant } => unlock(s, tenant).await,
        Command::Exports { command: ExportsCommand::List { tenant, json } } => exports_list(s, tenant, *json).await,
        Command::Exports { command: ExportsCommand::Prune { json } } => exports_prune(s, *json).await,
        Command::Audit { command } => audit::run(s, command).await,
        Command::Disclosures { filter, pending_notices, format } => {
            audit::disclosures(s, filter, *pending_notices, format.format()).await
        }
        Command::Demo { .. } | Command::Init { .. } | Command::Token { .. } | Command::Completions { .. } => {
            unreachable!("run handles the commands without an agent")
        }
    }
}

async fn backup(s: &Session, which: &TenantArgs, json: bool) -> Result<i32, Error> {
    let (tenants, warnings) = s.agent.tenants(which.tenant.as_deref(), which.all)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let mut code = if warnings.is_empty() { exit::OK } else { exit::WARNINGS };
    let failed = s
        .per_tenant(&tenants, json, async |t| {
            let r = match s.run(&s.job(Task::Backup(BackupOptions {}), Some(t))).await {
                Ok(Report::Backup(r)) => r,
                Ok(other) => unreachable!("backup gave {other:?}"),
                // `--all` backs up every tenant the lifecycle allows; a terminated one past
                // its export window is skipped, not failed, night after night.
                Err(Error::NotAllowed(why)) if which.all => {
                    eprintln!("{t}: skipped: {why}");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            if !r.warnings.is_empty() {
                code = code.max(exit::WARNINGS);
            }
            if !json {
                render::print_backup(&r);
            }
            Ok(Some(r.manifest))
        })
        .await?
        .failed;
    Ok(failed.unwrap_or(code))
}

async fn list_generations(s: &Session, tenant: &str, json: bool) -> Result<i32, Error> {
    let tenant = TenantId::parse(tenant)?;
    let listing = generations::list(&s.agent, &tenant).await?;
    render::print_generations(&listing, json);
    // One damaged manifest does not hide the others: it is named, and the exit code says so.
    Ok(if listing.damaged.is_empty() { exit::OK } else { exit::DAMAGED })
}

async fn hold(s: &Session, tenant: &str, generation: &str, json: bool) -> Result<i32, Error> {
    let tenant = TenantId::parse(tenant)?;
    let task = Task::Hold(HoldOptions { generation: generation.to_string() });
    let r = report!(s, s.job(task, Some(&tenant)), Hold);
    match json {
        true => print_json(&r),
        false => render::print_hold(&r),
    }
    Ok(exit::OK)
}

async fn release(s: &Session, tenant: &str, generation: &str, json: bool) -> Result<i32, Error> {
    let tenant = TenantId::parse(tenant)?;
    let task = Task::Release(ReleaseOptions { generation: generation.to_string() });
    let r = report!(s, s.job(task, Some(&tenant)), Release);
    match json {
        true => print_json(&r),
        false => out!("{tenant}: generation {generation} released; the retention policy applies to it again"),
    }
    Ok(exit::OK)
}

async fn forget(s: &Session, which: &TenantArgs, dry_run: bool, json: bool) -> Result<i32, Error> {
    let tenants = s.agent.repository_tenants(if which.all { None } else { which.tenant.as_deref() })?;
    let mut code = exit::OK;
    let failed = s
        .per_tenant(&tenants, json, async |t| {
            let job = s.job(Task::Forget(forget::ForgetOptions { dry_run }), Some(t));
            match s.run(&job).await {
                Ok(Report::Forget(r)) => {
                    if !r.problems.is_empty() {
                        code = exit::DAMAGED;
                    }
                    if !json {
                        render::print_forget(&r);
                    }
                    Ok(Some(r))
                }
                Ok(other) => unreachable!("forget gave {other:?}"),
                // A shredded tenant has nothing readable left to apply a policy to.
                Err(Error::Key(crate::keys::KeyError::Shredded { .. })) if which.all => {
                    if !json {
                        out!("{t}: skipped, its key is shredded");
                    }
                    Ok(None)
                }
                // A terminated tenant's generations follow its lifecycle, not the policy.
                Err(Error::NotAllowed(why)) if which.all => {
                    if !json {
                        out!("{t}: skipped: {why}");
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

async fn restore(s: &Session, tenant: &str, opts: restore::RestoreOptions, to: &RecipientArgs) -> Result<i32, Error> {
    let tenant = TenantId::parse(tenant)?;
    let target = opts.to.clone();
    let mut job = s.job(Task::Restore(opts), Some(&tenant));
    job.recipient = to.recipient();
    let r = report!(s, job, Restore);
    render::print_restore(tenant.as_str(), &target, &r);
    Ok(if r.lost.is_empty() { exit::OK } else { exit::DAMAGED })
}

async fn check(s: &Session, which: &TenantArgs, opts: check::CheckOptions, json: bool) -> Result<i32, Error> {
    let tenants = s.agent.repository_tenants(if which.all { None } else { which.tenant.as_deref() })?;
    let keystore = report!(s, s.job(Task::CheckKeystore { repair: opts.repair }, None), CheckKeystore);
    if !json {
        render::print_keystore_check(&keystore);
    }
    let mut code = if keystore.problems.is_empty() { exit::OK } else { exit::DAMAGED };
    let failed = s
        .per_tenant(&tenants, json, async |t| {
            let mut r = match s.run(&s.job(Task::Check(opts), Some(t))).await {
                Ok(Report::Check(r)) => r,
                Ok(other) => unreachable!("check gave {other:?}"),
                // Shredded is what the lifecycle made of it, not damage: what is left of it
                // can no longer be read, by design.
                Err(Error::Key(crate::keys::KeyError::Shredded { .. })) => {
                    if !json {
                        out!("{t}: shredded: its key was destroyed, so nothing left of it can be read");
                    }
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            r.keystore = Some(keystore.clone());
            if !r.is_clean() {
                code = exit::DAMAGED;
            }
            if !json {
                render::print_check(&r, &opts.read_data);
            }
            Ok(Some(r))
        })
        .await?
        .failed;
    // Damage found in one tenant is what check exists to say: it outranks another tenant's
    // failure to be checked (which is named on stderr).
    Ok(if code == exit::DAMAGED { code } else { failed.unwrap_or(code) })
}

async fn prune(s: &Session, which: &TenantArgs, dry_run: bool, json: bool) -> Result<i32, Error> {
    let tenants = s.agent.repository_tenants(if which.all { None } else { which.tenant.as_deref() })?;
    let done = s
        .per_tenant(&tenants, json, async |t| {
            let r = report!(s, s.job(Task::Prune(prune::PruneOptions { dry_run }), Some(t)), Prune);
            if !json {
                render::print_prune(&r);
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

async fn export(s: &Session, tenant: &str, opts: export::ExportOptions, to: &RecipientArgs) -> Result<i32, Error> {
    let tenant = TenantId::parse(tenant)?;
    let mut job = s.job(Task::Export(opts), Some(&tenant));
    job.recipient = to.recipient();
    let r = report!(s, job, Export);
    render::print_export(&r);
    Ok(if r.warnings.is_empty() { exit::OK } else { exit::WARNINGS })
}

async fn tenant_list(s: &Session, state: Option<crate::lifecycle::State>, json: bool) -> Result<i32, Error> {
    let mut list = crate::commands::tenant::list(&s.agent).await?;
    for w in &list.warnings {
        eprintln!("warning: {w}");
    }
    list.tenants.retain(|t| state.is_none_or(|s| t.state == s));
    match json {
        true => print_json(&list.tenants),
        false => render::print_tenants(&list.tenants),
    }
    Ok(exit::OK)
}

async fn tenant_lifecycle(s: &Session, command: &TenantCommand) -> Result<i32, Error> {
    use crate::commands::lifecycle::{SetOptions, TerminateOptions};
    let (tenant, task, json) = match command {
        TenantCommand::Set { tenant, admin, contacts } => {
            (tenant, Task::TenantSet(SetOptions { admin: admin.clone(), contacts: contacts.clone() }), false)
        }
        TenantCommand::Terminate { tenant, at, backdated } => {
            let at = audit::parse_time("--at", at)?;
            (tenant, Task::Terminate(TerminateOptions { at, backdated: *backdated }), false)
        }
        TenantCommand::CancelTermination { tenant } => (tenant, Task::CancelTermination, false),
        TenantCommand::Purge { tenant, confirmed_by, early, out } => {
            let opts =
                crate::commands::lifecycle::purge::PurgeOptions { confirmed_by: confirmed_by.clone(), early: *early };
            return purge(s, tenant, opts, out.as_deref()).await;
        }
        TenantCommand::Shred { tenant, out } => return shred(s, tenant, out.as_deref()).await,
        TenantCommand::Status { tenant, json } => {
            let status = crate::commands::lifecycle::status(&s.agent, &TenantId::parse(tenant)?).await?;
            match json {
                true => print_json(&status),
                false => render::print_status(&status),
            }
            return Ok(exit::OK);
        }
        TenantCommand::List { .. } => unreachable!("on_agent lists"),
    };
    let tenant = TenantId::parse(tenant)?;
    match s.run(&s.job(task, Some(&tenant))).await? {
        Report::TenantSet(r) => {
            out!("{}: administrator and {} contacts recorded (sealed in the store)", r.tenant, r.contacts)
        }
        Report::Lifecycle(status) if json => print_json(&status),
        Report::Lifecycle(status) => render::print_status(&status),
        other => unreachable!("a lifecycle step gave {other:?}"),
    }
    Ok(exit::OK)
}

async fn tick(s: &Session, now: Option<&str>, json: bool) -> Result<i32, Error> {
    let now = now.map(|n| audit::parse_time("--now", n)).transpose()?;
    if let Some(n) = now {
        // The steps the tick runs are jobs of their own: they run on the same clock.
        crate::simulate_clock(n);
    }
    let ticked = Box::pin(jobs::tick(&s.agent, &s.who, now, &s.cancel, &*s.progress)).await?;
    match json {
        true => print_json(&ticked),
        false => render::print_tick(&ticked),
    }
    Ok(match (ticked.iter().any(|t| t.failed()), ticked.iter().any(|t| t.undelivered())) {
        (true, _) => 1,
        (false, true) => exit::WARNINGS,
        (false, false) => exit::OK,
    })
}

async fn purge(
    s: &Session,
    tenant: &str,
    opts: crate::commands::lifecycle::purge::PurgeOptions,
    out: Option<&std::path::Path>,
) -> Result<i32, Error> {
    let tenant = TenantId::parse(tenant)?;
    let r = report!(s, s.job(Task::Purge(opts), Some(&tenant)), Purge);
    render::print_purge(&r);
    let issued = r.shred.as_ref().map(|sh| &sh.certificate).or(r.certificate.as_ref());
    write_certificate(issued, out)
}

async fn shred(s: &Session, tenant: &str, out: Option<&std::path::Path>) -> Result<i32, Error> {
    let tenant = TenantId::parse(tenant)?;
    let r = report!(s, s.job(Task::Shred, Some(&tenant)), Shred);
    render::print_shred(&r);
    write_certificate(Some(&r.certificate), out)
}

async fn confirm(s: &Session, tenant: &str, out: Option<&std::path::Path>, json: bool) -> Result<i32, Error> {
    let tenant = TenantId::parse(tenant)?;
    let r = report!(s, s.job(Task::ConfirmExpiry, Some(&tenant)), Confirm);
    match json {
        true => print_json(&r),
        false => render::print_confirm(&r),
    }
    write_certificate(r.certificate.as_ref(), out)
}

/// `--out DIR`: the certificate a step issued, as files.
fn write_certificate(
    issued: Option<&crate::commands::certificate::Issued>,
    out: Option<&std::path::Path>,
) -> Result<i32, Error> {
    if let (Some(c), Some(dir)) = (issued, out) {
        for f in crate::commands::certificate::write_out(&*c.certificate, dir)? {
            out!("  written: {}", f.display());
        }
    }
    Ok(exit::OK)
}

async fn drill(
    s: &Session,
    tenant: Option<&str>,
    generation: &Option<String>,
    out: Option<&std::path::Path>,
    verify: Option<&std::path::Path>,
    fleet: bool,
    json: bool,
) -> Result<i32, Error> {
    use crate::commands::drill as d;
    if let Some(file) = verify {
        let bytes = std::fs::read(file).map_err(|cause| Error::Io {
            what: "cannot read the drill report",
            path: file.into(),
            cause,
        })?;
        let (r, entry) = d::verify(&s.agent, &file.display().to_string(), &bytes).await?;
        render::print_drill_verified(&r, &entry);
        return Ok(exit::OK);
    }
    if fleet {
        let e = d::fleet_estimate(&s.agent).await?;
        match json {
            true => print_json(&e),
            false => render::print_fleet_estimate(&e),
        }
        return Ok(if e.within_rto { exit::OK } else { exit::WARNINGS });
    }
    let tenant = TenantId::parse(tenant.unwrap_or_default())?;
    let r = report!(s, s.job(Task::Drill(d::DrillOptions { generation: generation.clone() }), Some(&tenant)), Drill);
    match json {
        true => print_json(&r),
        false => render::print_drill(&r),
    }
    if let Some(dir) = out {
        for f in crate::commands::certificate::write_out(&*r, dir)? {
            if !json {
                out!("  written: {}", f.display());
            }
        }
    }
    Ok(match r.outcome {
        crate::drill::Outcome::Pass => exit::OK,
        crate::drill::Outcome::Warn => exit::WARNINGS,
        crate::drill::Outcome::Fail => exit::DAMAGED,
    })
}

async fn certificate(s: &Session, command: &CertificateCommand) -> Result<i32, Error> {
    match command {
        CertificateCommand::Verify { file } => {
            let bytes = std::fs::read(file).map_err(|cause| Error::Io {
                what: "cannot read the certificate",
                path: file.clone(),
                cause,
            })?;
            let v = crate::commands::certificate::verify(&s.agent, &file.display().to_string(), &bytes).await?;
            render::print_certificate_verified(&v);
        }
        CertificateCommand::Show { tenant, json } => {
            let c = crate::commands::certificate::latest(&s.agent, &TenantId::parse(tenant)?).await?;
            match json {
                true => print_json(&c),
                false => render::print_certificate(&c),
            }
        }
    }
    Ok(exit::OK)
}

async fn unlock(s: &Session, tenant: &str) -> Result<i32, Error> {
    let tenant = TenantId::parse(tenant)?;
    let removed = report!(s, s.job(Task::Unlock, Some(&tenant)), Unlock);
    render::print_unlock(tenant.as_str(), &removed);
    Ok(exit::OK)
}

async fn exports_list(s: &Session, tenant: &Option<String>, json: bool) -> Result<i32, Error> {
    let tenant = tenant.as_deref().map(TenantId::parse).transpose()?;
    let (list, odd) = export::list_exports(&s.agent, tenant.as_ref()).await?;
    for w in &odd {
        eprintln!("warning: {w}");
    }
    match json {
        true => print_json(&list),
        false => render::print_exports(&list),
    }
    Ok(exit::OK)
}

async fn exports_prune(s: &Session, json: bool) -> Result<i32, Error> {
    let r = report!(s, s.job(Task::PruneExports, None), PruneExports);
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    match json {
        true => print_json(&r),
        false => render::print_exports_prune(&r),
    }
    Ok(exit::OK)
}

/// Map an error to its exit code and print it with its whole chain.
pub fn report_error(e: &Error) -> i32 {
    eprintln!("error: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        // `transparent` variants show their source's message as their own: skip repeats.
        if !e.to_string().contains(&cause.to_string()) {
            eprintln!("  caused by: {cause}");
        }
        source = cause.source();
    }
    exit::of(e.kind())
}
