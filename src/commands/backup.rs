//! `backup`: one new generation of a tenant.
//!
//! The pipeline, each stage bounded so memory does not grow with the tenant:
//!
//! ```text
//! reader thread   SQLite rows and files -> chunker -> blob id (HMAC) -> new blobs only
//!   | bounded channel (raw chunks, <= 4 MiB each)
//! sealer threads  zstd + AES-256-GCM, one per core
//!   | bounded channel (sealed blobs)
//! packer thread   ~16 MiB packs with a sealed header
//!   | bounded channel (packs)
//! uploader task   at most UPLOADS puts in flight; an index file every INDEX_EVERY packs
//! ```
//!
//! The manifest is written only after every pack and the index are in the store.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use rusqlite::types::ValueRef;

use super::{Agent, Error, Result};
use crate::chunker::Chunker;
use crate::generation::{rows, Entry, EntryPath, Manifest, Summary, MANIFEST_FORMAT};
use crate::keys::{BlobId, TenantKeys};
use crate::progress::Progress;
use crate::repository::lock::{hostname, TenantLock};
use crate::repository::pack::{PackBlob, PackBuilder, TARGET_SIZE};
use crate::repository::{Index, Repository};
use crate::source::files::{self, FileMeta, Item};
use crate::source::sqlite::Snapshot;
use crate::source::DATABASE_FILE;
use crate::store::Body;
use crate::tenant::TenantId;

/// Puts in flight at once. Two keep a local disk or a nearby S3 busy; more only add memory.
const UPLOADS: usize = 2;
/// Write an index file every this many packs, so an interrupted backup keeps its progress.
const INDEX_EVERY: usize = 64;
/// Attempts at reading a file that changes while it is read.
const READ_ATTEMPTS: usize = 3;

pub struct BackupReport {
    pub manifest: Manifest,
}

/// Back up one tenant into a new generation.
pub async fn backup(agent: &Agent, tenant: &TenantId, progress: &dyn Progress) -> Result<BackupReport> {
    let started = Instant::now();
    let tenant_dir = agent.tenant_dir(tenant)?;
    let repo = agent.repository(tenant, true).await?;
    let lock = TenantLock::acquire(agent.store.clone(), tenant, "backup").await?;
    let result = run(agent, &repo, &tenant_dir, progress, started).await;
    // Release even on failure; a failed release only leaves a lock that expires.
    if let Err(e) = lock.release().await {
        tracing::warn!(tenant = %tenant, error = %e, "could not release the tenant lock");
    }
    result
}

async fn run(
    agent: &Agent,
    repo: &Repository,
    tenant_dir: &Path,
    progress: &dyn Progress,
    started: Instant,
) -> Result<BackupReport> {
    let tenant = repo.tenant().clone();
    let index = Arc::new(repo.load_index().await?);
    let parent = repo.list_generations().await?.pop();
    let cache_path = agent.config.state.dir.join("cache").join(format!("{tenant}.files.sqlite"));
    let spool_dir = agent.config.state.dir.join("tmp");
    std::fs::create_dir_all(&spool_dir).map_err(|cause| Error::Io {
        what: "cannot create",
        path: spool_dir.clone(),
        cause,
    })?;
    progress.phase(&format!("backup {tenant}"), None);

    let (chunk_tx, chunk_rx) = sync_channel::<(BlobId, Vec<u8>)>(4);
    let (sealed_tx, sealed_rx) = sync_channel::<(BlobId, Vec<u8>)>(4);
    let (pack_tx, pack_rx) = tokio::sync::mpsc::channel::<([u8; 32], Vec<u8>, Vec<PackBlob>)>(1);

    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let chunk_rx = Arc::new(Mutex::new(chunk_rx));
    let mut sealers = Vec::new();
    for _ in 0..workers {
        let rx = chunk_rx.clone();
        let tx = sealed_tx.clone();
        let keys = repo.keys.clone();
        sealers.push(std::thread::spawn(move || seal_loop(&keys, rx, tx)));
    }
    drop(sealed_tx);
    let packer = {
        let keys = repo.keys.clone();
        std::thread::spawn(move || pack_loop(&keys, sealed_rx, pack_tx))
    };
    let uploader = upload_loop(repo, pack_rx);

    let reader = {
        let keys = repo.keys.clone();
        let index = index.clone();
        let tenant_dir = tenant_dir.to_path_buf();
        let progress_bytes = ProgressBytes::default();
        let pb = progress_bytes.clone();
        let h = tokio::task::spawn_blocking(move || {
            Reader::new(keys, index, chunk_tx, pb).read_tenant(&tenant_dir, &cache_path, &spool_dir)
        });
        (h, progress_bytes)
    };
    // Show bytes read while the pipeline runs.
    let (reader_handle, progress_bytes) = reader;
    let ticker = async {
        let mut last = 0;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let now = progress_bytes.get();
            progress.bytes(now - last);
            last = now;
        }
    };
    let (upload_result, reader_result) = tokio::select! {
        r = async { tokio::join!(uploader, reader_handle) } => r,
        _ = ticker => unreachable!("the ticker never ends"),
    };
    let sealer_results: Vec<_> = sealers.into_iter().map(|h| h.join().expect("sealer thread panicked")).collect();
    let packer_result = packer.join().expect("packer thread panicked");
    let reader_result = reader_result.expect("reader task panicked");

    // Report the first real cause: a failed upload makes every stage before it fail too.
    let uploaded = upload_result?;
    packer_result?;
    for r in sealer_results {
        r?;
    }
    let read = reader_result?;

    let mut summary = read.summary;
    summary.bytes_added = uploaded.bytes;
    summary.packs_added = uploaded.packs;
    summary.blobs_added = uploaded.blobs;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        id: crate::time_sortable_id(),
        tenant: tenant.to_string(),
        time: read.snapshot_time,
        parent,
        host: hostname(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        source: "sqlite".into(),
        catalog: read.catalog,
        summary,
        warnings: read.warnings,
    };
    repo.write_generation(&manifest).await?;
    // The cache now describes this generation; committing it earlier could point at blobs that
    // no generation references yet.
    if let Some(cache) = read.cache {
        cache.commit();
    }
    progress.done();
    Ok(BackupReport { manifest })
}

#[derive(Clone, Default)]
struct ProgressBytes(Arc<std::sync::atomic::AtomicU64>);

impl ProgressBytes {
    fn add(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn pipeline_stopped() -> Error {
    Error::Failed("the backup pipeline stopped".into())
}

fn seal_loop(
    keys: &TenantKeys,
    rx: Arc<Mutex<Receiver<(BlobId, Vec<u8>)>>>,
    tx: SyncSender<(BlobId, Vec<u8>)>,
) -> Result<()> {
    loop {
        let next = rx.lock().expect("chunk channel lock").recv();
        let Ok((id, plain)) = next else { return Ok(()) };
        let sealed = crate::repository::seal_blob(keys, &id, &plain);
        drop(plain);
        tx.send((id, sealed)).map_err(|_| pipeline_stopped())?;
    }
}

fn pack_loop(
    keys: &TenantKeys,
    rx: Receiver<(BlobId, Vec<u8>)>,
    tx: tokio::sync::mpsc::Sender<([u8; 32], Vec<u8>, Vec<PackBlob>)>,
) -> Result<()> {
    let mut pack = PackBuilder::new();
    let send = |pack: PackBuilder| {
        let id = pack.id;
        let (bytes, blobs) = pack.finish(keys);
        tx.blocking_send((id, bytes, blobs)).map_err(|_| pipeline_stopped())
    };
    for (id, sealed) in rx {
        pack.add(id, &sealed);
        if pack.len() >= TARGET_SIZE {
            send(std::mem::take(&mut pack))?;
        }
    }
    if !pack.is_empty() {
        send(pack)?;
    }
    Ok(())
}

struct Uploaded {
    bytes: u64,
    packs: u64,
    blobs: u64,
}

async fn upload_loop(
    repo: &Repository,
    mut rx: tokio::sync::mpsc::Receiver<([u8; 32], Vec<u8>, Vec<PackBlob>)>,
) -> Result<Uploaded> {
    let mut in_flight = tokio::task::JoinSet::new();
    let mut done: Vec<([u8; 32], Vec<PackBlob>)> = Vec::new();
    let mut stats = Uploaded { bytes: 0, packs: 0, blobs: 0 };
    let mut received_all = false;
    while !received_all || !in_flight.is_empty() {
        tokio::select! {
            msg = rx.recv(), if !received_all && in_flight.len() < UPLOADS => match msg {
                Some((id, bytes, blobs)) => {
                    let store = repo.store.clone();
                    let key = repo.pack_key(&id);
                    stats.bytes += bytes.len() as u64;
                    in_flight.spawn(async move {
                        store.put(&key, Body::Bytes(Bytes::from(bytes))).await.map(|_| (id, blobs))
                    });
                }
                None => received_all = true,
            },
            Some(res) = in_flight.join_next(), if !in_flight.is_empty() => {
                let (id, blobs) = res.expect("upload task panicked")?;
                stats.packs += 1;
                stats.blobs += blobs.len() as u64;
                done.push((id, blobs));
                if done.len() >= INDEX_EVERY {
                    stats.bytes += repo.write_index(&done).await?;
                    done.clear();
                }
            }
        }
    }
    if !done.is_empty() {
        stats.bytes += repo.write_index(&done).await?;
    }
    Ok(stats)
}

struct ReadResult {
    catalog: Vec<String>,
    summary: Summary,
    warnings: Vec<String>,
    snapshot_time: String,
    cache: Option<FileCache>,
}

/// The reader stage: everything that touches the source.
struct Reader {
    keys: Arc<TenantKeys>,
    index: Arc<Index>,
    tx: SyncSender<(BlobId, Vec<u8>)>,
    chunker: Chunker,
    /// Blobs sent in this backup and not yet in the index.
    sent: HashSet<BlobId>,
    summary: Summary,
    warnings: Vec<String>,
    progress: ProgressBytes,
}

impl Reader {
    fn new(
        keys: Arc<TenantKeys>,
        index: Arc<Index>,
        tx: SyncSender<(BlobId, Vec<u8>)>,
        progress: ProgressBytes,
    ) -> Reader {
        let chunker = Chunker::new(keys.chunker_seed());
        Reader {
            keys,
            index,
            tx,
            chunker,
            sent: HashSet::new(),
            summary: Summary::default(),
            warnings: Vec::new(),
            progress,
        }
    }

    fn warn(&mut self, w: String) {
        tracing::warn!("{w}");
        self.warnings.push(w);
    }

    /// Cut what the chunker holds into blobs, sending the ones the repository lacks.
    fn emit(&mut self, finish: bool, blobs: &mut Vec<String>) -> Result<()> {
        let Reader { keys, index, tx, chunker, sent, .. } = self;
        let mut take = |chunk: &[u8]| -> Result<()> {
            let id = keys.blob_id(chunk);
            blobs.push(hex::encode(id));
            if !index.contains(&id) && sent.insert(id) {
                tx.send((id, chunk.to_vec())).map_err(|_| pipeline_stopped())?;
            }
            Ok(())
        };
        if finish {
            chunker.finish(&mut take)
        } else {
            chunker.drain(&mut take)
        }
    }

    fn read_tenant(mut self, tenant_dir: &Path, cache_path: &Path, spool_dir: &Path) -> Result<ReadResult> {
        let spool = tempfile::NamedTempFile::new_in(spool_dir).map_err(|cause| Error::Io {
            what: "cannot create a temporary file in",
            path: spool_dir.into(),
            cause,
        })?;
        let mut catalog = BufWriter::new(spool.reopen().map_err(|cause| Error::Io {
            what: "cannot open",
            path: spool.path().into(),
            cause,
        })?);
        let line = |catalog: &mut BufWriter<File>, e: &Entry| -> Result<()> {
            serde_json::to_writer(&mut *catalog, e).expect("catalog entries serialize");
            catalog.write_all(b"\n").map_err(|cause| Error::Io {
                what: "cannot write",
                path: spool.path().into(),
                cause,
            })
        };

        // Tables, under one read transaction.
        let db = Snapshot::open(&tenant_dir.join(DATABASE_FILE))?;
        let snapshot_time = crate::now_rfc3339();
        let (objects, user_version, application_id) = db.schema()?;
        let (tables, table_warnings) = db.tables(&objects)?;
        for w in table_warnings {
            self.warn(w);
        }
        line(&mut catalog, &Entry::Schema { objects, user_version, application_id })?;
        for spec in tables {
            let mut blobs = Vec::new();
            let (mut n, mut bytes) = (0u64, 0u64);
            db.for_each_row(&spec, |values: &[ValueRef<'_>]| -> Result<()> {
                let buf = self.chunker.buffer();
                let before = buf.len();
                for v in values {
                    rows::encode(*v, buf);
                }
                let added = (buf.len() - before) as u64;
                bytes += added;
                self.progress.add(added);
                n += 1;
                self.emit(false, &mut blobs)
            })?;
            self.emit(true, &mut blobs)?;
            self.summary.tables += 1;
            self.summary.rows += n;
            self.summary.table_bytes += bytes;
            self.summary.bytes_read += bytes;
            line(
                &mut catalog,
                &Entry::Table {
                    name: spec.name,
                    columns: spec.columns,
                    rowid: spec.rowid.is_some(),
                    rows: n,
                    bytes,
                    blobs,
                },
            )?;
        }
        drop(db);

        // Files.
        let mut cache = FileCache::open(cache_path)
            .map_err(|e| {
                self.warn(format!("file cache {} is unusable ({e}); every file is read", cache_path.display()));
            })
            .ok();
        let mut walk_warnings = Vec::new();
        files::walk(
            tenant_dir,
            |item| -> Result<()> {
                let entry = match item {
                    Item::Dir { rel, meta } => {
                        Entry::Dir { path: EntryPath::from_bytes(&rel), mode: meta.mode, mtime_ns: meta.mtime_ns }
                    }
                    Item::Symlink { rel, target } => {
                        Entry::Symlink { path: EntryPath::from_bytes(&rel), target: EntryPath::from_bytes(&target) }
                    }
                    Item::File { rel, abs, meta } => match self.read_file(&rel, &abs, meta, cache.as_mut())? {
                        Some(e) => e,
                        None => return Ok(()),
                    },
                };
                line(&mut catalog, &entry)
            },
            |w| walk_warnings.push(w),
        )?;
        for w in walk_warnings {
            self.warn(w);
        }

        // The catalog itself, chunked like any stream.
        let file = catalog.into_inner().map_err(|e| Error::Io {
            what: "cannot write",
            path: spool.path().into(),
            cause: e.into_error(),
        })?;
        drop(file);
        let mut catalog_blobs = Vec::new();
        let mut rd = File::open(spool.path()).map_err(|cause| Error::Io {
            what: "cannot read",
            path: spool.path().into(),
            cause,
        })?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = rd.read(&mut buf).map_err(|cause| Error::Io {
                what: "cannot read",
                path: spool.path().into(),
                cause,
            })?;
            if n == 0 {
                break;
            }
            self.chunker.buffer().extend_from_slice(&buf[..n]);
            self.emit(false, &mut catalog_blobs)?;
        }
        self.emit(true, &mut catalog_blobs)?;
        Ok(ReadResult { catalog: catalog_blobs, summary: self.summary, warnings: self.warnings, snapshot_time, cache })
    }

    /// Back up one file. Unchanged files (same path, size, mtime, ctime and inode as in the cache,
    /// with all their blobs still indexed) are not read at all. A file that changes while it is
    /// read is read again; if it never holds still, the last read is kept and named in a warning.
    fn read_file(
        &mut self,
        rel: &[u8],
        abs: &Path,
        meta: FileMeta,
        cache: Option<&mut FileCache>,
    ) -> Result<Option<Entry>> {
        let path = EntryPath::from_bytes(rel);
        let mut cache = cache;
        if let Some(c) = cache.as_deref_mut() {
            if let Some(blobs) = c.lookup(rel, &meta) {
                let ids: Option<Vec<BlobId>> = blobs.iter().map(|b| crate::repository::parse_blob_id(b)).collect();
                if ids.is_some_and(|ids| ids.iter().all(|id| self.index.contains(id))) {
                    c.record(rel, &meta, &blobs);
                    self.summary.files += 1;
                    self.summary.file_bytes += meta.size;
                    return Ok(Some(Entry::File {
                        path,
                        size: meta.size,
                        mode: meta.mode,
                        mtime_ns: meta.mtime_ns,
                        blobs,
                        changed_during_read: false,
                    }));
                }
            }
        }
        let mut buf = vec![0u8; 1 << 20];
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut f = match File::open(abs) {
                Ok(f) => f,
                Err(e) => {
                    self.warn(format!(
                        "cannot read {}: {e}; it is not in this generation (fix its permissions)",
                        abs.display()
                    ));
                    return Ok(None);
                }
            };
            let before = match f.metadata() {
                Ok(m) => FileMeta::of(&m),
                Err(e) => {
                    self.warn(format!("cannot read {}: {e}; it is not in this generation", abs.display()));
                    return Ok(None);
                }
            };
            let mut blobs = Vec::new();
            let mut size = 0u64;
            loop {
                let n = match f.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        self.chunker.finish(|_| Ok::<_, ()>(())).ok();
                        self.warn(format!("cannot read {}: {e}; it is not in this generation", abs.display()));
                        return Ok(None);
                    }
                };
                if n == 0 {
                    break;
                }
                size += n as u64;
                self.progress.add(n as u64);
                self.chunker.buffer().extend_from_slice(&buf[..n]);
                self.emit(false, &mut blobs)?;
            }
            self.emit(true, &mut blobs)?;
            self.summary.bytes_read += size;
            let after = f.metadata().map(|m| FileMeta::of(&m)).ok();
            let still = std::fs::symlink_metadata(abs).map(|m| FileMeta::of(&m)).ok();
            let consistent = after == Some(before) && still == Some(before) && size == before.size;
            if consistent || attempt == READ_ATTEMPTS {
                if !consistent {
                    self.warn(format!(
                        "{} changed while it was read ({attempt} attempts); the generation holds the last read, \
                         which may be inconsistent",
                        abs.display()
                    ));
                } else if let Some(c) = cache.as_deref_mut() {
                    c.record(rel, &before, &blobs);
                }
                self.summary.files += 1;
                self.summary.file_bytes += size;
                return Ok(Some(Entry::File {
                    path,
                    size,
                    mode: before.mode,
                    mtime_ns: before.mtime_ns,
                    blobs,
                    changed_during_read: !consistent,
                }));
            }
        }
    }
}

/// The local file cache: path -> (size, mtime, ctime, inode) -> blobs of the last generation.
/// It is rebuilt on every backup into a new table and swapped in only once the generation's
/// manifest is written, so it never names blobs that no generation holds.
struct FileCache {
    conn: rusqlite::Connection,
}

impl FileCache {
    fn open(path: &Path) -> std::result::Result<FileCache, rusqlite::Error> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = rusqlite::Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS files (path BLOB PRIMARY KEY, size INTEGER, mtime TEXT, ctime TEXT, inode INTEGER, blobs TEXT);
             DROP TABLE IF EXISTS files_next;
             CREATE TABLE files_next (path BLOB PRIMARY KEY, size INTEGER, mtime TEXT, ctime TEXT, inode INTEGER, blobs TEXT);
             BEGIN;",
        )?;
        Ok(FileCache { conn })
    }

    fn lookup(&self, rel: &[u8], m: &FileMeta) -> Option<Vec<String>> {
        let row: Option<(i64, String, String, i64, String)> = self
            .conn
            .query_row("SELECT size, mtime, ctime, inode, blobs FROM files WHERE path = ?1", [rel], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .ok();
        let (size, mtime, ctime, inode, blobs) = row?;
        (size as u64 == m.size
            && mtime == m.mtime_ns.to_string()
            && ctime == m.ctime_ns.to_string()
            && inode as u64 == m.inode)
            .then(|| serde_json::from_str(&blobs).ok())
            .flatten()
    }

    fn record(&mut self, rel: &[u8], m: &FileMeta, blobs: &[String]) {
        let blobs = serde_json::to_string(blobs).expect("blob list serializes");
        let res = self.conn.execute(
            "INSERT OR REPLACE INTO files_next VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                rel,
                m.size as i64,
                m.mtime_ns.to_string(),
                m.ctime_ns.to_string(),
                m.inode as i64,
                blobs
            ],
        );
        if let Err(e) = res {
            tracing::warn!(error = %e, "could not update the file cache");
        }
    }

    fn commit(self) {
        let res = self.conn.execute_batch("DROP TABLE files; ALTER TABLE files_next RENAME TO files; COMMIT;");
        if let Err(e) = res {
            tracing::warn!(error = %e, "could not save the file cache; the next backup reads every file");
        }
    }
}
