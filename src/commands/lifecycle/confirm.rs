//! `expiry confirm`: the deletion verified by listing the store and the host, never from what
//! the record says was done; and the certificates, which carry what that verification saw.

use serde::Serialize;

use super::Step;
use crate::certificate::{self, Attestation, Certificate, Kind, Listing, Sanitization, Tool, Verification};
use crate::commands::certificate::Issued;
use crate::commands::{Agent, Error, Result};
use crate::lifecycle::{Record, SourceDeletion, State, Timeline};
use crate::repository::layout;
use crate::signed::Signed;
use crate::tenant::TenantId;

/// What a listing of everything that could still hold the tenant's data found.
#[derive(Debug, Serialize)]
pub struct Scan {
    pub listings: Vec<Listing>,
    pub key_copies: crate::keys::KeyCopies,
    pub local_files: Vec<std::path::PathBuf>,
    pub local_key_present: bool,
    /// Everything found, named: empty when the deletion is complete.
    pub blockers: Vec<String>,
}

/// How many of the objects found a blocker names before it counts the rest.
const NAMED: usize = 5;

/// List every object version and delete marker under `tenants/<t>/` and `exports/<t>/`, open
/// every keystore snapshot version, and look for the tenant's files in the state folder and
/// its key in the local keystore.
pub(crate) async fn scan(agent: &Agent, tenant: &TenantId) -> Result<Scan> {
    let mut blockers = Vec::new();
    let mut listings = Vec::new();
    for prefix in [layout::tenant(tenant), layout::exports(Some(tenant))] {
        let found = agent.store.list_versions(&prefix).await?;
        let markers = found.iter().filter(|v| v.delete_marker).count() as u64;
        if !found.is_empty() {
            let names: Vec<String> = found.iter().take(NAMED).map(crate::keys::version_name).collect();
            blockers.push(format!("{} object versions under {prefix}: {}", found.len(), names.join(", ")));
        }
        listings.push(Listing { prefix, versions: found.len() as u64 - markers, delete_markers: markers });
    }
    let key_copies = agent.key_copies(tenant).await?;
    for v in &key_copies.holding {
        blockers.push(format!("keystore snapshot {} still holds the key", crate::keys::version_name(v)));
    }
    for v in &key_copies.unreadable {
        blockers.push(format!(
            "keystore snapshot {} does not open with the master key, so it cannot be shown not to hold the key",
            crate::keys::version_name(v)
        ));
    }
    let local_files = super::local_files(agent, tenant)?;
    for f in &local_files {
        blockers.push(format!("local file {} is still there", f.display()));
    }
    let local_key_present = agent.holds_key(tenant);
    if local_key_present {
        blockers.push(format!("this agent's keystore still holds the key of tenant {tenant}"));
    }
    Ok(Scan { listings, key_copies, local_files, local_key_present, blockers })
}

#[derive(Debug, Serialize)]
pub struct ConfirmReport {
    pub tenant: String,
    pub state: State,
    /// Whether this repeated the verification of a deletion confirmed before.
    pub recheck: bool,
    pub scan: Scan,
    /// The certificate issued (final, or partial while the replicas are pending); none on a
    /// re-check.
    pub certificate: Option<Issued>,
}

/// Verify that the tenant's data are gone. Anything found fails it (exit 6, nothing issued),
/// and fails a re-check of a confirmed tenant the same way: something came back.
pub(crate) async fn confirm(step: &Step<'_>, tenant: &TenantId) -> Result<ConfirmReport> {
    let agent = step.agent;
    let mut record = agent.lifecycle_record(tenant).await?;
    let state = super::due_state(&record, &agent.config.lifecycle, step.now);
    if state < State::Shredded {
        return Err(Error::NotAllowed(format!(
            "tenant {tenant} is {}: a deletion is confirmed once its generations expired and its key was shredded \
             (`reversa tenant status {tenant}`)",
            state.name()
        )));
    }
    let recheck = state == State::Confirmed;
    let scan = scan(agent, tenant).await?;
    if !scan.blockers.is_empty() {
        // Told once per failure, not at every hourly tick that finds it still there.
        let since = record.confirmed.last().copied();
        let told = record
            .notices
            .iter()
            .any(|n| n.event == crate::notices::Event::RecheckFailed && since.is_none_or(|c| n.created > c));
        if recheck && !told {
            record.notify(crate::notices::Event::RecheckFailed, step.now);
            agent.save_lifecycle_record(&record).await?;
        }
        let what = if recheck { "the re-check of the confirmed deletion" } else { "the deletion" };
        return Err(Error::Remains(format!(
            "{what} of tenant {tenant} is not complete, no certificate was issued: {}",
            scan.blockers.join("; ")
        )));
    }
    let timeline = Timeline::of_record(&record, &agent.config.lifecycle).expect("a shredded tenant is terminated");
    let certificate = match (recheck, step.now >= timeline.replicas_expire) {
        (true, _) => None,
        (false, true) => {
            record.enter(State::Confirmed, step.now, step.actor);
            Some(issue(step, &mut record, &scan, Kind::Final).await?)
        }
        (false, false) => Some(issue(step, &mut record, &scan, Kind::Partial).await?),
    };
    if recheck || certificate.as_ref().is_some_and(|c| c.kind == Kind::Final) {
        record.confirmed.push(step.now);
    }
    agent.save_lifecycle_record(&record).await?;
    let state = record.state();
    Ok(ConfirmReport { tenant: tenant.to_string(), state, recheck, scan, certificate })
}

/// Scan, then issue the partial certificate of where `record` stands (at the purge, at the
/// shred). The caller saves the record only after this succeeded, so a step whose certificate
/// could not be issued is not recorded, and runs again.
pub(crate) async fn certify(step: &Step<'_>, record: &mut Record) -> Result<Issued> {
    let scan = scan(step.agent, &TenantId::parse(&record.tenant)?).await?;
    issue(step, record, &scan, Kind::Partial).await
}

/// Sign and store a certificate of where `record` stands, and queue its notice in the record
/// (which the caller saves).
async fn issue(step: &Step<'_>, record: &mut Record, scan: &Scan, kind: Kind) -> Result<Issued> {
    let agent = step.agent;
    let cfg = &agent.config.lifecycle;
    let timeline = Timeline::of_record(record, cfg).expect("a certified tenant is terminated");
    let (seq, hash) = agent.audit.head()?;
    let mut cert = Certificate {
        format: certificate::FORMAT,
        id: crate::sortable_id_at(jiff::Timestamp::now()),
        kind,
        tenant: record.tenant.clone(),
        contract_end: timeline.contract_end,
        issued_at: step.now,
        sanitization: sanitization(agent, &*record),
        tool: Tool { name: "reversa".into(), version: env!("CARGO_PKG_VERSION").into() },
        verification: verification(agent, scan).await?,
        pending: pending(&*record, &timeline, scan, step.now),
        disclosures: crate::commands::certificate::delivered(agent, &record.tenant).await?,
        attestations: attestations(&*record, &timeline, cfg.replica_retention_days),
        actor: step.actor.to_string(),
        agent: agent.audit.agent_id().to_string(),
        audit_head: certificate::AuditHead { seq, hash },
        timeline,
        signature: String::new(),
    };
    cert.signature = agent.audit.sign(&cert.signed_bytes());
    let issued = crate::commands::certificate::store(agent, &cert).await?;
    record.notify(crate::notices::Event::CertificateIssued { id: issued.id.clone(), certificate: kind }, step.now);
    Ok(issued)
}

fn sanitization(agent: &Agent, record: &Record) -> Sanitization {
    let mut steps = Vec::new();
    if let Some(p) = &record.purge {
        steps.push(format!("{}: final generation {} read back whole (check --read-data)", p.at, p.final_generation));
        steps.push(match &p.source {
            SourceDeletion::DeletedByReversa => {
                format!("{}: source database and files deleted by reversa, verified gone", p.at)
            }
            SourceDeletion::ConfirmedBy(by) => {
                format!("{}: source database and files deleted by {by} (attested)", p.at)
            }
        });
        steps
            .push(format!("{}: {} extra paths (application logs) deleted, verified gone", p.at, p.extra_paths_deleted));
        steps.push(format!("{}: {} object versions of uploaded exports deleted", p.at, p.exports_deleted));
    }
    if let Some(s) = &record.shred {
        steps.push(format!(
            "{}: data key destroyed (cryptographic erase); keystore snapshot {} written without it; {} snapshot \
             versions holding it deleted",
            s.at,
            s.snapshot,
            s.snapshots_deleted.len()
        ));
    }
    if let Some(e) = &record.expiry {
        steps.push(format!(
            "{}: {} generations expired; {} object versions and delete markers deleted",
            e.at, e.generations, e.versions_deleted
        ));
    }
    let crate::config::SourceConfig::Sqlite { root, .. } = &agent.config.source;
    Sanitization {
        category: "purge".into(),
        technique: "cryptographic erase of the tenant's AES-256 data key, then deletion of every object and object \
                    version"
            .into(),
        media: vec![
            format!("object storage {}", agent.store.describe()),
            format!("source {}", root.join(&record.tenant).display()),
        ],
        steps,
    }
}

async fn verification(agent: &Agent, scan: &Scan) -> Result<Verification> {
    let (bucket, region) = match &agent.config.store {
        crate::config::StoreConfig::S3(c) => (Some(c.bucket.clone()), Some(c.region.clone())),
        crate::config::StoreConfig::Dir { .. } => (None, None),
    };
    Ok(Verification {
        method: "listing of every object version and delete marker (ListObjectVersions) under the tenant's \
                 prefixes; every keystore snapshot version opened and read; the state folder and the local keystore \
                 searched"
            .into(),
        store: agent.store.describe(),
        bucket,
        region,
        versioning: agent.store.versioning().await?,
        listings: scan.listings.clone(),
        keystore_snapshots_checked: scan.key_copies.checked.clone(),
        keystore_snapshots_holding_key: scan.key_copies.holding.len() as u64,
        local_key_present: scan.local_key_present,
        local_files_found: scan.local_files.len() as u64,
    })
}

fn pending(record: &Record, t: &Timeline, scan: &Scan, now: jiff::Timestamp) -> Vec<String> {
    let mut out = Vec::new();
    if record.expiry.is_none() {
        out.push(format!("the backup generations, until they expire on {}", t.backups_expire));
    }
    if record.shred.is_none() {
        out.push("the tenant's data key, destroyed when its generations expire".into());
    }
    if now < t.replicas_expire {
        out.push(format!("the provider's VM replicas of the source, until {} (attested)", t.replicas_expire));
    }
    if record.expiry.is_some() && record.shred.is_some() {
        out.extend(scan.blockers.iter().cloned());
    }
    out
}

fn attestations(record: &Record, t: &Timeline, replica_days: i64) -> Vec<Attestation> {
    let mut out = Vec::new();
    if let Some(SourceDeletion::ConfirmedBy(by)) = record.purge.as_ref().map(|p| &p.source) {
        out.push(Attestation {
            what: "the tenant's source database, files and logs were deleted".into(),
            by: by.clone(),
        });
    }
    out.push(Attestation {
        what: format!(
            "the provider's VM replicas of the source are kept {replica_days} days after the purge, until {}",
            t.replicas_expire
        ),
        by: "the provider ([lifecycle] replica_retention_days)".into(),
    });
    out
}
