//! Test helpers: a throwaway agent (source, store, state, key, config) driven through the real
//! binary, as an operator would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reversa::seed::{seed_tenant, Scale};

pub const SMALL: Scale = Scale { rows: 300, file_bytes: 2 << 20, incompressible: 0.7 };

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success:\n{}", self.all());
        self
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Every file under `dir`, however deep (none when it does not exist): what a run left in a
/// scratch folder (the tenants' own folders in it may stay, empty).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                _ => out.push(e.path()),
            }
        }
    }
    out
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_reversa")
}

impl Env {
    /// An agent with a `dir` store, initialized, with no tenants yet.
    pub fn new() -> Env {
        Env::with_store("[store]\nkind = \"dir\"\npath = \"store\"\n")
    }

    /// An agent with the given `[store]` section, initialized.
    pub fn with_store(store_section: &str) -> Env {
        let env = Env::uninitialized(store_section);
        env.run(&["init", "--generate-master-key", env.path("master.key").to_str().unwrap()]).ok();
        env
    }

    /// An agent with the given `[store]` section and its configuration file, not initialized.
    pub fn uninitialized(store_section: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("source")).unwrap();
        let config = dir.path().join("reversa.toml");
        std::fs::write(
            &config,
            format!(
                "[source]\nkind = \"sqlite\"\nroot = \"source\"\n\n{store_section}\n[keys]\nmaster_key_file = \"master.key\"\n\n[state]\ndir = \"state\"\n"
            ),
        )
        .unwrap();
        Env { dir, config }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn tenant_dir(&self, tenant: &str) -> PathBuf {
        self.path("source").join(tenant)
    }

    pub fn seed(&self, tenant: &str, scale: Scale, seed: u64) {
        seed_tenant(&self.path("source"), tenant, scale, seed).unwrap();
    }

    /// The binary with this agent's configuration. `restore` and `export` give the tenant's
    /// data to someone, so the disclosure register needs a recipient: one is added when the
    /// arguments name none (the tests of that rule use [`Env::cmd_exact`]).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.cmd_exact(args);
        if matches!(args.first(), Some(&"restore" | &"export")) && !args.contains(&"--recipient") {
            c.args(["--recipient", "test operator", "--recipient-kind", "provider"]);
        }
        c
    }

    /// The binary with this agent's configuration and exactly `args`.
    pub fn cmd_exact(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config").arg(&self.config).args(args).env_remove("REVERSA_MASTER_KEY").env_remove("REVERSA_ACTOR");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.cmd(args).output().expect("reversa runs").into()
    }

    pub fn run_exact(&self, args: &[&str]) -> Run {
        self.cmd_exact(args).output().expect("reversa runs").into()
    }

    /// `backup --json` of one tenant, returning its manifest.
    pub fn backup(&self, tenant: &str) -> serde_json::Value {
        let r = self.run(&["backup", "--tenant", tenant, "--json"]);
        assert!(r.code == 0 || r.code == 3, "backup failed:\n{}", r.all());
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        v[0].clone()
    }

    /// Restore the newest generation into a fresh folder and return it.
    pub fn restore(&self, tenant: &str, generation: Option<&str>) -> PathBuf {
        let to = self.path(&format!("restored-{tenant}-{}", rand::random::<u32>()));
        let mut args = vec!["restore", "--tenant", tenant, "--to", to.to_str().unwrap()];
        if let Some(g) = generation {
            args.extend(["--generation", g]);
        }
        self.run(&args).ok();
        to
    }

    /// Every object under a store prefix of the `dir` store.
    pub fn store_files(&self, under: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.path("store").join(under)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        out
    }
}

/// Differences between a source tenant folder and a restored one (empty when identical).
pub fn differences(a: &Path, b: &Path) -> Vec<String> {
    reversa::commands::demo::compare_tenant(a, b).unwrap()
}

/// Where one blob of a generation lies in the `dir` store: its pack file and its sealed range.
pub struct BlobPlace {
    pub pack: PathBuf,
    pub offset: u64,
    pub length: u32,
}

impl BlobPlace {
    /// Flip one byte in the middle of the blob's sealed bytes: damage that reading this blob
    /// must detect, whatever else the pack holds.
    pub fn flip(&self) {
        let mut b = std::fs::read(&self.pack).unwrap();
        b[(self.offset + self.length as u64 / 2) as usize] ^= 0x10;
        std::fs::write(&self.pack, b).unwrap();
    }
}

impl Env {
    /// The tenant's repository through the library, as the verbs open it, with the runtime to
    /// drive it and the state folder's `tmp/`.
    pub fn repository(&self, tenant: &str) -> (tokio::runtime::Runtime, reversa::repository::Repository, PathBuf) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let cfg = reversa::config::Config::load(&self.config).unwrap();
        let tmp = cfg.state.dir.join("tmp");
        let repo = rt.block_on(async {
            let agent = reversa::commands::Agent::open(cfg).await.unwrap();
            agent.repository(&reversa::tenant::TenantId::parse(tenant).unwrap(), false).await.unwrap()
        });
        (rt, repo, tmp)
    }

    /// The place of the first blob that `pick` chooses from the newest generation's catalog,
    /// found through the index (library calls, the same ones the verbs make).
    pub fn locate_blob(&self, tenant: &str, pick: impl Fn(&reversa::generation::Entry) -> Option<String>) -> BlobPlace {
        let (rt, repo, tmp) = self.repository(tenant);
        rt.block_on(async {
            let index = repo.load_index().await.unwrap();
            let m = repo.resolve_generation(None).await.unwrap();
            std::fs::create_dir_all(&tmp).unwrap();
            let catalog = repo.fetch_catalog(&index, &m, &tmp).await.unwrap();
            let blob = catalog.entries().unwrap().map(|e| e.unwrap()).find_map(|e| pick(&e)).expect("a blob to pick");
            let id = reversa::repository::parse_blob_id(&blob).unwrap();
            let loc = index.blobs[&id];
            let key = repo.pack_key(&index.packs[loc.pack as usize]);
            BlobPlace { pack: self.path("store").join(key), offset: loc.offset, length: loc.length }
        })
    }
}

/// `locate_blob` picks: the first blob of a file (restore reads it), and the first blob of a
/// keyed table's digest map (restore never reads it; backup and check do).
pub fn first_file_blob(e: &reversa::generation::Entry) -> Option<String> {
    match e {
        reversa::generation::Entry::File { blobs, .. } => blobs.first().cloned(),
        _ => None,
    }
}

pub fn first_digest_map_blob(e: &reversa::generation::Entry) -> Option<String> {
    match e {
        reversa::generation::Entry::Table { keyed: Some(k), .. } => k.digests.first().cloned(),
        _ => None,
    }
}

/// Run one job of `task` on `tenant` in process, as the CLI does.
pub async fn run_job(
    agent: &reversa::commands::Agent,
    task: reversa::jobs::Task,
    tenant: &reversa::tenant::TenantId,
) -> Result<reversa::jobs::Report, reversa::commands::Error> {
    let job = reversa::jobs::Job::new(task, Some(tenant.clone()), "test");
    reversa::jobs::run(agent, &job, &tokio_util::sync::CancellationToken::new(), &reversa::progress::Silent).await
}

/// What a [`FaultyPuts`] store does with one put.
pub enum PutAction {
    Pass,
    /// Wait, then put.
    Delay(std::time::Duration),
    /// Fail with this cause.
    Fail(&'static str),
}

/// A store whose puts a test decides, key by key (a full disk, an outage, a slow link); every
/// other call goes to `inner`.
pub struct FaultyPuts {
    pub inner: std::sync::Arc<dyn reversa::store::Store>,
    pub on_put: Box<dyn Fn(&str) -> PutAction + Send + Sync>,
}

#[async_trait::async_trait]
impl reversa::store::Store for FaultyPuts {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn conditional_create(&self) -> bool {
        self.inner.conditional_create()
    }
    async fn put(&self, key: &str, body: reversa::store::Body) -> Result<(), reversa::store::StoreError> {
        match (self.on_put)(key) {
            PutAction::Pass => {}
            PutAction::Delay(d) => tokio::time::sleep(d).await,
            PutAction::Fail(cause) => {
                let (store, op, key, source) = (self.describe(), "put", key.into(), cause.into());
                return Err(reversa::store::StoreError::Failed { store, op, key, source });
            }
        }
        self.inner.put(key, body).await
    }
    async fn create_if_absent(&self, key: &str, data: bytes::Bytes) -> Result<bool, reversa::store::StoreError> {
        self.inner.create_if_absent(key, data).await
    }
    async fn get(&self, key: &str) -> Result<bytes::Bytes, reversa::store::StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, r: std::ops::Range<u64>) -> Result<bytes::Bytes, reversa::store::StoreError> {
        self.inner.get_range(key, r).await
    }
    async fn head(&self, key: &str) -> Result<Option<reversa::store::ObjectInfo>, reversa::store::StoreError> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<reversa::store::ObjectInfo>, reversa::store::StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), reversa::store::StoreError> {
        self.inner.delete(key).await
    }
}
