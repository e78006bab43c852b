//! The configuration file: TOML, loaded once into typed structs and validated before anything runs.
//! Unknown keys are errors (`deny_unknown_fields`), so a typo is never a silent default. Relative
//! paths are relative to the folder of the configuration file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {cause}; pass an existing file with --config")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("configuration file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("configuration file {path}: {key}: {message}")]
    Invalid { path: PathBuf, key: &'static str, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: SourceConfig,
    pub store: StoreConfig,
    #[serde(default)]
    pub keys: KeysConfig,
    pub state: StateConfig,
    #[serde(default)]
    pub exports: ExportsConfig,
    #[serde(default)]
    pub backup: BackupConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub prune: PruneConfig,
    #[serde(default)]
    pub lock: crate::repository::lock::LockConfig,
    /// SHA-256 of the configuration file's text, so the audit log records when it changed.
    #[serde(skip)]
    pub file_sha256: String,
}

/// How tables are stored from one generation to the next (see `generation::delta`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// A keyed table is written as a new full base once its chain holds this many deltas, so a
    /// restore never replays more than this many.
    pub max_delta_chain: u32,
    /// ... or once its deltas add up to more than this fraction of the base's bytes.
    pub max_delta_ratio: f64,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig { max_delta_chain: 14, max_delta_ratio: 0.5 }
    }
}

/// Which generations `forget` keeps (see `retention`). A generation is kept if any rule keeps it
/// or it is on legal hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// The newest generation of each of the last N days that have one.
    pub keep_daily: u32,
    /// The newest generation of each of the last N ISO weeks that have one.
    pub keep_weekly: u32,
    /// The newest generation of each of the last N months that have one.
    pub keep_monthly: u32,
    /// Every generation younger than this duration (e.g. "30d", "6w", "12h"); empty: none.
    pub keep_within: String,
    /// The time zone days, weeks and months are counted in.
    pub time_zone: String,
    /// A policy that may keep less than 28 days of history is refused unless this is set (see
    /// `retention::Policy::keeps_minimum_history` for what counts); when set, `forget` warns.
    pub allow_short_retention: bool,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_daily: 28,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_within: String::new(),
            time_zone: "Europe/Rome".into(),
            allow_short_retention: false,
        }
    }
}

/// How `prune` frees space.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PruneConfig {
    /// Packs younger than this are never deleted or repacked: a backup by another agent that
    /// does not hold the lock may be writing them.
    pub grace_hours: u32,
    /// A pack whose unused bytes exceed this percentage is rewritten with only its used blobs.
    pub repack_unused_percent: u32,
}

impl Default for PruneConfig {
    fn default() -> Self {
        PruneConfig { grace_hours: 24, repack_unused_percent: 50 }
    }
}

/// Customer exports uploaded to the store (`export --upload`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportsConfig {
    /// How long a pre-signed download link stays valid, in hours (S3 allows at most 168).
    pub link_ttl_hours: u32,
    /// Days an uploaded export is kept before `reversa exports prune` removes it.
    pub keep_days: u32,
}

impl Default for ExportsConfig {
    fn default() -> Self {
        ExportsConfig { link_ttl_hours: 72, keep_days: 7 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// One folder per tenant under `root`, holding database.sqlite, attachments/ and documents/.
    Sqlite {
        root: PathBuf,
        /// How long a read waits for a writer that holds the database locked, in seconds.
        #[serde(default = "default_busy_timeout")]
        busy_timeout_secs: u64,
    },
}

fn default_busy_timeout() -> u64 {
    30
}

impl SourceConfig {
    /// How long to wait for a writer holding the tenant's database locked.
    pub fn busy_timeout(&self) -> std::time::Duration {
        let SourceConfig::Sqlite { busy_timeout_secs, .. } = self;
        std::time::Duration::from_secs(*busy_timeout_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreConfig {
    /// A local folder (the embedded default).
    Dir { path: PathBuf },
    /// An S3 bucket in an EU region (AWS or an S3-compatible provider); see docs/S3.md.
    S3(S3StoreConfig),
}

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

/// A TOML value written as a whole number, or as a string with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Int(u64),
    Text(String),
}

/// A size in bytes: an integer, or a string with a unit (`"512KiB"`, `"16MiB"`, `"1GiB"`, `"8MB"`).
fn byte_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match NumberOrText::deserialize(d)? {
        NumberOrText::Int(n) => Ok(n),
        NumberOrText::Text(s) => parse_byte_size(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is not a size; write bytes (16777216) or a size such as \"16MiB\""))
        }),
    }
}

/// A whole number and the unit written after it (`"16MiB"` is 16 and `"MiB"`).
fn number_and_unit(s: &str) -> Option<(u64, &str)> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

pub fn parse_byte_size(s: &str) -> Option<u64> {
    let (n, unit) = number_and_unit(s)?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A duration: whole seconds, or a string with a unit (`"90s"`, `"2m"`, `"1h"`).
pub(crate) fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    match NumberOrText::deserialize(d)? {
        NumberOrText::Int(n) => Ok(std::time::Duration::from_secs(n)),
        NumberOrText::Text(s) => parse_seconds(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is not a duration; write seconds (60) or e.g. \"60s\", \"2m\""))
        }),
    }
}

/// `"60"`, `"60s"`, `"2m"`, `"1h"` (also `"2 min"`): whole numbers only.
pub fn parse_seconds(s: &str) -> Option<std::time::Duration> {
    let (n, unit) = number_and_unit(s)?;
    let mult: u64 = match unit {
        "" | "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        _ => return None,
    };
    n.checked_mul(mult).map(std::time::Duration::from_secs)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// A file holding the 32-byte master key, mode 0600. `REVERSA_MASTER_KEY` (base64) overrides it.
    pub master_key_file: Option<PathBuf>,
    /// The master key as the environment gave it (`REVERSA_MASTER_KEY`, base64), which only the
    /// CLI reads; it overrides the file. Never read from the configuration file.
    #[serde(skip)]
    pub master_key_env: Option<crate::keys::KeyText>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Local state: keystore, file caches, job records.
    pub dir: PathBuf,
}

impl Config {
    /// Load and validate `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read { path: path.into(), cause })?;
        Config::parse(&text, path)
    }

    /// Parse configuration text that was read from `path` (used for messages and relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.message().trim_end().to_string()
                + &e.span().map(|s| format!(" (line {})", text[..s.start].lines().count().max(1))).unwrap_or_default()
                + "; see config/reversa.example.toml for every key",
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        cfg.file_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
        cfg.resolve_paths(&base);
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match &mut self.source {
            SourceConfig::Sqlite { root, .. } => fix(root),
        }
        match &mut self.store {
            StoreConfig::Dir { path } => fix(path),
            StoreConfig::S3(_) => {}
        }
        if let Some(p) = &mut self.keys.master_key_file {
            fix(p);
        }
        fix(&mut self.state.dir);
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid { path: path.into(), key, message: message.into() };
        let empty = |p: &Path| p.as_os_str().is_empty();
        match &self.source {
            SourceConfig::Sqlite { root, .. } if empty(root) => {
                return Err(invalid("source.root", "is empty; set it to the folder that holds one folder per tenant"))
            }
            _ => {}
        }
        match &self.store {
            StoreConfig::Dir { path: p } if empty(p) => {
                return Err(invalid("store.path", "is empty; set it to the folder that will hold the backups"))
            }
            // The EU rules, before anything can send a request.
            StoreConfig::S3(s3) => crate::store::s3::validate(s3).map_err(|e| ConfigError::Invalid {
                path: path.into(),
                key: e.key,
                message: e.message,
            })?,
            _ => {}
        }
        self.lock.validate().map_err(|message| invalid("lock.refresh", &message))?;
        if self.exports.keep_days == 0 {
            return Err(invalid(
                "exports.keep_days",
                "is 0, which would remove exports as soon as they are made; use 1 or more",
            ));
        }
        if !(1..=168).contains(&self.exports.link_ttl_hours) {
            return Err(invalid(
                "exports.link_ttl_hours",
                "must be between 1 and 168 (pre-signed links last at most 7 days)",
            ));
        }
        if self.backup.max_delta_chain == 0 {
            return Err(invalid("backup.max_delta_chain", "is 0; use 1 or more (14 by default)"));
        }
        if !(self.backup.max_delta_ratio > 0.0 && self.backup.max_delta_ratio.is_finite()) {
            return Err(invalid("backup.max_delta_ratio", "must be a number above 0 (0.5 by default)"));
        }
        // Bad durations, unknown time zones and policies shorter than the contracts' 4 weeks are
        // refused here, so `forget` never runs a policy nobody checked.
        crate::retention::Policy::from_config(&self.retention).map_err(|e| ConfigError::Invalid {
            path: path.into(),
            key: e.key,
            message: e.message,
        })?;
        if self.prune.repack_unused_percent > 100 {
            return Err(invalid("prune.repack_unused_percent", "is a percentage: use 0 to 100 (50 by default)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("/etc/reversa/reversa.toml"))
    }

    const GOOD: &str = r#"
        [source]
        kind = "sqlite"
        root = "tenants"
        [store]
        kind = "dir"
        path = "/var/lib/reversa/store"
        [keys]
        master_key_file = "master.key"
        [state]
        dir = "state"
    "#;

    #[test]
    fn loads_and_resolves_relative_paths() {
        let c = parse(GOOD).unwrap();
        let SourceConfig::Sqlite { root, .. } = &c.source;
        assert_eq!(root, Path::new("/etc/reversa/tenants"));
        assert_eq!(c.keys.master_key_file.as_deref(), Some(Path::new("/etc/reversa/master.key")));
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let text = include_str!("../config/reversa.example.toml");
        let c = parse(text).unwrap();
        assert_eq!(c.exports.keep_days, 7);
    }

    #[test]
    fn exports_section_has_defaults_and_limits() {
        let c = parse(GOOD).unwrap();
        assert_eq!((c.exports.link_ttl_hours, c.exports.keep_days), (72, 7));
        let c = parse(&format!("{GOOD}\n[exports]\nkeep_days = 30\n")).unwrap();
        assert_eq!((c.exports.link_ttl_hours, c.exports.keep_days), (72, 30));
        let e = parse(&format!("{GOOD}\n[exports]\nlink_ttl_hours = 500\n")).unwrap_err().to_string();
        assert!(e.contains("exports.link_ttl_hours"), "{e}");
        let e = parse(&format!("{GOOD}\n[exports]\nkeep = 3\n")).unwrap_err().to_string();
        assert!(e.contains("keep"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse(&GOOD.replace("dir = \"state\"", "dir = \"state\"\ndirr = 1")).unwrap_err().to_string();
        assert!(e.contains("dirr"), "{e}");
        let e = parse(&GOOD.replace("kind = \"dir\"", "kind = \"dir\"\nbucket = \"x\"")).unwrap_err().to_string();
        assert!(e.contains("bucket"), "{e}");
    }

    #[test]
    fn io_timeout_is_read_in_seconds_or_with_a_unit_and_checked() {
        let io_timeout = |line: &str| match parse(&S3.replace("part_size = \"8MiB\"", line)) {
            Ok(Config { store: StoreConfig::S3(s3), .. }) => Ok(s3.io_timeout),
            Ok(other) => panic!("not an s3 store: {:?}", other.store),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(io_timeout(""), Ok(std::time::Duration::from_secs(60)));
        assert_eq!(io_timeout("io_timeout = 90"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(io_timeout("io_timeout = \"45s\""), Ok(std::time::Duration::from_secs(45)));
        assert_eq!(io_timeout("io_timeout = \"2m\""), Ok(std::time::Duration::from_secs(120)));
        for bad in ["io_timeout = 0", "io_timeout = \"1h\""] {
            let e = io_timeout(bad).unwrap_err();
            assert!(e.contains("store.io_timeout") && e.contains("15 minutes"), "{bad}: {e}");
        }
        let e = io_timeout("io_timeout = \"soon\"").unwrap_err();
        assert!(e.contains("soon"), "{e}");
    }

    #[test]
    fn missing_field_is_named() {
        let e = parse(&GOOD.replace("root = \"tenants\"", "")).unwrap_err().to_string();
        assert!(e.contains("root"), "{e}");
    }

    const S3: &str = r#"
        [source]
        kind = "sqlite"
        root = "tenants"
        [store]
        kind = "s3"
        bucket = "reversa-backups"
        region = "eu-south-1"
        prefix = "agent-1"
        endpoint = "http://127.0.0.1:7480"
        part_size = "8MiB"
        [keys]
        master_key_file = "master.key"
        [state]
        dir = "state"
    "#;

    #[test]
    fn s3_store_loads_with_defaults_and_sizes() {
        let c = parse(S3).unwrap();
        let StoreConfig::S3(s3) = &c.store else { panic!("not s3: {:?}", c.store) };
        assert_eq!(
            (s3.bucket.as_str(), s3.region.as_str(), s3.prefix.as_str()),
            ("reversa-backups", "eu-south-1", "agent-1")
        );
        assert_eq!(s3.part_size, 8 << 20);
        assert_eq!(s3.max_concurrency, 4);
        assert!(!s3.allow_insecure_http);
        let c = parse(&S3.replace("part_size = \"8MiB\"", "part_size = 16777216")).unwrap();
        let StoreConfig::S3(s3) = &c.store else { unreachable!() };
        assert_eq!(s3.part_size, 16 << 20);
        assert_eq!(parse_byte_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_byte_size("12 MB"), Some(12_000_000));
        assert_eq!(parse_byte_size("lots"), None);
    }

    #[test]
    fn s3_store_refuses_typos_and_non_eu_regions() {
        let e = parse(&S3.replace("prefix =", "prefx =")).unwrap_err().to_string();
        assert!(e.contains("prefx"), "{e}");
        let e = parse(&S3.replace("eu-south-1", "us-east-1")).unwrap_err().to_string();
        assert!(e.contains("store.region") && e.contains("us-east-1") && e.contains("eu-south-1"), "{e}");
        let e = parse(&S3.replace("part_size = \"8MiB\"", "part_size = \"8 parsecs\"")).unwrap_err().to_string();
        assert!(e.contains("8 parsecs"), "{e}");
        // Credentials never go in the file.
        let e = parse(&S3.replace("prefix =", "secret_access_key = \"x\"\nprefix =")).unwrap_err().to_string();
        assert!(e.contains("secret_access_key"), "{e}");
    }

    #[test]
    fn the_s3_example_configuration_loads() {
        let text = include_str!("../config/reversa.s3.example.toml");
        let c = parse(text).unwrap();
        assert!(matches!(c.store, StoreConfig::S3(_)));
    }

    #[test]
    fn retention_is_validated_at_load() {
        let c = parse(GOOD).unwrap();
        assert_eq!((c.retention.keep_daily, c.retention.time_zone.as_str()), (28, "Europe/Rome"));
        let with = |section: &str| parse(&format!("{GOOD}\n[retention]\n{section}\n"));
        let e = with("keep_within = \"30 giorni\"").unwrap_err().to_string();
        assert!(e.contains("retention.keep_within") && e.contains("30 giorni"), "{e}");
        let e = with("time_zone = \"Europe/Roma\"").unwrap_err().to_string();
        assert!(e.contains("retention.time_zone") && e.contains("Europe/Roma"), "{e}");
        let e = with("keep_daily = 7").unwrap_err().to_string();
        assert!(e.contains("less than 28 days") && e.contains("allow_short_retention = true"), "{e}");
        with("keep_daily = 7\nallow_short_retention = true").unwrap();
        with("keep_daily = 7\nkeep_weekly = 6").unwrap();
        let e = with("keep_dayly = 28").unwrap_err().to_string();
        assert!(e.contains("keep_dayly"), "{e}");
    }

    #[test]
    fn unknown_kind_is_named() {
        let e = parse(&GOOD.replace("kind = \"sqlite\"", "kind = \"oracle\"")).unwrap_err().to_string();
        assert!(e.contains("oracle") && e.contains("sqlite"), "{e}");
    }
}
