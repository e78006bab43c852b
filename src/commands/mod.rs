//! The verbs. Each is a library function the CLI and (later) the daemon call the same way.
//! [`Agent`] is what every verb shares: the configuration, the store and the keystore.

pub mod audit;
pub mod backup;
pub mod certificate;
pub mod check;
pub mod demo;
pub mod drill;
pub mod export;
pub mod extraction;
pub mod forget;
pub mod generations;
pub mod init;
pub mod lifecycle;
pub mod notices;
pub mod prune;
pub mod restore;
pub mod tenant;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::audit::{AuditLog, Entry, Event, Produced};
use crate::config::{Config, StoreConfig};
use crate::keys::{self, KeyError, Keystore, MasterKey, TenantKeys};
use crate::repository::{self, RepoError, Repository};
use crate::store::s3::{OpenMode as S3OpenMode, S3Store};
use crate::store::{dir::DirStore, Store, StoreError};
use crate::tenant::TenantId;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error(transparent)]
    Lock(#[from] repository::lock::LockError),
    #[error(transparent)]
    Tenant(#[from] crate::tenant::InvalidTenantId),
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    #[error("{0}")]
    Usage(String),
    #[error("{what} {path}: {cause}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
    #[error("cancelled: the job stopped before its end and left no partial result (a backup leaves no generation; prune removes its unreferenced packs)")]
    Cancelled,
    /// The tenant lock was taken over, removed, or could not be refreshed: the job stopped.
    #[error("{0}; run it again once the other job has ended")]
    LockLost(String),
    /// What the tenant's lifecycle state does not allow.
    #[error("{0}")]
    NotAllowed(String),
    /// A deletion that is not complete: something of the tenant is still there (named).
    #[error("{0}")]
    Remains(String),
    #[error(transparent)]
    Audit(#[from] crate::audit::log::AuditError),
    #[error(
        "prune of tenant {tenant} refused, nothing was deleted: {what}: {cause}; prune never deletes on \
         an incomplete view of the repository (`reversa check --tenant {tenant} --read-data` names every \
         damaged object)"
    )]
    PruneRefused {
        tenant: String,
        what: String,
        #[source]
        cause: Box<RepoError>,
    },
}

/// What kind of failure an error is. The CLI maps kinds to exit codes (README.md); the daemon
/// will map them to HTTP statuses and decide from them what to retry.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// What was asked is wrong: a flag, the configuration, a key file, an id.
    BadInput,
    /// What was asked for does not exist: a tenant, a generation.
    NotFound,
    /// Another job holds the tenant.
    Locked,
    /// The master key does not open the keystore or its snapshots.
    WrongKey,
    /// The tenant's data exists, but no keystore holds its key.
    MissingKey,
    /// Damaged or missing data in the store.
    Damaged,
    /// The store or the source did not answer as it should; a later try may succeed.
    Transient,
    /// Not allowed in the tenant's state (its key is shredded).
    NotAllowed,
    /// A deletion that should be complete is not: something of the tenant is still there.
    Remains,
    /// The job was cancelled (a signal, a shutdown) before its end.
    Cancelled,
    /// Anything else: a local I/O failure, or a bug.
    Internal,
}

impl ErrorKind {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::Locked)
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        if self.is_not_found() {
            return ErrorKind::NotFound;
        }
        match self {
            Error::Usage(_) | Error::Tenant(_) => ErrorKind::BadInput,
            Error::Key(e) => key_kind(e),
            Error::Lock(crate::repository::lock::LockError::Store(e)) => store_kind(e),
            Error::Lock(_) | Error::LockLost(_) => ErrorKind::Locked,
            Error::Audit(crate::audit::log::AuditError::Key(e)) => key_kind(e),
            Error::Audit(crate::audit::log::AuditError::NoAgentKey { .. }) => ErrorKind::BadInput,
            Error::Audit(crate::audit::log::AuditError::Damaged(_)) => ErrorKind::Damaged,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::NotAllowed(_) => ErrorKind::NotAllowed,
            Error::Remains(_) => ErrorKind::Remains,
            Error::Repo(e) => repo_kind(e),
            Error::PruneRefused { cause, .. } => repo_kind(cause),
            Error::Store(e) => store_kind(e),
            Error::Source(crate::source::SourceError::Busy { .. }) => ErrorKind::Transient,
            Error::Export(e) if e.is_bad_input() => ErrorKind::BadInput,
            Error::Export(crate::export::ExportError::Repo(e)) => repo_kind(e),
            _ => ErrorKind::Internal,
        }
    }

    /// Whether what was asked for does not exist: a tenant (neither in the source nor in the
    /// store), a generation, or a tenant's first generation.
    pub fn is_not_found(&self) -> bool {
        let repo = |e: &RepoError| matches!(e, RepoError::NoSuchGeneration { .. } | RepoError::NoGenerations { .. });
        let source = |e: &crate::source::SourceError| matches!(e, crate::source::SourceError::UnknownTenant { .. });
        match self {
            Error::Key(KeyError::NoKey { .. }) => true,
            Error::Repo(e) => repo(e),
            Error::Source(e) => source(e),
            Error::Export(crate::export::ExportError::Repo(e)) => repo(e),
            Error::Export(crate::export::ExportError::Source(e)) => source(e),
            _ => false,
        }
    }
}

fn key_kind(e: &KeyError) -> ErrorKind {
    match e {
        // A key file that cannot be used is bad input, like a broken config.
        KeyError::LooseMode { .. }
        | KeyError::BadLength { .. }
        | KeyError::Read { .. }
        | KeyError::KeyFileExists { .. }
        | KeyError::AgentKeyUnusable { .. }
        | KeyError::NoMasterKey => ErrorKind::BadInput,
        e if e.is_wrong_master_key() => ErrorKind::WrongKey,
        KeyError::SnapshotsDamaged { .. } => ErrorKind::Damaged,
        KeyError::MissingKey { .. } => ErrorKind::MissingKey,
        KeyError::Shredded { .. } => ErrorKind::NotAllowed,
        KeyError::Store(e) => store_kind(e),
        _ => ErrorKind::Internal,
    }
}

fn repo_kind(e: &RepoError) -> ErrorKind {
    match e {
        RepoError::Damaged { .. } | RepoError::MissingBlob { .. } => ErrorKind::Damaged,
        RepoError::NoSuchGeneration { .. } | RepoError::NoGenerations { .. } => ErrorKind::NotFound,
        RepoError::NotInitialized { .. } | RepoError::UnsupportedFormat { .. } => ErrorKind::BadInput,
        RepoError::Store(e) => store_kind(e),
        RepoError::Local { .. } => ErrorKind::Internal,
    }
}

fn store_kind(e: &StoreError) -> ErrorKind {
    match e {
        // A store that cannot be used as configured (a missing folder or bucket, a bad region).
        StoreError::Config { .. } => ErrorKind::BadInput,
        StoreError::PastEnd { .. } => ErrorKind::Damaged,
        StoreError::Failed { .. } => ErrorKind::Transient,
        // An object that had to be there is not: retrying will not bring it back.
        StoreError::NotFound { .. } => ErrorKind::Internal,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Open the store of an initialized repository and check its marker. On S3, apply what `init`
/// recorded in the marker (the lock protocol, the bucket's location), so that every agent sharing
/// the store uses the same.
pub async fn open_store(cfg: &StoreConfig) -> Result<Arc<dyn Store>, Error> {
    match cfg {
        StoreConfig::Dir { path } => {
            let store: Arc<dyn Store> = Arc::new(DirStore::open(path, false)?);
            repository::check_marker(&*store).await?;
            Ok(store)
        }
        StoreConfig::S3(c) => {
            let (mut store, read) = S3Store::open_reading(c, repository::MARKER_KEY).await?;
            let marker = repository::parse_marker(&store, read)?;
            store.apply_facts(&marker.facts)?;
            Ok(Arc::new(store))
        }
    }
}

/// Open the store for `init`, creating it; `create_bucket` also creates a missing S3 bucket
/// (`init --create-bucket`).
pub async fn open_store_for_init(cfg: &StoreConfig, create_bucket: bool) -> Result<Arc<dyn Store>, StoreError> {
    match cfg {
        StoreConfig::Dir { path } => Ok(Arc::new(DirStore::open(path, true)?)),
        StoreConfig::S3(c) => Ok(Arc::new(S3Store::open(c, S3OpenMode::Init { create_bucket }).await?)),
    }
}

/// How old a temporary file must be before it is taken to be a leftover of a killed run.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Remove what killed runs left in the state folder's `tmp/<tenant>/` (catalog spools, export
/// work folders). They can hold tenant data in clear, so they must not outlive the run that made
/// them; a day of age keeps the files of runs still going untouched.
fn remove_stale_temporaries(tmp: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for e in entries.flatten() {
        // A tenant's own folder: its entries are judged one by one (the folder stays).
        let tenant_folder = e.file_type().is_ok_and(|t| t.is_dir())
            && e.file_name().to_str().is_some_and(|n| TenantId::parse(n).is_ok());
        if tenant_folder {
            remove_stale_temporaries(&e.path());
            continue;
        }
        let old = e.metadata().and_then(|m| m.modified()).map(|t| t.elapsed().unwrap_or_default() > STALE_TEMPORARY);
        if old.unwrap_or(false) {
            let path = e.path();
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            match removed {
                Ok(()) => tracing::info!(path = %path.display(), "removed a temporary file left by a killed run"),
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "cannot remove a stale temporary file")
                }
            }
        }
    }
}

/// A private scratch folder (mode 0700: it holds the tenant's data in clear), removed with
/// everything in it when dropped, on every way out.
pub(crate) struct Scratch(pub PathBuf);

impl Scratch {
    pub(crate) fn create(path: &std::path::Path) -> Result<Scratch> {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(path)
            .map_err(|cause| Error::Io { what: "cannot create", path: path.to_path_buf(), cause })?;
        Ok(Scratch(path.to_path_buf()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Agent {
    pub config: Config,
    pub store: Arc<dyn Store>,
    master: MasterKey,
    keystore: Mutex<Keystore>,
    /// This agent's audit log (local, sealed into the store by [`Agent::seal_audit`]).
    pub audit: AuditLog,
}

/// The actor of what the agent does on its own, not asked by anyone: a key made for a new
/// tenant, a keystore snapshot, a configuration change noticed.
pub const AGENT_ACTOR: &str = "reversa";

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Agent({})", self.store.describe())
    }
}

impl Agent {
    /// Open an initialized store and the keystore, proving the master key.
    pub async fn open(config: Config) -> Result<Agent> {
        // The key first: a bad key file is reported before anything touches the store.
        let master = MasterKey::load(&config.keys)?;
        let store = open_store(&config.store).await?;
        let keystore = Keystore::open(&config.state.dir, master.clone())?;
        let audit = AuditLog::open_existing(&config.state.dir)?;
        remove_stale_temporaries(&config.state.dir.join("tmp"));
        let agent = Agent { config, store, master, keystore: Mutex::new(keystore), audit };
        agent.note_config_change()?;
        Ok(agent)
    }

    /// Record in the audit log that the configuration file is not the one of the last run
    /// (its SHA-256 before and now), or the first configuration seen.
    fn note_config_change(&self) -> Result<()> {
        let path = self.config.state.dir.join("audit").join("config.sha256");
        let before = std::fs::read_to_string(&path).ok().map(|s| s.trim().to_string());
        let now = &self.config.file_sha256;
        if now.is_empty() || before.as_deref() == Some(now.as_str()) {
            return Ok(());
        }
        let mut e = Entry::new(Event::Config, AGENT_ACTOR);
        e.kind = Some(if before.is_some() { "config_changed" } else { "config_first_seen" }.into());
        if let Some(b) = before {
            e.produced.push(Produced { what: "config_before".into(), id: "configuration".into(), sha256: Some(b) });
        }
        e.produced.push(Produced { what: "config".into(), id: "configuration".into(), sha256: Some(now.clone()) });
        self.audit.append(e)?;
        std::fs::write(&path, now).map_err(|cause| Error::Io { what: "cannot write", path, cause })?;
        Ok(())
    }

    /// A key event in the audit log: `kind` for `tenant`, naming the snapshot involved.
    fn key_event(&self, kind: &str, tenant: Option<&TenantId>, snapshot: Option<&str>) -> Result<()> {
        let mut e = Entry::new(Event::Key, AGENT_ACTOR);
        e.kind = Some(kind.into());
        e.tenant = tenant.map(|t| t.to_string());
        if let Some(s) = snapshot {
            e.produced.push(Produced { what: "keystore_snapshot".into(), id: s.into(), sha256: None });
        }
        self.audit.append(e)?;
        Ok(())
    }

    /// Seal this run's audit entries into a segment and upload every segment the store lacks
    /// (the end of a CLI invocation; the daemon's batch later).
    pub async fn seal_audit(&self) -> Result<crate::audit::SealReport> {
        Ok(self.audit.seal_and_upload(&*self.store, &self.master).await?)
    }

    fn seal_lifecycle(&self, tenant: &TenantId, bytes: &[u8]) -> Vec<u8> {
        self.master.seal_lifecycle(tenant.as_str(), bytes)
    }

    fn open_lifecycle(&self, tenant: &TenantId, sealed: &[u8]) -> Result<Vec<u8>, crate::crypto::OpenError> {
        self.master.open_lifecycle(tenant.as_str(), sealed)
    }

    /// Open a sealed audit segment of the store (`audit verify`).
    pub fn open_audit_segment(
        &self,
        agent: &str,
        segment: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, crate::crypto::OpenError> {
        self.master.open_audit_segment(agent, segment, sealed)
    }

    /// The same agent on another store: a wrapper that adds behaviour (tests inject failures
    /// this way) or a store opened by other means.
    pub fn with_store(self, store: Arc<dyn Store>) -> Agent {
        Agent { store, ..self }
    }

    fn keystore(&self) -> std::sync::MutexGuard<'_, Keystore> {
        self.keystore.lock().expect("keystore lock")
    }

    /// The tenant's repository. With `create`, a tenant seen for the first time gets a data key,
    /// and the keystore is snapshotted to the store before any data is sealed under the new key.
    pub async fn repository(&self, tenant: &TenantId, create: bool) -> Result<Repository> {
        let keys = self.tenant_keys(tenant, create).await?;
        if create {
            // Before any data is sealed under a new key, the store holds a copy of it (wrapped),
            // so losing this host loses nothing; a snapshot that failed earlier is retried here.
            self.ensure_keystore_snapshot().await?;
        }
        Ok(Repository::new(self.store.clone(), Arc::new(keys)))
    }

    /// The tenant's keys. A tenant this keystore does not know may still have its key in one of
    /// the store's snapshots (a state folder lost or restored from an old copy): it is taken
    /// from there. A new key is made only for a tenant of which the store holds nothing: a new
    /// key for existing data would make that data unreadable.
    async fn tenant_keys(&self, tenant: &TenantId, create: bool) -> Result<TenantKeys> {
        if self.keystore().has_key(tenant)? {
            return Ok(self.keystore().tenant_keys(tenant)?);
        }
        match keys::find_in_snapshots(&self.master, &*self.store, tenant).await? {
            Ok(found) => {
                tracing::warn!(%tenant, snapshot = %found.snapshot, "this agent's keystore had no key for the tenant; recovered it from the store's keystore snapshot");
                let snapshot = found.snapshot.clone();
                self.keystore().adopt(tenant, found)?;
                self.key_event("key_recovered", Some(tenant), Some(&snapshot))?;
                Ok(self.keystore().tenant_keys(tenant)?)
            }
            Err(tried) if self.store.any_under(&Repository::prefix(tenant)).await? => {
                Err(KeyError::MissingKey { tenant: tenant.to_string(), tried }.into())
            }
            Err(_) if create => {
                let (keys, made) = self.keystore().tenant_keys_or_create(tenant)?;
                if made {
                    self.key_event("key_created", Some(tenant), None)?;
                }
                Ok(keys)
            }
            Err(_) => Err(KeyError::NoKey { tenant: tenant.to_string() }.into()),
        }
    }

    /// Check the store's keystore snapshots against this agent's keystore; with `repair`, upload
    /// a fresh snapshot when they fall short and the local keystore is sound.
    pub(crate) async fn check_keystore(&self, repair: bool) -> Result<keys::SnapshotCheck> {
        // A copy, re-read from its file (another process may have added keys since this
        // opened), so no lock is held across the requests.
        let copy = || -> Result<Keystore> {
            let mut ks = self.keystore();
            ks.reload()?;
            Ok(ks.clone())
        };
        let mut ks = copy()?;
        let mut check = ks.verify_snapshots(&*self.store).await?;
        if self.adopt_shreds(&check.shredded_elsewhere, check.newest.as_deref())? {
            // What a repair may upload must not hold the key it just shredded.
            ks = copy()?;
        }
        if !repair || check.problems.is_empty() {
            return Ok(check);
        }
        // Only a keystore whose every key opens may replace what the store holds.
        if let Err(e) = ks.is_sound() {
            check.problems.push(format!("`--repair` uploaded no snapshot: this agent's keystore is not sound: {e}"));
            return Ok(check);
        }
        let uploaded = ks.upload_fresh_snapshot(&*self.store).await?;
        // The fresh snapshot holds every key this agent has; one that does not open is of no
        // use to anyone with this master key, and would be reported on every run.
        for key in &check.damaged {
            self.store.delete(key).await?;
        }
        let mut check = ks.verify_snapshots(&*self.store).await?;
        check.uploaded = Some(uploaded);
        Ok(check)
    }

    /// Destroy the tenant's data key in this agent's keystore, then upload a snapshot without
    /// it (read back and opened before this returns). Returns the snapshot's key.
    pub(crate) async fn shred_key(&self, tenant: &TenantId) -> Result<String> {
        let had = self.keystore().shred(tenant)?;
        let ks = self.keystore().clone();
        let snapshot = ks.upload_fresh_snapshot(&*self.store).await?;
        self.key_event(if had { "key_shredded" } else { "key_shred_recorded" }, Some(tenant), Some(&snapshot))?;
        Ok(snapshot)
    }

    /// Every version of every keystore snapshot in the store, sorted by whether it still holds
    /// the tenant's key.
    pub(crate) async fn key_copies(&self, tenant: &TenantId) -> Result<keys::KeyCopies> {
        Ok(keys::snapshots_holding(&self.master, &*self.store, tenant).await?)
    }

    /// Take one keystore snapshot version that holds the tenant's key out of the store.
    pub(crate) async fn remove_key_from(&self, v: &crate::store::ObjectVersion, tenant: &TenantId) -> Result<()> {
        Ok(keys::remove_key_from(&self.master, &*self.store, v, tenant).await?)
    }

    /// Whether this agent's keystore still holds the tenant's key.
    pub(crate) fn holds_key(&self, tenant: &TenantId) -> bool {
        let mut ks = self.keystore();
        let _ = ks.reload();
        ks.holds_key(tenant)
    }

    /// Upload a keystore snapshot unless the store already holds the keystore as it is now.
    pub async fn ensure_keystore_snapshot(&self) -> Result<()> {
        // Sealed under the lock, uploaded without holding it.
        let Some(mut pending) = self.keystore().snapshot_needed(&*self.store) else { return Ok(()) };
        // Before this agent's keystore goes up, it takes every shred another agent recorded:
        // an upload must never bring a shredded key back. What it took is sealed again.
        let shredded = keys::shredded_in_store(&self.master, &*self.store).await?;
        if self.adopt_shreds(&shredded, None)? {
            match self.keystore().snapshot_needed(&*self.store) {
                Some(p) => pending = p,
                None => return Ok(()),
            }
        }
        let key = pending.upload(&*self.store).await?;
        self.key_event("keystore_snapshot", None, Some(&key))?;
        Ok(())
    }

    /// Shred here every key of `tenants` (shredded by another agent, as `snapshot` or some
    /// snapshot records) that this keystore still holds; returns whether it shredded one.
    fn adopt_shreds(&self, tenants: &[String], snapshot: Option<&str>) -> Result<bool> {
        let mut adopted = false;
        for t in tenants {
            let tenant = TenantId::parse(t)?;
            if self.holds_key(&tenant) {
                self.keystore().shred(&tenant)?;
                self.key_event("key_shred_adopted", Some(&tenant), snapshot)?;
                adopted = true;
            }
        }
        Ok(adopted)
    }

    /// The tenants of the source, or the one asked for, validated.
    pub fn tenants(&self, one: Option<&str>, all: bool) -> Result<(Vec<TenantId>, Vec<String>)> {
        match (one, all) {
            (Some(t), false) => Ok((vec![TenantId::parse(t)?], vec![])),
            (None, true) => {
                let crate::config::SourceConfig::Sqlite { root, .. } = &self.config.source;
                Ok(crate::source::list_tenants(root)?)
            }
            _ => Err(Error::Usage("give either --tenant ID or --all".into())),
        }
    }

    /// The tenant asked for, or (`None`) every tenant with a repository in the store: those with
    /// a key, i.e. backed up at least once. For the verbs that work on the store, not the source.
    pub fn repository_tenants(&self, one: Option<&str>) -> Result<Vec<TenantId>> {
        match one {
            Some(t) => Ok(vec![TenantId::parse(t)?]),
            None => Ok(self.keystore_tenants().iter().map(|t| TenantId::parse(t)).collect::<Result<_, _>>()?),
        }
    }

    /// The tenants that have a key, i.e. that were backed up at least once.
    pub fn keystore_tenants(&self) -> Vec<String> {
        self.keystore().tenants().map(String::from).collect()
    }

    /// The tenant's scratch folder (`<state>/tmp/<tenant>/`): every temporary file a job of
    /// the tenant makes goes there, so that a confirmed deletion can check that none is left.
    pub fn scratch(&self, tenant: &TenantId) -> PathBuf {
        self.config.state.dir.join("tmp").join(tenant.as_str())
    }

    pub fn tenant_dir(&self, tenant: &TenantId) -> Result<PathBuf> {
        let crate::config::SourceConfig::Sqlite { root, .. } = &self.config.source;
        Ok(crate::source::tenant_dir(root, tenant)?)
    }
}
