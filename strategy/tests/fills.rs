//! The strategy host against a venue adapter: which fills it believes, what the strategy is
//! told, and the reasons its rejections give.

use std::cell::RefCell;
use std::rc::Rc;
use tickloop_app::clock::{MILLIS, SECONDS};
use tickloop_app::telemetry::Telemetry;
use tickloop_app::venue::{
    AdapterEvent, FailReason, FillFault, Request, RequestError, RequestKind,
};
use tickloop_app::{Action, App, Context, Event, EventKind};
use tickloop_ring::Candle;
use tickloop_strategy::host::{
    HostConfig, HostOutput, HostSetup, Strategy, StrategyCx, StrategyHost,
};
use tickloop_strategy::orders::{Fill, FillFaultReport, OrderState, RejectReason, Size};
use tickloop_strategy::risk::RiskConfig;

/// What the strategy heard.
#[derive(Default)]
struct Heard {
    fills: Vec<Fill>,
    faults: Vec<FillFaultReport>,
}

thread_local! {
    static HEARD: Rc<RefCell<Heard>> = Rc::default();
}

/// Buys `volume` units of the candle's symbol on every candle (none at 0).
struct Buyer;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct NoConfig {}

impl Strategy for Buyer {
    type Config = NoConfig;
    const NAME: &'static str = "buyer";
    fn new(_: NoConfig, _: u32) -> Result<Self, String> {
        Ok(Buyer)
    }
    fn on_candle(&mut self, cx: &mut StrategyCx<'_, '_>, _pos: u64, c: &Candle) {
        if c.volume > 0.0 {
            cx.buy(c.symbol, Size::Units(c.volume));
        }
    }
    fn on_fill(&mut self, _cx: &mut StrategyCx<'_, '_>, fill: &Fill) {
        HEARD.with(|h| h.borrow_mut().fills.push(*fill));
    }
    fn on_fill_fault(&mut self, _cx: &mut StrategyCx<'_, '_>, fault: &FillFaultReport) {
        HEARD.with(|h| h.borrow_mut().faults.push(*fault));
    }
    fn on_config(&mut self, _: NoConfig) -> Result<(), String> {
        Ok(())
    }
}

struct Run {
    host: StrategyHost<Buyer>,
    at: u64,
}

impl Run {
    fn new() -> Run {
        Run::with(Some(0))
    }

    /// Orders to `adapter`, or the paper broker with `None`.
    fn with(adapter: Option<u16>) -> Run {
        let host = StrategyHost::new(HostSetup {
            host: HostConfig {
                symbols: 2,
                adapter,
                ..HostConfig::default()
            },
            risk: RiskConfig {
                max_order_notional: 0.0,
                max_position_notional: 0.0,
                ..RiskConfig::default()
            },
            strategy: NoConfig {},
            epoch: 0,
        })
        .unwrap();
        Run { host, at: SECONDS }
    }

    fn event(&mut self, kind: EventKind) -> Vec<HostOutput> {
        let mut actions = Vec::with_capacity(64);
        let mut dropped = 0;
        self.at += MILLIS;
        let event = Event { at: self.at, kind };
        self.host.on_event(
            &event,
            &mut Context::new(self.at, &mut actions, &mut dropped),
        );
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Output(o) => Some(o),
                _ => None,
            })
            .collect()
    }

    /// A candle at 2.5 whose volume is the units the strategy buys.
    fn candle(&mut self, units: f64) -> Vec<HostOutput> {
        let p = 2.5;
        let candle = Candle {
            ts_ns: self.at as i64,
            symbol: 1,
            flags: 0,
            open: p,
            high: p,
            low: p,
            close: p,
            volume: units,
        };
        self.event(EventKind::Candle {
            source: 0,
            pos: 0,
            candle,
        })
    }

    fn adapter(&mut self, event: AdapterEvent) -> Vec<HostOutput> {
        self.event(EventKind::Adapter(event))
    }

    fn fill(&mut self, order: u64, qty: f64, price: f64, trade: Option<u64>) -> Vec<HostOutput> {
        self.event(EventKind::Adapter(AdapterEvent::Fill {
            adapter: 0,
            order,
            qty,
            price,
            fee: 0.0,
            ts_ns: 7,
            trade,
        }))
    }
}

fn sent(out: &[HostOutput]) -> Vec<(u64, f64)> {
    out.iter()
        .filter_map(|o| match o {
            HostOutput::Send(r) => match r.request {
                Request::PlaceOrder { qty, .. } => Some((r.id, qty)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn fault(out: &[HostOutput]) -> Option<FillFault> {
    out.iter().find_map(|o| match o {
        HostOutput::FillFault(f) => {
            // Each is its own telemetry event with the numbers.
            match o.telemetry() {
                Some(Telemetry::FillFault { fault, qty, .. }) => {
                    assert_eq!((fault, qty.to_bits()), (f.fault, f.qty.to_bits()))
                }
                other => panic!("a fill fault without its telemetry: {other:?}"),
            }
            Some(f.fault)
        }
        _ => None,
    })
}

fn booked(out: &[HostOutput]) -> bool {
    out.iter().any(|o| matches!(o, HostOutput::Fill(_)))
}

#[test]
fn only_fills_that_fit_their_order_are_booked_and_the_strategy_hears_of_the_others() {
    HEARD.with(|h| *h.borrow_mut() = Heard::default());
    let mut run = Run::new();
    // 10.7 units: 10 are sent, and the submission says 10.
    let out = run.candle(10.7);
    assert_eq!(sent(&out), vec![(1, 10.0)]);
    let submitted = out
        .iter()
        .find_map(|o| match o.telemetry() {
            Some(Telemetry::OrderSubmitted { qty, .. }) => Some(qty),
            _ => None,
        })
        .unwrap();
    assert_eq!(submitted, 10.0);
    run.event(EventKind::Adapter(AdapterEvent::Done {
        adapter: 0,
        request: 1,
        kind: RequestKind::PlaceOrder,
        count: 0,
    }));

    let out = run.fill(1, 4.0, 2.5, Some(11));
    assert!(booked(&out) && fault(&out).is_none());
    assert_eq!(run.host.book().position(1), 4.0);
    for (qty, price, trade, why) in [
        (4.0, 2.5, Some(11), FillFault::Duplicate), // the same trade id again
        (7.0, 2.5, Some(12), FillFault::Overfill),  // 6 are left
        (-1.0, 2.5, Some(13), FillFault::BadQuantity), // not a sell
        (0.0, 2.5, Some(14), FillFault::BadQuantity),
        (1.0, 0.0, Some(15), FillFault::BadPrice),
        (1.0, -2.5, Some(16), FillFault::BadPrice),
    ] {
        let out = run.fill(1, qty, price, trade);
        assert_eq!(fault(&out), Some(why), "{qty} at {price}");
        assert!(!booked(&out), "{why:?} was booked");
        assert_eq!(run.host.book().position(1), 4.0, "{why:?} moved the book");
    }
    assert_eq!(
        fault(&run.fill(99, 1.0, 2.5, None)),
        Some(FillFault::UnknownOrder)
    );
    // Without a trade id, the same content twice is one fill.
    assert!(booked(&run.fill(1, 1.0, 2.5, None)));
    assert_eq!(
        fault(&run.fill(1, 1.0, 2.5, None)),
        Some(FillFault::Duplicate)
    );
    // The rest fills it; after that it is no open order.
    let out = run.fill(1, 5.0, 2.6, Some(20));
    assert!(out
        .iter()
        .any(|o| matches!(o, HostOutput::Order(u) if u.state == OrderState::Filled)));
    assert_eq!(run.host.book().position(1), 10.0);
    assert_eq!(
        fault(&run.fill(1, 1.0, 2.5, Some(21))),
        Some(FillFault::UnknownOrder)
    );
    assert_eq!(run.host.book().position(1), 10.0);

    let stats = run.host.stats();
    assert_eq!((stats.fills, stats.fill_faults), (3, 9));
    HEARD.with(|h| {
        let h = h.borrow();
        assert_eq!(h.fills.len(), 3);
        assert_eq!(h.faults.len(), 9);
        let over = h
            .faults
            .iter()
            .find(|f| f.fault == FillFault::Overfill)
            .unwrap();
        assert_eq!((over.qty, over.remaining), (7.0, 6.0));
    });
}

#[test]
fn rejections_say_what_happened() {
    let mut run = Run::new();
    // Less than one lot: rejected as such, never sent.
    let out = run.candle(0.4);
    assert!(sent(&out).is_empty());
    let reason = |out: &[HostOutput]| {
        out.iter().find_map(|o| match o {
            HostOutput::Order(u) if u.state == OrderState::Rejected => {
                let text = match o.telemetry() {
                    Some(Telemetry::OrderRejected { reason, .. }) => reason.as_str().to_owned(),
                    other => panic!("a rejection without its telemetry: {other:?}"),
                };
                Some((u.reason, text))
            }
            _ => None,
        })
    };
    assert_eq!(
        reason(&out),
        Some((
            Some(RejectReason::ZeroSize),
            "its size is less than one lot".to_owned()
        ))
    );
    // Refused by the adapter host (the adapter is still connecting).
    let out = run.candle(3.0);
    let (id, _) = sent(&out)[0];
    let out = run.event(EventKind::Adapter(AdapterEvent::Failed {
        adapter: 0,
        request: id,
        kind: RequestKind::PlaceOrder,
        reason: FailReason::Refused(RequestError::NotReady),
    }));
    assert_eq!(
        reason(&out),
        Some((
            Some(RejectReason::NotSent(RequestError::NotReady)),
            "not sent: adapter not ready".to_owned()
        ))
    );
    assert_eq!(run.host.stats().rejected, 2);
    assert_eq!(run.host.book().pending(1), 0.0);
}

fn state_of(out: &[HostOutput], order: u64) -> Vec<OrderState> {
    out.iter()
        .filter_map(|o| match o {
            HostOutput::Order(u) if u.order == order => Some(u.state),
            _ => None,
        })
        .collect()
}

fn done(id: u64) -> AdapterEvent {
    AdapterEvent::Done {
        adapter: 0,
        request: id,
        kind: RequestKind::PlaceOrder,
        count: 0,
    }
}

fn failed(id: u64, reason: FailReason) -> AdapterEvent {
    AdapterEvent::Failed {
        adapter: 0,
        request: id,
        kind: RequestKind::PlaceOrder,
        reason,
    }
}

#[test]
fn an_adapters_events_in_any_order_never_break_an_order_and_the_paper_broker_rejects_cleanly() {
    // A request that fails after the venue took the order (a partial fill streamed before a
    // late answer, then a timeout): the order stays open, and fills on.
    let mut run = Run::new();
    let (id, _) = sent(&run.candle(10.0))[0];
    assert!(booked(&run.fill(id, 4.0, 2.5, Some(1))));
    let out = run.adapter(failed(id, FailReason::Timeout));
    assert!(state_of(&out, id).is_empty(), "{out:?}");
    assert!(booked(&run.fill(id, 6.0, 2.5, Some(2))));
    assert_eq!(run.host.book().position(1), 10.0);
    assert!(run.host.book().open_orders().is_empty());

    // An order accepted, then reported rejected by the venue: ended, as a cancel.
    let (id, _) = sent(&run.candle(3.0))[0];
    run.adapter(done(id));
    let out = run.adapter(AdapterEvent::OrderUpdate {
        adapter: 0,
        order: id,
        status: tickloop_app::venue::OrderStatus::Rejected,
        filled: f64::NAN,
        remaining: f64::NAN,
        avg_price: f64::NAN,
    });
    assert_eq!(state_of(&out, id), vec![OrderState::Cancelled]);
    assert!(run.host.book().open_orders().is_empty());
    assert_eq!(run.host.book().pending(1), 0.0);
    // The adapter's error after that is about no open order.
    assert!(state_of(&run.adapter(failed(id, FailReason::Timeout)), id).is_empty());

    // Venues number trades per symbol: the same trade id on another order is a new fill.
    let (a, _) = sent(&run.candle(1.0))[0];
    let (b, _) = sent(&run.candle(1.0))[0];
    assert!(booked(&run.fill(a, 1.0, 2.5, Some(77))));
    assert!(booked(&run.fill(b, 1.0, 2.5, Some(77))));
    assert_eq!(run.host.book().position(1), 12.0);

    // A fill from an adapter the host does not trade through is no fill of its own.
    let out = run.event(EventKind::Adapter(AdapterEvent::Fill {
        adapter: 3,
        order: 1,
        qty: 1.0,
        price: 2.5,
        fee: 0.0,
        ts_ns: 0,
        trade: None,
    }));
    assert_eq!(fault(&out), Some(FillFault::UnknownOrder));

    // The paper broker rejects at the next candle, straight from Submitted: less than one
    // lot, and more than the margin left.
    let mut paper = Run::with(None);
    paper.candle(0.4);
    let out = paper.candle(0.0);
    assert_eq!(state_of(&out, 1), vec![OrderState::Rejected]);
    paper.candle(1e9);
    let out = paper.candle(0.0);
    assert_eq!(state_of(&out, 2), vec![OrderState::Rejected]);
    let reasons: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            HostOutput::Order(u) => u.reason,
            _ => None,
        })
        .collect();
    assert_eq!(reasons, vec![RejectReason::NoMargin]);
    assert_eq!(paper.host.stats().rejected, 2);
    assert!(paper.host.book().open_orders().is_empty());
}
