//! `tenant purge`: at the end of the safeguard, the tenant's source goes. Before anything is
//! deleted, the final generation is read back whole (`check --read-data`): the purge never
//! leaves a tenant whose only copy is damaged.

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{delete_versions, remove_path, Step};
use crate::commands::{backup, check, Agent, Error, Result};
use crate::lifecycle::{Purge, Record, ShredWhen, SourceDeletion, State, Timeline};
use crate::progress::Progress;
use crate::repository::{layout, RepoError, Repository};
use crate::tenant::TenantId;

/// What `tenant purge` is asked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeOptions {
    /// Who deleted the source, when reversa does not (`[lifecycle] purge_source = false`).
    #[serde(default)]
    pub confirmed_by: Option<String>,
    /// Purge before the safeguard ends (needs the job's `--reason`).
    #[serde(default)]
    pub early: bool,
}

#[derive(Debug, Serialize)]
pub struct PurgeReport {
    pub tenant: String,
    pub purge: Purge,
    /// Blobs and bytes the read-back of the final generation verified.
    pub final_blobs_read: u64,
    pub final_bytes_read: u64,
    /// The key, when `[lifecycle] shred = "at_purge"`.
    pub shred: Option<super::expiry::ShredReport>,
    /// The partial certificate issued when the key outlives the purge.
    pub certificate: Option<crate::commands::certificate::Issued>,
}

/// Refuse a purge the tenant's state or date does not allow; `Ok` names how its source goes.
fn may_purge(
    record: &Record,
    timeline: Option<&Timeline>,
    state: State,
    opts: &PurgeOptions,
    step: &Step,
) -> Result<SourceDeletion> {
    let t = &record.tenant;
    let Some(timeline) = timeline else {
        return Err(Error::NotAllowed(format!(
            "tenant {t} is active: only a terminated tenant is purged (`reversa tenant terminate {t} --at DATE`)"
        )));
    };
    if state > State::Safeguard {
        return Err(Error::NotAllowed(format!("tenant {t} was purged already ({} now)", state.name())));
    }
    if state == State::Active {
        return Err(Error::NotAllowed(format!(
            "tenant {t}'s contract ends on {}: a purge, even --early, waits for the contract end",
            timeline.contract_end
        )));
    }
    if step.now < timeline.safeguard_end && !(opts.early && step.reason.is_some()) {
        return Err(Error::NotAllowed(format!(
            "the purge of tenant {t} is due on {}, when its safeguard ends; to purge before, give --early and \
             --reason; nothing was deleted",
            timeline.safeguard_end
        )));
    }
    match (step.agent.config.lifecycle.purge_source, &opts.confirmed_by) {
        (true, _) => Ok(SourceDeletion::DeletedByReversa),
        (false, Some(by)) if !by.trim().is_empty() => Ok(SourceDeletion::ConfirmedBy(by.trim().to_string())),
        (false, _) => Err(Error::Usage(format!(
            "reversa does not delete sources here ([lifecycle] purge_source = false): delete tenant {t}'s database, \
             files and logs, then give --confirmed-by NAME (who did it); nothing was deleted"
        ))),
    }
}

pub(crate) async fn purge(
    step: &Step<'_>,
    repo: &Repository,
    opts: &PurgeOptions,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<PurgeReport> {
    let agent = step.agent;
    let tenant = repo.tenant();
    let mut record = agent.lifecycle_record(tenant).await?;
    let cfg = &agent.config.lifecycle;
    let state = super::due_state(&record, cfg, step.now);
    let timeline = Timeline::of_record(&record, cfg);
    let source = may_purge(&record, timeline.as_ref(), state, opts, step)?;
    let final_generation = match record.final_generation.clone() {
        Some(g) => g,
        None => take_final_generation(agent, repo, &mut record, cancel, progress).await?.manifest.id,
    };
    let (blobs, bytes) = check_final(agent, repo, &final_generation, progress).await?;
    // reversa deletes the source and the extra paths, or an operator did both and says so.
    let extra_paths_deleted = match source {
        SourceDeletion::DeletedByReversa => {
            delete_source(agent, tenant)?;
            delete_extra_paths(&cfg.extra_paths, tenant)?
        }
        SourceDeletion::ConfirmedBy(_) => 0,
    };
    let exports_deleted = delete_versions(&*agent.store, &layout::exports(Some(tenant))).await?;
    let purge = Purge {
        at: step.now,
        by: step.actor.to_string(),
        early_reason: timeline.filter(|t| step.now < t.safeguard_end).and(step.reason.map(String::from)),
        source,
        extra_paths_deleted,
        exports_deleted,
        final_generation,
    };
    record.purge = Some(purge.clone());
    // Purged, and from then on its generations are expiring: both are recorded now, so that
    // the tick after this one has nothing left to record.
    record.enter(State::Purged, step.now, step.actor);
    record.enter(State::Expiring, step.now, step.actor);
    let mut report = PurgeReport {
        tenant: tenant.to_string(),
        purge,
        final_blobs_read: blobs,
        final_bytes_read: bytes,
        shred: None,
        certificate: None,
    };
    match cfg.shred {
        ShredWhen::AtPurge => {
            agent.save_lifecycle_record(&record).await?;
            report.shred = Some(super::expiry::shred(step, tenant).await?);
        }
        ShredWhen::AfterExpiry => {
            report.certificate = Some(super::certify(step, &mut record).await?);
            agent.save_lifecycle_record(&record).await?;
        }
    }
    Ok(report)
}

/// The generation the safeguard keeps, taken when it begins (the tick's `final_generation`
/// job): once, and only then.
pub(crate) async fn final_generation(
    agent: &Agent,
    repo: &Repository,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<backup::BackupReport> {
    let tenant = repo.tenant();
    let mut record = agent.lifecycle_record(tenant).await?;
    let state = super::due_state(&record, &agent.config.lifecycle, crate::now());
    if let Some(g) = &record.final_generation {
        return Err(Error::NotAllowed(format!("tenant {tenant} has its final generation already: {g}")));
    }
    if state != State::Safeguard {
        return Err(Error::NotAllowed(format!(
            "tenant {tenant} is {}: the final generation is taken when the safeguard begins",
            state.name()
        )));
    }
    take_final_generation(agent, repo, &mut record, cancel, progress).await
}

/// Back up the tenant and record the generation as its final one (also an early purge's,
/// when it comes before the safeguard).
async fn take_final_generation(
    agent: &Agent,
    repo: &Repository,
    record: &mut Record,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<backup::BackupReport> {
    let r = Box::pin(backup::backup(agent, repo, cancel, progress)).await?;
    record.final_generation = Some(r.manifest.id.clone());
    agent.save_lifecycle_record(record).await?;
    Ok(r)
}

/// The final generation must still be there, and every pack read back and every blob verified:
/// it must restore before its source goes.
async fn check_final(
    agent: &Agent,
    repo: &Repository,
    generation: &str,
    progress: &dyn Progress,
) -> Result<(u64, u64)> {
    repo.resolve_generation(Some(generation)).await?;
    let opts = check::CheckOptions { read_data: check::ReadData::All, repair: false };
    let r = Box::pin(check::check(agent, repo, &opts, progress)).await?;
    if !r.problems.is_empty() {
        return Err(Error::Repo(RepoError::Damaged {
            what: "final generation",
            key: generation.to_string(),
            cause: format!(
                "{}; the purge deleted nothing (`reversa check --tenant {} --read-data` names every problem)",
                r.problems.join("; "),
                repo.tenant()
            ),
        }));
    }
    Ok((r.blobs_read, r.bytes_read))
}

/// Delete the tenant's folder of the source (its database, attachments and documents), then
/// make sure it is gone. A symlink is removed, never followed.
fn delete_source(agent: &Agent, tenant: &TenantId) -> Result<()> {
    let crate::config::SourceConfig::Sqlite { root, .. } = &agent.config.source;
    let dir = root.join(tenant.as_str());
    remove_path(&dir)?;
    if std::fs::symlink_metadata(&dir).is_ok() {
        return Err(Error::Failed(format!("{} is still there after its deletion", dir.display())));
    }
    Ok(())
}

/// Delete what `[lifecycle] extra_paths` matches for the tenant, then glob again: nothing may
/// match any more. Returns how many paths were deleted.
fn delete_extra_paths(patterns: &[String], tenant: &TenantId) -> Result<u64> {
    let mut deleted = 0;
    for p in patterns {
        for path in matches(p, tenant)? {
            if std::fs::symlink_metadata(&path).is_ok() {
                remove_path(&path)?;
                deleted += 1;
            }
        }
        if let Some(left) = matches(p, tenant)?.first() {
            return Err(Error::Failed(format!(
                "{} (of [lifecycle] extra_paths {p:?}) is still there after its deletion",
                left.display()
            )));
        }
    }
    Ok(deleted)
}

/// What `pattern` matches for the tenant. A trailing `/**` means the folder and everything in
/// it, the folder included (glob's `**` alone would leave the empty folder, named after the
/// tenant).
fn matches(pattern: &str, tenant: &TenantId) -> Result<Vec<std::path::PathBuf>> {
    let p = pattern.replace("{tenant}", &glob::Pattern::escape(tenant.as_str()));
    let p = p.strip_suffix("/**").unwrap_or(&p);
    let paths = glob::glob(p).map_err(|e| Error::Usage(format!("[lifecycle] extra_paths {pattern:?}: {e}")))?;
    Ok(paths.filter_map(|r| r.ok()).collect())
}
