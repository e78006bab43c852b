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

/// The printable page of a signed artifact: a table of labelled values, optional sections,
/// and the signature block (HTML, no script, no external resource).
#[derive(Default)]
pub struct Page {
    rows: Vec<String>,
    sections: String,
}

impl Page {
    pub fn row(&mut self, label: &str, value: impl AsRef<str>) {
        self.rows.push(format!("<tr><th>{}</th><td>{}</td></tr>", esc(label), esc(value.as_ref())));
    }

    /// A section after the table: a heading and an ordered list.
    pub fn list(&mut self, heading: &str, items: &[String]) {
        let items: String = items.iter().map(|i| format!("<li>{}</li>", esc(i))).collect();
        self.sections.push_str(&format!("<h2>{}</h2><ol>{items}</ol>", esc(heading)));
    }

    /// The page of `artifact`, signed by `agent`, which `verify` (a command) checks.
    pub fn render(&self, artifact: &impl Signed, heading: &str, subtitle: &str, agent: &str, verify: &str) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{subtitle}</title>\
             <style>body{{font-family:sans-serif;font-size:10pt;margin:2em}}th{{text-align:left;vertical-align:top;\
             padding-right:1em;width:16em}}td{{overflow-wrap:anywhere}}code{{font-size:9pt}}</style></head><body>\
             <h1>{heading}</h1><p>{subtitle}</p><table>{rows}</table>{sections}<h2>Signature / Firma</h2>\
             <p>Ed25519, agent {agent}</p><p>Signature fingerprint: <code>{fp}</code></p>\
             <p>Verify with <code>{verify}</code>.</p></body></html>\n",
            heading = esc(heading),
            subtitle = esc(subtitle),
            rows = self.rows.join(""),
            sections = self.sections,
            agent = esc(agent),
            fp = artifact.signature_fingerprint(),
            verify = esc(verify),
        )
    }
}
