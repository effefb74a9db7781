//! The metrics endpoint: Prometheus text exposition (format 0.0.4) over HTTP/1.1 on a
//! loopback address, served by the loop's own thread without ever blocking it.
//!
//! **What it owns.** A non-blocking listening socket, up to `max_connections` client
//! connections, a private epoll instance (a mio [`Poll`]) on which all of them and a timerfd
//! are registered, and the latest [`Snapshot`] of the loop's numbers. The loop registers the
//! private epoll's fd as **one** [`FdSource`] (epoll fds are pollable, also from io_uring):
//! when it is readable, [`FdSource::on_ready`] polls the private epoll with a zero timeout and
//! serves everything ready. Each connection is a small state machine driven by readiness:
//! reading the request → writing the response → lingering (the write side is shut, the rest
//! of what the client sends is read and discarded until it closes, so closing never resets
//! a response the client has not read yet) → closed.
//!
//! **Where the numbers come from.** The loop fills a [`Snapshot`] (a plain, fixed-size
//! struct: no allocation to fill or copy it) and hands it over with
//! [`MetricsServer::set_snapshot`], typically on its housekeeping tick. Each request renders
//! the latest snapshot, so what a scrape sees is stale by at most one such tick. The server's
//! own counters ([`MetricsServerStats`]) are current at the time of the request.
//!
//! **What it never does.**
//! - It never blocks: every socket is non-blocking and every read and write goes until
//!   `EAGAIN` (readiness is edge-triggered) or a fixed bound; a partial write keeps the rest
//!   of the response for the next writable edge. A client that connects and sends nothing, or
//!   sends half a request and stalls, or reads the response one byte at a time, only holds
//!   its own slot, and only until `request_timeout_ms` after it connected: the whole exchange
//!   must finish by then (a timerfd on the private epoll wakes the server at the earliest
//!   deadline, so this holds even if nobody calls [`MetricsServer::expire`]).
//! - It never allocates per request after [`MetricsServer::bind`]: every connection slot has a
//!   request buffer of `max_request_bytes` and a response buffer of [`RESPONSE_CAPACITY`]
//!   allocated at bind; the readiness list, the token list and the snapshot are fixed-size
//!   too. Rendering writes into the slot's buffer with `core::fmt` (no allocation).
//! - It never trusts client input: the request is parsed by `httparse` from a bounded buffer;
//!   a request larger than `max_request_bytes` or malformed gets 400 and the connection is
//!   closed; only `GET /metrics` (or `GET /`) is answered with metrics, other paths get 404
//!   and other methods 405; nothing a client sends is echoed. Beyond `max_connections`,
//!   connections wait in the kernel's backlog only while a slot is held by one that arrived
//!   less than 50 ms ago (a burst of scrapers); otherwise they are accepted and answered 503
//!   at once, so clients stalling in every slot cannot fill the backlog.
//! - It never listens on a non-loopback address unless the configuration says
//!   `allow_non_loopback = true` (the endpoint has no authentication), and it is off unless
//!   `listen` is set.
//!
//! Its clock is CLOCK_MONOTONIC, read by itself: timeouts protect the loop and are not inputs
//! of the app, so nothing here is journaled or affects replay.

use crate::driver::epoll::Timerfd;
use crate::driver::{monotonic_now, Interest, Readiness};
use crate::event_loop::{FdSource, LoopStats, Periodic};
use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Poll, Token};
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use tickloop_app::clock::Nanos;
use tickloop_app::{EventKind, SourceId, TimerId};

/// Bytes of each connection's response buffer. The largest possible rendering (every list of
/// the [`Snapshot`] full, every number at `u64::MAX`, every label 32 escaped bytes) is well
/// below this; the tests check it.
pub const RESPONSE_CAPACITY: usize = 64 << 10;
/// Timers, rings and adapters a [`Snapshot`] holds at most.
pub const MAX_TIMERS: usize = 16;
pub const MAX_RINGS: usize = 16;
pub const MAX_ADAPTERS: usize = 16;
/// Bytes of a [`Label`] (a ring's or an adapter's name).
pub const LABEL_BYTES: usize = 32;

/// Room kept in front of the rendered body for the status line and headers, which are written
/// last (they carry the body's length) right in front of it: no copy of the body.
const HEADER_ROOM: usize = 256;
/// Connections accepted per call at most; beyond, the server asks to be called again (so a
/// burst of connections is spread over loop iterations).
const ACCEPTS_PER_CALL: usize = 8;
/// While every slot is held and the youngest holder was accepted less than this long ago
/// (it is most likely about to send its request and be done), new connections wait in the
/// kernel's backlog for a slot; after that they are accepted and answered 503 at once. So a
/// burst of scrapers is served, and stalled clients holding every slot cannot fill the backlog.
const ADMIT_WAIT_NS: Nanos = 50_000_000;
/// Bytes read and discarded per call from a client after its response; beyond, it is closed.
const LINGER_DRAIN_MAX: usize = 64 << 10;
/// How soon a failed accept (EMFILE, ENFILE, ENOBUFS) is retried.
const ACCEPT_RETRY_NS: Nanos = 100_000_000;

const LISTENER: Token = Token(0);
const TIMER: Token = Token(1);
const FIRST_CONN: usize = 2;

const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `[metrics]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where to listen, e.g. `127.0.0.1:9464`. `None` (the default): no endpoint.
    pub listen: Option<SocketAddr>,
    /// The endpoint has no authentication: an address that is not loopback is refused unless
    /// this is true.
    pub allow_non_loopback: bool,
    /// Connections served at once. More wait in the kernel's backlog for at most 50 ms while
    /// the slots are held by connections that just arrived; otherwise they are accepted and
    /// answered 503 at once.
    pub max_connections: u32,
    /// A connection's whole exchange (request in, response out) must end within this many
    /// milliseconds of its accept, or it is closed.
    pub request_timeout_ms: u32,
    /// The largest request accepted (request line and headers); larger gets 400.
    pub max_request_bytes: u32,
    /// SO_SNDBUF of each client socket; 0 (the default) leaves the kernel's, which on
    /// loopback takes a whole response at once. A small value makes the server hand a
    /// response over in pieces as the client reads (the tests use it to exercise that path).
    pub send_buffer_bytes: u32,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            allow_non_loopback: false,
            max_connections: 8,
            request_timeout_ms: 2000,
            max_request_bytes: 8192,
            send_buffer_bytes: 0,
        }
    }
}

impl MetricsConfig {
    /// Check every field; the error names the field, the bad value and the fix.
    pub fn validate(&self) -> Result<(), MetricsError> {
        let bad = |field: &'static str, value: String, fix: &str| {
            Err(MetricsError::Config {
                field,
                value,
                fix: fix.to_string(),
            })
        };
        if self.max_connections == 0 || self.max_connections > 1024 {
            return bad(
                "max_connections",
                self.max_connections.to_string(),
                "use 1 to 1024 (default 8)",
            );
        }
        if self.request_timeout_ms < 10 || self.request_timeout_ms > 600_000 {
            return bad(
                "request_timeout_ms",
                self.request_timeout_ms.to_string(),
                "use 10 to 600000 ms (default 2000)",
            );
        }
        if self.max_request_bytes < 256 || self.max_request_bytes > 1 << 20 {
            return bad(
                "max_request_bytes",
                self.max_request_bytes.to_string(),
                "use 256 to 1048576 bytes (default 8192)",
            );
        }
        if self.send_buffer_bytes > 1 << 26 {
            return bad(
                "send_buffer_bytes",
                self.send_buffer_bytes.to_string(),
                "use 0 (the kernel's default) to 67108864 bytes",
            );
        }
        if let Some(addr) = self.listen {
            if !self.allow_non_loopback && !is_loopback(addr.ip()) {
                return Err(MetricsError::NotLoopback { addr });
            }
        }
        Ok(())
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics: {field} = {value} is not allowed: {fix}")]
    Config {
        field: &'static str,
        value: String,
        fix: String,
    },
    #[error(
        "metrics: listen = {addr} is not a loopback address, and the endpoint has no \
         authentication: listen on 127.0.0.1:PORT or [::1]:PORT and scrape through a tunnel or \
         a reverse proxy, or set metrics.allow_non_loopback = true to expose it on purpose"
    )]
    NotLoopback { addr: SocketAddr },
    #[error(
        "metrics: cannot listen on {addr}: the address is already in use (another tickloop or \
         exporter listens there; `ss -ltnp 'sport = :{port}'` shows which): choose a free port \
         in metrics.listen"
    )]
    AddrInUse { addr: SocketAddr, port: u16 },
    #[error(
        "metrics: cannot listen on {addr}: permission denied (ports below 1024 need \
         CAP_NET_BIND_SERVICE): choose a port of 1024 or more in metrics.listen"
    )]
    PortNeedsPrivilege { addr: SocketAddr },
    #[error("metrics: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("metrics: {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// A short name carried inline (a ring's file name, an adapter's name): at most
/// [`LABEL_BYTES`] bytes, no allocation. Rendered as UTF-8 (invalid bytes as U+FFFD), escaped.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Label {
    len: u8,
    bytes: [u8; LABEL_BYTES],
}

impl Label {
    /// `name`, cut at a character boundary to at most [`LABEL_BYTES`] bytes.
    pub fn new(name: &str) -> Label {
        let mut end = name.len().min(LABEL_BYTES);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        Label::from_bytes(&name.as_bytes()[..end])
    }

    /// Raw bytes, up to the first NUL and at most [`LABEL_BYTES`] (a `[u8; 32]` name field).
    pub fn from_bytes(bytes: &[u8]) -> Label {
        let bytes = &bytes[..bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())];
        let len = bytes.len().min(LABEL_BYTES);
        let mut label = Label::default();
        label.bytes[..len].copy_from_slice(&bytes[..len]);
        label.len = len as u8;
        label
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// A latency distribution in nanoseconds, as exported: count, sum, p50, p99 and max.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quantiles {
    pub count: u64,
    /// Sum of all values (from a histogram: its mean times its count, to its precision).
    pub sum_ns: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

impl Quantiles {
    /// From an hdrhistogram of nanoseconds (such as [`Periodic::lateness`]); no allocation.
    pub fn from_histogram(h: &Histogram<u64>) -> Quantiles {
        if h.is_empty() {
            return Quantiles::default();
        }
        Quantiles {
            count: h.len(),
            sum_ns: (h.mean() * h.len() as f64) as u64,
            p50_ns: h.value_at_quantile(0.5),
            p99_ns: h.value_at_quantile(0.99),
            max_ns: h.max(),
        }
    }
}

/// One periodic timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimerSnapshot {
    pub timer: TimerId,
    /// How late each firing ran.
    pub lateness: Quantiles,
    /// How long the app took for each firing.
    pub took: Quantiles,
    /// Firings that broke the budget.
    pub overruns: u64,
    /// Whole periods skipped (fired over a period late).
    pub skipped: u64,
}

impl TimerSnapshot {
    /// From the loop's periodic table; `None` for an unused entry.
    pub fn from_periodic(p: &Periodic) -> Option<TimerSnapshot> {
        Some(TimerSnapshot {
            timer: p.timer?,
            lateness: Quantiles::from_histogram(&p.lateness),
            took: Quantiles::from_histogram(&p.took),
            overruns: p.overruns,
            skipped: p.skipped,
        })
    }
}

/// One ring the loop reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingSnapshot {
    pub source: SourceId,
    /// The ring's name (its file name under /dev/shm).
    pub name: Label,
    /// Candles published but not read yet.
    pub lag: u64,
    /// Candles lost to overruns (the writer lapped the reader).
    pub lost: u64,
    /// Overruns (each lost one or more candles).
    pub overruns: u64,
    pub writer_alive: bool,
}

/// One broker or feed adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdapterSnapshot {
    pub name: Label,
    /// The adapter's state as its numeric code (the adapter module defines the codes).
    pub state: u8,
}

/// What the loop exports: a plain struct of fixed size, filled by the loop (no allocation to
/// fill or copy it) and handed over with [`MetricsServer::set_snapshot`]. The lists are
/// fixed arrays with a count; entries beyond the count are ignored, and within a list an
/// entry whose key (timer id, ring source, adapter name) repeats an earlier one is skipped,
/// so the exposition never has duplicate series.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub uptime_ns: Nanos,
    pub iterations: u64,
    pub events: u64,
    pub candles: u64,
    pub candles_lost: u64,
    /// How late the loop serves what is due (from a histogram the loop keeps).
    pub loop_lag: Quantiles,
    pub timers: [TimerSnapshot; MAX_TIMERS],
    pub timer_count: usize,
    pub rings: [RingSnapshot; MAX_RINGS],
    pub ring_count: usize,
    /// The strategy's order counters, the same as the status file's `trading` and the
    /// counts of their telemetry events (`order_submitted`, `fill`, `order_rejected`,
    /// `order_cancelled`, `risk_denied`, `fill_fault`).
    pub orders_submitted: u64,
    pub fills: u64,
    pub orders_rejected: u64,
    pub orders_cancelled: u64,
    pub orders_denied: u64,
    pub fill_faults: u64,
    pub telemetry_emitted: u64,
    pub telemetry_dropped: u64,
    pub telemetry_degraded: bool,
    pub adapters: [AdapterSnapshot; MAX_ADAPTERS],
    pub adapter_count: usize,
    /// The config generation in force and the configs rejected since start (the loop's
    /// counts of its `config_applied` and `config_rejected` events).
    pub config_generation: u64,
    pub config_rejected: u64,
}

impl Snapshot {
    /// Copy the loop's counters (iterations, events, candles, candles lost).
    pub fn set_loop_stats(&mut self, stats: &LoopStats) {
        self.iterations = stats.iterations;
        self.events = stats.events;
        self.candles = stats.candles;
        self.candles_lost = stats.candles_lost;
    }

    /// Empty the timer, ring and adapter lists (before filling them again).
    pub fn clear_lists(&mut self) {
        self.timer_count = 0;
        self.ring_count = 0;
        self.adapter_count = 0;
    }

    /// Add a timer; false (not added) when the list is full.
    pub fn push_timer(&mut self, timer: TimerSnapshot) -> bool {
        push(&mut self.timers, &mut self.timer_count, timer)
    }

    /// Add a ring; false (not added) when the list is full.
    pub fn push_ring(&mut self, ring: RingSnapshot) -> bool {
        push(&mut self.rings, &mut self.ring_count, ring)
    }

    /// Add an adapter; false (not added) when the list is full.
    pub fn push_adapter(&mut self, adapter: AdapterSnapshot) -> bool {
        push(&mut self.adapters, &mut self.adapter_count, adapter)
    }

    pub fn timers(&self) -> &[TimerSnapshot] {
        &self.timers[..self.timer_count.min(MAX_TIMERS)]
    }

    pub fn rings(&self) -> &[RingSnapshot] {
        &self.rings[..self.ring_count.min(MAX_RINGS)]
    }

    pub fn adapters(&self) -> &[AdapterSnapshot] {
        &self.adapters[..self.adapter_count.min(MAX_ADAPTERS)]
    }
}

fn push<T, const N: usize>(list: &mut [T; N], count: &mut usize, item: T) -> bool {
    if *count >= N {
        return false;
    }
    list[*count] = item;
    *count += 1;
    true
}

// ---------------------------------------------------------------------------------------
// Rendering: Prometheus text exposition format 0.0.4.

/// The labels of one series.
#[derive(Clone, Copy)]
enum Labels<'a> {
    None,
    Timer(TimerId),
    Ring(&'a RingSnapshot),
    Adapter(&'a Label),
    Code(u16),
}

/// A sample's value.
#[derive(Clone, Copy)]
enum Value {
    Int(u64),
    /// Nanoseconds, written as seconds.
    Secs(u64),
    Bool(bool),
}

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
    match labels {
        Labels::None => {}
        Labels::Timer(timer) => {
            label(out, first, "timer")?;
            write!(out, "{timer}\"")?;
        }
        Labels::Ring(ring) => {
            label(out, first, "ring")?;
            write_label_value(out, ring.name.as_bytes())?;
            out.write_all(b"\"")?;
            label(out, first, "source")?;
            write!(out, "{}\"", ring.source)?;
        }
        Labels::Adapter(name) => {
            label(out, first, "adapter")?;
            write_label_value(out, name.as_bytes())?;
            out.write_all(b"\"")?;
        }
        Labels::Code(code) => {
            label(out, first, "code")?;
            write!(out, "{code}\"")?;
        }
    }
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
        Value::Bool(b) => out.write_all(if b { b"1" } else { b"0" })?,
        Value::Secs(ns) => write_seconds(out, ns)?,
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
    let mut digits = [b'0'; 10];
    digits[0] = b'.';
    let mut f = frac;
    for d in digits[1..].iter_mut().rev() {
        *d = b'0' + (f % 10) as u8;
        f /= 10;
    }
    let mut end = digits.len();
    while digits[end - 1] == b'0' {
        end -= 1;
    }
    out.write_all(&digits[..end])
}

/// A label value: UTF-8 (an invalid sequence becomes U+FFFD), with `\`, `"` and newline
/// escaped as the exposition format requires.
fn write_label_value(out: &mut dyn Write, bytes: &[u8]) -> io::Result<()> {
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid().as_bytes();
        let mut start = 0;
        for (i, &b) in valid.iter().enumerate() {
            let escaped: &[u8] = match b {
                b'\\' => b"\\\\",
                b'"' => b"\\\"",
                b'\n' => b"\\n",
                _ => continue,
            };
            out.write_all(&valid[start..i])?;
            out.write_all(escaped)?;
            start = i + 1;
        }
        out.write_all(&valid[start..])?;
        if !chunk.invalid().is_empty() {
            out.write_all("\u{FFFD}".as_bytes())?;
        }
    }
    Ok(())
}

/// What one family says about one entry of a list (or about the snapshot).
enum Metric<'a> {
    Summary(&'a Quantiles),
    Value(Value),
}

/// A family: name, type, help, and how to get its value from a `T`.
type Family<T> = (
    &'static str,
    &'static str,
    &'static str,
    fn(&T) -> Metric<'_>,
);

/// Render `families`, each over every entry of `items` whose key (`same`) did not appear
/// before it. Nothing for an empty list.
fn families<T>(
    out: &mut dyn Write,
    items: &[T],
    same: fn(&T, &T) -> bool,
    labels: fn(&T) -> Labels<'_>,
    families: &[Family<T>],
) -> io::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    for &(name, kind, help, get) in families {
        family(out, name, kind, help)?;
        for (i, item) in items.iter().enumerate() {
            if items[..i].iter().any(|earlier| same(earlier, item)) {
                continue;
            }
            match get(item) {
                Metric::Summary(q) => summary(out, name, labels(item), q)?,
                Metric::Value(v) => sample(out, name, "", labels(item), None, v)?,
            }
        }
    }
    Ok(())
}

fn summary(out: &mut dyn Write, name: &str, labels: Labels<'_>, q: &Quantiles) -> io::Result<()> {
    sample(out, name, "", labels, Some("0.5"), Value::Secs(q.p50_ns))?;
    sample(out, name, "", labels, Some("0.99"), Value::Secs(q.p99_ns))?;
    sample(out, name, "_sum", labels, None, Value::Secs(q.sum_ns))?;
    sample(out, name, "_count", labels, None, Value::Int(q.count))
}

const LOOP_FAMILIES: &[Family<Snapshot>] = &[
    (
        "tickloop_uptime_seconds",
        "gauge",
        "Time since the loop started.",
        |s| Metric::Value(Value::Secs(s.uptime_ns)),
    ),
    (
        "tickloop_loop_iterations_total",
        "counter",
        "Iterations of the loop.",
        |s| Metric::Value(Value::Int(s.iterations)),
    ),
    (
        "tickloop_events_total",
        "counter",
        "Events dispatched to the app.",
        |s| Metric::Value(Value::Int(s.events)),
    ),
    (
        "tickloop_candles_total",
        "counter",
        "Candles read from all rings.",
        |s| Metric::Value(Value::Int(s.candles)),
    ),
    (
        "tickloop_candles_lost_total",
        "counter",
        "Candles lost on all rings because a writer lapped the loop.",
        |s| Metric::Value(Value::Int(s.candles_lost)),
    ),
    (
        "tickloop_loop_lag_seconds",
        "summary",
        "How late the loop served what was due, since start.",
        |s| Metric::Summary(&s.loop_lag),
    ),
    (
        "tickloop_loop_lag_max_seconds",
        "gauge",
        "The largest loop lag since start.",
        |s| Metric::Value(Value::Secs(s.loop_lag.max_ns)),
    ),
];

const TIMER_FAMILIES: &[Family<TimerSnapshot>] = &[
    (
        "tickloop_timer_lateness_seconds",
        "summary",
        "How late each firing of a periodic timer ran, since start.",
        |t| Metric::Summary(&t.lateness),
    ),
    (
        "tickloop_timer_lateness_max_seconds",
        "gauge",
        "The largest lateness of a periodic timer's firings, since start.",
        |t| Metric::Value(Value::Secs(t.lateness.max_ns)),
    ),
    (
        "tickloop_timer_run_seconds",
        "summary",
        "How long the app took for each firing of a periodic timer, since start.",
        |t| Metric::Summary(&t.took),
    ),
    (
        "tickloop_timer_run_max_seconds",
        "gauge",
        "The longest the app took for a firing of a periodic timer, since start.",
        |t| Metric::Value(Value::Secs(t.took.max_ns)),
    ),
    (
        "tickloop_timer_overruns_total",
        "counter",
        "Firings of a periodic timer that broke its budget.",
        |t| Metric::Value(Value::Int(t.overruns)),
    ),
    (
        "tickloop_timer_skipped_periods_total",
        "counter",
        "Whole periods a periodic timer skipped because it fired over a period late.",
        |t| Metric::Value(Value::Int(t.skipped)),
    ),
];

const RING_FAMILIES: &[Family<RingSnapshot>] = &[
    (
        "tickloop_ring_lag_candles",
        "gauge",
        "Candles published on a ring but not read by the loop yet.",
        |r| Metric::Value(Value::Int(r.lag)),
    ),
    (
        "tickloop_ring_lost_candles_total",
        "counter",
        "Candles lost on a ring because its writer lapped the loop.",
        |r| Metric::Value(Value::Int(r.lost)),
    ),
    (
        "tickloop_ring_overruns_total",
        "counter",
        "Times a ring's writer lapped the loop (each lost one or more candles).",
        |r| Metric::Value(Value::Int(r.overruns)),
    ),
    (
        "tickloop_ring_writer_alive",
        "gauge",
        "1 while a ring's writer process is alive.",
        |r| Metric::Value(Value::Bool(r.writer_alive)),
    ),
];

const BUSINESS_FAMILIES: &[Family<Snapshot>] = &[
    (
        "tickloop_orders_submitted_total",
        "counter",
        "Orders submitted to brokers.",
        |s| Metric::Value(Value::Int(s.orders_submitted)),
    ),
    (
        "tickloop_fills_total",
        "counter",
        "Fills booked (each partial fill counts one).",
        |s| Metric::Value(Value::Int(s.fills)),
    ),
    (
        "tickloop_orders_rejected_total",
        "counter",
        "Orders rejected (by the venue, the adapter host or the paper broker).",
        |s| Metric::Value(Value::Int(s.orders_rejected)),
    ),
    (
        "tickloop_orders_cancelled_total",
        "counter",
        "Orders cancelled or expired.",
        |s| Metric::Value(Value::Int(s.orders_cancelled)),
    ),
    (
        "tickloop_orders_denied_total",
        "counter",
        "Order intents risk denied before they were sent.",
        |s| Metric::Value(Value::Int(s.orders_denied)),
    ),
    (
        "tickloop_fill_faults_total",
        "counter",
        "Fills an adapter reported that were not believed (overfill, duplicate, bad number, unknown order); the book did not move.",
        |s| Metric::Value(Value::Int(s.fill_faults)),
    ),
    (
        "tickloop_telemetry_emitted_total",
        "counter",
        "Telemetry records emitted.",
        |s| Metric::Value(Value::Int(s.telemetry_emitted)),
    ),
    (
        "tickloop_telemetry_dropped_total",
        "counter",
        "Telemetry records dropped because the telemetry channel was full.",
        |s| Metric::Value(Value::Int(s.telemetry_dropped)),
    ),
    (
        "tickloop_telemetry_degraded",
        "gauge",
        "1 while telemetry is degraded (dropping records).",
        |s| Metric::Value(Value::Bool(s.telemetry_degraded)),
    ),
];

const ADAPTER_FAMILIES: &[Family<AdapterSnapshot>] = &[(
    "tickloop_adapter_state",
    "gauge",
    "An adapter's state as its numeric code (the adapter module defines the codes).",
    |a| Metric::Value(Value::Int(a.state as u64)),
)];

const CONFIG_FAMILIES: &[Family<Snapshot>] = &[
    (
        "tickloop_config_generation",
        "gauge",
        "Generation of the configuration in force (incremented by each reload).",
        |s| Metric::Value(Value::Int(s.config_generation)),
    ),
    (
        "tickloop_config_rejected_total",
        "counter",
        "Configurations rejected (invalid, unreadable, missing, or refused by the app).",
        |s| Metric::Value(Value::Int(s.config_rejected)),
    ),
];

/// Render `snapshot` in the Prometheus text exposition format 0.0.4: every family with its
/// `# HELP` and `# TYPE`, names prefixed `tickloop_`, times in seconds, counters ending in
/// `_total`, label values escaped. Allocates nothing; an empty list renders no family.
pub fn render(snapshot: &Snapshot, out: &mut impl Write) -> io::Result<()> {
    let out: &mut dyn Write = out;
    let one = std::slice::from_ref(snapshot);
    let never = |_: &Snapshot, _: &Snapshot| false;
    let none = |_: &Snapshot| Labels::None;
    families(out, one, never, none, LOOP_FAMILIES)?;
    families(
        out,
        snapshot.timers(),
        |a, b| a.timer == b.timer,
        |t| Labels::Timer(t.timer),
        TIMER_FAMILIES,
    )?;
    families(
        out,
        snapshot.rings(),
        |a, b| a.source == b.source,
        |r| Labels::Ring(r),
        RING_FAMILIES,
    )?;
    families(out, one, never, none, BUSINESS_FAMILIES)?;
    families(
        out,
        snapshot.adapters(),
        |a, b| a.name == b.name,
        |a| Labels::Adapter(&a.name),
        ADAPTER_FAMILIES,
    )?;
    families(out, one, never, none, CONFIG_FAMILIES)
}

/// The endpoint's own counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MetricsServerStats {
    /// Connections accepted (including those refused for lack of a slot).
    pub accepted: u64,
    /// Connections open now.
    pub open: u32,
    /// Connections beyond `max_connections`: answered 503 and closed at once.
    pub refused: u64,
    /// Connections closed because their exchange outlasted `request_timeout_ms`.
    pub timed_out: u64,
    /// Connections the client closed or reset before a complete request.
    pub incomplete: u64,
    pub responses_200: u64,
    pub responses_400: u64,
    pub responses_404: u64,
    pub responses_405: u64,
    /// Timed out while the request was still coming (sent best-effort before closing).
    pub responses_408: u64,
    /// The rendering did not fit the response buffer (never expected).
    pub responses_500: u64,
    /// Writes that left part of a response for the next writable readiness.
    pub partial_writes: u64,
    pub bytes_sent: u64,
    /// accept(2) failures other than EAGAIN (EMFILE, ENFILE...); retried 100 ms later.
    pub accept_errors: u64,
    /// Failures of the private epoll or its timerfd (each is retried on the next call).
    pub poll_errors: u64,
    /// Calls that served the private epoll.
    pub polls: u64,
}

/// Render the endpoint's own counters (appended to every scrape).
pub fn render_server_stats(stats: &MetricsServerStats, out: &mut impl Write) -> io::Result<()> {
    let out: &mut dyn Write = out;
    families(
        out,
        std::slice::from_ref(stats),
        |_, _| false,
        |_| Labels::None,
        SERVER_FAMILIES,
    )?;
    let responses = [
        (200, stats.responses_200),
        (400, stats.responses_400),
        (404, stats.responses_404),
        (405, stats.responses_405),
        (408, stats.responses_408),
        (500, stats.responses_500),
    ];
    families(
        out,
        &responses,
        |a, b| a.0 == b.0,
        |r| Labels::Code(r.0),
        &[(
            "tickloop_metrics_responses_total",
            "counter",
            "Responses of the metrics endpoint by HTTP status code.",
            |r| Metric::Value(Value::Int(r.1)),
        )],
    )
}

const SERVER_FAMILIES: &[Family<MetricsServerStats>] = &[
    (
        "tickloop_metrics_connections_total",
        "counter",
        "Connections accepted by the metrics endpoint.",
        |s| Metric::Value(Value::Int(s.accepted)),
    ),
    (
        "tickloop_metrics_connections_refused_total",
        "counter",
        "Connections beyond max_connections, answered 503 and closed.",
        |s| Metric::Value(Value::Int(s.refused)),
    ),
    (
        "tickloop_metrics_connections_timed_out_total",
        "counter",
        "Connections closed because they outlasted request_timeout_ms.",
        |s| Metric::Value(Value::Int(s.timed_out)),
    ),
    (
        "tickloop_metrics_connections_open",
        "gauge",
        "Connections open on the metrics endpoint.",
        |s| Metric::Value(Value::Int(s.open as u64)),
    ),
];

// ---------------------------------------------------------------------------------------
// The server.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the request.
    Reading,
    /// Writing `response[out_start..out_end]`.
    Writing,
    /// Response sent and write side shut: discarding input until the client closes.
    Lingering,
}

struct Conn {
    stream: Option<TcpStream>,
    phase: Phase,
    /// When it was accepted, and when its exchange must be over (CLOCK_MONOTONIC ns).
    accepted_at: Nanos,
    deadline: Nanos,
    request: Box<[u8]>,
    request_len: usize,
    response: Box<[u8]>,
    out_start: usize,
    out_end: usize,
}

/// What a complete (or impossible) request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    BadMethod,
    BadRequest,
}

/// The metrics endpoint. See the module documentation.
pub struct MetricsServer {
    poll: Poll,
    events: Events,
    /// Tokens of the last poll, copied out of `events` (preallocated to its capacity).
    tokens: Vec<usize>,
    listener: TcpListener,
    local_addr: SocketAddr,
    timer: Timerfd,
    conns: Vec<Conn>,
    /// A small buffer for the 503 sent to connections beyond `max_connections`.
    scratch: Box<[u8]>,
    timeout_ns: Nanos,
    send_buffer: u32,
    /// The accept budget of one call ran out before EAGAIN: accept again on the next call.
    listener_pending: bool,
    /// Every slot is held by a young connection: the backlog waits (see [`ADMIT_WAIT_NS`]).
    listener_waiting: bool,
    /// After an accept error: when to try again.
    accept_retry_at: Option<Nanos>,
    snapshot: Snapshot,
    stats: MetricsServerStats,
    /// Where the snapshot's adapter list comes from (see [`MetricsServer::set_adapters`]).
    adapters: Option<crate::adapter::AdapterHandle>,
    /// Where the order counters come from (see [`MetricsServer::set_trading`]).
    trading: Option<crate::status::SharedTrading>,
}

impl MetricsServer {
    /// Open the endpoint: `Ok(None)` when `config.listen` is not set. Everything it will ever
    /// use is allocated here. A non-loopback address (without `allow_non_loopback`), a busy
    /// port or a privileged one is refused with a message naming the fix.
    pub fn bind(config: &MetricsConfig) -> Result<Option<MetricsServer>, MetricsError> {
        config.validate()?;
        let Some(addr) = config.listen else {
            return Ok(None);
        };
        let listener = TcpListener::bind(addr).map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse => MetricsError::AddrInUse {
                addr,
                port: addr.port(),
            },
            io::ErrorKind::PermissionDenied => MetricsError::PortNeedsPrivilege { addr },
            _ => MetricsError::Bind { addr, source: e },
        })?;
        let setup = |what: &'static str| move |source| MetricsError::Setup { what, source };
        let local_addr = listener
            .local_addr()
            .map_err(setup("reading the listening address"))?;
        listener
            .set_nonblocking(true)
            .map_err(setup("making the listener non-blocking"))?;
        let poll = Poll::new().map_err(setup("creating its epoll instance"))?;
        let timer = Timerfd::new().map_err(setup("creating its timerfd"))?;
        poll.registry()
            .register(
                &mut SourceFd(&listener.as_raw_fd()),
                LISTENER,
                mio::Interest::READABLE,
            )
            .map_err(setup("registering the listener"))?;
        poll.registry()
            .register(
                &mut SourceFd(&timer.fd.as_raw_fd()),
                TIMER,
                mio::Interest::READABLE,
            )
            .map_err(setup("registering its timerfd"))?;
        let slots = config.max_connections as usize;
        let conns = (0..slots)
            .map(|_| Conn {
                stream: None,
                phase: Phase::Reading,
                accepted_at: 0,
                deadline: 0,
                request: vec![0u8; config.max_request_bytes as usize].into_boxed_slice(),
                request_len: 0,
                response: vec![0u8; RESPONSE_CAPACITY].into_boxed_slice(),
                out_start: 0,
                out_end: 0,
            })
            .collect();
        let capacity = slots + FIRST_CONN;
        Ok(Some(MetricsServer {
            poll,
            events: Events::with_capacity(capacity),
            tokens: Vec::with_capacity(capacity),
            listener,
            local_addr,
            timer,
            conns,
            scratch: vec![0u8; 512].into_boxed_slice(),
            timeout_ns: config.request_timeout_ms as Nanos * 1_000_000,
            send_buffer: config.send_buffer_bytes,
            listener_pending: false,
            listener_waiting: false,
            accept_retry_at: None,
            snapshot: Snapshot::default(),
            stats: MetricsServerStats::default(),
            adapters: None,
            trading: None,
        }))
    }

    /// Export the adapters of this host (name and state), refreshed with the rest of the
    /// snapshot on every tick of [`SharedMetrics`].
    pub fn set_adapters(&mut self, adapters: crate::adapter::AdapterHandle) {
        self.adapters = Some(adapters);
    }

    /// Export a strategy's order counters, the ones the status file shows.
    pub fn set_trading(&mut self, trading: crate::status::SharedTrading) {
        self.trading = Some(trading);
    }

    /// The address it listens on (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The listening socket's fd (registered on the private epoll; see [`FdSource::fd`] for
    /// the one fd the loop registers).
    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Replace the snapshot that requests render (a copy of fixed size: no allocation).
    pub fn set_snapshot(&mut self, snapshot: &Snapshot) {
        self.snapshot.clone_from(snapshot);
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn stats(&self) -> MetricsServerStats {
        self.stats
    }

    /// Serve everything ready on the private epoll (zero timeout): accept, read, answer,
    /// write, expire. Returns true if work is left (the accept budget ran out, or the poll
    /// filled its list): call again soon without waiting for readiness.
    pub fn serve(&mut self, now_ns: Nanos) -> bool {
        self.stats.polls += 1;
        let mut full = false;
        match self
            .poll
            .poll(&mut self.events, Some(std::time::Duration::ZERO))
        {
            Ok(()) => {
                self.tokens.clear();
                for event in self.events.iter() {
                    self.tokens.push(event.token().0);
                }
                full = self.tokens.len() == self.tokens.capacity();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => full = true,
            Err(_) => {
                self.stats.poll_errors += 1;
                self.tokens.clear();
            }
        }
        let mut accept = self.listener_pending
            || self.listener_waiting
            || self.accept_retry_at.is_some_and(|at| at <= now_ns);
        for i in 0..self.tokens.len() {
            match self.tokens[i] {
                t if t == LISTENER.0 => accept = true,
                t if t == TIMER.0 => self.timer.drain(),
                t => self.serve_conn(t - FIRST_CONN),
            }
        }
        // Expire first: a timed-out connection's slot can take a waiting one.
        self.expire(now_ns);
        if accept {
            self.on_accept(now_ns);
        }
        full || self.listener_pending
    }

    /// Accept until EAGAIN (or 8 connections, then [`MetricsServer::serve`] asks to be
    /// called again). Each connection gets a free slot and is served at once (its request may
    /// already be there). With every slot held: while the youngest holder is younger than
    /// 50 ms the rest wait in the backlog; otherwise each is answered 503 and
    /// closed at once, so the backlog never fills. Returns how many were accepted.
    pub fn on_accept(&mut self, now_ns: Nanos) -> usize {
        self.listener_pending = false;
        self.listener_waiting = false;
        self.accept_retry_at = None;
        let mut accepted = 0;
        loop {
            if accepted == ACCEPTS_PER_CALL {
                self.listener_pending = true;
                break;
            }
            if self.free_slot().is_none()
                && self
                    .youngest_accept()
                    .is_some_and(|at| at.saturating_add(ADMIT_WAIT_NS) > now_ns)
            {
                self.listener_waiting = true;
                break;
            }
            match self.listener.accept() {
                Ok((stream, _peer)) => {
                    accepted += 1;
                    self.stats.accepted += 1;
                    self.admit(stream, now_ns);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(_) => {
                    // EMFILE, ENFILE, ENOBUFS: the connection stays in the backlog; try
                    // again a little later rather than spin.
                    self.stats.accept_errors += 1;
                    self.accept_retry_at = Some(now_ns + ACCEPT_RETRY_NS);
                    break;
                }
            }
        }
        self.rearm();
        accepted
    }

    /// Close every connection whose exchange outlasted `request_timeout_ms`. One still
    /// sending its request gets a best-effort 408 first. Called by [`MetricsServer::serve`]
    /// (the timerfd wakes it at the earliest deadline); the loop may call it on its tick too.
    pub fn expire(&mut self, now_ns: Nanos) {
        for slot in 0..self.conns.len() {
            let conn = &mut self.conns[slot];
            let Some(stream) = conn.stream.as_ref() else {
                continue;
            };
            if conn.deadline > now_ns {
                continue;
            }
            if conn.phase == Phase::Reading {
                let n = simple_response(
                    &mut conn.response,
                    408,
                    "Request Timeout",
                    "",
                    "request timeout\n",
                );
                // One non-blocking write to an idle socket: it takes these few bytes or not.
                if (&*stream).write(&conn.response[..n]).is_ok() {
                    self.stats.responses_408 += 1;
                }
            }
            self.stats.timed_out += 1;
            self.close(slot);
        }
        self.rearm();
    }

    /// Put an accepted connection in a free slot (and serve it now), or refuse it.
    fn admit(&mut self, stream: TcpStream, now_ns: Nanos) {
        if stream.set_nonblocking(true).is_err() {
            self.stats.accept_errors += 1;
            return; // dropped: closed
        }
        if self.send_buffer > 0 {
            set_send_buffer(&stream, self.send_buffer);
        }
        let Some(slot) = self.free_slot() else {
            self.refuse(stream);
            return;
        };
        let registered = self.poll.registry().register(
            &mut SourceFd(&stream.as_raw_fd()),
            Token(FIRST_CONN + slot),
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        );
        if registered.is_err() {
            self.stats.poll_errors += 1;
            return; // dropped: closed
        }
        let conn = &mut self.conns[slot];
        conn.stream = Some(stream);
        conn.phase = Phase::Reading;
        conn.accepted_at = now_ns;
        conn.deadline = now_ns.saturating_add(self.timeout_ns);
        conn.request_len = 0;
        conn.out_start = 0;
        conn.out_end = 0;
        self.stats.open += 1;
        self.serve_conn(slot);
    }

    /// No slot: answer 503 with one non-blocking write, read what already arrived (so the
    /// close is a FIN, not a reset that could destroy the answer), and close.
    fn refuse(&mut self, stream: TcpStream) {
        self.stats.refused += 1;
        let n = simple_response(
            &mut self.scratch,
            503,
            "Service Unavailable",
            "Retry-After: 1\r\n",
            "busy\n",
        );
        let _ = (&stream).write(&self.scratch[..n]);
        let _ = stream.shutdown(Shutdown::Write);
        let _ = (&stream).read(&mut self.scratch);
    }

    /// Drive one connection's state machine as far as the socket allows.
    fn serve_conn(&mut self, slot: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            let Some(stream) = conn.stream.as_ref() else {
                return;
            };
            match conn.phase {
                Phase::Reading => {
                    let mut eof = false;
                    while conn.request_len < conn.request.len() {
                        match (&*stream).read(&mut conn.request[conn.request_len..]) {
                            Ok(0) => {
                                eof = true;
                                break;
                            }
                            Ok(n) => conn.request_len += n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => {
                                self.stats.incomplete += 1;
                                self.close(slot);
                                return;
                            }
                        }
                    }
                    let route = match route(&conn.request[..conn.request_len]) {
                        Some(route) => route,
                        // Incomplete, and no room left for the rest: too large.
                        None if conn.request_len == conn.request.len() => Route::BadRequest,
                        None if eof => {
                            self.stats.incomplete += 1;
                            self.close(slot);
                            return;
                        }
                        None => return, // wait for more
                    };
                    self.respond(slot, route);
                }
                Phase::Writing => {
                    while conn.out_start < conn.out_end {
                        match (&*stream).write(&conn.response[conn.out_start..conn.out_end]) {
                            Ok(0) => {
                                self.close(slot);
                                return;
                            }
                            Ok(n) => {
                                conn.out_start += n;
                                self.stats.bytes_sent += n as u64;
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                self.stats.partial_writes += 1;
                                return; // the rest on the next writable edge
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => {
                                self.close(slot);
                                return;
                            }
                        }
                    }
                    let _ = stream.shutdown(Shutdown::Write);
                    conn.phase = Phase::Lingering;
                }
                Phase::Lingering => {
                    let mut drained = 0;
                    loop {
                        match (&*stream).read(&mut conn.request) {
                            Ok(0) => break,
                            Ok(n) => {
                                drained += n;
                                if drained > LINGER_DRAIN_MAX {
                                    break;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                    // The client closed (or keeps sending after its answer): done.
                    self.close(slot);
                    return;
                }
            }
        }
    }

    /// Fill the slot's response for `route` and move it to writing.
    fn respond(&mut self, slot: usize, route: Route) {
        let conn = &mut self.conns[slot];
        let (start, end) = match route {
            Route::Metrics => {
                self.stats.responses_200 += 1;
                match render_response(&self.snapshot, &self.stats, &mut conn.response) {
                    Some(range) => range,
                    None => {
                        self.stats.responses_200 -= 1;
                        self.stats.responses_500 += 1;
                        let body = "the metrics did not fit the response buffer\n";
                        let n = simple_response(
                            &mut conn.response,
                            500,
                            "Internal Server Error",
                            "",
                            body,
                        );
                        (0, n)
                    }
                }
            }
            Route::NotFound => {
                self.stats.responses_404 += 1;
                (
                    0,
                    simple_response(
                        &mut conn.response,
                        404,
                        "Not Found",
                        "",
                        "not found: the metrics are at /metrics\n",
                    ),
                )
            }
            Route::BadMethod => {
                self.stats.responses_405 += 1;
                (
                    0,
                    simple_response(
                        &mut conn.response,
                        405,
                        "Method Not Allowed",
                        "Allow: GET\r\n",
                        "method not allowed: use GET\n",
                    ),
                )
            }
            Route::BadRequest => {
                self.stats.responses_400 += 1;
                (
                    0,
                    simple_response(&mut conn.response, 400, "Bad Request", "", "bad request\n"),
                )
            }
        };
        conn.out_start = start;
        conn.out_end = end;
        conn.phase = Phase::Writing;
    }

    fn close(&mut self, slot: usize) {
        let conn = &mut self.conns[slot];
        if let Some(stream) = conn.stream.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&stream.as_raw_fd()));
            self.stats.open -= 1;
        }
        conn.request_len = 0;
        conn.out_start = 0;
        conn.out_end = 0;
    }

    fn free_slot(&self) -> Option<usize> {
        self.conns.iter().position(|c| c.stream.is_none())
    }

    fn youngest_accept(&self) -> Option<Nanos> {
        self.conns
            .iter()
            .filter(|c| c.stream.is_some())
            .map(|c| c.accepted_at)
            .max()
    }

    /// Arm the timerfd for the earliest deadline (no system call if already armed for it).
    fn rearm(&mut self) {
        let stop_waiting = if self.listener_waiting {
            self.youngest_accept()
                .map(|at| at.saturating_add(ADMIT_WAIT_NS))
        } else {
            None
        };
        let earliest = self
            .conns
            .iter()
            .filter(|c| c.stream.is_some())
            .map(|c| c.deadline)
            .chain(self.accept_retry_at)
            .chain(stop_waiting)
            .min();
        if let Some(deadline) = earliest {
            if self.timer.arm(deadline).is_err() {
                self.stats.poll_errors += 1;
            }
        }
    }
}

/// The loop registers the private epoll's fd (readable when anything inside is ready) and
/// calls [`FdSource::on_ready`] on it; the server emits no events.
impl FdSource for MetricsServer {
    fn fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn on_ready(&mut self, _ready: Readiness, _emit: &mut dyn FnMut(EventKind) -> bool) -> bool {
        self.serve(monotonic_now())
    }
}

/// SO_SNDBUF (best effort: the kernel clamps it, and a failure leaves its default).
fn set_send_buffer(stream: &TcpStream, bytes: u32) {
    let value = bytes.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: a valid socket fd and a c_int option value of the size given.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Parse a request: `None` while incomplete; otherwise where it goes.
fn route(request: &[u8]) -> Option<Route> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(request) {
        Ok(httparse::Status::Partial) => None,
        Err(_) => Some(Route::BadRequest),
        Ok(httparse::Status::Complete(_)) => {
            let (Some(method), Some(path)) = (parsed.method, parsed.path) else {
                return Some(Route::BadRequest);
            };
            if method != "GET" {
                return Some(Route::BadMethod);
            }
            let path = path.split('?').next().unwrap_or("");
            Some(match path {
                "/metrics" | "/" => Route::Metrics,
                _ => Route::NotFound,
            })
        }
    }
}

/// A response with a short plain-text body, written at the start of `buf`; returns its
/// length. `extra` is whole header lines (each ending in CRLF).
fn simple_response(buf: &mut [u8], code: u16, reason: &str, extra: &str, body: &str) -> usize {
    let capacity = buf.len();
    let mut w: &mut [u8] = buf;
    let ok = write!(
        w,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    );
    debug_assert!(ok.is_ok(), "a simple response fits its buffer");
    capacity - w.len()
}

/// Render the metrics response into `buf`: the body from [`HEADER_ROOM`] on, then the
/// headers right in front of it. Returns the response's range, or `None` if it did not fit.
fn render_response(
    snapshot: &Snapshot,
    stats: &MetricsServerStats,
    buf: &mut [u8],
) -> Option<(usize, usize)> {
    let (head, body) = buf.split_at_mut(HEADER_ROOM);
    let capacity = body.len();
    let mut w: &mut [u8] = body;
    render(snapshot, &mut w).ok()?;
    render_server_stats(stats, &mut w).ok()?;
    let body_len = capacity - w.len();
    let mut header = [0u8; HEADER_ROOM];
    let mut h: &mut [u8] = &mut header;
    write!(
        h,
        "HTTP/1.1 200 OK\r\nContent-Type: {METRICS_CONTENT_TYPE}\r\nContent-Length: {body_len}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let header_len = HEADER_ROOM - h.len();
    let start = HEADER_ROOM - header_len;
    head[start..].copy_from_slice(&header[..header_len]);
    Some((start, HEADER_ROOM + body_len))
}

/// A [`MetricsServer`] shared between the loop's fd sources (it serves requests) and its
/// services (the tick refreshes the snapshot it renders). Single-threaded: `Rc<RefCell>`.
#[derive(Clone)]
pub struct SharedMetrics(pub std::rc::Rc<std::cell::RefCell<MetricsServer>>);

impl SharedMetrics {
    pub fn new(server: MetricsServer) -> SharedMetrics {
        SharedMetrics(std::rc::Rc::new(std::cell::RefCell::new(server)))
    }
}

impl FdSource for SharedMetrics {
    fn fd(&self) -> RawFd {
        self.0.borrow().fd()
    }
    fn interest(&self) -> Interest {
        self.0.borrow().interest()
    }
    fn on_ready(&mut self, ready: Readiness, emit: &mut dyn FnMut(EventKind) -> bool) -> bool {
        self.0.borrow_mut().on_ready(ready, emit)
    }
}

impl crate::event_loop::Service for SharedMetrics {
    fn tick(&mut self, view: &crate::event_loop::LoopView<'_>) {
        let mut server = self.0.borrow_mut();
        let mut snap = server.snapshot().clone();
        snap.uptime_ns = view.now.saturating_sub(view.started);
        snap.set_loop_stats(&view.stats);
        snap.config_generation = view.stats.config_generation;
        snap.config_rejected = view.stats.config_rejected;
        snap.loop_lag = Quantiles::from_histogram(view.lag);
        snap.clear_lists();
        for p in view.periodic {
            if let Some(t) = TimerSnapshot::from_periodic(p) {
                snap.push_timer(t);
            }
        }
        for (source, ring) in view.rings.iter().enumerate() {
            let r = ring.reader();
            let stats = r.stats();
            let name = r
                .path()
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            snap.push_ring(RingSnapshot {
                source: source as SourceId,
                name: Label::new(&name),
                lag: r.write_seq().saturating_sub(r.cursor()),
                lost: stats.lost,
                overruns: stats.overruns,
                writer_alive: !ring.removed(),
            });
        }
        (
            snap.telemetry_emitted,
            snap.telemetry_dropped,
            snap.telemetry_degraded,
        ) = view.telemetry;
        if let Some(t) = &server.trading {
            let t = t.borrow();
            snap.orders_submitted = t.orders;
            snap.fills = t.fills;
            snap.orders_rejected = t.rejected;
            snap.orders_cancelled = t.cancelled;
            snap.orders_denied = t.denied;
            snap.fill_faults = t.fill_faults;
        }
        if let Some(adapters) = &server.adapters {
            adapters.for_each(|name, stats| {
                snap.push_adapter(AdapterSnapshot {
                    name: Label::new(name),
                    state: stats.state.code(),
                });
            });
        }
        server.set_snapshot(&snap);
    }
}
