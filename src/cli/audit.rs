//! `audit head`, `audit verify`, `audit log` and `disclosures`.

use super::{exit, render, AuditCommand, EntryFilter, Format, Session};
use crate::audit::read::{self, Filter};
use crate::commands::{audit, Error};

pub(super) async fn run(s: &Session, command: &AuditCommand) -> Result<i32, Error> {
    match command {
        AuditCommand::Head { json } => {
            let Some(head) = audit::head(&s.agent)? else {
                out!("no checkpoint yet: the first run that writes to the audit log seals one");
                return Ok(exit::OK);
            };
            match json {
                true => render::print_json(&head),
                false => render::print_audit_head(&head),
            }
            Ok(exit::OK)
        }
        AuditCommand::Verify { from_store, expect_head, json } => {
            let r = audit::verify(&s.agent, *from_store, expect_head.as_deref()).await?;
            match json {
                true => render::print_json(&r),
                false => render::print_audit_verify(&r),
            }
            Ok(if r.is_clean() { exit::OK } else { exit::DAMAGED })
        }
        AuditCommand::Log { filter, kind, format } => {
            let mut f = parse_filter(filter)?;
            f.kind = kind.clone();
            let entries = audit::entries(&s.agent, filter.from_store).await?;
            let shown: Vec<_> = entries.into_iter().filter(|e| f.matches(e)).collect();
            render::print_audit_log(&shown, format.format());
            Ok(exit::OK)
        }
    }
}

pub(super) async fn disclosures(
    s: &Session,
    filter: &EntryFilter,
    pending: bool,
    format: Format,
) -> Result<i32, Error> {
    let f = parse_filter(filter)?;
    let entries = audit::entries(&s.agent, filter.from_store).await?;
    let mut register = read::disclosures(entries.into_iter().filter(|e| f.matches(e)).collect());
    if pending {
        register = audit::pending_notices(&s.agent, read::pending_notices(register)).await?;
    }
    render::print_disclosures(&register, format);
    Ok(exit::OK)
}

fn parse_filter(f: &EntryFilter) -> Result<Filter, Error> {
    Ok(Filter {
        tenant: f.tenant.clone(),
        from: f.from.as_deref().map(|t| parse_time("--from", t)).transpose()?,
        to: f.to.as_deref().map(|t| parse_time("--to", t)).transpose()?,
        kind: None,
    })
}

/// An RFC 3339 time, or a date (its midnight, UTC).
pub(super) fn parse_time(flag: &str, text: &str) -> Result<jiff::Timestamp, Error> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    match text.parse::<jiff::civil::Date>() {
        Ok(d) => d.to_zoned(jiff::tz::TimeZone::UTC).map(|z| z.timestamp()).map_err(|e| Error::Usage(e.to_string())),
        Err(_) => Err(Error::Usage(format!(
            "{flag} {text:?} is neither a date (2026-11-01) nor an RFC 3339 time (2026-11-01T08:00:00Z)"
        ))),
    }
}
