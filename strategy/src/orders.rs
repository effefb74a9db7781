//! Orders and their states, the size of an intent, and why risk may deny one. Plain data: the
//! host ([`crate::host`]) owns the table of open orders and performs every transition, and
//! each transition becomes one [`OrderUpdate`] output (and one telemetry event).

use serde::{Deserialize, Serialize};
use std::fmt;
use tickloop_app::clock::Nanos;
pub use tickloop_app::venue::Side;
use tickloop_app::venue::{ErrorCode, FailReason, FillFault, RequestError, RequestId};

/// Order ids are given by the host in order, from 1; they never repeat within a run.
pub type OrderId = u64;

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
    /// The whole open position of the symbol (a close).
    Position,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Created by an intent that passed risk, not yet sent.
    New,
    /// Sent to the venue (the paper broker or an adapter).
    Submitted,
    /// The venue has it.
    Accepted,
    PartiallyFilled,
    Filled,
    Cancelled,
    /// The venue refused it (no margin, size rounds to zero, unknown symbol...).
    Rejected,
    /// Risk refused the intent; it never reached a venue.
    Denied,
    /// Its time ran out before it filled.
    Expired,
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

    /// The transitions an order may make; anything else is a broken invariant.
    pub fn can_become(self, next: OrderState) -> bool {
        use OrderState::*;
        match self {
            New => matches!(next, Submitted | Denied),
            Submitted => matches!(
                next,
                Accepted | Rejected | Cancelled | Expired | Filled | PartiallyFilled
            ),
            Accepted | PartiallyFilled => {
                matches!(next, PartiallyFilled | Filled | Cancelled | Expired)
            }
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
        }
    }
}

/// Why an order ended `Rejected`: what really happened, for the strategy and telemetry.
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
    /// The adapter went down with it in flight: the venue may still have it.
    AdapterDown,
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
            RejectReason::AdapterDown => {
                f.write_str("the adapter went down with it in flight; the venue may still have it")
            }
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
    /// Closes the symbol's position (queued ahead of other orders, as backtesting.py does).
    pub closes: bool,
    pub state: OrderState,
    /// Units resolved at the fill (0 before).
    pub units: f64,
    pub filled: f64,
    pub avg_price: f64,
    pub created_at: Nanos,
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
    /// Why it was rejected (only with `state: Rejected`).
    pub reason: Option<RejectReason>,
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
            reason: None,
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
    pub pnl: f64,
}
