//! The global allocator: jemalloc, keeping the memory it frees, except that very large
//! requests are reserved lazily.
//!
//! Why jemalloc, and why it keeps freed memory: the produce path frees its proposals,
//! request buffers and write batches about as fast as it allocates them. glibc's malloc
//! mapped such blocks on their own or trimmed its heap after them, so every round faulted
//! fresh, zeroed pages in again: 180,000-300,000 page faults per GiB produced, and about
//! a third of the connection threads' CPU on this VM. jemalloc reuses freed pages by size
//! class, but its default decay still handed them back within seconds (as many faults
//! with a 30 s decay), so purging is off, like a JVM's heap: the process keeps its peak.
//! RocksDB and librdkafka keep glibc's malloc (jemalloc slowed librdkafka's consumer by a
//! third).
//!
//! Why: `kafka-protocol` 0.18 pre-allocates arrays with the element count read from the
//! wire (`Vec::with_capacity(n)`), so a 20-byte request can ask for 100+ GiB. The system
//! allocator refuses, and Rust aborts the process on a refused allocation: one client
//! could kill the node. Reserving such requests with `MAP_NORESERVE` makes them succeed
//! without committing memory; the decoder then fails on the missing bytes, frees the
//! untouched reservation, and the connection alone is closed. Legitimate allocations
//! this large do not occur (requests are capped at `socket-request-max-bytes`).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};

use tikv_jemallocator::Jemalloc;

/// jemalloc's options, which it reads from this symbol when it starts: never purge freed
/// pages (see the module comment).
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_OPTIONS: &u8 = &b"dirty_decay_ms:-1,muzzy_decay_ms:-1\0"[0];

/// Requests at or above this size are reserved lazily.
const LAZY_THRESHOLD: usize = 1 << 30;

pub struct Allocator;

// SAFETY: every block is either from jemalloc or from `mmap`, chosen by its size, and is
// returned to the same source, since `dealloc` receives the same layout as `alloc`.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() < LAZY_THRESHOLD {
            return unsafe { Jemalloc.alloc(layout) };
        }
        // mmap returns page-aligned memory, enough for any Rust alignment below a page.
        if layout.align() > 4096 {
            return std::ptr::null_mut();
        }
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            ptr.cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() < LAZY_THRESHOLD {
            unsafe { Jemalloc.dealloc(ptr, layout) };
        } else {
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < LAZY_THRESHOLD && new_size < LAZY_THRESHOLD {
            return unsafe { Jemalloc.realloc(ptr, layout, new_size) };
        }
        // Crossing the threshold: move between sources.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new_ptr
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_huge_untouched_reservation_succeeds_and_is_freed() {
        // 64 GiB: more than this machine's memory, never touched.
        let v: Vec<u64> = Vec::with_capacity(8 << 30);
        assert!(v.capacity() >= 8 << 30);
        let mut small: Vec<u8> = Vec::with_capacity(16);
        small.extend_from_slice(b"still works");
        assert_eq!(small.len(), 11);
    }

    /// Minor page faults of the calling thread so far.
    fn thread_page_faults() -> i64 {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes one rusage into the buffer it is given.
        let usage = unsafe {
            assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()), 0);
            usage.assume_init()
        };
        usage.ru_minflt
    }

    #[test]
    fn a_freed_block_is_reused_without_faulting_its_pages_in_again() {
        let refaults = std::thread::spawn(|| {
            let touch = || {
                let block = vec![1u8; 8 << 20];
                assert_eq!(block[(8 << 20) - 1], 1);
            };
            touch();
            let before = thread_page_faults();
            touch();
            thread_page_faults() - before
        })
        .join()
        .expect("thread");
        // 8 MiB of fresh 4 KiB pages is 2,048 faults (what glibc's malloc gave).
        assert!(refaults < 100, "the second 8 MiB block faulted {refaults} pages in");
    }

    #[test]
    fn jemalloc_never_purges_freed_pages() {
        for option in [&b"opt.dirty_decay_ms\0"[..], b"opt.muzzy_decay_ms\0"] {
            // SAFETY: both options are ssize_t in jemalloc 5.
            let ms: isize = unsafe { tikv_jemalloc_ctl::raw::read(option) }.expect("read a jemalloc option");
            assert_eq!(ms, -1, "{}", String::from_utf8_lossy(option));
        }
    }
}
