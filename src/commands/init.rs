//! `init`: create the store marker and the keystore, or recover the keystore from the store.

use std::path::Path;

use bytes::Bytes;

use super::{open_store, Result};
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
}

pub async fn init(config: &Config, generate_master_key: Option<&Path>) -> Result<InitReport> {
    let master = match generate_master_key {
        Some(path) => MasterKey::generate(path)?,
        None => MasterKey::load(config.keys.master_key_file.as_deref())?,
    };
    let store = open_store(&config.store, true).await?;
    let marker = Marker {
        format: STORE_FORMAT,
        created: crate::now_rfc3339(),
        tool: format!("reversa {}", env!("CARGO_PKG_VERSION")),
    };
    let store_created = store
        .create_if_absent(MARKER_KEY, Bytes::from(serde_json::to_vec_pretty(&marker).expect("marker serializes")))
        .await?;
    if !store_created {
        repository::check_marker(&*store).await?;
    }
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
    })
}
