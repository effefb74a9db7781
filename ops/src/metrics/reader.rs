//! The metrics page as a reader sees it (the exporter, `tickloop top`, tests): validation of
//! the header before anything is mapped, a read-only mapping, and whole snapshots copied out
//! under the engine's seqlock.
//!
//! It owns a read-only file descriptor, a read-only mapping and the copy it decodes. It never
//! writes to the page, takes no lock on it (so no reader can hold an engine up or out), never
//! reads a clock (the caller passes its time to [`Snapshot::liveness`]), and never trusts the
//! page's numbers for indexing: every count is capped by a capacity checked at open.

use super::layout::{
    self, header, AdapterRecord, Clock, Layout, LoopRecord, PageState, RingRecord, Section,
    TimerRecord, TradingRecord,
};
use super::MetricsError;
use memmap2::{Mmap, MmapOptions};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Tries at a consistent copy before [`PageReader::snapshot`] gives up: the engine keeps
/// `seq` odd for microseconds per housekeeping tick, so a miss is rare and two are rarer.
const SNAPSHOT_TRIES: u32 = 1000;

/// A decoded snapshot of a page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub layout_minor: u64,
    pub page_bytes: u64,
    pub pid: u64,
    /// The engine's start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
    pub started_unix_ns: u64,
    pub interval_ns: u64,
    /// `None` for a state word this reader does not know.
    pub state: Option<PageState>,
    pub clock: u64,
    pub publishes: u64,
    /// The loop's clock when it started and at this snapshot.
    pub started_ns: u64,
    pub updated_ns: u64,
    /// Rows that had no room in their section at this snapshot (never expected: the page is
    /// sized from the loop's limits), and names cut to fit.
    pub timers_not_shown: u64,
    pub rings_not_shown: u64,
    pub adapters_not_shown: u64,
    pub names_truncated: u64,
    pub instance: String,
    /// Capacity of each section, in [`Section::ALL`] order.
    pub capacities: [u64; 5],
    pub lp: LoopRecord,
    pub trading: TradingRecord,
    pub timers: Vec<TimerRecord>,
    pub rings: Vec<(RingRecord, String)>,
    pub adapters: Vec<(AdapterRecord, String)>,
}

/// Whether the numbers of a snapshot are live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Up,
    /// The page exists but the loop has not published yet.
    Starting,
    /// The engine stopped; these are its last numbers.
    Stopped,
    /// The process that wrote the page is gone (killed, crashed).
    Gone,
    /// Not updated for longer than the allowed age (a hung loop).
    Stale {
        age_ns: u64,
    },
}

impl Liveness {
    pub fn is_up(self) -> bool {
        self == Liveness::Up
    }

    /// What a person is told.
    pub fn describe(self, pid: u64) -> String {
        match self {
            Liveness::Up => format!("engine pid {pid} running"),
            Liveness::Starting => format!("engine pid {pid} starting (no snapshot yet)"),
            Liveness::Stopped => format!("engine pid {pid} stopped; these are its last numbers"),
            Liveness::Gone => format!("engine pid {pid} is gone (killed or crashed); these numbers are old"),
            Liveness::Stale { age_ns } => format!(
                "engine pid {pid} has not updated the page for {:.1} s (hung?); these numbers are old",
                age_ns as f64 / 1e9
            ),
        }
    }
}

impl Snapshot {
    /// The default largest age of a live snapshot: three publishing intervals, at least 1 s.
    pub fn default_max_age_ns(&self) -> u64 {
        self.interval_ns.saturating_mul(3).max(1_000_000_000)
    }

    /// Judge the snapshot: `alive` says whether its engine's process exists
    /// ([`PageReader::engine_alive`]); `now_ns` is the reader's CLOCK_MONOTONIC, compared
    /// with `updated_ns` only when the engine runs on that clock (not on virtual time).
    pub fn liveness(&self, alive: bool, now_ns: u64, max_age_ns: u64) -> Liveness {
        if self.state == Some(PageState::Stopped) {
            return Liveness::Stopped;
        }
        if !alive {
            return Liveness::Gone;
        }
        if self.state != Some(PageState::Running) {
            return Liveness::Starting;
        }
        let age_ns = now_ns.saturating_sub(self.updated_ns);
        if self.clock == Clock::Monotonic as u64 && age_ns > max_age_ns {
            return Liveness::Stale { age_ns };
        }
        Liveness::Up
    }

    pub fn uptime_ns(&self) -> u64 {
        self.updated_ns.saturating_sub(self.started_ns)
    }
}

/// No whole snapshot could be copied: the engine was always in the middle of writing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A read-only view of one page file.
pub struct PageReader {
    path: PathBuf,
    file: File,
    map: Mmap,
    layout: Layout,
    /// The copy a snapshot is decoded from (the page's size, allocated lazily by the system).
    copy: Vec<u64>,
    name: Vec<u8>,
}

impl PageReader {
    /// Open and check the page at `path`: a missing file, a file that is not a page, a page
    /// of another layout major or a page whose sizes do not add up is an error naming it.
    pub fn open(path: &Path) -> Result<PageReader, MetricsError> {
        let err = |what: &'static str| {
            move |source: io::Error| MetricsError::Page {
                path: path.to_owned(),
                what,
                source,
            }
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => MetricsError::Missing {
                    path: path.to_owned(),
                },
                _ => err("open")(e),
            })?;
        let meta = file.metadata().map_err(err("read the size of"))?;
        let bad = |why: String| MetricsError::NotAPage {
            path: path.to_owned(),
            why,
        };
        if !meta.is_file() {
            return Err(bad("it is not a regular file".into()));
        }
        let mut head = [0u8; layout::HEADER_BYTES as usize];
        if meta.len() < layout::HEADER_BYTES || file.read_exact_at(&mut head, 0).is_err() {
            return Err(bad(format!(
                "it is {} bytes, shorter than a page header",
                meta.len()
            )));
        }
        let words: Vec<u64> = head
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        let layout = check_header(path, &words, meta.len())?;
        // SAFETY: a read-only shared mapping of a regular file we checked to be this long;
        // it is only ever read through atomics (see `words`).
        let map = unsafe {
            MmapOptions::new()
                .len(layout.page_bytes as usize)
                .map(&file)
        }
        .map_err(err("map"))?;
        Ok(PageReader {
            path: path.to_owned(),
            file,
            map,
            copy: vec![0u64; layout.page_bytes as usize / 8],
            layout,
            name: Vec::with_capacity(layout::INSTANCE_BYTES),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn words(&self) -> &[AtomicU64] {
        atomic_words(&self.map)
    }

    /// Is `path` still this file? False once the engine removed it or a new engine replaced
    /// it (then open the path again).
    pub fn is_current(&self) -> bool {
        match (std::fs::metadata(&self.path), self.file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// Is the process that wrote this page still running (the same process, not a new one
    /// that got its pid)?
    pub fn engine_alive(&self) -> bool {
        let words = self.words();
        let pid = words[header::PID].load(Ordering::Relaxed);
        let ticks = words[header::START_TICKS].load(Ordering::Relaxed);
        u32::try_from(pid).is_ok_and(|pid| tickloop_ring::sys::process_alive(pid, ticks))
    }

    /// Copy a whole snapshot out and decode it into `out`. [`Busy`] when the engine was
    /// writing on every one of [`SNAPSHOT_TRIES`] tries (or died in the middle of a write).
    pub fn snapshot(&mut self, out: &mut Snapshot) -> Result<(), Busy> {
        for attempt in 0..SNAPSHOT_TRIES {
            if self.try_copy() {
                self.decode(out);
                return Ok(());
            }
            if attempt % 16 == 15 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        Err(Busy)
    }

    /// One seqlock read: `seq` (acquire), the words, a fence (acquire), `seq` again; whole
    /// only if both reads saw the same even value.
    fn try_copy(&mut self) -> bool {
        let words = atomic_words(&self.map);
        let s1 = words[header::SEQ].load(Ordering::Acquire);
        if s1 & 1 == 1 {
            return false;
        }
        let copy = &mut self.copy;
        copy_words(words, copy, 0, header::WORDS);
        for section in Section::ALL {
            let count = copy[section.descriptor() + 3].min(self.layout.capacity(section) as u64);
            let at = self.layout.word(section, 0);
            let stride = (self.layout.sections[section as usize].1 / 8) as usize;
            copy_words(words, copy, at, at + count as usize * stride);
        }
        fence(Ordering::Acquire);
        let s2 = words[header::SEQ].load(Ordering::Relaxed);
        s1 == s2
    }

    fn decode(&mut self, out: &mut Snapshot) {
        let w = &self.copy;
        out.layout_minor = w[header::LAYOUT_MINOR];
        out.page_bytes = w[header::PAGE_BYTES];
        out.pid = w[header::PID];
        out.start_ticks = w[header::START_TICKS];
        out.started_unix_ns = w[header::STARTED_UNIX_NS];
        out.interval_ns = w[header::INTERVAL_NS];
        out.state = PageState::from_word(w[header::STATE]);
        out.clock = w[header::CLOCK];
        out.publishes = w[header::PUBLISHES];
        out.started_ns = w[header::STARTED_NS];
        out.updated_ns = w[header::UPDATED_NS];
        out.timers_not_shown = w[header::TIMERS_NOT_SHOWN];
        out.rings_not_shown = w[header::RINGS_NOT_SHOWN];
        out.adapters_not_shown = w[header::ADAPTERS_NOT_SHOWN];
        out.names_truncated = w[header::NAMES_TRUNCATED];
        let instance = &w[header::INSTANCE..header::INSTANCE + layout::INSTANCE_BYTES / 8];
        layout::unpack_name(instance, w[header::INSTANCE_LEN], &mut self.name);
        out.instance = String::from_utf8_lossy(&self.name).into_owned();
        for (i, section) in Section::ALL.iter().enumerate() {
            out.capacities[i] = self.layout.capacity(*section) as u64;
        }
        out.lp = LoopRecord::from_words(self.record(Section::Loop, 0));
        out.trading = TradingRecord::from_words(self.record(Section::Trading, 0));
        self.decode_lists(out);
    }

    fn decode_lists(&mut self, out: &mut Snapshot) {
        out.timers.clear();
        for row in 0..self.count(Section::Timers) {
            out.timers
                .push(TimerRecord::from_words(self.record(Section::Timers, row)));
        }
        out.rings.clear();
        for row in 0..self.count(Section::Rings) {
            let words = self.record(Section::Rings, row);
            let r = RingRecord::from_words(words);
            let name = self.name_of(Section::Rings, row, RingRecord::WORDS, r.name_len);
            out.rings.push((r, name));
        }
        out.adapters.clear();
        for row in 0..self.count(Section::Adapters) {
            let a = AdapterRecord::from_words(self.record(Section::Adapters, row));
            let name = self.name_of(Section::Adapters, row, AdapterRecord::WORDS, a.name_len);
            out.adapters.push((a, name));
        }
    }

    fn count(&self, section: Section) -> usize {
        (self.copy[section.descriptor() + 3] as usize).min(self.layout.capacity(section))
    }

    /// The words of one record in the copy (its whole stride).
    fn record(&self, section: Section, row: usize) -> &[u64] {
        let at = self.layout.word(section, row);
        let stride = (self.layout.sections[section as usize].1 / 8) as usize;
        &self.copy[at..at + stride]
    }

    /// A row's name: the words after its fields, up to the section's name size.
    fn name_of(&mut self, section: Section, row: usize, fields: usize, len: u64) -> String {
        let name_words = section.record_words() - fields;
        let at = self.layout.word(section, row) + fields;
        layout::unpack_name(&self.copy[at..at + name_words], len, &mut self.name);
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// The mapping as words. The engine writes them with atomics, so a reader loads them as
/// atomics too (plain loads on x86-64 and aarch64) and there is no data race.
fn atomic_words(map: &Mmap) -> &[AtomicU64] {
    // SAFETY: the mapping is page-aligned and its length (the checked `page_bytes`) a multiple
    // of 8; AtomicU64 has the size and alignment of u64; it lives as long as the borrow.
    unsafe { std::slice::from_raw_parts(map.as_ptr() as *const AtomicU64, map.len() / 8) }
}

fn copy_words(from: &[AtomicU64], to: &mut [u64], start: usize, end: usize) {
    for i in start..end.min(from.len()).min(to.len()) {
        to[i] = from[i].load(Ordering::Relaxed);
    }
}

/// Check the header words read from a file of `len` bytes and return its layout.
fn check_header(path: &Path, w: &[u64], len: u64) -> Result<Layout, MetricsError> {
    let bad = |why: String| MetricsError::NotAPage {
        path: path.to_owned(),
        why,
    };
    if w[header::MAGIC] != layout::MAGIC {
        return Err(bad(
            "it does not start with the page magic \"TICKMTRC\"".into()
        ));
    }
    if w[header::LAYOUT_MAJOR] != layout::LAYOUT_MAJOR {
        return Err(MetricsError::OtherLayout {
            path: path.to_owned(),
            major: w[header::LAYOUT_MAJOR],
            minor: w[header::LAYOUT_MINOR],
        });
    }
    let page_bytes = w[header::PAGE_BYTES];
    if w[header::HEADER_BYTES] != layout::HEADER_BYTES
        || page_bytes != len
        || !page_bytes.is_multiple_of(8)
    {
        return Err(bad(format!(
            "its header says {} header bytes and {page_bytes} bytes in all, but the file has {len}",
            w[header::HEADER_BYTES]
        )));
    }
    let mut sections = [(0, 0, 0); 5];
    let mut end_of_last = layout::HEADER_BYTES;
    for section in Section::ALL {
        let d = section.descriptor();
        let (offset, record, capacity) = (w[d], w[d + 1], w[d + 2]);
        let end = record
            .checked_mul(capacity)
            .and_then(|b| b.checked_add(offset));
        let fits = offset >= end_of_last
            && offset.is_multiple_of(8)
            && record.is_multiple_of(8)
            && record >= section.record_words() as u64 * 8
            && capacity <= u32::MAX as u64
            && end.is_some_and(|e| e <= page_bytes);
        if !fits {
            return Err(bad(format!(
                "its {} section (offset {offset}, {record}-byte records, {capacity} of them) does not fit its {page_bytes} bytes",
                section.name()
            )));
        }
        sections[section as usize] = (offset, record, capacity);
        end_of_last = end.unwrap_or(page_bytes);
    }
    Ok(Layout {
        sections,
        page_bytes,
    })
}
