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

/// Target size of a pack. Large enough for few requests per GB, small enough that a pack in
/// flight is a bounded amount of memory.
pub const TARGET_SIZE: usize = 16 * 1024 * 1024;
const ENTRY_LEN: usize = 32 + 8 + 4;

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
        let mut id = [0u8; 32];
        rand::fill(&mut id);
        PackBuilder { id, buf: Vec::with_capacity(TARGET_SIZE + crate::chunker::MAX_SIZE), blobs: Vec::new() }
    }

    pub fn add(&mut self, id: BlobId, sealed: &[u8]) {
        self.blobs.push(PackBlob { id, offset: self.buf.len() as u64, length: sealed.len() as u32 });
        self.buf.extend_from_slice(sealed);
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
        self.buf.extend_from_slice(&sealed);
        self.buf.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        (self.buf, self.blobs)
    }
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
