//! The metrics endpoint with real sockets and real clients: a server thread drives the
//! endpoint the way the loop does (its one fd registered with a real driver, `on_ready` on
//! readiness, a new snapshot every few milliseconds) while client threads speak HTTP to it.
//!
//! Checked: a GET answers 200 with valid Prometheus text (a parser here, and `promtool check
//! metrics` when it is installed); idle, half-sent and slow-reading clients never stall the
//! others and are closed at the timeout; 50 clients against 8 slots all get an answer or a
//! clean close with no fd left behind; bad requests get 400/404/405; the configuration
//! refuses non-loopback addresses and names a busy port; zero allocations while serving; and
//! the endpoint inside a real `EventLoop` on every driver.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tickloop_app::clock::{Nanos, MILLIS, SECONDS};
use tickloop_app::{App, Context, Discard, Event, EventKind};
use tickloop_runtime::alloc_count::{allocations, watch, CountingAllocator};
use tickloop_runtime::driver::{
    AnyDriver, Driver, DriverChoice, DriverOptions, Interest, Readiness, ReadyList, Token, Wait,
};
use tickloop_runtime::event_loop::{
    EventLoop, FdSource, LoopBuilder, LoopConfig, Mode, StopReason,
};
use tickloop_runtime::metrics::{
    render, AdapterSnapshot, Label, MetricsConfig, MetricsError, MetricsServer, MetricsServerStats,
    Quantiles, RingSnapshot, Snapshot, TimerSnapshot, MAX_ADAPTERS, MAX_RINGS, MAX_TIMERS,
    RESPONSE_CAPACITY,
};

// ---------------------------------------------------------------------------------------
// Allocation counting, per thread (the server thread is the one watched).

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// The tests count fds and time clients: under `cargo test` (threads) they take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------
// The server thread: the endpoint driven as the loop drives it.

/// Voluntary context switches of this thread so far: a system call that blocks (sleeps)
/// adds one; being preempted on a busy host does not (that is `ru_nivcsw`).
fn voluntary_switches() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut usage), 0);
        usage.ru_nvcsw as i64
    }
}

/// The `on_ready` calls during which the thread slept (a voluntary context switch).
///
/// A blocking read or write on a client sleeps until that client moves: in these tests
/// that is tens to hundreds of milliseconds (the stalled, half-sent and slow clients), and
/// on every call that meets such a client. The kernel itself may also sleep briefly inside
/// a non-blocking call (a contended socket or epoll lock, page reclaim): a CI run saw one
/// such sleep in 13 calls. So a few short sleeps are allowed and a long or repeated one
/// fails.
#[derive(Clone, Copy, Default, Debug)]
struct Sleeps {
    calls: u32,
    longest: Duration,
}

impl Sleeps {
    /// At most this many calls may sleep in the kernel on their own.
    const MAX_CALLS: u32 = 3;
    /// A sleep this long is a wait on a client, not the kernel's own.
    const MAX_SLEEP: Duration = Duration::from_millis(10);

    /// Around one `on_ready` call.
    fn measure<T>(&mut self, call: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let switches = voluntary_switches();
        let out = call();
        if voluntary_switches() != switches {
            self.calls += 1;
            self.longest = self.longest.max(started.elapsed());
        }
        out
    }

    fn check(&self, what: &str) {
        // qemu-user (the aarch64 CI step) sleeps inside its own emulation of system calls.
        if std::env::var_os("TICKLOOP_UNDER_QEMU").is_some() {
            eprintln!("SKIP the never-slept check under qemu-user: its syscall emulation sleeps");
            return;
        }
        assert!(
            self.calls <= Self::MAX_CALLS && self.longest < Self::MAX_SLEEP,
            "{what}: on_ready slept in a system call: {self:?} (a blocking call on a client)"
        );
    }
}

struct Report {
    stats: MetricsServerStats,
    /// The longest single `on_ready` call: the time the loop would be held (wall clock,
    /// preemption included).
    max_call: Duration,
    /// The calls that slept inside `on_ready` (a blocking call on a client would).
    blocked: Sleeps,
    calls: u64,
    /// Heap allocations on the server thread after the first 200 (when watched).
    allocations: u64,
}

struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Report>>,
}

impl Server {
    fn start(config: MetricsConfig, driver: DriverChoice, snapshot: Snapshot) -> Server {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            let mut server = MetricsServer::bind(&config)
                .expect("bind")
                .expect("listen is set");
            tx.send(server.local_addr()).unwrap();
            let options = DriverOptions {
                fd_capacity: 4,
                ready_capacity: 4,
                ..DriverOptions::default()
            };
            let (mut drv, _) = AnyDriver::open(driver, options).expect("driver");
            drv.register(server.fd(), Token(0), server.interest())
                .expect("register the endpoint's fd");
            let mut ready = ReadyList::with_capacity(4);
            let mut snapshot = snapshot;
            server.set_snapshot(&snapshot);
            let mut next_tick = drv.now();
            let mut max_call = Duration::ZERO;
            let mut calls = 0u64;
            let mut blocked = Sleeps::default();
            let mut watching = false;
            let mut serve = |server: &mut MetricsServer, readiness: Readiness| loop {
                let started = Instant::now();
                let more = blocked.measure(|| server.on_ready(readiness, &mut |_| true));
                max_call = max_call.max(started.elapsed());
                calls += 1;
                if !more {
                    break;
                }
            };
            while !stopping.load(Ordering::Relaxed) {
                let now = drv.now();
                if now >= next_tick {
                    // The loop's tick: a fresh snapshot (a copy, no allocation).
                    snapshot.iterations += 1;
                    snapshot.uptime_ns += 5 * MILLIS;
                    server.set_snapshot(&snapshot);
                    next_tick = now + 5 * MILLIS;
                }
                drv.wait(Wait::Until(next_tick.min(now + 2 * MILLIS)), &mut ready)
                    .expect("wait");
                for i in 0..ready.len() {
                    serve(&mut server, ready.get(i).unwrap());
                }
                if !watching && server.stats().responses_200 > 0 {
                    watching = true;
                    watch(true);
                }
            }
            watch(false);
            Report {
                stats: server.stats(),
                max_call,
                blocked,
                calls,
                allocations: allocations(),
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the server thread binds");
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let report = self.thread.take().unwrap().join().expect("server thread");
        eprintln!(
            "server: {:?}; {} on_ready calls, longest {:?}, slept in them: {:?}",
            report.stats, report.calls, report.max_call, report.blocked
        );
        // Never blocked on a client (see `Sleeps`). The wall-clock bound is loose: a busy
        // host preempts.
        report.blocked.check("the server thread");
        assert!(
            report.max_call < Duration::from_millis(500),
            "an on_ready call took {:?}",
            report.max_call
        );
        report
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn loopback_config() -> MetricsConfig {
    MetricsConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..MetricsConfig::default()
    }
}

/// Every driver this machine can run (io_uring may be missing: said, then skipped).
fn real_drivers() -> Vec<DriverChoice> {
    let mut all = vec![DriverChoice::Epoll];
    match AnyDriver::open(DriverChoice::IoUring, DriverOptions::default()) {
        Ok(_) => all.push(DriverChoice::IoUring),
        Err(e) => eprintln!("SKIPPING the io_uring driver in this test: {e}"),
    }
    all
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

// ---------------------------------------------------------------------------------------
// Snapshots.

fn label(bytes: &[u8]) -> Label {
    Label::from_bytes(bytes)
}

fn quantiles(base: u64) -> Quantiles {
    Quantiles {
        count: 1000 + base,
        sum_ns: 1_000_000 * base + 7,
        p50_ns: 1_500 + base,
        p99_ns: 25_000 + base,
        max_ns: 1_250_000_000 + base,
    }
}

/// Every list full; labels with quotes, backslashes, newlines and invalid UTF-8.
fn full_snapshot() -> Snapshot {
    let mut s = Snapshot {
        uptime_ns: 3_600 * SECONDS + 250 * MILLIS,
        iterations: 123_456_789,
        events: 2_000_000,
        candles: 1_999_000,
        candles_lost: 17,
        loop_lag: quantiles(0),
        orders_submitted: 12,
        fills: 10,
        orders_rejected: 1,
        telemetry_emitted: 5_000,
        telemetry_dropped: 3,
        telemetry_degraded: true,
        config_generation: 4,
        config_rejected: 5,
        ..Snapshot::default()
    };
    for i in 0..MAX_TIMERS as u64 {
        assert!(s.push_timer(TimerSnapshot {
            timer: i as u32,
            lateness: quantiles(i),
            took: quantiles(i * 3),
            overruns: i,
            skipped: i / 2,
        }));
    }
    let names: [&[u8]; 4] = [
        b"eurusd",
        b"quote\"back\\slash",
        b"new\nline",
        b"bad\xff\xfeutf8",
    ];
    for i in 0..MAX_RINGS {
        assert!(s.push_ring(RingSnapshot {
            source: i as u16,
            name: label(names[i % names.len()]),
            lag: i as u64 * 10,
            lost: i as u64,
            overruns: i as u64 / 3,
            writer_alive: i % 2 == 0,
        }));
    }
    for i in 0..MAX_ADAPTERS {
        let name = format!("adapter-{i}-\"x\"");
        assert!(s.push_adapter(AdapterSnapshot {
            name: Label::new(&name),
            state: i as u8,
        }));
    }
    assert!(
        !s.push_timer(TimerSnapshot::default()),
        "the timer list is full"
    );
    assert!(
        !s.push_ring(RingSnapshot::default()),
        "the ring list is full"
    );
    assert!(
        !s.push_adapter(AdapterSnapshot::default()),
        "the adapter list is full"
    );
    s
}

/// The largest rendering possible: every list full, every number at its widest, every label
/// 32 bytes that each need escaping.
fn worst_snapshot() -> Snapshot {
    let max = Quantiles {
        count: u64::MAX,
        sum_ns: u64::MAX - 1,
        p50_ns: u64::MAX - 1,
        p99_ns: u64::MAX - 1,
        max_ns: u64::MAX - 1,
    };
    let mut s = Snapshot {
        uptime_ns: u64::MAX - 1,
        iterations: u64::MAX,
        events: u64::MAX,
        candles: u64::MAX,
        candles_lost: u64::MAX,
        loop_lag: max,
        orders_submitted: u64::MAX,
        fills: u64::MAX,
        orders_cancelled: u64::MAX,
        orders_denied: u64::MAX,
        fill_faults: u64::MAX,
        orders_rejected: u64::MAX,
        telemetry_emitted: u64::MAX,
        telemetry_dropped: u64::MAX,
        telemetry_degraded: true,
        config_generation: u64::MAX,
        config_rejected: u64::MAX,
        ..Snapshot::default()
    };
    for i in 0..MAX_TIMERS {
        s.push_timer(TimerSnapshot {
            timer: u32::MAX - i as u32,
            lateness: max,
            took: max,
            overruns: u64::MAX,
            skipped: u64::MAX,
        });
    }
    for i in 0..MAX_RINGS {
        // 32 bytes that each escape to two, except one that makes the key unique.
        let mut name = [b'"'; 32];
        name[0] = b'a' + i as u8;
        s.push_ring(RingSnapshot {
            source: u16::MAX - i as u16,
            name: label(&name),
            lag: u64::MAX,
            lost: u64::MAX,
            overruns: u64::MAX,
            writer_alive: true,
        });
        let mut name = [b'\\'; 32];
        name[0] = b'a' + i as u8;
        s.push_adapter(AdapterSnapshot {
            name: label(&name),
            state: u8::MAX,
        });
    }
    s
}

fn rendered(snapshot: &Snapshot) -> String {
    let mut out = Vec::new();
    render(snapshot, &mut out).unwrap();
    String::from_utf8(out).expect("the exposition is UTF-8")
}

// ---------------------------------------------------------------------------------------
// A Prometheus text format (0.0.4) checker.

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// Parse one sample line: `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value in {line:?}"))?;
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest
                .find('=')
                .ok_or_else(|| format!("label without '=' in {line:?}"))?;
            let key = &rest[..eq];
            if !valid_label_name(key) {
                return Err(format!("bad label name {key:?} in {line:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or_else(|| format!("unquoted label value in {line:?}"))?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(format!("unterminated label value in {line:?}")),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?} in {line:?}")),
                    },
                    Some((_, '\n')) => return Err(format!("raw newline in {line:?}")),
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((key.to_string(), value));
            rest = &rest[end + 1..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err(format!("expected ',' or '}}' in {line:?}"));
            }
        }
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before the value in {line:?}"))?;
    let mut fields = rest.split(' ');
    let value_text = fields.next().unwrap_or("");
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse::<f64>()
            .map_err(|_| format!("bad value {v:?} in {line:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?} in {line:?}"))?;
    }
    if fields.next().is_some() {
        return Err(format!("trailing fields in {line:?}"));
    }
    let mut keys = HashSet::new();
    for (k, _) in &labels {
        if !keys.insert(k.clone()) {
            return Err(format!("label {k} twice in {line:?}"));
        }
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Check a whole exposition; returns its samples. Every family has HELP and TYPE before its
/// samples, families are contiguous, no series repeats, summaries are well formed, counters
/// end in `_total`, every name is `tickloop_...`.
fn check_exposition(body: &str) -> Result<Vec<Sample>, String> {
    if !body.ends_with('\n') {
        return Err("the body does not end with a newline".into());
    }
    let mut help: HashSet<String> = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series = HashSet::new();
    let mut samples = Vec::new();
    let mut switch_to = |family: &str, current: &mut Option<String>| -> Result<(), String> {
        if current.as_deref() != Some(family) {
            if finished.contains(family) {
                return Err(format!("family {family} is split"));
            }
            if let Some(previous) = current.take() {
                finished.insert(previous);
            }
            *current = Some(family.to_string());
        }
        Ok(())
    };
    for line in body.lines() {
        if line.is_empty() {
            return Err("an empty line".into());
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("HELP") => {
                    let name = parts.next().ok_or("HELP without a name")?;
                    if !valid_metric_name(name) {
                        return Err(format!("bad name in {line:?}"));
                    }
                    let text = parts.next().unwrap_or("");
                    if text.is_empty() {
                        return Err(format!("empty help for {name}"));
                    }
                    if !help.insert(name.to_string()) {
                        return Err(format!("second HELP for {name}"));
                    }
                    switch_to(name, &mut current)?;
                }
                Some("TYPE") => {
                    let name = parts.next().ok_or("TYPE without a name")?;
                    let kind = parts.next().ok_or("TYPE without a type")?;
                    if !["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind) {
                        return Err(format!("bad type in {line:?}"));
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(format!("second TYPE for {name}"));
                    }
                    switch_to(name, &mut current)?;
                }
                _ => {}
            }
            continue;
        }
        let sample = parse_sample(line)?;
        let family = if types.contains_key(&sample.name) {
            sample.name.clone()
        } else {
            let base = sample
                .name
                .strip_suffix("_sum")
                .or_else(|| sample.name.strip_suffix("_count"))
                .filter(|base| types.get(*base).map(String::as_str) == Some("summary"))
                .ok_or_else(|| format!("{} has no TYPE before it", sample.name))?;
            base.to_string()
        };
        switch_to(&family, &mut current)?;
        if !help.contains(&family) {
            return Err(format!("{family} has no HELP"));
        }
        if !family.starts_with("tickloop_") {
            return Err(format!("{family} is not prefixed tickloop_"));
        }
        let kind = types[&family].as_str();
        if kind == "counter" && !family.ends_with("_total") {
            return Err(format!("counter {family} does not end in _total"));
        }
        if kind != "counter" && family.ends_with("_total") {
            return Err(format!("{kind} {family} ends in _total"));
        }
        let has_quantile = sample.label("quantile").is_some();
        if kind == "summary" && sample.name == family && !has_quantile {
            return Err(format!("summary sample without quantile: {line:?}"));
        }
        if (kind != "summary" || sample.name != family) && has_quantile {
            return Err(format!(
                "quantile label outside a summary's quantiles: {line:?}"
            ));
        }
        let mut key_labels = sample.labels.clone();
        key_labels.sort();
        if !series.insert((sample.name.clone(), key_labels)) {
            return Err(format!("duplicate series {line:?}"));
        }
        samples.push(sample);
    }
    for name in types.keys() {
        if !help.contains(name) {
            return Err(format!("{name} has a TYPE but no HELP"));
        }
    }
    Ok(samples)
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
}

/// `promtool check metrics` on `body`, when promtool is installed (Debian: `apt-get install
/// prometheus`). Returns false (SKIP printed) when it is not.
fn promtool_check(body: &str) -> bool {
    // Looked up on PATH first: under qemu-user a missing program is a child exiting 127, not
    // a spawn error.
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("promtool").is_file()));
    if !on_path {
        eprintln!("SKIP promtool check: promtool is not installed (apt-get install prometheus)");
        return false;
    }
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!(
                "SKIP promtool check: promtool is not installed (apt-get install prometheus)"
            );
            return false;
        }
        Err(e) => panic!("running promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics failed ({}): {said}\n--- body ---\n{body}",
        out.status
    );
    eprintln!("promtool check metrics: OK");
    true
}

// ---------------------------------------------------------------------------------------
// An HTTP client.

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Read a whole response (the server closes after it) and parse it.
fn read_reply(stream: &mut TcpStream) -> io::Result<Reply> {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> io::Result<Reply> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let head = match response.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(bad(format!("incomplete response ({} bytes)", raw.len())))
        }
        Err(e) => return Err(bad(format!("unparsable response: {e}"))),
    };
    let reply = Reply {
        status: response.code.unwrap(),
        headers: response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: raw[head..].to_vec(),
    };
    let length: usize = reply
        .header("Content-Length")
        .ok_or_else(|| bad("no Content-Length".into()))?
        .parse()
        .map_err(|_| bad("bad Content-Length".into()))?;
    if length != reply.body.len() {
        return Err(bad(format!(
            "Content-Length {length} but {} bytes of body",
            reply.body.len()
        )));
    }
    if reply.header("Connection") != Some("close") {
        return Err(bad("no Connection: close".into()));
    }
    Ok(reply)
}

fn request(addr: SocketAddr, request: &[u8]) -> io::Result<Reply> {
    let mut stream = connect(addr);
    stream.write_all(request)?;
    read_reply(&mut stream)
}

const GET: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n";

/// A GET that must be answered 200 with the whole exposition within `limit`.
fn timed_get(addr: SocketAddr, limit: Duration) -> Reply {
    let started = Instant::now();
    let reply = request(addr, GET).expect("GET /metrics");
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(took < limit, "GET /metrics took {took:?} (limit {limit:?})");
    reply
}

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn get_metrics_answers_valid_prometheus_text_on_every_driver() {
    let _serial = serial();
    for driver in real_drivers() {
        let server = Server::start(loopback_config(), driver, full_snapshot());
        let reply = timed_get(server.addr, Duration::from_secs(2));
        assert_eq!(
            reply.header("Content-Type"),
            Some("text/plain; version=0.0.4; charset=utf-8"),
            "{driver:?}"
        );
        let body = reply.text();
        let samples = check_exposition(body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        let value = |name: &str, labels: &[(&str, &str)]| {
            find(&samples, name, labels)
                .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{body}"))
                .value
        };
        assert_eq!(value("tickloop_candles_total", &[]), 1_999_000.0);
        assert_eq!(value("tickloop_candles_lost_total", &[]), 17.0);
        assert_eq!(value("tickloop_fills_total", &[]), 10.0);
        assert_eq!(value("tickloop_telemetry_dropped_total", &[]), 3.0);
        assert_eq!(value("tickloop_telemetry_degraded", &[]), 1.0);
        assert_eq!(value("tickloop_config_generation", &[]), 4.0);
        assert_eq!(value("tickloop_config_rejected_total", &[]), 5.0);
        assert_eq!(
            value("tickloop_loop_lag_seconds", &[("quantile", "0.99")]),
            25e-6
        );
        assert_eq!(value("tickloop_loop_lag_max_seconds", &[]), 1.25);
        assert_eq!(
            value(
                "tickloop_timer_lateness_seconds",
                &[("timer", "3"), ("quantile", "0.5")]
            ),
            1503e-9
        );
        assert_eq!(
            value("tickloop_timer_run_seconds_count", &[("timer", "2")]),
            1006.0
        );
        assert_eq!(
            value("tickloop_timer_overruns_total", &[("timer", "15")]),
            15.0
        );
        // Label values come back exactly, escapes and all.
        assert_eq!(
            value(
                "tickloop_ring_lag_candles",
                &[("ring", "quote\"back\\slash"), ("source", "1")]
            ),
            10.0
        );
        assert_eq!(
            value(
                "tickloop_ring_writer_alive",
                &[("ring", "new\nline"), ("source", "2")]
            ),
            1.0
        );
        assert_eq!(
            value(
                "tickloop_ring_lost_candles_total",
                &[("ring", "bad\u{FFFD}\u{FFFD}utf8"), ("source", "3")]
            ),
            3.0
        );
        assert_eq!(
            value("tickloop_adapter_state", &[("adapter", "adapter-7-\"x\"")]),
            7.0
        );
        assert!(
            value("tickloop_uptime_seconds", &[]) >= 3600.25,
            "the uptime comes from the latest snapshot"
        );
        assert_eq!(
            value("tickloop_metrics_responses_total", &[("code", "200")]),
            1.0
        );
        promtool_check(body);

        // `/` and a query string are the metrics too; more scrapes allocate nothing.
        for path in ["/", "/metrics?name[]=x", "/metrics"] {
            let req = format!("GET {path} HTTP/1.0\r\n\r\n");
            let reply = request(server.addr, req.as_bytes()).unwrap();
            assert_eq!(reply.status, 200, "{path}");
            check_exposition(reply.text()).unwrap();
        }
        if let Ok(out) = std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                "-o",
                "-",
                "-w",
                "\n%{http_code} %{content_type}",
            ])
            .arg(format!("http://{}/metrics", server.addr))
            .output()
        {
            let text = String::from_utf8(out.stdout).unwrap();
            let (body, tail) = text.rsplit_once('\n').unwrap();
            assert_eq!(
                tail,
                "200 text/plain; version=0.0.4; charset=utf-8",
                "curl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            check_exposition(body).unwrap();
            eprintln!("curl: OK");
        } else {
            eprintln!("SKIP curl: not installed");
        }
        let report = server.finish();
        assert_eq!(report.stats.responses_200, 1 + 3 + 1, "{driver:?}");
        assert_eq!(report.stats.open, 0, "{driver:?}");
        assert_eq!(
            report.allocations, 0,
            "{driver:?}: the server thread allocated while serving"
        );
    }
}

#[test]
fn the_worst_case_rendering_fits_the_response_buffer_and_parses() {
    let _serial = serial();
    let body = rendered(&worst_snapshot());
    eprintln!(
        "worst case: {} bytes of {RESPONSE_CAPACITY} (the server's own metrics add about 1 KiB)",
        body.len()
    );
    assert!(
        body.len() + 2048 < RESPONSE_CAPACITY,
        "{} bytes do not leave room",
        body.len()
    );
    let samples = check_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let long = find(
        &samples,
        "tickloop_ring_lag_candles",
        &[("source", "65535")],
    )
    .unwrap();
    assert_eq!(long.label("ring").unwrap(), format!("a{}", "\"".repeat(31)));
    assert_eq!(long.value, u64::MAX as f64);
    promtool_check(&body);

    // Empty lists render no family; the rest is still valid.
    let body = rendered(&Snapshot::default());
    check_exposition(&body).unwrap();
    assert!(!body.contains("tickloop_timer_"), "{body}");
    assert!(!body.contains("tickloop_ring_"), "{body}");
    assert!(!body.contains("tickloop_adapter_"), "{body}");
    promtool_check(&body);

    // A repeated key is skipped, so no series is ever duplicated; counts beyond the arrays
    // are ignored.
    let mut s = full_snapshot();
    s.timers[1].timer = s.timers[0].timer;
    s.rings[1].source = s.rings[0].source;
    s.adapters[1].name = s.adapters[0].name;
    s.timer_count = usize::MAX;
    let samples = check_exposition(&rendered(&s)).unwrap();
    let count = |name: &str| samples.iter().filter(|x| x.name == name).count();
    assert_eq!(count("tickloop_timer_overruns_total"), MAX_TIMERS - 1);
    assert_eq!(count("tickloop_ring_lag_candles"), MAX_RINGS - 1);
    assert_eq!(count("tickloop_adapter_state"), MAX_ADAPTERS - 1);

    // Seconds are exact decimals; labels are cut at a character boundary.
    let s = Snapshot {
        uptime_ns: 1_000_000_001,
        loop_lag: Quantiles {
            max_ns: 5 * SECONDS,
            ..Quantiles::default()
        },
        ..Snapshot::default()
    };
    let body = rendered(&s);
    assert!(
        body.contains("\ntickloop_uptime_seconds 1.000000001\n"),
        "{body}"
    );
    assert!(
        body.contains("\ntickloop_loop_lag_max_seconds 5\n"),
        "{body}"
    );
    assert_eq!(Label::new(&"é".repeat(20)).as_bytes().len(), 32);
    assert_eq!(Label::new(&"€".repeat(20)).as_bytes().len(), 30);
    assert_eq!(Label::from_bytes(b"abc\0def").as_bytes(), b"abc");

    // From the loop's own histograms.
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60 * SECONDS, 2).unwrap();
    for v in 1..=100u64 {
        h.record(v * 1000).unwrap();
    }
    let q = Quantiles::from_histogram(&h);
    assert_eq!(q.count, 100);
    assert!((49_000..=51_000).contains(&q.p50_ns), "{q:?}");
    assert!((98_000..=100_500).contains(&q.p99_ns), "{q:?}");
    assert!((99_000..=100_500).contains(&q.max_ns), "{q:?}");
    assert!((5_000_000..=5_100_000).contains(&q.sum_ns), "{q:?}");
}

#[test]
fn idle_and_half_sent_clients_do_not_stall_others_and_are_closed_at_the_timeout() {
    let _serial = serial();
    let timeout = Duration::from_millis(500);
    let config = MetricsConfig {
        request_timeout_ms: timeout.as_millis() as u32,
        ..loopback_config()
    };
    let server = Server::start(config, DriverChoice::Epoll, full_snapshot());
    let opened = Instant::now();
    let mut idle = connect(server.addr); // the slowloris: connects and sends nothing
    let mut half = connect(server.addr); // sends half a request and stalls
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: loc")
        .unwrap();
    let mut drip = connect(server.addr); // sends a byte every 50 ms, never finishing
    let dripping = thread::spawn(move || {
        let started = Instant::now();
        for byte in GET.iter().cycle().take(40) {
            if drip.write_all(&[*byte]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let mut rest = Vec::new();
        let _ = drip.read_to_end(&mut rest);
        (started.elapsed(), rest)
    });

    // Meanwhile, others are served promptly.
    for _ in 0..10 {
        timed_get(server.addr, Duration::from_millis(100));
        thread::sleep(Duration::from_millis(20));
    }

    // The stalled ones are closed at the timeout (408 first, while their request was due).
    for (what, stream) in [("idle", &mut idle), ("half-sent", &mut half)] {
        let reply = read_reply(stream).unwrap_or_else(|e| panic!("{what}: {e}"));
        let closed = opened.elapsed();
        assert_eq!(reply.status, 408, "{what}");
        assert!(
            closed >= timeout - Duration::from_millis(20) && closed < timeout * 3,
            "{what} closed after {closed:?} (timeout {timeout:?})"
        );
    }
    let (dripped, rest) = dripping.join().unwrap();
    assert!(
        dripped < timeout * 3,
        "the dripping client was closed after {dripped:?}"
    );
    assert!(
        rest.is_empty() || parse_reply(&rest).unwrap().status == 408,
        "{rest:?}"
    );
    timed_get(server.addr, Duration::from_millis(100));
    thread::sleep(Duration::from_millis(50));
    let report = server.finish();
    assert_eq!(report.stats.timed_out, 3);
    assert_eq!(report.stats.responses_200, 11);
    assert_eq!(report.stats.open, 0);
}

#[test]
fn fifty_clients_against_eight_slots_all_get_an_answer_or_a_clean_close_and_no_fd_leaks() {
    let _serial = serial();
    let before = open_fds();
    let config = MetricsConfig {
        max_connections: 8,
        ..loopback_config()
    };
    let server = Server::start(config, DriverChoice::Epoll, full_snapshot());
    let addr = server.addr;
    let barrier = Arc::new(Barrier::new(50));
    let started = Instant::now();
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let barrier = barrier.clone();
            thread::spawn(move || -> Result<u16, String> {
                barrier.wait();
                let mut stream = connect(addr);
                let mut raw = Vec::new();
                let sent = stream.write_all(GET);
                match stream.read_to_end(&mut raw) {
                    Ok(_) if raw.is_empty() => Ok(0), // closed without a word: clean
                    Ok(_) => parse_reply(&raw)
                        .map(|r| r.status)
                        .map_err(|e| e.to_string()),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(0),
                    Err(e) => Err(format!("{e} (write: {sent:?})")),
                }
            })
        })
        .collect();
    let mut outcomes: HashMap<u16, usize> = HashMap::new();
    for client in clients {
        let status = client
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("a client got neither an answer nor a close: {e}"));
        assert!([0, 200, 503].contains(&status), "status {status}");
        *outcomes.entry(status).or_default() += 1;
    }
    let took = started.elapsed();
    eprintln!("50 clients in {took:?}: {outcomes:?} (0 = closed without an answer)");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A burst waits in the backlog while the slots turn over: most are served.
    assert!(
        outcomes.get(&200).copied().unwrap_or(0) >= 25,
        "{outcomes:?}"
    );
    thread::sleep(Duration::from_millis(50));
    let report = server.finish();
    assert_eq!(report.stats.accepted, 50);
    assert_eq!(
        report.stats.responses_200 + report.stats.refused,
        50,
        "every connection was served or refused"
    );
    assert_eq!(report.stats.open, 0);
    assert_eq!(open_fds(), before, "file descriptors leaked");
}

#[test]
fn when_stalled_clients_hold_every_slot_new_ones_get_503_at_once() {
    let _serial = serial();
    let timeout = Duration::from_millis(1000);
    let config = MetricsConfig {
        max_connections: 4,
        request_timeout_ms: timeout.as_millis() as u32,
        ..loopback_config()
    };
    let server = Server::start(config, DriverChoice::Epoll, full_snapshot());
    let opened = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..4).map(|_| connect(server.addr)).collect();
    thread::sleep(Duration::from_millis(100));
    for _ in 0..5 {
        let started = Instant::now();
        let reply = request(server.addr, GET).unwrap();
        let took = started.elapsed();
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert_eq!(reply.header("Retry-After"), Some("1"));
        assert!(took < Duration::from_millis(100), "503 after {took:?}");
    }
    // Once the stalled ones time out, the endpoint serves again.
    for stream in &mut stalled {
        assert_eq!(read_reply(stream).unwrap().status, 408);
    }
    assert!(opened.elapsed() < timeout * 2);
    timed_get(server.addr, Duration::from_millis(100));
    thread::sleep(Duration::from_millis(50));
    let report = server.finish();
    assert_eq!(report.stats.refused, 5);
    assert_eq!(report.stats.timed_out, 4);
    assert_eq!(report.stats.responses_200, 1);
}

#[test]
fn bad_requests_get_400_404_405_and_are_closed() {
    let _serial = serial();
    let config = MetricsConfig {
        max_request_bytes: 8192,
        ..loopback_config()
    };
    let server = Server::start(config, DriverChoice::Epoll, full_snapshot());
    let addr = server.addr;

    // Larger than max_request_bytes: 400, then the server closes.
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    huge.resize(64 << 10, b'a');
    let reply = request(addr, &huge).unwrap();
    assert_eq!(reply.status, 400);

    for (req, status) in [
        (
            &b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"[..],
            405,
        ),
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", 405),
        (b"DELETE / HTTP/1.1\r\n\r\n", 405),
        (b"GET /nope HTTP/1.1\r\n\r\n", 404),
        (b"GET /metrics/../etc/passwd HTTP/1.1\r\n\r\n", 404),
        (b"\x00\x01\x02 garbage\r\n\r\n", 400),
        (b"GET /metrics HTTP/9.9\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n", 400),
    ] {
        let reply = request(addr, req).unwrap();
        assert_eq!(
            reply.status,
            status,
            "{:?} -> {}",
            String::from_utf8_lossy(req),
            reply.text()
        );
        if status == 405 {
            assert_eq!(reply.header("Allow"), Some("GET"));
        }
    }
    // A client that closes before a whole request costs nothing either.
    let mut gone = connect(addr);
    gone.write_all(b"GET /met").unwrap();
    drop(gone);
    // And the endpoint still serves.
    timed_get(addr, Duration::from_millis(100));
    thread::sleep(Duration::from_millis(50));
    let report = server.finish();
    assert_eq!(report.stats.responses_400, 4);
    assert_eq!(report.stats.responses_405, 3);
    assert_eq!(report.stats.responses_404, 2);
    assert_eq!(report.stats.incomplete, 1);
    assert_eq!(report.stats.open, 0);
}

/// A client socket with a tiny receive buffer (set before connecting, so the window is
/// small from the start).
fn connect_small_window(addr: SocketAddr) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 expected")
    };
    // SAFETY: plain socket calls on a fresh fd that the TcpStream owns afterwards.
    unsafe {
        let fd: RawFd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 1024;
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn a_client_that_reads_one_byte_at_a_time_does_not_stall_the_others() {
    let _serial = serial();
    let config = MetricsConfig {
        request_timeout_ms: 20_000,
        // Small kernel buffers on the server's side too, so the response really has to wait
        // for the slow reader (on loopback the kernel would otherwise take it all at once).
        send_buffer_bytes: 4096,
        ..loopback_config()
    };
    let snapshot = full_snapshot();
    let expected_len = rendered(&snapshot).len();
    let server = Server::start(config, DriverChoice::Epoll, snapshot);
    let mut slow = connect_small_window(server.addr);
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(GET).unwrap();
    let reading = thread::spawn(move || {
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        let started = Instant::now();
        // One byte every 2 ms for a while, then the rest at full speed.
        while started.elapsed() < Duration::from_millis(600) {
            match slow.read(&mut byte) {
                Ok(0) => break,
                Ok(_) => raw.push(byte[0]),
                Err(e) => panic!("slow read: {e}"),
            }
            thread::sleep(Duration::from_millis(2));
        }
        slow.read_to_end(&mut raw).unwrap();
        raw
    });
    thread::sleep(Duration::from_millis(50));
    for _ in 0..10 {
        timed_get(server.addr, Duration::from_millis(100));
        thread::sleep(Duration::from_millis(20));
    }
    let raw = reading.join().unwrap();
    let reply = parse_reply(&raw).expect("the slow reader got the whole response");
    assert_eq!(reply.status, 200);
    check_exposition(reply.text()).unwrap();
    assert!(
        reply.body.len() > expected_len,
        "the body holds the snapshot and the server's own metrics"
    );
    let report = server.finish();
    assert!(
        report.stats.partial_writes > 0,
        "the response never had to wait for the slow reader: {:?}",
        report.stats
    );
    assert_eq!(report.stats.responses_200, 11);
}

#[test]
fn non_loopback_addresses_busy_ports_and_bad_limits_are_refused_clearly() {
    let _serial = serial();
    let bind = |listen: &str, allow: bool| {
        MetricsServer::bind(&MetricsConfig {
            listen: Some(listen.parse().unwrap()),
            allow_non_loopback: allow,
            ..MetricsConfig::default()
        })
    };
    for listen in [
        "0.0.0.0:9464",
        "10.1.2.3:9464",
        "[::]:9464",
        "[2001:db8::1]:80",
    ] {
        let err = bind(listen, false).err().expect("refused");
        assert!(matches!(err, MetricsError::NotLoopback { .. }), "{err:?}");
        let message = err.to_string();
        eprintln!("{listen}: {message}");
        assert!(message.contains(&listen.parse::<SocketAddr>().unwrap().to_string()));
        assert!(message.contains("not a loopback address"), "{message}");
        assert!(message.contains("allow_non_loopback = true"), "{message}");
    }
    // On purpose, it is allowed.
    let open = bind("0.0.0.0:0", true).unwrap().expect("listening");
    drop(open);
    // Loopback in all its forms.
    for listen in ["127.0.0.1:0", "127.0.0.2:0", "[::ffff:127.0.0.1]:0"] {
        let config = MetricsConfig {
            listen: Some(listen.parse().unwrap()),
            ..MetricsConfig::default()
        };
        config
            .validate()
            .unwrap_or_else(|e| panic!("{listen}: {e}"));
    }
    // Off unless configured.
    assert!(MetricsServer::bind(&MetricsConfig::default())
        .unwrap()
        .is_none());

    // A busy port names the address and the fix.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let err = bind(&busy.to_string(), false).err().expect("refused");
    let message = err.to_string();
    eprintln!("busy: {message}");
    assert!(matches!(err, MetricsError::AddrInUse { .. }), "{err:?}");
    assert!(message.contains(&busy.to_string()), "{message}");
    assert!(message.contains("already in use"), "{message}");
    assert!(message.contains("choose a free port"), "{message}");

    // Limits.
    for (config, field) in [
        (
            MetricsConfig {
                max_connections: 0,
                ..loopback_config()
            },
            "max_connections",
        ),
        (
            MetricsConfig {
                request_timeout_ms: 0,
                ..loopback_config()
            },
            "request_timeout_ms",
        ),
        (
            MetricsConfig {
                max_request_bytes: 16,
                ..loopback_config()
            },
            "max_request_bytes",
        ),
    ] {
        let message = MetricsServer::bind(&config)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            message.contains(field) && message.contains("use "),
            "{message}"
        );
    }

    // The configuration section: defaults, loopback address, unknown fields refused.
    let config: MetricsConfig = toml::from_str("listen = \"127.0.0.1:9464\"").unwrap();
    assert_eq!(config.listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(config.max_connections, 8);
    assert_eq!(config.request_timeout_ms, 2000);
    assert_eq!(config.max_request_bytes, 8192);
    assert_eq!(
        toml::from_str::<MetricsConfig>("").unwrap(),
        MetricsConfig::default()
    );
    let err = toml::from_str::<MetricsConfig>("listen = \"127.0.0.1:9464\"\nport = 1").unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Inside the real loop.

/// The endpoint shared between the loop (as its fd source) and the app (which plays the
/// loop's tick that hands over snapshots).
/// It also counts the times the thread slept inside `on_ready` (it must never).
struct Shared(Rc<RefCell<MetricsServer>>, Rc<Cell<Sleeps>>);

impl FdSource for Shared {
    fn fd(&self) -> RawFd {
        self.0.borrow().fd()
    }
    fn interest(&self) -> Interest {
        self.0.borrow().interest()
    }
    fn on_ready(&mut self, ready: Readiness, emit: &mut dyn FnMut(EventKind) -> bool) -> bool {
        let mut sleeps = self.1.get();
        let more = sleeps.measure(|| self.0.borrow_mut().on_ready(ready, emit));
        self.1.set(sleeps);
        more
    }
}

struct Ticker {
    server: Rc<RefCell<MetricsServer>>,
    snapshot: Snapshot,
    ticks: u64,
    started: Nanos,
    last_tick: Nanos,
    /// The longest time between two firings of the 5 ms timer.
    max_gap: Nanos,
}

impl App for Ticker {
    type Output = u64;
    fn name(&self) -> &'static str {
        "ticker"
    }
    fn on_event(&mut self, event: &Event, cx: &mut Context<'_, u64>) {
        match event.kind {
            EventKind::Started => {
                self.started = event.at;
                cx.every(1, 5 * MILLIS, 5 * MILLIS);
            }
            EventKind::Timer { timer: 1, .. } => {
                self.ticks += 1;
                if self.last_tick > 0 {
                    self.max_gap = self.max_gap.max(event.at - self.last_tick);
                }
                self.last_tick = event.at;
                self.snapshot.iterations = self.ticks;
                self.snapshot.uptime_ns = event.at - self.started;
                self.server.borrow_mut().set_snapshot(&self.snapshot);
            }
            _ => {}
        }
    }
}

#[test]
fn the_endpoint_serves_from_inside_the_event_loop_on_every_driver() {
    let _serial = serial();
    for driver in real_drivers() {
        for mode in [Mode::Park, Mode::Busy] {
            let server = MetricsServer::bind(&MetricsConfig {
                request_timeout_ms: 600,
                ..loopback_config()
            })
            .unwrap()
            .unwrap();
            let addr = server.local_addr();
            let server = Rc::new(RefCell::new(server));
            let app = Ticker {
                server: server.clone(),
                snapshot: Snapshot::default(),
                ticks: 0,
                started: 0,
                last_tick: 0,
                max_gap: 0,
            };
            let config = LoopConfig {
                driver,
                mode,
                ..LoopConfig::default()
            };
            let mut lp = EventLoop::new(
                LoopBuilder {
                    config: &config,
                    rings: vec![],
                    journal: None,
                    app_config: Vec::new(),
                    program: "tickloop",
                },
                app,
                Discard,
            )
            .unwrap();
            let blocked = Rc::new(Cell::new(Sleeps::default()));
            lp.add_fd_source(Box::new(Shared(server.clone(), blocked.clone())))
                .unwrap();
            lp.stop_after(SECONDS);
            let clients = thread::spawn(move || {
                let mut idle = connect(addr); // never sends: closed at 600 ms
                let mut ticks = Vec::new();
                for _ in 0..10 {
                    thread::sleep(Duration::from_millis(40));
                    // Promptness (100 ms) is the other tests' check; here the loop may be
                    // spinning in busy mode on a shared core.
                    let reply = timed_get(addr, Duration::from_millis(500));
                    let samples = check_exposition(reply.text()).unwrap();
                    ticks.push(
                        find(&samples, "tickloop_loop_iterations_total", &[])
                            .unwrap()
                            .value as u64,
                    );
                }
                let reply = read_reply(&mut idle).unwrap();
                assert_eq!(reply.status, 408);
                ticks
            });
            assert_eq!(lp.run().unwrap(), StopReason::Deadline);
            let ticks = clients.join().unwrap();
            let app = lp.app();
            eprintln!(
                "{driver:?} {mode:?}: {} ticks, longest gap {} µs; scrapes saw {ticks:?}",
                app.ticks,
                app.max_gap / 1000
            );
            // The loop kept its 5 ms timer going while it served, and while the idle client
            // held its connection for 600 ms: no gap anywhere near that (a busy host can
            // deschedule the loop for a few ms, and the timer then skips periods).
            assert!(app.ticks > 20, "{driver:?} {mode:?}: {} ticks", app.ticks);
            assert!(
                app.max_gap < 400 * MILLIS,
                "{driver:?} {mode:?}: the loop stalled {} ms",
                app.max_gap / MILLIS
            );
            // The scrapes see the snapshots the loop hands over on its tick, moving forward.
            assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{ticks:?}");
            // The loop's own histograms fill a snapshot.
            let timer = lp
                .periodic()
                .find_map(TimerSnapshot::from_periodic)
                .expect("the periodic timer");
            assert_eq!(timer.timer, 1);
            assert_eq!(timer.lateness.count, lp.app().ticks, "{timer:?}");
            let mut snapshot = Snapshot::default();
            snapshot.set_loop_stats(&lp.stats());
            snapshot.push_timer(timer);
            check_exposition(&rendered(&snapshot)).unwrap();
            blocked.get().check(&format!("{driver:?} {mode:?}"));
            let stats = server.borrow().stats();
            assert_eq!(stats.responses_200, 10, "{driver:?} {mode:?}");
            assert_eq!(stats.timed_out, 1, "{driver:?} {mode:?}");
        }
    }
}
