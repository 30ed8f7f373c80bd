//! The process's allocator: mimalloc, entered through its plain `malloc`
//! for the usual alignments.
//!
//! mimalloc's own `GlobalAlloc` (the `mimalloc` crate) passes every request
//! to `mi_malloc_aligned`. In mimalloc 3 that call takes its fast path only
//! when the first free block of the size class happens to sit at the asked
//! alignment; otherwise (a fresh page, or any request above 1 KiB, such as a
//! request's boxed future or a read buffer) it over-allocates by the
//! alignment and trims: ~170 instructions where `mi_malloc` takes ~20, about
//! six times per proxied request. Every mimalloc size class is a multiple of
//! 8 bytes and starts 8-aligned, so a request aligned to at most 8 needs
//! nothing beyond `mi_malloc`; larger alignments (tokio's cache-padded task
//! cells) still go through the aligned entry points.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Alignment every mimalloc block has without asking.
const PLAIN_ALIGN: usize = 8;

/// The global allocator of the `xlb` binary (see the module comment).
pub struct Allocator;

// SAFETY: each method hands the request to mimalloc, which returns blocks of
// at least the asked size, aligned to 8 from the plain entry points and to
// the asked alignment from the aligned ones; `dealloc` frees with `mi_free`,
// which takes blocks from either.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            unsafe { mi::mi_malloc(layout.size()) as *mut u8 }
        } else {
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            unsafe { mi::mi_zalloc(layout.size()) as *mut u8 }
        } else {
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8 }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= PLAIN_ALIGN {
            unsafe { mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8 }
        } else {
            unsafe {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks from the plain path honour every alignment up to 8 across the
    /// size classes a proxy uses, and the aligned path the larger ones.
    #[test]
    fn blocks_have_the_asked_alignment() {
        for align in [1usize, 2, 4, 8, 16, 64, 128] {
            for size in (align..=20_000).step_by(align.max(7)) {
                let layout = Layout::from_size_align(size, align).unwrap();
                let mut blocks = Vec::new();
                for _ in 0..3 {
                    // SAFETY: non-zero size; freed below with the same layout.
                    let p = unsafe { Allocator.alloc(layout) };
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    blocks.push(p);
                }
                // SAFETY: non-zero size; freed right after with the same layout.
                let z = unsafe { Allocator.alloc_zeroed(layout) };
                assert_eq!(z as usize % align, 0, "zeroed size {size} align {align}");
                // SAFETY: `z` is a live block of `size` bytes.
                assert!(unsafe { std::slice::from_raw_parts(z, size) }
                    .iter()
                    .all(|b| *b == 0));
                // SAFETY: allocated above with `layout`.
                unsafe { Allocator.dealloc(z, layout) };
                for p in blocks {
                    // SAFETY: allocated above with `layout`.
                    let q = unsafe { Allocator.realloc(p, layout, size * 2 + 1) };
                    assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                    let grown = Layout::from_size_align(size * 2 + 1, align).unwrap();
                    // SAFETY: `q` is the live block of `grown`'s size.
                    unsafe { Allocator.dealloc(q, grown) };
                }
            }
        }
    }
}
