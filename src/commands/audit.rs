//! `audit head`, `audit verify`, `audit log` and `disclosures`: the audit log read back, from
//! this agent's state folder or from the store (every agent's sealed segments).

use serde::Serialize;

use super::{Agent, Error, Result};
use crate::audit::verify::{self, Chain, Problem, Segment};
use crate::audit::{self, SignedCheckpoint};

/// What `audit verify` found.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    /// `local` (this agent's log, each sealed segment compared with the store's copy) or
    /// `store` (every agent's segments in the store).
    pub source: &'static str,
    pub chains: Vec<Chain>,
    /// Sealed segments the store does not hold yet: the next run uploads them.
    pub local_only: Vec<String>,
    /// Whether the `--expect-head` hash is an entry of the chain (`None` when none was given).
    pub expected_head_found: Option<bool>,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.expected_head_found != Some(false)
    }
}

/// Verify this agent's local log (`from_store` false) or every agent's segments in the store.
pub async fn verify(agent: &Agent, from_store: bool, expect_head: Option<&str>) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        source: if from_store { "store" } else { "local" },
        chains: Vec::new(),
        local_only: Vec::new(),
        expected_head_found: expect_head.map(|_| false),
        problems: Vec::new(),
    };
    let chains = match from_store {
        true => store_chains(agent, &mut report.problems).await?,
        false => local_chain(agent, &mut report).await?,
    };
    for (agent_id, key, segments) in chains {
        match verify::chain(&agent_id, key.as_deref(), &segments, expect_head) {
            Ok((chain, found)) => {
                if found {
                    report.expected_head_found = Some(true);
                }
                report.chains.push(chain);
            }
            Err(p) => report.problems.push(p),
        }
    }
    Ok(report)
}

type AgentSegments = (String, Option<String>, Vec<Segment>);

/// This agent's segments, after comparing each sealed one with its copy in the store.
async fn local_chain(agent: &Agent, report: &mut VerifyReport) -> Result<Vec<AgentSegments>> {
    let log = &agent.audit;
    let id = log.agent_id().to_string();
    let segments: Vec<Segment> = log.local_segments()?.into_iter().map(|(id, text)| Segment { id, text }).collect();
    let prefix = crate::repository::layout::agent_segments(&id);
    let in_store: std::collections::BTreeSet<String> = agent
        .store
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|o| o.key.strip_prefix(&prefix).map(String::from))
        .collect();
    let problem = |segment: &str, what: String| Problem { agent: id.clone(), segment: segment.into(), seq: None, what };
    for seg in &segments {
        let Some(sid) = &seg.id else { continue };
        if !in_store.contains(sid) {
            match log.is_uploaded(sid) {
                true => report.problems.push(problem(sid, "it was uploaded, but the store no longer holds it".into())),
                false => report.local_only.push(sid.clone()),
            }
            continue;
        }
        match fetch_segment(agent, &id, sid).await? {
            Ok(stored) if stored == seg.text => {}
            Ok(_) => report.problems.push(problem(sid, "it differs from its sealed copy in the store".into())),
            Err(why) => report.problems.push(problem(sid, format!("its copy in the store {why}"))),
        }
    }
    let local: std::collections::BTreeSet<&str> = segments.iter().filter_map(|s| s.id.as_deref()).collect();
    for sid in in_store.iter().filter(|s| !local.contains(s.as_str())) {
        report
            .problems
            .push(problem(sid, "the store holds it, but the local log does not: it was removed here".into()));
    }
    Ok(vec![(id, Some(log.public_key()), segments)])
}

/// Every agent's segments in the store, with the public key each agent published. An agent
/// with a segment that does not open is a problem, and its chain is not verified further.
async fn store_chains(agent: &Agent, problems: &mut Vec<Problem>) -> Result<Vec<AgentSegments>> {
    let keys = agent.store.list(crate::repository::layout::AUDIT).await?.into_iter().map(|o| o.key);
    let mut out = Vec::new();
    for (agent_id, ids) in verify::group_store_keys(keys) {
        let published = match agent.store.get(&audit::public_key_key(&agent_id)).await {
            Ok(b) => Some(String::from_utf8_lossy(&b).trim().to_string()),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let mut segments = Vec::new();
        for sid in ids {
            match fetch_segment(agent, &agent_id, &sid).await? {
                Ok(text) => segments.push(Segment { id: Some(sid), text }),
                Err(what) => {
                    problems.push(Problem { agent: agent_id.clone(), segment: sid, seq: None, what });
                    break;
                }
            }
        }
        if problems.iter().all(|p| p.agent != agent_id) {
            out.push((agent_id, published, segments));
        }
    }
    Ok(out)
}

/// A segment of the store, opened; `Err` says why it does not open (damage, or forgery).
async fn fetch_segment(agent: &Agent, agent_id: &str, segment: &str) -> Result<Result<String, String>> {
    let sealed = agent.store.get(&audit::segment_key(agent_id, segment)).await?;
    Ok(match agent.open_audit_segment(agent_id, segment, &sealed) {
        Ok(plain) => String::from_utf8(plain).map_err(|_| "is not text: it was forged".to_string()),
        Err(e) => Err(format!("does not open with the master key ({e}): it is damaged or was replaced")),
    })
}

/// The newest checkpoint of this agent: the head to keep elsewhere (`audit head`).
pub fn head(agent: &Agent) -> Result<Option<SignedCheckpoint>> {
    Ok(agent.audit.newest_checkpoint()?)
}

/// Every entry of the log: this agent's local one, or every agent's in the store.
pub async fn entries(agent: &Agent, from_store: bool) -> Result<Vec<audit::Entry>> {
    let segments: Vec<Segment> = match from_store {
        false => agent.audit.local_segments()?.into_iter().map(|(id, text)| Segment { id, text }).collect(),
        true => {
            let mut problems = Vec::new();
            let chains = store_chains(agent, &mut problems).await?;
            if let Some(p) = problems.first() {
                return Err(Error::Failed(format!("{p}; `reversa audit verify --from-store` names every problem")));
            }
            chains.into_iter().flat_map(|(_, _, s)| s).collect()
        }
    };
    audit::read::entries(&segments).map_err(Error::Failed)
}

/// Of the disclosures to an authority, those whose notice has not reached the customer yet (no
/// channel delivered it): the lifecycle record of each tenant says.
pub async fn pending_notices(agent: &Agent, to_authorities: Vec<audit::Entry>) -> Result<Vec<audit::Entry>> {
    let mut out = Vec::new();
    let mut records = std::collections::BTreeMap::new();
    for e in to_authorities {
        let (Some(t), Some(job)) = (e.tenant.clone(), e.job.clone()) else { continue };
        if !records.contains_key(&t) {
            let record = agent.lifecycle_record(&crate::tenant::TenantId::parse(&t)?).await?;
            records.insert(t.clone(), record);
        }
        if !crate::commands::notices::disclosure_notified(&records[&t], &job) {
            out.push(e);
        }
    }
    Ok(out)
}
