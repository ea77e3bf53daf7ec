//! The global allocator: the system allocator, except that very large requests are
//! reserved lazily.
//!
//! Why: `kafka-protocol` 0.18 pre-allocates arrays with the element count read from the
//! wire (`Vec::with_capacity(n)`), so a 20-byte request can ask for 100+ GiB. The system
//! allocator refuses, and Rust aborts the process on a refused allocation: one client
//! could kill the node. Reserving such requests with `MAP_NORESERVE` makes them succeed
//! without committing memory; the decoder then fails on the missing bytes, frees the
//! untouched reservation, and the connection alone is closed. Legitimate allocations
//! this large do not occur (requests are capped at `socket-request-max-bytes`).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// Requests at or above this size are reserved lazily.
const LAZY_THRESHOLD: usize = 1 << 30;

pub struct Allocator;

// SAFETY: every block is either from `System` or from `mmap`, chosen by its size, and is
// returned to the same source, since `dealloc` receives the same layout as `alloc`.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() < LAZY_THRESHOLD {
            return unsafe { System.alloc(layout) };
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
            unsafe { System.dealloc(ptr, layout) };
        } else {
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.size() < LAZY_THRESHOLD && new_size < LAZY_THRESHOLD {
            return unsafe { System.realloc(ptr, layout, new_size) };
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
}
