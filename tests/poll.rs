//! Whole-program tests of the live polling feed, `tickloop feed poll`: the loop polls a real
//! adapter process (`tickloop adapter echo --delay-ms 300`, an exchange that answers every
//! request 300 ms late, many at a time) on the tiered schedule, and writes the bars into a real
//! ring under /dev/shm, read back here; overruns are typed telemetry; the journal replays.

use std::collections::BTreeMap;
use tickloop_ring::{info, verify, ReadResult, Reader, ReaderOptions, Start};

mod common;
use common::*;

const BAR_MS: i64 = 1000;

fn names(n: usize) -> String {
    (0..n)
        .map(|i| format!("S{i:03}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn slow_exchange() -> String {
    format!("{TICKLOOP} adapter echo --delay-ms 300")
}

/// Run the feed to its end; its JSON report.
fn poll(ring: &Name, dir: &TempDir, extra: &[&str]) -> serde_json::Value {
    let exchange = slow_exchange();
    let symbols = names(130);
    let journal = dir.file("poll.journal");
    let bar_ms = BAR_MS.to_string();
    let mut args = vec![
        "feed",
        "poll",
        "--ring",
        &ring.0,
        "--create",
        "--adapter",
        &exchange,
        "--symbols",
        &symbols,
        "--bar-ms",
        &bar_ms,
        "--telemetry",
        &dir.0.to_str().unwrap(),
        "--journal",
        &journal,
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = tickloop(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
}

fn telemetry(dir: &TempDir) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.file("poll.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every candle in the ring, by symbol name, checked as it is read.
fn ring_bars(ring: &Name) -> BTreeMap<String, Vec<i64>> {
    let names = info::inspect(&ring.path(), usize::MAX)
        .unwrap()
        .symbol_names;
    let mut reader = Reader::attach(
        &ring.path(),
        ReaderOptions {
            start: Start::At(0),
            register: false,
        },
    )
    .unwrap();
    let mut bars: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    loop {
        match reader.try_read() {
            ReadResult::Candle { pos, candle } => {
                assert!(verify::seal_ok(pos, &candle), "{pos}: {candle:?}");
                // The echo adapter's first bar of an answer: the complete one.
                assert_eq!(candle.close, 100.0, "{candle:?}");
                assert_eq!(candle.ts_ns % (BAR_MS * 1_000_000), 0, "on the bar grid");
                bars.entry(names[candle.symbol as usize].clone())
                    .or_default()
                    .push(candle.ts_ns);
            }
            ReadResult::Empty => return bars,
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn polling_130_symbols_from_a_300_ms_exchange_with_16_in_flight_meets_a_1_5_s_cycle_and_replays() {
    let ring = Name::new();
    let dir = TempDir::new("poll-ok");
    let r = poll(&ring, &dir, &["--duration", "7", "--hold", "S005"]);
    assert_eq!(r["overruns"], 0, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert!(r["cycles"].as_u64().unwrap() >= 4, "{r}");
    // Warm symbols (all but the held one at first) are asked every 4th cycle: one cycle has
    // about 130 / 4 requests, three rounds of 16 in flight at 300 ms each.
    let max = r["cycle_max_ms"].as_f64().unwrap();
    assert!((300.0..1500.0).contains(&max), "{r}");
    assert!(
        r["hot"].as_u64().unwrap() >= 1,
        "the held symbol is hot: {r}"
    );

    let bars = ring_bars(&ring);
    assert_eq!(
        bars.values().map(Vec::len).sum::<usize>() as u64,
        r["published"].as_u64().unwrap(),
        "{r}"
    );
    assert_eq!(
        bars.len(),
        130,
        "every symbol was asked at least once: {bars:?}"
    );
    for (name, ts) in &bars {
        assert!(
            ts.windows(2).all(|w| w[0] < w[1]),
            "{name}: each complete bar once, in order: {ts:?}"
        );
    }
    assert!(
        bars["S005"].len() >= 3,
        "the held symbol every cycle: {bars:?}"
    );

    assert!(
        !telemetry(&dir).iter().any(|e| e["kind"] == "poll_overrun"),
        "no overrun"
    );
    let o = tickloop(&["replay", "--journal", &dir.file("poll.journal"), "--verify"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn too_few_requests_in_flight_overrun_each_late_cycle_as_a_typed_event() {
    let ring = Name::new();
    let dir = TempDir::new("poll-late");
    let r = poll(&ring, &dir, &["--duration", "5", "--concurrency", "2"]);
    let overruns = r["overruns"].as_u64().unwrap();
    // About 33 requests per cycle, 2 at a time at 300 ms: some 5 s per 1.5 s cycle.
    assert!(overruns >= 2, "{r}");
    let events: Vec<_> = telemetry(&dir)
        .into_iter()
        .filter(|e| e["kind"] == "poll_overrun")
        .collect();
    assert_eq!(events.len() as u64, overruns, "{events:?}");
    assert!(events.iter().all(|e| e["pending"].as_u64().unwrap() > 0));
    assert!(
        events
            .windows(2)
            .all(|w| w[0]["cycle"].as_u64() < w[1]["cycle"].as_u64()),
        "{events:?}"
    );
    assert_eq!(r["failed"], 0, "late is not failed: {r}");
}

#[test]
fn bad_arguments_are_refused_before_the_ring_is_touched() {
    let ring = Name::new();
    let exchange = slow_exchange();
    let base = ["feed", "poll", "--ring", &ring.0, "--create"];
    let cases: [(&[&str], &str); 5] = [
        (&["--adapter", &exchange], "no symbols to poll"),
        (
            &["--adapter", &exchange, "--symbols", "A,B,A"],
            "\"A\" is named twice",
        ),
        (
            &["--adapter", &exchange, "--symbols", "A,B", "--hold", "C"],
            "--hold C: not one of the symbols polled",
        ),
        (
            &[
                "--adapter",
                "/nonexistent/exchange-adapter",
                "--symbols",
                "A",
            ],
            "/nonexistent/exchange-adapter",
        ),
        (
            &[
                "--adapter",
                &exchange,
                "--symbols",
                "A",
                "--concurrency",
                "0",
            ],
            "concurrency = 0",
        ),
    ];
    for (extra, expected) in cases {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let err = clear_failure(&tickloop(&args));
        assert!(err.contains(expected), "{extra:?}: {err}");
        assert!(!ring.path().exists(), "{extra:?} created the ring");
    }
}
