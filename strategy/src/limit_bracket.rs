//! Limit entries with a bracket, the example of resting orders: per symbol, once its mean of
//! `n` closes is known, while flat and with no entry working, rest a limit a fraction
//! `offset` away from the close on the side of the trend (below it to buy when the close is
//! above the mean, above it to sell otherwise) with a stop-loss `sl` and a take-profit `tp`
//! (fractions of the limit) attached; an entry unfilled after `expire` candles is cancelled.
//! `scripts/order_reference.py` runs the same strategy in backtesting.py (reference b).
//!
//! It allocates its windows for every symbol in `new` and nothing after.

use crate::host::{Strategy, StrategyCx};
use crate::indicators::RollingMean;
use crate::orders::{OrderId, OrderRequest, OrderUpdate, Size};
use serde::{Deserialize, Serialize};
use tickloop_ring::Candle;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitBracketConfig {
    /// The trend's mean, in candles (2 to 4096).
    pub n: u32,
    /// Distance of the limit from the close, and of the stop-loss and take-profit from the
    /// limit, as fractions (0.002 is 0.2 %).
    pub offset: f64,
    pub sl: f64,
    pub tp: f64,
    /// Candles an entry may rest before it is cancelled (1 or more).
    pub expire: u32,
}

impl Default for LimitBracketConfig {
    fn default() -> Self {
        LimitBracketConfig {
            n: 20,
            offset: 0.002,
            sl: 0.004,
            tp: 0.006,
            expire: 5,
        }
    }
}

impl LimitBracketConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=4096).contains(&self.n) || self.expire == 0 {
            return Err(format!(
                "limit_bracket: n = {} must be 2 to 4096 and expire = {} at least 1",
                self.n, self.expire
            ));
        }
        for (name, v) in [("offset", self.offset), ("sl", self.sl), ("tp", self.tp)] {
            if !(v.is_finite() && v > 0.0 && v < 0.5) {
                return Err(format!(
                    "limit_bracket: {name} = {v} must be a fraction above 0 and under 0.5"
                ));
            }
        }
        Ok(())
    }
}

struct Symbol {
    mean: RollingMean,
    /// Candles seen.
    bars: u64,
    /// The working entry and the candle it was placed on.
    entry: Option<(OrderId, u64)>,
}

pub struct LimitBracket {
    config: LimitBracketConfig,
    symbols: Vec<Symbol>,
}

fn symbols(config: &LimitBracketConfig, n: u32) -> Vec<Symbol> {
    (0..n)
        .map(|_| Symbol {
            mean: RollingMean::new(config.n as usize),
            bars: 0,
            entry: None,
        })
        .collect()
}

impl Strategy for LimitBracket {
    type Config = LimitBracketConfig;
    const NAME: &'static str = "limit_bracket";

    fn new(config: LimitBracketConfig, n: u32) -> Result<Self, String> {
        config.validate()?;
        Ok(LimitBracket {
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
        let Some(mean) = sym.mean.push(candle.close) else {
            return;
        };
        // Decisions start the candle after the mean is first known (backtesting.py's warm-up).
        if bar < c.n as u64 {
            return;
        }
        if let Some((id, placed)) = sym.entry {
            if bar - placed >= c.expire as u64 {
                cx.cancel(id);
                sym.entry = None;
            }
        }
        if cx.position(candle.symbol) != 0.0 || sym.entry.is_some() {
            return;
        }
        let close = candle.close;
        let order = if close > mean {
            let limit = close * (1.0 - c.offset);
            OrderRequest::buy(candle.symbol, Size::AllEquity)
                .limit(limit)
                .sl(limit * (1.0 - c.sl))
                .tp(limit * (1.0 + c.tp))
        } else {
            let limit = close * (1.0 + c.offset);
            OrderRequest::sell(candle.symbol, Size::AllEquity)
                .limit(limit)
                .sl(limit * (1.0 + c.sl))
                .tp(limit * (1.0 - c.tp))
        };
        sym.entry = cx.place(order).map(|id| (id, bar));
    }

    fn on_order_update(&mut self, _cx: &mut StrategyCx<'_, '_>, u: &OrderUpdate) {
        if let Some(sym) = self.symbols.get_mut(u.symbol as usize) {
            if sym.entry.is_some_and(|(id, _)| id == u.order) && u.state.is_final() {
                sym.entry = None;
            }
        }
    }

    fn on_config(&mut self, config: LimitBracketConfig) -> Result<(), String> {
        config.validate()?;
        if config != self.config {
            self.symbols = symbols(&config, self.symbols.len() as u32);
            self.config = config;
        }
        Ok(())
    }
}
