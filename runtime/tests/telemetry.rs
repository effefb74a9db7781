//! The telemetry sink against real files: every variant round-trips through JSONL, a million
//! events go through a 256 KiB buffer without a drop, files rotate by size, a full disk (a
//! small tmpfs) and a removed directory degrade it and count the loss without a partial line
//! or an error reaching the caller, and it recovers by itself.

use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tickloop_app::telemetry::{AdapterStateKind, StopCause, Telemetry, Text};
use tickloop_app::venue::Side;
use tickloop_runtime::telemetry::{TelemetryConfig, TelemetryError, TelemetrySink, TelemetryStats};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A directory removed (with what is in it) when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(under: &Path) -> TempDir {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = under.join(format!("tickloop-telemetry-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A small tmpfs mounted for one test (root only), unmounted and removed on drop.
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    /// None (after saying why) when this process cannot mount one.
    fn mount(test: &str, size: &str) -> Option<SmallTmpfs> {
        // SAFETY: no arguments.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP {test}: mounting a small tmpfs needs root");
            return None;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "tickloop-telemetry-tmpfs-{}-{n}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tickloop-test",
            ])
            .arg(&dir)
            .status();
        if !matches!(mounted, Ok(s) if s.success()) {
            let _ = fs::remove_dir(&dir);
            eprintln!("SKIP {test}: mount -t tmpfs failed here ({mounted:?})");
            return None;
        }
        Some(SmallTmpfs(dir))
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = fs::remove_dir(&self.0);
    }
}

fn config(dir: &Path, buffer_bytes: u32, rotate_bytes: u64, keep_files: u32) -> TelemetryConfig {
    TelemetryConfig {
        dir: Some(dir.to_path_buf()),
        file_prefix: "telemetry".into(),
        rotate_bytes,
        keep_files,
        buffer_bytes,
    }
}

/// Every line of a file, parsed; the file must end with a newline (no partial line).
fn read_lines(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends inside a line",
        path.display()
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("{}: a line does not parse ({e}): {l:?}", path.display())
            })
        })
        .collect()
}

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap()
}

/// Events written, `dropped` counts written: the file's own accounting.
fn tally(lines: &[Value]) -> (u64, u64) {
    let mut events = 0;
    let mut dropped = 0;
    for l in lines {
        if kind(l) == "dropped" {
            dropped += l["count"].as_u64().unwrap();
        } else {
            events += 1;
        }
    }
    (events, dropped)
}

fn assert_accounting(stats: &TelemetryStats) {
    assert_eq!(
        stats.emitted,
        stats.written + stats.dropped + stats.buffered,
        "{stats:?}"
    );
}

fn overrun(n: u64) -> Telemetry {
    Telemetry::TimerOverrun {
        timer: 7,
        late_ns: n,
        took_ns: 1_000,
        budget_ns: 50_000,
        skipped: 0,
    }
}

/// [`expected_fields`] of the order events.
fn order_fields(event: &Telemetry) -> Value {
    match *event {
        Telemetry::OrderSubmitted {
            order,
            symbol,
            side,
            qty,
            price,
        } => json!({"kind": "order_submitted", "order": order, "symbol": symbol,
            "side": match side { Side::Buy => "buy", Side::Sell => "sell" }, "qty": qty, "price": price}),
        Telemetry::OrderAccepted { order } => json!({"kind": "order_accepted", "order": order}),
        Telemetry::OrderRejected { order, reason } => {
            json!({"kind": "order_rejected", "order": order, "reason": reason.as_str()})
        }
        Telemetry::OrderCancelled { order } => json!({"kind": "order_cancelled", "order": order}),
        Telemetry::OrderTriggered { order } => json!({"kind": "order_triggered", "order": order}),
        Telemetry::OrderReplaced {
            order,
            qty,
            limit,
            stop,
        } => {
            json!({"kind": "order_replaced", "order": order, "qty": qty, "limit": limit, "stop": stop})
        }
        Telemetry::OrderRefused { order, reason } => {
            json!({"kind": "order_refused", "order": order, "reason": reason.as_str()})
        }
        _ => unreachable!("not an order event: {event:?}"),
    }
}

/// The fields each variant must have in JSON. Exhaustive on purpose: a new variant does not
/// compile until it is tested here.
fn expected_fields(event: &Telemetry) -> Value {
    match *event {
        Telemetry::Started {
            pid,
            version,
            driver,
            mode,
        } => {
            json!({"kind": "started", "pid": pid, "version": version, "driver": driver, "mode": mode})
        }
        Telemetry::Stopping { reason } => json!({"kind": "stopping", "reason": match reason {
            StopCause::Signal(15) => "SIGTERM".to_string(),
            StopCause::Signal(2) => "SIGINT".to_string(),
            StopCause::Signal(n) => format!("signal {n}"),
            StopCause::App => "app".into(),
            StopCause::Deadline => "deadline".into(),
        }}),
        Telemetry::Stopped { events, candles } => {
            json!({"kind": "stopped", "events": events, "candles": candles})
        }
        Telemetry::ConfigApplied {
            generation,
            restart_needed,
        } => {
            json!({"kind": "config_applied", "generation": generation, "restart_needed": restart_needed})
        }
        Telemetry::ConfigRejected {
            generation_kept,
            line,
            reason,
        } => {
            json!({"kind": "config_rejected", "generation_kept": generation_kept, "line": line, "reason": reason.as_str()})
        }
        Telemetry::CandlesLost { source, lost } => {
            json!({"kind": "candles_lost", "source": source, "lost": lost})
        }
        Telemetry::NewWriter { source, epoch } => {
            json!({"kind": "new_writer", "source": source, "epoch": epoch})
        }
        Telemetry::RingRemoved { source } => json!({"kind": "ring_removed", "source": source}),
        Telemetry::TimerOverrun {
            timer,
            late_ns,
            took_ns,
            budget_ns,
            skipped,
        } => {
            json!({"kind": "timer_overrun", "timer": timer, "late_ns": late_ns, "took_ns": took_ns, "budget_ns": budget_ns, "skipped": skipped})
        }
        Telemetry::PollOverrun { cycle, pending } => {
            json!({"kind": "poll_overrun", "cycle": cycle, "pending": pending})
        }
        Telemetry::OrderSubmitted { .. }
        | Telemetry::OrderAccepted { .. }
        | Telemetry::OrderRejected { .. }
        | Telemetry::OrderCancelled { .. }
        | Telemetry::OrderTriggered { .. }
        | Telemetry::OrderReplaced { .. }
        | Telemetry::OrderRefused { .. } => order_fields(event),
        Telemetry::Fill { order, qty, price } => {
            json!({"kind": "fill", "order": order, "qty": qty, "price": price})
        }
        Telemetry::FillFault {
            adapter,
            order,
            fault,
            qty,
            price,
            remaining,
        } => json!({"kind": "fill_fault", "adapter": adapter, "order": order,
            "fault": fault.as_str(), "qty": qty, "price": price, "remaining": remaining}),
        Telemetry::RiskDenied { symbol, reason } => {
            json!({"kind": "risk_denied", "symbol": symbol, "reason": reason.as_str()})
        }
        Telemetry::OrderUnknown { .. }
        | Telemetry::Reconciled { .. }
        | Telemetry::ReconcileDifference { .. } => expected_reconcile_fields(event),
        Telemetry::AdapterState { .. }
        | Telemetry::AdapterDown { .. }
        | Telemetry::AdapterError { .. } => expected_adapter_fields(event),
        Telemetry::Dropped { count } => json!({"kind": "dropped", "count": count}),
    }
}

/// The order events of [`every_variant`].
fn every_order_variant() -> Vec<Telemetry> {
    vec![
        Telemetry::OrderSubmitted {
            order: 1,
            symbol: 42,
            side: Side::Buy,
            qty: 0.25,
            price: Some(64_123.5),
        },
        Telemetry::OrderSubmitted {
            order: 2,
            symbol: 42,
            side: Side::Sell,
            qty: 1.0,
            price: None,
        },
        Telemetry::OrderAccepted { order: 1 },
        Telemetry::OrderRejected {
            order: 2,
            reason: Text::new("insufficient margin"),
        },
        Telemetry::OrderCancelled { order: 1 },
        Telemetry::OrderTriggered { order: 3 },
        Telemetry::OrderReplaced {
            order: 3,
            qty: 2.0,
            limit: Some(64_000.5),
            stop: None,
        },
        Telemetry::OrderRefused {
            order: 2,
            reason: Text::new("not_working"),
        },
    ]
}

/// The fields of the adapter events.
fn expected_adapter_fields(event: &Telemetry) -> Value {
    match *event {
        Telemetry::AdapterState { adapter, state } => {
            json!({"kind": "adapter_state", "adapter": adapter,
            "state": match state {
                AdapterStateKind::Starting => "starting",
                AdapterStateKind::Ready => "ready",
                AdapterStateKind::Faulty => "faulty",
                AdapterStateKind::Restarting => "restarting",
                AdapterStateKind::Stopped => "stopped",
            }})
        }
        Telemetry::AdapterDown {
            adapter,
            cause,
            status,
            restart_in_ms,
        } => {
            json!({"kind": "adapter_down", "adapter": adapter, "cause": cause.as_str(),
            "status": status.as_str(), "restart_in_ms": restart_in_ms})
        }
        Telemetry::AdapterError { adapter, reason } => {
            json!({"kind": "adapter_error", "adapter": adapter, "reason": reason.as_str()})
        }
        _ => unreachable!("not an adapter event: {event:?}"),
    }
}

/// The fields of the reconciliation events.
fn expected_reconcile_fields(event: &Telemetry) -> Value {
    match *event {
        Telemetry::OrderUnknown { order, reason } => {
            json!({"kind": "order_unknown", "order": order, "reason": reason.as_str()})
        }
        Telemetry::Reconciled {
            adapter,
            first,
            positions,
            orders,
            differences,
            cash,
        } => json!({"kind": "reconciled", "adapter": adapter, "first": first,
            "positions": positions, "orders": orders, "differences": differences, "cash": cash}),
        Telemetry::ReconcileDifference {
            adapter,
            difference,
            symbol,
            order,
            engine,
            venue,
            adopted,
        } => json!({"kind": "reconcile_difference", "adapter": adapter,
            "difference": difference.as_str(), "symbol": symbol, "order": order,
            "engine": engine,
            "venue": venue, "adopted": adopted}),
        _ => unreachable!("not a reconciliation event: {event:?}"),
    }
}

fn reconcile_variants() -> Vec<Telemetry> {
    vec![
        Telemetry::OrderUnknown {
            order: 8_589_934_593,
            reason: Text::new("no answer in time"),
        },
        Telemetry::Reconciled {
            adapter: 0,
            first: true,
            positions: 1,
            orders: 2,
            differences: 3,
            cash: 9_500.25,
        },
        Telemetry::ReconcileDifference {
            adapter: 0,
            difference: tickloop_app::venue::Difference::OrderNotInEngine,
            symbol: 1,
            order: 8_589_934_593,
            engine: 0.0,
            venue: 0.5,
            adopted: true,
        },
    ]
}

/// Every state an adapter is reported in.
fn adapter_state_variants() -> Vec<Telemetry> {
    vec![
        Telemetry::AdapterState {
            adapter: 3,
            state: AdapterStateKind::Starting,
        },
        Telemetry::AdapterState {
            adapter: 3,
            state: AdapterStateKind::Ready,
        },
        Telemetry::AdapterState {
            adapter: 3,
            state: AdapterStateKind::Faulty,
        },
        Telemetry::AdapterState {
            adapter: 3,
            state: AdapterStateKind::Restarting,
        },
        Telemetry::AdapterState {
            adapter: 3,
            state: AdapterStateKind::Stopped,
        },
    ]
}

fn every_variant() -> Vec<Telemetry> {
    let mut all = every_order_variant();
    all.extend(reconcile_variants());
    all.extend(adapter_state_variants());
    all.extend([
        Telemetry::Started {
            pid: 4242,
            version: "0.1.0",
            driver: "epoll",
            mode: "park",
        },
        Telemetry::Stopping {
            reason: StopCause::Signal(15),
        },
        Telemetry::Stopping {
            reason: StopCause::Signal(2),
        },
        Telemetry::Stopping {
            reason: StopCause::Signal(10),
        },
        Telemetry::Stopping {
            reason: StopCause::App,
        },
        Telemetry::Stopping {
            reason: StopCause::Deadline,
        },
        Telemetry::Stopped {
            events: 123_456_789,
            candles: 100_000_000,
        },
        Telemetry::ConfigApplied {
            generation: 3,
            restart_needed: 2,
        },
        Telemetry::ConfigRejected {
            generation_kept: 2,
            line: 17,
            reason: Text::new("unknown field `batchh`, expected one of \"batch\"\n..."),
        },
        Telemetry::CandlesLost {
            source: 1,
            lost: 4096,
        },
        Telemetry::NewWriter {
            source: 0,
            epoch: 5,
        },
        Telemetry::RingRemoved { source: 2 },
        Telemetry::TimerOverrun {
            timer: 3,
            late_ns: 80_000,
            took_ns: 1_000,
            budget_ns: 50_000,
            skipped: 1,
        },
        Telemetry::PollOverrun {
            cycle: 12,
            pending: 30,
        },
        Telemetry::Fill {
            order: 1,
            qty: 0.125,
            price: 64_120.25,
        },
        Telemetry::FillFault {
            adapter: 0,
            order: 1,
            fault: tickloop_runtime::adapter::FillFault::Overfill,
            qty: 33.0,
            price: 64_120.25,
            remaining: 11.0,
        },
        Telemetry::RiskDenied {
            symbol: 42,
            reason: Text::from_fmt(format_args!("position {} over limit {}", 12.5, 10)),
        },
        Telemetry::AdapterDown {
            adapter: 3,
            cause: Text::new("fault: malformed frame"),
            status: Text::new("killed by signal 9"),
            restart_in_ms: 400,
        },
        Telemetry::AdapterError {
            adapter: 3,
            reason: Text::new("websocket closed: 1006 \u{2014} «abnormal»"),
        },
        Telemetry::Dropped { count: 9 },
    ]);
    all
}

#[test]
fn every_variant_round_trips_through_jsonl() {
    let dir = TempDir::new(&std::env::temp_dir());
    let mut sink = TelemetrySink::open(&config(&dir.0, 64 << 10, 1 << 20, 2)).unwrap();
    let events = every_variant();
    for (i, event) in events.iter().enumerate() {
        sink.emit(
            1_000 + i as u64,
            1_754_000_000_000_000_000 + i as i64,
            event,
        );
    }
    sink.flush();
    let stats = sink.stats();
    assert_eq!(stats.written, events.len() as u64);
    assert_eq!((stats.dropped, stats.degraded.clone()), (0, None));
    assert_accounting(&stats);
    assert_eq!(stats.file, dir.0.join("telemetry.jsonl"));
    assert!(
        stats.summary().starts_with("telemetry ok"),
        "{}",
        stats.summary()
    );

    let text = fs::read_to_string(&stats.file).unwrap();
    let lines = read_lines(&stats.file);
    assert_eq!(lines.len(), events.len());
    for (i, ((event, line), raw)) in events.iter().zip(&lines).zip(text.lines()).enumerate() {
        // The clocks first, then the kind, then the fields.
        let prefix = format!(
            "{{\"at_ns\":{},\"unix_ns\":{},\"kind\":\"{}\"",
            1_000 + i,
            1_754_000_000_000_000_000 + i as i64,
            event.kind()
        );
        assert!(raw.starts_with(&prefix), "{raw} should start with {prefix}");
        let mut want = expected_fields(event);
        want["at_ns"] = json!(1_000 + i);
        want["unix_ns"] = json!(1_754_000_000_000_000_000 + i as i64);
        assert_eq!(line, &want, "line {i}: {raw}");
        assert_eq!(kind(line), event.kind());
    }
}

#[test]
fn texts_are_truncated_and_escaped_on_one_line() {
    let dir = TempDir::new(&std::env::temp_dir());
    let mut sink = TelemetrySink::open(&config(&dir.0, 16 << 10, 1 << 20, 0)).unwrap();
    let long = format!("line one\nline \"two\"\t\\ {}", "€".repeat(100));
    let reason = Text::new(&long);
    assert_eq!(
        reason.len(),
        94,
        "22 ASCII bytes and 24 three-byte chars: the 25th would not fit"
    );
    assert!(long.starts_with(reason.as_str()));
    sink.emit(1, 2, &Telemetry::OrderRejected { order: 9, reason });
    sink.flush();
    let lines = read_lines(&dir.0.join("telemetry.jsonl"));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["reason"].as_str().unwrap(), reason.as_str());
}

#[test]
fn a_million_events_through_a_256k_buffer_none_dropped() {
    let dir = TempDir::new(&std::env::temp_dir());
    let mut sink = TelemetrySink::open(&config(&dir.0, 256 << 10, 1 << 34, 1)).unwrap();
    sink.prefault();
    const N: u64 = 1_000_000;
    let started = Instant::now();
    let mut flushing = std::time::Duration::ZERO;
    for i in 0..N {
        if i % 2 == 0 {
            sink.emit(i, i as i64, &overrun(i));
        } else {
            let event = Telemetry::OrderSubmitted {
                order: i,
                symbol: (i % 1000) as u32,
                side: Side::Buy,
                qty: 0.001 * i as f64,
                price: Some(100.0 + i as f64 / 7.0),
            };
            sink.emit(i, i as i64, &event);
        }
        if i % 1000 == 999 {
            let t = Instant::now();
            sink.flush();
            flushing += t.elapsed();
        }
    }
    sink.flush();
    let total = started.elapsed();
    let stats = sink.stats();
    println!(
        "1M events in {total:?}: {:.0} ns per emit, {:.1} µs per flush of 1000, {} bytes; {stats:?}",
        (total - flushing).as_nanos() as f64 / N as f64,
        flushing.as_nanos() as f64 / 1000.0 / 1000.0,
        stats.bytes_written,
    );
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.written, N);
    assert_eq!(stats.rotations, 0);
    assert_accounting(&stats);
    let lines = read_lines(&stats.file);
    assert_eq!(lines.len() as u64, N);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["at_ns"].as_u64(), Some(i as u64));
    }
}

#[test]
fn a_full_buffer_drops_and_counts_then_reports_first() {
    let dir = TempDir::new(&std::env::temp_dir());
    let mut sink = TelemetrySink::open(&config(&dir.0, 16 << 10, 1 << 20, 0)).unwrap();
    for i in 0..1000 {
        sink.emit(i, 10 * i as i64, &overrun(i));
    }
    let stats = sink.stats();
    assert!(stats.dropped > 0 && stats.buffered > 0, "{stats:?}");
    assert_eq!(stats.written, 0);
    assert_accounting(&stats);
    // Dropped at emit is not degraded: the files are fine.
    assert_eq!(stats.degraded, None);
    sink.flush();
    let after = sink.stats();
    assert_eq!(after.written, stats.buffered);
    assert_accounting(&after);
    let lines = read_lines(&after.file);
    assert_eq!(kind(&lines[0]), "dropped");
    assert_eq!(lines[0]["count"].as_u64(), Some(stats.dropped));
    // Stamped with the last event lost.
    assert_eq!(lines[0]["at_ns"].as_u64(), Some(999));
    assert_eq!(lines[0]["unix_ns"].as_i64(), Some(9990));
    assert_eq!(tally(&lines), (after.written, after.dropped));
    // The buffer holds about 16 KiB: every byte but the last line's worth is used.
    assert!(fs::metadata(&after.file).unwrap().len() > 15 << 10);
    // Nothing new lost: the next flush writes no dropped line.
    sink.emit(5000, 0, &overrun(5000));
    sink.flush();
    let lines = read_lines(&after.file);
    assert_eq!(tally(&lines), (after.written + 1, after.dropped));
}

#[test]
fn files_rotate_by_size_keeping_keep_files() {
    let dir = TempDir::new(&std::env::temp_dir());
    const ROTATE: u64 = 64 << 10;
    let mut sink = TelemetrySink::open(&config(&dir.0, 16 << 10, ROTATE, 3)).unwrap();
    let mut n = 0u64;
    while sink.stats().rotations < 10 {
        for _ in 0..97 {
            sink.emit(n, n as i64, &overrun(n));
            n += 1;
        }
        sink.flush();
        assert!(n < 1_000_000, "no rotation happening: {:?}", sink.stats());
    }
    let stats = sink.stats();
    assert_eq!((stats.dropped, stats.degraded.clone()), (0, None));
    assert_eq!(stats.rotations, 10);
    let mut names: Vec<String> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "telemetry-1.jsonl",
            "telemetry-2.jsonl",
            "telemetry-3.jsonl",
            "telemetry.jsonl"
        ]
    );
    // Oldest to newest, the kept events are one unbroken run ending with the last emitted.
    let mut all = Vec::new();
    for name in [
        "telemetry-3.jsonl",
        "telemetry-2.jsonl",
        "telemetry-1.jsonl",
        "telemetry.jsonl",
    ] {
        let path = dir.0.join(name);
        let size = fs::metadata(&path).unwrap().len();
        assert!(size <= ROTATE, "{name}: {size} bytes");
        if name != "telemetry.jsonl" {
            // A file is rotated when the next batch (at most 16 KiB) would not fit.
            assert!(size > ROTATE - (16 << 10), "{name}: only {size} bytes");
        }
        all.extend(read_lines(&path));
    }
    let first = all[0]["at_ns"].as_u64().unwrap();
    for (i, line) in all.iter().enumerate() {
        assert_eq!(line["at_ns"].as_u64(), Some(first + i as u64));
    }
    assert_eq!(first + all.len() as u64, n);
}

#[test]
fn keep_files_zero_keeps_only_the_current_file() {
    let dir = TempDir::new(&std::env::temp_dir());
    let mut sink = TelemetrySink::open(&config(&dir.0, 16 << 10, 16 << 10, 0)).unwrap();
    for n in 0..2000 {
        sink.emit(n, 0, &overrun(n));
        if n % 50 == 49 {
            sink.flush();
        }
    }
    sink.flush();
    let stats = sink.stats();
    assert!(stats.rotations > 5, "{stats:?}");
    let names: Vec<_> = fs::read_dir(&dir.0).unwrap().collect();
    assert_eq!(names.len(), 1);
    let lines = read_lines(&stats.file);
    assert_eq!(lines.last().unwrap()["at_ns"].as_u64(), Some(1999));
}

#[test]
fn a_full_disk_drops_counts_degrades_and_recovers() {
    let Some(fs_) = SmallTmpfs::mount("a_full_disk_drops_counts_degrades_and_recovers", "256k")
    else {
        return;
    };
    let dir = &fs_.0;
    // Leave about 160 KiB for telemetry; removing the filler frees space later.
    let filler = dir.join("filler");
    fs::write(&filler, vec![7u8; 96 << 10]).unwrap();
    let mut sink = TelemetrySink::open(&config(dir, 16 << 10, 1 << 20, 2)).unwrap();
    let file = dir.join("telemetry.jsonl");
    let mut n = 0u64;
    let mut flushes = 0;
    while sink.stats().dropped == 0 {
        for _ in 0..100 {
            sink.emit(n, n as i64, &overrun(n));
            n += 1;
        }
        sink.flush();
        flushes += 1;
        assert!(flushes < 100, "the disk never filled: {:?}", sink.stats());
    }
    let stats = sink.stats();
    println!("full after {flushes} flushes: {stats:?}");
    let why = stats.degraded.clone().expect("degraded");
    assert!(why.contains("the disk is full"), "{why}");
    assert!(why.contains(&dir.display().to_string()), "{why}");
    assert!(sink.is_degraded());
    assert!(
        stats
            .summary()
            .starts_with("telemetry degraded: the disk is full"),
        "{}",
        stats.summary()
    );
    assert_accounting(&stats);
    // Still full: more batches are lost and counted, nothing panics, nothing half-written.
    for _ in 0..5 {
        for _ in 0..100 {
            sink.emit(n, n as i64, &overrun(n));
            n += 1;
        }
        sink.flush();
    }
    let stats = sink.stats();
    assert!(stats.dropped >= 500, "{stats:?}");
    assert_accounting(&stats);
    let lines = read_lines(&file);
    assert_eq!(tally(&lines).0, stats.written);
    assert_eq!(
        fs::metadata(&file).unwrap().len(),
        stats.bytes_written,
        "the file holds exactly the whole lines counted"
    );

    // Free space: the next flush succeeds, starting with the count of what was lost.
    fs::remove_file(&filler).unwrap();
    for _ in 0..10 {
        sink.emit(n, n as i64, &overrun(n));
        n += 1;
    }
    sink.flush();
    let stats = sink.stats();
    assert_eq!(stats.degraded, None, "{stats:?}");
    assert!(stats.summary().starts_with("telemetry ok"));
    assert_accounting(&stats);
    assert_eq!(stats.emitted, n);
    let lines = read_lines(&file);
    assert_eq!(tally(&lines), (stats.written, stats.dropped));
    let last_dropped = lines.iter().rposition(|l| kind(l) == "dropped").unwrap();
    assert_eq!(
        last_dropped,
        lines.len() - 11,
        "the dropped line leads the batch"
    );
    assert_eq!(lines.last().unwrap()["at_ns"].as_u64(), Some(n - 1));
}

#[test]
fn a_removed_directory_degrades_and_recovers_when_it_returns() {
    let parent = TempDir::new(&std::env::temp_dir());
    let dir = parent.0.join("telemetry");
    fs::create_dir(&dir).unwrap();
    let mut sink = TelemetrySink::open(&config(&dir, 16 << 10, 1 << 20, 2)).unwrap();
    sink.emit(1, 1, &overrun(1));
    sink.flush();
    assert_eq!(sink.stats().written, 1);

    fs::remove_dir_all(&dir).unwrap();
    for i in 0..5 {
        sink.emit(10 + i, 10 + i as i64, &overrun(i));
    }
    sink.flush();
    let stats = sink.stats();
    assert_eq!((stats.written, stats.dropped), (1, 5));
    let why = stats.degraded.clone().expect("degraded");
    assert!(why.contains("is gone"), "{why}");
    sink.flush(); // nothing new: still degraded, nothing more lost
    for i in 0..5 {
        sink.emit(20 + i, 20 + i as i64, &overrun(i));
    }
    sink.flush();
    assert_eq!(sink.stats().dropped, 10);
    assert!(!dir.exists(), "the sink never creates its directory");

    fs::create_dir(&dir).unwrap();
    for i in 0..3 {
        sink.emit(30 + i, 30 + i as i64, &overrun(i));
    }
    sink.flush();
    let stats = sink.stats();
    assert_eq!(stats.degraded, None);
    assert_eq!((stats.written, stats.dropped), (4, 10));
    assert_accounting(&stats);
    let lines = read_lines(&dir.join("telemetry.jsonl"));
    assert_eq!(lines.len(), 4);
    assert_eq!(kind(&lines[0]), "dropped");
    assert_eq!(lines[0]["count"].as_u64(), Some(10));
    assert_eq!(lines[0]["at_ns"].as_u64(), Some(24));
}

#[test]
fn a_degraded_sink_retries_with_only_the_dropped_line() {
    let parent = TempDir::new(&std::env::temp_dir());
    let dir = parent.0.join("t");
    fs::create_dir(&dir).unwrap();
    let mut sink = TelemetrySink::open(&config(&dir, 16 << 10, 1 << 20, 2)).unwrap();
    fs::remove_dir_all(&dir).unwrap();
    sink.emit(1, 1, &overrun(1));
    sink.flush();
    assert!(sink.is_degraded());
    fs::create_dir(&dir).unwrap();
    // No new events: the next tick still retries, writing the dropped line alone.
    sink.flush();
    assert!(!sink.is_degraded());
    let lines = read_lines(&dir.join("telemetry.jsonl"));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["count"].as_u64(), Some(1));
}

#[test]
fn a_removed_file_is_recreated_without_loss() {
    let dir = TempDir::new(&std::env::temp_dir());
    let mut sink = TelemetrySink::open(&config(&dir.0, 16 << 10, 1 << 20, 2)).unwrap();
    let file = dir.0.join("telemetry.jsonl");
    sink.emit(1, 1, &overrun(1));
    sink.flush();
    fs::remove_file(&file).unwrap();
    sink.emit(2, 2, &overrun(2));
    sink.flush();
    let stats = sink.stats();
    assert_eq!((stats.written, stats.dropped, stats.degraded), (2, 0, None));
    let lines = read_lines(&file);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["at_ns"].as_u64(), Some(2));
}

#[test]
fn a_restart_appends_and_a_torn_file_is_rotated_away() {
    let dir = TempDir::new(&std::env::temp_dir());
    let file = dir.0.join("telemetry.jsonl");
    {
        let mut sink = TelemetrySink::open(&config(&dir.0, 16 << 10, 1 << 20, 2)).unwrap();
        sink.emit(1, 1, &overrun(1));
        // Dropping the sink writes out what is buffered.
    }
    {
        let mut sink = TelemetrySink::open(&config(&dir.0, 16 << 10, 1 << 20, 2)).unwrap();
        sink.emit(2, 2, &overrun(2));
        sink.finish();
        assert_eq!(sink.stats().rotations, 0);
    }
    let lines = read_lines(&file);
    assert_eq!(lines.len(), 2);
    // A file that ends inside a line (a crash mid-write, by another writer) is kept as
    // telemetry-1.jsonl and a new file starts.
    fs::write(&file, b"{\"at_ns\":1}\n{\"at_ns\":2,\"ki").unwrap();
    let mut sink = TelemetrySink::open(&config(&dir.0, 16 << 10, 1 << 20, 2)).unwrap();
    assert_eq!(sink.stats().rotations, 1);
    sink.emit(3, 3, &overrun(3));
    sink.flush();
    assert_eq!(read_lines(&file).len(), 1);
    assert!(fs::read(dir.0.join("telemetry-1.jsonl"))
        .unwrap()
        .ends_with(b"\"ki"));
}

#[test]
fn open_refuses_a_bad_directory_with_the_fix() {
    let dir = TempDir::new(&std::env::temp_dir());
    let missing = dir.0.join("missing");
    let e = TelemetrySink::open(&config(&missing, 16 << 10, 1 << 20, 2))
        .err()
        .unwrap();
    let msg = e.to_string();
    println!("{msg}");
    assert!(matches!(e, TelemetryError::NoDirectory { .. }), "{e:?}");
    assert!(msg.contains(&missing.display().to_string()) && msg.contains("mkdir -p"));

    let file = dir.0.join("a-file");
    fs::write(&file, b"x").unwrap();
    let e = TelemetrySink::open(&config(&file, 16 << 10, 1 << 20, 2))
        .err()
        .unwrap();
    println!("{e}");
    assert!(matches!(e, TelemetryError::NotDirectory { .. }), "{e:?}");
    assert!(e.to_string().contains("a-file"));

    // Unwritable even for root: /proc (no files can be created) and /sys (EACCES).
    for unwritable in ["/proc", "/sys"] {
        if !Path::new(unwritable).is_dir() {
            eprintln!("SKIP {unwritable}: not here");
            continue;
        }
        let e = TelemetrySink::open(&config(Path::new(unwritable), 16 << 10, 1 << 20, 2))
            .err()
            .unwrap();
        let msg = e.to_string();
        println!("{msg}");
        assert!(matches!(e, TelemetryError::Unwritable { .. }), "{e:?}");
        assert!(
            msg.contains(unwritable) && msg.contains("writable"),
            "{msg}"
        );
    }
    // The probe leaves nothing behind.
    let ok = TempDir::new(&std::env::temp_dir());
    drop(TelemetrySink::open(&config(&ok.0, 16 << 10, 1 << 20, 2)).unwrap());
    let names: Vec<_> = fs::read_dir(&ok.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["telemetry.jsonl"]);
}

#[test]
fn config_is_validated_and_strict() {
    let dir = TempDir::new(&std::env::temp_dir());
    let base = config(&dir.0, 16 << 10, 1 << 20, 2);
    let bad = [
        TelemetryConfig {
            buffer_bytes: 1024,
            ..base.clone()
        },
        TelemetryConfig {
            rotate_bytes: 8 << 10,
            ..base.clone()
        },
        TelemetryConfig {
            keep_files: 5000,
            ..base.clone()
        },
        TelemetryConfig {
            file_prefix: "../escape".into(),
            ..base.clone()
        },
        TelemetryConfig {
            file_prefix: String::new(),
            ..base.clone()
        },
    ];
    for config in bad {
        let e = TelemetrySink::open(&config).err().unwrap();
        println!("{e}");
        assert!(matches!(e, TelemetryError::Config { .. }), "{e:?}");
    }
    let defaults: TelemetryConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(defaults, TelemetryConfig::default());
    assert_eq!(defaults.dir, None);
    assert_eq!(defaults.file_prefix, "telemetry");
    assert_eq!(defaults.rotate_bytes, 64 << 20);
    assert_eq!(defaults.keep_files, 8);
    assert_eq!(defaults.buffer_bytes, 256 << 10);
    defaults.validate().unwrap();
    let unknown = serde_json::from_str::<TelemetryConfig>(r#"{"dirr": "/tmp"}"#);
    assert!(unknown.unwrap_err().to_string().contains("unknown field"));
}

#[test]
fn off_does_nothing() {
    let mut sink = TelemetrySink::open(&TelemetryConfig::default()).unwrap();
    sink.emit(1, 1, &overrun(1));
    sink.flush();
    let stats = sink.stats();
    assert!(!stats.enabled);
    assert_eq!((stats.emitted, stats.written, stats.dropped), (0, 0, 0));
    assert_eq!(stats.summary(), "telemetry off");
}

fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid C string and a zeroed statfs to fill.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == libc::TMPFS_MAGIC
    }
}

#[test]
fn flushing_a_full_256k_buffer_to_tmpfs_is_fast() {
    let Some(dir) = [Path::new("/dev/shm"), Path::new("/run"), Path::new("/tmp")]
        .into_iter()
        .find(|p| is_tmpfs(p))
    else {
        eprintln!("SKIP: no tmpfs (/dev/shm, /run) here");
        return;
    };
    let dir = TempDir::new(dir);
    let mut sink = TelemetrySink::open(&config(&dir.0, 256 << 10, 1 << 30, 1)).unwrap();
    sink.prefault();
    let mut n = 0u64;
    let mut times = Vec::new();
    for _ in 0..10 {
        let dropped = sink.stats().dropped;
        while sink.stats().dropped == dropped {
            sink.emit(n, n as i64, &overrun(n));
            n += 1;
        }
        let before = sink.stats().bytes_written;
        let t = Instant::now();
        sink.flush();
        let took = t.elapsed();
        let bytes = sink.stats().bytes_written - before;
        assert!(bytes > 250 << 10, "{bytes} bytes");
        times.push(took);
    }
    times.sort();
    println!(
        "flush of a full 256 KiB buffer to tmpfs: min {:?}, median {:?}, max {:?}",
        times[0], times[5], times[9]
    );
    assert!(times[9].as_millis() < 50, "{times:?}");
    assert_eq!(sink.stats().degraded, None);
}
