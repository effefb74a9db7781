//! The ring segment's byte layout: header, control page, symbol table and slots, their offsets,
//! and the ring's limits (slots, symbols, readers: here and nowhere else, tied together by the
//! compile-time assertions below). See `docs/ring-format.md` for the same layout in prose; the two
//! must agree (a test checks the offsets).
//!
//! This module only describes memory; it never opens files or maps anything.

use super::protocol::{Doorbell, Slot};
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU32, AtomicU64};

/// `b"TICKRING"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"TICKRING");
/// A reader refuses any other major version.
pub const LAYOUT_MAJOR: u16 = 1;
/// Minor versions only add meaning to reserved fields; readers accept any.
pub const LAYOUT_MINOR: u16 = 1;
/// Written last by the creator; a header without it is not a ring yet.
pub const INIT_DONE: u32 = 0x5449_4e49; // "INIT"
pub const SLOT_SIZE: u32 = 64;
pub const PAGE: u64 = 4096;
pub const CONTROL_OFFSET: u64 = PAGE;
pub const SYMBOLS_OFFSET: u64 = 2 * PAGE;
pub const SYMBOL_ENTRY_SIZE: u64 = 32;
/// Longest symbol name, in bytes.
pub const SYMBOL_NAME_MAX: usize = 31;
/// Reader registrations the control page has room for.
pub const MAX_READERS: usize = 63;

/// Writer flag: the writer registered for `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, so a
/// parking reader issues that barrier and the writer's publish path needs no fence of its own.
pub const WRITER_MEMBARRIER: u32 = 1;
/// Writer flag: when it rings the doorbell, the writer also sends one datagram to the wake
/// socket of every parked reader that named one (layout 1.1), so a reader can sleep in
/// epoll or io_uring together with its other file descriptors.
pub const WRITER_WAKE_SOCKETS: u32 = 2;

pub const MIN_SLOTS: u64 = 16;
pub const MAX_SLOTS: u64 = 1 << 30;
pub const MAX_SYMBOLS: u32 = 1 << 16;

/// The slot's field list; its FNV-1a hash is the payload fingerprint stored in the header.
pub const PAYLOAD_DESCRIPTION: &str =
    "seq:u64,ts_ns:i64,symbol:u32,flags:u32,open:f64,high:f64,low:f64,close:f64,volume:f64";

pub const fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

pub const PAYLOAD_FINGERPRINT: u64 = fnv1a64(PAYLOAD_DESCRIPTION.as_bytes());

/// The first page of the segment. Line 0 and 1 are written once by the creator; line 2 by each
/// writer when it takes over; line 3 (`write_seq`) by the writer on every publish.
#[repr(C, align(64))]
pub struct Header {
    // Line 0: identity.
    pub magic: u64,
    pub layout_major: u16,
    pub layout_minor: u16,
    pub slot_size: u32,
    pub slot_count: u64,
    pub payload_fingerprint: u64,
    pub symbol_capacity: u32,
    pub mode: u32,
    pub control_offset: u64,
    pub symbols_offset: u64,
    pub slots_offset: u64,
    // Line 1: size, creation, readiness, symbol count.
    pub segment_size: u64,
    pub created_ns: u64,
    pub init: AtomicU32,
    pub symbol_count: AtomicU32,
    _reserved1: [u64; 5],
    // Line 2: the current writer.
    pub writer_epoch: AtomicU64,
    pub writer_pid: AtomicU32,
    pub writer_flags: AtomicU32,
    pub writer_start_ticks: AtomicU64,
    pub writer_heartbeat_ns: AtomicU64,
    pub writer_started_ns: AtomicU64,
    _reserved2: [u64; 3],
    // Line 3: the one cursor the writer owns.
    pub write_seq: AtomicU64,
    _reserved3: [u64; 7],
}

/// A reader's optional registration, so `ring info` can show its lag. Written only by that
/// reader (its cursor copy), read by anyone.
#[repr(C, align(64))]
pub struct ReaderEntry {
    /// 0 when free; claimed with a compare-and-swap.
    pub pid: AtomicU32,
    /// 1 while this reader is counted in the doorbell's `parked` (so a dead reader's count can
    /// be taken back by whoever notices it died).
    pub parked: AtomicU32,
    pub start_ticks: AtomicU64,
    pub cursor: AtomicU64,
    pub received: AtomicU64,
    pub lost: AtomicU64,
    pub overruns: AtomicU64,
    pub updated_ns: AtomicU64,
    /// Non-zero: the id of this reader's wake socket, a Unix datagram socket bound to the
    /// abstract name [`wake_socket_name`] (layout 1.1; zero in rings made by 1.0).
    pub wake: AtomicU64,
}

/// Length of a wake socket's abstract name: `tickloop-wake-` and 16 hex digits.
pub const WAKE_NAME_LEN: usize = 30;

/// The abstract socket name (without the leading NUL) for wake socket `id`.
pub fn wake_socket_name(id: u64) -> [u8; WAKE_NAME_LEN] {
    let mut name = *b"tickloop-wake-0000000000000000";
    for (i, byte) in name[14..].iter_mut().enumerate() {
        let nibble = (id >> (60 - 4 * i)) & 0xf;
        *byte = b"0123456789abcdef"[nibble as usize];
    }
    name
}

/// The second page: the only part of the segment a reader maps writable.
#[repr(C)]
pub struct Control {
    pub doorbell: Doorbell,
    pub readers: [ReaderEntry; MAX_READERS],
}

/// One symbol table entry: a length byte and up to 31 bytes of UTF-8 name.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SymbolEntry {
    pub len: u8,
    pub name: [u8; SYMBOL_NAME_MAX],
}

const _: () = {
    assert!(size_of::<Header>() == 256);
    assert!(offset_of!(Header, segment_size) == 64);
    assert!(offset_of!(Header, writer_epoch) == 128);
    assert!(offset_of!(Header, write_seq) == 192);
    assert!(size_of::<Slot>() == SLOT_SIZE as usize);
    assert!(size_of::<Doorbell>() == 64);
    assert!(offset_of!(Doorbell, wanted) == 8);
    assert!(size_of::<ReaderEntry>() == 64);
    assert!(size_of::<Control>() == PAGE as usize);
    assert!(size_of::<SymbolEntry>() == SYMBOL_ENTRY_SIZE as usize);
    // The ring's limits and how they depend on each other: a symbol entry is its length byte
    // and its name; slot counts are powers of two (an index is a mask); the control page holds
    // its header and every reader entry.
    assert!(SYMBOL_NAME_MAX + 1 == SYMBOL_ENTRY_SIZE as usize);
    assert!(MIN_SLOTS.is_power_of_two() && MAX_SLOTS.is_power_of_two() && MIN_SLOTS <= MAX_SLOTS);
    assert!((MAX_READERS + 1) * size_of::<ReaderEntry>() == PAGE as usize);
    assert!(MAX_SYMBOLS as u64 * SYMBOL_ENTRY_SIZE <= MAX_SLOTS * SLOT_SIZE as u64);
};

/// Where each part of a segment lies, derived from slot and symbol counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub slot_count: u64,
    pub symbol_capacity: u32,
    pub slots_offset: u64,
    /// Bytes the layout needs (the file may be rounded up to the filesystem's block size).
    pub len: u64,
}

impl Geometry {
    /// Checks the limits and computes offsets; the error says which value to change and how.
    pub fn new(slot_count: u64, symbol_capacity: u32) -> Result<Geometry, String> {
        if !slot_count.is_power_of_two() || !(MIN_SLOTS..=MAX_SLOTS).contains(&slot_count) {
            let hint = slot_count.clamp(MIN_SLOTS, MAX_SLOTS).next_power_of_two();
            return Err(format!(
                "--slots {slot_count} must be a power of two between {MIN_SLOTS} and {MAX_SLOTS}; try {}",
                hint.min(MAX_SLOTS)
            ));
        }
        if symbol_capacity == 0 || symbol_capacity > MAX_SYMBOLS {
            return Err(format!(
                "--symbols {symbol_capacity} must be between 1 and {MAX_SYMBOLS}"
            ));
        }
        let symbols_len = round_up(symbol_capacity as u64 * SYMBOL_ENTRY_SIZE, PAGE);
        let slots_offset = SYMBOLS_OFFSET + symbols_len;
        Ok(Geometry {
            slot_count,
            symbol_capacity,
            slots_offset,
            len: slots_offset + slot_count * SLOT_SIZE as u64,
        })
    }
}

pub const fn round_up(value: u64, to: u64) -> u64 {
    value.div_ceil(to) * to
}
