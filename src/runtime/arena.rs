//! `dso-runc`'s allocator where it is built for musl (scripts/release.sh): a bump arena in the
//! executable's zero-filled data, and the system allocator for what does not fit.
//!
//! musl's allocator hands freed memory back to the kernel straight away: a create that
//! `dso-runc` hands to the agent made about 30 `mmap`/`munmap` calls for a few KB of JSON,
//! each with a page fault, and cost 0.8 ms of CPU in `dso-runc` alone; with this arena,
//! 0.2 ms (BENCHMARKS.md, thirteenth session). `dso-runc` lives for one runc call, so memory
//! freed into the arena is never reused and never handed back: the arena's pages are touched
//! only as far as they are used, and whatever a call allocates past it (a very large
//! config.json) comes from the system allocator and is freed there. `dso-runc` never holds a
//! secret's value (the agent, or `dso`, fetches and writes them), and a zeroizing type still
//! zeroes its bytes before they are freed.
//!
//! `static-alloc`'s `Bump` is the same arena without the fallback: past its end it fails the
//! allocation, and an engine's config.json has no size limit dso could set it to.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A bump arena of `N` bytes in front of [`System`]. `const`, for a `#[global_allocator]`.
#[repr(C, align(64))]
pub struct Arena<const N: usize> {
    mem: UnsafeCell<[u8; N]>,
    used: AtomicUsize,
}

// SAFETY: the bytes of `mem` are handed out in disjoint ranges only, each range once, by a
// compare-and-swap on `used`; the arena itself never reads or writes them.
#[allow(unsafe_code)]
unsafe impl<const N: usize> Sync for Arena<N> {}

impl<const N: usize> Arena<N> {
    pub const fn new() -> Self {
        Arena {
            mem: UnsafeCell::new([0; N]),
            used: AtomicUsize::new(0),
        }
    }

    fn base(&self) -> usize {
        self.mem.get() as usize
    }

    /// Was `ptr` handed out by the arena (rather than by the system allocator)?
    pub fn owns(&self, ptr: *const u8) -> bool {
        (self.base()..self.base() + N).contains(&(ptr as usize))
    }

    /// The start of a range of `layout` past what is used, or `None` when it does not fit.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        let base = self.base();
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            // Alignments are powers of two; absolute addresses, as the arena's own alignment
            // may be smaller than the layout's.
            let start = (base + used).checked_add(layout.align() - 1)? & !(layout.align() - 1);
            let end = start.checked_add(layout.size())? - base;
            if end > N {
                return None;
            }
            match self
                .used
                .compare_exchange_weak(used, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(self.mem.get().cast::<u8>().wrapping_add(start - base)),
                Err(now) => used = now,
            }
        }
    }
}

impl<const N: usize> Default for Arena<N> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: `alloc` returns either a range of the arena that no other allocation overlaps
// (`bump`), aligned and `layout.size()` long, or what `System` returns; `dealloc` gives back to
// `System` exactly the pointers that did not come from the arena (`owns`), and ignores the
// others. The default `realloc` (allocate, copy, free) keeps both true.
#[allow(unsafe_code)]
unsafe impl<const N: usize> GlobalAlloc for Arena<N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(ptr) => ptr,
            // SAFETY: the caller's contract (a layout of non-zero size) is passed on as is.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.owns(ptr) {
            // SAFETY: not the arena's, so `System.alloc` returned it with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_aligned_disjoint_ranges_then_falls_back_to_the_system() {
        let arena: Box<Arena<256>> = Box::default();
        let layouts = [(3, 1), (8, 8), (1, 1), (32, 32), (16, 16), (5, 4)];
        let mut got = Vec::new();
        for (size, align) in layouts {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero sizes.
            let p = unsafe { arena.alloc(layout) };
            assert!(arena.owns(p));
            assert_eq!(p as usize % align, 0);
            // SAFETY: `size` bytes were handed out at `p`.
            unsafe { p.write_bytes(0xa5, size) };
            got.push((p as usize, size));
        }
        got.sort();
        for w in got.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "overlap: {got:?}");
        }
        // Past the end: the system allocator's, freed there.
        let big = Layout::from_size_align(1024, 8).unwrap();
        // SAFETY: non-zero size; freed with the same layout.
        unsafe {
            let p = arena.alloc(big);
            assert!(!p.is_null() && !arena.owns(p));
            p.write_bytes(0x5a, 1024);
            arena.dealloc(p, big);
        }
        // What was freed into the arena stays: the next allocation is past it.
        let small = Layout::from_size_align(8, 8).unwrap();
        // SAFETY: non-zero size.
        let before = unsafe { arena.alloc(small) };
        // SAFETY: `before` came from this arena with `small`.
        unsafe { arena.dealloc(before, small) };
        // SAFETY: non-zero size.
        let after = unsafe { arena.alloc(small) };
        assert!(after as usize > before as usize || !arena.owns(after));
    }

    #[test]
    fn a_growing_vec_moves_from_the_arena_to_the_system_intact() {
        static ARENA: Arena<4096> = Arena::new();
        let layout = |n| Layout::array::<u64>(n).unwrap();
        let mut len = 1;
        // SAFETY: non-zero size.
        let mut p = unsafe { ARENA.alloc(layout(len)) }.cast::<u64>();
        // SAFETY: one u64 at `p`.
        unsafe { p.write(0) };
        while len < 4096 {
            // SAFETY: `p` holds `len` u64s allocated with `layout(len)`; the new size is
            // non-zero.
            unsafe {
                let q = ARENA
                    .realloc(p.cast(), layout(len), layout(len * 2).size())
                    .cast::<u64>();
                for i in len..len * 2 {
                    q.add(i).write(i as u64);
                }
                p = q;
            }
            len *= 2;
        }
        // SAFETY: `len` u64s at `p`, all written.
        let all = unsafe { std::slice::from_raw_parts(p, len) };
        assert!(all.iter().enumerate().all(|(i, &v)| v == i as u64));
        assert!(!ARENA.owns(p.cast()));
        // SAFETY: allocated with `layout(len)`.
        unsafe { ARENA.dealloc(p.cast(), layout(len)) };
    }
}
