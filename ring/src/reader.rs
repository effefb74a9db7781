//! A ring reader: maps the segment read-only, owns its cursor in its own memory, and turns
//! slots into [`ReadResult`]s: a whole candle, an exact `Overrun { lost }` when it was lapped,
//! or nothing yet. Its [`WaitStrategy`] says how it waits when there is nothing.
//!
//! A reader never writes to the ring's header or slots. Only the control page is writable to
//! it: its own registration entry (so others can see its lag) and the doorbell when it parks.

use super::error::RingError;
use super::layout::*;
use super::protocol::{self, Slot, SlotRead};
use super::segment::{Access, Segment};
use super::Candle;
use crate::sys;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Where a new reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the next candle the writer publishes.
    Next,
    /// With the oldest candle still in the ring.
    Oldest,
    /// At an absolute position.
    At(u64),
}

#[derive(Debug, Clone, Copy)]
pub struct ReaderOptions {
    pub start: Start,
    /// Take an entry in the control page (needed to park; lets `ring info` show this reader).
    pub register: bool,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            start: Start::Next,
            register: true,
        }
    }
}

/// How a reader waits when the ring has nothing new.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaitStrategy {
    /// Spin on the next slot (with `pause`, which measured faster than a bare loop: a bare
    /// loop keeps pulling the slot's line back while the writer is still storing into it).
    /// Lowest latency; burns its core.
    Spin,
    /// Spin `spins` times, then sleep on the doorbell until the writer
    /// rings it (or `park_timeout`, after which it checks for a stop request and a new writer).
    SpinThenPark { spins: u32, park_timeout: Duration },
    /// Look every `interval`, sleeping in between.
    Poll { interval: Duration },
}

impl Default for WaitStrategy {
    fn default() -> Self {
        WaitStrategy::SpinThenPark {
            spins: 20_000,
            park_timeout: Duration::from_millis(100),
        }
    }
}

/// One step of reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadResult {
    /// The candle at position `pos`, whole.
    Candle { pos: u64, candle: Candle },
    /// The writer lapped this reader: exactly `lost` positions were skipped, and reading
    /// continues an eighth of the ring above the oldest candle still intact.
    Overrun { lost: u64 },
    /// A writer took over the ring (a restart): its epoch. Positions continue.
    NewWriter { epoch: u64 },
    /// The ring's file was removed (`ring rm`): no writer can reach this reader any more.
    /// Returned by `wait` once nothing is left to read.
    RingRemoved,
    /// Nothing new.
    Empty,
}

/// What a reader has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReaderStats {
    pub received: u64,
    pub lost: u64,
    pub overruns: u64,
    pub parks: u64,
}

/// Why a reader that asked for a control-page entry holds none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unregistered {
    /// The ring file is not writable by this user, so its control page is mapped read-only.
    ReadOnly,
    /// Every one of the [`MAX_READERS`] entries is held by a live reader.
    RegistryFull,
}

pub struct Reader {
    seg: Segment,
    slots: *const Slot,
    mask: u64,
    cursor: u64,
    epoch: u64,
    entry: Option<usize>,
    stats: ReaderStats,
    published_cursor: u64,
    /// Cursor at which `try_read` next copies progress to the registry (never if unregistered).
    next_publish: u64,
    /// The last park could not issue the membarrier the writer relies on.
    membarrier_failed: bool,
    /// Asked for an entry and got none: why.
    unregistered: Option<Unregistered>,
}

// SAFETY: the raw pointer points into `seg`'s mapping, which moves with the reader.
unsafe impl Send for Reader {}

const PUBLISH_EVERY: u64 = 4096;

/// Registry `pid` while an entry is being claimed (no real pid is this large).
const CLAIMING: u32 = u32::MAX;

impl Reader {
    pub fn attach(path: &Path, options: ReaderOptions) -> Result<Reader, RingError> {
        let seg = Segment::open(path, Access::Read)?;
        let h = seg.header();
        let capacity = seg.geometry().slot_count;
        let write_seq = h.write_seq.load(Ordering::Acquire);
        let cursor = match options.start {
            Start::Next => write_seq,
            Start::Oldest => write_seq.saturating_sub(capacity - 1),
            Start::At(pos) => pos,
        };
        let epoch = h.writer_epoch.load(Ordering::Acquire);
        let slots = seg.slots().as_ptr();
        let mut reader = Reader {
            seg,
            slots,
            mask: capacity - 1,
            cursor,
            epoch,
            entry: None,
            stats: ReaderStats::default(),
            published_cursor: u64::MAX,
            next_publish: u64::MAX,
            membarrier_failed: false,
            unregistered: None,
        };
        if options.register {
            reader.entry = reader.register();
            reader.publish_progress();
            if reader.entry.is_none() {
                reader.unregistered = Some(match reader.seg.control() {
                    None => Unregistered::ReadOnly,
                    Some(_) => Unregistered::RegistryFull,
                });
            }
        }
        Ok(reader)
    }

    /// Claim a free (or dead reader's) entry in the control page.
    fn register(&self) -> Option<usize> {
        let control = self.seg.control()?;
        let pid = std::process::id();
        let ticks = sys::process_start_ticks(pid).unwrap_or(0);
        for (index, entry) in control.readers.iter().enumerate() {
            let holder = entry.pid.load(Ordering::Acquire);
            // CLAIMING marks an entry whose new holder is writing its start time: never free.
            let free = holder == 0
                || (holder != CLAIMING
                    && !sys::process_alive(holder, entry.start_ticks.load(Ordering::Relaxed)));
            if !free
                || entry
                    .pid
                    .compare_exchange(holder, CLAIMING, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            // A reader that died parked is still counted in the doorbell: take it back.
            if entry.parked.swap(0, Ordering::AcqRel) != 0 {
                control.doorbell.leave();
            }
            entry.start_ticks.store(ticks, Ordering::Relaxed);
            entry.wake.store(0, Ordering::Relaxed);
            for counter in [&entry.received, &entry.lost, &entry.overruns] {
                counter.store(0, Ordering::Relaxed);
            }
            // Publishes the start time with the pid, so nobody judges us by a stale one.
            entry.pid.store(pid, Ordering::Release);
            return Some(index);
        }
        None
    }

    /// Copy this reader's cursor and counters into its control-page entry.
    pub fn publish_progress(&mut self) {
        let (Some(index), Some(control)) = (self.entry, self.seg.control()) else {
            return;
        };
        let entry = &control.readers[index];
        entry.cursor.store(self.cursor, Ordering::Relaxed);
        entry.received.store(self.stats.received, Ordering::Relaxed);
        entry.lost.store(self.stats.lost, Ordering::Relaxed);
        entry.overruns.store(self.stats.overruns, Ordering::Relaxed);
        entry
            .updated_ns
            .store(sys::realtime_ns() as u64, Ordering::Relaxed);
        self.published_cursor = self.cursor;
        self.next_publish = self.cursor + PUBLISH_EVERY;
    }

    #[inline(always)]
    fn slot(&self, pos: u64) -> &Slot {
        // SAFETY: masked index < slot_count; the slots outlive `self`.
        unsafe { &*self.slots.add((pos & self.mask) as usize) }
    }

    /// Read the next position if it is there. Never blocks, never allocates.
    #[inline]
    pub fn try_read(&mut self) -> ReadResult {
        let pos = self.cursor;
        match protocol::read_slot(self.slot(pos), pos) {
            SlotRead::Ready(words) => {
                self.cursor = pos + 1;
                self.stats.received += 1;
                if self.cursor >= self.next_publish {
                    self.publish_progress();
                }
                ReadResult::Candle {
                    pos,
                    candle: Candle::from_words(&words),
                }
            }
            SlotRead::NotYet => ReadResult::Empty,
            SlotRead::Overwritten => {
                // Positions below write_seq are complete; the writer may be writing write_seq
                // itself, which occupies the slot of write_seq - capacity. Resume an eighth of
                // the ring above that: right at the edge, a reader slower than the writer
                // would be lapped again and again by a few candles each time.
                let write_seq = self.seg.header().write_seq.load(Ordering::Acquire);
                let capacity = self.mask + 1;
                let oldest_intact = (write_seq + 1).saturating_sub(capacity);
                let resume = (oldest_intact + capacity / 8).max(pos + 1);
                let lost = resume - pos;
                self.cursor = resume;
                self.stats.lost += lost;
                self.stats.overruns += 1;
                ReadResult::Overrun { lost }
            }
        }
    }

    /// Is there something to read at the cursor (a candle or an overrun)?
    #[inline]
    pub fn ready(&self) -> bool {
        protocol::slot_ready(self.slot(self.cursor), self.cursor)
    }

    /// Has a new writer taken over since we last looked? Returns its epoch once.
    pub fn check_writer(&mut self) -> Option<u64> {
        let epoch = self.seg.header().writer_epoch.load(Ordering::Acquire);
        if epoch != self.epoch {
            self.epoch = epoch;
            return Some(epoch);
        }
        None
    }

    /// Read the next result, waiting per `strategy` while there is none. Returns
    /// [`ReadResult::Empty`] only when `stop()` says so; `stop` is polled at least every
    /// park timeout or poll interval, and every 1024 spins.
    pub fn wait(&mut self, strategy: &WaitStrategy, stop: &mut dyn FnMut() -> bool) -> ReadResult {
        let mut idle: u32 = 0;
        loop {
            let result = self.try_read();
            if result != ReadResult::Empty {
                return result;
            }
            idle = idle.wrapping_add(1);
            // Housekeeping (new writer, progress, stop) every 1024 spins or after every sleep;
            // the removal check (an fstat) after every sleep, or every 2^20 spins.
            let (housekeeping, check_removed) = match *strategy {
                WaitStrategy::Spin => {
                    core::hint::spin_loop();
                    (idle.is_multiple_of(1024), idle.is_multiple_of(1 << 20))
                }
                WaitStrategy::SpinThenPark {
                    spins,
                    park_timeout,
                } => {
                    if idle < spins {
                        core::hint::spin_loop();
                        (idle.is_multiple_of(1024), idle.is_multiple_of(1 << 20))
                    } else {
                        self.park(park_timeout);
                        idle = 0;
                        (true, true)
                    }
                }
                WaitStrategy::Poll { interval } => {
                    std::thread::sleep(interval);
                    (true, true)
                }
            };
            if housekeeping {
                if let Some(epoch) = self.check_writer() {
                    return ReadResult::NewWriter { epoch };
                }
                if check_removed && self.seg.unlinked() {
                    return ReadResult::RingRemoved;
                }
                if self.cursor != self.published_cursor {
                    self.publish_progress();
                }
                if stop() {
                    return ReadResult::Empty;
                }
            }
        }
    }

    /// Sleep until the writer rings the doorbell, the timeout passes, or a signal arrives.
    /// A reader without a control-page entry cannot park and sleeps briefly instead.
    pub fn park(&mut self, timeout: Duration) {
        let Some(bell) = self.announce_park() else {
            std::thread::sleep(timeout.min(Duration::from_micros(100)));
            return;
        };
        let timeout = timeout.min(self.park_limit().unwrap_or(timeout));
        if !self.ready() {
            if let Some(control) = self.seg.control() {
                sys::futex_wait(&control.doorbell.bell, bell, timeout);
            }
        }
        self.end_park();
    }

    /// First half of a park, for a caller that sleeps elsewhere (the loop sleeps in epoll or
    /// io_uring on the reader's wake socket, see [`Reader::set_wake_socket`]): asks the writer
    /// to ring and returns the bell value to sleep on. After this, check [`Reader::ready`]
    /// once more before sleeping, and call [`Reader::end_park`] after waking. None if this
    /// reader is not registered (it cannot be woken; poll it instead).
    pub fn announce_park(&mut self) -> Option<u32> {
        let (Some(index), Some(control)) = (self.entry, self.seg.control()) else {
            return None;
        };
        self.stats.parks += 1;
        control.readers[index].parked.store(1, Ordering::Release);
        let bell = control.doorbell.announce();
        let flags = self.seg.header().writer_flags.load(Ordering::Relaxed);
        self.membarrier_failed = flags & WRITER_MEMBARRIER != 0 && !sys::membarrier_global();
        Some(bell)
    }

    /// The longest this reader may sleep after [`Reader::announce_park`] without risking a
    /// missed candle for long: None when the writer will wake it; 1 ms when it cannot force
    /// the writer's barrier (membarrier failed), so a missed wake-up stays short.
    pub fn park_limit(&self) -> Option<Duration> {
        self.membarrier_failed.then_some(Duration::from_millis(1))
    }

    /// Does the current writer send wake datagrams (so a wake socket is enough to sleep on)?
    pub fn writer_wakes_sockets(&self) -> bool {
        self.seg.header().writer_flags.load(Ordering::Relaxed) & WRITER_WAKE_SOCKETS != 0
    }

    /// Second half of a park: no longer asleep.
    pub fn end_park(&mut self) {
        let (Some(index), Some(control)) = (self.entry, self.seg.control()) else {
            return;
        };
        if control.readers[index].parked.swap(0, Ordering::AcqRel) != 0 {
            control.doorbell.leave();
        }
    }

    /// Name a wake socket (see [`super::layout::wake_socket_name`]) the writer sends a
    /// datagram to when it rings for this reader. Returns false if the reader is not
    /// registered. Id 0 removes it.
    pub fn set_wake_socket(&mut self, id: u64) -> bool {
        let (Some(index), Some(control)) = (self.entry, self.seg.control()) else {
            return false;
        };
        control.readers[index].wake.store(id, Ordering::Release);
        true
    }

    /// The start and length of the slots' mapping, to prefault it.
    pub fn slots_region(&self) -> (*const u8, usize) {
        let slots = self.seg.slots();
        (slots.as_ptr() as *const u8, std::mem::size_of_val(slots))
    }

    /// Has the ring's file been removed (an fstat; call it off the hot path)?
    pub fn ring_removed(&self) -> bool {
        self.seg.unlinked()
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// True if this reader holds a control-page entry (can park, shows in `ring info`).
    pub fn registered(&self) -> bool {
        self.entry.is_some()
    }

    /// Why this reader holds no control-page entry although it asked for one.
    pub fn unregistered(&self) -> Option<Unregistered> {
        self.unregistered
    }

    /// The writer's published position (positions below it are complete).
    pub fn write_seq(&self) -> u64 {
        self.seg.header().write_seq.load(Ordering::Acquire)
    }

    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    pub fn symbol_name(&self, id: u32) -> Option<&str> {
        self.seg.symbol_name(id)
    }

    pub fn path(&self) -> &Path {
        self.seg.path()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.publish_progress();
        self.end_park();
        if let (Some(index), Some(control)) = (self.entry, self.seg.control()) {
            control.readers[index].wake.store(0, Ordering::Relaxed);
            control.readers[index].pid.store(0, Ordering::Release);
        }
    }
}
