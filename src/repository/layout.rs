//! Every object key reversa reads or writes, in one place: docs/FORMAT.md, "Store layout". No
//! other module builds a key from strings.

use crate::tenant::TenantId;

/// The store marker (plaintext JSON, no secrets).
pub const MARKER: &str = "reversa.json";
/// The folder of the keystore snapshots.
pub const KEYSTORE: &str = "keystore/";
/// The folder of every tenant's repository.
pub const TENANTS: &str = "tenants/";
/// The folder of every agent's audit segments.
pub const AUDIT: &str = "audit/";
/// The folder of the uploaded exports.
pub const EXPORTS: &str = "exports/";
/// The folder of what outlives a tenant's purge: its lifecycle record and certificates.
pub const REPORTS: &str = "reports/";

pub fn keystore_snapshot(id: &str) -> String {
    format!("{KEYSTORE}{id}")
}

/// Everything of one tenant's repository.
pub fn tenant(t: &TenantId) -> String {
    format!("{TENANTS}{t}/")
}

/// The folder of a tenant's packs; each pack is under the folder of its first two hex digits.
pub fn packs(t: &TenantId) -> String {
    format!("{TENANTS}{t}/data/")
}

pub fn pack(t: &TenantId, pack: &[u8; 32]) -> String {
    let h = hex::encode(pack);
    format!("{TENANTS}{t}/data/{}/{h}", &h[..2])
}

pub fn indexes(t: &TenantId) -> String {
    format!("{TENANTS}{t}/index/")
}

pub fn index(t: &TenantId, id: &str) -> String {
    format!("{}{id}", indexes(t))
}

pub fn generations(t: &TenantId) -> String {
    format!("{TENANTS}{t}/generations/")
}

pub fn generation(t: &TenantId, id: &str) -> String {
    format!("{}{id}", generations(t))
}

pub fn holds(t: &TenantId) -> String {
    format!("{TENANTS}{t}/holds/")
}

pub fn hold(t: &TenantId, generation: &str) -> String {
    format!("{}{generation}", holds(t))
}

/// The folder of a tenant's lock objects.
pub fn locks(t: &TenantId) -> String {
    format!("{TENANTS}{t}/locks/")
}

/// The lock object where the store makes conditional creates atomic.
pub fn exclusive_lock(t: &TenantId) -> String {
    format!("{}exclusive", locks(t))
}

/// A lock object of the protocol without conditional creates (a time-sortable id).
pub fn lock(t: &TenantId, id: &str) -> String {
    format!("{}{id}", locks(t))
}

pub fn agent_segments(agent: &str) -> String {
    format!("{AUDIT}{agent}/")
}

pub fn audit_segment(agent: &str, segment: &str) -> String {
    format!("{}{segment}", agent_segments(agent))
}

/// An agent's Ed25519 public key (hex; plaintext: it is public).
pub fn agent_public_key(agent: &str) -> String {
    format!("agents/{agent}.pub")
}

/// A tenant's lifecycle record: under `reports/`, which outlives the purge of its data.
pub fn lifecycle_record(t: &TenantId) -> String {
    format!("{REPORTS}{t}/lifecycle")
}

/// The folder of a tenant's deletion certificates (also under `reports/`).
pub fn certificates(t: &TenantId) -> String {
    format!("{REPORTS}{t}/certificates/")
}

/// A certificate, as JSON (`json`) or as its printable page (`html`).
pub fn certificate(t: &TenantId, id: &str, ext: &str) -> String {
    format!("{}{id}.{ext}", certificates(t))
}

/// The folder of a tenant's drill reports.
pub fn drill_reports(t: &TenantId) -> String {
    format!("{REPORTS}{t}/drills/")
}

/// A drill report, as JSON (`json`) or as its printable page (`html`).
pub fn drill_report(t: &TenantId, id: &str, ext: &str) -> String {
    format!("{}{id}.{ext}", drill_reports(t))
}

/// The exports of one tenant, or of every tenant.
pub fn exports(t: Option<&TenantId>) -> String {
    match t {
        Some(t) => format!("{EXPORTS}{t}/"),
        None => EXPORTS.to_string(),
    }
}

pub fn export_part(t: &TenantId, export_id: &str, name: &str) -> String {
    format!("{EXPORTS}{t}/{export_id}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout docs/FORMAT.md documents, byte for byte.
    #[test]
    fn keys_are_those_of_the_format() {
        let t = TenantId::parse("comune-a").unwrap();
        let id = [0xab; 32];
        assert_eq!(pack(&t, &id), format!("tenants/comune-a/data/ab/{}", hex::encode(id)));
        assert_eq!(index(&t, "i1"), "tenants/comune-a/index/i1");
        assert_eq!(generation(&t, "g1"), "tenants/comune-a/generations/g1");
        assert_eq!(hold(&t, "g1"), "tenants/comune-a/holds/g1");
        assert_eq!(exclusive_lock(&t), "tenants/comune-a/locks/exclusive");
        assert_eq!(keystore_snapshot("s1"), "keystore/s1");
        assert_eq!(audit_segment("a1", "s1"), "audit/a1/s1");
        assert_eq!(agent_public_key("a1"), "agents/a1.pub");
        assert_eq!(export_part(&t, "e1", "x.zip"), "exports/comune-a/e1/x.zip");
        assert_eq!(exports(None), "exports/");
        assert_eq!(certificate(&t, "c1", "json"), "reports/comune-a/certificates/c1.json");
    }
}
