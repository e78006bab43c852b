//! `[store] kind = "s3"`: the S3 store's section of the configuration, owned here with its
//! validation ([`super::validate`], the EU rules).

use serde::Deserialize;

use crate::units::{byte_size, seconds};

/// `[store] kind = "s3"`. Credentials are never here: they come from the standard AWS chain
/// (environment, profile, web identity). The EU rules are checked by
/// [`crate::store::s3::validate`] when the file is loaded, before any request is made.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3StoreConfig {
    pub bucket: String,
    /// The region requests are signed for and buckets are created in, e.g. `eu-south-1`.
    pub region: String,
    /// Where reversa's objects live inside the bucket (`""` for the whole bucket).
    #[serde(default)]
    pub prefix: String,
    /// An S3-compatible endpoint URL; without it, the AWS endpoint of `region`.
    pub endpoint: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`). Default: on with `endpoint`, off for AWS.
    pub force_path_style: Option<bool>,
    /// Narrows the built-in list of EU regions; it can never add a region to it.
    pub allowed_regions: Option<Vec<String>>,
    /// The storage class of new objects (e.g. `STANDARD`, `STANDARD_IA`); the server's default
    /// when absent.
    pub storage_class: Option<String>,
    /// Requests in flight at once: parts of one multipart upload, packs of a backup, and (times
    /// four, at most 16) blob reads of a restore.
    #[serde(default = "S3StoreConfig::default_max_concurrency")]
    pub max_concurrency: usize,
    /// Objects larger than this go up as multipart uploads of parts this size: bytes, or a string
    /// such as "16MiB".
    #[serde(default = "S3StoreConfig::default_part_size", deserialize_with = "byte_size")]
    pub part_size: u64,
    /// Attempts per request, including the first, on 5xx, throttling, timeouts and resets.
    #[serde(default = "S3StoreConfig::default_max_attempts")]
    pub max_attempts: u32,
    /// A request attempt fails (and is retried) when no byte has moved in either direction for
    /// this long: a hung server or a dead network. A slow transfer that keeps moving never does.
    /// Seconds, or a string such as "60s", "2m".
    #[serde(default = "S3StoreConfig::default_io_timeout", deserialize_with = "seconds")]
    pub io_timeout: std::time::Duration,
    /// Allow plain `http://` to an endpoint that is not on this host. Off: backups cross the
    /// network encrypted in transit, as the contracts promise.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

impl S3StoreConfig {
    pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
    fn default_max_concurrency() -> usize {
        4
    }
    fn default_part_size() -> u64 {
        Self::DEFAULT_PART_SIZE
    }
    fn default_max_attempts() -> u32 {
        6
    }
    pub const DEFAULT_IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
    fn default_io_timeout() -> std::time::Duration {
        Self::DEFAULT_IO_TIMEOUT
    }

    /// A configuration with the defaults for everything but the bucket, region and endpoint.
    pub fn new(bucket: &str, region: &str, endpoint: Option<&str>) -> S3StoreConfig {
        S3StoreConfig {
            bucket: bucket.into(),
            region: region.into(),
            prefix: String::new(),
            endpoint: endpoint.map(String::from),
            force_path_style: None,
            allowed_regions: None,
            storage_class: None,
            max_concurrency: Self::default_max_concurrency(),
            part_size: Self::default_part_size(),
            max_attempts: Self::default_max_attempts(),
            io_timeout: Self::default_io_timeout(),
            allow_insecure_http: false,
        }
    }
}
