//! One adapter's life as a state machine, sans IO: the handshake, requests in flight with
//! their deadlines, pings, faults, exits and restarts with backoff. The host's IO layer feeds
//! it what happened (bytes read, bytes written, a spawn, an exit, the time) and performs what
//! it asks ([`IoAction`]: spawn, kill); it hands back [`AdapterEvent`]s for the app.
//!
//! It owns the connection's buffers ([`InBuffer`], [`OutQueue`]), the in-flight table, a
//! [`TimerWheel`] of its deadlines, its queue of events for the app, and its counters; all
//! allocated in [`Session::new`], fixed in size.
//!
//! It never does IO, never reads a clock (every call is given `now`), never allocates after
//! `new`, and never panics on what an adapter sends: every breach is a [`Fault`] that ends in
//! a kill, a `Down` event and a restart. Its invariants: a request it accepted ends in exactly
//! one `Done` or `Failed`; a refused one gets one `Failed { Refused }`; one `Down` per process.

use super::config::AdapterConfig;
use super::protocol::{self, ClientId, FrameStatus, InBuffer, Incoming, OutQueue, Outgoing};
use crate::timer::{TimerKey, TimerWheel};
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt;
use tickloop_app::clock::{Nanos, MILLIS};
use tickloop_app::venue::{
    AdapterEvent, AdapterId, Capabilities, DownCause, ErrorCode, ExitStatus, FailReason, Fault,
    Name, OrderStatus, OrderType, Request, RequestError, RequestId, RequestKind, Side, TimeInForce,
    MAX_REQUEST_ID,
};
use tickloop_ring::Candle;

/// How long an adapter may keep running after closing its stdout or stdin before that is a
/// fault (an exiting process closes them a moment before it is gone).
pub const EOF_GRACE: Nanos = 1_000 * MILLIS;

/// Where an adapter is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterState {
    /// Not started yet.
    #[default]
    Idle,
    /// Its process runs; waiting for its `hello`.
    Starting,
    /// Handshake done: requests are accepted.
    Ready,
    /// Being killed (hang or fault); waiting for the process to end.
    Stopping,
    /// Down; restarts when its backoff ends.
    Backoff,
    /// The engine is shutting down: no restarts, no requests.
    Closed,
}

impl AdapterState {
    /// A small number for metrics (0 idle, 1 starting, 2 ready, 3 stopping, 4 backoff,
    /// 5 closed).
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// What the session asks its IO layer to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoAction {
    /// Start the program; report with [`Session::spawned`] or [`Session::spawn_failed`].
    Spawn,
    /// SIGKILL the process; its end comes through [`Session::exited`].
    Kill,
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    Request(RequestId),
    Ping,
    Handshake,
    Restart,
    Eof,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    id: RequestId,
    kind: RequestKind,
    /// The request's symbol (bars carry it).
    symbol: u32,
    key: Option<TimerKey>,
    /// Items (accounts, bars) received so far.
    items: u32,
}

/// The engine's symbol table: id (position) to name and back, without allocating to look up.
pub struct SymbolTable {
    names: Vec<String>,
    /// Ids sorted by name.
    order: Vec<u32>,
}

impl SymbolTable {
    pub fn new(names: &[String]) -> SymbolTable {
        let mut order: Vec<u32> = (0..names.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| names[a as usize].cmp(&names[b as usize]));
        SymbolTable {
            names: names.to_vec(),
            order,
        }
    }

    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(String::as_str)
    }

    pub fn id(&self, name: &str) -> Option<u32> {
        self.order
            .binary_search_by(|&i| self.names[i as usize].as_str().cmp(name))
            .ok()
            .map(|at| self.order[at])
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// One adapter's counters (for status, metrics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct AdapterStats {
    pub state: AdapterState,
    /// The current process (0: none).
    pub pid: u32,
    /// Processes started so far.
    pub starts: u32,
    pub in_flight: u32,
    /// Bytes waiting in the outbound queue.
    pub queued_bytes: u32,
    /// Requests accepted (sent or queued).
    pub requests: u64,
    pub done: u64,
    /// Requests accepted that failed (adapter error, timeout, adapter went down).
    pub failed: u64,
    pub timeouts: u64,
    /// Requests refused before sending (any reason), and of them for backpressure.
    pub refused: u64,
    pub backpressure: u64,
    /// Answers naming no request in flight (late after a timeout, or wrong), dropped.
    pub unmatched: u64,
    pub frames_in: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Events lost because the event queue was full.
    pub events_lost: u64,
    /// Candles for symbols not in the table, dropped.
    pub unknown_symbols: u64,
    /// Pings that did not fit in the outbound queue.
    pub pings_unsent: u64,
    pub stderr_bytes: u64,
    pub stderr_lines: u64,
    /// Stderr lines not logged (over `stderr_lines_per_sec`).
    pub stderr_suppressed: u64,
    /// Why and how it last went down.
    pub last_down: Option<(DownCause, ExitStatus)>,
}

/// The limits, in the session's units.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_in_flight: usize,
    event_queue: usize,
    request_timeout: Nanos,
    handshake_timeout: Nanos,
    ping_interval: Nanos,
    missed_pings: u32,
    backoff_initial: Nanos,
    backoff_max: Nanos,
    stable_after: Nanos,
    max_frame: u32,
    ping_interval_ms: u32,
}

/// Everything but the two buffers (so a frame borrowed from the input can be handled while
/// the rest changes).
struct Core {
    id: AdapterId,
    name: String,
    client_prefix: String,
    limits: Limits,
    state: AdapterState,
    pid: u32,
    in_flight: Vec<InFlight>,
    wheel: TimerWheel<Timer>,
    ping_key: Option<TimerKey>,
    handshake_key: Option<TimerKey>,
    restart_key: Option<TimerKey>,
    eof_key: Option<TimerKey>,
    events: VecDeque<AdapterEvent>,
    lost: u32,
    actions: VecDeque<IoAction>,
    caps: Capabilities,
    ping_sent: u64,
    ping_acked: u64,
    missed: u32,
    /// Downs in a row without a stable run in between (drives the backoff).
    failures: u32,
    ready_at: Option<Nanos>,
    /// Why it is being killed, once decided.
    stopping: Option<DownCause>,
    stdout_eof: bool,
    stdin_closed: bool,
    now: Nanos,
    stats: AdapterStats,
}

/// One adapter's state machine. See the module documentation.
pub struct Session {
    input: InBuffer,
    output: OutQueue,
    core: Core,
}

fn ms(n: u32) -> Nanos {
    n as Nanos * MILLIS
}

impl Session {
    /// Everything allocated here: buffers, in-flight table, wheel, event queue.
    pub fn new(id: AdapterId, config: &AdapterConfig, now: Nanos) -> Session {
        let limits = Limits {
            max_in_flight: config.max_in_flight as usize,
            event_queue: config.event_queue as usize,
            request_timeout: ms(config.request_timeout_ms),
            handshake_timeout: ms(config.handshake_timeout_ms),
            ping_interval: ms(config.ping_interval_ms),
            missed_pings: config.missed_pings,
            backoff_initial: ms(config.backoff_initial_ms),
            backoff_max: ms(config.backoff_max_ms),
            stable_after: ms(config.stable_after_ms),
            max_frame: config.max_frame_bytes,
            ping_interval_ms: config.ping_interval_ms,
        };
        Session {
            input: InBuffer::new(config.max_frame_bytes),
            output: OutQueue::new(config.queue_bytes as usize),
            core: Core {
                id,
                name: config.name.clone(),
                client_prefix: config.client_prefix.clone(),
                limits,
                state: AdapterState::Idle,
                pid: 0,
                in_flight: Vec::with_capacity(limits.max_in_flight),
                // One per request, plus ping, handshake, restart and end-of-file.
                wheel: TimerWheel::new(limits.max_in_flight + 4, now),
                ping_key: None,
                handshake_key: None,
                restart_key: None,
                eof_key: None,
                events: VecDeque::with_capacity(limits.event_queue),
                lost: 0,
                actions: VecDeque::with_capacity(4),
                caps: Capabilities::default(),
                ping_sent: 0,
                ping_acked: 0,
                missed: 0,
                failures: 0,
                ready_at: None,
                stopping: None,
                stdout_eof: false,
                stdin_closed: false,
                now,
                stats: AdapterStats::default(),
            },
        }
    }

    pub fn id(&self) -> AdapterId {
        self.core.id
    }

    pub fn name(&self) -> &str {
        &self.core.name
    }

    pub fn state(&self) -> AdapterState {
        self.core.state
    }

    pub fn pid(&self) -> u32 {
        self.core.pid
    }

    pub fn capabilities(&self) -> Capabilities {
        self.core.caps
    }

    pub fn stats(&self) -> AdapterStats {
        let mut s = self.core.stats;
        s.state = self.core.state;
        s.pid = self.core.pid;
        s.in_flight = self.core.in_flight.len() as u32;
        s.queued_bytes = self.output.len() as u32;
        s
    }

    /// Counters the IO layer keeps (stderr).
    pub fn stats_mut(&mut self) -> &mut AdapterStats {
        &mut self.core.stats
    }

    /// Start the first process (from `Idle`).
    pub fn start(&mut self) {
        if self.core.state == AdapterState::Idle {
            self.core.actions.push_back(IoAction::Spawn);
        }
    }

    /// The next thing the IO layer must do.
    pub fn poll_action(&mut self) -> Option<IoAction> {
        self.core.actions.pop_front()
    }

    /// The earliest deadline (a time at or before it), if any.
    pub fn next_timeout(&self) -> Option<Nanos> {
        self.core.wheel.next_deadline()
    }

    /// The process started: send `hello`, wait for the adapter's.
    pub fn spawned(&mut self, now: Nanos, pid: u32) {
        let c = &mut self.core;
        c.tick(now);
        c.state = AdapterState::Starting;
        c.pid = pid;
        c.stats.starts += 1;
        c.stopping = None;
        c.stdout_eof = false;
        c.stdin_closed = false;
        c.caps = Capabilities::default();
        c.ping_sent = 0;
        c.ping_acked = 0;
        c.missed = 0;
        self.input.clear();
        self.output.clear();
        let hello = protocol::hello(
            &c.name,
            c.limits.max_frame,
            c.limits.ping_interval_ms,
            &c.client_prefix,
        );
        self.output
            .push(&hello)
            .expect("an empty queue of at least 4 KiB holds the hello");
        c.handshake_key = Some(c.arm(now + c.limits.handshake_timeout, Timer::Handshake));
    }

    /// The program could not be started: a `Down` now, and a restart after the backoff.
    pub fn spawn_failed(&mut self, now: Nanos, errno: i32) {
        self.core.tick(now);
        self.core.stopping = Some(DownCause::SpawnFailed { errno });
        self.down(now, ExitStatus::NotStarted);
    }

    /// Where the next read from the adapter's stdout goes.
    pub fn read_space(&mut self) -> &mut [u8] {
        self.input.space()
    }

    /// `n` bytes were read into [`Session::read_space`].
    pub fn filled(&mut self, n: usize) {
        self.input.filled(n);
        self.core.stats.bytes_in += n as u64;
    }

    /// Whether bytes read from the adapter are wanted (not while it is being killed).
    pub fn wants_input(&self) -> bool {
        matches!(
            self.core.state,
            AdapterState::Starting | AdapterState::Ready
        )
    }

    /// Whether [`Session::poll_event`] has something without another read.
    pub fn has_events(&self) -> bool {
        !self.core.events.is_empty() || self.core.lost > 0 || self.has_frame()
    }

    /// Whether the adapter owes the engine something it will send (or do) without anything
    /// else happening first: its hello (starting), the end of every request in flight, the
    /// pong of the last ping, reading what is queued for it, or its exit (being killed, or it
    /// closed a pipe). Unsolicited messages are never owed. The simulated driver holds its
    /// clock while anything is owed (see `driver::sim`).
    pub fn owed(&self) -> bool {
        let c = &self.core;
        match c.state {
            AdapterState::Starting | AdapterState::Stopping => true,
            AdapterState::Ready => {
                !c.in_flight.is_empty()
                    || c.ping_sent > c.ping_acked
                    || !self.output.is_empty()
                    || c.stdout_eof
                    || c.stdin_closed
            }
            AdapterState::Idle | AdapterState::Backoff | AdapterState::Closed => false,
        }
    }

    /// Whether a whole frame is buffered (so [`Session::poll_event`] has work without a read).
    pub fn has_frame(&self) -> bool {
        self.wants_input() && self.input.has_frame()
    }

    /// The adapter's stdout reached end-of-file.
    pub fn stdout_closed(&mut self, now: Nanos) {
        let c = &mut self.core;
        c.tick(now);
        if !c.stdout_eof {
            c.stdout_eof = true;
            c.arm_eof(now);
        }
    }

    /// Writing to the adapter's stdin failed with EPIPE: it closed it (or is exiting).
    pub fn stdin_closed(&mut self, now: Nanos) {
        let c = &mut self.core;
        c.tick(now);
        self.output.clear();
        if !c.stdin_closed {
            c.stdin_closed = true;
            c.arm_eof(now);
        }
    }

    /// Bytes to write to the adapter's stdin now.
    pub fn transmit(&self) -> &[u8] {
        if self.core.stdin_closed {
            return &[];
        }
        self.output.pending()
    }

    /// `n` bytes of [`Session::transmit`] were written.
    pub fn transmitted(&mut self, n: usize) {
        self.output.consume(n);
        self.core.stats.bytes_out += n as u64;
    }

    /// The process ended (reaped). Read everything it wrote before calling this.
    pub fn exited(&mut self, now: Nanos, status: ExitStatus) {
        self.core.tick(now);
        if self.core.stopping.is_none() && self.input.buffered() > 0 && self.wants_input() {
            self.core.stopping = Some(DownCause::Fault(Fault::TruncatedFrame));
            tracing::warn!(
                adapter = %self.core.name,
                bytes = self.input.buffered(),
                "adapter ended in the middle of a frame"
            );
        }
        self.down(now, status);
    }

    /// The engine is stopping: no more restarts or requests. Requests in flight are
    /// abandoned (counted as failed; the app has already had its last event).
    pub fn close(&mut self) {
        let c = &mut self.core;
        c.state = AdapterState::Closed;
        c.stats.failed += c.in_flight.len() as u64;
        for f in c.in_flight.drain(..) {
            if let Some(k) = f.key {
                c.wheel.cancel(k);
            }
        }
        for key in [
            c.ping_key.take(),
            c.handshake_key.take(),
            c.restart_key.take(),
            c.eof_key.take(),
        ]
        .into_iter()
        .flatten()
        {
            c.wheel.cancel(key);
        }
        c.actions.clear();
    }

    /// The process is gone: `Down`, fail what was in flight, schedule the restart.
    fn down(&mut self, now: Nanos, status: ExitStatus) {
        self.input.clear();
        self.output.clear();
        let c = &mut self.core;
        let cause = c.stopping.take().unwrap_or(DownCause::Exited);
        for key in [c.ping_key.take(), c.handshake_key.take(), c.eof_key.take()]
            .into_iter()
            .flatten()
        {
            c.wheel.cancel(key);
        }
        let restart_in = if c.state == AdapterState::Closed {
            0
        } else {
            if c.ready_at
                .is_some_and(|t| now.saturating_sub(t) >= c.limits.stable_after)
            {
                c.failures = 0;
            }
            c.failures = c.failures.saturating_add(1);
            let shift = (c.failures - 1).min(40);
            let delay = c
                .limits
                .backoff_initial
                .saturating_mul(1u64 << shift)
                .min(c.limits.backoff_max);
            c.state = AdapterState::Backoff;
            if let Some(k) = c.restart_key.take() {
                c.wheel.cancel(k);
            }
            c.restart_key = Some(c.arm(now + delay, Timer::Restart));
            delay
        };
        let restart_in_ms = (restart_in / MILLIS).min(u32::MAX as u64) as u32;
        c.stats.last_down = Some((cause, status));
        tracing::warn!(
            adapter = %c.name,
            pid = c.pid,
            "adapter down: {cause} ({status}); {} request(s) in flight fail; {}",
            c.in_flight.len(),
            Restart(restart_in_ms)
        );
        let id = c.id;
        c.push(AdapterEvent::Down {
            adapter: id,
            cause,
            status,
            restart_in_ms,
        });
        c.fail_all(FailReason::AdapterRestarted);
        c.pid = 0;
        c.ready_at = None;
        c.caps = Capabilities::default();
        c.stdout_eof = false;
        c.stdin_closed = false;
    }

    /// Fire every deadline due at `now`: request timeouts, pings (and the hang they reveal),
    /// the handshake deadline, the end of a backoff.
    pub fn handle_timeout(&mut self, now: Nanos) {
        let c = &mut self.core;
        c.tick(now);
        // Bounded: each pop removes one of the timers pending now; re-armed ones are later.
        for _ in 0..c.wheel.capacity() {
            let Some((_, _, timer)) = c.wheel.expire_one(c.now) else {
                break;
            };
            match timer {
                Timer::Request(id) => {
                    if let Some(at) = c.in_flight.iter().position(|f| f.id == id) {
                        let f = c.in_flight.swap_remove(at);
                        c.stats.timeouts += 1;
                        c.stats.failed += 1;
                        let adapter = c.id;
                        c.push(AdapterEvent::Failed {
                            adapter,
                            request: id,
                            kind: f.kind,
                            reason: FailReason::Timeout,
                        });
                    }
                }
                Timer::Ping => {
                    c.ping_key = None;
                    if c.state != AdapterState::Ready {
                        continue;
                    }
                    if c.ping_sent > c.ping_acked {
                        c.missed += 1;
                        if c.missed >= c.limits.missed_pings {
                            let missed = c.missed;
                            c.fault(
                                DownCause::Hung,
                                format_args!("no pong for {missed} ping intervals"),
                            );
                            continue;
                        }
                    }
                    c.ping_sent += 1;
                    if self
                        .output
                        .push(&Outgoing::Ping { seq: c.ping_sent })
                        .is_err()
                    {
                        c.stats.pings_unsent += 1;
                    }
                    c.ping_key = Some(c.arm(c.now + c.limits.ping_interval, Timer::Ping));
                }
                Timer::Handshake => {
                    c.handshake_key = None;
                    if c.state == AdapterState::Starting {
                        c.fault(
                            DownCause::HandshakeTimeout,
                            format_args!("no hello in time"),
                        );
                    }
                }
                Timer::Restart => {
                    c.restart_key = None;
                    if c.state == AdapterState::Backoff {
                        c.actions.push_back(IoAction::Spawn);
                    }
                }
                Timer::Eof => {
                    c.eof_key = None;
                    if matches!(c.state, AdapterState::Starting | AdapterState::Ready) {
                        let fault = if c.stdout_eof {
                            Fault::StdoutClosed
                        } else {
                            Fault::StdinClosed
                        };
                        c.fault(DownCause::Fault(fault), format_args!("{}", fault.as_str()));
                    }
                }
            }
        }
        if c.state == AdapterState::Stopping {
            self.input.clear();
        }
    }

    /// The next event for the app: queued ones first, then what the next frame says.
    pub fn poll_event(&mut self, now: Nanos, symbols: &SymbolTable) -> Option<AdapterEvent> {
        self.core.tick(now);
        // Bounded by the bytes buffered: every round consumes a frame or returns.
        loop {
            if let Some(e) = self.core.events.pop_front() {
                return Some(e);
            }
            if self.core.lost > 0 {
                let count = std::mem::take(&mut self.core.lost);
                return Some(AdapterEvent::EventsLost {
                    adapter: self.core.id,
                    count,
                });
            }
            if !self.wants_input() {
                return None;
            }
            let event = match self.input.next_frame() {
                FrameStatus::Incomplete => return None,
                FrameStatus::Oversized(len) => {
                    let max = self.core.limits.max_frame;
                    self.core.fault(
                        DownCause::Fault(Fault::OversizedFrame),
                        format_args!("a frame of {len} bytes is over max_frame_bytes {max}"),
                    );
                    None
                }
                FrameStatus::Empty => {
                    self.core.fault(
                        DownCause::Fault(Fault::Malformed),
                        format_args!("an empty frame"),
                    );
                    None
                }
                FrameStatus::Frame(frame) => {
                    self.core.stats.frames_in += 1;
                    self.core.on_frame(frame, symbols)
                }
            };
            if !self.wants_input() {
                self.input.clear();
            }
            if event.is_some() {
                return event;
            }
        }
    }

    /// Send a request; on refusal the app also gets `Failed { Refused }`.
    pub fn request(
        &mut self,
        now: Nanos,
        id: RequestId,
        request: &Request,
        symbols: &SymbolTable,
    ) -> Result<(), RequestError> {
        self.core.tick(now);
        let kind = request.kind();
        let result = self.send(id, request, symbols);
        let c = &mut self.core;
        match result {
            Ok(symbol) => {
                let key = c.arm(c.now + c.limits.request_timeout, Timer::Request(id));
                c.in_flight.push(InFlight {
                    id,
                    kind,
                    symbol,
                    key: Some(key),
                    items: 0,
                });
                c.stats.requests += 1;
                Ok(())
            }
            Err(e) => {
                c.stats.refused += 1;
                if e == RequestError::Backpressure {
                    c.stats.backpressure += 1;
                }
                let adapter = c.id;
                c.push(AdapterEvent::Failed {
                    adapter,
                    request: id,
                    kind,
                    reason: FailReason::Refused(e),
                });
                Err(e)
            }
        }
    }

    /// Check and encode a request; the symbol it names (0 if none).
    fn send(
        &mut self,
        id: RequestId,
        request: &Request,
        symbols: &SymbolTable,
    ) -> Result<u32, RequestError> {
        let c = &self.core;
        match c.state {
            AdapterState::Ready => {}
            AdapterState::Closed => return Err(RequestError::ShuttingDown),
            _ => return Err(RequestError::NotReady),
        }
        if id == 0 || id > MAX_REQUEST_ID {
            return Err(RequestError::BadId);
        }
        if !c.caps.contains(request.needs()) {
            return Err(RequestError::Unsupported);
        }
        if c.in_flight.iter().any(|f| f.id == id) {
            return Err(RequestError::DuplicateId);
        }
        if c.in_flight.len() >= c.limits.max_in_flight {
            return Err(RequestError::TooManyInFlight);
        }
        let (message, symbol) = encode(&c.client_prefix, id, request, symbols)?;
        self.output
            .push(&message)
            .map_err(|_| RequestError::Backpressure)?;
        Ok(symbol)
    }
}

/// The client id of `order` (an order id in range).
fn client_id(prefix: &str, order: RequestId) -> Result<ClientId<'_>, RequestError> {
    if order == 0 || order > MAX_REQUEST_ID {
        return Err(RequestError::BadRequest);
    }
    Ok(ClientId { prefix, order })
}

/// The message of `request` (its checks of fields and symbols done), and the symbol it names
/// (0 if none).
fn encode<'a>(
    client_prefix: &'a str,
    id: RequestId,
    request: &Request,
    symbols: &'a SymbolTable,
) -> Result<(Outgoing<'a>, u32), RequestError> {
    let name = |symbol: u32| symbols.name(symbol).ok_or(RequestError::UnknownSymbol);
    let client_id = |order: RequestId| client_id(client_prefix, order);
    Ok(match *request {
        Request::GetAccounts => (Outgoing::GetAccounts { id }, 0),
        Request::GetHistoricalBars {
            symbol,
            from_ns,
            to_ns,
            bar_ns,
        } if from_ns < to_ns && bar_ns > 0 => (
            Outgoing::GetHistoricalBars {
                id,
                symbol: name(symbol)?,
                from_ns,
                to_ns,
                bar_ns,
            },
            symbol,
        ),
        Request::GetHistoricalBars { .. } => return Err(RequestError::BadRequest),
        Request::Subscribe { symbol } => (
            Outgoing::Subscribe {
                id,
                symbol: name(symbol)?,
            },
            symbol,
        ),
        Request::PlaceOrder { symbol, .. } => (
            place_order(id, client_id(id)?, request, name(symbol)?)?,
            symbol,
        ),
        Request::CancelOrder { order, symbol } | Request::GetOrder { order, symbol } => {
            let (client_id, name) = (client_id(order)?, name(symbol)?);
            let message = match request {
                Request::CancelOrder { .. } => Outgoing::CancelOrder {
                    id,
                    order,
                    client_id,
                    symbol: name,
                },
                _ => Outgoing::GetOrder {
                    id,
                    order,
                    client_id,
                    symbol: name,
                },
            };
            (message, symbol)
        }
        Request::GetPositions => (Outgoing::GetPositions { id }, 0),
        Request::GetOpenOrders => (Outgoing::GetOpenOrders { id }, 0),
        Request::ReplaceOrder { order, symbol, .. } => (
            replace_order(
                id,
                client_id(order)?,
                client_id(id)?,
                request,
                name(symbol)?,
            )?,
            symbol,
        ),
    })
}

/// A positive quantity, and positive prices where there are any.
fn valid_order(qty: f64, limit: Option<f64>, stop: Option<f64>) -> bool {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    positive(qty) && limit.is_none_or(positive) && stop.is_none_or(positive)
}

/// "restart in N ms" / "no restart".
struct Restart(u32);

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            f.write_str("no restart (shutting down)")
        } else {
            write!(f, "restart in {} ms", self.0)
        }
    }
}

impl Core {
    fn tick(&mut self, now: Nanos) {
        // The wheel needs a time that never goes back; callers' clocks are monotonic but
        // may be read in any order.
        self.now = self.now.max(now);
    }

    fn arm(&mut self, deadline: Nanos, timer: Timer) -> TimerKey {
        self.wheel
            .insert(deadline, timer)
            .expect("the wheel holds every request and the four fixed timers")
    }

    fn arm_eof(&mut self, now: Nanos) {
        if self.eof_key.is_none()
            && matches!(self.state, AdapterState::Starting | AdapterState::Ready)
        {
            self.eof_key = Some(self.arm(now + EOF_GRACE, Timer::Eof));
        }
    }

    /// Queue an event for the app; when the queue is full it is counted as lost.
    fn push(&mut self, event: AdapterEvent) {
        if self.events.len() < self.limits.event_queue {
            self.events.push_back(event);
        } else {
            self.lost = self.lost.saturating_add(1);
            self.stats.events_lost += 1;
        }
    }

    fn fail_all(&mut self, reason: FailReason) {
        let adapter = self.id;
        self.stats.failed += self.in_flight.len() as u64;
        // Indexing instead of drain: `push` needs `self`.
        for i in 0..self.in_flight.len() {
            let f = self.in_flight[i];
            if let Some(k) = f.key {
                self.wheel.cancel(k);
            }
            self.push(AdapterEvent::Failed {
                adapter,
                request: f.id,
                kind: f.kind,
                reason,
            });
        }
        self.in_flight.clear();
    }

    /// The adapter broke the protocol, hung or never said hello: kill it.
    fn fault(&mut self, cause: DownCause, why: fmt::Arguments<'_>) {
        if !matches!(self.state, AdapterState::Starting | AdapterState::Ready) {
            return;
        }
        tracing::warn!(adapter = %self.name, pid = self.pid, "adapter {cause}: {why}; killing it");
        self.state = AdapterState::Stopping;
        self.stopping = Some(cause);
        for key in [
            self.ping_key.take(),
            self.handshake_key.take(),
            self.eof_key.take(),
        ]
        .into_iter()
        .flatten()
        {
            self.wheel.cancel(key);
        }
        self.actions.push_back(IoAction::Kill);
    }

    fn malformed(&mut self, kind: &str, field: &str) -> Option<AdapterEvent> {
        self.fault(
            DownCause::Fault(Fault::Malformed),
            format_args!("a {kind:?} message without a valid {field:?}"),
        );
        None
    }

    /// The in-flight request `id` if it is of `kind`; else counted as unmatched.
    fn find(&mut self, id: Option<u64>, kinds: &[RequestKind]) -> Option<usize> {
        let at = id.and_then(|id| {
            self.in_flight
                .iter()
                .position(|f| f.id == id && kinds.contains(&f.kind))
        });
        if at.is_none() {
            self.stats.unmatched += 1;
            if self.stats.unmatched == 1 {
                tracing::warn!(
                    adapter = %self.name,
                    "an answer for request {id:?}, which is not in flight (late after a timeout, or a wrong id): dropped (counted as unmatched)"
                );
            }
        }
        at
    }

    fn complete(&mut self, at: usize) -> InFlight {
        let f = self.in_flight.swap_remove(at);
        if let Some(k) = f.key {
            self.wheel.cancel(k);
        }
        f
    }

    /// Handle one frame; an event for the app, if it makes one.
    fn on_frame(&mut self, frame: &[u8], symbols: &SymbolTable) -> Option<AdapterEvent> {
        let m = match protocol::decode(frame) {
            Ok(m) => m,
            Err(e) => {
                self.fault(
                    DownCause::Fault(Fault::Malformed),
                    format_args!("a frame that is not a valid message: {e}"),
                );
                return None;
            }
        };
        let adapter = self.id;
        if self.state == AdapterState::Starting {
            return self.on_hello(&m);
        }
        let kind = &*m.kind;
        match kind {
            "pong" => {
                let Some(seq) = m.seq else {
                    return self.malformed(kind, "seq");
                };
                if seq > self.ping_acked && seq <= self.ping_sent {
                    self.ping_acked = seq;
                    self.missed = 0;
                }
                None
            }
            "account" => self.on_account(&m),
            "bar" => {
                let Some(candle) = candle(&m, 0) else {
                    return self.malformed(kind, "ts_ns, open, high, low or close");
                };
                let at = self.find(m.id, &[RequestKind::GetHistoricalBars])?;
                let f = &mut self.in_flight[at];
                f.items += 1;
                Some(AdapterEvent::Bar {
                    adapter,
                    request: f.id,
                    candle: Candle {
                        symbol: f.symbol,
                        ..candle
                    },
                })
            }
            "position" => self.on_position(&m, symbols),
            "order_state" => self.on_order_state(&m, symbols),
            "done" => {
                let Some(id) = m.id else {
                    return self.malformed(kind, "id");
                };
                let at = self.find(Some(id), &RequestKind::ALL)?;
                let f = self.complete(at);
                self.stats.done += 1;
                if let Some(reference) = &m.reference {
                    tracing::debug!(adapter = %self.name, request = id, "done, ref {reference}");
                }
                Some(AdapterEvent::Done {
                    adapter,
                    request: id,
                    kind: f.kind,
                    count: f.items,
                })
            }
            "error" => {
                let Some(code) = &m.code else {
                    return self.malformed(kind, "code");
                };
                let code = ErrorCode::from_wire(code);
                let message = m.message.as_deref().unwrap_or("");
                if let Some(id) = m.id {
                    tracing::info!(adapter = %self.name, request = id, code = code.as_str(), "request failed: {message}");
                    let at = self.find(Some(id), &RequestKind::ALL)?;
                    let f = self.complete(at);
                    self.stats.failed += 1;
                    Some(AdapterEvent::Failed {
                        adapter,
                        request: id,
                        kind: f.kind,
                        reason: FailReason::Adapter(code),
                    })
                } else {
                    tracing::warn!(adapter = %self.name, code = code.as_str(), "adapter error: {message}");
                    Some(AdapterEvent::Error { adapter, code })
                }
            }
            "candle" => {
                let (Some(name), Some(candle)) = (&m.symbol, candle(&m, 0)) else {
                    return self.malformed(kind, "symbol, ts_ns, open, high, low or close");
                };
                let symbol = self.known_symbol("a candle", name, symbols)?;
                Some(AdapterEvent::Candle {
                    adapter,
                    candle: Candle { symbol, ..candle },
                })
            }
            "order_update" => {
                let (Some(order), Some(status)) = (m.order, m.status.as_deref()) else {
                    return self.malformed(kind, "order or status");
                };
                let Some(status) = OrderStatus::from_wire(status) else {
                    return self.malformed(kind, "status");
                };
                Some(AdapterEvent::OrderUpdate {
                    adapter,
                    order,
                    status,
                    filled: m.filled.unwrap_or(f64::NAN),
                    remaining: m.remaining.unwrap_or(f64::NAN),
                    avg_price: m.avg_price.unwrap_or(f64::NAN),
                })
            }
            "fill" => {
                let (Some(order), Some(qty), Some(price)) = (m.order, m.qty, m.price) else {
                    return self.malformed(kind, "order, qty or price");
                };
                Some(AdapterEvent::Fill {
                    adapter,
                    order,
                    qty,
                    price,
                    fee: m.fee.unwrap_or(0.0),
                    ts_ns: m.ts_ns.unwrap_or(0),
                    trade: m.trade_id.map(|t| t.0),
                })
            }
            "hello" => {
                self.fault(
                    DownCause::Fault(Fault::Malformed),
                    format_args!("a second hello"),
                );
                None
            }
            other => {
                self.fault(
                    DownCause::Fault(Fault::Malformed),
                    format_args!("a message of unknown type {other:?}"),
                );
                None
            }
        }
    }

    /// An `account` item of a `get_accounts`.
    fn on_account(&mut self, m: &Incoming<'_>) -> Option<AdapterEvent> {
        let (Some(account), Some(cash), Some(equity)) = (&m.account, m.cash, m.equity) else {
            return self.malformed("account", "account, cash or equity");
        };
        let at = self.find(m.id, &[RequestKind::GetAccounts])?;
        let f = &mut self.in_flight[at];
        f.items += 1;
        Some(AdapterEvent::Account {
            adapter: self.id,
            request: f.id,
            account: Name::new(account),
            cash,
            equity,
            buying_power: m.buying_power.unwrap_or(f64::NAN),
        })
    }

    /// A `position` item of a `get_positions`.
    fn on_position(&mut self, m: &Incoming<'_>, symbols: &SymbolTable) -> Option<AdapterEvent> {
        let (Some(name), Some(qty)) = (&m.symbol, m.qty) else {
            return self.malformed("position", "symbol or qty");
        };
        let at = self.find(m.id, &[RequestKind::GetPositions])?;
        let symbol = self.known_symbol("a position", name, symbols)?;
        let f = &mut self.in_flight[at];
        f.items += 1;
        Some(AdapterEvent::Position {
            adapter: self.id,
            request: f.id,
            symbol,
            qty,
            avg_price: m.avg_price.unwrap_or(f64::NAN),
        })
    }

    /// An `order_state` item of a `get_open_orders` or `get_order`.
    fn on_order_state(&mut self, m: &Incoming<'_>, symbols: &SymbolTable) -> Option<AdapterEvent> {
        let kind = "order_state";
        let (Some(name), Some(side), Some(status), Some(qty)) =
            (&m.symbol, m.side.as_deref(), m.status.as_deref(), m.qty)
        else {
            return self.malformed(kind, "symbol, side, status or qty");
        };
        let side = match side {
            "buy" => Side::Buy,
            "sell" => Side::Sell,
            _ => return self.malformed(kind, "side"),
        };
        let Some(status) = OrderStatus::from_wire(status) else {
            return self.malformed(kind, "status");
        };
        let at = self.find(m.id, &[RequestKind::GetOpenOrders, RequestKind::GetOrder])?;
        let symbol = self.known_symbol("an order", name, symbols)?;
        // The engine's own orders are named by their client id; anything else is not ours.
        let order = m
            .client_id
            .as_deref()
            .and_then(|c| protocol::order_of_client_id(&self.client_prefix, c))
            .unwrap_or(0);
        let f = &mut self.in_flight[at];
        f.items += 1;
        Some(AdapterEvent::VenueOrder {
            adapter: self.id,
            request: f.id,
            order,
            symbol,
            side,
            status,
            qty,
            filled: m.filled.unwrap_or(0.0),
            avg_price: m.avg_price.unwrap_or(f64::NAN),
            limit: m.limit_price.unwrap_or(f64::NAN),
            stop: m.stop_price.unwrap_or(f64::NAN),
        })
    }

    /// The id of a symbol an answer names; one not in the table is dropped and counted.
    fn known_symbol(&mut self, what: &str, name: &str, symbols: &SymbolTable) -> Option<u32> {
        let id = symbols.id(name);
        if id.is_none() {
            self.stats.unknown_symbols += 1;
            if self.stats.unknown_symbols == 1 {
                tracing::warn!(adapter = %self.name, "{what} for symbol {name:?}, which is not in the symbol table: dropped (counted)");
            }
        }
        id
    }

    fn on_hello(&mut self, m: &Incoming<'_>) -> Option<AdapterEvent> {
        if m.kind != "hello" {
            self.fault(
                DownCause::Fault(Fault::BadHandshake),
                format_args!("its first message was {:?}, not \"hello\"", m.kind),
            );
            return None;
        }
        let protocol = m.protocol.unwrap_or(0);
        if protocol != protocol::PROTOCOL_VERSION {
            self.fault(
                DownCause::Fault(Fault::BadHandshake),
                format_args!(
                    "it speaks protocol {protocol}, this engine speaks {}: upgrade the adapter (docs/adapter-protocol.md, \"Changes in version {}\")",
                    protocol::PROTOCOL_VERSION,
                    protocol::PROTOCOL_VERSION
                ),
            );
            return None;
        }
        self.caps = m.capabilities.map(|c| c.0).unwrap_or_default();
        self.state = AdapterState::Ready;
        self.ready_at = Some(self.now);
        if let Some(k) = self.handshake_key.take() {
            self.wheel.cancel(k);
        }
        self.ping_key = Some(self.arm(self.now + self.limits.ping_interval, Timer::Ping));
        tracing::info!(
            adapter = %self.name,
            pid = self.pid,
            program = m.name.as_deref().unwrap_or("?"),
            version = m.version.as_deref().unwrap_or("?"),
            capabilities = ?self.caps,
            "adapter ready"
        );
        Some(AdapterEvent::Ready {
            adapter: self.id,
            protocol: protocol as u16,
            capabilities: self.caps,
            starts: self.stats.starts,
        })
    }
}

/// The candle fields of a `bar` or `candle` message (volume defaults to 0).
fn candle(m: &Incoming<'_>, symbol: u32) -> Option<Candle> {
    Some(Candle {
        ts_ns: m.ts_ns?,
        symbol,
        flags: 0,
        open: m.open?,
        high: m.high?,
        low: m.low?,
        close: m.close?,
        volume: m.volume.unwrap_or(0.0),
    })
}

/// The `place_order` message of `request` (a [`Request::PlaceOrder`]) for `symbol`'s name.
fn place_order<'a>(
    id: RequestId,
    client_id: ClientId<'a>,
    request: &Request,
    symbol: &'a str,
) -> Result<Outgoing<'a>, RequestError> {
    let Request::PlaceOrder {
        side,
        qty,
        limit,
        stop,
        tif,
        reduce_only,
        ..
    } = *request
    else {
        unreachable!("place_order of a {:?}", request.kind());
    };
    if !valid_order(qty, limit, stop) {
        return Err(RequestError::BadRequest);
    }
    Ok(Outgoing::PlaceOrder {
        id,
        client_id,
        symbol,
        side,
        qty,
        order_type: OrderType::of(limit, stop),
        limit_price: limit,
        stop_price: stop,
        time_in_force: tif.as_str(),
        expire_ns: match tif {
            TimeInForce::Gtd(t) => Some(t),
            _ => None,
        },
        reduce_only,
    })
}

/// The `replace_order` of `request` (new client id: this request's).
fn replace_order<'a>(
    id: RequestId,
    client_id: ClientId<'a>,
    new_client_id: ClientId<'a>,
    request: &Request,
    symbol: &'a str,
) -> Result<Outgoing<'a>, RequestError> {
    let Request::ReplaceOrder {
        order,
        side,
        qty,
        limit,
        stop,
        ..
    } = *request
    else {
        unreachable!("replace_order of a {:?}", request.kind());
    };
    // A market order has nothing to change.
    if !valid_order(qty, limit, stop) || (limit.is_none() && stop.is_none()) {
        return Err(RequestError::BadRequest);
    }
    Ok(Outgoing::ReplaceOrder {
        id,
        order,
        client_id,
        new_client_id,
        symbol,
        side,
        qty,
        order_type: OrderType::of(limit, stop),
        limit_price: limit,
        stop_price: stop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

    fn config() -> AdapterConfig {
        AdapterConfig {
            name: "t".into(),
            command: vec!["true".into()],
            max_in_flight: 4,
            event_queue: 16,
            request_timeout_ms: 1000,
            ping_interval_ms: 100,
            missed_pings: 3,
            backoff_initial_ms: 100,
            backoff_max_ms: 400,
            stable_after_ms: 1000,
            ..AdapterConfig::default()
        }
    }

    fn symbols() -> SymbolTable {
        SymbolTable::new(&["MSFT".into(), "AAPL".into()])
    }

    /// Feed the session one frame as the adapter would write it.
    fn says(s: &mut Session, json: &str) {
        let mut bytes = (json.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(json.as_bytes());
        s.read_space()[..bytes.len()].copy_from_slice(&bytes);
        s.filled(bytes.len());
    }

    /// Take the frames the session wants to write, as strings.
    fn sent(s: &mut Session) -> Vec<String> {
        let mut out = Vec::new();
        let bytes = s.transmit().to_vec();
        s.transmitted(bytes.len());
        let mut at = 0;
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            out.push(String::from_utf8(bytes[at + 4..at + 4 + len].to_vec()).unwrap());
            at += 4 + len;
        }
        out
    }

    fn events(s: &mut Session, now: Nanos) -> Vec<AdapterEvent> {
        let table = symbols();
        std::iter::from_fn(|| s.poll_event(now, &table)).collect()
    }

    fn ready(now: Nanos) -> Session {
        ready_with(now, r#""accounts","bars","subscribe","orders","reconcile""#)
    }

    /// A session whose adapter announced `capabilities` (a JSON list's items).
    fn ready_with(now: Nanos, capabilities: &str) -> Session {
        let mut s = Session::new(3, &config(), now);
        s.start();
        assert_eq!(s.poll_action(), Some(IoAction::Spawn));
        s.spawned(now, 42);
        let hello = sent(&mut s);
        assert!(
            hello[0].starts_with(r#"{"type":"hello","protocol":2,"#),
            "{hello:?}"
        );
        says(
            &mut s,
            &format!(
                r#"{{"type":"hello","protocol":2,"name":"x","capabilities":[{capabilities}]}}"#
            ),
        );
        let e = events(&mut s, now);
        assert!(
            matches!(
                e[..],
                [AdapterEvent::Ready {
                    adapter: 3,
                    starts: 1,
                    ..
                }]
            ),
            "{e:?}"
        );
        assert_eq!(s.pid(), 42);
        s
    }

    #[test]
    fn reconciliation_answers_name_this_engines_orders_by_client_id() {
        let mut s = ready(S);
        let table = symbols();
        s.request(
            S,
            8_589_934_593,
            &Request::order(1, Side::Buy, 2.0, Some(10.5)),
            &table,
        )
        .unwrap();
        says(&mut s, r#"{"type":"done","id":8589934593}"#);
        assert_eq!(events(&mut s, S).len(), 1);
        s.request(S, 20, &Request::GetOpenOrders, &table).unwrap();
        s.request(S, 21, &Request::GetPositions, &table).unwrap();
        s.request(
            S,
            22,
            &Request::GetOrder {
                order: 8_589_934_593,
                symbol: 1,
            },
            &table,
        )
        .unwrap();
        s.request(
            S,
            23,
            &Request::CancelOrder {
                order: 8_589_934_593,
                symbol: 1,
            },
            &table,
        )
        .unwrap();
        let out = sent(&mut s);
        assert!(
            out[0].contains(r#""id":8589934593,"client_id":"tl-8589934593""#),
            "{out:?}"
        );
        assert_eq!(out[1], r#"{"type":"get_open_orders","id":20}"#);
        assert_eq!(out[2], r#"{"type":"get_positions","id":21}"#);
        assert_eq!(
            out[3],
            r#"{"type":"get_order","id":22,"order":8589934593,"client_id":"tl-8589934593","symbol":"AAPL"}"#
        );
        assert_eq!(
            out[4],
            r#"{"type":"cancel_order","id":23,"order":8589934593,"client_id":"tl-8589934593","symbol":"AAPL"}"#
        );
        answer_reconciliation(&mut s);
    }

    #[test]
    fn replace_order_names_the_order_and_its_new_client_id() {
        let table = symbols();
        let change = |qty: f64, limit: Option<f64>| Request::ReplaceOrder {
            order: 8_589_934_593,
            symbol: 1,
            side: Side::Sell,
            qty,
            limit,
            stop: None,
        };
        let replace = change(1.5, Some(11.25));
        // Not announced: refused without a frame.
        let mut s = ready(S);
        assert_eq!(
            s.request(S, 30, &replace, &table),
            Err(RequestError::Unsupported)
        );
        assert!(sent(&mut s).is_empty());
        let mut s = ready_with(S, r#""orders","replace""#);
        s.request(S, 8_589_934_600, &replace, &table).unwrap();
        assert_eq!(
            sent(&mut s),
            [
                r#"{"type":"replace_order","id":8589934600,"order":8589934593,"client_id":"tl-8589934593","new_client_id":"tl-8589934600","symbol":"AAPL","side":"sell","qty":1.5,"order_type":"limit","limit_price":11.25}"#
            ]
        );
        says(&mut s, r#"{"type":"done","id":8589934600}"#);
        let e = events(&mut s, S);
        assert!(
            matches!(
                e[..],
                [AdapterEvent::Done {
                    request: 8_589_934_600,
                    kind: RequestKind::ReplaceOrder,
                    ..
                }]
            ),
            "{e:?}"
        );
        // A market order has nothing to replace; a bad quantity is refused.
        for bad in [change(1.5, None), change(0.0, Some(11.25))] {
            assert_eq!(
                s.request(S, 31, &bad, &table),
                Err(RequestError::BadRequest)
            );
        }
    }

    /// The answers of the reconciliation requests above, and what they become.
    fn answer_reconciliation(s: &mut Session) {
        says(
            s,
            r#"{"type":"order_state","id":20,"client_id":"tl-8589934593","symbol":"AAPL","side":"buy","status":"partially_filled","qty":2.0,"filled":0.5,"avg_price":10.4,"limit_price":10.5}"#,
        );
        says(
            s,
            r#"{"type":"order_state","id":20,"client_id":"web_77","symbol":"MSFT","side":"sell","status":"accepted","qty":1.0}"#,
        );
        says(
            s,
            r#"{"type":"order_state","id":20,"symbol":"NOPE","side":"sell","status":"accepted","qty":1.0}"#,
        );
        says(s, r#"{"type":"done","id":20}"#);
        says(
            s,
            r#"{"type":"position","id":21,"symbol":"AAPL","qty":-3.5,"avg_price":11.0}"#,
        );
        says(s, r#"{"type":"done","id":21}"#);
        let e = events(s, S);
        assert!(
            matches!(
                e[0],
                AdapterEvent::VenueOrder { request: 20, order: 8_589_934_593, symbol: 1, side: Side::Buy, status: OrderStatus::PartiallyFilled, qty: 2.0, filled: 0.5, limit, stop, .. } if limit == 10.5 && stop.is_nan()
            ),
            "{e:?}"
        );
        assert!(
            matches!(
                e[1],
                AdapterEvent::VenueOrder {
                    order: 0,
                    symbol: 0,
                    side: Side::Sell,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            matches!(
                e[2],
                AdapterEvent::Done {
                    request: 20,
                    kind: RequestKind::GetOpenOrders,
                    count: 2,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            matches!(
                e[3],
                AdapterEvent::Position {
                    request: 21,
                    symbol: 1,
                    qty: -3.5,
                    avg_price: 11.0,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(s.stats().unknown_symbols, 1);
        // A position without a quantity is a fault.
        says(s, r#"{"type":"position","id":22,"symbol":"AAPL"}"#);
        assert!(events(s, S).is_empty());
        assert_eq!(s.poll_action(), Some(IoAction::Kill));
    }

    #[test]
    fn a_request_is_answered_by_its_items_then_done() {
        let mut s = ready(S);
        let table = symbols();
        let bars = Request::GetHistoricalBars {
            symbol: 1,
            from_ns: 0,
            to_ns: 10,
            bar_ns: 1,
        };
        s.request(S, 9, &bars, &table).unwrap();
        assert_eq!(
            sent(&mut s),
            [
                r#"{"type":"get_historical_bars","id":9,"symbol":"AAPL","from_ns":0,"to_ns":10,"bar_ns":1}"#
            ]
        );
        says(
            &mut s,
            r#"{"type":"bar","id":9,"ts_ns":1,"open":1,"high":2,"low":0.5,"close":1.5}"#,
        );
        says(
            &mut s,
            r#"{"type":"bar","id":9,"ts_ns":2,"open":1,"high":2,"low":0.5,"close":1.5,"volume":3}"#,
        );
        says(&mut s, r#"{"type":"done","id":9,"count":2}"#);
        let e = events(&mut s, S);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(matches!(
            e[0],
            AdapterEvent::Bar {
                request: 9,
                candle: Candle {
                    symbol: 1,
                    ts_ns: 1,
                    ..
                },
                ..
            }
        ));
        assert!(matches!(
            e[2],
            AdapterEvent::Done {
                request: 9,
                kind: RequestKind::GetHistoricalBars,
                count: 2,
                ..
            }
        ));
        assert_eq!(s.stats().in_flight, 0);
        // A late duplicate answer is dropped and counted, not delivered.
        says(&mut s, r#"{"type":"done","id":9}"#);
        assert!(events(&mut s, S).is_empty());
        assert_eq!(s.stats().unmatched, 1);
    }

    #[test]
    fn refusals_are_returned_and_delivered() {
        let mut s = ready(S);
        let t = symbols();
        let order = |qty| Request::PlaceOrder {
            symbol: 0,
            side: Side::Buy,
            qty,
            limit: None,
            stop: None,
            tif: tickloop_app::venue::TimeInForce::Gtc,
            reduce_only: false,
        };
        assert_eq!(s.request(S, 0, &order(1.0), &t), Err(RequestError::BadId));
        assert_eq!(
            s.request(S, 1, &order(f64::NAN), &t),
            Err(RequestError::BadRequest)
        );
        assert_eq!(
            s.request(S, 1, &Request::Subscribe { symbol: 7 }, &t),
            Err(RequestError::UnknownSymbol)
        );
        for id in 1..=4 {
            s.request(S, id, &order(1.0), &t).unwrap();
        }
        assert_eq!(
            s.request(S, 4, &order(1.0), &t),
            Err(RequestError::DuplicateId)
        );
        assert_eq!(
            s.request(S, 5, &order(1.0), &t),
            Err(RequestError::TooManyInFlight)
        );
        let e = events(&mut s, S);
        assert_eq!(e.len(), 5);
        assert!(e.iter().all(|e| matches!(
            e,
            AdapterEvent::Failed {
                reason: FailReason::Refused(_),
                ..
            }
        )));
    }

    #[test]
    fn a_full_queue_is_backpressure() {
        let mut s = Session::new(
            0,
            &AdapterConfig {
                queue_bytes: 4096,
                max_in_flight: 1000,
                event_queue: 2000,
                ..config()
            },
            S,
        );
        s.start();
        s.poll_action();
        s.spawned(S, 1);
        says(
            &mut s,
            r#"{"type":"hello","protocol":2,"capabilities":["accounts"]}"#,
        );
        events(&mut s, S);
        let t = symbols();
        let mut id = 1;
        while s.request(S, id, &Request::GetAccounts, &t).is_ok() {
            id += 1;
        }
        assert!(id > 50, "{id}");
        assert_eq!(s.stats().backpressure, 1);
        // Written out: room again.
        sent(&mut s);
        s.request(S, id, &Request::GetAccounts, &t).unwrap();
    }

    #[test]
    fn timeouts_fail_requests_and_silence_is_a_hang() {
        let mut s = ready(S);
        let t = symbols();
        s.request(S, 1, &Request::GetAccounts, &t).unwrap();
        sent(&mut s);
        // Pings every 100 ms; the adapter answers none.
        let mut at = S;
        let mut actions = Vec::new();
        while at < S + 2 * S {
            at += 10 * MILLIS;
            s.handle_timeout(at);
            actions.extend(std::iter::from_fn(|| s.poll_action()));
            if !actions.is_empty() {
                break;
            }
        }
        assert_eq!(actions, [IoAction::Kill]);
        assert_eq!(s.state(), AdapterState::Stopping);
        // Three intervals of silence: killed after about 400 ms (before the request's 1 s).
        assert!(
            at - S >= 300 * MILLIS && at - S <= 500 * MILLIS,
            "{}",
            at - S
        );
        s.exited(at, ExitStatus::Signal(9));
        let e = events(&mut s, at);
        assert!(
            matches!(
                e[0],
                AdapterEvent::Down {
                    cause: DownCause::Hung,
                    status: ExitStatus::Signal(9),
                    restart_in_ms: 100,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(matches!(
            e[1],
            AdapterEvent::Failed {
                request: 1,
                reason: FailReason::AdapterRestarted,
                ..
            }
        ));
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn pongs_keep_it_alive_and_timeouts_fire() {
        let mut s = ready(S);
        let t = symbols();
        s.request(S, 1, &Request::GetAccounts, &t).unwrap();
        let mut at = S;
        let mut timed_out = None;
        while at < S + 2 * S {
            at += 10 * MILLIS;
            s.handle_timeout(at);
            for m in sent(&mut s) {
                if let Some(seq) = m.strip_prefix(r#"{"type":"ping","seq":"#) {
                    let seq = seq.trim_end_matches('}');
                    says(&mut s, &format!(r#"{{"type":"pong","seq":{seq}}}"#));
                }
            }
            for e in events(&mut s, at) {
                if let AdapterEvent::Failed {
                    request: 1,
                    reason: FailReason::Timeout,
                    ..
                } = e
                {
                    timed_out = Some(at);
                }
            }
        }
        assert_eq!(s.state(), AdapterState::Ready);
        let t = timed_out.expect("the request timed out");
        assert!(t - S >= 1000 * MILLIS && t - S < 1100 * MILLIS);
        assert_eq!(s.stats().timeouts, 1);
    }

    #[test]
    fn what_is_owed_is_the_hello_the_answers_the_pong_and_a_killed_process() {
        let mut s = Session::new(0, &config(), S);
        assert!(!s.owed(), "idle");
        s.start();
        assert_eq!(s.poll_action(), Some(IoAction::Spawn));
        s.spawned(S, 7);
        sent(&mut s);
        assert!(s.owed(), "the hello");
        let mut s = ready(S);
        assert!(!s.owed(), "ready, nothing asked");
        let t = symbols();
        s.request(S, 1, &Request::GetAccounts, &t).unwrap();
        assert!(s.owed(), "queued, not yet written");
        sent(&mut s);
        assert!(s.owed(), "in flight");
        says(&mut s, r#"{"type":"done","id":1,"count":0}"#);
        assert!(s.owed(), "answered, but the answer not read yet");
        events(&mut s, S);
        assert!(!s.owed(), "answered");
        s.handle_timeout(S + 100 * MILLIS);
        sent(&mut s);
        assert!(s.owed(), "a ping out");
        says(&mut s, r#"{"type":"pong","seq":1}"#);
        events(&mut s, S + 100 * MILLIS);
        assert!(!s.owed(), "ponged");
        says(&mut s, r#"{"type":"hello"}"#);
        events(&mut s, S + 100 * MILLIS);
        assert_eq!(s.state(), AdapterState::Stopping);
        assert!(s.owed(), "the exit of a process being killed");
        s.exited(S + 200 * MILLIS, ExitStatus::Signal(9));
        assert!(!s.owed(), "down, in its backoff");
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets_after_a_stable_run() {
        let mut s = Session::new(0, &config(), S);
        s.start();
        let mut at = S;
        let mut delays = Vec::new();
        for _ in 0..5 {
            assert_eq!(s.poll_action(), Some(IoAction::Spawn));
            s.spawned(at, 7);
            s.exited(at, ExitStatus::Code(3));
            match events(&mut s, at)[..] {
                [AdapterEvent::Down {
                    restart_in_ms,
                    cause: DownCause::Exited,
                    ..
                }] => delays.push(restart_in_ms),
                ref e => panic!("{e:?}"),
            }
            at += delays.last().copied().unwrap() as Nanos * MILLIS;
            s.handle_timeout(at);
        }
        assert_eq!(delays, [100, 200, 400, 400, 400]);
        // A run longer than stable_after starts over.
        assert_eq!(s.poll_action(), Some(IoAction::Spawn));
        s.spawned(at, 8);
        says(&mut s, r#"{"type":"hello","protocol":2}"#);
        events(&mut s, at);
        at += 2 * S;
        s.exited(at, ExitStatus::Code(0));
        assert!(matches!(
            events(&mut s, at)[..],
            [AdapterEvent::Down {
                restart_in_ms: 100,
                ..
            }]
        ));
    }

    #[test]
    fn faults_kill_and_dying_mid_frame_is_named() {
        for (frames, cause) in [
            (&[r#"{"type":"pong"}"#][..], Fault::Malformed),
            (&["not json"][..], Fault::Malformed),
            (&[r#"{"type":"teleport"}"#][..], Fault::Malformed),
            (&[r#"{"type":"hello","protocol":2}"#][..], Fault::Malformed),
        ] {
            let mut s = ready(S);
            for f in frames {
                says(&mut s, f);
            }
            assert!(events(&mut s, S).is_empty());
            assert_eq!(s.poll_action(), Some(IoAction::Kill), "{frames:?}");
            s.exited(S, ExitStatus::Signal(9));
            assert!(
                matches!(events(&mut s, S)[0], AdapterEvent::Down { cause: DownCause::Fault(f), .. } if f == cause)
            );
        }
        let mut s = ready(S);
        s.read_space()[..4].copy_from_slice(&(2u32 << 20).to_le_bytes());
        s.filled(4);
        assert!(events(&mut s, S).is_empty());
        assert_eq!(s.poll_action(), Some(IoAction::Kill));
        let mut s = ready(S);
        s.read_space()[..6].copy_from_slice(&[50, 0, 0, 0, b'{', b'"']);
        s.filled(6);
        assert!(events(&mut s, S).is_empty());
        s.exited(S, ExitStatus::Code(1));
        assert!(matches!(
            events(&mut s, S)[0],
            AdapterEvent::Down {
                cause: DownCause::Fault(Fault::TruncatedFrame),
                status: ExitStatus::Code(1),
                ..
            }
        ));
    }

    #[test]
    fn the_first_message_must_be_a_hello_of_this_version() {
        for first in [
            r#"{"type":"pong","seq":1}"#,
            r#"{"type":"hello","protocol":1}"#,
            r#"{"type":"hello","protocol":3}"#,
        ] {
            let mut s = Session::new(0, &config(), S);
            s.start();
            s.poll_action();
            s.spawned(S, 1);
            says(&mut s, first);
            assert!(events(&mut s, S).is_empty());
            assert_eq!(s.poll_action(), Some(IoAction::Kill));
            s.exited(S, ExitStatus::Signal(9));
            assert!(matches!(
                events(&mut s, S)[0],
                AdapterEvent::Down {
                    cause: DownCause::Fault(Fault::BadHandshake),
                    ..
                }
            ));
        }
    }

    #[test]
    fn a_full_event_queue_reports_what_it_lost() {
        let mut s = ready(S);
        let t = symbols();
        for id in 1..=40 {
            let _ = s.request(S, id, &Request::Subscribe { symbol: 99 }, &t);
        }
        let e = events(&mut s, S);
        assert_eq!(e.len(), 17);
        assert!(
            matches!(e[16], AdapterEvent::EventsLost { count: 24, .. }),
            "{:?}",
            e[16]
        );
    }

    #[test]
    fn unsolicited_messages_become_events() {
        let mut s = ready(S);
        says(
            &mut s,
            r#"{"type":"candle","symbol":"MSFT","ts_ns":5,"open":1,"high":1,"low":1,"close":1}"#,
        );
        says(
            &mut s,
            r#"{"type":"candle","symbol":"NOPE","ts_ns":5,"open":1,"high":1,"low":1,"close":1}"#,
        );
        says(
            &mut s,
            r#"{"type":"order_update","order":3,"status":"filled","filled":2,"remaining":0,"avg_price":9.5}"#,
        );
        says(&mut s, r#"{"type":"fill","order":3,"qty":2,"price":9.5}"#);
        says(
            &mut s,
            r#"{"type":"error","code":"not_connected","message":"gateway down"}"#,
        );
        let e = events(&mut s, S);
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(matches!(
            e[0],
            AdapterEvent::Candle {
                candle: Candle {
                    symbol: 0,
                    ts_ns: 5,
                    ..
                },
                ..
            }
        ));
        assert!(matches!(
            e[1],
            AdapterEvent::OrderUpdate {
                order: 3,
                status: OrderStatus::Filled,
                ..
            }
        ));
        assert!(matches!(e[2], AdapterEvent::Fill { order: 3, fee, .. } if fee == 0.0));
        assert!(matches!(
            e[3],
            AdapterEvent::Error {
                code: ErrorCode::NotConnected,
                ..
            }
        ));
        assert_eq!(s.stats().unknown_symbols, 1);
    }

    #[test]
    fn a_fills_trade_id_is_kept_as_its_hash_whether_a_string_or_a_number() {
        let mut s = ready(S);
        says(
            &mut s,
            r#"{"type":"fill","order":3,"qty":2,"price":9.5,"trade_id":"42"}"#,
        );
        says(
            &mut s,
            r#"{"type":"fill","order":3,"qty":2,"price":9.5,"trade_id":42}"#,
        );
        says(
            &mut s,
            r#"{"type":"fill","order":3,"qty":2,"price":9.5,"trade_id":"T-9"}"#,
        );
        says(&mut s, r#"{"type":"fill","order":3,"qty":2,"price":9.5}"#);
        let trades: Vec<_> = events(&mut s, S)
            .iter()
            .map(|e| match *e {
                AdapterEvent::Fill { trade, .. } => trade,
                other => panic!("{other:?}"),
            })
            .collect();
        let id = |t: &str| Some(tickloop_ring::layout::fnv1a64(t.as_bytes()));
        assert_eq!(trades, vec![id("42"), id("42"), id("T-9"), None]);
    }
}
