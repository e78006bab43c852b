//! The lifecycle verbs, on the record sealed in the store (`reports/<tenant>/lifecycle`), so
//! that any agent and a new host see it: `tenant set`, `tenant terminate`,
//! `tenant cancel-termination`, `tenant status` and `lifecycle tick` here; the purge, the
//! expiry and the shred, and the confirmation with its certificates, in the submodules.

pub mod confirm;
pub mod expiry;
pub mod purge;

use bytes::Bytes;
use serde::Serialize;

use super::{Agent, Error, Result};
use crate::lifecycle::{self, Record, State, Timeline, Transition};
use crate::repository::layout;
use crate::store::{Body, Store};
use crate::tenant::TenantId;

pub(crate) use confirm::certify;

/// What a lifecycle step runs with: the agent, its time (real, or simulated for drills and
/// tests), who asks and why.
pub(crate) struct Step<'a> {
    pub agent: &'a Agent,
    pub now: jiff::Timestamp,
    pub actor: &'a str,
    pub reason: Option<&'a str>,
}

/// Delete every version and delete marker under `prefix`; returns how many.
pub(crate) async fn delete_versions(store: &dyn Store, prefix: &str) -> Result<u64> {
    let versions = store.list_versions(prefix).await?;
    for v in &versions {
        store.delete_version(v).await?;
    }
    Ok(versions.len() as u64)
}

/// What blocks the expiry of a tenant's generations: a legal hold, or a job running on it.
pub(crate) async fn expiry_blocker(agent: &Agent, tenant: &TenantId) -> Result<Option<String>> {
    let holds = agent.store.list(&layout::holds(tenant)).await?;
    if let Some(h) = holds.first() {
        let generation = h.key.rsplit('/').next().unwrap_or_default();
        return Ok(Some(format!(
            "generation {generation} of tenant {tenant} is on legal hold, which blocks the expiry ({} holds;              `reversa generations release` lifts one)",
            holds.len()
        )));
    }
    if agent.store.any_under(&layout::locks(tenant)).await? {
        return Ok(Some(format!(
            "a job holds the lock of tenant {tenant}; the expiry runs once it has ended (`reversa unlock` removes a              stale one)"
        )));
    }
    Ok(None)
}

/// Delete a file, or a folder with everything in it; a symlink is removed, never followed.
/// Already gone is not an error.
pub(crate) fn remove_path(path: &std::path::Path) -> Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::Io { what: "cannot delete", path: path.to_path_buf(), cause: e })
        }
        _ => Ok(()),
    }
}

/// The tenant's files in the state folder: its file cache, digest maps and check records (a
/// tenant id has no `.`, so `<tenant>.` names only its own), and anything left in its scratch
/// folder (spools, export and extraction work folders).
pub(crate) fn local_files(agent: &Agent, tenant: &TenantId) -> Result<Vec<std::path::PathBuf>> {
    let scratch = agent.scratch(tenant);
    let mut out = match std::fs::read_dir(&scratch) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(cause) => return Err(Error::Io { what: "cannot list", path: scratch, cause }),
    };
    for folder in ["cache", "checks"] {
        let dir = agent.config.state.dir.join(folder);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(cause) => return Err(Error::Io { what: "cannot list", path: dir, cause }),
        };
        let own = format!("{tenant}.");
        out.extend(entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&own)).map(|e| e.path()));
    }
    out.sort();
    Ok(out)
}

pub(crate) fn remove_local_files(agent: &Agent, tenant: &TenantId) -> Result<()> {
    for path in local_files(agent, tenant)? {
        remove_path(&path)?;
    }
    // The empty scratch folder names the tenant: it goes too.
    let _ = std::fs::remove_dir(agent.scratch(tenant));
    Ok(())
}

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
        let record = self.open_record(tenant, &sealed).map_err(damaged)?;
        self.cache_record(tenant, &sealed);
        Ok(record)
    }

    fn open_record(&self, tenant: &TenantId, sealed: &[u8]) -> std::result::Result<Record, String> {
        let plain = self.open_lifecycle(tenant, sealed).map_err(|e| e.to_string())?;
        serde_json::from_slice(&plain).map_err(|e| e.to_string())
    }

    pub(crate) async fn save_lifecycle_record(&self, record: &Record) -> Result<()> {
        let tenant = TenantId::parse(&record.tenant)?;
        let bytes = serde_json::to_vec(record).expect("a record serializes");
        let sealed = self.seal_lifecycle(&tenant, &bytes);
        self.store.put(&layout::lifecycle_record(&tenant), Body::Bytes(Bytes::from(sealed.clone()))).await?;
        self.cache_record(&tenant, &sealed);
        Ok(())
    }

    /// The local copy of a record (sealed as in the store): what `tenant status` shows when
    /// the store cannot be reached. Only a cache: every step reads the store's.
    fn record_cache(&self, tenant: &TenantId) -> std::path::PathBuf {
        self.config.state.dir.join("lifecycle").join(tenant.as_str())
    }

    fn cache_record(&self, tenant: &TenantId, sealed: &[u8]) {
        let path = self.record_cache(tenant);
        let written = std::fs::create_dir_all(path.parent().expect("a cache file has a folder"))
            .and_then(|()| crate::store::dir::write_atomic(&path, sealed, 0o600));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep the local copy of a lifecycle record");
        }
    }

    /// The record from the store, or, when the store does not answer, its local copy with the
    /// time it was written.
    async fn record_or_cache(&self, tenant: &TenantId) -> Result<(Record, Option<jiff::Timestamp>)> {
        match self.lifecycle_record(tenant).await {
            Err(Error::Store(e @ crate::store::StoreError::Failed { .. })) => {
                let path = self.record_cache(tenant);
                let (Ok(sealed), Ok(meta)) = (std::fs::read(&path), std::fs::metadata(&path)) else {
                    return Err(Error::Store(e));
                };
                let record = self.open_record(tenant, &sealed).map_err(|cause| {
                    Error::Failed(format!(
                        "the store does not answer ({e}), and the local copy {} does not open: {cause}",
                        path.display()
                    ))
                })?;
                let at = meta.modified().ok().and_then(|m| jiff::Timestamp::try_from(m).ok());
                Ok((record, at))
            }
            other => Ok((other?, None)),
        }
    }

    /// The state the tenant is in now: the record's, moved on by the dates that have passed
    /// (what a tick would record).
    pub async fn lifecycle_state(&self, tenant: &TenantId) -> Result<State> {
        let record = self.lifecycle_record(tenant).await?;
        Ok(due_state(&record, &self.config.lifecycle, crate::now()))
    }
}

/// The state the dates lead `record` to at `now`; never back, never past what a job must do.
/// A purged tenant's generations are expiring from the purge on.
pub(crate) fn due_state(record: &Record, cfg: &lifecycle::LifecycleConfig, now: jiff::Timestamp) -> State {
    let recorded = record.state();
    match record.contract_end {
        Some(end) if recorded <= State::Safeguard => recorded.max(Timeline::of(end, cfg).state_at(now)),
        _ if recorded == State::Purged => State::Expiring,
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
    record.enter(State::Active, now, actor);
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
    record.enter(State::Active, now, actor);
    agent.save_lifecycle_record(&record).await?;
    status_of(agent, tenant, record, now)
}

/// `tenant status`: the state, every date, what is allowed now and what the next step waits on.
/// docs/LIFECYCLE.md documents it as JSON (the SaaS application's interface).
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
    /// What stops the next step although its date has come (a legal hold, a missing
    /// attestation); `None` when nothing does.
    pub blocked: Option<String>,
    pub final_generation: Option<String>,
    /// The notices not delivered yet on some channel, with each try's error and the next try.
    pub undelivered_notices: Vec<crate::notices::Notice>,
    pub history: Vec<Transition>,
}

pub async fn status(agent: &Agent, tenant: &TenantId) -> Result<Status> {
    let (record, cached) = agent.record_or_cache(tenant).await?;
    let now = crate::now();
    let blocked = match (due(&record, &agent.config.lifecycle, now), cached) {
        (_, Some(at)) => Some(format!("the store does not answer: this is the local copy of the record, of {at}")),
        (Some(Due::Blocked(why)), None) => Some(why),
        (Some(Due::Expire), None) => expiry_blocker(agent, tenant).await?,
        _ => None,
    };
    Ok(Status { blocked, ..status_of(agent, tenant, record, now)? })
}

fn status_of(agent: &Agent, tenant: &TenantId, record: Record, now: jiff::Timestamp) -> Result<Status> {
    let cfg = &agent.config.lifecycle;
    let state = due_state(&record, cfg, now);
    let timeline = Timeline::of_record(&record, cfg);
    let allowed = lifecycle::allowed(tenant.as_str(), state);
    Ok(Status {
        tenant: tenant.to_string(),
        state,
        next: timeline.as_ref().map(|t| next_step(&record, t, state, now)),
        timeline,
        admin_set: record.admin.is_some(),
        contacts: record.contacts.len(),
        allowed,
        blocked: None,
        final_generation: record.final_generation.clone(),
        undelivered_notices: super::notices::undelivered(&record).into_iter().cloned().collect(),
        history: record.history,
    })
}

/// What comes next on a terminated tenant's timeline, and when.
fn next_step(record: &Record, t: &Timeline, state: State, now: jiff::Timestamp) -> String {
    let tenant = &record.tenant;
    match state {
        State::Active => format!("the export window opens at the contract end, {}", t.contract_end),
        State::ExportWindow => format!("the safeguard begins on {}", t.export_window_end),
        State::Safeguard if record.final_generation.is_none() => {
            "the final generation: the next `lifecycle tick` takes it".into()
        }
        State::Safeguard if now < t.safeguard_end => format!("the purge is due on {}", t.safeguard_end),
        State::Safeguard => format!("the purge has been due since {}: it has not run", t.safeguard_end),
        State::Purged | State::Expiring if record.expiry.is_none() && now < t.backups_expire => {
            format!("the generations expire on {}", t.backups_expire)
        }
        State::Purged | State::Expiring if record.expiry.is_none() => {
            format!("the generations have been due to expire since {}: the next tick deletes them", t.backups_expire)
        }
        State::Purged | State::Expiring => {
            format!("the key is shredded by the next tick (or `reversa tenant shred {tenant}`)")
        }
        State::Shredded if now < t.replicas_expire => format!(
            "the deletion is confirmed once the VM replicas expire, on {} (`reversa expiry confirm {tenant}`              before gives a partial certificate)",
            t.replicas_expire
        ),
        State::Shredded => format!("the deletion is due to be confirmed: `reversa expiry confirm {tenant}`"),
        State::Confirmed => match t.recheck {
            Some(r) => format!("the deletion is checked again on {r}"),
            None => "the deletion is confirmed".into(),
        },
    }
}

/// The step a tenant's timeline is due for at `now`, as a tick runs them.
#[derive(Debug, Clone, PartialEq)]
pub enum Due {
    FinalGeneration,
    Purge,
    Expire,
    Shred,
    Confirm,
    /// Due, but only an operator can take it (the purge without `purge_source`).
    Blocked(String),
}

/// What a tick must run next for `record`; `None` when nothing is due. A step that failed is
/// due again at the next tick: each follows from the record, never from a count of tries.
pub(crate) fn due(record: &Record, cfg: &lifecycle::LifecycleConfig, now: jiff::Timestamp) -> Option<Due> {
    let t = Timeline::of_record(record, cfg)?;
    let tenant = &record.tenant;
    match due_state(record, cfg, now) {
        State::Safeguard if record.final_generation.is_none() => Some(Due::FinalGeneration),
        State::Safeguard if now >= t.safeguard_end && cfg.purge_source => Some(Due::Purge),
        State::Safeguard if now >= t.safeguard_end => Some(Due::Blocked(format!(
            "the purge is due and reversa does not delete sources here ([lifecycle] purge_source = false): once the \
             source is deleted, `reversa tenant purge {tenant} --confirmed-by NAME`"
        ))),
        // An `at_purge` shred that failed with the purge is due again first.
        State::Purged | State::Expiring if record.shred.is_none() && cfg.shred == lifecycle::ShredWhen::AtPurge => {
            Some(Due::Shred)
        }
        State::Purged | State::Expiring if record.expiry.is_none() && now >= t.backups_expire => Some(Due::Expire),
        State::Purged | State::Expiring if record.expiry.is_some() && record.shred.is_none() => Some(Due::Shred),
        State::Shredded if now >= t.replicas_expire => Some(Due::Confirm),
        // The re-check of a confirmed deletion, every `recheck_days`.
        State::Confirmed if t.recheck.is_some_and(|r| now >= r) => Some(Due::Confirm),
        _ => None,
    }
}

/// Queue, once, the notice that the export window closes in `notice_days_before` days.
/// Returns whether it queued it.
fn warn_before_the_window_closes(record: &mut Record, cfg: &lifecycle::LifecycleConfig, now: jiff::Timestamp) -> bool {
    let Some(t) = Timeline::of_record(record, cfg) else { return false };
    // Since the termination now in force (a cancelled one had its own warning).
    let terminated = record.history.iter().rev().find(|h| h.state == State::Active).map(|h| h.at);
    let warned = record
        .notices
        .iter()
        .any(|n| n.event == crate::notices::Event::ExportWindowClosing && terminated.is_none_or(|at| n.created >= at));
    if warned || due_state(record, cfg, now) != State::ExportWindow || now < t.export_window_notice {
        return false;
    }
    record.notify(crate::notices::Event::ExportWindowClosing, now);
    true
}

/// Queue a notice for the tenant (a disclosure to an authority: the job that made it is over).
pub(crate) async fn notify(agent: &Agent, tenant: &TenantId, event: crate::notices::Event) -> Result<()> {
    let mut record = agent.lifecycle_record(tenant).await?;
    record.notify(event, crate::now());
    agent.save_lifecycle_record(&record).await
}

/// What a tick did to one tenant: the states its dates reached, and each step it ran.
#[derive(Debug, Serialize)]
pub struct TickReport {
    pub tenant: String,
    pub from: State,
    pub to: State,
    pub steps: Vec<StepOutcome>,
    /// The step that is due and cannot be taken without an operator.
    pub blocked: Option<String>,
    /// The notices the tick tried to deliver, when there were any due.
    pub notices: Option<super::notices::Delivered>,
}

#[derive(Debug, Serialize)]
pub struct StepOutcome {
    /// The job kind that ran (`final_generation`, `purge`, `expire`, `shred`, `confirm_expiry`).
    pub job: &'static str,
    /// Its error, when it failed: the next tick tries again.
    pub error: Option<String>,
}

impl TickReport {
    /// A tenant whose record could not be read or written: a failed step, and nothing else.
    pub fn failed_to_read(tenant: &TenantId, error: String) -> TickReport {
        TickReport {
            tenant: tenant.to_string(),
            from: State::Active,
            to: State::Active,
            steps: vec![StepOutcome { job: "lifecycle_tick", error: Some(error) }],
            blocked: None,
            notices: None,
        }
    }

    /// Whether the tick changed anything or tried to (a blocked step alone is not a change).
    pub fn acted(&self) -> bool {
        self.from != self.to || !self.steps.is_empty() || self.notices.as_ref().is_some_and(|n| n.sent + n.failed > 0)
    }

    pub fn failed(&self) -> bool {
        self.steps.iter().any(|s| s.error.is_some())
    }

    /// Whether a notice could not be delivered (it is retried; the lifecycle goes on).
    pub fn undelivered(&self) -> bool {
        self.notices.as_ref().is_some_and(|n| n.failed > 0)
    }
}

/// Record, for one tenant, the states its dates have reached since the last tick (the steps
/// that jobs take are [`due`]'s). A second tick at the same time changes nothing.
pub(crate) async fn tick(agent: &Agent, tenant: &TenantId, now: jiff::Timestamp) -> Result<TickReport> {
    let mut record = agent.lifecycle_record(tenant).await?;
    let from = record.state();
    let to = due_state(&record, &agent.config.lifecycle, now);
    let report = TickReport { tenant: tenant.to_string(), from, to, steps: Vec::new(), blocked: None, notices: None };
    if to == from {
        if warn_before_the_window_closes(&mut record, &agent.config.lifecycle, now) {
            agent.save_lifecycle_record(&record).await?;
        }
        return Ok(report);
    }
    // Each state it passed through, in order: a tick after a long pause records both steps.
    for s in [State::ExportWindow, State::Safeguard, State::Expiring] {
        if s > from && s <= to {
            record.enter(s, now, super::AGENT_ACTOR);
        }
    }
    warn_before_the_window_closes(&mut record, &agent.config.lifecycle, now);
    agent.save_lifecycle_record(&record).await?;
    Ok(report)
}
