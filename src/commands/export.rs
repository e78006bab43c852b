//! `export`: the customer's copy of a tenant (docs/EXPORT.md), from the live source or from a
//! generation; and `exports list` / `exports prune` for the copies uploaded to the store.
//!
//! Nothing appears under a final name until the whole export is written: the archive is built
//! in temporary files (the work folder in the state folder, dot-named parts in the output
//! folder) and renamed at the end. Any failure removes what was written, including the
//! passphrase file and parts already uploaded.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Agent, Error, Result};
use crate::export::archive::{self, Passphrase, SplitWriter};
use crate::export::read::{self, LiveRead};
use crate::export::{texts, xlsx, Counters, Event, ExportError, Exporter, Formats, Settings, SourceInfo, TableInfo};
use crate::progress::Progress;
use crate::store::Body;
use crate::tenant::TenantId;

/// Events in flight between the reader and the writer (each about 1 MiB).
const QUEUE: usize = 4;

/// What the user asked for (`reversa export`; the daemon takes the same as a request body).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportOptions {
    /// A generation id; `None` reads the live source.
    #[serde(default)]
    pub generation: Option<String>,
    pub out: PathBuf,
    #[serde(default = "Formats::both")]
    pub formats: Formats,
    /// Largest part, in bytes.
    #[serde(default = "ExportOptions::default_split_size")]
    pub split_size: u64,
    /// Write the passphrase here (mode 0600) instead of returning it.
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    /// Put the parts under `exports/<tenant>/<export id>/` in the store.
    #[serde(default)]
    pub upload: bool,
    /// Data rows per sheet: [`xlsx::SHEET_ROWS_MAX`]; tests make it small to cross it quickly.
    #[serde(skip, default = "ExportOptions::default_sheet_rows")]
    pub sheet_rows: u32,
}

impl ExportOptions {
    pub fn new(out: &Path) -> ExportOptions {
        ExportOptions {
            generation: None,
            out: out.into(),
            formats: Formats::both(),
            split_size: Self::default_split_size(),
            passphrase_file: None,
            upload: false,
            sheet_rows: Self::default_sheet_rows(),
        }
    }

    fn default_split_size() -> u64 {
        512 << 20
    }

    fn default_sheet_rows() -> u32 {
        xlsx::SHEET_ROWS_MAX
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct UploadedPart {
    pub key: String,
    /// A pre-signed download link, on stores that make them. A bearer secret for its lifetime:
    /// never serialized (a report may be logged); whoever hands it over does so on purpose.
    #[serde(skip)]
    pub link: Option<String>,
}

/// What an export made. Serializing it leaves out the passphrase and the download links.
#[derive(Debug, serde::Serialize)]
pub struct ExportReport {
    pub tenant: String,
    pub export_id: String,
    pub source: SourceInfo,
    /// The archive, or its parts in order.
    pub parts: Vec<PathBuf>,
    /// When split: the text file next to the parts that says how to join them.
    pub join_note: Option<PathBuf>,
    /// SHA-256 of the archive (of the parts joined).
    pub sha256: String,
    pub bytes: u64,
    pub tables: Vec<TableInfo>,
    pub files: u64,
    pub file_bytes: u64,
    /// The passphrase, when it was not written to a file. Show it once, to the requester only.
    #[serde(skip)]
    pub passphrase: Option<Passphrase>,
    pub passphrase_file: Option<PathBuf>,
    pub uploaded: Vec<UploadedPart>,
    pub warnings: Vec<crate::source::Warning>,
    pub duration_ms: u64,
}

pub(crate) enum Input {
    Live(PathBuf),
    Generation(Box<GenerationInput>),
    /// A folder made from a generation (an extraordinary extraction's tables or query result):
    /// read like the live source, recorded as the generation it came from.
    Derived {
        dir: PathBuf,
        generation: String,
        time: String,
    },
}

pub(crate) struct GenerationInput {
    repo: crate::repository::Repository,
    manifest: crate::generation::Manifest,
    index: crate::repository::Index,
}

/// What an extraordinary extraction adds to an export: its record in the manifest, and files
/// put into the archive as they are.
#[derive(Default)]
pub(crate) struct Extras {
    pub extraordinary: Option<crate::export::Extraordinary>,
    pub attachments: Vec<(String, PathBuf)>,
}

/// Removes what a failed export wrote. Disarmed once the export is complete; the work folder
/// goes in every case.
struct Cleanup {
    out: PathBuf,
    temp_prefix: String,
    finals: Vec<PathBuf>,
    passphrase_file: Option<PathBuf>,
    work: Option<PathBuf>,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(w) = &self.work {
            let _ = fs::remove_dir_all(w);
        }
        if !self.armed {
            return;
        }
        if let Ok(rd) = fs::read_dir(&self.out) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.temp_prefix) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        for f in self.finals.iter().chain(self.passphrase_file.iter()) {
            let _ = fs::remove_file(f);
        }
    }
}

fn out_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |cause| ExportError::OutDir { path: path.into(), cause }
}

/// Export a tenant. When `cancel` fires, the writer thread stops at its next event, and the
/// parts and the passphrase file written so far are removed.
pub(crate) async fn export(
    agent: &Agent,
    tenant: &TenantId,
    opts: &ExportOptions,
    cancel: &tokio_util::sync::CancellationToken,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    // What to read. A wrong tenant or generation is reported before anything is written.
    let input = match &opts.generation {
        None => Input::Live(agent.tenant_dir(tenant)?),
        Some(g) => {
            let repo = agent.repository(tenant, false).await?;
            let manifest = repo.resolve_generation(Some(g)).await?;
            let index = repo.load_index().await?;
            Input::Generation(Box::new(GenerationInput { repo, manifest, index }))
        }
    };
    Box::pin(write(agent, tenant, input, opts, Extras::default(), cancel, progress)).await
}

/// Write the export of `input` (see [`export`]); an extraordinary extraction comes here with
/// its derived folder and its extras.
pub(crate) async fn write(
    agent: &Agent,
    tenant: &TenantId,
    input: Input,
    opts: &ExportOptions,
    extras: Extras,
    cancel: &tokio_util::sync::CancellationToken,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    let started = Instant::now();
    let now = jiff::Timestamp::now();
    let created = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let export_id = format!("{stamp}-{:08x}", rand::random::<u32>());
    let base = format!("{tenant}-{stamp}");

    fs::create_dir_all(&opts.out).map_err(out_err(&opts.out))?;
    let temp_prefix = format!(".{base}-{}.partial", &export_id[export_id.len() - 8..]);
    let split = SplitWriter::create(&opts.out, &temp_prefix, opts.split_size)
        .map_err(out_err(&opts.out))?
        .stop_on(cancel.clone());
    let mut cleanup = Cleanup {
        out: opts.out.clone(),
        temp_prefix,
        finals: Vec::new(),
        passphrase_file: None,
        work: None,
        armed: true,
    };

    let passphrase = Passphrase::generate();
    if let Some(path) = &opts.passphrase_file {
        write_passphrase(path, &passphrase)?;
        cleanup.passphrase_file = Some(path.clone());
    }

    let work = agent.scratch(tenant).join(format!("export-{export_id}"));
    // The work folder holds the tenant's data in clear until it is encrypted: only this user
    // may enter it.
    std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
        .create(&work)
        .map_err(|cause| Error::Io { what: "cannot create", path: work.clone(), cause })?;
    cleanup.work = Some(work.clone());

    let counters = Arc::new(Counters::default());
    let total = match &input {
        Input::Generation(g) => Some(g.manifest.summary.table_bytes + g.manifest.summary.file_bytes),
        Input::Live(_) | Input::Derived { .. } => None,
    };
    progress.phase(&format!("export {tenant}"), total);

    let settings = Settings {
        tenant: tenant.to_string(),
        work: work.clone(),
        formats: opts.formats,
        sheet_rows: opts.sheet_rows,
        created_ns: now.as_nanosecond(),
        extraordinary: extras.extraordinary,
        attachments: extras.attachments,
    };
    let exporter = Exporter::new(settings, counters.clone())?;

    let busy = agent.config.source.busy_timeout();
    let pipeline = async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Event>(QUEUE);
        let cancel = cancel.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let mut ex = exporter;
            while let Some(ev) = rx.blocking_recv() {
                if cancel.is_cancelled() {
                    return Err(ExportError::Stopped);
                }
                ex.apply(ev)?;
            }
            Ok::<_, ExportError>(ex)
        });
        let feed = async {
            match &input {
                Input::Live(dir) | Input::Derived { dir, .. } => {
                    let dir = dir.clone();
                    tokio::task::spawn_blocking(move || read::read_live(&dir, busy, &tx).map(Some))
                        .await
                        .expect("export reader panicked")
                }
                Input::Generation(g) => {
                    let GenerationInput { repo, manifest, index } = &**g;
                    let catalog = repo.fetch_catalog(index, manifest, &work).await?;
                    let r = read::read_generation(repo, index, &catalog, &manifest.id, &work, &tx).await;
                    drop(tx);
                    r.map(|_| None)
                }
            }
        };
        let (fed, written) = tokio::join!(feed, writer);
        let written = written.expect("export writer panicked");
        // The first real cause: a reader that stopped because the writer failed reports only
        // "stopped", and the other way round.
        let (live, ex): (Option<LiveRead>, Exporter) = match (fed, written) {
            (Err(ExportError::Stopped), Err(e)) | (Err(e), _) | (Ok(_), Err(e)) => return Err(Error::from(e)),
            (Ok(live), Ok(ex)) => (live, ex),
        };
        let (source, warnings) = match (&input, live) {
            (Input::Live(_), Some(l)) => (SourceInfo::Live { time: l.snapshot_time }, l.warnings),
            (Input::Derived { generation, time, .. }, Some(l)) => {
                (SourceInfo::Generation { id: generation.clone(), time: time.clone() }, l.warnings)
            }
            (Input::Generation(g), _) => {
                (SourceInfo::Generation { id: g.manifest.id.clone(), time: g.manifest.time.clone() }, Vec::new())
            }
            (Input::Live(_) | Input::Derived { .. }, None) => unreachable!("the live reader reports what it read"),
        };
        let finish = {
            let (source, created) = (source.clone(), created.clone());
            // The customer reads the manifest: paths relative to the tenant, not the server's.
            let warnings: Vec<String> = match &input {
                Input::Live(dir) | Input::Derived { dir, .. } => {
                    warnings.iter().map(|w| w.relative_to(dir).to_string()).collect()
                }
                Input::Generation(_) => warnings.iter().map(ToString::to_string).collect(),
            };
            let counters = counters.clone();
            let tenant = tenant.to_string();
            let mtime = archive::zip_time(now.as_nanosecond());
            tokio::task::spawn_blocking(move || {
                let f = ex.finish(&source, &created, &warnings)?;
                counters.inner_size.store(f.inner_size, std::sync::atomic::Ordering::Relaxed);
                let (parts, sha) = archive::write_outer(
                    split,
                    &f.inner,
                    &passphrase,
                    &texts::outer(&tenant, &created),
                    mtime,
                    &|n| Counters::add(&counters.encrypted, n),
                )?;
                Ok::<_, ExportError>((f, parts, sha, passphrase))
            })
        };
        let (finished, parts, sha, passphrase) = finish.await.expect("export finisher panicked")?;
        Ok((source, warnings, finished, parts, sha, passphrase))
    };
    let ticker = async {
        let mut last = 0;
        let mut encrypting = false;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let c = &counters;
            let inner = Counters::get(&c.inner_size);
            if inner > 0 && !encrypting {
                encrypting = true;
                last = 0;
                progress.phase("AES-256", Some(inner));
            }
            let now = if encrypting { Counters::get(&c.encrypted) } else { Counters::get(&c.bytes) };
            progress.bytes(now.saturating_sub(last));
            last = now;
            progress.item(&format!(
                "{} tables, {} rows, {} files",
                Counters::get(&c.tables),
                Counters::get(&c.rows),
                Counters::get(&c.files)
            ));
        }
    };
    let (source, warnings, finished, temp_parts, sha256, passphrase) = tokio::select! {
        r = pipeline => r?,
        _ = ticker => unreachable!("the ticker never ends"),
    };

    // Into place: one archive, or numbered parts (zero-padded so that they sort by name).
    let finals: Vec<PathBuf> = if temp_parts.len() == 1 {
        vec![opts.out.join(format!("{base}.zip"))]
    } else {
        let width = temp_parts.len().to_string().len();
        (1..=temp_parts.len()).map(|i| opts.out.join(format!("{base}-part{i:0width$}.zip"))).collect()
    };
    for (tmp, fin) in temp_parts.iter().zip(&finals) {
        if fin.exists() {
            return Err(ExportError::Invalid(format!(
                "{} already exists (an export of {tenant} made in the same second); run the \
                 export again",
                fin.display()
            ))
            .into());
        }
        fs::rename(tmp, fin).map_err(out_err(&opts.out))?;
        cleanup.finals.push(fin.clone());
    }
    let mut bytes = 0;
    for f in &finals {
        bytes += fs::metadata(f).map_err(out_err(&opts.out))?.len();
    }
    let join_note = if finals.len() > 1 {
        let note = opts.out.join(format!("{base}-LEGGIMI.txt"));
        fs::write(&note, join_text(&base, &finals, &sha256)).map_err(out_err(&opts.out))?;
        cleanup.finals.push(note.clone());
        Some(note)
    } else {
        None
    };

    let mut uploaded = Vec::new();
    if opts.upload {
        let mut files = finals.clone();
        files.extend(join_note.clone());
        match upload(agent, tenant, &export_id, &files).await {
            Ok(u) => uploaded = u,
            Err((done, e)) => {
                for key in done {
                    let _ = agent.store.delete(&key).await;
                }
                return Err(e);
            }
        }
    }

    cleanup.armed = false;
    drop(cleanup);
    progress.done();
    let passphrase_file = opts.passphrase_file.clone();
    Ok(ExportReport {
        tenant: tenant.to_string(),
        export_id,
        source,
        parts: finals,
        join_note,
        sha256,
        bytes,
        tables: finished.tables,
        files: finished.files,
        file_bytes: finished.file_bytes,
        passphrase: if passphrase_file.is_some() { None } else { Some(passphrase) },
        passphrase_file,
        uploaded,
        warnings,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// Create `path` with mode 0600 (never over an existing file) and write the passphrase.
fn write_passphrase(path: &Path, p: &Passphrase) -> Result<()> {
    let mut f =
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|cause| {
            match cause.kind() {
                std::io::ErrorKind::AlreadyExists => ExportError::PassphraseFileExists { path: path.into() },
                _ => ExportError::Io { what: "cannot create the passphrase file", path: path.into(), cause },
            }
        })?;
    f.write_all(p.expose().as_bytes()).and_then(|_| f.write_all(b"\n")).and_then(|_| f.sync_all()).map_err(|cause| {
        let _ = fs::remove_file(path);
        Error::Io { what: "cannot write the passphrase file", path: path.into(), cause }
    })
}

/// The note written next to split parts: how to join them, and the checksum of the result.
fn join_text(base: &str, parts: &[PathBuf], sha256: &str) -> String {
    let names: Vec<String> =
        parts.iter().map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()).collect();
    let list = names.join(" ");
    let plus = names.join(" + ");
    format!(
        "L'esportazione {base} e' divisa in {n} parti. Riunirle in un solo file, in quest'ordine:\r\n\
\r\n\
  Linux/macOS:  cat {list} > {base}.zip\r\n\
  Windows:      copy /b {plus} {base}.zip\r\n\
\r\n\
oppure rinominarle {base}.zip.001, {base}.zip.002, ... e aprire la prima con 7-Zip.\r\n\
Il file riunito ha SHA-256 {sha256}\r\n\
Poi aprire {base}.zip con 7-Zip e leggere LEGGIMI.txt.\r\n\
\r\n\
The export {base} comes in {n} parts. Join them into one file, in this order:\r\n\
\r\n\
  Linux/macOS:  cat {list} > {base}.zip\r\n\
  Windows:      copy /b {plus} {base}.zip\r\n\
\r\n\
or rename them {base}.zip.001, {base}.zip.002, ... and open the first with 7-Zip.\r\n\
The joined file has SHA-256 {sha256}\r\n\
Then open {base}.zip with 7-Zip and read README.txt.\r\n",
        n = parts.len()
    )
}

/// Upload `files` (streamed from disk) under `exports/<tenant>/<export id>/`. On failure,
/// returns the keys already uploaded so that the caller can remove them.
async fn upload(
    agent: &Agent,
    tenant: &TenantId,
    export_id: &str,
    files: &[PathBuf],
) -> std::result::Result<Vec<UploadedPart>, (Vec<String>, Error)> {
    let ttl = Duration::from_secs(agent.config.exports.link_ttl_hours as u64 * 3600);
    let mut done: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let key = crate::repository::layout::export_part(tenant, export_id, &name);
        let len = match fs::metadata(f) {
            Ok(m) => m.len(),
            Err(cause) => return Err((done, Error::Io { what: "cannot read", path: f.clone(), cause })),
        };
        if let Err(e) = agent.store.put(&key, Body::File { path: f.clone(), len }).await {
            return Err((done, e.into()));
        }
        done.push(key.clone());
        let link = match agent.store.presign_get(&key, ttl).await {
            Ok(l) => l,
            Err(e) => return Err((done, e.into())),
        };
        out.push(UploadedPart { key, link });
    }
    Ok(out)
}

/// One export in the store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredExport {
    pub tenant: String,
    pub id: String,
    /// RFC 3339 UTC, from the export id.
    pub created: String,
    pub objects: Vec<String>,
    pub bytes: u64,
}

/// When an export id (`YYYYMMDDTHHMMSSZ-xxxxxxxx`) was made.
fn export_time(id: &str) -> Option<jiff::Timestamp> {
    let b = id.as_bytes();
    if b.len() < 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = id.get(r)?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok()).flatten()
    };
    let dt = jiff::civil::DateTime::new(
        num(0..4)? as i16,
        num(4..6)? as i8,
        num(6..8)? as i8,
        num(9..11)? as i8,
        num(11..13)? as i8,
        num(13..15)? as i8,
        0,
    )
    .ok()?;
    dt.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// The exports in the store, oldest first; objects under `exports/` that are not laid out as
/// `exports/<tenant>/<export id>/<file>` are returned apart, as warnings.
pub async fn list_exports(agent: &Agent, tenant: Option<&TenantId>) -> Result<(Vec<StoredExport>, Vec<String>)> {
    let prefix = crate::repository::layout::exports(tenant);
    let mut exports: Vec<StoredExport> = Vec::new();
    let mut odd = Vec::new();
    for o in agent.store.list(&prefix).await? {
        let parts: Vec<&str> = o.key.splitn(4, '/').collect();
        let (t, id) = match parts.as_slice() {
            [_, t, id, _] => (*t, *id),
            _ => {
                odd.push(format!("{}: not an export file; left alone", o.key));
                continue;
            }
        };
        let Some(time) = export_time(id) else {
            odd.push(format!("{}: export id without a time; left alone", o.key));
            continue;
        };
        match exports.last_mut() {
            Some(e) if e.tenant == t && e.id == id => {
                e.objects.push(o.key.clone());
                e.bytes += o.size;
            }
            _ => exports.push(StoredExport {
                tenant: t.to_string(),
                id: id.to_string(),
                created: time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                objects: vec![o.key.clone()],
                bytes: o.size,
            }),
        }
    }
    exports.sort_by(|a, b| a.id.cmp(&b.id).then(a.tenant.cmp(&b.tenant)));
    Ok((exports, odd))
}

#[derive(Debug, serde::Serialize)]
pub struct PruneReport {
    pub keep_days: u32,
    pub removed: Vec<StoredExport>,
    pub kept: usize,
    pub warnings: Vec<String>,
}

/// Remove the exports made more than `[exports] keep_days` days before `now`.
pub(crate) async fn prune_exports(agent: &Agent, now: jiff::Timestamp) -> Result<PruneReport> {
    let keep_days = agent.config.exports.keep_days;
    let cutoff = now
        .checked_sub(jiff::SignedDuration::from_hours(keep_days as i64 * 24))
        .map_err(|e| Error::Failed(format!("cannot compute the prune cutoff: {e}")))?;
    let (all, warnings) = list_exports(agent, None).await?;
    let mut removed = Vec::new();
    let mut kept = 0;
    for e in all {
        let old = export_time(&e.id).is_some_and(|t| t < cutoff);
        if !old {
            kept += 1;
            continue;
        }
        for key in &e.objects {
            agent.store.delete(key).await?;
        }
        tracing::info!(tenant = %e.tenant, export = %e.id, "removed an expired export");
        removed.push(e);
    }
    Ok(PruneReport { keep_days, removed, kept, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_ids_carry_their_time() {
        let t = export_time("20261123T101500Z-1a2b3c4d").unwrap();
        assert_eq!(t.to_string(), "2026-11-23T10:15:00Z");
        assert!(export_time("2026112T101500Z-1a2b3c4d").is_none());
        assert!(export_time("20261323T101500Z-1a2b3c4d").is_none());
        assert!(export_time("latest").is_none());
    }
}
