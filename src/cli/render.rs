//! How the CLI shows reports to people: one function per report, on stdout through `out!`.
//! `--json` prints the report itself instead.

use crate::commands::{check, export, forget, generations, prune};

/// The one human form of a size, everywhere (summaries, tables, progress bars): decimal MB, as
/// disks and links are sold. `--json` gives bytes.
pub(super) fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

pub(super) fn rate(bytes: u64, ms: u64) -> String {
    format!("{:.1} MB/s", bytes as f64 / 1e3 / ms.max(1) as f64)
}

pub(super) fn print_json<T: serde::Serialize>(v: &T) {
    out!("{}", serde_json::to_string_pretty(v).expect("report serializes"));
}

pub(super) fn print_check(r: &check::CheckReport, read: &check::ReadData) {
    let verified = match (read, &r.subset) {
        (check::ReadData::None, _) => String::new(),
        (_, Some(subset)) => format!(
            ", subset {subset}: {} packs, {} blobs read and verified ({})",
            r.packs_read,
            r.blobs_read,
            mb(r.bytes_read)
        ),
        (_, None) => format!(", {} blobs read and verified ({})", r.blobs_read, mb(r.bytes_read)),
    };
    let verdict = if r.is_clean() { "no problems".to_string() } else { format!("{} PROBLEMS", r.problems.len()) };
    out!(
        "{}: {} generations, {} index files, {} packs, {} blobs{verified}: {verdict}",
        r.tenant,
        r.generations,
        r.index_files,
        r.packs,
        r.blobs
    );
    for p in &r.problems {
        out!("  damaged: {p}");
    }
    out!(
        "  verified in the last {} days: {:.1}% of the pack bytes ({} of {})",
        check::RECENT_DAYS,
        r.verified_recently_percent,
        mb(r.verified_recently_bytes),
        mb(r.pack_bytes)
    );
    if !r.unreferenced_packs.is_empty() {
        out!(
            "  note: {} unreferenced packs (left by an interrupted backup; harmless, prune removes them)",
            r.unreferenced_packs.len()
        );
    }
    for u in &r.leftover_uploads {
        let action = if u.action == "left" { "left (`check --repair` aborts it)" } else { &u.action };
        out!("  leftover upload: {} (started {}, id {}): {action}", u.key, u.initiated, u.upload_id);
    }
}

pub(super) fn print_tenants(tenants: &[crate::commands::tenant::TenantLine]) {
    out!(
        "{:<24} {:<14} {:<6} {:<5} {:<8} {:>11} {:<34} {:>12}",
        "TENANT",
        "STATE",
        "SOURCE",
        "STORE",
        "KEY",
        "GENERATIONS",
        "LAST",
        "SIZE"
    );
    let yes = |b: bool| if b { "yes" } else { "no" };
    for t in tenants {
        out!(
            "{:<24} {:<14} {:<6} {:<5} {:<8} {:>11} {:<34} {:>12}",
            t.tenant,
            t.state.name(),
            yes(t.in_source),
            yes(t.in_store),
            t.key,
            t.generations,
            t.last_generation.as_deref().unwrap_or("-"),
            mb(t.repository_bytes)
        );
    }
}

pub(super) fn print_keystore_check(k: &crate::keys::SnapshotCheck) {
    if let Some(up) = &k.uploaded {
        out!("keystore: uploaded a fresh snapshot {up} (--repair)");
    }
    match (&k.newest, k.problems.is_empty()) {
        (Some(newest), true) => {
            out!("keystore: {} snapshots open; the newest, {newest}, holds every key of this agent", k.snapshots)
        }
        (None, true) => out!("keystore: no snapshot in the store, and no key to keep"),
        (_, false) => out!("keystore: {} snapshots, {} PROBLEMS", k.snapshots, k.problems.len()),
    }
    for p in &k.problems {
        out!("  damaged: {p}");
    }
}

pub(super) fn print_prune(r: &prune::PruneReport) {
    let (head, would) = if r.dry_run { ("dry run, nothing changed: ", "would be ") } else { ("", "") };
    out!(
        "{}: {head}{} generations read; packs: {} {would}deleted, {} {would}repacked into {}, {} left for the grace \
         period ({} h), {} -> {}; blobs: {} kept, {} {would}removed ({} moved); {} {would}freed ({} -> {})",
        r.tenant,
        r.generations,
        r.packs_deleted,
        r.packs_repacked,
        r.packs_written,
        r.packs_kept_for_grace,
        r.grace_hours,
        r.packs_before,
        r.packs_after,
        r.blobs_kept,
        r.blobs_removed,
        r.blobs_moved,
        mb(r.bytes_freed),
        mb(r.bytes_before),
        mb(r.bytes_after)
    );
    for w in &r.warnings {
        out!("  warning: {w}");
    }
}

pub(super) fn print_generations(listing: &generations::Listing, json: bool) {
    for d in &listing.damaged {
        eprintln!("damaged: {d}");
    }
    if json {
        print_json(&listing.generations);
        return;
    }
    out!(
        "{:<34} {:<20} {:>10} {:>8} {:>12} {:>12} {:>9} {:>9} {:>9}  HOLD",
        "GENERATION",
        "TIME",
        "ROWS",
        "FILES",
        "SIZE",
        "ADDED",
        "INSERTED",
        "UPDATED",
        "DELETED"
    );
    for g in &listing.generations {
        let (m, s) = (&g.manifest, &g.manifest.summary);
        out!(
            "{:<34} {:<20} {:>10} {:>8} {:>12} {:>12} {:>9} {:>9} {:>9}  {}",
            m.id,
            m.time,
            s.rows,
            s.files,
            mb(s.table_bytes + s.file_bytes),
            mb(s.bytes_added),
            s.rows_inserted,
            s.rows_updated,
            s.rows_deleted,
            g.hold.as_ref().map(|h| h.describe()).unwrap_or_else(|| "-".into())
        );
    }
}

pub(super) fn print_forget(r: &forget::ForgetReport) {
    out!("{}: policy {}{}", r.tenant, r.policy, if r.dry_run { " (dry run: nothing is deleted)" } else { "" });
    for w in &r.warnings {
        out!("  warning: {w}");
    }
    for d in &r.generations {
        let verdict = match (d.keep, r.dry_run) {
            (true, _) => "keep",
            (false, true) => "would forget",
            (false, false) => "forgot",
        };
        let line = format!("  {verdict:<12} {:<34} {:<20} {}", d.id, d.time, d.reasons.join(", "));
        out!("{}", line.trim_end());
    }
    for p in &r.problems {
        out!("  damaged: {p}");
    }
    out!(
        "{}: {} kept, {} {}",
        r.tenant,
        r.kept,
        r.forgotten,
        if r.dry_run { "would be forgotten" } else { "forgotten (their packs stay until prune)" }
    );
}

pub(super) fn print_export(r: &export::ExportReport) {
    let source = match &r.source {
        crate::export::SourceInfo::Live { .. } => "the live source".to_string(),
        crate::export::SourceInfo::Generation { id, .. } => format!("generation {id}"),
    };
    let rows: u64 = r.tables.iter().map(|t| t.rows).sum();
    out!(
        "{}: export {} from {source}: {} tables, {rows} rows, {} files ({}) in {} ({})",
        r.tenant,
        r.export_id,
        r.tables.len(),
        r.files,
        mb(r.file_bytes),
        format_ms(r.duration_ms),
        mb(r.bytes)
    );
    for p in &r.parts {
        out!("  {}", p.display());
    }
    out!("  SHA-256 {}", r.sha256);
    if let Some(note) = &r.join_note {
        out!(
            "  the archive is in {} parts; {} says how to join them (cat, copy /b, or 7-Zip on NAME.zip.001)",
            r.parts.len(),
            note.display()
        );
    }
    for u in &r.uploaded {
        match &u.link {
            Some(link) => out!("  uploaded {}\n    download: {link}", u.key),
            None => out!("  uploaded {}", u.key),
        }
    }
    for w in &r.warnings {
        out!("  warning: {w}");
    }
    match (&r.passphrase, &r.passphrase_file) {
        (_, Some(f)) => {
            out!("passphrase written to {} (mode 0600); give it to the requester apart from the archive", f.display())
        }
        (Some(p), None) => out!(
            "passphrase (shown only now, stored nowhere; give it to the requester apart from the archive):\n{}",
            p.expose()
        ),
        (None, None) => {}
    }
}

pub(super) fn format_ms(ms: u64) -> String {
    format!("{:.2} s", ms as f64 / 1000.0)
}

pub(super) fn print_demo(r: &crate::commands::demo::DemoReport) {
    use crate::commands::demo;
    out!("reversa demo: {} sample tenants backed up, one restored and verified\n", r.backups.len());
    out!("  source   {}/source  ({})", r.base.display(), mb(r.source_bytes));
    out!("  store    {}/store  ({} after dedup, compression and encryption)", r.base.display(), mb(r.store_bytes));
    out!("  key      {}/master.key (mode 0600; keep it apart from the store)\n", r.base.display());
    for b in &r.backups {
        let s = &b.manifest.summary;
        out!(
            "  {:<16} generation {}  {} tables, {} rows, {} files, read {}, added {} in {} ms",
            b.manifest.tenant,
            b.manifest.id,
            s.tables,
            s.rows,
            s.files,
            mb(s.bytes_read),
            mb(s.bytes_added),
            s.duration_ms
        );
    }
    out!(
        "\n  restored {} ({} tables, {} rows, {} files) into {} in {} ms: identical to the source",
        demo::TENANTS[0],
        r.restored.tables,
        r.restored.rows,
        r.restored.files,
        r.restored_to.display(),
        r.restored.duration_ms
    );
    out!("  total {} ms\n", r.duration_ms);
    let c = r.config_file.display();
    out!("Next:");
    out!("  reversa --config {c} generations --tenant {}", demo::TENANTS[0]);
    out!("  reversa --config {c} backup --all          # a second run stores almost nothing");
    out!("  reversa --config {c} check --tenant {} --read-data", demo::TENANTS[0]);
    out!(
        "  reversa --config {c} restore --tenant {} --to /tmp/restored --recipient \"$USER\" --recipient-kind provider",
        demo::TENANTS[1]
    );
    out!("  reversa --config {c} audit log");
}

pub(super) fn print_init(r: &crate::commands::init::InitReport) {
    if let Some(k) = &r.master_key_file {
        out!("master key written to {k} (mode 0600); keep a copy apart from the store");
    }
    let created = if r.store_created { "initialized" } else { "already initialized" };
    out!("store {}: {created}; keystore: {}", r.store, r.keystore);
    if let Some(rec) = &r.recovery {
        for snap in &rec.snapshots {
            match &snap.damage {
                None => out!("  snapshot {}: opened", snap.key),
                Some(d) => out!("  snapshot {}: DOES NOT OPEN: {d}", snap.key),
            }
        }
        for (tenant, from) in &rec.keys {
            out!("  key of {tenant}: from {from}");
        }
        for (tenant, from) in &rec.shredded {
            out!("  key of {tenant}: shredded (recorded in {from}); its backups stay unreadable");
        }
        if rec.snapshots.first().is_some_and(|s| s.damage.is_some()) {
            out!(
                "  warning: the newest snapshots did not open; a key shredded since the newest one that \
                 opened was taken from it and is in this keystore again"
            );
        }
    }
    for t in &r.unreadable {
        out!(
            "  tenant {t}: its repository is in the store, but no keystore snapshot holds its key: \
             its data CANNOT BE READ"
        );
    }
    if let Some(region) = &r.facts.bucket_region {
        out!("bucket location: {region}");
    }
    match r.facts.conditional_writes {
        Some(true) => out!("conditional writes: honoured (tenant lock: one object created with If-None-Match)"),
        Some(false) => {
            out!("conditional writes: ignored by this server (tenant lock: unique lock objects, oldest wins)")
        }
        None => {}
    }
}

pub(super) fn print_backup(r: &crate::commands::backup::BackupReport) {
    let s = &r.manifest.summary;
    out!(
        "{}: generation {}: {} tables, {} rows, {} files ({}); read {}, added {} in {} packs, {} ({})",
        r.manifest.tenant,
        r.manifest.id,
        s.tables,
        s.rows,
        s.files,
        mb(s.file_bytes),
        mb(s.bytes_read),
        mb(s.bytes_added),
        s.packs_added,
        format_ms(s.duration_ms),
        rate(s.bytes_read, s.duration_ms)
    );
    for w in &r.warnings {
        out!("  warning: {w}");
    }
}

pub(super) fn print_restore(tenant: &str, to: &std::path::Path, r: &crate::commands::restore::RestoreReport) {
    out!(
        "{tenant}: restored generation {} into {}: {} tables, {} rows, {} files, {} in {} ({}); every blob it read was verified",
        r.generation,
        to.display(),
        r.tables,
        r.rows,
        r.files,
        mb(r.bytes),
        format_ms(r.duration_ms),
        rate(r.bytes, r.duration_ms)
    );
    if r.lost.is_empty() {
        return;
    }
    let report = to.join(crate::commands::restore::REPORT_FILE);
    out!("  {} entries COULD NOT BE RESTORED (listed in {}):", r.lost.len(), report.display());
    for l in &r.lost {
        out!("  lost: {}: {}", l.what, l.cause);
    }
}

pub(super) fn print_hold(r: &generations::HoldReport) {
    let again = match r.replaced {
        Some(_) => " (it was already held; the earlier reason is kept in its history)",
        None => "",
    };
    out!(
        "{}: generation {} is on {}{again}; forget keeps it until it is released",
        r.tenant,
        r.hold.generation,
        r.hold.describe()
    );
}

pub(super) fn print_unlock(tenant: &str, removed: &[(String, crate::repository::lock::LockInfo)]) {
    if removed.is_empty() {
        out!("{tenant}: not locked");
    }
    for (key, info) in removed {
        out!(
            "{tenant}: removed the stale lock {key} of {} (pid {} on {}, since {})",
            info.purpose,
            info.pid,
            info.host,
            info.created
        );
    }
}

pub(super) fn print_exports(list: &[export::StoredExport]) {
    out!("{:<20} {:<26} {:<20} {:>6} {:>12}", "TENANT", "EXPORT", "CREATED", "FILES", "SIZE");
    for e in list {
        out!("{:<20} {:<26} {:<20} {:>6} {:>12}", e.tenant, e.id, e.created, e.objects.len(), mb(e.bytes));
    }
}

pub(super) fn print_exports_prune(r: &export::PruneReport) {
    for e in &r.removed {
        out!(
            "removed export {} of {} (made {}, {} files, {})",
            e.id,
            e.tenant,
            e.created,
            e.objects.len(),
            mb(e.bytes)
        );
    }
    out!("{} exports removed, {} kept (keep_days = {})", r.removed.len(), r.kept, r.keep_days);
}

pub(super) fn print_audit_head(c: &crate::audit::SignedCheckpoint) {
    let cp = &c.checkpoint;
    out!("agent      {}", cp.agent);
    out!("segment    {}", cp.segment);
    out!("entries    {} to {}", cp.first_seq, cp.seq);
    out!("head       {}", cp.head);
    out!("time       {}", cp.time);
    out!("signature  {}", c.signature);
    out!("public key {}", c.public_key);
    out!("Keep this head apart (a ticket, an email); `reversa audit verify --expect-head {}` proves the log still holds it.", cp.head);
}

pub(super) fn print_audit_verify(r: &crate::commands::audit::VerifyReport) {
    for c in &r.chains {
        out!(
            "agent {}: {} segments, {} entries, chain intact to entry {} (head {}); sealed to entry {}",
            c.agent,
            c.segments,
            c.entries,
            c.last_seq,
            c.head,
            c.checkpointed_seq
        );
    }
    for s in &r.local_only {
        out!("  segment {s}: only in the local log so far (the next run uploads it)");
    }
    match r.expected_head_found {
        Some(true) => out!("  the expected head is in the chain"),
        Some(false) => out!("  DAMAGED: the expected head is not in the chain: the log was cut short or rewritten"),
        None => {}
    }
    for p in &r.problems {
        out!("  DAMAGED: {p}");
    }
    out!("audit log ({}): {}", r.source, if r.is_clean() { "intact".to_string() } else { "NOT INTACT".to_string() });
}

/// The columns of `audit log --csv` and `disclosures --csv`, after the common ones.
const ENTRY_COLUMNS: [&str; 10] =
    ["seq", "time", "agent", "event", "kind", "job", "tenant", "actor", "outcome", "error_kind"];

fn entry_cells(e: &crate::audit::Entry) -> Vec<String> {
    vec![
        e.seq.to_string(),
        e.time.clone(),
        e.agent.clone(),
        name(&e.event),
        e.kind.clone().unwrap_or_default(),
        e.job.clone().unwrap_or_default(),
        e.tenant.clone().unwrap_or_default(),
        e.actor.clone(),
        e.outcome.as_ref().map(name).unwrap_or_default(),
        e.error_kind.as_ref().map(name).unwrap_or_default(),
    ]
}

/// The snake_case name serde gives a unit enum value (`ok`, `bad_input`).
fn name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// Write rows as CSV on stdout (RFC 4180, as LibreOffice opens it). A cell that a spreadsheet
/// would take for a formula (`=`, `+`, `-`, `@` first) gets a leading `'`: free text (an actor,
/// a reason, a recipient) is never run.
pub(super) fn print_csv(header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    if super::stdout_closed() {
        return;
    }
    let mut w = crate::export::csv::CsvWriter::new(std::io::stdout().lock());
    let mut write = |cells: &mut dyn Iterator<Item = String>| -> std::io::Result<()> {
        for c in cells {
            match c.starts_with(['=', '+', '-', '@']) {
                true => w.text(&format!("'{c}"))?,
                false => w.text(&c)?,
            }
        }
        w.end_row()
    };
    let mut done = write(&mut header.iter().map(|s| s.to_string()));
    for row in rows {
        if done.is_err() {
            break;
        }
        done = write(&mut row.into_iter());
    }
    if let Err(e) = done {
        super::stdout_failed(e);
    }
}

pub(super) fn print_audit_log(entries: &[crate::audit::Entry], format: super::Format) {
    match format {
        super::Format::Json => {
            for e in entries {
                out!("{}", serde_json::to_string(e).expect("an entry serializes"));
            }
        }
        super::Format::Csv => {
            let mut header: Vec<&str> = ENTRY_COLUMNS.to_vec();
            header.extend(["reason", "ticket", "counts", "produced", "hash"]);
            print_csv(
                &header,
                entries.iter().map(|e| {
                    let mut cells = entry_cells(e);
                    cells.push(e.reason.clone().unwrap_or_default());
                    cells.push(e.ticket.clone().unwrap_or_default());
                    cells.push(e.counts.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "));
                    cells.push(e.produced.iter().map(|p| format!("{}:{}", p.what, p.id)).collect::<Vec<_>>().join(" "));
                    cells.push(e.hash.clone().unwrap_or_default());
                    cells
                }),
            );
        }
        super::Format::Human => {
            for e in entries {
                let cells = entry_cells(e);
                let outcome = match (&e.outcome, &e.error_kind) {
                    (_, Some(k)) => format!("failed ({})", name(k)),
                    (Some(o), None) => name(o),
                    (None, None) => String::new(),
                };
                let line = format!(
                    "{:>6} {} {:<6} {:<18} {:<24} {:<20} {}",
                    cells[0], cells[1], cells[3], cells[4], cells[6], e.actor, outcome
                );
                out!("{}", line.trim_end());
            }
        }
    }
}

pub(super) fn print_disclosures(entries: &[crate::audit::Entry], format: super::Format) {
    let header = [
        "time",
        "tenant",
        "job",
        "kind",
        "actor",
        "recipient",
        "recipient_kind",
        "legal_basis",
        "reason",
        "ticket",
        "generation",
        "tables",
        "rows",
        "files",
        "bytes",
        "sha256",
        "notify_customer",
    ];
    let row = |e: &crate::audit::Entry| -> Vec<String> {
        let d = e.disclosure.as_ref().expect("the register holds disclosures");
        vec![
            e.time.clone(),
            e.tenant.clone().unwrap_or_default(),
            e.job.clone().unwrap_or_default(),
            e.kind.clone().unwrap_or_default(),
            e.actor.clone(),
            d.recipient.clone(),
            name(&d.recipient_kind),
            d.legal_basis.clone().unwrap_or_default(),
            e.reason.clone().unwrap_or_default(),
            e.ticket.clone().unwrap_or_default(),
            d.generation.clone().unwrap_or_else(|| "live".into()),
            d.tables.to_string(),
            d.rows.to_string(),
            d.files.to_string(),
            d.bytes.to_string(),
            d.sha256.clone().unwrap_or_default(),
            d.notify_customer.to_string(),
        ]
    };
    match format {
        super::Format::Json => print_json(&entries),
        super::Format::Csv => print_csv(&header, entries.iter().map(row)),
        super::Format::Human => {
            out!(
                "{:<28} {:<20} {:<8} {:<24} {:<24} {:>8} {:>10}",
                "TIME",
                "TENANT",
                "KIND",
                "BY",
                "TO",
                "ROWS",
                "SIZE"
            );
            for e in entries {
                let d = e.disclosure.as_ref().expect("the register holds disclosures");
                let to = format!("{} ({})", d.recipient, name(&d.recipient_kind));
                out!(
                    "{:<28} {:<20} {:<8} {:<24} {:<24} {:>8} {:>10}",
                    e.time,
                    e.tenant.as_deref().unwrap_or(""),
                    e.kind.as_deref().unwrap_or(""),
                    e.actor,
                    to,
                    d.rows,
                    mb(d.bytes)
                );
            }
        }
    }
}

pub(super) fn print_status(s: &crate::commands::lifecycle::Status) {
    out!("{}: {}", s.tenant, s.state.name());
    if let Some(t) = &s.timeline {
        out!("  contract end          {}", t.contract_end);
        out!("  export window notice  {}", t.export_window_notice);
        out!("  export window ends    {}", t.export_window_end);
        out!("  safeguard ends        {} (the purge is due)", t.safeguard_end);
        match t.purged {
            Some(p) => out!("  purged                {p}"),
            None => out!("  purged                not yet"),
        }
        let when = if t.purged.is_some() { "" } else { " (if the purge runs on its day)" };
        out!("  backups expire        {}{when}", t.backups_expire);
        out!("  VM replicas expire    {}{when}", t.replicas_expire);
        if let Some(r) = t.recheck {
            out!("  re-check              {r}");
        }
    }
    if let Some(g) = &s.final_generation {
        out!("  final generation      {g}");
    }
    out!(
        "  allowed now: {}",
        if s.allowed.is_empty() { "nothing of the customer's".to_string() } else { s.allowed.join(", ") }
    );
    if let Some(n) = &s.next {
        out!("  next: {n}");
    }
    if let Some(b) = &s.blocked {
        out!("  blocked: {b}");
    }
    if let Some(oldest) = s.undelivered_notices.first() {
        let error = [&oldest.webhook, &oldest.email].into_iter().find_map(|d| d.last_error.clone());
        out!(
            "  notices undelivered: {} (the oldest of {}; {})",
            s.undelivered_notices.len(),
            oldest.created,
            error.map_or("not tried yet".to_string(), |e| format!("last error: {e}"))
        );
    }
    out!(
        "  administrator {}; {} contacts",
        if s.admin_set { "recorded" } else { "NOT recorded (`reversa tenant set`)" },
        s.contacts
    );
}

pub(super) fn print_tick(ticked: &[crate::commands::lifecycle::TickReport]) {
    if ticked.is_empty() {
        out!("lifecycle: no tenant's date has come");
    }
    for t in ticked {
        if t.from != t.to {
            out!("{}: {} -> {}", t.tenant, t.from.name(), t.to.name());
        }
        for step in &t.steps {
            match &step.error {
                None => out!("{}: {} done", t.tenant, step.job),
                Some(e) => out!("{}: {} FAILED (the next tick tries again): {e}", t.tenant, step.job),
            }
        }
        if let Some(b) = &t.blocked {
            out!("{}: blocked: {b}", t.tenant);
        }
        if let Some(n) = t.notices.as_ref().filter(|n| n.sent + n.failed > 0) {
            out!("{}: {} notices delivered, {} failed", t.tenant, n.sent, n.failed);
            for e in &n.errors {
                out!("{}: notice not delivered (retried by a later tick): {e}", t.tenant);
            }
        }
    }
}

fn print_issued(c: &crate::commands::certificate::Issued) {
    out!("  certificate {} ({}): {}", c.id, c.kind.name(), c.json);
}

pub(super) fn print_purge(r: &crate::commands::lifecycle::purge::PurgeReport) {
    let p = &r.purge;
    out!(
        "{}: purged; final generation {} read back whole ({} blobs)",
        r.tenant,
        p.final_generation,
        r.final_blobs_read
    );
    match &p.source {
        crate::lifecycle::SourceDeletion::DeletedByReversa => out!("  source deleted and verified gone"),
        crate::lifecycle::SourceDeletion::ConfirmedBy(by) => out!("  source deleted by {by} (attested)"),
    }
    out!("  {} extra paths and {} export object versions deleted", p.extra_paths_deleted, p.exports_deleted);
    if let Some(sh) = &r.shred {
        print_shred(sh);
    }
    if let Some(c) = &r.certificate {
        print_issued(c);
    }
}

pub(super) fn print_shred(r: &crate::commands::lifecycle::expiry::ShredReport) {
    out!(
        "{}: key shredded; keystore snapshot {} written without it; {} snapshot versions holding it deleted",
        r.tenant,
        r.shred.snapshot,
        r.shred.snapshots_deleted.len()
    );
    print_issued(&r.certificate);
}

pub(super) fn print_confirm(r: &crate::commands::lifecycle::confirm::ConfirmReport) {
    let what = if r.recheck { "re-checked" } else { "verified" };
    out!("{}: deletion {what}: nothing left ({})", r.tenant, r.state.name());
    for l in &r.scan.listings {
        out!("  {}: {} versions, {} delete markers", l.prefix, l.versions, l.delete_markers);
    }
    out!("  {} keystore snapshot versions read, none holds the key", r.scan.key_copies.checked.len());
    if let Some(c) = &r.certificate {
        print_issued(c);
    }
}

pub(super) fn print_certificate_verified(v: &crate::commands::certificate::Verified) {
    out!("certificate {} of tenant {} ({}): signature good (agent {})", v.id, v.tenant, v.kind.name(), v.agent);
    out!("  signature fingerprint {}", v.signature_fingerprint);
    out!("  issued by audit entry #{} of agent {} ({})", v.audit_entry.1, v.audit_entry.0, v.audit_entry.2);
}

pub(super) fn print_certificate(c: &crate::certificate::Certificate) {
    use crate::signed::Signed;
    out!("certificate {} of tenant {} ({}), issued {} by {}", c.id, c.tenant, c.kind.name(), c.issued_at, c.actor);
    out!("  method: {} ({})", c.sanitization.technique, c.sanitization.category);
    for step in &c.sanitization.steps {
        out!("  - {step}");
    }
    for p in &c.pending {
        out!("  pending: {p}");
    }
    out!("  signature fingerprint {}", c.signature_fingerprint());
}

pub(super) fn print_drill(r: &crate::drill::Report) {
    out!("{}: drill of generation {}: {}", r.tenant, r.generation, format!("{:?}", r.outcome).to_uppercase());
    for t in &r.tests {
        out!("  {:<18} {:<5} {}", t.name, format!("{:?}", t.outcome).to_lowercase(), t.detail);
    }
    let e = &r.errors;
    if e.missing + e.checksum + e.size + e.other > 0 {
        out!("  errors: missing {}, checksum {}, size {}, other {}", e.missing, e.checksum, e.size, e.other);
    }
    for l in &r.lost {
        out!("  lost: {l}");
    }
    out!(
        "  restore {:.1} s (RTO {:.0} s), generation age {} s; report {}",
        r.restore_seconds,
        r.rto_seconds,
        r.rpo_seconds,
        r.id
    );
}

pub(super) fn print_drill_verified(r: &crate::drill::Report, entry: &(String, u64, String)) {
    use crate::signed::Signed;
    out!("drill report {} of tenant {}: signature good (agent {})", r.id, r.tenant, r.agent);
    out!("  signature fingerprint {}", r.signature_fingerprint());
    out!("  issued by audit entry #{} of agent {} ({})", entry.1, entry.0, entry.2);
}

pub(super) fn print_fleet_estimate(e: &crate::commands::drill::FleetEstimate) {
    for t in &e.tenants {
        let rate = t.throughput.map_or("no drill yet".to_string(), |r| format!("{:.1} MB/s", r / 1e6));
        out!("{:<24} {:>14} bytes  {rate}", t.tenant, t.bytes);
    }
    match e.estimate_seconds {
        Some(s) => out!(
            "fleet: {} tenants, {} restores at once: {:.0} s against an objective of {:.0} s: {}",
            e.tenants.len(),
            e.parallel,
            s,
            e.rto_seconds,
            if e.within_rto { "within it" } else { "OVER it" }
        ),
        None => out!("fleet: no drill has measured a restore yet: run `reversa drill --tenant T` first"),
    }
}
