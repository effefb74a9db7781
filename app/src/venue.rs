//! What crosses between the app and the adapter host: the requests an app makes
//! ([`AdapterRequest`]) and the events it gets back ([`AdapterEvent`]), with the small enums
//! they carry (reasons, codes, statuses).
//!
//! It owns no state. Everything here is `Copy`, fixed-size and serde, because events are
//! journaled inputs and requests are journaled outputs: no `String`, no `Vec`, no pointer.
//! Free text (an adapter's error message, a broker's order reference) never enters an event;
//! it goes to `tracing`. Symbols are `u32` ids into the host's symbol table, candles are
//! [`Candle`]s, and reasons are enums.

use serde::{Deserialize, Serialize};
use std::fmt;
use tickloop_ring::Candle;

/// Which way an order goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    /// +1 for a buy, -1 for a sell.
    pub fn sign(self) -> f64 {
        match self {
            Side::Buy => 1.0,
            Side::Sell => -1.0,
        }
    }
}

/// An adapter's index, in the order of the host's configuration.
pub type AdapterId = u16;

/// A venue's trade id as the engine keeps it: FNV-1a-64 of the id's text (a number in the
/// frame is hashed as its decimal digits, so `"42"` and `42` are the same trade).
pub type TradeId = u64;

/// A request's id, chosen by the app: unique among that adapter's requests in flight, from 1
/// to [`MAX_REQUEST_ID`] (2^53 - 1, so it survives a trip through any JSON library). An order
/// is named by the id of the `place_order` request that placed it.
pub type RequestId = u64;

/// The largest request id: 2^53 - 1.
pub const MAX_REQUEST_ID: RequestId = (1 << 53) - 1;

/// A short name carried inline: an account's id. At most [`Name::CAPACITY`] bytes of UTF-8,
/// cut at a char boundary when made.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Name {
    len: u8,
    bytes: [u8; Name::CAPACITY],
}

impl Name {
    pub const CAPACITY: usize = 31;

    /// `s`, cut to [`Name::CAPACITY`] bytes at a char boundary.
    pub fn new(s: &str) -> Name {
        let mut end = s.len().min(Name::CAPACITY);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut name = Name::default();
        name.bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
        name.len = end as u8;
        name
    }

    pub fn as_str(&self) -> &str {
        let len = (self.len as usize).min(Name::CAPACITY);
        // Only `new` fills it, at a char boundary; a damaged journal gives "".
        std::str::from_utf8(&self.bytes[..len]).unwrap_or_default()
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an adapter says it can do in its `hello` (a bit set).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// `get_accounts`.
    pub const ACCOUNTS: Capabilities = Capabilities(1);
    /// `get_historical_bars`.
    pub const BARS: Capabilities = Capabilities(2);
    /// `subscribe` and unsolicited `candle`s.
    pub const SUBSCRIBE: Capabilities = Capabilities(4);
    /// `place_order` (market and limit), `cancel_order`, unsolicited `order_update` and
    /// `fill`.
    pub const ORDERS: Capabilities = Capabilities(8);
    /// `place_order` of `stop` and `stop_limit` orders.
    pub const STOP_ORDERS: Capabilities = Capabilities(16);
    /// `place_order` with a `time_in_force` other than `gtc` (`ioc`, `fok`, `gtd`).
    pub const TIME_IN_FORCE: Capabilities = Capabilities(32);
    /// `place_order` with `reduce_only`.
    pub const REDUCE_ONLY: Capabilities = Capabilities(64);
    /// `get_positions`, `get_open_orders` and `get_order`: what the engine reconciles its
    /// books with.
    pub const RECONCILE: Capabilities = Capabilities(128);
    /// `replace_order`: a working order's prices or quantity changed at the venue.
    pub const REPLACE: Capabilities = Capabilities(256);

    const NAMES: [(&'static str, Capabilities); 9] = [
        ("accounts", Capabilities::ACCOUNTS),
        ("bars", Capabilities::BARS),
        ("subscribe", Capabilities::SUBSCRIBE),
        ("orders", Capabilities::ORDERS),
        ("stop_orders", Capabilities::STOP_ORDERS),
        ("time_in_force", Capabilities::TIME_IN_FORCE),
        ("reduce_only", Capabilities::REDUCE_ONLY),
        ("reconcile", Capabilities::RECONCILE),
        ("replace", Capabilities::REPLACE),
    ];

    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// The capability a wire name stands for; `None` for names this engine does not know
    /// (they are ignored, so a newer adapter can announce more).
    pub fn from_name(name: &str) -> Option<Capabilities> {
        Capabilities::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, c)| c)
    }

    pub fn union(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_set();
        for (name, c) in Capabilities::NAMES {
            if self.contains(c) {
                list.entry(&name);
            }
        }
        list.finish()
    }
}

/// The kinds of request, named as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    GetAccounts,
    GetHistoricalBars,
    Subscribe,
    PlaceOrder,
    CancelOrder,
    GetPositions,
    GetOpenOrders,
    GetOrder,
    ReplaceOrder,
}

impl RequestKind {
    /// Every kind, in wire order.
    pub const ALL: [RequestKind; 9] = [
        RequestKind::GetAccounts,
        RequestKind::GetHistoricalBars,
        RequestKind::Subscribe,
        RequestKind::PlaceOrder,
        RequestKind::CancelOrder,
        RequestKind::GetPositions,
        RequestKind::GetOpenOrders,
        RequestKind::GetOrder,
        RequestKind::ReplaceOrder,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::GetAccounts => "get_accounts",
            RequestKind::GetHistoricalBars => "get_historical_bars",
            RequestKind::Subscribe => "subscribe",
            RequestKind::PlaceOrder => "place_order",
            RequestKind::CancelOrder => "cancel_order",
            RequestKind::GetPositions => "get_positions",
            RequestKind::GetOpenOrders => "get_open_orders",
            RequestKind::GetOrder => "get_order",
            RequestKind::ReplaceOrder => "replace_order",
        }
    }

    /// The capability an adapter must announce for this request.
    pub fn capability(self) -> Capabilities {
        match self {
            RequestKind::GetAccounts => Capabilities::ACCOUNTS,
            RequestKind::GetHistoricalBars => Capabilities::BARS,
            RequestKind::Subscribe => Capabilities::SUBSCRIBE,
            RequestKind::PlaceOrder | RequestKind::CancelOrder => Capabilities::ORDERS,
            RequestKind::GetPositions | RequestKind::GetOpenOrders | RequestKind::GetOrder => {
                Capabilities::RECONCILE
            }
            RequestKind::ReplaceOrder => Capabilities::REPLACE,
        }
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of an order, from its prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    Market,
    Limit,
    /// A stop (stop-market): a market order once the market reaches the stop.
    Stop,
    /// A limit order once the market reaches the stop.
    StopLimit,
}

impl OrderType {
    pub fn of(limit: Option<f64>, stop: Option<f64>) -> OrderType {
        match (limit, stop) {
            (None, None) => OrderType::Market,
            (Some(_), None) => OrderType::Limit,
            (None, Some(_)) => OrderType::Stop,
            (Some(_), Some(_)) => OrderType::StopLimit,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderType::Market => "market",
            OrderType::Limit => "limit",
            OrderType::Stop => "stop",
            OrderType::StopLimit => "stop_limit",
        }
    }
}

/// How long an order works (`Gtc` unless asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    /// Good till cancelled.
    #[default]
    Gtc,
    /// Immediate or cancel: what does not fill at once is cancelled. A paper broker gives it
    /// one bar: the next candle of its symbol.
    Ioc,
    /// Fill or kill: all of it at once, or nothing. A paper broker fills whole orders, so
    /// there it is `Ioc`.
    Fok,
    /// Good till this time, in ns since the Unix epoch (UTC, the time base of candles): no
    /// candle stamped at or after it fills it. A paper broker expires it at the first such
    /// candle of its symbol; the engine's own also when the loop's wall clock reaches it (a
    /// timer), so it ends on time when no candle comes.
    Gtd(i64),
}

impl TimeInForce {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeInForce::Gtc => "gtc",
            TimeInForce::Ioc => "ioc",
            TimeInForce::Fok => "fok",
            TimeInForce::Gtd(_) => "gtd",
        }
    }
}

/// A request to an adapter, as the app makes it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// The accounts the adapter trades: answered by one [`AdapterEvent::Account`] each, then
    /// [`AdapterEvent::Done`].
    GetAccounts,
    /// Bars of `symbol` with `from_ns <= ts_ns < to_ns` (Unix epoch ns), each `bar_ns` long:
    /// answered by [`AdapterEvent::Bar`]s in time order, then [`AdapterEvent::Done`].
    GetHistoricalBars {
        symbol: u32,
        from_ns: i64,
        to_ns: i64,
        bar_ns: u64,
    },
    /// Live candles of `symbol`: answered by [`AdapterEvent::Done`], then unsolicited
    /// [`AdapterEvent::Candle`]s.
    Subscribe { symbol: u32 },
    /// An order: market with neither `limit` nor `stop`, limit, stop (stop-market) or
    /// stop-limit with both. Answered by [`AdapterEvent::Done`] when the broker accepted it;
    /// its life follows as [`AdapterEvent::OrderUpdate`] and [`AdapterEvent::Fill`] naming
    /// this request's id as `order`.
    PlaceOrder {
        symbol: u32,
        side: Side,
        qty: f64,
        limit: Option<f64>,
        stop: Option<f64>,
        tif: TimeInForce,
        reduce_only: bool,
    },
    /// Cancel the order placed by request `order`: [`AdapterEvent::Done`] when the broker
    /// accepted the cancel (the order's `OrderUpdate { status: Cancelled }` follows).
    CancelOrder { order: RequestId, symbol: u32 },
    /// The positions the venue holds: one [`AdapterEvent::Position`] per symbol with one,
    /// then [`AdapterEvent::Done`].
    GetPositions,
    /// The orders working at the venue, this engine's and others': one
    /// [`AdapterEvent::VenueOrder`] each, then [`AdapterEvent::Done`].
    GetOpenOrders,
    /// The state of the order placed by request `order` (found at the venue by its client
    /// id): one [`AdapterEvent::VenueOrder`], then [`AdapterEvent::Done`]; `Failed` with
    /// `unknown_order` when the venue never had it.
    GetOrder { order: RequestId, symbol: u32 },
    /// Change the order the venue knows as `order` (the id of its `place_order`, or of the
    /// `replace_order` that last changed it): it works from now on for `qty` more units at
    /// `limit` and `stop`, and the venue knows it by this request's id (its client id).
    /// [`AdapterEvent::Done`] when the venue took the change; `Failed` leaves the order as
    /// it was (`unknown_order`: it is no longer open).
    ReplaceOrder {
        order: RequestId,
        symbol: u32,
        side: Side,
        qty: f64,
        limit: Option<f64>,
        stop: Option<f64>,
    },
}

impl Request {
    /// A good-till-cancelled market order (`limit`: a limit order), neither stop nor
    /// reduce-only.
    pub fn order(symbol: u32, side: Side, qty: f64, limit: Option<f64>) -> Request {
        Request::PlaceOrder {
            symbol,
            side,
            qty,
            limit,
            stop: None,
            tif: TimeInForce::Gtc,
            reduce_only: false,
        }
    }

    /// What an adapter must have announced to be sent this request.
    pub fn needs(&self) -> Capabilities {
        let mut needs = self.kind().capability();
        if let Request::PlaceOrder {
            stop,
            tif,
            reduce_only,
            ..
        } = *self
        {
            if stop.is_some() {
                needs = needs.union(Capabilities::STOP_ORDERS);
            }
            if tif != TimeInForce::Gtc {
                needs = needs.union(Capabilities::TIME_IN_FORCE);
            }
            if reduce_only {
                needs = needs.union(Capabilities::REDUCE_ONLY);
            }
        }
        needs
    }

    pub fn kind(&self) -> RequestKind {
        match self {
            Request::GetAccounts => RequestKind::GetAccounts,
            Request::GetHistoricalBars { .. } => RequestKind::GetHistoricalBars,
            Request::Subscribe { .. } => RequestKind::Subscribe,
            Request::PlaceOrder { .. } => RequestKind::PlaceOrder,
            Request::CancelOrder { .. } => RequestKind::CancelOrder,
            Request::GetPositions => RequestKind::GetPositions,
            Request::GetOpenOrders => RequestKind::GetOpenOrders,
            Request::GetOrder { .. } => RequestKind::GetOrder,
            Request::ReplaceOrder { .. } => RequestKind::ReplaceOrder,
        }
    }
}

/// A request addressed to one adapter, with the app's id for it. An app whose output is
/// `AdapterRequest` (or contains one) has it journaled like any other action.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdapterRequest {
    pub adapter: AdapterId,
    pub id: RequestId,
    pub request: Request,
}

/// Why the host refused a request before sending it. Returned to the caller of
/// `AdapterHandle::request` and delivered to the app as
/// `AdapterEvent::Failed { reason: FailReason::Refused(..) }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestError {
    /// No adapter has this id.
    UnknownAdapter,
    /// The adapter is starting, restarting or faulty: not connected now.
    NotReady,
    /// The engine is shutting down.
    ShuttingDown,
    /// The adapter's outbound queue is full (it is not reading its stdin fast enough).
    Backpressure,
    /// `max_in_flight` requests are already waiting for answers.
    TooManyInFlight,
    /// A request with this id is already in flight.
    DuplicateId,
    /// The id is 0 or above [`MAX_REQUEST_ID`].
    BadId,
    /// The symbol id is not in the host's symbol table.
    UnknownSymbol,
    /// A field is out of range: a quantity or price not finite and positive, an empty time
    /// range, a zero bar size.
    BadRequest,
    /// The adapter did not announce the capability this request needs.
    Unsupported,
}

impl RequestError {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestError::UnknownAdapter => "unknown adapter",
            RequestError::NotReady => "adapter not ready",
            RequestError::ShuttingDown => "shutting down",
            RequestError::Backpressure => "backpressure: the adapter's outbound queue is full",
            RequestError::TooManyInFlight => "too many requests in flight",
            RequestError::DuplicateId => "a request with this id is in flight",
            RequestError::BadId => "request id must be 1 to 2^53-1",
            RequestError::UnknownSymbol => "symbol id not in the host's symbol table",
            RequestError::BadRequest => "bad request field",
            RequestError::Unsupported => "the adapter did not announce this capability",
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for RequestError {}

/// An adapter's error code (the `code` of an `error` message). Unknown codes read as
/// [`ErrorCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    UnknownSymbol,
    UnknownOrder,
    Rejected,
    InsufficientFunds,
    NotSupported,
    BadRequest,
    NotConnected,
    RateLimited,
    Internal,
    Other,
}

impl ErrorCode {
    const ALL: [ErrorCode; 10] = [
        ErrorCode::UnknownSymbol,
        ErrorCode::UnknownOrder,
        ErrorCode::Rejected,
        ErrorCode::InsufficientFunds,
        ErrorCode::NotSupported,
        ErrorCode::BadRequest,
        ErrorCode::NotConnected,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnknownSymbol => "unknown_symbol",
            ErrorCode::UnknownOrder => "unknown_order",
            ErrorCode::Rejected => "rejected",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::NotSupported => "not_supported",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotConnected => "not_connected",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::Other => "other",
        }
    }

    /// The code a wire string names; anything else is [`ErrorCode::Other`].
    pub fn from_wire(code: &str) -> ErrorCode {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == code)
            .unwrap_or(ErrorCode::Other)
    }
}

/// Why a request ended without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// Refused by the host before it was sent.
    Refused(RequestError),
    /// The adapter answered with an `error` message carrying this code.
    Adapter(ErrorCode),
    /// No final answer within the adapter's `request_timeout_ms`.
    Timeout,
    /// The adapter went down (exit, hang, fault) with the request in flight.
    AdapterRestarted,
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::Refused(e) => write!(f, "refused: {e}"),
            FailReason::Adapter(code) => write!(f, "adapter error {}", code.as_str()),
            FailReason::Timeout => f.write_str("timeout"),
            FailReason::AdapterRestarted => f.write_str("adapter went down"),
        }
    }
}

/// A breach of the protocol that makes the host kill an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// A frame's length prefix is above `max_frame_bytes`.
    OversizedFrame,
    /// A frame that is empty, not a JSON object, has an unknown `type`, or lacks a field its
    /// type requires.
    Malformed,
    /// The first message was not a `hello` of this engine's protocol version.
    BadHandshake,
    /// The process ended with a partial frame on its stdout.
    TruncatedFrame,
    /// It closed its stdout but kept running.
    StdoutClosed,
    /// It closed its stdin (the engine's requests) but kept running.
    StdinClosed,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::OversizedFrame => "oversized frame",
            Fault::Malformed => "malformed frame",
            Fault::BadHandshake => "bad handshake",
            Fault::TruncatedFrame => "died in the middle of a frame",
            Fault::StdoutClosed => "closed its stdout but kept running",
            Fault::StdinClosed => "closed its stdin but kept running",
        }
    }
}

/// Why a fill an adapter reported was not believed: it never moves the book, and is
/// reported (telemetry `fill_fault`, counted in status and metrics) with its numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FillFault {
    /// The quantity is not a finite number above zero (a negative fill is not a sell).
    BadQuantity,
    /// The price is not a finite number above zero.
    BadPrice,
    /// No open order has this id (never placed, or already filled, cancelled or rejected).
    UnknownOrder,
    /// The same venue trade id was already booked, or, where the venue gives none, a fill
    /// of the same order with the same quantity, price and time.
    Duplicate,
    /// More than the order's remaining quantity.
    Overfill,
}

impl FillFault {
    pub fn as_str(self) -> &'static str {
        match self {
            FillFault::BadQuantity => "bad_quantity",
            FillFault::BadPrice => "bad_price",
            FillFault::UnknownOrder => "unknown_order",
            FillFault::Duplicate => "duplicate",
            FillFault::Overfill => "overfill",
        }
    }
}

impl fmt::Display for FillFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FillFault::BadQuantity => "quantity not a finite number above zero",
            FillFault::BadPrice => "price not a finite number above zero",
            FillFault::UnknownOrder => "no open order has this id",
            FillFault::Duplicate => "a duplicate of a fill already booked",
            FillFault::Overfill => "more than the order's remaining quantity",
        })
    }
}

/// A way the engine's books and a venue's can differ (found by reconciliation; reported as
/// telemetry `reconcile_difference` and counted, then the venue's books are adopted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Difference {
    /// The venue holds another position in the symbol than the engine believed.
    Position,
    /// The venue's cash is not the engine's.
    Cash,
    /// One of this engine's orders works at the venue but not in the engine's table (placed
    /// by an earlier run): adopted, or cancelled, as configured.
    OrderNotInEngine,
    /// An order the engine believed working is not open at the venue: its state is asked
    /// for.
    OrderNotAtVenue,
    /// An order of the engine's has filled more (or less) at the venue than the engine
    /// booked.
    OrderFilled,
    /// An order works at the venue that is not this engine's (placed behind its back, or by
    /// another program): left alone.
    ForeignOrder,
}

impl Difference {
    pub const ALL: [Difference; 6] = [
        Difference::Position,
        Difference::Cash,
        Difference::OrderNotInEngine,
        Difference::OrderNotAtVenue,
        Difference::OrderFilled,
        Difference::ForeignOrder,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Difference::Position => "position",
            Difference::Cash => "cash",
            Difference::OrderNotInEngine => "order_not_in_engine",
            Difference::OrderNotAtVenue => "order_not_at_venue",
            Difference::OrderFilled => "order_filled",
            Difference::ForeignOrder => "foreign_order",
        }
    }
}

/// Why an adapter went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownCause {
    /// The process ended on its own (see the [`ExitStatus`]).
    Exited,
    /// It answered no ping for `missed_pings` ping intervals: killed.
    Hung,
    /// It sent no `hello` within `handshake_timeout_ms`: killed.
    HandshakeTimeout,
    /// It broke the protocol: killed.
    Fault(Fault),
    /// The program could not be started (the errno of the spawn).
    SpawnFailed { errno: i32 },
}

impl fmt::Display for DownCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownCause::Exited => f.write_str("exited"),
            DownCause::Hung => f.write_str("hung (missed pings)"),
            DownCause::HandshakeTimeout => f.write_str("no hello in time"),
            DownCause::Fault(fault) => write!(f, "fault: {}", fault.as_str()),
            DownCause::SpawnFailed { errno } => write!(
                f,
                "could not start: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
        }
    }
}

/// How an adapter's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// It never started (spawn failed).
    NotStarted,
    /// It was reaped by someone else (the embedding program set SIGCHLD to SIG_IGN).
    Unknown,
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
            ExitStatus::NotStarted => f.write_str("not started"),
            ExitStatus::Unknown => f.write_str("exit status unknown"),
        }
    }
}

/// An order's state, as the adapter reports it in `order_update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Accepted,
    /// A stop order's stop was reached: it works as a market or limit order now.
    Triggered,
    PartiallyFilled,
    Filled,
    Cancelled,
    Rejected,
    Expired,
}

impl OrderStatus {
    pub fn from_wire(s: &str) -> Option<OrderStatus> {
        Some(match s {
            "accepted" => OrderStatus::Accepted,
            "triggered" => OrderStatus::Triggered,
            "partially_filled" => OrderStatus::PartiallyFilled,
            "filled" => OrderStatus::Filled,
            "cancelled" => OrderStatus::Cancelled,
            "rejected" => OrderStatus::Rejected,
            "expired" => OrderStatus::Expired,
            _ => return None,
        })
    }
}

/// What the adapter host tells the app, as `EventKind::Adapter`. Every request the host
/// accepted ends in exactly one `Done` or `Failed`; every request it refused gets a `Failed`
/// with `FailReason::Refused` too. An adapter's life is `Ready` (handshake done) .. `Down`
/// (exit, hang or fault; then, after `restart_in_ms`, it starts again).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum AdapterEvent {
    /// The adapter started and completed the handshake; requests are accepted from now.
    /// `starts` counts its processes so far (1 for the first). No process id: an event is an
    /// input of the app, journaled, and a pid differs every run (`AdapterStats::pid` has it).
    Ready {
        adapter: AdapterId,
        protocol: u16,
        capabilities: Capabilities,
        starts: u32,
    },
    /// The adapter is gone: why, how its process ended, and when it starts again (0: it
    /// does not; the engine is stopping). Its requests in flight follow as `Failed {
    /// reason: AdapterRestarted }`.
    Down {
        adapter: AdapterId,
        cause: DownCause,
        status: ExitStatus,
        restart_in_ms: u32,
    },
    /// One account, in answer to `GetAccounts`. A number the adapter did not give is NaN.
    Account {
        adapter: AdapterId,
        request: RequestId,
        account: Name,
        cash: f64,
        equity: f64,
        buying_power: f64,
    },
    /// One bar, in answer to `GetHistoricalBars` (its symbol is the request's).
    Bar {
        adapter: AdapterId,
        request: RequestId,
        candle: Candle,
    },
    /// Request `request` succeeded; `count` items (accounts, bars) came before it.
    Done {
        adapter: AdapterId,
        request: RequestId,
        kind: RequestKind,
        count: u32,
    },
    /// Request `request` failed.
    Failed {
        adapter: AdapterId,
        request: RequestId,
        kind: RequestKind,
        reason: FailReason,
    },
    /// A live candle of a subscribed symbol.
    Candle { adapter: AdapterId, candle: Candle },
    /// The order placed by request `order` changed state. NaN where the adapter did not say.
    OrderUpdate {
        adapter: AdapterId,
        order: RequestId,
        status: OrderStatus,
        filled: f64,
        remaining: f64,
        avg_price: f64,
    },
    /// The order placed by request `order` (partly) filled, as the adapter says: nothing is
    /// checked here; the app decides whether to believe it (see [`FillFault`]). `trade` is
    /// the venue's trade id, when the adapter gave one.
    Fill {
        adapter: AdapterId,
        order: RequestId,
        qty: f64,
        price: f64,
        fee: f64,
        ts_ns: i64,
        trade: Option<TradeId>,
    },
    /// One position, in answer to `GetPositions`: signed units (+ long) and the venue's
    /// average entry price (NaN where it did not say).
    Position {
        adapter: AdapterId,
        request: RequestId,
        symbol: u32,
        qty: f64,
        avg_price: f64,
    },
    /// One order at the venue, in answer to `GetOpenOrders` or `GetOrder`. `order` is the
    /// engine's id for it, read from its client id; 0 when it is not one of this engine's
    /// (placed behind its back, or by another program). `qty` is what it was for, `filled`
    /// how much of it filled at `avg_price`; `limit` and `stop` are NaN where it has none.
    VenueOrder {
        adapter: AdapterId,
        request: RequestId,
        order: RequestId,
        symbol: u32,
        side: Side,
        status: OrderStatus,
        qty: f64,
        filled: f64,
        avg_price: f64,
        limit: f64,
        stop: f64,
    },
    /// An error the adapter reported outside any request (its message went to the log).
    Error { adapter: AdapterId, code: ErrorCode },
    /// `count` events of this adapter could not be queued for the app (its event queue was
    /// full) and are lost. Counted in the adapter's stats too.
    EventsLost { adapter: AdapterId, count: u32 },
}

impl AdapterEvent {
    pub fn adapter(&self) -> AdapterId {
        match *self {
            AdapterEvent::Ready { adapter, .. }
            | AdapterEvent::Down { adapter, .. }
            | AdapterEvent::Account { adapter, .. }
            | AdapterEvent::Bar { adapter, .. }
            | AdapterEvent::Done { adapter, .. }
            | AdapterEvent::Failed { adapter, .. }
            | AdapterEvent::Candle { adapter, .. }
            | AdapterEvent::OrderUpdate { adapter, .. }
            | AdapterEvent::Fill { adapter, .. }
            | AdapterEvent::Position { adapter, .. }
            | AdapterEvent::VenueOrder { adapter, .. }
            | AdapterEvent::Error { adapter, .. }
            | AdapterEvent::EventsLost { adapter, .. } => adapter,
        }
    }

    /// The request this event ends (`Done` or `Failed`), if any.
    pub fn completes(&self) -> Option<RequestId> {
        match *self {
            AdapterEvent::Done { request, .. } | AdapterEvent::Failed { request, .. } => {
                Some(request)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_at_a_char_boundary() {
        assert_eq!(Name::new("DU1234567").as_str(), "DU1234567");
        let long = "é".repeat(20); // 40 bytes
        let n = Name::new(&long);
        assert_eq!(n.as_str().len(), 30);
        assert!(long.starts_with(n.as_str()));
    }

    #[test]
    fn error_codes_round_trip_and_unknown_is_other() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_wire(code.as_str()), code);
        }
        assert_eq!(ErrorCode::from_wire("martian"), ErrorCode::Other);
    }

    #[test]
    fn events_are_small_and_copy() {
        fn copy<T: Copy>() {}
        copy::<AdapterEvent>();
        assert!(std::mem::size_of::<AdapterEvent>() <= 96);
    }
}
