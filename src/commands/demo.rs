//! `demo`: the whole main job on the embedded default, with no configuration and no server.
//! Seeds three sample tenants under `./reversa-demo/`, initializes a `dir` store, backs every
//! tenant up, restores one into scratch space and verifies it against the source.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{backup, init, restore, Agent, Error, Result, AGENT_ACTOR};
use crate::audit::RecipientKind;
use crate::config::{Config, KeysConfig, SourceConfig, StateConfig, StoreConfig};
use crate::jobs::{self, BackupOptions, Job, Recipient, Report, Task};
use crate::progress::Progress;
use crate::seed::{seed_tenant, Scale};
use crate::tenant::TenantId;

pub const TENANTS: [&str; 3] = ["comune-di-pisa", "asl-roma-3", "scuola-leopardi"];

#[derive(Debug, serde::Serialize)]
pub struct DemoReport {
    pub base: PathBuf,
    pub config_file: PathBuf,
    pub backups: Vec<backup::BackupReport>,
    pub restored: restore::RestoreReport,
    pub restored_to: PathBuf,
    pub source_bytes: u64,
    pub store_bytes: u64,
    pub duration_ms: u64,
}

/// The demo under `base`; `env_key` is a master key the environment gave, used instead of the
/// demo's own key file.
pub async fn demo(base: &Path, env_key: Option<crate::keys::KeyText>, progress: &dyn Progress) -> Result<DemoReport> {
    let started = Instant::now();
    let base =
        std::path::absolute(base).map_err(|cause| Error::Io { what: "cannot resolve", path: base.into(), cause })?;
    let source = base.join("source");
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |cause| Error::Io { what, path, cause }
    };
    for (i, t) in TENANTS.iter().enumerate() {
        if !source.join(t).exists() {
            seed_tenant(&source, t, Scale::DEMO, i as u64 + 1).map_err(io("cannot write sample data to", &source))?;
        }
    }
    let key_file = base.join("master.key");
    let config = Config {
        source: SourceConfig::Sqlite { root: source.clone(), busy_timeout_secs: 30 },
        store: StoreConfig::Dir { path: base.join("store") },
        keys: KeysConfig { master_key_file: Some(key_file.clone()), master_key_env: env_key.clone() },
        state: StateConfig { dir: base.join("state") },
        exports: Default::default(),
        backup: Default::default(),
        retention: Default::default(),
        prune: Default::default(),
        lock: Default::default(),
        lifecycle: Default::default(),
        notices: Default::default(),
        drill: Default::default(),
        api: Default::default(),
        file_sha256: String::new(),
    };
    let config_file = base.join("reversa.toml");
    let text = format!(
        "# Written by `reversa demo`. Try: reversa --config {0} generations --tenant {1}\n\
         [source]\nkind = \"sqlite\"\nroot = \"source\"\n\n[store]\nkind = \"dir\"\npath = \"store\"\n\n\
         [keys]\nmaster_key_file = \"master.key\"\n\n[state]\ndir = \"state\"\n",
        config_file.display(),
        TENANTS[0]
    );
    std::fs::write(&config_file, text).map_err(io("cannot write", &config_file))?;
    // The demo's own key file; an existing one (from an earlier run) is reused.
    let generate = (!key_file.exists() && env_key.is_none()).then_some(key_file.as_path());
    let who = crate::jobs::Who { actor: AGENT_ACTOR.into(), reason: None, ticket: None };
    init::init(&config, generate, false, &who).await?;
    let agent = Agent::open(config).await?;
    let result = backup_and_restore(&agent, &restored_to_of(&base), progress).await;
    agent.seal_audit().await?;
    let (backups, restored) = result?;
    let restored_to = restored_to_of(&base);
    let differences = compare_tenant(&source.join(TENANTS[0]), &restored_to)?;
    if !differences.is_empty() {
        return Err(Error::Failed(format!("the restored tenant differs from the source: {}", differences.join("; "))));
    }
    Ok(DemoReport {
        source_bytes: du(&source),
        store_bytes: du(&base.join("store")),
        base,
        config_file,
        backups,
        restored,
        restored_to,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

fn restored_to_of(base: &Path) -> PathBuf {
    base.join("restore").join(TENANTS[0])
}

/// Back up every sample tenant, then restore the first, each as a job of the audit log. The
/// restore is the demo's own check, to the provider itself.
async fn backup_and_restore(
    agent: &Agent,
    restored_to: &Path,
    progress: &dyn Progress,
) -> Result<(Vec<backup::BackupReport>, restore::RestoreReport)> {
    let cancel = CancellationToken::new();
    let mut backups = Vec::new();
    for t in TENANTS {
        let job = Job::new(Task::Backup(BackupOptions {}), Some(TenantId::parse(t)?), AGENT_ACTOR);
        match jobs::run(agent, &job, &cancel, progress).await? {
            Report::Backup(r) => backups.push(r),
            _ => unreachable!("a backup reports a backup"),
        }
    }
    let opts = restore::RestoreOptions { generation: None, to: restored_to.into(), force: true, partial: false };
    let mut job = Job::new(Task::Restore(opts), Some(TenantId::parse(TENANTS[0])?), AGENT_ACTOR);
    job.recipient = Some(Recipient {
        name: "reversa demo (the restore that proves the backup)".into(),
        kind: RecipientKind::Provider,
        legal_basis: None,
    });
    match jobs::run(agent, &job, &cancel, progress).await? {
        Report::Restore(r) => Ok((backups, r)),
        _ => unreachable!("a restore reports a restore"),
    }
}

/// Bytes under a folder (files only).
pub fn du(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Compare a tenant folder with a restored one: every table row by row (values and storage
/// classes), every file byte for byte with its mtime, every link. Returns the differences.
pub fn compare_tenant(a: &Path, b: &Path) -> Result<Vec<String>> {
    let mut diffs = Vec::new();
    let db_err = |e: rusqlite::Error| Error::Failed(format!("cannot compare databases: {e}"));
    let da = rusqlite::Connection::open(a.join(crate::source::DATABASE_FILE)).map_err(db_err)?;
    da.execute_batch(&format!(
        "ATTACH DATABASE '{}' AS r",
        b.join(crate::source::DATABASE_FILE).display().to_string().replace('\'', "''")
    ))
    .map_err(db_err)?;
    let schema = |db: &str| -> Result<Vec<(String, String, Option<String>)>> {
        let mut st = da
            .prepare(&format!("SELECT type, name, sql FROM {db}.sqlite_master WHERE name NOT LIKE 'sqlite_autoindex%' ORDER BY type, name"))
            .map_err(db_err)?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(db_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
    };
    let (sa, sb) = (schema("main")?, schema("r")?);
    if sa != sb {
        diffs.push("the schemas differ".into());
    }
    // Shadow tables are the internals of full-text indexes: rebuilt, not copied, so they are
    // compared through their virtual table instead.
    let shadow: Vec<String> = {
        let mut st = da
            .prepare("SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'shadow'")
            .map_err(db_err)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(db_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err)?
    };
    for (kind, name, _) in &sa {
        if kind != "table" || shadow.contains(name) {
            continue;
        }
        let q = crate::source::sqlite::quote(name);
        // EXCEPT compares values with types; both directions and the counts catch duplicates.
        let count = |sql: &str| -> Result<i64> { da.query_row(sql, [], |r| r.get(0)).map_err(db_err) };
        let types = typeof_all(&da, name)?;
        let typed = |db: &str| format!("SELECT *, {types} FROM {db}.{q}");
        let only_a = count(&format!("SELECT count(*) FROM ({} EXCEPT {})", typed("main"), typed("r")))?;
        let only_b = count(&format!("SELECT count(*) FROM ({} EXCEPT {})", typed("r"), typed("main")))?;
        let (na, nb) =
            (count(&format!("SELECT count(*) FROM main.{q}"))?, count(&format!("SELECT count(*) FROM r.{q}"))?);
        if only_a + only_b > 0 || na != nb {
            diffs.push(format!(
                "table {name}: {only_a} rows only in the source, {only_b} only in the restore, {na} vs {nb} rows"
            ));
        }
    }
    for top in crate::source::FILE_FOLDERS {
        compare_tree(&a.join(top), &b.join(top), &mut diffs);
    }
    Ok(diffs)
}

fn typeof_all(db: &rusqlite::Connection, table: &str) -> Result<String> {
    let mut st = db
        .prepare("SELECT name FROM pragma_table_xinfo(?1) WHERE hidden = 0")
        .map_err(|e| Error::Failed(e.to_string()))?;
    let cols: Vec<String> =
        st.query_map([table], |r| r.get(0)).and_then(|r| r.collect()).map_err(|e| Error::Failed(e.to_string()))?;
    let mut parts: Vec<String> = cols.iter().map(|c| format!("typeof({})", crate::source::sqlite::quote(c))).collect();
    if parts.is_empty() {
        parts.push("0".into());
    }
    Ok(parts.join(", "))
}

fn compare_tree(a: &Path, b: &Path, diffs: &mut Vec<String>) {
    use std::os::unix::fs::MetadataExt;
    let (ma, mb) = (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b));
    let (ma, mb) = match (ma, mb) {
        (Err(_), Err(_)) => return,
        (Ok(x), Ok(y)) => (x, y),
        _ => {
            diffs.push(format!("{} exists on one side only", a.display()));
            return;
        }
    };
    if ma.file_type() != mb.file_type() {
        diffs.push(format!("{}: different kinds", a.display()));
    } else if ma.is_dir() {
        let names = |p: &Path| -> Vec<std::ffi::OsString> {
            let mut v: Vec<_> = std::fs::read_dir(p).into_iter().flatten().flatten().map(|e| e.file_name()).collect();
            v.sort();
            v
        };
        let (na, nb) = (names(a), names(b));
        if na != nb {
            diffs.push(format!("{}: different entries", a.display()));
        }
        for n in na {
            compare_tree(&a.join(&n), &b.join(&n), diffs);
        }
    } else if ma.file_type().is_symlink() {
        if std::fs::read_link(a).ok() != std::fs::read_link(b).ok() {
            diffs.push(format!("{}: different link targets", a.display()));
        }
    } else if ma.is_file() {
        if ma.len() != mb.len() || std::fs::read(a).ok() != std::fs::read(b).ok() {
            diffs.push(format!("{}: different content", a.display()));
        } else if (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
            diffs.push(format!("{}: different mtime", a.display()));
        }
    }
}
