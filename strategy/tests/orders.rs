//! The strategy host's orders as a strategy meets them: a bracket's other leg is cancelled
//! when one leg fills (also when both could fill in one bar: the stop-loss, looked at first,
//! wins, as backtesting.py has it); a replaced limit fills at its new price; and every bad
//! request is a typed denial or refusal that the strategy hears and telemetry carries, never
//! a panic.

use std::cell::RefCell;
use tickloop_app::clock::{MILLIS, SECONDS};
use tickloop_app::telemetry::Telemetry;
use tickloop_app::{Action, App, Context, Event, EventKind};
use tickloop_ring::Candle;
use tickloop_strategy::host::{
    Action as Asked, HostConfig, HostOutput, HostSetup, Refusal, Strategy, StrategyCx, StrategyHost,
};
use tickloop_strategy::orders::{
    DenyReason, OrderId, OrderRequest, OrderState, OrderUpdate, RejectReason, Replace, Role, Size,
    TimeInForce,
};
use tickloop_strategy::risk::RiskConfig;

type Script = Box<
    dyn FnMut(&mut StrategyCx<'_, '_>, u64, &Candle, &[Option<OrderId>]) -> Vec<Option<OrderId>>,
>;

thread_local! {
    static SCRIPT: RefCell<Option<Script>> = RefCell::new(None);
    static HEARD: RefCell<(Vec<OrderUpdate>, Vec<Refusal>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs the test's script on each candle; the ids it placed are given back to it later.
struct Scripted {
    bar: u64,
    ids: Vec<Option<OrderId>>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct NoConfig {}

impl Strategy for Scripted {
    type Config = NoConfig;
    const NAME: &'static str = "scripted";
    fn new(_: NoConfig, _: u32) -> Result<Self, String> {
        Ok(Scripted {
            bar: 0,
            ids: Vec::new(),
        })
    }
    fn on_candle(&mut self, cx: &mut StrategyCx<'_, '_>, _pos: u64, c: &Candle) {
        let placed =
            SCRIPT.with(|s| (s.borrow_mut().as_mut().unwrap())(cx, self.bar, c, &self.ids));
        self.ids.extend(placed);
        self.bar += 1;
    }
    fn on_order_update(&mut self, _cx: &mut StrategyCx<'_, '_>, u: &OrderUpdate) {
        HEARD.with(|h| h.borrow_mut().0.push(*u));
    }
    fn on_refused(&mut self, _cx: &mut StrategyCx<'_, '_>, r: &Refusal) {
        HEARD.with(|h| h.borrow_mut().1.push(*r));
    }
    fn on_config(&mut self, _: NoConfig) -> Result<(), String> {
        Ok(())
    }
}

struct Run {
    host: StrategyHost<Scripted>,
    at: u64,
    outputs: Vec<HostOutput>,
    /// Timers the host set: (id, deadline).
    timers: Vec<(u32, u64)>,
}

impl Run {
    fn new(max_open_orders: u32, script: Script) -> Run {
        SCRIPT.with(|s| *s.borrow_mut() = Some(script));
        HEARD.with(|h| *h.borrow_mut() = Default::default());
        let host = StrategyHost::new(HostSetup {
            host: HostConfig {
                symbols: 1,
                max_open_orders,
                ..HostConfig::default()
            },
            risk: RiskConfig::default(),
            strategy: NoConfig {},
            epoch: 0,
        })
        .unwrap();
        Run {
            host,
            at: SECONDS,
            outputs: Vec::new(),
            timers: Vec::new(),
        }
    }

    /// Deliver an event at the run's time; the actions other than outputs.
    fn event_actions(&mut self, kind: EventKind) -> Vec<Action<HostOutput>> {
        let mut actions = Vec::with_capacity(256);
        let mut dropped = 0;
        self.host.on_event(
            &Event { at: self.at, kind },
            &mut Context::new(self.at, &mut actions, &mut dropped),
        );
        let mut rest = Vec::new();
        for a in actions {
            match a {
                Action::Output(o) => self.outputs.push(o),
                Action::SetTimer { timer, deadline } => self.timers.push((timer, deadline)),
                other => rest.push(other),
            }
        }
        rest
    }

    /// A candle (open, high, low, close).
    fn bar(&mut self, o: f64, h: f64, l: f64, c: f64) {
        self.at += MILLIS;
        let pos = self.host.stats().candles;
        let candle = Candle {
            ts_ns: 1_000 + pos as i64 * 1_000,
            symbol: 0,
            flags: 0,
            open: o,
            high: h,
            low: l,
            close: c,
            volume: 1.0,
        };
        self.event_actions(EventKind::Candle {
            source: 0,
            pos,
            candle,
        });
    }

    fn states_of(&self, role: Role) -> Vec<OrderState> {
        HEARD.with(|h| {
            h.borrow()
                .0
                .iter()
                .filter(|u| u.role == role)
                .map(|u| u.state)
                .collect()
        })
    }
}

fn bracket_entry(sl: f64, tp: f64) -> Script {
    Box::new(move |cx, bar, c, _| {
        if bar == 0 {
            vec![cx.place(OrderRequest::buy(c.symbol, Size::Units(10.0)).sl(sl).tp(tp))]
        } else {
            vec![]
        }
    })
}

#[test]
fn a_brackets_other_leg_is_cancelled_when_both_could_fill_in_one_bar() {
    let mut run = Run::new(16, bracket_entry(95.0, 105.0));
    run.bar(100.0, 100.5, 99.5, 100.0); // the entry is placed
    run.bar(100.0, 101.0, 99.0, 100.5); // it fills at the open; the legs rest
    assert_eq!(run.host.book().position(0), 10.0);
    assert_eq!(
        run.host.book().open_orders().len(),
        2,
        "the stop-loss and the take-profit"
    );
    run.bar(100.0, 106.0, 94.0, 100.0); // both legs are in this bar's range
    assert_eq!(run.host.book().position(0), 0.0);
    assert!(run.host.book().open_orders().is_empty());
    let trade = run
        .outputs
        .iter()
        .find_map(|o| match o {
            HostOutput::Trade(t) => Some(*t),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        trade.exit_role,
        Role::StopLoss,
        "the pessimistic leg wins: {trade:?}"
    );
    assert_eq!(trade.exit_price, 95.0);
    assert_eq!(
        *run.states_of(Role::StopLoss).last().unwrap(),
        OrderState::Filled
    );
    assert_eq!(
        *run.states_of(Role::TakeProfit).last().unwrap(),
        OrderState::Cancelled
    );
    let why = HEARD.with(|h| {
        h.borrow()
            .0
            .iter()
            .rev()
            .find(|u| u.role == Role::TakeProfit)
            .unwrap()
            .reason
    });
    assert_eq!(why, Some(RejectReason::TradeClosed));
}

#[test]
fn a_take_profit_filling_cancels_the_stop_loss_and_a_cancelled_entry_leaves_no_legs() {
    let mut run = Run::new(16, bracket_entry(95.0, 105.0));
    run.bar(100.0, 100.5, 99.5, 100.0);
    run.bar(100.0, 101.0, 99.0, 100.5);
    run.bar(104.0, 107.0, 103.0, 106.0); // only the take-profit: at 105
    assert_eq!(run.host.book().position(0), 0.0);
    assert_eq!(
        *run.states_of(Role::TakeProfit).last().unwrap(),
        OrderState::Filled
    );
    assert_eq!(
        *run.states_of(Role::StopLoss).last().unwrap(),
        OrderState::Cancelled
    );
    assert!(run.host.book().open_orders().is_empty());

    // A limit entry with a bracket, cancelled before it fills: nothing is left working.
    let mut run = Run::new(
        16,
        Box::new(|cx, bar, c, ids| match bar {
            0 => vec![cx.place(
                OrderRequest::buy(c.symbol, Size::Units(1.0))
                    .limit(90.0)
                    .sl(85.0)
                    .tp(99.0),
            )],
            2 => {
                cx.cancel(ids[0].unwrap());
                vec![]
            }
            _ => vec![],
        }),
    );
    for _ in 0..4 {
        run.bar(100.0, 101.0, 99.0, 100.0);
    }
    assert!(run.host.book().open_orders().is_empty());
    assert_eq!(
        run.states_of(Role::Entry).last(),
        Some(&OrderState::Cancelled)
    );
    assert!(run.states_of(Role::StopLoss).is_empty() && run.states_of(Role::TakeProfit).is_empty());
}

#[test]
fn a_replaced_limit_fills_at_its_new_price() {
    let mut run = Run::new(
        16,
        Box::new(|cx, bar, c, ids| match bar {
            0 => vec![cx.place(OrderRequest::buy(c.symbol, Size::Units(2.0)).limit(90.0))],
            1 => {
                cx.replace(
                    ids[0].unwrap(),
                    Replace {
                        limit: Some(99.5),
                        units: Some(3.0),
                        ..Replace::default()
                    },
                );
                vec![]
            }
            _ => vec![],
        }),
    );
    run.bar(100.0, 101.0, 99.0, 100.0);
    run.bar(100.0, 101.0, 99.0, 100.0); // not at 90; replaced after this bar
    run.bar(100.0, 101.0, 99.0, 100.0); // fills at 99.5
    let fill = run
        .outputs
        .iter()
        .find_map(|o| match o {
            HostOutput::Fill(f) => Some(*f),
            _ => None,
        })
        .unwrap();
    assert_eq!((fill.units, fill.price), (3.0, 99.5));
    let states = run.states_of(Role::Entry);
    assert!(
        states
            .windows(2)
            .any(|w| w == [OrderState::PendingReplace, OrderState::Accepted]),
        "{states:?}"
    );
}

/// Requests with what is wrong with each, with the market at 100.
fn bad_requests() -> Vec<(OrderRequest, DenyReason)> {
    let nan = f64::NAN;
    vec![
        (
            OrderRequest::buy(0, Size::Units(1.0)).limit(0.0),
            DenyReason::BadPrice,
        ),
        (
            OrderRequest::buy(0, Size::Units(1.0)).limit(-5.0),
            DenyReason::BadPrice,
        ),
        (
            OrderRequest::buy(0, Size::Units(1.0)).limit(nan),
            DenyReason::BadPrice,
        ),
        (
            OrderRequest::sell(0, Size::Units(1.0)).stop(f64::INFINITY),
            DenyReason::BadPrice,
        ),
        (
            OrderRequest::buy(0, Size::Units(1.0)).sl(nan),
            DenyReason::BadPrice,
        ),
        (
            OrderRequest::buy(0, Size::Units(1.0)).stop(99.0),
            DenyReason::StopWrongSide,
        ),
        (
            OrderRequest::sell(0, Size::Units(1.0)).stop(101.0),
            DenyReason::StopWrongSide,
        ),
        (
            OrderRequest::buy(0, Size::Units(1.0)).limit(98.0).tp(97.0),
            DenyReason::BracketWrongSide,
        ),
        (
            OrderRequest::buy(0, Size::Units(1.0)).sl(101.0),
            DenyReason::BracketWrongSide,
        ),
        (
            OrderRequest::sell(0, Size::Units(1.0)).sl(99.0),
            DenyReason::BracketWrongSide,
        ),
        (OrderRequest::buy(0, Size::Units(0.0)), DenyReason::BadSize),
        (OrderRequest::buy(0, Size::Units(nan)), DenyReason::BadSize),
        (
            OrderRequest::buy(0, Size::Fraction(1.5)),
            DenyReason::BadSize,
        ),
        (
            OrderRequest::sell(0, Size::Units(1.0)).reduce_only(),
            DenyReason::ReduceOnly,
        ),
        (
            OrderRequest::buy(0, Size::Units(1.0)).tif(TimeInForce::Gtd(500)),
            DenyReason::Expired,
        ),
        (
            OrderRequest::buy(7, Size::Units(1.0)),
            DenyReason::UnknownSymbol,
        ),
    ]
}

/// What the strategy heard: the denials' reasons and the refusals.
fn heard() -> (Vec<DenyReason>, Vec<(Asked, DenyReason)>) {
    let (updates, refusals) = HEARD.with(|h| h.borrow().clone());
    let denied = updates
        .iter()
        .filter(|u| u.state == OrderState::Denied)
        .map(|u| u.denied.unwrap())
        .collect();
    (
        denied,
        refusals.iter().map(|r| (r.action, r.reason)).collect(),
    )
}

/// Cancels and replaces that cannot be: of an order cancelled already, of one denied, of
/// one never placed, a stop for a limit order, a negative limit.
fn bad_cancels_and_replaces(cx: &mut StrategyCx<'_, '_>, ids: &[Option<OrderId>]) {
    let working = ids[ids.len() - 3].unwrap();
    let limit = |p| Replace {
        limit: Some(p),
        ..Replace::default()
    };
    cx.cancel(working);
    cx.cancel(working); // already cancelled: final
    cx.replace(ids[0].unwrap(), limit(1.0)); // denied: it never existed
    cx.cancel(12_345); // never placed
    let stop = Replace {
        stop: Some(1.0),
        ..Replace::default()
    };
    cx.replace(ids[ids.len() - 2].unwrap(), stop);
    cx.replace(ids[ids.len() - 2].unwrap(), limit(-1.0));
}

/// The reasons the telemetry of `outputs` gives for denials and refusals, in order.
fn told(outputs: &[HostOutput]) -> Vec<String> {
    let mut told = Vec::new();
    for o in outputs {
        match o.telemetry() {
            Some(Telemetry::RiskDenied { reason, .. }) => told.push(reason.as_str().to_string()),
            Some(Telemetry::OrderRefused { reason, .. }) => {
                told.push(format!("refused {}", reason.as_str()))
            }
            _ => {}
        }
    }
    told
}

#[test]
fn bad_requests_are_typed_denials_the_strategy_and_telemetry_see() {
    let requests = bad_requests();
    let expected: Vec<DenyReason> = requests.iter().map(|r| r.1).collect();
    let mut run = Run::new(
        2,
        Box::new(move |cx, bar, c, ids| match bar {
            // The market is at 100 from the first bar on.
            1 => requests.iter().map(|(r, _)| cx.place(*r)).collect(),
            2 => {
                // Two resting orders fill the table; a third is one too many.
                vec![
                    cx.place(OrderRequest::buy(c.symbol, Size::Units(1.0)).limit(50.0)),
                    cx.place(OrderRequest::buy(c.symbol, Size::Units(1.0)).limit(51.0)),
                    cx.place(OrderRequest::buy(c.symbol, Size::Units(1.0)).limit(52.0)),
                ]
            }
            3 => {
                bad_cancels_and_replaces(cx, ids);
                vec![]
            }
            _ => vec![],
        }),
    );
    for _ in 0..5 {
        run.bar(100.0, 100.5, 99.5, 100.0);
    }
    let (denied, refused) = heard();
    let mut want = expected.clone();
    want.push(DenyReason::TooManyOrders);
    assert_eq!(denied, want, "what the strategy heard");
    assert_eq!(
        refused,
        vec![
            (Asked::Cancel, DenyReason::NotWorking),
            (Asked::Replace, DenyReason::NotWorking),
            (Asked::Cancel, DenyReason::NotWorking),
            (Asked::Replace, DenyReason::NotReplaceable),
            (Asked::Replace, DenyReason::BadPrice),
        ]
    );
    // Telemetry carries each, by name.
    let told = told(&run.outputs);
    let mut want_told: Vec<String> = want.iter().map(|r| r.as_str().to_string()).collect();
    want_told.extend(
        refused
            .iter()
            .map(|(_, r)| format!("refused {}", r.as_str())),
    );
    assert_eq!(told, want_told);
    assert_eq!(run.host.stats().denied as usize, want.len());
    assert_eq!(run.host.stats().refused as usize, refused.len());
}

#[test]
fn a_good_till_order_expires_on_the_loops_timer_when_no_candle_comes() {
    let wall = 1_700_000_000_000_000_000i64; // the loop's wall clock at Started
    let mut run = Run::new(
        16,
        Box::new(move |cx, bar, c, _| match bar {
            0 => vec![
                // Good for 5 s of the loop's clock from its start; and one for an hour.
                cx.place(
                    OrderRequest::buy(c.symbol, Size::Units(1.0))
                        .limit(50.0)
                        .tif(TimeInForce::Gtd(wall + 5_000_000_000)),
                ),
                cx.place(
                    OrderRequest::buy(c.symbol, Size::Units(1.0))
                        .limit(51.0)
                        .tif(TimeInForce::Gtd(wall + 3_600_000_000_000)),
                ),
            ],
            _ => vec![],
        }),
    );
    let started = run.at;
    let actions = run.event_actions(EventKind::Started { wall_ns: wall });
    assert!(actions.is_empty());
    run.bar(100.0, 101.0, 99.0, 100.0);
    // The host set its expiry timer for the earlier of the two, on the loop's clock.
    let timer = run.host.config().expiry_timer;
    assert!(
        run.timers.contains(&(timer, started + 5 * SECONDS)),
        "{:?}",
        run.timers
    );
    // No candle comes; the timer fires: the first expires, the second stays, re-armed.
    run.at = started + 5 * SECONDS;
    run.event_actions(EventKind::Timer {
        timer,
        deadline: started + 5 * SECONDS,
    });
    assert_eq!(
        run.states_of(Role::Entry).last(),
        Some(&OrderState::Expired)
    );
    assert_eq!(run.host.book().open_orders().len(), 1);
    assert_eq!(run.host.stats().expired, 1);
    assert!(run.timers.contains(&(timer, started + 3_600 * SECONDS)));
}
