//! Every risk denial reason, produced through the strategy host as a strategy would meet it,
//! and seen as its typed output and its telemetry event.

use tickloop_app::clock::{MILLIS, SECONDS};
use tickloop_app::telemetry::Telemetry;
use tickloop_app::SignalKind;
use tickloop_app::{Action, App, Context, Event, EventKind};
use tickloop_ring::Candle;
use tickloop_strategy::host::{
    HostConfig, HostOutput, HostSetup, Strategy, StrategyCx, StrategyHost,
};
use tickloop_strategy::orders::{DenyReason, OrderState, Size};
use tickloop_strategy::risk::RiskConfig;

/// A strategy that places, on each candle, the orders the test scripted for that candle's
/// close price: `buy:N` units, `quote:Q`, `close`.
#[derive(Default)]
struct Scripted;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct NoConfig {}

impl Strategy for Scripted {
    type Config = NoConfig;
    const NAME: &'static str = "scripted";
    fn new(_: NoConfig, _: u32) -> Result<Self, String> {
        Ok(Scripted)
    }
    fn on_candle(&mut self, cx: &mut StrategyCx<'_, '_>, _pos: u64, c: &Candle) {
        // The volume field carries the script: 1000 + k buys one unit of symbol k, a smaller
        // positive number buys that many units of this symbol, a negative one closes it.
        match c.volume {
            v if v >= 1000.0 => cx.buy((v - 1000.0) as u32, Size::Units(1.0)),
            v if v > 0.0 => cx.buy(c.symbol, Size::Units(v)),
            v if v < 0.0 => cx.close(c.symbol),
            _ => {}
        }
    }
    fn on_config(&mut self, _: NoConfig) -> Result<(), String> {
        Ok(())
    }
}

struct Run {
    host: StrategyHost<Scripted>,
    outputs: Vec<HostOutput>,
    at: u64,
}

impl Run {
    fn new(risk: RiskConfig, max_open_orders: u32) -> Run {
        let host = StrategyHost::new(HostSetup {
            host: HostConfig {
                cash: 1_000_000.0,
                symbols: 4,
                max_open_orders,
                ..HostConfig::default()
            },
            risk,
            strategy: NoConfig {},
            epoch: 0,
        })
        .unwrap();
        Run {
            host,
            outputs: Vec::new(),
            at: SECONDS,
        }
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
        let out: Vec<HostOutput> = actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Output(o) => Some(o),
                _ => None,
            })
            .collect();
        self.outputs.extend(out.iter().copied());
        out
    }

    /// A candle of `symbol` at price 100 whose script is `volume`.
    fn candle(&mut self, symbol: u32, volume: f64) -> Vec<HostOutput> {
        let candle = Candle {
            ts_ns: self.at as i64,
            symbol,
            flags: 0,
            open: 100.0,
            high: 100.0,
            low: 100.0,
            close: 100.0,
            volume,
        };
        self.event(EventKind::Candle {
            source: 0,
            pos: 0,
            candle,
        })
    }
}

fn denial(out: &[HostOutput]) -> Option<DenyReason> {
    out.iter().find_map(|o| match o {
        HostOutput::Denied { reason, .. } => {
            // Every denial is also its typed telemetry event, naming the reason.
            match o.telemetry() {
                Some(Telemetry::RiskDenied { reason: r, .. }) => {
                    assert_eq!(r.as_str(), reason.as_str())
                }
                other => panic!("denial without its telemetry: {other:?}"),
            }
            Some(*reason)
        }
        _ => None,
    })
}

fn filled(out: &[HostOutput]) -> bool {
    out.iter()
        .any(|o| matches!(o, HostOutput::Order(u) if u.state == OrderState::Filled))
}

#[test]
fn every_denial_reason_is_a_typed_event() {
    // No price seen yet for the symbol; a symbol beyond the host's table.
    let mut r = Run::new(RiskConfig::default(), 16);
    r.event(EventKind::Started { wall_ns: 0 });
    assert_eq!(denial(&r.candle(0, 1001.0)), Some(DenyReason::NoPrice));
    assert_eq!(
        denial(&r.candle(0, 1009.0)),
        Some(DenyReason::UnknownSymbol)
    );
    assert_eq!(denial(&r.candle(1, 0.0)), None);
    assert_eq!(
        denial(&r.candle(0, 1001.0)),
        None,
        "symbol 1 has a price now"
    );

    // max_order_notional: 10 units × 100 = 1000 > 500.
    let mut r = Run::new(
        RiskConfig {
            max_order_notional: 500.0,
            ..RiskConfig::default()
        },
        16,
    );
    assert_eq!(
        denial(&r.candle(0, 10.0)),
        Some(DenyReason::MaxOrderNotional)
    );
    assert_eq!(denial(&r.candle(0, 4.0)), None, "400 is within the limit");

    // max_position_notional: 3 × 100 fills, then 3 more would make 600 > 500.
    let mut r = Run::new(
        RiskConfig {
            max_position_notional: 500.0,
            ..RiskConfig::default()
        },
        16,
    );
    assert_eq!(denial(&r.candle(0, 3.0)), None);
    assert!(filled(&r.candle(0, 0.0)));
    assert_eq!(
        denial(&r.candle(0, 3.0)),
        Some(DenyReason::MaxPositionNotional)
    );

    // max_open_positions: one symbol may be held; a second symbol is denied.
    let mut r = Run::new(
        RiskConfig {
            max_open_positions: 1,
            ..RiskConfig::default()
        },
        16,
    );
    assert_eq!(denial(&r.candle(0, 1.0)), None);
    assert_eq!(
        denial(&r.candle(1, 1.0)),
        Some(DenyReason::MaxOpenPositions)
    );
    assert_eq!(denial(&r.candle(0, 1.0)), None, "adding to the held symbol");

    // max_orders_per_sec: 2 accepted, the third within the second is denied; a second of
    // loop time later it is accepted again.
    let mut r = Run::new(
        RiskConfig {
            max_orders_per_sec: 2,
            ..RiskConfig::default()
        },
        16,
    );
    assert_eq!(denial(&r.candle(0, 1.0)), None);
    assert_eq!(denial(&r.candle(0, 1.0)), None);
    assert_eq!(denial(&r.candle(0, 1.0)), Some(DenyReason::RateLimit));
    r.at += SECONDS;
    assert_eq!(denial(&r.candle(0, 1.0)), None);

    // The kill switch: new exposure denied, but a close is still allowed.
    let mut r = Run::new(RiskConfig::default(), 16);
    r.candle(0, 2.0);
    assert!(filled(&r.candle(0, 0.0)));
    let host = HostConfig {
        cash: 1_000_000.0,
        symbols: 4,
        ..HostConfig::default()
    };
    let risk = RiskConfig {
        trading_enabled: false,
        ..RiskConfig::default()
    };
    let off = HostSetup::new(host, risk, NoConfig {});
    r.host
        .reconfigure(&postcard::to_allocvec(&off).unwrap())
        .unwrap();
    assert_eq!(denial(&r.candle(0, 1.0)), Some(DenyReason::TradingDisabled));
    assert_eq!(denial(&r.candle(0, -1.0)), None, "closing is allowed");
    assert!(filled(&r.candle(0, 0.0)));
    assert_eq!(r.host.book().position(0), 0.0);

    // The table of open orders is full: symbol 0's order waits for its next candle.
    let mut r = Run::new(RiskConfig::default(), 1);
    assert_eq!(denial(&r.candle(0, 1.0)), None);
    assert_eq!(denial(&r.candle(1, 1.0)), Some(DenyReason::TooManyOrders));
    assert!(filled(&r.candle(0, 0.0)));
    assert_eq!(denial(&r.candle(1, 1.0)), None, "room again after the fill");

    // Candles of a symbol beyond the table are ignored and counted.
    let mut r = Run::new(RiskConfig::default(), 16);
    assert!(r.candle(9, 1.0).is_empty());
    assert_eq!(r.host.stats().ignored, 1);

    // Shutting down: after SIGTERM no new orders.
    let mut r = Run::new(RiskConfig::default(), 16);
    r.event(EventKind::Signal(SignalKind::Stop { signal: 15 }));
    assert_eq!(denial(&r.candle(0, 1.0)), Some(DenyReason::ShuttingDown));
}
