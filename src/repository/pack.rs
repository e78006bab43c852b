//! Packs: many sealed blobs in one object, so the store sees few large objects instead of many
//! small ones. A pack ends with its own sealed header (the list of its blobs) and the header's
//! length, so the index can always be rebuilt from the packs alone.
//!
//! ```text
//! sealed blob 0 | sealed blob 1 | ... | sealed pack header | header length (u32 LE)
//! pack header plaintext: per blob: blob id (32) | offset (u64 LE) | sealed length (u32 LE)
//! ```

use crate::crypto::{Kind, OpenError};
use crate::keys::{BlobId, TenantKeys};

/// Target size of a pack. Large enough for few requests per GB (128 per GB), small enough that
/// the packs being built and uploaded (one per sealer thread, one queued and the uploads in flight)
/// stay a small, bounded amount of memory.
pub const TARGET_SIZE: usize = 8 * 1024 * 1024;
const ENTRY_LEN: usize = 32 + 8 + 4;
/// Room reserved for the sealed pack header: enough for about 1,400 blobs. Packs of many tiny
/// blobs (small files) grow their buffer once at the end; that is rare and harmless.
const HEADER_ROOM: usize = 64 * 1024;
/// The capacity of a pack's buffer: a pack never outgrows it (but see [`HEADER_ROOM`]).
pub const BUFFER_LEN: usize = TARGET_SIZE + HEADER_ROOM;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackBlob {
    pub id: BlobId,
    pub offset: u64,
    pub length: u32,
}

pub struct PackBuilder {
    pub id: [u8; 32],
    buf: Vec<u8>,
    blobs: Vec<PackBlob>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PackBuilder {
    pub fn new() -> PackBuilder {
        PackBuilder::on(Vec::with_capacity(BUFFER_LEN))
    }

    /// A pack built in `buf` (cleared first), say the buffer of a pack already uploaded (see
    /// [`crate::pool`]). A buffer of [`BUFFER_LEN`] never grows while blobs are added (the header
    /// may, see [`HEADER_ROOM`]).
    pub fn on(mut buf: Vec<u8>) -> PackBuilder {
        let mut id = [0u8; 32];
        rand::fill(&mut id);
        buf.clear();
        PackBuilder { id, buf, blobs: Vec::new() }
    }

    /// Seal a blob straight into the pack.
    pub fn add_blob(
        &mut self,
        sealer: &mut crate::repository::BlobSealer,
        keys: &TenantKeys,
        id: BlobId,
        plain: &[u8],
    ) {
        let offset = self.buf.len();
        sealer.seal_into(keys, &id, plain, &mut self.buf);
        self.blobs.push(PackBlob { id, offset: offset as u64, length: (self.buf.len() - offset) as u32 });
    }

    /// Append a blob that is already sealed, as it is (prune moves used blobs out of half-empty
    /// packs this way). This is sound because a sealed blob is bound to its tenant, kind, blob id
    /// and key version (the header and the key derivation), never to its pack or its offset:
    /// the bytes open the same wherever they sit. You MUST have verified them (`open_blob`)
    /// first, so that a damaged blob is never given a new pack and a fresh index entry.
    pub fn add_sealed(&mut self, id: BlobId, sealed: &[u8]) {
        let offset = self.buf.len();
        self.buf.extend_from_slice(sealed);
        self.blobs.push(PackBlob { id, offset: offset as u64, length: sealed.len() as u32 });
    }

    /// Whether a sealed blob of `sealed_len` bytes still fits (see [`fits`]).
    pub fn has_room(&self, sealed_len: usize) -> bool {
        fits(self.buf.len(), sealed_len)
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Seal the header onto the pack. Returns the pack's bytes and its blobs.
    pub fn finish(mut self, keys: &TenantKeys) -> (Vec<u8>, Vec<PackBlob>) {
        let mut header = Vec::with_capacity(self.blobs.len() * ENTRY_LEN);
        for b in &self.blobs {
            header.extend_from_slice(&b.id);
            header.extend_from_slice(&b.offset.to_le_bytes());
            header.extend_from_slice(&b.length.to_le_bytes());
        }
        let sealed = keys.seal(Kind::PackHeader, &hex::encode(self.id), &header);
        let data_len = self.buf.len() as u64;
        self.buf.extend_from_slice(&sealed);
        self.buf.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        debug_assert_eq!(self.buf.len() as u64, packed_len(data_len, self.blobs.len()));
        (self.buf, self.blobs)
    }
}

/// Whether a sealed blob of `sealed_len` bytes may go into a pack that holds `pack_len` bytes:
/// a pack ships before it would outgrow [`TARGET_SIZE`], so its buffer is never reallocated, but
/// an empty pack takes any blob.
pub fn fits(pack_len: usize, sealed_len: usize) -> bool {
    pack_len == 0 || pack_len + sealed_len <= TARGET_SIZE
}

/// The size of a finished pack whose sealed blobs, `blobs` of them, take `data_len` bytes.
pub fn packed_len(data_len: u64, blobs: usize) -> u64 {
    data_len + crate::crypto::sealed_len(blobs * ENTRY_LEN) as u64 + 4
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("pack is too short to hold a header")]
    TooShort,
    #[error("pack header length {0} does not fit in the pack")]
    BadHeaderLength(u32),
    #[error("pack header does not open: {0}")]
    Header(OpenError),
    #[error("pack header is malformed")]
    Malformed,
}

/// Read the blob list of a whole pack from its sealed header.
pub fn read_header(keys: &TenantKeys, pack_id: &str, pack: &[u8]) -> Result<Vec<PackBlob>, PackError> {
    if pack.len() < 4 {
        return Err(PackError::TooShort);
    }
    let hlen = u32::from_le_bytes(pack[pack.len() - 4..].try_into().expect("4 bytes"));
    let start = (pack.len() - 4).checked_sub(hlen as usize).ok_or(PackError::BadHeaderLength(hlen))?;
    let plain = keys.open(Kind::PackHeader, pack_id, &pack[start..pack.len() - 4]).map_err(PackError::Header)?;
    if plain.len() % ENTRY_LEN != 0 {
        return Err(PackError::Malformed);
    }
    let blobs: Vec<PackBlob> = plain
        .chunks_exact(ENTRY_LEN)
        .map(|e| PackBlob {
            id: e[..32].try_into().expect("32 bytes"),
            offset: u64::from_le_bytes(e[32..40].try_into().expect("8 bytes")),
            length: u32::from_le_bytes(e[40..44].try_into().expect("4 bytes")),
        })
        .collect();
    if blobs.iter().any(|b| b.offset + b.length as u64 > start as u64) {
        return Err(PackError::Malformed);
    }
    Ok(blobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_in_a_used_buffer_starts_empty_with_a_new_id() {
        let keys = TenantKeys::for_tests("t1");
        let mut pack = PackBuilder::new();
        pack.add_sealed([1; 32], b"sealed bytes");
        let id = hex::encode(pack.id);
        let (bytes, blobs) = pack.finish(&keys);
        assert_eq!(read_header(&keys, &id, &bytes).unwrap(), blobs);
        let ptr = bytes.as_ptr();
        // A finished pack's buffer is still one the backup's pool takes back (it was not shrunk
        // or reallocated), through the uploader's round trip.
        let pool = crate::pool::BufferPool::new("packs", 1, BUFFER_LEN);
        pool.give_back(bytes::Bytes::from(bytes));
        let again = PackBuilder::on(pool.take());
        assert_eq!(again.buf.as_ptr(), ptr, "the buffer is reused");
        assert!(again.is_empty(), "a reused buffer starts with no blobs");
        assert_eq!(again.buf.len(), 0, "and no bytes");
        assert_ne!(hex::encode(again.id), id, "a new pack gets a new id");
    }
}
