//! What every signed artifact (a deletion certificate, a drill report) shares: the bytes the
//! agent key signs, the digest the audit log records, and the fingerprint a printed page shows.

use serde::Serialize;
use sha2::{Digest, Sha256};

pub trait Signed: Serialize + Clone {
    fn id(&self) -> &str;
    fn signature(&self) -> &str;
    fn set_signature(&mut self, signature: String);
    /// The printable page (HTML, no script, no external resource).
    fn html(&self) -> String;

    /// The JSON file people read: indented, with a final newline.
    fn pretty_json(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).expect("a signed artifact serializes");
        b.push(b'\n');
        b
    }

    /// What the signature covers: the canonical JSON with an empty signature.
    fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.set_signature(String::new());
        serde_json::to_vec(&unsigned).expect("a signed artifact serializes")
    }

    /// The SHA-256 of the signed artifact's canonical JSON: what the audit entry records,
    /// whatever whitespace the file was written with.
    fn digest(&self) -> String {
        hex::encode(Sha256::digest(serde_json::to_vec(self).expect("a signed artifact serializes")))
    }

    /// A short fingerprint of the signature, for the printed page and a reader comparing it.
    fn signature_fingerprint(&self) -> String {
        let h = hex::encode(Sha256::digest(self.signature().as_bytes()));
        h.as_bytes()[..32].chunks(4).map(|c| std::str::from_utf8(c).expect("hex")).collect::<Vec<_>>().join(":")
    }
}

/// Text for an HTML page.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
