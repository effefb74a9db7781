//! Stop entries on a breakout, the example of stop orders: per symbol, once the highest high
//! and lowest low of the last `n` candles are known, while flat and with no entry working,
//! put a buy stop a fraction `offset` above the high and a sell stop as far below the low,
//! each for a fraction `size` of the margin with a stop-loss `sl` and a take-profit `tp`
//! (fractions of the stop) attached. When one fills the other is cancelled; both are
//! cancelled after `expire` candles. `scripts/order_reference.py` runs the same strategy in
//! backtesting.py (reference c).
//!
//! It allocates its windows for every symbol in `new` and nothing after.

use crate::host::{Strategy, StrategyCx};
use crate::indicators::{RollingMax, RollingMin};
use crate::orders::{OrderId, OrderRequest, OrderUpdate, Size};
use serde::{Deserialize, Serialize};
use tickloop_ring::Candle;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StopBreakoutConfig {
    /// The channel, in candles (2 to 4096).
    pub n: u32,
    /// Distance of the stops beyond the channel, and of the stop-loss and take-profit from
    /// the stop, as fractions.
    pub offset: f64,
    pub sl: f64,
    pub tp: f64,
    /// The fraction of the margin each entry is for (0 < size < 1).
    pub size: f64,
    /// Candles the stops may wait before they are cancelled (1 or more).
    pub expire: u32,
}

impl Default for StopBreakoutConfig {
    fn default() -> Self {
        StopBreakoutConfig {
            n: 20,
            offset: 0.0005,
            sl: 0.003,
            tp: 0.006,
            size: 0.5,
            expire: 10,
        }
    }
}

impl StopBreakoutConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=4096).contains(&self.n) || self.expire == 0 {
            return Err(format!(
                "stop_breakout: n = {} must be 2 to 4096 and expire = {} at least 1",
                self.n, self.expire
            ));
        }
        for (name, v, max) in [
            ("offset", self.offset, 0.5),
            ("sl", self.sl, 0.5),
            ("tp", self.tp, 0.5),
            ("size", self.size, 1.0),
        ] {
            if !(v.is_finite() && v > 0.0 && v < max) {
                return Err(format!(
                    "stop_breakout: {name} = {v} must be a fraction above 0 and under {max}"
                ));
            }
        }
        Ok(())
    }
}

struct Symbol {
    high: RollingMax,
    low: RollingMin,
    bars: u64,
    /// The working buy and sell stops, and the candle they were placed on.
    stops: [Option<OrderId>; 2],
    placed: u64,
}

pub struct StopBreakout {
    config: StopBreakoutConfig,
    symbols: Vec<Symbol>,
}

fn symbols(config: &StopBreakoutConfig, n: u32) -> Vec<Symbol> {
    (0..n)
        .map(|_| Symbol {
            high: RollingMax::new(config.n as usize),
            low: RollingMin::new(config.n as usize),
            bars: 0,
            stops: [None; 2],
            placed: 0,
        })
        .collect()
}

impl Strategy for StopBreakout {
    type Config = StopBreakoutConfig;
    const NAME: &'static str = "stop_breakout";

    fn new(config: StopBreakoutConfig, n: u32) -> Result<Self, String> {
        config.validate()?;
        Ok(StopBreakout {
            symbols: symbols(&config, n),
            config,
        })
    }

    fn on_candle(&mut self, cx: &mut StrategyCx<'_, '_>, _pos: u64, candle: &Candle) {
        let c = &self.config;
        let Some(sym) = self.symbols.get_mut(candle.symbol as usize) else {
            return;
        };
        let bar = sym.bars;
        sym.bars += 1;
        let high = sym.high.push(candle.high);
        let low = sym.low.push(candle.low);
        // Decisions start the candle after the channel is first known (backtesting.py's
        // warm-up).
        if bar < c.n as u64 {
            return;
        }
        let working = sym.stops.iter().any(Option::is_some);
        if working && bar - sym.placed >= c.expire as u64 {
            for id in sym.stops.iter_mut().filter_map(Option::take) {
                cx.cancel(id);
            }
        }
        if cx.position(candle.symbol) != 0.0 || sym.stops.iter().any(Option::is_some) {
            return;
        }
        let up = high * (1.0 + c.offset);
        let down = low * (1.0 - c.offset);
        let size = Size::Fraction(c.size);
        sym.stops = [
            cx.place(
                OrderRequest::buy(candle.symbol, size)
                    .stop(up)
                    .sl(up * (1.0 - c.sl))
                    .tp(up * (1.0 + c.tp)),
            ),
            cx.place(
                OrderRequest::sell(candle.symbol, size)
                    .stop(down)
                    .sl(down * (1.0 + c.sl))
                    .tp(down * (1.0 - c.tp)),
            ),
        ];
        sym.placed = bar;
    }

    fn on_order_update(&mut self, cx: &mut StrategyCx<'_, '_>, u: &OrderUpdate) {
        let Some(sym) = self.symbols.get_mut(u.symbol as usize) else {
            return;
        };
        let Some(k) = sym.stops.iter().position(|&id| id == Some(u.order)) else {
            return;
        };
        // One side ended (filled, or refused by the broker): the other is cancelled, by
        // hand, a one-cancels-other pair. The strategy's own cancels are no longer listed.
        if u.state.is_final() {
            sym.stops[k] = None;
            if let Some(other) = sym.stops[1 - k].take() {
                cx.cancel(other);
            }
        }
    }

    fn on_config(&mut self, config: StopBreakoutConfig) -> Result<(), String> {
        config.validate()?;
        if config != self.config {
            self.symbols = symbols(&config, self.symbols.len() as u32);
            self.config = config;
        }
        Ok(())
    }
}
