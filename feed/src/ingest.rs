//! Line-protocol ingest: external producers send candles as JSON lines over TCP or UDP on
//! loopback, and each good line becomes one sealed candle in the ring.
//!
//! One line, one candle (UTF-8 JSON object, ending in `\n`; a UDP datagram holds one or more
//! lines):
//!
//! ```text
//! {"ts_ns":1492592400000000000,"symbol":"EURUSD","open":1.0716,"high":1.0722,"low":1.07083,"close":1.07219,"volume":1413}
//! ```
//!
//! `ts_ns` (integer, ns since the epoch), `symbol` (1 to 31 bytes), `open`, `high`, `low`,
//! `close` (numbers) are required; `volume` is optional (0). Unknown fields are refused, so a
//! typo is not silently lost. A line is **bad** if it is not such an object, fails the candle
//! checks every feed applies ([`crate::check_candle`]), is longer than [`MAX_INGEST_LINE`] bytes, names
//! a symbol the ring has no room for, or has a `ts_ns` earlier than that symbol's previous line
//! (equal is allowed: an updated bar). Bad lines are counted, the first [`QUOTED_BAD_LINES`]
//! are kept (quoted, cut to 120 bytes) for the report, and ingest carries on.
//!
//! This module owns its sockets and the bounded buffers behind them: at most `max_clients` TCP
//! connections (more are accepted and closed at once, counted), one line's worth of buffer per
//! connection, one 64 KiB read buffer. It is single-threaded (mio), never binds anything but a
//! loopback address (the protocol has no authentication), and never crashes on input.

use crate::dataset::{check_candle, check_symbol_name};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tickloop_ring::sys;
use tickloop_ring::{verify, Candle, RingError, Writer};

use crate::limits::INGEST_READ_BUFFER as READ_BUFFER;
pub use crate::limits::{MAX_CLIENTS, MAX_INGEST_LINE, QUOTED_BAD_LINES};

const SOURCE: Token = Token(0);

/// Where ingest listens: `tcp://127.0.0.1:PORT` or `udp://127.0.0.1:PORT` (any loopback
/// address, `[::1]` included; port 0 picks a free one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Udp(SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Listen, String> {
        let usage = "use tcp://127.0.0.1:PORT or udp://127.0.0.1:PORT";
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("{s:?} is not a listen address: {usage}"))?;
        let addr: SocketAddr = rest
            .parse()
            .map_err(|_| format!("{rest:?} is not an IP address and port: {usage}"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr} is not a loopback address: the line protocol has no authentication, so ingest listens on loopback only (127.0.0.0/8 or [::1]); relay remote producers through something that authenticates them"
            ));
        }
        match scheme {
            "tcp" => Ok(Listen::Tcp(addr)),
            "udp" => Ok(Listen::Udp(addr)),
            _ => Err(format!("{scheme:?} is not tcp or udp: {usage}")),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "tcp://{a}"),
            Listen::Udp(a) => write!(f, "udp://{a}"),
        }
    }
}

/// One line as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    ts_ns: i64,
    symbol: String,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    #[serde(default)]
    volume: f64,
}

/// A bad line, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// Who sent it and where: `tcp 127.0.0.1:40112 line 3`, `udp 127.0.0.1:40112 datagram 2`.
    pub from: String,
    /// The line, cut to 120 bytes.
    pub text: String,
    pub problem: String,
}

/// What an ingest run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestReport {
    pub candles: u64,
    pub bad_lines: u64,
    pub first_bad: Vec<BadLine>,
    /// Distinct symbols received.
    pub symbols: usize,
    /// TCP connections served, and refused for want of room.
    pub connections: u64,
    pub refused: u64,
    pub datagrams: u64,
    pub seconds: f64,
}

enum Source {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    /// The current line so far (at most MAX_INGEST_LINE bytes).
    pending: Vec<u8>,
    line_no: u64,
    /// Skipping the rest of a line that was too long.
    discarding: bool,
}

/// A bound ingest socket; [`Ingest::run`] serves it.
pub struct Ingest {
    poll: Poll,
    source: Source,
    local: SocketAddr,
    listen: Listen,
    /// One entry per allowed connection (`max_clients` of them).
    clients: Vec<Option<Client>>,
}

impl Ingest {
    /// Bind the socket now (so the caller can report the address, port 0 resolved).
    pub fn bind(listen: Listen, max_clients: usize) -> io::Result<Ingest> {
        let poll = Poll::new()?;
        let (source, local) = match listen {
            Listen::Tcp(addr) => {
                let mut l = TcpListener::bind(addr)?;
                poll.registry()
                    .register(&mut l, SOURCE, Interest::READABLE)?;
                let local = l.local_addr()?;
                (Source::Tcp(l), local)
            }
            Listen::Udp(addr) => {
                let mut s = UdpSocket::bind(addr)?;
                poll.registry()
                    .register(&mut s, SOURCE, Interest::READABLE)?;
                let local = s.local_addr()?;
                (Source::Udp(s), local)
            }
        };
        Ok(Ingest {
            poll,
            source,
            local,
            listen,
            clients: (0..max_clients.max(1)).map(|_| None).collect(),
        })
    }

    /// The bound address (with the port the system picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The bound address as a `tcp://` or `udp://` URL.
    pub fn url(&self) -> String {
        match self.listen {
            Listen::Tcp(_) => format!("tcp://{}", self.local),
            Listen::Udp(_) => format!("udp://{}", self.local),
        }
    }

    /// Serve until `stop` is set or, if `count` > 0, `count` candles were published.
    pub fn run(
        &mut self,
        writer: &mut Writer,
        count: u64,
        stop: &AtomicBool,
    ) -> Result<IngestReport, RingError> {
        let start = sys::monotonic_ns();
        let mut sink = Sink {
            writer,
            ids: HashMap::new(),
            last_ts: HashMap::new(),
            report: IngestReport::default(),
        };
        let mut events = Events::with_capacity(256);
        let mut buffer = vec![0u8; READ_BUFFER];
        let mut last_heartbeat = start;
        let done = |sink: &Sink| count > 0 && sink.report.candles >= count;
        while !stop.load(Ordering::Relaxed) && !done(&sink) {
            if let Err(e) = self.poll.poll(&mut events, Some(Duration::from_millis(50))) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(RingError::Io {
                    op: "waiting for ingest input for",
                    path: sink.writer.path().to_owned(),
                    cause: e,
                });
            }
            for event in events.iter() {
                if event.token() == SOURCE {
                    match &self.source {
                        Source::Tcp(_) => self.accept(&mut sink),
                        Source::Udp(_) => self.receive(&mut sink, &mut buffer, count),
                    }
                } else {
                    self.serve(event.token().0 - 1, &mut sink, &mut buffer, count);
                }
                if done(&sink) {
                    break;
                }
            }
            let now = sys::monotonic_ns();
            if now - last_heartbeat >= 50_000_000 {
                last_heartbeat = now;
                sink.writer.heartbeat(sys::realtime_ns());
            }
        }
        sink.writer.heartbeat(sys::realtime_ns());
        let mut report = sink.report;
        report.symbols = sink.ids.len();
        report.seconds = (sys::monotonic_ns() - start) as f64 / 1e9;
        Ok(report)
    }

    fn accept(&mut self, sink: &mut Sink) {
        let Source::Tcp(listener) = &self.source else {
            return;
        };
        loop {
            let (mut stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A connection that died before we took it, or out of descriptors: try later.
                Err(_) => return,
            };
            let Some(slot) = self.clients.iter().position(Option::is_none) else {
                sink.report.refused += 1;
                drop(stream);
                continue;
            };
            if self
                .poll
                .registry()
                .register(&mut stream, Token(slot + 1), Interest::READABLE)
                .is_err()
            {
                sink.report.refused += 1;
                continue;
            }
            sink.report.connections += 1;
            self.clients[slot] = Some(Client {
                stream,
                peer,
                pending: Vec::with_capacity(256),
                line_no: 0,
                discarding: false,
            });
        }
    }

    fn serve(&mut self, slot: usize, sink: &mut Sink, buffer: &mut [u8], count: u64) {
        let Some(Some(client)) = self.clients.get_mut(slot) else {
            return;
        };
        let mut closed = false;
        loop {
            if count > 0 && sink.report.candles >= count {
                break;
            }
            match client.stream.read(buffer) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => client.feed(&buffer[..n], sink),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            if !client.discarding && !client.pending.is_empty() {
                // A last line without its newline still counts.
                let line = std::mem::take(&mut client.pending);
                client.line_no += 1;
                let from = format!("tcp {} line {}", client.peer, client.line_no);
                sink.line(&line, || from);
            }
            let _ = self.poll.registry().deregister(&mut client.stream);
            self.clients[slot] = None;
        }
    }

    fn receive(&mut self, sink: &mut Sink, buffer: &mut [u8], count: u64) {
        let Source::Udp(socket) = &self.source else {
            return;
        };
        loop {
            if count > 0 && sink.report.candles >= count {
                return;
            }
            let (n, peer) = match socket.recv_from(buffer) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            sink.report.datagrams += 1;
            let datagram = sink.report.datagrams;
            for line in buffer[..n].split(|&b| b == b'\n') {
                if line.len() > MAX_INGEST_LINE {
                    sink.bad(
                        || format!("udp {peer} datagram {datagram}"),
                        line,
                        format!("longer than {MAX_INGEST_LINE} bytes"),
                    );
                } else {
                    sink.line(line, || format!("udp {peer} datagram {datagram}"));
                }
            }
        }
    }
}

impl Client {
    /// Split received bytes into lines, bounding the pending one.
    fn feed(&mut self, mut bytes: &[u8], sink: &mut Sink) {
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|&b| b == b'\n');
            let (chunk, rest) = match newline {
                Some(i) => (&bytes[..i], &bytes[i + 1..]),
                None => (bytes, &[][..]),
            };
            bytes = rest;
            if self.discarding {
                if newline.is_some() {
                    self.discarding = false;
                }
                continue;
            }
            if self.pending.len() + chunk.len() > MAX_INGEST_LINE {
                self.line_no += 1;
                let mut head = std::mem::take(&mut self.pending);
                head.extend_from_slice(&chunk[..chunk.len().min(120)]);
                let from = format!("tcp {} line {}", self.peer, self.line_no);
                sink.bad(
                    || from,
                    &head,
                    format!("longer than {MAX_INGEST_LINE} bytes"),
                );
                self.discarding = newline.is_none();
                continue;
            }
            self.pending.extend_from_slice(chunk);
            if newline.is_some() {
                self.line_no += 1;
                let from = format!("tcp {} line {}", self.peer, self.line_no);
                sink.line(&self.pending, || from);
                self.pending.clear();
            }
        }
    }
}

/// Turns lines into candles in the ring.
struct Sink<'w> {
    writer: &'w mut Writer,
    ids: HashMap<String, u32>,
    /// Last `ts_ns` per ring symbol id.
    last_ts: HashMap<u32, i64>,
    report: IngestReport,
}

impl Sink<'_> {
    fn line(&mut self, raw: &[u8], from: impl FnOnce() -> String) {
        let text = raw.strip_suffix(b"\r").unwrap_or(raw);
        if text.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match self.candle(text) {
            Ok(candle) => {
                let pos = self.writer.next_position();
                self.writer.publish(&verify::seal(pos, candle));
                self.report.candles += 1;
            }
            Err(problem) => self.bad(from, text, problem),
        }
    }

    fn candle(&mut self, text: &[u8]) -> Result<Candle, String> {
        let line: Line = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        let symbol = match self.ids.get(&line.symbol) {
            Some(&id) => id,
            None => {
                check_symbol_name(&line.symbol)?;
                let id = self
                    .writer
                    .symbol(&line.symbol)
                    .map_err(|e| e.to_string())?;
                self.ids.insert(line.symbol.clone(), id);
                id
            }
        };
        let candle = Candle {
            ts_ns: line.ts_ns,
            symbol,
            flags: 0,
            open: line.open,
            high: line.high,
            low: line.low,
            close: line.close,
            volume: line.volume,
        };
        check_candle(&candle).map_err(|b| format!("{}: {}", b.field, b.problem))?;
        let last = self.last_ts.entry(symbol).or_insert(i64::MIN);
        if line.ts_ns < *last {
            return Err(format!(
                "ts_ns {} is before {}'s previous {}",
                line.ts_ns, line.symbol, *last
            ));
        }
        *last = line.ts_ns;
        Ok(candle)
    }

    fn bad(&mut self, from: impl FnOnce() -> String, text: &[u8], problem: String) {
        self.report.bad_lines += 1;
        if self.report.first_bad.len() < QUOTED_BAD_LINES {
            let cut = &text[..text.len().min(120)];
            self.report.first_bad.push(BadLine {
                from: from(),
                text: String::from_utf8_lossy(cut).into_owned(),
                problem,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_are_loopback_tcp_or_udp() {
        assert_eq!(
            "tcp://127.0.0.1:9000".parse::<Listen>(),
            Ok(Listen::Tcp("127.0.0.1:9000".parse().unwrap()))
        );
        assert!(matches!(
            "udp://[::1]:0".parse::<Listen>(),
            Ok(Listen::Udp(_))
        ));
        assert!("tcp://0.0.0.0:9000"
            .parse::<Listen>()
            .unwrap_err()
            .contains("loopback"));
        assert!("http://127.0.0.1:1".parse::<Listen>().is_err());
        assert!("127.0.0.1:1".parse::<Listen>().is_err());
        assert!("tcp://localhost:1".parse::<Listen>().is_err());
    }
}
