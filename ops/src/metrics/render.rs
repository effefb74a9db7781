//! Prometheus text exposition (format 0.0.4) of a metrics page's snapshot, and of the
//! exporter's own counters: every family with `# HELP` and `# TYPE`, names prefixed
//! `tickloop_`, times in seconds, counters ending in `_total`, label values escaped.
//!
//! It only formats: it never reads the page, a clock or a socket. The engine's series are
//! written only for a snapshot that is live ([`super::Liveness::Up`]); otherwise the text says
//! `tickloop_up 0` and serves no old numbers as if they were current.

use super::layout::{AdapterRecord, RingRecord, Summary, TimerRecord};
use super::reader::Snapshot;
use std::collections::HashSet;
use std::hash::Hash;
use std::io::{self, Write};

/// The exporter's own counters (`tickloop metrics serve`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Connections accepted (including those refused for lack of a worker).
    pub accepted: u64,
    /// Connections being served or waiting for a worker now.
    pub open: u64,
    /// Connections beyond what the workers and their queue hold: answered 503 and closed.
    pub refused: u64,
    /// Connections closed because their exchange outlasted the request timeout.
    pub timed_out: u64,
    /// Responses by status code: 200, 400, 404, 405, 408, 500.
    pub responses: [u64; 6],
}

/// The codes [`ServeStats::responses`] counts, in order.
pub const RESPONSE_CODES: [u16; 6] = [200, 400, 404, 405, 408, 500];

/// The labels of one series.
#[derive(Clone, Copy)]
enum Labels<'a> {
    None,
    Timer(u64),
    Ring(&'a str, u64),
    Adapter(&'a str),
    Code(u16),
    Section(&'a str),
}

/// A sample's value.
#[derive(Clone, Copy)]
enum Value {
    Int(u64),
    /// Nanoseconds, written as seconds.
    Secs(u64),
    Float(f64),
}

/// What one family says about one row (or about the snapshot).
enum Metric {
    Summary(Summary),
    Value(Value),
}

/// A family: name, type, help, and how to get its value from a `T`.
type Family<T> = (&'static str, &'static str, &'static str, fn(&T) -> Metric);

fn family(out: &mut dyn Write, name: &str, kind: &str, help: &str) -> io::Result<()> {
    write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n")
}

/// Opens label `key` (`{key="` or `,key="`); the caller writes the value and the quote.
fn label(out: &mut dyn Write, first: &mut bool, key: &str) -> io::Result<()> {
    out.write_all(if *first { b"{" } else { b"," })?;
    *first = false;
    out.write_all(key.as_bytes())?;
    out.write_all(b"=\"")
}

fn write_labels(out: &mut dyn Write, labels: Labels<'_>, first: &mut bool) -> io::Result<()> {
    match labels {
        Labels::None => Ok(()),
        Labels::Timer(timer) => {
            label(out, first, "timer")?;
            write!(out, "{timer}\"")
        }
        Labels::Ring(name, source) => {
            label(out, first, "ring")?;
            write_label_value(out, name)?;
            label(out, first, "source")?;
            write!(out, "{source}\"")
        }
        Labels::Adapter(name) => {
            label(out, first, "adapter")?;
            write_label_value(out, name)
        }
        Labels::Code(code) => {
            label(out, first, "code")?;
            write!(out, "{code}\"")
        }
        Labels::Section(section) => {
            label(out, first, "section")?;
            write_label_value(out, section)
        }
    }
}

fn sample(
    out: &mut dyn Write,
    name: &str,
    suffix: &str,
    labels: Labels<'_>,
    quantile: Option<&str>,
    value: Value,
) -> io::Result<()> {
    out.write_all(name.as_bytes())?;
    out.write_all(suffix.as_bytes())?;
    let first = &mut true;
    write_labels(out, labels, first)?;
    if let Some(q) = quantile {
        label(out, first, "quantile")?;
        write!(out, "{q}\"")?;
    }
    if !*first {
        out.write_all(b"}")?;
    }
    out.write_all(b" ")?;
    match value {
        Value::Int(v) => write!(out, "{v}")?,
        Value::Secs(ns) => write_seconds(out, ns)?,
        Value::Float(f) if f.is_nan() => out.write_all(b"NaN")?,
        Value::Float(f) if f.is_infinite() => {
            out.write_all(if f > 0.0 { b"+Inf" } else { b"-Inf" })?
        }
        Value::Float(f) => write!(out, "{f}")?,
    }
    out.write_all(b"\n")
}

/// Nanoseconds as decimal seconds, exactly (integer arithmetic, trailing zeros dropped).
fn write_seconds(out: &mut dyn Write, ns: u64) -> io::Result<()> {
    let (secs, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    write!(out, "{secs}")?;
    if frac == 0 {
        return Ok(());
    }
    let digits = format!("{frac:09}");
    write!(out, ".{}", digits.trim_end_matches('0'))
}

/// A label value with `\`, `"` and newline escaped, and its closing quote.
fn write_label_value(out: &mut dyn Write, value: &str) -> io::Result<()> {
    for c in value.chars() {
        match c {
            '\\' => out.write_all(b"\\\\")?,
            '"' => out.write_all(b"\\\"")?,
            '\n' => out.write_all(b"\\n")?,
            c => write!(out, "{c}")?,
        }
    }
    out.write_all(b"\"")
}

fn summary(out: &mut dyn Write, name: &str, labels: Labels<'_>, s: &Summary) -> io::Result<()> {
    sample(out, name, "", labels, Some("0.5"), Value::Secs(s.p50_ns))?;
    sample(out, name, "", labels, Some("0.99"), Value::Secs(s.p99_ns))?;
    sample(out, name, "", labels, Some("0.999"), Value::Secs(s.p999_ns))?;
    sample(out, name, "_sum", labels, None, Value::Secs(s.sum_ns))?;
    sample(out, name, "_count", labels, None, Value::Int(s.count))
}

/// Which rows to show: the first of each key (a damaged page could repeat one, and the
/// exposition must never hold a series twice).
fn first_of_each<T, K: Hash + Eq>(items: &[T], key: impl Fn(&T) -> K) -> Vec<bool> {
    let mut seen = HashSet::with_capacity(items.len());
    items.iter().map(|item| seen.insert(key(item))).collect()
}

/// Render `families`, each over the rows of `items` that `show` keeps. Nothing for no rows.
fn families<T>(
    out: &mut dyn Write,
    items: &[T],
    show: &[bool],
    labels: fn(&T) -> Labels<'_>,
    families: &[Family<T>],
) -> io::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    for &(name, kind, help, get) in families {
        family(out, name, kind, help)?;
        for (item, _) in items.iter().zip(show).filter(|(_, shown)| **shown) {
            match get(item) {
                Metric::Summary(s) => summary(out, name, labels(item), &s)?,
                Metric::Value(v) => sample(out, name, "", labels(item), None, v)?,
            }
        }
    }
    Ok(())
}

fn int(v: u64) -> Metric {
    Metric::Value(Value::Int(v))
}

fn secs(ns: u64) -> Metric {
    Metric::Value(Value::Secs(ns))
}

/// Families of one value for the whole snapshot.
fn singles(out: &mut dyn Write, s: &Snapshot, list: &[Family<Snapshot>]) -> io::Result<()> {
    families(
        out,
        std::slice::from_ref(s),
        &[true],
        |_| Labels::None,
        list,
    )
}

/// The `tickloop_up` gauge and, when known, how old the page's last snapshot is.
pub fn render_up(out: &mut impl Write, up: bool, age_ns: Option<u64>) -> io::Result<()> {
    let out: &mut dyn Write = out;
    family(
        out,
        "tickloop_up",
        "gauge",
        "1 while the engine that writes the metrics page runs and keeps it fresh; 0 when it is gone, stopped, starting or stale (and then no engine series are served).",
    )?;
    sample(
        out,
        "tickloop_up",
        "",
        Labels::None,
        None,
        Value::Int(up as u64),
    )?;
    if let Some(age) = age_ns {
        family(
            out,
            "tickloop_metrics_page_age_seconds",
            "gauge",
            "Time since the engine last published its metrics page.",
        )?;
        sample(
            out,
            "tickloop_metrics_page_age_seconds",
            "",
            Labels::None,
            None,
            Value::Secs(age),
        )?;
    }
    Ok(())
}

/// Every engine series of a live snapshot.
pub fn render(snapshot: &Snapshot, out: &mut impl Write) -> io::Result<()> {
    let out: &mut dyn Write = out;
    singles(out, snapshot, LOOP_FAMILIES)?;
    let timers = &snapshot.timers;
    let show = first_of_each(timers, |t| t.timer);
    families(
        out,
        timers,
        &show,
        |t| Labels::Timer(t.timer),
        TIMER_FAMILIES,
    )?;
    let rings = &snapshot.rings;
    let show = first_of_each(rings, |r| r.0.source);
    families(
        out,
        rings,
        &show,
        |r| Labels::Ring(&r.1, r.0.source),
        RING_FAMILIES,
    )?;
    singles(out, snapshot, BUSINESS_FAMILIES)?;
    let adapters = &snapshot.adapters;
    let show = first_of_each(adapters, |a| a.1.clone());
    families(
        out,
        adapters,
        &show,
        |a| Labels::Adapter(&a.1),
        ADAPTER_FAMILIES,
    )?;
    singles(out, snapshot, CONFIG_FAMILIES)?;
    render_page(snapshot, out)
}

/// What the page itself reports: rows without room, names cut, snapshots published.
fn render_page(s: &Snapshot, out: &mut dyn Write) -> io::Result<()> {
    let sections = [
        ("timers", s.timers_not_shown),
        ("rings", s.rings_not_shown),
        ("adapters", s.adapters_not_shown),
    ];
    families(
        out,
        &sections,
        &[true; 3],
        |r| Labels::Section(r.0),
        &[(
            "tickloop_metrics_rows_not_shown",
            "gauge",
            "Rows the metrics page had no room for at its last snapshot (the page is sized from the loop's limits, so this stays 0; the engine warns when it is not).",
            |r| int(r.1),
        )],
    )?;
    singles(out, s, PAGE_FAMILIES)
}

/// The exporter's own counters.
pub fn render_serve_stats(stats: &ServeStats, out: &mut impl Write) -> io::Result<()> {
    let out: &mut dyn Write = out;
    families(
        out,
        std::slice::from_ref(stats),
        &[true],
        |_| Labels::None,
        SERVE_FAMILIES,
    )?;
    let responses: Vec<(u16, u64)> = RESPONSE_CODES
        .iter()
        .copied()
        .zip(stats.responses)
        .collect();
    families(
        out,
        &responses,
        &[true; RESPONSE_CODES.len()],
        |r| Labels::Code(r.0),
        &[(
            "tickloop_metrics_responses_total",
            "counter",
            "Responses of the metrics exporter by HTTP status code.",
            |r| int(r.1),
        )],
    )
}

const LOOP_FAMILIES: &[Family<Snapshot>] = &[
    (
        "tickloop_uptime_seconds",
        "gauge",
        "Time since the loop started.",
        |s| secs(s.uptime_ns()),
    ),
    (
        "tickloop_loop_iterations_total",
        "counter",
        "Iterations of the loop.",
        |s| int(s.lp.iterations),
    ),
    (
        "tickloop_events_total",
        "counter",
        "Events dispatched to the app.",
        |s| int(s.lp.events),
    ),
    (
        "tickloop_candles_total",
        "counter",
        "Candles read from all rings.",
        |s| int(s.lp.candles),
    ),
    (
        "tickloop_candles_lost_total",
        "counter",
        "Candles lost on all rings because a writer lapped the loop.",
        |s| int(s.lp.candles_lost),
    ),
    (
        "tickloop_loop_lag_seconds",
        "summary",
        "How late the loop served what was due, since start.",
        |s| Metric::Summary(s.lp.lag()),
    ),
    (
        "tickloop_loop_lag_max_seconds",
        "gauge",
        "The largest loop lag since start.",
        |s| secs(s.lp.lag_max_ns),
    ),
    (
        "tickloop_timers_fired_total",
        "counter",
        "Timer firings dispatched to the app.",
        |s| int(s.lp.timers_fired),
    ),
    (
        "tickloop_parks_total",
        "counter",
        "Times the loop slept in its driver because it was idle.",
        |s| int(s.lp.parks),
    ),
    (
        "tickloop_fd_polls_total",
        "counter",
        "Times the loop polled its file descriptors.",
        |s| int(s.lp.fd_polls),
    ),
    (
        "tickloop_actions_total",
        "counter",
        "Actions the app returned.",
        |s| int(s.lp.actions),
    ),
    (
        "tickloop_actions_dropped_total",
        "counter",
        "Actions dropped because an event returned more than actions_per_event.",
        |s| int(s.lp.actions_dropped),
    ),
    (
        "tickloop_follow_ups_dropped_total",
        "counter",
        "Follow-up events the loop dropped for lack of room.",
        |s| int(s.lp.follow_ups_dropped),
    ),
    (
        "tickloop_timer_refusals_total",
        "counter",
        "Timers the loop refused to set (wheel full, bad id).",
        |s| int(s.lp.timer_refusals),
    ),
    (
        "tickloop_backlog_iterations_total",
        "counter",
        "Iterations that left input for the next one (a ring or fd source over its batch).",
        |s| int(s.lp.backlog_iterations),
    ),
    (
        "tickloop_max_backlog_candles",
        "gauge",
        "The largest backlog seen after a batch, since start.",
        |s| int(s.lp.max_backlog),
    ),
    (
        "tickloop_reload_requests_total",
        "counter",
        "SIGHUPs received.",
        |s| int(s.lp.reload_requests),
    ),
    (
        "tickloop_app_reconfigured_total",
        "counter",
        "New app configurations taken while running.",
        |s| int(s.lp.app_reconfigured),
    ),
    (
        "tickloop_service_requests_dropped_total",
        "counter",
        "Telemetry from services dropped beyond the per-tick limit.",
        |s| int(s.lp.service_requests_dropped),
    ),
    (
        "tickloop_journal_records_total",
        "counter",
        "Records written to the journal.",
        |s| int(s.lp.journal_records),
    ),
    (
        "tickloop_journal_dropped_total",
        "counter",
        "Journal records lost to a write failure.",
        |s| int(s.lp.journal_dropped),
    ),
];

const TIMER_FAMILIES: &[Family<TimerRecord>] = &[
    (
        "tickloop_timer_lateness_seconds",
        "summary",
        "How late each firing of a periodic timer ran, since start.",
        |t| Metric::Summary(t.lateness()),
    ),
    (
        "tickloop_timer_lateness_max_seconds",
        "gauge",
        "The largest lateness of a periodic timer's firings, since start.",
        |t| secs(t.late_max_ns),
    ),
    (
        "tickloop_timer_run_seconds",
        "summary",
        "How long the app took for each firing of a periodic timer, since start.",
        |t| Metric::Summary(t.run()),
    ),
    (
        "tickloop_timer_run_max_seconds",
        "gauge",
        "The longest the app took for a firing of a periodic timer, since start.",
        |t| secs(t.run_max_ns),
    ),
    (
        "tickloop_timer_overruns_total",
        "counter",
        "Firings of a periodic timer that broke its budget.",
        |t| int(t.overruns),
    ),
    (
        "tickloop_timer_skipped_periods_total",
        "counter",
        "Whole periods a periodic timer skipped because it fired over a period late.",
        |t| int(t.skipped),
    ),
];

const RING_FAMILIES: &[Family<(RingRecord, String)>] = &[
    (
        "tickloop_ring_lag_candles",
        "gauge",
        "Candles published on a ring but not read by the loop yet.",
        |r| int(r.0.lag),
    ),
    (
        "tickloop_ring_lost_candles_total",
        "counter",
        "Candles lost on a ring because its writer lapped the loop.",
        |r| int(r.0.lost),
    ),
    (
        "tickloop_ring_overruns_total",
        "counter",
        "Times a ring's writer lapped the loop (each lost one or more candles).",
        |r| int(r.0.overruns),
    ),
    (
        "tickloop_ring_writer_alive",
        "gauge",
        "1 while a ring's writer process is alive.",
        |r| int(r.0.writer_alive),
    ),
    (
        "tickloop_ring_candles_total",
        "counter",
        "Candles the loop read from a ring.",
        |r| int(r.0.received),
    ),
    (
        "tickloop_ring_registered",
        "gauge",
        "1 while the loop holds an entry in the ring's reader registry (it can park on the ring).",
        |r| int(r.0.registered),
    ),
];

const BUSINESS_FAMILIES: &[Family<Snapshot>] = &[
    ("tickloop_orders_submitted_total", "counter", "Orders submitted to brokers.", |s| int(s.trading.orders_submitted)),
    ("tickloop_fills_total", "counter", "Fills booked (each partial fill counts one).", |s| int(s.trading.fills)),
    ("tickloop_orders_rejected_total", "counter", "Orders rejected (by the venue, the adapter host or the paper broker).", |s| int(s.trading.orders_rejected)),
    ("tickloop_orders_cancelled_total", "counter", "Orders cancelled or expired.", |s| int(s.trading.orders_cancelled)),
    ("tickloop_orders_denied_total", "counter", "Order intents risk denied before they were sent.", |s| int(s.trading.orders_denied)),
    ("tickloop_fill_faults_total", "counter", "Fills an adapter reported that were not believed (overfill, duplicate, bad number, unknown order); the book did not move.", |s| int(s.trading.fill_faults)),
    ("tickloop_reconciliations_total", "counter", "Reconciliations of the books with the venue's that completed.", |s| int(s.trading.reconciliations)),
    ("tickloop_reconcile_differences_total", "counter", "Differences reconciliation found between the engine's books and the venue's (each one a reconcile_difference telemetry event).", |s| int(s.trading.reconcile_differences)),
    ("tickloop_orders_unknown_total", "counter", "Orders whose place or cancel got no answer (timed out, adapter down), asked of the venue.", |s| int(s.trading.orders_unknown)),
    ("tickloop_open_orders", "gauge", "Orders submitted and not final yet.", |s| int(s.trading.open_orders)),
    ("tickloop_trades_total", "counter", "Trades closed.", |s| int(s.trading.trades)),
    ("tickloop_realized_pnl", "gauge", "Realized profit and loss of the closed trades, in the account's currency.", |s| Metric::Value(Value::Float(f64::from_bits(s.trading.realized_pnl)))),
    ("tickloop_telemetry_emitted_total", "counter", "Telemetry records emitted.", |s| int(s.lp.telemetry_emitted)),
    ("tickloop_telemetry_dropped_total", "counter", "Telemetry records dropped because the telemetry channel was full.", |s| int(s.lp.telemetry_dropped)),
    ("tickloop_telemetry_degraded", "gauge", "1 while telemetry is degraded (dropping records).", |s| int(s.lp.telemetry_degraded)),
];

const ADAPTER_FAMILIES: &[Family<(AdapterRecord, String)>] = &[
    ("tickloop_adapter_state", "gauge", "An adapter's state as its numeric code (0 idle, 1 starting, 2 ready, 3 stopping, 4 backoff, 5 closed).", |a| int(a.0.state)),
    ("tickloop_adapter_starts_total", "counter", "Processes started for an adapter.", |a| int(a.0.starts)),
    ("tickloop_adapter_in_flight", "gauge", "Requests sent to an adapter and not answered yet.", |a| int(a.0.in_flight)),
    ("tickloop_adapter_requests_total", "counter", "Requests an adapter accepted (sent or queued).", |a| int(a.0.requests)),
    ("tickloop_adapter_done_total", "counter", "Requests an adapter answered.", |a| int(a.0.done)),
    ("tickloop_adapter_failed_total", "counter", "Accepted requests that failed (adapter error, timeout, adapter down).", |a| int(a.0.failed)),
    ("tickloop_adapter_timeouts_total", "counter", "Requests that timed out.", |a| int(a.0.timeouts)),
    ("tickloop_adapter_refused_total", "counter", "Requests refused before they were sent.", |a| int(a.0.refused)),
    ("tickloop_adapter_events_lost_total", "counter", "Adapter events lost because the event queue was full.", |a| int(a.0.events_lost)),
];

const CONFIG_FAMILIES: &[Family<Snapshot>] = &[
    (
        "tickloop_config_generation",
        "gauge",
        "Generation of the configuration in force (incremented by each reload).",
        |s| int(s.lp.config_generation),
    ),
    (
        "tickloop_config_rejected_total",
        "counter",
        "Configurations rejected (invalid, unreadable, missing, or refused by the app).",
        |s| int(s.lp.config_rejected),
    ),
];

const PAGE_FAMILIES: &[Family<Snapshot>] = &[
    (
        "tickloop_metrics_names_truncated",
        "gauge",
        "Ring and instance names cut to fit the metrics page at its last snapshot.",
        |s| int(s.names_truncated),
    ),
    (
        "tickloop_metrics_page_publishes_total",
        "counter",
        "Snapshots the engine published to its metrics page.",
        |s| int(s.publishes),
    ),
];

const SERVE_FAMILIES: &[Family<ServeStats>] = &[
    (
        "tickloop_metrics_connections_total",
        "counter",
        "Connections accepted by the metrics exporter.",
        |s| int(s.accepted),
    ),
    (
        "tickloop_metrics_connections_refused_total",
        "counter",
        "Connections beyond what the exporter's workers hold, answered 503 and closed.",
        |s| int(s.refused),
    ),
    (
        "tickloop_metrics_connections_timed_out_total",
        "counter",
        "Connections closed because they outlasted the request timeout.",
        |s| int(s.timed_out),
    ),
    (
        "tickloop_metrics_connections_open",
        "gauge",
        "Connections open on the metrics exporter.",
        |s| int(s.open),
    ),
];
