//! The database side of a backup. Every table is read under the snapshot's one read transaction
//! and written either whole (a canonical row stream, cut by the chunker), or, for a keyed table
//! whose parent generation has a verified digest map, as a delta holding only its changed rows.
//! `generation::delta` has the formats and the rules; this is where the choice is made.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use rusqlite::types::ValueRef;
use sha2::Digest;

use super::Reader;
use crate::commands::{Error, Result};
use crate::generation::delta::{self, DigestMapReader, Merge, Merger, SealedFileReader, SealedFileWriter};
use crate::generation::{rows, Delta, Entry, Keyed};
use crate::keys::{RowDigest, RowDigester, TenantKeys};
use crate::repository::{parse_blob_id, parse_blob_list, Index, Repository};
use crate::source::sqlite::{Snapshot, TableSpec};
use crate::source::SourceError;
use crate::tenant::TenantId;

/// What the table reader needs to write keyed tables as deltas.
pub(super) struct Incremental {
    pub keys: Arc<TenantKeys>,
    pub digester: RowDigester,
    /// The id of the generation being written.
    pub generation: String,
    pub parents: HashMap<String, ParentTable>,
    pub maps: DigestMaps,
    pub max_chain: u32,
    pub max_ratio: f64,
}

/// A keyed table of the parent generation, with its digest map when a verified copy is at hand.
pub(super) struct ParentTable {
    columns: Vec<String>,
    rowid: bool,
    blobs: Vec<String>,
    keyed: Keyed,
    map: Option<PathBuf>,
}

/// The local, sealed copies of digest maps: `state/cache/<tenant>.rows/` holds the last
/// generation's, `<tenant>.rows.next/` the ones being written, swapped in once the generation's
/// manifest is stored. A copy is only trusted when its MAC matches the catalog's, so a stale or
/// damaged one costs a rebuild from the repository, never a wrong delta.
#[derive(Clone)]
pub(super) struct DigestMaps {
    current: PathBuf,
    next: PathBuf,
}

impl DigestMaps {
    pub fn new(state_dir: &Path, tenant: &TenantId) -> Result<DigestMaps> {
        let cache = state_dir.join("cache");
        let maps = DigestMaps {
            current: cache.join(format!("{tenant}.rows")),
            next: cache.join(format!("{tenant}.rows.next")),
        };
        let _ = std::fs::remove_dir_all(&maps.next);
        for dir in [&maps.current, &maps.next] {
            std::fs::create_dir_all(dir).map_err(|cause| Error::Io {
                what: "cannot create",
                path: dir.clone(),
                cause,
            })?;
        }
        Ok(maps)
    }

    /// File names say nothing of the table: a hash of its name.
    fn file_name(table: &str) -> String {
        hex::encode(sha2::Sha256::digest(table.as_bytes()))
    }

    /// The name the file's frames are sealed under, which binds them to the table.
    fn sealed_name(table: &str) -> String {
        format!("digests/{}", Self::file_name(table))
    }

    pub fn commit(&self) {
        let _ = std::fs::remove_dir_all(&self.current);
        if let Err(e) = std::fs::rename(&self.next, &self.current) {
            tracing::warn!(error = %e, "could not keep the digest maps; the next backup rebuilds them from the store");
        }
    }
}

/// The MAC of a local digest map, read through its sealing.
fn mac_of_file(path: &Path, keys: &Arc<TenantKeys>, name: &str, digester: &RowDigester) -> std::io::Result<String> {
    let mut r = SealedFileReader::open(path, keys.clone(), name)?;
    let mut mac = digester.stream();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(mac.finish());
        }
        mac.update(&buf[..n]);
    }
}

/// The parent generation's keyed tables, each with a verified local copy of its digest map:
/// the cached one if its MAC matches, else one rebuilt from the base's map and the deltas in the
/// store. A table whose map cannot be had is written whole, with a warning.
pub(super) async fn parent_tables(
    repo: &Repository,
    index: &Index,
    parent: &str,
    maps: &DigestMaps,
    tmp: &Path,
) -> Result<(HashMap<String, ParentTable>, Vec<String>)> {
    let m = repo.load_generation(parent).await?;
    let catalog = repo.fetch_catalog(index, &m, tmp).await?;
    let mut tables = HashMap::new();
    let mut warnings = Vec::new();
    for entry in catalog.entries()? {
        let (name, columns, rowid, blobs, keyed) = match entry? {
            Entry::Table { name, columns, rowid, blobs, keyed: Some(keyed), .. } => {
                (name, columns, rowid, blobs, keyed)
            }
            Entry::Table { .. } | Entry::Schema { .. } => continue,
            // The database comes first in a catalog.
            _ => break,
        };
        // A delta reuses the base and the earlier deltas by reference: only if every one of
        // their blobs is still in the index (a damaged or pruned repository gets a new base).
        let entry_blobs = std::iter::once(&blobs)
            .chain(std::iter::once(&keyed.digests))
            .chain(keyed.deltas.iter().map(|d| &d.blobs))
            .flatten();
        if !entry_blobs.into_iter().all(|b| parse_blob_id(b).is_some_and(|id| index.contains(&id))) {
            let w = format!("table {name}: generation {parent} references blobs that are not in the index; the table is written whole");
            tracing::warn!("{w}");
            warnings.push(w);
            continue;
        }
        let ncols = columns.len() + rowid as usize;
        let map = match parent_map(repo, index, &name, ncols, &keyed, maps, tmp).await {
            Ok(path) => Some(path),
            Err(e) => {
                let w = format!(
                    "table {name}: the digest map of generation {parent} is not usable ({e}); the table is written whole"
                );
                tracing::warn!("{w}");
                warnings.push(w);
                None
            }
        };
        tables.insert(name, ParentTable { columns, rowid, blobs, keyed, map });
    }
    Ok((tables, warnings))
}

async fn parent_map(
    repo: &Repository,
    index: &Index,
    table: &str,
    ncols: usize,
    keyed: &Keyed,
    maps: &DigestMaps,
    tmp: &Path,
) -> std::result::Result<PathBuf, String> {
    let keys = &repo.keys;
    let digester = keys.row_digester();
    let name = DigestMaps::sealed_name(table);
    let path = maps.current.join(DigestMaps::file_name(table));
    if mac_of_file(&path, keys, &name, &digester).is_ok_and(|mac| mac == keyed.digest_mac) {
        return Ok(path);
    }
    tracing::info!(table, "rebuilding the digest map from the store");
    let whose = format!("table {table} of {}", keyed.base_generation);
    let files = repo.fetch_deltas(index, keyed, &whose, tmp).await.map_err(|e| e.to_string())?;
    let deltas = delta::Deltas::open(files, ncols, &keyed.key).map_err(|e| e.to_string())?;
    let mut merger = Merger::new(deltas, Merge::Digests { key: keyed.key.clone(), digester: digester.clone() });
    let mut w = SealedFileWriter::create(&path, keys.clone(), &name).map_err(|e| e.to_string())?;
    let mut mac = digester.stream();
    let ids = parse_blob_list(&keyed.digests, &whose).map_err(|e| e.to_string())?;
    let mut stream = repo.blob_stream(index, ids.into_iter());
    let mut out = Vec::new();
    let mut put = |out: &mut Vec<u8>| -> std::result::Result<(), String> {
        mac.update(out);
        w.write_all(out).map_err(|e| e.to_string())?;
        out.clear();
        Ok(())
    };
    while let Some(data) = stream.next().await {
        merger.push(&data.map_err(|e| e.to_string())?, &mut out).map_err(|e| e.to_string())?;
        put(&mut out)?;
    }
    merger.finish(&mut out).map_err(|e| e.to_string())?;
    put(&mut out)?;
    w.finish().map_err(|e| e.to_string())?;
    if mac.finish() != keyed.digest_mac {
        let _ = std::fs::remove_file(&path);
        return Err("the map rebuilt from the store does not match the catalog's MAC".into());
    }
    Ok(path)
}

/// How one table is written.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// A full row stream, no digest map (a table without a key, or one whose keys are not in
    /// the order `delta::compare` expects).
    Plain,
    /// A full row stream and its digest map: a new base.
    Base,
    /// The changed rows only, against the parent's digest map.
    Delta,
}

/// Why a keyed read was abandoned for a plain one, or a real error.
enum Stop {
    Fallback(String),
    Failed(Error),
}

impl From<SourceError> for Stop {
    fn from(e: SourceError) -> Stop {
        Stop::Failed(e.into())
    }
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Failed(e)
    }
}

/// Rows on their way from the SQLite thread to the one that digests and cuts them. Each row is
/// its key's values (none in `Mode::Plain`), then all its values, encoded; `ends` holds where
/// each key and each row ends in `data`. `last` marks the end of the table: a channel that
/// closes without it means the reading side stopped.
#[derive(Default)]
struct Batch {
    data: Vec<u8>,
    ends: Vec<(usize, usize)>,
    last: bool,
}

/// A batch is handed over once it holds this many bytes (or the table ends).
const BATCH_BYTES: usize = 256 << 10;
/// Full batches waiting for the taking thread.
const BATCHES: usize = 4;
/// A batch this large holds a large row (a BLOB of many MiB): the reading side then waits
/// until it is taken, so about one such row is in flight rather than [`BATCHES`] of them; and
/// a batch whose buffer grew past twice this is not reused.
const LARGE_BATCH: usize = 2 * BATCH_BYTES;

/// What reading a table's rows gives: the counts, and the new digest map (its file and MAC).
type TableRead = (Counts, Option<(PathBuf, String)>);

#[derive(Default)]
struct Counts {
    rows: u64,
    bytes: u64,
    inserted: u64,
    updated: u64,
    deleted: u64,
    delta_bytes: u64,
}

impl Reader {
    /// The schema and every table, under the snapshot's one read transaction.
    pub(super) fn read_tables(&mut self, db: Snapshot) -> Result<()> {
        let phase = Instant::now();
        let (objects, user_version, application_id) = db.schema()?;
        let (tables, table_warnings) = db.tables(&objects)?;
        for w in table_warnings {
            self.warn(crate::source::Warning::other(w));
        }
        self.entry(Entry::Schema { objects, user_version, application_id }, 0..0)?;
        // Taken out while tables are read, so it can be borrowed next to the reader.
        let inc = self.incremental.take();
        for spec in tables {
            self.read_table(&db, spec, inc.as_ref())?;
        }
        self.incremental = inc;
        drop(db);
        tracing::debug!(seconds = phase.elapsed().as_secs_f64(), bytes = self.summary.table_bytes, "tables read");
        Ok(())
    }

    fn read_table(&mut self, db: &Snapshot, spec: TableSpec, inc: Option<&Incremental>) -> Result<()> {
        let parent = inc.and_then(|inc| inc.parents.get(&spec.name)).filter(|p| {
            p.columns == spec.columns && p.rowid == spec.rowid.is_some() && p.keyed.key == spec.key && p.map.is_some()
        });
        let mode = match (inc, parent) {
            (None, _) => Mode::Plain,
            _ if spec.key.is_empty() => Mode::Plain,
            (Some(inc), Some(p)) => {
                let chain = p.keyed.deltas.len() as u32;
                let delta_bytes: u64 = p.keyed.deltas.iter().map(|d| d.bytes).sum();
                // Compact when the chain is long, or the deltas weigh too much next to the base.
                if chain < inc.max_chain && delta_bytes as f64 <= inc.max_ratio * p.keyed.base_bytes.max(1) as f64 {
                    Mode::Delta
                } else {
                    Mode::Base
                }
            }
            (Some(_), None) => Mode::Base,
        };
        let first = self.seq;
        let (counts, map) = match self.read_rows(db, &spec, inc, parent, mode) {
            Ok(done) => done,
            Err(Stop::Failed(e)) => return Err(e),
            Err(Stop::Fallback(why)) => {
                tracing::info!(table = %spec.name, "{why}; the table is written whole, without deltas");
                // The chunks already cut are stored but referenced by nothing.
                self.emit(true)?;
                self.shared.take(first..self.seq, true)?;
                match self.read_rows(db, &spec, None, None, Mode::Plain) {
                    Ok(done) => done,
                    Err(Stop::Failed(e)) => return Err(e),
                    Err(Stop::Fallback(why)) => unreachable!("a plain read never falls back ({why})"),
                }
            }
        };
        let rows_range = first..self.seq;
        if crate::source::is_record_table(&spec.name) {
            self.summary.tables += 1;
            self.summary.rows += counts.rows;
        }
        self.summary.table_bytes += counts.bytes;
        self.summary.bytes_read += counts.bytes;
        self.summary.rows_inserted += counts.inserted;
        self.summary.rows_updated += counts.updated;
        self.summary.rows_deleted += counts.deleted;

        let mut entry = Entry::Table {
            name: spec.name.clone(),
            columns: spec.columns,
            rowid: spec.rowid.is_some(),
            rows: counts.rows,
            bytes: counts.bytes,
            blobs: Vec::new(),
            keyed: None,
        };
        let mut digest_seqs = 0..0;
        if let (Some(inc), Some((path, mac))) = (inc, map) {
            let Entry::Table { blobs, keyed, .. } = &mut entry else { unreachable!() };
            *keyed = Some(match (mode, parent) {
                (Mode::Delta, Some(p)) => {
                    *blobs = p.blobs.clone();
                    let mut k = p.keyed.clone();
                    if !rows_range.is_empty() {
                        // Its blobs are filled in once the sealers have named the chunks.
                        k.deltas.push(Delta {
                            generation: inc.generation.clone(),
                            inserted: counts.inserted,
                            updated: counts.updated,
                            deleted: counts.deleted,
                            bytes: counts.delta_bytes,
                            blobs: Vec::new(),
                        });
                    }
                    k.digest_mac = mac;
                    k
                }
                _ => {
                    // A new base: its digest map is stored too, cut like any stream.
                    let start = self.seq;
                    let mut r = SealedFileReader::open(&path, inc.keys.clone(), &DigestMaps::sealed_name(&spec.name))
                        .map_err(|cause| Error::Io { what: "cannot read", path: path.clone(), cause })?;
                    self.chunk_all(&mut r, &path)?;
                    self.emit(true)?;
                    digest_seqs = start..self.seq;
                    Keyed {
                        key: spec.key,
                        base_generation: inc.generation.clone(),
                        base_rows: counts.rows,
                        base_bytes: counts.bytes,
                        digests: Vec::new(),
                        deltas: Vec::new(),
                        digest_mac: mac,
                    }
                }
            });
        }
        self.queue(super::Pending { digest_seqs, ..super::Pending::new(entry, rows_range) })
    }

    /// Read every row of a table once: cut the rows (or, for a delta, the changes) into chunks,
    /// and write the table's new digest map. Returns the counts and the map with its MAC.
    ///
    /// Two threads share the work, so a daily backup, which mostly steps through unchanged
    /// rows, uses both cores: this one reads SQLite and encodes rows in batches; the other
    /// digests them, merges them with the parent's map and cuts chunks. At most `BATCHES`
    /// batches are in flight.
    fn read_rows(
        &mut self,
        db: &Snapshot,
        spec: &TableSpec,
        inc: Option<&Incremental>,
        parent: Option<&ParentTable>,
        mode: Mode,
    ) -> std::result::Result<TableRead, Stop> {
        // Only the digest map needs the key apart from the row.
        let key: &[u32] = if mode == Mode::Plain { &[] } else { &spec.key };
        let (full_tx, full_rx) = sync_channel::<Batch>(BATCHES);
        let (free_tx, free_rx) = channel::<Batch>();
        let cancel = self.cancel.clone();
        std::thread::scope(|scope| {
            let taker = scope.spawn(move || self.take_rows(spec, inc, parent, mode, full_rx, free_tx));
            let mut batch = Batch::default();
            let stopped = || Stop::Failed(super::pipeline_stopped());
            // Batches handed over and not yet given back.
            let mut out = 0usize;
            let read = db
                .for_each_row(spec, |values: &[ValueRef<'_>]| -> std::result::Result<(), Stop> {
                    delta::encode_key(values, key, &mut batch.data);
                    let key_end = batch.data.len();
                    for v in values {
                        rows::encode(*v, &mut batch.data);
                    }
                    batch.ends.push((key_end, batch.data.len()));
                    if batch.data.len() >= BATCH_BYTES {
                        if cancel.is_cancelled() {
                            return Err(Stop::Failed(Error::Cancelled));
                        }
                        let large = batch.data.len() >= LARGE_BATCH;
                        let mut next = match free_rx.try_recv() {
                            Ok(b) => {
                                out -= 1;
                                b
                            }
                            Err(_) => Batch::default(),
                        };
                        full_tx.send(std::mem::take(&mut batch)).map_err(|_| stopped())?;
                        out += 1;
                        while large && out > 0 {
                            // A closed channel: the taker stopped, and says why.
                            next = free_rx.recv().map_err(|_| stopped())?;
                            out -= 1;
                        }
                        batch = next;
                    }
                    Ok(())
                })
                .and_then(|()| {
                    batch.last = true;
                    full_tx.send(batch).map_err(|_| stopped())
                });
            drop(full_tx);
            // Each side's error is the cause unless it only reports that the other stopped:
            // the taker returns `None` when the table did not end, and a reader whose channel
            // closed reports `stopped`, so the side with a real error wins.
            match (read, taker.join().expect("row taker panicked")) {
                (Ok(()), Ok(Some(done))) => Ok(done),
                (Err(e), Ok(_)) => Err(e),
                (Ok(()), Ok(None)) => Err(stopped()),
                (_, Err(e)) => Err(e),
            }
        })
    }

    /// The taking side of [`Self::read_rows`].
    fn take_rows(
        &mut self,
        spec: &TableSpec,
        inc: Option<&Incremental>,
        parent: Option<&ParentTable>,
        mode: Mode,
        batches: Receiver<Batch>,
        free: Sender<Batch>,
    ) -> std::result::Result<Option<TableRead>, Stop> {
        let klen = spec.key.len();
        let mut map = match (inc, mode) {
            (Some(inc), Mode::Base | Mode::Delta) => {
                let path = inc.maps.next.join(DigestMaps::file_name(&spec.name));
                let w = SealedFileWriter::create(&path, inc.keys.clone(), &DigestMaps::sealed_name(&spec.name))
                    .map_err(|cause| Error::Io { what: "cannot create", path: path.clone(), cause })?;
                Some((w, inc.digester.stream(), &inc.digester))
            }
            _ => None,
        };
        // The parent's map, read along (both are in key order), also in Base mode for the counts.
        let mut parent_map = match (inc, parent.and_then(|p| p.map.as_ref().map(|m| (p, m)))) {
            (Some(inc), Some((_, path))) if mode != Mode::Plain => {
                let r = SealedFileReader::open(path, inc.keys.clone(), &DigestMaps::sealed_name(&spec.name))
                    .map_err(|e| Stop::Fallback(format!("the parent's digest map cannot be opened: {e}")))?;
                Some(DigestMapReader::new(r, klen))
            }
            _ => None,
        };
        let map_err = |e: delta::DeltaError| Stop::Fallback(format!("the parent's digest map is damaged: {e}"));
        let decode = |e: rows::DecodeError| Stop::Fallback(format!("a key does not decode: {e}"));
        // The parent's next record: its key (encoded) in a buffer reused from row to row, and
        // its digest, `None` once the map is exhausted.
        let mut head_key = Vec::new();
        let mut head = match parent_map.as_mut() {
            Some(m) => m.next_record(&mut head_key).map_err(map_err)?,
            None => None,
        };
        let mut advance = |head_key: &mut Vec<u8>| -> std::result::Result<Option<RowDigest>, Stop> {
            parent_map.as_mut().expect("a head comes from a map").next_record(head_key).map_err(map_err)
        };
        let mut c = Counts::default();
        let mut record = Vec::new();
        let mut prev_key: Option<Vec<u8>> = None;
        let mut ended = false;
        for batch in batches {
            ended = batch.last;
            let mut start = 0;
            for &(key_end, row_end) in &batch.ends {
                let (key, row) = (&batch.data[start..key_end], &batch.data[key_end..row_end]);
                start = row_end;
                c.rows += 1;
                c.bytes += row.len() as u64;
                self.progress.add(row.len() as u64);
                let Some((w, mac, digester)) = map.as_mut() else {
                    self.chunker.buffer().extend_from_slice(row);
                    self.emit(false)?;
                    continue;
                };
                if let Some(prev) = &prev_key {
                    if delta::compare_encoded(prev, key).map_err(decode)?.is_ge() {
                        return Err(Stop::Fallback("its keys are not in SQLite's BINARY order".into()));
                    }
                }
                let digest = digester.digest(row);
                record.clear();
                delta::push_digest_record(key, &digest, &mut record);
                mac.update(&record);
                w.write_all(&record)
                    .map_err(|e| Stop::Failed(Error::Io { what: "cannot write", path: w.path().into(), cause: e }))?;
                // Keys of the parent's map below this one are rows deleted since.
                let changed = loop {
                    let Some(pd) = head else {
                        c.inserted += 1;
                        break true;
                    };
                    match delta::compare_encoded(&head_key, key).map_err(decode)? {
                        std::cmp::Ordering::Less => {
                            c.deleted += 1;
                            if mode == Mode::Delta {
                                c.delta_bytes += self.push_change(|buf| delta::encode_delete(&head_key, buf));
                            }
                            head = advance(&mut head_key)?;
                        }
                        std::cmp::Ordering::Equal => {
                            let changed = pd != digest;
                            c.updated += changed as u64;
                            head = advance(&mut head_key)?;
                            break changed;
                        }
                        std::cmp::Ordering::Greater => {
                            c.inserted += 1;
                            break true;
                        }
                    }
                };
                match mode {
                    Mode::Delta if changed => c.delta_bytes += self.push_change(|buf| delta::encode_upsert(row, buf)),
                    Mode::Delta => {}
                    _ => self.chunker.buffer().extend_from_slice(row),
                }
                // The previous key, in a buffer reused from row to row.
                let prev = prev_key.get_or_insert_with(Vec::new);
                prev.clear();
                prev.extend_from_slice(key);
                self.emit(false)?;
            }
            let mut batch = batch;
            if batch.data.capacity() > 2 * LARGE_BATCH {
                batch = Batch::default();
            }
            batch.data.clear();
            batch.ends.clear();
            // The reading side may have finished and gone; the batch is simply dropped then.
            let _ = free.send(batch);
        }
        if !ended {
            // The reading side stopped (its error is the cause): nothing more is written.
            return Ok(None);
        }
        // What is left of the parent's map was deleted.
        while head.is_some() {
            c.deleted += 1;
            if mode == Mode::Delta {
                c.delta_bytes += self.push_change(|buf| delta::encode_delete(&head_key, buf));
                self.emit(false)?;
            }
            head = advance(&mut head_key)?;
        }
        self.emit(true)?;
        let map = match map {
            Some((w, mac, _)) => {
                let path = w.path().to_path_buf();
                w.finish().map_err(|cause| Error::Io { what: "cannot write", path: path.clone(), cause })?;
                Some((path, mac.finish()))
            }
            None => None,
        };
        Ok(Some((c, map)))
    }

    /// Append a delta record to the chunker's buffer; returns its size.
    fn push_change(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> u64 {
        let buf = self.chunker.buffer();
        let before = buf.len();
        encode(buf);
        (buf.len() - before) as u64
    }
}
