//! The end of what the store keeps of a purged tenant: the expiry of its last generations
//! (every object version and delete marker under `tenants/<tenant>/`), and the shred of its
//! data key (cryptographic erase: whatever copy is left can no longer be read).

use serde::Serialize;

use super::{delete_versions, Step};
use crate::commands::{Error, Result};
use crate::lifecycle::{Expiry, Record, Shred, State, Timeline};
use crate::repository::layout;
use crate::repository::lock::TenantLock;
use crate::tenant::TenantId;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize)]
pub struct ExpireReport {
    pub tenant: String,
    pub expiry: Expiry,
    /// The key, when `[lifecycle] shred = "after_expiry"`.
    pub shred: Option<ShredReport>,
}

/// Delete every generation of a purged tenant once `backup_expiry_days` have passed since the
/// purge: the manifests first (so a run cut short leaves fewer generations, never one whose
/// data are gone), then every other object, in every version. A legal hold blocks it, named.
pub(crate) async fn expire(step: &Step<'_>, tenant: &TenantId, cancel: &CancellationToken) -> Result<ExpireReport> {
    let agent = step.agent;
    let mut record = agent.lifecycle_record(tenant).await?;
    let cfg = &agent.config.lifecycle;
    may_expire(&record, Timeline::of_record(&record, cfg).as_ref(), step)?;
    if let Some(blocker) = super::expiry_blocker(agent, tenant).await? {
        return Err(Error::NotAllowed(blocker));
    }
    // Under the tenant lock, so that no legal hold is placed (a hold takes it) while the
    // objects go; the lock's own versions go once it is released.
    let lock =
        TenantLock::acquire(agent.store.clone(), tenant, "expire", agent.config.lock.refresh, cancel.clone()).await?;
    let deleted = delete_all_but_locks(agent, tenant).await;
    let lost = lock.lost().map(String::from);
    lock.release().await?;
    if let Some(why) = lost {
        return Err(Error::LockLost(why));
    }
    let (generations, mut versions_deleted) = deleted?;
    versions_deleted += delete_versions(&*agent.store, &layout::locks(tenant)).await?;
    let left = agent.store.list_versions(&layout::tenant(tenant)).await?;
    if let Some(v) = left.first() {
        return Err(Error::Failed(format!(
            "{} object versions are still under {} after the expiry, e.g. {}; the next tick tries again",
            left.len(),
            layout::tenant(tenant),
            crate::keys::version_name(v)
        )));
    }
    super::remove_local_files(agent, tenant)?;
    let expiry = Expiry { at: step.now, generations, versions_deleted };
    record.expiry = Some(expiry.clone());
    // Whatever `[lifecycle] shred` says, nothing is left to keep the key for (an `at_purge`
    // shred that failed with the purge is done now).
    let shred = match &record.shred {
        None => {
            agent.save_lifecycle_record(&record).await?;
            Some(shred(step, tenant).await?)
        }
        Some(_) => {
            record.enter(State::Shredded, step.now, step.actor);
            agent.save_lifecycle_record(&record).await?;
            None
        }
    };
    Ok(ExpireReport { tenant: tenant.to_string(), expiry, shred })
}

/// The generations first (a run cut short leaves fewer, never one whose data are gone), then
/// every other object but the lock objects, in every version. Returns how many generations,
/// and how many versions went.
async fn delete_all_but_locks(agent: &crate::commands::Agent, tenant: &TenantId) -> Result<(u64, u64)> {
    let generations = agent.store.list(&layout::generations(tenant)).await?.len() as u64;
    let mut deleted = delete_versions(&*agent.store, &layout::generations(tenant)).await?;
    let locks = layout::locks(tenant);
    for v in agent.store.list_versions(&layout::tenant(tenant)).await? {
        if !v.key.starts_with(&locks) {
            agent.store.delete_version(&v).await?;
            deleted += 1;
        }
    }
    Ok((generations, deleted))
}

fn may_expire(record: &Record, timeline: Option<&Timeline>, step: &Step) -> Result<()> {
    let t = &record.tenant;
    match (timeline, record.purge.is_some(), record.expiry.is_some()) {
        (Some(_), true, true) => Err(Error::NotAllowed(format!("the generations of tenant {t} have expired already"))),
        (Some(tl), true, false) if step.now < tl.backups_expire => Err(Error::NotAllowed(format!(
            "the generations of tenant {t} expire on {}, {} days after its purge",
            tl.backups_expire, step.agent.config.lifecycle.backup_expiry_days
        ))),
        (Some(_), true, false) => Ok(()),
        _ => Err(Error::NotAllowed(format!(
            "tenant {t} is not purged: its generations expire only after its purge (`reversa tenant status {t}`)"
        ))),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ShredReport {
    pub tenant: String,
    pub shred: Shred,
    pub certificate: crate::commands::certificate::Issued,
}

/// Destroy the tenant's data key: remove it from the keystore, write a keystore snapshot
/// without it (read back and opened), then delete every snapshot version, of every agent,
/// that still holds it; then check that none is left. Only after the purge: before, the key
/// is what makes the final generation readable.
pub(crate) async fn shred(step: &Step<'_>, tenant: &TenantId) -> Result<ShredReport> {
    let agent = step.agent;
    let mut record = agent.lifecycle_record(tenant).await?;
    if record.purge.is_none() {
        return Err(Error::NotAllowed(format!(
            "tenant {tenant} is {}: its key is shredded only once it is terminated and purged (`reversa tenant \
             status {tenant}`); nothing changed",
            super::due_state(&record, &agent.config.lifecycle, step.now).name()
        )));
    }
    // Again after a shred, only to take out a copy of the key that came back (an agent that
    // still held it uploaded a snapshot): the confirmation names such a copy.
    if let Some(s) = &record.shred {
        if !agent.holds_key(tenant) && agent.key_copies(tenant).await?.holding.is_empty() {
            return Err(Error::NotAllowed(format!(
                "the key of tenant {tenant} was shredded on {}, and no keystore snapshot holds it",
                s.at
            )));
        }
    }
    let snapshot = agent.shred_key(tenant).await?;
    let copies = agent.key_copies(tenant).await?;
    let mut snapshots_deleted = Vec::new();
    for v in &copies.holding {
        agent.remove_key_from(v, tenant).await?;
        snapshots_deleted.push(crate::keys::version_name(v));
    }
    let after = agent.key_copies(tenant).await?;
    if let Some(v) = after.holding.first() {
        return Err(Error::Failed(format!(
            "keystore snapshot {} still holds the key of tenant {tenant} after its deletion",
            crate::keys::version_name(v)
        )));
    }
    let again = record.shred.is_some();
    let shred = match record.shred.take() {
        // The shred stays dated when it was first done; what this run removed is added.
        Some(mut first) => {
            first.snapshots_deleted.extend(snapshots_deleted);
            Shred { snapshot, ..first }
        }
        None => Shred { at: step.now, by: step.actor.to_string(), snapshot, snapshots_deleted },
    };
    record.shred = Some(shred.clone());
    if record.expiry.is_some() && !again {
        record.enter(State::Shredded, step.now, step.actor);
    }
    let certificate = super::certify(step, &mut record).await?;
    agent.save_lifecycle_record(&record).await?;
    Ok(ShredReport { tenant: tenant.to_string(), shred, certificate })
}
