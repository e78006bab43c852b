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
    Sqlite { root: PathBuf },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StoreConfig {
    /// A local folder (the embedded default).
    Dir { path: PathBuf },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// A file holding the 32-byte master key, mode 0600. `REVERSA_MASTER_KEY` (base64) overrides it.
    pub master_key_file: Option<PathBuf>,
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
            message: format!("{}", e.message().trim_end())
                + &e.span().map(|s| format!(" (line {})", text[..s.start].lines().count().max(1))).unwrap_or_default()
                + "; see config/reversa.example.toml for every key",
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
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
            SourceConfig::Sqlite { root } => fix(root),
        }
        match &mut self.store {
            StoreConfig::Dir { path } => fix(path),
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
            SourceConfig::Sqlite { root } if empty(root) => {
                return Err(invalid("source.root", "is empty; set it to the folder that holds one folder per tenant"))
            }
            _ => {}
        }
        match &self.store {
            StoreConfig::Dir { path: p } if empty(p) => {
                return Err(invalid("store.path", "is empty; set it to the folder that will hold the backups"))
            }
            _ => {}
        }
        if !(1..=168).contains(&self.exports.link_ttl_hours) {
            return Err(invalid(
                "exports.link_ttl_hours",
                "must be between 1 and 168 (pre-signed links last at most 7 days)",
            ));
        }
        if self.keys.master_key_file.is_none() && std::env::var_os(crate::keys::MASTER_KEY_ENV).is_none() {
            return Err(invalid(
                "keys.master_key_file",
                "is missing and REVERSA_MASTER_KEY is not set; set one of them (`reversa init \
                 --generate-master-key PATH` makes a key file)",
            ));
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
        let SourceConfig::Sqlite { root } = &c.source;
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
    fn missing_field_is_named() {
        let e = parse(&GOOD.replace("root = \"tenants\"", "")).unwrap_err().to_string();
        assert!(e.contains("root"), "{e}");
    }

    #[test]
    fn unknown_kind_is_named() {
        let e = parse(&GOOD.replace("kind = \"sqlite\"", "kind = \"oracle\"")).unwrap_err().to_string();
        assert!(e.contains("oracle") && e.contains("sqlite"), "{e}");
    }
}
