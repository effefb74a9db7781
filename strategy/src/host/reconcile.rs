//! Reconciliation: the host's books made to agree with the venue's. Before the run's first
//! intent, after every adapter restart, and every `every_ms`, the host asks a venue adapter
//! that announced `reconcile` for its positions, open orders and cash, compares them with
//! what it believed, reports each difference (a typed [`Difference`]), and adopts the
//! venue's. It also resolves `Unknown` orders: a place or cancel that got no answer is
//! asked for by id (`get_order`), never placed again.
//!
//! It owns the reconciliation's state and the table of the host's own requests (cancels,
//! replaces through a venue, queries). It never reads a clock (event times only), never
//! allocates per event (every buffer is sized at `new`), and never sends an order itself but
//! a configured cancel.

use super::{HostOutput, Strategy, StrategyHost};
use crate::orders::{DenyReason, Order, OrderId, OrderState, RejectReason, Replace, Role, Size};
use serde::{Deserialize, Serialize};
use tickloop_app::clock::{Nanos, MILLIS};
use tickloop_app::telemetry::{Telemetry, Text};
use tickloop_app::venue::{
    AdapterEvent, AdapterRequest, Capabilities, Difference, ErrorCode, FailReason, OrderStatus,
    Request, RequestId, RequestKind, Side,
};
use tickloop_app::Context;

/// What to do with an order of this engine's found working at the venue at start (placed
/// by an earlier run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkingOrders {
    /// Take it into the order table: the strategy sees it in `on_start`, its fills are
    /// booked, it can be cancelled or replaced.
    #[default]
    Adopt,
    /// Adopt it, then cancel it before the strategy starts.
    Cancel,
    /// Do not start: the run stops with a message naming the order.
    Refuse,
}

/// `[orders.reconcile]`: when the host compares its books with the venue's, and what it
/// accepts at start. Only for a venue adapter that announced `reconcile`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    /// The engine's own orders found working at start.
    pub working_orders: WorkingOrders,
    /// Whether a start with positions open at the venue is allowed (they are adopted);
    /// false: the run stops with a message naming them.
    pub open_positions: bool,
    /// Reconcile again this often (ms of the loop's clock) to catch drift; 0: only at start
    /// and after adapter restarts.
    pub every_ms: u64,
    /// A reconciliation that failed (a request refused or timed out) is tried again this
    /// long after.
    pub retry_ms: u64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            working_orders: WorkingOrders::Adopt,
            open_positions: true,
            every_ms: 60_000,
            retry_ms: 1_000,
        }
    }
}

impl ReconcileConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.every_ms != 0 && !(100..=86_400_000).contains(&self.every_ms) {
            return Err(format!(
                "reconcile.every_ms = {} must be 0 (off) or 100 to 86400000",
                self.every_ms
            ));
        }
        if !(10..=3_600_000).contains(&self.retry_ms) {
            return Err(format!(
                "reconcile.retry_ms = {} must be 10 to 3600000",
                self.retry_ms
            ));
        }
        Ok(())
    }
}

/// One order as the venue reported it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct VenueRow {
    pub order: OrderId,
    pub symbol: u32,
    pub side: Side,
    pub status: OrderStatus,
    pub qty: f64,
    pub filled: f64,
    pub avg_price: f64,
    pub limit: f64,
    pub stop: f64,
}

impl VenueRow {
    /// The order's limit and stop as the venue reports them (no stop once triggered).
    fn prices(&self) -> (Option<f64>, Option<f64>) {
        let price = |p: f64| p.is_finite().then_some(p);
        let stop = match self.status {
            OrderStatus::Triggered => None,
            _ => price(self.stop),
        };
        (price(self.limit), stop)
    }
}

/// Order `o` is known at the venue by `client` from now on: a new order there, whose fills
/// the venue counts from zero.
fn renamed(o: &mut Order, client: OrderId) {
    o.client = client;
    o.replacing = 0;
    o.filled_before = o.filled.abs();
}

/// A request of the host's own that is not a place: what it was about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct HostRequest {
    pub id: RequestId,
    pub order: OrderId,
    pub kind: RequestKind,
    /// The id the venue was asked about (the order's `client`, or a replace's id).
    pub client: OrderId,
    /// A replace's change, and the state to go back to when it is done or refused.
    pub change: Replace,
    pub before: OrderState,
    /// A replace that got no answer, kept for its change: a fill of the new order may yet
    /// say it was made.
    pub lost: bool,
}

/// Counts for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ReconcileStats {
    /// Reconciliations completed.
    pub reconciliations: u64,
    /// Reconciliations that failed (a request refused, timed out or in error).
    pub failed: u64,
    /// Differences found, by kind (in the order of [`Difference::ALL`]).
    pub differences: [u64; 6],
    /// Orders that became `Unknown`, and those resolved by the venue's answer.
    pub unknown: u64,
    pub resolved: u64,
    /// Orders and position rows beyond the buffers (counted, not compared).
    pub overflow: u64,
}

/// The reconciliation in progress, and what it has gathered.
pub(super) struct Recon {
    /// The venue adapter's capabilities at its last `Ready` (none while it is down).
    pub caps: Capabilities,
    pub adapter_ready: bool,
    /// `Started` came and the strategy's `on_start` waits for the first reconciliation.
    pub awaiting_start: bool,
    pub first_done: bool,
    /// The reconciliation in flight adopts the venue's positions and cash (the first, and
    /// the one after an adapter restart); a periodic one reports differences only, as a
    /// fill may be on its way while the venue already counts it.
    pub adopting: bool,
    /// The requests of the reconciliation in flight (0: none): positions, open orders,
    /// accounts.
    pub requests: [RequestId; 3],
    pub began_at: Nanos,
    /// When to reconcile next (periodic, or a retry).
    pub next_at: Option<Nanos>,
    /// Per symbol: the venue's position and its average price (NaN: not reported).
    pub positions: Vec<f64>,
    pub avg: Vec<f64>,
    pub orders: Vec<VenueRow>,
    pub cash: f64,
    /// The host's cancels and queries in flight.
    pub requests_out: Vec<HostRequest>,
    pub stats: ReconcileStats,
}

impl HostRequest {
    fn new(id: RequestId, order: &Order, kind: RequestKind, client: OrderId) -> HostRequest {
        HostRequest {
            id,
            order: order.id,
            kind,
            client,
            change: Replace::default(),
            before: order.state,
            lost: false,
        }
    }
}

impl Recon {
    pub fn new(symbols: usize, max_orders: usize) -> Recon {
        Recon {
            caps: Capabilities::default(),
            adapter_ready: false,
            awaiting_start: false,
            first_done: false,
            adopting: false,
            requests: [0; 3],
            began_at: 0,
            next_at: None,
            positions: vec![f64::NAN; symbols],
            avg: vec![f64::NAN; symbols],
            // The venue may list orders that are not ours: room for as many again.
            orders: Vec::with_capacity(2 * max_orders),
            cash: f64::NAN,
            // A cancel or a query per open order, and room for the same again racing.
            requests_out: Vec::with_capacity(2 * max_orders + 8),
            stats: ReconcileStats::default(),
        }
    }

    pub fn running(&self) -> bool {
        self.requests.iter().any(|&r| r != 0)
    }

    fn owns(&self, request: RequestId) -> Option<usize> {
        self.requests.iter().position(|&r| r == request && r != 0)
    }
}

/// Equal within the float residue of booking fills one by one.
fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

impl<S: Strategy> StrategyHost<S> {
    /// Whether the strategy may act: not before its `on_start`, which waits for the first
    /// reconciliation with a venue that can.
    pub(super) fn strategy_started(&self) -> bool {
        !self.recon.awaiting_start
    }

    /// The strategy's orders wait while a reconciliation runs (its result may change what
    /// they would do).
    pub(super) fn reconciling(&self) -> bool {
        self.recon.running() && self.recon.adopting
    }

    /// `Started`: with a venue adapter, the strategy starts once the books are reconciled.
    pub(super) fn await_start(&mut self) -> bool {
        self.recon.awaiting_start = self.config.adapter.is_some();
        self.recon.awaiting_start
    }

    /// Call the strategy's `on_start` now.
    fn start_strategy(&mut self, cx: &mut Context<'_, HostOutput>) {
        if !self.recon.awaiting_start {
            return;
        }
        self.recon.awaiting_start = false;
        self.call(cx, |st, scx| st.on_start(scx));
    }

    fn next_request_id(&mut self) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Send a request of the host's own to the venue adapter.
    fn send_request(&mut self, cx: &mut Context<'_, HostOutput>, request: Request) -> RequestId {
        let id = self.next_request_id();
        let adapter = self.config.adapter.expect("only with a venue adapter");
        cx.emit(HostOutput::Send(AdapterRequest {
            adapter,
            id,
            request,
        }));
        id
    }

    /// Send a cancel of `order`, remembered so its failure can be told apart. While a
    /// replace of it is in flight the cancel waits: only the venue's answer says which
    /// order it has, the old or the new.
    pub(super) fn send_cancel(&mut self, cx: &mut Context<'_, HostOutput>, order: OrderId) {
        let Some(i) = self.order_index(order) else {
            return;
        };
        let o = self.book.orders[i];
        if o.replacing != 0 {
            self.book.orders[i].cancel_waits = true;
            return;
        }
        let id = self.send_request(
            cx,
            Request::CancelOrder {
                order: o.client,
                symbol: o.symbol,
            },
        );
        self.remember(HostRequest::new(id, &o, RequestKind::CancelOrder, o.client));
    }

    /// Whether the venue adapter changes working orders (`replace`).
    pub(super) fn venue_replaces(&self) -> bool {
        self.recon.caps.contains(Capabilities::REPLACE)
    }

    /// Ask the venue to change order `i` as `change` says; until it answers, the order works
    /// as it was and is known by both ids. `false`: not sent (no room to follow it).
    pub(super) fn send_replace(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        i: usize,
        change: Replace,
    ) -> bool {
        if self.recon.requests_out.len() == self.recon.requests_out.capacity() {
            self.recon.stats.overflow += 1;
            return false;
        }
        let o = self.book.orders[i];
        // The venue's new order is for this many, whatever the old one fills meanwhile.
        let change = Replace {
            units: Some(change.units.unwrap_or(o.units.abs())),
            ..change
        };
        let id = self.send_request(
            cx,
            Request::ReplaceOrder {
                order: o.client,
                symbol: o.symbol,
                side: o.side,
                qty: change.units.unwrap_or_default(),
                limit: change.limit.or(o.limit),
                stop: change.stop.or(o.stop),
            },
        );
        self.book.orders[i].replacing = id;
        self.remember(HostRequest {
            change,
            ..HostRequest::new(id, &o, RequestKind::ReplaceOrder, id)
        });
        true
    }

    /// The venue took replace `r`: the order works as changed, known by the replace's id.
    fn replaced(&mut self, cx: &mut Context<'_, HostOutput>, r: HostRequest) {
        let Some(i) = self.order_index(r.order) else {
            return; // ended meanwhile
        };
        let o = self.book.orders[i];
        if o.replacing == r.id {
            self.took_replace(cx, i, Some(r.change));
        } else if o.client != r.id {
            return; // a replace given up on (its order was asked for since)
        }
        self.replace_ended(cx, i, r.before);
        self.send_waiting_cancel(cx, r.order);
    }

    /// The venue has the new order of order `i`'s replace in flight (it answered, or the
    /// new order filled or was listed): the order is known by the replace's id from now
    /// on, and changed as `change` says where that is known.
    pub(super) fn took_replace(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        i: usize,
        change: Option<Replace>,
    ) {
        let replace = self.book.orders[i].replacing;
        debug_assert!(replace != 0, "a replace in flight");
        renamed(&mut self.book.orders[i], replace);
        let known = self.replace_change(replace);
        if let Some(change) = change.or(known) {
            self.apply_replace(cx, i, change);
        }
    }

    /// The change replace `replace` asked for, if it is still known: in flight (its answer
    /// comes yet), or kept since it got none (over now: forgotten).
    fn replace_change(&mut self, replace: RequestId) -> Option<Replace> {
        let r = self.recon.requests_out.iter().find(|r| r.id == replace)?;
        let change = r.change;
        if r.lost {
            self.forget(replace);
        }
        Some(change)
    }

    /// A cancel that waited for a replace's answer is sent, now that it is known which
    /// order the venue has (if the order still works).
    pub(super) fn send_waiting_cancel(&mut self, cx: &mut Context<'_, HostOutput>, order: OrderId) {
        let Some(i) = self.order_index(order) else {
            return;
        };
        let o = self.book.orders[i];
        if !o.cancel_waits || o.replacing != 0 {
            return;
        }
        self.book.orders[i].cancel_waits = false;
        if o.state != OrderState::PendingCancel {
            if !o.state.is_working() {
                return;
            }
            self.transition(cx, i, OrderState::PendingCancel);
        }
        self.send_cancel(cx, o.id);
    }

    /// A replace of order `i` is over: pending no more, working as `before` (or as fills
    /// have moved it since).
    fn replace_ended(&mut self, cx: &mut Context<'_, HostOutput>, i: usize, before: OrderState) {
        self.book.orders[i].replacing = 0;
        if self.book.orders[i].state != OrderState::PendingReplace {
            return;
        }
        let next = match before {
            OrderState::Triggered => OrderState::Triggered,
            _ if self.book.orders[i].filled != 0.0 => OrderState::PartiallyFilled,
            _ => OrderState::Accepted,
        };
        self.transition(cx, i, next);
    }

    fn remember(&mut self, request: HostRequest) {
        if self.recon.requests_out.len() < self.recon.requests_out.capacity() {
            self.recon.requests_out.push(request);
        } else {
            self.recon.stats.overflow += 1;
        }
    }

    pub(super) fn forget(&mut self, request: RequestId) -> Option<HostRequest> {
        let at = self
            .recon
            .requests_out
            .iter()
            .position(|r| r.id == request)?;
        Some(self.recon.requests_out.swap_remove(at))
    }

    /// Order `index` got no answer: `Unknown`, and its state is asked for (if the adapter
    /// is up; else at its next `Ready`).
    pub(super) fn make_unknown(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        index: usize,
        reason: FailReason,
    ) {
        let o = self.book.orders[index];
        if o.state != OrderState::Unknown {
            self.recon.stats.unknown += 1;
            cx.emit(HostOutput::Unknown {
                order: o.id,
                reason: RejectReason::of_failure(reason),
            });
            self.transition(cx, index, OrderState::Unknown);
        }
        self.query(cx, o.id);
    }

    fn query(&mut self, cx: &mut Context<'_, HostOutput>, order: OrderId) {
        let queried = self
            .recon
            .requests_out
            .iter()
            .any(|r| r.order == order && r.kind == RequestKind::GetOrder);
        if queried || !self.recon.adapter_ready {
            return;
        }
        if !self.recon.caps.contains(Capabilities::RECONCILE) {
            return;
        }
        let Some(i) = self.order_index(order) else {
            return;
        };
        let o = self.book.orders[i];
        // A replace without an answer: the venue has the new order if it took the change.
        let client = if o.replacing != 0 {
            o.replacing
        } else {
            o.client
        };
        let id = self.send_request(
            cx,
            Request::GetOrder {
                order: client,
                symbol: o.symbol,
            },
        );
        self.remember(HostRequest::new(id, &o, RequestKind::GetOrder, client));
    }

    /// The venue adapter is up (again): reconcile before any new order; or, with a venue
    /// that cannot, start the strategy as the engine believes.
    pub(super) fn on_venue_ready(&mut self, cx: &mut Context<'_, HostOutput>, caps: Capabilities) {
        self.recon.caps = caps;
        self.recon.adapter_ready = true;
        // Whatever was in flight failed with the old process.
        self.recon.requests = [0; 3];
        if caps.contains(Capabilities::RECONCILE) {
            self.recon.adopting = true;
            self.begin(cx);
        } else {
            if self.recon.awaiting_start {
                tracing::warn!(
                    "the venue adapter does not announce \"reconcile\": the engine cannot ask what the account holds, and starts from its configured cash"
                );
            }
            self.start_strategy(cx);
        }
    }

    pub(super) fn on_venue_down(&mut self) {
        self.recon.adapter_ready = false;
        self.recon.caps = Capabilities::default();
    }

    /// On any event: a periodic reconciliation or a retry that is due.
    pub(super) fn reconcile_if_due(&mut self, cx: &mut Context<'_, HostOutput>) {
        if let Some(at) = self.recon.next_at {
            if cx.now() >= at && self.recon.adapter_ready && !self.recon.running() {
                self.begin(cx);
            }
        }
    }

    /// Reconcile (again) at `at`, on the host's timer: it runs when no other event comes.
    fn reconcile_at(&mut self, cx: &mut Context<'_, HostOutput>, at: Nanos) {
        self.recon.next_at = Some(at);
        cx.set_timer(self.config.expiry_timer, at);
    }

    fn begin(&mut self, cx: &mut Context<'_, HostOutput>) {
        let r = &mut self.recon;
        r.next_at = None;
        r.began_at = cx.now();
        r.positions.fill(f64::NAN);
        r.avg.fill(f64::NAN);
        r.orders.clear();
        r.cash = f64::NAN;
        let accounts = r.caps.contains(Capabilities::ACCOUNTS);
        let positions = self.send_request(cx, Request::GetPositions);
        let orders = self.send_request(cx, Request::GetOpenOrders);
        let accounts = if accounts {
            self.send_request(cx, Request::GetAccounts)
        } else {
            0
        };
        self.recon.requests = [positions, orders, accounts];
        // Unknown orders are asked for with it.
        for i in 0..self.book.orders.len() {
            if self.book.orders[i].state == OrderState::Unknown {
                let id = self.book.orders[i].id;
                self.query(cx, id);
            }
        }
    }

    /// An adapter event of the venue adapter that belongs to a reconciliation or a host
    /// request; `true` when it was one.
    pub(super) fn on_reconcile_event(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        event: &AdapterEvent,
    ) -> bool {
        match *event {
            AdapterEvent::Position {
                request,
                symbol,
                qty,
                avg_price,
                ..
            } if self.recon.owns(request).is_some() => {
                if let Some(p) = self.recon.positions.get_mut(symbol as usize) {
                    *p = if p.is_nan() { qty } else { *p + qty };
                    self.recon.avg[symbol as usize] = avg_price;
                } else {
                    self.recon.stats.overflow += 1;
                }
                true
            }
            AdapterEvent::VenueOrder { request, .. } => {
                self.on_venue_order(cx, request, event);
                true
            }
            AdapterEvent::Account { request, cash, .. } if self.recon.owns(request).is_some() => {
                self.recon.cash = cash;
                true
            }
            AdapterEvent::Done { request, .. } => {
                if let Some(at) = self.recon.owns(request) {
                    self.recon.requests[at] = 0;
                    if !self.recon.running() {
                        self.apply(cx);
                    }
                    return true;
                }
                match self.forget(request) {
                    Some(r) if r.kind == RequestKind::ReplaceOrder => {
                        self.replaced(cx, r);
                        true
                    }
                    Some(_) => true,
                    None => false,
                }
            }
            AdapterEvent::Failed {
                request, reason, ..
            } => {
                if self.recon.owns(request).is_some() {
                    self.recon_failed(cx, reason);
                    return true;
                }
                match self.forget(request) {
                    Some(r) => {
                        self.host_request_failed(cx, r, reason);
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        }
    }

    /// An order the venue reported: a row of the reconciliation, or the answer to a query.
    fn on_venue_order(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        request: RequestId,
        event: &AdapterEvent,
    ) {
        let AdapterEvent::VenueOrder {
            order,
            symbol,
            side,
            status,
            qty,
            filled,
            avg_price,
            limit,
            stop,
            ..
        } = *event
        else {
            return;
        };
        let row = VenueRow {
            order,
            symbol,
            side,
            status,
            qty,
            filled,
            avg_price,
            limit,
            stop,
        };
        if self.recon.owns(request).is_some() {
            if self.recon.orders.len() < self.recon.orders.capacity() {
                self.recon.orders.push(row);
            } else {
                self.recon.stats.overflow += 1;
            }
        } else if let Some(q) = self.recon.requests_out.iter().find(|q| q.id == request) {
            if q.client == order && symbol < self.config.symbols {
                let q = *q;
                self.resolve(cx, &q, &row);
            }
        }
    }

    fn recon_failed(&mut self, cx: &mut Context<'_, HostOutput>, reason: FailReason) {
        // Whatever of it is still in flight is dropped when it comes.
        self.recon.requests = [0; 3];
        self.recon.stats.failed += 1;
        let retry = self.config.reconcile.retry_ms;
        tracing::warn!(
            "reconciliation with the venue failed ({reason}); tried again in {retry} ms{}",
            if self.recon.awaiting_start {
                ": the strategy starts once it succeeds"
            } else {
                ""
            }
        );
        self.reconcile_at(cx, cx.now() + retry as Nanos * MILLIS);
    }

    /// A cancel or query of the host's own failed.
    fn host_request_failed(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        r: HostRequest,
        reason: FailReason,
    ) {
        let Some(i) = self.order_index(r.order) else {
            return;
        };
        match (r.kind, reason) {
            // The new order of a replace is not there: the change never happened; the order
            // it was is asked for.
            (RequestKind::GetOrder, FailReason::Adapter(ErrorCode::UnknownOrder))
                if r.client == self.book.orders[i].replacing =>
            {
                self.book.orders[i].replacing = 0;
                self.forget(r.client);
                if self.book.orders[i].state == OrderState::Unknown {
                    self.query(cx, r.order);
                }
            }
            // The venue never had it: a place that never arrived. (An order that has filled
            // or moved on since is left to the next reconciliation.)
            (RequestKind::GetOrder, FailReason::Adapter(ErrorCode::UnknownOrder))
                if self.book.orders[i].state.can_become(OrderState::Rejected)
                    && self.book.orders[i].filled == 0.0 =>
            {
                self.recon.stats.resolved += 1;
                self.reject(cx, i, RejectReason::NotAtVenue);
            }
            (RequestKind::ReplaceOrder, _) => self.replace_failed(cx, i, r, reason),
            // Still not known; asked again at the next reconciliation.
            (RequestKind::GetOrder, _) => {}
            (RequestKind::CancelOrder, FailReason::Timeout | FailReason::AdapterRestarted)
            | (RequestKind::CancelOrder, FailReason::Adapter(ErrorCode::UnknownOrder)) => {
                // Cancelled, filled, or not: only the venue knows.
                self.make_unknown(cx, i, reason);
            }
            // The venue refused the cancel (or it was never sent): it works as before.
            (RequestKind::CancelOrder, _)
                if self.book.orders[i].state == OrderState::PendingCancel =>
            {
                let next = if self.book.orders[i].filled != 0.0 {
                    OrderState::PartiallyFilled
                } else {
                    OrderState::Accepted
                };
                self.transition(cx, i, next);
                self.refuse(cx, r.order, super::Action::Cancel, DenyReason::VenueRefused);
            }
            _ => {}
        }
    }

    /// Replace `r` of order `i` failed.
    fn replace_failed(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        i: usize,
        r: HostRequest,
        reason: FailReason,
    ) {
        match reason {
            // No answer, or an adapter that could not tell: changed or not, filled or not,
            // only the venue knows.
            FailReason::Timeout
            | FailReason::AdapterRestarted
            | FailReason::Adapter(
                ErrorCode::NotConnected
                | ErrorCode::RateLimited
                | ErrorCode::Internal
                | ErrorCode::Other,
            ) => {
                // Kept: a fill of the new order may yet say the change was made, and how.
                self.remember(HostRequest { lost: true, ..r });
                self.make_unknown(cx, i, reason);
            }
            // Not open at the venue any more (filled or cancelled): asked for what it is.
            FailReason::Adapter(ErrorCode::UnknownOrder) => {
                self.book.orders[i].replacing = 0;
                self.make_unknown(cx, i, reason);
            }
            // Refused (by the venue, or never sent): it works as it was.
            _ => {
                self.replace_ended(cx, i, r.before);
                self.refuse(
                    cx,
                    r.order,
                    super::Action::Replace,
                    DenyReason::VenueRefused,
                );
                self.send_waiting_cancel(cx, r.order);
            }
        }
    }

    /// The venue's answer about one of our orders (`get_order` `q`): its state becomes
    /// ours.
    fn resolve(&mut self, cx: &mut Context<'_, HostOutput>, q: &HostRequest, row: &VenueRow) {
        let Some(i) = self.order_index(q.order) else {
            return;
        };
        self.recon.stats.resolved += 1;
        self.take_venue_order(cx, i, row);
        self.send_waiting_cancel(cx, q.order);
    }

    /// Order `i` is the venue's order `row`: if that is a replace's new order, the replace
    /// was made (the order takes its prices and quantity); then its state is followed.
    fn take_venue_order(&mut self, cx: &mut Context<'_, HostOutput>, i: usize, row: &VenueRow) {
        let replace = self.book.orders[i].replacing;
        if replace != 0 && row.order == replace {
            // The row has the change (a replace kept since it got no answer is over now).
            self.replace_change(replace);
            let o = &mut self.book.orders[i];
            renamed(o, row.order);
            (o.limit, o.stop) = row.prices();
            // None of its fills is booked yet (a fill would have named it), so all it
            // has filled is booked by `follow`.
            let change = Replace {
                units: Some(row.qty),
                ..Replace::default()
            };
            self.apply_replace(cx, i, change);
        }
        self.follow(cx, i, row);
    }

    /// Order `i` takes the venue's state `row`: fills not booked yet are booked (at the
    /// average price of what is new), then the venue's status.
    fn follow(&mut self, cx: &mut Context<'_, HostOutput>, i: usize, row: &VenueRow) {
        let o = self.book.orders[i];
        // What the venue's order has filled (since the last replace made it anew).
        let booked = o.filled.abs() - o.filled_before;
        if row.filled.is_finite() && row.filled > booked && !same(row.filled, booked) {
            self.difference(
                cx,
                Difference::OrderFilled,
                o.symbol,
                o.id,
                booked,
                row.filled,
            );
            let new = row.filled - booked;
            let price =
                if row.avg_price.is_finite() && row.avg_price > 0.0 && o.filled_before == 0.0 {
                    (row.avg_price * row.filled - o.avg_price.abs() * booked) / new
                } else if row.avg_price.is_finite() && row.avg_price > 0.0 {
                    row.avg_price
                } else {
                    self.book.last[o.symbol as usize]
                };
            if price.is_finite() && price > 0.0 {
                self.book_venue_fill(cx, i, (new.min(o.units.abs()), price, 0.0), 0);
            }
        }
        let Some(i) = self.order_index(o.id) else {
            return; // filled and gone
        };
        let state = self.book.orders[i].state;
        let next = match row.status {
            OrderStatus::Accepted if self.book.orders[i].filled != 0.0 => {
                OrderState::PartiallyFilled
            }
            OrderStatus::Accepted => OrderState::Accepted,
            OrderStatus::Triggered => OrderState::Triggered,
            OrderStatus::PartiallyFilled => OrderState::PartiallyFilled,
            // A venue that says filled for less than we have left: what it filled is booked.
            OrderStatus::Filled | OrderStatus::Cancelled => OrderState::Cancelled,
            OrderStatus::Expired => OrderState::Expired,
            OrderStatus::Rejected => OrderState::Rejected,
        };
        if state == next || !state.can_become(next) {
            return;
        }
        match next {
            OrderState::Rejected => self.reject(cx, i, RejectReason::NotAtVenue),
            OrderState::Cancelled => self.end(cx, i, next, Some(RejectReason::Reconciled)),
            _ if next.is_final() => self.end(cx, i, next, None),
            _ => self.transition(cx, i, next),
        }
    }

    fn difference(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        difference: Difference,
        symbol: u32,
        order: OrderId,
        engine: f64,
        venue: f64,
    ) {
        let k = Difference::ALL
            .iter()
            .position(|&d| d == difference)
            .expect("every difference is listed");
        self.recon.stats.differences[k] += 1;
        tracing::warn!(
            "reconciliation: {} on symbol {symbol}, order {order}: the engine had {engine}, the venue has {venue}",
            difference.as_str()
        );
        let adopted = match difference {
            Difference::ForeignOrder => false,
            Difference::Position | Difference::Cash => self.recon.adopting,
            _ => true,
        };
        cx.emit(HostOutput::Difference {
            adapter: self.config.adapter.unwrap_or_default(),
            difference,
            symbol,
            order,
            engine,
            venue,
            adopted,
        });
    }

    /// Every answer is in: compare, report, adopt; then start the strategy.
    fn apply(&mut self, cx: &mut Context<'_, HostOutput>) {
        let first = !self.recon.first_done;
        let before: u64 = self.recon.stats.differences.iter().sum();
        if let Err(why) = self.apply_orders(cx, first) {
            return self.refuse_start(cx, &why);
        }
        let adopt = self.recon.adopting;
        // The venue's cash is a spot account's: what buying spent is gone from it. The
        // book's is what its trades cost plus that.
        let engine = self.book.cash - self.book.pos_cost.iter().sum::<f64>();
        if let Err(why) = self.apply_positions(cx, first, adopt) {
            return self.refuse_start(cx, &why);
        }
        let cost: f64 = self.book.pos_cost.iter().sum();
        let venue = self.recon.cash;
        if venue.is_finite() && !same(venue, engine) {
            self.difference(cx, Difference::Cash, 0, 0, engine, venue);
            if adopt {
                self.book.cash = venue + cost;
            }
        }
        self.recon.adopting = false;
        self.mark();
        let after: u64 = self.recon.stats.differences.iter().sum();
        self.recon.stats.reconciliations += 1;
        self.recon.first_done = true;
        cx.emit(HostOutput::Reconciled {
            adapter: self.config.adapter.unwrap_or_default(),
            first,
            positions: self.book.held.len() as u32,
            orders: self.book.orders.len() as u32,
            differences: (after - before) as u32,
            cash: self.book.cash,
        });
        let every = self.config.reconcile.every_ms;
        if every > 0 {
            self.reconcile_at(cx, cx.now() + every as Nanos * MILLIS);
        }
        if first && self.config.reconcile.working_orders == WorkingOrders::Cancel {
            for i in (0..self.book.orders.len()).rev() {
                let o = self.book.orders[i];
                if o.state.is_at_venue() && o.state != OrderState::PendingCancel {
                    self.transition(cx, i, OrderState::PendingCancel);
                    self.send_cancel(cx, o.id);
                }
            }
        }
        self.start_strategy(cx);
    }

    fn refuse_start(&mut self, cx: &mut Context<'_, HostOutput>, why: &str) {
        tracing::error!("the engine does not start trading: {why}");
        self.recon.requests = [0; 3];
        self.stopping = true;
        cx.stop();
    }

    /// The venue's open orders against the table.
    fn apply_orders(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        first: bool,
    ) -> Result<(), String> {
        for k in 0..self.recon.orders.len() {
            let row = self.recon.orders[k];
            if row.symbol >= self.config.symbols {
                continue;
            }
            if row.order == 0 {
                let qty = row.qty - row.filled;
                self.difference(cx, Difference::ForeignOrder, row.symbol, 0, 0.0, qty);
                continue;
            }
            match self.order_index(row.order) {
                Some(i) => {
                    let id = self.book.orders[i].id;
                    self.take_venue_order(cx, i, &row);
                    self.send_waiting_cancel(cx, id);
                }
                None => {
                    if first && self.config.reconcile.working_orders == WorkingOrders::Refuse {
                        return Err(format!(
                            "order {} ({} {} of symbol {}) works at the venue from an earlier run, and [orders.reconcile] working_orders = \"refuse\": cancel it at the venue, or set working_orders to \"adopt\" or \"cancel\"",
                            row.order,
                            if row.side == Side::Buy { "buy" } else { "sell" },
                            row.qty,
                            row.symbol
                        ));
                    }
                    let rest = row.qty - row.filled;
                    self.difference(
                        cx,
                        Difference::OrderNotInEngine,
                        row.symbol,
                        row.order,
                        0.0,
                        rest,
                    );
                    self.adopt(cx, &row);
                }
            }
        }
        // What the engine believed working that the venue does not list: asked for.
        for i in (0..self.book.orders.len()).rev() {
            let o = self.book.orders[i];
            let listed = self
                .recon
                .orders
                .iter()
                .any(|r| r.order == o.client || (r.order == o.replacing && r.order != 0));
            if listed || !o.state.is_at_venue() || o.created_at >= self.recon.began_at {
                continue;
            }
            self.difference(
                cx,
                Difference::OrderNotAtVenue,
                o.symbol,
                o.id,
                o.units.abs(),
                0.0,
            );
            self.make_unknown(cx, i, FailReason::Timeout);
        }
        Ok(())
    }

    /// An order of ours from an earlier run, into the table as the venue has it.
    fn adopt(&mut self, cx: &mut Context<'_, HostOutput>, row: &VenueRow) {
        if self.book.orders.len() == self.book.orders.capacity() {
            self.recon.stats.overflow += 1;
            return;
        }
        let sign = row.side.sign();
        let rest = (row.qty - row.filled).max(0.0);
        let (limit, stop) = row.prices();
        self.book.orders.push(Order {
            limit,
            stop,
            state: OrderState::Submitted,
            units: sign * rest,
            filled: sign * row.filled,
            avg_price: if row.filled > 0.0 { row.avg_price } else { 0.0 },
            ..Order::new(
                row.order,
                row.symbol,
                row.side,
                Size::Units(row.qty),
                Role::Entry,
                cx.now(),
            )
        });
        let i = self.book.orders.len() - 1;
        self.book.repend(row.symbol);
        self.stats.orders += 1;
        // Its id came from an earlier run: ours must stay above it.
        self.next_id = self.next_id.max(row.order + 1);
        let next = match row.status {
            OrderStatus::Triggered => OrderState::Triggered,
            _ if row.filled > 0.0 => OrderState::PartiallyFilled,
            _ => OrderState::Accepted,
        };
        self.transition(cx, i, next);
    }

    /// The venue's positions against the book's; the venue's are adopted.
    fn apply_positions(
        &mut self,
        cx: &mut Context<'_, HostOutput>,
        first: bool,
        adopt: bool,
    ) -> Result<(), String> {
        for s in 0..self.config.symbols {
            let reported = self.recon.positions[s as usize];
            let venue = if reported.is_nan() { 0.0 } else { reported };
            let engine = self.book.position(s);
            if same(venue, engine) {
                continue;
            }
            if first && !self.config.reconcile.open_positions && venue != 0.0 {
                return Err(format!(
                    "the venue holds a position of {venue} in symbol {s}, and [orders.reconcile] open_positions = false: close it at the venue, or set open_positions = true to adopt it"
                ));
            }
            self.difference(cx, Difference::Position, s, 0, engine, venue);
            if adopt {
                self.set_position(s, venue, self.recon.avg[s as usize]);
            }
        }
        Ok(())
    }

    /// The book's position in `s` becomes `size` (one trade at `avg`, else the last price),
    /// its cash untouched: the venue's cash says what it cost.
    fn set_position(&mut self, s: u32, size: f64, avg: f64) {
        let old_avg = self.book.avg_entry(s);
        // The trades it replaces, and their bracket legs with them.
        self.book.trades.retain(|t| t.symbol != s);
        for o in self
            .book
            .orders
            .iter_mut()
            .filter(|o| o.symbol == s && o.is_leg())
        {
            o.trade = None;
        }
        self.book.recompute(s);
        if size == 0.0 {
            return;
        }
        let price = [avg, old_avg, self.book.last[s as usize]]
            .into_iter()
            .find(|p| p.is_finite() && *p > 0.0)
            .unwrap_or(0.0);
        let bar = self.last_bar[s as usize];
        self.open_trade(s, size, price, bar.pos, bar.ts);
    }

    pub fn reconcile_stats(&self) -> ReconcileStats {
        self.recon.stats
    }
}

/// The telemetry of the host's reconciliation outputs.
pub(super) fn telemetry(output: &HostOutput) -> Option<Telemetry> {
    Some(match *output {
        HostOutput::Unknown { order, reason } => Telemetry::OrderUnknown {
            order,
            reason: Text::from_fmt(format_args!("{reason}")),
        },
        HostOutput::Reconciled {
            adapter,
            first,
            positions,
            orders,
            differences,
            cash,
        } => Telemetry::Reconciled {
            adapter,
            first,
            positions,
            orders,
            differences,
            cash,
        },
        HostOutput::Difference {
            adapter,
            difference,
            symbol,
            order,
            engine,
            venue,
            adopted,
        } => Telemetry::ReconcileDifference {
            adapter,
            difference,
            symbol,
            order,
            engine,
            venue,
            adopted,
        },
        _ => return None,
    })
}
