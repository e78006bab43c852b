//! Deletion certificates in the store (`reports/<tenant>/certificates/`, which outlives the
//! purge): written as JSON and as a printable page, shown, and verified against the agent's
//! published key and the audit log.

use bytes::Bytes;
use serde::Serialize;

use super::{Agent, Error, Result};
use crate::audit::{Event, Outcome};
use crate::certificate::{Certificate, Delivered, Kind};
use crate::repository::{layout, RepoError};
use crate::signed::Signed;
use crate::store::Body;
use crate::tenant::TenantId;

/// A certificate issued: what the job's audit entry records of it.
#[derive(Debug, Clone, Serialize)]
pub struct Issued {
    pub id: String,
    pub kind: Kind,
    /// [`Certificate::digest`].
    pub sha256: String,
    /// The store keys of its JSON and its page.
    pub json: String,
    pub html: String,
    /// The certificate itself, for `--out DIR`.
    #[serde(skip)]
    pub certificate: Box<Certificate>,
}

/// Put a signed certificate into the store, JSON and page.
pub(crate) async fn store(agent: &Agent, cert: &Certificate) -> Result<Issued> {
    let tenant = TenantId::parse(&cert.tenant)?;
    let json = layout::certificate(&tenant, &cert.id, "json");
    let html = layout::certificate(&tenant, &cert.id, "html");
    put_signed(agent, cert, &json, &html).await?;
    Ok(Issued {
        id: cert.id.clone(),
        kind: cert.kind,
        sha256: cert.digest(),
        json,
        html,
        certificate: Box::new(cert.clone()),
    })
}

/// Put a signed artifact into the store: its JSON at `json`, its page at `html`.
pub(crate) async fn put_signed<T: Signed>(agent: &Agent, artifact: &T, json: &str, html: &str) -> Result<()> {
    agent.store.put(json, Body::Bytes(Bytes::from(artifact.pretty_json()))).await?;
    agent.store.put(html, Body::Bytes(Bytes::from(artifact.html()))).await?;
    Ok(())
}

/// Write a signed artifact's JSON and page into `dir` (`--out DIR`), as `<id>.json` and
/// `<id>.html`.
pub fn write_out<T: Signed>(artifact: &T, dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |cause| Error::Io { what: "cannot write", path, cause }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let id = artifact.id();
    let files = [(format!("{id}.json"), artifact.pretty_json()), (format!("{id}.html"), artifact.html().into_bytes())];
    let mut out = Vec::new();
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(io(&path))?;
        out.push(path);
    }
    Ok(out)
}

/// The exports the disclosure register records for the tenant, to the customer: this agent's
/// log, and every agent's segments in the store (another agent may have made one).
pub(crate) async fn delivered(agent: &Agent, tenant: &str) -> Result<Vec<Delivered>> {
    let mut entries = crate::audit::read::entries(&local_segments(agent)?).map_err(Error::Failed)?;
    match super::audit::entries(agent, true).await {
        Ok(stored) => entries.extend(stored),
        // The store's segments are checked by `audit verify --from-store`; a certificate
        // still names what this agent's own log holds.
        Err(e) => tracing::warn!(error = %e, "the store's audit segments could not be read for the certificate"),
    }
    let mut seen = std::collections::BTreeSet::new();
    entries.retain(|e| seen.insert((e.agent.clone(), e.seq)));
    let register = crate::audit::read::disclosures(entries);
    let mut out = Vec::new();
    for e in register.iter().filter(|e| e.tenant.as_deref() == Some(tenant) && e.kind.as_deref() == Some("export")) {
        let Some(d) = &e.disclosure else { continue };
        if d.recipient_kind != crate::audit::RecipientKind::Customer {
            continue;
        }
        for p in e.produced.iter().filter(|p| p.what == "export") {
            out.push(Delivered {
                export: p.id.clone(),
                sha256: p.sha256.clone().unwrap_or_default(),
                at: e.time.clone(),
                recipient: d.recipient.clone(),
            });
        }
    }
    Ok(out)
}

fn local_segments(agent: &Agent) -> Result<Vec<crate::audit::verify::Segment>> {
    let segments = agent.audit.local_segments()?;
    Ok(segments.into_iter().map(|(id, text)| crate::audit::verify::Segment { id, text }).collect())
}

/// The tenant's newest certificate in the store.
pub async fn latest(agent: &Agent, tenant: &TenantId) -> Result<Certificate> {
    let listed = agent.store.list(&layout::certificates(tenant)).await?;
    let Some(newest) = listed.iter().rev().find(|o| o.key.ends_with(".json")) else {
        return Err(Error::Usage(format!(
            "tenant {tenant} has no certificate yet: one is issued at its purge, its shred and `reversa expiry confirm`"
        )));
    };
    let bytes = agent.store.get(&newest.key).await?;
    parse(&bytes).map_err(|cause| damaged(&newest.key, cause))
}

fn parse(bytes: &[u8]) -> std::result::Result<Certificate, String> {
    let cert: Certificate =
        serde_json::from_slice(bytes).map_err(|e| format!("it is not a reversa certificate: {e}"))?;
    if cert.format != crate::certificate::FORMAT {
        return Err(format!("its format {} is not one this reversa reads", cert.format));
    }
    Ok(cert)
}

fn damaged(what: &str, cause: String) -> Error {
    Error::Repo(RepoError::Damaged { what: "certificate", key: what.to_string(), cause })
}

/// What `certificate verify` established.
#[derive(Debug, Serialize)]
pub struct Verified {
    pub id: String,
    pub tenant: String,
    pub kind: Kind,
    pub agent: String,
    pub signature_fingerprint: String,
    /// The audit entry that records its issue: its agent, sequence number and hash.
    pub audit_entry: (String, u64, String),
}

/// Check a certificate: it parses as one (no field added or missing), its signature is the
/// agent's whose public key the store holds, and an audit log (this agent's, or the store's
/// sealed segments of every agent) holds the end entry of the job that issued it, with its
/// digest. Any failure is damage (exit 6): the certificate was edited, or is not ours.
pub async fn verify(agent: &Agent, name: &str, bytes: &[u8]) -> Result<Verified> {
    let cert = parse(bytes).map_err(|cause| damaged(name, cause))?;
    let entry = check_signed(agent, &cert, &cert.agent, "certificate", &cert.id)
        .await?
        .map_err(|cause| damaged(name, cause))?;
    Ok(Verified {
        id: cert.id.clone(),
        tenant: cert.tenant.clone(),
        kind: cert.kind,
        agent: cert.agent.clone(),
        signature_fingerprint: cert.signature_fingerprint(),
        audit_entry: entry,
    })
}

/// Check a signed artifact (`what` in its audit entry, `id`): its signature is `signer`'s,
/// whose public key the store holds, and an audit log (this agent's, or the store's sealed
/// segments of every agent) holds the end entry of the job that issued it, with its digest.
/// `Err` says which check failed; the caller makes it damage (exit 6).
pub(crate) async fn check_signed<T: Signed>(
    agent: &Agent,
    artifact: &T,
    signer: &str,
    what: &str,
    id: &str,
) -> Result<std::result::Result<(String, u64, String), String>> {
    let public = match agent.store.get(&layout::agent_public_key(signer)).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(e) if e.is_not_found() => {
            return Ok(Err(format!("its agent {signer} has no public key in {}", agent.store.describe())))
        }
        Err(e) => return Err(e.into()),
    };
    if crate::keys::agent_id_of(&public) != signer
        || !crate::keys::verify_agent_signature(&public, &artifact.signed_bytes(), artifact.signature())
    {
        return Ok(Err(format!(
            "its signature is not agent {signer}'s over these fields: it was edited, or signed by another key"
        )));
    }
    let digest = artifact.digest();
    let entry = match issuing_entry(agent, false, what, id, &digest).await? {
        Some(e) => Some(e),
        None => issuing_entry(agent, true, what, id, &digest).await?,
    };
    Ok(entry.ok_or_else(|| "no audit log holds the entry of the job that issued it".to_string()))
}

async fn issuing_entry(
    agent: &Agent,
    from_store: bool,
    what: &str,
    id: &str,
    digest: &str,
) -> Result<Option<(String, u64, String)>> {
    let entries = super::audit::entries(agent, from_store).await?;
    Ok(entries
        .into_iter()
        .find(|e| {
            e.event == Event::End
                && e.outcome == Some(Outcome::Ok)
                && e.produced.iter().any(|p| p.what == what && p.id == id && p.sha256.as_deref() == Some(digest))
        })
        .map(|e| (e.agent.clone(), e.seq, e.hash.clone().unwrap_or_default())))
}
