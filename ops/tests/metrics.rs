//! The metrics page with real files under /dev/shm: every field and row written by the one
//! writer is what a reader decodes; a page at the loop's maxima; readers never see a torn
//! snapshot while the writer publishes as fast as it can; bad files are refused with their
//! reason; a live engine's page is never replaced, a dead one's is; and the service inside a
//! real loop publishes every periodic timer the loop allows without allocating.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tickloop_app::clock::{MICROS, MILLIS};
use tickloop_app::{App, Context, Discard, Event, EventKind};
use tickloop_ops::metrics::layout::{
    self, header, AdapterRecord, Layout, LoopRecord, PageState, RingRecord, Section, Shape,
    TimerRecord, TradingRecord,
};
use tickloop_ops::metrics::{
    Identity, Liveness, MetricsError, MetricsService, PageReader, PageWriter, Publish, Snapshot,
};
use tickloop_runtime::adapter::MAX_ADAPTERS;
use tickloop_runtime::alloc_count::{allocations, watch, CountingAllocator};
use tickloop_runtime::driver::DriverChoice;
use tickloop_runtime::event_loop::{EventLoop, LoopBuilder, LoopConfig, Mode, StopReason};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// A page path under /dev/shm, removed when the test ends.
struct PagePath(PathBuf);

impl PagePath {
    fn new(tag: &str) -> PagePath {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        PagePath(PathBuf::from(format!(
            "/dev/shm/tickloop-test-{tag}-{}-{n}.metrics",
            std::process::id()
        )))
    }
}

impl Drop for PagePath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn id() -> Identity<'static> {
    Identity {
        instance: "engine@test",
        started_unix_ns: 1_700_000_000_000_000_000,
        interval_ns: 100 * MILLIS,
    }
}

fn ring_name(row: usize) -> String {
    format!("ring-{row}")
}

/// Fill every row of every section with numbers derived from `k` and the row.
fn fill(p: &Publish<'_>, layout: &Layout, k: u64) {
    let mut lp = LoopRecord::from_words(&[k; LoopRecord::WORDS]);
    lp.iterations = k + 1;
    p.set_all(layout.word(Section::Loop, 0), &lp.to_words());
    p.set_all(layout.word(Section::Trading, 0), &[k; TradingRecord::WORDS]);
    for row in 0..layout.capacity(Section::Timers) {
        let t = TimerRecord {
            timer: row as u64,
            ..TimerRecord::from_words(&[k; TimerRecord::WORDS])
        };
        p.set_all(layout.word(Section::Timers, row), &t.to_words());
    }
    for row in 0..layout.capacity(Section::Rings) {
        let name = ring_name(row);
        let r = RingRecord {
            source: row as u64,
            lag: k,
            name_len: name.len() as u64,
            ..RingRecord::default()
        };
        let at = layout.word(Section::Rings, row);
        p.set_all(at, &r.to_words());
        let mut words = [0u64; layout::RING_NAME_BYTES / 8];
        layout::pack_name(name.as_bytes(), &mut words);
        p.set_all(at + RingRecord::WORDS, &words);
    }
    for row in 0..layout.capacity(Section::Adapters) {
        let a = AdapterRecord {
            adapter: row as u64,
            requests: k,
            ..AdapterRecord::default()
        };
        p.set_all(layout.word(Section::Adapters, row), &a.to_words());
    }
    for section in [Section::Timers, Section::Rings, Section::Adapters] {
        p.set(section.descriptor() + 3, layout.capacity(section) as u64);
    }
    p.set(header::STATE, PageState::Running as u64);
    p.set(header::PUBLISHES, k);
    p.set(header::UPDATED_NS, 10 + k);
}

fn read(path: &std::path::Path) -> Snapshot {
    let mut reader = PageReader::open(path).unwrap();
    let mut snapshot = Snapshot::default();
    reader.snapshot(&mut snapshot).unwrap();
    snapshot
}

#[test]
fn every_field_and_row_written_is_what_a_reader_decodes() {
    let path = PagePath::new("roundtrip");
    let shape = Shape {
        timers: 5,
        rings: 3,
        adapters: 2,
    };
    let mut writer = PageWriter::create(&path.0, shape, &id()).unwrap();
    let layout = *writer.layout();
    fill(&writer.begin(), &layout, 7);
    let s = read(&path.0);
    assert_eq!(s.pid, std::process::id() as u64);
    assert_eq!(s.instance, "engine@test");
    assert_eq!(
        (s.interval_ns, s.started_unix_ns),
        (100 * MILLIS, 1_700_000_000_000_000_000)
    );
    assert_eq!(
        (s.state, s.publishes, s.updated_ns),
        (Some(PageState::Running), 7, 17)
    );
    assert_eq!(s.capacities, [1, 1, 5, 3, 2]);
    assert_eq!(s.lp.iterations, 8);
    assert_eq!(s.lp.lag().p999_ns, 7);
    assert_eq!(s.trading.fills, 7);
    assert_eq!(
        s.timers.iter().map(|t| t.timer).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert!(s
        .timers
        .iter()
        .all(|t| t.late_p999_ns == 7 && t.overruns == 7));
    let rings: Vec<_> = s
        .rings
        .iter()
        .map(|(r, n)| (r.source, r.lag, n.as_str()))
        .collect();
    assert_eq!(
        rings,
        [(0, 7, "ring-0"), (1, 7, "ring-1"), (2, 7, "ring-2")]
    );
    assert_eq!(s.adapters.len(), 2);
    // The page is a whole number of 4 KiB pages, as the layout says.
    let len = std::fs::metadata(&path.0).unwrap().len();
    assert_eq!(len, layout.page_bytes);
    assert!(len.is_multiple_of(layout::PAGE_ALIGN));
    drop(writer);
    assert!(
        !path.0.exists(),
        "the writer removes its page when it drops"
    );
}

#[test]
fn a_page_at_the_loops_maxima_holds_every_row() {
    // The layout at the real maxima: 2^24 periodic timers (timer_capacity's limit), 65535
    // rings (a source id is a u16), the adapter host's limit.
    let max = Layout::new(Shape {
        timers: 1 << 24,
        rings: u16::MAX as u32,
        adapters: MAX_ADAPTERS as u32,
    });
    let timer_bytes = TimerRecord::WORDS as u64 * 8;
    assert_eq!(
        max.sections[Section::Timers as usize],
        (896, timer_bytes, 1 << 24)
    );
    assert!(
        max.page_bytes > (1 << 24) * timer_bytes,
        "{}",
        max.page_bytes
    );
    let mut end = layout::HEADER_BYTES;
    for (offset, record, capacity) in max.sections {
        assert!(offset >= end && offset.is_multiple_of(layout::SECTION_ALIGN));
        end = offset + record * capacity;
    }
    assert!(end <= max.page_bytes);
    // A real page with every ring and adapter at its maximum and 65536 timers (the 2.3 GB of
    // 2^24 timers would only be written the same way, further down the file).
    let path = PagePath::new("maxima");
    let shape = Shape {
        timers: 1 << 16,
        rings: u16::MAX as u32,
        adapters: MAX_ADAPTERS as u32,
    };
    let mut writer = PageWriter::create(&path.0, shape, &id()).unwrap();
    let layout = *writer.layout();
    assert_eq!(layout.sections[..2], max.sections[..2]);
    assert_eq!(layout.sections[2].0, max.sections[2].0);
    fill(&writer.begin(), &layout, 3);
    let s = read(&path.0);
    assert_eq!(s.timers.len(), 1 << 16);
    assert_eq!(s.rings.len(), u16::MAX as usize);
    assert_eq!(s.adapters.len(), MAX_ADAPTERS);
    let last = &s.rings[u16::MAX as usize - 1];
    assert_eq!((last.0.source, last.1.as_str()), (65534, "ring-65534"));
    assert_eq!(s.timers.last().unwrap().timer, (1 << 16) - 1);
    assert_eq!(
        s.rings_not_shown + s.timers_not_shown + s.adapters_not_shown,
        0
    );
}

#[test]
fn a_reader_never_sees_a_torn_snapshot() {
    let path = PagePath::new("torn");
    let shape = Shape {
        timers: 64,
        rings: 64,
        adapters: 16,
    };
    let mut writer = PageWriter::create(&path.0, shape, &id()).unwrap();
    let layout = *writer.layout();
    fill(&writer.begin(), &layout, 1);
    let done = Arc::new(AtomicBool::new(false));
    let publisher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut k = 1;
            while !done.load(Ordering::Relaxed) {
                k += 1;
                fill(&writer.begin(), &layout, k);
                // An engine publishes every housekeeping tick (100 ms by default); a few µs
                // apart, a reader's copy still overlaps the next write often.
                std::thread::sleep(std::time::Duration::from_micros(20));
            }
            k
        })
    };
    let mut reader = PageReader::open(&path.0).unwrap();
    let mut s = Snapshot::default();
    let (mut seen, mut busy) = (std::collections::BTreeSet::new(), 0);
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_millis(500) {
        if reader.snapshot(&mut s).is_err() {
            busy += 1;
            continue;
        }
        let k = s.publishes;
        assert_eq!(s.lp.iterations, k + 1, "loop record of another snapshot");
        assert!(
            s.timers.iter().all(|t| t.late_count == k),
            "timer of another snapshot"
        );
        assert!(
            s.rings.iter().all(|r| r.0.lag == k),
            "ring of another snapshot"
        );
        assert!(
            s.adapters.iter().all(|a| a.0.requests == k),
            "adapter of another snapshot"
        );
        assert_eq!(s.trading.fills, k);
        seen.insert(k);
    }
    done.store(true, Ordering::Relaxed);
    let published = publisher.join().unwrap();
    eprintln!(
        "{published} snapshots published, {} distinct ones read whole, {busy} reads busy",
        seen.len()
    );
    assert!(seen.len() > 10, "{} snapshots read", seen.len());
}

#[test]
fn files_that_are_not_pages_of_this_layout_are_refused_with_the_reason() {
    let path = PagePath::new("bad");
    let err = |bytes: &[u8]| {
        std::fs::write(&path.0, bytes).unwrap();
        PageReader::open(&path.0)
            .err()
            .expect("refused")
            .to_string()
    };
    assert!(matches!(
        PageReader::open(&path.0),
        Err(MetricsError::Missing { .. })
    ));
    assert!(err(b"short").contains("shorter than a page header"));
    assert!(err(&[7u8; 4096]).contains("does not start with the page magic"));
    // A real page, then changed: another major, a wrong size, a section out of bounds.
    std::fs::remove_file(&path.0).unwrap();
    let writer = PageWriter::create(
        &path.0,
        Shape {
            timers: 2,
            rings: 1,
            adapters: 1,
        },
        &id(),
    );
    let page = std::fs::read(&path.0).unwrap();
    drop(writer);
    let with = |word: usize, value: u64| {
        let mut p = page.clone();
        p[word * 8..word * 8 + 8].copy_from_slice(&value.to_le_bytes());
        p
    };
    let other = err(&with(header::LAYOUT_MAJOR, 2));
    assert!(
        other.contains(&format!(
            "layout 2.{}",
            tickloop_ops::metrics::layout::LAYOUT_MINOR
        )) && other.contains("reads layout 1.x"),
        "{other}"
    );
    assert!(err(&with(header::PAGE_BYTES, 4096 * 9)).contains("but the file has"));
    let d = Section::Rings.descriptor();
    assert!(err(&with(d + 2, 1 << 30)).contains("rings section"));
    assert!(err(&page[..page.len() - 8]).contains("but the file has"));
    assert!(PageReader::open(&path.0).is_err());
    std::fs::write(&path.0, &page).unwrap();
    assert!(
        PageReader::open(&path.0).is_ok(),
        "the unchanged page opens"
    );
}

#[test]
fn a_live_page_is_never_replaced_a_dead_one_is_and_other_files_never_are() {
    let path = PagePath::new("replace");
    let shape = Shape {
        timers: 1,
        rings: 1,
        adapters: 1,
    };
    let first = PageWriter::create(&path.0, shape, &id()).unwrap();
    let refused = PageWriter::create(&path.0, shape, &id())
        .err()
        .unwrap()
        .to_string();
    let pid = std::process::id();
    assert!(
        refused.contains(&format!("in use by the running engine pid {pid}")),
        "{refused}"
    );
    // A crashed engine's page: the same bytes, nobody holding the lock.
    let bytes = std::fs::read(&path.0).unwrap();
    drop(first);
    std::fs::write(&path.0, &bytes).unwrap();
    let second =
        PageWriter::create(&path.0, shape, &id()).expect("a dead engine's page is replaced");
    drop(second);
    // Anything else is left alone.
    std::fs::write(&path.0, b"a user's file").unwrap();
    let refused = PageWriter::create(&path.0, shape, &id())
        .err()
        .unwrap()
        .to_string();
    assert!(refused.contains("not a metrics page is there"), "{refused}");
    assert_eq!(std::fs::read(&path.0).unwrap(), b"a user's file");
    let no_dir = PageWriter::create(std::path::Path::new("/nonexistent-dir/p"), shape, &id());
    assert!(no_dir.err().unwrap().to_string().contains("does not exist"));
    // No temporary files are left behind.
    let leftovers = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains("tickloop-test-replace")
                && e.file_name().to_string_lossy().contains(".tmp-")
        })
        .count();
    assert_eq!(leftovers, 0);
}

/// Sets `count` periodic timers at start (ids 0..count, periods 1..=count ms), watches this
/// thread's allocations from `watch_from` to `watch_until` (loop time since start).
struct ManyTimers {
    count: u32,
    started: u64,
    watching: bool,
    allocations: u64,
}

impl App for ManyTimers {
    type Output = u64;
    fn name(&self) -> &'static str {
        "many-timers"
    }
    fn on_event(&mut self, event: &Event, cx: &mut Context<'_, u64>) {
        if matches!(event.kind, EventKind::Started { .. }) {
            self.started = event.at;
            for t in 0..self.count {
                cx.every(t, (t as u64 + 1) * MILLIS, 500 * MICROS);
            }
            return;
        }
        let since = event.at - self.started;
        // The first second warms up; the next seven hold 70 housekeeping ticks.
        if !self.watching && since > 1_000 * MILLIS && since < 1_100 * MILLIS {
            self.watching = true;
            self.allocations = allocations();
            watch(true);
        } else if self.watching && since > 8_000 * MILLIS {
            watch(false);
            self.watching = false;
            self.allocations = allocations() - self.allocations;
            cx.stop();
        }
    }
}

#[test]
fn the_service_publishes_every_periodic_timer_a_loop_allows_without_allocating() {
    let path = PagePath::new("service");
    let count = 256;
    let config = LoopConfig {
        driver: DriverChoice::Simulated,
        mode: Mode::Busy,
        periodic_capacity: count,
        actions_per_event: count,
        ..LoopConfig::default()
    };
    let app = ManyTimers {
        count,
        started: 0,
        watching: false,
        allocations: u64::MAX,
    };
    let builder = LoopBuilder {
        config: &config,
        rings: vec![],
        journal: None,
        app_config: vec![],
        program: "tickloop",
    };
    let mut lp = EventLoop::new(builder, app, Discard).unwrap();
    let shape = Shape {
        timers: count,
        rings: 0,
        adapters: MAX_ADAPTERS as u32,
    };
    let service = MetricsService::create(&path.0, shape, &id()).unwrap();
    lp.add_service(Box::new(service)).unwrap();
    let mut reader = PageReader::open(&path.0).unwrap();
    assert_eq!(lp.run().unwrap(), StopReason::App);
    assert_eq!(
        lp.app().allocations,
        0,
        "allocations while the page was published"
    );
    let mut s = Snapshot::default();
    reader.snapshot(&mut s).unwrap();
    assert_eq!(s.state, Some(PageState::Stopped));
    assert!(s.publishes >= 70, "{} publishes", s.publishes);
    assert_eq!(s.timers.len(), count as usize, "every periodic timer");
    for p in lp.periodic() {
        let t = s
            .timers
            .iter()
            .find(|t| Some(t.timer as u32) == p.timer)
            .unwrap();
        assert_eq!((t.period_ns, t.late_count), (p.period, p.lateness.len()));
        assert_eq!(
            (t.run_count, t.overruns, t.skipped),
            (p.took.len(), p.overruns, p.skipped)
        );
    }
    assert_eq!(s.lp.iterations, lp.stats().iterations);
    assert_eq!(s.lp.timers_fired, lp.stats().timers_fired);
    assert_eq!(s.timers_not_shown + s.names_truncated, 0);
    // On virtual time the page's age says nothing: it is judged by its state alone.
    assert_eq!(s.clock, layout::Clock::Virtual as u64);
    assert_eq!(s.liveness(true, u64::MAX, 1), Liveness::Stopped);
    drop(lp);
    assert!(!path.0.exists());
}

/// The figures `docs/metrics-format.md` gives for a page's size.
#[test]
fn page_sizes() {
    let default = LoopConfig::default();
    let shape = Shape {
        timers: default.periodic_capacity,
        rings: 1,
        adapters: MAX_ADAPTERS as u32,
    };
    assert_eq!(
        Layout::new(shape).page_bytes,
        8192,
        "a default engine reading one ring"
    );
    let max = Shape {
        timers: 1 << 24,
        rings: u16::MAX as u32,
        adapters: MAX_ADAPTERS as u32,
    };
    assert_eq!(
        Layout::new(max).page_bytes,
        2_290_094_080,
        "at the loop's maxima"
    );
}

/// A part of `docs/metrics-format.md`: from `heading` to the next `## ` heading.
fn format_doc_part(heading: &str) -> String {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/metrics-format.md"
    ))
    .unwrap();
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"));
    let rest = &doc[start + heading.len()..];
    rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
}

/// Assert the document's table row for the u64 `name` at byte `offset`.
fn format_doc_row(text: &str, offset: usize, name: &str) {
    let want = format!("| {offset} | u64 | `{name}` |");
    assert!(text.contains(&want), "the document lacks {want}");
}

/// `docs/metrics-format.md` lists every header word at the offset the code uses.
#[test]
fn the_format_document_names_every_header_word_at_its_offset() {
    let header_words = [
        ("magic", header::MAGIC),
        ("layout_major", header::LAYOUT_MAJOR),
        ("layout_minor", header::LAYOUT_MINOR),
        ("header_bytes", header::HEADER_BYTES),
        ("page_bytes", header::PAGE_BYTES),
        ("pid", header::PID),
        ("start_ticks", header::START_TICKS),
        ("started_unix_ns", header::STARTED_UNIX_NS),
        ("interval_ns", header::INTERVAL_NS),
        ("seq", header::SEQ),
        ("state", header::STATE),
        ("clock", header::CLOCK),
        ("publishes", header::PUBLISHES),
        ("started_ns", header::STARTED_NS),
        ("updated_ns", header::UPDATED_NS),
        ("timers_not_shown", header::TIMERS_NOT_SHOWN),
        ("rings_not_shown", header::RINGS_NOT_SHOWN),
        ("adapters_not_shown", header::ADAPTERS_NOT_SHOWN),
        ("names_truncated", header::NAMES_TRUNCATED),
        ("instance_len", header::INSTANCE_LEN),
    ];
    let head = format_doc_part("## Header");
    for (name, word) in header_words {
        format_doc_row(&head, word * 8, name);
    }
    assert!(head.contains(&format!(
        "| {} | 5 × 32 | section descriptors",
        header::SECTIONS * 8
    )));
    assert!(head.contains(&format!("| {} | 120 | `instance`", header::INSTANCE * 8)));
    assert_eq!(header::WORDS as u64 * 8, layout::HEADER_BYTES);
}

/// `docs/metrics-format.md` lists every record field at the offset the code uses, and no
/// field the code does not have.
#[test]
fn the_format_document_names_every_record_field_at_its_offset() {
    let sections: [(&str, &[&str]); 5] = [
        ("## Section 0: loop", LoopRecord::FIELDS),
        ("## Section 1: trading", TradingRecord::FIELDS),
        ("## Section 2: timers", TimerRecord::FIELDS),
        ("## Section 3: rings", RingRecord::FIELDS),
        ("## Section 4: adapters", AdapterRecord::FIELDS),
    ];
    for (heading, fields) in sections {
        let text = format_doc_part(heading);
        for (i, name) in fields.iter().enumerate() {
            format_doc_row(&text, i * 8, name);
        }
        let rows = text.lines().filter(|l| l.contains("| u64 |")).count();
        assert_eq!(
            rows,
            fields.len(),
            "{heading}: fields the code does not have"
        );
    }
    let rings = format_doc_part("## Section 3: rings");
    assert!(rings.contains(&format!("| {} | 64 bytes | `name`", RingRecord::WORDS * 8)));
    let adapters = format_doc_part("## Section 4: adapters");
    assert!(adapters.contains(&format!(
        "| {} | 32 bytes | `name`",
        AdapterRecord::WORDS * 8
    )));
}
