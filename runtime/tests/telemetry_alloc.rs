//! Zero heap allocations in the telemetry sink after `open`: a counting global allocator
//! watches this thread while it emits every variant, flushes (with rotations), overfills the
//! buffer (drops at emit), and loses its directory (degraded flushes) and gets it back.
//! Its own binary, so the global allocator counts nothing but this.

use std::fs;
use std::path::PathBuf;
use tickloop_app::telemetry::{AdapterStateKind, StopCause, Telemetry, Text};
use tickloop_app::venue::Side;
use tickloop_runtime::alloc_count::{allocations, watch, CountingAllocator};
use tickloop_runtime::telemetry::{TelemetryConfig, TelemetrySink};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn events(i: u64) -> [Telemetry; 12] {
    [
        Telemetry::Started {
            pid: 1,
            version: "0.1.0",
            driver: "epoll",
            mode: "busy",
        },
        Telemetry::Stopping {
            reason: StopCause::Signal(10),
        },
        Telemetry::ConfigRejected {
            generation_kept: i,
            line: 3,
            reason: Text::from_fmt(format_args!("bad value {i} for \"batch\"\n")),
        },
        Telemetry::CandlesLost { source: 1, lost: i },
        Telemetry::TimerOverrun {
            timer: 2,
            late_ns: i,
            took_ns: 5,
            budget_ns: 6,
            skipped: 0,
        },
        Telemetry::OrderSubmitted {
            order: i,
            symbol: 4,
            side: Side::Sell,
            qty: 1.5,
            price: Some(i as f64 / 3.0),
        },
        Telemetry::OrderSubmitted {
            order: i,
            symbol: 4,
            side: Side::Buy,
            qty: f64::NAN,
            price: None,
        },
        Telemetry::OrderRejected {
            order: i,
            reason: Text::new("rejected: «price band»"),
        },
        Telemetry::Fill {
            order: i,
            qty: 0.5,
            price: 1e300,
        },
        Telemetry::AdapterState {
            adapter: 1,
            state: AdapterStateKind::Restarting,
        },
        Telemetry::AdapterError {
            adapter: 1,
            reason: Text::new("closed"),
        },
        Telemetry::Dropped { count: i },
    ]
}

#[test]
fn emit_and_flush_never_allocate() {
    let parent =
        std::env::temp_dir().join(format!("tickloop-telemetry-alloc-{}", std::process::id()));
    let dir: PathBuf = parent.join("t");
    fs::create_dir_all(&dir).unwrap();
    let mut sink = TelemetrySink::open(&TelemetryConfig {
        dir: Some(dir.clone()),
        file_prefix: "telemetry".into(),
        rotate_bytes: 64 << 10,
        keep_files: 2,
        buffer_bytes: 16 << 10,
    })
    .unwrap();
    sink.prefault();

    // The counter sees what this thread allocates while watched (so this test can fail).
    watch(true);
    let probe = std::hint::black_box(vec![1u8; 10]);
    watch(false);
    assert_eq!(allocations(), 1);
    drop(probe);
    let before = allocations();

    // Emit and flush, rotating several times; then overfill the buffer.
    watch(true);
    let mut n = 0u64;
    for _ in 0..200 {
        for event in &events(n) {
            sink.emit(n, n as i64, event);
            n += 1;
        }
        if n.is_multiple_of(96) {
            sink.flush();
        }
    }
    for _ in 0..200 {
        for event in &events(n) {
            sink.emit(n, n as i64, event);
            n += 1;
        }
    }
    sink.flush();
    watch(false);
    let clean = allocations() - before;
    let before = allocations();
    let stats = sink.stats();
    assert!(stats.rotations >= 3, "{stats:?}");
    assert!(stats.dropped > 0, "{stats:?}");

    // The directory goes away: degraded flushes; it comes back: recovery.
    fs::remove_dir_all(&dir).unwrap();
    watch(true);
    for _ in 0..3 {
        for event in &events(n) {
            sink.emit(n, n as i64, event);
            n += 1;
        }
        sink.flush();
    }
    let degraded = sink.is_degraded();
    watch(false);
    fs::create_dir(&dir).unwrap();
    watch(true);
    sink.emit(n, n as i64, &events(n)[4]);
    sink.flush();
    let recovered = !sink.is_degraded();
    watch(false);

    let stats = sink.stats();
    println!("{stats:?}");
    let _ = fs::remove_dir_all(&parent);
    assert!(degraded && recovered, "{stats:?}");
    assert_eq!(
        clean, 0,
        "allocations while emitting, flushing and rotating"
    );
    assert_eq!(
        allocations() - before,
        0,
        "allocations while degraded or recovering"
    );
}
