//! The ring's two lock-free protocols, written once over [`crate::sync`] atomics so that the same
//! code runs over shared memory in production and over heap memory under loom:
//!
//! * the per-slot **seqlock**: a slot's `seq` word is `2p+1` while position `p` is being written
//!   and `2p+2` once it is complete, so a reader can tell "not yet", "complete" and "overwritten"
//!   apart from one load and detect a write that raced its copy from a second one;
//! * the **doorbell**: a parked-reader count, a "wanted" flag and a bell word, so the writer
//!   wakes parked readers once per sleep (not once per candle), and pays only a load when none
//!   is parked.
//!
//! This module owns the memory orderings and nothing else: no system calls, no clocks, no
//! allocation. ARCHITECTURE.md explains why each ordering is sufficient.

use crate::sync::{compiler_fence_seqcst, fence, AtomicU32, AtomicU64, Ordering};

/// Number of payload words in a slot (everything but `seq`).
pub const PAYLOAD_WORDS: usize = 7;

/// One 64-byte slot: word 0 is `seq`, words 1..8 the candle (see [`super::Candle`]).
#[repr(C, align(64))]
pub struct Slot {
    pub seq: AtomicU64,
    pub payload: [AtomicU64; PAYLOAD_WORDS],
}

impl Slot {
    #[cfg(loom)]
    pub fn new() -> Self {
        Slot {
            seq: AtomicU64::new(0),
            payload: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// `seq` while position `pos` is being written.
#[inline(always)]
pub const fn seq_writing(pos: u64) -> u64 {
    2 * pos + 1
}

/// `seq` once position `pos` is complete.
#[inline(always)]
pub const fn seq_done(pos: u64) -> u64 {
    2 * pos + 2
}

/// What a reader finds in the slot of the position it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRead {
    /// The complete payload of exactly that position.
    Ready([u64; PAYLOAD_WORDS]),
    /// The position has not been completed yet (it may be being written right now).
    NotYet,
    /// The slot already holds (or is being written with) a later position: the reader was lapped.
    Overwritten,
}

/// Writer side: store position `pos` into `slot`. Only the ring's one writer calls this.
#[inline(always)]
pub fn write_slot(slot: &Slot, pos: u64, payload: &[u64; PAYLOAD_WORDS]) {
    slot.seq.store(seq_writing(pos), Ordering::Relaxed);
    // Orders the odd `seq` before every payload store: a reader that sees any new payload word
    // and then re-reads `seq` (after its acquire fence) sees at least the odd value.
    fence(Ordering::Release);
    for (word, value) in slot.payload.iter().zip(payload) {
        word.store(*value, Ordering::Relaxed);
    }
    // Publishes the payload: a reader that loads this even value (acquire) sees all of it.
    slot.seq.store(seq_done(pos), Ordering::Release);
}

/// Reader side: copy position `pos` out of `slot` if it is there, whole.
#[inline(always)]
pub fn read_slot(slot: &Slot, pos: u64) -> SlotRead {
    let want = seq_done(pos);
    let before = slot.seq.load(Ordering::Acquire);
    if before < want {
        return SlotRead::NotYet;
    }
    if before > want {
        return SlotRead::Overwritten;
    }
    let mut payload = [0u64; PAYLOAD_WORDS];
    for (value, word) in payload.iter_mut().zip(&slot.payload) {
        *value = word.load(Ordering::Relaxed);
    }
    // Orders the payload loads before the second `seq` load.
    fence(Ordering::Acquire);
    let after = slot.seq.load(Ordering::Relaxed);
    if after != before {
        // A later position started overwriting the slot while we copied it.
        return SlotRead::Overwritten;
    }
    SlotRead::Ready(payload)
}

/// True if position `pos` is complete (or already overwritten) in `slot`: something to read.
#[inline(always)]
pub fn slot_ready(slot: &Slot, pos: u64) -> bool {
    slot.seq.load(Ordering::Acquire) >= seq_done(pos)
}

/// The parked-reader count, the flag asking for one ring, and the bell word a parked reader
/// sleeps on (a futex word).
#[repr(C, align(64))]
pub struct Doorbell {
    pub parked: AtomicU32,
    pub bell: AtomicU32,
    /// Set by a reader about to sleep; the writer clears it when it rings. So a reader that is
    /// parked but cannot run (stopped, or a stale count left by a killed reader) costs the
    /// writer two loads per publish, not a system call.
    pub wanted: AtomicU32,
}

impl Doorbell {
    #[cfg(loom)]
    pub fn new() -> Self {
        Doorbell {
            parked: AtomicU32::new(0),
            bell: AtomicU32::new(0),
            wanted: AtomicU32::new(0),
        }
    }

    /// Writer side, after publishing: does some reader need waking? True at most once per
    /// `announce` (it consumes the `wanted` flag).
    ///
    /// `writer_fences` is true when readers cannot force a barrier on the writer (no
    /// `membarrier`): the writer then pays a full fence here. Otherwise the fence is only a
    /// compiler fence and a parking reader supplies the barrier with `membarrier(2)`.
    #[inline(always)]
    pub fn needs_ring(&self, writer_fences: bool) -> bool {
        if writer_fences {
            fence(Ordering::SeqCst);
        } else {
            compiler_fence_seqcst();
        }
        self.parked.load(Ordering::Relaxed) != 0
            && self.wanted.load(Ordering::Relaxed) != 0
            && self.wanted.swap(0, Ordering::AcqRel) != 0
    }

    /// Writer side: change the bell word; the caller then wakes its waiters (futex wake).
    #[inline]
    pub fn ring(&self) {
        self.bell.fetch_add(1, Ordering::Release);
    }

    /// Reader side, before sleeping: count ourselves parked and return the bell value to sleep
    /// on. The caller must then re-check its slot (after `membarrier` when the writer relies on
    /// it) and sleep only if the bell still holds this value.
    #[inline]
    pub fn announce(&self) -> u32 {
        self.parked.fetch_add(1, Ordering::SeqCst);
        self.wanted.store(1, Ordering::SeqCst);
        let bell = self.bell.load(Ordering::SeqCst);
        fence(Ordering::SeqCst);
        bell
    }

    /// Reader side, after waking (or anyone taking back a dead reader's count). Saturates at
    /// zero: a reader killed between flagging itself parked and counting itself must not make
    /// the count wrap (the writer would then ring on every publish).
    #[inline]
    pub fn leave(&self) {
        let _ = self
            .parked
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! Model checks, run with `RUSTFLAGS="--cfg loom" cargo test -p tickloop-runtime --release --lib`.
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    fn payload(pos: u64) -> [u64; PAYLOAD_WORDS] {
        // Every word depends on the position, so a mix of two positions is detectable.
        std::array::from_fn(|i| pos * 100 + i as u64 + 1)
    }

    /// A reader never returns a mix of two writes, and never returns a position it did not ask
    /// for, while a writer laps it (two slots, three positions).
    /// Explores every interleaving with up to three preemptions (loom's usual bound; the
    /// unbounded run takes minutes and found nothing more when tried).
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(f);
    }

    #[test]
    fn seqlock_never_returns_a_torn_slot() {
        model(|| {
            let slot = Arc::new(Slot::new());
            let w = slot.clone();
            let writer = thread::spawn(move || {
                write_slot(&w, 0, &payload(0));
                write_slot(&w, 1, &payload(1));
            });
            for pos in 0..2 {
                match read_slot(&slot, pos) {
                    SlotRead::Ready(p) => assert_eq!(p, payload(pos), "torn read of {pos}"),
                    SlotRead::NotYet | SlotRead::Overwritten => {}
                }
            }
            writer.join().unwrap();
            assert_eq!(read_slot(&slot, 1), SlotRead::Ready(payload(1)));
            assert_eq!(read_slot(&slot, 0), SlotRead::Overwritten);
        });
    }

    /// A reader that decides to sleep is always woken: either it sees the position on its
    /// re-check, or the writer sees it parked and changes the bell (no lost wake-up).
    #[test]
    fn doorbell_never_loses_a_wakeup() {
        model(|| {
            let slot = Arc::new(Slot::new());
            let bell = Arc::new(Doorbell::new());
            let (ws, wb) = (slot.clone(), bell.clone());
            let writer = thread::spawn(move || {
                write_slot(&ws, 0, &payload(0));
                let mut rings = 0;
                if wb.needs_ring(true) {
                    wb.ring();
                    rings += 1;
                }
                if wb.needs_ring(true) {
                    rings += 1;
                }
                assert!(rings <= 1, "one ring per announced sleep");
            });
            let seen = bell.announce();
            let sleeps = !slot_ready(&slot, 0);
            writer.join().unwrap();
            if sleeps {
                // The futex wait would return at once, or be woken, only if the bell moved.
                assert_ne!(bell.bell.load(Ordering::SeqCst), seen, "lost wake-up");
            }
            bell.leave();
        });
    }
}
