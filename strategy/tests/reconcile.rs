//! The strategy host against a venue that can say what it holds: the strategy starts only once
//! the books are the venue's (positions, this engine's working orders from earlier runs, cash;
//! each difference reported); a place without an answer is `Unknown` until the venue answers a
//! query for it, and is never placed again; after an adapter restart new orders wait for the
//! books to be reconciled again; and a start the config refuses stops the loop.

use std::cell::{Cell, RefCell};
use tickloop_app::clock::{MILLIS, SECONDS};
use tickloop_app::telemetry::Telemetry;
use tickloop_app::venue::{
    AdapterEvent, Capabilities, Difference, DownCause, ErrorCode, ExitStatus, FailReason,
    OrderStatus, Request, RequestId, RequestKind, Side,
};
use tickloop_app::{Action, App, Context, Event, EventKind};
use tickloop_ring::Candle;
use tickloop_strategy::host::{
    HostConfig, HostOutput, HostSetup, ReconcileConfig, Refusal, Strategy, StrategyCx,
    StrategyHost, WorkingOrders, EPOCH_SHIFT,
};
use tickloop_strategy::orders::{
    DenyReason, OrderRequest, OrderState, RejectReason, Replace, Size,
};
use tickloop_strategy::risk::RiskConfig;

thread_local! {
    /// What the strategy saw at its start: its position and open orders.
    static STARTED: RefCell<Option<(f64, usize)>> = const { RefCell::new(None) };
}

/// Buys `volume` units on every candle (none at 0); notes what it holds at its start.
struct Buyer;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct NoConfig {}

impl Strategy for Buyer {
    type Config = NoConfig;
    const NAME: &'static str = "buyer";
    fn new(_: NoConfig, _: u32) -> Result<Self, String> {
        Ok(Buyer)
    }
    fn on_start(&mut self, cx: &mut StrategyCx<'_, '_>) {
        let held = (cx.position(0), cx.book().open_orders().len());
        STARTED.with(|s| *s.borrow_mut() = Some(held));
    }
    fn on_candle(&mut self, cx: &mut StrategyCx<'_, '_>, _pos: u64, c: &Candle) {
        if c.volume > 0.0 {
            cx.buy(c.symbol, Size::Units(c.volume));
        }
    }
    fn on_config(&mut self, _: NoConfig) -> Result<(), String> {
        Ok(())
    }
}

const EPOCH: u32 = 7;
const CAPS: Capabilities =
    Capabilities(Capabilities::ACCOUNTS.0 | Capabilities::ORDERS.0 | Capabilities::RECONCILE.0);

struct Run<S: Strategy<Config = NoConfig> = Buyer> {
    host: StrategyHost<S>,
    at: u64,
    stopped: bool,
}

impl<S: Strategy<Config = NoConfig>> Run<S> {
    fn new(reconcile: ReconcileConfig) -> Run<S> {
        STARTED.with(|s| *s.borrow_mut() = None);
        let host = StrategyHost::new(HostSetup {
            host: HostConfig {
                symbols: 1,
                adapter: Some(0),
                reconcile,
                ..HostConfig::default()
            },
            risk: RiskConfig::default(),
            strategy: NoConfig {},
            epoch: EPOCH,
        })
        .unwrap();
        Run {
            host,
            at: SECONDS,
            stopped: false,
        }
    }

    fn event(&mut self, kind: EventKind) -> Vec<HostOutput> {
        let mut actions = Vec::with_capacity(64);
        let mut dropped = 0;
        self.at += MILLIS;
        self.host.on_event(
            &Event { at: self.at, kind },
            &mut Context::new(self.at, &mut actions, &mut dropped),
        );
        let mut out = Vec::new();
        for a in actions {
            match a {
                Action::Output(o) => out.push(o),
                Action::Stop => self.stopped = true,
                _ => {}
            }
        }
        out
    }

    fn adapter(&mut self, event: AdapterEvent) -> Vec<HostOutput> {
        self.event(EventKind::Adapter(event))
    }

    fn candle(&mut self, units: f64) -> Vec<HostOutput> {
        self.candle_at(units, 2.5)
    }

    /// A candle of `units` volume whose prices are all `price`.
    fn candle_at(&mut self, units: f64, price: f64) -> Vec<HostOutput> {
        let candle = Candle {
            ts_ns: self.at as i64,
            symbol: 0,
            flags: 0,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: units,
        };
        self.event(EventKind::Candle {
            source: 0,
            pos: 0,
            candle,
        })
    }

    fn ready(&mut self) -> Vec<HostOutput> {
        self.ready_with(CAPS)
    }

    fn ready_with(&mut self, capabilities: Capabilities) -> Vec<HostOutput> {
        self.adapter(AdapterEvent::Ready {
            adapter: 0,
            protocol: 2,
            capabilities,
            starts: 1,
        })
    }

    fn done(&mut self, request: RequestId, kind: RequestKind) -> Vec<HostOutput> {
        self.adapter(AdapterEvent::Done {
            adapter: 0,
            request,
            kind,
            count: 0,
        })
    }

    /// Answer a reconciliation's three requests: `position` units of symbol 0, these orders,
    /// `cash`.
    fn answer(
        &mut self,
        sent: &[(RequestId, Request)],
        position: f64,
        orders: &[AdapterEvent],
        cash: f64,
    ) -> Vec<HostOutput> {
        let id = |kind: RequestKind| sent.iter().find(|(_, r)| r.kind() == kind).unwrap().0;
        let mut out = Vec::new();
        if position != 0.0 {
            out.extend(self.adapter(AdapterEvent::Position {
                adapter: 0,
                request: id(RequestKind::GetPositions),
                symbol: 0,
                qty: position,
                avg_price: 2.0,
            }));
        }
        for o in orders {
            let mut o = *o;
            if let AdapterEvent::VenueOrder { request, .. } = &mut o {
                *request = id(RequestKind::GetOpenOrders);
            }
            out.extend(self.adapter(o));
        }
        out.extend(self.adapter(AdapterEvent::Account {
            adapter: 0,
            request: id(RequestKind::GetAccounts),
            account: Default::default(),
            cash,
            equity: cash,
            buying_power: f64::NAN,
        }));
        for kind in [
            RequestKind::GetPositions,
            RequestKind::GetOpenOrders,
            RequestKind::GetAccounts,
        ] {
            out.extend(self.done(id(kind), kind));
        }
        out
    }
}

fn sent(out: &[HostOutput]) -> Vec<(RequestId, Request)> {
    out.iter()
        .filter_map(|o| match o {
            HostOutput::Send(r) => Some((r.id, r.request)),
            _ => None,
        })
        .collect()
}

fn differences(out: &[HostOutput]) -> Vec<(Difference, u64, f64, f64)> {
    out.iter()
        .filter_map(|o| match *o {
            HostOutput::Difference {
                difference,
                order,
                engine,
                venue,
                ..
            } => Some((difference, order, engine, venue)),
            _ => None,
        })
        .collect()
}

fn venue_order(order: u64, status: OrderStatus, qty: f64, filled: f64) -> AdapterEvent {
    AdapterEvent::VenueOrder {
        adapter: 0,
        request: 0,
        order,
        symbol: 0,
        side: Side::Buy,
        status,
        qty,
        filled,
        avg_price: if filled > 0.0 { 2.4 } else { f64::NAN },
        limit: 2.0,
        stop: f64::NAN,
    }
}

fn state_of(out: &[HostOutput], order: u64) -> Vec<OrderState> {
    out.iter()
        .filter_map(|o| match o {
            HostOutput::Order(u) if u.order == order => Some(u.state),
            _ => None,
        })
        .collect()
}

const EARLIER: u64 = (3 << EPOCH_SHIFT) + 12;

#[test]
fn the_strategy_starts_once_the_books_are_the_venues_and_each_difference_is_reported() {
    let mut run = Run::<Buyer>::new(ReconcileConfig::default());
    assert!(run.event(EventKind::Started { wall_ns: 0 }).is_empty());
    // Before the books are known, a candle only marks them: the strategy places nothing.
    assert!(sent(&run.candle(3.0)).is_empty());
    let asked = sent(&run.ready());
    let kinds: Vec<_> = asked.iter().map(|(_, r)| r.kind()).collect();
    assert_eq!(
        kinds,
        [
            RequestKind::GetPositions,
            RequestKind::GetOpenOrders,
            RequestKind::GetAccounts
        ]
    );
    // Request ids start at the run's epoch.
    assert_eq!(asked[0].0, ((EPOCH as u64) << EPOCH_SHIFT) + 1);
    let ours = venue_order(EARLIER, OrderStatus::PartiallyFilled, 10.0, 4.0);
    let foreign = venue_order(0, OrderStatus::Accepted, 1.0, 0.0);
    let out = run.answer(&asked, 5.0, &[ours, foreign], 900.0);
    let found = differences(&out);
    assert_eq!(
        found,
        [
            (Difference::OrderNotInEngine, EARLIER, 0.0, 6.0),
            (Difference::ForeignOrder, 0, 0.0, 1.0),
            (Difference::Position, 0, 0.0, 5.0),
            (Difference::Cash, 0, 10_000.0, 900.0),
        ]
    );
    for o in &out {
        if let HostOutput::Difference { .. } = o {
            assert!(matches!(
                o.telemetry(),
                Some(Telemetry::ReconcileDifference { .. })
            ));
        }
    }
    assert!(out.iter().any(|o| matches!(
        o,
        HostOutput::Reconciled {
            first: true,
            differences: 4,
            ..
        }
    )));
    // Adopted: the position, the order (6 left of 10), the cash; then the strategy started.
    let book = run.host.book();
    assert_eq!(book.position(0), 5.0);
    assert_eq!(book.cash() - 5.0 * 2.0, 900.0);
    let adopted = book.order(EARLIER).expect("the order is adopted");
    assert_eq!((adopted.units, adopted.filled), (6.0, 4.0));
    assert_eq!(adopted.state, OrderState::PartiallyFilled);
    assert_eq!(STARTED.with(|s| *s.borrow()), Some((5.0, 1)));
    // The strategy's first order: an id of this run, above the adopted one's.
    let placed = sent(&run.candle(2.0));
    assert_eq!(placed.len(), 1);
    assert!(placed[0].0 > ((EPOCH as u64) << EPOCH_SHIFT) && placed[0].0 > EARLIER);
    assert_eq!(run.host.reconcile_stats().reconciliations, 1);
}

#[test]
fn a_place_without_an_answer_is_unknown_until_the_venue_says_and_is_never_placed_again() {
    let mut run = Run::<Buyer>::new(ReconcileConfig::default());
    run.event(EventKind::Started { wall_ns: 0 });
    let asked = sent(&run.ready());
    run.answer(&asked, 0.0, &[], 10_000.0);
    let (id, _) = sent(&run.candle(10.0))[0];
    let out = run.adapter(AdapterEvent::Failed {
        adapter: 0,
        request: id,
        kind: RequestKind::PlaceOrder,
        reason: FailReason::Timeout,
    });
    assert_eq!(state_of(&out, id), [OrderState::Unknown]);
    assert!(out.iter().any(|o| matches!(
        o.telemetry(),
        Some(Telemetry::OrderUnknown { order, .. }) if order == id
    )));
    // Asked for, not placed again; risk still counts it.
    let query = sent(&out);
    assert_eq!(query.len(), 1);
    assert_eq!(
        query[0].1,
        Request::GetOrder {
            order: id,
            symbol: 0
        }
    );
    assert_eq!(run.host.book().pending(0), 10.0);
    // The venue has it, filled: the fill is booked, the order ends.
    let mut answer = venue_order(id, OrderStatus::Filled, 10.0, 10.0);
    if let AdapterEvent::VenueOrder { request, .. } = &mut answer {
        *request = query[0].0;
    }
    let out = run.adapter(answer);
    assert!(out
        .iter()
        .any(|o| matches!(o, HostOutput::Fill(f) if f.units == 10.0 && f.price == 2.4)));
    assert_eq!(state_of(&out, id), [OrderState::Filled]);
    assert_eq!(run.host.book().position(0), 10.0);
    // Another whose venue never had it: rejected as such.
    let (id, _) = sent(&run.candle(1.0))[0];
    let out = run.adapter(AdapterEvent::Failed {
        adapter: 0,
        request: id,
        kind: RequestKind::PlaceOrder,
        reason: FailReason::AdapterRestarted,
    });
    let query = sent(&out)[0].0;
    let out = run.adapter(AdapterEvent::Failed {
        adapter: 0,
        request: query,
        kind: RequestKind::GetOrder,
        reason: FailReason::Adapter(ErrorCode::UnknownOrder),
    });
    assert_eq!(state_of(&out, id), [OrderState::Rejected]);
    let reasons: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            HostOutput::Order(u) => u.reason,
            _ => None,
        })
        .collect();
    assert_eq!(reasons, [RejectReason::NotAtVenue]);
    assert_eq!(run.host.book().pending(0), 0.0);
}

#[test]
fn after_an_adapter_restart_new_orders_wait_for_the_books_to_be_reconciled() {
    let mut run = Run::<Buyer>::new(ReconcileConfig::default());
    run.event(EventKind::Started { wall_ns: 0 });
    let asked = sent(&run.ready());
    run.answer(&asked, 0.0, &[], 10_000.0);
    let (id, _) = sent(&run.candle(4.0))[0];
    run.adapter(AdapterEvent::Down {
        adapter: 0,
        cause: DownCause::Hung,
        status: ExitStatus::Signal(9),
        restart_in_ms: 100,
    });
    // In flight when it went down: Unknown, asked for when the adapter is back.
    let out = run.adapter(AdapterEvent::Failed {
        adapter: 0,
        request: id,
        kind: RequestKind::PlaceOrder,
        reason: FailReason::AdapterRestarted,
    });
    assert_eq!(state_of(&out, id), [OrderState::Unknown]);
    assert!(sent(&out).is_empty());
    let asked = sent(&run.ready());
    let kinds: Vec<_> = asked.iter().map(|(_, r)| r.kind()).collect();
    assert_eq!(
        kinds,
        [
            RequestKind::GetPositions,
            RequestKind::GetOpenOrders,
            RequestKind::GetAccounts,
            RequestKind::GetOrder
        ]
    );
    // A new order while the books are reconciled: denied, never sent.
    let out = run.candle(1.0);
    assert!(sent(&out).is_empty());
    assert!(out.iter().any(|o| matches!(
        o,
        HostOutput::Denied {
            reason: DenyReason::Reconciling,
            ..
        }
    )));
    // The venue has the order, working: adopted as it is, listed and answered.
    let working = venue_order(id, OrderStatus::Accepted, 4.0, 0.0);
    let out = run.answer(&asked[..3], 0.0, &[working], 10_000.0);
    assert_eq!(state_of(&out, id), [OrderState::Accepted]);
    assert!(differences(&out).is_empty(), "{out:?}");
    assert_eq!(sent(&run.candle(1.0)).len(), 1);
}

#[test]
fn a_start_the_config_refuses_stops_the_run_before_any_order() {
    for (reconcile, position, orders) in [
        (
            ReconcileConfig {
                working_orders: WorkingOrders::Refuse,
                ..ReconcileConfig::default()
            },
            0.0,
            vec![venue_order(EARLIER, OrderStatus::Accepted, 1.0, 0.0)],
        ),
        (
            ReconcileConfig {
                open_positions: false,
                ..ReconcileConfig::default()
            },
            2.0,
            vec![],
        ),
    ] {
        let mut run = Run::<Buyer>::new(reconcile);
        run.event(EventKind::Started { wall_ns: 0 });
        let asked = sent(&run.ready());
        run.answer(&asked, position, &orders, 10_000.0);
        assert!(run.stopped, "{reconcile:?}");
        assert_eq!(STARTED.with(|s| *s.borrow()), None);
        assert!(sent(&run.candle(1.0)).is_empty());
    }
    // With `cancel`, an order of an earlier run is adopted, then cancelled before the start.
    let mut run = Run::<Buyer>::new(ReconcileConfig {
        working_orders: WorkingOrders::Cancel,
        ..ReconcileConfig::default()
    });
    run.event(EventKind::Started { wall_ns: 0 });
    let asked = sent(&run.ready());
    let out = run.answer(
        &asked,
        0.0,
        &[venue_order(EARLIER, OrderStatus::Accepted, 1.0, 0.0)],
        10_000.0,
    );
    assert!(sent(&out).iter().any(|(_, r)| *r
        == Request::CancelOrder {
            order: EARLIER,
            symbol: 0
        }));
    assert_eq!(STARTED.with(|s| *s.borrow()), Some((0.0, 1)));
}

thread_local! {
    /// The cancels and replaces the host refused, as the strategy heard of them.
    static REFUSED: RefCell<Vec<DenyReason>> = const { RefCell::new(Vec::new()) };
    /// What the quoter does at its next candle with volume, once its order is placed.
    static NEXT: Cell<Next> = const { Cell::new(Next::Requote) };
    /// The stop of the quoter's order (none: a limit order).
    static STOP: Cell<Option<f64>> = const { Cell::new(None) };
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Next {
    /// Move it to the candle's price and volume.
    Requote,
    /// Move it to the candle's price only.
    Reprice,
    Cancel,
}

/// Quotes one limit buy: placed at the first candle with volume, at its price for its volume
/// (with the stop `STOP` says); each later such candle moves it there (a replace) or cancels
/// it, as `NEXT` says.
struct Quoter {
    order: Option<u64>,
}

impl Strategy for Quoter {
    type Config = NoConfig;
    const NAME: &'static str = "quoter";
    fn new(_: NoConfig, _: u32) -> Result<Self, String> {
        REFUSED.with(|r| r.borrow_mut().clear());
        NEXT.set(Next::Requote);
        STOP.set(None);
        Ok(Quoter { order: None })
    }
    fn on_candle(&mut self, cx: &mut StrategyCx<'_, '_>, _pos: u64, c: &Candle) {
        if c.volume <= 0.0 {
            return;
        }
        let Some(id) = self.order else {
            let mut order = OrderRequest::buy(0, Size::Units(c.volume)).limit(c.low);
            if let Some(stop) = STOP.get() {
                order = order.stop(stop);
            }
            self.order = cx.place(order);
            return;
        };
        let units = match NEXT.get() {
            Next::Cancel => return cx.cancel(id),
            Next::Reprice => None,
            Next::Requote => Some(c.volume),
        };
        cx.replace(
            id,
            Replace {
                limit: Some(c.low),
                units,
                stop: None,
            },
        );
    }
    fn on_refused(&mut self, _cx: &mut StrategyCx<'_, '_>, refusal: &Refusal) {
        REFUSED.with(|r| r.borrow_mut().push(refusal.reason));
    }
    fn on_config(&mut self, _: NoConfig) -> Result<(), String> {
        Ok(())
    }
}

const REPLACING: Capabilities = Capabilities(CAPS.0 | Capabilities::REPLACE.0);

/// A quoting run reconciled with an empty account, its limit buy of 4 at 2.0 accepted.
fn quoting() -> (Run<Quoter>, u64) {
    let mut run = Run::<Quoter>::new(ReconcileConfig::default());
    run.event(EventKind::Started { wall_ns: 0 });
    let asked = sent(&run.ready_with(REPLACING));
    run.answer(&asked, 0.0, &[], 10_000.0);
    let (id, _) = sent(&run.candle_at(4.0, 2.0))[0];
    run.done(id, RequestKind::PlaceOrder);
    assert_eq!(
        run.host.book().order(id).unwrap().state,
        OrderState::Accepted
    );
    (run, id)
}

/// The one replace `out` sent: its id and request.
fn replace_sent(out: &[HostOutput]) -> (RequestId, Request) {
    let sent = sent(out);
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_eq!(sent[0].1.kind(), RequestKind::ReplaceOrder);
    sent[0]
}

fn fill(order: u64, qty: f64, price: f64, trade: u64) -> AdapterEvent {
    AdapterEvent::Fill {
        adapter: 0,
        order,
        qty,
        price,
        fee: 0.0,
        ts_ns: 0,
        trade: Some(trade),
    }
}

/// The venue's answer to query `request`: order `order` working, `qty` left at `limit`.
fn answer_query(request: RequestId, order: u64, qty: f64, limit: f64) -> AdapterEvent {
    match venue_order(order, OrderStatus::Accepted, qty, 0.0) {
        AdapterEvent::VenueOrder { .. } => AdapterEvent::VenueOrder {
            adapter: 0,
            request,
            order,
            symbol: 0,
            side: Side::Buy,
            status: OrderStatus::Accepted,
            qty,
            filled: 0.0,
            avg_price: f64::NAN,
            limit,
            stop: f64::NAN,
        },
        other => other,
    }
}

#[test]
fn a_replace_through_the_venue_takes_effect_when_the_venue_answers_and_the_order_keeps_its_id() {
    let (mut run, id) = quoting();
    let out = run.candle_at(3.0, 1.9);
    let (r, request) = replace_sent(&out);
    assert_eq!(
        request,
        Request::ReplaceOrder {
            order: id,
            symbol: 0,
            side: Side::Buy,
            qty: 3.0,
            limit: Some(1.9),
            stop: None
        }
    );
    assert_eq!(state_of(&out, id), [OrderState::PendingReplace]);
    // Pending: it works as it was, and a second replace waits for the first.
    let o = run.host.book().order(id).unwrap();
    assert_eq!((o.limit, o.units), (Some(2.0), 4.0));
    assert!(sent(&run.candle_at(2.0, 1.8)).is_empty());
    assert_eq!(
        REFUSED.with(|r| r.borrow().clone()),
        [DenyReason::NotReplaceable]
    );
    // A fill of the old order before the venue's answer is booked as it comes.
    run.adapter(fill(id, 1.0, 2.0, 1));
    let out = run.done(r, RequestKind::ReplaceOrder);
    assert!(
        out.iter().any(|o| matches!(
            o.telemetry(),
            Some(Telemetry::OrderReplaced { order, qty, limit: Some(l), .. })
                if order == id && qty == 3.0 && l == 1.9
        )),
        "{out:?}"
    );
    // Pending through the fill; partly filled once the venue answers.
    assert_eq!(state_of(&out, id), [OrderState::PartiallyFilled], "{out:?}");
    let o = run.host.book().order(id).unwrap();
    assert_eq!(o.state, OrderState::PartiallyFilled);
    assert_eq!(
        (o.limit, o.units, o.filled, o.client),
        (Some(1.9), 3.0, 1.0, r)
    );
    // The venue names the new order by the replace's id: still this order.
    let out = run.adapter(fill(r, 1.0, 1.9, 2));
    assert!(out
        .iter()
        .any(|o| matches!(o, HostOutput::Fill(f) if f.order == id && f.units == 1.0)));
    assert_eq!(run.host.book().position(0), 2.0);
    // After an adapter restart the venue lists it by that id, 1 of 3 filled: no difference.
    run.adapter(AdapterEvent::Down {
        adapter: 0,
        cause: DownCause::Hung,
        status: ExitStatus::Signal(9),
        restart_in_ms: 100,
    });
    let asked = sent(&run.ready_with(REPLACING));
    let listed = venue_order(r, OrderStatus::PartiallyFilled, 3.0, 1.0);
    let out = run.answer(&asked, 2.0, &[listed], 10_000.0 - 2.0 - 1.9);
    assert!(differences(&out).is_empty(), "{out:?}");
    let o = run.host.book().order(id).unwrap();
    assert_eq!((o.units, o.filled), (2.0, 2.0));
    // Then a replace goes to the order the venue knows now.
    let (_, request) = replace_sent(&run.candle_at(2.0, 1.7));
    assert!(
        matches!(request, Request::ReplaceOrder { order, qty, .. } if order == r && qty == 2.0)
    );
}

#[test]
fn a_replace_without_an_answer_is_unknown_and_the_venue_is_asked_for_the_new_order_first() {
    let (mut run, id) = quoting();
    let (r, _) = replace_sent(&run.candle_at(3.0, 1.9));
    let timeout = |request| AdapterEvent::Failed {
        adapter: 0,
        request,
        kind: RequestKind::ReplaceOrder,
        reason: FailReason::Timeout,
    };
    let out = run.adapter(timeout(r));
    assert_eq!(state_of(&out, id), [OrderState::Unknown]);
    let (q, ask) = sent(&out)[0];
    assert_eq!(
        ask,
        Request::GetOrder {
            order: r,
            symbol: 0
        }
    );
    // The venue has no order of the replace's id: the change never happened; the order it
    // was is asked for, and found as it was.
    let out = run.adapter(AdapterEvent::Failed {
        adapter: 0,
        request: q,
        kind: RequestKind::GetOrder,
        reason: FailReason::Adapter(ErrorCode::UnknownOrder),
    });
    let (q, ask) = sent(&out)[0];
    assert_eq!(
        ask,
        Request::GetOrder {
            order: id,
            symbol: 0
        }
    );
    let out = run.adapter(answer_query(q, id, 4.0, 2.0));
    assert_eq!(state_of(&out, id), [OrderState::Accepted]);
    run.done(q, RequestKind::GetOrder);
    let o = run.host.book().order(id).unwrap();
    assert_eq!((o.limit, o.units, o.client), (Some(2.0), 4.0, id));
    // Again, and this time the venue made the change: the order is its new one.
    let (r, _) = replace_sent(&run.candle_at(3.0, 1.9));
    let (q, ask) = sent(&run.adapter(timeout(r)))[0];
    assert_eq!(
        ask,
        Request::GetOrder {
            order: r,
            symbol: 0
        }
    );
    let out = run.adapter(answer_query(q, r, 3.0, 1.9));
    assert!(out
        .iter()
        .any(|o| matches!(o, HostOutput::Replaced(u) if u.order == id)));
    assert_eq!(state_of(&out, id), [OrderState::Accepted]);
    let o = run.host.book().order(id).unwrap();
    assert_eq!((o.limit, o.units, o.client), (Some(1.9), 3.0, r));
    // Nothing was placed again.
    assert_eq!(run.host.stats().orders, 1);
}

#[test]
fn a_replace_the_venue_refuses_leaves_the_order_as_it_was_and_the_strategy_is_told() {
    let (mut run, id) = quoting();
    let (r, _) = replace_sent(&run.candle_at(3.0, 1.9));
    let out = run.adapter(AdapterEvent::Failed {
        adapter: 0,
        request: r,
        kind: RequestKind::ReplaceOrder,
        reason: FailReason::Adapter(ErrorCode::Rejected),
    });
    assert_eq!(state_of(&out, id), [OrderState::Accepted]);
    assert!(out.iter().any(|o| matches!(
        o.telemetry(),
        Some(Telemetry::OrderRefused { order, .. }) if order == id
    )));
    assert_eq!(
        REFUSED.with(|r| r.borrow().clone()),
        [DenyReason::VenueRefused]
    );
    let o = run.host.book().order(id).unwrap();
    assert_eq!(
        (o.limit, o.units, o.client, o.replacing),
        (Some(2.0), 4.0, id, 0)
    );
    // A venue adapter that did not announce `replace` is never asked.
    let mut run = Run::<Quoter>::new(ReconcileConfig::default());
    run.event(EventKind::Started { wall_ns: 0 });
    let asked = sent(&run.ready());
    run.answer(&asked, 0.0, &[], 10_000.0);
    let (id, _) = sent(&run.candle_at(4.0, 2.0))[0];
    run.done(id, RequestKind::PlaceOrder);
    assert!(sent(&run.candle_at(3.0, 1.9)).is_empty());
    assert_eq!(
        REFUSED.with(|r| r.borrow().clone()),
        [DenyReason::Unsupported]
    );
}

/// The cancel a run sent: the order it names.
fn cancel_sent(out: &[HostOutput]) -> Option<u64> {
    sent(out).into_iter().find_map(|(_, r)| match r {
        Request::CancelOrder { order, .. } => Some(order),
        _ => None,
    })
}

#[test]
fn a_cancel_asked_while_a_replace_is_in_flight_goes_to_the_order_the_venue_has() {
    let failed = |request, code| AdapterEvent::Failed {
        adapter: 0,
        request,
        kind: RequestKind::ReplaceOrder,
        reason: FailReason::Adapter(code),
    };
    // The venue takes the replace: the cancel goes to the new order.
    let (mut run, id) = quoting();
    let (r, _) = replace_sent(&run.candle_at(3.0, 1.9));
    NEXT.set(Next::Cancel);
    let out = run.candle_at(1.0, 1.9);
    assert_eq!(state_of(&out, id), [OrderState::PendingCancel]);
    assert!(sent(&out).is_empty(), "it waits for the replace: {out:?}");
    let out = run.done(r, RequestKind::ReplaceOrder);
    assert_eq!(cancel_sent(&out), Some(r), "{out:?}");
    // The venue refuses it: the cancel goes to the order as it was.
    let (mut run, id) = quoting();
    let (r, _) = replace_sent(&run.candle_at(3.0, 1.9));
    NEXT.set(Next::Cancel);
    run.candle_at(1.0, 1.9);
    let out = run.adapter(failed(r, ErrorCode::Rejected));
    assert_eq!(cancel_sent(&out), Some(id), "{out:?}");
    let o = run.host.book().order(id).unwrap();
    assert_eq!(
        (o.state, o.client, o.limit),
        (OrderState::PendingCancel, id, Some(2.0))
    );
    // An adapter that cannot tell: Unknown; the venue's answer says which order to cancel.
    let (mut run, id) = quoting();
    let (r, _) = replace_sent(&run.candle_at(3.0, 1.9));
    NEXT.set(Next::Cancel);
    run.candle_at(1.0, 1.9);
    let out = run.adapter(failed(r, ErrorCode::NotConnected));
    assert_eq!(state_of(&out, id), [OrderState::Unknown]);
    let (q, ask) = sent(&out)[0];
    assert_eq!(
        ask,
        Request::GetOrder {
            order: r,
            symbol: 0
        }
    );
    let out = run.adapter(answer_query(q, r, 3.0, 1.9));
    assert_eq!(cancel_sent(&out), Some(r), "{out:?}");
    let o = run.host.book().order(id).unwrap();
    assert_eq!(
        (o.state, o.client, o.units),
        (OrderState::PendingCancel, r, 3.0)
    );
}

#[test]
fn a_replace_of_the_price_alone_books_what_the_venue_made_of_it() {
    // A limit buy of 4 moved from 2.0 to 1.9: the venue's new order is for 4.
    let (mut run, id) = quoting();
    NEXT.set(Next::Reprice);
    let (r, request) = replace_sent(&run.candle_at(1.0, 1.9));
    assert!(
        matches!(request, Request::ReplaceOrder { qty, limit: Some(l), .. } if qty == 4.0 && l == 1.9)
    );
    // The old order fills 1 before the venue cancels it...
    run.adapter(fill(id, 1.0, 2.0, 1));
    // ...and the new one 2 before the venue's answer comes: the change was made.
    let out = run.adapter(fill(r, 2.0, 1.9, 2));
    assert!(
        out.iter()
            .any(|o| matches!(o, HostOutput::Replaced(u) if u.order == id)),
        "{out:?}"
    );
    let o = run.host.book().order(id).unwrap();
    assert_eq!(
        (o.client, o.units, o.filled, o.limit),
        (r, 2.0, 3.0, Some(1.9))
    );
    let out = run.done(r, RequestKind::ReplaceOrder);
    assert_eq!(state_of(&out, id), [OrderState::PartiallyFilled]);
    // What is left of the new order fills: 5 bought in all, as the venue has it.
    run.adapter(fill(r, 2.0, 1.9, 3));
    assert!(run.host.book().order(id).is_none());
    assert_eq!(run.host.book().position(0), 5.0);
    assert_eq!(run.host.stats().fill_faults, 0);
}

#[test]
fn a_reconciliation_while_a_replace_is_in_flight_books_the_new_orders_fills_once() {
    let (mut run, id) = quoting();
    let (r, _) = replace_sent(&run.candle_at(3.0, 1.9));
    run.adapter(fill(id, 1.0, 2.0, 1));
    // A periodic reconciliation: the venue lists the new order, for 3, 1 of it filled.
    run.at += 61 * SECONDS;
    let asked = sent(&run.candle_at(0.0, 1.9));
    assert_eq!(asked.len(), 3, "{asked:?}");
    let listed = AdapterEvent::VenueOrder {
        adapter: 0,
        request: 0,
        order: r,
        symbol: 0,
        side: Side::Buy,
        status: OrderStatus::PartiallyFilled,
        qty: 3.0,
        filled: 1.0,
        avg_price: 1.9,
        limit: 1.9,
        stop: f64::NAN,
    };
    let out = run.answer(&asked, 2.0, &[listed], 10_000.0 - 2.0 - 1.9);
    assert_eq!(
        differences(&out),
        [(Difference::OrderFilled, id, 0.0, 1.0)],
        "{out:?}"
    );
    let o = run.host.book().order(id).unwrap();
    assert_eq!(
        (o.client, o.units, o.filled, o.limit),
        (r, 2.0, 2.0, Some(1.9))
    );
    // The venue's answer to the replace changes nothing more.
    run.done(r, RequestKind::ReplaceOrder);
    let o = run.host.book().order(id).unwrap();
    assert_eq!(
        (o.state, o.units, o.filled),
        (OrderState::PartiallyFilled, 2.0, 2.0)
    );
    assert_eq!(run.host.book().position(0), 2.0);
}

#[test]
fn a_stop_the_venue_reached_is_replaced_as_the_limit_order_it_became() {
    STOP.set(Some(2.5));
    let mut run = Run::<Quoter>::new(ReconcileConfig::default());
    STOP.set(Some(2.5));
    run.event(EventKind::Started { wall_ns: 0 });
    let asked = sent(&run.ready_with(REPLACING));
    run.answer(&asked, 0.0, &[], 10_000.0);
    let (id, _) = sent(&run.candle_at(4.0, 2.0))[0];
    run.done(id, RequestKind::PlaceOrder);
    let out = run.adapter(AdapterEvent::OrderUpdate {
        adapter: 0,
        order: id,
        status: OrderStatus::Triggered,
        filled: 0.0,
        remaining: 4.0,
        avg_price: f64::NAN,
    });
    assert_eq!(state_of(&out, id), [OrderState::Triggered]);
    assert_eq!(run.host.book().order(id).unwrap().stop, None);
    let (r, request) = replace_sent(&run.candle_at(3.0, 1.9));
    assert!(
        matches!(request, Request::ReplaceOrder { stop: None, limit: Some(l), .. } if l == 1.9),
        "{request:?}"
    );
    let out = run.done(r, RequestKind::ReplaceOrder);
    assert_eq!(state_of(&out, id), [OrderState::Triggered]);
    let o = run.host.book().order(id).unwrap();
    assert_eq!((o.stop, o.limit, o.units), (None, Some(1.9), 3.0));
}

#[test]
fn a_fill_of_the_new_order_of_a_replace_without_an_answer_says_the_change_was_made() {
    let (mut run, id) = quoting();
    NEXT.set(Next::Reprice);
    let (r, _) = replace_sent(&run.candle_at(1.0, 1.9));
    run.adapter(fill(id, 1.0, 2.0, 1));
    let out = run.adapter(AdapterEvent::Failed {
        adapter: 0,
        request: r,
        kind: RequestKind::ReplaceOrder,
        reason: FailReason::Timeout,
    });
    let (q, _) = sent(&out)[0];
    // The venue made the new order, for the 4 asked, and it fills 2.
    run.adapter(fill(r, 2.0, 1.9, 2));
    assert_eq!(run.host.stats().fill_faults, 0);
    let o = run.host.book().order(id).unwrap();
    assert_eq!(
        (o.client, o.units, o.filled, o.limit),
        (r, 2.0, 3.0, Some(1.9))
    );
    // The query's answer books nothing twice.
    let out = run.adapter(AdapterEvent::VenueOrder {
        adapter: 0,
        request: q,
        order: r,
        symbol: 0,
        side: Side::Buy,
        status: OrderStatus::PartiallyFilled,
        qty: 4.0,
        filled: 2.0,
        avg_price: 1.9,
        limit: 1.9,
        stop: f64::NAN,
    });
    assert!(differences(&out).is_empty(), "{out:?}");
    assert_eq!(run.host.book().position(0), 3.0);
    let o = run.host.book().order(id).unwrap();
    assert_eq!(
        (o.state, o.units, o.filled),
        (OrderState::PartiallyFilled, 2.0, 3.0)
    );
}
