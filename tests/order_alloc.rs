//! Zero heap allocations per candle in the strategy host with a strategy that, on every
//! candle, places a limit order with a bracket, replaces the one before, cancels the one
//! before that, and every few candles trades at market and closes, so fills, bracket legs,
//! triggered stops and closed trades all happen while a counting allocator watches.

use tickloop_app::clock::{MILLIS, SECONDS};
use tickloop_app::{Action, App, Context, Event, EventKind};
use tickloop_ring::Candle;
use tickloop_runtime::alloc_count::{allocations, watch, CountingAllocator};
use tickloop_strategy::host::{
    HostConfig, HostOutput, HostSetup, Strategy, StrategyCx, StrategyHost,
};
use tickloop_strategy::orders::{OrderId, OrderRequest, OrderState, Replace, Size, TimeInForce};
use tickloop_strategy::risk::RiskConfig;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

struct Churn {
    bar: u64,
    /// The last three limit orders placed (a ring).
    recent: [Option<OrderId>; 3],
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct NoConfig {}

impl Strategy for Churn {
    type Config = NoConfig;
    const NAME: &'static str = "churn";
    fn new(_: NoConfig, _: u32) -> Result<Self, String> {
        Ok(Churn {
            bar: 0,
            recent: [None; 3],
        })
    }
    fn on_candle(&mut self, cx: &mut StrategyCx<'_, '_>, _pos: u64, c: &Candle) {
        let k = (self.bar % 3) as usize;
        if let Some(old) = self.recent[(k + 1) % 3] {
            cx.cancel(old);
        }
        if let Some(prev) = self.recent[(k + 2) % 3] {
            cx.replace(
                prev,
                Replace {
                    limit: Some(c.close * 0.996),
                    ..Replace::default()
                },
            );
        }
        let limit = c.close * 0.992;
        self.recent[k] = cx.place(
            OrderRequest::buy(c.symbol, Size::Units(1.0))
                .limit(limit)
                .sl(limit * 0.99)
                .tp(limit * 1.01)
                .tif(TimeInForce::Gtd(c.ts_ns + 10 * 60_000_000_000)),
        );
        match self.bar % 10 {
            3 => cx.buy(c.symbol, Size::Quote(500.0)),
            7 => cx.close(c.symbol),
            8 => {
                cx.place(OrderRequest::sell(c.symbol, Size::Units(1.0)).stop(c.close * 0.995));
            }
            _ => {}
        }
        self.bar += 1;
    }
    fn on_config(&mut self, _: NoConfig) -> Result<(), String> {
        Ok(())
    }
}

/// Candle `i` of a deterministic wobble around 100, wide enough to fill limits and trigger
/// stops; `price` is the last close.
fn wobble(i: u64, price: &mut f64) -> Candle {
    let step = [0.3, -0.5, 0.4, -0.2, 0.6, -0.7, 0.1, 0.0][i as usize % 8];
    let open = *price;
    *price += step;
    Candle {
        ts_ns: 1_700_000_000_000_000_000 + i as i64 * 60_000_000_000,
        symbol: 0,
        flags: 0,
        open,
        high: open.max(*price) + 0.4,
        low: open.min(*price) - 0.4,
        close: *price,
        volume: 1.0,
    }
}

/// What the host did, counted from its outputs.
#[derive(Debug, Default)]
struct Counts {
    trades: u64,
    fills: u64,
    cancels: u64,
    replaced: u64,
}

impl Counts {
    fn add(&mut self, actions: &[Action<HostOutput>]) {
        for a in actions {
            match a {
                Action::Output(HostOutput::Trade(_)) => self.trades += 1,
                Action::Output(HostOutput::Fill(_)) => self.fills += 1,
                Action::Output(HostOutput::Order(u)) => match u.state {
                    OrderState::Cancelled => self.cancels += 1,
                    OrderState::PendingReplace => self.replaced += 1,
                    _ => {}
                },
                _ => {}
            }
        }
    }
}

#[test]
fn placing_replacing_and_cancelling_orders_every_candle_allocates_nothing() {
    let mut host = StrategyHost::<Churn>::new(HostSetup {
        host: HostConfig {
            symbols: 4,
            cash: 1e9,
            max_open_orders: 1024,
            max_open_trades: 1024,
            ..HostConfig::default()
        },
        risk: RiskConfig::default(),
        strategy: NoConfig {},
        epoch: 0,
    })
    .unwrap();
    let mut actions: Vec<Action<HostOutput>> = Vec::with_capacity(1 << 16);
    let mut n = Counts::default();
    let mut counted = 0;
    const CANDLES: u64 = 200_000;
    const WARM_UP: u64 = 5_000;
    let mut at = SECONDS;
    let mut price: f64 = 100.0;
    for i in 0..CANDLES {
        if i == WARM_UP {
            counted = allocations();
            watch(true);
        }
        let candle = wobble(i, &mut price);
        at += MILLIS;
        let mut dropped = 0;
        actions.clear();
        host.on_event(
            &Event {
                at,
                kind: EventKind::Candle {
                    source: 0,
                    pos: i,
                    candle,
                },
            },
            &mut Context::new(at, &mut actions, &mut dropped),
        );
        n.add(&actions);
        assert_eq!(dropped, 0);
    }
    watch(false);
    let during = allocations() - counted;
    let stats = host.stats();
    assert!(
        n.trades > 10_000 && n.fills > 10_000 && n.cancels > 10_000 && n.replaced > 10_000,
        "{n:?}"
    );
    assert_eq!(stats.updates_dropped, 0, "{stats:?}");
    assert_eq!(
        during,
        0,
        "{during} allocations over {} candles ({stats:?})",
        CANDLES - WARM_UP
    );
}
