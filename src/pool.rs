//! Pools of large byte buffers that the backup pipeline fills and hands on again and again: the
//! chunks the readers cut (up to 4 MiB) and the packs the sealers build (8 MiB).
//!
//! Why: backup maps every buffer of 1 MiB or more fresh from the kernel (`main.rs`,
//! `tune_allocator`), and the kernel faults in and zeroes each page on its first write, then
//! unmaps it on free. For buffers made and freed a thousand times per GB, that was a tenth of a
//! backup's CPU. A pool keeps up to `max` idle buffers instead. A buffer is allocated only when
//! none is idle, so the buffers alive never outnumber those in flight at the busiest moment. The
//! cost: an idle buffer stays resident up to the most it ever held, until the pool is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A pool of buffers of at least `capacity` bytes, shared by the threads that take and give back.
#[derive(Clone)]
pub struct BufferPool(Arc<Inner>);

struct Inner {
    /// For the debug log: which pool this is.
    name: &'static str,
    free: Mutex<Vec<Vec<u8>>>,
    max: usize,
    capacity: usize,
    allocated: AtomicU64,
    reused: AtomicU64,
}

impl BufferPool {
    /// A pool that keeps at most `max` idle buffers of `capacity` bytes.
    pub fn new(name: &'static str, max: usize, capacity: usize) -> BufferPool {
        BufferPool(Arc::new(Inner {
            name,
            free: Mutex::new(Vec::with_capacity(max)),
            max,
            capacity,
            allocated: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        }))
    }

    /// An empty buffer that holds `capacity` bytes without growing: an idle one if there is one.
    pub fn take(&self) -> Vec<u8> {
        let idle = self.0.free.lock().expect("buffer pool lock").pop();
        match idle {
            Some(mut buf) => {
                self.0.reused.fetch_add(1, Ordering::Relaxed);
                buf.clear();
                buf
            }
            None => {
                self.0.allocated.fetch_add(1, Ordering::Relaxed);
                Vec::with_capacity(self.0.capacity)
            }
        }
    }

    /// Keep `buf` for a later [`BufferPool::take`], if there is room among the idle buffers and
    /// it is large enough; otherwise it is freed.
    pub fn keep(&self, buf: Vec<u8>) {
        let mut free = self.0.free.lock().expect("buffer pool lock");
        if free.len() < self.0.max && buf.capacity() >= self.0.capacity {
            free.push(buf);
        }
    }

    /// Keep the buffer behind `bytes` (see [`BufferPool::keep`]) if nothing else still holds it:
    /// a request that lingers or a retry may.
    pub fn give_back(&self, bytes: bytes::Bytes) {
        if let Ok(mut buf) = bytes.try_into_mut() {
            // Cleared first: turning a BytesMut back into a Vec copies its bytes to the start of
            // the allocation, for nothing here.
            buf.clear();
            self.keep(buf.into());
        }
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.0.free.lock().unwrap().len()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        tracing::debug!(
            pool = self.name,
            allocated = self.allocated.load(Ordering::Relaxed),
            reused = self.reused.load(Ordering::Relaxed),
            "buffer pool"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_the_pool_stays_bounded() {
        let pool = BufferPool::new("test", 1, 1024);
        let mut buf = pool.take();
        assert!(buf.capacity() >= 1024);
        buf.extend_from_slice(b"payload");
        let ptr = buf.as_ptr();
        // The round trip the uploader makes: the Vec becomes Bytes for the store, and comes
        // back once the store has let go of its copy.
        let shared = bytes::Bytes::from(buf);
        let held = shared.clone();
        pool.give_back(shared.clone());
        assert_eq!(pool.idle(), 0, "bytes still held elsewhere are not kept");
        drop(held);
        pool.give_back(shared);
        assert_eq!(pool.idle(), 1);
        // A second buffer beyond the bound is freed, not kept.
        pool.keep(Vec::with_capacity(1024));
        assert_eq!(pool.idle(), 1);
        let again = pool.take();
        assert_eq!(again.as_ptr(), ptr, "the buffer given back is reused");
        assert!(again.is_empty(), "and starts empty");
        // Too small to serve a take: never kept, even with room.
        pool.keep(vec![0u8; 16]);
        assert_eq!(pool.idle(), 0);
        assert_eq!(pool.0.allocated.load(Ordering::Relaxed), 1);
        assert_eq!(pool.0.reused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_buffer_filled_to_capacity_comes_back_whole() {
        // `Bytes` takes another path for a Vec with no spare room; the buffer must survive it.
        let pool = BufferPool::new("test", 1, 4096);
        let mut buf = pool.take();
        buf.resize(buf.capacity(), 7);
        let (ptr, cap) = (buf.as_ptr(), buf.capacity());
        pool.give_back(bytes::Bytes::from(buf));
        let again = pool.take();
        assert_eq!((again.as_ptr(), again.capacity(), again.len()), (ptr, cap, 0));
    }
}
