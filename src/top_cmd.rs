//! `tickloop top`: a live terminal view of an engine's metrics page (the same counters the
//! exporter serves), redrawn every second with plain ANSI; `--once` prints one frame without
//! screen control and exits (0 if the engine is up, 1 if not).
//!
//! It only reads the page (see [`PageSource`]) and formats; it never writes to the page,
//! never signals the engine, and shows at most `--rows` rows per table (the rest counted).

use crate::metrics_cmd::{find_page, Observation, PageSource, TopArgs};
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tickloop_ops::metrics::layout::Summary;
use tickloop_ops::metrics::Snapshot;

pub fn top(args: &TopArgs) -> anyhow::Result<ExitCode> {
    let page = match &args.page {
        Some(page) => page.clone(),
        None => find_page()?,
    };
    let mut source = PageSource::open(&page, args.max_age)?;
    if args.once {
        let seen = source.observe();
        let up = seen.is_up();
        print!("{}", frame(&page, &seen, args.rows as usize));
        return Ok(ExitCode::from(if up { 0 } else { 1 }));
    }
    let stop = crate::interrupt::stop_flag();
    let interval = Duration::from_millis(args.interval_ms);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let text = frame(&page, &source.observe(), args.rows as usize);
        // Home, clear, the frame: one write, so the screen never shows half of one.
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\x1b[H\x1b[2J{text}");
        let _ = out.flush();
        drop(out);
        while started.elapsed() < interval && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    println!();
    Ok(ExitCode::SUCCESS)
}

/// One frame: the engine's state line, then its counters when there is a snapshot.
pub fn frame(page: &str, seen: &Observation<'_>, rows: usize) -> String {
    let mut f = String::new();
    let state = match (seen.snapshot, seen.liveness) {
        (Some(s), Some(l)) => l.describe(s.pid),
        _ => "no engine".to_string(),
    };
    let age = seen
        .age_ns
        .map(|a| format!(", updated {} ago", dur(a)))
        .unwrap_or_default();
    let _ = writeln!(f, "tickloop top: {page}: {state}{age}");
    if let Some(note) = &seen.note {
        let _ = writeln!(f, "  {note}");
    }
    if let Some(s) = seen.snapshot {
        overview(&mut f, s);
        timers(&mut f, s, rows);
        rings(&mut f, s, rows);
        adapters(&mut f, s, rows);
    }
    f
}

fn overview(f: &mut String, s: &Snapshot) {
    let l = &s.lp;
    let t = &s.trading;
    let _ = writeln!(
        f,
        "engine    {} pid {}, up {}, {} snapshots every {}",
        s.instance,
        s.pid,
        dur(s.uptime_ns()),
        s.publishes,
        dur(s.interval_ns)
    );
    let _ = writeln!(
        f,
        "loop      {} iterations, {} events, {} candles ({} lost), {} timer firings, {} parks",
        l.iterations, l.events, l.candles, l.candles_lost, l.timers_fired, l.parks
    );
    let _ = writeln!(f, "lag       {}", summary(&l.lag()));
    let _ = writeln!(
        f,
        "actions   {} ({} dropped), {} follow-ups dropped, {} timers refused, journal {} records ({} dropped)",
        l.actions, l.actions_dropped, l.follow_ups_dropped, l.timer_refusals, l.journal_records, l.journal_dropped
    );
    let _ = writeln!(
        f,
        "trading   {} orders ({} open), {} fills, {} rejected, {} cancelled, {} denied, {} fill faults, {} trades, realized {:+.2}",
        t.orders_submitted, t.open_orders, t.fills, t.orders_rejected, t.orders_cancelled, t.orders_denied, t.fill_faults, t.trades, f64::from_bits(t.realized_pnl)
    );
    let _ = writeln!(
        f,
        "config    generation {}, {} rejected; telemetry {} emitted, {} dropped{}",
        l.config_generation,
        l.config_rejected,
        l.telemetry_emitted,
        l.telemetry_dropped,
        if l.telemetry_degraded == 1 {
            " (degraded)"
        } else {
            ""
        }
    );
    let lost = s.timers_not_shown + s.rings_not_shown + s.adapters_not_shown;
    if lost + s.names_truncated > 0 {
        let _ = writeln!(
            f,
            "page      {} timer, {} ring, {} adapter row(s) had no room; {} name(s) cut",
            s.timers_not_shown, s.rings_not_shown, s.adapters_not_shown, s.names_truncated
        );
    }
}

fn timers(f: &mut String, s: &Snapshot, rows: usize) {
    let _ = writeln!(f, "\ntimers ({} of {})", s.timers.len(), s.capacities[2]);
    let _ = writeln!(
        f,
        "  {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>8}",
        "timer",
        "period",
        "firings",
        "late p50",
        "p99",
        "p999",
        "max",
        "run p99",
        "overruns",
        "skipped"
    );
    for t in s.timers.iter().take(rows) {
        let late = t.lateness();
        let _ = writeln!(
            f,
            "  {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>8}",
            t.timer,
            dur(t.period_ns),
            late.count,
            dur(late.p50_ns),
            dur(late.p99_ns),
            dur(late.p999_ns),
            dur(late.max_ns),
            dur(t.run_p99_ns),
            t.overruns,
            t.skipped
        );
    }
    more(f, s.timers.len(), rows);
}

fn rings(f: &mut String, s: &Snapshot, rows: usize) {
    let _ = writeln!(f, "\nrings ({})", s.rings.len());
    let _ = writeln!(
        f,
        "  {:>6} {:<32} {:>12} {:>10} {:>10} {:>9} {:>7}",
        "source", "ring", "candles", "lag", "lost", "overruns", "writer"
    );
    for (r, name) in s.rings.iter().take(rows) {
        let _ = writeln!(
            f,
            "  {:>6} {:<32} {:>12} {:>10} {:>10} {:>9} {:>7}",
            r.source,
            name,
            r.received,
            r.lag,
            r.lost,
            r.overruns,
            if r.writer_alive == 1 { "alive" } else { "gone" }
        );
    }
    more(f, s.rings.len(), rows);
}

fn adapters(f: &mut String, s: &Snapshot, rows: usize) {
    if s.adapters.is_empty() {
        return;
    }
    let _ = writeln!(f, "\nadapters ({})", s.adapters.len());
    let _ = writeln!(
        f,
        "  {:<24} {:<9} {:>8} {:>6} {:>10} {:>10} {:>8} {:>8} {:>9}",
        "adapter", "state", "pid", "starts", "requests", "done", "failed", "timeouts", "in flight"
    );
    for (a, name) in s.adapters.iter().take(rows) {
        let _ = writeln!(
            f,
            "  {:<24} {:<9} {:>8} {:>6} {:>10} {:>10} {:>8} {:>8} {:>9}",
            name,
            state_name(a.state),
            a.pid,
            a.starts,
            a.requests,
            a.done,
            a.failed,
            a.timeouts,
            a.in_flight
        );
    }
    more(f, s.adapters.len(), rows);
}

fn more(f: &mut String, total: usize, shown: usize) {
    if total > shown {
        let _ = writeln!(f, "  ... and {} more (--rows)", total - shown);
    }
}

/// The adapter state codes (`AdapterState::code`).
fn state_name(code: u64) -> &'static str {
    match code {
        0 => "idle",
        1 => "starting",
        2 => "ready",
        3 => "stopping",
        4 => "backoff",
        5 => "closed",
        _ => "?",
    }
}

fn summary(s: &Summary) -> String {
    format!(
        "p50 {}, p99 {}, p999 {}, max {} ({} ticks)",
        dur(s.p50_ns),
        dur(s.p99_ns),
        dur(s.p999_ns),
        dur(s.max_ns),
        s.count
    )
}

/// Nanoseconds for a person: 850 ns, 17.2 µs, 3.96 ms, 1.50 s.
pub fn dur(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}
