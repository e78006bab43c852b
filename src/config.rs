//! The configuration file: TOML, loaded once into typed structs and validated before anything runs.
//! Unknown keys are errors (`deny_unknown_fields`), so a typo is never a silent default. Relative
//! paths are relative to the folder of the configuration file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

// Each section that a module owns is defined and validated there; this module only aggregates.
pub use crate::repository::lock::LockConfig;
pub use crate::retention::RetentionConfig;
pub use crate::store::s3::S3StoreConfig;
pub use crate::units::{parse_byte_size, parse_seconds};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {cause}; pass an existing file with --config")]
    Read {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
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
    #[serde(default)]
    pub lifecycle: crate::lifecycle::LifecycleConfig,
    #[serde(default)]
    pub notices: crate::notices::NoticesConfig,
    #[serde(default)]
    pub drill: crate::drill::DrillConfig,
    #[serde(default)]
    pub api: crate::api::ApiConfig,
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
        for p in [&mut self.notices.webhook_secret_file, &mut self.notices.smtp_ca_file].into_iter().flatten() {
            fix(p);
        }
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
        self.lifecycle.validate().map_err(|(key, message)| invalid(key, &message))?;
        self.notices.validate().map_err(|(key, message)| invalid(key, &message))?;
        self.drill.validate().map_err(|(key, message)| invalid(key, &message))?;
        self.api.validate().map_err(|(key, message)| invalid(key, &message))?;
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
