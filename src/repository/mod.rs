//! A tenant's repository: `tenants/<tenant>/` in the store, with packs, index, generations and
//! locks. This module owns the layout and the order of writes:
//! packs first, then the index that points into them, then the generation manifest last. A crash
//! at any point therefore leaves at most packs that nothing references, never a half generation.

mod fetch;
pub use fetch::{entry_blobs, CatalogBlobs};
pub mod layout;
pub mod lock;
pub mod pack;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::crypto::{Kind, OpenError};
use crate::generation::delta::{Deltas, Merge, Merger};
use crate::generation::{Entry, Manifest};
use crate::keys::{BlobId, TenantKeys};
use crate::retention::Hold;
use crate::store::{Body, ObjectInfo, Store, StoreError};
use crate::tenant::TenantId;
use pack::PackBlob;

pub const MARKER_KEY: &str = layout::MARKER;
pub const STORE_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what} {key} is damaged: {cause}")]
    Damaged { what: &'static str, key: String, cause: String },
    #[error("blob {blob} is not in the index of tenant {tenant}: the repository is missing data; run `reversa check --tenant {tenant}`")]
    MissingBlob { tenant: String, blob: String },
    #[error("generation {id} does not exist for tenant {tenant}; `reversa generations --tenant {tenant}` lists them")]
    NoSuchGeneration { tenant: String, id: String },
    #[error("tenant {tenant} has no generation yet; run `reversa backup --tenant {tenant}` first")]
    NoGenerations { tenant: String },
    #[error("{store} is not a reversa store (no {MARKER_KEY}); run `reversa --config FILE init` first")]
    NotInitialized { store: String },
    #[error("cannot use the local folder {path}: {cause}")]
    Local {
        path: std::path::PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("{store} holds store format {found}, this reversa reads format {STORE_FORMAT}; upgrade reversa")]
    UnsupportedFormat { store: String, found: u32 },
}

impl RepoError {
    /// Whether this is damage to the repository (an object that does not open or is missing),
    /// as opposed to a store that did not answer or a request for what does not exist.
    pub fn is_damage(&self) -> bool {
        matches!(self, RepoError::Damaged { .. } | RepoError::MissingBlob { .. })
    }
}

/// The plaintext store marker. No secrets: it only says what the store is.
#[derive(Debug, Serialize, Deserialize)]
pub struct Marker {
    pub format: u32,
    pub created: String,
    pub tool: String,
    /// What the store found about itself at init (S3: conditional writes, bucket location).
    #[serde(flatten)]
    pub facts: crate::store::StoreFacts,
}

/// Check that the store was initialized by a reversa that writes a format this one reads.
pub async fn check_marker(store: &dyn Store) -> Result<Marker, RepoError> {
    parse_marker(store, store.get(MARKER_KEY).await)
}

/// [`check_marker`] on the marker as `store` answered a read of it.
pub fn parse_marker(store: &dyn Store, read: Result<bytes::Bytes, StoreError>) -> Result<Marker, RepoError> {
    let bytes = match read {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Err(RepoError::NotInitialized { store: store.describe() }),
        Err(e) => return Err(e.into()),
    };
    let m: Marker = serde_json::from_slice(&bytes).map_err(|e| RepoError::Damaged {
        what: "store marker",
        key: MARKER_KEY.into(),
        cause: e.to_string(),
    })?;
    if m.format != STORE_FORMAT {
        return Err(RepoError::UnsupportedFormat { store: store.describe(), found: m.format });
    }
    Ok(m)
}

/// Where a blob lives.
#[derive(Clone, Copy, Debug)]
pub struct Location {
    /// Position in [`Index::packs`].
    pub pack: u32,
    pub offset: u64,
    pub length: u32,
}

/// The blob index of one tenant, merged from all its index files. Memory is about 80 bytes per
/// blob (a 1 TB tenant at 1 MiB average chunks is about 80 MB).
#[derive(Default)]
pub struct Index {
    pub packs: Vec<[u8; 32]>,
    pub blobs: HashMap<BlobId, Location>,
    /// The index files it was read from.
    pub files: Vec<String>,
}

impl Index {
    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn add_pack(&mut self, pack: [u8; 32], blobs: &[PackBlob]) {
        let n = self.packs.len() as u32;
        self.packs.push(pack);
        for b in blobs {
            self.blobs.insert(b.id, Location { pack: n, offset: b.offset, length: b.length });
        }
    }
}

/// The plaintext of an index file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexFile {
    packs: Vec<IndexPack>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexPack {
    id: String,
    /// `[blob id, offset, sealed length]`
    blobs: Vec<(String, u64, u32)>,
}

pub struct Repository {
    pub store: Arc<dyn Store>,
    pub keys: Arc<TenantKeys>,
}

fn parse_id(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl Repository {
    pub fn new(store: Arc<dyn Store>, keys: Arc<TenantKeys>) -> Repository {
        Repository { store, keys }
    }

    pub fn tenant(&self) -> &TenantId {
        &self.keys.tenant
    }

    pub fn prefix(tenant: &TenantId) -> String {
        layout::tenant(tenant)
    }

    pub fn pack_key(&self, pack: &[u8; 32]) -> String {
        layout::pack(self.tenant(), pack)
    }

    pub fn generation_key(&self, id: &str) -> String {
        layout::generation(self.tenant(), id)
    }

    /// The folder of the packs.
    pub fn data_prefix(&self) -> String {
        layout::packs(self.tenant())
    }

    /// The folder of the index files.
    pub fn index_prefix(&self) -> String {
        layout::indexes(self.tenant())
    }

    /// Open and verify the sealed blob `id` read from the pack `pack_key`, off the async threads;
    /// a damaged blob is named with its pack.
    pub async fn open_sealed_blob(&self, pack_key: String, id: BlobId, sealed: Bytes) -> Result<Vec<u8>, RepoError> {
        open_sealed(self.keys.clone(), pack_key.into(), id, sealed).await
    }

    /// Load and merge every index file; a damaged one is an error.
    pub async fn load_index(&self) -> Result<Index, RepoError> {
        let (index, mut damaged) = self.load_index_tolerant().await?;
        match damaged.pop() {
            Some(e) => Err(e),
            None => Ok(index),
        }
    }

    /// Load every index file that opens, and say which do not (for `check`).
    pub async fn load_index_tolerant(&self) -> Result<(Index, Vec<RepoError>), RepoError> {
        let mut index = Index::default();
        let mut problems = Vec::new();
        for obj in self.store.list(&self.index_prefix()).await? {
            let id = obj.key.rsplit('/').next().unwrap_or_default().to_string();
            let sealed = self.store.get(&obj.key).await?;
            let damaged = |cause: String| RepoError::Damaged { what: "index file", key: obj.key.clone(), cause };
            let parsed = self
                .keys
                .open(Kind::Index, &id, &sealed)
                .map_err(|e| damaged(e.to_string()))
                .and_then(|plain| serde_json::from_slice::<IndexFile>(&plain).map_err(|e| damaged(e.to_string())))
                .and_then(|file| {
                    let mut packs = Vec::with_capacity(file.packs.len());
                    for p in file.packs {
                        let pack = parse_id(&p.id).ok_or_else(|| damaged(format!("bad pack id {}", p.id)))?;
                        let mut blobs = Vec::with_capacity(p.blobs.len());
                        for (b, offset, length) in p.blobs {
                            let id = parse_id(&b).ok_or_else(|| damaged(format!("bad blob id {b}")))?;
                            blobs.push(PackBlob { id, offset, length });
                        }
                        packs.push((pack, blobs));
                    }
                    Ok(packs)
                });
            match parsed {
                Ok(packs) => {
                    for (pack, blobs) in packs {
                        index.add_pack(pack, &blobs);
                    }
                    index.files.push(obj.key);
                }
                Err(e) => problems.push(e),
            }
        }
        Ok((index, problems))
    }

    /// Download a generation's catalog into a temporary file under `tmp_dir`, verifying every
    /// blob, so it can be read line by line without holding it in memory.
    pub async fn fetch_catalog(&self, index: &Index, m: &Manifest, tmp_dir: &Path) -> Result<Catalog, RepoError> {
        let file = self.fetch_to_file(index, &m.catalog, &self.generation_key(&m.id), tmp_dir).await?;
        Ok(Catalog { file, key: self.generation_key(&m.id) })
    }

    /// Fetch and verify the blobs `list` (hex ids, from `whose` object) into a temporary file
    /// under `tmp_dir`, removed when dropped.
    pub async fn fetch_to_file(
        &self,
        index: &Index,
        list: &[String],
        whose: &str,
        tmp_dir: &Path,
    ) -> Result<tempfile::NamedTempFile, RepoError> {
        std::fs::create_dir_all(tmp_dir).map_err(|e| RepoError::Local { path: tmp_dir.into(), cause: e })?;
        let mut file = tempfile::NamedTempFile::new_in(tmp_dir)
            .map_err(|e| RepoError::Local { path: tmp_dir.into(), cause: e })?;
        let mut blobs = std::pin::pin!(self.blob_stream(index, parse_blob_list(list, whose)?.into_iter()));
        while let Some(data) = futures::StreamExt::next(&mut blobs).await {
            file.write_all(&data?).map_err(|e| RepoError::Local { path: file.path().into(), cause: e })?;
        }
        file.flush().map_err(|e| RepoError::Local { path: file.path().into(), cause: e })?;
        Ok(file)
    }

    /// Fetch the deltas of a keyed table into temporary files, oldest first, opened for reading.
    pub async fn fetch_deltas(
        &self,
        index: &Index,
        keyed: &crate::generation::Keyed,
        whose: &str,
        tmp_dir: &Path,
    ) -> Result<Vec<std::fs::File>, RepoError> {
        let mut files = Vec::with_capacity(keyed.deltas.len());
        for d in &keyed.deltas {
            let f = self.fetch_to_file(index, &d.blobs, whose, tmp_dir).await?;
            // Reopened, so the data outlives the temporary name (unlinked on drop).
            let reopened = f.reopen().map_err(|e| RepoError::Local { path: f.path().into(), cause: e })?;
            files.push(reopened);
        }
        Ok(files)
    }

    /// For a table stored as a base and deltas, the [`Merger`] that turns its base's row stream
    /// into the table's rows at generation `whose` (the deltas are fetched into temporary files
    /// under `tmp_dir`); `None` for any other entry, whose blobs are already what they hold.
    pub async fn table_merger(
        &self,
        index: &Index,
        entry: &Entry,
        whose: &str,
        tmp_dir: &Path,
    ) -> Result<Option<Merger>, RepoError> {
        let Entry::Table { name, columns, rowid, keyed: Some(k), .. } = entry else { return Ok(None) };
        if k.deltas.is_empty() {
            return Ok(None);
        }
        let files = self.fetch_deltas(index, k, whose, tmp_dir).await?;
        let ncols = columns.len() + *rowid as usize;
        let deltas = Deltas::open(files, ncols, &k.key).map_err(|e| RepoError::Damaged {
            what: "table delta",
            key: format!("{whose}, table {name}"),
            cause: e.to_string(),
        })?;
        Ok(Some(Merger::new(deltas, Merge::Rows { ncols, key: k.key.clone() })))
    }

    /// Write one index file for packs that are already in the store. Returns its size.
    pub async fn write_index(&self, packs: &[([u8; 32], Vec<PackBlob>)]) -> Result<u64, RepoError> {
        let id = crate::time_sortable_id();
        let sealed = self.keys.seal(Kind::Index, &id, &index_plaintext(packs));
        let len = sealed.len() as u64;
        self.store.put(&layout::index(self.tenant(), &id), Body::Bytes(Bytes::from(sealed))).await?;
        Ok(len)
    }

    /// The packs in the store, by id, and the objects in the data folder that are not packs (a
    /// pack's key is `data/<first 2 hex digits>/<64 hex digits>`).
    pub async fn list_packs(&self) -> Result<(BTreeMap<[u8; 32], ObjectInfo>, Vec<ObjectInfo>), RepoError> {
        let mut packs = BTreeMap::new();
        let mut strangers = Vec::new();
        for obj in self.store.list(&self.data_prefix()).await? {
            match parse_id(obj.key.rsplit('/').next().unwrap_or_default()) {
                Some(id) if obj.key == self.pack_key(&id) => {
                    packs.insert(id, obj);
                }
                _ => strangers.push(obj),
            }
        }
        Ok((packs, strangers))
    }

    /// Generation ids, oldest first.
    pub async fn list_generations(&self) -> Result<Vec<String>, RepoError> {
        let prefix = layout::generations(self.tenant());
        Ok(self.store.list(&prefix).await?.into_iter().map(|o| o.key[prefix.len()..].to_string()).collect())
    }

    pub async fn load_generation(&self, id: &str) -> Result<Manifest, RepoError> {
        let key = self.generation_key(id);
        let sealed = match self.store.get(&key).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(RepoError::NoSuchGeneration { tenant: self.tenant().to_string(), id: id.to_string() })
            }
            Err(e) => return Err(e.into()),
        };
        let damaged = |cause: String| RepoError::Damaged { what: "generation manifest", key: key.clone(), cause };
        let plain = self.keys.open(Kind::Generation, id, &sealed).map_err(|e| damaged(e.to_string()))?;
        let m: Manifest = serde_json::from_slice(&plain).map_err(|e| damaged(e.to_string()))?;
        if m.id != id || m.tenant != self.tenant().as_str() {
            return Err(damaged("the manifest names another generation or tenant".into()));
        }
        Ok(m)
    }

    /// The generation `id`, or the newest one.
    pub async fn resolve_generation(&self, id: Option<&str>) -> Result<Manifest, RepoError> {
        match id {
            Some(id) => self.load_generation(id).await,
            None => {
                let all = self.list_generations().await?;
                let last = all.last().ok_or_else(|| RepoError::NoGenerations { tenant: self.tenant().to_string() })?;
                self.load_generation(last).await
            }
        }
    }

    pub fn hold_key(&self, generation: &str) -> String {
        layout::hold(self.tenant(), generation)
    }

    /// The legal holds, by generation id. A hold that does not open is returned as its error:
    /// the caller must still treat its generation as held.
    pub async fn list_holds(&self) -> Result<Vec<(String, Result<Hold, RepoError>)>, RepoError> {
        let prefix = layout::holds(self.tenant());
        let mut out = Vec::new();
        for obj in self.store.list(&prefix).await? {
            let id = obj.key[prefix.len()..].to_string();
            let hold = self.open_hold(&id, &self.store.get(&obj.key).await?);
            out.push((id, hold));
        }
        Ok(out)
    }

    /// The hold on `generation`, if there is one.
    pub async fn load_hold(&self, generation: &str) -> Result<Option<Hold>, RepoError> {
        match self.store.get(&self.hold_key(generation)).await {
            Ok(sealed) => self.open_hold(generation, &sealed).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn open_hold(&self, generation: &str, sealed: &[u8]) -> Result<Hold, RepoError> {
        let damaged = |cause: String| RepoError::Damaged { what: "legal hold", key: self.hold_key(generation), cause };
        let plain = self.keys.open(Kind::Hold, generation, sealed).map_err(|e| damaged(e.to_string()))?;
        let hold: Hold = serde_json::from_slice(&plain).map_err(|e| damaged(e.to_string()))?;
        if hold.generation != generation {
            return Err(damaged("the hold names another generation".into()));
        }
        Ok(hold)
    }

    /// Place (or replace) the hold on its generation.
    pub async fn write_hold(&self, hold: &Hold) -> Result<(), RepoError> {
        let sealed = self.keys.seal(Kind::Hold, &hold.generation, &serde_json::to_vec(hold).expect("hold serializes"));
        self.store.put(&self.hold_key(&hold.generation), Body::Bytes(Bytes::from(sealed))).await?;
        Ok(())
    }

    pub async fn delete_hold(&self, generation: &str) -> Result<(), RepoError> {
        Ok(self.store.delete(&self.hold_key(generation)).await?)
    }

    /// Remove a generation's manifest, which makes it invisible (`forget`). Its packs stay
    /// until prune finds nothing else references them.
    pub async fn delete_generation(&self, id: &str) -> Result<(), RepoError> {
        Ok(self.store.delete(&self.generation_key(id)).await?)
    }

    /// Write the manifest: the last write of a backup, which makes the generation visible.
    /// Write the manifest, which makes the generation exist. Returns the SHA-256 (hex) of the
    /// sealed object, as the audit log records what a backup produced.
    pub async fn write_generation(&self, m: &Manifest) -> Result<String, RepoError> {
        let sealed = self.keys.seal(Kind::Generation, &m.id, &serde_json::to_vec(m).expect("manifest serializes"));
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&sealed));
        let key = self.generation_key(&m.id);
        // A generation is immutable: never overwrite one.
        if !self.store.create_if_absent(&key, Bytes::from(sealed)).await? {
            return Err(RepoError::Damaged { what: "generation", key, cause: "already exists".into() });
        }
        Ok(sha256)
    }
}

fn index_plaintext(packs: &[([u8; 32], Vec<PackBlob>)]) -> Vec<u8> {
    let file = IndexFile {
        packs: packs
            .iter()
            .map(|(id, blobs)| IndexPack {
                id: hex::encode(id),
                blobs: blobs.iter().map(|b| (hex::encode(b.id), b.offset, b.length)).collect(),
            })
            .collect(),
    };
    serde_json::to_vec(&file).expect("index serializes")
}

/// The size [`Repository::write_index`] gives the index file of `packs`, without sealing it
/// (what `prune --dry-run` reports). Pack ids only matter by their length.
pub fn index_file_len(packs: &[([u8; 32], Vec<PackBlob>)]) -> u64 {
    crate::crypto::sealed_len(index_plaintext(packs).len()) as u64
}

/// zstd's level for blobs. Level -1 compresses the bench tenant's database 1.5 times faster than
/// level 1 (630 against 410 MB/s here) for 0.6% more bytes; compression is most of a sealer's
/// work on a database, and the bytes stored barely move.
const ZSTD_LEVEL: i32 = -1;
/// Chunks at least this long are probed before they are compressed (see `BlobSealer::compresses`).
const PROBE_FROM: usize = 256 * 1024;
/// The probe: this many bytes from each of [`PROBE_SLICES`] places spread over the chunk.
const PROBE_SLICE: usize = 16 * 1024;
const PROBE_SLICES: usize = 4;

/// Compresses blobs for one thread, reusing its zstd context and output buffer.
pub struct BlobSealer {
    zstd: zstd::bulk::Compressor<'static>,
    buf: Vec<u8>,
    probe: Vec<u8>,
}

impl Default for BlobSealer {
    fn default() -> Self {
        Self::new()
    }
}

impl BlobSealer {
    pub fn new() -> BlobSealer {
        let zstd = zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("the zstd level is valid");
        BlobSealer { zstd, buf: Vec::new(), probe: Vec::new() }
    }

    /// Seal a blob and append it to `out`: a one-byte codec flag (0 raw, 1 zstd) and the payload.
    /// Compression is kept only when it saves at least 1/32 of the bytes; incompressible data is
    /// stored raw so that restore does not pay for a useless decompression.
    pub fn seal_into(&mut self, keys: &TenantKeys, id: &BlobId, plain: &[u8], out: &mut Vec<u8>) {
        let id = hex::encode(id);
        if self.compresses(plain) {
            keys.seal_into(Kind::Blob, &id, &[&[1u8], &self.buf], out);
        } else {
            keys.seal_into(Kind::Blob, &id, &[&[0u8], plain], out);
        }
    }

    /// Whether `plain` is worth compressing; if so, `self.buf` holds it compressed.
    ///
    /// A large chunk is first probed: a few slices of it, compressed together, must save 1/32.
    /// Why: scans, photos and PDFs are most of a tenant's bytes and do not compress, and zstd
    /// still spends a third of a second per 600 MB finding that out. A chunk that fails the
    /// probe but would have compressed elsewhere is only stored larger, never wrongly. (The
    /// export's `archive::worth_compressing` guesses from an entry's first 64 KiB instead: that
    /// is all it has when it must choose; a sealer has the whole chunk, so it samples across it.)
    fn compresses(&mut self, plain: &[u8]) -> bool {
        if plain.len() >= PROBE_FROM {
            self.probe.clear();
            let step = (plain.len() - PROBE_SLICE) / (PROBE_SLICES - 1);
            for i in 0..PROBE_SLICES {
                self.probe.extend_from_slice(&plain[i * step..i * step + PROBE_SLICE]);
            }
            if !shrinks(&mut self.zstd, &self.probe, &mut self.buf) {
                return false;
            }
        }
        shrinks(&mut self.zstd, plain, &mut self.buf)
    }
}

/// Compress `data` into `out`; whether that saved at least 1/32 of it.
fn shrinks(zstd: &mut zstd::bulk::Compressor<'static>, data: &[u8], out: &mut Vec<u8>) -> bool {
    let limit = data.len() - data.len() / 32;
    out.clear();
    out.reserve(zstd::zstd_safe::compress_bound(data.len()));
    match zstd.compress_to_buffer(data, out) {
        Ok(n) => n < limit,
        Err(_) => false,
    }
}

/// [`open_blob`] off the async threads (decryption and decompression are CPU work); a damaged
/// blob is named with its pack.
async fn open_sealed(
    keys: Arc<TenantKeys>,
    pack_key: Arc<str>,
    id: BlobId,
    sealed: Bytes,
) -> Result<Vec<u8>, RepoError> {
    tokio::task::spawn_blocking(move || {
        open_blob(&keys, &id, &sealed).map_err(|cause| damaged_blob(&pack_key, &id, cause))
    })
    .await
    .expect("blob decryption task panicked")
}

/// A blob of the pack `pack_key` that does not open, named with its pack.
fn damaged_blob(pack_key: &str, id: &BlobId, cause: String) -> RepoError {
    RepoError::Damaged { what: "blob", key: format!("{pack_key} (blob {})", hex::encode(id)), cause }
}

/// Open a sealed blob and check that its content is the blob the id names.
pub fn open_blob(keys: &TenantKeys, id: &BlobId, sealed: &[u8]) -> Result<Vec<u8>, String> {
    let payload = keys.open(Kind::Blob, &hex::encode(id), sealed).map_err(|e: OpenError| e.to_string())?;
    let plain = match payload.split_first() {
        Some((0, rest)) => rest.to_vec(),
        Some((1, rest)) => zstd::stream::decode_all(rest).map_err(|e| format!("does not decompress: {e}"))?,
        _ => return Err("unknown codec flag".into()),
    };
    if keys.blob_id(&plain) != *id {
        return Err("content does not match its id".into());
    }
    Ok(plain)
}

/// The blob ids a catalog entry of generation `generation` lists, parsed; a malformed one
/// means the catalog is damaged.
pub fn parse_blob_list(list: &[String], generation: &str) -> Result<Vec<BlobId>, RepoError> {
    list.iter()
        .map(|b| {
            parse_id(b).ok_or_else(|| RepoError::Damaged {
                what: "generation catalog",
                key: generation.into(),
                cause: format!("bad blob id {b}"),
            })
        })
        .collect()
}

pub fn parse_blob_id(s: &str) -> Option<BlobId> {
    parse_id(s)
}

/// A generation's catalog in a local temporary file (removed on drop).
pub struct Catalog {
    file: tempfile::NamedTempFile,
    key: String,
}

impl Catalog {
    /// The entries in order. A line that does not parse names the generation as damaged.
    pub fn entries(&self) -> Result<impl Iterator<Item = Result<Entry, RepoError>> + '_, RepoError> {
        let f = std::fs::File::open(self.file.path())
            .map_err(|e| RepoError::Local { path: self.file.path().into(), cause: e })?;
        Ok(std::io::BufReader::new(f).lines().enumerate().map(move |(n, line)| {
            let line = line.map_err(|e| RepoError::Local { path: self.file.path().into(), cause: e })?;
            serde_json::from_str(&line).map_err(|e| RepoError::Damaged {
                what: "generation catalog",
                key: self.key.clone(),
                cause: format!("entry {}: {e}", n + 1),
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// The codec flag of a sealed blob, after checking that it opens to `plain`.
    fn codec(keys: &TenantKeys, plain: &[u8]) -> u8 {
        let id = keys.blob_id(plain);
        let mut sealed = Vec::new();
        BlobSealer::new().seal_into(keys, &id, plain, &mut sealed);
        assert_eq!(open_blob(keys, &id, &sealed).expect("the blob opens"), plain);
        keys.open(Kind::Blob, &hex::encode(id), &sealed).expect("opens")[0]
    }

    fn random(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        rand::rng().fill(&mut v[..]);
        v
    }

    fn text(n: usize) -> Vec<u8> {
        b"il comune di richiesta del cittadino protocollo ufficio tributi\n".iter().copied().cycle().take(n).collect()
    }

    #[test]
    fn incompressible_chunks_are_stored_raw_and_compressible_ones_compressed() {
        let keys = TenantKeys::for_tests("t1");
        for len in [1, 100 << 10, PROBE_FROM, 1 << 20, (4 << 20) - 7] {
            assert_eq!(codec(&keys, &random(len)), 0, "random, {len} bytes");
            assert_eq!(codec(&keys, &text(len)), if len < 64 { 0 } else { 1 }, "text, {len} bytes");
        }
    }

    /// The trade the probe makes, on purpose: text everywhere except where the probe looks.
    #[test]
    fn a_chunk_that_is_random_where_the_probe_looks_is_stored_raw() {
        let keys = TenantKeys::for_tests("t1");
        let len = 1 << 20;
        let mut chunk = text(len);
        let step = (len - PROBE_SLICE) / (PROBE_SLICES - 1);
        for i in 0..PROBE_SLICES {
            chunk[i * step..i * step + PROBE_SLICE].copy_from_slice(&random(PROBE_SLICE));
        }
        assert!(zstd::bulk::compress(&chunk, ZSTD_LEVEL).unwrap().len() < len / 2, "the whole would compress");
        assert_eq!(codec(&keys, &chunk), 0);
    }

    #[test]
    fn a_chunk_compressible_in_places_passes_the_probe() {
        let keys = TenantKeys::for_tests("t1");
        // Random but for its last quarter: the probe's last slice finds the text, and the
        // whole chunk saves more than 1/32.
        let mut mixed = random(3 << 18);
        mixed.extend(text(1 << 18));
        assert_eq!(codec(&keys, &mixed), 1);
        // Text with random rows through it, like a table of signatures and notes.
        let rows: Vec<u8> = (0..8192).flat_map(|_| [random(48), text(80)].concat()).collect();
        assert_eq!(codec(&keys, &rows), 1);
    }
}
