//! Orders and their states, the size of an intent, and why risk may deny one. Plain data: the
//! host ([`crate::host`]) owns the table of open orders and performs every transition, and
//! each transition becomes one [`OrderUpdate`] output (and one telemetry event).

use serde::{Deserialize, Serialize};
use std::fmt;
use tickloop_app::clock::Nanos;
use tickloop_app::venue::{ErrorCode, FailReason, FillFault, RequestError, RequestId};
pub use tickloop_app::venue::{OrderType, Side, TimeInForce};

/// Order ids are given by the host in order: `epoch << 31` plus 1, 2, 3... where the epoch is
/// the run's (kept on disk next to the instance lock, one more every start; 0 in a backtest),
/// so no run reuses another's. Request ids of the host's own queries come from the same
/// sequence.
pub type OrderId = u64;
/// Open trades are numbered by the host in order, from 1 (an order's bracket legs and close
/// orders name the trade they act on).
pub type TradeSeq = u64;

/// How much an intent trades. Units are resolved at the fill price and rounded down to whole
/// lots (`lot` in the host's config, 1 unit by default).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    /// This many units.
    Units(f64),
    /// Units worth this much quote currency at the fill price.
    Quote(f64),
    /// As many units as the available margin buys at the fill price (backtesting.py's
    /// `buy()` with no size: a fraction `1 - 2^-52` of it, whole units).
    AllEquity,
    /// As many units as this fraction (0 < f < 1) of the available margin buys at the fill
    /// price (backtesting.py's `buy(size=0.5)`).
    Fraction(f64),
    /// The whole open position of the symbol (a close).
    Position,
}

/// What an order is for; the host makes all but `Entry` itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The strategy's own order.
    Entry,
    /// A bracket leg of an open trade: a stop-loss (a stop order) or a take-profit (a limit
    /// order). When one fills, or the trade closes, the other is cancelled.
    StopLoss,
    TakeProfit,
    /// Closes one open trade (`close`): at the next open, ahead of every other order.
    Close,
}

/// What a strategy asks for: `OrderRequest::buy(symbol, size)` is a market order; add a
/// `limit`, a `stop` (both: a stop-limit), a bracket (`sl`, `tp`), a time in force, or
/// `reduce_only`. Checked by the host before risk; a bad one is denied with its reason.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OrderRequest {
    pub symbol: u32,
    pub side: Side,
    pub size: Size,
    pub limit: Option<f64>,
    pub stop: Option<f64>,
    /// Bracket prices: when the order fills, a stop-loss (stop) and a take-profit (limit)
    /// close the trade it opened. A long needs `sl < entry < tp`, a short `tp < entry < sl`,
    /// where the entry is the limit, else the stop, else the last close.
    pub sl: Option<f64>,
    pub tp: Option<f64>,
    pub tif: TimeInForce,
    /// Only ever reduce the position: denied when it would open or add, and cut at the fill
    /// to what the position then is.
    pub reduce_only: bool,
}

impl OrderRequest {
    pub fn new(symbol: u32, side: Side, size: Size) -> OrderRequest {
        OrderRequest {
            symbol,
            side,
            size,
            limit: None,
            stop: None,
            sl: None,
            tp: None,
            tif: TimeInForce::Gtc,
            reduce_only: false,
        }
    }
    pub fn buy(symbol: u32, size: Size) -> OrderRequest {
        OrderRequest::new(symbol, Side::Buy, size)
    }
    pub fn sell(symbol: u32, size: Size) -> OrderRequest {
        OrderRequest::new(symbol, Side::Sell, size)
    }
    pub fn limit(self, price: f64) -> OrderRequest {
        OrderRequest {
            limit: Some(price),
            ..self
        }
    }
    pub fn stop(self, price: f64) -> OrderRequest {
        OrderRequest {
            stop: Some(price),
            ..self
        }
    }
    pub fn sl(self, price: f64) -> OrderRequest {
        OrderRequest {
            sl: Some(price),
            ..self
        }
    }
    pub fn tp(self, price: f64) -> OrderRequest {
        OrderRequest {
            tp: Some(price),
            ..self
        }
    }
    pub fn tif(self, tif: TimeInForce) -> OrderRequest {
        OrderRequest { tif, ..self }
    }
    pub fn reduce_only(self) -> OrderRequest {
        OrderRequest {
            reduce_only: true,
            ..self
        }
    }
    pub fn order_type(&self) -> OrderType {
        OrderType::of(self.limit, self.stop)
    }
}

/// A change to a working order: its new limit, stop and/or units (what is left to fill).
/// `None` keeps the field as it is.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Replace {
    pub limit: Option<f64>,
    pub stop: Option<f64>,
    pub units: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Created by an intent that passed risk, not yet sent.
    New,
    /// Sent to the venue (the paper broker or an adapter).
    Submitted,
    /// The venue has it, working.
    Accepted,
    /// A stop order's stop was reached: it now works as a market (stop) or limit
    /// (stop-limit) order.
    Triggered,
    /// A cancel or a replace was asked for and the venue has not answered yet (the paper
    /// broker answers at once).
    PendingCancel,
    PendingReplace,
    PartiallyFilled,
    Filled,
    Cancelled,
    /// The venue refused it (no margin, size rounds to zero, unknown symbol...).
    Rejected,
    /// Risk refused the intent; it never reached a venue.
    Denied,
    /// Its time ran out before it filled.
    Expired,
    /// A place, cancel or replace of it got no answer (it timed out, or the adapter went down
    /// with it in flight): the venue may have it, filled or not. The host asks the venue for
    /// it; until the answer it counts as working (risk counts it as possibly filled) and it
    /// is never placed again.
    Unknown,
}

impl OrderState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OrderState::Filled
                | OrderState::Cancelled
                | OrderState::Rejected
                | OrderState::Denied
                | OrderState::Expired
        )
    }

    /// Working at the venue: it may still fill, be cancelled or replaced.
    pub fn is_working(self) -> bool {
        matches!(
            self,
            OrderState::Submitted
                | OrderState::Accepted
                | OrderState::Triggered
                | OrderState::PendingReplace
                | OrderState::PartiallyFilled
                | OrderState::Unknown
        )
    }

    /// The venue should have it now (its place was answered): what reconciliation expects
    /// to find among the venue's open orders.
    pub fn is_at_venue(self) -> bool {
        matches!(
            self,
            OrderState::Accepted
                | OrderState::Triggered
                | OrderState::PendingCancel
                | OrderState::PendingReplace
                | OrderState::PartiallyFilled
        )
    }

    /// The transitions an order may make; anything else is a broken invariant.
    pub fn can_become(self, next: OrderState) -> bool {
        use OrderState::*;
        match self {
            New => matches!(next, Submitted | Denied),
            Submitted => matches!(
                next,
                Unknown
                    | Accepted
                    | Triggered
                    | PendingCancel
                    | PendingReplace
                    | Rejected
                    | Cancelled
                    | Expired
                    | Filled
                    | PartiallyFilled
            ),
            Accepted | PartiallyFilled | Triggered => {
                matches!(
                    next,
                    PartiallyFilled
                        | Filled
                        | Cancelled
                        | Expired
                        | PendingCancel
                        | PendingReplace
                        | Unknown
                ) || (self != Triggered && next == Triggered)
            }
            // A fill may race the cancel; a venue that refuses the cancel leaves it working.
            // ...and a place refused after its cancel was asked for ends it as rejected.
            PendingCancel => matches!(
                next,
                Cancelled
                    | Expired
                    | Filled
                    | PartiallyFilled
                    | Accepted
                    | Triggered
                    | Unknown
                    | Rejected
            ),
            // The venue's answer: whatever state it has the order in.
            // The venue's answer: whatever state it has the order in; or a cancel sent anyway.
            Unknown => matches!(
                next,
                Accepted
                    | Triggered
                    | PartiallyFilled
                    | Filled
                    | Cancelled
                    | Expired
                    | Rejected
                    | PendingCancel
            ),
            PendingReplace => matches!(
                next,
                Submitted
                    | Accepted
                    | Triggered
                    | PartiallyFilled
                    | Filled
                    | Cancelled
                    | Expired
                    | PendingCancel
                    | Unknown
            ),
            Filled | Cancelled | Rejected | Denied | Expired => false,
        }
    }
}

/// Why risk denied an intent (see [`crate::risk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// The kill switch: `risk.trading_enabled = false` (closing is still allowed).
    TradingDisabled,
    /// It would open a position beyond `risk.max_open_positions`.
    MaxOpenPositions,
    /// The position after it would be worth more than `risk.max_position_notional`.
    MaxPositionNotional,
    /// The order alone is worth more than `risk.max_order_notional`.
    MaxOrderNotional,
    /// More than `risk.max_orders_per_sec` orders in the last second of the loop's clock.
    RateLimit,
    /// No price seen yet for the symbol, so its notional cannot be checked.
    NoPrice,
    /// The table of open orders (`max_open_orders`) is full.
    TooManyOrders,
    /// The engine is shutting down: no new orders.
    ShuttingDown,
    /// The symbol id is beyond the host's `symbols`.
    UnknownSymbol,
    /// A limit, stop, stop-loss or take-profit that is zero, negative, NaN or infinite.
    BadPrice,
    /// A size that is zero, negative, NaN or infinite (a `Fraction` outside 0 < f < 1).
    BadSize,
    /// A buy stop at or below the last close, or a sell stop at or above it.
    StopWrongSide,
    /// The bracket is on the wrong side: a long needs `sl < entry < tp`, a short
    /// `tp < entry < sl` (entry: the limit, else the stop, else the last close).
    BracketWrongSide,
    /// `reduce_only`, but it would open or add to the position.
    ReduceOnly,
    /// `Gtd` with a time that has passed.
    Expired,
    /// Cancel or replace of an order that is final (filled, cancelled...) or unknown.
    NotWorking,
    /// The venue refused a cancel or replace (or it never reached the venue).
    VenueRefused,
    /// Replace of what the order does not have (a limit of a market order, units of a close),
    /// or of an order a cancel is pending for.
    NotReplaceable,
    /// The venue adapter does not do this order type or time in force (its capabilities).
    Unsupported,
    /// More intents in one event than `intents_per_event`.
    TooManyIntents,
    /// The books are being reconciled with the venue's (after an adapter restart, or
    /// periodically): no new orders until that ends.
    Reconciling,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::TradingDisabled => "trading_disabled",
            DenyReason::MaxOpenPositions => "max_open_positions",
            DenyReason::MaxPositionNotional => "max_position_notional",
            DenyReason::MaxOrderNotional => "max_order_notional",
            DenyReason::RateLimit => "rate_limit",
            DenyReason::NoPrice => "no_price",
            DenyReason::TooManyOrders => "too_many_orders",
            DenyReason::ShuttingDown => "shutting_down",
            DenyReason::UnknownSymbol => "unknown_symbol",
            DenyReason::BadPrice => "bad_price",
            DenyReason::BadSize => "bad_size",
            DenyReason::StopWrongSide => "stop_wrong_side",
            DenyReason::BracketWrongSide => "bracket_wrong_side",
            DenyReason::ReduceOnly => "reduce_only",
            DenyReason::Expired => "expired",
            DenyReason::NotWorking => "not_working",
            DenyReason::NotReplaceable => "not_replaceable",
            DenyReason::VenueRefused => "venue_refused",
            DenyReason::Unsupported => "unsupported",
            DenyReason::TooManyIntents => "too_many_intents",
            DenyReason::Reconciling => "reconciling",
        }
    }
}

/// Why an order ended `Rejected`, or `Cancelled` where there is more to say (`Unfilled`,
/// `TradeClosed`, and `NoMargin` after part of it netted): what really happened, for the
/// strategy and telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Its size is less than one lot at the price it would trade at.
    ZeroSize,
    /// The paper broker: the margin left does not pay for the exposure it adds.
    NoMargin,
    /// The engine's adapter host refused to send it (the adapter not ready, a full queue...).
    NotSent(RequestError),
    /// The venue answered with this error code.
    Venue(ErrorCode),
    /// The venue reported it `rejected` in an order update.
    VenueStatus,
    /// No answer within the adapter's `request_timeout_ms`: the venue may still have it.
    Timeout,
    /// An IOC or FOK order that did not fill at once.
    Unfilled,
    /// A bracket leg or close order whose trade is gone (closed by another order).
    TradeClosed,
    /// The adapter went down with it in flight: the venue may still have it.
    AdapterDown,
    /// It was `Unknown`, and the venue says it never had it.
    NotAtVenue,
    /// The engine's books follow the venue's: reconciliation found it ended there.
    Reconciled,
}

impl RejectReason {
    /// The reason a failed `place_order` request gives.
    pub fn of_failure(reason: FailReason) -> RejectReason {
        match reason {
            FailReason::Refused(e) => RejectReason::NotSent(e),
            FailReason::Adapter(code) => RejectReason::Venue(code),
            FailReason::Timeout => RejectReason::Timeout,
            FailReason::AdapterRestarted => RejectReason::AdapterDown,
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::ZeroSize => f.write_str("its size is less than one lot"),
            RejectReason::NoMargin => f.write_str("not enough margin for the exposure it adds"),
            RejectReason::NotSent(e) => write!(f, "not sent: {e}"),
            RejectReason::Venue(code) => write!(f, "the venue refused it: {}", code.as_str()),
            RejectReason::VenueStatus => f.write_str("the venue reported it rejected"),
            RejectReason::Timeout => {
                f.write_str("no answer in time (request_timeout_ms); the venue may still have it")
            }
            RejectReason::Unfilled => f.write_str("IOC/FOK: it did not fill at once"),
            RejectReason::TradeClosed => f.write_str("the trade it was for is closed"),
            RejectReason::AdapterDown => {
                f.write_str("the adapter went down with it in flight; the venue may still have it")
            }
            RejectReason::NotAtVenue => f.write_str("the venue says it never had it"),
            RejectReason::Reconciled => f.write_str("the venue's books say it ended"),
        }
    }
}

/// A fill the host did not believe (an adapter's [`FillFault`]): it never moved the book.
/// `qty` and `price` as the adapter sent them; `remaining` is what the order had left (NaN
/// when no open order has the id). Equal when every field is the same to the bit (so a
/// replay compares NaN as recorded).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct FillFaultReport {
    pub adapter: u16,
    pub order: RequestId,
    pub fault: FillFault,
    pub qty: f64,
    pub price: f64,
    pub remaining: f64,
}

impl PartialEq for FillFaultReport {
    fn eq(&self, other: &Self) -> bool {
        (self.adapter, self.order, self.fault) == (other.adapter, other.order, other.fault)
            && self.qty.to_bits() == other.qty.to_bits()
            && self.price.to_bits() == other.price.to_bits()
            && self.remaining.to_bits() == other.remaining.to_bits()
    }
}

/// An open order in the host's table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub symbol: u32,
    pub side: Side,
    pub size: Size,
    pub role: Role,
    /// The trade a bracket leg or close order acts on.
    pub trade: Option<TradeSeq>,
    /// Its limit; its stop until the stop is reached (then `None`, state `Triggered`).
    pub limit: Option<f64>,
    pub stop: Option<f64>,
    /// The bracket to put on the trade it opens.
    pub sl: Option<f64>,
    pub tp: Option<f64>,
    pub tif: TimeInForce,
    pub reduce_only: bool,
    pub state: OrderState,
    /// Signed units left to fill (an estimate until the fill when sized from the margin).
    pub units: f64,
    pub filled: f64,
    pub avg_price: f64,
    pub created_at: Nanos,
    /// The id a venue knows it by: its own, until a replace through the venue gave it the
    /// `replace_order`'s id. While a replace is in flight, that id is `replacing` (else 0).
    pub client: OrderId,
    pub replacing: OrderId,
    /// Units it had filled when the venue's order it is now was made (by a replace); the
    /// venue counts that order's fills from zero.
    pub filled_before: f64,
    /// A cancel asked for while a replace was in flight: it waits for the venue's answer,
    /// which says which of the two orders to cancel.
    pub cancel_waits: bool,
}

impl Order {
    /// A new order (`New`, at no price, nothing to fill yet): the fields that differ are set
    /// by the caller.
    pub fn new(
        id: OrderId,
        symbol: u32,
        side: Side,
        size: Size,
        role: Role,
        created_at: Nanos,
    ) -> Order {
        Order {
            id,
            symbol,
            side,
            size,
            role,
            trade: None,
            limit: None,
            stop: None,
            sl: None,
            tp: None,
            tif: TimeInForce::Gtc,
            reduce_only: false,
            state: OrderState::New,
            units: 0.0,
            filled: 0.0,
            avg_price: 0.0,
            created_at,
            client: id,
            replacing: 0,
            filled_before: 0.0,
            cancel_waits: false,
        }
    }

    /// A close order (queued ahead of other orders, as backtesting.py does).
    pub fn closes(&self) -> bool {
        self.role == Role::Close
    }
    /// A bracket leg (backtesting.py's "contingent" order).
    pub fn is_leg(&self) -> bool {
        matches!(self.role, Role::StopLoss | Role::TakeProfit)
    }
    pub fn order_type(&self) -> OrderType {
        OrderType::of(self.limit, self.stop)
    }
}

/// One transition of one order: the host's output for it, and its telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OrderUpdate {
    pub order: OrderId,
    pub symbol: u32,
    pub side: Side,
    pub state: OrderState,
    /// Units the order is for (0 until known), units filled so far, and their average price.
    pub units: f64,
    pub filled: f64,
    pub avg_price: f64,
    pub role: Role,
    pub limit: Option<f64>,
    pub stop: Option<f64>,
    /// Why it was rejected or cancelled, where there is more to say than the state.
    pub reason: Option<RejectReason>,
    /// Why an intent about this order was denied: with `state: Denied` the order itself
    /// (it never existed at a venue); with any other state a cancel or replace of it (the
    /// order is as it was).
    pub denied: Option<DenyReason>,
}

impl Order {
    pub fn update(&self) -> OrderUpdate {
        OrderUpdate {
            order: self.id,
            symbol: self.symbol,
            side: self.side,
            state: self.state,
            units: self.units,
            filled: self.filled,
            avg_price: self.avg_price,
            role: self.role,
            limit: self.limit,
            stop: self.stop,
            reason: None,
            denied: None,
        }
    }
}

/// A fill of `units` (signed: + bought, - sold) at `price`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fill {
    pub order: OrderId,
    pub symbol: u32,
    pub units: f64,
    pub price: f64,
    /// The commission it was charged (the paper broker's `commission`; 0 for a venue's).
    pub commission: f64,
    /// The candle's position in its source when the fill happened (the bar index in a
    /// backtest).
    pub pos: u64,
    pub ts_ns: i64,
}

/// A trade that closed: what `--trades-out` lists.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClosedTrade {
    pub symbol: u32,
    /// Signed units: + long, - short.
    pub size: f64,
    pub entry_bar: u64,
    pub exit_bar: u64,
    pub entry_ts_ns: i64,
    pub exit_ts_ns: i64,
    pub entry_price: f64,
    pub exit_price: f64,
    /// `size × (exit − entry) − commission`, as backtesting.py's `PnL`.
    pub pnl: f64,
    /// Commission of both ends: the exit's, and the entry's for this size at the entry price
    /// (backtesting.py's `Commission`).
    pub commission: f64,
    /// The order that closed it, and what that order was (a close, a bracket leg...).
    pub exit_order: OrderId,
    pub exit_role: Role,
}
