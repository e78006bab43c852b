//! `restore`: write a generation back out as `database.sqlite`, `attachments/**` and
//! `documents/**`. Everything is written into a staging folder inside the target and moved into
//! place only when the whole generation was restored and verified, so a failed restore leaves
//! nothing half-written under the final names.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use rusqlite::types::{ToSqlOutput, ValueRef};

use super::{Agent, Error, Result};
use crate::generation::delta::Merger;
use crate::generation::{rows, Entry, EntryPath, SchemaObject};
use crate::progress::Progress;
use crate::repository::Repository;
use crate::repository::{entry_blobs, RepoError};
use crate::source::sqlite::quote;
use crate::source::{DATABASE_FILE, FILE_FOLDERS};
use crate::tenant::TenantId;
use tokio_util::sync::CancellationToken;

/// Events queued for the writer (each at most a chunk, 4 MiB): the fetching runs ahead in
/// `Repository::blob_stream`, this only keeps the writer from waiting on the feed.
const QUEUED: usize = 4;

/// What to restore and how (`reversa restore`; the daemon takes the same as a request).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreOptions {
    /// The generation; the newest when absent.
    #[serde(default)]
    pub generation: Option<String>,
    /// The target folder.
    pub to: PathBuf,
    /// Restore into a folder that is not empty, replacing its database and file folders.
    #[serde(default)]
    pub force: bool,
    /// Restore everything intact and list, in [`REPORT_FILE`], what could not be restored,
    /// instead of failing at the first damaged entry.
    #[serde(default)]
    pub partial: bool,
}

/// The report a partial restore leaves in the target when something could not be restored.
pub const REPORT_FILE: &str = "RESTORE-REPORT.txt";

#[derive(Debug, serde::Serialize)]
pub struct RestoreReport {
    pub generation: String,
    pub tables: u64,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    /// What a partial restore could not restore (empty otherwise).
    pub lost: Vec<Lost>,
}

/// An entry a partial restore left out, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Lost {
    /// "table NAME", "file PATH".
    pub what: String,
    pub cause: String,
}

enum Event {
    /// An entry, with the merger of its deltas for a table stored as a base and deltas.
    Start(Box<Entry>, Option<Box<Merger>>),
    Data(Vec<u8>),
    End,
    /// The current entry cannot be restored (a partial restore): drop what was written of it.
    Abort(String),
}

/// Restore a generation of `repo`'s tenant. When `cancel` fires, the writer threads stop at
/// their next entry and the staging folder is removed: nothing half-restored is moved in.
pub(crate) async fn restore(
    agent: &Agent,
    repo: &Repository,
    opts: &RestoreOptions,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let to = opts.to.as_path();
    let tenant = repo.tenant();
    let manifest = repo.resolve_generation(opts.generation.as_deref()).await?;
    // A salvage works with every index file that opens; the blobs only a damaged one lists are
    // reported with the entries that use them.
    let index = match opts.partial {
        true => repo.load_index_tolerant().await?.0,
        false => repo.load_index().await?,
    };
    prepare_target(to, opts.force)?;
    let tmp = agent.scratch(repo.tenant());
    let catalog = repo.fetch_catalog(&index, &manifest, &tmp).await?;
    progress.phase(&format!("restore {tenant}"), Some(manifest.summary.table_bytes + manifest.summary.file_bytes));

    let staging = to.join(format!(".reversa-restore-{}", crate::time_sortable_id()));
    fs::create_dir_all(&staging).map_err(|cause| Error::Io { what: "cannot create", path: staging.clone(), cause })?;

    // The database and the files are restored at the same time, each from its own pass over the
    // catalog: rebuilding tables is CPU work in SQLite, writing files is I/O, and they overlap.
    let into = staging.as_path();
    let part = |database: bool| {
        let wanted = move |e: &Entry| matches!(e, Entry::Schema { .. } | Entry::Table { .. }) == database;
        let pass = Pass {
            repo,
            cancel,
            index: &index,
            catalog: &catalog,
            generation: &manifest.id,
            tmp: &tmp,
            partial: opts.partial,
        };
        async move { pass.restore_into(into, progress, wanted).await }
    };
    let (db, files) = tokio::join!(part(true), part(false));
    let written = db.and_then(|a| {
        files.map(|b| Stats {
            tables: a.tables,
            rows: a.rows,
            files: b.files,
            bytes: a.bytes + b.bytes,
            lost: [a.lost, b.lost].concat(),
        })
    });
    let result = written.and_then(|stats| {
        move_into_place(&staging, to)?;
        Ok(stats)
    });
    let _ = fs::remove_dir_all(&staging);
    let stats = result?;
    if !stats.lost.is_empty() {
        write_report(to, tenant, &manifest.id, &stats.lost)?;
    }
    progress.done();
    Ok(RestoreReport {
        generation: manifest.id,
        tables: stats.tables,
        rows: stats.rows,
        files: stats.files,
        bytes: stats.bytes,
        duration_ms: started.elapsed().as_millis() as u64,
        lost: stats.lost,
    })
}

/// Rebuild only the database of `generation` as `into/database.sqlite`, every blob verified:
/// what an extraordinary extraction reads. The caller owns `into` and removes it.
pub(crate) async fn materialize_database(
    agent: &Agent,
    repo: &Repository,
    generation: &str,
    into: &Path,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<crate::generation::Manifest> {
    let manifest = repo.resolve_generation(Some(generation)).await?;
    let index = repo.load_index().await?;
    let tmp = agent.scratch(repo.tenant());
    let catalog = repo.fetch_catalog(&index, &manifest, &tmp).await?;
    fs::create_dir_all(into).map_err(|cause| Error::Io { what: "cannot create", path: into.to_path_buf(), cause })?;
    let pass =
        Pass { repo, cancel, index: &index, catalog: &catalog, generation: &manifest.id, tmp: &tmp, partial: false };
    pass.restore_into(into, progress, |e| matches!(e, Entry::Schema { .. } | Entry::Table { .. })).await?;
    Ok(manifest)
}

/// `RESTORE-REPORT.txt` in the target: what a partial restore could not restore and why. It
/// names tables and files, like the restored data beside it.
fn write_report(to: &Path, tenant: &TenantId, generation: &str, lost: &[Lost]) -> Result<()> {
    let mut text = format!(
        "reversa: partial restore of tenant {tenant}, generation {generation}, at {}\n\n\
         Everything else in this folder was restored and verified. These {} entries could not be restored:\n\n",
        crate::now_rfc3339(),
        lost.len()
    );
    for l in lost {
        text.push_str(&format!("{}: {}\n", l.what, l.cause));
    }
    text.push_str("\nA table listed here exists in database.sqlite, empty; a file listed here is absent.\n");
    let path = to.join(REPORT_FILE);
    fs::write(&path, text).map_err(|cause| Error::Io { what: "cannot write", path, cause })
}

/// How feeding one entry on its own ended.
enum Fed {
    Whole,
    /// A blob is missing or damaged: the entry cannot be restored.
    Damaged(String),
    /// The writer stopped (its error is reported by the caller).
    WriterStopped,
}

/// One pass over a generation's catalog, restoring the entries it wants.
struct Pass<'a> {
    repo: &'a crate::repository::Repository,
    cancel: &'a CancellationToken,
    index: &'a crate::repository::Index,
    catalog: &'a crate::repository::Catalog,
    generation: &'a str,
    tmp: &'a Path,
    partial: bool,
}

impl Pass<'_> {
    /// Restore the catalog entries `wanted` selects into `staging`: applied in catalog order by
    /// one writer thread, their blobs fetched ahead. A whole restore fetches across entry
    /// boundaries (so many small files do not serialize on latency); a partial one fetches each
    /// entry on its own, so a damaged blob costs its entry and nothing after it.
    async fn restore_into(
        &self,
        staging: &Path,
        progress: &dyn Progress,
        wanted: impl Fn(&Entry) -> bool + Send + Sync,
    ) -> Result<Stats> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(QUEUED);
        let writer = {
            let mut w = Writer::new(staging.to_path_buf(), self.partial);
            let cancel = self.cancel.clone();
            tokio::task::spawn_blocking(move || {
                while let Some(ev) = rx.blocking_recv() {
                    if cancel.is_cancelled() {
                        return Err(Error::Cancelled);
                    }
                    w.apply(ev)?;
                }
                w.finish()
            })
        };
        let fed = self.feed(&tx, progress, &wanted).await;
        drop(tx);
        let written = writer.await.expect("restore writer panicked");
        // A writer error is the cause when both failed (the feed only sees a closed channel).
        let stats = written?;
        fed?;
        Ok(stats)
    }

    /// Fetch one entry's blobs with a stream of their own and send them to the writer (a
    /// partial restore). Damage ends the entry; any other failure is the restore's.
    async fn feed_alone(
        &self,
        ids: Vec<crate::keys::BlobId>,
        tx: &tokio::sync::mpsc::Sender<Event>,
        progress: &dyn Progress,
    ) -> Result<Fed> {
        let mut blobs = std::pin::pin!(self.repo.blob_stream(self.index, ids.into_iter()));
        while let Some(data) = futures::StreamExt::next(&mut blobs).await {
            let data = match data {
                Ok(data) => data,
                Err(e) if e.is_damage() => return Ok(Fed::Damaged(e.to_string())),
                Err(e) => return Err(e.into()),
            };
            progress.bytes(data.len() as u64);
            if tx.send(Event::Data(data)).await.is_err() {
                return Ok(Fed::WriterStopped);
            }
        }
        Ok(Fed::Whole)
    }

    async fn feed(
        &self,
        tx: &tokio::sync::mpsc::Sender<Event>,
        progress: &dyn Progress,
        wanted: &(impl Fn(&Entry) -> bool + Send + Sync),
    ) -> Result<()> {
        let mut whole = match self.partial {
            false => Some(self.repo.catalog_blobs(self.index, self.catalog, self.generation, wanted)?),
            true => None,
        };
        // A closed channel means the writer stopped; its error is reported by the caller.
        macro_rules! send {
            ($ev:expr) => {
                if tx.send($ev).await.is_err() {
                    return Ok(());
                }
            };
        }
        for entry in self.catalog.entries()? {
            let entry = entry?;
            if !wanted(&entry) {
                continue;
            }
            let ids = entry_blobs(&entry, self.generation)?;
            let merger = match self.repo.table_merger(self.index, &entry, self.generation, self.tmp).await {
                Ok(m) => m,
                Err(e) if self.partial && e.is_damage() => {
                    send!(Event::Start(Box::new(entry), None));
                    send!(Event::Abort(e.to_string()));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            send!(Event::Start(Box::new(entry), merger.map(Box::new)));
            match &mut whole {
                Some(blobs) => {
                    for _ in 0..ids.len() {
                        let data = blobs.next().await?;
                        progress.bytes(data.len() as u64);
                        send!(Event::Data(data));
                    }
                }
                None => match self.feed_alone(ids, tx, progress).await? {
                    Fed::Whole => {}
                    Fed::Damaged(cause) => {
                        send!(Event::Abort(cause));
                        continue;
                    }
                    Fed::WriterStopped => return Ok(()),
                },
            }
            send!(Event::End);
        }
        Ok(())
    }
}

fn prepare_target(to: &Path, force: bool) -> Result<()> {
    match fs::read_dir(to) {
        Ok(mut rd) => {
            if rd.next().is_some() && !force {
                return Err(Error::Usage(format!(
                    "{} is not empty; restore into an empty folder, or pass --force to replace its \
                     database.sqlite, attachments/ and documents/",
                    to.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(to).map_err(|cause| Error::Io { what: "cannot create", path: to.into(), cause })
        }
        Err(cause) => Err(Error::Io { what: "cannot open the restore target", path: to.into(), cause }),
    }
}

fn move_into_place(staging: &Path, to: &Path) -> Result<()> {
    // What --force replaces: the database with the journal and WAL files SQLite would otherwise
    // replay into the restored database, and both file folders (a folder the generation does not
    // have is removed too, so the target holds exactly the generation).
    let sqlite_side = ["-wal", "-shm", "-journal"].map(|s| format!("{DATABASE_FILE}{s}"));
    let replaced = [DATABASE_FILE, FILE_FOLDERS[0], FILE_FOLDERS[1], REPORT_FILE]
        .into_iter()
        .chain(sqlite_side.iter().map(String::as_str));
    for name in replaced {
        let dest = to.join(name);
        if let Ok(m) = fs::symlink_metadata(&dest) {
            let r = if m.is_dir() { fs::remove_dir_all(&dest) } else { fs::remove_file(&dest) };
            r.map_err(|cause| Error::Io { what: "cannot replace", path: dest.clone(), cause })?;
        }
    }
    for name in [DATABASE_FILE, FILE_FOLDERS[0], FILE_FOLDERS[1]] {
        let from = staging.join(name);
        if from.exists() {
            let dest = to.join(name);
            fs::rename(&from, &dest).map_err(|cause| Error::Io {
                what: "cannot move into place",
                path: dest,
                cause,
            })?;
        }
    }
    Ok(())
}

/// A catalog path, checked to stay inside the tenant's file folders, joined under `base`.
fn safe_join(base: &Path, p: &EntryPath) -> Result<PathBuf> {
    let raw = p.to_bytes();
    let rel = Path::new(std::ffi::OsStr::from_bytes(&raw));
    let ok = rel.components().all(|c| matches!(c, Component::Normal(_)))
        && rel.components().next().is_some_and(|c| FILE_FOLDERS.iter().any(|f| c.as_os_str() == *f));
    if !ok {
        return Err(Error::Repo(RepoError::Damaged {
            what: "generation catalog",
            key: p.display(),
            cause: "a path leaves the tenant's file folders".into(),
        }));
    }
    Ok(base.join(rel))
}

#[derive(Default)]
struct Stats {
    tables: u64,
    rows: u64,
    files: u64,
    bytes: u64,
    lost: Vec<Lost>,
}

enum Current {
    None,
    Table {
        name: String,
        insert: String,
        ncols: usize,
        expected: u64,
        rows: u64,
        carry: Vec<u8>,
        /// Applies the table's deltas to its base as the base streams in.
        merger: Option<Box<Merger>>,
    },
    File {
        path: PathBuf,
        file: File,
        size: u64,
        written: u64,
        mode: u32,
        mtime_ns: i64,
    },
}

struct Writer {
    staging: PathBuf,
    db: Option<rusqlite::Connection>,
    /// Indexes, triggers and views, created after the rows are in.
    later: Vec<SchemaObject>,
    /// Virtual tables and their SQL, for the index rebuilds at the end.
    virtual_tables: Vec<(String, String)>,
    header: (i64, i64),
    current: Current,
    dirs: Vec<(PathBuf, u32, i64)>,
    links: Vec<(PathBuf, Vec<u8>)>,
    stats: Stats,
    /// A partial restore: an entry whose data is inconsistent is left out and listed, instead
    /// of failing the restore.
    partial: bool,
    /// What the current entry is ("table T", "file P"), and whether it is being skipped.
    label: String,
    skipping: bool,
}

/// Data of the generation that does not add up (a size, a row count, a record that does not
/// decode): damage, which a partial restore survives by leaving the entry out. A failure to
/// write (a full disk, SQLite refusing) is not, and stops any restore.
fn inconsistent(cause: String) -> Error {
    Error::Repo(RepoError::Damaged { what: "restored data of", key: "the generation".into(), cause })
}

fn db_err(e: rusqlite::Error) -> Error {
    Error::Failed(format!("cannot write the restored database: {e}"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |cause| Error::Io { what: "cannot write", path: path.into(), cause }
}

impl Writer {
    fn new(staging: PathBuf, partial: bool) -> Writer {
        Writer {
            staging,
            db: None,
            later: Vec::new(),
            virtual_tables: Vec::new(),
            header: (0, 0),
            current: Current::None,
            dirs: Vec::new(),
            links: Vec::new(),
            stats: Stats::default(),
            partial,
            label: String::new(),
            skipping: false,
        }
    }

    fn apply(&mut self, ev: Event) -> Result<()> {
        if let Event::Start(e, _) = &ev {
            self.label = e.label();
            self.skipping = false;
        }
        let applied = match ev {
            _ if self.skipping => Ok(()),
            Event::Start(e, merger) => self.start(*e, merger),
            Event::Data(d) => self.data(d),
            Event::End => self.end(),
            Event::Abort(cause) => self.abort(cause),
        };
        match applied {
            // Damaged data costs its entry in a partial restore; a write that fails stops it all.
            Err(Error::Repo(e)) if self.partial && e.is_damage() => self.abort(e.to_string()),
            other => other,
        }
    }

    /// Drop what was written of the current entry and list it as lost. A table keeps its
    /// (empty) schema: it was empty before its rows came, in a database made for this restore.
    fn abort(&mut self, cause: String) -> Result<()> {
        match std::mem::replace(&mut self.current, Current::None) {
            Current::File { path, file, .. } => {
                drop(file);
                fs::remove_file(&path).map_err(|cause| Error::Io {
                    what: "cannot remove",
                    path: path.clone(),
                    cause,
                })?;
            }
            Current::Table { name, .. } => {
                if let Some(db) = &self.db {
                    db.execute_batch(&format!("DELETE FROM {}", quote(&name))).map_err(db_err)?;
                }
            }
            Current::None => {}
        }
        self.stats.lost.push(Lost { what: self.label.clone(), cause });
        self.skipping = true;
        Ok(())
    }

    fn start(&mut self, e: Entry, merger: Option<Box<Merger>>) -> Result<()> {
        match e {
            Entry::Schema { objects, user_version, application_id } => {
                let path = self.staging.join(DATABASE_FILE);
                let conn = rusqlite::Connection::open(&path).map_err(db_err)?;
                // A fresh file that is renamed into place only when complete needs no journal.
                conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; BEGIN;").map_err(db_err)?;
                for o in objects {
                    match (o.kind.as_str(), &o.sql) {
                        ("table", Some(sql)) => {
                            conn.execute_batch(sql).map_err(db_err)?;
                            if sql.trim_start().to_ascii_uppercase().starts_with("CREATE VIRTUAL") {
                                self.virtual_tables.push((o.name.clone(), sql.clone()));
                            }
                        }
                        (_, Some(_)) => self.later.push(o),
                        // Automatic indexes (for UNIQUE and PRIMARY KEY) have no SQL: SQLite makes them.
                        (_, None) => {}
                    }
                }
                self.header = (user_version, application_id);
                self.db = Some(conn);
            }
            Entry::Table { name, columns, rowid, rows, .. } => {
                if name == "sqlite_sequence" {
                    // Inserting rows has advanced the counters; the backed-up values are the truth.
                    if let Some(db) = &self.db {
                        db.execute_batch("DELETE FROM sqlite_sequence").map_err(db_err)?;
                    }
                }
                let mut cols: Vec<String> = Vec::new();
                if rowid {
                    cols.push("rowid".into());
                }
                cols.extend(columns.iter().map(|c| quote(c)));
                let marks = vec!["?"; cols.len()].join(", ");
                let insert = format!("INSERT INTO {} ({}) VALUES ({marks})", quote(&name), cols.join(", "));
                self.current = Current::Table {
                    name,
                    insert,
                    ncols: cols.len(),
                    expected: rows,
                    rows: 0,
                    carry: Vec::new(),
                    merger,
                };
            }
            Entry::Dir { path, mode, mtime_ns } => {
                let p = safe_join(&self.staging, &path)?;
                fs::create_dir_all(&p).map_err(io_err(&p))?;
                self.dirs.push((p, mode, mtime_ns));
            }
            Entry::File { path, size, mode, mtime_ns, .. } => {
                let p = safe_join(&self.staging, &path)?;
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                let file = fs::OpenOptions::new().write(true).create_new(true).open(&p).map_err(io_err(&p))?;
                self.current = Current::File { path: p, file, size, written: 0, mode, mtime_ns };
            }
            Entry::Symlink { path, target } => {
                let p = safe_join(&self.staging, &path)?;
                self.links.push((p, target.to_bytes()));
            }
        }
        Ok(())
    }

    fn data(&mut self, d: Vec<u8>) -> Result<()> {
        match &mut self.current {
            Current::File { path, file, written, .. } => {
                file.write_all(&d).map_err(io_err(path))?;
                *written += d.len() as u64;
                self.stats.bytes += d.len() as u64;
            }
            Current::Table { name, insert, ncols, rows, carry, merger, .. } => {
                self.stats.bytes += d.len() as u64;
                match merger {
                    Some(m) => m.push(&d, carry).map_err(|e| inconsistent(format!("table {name}: {e}")))?,
                    None => carry.extend_from_slice(&d),
                }
                let db =
                    self.db.as_ref().ok_or_else(|| Error::Failed(format!("table {name} comes before the schema")))?;
                let mut st = db.prepare_cached(insert).map_err(db_err)?;
                let mut pos = 0;
                'rows: loop {
                    let mut at = pos;
                    let mut vals: Vec<ValueRef<'_>> = Vec::with_capacity(*ncols);
                    for _ in 0..*ncols {
                        match rows::decode(&carry[at..]) {
                            Ok(Some((v, n))) => {
                                vals.push(v);
                                at += n;
                            }
                            Ok(None) => break 'rows,
                            Err(e) => return Err(inconsistent(format!("table {name}: {e}"))),
                        }
                    }
                    let params: Vec<ToSqlOutput<'_>> = vals.into_iter().map(ToSqlOutput::Borrowed).collect();
                    st.execute(rusqlite::params_from_iter(params.iter())).map_err(db_err)?;
                    *rows += 1;
                    pos = at;
                }
                carry.drain(..pos);
            }
            Current::None => return Err(inconsistent("data outside an entry".into())),
        }
        Ok(())
    }

    fn end(&mut self) -> Result<()> {
        // The changes after the base's last row first; the entry stays current until it is
        // checked, so that a partial restore can still remove it whole.
        if let Current::Table { name, merger, .. } = &mut self.current {
            if let Some(m) = merger.take() {
                let name = name.clone();
                let mut tail = Vec::new();
                m.finish(&mut tail).map_err(|e| inconsistent(format!("table {name}: {e}")))?;
                self.data(tail)?;
            }
        }
        match &self.current {
            Current::File { path, size, written, .. } if written != size => {
                return Err(inconsistent(format!(
                    "{}: restored {written} bytes, the generation says {size}",
                    path.display()
                )))
            }
            Current::Table { name, expected, rows, carry, .. } if !carry.is_empty() || rows != expected => {
                return Err(inconsistent(format!("table {name}: restored {rows} rows, the generation says {expected}")))
            }
            _ => {}
        }
        match std::mem::replace(&mut self.current, Current::None) {
            Current::File { path, file, mode, mtime_ns, .. } => {
                drop(file);
                set_mode_and_mtime(&path, mode, mtime_ns)?;
                self.stats.files += 1;
            }
            Current::Table { name, rows, .. } => {
                if crate::source::is_record_table(&name) {
                    self.stats.tables += 1;
                    self.stats.rows += rows;
                }
            }
            Current::None => {}
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Stats> {
        if let Some(db) = self.db.take() {
            for o in &self.later {
                db.execute_batch(o.sql.as_deref().unwrap_or_default()).map_err(db_err)?;
            }
            // Full-text indexes over other tables are rebuilt from them, now that they are full.
            for (name, sql) in &self.virtual_tables {
                if crate::source::sqlite::fts_kind(sql) == Some(crate::source::sqlite::Fts::ExternalContent) {
                    let q = quote(name);
                    db.execute_batch(&format!("INSERT INTO {q}({q}) VALUES('rebuild')")).map_err(db_err)?;
                }
            }
            db.execute_batch(&format!(
                "PRAGMA user_version = {}; PRAGMA application_id = {}; COMMIT;",
                self.header.0, self.header.1
            ))
            .map_err(db_err)?;
            db.close().map_err(|(_, e)| db_err(e))?;
            File::open(self.staging.join(DATABASE_FILE)).and_then(|f| f.sync_all()).map_err(io_err(&self.staging))?;
        }
        // Links last, so no file is ever written through a restored link.
        for (p, target) in &self.links {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), p).map_err(io_err(p))?;
        }
        // Folder times last: writing into a folder changes its mtime.
        for (p, mode, mtime_ns) in self.dirs.iter().rev() {
            set_mode_and_mtime(p, *mode, *mtime_ns)?;
        }
        // No fsync: like cp, tar and restic, restore leaves write-back to the kernel. The data stays
        // in the store, so a restore cut short by a crash is simply run again.
        Ok(self.stats)
    }
}

fn set_mode_and_mtime(path: &Path, mode: u32, mtime_ns: i64) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))?;
    let secs = mtime_ns.div_euclid(1_000_000_000);
    let nanos = mtime_ns.rem_euclid(1_000_000_000) as u32;
    filetime::set_file_mtime(path, filetime::FileTime::from_unix_time(secs, nanos)).map_err(io_err(path))
}
