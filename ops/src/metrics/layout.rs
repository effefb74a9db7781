//! The metrics page's byte layout: the header's words, the five sections and their records,
//! and how big a page is for a given loop. `docs/metrics-format.md` is the same layout in
//! prose; the two must agree (a test compares every offset in the document with this file).
//!
//! Every field is a little-endian u64 (an f64 is stored as its IEEE-754 bits), so the engine
//! writes and a reader loads whole words with atomics and no field can tear. Names are a
//! length word followed by their bytes packed into words.
//!
//! This module only describes memory: it never opens, maps or reads anything, never
//! allocates, and never reads a clock.

use hdrhistogram::Histogram;

/// `b"TICKMTRC"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"TICKMTRC");
/// A reader refuses any other major version.
pub const LAYOUT_MAJOR: u64 = 1;
/// A minor version only gives meaning to reserved header words or appends fields to a record
/// (raising its `record_bytes`); readers accept any minor.
pub const LAYOUT_MINOR: u64 = 1;
/// Bytes of the header, section 0's offset at the earliest.
pub const HEADER_BYTES: u64 = 512;
/// A page is a whole number of these.
pub const PAGE_ALIGN: u64 = 4096;
/// Each section starts on a cache line.
pub const SECTION_ALIGN: u64 = 64;
/// Bytes of a ring's name, of an adapter's name and of the instance's name.
pub const RING_NAME_BYTES: usize = 64;
pub const ADAPTER_NAME_BYTES: usize = 32;
pub const INSTANCE_BYTES: usize = 120;
// Names are whole words, and every adapter's name fits whole (an instance name over 120
// bytes, or a ring's file name over 64, is cut and counted in `names_truncated`).
const _: () = assert!(RING_NAME_BYTES.is_multiple_of(8) && ADAPTER_NAME_BYTES.is_multiple_of(8));
const _: () = assert!(INSTANCE_BYTES.is_multiple_of(8));
const _: () = assert!(ADAPTER_NAME_BYTES >= tickloop_runtime::limits::MAX_ADAPTER_NAME);

/// The header's words (index = byte offset / 8). Words 0..=9 (but `SEQ`) are written once,
/// before the page appears under its name; the rest only between the two stores of `SEQ`.
pub mod header {
    pub const MAGIC: usize = 0;
    pub const LAYOUT_MAJOR: usize = 1;
    pub const LAYOUT_MINOR: usize = 2;
    pub const HEADER_BYTES: usize = 3;
    pub const PAGE_BYTES: usize = 4;
    pub const PID: usize = 5;
    pub const START_TICKS: usize = 6;
    pub const STARTED_UNIX_NS: usize = 7;
    pub const INTERVAL_NS: usize = 8;
    pub const SEQ: usize = 9;
    pub const STATE: usize = 10;
    pub const CLOCK: usize = 11;
    pub const PUBLISHES: usize = 12;
    pub const STARTED_NS: usize = 13;
    pub const UPDATED_NS: usize = 14;
    pub const TIMERS_NOT_SHOWN: usize = 16;
    pub const RINGS_NOT_SHOWN: usize = 17;
    pub const ADAPTERS_NOT_SHOWN: usize = 18;
    pub const NAMES_TRUNCATED: usize = 19;
    /// Five section descriptors of four words each: offset, record_bytes, capacity, count.
    pub const SECTIONS: usize = 24;
    pub const INSTANCE_LEN: usize = 48;
    pub const INSTANCE: usize = 49;
    /// Words in the header.
    pub const WORDS: usize = 64;
}

/// The sections, in page order; the value is the index of its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Loop = 0,
    Trading = 1,
    Timers = 2,
    Rings = 3,
    Adapters = 4,
}

impl Section {
    pub const ALL: [Section; 5] = [
        Section::Loop,
        Section::Trading,
        Section::Timers,
        Section::Rings,
        Section::Adapters,
    ];

    /// The header word of this section's descriptor (offset; record_bytes, capacity and
    /// count follow).
    pub const fn descriptor(self) -> usize {
        header::SECTIONS + 4 * self as usize
    }

    pub const fn name(self) -> &'static str {
        match self {
            Section::Loop => "loop",
            Section::Trading => "trading",
            Section::Timers => "timers",
            Section::Rings => "rings",
            Section::Adapters => "adapters",
        }
    }

    /// Words of one record as this layout (1.0) defines it.
    pub const fn record_words(self) -> usize {
        match self {
            Section::Loop => LoopRecord::WORDS,
            Section::Trading => TradingRecord::WORDS,
            Section::Timers => TimerRecord::WORDS,
            Section::Rings => RingRecord::WORDS + RING_NAME_BYTES / 8,
            Section::Adapters => AdapterRecord::WORDS + ADAPTER_NAME_BYTES / 8,
        }
    }
}

/// The engine's state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// Created; the loop has not published yet.
    Starting = 0,
    Running = 1,
    /// The loop stopped; this is its last snapshot.
    Stopped = 2,
}

impl PageState {
    pub fn from_word(w: u64) -> Option<PageState> {
        match w {
            0 => Some(PageState::Starting),
            1 => Some(PageState::Running),
            2 => Some(PageState::Stopped),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            PageState::Starting => "starting",
            PageState::Running => "running",
            PageState::Stopped => "stopped",
        }
    }
}

/// What the loop's clock is: `updated_ns` is comparable with a reader's CLOCK_MONOTONIC only
/// for [`Clock::Monotonic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    Monotonic = 0,
    /// The simulated driver's virtual time.
    Virtual = 1,
}

/// How many rows each list section holds: the loop's limits, fixed when the page is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// The loop's `periodic_capacity`.
    pub timers: u32,
    /// The rings the loop reads (fixed when it starts).
    pub rings: u32,
    /// The adapter host's limit.
    pub adapters: u32,
}

/// Where each section lies in a page of a given [`Shape`], and the page's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Byte offset, record bytes and capacity of each section, in [`Section::ALL`] order.
    pub sections: [(u64, u64, u64); 5],
    pub page_bytes: u64,
}

impl Layout {
    pub fn new(shape: Shape) -> Layout {
        let capacities = [
            1,
            1,
            shape.timers as u64,
            shape.rings as u64,
            shape.adapters as u64,
        ];
        let mut sections = [(0, 0, 0); 5];
        let mut at = HEADER_BYTES;
        for (i, section) in Section::ALL.iter().enumerate() {
            let record = section.record_words() as u64 * 8;
            sections[i] = (at, record, capacities[i]);
            at = round_up(at + record * capacities[i], SECTION_ALIGN);
        }
        Layout {
            sections,
            page_bytes: round_up(at, PAGE_ALIGN),
        }
    }

    /// The word index of record `row` of `section`.
    pub fn word(&self, section: Section, row: usize) -> usize {
        let (offset, record, _) = self.sections[section as usize];
        (offset / 8) as usize + row * (record / 8) as usize
    }

    pub fn capacity(&self, section: Section) -> usize {
        self.sections[section as usize].2 as usize
    }
}

pub const fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// A latency distribution as the page keeps it (all in ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub count: u64,
    /// The histogram's mean times its count (to its precision).
    pub sum_ns: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl Summary {
    /// From an hdrhistogram of nanoseconds; no allocation (each quantile walks the counts).
    pub fn from_histogram(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            sum_ns: (h.mean() * h.len() as f64) as u64,
            p50_ns: h.value_at_quantile(0.5),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
        }
    }
}

/// A record of plain u64 fields, in declaration order, with its word count and field names
/// (the document's tables list the same names at the same offsets).
macro_rules! record {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: u64,)*
        }

        impl $name {
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];
            pub const WORDS: usize = Self::FIELDS.len();

            /// The fields as words, in order.
            pub fn to_words(&self) -> [u64; Self::WORDS] {
                [$(self.$field),*]
            }

            /// From the first [`Self::WORDS`] words of `w` (missing words read as 0).
            pub fn from_words(w: &[u64]) -> Self {
                let mut fields = w.iter().copied().chain(core::iter::repeat(0));
                $(let $field = fields.next().unwrap_or(0);)*
                $name { $($field),* }
            }
        }
    };
}

record!(
    /// Section 0: the loop's counters ([`tickloop_runtime::event_loop::LoopStats`]), the telemetry
    /// sink's, and the loop's own lag (how late its housekeeping tick ran).
    LoopRecord {
        iterations, events, candles, candles_lost, timers_fired, backlog_iterations,
        max_backlog, parks, fd_polls, actions, actions_dropped, follow_ups_dropped,
        timer_refusals, reload_requests, app_reconfigured, config_generation, config_rejected,
        service_requests_dropped, journal_records, journal_dropped, telemetry_emitted,
        telemetry_dropped,
        /// 1 while the telemetry sink drops records.
        telemetry_degraded,
        lag_count, lag_sum_ns, lag_p50_ns, lag_p99_ns, lag_p999_ns, lag_max_ns,
    }
);

record!(
    /// Section 1: a strategy's order counters (the status file's `trading`).
    TradingRecord {
        /// 1 when a strategy host runs (otherwise every other field is 0).
        strategy,
        orders_submitted, fills, orders_rejected, orders_cancelled, orders_denied,
        fill_faults, open_orders, trades,
        /// f64 bits.
        realized_pnl,
        /// Minor 1: reconciliations with the venue, differences they found, orders that
        /// became `Unknown`.
        reconciliations, reconcile_differences, orders_unknown,
    }
);

record!(
    /// Section 2: one periodic timer (lateness and the app's run time per firing).
    TimerRecord {
        timer, period_ns, budget_ns, overruns, skipped,
        late_count, late_sum_ns, late_p50_ns, late_p99_ns, late_p999_ns, late_max_ns,
        run_count, run_sum_ns, run_p50_ns, run_p99_ns, run_p999_ns, run_max_ns,
    }
);

record!(
    /// Section 3: one ring the loop reads; its name's bytes follow the fields.
    RingRecord {
        source, lag, lost, overruns, received, writer_alive, registered, name_len,
    }
);

record!(
    /// Section 4: one adapter; its name's bytes follow the fields.
    AdapterRecord {
        adapter, state, pid, starts, in_flight, requests, done, failed, timeouts, refused,
        events_lost, name_len,
    }
);

impl TimerRecord {
    pub fn set_lateness(&mut self, s: Summary) {
        (self.late_count, self.late_sum_ns, self.late_p50_ns) = (s.count, s.sum_ns, s.p50_ns);
        (self.late_p99_ns, self.late_p999_ns, self.late_max_ns) = (s.p99_ns, s.p999_ns, s.max_ns);
    }
    pub fn set_run(&mut self, s: Summary) {
        (self.run_count, self.run_sum_ns, self.run_p50_ns) = (s.count, s.sum_ns, s.p50_ns);
        (self.run_p99_ns, self.run_p999_ns, self.run_max_ns) = (s.p99_ns, s.p999_ns, s.max_ns);
    }
    pub fn lateness(&self) -> Summary {
        Summary {
            count: self.late_count,
            sum_ns: self.late_sum_ns,
            p50_ns: self.late_p50_ns,
            p99_ns: self.late_p99_ns,
            p999_ns: self.late_p999_ns,
            max_ns: self.late_max_ns,
        }
    }
    pub fn run(&self) -> Summary {
        Summary {
            count: self.run_count,
            sum_ns: self.run_sum_ns,
            p50_ns: self.run_p50_ns,
            p99_ns: self.run_p99_ns,
            p999_ns: self.run_p999_ns,
            max_ns: self.run_max_ns,
        }
    }
}

impl LoopRecord {
    pub fn set_lag(&mut self, s: Summary) {
        (self.lag_count, self.lag_sum_ns, self.lag_p50_ns) = (s.count, s.sum_ns, s.p50_ns);
        (self.lag_p99_ns, self.lag_p999_ns, self.lag_max_ns) = (s.p99_ns, s.p999_ns, s.max_ns);
    }
    pub fn lag(&self) -> Summary {
        Summary {
            count: self.lag_count,
            sum_ns: self.lag_sum_ns,
            p50_ns: self.lag_p50_ns,
            p99_ns: self.lag_p99_ns,
            p999_ns: self.lag_p999_ns,
            max_ns: self.lag_max_ns,
        }
    }
}

/// Pack `bytes` (at most `out.len() * 8` of them; the rest is cut) into words, little-endian,
/// zero-padded. Returns how many bytes were kept.
pub fn pack_name(bytes: &[u8], out: &mut [u64]) -> usize {
    let kept = bytes.len().min(out.len() * 8);
    for (i, word) in out.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        let start = (i * 8).min(kept);
        let end = (start + 8).min(kept);
        b[..end - start].copy_from_slice(&bytes[start..end]);
        *word = u64::from_le_bytes(b);
    }
    kept
}

/// The first `len` bytes packed in `words` (`len` is capped at what the words hold).
pub fn unpack_name(words: &[u64], len: u64, out: &mut Vec<u8>) {
    out.clear();
    let len = (len as usize).min(words.len() * 8);
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.truncate(len);
}

/// A ring's name cut to [`RING_NAME_BYTES`] at a character boundary when it is valid UTF-8.
pub fn cut_name(bytes: &[u8], max: usize) -> &[u8] {
    if bytes.len() <= max {
        return bytes;
    }
    let mut end = max;
    if std::str::from_utf8(bytes).is_ok() {
        while end > 0 && (bytes[end] & 0xC0) == 0x80 {
            end -= 1;
        }
    }
    &bytes[..end]
}
