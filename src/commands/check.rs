//! `check`: does every reference in a tenant's repository resolve, and (with `--read-data`) does
//! every blob decrypt and match its id? Every damaged object is named; nothing is changed, except
//! that `--repair` aborts the multipart uploads an interrupted backup or export left behind
//! ([`leftover_uploads`]).

use std::collections::{HashMap, HashSet};

use futures::StreamExt;

use super::{Agent, Result};
use crate::progress::Progress;
use crate::repository::lock::{LockError, TenantLock};
use crate::repository::pack::read_header;
use crate::repository::{open_blob, parse_blob_id, Index, RepoError, Repository};
use crate::tenant::TenantId;

#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub tenant: String,
    pub generations: usize,
    pub index_files: usize,
    pub packs: usize,
    pub blobs: usize,
    /// Blobs decrypted and verified (only with --read-data).
    pub blobs_read: u64,
    pub bytes_read: u64,
    /// Packs no index file lists: left by an interrupted backup, harmless, removed by prune.
    pub unreferenced_packs: Vec<String>,
    /// Every damaged or missing object, named.
    pub problems: Vec<String>,
    /// Multipart uploads under the tenant's folder that were never completed (S3 only).
    pub leftover_uploads: Vec<LeftoverUpload>,
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

pub async fn check(agent: &Agent, tenant: &TenantId, read_data: bool, progress: &dyn Progress) -> Result<CheckReport> {
    let repo = agent.repository(tenant, false).await?;
    let mut report = CheckReport { tenant: tenant.to_string(), ..Default::default() };
    // Generations first: a manifest is written after its index, so every generation listed now
    // has its blobs in the index read next, even while a backup runs.
    let generations = repo.list_generations().await?;
    let (index, damaged) = repo.load_index_tolerant().await?;
    report.problems.extend(damaged.into_iter().map(|e| e.to_string()));
    report.index_files = index.files.len();
    report.blobs = index.blobs.len();

    // Packs in the store, by id.
    let (packs, strangers) = repo.list_packs().await?;
    let stored: HashMap<[u8; 32], u64> = packs.into_iter().map(|(id, obj)| (id, obj.size)).collect();
    for obj in strangers {
        report.problems.push(format!("{}: not a pack (unexpected object in the data folder)", obj.key));
    }
    report.packs = stored.len();
    let indexed: HashSet<[u8; 32]> = index.packs.iter().copied().collect();
    for (id, size) in &stored {
        if !indexed.contains(id) {
            report.unreferenced_packs.push(format!("{} ({size} bytes)", repo.pack_key(id)));
        }
    }
    report.unreferenced_packs.sort();
    for (id, loc) in &index.blobs {
        let pack = &index.packs[loc.pack as usize];
        match stored.get(pack) {
            None => report.problems.push(format!(
                "{}: missing (the index lists blob {} in it)",
                repo.pack_key(pack),
                hex::encode(id)
            )),
            Some(size) if loc.offset + loc.length as u64 > *size => report.problems.push(format!(
                "{}: shorter than the index says (blob {} ends at byte {}, the pack has {size})",
                repo.pack_key(pack),
                hex::encode(id),
                loc.offset + loc.length as u64
            )),
            _ => {}
        }
    }

    // Every generation and every blob it references.
    let tmp = agent.config.state.dir.join("tmp");
    report.generations = generations.len();
    for g in &generations {
        if let Err(e) = check_generation(&repo, &index, g, &tmp, &mut report.problems).await {
            report.problems.push(format!("generation {g}: {e}"));
        }
    }

    if read_data {
        let total: u64 = stored.values().sum();
        progress.phase(&format!("check {tenant}"), Some(total));
        read_packs(&repo, &index, &stored, progress, &mut report).await;
    }
    progress.done();
    report.problems.dedup();
    Ok(report)
}

async fn check_generation(
    repo: &Repository,
    index: &Index,
    id: &str,
    tmp: &std::path::Path,
    problems: &mut Vec<String>,
) -> Result<(), RepoError> {
    let m = repo.load_generation(id).await?;
    let catalog = repo.fetch_catalog(index, &m, tmp).await?;
    for entry in catalog.entries()? {
        let entry = entry?;
        for (what, blobs) in entry.blob_lists() {
            for b in blobs {
                match parse_blob_id(b) {
                    Some(bid) if index.contains(&bid) => {}
                    _ => problems.push(format!("generation {id}: {what}: blob {b} is not in any index (data lost)")),
                }
            }
        }
    }
    Ok(())
}

/// Read every pack whole, open its header and every blob in it, and compare with the index.
async fn read_packs(
    repo: &Repository,
    index: &Index,
    stored: &HashMap<[u8; 32], u64>,
    progress: &dyn Progress,
    report: &mut CheckReport,
) {
    // What the index says each pack holds, to compare with the pack's own header.
    let mut expected: HashMap<[u8; 32], Vec<([u8; 32], u64, u32)>> = HashMap::new();
    for (bid, loc) in &index.blobs {
        expected.entry(index.packs[loc.pack as usize]).or_default().push((*bid, loc.offset, loc.length));
    }
    let mut ids: Vec<[u8; 32]> = stored.keys().copied().collect();
    ids.sort();
    let mut packs = futures::stream::iter(ids)
        .map(|id| async move {
            let key = repo.pack_key(&id);
            let bytes = repo.store.get(&key).await;
            (id, key, bytes)
        })
        .buffered(2);
    while let Some((id, key, bytes)) = packs.next().await {
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                report.problems.push(format!("{key}: {e}"));
                continue;
            }
        };
        progress.bytes(bytes.len() as u64);
        report.bytes_read += bytes.len() as u64;
        let keys = repo.keys.clone();
        let hex_id = hex::encode(id);
        let key2 = key.clone();
        let want = expected.remove(&id).unwrap_or_default();
        let (problems, n) = tokio::task::spawn_blocking(move || {
            let mut problems = Vec::new();
            let mut n = 0u64;
            match read_header(&keys, &hex_id, &bytes) {
                Err(e) => problems.push(format!("{key2}: {e}")),
                Ok(blobs) => {
                    let have: HashSet<([u8; 32], u64, u32)> =
                        blobs.iter().map(|b| (b.id, b.offset, b.length)).collect();
                    for w in &want {
                        if !have.contains(w) {
                            problems.push(format!(
                                "{key2}: the index lists blob {} here, the pack does not hold it",
                                hex::encode(w.0)
                            ));
                        }
                    }
                    for b in blobs {
                        let sealed = &bytes[b.offset as usize..(b.offset + b.length as u64) as usize];
                        n += 1;
                        if let Err(cause) = open_blob(&keys, &b.id, sealed) {
                            problems.push(format!("{key2}: blob {} is damaged: {cause}", hex::encode(b.id)));
                        }
                    }
                }
            }
            (problems, n)
        })
        .await
        .expect("check task panicked");
        report.blobs_read += n;
        report.problems.extend(problems);
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
    let exports = agent.store.pending_uploads(&format!("exports/{tenant}/")).await?;
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
    match TenantLock::acquire(agent.store.clone(), tenant, "check --repair").await {
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
