//! The sealed-object format: how every byte reversa writes to a store is encrypted and bound to
//! where it belongs. docs/FORMAT.md is the specification; this module is its only implementation.
//!
//! A sealed object is a 64-byte header followed by chunks of AES-256-GCM ciphertext:
//!
//! ```text
//! magic "RVSA" | version 1 | kind | chunk-size exponent | 0 | key version (u32 BE) | salt (32)
//!   | key commitment (16) | 4 zero bytes
//! chunk_0 .. chunk_n     each = ciphertext (CHUNK bytes, the last 0..=CHUNK) + 16-byte tag
//! ```
//!
//! The per-object key is HKDF-SHA256 of the tenant's encryption key with the random salt and an
//! `info` naming the tenant, the kind, the object id and the key version. Moving an object to
//! another tenant, id or kind therefore changes the key and fails the commitment check before any
//! chunk is decrypted. Because every object has its own key, the nonce can be a counter: the chunk
//! index (11 bytes, big-endian) and a last-chunk flag, so truncation, reordering and appending all
//! fail authentication.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::Aes256Gcm;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

pub const MAGIC: &[u8; 4] = b"RVSA";
pub const FORMAT_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 64;
pub const TAG_LEN: usize = 16;
/// log2 of the plaintext chunk size. 64 KiB keeps the per-chunk overhead at 0.02 % and bounds the
/// memory a streaming reader needs.
pub const CHUNK_EXP: u8 = 16;
pub const CHUNK_LEN: usize = 1 << CHUNK_EXP;

/// What an object is. Part of the key derivation, so an index can never be opened as a
/// manifest, nor a blob as a keystore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Blob = 1,
    PackHeader = 2,
    Index = 3,
    Generation = 4,
    Keystore = 5,
    /// A frame of a local cache file (the digest maps of `generation::delta`); never in a store.
    LocalCache = 7,
    /// A legal hold on a generation (its reason may name people, so it is sealed too).
    Hold = 6,
    /// A segment of an agent's audit log (actors, tickets, reasons: sealed like the rest).
    AuditSegment = 8,
    /// A tenant's lifecycle record (its contacts name people). Sealed under the master key: it
    /// outlives the tenant's own key.
    LifecycleRecord = 9,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Blob,
            2 => Kind::PackHeader,
            3 => Kind::Index,
            4 => Kind::Generation,
            5 => Kind::Keystore,
            7 => Kind::LocalCache,
            6 => Kind::Hold,
            8 => Kind::AuditSegment,
            9 => Kind::LifecycleRecord,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::Blob => "blob",
            Kind::PackHeader => "pack-header",
            Kind::Index => "index",
            Kind::Generation => "generation",
            Kind::Keystore => "keystore",
            Kind::LocalCache => "local-cache",
            Kind::Hold => "hold",
            Kind::AuditSegment => "audit-segment",
            Kind::LifecycleRecord => "lifecycle-record",
        }
    }
}

/// A 256-bit secret. Zeroized on drop; its `Debug` never shows the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        SecretKey(b)
    }
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        rand::fill(&mut b);
        SecretKey(b)
    }
    /// The raw bytes, for wrapping only. Callers MUST NOT log, print or persist them.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
    /// HKDF-SHA256 expansion of this key into a named subkey.
    pub fn derive(&self, info: &[u8]) -> SecretKey {
        let hk = Hkdf::<Sha256>::new(None, &self.0);
        let mut out = [0u8; 32];
        hk.expand(info, &mut out).expect("32 bytes is a valid HKDF-SHA256 output length");
        SecretKey(out)
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Where an object belongs. Everything here is bound into the object's key.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The tenant id, or "" for objects of the whole store (keystore snapshots).
    pub tenant: &'a str,
    pub kind: Kind,
    /// The object's id: blob id, pack id, generation id... in lower-case hex or the id's text.
    pub id: &'a str,
    pub key_version: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("not a reversa sealed object (bad magic or shorter than its header)")]
    NotSealed,
    #[error("sealed with format version {0}, which this reversa does not read; upgrade reversa")]
    UnsupportedVersion(u8),
    #[error("header is malformed ({0})")]
    BadHeader(&'static str),
    #[error("sealed as a {found}, expected a {expected}")]
    WrongKind { found: String, expected: &'static str },
    #[error("sealed with key version {found}, expected {expected}")]
    WrongKeyVersion { found: u32, expected: u32 },
    #[error(
        "key commitment does not match: the object was sealed for another tenant or id, or the \
         key is wrong"
    )]
    WrongKeyOrContext,
    #[error("chunk {0} failed authentication: the object is corrupted or its chunks were reordered")]
    ChunkAuth(u64),
    #[error("the object is truncated: it ends before its final chunk")]
    Truncated,
    #[error("the object has data after its final chunk")]
    TrailingData,
}

/// The per-object key and commitment, derived from the tenant key, the salt and the context.
fn object_key(key: &SecretKey, salt: &[u8; 32], ctx: &Context) -> ([u8; 32], [u8; 16]) {
    let hk = Hkdf::<Sha256>::new(Some(salt), key.expose());
    let mut info = Vec::with_capacity(64 + ctx.tenant.len() + ctx.id.len());
    info.extend_from_slice(b"reversa/v1/object");
    for part in [ctx.tenant.as_bytes(), ctx.id.as_bytes()] {
        // Length-prefixed, so ("ab","c") and ("a","bc") derive different keys.
        info.extend_from_slice(&(part.len() as u32).to_be_bytes());
        info.extend_from_slice(part);
    }
    info.push(ctx.kind as u8);
    info.extend_from_slice(&ctx.key_version.to_be_bytes());
    let mut okm = [0u8; 48];
    hk.expand(&info, &mut okm).expect("48 bytes is a valid HKDF-SHA256 output length");
    let mut k = [0u8; 32];
    let mut c = [0u8; 16];
    k.copy_from_slice(&okm[..32]);
    c.copy_from_slice(&okm[32..]);
    okm.zeroize();
    (k, c)
}

fn nonce(index: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    // An 11-byte big-endian counter; u64 fills the low 8 bytes, which no object will outgrow.
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = last as u8;
    n
}

fn header(ctx: &Context, salt: &[u8; 32], commitment: &[u8; 16]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = FORMAT_VERSION;
    h[5] = ctx.kind as u8;
    h[6] = CHUNK_EXP;
    h[8..12].copy_from_slice(&ctx.key_version.to_be_bytes());
    h[12..44].copy_from_slice(salt);
    h[44..60].copy_from_slice(commitment);
    h
}

/// The sealed length of a plaintext of `len` bytes.
pub fn sealed_len(len: usize) -> usize {
    let chunks = if len == 0 { 1 } else { len.div_ceil(CHUNK_LEN) };
    HEADER_LEN + len + chunks * TAG_LEN
}

/// Seal `plaintext` for `ctx` under `key` with a fresh random salt.
pub fn seal(key: &SecretKey, ctx: &Context, plaintext: &[u8]) -> Vec<u8> {
    let mut salt = [0u8; 32];
    rand::fill(&mut salt);
    seal_with_salt(key, ctx, &salt, plaintext)
}

/// Seal with a given salt. Only for test vectors: reusing a salt for two plaintexts in the same
/// context reuses the key and nonces, which breaks GCM. Everything else MUST call [`seal`].
#[doc(hidden)]
pub fn seal_with_salt(key: &SecretKey, ctx: &Context, salt: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sealed_len(plaintext.len()));
    seal_parts_into(key, ctx, salt, &[plaintext], &mut out);
    out
}

/// Seal the concatenation of `parts` and append the sealed object to `out`, so callers can seal
/// a prefix and a payload, or seal straight into a pack, without first copying them together.
/// The salt MUST be fresh random bytes (see [`seal_with_salt`]).
pub fn seal_parts_into(key: &SecretKey, ctx: &Context, salt: &[u8; 32], parts: &[&[u8]], out: &mut Vec<u8>) {
    let (mut k, commitment) = object_key(key, salt, ctx);
    let cipher = Aes256Gcm::new_from_slice(&k).expect("32-byte key");
    k.zeroize();
    let hdr = header(ctx, salt, &commitment);
    let total: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(sealed_len(total));
    out.extend_from_slice(&hdr);
    let n_chunks = if total == 0 { 1 } else { total.div_ceil(CHUNK_LEN) };
    let mut part = 0;
    let mut offset = 0;
    for i in 0..n_chunks {
        let at = out.len();
        let mut want = CHUNK_LEN.min(total - i * CHUNK_LEN);
        while want > 0 {
            let p = parts[part];
            let take = want.min(p.len() - offset);
            out.extend_from_slice(&p[offset..offset + take]);
            offset += take;
            want -= take;
            if offset == p.len() {
                part += 1;
                offset = 0;
            }
        }
        let nonce = nonce(i as u64, i + 1 == n_chunks);
        let tag = cipher
            .encrypt_inout_detached(&nonce.into(), &hdr, (&mut out[at..]).into())
            .expect("AES-GCM encryption of at most 64 KiB cannot fail");
        out.extend_from_slice(&tag);
    }
}

/// Seal the concatenation of `parts` with a fresh random salt, appending to `out`.
pub fn seal_into(key: &SecretKey, ctx: &Context, parts: &[&[u8]], out: &mut Vec<u8>) {
    let mut salt = [0u8; 32];
    rand::fill(&mut salt);
    seal_parts_into(key, ctx, &salt, parts, out);
}

/// The header fields a reader can see before opening: useful to name what an object claims to be.
pub struct HeaderInfo {
    pub kind: Option<Kind>,
    pub key_version: u32,
}

pub fn peek_header(sealed: &[u8]) -> Result<HeaderInfo, OpenError> {
    if sealed.len() < HEADER_LEN || &sealed[..4] != MAGIC {
        return Err(OpenError::NotSealed);
    }
    if sealed[4] != FORMAT_VERSION {
        return Err(OpenError::UnsupportedVersion(sealed[4]));
    }
    Ok(HeaderInfo {
        kind: Kind::from_u8(sealed[5]),
        key_version: u32::from_be_bytes(sealed[8..12].try_into().expect("4 bytes")),
    })
}

/// Open a sealed object, checking that it was sealed for exactly `ctx`.
pub fn open(key: &SecretKey, ctx: &Context, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    let info = peek_header(sealed)?;
    match info.kind {
        Some(k) if k == ctx.kind => {}
        Some(k) => return Err(OpenError::WrongKind { found: k.name().to_string(), expected: ctx.kind.name() }),
        None => return Err(OpenError::BadHeader("unknown kind")),
    }
    if sealed[6] != CHUNK_EXP {
        return Err(OpenError::BadHeader("unsupported chunk size"));
    }
    if sealed[7] != 0 || sealed[60..64] != [0u8; 4] {
        return Err(OpenError::BadHeader("reserved bytes are not zero"));
    }
    if info.key_version != ctx.key_version {
        return Err(OpenError::WrongKeyVersion { found: info.key_version, expected: ctx.key_version });
    }
    let hdr = &sealed[..HEADER_LEN];
    let salt: [u8; 32] = hdr[12..44].try_into().expect("32 bytes");
    let (mut k, commitment) = object_key(key, &salt, ctx);
    // Constant-time comparison is not needed: the commitment is public once the object exists.
    if hdr[44..60] != commitment {
        k.zeroize();
        return Err(OpenError::WrongKeyOrContext);
    }
    let cipher = Aes256Gcm::new_from_slice(&k).expect("32-byte key");
    k.zeroize();

    let body = &sealed[HEADER_LEN..];
    let full = CHUNK_LEN + TAG_LEN;
    let mut out = Vec::with_capacity(body.len());
    let mut pos = 0usize;
    let mut index = 0u64;
    loop {
        let rest = body.len() - pos;
        if rest < TAG_LEN {
            // A missing final chunk leaves nothing (or a stub) where it should be.
            return Err(OpenError::Truncated);
        }
        let take = rest.min(full);
        let is_last = rest <= full;
        let chunk = &body[pos..pos + take];
        let (ct, tag) = chunk.split_at(take - TAG_LEN);
        let at = out.len();
        out.extend_from_slice(ct);
        let tag: [u8; TAG_LEN] = tag.try_into().expect("16 bytes");
        let ok = cipher
            .decrypt_inout_detached(&nonce(index, is_last).into(), hdr, (&mut out[at..]).into(), &tag.into())
            .is_ok();
        if !ok {
            if is_last && take == full {
                // A full chunk at the end that only opens as a middle chunk: the real final chunk
                // was cut off.
                out.truncate(at);
                out.extend_from_slice(ct);
                if cipher
                    .decrypt_inout_detached(&nonce(index, false).into(), hdr, (&mut out[at..]).into(), &tag.into())
                    .is_ok()
                {
                    return Err(OpenError::Truncated);
                }
            }
            if !is_last && take == full {
                // A middle chunk that opens as a final one: data was appended after the end.
                let mut probe = ct.to_vec();
                if cipher
                    .decrypt_inout_detached(&nonce(index, true).into(), hdr, probe.as_mut_slice().into(), &tag.into())
                    .is_ok()
                {
                    return Err(OpenError::TrailingData);
                }
            }
            return Err(OpenError::ChunkAuth(index));
        }
        if is_last {
            // An empty final chunk is only valid for an empty object: otherwise a writer could be
            // made to look finished at a chunk boundary.
            if ct.is_empty() && index > 0 {
                return Err(OpenError::ChunkAuth(index));
            }
            return Ok(out);
        }
        pos += take;
        index += 1;
    }
}

/// Wrap a data key under the master key's wrapping subkey (AES-256-GCM, random nonce). The
/// associated data binds the wrapped key to its tenant and version, so a wrapped key copied to
/// another tenant's entry does not open.
pub fn wrap_key(kek: &SecretKey, aad: &[u8], dek: &SecretKey) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(kek.expose()).expect("32-byte key");
    let mut n = [0u8; 12];
    rand::fill(&mut n);
    let mut buf = dek.expose().to_vec();
    let tag = cipher
        .encrypt_inout_detached(&n.into(), aad, buf.as_mut_slice().into())
        .expect("AES-GCM encryption of 32 bytes cannot fail");
    let mut out = Vec::with_capacity(12 + 32 + 16);
    out.extend_from_slice(&n);
    out.extend_from_slice(&buf);
    out.extend_from_slice(&tag);
    buf.zeroize();
    out
}

/// Unwrap a data key. `None` means the master key is wrong or the entry was tampered with.
pub fn unwrap_key(kek: &SecretKey, aad: &[u8], wrapped: &[u8]) -> Option<SecretKey> {
    if wrapped.len() != 12 + 32 + 16 {
        return None;
    }
    let cipher = Aes256Gcm::new_from_slice(kek.expose()).expect("32-byte key");
    let n: [u8; 12] = wrapped[..12].try_into().ok()?;
    let tag: [u8; 16] = wrapped[44..].try_into().ok()?;
    let mut buf: [u8; 32] = wrapped[12..44].try_into().ok()?;
    let ok = cipher.decrypt_inout_detached(&n.into(), aad, buf.as_mut_slice().into(), &tag.into()).is_ok();
    let key = ok.then(|| SecretKey::from_bytes(buf));
    buf.zeroize();
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx<'a>(id: &'a str) -> Context<'a> {
        Context { tenant: "comune-a", kind: Kind::Blob, id, key_version: 1 }
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..3 * CHUNK_LEN + 7)) {
            let key = SecretKey::random();
            let sealed = seal(&key, &ctx("x"), &data);
            prop_assert_eq!(sealed.len(), sealed_len(data.len()));
            prop_assert_eq!(open(&key, &ctx("x"), &sealed).unwrap(), data);
        }

        #[test]
        fn sealing_parts_equals_sealing_their_concatenation(
            a in proptest::collection::vec(any::<u8>(), 0..CHUNK_LEN + 9),
            b in proptest::collection::vec(any::<u8>(), 0..2 * CHUNK_LEN),
        ) {
            let key = SecretKey::random();
            let salt = [3u8; 32];
            let mut parts = Vec::new();
            seal_parts_into(&key, &ctx("x"), &salt, &[&a, &b], &mut parts);
            prop_assert_eq!(parts, seal_with_salt(&key, &ctx("x"), &salt, &[a, b].concat()));
        }

        #[test]
        fn any_single_bit_flip_is_rejected(len in 0usize..2 * CHUNK_LEN + 3, bit in any::<prop::sample::Index>()) {
            let key = SecretKey::random();
            let data = vec![7u8; len];
            let mut sealed = seal(&key, &ctx("x"), &data);
            let b = bit.index(sealed.len() * 8);
            sealed[b / 8] ^= 1 << (b % 8);
            prop_assert!(open(&key, &ctx("x"), &sealed).is_err());
        }
    }

    #[test]
    fn exact_chunk_multiple_truncated_at_boundary_is_truncated() {
        let key = SecretKey::random();
        let data = vec![1u8; 2 * CHUNK_LEN];
        let sealed = seal(&key, &ctx("x"), &data);
        let cut = &sealed[..HEADER_LEN + CHUNK_LEN + TAG_LEN];
        assert_eq!(open(&key, &ctx("x"), cut), Err(OpenError::Truncated));
    }

    #[test]
    fn wrapped_key_is_bound_to_its_aad() {
        let kek = SecretKey::random();
        let dek = SecretKey::random();
        let w = wrap_key(&kek, b"tenant-a/1", &dek);
        assert_eq!(unwrap_key(&kek, b"tenant-a/1", &w).unwrap().expose(), dek.expose());
        assert!(unwrap_key(&kek, b"tenant-b/1", &w).is_none());
        assert!(unwrap_key(&SecretKey::random(), b"tenant-a/1", &w).is_none());
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = SecretKey::from_bytes([0xAB; 32]);
        let s = format!("{k:?}");
        assert!(!s.to_lowercase().contains("ab, ") && !s.contains("171"), "{s}");
    }
}
