//! The strategy host: an [`App`] that runs one [`Strategy`] inside the loop. It owns the
//! book (cash, open trades, positions, open orders), runs every intent through [`Risk`],
//! performs every order transition (each one an [`HostOutput::Order`] output), and, in paper
//! mode, fills market orders itself at the open of the symbol's next candle, with
//! backtesting.py's semantics (docs/backtest-semantics.md).
//!
//! It never reads a clock (event times only), never does IO, never iterates a hash map and
//! never allocates per event: every table is sized from [`HostConfig`] at `new`.

use crate::orders::{
    ClosedTrade, DenyReason, Fill, FillFaultReport, Order, OrderId, OrderState, OrderUpdate,
    RejectReason, Side, Size,
};
use crate::risk::{Proposed, Risk, RiskConfig};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use tickloop_app::clock::Nanos;
use tickloop_app::telemetry::{Telemetry, Text};
use tickloop_app::venue::{
    AdapterEvent, AdapterRequest, FillFault, OrderStatus, Request, RequestKind, TradeId,
};
use tickloop_app::SignalKind;
use tickloop_app::{App, Context, Event, EventKind, TimerId};
use tickloop_ring::Candle;

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
    fn on_order_update(&mut self, _cx: &mut StrategyCx<'_, '_>, _update: &OrderUpdate) {}
    /// A fill the venue adapter reported was not believed (an overfill, a duplicate, a bad
    /// number, an unknown order): the book did not move.
    fn on_fill_fault(&mut self, _cx: &mut StrategyCx<'_, '_>, _fault: &FillFaultReport) {}
    /// New parameters while running; on `Err` nothing may have changed.
    fn on_config(&mut self, config: Self::Config) -> Result<(), String>;
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
        Ok(())
    }
}

/// What the host records in the journal and `reconfigure` takes: its own config, the risk
/// limits and the strategy's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSetup<C> {
    pub host: HostConfig,
    pub risk: RiskConfig,
    pub strategy: C,
}

/// What the host outputs (journaled; the embedding program's sink turns them into telemetry,
/// adapter requests, trade lists).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum HostOutput {
    /// An order changed state.
    Order(OrderUpdate),
    /// Risk refused an intent (the order id is spent, the order never existed at a venue).
    Denied {
        order: OrderId,
        symbol: u32,
        side: Side,
        reason: DenyReason,
    },
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
                    price: None,
                },
                OrderState::Accepted => Telemetry::OrderAccepted { order: u.order },
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
                // Fills have their own output; New and Denied are not venue states.
                _ => return None,
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
            _ => return None,
        })
    }
}

/// An open trade (backtesting.py's `Trade`): positions are made of these, FIFO.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Trade {
    symbol: u32,
    size: f64,
    entry_price: f64,
    entry_bar: u64,
    entry_ts_ns: i64,
}

#[derive(Debug, Clone, Copy)]
struct Intent {
    symbol: u32,
    side: Side,
    size: Size,
    closes: bool,
}

/// The host's books, read-only to the strategy through [`StrategyCx`].
pub struct Book {
    cash: f64,
    trades: Vec<Trade>,
    /// Per symbol: Σ size of open trades, Σ size × entry (in trade order), last close, and
    /// the signed units of orders not yet filled.
    pos_size: Vec<f64>,
    pos_cost: Vec<f64>,
    last: Vec<f64>,
    pending: Vec<f64>,
    /// Symbols with open trades, in the order they were opened.
    held: Vec<u32>,
    orders: Vec<Order>,
    next_id: OrderId,
}

impl Book {
    pub fn cash(&self) -> f64 {
        self.cash
    }

    /// The signed position of `symbol` in units (filled trades only).
    pub fn position(&self, symbol: u32) -> f64 {
        self.pos_size.get(symbol as usize).copied().unwrap_or(0.0)
    }

    /// Signed units of `symbol`'s orders not yet filled.
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
        for o in &self.orders {
            let s = o.symbol as usize;
            if self.pos_size[s] == 0.0
                && !o.closes
                && !self
                    .orders
                    .iter()
                    .take_while(|x| x.id != o.id)
                    .any(|x| x.symbol == o.symbol && !x.closes)
            {
                n += 1;
            }
        }
        n
    }

    pub fn open_orders(&self) -> &[Order] {
        &self.orders
    }

    /// Margin left for new exposure (leverage 1): equity less the open trades' value.
    fn margin_available(&self) -> f64 {
        let mut used = 0.0;
        for t in &self.trades {
            used += t.size.abs() * self.last[t.symbol as usize];
        }
        (self.equity() - used).max(0.0)
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
}

/// The strategy's side of an event: the time, the book, and intents to place.
pub struct StrategyCx<'a, 'b> {
    cx: &'a mut Context<'b, HostOutput>,
    book: &'a Book,
    intents: &'a mut Vec<Intent>,
    dropped: &'a mut u32,
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

    fn intent(&mut self, intent: Intent) {
        if self.intents.len() < self.intents.capacity() {
            self.intents.push(intent);
        } else {
            *self.dropped += 1;
        }
    }

    /// A market buy, filled at the next candle's open (paper) or sent to the venue.
    pub fn buy(&mut self, symbol: u32, size: Size) {
        self.intent(Intent {
            symbol,
            side: Side::Buy,
            size,
            closes: false,
        });
    }

    pub fn sell(&mut self, symbol: u32, size: Size) {
        self.intent(Intent {
            symbol,
            side: Side::Sell,
            size,
            closes: false,
        });
    }

    /// Close the symbol's whole position (nothing happens when it is flat). Queued ahead of
    /// the other orders, so `close` then `buy` reverses at one price.
    pub fn close(&mut self, symbol: u32) {
        self.intent(Intent {
            symbol,
            side: Side::Sell,
            size: Size::Position,
            closes: true,
        });
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
    pub rejected: u64,
    pub cancelled: u64,
    pub trades: u64,
    pub intents_dropped: u64,
    /// Fills or order updates not told to the strategy (more than the buffers hold, or
    /// still coming after the settle rounds).
    pub updates_dropped: u64,
    /// Equity at the last mark, its peak, and the largest drawdown from a peak (a fraction).
    pub equity: f64,
    pub peak: f64,
    pub max_drawdown: f64,
}

pub struct StrategyHost<S: Strategy> {
    config: HostConfig,
    strategy: S,
    strategy_config: S::Config,
    risk: Risk,
    book: Book,
    intents: Vec<Intent>,
    /// Fills and order updates the strategy has yet to hear about, and a second buffer of
    /// each to deliver from (so delivering allocates nothing).
    fills: Vec<Fill>,
    fills_out: Vec<Fill>,
    updates: Vec<OrderUpdate>,
    updates_out: Vec<OrderUpdate>,
    /// Fill faults the strategy has yet to hear about.
    faults: Vec<FillFaultReport>,
    faults_out: Vec<FillFaultReport>,
    /// The keys of the last fills booked (a ring: `seen_next` is the oldest once full), to
    /// refuse a duplicate: the venue's trade id, or a digest of order, quantity, price and
    /// time where the venue gives none.
    seen: Vec<TradeId>,
    seen_next: usize,
    stopping: bool,
    stats: HostStats,
}

impl<S: Strategy> StrategyHost<S> {
    pub fn new(setup: HostSetup<S::Config>) -> Result<Self, String> {
        let HostSetup {
            host,
            risk,
            strategy,
        } = setup;
        host.validate()?;
        risk.validate()?;
        let n = host.symbols as usize;
        let book = Book {
            cash: host.cash,
            trades: Vec::with_capacity(host.max_open_trades as usize),
            pos_size: vec![0.0; n],
            pos_cost: vec![0.0; n],
            last: vec![f64::NAN; n],
            pending: vec![0.0; n],
            held: Vec::with_capacity(host.max_open_trades as usize),
            orders: Vec::with_capacity(host.max_open_orders as usize),
            next_id: 1,
        };
        Ok(StrategyHost {
            strategy: S::new(strategy.clone(), host.symbols)?,
            strategy_config: strategy,
            risk: Risk::new(risk),
            intents: Vec::with_capacity(host.intents_per_event as usize),
            fills: Vec::with_capacity(host.max_open_orders as usize),
            fills_out: Vec::with_capacity(host.max_open_orders as usize),
            updates: Vec::with_capacity(UPDATES_PER_ORDER * host.max_open_orders as usize),
            updates_out: Vec::with_capacity(UPDATES_PER_ORDER * host.max_open_orders as usize),
            faults: Vec::with_capacity(FAULTS_PER_EVENT),
            faults_out: Vec::with_capacity(FAULTS_PER_EVENT),
            seen: Vec::with_capacity(
                (FILLS_REMEMBERED_PER_ORDER * host.max_open_orders as usize)
                    .min(FILLS_REMEMBERED_MAX),
            ),
            seen_next: 0,
            stopping: false,
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
            };
            f(&mut self.strategy, &mut scx);
        }
        if dropped > 0 {
            self.stats.intents_dropped += dropped as u64;
            cx.emit(HostOutput::IntentsDropped { dropped });
        }
        for i in 0..self.intents.len() {
            let intent = self.intents[i];
            self.place(cx, intent);
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
            if self.fills.is_empty() && self.updates.is_empty() && self.faults.is_empty() {
                return;
            }
            std::mem::swap(&mut self.fills, &mut self.fills_out);
            std::mem::swap(&mut self.updates, &mut self.updates_out);
            std::mem::swap(&mut self.faults, &mut self.faults_out);
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
            self.faults_out.clear();
            self.fills_out.clear();
            self.updates_out.clear();
        }
        self.stats.updates_dropped +=
            (self.fills.len() + self.updates.len() + self.faults.len()) as u64;
        self.fills.clear();
        self.updates.clear();
        self.faults.clear();
    }

    fn deny(&mut self, cx: &mut Context<'_, HostOutput>, intent: Intent, reason: DenyReason) {
        let order = self.book.next_id;
        self.book.next_id += 1;
        self.stats.denied += 1;
        cx.emit(HostOutput::Denied {
            order,
            symbol: intent.symbol,
            side: intent.side,
            reason,
        });
        self.tell(OrderUpdate {
            order,
            symbol: intent.symbol,
            side: intent.side,
            state: OrderState::Denied,
            units: 0.0,
            filled: 0.0,
            avg_price: 0.0,
            reason: None,
        });
    }

    /// Risk, then an order in the table (Submitted to the paper broker).
    fn place(&mut self, cx: &mut Context<'_, HostOutput>, mut intent: Intent) {
        if intent.symbol >= self.config.symbols {
            return self.deny(cx, intent, DenyReason::UnknownSymbol);
        }
        if self.stopping {
            return self.deny(cx, intent, DenyReason::ShuttingDown);
        }
        let s = intent.symbol;
        let position = self.book.position(s);
        let committed = position + self.book.pending(s);
        let price = self.book.last_price(s);
        if intent.closes {
            if position == 0.0 {
                return; // backtesting.py: closing a flat position does nothing
            }
            intent.side = if position > 0.0 {
                Side::Sell
            } else {
                Side::Buy
            };
        }
        let units = match (intent.size, price) {
            (Size::Units(u), _) => u.abs(),
            (Size::Position, _) => position.abs(),
            (Size::Quote(q), Some(p)) => q.abs() / p,
            (Size::AllEquity, Some(p)) => self.book.equity() / p,
            (_, None) => 0.0,
        };
        let signed = intent.side.sign() * units;
        let reduces = intent.closes
            || (committed != 0.0
                && committed.signum() != intent.side.sign()
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
            return self.deny(cx, intent, reason);
        }
        if self.book.orders.len() == self.book.orders.capacity() {
            return self.deny(cx, intent, DenyReason::TooManyOrders);
        }
        let order = Order {
            id: self.book.next_id,
            symbol: s,
            side: intent.side,
            size: intent.size,
            closes: intent.closes,
            state: OrderState::New,
            units: signed,
            filled: 0.0,
            avg_price: 0.0,
            created_at: cx.now(),
        };
        self.book.next_id += 1;
        self.book.pending[s as usize] += signed;
        self.stats.orders += 1;
        // Closes go to the front of the queue (backtesting.py inserts each at index 0).
        let index = if intent.closes {
            self.book.orders.insert(0, order);
            0
        } else {
            self.book.orders.push(order);
            self.book.orders.len() - 1
        };
        let Some(adapter) = self.config.adapter else {
            self.transition(cx, index, OrderState::Submitted);
            return;
        };
        // A venue needs the units now: resolved at the last close, whole lots; the
        // submission shows exactly what is sent.
        let qty = match (intent.size, price) {
            (Size::Units(u), _) => (u.abs() / self.config.lot).floor() * self.config.lot,
            (Size::Position, _) => position.abs(),
            (_, Some(p)) => self.lots(units * p, p),
            (_, None) => 0.0,
        };
        {
            let o = &mut self.book.orders[index];
            self.book.pending[s as usize] += intent.side.sign() * qty - o.units;
            o.units = intent.side.sign() * qty;
        }
        self.transition(cx, index, OrderState::Submitted);
        if qty == 0.0 {
            return self.reject(cx, index, RejectReason::ZeroSize);
        }
        {
            let o = &self.book.orders[index];
            cx.emit(HostOutput::Send(AdapterRequest {
                adapter,
                id: o.id,
                request: Request::PlaceOrder {
                    symbol: s,
                    side: intent.side,
                    qty,
                    limit: None,
                },
            }));
        }
    }

    fn order_index(&self, id: OrderId) -> Option<usize> {
        self.book.orders.iter().position(|o| o.id == id)
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
        match *event {
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
            } => {
                let Some(i) = self.order_index(request) else {
                    return;
                };
                if self.book.orders[i].state == OrderState::Submitted {
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
            AdapterEvent::OrderUpdate { order, status, .. } => {
                let Some(i) = self.order_index(order) else {
                    return;
                };
                let next = match status {
                    OrderStatus::Accepted => OrderState::Accepted,
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
                    _ if next.is_final() => {
                        self.stats.cancelled += 1;
                        self.transition(cx, i, next);
                        self.remove_order(i);
                    }
                    _ => self.transition(cx, i, next),
                }
            }
            AdapterEvent::Fill {
                adapter,
                order,
                qty,
                price,
                ts_ns,
                trade,
                ..
            } => {
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
                self.book_venue_fill(cx, index, qty, price, ts_ns);
            }
            _ => {}
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

    /// Book a checked venue fill of `qty` units of order `index` at `price`.
    fn book_venue_fill(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        i: usize,
        qty: f64,
        price: f64,
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
        }
        let fill = Fill {
            order: o.id,
            symbol: o.symbol,
            units,
            price,
            pos: self.stats.candles,
            ts_ns,
        };
        self.book_fill(cx, &fill);
        self.book.pending[o.symbol as usize] -= units;
        self.book.orders[i].units -= units;
        if o.state == OrderState::Submitted {
            self.transition(cx, i, OrderState::Accepted);
        }
        if done {
            self.transition(cx, i, OrderState::Filled);
            self.remove_order(i);
        } else if self.book.orders[i].state != OrderState::PartiallyFilled {
            self.transition(cx, i, OrderState::PartiallyFilled);
        }
    }

    fn remove_order(&mut self, index: usize) -> Order {
        let order = self.book.orders.remove(index);
        self.book.pending[order.symbol as usize] -= order.units;
        if self.book.orders.iter().all(|o| o.symbol != order.symbol) {
            self.book.pending[order.symbol as usize] = 0.0; // no float residue
        }
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

    /// The paper broker: fill `symbol`'s queued orders at `candle.open`, in queue order.
    fn fill_paper(&mut self, cx: &mut Context<'_, HostOutput>, pos: u64, candle: &Candle) {
        let price = candle.open;
        let mut i = 0;
        while i < self.book.orders.len() {
            let order = self.book.orders[i];
            if order.symbol != candle.symbol || order.state != OrderState::Submitted {
                i += 1;
                continue;
            }
            let position = self.book.position(order.symbol);
            let margin = self.book.margin_available();
            let units = match order.size {
                _ if order.closes => -position,
                Size::Position => -position,
                Size::Units(u) => {
                    order.side.sign() * (u.abs() / self.config.lot).floor() * self.config.lot
                }
                Size::Quote(q) => order.side.sign() * self.lots(q.abs(), price),
                Size::AllEquity => order.side.sign() * self.lots(margin * FULL_EQUITY, price),
            };
            // The part that adds exposure must be paid for from the margin left.
            let reducing = if position != 0.0 && position.signum() != units.signum() {
                units.abs().min(position.abs())
            } else {
                0.0
            };
            let adding = units.abs() - reducing;
            let next = if units == 0.0 {
                if order.closes {
                    OrderState::Cancelled
                } else {
                    OrderState::Rejected
                }
            } else if adding * price > margin {
                OrderState::Rejected
            } else {
                OrderState::Filled
            };
            if next == OrderState::Rejected {
                let reason = if units == 0.0 {
                    RejectReason::ZeroSize
                } else {
                    RejectReason::NoMargin
                };
                self.reject(cx, i, reason);
                continue;
            }
            // Refused or cancelled straight from Submitted: only a fill is accepted first.
            if next == OrderState::Cancelled {
                self.stats.cancelled += 1;
                self.transition(cx, i, next);
                self.remove_order(i);
                continue;
            }
            self.transition(cx, i, OrderState::Accepted);
            {
                let o = &mut self.book.orders[i];
                o.filled = units;
                o.avg_price = price;
            }
            self.book.pending[order.symbol as usize] -= order.units;
            self.book.orders[i].units = units;
            self.book.pending[order.symbol as usize] += units;
            self.transition(cx, i, OrderState::Filled);
            self.remove_order(i);
            let fill = Fill {
                order: order.id,
                symbol: order.symbol,
                units,
                price,
                pos,
                ts_ns: candle.ts_ns,
            };
            self.book_fill(cx, &fill);
        }
    }

    /// Book a fill (the paper broker's, or a venue's that was checked): the trades and cash,
    /// its output, and the strategy's `on_fill` to come.
    fn book_fill(&mut self, cx: &mut Context<'_, HostOutput>, fill: &Fill) {
        self.apply_fill(cx, fill);
        cx.emit(HostOutput::Fill(*fill));
        self.stats.fills += 1;
        if self.fills.len() < self.fills.capacity() {
            self.fills.push(*fill);
        } else {
            self.stats.updates_dropped += 1;
        }
    }

    /// Net a fill against the symbol's opposite trades (FIFO), then open a trade with the rest.
    fn apply_fill(&mut self, cx: &mut Context<'_, HostOutput>, fill: &Fill) {
        let mut rest = fill.units;
        let mut i = 0;
        while rest != 0.0 && i < self.book.trades.len() {
            let t = self.book.trades[i];
            if t.symbol != fill.symbol || t.size.signum() == rest.signum() {
                i += 1;
                continue;
            }
            let closed = if rest.abs() >= t.size.abs() {
                t.size
            } else {
                -rest
            };
            let pnl = closed * (fill.price - t.entry_price);
            self.book.cash += pnl;
            rest += closed;
            self.stats.trades += 1;
            cx.emit(HostOutput::Trade(ClosedTrade {
                symbol: t.symbol,
                size: closed,
                entry_bar: t.entry_bar,
                exit_bar: fill.pos,
                entry_ts_ns: t.entry_ts_ns,
                exit_ts_ns: fill.ts_ns,
                entry_price: t.entry_price,
                exit_price: fill.price,
                pnl,
            }));
            if closed == t.size {
                self.book.trades.remove(i);
            } else {
                self.book.trades[i].size -= closed;
                i += 1;
            }
        }
        if rest != 0.0 {
            if self.book.trades.len() < self.book.trades.capacity() {
                self.book.trades.push(Trade {
                    symbol: fill.symbol,
                    size: rest,
                    entry_price: fill.price,
                    entry_bar: fill.pos,
                    entry_ts_ns: fill.ts_ns,
                });
            } else {
                // Capacity is checked by risk's position limits in practice; never lose a
                // trade silently: fold it into the oldest trade of the symbol at its price.
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
            }
        }
        self.book.recompute(fill.symbol);
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

    fn on_candle(&mut self, cx: &mut Context<'_, HostOutput>, pos: u64, candle: &Candle) {
        self.stats.candles += 1;
        let s = candle.symbol as usize;
        if candle.symbol >= self.config.symbols || !candle.close.is_finite() {
            self.stats.ignored += 1;
            return;
        }
        // Margin and marks use this bar's close (backtesting.py's broker sees `Close[i]`).
        self.book.last[s] = candle.close;
        if self.config.adapter.is_none() {
            self.fill_paper(cx, pos, candle);
        }
        self.mark();
        self.settle(cx);
        self.call(cx, |st, scx| st.on_candle(scx, pos, candle));
        self.settle(cx);
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
            EventKind::Started => {
                self.call(cx, |st, scx| st.on_start(scx));
                self.settle(cx);
            }
            EventKind::Candle { pos, candle, .. } => self.on_candle(cx, pos, &candle),
            EventKind::Timer { timer, .. } => {
                self.call(cx, |st, scx| st.on_timer(scx, timer));
                self.settle(cx);
            }
            EventKind::Signal(SignalKind::Stop { .. }) => {
                // No new orders from here on; open ones are left alone unless configured.
                self.stopping = true;
                if self.config.cancel_on_shutdown {
                    while !self.book.orders.is_empty() {
                        self.transition(cx, 0, OrderState::Cancelled);
                        self.stats.cancelled += 1;
                        self.remove_order(0);
                    }
                }
            }
            EventKind::SourceEnded { .. } if self.config.stop_when_data_ends => cx.stop(),
            EventKind::Adapter(event) => {
                self.on_adapter(cx, &event);
                self.settle(cx);
            }
            EventKind::Shutdown => {
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
            _ => {}
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
