//! Restore drills: what a drill proves and how its report reads. A drill restores a generation
//! into scratch space, verifies it (every blob's id as it is read, every table's row count
//! against the manifest, SQLite's own integrity and foreign-key checks), times the whole against
//! the recovery time objective and records the generation's age (the recovery point). The
//! report is signed by the agent key like a certificate. No I/O: `commands::drill` runs it.

use serde::{Deserialize, Serialize};

use crate::signed::{Page, Signed};

pub const FORMAT: u32 = 1;

/// `[drill]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrillConfig {
    /// The recovery time objective: a restore must take at most this long, in hours.
    pub rto_hours: f64,
    /// Every tenant is drilled at least once in this many days (the daemon's rotation).
    pub cover_days: u32,
    /// Restores run at once in a disaster (`drill --fleet-estimate`).
    pub parallel: u32,
}

impl Default for DrillConfig {
    fn default() -> Self {
        DrillConfig { rto_hours: 4.0, cover_days: 30, parallel: 4 }
    }
}

impl DrillConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.rto_hours > 0.0 && self.rto_hours.is_finite()) {
            return Err(("drill.rto_hours", "must be a number of hours above 0 (4 by default)".into()));
        }
        if self.cover_days == 0 || self.parallel == 0 {
            return Err(("drill.cover_days", "drill.cover_days and drill.parallel must be 1 or more".into()));
        }
        Ok(())
    }

    pub fn rto_seconds(&self) -> f64 {
        self.rto_hours * 3600.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Warn,
    Fail,
}

/// One check of the drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Test {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
}

/// A table: the rows the manifest says, and the rows the restored database has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableCount {
    pub name: String,
    pub expected: u64,
    pub restored: u64,
}

/// What could not be restored, by class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Errors {
    /// An object (a pack) that is not in the store.
    pub missing: u64,
    /// An object that does not authenticate: its bytes changed.
    pub checksum: u64,
    /// An object shorter than its index says.
    pub size: u64,
    pub other: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub format: u32,
    pub id: String,
    pub tenant: String,
    pub generation: String,
    pub generation_time: String,
    pub started: jiff::Timestamp,
    pub finished: jiff::Timestamp,
    /// The restore's wall time, and the objective it is held against.
    pub restore_seconds: f64,
    pub rto_seconds: f64,
    /// The generation's age when the drill began: what a disaster then would have lost.
    pub rpo_seconds: i64,
    pub bytes_read: u64,
    pub files: u64,
    pub tables: Vec<TableCount>,
    pub tests: Vec<Test>,
    pub errors: Errors,
    /// What was lost, named (the entry and its cause: which object, and why).
    pub lost: Vec<String>,
    pub outcome: Outcome,
    pub actor: String,
    pub agent: String,
    pub audit_head: crate::certificate::AuditHead,
    pub signature: String,
}

impl Signed for Report {
    fn id(&self) -> &str {
        &self.id
    }
    /// The printable page (HTML, no script, no external resource).
    fn html(&self) -> String {
        let mut page = Page::default();
        let mut row = |k: &str, v: String| page.row(k, v);
        row("Tenant / Ente", self.tenant.clone());
        row("Outcome / Esito", format!("{:?}", self.outcome).to_lowercase());
        row("Generation / Generazione", format!("{} ({})", self.generation, self.generation_time));
        row("Started / Inizio", self.started.to_string());
        row(
            "Restore time / Tempo di ripristino",
            format!("{:.1} s (RTO {:.0} s)", self.restore_seconds, self.rto_seconds),
        );
        row("Recovery point / Età della generazione", format!("{} s", self.rpo_seconds));
        row("Bytes read / Byte letti", self.bytes_read.to_string());
        row("Files / File", self.files.to_string());
        for t in &self.tables {
            row("Table / Tabella", format!("{}: {} of {} rows", t.name, t.restored, t.expected));
        }
        for t in &self.tests {
            row("Test", format!("{}: {:?} — {}", t.name, t.outcome, t.detail).to_lowercase());
        }
        let e = &self.errors;
        row(
            "Errors / Errori",
            format!("missing {}, checksum {}, size {}, other {}", e.missing, e.checksum, e.size, e.other),
        );
        for l in &self.lost {
            row("Lost / Perso", l.clone());
        }
        row("Actor / Operatore", self.actor.clone());
        row("Agent", self.agent.clone());
        row("Audit head", format!("#{} {}", self.audit_head.seq, self.audit_head.hash));
        let subtitle = format!("Report {}", self.id);
        page.render(
            self,
            "Restore drill / Prova di ripristino",
            &subtitle,
            &self.agent,
            "reversa drill --verify FILE.json",
        )
    }
    fn signature(&self) -> &str {
        &self.signature
    }
    fn set_signature(&mut self, signature: String) {
        self.signature = signature;
    }
}

/// The drill's outcome: its worst test.
pub fn outcome(tests: &[Test]) -> Outcome {
    let worst = tests.iter().map(|t| t.outcome);
    worst.fold(Outcome::Pass, |a, b| match (a, b) {
        (Outcome::Fail, _) | (_, Outcome::Fail) => Outcome::Fail,
        (Outcome::Warn, _) | (_, Outcome::Warn) => Outcome::Warn,
        _ => Outcome::Pass,
    })
}

/// The class of a restore's loss, from the message of the store or the crypto layer it carries
/// (`StoreError::NotFound`, `StoreError::PastEnd`, an `OpenError`).
pub fn classify(cause: &str, errors: &mut Errors) {
    if cause.contains("does not exist") || cause.contains("is not in the index") {
        errors.missing += 1;
    } else if cause.contains("past the end") || cause.contains("truncated") || cause.contains("cut short") {
        errors.size += 1;
    } else if cause.contains("authenticat") || cause.contains("damaged") || cause.contains("does not open") {
        errors.checksum += 1;
    } else {
        errors.other += 1;
    }
}
