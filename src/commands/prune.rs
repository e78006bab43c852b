//! `prune`: free the space of what no generation references any more.
//!
//! Under the tenant lock, prune reads every generation's manifest and catalog to learn which
//! blobs are referenced, then decides for every pack in the store:
//!
//! - a pack that no index file lists (left by an interrupted backup), or whose blobs are all
//!   unreferenced, is deleted;
//! - a pack whose unreferenced blobs take more than `[prune] repack_unused_percent` of its blob
//!   bytes is repacked: its referenced blobs are verified and copied, still sealed, into new
//!   packs, and it is deleted;
//! - a pack younger than `[prune] grace_hours` is left as it is, whatever it holds.
//!
//! If any manifest, catalog or index file cannot be read and verified, or a referenced blob is
//! in no index or in a pack that is gone, prune deletes nothing: a view of the repository with a
//! hole in it could take a referenced blob for garbage (restic's rule).
//!
//! The writes come in this order, so that at every instant every referenced blob is listed by an
//! index file that points at a pack that exists, and a crash anywhere loses nothing:
//!
//! 1. upload the new packs (a crash leaves packs no index lists, garbage for the next prune);
//! 2. write the new index files, listing every pack that survives with its blobs, and the new
//!    packs (a crash leaves the old index files beside them: a repacked blob is then listed
//!    twice, in its old pack and its new one, and both exist; the newer index file wins on load);
//! 3. delete the old index files (a crash leaves some of them, and the packs they name);
//! 4. delete the dropped packs, which by now no index file names.
//!
//! `--dry-run` makes the same plan and reports it, down to the bytes the store would hold after,
//! without writing anything (it takes and releases the lock, so it reports what a prune would do
//! at that moment, not what it would do beside a running backup).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use bytes::Bytes;

use super::{Agent, Error, Result};
use crate::config::PruneConfig;
use crate::keys::BlobId;
use crate::progress::Progress;
use crate::repository::pack::{fits, packed_len, PackBlob, PackBuilder};
use crate::repository::{index_file_len, parse_blob_list, Index, RepoError, Repository};
use crate::store::{Body, ObjectInfo};

/// Blobs per index file that prune writes: the index files of a large tenant stay a few MB each
/// (restic's limit), instead of one file as large as the whole index.
const INDEX_FILE_BLOBS: usize = 50_000;

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    pub tenant: String,
    /// Nothing was changed: the numbers say what a prune would do now.
    pub dry_run: bool,
    /// Generations whose references were read.
    pub generations: usize,
    /// Packs in the store before, and after (planned, with `dry_run`).
    pub packs_before: usize,
    pub packs_after: usize,
    /// Packs deleted whole: listed by no index file, or holding only unreferenced blobs.
    pub packs_deleted: usize,
    /// Packs whose referenced blobs were copied into new packs before they were deleted.
    pub packs_repacked: usize,
    /// New packs the repack wrote.
    pub packs_written: usize,
    /// Packs that would have been deleted or repacked but are younger than the grace period.
    pub packs_kept_for_grace: usize,
    pub grace_hours: u32,
    /// Blobs the index lists after the prune, and blobs it no longer lists.
    pub blobs_kept: usize,
    pub blobs_removed: usize,
    /// Referenced blobs copied into new packs.
    pub blobs_moved: usize,
    pub index_files_written: usize,
    pub index_files_removed: usize,
    /// Bytes of packs and index files in the store, before and after (planned, with `dry_run`).
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub bytes_freed: u64,
    /// Objects in the data folder that are not packs: left alone, and named here.
    pub warnings: Vec<String>,
}

/// Prune one tenant's repository (see the module documentation).
/// What `prune` is asked (the daemon takes the same as a request body).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneOptions {
    /// Report what would be deleted and repacked, changing nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Prune `repo`'s tenant, under its lock (which the job holds, a dry run's too: its view must
/// not change while it is read).
pub(crate) async fn prune(
    agent: &Agent,
    repo: &Repository,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let result = run(agent, repo, opts.dry_run, progress).await;
    progress.done();
    result
}

async fn run(agent: &Agent, repo: &Repository, dry_run: bool, progress: &dyn Progress) -> Result<PruneReport> {
    let tenant = repo.tenant().clone();
    let cfg = &agent.config.prune;
    let refused = |what: String| {
        let tenant = tenant.to_string();
        move |cause: RepoError| Error::PruneRefused { tenant, what, cause: Box::new(cause) }
    };
    progress.phase(&format!("prune {tenant}"), None);

    // The view: generations first, then the index. A manifest is written after the index files
    // that cover it, so every generation listed has its blobs in the index read next.
    let generations = repo.list_generations().await?;
    let index = repo.load_index().await.map_err(refused("the index".into()))?;
    let tmp = agent.scratch(repo.tenant());
    let mut used = HashSet::new();
    for g in &generations {
        progress.item(&format!("reading generation {g}"));
        add_references(repo, &index, g, &tmp, &mut used).await.map_err(refused(format!("generation {g}")))?;
    }
    let (stored, strangers) = repo.list_packs().await?;
    let index_bytes: u64 = agent.store.list(&repo.index_prefix()).await?.iter().map(|o| o.size).sum();

    let listed = listing(&index);
    let now = crate::now().as_second();
    let plan = Plan::new(&listed, &used, &stored, now, cfg).map_err(|MissingPack { pack, blob }| {
        refused("the index".into())(RepoError::Damaged {
            what: "pack",
            key: repo.pack_key(&pack),
            cause: format!(
                "missing, and the index lists blob {} in it, which a generation references",
                hex::encode(blob)
            ),
        })
    })?;

    let mut report = PruneReport {
        tenant: tenant.to_string(),
        dry_run,
        generations: generations.len(),
        packs_before: stored.len(),
        packs_after: stored.len() - plan.delete.len() - plan.repack.len() + plan.new_packs.len(),
        packs_deleted: plan.delete.len(),
        packs_repacked: plan.repack.len(),
        packs_written: plan.new_packs.len(),
        packs_kept_for_grace: plan.kept_for_grace,
        grace_hours: cfg.grace_hours,
        blobs_kept: plan.blobs_kept,
        blobs_removed: plan.blobs_removed,
        blobs_moved: plan.new_packs.iter().map(Vec::len).sum(),
        index_files_written: 0,
        index_files_removed: 0,
        bytes_before: stored.values().map(|o| o.size).sum::<u64>() + index_bytes,
        bytes_after: 0,
        bytes_freed: 0,
        warnings: strangers.iter().map(|o| format!("{}: not a pack; left alone", o.key)).collect(),
    };

    if dry_run {
        // What the store would hold: the packs kept, the new packs, and the index files.
        let new_packs: Vec<([u8; 32], Vec<PackBlob>)> =
            plan.new_packs.iter().map(|moves| ([0; 32], layout(moves))).collect();
        let mut after: u64 = plan.kept(&stored).map(|id| stored[id].size).sum();
        after += new_packs
            .iter()
            .map(|(_, blobs)| packed_len(blobs.iter().map(|b| b.length as u64).sum(), blobs.len()))
            .sum::<u64>();
        if plan.rewrite_index {
            let files = index_files(plan.kept_listing(&stored, &listed), new_packs);
            after += files.iter().map(|f| index_file_len(f)).sum::<u64>();
            report.index_files_written = files.len();
            report.index_files_removed = index.files.len();
        } else {
            after += index_bytes;
        }
        report.bytes_after = after;
    } else {
        // 1. The new packs.
        let written = repack(repo, &plan, &stored, progress).await.map_err(refused("repack".into()))?;
        // 2. and 3. The new index, then the old one goes.
        if plan.rewrite_index {
            let files = index_files(plan.kept_listing(&stored, &listed), written);
            for f in &files {
                repo.write_index(f).await?;
            }
            report.index_files_written = files.len();
            for key in &index.files {
                agent.store.delete(key).await?;
            }
            report.index_files_removed = index.files.len();
        }
        // 4. The packs, which no index file lists any more.
        for id in plan.delete.iter().chain(&plan.repack) {
            agent.store.delete(&repo.pack_key(id)).await?;
        }
        let (after, _) = repo.list_packs().await?;
        report.bytes_after = after.values().map(|o| o.size).sum::<u64>()
            + agent.store.list(&repo.index_prefix()).await?.iter().map(|o| o.size).sum::<u64>();
    }
    report.bytes_freed = report.bytes_before.saturating_sub(report.bytes_after);
    Ok(report)
}

/// Add every blob generation `id` references to `used`: its catalog's blobs, and every blob list
/// of every catalog entry. A referenced blob that no index lists is an error: the data is lost
/// or its index file is, and the pack that still holds it may be one this prune would delete.
async fn add_references(
    repo: &Repository,
    index: &Index,
    id: &str,
    tmp: &Path,
    used: &mut HashSet<BlobId>,
) -> Result<(), RepoError> {
    let m = match repo.load_generation(id).await {
        Ok(m) => m,
        // Deleted since it was listed (forgotten): it references nothing any more.
        Err(RepoError::NoSuchGeneration { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    used.extend(parse_blob_list(&m.catalog, &m.id)?);
    let catalog = repo.fetch_catalog(index, &m, tmp).await?;
    for entry in catalog.entries()? {
        let entry = entry?;
        for (what, list) in entry.blob_lists() {
            for blob in parse_blob_list(list, &m.id)? {
                if !index.contains(&blob) {
                    return Err(RepoError::Damaged {
                        what: "generation catalog",
                        key: repo.generation_key(&m.id),
                        cause: format!("{what} references blob {}, which no index file lists", hex::encode(blob)),
                    });
                }
                used.insert(blob);
            }
        }
    }
    Ok(())
}

/// What the index lists in each pack, in pack order. A blob listed in two packs (by index files
/// that a crashed prune left beside its new ones) counts only where the index reads it from.
fn listing(index: &Index) -> BTreeMap<[u8; 32], Vec<PackBlob>> {
    let mut listed: BTreeMap<[u8; 32], Vec<PackBlob>> = BTreeMap::new();
    for (id, loc) in &index.blobs {
        listed.entry(index.packs[loc.pack as usize]).or_default().push(PackBlob {
            id: *id,
            offset: loc.offset,
            length: loc.length,
        });
    }
    for blobs in listed.values_mut() {
        blobs.sort_by_key(|b| b.offset);
    }
    listed
}

/// A referenced blob to copy out of a pack that is repacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Move {
    id: BlobId,
    from: [u8; 32],
    offset: u64,
    length: u32,
}

/// Where the blobs of a new pack go: one after the other, from offset 0, exactly as
/// [`PackBuilder::add_sealed`] lays them out.
fn layout(moves: &[Move]) -> Vec<PackBlob> {
    let mut offset = 0;
    moves
        .iter()
        .map(|m| {
            let b = PackBlob { id: m.id, offset, length: m.length };
            offset += m.length as u64;
            b
        })
        .collect()
}

/// A referenced blob listed in a pack that is not in the store.
#[derive(Debug, PartialEq, Eq)]
struct MissingPack {
    pack: [u8; 32],
    blob: BlobId,
}

/// What prune does to each pack.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    delete: Vec<[u8; 32]>,
    repack: Vec<[u8; 32]>,
    kept_for_grace: usize,
    /// The referenced blobs of the repacked packs, cut into new packs.
    new_packs: Vec<Vec<Move>>,
    /// Whether the index changes: an indexed pack goes, or it lists packs that are gone.
    rewrite_index: bool,
    blobs_kept: usize,
    blobs_removed: usize,
}

impl Plan {
    fn new(
        listed: &BTreeMap<[u8; 32], Vec<PackBlob>>,
        used: &HashSet<BlobId>,
        stored: &BTreeMap<[u8; 32], ObjectInfo>,
        now: i64,
        cfg: &PruneConfig,
    ) -> Result<Plan, MissingPack> {
        let mut plan = Plan::default();
        let grace = cfg.grace_hours as i64 * 3600;
        for (id, obj) in stored {
            let (delete, repack) = match listed.get(id) {
                None => (true, false),
                Some(blobs) => {
                    let (used_bytes, unused_bytes) = blobs.iter().fold((0u64, 0u64), |(u, n), b| {
                        if used.contains(&b.id) {
                            (u + b.length as u64, n)
                        } else {
                            (u, n + b.length as u64)
                        }
                    });
                    let all_unused = !blobs.iter().any(|b| used.contains(&b.id));
                    let wasteful = unused_bytes * 100 > (used_bytes + unused_bytes) * cfg.repack_unused_percent as u64;
                    (all_unused, !all_unused && wasteful)
                }
            };
            if !(delete || repack) {
                continue;
            }
            // A young pack may belong to a backup that another agent is writing without the
            // lock, or have been listed by an index file just now: it waits for a later prune.
            if now - obj.modified < grace {
                plan.kept_for_grace += 1;
            } else if delete {
                plan.delete.push(*id);
            } else {
                plan.repack.push(*id);
            }
        }
        // Index entries of packs that are gone are dropped, unless a generation needs them.
        for (id, blobs) in listed {
            if !stored.contains_key(id) {
                if let Some(b) = blobs.iter().find(|b| used.contains(&b.id)) {
                    return Err(MissingPack { pack: *id, blob: b.id });
                }
                plan.rewrite_index = true;
                plan.blobs_removed += blobs.len();
            }
        }
        let mut pack: Vec<Move> = Vec::new();
        let mut pack_len = 0;
        for id in &plan.repack {
            for b in listed[id].iter().filter(|b| used.contains(&b.id)) {
                if !fits(pack_len, b.length as usize) {
                    plan.new_packs.push(std::mem::take(&mut pack));
                    pack_len = 0;
                }
                pack.push(Move { id: b.id, from: *id, offset: b.offset, length: b.length });
                pack_len += b.length as usize;
            }
        }
        if !pack.is_empty() {
            plan.new_packs.push(pack);
        }
        let moved: usize = plan.new_packs.iter().map(Vec::len).sum();
        let dropped: usize = plan.delete.iter().chain(&plan.repack).filter_map(|id| listed.get(id)).map(Vec::len).sum();
        plan.rewrite_index |= plan.delete.iter().chain(&plan.repack).any(|id| listed.contains_key(id));
        plan.blobs_removed += dropped - moved;
        plan.blobs_kept = plan.kept(stored).filter_map(|id| listed.get(id)).map(Vec::len).sum::<usize>() + moved;
        Ok(plan)
    }

    /// The packs in the store that stay as they are.
    fn kept<'a>(&'a self, stored: &'a BTreeMap<[u8; 32], ObjectInfo>) -> impl Iterator<Item = &'a [u8; 32]> + 'a {
        let gone: HashSet<&[u8; 32]> = self.delete.iter().chain(&self.repack).collect();
        stored.keys().filter(move |id| !gone.contains(id))
    }

    /// What the new index lists of the packs that stay: everything the old one listed in them.
    /// Unreferenced blobs in a kept pack stay listed, so a later backup can still use them.
    fn kept_listing(
        &self,
        stored: &BTreeMap<[u8; 32], ObjectInfo>,
        listed: &BTreeMap<[u8; 32], Vec<PackBlob>>,
    ) -> Vec<([u8; 32], Vec<PackBlob>)> {
        self.kept(stored).filter_map(|id| listed.get(id).map(|blobs| (*id, blobs.clone()))).collect()
    }
}

/// Cut the listing of packs into index files of about [`INDEX_FILE_BLOBS`] blobs (a pack is
/// never split between two files).
fn index_files(
    kept: Vec<([u8; 32], Vec<PackBlob>)>,
    new: Vec<([u8; 32], Vec<PackBlob>)>,
) -> Vec<Vec<([u8; 32], Vec<PackBlob>)>> {
    let mut files = Vec::new();
    let mut file = Vec::new();
    let mut blobs = 0;
    for pack in kept.into_iter().chain(new) {
        if blobs > 0 && blobs + pack.1.len() > INDEX_FILE_BLOBS {
            files.push(std::mem::take(&mut file));
            blobs = 0;
        }
        blobs += pack.1.len();
        file.push(pack);
    }
    if !file.is_empty() {
        files.push(file);
    }
    files
}

/// Write the new packs of the plan: each referenced blob of a repacked pack is read (its pack
/// whole, once), verified, and appended as it is. Returns the packs written with their blobs.
/// On failure the packs it wrote are removed again: no index lists them yet.
async fn repack(
    repo: &Repository,
    plan: &Plan,
    stored: &BTreeMap<[u8; 32], ObjectInfo>,
    progress: &dyn Progress,
) -> Result<Vec<([u8; 32], Vec<PackBlob>)>, RepoError> {
    if plan.new_packs.is_empty() {
        return Ok(Vec::new());
    }
    progress.phase(&format!("repack {}", repo.tenant()), Some(plan.repack.iter().map(|id| stored[id].size).sum()));
    let mut written = Vec::new();
    let mut attempted = Vec::new();
    let result = async {
        // The pack being copied from. Moves come in pack order, so each is read once; memory is
        // this pack and the one being built, about 16 MiB.
        let mut source: Option<([u8; 32], Bytes)> = None;
        for moves in &plan.new_packs {
            let mut pack = PackBuilder::new();
            for m in moves {
                let key = repo.pack_key(&m.from);
                let bytes = match &source {
                    Some((id, bytes)) if *id == m.from => bytes.clone(),
                    _ => {
                        let bytes = repo.store.get(&key).await?;
                        progress.bytes(bytes.len() as u64);
                        source = Some((m.from, bytes.clone()));
                        bytes
                    }
                };
                let end = m.offset + m.length as u64;
                if end > bytes.len() as u64 {
                    return Err(RepoError::Damaged {
                        what: "pack",
                        key,
                        cause: format!(
                            "shorter than the index says (blob {} ends at byte {end}, the pack has {})",
                            hex::encode(m.id),
                            bytes.len()
                        ),
                    });
                }
                let sealed = bytes.slice(m.offset as usize..end as usize);
                repo.open_sealed_blob(key, m.id, sealed.clone()).await?;
                pack.add_sealed(m.id, &sealed);
            }
            let id = pack.id;
            let (bytes, blobs) = pack.finish(&repo.keys);
            debug_assert_eq!(blobs, layout(moves), "the dry run plans the pack that is written");
            attempted.push(id);
            repo.store.put(&repo.pack_key(&id), Body::Bytes(Bytes::from(bytes))).await?;
            written.push((id, blobs));
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        for id in &attempted {
            if let Err(d) = repo.store.delete(&repo.pack_key(id)).await {
                tracing::warn!(pack = %repo.pack_key(id), error = %d, "could not remove a new pack of a failed repack; the next prune removes it");
            }
        }
        return Err(e);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;
    const NOW: i64 = 1_000 * HOUR;

    fn pack(n: u8) -> [u8; 32] {
        [n; 32]
    }

    fn blob(n: u8) -> BlobId {
        let mut b = [0xb0; 32];
        b[0] = n;
        b
    }

    /// A pack listing: blobs (id, length) one after the other.
    fn blobs(list: &[(u8, u32)]) -> Vec<PackBlob> {
        let mut offset = 0;
        list.iter()
            .map(|&(n, length)| {
                let b = PackBlob { id: blob(n), offset, length };
                offset += length as u64;
                b
            })
            .collect()
    }

    fn stored(packs: &[(u8, i64)]) -> BTreeMap<[u8; 32], ObjectInfo> {
        packs
            .iter()
            .map(|&(n, age_hours)| {
                (pack(n), ObjectInfo { key: format!("p{n}"), size: 1000, modified: NOW - age_hours * HOUR })
            })
            .collect()
    }

    fn cfg(grace_hours: u32, repack_unused_percent: u32) -> PruneConfig {
        PruneConfig { grace_hours, repack_unused_percent }
    }

    #[test]
    fn each_pack_gets_the_action_its_use_and_age_call_for() {
        let listed: BTreeMap<_, _> = [
            (pack(2), blobs(&[(20, 100), (21, 100)])),          // nothing used
            (pack(3), blobs(&[(30, 80), (31, 60), (32, 60)])),  // 60 % unused
            (pack(4), blobs(&[(40, 100), (41, 20), (42, 80)])), // 40 % unused
            (pack(5), blobs(&[(50, 100), (51, 100)])),          // nothing used, young
            (pack(6), blobs(&[(60, 100), (61, 200)])),          // 66 % unused, young
        ]
        .into();
        let used: HashSet<BlobId> = [blob(30), blob(40), blob(41), blob(60)].into();
        // Pack 1 is in no index; 7 is in no index and young.
        let stored = stored(&[(1, 48), (2, 48), (3, 48), (4, 48), (5, 1), (6, 23), (7, 0)]);
        let plan = Plan::new(&listed, &used, &stored, NOW, &cfg(24, 50)).unwrap();
        assert_eq!(plan.delete, vec![pack(1), pack(2)]);
        assert_eq!(plan.repack, vec![pack(3)]);
        assert_eq!(plan.kept_for_grace, 3);
        assert_eq!(plan.new_packs, vec![vec![Move { id: blob(30), from: pack(3), offset: 0, length: 80 }]]);
        assert!(plan.rewrite_index);
        // Removed: pack 2's two blobs, pack 3's two unused ones. Kept: packs 4, 5, 6 and the move.
        assert_eq!((plan.blobs_removed, plan.blobs_kept), (4, 3 + 2 + 2 + 1));
        let kept: Vec<_> = plan.kept(&stored).copied().collect();
        assert_eq!(kept, vec![pack(4), pack(5), pack(6), pack(7)]);
    }

    #[test]
    fn grace_zero_and_thresholds_at_the_edges() {
        let listed: BTreeMap<_, _> = [(pack(1), blobs(&[(10, 50), (11, 50)]))].into();
        let used: HashSet<BlobId> = [blob(10)].into();
        let stored = stored(&[(1, 0)]);
        // Exactly 50 % unused does not exceed 50 %.
        assert_eq!(Plan::new(&listed, &used, &stored, NOW, &cfg(0, 50)).unwrap().repack, Vec::<[u8; 32]>::new());
        assert_eq!(Plan::new(&listed, &used, &stored, NOW, &cfg(0, 49)).unwrap().repack, vec![pack(1)]);
        // 100 never repacks; a pack just written is protected by any grace.
        assert!(Plan::new(&listed, &used, &stored, NOW, &cfg(0, 100)).unwrap().repack.is_empty());
        assert_eq!(Plan::new(&listed, &used, &stored, NOW, &cfg(1, 0)).unwrap().kept_for_grace, 1);
    }

    #[test]
    fn only_unindexed_packs_to_delete_leaves_the_index_alone() {
        let listed: BTreeMap<_, _> = [(pack(1), blobs(&[(10, 50)]))].into();
        let used: HashSet<BlobId> = [blob(10)].into();
        let plan = Plan::new(&listed, &used, &stored(&[(1, 48), (2, 48)]), NOW, &cfg(24, 50)).unwrap();
        assert_eq!(plan.delete, vec![pack(2)]);
        assert!(!plan.rewrite_index);
        assert_eq!((plan.blobs_kept, plan.blobs_removed), (1, 0));
    }

    #[test]
    fn a_referenced_blob_in_a_missing_pack_refuses_and_unreferenced_ones_are_dropped() {
        let listed: BTreeMap<_, _> = [(pack(1), blobs(&[(10, 50)])), (pack(9), blobs(&[(90, 50), (91, 50)]))].into();
        let stored = stored(&[(1, 48)]);
        let used: HashSet<BlobId> = [blob(10), blob(91)].into();
        assert_eq!(
            Plan::new(&listed, &used, &stored, NOW, &cfg(0, 50)),
            Err(MissingPack { pack: pack(9), blob: blob(91) })
        );
        let used: HashSet<BlobId> = [blob(10)].into();
        let plan = Plan::new(&listed, &used, &stored, NOW, &cfg(0, 50)).unwrap();
        assert!(plan.rewrite_index && plan.delete.is_empty());
        assert_eq!((plan.blobs_kept, plan.blobs_removed), (1, 2));
    }

    #[test]
    fn moved_blobs_are_cut_into_packs_of_the_target_size_in_pack_order() {
        let mib = 1 << 20;
        let listed: BTreeMap<_, _> = [
            (pack(1), blobs(&[(10, 3 * mib), (11, 3 * mib), (12, 3 * mib)])),
            (pack(2), blobs(&[(20, 3 * mib), (21, 100)])),
        ]
        .into();
        let used: HashSet<BlobId> = [blob(10), blob(12), blob(20)].into();
        let plan = Plan::new(&listed, &used, &stored(&[(1, 48), (2, 48)]), NOW, &cfg(24, 0)).unwrap();
        assert_eq!(plan.repack, vec![pack(1), pack(2)]);
        let ids: Vec<Vec<BlobId>> = plan.new_packs.iter().map(|p| p.iter().map(|m| m.id).collect()).collect();
        assert_eq!(ids, vec![vec![blob(10), blob(12)], vec![blob(20)]]);
        assert_eq!(plan.new_packs[0][1].offset, 6 * mib as u64);
        assert_eq!(layout(&plan.new_packs[0])[1], PackBlob { id: blob(12), offset: 3 * mib as u64, length: 3 * mib });
    }

    #[test]
    fn index_files_hold_whole_packs_up_to_the_blob_limit() {
        let big = |n: u8| (pack(n), vec![PackBlob { id: blob(n), offset: 0, length: 1 }; INDEX_FILE_BLOBS / 2 + 1]);
        let files = index_files(vec![big(1), big(2)], vec![big(3)]);
        assert_eq!(files.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1, 1]);
        let small = |n: u8| (pack(n), blobs(&[(n, 10)]));
        assert_eq!(index_files(vec![small(1)], vec![small(2)]).len(), 1);
    }
}
