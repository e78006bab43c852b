//! Reading the log for an auditor: `audit log` and the disclosure register (`disclosures`).

use super::verify::Segment;
use super::{Entry, Event, Line, Outcome};

/// Which entries to show. Times compare against the entry's (real) time.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub tenant: Option<String>,
    pub from: Option<jiff::Timestamp>,
    pub to: Option<jiff::Timestamp>,
    pub kind: Option<String>,
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        let time = e.time.parse::<jiff::Timestamp>().ok();
        self.tenant.as_ref().is_none_or(|t| e.tenant.as_ref() == Some(t))
            && self.kind.as_ref().is_none_or(|k| e.kind.as_ref() == Some(k))
            && self.from.is_none_or(|from| time.is_some_and(|t| t >= from))
            && self.to.is_none_or(|to| time.is_some_and(|t| t < to))
    }
}

/// Every entry of `segments` (checkpoints left out), in order. A line that does not parse is
/// an error that says to verify the log.
pub fn entries(segments: &[Segment]) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for seg in segments {
        for line in seg.text.lines() {
            match Line::parse(line) {
                Ok(Line::Entry(e)) => out.push(e),
                Ok(Line::Checkpoint(_)) => {}
                Err(e) => {
                    return Err(format!(
                        "segment {}: a line is not an audit entry ({e}); `reversa audit verify` names the damage",
                        seg.id.as_deref().unwrap_or("open")
                    ))
                }
            }
        }
    }
    Ok(out)
}

/// The disclosure register: the end entries of the jobs that gave tenant data to someone and
/// succeeded.
pub fn disclosures(entries: Vec<Entry>) -> Vec<Entry> {
    entries
        .into_iter()
        .filter(|e| e.event == Event::End && e.outcome == Some(Outcome::Ok) && e.disclosure.is_some())
        .collect()
}

/// The disclosures whose customer is to be told (to an authority); `commands::audit::
/// pending_notices` keeps those whose notice was not delivered yet.
pub fn pending_notices(register: Vec<Entry>) -> Vec<Entry> {
    register.into_iter().filter(|e| e.disclosure.as_ref().is_some_and(|d| d.notify_customer)).collect()
}
