//! The strategy host: an [`App`] that runs one [`Strategy`] inside the loop. It owns the
//! book (cash, open trades, positions, open orders), checks every intent (prices, sizes,
//! brackets) and runs it through [`Risk`], performs every order transition (each one an
//! [`HostOutput::Order`] output), and, in paper mode, fills orders itself with backtesting.py
//! 0.6.6's rules: market, limit, stop and stop-limit orders, stop-loss and take-profit
//! brackets, commission, spread, margin (docs/backtest-semantics.md).
//!
//! It never reads a clock (event times only), never does IO, never iterates a hash map and
//! never allocates per event: every table is sized from [`HostConfig`] at `new`.

use crate::matching::{match_bar, Matched};
use crate::orders::{
    ClosedTrade, DenyReason, Fill, FillFaultReport, Order, OrderId, OrderRequest, OrderState,
    OrderUpdate, RejectReason, Replace, Role, Side, Size, TimeInForce, TradeSeq,
};
use crate::risk::{Proposed, Risk, RiskConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use tickloop_app::clock::Nanos;
use tickloop_app::telemetry::{Telemetry, Text};
use tickloop_app::venue::{
    AdapterEvent, AdapterId, AdapterRequest, Difference, FailReason, FillFault, OrderStatus,
    Request, RequestId, RequestKind, TradeId,
};
use tickloop_app::SignalKind;
use tickloop_app::{App, Context, Event, EventKind, TimerId};
use tickloop_ring::Candle;

mod reconcile;
pub use reconcile::{ReconcileConfig, ReconcileStats, WorkingOrders};

/// The largest engine epoch: order ids are `epoch << EPOCH_SHIFT` plus a sequence, below
/// 2^53.
pub const MAX_EPOCH: u32 = (1 << 22) - 1;
/// Bits of an order id below the epoch: 2^31 orders and requests per run.
pub const EPOCH_SHIFT: u32 = 31;

/// backtesting.py's default order size: a fraction `1 - 2^-52` of the available margin.
const FULL_EQUITY: f64 = 1.0 - f64::EPSILON;
use crate::limits::{
    self, FAULTS_PER_EVENT, FILLS_REMEMBERED_MAX, FILLS_REMEMBERED_PER_ORDER, SETTLE_ROUNDS,
    UPDATES_PER_ORDER,
};

/// A strategy: decisions over candles, timers and its orders' fates.
pub trait Strategy: Sized {
    type Config: Serialize + DeserializeOwned + Clone + Debug + PartialEq + Default;
    /// The name `--strategy` and the journal use.
    const NAME: &'static str;
    /// Build it for symbol ids `0..symbols`, allocating everything it will need.
    fn new(config: Self::Config, symbols: u32) -> Result<Self, String>;
    fn on_start(&mut self, _cx: &mut StrategyCx<'_, '_>) {}
    fn on_candle(&mut self, cx: &mut StrategyCx<'_, '_>, pos: u64, candle: &Candle);
    fn on_timer(&mut self, _cx: &mut StrategyCx<'_, '_>, _timer: TimerId) {}
    fn on_fill(&mut self, _cx: &mut StrategyCx<'_, '_>, _fill: &Fill) {}
    /// Every state change of every order, the host's bracket legs and close orders included
    /// (an order denied before it existed comes as `state: Denied` with its reason).
    fn on_order_update(&mut self, _cx: &mut StrategyCx<'_, '_>, _update: &OrderUpdate) {}
    /// A cancel or replace the host refused (the order is as it was).
    fn on_refused(&mut self, _cx: &mut StrategyCx<'_, '_>, _refusal: &Refusal) {}
    /// A fill the venue adapter reported was not believed (an overfill, a duplicate, a bad
    /// number, an unknown order): the book did not move.
    fn on_fill_fault(&mut self, _cx: &mut StrategyCx<'_, '_>, _fault: &FillFaultReport) {}
    /// New parameters while running; on `Err` nothing may have changed.
    fn on_config(&mut self, config: Self::Config) -> Result<(), String>;
}

/// The paper broker's settings: backtesting.py's `Backtest(...)` arguments of the same names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaperConfig {
    /// A fraction of each fill's value, charged when a trade opens and when it closes
    /// (backtesting.py's `commission`; -0.1 <= c < 0.1, negative for a rebate).
    pub commission: f64,
    /// A fixed amount charged when a trade opens and when it closes (the first of
    /// backtesting.py's `commission=(fixed, relative)`).
    pub commission_fixed: f64,
    /// The bid-ask spread as a fraction of the price: a long opens that much higher, a short
    /// that much lower (0 <= s < 0.1).
    pub spread: f64,
    /// The margin a position needs (0 < m <= 1; leverage is 1 / margin).
    pub margin: f64,
    /// Market orders fill at the close of the bar they were placed on instead of the next open.
    pub trade_on_close: bool,
    /// Each new order first cancels the symbol's other orders (bracket legs excepted) and
    /// closes its trades.
    pub exclusive_orders: bool,
    /// When the data ends, close every open trade at the last bar's open, as backtesting.py
    /// does, so the trade list and the final equity include it.
    pub finalize_trades: bool,
}

impl Default for PaperConfig {
    fn default() -> Self {
        PaperConfig {
            commission: 0.0,
            commission_fixed: 0.0,
            spread: 0.0,
            margin: 1.0,
            trade_on_close: false,
            exclusive_orders: false,
            finalize_trades: false,
        }
    }
}

impl PaperConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.commission.is_finite() && (-0.1..0.1).contains(&self.commission)) {
            return Err(format!(
                "commission = {} must be a fraction from -0.1 to under 0.1 (0.002 is 0.2 %)",
                self.commission
            ));
        }
        if !(self.commission_fixed.is_finite() && self.commission_fixed >= 0.0) {
            return Err(format!(
                "commission_fixed = {} must be an amount >= 0",
                self.commission_fixed
            ));
        }
        if !(self.spread.is_finite() && (0.0..0.1).contains(&self.spread)) {
            return Err(format!(
                "spread = {} must be a fraction from 0 to under 0.1",
                self.spread
            ));
        }
        if !(self.margin.is_finite() && self.margin > 0.0 && self.margin <= 1.0) {
            return Err(format!(
                "margin = {} must be more than 0 and at most 1 (0.02 is 50:1 leverage)",
                self.margin
            ));
        }
        Ok(())
    }

    /// backtesting.py's `_commission_func`: `fixed + |size| × price × relative`.
    fn commission(&self, size: f64, price: f64) -> f64 {
        self.commission_fixed + size.abs() * price * self.commission
    }

    /// backtesting.py's `_adjusted_price`: the price moved by the spread against the trader.
    fn adjusted(&self, units: f64, price: f64) -> f64 {
        price * (1.0 + self.spread.copysign(units))
    }

    fn leverage(&self) -> f64 {
        1.0 / self.margin
    }
}

/// The host's limits and its paper broker's settings. Sizes are fixed for the run;
/// `cancel_on_shutdown` may change while running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Starting cash, in quote currency.
    pub cash: f64,
    /// Symbol ids `0..symbols` are traded; candles of others are ignored and counted.
    pub symbols: u32,
    pub max_open_orders: u32,
    pub max_open_trades: u32,
    /// Orders are for whole multiples of this many units (1: whole units, as backtesting.py).
    pub lot: f64,
    /// Intents one event may place; more are dropped and counted.
    pub intents_per_event: u32,
    /// On SIGTERM/SIGINT, cancel open orders (otherwise they are left as they are).
    pub cancel_on_shutdown: bool,
    /// Stop the loop when a finite source (a backtest's data) has delivered its last candle.
    pub stop_when_data_ends: bool,
    /// Send orders to this adapter (its index among the engine's `[[adapters.adapter]]`)
    /// as market orders, and take their fate from its events; absent: the built-in paper
    /// broker fills them.
    pub adapter: Option<u16>,
    /// The built-in paper broker's commission, spread, margin and order handling.
    pub paper: PaperConfig,
    /// The host's own timer, reserved (a strategy must not use it); below the loop's
    /// `timer_capacity`. The paper broker expires good-till orders with it, on time even when
    /// no candle comes; with a venue adapter, reconciliations run on it (periodic, retries).
    pub expiry_timer: TimerId,
    /// With a venue adapter: comparing the books with the venue's.
    pub reconcile: ReconcileConfig,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            cash: 10_000.0,
            symbols: 1024,
            max_open_orders: 256,
            max_open_trades: 256,
            lot: 1.0,
            intents_per_event: 64,
            cancel_on_shutdown: false,
            stop_when_data_ends: false,
            adapter: None,
            paper: PaperConfig::default(),
            expiry_timer: 1023,
            reconcile: ReconcileConfig::default(),
        }
    }
}

impl HostConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.cash.is_finite() && self.cash > 0.0) {
            return Err(format!("cash = {} must be a positive number", self.cash));
        }
        if !(self.lot.is_finite() && self.lot > 0.0) {
            return Err(format!("lot = {} must be a positive number", self.lot));
        }
        for (field, v, max) in [
            ("symbols", self.symbols, limits::MAX_SYMBOLS),
            (
                "max_open_orders",
                self.max_open_orders,
                limits::MAX_OPEN_ORDERS,
            ),
            (
                "max_open_trades",
                self.max_open_trades,
                limits::MAX_OPEN_TRADES,
            ),
            (
                "intents_per_event",
                self.intents_per_event,
                limits::MAX_INTENTS_PER_EVENT,
            ),
        ] {
            if v == 0 || v > max {
                return Err(format!("{field} = {v} must be 1 to {max}"));
            }
        }
        self.reconcile.validate()?;
        self.paper.validate().map_err(|e| format!("paper.{e}"))
    }
}

/// What the host records in the journal and `reconfigure` takes: its own config, the risk
/// limits and the strategy's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSetup<C> {
    pub host: HostConfig,
    pub risk: RiskConfig,
    pub strategy: C,
    /// This run's engine epoch (kept on disk next to the instance lock, one more every
    /// start): order ids are `epoch << 31` plus 1, 2, 3..., so a restart never reuses one.
    /// 0 (a backtest, a test): ids from 1. Not a config key: the engine sets it.
    pub epoch: u32,
}

impl<C> HostSetup<C> {
    /// The setup of a run without an epoch (a backtest, a test: order ids from 1).
    pub fn new(host: HostConfig, risk: RiskConfig, strategy: C) -> HostSetup<C> {
        HostSetup {
            host,
            risk,
            strategy,
            epoch: 0,
        }
    }
}

/// What a refused request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Cancel,
    Replace,
}

/// A cancel or replace the host refused, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub order: OrderId,
    pub action: Action,
    pub reason: DenyReason,
}

/// What the host outputs (journaled; the embedding program's sink turns them into telemetry,
/// adapter requests, trade lists).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum HostOutput {
    /// An order changed state.
    Order(OrderUpdate),
    /// An intent was refused before it became an order (the order id is spent, the order
    /// never existed at a venue): by risk, or by the host's checks of its prices and size.
    Denied {
        order: OrderId,
        symbol: u32,
        side: Side,
        reason: DenyReason,
    },
    /// A cancel or replace was refused; the order is as it was.
    Refused(Refusal),
    /// A fill (also reported as the order's update).
    Fill(Fill),
    /// A fill the adapter reported that was not believed; the book did not move.
    FillFault(FillFaultReport),
    /// A trade closed.
    Trade(ClosedTrade),
    /// At shutdown: a position left open (never closed by shutdown).
    OpenPosition {
        symbol: u32,
        size: f64,
        avg_entry: f64,
        last_price: f64,
        unrealized: f64,
    },
    /// Intents beyond `intents_per_event` were dropped at this event.
    IntentsDropped { dropped: u32 },
    /// Send this order to the venue adapter (the order's id is the request's id).
    Send(AdapterRequest),
    /// Order `order` got no answer: its state is asked of the venue (then `Order` outputs
    /// follow as it is resolved).
    Unknown {
        order: OrderId,
        reason: RejectReason,
    },
    /// A reconciliation with the venue ended: the books are the venue's.
    Reconciled {
        adapter: u16,
        first: bool,
        positions: u32,
        orders: u32,
        differences: u32,
        cash: f64,
    },
    /// What the engine believed and what the venue says differ (reported, then the venue's
    /// is adopted).
    Difference {
        adapter: u16,
        difference: Difference,
        symbol: u32,
        order: OrderId,
        engine: f64,
        venue: f64,
        /// The engine took the venue's side (a periodic check only reports positions and
        /// cash; a foreign order is left alone).
        adopted: bool,
    },
    /// A working order was changed (by the paper broker at once, by a venue when it
    /// answered): what it is now.
    Replaced(OrderUpdate),
}

impl HostOutput {
    /// The typed telemetry event for this output (every order transition, fill, denial and
    /// position left open has one).
    pub fn telemetry(&self) -> Option<Telemetry> {
        Some(match *self {
            HostOutput::Order(u) => match u.state {
                OrderState::Submitted => Telemetry::OrderSubmitted {
                    order: u.order,
                    symbol: u.symbol,
                    side: u.side,
                    qty: u.units.abs(),
                    price: u.limit.or(u.stop),
                },
                OrderState::Accepted => Telemetry::OrderAccepted { order: u.order },
                OrderState::Triggered => Telemetry::OrderTriggered { order: u.order },
                OrderState::Rejected => Telemetry::OrderRejected {
                    order: u.order,
                    reason: match u.reason {
                        Some(reason) => Text::from_fmt(format_args!("{reason}")),
                        None => Text::new("rejected"),
                    },
                },
                OrderState::Cancelled | OrderState::Expired => {
                    Telemetry::OrderCancelled { order: u.order }
                }
                OrderState::Unknown => return None,
                // Fills have their own output; New and Denied are not venue states.
                _ => return None,
            },
            HostOutput::Replaced(u) => Telemetry::OrderReplaced {
                order: u.order,
                qty: u.units.abs(),
                limit: u.limit,
                stop: u.stop,
            },
            HostOutput::Fill(f) => Telemetry::Fill {
                order: f.order,
                qty: f.units,
                price: f.price,
            },
            HostOutput::FillFault(f) => Telemetry::FillFault {
                adapter: f.adapter,
                order: f.order,
                fault: f.fault,
                qty: f.qty,
                price: f.price,
                remaining: f.remaining,
            },
            HostOutput::Denied { symbol, reason, .. } => Telemetry::RiskDenied {
                symbol,
                reason: Text::new(reason.as_str()),
            },
            HostOutput::Refused(r) => Telemetry::OrderRefused {
                order: r.order,
                reason: Text::new(r.reason.as_str()),
            },
            _ => return reconcile::telemetry(self),
        })
    }
}

/// An open trade (backtesting.py's `Trade`): positions are made of these, FIFO.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenTrade {
    pub seq: TradeSeq,
    pub symbol: u32,
    /// Signed units: + long, - short.
    pub size: f64,
    pub entry_price: f64,
    pub entry_bar: u64,
    pub entry_ts_ns: i64,
    /// Its bracket legs, while they work.
    pub sl_order: Option<OrderId>,
    pub tp_order: Option<OrderId>,
}

#[derive(Debug, Clone, Copy)]
enum Intent {
    Place(OrderId, OrderRequest),
    Close(u32),
    Cancel(OrderId),
    Replace(OrderId, Replace),
}

/// The host's books, read-only to the strategy through [`StrategyCx`].
pub struct Book {
    cash: f64,
    trades: Vec<OpenTrade>,
    /// Per symbol: Σ size of open trades, Σ size × entry (in trade order), last close, and
    /// the signed units of orders not yet filled (bracket legs not counted).
    pos_size: Vec<f64>,
    pos_cost: Vec<f64>,
    last: Vec<f64>,
    pending: Vec<f64>,
    /// Symbols with open trades, in the order they were opened.
    held: Vec<u32>,
    /// Open orders in the paper broker's queue order.
    orders: Vec<Order>,
    next_trade: TradeSeq,
}

impl Book {
    pub fn cash(&self) -> f64 {
        self.cash
    }

    /// The signed position of `symbol` in units (filled trades only).
    pub fn position(&self, symbol: u32) -> f64 {
        self.pos_size.get(symbol as usize).copied().unwrap_or(0.0)
    }

    /// Signed units of `symbol`'s orders not yet filled (bracket legs not counted).
    pub fn pending(&self, symbol: u32) -> f64 {
        self.pending.get(symbol as usize).copied().unwrap_or(0.0)
    }

    /// The average entry price of `symbol`'s position (NaN when flat).
    pub fn avg_entry(&self, symbol: u32) -> f64 {
        let size = self.position(symbol);
        if size == 0.0 {
            f64::NAN
        } else {
            self.pos_cost[symbol as usize] / size
        }
    }

    /// The last close seen of `symbol`.
    pub fn last_price(&self, symbol: u32) -> Option<f64> {
        self.last
            .get(symbol as usize)
            .copied()
            .filter(|p| !p.is_nan())
    }

    /// Cash plus open trades marked at their symbols' last closes, in backtesting.py's form:
    /// `cash + (close × Σ size − Σ size × entry)`.
    pub fn equity(&self) -> f64 {
        let mut unrealized = 0.0;
        for &s in &self.held {
            let s = s as usize;
            unrealized += self.last[s] * self.pos_size[s] - self.pos_cost[s];
        }
        self.cash + unrealized
    }

    /// Symbols with a position or an order that opens one.
    pub fn open_positions(&self) -> u32 {
        let mut n = self.held.len() as u32;
        for (k, o) in self.orders.iter().enumerate() {
            let s = o.symbol as usize;
            if self.pos_size[s] == 0.0
                && o.role == Role::Entry
                && !self.orders[..k]
                    .iter()
                    .any(|x| x.symbol == o.symbol && x.role == Role::Entry)
            {
                n += 1;
            }
        }
        n
    }

    pub fn open_orders(&self) -> &[Order] {
        &self.orders
    }

    /// A working order by id.
    pub fn order(&self, id: OrderId) -> Option<&Order> {
        self.orders.iter().find(|o| o.id == id)
    }

    /// Open trades, oldest first.
    pub fn open_trades(&self) -> &[OpenTrade] {
        &self.trades
    }

    /// backtesting.py's `margin_available`: equity less the margin the open trades use.
    fn margin_available(&self, leverage: f64) -> f64 {
        let mut used = 0.0;
        for t in &self.trades {
            used += t.size.abs() * self.last[t.symbol as usize] / leverage;
        }
        (self.equity() - used).max(0.0)
    }

    fn trade_index(&self, seq: TradeSeq) -> Option<usize> {
        self.trades.iter().position(|t| t.seq == seq)
    }

    fn recompute(&mut self, symbol: u32) {
        let s = symbol as usize;
        let (mut size, mut cost) = (0.0, 0.0);
        for t in self.trades.iter().filter(|t| t.symbol == symbol) {
            size += t.size;
            cost += t.size * t.entry_price;
        }
        self.pos_size[s] = size;
        self.pos_cost[s] = cost;
        let held = self.held.iter().position(|&h| h == symbol);
        match (held, size != 0.0) {
            (None, true) => self.held.push(symbol),
            (Some(i), false) => {
                self.held.remove(i);
            }
            _ => {}
        }
    }

    /// Recount `symbol`'s pending units from its orders (no float residue stays behind).
    fn repend(&mut self, symbol: u32) {
        let mut pending = 0.0;
        for o in &self.orders {
            if o.symbol == symbol && !o.is_leg() {
                pending += o.units;
            }
        }
        self.pending[symbol as usize] = pending;
    }
}

/// The strategy's side of an event: the time, the book, and intents to place.
pub struct StrategyCx<'a, 'b> {
    cx: &'a mut Context<'b, HostOutput>,
    book: &'a Book,
    intents: &'a mut Vec<Intent>,
    dropped: &'a mut u32,
    next_id: &'a mut OrderId,
}

impl StrategyCx<'_, '_> {
    pub fn now(&self) -> Nanos {
        self.cx.now()
    }
    pub fn book(&self) -> &Book {
        self.book
    }
    pub fn position(&self, symbol: u32) -> f64 {
        self.book.position(symbol)
    }
    pub fn equity(&self) -> f64 {
        self.book.equity()
    }

    fn intent(&mut self, intent: Intent) -> bool {
        if self.intents.len() < self.intents.capacity() {
            self.intents.push(intent);
            true
        } else {
            *self.dropped += 1;
            false
        }
    }

    /// Place an order: its id, whose fate `on_order_update` tells (denied, accepted,
    /// filled...), or `None` when this event already asked for `intents_per_event` things.
    pub fn place(&mut self, order: OrderRequest) -> Option<OrderId> {
        let id = *self.next_id;
        if self.intent(Intent::Place(id, order)) {
            *self.next_id += 1;
            Some(id)
        } else {
            None
        }
    }

    /// A market buy, filled at the next candle's open (paper) or sent to the venue.
    pub fn buy(&mut self, symbol: u32, size: Size) {
        self.place(OrderRequest::buy(symbol, size));
    }

    pub fn sell(&mut self, symbol: u32, size: Size) {
        self.place(OrderRequest::sell(symbol, size));
    }

    /// Close the symbol's whole position: one close order per open trade (nothing happens
    /// when it is flat). Queued ahead of the other orders, so `close` then `buy` reverses
    /// at one price.
    pub fn close(&mut self, symbol: u32) {
        self.intent(Intent::Close(symbol));
    }

    /// Cancel a working order (a bracket leg too); a final or unknown one is refused
    /// (`on_refused`).
    pub fn cancel(&mut self, order: OrderId) {
        self.intent(Intent::Cancel(order));
    }

    /// Change a working order's limit, stop and/or units; it keeps its place in the queue.
    pub fn replace(&mut self, order: OrderId, change: Replace) {
        self.intent(Intent::Replace(order, change));
    }

    pub fn set_timer(&mut self, timer: TimerId, deadline: Nanos) {
        self.cx.set_timer(timer, deadline);
    }

    pub fn every(&mut self, timer: TimerId, period: Nanos, budget: Nanos) {
        self.cx.every(timer, period, budget);
    }

    pub fn stop(&mut self) {
        self.cx.stop();
    }
}

/// Counters and results of a run, read after it (or by tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HostStats {
    pub candles: u64,
    pub ignored: u64,
    pub orders: u64,
    pub fills: u64,
    /// Fills the adapter reported that were not believed (see [`FillFault`]).
    pub fill_faults: u64,
    pub denied: u64,
    /// Cancels and replaces refused.
    pub refused: u64,
    pub rejected: u64,
    pub cancelled: u64,
    pub expired: u64,
    pub trades: u64,
    pub intents_dropped: u64,
    /// Fills or order updates not told to the strategy (more than the buffers hold, or
    /// still coming after the settle rounds).
    pub updates_dropped: u64,
    /// backtesting.py's warning: a bracket leg could have filled in the bar its stop or limit
    /// entry filled; it was left for the next bar, as backtesting.py does.
    pub legs_deferred: u64,
    /// Equity at the last mark, its peak, and the largest drawdown from a peak (a fraction).
    pub equity: f64,
    pub peak: f64,
    pub max_drawdown: f64,
}

/// One candle as the paper broker sees it.
#[derive(Debug, Clone, Copy)]
struct Bar {
    pos: u64,
    ts: i64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
}

impl Bar {
    const NONE: Bar = Bar {
        pos: 0,
        ts: 0,
        open: f64::NAN,
        high: f64::NAN,
        low: f64::NAN,
        close: f64::NAN,
    };
    fn of(pos: u64, c: &Candle) -> Bar {
        Bar {
            pos,
            ts: c.ts_ns,
            open: c.open,
            high: c.high,
            low: c.low,
            close: c.close,
        }
    }
}

pub struct StrategyHost<S: Strategy> {
    config: HostConfig,
    strategy: S,
    strategy_config: S::Config,
    risk: Risk,
    book: Book,
    next_id: OrderId,
    intents: Vec<Intent>,
    /// The paper broker's pass over a symbol's orders: their ids when it began.
    queue: Vec<OrderId>,
    /// Per symbol: its last candle and the one before (trade_on_close fills at that close).
    last_bar: Vec<Bar>,
    prev_bar: Vec<Bar>,
    /// Fills and order updates the strategy has yet to hear about, and a second buffer of
    /// each to deliver from (so delivering allocates nothing).
    fills: Vec<Fill>,
    fills_out: Vec<Fill>,
    updates: Vec<OrderUpdate>,
    updates_out: Vec<OrderUpdate>,
    refusals: Vec<Refusal>,
    refusals_out: Vec<Refusal>,
    /// Fill faults the strategy has yet to hear about.
    faults: Vec<FillFaultReport>,
    faults_out: Vec<FillFaultReport>,
    /// The keys of the last fills booked (a ring: `seen_next` is the oldest once full), to
    /// refuse a duplicate: the venue's trade id, or a digest of order, quantity, price and
    /// time where the venue gives none.
    seen: Vec<TradeId>,
    seen_next: usize,
    stopping: bool,
    /// The loop's clock and its wall clock at `Started`: good-till times become deadlines.
    clock_base: Option<(Nanos, i64)>,
    /// The deadline the expiry timer is set for.
    expiry_armed: Option<Nanos>,
    stats: HostStats,
    /// Reconciliation with the venue, and the host's own requests.
    recon: reconcile::Recon,
}

/// Whether `p` can be a price.
fn is_price(p: Option<f64>) -> bool {
    p.is_none_or(|p| p.is_finite() && p > 0.0)
}

impl<S: Strategy> StrategyHost<S> {
    pub fn new(setup: HostSetup<S::Config>) -> Result<Self, String> {
        let HostSetup {
            host,
            risk,
            strategy,
            epoch,
        } = setup;
        host.validate()?;
        if epoch > MAX_EPOCH {
            return Err(format!(
                "epoch {epoch} is above {MAX_EPOCH}: order ids would repeat; use a new account name"
            ));
        }
        risk.validate()?;
        let n = host.symbols as usize;
        let orders = host.max_open_orders as usize;
        let intents = host.intents_per_event as usize;
        let book = Book {
            cash: host.cash,
            trades: Vec::with_capacity(host.max_open_trades as usize),
            pos_size: vec![0.0; n],
            pos_cost: vec![0.0; n],
            last: vec![f64::NAN; n],
            pending: vec![0.0; n],
            held: Vec::with_capacity(host.max_open_trades as usize),
            orders: Vec::with_capacity(orders),
            next_trade: 1,
        };
        Ok(StrategyHost {
            strategy: S::new(strategy.clone(), host.symbols)?,
            strategy_config: strategy,
            risk: Risk::new(risk),
            next_id: ((epoch as u64) << EPOCH_SHIFT) + 1,
            recon: reconcile::Recon::new(n, orders),
            intents: Vec::with_capacity(host.intents_per_event as usize),
            queue: Vec::with_capacity(orders),
            last_bar: vec![Bar::NONE; n],
            prev_bar: vec![Bar::NONE; n],
            fills: Vec::with_capacity(orders),
            fills_out: Vec::with_capacity(orders),
            // Every open order's updates, and a denial for every intent of the event.
            updates: Vec::with_capacity(UPDATES_PER_ORDER * orders + intents),
            updates_out: Vec::with_capacity(UPDATES_PER_ORDER * orders + intents),
            refusals: Vec::with_capacity(host.intents_per_event as usize),
            refusals_out: Vec::with_capacity(host.intents_per_event as usize),
            faults: Vec::with_capacity(FAULTS_PER_EVENT),
            faults_out: Vec::with_capacity(FAULTS_PER_EVENT),
            seen: Vec::with_capacity(
                (FILLS_REMEMBERED_PER_ORDER * orders).min(FILLS_REMEMBERED_MAX),
            ),
            seen_next: 0,
            stopping: false,
            clock_base: None,
            expiry_armed: None,
            stats: HostStats {
                equity: host.cash,
                peak: host.cash,
                ..HostStats::default()
            },
            book,
            config: host,
        })
    }

    pub fn book(&self) -> &Book {
        &self.book
    }
    pub fn stats(&self) -> HostStats {
        self.stats
    }
    pub fn strategy(&self) -> &S {
        &self.strategy
    }
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    fn paper(&self) -> bool {
        self.config.adapter.is_none()
    }

    /// Run one strategy callback with a context, then act on its intents.
    fn call(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        f: impl FnOnce(&mut S, &mut StrategyCx<'_, '_>),
    ) {
        let mut dropped = 0;
        {
            let mut scx = StrategyCx {
                cx: &mut *cx,
                book: &self.book,
                intents: &mut self.intents,
                dropped: &mut dropped,
                next_id: &mut self.next_id,
            };
            f(&mut self.strategy, &mut scx);
        }
        if dropped > 0 {
            self.stats.intents_dropped += dropped as u64;
            cx.emit(HostOutput::IntentsDropped { dropped });
        }
        for i in 0..self.intents.len() {
            match self.intents[i] {
                Intent::Place(id, order) => self.place(cx, id, order),
                Intent::Close(symbol) => self.close_symbol(cx, symbol),
                Intent::Cancel(id) => self.cancel(cx, id),
                Intent::Replace(id, change) => self.replace(cx, id, change),
            }
        }
        self.intents.clear();
    }

    fn transition(&mut self, cx: &mut Context<'_, HostOutput>, index: usize, next: OrderState) {
        self.transition_because(cx, index, next, None);
    }

    /// Reject order `index` (and remove it from the table), saying why.
    fn reject(&mut self, cx: &mut Context<'_, HostOutput>, index: usize, reason: RejectReason) {
        self.stats.rejected += 1;
        self.transition_because(cx, index, OrderState::Rejected, Some(reason));
        self.remove_order(index);
    }

    /// End order `index` as `Cancelled` or `Expired` (and remove it), saying why if there
    /// is more to say.
    fn end(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        index: usize,
        state: OrderState,
        reason: Option<RejectReason>,
    ) {
        if state == OrderState::Expired {
            self.stats.expired += 1;
        } else {
            self.stats.cancelled += 1;
        }
        self.transition_because(cx, index, state, reason);
        self.remove_order(index);
    }

    fn transition_because(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        index: usize,
        next: OrderState,
        reason: Option<RejectReason>,
    ) {
        let order = &mut self.book.orders[index];
        assert!(
            order.state.can_become(next),
            "order {} cannot go from {:?} to {:?}",
            order.id,
            order.state,
            next
        );
        order.state = next;
        if next == OrderState::Triggered {
            // Its stop is reached: a market or limit order from now on.
            order.stop = None;
        }
        let update = OrderUpdate {
            reason,
            ..order.update()
        };
        cx.emit(HostOutput::Order(update));
        self.tell(update);
    }

    /// Queue an update for the strategy's `on_order_update`.
    fn tell(&mut self, update: OrderUpdate) {
        if self.updates.len() < self.updates.capacity() {
            self.updates.push(update);
        } else {
            self.stats.updates_dropped += 1;
        }
    }

    /// Tell the strategy about fills and order updates, and act on what it answers, until
    /// nothing is left (at most [`SETTLE_ROUNDS`] rounds; what remains is counted, not lost
    /// silently).
    fn settle(&mut self, cx: &mut Context<'_, HostOutput>) {
        for _ in 0..SETTLE_ROUNDS {
            if self.fills.is_empty()
                && self.updates.is_empty()
                && self.faults.is_empty()
                && self.refusals.is_empty()
            {
                return;
            }
            std::mem::swap(&mut self.fills, &mut self.fills_out);
            std::mem::swap(&mut self.updates, &mut self.updates_out);
            std::mem::swap(&mut self.faults, &mut self.faults_out);
            std::mem::swap(&mut self.refusals, &mut self.refusals_out);
            for k in 0..self.faults_out.len() {
                let fault = self.faults_out[k];
                self.call(cx, |st, scx| st.on_fill_fault(scx, &fault));
            }
            for k in 0..self.fills_out.len() {
                let fill = self.fills_out[k];
                self.call(cx, |st, scx| st.on_fill(scx, &fill));
            }
            for k in 0..self.updates_out.len() {
                let update = self.updates_out[k];
                self.call(cx, |st, scx| st.on_order_update(scx, &update));
            }
            for k in 0..self.refusals_out.len() {
                let refusal = self.refusals_out[k];
                self.call(cx, |st, scx| st.on_refused(scx, &refusal));
            }
            self.faults_out.clear();
            self.fills_out.clear();
            self.updates_out.clear();
            self.refusals_out.clear();
        }
        self.stats.updates_dropped +=
            (self.fills.len() + self.updates.len() + self.faults.len() + self.refusals.len())
                as u64;
        self.fills.clear();
        self.updates.clear();
        self.faults.clear();
        self.refusals.clear();
    }

    fn deny(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        order: OrderId,
        req: &OrderRequest,
        reason: DenyReason,
    ) {
        self.stats.denied += 1;
        cx.emit(HostOutput::Denied {
            order,
            symbol: req.symbol,
            side: req.side,
            reason,
        });
        self.tell(OrderUpdate {
            order,
            symbol: req.symbol,
            side: req.side,
            state: OrderState::Denied,
            units: 0.0,
            filled: 0.0,
            avg_price: 0.0,
            role: Role::Entry,
            limit: req.limit,
            stop: req.stop,
            reason: None,
            denied: Some(reason),
        });
    }

    fn refuse(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        order: OrderId,
        action: Action,
        reason: DenyReason,
    ) {
        self.stats.refused += 1;
        let refusal = Refusal {
            order,
            action,
            reason,
        };
        cx.emit(HostOutput::Refused(refusal));
        if self.refusals.len() < self.refusals.capacity() {
            self.refusals.push(refusal);
        } else {
            self.stats.updates_dropped += 1;
        }
    }

    /// The host's checks of a request, before risk: every denial a bad price, size, side or
    /// bracket can cause.
    fn check(&self, now: Nanos, req: &OrderRequest) -> Result<(), DenyReason> {
        let _ = now;
        if req.symbol >= self.config.symbols {
            return Err(DenyReason::UnknownSymbol);
        }
        if self.stopping {
            return Err(DenyReason::ShuttingDown);
        }
        if self.reconciling() {
            return Err(DenyReason::Reconciling);
        }
        if !(is_price(req.limit) && is_price(req.stop) && is_price(req.sl) && is_price(req.tp)) {
            return Err(DenyReason::BadPrice);
        }
        let good_size = match req.size {
            Size::Units(x) | Size::Quote(x) => x.is_finite() && x > 0.0,
            Size::Fraction(f) => f > 0.0 && f < 1.0,
            Size::AllEquity => true,
            Size::Position => self.book.position(req.symbol) != 0.0,
        };
        if !good_size {
            return Err(DenyReason::BadSize);
        }
        let long = req.side == Side::Buy;
        let last = self.book.last_price(req.symbol);
        if let (Some(stop), Some(close)) = (req.stop, last) {
            if (long && stop <= close) || (!long && stop >= close) {
                return Err(DenyReason::StopWrongSide);
            }
        }
        if req.sl.is_some() || req.tp.is_some() {
            let sign = req.side.sign();
            let entry = req
                .limit
                .or(req.stop)
                .or(last.map(|p| self.config.paper.adjusted(sign, p)))
                .ok_or(DenyReason::NoPrice)?;
            let (below, above) = if long {
                (req.sl, req.tp)
            } else {
                (req.tp, req.sl)
            };
            if !(below.is_none_or(|b| b < entry) && above.is_none_or(|a| entry < a)) {
                return Err(DenyReason::BracketWrongSide);
            }
        }
        if req.reduce_only {
            let position = self.book.position(req.symbol);
            if position == 0.0 || position.signum() == req.side.sign() {
                return Err(DenyReason::ReduceOnly);
            }
        }
        if let TimeInForce::Gtd(t) = req.tif {
            if last.is_some() && t <= self.last_bar[req.symbol as usize].ts {
                return Err(DenyReason::Expired);
            }
        }
        Ok(())
    }

    /// Checks, risk, then an order in the table (Submitted to the paper broker or sent).
    fn place(&mut self, cx: &mut Context<'_, HostOutput>, id: OrderId, req: OrderRequest) {
        if let Err(reason) = self.check(cx.now(), &req) {
            return self.deny(cx, id, &req, reason);
        }
        let s = req.symbol;
        let position = self.book.position(s);
        let committed = position + self.book.pending(s);
        let last = self.book.last_price(s);
        let price = req.limit.or(req.stop).or(last);
        let units = match (req.size, price) {
            (Size::Units(u), _) => u.abs(),
            (Size::Position, _) => position.abs(),
            (Size::Quote(q), Some(p)) => q.abs() / p,
            (Size::AllEquity, Some(p)) => self.book.equity() / p,
            (Size::Fraction(f), Some(p)) => f * self.book.equity() / p,
            (_, None) => 0.0,
        };
        let signed = req.side.sign() * units;
        let reduces = req.reduce_only
            || (committed != 0.0
                && committed.signum() != req.side.sign()
                && units <= committed.abs());
        let proposed = Proposed {
            reduces,
            units,
            price,
            position_after: committed + signed,
            opens_symbol: committed == 0.0,
            open_positions: self.book.open_positions(),
        };
        if let Err(reason) = self.risk.check(cx.now(), &proposed) {
            return self.deny(cx, id, &req, reason);
        }
        // Room for the order and the bracket legs its fill will add.
        let legs = req.sl.is_some() as usize + req.tp.is_some() as usize;
        if self.book.orders.len() + 1 + legs > self.book.orders.capacity() {
            return self.deny(cx, id, &req, DenyReason::TooManyOrders);
        }
        if self.paper() && self.config.paper.exclusive_orders {
            self.exclusive(cx, s);
        }
        if self.book.orders.len() == self.book.orders.capacity() {
            return self.deny(cx, id, &req, DenyReason::TooManyOrders);
        }
        let order = Order {
            limit: req.limit,
            stop: req.stop,
            sl: req.sl,
            tp: req.tp,
            tif: req.tif,
            reduce_only: req.reduce_only,
            units: signed,
            ..Order::new(id, s, req.side, req.size, Role::Entry, cx.now())
        };
        self.stats.orders += 1;
        self.book.orders.push(order);
        let index = self.book.orders.len() - 1;
        self.book.repend(s);
        match self.config.adapter {
            None => {
                self.transition(cx, index, OrderState::Submitted);
                if let TimeInForce::Gtd(t) = req.tif {
                    self.arm_expiry(cx, t);
                }
            }
            Some(adapter) => self.send_new(cx, adapter, index, &req, units),
        }
    }

    /// Send new order `index` (of `req`, about `units`) to the venue adapter. A venue needs
    /// the units now: resolved at the last close, whole lots; the submission shows exactly
    /// what is sent.
    fn send_new(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        adapter: u16,
        index: usize,
        req: &OrderRequest,
        units: f64,
    ) {
        let s = req.symbol;
        let qty = match (req.size, self.book.last_price(s)) {
            (Size::Units(u), _) => (u.abs() / self.config.lot).floor() * self.config.lot,
            (Size::Position, _) => self.book.position(s).abs(),
            (_, Some(p)) => self.lots(units * p, p),
            (_, None) => 0.0,
        };
        self.book.orders[index].units = req.side.sign() * qty;
        self.book.repend(s);
        self.transition(cx, index, OrderState::Submitted);
        if qty == 0.0 {
            return self.reject(cx, index, RejectReason::ZeroSize);
        }
        cx.emit(HostOutput::Send(AdapterRequest {
            adapter,
            id: self.book.orders[index].id,
            request: Request::PlaceOrder {
                symbol: s,
                side: req.side,
                qty,
                limit: req.limit,
                stop: req.stop,
                tif: req.tif,
                reduce_only: req.reduce_only,
            },
        }));
    }

    /// backtesting.py's `exclusive_orders` before a new order: cancel the symbol's orders
    /// that are not bracket legs, then close each of its trades. It walks the queue as
    /// backtesting.py's `for o in self.orders: o.cancel()` does, which steps past the order
    /// after each one it removes (so every other one of a run survives); kept, to fill alike.
    fn exclusive(&mut self, cx: &mut Context<'_, HostOutput>, s: u32) {
        let mut i = 0;
        while i < self.book.orders.len() {
            let o = self.book.orders[i];
            if o.symbol == s && !o.is_leg() && o.state.is_working() {
                self.end(cx, i, OrderState::Cancelled, None);
            }
            i += 1;
        }
        self.close_symbol(cx, s);
    }

    /// backtesting.py's `position.close()`: a close order per open trade of `symbol`, each
    /// put at the front of the queue (so the newest trade's is first).
    fn close_symbol(&mut self, cx: &mut Context<'_, HostOutput>, symbol: u32) {
        if symbol >= self.config.symbols {
            return;
        }
        for k in 0..self.book.trades.len() {
            let t = self.book.trades[k];
            if t.symbol == symbol {
                self.close_trade_order(cx, &t, 0);
            }
        }
    }

    /// Queue an order closing trade `t` at queue position `at`.
    fn close_trade_order(&mut self, cx: &mut Context<'_, HostOutput>, t: &OpenTrade, at: usize) {
        let id = self.next_id;
        self.next_id += 1;
        let side = if t.size > 0.0 { Side::Sell } else { Side::Buy };
        let req = OrderRequest::new(t.symbol, side, Size::Position);
        if self.stopping {
            return self.deny(cx, id, &req, DenyReason::ShuttingDown);
        }
        if self.book.orders.len() == self.book.orders.capacity() {
            return self.deny(cx, id, &req, DenyReason::TooManyOrders);
        }
        let order = Order {
            trade: Some(t.seq),
            reduce_only: true,
            units: -t.size,
            ..Order::new(id, t.symbol, side, Size::Position, Role::Close, cx.now())
        };
        self.queue_order(cx, at, order);
    }

    /// The loop's time of day now, from the wall clock at `Started` (None before it).
    fn time_of_day(&self, now: Nanos) -> Option<i64> {
        let (at, wall) = self.clock_base?;
        Some(wall.saturating_add(now.saturating_sub(at) as i64))
    }

    /// Set the expiry timer for good-till time `t` if it is the earliest to come. A time the
    /// loop's wall clock has passed already is left to the candles (a backtest's data is
    /// older than its simulated clock: its orders expire by candle time alone).
    fn arm_expiry(&mut self, cx: &mut Context<'_, HostOutput>, t: i64) {
        let (Some((at, wall)), Some(now_wall)) = (self.clock_base, self.time_of_day(cx.now()))
        else {
            return;
        };
        if t <= now_wall {
            return;
        }
        let deadline = at.saturating_add((t - wall) as Nanos);
        if self.expiry_armed.is_none_or(|armed| deadline < armed) {
            self.expiry_armed = Some(deadline);
            cx.set_timer(self.config.expiry_timer, deadline);
        }
    }

    /// The expiry timer: good-till orders whose time has come expire; the timer is set again
    /// for the next.
    fn on_expiry_timer(&mut self, cx: &mut Context<'_, HostOutput>) {
        self.expiry_armed = None;
        let Some(now_wall) = self.time_of_day(cx.now()) else {
            return;
        };
        let mut i = 0;
        let mut next = None;
        while i < self.book.orders.len() {
            match self.book.orders[i].tif {
                TimeInForce::Gtd(t) if t <= now_wall => {
                    self.end(cx, i, OrderState::Expired, None);
                    continue;
                }
                TimeInForce::Gtd(t) => next = Some(next.map_or(t, |n: i64| n.min(t))),
                _ => {}
            }
            i += 1;
        }
        if let Some(t) = next {
            self.arm_expiry(cx, t);
        }
    }

    /// Put an order the host made (a close, a bracket leg) at `at` in the queue, submitted:
    /// to the paper broker, or sent to the venue. Through a venue each is an order of its own
    /// there; the host keeps a bracket one-cancels-other itself.
    fn queue_order(&mut self, cx: &mut Context<'_, HostOutput>, at: usize, order: Order) {
        self.book.orders.insert(at, order);
        self.stats.orders += 1;
        self.book.repend(order.symbol);
        self.transition(cx, at, OrderState::Submitted);
        if let Some(adapter) = self.config.adapter {
            cx.emit(HostOutput::Send(AdapterRequest {
                adapter,
                id: order.id,
                request: Request::PlaceOrder {
                    symbol: order.symbol,
                    side: order.side,
                    qty: order.units.abs(),
                    limit: order.limit,
                    stop: order.stop,
                    tif: TimeInForce::Gtc,
                    reduce_only: false,
                },
            }));
        }
    }

    fn cancel(&mut self, cx: &mut Context<'_, HostOutput>, id: OrderId) {
        let Some(i) = self.order_index(id) else {
            return self.refuse(cx, id, Action::Cancel, DenyReason::NotWorking);
        };
        let o = self.book.orders[i];
        if !o.state.is_working() {
            return self.refuse(cx, id, Action::Cancel, DenyReason::NotWorking);
        }
        match self.config.adapter {
            None => self.end(cx, i, OrderState::Cancelled, None),
            Some(_) => {
                self.transition(cx, i, OrderState::PendingCancel);
                self.send_cancel(cx, id);
            }
        }
    }

    fn replace(&mut self, cx: &mut Context<'_, HostOutput>, id: OrderId, change: Replace) {
        // Whole lots, as a placement's units are.
        let lot = self.config.lot;
        let change = Replace {
            units: change.units.map(|u| (u / lot).floor() * lot),
            ..change
        };
        let Some(i) = self.order_index(id) else {
            return self.refuse(cx, id, Action::Replace, DenyReason::NotWorking);
        };
        let o = self.book.orders[i];
        let venue = !self.paper();
        let refused = if !o.state.is_working() || o.state == OrderState::Unknown {
            Some(DenyReason::NotWorking)
        } else if venue && !self.venue_replaces() {
            Some(DenyReason::Unsupported)
        } else if o.state == OrderState::PendingReplace
            || o.replacing != 0
            // Through a venue: not before it took the order, and a market order has nothing
            // to change.
            || (venue && (o.state == OrderState::Submitted || (o.limit.is_none() && o.stop.is_none())))
            || (change.limit.is_some() && o.limit.is_none())
            || (change.stop.is_some() && o.stop.is_none())
            || (change.units.is_some() && o.role != Role::Entry)
        {
            Some(DenyReason::NotReplaceable)
        } else if !(is_price(change.limit) && is_price(change.stop)) {
            Some(DenyReason::BadPrice)
        } else if change.units.is_some_and(|u| !(u.is_finite() && u > 0.0)) {
            Some(DenyReason::BadSize)
        } else {
            let req = OrderRequest {
                limit: change.limit.or(o.limit),
                stop: change.stop.or(o.stop),
                sl: o.sl,
                tp: o.tp,
                ..OrderRequest::new(o.symbol, o.side, o.size)
            };
            // A leg's prices answer to no bracket; an entry's stop and bracket are checked
            // again at the new prices.
            match self.check(cx.now(), &req) {
                Err(reason) if o.role == Role::Entry => Some(reason),
                Err(DenyReason::StopWrongSide) | Err(DenyReason::BracketWrongSide) => None,
                Err(reason) => Some(reason),
                Ok(()) => None,
            }
        };
        if let Some(reason) = refused {
            return self.refuse(cx, id, Action::Replace, reason);
        }
        if venue {
            // Pending until the venue answers; it works as it was meanwhile.
            if !self.send_replace(cx, i, change) {
                return self.refuse(cx, id, Action::Replace, DenyReason::TooManyOrders);
            }
            return self.transition(cx, i, OrderState::PendingReplace);
        }
        let before = o.state;
        self.apply_replace(cx, i, change);
        // The paper broker takes it at once: pending, then working as before.
        self.transition(cx, i, OrderState::PendingReplace);
        self.transition(cx, i, before);
    }

    /// Order `i` is changed as `change` says (units: what is left to fill), and told.
    fn apply_replace(&mut self, cx: &mut Context<'_, HostOutput>, i: usize, change: Replace) {
        let m = &mut self.book.orders[i];
        m.limit = change.limit.or(m.limit);
        m.stop = change.stop.or(m.stop);
        if let Some(u) = change.units {
            m.size = Size::Units(m.filled.abs() + u);
            m.units = m.side.sign() * u;
        }
        let (symbol, update) = (m.symbol, m.update());
        self.book.repend(symbol);
        cx.emit(HostOutput::Replaced(update));
    }

    /// The order `id` names: its own id, or the id a venue knows it by since a replace (or
    /// while one is in flight).
    fn order_index(&self, id: OrderId) -> Option<usize> {
        self.book
            .orders
            .iter()
            .position(|o| o.id == id || o.client == id || (o.replacing == id && id != 0))
    }

    fn remove_order(&mut self, index: usize) -> Order {
        let order = self.book.orders.remove(index);
        if order.replacing != 0 {
            self.forget(order.replacing);
        }
        if let Some(seq) = order.trade {
            if let Some(t) = self.book.trade_index(seq) {
                let t = &mut self.book.trades[t];
                if t.sl_order == Some(order.id) {
                    t.sl_order = None;
                }
                if t.tp_order == Some(order.id) {
                    t.tp_order = None;
                }
            }
        }
        self.book.repend(order.symbol);
        order
    }

    /// Whole lots of `units` (rounded toward zero); backtesting.py's floor division when
    /// the lot is one unit.
    fn lots(&self, amount: f64, price: f64) -> f64 {
        if self.config.lot == 1.0 {
            python_floor_div(amount, price)
        } else {
            (amount / price / self.config.lot).floor() * self.config.lot
        }
    }

    /// The paper broker on a candle of `s`: backtesting.py's `_process_orders`, over the
    /// symbol's orders in queue order (docs/backtest-semantics.md). Orders added while it
    /// runs (bracket legs) wait for the next candle, unless a market entry with a bracket
    /// filled, or a stop entry whose take-profit is unambiguous: then the pass runs again
    /// on the same bar, as backtesting.py's does.
    fn process_orders(&mut self, cx: &mut Context<'_, HostOutput>, s: u32, bar: &Bar) {
        let prev = self.prev_bar[s as usize];
        // Good-till orders whose time has come expire before the bar can fill them.
        let mut i = 0;
        while i < self.book.orders.len() {
            let o = self.book.orders[i];
            match o.tif {
                TimeInForce::Gtd(t) if o.symbol == s && o.state.is_working() && bar.ts >= t => {
                    self.end(cx, i, OrderState::Expired, None)
                }
                _ => i += 1,
            }
        }
        // Each pass can only add legs to trades it opened; a bounded number of passes.
        for _ in 0..=self.book.orders.capacity() {
            self.queue.clear();
            for o in &self.book.orders {
                if o.symbol == s && o.state.is_working() {
                    self.queue.push(o.id);
                }
            }
            let mut again = false;
            for k in 0..self.queue.len() {
                let Some(i) = self.order_index(self.queue[k]) else {
                    continue; // a bracket's other leg, gone with its trade
                };
                again |= self.process_order(cx, i, bar, &prev);
            }
            if !again {
                return;
            }
        }
        unreachable!("the paper broker's passes over symbol {s} did not end");
    }

    /// One order of the pass; whether the pass must run again.
    fn process_order(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        i: usize,
        bar: &Bar,
        prev: &Bar,
    ) -> bool {
        let o = self.book.orders[i];
        let long = o.side == Side::Buy;
        let stop = o.stop;
        let on_close = self.config.paper.trade_on_close && !o.is_leg() && !prev.close.is_nan();
        let market_price = if on_close { prev.close } else { bar.open };
        let price = match match_bar(
            long,
            o.limit,
            stop,
            bar.open,
            bar.high,
            bar.low,
            market_price,
        ) {
            Matched::Waits => {
                self.unfilled(cx, i);
                return false;
            }
            Matched::Triggered => {
                self.transition(cx, i, OrderState::Triggered);
                self.unfilled(cx, i);
                return false;
            }
            Matched::Fills { price, triggered } => {
                if triggered {
                    self.transition(cx, i, OrderState::Triggered);
                }
                price
            }
        };
        let market = o.limit.is_none() && stop.is_none();
        let (pos, ts) = if market && on_close {
            (prev.pos, prev.ts)
        } else {
            (bar.pos, bar.ts)
        };
        if let Some(seq) = o.trade {
            self.fill_for_trade(cx, i, seq, price, pos, ts);
            return false;
        }
        self.fill_entry(cx, i, price, pos, ts, bar, stop, market)
    }

    /// An order that could not fill on this bar: IOC and FOK end here.
    fn unfilled(&mut self, cx: &mut Context<'_, HostOutput>, i: usize) {
        let o = self.book.orders[i];
        if matches!(o.tif, TimeInForce::Ioc | TimeInForce::Fok) {
            self.end(cx, i, OrderState::Cancelled, Some(RejectReason::Unfilled));
        } else if o.state == OrderState::Submitted {
            self.transition(cx, i, OrderState::Accepted);
        }
    }

    /// Mark order `i` filled with `units` at `avg` (and remove it), before the book moves.
    fn order_filled(&mut self, cx: &mut Context<'_, HostOutput>, i: usize, units: f64, avg: f64) {
        {
            let o = &mut self.book.orders[i];
            o.filled = units;
            o.avg_price = avg;
            o.units = 0.0;
        }
        if self.book.orders[i].state == OrderState::Submitted {
            self.transition(cx, i, OrderState::Accepted);
        }
        self.transition(cx, i, OrderState::Filled);
        self.remove_order(i);
    }

    /// A bracket leg or close order: it closes (part of) its trade.
    fn fill_for_trade(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        i: usize,
        seq: TradeSeq,
        price: f64,
        pos: u64,
        ts: i64,
    ) {
        let o = self.book.orders[i];
        let Some(ti) = self.book.trade_index(seq) else {
            // A second close of a trade already closed: backtesting.py drops it.
            return self.end(
                cx,
                i,
                OrderState::Cancelled,
                Some(RejectReason::TradeClosed),
            );
        };
        let t = self.book.trades[ti];
        let size = o.units.abs().min(t.size.abs()).copysign(o.units);
        self.order_filled(cx, i, size, price);
        let commission = self.reduce_trade(cx, ti, price, size, pos, ts, o.id, o.role);
        self.book_fill(
            cx,
            &Fill {
                order: o.id,
                symbol: o.symbol,
                units: size,
                price,
                commission,
                pos,
                ts_ns: ts,
            },
        );
    }

    /// A stand-alone order: sized (from the margin when relative), netted FIFO against the
    /// symbol's opposite trades, then what is left opens a trade, with its bracket. Whether
    /// the pass must run again for the new legs.
    #[allow(clippy::too_many_arguments)]
    fn fill_entry(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        i: usize,
        price: f64,
        pos: u64,
        ts: i64,
        bar: &Bar,
        stop: Option<f64>,
        market: bool,
    ) -> bool {
        let o = self.book.orders[i];
        let sign = o.side.sign();
        let adjusted = self.config.paper.adjusted(sign, price);
        let leverage = self.config.paper.leverage();
        let (units, plus_commission) = self.entry_units(&o, price, adjusted);
        if units == 0.0 {
            // Not even one unit (backtesting.py drops it with a warning).
            self.reject(cx, i, RejectReason::ZeroSize);
            return false;
        }
        // Net against opposite trades first, at the unadjusted price.
        let (need, netted, netted_commission) = self.net_fifo(
            cx,
            o.symbol,
            sign * units,
            price,
            pos,
            ts,
            o.id,
            Role::Entry,
        );
        // Closing trades cancelled their bracket legs: the order's place in the table moved.
        let i = self
            .order_index(o.id)
            .expect("the order being filled is in the table");
        let paid = need.abs() * plus_commission <= self.book.margin_available(leverage) * leverage;
        let opens = need != 0.0 && paid && self.room_for_a_trade(&o);
        if !self.end_entry(cx, i, need, netted, opens, price, adjusted) {
            return false;
        }
        let fill = |units, price, commission| Fill {
            order: o.id,
            symbol: o.symbol,
            units,
            price,
            commission,
            pos,
            ts_ns: ts,
        };
        if netted != 0.0 {
            self.book_fill(cx, &fill(netted, price, netted_commission));
        }
        if !opens {
            return false;
        }
        let commission = self.config.paper.commission(need, adjusted);
        self.book.cash -= commission;
        let seq = self.open_trade(o.symbol, need, adjusted, pos, ts);
        self.book_fill(cx, &fill(need, adjusted, commission));
        self.add_bracket(cx, seq, &o);
        self.again(&o, bar, stop, market)
    }

    /// Whether the table of open trades has room for one more (it never loses one silently).
    fn room_for_a_trade(&self, o: &Order) -> bool {
        let room = self.book.trades.len() < self.book.trades.capacity();
        if !room {
            tracing::error!(
                "max_open_trades = {} reached: order {} of symbol {} was cancelled",
                self.config.max_open_trades,
                o.id,
                o.symbol
            );
        }
        room
    }

    /// The entry's fate once netted: filled (`netted` at `price` and, if it `opens`, `need`
    /// at `adjusted`), cancelled after its netted part, or rejected for want of margin.
    /// Whether anything filled.
    #[allow(clippy::too_many_arguments)]
    fn end_entry(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        i: usize,
        need: f64,
        netted: f64,
        opens: bool,
        price: f64,
        adjusted: f64,
    ) -> bool {
        let filled = netted + if opens { need } else { 0.0 };
        if filled == 0.0 {
            self.reject(cx, i, RejectReason::NoMargin);
            return false;
        }
        if need == 0.0 || opens {
            let avg = match (opens, netted != 0.0) {
                (true, true) => (netted * price + need * adjusted) / filled,
                (true, false) => adjusted,
                (false, _) => price,
            };
            self.order_filled(cx, i, filled, avg);
        } else {
            // Part netted, the rest not paid for: backtesting.py drops the order there.
            {
                let m = &mut self.book.orders[i];
                m.filled = netted;
                m.avg_price = price;
                m.units = need;
            }
            self.transition(cx, i, OrderState::PartiallyFilled);
            self.end(cx, i, OrderState::Cancelled, Some(RejectReason::NoMargin));
        }
        true
    }

    /// backtesting.py's size of an entry at `price` (`adjusted` for the spread): the units, and
    /// the price plus the commission per unit that the margin must pay for.
    fn entry_units(&self, o: &Order, price: f64, adjusted: f64) -> (f64, f64) {
        let paper = &self.config.paper;
        let leverage = paper.leverage();
        let position = self.book.position(o.symbol);
        let (size, relative) = match o.size {
            Size::AllEquity => (FULL_EQUITY, true),
            Size::Fraction(f) => (f, true),
            Size::Units(u) => ((u.abs() / self.config.lot).floor() * self.config.lot, false),
            Size::Quote(q) => (self.lots(q.abs(), price), false),
            Size::Position => (position.abs(), false),
        };
        let plus_commission = adjusted + paper.commission(size, price) / size;
        let units = if size == 0.0 {
            0.0
        } else if relative {
            let margin = self.book.margin_available(leverage);
            self.lots(margin * leverage * size, plus_commission)
        } else {
            size
        };
        if !o.reduce_only {
            (units, plus_commission)
        } else if position != 0.0 && position.signum() != o.side.sign() {
            (units.min(position.abs()), plus_commission)
        } else {
            (0.0, plus_commission)
        }
    }

    /// Take up to `units` (signed) off `symbol`'s opposite trades, oldest first, at `price`:
    /// the units left (as backtesting.py counts them down), the units netted and their exit
    /// commission.
    #[allow(clippy::too_many_arguments)]
    fn net_fifo(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        symbol: u32,
        units: f64,
        price: f64,
        pos: u64,
        ts: i64,
        order: OrderId,
        role: Role,
    ) -> (f64, f64, f64) {
        let (mut need, mut netted, mut commission) = (units, 0.0, 0.0);
        let mut k = 0;
        while need != 0.0 && k < self.book.trades.len() {
            let t = self.book.trades[k];
            if t.symbol != symbol || t.size.signum() == need.signum() {
                k += 1;
                continue;
            }
            let part = if need.abs() >= t.size.abs() {
                -t.size
            } else {
                need
            };
            commission += self.reduce_trade(cx, k, price, part, pos, ts, order, role);
            netted += part;
            need -= part;
            if self.book.trades.get(k).is_some_and(|x| x.seq == t.seq) {
                k += 1;
            }
        }
        (need, netted, commission)
    }

    /// A new trade of `size` units of `symbol` at `price`; its number.
    fn open_trade(&mut self, symbol: u32, size: f64, price: f64, pos: u64, ts: i64) -> TradeSeq {
        let seq = self.book.next_trade;
        self.book.next_trade += 1;
        self.book.trades.push(OpenTrade {
            seq,
            symbol,
            size,
            entry_price: price,
            entry_bar: pos,
            entry_ts_ns: ts,
            sl_order: None,
            tp_order: None,
        });
        self.book.recompute(symbol);
        seq
    }

    /// The bracket of entry `o` on its new trade: the take-profit joins the back of the queue,
    /// the stop-loss its front (so a stop-loss is looked at before any take-profit: the
    /// pessimistic choice).
    fn add_bracket(&mut self, cx: &mut Context<'_, HostOutput>, seq: TradeSeq, o: &Order) {
        if let Some(tp) = o.tp {
            self.add_leg(cx, seq, Role::TakeProfit, tp);
        }
        if let Some(sl) = o.sl {
            self.add_leg(cx, seq, Role::StopLoss, sl);
        }
    }

    /// Whether the legs entry `o` just added may fill on this same bar (backtesting.py's
    /// reprocessing: a market entry's, or a stop entry's whose take-profit is unambiguous);
    /// another that could have is counted as deferred.
    fn again(&mut self, o: &Order, bar: &Bar, stop: Option<f64>, market: bool) -> bool {
        if o.sl.is_none() && o.tp.is_none() {
            return false;
        }
        if market {
            return true;
        }
        let long = o.side == Side::Buy;
        if let (Some(_), None, Some(tp)) = (stop, o.limit, o.tp) {
            // A stop entry and its take-profit go the same way: not ambiguous.
            if (long && tp <= bar.high && o.sl.unwrap_or(f64::NEG_INFINITY) < bar.low)
                || (!long && tp >= bar.low && o.sl.unwrap_or(f64::INFINITY) > bar.high)
            {
                return true;
            }
        }
        let within = |p: Option<f64>| {
            let p = p.unwrap_or(f64::NEG_INFINITY);
            bar.low <= p && p <= bar.high
        };
        if within(o.sl) || within(o.tp) {
            self.stats.legs_deferred += 1;
        }
        false
    }

    /// Add a bracket leg to trade `seq`: a stop-loss (a stop, queued first) or a take-profit
    /// (a limit, queued last), for the whole trade.
    fn add_leg(&mut self, cx: &mut Context<'_, HostOutput>, seq: TradeSeq, role: Role, price: f64) {
        let Some(ti) = self.book.trade_index(seq) else {
            return;
        };
        let t = self.book.trades[ti];
        let id = self.next_id;
        self.next_id += 1;
        let side = if t.size > 0.0 { Side::Sell } else { Side::Buy };
        let (limit, stop) = match role {
            Role::StopLoss => (None, Some(price)),
            _ => (Some(price), None),
        };
        if self.book.orders.len() == self.book.orders.capacity() {
            let req = OrderRequest {
                limit,
                stop,
                ..OrderRequest::new(t.symbol, side, Size::Position)
            };
            return self.deny(cx, id, &req, DenyReason::TooManyOrders);
        }
        let order = Order {
            trade: Some(seq),
            limit,
            stop,
            reduce_only: true,
            units: -t.size,
            ..Order::new(id, t.symbol, side, Size::Position, role, cx.now())
        };
        let at = if role == Role::StopLoss {
            self.book.trades[ti].sl_order = Some(id);
            0
        } else {
            self.book.trades[ti].tp_order = Some(id);
            self.book.orders.len()
        };
        self.queue_order(cx, at, order);
    }

    /// Cancel a bracket leg whose trade closed: at once on paper, through the venue there
    /// (pending until it confirms).
    fn cancel_leg(&mut self, cx: &mut Context<'_, HostOutput>, li: usize) {
        if self.paper() {
            return self.end(
                cx,
                li,
                OrderState::Cancelled,
                Some(RejectReason::TradeClosed),
            );
        }
        let leg = self.book.orders[li];
        if leg.state.is_working() {
            self.transition(cx, li, OrderState::PendingCancel);
            self.send_cancel(cx, leg.id);
        }
    }

    /// backtesting.py's `_reduce_trade`: take `size` (opposite in sign) off trade `ti` at
    /// `price`, closing it when nothing is left. The commission charged.
    #[allow(clippy::too_many_arguments)]
    fn reduce_trade(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        ti: usize,
        price: f64,
        size: f64,
        pos: u64,
        ts: i64,
        order: OrderId,
        role: Role,
    ) -> f64 {
        let t = self.book.trades[ti];
        assert!(t.size * size < 0.0 && t.size.abs() >= size.abs());
        let left = t.size + size;
        if left == 0.0 {
            self.book.trades.remove(ti);
            // The bracket goes with the trade (but for the leg that is closing it).
            for leg in [t.sl_order, t.tp_order].into_iter().flatten() {
                if leg == order {
                    continue;
                }
                if let Some(li) = self.order_index(leg) {
                    self.cancel_leg(cx, li);
                }
            }
        } else {
            self.book.trades[ti].size = left;
            for leg in [t.sl_order, t.tp_order].into_iter().flatten() {
                if let Some(li) = self.order_index(leg) {
                    self.book.orders[li].units = -left;
                }
            }
        }
        let closed = if left == 0.0 { t.size } else { -size };
        let commission = self.record_close(cx, &t, closed, price, pos, ts, order, role);
        self.book.recompute(t.symbol);
        commission
    }

    /// backtesting.py's `_close_trade` of `closed` units of `t`: cash, commission, the
    /// trade list. The exit's commission.
    #[allow(clippy::too_many_arguments)]
    fn record_close(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        t: &OpenTrade,
        closed: f64,
        price: f64,
        pos: u64,
        ts: i64,
        order: OrderId,
        role: Role,
    ) -> f64 {
        let paper = &self.config.paper;
        let (exit_commission, entry_commission) = if self.paper() {
            (
                paper.commission(closed, price),
                paper.commission(closed, t.entry_price),
            )
        } else {
            (0.0, 0.0)
        };
        let gross = closed * (price - t.entry_price);
        self.book.cash += gross - exit_commission;
        let commission = exit_commission + entry_commission;
        self.stats.trades += 1;
        cx.emit(HostOutput::Trade(ClosedTrade {
            symbol: t.symbol,
            size: closed,
            entry_bar: t.entry_bar,
            exit_bar: pos,
            entry_ts_ns: t.entry_ts_ns,
            exit_ts_ns: ts,
            entry_price: t.entry_price,
            exit_price: price,
            pnl: gross - commission,
            commission,
            exit_order: order,
            exit_role: role,
        }));
        exit_commission
    }

    /// Book a fill (the paper broker's, or a venue's that was checked): its output, and the
    /// strategy's `on_fill` to come. The trades and cash have moved already.
    fn book_fill(&mut self, cx: &mut Context<'_, HostOutput>, fill: &Fill) {
        cx.emit(HostOutput::Fill(*fill));
        self.stats.fills += 1;
        if self.fills.len() < self.fills.capacity() {
            self.fills.push(*fill);
        } else {
            self.stats.updates_dropped += 1;
        }
    }

    /// A venue's fill moves the book: netted FIFO against the symbol's opposite trades, the
    /// rest opens a trade (no commission: the venue's is its own).
    fn apply_venue_fill(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        fill: &Fill,
        target: Option<TradeSeq>,
        role: Role,
    ) -> Option<TradeSeq> {
        let mut rest = fill.units;
        // A leg or close order takes off its own trade first.
        if let Some(ti) = target.and_then(|seq| self.book.trade_index(seq)) {
            let t = self.book.trades[ti];
            if t.size.signum() != rest.signum() {
                let part = rest.abs().min(t.size.abs()).copysign(rest);
                self.reduce_trade(
                    cx, ti, fill.price, part, fill.pos, fill.ts_ns, fill.order, role,
                );
                rest -= part;
            }
        }
        let (rest, _, _) = self.net_fifo(
            cx,
            fill.symbol,
            rest,
            fill.price,
            fill.pos,
            fill.ts_ns,
            fill.order,
            role,
        );
        if rest == 0.0 {
            return None;
        }
        if self.book.trades.len() < self.book.trades.capacity() {
            return Some(self.open_trade(fill.symbol, rest, fill.price, fill.pos, fill.ts_ns));
        }
        // Never lose a trade silently: fold it into the oldest trade of the symbol.
        tracing::error!(
            "max_open_trades = {} reached: a fill of symbol {} was merged",
            self.config.max_open_trades,
            fill.symbol
        );
        if let Some(t) = self
            .book
            .trades
            .iter_mut()
            .find(|t| t.symbol == fill.symbol)
        {
            let size = t.size + rest;
            t.entry_price = (t.size * t.entry_price + rest * fill.price) / size;
            t.size = size;
        }
        self.book.recompute(fill.symbol);
        None
    }

    fn mark(&mut self) {
        let equity = self.book.equity();
        let s = &mut self.stats;
        s.equity = equity;
        if equity > s.peak {
            s.peak = equity;
        }
        let dd = 1.0 - equity / s.peak;
        if dd > s.max_drawdown {
            s.max_drawdown = dd;
        }
    }

    /// backtesting.py's end of the money: equity at or below zero closes every trade at its
    /// last close, leaves no cash, and trading stops.
    fn out_of_money(&mut self, cx: &mut Context<'_, HostOutput>) {
        tracing::warn!(
            "the paper account's equity is {} <= 0: every trade is closed and trading stops",
            self.book.equity()
        );
        while let Some(t) = self.book.trades.first().copied() {
            let bar = self.last_bar[t.symbol as usize];
            let price = self.book.last[t.symbol as usize];
            self.reduce_trade(cx, 0, price, -t.size, bar.pos, bar.ts, 0, Role::Close);
        }
        while !self.book.orders.is_empty() {
            self.end(cx, 0, OrderState::Cancelled, None);
        }
        self.book.cash = 0.0;
        self.stopping = true;
        self.mark();
        if self.config.stop_when_data_ends {
            cx.stop();
        }
    }

    /// `finalize_trades` at the end of the data: a close order for every open trade (oldest
    /// first, ahead of the rest), then the paper broker once more on each symbol's last bar.
    fn finalize(&mut self, cx: &mut Context<'_, HostOutput>) {
        for k in (0..self.book.trades.len()).rev() {
            let t = self.book.trades[k];
            self.close_trade_order(cx, &t, 0);
        }
        for s in 0..self.config.symbols {
            let bar = self.last_bar[s as usize];
            if !bar.close.is_nan() && self.book.orders.iter().any(|o| o.symbol == s) {
                self.process_orders(cx, s, &bar);
            }
        }
        self.mark();
        self.stopping = true;
        self.settle(cx);
    }

    fn on_candle(&mut self, cx: &mut Context<'_, HostOutput>, pos: u64, candle: &Candle) {
        self.stats.candles += 1;
        let s = candle.symbol as usize;
        if candle.symbol >= self.config.symbols || !candle.close.is_finite() {
            self.stats.ignored += 1;
            return;
        }
        // Margin and marks use this bar's close (backtesting.py's broker sees `Close[i]`).
        self.book.last[s] = candle.close;
        self.prev_bar[s] = self.last_bar[s];
        self.last_bar[s] = Bar::of(pos, candle);
        if self.paper() {
            let bar = self.last_bar[s];
            self.process_orders(cx, candle.symbol, &bar);
        }
        self.mark();
        if self.paper() && self.stats.equity <= 0.0 && !self.stopping {
            self.out_of_money(cx);
        }
        self.settle(cx);
        if (self.stopping && self.paper() && self.stats.equity <= 0.0) || !self.strategy_started() {
            // Before the strategy's start (the books are being reconciled) a candle only
            // marks the book.
            return;
        }
        self.call(cx, |st, scx| st.on_candle(scx, pos, candle));
        self.settle(cx);
    }
    /// An order's fate from the venue adapter.
    fn on_adapter(&mut self, cx: &mut Context<'_, HostOutput>, event: &AdapterEvent) {
        if self.config.adapter != Some(event.adapter()) {
            // Only fills can be about orders; from another adapter, none is this host's.
            if let AdapterEvent::Fill {
                adapter,
                order,
                qty,
                price,
                ..
            } = *event
            {
                self.fill_fault(
                    cx,
                    FillFaultReport {
                        adapter,
                        order,
                        fault: FillFault::UnknownOrder,
                        qty,
                        price,
                        remaining: f64::NAN,
                    },
                );
            }
            return;
        }
        if self.on_reconcile_event(cx, event) {
            return;
        }
        match *event {
            AdapterEvent::Ready { capabilities, .. } => self.on_venue_ready(cx, capabilities),
            AdapterEvent::Down { .. } => self.on_venue_down(),
            AdapterEvent::Done {
                request,
                kind: RequestKind::PlaceOrder,
                ..
            } => {
                if let Some(i) = self.order_index(request) {
                    if self.book.orders[i].state == OrderState::Submitted {
                        self.transition(cx, i, OrderState::Accepted);
                    }
                }
            }
            AdapterEvent::Failed {
                request,
                kind: RequestKind::PlaceOrder,
                reason,
                ..
            } => self.place_failed(cx, request, reason),
            AdapterEvent::OrderUpdate { order, status, .. } => {
                let Some(i) = self.order_index(order) else {
                    return;
                };
                let next = match status {
                    OrderStatus::Accepted => OrderState::Accepted,
                    OrderStatus::Triggered => OrderState::Triggered,
                    OrderStatus::Cancelled => OrderState::Cancelled,
                    OrderStatus::Rejected => OrderState::Rejected,
                    OrderStatus::Expired => OrderState::Expired,
                    // Fills move the order forward themselves.
                    OrderStatus::PartiallyFilled | OrderStatus::Filled => return,
                };
                let state = self.book.orders[i].state;
                // A venue that rejects an order it had accepted has ended it: a cancel.
                let next = match next {
                    OrderState::Rejected if !state.can_become(next) => OrderState::Cancelled,
                    next => next,
                };
                if state == next || !state.can_become(next) {
                    return;
                }
                match next {
                    OrderState::Rejected => self.reject(cx, i, RejectReason::VenueStatus),
                    _ if next.is_final() => self.end(cx, i, next, None),
                    _ => self.transition(cx, i, next),
                }
            }
            AdapterEvent::Fill {
                adapter,
                order,
                qty,
                price,
                fee,
                ts_ns,
                trade,
            } => self.on_venue_fill(cx, adapter, order, (qty, price, fee), ts_ns, trade),
            _ => {}
        }
    }

    /// A fill the venue adapter reported: booked, if it is believed.
    fn on_venue_fill(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        adapter: AdapterId,
        order: OrderId,
        (qty, price, fee): (f64, f64, f64),
        ts_ns: i64,
        trade: Option<TradeId>,
    ) {
        if let Some(i) = self.order_index(order) {
            if order != 0 && self.book.orders[i].replacing == order {
                // A fill of a replace's new order: the venue took the replace.
                let id = self.book.orders[i].id;
                self.took_replace(cx, i, None);
                self.send_waiting_cancel(cx, id);
            }
        }
        let (index, key) = match self.check_fill(order, qty, price, ts_ns, trade) {
            Ok(found) => found,
            Err(fault) => {
                let remaining = match self.order_index(order) {
                    Some(i) => self.book.orders[i].units.abs(),
                    None => f64::NAN,
                };
                return self.fill_fault(
                    cx,
                    FillFaultReport {
                        adapter,
                        order,
                        fault,
                        qty,
                        price,
                        remaining,
                    },
                );
            }
        };
        self.remember_fill(key);
        let fee = if fee.is_finite() { fee } else { 0.0 };
        self.book_venue_fill(cx, index, (qty, price, fee), ts_ns);
    }

    /// A `place_order` of order `request` failed: rejected, unless its answer was lost (then
    /// it may be at the venue: `Unknown`) or the venue had already taken it.
    fn place_failed(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        request: RequestId,
        reason: FailReason,
    ) {
        let Some(i) = self.order_index(request) else {
            return;
        };
        let unanswered = matches!(reason, FailReason::Timeout | FailReason::AdapterRestarted);
        let o = self.book.orders[i];
        // Not accepted yet (a cancel may have followed it): the venue's answer is the word.
        let unplaced =
            o.filled == 0.0 && matches!(o.state, OrderState::Submitted | OrderState::PendingCancel);
        if o.state == OrderState::Unknown {
            // Already asked of the venue; its answer decides.
        } else if unplaced && unanswered {
            // It may have reached the venue: asked for, never placed again.
            self.make_unknown(cx, i, reason);
        } else if unplaced {
            // Refused: the venue never had it.
            self.reject(cx, i, RejectReason::of_failure(reason));
        } else {
            // It was accepted or filled in part already: the venue has it, whatever
            // became of the request (a late answer timed out, the adapter restarted).
            tracing::warn!(
                "order {request}: its place_order failed ({reason}) after the venue had taken it ({:?}); it stays open",
                self.book.orders[i].state
            );
        }
    }

    /// Whether a fill the adapter reported can be believed: the order's index and the fill's
    /// key (to refuse it again later), or why not. Checks only; changes nothing.
    fn check_fill(
        &self,
        order: OrderId,
        qty: f64,
        price: f64,
        ts_ns: i64,
        trade: Option<TradeId>,
    ) -> Result<(usize, TradeId), FillFault> {
        if !(qty.is_finite() && qty > 0.0) {
            return Err(FillFault::BadQuantity);
        }
        if !(price.is_finite() && price > 0.0) {
            return Err(FillFault::BadPrice);
        }
        // The order and the venue's trade id (venues number trades per symbol, so the same
        // id may come back for another order), or where there is none, the fill's content.
        let mut content = [0u8; 33];
        content[1..9].copy_from_slice(&order.to_le_bytes());
        match trade {
            Some(t) => {
                content[0] = b't';
                content[9..17].copy_from_slice(&t.to_le_bytes());
            }
            None => {
                content[0] = b'c';
                content[9..17].copy_from_slice(&qty.to_bits().to_le_bytes());
                content[17..25].copy_from_slice(&price.to_bits().to_le_bytes());
                content[25..33].copy_from_slice(&ts_ns.to_le_bytes());
            }
        }
        let key = tickloop_ring::layout::fnv1a64(&content);
        if self.seen.contains(&key) {
            return Err(FillFault::Duplicate);
        }
        let index = self.order_index(order).ok_or(FillFault::UnknownOrder)?;
        let o = &self.book.orders[index];
        // `units` is what is left.
        if qty > o.units.abs() + self.residue(o) {
            return Err(FillFault::Overfill);
        }
        Ok((index, key))
    }

    /// The float residue partial fills of `o` may leave: 1e-9 of its size, and never as much
    /// as half a lot.
    fn residue(&self, o: &Order) -> f64 {
        (1e-9 * (o.units + o.filled).abs()).min(0.5 * self.config.lot)
    }

    fn remember_fill(&mut self, key: TradeId) {
        if self.seen.len() < self.seen.capacity() {
            self.seen.push(key);
        } else {
            self.seen[self.seen_next] = key;
            self.seen_next = (self.seen_next + 1) % self.seen.len();
        }
    }

    /// A fill not believed: reported and counted, told to the strategy; the book stays.
    fn fill_fault(&mut self, cx: &mut Context<'_, HostOutput>, report: FillFaultReport) {
        self.stats.fill_faults += 1;
        cx.emit(HostOutput::FillFault(report));
        if self.faults.len() < self.faults.capacity() {
            self.faults.push(report);
        } else {
            self.stats.updates_dropped += 1;
        }
    }

    /// Book a checked venue fill of `qty` units of order `index` at `price`, the venue's
    /// `fee` (in quote currency) paid from cash.
    fn book_venue_fill(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        i: usize,
        (qty, price, fee): (f64, f64, f64),
        ts_ns: i64,
    ) {
        let o = self.book.orders[i];
        // The last fill of an order takes exactly what was left, so no residue stays open.
        let rest = o.units.abs();
        let done = qty >= rest - self.residue(&o);
        let units = o.side.sign() * if done { rest } else { qty };
        let filled = o.filled + units;
        let avg = if filled == 0.0 {
            0.0
        } else {
            (o.filled * o.avg_price + units * price) / filled
        };
        {
            let m = &mut self.book.orders[i];
            m.filled = filled;
            m.avg_price = avg;
            m.units -= units;
        }
        self.book.repend(o.symbol);
        let fill = Fill {
            order: o.id,
            symbol: o.symbol,
            units,
            price,
            commission: fee,
            pos: self.stats.candles,
            ts_ns,
        };
        self.book.cash -= fee;
        let opened = self.apply_venue_fill(cx, &fill, o.trade, o.role);
        self.book_fill(cx, &fill);
        if let Some(seq) = opened {
            if let Some(tp) = o.tp {
                self.add_leg(cx, seq, Role::TakeProfit, tp);
            }
            if let Some(sl) = o.sl {
                self.add_leg(cx, seq, Role::StopLoss, sl);
            }
        }
        // The table may have moved; the order is found again by id.
        let Some(i) = self.order_index(o.id) else {
            return;
        };
        if self.book.orders[i].state == OrderState::Submitted {
            self.transition(cx, i, OrderState::Accepted);
        }
        if done {
            self.transition(cx, i, OrderState::Filled);
            self.remove_order(i);
        } else if !matches!(
            self.book.orders[i].state,
            OrderState::PartiallyFilled | OrderState::PendingReplace
        ) {
            // (A replace in flight ends as partially filled when it is answered.)
            self.transition(cx, i, OrderState::PartiallyFilled);
        }
    }
}

impl<S: Strategy> StrategyHost<S> {
    /// The end of the run: positions left open are reported (never closed by shutdown).
    fn on_shutdown(&mut self, cx: &mut Context<'_, HostOutput>) {
        self.stopping = true;
        for i in 0..self.book.held.len() {
            let s = self.book.held[i];
            let size = self.book.position(s);
            let last = self.book.last[s as usize];
            cx.emit(HostOutput::OpenPosition {
                symbol: s,
                size,
                avg_entry: self.book.avg_entry(s),
                last_price: last,
                unrealized: last * size - self.book.pos_cost[s as usize],
            });
        }
    }
}

/// CPython's float `//` (`float_floor_div`), for backtesting.py's unit counts.
pub fn python_floor_div(a: f64, b: f64) -> f64 {
    let m = a % b;
    let mut d = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        d -= 1.0;
    }
    if d != 0.0 {
        let mut q = d.floor();
        if d - q > 0.5 {
            q += 1.0;
        }
        q
    } else {
        0.0f64.copysign(a / b)
    }
}

impl<S: Strategy> App for StrategyHost<S> {
    type Output = HostOutput;

    fn name(&self) -> &'static str {
        S::NAME
    }

    fn on_event(&mut self, event: &Event, cx: &mut Context<'_, HostOutput>) {
        match event.kind {
            EventKind::Started { wall_ns } => {
                self.clock_base = Some((event.at, wall_ns));
                if !self.await_start() {
                    self.call(cx, |st, scx| st.on_start(scx));
                }
                self.settle(cx);
            }
            EventKind::Candle { pos, candle, .. } => self.on_candle(cx, pos, &candle),
            EventKind::Timer { timer, .. } if timer == self.config.expiry_timer => {
                if self.paper() {
                    self.on_expiry_timer(cx);
                }
                self.settle(cx);
            }
            EventKind::Timer { timer, .. } => {
                if self.strategy_started() {
                    self.call(cx, |st, scx| st.on_timer(scx, timer));
                }
                self.settle(cx);
            }
            EventKind::Signal(SignalKind::Stop { .. }) => {
                // No new orders from here on; open ones are left alone unless configured.
                self.stopping = true;
                if self.config.cancel_on_shutdown {
                    while !self.book.orders.is_empty() {
                        self.end(cx, 0, OrderState::Cancelled, None);
                    }
                }
            }
            EventKind::SourceEnded { .. } => {
                if self.paper() && self.config.paper.finalize_trades && !self.stopping {
                    self.finalize(cx);
                }
                if self.config.stop_when_data_ends {
                    cx.stop();
                }
            }
            EventKind::Adapter(event) => {
                self.on_adapter(cx, &event);
                self.settle(cx);
            }
            EventKind::Shutdown => self.on_shutdown(cx),
            _ => {}
        }
        if !self.paper() {
            // Only requests go out: nothing for the strategy to hear.
            self.reconcile_if_due(cx);
        }
    }

    fn telemetry_of(&self, output: &HostOutput) -> Option<Telemetry> {
        output.telemetry()
    }

    fn reconfigure(&mut self, config: &[u8]) -> Result<(), String> {
        let setup: HostSetup<S::Config> = postcard::from_bytes(config)
            .map_err(|e| format!("the new {} config does not decode: {e}", S::NAME))?;
        setup.host.validate()?;
        setup.risk.validate()?;
        self.strategy.on_config(setup.strategy.clone())?;
        self.strategy_config = setup.strategy;
        // Sizes are fixed for the run; risk limits and the shutdown policy apply now.
        self.risk.reconfigure(setup.risk);
        self.config.cancel_on_shutdown = setup.host.cancel_on_shutdown;
        Ok(())
    }
}
