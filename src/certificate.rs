//! Deletion certificates: what reversa states, signed, once a tenant's data are gone. The
//! fields follow the certificate of sanitization of NIST SP 800-88 Rev. 1 (Appendix G): who,
//! what media, which method and tool, how it was verified, and by whom. No I/O here:
//! `commands::certificate` issues, stores and verifies them.
//!
//! A certificate is signed by the agent key over its canonical JSON with an empty
//! `signature`; any edit to any field, or a field added, breaks it. Its digest (the SHA-256
//! of its canonical JSON, signature included) is what the audit log's entry records.

use serde::{Deserialize, Serialize};

use crate::signed::{Page, Signed};

use crate::lifecycle::Timeline;
use crate::store::Versioning;

pub const FORMAT: u32 = 1;

/// Partial: the key is destroyed, or the source purged, and copies are still pending (the
/// backups until they expire, the VM replicas until their retention ends). Final: every check
/// is clean and every date has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Partial,
    Final,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Partial => "partial",
            Kind::Final => "final",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub format: u32,
    pub id: String,
    pub kind: Kind,
    pub tenant: String,
    pub contract_end: jiff::Timestamp,
    pub issued_at: jiff::Timestamp,
    pub timeline: Timeline,
    pub sanitization: Sanitization,
    pub tool: Tool,
    pub verification: Verification,
    /// What is still to go, with its date (empty on a final certificate).
    pub pending: Vec<String>,
    /// The exports the customer received, by archive hash.
    pub disclosures: Vec<Delivered>,
    pub attestations: Vec<Attestation>,
    /// Who ran the job that issued it.
    pub actor: String,
    /// The agent whose key signed it (`agents/<agent>.pub` in the store).
    pub agent: String,
    /// The audit log's newest entry when it was issued.
    pub audit_head: AuditHead,
    /// Ed25519 over [`Certificate::signed_bytes`], hex.
    pub signature: String,
}

/// NIST SP 800-88's method: the category, the technique, and what it was applied to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sanitization {
    /// `purge` (SP 800-88 §2.5: cryptographic erase is a purge technique).
    pub category: String,
    pub technique: String,
    /// The media: the store and the source.
    pub media: Vec<String>,
    /// What was done, in order, each with its date.
    pub steps: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

/// How the deletion was verified, and what the verification saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    pub method: String,
    pub store: String,
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub versioning: Versioning,
    /// Each prefix listed, with what was found there (0 and 0 when clean).
    pub listings: Vec<Listing>,
    /// Every keystore snapshot version opened and read.
    pub keystore_snapshots_checked: Vec<String>,
    /// Of those, how many still hold the tenant's key.
    pub keystore_snapshots_holding_key: u64,
    /// Whether the agent's own keystore still holds the key.
    pub local_key_present: bool,
    /// The tenant's local caches and records (digest maps, file cache, check records) found.
    pub local_files_found: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listing {
    pub prefix: String,
    /// Object versions found (current and noncurrent).
    pub versions: u64,
    pub delete_markers: u64,
}

/// An export the customer received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivered {
    pub export: String,
    pub sha256: String,
    pub at: String,
    pub recipient: String,
}

/// What an operator, not reversa, states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    pub what: String,
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
}

impl Signed for Certificate {
    fn id(&self) -> &str {
        &self.id
    }
    /// The printable page (HTML, no script, no external resource).
    fn html(&self) -> String {
        let mut page = Page::default();
        let mut row = |k: &str, v: String| page.row(k, v);
        let t = &self.timeline;
        row("Tenant / Ente", self.tenant.clone());
        row("Kind / Tipo", self.kind.name().into());
        row("Contract end / Fine contratto", t.contract_end.to_string());
        row("Export window end / Fine finestra di esportazione", t.export_window_end.to_string());
        row("Safeguard end / Fine salvaguardia", t.safeguard_end.to_string());
        row("Purged / Cancellazione", t.purged.map(|p| p.to_string()).unwrap_or_else(|| "-".into()));
        row("Backups expire / Scadenza backup", t.backups_expire.to_string());
        row("VM replicas expire / Scadenza repliche", t.replicas_expire.to_string());
        row("Method / Metodo", format!("{} ({})", self.sanitization.technique, self.sanitization.category));
        row("Media / Supporti", self.sanitization.media.join("; "));
        row("Tool / Strumento", format!("{} {}", self.tool.name, self.tool.version));
        let v = &self.verification;
        row("Verification / Verifica", v.method.clone());
        row("Store", format!("{} (versioning: {})", v.store, v.versioning.name()));
        for l in &v.listings {
            row(
                "Listed / Elencati",
                format!("{}: {} versions, {} delete markers", l.prefix, l.versions, l.delete_markers),
            );
        }
        row("Keystore snapshots read", v.keystore_snapshots_checked.len().to_string());
        row("Pending / In sospeso", if self.pending.is_empty() { "nothing".into() } else { self.pending.join("; ") });
        for d in &self.disclosures {
            row("Delivered / Consegnato", format!("export {} sha256 {} ({})", d.export, d.sha256, d.at));
        }
        for a in &self.attestations {
            row("Attested / Attestato", format!("{} — {}", a.what, a.by));
        }
        row("Actor / Operatore", self.actor.clone());
        row("Issued / Emesso", self.issued_at.to_string());
        row("Agent", self.agent.clone());
        row("Audit head", format!("#{} {}", self.audit_head.seq, self.audit_head.hash));
        page.list("Steps / Passi", &self.sanitization.steps);
        let subtitle = format!("Certificate {}, per NIST SP 800-88 Rev. 1", self.id);
        let heading = "Certificate of sanitization / Certificato di cancellazione";
        page.render(self, heading, &subtitle, &self.agent, "reversa certificate verify FILE.json")
    }
    fn signature(&self) -> &str {
        &self.signature
    }
    fn set_signature(&mut self, signature: String) {
        self.signature = signature;
    }
}
