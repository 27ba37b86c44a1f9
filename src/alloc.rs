//! The extension's own allocator: large blocks straight from the kernel, the rest from the C
//! library's `malloc`, so that a large buffer's memory goes back to the system when it is freed.
//!
//! Why: glibc serves a block above its mmap threshold with its own mapping, but raises that
//! threshold (up to 32 MiB) each time such a block is freed, so from then on multi-MiB buffers —
//! upload parts, spools, compaction's decoded pages — come from the per-thread arenas, and an
//! arena keeps what it got: the soak's RSS was a 100–190 MiB sawtooth that followed compaction,
//! a quarter of it arenas (`MALLOC_ARENA_MAX=2` cut the peak from 102 to 79 MiB). Setting
//! `M_MMAP_THRESHOLD` or `M_ARENA_MAX` would change the host's allocator for the whole process;
//! this changes only where the extension's own blocks come from (`#[global_allocator]` of a
//! cdylib covers the Rust code in it, never the host's or SQLite's `malloc` calls).
//!
//! Invariants:
//! - A block is large (mmap) iff its size is at least `LARGE` and its alignment at most a page;
//!   `dealloc` and `realloc` get the same layout size the block was made with, so the same test
//!   tells them which allocator owns it. Everything else goes to `std::alloc::System`.
//! - A failed mmap / mremap returns null (Rust's allocation-error path), never a bad pointer.
//!
//! The small blocks stay with `malloc`, whose arenas keep what a burst of them took (a
//! compaction's download chunks, a snapshot's pages): after such work the extension asks the C
//! library to give its free pages back (`release_free_heap`, glibc's `malloc_trim`), which
//! changes no setting of the host's allocator and only returns memory nobody holds.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Blocks this large or larger are mapped: big enough that the syscall and page faults are small
/// beside filling the block, small enough to catch every buffer that can hold part of a file.
pub const LARGE: usize = 1 << 20;
const PAGE: usize = 4096;

pub struct ExtensionAllocator;

/// At most one trim per this interval, process-wide: a thousand databases' compactions finish
/// many jobs a second, and each trim walks every arena under its lock.
const TRIM_EVERY_MS: u64 = 1000;
static LAST_TRIM_MS: AtomicU64 = AtomicU64::new(0);

/// After work that allocated many small blocks at once: hand the C library's free heap pages
/// back to the system (a no-op where the C library has no `malloc_trim`, or within
/// `TRIM_EVERY_MS` of the last trim). Returns whether it trimmed.
pub fn release_free_heap() -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let last = LAST_TRIM_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) < TRIM_EVERY_MS
        || LAST_TRIM_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return false;
    }
    trim()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim has no preconditions; it takes each arena's lock itself.
    unsafe { libc::malloc_trim(0) };
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

fn is_large(size: usize, align: usize) -> bool {
    size >= LARGE && align <= PAGE
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions; the
    // result is checked for MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: every block is either a fresh anonymous mapping of at least the layout's size (page
// aligned, so any alignment up to a page holds) or comes from `System`; `is_large` on the layout
// routes each call to the allocator that made the block (see the module invariants).
unsafe impl GlobalAlloc for ExtensionAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size(), layout.align()) {
            // SAFETY: see `map`.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size(), layout.align()) {
            // SAFETY: see `map`; anonymous mappings are zero-filled.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if is_large(layout.size(), layout.align()) {
            // SAFETY: the block is our mapping of `layout.size()` bytes (rounded up to pages
            // by the kernel, as munmap rounds too).
            unsafe { libc::munmap(block.cast(), layout.size()) };
        } else {
            // SAFETY: `System` made this block with this layout.
            unsafe { System.dealloc(block, layout) }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (was, will) = (
            is_large(layout.size(), layout.align()),
            is_large(new_size, layout.align()),
        );
        match (was, will) {
            // SAFETY: `System` made this block with this layout.
            (false, false) => unsafe { System.realloc(block, layout, new_size) },
            (true, true) => {
                // SAFETY: the block is our mapping of `layout.size()` bytes; mremap may move it
                // (keeping its contents) and returns MAP_FAILED, leaving it intact, on failure.
                let p = unsafe {
                    libc::mremap(block.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE)
                };
                if p == libc::MAP_FAILED {
                    ptr::null_mut()
                } else {
                    p.cast()
                }
            }
            _ => {
                // Across the threshold: a block of the other kind, the contents, the old freed.
                // SAFETY: `new_size` is non-zero and the alignment a valid one (the caller's).
                let new_layout =
                    unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                // SAFETY: as `alloc`.
                let p = unsafe { self.alloc(new_layout) };
                if !p.is_null() {
                    // SAFETY: both blocks are valid for the smaller size and do not overlap.
                    unsafe {
                        ptr::copy_nonoverlapping(block, p, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                }
                p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cross_the_threshold_with_their_contents() {
        // Called directly, so the test does not depend on what the collections happen to allocate.
        let a = ExtensionAllocator;
        let small = Layout::from_size_align(1000, 8).unwrap();
        unsafe {
            let p = a.alloc(small);
            assert!(!p.is_null());
            for i in 0..1000 {
                *p.add(i) = (i % 251) as u8;
            }
            // Up into a mapping, grown in place or moved by mremap, back down to malloc.
            let p = a.realloc(p, small, 3 * LARGE);
            assert!(!p.is_null());
            *p.add(3 * LARGE - 1) = 7;
            let big = Layout::from_size_align(3 * LARGE, 8).unwrap();
            let p = a.realloc(p, big, 5 * LARGE + 3);
            assert!(!p.is_null());
            assert_eq!(*p.add(3 * LARGE - 1), 7);
            let bigger = Layout::from_size_align(5 * LARGE + 3, 8).unwrap();
            let p = a.realloc(p, bigger, 500);
            assert!(!p.is_null());
            for i in 0..500 {
                assert_eq!(*p.add(i), (i % 251) as u8);
            }
            a.dealloc(p, Layout::from_size_align(500, 8).unwrap());
            let z = a.alloc_zeroed(big);
            assert!(std::slice::from_raw_parts(z, 3 * LARGE)
                .iter()
                .all(|&b| b == 0));
            a.dealloc(z, big);
        }
    }

    #[test]
    fn only_page_aligned_or_less_blocks_are_mapped() {
        assert!(is_large(LARGE, 8) && is_large(LARGE, PAGE));
        assert!(!is_large(LARGE - 1, 8) && !is_large(LARGE, 2 * PAGE));
    }

    #[test]
    fn heap_trims_are_at_most_one_a_second() {
        // Whoever trimmed first (another test's compaction may have), the next call within the
        // second does not.
        release_free_heap();
        assert!(!release_free_heap());
    }
}
