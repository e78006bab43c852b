//! The tenant lock keeps two writers (two agents, or a backup and a prune) off one tenant.
//!
//! Where the store makes `create_if_absent` atomic, the lock is the single object
//! `tenants/<t>/locks/exclusive`, created with a conditional write. Where it does not (some S3
//! servers ignore If-None-Match), each holder writes a unique `locks/<time-sortable id>`, lists the
//! folder, and the oldest live lock wins; the losers delete theirs (the protocol restic uses).
//!
//! A lock is refreshed every [`REFRESH`] while it is held and is stale once it has not been
//! refreshed for [`STALE_AFTER`], or at once when it names a process on this host that is gone
//! (a backup killed with SIGKILL). Stale locks are removed by the next taker.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::{Body, Store, StoreError};
use crate::tenant::TenantId;

pub const REFRESH: Duration = Duration::from_secs(5 * 60);
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    pub purpose: String,
    pub created: String,
    /// Unix seconds of the last refresh.
    pub refreshed: i64,
    /// Random, so a holder can tell its own lock from a successor's.
    pub nonce: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "tenant {tenant} is locked by {} (pid {}) on host {} since {}; wait for it to finish, or \
         if that process is gone remove the lock object {key} (it expires by itself {} minutes \
         after its last refresh)",
        info.purpose, info.pid, info.host, info.created, STALE_AFTER.as_secs() / 60
    )]
    Held { tenant: String, key: String, info: LockInfo },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl LockInfo {
    fn is_stale(&self) -> bool {
        if now() - self.refreshed > STALE_AFTER.as_secs() as i64 {
            return true;
        }
        // A lock of this host whose process is gone cannot be refreshed any more.
        self.host == hostname() && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// A held tenant lock. You MUST call [`TenantLock::release`]; dropping it only stops the refresh,
/// and the lock then expires after [`STALE_AFTER`] (or at once, once this process is gone).
pub struct TenantLock {
    store: Arc<dyn Store>,
    key: String,
    refresher: tokio::task::JoinHandle<()>,
}

impl TenantLock {
    pub async fn acquire(store: Arc<dyn Store>, tenant: &TenantId, purpose: &str) -> Result<TenantLock, LockError> {
        let dir = format!("tenants/{tenant}/locks/");
        let mut nonce = [0u8; 16];
        rand::fill(&mut nonce);
        let info = LockInfo {
            host: hostname(),
            pid: std::process::id(),
            purpose: purpose.to_string(),
            created: crate::now_rfc3339(),
            refreshed: now(),
            nonce: hex::encode(nonce),
        };
        let body = || Bytes::from(serde_json::to_vec(&info).expect("lock info serializes"));
        let key = if store.conditional_create() {
            let key = format!("{dir}exclusive");
            // Two rounds: the second after removing a stale lock.
            let mut taken = false;
            for _ in 0..2 {
                if store.create_if_absent(&key, body()).await? {
                    taken = true;
                    break;
                }
                let held = read(&*store, &key).await?;
                match held {
                    Some(h) if !h.is_stale() => {
                        return Err(LockError::Held { tenant: tenant.to_string(), key, info: h })
                    }
                    Some(h) => {
                        // Re-read just before deleting, so a lock renewed meanwhile is kept.
                        if read(&*store, &key).await?.as_ref() == Some(&h) {
                            tracing::warn!(tenant = %tenant, lock = %key, holder = %h.host, pid = h.pid, "removing a stale lock");
                            store.delete(&key).await?;
                        }
                    }
                    None => {}
                }
            }
            if !taken {
                let h = read(&*store, &key).await?.unwrap_or(info.clone());
                return Err(LockError::Held { tenant: tenant.to_string(), key, info: h });
            }
            key
        } else {
            let key = format!("{dir}{}", crate::time_sortable_id());
            store.put(&key, Body::Bytes(body())).await?;
            let mut oldest_live = None;
            for obj in store.list(&dir).await? {
                match read(&*store, &obj.key).await? {
                    Some(h) if h.is_stale() => store.delete(&obj.key).await?,
                    Some(h) => {
                        oldest_live = Some((obj.key, h));
                        break;
                    }
                    None => {}
                }
            }
            match oldest_live {
                Some((k, _)) if k == key => key,
                Some((k, h)) => {
                    store.delete(&key).await?;
                    return Err(LockError::Held { tenant: tenant.to_string(), key: k, info: h });
                }
                None => key,
            }
        };
        let refresher = {
            let store = store.clone();
            let key = key.clone();
            let mut info = info.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(REFRESH).await;
                    info.refreshed = now();
                    let body = Bytes::from(serde_json::to_vec(&info).expect("lock info serializes"));
                    if let Err(e) = store.put(&key, Body::Bytes(body)).await {
                        tracing::warn!(lock = %key, error = %e, "could not refresh the tenant lock");
                    }
                }
            })
        };
        Ok(TenantLock { store, key, refresher })
    }

    pub async fn release(self) -> Result<(), StoreError> {
        self.refresher.abort();
        self.store.delete(&self.key).await
    }
}

impl Drop for TenantLock {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

async fn read(store: &dyn Store, key: &str) -> Result<Option<LockInfo>, StoreError> {
    match store.get(key).await {
        // reversa writes lock objects whole, so an unreadable one is not from a live reversa:
        // treat it as stale.
        Ok(b) => Ok(Some(serde_json::from_slice(&b).unwrap_or(LockInfo {
            host: "unknown".into(),
            pid: 0,
            purpose: "unknown (unreadable lock object)".into(),
            created: "unknown".into(),
            refreshed: 0,
            nonce: String::new(),
        }))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}
