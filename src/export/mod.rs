//! The customer export: a tenant's records as XLSX and CSV with its files, in an AES-256 ZIP.
//!
//! ```text
//! live source (one snapshot) ─┐                     ┌─ dati/<tenant>.xlsx   (xlsx: constant memory)
//!                             ├─ Events (bounded) ─> Exporter ─ dati/csv/*.csv, dati/blob/**, ...
//! generation (verified blobs) ┘                     └─ allegati/**, documenti/**  ─> contenuto.zip
//! contenuto.zip ─ AES-256 ─> <tenant>-<time>.zip (cut into parts over --split-size)
//! ```
//!
//! Both readers ([`read`]) turn what they read into the same [`Event`]s, with table rows in the
//! canonical row encoding of [`crate::generation::rows`]; one [`Exporter`] writes them. An export
//! of the live source and one of a generation of the same data are therefore the same, apart
//! from the time and source fields of `manifest.json` and the workbook's creation time.
//!
//! Memory does not grow with the rows or the bytes of the tenant: rows stream through
//! rust_xlsxwriter's constant-memory sheets (spooled to temporary files), CSV files are spooled
//! to disk, files are copied in 1 MiB pieces, and the file list of the manifest is spooled too.
//! What grows is one name per file and folder (the ZIP central directory and the name map).

pub mod archive;
pub mod csv;
pub mod names;
pub mod read;
pub mod texts;
pub mod xlsx;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::types::ValueRef;
use serde::Serialize;

use crate::generation::{rows, EntryPath, SchemaObject};
use archive::{InnerZip, Method, Recorded};
use names::{PathMap, Stems};
use xlsx::{XValue, XlsxBook};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{what} {path}: {cause}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error(
        "cannot read {path}: {cause}; the export stops rather than leave the file out (fix its \
         permissions and export again)"
    )]
    Unreadable {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error(
        "cannot write the export into {path}: {cause}; choose another --out folder or fix its \
         permissions"
    )]
    OutDir {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error(
        "the passphrase file {path} already exists; give a new file to --passphrase-file (an \
         existing one may hold the passphrase of an earlier export)"
    )]
    PassphraseFileExists { path: PathBuf },
    #[error("cannot write the workbook: {0}")]
    Xlsx(#[from] rust_xlsxwriter::XlsxError),
    #[error("cannot write the archive {path}: {cause}")]
    Zip { path: PathBuf, cause: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{what} is damaged: {cause}")]
    Damaged { what: String, cause: String },
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error(transparent)]
    Repo(#[from] crate::repository::RepoError),
    /// The other side of the pipeline stopped; its own error says why.
    #[error("the export pipeline stopped")]
    Stopped,
}

impl ExportError {
    /// Whether the error is about what the user asked for (exit code 2) rather than a failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, ExportError::Invalid(_) | ExportError::OutDir { .. } | ExportError::PassphraseFileExists { .. })
    }
}

/// What the readers send the exporter, in order. Each `Table` and `File` is followed by its
/// data and one `End`.
#[derive(Debug)]
pub enum Event {
    /// The database's schema objects (the readers send it before any table).
    Schema(Vec<SchemaObject>),
    /// A table: its stored columns, whether each row starts with its rowid, and the row count
    /// when the reader knows it in advance (a generation does, and it is checked).
    Table {
        name: String,
        columns: Vec<String>,
        rowid: bool,
        rows: Option<u64>,
    },
    /// Canonical row bytes; rows may be cut anywhere between two `Rows`.
    Rows(Vec<u8>),
    Dir {
        path: Vec<u8>,
        mtime_ns: i64,
    },
    /// A file of `size` bytes (a hint for live files, which may change while read).
    File {
        path: Vec<u8>,
        size: u64,
        mtime_ns: i64,
    },
    Data(Vec<u8>),
    Symlink {
        path: Vec<u8>,
        target: Vec<u8>,
    },
    End,
}

/// Which data formats an export writes (the files are always there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Formats {
    pub xlsx: bool,
    pub csv: bool,
}

impl Formats {
    pub fn both() -> Formats {
        Formats { xlsx: true, csv: true }
    }

    /// Parse `xlsx,csv`, `xlsx` or `csv`.
    pub fn parse(s: &str) -> Result<Formats, ExportError> {
        let mut f = Formats { xlsx: false, csv: false };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_ascii_lowercase().as_str() {
                "xlsx" => f.xlsx = true,
                "csv" => f.csv = true,
                other => {
                    return Err(ExportError::Invalid(format!(
                        "--format {s}: unknown format {other:?}; use xlsx, csv or xlsx,csv"
                    )))
                }
            }
        }
        if !f.xlsx && !f.csv {
            return Err(ExportError::Invalid(format!("--format {s:?} names no format; use xlsx, csv or xlsx,csv")));
        }
        Ok(f)
    }

    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.xlsx {
            v.push("xlsx");
        }
        if self.csv {
            v.push("csv");
        }
        v
    }
}

/// The smallest part `--split-size` accepts: smaller parts only make more files.
pub const SPLIT_MIN: u64 = 64 << 10;

/// Parse a size such as `512MiB`, `2GB`, `700M` or `1048576`. `K`, `M`, `G` alone and `KiB`,
/// `MiB`, `GiB` are powers of 1024; `KB`, `MB`, `GB` are powers of 1000.
pub fn parse_size(s: &str) -> Result<u64, ExportError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit_mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(ExportError::Invalid(format!(
                "--split-size {s}: unknown unit {unit:?}; write for example 512MiB, 2GB or 700M"
            )))
        }
    };
    let n: f64 = num.parse().map_err(|_| {
        ExportError::Invalid(format!("--split-size {s}: not a size; write for example 512MiB, 2GB or 700M"))
    })?;
    let bytes = (n * unit_mul as f64) as u64;
    if bytes < SPLIT_MIN {
        return Err(ExportError::Invalid(format!("--split-size {s}: parts must hold at least 64KiB")));
    }
    Ok(bytes)
}

/// Counters the exporter updates and the progress display reads.
#[derive(Default, Debug)]
pub struct Counters {
    pub tables: AtomicU64,
    pub rows: AtomicU64,
    pub files: AtomicU64,
    /// Bytes of row data and file content consumed.
    pub bytes: AtomicU64,
    /// Size of the inner archive, once it is complete.
    pub inner_size: AtomicU64,
    /// Bytes of the inner archive encrypted into the outer one.
    pub encrypted: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Where an export's data came from, as the manifest records it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceInfo {
    /// The live source, read under one snapshot taken at `time`.
    Live { time: String },
    /// A backup generation, taken at `time`.
    Generation { id: String, time: String },
}

/// One table, as the manifest lists it.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sheets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csv: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct LinkInfo {
    path: EntryPath,
    target: EntryPath,
}

/// One line of the manifest's file list.
#[derive(Serialize)]
struct FileLine<'a> {
    path: &'a str,
    size: u64,
    sha256: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    original: Option<EntryPath>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modified: Option<String>,
}

/// The manifest without its file list (which is streamed after it).
#[derive(Serialize)]
struct ManifestHead<'a> {
    format: u32,
    tenant: &'a str,
    created: &'a str,
    source: &'a SourceInfo,
    agent_version: &'a str,
    formats: Vec<&'static str>,
    tables: &'a [TableInfo],
    links: &'a [LinkInfo],
    warnings: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    extraordinary: Option<&'a Extraordinary>,
}

/// What [`Exporter::finish`] made.
#[derive(Debug)]
pub struct Finished {
    pub inner: PathBuf,
    pub inner_size: u64,
    pub tables: Vec<TableInfo>,
    pub files: u64,
    pub file_bytes: u64,
}

/// What an extraordinary extraction (`export --extraordinary`) records in the archive's
/// manifest: why, for whom, and exactly what was asked, the query's text included (the audit
/// log and the register keep only its SHA-256).
#[derive(Debug, Clone, Serialize)]
pub struct Extraordinary {
    pub ticket: String,
    pub reason: String,
    pub recipient: String,
    /// The generation read: the final one, taken when the safeguard began.
    pub generation: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_sha256: Option<String>,
}

/// Everything the exporter needs to know besides the events.
pub struct Settings {
    pub tenant: String,
    /// A private folder for temporary files; the caller removes it.
    pub work: PathBuf,
    pub formats: Formats,
    /// Data rows per sheet ([`xlsx::SHEET_ROWS_MAX`] except in tests).
    pub sheet_rows: u32,
    /// The export's time, for the entries the export makes.
    pub created_ns: i128,
    /// Set for an extraordinary extraction: recorded in the manifest.
    pub extraordinary: Option<Extraordinary>,
    /// Files added to the archive as they are (its path inside, the file): the SQLite file of
    /// an extraction of raw tables.
    pub attachments: Vec<(String, PathBuf)>,
}

struct TableState {
    name: String,
    columns: Vec<String>,
    /// Safe and unique column names, for side-file names.
    file_columns: Vec<String>,
    stem: String,
    rowid: bool,
    expected: Option<u64>,
    rows: u64,
    carry: Vec<u8>,
    csv: Option<(csv::CsvWriter<BufWriter<File>>, PathBuf)>,
    /// `sqlite_sequence` holds SQLite's AUTOINCREMENT counters, not the tenant's records.
    skip: bool,
}

struct FileState {
    path: String,
    kind: &'static str,
    original: Option<EntryPath>,
    size_hint: u64,
    mtime_ns: i64,
    started: bool,
}

/// Writes the tree of `contenuto.zip` from [`Event`]s. Feed it with [`Exporter::apply`], then
/// call [`Exporter::finish`] once every event was applied successfully.
pub struct Exporter {
    s: Settings,
    zip: InnerZip,
    xlsx: Option<XlsxBook>,
    /// Declared column types by table, then by lower-cased column name.
    declared: HashMap<String, HashMap<String, String>>,
    paths: PathMap,
    stems: Stems,
    table: Option<TableState>,
    file: Option<FileState>,
    tables: Vec<TableInfo>,
    links: Vec<LinkInfo>,
    files_spool: BufWriter<File>,
    files_spool_path: PathBuf,
    files: u64,
    file_bytes: u64,
    counters: Arc<Counters>,
    made_time: zip::DateTime,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ExportError + 'a {
    move |cause| ExportError::Io { what, path: path.into(), cause }
}

/// The extension of a BLOB's side file, from its first bytes; `bin` when unknown.
fn blob_extension(b: &[u8]) -> &'static str {
    const KNOWN: &[(&[u8], &str)] = &[
        (b"%PDF", "pdf"),
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"\xff\xd8\xff", "jpg"),
        (b"GIF87a", "gif"),
        (b"GIF89a", "gif"),
        (b"PK\x03\x04", "zip"),
        (b"{\\rtf", "rtf"),
        (b"<?xml", "xml"),
    ];
    KNOWN.iter().find(|(magic, _)| b.starts_with(magic)).map(|(_, ext)| *ext).unwrap_or("bin")
}

impl Exporter {
    pub fn new(s: Settings, counters: Arc<Counters>) -> Result<Exporter, ExportError> {
        let zip = InnerZip::create(&s.work.join("contenuto.zip"), &s.work.join("sums.txt"))?;
        let xlsx = if s.formats.xlsx {
            let dir = s.work.join("xlsx");
            fs::create_dir_all(&dir).map_err(io("cannot create", &dir))?;
            Some(XlsxBook::new(&dir, s.sheet_rows)?)
        } else {
            None
        };
        let files_spool_path = s.work.join("files.jsonl");
        let files_spool =
            BufWriter::new(File::create(&files_spool_path).map_err(io("cannot create", &files_spool_path))?);
        let made_time = archive::zip_time(s.created_ns);
        let mut e = Exporter {
            s,
            zip,
            xlsx,
            declared: HashMap::new(),
            paths: PathMap::new(),
            stems: Stems::default(),
            table: None,
            file: None,
            tables: Vec::new(),
            links: Vec::new(),
            files_spool,
            files_spool_path,
            files: 0,
            file_bytes: 0,
            counters,
            made_time,
        };
        // The texts first, so that they head the archive's listing.
        for (name, text) in texts::inner(&e.s.tenant) {
            let r = e.zip.add_bytes(name, text.as_bytes(), Method::Deflate, e.made_time)?;
            e.record(&r, "testo", None, None)?;
        }
        Ok(e)
    }

    fn record(
        &mut self,
        r: &Recorded,
        kind: &str,
        original: Option<EntryPath>,
        modified: Option<String>,
    ) -> Result<(), ExportError> {
        let line = FileLine { path: &r.path, size: r.size, sha256: &r.sha256, kind, original, modified };
        serde_json::to_writer(&mut self.files_spool, &line).expect("file lines serialize");
        self.files_spool.write_all(b"\n").map_err(io("cannot write", &self.files_spool_path))
    }

    pub fn apply(&mut self, ev: Event) -> Result<(), ExportError> {
        let starts = matches!(
            ev,
            Event::Schema(_) | Event::Table { .. } | Event::Dir { .. } | Event::File { .. } | Event::Symlink { .. }
        );
        if starts && (self.table.is_some() || self.file.is_some()) {
            return Err(ExportError::Damaged {
                what: "the data stream".into(),
                cause: "a table or file starts before the previous one ended".into(),
            });
        }
        match ev {
            Event::Schema(objects) => self.schema(&objects),
            Event::Table { name, columns, rowid, rows } => self.begin_table(name, columns, rowid, rows),
            Event::Rows(data) => self.rows(&data),
            Event::Dir { path, mtime_ns } => {
                let p = self.map_path(&path, true)?;
                self.zip.dir(&p, archive::zip_time(mtime_ns as i128))
            }
            Event::File { path, size, mtime_ns } => {
                let p = self.map_path(&path, false)?;
                let original = PathMap::renamed(&path, &p).then(|| EntryPath::from_bytes(&path));
                let kind = if p.starts_with("allegati/") { "allegato" } else { "documento" };
                self.file = Some(FileState { path: p, kind, original, size_hint: size, mtime_ns, started: false });
                Ok(())
            }
            Event::Data(data) => self.data(&data),
            Event::Symlink { path, target } => {
                self.links
                    .push(LinkInfo { path: EntryPath::from_bytes(&path), target: EntryPath::from_bytes(&target) });
                Ok(())
            }
            Event::End => self.end(),
        }
    }

    fn map_path(&mut self, rel: &[u8], is_dir: bool) -> Result<String, ExportError> {
        self.paths.map(rel, is_dir).ok_or_else(|| ExportError::Damaged {
            what: "the list of files".into(),
            cause: format!("{} is not under attachments/ or documents/", String::from_utf8_lossy(rel)),
        })
    }

    /// Learn the declared column types by replaying the tables' CREATE statements in a private
    /// in-memory database: SQLite parses its own SQL best, and live and generation exports get
    /// the same answer from the same schema. A statement that does not replay (a virtual table
    /// whose module is missing) leaves its table untyped, which only means no boolean cells.
    fn schema(&mut self, objects: &[SchemaObject]) -> Result<(), ExportError> {
        let conn = rusqlite::Connection::open_in_memory().map_err(|e| ExportError::Damaged {
            what: "the schema".into(),
            cause: format!("cannot open an in-memory database: {e}"),
        })?;
        for o in objects {
            if let ("table", Some(sql)) = (o.kind.as_str(), &o.sql) {
                if conn.execute_batch(sql).is_err() {
                    tracing::debug!(table = %o.name, "table definition does not replay; its columns stay untyped");
                    continue;
                }
                let types: rusqlite::Result<HashMap<String, String>> =
                    conn.prepare("SELECT name, type FROM pragma_table_xinfo(?1)").and_then(|mut st| {
                        st.query_map([&o.name], |r| {
                            Ok((r.get::<_, String>(0)?.to_lowercase(), r.get::<_, String>(1)?.to_uppercase()))
                        })?
                        .collect()
                    });
                if let Ok(types) = types {
                    self.declared.insert(o.name.clone(), types);
                }
            }
        }
        Ok(())
    }

    fn begin_table(
        &mut self,
        name: String,
        columns: Vec<String>,
        rowid: bool,
        expected: Option<u64>,
    ) -> Result<(), ExportError> {
        let skip = !crate::source::is_record_table(&name);
        let stem = if skip { String::new() } else { self.stems.unique(&name) };
        let mut col_stems = Stems::default();
        let file_columns = columns.iter().map(|c| col_stems.unique(c)).collect();
        let csv = if self.s.formats.csv && !skip {
            let path = self.s.work.join(format!("table-{}.csv", self.tables.len()));
            let f = File::create(&path).map_err(io("cannot create", &path))?;
            let mut w = csv::CsvWriter::new(BufWriter::with_capacity(1 << 20, f));
            for c in &columns {
                w.text(c).map_err(io("cannot write", &path))?;
            }
            w.end_row().map_err(io("cannot write", &path))?;
            Some((w, path))
        } else {
            None
        };
        if let (Some(x), false) = (&mut self.xlsx, skip) {
            let types = self.declared.get(&name);
            let bools = columns
                .iter()
                .map(|c| types.and_then(|t| t.get(&c.to_lowercase())).is_some_and(|t| t.contains("BOOL")))
                .collect();
            x.begin_table(&name, &columns, bools)?;
        }
        self.table = Some(TableState {
            name,
            columns,
            file_columns,
            stem,
            rowid,
            expected,
            rows: 0,
            carry: Vec::new(),
            csv,
            skip,
        });
        Ok(())
    }

    fn rows(&mut self, data: &[u8]) -> Result<(), ExportError> {
        Counters::add(&self.counters.bytes, data.len() as u64);
        let Exporter { table, zip, xlsx, files_spool, files_spool_path, counters, made_time, .. } = self;
        let t = table.as_mut().ok_or_else(|| ExportError::Damaged {
            what: "the data stream".into(),
            cause: "rows outside a table".into(),
        })?;
        t.carry.extend_from_slice(data);
        let ncols = t.columns.len() + t.rowid as usize;
        if ncols == 0 {
            return Err(ExportError::Damaged { what: format!("table {}", t.name), cause: "it has no columns".into() });
        }
        let mut carry = std::mem::take(&mut t.carry);
        let mut pos = 0;
        let mut values: Vec<ValueRef<'_>> = Vec::with_capacity(ncols);
        let mut side = Side { zip, spool: files_spool, spool_path: files_spool_path, time: *made_time };
        let result = 'rows: loop {
            let mut at = pos;
            values.clear();
            for _ in 0..ncols {
                match rows::decode(&carry[at..]) {
                    Ok(Some((v, n))) => {
                        values.push(v);
                        at += n;
                    }
                    // The rest of the row is in the next piece.
                    Ok(None) => break 'rows Ok(()),
                    Err(e) => {
                        break 'rows Err(ExportError::Damaged {
                            what: format!("table {}", t.name),
                            cause: e.to_string(),
                        })
                    }
                }
            }
            t.rows += 1;
            if !t.skip {
                let vals = &values[t.rowid as usize..];
                if let Err(e) = write_row(t, vals, xlsx.as_mut(), &mut side) {
                    break 'rows Err(e);
                }
                Counters::add(&counters.rows, 1);
            }
            pos = at;
        };
        // Decode errors leave `values` borrowing `carry`; drop them before moving it back.
        drop(values);
        carry.drain(..pos);
        t.carry = carry;
        result
    }

    fn data(&mut self, data: &[u8]) -> Result<(), ExportError> {
        let f = self.file.as_mut().ok_or_else(|| ExportError::Damaged {
            what: "the data stream".into(),
            cause: "file data outside a file".into(),
        })?;
        if !f.started {
            let method = if archive::worth_compressing(data) { Method::Deflate } else { Method::Store };
            self.zip.start(&f.path, method, f.size_hint, archive::zip_time(f.mtime_ns as i128))?;
            f.started = true;
        }
        Counters::add(&self.counters.bytes, data.len() as u64);
        self.zip.write(data)
    }

    fn end(&mut self) -> Result<(), ExportError> {
        if let Some(f) = self.file.take() {
            if !f.started {
                self.zip.start(&f.path, Method::Store, 0, archive::zip_time(f.mtime_ns as i128))?;
            }
            let r = self.zip.finish_entry()?;
            let modified = jiff::Timestamp::from_nanosecond(f.mtime_ns as i128)
                .ok()
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.fZ").to_string());
            self.files += 1;
            self.file_bytes += r.size;
            Counters::add(&self.counters.files, 1);
            return self.record(&r, f.kind, f.original, modified);
        }
        let Some(mut t) = self.table.take() else {
            return Ok(());
        };
        if !t.carry.is_empty() {
            return Err(ExportError::Damaged {
                what: format!("table {}", t.name),
                cause: format!("{} bytes after the last whole row", t.carry.len()),
            });
        }
        if let Some(want) = t.expected {
            if want != t.rows {
                return Err(ExportError::Damaged {
                    what: format!("table {}", t.name),
                    cause: format!("{} rows read, the generation says {want}", t.rows),
                });
            }
        }
        if t.skip {
            return Ok(());
        }
        let sheets = match &mut self.xlsx {
            Some(x) => x.end_table()?,
            None => Vec::new(),
        };
        let csv = match t.csv.take() {
            Some((w, spool)) => {
                let mut b = w.into_inner();
                b.flush().map_err(io("cannot write", &spool))?;
                drop(b);
                let name = format!("dati/csv/{}.csv", t.stem);
                let r = self.zip.add_file(&name, &spool, Method::Deflate, self.made_time)?;
                let _ = fs::remove_file(&spool);
                self.record(&r, "csv", None, None)?;
                Some(name)
            }
            None => None,
        };
        Counters::add(&self.counters.tables, 1);
        self.tables.push(TableInfo { name: t.name, columns: t.columns, rows: t.rows, sheets, csv });
        Ok(())
    }

    /// Write the workbook, the manifest and `SHA256SUMS`, and close `contenuto.zip`. Call it
    /// only after every event was applied.
    pub fn finish(mut self, source: &SourceInfo, created: &str, warnings: &[String]) -> Result<Finished, ExportError> {
        if self.table.is_some() || self.file.is_some() {
            return Err(ExportError::Damaged {
                what: "the data stream".into(),
                cause: "it ended inside a table or file".into(),
            });
        }
        if let Some(x) = self.xlsx.take() {
            let path = self.s.work.join(format!("{}.xlsx", self.s.tenant));
            x.save(&path)?;
            let name = format!("dati/{}.xlsx", self.s.tenant);
            // An XLSX file is a ZIP already: compressing it again only costs time.
            let r = self.zip.add_file(&name, &path, Method::Store, self.made_time)?;
            let _ = fs::remove_file(&path);
            self.record(&r, "xlsx", None, None)?;
        }
        for (name, path) in std::mem::take(&mut self.s.attachments) {
            let r = self.zip.add_file(&name, &path, Method::Deflate, self.made_time)?;
            self.record(&r, "database", None, None)?;
        }
        self.files_spool.flush().map_err(io("cannot write", &self.files_spool_path))?;
        let head = ManifestHead {
            format: 1,
            tenant: &self.s.tenant,
            created,
            source,
            agent_version: env!("CARGO_PKG_VERSION"),
            formats: self.s.formats.names(),
            tables: &self.tables,
            links: &self.links,
            warnings,
            extraordinary: self.s.extraordinary.as_ref(),
        };
        let head = serde_json::to_string_pretty(&head).expect("manifest serializes");
        let head = head.strip_suffix('}').expect("a JSON object ends with }").trim_end();
        self.zip.start("manifest.json", Method::Deflate, 0, self.made_time)?;
        self.zip.write(head.as_bytes())?;
        self.zip.write(b",\n  \"files\": [")?;
        let spool = self.files_spool_path.clone();
        let reader = std::io::BufReader::new(File::open(&spool).map_err(io("cannot read", &spool))?);
        let mut first = true;
        for line in std::io::BufRead::lines(reader) {
            let line = line.map_err(io("cannot read", &spool))?;
            self.zip.write(if first { b"\n    " } else { b",\n    " })?;
            self.zip.write(line.as_bytes())?;
            first = false;
        }
        self.zip.write(b"\n  ]\n}\n")?;
        self.zip.finish_entry()?;
        let inner = self.s.work.join("contenuto.zip");
        let inner_size = self.zip.finish(self.made_time)?;
        Ok(Finished { inner, inner_size, tables: self.tables, files: self.files, file_bytes: self.file_bytes })
    }
}

/// Where the side files of a row go: straight into the archive, listed in the manifest.
struct Side<'a> {
    zip: &'a mut InnerZip,
    spool: &'a mut BufWriter<File>,
    spool_path: &'a Path,
    time: zip::DateTime,
}

impl Side<'_> {
    fn put(&mut self, path: &str, data: &[u8], kind: &str) -> Result<(), ExportError> {
        let method = if archive::worth_compressing(data) { Method::Deflate } else { Method::Store };
        let r = self.zip.add_bytes(path, data, method, self.time)?;
        let line = FileLine { path: &r.path, size: r.size, sha256: &r.sha256, kind, original: None, modified: None };
        serde_json::to_writer(&mut *self.spool, &line).expect("file lines serialize");
        self.spool.write_all(b"\n").map_err(io("cannot write", self.spool_path))
    }
}

/// One row into the CSV and the workbook. BLOBs become side files; text too long for a cell
/// goes whole to a side file and is cut in the cell (the CSV keeps it whole).
fn write_row(
    t: &mut TableState,
    values: &[ValueRef<'_>],
    xlsx: Option<&mut XlsxBook>,
    side: &mut Side<'_>,
) -> Result<(), ExportError> {
    let row = t.rows;
    let want_xlsx = xlsx.is_some();
    let mut cells: Vec<XValue<'_>> = Vec::with_capacity(if want_xlsx { values.len() } else { 0 });
    let mut csv = t.csv.as_mut();
    for (i, v) in values.iter().enumerate() {
        let cell = match *v {
            ValueRef::Null => {
                if let Some((w, p)) = csv.as_mut() {
                    w.null().map_err(io("cannot write", p))?;
                }
                XValue::Null
            }
            ValueRef::Integer(n) => {
                if let Some((w, p)) = csv.as_mut() {
                    w.integer(n).map_err(io("cannot write", p))?;
                }
                XValue::Integer(n)
            }
            ValueRef::Real(f) => {
                if let Some((w, p)) = csv.as_mut() {
                    w.real(f).map_err(io("cannot write", p))?;
                }
                XValue::Real(f)
            }
            ValueRef::Text(b) => {
                let s = String::from_utf8_lossy(b);
                if let Some((w, p)) = csv.as_mut() {
                    w.text(&s).map_err(io("cannot write", p))?;
                }
                if want_xlsx && !xlsx::fits_cell(&s) {
                    let path = format!("dati/celle-lunghe/{}/{row}-{}.txt", t.stem, t.file_columns[i]);
                    side.put(&path, s.as_bytes(), "cella-lunga")?;
                    XValue::Literal(Cow::Owned(xlsx::cut_with_pointer(&s, &path)))
                } else {
                    XValue::Text(s)
                }
            }
            ValueRef::Blob(b) => {
                let path = format!("dati/blob/{}/{row}-{}.{}", t.stem, t.file_columns[i], blob_extension(b));
                side.put(&path, b, "blob")?;
                if let Some((w, p)) = csv.as_mut() {
                    w.text(&path).map_err(io("cannot write", p))?;
                }
                XValue::Literal(Cow::Owned(path))
            }
        };
        if want_xlsx {
            cells.push(cell);
        }
    }
    if let Some((w, p)) = csv.as_mut() {
        w.end_row().map_err(io("cannot write", p))?;
    }
    if let Some(x) = xlsx {
        x.write_row(&cells)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_formats_parse() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("2GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("700M").unwrap(), 700 << 20);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("65536").unwrap(), 65536);
        assert!(parse_size("10KB").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(Formats::parse("xlsx,csv").unwrap(), Formats { xlsx: true, csv: true });
        assert_eq!(Formats::parse("CSV").unwrap(), Formats { xlsx: false, csv: true });
        assert!(Formats::parse("xls").is_err());
        assert!(Formats::parse(",").is_err());
    }

    #[test]
    fn blob_extensions() {
        assert_eq!(blob_extension(b"%PDF-1.4"), "pdf");
        assert_eq!(blob_extension(b"\xff\xd8\xff\xe0"), "jpg");
        assert_eq!(blob_extension(b"\x00\x01"), "bin");
        assert_eq!(blob_extension(b""), "bin");
    }
}
