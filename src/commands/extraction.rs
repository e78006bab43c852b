//! Extraordinary extractions (`export --extraordinary`): during the safeguard, the only way a
//! tenant's data still leave, by an operator with a ticket, a reason and a recipient, from the
//! final generation, and only what was asked: raw tables (CSV plus a SQLite file with just
//! those tables) or the result of one read-only query (CSV and XLSX), in the same AES-256
//! archive as an export. The final generation's database is rebuilt in scratch space (0700,
//! removed on every way out); the query runs on it with SQLite's `query_only`, a time limit and
//! a row limit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::export::{self, ExportOptions, ExportReport, Extras, Input};
use super::lifecycle::Step;
use super::{Error, Result};
use crate::lifecycle::State;
use crate::progress::Progress;
use crate::repository::Repository;
use crate::source::sqlite::quote;
use crate::source::DATABASE_FILE;

/// What `export --extraordinary` is asked. Serialized (into the audit log's start entry), the
/// tables are only counted and the query is only its SHA-256: their text may describe the
/// tenant's data, and goes into the archive's manifest alone.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractionOptions {
    pub out: PathBuf,
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    #[serde(default, serialize_with = "counted")]
    pub tables: Vec<String>,
    #[serde(default, serialize_with = "hashed")]
    pub query: Option<String>,
    /// A query giving more rows than this fails, and nothing is written.
    #[serde(default = "ExtractionOptions::default_row_limit")]
    pub row_limit: u64,
    /// A query running longer than this (seconds) is interrupted, and nothing is written.
    #[serde(default = "ExtractionOptions::default_time_limit")]
    pub time_limit_secs: u64,
}

impl ExtractionOptions {
    pub fn default_row_limit() -> u64 {
        1_000_000
    }
    pub fn default_time_limit() -> u64 {
        300
    }
}

fn counted<S: Serializer>(tables: &[String], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(tables.len() as u64)
}

fn hashed<S: Serializer>(query: &Option<String>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match query {
        Some(q) => s.serialize_str(&format!("sha256:{}", query_sha256(q))),
        None => s.serialize_none(),
    }
}

/// The SHA-256 of a query's text, hex: what the audit log and the register keep of it.
pub fn query_sha256(query: &str) -> String {
    hex::encode(Sha256::digest(query.as_bytes()))
}

/// What the extraction gives.
enum Asked {
    Tables(Vec<String>),
    Query(String),
}

fn asked(opts: &ExtractionOptions) -> Result<Asked> {
    match (&opts.tables[..], opts.query.as_deref()) {
        ([], Some(q)) if !q.trim().is_empty() => Ok(Asked::Query(q.to_string())),
        (t, None) if !t.is_empty() => Ok(Asked::Tables(t.to_vec())),
        _ => Err(Error::Usage(
            "an extraordinary extraction gives either chosen tables (--tables a,b) or one query (--query \"SELECT …\"); \
             nothing was written"
                .into(),
        )),
    }
}

/// The extraction: refused outside the safeguard and without a final generation; otherwise
/// the final generation's database rebuilt, what was asked derived from it, and an export of
/// that, with the extraction recorded in its manifest.
pub(crate) async fn extract(
    step: &Step<'_>,
    ticket: &str,
    recipient: &str,
    repo: &Repository,
    opts: &ExtractionOptions,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    let agent = step.agent;
    let tenant = repo.tenant();
    let record = agent.lifecycle_record(tenant).await?;
    let state = super::lifecycle::due_state(&record, &agent.config.lifecycle, step.now);
    if state != State::Safeguard {
        return Err(Error::NotAllowed(format!(
            "tenant {tenant} is {}: extraordinary extractions are made during the safeguard only (before it, the \
             customer's own `reversa export`; after the purge, nothing)",
            state.name()
        )));
    }
    let Some(generation) = record.final_generation.clone() else {
        return Err(Error::NotAllowed(format!(
            "tenant {tenant} has no final generation yet: the next `reversa lifecycle tick` takes it"
        )));
    };
    let what = asked(opts)?;
    let scratch =
        super::Scratch::create(&agent.scratch(tenant).join(format!("extract-{}", crate::time_sortable_id())))?;
    let db_dir = scratch.0.join("db");
    let manifest = super::restore::materialize_database(agent, repo, &generation, &db_dir, cancel, progress).await?;
    let derived = scratch.0.join("src");
    std::fs::create_dir_all(&derived).map_err(|cause| Error::Io {
        what: "cannot create",
        path: derived.clone(),
        cause,
    })?;
    let (from, to) = (db_dir.join(DATABASE_FILE), derived.join(DATABASE_FILE));
    let limits = (opts.row_limit, Duration::from_secs(opts.time_limit_secs));
    let (raw_tables, into) = (matches!(what, Asked::Tables(_)), to.clone());
    tokio::task::spawn_blocking(move || match what {
        Asked::Query(q) => run_query(&from, &into, &q, limits.0, limits.1),
        Asked::Tables(t) => copy_tables(&from, &into, &t),
    })
    .await
    .expect("extraction panicked")?;

    let mut eopts = ExportOptions::new(&opts.out);
    eopts.passphrase_file = opts.passphrase_file.clone();
    let mut extras = Extras::default();
    if raw_tables {
        eopts.formats = crate::export::Formats { xlsx: false, csv: true };
        extras.attachments.push((format!("dati/{tenant}.sqlite"), to.clone()));
    }
    extras.extraordinary = Some(crate::export::Extraordinary {
        ticket: ticket.to_string(),
        reason: step.reason.unwrap_or_default().to_string(),
        recipient: recipient.to_string(),
        generation: generation.clone(),
        tables: opts.tables.clone(),
        query: opts.query.clone(),
        query_sha256: opts.query.as_deref().map(query_sha256),
    });
    let input = Input::Derived { dir: derived, generation, time: manifest.time };
    let report = Box::pin(export::write(agent, tenant, input, &eopts, extras, cancel, progress)).await;
    drop(scratch);
    report
}

fn db_err(e: rusqlite::Error) -> Error {
    Error::Failed(format!("the extraction's scratch database failed: {e}"))
}

/// A new database at `to` holding only `tables` of `from`, with their definitions.
fn copy_tables(from: &Path, to: &Path, tables: &[String]) -> Result<()> {
    let src = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(db_err)?;
    let dst = Connection::open(to).map_err(db_err)?;
    // A chosen table may reference one that was not chosen: the copy keeps its definition as
    // it is, so the references are not enforced.
    dst.pragma_update(None, "foreign_keys", false).map_err(db_err)?;
    for t in tables {
        let sql: Option<String> = src
            .query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1", [t], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        let Some(sql) = sql else {
            return Err(Error::Usage(format!(
                "the final generation has no table {t:?}; give --tables with names as the tenant's database has them \
                 (`reversa export` lists them in its manifest); nothing was written"
            )));
        };
        dst.execute_batch(&sql).map_err(db_err)?;
    }
    dst.execute("ATTACH DATABASE ?1 AS src", [from.to_string_lossy()]).map_err(db_err)?;
    for t in tables {
        dst.execute(&format!("INSERT INTO main.{q} SELECT * FROM src.{q}", q = quote(t)), []).map_err(db_err)?;
    }
    dst.execute("DETACH DATABASE src", []).map_err(db_err)?;
    Ok(())
}

/// Run `query` on `from` (read-only, `query_only`, interrupted after `time_limit`) and write
/// its result, at most `row_limit` rows, as the table `risultato` of a new database at `to`.
fn run_query(from: &Path, to: &Path, query: &str, row_limit: u64, time_limit: Duration) -> Result<()> {
    let src = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(db_err)?;
    src.pragma_update(None, "query_only", true).map_err(db_err)?;
    let mut stmt = src.prepare(query).map_err(|e| {
        Error::Usage(format!("the query does not run on the final generation: {e}; nothing was written"))
    })?;
    if !stmt.readonly() {
        return Err(Error::Usage(
            "the query would change the database: an extraordinary extraction runs read-only queries only \
             (SELECT); nothing was written"
                .into(),
        ));
    }
    let columns = unique_columns(stmt.column_names().map(String::from).collect());
    if columns.is_empty() {
        return Err(Error::Usage("the query returns no columns; nothing was written".into()));
    }
    let dst = Connection::open(to).map_err(db_err)?;
    let defs: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    dst.execute_batch(&format!("CREATE TABLE risultato ({})", defs.join(", "))).map_err(db_err)?;
    let marks = vec!["?"; columns.len()].join(", ");
    let mut insert = dst.prepare(&format!("INSERT INTO risultato VALUES ({marks})")).map_err(db_err)?;
    let _watchdog = Watchdog::start(src.get_interrupt_handle(), time_limit);
    let mut rows = stmt.raw_query();
    let mut count = 0u64;
    loop {
        let row = match rows.next() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::OperationInterrupted => {
                return Err(Error::Usage(format!(
                    "the query ran longer than its time limit ({} s) and was stopped; narrow it, or give a larger \
                     --time-limit; nothing was written",
                    time_limit.as_secs()
                )))
            }
            Err(e) => return Err(Error::Usage(format!("the query failed: {e}; nothing was written"))),
        };
        count += 1;
        if count > row_limit {
            return Err(Error::Usage(format!(
                "the query gives more than {row_limit} rows; narrow it, or give a larger --row-limit; nothing was written"
            )));
        }
        let values: Vec<rusqlite::types::ToSqlOutput<'_>> = (0..columns.len())
            .map(|i| row.get_ref(i).map(rusqlite::types::ToSqlOutput::Borrowed))
            .collect::<std::result::Result<_, _>>()
            .map_err(db_err)?;
        insert.execute(rusqlite::params_from_iter(values)).map_err(db_err)?;
    }
    Ok(())
}

/// Column names made unique (`a`, `a_2`), since a query may give two columns one name.
fn unique_columns(names: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .into_iter()
        .map(|n| {
            let base = if n.is_empty() { "colonna".to_string() } else { n };
            let mut name = base.clone();
            let mut i = 2;
            while !seen.insert(name.clone()) {
                name = format!("{base}_{i}");
                i += 1;
            }
            name
        })
        .collect()
}

/// Interrupts the query once its time is up, unless it finished first (dropped).
struct Watchdog(Option<std::sync::mpsc::Sender<()>>);

impl Watchdog {
    fn start(handle: rusqlite::InterruptHandle, limit: Duration) -> Watchdog {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                handle.interrupt();
            }
        });
        Watchdog(Some(tx))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Disconnecting wakes the thread, which then ends without interrupting.
        self.0.take();
    }
}
