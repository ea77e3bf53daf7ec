//! Reusable buffers for Fetch answers.
//!
//! A Fetch answer is megabytes of record sets, read into one buffer and written to the
//! socket straight from it. A fresh allocation of that size per request came from the
//! kernel each time (glibc maps and unmaps large blocks), so every answer faulted in and
//! zeroed its pages again: about half a page fault per consumed 1 KiB record, 15% of
//! the node's CPU while serving consumers (perf). A buffer goes back to the pool when
//! the last reference to its bytes is dropped, that is when the answer has been written.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Buffers kept for reuse (about one per concurrently answered Fetch).
const RETAINED_BUFFERS: usize = 4;
/// Larger buffers are freed rather than kept, bounding what the pool holds.
const RETAINED_CAPACITY_MAX: usize = 64 << 20;

#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// An empty buffer with room for at least `capacity` bytes.
    pub(crate) fn take(&self, capacity: usize) -> Vec<u8> {
        let mut buf = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
        buf.reserve(capacity);
        buf
    }

    /// The buffer's bytes, shared; the buffer returns to the pool when they are dropped.
    pub(crate) fn share(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Lease { buf, pool: self.clone() })
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        if buf.capacity() > RETAINED_CAPACITY_MAX {
            return;
        }
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < RETAINED_BUFFERS {
            free.push(buf);
        }
    }
}

struct Lease {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Lease {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_returns_when_its_last_slice_is_dropped() {
        let pool = Arc::new(BufferPool::default());
        let mut buf = pool.take(1000);
        let address = buf.as_ptr();
        buf.extend_from_slice(b"abcdef");
        let shared = pool.share(buf);
        let tail = shared.slice(3..);
        drop(shared);
        assert!(pool.free.lock().unwrap().is_empty(), "a slice still refers to the buffer");
        assert_eq!(&tail[..], b"def");
        drop(tail);
        let again = pool.take(10);
        assert_eq!(again.as_ptr(), address, "the same allocation is reused");
        assert!(again.is_empty() && again.capacity() >= 1000);
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_bounded_buffers() {
        let pool = Arc::new(BufferPool::default());
        let shared: Vec<Bytes> = (0..RETAINED_BUFFERS + 2).map(|_| pool.share(pool.take(10))).collect();
        drop(shared);
        assert_eq!(pool.free.lock().unwrap().len(), RETAINED_BUFFERS);
        let big = pool.take(RETAINED_CAPACITY_MAX + 1);
        let before = pool.free.lock().unwrap().len();
        drop(pool.share(big));
        assert_eq!(pool.free.lock().unwrap().len(), before, "an oversized buffer is freed");
    }
}
