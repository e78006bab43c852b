//! The two readers of an export. Both send the same [`Event`]s for the same data: the live
//! reader encodes rows with the canonical row encoding that backups store, so the exporter
//! cannot tell (and does not care) where its rows came from.

use std::io::Read;
use std::path::Path;

use rusqlite::types::ValueRef;
use tokio::sync::mpsc::Sender;

use super::{Event, ExportError};
use crate::generation::{rows, Entry};
use crate::repository::{entry_blobs, Catalog, Index, RepoError, Repository};
use crate::source::files::{self, FileMeta, Item};
use crate::source::sqlite::Snapshot;
use crate::source::{Warning, DATABASE_FILE};

/// Row bytes and file bytes travel in pieces of about this size.
pub const PIECE: usize = 1 << 20;

/// What reading the live source found out besides the data.
pub struct LiveRead {
    /// When the database snapshot was taken (RFC 3339 UTC).
    pub snapshot_time: String,
    /// Folders that could not be listed, links that leave the tenant, special files.
    pub warnings: Vec<Warning>,
}

fn send_blocking(tx: &Sender<Event>, ev: Event) -> Result<(), ExportError> {
    tx.blocking_send(ev).map_err(|_| ExportError::Stopped)
}

/// Read the live tenant folder: every table under one read transaction, then every file. A file
/// that cannot be read stops the export (a customer copy must not silently lack a file). Runs
/// on a blocking thread.
pub fn read_live(tenant_dir: &Path, busy: std::time::Duration, tx: &Sender<Event>) -> Result<LiveRead, ExportError> {
    let db = Snapshot::open(&tenant_dir.join(DATABASE_FILE), busy)?;
    let snapshot_time = crate::now_rfc3339();
    let (objects, _, _) = db.schema()?;
    let (tables, table_warnings) = db.tables(&objects)?;
    let mut warnings: Vec<Warning> = table_warnings.into_iter().map(Warning::other).collect();
    send_blocking(tx, Event::Schema(objects))?;
    for spec in tables {
        send_blocking(
            tx,
            Event::Table {
                name: spec.name.clone(),
                columns: spec.columns.clone(),
                rowid: spec.rowid.is_some(),
                rows: None,
            },
        )?;
        let mut buf = Vec::with_capacity(PIECE + 4096);
        db.for_each_row(&spec, |values: &[ValueRef<'_>]| -> Result<(), ExportError> {
            for v in values {
                rows::encode(*v, &mut buf);
            }
            if buf.len() >= PIECE {
                let full = std::mem::replace(&mut buf, Vec::with_capacity(PIECE + 4096));
                send_blocking(tx, Event::Rows(full))?;
            }
            Ok(())
        })?;
        if !buf.is_empty() {
            send_blocking(tx, Event::Rows(buf))?;
        }
        send_blocking(tx, Event::End)?;
    }
    drop(db);

    let mut walk_warnings = Vec::new();
    let mut changed = Vec::new();
    files::walk(
        tenant_dir,
        |item| -> Result<(), ExportError> {
            match item {
                Item::Dir { rel, meta } => send_blocking(tx, Event::Dir { path: rel, mtime_ns: meta.mtime_ns }),
                Item::Symlink { rel, target } => send_blocking(tx, Event::Symlink { path: rel, target }),
                Item::File { rel, abs, meta } => read_file(&rel, &abs, &meta, tx, &mut changed),
            }
        },
        |w| walk_warnings.push(w),
    )?;
    warnings.extend(walk_warnings);
    warnings.extend(changed);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(LiveRead { snapshot_time, warnings })
}

fn read_file(
    rel: &[u8],
    abs: &Path,
    walked: &FileMeta,
    tx: &Sender<Event>,
    warnings: &mut Vec<Warning>,
) -> Result<(), ExportError> {
    let unreadable = |cause| ExportError::Unreadable { path: abs.into(), cause };
    let mut f = files::open_walked(abs, walked).map_err(unreadable)?;
    let before = FileMeta::of(&f.metadata().map_err(unreadable)?);
    send_blocking(tx, Event::File { path: rel.to_vec(), size: before.size, mtime_ns: before.mtime_ns })?;
    let mut size = 0u64;
    loop {
        let mut buf = vec![0u8; PIECE];
        let n = f.read(&mut buf).map_err(unreadable)?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        size += n as u64;
        send_blocking(tx, Event::Data(buf))?;
    }
    send_blocking(tx, Event::End)?;
    let after = f.metadata().ok().map(|m| FileMeta::of(&m));
    if after != Some(before) || size != before.size {
        warnings.push(Warning::ChangedWhileRead { path: abs.to_path_buf(), attempts: 1 });
    }
    Ok(())
}

/// Read a generation: its catalog in order, the blobs of its tables and files fetched ahead
/// across entries, decrypted and verified (`Repository::catalog_blobs`). A file whose blobs do
/// not add up to its recorded size is damage, and stops the export.
pub async fn read_generation(
    repo: &Repository,
    index: &Index,
    catalog: &Catalog,
    generation: &str,
    tmp_dir: &Path,
    tx: &Sender<Event>,
) -> Result<(), ExportError> {
    let send = |ev| async move { tx.send(ev).await.map_err(|_| ExportError::Stopped) };
    let mut blobs = repo.catalog_blobs(index, catalog, generation, |_| true)?;
    for entry in catalog.entries()? {
        let entry = entry?;
        let n = entry_blobs(&entry, generation)?.len();
        // A table stored as a base and deltas: its rows at this generation, merged as they stream.
        let mut merger = repo.table_merger(index, &entry, generation, tmp_dir).await?;
        let merge_err = |name: &str, e: crate::generation::delta::DeltaError| {
            ExportError::Repo(RepoError::Damaged {
                what: "table delta",
                key: format!("{generation}, table {name}"),
                cause: e.to_string(),
            })
        };
        match entry {
            Entry::Schema { objects, .. } => send(Event::Schema(objects)).await?,
            Entry::Table { name, columns, rowid, rows, .. } => {
                send(Event::Table { name: name.clone(), columns, rowid, rows: Some(rows) }).await?;
                for _ in 0..n {
                    let data = blobs.next().await?;
                    let rows = match merger.as_mut() {
                        Some(m) => {
                            let mut out = Vec::with_capacity(data.len());
                            m.push(&data, &mut out).map_err(|e| merge_err(&name, e))?;
                            out
                        }
                        None => data,
                    };
                    send(Event::Rows(rows)).await?;
                }
                if let Some(m) = merger {
                    let mut tail = Vec::new();
                    m.finish(&mut tail).map_err(|e| merge_err(&name, e))?;
                    send(Event::Rows(tail)).await?;
                }
                send(Event::End).await?;
            }
            Entry::Dir { path, mtime_ns, .. } => send(Event::Dir { path: path.to_bytes(), mtime_ns }).await?,
            Entry::File { path, size, mtime_ns, .. } => {
                let shown = path.display();
                send(Event::File { path: path.to_bytes(), size, mtime_ns }).await?;
                let mut got = 0u64;
                for _ in 0..n {
                    let data = blobs.next().await?;
                    got += data.len() as u64;
                    send(Event::Data(data)).await?;
                }
                if got != size {
                    return Err(ExportError::Repo(RepoError::Damaged {
                        what: "generation catalog",
                        key: generation.into(),
                        cause: format!("{shown}: {got} bytes in its blobs, {size} recorded"),
                    }));
                }
                send(Event::End).await?;
            }
            Entry::Symlink { path, target } => {
                send(Event::Symlink { path: path.to_bytes(), target: target.to_bytes() }).await?
            }
        }
    }
    Ok(())
}
