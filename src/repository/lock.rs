//! The tenant lock keeps two writers (two agents, or a backup and a prune) off one tenant.
//!
//! Where the store makes `create_if_absent` atomic, the lock is the single object
//! `tenants/<t>/locks/exclusive`, created with a conditional write. Where it does not (some S3
//! servers ignore If-None-Match), each taker writes a unique `locks/<time-sortable id>`, lists the
//! folder, and takes the lock only if no other live lock is there; otherwise it deletes its own
//! and backs off (the protocol restic uses).
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
    /// The kernel's boot id: with the host name, tells whether `pid` can be checked here.
    #[serde(default)]
    pub boot: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "tenant {tenant} is locked by {} (pid {}) on host {} since {} ({key}); wait for it to finish. \
         A lock whose process is gone is stale, at once on its own host and {} minutes after its \
         last refresh elsewhere; the next run (or `reversa unlock --tenant {tenant}`) then removes it",
        info.purpose, info.pid, info.host, info.created, STALE_AFTER.as_secs() / 60
    )]
    Held { tenant: String, key: String, info: Box<LockInfo> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
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
        // A lock of this host (same name and same boot: two machines may share a name) whose
        // process is gone cannot be refreshed any more.
        let here = self.host == hostname() && !self.boot.is_empty() && self.boot == boot_id();
        here && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
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
            boot: boot_id(),
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
                        return Err(LockError::Held { tenant: tenant.to_string(), key, info: Box::new(h) })
                    }
                    // Re-read just before deleting, so a lock renewed meanwhile is kept.
                    Some(h) if read(&*store, &key).await?.as_ref() == Some(&h) => {
                        tracing::warn!(tenant = %tenant, lock = %key, holder = %h.host, pid = h.pid, "removing a stale lock");
                        store.delete(&key).await?;
                    }
                    Some(_) | None => {}
                }
            }
            if !taken {
                let h = read(&*store, &key).await?.unwrap_or(info.clone());
                return Err(LockError::Held { tenant: tenant.to_string(), key, info: Box::new(h) });
            }
            key
        } else {
            // Without atomic creates: write a unique lock object, then list the folder. Any other
            // live lock means someone holds the lock or is taking it at this moment, so back off.
            // Each taker lists after its own write, so of two racing takers at least one sees the
            // other: two never both win. (Winning only when one's own lock sorts first is not
            // enough: ids made in the same second sort by their random part, and a taker that
            // listed before the other's write saw only its own lock.) The taker whose lock is
            // older than the one it saw retries after a random pause, so one of them gets it.
            let mut attempt = 0;
            loop {
                attempt += 1;
                let key = format!("{dir}{}", crate::time_sortable_id());
                store.put(&key, Body::Bytes(body())).await?;
                let mut other = None;
                for obj in store.list(&dir).await? {
                    if obj.key == key {
                        continue;
                    }
                    match read(&*store, &obj.key).await? {
                        Some(h) if h.is_stale() => store.delete(&obj.key).await?,
                        Some(h) => {
                            other = Some((obj.key, h));
                            break;
                        }
                        None => {}
                    }
                }
                match other {
                    None => break key,
                    Some((k, h)) => {
                        store.delete(&key).await?;
                        if k > key && attempt < 3 {
                            let pause = 100 + rand::random::<u64>() % 500;
                            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                            continue;
                        }
                        return Err(LockError::Held { tenant: tenant.to_string(), key: k, info: Box::new(h) });
                    }
                }
            }
        };
        let refresher = {
            let store = store.clone();
            let key = key.clone();
            let mut info = info.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(REFRESH).await;
                    // Never overwrite a lock someone else holds now (ours was removed as stale).
                    match read(&*store, &key).await {
                        Ok(Some(h)) if h.nonce != info.nonce => {
                            tracing::error!(lock = %key, holder = %h.host, pid = h.pid, "the tenant lock was taken over; no longer refreshing it");
                            return;
                        }
                        _ => {}
                    }
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

/// `reversa unlock`: remove the tenant's stale locks (a killed process's, or one no longer
/// refreshed), each re-read just before it is deleted; a live one is refused and left. Returns
/// the locks removed.
pub async fn remove_stale(store: &dyn Store, tenant: &TenantId) -> Result<Vec<(String, LockInfo)>, LockError> {
    let dir = format!("tenants/{tenant}/locks/");
    let mut removed = Vec::new();
    for obj in store.list(&dir).await? {
        let Some(h) = read(store, &obj.key).await? else { continue };
        if !h.is_stale() {
            return Err(LockError::Held { tenant: tenant.to_string(), key: obj.key, info: Box::new(h) });
        }
        if read(store, &obj.key).await?.as_ref() == Some(&h) {
            store.delete(&obj.key).await?;
            removed.push((obj.key, h));
        }
    }
    Ok(removed)
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
            boot: String::new(),
        }))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}
