//! The loop's timers: a fixed-capacity hierarchical timer wheel. It owns every pending timer
//! (its exact deadline and a small `Copy` value), hands out [`TimerKey`]s to cancel them, and
//! fires them in exact deadline order, never before their deadline.
//!
//! It never allocates after [`TimerWheel::new`], never reads a clock (it is handed `now`), and
//! never calls back into the caller while its own state is half-changed. Every loop is bounded.
//!
//! Layout: 7 levels of 64 slots; a level-`l` slot spans 2^(10+6l) ns (1,024 ns at level 0, about
//! 19.5 h at the top), so the wheel covers 2^52 ns (about 52 days) and a deadline further out sits
//! in the top level and goes round again. Each level has a `u64` occupancy bitmap, so the next
//! occupied slot is one `trailing_zeros`. Timers live in one slab with a free list; each slot is
//! an intrusive doubly-linked list of slab indices, so cancel is O(1). Level-0 lists are kept
//! sorted by (deadline, insertion sequence), which gives strict deadline order with ties in
//! insertion order.

use std::fmt;
use tickloop_app::clock::Nanos;

/// Number of levels.
const LEVELS: usize = 7;
/// The top level, where timers beyond the horizon wait and go round again.
const TOP: usize = LEVELS - 1;
/// Slots per level (one `u64` bitmap).
const SLOTS: usize = 64;
/// log2 of the level-0 slot width in ns (1,024 ns).
const L0_SHIFT: u32 = 10;
/// log2 of [`SLOTS`].
const LEVEL_BITS: u32 = 6;
/// log2 of the span of the whole wheel (one rotation of the top level).
const HORIZON_BITS: u32 = L0_SHIFT + LEVEL_BITS * LEVELS as u32;
/// The span of the whole wheel: 2^52 ns, about 52 days.
const HORIZON: Nanos = 1 << HORIZON_BITS;
/// How many distinct top-level slot starts fit in the `u64` range: bounds the top-level
/// cascades one `expire` can make.
const TOP_SLOT_STARTS: usize = 1 << (64 - (L0_SHIFT + LEVEL_BITS * TOP as u32));
/// "No entry" in the intrusive lists and the free list.
const NONE: u32 = u32::MAX;
/// `Entry::level` of an entry on the free list.
const FREE: u8 = u8::MAX;

/// [`TimerWheel::next_deadline`] is exact whenever the earliest deadline lies in the same
/// `EXACT_WINDOW`-aligned window as the wheel's time (one level-0 rotation: 65,536 ns), or in
/// the past.
pub const EXACT_WINDOW: Nanos = 1 << (L0_SHIFT + LEVEL_BITS);

/// A handle to one armed timer. It names a slab slot and that slot's generation, so a key
/// kept after its timer fired or was cancelled never touches a later timer reusing the slot.
/// (The generation is a `u32` per slot: a stale key could only alias after 2^32 reuses of
/// the same slot.) A key only means something to the wheel that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerKey {
    index: u32,
    generation: u32,
}

/// Every timer slot is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelFull {
    pub capacity: usize,
}

impl fmt::Display for WheelFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timer wheel full: all {} timers in use; raise the timer capacity in the config",
            self.capacity
        )
    }
}

impl std::error::Error for WheelFull {}

/// One slab slot: a pending timer, or a link in the free list.
#[derive(Clone, Copy)]
struct Entry<T: Copy> {
    /// The exact deadline; a timer fires only once `now >= deadline`.
    deadline: Nanos,
    /// Insertion sequence: breaks ties between equal deadlines (earlier insert first).
    seq: u64,
    prev: u32,
    /// Next in the slot's list, or next free slot while free.
    next: u32,
    generation: u32,
    /// The level holding it, or [`FREE`].
    level: u8,
    slot: u8,
    /// `Some` exactly while pending.
    value: Option<T>,
}

/// The heads and tails of every slot's list.
struct Lists {
    head: [[u32; SLOTS]; LEVELS],
    tail: [[u32; SLOTS]; LEVELS],
}

/// A fixed-capacity hierarchical timer wheel. See the module docs.
///
/// Invariants (checked by `check` in the tests), with `E` the wheel's time (`elapsed`) and
/// `t = max(deadline, E)`:
/// - level 0: `t` is in `E`'s level-0 rotation (same 65,536 ns window) and the entry is in
///   `t`'s slot; so a past deadline sits in `E`'s own slot. Lists are sorted by (deadline, seq).
/// - levels 1..TOP: `t` is in `E`'s rotation of that level and in a slot after `E`'s slot.
/// - top level: the entry is in `t`'s slot, and that slot's next start after `E`'s slot is
///   `<= t`.
///
/// Hence every timer at level `l` is earlier than the start of any occupied slot at a higher
/// level, so the earliest slot of the lowest non-empty level holds the earliest timer.
pub struct TimerWheel<T: Copy> {
    /// The wheel's time: every pending timer is placed relative to it. It only moves in
    /// `expire`/`expire_one`, never past `now`, and never past a timer that has not fired.
    elapsed: Nanos,
    /// The latest `now` seen (initially `start`); `now` must never go below it.
    now: Nanos,
    /// What `next_deadline` returns: exact head of level 0, or the start of the next slot to
    /// cascade. `Nanos::MAX` when empty (so `expire`'s idle check is one comparison).
    next: Nanos,
    /// Occupancy bitmap per level: bit `s` set iff slot `s` has a non-empty list.
    occupied: [u64; LEVELS],
    len: usize,
    /// The next insertion sequence number.
    seq: u64,
    free_head: u32,
    entries: Box<[Entry<T>]>,
    lists: Box<Lists>,
}

impl<T: Copy> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("capacity", &self.capacity())
            .field("len", &self.len)
            .field("elapsed", &self.elapsed)
            .field("next_deadline", &self.next_deadline())
            .finish()
    }
}

/// The bit position of the lowest bit of a level-`level` slot index.
const fn shift(level: usize) -> u32 {
    L0_SHIFT + LEVEL_BITS * level as u32
}

/// The slot of time `t` at `level`.
const fn slot_of(t: Nanos, level: usize) -> usize {
    ((t >> shift(level)) & (SLOTS as u64 - 1)) as usize
}

/// The level at which a timer at `t >= elapsed` belongs: the highest level whose slot index
/// differs between the two (level 0 when they share a level-0 rotation), capped at the top.
fn level_for(elapsed: Nanos, t: Nanos) -> usize {
    assert!(t >= elapsed);
    let mut masked = (elapsed ^ t) | (EXACT_WINDOW - 1);
    if masked >= HORIZON {
        masked = HORIZON - 1;
    }
    let significant = 63 - masked.leading_zeros();
    ((significant - L0_SHIFT) / LEVEL_BITS) as usize
}

impl<T: Copy> TimerWheel<T> {
    /// A wheel holding at most `capacity` timers (`1 <= capacity < u32::MAX`), whose time
    /// starts at `start`. This is the only allocation the wheel ever makes.
    pub fn new(capacity: usize, start: Nanos) -> Self {
        assert!(capacity >= 1, "timer wheel capacity must be at least 1");
        assert!(
            capacity < NONE as usize,
            "timer wheel capacity must be below {NONE}"
        );
        let entries: Box<[Entry<T>]> = (0..capacity)
            .map(|i| Entry {
                deadline: 0,
                seq: 0,
                prev: NONE,
                next: if i + 1 < capacity {
                    (i + 1) as u32
                } else {
                    NONE
                },
                generation: 0,
                level: FREE,
                slot: 0,
                value: None,
            })
            .collect();
        assert_eq!(entries.len(), capacity);
        TimerWheel {
            elapsed: start,
            now: start,
            next: Nanos::MAX,
            occupied: [0; LEVELS],
            len: 0,
            seq: 0,
            free_head: 0,
            entries,
            lists: Box::new(Lists {
                head: [[NONE; SLOTS]; LEVELS],
                tail: [[NONE; SLOTS]; LEVELS],
            }),
        }
    }

    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Arm a timer firing once `now >= deadline`. A deadline in the past (at or before the
    /// wheel's time) is allowed: it fires on the next `expire`. Fails only when all
    /// `capacity` timers are in use. O(1), except that a level-0 insert walks back over the
    /// later timers of its 1,024 ns slot (none, for deadlines inserted in increasing order).
    pub fn insert(&mut self, deadline: Nanos, value: T) -> Result<TimerKey, WheelFull> {
        let index = self.free_head;
        if index == NONE {
            assert_eq!(self.len, self.capacity());
            return Err(WheelFull {
                capacity: self.capacity(),
            });
        }
        let seq = self.seq;
        self.seq += 1;
        let entry = &mut self.entries[index as usize];
        assert_eq!(entry.level, FREE);
        self.free_head = entry.next;
        entry.deadline = deadline;
        entry.seq = seq;
        entry.value = Some(value);
        let generation = entry.generation;
        self.len += 1;

        let (level, slot) = self.place(index);
        // The new timer can only lower the earliest slot/deadline; the lowest non-empty
        // level's earliest slot stays the answer (see the invariants on `TimerWheel`).
        let candidate = if level == 0 {
            deadline
        } else {
            self.slot_start(level, slot)
        };
        self.next = self.next.min(candidate);
        Ok(TimerKey { index, generation })
    }

    /// Disarm a pending timer, returning its value. A key whose timer already fired or was
    /// cancelled returns `None` and changes nothing. O(1).
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let entry = self.entries.get(key.index as usize)?;
        if entry.level == FREE || entry.generation != key.generation {
            return None;
        }
        self.unlink(key.index);
        let value = self.release(key.index);
        self.next = self.compute_next();
        Some(value)
    }

    /// A time at or before the earliest pending deadline; `None` when empty. O(1) (cached).
    ///
    /// Exact (equal to the earliest deadline `d`) whenever `d <= W` or `d` lies in the same
    /// [`EXACT_WINDOW`]-aligned 65,536 ns window as `W`, where `W` is the wheel's time:
    /// `start`, then the `now` of the latest `expire` (or of the latest `expire_one` that left
    /// nothing due). Otherwise it is the start of the higher-level slot holding `d`, which is
    /// later than `W`: waking then and calling `expire` moves that timer at least one level
    /// down, so a timer under 52 days ahead gets an exact answer after at most 6 early wakes.
    pub fn next_deadline(&self) -> Option<Nanos> {
        if self.len == 0 {
            None
        } else {
            Some(self.next)
        }
    }

    /// Fire every timer with deadline `<= now`, calling `f(key, deadline, value)` for each in
    /// nondecreasing deadline order, equal deadlines in insertion order. Returns how many
    /// fired. `now` must not go backwards (asserted). With nothing due this is one comparison.
    ///
    /// `f` cannot touch the wheel (it is borrowed); to re-arm periodic timers, collect and
    /// re-insert afterwards, or use [`TimerWheel::expire_one`].
    pub fn expire(&mut self, now: Nanos, mut f: impl FnMut(TimerKey, Nanos, T)) -> usize {
        self.observe(now);
        if now < self.next {
            // Nothing due: catch the wheel's time up (valid: every slot start and level-0
            // deadline is after `now`, see `catch_up`).
            self.elapsed = now;
            return 0;
        }
        let mut fired = 0;
        // Each round fires one of the timers pending at the start; `f` cannot add any.
        for _ in 0..=self.len {
            match self.pop_due(now) {
                Some((key, deadline, value)) => {
                    f(key, deadline, value);
                    fired += 1;
                }
                None => return fired,
            }
        }
        unreachable!("timer wheel: expire fired more timers than were pending");
    }

    /// Pop the single earliest due timer (deadline `<= now`), in the same order as `expire`,
    /// so the caller can re-insert (periodic timers) between pops. `now` must not go
    /// backwards (asserted). A timer re-inserted with a deadline `<= now` is due again at
    /// once, ordered among the remaining due timers by its deadline.
    pub fn expire_one(&mut self, now: Nanos) -> Option<(TimerKey, Nanos, T)> {
        self.observe(now);
        self.pop_due(now)
    }

    /// Record `now`, asserting it never goes backwards.
    fn observe(&mut self, now: Nanos) {
        assert!(
            now >= self.now,
            "timer wheel: now went backwards ({now} < {})",
            self.now
        );
        assert!(self.elapsed <= self.now);
        self.now = now;
    }

    /// The core of `expire`/`expire_one`: cascade higher-level slots whose start is `<= now`
    /// until the earliest timer is in level 0, then pop it if due.
    fn pop_due(&mut self, now: Nanos) -> Option<(TimerKey, Nanos, T)> {
        // Each round either returns or cascades one slot, moving `elapsed` strictly forward.
        // Top-level cascades start at distinct multiples of a top slot (at most
        // TOP_SLOT_STARTS of them in the u64 range); every other cascade moves at least one
        // timer down a level, and a timer that left the top never goes back up.
        let bound = TOP_SLOT_STARTS + self.len * LEVELS + 2;
        for _ in 0..bound {
            if now < self.next {
                self.catch_up(now);
                return None;
            }
            let Some(level) = self.lowest_level() else {
                self.catch_up(now);
                return None;
            };
            let slot = self.first_slot(level);
            if level == 0 {
                let index = self.lists.head[0][slot];
                let entry = &self.entries[index as usize];
                let (deadline, generation) = (entry.deadline, entry.generation);
                // `next` is this head's deadline, and `next <= now`.
                assert!(deadline <= now && deadline == self.next);
                self.unlink(index);
                let value = self.release(index);
                self.next = self.compute_next();
                if now < self.next {
                    self.catch_up(now);
                }
                return Some((TimerKey { index, generation }, deadline, value));
            }
            self.cascade(level, slot, now);
        }
        unreachable!("timer wheel: expire did not converge");
    }

    /// Move the wheel's time to `now`. Only valid when nothing is due at `now` (`now <
    /// next`): then every occupied higher-level slot starts after `now`, and the earliest
    /// level-0 slot holds a deadline after `now`, so that slot is at or after `now`'s slot.
    fn catch_up(&mut self, now: Nanos) {
        assert!(now >= self.elapsed && (self.len == 0 || now < self.next));
        self.elapsed = now;
    }

    /// Empty slot (`level >= 1`), whose start is `<= now`, and re-place its timers relative
    /// to that start: each lands at a lower level (or, beyond the horizon, back in the top).
    fn cascade(&mut self, level: usize, slot: usize, now: Nanos) {
        assert!(level >= 1);
        let start = self.slot_start(level, slot);
        assert!(start > self.elapsed && start <= now);
        // All lower levels are empty, so moving the time to this slot's start strands nothing.
        self.elapsed = start;
        let mut index = self.lists.head[level][slot];
        self.lists.head[level][slot] = NONE;
        self.lists.tail[level][slot] = NONE;
        self.occupied[level] &= !(1u64 << slot);
        for _ in 0..self.len {
            if index == NONE {
                break;
            }
            let next = self.entries[index as usize].next;
            assert!(self.entries[index as usize].deadline >= start);
            self.place(index);
            index = next;
        }
        assert_eq!(index, NONE, "timer wheel: slot list longer than len");
        self.next = self.compute_next();
    }

    /// Link pending entry `index` into the slot its deadline belongs to, relative to the
    /// wheel's time. Returns (level, slot).
    fn place(&mut self, index: u32) -> (usize, usize) {
        let entry = &self.entries[index as usize];
        let t = entry.deadline.max(self.elapsed);
        let level = level_for(self.elapsed, t);
        let slot = slot_of(t, level);
        let after = if level == 0 {
            // Sorted by (deadline, seq): walk back from the tail past every later timer.
            let key = (entry.deadline, entry.seq);
            let mut after = self.lists.tail[0][slot];
            for _ in 0..self.len {
                if after == NONE {
                    break;
                }
                let other = &self.entries[after as usize];
                if (other.deadline, other.seq) < key {
                    break;
                }
                after = other.prev;
            }
            after
        } else {
            self.lists.tail[level][slot]
        };
        self.link_after(level, slot, after, index);
        (level, slot)
    }

    /// Link `index` into list (level, slot) right after `after` (`NONE`: at the head).
    fn link_after(&mut self, level: usize, slot: usize, after: u32, index: u32) {
        let next = if after == NONE {
            self.lists.head[level][slot]
        } else {
            self.entries[after as usize].next
        };
        let entry = &mut self.entries[index as usize];
        entry.prev = after;
        entry.next = next;
        entry.level = level as u8;
        entry.slot = slot as u8;
        if after == NONE {
            self.lists.head[level][slot] = index;
        } else {
            self.entries[after as usize].next = index;
        }
        if next == NONE {
            self.lists.tail[level][slot] = index;
        } else {
            self.entries[next as usize].prev = index;
        }
        self.occupied[level] |= 1u64 << slot;
    }

    /// Unlink pending entry `index` from its slot's list.
    fn unlink(&mut self, index: u32) {
        let entry = &self.entries[index as usize];
        assert_ne!(entry.level, FREE);
        let (prev, next) = (entry.prev, entry.next);
        let (level, slot) = (entry.level as usize, entry.slot as usize);
        if prev == NONE {
            assert_eq!(self.lists.head[level][slot], index);
            self.lists.head[level][slot] = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NONE {
            assert_eq!(self.lists.tail[level][slot], index);
            self.lists.tail[level][slot] = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
        if self.lists.head[level][slot] == NONE {
            self.occupied[level] &= !(1u64 << slot);
        }
    }

    /// Return unlinked entry `index` to the free list, retiring its key; returns its value.
    fn release(&mut self, index: u32) -> T {
        let entry = &mut self.entries[index as usize];
        let value = entry
            .value
            .take()
            .expect("timer wheel: pending entry without value");
        entry.generation = entry.generation.wrapping_add(1);
        entry.level = FREE;
        entry.prev = NONE;
        entry.next = self.free_head;
        self.free_head = index;
        self.len -= 1;
        value
    }

    fn lowest_level(&self) -> Option<usize> {
        self.occupied.iter().position(|&bits| bits != 0)
    }

    /// The earliest occupied slot of a non-empty `level`, in time order from the wheel's time.
    fn first_slot(&self, level: usize) -> usize {
        let bits = self.occupied[level];
        assert_ne!(bits, 0);
        let current = slot_of(self.elapsed, level) as u32;
        if level == TOP {
            // The top level is a ring: slots after the current one are in this rotation,
            // the current slot and those before it in the next.
            let from = (current + 1) % SLOTS as u32;
            return ((from + bits.rotate_right(from).trailing_zeros()) % SLOTS as u32) as usize;
        }
        // Level 0 may use the current slot (same 1,024 ns or past deadlines); levels 1..TOP
        // only slots after it. Nothing may sit behind.
        let from = if level == 0 { current } else { current + 1 };
        let ahead = if from >= SLOTS as u32 {
            0
        } else {
            !0u64 << from
        };
        assert_eq!(
            bits & !ahead,
            0,
            "timer wheel: level {level} has a timer behind its time"
        );
        bits.trailing_zeros() as usize
    }

    /// When slot `slot` of `level` next starts, from the wheel's time: in the current rotation
    /// of that level, except top-level slots at or before the current one (next rotation).
    fn slot_start(&self, level: usize, slot: usize) -> Nanos {
        let shift = shift(level);
        let rotation = (1u64 << (shift + LEVEL_BITS)) - 1;
        let start = (self.elapsed & !rotation) | ((slot as u64) << shift);
        if level == TOP && slot <= slot_of(self.elapsed, TOP) {
            // Only timers in a later rotation sit here, so this never exceeds their deadline.
            start.saturating_add(HORIZON)
        } else {
            start
        }
    }

    /// `next_deadline`'s value from scratch: O(levels).
    fn compute_next(&self) -> Nanos {
        let Some(level) = self.lowest_level() else {
            return Nanos::MAX;
        };
        let slot = self.first_slot(level);
        if level == 0 {
            self.entries[self.lists.head[0][slot] as usize].deadline
        } else {
            self.slot_start(level, slot)
        }
    }
}

#[cfg(test)]
impl<T: Copy> TimerWheel<T> {
    /// Check every invariant: O(capacity).
    fn check(&self) {
        let cap = self.capacity();
        assert_eq!(self.entries.len(), cap);
        assert!(self.elapsed <= self.now);
        // Free list.
        let mut free = 0;
        let mut index = self.free_head;
        while index != NONE {
            assert!(free < cap);
            assert_eq!(self.entries[index as usize].level, FREE);
            assert!(self.entries[index as usize].value.is_none());
            free += 1;
            index = self.entries[index as usize].next;
        }
        assert_eq!(free + self.len, cap);
        // Lists and placement.
        let mut pending = 0;
        let mut min: Option<Nanos> = None;
        for level in 0..LEVELS {
            let shift = shift(level);
            for slot in 0..SLOTS {
                let head = self.lists.head[level][slot];
                assert_eq!((self.occupied[level] >> slot) & 1 == 1, head != NONE);
                let mut prev = NONE;
                let mut index = head;
                let mut last_key = None;
                while index != NONE {
                    let e = &self.entries[index as usize];
                    assert_eq!((e.level as usize, e.slot as usize), (level, slot));
                    assert_eq!(e.prev, prev);
                    assert!(e.value.is_some());
                    let t = e.deadline.max(self.elapsed);
                    assert_eq!(slot_of(t, level), slot);
                    if level == TOP {
                        let start = self.slot_start(level, slot);
                        assert!(start <= t && start > self.elapsed);
                    } else {
                        assert_eq!(
                            t >> (shift + LEVEL_BITS),
                            self.elapsed >> (shift + LEVEL_BITS)
                        );
                        if level > 0 {
                            assert!(slot > slot_of(self.elapsed, level));
                        }
                    }
                    if level == 0 {
                        let key = (e.deadline, e.seq);
                        assert!(last_key < Some(key), "level-0 list out of order");
                        last_key = Some(key);
                    }
                    min = Some(min.map_or(e.deadline, |m| m.min(e.deadline)));
                    pending += 1;
                    assert!(pending <= self.len);
                    prev = index;
                    index = e.next;
                }
                assert_eq!(self.lists.tail[level][slot], prev);
            }
        }
        assert_eq!(pending, self.len);
        assert_eq!(self.next, self.compute_next());
        if let Some(min) = min {
            assert!(self.next <= min);
            if min <= self.elapsed || min / EXACT_WINDOW == self.elapsed / EXACT_WINDOW {
                assert_eq!(self.next, min);
            } else {
                assert!(self.next > self.elapsed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};
    use tickloop_app::clock::{MICROS, MILLIS, SECONDS};

    const MINUTES: Nanos = 60 * SECONDS;
    const HOURS: Nanos = 60 * MINUTES;
    const DAYS: Nanos = 24 * HOURS;

    /// SplitMix64: a seeded generator, no `rand` crate.
    struct Rng(u64);
    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        /// Uniform-ish in 0..=max.
        fn upto(&mut self, max: u64) -> u64 {
            if max == u64::MAX {
                self.next_u64()
            } else {
                self.next_u64() % (max + 1)
            }
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next_u64() % 100 < percent
        }
    }

    fn drain(wheel: &mut TimerWheel<u32>, now: Nanos) -> Vec<(TimerKey, Nanos, u32)> {
        let mut out = Vec::new();
        wheel.expire(now, |k, d, v| out.push((k, d, v)));
        out
    }

    fn values(fired: &[(TimerKey, Nanos, u32)]) -> Vec<u32> {
        fired.iter().map(|f| f.2).collect()
    }

    #[test]
    fn insert_cancel_expire_basics() {
        let mut w = TimerWheel::<u32>::new(16, 1_000 * SECONDS);
        let t0 = 1_000 * SECONDS;
        assert!(w.is_empty());
        assert_eq!(w.capacity(), 16);
        assert_eq!(w.next_deadline(), None);
        let a = w.insert(t0 + 10 * MILLIS, 1).unwrap();
        let b = w.insert(t0 + 5 * MILLIS, 2).unwrap();
        let c = w.insert(t0 + 20 * MILLIS, 3).unwrap();
        assert_eq!(w.len(), 3);
        w.check();
        assert!(w.next_deadline().unwrap() <= t0 + 5 * MILLIS);
        assert_eq!(w.cancel(c), Some(3));
        assert_eq!(w.len(), 2);
        assert_eq!(w.expire(t0 + 5 * MILLIS - 1, |_, _, _| panic!("early")), 0);
        let fired = drain(&mut w, t0 + 5 * MILLIS);
        assert_eq!(fired, vec![(b, t0 + 5 * MILLIS, 2)]);
        let fired = drain(&mut w, t0 + HOURS);
        assert_eq!(fired, vec![(a, t0 + 10 * MILLIS, 1)]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
        assert_eq!(w.expire(t0 + 2 * HOURS, |_, _, _| panic!("empty")), 0);
        w.check();
    }

    #[test]
    fn stale_keys_do_nothing() {
        let mut w = TimerWheel::<u32>::new(1, 0);
        let a = w.insert(100, 1).unwrap();
        assert_eq!(drain(&mut w, 100).len(), 1);
        assert_eq!(w.cancel(a), None, "fired key");
        // Cancel, then the slot is reused: the old key must not cancel the new timer.
        let b = w.insert(200, 2).unwrap();
        assert_eq!(b.index, a.index);
        assert_eq!(w.cancel(b), Some(2));
        assert_eq!(w.cancel(b), None, "cancelled key");
        let c = w.insert(300, 3).unwrap();
        assert_eq!(c.index, a.index);
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.cancel(b), None);
        assert_eq!(w.len(), 1);
        let bogus = TimerKey {
            index: 7,
            generation: 0,
        };
        assert_eq!(w.cancel(bogus), None, "index out of range");
        assert_eq!(drain(&mut w, 300), vec![(c, 300, 3)]);
        w.check();
    }

    #[test]
    fn full_wheel_errors_then_reuses() {
        let mut w = TimerWheel::<u32>::new(3, 0);
        for i in 0..3 {
            w.insert(1_000 + i as u64, i).unwrap();
        }
        let err = w.insert(5, 9).unwrap_err();
        assert_eq!(err, WheelFull { capacity: 3 });
        assert_eq!(
            err.to_string(),
            "timer wheel full: all 3 timers in use; raise the timer capacity in the config"
        );
        let _: &dyn std::error::Error = &err;
        assert_eq!(w.len(), 3);
        assert_eq!(values(&drain(&mut w, 1_000)), vec![0]);
        w.insert(5, 9).unwrap();
        assert!(w.insert(6, 10).is_err());
        assert_eq!(values(&drain(&mut w, 2_000)), vec![9, 1, 2]);
        w.check();
    }

    #[test]
    fn past_deadlines_fire_at_once() {
        let t0 = 7 * DAYS + 12_345;
        let mut w = TimerWheel::<u32>::new(8, t0);
        w.insert(t0, 1).unwrap();
        w.insert(0, 2).unwrap();
        w.insert(t0 - 5 * SECONDS, 3).unwrap();
        w.check();
        assert_eq!(w.next_deadline(), Some(0));
        assert_eq!(values(&drain(&mut w, t0)), vec![2, 3, 1]);
        // After time moved on, a deadline between the old and the new time is also past.
        let t1 = t0 + 3 * HOURS;
        assert_eq!(w.expire(t1, |_, _, _| {}), 0);
        w.insert(t1 - HOURS, 4).unwrap();
        w.insert(t1 + 1, 5).unwrap();
        assert_eq!(w.next_deadline(), Some(t1 - HOURS));
        assert_eq!(values(&drain(&mut w, t1)), vec![4]);
        assert_eq!(w.next_deadline(), Some(t1 + 1));
        assert_eq!(values(&drain(&mut w, t1 + 1)), vec![5]);
        w.check();
    }

    #[test]
    fn same_bucket_keeps_later_timers_without_spinning() {
        // Both deadlines share one 1,024 ns level-0 slot.
        let base = 1024 * 5_000_000;
        assert_eq!(base % 1024, 0);
        let mut w = TimerWheel::<u32>::new(8, base);
        w.insert(base + 900, 2).unwrap();
        w.insert(base + 100, 1).unwrap();
        w.insert(base + 100, 3).unwrap();
        assert_eq!(w.next_deadline(), Some(base + 100));
        assert_eq!(values(&drain(&mut w, base + 500)), vec![1, 3]);
        assert_eq!(w.next_deadline(), Some(base + 900));
        assert_eq!(w.expire(base + 500, |_, _, _| panic!("early")), 0);
        assert_eq!(w.expire(base + 899, |_, _, _| panic!("early")), 0);
        assert_eq!(w.expire_one(base + 899), None);
        w.insert(base + 300, 4).unwrap(); // in the past now, same slot
        assert_eq!(values(&drain(&mut w, base + 899)), vec![4]);
        assert_eq!(values(&drain(&mut w, base + 900)), vec![2]);
        w.check();
    }

    #[test]
    fn never_fires_early_and_in_order() {
        let mut rng = Rng(42);
        let mut w = TimerWheel::<u32>::new(1_000, 3 * SECONDS + 17);
        let mut deadlines = Vec::new();
        for i in 0..1_000 {
            let d = 3 * SECONDS + 17 + rng.upto(10 * SECONDS);
            w.insert(d, i).unwrap();
            deadlines.push(d);
        }
        let mut now = 3 * SECONDS + 17;
        let mut last = (0, 0);
        let mut total = 0;
        while !w.is_empty() {
            now += rng.upto(50 * MILLIS);
            w.expire(now, |_, d, v| {
                assert!(d <= now, "fired early");
                assert_eq!(deadlines[v as usize], d);
                assert!((d, v) > last, "out of order");
                last = (d, v);
                total += 1;
            });
            w.check();
        }
        assert_eq!(total, 1_000);
    }

    #[test]
    fn equal_deadlines_fire_in_insertion_order_across_levels() {
        let mut w = TimerWheel::<u32>::new(8, 0);
        let d = 10 * SECONDS + 333;
        w.insert(d, 1).unwrap(); // high level
        w.insert(d, 2).unwrap();
        w.expire(d - 10 * MILLIS, |_, _, _| panic!("early"));
        w.insert(d, 3).unwrap(); // lower level, same deadline
        w.expire(d - 50 * MICROS, |_, _, _| panic!("early"));
        w.insert(d, 4).unwrap();
        w.insert(d - 1, 5).unwrap();
        w.check();
        assert_eq!(values(&drain(&mut w, d)), vec![5, 1, 2, 3, 4]);
    }

    #[test]
    fn next_deadline_exact_for_200us_timer_after_cascades() {
        let mut rng = Rng(7);
        // Starts on and around level boundaries, and random ones.
        let mut starts = vec![
            0,
            1,
            65_535,
            65_536,
            (1 << 22) - 1,
            (1 << 28) - 300,
            1 << 46,
        ];
        for _ in 0..200 {
            starts.push(rng.upto(60 * DAYS));
        }
        for start in starts {
            let mut w = TimerWheel::<u32>::new(4, 0);
            w.expire(start, |_, _, _| {});
            let d = start + 200 * MICROS;
            w.insert(d, 1).unwrap();
            let mut wakes = 0;
            loop {
                let nd = w.next_deadline().unwrap();
                assert!(nd <= d);
                if nd == d {
                    break;
                }
                assert!(nd > start);
                assert_eq!(w.expire(nd, |_, _, _| panic!("early")), 0);
                w.check();
                wakes += 1;
                assert!(wakes < LEVELS, "start {start}: too many early wakes");
            }
            assert_eq!(w.expire(d - 1, |_, _, _| panic!("early")), 0);
            assert_eq!(w.next_deadline(), Some(d));
            assert_eq!(values(&drain(&mut w, d)), vec![1]);
        }
        // The loop's usual case: the wheel's time a little past a window boundary, so the
        // timer is in the next window up: two wakes at most, the second exact.
        let mut w = TimerWheel::<u32>::new(4, 10 * SECONDS);
        w.expire(10 * SECONDS + 3 * MILLIS, |_, _, _| {});
        let d = 10 * SECONDS + 3 * MILLIS + 200 * MICROS;
        w.insert(d, 1).unwrap();
        let early = w.next_deadline().unwrap();
        assert!(early < d && d - early < EXACT_WINDOW);
        w.expire(early, |_, _, _| panic!("early"));
        assert_eq!(w.next_deadline(), Some(d));
    }

    #[test]
    fn expire_one_rearms_periodic_timers() {
        let mut w = TimerWheel::<u32>::new(2, 0);
        let period = MILLIS;
        w.insert(period, 1).unwrap();
        w.insert(2_500 * MICROS, 2).unwrap();
        let mut fired = Vec::new();
        let now = 10 * MILLIS;
        while let Some((_, d, v)) = w.expire_one(now) {
            assert!(d <= now);
            fired.push((d, v));
            if v == 1 {
                w.insert(d + period, 1).unwrap();
            }
        }
        let mut want: Vec<(Nanos, u32)> = (1..=10).map(|i| (i * MILLIS, 1)).collect();
        want.push((2_500 * MICROS, 2));
        want.sort();
        assert_eq!(fired, want);
        let nd = w.next_deadline().unwrap();
        assert!(
            nd > now && nd <= 11 * MILLIS,
            "a slot start up to the deadline: {nd}"
        );
        w.check();
    }

    #[test]
    fn far_deadlines_and_overflow_near_max() {
        // Beyond the 52-day horizon, from zero to Nanos::MAX.
        let mut w = TimerWheel::<u32>::new(16, 0);
        let far = [
            Nanos::MAX,
            Nanos::MAX - 1,
            HORIZON,
            HORIZON - 1,
            3 * HORIZON + 5,
            200 * DAYS,
            1 << 63,
        ];
        for (i, &d) in far.iter().enumerate() {
            w.insert(d, i as u32).unwrap();
        }
        w.check();
        let mut sorted: Vec<(Nanos, u32)> = far
            .iter()
            .enumerate()
            .map(|(i, &d)| (d, i as u32))
            .collect();
        sorted.sort();
        let mut got = Vec::new();
        for now in [
            HORIZON - 2,
            HORIZON,
            100 * DAYS,
            1 << 62,
            Nanos::MAX - 2,
            Nanos::MAX,
        ] {
            w.expire(now, |_, d, v| {
                assert!(d <= now);
                got.push((d, v));
            });
            w.check();
        }
        assert_eq!(got, sorted);
        assert!(w.is_empty());
        // Starting next to Nanos::MAX.
        let start = Nanos::MAX - 100 * MICROS;
        let mut w = TimerWheel::<u32>::new(8, start);
        w.insert(Nanos::MAX, 1).unwrap();
        w.insert(Nanos::MAX - 1, 2).unwrap();
        w.insert(start, 3).unwrap();
        w.insert(Nanos::MAX, 4).unwrap();
        w.check();
        assert_eq!(values(&drain(&mut w, Nanos::MAX - 2)), vec![3]);
        assert!(w.next_deadline().unwrap() < Nanos::MAX);
        assert_eq!(values(&drain(&mut w, Nanos::MAX)), vec![2, 1, 4]);
        w.insert(Nanos::MAX, 5).unwrap();
        assert_eq!(w.next_deadline(), Some(Nanos::MAX));
        assert_eq!(values(&drain(&mut w, Nanos::MAX)), vec![5]);
        w.check();
    }

    #[test]
    #[should_panic(expected = "now went backwards")]
    fn now_going_backwards_panics() {
        let mut w = TimerWheel::<u32>::new(1, 100);
        w.expire(99, |_, _, _| {});
    }

    /// The naive model: pending timers ordered by (deadline, insertion sequence).
    struct Model {
        pending: BTreeMap<(Nanos, u64), (TimerKey, u32)>,
        by_key: HashMap<TimerKey, (Nanos, u64)>,
        seq: u64,
    }

    impl Model {
        fn insert(&mut self, key: TimerKey, deadline: Nanos, value: u32) {
            self.pending.insert((deadline, self.seq), (key, value));
            assert!(self.by_key.insert(key, (deadline, self.seq)).is_none());
            self.seq += 1;
        }
        fn cancel(&mut self, key: TimerKey) -> Option<u32> {
            let at = self.by_key.remove(&key)?;
            Some(self.pending.remove(&at).unwrap().1)
        }
        fn pop(&mut self, now: Nanos) -> Option<(TimerKey, Nanos, u32)> {
            let (&(deadline, seq), _) = self.pending.first_key_value()?;
            if deadline > now {
                return None;
            }
            let (key, value) = self.pending.remove(&(deadline, seq)).unwrap();
            self.by_key.remove(&key);
            Some((key, deadline, value))
        }
        fn earliest(&self) -> Option<Nanos> {
            self.pending.first_key_value().map(|(&(d, _), _)| d)
        }
    }

    /// A deadline around `now`: past, same microsecond, near slot and level boundaries, or
    /// anything up to days ahead (and, rarely, beyond the horizon), clamped to Nanos::MAX.
    fn pick_deadline(rng: &mut Rng, now: Nanos, model: &Model) -> Nanos {
        match rng.upto(11) {
            0 => now.saturating_sub(rng.upto(2 * MILLIS)),
            1 => now.saturating_add(rng.upto(2 * MICROS)),
            2 => now.saturating_add(rng.upto(100 * MICROS)),
            3 => now.saturating_add(rng.upto(10 * MILLIS)),
            4 => now.saturating_add(rng.upto(10 * SECONDS)),
            5 => now.saturating_add(rng.upto(HOURS)),
            6 => now.saturating_add(rng.upto(3 * DAYS)),
            7 => now.saturating_add(rng.upto(100 * DAYS)),
            8 => {
                // A boundary of some level, +-1.
                let bits = L0_SHIFT + LEVEL_BITS * rng.upto(LEVELS as u64) as u32;
                let step = 1u64 << bits.min(63);
                let boundary = (now / step)
                    .saturating_add(1 + rng.upto(2))
                    .saturating_mul(step);
                boundary.saturating_add(rng.upto(2)).saturating_sub(1)
            }
            9 => {
                // Equal to a pending deadline.
                match model
                    .pending
                    .keys()
                    .nth(rng.upto(model.pending.len() as u64) as usize)
                {
                    Some(&(d, _)) => d,
                    None => now,
                }
            }
            10 => now,
            _ => now.saturating_add(rng.upto(5 * MILLIS)),
        }
    }

    fn pick_step(rng: &mut Rng) -> Nanos {
        match rng.upto(7) {
            0 => 0,
            1 => rng.upto(1_000),
            2 => rng.upto(100 * MICROS),
            3 => rng.upto(3 * MILLIS),
            4 => rng.upto(SECONDS),
            5 => rng.upto(MINUTES),
            6 => rng.upto(HOURS),
            _ => rng.upto(20 * MICROS),
        }
    }

    fn differential(seed: u64, start: Nanos, capacity: usize, ops: usize) {
        let mut rng = Rng(seed);
        let mut w = TimerWheel::<u32>::new(capacity, start);
        let mut m = Model {
            pending: BTreeMap::new(),
            by_key: HashMap::new(),
            seq: 0,
        };
        let mut now = start;
        let mut dead: Vec<TimerKey> = Vec::new();
        let mut next_value = 0u32;
        let mut fires = 0usize;
        for _ in 0..ops {
            match rng.upto(99) {
                0..=44 => {
                    let deadline = pick_deadline(&mut rng, now, &m);
                    match w.insert(deadline, next_value) {
                        Ok(key) => m.insert(key, deadline, next_value),
                        Err(e) => {
                            assert_eq!(m.pending.len(), capacity);
                            assert_eq!(e.capacity, capacity);
                        }
                    }
                    next_value += 1;
                }
                45..=59 => {
                    let live = m.by_key.len();
                    if live > 0 && rng.chance(80) {
                        let (&key, _) = m
                            .by_key
                            .iter()
                            .nth(rng.upto(live as u64 - 1) as usize)
                            .unwrap();
                        assert_eq!(w.cancel(key), m.cancel(key));
                        dead.push(key);
                    } else if !dead.is_empty() {
                        let key = dead[rng.upto(dead.len() as u64 - 1) as usize];
                        assert_eq!(w.cancel(key), None);
                    }
                }
                60..=84 => {
                    now = now.saturating_add(pick_step(&mut rng));
                    let mut got = Vec::new();
                    let n = w.expire(now, |k, d, v| {
                        assert!(d <= now, "fired early");
                        got.push((k, d, v));
                    });
                    assert_eq!(n, got.len());
                    let mut want = Vec::new();
                    while let Some(f) = m.pop(now) {
                        want.push(f);
                    }
                    assert_eq!(got, want);
                    assert_eq!(w.elapsed, now);
                    fires += got.len();
                    dead.extend(got.iter().map(|f| f.0));
                }
                _ => {
                    // expire_one, re-arming some as periodic timers between pops.
                    now = now.saturating_add(pick_step(&mut rng));
                    let mut rearms = 0;
                    for _ in 0..capacity + 64 {
                        let got = w.expire_one(now);
                        assert_eq!(got, m.pop(now));
                        let Some((key, deadline, value)) = got else {
                            break;
                        };
                        assert!(deadline <= now);
                        fires += 1;
                        dead.push(key);
                        if rearms < 32 && rng.chance(50) {
                            rearms += 1;
                            let period = 1 + pick_step(&mut rng);
                            let d = deadline.saturating_add(period);
                            let key = w.insert(d, value).unwrap();
                            m.insert(key, d, value);
                        }
                        w.check();
                    }
                    assert_eq!(w.expire_one(now), None);
                    assert_eq!(w.elapsed, now);
                }
            }
            if dead.len() > 1_000 {
                dead.drain(..500);
            }
            assert_eq!(w.len(), m.pending.len());
            // next_deadline: never after the earliest deadline; exact when that deadline is
            // in the past or in the wheel's 65,536 ns window; otherwise after the wheel's time.
            match (w.next_deadline(), m.earliest()) {
                (None, None) => {}
                (Some(nd), Some(earliest)) => {
                    assert!(nd <= earliest);
                    if earliest <= w.elapsed || earliest / EXACT_WINDOW == w.elapsed / EXACT_WINDOW
                    {
                        assert_eq!(nd, earliest);
                    } else {
                        assert!(nd > w.elapsed);
                    }
                }
                other => panic!("next_deadline mismatch: {other:?}"),
            }
            w.check();
        }
        assert!(
            capacity < 8 || fires > ops / 20,
            "seed {seed}: only {fires} fires"
        );
    }

    #[test]
    fn differential_against_naive_model() {
        for seed in 0..12 {
            differential(seed, seed * 987_654_321_123, 64, 4_000);
        }
    }

    #[test]
    fn differential_many_seeds_starts_and_capacities() {
        // Capacities from 1 (the wheel is full most of the time) up; starts at zero, random,
        // below 2^40, and within one horizon of Nanos::MAX.
        for seed in 1_000..1_200u64 {
            let start = match seed % 4 {
                0 => 0,
                1 => Rng(seed).next_u64(),
                2 => Nanos::MAX - Rng(seed).upto(HORIZON),
                _ => Rng(seed).upto(1 << 40),
            };
            differential(seed, start, 1 + (seed as usize % 97), 1_500);
        }
    }

    #[test]
    fn differential_large_capacity() {
        differential(99, 123 * DAYS + 456_789, 1_024, 20_000);
    }

    #[test]
    fn differential_near_max() {
        // Deadlines and steps saturate at Nanos::MAX.
        for seed in 100..104 {
            differential(seed, Nanos::MAX - 2 * DAYS, 64, 3_000);
        }
        differential(104, Nanos::MAX - HORIZON - DAYS, 64, 3_000);
    }
}
