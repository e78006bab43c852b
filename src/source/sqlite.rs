//! Reading a tenant's SQLite database under one consistent snapshot, table by table, row by row.

use std::path::{Path, PathBuf};

use rusqlite::{types::ValueRef, Connection, OpenFlags};

use super::SourceError;
use crate::generation::SchemaObject;

/// An open read transaction: everything read through it sees the database at one instant.
pub struct Snapshot {
    conn: Connection,
    path: PathBuf,
}

/// How a table is read: which columns, whether the rowid comes first, and in what order.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: String,
    pub columns: Vec<String>,
    pub rowid: Option<&'static str>,
    /// Positions, in a row as read, of the values that identify it (the rowid, or the primary
    /// key of a WITHOUT ROWID table), in key order; empty when the table has no key. Rows are
    /// read in this key's SQLite BINARY order (see `generation::delta`).
    pub key: Vec<u32>,
    order_by: String,
}

/// What kind of full-text (FTS3/4/5) virtual table a `CREATE VIRTUAL TABLE` statement makes.
#[derive(Debug, PartialEq, Eq)]
pub enum Fts {
    /// It stores its own text (the default).
    OwnContent,
    /// `content=<table>`: the text is in another table; the index is rebuilt from it. A
    /// contentless table (`content=''`) has nothing to read back either and is rebuilt empty.
    ExternalContent,
}

pub fn fts_kind(sql: &str) -> Option<Fts> {
    let lower = sql.to_ascii_lowercase();
    let module = lower.split("using").nth(1)?.trim_start();
    if !["fts3", "fts4", "fts5"].iter().any(|m| module.starts_with(m)) {
        return None;
    }
    let args = module.split_once('(').map(|(_, a)| a).unwrap_or_default();
    let external = args.split(',').any(|a| {
        a.trim().starts_with("content") && a.trim().trim_start_matches("content").trim_start().starts_with('=')
    });
    Some(if external { Fts::ExternalContent } else { Fts::OwnContent })
}

pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

impl Snapshot {
    /// Open `path` read-only and start the snapshot, waiting up to `busy` for a writer that
    /// holds the database locked.
    pub fn open(path: &Path, busy: std::time::Duration) -> Result<Snapshot, SourceError> {
        let err = |cause| SourceError::Database { path: path.into(), cause };
        if !path.is_file() {
            return Err(SourceError::Io {
                path: path.into(),
                cause: std::io::Error::new(std::io::ErrorKind::NotFound, "the tenant has no database file"),
            });
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(err)?;
        // A busy writer gets some time to finish before the snapshot gives up.
        conn.busy_timeout(busy).map_err(err)?;
        // The snapshot starts at the first read inside the transaction.
        conn.execute_batch("BEGIN DEFERRED; SELECT count(*) FROM sqlite_master;")
            .map_err(|cause| Self::explain(path, busy, cause))?;
        Ok(Snapshot { conn, path: path.into() })
    }

    /// The error of a snapshot that could not start, saying what the usual causes mean.
    fn explain(path: &Path, busy: std::time::Duration, cause: rusqlite::Error) -> SourceError {
        let code = cause.sqlite_error_code();
        let mut journal = path.as_os_str().to_owned();
        journal.push("-journal");
        let journal = PathBuf::from(journal);
        match code {
            // A read-only connection cannot roll a hot journal back, so SQLite refuses to read.
            Some(rusqlite::ErrorCode::ReadOnly) if journal.exists() => {
                SourceError::HotJournal { path: path.into(), journal }
            }
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                SourceError::Busy { path: path.into(), waited_secs: busy.as_secs() }
            }
            _ => SourceError::Database { path: path.into(), cause },
        }
    }

    fn err(&self, cause: rusqlite::Error) -> SourceError {
        SourceError::Database { path: self.path.clone(), cause }
    }

    /// Schema objects in creation order, and the header fields applications rely on.
    pub fn schema(&self) -> Result<(Vec<SchemaObject>, i64, i64), SourceError> {
        let mut st = self
            .conn
            .prepare(
                // Internal tables (sqlite_*) and the shadow tables of virtual tables (FTS) are
                // made by SQLite itself when the schema is replayed, so they are not part of it.
                "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE lower(substr(name, 1, 7)) <> 'sqlite_' \
                 AND name NOT IN (SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'shadow') \
                 ORDER BY rowid",
            )
            .map_err(|e| self.err(e))?;
        let objects = st
            .query_map([], |r| {
                Ok(SchemaObject { kind: r.get(0)?, name: r.get(1)?, tbl_name: r.get(2)?, sql: r.get(3)? })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        let uv: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        let app: i64 = self.conn.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        Ok((objects, uv, app))
    }

    /// The tables whose rows are backed up, in schema order, plus warnings for what is skipped.
    pub fn tables(&self, schema: &[SchemaObject]) -> Result<(Vec<TableSpec>, Vec<String>), SourceError> {
        let mut specs = Vec::new();
        let mut warnings = Vec::new();
        let mut names: Vec<String> = schema.iter().filter(|o| o.kind == "table").map(|o| o.name.clone()).collect();
        // AUTOINCREMENT counters live in sqlite_sequence; restore needs them to hand out the same ids.
        let has_seq: bool = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'", [], |r| r.get::<_, i64>(0))
            .map_err(|e| self.err(e))?
            > 0;
        if has_seq {
            names.push("sqlite_sequence".into());
        }
        for name in names {
            let (kind, without_rowid): (String, bool) = self
                .conn
                .query_row("SELECT type, wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1", [&name], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(|e| self.err(e))?;
            if kind == "virtual" {
                let sql = schema.iter().find(|o| o.name == name).and_then(|o| o.sql.as_deref()).unwrap_or_default();
                match fts_kind(sql) {
                    // A full-text table that holds its own text: its rows are read and written
                    // back through its visible columns, and SQLite rebuilds its index.
                    Some(Fts::OwnContent) => {}
                    // Its text lives in another table (backed up); restore rebuilds the index.
                    Some(Fts::ExternalContent) => continue,
                    None => {
                        warnings.push(format!(
                            "table {name} is a virtual table of a module reversa does not back up; its rows are \
                             not in this generation (its schema is)"
                        ));
                        continue;
                    }
                }
            } else if kind != "table" {
                warnings.push(format!("table {name} is a {kind} table; its rows are not backed up"));
                continue;
            }
            let mut st = self
                .conn
                .prepare("SELECT name, pk, hidden FROM pragma_table_xinfo(?1) ORDER BY cid")
                .map_err(|e| self.err(e))?;
            let cols: Vec<(String, i64, i64)> = st
                .query_map([&name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| self.err(e))?;
            // Generated and hidden columns are recomputed by SQLite and cannot be inserted.
            let columns: Vec<String> = cols.iter().filter(|c| c.2 == 0).map(|c| c.0.clone()).collect();
            let mut pk: Vec<&(String, i64, i64)> = cols.iter().filter(|c| c.1 > 0).collect();
            pk.sort_by_key(|c| c.1);
            let lower: Vec<String> = cols.iter().map(|c| c.0.to_lowercase()).collect();
            // sqlite_sequence is rebuilt by restore as the tables fill; its rowids carry no meaning.
            let rowid = if without_rowid || name == "sqlite_sequence" {
                None
            } else {
                ["rowid", "_rowid_", "oid"].into_iter().find(|a| !lower.iter().any(|c| c == a))
            };
            let position = |c: &str| columns.iter().position(|n| n == c).map(|p| p as u32);
            let pk_positions: Option<Vec<u32>> = pk.iter().map(|c| position(&c.0)).collect();
            let (order_by, key) = match (rowid, pk_positions) {
                (Some(alias), _) => (alias.to_string(), vec![0]),
                // BINARY whatever the key's collation, so `generation::delta::compare` agrees.
                (None, Some(key)) if !key.is_empty() => {
                    (pk.iter().map(|c| format!("{} COLLATE BINARY", quote(&c.0))).collect::<Vec<_>>().join(", "), key)
                }
                _ => ((1..=columns.len()).map(|i| i.to_string()).collect::<Vec<_>>().join(", "), Vec::new()),
            };
            specs.push(TableSpec { name, columns, rowid, key, order_by });
        }
        Ok((specs, warnings))
    }

    /// Call `row` with every row of the table, in key order. Values come rowid first if
    /// `spec.rowid` is set, then the columns.
    pub fn for_each_row<E: From<SourceError>>(
        &self,
        spec: &TableSpec,
        mut row: impl FnMut(&[ValueRef<'_>]) -> Result<(), E>,
    ) -> Result<(), E> {
        let cols = spec.columns.iter().map(|c| quote(c));
        let select: Vec<String> = spec.rowid.map(String::from).into_iter().chain(cols).collect();
        let sql = format!("SELECT {} FROM {} ORDER BY {}", select.join(", "), quote(&spec.name), spec.order_by);
        let mut st = self.conn.prepare(&sql).map_err(|e| E::from(self.err(e)))?;
        let n = select.len();
        let mut rows = st.query([]).map_err(|e| E::from(self.err(e)))?;
        while let Some(r) = rows.next().map_err(|e| E::from(self.err(e)))? {
            let mut values: Vec<ValueRef<'_>> = Vec::with_capacity(n);
            for i in 0..n {
                values.push(r.get_ref(i).map_err(|e| E::from(self.err(e)))?);
            }
            row(&values)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_kinds() {
        assert_eq!(fts_kind("CREATE VIRTUAL TABLE t USING fts5(a, b)"), Some(Fts::OwnContent));
        assert_eq!(fts_kind("CREATE VIRTUAL TABLE t USING FTS4(a, tokenize=porter)"), Some(Fts::OwnContent));
        assert_eq!(
            fts_kind("CREATE VIRTUAL TABLE t USING fts5(a, content='c', content_rowid='id')"),
            Some(Fts::ExternalContent)
        );
        assert_eq!(fts_kind("CREATE VIRTUAL TABLE t USING fts5(a, content = '')"), Some(Fts::ExternalContent));
        assert_eq!(fts_kind("CREATE VIRTUAL TABLE t USING rtree(id, x0, x1)"), None);
    }
}
