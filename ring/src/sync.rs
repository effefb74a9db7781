//! The atomics the ring's lock-free protocols are written against.
//!
//! Normal builds use `core`'s atomics; `RUSTFLAGS="--cfg loom"` swaps in loom's so the same
//! protocol code in [`crate::protocol`] is model-checked. Nothing else belongs here.

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// A fence that only stops the compiler from reordering. Loom has none, so under loom it is a
/// full fence: the model then checks the protocol in its "writer fences itself" mode.
#[inline(always)]
pub fn compiler_fence_seqcst() {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
    #[cfg(not(loom))]
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
}
