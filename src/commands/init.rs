//! `init`: create the store marker and the keystore, or recover the keystore from the store.

use std::path::Path;

use bytes::Bytes;

use super::{open_store_with, Result};
use crate::config::Config;
use crate::keys::{Keystore, MasterKey};
use crate::repository::{self, Marker, MARKER_KEY, STORE_FORMAT};

#[derive(Debug, serde::Serialize)]
pub struct InitReport {
    pub store: String,
    pub store_created: bool,
    /// "created", "existing" or "recovered from <snapshot>".
    pub keystore: String,
    pub master_key_file: Option<String>,
    /// What the store recorded about itself (S3: conditional writes, bucket location).
    pub facts: crate::store::StoreFacts,
}

pub async fn init(config: &Config, generate_master_key: Option<&Path>) -> Result<InitReport> {
    init_with(config, generate_master_key, false).await
}

/// `init`; with `create_bucket`, an S3 bucket that does not exist is created in the configured
/// region (without it, `init` stops and says how to create it).
pub async fn init_with(config: &Config, generate_master_key: Option<&Path>, create_bucket: bool) -> Result<InitReport> {
    let master = match generate_master_key {
        Some(path) => MasterKey::generate(path)?,
        None => MasterKey::load(config.keys.master_key_file.as_deref())?,
    };
    let store = open_store_with(&config.store, true, create_bucket).await?;
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
    let state = &config.state.dir;
    let keystore = if Keystore::path_in(state).exists() {
        Keystore::open(state, master)?;
        "existing".to_string()
    } else {
        match Keystore::recover(state, master.clone(), &*store).await? {
            Some(_) => "recovered from the store's newest keystore snapshot".to_string(),
            None => {
                let ks = Keystore::new(state, master);
                ks.save()?;
                let (id, sealed) = ks.seal_snapshot();
                crate::keys::upload_snapshot(&*store, &id, sealed).await?;
                "created".to_string()
            }
        }
    };
    Ok(InitReport {
        store: store.describe(),
        store_created,
        keystore,
        master_key_file: generate_master_key.map(|p| p.display().to_string()),
        facts,
    })
}
