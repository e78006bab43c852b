//! `check`: does every reference in a tenant's repository resolve, and (with `--read-data`) does
//! every blob decrypt and match its id? Every damaged object is named; nothing is changed, except
//! that `--repair` aborts the multipart uploads an interrupted backup or export left behind
//! ([`leftover_uploads`]).
//!
//! Rolling checks (`--read-data-subset`) read part of the packs each run. The agent records
//! which packs it verified and when ([`VerifyRecord`], local state), so a share (`5%`) reads the
//! packs verified longest ago first and successive runs cover the whole repository; every report
//! says how much of the repository was verified in the last [`RECENT_DAYS`] days.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;

use super::{Agent, Result};
use crate::generation::delta::{RecordCount, Shape};
use crate::generation::Entry;
use crate::keys::{BlobId, TenantKeys};
use crate::progress::Progress;
use crate::repository::lock::{LockError, TenantLock};
use crate::repository::pack::read_header;
use crate::repository::{open_blob, parse_blob_id, Index, RepoError, Repository};
use crate::tenant::TenantId;

/// A pack verified within this many days counts as recently verified.
pub const RECENT_DAYS: i64 = 30;

/// What `check` is asked (the daemon takes the same as a request body).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckOptions {
    /// Which packs to read and verify besides checking every reference.
    #[serde(default)]
    pub read_data: ReadData,
    /// Abort the multipart uploads interrupted runs left (the tenant's under its lock).
    #[serde(default)]
    pub repair: bool,
}

/// Which packs a check reads, decrypts and verifies.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ReadData {
    /// None: only the references are checked.
    #[default]
    None,
    /// Every pack (`--read-data`).
    All,
    /// Part of them (`--read-data-subset`).
    Subset(Subset),
}

/// `--read-data-subset`: a share of the pack bytes, or one fixed slice of the packs. Written
/// as on the command line (`"5%"`, `"1/20"`) in a request body too.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Subset {
    /// At least this percentage of the pack bytes, the packs verified longest ago first (those
    /// never verified, or that failed, before all others).
    Percent(f64),
    /// The `n`-th of `of` slices (restic's meaning): the packs whose id, read as a number,
    /// leaves `n - 1` divided by `of`. Fixed by pack id, so `1/7` to `7/7` on the days of a
    /// week cover every pack.
    Slice { n: u64, of: u64 },
}

impl std::str::FromStr for Subset {
    type Err = String;

    fn from_str(s: &str) -> Result<Subset, String> {
        let usage = |why: &str| {
            format!(
                "{s:?} is not a subset ({why}); give a share of the pack bytes such as 5% (the packs \
                 verified longest ago first) or a slice n/t such as 1/20 (the 1st of 20 fixed slices)"
            )
        };
        if let Some(p) = s.trim().strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| usage("no number before %"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(usage("a share is above 0% and at most 100%"));
            }
            Ok(Subset::Percent(p))
        } else if let Some((n, of)) = s.trim().split_once('/') {
            let (n, of): (u64, u64) = match (n.trim().parse(), of.trim().parse()) {
                (Ok(n), Ok(of)) => (n, of),
                _ => return Err(usage("n and t are whole numbers")),
            };
            if n == 0 || n > of {
                return Err(usage("a slice n/t needs 1 <= n <= t"));
            }
            Ok(Subset::Slice { n, of })
        } else {
            Err(usage("it is neither N% nor n/t"))
        }
    }
}

impl TryFrom<String> for Subset {
    type Error = String;

    fn try_from(s: String) -> Result<Subset, String> {
        s.parse()
    }
}

impl From<Subset> for String {
    fn from(s: Subset) -> String {
        s.to_string()
    }
}

impl std::fmt::Display for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subset::Percent(p) => write!(f, "{p}%"),
            Subset::Slice { n, of } => write!(f, "{n}/{of}"),
        }
    }
}

impl Subset {
    /// The packs to read, from the packs in the store and when each was last verified.
    fn select(&self, stored: &HashMap<[u8; 32], u64>, verified: &HashMap<[u8; 32], i64>) -> Vec<[u8; 32]> {
        match *self {
            Subset::Slice { n, of } => {
                let mut ids: Vec<[u8; 32]> = stored
                    .keys()
                    .filter(|id| u64::from_be_bytes(id[..8].try_into().expect("8 bytes")) % of == n - 1)
                    .copied()
                    .collect();
                ids.sort();
                ids
            }
            Subset::Percent(p) => {
                let total: u64 = stored.values().sum();
                let want = (total as f64 * p / 100.0).ceil() as u64;
                // Never verified (None) sorts first, then the longest ago; ids break ties.
                let mut order: Vec<(Option<i64>, [u8; 32])> =
                    stored.keys().map(|id| (verified.get(id).copied(), *id)).collect();
                order.sort();
                let mut taken = 0u64;
                let mut ids = Vec::new();
                for (_, id) in order {
                    if taken >= want && !ids.is_empty() {
                        break;
                    }
                    taken += stored[&id];
                    ids.push(id);
                }
                ids.sort();
                ids
            }
        }
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub tenant: String,
    pub generations: usize,
    pub index_files: usize,
    pub packs: usize,
    pub blobs: usize,
    /// The subset read with `--read-data-subset` (`5%`, `1/20`).
    pub subset: Option<String>,
    /// Packs read, blobs decrypted and verified, bytes read (with --read-data or a subset).
    pub packs_read: usize,
    pub blobs_read: u64,
    pub bytes_read: u64,
    /// Bytes of all the packs in the store.
    pub pack_bytes: u64,
    /// Bytes of the packs in the store that a check of this agent verified in the last
    /// [`RECENT_DAYS`] days, and their share of `pack_bytes` in percent.
    pub verified_recently_bytes: u64,
    pub verified_recently_percent: f64,
    /// Packs no index file lists: left by an interrupted backup, harmless, removed by prune.
    pub unreferenced_packs: Vec<String>,
    /// Every damaged or missing object, named.
    pub problems: Vec<String>,
    /// Multipart uploads under the tenant's folder that were never completed (S3 only).
    pub leftover_uploads: Vec<LeftoverUpload>,
    /// The store's keystore snapshots, checked once per run (the same in every tenant's report).
    pub keystore: Option<crate::keys::SnapshotCheck>,
}

/// An upload left by an interrupted backup, and what `check` did about it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeftoverUpload {
    pub key: String,
    pub upload_id: String,
    /// When it was started (RFC 3339, UTC).
    pub initiated: String,
    /// "left", "aborted", or "kept: <why>".
    pub action: String,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Check one tenant's repository (the store's keystore snapshots are checked once per run, by
/// [`Agent::check_keystore`]).
pub(crate) async fn check(
    agent: &Agent,
    repo: &Repository,
    opts: &CheckOptions,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let read = opts.read_data;
    let tenant = repo.tenant();
    let mut report = CheckReport { tenant: tenant.to_string(), ..Default::default() };
    if let ReadData::Subset(s) = read {
        report.subset = Some(s.to_string());
    }
    // Generations first: a manifest is written after its index, so every generation listed now
    // has its blobs in the index read next, even while a backup runs.
    let generations = repo.list_generations().await?;
    let (index, damaged) = repo.load_index_tolerant().await?;
    report.problems.extend(damaged.into_iter().map(|e| e.to_string()));
    report.index_files = index.files.len();
    report.blobs = index.blobs.len();
    let (stored, mut found) = check_packs(repo, &index, &mut report).await?;
    check_holds(repo, &mut report).await?;

    let now = crate::now().as_second();
    let packs = Packs { repo, index: &index, stored: &stored };
    let verified = packs.read(&agent.config.state.dir, read, now, progress, &mut report, &mut found).await;
    progress.done();

    // Every generation and every blob it references, after the packs were read: damage found
    // there is named with what it costs (the generations and the tables or files using it).
    let tmp = agent.scratch(tenant);
    report.generations = generations.len();
    let mut counts = RowCounts::default();
    for g in &generations {
        let walk = Walk { repo: &repo, index: &index, found: &found, count_rows: read == ReadData::All };
        if let Err(e) = walk.generation(g, &tmp, &mut counts, &mut report.problems).await {
            report.problems.push(format!("generation {g}: {e}"));
        }
    }
    counts.verify(&repo, &index, &found, &mut report.problems).await;

    let since = now - RECENT_DAYS * 24 * 3600;
    report.verified_recently_bytes =
        stored.iter().filter(|(id, _)| verified.get(*id).is_some_and(|t| *t >= since)).map(|(_, size)| size).sum();
    report.verified_recently_percent = match report.pack_bytes {
        0 => 100.0,
        total => report.verified_recently_bytes as f64 * 100.0 / total as f64,
    };
    report.problems.dedup();
    report.leftover_uploads = leftover_uploads(agent, tenant, opts.repair).await?;
    Ok(report)
}

/// The packs of a repository, as the index and the store list them.
struct Packs<'a> {
    repo: &'a Repository,
    index: &'a Index,
    stored: &'a HashMap<[u8; 32], u64>,
}

impl Packs<'_> {
    /// Read and verify the packs `read` selects, and record the outcomes. Returns when each
    /// pack was last verified, this run included.
    async fn read(
        &self,
        state_dir: &Path,
        read: ReadData,
        now: i64,
        progress: &dyn Progress,
        report: &mut CheckReport,
        found: &mut Found,
    ) -> HashMap<[u8; 32], i64> {
        let mut record = VerifyRecord::open(state_dir, self.repo.keys.clone());
        let mut verified = record.load();
        let selected = match read {
            ReadData::None => return verified,
            ReadData::All => {
                let mut ids: Vec<[u8; 32]> = self.stored.keys().copied().collect();
                ids.sort();
                ids
            }
            ReadData::Subset(s) => s.select(self.stored, &verified),
        };
        let total: u64 = selected.iter().map(|id| self.stored[id]).sum();
        progress.phase(&format!("check {}", self.repo.tenant()), Some(total));
        let outcomes = read_packs(self.repo, self.index, selected, progress, report, found).await;
        record.save(&outcomes, self.stored, now);
        for (id, ok) in outcomes {
            match ok {
                true => verified.insert(id, now),
                false => verified.remove(&id),
            };
        }
        verified
    }
}

/// What reading the packs found about blobs: which are damaged (and why), and the plaintext
/// length of each one opened.
#[derive(Default)]
struct Found {
    damaged: HashMap<BlobId, String>,
    lengths: HashMap<BlobId, u32>,
}

/// The packs in the store against the index: packs missing or shorter than the index says
/// (their blobs are damaged), unreferenced packs, strangers. Returns the packs by id and size.
async fn check_packs(
    repo: &Repository,
    index: &Index,
    report: &mut CheckReport,
) -> Result<(HashMap<[u8; 32], u64>, Found)> {
    let (packs, strangers) = repo.list_packs().await?;
    let stored: HashMap<[u8; 32], u64> = packs.into_iter().map(|(id, obj)| (id, obj.size)).collect();
    for obj in strangers {
        report.problems.push(format!("{}: not a pack (unexpected object in the data folder)", obj.key));
    }
    report.packs = stored.len();
    report.pack_bytes = stored.values().sum();
    let indexed: HashSet<[u8; 32]> = index.packs.iter().copied().collect();
    for (id, size) in &stored {
        if !indexed.contains(id) {
            report.unreferenced_packs.push(format!("{} ({size} bytes)", repo.pack_key(id)));
        }
    }
    report.unreferenced_packs.sort();
    let mut found = Found::default();
    for (id, loc) in &index.blobs {
        let pack = repo.pack_key(&index.packs[loc.pack as usize]);
        let end = loc.offset + loc.length as u64;
        let problem = match stored.get(&index.packs[loc.pack as usize]) {
            None => format!("{pack}: missing (the index lists blob {} in it)", hex::encode(id)),
            Some(size) if end > *size => format!(
                "{pack}: shorter than the index says (blob {} ends at byte {end}, the pack has {size})",
                hex::encode(id)
            ),
            _ => continue,
        };
        report.problems.push(problem);
        found.damaged.insert(*id, format!("its pack {pack} is missing or cut short"));
    }
    Ok((stored, found))
}

/// Every legal hold: one that does not open still holds its generation (forget keeps it), but
/// it is damage all the same.
async fn check_holds(repo: &Repository, report: &mut CheckReport) -> Result<()> {
    for (_, hold) in repo.list_holds().await? {
        if let Err(e) = hold {
            report.problems.push(e.to_string());
        }
    }
    Ok(())
}

/// One pass over the generations' catalogs.
struct Walk<'a> {
    repo: &'a Repository,
    index: &'a Index,
    found: &'a Found,
    /// Also collect the row streams to count (`--read-data`).
    count_rows: bool,
}

impl Walk<'_> {
    /// Every blob of every entry: in the index, not damaged, and (for a file whose blobs were
    /// all read) adding up to its size.
    async fn generation(
        &self,
        id: &str,
        tmp: &Path,
        counts: &mut RowCounts,
        problems: &mut Vec<String>,
    ) -> Result<(), RepoError> {
        let m = self.repo.load_generation(id).await?;
        let catalog = self.repo.fetch_catalog(self.index, &m, tmp).await?;
        for entry in catalog.entries()? {
            let entry = entry?;
            for (what, blobs) in entry.blob_lists() {
                for b in blobs {
                    match parse_blob_id(b) {
                        Some(bid) if !self.index.contains(&bid) => {
                            problems.push(format!("generation {id}: {what}: blob {b} is not in any index (data lost)"))
                        }
                        Some(bid) => {
                            if let Some(why) = self.found.damaged.get(&bid) {
                                problems
                                    .push(format!("generation {id}: {what}: uses blob {b}, which is damaged ({why})"));
                            }
                        }
                        None => problems.push(format!("generation {id}: {what}: {b:?} is not a blob id")),
                    }
                }
            }
            match &entry {
                Entry::File { path, size, blobs, .. } => {
                    if let Some(sum) = self.known_length(blobs) {
                        if sum != *size {
                            problems.push(format!(
                                "generation {id}: file {}: its blobs hold {sum} bytes, the catalog says {size}",
                                path.display()
                            ));
                        }
                    }
                }
                Entry::Table { .. } if self.count_rows => counts.add(id, &entry, problems),
                _ => {}
            }
        }
        Ok(())
    }

    /// The sum of the plaintext lengths of `blobs`, if every one was read.
    fn known_length(&self, blobs: &[String]) -> Option<u64> {
        blobs.iter().map(|b| parse_blob_id(b).and_then(|id| self.found.lengths.get(&id)).map(|l| *l as u64)).sum()
    }
}

/// The distinct row streams of the generations' tables (bases and deltas are shared between
/// generations, so each is counted once), with the counts the catalogs give for them.
#[derive(Default)]
struct RowCounts {
    /// A stream and the counts expected of it: two tables with the same stream (two empty
    /// ones) are both checked when the catalogs expect different counts.
    seen: HashSet<(Vec<String>, u64, u64)>,
    streams: Vec<Counted>,
}

struct Counted {
    what: String,
    shape: Shape,
    blobs: Vec<String>,
    /// Rows (or upserts) and deletes the catalog says the stream holds.
    expected: (u64, u64),
}

impl RowCounts {
    /// The table entry's streams, and the arithmetic of its counts: a keyed table holds its
    /// base's rows plus those its deltas inserted, less those they deleted.
    fn add(&mut self, generation: &str, entry: &Entry, problems: &mut Vec<String>) {
        let Entry::Table { name, columns, rowid, rows, blobs, keyed, .. } = entry else { return };
        let ncols = columns.len() + *rowid as usize;
        let base_rows = keyed.as_ref().map_or(*rows, |k| k.base_rows);
        self.push(format!("table {name} (generation {generation})"), Shape::Rows { ncols }, blobs, (base_rows, 0));
        let Some(k) = keyed else { return };
        let (inserted, deleted): (u64, u64) =
            k.deltas.iter().map(|d| (d.inserted, d.deleted)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        if k.base_rows + inserted < deleted || k.base_rows + inserted - deleted != *rows {
            problems.push(format!(
                "generation {generation}: table {name}: the catalog says {rows} rows, but its base has {} and its \
                 deltas insert {inserted} and delete {deleted}",
                k.base_rows
            ));
        }
        let shape = Shape::Delta { ncols, key_len: k.key.len() };
        for d in &k.deltas {
            let what = format!("table {name} (delta of {})", d.generation);
            self.push(what, shape, &d.blobs, (d.inserted + d.updated, d.deleted));
        }
    }

    fn push(&mut self, what: String, shape: Shape, blobs: &[String], expected: (u64, u64)) {
        if self.seen.insert((blobs.to_vec(), expected.0, expected.1)) {
            self.streams.push(Counted { what, shape, blobs: blobs.to_vec(), expected });
        }
    }

    /// Read every stream and compare its counts. A stream with a damaged blob is skipped: that
    /// blob is already named.
    async fn verify(self, repo: &Repository, index: &Index, found: &Found, problems: &mut Vec<String>) {
        for c in self.streams {
            let Ok(ids) = c.blobs.iter().map(|b| parse_blob_id(b).ok_or(())).collect::<Result<Vec<_>, ()>>() else {
                continue;
            };
            if ids.iter().any(|id| found.damaged.contains_key(id) || !index.contains(id)) {
                continue;
            }
            match count_stream(repo, index, ids, c.shape).await {
                Ok(got) if got == c.expected => {}
                Ok((rows, deletes)) => problems.push(match c.shape {
                    Shape::Rows { .. } => {
                        format!("{}: its rows stream holds {rows} rows, the catalog says {}", c.what, c.expected.0)
                    }
                    Shape::Delta { .. } => format!(
                        "{}: it holds {rows} upserts and {deletes} deletes, the catalog says {} and {}",
                        c.what, c.expected.0, c.expected.1
                    ),
                }),
                Err(e) => problems.push(format!("{}: {e}", c.what)),
            }
        }
    }
}

async fn count_stream(repo: &Repository, index: &Index, ids: Vec<BlobId>, shape: Shape) -> Result<(u64, u64), String> {
    let mut count = RecordCount::new(shape);
    let mut blobs = std::pin::pin!(repo.blob_stream(index, ids.into_iter()));
    while let Some(b) = blobs.next().await {
        count.push(&b.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    count.finish().map_err(|e| e.to_string())
}

/// A blob as the index places it in a pack: id, offset, length.
type PackBlobEntry = ([u8; 32], u64, u32);

/// Read the packs `ids` whole, open each one's header and every blob in it, and compare with
/// the index. Returns, per pack, whether it was verified without a problem; the damaged blobs
/// and the length of every blob opened go into `found`.
async fn read_packs(
    repo: &Repository,
    index: &Index,
    ids: Vec<[u8; 32]>,
    progress: &dyn Progress,
    report: &mut CheckReport,
    found: &mut Found,
) -> Vec<([u8; 32], bool)> {
    // What the index says each pack holds, to compare with the pack's own header.
    let mut expected: HashMap<[u8; 32], Vec<PackBlobEntry>> = HashMap::new();
    for (bid, loc) in &index.blobs {
        expected.entry(index.packs[loc.pack as usize]).or_default().push((*bid, loc.offset, loc.length));
    }
    let mut outcomes = Vec::with_capacity(ids.len());
    let mut packs = futures::stream::iter(ids)
        .map(|id| async move {
            let key = repo.pack_key(&id);
            let bytes = repo.store.get(&key).await;
            (id, key, bytes)
        })
        .buffered(2);
    while let Some((id, key, bytes)) = packs.next().await {
        let want = expected.remove(&id).unwrap_or_default();
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                report.problems.push(format!("{key}: {e}"));
                found.damaged.extend(want.iter().map(|w| (w.0, format!("its pack {key} cannot be read"))));
                outcomes.push((id, false));
                continue;
            }
        };
        report.packs_read += 1;
        progress.bytes(bytes.len() as u64);
        report.bytes_read += bytes.len() as u64;
        let keys = repo.keys.clone();
        let read = tokio::task::spawn_blocking(move || verify_pack(&keys, &key, &bytes, &want))
            .await
            .expect("check task panicked");
        report.blobs_read += read.blobs;
        outcomes.push((id, read.problems.is_empty()));
        report.problems.extend(read.problems);
        found.damaged.extend(read.damaged);
        found.lengths.extend(read.lengths);
    }
    outcomes
}

/// What verifying one pack found.
struct PackRead {
    blobs: u64,
    problems: Vec<String>,
    damaged: Vec<(BlobId, String)>,
    lengths: Vec<(BlobId, u32)>,
}

/// Open a pack's header and every blob in it, and compare with what the index says it holds.
fn verify_pack(keys: &TenantKeys, key: &str, bytes: &[u8], want: &[PackBlobEntry]) -> PackRead {
    let mut read = PackRead { blobs: 0, problems: Vec::new(), damaged: Vec::new(), lengths: Vec::new() };
    let hex_id = key.rsplit('/').next().unwrap_or(key);
    let blobs = match read_header(keys, hex_id, bytes) {
        Ok(blobs) => blobs,
        Err(e) => {
            read.problems.push(format!("{key}: {e}"));
            read.damaged.extend(want.iter().map(|w| (w.0, format!("the header of its pack {key} is damaged"))));
            return read;
        }
    };
    let have: HashSet<PackBlobEntry> = blobs.iter().map(|b| (b.id, b.offset, b.length)).collect();
    for w in want {
        if !have.contains(w) {
            read.problems
                .push(format!("{key}: the index lists blob {} here, the pack does not hold it", hex::encode(w.0)));
            read.damaged.push((w.0, format!("its pack {key} does not hold it")));
        }
    }
    for b in blobs {
        let end = b.offset + b.length as u64;
        let Some(sealed) = bytes.get(b.offset as usize..end as usize) else {
            read.problems.push(format!("{key}: blob {} lies past the end of the pack", hex::encode(b.id)));
            read.damaged.push((b.id, format!("it lies past the end of its pack {key}")));
            continue;
        };
        read.blobs += 1;
        match open_blob(keys, &b.id, sealed) {
            Ok(plain) => read.lengths.push((b.id, plain.len() as u32)),
            Err(cause) => {
                read.problems.push(format!("{key}: blob {} is damaged: {cause}", hex::encode(b.id)));
                read.damaged.push((b.id, format!("it does not open in pack {key}")));
            }
        }
    }
    read
}

/// When each pack of one tenant was last verified: `<state>/checks/<tenant>.sqlite`, one row per
/// pack (`id`, `verified` and `failed` in Unix seconds). A pack that fails has `verified`
/// cleared, so the next rolling check reads it first. Each run's results are written in one
/// transaction, so a killed check leaves the previous record whole. The record is only a
/// schedule: one that cannot be read is set aside and started afresh, which means re-verifying.
/// A verification time decides that a pack is skipped, so each row carries a MAC under the
/// tenant's key over its pack and time: a row edited to claim a verification counts as none.
pub struct VerifyRecord {
    path: PathBuf,
    db: Option<rusqlite::Connection>,
    keys: Arc<TenantKeys>,
}

/// What a record row's MAC is bound to (see [`TenantKeys::state_mac`]).
const RECORD_MAC: &str = "verified-packs";

fn record_mac(keys: &TenantKeys, id: &str, verified: i64) -> [u8; 32] {
    keys.state_mac(RECORD_MAC, &[id.as_bytes(), &verified.to_le_bytes()])
}

fn record_mac_ok(keys: &TenantKeys, id: &str, verified: i64, mac: Option<&[u8]>) -> bool {
    mac.is_some_and(|m| keys.verify_state_mac(RECORD_MAC, &[id.as_bytes(), &verified.to_le_bytes()], m))
}

impl VerifyRecord {
    pub fn open(state_dir: &Path, keys: Arc<TenantKeys>) -> VerifyRecord {
        let dir = state_dir.join("checks");
        let path = dir.join(format!("{}.sqlite", keys.tenant));
        let db = std::fs::create_dir_all(&dir)
            .map_err(|e| e.to_string())
            .and_then(|()| Self::connect(&path).map_err(|e| e.to_string()))
            .or_else(|cause| {
                tracing::warn!(record = %path.display(), %cause, "the record of verified packs is damaged; starting a new one (every pack counts as not verified)");
                for suffix in ["", "-journal", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
                Self::connect(&path).map_err(|e| e.to_string())
            });
        match db {
            Ok(db) => VerifyRecord { path, db: Some(db), keys },
            Err(cause) => {
                tracing::warn!(record = %path.display(), %cause, "cannot keep a record of verified packs; rolling checks will not know what was verified before");
                VerifyRecord { path, db: None, keys }
            }
        }
    }

    fn connect(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
        let db = rusqlite::Connection::open(path)?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS packs (id TEXT PRIMARY KEY, verified INTEGER, failed INTEGER, mac BLOB) STRICT",
        )?;
        // Reading every row is what `load` does next; a file that is not a database, or a
        // record from before rows had a MAC, fails here.
        db.query_row("SELECT count(mac) FROM packs", [], |r| r.get::<_, i64>(0))?;
        Ok(db)
    }

    /// When each pack was last verified (packs never verified, or that failed since, are absent).
    pub fn load(&self) -> HashMap<[u8; 32], i64> {
        let Some(db) = &self.db else { return HashMap::new() };
        let rows = db.prepare("SELECT id, verified, mac FROM packs WHERE verified IS NOT NULL").and_then(|mut st| {
            st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<Vec<u8>>>(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        });
        match rows {
            Ok(rows) => {
                let n = rows.len();
                let good: HashMap<[u8; 32], i64> = rows
                    .into_iter()
                    .filter(|(id, t, mac)| record_mac_ok(&self.keys, id, *t, mac.as_deref()))
                    .filter_map(|(id, t, _)| parse_blob_id(&id).map(|id| (id, t)))
                    .collect();
                if good.len() < n {
                    tracing::warn!(record = %self.path.display(), rows = n - good.len(), "rows of the record of verified packs do not match their MAC (altered or damaged); those packs count as not verified");
                }
                good
            }
            Err(cause) => {
                tracing::warn!(record = %self.path.display(), %cause, "cannot read the record of verified packs; every pack counts as not verified");
                HashMap::new()
            }
        }
    }

    /// Record this run's outcomes at `now`, and forget packs no longer in the store.
    pub fn save(&mut self, outcomes: &[([u8; 32], bool)], stored: &HashMap<[u8; 32], u64>, now: i64) {
        let Some(db) = &mut self.db else { return };
        let result = (|| -> rusqlite::Result<()> {
            let tx = db.transaction()?;
            {
                let mut ok = tx.prepare(
                    "INSERT INTO packs (id, verified, failed, mac) VALUES (?1, ?2, NULL, ?3) \
                     ON CONFLICT (id) DO UPDATE SET verified = excluded.verified, mac = excluded.mac",
                )?;
                let mut failed = tx.prepare(
                    "INSERT INTO packs (id, verified, failed, mac) VALUES (?1, NULL, ?2, NULL) \
                     ON CONFLICT (id) DO UPDATE SET verified = NULL, failed = excluded.failed, mac = NULL",
                )?;
                for (id, good) in outcomes {
                    let id = hex::encode(id);
                    match good {
                        true => {
                            let mac = record_mac(&self.keys, &id, now);
                            ok.execute(rusqlite::params![id, now, mac.as_slice()])?
                        }
                        false => failed.execute(rusqlite::params![id, now])?,
                    };
                }
                let known: Vec<String> = tx
                    .prepare("SELECT id FROM packs")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let mut gone = tx.prepare("DELETE FROM packs WHERE id = ?1")?;
                for id in known {
                    if !parse_blob_id(&id).is_some_and(|p| stored.contains_key(&p)) {
                        gone.execute([&id])?;
                    }
                }
            }
            tx.commit()
        })();
        if let Err(cause) = result {
            tracing::warn!(record = %self.path.display(), %cause, "cannot update the record of verified packs; the next rolling check may read these packs again");
        }
    }
}

/// How old an unfinished export upload must be before `--repair` aborts it.
const EXPORT_UPLOAD_GRACE_SECS: i64 = 24 * 3600;

/// The multipart uploads under `tenants/<tenant>/` and `exports/<tenant>/` that were started and
/// never completed (a backup or export killed mid-upload leaves them; their parts take space but
/// nothing uses them). With `repair`, abort them: the tenant's under the tenant lock (an upload
/// of a backup still running belongs to the lock holder and is kept), the exports' once they are
/// a day old.
pub async fn leftover_uploads(agent: &Agent, tenant: &TenantId, repair: bool) -> Result<Vec<LeftoverUpload>> {
    let pending = agent.store.pending_uploads(&Repository::prefix(tenant)).await?;
    // Exports are uploaded with multipart uploads too (their parts are large); an export does
    // not take the tenant lock, so only uploads older than a day are taken to be abandoned.
    let exports = agent.store.pending_uploads(&crate::repository::layout::exports(Some(tenant))).await?;
    let when = |secs: i64| {
        jiff::Timestamp::from_second(secs)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|_| secs.to_string())
    };
    let mut out: Vec<LeftoverUpload> = pending
        .iter()
        .map(|u| LeftoverUpload {
            key: u.key.clone(),
            upload_id: u.upload_id.clone(),
            initiated: when(u.initiated),
            action: "left".into(),
        })
        .collect();
    let now = jiff::Timestamp::now().as_second();
    for u in &exports {
        let abandoned = now - u.initiated > EXPORT_UPLOAD_GRACE_SECS;
        let action = match (repair, abandoned) {
            (false, _) => "left".to_string(),
            (true, false) => "kept: started less than a day ago, it may be an export still uploading".into(),
            (true, true) => match agent.store.abort_upload(u).await {
                Ok(()) => "aborted".into(),
                Err(e) => format!("kept: aborting failed: {e}"),
            },
        };
        out.push(LeftoverUpload {
            key: u.key.clone(),
            upload_id: u.upload_id.clone(),
            initiated: when(u.initiated),
            action,
        });
    }
    if !repair || pending.is_empty() {
        return Ok(out);
    }
    let refresh = agent.config.lock.refresh;
    let unused = tokio_util::sync::CancellationToken::new();
    // Held for a few aborts only: a lost lock has nothing to stop.
    match TenantLock::acquire(agent.store.clone(), tenant, "check --repair", refresh, unused).await {
        Ok(lock) => {
            for (u, report) in pending.iter().zip(out.iter_mut()) {
                report.action = match agent.store.abort_upload(u).await {
                    Ok(()) => "aborted".into(),
                    Err(e) => format!("kept: aborting failed: {e}"),
                };
            }
            if let Err(e) = lock.release().await {
                tracing::warn!(tenant = %tenant, error = %e, "could not release the tenant lock");
            }
        }
        Err(LockError::Held { info, .. }) => {
            for report in &mut out {
                report.action = format!(
                    "kept: the tenant is locked by {} (pid {} on {}), whose upload this may be; run --repair again when it ends",
                    info.purpose, info.pid, info.host
                );
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options a request body gives: the same words as the flags, and a typo is refused.
    #[test]
    fn options_come_from_a_request_body_and_refuse_unknown_fields() {
        let o: CheckOptions = serde_json::from_str(r#"{"read_data": {"subset": "5%"}, "repair": true}"#).unwrap();
        assert_eq!(o.read_data, ReadData::Subset(Subset::Percent(5.0)));
        assert!(o.repair);
        let o: CheckOptions = serde_json::from_str(r#"{"read_data": "all"}"#).unwrap();
        assert_eq!((o.read_data, o.repair), (ReadData::All, false));
        assert_eq!(serde_json::from_str::<CheckOptions>("{}").unwrap().read_data, ReadData::None);
        assert!(serde_json::from_str::<CheckOptions>(r#"{"read-data": "all"}"#).is_err());
        let e = serde_json::from_str::<CheckOptions>(r#"{"read_data": {"subset": "0%"}}"#).unwrap_err().to_string();
        assert!(e.contains("5%"), "{e}");
        assert!(serde_json::from_str::<crate::commands::forget::ForgetOptions>(r#"{"dryrun": true}"#).is_err());
        assert!(serde_json::from_str::<crate::commands::prune::PruneOptions>(r#"{"dry_run": true}"#).unwrap().dry_run);
        let r: crate::commands::restore::RestoreOptions =
            serde_json::from_str(r#"{"to": "/srv/r", "partial": true}"#).unwrap();
        assert!(r.partial && !r.force && r.generation.is_none());
        let x: crate::commands::export::ExportOptions =
            serde_json::from_str(r#"{"out": "/srv/x", "upload": true}"#).unwrap();
        assert!(x.upload && x.formats.xlsx && x.formats.csv && x.split_size == 512 << 20);
        assert!(serde_json::from_str::<crate::commands::export::ExportOptions>(r#"{"out": "/x", "sheet_rows": 5}"#)
            .is_err());
    }

    #[test]
    fn subsets_parse_or_say_how_to_write_them() {
        assert_eq!("5%".parse::<Subset>().unwrap(), Subset::Percent(5.0));
        assert_eq!("2.5%".parse::<Subset>().unwrap(), Subset::Percent(2.5));
        assert_eq!("100%".parse::<Subset>().unwrap(), Subset::Percent(100.0));
        assert_eq!("3/7".parse::<Subset>().unwrap(), Subset::Slice { n: 3, of: 7 });
        for bad in ["0%", "150%", "-5%", "NaN%", "3/2", "0/4", "1/0", "abc", "5", "a/b", ""] {
            let e = bad.parse::<Subset>().unwrap_err();
            assert!(e.contains(&format!("{bad:?}")) && e.contains("5%") && e.contains("1/20"), "{bad}: {e}");
        }
    }

    fn pack(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn a_share_reads_the_packs_verified_longest_ago_first() {
        let stored: HashMap<[u8; 32], u64> = (1..=10).map(|n| (pack(n), 100)).collect();
        // Packs 1 to 4 verified (1 the longest ago), the others never.
        let mut verified: HashMap<[u8; 32], i64> = (1..=4).map(|n| (pack(n), 1000 + n as i64)).collect();
        let first = Subset::Percent(34.0).select(&stored, &verified);
        assert_eq!(first, (5..=8).map(pack).collect::<Vec<_>>(), "never verified first, 340 bytes of 1000");
        for id in &first {
            verified.insert(*id, 2000);
        }
        let second = Subset::Percent(34.0).select(&stored, &verified);
        assert_eq!(second, [1, 2, 9, 10].map(pack));
        // The smallest share still reads one pack.
        assert_eq!(Subset::Percent(0.01).select(&stored, &verified).len(), 1);
        assert_eq!(Subset::Percent(100.0).select(&stored, &verified).len(), 10);
    }

    #[test]
    fn slices_split_the_packs_by_id_and_cover_them_all() {
        let stored: HashMap<[u8; 32], u64> = (0..=255).map(|n| (pack(n), 1)).collect();
        let verified = HashMap::new();
        let mut seen = Vec::new();
        for n in 1..=7 {
            let slice = Subset::Slice { n, of: 7 }.select(&stored, &verified);
            assert!(!slice.is_empty());
            seen.extend(slice);
        }
        seen.sort();
        assert_eq!(seen, (0..=255).map(pack).collect::<Vec<_>>(), "every pack in exactly one slice");
        assert_eq!(
            Subset::Slice { n: 2, of: 7 }.select(&stored, &verified),
            Subset::Slice { n: 2, of: 7 }.select(&stored, &verified)
        );
    }

    fn table(rows: u64, base_rows: u64, deltas: &[(u64, u64, u64)]) -> Entry {
        let deltas = deltas
            .iter()
            .enumerate()
            .map(|(i, &(inserted, updated, deleted))| crate::generation::Delta {
                generation: format!("g{i}"),
                inserted,
                updated,
                deleted,
                bytes: 0,
                blobs: vec![format!("{i:064x}")],
            })
            .collect();
        Entry::Table {
            name: "atti".into(),
            columns: vec!["a".into(), "b".into()],
            rowid: true,
            rows,
            bytes: 0,
            blobs: vec![format!("{:064x}", 99)],
            keyed: Some(crate::generation::Keyed {
                key: vec![0],
                base_generation: "g0".into(),
                base_rows,
                base_bytes: 0,
                digests: Vec::new(),
                deltas,
                digest_mac: String::new(),
            }),
        }
    }

    /// A keyed table holds its base's rows plus what its deltas inserted, less what they
    /// deleted; each stream is counted against what the catalog says of it.
    #[test]
    fn table_counts_are_checked_against_base_and_deltas() {
        let mut counts = RowCounts::default();
        let mut problems = Vec::new();
        counts.add("g2", &table(12, 10, &[(3, 4, 1), (1, 0, 1)]), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let expected: Vec<_> = counts.streams.iter().map(|c| c.expected).collect();
        assert_eq!(expected, [(10, 0), (7, 1), (1, 1)], "the base's rows, each delta's upserts and deletes");
        counts.add("g3", &table(13, 10, &[(3, 4, 1), (1, 0, 1)]), &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("generation g3: table atti: the catalog says 13 rows"), "{problems:?}");
        assert_eq!(counts.streams.len(), 3, "streams shared by generations are counted once");
        counts.add("g4", &table(1, 0, &[(0, 0, 5)]), &mut problems);
        assert_eq!(problems.len(), 2, "more deleted than there were: {problems:?}");
    }

    #[test]
    fn a_damaged_record_is_started_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(TenantKeys::for_tests("t1"));
        let stored: HashMap<[u8; 32], u64> = [(pack(1), 10), (pack(2), 10)].into();
        let mut record = VerifyRecord::open(dir.path(), keys.clone());
        record.save(&[(pack(1), true), (pack(2), false)], &stored, 500);
        drop(record);
        assert_eq!(VerifyRecord::open(dir.path(), keys.clone()).load(), HashMap::from([(pack(1), 500)]));
        // A pack that fails loses its verification; a pack gone from the store leaves the record.
        let mut record = VerifyRecord::open(dir.path(), keys.clone());
        record.save(&[(pack(1), false)], &HashMap::from([(pack(1), 10)]), 600);
        assert!(record.load().is_empty());
        drop(record);
        // A row edited to claim a verification it never had counts as none: a time moved on, a
        // MAC copied from another pack's row, a row without a MAC.
        let stored: HashMap<[u8; 32], u64> = (1..=4).map(|n| (pack(n), 10)).collect();
        let mut record = VerifyRecord::open(dir.path(), keys.clone());
        record.save(&[(pack(1), true), (pack(2), true)], &stored, 650);
        drop(record);
        let db = rusqlite::Connection::open(dir.path().join("checks/t1.sqlite")).unwrap();
        db.execute("UPDATE packs SET verified = 999999 WHERE id = ?1", [hex::encode(pack(1))]).unwrap();
        db.execute(
            "INSERT INTO packs SELECT ?1, verified, NULL, mac FROM packs WHERE id = ?2",
            [hex::encode(pack(3)), hex::encode(pack(2))],
        )
        .unwrap();
        db.execute("INSERT INTO packs VALUES (?1, 650, NULL, NULL)", [hex::encode(pack(4))]).unwrap();
        drop(db);
        assert_eq!(VerifyRecord::open(dir.path(), keys.clone()).load(), HashMap::from([(pack(2), 650)]));
        // Another tenant's key does not vouch for this tenant's rows.
        let other = Arc::new(TenantKeys::for_tests("t1"));
        assert!(VerifyRecord::open(dir.path(), other).load().is_empty());
        std::fs::write(dir.path().join("checks/t1.sqlite"), b"not a database, not at all; garbage").unwrap();
        let mut record = VerifyRecord::open(dir.path(), keys.clone());
        assert!(record.load().is_empty());
        record.save(&[(pack(2), true)], &stored, 700);
        assert_eq!(VerifyRecord::open(dir.path(), keys.clone()).load(), HashMap::from([(pack(2), 700)]));
    }
}
