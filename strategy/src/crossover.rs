//! The SMA crossover strategy, as backtesting.py's tutorial writes it: per symbol, when the
//! fast mean crosses above the slow one, close the position and buy with all the equity; when
//! it crosses below, close and sell. Means are pandas' rolling means (bit for bit), so a
//! backtest reproduces backtesting.py's trades exactly (docs/backtest-semantics.md).
//!
//! It allocates its windows for every symbol in `new` and nothing after.

use crate::host::{Strategy, StrategyCx};
use crate::indicators::RollingMean;
use crate::orders::Size;
use serde::{Deserialize, Serialize};
use tickloop_ring::Candle;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmaCrossConfig {
    /// Fast and slow windows, in candles (1 <= n1 < n2 <= 4096).
    pub n1: u32,
    pub n2: u32,
}

impl Default for SmaCrossConfig {
    fn default() -> Self {
        SmaCrossConfig { n1: 10, n2: 20 }
    }
}

impl SmaCrossConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.n1 == 0 || self.n1 >= self.n2 || self.n2 > 4096 {
            return Err(format!(
                "sma_cross: n1 = {} and n2 = {} must satisfy 1 <= n1 < n2 <= 4096",
                self.n1, self.n2
            ));
        }
        Ok(())
    }
}

struct Symbol {
    fast: RollingMean,
    slow: RollingMean,
    /// The previous bar's (fast, slow), once both are defined.
    prev: Option<(f64, f64)>,
}

pub struct SmaCross {
    config: SmaCrossConfig,
    symbols: Vec<Symbol>,
}

fn windows(config: &SmaCrossConfig, symbols: u32) -> Vec<Symbol> {
    (0..symbols)
        .map(|_| Symbol {
            fast: RollingMean::new(config.n1 as usize),
            slow: RollingMean::new(config.n2 as usize),
            prev: None,
        })
        .collect()
}

impl Strategy for SmaCross {
    type Config = SmaCrossConfig;
    const NAME: &'static str = "sma_cross";

    fn new(config: SmaCrossConfig, symbols: u32) -> Result<Self, String> {
        config.validate()?;
        Ok(SmaCross {
            symbols: windows(&config, symbols),
            config,
        })
    }

    fn on_candle(&mut self, cx: &mut StrategyCx<'_, '_>, _pos: u64, candle: &Candle) {
        let Some(sym) = self.symbols.get_mut(candle.symbol as usize) else {
            return;
        };
        let fast = sym.fast.push(candle.close);
        let slow = sym.slow.push(candle.close);
        let (Some(fast), Some(slow)) = (fast, slow) else {
            return;
        };
        let prev = sym.prev.replace((fast, slow));
        let Some((pf, ps)) = prev else {
            return;
        };
        // backtesting.py's crossover(a, b): a[-2] < b[-2] and a[-1] > b[-1].
        if pf < ps && fast > slow {
            cx.close(candle.symbol);
            cx.buy(candle.symbol, Size::AllEquity);
        } else if ps < pf && slow > fast {
            cx.close(candle.symbol);
            cx.sell(candle.symbol, Size::AllEquity);
        }
    }

    fn on_config(&mut self, config: SmaCrossConfig) -> Result<(), String> {
        config.validate()?;
        if config != self.config {
            // New windows start afresh.
            self.symbols = windows(&config, self.symbols.len() as u32);
            self.config = config;
        }
        Ok(())
    }
}
