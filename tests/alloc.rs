//! Zero heap allocations in steady state: a counting global allocator watches the loop's
//! thread while a real feed process floods a real ring with 1M candles, the SMA app does its
//! work, a 100 µs periodic timer fires thousands of times, and every input is journaled.

use tickloop_app::clock::{MICROS, SECONDS};
use tickloop_app::{App, Context, Event, EventKind};
use tickloop_ring::Start;
use tickloop_runtime::alloc_count::{allocations, watch, CountingAllocator};
use tickloop_runtime::driver::DriverChoice;
use tickloop_runtime::event_loop::{EventLoop, LoopBuilder, LoopConfig, Mode, RingSpec};
use tickloop_strategy::sma::{SmaConfig, SmaOutput, SmaSignals};

mod common;
use common::*;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const CANDLES: u64 = 1_000_000;
const WARM_UP: u64 = 10_000;

/// The SMA app, watched: counting starts after the warm-up and ends at shutdown.
struct Watched {
    inner: SmaSignals,
    seen: u64,
    timers: u64,
}

impl App for Watched {
    type Output = SmaOutput;
    fn name(&self) -> &'static str {
        "sma"
    }
    fn on_event(&mut self, event: &Event, cx: &mut Context<'_, SmaOutput>) {
        match event.kind {
            EventKind::Candle { pos, .. } => {
                self.seen += 1;
                if self.seen == WARM_UP {
                    watch(true);
                }
                if pos == CANDLES - 1 {
                    cx.stop();
                }
            }
            EventKind::CandlesLost { lost, .. } => self.seen += lost,
            EventKind::Timer { .. } => self.timers += 1,
            EventKind::Shutdown => watch(false),
            _ => {}
        }
        self.inner.on_event(event, cx);
    }
}

fn steady_state_allocations(driver: DriverChoice, mode: Mode) {
    let ring = Name::new();
    create_ring(&ring, 1 << 20);
    let journal = std::env::temp_dir().join(format!(
        "tickloop-alloc-{}-{}.journal",
        std::process::id(),
        ring.0
    ));
    let _ = std::fs::remove_file(&journal);
    let config = LoopConfig {
        driver,
        mode,
        ..LoopConfig::default()
    };
    let sma = SmaConfig {
        tick_ns: 100 * MICROS,
        symbols: 64,
        ..SmaConfig::default()
    };
    let app = Watched {
        inner: SmaSignals::new(sma).unwrap(),
        seen: 0,
        timers: 0,
    };
    let mut lp = EventLoop::new(
        LoopBuilder {
            config: &config,
            rings: vec![RingSpec {
                path: ring.path(),
                start: Start::Next,
            }],
            journal: Some(journal.clone()),
            app_config: vec![],
            program: "tickloop",
        },
        app,
        tickloop_app::Discard,
    )
    .unwrap();
    lp.stop_after(20 * SECONDS);
    let mut feed = synthetic_feed(&ring, CANDLES, 1_000_000, 64)
        .spawn()
        .unwrap();
    let before = allocations();
    lp.run().unwrap();
    let allocations = allocations() - before;
    assert!(feed.wait().unwrap().success());
    let app = lp.app();
    let stats = lp.stats();
    let _ = std::fs::remove_file(&journal);
    assert!(
        app.seen >= CANDLES - 1,
        "{driver:?}: saw {} of {CANDLES}",
        app.seen
    );
    assert!(
        app.timers >= 2_000,
        "{driver:?}: only {} timer firings",
        app.timers
    );
    assert!(app.inner.crosses > 1_000, "the app did real work");
    assert!(stats.journal_records > CANDLES, "{stats:?}");
    assert_eq!(
        allocations, 0,
        "{driver:?}/{mode:?}: {allocations} allocations after warm-up"
    );
}

#[test]
fn no_allocation_in_steady_state_on_io_uring_parked() {
    use tickloop_runtime::driver::{AnyDriver, DriverOptions};
    if let Err(e) = AnyDriver::open(DriverChoice::IoUring, DriverOptions::default()) {
        eprintln!("SKIPPING io_uring here: {e}");
        return;
    }
    steady_state_allocations(DriverChoice::IoUring, Mode::Park);
}

#[test]
fn no_allocation_in_steady_state_on_epoll_parked() {
    steady_state_allocations(DriverChoice::Epoll, Mode::Park);
}

#[test]
fn no_allocation_in_steady_state_on_epoll_busy() {
    steady_state_allocations(DriverChoice::Epoll, Mode::Busy);
}

#[test]
fn the_counter_sees_allocations_on_the_watched_thread() {
    watch(true);
    let before = allocations();
    let v: Vec<u64> = Vec::with_capacity(std::hint::black_box(16));
    watch(false);
    assert!(allocations() > before, "{}", v.capacity());
}
