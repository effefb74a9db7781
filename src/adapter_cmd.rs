//! `tickloop adapter echo|paper|fault`: adapter programs written in Rust that speak the
//! protocol of docs/adapter-protocol.md on their stdin and stdout (the other side of
//! `tickloop_runtime::adapter`). `echo` answers every request at once (the benchmark's
//! peer); `paper` is a paper broker that reads candles from a ring and fills market, limit,
//! stop and stop-limit orders on the next candles by the engine's own matching rule
//! (`tickloop_strategy::matching`), with IOC, FOK, GTD and reduce-only; `fault` (hidden) misbehaves in one chosen way, for the tests.
//!
//! Each is a plain blocking program, as an adapter in any language would be: it reads frames
//! from stdin, writes frames to stdout, logs to stderr, and exits when stdin ends. Frames are
//! cut and prefixed by the engine's own codec (`tickloop_runtime::adapter::protocol`), so the
//! two sides cannot disagree on the wire.

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, BufWriter, Read, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tickloop_ring::{self as ring, Candle, ReadResult, Reader, ReaderOptions, Start};
use tickloop_runtime::adapter::protocol::{self, FrameStatus, InBuffer};
use tickloop_runtime::adapter::TimeInForce;
use tickloop_strategy::matching::{match_bar, Matched};

#[derive(Subcommand)]
pub enum AdapterCommand {
    /// An adapter that answers every request at once (one account, a few bars, immediate
    /// fills); `--raw` echoes 8-byte messages instead (the benchmark's pipe reference).
    Echo(EchoArgs),
    /// A paper broker over a ring: orders of every type and time in force fill on the next
    /// candles by backtesting.py's rules, as the engine's own paper broker fills them.
    Paper(PaperArgs),
    /// An adapter that misbehaves in one way, for tests.
    #[command(hide = true)]
    Fault(FaultArgs),
}

#[derive(Args, Clone)]
pub struct EchoArgs {
    /// Bars per get_historical_bars answer at most.
    #[arg(long, default_value_t = 3)]
    pub bars: u64,
    /// Echo raw 8-byte messages instead of speaking the protocol.
    #[arg(long)]
    pub raw: bool,
    /// Answer each request this many milliseconds after it arrived (pings at once), many in
    /// flight at a time: a slow exchange, for the polling feed's tests.
    #[arg(long, default_value_t = 0, conflicts_with = "raw")]
    pub delay_ms: u64,
}

#[derive(Args, Clone)]
pub struct PaperArgs {
    /// The ring to read candles from (a name under /dev/shm or a path).
    #[arg(long = "ring", value_name = "NAME")]
    pub ring: String,
    /// Starting cash of the one account, PAPER.
    #[arg(long, default_value_t = 100_000.0)]
    pub cash: f64,
    /// Candles kept per symbol for get_historical_bars.
    #[arg(long, default_value_t = 10_000)]
    pub history: usize,
    /// Fee per fill, in basis points of its value.
    #[arg(long, default_value_t = 0.0)]
    pub fee_bps: f64,
}

#[derive(ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum FaultMode {
    /// Handshake, then `--count` candles to stdout as fast as it can (answering meanwhile).
    FloodStdout,
    /// Handshake, then one 1 MiB line and `--bytes` of stderr lines (answering meanwhile).
    FloodStderr,
    /// Write a hello and never read stdin.
    NoRead,
    /// Handshake, then stop reading and answering forever.
    Hang,
    /// Handshake; on the first request write half a frame and exit 1.
    DieMidFrame,
    /// Exit 3 at once, every time.
    ExitAtOnce,
    /// Handshake, then a frame header over the engine's max_frame.
    Oversized,
    /// Handshake, then a frame that is not JSON.
    Garbage,
    /// Answer normally, ignore SIGTERM and end-of-file: only SIGKILL ends it.
    Stubborn,
    /// Answer normally but ignore end-of-file (SIGTERM ends it).
    IgnoreEof,
    /// Answer pings, never requests.
    Mute,
    /// Accept every order, then report fills that must not be believed around the real
    /// ones: an overfill, a negative quantity, a zero price, an unknown order, a duplicate
    /// without a trade id and one with a trade id.
    BadFills,
}

#[derive(Args, Clone)]
pub struct FaultArgs {
    #[arg(long, value_enum)]
    pub mode: FaultMode,
    /// flood-stdout: candles to send.
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// flood-stderr: bytes of lines to write.
    #[arg(long, default_value_t = 10_000_000)]
    pub bytes: u64,
    /// flood-stdout: the candles' symbol.
    #[arg(long, default_value = "SYN0000")]
    pub symbol: String,
    /// Wait this long before answering the engine's hello (an adapter slow to connect).
    #[arg(long, default_value_t = 0)]
    pub hello_delay_ms: u64,
    /// bad-fills: the price of every fill.
    #[arg(long, default_value_t = 1.0)]
    pub price: f64,
}

pub fn run(command: AdapterCommand) -> anyhow::Result<ExitCode> {
    match command {
        AdapterCommand::Echo(args) if args.raw => raw_echo(),
        AdapterCommand::Echo(args) if args.delay_ms > 0 => echo_delayed(&args),
        AdapterCommand::Echo(args) => echo(&args),
        AdapterCommand::Paper(args) => paper(&args),
        AdapterCommand::Fault(args) => fault(&args),
    }
}

// ---------------------------------------------------------------- the wire, blocking

/// The largest frame an adapter here accepts from the engine (its requests are a few hundred
/// bytes; this is the engine's default `max_frame_bytes`).
const MAX_ENGINE_FRAME: u32 = 1 << 20;

/// Frames from stdin, cut by the engine's own codec ([`InBuffer`]): blocking reads, or
/// non-blocking after `set_nonblocking`. A frame of a bad length is an error, as it is to the
/// engine.
struct FrameReader(InBuffer);

impl FrameReader {
    fn new() -> FrameReader {
        FrameReader(InBuffer::new(MAX_ENGINE_FRAME))
    }

    /// The next whole frame already read, if any (consumed).
    fn buffered(&mut self) -> io::Result<Option<Vec<u8>>> {
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        match self.0.next_frame() {
            FrameStatus::Frame(f) => Ok(Some(f.to_vec())),
            FrameStatus::Incomplete => Ok(None),
            FrameStatus::Oversized(n) => Err(bad(format!(
                "the engine announced a frame of {n} bytes, over {MAX_ENGINE_FRAME}"
            ))),
            FrameStatus::Empty => Err(bad("the engine sent an empty frame".into())),
        }
    }

    /// Bytes read but not yet taken as frames.
    fn buffered_len(&self) -> usize {
        self.0.buffered()
    }

    /// Read once from stdin; false at end-of-file. `WouldBlock` is passed through.
    fn fill(&mut self) -> io::Result<bool> {
        let n = io::stdin().lock().read(self.0.space())?;
        self.0.filled(n);
        Ok(n > 0)
    }

    /// The next frame, blocking; `None` at end-of-file.
    fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(f) = self.buffered()? {
                return Ok(Some(f));
            }
            match self.fill() {
                Ok(false) => return Ok(None),
                Ok(true) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Append one frame with `message` as JSON to `out` (the length prefix is the protocol's).
fn frame<W: Write + ?Sized>(out: &mut W, message: &impl Serialize) -> io::Result<()> {
    let body = serde_json::to_vec(message)?;
    out.write_all(&protocol::header(body.len()))?;
    out.write_all(&body)
}

/// What the engine sends, as an adapter reads it: fields of every request type, all optional.
/// Deliberately not the engine's typed `protocol::Outgoing`: an adapter is liberal in what it
/// accepts, so a request of a type, a side or an order type it does not know is answered with
/// the protocol's `error` (`bad_request`, `not_supported`) instead of failing the frame.
#[derive(Deserialize, Debug, Default)]
struct Msg {
    #[serde(rename = "type")]
    kind: String,
    id: Option<u64>,
    seq: Option<u64>,
    symbol: Option<String>,
    from_ns: Option<i64>,
    to_ns: Option<i64>,
    bar_ns: Option<u64>,
    side: Option<String>,
    qty: Option<f64>,
    order_type: Option<String>,
    limit_price: Option<f64>,
    stop_price: Option<f64>,
    time_in_force: Option<String>,
    expire_ns: Option<i64>,
    reduce_only: Option<bool>,
    order: Option<u64>,
    max_frame: Option<u32>,
}

fn parse(frame: &[u8]) -> anyhow::Result<Msg> {
    serde_json::from_slice(frame).context("a frame from the engine that is not a message")
}

fn hello_reply(name: &str, capabilities: &[&str]) -> serde_json::Value {
    json!({
        "type": "hello",
        "protocol": protocol::PROTOCOL_VERSION,
        "name": name,
        "version": env!("CARGO_PKG_VERSION"),
        "capabilities": capabilities,
    })
}

const ALL_CAPS: [&str; 4] = ["accounts", "bars", "subscribe", "orders"];
/// The paper broker does every order type and time in force, and changes working orders.
const PAPER_CAPS: [&str; 8] = [
    "accounts",
    "bars",
    "subscribe",
    "orders",
    "stop_orders",
    "time_in_force",
    "reduce_only",
    "replace",
];

// ---------------------------------------------------------------- echo

/// The echo adapter's answers to one message (none for unknown types). They depend on the
/// message alone (no clock: a fill carries no `ts_ns`), so an engine on the simulated driver
/// records the same run twice.
fn echo_answer(m: &Msg, bars: u64, out: &mut impl Write) -> io::Result<()> {
    let id = m.id.unwrap_or(0);
    match m.kind.as_str() {
        "hello" => frame(out, &hello_reply("tickloop-echo", &ALL_CAPS)),
        "ping" => frame(out, &json!({"type": "pong", "seq": m.seq.unwrap_or(0)})),
        "get_accounts" => {
            frame(
                out,
                &json!({"type": "account", "id": id, "account": "ECHO", "currency": "USD",
                        "cash": 1e6, "equity": 1e6, "buying_power": 1e6}),
            )?;
            frame(out, &json!({"type": "done", "id": id, "count": 1}))
        }
        "get_historical_bars" => {
            let from = m.from_ns.unwrap_or(0);
            let to = m.to_ns.unwrap_or(from);
            let step = m.bar_ns.unwrap_or(1).max(1);
            let span = (to.saturating_sub(from).max(0) as u64).div_ceil(step);
            let n = span.min(bars);
            for i in 0..n {
                let p = 100.0 + i as f64;
                frame(
                    out,
                    &json!({"type": "bar", "id": id, "ts_ns": from + (i * step) as i64,
                            "open": p, "high": p + 1.0, "low": p - 1.0, "close": p, "volume": 10}),
                )?;
            }
            frame(out, &json!({"type": "done", "id": id, "count": n}))
        }
        "subscribe" => frame(out, &json!({"type": "done", "id": id})),
        "place_order" => {
            let qty = m.qty.unwrap_or(0.0);
            let price = m.limit_price.unwrap_or(100.0);
            frame(
                out,
                &json!({"type": "done", "id": id, "ref": format!("E-{id}")}),
            )?;
            frame(
                out,
                &json!({"type": "order_update", "order": id, "status": "filled",
                        "filled": qty, "remaining": 0, "avg_price": price}),
            )?;
            frame(
                out,
                &json!({"type": "fill", "order": id, "qty": qty, "price": price, "fee": 0,
                        "trade_id": format!("E-{id}")}),
            )
        }
        "cancel_order" => frame(
            out,
            &json!({"type": "error", "id": id, "code": "unknown_order",
                    "message": "echo fills every order at once; nothing is open"}),
        ),
        _ => Ok(()),
    }
}

/// The fields the echo adapter's quick answers need, borrowed from the frame.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    id: Option<u64>,
    seq: Option<u64>,
}

/// Answer `ping` and `subscribe` without building JSON values (the benchmark's messages);
/// false for anything else.
fn echo_quick(frame: &[u8], out: &mut impl Write) -> anyhow::Result<bool> {
    let head: Head<'_> = serde_json::from_slice(frame)?;
    let mut buf = [0u8; 64];
    let mut w: &mut [u8] = &mut buf;
    match &*head.kind {
        "ping" => write!(w, r#"{{"type":"pong","seq":{}}}"#, head.seq.unwrap_or(0))?,
        "subscribe" => write!(w, r#"{{"type":"done","id":{}}}"#, head.id.unwrap_or(0))?,
        _ => return Ok(false),
    }
    let len = 64 - w.len();
    out.write_all(&protocol::header(len))?;
    out.write_all(&buf[..len])?;
    Ok(true)
}

fn echo(args: &EchoArgs) -> anyhow::Result<ExitCode> {
    let mut input = FrameReader::new();
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    while let Some(f) = input.next()? {
        if !echo_quick(&f, &mut out)? {
            let m = parse(&f)?;
            echo_answer(&m, args.bars, &mut out)?;
        }
        // Answers to requests that arrived together leave in one write.
        if input.buffered_len() == 0 {
            out.flush()?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Echo with every answer but `pong` and `hello` held back `delay_ms`: answers leave in the
/// order their requests came, each when due, while more requests keep arriving.
fn echo_delayed(args: &EchoArgs) -> anyhow::Result<ExitCode> {
    let delay = Duration::from_millis(args.delay_ms);
    let mut input = FrameReader::new();
    let mut out = io::stdout().lock();
    let mut due: VecDeque<(std::time::Instant, Vec<u8>)> = VecDeque::new();
    loop {
        let now = std::time::Instant::now();
        while due.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, answer)) = due.pop_front() {
                out.write_all(&answer)?;
            }
        }
        while let Some(f) = input.buffered()? {
            let m = parse(&f)?;
            if matches!(m.kind.as_str(), "hello" | "ping") {
                echo_answer(&m, args.bars, &mut out)?;
            } else {
                let mut answer = Vec::new();
                echo_answer(&m, args.bars, &mut answer)?;
                due.push_back((now + delay, answer));
            }
        }
        out.flush()?;
        let timeout_ms = due.front().map_or(-1, |(t, _)| {
            t.saturating_duration_since(now).as_micros().div_ceil(1000) as i32
        });
        let mut pfd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if n > 0 {
            match input.fill() {
                // The engine closed stdin: it is stopping; answers still due are not wanted.
                Ok(false) => return Ok(ExitCode::SUCCESS),
                Ok(true) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Echo 8-byte messages until end-of-file: the raw pipe round trip the benchmark compares
/// the protocol with.
fn raw_echo() -> anyhow::Result<ExitCode> {
    let mut stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    let mut msg = [0u8; 8];
    loop {
        match stdin.read_exact(&mut msg) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(e.into()),
        }
        stdout.write_all(&msg)?;
        stdout.flush()?;
    }
}

// ---------------------------------------------------------------- fault

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Read the engine's hello and answer it; the engine's max_frame.
fn handshake(input: &mut FrameReader, out: &mut impl Write) -> anyhow::Result<u32> {
    let Some(f) = input.next()? else {
        bail!("stdin ended before the hello");
    };
    let m = parse(&f)?;
    if m.kind != "hello" {
        bail!("the engine's first message was {:?}", m.kind);
    }
    frame(out, &hello_reply("tickloop-fault", &ALL_CAPS))?;
    out.flush()?;
    Ok(m.max_frame.unwrap_or(1 << 20))
}

/// Answer like echo until end-of-file, writing through a shared stdout.
fn echo_shared(input: &mut FrameReader, out: &Mutex<BufWriter<io::Stdout>>) -> anyhow::Result<()> {
    while let Some(f) = input.next()? {
        let m = parse(&f)?;
        let mut o = out.lock().unwrap();
        echo_answer(&m, 3, &mut *o)?;
        o.flush()?;
    }
    Ok(())
}

fn fault(args: &FaultArgs) -> anyhow::Result<ExitCode> {
    let mode = args.mode;
    if mode == FaultMode::ExitAtOnce {
        return Ok(ExitCode::from(3));
    }
    let mut input = FrameReader::new();
    let stdout = Arc::new(Mutex::new(BufWriter::with_capacity(1 << 16, io::stdout())));
    if mode == FaultMode::NoRead {
        let mut o = stdout.lock().unwrap();
        frame(&mut *o, &hello_reply("tickloop-fault", &ALL_CAPS))?;
        o.flush()?;
        drop(o);
        sleep_forever();
    }
    std::thread::sleep(Duration::from_millis(args.hello_delay_ms));
    let max_frame = {
        let mut o = stdout.lock().unwrap();
        handshake(&mut input, &mut *o)?
    };
    match mode {
        FaultMode::Hang => sleep_forever(),
        FaultMode::Oversized => {
            let mut o = stdout.lock().unwrap();
            o.write_all(&protocol::header(max_frame.saturating_add(1) as usize))?;
            o.write_all(b"{\"type\":\"candle\"")?;
            o.flush()?;
            drop(o);
            sleep_forever();
        }
        FaultMode::Garbage => {
            let mut o = stdout.lock().unwrap();
            o.write_all(&protocol::header(16))?;
            o.write_all(b"this is garbage!")?;
            o.flush()?;
            drop(o);
            sleep_forever();
        }
        FaultMode::DieMidFrame => {
            let _ = input.next()?;
            let mut o = stdout.lock().unwrap();
            o.write_all(&protocol::header(100))?;
            o.write_all(b"{\"type\":\"do")?;
            o.flush()?;
            std::process::exit(1);
        }
        FaultMode::FloodStdout => {
            let out = stdout.clone();
            let (count, symbol) = (args.count, args.symbol.clone());
            std::thread::spawn(move || -> io::Result<()> {
                for i in 1..=count {
                    let mut o = out.lock().unwrap();
                    frame(
                        &mut *o,
                        &json!({"type": "candle", "symbol": symbol, "ts_ns": i,
                                "open": 1.5, "high": 2.5, "low": 0.5, "close": 2.0, "volume": 100.0}),
                    )?;
                }
                out.lock().unwrap().flush()
            });
            echo_shared(&mut input, &stdout)?;
        }
        FaultMode::FloodStderr => {
            let bytes = args.bytes;
            std::thread::spawn(move || -> io::Result<()> {
                let mut err = BufWriter::with_capacity(1 << 16, io::stderr());
                // One line far over any sane limit, first (while the log's rate allows it).
                err.write_all(&vec![b'y'; 1 << 20])?;
                err.write_all(b"\n")?;
                let mut written = 0u64;
                let mut n = 0u64;
                while written < bytes {
                    let line = format!("stderr flood line {n:>10} {}\n", "x".repeat(70));
                    err.write_all(line.as_bytes())?;
                    written += line.len() as u64;
                    n += 1;
                }
                err.write_all(b"stderr flood done\n")?;
                err.flush()
            });
            echo_shared(&mut input, &stdout)?;
        }
        FaultMode::Stubborn | FaultMode::IgnoreEof => {
            if mode == FaultMode::Stubborn {
                // SAFETY: setting a signal disposition to ignore.
                unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
            }
            echo_shared(&mut input, &stdout)?;
            sleep_forever();
        }
        FaultMode::Mute => {
            while let Some(f) = input.next()? {
                let m = parse(&f)?;
                if m.kind == "ping" {
                    let mut o = stdout.lock().unwrap();
                    frame(&mut *o, &json!({"type": "pong", "seq": m.seq.unwrap_or(0)}))?;
                    o.flush()?;
                }
            }
        }
        FaultMode::BadFills => {
            while let Some(f) = input.next()? {
                let m = parse(&f)?;
                let mut o = stdout.lock().unwrap();
                if m.kind == "place_order" {
                    bad_fills(&m, args.price, &mut *o)?;
                } else {
                    echo_answer(&m, 3, &mut *o)?;
                }
                o.flush()?;
            }
        }
        FaultMode::ExitAtOnce | FaultMode::NoRead => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Accept order `m`, then fill it exactly, with every kind of fill the engine must refuse
/// around the real ones (each refused one a `fill_fault` there).
fn bad_fills(m: &Msg, price: f64, out: &mut impl Write) -> io::Result<()> {
    let id = m.id.unwrap_or(0);
    let qty = m.qty.unwrap_or(0.0);
    let fill = |out: &mut dyn Write, order: u64, qty: f64, price: f64, trade: Option<String>| {
        let mut f = json!({"type": "fill", "order": order, "qty": qty, "price": price,
                           "ts_ns": 1_700_000_000_000_000_000i64 + id as i64});
        if let Some(t) = trade {
            f["trade_id"] = json!(t);
        }
        frame(out, &f)
    };
    frame(
        out,
        &json!({"type": "done", "id": id, "ref": format!("B-{id}")}),
    )?;
    fill(out, id, 3.0 * qty, price, None)?; // overfill
    fill(out, id, -qty, price, None)?; // negative
    fill(out, id, qty, 0.0, None)?; // zero price
    fill(out, id + 1_000_000, qty, price, None)?; // an order never placed
    let part = (qty / 2.0).floor();
    if part > 0.0 {
        fill(out, id, part, price, None)?;
        fill(out, id, part, price, None)?; // the same content, no trade id
    }
    fill(out, id, qty - part, price, Some(format!("T-{id}")))?;
    fill(out, id, qty - part, price, Some(format!("T-{id}"))) // the same trade id
}

// ---------------------------------------------------------------- paper

#[derive(Clone, Copy)]
struct Order {
    id: u64,
    symbol: u32,
    buy: bool,
    qty: f64,
    limit: Option<f64>,
    /// Its stop until the stop is reached.
    stop: Option<f64>,
    tif: TimeInForce,
    reduce_only: bool,
}

/// The order a `place_order` asks for, or the error code and message that refuse it.
fn order_of(m: &Msg, id: u64, symbol: u32) -> Result<Order, (&'static str, String)> {
    let bad = |why: String| ("bad_request", why);
    let qty = m.qty.unwrap_or(0.0);
    if !(qty.is_finite() && qty > 0.0) {
        return Err(bad("qty must be a positive number".into()));
    }
    let buy = match m.side.as_deref() {
        Some("buy") => true,
        Some("sell") => false,
        _ => return Err(bad("side must be buy or sell".into())),
    };
    let price = |p: Option<f64>, what: &str| match p {
        Some(p) if p.is_finite() && p > 0.0 => Ok(p),
        _ => Err(bad(format!("a {what} order needs a positive {what}_price"))),
    };
    let (limit, stop) = match m.order_type.as_deref() {
        Some("market") | None => (None, None),
        Some("limit") => (Some(price(m.limit_price, "limit")?), None),
        Some("stop") => (None, Some(price(m.stop_price, "stop")?)),
        Some("stop_limit") => (
            Some(price(m.limit_price, "limit")?),
            Some(price(m.stop_price, "stop")?),
        ),
        Some(other) => return Err(("not_supported", format!("order type {other:?}"))),
    };
    let tif = match (m.time_in_force.as_deref(), m.expire_ns) {
        (None | Some("gtc"), _) => TimeInForce::Gtc,
        (Some("ioc"), _) => TimeInForce::Ioc,
        (Some("fok"), _) => TimeInForce::Fok,
        (Some("gtd"), Some(t)) => TimeInForce::Gtd(t),
        (Some("gtd"), None) => return Err(bad("a gtd order needs expire_ns".into())),
        (Some(other), _) => {
            return Err(bad(format!(
                "time_in_force {other:?} is not gtc, ioc, fok or gtd"
            )))
        }
    };
    Ok(Order {
        id,
        symbol,
        buy,
        qty,
        limit,
        stop,
        tif,
        reduce_only: m.reduce_only.unwrap_or(false),
    })
}

struct Paper {
    reader: Reader,
    fee_bps: f64,
    cash: f64,
    positions: BTreeMap<u32, f64>,
    last: HashMap<u32, f64>,
    history: HashMap<u32, VecDeque<Candle>>,
    keep: usize,
    subscribed: Vec<bool>,
    open: Vec<Order>,
    names: HashMap<String, u32>,
}

impl Paper {
    /// The ring's id of symbol `name` (the table is re-read when a name is new).
    fn symbol(&mut self, name: &str) -> Option<u32> {
        if let Some(&id) = self.names.get(name) {
            return Some(id);
        }
        let mut id = self.names.len() as u32;
        while let Some(n) = self.reader.symbol_name(id) {
            self.names.insert(n.to_string(), id);
            id += 1;
        }
        self.names.get(name).copied()
    }

    fn name(&self, id: u32) -> String {
        self.reader
            .symbol_name(id)
            .map_or_else(|| format!("#{id}"), str::to_string)
    }

    fn equity(&self) -> f64 {
        self.cash
            + self
                .positions
                .iter()
                .map(|(s, q)| q * self.last.get(s).copied().unwrap_or(0.0))
                .sum::<f64>()
    }

    fn unknown_symbol(out: &mut impl Write, id: u64, name: &str) -> io::Result<()> {
        frame(
            out,
            &json!({"type": "error", "id": id, "code": "unknown_symbol",
                    "message": format!("symbol {name:?} is not in the ring's symbol table")}),
        )
    }

    fn request(&mut self, m: &Msg, out: &mut impl Write) -> io::Result<()> {
        let id = m.id.unwrap_or(0);
        match m.kind.as_str() {
            "hello" => frame(out, &hello_reply("tickloop-paper", &PAPER_CAPS)),
            "ping" => frame(out, &json!({"type": "pong", "seq": m.seq.unwrap_or(0)})),
            "get_accounts" => {
                frame(
                    out,
                    &json!({"type": "account", "id": id, "account": "PAPER", "currency": "USD",
                            "cash": self.cash, "equity": self.equity(), "buying_power": self.cash}),
                )?;
                frame(out, &json!({"type": "done", "id": id, "count": 1}))
            }
            "get_historical_bars" => {
                let name = m.symbol.clone().unwrap_or_default();
                let Some(symbol) = self.symbol(&name) else {
                    return Self::unknown_symbol(out, id, &name);
                };
                let (from, to) = (m.from_ns.unwrap_or(i64::MIN), m.to_ns.unwrap_or(i64::MAX));
                let mut n = 0;
                if let Some(h) = self.history.get(&symbol) {
                    for c in h.iter().filter(|c| c.ts_ns >= from && c.ts_ns < to) {
                        frame(
                            out,
                            &json!({"type": "bar", "id": id, "ts_ns": c.ts_ns, "open": c.open,
                                    "high": c.high, "low": c.low, "close": c.close, "volume": c.volume}),
                        )?;
                        n += 1;
                    }
                }
                frame(out, &json!({"type": "done", "id": id, "count": n}))
            }
            "subscribe" => {
                let name = m.symbol.clone().unwrap_or_default();
                let Some(symbol) = self.symbol(&name) else {
                    return Self::unknown_symbol(out, id, &name);
                };
                if self.subscribed.len() <= symbol as usize {
                    self.subscribed.resize(symbol as usize + 1, false);
                }
                self.subscribed[symbol as usize] = true;
                frame(out, &json!({"type": "done", "id": id}))
            }
            "place_order" => {
                let name = m.symbol.clone().unwrap_or_default();
                let Some(symbol) = self.symbol(&name) else {
                    return Self::unknown_symbol(out, id, &name);
                };
                match order_of(m, id, symbol) {
                    Ok(order) => {
                        let qty = order.qty;
                        self.open.push(order);
                        frame(
                            out,
                            &json!({"type": "done", "id": id, "ref": format!("PAPER-{id}")}),
                        )?;
                        self.update(out, id, "accepted", qty)
                    }
                    Err((code, why)) => frame(
                        out,
                        &json!({"type": "error", "id": id, "code": code, "message": why}),
                    ),
                }
            }
            "cancel_order" => self.cancel(m, id, out),
            "replace_order" => self.replace(m, id, out),
            other => {
                eprintln!("paper: ignoring a message of type {other:?}");
                Ok(())
            }
        }
    }

    /// `cancel_order`: the order leaves the book, cancelled.
    fn cancel(&mut self, m: &Msg, id: u64, out: &mut impl Write) -> io::Result<()> {
        let order = m.order.unwrap_or(0);
        match self.open.iter().position(|o| o.id == order) {
            Some(at) => {
                let o = self.open.remove(at);
                frame(out, &json!({"type": "done", "id": id}))?;
                frame(
                    out,
                    &json!({"type": "order_update", "order": order, "status": "cancelled",
                            "filled": 0, "remaining": o.qty}),
                )
            }
            None => Self::not_open(out, id, order),
        }
    }

    fn not_open(out: &mut impl Write, id: u64, order: u64) -> io::Result<()> {
        frame(
            out,
            &json!({"type": "error", "id": id, "code": "unknown_order",
                    "message": format!("order {order} is not open")}),
        )
    }

    /// `replace_order`: the order works on, changed, under the replace's id.
    fn replace(&mut self, m: &Msg, id: u64, out: &mut impl Write) -> io::Result<()> {
        let order = m.order.unwrap_or(0);
        let Some(at) = self.open.iter().position(|o| o.id == order) else {
            return Self::not_open(out, id, order);
        };
        // Its new client id is the replace's id: the venue names it by that from now on.
        let old = self.open[at];
        match order_of(m, id, old.symbol) {
            Ok(new) => {
                self.open[at] = Order {
                    tif: old.tif,
                    reduce_only: old.reduce_only,
                    ..new
                };
                frame(out, &json!({"type": "done", "id": id}))
            }
            Err((code, why)) => frame(
                out,
                &json!({"type": "error", "id": id, "code": code, "message": why}),
            ),
        }
    }

    /// A candle read from the ring: fill what it fills (backtesting.py's rules, as the
    /// engine's own paper broker: `tickloop_strategy::matching`), forward it if subscribed,
    /// keep it.
    fn candle(&mut self, c: &Candle, out: &mut impl Write) -> io::Result<()> {
        let mut k = 0;
        while k < self.open.len() {
            if self.open[k].symbol == c.symbol && self.match_order(k, c, out)? {
                continue; // it ended: the next one is at `k` now
            }
            k += 1;
        }
        self.last.insert(c.symbol, c.close);
        if self.subscribed.get(c.symbol as usize) == Some(&true) {
            frame(
                out,
                &json!({"type": "candle", "symbol": self.name(c.symbol), "ts_ns": c.ts_ns,
                        "open": c.open, "high": c.high, "low": c.low, "close": c.close,
                        "volume": c.volume}),
            )?;
        }
        let h = self.history.entry(c.symbol).or_default();
        if h.len() == self.keep {
            h.pop_front();
        }
        h.push_back(*c);
        Ok(())
    }

    /// Order `k` on candle `c`: whether it ended (filled, cancelled, expired) and left the book.
    fn match_order(&mut self, k: usize, c: &Candle, out: &mut impl Write) -> io::Result<bool> {
        let o = &self.open[k];
        let (id, qty) = (o.id, o.qty);
        if matches!(o.tif, TimeInForce::Gtd(t) if c.ts_ns >= t) {
            self.open.remove(k);
            self.update(out, id, "expired", qty)?;
            return Ok(true);
        }
        let price = match match_bar(o.buy, o.limit, o.stop, c.open, c.high, c.low, c.open) {
            Matched::Fills { price, triggered } => {
                if triggered {
                    self.update(out, id, "triggered", qty)?;
                }
                Some(price)
            }
            Matched::Triggered => {
                self.open[k].stop = None;
                self.update(out, id, "triggered", qty)?;
                None
            }
            Matched::Waits => None,
        };
        // What the position allows a reduce-only order.
        let o = &self.open[k];
        let position = self.positions.get(&o.symbol).copied().unwrap_or(0.0);
        let allowed = if !o.reduce_only {
            o.qty
        } else if (position > 0.0 && !o.buy) || (position < 0.0 && o.buy) {
            o.qty.min(position.abs())
        } else {
            0.0
        };
        let Some(price) = price.filter(|_| allowed > 0.0) else {
            if matches!(o.tif, TimeInForce::Ioc | TimeInForce::Fok) || price.is_some() {
                // IOC and FOK get one candle; reduce-only with nothing to reduce ends.
                self.open.remove(k);
                self.update(out, id, "cancelled", qty)?;
                return Ok(true);
            }
            return Ok(false);
        };
        let o = self.open.remove(k);
        self.fill(&o, allowed, price, c.ts_ns, out)?;
        Ok(true)
    }

    /// `qty` of order `o` filled at `price`; a reduce-only cut short has the rest cancelled.
    fn fill(
        &mut self,
        o: &Order,
        qty: f64,
        price: f64,
        ts_ns: i64,
        out: &mut impl Write,
    ) -> io::Result<()> {
        let signed = if o.buy { qty } else { -qty };
        let fee = (qty * price).abs() * self.fee_bps / 10_000.0;
        self.cash -= signed * price + fee;
        *self.positions.entry(o.symbol).or_insert(0.0) += signed;
        frame(
            out,
            &json!({"type": "fill", "order": o.id, "symbol": self.name(o.symbol),
                    "side": if o.buy { "buy" } else { "sell" }, "qty": qty, "price": price,
                    "fee": fee, "ts_ns": ts_ns, "trade_id": format!("P-{}", o.id)}),
        )?;
        if qty < o.qty {
            self.update(out, o.id, "cancelled", o.qty - qty)
        } else {
            frame(
                out,
                &json!({"type": "order_update", "order": o.id, "status": "filled",
                        "filled": qty, "remaining": 0, "avg_price": price}),
            )
        }
    }

    /// An `order_update` without a fill: `remaining` is what the order was for.
    fn update(
        &self,
        out: &mut impl Write,
        order: u64,
        status: &str,
        remaining: f64,
    ) -> io::Result<()> {
        frame(
            out,
            &json!({"type": "order_update", "order": order, "status": status,
                    "filled": 0, "remaining": remaining}),
        )
    }

    /// Read every candle the ring has now.
    fn drain(&mut self, out: &mut impl Write) -> io::Result<()> {
        loop {
            match self.reader.try_read() {
                ReadResult::Candle { candle, .. } => self.candle(&candle, out)?,
                ReadResult::Overrun { lost } => {
                    eprintln!("paper: lapped by the ring's writer: {lost} candles skipped")
                }
                ReadResult::NewWriter { .. } => {}
                ReadResult::Empty | ReadResult::RingRemoved => return Ok(()),
            }
        }
    }
}

fn paper(args: &PaperArgs) -> anyhow::Result<ExitCode> {
    let path = ring::ring_path(&args.ring)?;
    let reader = Reader::attach(
        &path,
        ReaderOptions {
            start: Start::Oldest,
            register: false,
        },
    )?;
    let mut p = Paper {
        reader,
        fee_bps: args.fee_bps,
        cash: args.cash,
        positions: BTreeMap::new(),
        last: HashMap::new(),
        history: HashMap::new(),
        keep: args.history.max(1),
        subscribed: Vec::new(),
        open: Vec::new(),
        names: HashMap::new(),
    };
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    // What the ring holds now is history: no order is open yet.
    p.drain(&mut out)?;
    // SAFETY: fcntl on our own stdin.
    unsafe {
        let flags = libc::fcntl(0, libc::F_GETFL);
        libc::fcntl(0, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let mut input = FrameReader::new();
    loop {
        let mut pfd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd. A 1 ms timeout: candles are looked for every 1 ms.
        unsafe { libc::poll(&mut pfd, 1, 1) };
        if pfd.revents != 0 {
            loop {
                match input.fill() {
                    Ok(true) => {}
                    Ok(false) => {
                        out.flush()?;
                        return Ok(ExitCode::SUCCESS);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            while let Some(f) = input.buffered()? {
                let m = parse(&f)?;
                // Candles that arrived before this request are not "next" for its order.
                p.drain(&mut out)?;
                p.request(&m, &mut out)?;
            }
        }
        p.drain(&mut out)?;
        out.flush()?;
    }
}
