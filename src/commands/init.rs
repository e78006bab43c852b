//! `init`: create the store marker and the keystore, or recover the keystore from the store.

use std::path::Path;

use bytes::Bytes;

use super::{open_store_for_init, Result};
use crate::audit::AuditLog;
use crate::config::Config;
use crate::jobs::{self, Job, Report, Task};
use crate::keys::{Keystore, MasterKey};
use crate::repository::{self, Marker, MARKER_KEY, STORE_FORMAT};

#[derive(Debug, serde::Serialize)]
pub struct InitReport {
    pub store: String,
    pub store_created: bool,
    /// "created", "existing" or "recovered from <snapshot>".
    pub keystore: String,
    /// When the keystore was recovered from the store: every snapshot tried and where each key
    /// came from.
    pub recovery: Option<crate::keys::Recovery>,
    /// Tenants whose repository is in the store but whose key no snapshot holds: their data
    /// cannot be read.
    pub unreadable: Vec<String>,
    pub master_key_file: Option<String>,
    /// What the store recorded about itself (S3: conditional writes, bucket location).
    pub facts: crate::store::StoreFacts,
}

/// `reversa init` on behalf of `who`, as a job of the state folder's audit log (made here
/// with the agent key, if this is the folder's first run), whose segment it then seals and
/// uploads. With `create_bucket`, an S3 bucket that does not exist is created in the configured
/// region (without it, `init` stops and says how to create it).
pub async fn init(
    config: &Config,
    generate_master_key: Option<&Path>,
    create_bucket: bool,
    who: &crate::jobs::Who,
) -> Result<InitReport> {
    // The key first: a bad key file is refused before anything (the audit log too) is written.
    let master = master_key(config, generate_master_key)?;
    let (log, _) = AuditLog::open(&config.state.dir)?;
    let task = Task::Init { create_bucket, generate_master_key: generate_master_key.is_some() };
    let job = Job::by(task, None, who);
    let mut opened = None;
    let result = jobs::audited(&log, &job, async {
        let (report, store) = init_store(config, &master, generate_master_key, create_bucket).await?;
        opened = Some(store);
        Ok(Report::Init(report))
    })
    .await;
    if let Some(store) = opened {
        let sealed = log.seal_and_upload(&*store, &master).await?;
        for (segment, why) in &sealed.local_only {
            tracing::warn!(segment = %segment, "audit segment not uploaded, the next run retries: {why}");
        }
    }
    match result? {
        Report::Init(r) => Ok(r),
        _ => unreachable!("init reports an init"),
    }
}

async fn init_store(
    config: &Config,
    master: &MasterKey,
    generate_master_key: Option<&Path>,
    create_bucket: bool,
) -> Result<(InitReport, std::sync::Arc<dyn crate::store::Store>)> {
    let store = open_store_for_init(&config.store, create_bucket).await?;
    if let Some(path) = generate_master_key {
        // A new key is written only once the store is reachable, so a failed init (missing
        // bucket, wrong credentials) can be run again with the same command; and never for a
        // store whose keystore snapshots another master key made, which it could not open.
        if !Keystore::path_in(&config.state.dir).exists() && !store.list(repository::layout::KEYSTORE).await?.is_empty()
        {
            return Err(super::Error::Usage(format!(
                "{} already holds keystore snapshots, made with another master key, which a new key cannot \
                 open; give that master key in [keys] master_key_file (or REVERSA_MASTER_KEY) instead of \
                 --generate-master-key",
                store.describe()
            )));
        }
        master.save_new(path)?;
    }
    let marker = Marker {
        format: STORE_FORMAT,
        created: crate::now_rfc3339(),
        tool: format!("reversa {}", env!("CARGO_PKG_VERSION")),
        facts: store.facts(),
    };
    let store_created = store
        .create_if_absent(MARKER_KEY, Bytes::from(serde_json::to_vec_pretty(&marker).expect("marker serializes")))
        .await?;
    // An existing marker keeps the facts it recorded: every agent must keep using the same.
    let facts = if store_created { marker.facts } else { repository::check_marker(&*store).await?.facts };
    let (keystore, recovery, unreadable) = open_keystore(&config.state.dir, master.clone(), &*store).await?;
    let report = InitReport {
        store: store.describe(),
        store_created,
        keystore,
        recovery,
        unreadable,
        master_key_file: generate_master_key.map(|p| p.display().to_string()),
        facts,
    };
    Ok((report, store))
}

/// A new master key, or the configured one.
fn master_key(config: &Config, generate: Option<&Path>) -> Result<MasterKey> {
    match generate {
        Some(path) if path.exists() => Err(crate::keys::KeyError::KeyFileExists { path: path.into() }.into()),
        Some(_) => Ok(MasterKey::generate()),
        None => Ok(MasterKey::load(&config.keys)?),
    }
}

/// The local keystore: the existing one, recovered from the store's snapshots, or a new one.
/// Returns how it was had, the recovery (if any) and the tenants whose key it lacks.
async fn open_keystore(
    state: &Path,
    master: MasterKey,
    store: &dyn crate::store::Store,
) -> Result<(String, Option<crate::keys::Recovery>, Vec<String>)> {
    if Keystore::path_in(state).exists() {
        let ks = Keystore::open(state, master)?;
        // This store may never have had a snapshot of it (a new store, same state folder).
        let how = match ks.snapshot_needed(store) {
            Some(p) => {
                p.upload(store).await?;
                "existing (snapshot uploaded to the store)"
            }
            None => "existing",
        };
        return Ok((how.to_string(), None, Vec::new()));
    }
    let (ks, recovery) = match Keystore::recover(state, master.clone(), store).await? {
        Some((ks, r)) => (ks, Some(r)),
        None => {
            let ks = Keystore::new(state, master);
            ks.save()?;
            (ks, None)
        }
    };
    // A recovered keystore becomes the store's newest snapshot, so the next host recovers from
    // one snapshot even if the newest one here did not open.
    if let Some(p) = ks.snapshot_needed(store) {
        p.upload(store).await?;
    }
    let unreadable = tenants_without_key(store, &ks).await?;
    let how = match &recovery {
        Some(r) => format!(
            "recovered from the store's keystore snapshots ({} of {} opened, {} keys)",
            r.snapshots.iter().filter(|s| s.damage.is_none()).count(),
            r.snapshots.len(),
            r.keys.len()
        ),
        None => "created".to_string(),
    };
    Ok((how, recovery, unreadable))
}

/// The tenants with objects under `tenants/` in the store that the keystore has no entry for.
async fn tenants_without_key(store: &dyn crate::store::Store, ks: &Keystore) -> Result<Vec<String>> {
    let known: std::collections::HashSet<&str> = ks.tenants().collect();
    let in_store = store.list_folders(repository::layout::TENANTS).await?;
    Ok(in_store.into_iter().filter(|t| !known.contains(t.as_str())).collect())
}
