//! Content-defined chunking (FastCDC 2020) over a pushed byte stream, so tables (encoded row by
//! row) and files (read in buffers) share one chunker without either being held whole.

use fastcdc::v2020::{cut_gear, get_gear_with_seed, select_masks, Normalization};
use std::borrow::Cow;

/// Chunk sizes: 512 KiB minimum, 1 MiB average, 4 MiB maximum. Large enough that per-blob
/// overhead (header, index entry, request) is negligible; the 4 MiB cap bounds every buffer in the
/// backup pipeline.
pub const MIN_SIZE: usize = 512 * 1024;
pub const AVG_SIZE: usize = 1024 * 1024;
pub const MAX_SIZE: usize = 4 * 1024 * 1024;

pub struct Chunker {
    buf: Vec<u8>,
    /// Start of the bytes not yet cut into a chunk.
    start: usize,
    masks: (u64, u64),
    gear: (Cow<'static, [u64]>, Cow<'static, [u64]>),
}

impl Chunker {
    /// A chunker whose gear table is keyed by the tenant's seed.
    pub fn new(seed: u64) -> Chunker {
        Chunker {
            buf: Vec::with_capacity(2 * MAX_SIZE),
            start: 0,
            masks: select_masks(AVG_SIZE, Normalization::Level1),
            gear: get_gear_with_seed(seed),
        }
    }

    /// The buffer to append input to. Call [`Chunker::drain`] after appending.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Append up to `max` bytes read from `r` straight into the buffer (no intermediate copy, no
    /// zeroing). Returns how many were read: 0 at the end of `r`. Call [`Chunker::drain`] after.
    pub fn read_from(&mut self, r: &mut impl std::io::Read, max: usize) -> std::io::Result<usize> {
        use std::io::Read;
        self.buf.reserve(max);
        r.take(max as u64).read_to_end(&mut self.buf)
    }

    /// Emit every chunk that can be cut without more input.
    pub fn drain<E>(&mut self, mut emit: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        while self.buf.len() - self.start >= MAX_SIZE {
            let n = self.cut();
            emit(&self.buf[self.start..self.start + n])?;
            self.start += n;
        }
        if self.start >= MAX_SIZE {
            // Compact rarely (not per chunk), so each byte is moved about once.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(())
    }

    /// Emit the remaining chunks at the end of a stream. The chunker is then empty and reusable.
    pub fn finish<E>(&mut self, mut emit: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        while self.start < self.buf.len() {
            let n = self.cut();
            emit(&self.buf[self.start..self.start + n])?;
            self.start += n;
        }
        self.buf.clear();
        self.start = 0;
        Ok(())
    }

    fn cut(&self) -> usize {
        let src = &self.buf[self.start..];
        let (ms, ml) = self.masks;
        let (_, n) = cut_gear(src, MIN_SIZE, AVG_SIZE, MAX_SIZE, ms, ml, ms << 1, ml << 1, &self.gear.0, &self.gear.1);
        n.max(1).min(src.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(data: &[u8], pieces: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut c = Chunker::new(seed);
        let mut out = Vec::new();
        for part in data.chunks(data.len().div_ceil(pieces).max(1)) {
            c.buffer().extend_from_slice(part);
            c.drain(|ch| {
                out.push(ch.to_vec());
                Ok::<_, ()>(())
            })
            .unwrap();
        }
        c.finish(|ch| {
            out.push(ch.to_vec());
            Ok::<_, ()>(())
        })
        .unwrap();
        out
    }

    fn random(n: usize) -> Vec<u8> {
        use rand::{RngCore, SeedableRng};
        let mut v = vec![0u8; n];
        rand::rngs::StdRng::seed_from_u64(42).fill_bytes(&mut v);
        v
    }

    #[test]
    fn boundaries_do_not_depend_on_how_input_is_pushed() {
        let data = random(9_000_000);
        let a = chunks(&data, 1, 7);
        let b = chunks(&data, 997, 7);
        assert_eq!(a, b);
        assert_eq!(a.concat(), data);
        assert!(a.iter().all(|c| c.len() <= MAX_SIZE));
        assert!(a.len() > 4 && a.iter().any(|c| c.len() < MAX_SIZE));
        assert_ne!(
            chunks(&data, 1, 8).iter().map(Vec::len).collect::<Vec<_>>(),
            a.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }

    #[test]
    fn reading_straight_into_the_buffer_cuts_the_same_chunks() {
        let data = random(9_000_000);
        let mut c = Chunker::new(7);
        let mut out = Vec::new();
        // Short reads, as from a pipe or a slow disk, of an odd size, and an odd amount asked
        // for each time: reads end anywhere relative to chunk boundaries.
        struct Trickle<'a>(&'a [u8]);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(7_919).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut reader = Trickle(&data);
        let mut take = |ch: &[u8]| {
            out.push(ch.to_vec());
            Ok::<_, ()>(())
        };
        while c.read_from(&mut reader, 654_321).unwrap() > 0 {
            c.drain(&mut take).unwrap();
        }
        c.finish(&mut take).unwrap();
        assert_eq!(out, chunks(&data, 1, 7));
    }

    #[test]
    fn an_insert_only_changes_nearby_chunks() {
        let data = random(8_000_000);
        let mut edited = data.clone();
        edited.splice(4_000_000..4_000_000, b"inserted".iter().copied());
        let a = chunks(&data, 3, 1);
        let b = chunks(&edited, 5, 1);
        let same = b.iter().filter(|c| a.contains(c)).count();
        assert!(same + 2 >= b.len(), "{same} of {} chunks kept", b.len());
    }
}
