//! The template bot's strategy: mean reversion on an EMA and an RSI, long only.
//!
//! Per symbol: when the RSI falls below `oversold` while the close is under its EMA (a sharp
//! fall below the trend), buy `size_quote` of quote currency with a stop-loss at
//! `close × stop_loss` attached (a bracket leg: it rests with the broker and fills when the
//! market reaches it, within a candle); close the position when the RSI climbs back above
//! `exit_rsi` (the stop-loss is then cancelled). The entry fills at the next candle's open
//! (the paper broker) or wherever the venue fills it.
//!
//! Like every tickloop strategy it is deterministic: it never reads a clock (time is the
//! candle's and the event's), never spawns a thread, never does IO and allocates its
//! per-symbol state in `new`, nothing after.

pub mod indicators;

use indicators::{Ema, Rsi};
use serde::{Deserialize, Serialize};
use tickloop::strategy::host::{Strategy, StrategyCx};
use tickloop::strategy::orders::{Fill, OrderRequest, Size};
use tickloop::Candle;

/// The strategy's parameters: `[strategy.params]` in a config file, `--param KEY=VALUE` on the
/// command line. An unknown key or a value of the wrong type is refused, naming the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeanReversionConfig {
    /// The EMA's span, in candles (2..=1000).
    pub ema: u32,
    /// The RSI's period, in candles (2..=1000).
    pub rsi: u32,
    /// Buy when the RSI is below this (0..100).
    pub oversold: f64,
    /// Close when the RSI is above this (above `oversold`, below 100).
    pub exit_rsi: f64,
    /// The stop-loss put on each entry, at the signal's close × stop_loss (0 < stop_loss < 1;
    /// 0 = none).
    pub stop_loss: f64,
    /// Quote currency per entry.
    pub size_quote: f64,
}

impl Default for MeanReversionConfig {
    fn default() -> Self {
        MeanReversionConfig {
            ema: 50,
            rsi: 14,
            oversold: 30.0,
            exit_rsi: 55.0,
            stop_loss: 0.99,
            size_quote: 5000.0,
        }
    }
}

impl MeanReversionConfig {
    pub fn validate(&self) -> Result<(), String> {
        let c = self;
        for (key, n) in [("ema", c.ema), ("rsi", c.rsi)] {
            if !(2..=1000).contains(&n) {
                return Err(format!(
                    "mean_reversion: {key} = {n} must be 2 to 1000 candles"
                ));
            }
        }
        if !(c.oversold > 0.0 && c.oversold < c.exit_rsi && c.exit_rsi < 100.0) {
            return Err(format!(
                "mean_reversion: oversold = {} and exit_rsi = {} must satisfy 0 < oversold < exit_rsi < 100",
                c.oversold, c.exit_rsi
            ));
        }
        if !(c.stop_loss == 0.0 || (c.stop_loss > 0.0 && c.stop_loss < 1.0)) {
            return Err(format!(
                "mean_reversion: stop_loss = {} must be between 0 and 1 (0 = off)",
                c.stop_loss
            ));
        }
        if !(c.size_quote > 0.0 && c.size_quote.is_finite()) {
            return Err(format!(
                "mean_reversion: size_quote = {} must be a positive amount",
                c.size_quote
            ));
        }
        Ok(())
    }
}

struct Symbol {
    ema: Ema,
    rsi: Rsi,
    /// The average entry price of the open position (NaN when flat).
    entry: f64,
}

pub struct MeanReversion {
    config: MeanReversionConfig,
    symbols: Vec<Symbol>,
}

fn state(config: &MeanReversionConfig, symbols: u32) -> Vec<Symbol> {
    (0..symbols)
        .map(|_| Symbol {
            ema: Ema::new(config.ema),
            rsi: Rsi::new(config.rsi),
            entry: f64::NAN,
        })
        .collect()
}

/// What the strategy does on one candle, given its indicators and whether it holds the symbol:
/// the rule alone, so tests can check it apart from the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Buy,
    Close,
    Nothing,
}

pub fn decide(
    c: &MeanReversionConfig,
    close: f64,
    ema: f64,
    rsi: f64,
    entry: Option<f64>,
) -> Decision {
    match entry {
        None if rsi < c.oversold && close < ema => Decision::Buy,
        // The stop-loss is the broker's: a leg resting with the entry.
        Some(_) if rsi > c.exit_rsi => Decision::Close,
        _ => Decision::Nothing,
    }
}

impl Strategy for MeanReversion {
    type Config = MeanReversionConfig;
    const NAME: &'static str = "mean_reversion";

    fn new(config: MeanReversionConfig, symbols: u32) -> Result<Self, String> {
        config.validate()?;
        Ok(MeanReversion {
            symbols: state(&config, symbols),
            config,
        })
    }

    fn on_candle(&mut self, cx: &mut StrategyCx<'_, '_>, _pos: u64, candle: &Candle) {
        let Some(sym) = self.symbols.get_mut(candle.symbol as usize) else {
            return;
        };
        let ema = sym.ema.push(candle.close);
        let rsi = sym.rsi.push(candle.close);
        let (Some(ema), Some(rsi)) = (ema, rsi) else {
            return;
        };
        // An order still on its way: wait for its fill before deciding again.
        if cx.book().pending(candle.symbol) != 0.0 {
            return;
        }
        let held = cx.position(candle.symbol) > 0.0;
        let entry = held.then_some(sym.entry);
        match decide(&self.config, candle.close, ema, rsi, entry) {
            Decision::Buy => {
                let mut order =
                    OrderRequest::buy(candle.symbol, Size::Quote(self.config.size_quote));
                if self.config.stop_loss > 0.0 {
                    order = order.sl(candle.close * self.config.stop_loss);
                }
                cx.place(order);
            }
            Decision::Close => cx.close(candle.symbol),
            Decision::Nothing => {}
        }
    }

    fn on_fill(&mut self, cx: &mut StrategyCx<'_, '_>, fill: &Fill) {
        if let Some(sym) = self.symbols.get_mut(fill.symbol as usize) {
            sym.entry = cx.book().avg_entry(fill.symbol);
        }
    }

    fn on_config(&mut self, config: MeanReversionConfig) -> Result<(), String> {
        config.validate()?;
        if config.ema != self.config.ema || config.rsi != self.config.rsi {
            // New periods start their indicators afresh; thresholds apply at once.
            let entries: Vec<f64> = self.symbols.iter().map(|s| s.entry).collect();
            self.symbols = state(&config, self.symbols.len() as u32);
            for (s, e) in self.symbols.iter_mut().zip(entries) {
                s.entry = e;
            }
        }
        self.config = config;
        Ok(())
    }
}
