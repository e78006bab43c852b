//! `backup`: one new generation of a tenant.
//!
//! The pipeline, each stage bounded so memory does not grow with the tenant:
//!
//! ```text
//! 2 readers       SQLite rows | files -> chunker -> numbered chunks; catalog lines in order
//!                 (the rows reader is itself two threads: SQLite + encoding, then digests,
//!                 the merge with the parent's digest map and the chunker; batches of 256 KiB)
//!   | bounded channel (raw chunks, <= 4 MiB each)          ^ blob ids by chunk number
//! sealer threads  one per core: blob id (HMAC); new blobs only: zstd + AES-256-GCM straight
//!                 into a pack of their own
//!   | bounded channel (finished packs, ~8 MiB each)
//! uploader task   the store's concurrency in puts in flight; an index file every INDEX_EVERY packs
//! ```
//!
//! The database and the files are read at the same time, each by its own reader with its own
//! range of chunk numbers and its own part of the catalog (joined, database first, at the end).
//! Readers only cut chunks; hashing runs on every core. A catalog entry is written once the
//! sealers have named all its chunks, so the catalog stays in source order. The manifest is
//! written only after every pack and the index are in the store.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

mod tables;

use super::{Agent, Error, Result};
use crate::chunker::{self, Chunker};
use crate::generation::{Entry, EntryPath, Manifest, Summary, MANIFEST_FORMAT};
use crate::keys::{BlobId, TenantKeys};
use crate::pool::BufferPool;
use crate::progress::Progress;
use crate::repository::lock::hostname;
use crate::repository::pack::{self, PackBlob, PackBuilder};
use crate::repository::{Index, Repository};
use crate::source::files::{self, FileMeta, Item};
use crate::source::sqlite::Snapshot;
use crate::source::{Warning, DATABASE_FILE};
use crate::store::Body;
use crate::tenant::TenantId;
use tables::{parent_tables, DigestMaps, Incremental};

/// Write an index file every this many packs, so an interrupted backup keeps its progress.
const INDEX_EVERY: usize = 64;
/// Attempts at reading a file that changes while it is read.
const READ_ATTEMPTS: usize = 3;
/// How much of a file (or spooled stream) goes into the chunker's buffer before chunks are cut.
const READ_SIZE: usize = 1 << 20;
/// Chunks waiting for a sealer: a little slack so that sealers rarely wait on the readers. Each
/// queued chunk holds a pool buffer.
const CHUNK_QUEUE: usize = 2;

#[derive(Debug, serde::Serialize)]
pub struct BackupReport {
    pub manifest: Manifest,
    /// The SHA-256 of the sealed manifest in the store.
    pub manifest_sha256: String,
    /// What the backup left out or could not read as it was; the manifest keeps them as text.
    pub warnings: Vec<Warning>,
}

/// Back up one tenant into a new generation (under its lock, which the job holds). When
/// `cancel` fires, the readers stop at their next chunk or row batch and the backup fails
/// without writing a generation: what it uploaded is unreferenced packs.
pub(crate) async fn backup(
    agent: &Agent,
    repo: &Repository,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let started = Instant::now();
    let tenant = repo.tenant().clone();
    let tenant_dir = agent.tenant_dir(&tenant)?;
    // Independent reads, so one round trip to the store instead of two. Errors are taken in a
    // fixed order, so the same damage always gives the same report and exit code.
    let (index, generations) = tokio::join!(repo.load_index(), repo.list_generations());
    let index = Arc::new(index?);
    let parent = generations?.pop();
    let generation = crate::time_sortable_id();
    let cache_path = agent.config.state.dir.join("cache").join(format!("{tenant}.files.sqlite"));
    let spool_dir = agent.scratch(&tenant);
    std::fs::create_dir_all(&spool_dir).map_err(|cause| Error::Io {
        what: "cannot create",
        path: spool_dir.clone(),
        cause,
    })?;
    progress.phase(&format!("backup {tenant}"), None);
    let maps = DigestMaps::new(&agent.config.state.dir, &tenant)?;
    let (parents, parent_warnings) = match &parent {
        Some(p) => parent_tables(repo, &index, p, &maps, &spool_dir).await?,
        None => (HashMap::new(), Vec::new()),
    };
    let incremental = Incremental {
        keys: repo.keys.clone(),
        digester: repo.keys.row_digester(),
        generation: generation.clone(),
        parents,
        maps: maps.clone(),
        max_chain: agent.config.backup.max_delta_chain,
        max_ratio: agent.config.backup.max_delta_ratio,
    };

    let (chunk_tx, chunk_rx) = sync_channel::<(u64, Vec<u8>)>(CHUNK_QUEUE);
    let (pack_tx, pack_rx) = tokio::sync::mpsc::channel::<Pack>(1);

    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    // Room for every pack that can be alive at once (the uploads, the queued one, one per
    // sealer), so a burst of finished uploads does not free buffers that the next packs need:
    // a pool that kept one per sealer allocated 21 buffers for 118 packs of the bench tenant.
    // The buffers alive stay what the busiest moment needed anyway.
    let packs = BufferPool::new("packs", repo.store.concurrency() + 1 + workers, pack::BUFFER_LEN);
    // Every chunk that can be in flight: one being filled per reader, the queue's, one per
    // sealer. Each stays resident up to the largest chunk it held, at most MAX_SIZE.
    let chunks = BufferPool::new("chunks", 2 + CHUNK_QUEUE + workers, chunker::MAX_SIZE);
    let shared = Arc::new(Shared {
        index: index.clone(),
        in_flight: Mutex::new(HashSet::new()),
        ids: Mutex::new(IdState { ids: HashMap::new(), sealers_alive: workers }),
        named: Condvar::new(),
    });
    let chunk_rx = Arc::new(Mutex::new(chunk_rx));
    let mut sealers = Vec::new();
    for _ in 0..workers {
        let rx = chunk_rx.clone();
        let tx = pack_tx.clone();
        let keys = repo.keys.clone();
        let shared = shared.clone();
        let (packs, chunks) = (packs.clone(), chunks.clone());
        sealers.push(std::thread::spawn(move || {
            // Counted out even if seal_loop panics, so a reader waiting for ids never hangs.
            let _done = SealerDone(&shared);
            seal_loop(&keys, &shared, &packs, &chunks, rx, tx)
        }));
    }
    // Only the sealers may hold the chunk receiver: when they all stop (say, after a failed
    // upload), the reader's next send must fail instead of blocking forever.
    drop(chunk_rx);
    drop(pack_tx);
    let uploader = upload_loop(repo, pack_rx, &packs, progress);

    let progress_bytes = ProgressBytes::default();
    let reader_handle = {
        let seed = repo.keys.chunker_seed();
        // Two readers, each numbering its chunks in a range of its own.
        let (bytes, stop) = (progress_bytes.clone(), cancel.clone());
        let mut tables = Reader::new(seed, 0, shared.clone(), chunk_tx.clone(), chunks.clone(), bytes, stop);
        tables.incremental = Some(incremental);
        let files = Reader::new(seed, 1 << 62, shared, chunk_tx, chunks, progress_bytes.clone(), cancel.clone());
        let tenant_dir = tenant_dir.to_path_buf();
        let cache = (cache_path, repo.keys.clone());
        let busy = agent.config.source.busy_timeout();
        tokio::task::spawn_blocking(move || read_tenant(tables, files, &tenant_dir, cache, &spool_dir, busy))
    };
    // Show bytes read while the pipeline runs.
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
    let reader_result = reader_result.expect("reader task panicked");

    // Report the first real cause: a failed upload makes every stage before it fail too.
    let uploaded = upload_result?;
    for r in sealer_results {
        r?;
    }
    let mut read = reader_result?;

    let mut warnings: Vec<Warning> = parent_warnings.into_iter().map(Warning::other).collect();
    warnings.extend(std::mem::take(&mut read.warnings));
    let manifest = manifest_of(&tenant, generation, parent, &mut read, &uploaded, &warnings, started);
    // The last chance to stop: a cancelled backup writes no generation.
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let manifest_sha256 = repo.write_generation(&manifest).await?;
    // The caches now describe this generation; committing them earlier could point at blobs
    // that no generation references yet.
    if let Some(cache) = read.cache {
        cache.commit();
    }
    maps.commit();
    progress.done();
    Ok(BackupReport { manifest, manifest_sha256, warnings })
}

/// The manifest of the generation the pipeline read and uploaded.
fn manifest_of(
    tenant: &TenantId,
    id: String,
    parent: Option<String>,
    read: &mut ReadResult,
    uploaded: &Uploaded,
    warnings: &[Warning],
    started: Instant,
) -> Manifest {
    let mut summary = std::mem::take(&mut read.summary);
    summary.bytes_added = uploaded.bytes;
    summary.packs_added = uploaded.packs;
    summary.blobs_added = uploaded.blobs;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    Manifest {
        format: MANIFEST_FORMAT,
        id,
        tenant: tenant.to_string(),
        time: std::mem::take(&mut read.snapshot_time),
        parent,
        host: hostname(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        source: "sqlite".into(),
        catalog: std::mem::take(&mut read.catalog),
        summary,
        warnings: warnings.iter().map(ToString::to_string).collect(),
    }
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

type Pack = ([u8; 32], Vec<u8>, Vec<PackBlob>);
/// The chunk queue, shared by the sealers: numbered chunks from the reader.
type ChunkRx = Arc<Mutex<Receiver<(u64, Vec<u8>)>>>;

/// What the reader and the sealers share.
struct Shared {
    /// The repository's index when the backup started: blobs already stored.
    index: Arc<Index>,
    /// Blobs sealed in this backup (not in the index yet), so each is stored once.
    in_flight: Mutex<HashSet<BlobId>>,
    ids: Mutex<IdState>,
    /// Signalled when a chunk is named or a sealer stops.
    named: Condvar,
}

struct IdState {
    /// Blob ids by chunk number, until the reader writes the entry that holds them.
    ids: HashMap<u64, BlobId>,
    sealers_alive: usize,
}

impl Shared {
    fn name(&self, seq: u64, id: BlobId) {
        self.ids.lock().expect("ids lock").ids.insert(seq, id);
        self.named.notify_all();
    }

    fn sealer_done(&self) {
        // Tolerate a poisoned lock: this runs while a panicking sealer unwinds.
        let mut st = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        st.sealers_alive -= 1;
        drop(st);
        self.named.notify_all();
    }

    /// Whether chunks `seqs` are all named (waiting for them with `wait`), leaving them in place.
    fn named(&self, seqs: Range<u64>, wait: bool) -> Result<bool> {
        let mut st = self.ids.lock().expect("ids lock");
        loop {
            if seqs.clone().all(|s| st.ids.contains_key(&s)) {
                return Ok(true);
            }
            if !wait {
                return Ok(false);
            }
            if st.sealers_alive == 0 {
                return Err(pipeline_stopped());
            }
            st = self.named.wait(st).expect("ids lock");
        }
    }

    /// The ids of chunks `seqs`, removed from the map. Without `wait`, `None` if some are not
    /// named yet; with it, block until they are (or fail if every sealer has stopped).
    fn take(&self, seqs: Range<u64>, wait: bool) -> Result<Option<Vec<String>>> {
        if !self.named(seqs.clone(), wait)? {
            return Ok(None);
        }
        let mut st = self.ids.lock().expect("ids lock");
        Ok(Some(seqs.map(|s| hex::encode(st.ids.remove(&s).expect("named above"))).collect()))
    }
}

/// Marks a sealer as stopped when it is dropped, however the sealer ends.
struct SealerDone<'a>(&'a Shared);

impl Drop for SealerDone<'_> {
    fn drop(&mut self) {
        self.0.sealer_done();
    }
}

/// A sealer: name each chunk (HMAC), and compress and seal the new ones straight into a pack of
/// its own; hand full packs to the uploader.
fn seal_loop(
    keys: &TenantKeys,
    shared: &Shared,
    packs: &BufferPool,
    chunks: &BufferPool,
    rx: ChunkRx,
    tx: tokio::sync::mpsc::Sender<Pack>,
) -> Result<()> {
    let mut sealer = crate::repository::BlobSealer::new();
    // Started at the first new blob, and a full pack is handed over before the next starts: a
    // sealer blocked on a busy uploader holds one pack, not a full one and an empty one.
    let mut pack: Option<PackBuilder> = None;
    let send = |pack: PackBuilder| {
        let id = pack.id;
        let (bytes, blobs) = pack.finish(keys);
        tx.blocking_send((id, bytes, blobs)).map_err(|_| pipeline_stopped())
    };
    loop {
        let next = rx.lock().expect("chunk channel lock").recv();
        let Ok((seq, plain)) = next else { break };
        let id = keys.blob_id(&plain);
        let new = !shared.index.contains(&id) && shared.in_flight.lock().expect("in-flight lock").insert(id);
        shared.name(seq, id);
        if new {
            // Ship the pack before it would outgrow its buffer: packs stay within TARGET_SIZE
            // and their buffers are never reallocated.
            if let Some(full) = pack.take_if(|p| !p.has_room(crate::crypto::sealed_len(plain.len() + 1))) {
                send(full)?;
            }
            pack.get_or_insert_with(|| PackBuilder::on(packs.take())).add_blob(&mut sealer, keys, id, &plain);
        }
        chunks.keep(plain);
    }
    match pack {
        Some(p) => send(p),
        None => Ok(()),
    }
}

struct Uploaded {
    bytes: u64,
    /// Pack bytes whose upload completed, for progress.
    uploaded: u64,
    packs: u64,
    blobs: u64,
}

async fn upload_loop(
    repo: &Repository,
    mut rx: tokio::sync::mpsc::Receiver<Pack>,
    packs: &BufferPool,
    progress: &dyn Progress,
) -> Result<Uploaded> {
    let mut in_flight = tokio::task::JoinSet::new();
    let mut done: Vec<([u8; 32], Vec<PackBlob>)> = Vec::new();
    let mut stats = Uploaded { bytes: 0, uploaded: 0, packs: 0, blobs: 0 };
    let mut received_all = false;
    // Each pack in flight is up to 8 MiB of memory: the store's concurrency bounds both.
    let uploads = repo.store.concurrency();
    while !received_all || !in_flight.is_empty() {
        tokio::select! {
            msg = rx.recv(), if !received_all && in_flight.len() < uploads => match msg {
                Some((id, bytes, blobs)) => {
                    let store = repo.store.clone();
                    let key = repo.pack_key(&id);
                    let len = bytes.len() as u64;
                    stats.bytes += len;
                    let packs = packs.clone();
                    in_flight.spawn(async move {
                        let bytes = Bytes::from(bytes);
                        store.put(&key, Body::Bytes(bytes.clone())).await?;
                        packs.give_back(bytes);
                        Ok::<_, crate::store::StoreError>((id, blobs, len))
                    });
                }
                None => received_all = true,
            },
            Some(res) = in_flight.join_next(), if !in_flight.is_empty() => {
                let (id, blobs, len) = res.expect("upload task panicked")?;
                stats.uploaded += len;
                progress.item(&format!("{:.1} MB uploaded in {} packs", stats.uploaded as f64 / 1e6, stats.packs + 1));
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
    warnings: Vec<Warning>,
    snapshot_time: String,
    cache: Option<FileCache>,
}

/// Read a tenant with two readers at once, the database in one thread and the files in another:
/// each cuts its own chunks and writes its own part of the catalog, so stepping through SQLite
/// rows and reading files overlap. The parts are then joined (database first) and the catalog
/// itself is chunked.
fn read_tenant(
    mut tables: Reader,
    mut files: Reader,
    tenant_dir: &Path,
    cache: (PathBuf, Arc<TenantKeys>),
    spool_dir: &Path,
    busy: std::time::Duration,
) -> Result<ReadResult> {
    // The snapshot is taken first, so a tenant without a readable database fails before any file
    // is read or stored.
    let db = Snapshot::open(&tenant_dir.join(DATABASE_FILE), busy)?;
    let snapshot_time = crate::now_rfc3339();
    let tables_spool = tables.open_spool(spool_dir)?;
    let files_spool = files.open_spool(spool_dir)?;
    let (tables_done, files_done) = std::thread::scope(|scope| {
        let db = scope.spawn(|| tables.read_tables(db).and_then(|()| tables.close_spool()));
        let files_done = files.read_files(tenant_dir, cache).and_then(|()| files.close_spool());
        (db.join().expect("table reader panicked"), files_done)
    });
    // The database's error first: it is read from the start and is the bigger loss.
    tables_done?;
    files_done?;
    drop(tables.tx);
    let catalog = files.chunk_catalog(&[tables_spool.path(), files_spool.path()])?;
    let mut summary = files.summary;
    let t = &tables.summary;
    summary.tables = t.tables;
    summary.rows = t.rows;
    summary.table_bytes = t.table_bytes;
    summary.bytes_read += t.bytes_read;
    summary.rows_inserted = t.rows_inserted;
    summary.rows_updated = t.rows_updated;
    summary.rows_deleted = t.rows_deleted;
    let mut warnings = tables.warnings;
    warnings.extend(files.warnings);
    Ok(ReadResult { catalog, summary, warnings, snapshot_time, cache: files.cache })
}

/// Catalog entries waiting for the ids of their chunks, in source order. Bounded, so a run of
/// files the cache skips cannot queue up without limit.
const MAX_PENDING: usize = 4096;

/// The reader stage: everything that touches the source.
struct Reader {
    shared: Arc<Shared>,
    tx: SyncSender<(u64, Vec<u8>)>,
    /// Buffers for the chunks sent on `tx`, which the sealers give back.
    chunks: BufferPool,
    chunker: Chunker,
    /// The number of the next chunk.
    seq: u64,
    pending: VecDeque<Pending>,
    catalog: Option<(BufWriter<File>, std::path::PathBuf)>,
    cache: Option<FileCache>,
    summary: Summary,
    warnings: Vec<Warning>,
    progress: ProgressBytes,
    /// What the table reader needs to write keyed tables as deltas.
    incremental: Option<Incremental>,
    /// The job's token: checked at every chunk and catalog entry, so a cancelled backup stops
    /// within one chunk of reading.
    cancel: CancellationToken,
}

/// A catalog entry waiting for the ids of its chunks.
struct Pending {
    entry: Entry,
    /// Its chunks; empty when the entry already names its blobs.
    seqs: Range<u64>,
    /// The chunks of a new base's digest map (keyed tables only).
    digest_seqs: Range<u64>,
    /// Record the file in the cache under this path and metadata once it is named.
    cache_as: Option<(Vec<u8>, FileMeta)>,
}

impl Pending {
    fn new(entry: Entry, seqs: Range<u64>) -> Pending {
        Pending { entry, seqs, digest_seqs: 0..0, cache_as: None }
    }
}

/// Put the ids of an entry's chunks where they belong: a file's or a table's blobs, or, for a
/// keyed table, its new base (and digest map) or its newest delta.
fn set_blobs(entry: &mut Entry, ids: Vec<String>, digest_ids: Vec<String>) {
    match entry {
        Entry::Table { keyed: Some(k), blobs, .. } if k.deltas.last().is_some_and(|d| d.blobs.is_empty()) => {
            k.deltas.last_mut().expect("checked").blobs = ids;
            debug_assert!(!blobs.is_empty() && digest_ids.is_empty(), "a delta keeps its base");
        }
        Entry::Table { keyed, blobs, .. } => {
            *blobs = ids;
            if let Some(k) = keyed {
                k.digests = digest_ids;
            }
        }
        Entry::File { blobs, .. } => *blobs = ids,
        _ => debug_assert!(ids.is_empty(), "only tables and files have blobs"),
    }
}

impl Reader {
    fn new(
        seed: u64,
        first_seq: u64,
        shared: Arc<Shared>,
        tx: SyncSender<(u64, Vec<u8>)>,
        chunks: BufferPool,
        progress: ProgressBytes,
        cancel: CancellationToken,
    ) -> Reader {
        Reader {
            shared,
            tx,
            chunks,
            chunker: Chunker::new(seed),
            seq: first_seq,
            pending: VecDeque::new(),
            catalog: None,
            cache: None,
            summary: Summary::default(),
            warnings: Vec::new(),
            progress,
            incremental: None,
            cancel,
        }
    }

    fn stop_if_cancelled(&self) -> Result<()> {
        match self.cancel.is_cancelled() {
            true => Err(Error::Cancelled),
            false => Ok(()),
        }
    }

    fn warn(&mut self, w: Warning) {
        tracing::warn!("{w}");
        self.warnings.push(w);
    }

    /// Cut what the chunker holds into numbered chunks and send them to the sealers.
    fn emit(&mut self, finish: bool) -> Result<()> {
        self.stop_if_cancelled()?;
        let Reader { tx, chunks, chunker, seq, .. } = self;
        let mut take = |chunk: &[u8]| -> Result<()> {
            let mut buf = chunks.take();
            buf.extend_from_slice(chunk);
            tx.send((*seq, buf)).map_err(|_| pipeline_stopped())?;
            *seq += 1;
            Ok(())
        };
        if finish {
            chunker.finish(&mut take)
        } else {
            chunker.drain(&mut take)
        }
    }

    /// Queue a catalog entry whose blobs are the chunks `seqs` (empty when the entry already
    /// names its blobs), and write out every entry that is complete.
    fn entry(&mut self, entry: Entry, seqs: Range<u64>) -> Result<()> {
        self.queue(Pending::new(entry, seqs))
    }

    fn queue(&mut self, p: Pending) -> Result<()> {
        self.stop_if_cancelled()?;
        self.pending.push_back(p);
        self.write_ready(false)?;
        while self.pending.len() > MAX_PENDING {
            self.write_head(true)?;
        }
        Ok(())
    }

    fn write_ready(&mut self, wait: bool) -> Result<()> {
        while !self.pending.is_empty() {
            if !self.write_head(wait)? {
                break;
            }
        }
        Ok(())
    }

    /// Write the oldest pending entry if its chunks are named. Returns whether it was written.
    fn write_head(&mut self, wait: bool) -> Result<bool> {
        let Some(head) = self.pending.front() else { return Ok(false) };
        // The digest map's chunks come after the rows', so once they are named all are.
        if !self.shared.named(head.digest_seqs.clone(), wait)? {
            return Ok(false);
        }
        let Some(ids) = self.shared.take(head.seqs.clone(), wait)? else { return Ok(false) };
        let Pending { mut entry, seqs, digest_seqs, cache_as } = self.pending.pop_front().expect("checked above");
        let digest_ids = self.shared.take(digest_seqs, true)?.expect("named above");
        if !seqs.is_empty() || !digest_ids.is_empty() {
            set_blobs(&mut entry, ids, digest_ids);
        }
        if let (Some((rel, meta)), Some(cache), Entry::File { blobs, .. }) = (cache_as, self.cache.as_mut(), &entry) {
            cache.record(&rel, &meta, blobs);
        }
        let (w, path) = self.catalog.as_mut().expect("the catalog spool is open while reading");
        // The spool is a file: a failed write (a full disk) is an error, not a panic.
        serde_json::to_writer(&mut *w, &entry)
            .map_err(std::io::Error::from)
            .and_then(|()| w.write_all(b"\n"))
            .map_err(|cause| Error::Io { what: "cannot write", path: path.clone(), cause })?;
        Ok(true)
    }

    /// Open this reader's part of the catalog: a temporary file, so no listing is held in memory.
    fn open_spool(&mut self, spool_dir: &Path) -> Result<tempfile::NamedTempFile> {
        let spool = tempfile::NamedTempFile::new_in(spool_dir).map_err(|cause| Error::Io {
            what: "cannot create a temporary file in",
            path: spool_dir.into(),
            cause,
        })?;
        let writer =
            spool.reopen().map_err(|cause| Error::Io { what: "cannot open", path: spool.path().into(), cause })?;
        self.catalog = Some((BufWriter::new(writer), spool.path().into()));
        Ok(spool)
    }

    /// Write every pending entry (waiting for the sealers) and close the catalog part.
    fn close_spool(&mut self) -> Result<()> {
        self.write_ready(true)?;
        let (writer, path) = self.catalog.take().expect("the catalog spool is open while reading");
        writer.into_inner().map_err(|e| Error::Io { what: "cannot write", path, cause: e.into_error() })?;
        Ok(())
    }

    /// The file folders, skipping files the cache knows unchanged.
    fn read_files(&mut self, tenant_dir: &Path, (cache_path, keys): (PathBuf, Arc<TenantKeys>)) -> Result<()> {
        let phase = Instant::now();
        self.cache = FileCache::open(&cache_path, keys)
            .map_err(|e| {
                self.warn(Warning::other(format!(
                    "file cache {} is unusable ({e}); every file is read",
                    cache_path.display()
                )));
            })
            .ok();
        let mut walk_warnings = Vec::new();
        files::walk(
            tenant_dir,
            |item| -> Result<()> {
                match item {
                    Item::Dir { rel, meta } => self.entry(
                        Entry::Dir { path: EntryPath::from_bytes(&rel), mode: meta.mode, mtime_ns: meta.mtime_ns },
                        0..0,
                    ),
                    Item::Symlink { rel, target } => self.entry(
                        Entry::Symlink { path: EntryPath::from_bytes(&rel), target: EntryPath::from_bytes(&target) },
                        0..0,
                    ),
                    Item::File { rel, abs, meta } => self.read_file(&rel, &abs, meta),
                }
            },
            |w| walk_warnings.push(w),
        )?;
        for w in walk_warnings {
            self.warn(w);
        }
        tracing::debug!(seconds = phase.elapsed().as_secs_f64(), bytes = self.summary.file_bytes, "files read");
        Ok(())
    }

    /// Chunk the catalog (its parts in order) like any stream, and wait for the blob ids.
    fn chunk_catalog(&mut self, parts: &[&Path]) -> Result<Vec<String>> {
        let first = self.seq;
        for path in parts {
            let mut rd =
                File::open(path).map_err(|cause| Error::Io { what: "cannot read", path: path.to_path_buf(), cause })?;
            self.chunk_all(&mut rd, path)?;
        }
        self.emit(true)?;
        Ok(self.shared.take(first..self.seq, true)?.expect("waited for every id"))
    }

    /// Read `r` (the local file `path`, for errors) to its end into the chunker, sending chunks as
    /// they fill. The caller ends the stream with `emit(true)`.
    fn chunk_all(&mut self, r: &mut impl Read, path: &Path) -> Result<()> {
        while self.chunker.read_from(r, READ_SIZE).map_err(|cause| Error::Io {
            what: "cannot read",
            path: path.to_path_buf(),
            cause,
        })? > 0
        {
            self.emit(false)?;
        }
        Ok(())
    }

    /// Back up one file. Unchanged files (same path, size, mtime, ctime and inode as in the cache,
    /// with all their blobs still indexed) are not read at all. A file that changes while it is
    /// read is read again; if it never holds still, the last read is kept and named in a warning.
    fn read_file(&mut self, rel: &[u8], abs: &Path, meta: FileMeta) -> Result<()> {
        let path = EntryPath::from_bytes(rel);
        if let Some(c) = self.cache.as_ref() {
            if let Some(blobs) = c.lookup(rel, &meta) {
                let ids: Option<Vec<BlobId>> = blobs.iter().map(|b| crate::repository::parse_blob_id(b)).collect();
                // The cache may name blobs that `prune` has removed since (the generation that
                // held them was forgotten): trust it only for blobs the index still lists. That
                // is enough, because prune runs under the tenant lock (never during this backup)
                // and deletes a pack only after no index file lists it any more, so a blob in
                // the index loaded at the start is in a pack that exists.
                if ids.is_some_and(|ids| ids.iter().all(|id| self.shared.index.contains(id))) {
                    self.summary.files += 1;
                    self.summary.file_bytes += meta.size;
                    let entry = Entry::File {
                        path,
                        size: meta.size,
                        mode: meta.mode,
                        mtime_ns: meta.mtime_ns,
                        blobs,
                        changed_during_read: false,
                    };
                    return self.queue(Pending { cache_as: Some((rel.to_vec(), meta)), ..Pending::new(entry, 0..0) });
                }
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let unreadable = |e: std::io::Error| Warning::Unreadable { path: abs.to_path_buf(), cause: e.to_string() };
            let mut f = match files::open_walked(abs, &meta) {
                Ok(f) => f,
                Err(e) => {
                    self.warn(unreadable(e));
                    return Ok(());
                }
            };
            let before = match f.metadata() {
                Ok(m) => FileMeta::of(&m),
                Err(e) => {
                    self.warn(unreadable(e));
                    return Ok(());
                }
            };
            let first = self.seq;
            let mut size = 0u64;
            loop {
                let n = match self.chunker.read_from(&mut f, READ_SIZE) {
                    Ok(n) => n,
                    Err(e) => {
                        // Chunks already sent are stored but referenced by nothing.
                        self.chunker.finish(|_| Ok::<_, ()>(())).ok();
                        self.warn(unreadable(e));
                        return Ok(());
                    }
                };
                if n == 0 {
                    break;
                }
                size += n as u64;
                self.progress.add(n as u64);
                self.emit(false)?;
            }
            self.emit(true)?;
            let seqs = first..self.seq;
            self.summary.bytes_read += size;
            let after = f.metadata().map(|m| FileMeta::of(&m)).ok();
            let still = std::fs::symlink_metadata(abs).map(|m| FileMeta::of(&m)).ok();
            let consistent = after == Some(before) && still == Some(before) && size == before.size;
            if consistent || attempt == READ_ATTEMPTS {
                if !consistent {
                    self.warn(Warning::ChangedWhileRead { path: abs.to_path_buf(), attempts: attempt });
                }
                self.summary.files += 1;
                self.summary.file_bytes += size;
                let entry = Entry::File {
                    path,
                    size,
                    mode: before.mode,
                    mtime_ns: before.mtime_ns,
                    blobs: Vec::new(),
                    changed_during_read: !consistent,
                };
                // Only a file read consistently may be skipped by the cache next time.
                let cache_as = consistent.then(|| (rel.to_vec(), before));
                return self.queue(Pending { cache_as, ..Pending::new(entry, seqs) });
            }
            // A torn read: its chunks are stored but referenced by nothing; forget their ids.
            self.shared.take(seqs, true)?;
        }
    }
}

/// The local file cache: path -> (size, mtime, ctime, inode) -> blobs of the last generation.
/// It is rebuilt on every backup into a new table and swapped in only once the generation's
/// manifest is written, so it never names blobs that no generation holds.
///
/// Its entries decide what a generation holds without reading the file, so each carries a MAC
/// under the tenant's key over everything it says: a forged or swapped entry (the state folder
/// is only a disk) is ignored and its file read again, never stored under the wrong blobs.
struct FileCache {
    conn: rusqlite::Connection,
    keys: Arc<TenantKeys>,
}

/// What a cache entry's MAC is bound to (see [`TenantKeys::state_mac`]).
const FILE_CACHE_MAC: &str = "file-cache";

impl FileCache {
    fn open(path: &Path, keys: Arc<TenantKeys>) -> std::result::Result<FileCache, rusqlite::Error> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = rusqlite::Connection::open(path)?;
        // A cache written before entries had a MAC has no `mac` column: it is dropped and
        // rebuilt (every file is read once).
        let has_mac = conn.prepare("SELECT mac FROM files LIMIT 0").map(|_| true).unwrap_or(false);
        if !has_mac {
            conn.execute_batch("DROP TABLE IF EXISTS files;")?;
        }
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS files (path BLOB PRIMARY KEY, size INTEGER, mtime TEXT, ctime TEXT, inode INTEGER, blobs TEXT, mac BLOB);
             DROP TABLE IF EXISTS files_next;
             CREATE TABLE files_next (path BLOB PRIMARY KEY, size INTEGER, mtime TEXT, ctime TEXT, inode INTEGER, blobs TEXT, mac BLOB);
             BEGIN;",
        )?;
        Ok(FileCache { conn, keys })
    }

    /// The numbers an entry's MAC covers, little-endian, besides its path and blob list.
    fn mac_numbers(m: &FileMeta) -> [[u8; 8]; 4] {
        [m.size.to_le_bytes(), m.mtime_ns.to_le_bytes(), m.ctime_ns.to_le_bytes(), m.inode.to_le_bytes()]
    }

    fn lookup(&self, rel: &[u8], m: &FileMeta) -> Option<Vec<String>> {
        let row: Option<(i64, String, String, i64, String, Vec<u8>)> = self
            .conn
            .query_row("SELECT size, mtime, ctime, inode, blobs, mac FROM files WHERE path = ?1", [rel], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })
            .ok();
        let (size, mtime, ctime, inode, blobs, mac) = row?;
        let same = size as u64 == m.size
            && mtime == m.mtime_ns.to_string()
            && ctime == m.ctime_ns.to_string()
            && inode as u64 == m.inode;
        if !same {
            return None;
        }
        // The metadata matched the file as it is now, so the MAC is checked over it.
        let [a, b, c, d] = Self::mac_numbers(m);
        if !self.keys.verify_state_mac(FILE_CACHE_MAC, &[rel, &a, &b, &c, &d, blobs.as_bytes()], &mac) {
            tracing::warn!(
                "a file cache entry does not match its MAC (the cache was altered or damaged); the file is read again"
            );
            return None;
        }
        serde_json::from_str(&blobs).ok()
    }

    fn record(&mut self, rel: &[u8], m: &FileMeta, blobs: &[String]) {
        let blobs = serde_json::to_string(blobs).expect("blob list serializes");
        let [a, b, c, d] = Self::mac_numbers(m);
        let mac = self.keys.state_mac(FILE_CACHE_MAC, &[rel, &a, &b, &c, &d, blobs.as_bytes()]);
        let res = self.conn.execute(
            "INSERT OR REPLACE INTO files_next VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![
                rel,
                m.size as i64,
                m.mtime_ns.to_string(),
                m.ctime_ns.to_string(),
                m.inode as i64,
                blobs,
                mac.as_slice()
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
