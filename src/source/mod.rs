//! Where a tenant's live data is read. The embedded default is `sqlite`: one folder per tenant
//! under the configured root, holding `database.sqlite`, `attachments/**` and `documents/**`.

pub mod files;
pub mod sqlite;

use std::path::{Path, PathBuf};

use crate::tenant::TenantId;

/// The folders of a tenant that hold files, in the order they are backed up.
pub const FILE_FOLDERS: [&str; 2] = ["attachments", "documents"];
pub const DATABASE_FILE: &str = "database.sqlite";

/// Whether a table holds the tenant's records. `sqlite_sequence` holds SQLite's AUTOINCREMENT
/// counters: it is backed up and restored (restore needs it to hand out the same ids), but it is
/// not exported and not counted, so that backup, restore, export and `generations` give the
/// same table and row counts for the same data.
pub fn is_record_table(name: &str) -> bool {
    name != "sqlite_sequence"
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("tenant {tenant} does not exist: no folder {path}; check the tenant id and [source] root")]
    UnknownTenant { tenant: String, path: PathBuf },
    #[error("cannot list the tenants in {path}: {cause}; check [source] root")]
    Root { path: PathBuf, cause: std::io::Error },
    #[error("cannot read the database {path}: {cause}")]
    Database { path: PathBuf, cause: rusqlite::Error },
    #[error(
        "the database {path} has a hot journal, {journal}: a writer crashed in the middle of a \
         transaction, and the journal must be rolled back before the database can be read. reversa \
         never writes to the source: open the database once with the application, or run `sqlite3 \
         {path} 'PRAGMA integrity_check'`, which rolls the journal back; then back it up again"
    )]
    HotJournal { path: PathBuf, journal: PathBuf },
    #[error(
        "the database {path} is locked by a writer, which held its lock for the whole wait of {waited_secs} s \
         ([source] busy_timeout_secs); nothing was stored, and the next run will try again"
    )]
    Busy { path: PathBuf, waited_secs: u64 },
    #[error("cannot read {path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
}

/// The tenant's folder, which must exist.
pub fn tenant_dir(root: &Path, tenant: &TenantId) -> Result<PathBuf, SourceError> {
    let dir = root.join(tenant.as_str());
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        _ => Err(SourceError::UnknownTenant { tenant: tenant.to_string(), path: dir }),
    }
}

/// Every tenant folder under `root`, sorted. Folders whose names are not valid tenant ids are
/// returned as warnings, never silently skipped.
pub fn list_tenants(root: &Path) -> Result<(Vec<TenantId>, Vec<String>), SourceError> {
    let rd = std::fs::read_dir(root).map_err(|cause| SourceError::Root { path: root.into(), cause })?;
    let mut tenants = Vec::new();
    let mut warnings = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|cause| SourceError::Root { path: root.into(), cause })?;
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let name = entry.file_name();
        match TenantId::parse(&name.to_string_lossy()) {
            Ok(t) => tenants.push(t),
            Err(e) => warnings.push(format!("skipping folder {}: {e}", entry.path().display())),
        }
    }
    tenants.sort();
    Ok((tenants, warnings))
}
