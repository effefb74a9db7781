//! The drop trigger: per symbol, buy when the close falls to `anchor × trigger`, where the
//! anchor is the highest high of the last `lookback` candles (`anchor = "rolling_high"`) or
//! the highest high since the last exit, still within `lookback` (`anchor = "since_exit"`: a
//! sale resets it, so it does not buy straight back into the same fall). Each position is
//! `size_quote` of quote currency, at most `max_positions` at once; it is closed at
//! `entry × take_profit` or `entry × stop_loss` (by close price; 0 turns either off).
//!
//! Windows for every symbol are allocated in `new`; nothing after.

use crate::host::{Strategy, StrategyCx};
use crate::indicators::RollingMax;
use crate::orders::{Fill, Size};
use serde::{Deserialize, Serialize};
use tickloop_ring::Candle;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnchorMode {
    RollingHigh,
    SinceExit,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DropTriggerConfig {
    /// Buy when close <= anchor × trigger (0 < trigger < 1).
    pub trigger: f64,
    /// Candles the anchor looks back over.
    pub lookback: u32,
    pub anchor: AnchorMode,
    /// Close at entry × take_profit (> 1), or at entry × stop_loss (< 1); 0 = off.
    pub take_profit: f64,
    pub stop_loss: f64,
    /// Quote currency per position.
    pub size_quote: f64,
    /// Positions (and entries under way) at once, across symbols.
    pub max_positions: u32,
}

impl Default for DropTriggerConfig {
    fn default() -> Self {
        DropTriggerConfig {
            trigger: 0.97,
            lookback: 24,
            anchor: AnchorMode::RollingHigh,
            take_profit: 1.03,
            stop_loss: 0.95,
            size_quote: 1000.0,
            max_positions: 3,
        }
    }
}

impl DropTriggerConfig {
    pub fn validate(&self) -> Result<(), String> {
        let c = self;
        if !(c.trigger > 0.0 && c.trigger < 1.0) {
            return Err(format!(
                "drop_trigger: trigger = {} must be between 0 and 1",
                c.trigger
            ));
        }
        if c.lookback == 0 || c.lookback > 100_000 {
            return Err(format!(
                "drop_trigger: lookback = {} must be 1 to 100000",
                c.lookback
            ));
        }
        if !(c.take_profit == 0.0 || c.take_profit > 1.0) {
            return Err(format!(
                "drop_trigger: take_profit = {} must be above 1 (or 0 for none)",
                c.take_profit
            ));
        }
        if !(c.stop_loss == 0.0 || (c.stop_loss > 0.0 && c.stop_loss < 1.0)) {
            return Err(format!(
                "drop_trigger: stop_loss = {} must be between 0 and 1 (or 0 for none)",
                c.stop_loss
            ));
        }
        if !(c.size_quote.is_finite() && c.size_quote > 0.0) {
            return Err(format!(
                "drop_trigger: size_quote = {} must be positive",
                c.size_quote
            ));
        }
        if c.max_positions == 0 {
            return Err("drop_trigger: max_positions must be at least 1".into());
        }
        Ok(())
    }
}

struct Symbol {
    highs: RollingMax,
    /// An entry or exit order is on its way.
    pending: bool,
}

pub struct DropTrigger {
    config: DropTriggerConfig,
    symbols: Vec<Symbol>,
    /// Symbols holding a position or with an entry under way.
    engaged: u32,
    pub entries: u64,
    pub exits: u64,
}

fn windows(config: &DropTriggerConfig, symbols: u32) -> Vec<Symbol> {
    (0..symbols)
        .map(|_| Symbol {
            highs: RollingMax::new(config.lookback as usize),
            pending: false,
        })
        .collect()
}

impl Strategy for DropTrigger {
    type Config = DropTriggerConfig;
    const NAME: &'static str = "drop_trigger";

    fn new(config: DropTriggerConfig, symbols: u32) -> Result<Self, String> {
        config.validate()?;
        Ok(DropTrigger {
            symbols: windows(&config, symbols),
            config,
            engaged: 0,
            entries: 0,
            exits: 0,
        })
    }

    fn on_candle(&mut self, cx: &mut StrategyCx<'_, '_>, _pos: u64, candle: &Candle) {
        let id = candle.symbol;
        let Some(sym) = self.symbols.get_mut(id as usize) else {
            return;
        };
        let anchor = sym.highs.push(candle.high);
        if sym.pending {
            return;
        }
        let c = &self.config;
        let position = cx.position(id);
        if position > 0.0 {
            let entry = cx.book().avg_entry(id);
            let hit_tp = c.take_profit > 0.0 && candle.close >= entry * c.take_profit;
            let hit_sl = c.stop_loss > 0.0 && candle.close <= entry * c.stop_loss;
            if hit_tp || hit_sl {
                cx.close(id);
                sym.pending = true;
            }
        } else if self.engaged < c.max_positions && candle.close <= anchor * c.trigger {
            cx.buy(id, Size::Quote(c.size_quote));
            sym.pending = true;
            self.engaged += 1;
        }
    }

    fn on_fill(&mut self, cx: &mut StrategyCx<'_, '_>, fill: &Fill) {
        let Some(sym) = self.symbols.get_mut(fill.symbol as usize) else {
            return;
        };
        sym.pending = false;
        if fill.units > 0.0 {
            self.entries += 1;
        } else if cx.position(fill.symbol) == 0.0 {
            self.exits += 1;
            self.engaged = self.engaged.saturating_sub(1);
            if self.config.anchor == AnchorMode::SinceExit {
                sym.highs.reset();
            }
        }
    }

    fn on_order_update(
        &mut self,
        _cx: &mut StrategyCx<'_, '_>,
        update: &crate::orders::OrderUpdate,
    ) {
        use crate::orders::OrderState::*;
        // An entry that never filled frees its place.
        if matches!(update.state, Rejected | Cancelled | Expired | Denied) {
            if let Some(sym) = self.symbols.get_mut(update.symbol as usize) {
                if sym.pending && update.side == crate::orders::Side::Buy {
                    self.engaged = self.engaged.saturating_sub(1);
                }
                sym.pending = false;
            }
        }
    }

    fn on_config(&mut self, config: DropTriggerConfig) -> Result<(), String> {
        config.validate()?;
        if config.lookback != self.config.lookback {
            let engaged: Vec<bool> = self.symbols.iter().map(|s| s.pending).collect();
            self.symbols = windows(&config, self.symbols.len() as u32);
            for (s, p) in self.symbols.iter_mut().zip(engaged) {
                s.pending = p;
            }
        }
        self.config = config;
        Ok(())
    }
}
