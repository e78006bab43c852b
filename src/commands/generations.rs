//! `generations`: a tenant's generations with their legal holds; `generations hold` and
//! `generations release` place and lift a hold. A held generation is kept by `forget` whatever
//! the retention policy says, until it is released.

use serde::Serialize;

use super::{Agent, Error, Result};
use crate::generation::{self, Manifest};
use crate::repository::{RepoError, Repository};
use crate::retention::{Hold, HoldState};
use crate::tenant::TenantId;

/// One line of the listing: the manifest as it is stored, and its hold.
#[derive(Debug, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub manifest: Manifest,
    pub hold: Option<Hold>,
}

#[derive(Debug)]
pub struct Listing {
    /// Oldest first.
    pub generations: Vec<Listed>,
    /// Manifests and holds that do not open, named. One damaged object hides nothing else.
    pub damaged: Vec<String>,
}

pub async fn list(agent: &Agent, tenant: &TenantId) -> Result<Listing> {
    let repo = agent.repository(tenant, false).await?;
    let mut damaged = Vec::new();
    let mut holds = std::collections::HashMap::new();
    for (id, hold) in repo.list_holds().await? {
        match hold {
            Ok(h) => {
                holds.insert(id, h);
            }
            Err(e) => damaged.push(e.to_string()),
        }
    }
    let mut generations = Vec::new();
    for id in repo.list_generations().await? {
        match repo.load_generation(&id).await {
            Ok(manifest) => generations.push(Listed { hold: holds.remove(&id), manifest }),
            Err(e) => damaged.push(e.to_string()),
        }
    }
    Ok(Listing { generations, damaged })
}

#[derive(Debug, Serialize)]
pub struct HoldReport {
    pub tenant: String,
    pub hold: Hold,
    /// The hold it replaced, when the generation was already held.
    pub replaced: Option<Hold>,
}

/// Put `generation` on legal hold, with an optional reason (sealed: it may name people), on
/// behalf of `actor`. A generation already on hold keeps its hold unless a new reason is given;
/// then the earlier reason, time and actor go into the hold's history.
///
/// The job holds the tenant lock, so that a `forget` cannot be between reading the holds and
/// deleting this generation while the hold is placed.
pub(crate) async fn hold(repo: &Repository, generation: &str, reason: Option<&str>, actor: &str) -> Result<HoldReport> {
    check_id(repo.tenant(), generation)?;
    // A hold on nothing protects nothing: the generation must exist (the error names it).
    repo.load_generation(generation).await?;
    let reason = reason.map(str::trim).filter(|r| !r.is_empty()).map(String::from);
    // A damaged hold is replaced: the new one says what the operator wants now. A store that
    // did not answer stops here, so no hold is ever overwritten unseen.
    let replaced = match repo.load_hold(generation).await {
        Ok(h) => h,
        Err(RepoError::Damaged { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if let (Some(old), None) = (&replaced, &reason) {
        return Err(Error::Usage(format!(
            "generation {generation} of tenant {} is already on hold since {}{}; placing it again without a \
             reason would lose that one: give --reason to change it",
            repo.tenant(),
            old.created,
            old.by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default()
        )));
    }
    let mut history = replaced.as_ref().map(|h| h.history.clone()).unwrap_or_default();
    if let Some(old) = &replaced {
        history.push(HoldState { reason: old.reason.clone(), created: old.created.clone(), by: old.by.clone() });
    }
    let hold = Hold {
        generation: generation.to_string(),
        reason,
        created: crate::now_rfc3339(),
        by: Some(actor.to_string()),
        history,
    };
    repo.write_hold(&hold).await?;
    Ok(HoldReport { tenant: repo.tenant().to_string(), hold, replaced })
}

#[derive(Debug, Serialize)]
pub struct ReleaseReport {
    pub tenant: String,
    pub generation: String,
    /// The hold that was lifted (`None` when it could not be read; it was removed all the same).
    pub released: Option<Hold>,
}

/// Lift the hold on `generation`. No lock: a `forget` running meanwhile still sees the hold
/// and keeps the generation, which is what it would have done a moment earlier.
pub(crate) async fn release(repo: &Repository, generation: &str) -> Result<ReleaseReport> {
    let tenant = repo.tenant();
    check_id(tenant, generation)?;
    let released = match repo.load_hold(generation).await {
        Ok(Some(h)) => Some(h),
        Ok(None) => {
            return Err(Error::Usage(format!(
                "generation {generation} of tenant {tenant} is not on hold, so there is nothing to release; \
                 `reversa generations --tenant {tenant}` shows the holds"
            )))
        }
        Err(RepoError::Damaged { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    repo.delete_hold(generation).await?;
    Ok(ReleaseReport { tenant: tenant.to_string(), generation: generation.to_string(), released })
}

fn check_id(tenant: &TenantId, generation: &str) -> Result<()> {
    if generation::is_valid_id(generation) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "invalid generation id {:?}: a generation id looks like 20261123T064500.123456Z-1a2b3c4d; \
         `reversa generations --tenant {tenant}` lists them",
        generation.chars().take(80).collect::<String>()
    )))
}
