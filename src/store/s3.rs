//! The `s3` store: a bucket (and a prefix in it) on AWS S3 or an S3-compatible server in an EU
//! region, through aws-sdk-s3. docs/S3.md describes the configuration and the choices.
//!
//! What it adds to the plain S3 calls:
//! - **EU only.** [`validate`] refuses a non-EU region, and an endpoint whose host names one, when
//!   the configuration is loaded, before any request. `init` records the bucket's location and
//!   every run refuses a bucket whose location is not allowed.
//! - **Streaming multipart uploads.** A [`Body::File`] larger than `part_size` goes up in parts read
//!   straight from the file (never whole in memory), at most `max_concurrency` at once, and the
//!   upload is aborted on any failure, or when the caller drops the future.
//! - **Conditional writes, probed.** Some servers silently ignore `If-None-Match` (Garage), so
//!   `init` probes it and records the answer in the store marker; [`Store::conditional_create`]
//!   returns that answer and the tenant lock picks its protocol from it.
//! - **Errors that say what to do.** Every failure names the object, the endpoint and the last
//!   cause; wrong credentials name the access key id (never the secret).
//! - **An idle timeout, not a request timeout.** Requests go through our own HTTP client
//!   (`s3/idle.rs`): an attempt fails when no byte has moved for `io_timeout`, however long a
//!   transfer that keeps moving takes. CompleteMultipartUpload gets a longer deadline.

mod config;
pub mod eu;
pub(crate) mod idle;
pub use config::S3StoreConfig;

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::{
    RequestChecksumCalculation, ResponseChecksumValidation, SharedHttpClient, StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    BucketLocationConstraint, ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart,
    CreateBucketConfiguration, StorageClass,
};
use base64::Engine;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{Body, ObjectInfo, ObjectVersion, PendingUpload, Store, StoreError, StoreFacts, Versioning};

/// S3's smallest part (except the last one) and largest part and object sizes.
pub const MIN_PART_SIZE: u64 = 5 << 20;
pub const MAX_PART_SIZE: u64 = 5 << 30;
const MAX_PARTS: u64 = 10_000;
/// A request that has not connected after this long is retried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One attempt of one request may not take longer than this. A hung connection is caught much
/// sooner by `io_timeout`; this is the outer bound, for a transfer that moves too slowly to ever
/// finish. Generous: a 16 MiB part at 100 kB/s takes 3 minutes.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// `io_timeout` bounds: at least a second; at most one attempt's bound, beyond which it would
/// never fire.
pub const MIN_IO_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_IO_TIMEOUT: Duration = ATTEMPT_TIMEOUT;
/// The idle deadline of CompleteMultipartUpload (or `io_timeout`, if longer). AWS documents that
/// completing can take minutes (it sends spaces meanwhile, other servers may send nothing), and
/// a completion cut short is a whole upload to verify or redo.
const COMPLETE_IDLE_LIMIT: Duration = Duration::from_secs(10 * 60);
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// A configuration value that breaks the rules; `key` is the TOML key under `[store]`.
#[derive(Debug)]
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

fn invalid(key: &'static str, message: impl Into<String>) -> Invalid {
    Invalid { key, message: message.into() }
}

/// The parts of an endpoint URL reversa cares about.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub https: bool,
    pub host: String,
    pub url: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (scheme, rest) = url.split_once("://").ok_or("is not a URL; write it as https://host[:port]")?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            other => return Err(format!("has scheme {other:?}; only https (or http to this host) is allowed")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if !(path.is_empty() || path == "/") || rest.contains('?') || rest.contains('#') {
            return Err("must be only scheme, host and port (no path, query or fragment)".into());
        }
        if authority.contains('@') {
            return Err("must not hold credentials; they come from the AWS environment or profile".into());
        }
        let host = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or("has an unterminated [IPv6] host")?;
            v6[..end].to_string()
        } else {
            authority
                .rsplit_once(':')
                .map_or(authority, |(h, port)| if port.chars().all(|c| c.is_ascii_digit()) { h } else { authority })
                .to_string()
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        Ok(Endpoint { https, host: host.to_ascii_lowercase(), url: url.trim_end_matches('/').to_string() })
    }

    /// Whether the host is this machine, where plain http never crosses a network.
    pub fn is_loopback(&self) -> bool {
        match self.host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => self.host == "localhost" || self.host.ends_with(".localhost"),
        }
    }
}

/// The endpoint requests go to: the configured one, or AWS's for the region.
pub fn endpoint_of(cfg: &S3StoreConfig) -> Result<Endpoint, String> {
    match &cfg.endpoint {
        Some(url) => Endpoint::parse(url),
        None if cfg.region.starts_with("eusc-") => Endpoint::parse(&format!("https://s3.{}.amazonaws.eu", cfg.region)),
        None => Endpoint::parse(&format!("https://s3.{}.amazonaws.com", cfg.region)),
    }
}

/// The regions this configuration allows: the built-in EU list for the kind of endpoint,
/// narrowed by `allowed_regions`.
pub fn allowed_regions(cfg: &S3StoreConfig, aws: bool) -> Vec<&'static str> {
    let base: Vec<&'static str> =
        if aws { eu::AWS.iter().map(|r| r.name).collect() } else { eu::default_allowed().map(|r| r.name).collect() };
    match &cfg.allowed_regions {
        Some(narrow) => base.into_iter().filter(|r| narrow.iter().any(|n| n == r)).collect(),
        None => base,
    }
}

/// Whether `region` may hold this store's data, or why not.
pub fn check_region(cfg: &S3StoreConfig, endpoint: &Endpoint, region: &str) -> Result<(), String> {
    let aws = eu::is_aws_host(&endpoint.host);
    let allowed = allowed_regions(cfg, aws);
    if !allowed.contains(&region) {
        let why = match (eu::lookup(region), aws) {
            (Some(_), true) => "is not an AWS region in the EU".to_string(),
            (Some(_), false) => "is not in allowed_regions".to_string(),
            (None, _) => "is not an EU region reversa knows".to_string(),
        };
        return Err(format!(
            "region {region:?} {why}; allowed: {} (docs/S3.md lists where each is)",
            allowed.join(", ")
        ));
    }
    if let Some(place) = eu::not_eu_on_host(&endpoint.host, region) {
        return Err(format!("region {region:?} is {place} at {}, outside the EU", endpoint.host));
    }
    Ok(())
}

/// Check an `s3` store configuration: the EU rules first, then the limits S3 sets. Nothing here
/// sends a request.
pub fn validate(cfg: &S3StoreConfig) -> Result<(), Invalid> {
    // allowed_regions can only narrow the built-in list.
    if let Some(list) = &cfg.allowed_regions {
        if list.is_empty() {
            return Err(invalid("store.allowed_regions", "is empty; remove it to allow every EU region, or list some"));
        }
        for r in list {
            if eu::lookup(r).is_none() {
                return Err(invalid(
                    "store.allowed_regions",
                    format!(
                        "names {r:?}, which is not an EU region reversa knows; it can only narrow the built-in list: {}",
                        eu::default_allowed().map(|r| r.name).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    let endpoint = endpoint_of(cfg)
        .map_err(|e| invalid("store.endpoint", format!("{:?} {e}", cfg.endpoint.as_deref().unwrap_or(""))))?;
    let aws = eu::is_aws_host(&endpoint.host);
    if cfg.region.trim().is_empty() {
        return Err(invalid("store.region", "is empty; set the bucket's EU region, e.g. \"eu-south-1\""));
    }
    check_region(cfg, &endpoint, &cfg.region).map_err(|e| invalid("store.region", e))?;
    if let Some((named, place)) = eu::non_eu_in_host(&endpoint.host, aws) {
        return Err(invalid(
            "store.endpoint",
            format!(
                "{} names region {named:?} ({place}), outside the EU; use an endpoint in an EU region",
                endpoint.url
            ),
        ));
    }
    for named in eu::aws_style_regions_in_host(&endpoint.host) {
        if named != cfg.region {
            return Err(invalid(
                "store.endpoint",
                format!(
                    "{} names region {named:?} but store.region is {:?}; make them the same",
                    endpoint.url, cfg.region
                ),
            ));
        }
    }
    if eu::is_aws_host(&endpoint.host) && endpoint.host.ends_with(".cn") {
        return Err(invalid("store.endpoint", format!("{} is in China, outside the EU", endpoint.url)));
    }
    if !endpoint.https && !endpoint.is_loopback() && !cfg.allow_insecure_http {
        return Err(invalid(
            "store.endpoint",
            format!(
                "{} is plain http to another host: backups would cross the network unencrypted; use https, \
                 or set allow_insecure_http = true if the network is private",
                endpoint.url
            ),
        ));
    }
    validate_bucket_name(&cfg.bucket).map_err(|e| invalid("store.bucket", format!("{:?} {e}", cfg.bucket)))?;
    normalize_prefix(&cfg.prefix).map_err(|e| invalid("store.prefix", format!("{:?} {e}", cfg.prefix)))?;
    if !(1..=64).contains(&cfg.max_concurrency) {
        return Err(invalid("store.max_concurrency", format!("is {}; use 1 to 64", cfg.max_concurrency)));
    }
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&cfg.part_size) {
        return Err(invalid(
            "store.part_size",
            format!("is {} bytes; S3 parts are 5 MiB to 5 GiB (e.g. part_size = \"16MiB\")", cfg.part_size),
        ));
    }
    if !(1..=20).contains(&cfg.max_attempts) {
        return Err(invalid("store.max_attempts", format!("is {}; use 1 to 20", cfg.max_attempts)));
    }
    if !(MIN_IO_TIMEOUT..=MAX_IO_TIMEOUT).contains(&cfg.io_timeout) {
        return Err(invalid(
            "store.io_timeout",
            format!(
                "is {:?}; use 1 s to 15 minutes (e.g. io_timeout = \"60s\"): how long a request may go without \
                 moving a byte before it is retried",
                cfg.io_timeout
            ),
        ));
    }
    if let Some(class) = &cfg.storage_class {
        if class.is_empty() || !class.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
            return Err(invalid(
                "store.storage_class",
                format!("{class:?} is not a storage class name such as \"STANDARD\""),
            ));
        }
    }
    Ok(())
}

/// S3 bucket naming rules (the strict, DNS-compatible ones).
fn validate_bucket_name(b: &str) -> Result<(), String> {
    let ok_chars = b.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ends_ok =
        b.starts_with(|c: char| c.is_ascii_alphanumeric()) && b.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !(3..=63).contains(&b.len())
        || !ok_chars
        || !ends_ok
        || b.contains("..")
        || b.parse::<std::net::Ipv4Addr>().is_ok()
    {
        return Err("is not a valid bucket name: 3-63 characters of a-z, 0-9, '-' and '.', starting and ending with a letter or digit".into());
    }
    Ok(())
}

/// `""` or `"a/b/"`: the prefix with exactly one trailing slash.
fn normalize_prefix(p: &str) -> Result<String, String> {
    let t = p.trim_matches('/');
    if t.is_empty() {
        return Ok(String::new());
    }
    if t.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err("has an empty, '.' or '..' segment".into());
    }
    Ok(format!("{t}/"))
}

/// How the store is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// An initialized store; its facts come from the marker ([`S3Store::apply_facts`]).
    Existing,
    /// For `init`: probe conditional writes and record the bucket's location; with
    /// `create_bucket`, create a missing bucket in the configured region.
    Init { create_bucket: bool },
}

/// The `s3` store. Cheap to clone (the SDK client is reference-counted).
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    /// The HTTP client of CompleteMultipartUpload, with its longer idle deadline.
    complete_http: SharedHttpClient,
    bucket: String,
    prefix: String,
    endpoint: Endpoint,
    region: String,
    access_key_id: String,
    storage_class: Option<StorageClass>,
    part_size: u64,
    max_concurrency: usize,
    max_attempts: u32,
    conditional: bool,
    facts: StoreFacts,
    cfg: S3StoreConfig,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No credentials are held here, but say so explicitly: only the key id is printed.
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint.url)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("conditional_writes", &self.conditional)
            .finish_non_exhaustive()
    }
}

/// What went wrong with one request, classified for the message and for the caller.
#[derive(Debug)]
struct Fault {
    status: Option<u16>,
    code: Option<String>,
    /// The error as text, with its whole chain of causes.
    text: String,
    /// Retried by the SDK (5xx, throttling, timeouts, connection failures) until it gave up.
    transient: bool,
    /// The `x-amz-bucket-region` header, when the server sent one (wrong region).
    bucket_region: Option<String>,
}

const AUTH_CODES: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidSecurity",
    "AuthorizationHeaderMalformed",
];
const THROTTLING_CODES: &[&str] =
    &["SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"];

impl Fault {
    fn of<E>(e: &SdkError<E>) -> Fault
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let bucket_region =
            e.raw_response().and_then(|r| r.headers().get("x-amz-bucket-region")).map(|s| s.to_string());
        match e {
            SdkError::ServiceError(se) => {
                let err = se.err();
                let code = err.code().map(String::from);
                let text = match (err.code(), err.message().filter(|m| !m.trim().is_empty())) {
                    (Some(c), Some(m)) => format!("HTTP {} {c}: {m}", status.unwrap_or(0)),
                    (Some(c), None) => format!("HTTP {} {c}", status.unwrap_or(0)),
                    _ => format!("HTTP {}", status.unwrap_or(0)),
                };
                // 501 Not Implemented is an answer, not a failure to retry.
                let transient = status.is_some_and(|s| (s >= 500 && s != 501) || s == 429)
                    || code.as_deref().is_some_and(|c| THROTTLING_CODES.contains(&c));
                Fault { status, code, text, transient, bucket_region }
            }
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
                Fault { status, code: None, text: DisplayErrorContext(e).to_string(), transient: true, bucket_region }
            }
            _ => {
                Fault { status, code: None, text: DisplayErrorContext(e).to_string(), transient: false, bucket_region }
            }
        }
    }

    fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    fn is_auth(&self) -> bool {
        self.code.as_deref().is_some_and(|c| AUTH_CODES.contains(&c))
    }
}

/// Exponential backoff with full jitter for the retries reversa does itself (response bodies cut
/// short, conditional-write conflicts); the SDK does the same for requests.
fn backoff(attempt: u32) -> Duration {
    let cap = INITIAL_BACKOFF.saturating_mul(1 << attempt.min(16)).min(MAX_BACKOFF);
    cap.mul_f64(rand::random::<f64>())
}

fn b64(digest: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// The CRC32C of `data`, as `x-amz-checksum-crc32c` wants it (base64 of the big-endian value).
/// CRC32C rather than SHA-256: it runs at memory speed, where SHA-256 cost the client (and a
/// verifying server) a full hash pass over every byte uploaded. It guards the transfer only;
/// integrity against tampering is the sealing's job.
fn crc32c(data: &[u8]) -> String {
    crc32c_b64(crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data))
}

fn crc32c_b64(crc: u64) -> String {
    b64(&(crc as u32).to_be_bytes())
}

/// The checksum S3 gives a multipart object uploaded with CRC32C parts (without its `-<parts>`
/// suffix): the CRC32C of the parts' CRC32Cs, concatenated. `None` if a part has none.
fn composite_crc32c(parts: &[CompletedPart]) -> Option<String> {
    let mut raw = Vec::with_capacity(parts.len() * 4);
    for p in parts {
        raw.extend(base64::engine::general_purpose::STANDARD.decode(p.checksum_crc32_c()?).ok()?);
    }
    Some(crc32c(&raw))
}

/// [`crc32c`] of `len` bytes of `path` from `offset`, read in small buffers (never whole in memory).
fn crc32c_of_file_range(path: &Path, offset: u64, len: u64) -> io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut f = f.take(len);
    let mut h = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    let mut buf = vec![0u8; 256 << 10];
    let mut read = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        read += n as u64;
    }
    if read != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{} ends at byte {}, before the {len} bytes to upload from byte {offset}",
                path.display(),
                offset + read
            ),
        ));
    }
    Ok(crc32c_b64(h.finalize()))
}

async fn crc32c_of_file_range_async(path: PathBuf, offset: u64, len: u64) -> io::Result<String> {
    tokio::task::spawn_blocking(move || crc32c_of_file_range(&path, offset, len))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("checksum task failed: {e}"))))
}

impl S3Store {
    /// Connect to the bucket ([`S3Store::connect`]), check that it exists (or create it) and that
    /// its location is allowed. With [`OpenMode::Init`], also probe conditional writes.
    pub async fn open(cfg: &S3StoreConfig, mode: OpenMode) -> Result<S3Store, StoreError> {
        let mut store = S3Store::connect(cfg).await?;
        let location = match mode {
            OpenMode::Existing => store.check_existing().await?,
            // A bucket to be created must exist before anything else is asked of it.
            OpenMode::Init { .. } => {
                store.check_bucket(mode).await?;
                store.bucket_location().await?
            }
        };
        store.settle_location(location)?;
        if let OpenMode::Init { .. } = mode {
            let honoured = store.probe_conditional_writes().await?;
            store.conditional = honoured;
            store.facts.conditional_writes = Some(honoured);
        }
        Ok(store)
    }

    /// [`S3Store::open`] of an existing store that also reads the object `key` (its marker) while
    /// it checks the bucket. Why: each request is a round trip, the checks and the read are
    /// independent, and every command opens the store. A read sends nothing, so reading before
    /// the bucket's location is approved exposes no data.
    pub async fn open_reading(
        cfg: &S3StoreConfig,
        key: &str,
    ) -> Result<(S3Store, Result<Bytes, StoreError>), StoreError> {
        let mut store = S3Store::connect(cfg).await?;
        let (location, read) = tokio::join!(store.check_existing(), store.get(key));
        store.settle_location(location?)?;
        Ok((store, read))
    }

    /// Check that the bucket exists and ask where it is, both at once.
    async fn check_existing(&self) -> Result<Result<String, String>, StoreError> {
        let (checked, location) = tokio::join!(self.check_bucket(OpenMode::Existing), self.bucket_location());
        // A missing bucket or bad credentials fail every request: report the clearest.
        checked?;
        location
    }

    /// Refuse a location outside the allowed list, or record it; `Err(why)` when the server does
    /// not tell (said only now that the bucket is known to be there, so that a missing bucket's
    /// error is not preceded by a warning about its location).
    fn settle_location(&mut self, location: Result<String, String>) -> Result<(), StoreError> {
        match location {
            Ok(location) => {
                self.check_location(&location)?;
                self.facts.bucket_region = Some(location);
            }
            Err(cause) => {
                tracing::warn!(bucket = %self.bucket, error = %cause, "the server does not tell the bucket's location; relying on store.region")
            }
        }
        Ok(())
    }

    /// Check the configuration (again: the library can be called without a config file), build
    /// the client and find the credentials. Sends no request to the endpoint.
    pub async fn connect(cfg: &S3StoreConfig) -> Result<S3Store, StoreError> {
        validate(cfg).map_err(|e| StoreError::Config {
            store: format!("s3://{}", cfg.bucket),
            message: format!("{}: {}", e.key, e.message),
        })?;
        let endpoint =
            endpoint_of(cfg).map_err(|e| StoreError::Config { store: format!("s3://{}", cfg.bucket), message: e })?;
        let prefix = normalize_prefix(&cfg.prefix).map_err(|e| StoreError::Config {
            store: format!("s3://{}", cfg.bucket),
            message: format!("prefix {e}"),
        })?;
        let retry = RetryConfig::standard()
            .with_max_attempts(cfg.max_attempts)
            .with_initial_backoff(INITIAL_BACKOFF)
            .with_max_backoff(MAX_BACKOFF);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .build();
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .retry_config(retry)
            .timeout_config(timeouts)
            .load()
            .await;
        let describe = || describe(&cfg.bucket, &prefix, &endpoint.url);
        let http_client = |limit: Duration, what: &'static str| {
            idle::client(limit, what, CONNECT_TIMEOUT, endpoint.https)
                .map_err(|message| StoreError::Config { store: describe(), message })
        };
        let io_http = http_client(cfg.io_timeout, "store.io_timeout")?;
        let complete_http =
            http_client(cfg.io_timeout.max(COMPLETE_IDLE_LIMIT), "the deadline of CompleteMultipartUpload")?;
        let no_creds = |cause: String| StoreError::Config {
            store: describe(),
            message: format!(
                "no AWS credentials found ({cause}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
                 AWS_PROFILE, or web identity (credentials never go in reversa's config file)"
            ),
        };
        let provider = sdk.credentials_provider().ok_or_else(|| no_creds("no credentials provider".into()))?;
        // Only the top of the error: the whole chain dumps every provider's HTTP response.
        let creds = aws_sdk_s3::config::ProvideCredentials::provide_credentials(&provider)
            .await
            .map_err(|e| no_creds(e.to_string()))?;
        let access_key_id = creds.access_key_id().to_string();
        // The endpoint is set here, on the S3 client itself, so that AWS_ENDPOINT_URL(_S3) or a
        // profile's endpoint_url can never send the data somewhere that was not validated.
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .endpoint_url(endpoint.url.clone())
            .region(Region::new(cfg.region.clone()))
            .force_path_style(cfg.force_path_style.unwrap_or(cfg.endpoint.is_some()))
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .http_client(io_http)
            // Off: io_timeout catches the same failure (no bytes moving) at the socket, in both
            // directions and while waiting for the response headers too. Left on, the SDK's check
            // would fail a body stalled for its 20 s grace period whatever io_timeout says, and it
            // judges throughput where the body is read, not where bytes move.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .build();
        Ok(S3Store {
            client: aws_sdk_s3::Client::from_conf(conf),
            complete_http,
            bucket: cfg.bucket.clone(),
            prefix,
            endpoint,
            region: cfg.region.clone(),
            access_key_id,
            storage_class: cfg.storage_class.as_deref().map(StorageClass::from),
            part_size: cfg.part_size,
            max_concurrency: cfg.max_concurrency,
            max_attempts: cfg.max_attempts,
            // Until the marker says otherwise, the protocol that is safe on every server.
            conditional: false,
            facts: StoreFacts::default(),
            cfg: cfg.clone(),
        })
    }

    /// Take the facts `init` recorded in the store marker: the lock protocol every agent must
    /// share, and the bucket's location, checked again against the (possibly narrowed) list.
    pub fn apply_facts(&mut self, facts: &StoreFacts) -> Result<(), StoreError> {
        if let Some(location) = &facts.bucket_region {
            self.check_location(location)?;
        }
        // A marker without the probe result (written before it existed) gets the protocol that
        // is safe on every server.
        self.conditional = facts.conditional_writes.unwrap_or(false);
        self.facts.conditional_writes = facts.conditional_writes;
        if self.facts.bucket_region.is_none() {
            self.facts.bucket_region = facts.bucket_region.clone();
        }
        Ok(())
    }

    /// Override the probed answer. Tests use it to run the lock protocol for servers that ignore
    /// `If-None-Match` against one that honours it.
    pub fn set_conditional_create(&mut self, honoured: bool) {
        self.conditional = honoured;
    }

    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    fn full_key(&self, key: &str) -> Result<String, StoreError> {
        // Keys are built by reversa from validated parts; refuse anything odd rather than write it.
        if key.is_empty() || key.starts_with('/') || key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Err(self.failed("resolve", key, "invalid object key"));
        }
        Ok(format!("{}{key}", self.prefix))
    }

    fn failed(&self, op: &'static str, key: &str, source: impl Into<crate::store::BoxError>) -> StoreError {
        StoreError::Failed { store: self.describe(), op, key: key.to_string(), source: source.into() }
    }

    fn config_error(&self, message: String) -> StoreError {
        StoreError::Config { store: self.describe(), message }
    }

    /// The message for a failed request: the last cause, and what to do about it. The store's
    /// description (bucket, prefix, endpoint) is already in every error this goes into.
    fn explain(&self, f: &Fault) -> String {
        if f.is("InvalidAccessKeyId") {
            return format!(
                "the server refused the credentials: it does not know access key id {} ({}); check \
                 AWS_ACCESS_KEY_ID or the profile, and that the key was made for this endpoint",
                self.access_key_id, f.text
            );
        }
        if f.is_auth() {
            return format!(
                "the server refused the credentials of access key id {} ({}); check the secret key that goes \
                 with this key id (AWS_SECRET_ACCESS_KEY or the profile), and that the key is active",
                self.access_key_id, f.text
            );
        }
        if f.is("AccessDenied") || (f.status == Some(403) && f.code.is_none()) {
            return format!(
                "the server denied access to access key id {} ({}); the key needs s3:GetObject, PutObject, \
                 DeleteObject, ListBucket, ListBucketMultipartUploads and AbortMultipartUpload on bucket {}",
                self.access_key_id, f.text, self.bucket
            );
        }
        if f.is("RequestTimeTooSkewed") {
            return format!("{}; this host's clock is wrong: fix it (NTP) and retry", f.text);
        }
        if f.is("NoSuchBucket") {
            return format!(
                "bucket {} does not exist at {} ({}); `reversa --config FILE init --create-bucket` creates it in {}",
                self.bucket, self.endpoint.url, f.text, self.region
            );
        }
        if let Some(r) = &f.bucket_region {
            if r != &self.region {
                return format!(
                    "bucket {} is in region {r}, not in store.region {} ({})",
                    self.bucket, self.region, f.text
                );
            }
        }
        if f.transient {
            return format!(
                "{}; gave up after up to {} attempts with exponential backoff and jitter; check that {} is \
                 reachable and healthy, then retry",
                f.text, self.max_attempts, self.endpoint.url
            );
        }
        f.text.clone()
    }

    /// Every page of a ListObjectsV2 of `prefix` (grouped by `delimiter` when given), each
    /// handed to `page` in order.
    async fn list_pages(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        mut page: impl FnMut(&aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output),
    ) -> Result<(), StoreError> {
        let full_prefix = format!("{}{prefix}", self.prefix);
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_delimiter(delimiter.map(String::from))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.sdk_failed("list", prefix, &e))?;
            page(&out);
            match (out.is_truncated(), out.next_continuation_token()) {
                (Some(true), Some(t)) => token = Some(t.to_string()),
                (Some(true), None) => {
                    return Err(self.failed(
                        "list",
                        prefix,
                        "the server said the listing continues but gave no continuation token",
                    ))
                }
                _ => return Ok(()),
            }
        }
    }

    fn past_end(&self, key: &str, range: Range<u64>) -> StoreError {
        StoreError::PastEnd { store: self.describe(), key: key.to_string(), start: range.start, end: range.end }
    }

    fn sdk_failed<E>(&self, op: &'static str, key: &str, e: &SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.failed(op, key, self.explain(&Fault::of(e)))
    }

    /// Does the bucket exist, and do the credentials work? One cheap listing answers both with a
    /// real error code (a HEAD would only give a bare status).
    async fn check_bucket(&self, mode: OpenMode) -> Result<(), StoreError> {
        let res = self.client.list_objects_v2().bucket(&self.bucket).prefix(&self.prefix).max_keys(1).send().await;
        let e = match res {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let f = Fault::of(&e);
        if !f.is("NoSuchBucket") {
            // A server that did not answer may answer later; any other refusal is about how the
            // store is set up (credentials, bucket, region).
            let cause = self.explain(&f);
            return Err(if f.transient { self.failed("open", &self.bucket, cause) } else { self.config_error(cause) });
        }
        match mode {
            OpenMode::Init { create_bucket: true } => self.create_bucket().await,
            OpenMode::Init { create_bucket: false } => Err(self.config_error(format!(
                "bucket {} does not exist at {}; run `reversa --config FILE init --create-bucket` to create it in \
                 region {}, or create it yourself",
                self.bucket, self.endpoint.url, self.region
            ))),
            OpenMode::Existing => Err(self.config_error(format!(
                "bucket {} does not exist at {}; check [store] bucket and endpoint (`reversa init --create-bucket` \
                 creates a new one)",
                self.bucket, self.endpoint.url
            ))),
        }
    }

    async fn create_bucket(&self) -> Result<(), StoreError> {
        let conf = CreateBucketConfiguration::builder()
            .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
            .build();
        match self.client.create_bucket().bucket(&self.bucket).create_bucket_configuration(conf).send().await {
            Ok(_) => {
                tracing::info!(bucket = %self.bucket, region = %self.region, "created the bucket");
                Ok(())
            }
            Err(e) => {
                let f = Fault::of(&e);
                if f.is("BucketAlreadyOwnedByYou") {
                    return Ok(());
                }
                let hint = if f.is("BucketAlreadyExists") {
                    "; the name belongs to another account: choose another bucket name"
                } else {
                    ""
                };
                Err(self.config_error(format!("cannot create bucket {}: {}{hint}", self.bucket, self.explain(&f))))
            }
        }
    }

    /// The bucket's location, where the server answers GetBucketLocation (some deny it to keys
    /// with least privilege, some do not implement it): then only the region check applies.
    /// `Ok(Err(why))` when the server does not answer.
    async fn bucket_location(&self) -> Result<Result<String, String>, StoreError> {
        match self.client.get_bucket_location().bucket(&self.bucket).send().await {
            Ok(out) => {
                let raw = out.location_constraint().map(|c| c.as_str().to_string()).unwrap_or_default();
                // S3's historical answers: empty for us-east-1, "EU" for eu-west-1.
                Ok(Ok(match raw.as_str() {
                    "" => "us-east-1".to_string(),
                    "EU" => "eu-west-1".to_string(),
                    _ => raw,
                }))
            }
            Err(e) => {
                let f = Fault::of(&e);
                if f.is_auth() || f.transient {
                    return Err(self.config_error(self.explain(&f)));
                }
                Ok(Err(f.text))
            }
        }
    }

    fn check_location(&self, location: &str) -> Result<(), StoreError> {
        check_region(&self.cfg, &self.endpoint, location).map_err(|e| {
            self.config_error(format!("bucket {} is located in {location}, which is not allowed: {e}", self.bucket))
        })?;
        if location != self.region {
            tracing::warn!(bucket = %self.bucket, location, region = %self.region, "the bucket's location differs from store.region");
        }
        Ok(())
    }

    /// Write a probe object twice with `If-None-Match: *`: a server that honours it refuses the
    /// second write with 412; one that ignores it (Garage) overwrites.
    async fn probe_conditional_writes(&self) -> Result<bool, StoreError> {
        let key = format!("reversa-probe/{}", crate::time_sortable_id());
        let full = self.full_key(&key)?;
        let put = || {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&full)
                .if_none_match("*")
                .body(ByteStream::from_static(b"probe"))
                .send()
        };
        put().await.map_err(|e| self.sdk_failed("probe", &key, &e))?;
        let honoured = match put().await {
            Ok(_) => false,
            Err(e) => {
                let f = Fault::of(&e);
                if f.status == Some(412) {
                    true
                } else if f.status.is_some_and(|s| s == 400 || s == 501) {
                    // Refused as unknown: not honoured.
                    false
                } else {
                    return Err(self.failed("probe", &key, self.explain(&f)));
                }
            }
        };
        self.delete(&key).await?;
        tracing::info!(conditional_writes = honoured, store = %self.describe(), "probed If-None-Match");
        Ok(honoured)
    }

    /// The part size for an object of `len` bytes: the configured one, raised if the object
    /// would otherwise need more than S3's 10,000 parts.
    fn part_size_for(&self, len: u64) -> u64 {
        let min = len.div_ceil(MAX_PARTS);
        self.part_size.max(min.next_multiple_of(1 << 20))
    }

    async fn put_bytes(&self, key: &str, full: &str, data: Bytes) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .content_length(data.len() as i64)
            .checksum_crc32_c(crc32c(&data))
            .set_storage_class(self.storage_class.clone())
            .body(ByteStream::from(data))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.sdk_failed("put", key, &e))?;
        Ok(())
    }

    /// A file no larger than a part: one PutObject, streamed from the file (the SDK re-opens the
    /// file for a retry, so a retry sends the same bytes).
    async fn put_small_file(&self, key: &str, full: &str, path: &Path, len: u64) -> Result<(), StoreError> {
        let digest = crc32c_of_file_range_async(path.to_path_buf(), 0, len)
            .await
            .map_err(|e| self.failed("put", key, e.to_string()))?;
        let body = ByteStream::read_from()
            .path(path)
            .length(Length::Exact(len))
            .build()
            .await
            .map_err(|e| self.failed("put", key, format!("cannot read {}: {e}", path.display())))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .content_length(len as i64)
            .checksum_crc32_c(digest)
            .set_storage_class(self.storage_class.clone())
            .body(body)
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.sdk_failed("put", key, &e))?;
        Ok(())
    }

    /// A large file: a multipart upload, parts read from the file, `max_concurrency` in flight,
    /// aborted on any failure (and by [`AbortGuard`] if this future is dropped).
    async fn put_multipart(&self, key: &str, full: &str, path: &Path, len: u64) -> Result<(), StoreError> {
        let part_size = self.part_size_for(len);
        let parts = len.div_ceil(part_size);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .set_storage_class(self.storage_class.clone())
            .send()
            .await
            .map_err(|e| self.sdk_failed("put (start multipart upload)", key, &e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| self.failed("put (start multipart upload)", key, "the server returned no upload id"))?
            .to_string();
        let mut guard = AbortGuard::new(self.client.clone(), self.bucket.clone(), full.to_string(), upload_id.clone());

        let uploaded: Result<Vec<CompletedPart>, StoreError> = futures::stream::iter(0..parts)
            .map(|i| {
                let offset = i * part_size;
                let size = part_size.min(len - offset);
                self.upload_part(key, full, &upload_id, path, i as i32 + 1, offset, size)
            })
            .buffer_unordered(self.max_concurrency)
            .try_collect()
            .await;
        let result = match uploaded {
            Ok(mut done) => {
                done.sort_by_key(|p| p.part_number());
                self.complete_upload(key, full, &upload_id, done, len).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                guard.disarm();
                // Some servers answer CompleteMultipartUpload oddly (radosgw: an empty ETag);
                // the object's size is the check that it is whole.
                match self.head(key).await? {
                    Some(info) if info.size == len => Ok(()),
                    Some(info) => Err(self.failed(
                        "put",
                        key,
                        format!("the completed multipart upload has {} bytes, expected {len}", info.size),
                    )),
                    None => Err(self.failed("put", key, "the completed multipart upload is not visible")),
                }
            }
            Err(e) => {
                let cause = match guard.abort_now().await {
                    Ok(()) => "the multipart upload was aborted".to_string(),
                    Err(a) => format!(
                        "aborting the multipart upload {upload_id} failed too ({a}); `reversa check --repair` removes it"
                    ),
                };
                Err(match e {
                    StoreError::Failed { store, op, key, source } => {
                        StoreError::Failed { store, op, key, source: format!("{source}; {cause}").into() }
                    }
                    other => other,
                })
            }
        }
    }

    /// CompleteMultipartUpload, over the client with the longer idle deadline, retried here
    /// rather than by the SDK: a retry can meet NoSuchUpload because an earlier attempt, whose
    /// answer was lost, did complete the upload. Only then is the object checked, and accepted if
    /// it is whole.
    async fn complete_upload(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        len: u64,
    ) -> Result<(), StoreError> {
        let op = "put (complete multipart upload)";
        let checksum = composite_crc32c(&parts);
        let upload = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
        let once = aws_sdk_s3::config::Builder::default()
            .http_client(self.complete_http.clone())
            .retry_config(RetryConfig::disabled());
        let mut attempt = 0;
        // The cause of the last attempt whose outcome is unknown (a timeout, a reset, a 5xx).
        let mut unseen: Option<String> = None;
        loop {
            attempt += 1;
            let res = self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(upload_id)
                .multipart_upload(upload.clone())
                .customize()
                .config_override(once.clone())
                .send()
                .await;
            let e = match res {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let f = Fault::of(&e);
            if let (true, Some(earlier)) = (f.is("NoSuchUpload"), &unseen) {
                if self.completed_whole(key, full, len, checksum.as_deref()).await? {
                    tracing::info!(key, upload_id, "an earlier CompleteMultipartUpload did complete the upload");
                    return Ok(());
                }
                return Err(self.failed(
                    op,
                    key,
                    format!(
                        "{}, after an attempt that failed with {earlier}; the object is not there whole: retry",
                        self.explain(&f)
                    ),
                ));
            }
            // InternalError too: AWS can answer it inside a 200 once completing has begun.
            if !(f.transient || f.is("InternalError")) || attempt >= self.max_attempts {
                return Err(self.failed(op, key, self.explain(&f)));
            }
            unseen = Some(f.text);
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// Whether `full` holds the completed upload: `len` bytes and, when the server reports the
    /// composite CRC32C of the parts (AWS does), the one they were sent with.
    async fn completed_whole(
        &self,
        key: &str,
        full: &str,
        len: u64,
        checksum: Option<&str>,
    ) -> Result<bool, StoreError> {
        let res =
            self.client.head_object().bucket(&self.bucket).key(full).checksum_mode(ChecksumMode::Enabled).send().await;
        let out = match res {
            Ok(out) => out,
            Err(e) => {
                let f = Fault::of(&e);
                return if f.status == Some(404) { Ok(false) } else { Err(self.failed("head", key, self.explain(&f))) };
            }
        };
        let size_ok = out.content_length() == Some(len as i64);
        // A composite checksum reads "<base64>-<parts>"; any other kind is not comparable.
        let checksum_ok = match (out.checksum_crc32_c().and_then(|c| c.split_once('-')), checksum) {
            (Some((got, _)), Some(want)) => got == want,
            _ => true,
        };
        Ok(size_ok && checksum_ok)
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_part(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        path: &Path,
        number: i32,
        offset: u64,
        size: u64,
    ) -> Result<CompletedPart, StoreError> {
        let op = "put (upload part)";
        let digest = crc32c_of_file_range_async(path.to_path_buf(), offset, size)
            .await
            .map_err(|e| self.failed(op, key, format!("part {number}: {e}")))?;
        let body = ByteStream::read_from()
            .path(path)
            .offset(offset)
            .length(Length::Exact(size))
            .build()
            .await
            .map_err(|e| self.failed(op, key, format!("part {number}: cannot read {}: {e}", path.display())))?;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(size as i64)
            .checksum_crc32_c(&digest)
            .body(body)
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|e| self.failed(op, key, format!("part {number}: {}", self.explain(&Fault::of(&e)))))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(String::from))
            .checksum_crc32_c(out.checksum_crc32_c().unwrap_or(&digest))
            .build())
    }

    /// GetObject, whole or a range, with the body read to the end. A body cut short (a reset
    /// after the headers) is retried here with backoff, since the SDK's retries end with the
    /// response headers.
    async fn get_object(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        let full = self.full_key(key)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.client.get_object().bucket(&self.bucket).key(&full);
            if let Some(r) = &range {
                req = req.range(format!("bytes={}-{}", r.start, r.end - 1));
            }
            let out = match req.send().await {
                Ok(o) => o,
                Err(e) => {
                    let f = Fault::of(&e);
                    if f.is("NoSuchKey") || (f.status == Some(404) && !f.is("NoSuchBucket")) {
                        return Err(StoreError::NotFound { store: self.describe(), key: key.to_string() });
                    }
                    if f.status == Some(416) {
                        let r = range.clone().unwrap_or(0..0);
                        return Err(self.past_end(key, r));
                    }
                    return Err(self.failed("get", key, self.explain(&f)));
                }
            };
            let expected = out.content_length().map(|n| n as u64);
            match out.body.collect().await {
                Ok(agg) => {
                    let bytes = agg.into_bytes();
                    if expected.is_none_or(|n| n == bytes.len() as u64) {
                        return Ok(bytes);
                    }
                    if attempt >= self.max_attempts {
                        return Err(self.failed(
                            "get",
                            key,
                            format!("the response body had {} bytes, its header said {expected:?}, after {attempt} attempts", bytes.len()),
                        ));
                    }
                }
                Err(e) if attempt >= self.max_attempts => {
                    return Err(self.failed(
                        "get",
                        key,
                        format!(
                            "reading the response failed: {}; gave up after {attempt} attempts",
                            DisplayErrorContext(&e)
                        ),
                    ))
                }
                Err(e) => {
                    tracing::debug!(key, attempt, error = %e, "response body cut short; retrying")
                }
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }
}

fn describe(bucket: &str, prefix: &str, endpoint: &str) -> String {
    format!("s3://{bucket}/{} at {endpoint}", prefix.trim_end_matches('/')).replace("/ at", " at")
}

/// Aborts a multipart upload that was neither completed nor aborted when it is dropped: a put
/// future cancelled by its caller (a failed backup stops its other uploads) must not leave parts
/// behind. Only a killed process does, and `check --repair` handles those.
struct AbortGuard {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl AbortGuard {
    fn new(client: aws_sdk_s3::Client, bucket: String, key: String, upload_id: String) -> AbortGuard {
        AbortGuard { client, bucket, key, upload_id, armed: true }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }

    async fn abort_now(&mut self) -> Result<(), String> {
        self.armed = false;
        abort(&self.client, &self.bucket, &self.key, &self.upload_id).await
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (client, bucket, key, id) =
            (self.client.clone(), self.bucket.clone(), self.key.clone(), self.upload_id.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = abort(&client, &bucket, &key, &id).await {
                        tracing::warn!(key, upload_id = id, error = %e, "could not abort a cancelled multipart upload; `reversa check --repair` removes it");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(key, upload_id = id, "multipart upload left behind; `reversa check --repair` removes it")
            }
        }
    }
}

async fn abort(client: &aws_sdk_s3::Client, bucket: &str, key: &str, upload_id: &str) -> Result<(), String> {
    match client.abort_multipart_upload().bucket(bucket).key(key).upload_id(upload_id).send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let f = Fault::of(&e);
            // Already gone: what we wanted.
            if f.is("NoSuchUpload") || f.status == Some(404) {
                Ok(())
            } else {
                Err(f.text)
            }
        }
    }
}

#[async_trait]
impl Store for S3Store {
    fn describe(&self) -> String {
        describe(&self.bucket, &self.prefix, &self.endpoint.url)
    }

    fn conditional_create(&self) -> bool {
        self.conditional
    }

    async fn presign_get(&self, key: &str, ttl: std::time::Duration) -> Result<Option<String>, StoreError> {
        let full = self.full_key(key)?;
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)
            .map_err(|e| self.failed("presign", key, format!("invalid link lifetime: {e}")))?;
        // Signed locally with the current credentials: no request is sent.
        let req = self.client.get_object().bucket(&self.bucket).key(full).presigned(config).await.map_err(|e| {
            self.failed("presign", key, aws_smithy_types::error::display::DisplayErrorContext(e).to_string())
        })?;
        Ok(Some(req.uri().to_string()))
    }

    fn concurrency(&self) -> usize {
        self.max_concurrency
    }

    fn facts(&self) -> StoreFacts {
        self.facts.clone()
    }

    async fn put(&self, key: &str, body: Body) -> Result<(), StoreError> {
        let full = self.full_key(key)?;
        match body {
            Body::Bytes(data) => self.put_bytes(key, &full, data).await,
            Body::File { path, len } => {
                let actual = tokio::fs::metadata(&path)
                    .await
                    .map_err(|e| self.failed("put", key, format!("cannot read {}: {e}", path.display())))?
                    .len();
                if actual != len {
                    return Err(self.failed(
                        "put",
                        key,
                        format!("{} has {actual} bytes, expected {len} (it changed before the upload)", path.display()),
                    ));
                }
                if len > self.part_size {
                    self.put_multipart(key, &full, &path, len).await
                } else {
                    self.put_small_file(key, &full, &path, len).await
                }
            }
        }
    }

    async fn create_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StoreError> {
        let full = self.full_key(key)?;
        if !self.conditional && self.head(key).await?.is_some() {
            // Not atomic (conditional_create() says so): the tenant lock then uses its
            // list-and-oldest-wins protocol instead of relying on this.
            return Ok(false);
        }
        let digest = crc32c(&data);
        // reversa retries this request itself: a 412 after an attempt whose outcome is unknown
        // (a timeout, a reset, a 5xx) may be our own first write, and only then is it right to
        // look at what is there. A 412 on a clean first attempt is simply "exists".
        let no_sdk_retry = aws_sdk_s3::config::Builder::default().retry_config(RetryConfig::disabled());
        let mut attempt = 0;
        let mut maybe_written = false;
        loop {
            attempt += 1;
            let res = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&full)
                .if_none_match("*")
                .content_length(data.len() as i64)
                .checksum_crc32_c(&digest)
                .set_storage_class(self.storage_class.clone())
                .body(ByteStream::from(data.clone()))
                .customize()
                .disable_payload_signing()
                .config_override(no_sdk_retry.clone())
                .send()
                .await;
            let e = match res {
                Ok(_) => return Ok(true),
                Err(e) => e,
            };
            let f = Fault::of(&e);
            match f.status {
                Some(412) if maybe_written => {
                    // Our bytes always hold something random (a nonce, a salt), so equal bytes
                    // mean the earlier attempt did write them.
                    return match self.get_object(key, None).await {
                        Ok(b) => Ok(b == data),
                        Err(e) if e.is_not_found() => {
                            Err(self.failed("create", key, "refused as existing, then not found; retry"))
                        }
                        Err(e) => Err(e),
                    };
                }
                Some(412) => return Ok(false),
                // A concurrent conditional write on the same key (AWS): retry, then one wins.
                Some(409) if attempt < self.max_attempts => {}
                _ if f.transient && attempt < self.max_attempts => maybe_written = true,
                _ => return Err(self.failed("create", key, self.explain(&f))),
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.get_object(key, None).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        if range.start > range.end {
            return Err(self.failed("get", key, format!("invalid range {}..{}", range.start, range.end)));
        }
        if range.is_empty() {
            // No HTTP range means zero bytes; check the object and the bound instead.
            return match self.head(key).await? {
                None => Err(StoreError::NotFound { store: self.describe(), key: key.to_string() }),
                Some(i) if range.start > i.size => Err(self.past_end(key, range)),
                Some(_) => Ok(Bytes::new()),
            };
        }
        let want = range.end - range.start;
        let bytes = self.get_object(key, Some(range.clone())).await?;
        if bytes.len() as u64 != want {
            // The server answered whole (the body matched its Content-Length) with fewer bytes
            // than asked: the object ends before the range does.
            return Err(self.past_end(key, range));
        }
        Ok(bytes)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let full = self.full_key(key)?;
        match self.client.head_object().bucket(&self.bucket).key(&full).send().await {
            Ok(out) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                modified: out.last_modified().map(|t| t.secs()).unwrap_or(0),
            })),
            Err(e) => {
                let f = Fault::of(&e);
                if f.status == Some(404) {
                    Ok(None)
                } else {
                    Err(self.failed("head", key, self.explain(&f)))
                }
            }
        }
    }

    async fn any_under(&self, prefix: &str) -> Result<bool, StoreError> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}{prefix}", self.prefix))
            .max_keys(1)
            .send()
            .await
            .map_err(|e| self.sdk_failed("list", prefix, &e))?;
        Ok(!page.contents().is_empty())
    }

    async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let full_prefix = format!("{}{prefix}", self.prefix);
        let mut out = Vec::new();
        self.list_pages(prefix, Some("/"), |page| {
            for p in page.common_prefixes() {
                if let Some(name) = p.prefix().and_then(|k| k.strip_prefix(full_prefix.as_str())) {
                    out.push(name.trim_end_matches('/').to_string());
                }
            }
        })
        .await?;
        out.sort();
        Ok(out)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = Vec::new();
        self.list_pages(prefix, None, |page| {
            for o in page.contents() {
                let Some(k) = o.key().and_then(|k| k.strip_prefix(self.prefix.as_str())) else {
                    continue;
                };
                out.push(ObjectInfo {
                    key: k.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified: o.last_modified().map(|t| t.secs()).unwrap_or(0),
                });
            }
        })
        .await?;
        // S3 lists in UTF-8 byte order already; sort anyway, the contract promises it.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let full = self.full_key(key)?;
        match self.client.delete_object().bucket(&self.bucket).key(&full).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = Fault::of(&e);
                if f.is("NoSuchKey") || (f.status == Some(404) && !f.is("NoSuchBucket")) {
                    Ok(())
                } else {
                    Err(self.failed("delete", key, self.explain(&f)))
                }
            }
        }
    }

    async fn versioning(&self) -> Result<Versioning, StoreError> {
        use aws_sdk_s3::types::BucketVersioningStatus as S;
        let out = self
            .client
            .get_bucket_versioning()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| self.sdk_failed("get bucket versioning", "", &e))?;
        Ok(match out.status() {
            Some(S::Enabled) => Versioning::Enabled,
            Some(S::Suspended) => Versioning::Suspended,
            _ => Versioning::Unversioned,
        })
    }

    async fn list_versions(&self, prefix: &str) -> Result<Vec<ObjectVersion>, StoreError> {
        let full_prefix = format!("{}{prefix}", self.prefix);
        let strip = |k: Option<&str>| k.and_then(|k| k.strip_prefix(self.prefix.as_str())).map(String::from);
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.sdk_failed("list object versions", prefix, &e))?;
            for v in page.versions() {
                let Some(key) = strip(v.key()) else { continue };
                out.push(ObjectVersion {
                    key,
                    version_id: v.version_id().map(String::from),
                    delete_marker: false,
                    latest: v.is_latest() == Some(true),
                    size: v.size().unwrap_or(0).max(0) as u64,
                });
            }
            for m in page.delete_markers() {
                let Some(key) = strip(m.key()) else { continue };
                out.push(ObjectVersion {
                    key,
                    version_id: m.version_id().map(String::from),
                    delete_marker: true,
                    latest: m.is_latest() == Some(true),
                    size: 0,
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(String::from);
            version_marker = page.next_version_id_marker().map(String::from);
            if key_marker.is_none() {
                return Err(self.failed(
                    "list object versions",
                    prefix,
                    "the server said the listing continues but gave no key marker",
                ));
            }
        }
        out.sort_by(|a, b| (&a.key, &a.version_id).cmp(&(&b.key, &b.version_id)));
        Ok(out)
    }

    async fn get_version(&self, v: &ObjectVersion) -> Result<Bytes, StoreError> {
        let Some(id) = &v.version_id else { return self.get(&v.key).await };
        let full = self.full_key(&v.key)?;
        let out = match self.client.get_object().bucket(&self.bucket).key(&full).version_id(id).send().await {
            Ok(o) => o,
            Err(e) => {
                let f = Fault::of(&e);
                if f.status == Some(404) || f.status == Some(405) {
                    return Err(StoreError::NotFound {
                        store: self.describe(),
                        key: format!("{} (version {id})", v.key),
                    });
                }
                return Err(self.failed("get", &v.key, self.explain(&f)));
            }
        };
        match out.body.collect().await {
            Ok(agg) => Ok(agg.into_bytes()),
            Err(e) => {
                Err(self.failed("get", &v.key, format!("reading the response failed: {}", DisplayErrorContext(&e))))
            }
        }
    }

    async fn delete_version(&self, v: &ObjectVersion) -> Result<(), StoreError> {
        let full = self.full_key(&v.key)?;
        let req = self.client.delete_object().bucket(&self.bucket).key(&full).set_version_id(v.version_id.clone());
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = Fault::of(&e);
                if f.is("NoSuchKey") || f.is("NoSuchVersion") || (f.status == Some(404) && !f.is("NoSuchBucket")) {
                    Ok(())
                } else {
                    Err(self.failed("delete version", &v.key, self.explain(&f)))
                }
            }
        }
    }

    async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, StoreError> {
        let full_prefix = format!("{}{prefix}", self.prefix);
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.sdk_failed("list multipart uploads", prefix, &e))?;
            for u in page.uploads() {
                let (Some(k), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                let Some(k) = k.strip_prefix(self.prefix.as_str()) else {
                    continue;
                };
                out.push(PendingUpload {
                    key: k.to_string(),
                    upload_id: id.to_string(),
                    initiated: u.initiated().map(|t| t.secs()).unwrap_or(0),
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(String::from);
            id_marker = page.next_upload_id_marker().map(String::from);
            if key_marker.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| (&a.key, a.initiated).cmp(&(&b.key, b.initiated)));
        Ok(out)
    }

    async fn abort_upload(&self, upload: &PendingUpload) -> Result<(), StoreError> {
        let full = self.full_key(&upload.key)?;
        abort(&self.client, &self.bucket, &full, &upload.upload_id)
            .await
            .map_err(|cause| self.failed("abort multipart upload", &upload.key, cause))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(region: &str, endpoint: Option<&str>) -> S3StoreConfig {
        S3StoreConfig::new("reversa-backups", region, endpoint)
    }

    fn err(c: &S3StoreConfig) -> String {
        let e = validate(c).unwrap_err();
        format!("{}: {}", e.key, e.message)
    }

    #[test]
    fn eu_regions_pass_and_others_are_refused_with_the_list() {
        assert!(validate(&cfg("eu-south-1", None)).is_ok());
        assert!(validate(&cfg("eu-central-1", None)).is_ok());
        let e = err(&cfg("us-east-1", None));
        assert!(e.contains("store.region") && e.contains("us-east-1") && e.contains("eu-south-1"), "{e}");
        // London and Zurich are in Europe, not in the EU.
        assert!(err(&cfg("eu-west-2", None)).contains("eu-west-2"));
        assert!(err(&cfg("eu-central-2", None)).contains("eu-central-2"));
        // Provider names are for providers' endpoints, not for AWS.
        assert!(err(&cfg("fr-par", None)).contains("not an AWS region in the EU"));
        assert!(validate(&cfg("fr-par", Some("https://s3.fr-par.scw.cloud"))).is_ok());
    }

    #[test]
    fn endpoints_naming_non_eu_regions_are_refused() {
        let e = err(&cfg("eu-south-1", Some("https://s3.us-east-1.amazonaws.com")));
        assert!(e.contains("store.endpoint") && e.contains("us-east-1"), "{e}");
        let e = err(&cfg("eu-west-1", Some("https://s3.eu-west-1.wasabisys.com")));
        assert!(e.contains("London"), "{e}");
        let e = err(&cfg("eu-south-1", Some("https://s3.eu-central-1.amazonaws.com")));
        assert!(e.contains("make them the same"), "{e}");
        assert!(validate(&cfg("eu-south-1", Some("https://s3.eu-south-1.amazonaws.com"))).is_ok());
    }

    #[test]
    fn allowed_regions_only_narrow() {
        let mut c = cfg("eu-south-1", None);
        c.allowed_regions = Some(vec!["eu-south-1".into()]);
        assert!(validate(&c).is_ok());
        c.region = "eu-central-1".into();
        let e = err(&c);
        assert!(e.contains("eu-central-1") && e.contains("allowed: eu-south-1"), "{e}");
        c.allowed_regions = Some(vec!["us-east-1".into()]);
        assert!(err(&c).contains("store.allowed_regions"));
    }

    #[test]
    fn plain_http_only_to_this_host() {
        assert!(validate(&cfg("eu-south-1", Some("http://127.0.0.1:7480"))).is_ok());
        assert!(validate(&cfg("eu-south-1", Some("http://localhost:7480"))).is_ok());
        assert!(validate(&cfg("eu-south-1", Some("http://[::1]:7480"))).is_ok());
        let mut c = cfg("eu-south-1", Some("http://s3.example.it"));
        assert!(err(&c).contains("allow_insecure_http"));
        c.allow_insecure_http = true;
        assert!(validate(&c).is_ok());
        assert!(err(&cfg("eu-south-1", Some("https://user:pw@s3.example.it"))).contains("credentials"));
        assert!(err(&cfg("eu-south-1", Some("ftp://s3.example.it"))).contains("scheme"));
    }

    #[test]
    fn limits() {
        let mut c = cfg("eu-south-1", None);
        c.part_size = 1 << 20;
        assert!(err(&c).contains("store.part_size"));
        c.part_size = 8 << 20;
        c.max_concurrency = 0;
        assert!(err(&c).contains("store.max_concurrency"));
        c.max_concurrency = 4;
        assert_eq!(c.io_timeout, Duration::from_secs(60));
        c.io_timeout = Duration::ZERO;
        assert!(err(&c).contains("store.io_timeout"));
        c.io_timeout = Duration::from_secs(2 * 3600);
        let e = err(&c);
        assert!(e.contains("store.io_timeout") && e.contains("15 minutes"), "{e}");
        c.io_timeout = Duration::from_secs(60);
        c.bucket = "Bad_Bucket".into();
        assert!(err(&c).contains("store.bucket"));
        c.bucket = "good.bucket-1".into();
        c.prefix = "a/../b".into();
        assert!(err(&c).contains("store.prefix"));
        c.prefix = "/a/b/".into();
        assert!(validate(&c).is_ok());
        assert_eq!(normalize_prefix("/a/b/").unwrap(), "a/b/");
        assert_eq!(normalize_prefix("").unwrap(), "");
    }

    #[test]
    fn describes_without_double_slashes() {
        assert_eq!(describe("b", "", "http://h:1"), "s3://b at http://h:1");
        assert_eq!(describe("b", "p/q/", "http://h:1"), "s3://b/p/q at http://h:1");
    }
}
