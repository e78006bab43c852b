//! `forget`: apply the retention policy ([`crate::retention`]) to a tenant's generations and
//! delete the manifests of those it does not keep. Packs are never touched: the data of a
//! forgotten generation stays in the store until prune finds that no manifest references it.
//! Running it again forgets nothing more (the policy is stable).

use std::collections::HashMap;

use serde::Serialize;

use super::{Agent, Error, Result};
use crate::repository::Repository;
use crate::retention::{Decision, GenerationTime, Policy};

#[derive(Debug, Serialize)]
pub struct ForgetReport {
    pub tenant: String,
    /// The policy in words (`keep_daily = 28 (days in Europe/Rome)`).
    pub policy: String,
    /// Nothing was deleted: the decisions are what a run without `--dry-run` would do.
    pub dry_run: bool,
    /// Every generation, oldest first, kept with its reasons or forgotten.
    pub generations: Vec<Decision>,
    pub kept: usize,
    pub forgotten: usize,
    /// The short-retention warning, when `allow_short_retention` let a short policy through.
    pub warnings: Vec<String>,
    /// Manifests and holds that do not open. Their generations are kept: nothing is deleted on
    /// the strength of what could not be read.
    pub problems: Vec<String>,
}

/// Apply the policy to `tenant`. Without `dry_run` this runs under the tenant lock, so no backup
/// or hold changes the generations between the decision and the deletes.
/// What `forget` is asked (the daemon takes the same as a request body).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetOptions {
    /// Say what would be kept and forgotten; delete nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Apply the retention policy to `repo`'s tenant (under its lock, which the job holds unless
/// this is a dry run).
pub(crate) async fn forget(agent: &Agent, repo: &Repository, opts: &ForgetOptions) -> Result<ForgetReport> {
    // The configuration was validated at load; this cannot fail unless the caller built it by hand.
    let policy =
        Policy::from_config(&agent.config.retention).map_err(|e| Error::Usage(format!("configuration: {e}")))?;
    run(repo, &policy, opts.dry_run).await
}

async fn run(repo: &Repository, policy: &Policy, dry_run: bool) -> Result<ForgetReport> {
    let tenant = repo.tenant().to_string();
    let mut problems = Vec::new();
    // Unreadable generations are kept and listed with the others.
    let mut unreadable = Vec::new();
    let mut generations = Vec::new();
    for id in repo.list_generations().await? {
        match repo.load_generation(&id).await {
            Ok(m) => match m.time.parse() {
                Ok(time) => generations.push(GenerationTime { id, time }),
                Err(e) => {
                    problems.push(format!("generation {id}: its time {:?} is not RFC 3339 ({e})", m.time));
                    unreadable.push(id);
                }
            },
            Err(e) => {
                problems.push(e.to_string());
                unreadable.push(id);
            }
        }
    }
    let mut holds = HashMap::new();
    for (id, hold) in repo.list_holds().await? {
        let reason = match hold {
            Ok(h) => h.describe(),
            Err(e) => {
                problems.push(e.to_string());
                "hold (its object does not open, so it is kept as held)".into()
            }
        };
        holds.insert(id, reason);
    }

    let mut decisions = policy.apply(&generations, &holds);
    decisions.extend(unreadable.into_iter().map(|id| Decision {
        id,
        time: "unknown".into(),
        keep: true,
        reasons: vec!["unreadable: kept (see the problems)".into()],
    }));
    // Ids sort by time; this puts the unreadable ones where they belong.
    decisions.sort_by(|a, b| a.id.cmp(&b.id));

    let mut warnings = Vec::new();
    if let Some(w) = &policy.short_warning {
        tracing::warn!(tenant = %tenant, "{w}");
        warnings.push(w.clone());
    }
    if !dry_run {
        for d in decisions.iter().filter(|d| !d.keep) {
            repo.delete_generation(&d.id).await?;
            tracing::info!(tenant = %tenant, generation = %d.id, "forgot generation");
        }
    }
    let kept = decisions.iter().filter(|d| d.keep).count();
    Ok(ForgetReport {
        tenant,
        policy: policy.describe(),
        dry_run,
        forgotten: decisions.len() - kept,
        kept,
        generations: decisions,
        warnings,
        problems,
    })
}
