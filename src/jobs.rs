//! Jobs: the one way every operation on a tenant runs, from the CLI and (later) the daemon.
//!
//! [`run`] takes a [`Job`] (what to do, on which tenant, by whom, why) and a cancellation token,
//! and then, in this order: writes the audit log's start entry; opens the tenant's repository;
//! takes the tenant lock when the task writes, wired to cancel the job if the lock is lost;
//! runs the verb inside a tracing span, until it ends or is cancelled; releases the lock on
//! every way out (success, error, cancellation, panic); writes the end entry, with the outcome
//! (or the error's kind), the counts, the ids and hashes of what was produced and, for a
//! disclosure, the register's record.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::audit::{self, AuditLog, Disclosure, Entry, Event, Produced, RecipientKind};
use crate::commands::lifecycle::Due;
use crate::commands::{backup, check, export, forget, generations, lifecycle, prune, restore, Agent, Error, Result};
use crate::progress::Progress;
use crate::repository::lock::{LockInfo, TenantLock};
use crate::repository::Repository;
use crate::tenant::TenantId;

/// How long a cancelled verb has to stop on its own (its readers watch the token) before it is
/// dropped where it stands. Dropping is safe too (an upload aborts, the lock is removed), only
/// less tidy.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// `backup` is asked nothing beyond the tenant; the struct is where options will go, and what
/// the daemon takes as a request body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupOptions {}

/// Place a legal hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldOptions {
    pub generation: String,
}

/// Lift a legal hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseOptions {
    pub generation: String,
}

/// What a job does, with the verb's options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    Backup(BackupOptions),
    Restore(restore::RestoreOptions),
    Check(check::CheckOptions),
    Forget(forget::ForgetOptions),
    Prune(prune::PruneOptions),
    Export(export::ExportOptions),
    Hold(HoldOptions),
    Release(ReleaseOptions),
    /// Remove a tenant's stale lock.
    Unlock,
    /// Check the store's keystore snapshots (`--repair`: replace them when they fall short).
    CheckKeystore {
        repair: bool,
    },
    /// Remove the uploaded exports past `[exports] keep_days`.
    PruneExports,
    /// Initialize the store and the keystore (`reversa init`, which has no agent yet).
    Init {
        create_bucket: bool,
        generate_master_key: bool,
    },
    /// Record the designated administrator and the contacts (sealed, never in the audit log).
    TenantSet(lifecycle::SetOptions),
    /// Set the contract end.
    Terminate(lifecycle::TerminateOptions),
    /// Undo a termination during the export window.
    CancelTermination,
    /// Record the states every tenant's dates have reached and run the steps that are due
    /// (`now`: a simulated time, recorded).
    LifecycleTick {
        now: Option<jiff::Timestamp>,
    },
    /// Take the generation the safeguard keeps (a tick, when the safeguard begins).
    FinalGeneration,
    /// Delete the tenant's source at the end of the safeguard.
    Purge(lifecycle::purge::PurgeOptions),
    /// Delete every generation of a purged tenant once they have expired.
    Expire,
    /// Destroy the tenant's data key (cryptographic erase).
    Shred,
    /// Verify by listing that the tenant's data are gone; issue the certificate.
    ConfirmExpiry,
    /// An extraordinary extraction from the final generation, during the safeguard.
    Extract(crate::commands::extraction::ExtractionOptions),
    /// Deliver the tenant's notices that are due (a tick).
    DeliverNotices,
    /// Restore a generation into scratch space, check it, time it, and sign the report.
    Drill(crate::commands::drill::DrillOptions),
}

impl Task {
    /// The job kind, as the audit log and the metrics name it.
    pub fn name(&self) -> &'static str {
        match self {
            Task::Backup(_) => "backup",
            Task::Restore(_) => "restore",
            Task::Check(_) => "check",
            Task::Forget(_) => "forget",
            Task::Prune(_) => "prune",
            Task::Export(_) => "export",
            Task::Hold(_) => "hold",
            Task::Release(_) => "release",
            Task::Unlock => "unlock",
            Task::CheckKeystore { .. } => "check_keystore",
            Task::PruneExports => "prune_exports",
            Task::Init { .. } => "init",
            Task::TenantSet(_) => "tenant_set",
            Task::Terminate(_) => "terminate",
            Task::CancelTermination => "cancel_termination",
            Task::LifecycleTick { .. } => "lifecycle_tick",
            Task::FinalGeneration => "final_generation",
            Task::Purge(_) => "purge",
            Task::Expire => "expire",
            Task::Shred => "shred",
            Task::ConfirmExpiry => "confirm_expiry",
            Task::Extract(_) => "extraordinary_export",
            Task::DeliverNotices => "deliver_notices",
            Task::Drill(_) => "drill",
        }
    }

    /// Whether the task opens the tenant's repository, and whether it may give a tenant seen
    /// for the first time its key.
    fn repository(&self) -> Option<bool> {
        match self {
            Task::Backup(_) => Some(true),
            Task::Restore(_)
            | Task::Check(_)
            | Task::Forget(_)
            | Task::Prune(_)
            | Task::Hold(_)
            | Task::Release(_)
            | Task::FinalGeneration
            | Task::Purge(_)
            | Task::Extract(_)
            | Task::Drill(_) => Some(false),
            _ => None,
        }
    }

    /// The purpose written in the tenant lock, when the task writes to the tenant's repository.
    /// A release takes none: a `forget` running meanwhile still sees the hold and keeps the
    /// generation, which is what it would have done a moment earlier.
    fn lock_purpose(&self) -> Option<&'static str> {
        match self {
            Task::Backup(_) | Task::FinalGeneration => Some("backup"),
            Task::Purge(_) => Some("purge"),
            Task::Forget(o) if !o.dry_run => Some("forget"),
            Task::Prune(o) if o.dry_run => Some("prune --dry-run"),
            Task::Prune(_) => Some("prune"),
            Task::Hold(_) => Some("hold"),
            // Two agents changing one record: the second waits, instead of overwriting unseen.
            Task::TenantSet(_) | Task::Terminate(_) | Task::CancelTermination => Some("lifecycle"),
            // The expiry takes it itself (its lock objects are among what it deletes, after the
            // release); the shred and the confirmation take none: a lock object is what they
            // must find none of.
            _ => None,
        }
    }

    /// What the lifecycle must allow before the task runs.
    fn lifecycle_use(&self) -> Option<crate::lifecycle::Use> {
        match self {
            Task::Backup(_) => Some(crate::lifecycle::Use::Backup),
            Task::Export(_) => Some(crate::lifecycle::Use::Export),
            Task::Forget(_) => Some(crate::lifecycle::Use::Forget),
            Task::Restore(_) => Some(crate::lifecycle::Use::Restore),
            _ => None,
        }
    }

    /// Whether the task gives tenant data to someone outside the agent (the register's rule).
    pub fn discloses(&self) -> bool {
        matches!(self, Task::Export(_) | Task::Restore(_) | Task::Extract(_))
    }
}

/// Who receives what a disclosing job gives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    pub name: String,
    #[serde(default)]
    pub kind: RecipientKind,
    /// Required for an authority: the law or order under which it asked.
    #[serde(default)]
    pub legal_basis: Option<String>,
}

/// Who asks for jobs and why: what every entry they write records.
#[derive(Debug, Clone)]
pub struct Who {
    pub actor: String,
    pub reason: Option<String>,
    pub ticket: Option<String>,
}

/// One job: the task, its tenant, who asks and why.
#[derive(Debug, Clone)]
pub struct Job {
    pub task: Task,
    pub tenant: Option<TenantId>,
    pub actor: String,
    pub reason: Option<String>,
    pub ticket: Option<String>,
    /// Required when the task discloses.
    pub recipient: Option<Recipient>,
}

impl Job {
    pub fn new(task: Task, tenant: Option<TenantId>, actor: &str) -> Job {
        Job { task, tenant, actor: actor.to_string(), reason: None, ticket: None, recipient: None }
    }

    /// A job asked by `who`.
    pub fn by(task: Task, tenant: Option<TenantId>, who: &Who) -> Job {
        Job { reason: who.reason.clone(), ticket: who.ticket.clone(), ..Job::new(task, tenant, &who.actor) }
    }

    /// Refuse, before anything is written, a job that lacks what its task needs.
    pub fn validate(&self) -> Result<()> {
        let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
        if self.task.discloses() {
            let Some(r) = &self.recipient else {
                return Err(Error::Usage(format!(
                    "{} gives the tenant's data to someone, so the disclosure register needs to whom: give \
                     --recipient NAME (and --recipient-kind customer, authority or provider); nothing was written",
                    self.task.name()
                )));
            };
            if r.name.trim().is_empty() {
                return Err(Error::Usage("--recipient is empty; name who receives the data".into()));
            }
            if r.kind == RecipientKind::Authority && blank(&r.legal_basis) {
                return Err(Error::Usage(
                    "a disclosure to an authority needs its legal basis: give --legal-basis TEXT (the law, order \
                     or request reference); nothing was written"
                        .into(),
                ));
            }
        }
        if matches!(self.task, Task::Extract(_)) && (blank(&self.ticket) || blank(&self.reason)) {
            return Err(Error::Usage(
                "an extraordinary extraction needs the request it answers: give --ticket ID and --reason TEXT; \
                 nothing was written"
                    .into(),
            ));
        }
        if self.tenant.is_none() && self.task.repository().is_some() {
            return Err(Error::Usage(format!("{} needs a tenant", self.task.name())));
        }
        Ok(())
    }

    fn entry(&self, event: Event, id: &str) -> Entry {
        let mut e = Entry::new(event, &self.actor);
        e.job = Some(id.to_string());
        e.kind = Some(self.task.name().to_string());
        e.tenant = self.tenant.as_ref().map(|t| t.to_string());
        e.reason = self.reason.clone();
        e.ticket = self.ticket.clone();
        e.simulated_now = crate::simulated_now().map(|t| t.to_string());
        e
    }

    fn start_entry(&self, id: &str) -> Entry {
        let mut e = self.entry(Event::Start, id);
        let mut options = serde_json::to_value(&self.task).expect("options serialize");
        if let Some(map) = options.as_object_mut() {
            map.remove("kind");
        }
        e.options = Some(options);
        // To whom, before anything is given: a job killed after writing data still names its
        // recipient. The counts are the end entry's.
        if let Some(r) = &self.recipient {
            e.disclosure = Some(self.disclosure(r, disclosed(None, 0, 0, 0, 0, None)));
        }
        e
    }

    fn disclosure(&self, r: &Recipient, what: Disclosure) -> Disclosure {
        let query_sha256 = match &self.task {
            Task::Extract(o) => o.query.as_deref().map(crate::commands::extraction::query_sha256),
            _ => None,
        };
        Disclosure {
            recipient: r.name.trim().to_string(),
            recipient_kind: r.kind,
            legal_basis: r.legal_basis.clone(),
            notify_customer: r.kind == RecipientKind::Authority,
            query_sha256,
            ..what
        }
    }

    fn end_entry(&self, id: &str, result: &Result<Report>) -> Entry {
        let mut e = self.entry(Event::End, id);
        match result {
            Ok(report) => {
                e.outcome = Some(audit::Outcome::Ok);
                let ev = report.evidence();
                e.counts = ev.counts;
                e.produced = ev.produced;
                if let (Some(r), Some(d)) = (&self.recipient, ev.disclosed) {
                    e.disclosure = Some(self.disclosure(r, d));
                }
            }
            Err(err) => {
                e.outcome = Some(audit::Outcome::Failed);
                e.error_kind = Some(err.kind());
            }
        }
        e
    }
}

/// What a job gave back: the verb's report.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Report {
    Backup(backup::BackupReport),
    Restore(restore::RestoreReport),
    Check(Box<check::CheckReport>),
    Forget(forget::ForgetReport),
    Prune(prune::PruneReport),
    Export(Box<export::ExportReport>),
    Hold(generations::HoldReport),
    Release(generations::ReleaseReport),
    Unlock(Vec<(String, LockInfo)>),
    CheckKeystore(crate::keys::SnapshotCheck),
    PruneExports(export::PruneReport),
    Init(crate::commands::init::InitReport),
    TenantSet(lifecycle::SetReport),
    Lifecycle(lifecycle::Status),
    LifecycleTick(Vec<lifecycle::TickReport>),
    Purge(Box<lifecycle::purge::PurgeReport>),
    Expire(lifecycle::expiry::ExpireReport),
    Shred(lifecycle::expiry::ShredReport),
    Confirm(Box<lifecycle::confirm::ConfirmReport>),
    Notices(crate::commands::notices::Delivered),
    Drill(Box<crate::drill::Report>),
}

/// What the audit log keeps of a report: counts, and the ids and hashes of what was produced.
#[derive(Default)]
struct Evidence {
    counts: BTreeMap<String, u64>,
    produced: Vec<Produced>,
    /// The register's "what", for a report of data given out.
    disclosed: Option<Disclosure>,
}

impl Evidence {
    fn count(mut self, name: &str, n: impl TryInto<u64>) -> Self {
        self.counts.insert(name.to_string(), n.try_into().unwrap_or(u64::MAX));
        self
    }
    fn produced(mut self, what: &str, id: &str, sha256: Option<&str>) -> Self {
        self.produced.push(Produced { what: what.into(), id: id.into(), sha256: sha256.map(String::from) });
        self
    }
    fn certificate(self, c: Option<&crate::commands::certificate::Issued>) -> Self {
        match c {
            Some(c) => self.produced("certificate", &c.id, Some(&c.sha256)),
            None => self,
        }
    }
    fn shred(self, r: Option<&lifecycle::expiry::ShredReport>) -> Self {
        match r {
            Some(r) => self
                .count("key_snapshots_deleted", r.shred.snapshots_deleted.len())
                .produced("keystore_snapshot", &r.shred.snapshot, None)
                .certificate(Some(&r.certificate)),
            None => self,
        }
    }
}

fn disclosed(
    generation: Option<&str>,
    tables: u64,
    rows: u64,
    files: u64,
    bytes: u64,
    sha: Option<&str>,
) -> Disclosure {
    Disclosure {
        recipient: String::new(),
        recipient_kind: RecipientKind::Customer,
        legal_basis: None,
        notify_customer: false,
        generation: generation.map(String::from),
        tables,
        rows,
        files,
        bytes,
        sha256: sha.map(String::from),
        query_sha256: None,
    }
}

impl Report {
    fn evidence(&self) -> Evidence {
        let ev = Evidence::default();
        match self {
            Report::Backup(r) => {
                let s = &r.manifest.summary;
                ev.count("tables", s.tables)
                    .count("rows", s.rows)
                    .count("files", s.files)
                    .count("bytes_read", s.bytes_read)
                    .count("bytes_added", s.bytes_added)
                    .count("warnings", r.warnings.len())
                    .produced("generation", &r.manifest.id, Some(&r.manifest_sha256))
            }
            Report::Restore(r) => {
                let mut ev = ev
                    .count("tables", r.tables)
                    .count("rows", r.rows)
                    .count("files", r.files)
                    .count("bytes", r.bytes)
                    .count("lost", r.lost.len());
                ev.disclosed = Some(disclosed(Some(&r.generation), r.tables, r.rows, r.files, r.bytes, None));
                ev
            }
            Report::Export(r) => {
                let rows = r.tables.iter().map(|t| t.rows).sum();
                let generation = match &r.source {
                    crate::export::SourceInfo::Generation { id, .. } => Some(id.as_str()),
                    crate::export::SourceInfo::Live { .. } => None,
                };
                let mut ev = ev
                    .count("tables", r.tables.len())
                    .count("rows", rows)
                    .count("files", r.files)
                    .count("bytes", r.bytes)
                    .count("parts", r.parts.len())
                    .count("uploaded", r.uploaded.len())
                    .produced("export", &r.export_id, Some(&r.sha256));
                let (tables, files) = (r.tables.len() as u64, r.files);
                ev.disclosed = Some(disclosed(generation, tables, rows, files, r.bytes, Some(&r.sha256)));
                ev
            }
            Report::Check(r) => ev
                .count("generations", r.generations)
                .count("packs", r.packs)
                .count("blobs", r.blobs)
                .count("blobs_read", r.blobs_read)
                .count("bytes_read", r.bytes_read)
                .count("problems", r.problems.len()),
            Report::Forget(r) => {
                ev.count("kept", r.kept).count("forgotten", r.forgotten).count("problems", r.problems.len())
            }
            Report::Prune(r) => ev
                .count("packs_deleted", r.packs_deleted)
                .count("packs_repacked", r.packs_repacked)
                .count("bytes_freed", r.bytes_freed),
            Report::Hold(r) => ev.produced("hold", &r.hold.generation, None),
            Report::Release(r) => ev.produced("released", &r.generation, None),
            Report::Unlock(removed) => ev.count("locks_removed", removed.len()),
            Report::CheckKeystore(k) => {
                let ev = ev.count("snapshots", k.snapshots).count("problems", k.problems.len());
                match &k.uploaded {
                    Some(id) => ev.produced("keystore_snapshot", id, None),
                    None => ev,
                }
            }
            Report::PruneExports(r) => ev.count("removed", r.removed.len()).count("kept", r.kept),
            Report::Init(r) => ev.count("keys_recovered", r.recovery.as_ref().map_or(0, |rec| rec.keys.len())),
            Report::TenantSet(r) => ev.count("contacts", r.contacts),
            Report::Lifecycle(s) => ev.produced("state", s.state.name(), None),
            Report::LifecycleTick(_)
            | Report::Purge(_)
            | Report::Expire(_)
            | Report::Shred(_)
            | Report::Notices(_)
            | Report::Drill(_)
            | Report::Confirm(_) => self.lifecycle_evidence(ev),
        }
    }

    /// The evidence of the lifecycle's steps, the drills and the notices.
    fn lifecycle_evidence(&self, ev: Evidence) -> Evidence {
        match self {
            Report::LifecycleTick(ticked) => {
                let moved: Vec<_> = ticked.iter().filter(|t| t.from != t.to).collect();
                let ev = ev
                    .count("transitions", moved.len())
                    .count("steps", ticked.iter().map(|t| t.steps.len()).sum::<usize>())
                    .count("failed", ticked.iter().filter(|t| t.failed()).count());
                moved.iter().fold(ev, |ev, m| ev.produced(&format!("state:{}", m.to.name()), &m.tenant, None))
            }
            Report::Purge(r) => ev
                .count("extra_paths_deleted", r.purge.extra_paths_deleted)
                .count("exports_deleted", r.purge.exports_deleted)
                .count("blobs_read", r.final_blobs_read)
                .produced("final_generation", &r.purge.final_generation, None)
                .certificate(r.certificate.as_ref())
                .shred(r.shred.as_ref()),
            Report::Expire(r) => ev
                .count("generations", r.expiry.generations)
                .count("versions_deleted", r.expiry.versions_deleted)
                .shred(r.shred.as_ref()),
            Report::Shred(r) => ev.shred(Some(r)),
            Report::Notices(d) => ev.count("sent", d.sent).count("failed", d.failed),
            Report::Drill(r) => {
                use crate::signed::Signed;
                let failed = r.tests.iter().filter(|t| t.outcome == crate::drill::Outcome::Fail).count();
                ev.count("tables", r.tables.len())
                    .count("files", r.files)
                    .count("bytes_read", r.bytes_read)
                    .count("tests_failed", failed)
                    .count("restore_ms", (r.restore_seconds * 1000.0) as u64)
                    .produced("drill_report", &r.id, Some(&r.digest()))
            }
            Report::Confirm(r) => ev
                .count("key_snapshots_checked", r.scan.key_copies.checked.len())
                .count("blockers", r.scan.blockers.len())
                .certificate(r.certificate.as_ref()),
            _ => ev,
        }
    }
}

/// Run `job` on `agent`'s store, audited, until it ends or `cancel` is cancelled.
pub async fn run(agent: &Agent, job: &Job, cancel: &CancellationToken, progress: &dyn Progress) -> Result<Report> {
    // Boxed: the verbs' futures are large (an export's pipeline), and a caller polling this on
    // a small stack (a test thread, a daemon task) must not hold them inline.
    let id = crate::sortable_id_at(jiff::Timestamp::now());
    let result = audited_as(&agent.audit, job, &id, Box::pin(execute(agent, job, cancel, progress))).await;
    if let (Ok(_), Some(tenant), Some(r)) = (&result, &job.tenant, &job.recipient) {
        if r.kind == RecipientKind::Authority {
            let event = crate::notices::Event::DisclosureToAuthority {
                job: id.clone(),
                recipient: r.name.clone(),
                legal_basis: r.legal_basis.clone().unwrap_or_default(),
            };
            // The data are given; a notice that cannot be queued leaves the disclosure pending
            // in the register (`disclosures --pending-notices`), which is where it is seen.
            if let Err(e) = lifecycle::notify(agent, tenant, event).await {
                tracing::warn!(error = %e, "the customer's notice of a disclosure to an authority could not be queued");
            }
        }
    }
    result
}

/// Write the start entry, run `work`, write the end entry. Also for `init`, which runs before
/// there is an agent.
pub async fn audited(log: &AuditLog, job: &Job, work: impl Future<Output = Result<Report>>) -> Result<Report> {
    audited_as(log, job, &crate::sortable_id_at(jiff::Timestamp::now()), work).await
}

async fn audited_as(log: &AuditLog, job: &Job, id: &str, work: impl Future<Output = Result<Report>>) -> Result<Report> {
    job.validate()?;
    let tenant = job.tenant.as_ref().map(|t| t.to_string()).unwrap_or_default();
    let span = tracing::info_span!("job", job = %id, kind = job.task.name(), tenant = %tenant);
    async {
        log.append(job.start_entry(id))?;
        let result = AssertUnwindSafe(work).catch_unwind().await.unwrap_or_else(|p| Err(panicked(p)));
        log.append(job.end_entry(id, &result))?;
        result
    }
    .instrument(span)
    .await
}

fn panicked(payload: Box<dyn std::any::Any + Send>) -> Error {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    Error::Failed(format!("the job stopped on an internal error (a bug; please report it): {what}"))
}

async fn execute(agent: &Agent, job: &Job, cancel: &CancellationToken, progress: &dyn Progress) -> Result<Report> {
    // The job's own token: the caller's cancellation (a signal, a shutdown) reaches it, and a
    // lost lock cancels this job alone, not the others of the same run.
    let cancel = &cancel.child_token();
    let repo = match (job.task.repository(), &job.tenant) {
        (Some(create), Some(t)) => Some(agent.repository(t, create).await?),
        _ => None,
    };
    if let (Some(t), Some(what)) = (&job.tenant, job.task.lifecycle_use()) {
        let state = agent.lifecycle_state(t).await?;
        crate::lifecycle::allows(t.as_str(), state, what).map_err(Error::NotAllowed)?;
    }
    let lock = match (job.task.lock_purpose(), &job.tenant) {
        (Some(purpose), Some(t)) => {
            Some(TenantLock::acquire(agent.store.clone(), t, purpose, agent.config.lock.refresh, cancel.clone()).await?)
        }
        _ => None,
    };
    let result = until_cancelled(dispatch(agent, job, repo.as_ref(), cancel, progress), cancel).await;
    let Some(lock) = lock else { return result };
    let lost = lock.lost().map(String::from);
    if let Err(e) = lock.release().await {
        tracing::warn!(error = %e, "could not release the tenant lock; it expires");
    }
    match lost {
        Some(why) => Err(Error::LockLost(why)),
        None => result,
    }
}

/// Run `verb` to its end; once `cancel` fires, give it [`CANCEL_GRACE`] to stop on its own,
/// then drop it. A verb that failed because it was cancelled fails as cancelled; a failure of
/// another kind found meanwhile (damage, a store that did not answer) keeps its kind.
async fn until_cancelled(verb: impl Future<Output = Result<Report>>, cancel: &CancellationToken) -> Result<Report> {
    let mut verb = std::pin::pin!(AssertUnwindSafe(verb).catch_unwind());
    let result = tokio::select! {
        r = &mut verb => r,
        _ = cancel.cancelled() => match tokio::time::timeout(CANCEL_GRACE, &mut verb).await {
            Ok(r) => r,
            Err(_) => Ok(Err(Error::Cancelled)),
        },
    };
    match result.unwrap_or_else(|p| Err(panicked(p))) {
        Err(e) if cancel.is_cancelled() && e.kind() == crate::commands::ErrorKind::Internal => Err(Error::Cancelled),
        r => r,
    }
}

async fn dispatch(
    agent: &Agent,
    job: &Job,
    repo: Option<&Repository>,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<Report> {
    let repo = || repo.ok_or_else(|| Error::Usage(format!("{} needs a tenant", job.task.name())));
    let tenant = || job.tenant.as_ref().ok_or_else(|| Error::Usage(format!("{} needs a tenant", job.task.name())));
    Ok(match &job.task {
        Task::Backup(_) => Report::Backup(Box::pin(backup::backup(agent, repo()?, cancel, progress)).await?),
        Task::Restore(o) => Report::Restore(Box::pin(restore::restore(agent, repo()?, o, cancel, progress)).await?),
        Task::Check(o) => Report::Check(Box::new(Box::pin(check::check(agent, repo()?, o, progress)).await?)),
        Task::Forget(o) => Report::Forget(forget::forget(agent, repo()?, o).await?),
        Task::Prune(o) => Report::Prune(Box::pin(prune::prune(agent, repo()?, o, progress)).await?),
        Task::Export(o) => {
            Report::Export(Box::new(Box::pin(export::export(agent, tenant()?, o, cancel, progress)).await?))
        }
        Task::Hold(o) => {
            Report::Hold(generations::hold(repo()?, &o.generation, job.reason.as_deref(), &job.actor).await?)
        }
        Task::Release(o) => Report::Release(generations::release(repo()?, &o.generation).await?),
        Task::Unlock => Report::Unlock(crate::repository::lock::remove_stale(&*agent.store, tenant()?).await?),
        Task::CheckKeystore { repair } => Report::CheckKeystore(agent.check_keystore(*repair).await?),
        Task::PruneExports => Report::PruneExports(export::prune_exports(agent, jiff::Timestamp::now()).await?),
        Task::Init { .. } => {
            return Err(Error::Usage("init runs through `commands::init`, before an agent exists".into()))
        }
        Task::TenantSet(o) => Report::TenantSet(lifecycle::set(agent, tenant()?, o).await?),
        Task::Terminate(o) => {
            Report::Lifecycle(lifecycle::terminate(agent, tenant()?, o, job.reason.as_deref(), &job.actor).await?)
        }
        Task::CancelTermination => {
            Report::Lifecycle(lifecycle::cancel_termination(agent, tenant()?, &job.actor).await?)
        }
        Task::LifecycleTick { now } => Report::LifecycleTick(record_dates(agent, *now).await?),
        Task::FinalGeneration => {
            Report::Backup(Box::pin(lifecycle::purge::final_generation(agent, repo()?, cancel, progress)).await?)
        }
        Task::Purge(o) => {
            let step = step(agent, job);
            Report::Purge(Box::new(Box::pin(lifecycle::purge::purge(&step, repo()?, o, cancel, progress)).await?))
        }
        Task::Expire => Report::Expire(lifecycle::expiry::expire(&step(agent, job), tenant()?, cancel).await?),
        Task::Shred => Report::Shred(lifecycle::expiry::shred(&step(agent, job), tenant()?).await?),
        Task::ConfirmExpiry => {
            Report::Confirm(Box::new(lifecycle::confirm::confirm(&step(agent, job), tenant()?).await?))
        }
        Task::Drill(o) => {
            let st = step(agent, job);
            Report::Drill(Box::new(Box::pin(crate::commands::drill::drill(&st, repo()?, o, cancel, progress)).await?))
        }
        Task::DeliverNotices => Report::Notices(Box::pin(crate::commands::notices::deliver(agent, tenant()?)).await?),
        Task::Extract(o) => {
            let (ticket, to) =
                (job.ticket.as_deref().unwrap_or_default(), job.recipient.as_ref().map(|r| r.name.as_str()));
            let st = step(agent, job);
            let run =
                crate::commands::extraction::extract(&st, ticket, to.unwrap_or_default(), repo()?, o, cancel, progress);
            Report::Export(Box::new(Box::pin(run).await?))
        }
    })
}

fn step<'a>(agent: &'a Agent, job: &'a Job) -> lifecycle::Step<'a> {
    lifecycle::Step { agent, now: crate::now(), actor: &job.actor, reason: job.reason.as_deref() }
}

/// `lifecycle tick`: one `lifecycle_tick` job records the states every tenant's dates have
/// reached, then each step that is due runs as its own job (its own audit entries, its own
/// lock), one tenant after another. A step that fails stops that tenant's steps (the next tick
/// tries it again) and not the others'. Returns the tenants where something happened.
pub async fn tick(
    agent: &Agent,
    who: &Who,
    now: Option<jiff::Timestamp>,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<Vec<lifecycle::TickReport>> {
    let Report::LifecycleTick(mut ticked) =
        Box::pin(run(agent, &Job::by(Task::LifecycleTick { now }, None, who), cancel, progress)).await?
    else {
        unreachable!("a tick job reports a tick")
    };
    for report in &mut ticked {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if report.failed() {
            continue;
        }
        let tenant = TenantId::parse(&report.tenant)?;
        // One tenant's trouble (a record that does not open, a store that failed meanwhile)
        // is its own: it is reported, and the next tenants still tick.
        if let Err(e) = Box::pin(run_due_steps(agent, &tenant, report, cancel, progress)).await {
            report.steps.push(lifecycle::StepOutcome { job: "lifecycle_tick", error: Some(e.to_string()) });
        }
        if let Err(e) = Box::pin(deliver_due_notices(agent, &tenant, report, cancel, progress)).await {
            report.steps.push(lifecycle::StepOutcome { job: "deliver_notices", error: Some(e.to_string()) });
        }
    }
    ticked.retain(|r| r.acted() || r.blocked.is_some());
    Ok(ticked)
}

/// The dates of every tenant with a lifecycle record, recorded.
async fn record_dates(agent: &Agent, asked: Option<jiff::Timestamp>) -> Result<Vec<lifecycle::TickReport>> {
    let now = crate::now();
    if asked.is_some_and(|a| a != now) {
        return Err(Error::Usage(format!(
            "--now differs from {}: give one of them (the tick and its steps run on one clock)",
            crate::NOW_ENV
        )));
    }
    let mut ticked = Vec::new();
    for t in agent.store.list_folders(crate::repository::layout::REPORTS).await? {
        let Ok(tenant) = TenantId::parse(&t) else { continue };
        match lifecycle::tick(agent, &tenant, now).await {
            Ok(report) => ticked.push(report),
            Err(e) => {
                tracing::warn!(%tenant, error = %e, "the tenant's lifecycle record could not be ticked");
                ticked.push(lifecycle::TickReport::failed_to_read(&tenant, e.to_string()));
            }
        }
    }
    Ok(ticked)
}

/// Deliver the tenant's notices that are due, as a job of its own; none due, no job.
async fn deliver_due_notices(
    agent: &Agent,
    tenant: &TenantId,
    report: &mut lifecycle::TickReport,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<()> {
    let record = agent.lifecycle_record(tenant).await?;
    if !crate::commands::notices::any_due(&record, crate::now()) {
        return Ok(());
    }
    let job = Job::new(Task::DeliverNotices, Some(tenant.clone()), crate::commands::AGENT_ACTOR);
    if let Report::Notices(d) = Box::pin(run(agent, &job, cancel, progress)).await? {
        report.notices = Some(d);
    }
    Ok(())
}

async fn run_due_steps(
    agent: &Agent,
    tenant: &TenantId,
    report: &mut lifecycle::TickReport,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<()> {
    // Each step moves the record on, so none is due twice; the bound only guards a bug.
    for _ in 0..6 {
        let record = agent.lifecycle_record(tenant).await?;
        let task = match lifecycle::due(&record, &agent.config.lifecycle, crate::now()) {
            None => break,
            Some(Due::Blocked(why)) => {
                report.blocked = Some(why);
                break;
            }
            Some(Due::FinalGeneration) => Task::FinalGeneration,
            Some(Due::Purge) => Task::Purge(Default::default()),
            Some(Due::Expire) => Task::Expire,
            Some(Due::Shred) => Task::Shred,
            Some(Due::Confirm) => Task::ConfirmExpiry,
        };
        let job = Job::new(task, Some(tenant.clone()), crate::commands::AGENT_ACTOR);
        let failed = Box::pin(run(agent, &job, cancel, progress)).await.err().map(|e| e.to_string());
        report.steps.push(lifecycle::StepOutcome { job: job.task.name(), error: failed.clone() });
        if failed.is_some() || cancel.is_cancelled() {
            break;
        }
    }
    report.to = agent.lifecycle_state(tenant).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon spawns jobs on the runtime's threads: the future of `run` must be `Send`.
    #[allow(dead_code)]
    fn run_is_send(agent: &Agent, job: &Job, cancel: &CancellationToken, progress: &dyn Progress) {
        fn send<T: Send>(_: T) {}
        send(run(agent, job, cancel, progress));
    }

    fn job(task: Task) -> Job {
        Job::new(task, Some(TenantId::parse("comune-a").unwrap()), "ops@host")
    }

    #[test]
    fn a_disclosure_needs_a_recipient_and_an_authority_its_legal_basis() {
        let restore = Task::Restore(restore::RestoreOptions {
            generation: None,
            to: "/tmp/x".into(),
            force: false,
            partial: false,
        });
        let e = job(restore.clone()).validate().unwrap_err().to_string();
        assert!(e.contains("--recipient NAME") && e.contains("nothing was written"), "{e}");
        let mut j = job(restore);
        j.recipient = Some(Recipient { name: "Procura".into(), kind: RecipientKind::Authority, legal_basis: None });
        let e = j.validate().unwrap_err().to_string();
        assert!(e.contains("--legal-basis"), "{e}");
        j.recipient.as_mut().unwrap().legal_basis = Some("art. 254 c.p.p., decree 12/2026".into());
        j.validate().unwrap();
        job(Task::Backup(BackupOptions {})).validate().unwrap();
    }

    #[test]
    fn start_entries_record_the_options_and_end_entries_the_error_kind() {
        let j = job(Task::Forget(forget::ForgetOptions { dry_run: true }));
        let start = j.start_entry("job-1");
        assert_eq!(start.options, Some(serde_json::json!({"dry_run": true})));
        assert_eq!((start.kind.as_deref(), start.tenant.as_deref()), (Some("forget"), Some("comune-a")));
        let end = j.end_entry("job-1", &Err(Error::Cancelled));
        assert_eq!(end.outcome, Some(audit::Outcome::Failed));
        assert_eq!(end.error_kind, Some(crate::commands::ErrorKind::Cancelled));
    }
}
