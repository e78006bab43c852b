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
        let env = Env { dir, config };
        env.run(&["init", "--generate-master-key", env.path("master.key").to_str().unwrap()]).ok();
        env
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

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config").arg(&self.config).args(args).env_remove("REVERSA_MASTER_KEY");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.cmd(args).output().expect("reversa runs").into()
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
