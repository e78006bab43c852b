//! The key hierarchy: a master key (KEK) wraps one data key (DEK) per tenant; each DEK expands by
//! HKDF into the subkeys that are actually used. Only this module and `crypto` handle key bytes.
//!
//! The keystore lives in `<state>/keystore.json` (wrapped keys only: nothing in it opens anything
//! without the master key) and is snapshotted into the store, sealed under the master key, so that
//! losing the agent host loses nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::crypto::{self, Context, Kind, SecretKey};
use crate::store::{Body, Store, StoreError};
use crate::tenant::TenantId;

pub const MASTER_KEY_ENV: &str = "REVERSA_MASTER_KEY";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// How many keystore snapshots the store keeps. Short on purpose: a snapshot that still holds a
/// shredded key is a copy of that key.
const KEEP_SNAPSHOTS: usize = 7;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the master key file {path}: {cause}; check [keys] master_key_file")]
    Read {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error(
        "the master key file {path} has mode {mode:o}, readable by others; run `chmod 600 {path}` \
         (reversa refuses keys that other users could read)"
    )]
    LooseMode { path: PathBuf, mode: u32 },
    #[error("{source_name} does not hold a 32-byte key (raw, or base64 of 32 bytes)")]
    BadLength { source_name: String },
    #[error(
        "the master key does not open the keystore {path}: it is the wrong master key (check \
         REVERSA_MASTER_KEY or [keys] master_key_file)"
    )]
    WrongMasterKey { path: PathBuf },
    #[error("the keystore {path} is damaged: {message}; run `reversa init` to recover it from the store's snapshots")]
    Damaged { path: PathBuf, message: String },
    #[error("no keystore at {path}; run `reversa --config FILE init` first")]
    Missing { path: PathBuf },
    #[error(
        "no master key: [keys] master_key_file is missing and REVERSA_MASTER_KEY is not set; set one of them \
         (`reversa init --generate-master-key PATH` makes a key file)"
    )]
    NoMasterKey,
    #[error("cannot write the keystore {path}: {cause}")]
    Write {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error(
        "the key file {path} exists; reversa never overwrites a key: use it with [keys] master_key_file, or \
         give --generate-master-key a new path"
    )]
    KeyFileExists { path: PathBuf },
    #[error("cannot write the key file {path}: {cause}")]
    WriteKeyFile {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("the key of tenant {tenant} was shredded: its backups can no longer be read")]
    Shredded { tenant: String },
    /// No key here and nothing of the tenant in the store: a tenant never backed up.
    #[error("tenant {tenant} has no repository in the store and no key; back it up first (`reversa backup --tenant {tenant}`)")]
    NoKey { tenant: String },
    /// The tenant's repository exists but no keystore (local or snapshot) holds its key.
    #[error(
        "tenant {tenant} has a repository in the store (tenants/{tenant}/), but no keystore holds its key: \
         not this agent's, and not one of the store's keystore snapshots ({tried}); its data cannot be \
         read without that key. reversa never makes a new key for existing data. Restore a copy of the \
         keystore.json that holds it into [state] dir, or run `reversa init` with that state folder's \
         master key"
    )]
    MissingKey { tenant: String, tried: String },
    #[error("the agent key {path} {why}; it signs the audit log (`reversa init` makes it)")]
    AgentKeyUnusable { path: PathBuf, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// None of the store's snapshots opens, and at least one fails its key commitment: that is
    /// what a different master key gives.
    #[error(
        "wrong master key: none of the {count} keystore snapshots in {store} opens with it (check \
         REVERSA_MASTER_KEY or [keys] master_key_file; the key that made them is needed)"
    )]
    WrongMasterKeyForStore { store: String, count: usize },
    #[error(
        "no keystore snapshot in {store} opens, each is damaged: {damaged}; restore a copy of keystore.json \
         into [state] dir, or the snapshots from a copy of the store"
    )]
    SnapshotsDamaged { store: String, damaged: String },
}

impl KeyError {
    /// Whether this is a missing or wrong key rather than damage or I/O (for exit codes).
    pub fn is_wrong_master_key(&self) -> bool {
        matches!(self, KeyError::WrongMasterKey { .. } | KeyError::WrongMasterKeyForStore { .. })
    }
}

/// A key or another secret as text, as the environment gives it (the master key in base64, a
/// webhook secret, an SMTP password): zeroized on drop, never printed.
#[derive(Clone)]
pub struct KeyText(zeroize::Zeroizing<String>);

impl KeyText {
    pub fn new(text: String) -> KeyText {
        KeyText(zeroize::Zeroizing::new(text))
    }

    /// The text, for the one call that uses it (a signature, an SMTP login).
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for KeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyText(<redacted>)")
    }
}

/// The master key. Its bytes never leave this module except through HKDF.
#[derive(Clone)]
pub struct MasterKey(SecretKey);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// The key the environment gave (`REVERSA_MASTER_KEY`), else the file. The file must not
    /// be readable by group or others.
    pub fn load(keys: &crate::config::KeysConfig) -> Result<MasterKey, KeyError> {
        if let Some(text) = &keys.master_key_env {
            return decode_key(text.0.trim().as_bytes(), MASTER_KEY_ENV);
        }
        let path = keys.master_key_file.as_deref().ok_or(KeyError::NoMasterKey)?;
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|cause| KeyError::Read { path: path.into(), cause })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::LooseMode { path: path.into(), mode });
        }
        let mut bytes = std::fs::read(path).map_err(|cause| KeyError::Read { path: path.into(), cause })?;
        let key = decode_key(&bytes, &path.display().to_string());
        zeroize::Zeroize::zeroize(&mut bytes);
        key
    }

    pub fn from_secret(k: SecretKey) -> MasterKey {
        MasterKey(k)
    }

    /// A new random master key, in memory only until [`MasterKey::save_new`].
    pub fn generate() -> MasterKey {
        MasterKey(SecretKey::random())
    }

    /// Write the key to a new file `path` with mode 0600. Refuses to overwrite an existing file.
    pub fn save_new(&self, path: &Path) -> Result<(), KeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
            f.write_all(self.0.expose())?;
            f.sync_all()
        };
        write().map_err(|cause| match cause.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::KeyFileExists { path: path.into() },
            _ => KeyError::WriteKeyFile { path: path.into(), cause },
        })
    }

    fn wrapping_key(&self) -> SecretKey {
        self.0.derive(b"reversa/v1/kek-wrap")
    }
    fn snapshot_key(&self) -> SecretKey {
        self.0.derive(b"reversa/v1/keystore-snapshot")
    }
    fn audit_key(&self) -> SecretKey {
        self.0.derive(b"reversa/v1/audit-segment")
    }

    /// Seal an audit segment for `audit/<agent>/<segment>`: under the master key, so that any
    /// agent of the store, and a new host after this one is lost, can verify the log.
    pub fn seal_audit_segment(&self, agent: &str, segment: &str, bytes: &[u8]) -> Vec<u8> {
        let id = format!("{agent}/{segment}");
        crypto::seal(&self.audit_key(), &audit_ctx(&id), bytes)
    }

    pub fn open_audit_segment(&self, agent: &str, segment: &str, sealed: &[u8]) -> Result<Vec<u8>, crypto::OpenError> {
        let id = format!("{agent}/{segment}");
        crypto::open(&self.audit_key(), &audit_ctx(&id), sealed)
    }
}

impl MasterKey {
    /// Seal a tenant's lifecycle record for `reports/<tenant>/lifecycle`.
    pub fn seal_lifecycle(&self, tenant: &str, bytes: &[u8]) -> Vec<u8> {
        crypto::seal(&self.0.derive(b"reversa/v1/lifecycle-record"), &lifecycle_ctx(tenant), bytes)
    }

    pub fn open_lifecycle(&self, tenant: &str, sealed: &[u8]) -> Result<Vec<u8>, crypto::OpenError> {
        crypto::open(&self.0.derive(b"reversa/v1/lifecycle-record"), &lifecycle_ctx(tenant), sealed)
    }
}

fn lifecycle_ctx(tenant: &str) -> Context<'_> {
    Context { tenant, kind: Kind::LifecycleRecord, id: "lifecycle", key_version: 1 }
}

fn audit_ctx(id: &str) -> Context<'_> {
    Context { tenant: "", kind: Kind::AuditSegment, id, key_version: 1 }
}

/// The agent's signing key (Ed25519): it signs the audit log's checkpoints, and later drill
/// reports and deletion certificates. The secret lives in `<state>/agent.key` (mode 0600) and
/// nowhere else; its public half is published as `agents/<agent id>.pub`.
pub struct AgentKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgentKey({}, <redacted>)", self.id())
    }
}

/// The file of the agent key in the state folder.
pub const AGENT_KEY_FILE: &str = "agent.key";

impl AgentKey {
    /// The agent key of `state_dir`, `None` when there is none.
    pub fn load(state_dir: &Path) -> Result<Option<AgentKey>, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let path = state_dir.join(AGENT_KEY_FILE);
        let unusable = |why: String| KeyError::AgentKeyUnusable { path: path.clone(), why };
        let mut bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unusable(format!("cannot be read ({e})"))),
        };
        let mode = std::fs::metadata(&path).map_err(|e| unusable(e.to_string()))?.permissions().mode() & 0o777;
        let seed: Result<[u8; 32], _> = bytes.as_slice().try_into();
        zeroize::Zeroize::zeroize(&mut bytes);
        if mode & 0o077 != 0 {
            return Err(unusable(format!("has mode {mode:o}, readable by others; run `chmod 600 {}`", path.display())));
        }
        let mut seed = seed.map_err(|_| unusable("is not 32 bytes long: it is damaged".into()))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        zeroize::Zeroize::zeroize(&mut seed);
        Ok(Some(AgentKey(key)))
    }

    /// The agent key of `state_dir`, made (and written, mode 0600) when there is none yet
    /// (`init`). Returns whether it was made now.
    pub fn load_or_create(state_dir: &Path) -> Result<(AgentKey, bool), KeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(key) = Self::load(state_dir)? {
            return Ok((key, false));
        }
        let path = state_dir.join(AGENT_KEY_FILE);
        let mut seed = [0u8; 32];
        rand::fill(&mut seed);
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(state_dir)?;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
            f.write_all(&seed)?;
            f.sync_all()
        };
        let written = write();
        zeroize::Zeroize::zeroize(&mut seed);
        written
            .map_err(|e| KeyError::AgentKeyUnusable { path: path.clone(), why: format!("cannot be written ({e})") })?;
        Ok((AgentKey(key), true))
    }

    /// The agent id: the first 16 hex digits of the SHA-256 of the public key, so that the id
    /// itself names the key that verifies it.
    pub fn id(&self) -> String {
        agent_id_of(&self.public())
    }

    /// The public key, hex.
    pub fn public(&self) -> String {
        hex::encode(self.0.verifying_key().as_bytes())
    }

    /// The Ed25519 signature of `message`, hex.
    pub fn sign(&self, message: &[u8]) -> String {
        use ed25519_dalek::Signer;
        hex::encode(self.0.sign(message).to_bytes())
    }
}

/// The agent id of a public key (hex), as [`AgentKey::id`] gives it.
pub fn agent_id_of(public_hex: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(public_hex.as_bytes()))[..16].to_string()
}

/// Whether `signature` (hex) is `public`'s (hex) Ed25519 signature of `message`.
pub fn verify_agent_signature(public: &str, message: &[u8], signature: &str) -> bool {
    let key: Option<[u8; 32]> = hex::decode(public).ok().and_then(|b| b.try_into().ok());
    let sig: Option<[u8; 64]> = hex::decode(signature).ok().and_then(|b| b.try_into().ok());
    let (Some(key), Some(sig)) = (key, sig) else { return false };
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&key) else { return false };
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig)).is_ok()
}

fn decode_key(bytes: &[u8], source_name: &str) -> Result<MasterKey, KeyError> {
    let bad = || KeyError::BadLength { source_name: source_name.to_string() };
    if bytes.len() == 32 {
        return Ok(MasterKey(SecretKey::from_bytes(bytes.try_into().expect("32 bytes"))));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| bad())?.trim();
    let mut decoded = B64.decode(text).map_err(|_| bad())?;
    let arr: Result<[u8; 32], _> = decoded.as_slice().try_into();
    zeroize::Zeroize::zeroize(&mut decoded);
    Ok(MasterKey(SecretKey::from_bytes(arr.map_err(|_| bad())?)))
}

/// The subkeys of one tenant's data key.
pub struct TenantKeys {
    pub tenant: TenantId,
    pub version: u32,
    encryption: SecretKey,
    blob_id: SecretKey,
    row_digest: SecretKey,
    local_state: SecretKey,
    chunker_seed: u64,
}

impl std::fmt::Debug for TenantKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TenantKeys({}, v{}, <redacted>)", self.tenant, self.version)
    }
}

pub type BlobId = [u8; 32];

impl TenantKeys {
    fn from_dek(tenant: TenantId, version: u32, dek: &SecretKey) -> TenantKeys {
        let seed = dek.derive(b"reversa/v1/chunker-seed");
        TenantKeys {
            tenant,
            version,
            encryption: dek.derive(b"reversa/v1/encryption"),
            blob_id: dek.derive(b"reversa/v1/blob-id"),
            row_digest: dek.derive(b"reversa/v1/row-digest"),
            local_state: dek.derive(b"reversa/v1/local-state-mac"),
            chunker_seed: u64::from_le_bytes(seed.expose()[..8].try_into().expect("8 bytes")),
        }
    }

    /// Keys from a fresh random data key, for unit tests of code that seals.
    #[cfg(test)]
    pub fn for_tests(tenant: &str) -> TenantKeys {
        TenantKeys::from_dek(TenantId::parse(tenant).expect("a valid tenant id"), 1, &SecretKey::random())
    }

    /// HMAC-SHA256 of the plaintext under the tenant's id key: dedup inside the tenant, nothing
    /// shared across tenants, and no plaintext fingerprint visible in the store.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(self.blob_id.expose())
            .expect("HMAC takes any key length");
        mac.update(plaintext);
        mac.finalize().into_bytes().into()
    }

    /// A keyed hash for the rows of keyed tables (`generation::delta`): 16 bytes of
    /// HMAC-SHA256 under a subkey of its own, so a digest map reveals nothing of the rows, even
    /// of low-entropy ones, and never collides with a blob id.
    pub fn row_digester(&self) -> RowDigester {
        RowDigester(
            <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(self.row_digest.expose())
                .expect("HMAC takes any key length"),
        )
    }

    /// A MAC over local state that decides what a generation holds or what a check skips
    /// (the file cache, the record of verified packs): HMAC-SHA256 under a subkey of its own,
    /// over `domain` and the length-prefixed `parts`, so no two entries can be spliced together.
    pub fn state_mac(&self, domain: &str, parts: &[&[u8]]) -> [u8; 32] {
        self.state_mac_state(domain, parts).finalize().into_bytes().into()
    }

    /// Check a [`TenantKeys::state_mac`] in constant time.
    pub fn verify_state_mac(&self, domain: &str, parts: &[&[u8]], mac: &[u8]) -> bool {
        self.state_mac_state(domain, parts).verify_slice(mac).is_ok()
    }

    fn state_mac_state(&self, domain: &str, parts: &[&[u8]]) -> hmac::Hmac<sha2::Sha256> {
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(self.local_state.expose())
            .expect("HMAC takes any key length");
        for part in std::iter::once(domain.as_bytes()).chain(parts.iter().copied()) {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        mac
    }

    /// A per-tenant seed for the chunker's gear table, so chunk boundaries (and so sizes) cannot be
    /// compared across tenants.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    pub fn seal(&self, kind: Kind, id: &str, plaintext: &[u8]) -> Vec<u8> {
        crypto::seal(&self.encryption, &self.ctx(kind, id), plaintext)
    }

    /// Seal the concatenation of `parts`, appending the sealed object to `out`.
    pub fn seal_into(&self, kind: Kind, id: &str, parts: &[&[u8]], out: &mut Vec<u8>) {
        crypto::seal_into(&self.encryption, &self.ctx(kind, id), parts, out)
    }

    pub fn open(&self, kind: Kind, id: &str, sealed: &[u8]) -> Result<Vec<u8>, crypto::OpenError> {
        crypto::open(&self.encryption, &self.ctx(kind, id), sealed)
    }

    fn ctx<'a>(&'a self, kind: Kind, id: &'a str) -> Context<'a> {
        Context { tenant: self.tenant.as_str(), kind, id, key_version: self.version }
    }
}

/// A keyed row hasher. It holds the HMAC state keyed once, cloned for every row, which saves the
/// key schedule per row. Its `Debug` shows nothing of the key.
#[derive(Clone)]
pub struct RowDigester(hmac::Hmac<sha2::Sha256>);

impl std::fmt::Debug for RowDigester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowDigester(<redacted>)")
    }
}

pub type RowDigest = [u8; 16];

impl RowDigester {
    pub fn digest(&self, row: &[u8]) -> RowDigest {
        use hmac::Mac;
        let mut mac = self.0.clone();
        mac.update(row);
        mac.finalize().into_bytes()[..16].try_into().expect("16 of 32 bytes")
    }

    /// A MAC over a whole stream (a digest map), fed piece by piece.
    pub fn stream(&self) -> StreamMac {
        let mut mac = self.0.clone();
        // Domain separation from row digests: an encoded row starts with a value tag (0 to 4).
        hmac::Mac::update(&mut mac, b"reversa/v1/digest-map\0");
        StreamMac(mac)
    }
}

pub struct StreamMac(hmac::Hmac<sha2::Sha256>);

impl StreamMac {
    pub fn update(&mut self, data: &[u8]) {
        hmac::Mac::update(&mut self.0, data);
    }
    pub fn finish(self) -> String {
        hex::encode(hmac::Mac::finalize(self.0).into_bytes())
    }
}

#[derive(Serialize, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
struct WrappedKey {
    version: u32,
    /// base64(nonce | AES-256-GCM(DEK) | tag), associated data "reversa/v1/dek|<tenant>|<version>".
    wrapped: String,
    created: String,
}

#[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
#[serde(deny_unknown_fields)]
struct TenantEntry {
    keys: Vec<WrappedKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shredded: Option<String>,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct KeystoreFile {
    format: u32,
    /// A wrapped all-zero key: opening it proves the master key is the right one.
    check: String,
    tenants: BTreeMap<String, TenantEntry>,
}

/// The keystore: the wrapped data keys of every tenant.
#[derive(Clone)]
pub struct Keystore {
    path: PathBuf,
    master: MasterKey,
    file: KeystoreFile,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keystore({}, {} tenants)", self.path.display(), self.file.tenants.len())
    }
}

const CHECK_AAD: &[u8] = b"reversa/v1/keystore-check";

fn dek_aad(tenant: &str, version: u32) -> Vec<u8> {
    format!("reversa/v1/dek|{tenant}|{version}").into_bytes()
}

impl Keystore {
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join("keystore.json")
    }

    /// Create an empty keystore for `master`. Does not write it.
    pub fn new(state_dir: &Path, master: MasterKey) -> Keystore {
        let check = B64.encode(crypto::wrap_key(&master.wrapping_key(), CHECK_AAD, &SecretKey::from_bytes([0; 32])));
        Keystore {
            path: Self::path_in(state_dir),
            master,
            file: KeystoreFile { format: 1, check, tenants: BTreeMap::new() },
        }
    }

    /// Open the local keystore and prove that `master` is its key.
    pub fn open(state_dir: &Path, master: MasterKey) -> Result<Keystore, KeyError> {
        let path = Self::path_in(state_dir);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(KeyError::Missing { path }),
            Err(cause) => return Err(KeyError::Read { path, cause }),
        };
        Self::from_bytes(path, master, &text)
    }

    fn from_bytes(path: PathBuf, master: MasterKey, bytes: &[u8]) -> Result<Keystore, KeyError> {
        let file: KeystoreFile = serde_json::from_slice(bytes)
            .map_err(|e| KeyError::Damaged { path: path.clone(), message: e.to_string() })?;
        if file.format != 1 {
            return Err(KeyError::Damaged { path, message: format!("unknown format {}", file.format) });
        }
        let check = B64.decode(&file.check).unwrap_or_default();
        if crypto::unwrap_key(&master.wrapping_key(), CHECK_AAD, &check).is_none() {
            return Err(KeyError::WrongMasterKey { path });
        }
        Ok(Keystore { path, master, file })
    }

    pub fn save(&self) -> Result<(), KeyError> {
        let bytes = serde_json::to_vec_pretty(&self.file).expect("keystore serializes");
        crate::store::dir::write_atomic(&self.path, &bytes, 0o600)
            .map_err(|cause| KeyError::Write { path: self.path.clone(), cause })
    }

    /// The tenant's current keys, creating (and saving) a data key if it has none. The caller
    /// MUST have made sure that the store holds nothing of the tenant ([`Keystore::has_key`]
    /// false, and no object under `tenants/<tenant>/`): a new key for existing data would make
    /// that data unreadable. Returns whether a key was created, so the caller can snapshot.
    pub fn tenant_keys_or_create(&mut self, tenant: &TenantId) -> Result<(TenantKeys, bool), KeyError> {
        // Two processes on this host may meet a new tenant at once: hold the keystore's file
        // lock and re-read it, so both end up with the same key instead of the last writer's.
        let _lock = self.lock_file()?;
        self.reload()?;
        match self.tenant_keys(tenant) {
            Ok(k) => return Ok((k, false)),
            Err(KeyError::NoKey { .. }) => {}
            Err(e) => return Err(e),
        }
        let dek = SecretKey::random();
        let wrapped = crypto::wrap_key(&self.master.wrapping_key(), &dek_aad(tenant.as_str(), 1), &dek);
        let entry = self.file.tenants.entry(tenant.to_string()).or_default();
        entry.keys.push(WrappedKey { version: 1, wrapped: B64.encode(wrapped), created: crate::now_rfc3339() });
        self.save()?;
        Ok((TenantKeys::from_dek(tenant.clone(), 1, &dek), true))
    }

    /// Whether the keystore has an entry for the tenant (a key, or the record that it was
    /// shredded), re-reading the file for entries other processes added.
    pub fn has_key(&mut self, tenant: &TenantId) -> Result<bool, KeyError> {
        self.reload()?;
        Ok(self.file.tenants.contains_key(tenant.as_str()))
    }

    /// Take a tenant's entry found in a snapshot into this keystore and save it (a key that the
    /// store holds but this host lost, or never had).
    pub fn adopt(&mut self, tenant: &TenantId, found: FoundKey) -> Result<(), KeyError> {
        let _lock = self.lock_file()?;
        self.reload()?;
        self.file.tenants.entry(tenant.to_string()).or_insert(found.entry);
        self.save()
    }

    /// An exclusive advisory lock on `keystore.lock`, released when the file is dropped.
    fn lock_file(&self) -> Result<std::fs::File, KeyError> {
        use std::os::fd::AsRawFd;
        let path = self.path.with_extension("lock");
        let write_err = |cause| KeyError::Write { path: path.clone(), cause };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(write_err)?;
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(write_err(std::io::Error::last_os_error()));
        }
        Ok(f)
    }

    /// Re-read the keystore file, if there is one, to see keys other processes added.
    pub fn reload(&mut self) -> Result<(), KeyError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let fresh = Self::from_bytes(self.path.clone(), self.master.clone(), &bytes)?;
                self.file = fresh.file;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(cause) => Err(KeyError::Read { path: self.path.clone(), cause }),
        }
    }

    /// The tenant's current keys.
    pub fn tenant_keys(&self, tenant: &TenantId) -> Result<TenantKeys, KeyError> {
        let entry =
            self.file.tenants.get(tenant.as_str()).ok_or_else(|| KeyError::NoKey { tenant: tenant.to_string() })?;
        if entry.shredded.is_some() {
            return Err(KeyError::Shredded { tenant: tenant.to_string() });
        }
        let wk = entry.keys.last().ok_or_else(|| KeyError::NoKey { tenant: tenant.to_string() })?;
        let raw = B64
            .decode(&wk.wrapped)
            .map_err(|e| KeyError::Damaged { path: self.path.clone(), message: format!("tenant {tenant}: {e}") })?;
        let dek = crypto::unwrap_key(&self.master.wrapping_key(), &dek_aad(tenant.as_str(), wk.version), &raw)
            .ok_or_else(|| KeyError::Damaged {
                path: self.path.clone(),
                message: format!("the wrapped key of tenant {tenant} does not open"),
            })?;
        Ok(TenantKeys::from_dek(tenant.clone(), wk.version, &dek))
    }

    /// The snapshot to upload when `store` does not hold the keystore as it is now (a tenant's
    /// first key, an earlier upload that failed, or a store that never had one), or `None`.
    /// The state folder records what was last uploaded where, so this costs no request.
    pub fn snapshot_needed(&self, store: &dyn Store) -> Option<PendingSnapshot> {
        let record = self.record(store);
        let record_path = self.record_path();
        if std::fs::read_to_string(&record_path).ok().as_deref() == Some(record.as_str()) {
            return None;
        }
        let (id, sealed) = self.seal_snapshot();
        Some(PendingSnapshot { master: self.master.clone(), id, sealed, record_path, record })
    }

    /// Seal the keystore for `keystore/<snapshot id>`. Returns the id and the sealed bytes; the
    /// caller uploads them with [`upload_snapshot`] (so no lock is held across the upload).
    pub fn seal_snapshot(&self) -> (String, Vec<u8>) {
        // The real clock, never a simulated one (`REVERSA_NOW`): "newest" must mean written
        // last, or a check and a recovery would take an older copy for the current one.
        let id = crate::sortable_id_at(jiff::Timestamp::now());
        let bytes = serde_json::to_vec(&self.file).expect("keystore serializes");
        let sealed = crypto::seal(&self.master.snapshot_key(), &snapshot_ctx(&id), &bytes);
        (id, sealed)
    }

    /// Recover the keystore from the store's snapshots (`None` when there are none): they are
    /// opened newest first, and each tenant's entry is taken from the newest one that has it,
    /// so a key found only in an older snapshot is recovered, and a key recorded as shredded
    /// in a newer one is never taken back from an older one. Saves the merged keystore.
    pub async fn recover(
        state_dir: &Path,
        master: MasterKey,
        store: &dyn Store,
    ) -> Result<Option<(Keystore, Recovery)>, KeyError> {
        let snapshots = read_snapshots(&master, store).await?;
        if snapshots.is_empty() {
            return Ok(None);
        }
        if snapshots.iter().all(|s| s.contents.is_err()) {
            return Err(none_opens(store, &snapshots));
        }
        let mut ks = Keystore::new(state_dir, master);
        let mut recovery = Recovery::default();
        for snap in &snapshots {
            match &snap.contents {
                Ok(file) => {
                    recovery.snapshots.push(SnapshotOutcome { key: snap.key.clone(), damage: None });
                    for (tenant, entry) in &file.tenants {
                        if !ks.file.tenants.contains_key(tenant) {
                            ks.file.tenants.insert(tenant.clone(), entry.clone());
                            let from = snap.key.clone();
                            match entry.shredded {
                                Some(_) => recovery.shredded.push((tenant.clone(), from)),
                                None => recovery.keys.push((tenant.clone(), from)),
                            }
                        }
                    }
                }
                Err(damage) => recovery
                    .snapshots
                    .push(SnapshotOutcome { key: snap.key.clone(), damage: Some(damage.cause.clone()) }),
            }
        }
        ks.save()?;
        Ok(Some((ks, recovery)))
    }

    /// Open every keystore snapshot in the store, and check that the newest one opens and
    /// holds every entry of this keystore as it is (`check` runs this on every run).
    pub async fn verify_snapshots(&self, store: &dyn Store) -> Result<SnapshotCheck, KeyError> {
        let snapshots = read_snapshots(&self.master, store).await?;
        let mut check = SnapshotCheck { snapshots: snapshots.len(), ..Default::default() };
        for snap in &snapshots {
            match &snap.contents {
                Err(d) if d.how == Damage::WrongKey => check.problems.push(format!(
                    "keystore snapshot {}: does not open: {}; it fails its key commitment, so it was sealed under \
                     another master key or its header is damaged (`check --repair` leaves it: remove it by hand \
                     if no agent with another master key uses this store)",
                    snap.key, d.cause
                )),
                Err(d) => {
                    check.problems.push(format!("keystore snapshot {}: does not open: {}", snap.key, d.cause));
                    check.damaged.push(snap.key.clone());
                }
                Ok(_) => {}
            }
        }
        match snapshots.first() {
            None if !self.file.tenants.is_empty() => check.problems.push(
                "the store holds no keystore snapshot: losing this host would lose every key (`reversa check --repair` uploads one)"
                    .into(),
            ),
            None => {}
            Some(newest) => {
                check.newest = Some(newest.key.clone());
                let held = newest.contents.as_ref().map(|f| &f.tenants).ok();
                // A shred is final wherever it is recorded: a key that any snapshot records as
                // shredded is shredded here too, never uploaded again.
                let shredded = shredded_in(&snapshots);
                for (tenant, entry) in &self.file.tenants {
                    match held.and_then(|t| t.get(tenant)) {
                        _ if entry.shredded.is_none() && shredded.contains(tenant) => {
                            check.shredded_elsewhere.push(tenant.clone())
                        }
                        Some(h) if h == entry => {}
                        _ => check.missing.push(tenant.clone()),
                    }
                }
                if !check.missing.is_empty() {
                    check.problems.push(format!(
                        "the newest keystore snapshot {} does not hold the key of {} as this agent has it; \
                         `reversa check --repair` uploads a fresh snapshot",
                        newest.key,
                        check.missing.join(", ")
                    ));
                }
            }
        }
        Ok(check)
    }

    /// Whether every tenant key in this keystore unwraps under the master key: only then may it
    /// replace the store's snapshots (`check --repair`).
    pub fn is_sound(&self) -> Result<(), KeyError> {
        for (tenant, entry) in &self.file.tenants {
            if entry.shredded.is_none() {
                self.tenant_keys(
                    &TenantId::parse(tenant)
                        .map_err(|e| KeyError::Damaged { path: self.path.clone(), message: e.to_string() })?,
                )?;
            }
        }
        Ok(())
    }

    /// Seal and upload a snapshot of the keystore as it is now, whatever the local record
    /// says was uploaded before (`check --repair`).
    pub async fn upload_fresh_snapshot(&self, store: &dyn Store) -> Result<String, KeyError> {
        let (id, sealed) = self.seal_snapshot();
        let pending = PendingSnapshot {
            master: self.master.clone(),
            id,
            sealed,
            record_path: self.record_path(),
            record: self.record(store),
        };
        pending.upload(store).await
    }

    fn record_path(&self) -> PathBuf {
        self.path.with_extension("snapshot")
    }

    /// What the local record says once `store` holds this keystore as it is now.
    fn record(&self, store: &dyn Store) -> String {
        use sha2::Digest;
        let bytes = serde_json::to_vec(&self.file).expect("keystore serializes");
        format!("{}\n{}\n", store.describe(), hex::encode(sha2::Sha256::digest(&bytes)))
    }

    /// Destroy the tenant's data keys (cryptographic erase): the entry keeps only the time it
    /// was shredded, so no snapshot merge or recovery ever takes an older copy of the key back.
    /// Returns whether there was a key to destroy.
    pub fn shred(&mut self, tenant: &TenantId) -> Result<bool, KeyError> {
        let _lock = self.lock_file()?;
        self.reload()?;
        let entry = self.file.tenants.entry(tenant.to_string()).or_default();
        let had = !entry.keys.is_empty();
        entry.keys.clear();
        entry.shredded.get_or_insert_with(crate::now_rfc3339);
        self.save()?;
        Ok(had)
    }

    /// Whether this keystore holds a data key of the tenant (shredded or never made: no).
    pub fn holds_key(&self, tenant: &TenantId) -> bool {
        self.file.tenants.get(tenant.as_str()).is_some_and(|e| !e.keys.is_empty())
    }

    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.file.tenants.keys().map(String::as_str)
    }
}

/// A sealed keystore snapshot waiting to be uploaded (see [`Keystore::snapshot_needed`]).
pub struct PendingSnapshot {
    master: MasterKey,
    id: String,
    sealed: Vec<u8>,
    record_path: PathBuf,
    record: String,
}

impl PendingSnapshot {
    /// Upload it and note locally that the store now holds this keystore.
    pub async fn upload(self, store: &dyn Store) -> Result<String, KeyError> {
        let key = upload_snapshot(store, &self.master, &self.id, self.sealed).await?;
        crate::store::dir::write_atomic(&self.record_path, self.record.as_bytes(), 0o600)
            .map_err(|cause| KeyError::Write { path: self.record_path.clone(), cause })?;
        Ok(key)
    }
}

/// One keystore snapshot as read from the store: what it holds, or why it does not open.
struct Snapshot {
    key: String,
    contents: Result<KeystoreFile, SnapshotDamage>,
}

struct SnapshotDamage {
    cause: String,
    how: Damage,
}

#[derive(Clone, Copy, PartialEq)]
enum Damage {
    /// The key commitment failed: what another master key gives (or damage to the salt).
    WrongKey,
    /// Not even a header (empty, or a stranger): it says nothing about the key.
    NoHeader,
    /// The header matched the key and the rest did not open or parse: damage.
    Damaged,
}

/// What `init` recovered: each snapshot tried (newest first), and where each key came from.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Recovery {
    pub snapshots: Vec<SnapshotOutcome>,
    /// (tenant, snapshot key) for every key taken.
    pub keys: Vec<(String, String)>,
    /// (tenant, snapshot key) for every tenant recorded as shredded.
    pub shredded: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotOutcome {
    pub key: String,
    /// Why it does not open; `None` when it opened.
    pub damage: Option<String>,
}

/// What `check` found of the store's keystore snapshots.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SnapshotCheck {
    /// How many snapshots the store holds, and the newest one.
    pub snapshots: usize,
    pub newest: Option<String>,
    /// The snapshots that do not open although their header matches the master key (damage;
    /// `--repair` removes them once a fresh snapshot is up).
    pub damaged: Vec<String>,
    /// Tenants whose entry in this agent's keystore the newest snapshot does not hold as is.
    pub missing: Vec<String>,
    /// Tenants whose key the newest snapshot records as shredded while this agent still holds
    /// it (another agent shredded it): the check shreds it here too.
    pub shredded_elsewhere: Vec<String>,
    /// Every damaged snapshot and missing key, named.
    pub problems: Vec<String>,
    /// The snapshot `check --repair` uploaded.
    pub uploaded: Option<String>,
}

const SNAPSHOT_PREFIX: &str = crate::repository::layout::KEYSTORE;

fn snapshot_ctx(id: &str) -> Context<'_> {
    Context { tenant: "", kind: Kind::Keystore, id, key_version: 1 }
}

/// Every keystore snapshot in the store, newest first, each opened and parsed. Only a failure
/// to list or read is an error; a snapshot that does not open is returned as such.
async fn read_snapshots(master: &MasterKey, store: &dyn Store) -> Result<Vec<Snapshot>, KeyError> {
    let mut all = store.list(SNAPSHOT_PREFIX).await?;
    all.reverse();
    let mut out = Vec::with_capacity(all.len());
    for obj in all {
        let sealed = store.get(&obj.key).await?;
        let contents = open_snapshot(master, &obj.key, &sealed);
        out.push(Snapshot { key: obj.key, contents });
    }
    Ok(out)
}

fn open_snapshot(master: &MasterKey, key: &str, sealed: &[u8]) -> Result<KeystoreFile, SnapshotDamage> {
    let id = key.trim_start_matches(SNAPSHOT_PREFIX);
    let plain = crypto::open(&master.snapshot_key(), &snapshot_ctx(id), sealed).map_err(|e| SnapshotDamage {
        how: match e {
            crypto::OpenError::WrongKeyOrContext => Damage::WrongKey,
            crypto::OpenError::NotSealed | crypto::OpenError::BadHeader(_) => Damage::NoHeader,
            _ => Damage::Damaged,
        },
        cause: e.to_string(),
    })?;
    let damaged = |cause: String| SnapshotDamage { cause, how: Damage::Damaged };
    let ks = Keystore::from_bytes(PathBuf::from(key), master.clone(), &plain).map_err(|e| damaged(e.to_string()))?;
    Ok(ks.file)
}

/// The error when no snapshot opens: the master key if every snapshot with a readable header
/// failed its key commitment (as every one does under another master key), else damage.
fn none_opens(store: &dyn Store, snapshots: &[Snapshot]) -> KeyError {
    let how = |s: &Snapshot| s.contents.as_ref().err().map(|d| d.how);
    let wrong_key = snapshots.iter().any(|s| how(s) == Some(Damage::WrongKey))
        && snapshots.iter().all(|s| how(s) != Some(Damage::Damaged));
    match wrong_key {
        true => KeyError::WrongMasterKeyForStore { store: store.describe(), count: snapshots.len() },
        false => KeyError::SnapshotsDamaged { store: store.describe(), damaged: describe_tried(snapshots) },
    }
}

/// The snapshots tried, each with what it gave, for messages.
fn describe_tried(snapshots: &[Snapshot]) -> String {
    if snapshots.is_empty() {
        return "the store holds none".into();
    }
    let each = snapshots.iter().map(|s| match &s.contents {
        Ok(_) => format!("{} (opened; no key for it)", s.key),
        Err(d) => format!("{} (does not open: {})", s.key, d.cause),
    });
    each.collect::<Vec<_>>().join(", ")
}

/// What the store's keystore snapshots hold of one tenant's key, every version of every
/// snapshot opened and read (see [`snapshots_holding`]).
#[derive(Debug, Default, Clone, Serialize)]
pub struct KeyCopies {
    /// The snapshot versions read (delete markers are not counted).
    pub checked: Vec<String>,
    /// Those that still hold a data key of the tenant.
    pub holding: Vec<crate::store::ObjectVersion>,
    /// Those that do not open with the master key: they cannot be shown not to hold it.
    pub unreadable: Vec<crate::store::ObjectVersion>,
}

/// Every version of every keystore snapshot in `store`, each opened and read, sorted by
/// whether it still holds a data key of `tenant`: what a shred must delete and what a
/// deletion's confirmation must find none of.
pub async fn snapshots_holding(
    master: &MasterKey,
    store: &dyn Store,
    tenant: &TenantId,
) -> Result<KeyCopies, KeyError> {
    let mut copies = KeyCopies::default();
    for v in store.list_versions(SNAPSHOT_PREFIX).await? {
        if v.delete_marker {
            continue;
        }
        copies.checked.push(version_name(&v));
        let sealed = store.get_version(&v).await?;
        match open_snapshot(master, &v.key, &sealed) {
            Ok(file) if file.tenants.get(tenant.as_str()).is_some_and(|e| !e.keys.is_empty()) => copies.holding.push(v),
            Ok(_) => {}
            Err(_) => copies.unreadable.push(v),
        }
    }
    Ok(copies)
}

/// The tenants that some snapshot records as shredded.
fn shredded_in(snapshots: &[Snapshot]) -> std::collections::BTreeSet<String> {
    let files = snapshots.iter().filter_map(|s| s.contents.as_ref().ok());
    files.flat_map(|f| f.tenants.iter().filter(|(_, e)| e.shredded.is_some()).map(|(t, _)| t.clone())).collect()
}

/// The tenants that some keystore snapshot of the store records as shredded (another agent's
/// shred, which this one must take before it uploads a snapshot of its own).
pub async fn shredded_in_store(master: &MasterKey, store: &dyn Store) -> Result<Vec<String>, KeyError> {
    Ok(shredded_in(&read_snapshots(master, store).await?).into_iter().collect())
}

/// Take a snapshot version that holds `tenant`'s key out of the store. A noncurrent version
/// (its object was replaced or deleted) is deleted. The current one is rewritten in place with
/// the tenant recorded as shredded and every other entry kept (another agent's keys stay), read
/// back and opened, and then its old version is deleted where the store keeps versions.
pub async fn remove_key_from(
    master: &MasterKey,
    store: &dyn Store,
    v: &crate::store::ObjectVersion,
    tenant: &TenantId,
) -> Result<(), KeyError> {
    if !v.latest {
        return Ok(store.delete_version(v).await?);
    }
    let damaged = |cause: String| KeyError::SnapshotsDamaged {
        store: store.describe(),
        damaged: format!("{} ({cause})", version_name(v)),
    };
    let mut file = open_snapshot(master, &v.key, &store.get_version(v).await?).map_err(|d| damaged(d.cause))?;
    let entry = file.tenants.entry(tenant.to_string()).or_default();
    entry.keys.clear();
    entry.shredded.get_or_insert_with(crate::now_rfc3339);
    let id = v.key.trim_start_matches(SNAPSHOT_PREFIX);
    let bytes = serde_json::to_vec(&file).expect("keystore serializes");
    store.put(&v.key, Body::Bytes(crypto::seal(&master.snapshot_key(), &snapshot_ctx(id), &bytes).into())).await?;
    let back = open_snapshot(master, &v.key, &store.get(&v.key).await?)
        .map_err(|d| damaged(format!("read back: {}", d.cause)))?;
    if back.tenants.get(tenant.as_str()).is_some_and(|e| !e.keys.is_empty()) {
        return Err(damaged("still holds the key after its rewrite".into()));
    }
    if v.version_id.as_deref().is_some_and(|id| id != "null") {
        store.delete_version(v).await?;
    }
    Ok(())
}

/// `key` or `key@version` for messages and certificates.
pub fn version_name(v: &crate::store::ObjectVersion) -> String {
    match &v.version_id {
        Some(id) if id != "null" => format!("{}@{id}", v.key),
        _ => v.key.clone(),
    }
}

/// A tenant's entry found in a keystore snapshot of the store (see [`find_in_snapshots`]).
pub struct FoundKey {
    entry: TenantEntry,
    /// The snapshot it came from.
    pub snapshot: String,
}

/// The tenant's entry in the newest snapshot of the store that has one, or (`Err`) the
/// snapshots tried, each with what it gave, for the message that says none has it.
pub async fn find_in_snapshots(
    master: &MasterKey,
    store: &dyn Store,
    tenant: &TenantId,
) -> Result<Result<FoundKey, String>, KeyError> {
    let snapshots = read_snapshots(master, store).await?;
    for snap in &snapshots {
        if let Some(entry) = snap.contents.as_ref().ok().and_then(|f| f.tenants.get(tenant.as_str())) {
            return Ok(Ok(FoundKey { entry: entry.clone(), snapshot: snap.key.clone() }));
        }
    }
    Ok(Err(describe_tried(&snapshots)))
}

/// Upload a sealed keystore snapshot, prove that it opens, and remove old snapshots beyond the
/// newest [`KEEP_SNAPSHOTS`]: only those whose every key the new one holds too (a snapshot that
/// holds a key nothing newer has, say another agent's, is kept), and those that do not open.
pub async fn upload_snapshot(
    store: &dyn Store,
    master: &MasterKey,
    id: &str,
    sealed: Vec<u8>,
) -> Result<String, KeyError> {
    let key = crate::repository::layout::keystore_snapshot(id);
    store.put(&key, Body::Bytes(sealed.into())).await?;
    let new = open_snapshot(master, &key, &store.get(&key).await?).map_err(|d| KeyError::SnapshotsDamaged {
        store: store.describe(),
        damaged: format!("{key} (read back after upload: {})", d.cause),
    })?;
    let all = store.list(SNAPSHOT_PREFIX).await?;
    if all.len() <= KEEP_SNAPSHOTS {
        return Ok(key);
    }
    for old in &all[..all.len() - KEEP_SNAPSHOTS] {
        let subsumed = match open_snapshot(master, &old.key, &store.get(&old.key).await?) {
            Ok(f) => f.tenants.iter().all(|(t, e)| new.tenants.get(t).is_some_and(|n| n == e || n.shredded.is_some())),
            Err(_) => true,
        };
        match subsumed {
            true => store.delete(&old.key).await?,
            false => {
                tracing::warn!(snapshot = %old.key, "keeping an old keystore snapshot: it holds a key the newest does not")
            }
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_master_key_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut ks = Keystore::new(dir.path(), MasterKey(SecretKey::random()));
        ks.tenant_keys_or_create(&TenantId::parse("a").unwrap()).unwrap();
        let err = Keystore::open(dir.path(), MasterKey(SecretKey::random())).unwrap_err();
        assert!(matches!(err, KeyError::WrongMasterKey { .. }), "{err}");
    }

    /// Regression: two processes meeting a new tenant at once must not end up with two keys
    /// (the second save used to overwrite the first process's key).
    #[test]
    fn two_keystores_on_one_state_folder_agree_on_a_new_tenants_key() {
        let dir = tempfile::tempdir().unwrap();
        let master = SecretKey::random();
        Keystore::new(dir.path(), MasterKey(master.clone())).save().unwrap();
        let mut a = Keystore::open(dir.path(), MasterKey(master.clone())).unwrap();
        let mut b = Keystore::open(dir.path(), MasterKey(master.clone())).unwrap();
        let t = TenantId::parse("nuovo").unwrap();
        let (ka, created_a) = a.tenant_keys_or_create(&t).unwrap();
        let (kb, created_b) = b.tenant_keys_or_create(&t).unwrap();
        assert!(created_a && !created_b);
        assert_eq!(ka.blob_id(b"x"), kb.blob_id(b"x"));
        let reopened = Keystore::open(dir.path(), MasterKey(master)).unwrap();
        assert_eq!(reopened.tenant_keys(&t).unwrap().blob_id(b"x"), ka.blob_id(b"x"));
    }

    /// Recovery takes each tenant's entry from the newest snapshot that has one: a key only an
    /// older snapshot holds comes back, a key a newer snapshot records as shredded does not,
    /// and a snapshot that does not open is named and skipped.
    #[tokio::test]
    async fn recovery_merges_snapshots_newest_first_and_never_revives_a_shredded_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::dir::DirStore::open(&dir.path().join("store"), true).unwrap();
        let master = MasterKey(SecretKey::random());
        let mut ks = Keystore::new(&dir.path().join("a"), master.clone());
        let (a, b, c) = (TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap(), TenantId::parse("c").unwrap());
        let ka = ks.tenant_keys_or_create(&a).unwrap().0;
        let kb = ks.tenant_keys_or_create(&b).unwrap().0;
        let upload = |ks: &Keystore| {
            let (id, sealed) = ks.seal_snapshot();
            let store = &store;
            let master = master.clone();
            async move { upload_snapshot(store, &master, &id, sealed).await.unwrap() }
        };
        upload(&ks).await;
        // Newer: a shredded, b gone (another copy of the keystore), c new.
        ks.file.tenants.get_mut("a").unwrap().shredded = Some("2026-12-01T00:00:00Z".into());
        ks.file.tenants.remove("b");
        ks.save().unwrap();
        ks.tenant_keys_or_create(&c).unwrap();
        let newer = upload(&ks).await;
        // Newest of all: damaged.
        let (id, mut sealed) = ks.seal_snapshot();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        store.put(&crate::repository::layout::keystore_snapshot(&id), Body::Bytes(sealed.into())).await.unwrap();

        let (got, rec) = Keystore::recover(&dir.path().join("new"), master, &store).await.unwrap().unwrap();
        assert!(matches!(got.tenant_keys(&a), Err(KeyError::Shredded { .. })), "a shredded key came back");
        assert_eq!(got.tenant_keys(&b).unwrap().blob_id(b"x"), kb.blob_id(b"x"), "b's key from the oldest");
        assert!(got.tenant_keys(&c).is_ok());
        assert_ne!(ka.blob_id(b"x"), kb.blob_id(b"x"));
        assert_eq!(rec.snapshots.len(), 3);
        assert!(rec.snapshots[0].damage.is_some() && rec.snapshots[1].damage.is_none());
        assert!(rec.keys.contains(&("c".into(), newer.clone())));
        assert_eq!(rec.shredded, vec![("a".to_string(), newer)]);
    }

    /// Under another master key every snapshot fails its commitment: that is the master key.
    #[tokio::test]
    async fn recovery_with_another_master_key_is_a_wrong_master_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::dir::DirStore::open(&dir.path().join("store"), true).unwrap();
        let master = MasterKey(SecretKey::random());
        let ks = Keystore::new(dir.path(), master.clone());
        let (id, sealed) = ks.seal_snapshot();
        upload_snapshot(&store, &master, &id, sealed).await.unwrap();
        let err = Keystore::recover(&dir.path().join("new"), MasterKey(SecretKey::random()), &store).await.unwrap_err();
        assert!(err.is_wrong_master_key(), "{err}");
        assert!(err.to_string().starts_with("wrong master key"), "{err}");
    }

    #[test]
    fn keys_are_stable_and_differ_between_tenants() {
        let dir = tempfile::tempdir().unwrap();
        let master = SecretKey::random();
        let mut ks = Keystore::new(dir.path(), MasterKey(master.clone()));
        let a = TenantId::parse("a").unwrap();
        let b = TenantId::parse("b").unwrap();
        let (ka, created) = ks.tenant_keys_or_create(&a).unwrap();
        assert!(created);
        let (kb, _) = ks.tenant_keys_or_create(&b).unwrap();
        assert_ne!(ka.blob_id(b"x"), kb.blob_id(b"x"));
        let ks2 = Keystore::open(dir.path(), MasterKey(master)).unwrap();
        assert_eq!(ks2.tenant_keys(&a).unwrap().blob_id(b"x"), ka.blob_id(b"x"));
        let text = std::fs::read_to_string(Keystore::path_in(dir.path())).unwrap();
        assert!(!format!("{ka:?}").contains(&hex::encode(&ka.blob_id.expose()[..4])));
        assert!(text.contains("wrapped"));
    }
}
