//! Every limit of the runtime, in one place: how many of each thing a loop, an adapter host,
//! the journal, and the telemetry sink accept, each fixed at compile time or checked
//! against these bounds when a config is validated. The assertions below tie together the
//! limits that depend on each other, so changing one that would break another fails the build.
//!
//! It holds numbers only: it never imports another module of this crate (the modules that
//! enforce a limit import it from here and re-export it under their own path).

use tickloop_ring::layout as ring;

// The loop (`event_loop`).

/// Fd sources one loop can hold (the adapter host is one, however many adapters it runs).
pub const MAX_FD_SOURCES: usize = 62;
/// Services one loop can hold (status, systemd, config polling, metrics...).
pub const MAX_SERVICES: usize = 16;
/// Largest `[loop] timer_capacity`.
pub const MAX_TIMERS: u32 = 1 << 24;
/// Largest `[loop] batch` (results read from one ring in one iteration).
pub const MAX_BATCH: u32 = 1 << 20;
/// Largest `[loop] actions_per_event`.
pub const MAX_ACTIONS_PER_EVENT: u32 = 1 << 16;
/// Largest `[loop] ready_capacity` (readiness reports one driver wait returns).
pub const MAX_READY: u32 = 1 << 16;
/// Bounds of `[loop] journal_buffer`, in bytes.
pub const MIN_JOURNAL_BUFFER: u32 = 1 << 14;
pub const MAX_JOURNAL_BUFFER: u32 = 1 << 26;

// The journal (`journal`).

/// The largest record (an event or one action); bigger ones are refused when recorded.
pub const MAX_FRAME: usize = 4096;

// The adapter host (`adapter`).

/// Adapters one host runs at most (and the metrics page shows).
pub const MAX_ADAPTERS: usize = 16;
/// Longest adapter name, in bytes.
pub const MAX_ADAPTER_NAME: usize = 32;
/// Symbols in the host's table at most: a symbol's id is the same in a ring and at a venue.
pub const MAX_SYMBOLS: usize = ring::MAX_SYMBOLS as usize;
/// The longest symbol name the engine sends to an adapter or accepts from one.
pub const MAX_SYMBOL_BYTES: usize = 64;

// The telemetry sink (`telemetry`).

/// The longest line any `Telemetry` value serializes to (prefix, escaped texts and newline
/// included). Every variant's worst case is checked against it in the unit tests.
pub const MAX_LINE: usize = 4096;
/// Bytes reserved in front of the batch for the `Telemetry::Dropped` line.
pub const DROPPED_RESERVE: usize = 128;
/// Bounds of `[telemetry] buffer_bytes`.
pub const MIN_BUFFER: u32 = 16 << 10;
pub const MAX_BUFFER: u32 = 64 << 20;
/// Largest `[telemetry] keep_files`.
pub const MAX_KEEP_FILES: u32 = 1000;

// How they depend on each other.

const _: () = {
    // A journal buffer always holds at least one whole record.
    assert!(MIN_JOURNAL_BUFFER as usize >= MAX_FRAME);
    assert!(MIN_JOURNAL_BUFFER <= MAX_JOURNAL_BUFFER);
    // A telemetry buffer always holds the reserved Dropped line and one whole line.
    assert!(MIN_BUFFER as usize >= DROPPED_RESERVE + MAX_LINE);
    assert!(MIN_BUFFER <= MAX_BUFFER);
    // The host's symbol table is the ring's: any symbol a ring names can be traded.
    assert!(MAX_SYMBOLS == ring::MAX_SYMBOLS as usize);
    assert!(MAX_SYMBOL_BYTES >= ring::SYMBOL_NAME_MAX);
    // A loop's services include the four the engine always adds (status, systemd, config
    // polling, metrics) with room for the app's own.
    assert!(MAX_SERVICES >= 8);
};
