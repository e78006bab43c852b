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

use super::layout;
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

/// `[lock]`: how often a held lock is refreshed. Others take a lock for stale 30 minutes after
/// its last refresh, so the refresh must come well within that.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockConfig {
    #[serde(deserialize_with = "crate::units::seconds")]
    pub refresh: Duration,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig { refresh: REFRESH }
    }
}

impl LockConfig {
    pub fn validate(&self) -> Result<(), String> {
        match self.refresh.as_secs() {
            1..=600 => Ok(()),
            _ => {
                Err("must be between 1 second and 10 minutes (a lock is stale 30 minutes after its last refresh)"
                    .into())
            }
        }
    }
}

/// A held tenant lock, refreshed in the background while it lives. When a refresh finds the
/// lock taken over or removed, or cannot refresh it past [`lost_after`], the lock is lost: the
/// token given to [`TenantLock::acquire`] is cancelled, so the job holding it stops instead
/// of writing on without it. [`TenantLock::release`] removes it; dropping it unreleased (a
/// cancelled or panicked job) removes it too, in a background task, as an S3 upload guard
/// aborts its upload. Neither removes a lock that is no longer this holder's.
pub struct TenantLock {
    store: Arc<dyn Store>,
    key: String,
    nonce: String,
    /// Taken (and awaited) before the lock is removed: a refresh still writing would recreate it.
    refresher: Option<tokio::task::JoinHandle<()>>,
    lost: Arc<std::sync::OnceLock<String>>,
    released: bool,
}

/// A lock not refreshed for three refresh periods, and at most half the time after which
/// others take it as stale, is lost: its holder stops before another agent can take it.
pub fn lost_after(refresh: Duration) -> Duration {
    (3 * refresh).min(STALE_AFTER / 2)
}

impl TenantLock {
    /// Take the tenant lock for `purpose`, refreshed every `refresh`; `on_lost` is cancelled if
    /// the lock is lost while held.
    pub async fn acquire(
        store: Arc<dyn Store>,
        tenant: &TenantId,
        purpose: &str,
        refresh: Duration,
        on_lost: tokio_util::sync::CancellationToken,
    ) -> Result<TenantLock, LockError> {
        let dir = layout::locks(tenant);
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
            let key = layout::exclusive_lock(tenant);
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
                let key = layout::lock(tenant, &crate::time_sortable_id());
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
        let lost = Arc::new(std::sync::OnceLock::new());
        let refresher =
            tokio::spawn(refresh_loop(store.clone(), key.clone(), info.clone(), refresh, lost.clone(), on_lost));
        Ok(TenantLock { store, key, nonce: info.nonce, refresher: Some(refresher), lost, released: false })
    }

    /// Why the lock was lost, if it was.
    pub fn lost(&self) -> Option<&str> {
        self.lost.get().map(String::as_str)
    }

    /// Remove the lock, unless it is no longer this holder's.
    pub async fn release(mut self) -> Result<(), StoreError> {
        self.released = true;
        stop(self.refresher.take()).await;
        remove_if_ours(&*self.store, &self.key, &self.nonce).await
    }
}

/// Stop the refresher and wait until it has: a refresh already writing finishes first, so the
/// removal that follows is the last write to the lock.
async fn stop(refresher: Option<tokio::task::JoinHandle<()>>) {
    if let Some(r) = refresher {
        r.abort();
        let _ = r.await;
    }
}

impl Drop for TenantLock {
    fn drop(&mut self) {
        let refresher = self.refresher.take();
        if let Some(r) = &refresher {
            r.abort();
        }
        if self.released {
            return;
        }
        let (store, key, nonce) = (self.store.clone(), self.key.clone(), self.nonce.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    stop(refresher).await;
                    if let Err(e) = remove_if_ours(&*store, &key, &nonce).await {
                        tracing::warn!(lock = %key, error = %e, "could not remove the tenant lock of a stopped job; it expires");
                    }
                });
            }
            Err(_) => tracing::warn!(lock = %self.key, "tenant lock dropped outside the runtime; it expires"),
        }
    }
}

async fn remove_if_ours(store: &dyn Store, key: &str, nonce: &str) -> Result<(), StoreError> {
    match read(store, key).await? {
        Some(h) if h.nonce == nonce => store.delete(key).await,
        _ => Ok(()),
    }
}

/// Refresh the lock every `every` until the task is aborted; stop and cancel `on_lost` when it
/// is lost.
async fn refresh_loop(
    store: Arc<dyn Store>,
    key: String,
    mut info: LockInfo,
    every: Duration,
    lost: Arc<std::sync::OnceLock<String>>,
    on_lost: tokio_util::sync::CancellationToken,
) {
    let mut last_ok = std::time::Instant::now();
    let lose = |why: String| {
        tracing::error!(lock = %key, "{why}");
        let _ = lost.set(why);
        on_lost.cancel();
    };
    loop {
        tokio::time::sleep(every).await;
        // Never overwrite a lock someone else holds now (ours was removed as stale).
        let failed = match read(&*store, &key).await {
            Ok(Some(h)) if h.nonce != info.nonce => {
                return lose(format!(
                    "the tenant lock {key} was taken over by {} (pid {} on host {}); the job stopped",
                    h.purpose, h.pid, h.host
                ))
            }
            Ok(None) => return lose(format!("the tenant lock {key} was removed by someone else; the job stopped")),
            Ok(Some(_)) => {
                info.refreshed = now();
                let body = Bytes::from(serde_json::to_vec(&info).expect("lock info serializes"));
                store.put(&key, Body::Bytes(body)).await.err()
            }
            Err(e) => Some(e),
        };
        match failed {
            None => last_ok = std::time::Instant::now(),
            Some(e) if last_ok.elapsed() >= lost_after(every) => {
                return lose(format!(
                    "the tenant lock {key} could not be refreshed for {} s ({e}); another agent may take it as \
                     stale, so the job stopped",
                    last_ok.elapsed().as_secs()
                ))
            }
            Some(e) => tracing::warn!(lock = %key, error = %e, "could not refresh the tenant lock; trying again"),
        }
    }
}

/// `reversa unlock`: remove the tenant's stale locks (a killed process's, or one no longer
/// refreshed), each re-read just before it is deleted; a live one is refused and left. Returns
/// the locks removed.
pub async fn remove_stale(store: &dyn Store, tenant: &TenantId) -> Result<Vec<(String, LockInfo)>, LockError> {
    let dir = layout::locks(tenant);
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
