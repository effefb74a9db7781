//! The ring's one writer. It holds the segment's exclusive `flock` for its whole life, bumps
//! the writer epoch when it takes over, and publishes candles without ever waiting for readers.
//!
//! It never reads a clock, allocates or makes a system call on the publish path (it makes
//! them, a futex wake and one datagram per parked reader with a wake socket, only to wake
//! readers that asked for it).

use super::error::RingError;
use super::layout::*;
use super::protocol::{self, Doorbell, Slot};
use super::segment::{self, Access, CreateOptions, Segment};
use super::Candle;
use crate::sys;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::atomic::Ordering;

pub struct Writer {
    seg: Segment,
    slots: *const Slot,
    mask: u64,
    next: u64,
    writer_fences: bool,
    rings: u64,
    last_repair_ns: i64,
    /// Unbound socket the wake datagrams are sent from (None if sockets are unavailable).
    waker: Option<UnixDatagram>,
}

// SAFETY: the raw pointer points into `seg`'s mapping, which moves with the writer.
unsafe impl Send for Writer {}

impl Writer {
    /// Take over an existing ring as its writer.
    pub fn open(path: &Path) -> Result<Writer, RingError> {
        let seg = Segment::open(path, Access::Write)?;
        let slots = seg.slots().as_ptr();
        let mask = seg.geometry().slot_count - 1;
        let mut writer = Writer {
            seg,
            slots,
            mask,
            next: 0,
            writer_fences: true,
            rings: 0,
            last_repair_ns: i64::MIN / 2,
            waker: UnixDatagram::unbound()
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .ok(),
        };
        writer.take_over();
        Ok(writer)
    }

    /// Open the ring at `path`, creating it with `options` if it does not exist yet. Returns
    /// whether it was created.
    pub fn open_or_create(
        path: &Path,
        options: CreateOptions,
    ) -> Result<(Writer, bool), RingError> {
        let created = match segment::create(path, options) {
            Ok(()) => true,
            Err(RingError::Exists { .. }) => false,
            Err(e) => return Err(e),
        };
        Ok((Writer::open(path)?, created))
    }

    /// Become the current writer: recover the position after a writer that died, then
    /// announce ourselves with a new epoch.
    fn take_over(&mut self) {
        let h = self.seg.header();
        let mut next = h.write_seq.load(Ordering::Acquire);
        // A writer killed between completing a slot and publishing `write_seq` left a complete
        // position that readers (who poll slots) may already have delivered: keep it.
        let slots = self.seg.slots();
        let mut scanned = 0;
        while scanned < slots.len()
            && slots[(next & self.mask) as usize]
                .seq
                .load(Ordering::Acquire)
                == protocol::seq_done(next)
        {
            next += 1;
            scanned += 1;
        }
        // A position it left half-written (odd seq) is simply written again by us.
        h.write_seq.store(next, Ordering::Release);
        self.next = next;
        self.writer_fences = !sys::membarrier_register_global();
        let pid = std::process::id();
        h.writer_pid.store(pid, Ordering::Relaxed);
        h.writer_start_ticks.store(
            sys::process_start_ticks(pid).unwrap_or(0),
            Ordering::Relaxed,
        );
        let now = sys::realtime_ns() as u64;
        h.writer_started_ns.store(now, Ordering::Relaxed);
        h.writer_heartbeat_ns.store(now, Ordering::Relaxed);
        let mut flags = 0;
        if !self.writer_fences {
            flags |= WRITER_MEMBARRIER;
        }
        if self.waker.is_some() {
            flags |= WRITER_WAKE_SOCKETS;
        }
        h.writer_flags.store(flags, Ordering::Relaxed);
        h.writer_epoch.fetch_add(1, Ordering::Release);
        // A reader parking right now may have read the old flags and skipped membarrier while
        // we rely on it: one full fence here covers that instant.
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Publish one candle; returns its position. Never waits.
    #[inline]
    pub fn publish(&mut self, candle: &Candle) -> u64 {
        let pos = self.next;
        // SAFETY: `pos & mask` < slot_count, and the slots outlive `self`.
        let slot = unsafe { &*self.slots.add((pos & self.mask) as usize) };
        protocol::write_slot(slot, pos, &candle.to_words());
        self.seg
            .header()
            .write_seq
            .store(pos + 1, Ordering::Release);
        self.next = pos + 1;
        let doorbell = self.doorbell();
        if doorbell.needs_ring(self.writer_fences) {
            doorbell.ring();
            sys::futex_wake_all(&doorbell.bell);
            self.wake_sockets();
            self.rings += 1;
        }
        pos
    }

    /// One datagram to each parked reader that named a wake socket. A full socket buffer
    /// means a wake-up is already pending there, so errors are ignored.
    #[cold]
    fn wake_sockets(&self) {
        let (Some(waker), Some(control)) = (&self.waker, self.seg.control()) else {
            return;
        };
        for entry in &control.readers {
            // The reader set `parked` before announcing; our swap of `wanted` acquired it.
            if entry.parked.load(Ordering::Acquire) == 0 {
                continue;
            }
            let id = entry.wake.load(Ordering::Acquire);
            if id == 0 {
                continue;
            }
            if let Ok(addr) = SocketAddr::from_abstract_name(wake_socket_name(id)) {
                let _ = waker.send_to_addr(&[1], &addr);
            }
        }
    }

    fn doorbell(&self) -> &Doorbell {
        &self
            .seg
            .control()
            .expect("the writer maps the control page")
            .doorbell
    }

    /// The position the next `publish` will use.
    pub fn next_position(&self) -> u64 {
        self.next
    }

    pub fn epoch(&self) -> u64 {
        self.seg.header().writer_epoch.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// How many times this writer rang the doorbell (woke parked readers).
    pub fn doorbell_rings(&self) -> u64 {
        self.rings
    }

    /// True when this writer relies on readers' membarrier instead of fencing each publish.
    pub fn uses_membarrier(&self) -> bool {
        !self.writer_fences
    }

    /// Record that the writer is alive (call every few milliseconds, off the hot path), and
    /// repair the doorbell after readers that died while parked.
    pub fn heartbeat(&mut self, now_ns: i64) {
        self.seg
            .header()
            .writer_heartbeat_ns
            .store(now_ns as u64, Ordering::Relaxed);
        let control = self
            .seg
            .control()
            .expect("the writer maps the control page");
        // The scan reads /proc, so at most once a second, and only while someone is parked.
        if control.doorbell.parked.load(Ordering::Relaxed) != 0
            && now_ns - self.last_repair_ns >= 1_000_000_000
        {
            self.last_repair_ns = now_ns;
            for entry in &control.readers {
                let pid = entry.pid.load(Ordering::Acquire);
                if pid != 0
                    && pid != u32::MAX
                    && entry.parked.load(Ordering::Acquire) != 0
                    && !sys::process_alive(pid, entry.start_ticks.load(Ordering::Relaxed))
                    && entry.parked.swap(0, Ordering::AcqRel) != 0
                {
                    control.doorbell.leave();
                }
            }
        }
    }

    /// How many symbols the ring's table can hold, and how many it holds.
    pub fn symbol_room(&self) -> (u32, u32) {
        (self.seg.geometry().symbol_capacity, self.seg.symbol_count())
    }

    /// The id of symbol `name`, adding it to the ring's symbol table if it is new.
    pub fn symbol(&mut self, name: &str) -> Result<u32, RingError> {
        if name.is_empty() || name.len() > SYMBOL_NAME_MAX || name.contains('\0') {
            return Err(RingError::BadSymbol {
                name: name.to_owned(),
            });
        }
        let count = self.seg.symbol_count();
        if let Some(id) = (0..count).find(|&id| self.seg.symbol_name(id) == Some(name)) {
            return Ok(id);
        }
        let h = self.seg.header();
        let capacity = self.seg.geometry().symbol_capacity;
        if count >= capacity {
            return Err(RingError::SymbolsFull {
                path: self.seg.path().to_owned(),
                capacity,
            });
        }
        let mut entry = SymbolEntry {
            len: name.len() as u8,
            name: [0; SYMBOL_NAME_MAX],
        };
        entry.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: `count` < capacity; only the writer (us, under the flock) writes entries, and
        // readers never read an entry before the count below publishes it.
        unsafe { self.seg.symbol_entry_ptr(count).write_volatile(entry) };
        h.symbol_count.store(count + 1, Ordering::Release);
        Ok(count)
    }

    pub fn path(&self) -> &Path {
        self.seg.path()
    }
}
