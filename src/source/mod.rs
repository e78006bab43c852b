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
    Root {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("cannot read the database {path}: {cause}")]
    Database {
        path: PathBuf,
        #[source]
        cause: rusqlite::Error,
    },
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
    Io {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
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

/// What a read of a tenant left out, or could not read as it was. A backup keeps each in its
/// generation (as text), an export in its manifest, and the run ends with exit 3. The daemon
/// reports them by kind.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Warning {
    /// A file or folder that could not be read: it was left out.
    Unreadable { path: std::path::PathBuf, cause: String },
    /// A symbolic link that leads out of the tenant's folder (or nowhere): not followed, left out.
    LinkOutOfTenant { path: std::path::PathBuf, why: &'static str },
    /// A file that changed while it was read: the last read is kept.
    ChangedWhileRead { path: std::path::PathBuf, attempts: usize },
    /// A socket, a device or a FIFO: skipped.
    SpecialFile { path: std::path::PathBuf },
    /// Anything else: a folder that is a file, a table whose rows cannot be read, an unusable cache.
    Other { message: String },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::Unreadable { path, cause } => {
                write!(f, "cannot read {}: {cause}; it was left out (check its permissions)", path.display())
            }
            Warning::LinkOutOfTenant { path, why } => write!(f, "symlink {} {why}; it was left out", path.display()),
            Warning::ChangedWhileRead { path, attempts } => write!(
                f,
                "{} changed while it was read ({attempts} attempts); what was read last is kept, and may be \
                 inconsistent",
                path.display()
            ),
            Warning::SpecialFile { path } => {
                write!(f, "{} is a special file (socket, device or FIFO); skipped", path.display())
            }
            Warning::Other { message } => f.write_str(message),
        }
    }
}

impl Warning {
    pub fn other(message: String) -> Warning {
        Warning::Other { message }
    }

    /// The same warning with paths relative to `dir` (the tenant's folder), as a customer reads
    /// them in an export's manifest.
    pub fn relative_to(&self, dir: &std::path::Path) -> Warning {
        let rel = |p: &std::path::PathBuf| p.strip_prefix(dir).map(|r| r.to_path_buf()).unwrap_or_else(|_| p.clone());
        match self {
            Warning::Unreadable { path, cause } => Warning::Unreadable { path: rel(path), cause: cause.clone() },
            Warning::LinkOutOfTenant { path, why } => Warning::LinkOutOfTenant { path: rel(path), why },
            Warning::ChangedWhileRead { path, attempts } => {
                Warning::ChangedWhileRead { path: rel(path), attempts: *attempts }
            }
            Warning::SpecialFile { path } => Warning::SpecialFile { path: rel(path) },
            Warning::Other { message } => {
                Warning::Other { message: message.replace(&format!("{}/", dir.display()), "") }
            }
        }
    }
}

#[cfg(test)]
mod warning_tests {
    use super::Warning;

    #[test]
    fn warnings_are_typed_by_kind_and_read_relative_to_the_tenant() {
        let dir = std::path::Path::new("/srv/tenants/t1");
        let w =
            Warning::LinkOutOfTenant { path: dir.join("attachments/fuori"), why: "points outside the tenant's folder" };
        let json = serde_json::to_value(&w).unwrap();
        assert_eq!(json["kind"], "link_out_of_tenant");
        assert_eq!(json["path"], "/srv/tenants/t1/attachments/fuori");
        assert_eq!(
            w.relative_to(dir).to_string(),
            "symlink attachments/fuori points outside the tenant's folder; it was left out"
        );
        let kinds: Vec<String> = [
            Warning::Unreadable { path: "a".into(), cause: "denied".into() },
            Warning::ChangedWhileRead { path: "b".into(), attempts: 3 },
            Warning::SpecialFile { path: "c".into() },
            Warning::other("d".into()),
        ]
        .iter()
        .map(|w| serde_json::to_value(w).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
        assert_eq!(kinds, ["unreadable", "changed_while_read", "special_file", "other"]);
    }
}
