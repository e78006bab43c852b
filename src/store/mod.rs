//! Object storage behind one trait. Only this module talks to a store; everything above it speaks
//! in keys relative to the store's prefix (DESIGN.md "Store layout").
//!
//! The contract every implementation keeps (tests/store_contract.rs runs it against each one):
//! - `put` makes an object visible whole or not at all; a reader never sees a partial object;
//! - `create_if_absent` is atomic where `conditional_create()` says so: of two concurrent callers
//!   exactly one gets `true`;
//! - `get_range` returns exactly the bytes asked for, or an error;
//! - `list` returns every object under a prefix, sorted by key, however many there are;
//! - `delete` of a missing object is not an error (deletes are idempotent, as in S3).

pub mod dir;
pub mod s3;

use std::ops::Range;
use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;

/// What to upload. Large objects come from a local file so they are streamed, never held whole.
pub enum Body {
    Bytes(Bytes),
    File { path: PathBuf, len: u64 },
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Last modification, seconds since the Unix epoch.
    pub modified: i64,
}

/// One version of an object as the store keeps it: on a versioned bucket, every overwritten or
/// deleted object stays as a noncurrent version, and a delete leaves a delete marker. A store
/// without versions has exactly one version per object, with no id.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ObjectVersion {
    pub key: String,
    /// `None` on a store without versions (and for S3's "null" version of an unversioned write).
    pub version_id: Option<String>,
    pub delete_marker: bool,
    /// Whether it is what a plain GET of the key answers.
    pub latest: bool,
    pub size: u64,
}

/// Whether the store keeps old versions (S3 bucket versioning).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Versioning {
    /// Never enabled: a delete removes the object.
    Unversioned,
    Enabled,
    /// Enabled once, then suspended: versions written meanwhile are still there.
    Suspended,
}

impl Versioning {
    pub fn name(self) -> &'static str {
        match self {
            Versioning::Unversioned => "unversioned",
            Versioning::Enabled => "enabled",
            Versioning::Suspended => "suspended",
        }
    }
}

/// An upload that was started and never completed nor aborted (an S3 multipart upload left by a
/// killed process). Its parts take space until it is aborted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    /// When it was started, seconds since the Unix epoch.
    pub initiated: i64,
}

/// What a store learned about itself when `init` opened it, recorded in the store marker so that
/// every later run (and every agent) uses the same answers. Absent fields mean "not applicable".
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreFacts {
    /// Whether the server honours `If-None-Match: *` on PutObject (probed at init). It decides the
    /// tenant lock protocol, which must be the same for every agent sharing the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditional_writes: Option<bool>,
    /// The bucket's location as the server reported it at init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_region: Option<String>,
}

/// The error a store failed with, kept as the source of [`StoreError::Failed`] (an I/O error,
/// an SDK error, or what the store says went wrong).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {key} does not exist in {store}")]
    NotFound { store: String, key: String },
    #[error("{op} of {key} in {store} failed: {source}")]
    Failed {
        store: String,
        op: &'static str,
        key: String,
        #[source]
        source: BoxError,
    },
    #[error("{store}: {message}")]
    Config { store: String, message: String },
    /// A ranged read beyond the object's end: the object is shorter than the reader knows it
    /// must be (for a pack, damage: it was cut short).
    #[error("get of {key} in {store} failed: range {start}..{end} is past the end of the object")]
    PastEnd { store: String, key: String, start: u64, end: u64 },
}

impl StoreError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Whether the object is missing or shorter than asked: what damage to an object that must
    /// exist whole looks like, as opposed to a store that failed to answer.
    pub fn is_missing_or_short(&self) -> bool {
        matches!(self, StoreError::NotFound { .. } | StoreError::PastEnd { .. })
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A human-readable name for messages: `dir:/var/lib/reversa/store`, `s3://bucket/prefix`.
    fn describe(&self) -> String;
    /// Whether `create_if_absent` is atomic on this store (probed at init for S3).
    fn conditional_create(&self) -> bool;
    async fn put(&self, key: &str, body: Body) -> Result<(), StoreError>;
    /// Create `key` only if it does not exist. Returns false if it already existed.
    async fn create_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StoreError>;
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError>;
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError>;
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Whether any object exists under `prefix`. Stores that can stop at the first object
    /// (S3: one key asked for) override this.
    async fn any_under(&self, prefix: &str) -> Result<bool, StoreError> {
        Ok(!self.list(prefix).await?.is_empty())
    }

    /// The distinct next path segments of the keys under `prefix` (which ends in `/`), sorted:
    /// `tenants/` gives the tenant ids that have objects. Stores that list by delimiter override
    /// this instead of listing every key.
    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out: Vec<String> = self
            .list(prefix)
            .await?
            .into_iter()
            .filter_map(|o| o.key[prefix.len()..].split_once('/').map(|(first, _)| first.to_string()))
            .collect();
        out.dedup();
        Ok(out)
    }

    /// A link that downloads `key` with a plain HTTP GET until `ttl` has passed, or `None` on
    /// stores that cannot make one (`dir`). Exports use it to hand the customer their parts. The
    /// link is a bearer secret for its lifetime: never log it.
    async fn presign_get(&self, key: &str, ttl: std::time::Duration) -> Result<Option<String>, StoreError> {
        let _ = (key, ttl);
        Ok(None)
    }

    /// How many requests to keep in flight for throughput. A local disk saturates with two;
    /// object storage over a network hides its latency with more.
    fn concurrency(&self) -> usize {
        2
    }

    /// Facts to record in the store marker at init (see [`StoreFacts`]).
    fn facts(&self) -> StoreFacts {
        StoreFacts::default()
    }

    /// Whether the store keeps old versions of what is overwritten or deleted.
    async fn versioning(&self) -> Result<Versioning, StoreError> {
        Ok(Versioning::Unversioned)
    }

    /// Every version of every object under `prefix`, delete markers included, sorted by key
    /// (ListObjectVersions). What a deletion must leave nothing of.
    async fn list_versions(&self, prefix: &str) -> Result<Vec<ObjectVersion>, StoreError> {
        let objects = self.list(prefix).await?;
        Ok(objects
            .into_iter()
            .map(|o| ObjectVersion { key: o.key, version_id: None, delete_marker: false, latest: true, size: o.size })
            .collect())
    }

    /// The bytes of one version (a delete marker has none: not found).
    async fn get_version(&self, v: &ObjectVersion) -> Result<Bytes, StoreError> {
        self.get(&v.key).await
    }

    /// Delete one version for good, or a delete marker. On a versioned bucket a plain
    /// [`Store::delete`] only adds a marker; this removes what is there.
    async fn delete_version(&self, v: &ObjectVersion) -> Result<(), StoreError> {
        self.delete(&v.key).await
    }

    /// Uploads under `prefix` that were started and never completed nor aborted, sorted by key.
    /// Stores whose writes are atomic locally (`dir`) have none.
    async fn pending_uploads(&self, _prefix: &str) -> Result<Vec<PendingUpload>, StoreError> {
        Ok(Vec::new())
    }

    /// Abort a pending upload, freeing its parts. Aborting one that is already gone is not an error.
    async fn abort_upload(&self, _upload: &PendingUpload) -> Result<(), StoreError> {
        Ok(())
    }
}
