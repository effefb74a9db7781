//! The engine with its adapters on the simulated driver: real adapter processes on real pipes,
//! answering at whatever real time they do, and virtual time that does not care. Through the
//! library (an app keeping requests going from a 10 ms timer, with pings) and through the
//! command line (`tickloop run` with `[loop] driver = "simulated"` and `[adapters]`, a strategy
//! trading through the echo adapter), two runs journal the same bytes, and every answer comes
//! at the virtual time of its request.

use std::path::{Path, PathBuf};
use tickloop_app::clock::{Nanos, MICROS, MILLIS, SECONDS};
use tickloop_app::{App, Context, Event, EventKind, TimerId};
use tickloop_runtime::adapter::{
    AdapterConfig, AdapterEvent, AdapterHost, AdapterHostConfig, AdapterRequest, Request,
    SharedHost, Side,
};
use tickloop_runtime::driver::DriverChoice;
use tickloop_runtime::event_loop::{EventLoop, LoopBuilder, LoopConfig};
use tickloop_runtime::journal::{JournalReader, Record};

mod common;
use common::*;

const TICK: TimerId = 1;
/// Ticks that send a request; the app stops at the one after.
const TICKS: u32 = 40;

/// Sends a history request on every tick of a 10 ms timer, an order for each bar above 101
/// that comes back, and records every event.
struct Trader {
    events: Vec<Event>,
    ticks: u32,
}

fn request(id: u64, request: Request) -> AdapterRequest {
    AdapterRequest {
        adapter: 0,
        id,
        request,
    }
}

impl App for Trader {
    type Output = AdapterRequest;
    fn name(&self) -> &'static str {
        "sim-trader"
    }
    fn on_event(&mut self, event: &Event, cx: &mut Context<'_, AdapterRequest>) {
        self.events.push(*event);
        match event.kind {
            EventKind::Started { .. } => cx.every(TICK, 10 * MILLIS, 10 * MILLIS),
            EventKind::Adapter(AdapterEvent::Ready { .. }) => {
                cx.emit(request(1, Request::GetAccounts));
            }
            EventKind::Timer { timer: TICK, .. } => {
                self.ticks += 1;
                if self.ticks > TICKS {
                    return cx.stop();
                }
                let from = self.ticks as i64 * 1000;
                cx.emit(request(
                    100 + self.ticks as u64,
                    Request::GetHistoricalBars {
                        symbol: 0,
                        from_ns: from,
                        to_ns: from + 500,
                        bar_ns: 100,
                    },
                ));
            }
            EventKind::Adapter(AdapterEvent::Bar {
                request: r, candle, ..
            }) if candle.open > 101.0 => cx.emit(request(
                1000 * r + candle.ts_ns as u64 % 1000,
                Request::order(0, Side::Buy, 1.0, Some(candle.open)),
            )),
            _ => {}
        }
    }
}

/// One run of the trader against `tickloop adapter echo` on the simulated driver, journaled to
/// `journal`; its events.
fn simulated_run(journal: &Path) -> Vec<Event> {
    let host = SharedHost::new(
        AdapterHost::new(&AdapterHostConfig {
            symbols: vec!["AAA".into()],
            adapters: vec![AdapterConfig {
                name: "echo".into(),
                command: ["adapter", "echo", "--bars", "5"].iter().fold(
                    vec![TICKLOOP.to_string()],
                    |mut c, a| {
                        c.push(a.to_string());
                        c
                    },
                ),
                // Pings every 50 ms of virtual time: several while it runs, none missed.
                ping_interval_ms: 50,
                request_timeout_ms: 100,
                ..AdapterConfig::default()
            }],
            ..AdapterHostConfig::default()
        })
        .unwrap(),
    );
    let config = LoopConfig {
        driver: DriverChoice::Simulated,
        housekeeping_ns: 10 * MILLIS,
        ..LoopConfig::default()
    };
    let app = Trader {
        events: Vec::new(),
        ticks: 0,
    };
    let mut lp = EventLoop::new(
        LoopBuilder {
            config: &config,
            rings: vec![],
            journal: Some(journal.to_path_buf()),
            app_config: vec![],
            program: "tickloop",
        },
        app,
        host.handle(),
    )
    .unwrap();
    host.install(&mut lp).unwrap();
    lp.stop_after(60 * SECONDS);
    lp.run().unwrap();
    assert!(lp.journal_failure().is_none());
    let stats = host.handle().stats(0).unwrap();
    assert_eq!(stats.starts, 1, "{stats:?}");
    assert_eq!((stats.failed, stats.timeouts), (0, 0), "{stats:?}");
    lp.app().events.clone()
}

/// Tick `n` (at `at`) had its request answered (bars, done, and the orders they led to, done
/// too) before any other input, at the tick's own virtual time.
fn assert_answered_at_once(events: &[Event], n: usize, at: Nanos) {
    let id = 101 + n as u64;
    let start = events.iter().position(|e| e.at == at).unwrap();
    let after = &events[start + 1..];
    let end = after
        .iter()
        .position(|e| !matches!(e.kind, EventKind::Adapter(_)))
        .unwrap_or(after.len());
    let answers = &after[..end];
    assert!(
        answers.iter().all(|e| e.at == at),
        "tick {n}: an answer at another virtual time: {answers:?}"
    );
    let done = |r: u64| {
        answers.iter().any(|e| {
            matches!(e.kind, EventKind::Adapter(AdapterEvent::Done { request, .. }) if request == r)
        })
    };
    assert!(
        done(id),
        "tick {n}: request {id} not answered at once: {answers:?}"
    );
    // Echo's 5 bars open at 100..104: three above 101, three orders, all done.
    let orders: Vec<u64> = answers
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Adapter(AdapterEvent::Fill { order, .. }) => Some(order),
            _ => None,
        })
        .collect();
    assert_eq!(orders.len(), 3, "tick {n}: {answers:?}");
    assert!(orders.iter().all(|&o| done(o)), "tick {n}: {answers:?}");
}

#[test]
fn through_the_library_two_runs_journal_the_same_bytes_and_answers_take_no_virtual_time() {
    let dir = TempDir::new("simulated-library");
    let paths: Vec<PathBuf> = (0..2).map(|n| dir.0.join(format!("run{n}.tlj"))).collect();
    let runs: Vec<Vec<Event>> = paths.iter().map(|p| simulated_run(p)).collect();
    let bytes: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(bytes[0].len() > 1000, "{} bytes journaled", bytes[0].len());
    assert!(bytes[0] == bytes[1], "the two journals differ");

    let events = &runs[0];
    let at_of = |pick: &dyn Fn(&EventKind) -> bool| -> Vec<Nanos> {
        events
            .iter()
            .filter(|e| pick(&e.kind))
            .map(|e| e.at)
            .collect()
    };
    let ticks = at_of(&|k| matches!(k, EventKind::Timer { timer: TICK, .. }));
    assert_eq!(ticks.len(), TICKS as usize + 1);
    // Virtual time: the ticks keep their 10 ms grid, and each fires within a few clock reads
    // (steps of 1 µs) of its deadline: an adapter's answer never makes a timer late.
    let deadlines: Vec<(Nanos, Nanos)> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Timer {
                timer: TICK,
                deadline,
            } => Some((e.at, deadline)),
            _ => None,
        })
        .collect();
    for w in deadlines.windows(2) {
        assert_eq!(w[1].1 - w[0].1, 10 * MILLIS, "{deadlines:?}");
    }
    for &(at, deadline) in &deadlines {
        assert!(at - deadline < 100 * MICROS, "{deadlines:?}");
    }
    for (n, &at) in ticks.iter().take(TICKS as usize).enumerate() {
        assert_answered_at_once(events, n, at);
    }
    let downs = at_of(&|k| matches!(k, EventKind::Adapter(AdapterEvent::Down { .. })));
    assert!(downs.is_empty(), "the adapter went down: {downs:?}");

    // The journal holds what the app saw, in order, at the same times.
    let mut journal = JournalReader::open(&paths[0]).unwrap();
    let mut inputs = Vec::new();
    while let Some(record) = journal.next_record::<AdapterRequest>().unwrap() {
        if let Record::Input(e) = record {
            inputs.push(e);
        }
    }
    assert_eq!(&inputs, events);
}

/// `tickloop run --config` on the simulated driver, trading through the echo adapter over a
/// ring filled once before; every file it writes is under `dir`, named by `n`.
fn simulated_engine(dir: &TempDir, ring: &Name, n: usize) -> std::process::Child {
    let config = dir.file(&format!("engine{n}.toml"));
    let telemetry = dir.file(&format!("telemetry{n}"));
    std::fs::create_dir_all(&telemetry).unwrap();
    std::fs::write(
        &config,
        format!(
            "[engine]\naccount = \"simulated-{n}\"\nlock_dir = \"{locks}\"\n\n\
             [[rings]]\nname = \"{ring}\"\nstart = \"oldest\"\n\n\
             [loop]\ndriver = \"simulated\"\nsim_epoch_unix_ns = 1600000000000000000\n\n\
             [journal]\npath = \"{journal}\"\n[telemetry]\ndir = \"{telemetry}\"\n\
             [status]\npath = \"{status}\"\n\
             [strategy]\nname = \"sma_cross\"\n[strategy.params]\nn1 = 5\nn2 = 12\n\
             [orders]\ncash = 10000\nadapter = 0\n\
             [risk]\nmax_order_notional = 1000000\n\
             [adapters]\nsymbols = [\"SYN0000\"]\n\n\
             [[adapters.adapter]]\nname = \"echo\"\ncommand = [{TICKLOOP:?}, \"adapter\", \"echo\"]\n\
             ping_interval_ms = 100\n",
            locks = dir.file("locks"),
            ring = ring.0,
            journal = dir.file(&format!("run{n}.tlj")),
            status = dir.file(&format!("status{n}.json")),
        ),
    )
    .unwrap();
    spawn(&["run", "--config", &config, "--duration", "5", "--json"])
}

/// Telemetry is stamped by the virtual clocks: the same lines in every run (but the
/// engine's pid), each wall time the configured epoch plus the loop's time.
fn assert_same_telemetry(dir: &TempDir, runs: usize) {
    let lines = |n: usize| -> Vec<serde_json::Value> {
        telemetry_events(&dir.file(&format!("telemetry{n}")))
            .into_iter()
            .map(|mut e| {
                e.as_object_mut().unwrap().remove("pid");
                e
            })
            .collect()
    };
    let telemetry = lines(0);
    assert!(telemetry.len() > 100, "{} telemetry lines", telemetry.len());
    for e in &telemetry {
        let (at, unix) = (e["at_ns"].as_i64().unwrap(), e["unix_ns"].as_i64().unwrap());
        assert_eq!(unix - at, 1_600_000_000_000_000_000, "{e}");
    }
    for n in 1..runs {
        assert!(lines(n) == telemetry, "telemetry {n} differs");
    }
}

#[test]
fn through_the_command_line_runs_at_once_journal_the_same_bytes_and_replay() {
    let ring = Name::new();
    let fed = synthetic_feed(&ring, 3000, 0, 1)
        .args(["--seed", "7"])
        .output()
        .unwrap();
    assert!(
        fed.status.success(),
        "{}",
        String::from_utf8_lossy(&fed.stderr)
    );
    let dir = TempDir::new("simulated-cli");
    // Three engines at once on this machine's cores: their adapters answer at different
    // real times.
    let engines: Vec<_> = (0..3).map(|n| simulated_engine(&dir, &ring, n)).collect();
    for (n, engine) in engines.into_iter().enumerate() {
        let out = engine.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "engine {n}: {err}");
        assert!(
            !err.contains("no longer deterministic"),
            "engine {n}: {err}"
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["driver"], "simulated");
        assert_eq!(report["stopped_by"], "Deadline");
        assert_eq!(report["stats"]["candles"], 3000, "{report}");
        let trading = &report["outputs"];
        assert!(
            trading["orders"].as_u64().unwrap() > 50 && trading["fills"].as_u64().unwrap() > 50,
            "engine {n} traded too little to tell: {trading}"
        );
    }
    let journal = |n: usize| std::fs::read(dir.file(&format!("run{n}.tlj"))).unwrap();
    let first = journal(0);
    for n in 1..3 {
        assert!(journal(n) == first, "journal {n} differs from journal 0");
    }

    assert_same_telemetry(&dir, 3);
    let header = JournalReader::open(Path::new(&dir.file("run0.tlj")))
        .unwrap()
        .header()
        .clone();
    assert_eq!(header.driver, "simulated");
    // The epoch plus the virtual start (1 s), before any clock read.
    assert_eq!(
        header.started_unix_ns,
        1_600_000_000_000_000_000 + SECONDS as i64
    );

    let replayed = tickloop(&["replay", "--journal", &dir.file("run0.tlj"), "--verify"]);
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
}
