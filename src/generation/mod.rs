//! A generation: one immutable, complete backup of a tenant at one time. It is a sealed manifest
//! (`tenants/<t>/generations/<id>`) that points to a catalog: a stream of JSON lines, itself stored
//! as blobs, with one entry per schema, table, folder, file and link. The catalog is streamed, so a
//! tenant with millions of files never needs its whole listing in memory.
//!
//! Tables are stored as a canonical row stream (see [`rows`]), so the same rows always give the
//! same bytes whatever the SQLite page layout, and restore can rebuild them exactly.

use serde::{Deserialize, Serialize};

pub const MANIFEST_FORMAT: u32 = 1;

/// Whether `id` can be a generation id: ids are `YYYYMMDDTHHMMSS.ffffffZ-xxxxxxxx`, and whatever
/// names one on the command line becomes one segment of an object key, so no separator, no `..`.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// The sealed manifest. Small and bounded: the per-item detail is in the catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub tenant: String,
    /// RFC 3339 UTC, when the source snapshot was taken.
    pub time: String,
    pub parent: Option<String>,
    pub host: String,
    pub agent_version: String,
    pub source: String,
    /// The catalog's blobs, in order, hex ids.
    pub catalog: Vec<String>,
    pub summary: Summary,
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub tables: u64,
    pub rows: u64,
    /// Bytes of the canonical row streams.
    pub table_bytes: u64,
    pub files: u64,
    pub file_bytes: u64,
    /// Bytes this generation added to the store (packs and index), after dedup and compression.
    pub bytes_added: u64,
    pub blobs_added: u64,
    pub packs_added: u64,
    /// Bytes read from the source (files skipped by the cache are not read).
    pub bytes_read: u64,
    /// Rows of keyed tables inserted, updated and deleted since the parent generation (a table
    /// written as a new base counts its changes all the same).
    #[serde(default)]
    pub rows_inserted: u64,
    #[serde(default)]
    pub rows_updated: u64,
    #[serde(default)]
    pub rows_deleted: u64,
    pub duration_ms: u64,
}

/// One line of the catalog.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
pub enum Entry {
    /// The database's schema objects in creation order, and its header fields.
    Schema {
        objects: Vec<SchemaObject>,
        user_version: i64,
        application_id: i64,
    },
    /// A table's rows. `columns` lists the stored columns in order; `rowid` is true when the
    /// first stored value of each row is the rowid. `rows` and `bytes` describe the table as of
    /// this generation. `blobs` is a full canonical row stream: the whole table, or, for a keyed
    /// table, the base that `keyed.deltas` apply to.
    Table {
        name: String,
        columns: Vec<String>,
        rowid: bool,
        rows: u64,
        bytes: u64,
        blobs: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keyed: Option<Keyed>,
    },
    Dir {
        path: EntryPath,
        mode: u32,
        mtime_ns: i64,
    },
    File {
        path: EntryPath,
        size: u64,
        mode: u32,
        mtime_ns: i64,
        blobs: Vec<String>,
        /// Set when the file changed while it was read and could not be read consistently.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        changed_during_read: bool,
    },
    Symlink {
        path: EntryPath,
        target: EntryPath,
    },
}

/// How a table with a key (a rowid or a primary key) is stored: a base written by one generation
/// and the deltas of the generations after it, all referenced here, so this generation restores
/// on its own whatever else is forgotten.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Keyed {
    /// Positions of the key's values in a stored row, in key order.
    pub key: Vec<u32>,
    /// The generation that wrote the base (`blobs` of the entry).
    pub base_generation: String,
    pub base_rows: u64,
    pub base_bytes: u64,
    /// The base's digest map ([`delta`]): key and row digest of every base row, in key order.
    pub digests: Vec<String>,
    /// Changes since the base, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<Delta>,
    /// HMAC of this generation's whole digest map, which verifies a locally cached copy.
    pub digest_mac: String,
}

/// The changed rows of one generation, in key order ([`delta`] has the record format).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    pub generation: String,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Bytes of the delta record stream.
    pub bytes: u64,
    pub blobs: Vec<String>,
}

impl Entry {
    /// What the entry is, for messages: "table T", "file P", "folder P", "link P", "schema".
    pub fn label(&self) -> String {
        match self {
            Entry::Schema { .. } => "the database schema".into(),
            Entry::Table { name, .. } => format!("table {name}"),
            Entry::Dir { path, .. } => format!("folder {}", path.display()),
            Entry::File { path, .. } => format!("file {}", path.display()),
            Entry::Symlink { path, .. } => format!("link {}", path.display()),
        }
    }

    /// Every blob list the entry references, each with what it holds (for messages).
    pub fn blob_lists(&self) -> Vec<(String, &[String])> {
        match self {
            Entry::Table { name, blobs, keyed, .. } => {
                let mut lists = vec![(format!("table {name}"), blobs.as_slice())];
                if let Some(k) = keyed {
                    lists.push((format!("table {name} (digest map)"), k.digests.as_slice()));
                    for d in &k.deltas {
                        lists.push((format!("table {name} (delta of {})", d.generation), d.blobs.as_slice()));
                    }
                }
                lists
            }
            Entry::File { path, blobs, .. } => vec![(format!("file {}", path.display()), blobs.as_slice())],
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SchemaObject {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub tbl_name: String,
    pub sql: Option<String>,
}

/// A path relative to the tenant folder. Unix names are bytes; most are UTF-8 and are kept as
/// text, the rest as base64 so that nothing is lost or silently renamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EntryPath {
    Text(String),
    Bytes { b64: String },
}

impl EntryPath {
    pub fn from_bytes(b: &[u8]) -> EntryPath {
        match std::str::from_utf8(b) {
            Ok(s) => EntryPath::Text(s.to_string()),
            Err(_) => {
                use base64::Engine;
                EntryPath::Bytes { b64: base64::engine::general_purpose::STANDARD.encode(b) }
            }
        }
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            EntryPath::Text(s) => s.as_bytes().to_vec(),
            EntryPath::Bytes { b64 } => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default()
            }
        }
    }
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.to_bytes()).into_owned()
    }
}

pub mod delta;
pub mod rows;
