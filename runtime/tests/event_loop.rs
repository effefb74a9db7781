//! The loop with real drivers, real signals, real pipes and real rings: timers and their
//! budgets, refusals, bounded batches, fd sources, signals, and journal replay.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use tickloop_app::clock::{Nanos, MILLIS, SECONDS};
use tickloop_app::SignalKind;
use tickloop_app::{App, Context, Event, EventKind, OutputSink, TimerRefusal};
use tickloop_ring::{Candle, Start, Writer};
use tickloop_runtime::driver::{AnyDriver, DriverChoice, DriverOptions, Interest, Readiness};
use tickloop_runtime::event_loop::{
    EventLoop, FdSource, LoopBuilder, LoopConfig, LoopError, Mode, RingSpec, StopReason,
};
use tickloop_runtime::journal::{JournalHeader, JournalReader, JournalWriter, Record};
use tickloop_runtime::replay::replay;

#[path = "../../ring/tests/common/mod.rs"]
mod common;
use common::TestRing;

type Script = Box<dyn FnMut(&Event, &mut Context<'_, u64>)>;

/// An app that records every event and reacts through a script.
struct Recorder {
    events: Vec<Event>,
    script: Script,
}

impl Recorder {
    fn new(script: impl FnMut(&Event, &mut Context<'_, u64>) + 'static) -> Recorder {
        Recorder {
            events: Vec::with_capacity(1 << 16),
            script: Box::new(script),
        }
    }
}

impl App for Recorder {
    type Output = u64;
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn on_event(&mut self, event: &Event, cx: &mut Context<'_, u64>) {
        self.events.push(*event);
        (self.script)(event, cx);
    }
}

#[derive(Default)]
struct Outputs(Vec<(Nanos, u64)>);
impl OutputSink<u64> for Outputs {
    fn output(&mut self, at: Nanos, output: &u64) {
        self.0.push((at, *output));
    }
}

fn config(driver: DriverChoice) -> LoopConfig {
    LoopConfig {
        driver,
        ..LoopConfig::default()
    }
}

fn parked(driver: DriverChoice) -> LoopConfig {
    LoopConfig {
        mode: Mode::Park,
        ..config(driver)
    }
}

fn build(
    config: &LoopConfig,
    rings: Vec<RingSpec>,
    journal: Option<PathBuf>,
    app: Recorder,
) -> EventLoop<Recorder, Outputs> {
    EventLoop::new(
        LoopBuilder {
            config,
            rings,
            journal,
            app_config: Vec::new(),
            program: "tickloop",
        },
        app,
        Outputs::default(),
    )
    .unwrap()
}

/// Every driver this machine can run. io_uring is missing under qemu-user (the aarch64 CI
/// step) and where seccomp or `kernel.io_uring_disabled` forbid it: said loudly, then skipped.
fn drivers() -> Vec<DriverChoice> {
    let mut all = vec![DriverChoice::Epoll, DriverChoice::Simulated];
    match AnyDriver::open(DriverChoice::IoUring, DriverOptions::default()) {
        Ok(_) => all.push(DriverChoice::IoUring),
        Err(e) => eprintln!("SKIPPING the io_uring driver in this test: {e}"),
    }
    all
}

#[test]
fn a_periodic_timer_fires_once_per_period_on_virtual_time() {
    let app = Recorder::new(|e, cx| {
        if matches!(e.kind, EventKind::Started { .. }) {
            cx.every(3, MILLIS, MILLIS / 2);
        }
    });
    let mut lp = build(&config(DriverChoice::Simulated), vec![], None, app);
    lp.stop_after(10 * SECONDS);
    let started = std::time::Instant::now();
    assert_eq!(lp.run().unwrap(), StopReason::Deadline);
    assert!(
        started.elapsed().as_secs_f64() < 5.0,
        "ten virtual seconds must not take real seconds"
    );
    let firings: Vec<_> = lp
        .app()
        .events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Timer { timer: 3, deadline } => Some((e.at, deadline)),
            _ => None,
        })
        .collect();
    assert!(
        (9_999..=10_000).contains(&firings.len()),
        "{} firings",
        firings.len()
    );
    for (i, (at, deadline)) in firings.iter().enumerate() {
        assert!(at >= deadline, "fired early");
        assert!(
            at - deadline < 100_000,
            "virtual lateness {} ns",
            at - deadline
        );
        if i > 0 {
            assert_eq!(
                *deadline - firings[i - 1].1,
                MILLIS,
                "deadlines stay on the grid"
            );
        }
    }
    let p = lp.periodic().next().expect("one periodic timer");
    assert_eq!(p.lateness.len(), firings.len() as u64);
    assert_eq!(p.overruns, 0);
}

#[test]
fn a_periodic_timer_over_its_budget_is_an_overrun_event() {
    // A handler that takes 300 µs against a budget of 100 µs: every firing is an overrun that
    // says how long it took.
    let app = Recorder::new(|e, cx| match e.kind {
        EventKind::Started { .. } => cx.every(1, MILLIS, 100_000),
        EventKind::Timer { timer: 1, .. } => {
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_micros(300) {}
        }
        _ => {}
    });
    let mut lp = build(&config(DriverChoice::Epoll), vec![], None, app);
    lp.stop_after(50 * MILLIS);
    lp.run().unwrap();
    let events = &lp.app().events;
    let fired = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Timer { timer: 1, .. }))
        .count();
    let slow = events
        .iter()
        .filter(|e| {
            matches!(e.kind, EventKind::TimerOverrun { timer: 1, took_ns, budget_ns: 100_000, .. }
                if took_ns >= 300_000)
        })
        .count();
    assert!(
        fired >= 20 && slow == fired,
        "{fired} firings, {slow} slow overruns"
    );
    let p = lp.periodic().next().unwrap();
    assert!(p.took.value_at_quantile(0.5) >= 300_000);
}

#[test]
fn timer_requests_the_loop_cannot_honour_are_refused_with_a_reason() {
    let cfg = LoopConfig {
        timer_capacity: 4,
        periodic_capacity: 1,
        ..config(DriverChoice::Simulated)
    };
    let app = Recorder::new(|e, cx| match e.kind {
        EventKind::Started { .. } => {
            cx.set_timer(4, e.at + MILLIS); // id beyond capacity
            cx.every(0, MILLIS, MILLIS);
            cx.every(1, MILLIS, MILLIS); // only one periodic slot
            cx.every(2, 10, MILLIS); // period below 1 µs
            cx.set_timer(3, e.at + 5 * MILLIS);
            cx.cancel_timer(3);
        }
        EventKind::Timer { timer: 0, .. } => cx.stop(),
        _ => {}
    });
    let mut lp = build(&cfg, vec![], None, app);
    assert_eq!(lp.run().unwrap(), StopReason::App);
    assert!(lp.run().unwrap_err().to_string().contains("already run"));
    let refusals: Vec<_> = lp
        .app()
        .events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::TimerRefused { timer, reason } => Some((timer, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        refusals,
        vec![
            (4, TimerRefusal::BadId),
            (1, TimerRefusal::TooManyPeriodic),
            (2, TimerRefusal::BadPeriod)
        ]
    );
    let kinds: Vec<_> = lp.app().events.iter().map(|e| e.kind).collect();
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(k, EventKind::Timer { timer: 3, .. })),
        "cancelled"
    );
    assert_eq!(kinds.last(), Some(&EventKind::Shutdown));
}

#[test]
fn actions_beyond_the_limit_are_dropped_and_reported() {
    let cfg = LoopConfig {
        actions_per_event: 2,
        ..config(DriverChoice::Simulated)
    };
    let app = Recorder::new(|e, cx| {
        if matches!(e.kind, EventKind::Started { .. }) {
            for i in 0..5 {
                cx.emit(i);
            }
            cx.stop(); // dropped too: the limit is 2
        }
        if let EventKind::ActionsDropped { .. } = e.kind {
            cx.stop();
        }
    });
    let mut lp = build(&cfg, vec![], None, app);
    lp.run().unwrap();
    assert_eq!(
        lp.sink().0.iter().map(|o| o.1).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert!(lp
        .app()
        .events
        .iter()
        .any(|e| e.kind == EventKind::ActionsDropped { dropped: 4 }));
    assert_eq!(lp.stats().actions_dropped, 4);
}

fn candle(i: u64) -> Candle {
    Candle {
        ts_ns: i as i64,
        symbol: (i % 3) as u32,
        close: 100.0 + i as f64,
        ..Candle::default()
    }
}

#[test]
fn a_backlog_is_read_in_bounded_batches_in_order() {
    let ring = TestRing::new(1 << 14);
    let mut writer = Writer::open(&ring.0).unwrap();
    for i in 0..10_000 {
        writer.publish(&candle(i));
    }
    for driver in drivers() {
        let cfg = LoopConfig {
            batch: 100,
            ..config(driver)
        };
        let app = Recorder::new(|e, cx| {
            if let EventKind::Candle { pos: 9_999, .. } = e.kind {
                cx.stop();
            }
        });
        let rings = vec![RingSpec {
            path: ring.0.clone(),
            start: Start::Oldest,
        }];
        let mut lp = build(&cfg, rings, None, app);
        lp.run().unwrap();
        let candles: Vec<_> = lp
            .app()
            .events
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::Candle { pos, candle, .. } => Some((e.at, pos, candle)),
                _ => None,
            })
            .collect();
        assert_eq!(candles.len(), 10_000, "{driver:?}");
        for (i, (_, pos, c)) in candles.iter().enumerate() {
            assert_eq!((*pos, *c), (i as u64, candle(i as u64)));
        }
        // One clock reading per iteration: no more than a batch shares one.
        let mut per_iteration = std::collections::BTreeMap::new();
        for (at, _, _) in &candles {
            *per_iteration.entry(*at).or_insert(0) += 1;
        }
        assert!(per_iteration.values().all(|&n| n <= 100), "{driver:?}");
        assert!(lp.stats().backlog_iterations >= 99, "{:?}", lp.stats());
    }
}

/// A pipe of 8-byte messages, each a `Notify` event carrying the message as its value.
struct PipeSource {
    read: OwnedFd,
}

impl FdSource for PipeSource {
    fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
    fn interest(&self) -> Interest {
        Interest::Read
    }
    fn on_ready(
        &mut self,
        _now: tickloop_app::clock::Nanos,
        _ready: Readiness,
        emit: &mut dyn FnMut(EventKind) -> bool,
    ) -> bool {
        loop {
            let mut message = [0u8; 8];
            // SAFETY: reads into a local buffer.
            let n = unsafe { libc::read(self.read.as_raw_fd(), message.as_mut_ptr().cast(), 8) };
            if n != 8 {
                return false;
            }
            let value = u64::from_le_bytes(message);
            if !emit(EventKind::Notify { source: 0, value }) {
                return true;
            }
        }
    }
}

fn send(fd: RawFd, value: u64) {
    // SAFETY: writes 8 bytes from a local to a pipe we own.
    let n = unsafe { libc::write(fd, value.to_le_bytes().as_ptr().cast(), 8) };
    assert_eq!(n, 8);
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: creates two fds we own.
    assert_eq!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) },
        0
    );
    use std::os::fd::FromRawFd;
    // SAFETY: fresh fds.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

#[test]
fn fd_sources_and_signals_reach_the_app_on_every_driver() {
    for driver in drivers() {
        let (read, write) = pipe();
        let writer_fd = write.as_raw_fd();
        let app = Recorder::new(move |e, cx| match e.kind {
            EventKind::Started { .. } => cx.set_timer(0, e.at + MILLIS),
            // The test plays the outside world from inside the app: a message into the pipe,
            // then SIGHUP and SIGTERM to this thread.
            EventKind::Timer { .. } => send(writer_fd, 5),
            EventKind::Notify { value, .. } => {
                cx.emit(value);
                unsafe {
                    libc::raise(libc::SIGHUP);
                    libc::raise(libc::SIGTERM);
                }
            }
            _ => {}
        });
        let mut lp = build(&config(driver), vec![], None, app);
        lp.add_fd_source(Box::new(PipeSource { read })).unwrap();
        let reason = lp.run().unwrap();
        assert_eq!(reason, StopReason::Signal(libc::SIGTERM), "{driver:?}");
        let kinds: Vec<_> = lp.app().events.iter().map(|e| e.kind).collect();
        let notify = kinds
            .iter()
            .position(|k| matches!(k, EventKind::Notify { value: 5, .. }));
        let hup = kinds
            .iter()
            .position(|k| *k == EventKind::Signal(SignalKind::Reload));
        let term = kinds.iter().position(|k| {
            *k == EventKind::Signal(SignalKind::Stop {
                signal: libc::SIGTERM,
            })
        });
        assert!(
            notify.is_some() && hup.is_some() && term.is_some(),
            "{driver:?}: {kinds:?}"
        );
        assert!(notify < hup && hup < term, "{driver:?}: in order");
        assert_eq!(kinds.last(), Some(&EventKind::Shutdown));
        assert_eq!(lp.sink().0.first().map(|o| o.1), Some(5));
        drop(write);
    }
}

#[test]
fn a_journal_replays_identically_and_a_changed_action_is_named() {
    let dir = std::env::temp_dir().join(format!("tickloop-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.journal");
    let _ = std::fs::remove_file(&path);
    let script = |e: &Event, cx: &mut Context<'_, u64>| match e.kind {
        EventKind::Started { .. } => cx.every(0, MILLIS, MILLIS),
        EventKind::Timer { deadline, .. } => {
            cx.emit(deadline % 1000);
            if deadline > 2 * SECONDS {
                cx.stop();
            }
        }
        _ => {}
    };
    let mut lp = build(
        &config(DriverChoice::Simulated),
        vec![],
        Some(path.clone()),
        Recorder::new(script),
    );
    lp.run().unwrap();
    let recorded: Vec<u64> = lp.sink().0.iter().map(|o| o.1).collect();
    assert!(recorded.len() > 900);

    for driver in drivers() {
        let mut journal = JournalReader::open(&path).unwrap();
        let (mut d, _) = AnyDriver::open(driver, DriverOptions::default()).unwrap();
        let mut out = Vec::new();
        let report = replay(
            &mut journal,
            &mut Recorder::new(script),
            &mut d,
            64,
            Some(&mut out),
            &mut |_| {},
        )
        .unwrap();
        assert!(
            report.divergence.is_none() && report.clean_end,
            "{driver:?}: {report:?}"
        );
        assert_eq!(report.inputs, lp.app().events.len() as u64);
        let lines = String::from_utf8(out).unwrap();
        assert_eq!(
            lines
                .lines()
                .filter(|l| l.starts_with("{\"Output\""))
                .count(),
            recorded.len()
        );
    }

    // A journal whose recorded action differs from what the app does: named precisely.
    let bad = dir.join("bad.journal");
    let _ = std::fs::remove_file(&bad);
    let header = JournalHeader {
        build: "test".into(),
        config_fingerprint: 0,
        program: "tickloop".into(),
        app: "recorder".into(),
        app_config: vec![],
        actions_per_event: 64,
        driver: "simulated".into(),
        started_unix_ns: 0,
    };
    let mut w = JournalWriter::create(&bad, &header, 1 << 16).unwrap();
    let started = Event {
        at: SECONDS,
        kind: EventKind::Started { wall_ns: 0 },
    };
    w.record::<u64>(&Record::Input(started));
    w.record::<u64>(&Record::Output(tickloop_app::Action::SetPeriodic {
        timer: 0,
        first: SECONDS + MILLIS,
        period: MILLIS,
        budget: MILLIS,
    }));
    w.record::<u64>(&Record::Input(Event {
        at: SECONDS + MILLIS,
        kind: EventKind::Timer {
            timer: 0,
            deadline: SECONDS + MILLIS,
        },
    }));
    w.record::<u64>(&Record::Output(tickloop_app::Action::Output(999)));
    w.finish().unwrap();
    let mut journal = JournalReader::open(&bad).unwrap();
    let (mut d, _) = AnyDriver::open(DriverChoice::Simulated, DriverOptions::default()).unwrap();
    let report = replay(
        &mut journal,
        &mut Recorder::new(script),
        &mut d,
        64,
        None,
        &mut |_| {},
    )
    .unwrap();
    let div = report.divergence.expect("a divergence");
    assert_eq!((div.input, div.action), (1, 0));
    assert!(
        div.recorded.contains("999") && div.replayed.contains("Output(0)"),
        "{div:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_limits_and_journal_paths_are_refused_before_the_loop_starts() {
    let refused = |config: &LoopConfig, journal: Option<&str>| -> LoopError {
        let builder = LoopBuilder {
            config,
            rings: vec![],
            journal: journal.map(PathBuf::from),
            app_config: vec![],
            program: "tickloop",
        };
        match EventLoop::new(builder, Recorder::new(|_, _| {}), Outputs::default()) {
            Ok(_) => panic!("{config:?} / {journal:?} was accepted"),
            Err(e) => e,
        }
    };
    let cfg = LoopConfig {
        timer_capacity: 0,
        ..LoopConfig::default()
    };
    let err = refused(&cfg, None);
    assert!(
        matches!(
            err,
            LoopError::Config {
                field: "timer_capacity",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("timer_capacity = 0"), "{err}");

    let cfg = LoopConfig::default();
    for (path, want) in [
        ("/nonexistent-tickloop-dir/run.journal", "does not exist"),
        ("/proc/tickloop.journal", "cannot create it"),
    ] {
        let err = refused(&cfg, Some(path)).to_string();
        assert!(err.contains(want) && err.contains(path), "{err}");
    }
    let mut cfg = LoopConfig::default();
    cfg.host.core = Some(4096);
    let err = refused(&cfg, None).to_string();
    assert!(err.contains("core 4096 does not exist"), "{err}");
}

/// CPU time this thread has used.
fn thread_cpu() -> std::time::Duration {
    // SAFETY: plain struct filled by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let t = |v: libc::timeval| {
        std::time::Duration::from_secs(v.tv_sec as u64)
            + std::time::Duration::from_micros(v.tv_usec as u64)
    };
    t(usage.ru_utime) + t(usage.ru_stime)
}

#[test]
fn precise_sleeps_a_200us_timer_is_neither_rounded_to_1ms_nor_spun_for() {
    for driver in drivers() {
        if driver == DriverChoice::Simulated {
            continue;
        }
        let app = Recorder::new(|e, cx| {
            if matches!(e.kind, EventKind::Started { .. }) {
                cx.every(0, 200_000, MILLIS);
            }
        });
        let mut lp = build(&parked(driver), vec![], None, app);
        lp.stop_after(SECONDS / 2);
        let (cpu0, wall0) = (thread_cpu(), std::time::Instant::now());
        lp.run().unwrap();
        let (cpu, wall) = (thread_cpu() - cpu0, wall0.elapsed());
        let p = lp.periodic().next().unwrap();
        let (fired, p50) = (p.lateness.len(), p.lateness.value_at_quantile(0.5));
        // Rounded up to 1 ms, half a second would give ~500 firings and 800 µs of lateness.
        assert!(
            fired >= 2_000,
            "{driver:?}: {fired} firings, {} skipped",
            p.skipped
        );
        assert!(p50 < 150_000, "{driver:?}: median lateness {p50} ns");
        // Spinning would burn the whole half second.
        assert!(cpu < wall / 2, "{driver:?}: {cpu:?} of CPU in {wall:?}");
    }
}

#[test]
fn a_timer_rearmed_in_the_past_cannot_lock_the_loop() {
    // An app that retries "now" from every firing: each pass fires it once, then the loop
    // moves on (rings, signals, the run's deadline), so it still stops.
    for driver in drivers() {
        let app = Recorder::new(|e, cx| match e.kind {
            EventKind::Started { .. } => cx.set_timer(0, e.at),
            EventKind::Timer { .. } => cx.set_timer(0, e.at),
            _ => {}
        });
        let mut lp = build(&config(driver), vec![], None, app);
        lp.stop_after(20 * MILLIS);
        assert_eq!(lp.run().unwrap(), StopReason::Deadline, "{driver:?}");
        let stats = lp.stats();
        assert!(
            stats.timers_fired <= stats.iterations,
            "{driver:?}: {stats:?}"
        );
    }
}

#[test]
fn a_periodic_timer_replaced_in_its_own_handler_leaves_the_new_one_clean() {
    let app = Recorder::new(|e, cx| match e.kind {
        EventKind::Started { .. } => cx.every(0, MILLIS, 0),
        EventKind::Timer { timer: 0, .. } => {
            cx.cancel_timer(0);
            cx.every(1, MILLIS, MILLIS);
        }
        EventKind::Timer { timer: 1, .. } => cx.stop(),
        _ => {}
    });
    let mut lp = build(&config(DriverChoice::Simulated), vec![], None, app);
    lp.run().unwrap();
    let kinds: Vec<_> = lp.app().events.iter().map(|e| e.kind).collect();
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(k, EventKind::TimerOverrun { .. })),
        "timer 0 was cancelled before its accounting, timer 1 kept its budget: {kinds:?}"
    );
    let p = lp.periodic().next().expect("timer 1");
    assert_eq!((p.timer, p.lateness.len(), p.overruns), (Some(1), 1, 0));
}

#[test]
fn a_flooded_fd_source_is_served_in_batches_and_loses_nothing() {
    for driver in drivers() {
        let (read, write) = pipe();
        for i in 0..5_000 {
            send(write.as_raw_fd(), i);
        }
        let app = Recorder::new(|e, cx| {
            if let EventKind::Notify { value: 4_999, .. } = e.kind {
                cx.stop();
            }
        });
        let cfg = LoopConfig {
            batch: 100,
            ..config(driver)
        };
        let mut lp = build(&cfg, vec![], None, app);
        lp.add_fd_source(Box::new(PipeSource { read })).unwrap();
        lp.stop_after(5 * SECONDS);
        assert_eq!(lp.run().unwrap(), StopReason::App, "{driver:?}");
        let values: Vec<u64> = lp
            .app()
            .events
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::Notify { value, .. } => Some(value),
                _ => None,
            })
            .collect();
        assert_eq!(values, (0..5_000).collect::<Vec<_>>(), "{driver:?}");
        // At most one batch per stamp (one clock reading per iteration).
        let mut per_at = std::collections::BTreeMap::new();
        for e in &lp.app().events {
            if matches!(e.kind, EventKind::Notify { .. }) {
                *per_at.entry(e.at).or_insert(0) += 1;
            }
        }
        assert!(per_at.values().all(|&n| n <= 100), "{driver:?}");
        assert_eq!(lp.stats().follow_ups_dropped, 0);
    }
}

#[test]
fn a_burst_of_wakeups_never_makes_the_loop_deaf_to_signals() {
    // Thousands of separate wake-ups of one fd before the loop looks: on io_uring each is a
    // completion, more than the completion queue holds. The loop must still hear SIGTERM.
    for driver in drivers() {
        for mode in [Mode::Busy, Mode::Park] {
            let (read, write) = pipe();
            let writer_fd = write.as_raw_fd();
            let app = Recorder::new(move |e, _| {
                if matches!(e.kind, EventKind::Started { .. }) {
                    for i in 0..6_000 {
                        send(writer_fd, i);
                    }
                    // SAFETY: signals our own thread.
                    unsafe { libc::raise(libc::SIGTERM) };
                }
            });
            let cfg = LoopConfig {
                mode,
                ..config(driver)
            };
            let mut lp = build(&cfg, vec![], None, app);
            lp.add_fd_source(Box::new(PipeSource { read })).unwrap();
            lp.stop_after(3 * SECONDS);
            let reason = lp.run().unwrap();
            assert_eq!(
                reason,
                StopReason::Signal(libc::SIGTERM),
                "{driver:?} {mode:?}"
            );
        }
    }
}

#[test]
fn what_wakes_a_parked_loop_is_stamped_with_the_time_it_woke() {
    for driver in drivers() {
        if driver == DriverChoice::Simulated {
            continue;
        }
        let (read, write) = pipe();
        let writer_fd = write.as_raw_fd();
        // Another thread plays a peer process: after 30 ms it sends its clock reading.
        let peer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            send(writer_fd, tickloop_ring::sys::monotonic_ns() as u64);
        });
        let app = Recorder::new(|e, cx| {
            if let EventKind::Notify { .. } = e.kind {
                cx.stop();
            }
        });
        let mut lp = build(&parked(driver), vec![], None, app);
        lp.add_fd_source(Box::new(PipeSource { read })).unwrap();
        lp.stop_after(5 * SECONDS);
        lp.run().unwrap();
        peer.join().unwrap();
        let (at, sent) = lp
            .app()
            .events
            .iter()
            .find_map(|e| match e.kind {
                EventKind::Notify { value, .. } => Some((e.at, value)),
                _ => None,
            })
            .expect("the message arrived");
        assert!(
            at >= sent,
            "{driver:?}: stamped {} ns before it was sent",
            sent - at
        );
        drop(write);
    }
}
