//! `tenant list`: every tenant the agent knows of, from the source and from the store, with
//! what the store holds of it. (The lifecycle issue adds each tenant's state.)

use std::collections::BTreeSet;

use serde::Serialize;

use super::{Agent, Result};
use crate::keys::KeyError;
use crate::repository::Repository;
use crate::tenant::TenantId;

#[derive(Debug, Serialize)]
pub struct TenantLine {
    pub tenant: String,
    /// A folder under `[source] root`.
    pub in_source: bool,
    /// Objects under `tenants/<tenant>/` in the store.
    pub in_store: bool,
    /// "present", "missing" (data in the store, no key anywhere), "shredded" or "none" (never
    /// backed up).
    pub key: &'static str,
    pub generations: usize,
    /// The newest generation's id (ids sort by time).
    pub last_generation: Option<String>,
    /// Where it is on the reversibility timeline.
    pub state: crate::lifecycle::State,
    /// Bytes of every object under `tenants/<tenant>/`.
    pub repository_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct TenantList {
    pub tenants: Vec<TenantLine>,
    /// Source folders that are not tenant ids, named.
    pub warnings: Vec<String>,
}

pub async fn list(agent: &Agent) -> Result<TenantList> {
    let crate::config::SourceConfig::Sqlite { root, .. } = &agent.config.source;
    let (source, warnings) = crate::source::list_tenants(root)?;
    let source: BTreeSet<String> = source.iter().map(|t| t.to_string()).collect();
    let store: BTreeSet<String> =
        agent.store.list_folders(crate::repository::layout::TENANTS).await?.into_iter().collect();
    // A purged and expired tenant has nothing left but its record and certificates.
    let reports: BTreeSet<String> =
        agent.store.list_folders(crate::repository::layout::REPORTS).await?.into_iter().collect();
    let mut tenants = Vec::new();
    for name in source.iter().chain(&store).chain(&reports).collect::<BTreeSet<_>>() {
        let Ok(id) = TenantId::parse(name) else { continue };
        tenants.push(line(agent, &id, source.contains(name), store.contains(name)).await?);
    }
    Ok(TenantList { tenants, warnings })
}

async fn line(agent: &Agent, tenant: &TenantId, in_source: bool, in_store: bool) -> Result<TenantLine> {
    let repository_bytes = match in_store {
        true => agent.store.list(&Repository::prefix(tenant)).await?.iter().map(|o| o.size).sum(),
        false => 0,
    };
    let mut out = TenantLine {
        tenant: tenant.to_string(),
        in_source,
        in_store,
        key: "none",
        generations: 0,
        last_generation: None,
        repository_bytes,
        state: agent.lifecycle_state(tenant).await?,
    };
    match agent.repository(tenant, false).await {
        Ok(repo) => {
            let generations = repo.list_generations().await?;
            out.key = "present";
            out.generations = generations.len();
            out.last_generation = generations.last().cloned();
        }
        Err(super::Error::Key(KeyError::NoKey { .. })) => {}
        Err(super::Error::Key(KeyError::MissingKey { .. })) => out.key = "missing",
        Err(super::Error::Key(KeyError::Shredded { .. })) => out.key = "shredded",
        Err(e) => return Err(e),
    }
    Ok(out)
}
