//! The lifecycle verbs: `tenant set`, `tenant terminate`, `tenant cancel-termination`,
//! `tenant status` and `lifecycle tick`, on the record sealed in the store
//! (`reports/<tenant>/lifecycle`), so that any agent and a new host see it.

use bytes::Bytes;
use serde::Serialize;

use super::{Agent, Error, Result};
use crate::lifecycle::{self, Record, State, Timeline, Transition};
use crate::repository::layout;
use crate::store::Body;
use crate::tenant::TenantId;

impl Agent {
    /// The tenant's lifecycle record; a tenant never terminated has none and is active.
    pub async fn lifecycle_record(&self, tenant: &TenantId) -> Result<Record> {
        let key = layout::lifecycle_record(tenant);
        let sealed = match self.store.get(&key).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(Record::new(tenant.as_str())),
            Err(e) => return Err(e.into()),
        };
        let damaged = |cause: String| {
            Error::Repo(crate::repository::RepoError::Damaged { what: "lifecycle record", key: key.clone(), cause })
        };
        let plain = self.open_lifecycle(tenant, &sealed).map_err(|e| damaged(e.to_string()))?;
        serde_json::from_slice(&plain).map_err(|e| damaged(e.to_string()))
    }

    async fn save_lifecycle_record(&self, record: &Record) -> Result<()> {
        let tenant = TenantId::parse(&record.tenant)?;
        let bytes = serde_json::to_vec(record).expect("a record serializes");
        let sealed = self.seal_lifecycle(&tenant, &bytes);
        self.store.put(&layout::lifecycle_record(&tenant), Body::Bytes(Bytes::from(sealed))).await?;
        Ok(())
    }

    /// The state the tenant is in now: the record's, moved on by the dates that have passed
    /// (what a tick would record).
    pub async fn lifecycle_state(&self, tenant: &TenantId) -> Result<State> {
        let record = self.lifecycle_record(tenant).await?;
        Ok(due_state(&record, &self.config.lifecycle, crate::now()))
    }
}

/// The state the dates lead `record` to at `now`; never back, never past what a job must do.
fn due_state(record: &Record, cfg: &lifecycle::LifecycleConfig, now: jiff::Timestamp) -> State {
    let recorded = record.state();
    match record.contract_end {
        Some(end) if recorded <= State::Safeguard => recorded.max(Timeline::of(end, cfg).state_at(now)),
        _ => recorded,
    }
}

/// What `tenant set` records. The addresses stay in the sealed record: the audit log only
/// counts them.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SetOptions {
    #[serde(skip_serializing)]
    pub admin: String,
    #[serde(default, skip_serializing)]
    pub contacts: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SetReport {
    pub tenant: String,
    pub contacts: usize,
}

pub(crate) async fn set(agent: &Agent, tenant: &TenantId, opts: &SetOptions) -> Result<SetReport> {
    for a in std::iter::once(&opts.admin).chain(&opts.contacts) {
        if !a.contains('@') || a.trim() != a || a.len() < 3 {
            return Err(Error::Usage(format!(
                "{a:?} is not an email address; give --admin and --contact as name@domain"
            )));
        }
    }
    let mut record = agent.lifecycle_record(tenant).await?;
    record.admin = Some(opts.admin.clone());
    record.contacts = opts.contacts.clone();
    agent.save_lifecycle_record(&record).await?;
    Ok(SetReport { tenant: tenant.to_string(), contacts: opts.contacts.len() })
}

/// What `tenant terminate` is asked.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TerminateOptions {
    /// The contract end.
    pub at: jiff::Timestamp,
    /// Accept a contract end more than the export window in the past (with `--reason`).
    #[serde(default)]
    pub backdated: bool,
}

/// Set the contract end of an active tenant. A tenant with nothing in the store cannot be
/// terminated (there is nothing to give back), one already terminated is not again, and a date
/// so far back that the export window would already be over needs `--backdated --reason`.
pub(crate) async fn terminate(
    agent: &Agent,
    tenant: &TenantId,
    opts: &TerminateOptions,
    reason: Option<&str>,
    actor: &str,
) -> Result<Status> {
    if !agent.store.any_under(&layout::generations(tenant)).await? {
        return Err(Error::Usage(format!(
            "tenant {tenant} has no generation in the store: back it up first (`reversa backup --tenant {tenant}`), \
             so that its data can be given back and its deletion certified"
        )));
    }
    let mut record = agent.lifecycle_record(tenant).await?;
    if let Some(end) = record.contract_end {
        return Err(Error::Usage(format!(
            "tenant {tenant} is already terminated (contract end {end}); `reversa tenant cancel-termination` undoes \
             it during the export window"
        )));
    }
    let cfg = &agent.config.lifecycle;
    let now = crate::now();
    if Timeline::of(opts.at, cfg).export_window_end <= now && !(opts.backdated && reason.is_some()) {
        return Err(Error::Usage(format!(
            "a contract end of {} leaves no export window (it would have ended already); if that is right, give \
             --backdated and --reason",
            opts.at
        )));
    }
    record.contract_end = Some(opts.at);
    record.history.push(Transition { state: State::Active, at: now, by: actor.to_string() });
    agent.save_lifecycle_record(&record).await?;
    status_of(agent, tenant, record, now)
}

/// Undo a termination while the tenant is active or in its export window.
pub(crate) async fn cancel_termination(agent: &Agent, tenant: &TenantId, actor: &str) -> Result<Status> {
    let mut record = agent.lifecycle_record(tenant).await?;
    let now = crate::now();
    let state = due_state(&record, &agent.config.lifecycle, now);
    match (record.contract_end, state) {
        (None, _) => return Err(Error::Usage(format!("tenant {tenant} is not terminated: nothing to cancel"))),
        (Some(_), State::Active | State::ExportWindow) => {}
        (Some(_), s) => {
            return Err(Error::NotAllowed(format!(
                "tenant {tenant} is in its {} state: a termination can be cancelled only until its export window \
                 ends",
                s.name()
            )))
        }
    }
    record.contract_end = None;
    record.history.push(Transition { state: State::Active, at: now, by: actor.to_string() });
    agent.save_lifecycle_record(&record).await?;
    status_of(agent, tenant, record, now)
}

/// `tenant status`: the state, every date, what is allowed now and what the next step waits on.
#[derive(Debug, Serialize)]
pub struct Status {
    pub tenant: String,
    pub state: State,
    pub timeline: Option<Timeline>,
    pub admin_set: bool,
    pub contacts: usize,
    pub allowed: Vec<&'static str>,
    /// What the next step waits for (a date, or a job that has not run).
    pub next: Option<String>,
    pub history: Vec<Transition>,
}

pub async fn status(agent: &Agent, tenant: &TenantId) -> Result<Status> {
    let record = agent.lifecycle_record(tenant).await?;
    status_of(agent, tenant, record, crate::now())
}

fn status_of(agent: &Agent, tenant: &TenantId, record: Record, now: jiff::Timestamp) -> Result<Status> {
    let cfg = &agent.config.lifecycle;
    let state = due_state(&record, cfg, now);
    let timeline = record.contract_end.map(|end| Timeline::of(end, cfg));
    let uses = [("backup", lifecycle::Use::Backup), ("export", lifecycle::Use::Export)];
    let allowed =
        uses.iter().filter(|(_, u)| lifecycle::allows(tenant.as_str(), state, *u).is_ok()).map(|(n, _)| *n).collect();
    let next = match (&timeline, state) {
        (None, _) => None,
        (Some(t), State::Active) => Some(format!("the export window opens at the contract end, {}", t.contract_end)),
        (Some(t), State::ExportWindow) => Some(format!("the safeguard begins on {}", t.export_window_end)),
        (Some(t), State::Safeguard) if now < t.safeguard_end => {
            Some(format!("the purge is due on {}", t.safeguard_end))
        }
        (Some(t), State::Safeguard) => {
            Some(format!("the purge has been due since {}: it has not run", t.safeguard_end))
        }
        (Some(_), s) => Some(format!("{} is recorded", s.name())),
    };
    Ok(Status {
        tenant: tenant.to_string(),
        state,
        timeline,
        admin_set: record.admin.is_some(),
        contacts: record.contacts.len(),
        allowed,
        next,
        history: record.history,
    })
}

/// What a tick did to one tenant.
#[derive(Debug, Serialize)]
pub struct TickReport {
    pub tenant: String,
    pub from: State,
    pub to: State,
}

/// Record, for one tenant, the states its dates have reached since the last tick. A second
/// tick at the same time changes nothing.
pub(crate) async fn tick(agent: &Agent, tenant: &TenantId, now: jiff::Timestamp) -> Result<Option<TickReport>> {
    let mut record = agent.lifecycle_record(tenant).await?;
    let from = record.state();
    let to = due_state(&record, &agent.config.lifecycle, now);
    if to == from {
        return Ok(None);
    }
    // Each state it passed through, in order: a tick after a long pause records both steps.
    for s in [State::ExportWindow, State::Safeguard] {
        if s > from && s <= to {
            record.history.push(Transition { state: s, at: now, by: super::AGENT_ACTOR.into() });
        }
    }
    agent.save_lifecycle_record(&record).await?;
    Ok(Some(TickReport { tenant: tenant.to_string(), from, to }))
}
