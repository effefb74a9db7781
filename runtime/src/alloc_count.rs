//! A counting global allocator, for the tests that prove "no heap allocation in steady
//! state". A test binary installs it with
//! `#[global_allocator] static A: CountingAllocator = CountingAllocator;`, turns counting on
//! for its own thread with [`watch`], and reads [`allocations`]. Counts are per thread, so
//! tests running side by side cannot hide or add to each other's.
//!
//! It never changes what memory is returned (it forwards to the system allocator), and it
//! never allocates itself.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct CountingAllocator;

thread_local! {
    static WATCHED: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Count this thread's allocations from now (`true`) or stop counting (`false`).
pub fn watch(on: bool) {
    WATCHED.with(|w| w.set(on));
}

/// Allocations (alloc, alloc_zeroed, realloc) this thread made while watched.
pub fn allocations() -> u64 {
    ALLOCATIONS.with(|n| n.get())
}

fn note() {
    if WATCHED.with(|w| w.get()) {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: forwards to the system allocator; counting has no effect on the memory returned.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}
