//! A moving-average crossover signal app: per symbol, a fast and a slow simple moving average
//! of closes; when the fast one crosses the slow one it emits [`SmaOutput::Cross`]. A periodic
//! timer (with a budget) emits a [`SmaOutput::Tick`] summary every `summary_every` ticks.
//!
//! All state is allocated in [`SmaSignals::new`] (windows for `symbols` symbols); candles of
//! symbols beyond that are counted and ignored. It never allocates per event.

use serde::{Deserialize, Serialize};
use tickloop_app::clock::{Nanos, MICROS, MILLIS};
use tickloop_app::{App, Context, Event, EventKind};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmaConfig {
    /// Fast and slow window lengths, in candles (1 <= fast < slow <= 4096).
    pub fast: u32,
    pub slow: u32,
    /// Symbols tracked (ids 0..symbols).
    pub symbols: u32,
    /// Period of the summary timer, and its budget (ns).
    pub tick_ns: Nanos,
    pub tick_budget_ns: Nanos,
    /// Emit a summary every this many ticks (0 = never).
    pub summary_every: u32,
}

impl Default for SmaConfig {
    fn default() -> Self {
        SmaConfig {
            fast: 10,
            slow: 30,
            symbols: 1024,
            tick_ns: MILLIS,
            tick_budget_ns: 200 * MICROS,
            summary_every: 1000,
        }
    }
}

impl SmaConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.fast == 0 || self.fast >= self.slow || self.slow > 4096 {
            return Err(format!(
                "sma: fast = {} and slow = {} must satisfy 1 <= fast < slow <= 4096",
                self.fast, self.slow
            ));
        }
        if self.symbols == 0 || self.symbols > 1 << 16 {
            return Err(format!(
                "sma: symbols = {} must be 1 to 65536",
                self.symbols
            ));
        }
        if self.tick_ns < MICROS {
            return Err(format!(
                "sma: tick_ns = {} must be at least 1000",
                self.tick_ns
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SmaOutput {
    /// The fast average crossed the slow one, upwards (`up`) or downwards.
    Cross {
        source: u16,
        symbol: u32,
        up: bool,
        close: f64,
        ts_ns: i64,
    },
    /// A summary from the periodic timer.
    Tick {
        ticks: u64,
        candles: u64,
        crosses: u64,
        lost: u64,
    },
}

/// The timer id of the summary tick.
pub const TICK_TIMER: u32 = 0;

pub struct SmaSignals {
    config: SmaConfig,
    /// `symbols * slow` closes, one window per symbol.
    closes: Vec<f64>,
    /// Per symbol: rolling sums, count seen, position in the window, last side.
    state: Vec<SymbolState>,
    pub candles: u64,
    pub crosses: u64,
    pub ignored: u64,
    pub lost: u64,
    pub ticks: u64,
    /// The tick timer's period or budget changed: re-arm it at `Reconfigured`.
    rearm: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct SymbolState {
    fast_sum: f64,
    slow_sum: f64,
    seen: u64,
    /// +1 fast above slow, -1 below, 0 unknown.
    side: i8,
}

impl SmaSignals {
    /// The app's name in a journal.
    pub const NAME: &'static str = "sma";

    pub fn new(config: SmaConfig) -> Result<SmaSignals, String> {
        config.validate()?;
        Ok(SmaSignals {
            closes: vec![0.0; config.symbols as usize * config.slow as usize],
            state: vec![SymbolState::default(); config.symbols as usize],
            config,
            candles: 0,
            crosses: 0,
            ignored: 0,
            lost: 0,
            ticks: 0,
            rearm: false,
        })
    }

    pub fn config(&self) -> &SmaConfig {
        &self.config
    }

    /// Take `config` while running: counters carry on; new windows or symbol counts start
    /// their averages afresh (warming up again), a new tick period is re-armed at the
    /// `Reconfigured` event. An invalid config leaves everything as it was.
    pub fn apply(&mut self, config: SmaConfig) -> Result<(), String> {
        config.validate()?;
        let old = &self.config;
        if (old.fast, old.slow, old.symbols) != (config.fast, config.slow, config.symbols) {
            self.closes = vec![0.0; config.symbols as usize * config.slow as usize];
            self.state = vec![SymbolState::default(); config.symbols as usize];
        }
        self.rearm |= (old.tick_ns, old.tick_budget_ns) != (config.tick_ns, config.tick_budget_ns);
        self.config = config;
        Ok(())
    }

    fn on_candle(&mut self, source: u16, symbol: u32, close: f64, ts_ns: i64) -> Option<SmaOutput> {
        self.candles += 1;
        if symbol >= self.config.symbols || !close.is_finite() {
            self.ignored += 1;
            return None;
        }
        let (fast, slow) = (self.config.fast as u64, self.config.slow as u64);
        let base = symbol as usize * slow as usize;
        let st = &mut self.state[symbol as usize];
        let window = &mut self.closes[base..base + slow as usize];
        let n = st.seen;
        // The close leaving the slow window, and the one leaving the fast window.
        if n >= slow {
            st.slow_sum -= window[(n % slow) as usize];
        }
        if n >= fast {
            st.fast_sum -= window[((n - fast) % slow) as usize];
        }
        window[(n % slow) as usize] = close;
        st.slow_sum += close;
        st.fast_sum += close;
        st.seen = n + 1;
        if st.seen.is_multiple_of(slow) {
            // Rolling sums drift, and one huge print cancels every close added while it was in
            // them: recompute both from the window once per window (O(1) amortised).
            st.slow_sum = window.iter().sum();
            st.fast_sum = (0..fast).map(|k| window[((n - k) % slow) as usize]).sum();
        }
        if st.seen < slow {
            return None;
        }
        let fast_avg = st.fast_sum / fast as f64;
        let slow_avg = st.slow_sum / slow as f64;
        let side = if fast_avg > slow_avg {
            1
        } else if fast_avg < slow_avg {
            -1
        } else {
            return None;
        };
        let crossed = st.side != 0 && side != st.side;
        st.side = side;
        if !crossed {
            return None;
        }
        self.crosses += 1;
        Some(SmaOutput::Cross {
            source,
            symbol,
            up: side > 0,
            close,
            ts_ns,
        })
    }

    fn summary(&self) -> SmaOutput {
        SmaOutput::Tick {
            ticks: self.ticks,
            candles: self.candles,
            crosses: self.crosses,
            lost: self.lost,
        }
    }
}

impl App for SmaSignals {
    type Output = SmaOutput;

    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn on_event(&mut self, event: &Event, cx: &mut Context<'_, SmaOutput>) {
        match event.kind {
            EventKind::Started { .. } => {
                cx.every(TICK_TIMER, self.config.tick_ns, self.config.tick_budget_ns);
            }
            EventKind::Candle { source, candle, .. } => {
                if let Some(out) = self.on_candle(source, candle.symbol, candle.close, candle.ts_ns)
                {
                    cx.emit(out);
                }
            }
            EventKind::CandlesLost { lost, .. } => self.lost += lost,
            EventKind::Timer {
                timer: TICK_TIMER, ..
            } => {
                self.ticks += 1;
                let every = self.config.summary_every as u64;
                if every > 0 && self.ticks.is_multiple_of(every) {
                    cx.emit(self.summary());
                }
            }
            EventKind::Reconfigured { .. } if std::mem::take(&mut self.rearm) => {
                cx.every(TICK_TIMER, self.config.tick_ns, self.config.tick_budget_ns);
            }
            EventKind::Shutdown => cx.emit(self.summary()),
            _ => {}
        }
    }

    fn reconfigure(&mut self, config: &[u8]) -> Result<(), String> {
        let config: SmaConfig = postcard::from_bytes(config)
            .map_err(|e| format!("the new sma config does not decode: {e}"))?;
        self.apply(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crosses_are_detected_against_a_naive_average() {
        let mut app = SmaSignals::new(SmaConfig {
            fast: 3,
            slow: 5,
            symbols: 2,
            ..SmaConfig::default()
        })
        .unwrap();
        let prices: Vec<f64> = (0..200)
            .map(|i| 100.0 + ((i as f64) * 0.3).sin() * 5.0)
            .collect();
        let mut last_side = 0i8;
        for (i, &p) in prices.iter().enumerate() {
            let got = app.on_candle(0, 1, p, i as i64);
            if i + 1 < 5 {
                assert!(got.is_none());
                continue;
            }
            let avg = |n: usize| prices[i + 1 - n..=i].iter().sum::<f64>() / n as f64;
            let (f, s) = (avg(3), avg(5));
            let side = if f > s + 1e-9 {
                1
            } else if f < s - 1e-9 {
                -1
            } else {
                last_side
            };
            let want_cross = last_side != 0 && side != last_side;
            assert_eq!(got.is_some(), want_cross, "at {i}: fast {f} slow {s}");
            if let Some(SmaOutput::Cross { up, .. }) = got {
                assert_eq!(up, side > 0);
            }
            last_side = side;
        }
        assert!(
            app.crosses > 5,
            "a sine wave crosses often: {}",
            app.crosses
        );
        // One absurd print corrupts the averages only while it is in the window.
        let crosses = app.crosses;
        let _ = app.on_candle(0, 1, 1e308, 0);
        for (i, &p) in prices.iter().enumerate() {
            let _ = app.on_candle(0, 1, p, i as i64);
        }
        assert!(
            app.crosses - crosses > 5,
            "crosses after an outlier: {}",
            app.crosses - crosses
        );
        assert_eq!(app.on_candle(0, 7, 1.0, 0), None, "symbol beyond capacity");
        assert_eq!(app.ignored, 1);
    }
}

#[cfg(test)]
mod reconfigure_tests {
    use super::*;
    use tickloop_app::Action;

    fn event(at: u64, kind: EventKind) -> Event {
        Event { at, kind }
    }

    #[test]
    fn new_parameters_apply_and_bad_ones_change_nothing() {
        let mut app = SmaSignals::new(SmaConfig {
            fast: 2,
            slow: 4,
            symbols: 4,
            ..SmaConfig::default()
        })
        .unwrap();
        for i in 0..10 {
            let _ = app.on_candle(0, 1, 100.0 + i as f64, i);
        }
        let bad = SmaConfig {
            fast: 5,
            slow: 5,
            ..app.config().clone()
        };
        let err = app
            .reconfigure(&postcard::to_allocvec(&bad).unwrap())
            .unwrap_err();
        assert!(err.contains("fast = 5 and slow = 5"), "{err}");
        assert_eq!(app.config().slow, 4, "a refused config changes nothing");
        assert!(app.reconfigure(b"\xff\xff\xff").is_err());

        let good = SmaConfig {
            fast: 3,
            slow: 6,
            tick_ns: 5 * MILLIS,
            ..app.config().clone()
        };
        app.reconfigure(&postcard::to_allocvec(&good).unwrap())
            .unwrap();
        assert_eq!(app.config(), &good);
        assert_eq!(app.candles, 10, "counters carry on");
        // The new windows warm up again: no cross before 6 closes.
        for i in 0..5 {
            assert_eq!(app.on_candle(0, 1, 100.0 - i as f64, i), None);
        }
        // The changed tick period is re-armed at `Reconfigured`, once.
        let mut actions = Vec::with_capacity(4);
        let mut dropped = 0;
        let ev = event(7, EventKind::Reconfigured { generation: 2 });
        app.on_event(&ev, &mut Context::new(7, &mut actions, &mut dropped));
        assert_eq!(
            actions,
            vec![Action::SetPeriodic {
                timer: TICK_TIMER,
                first: 7 + 5 * MILLIS,
                period: 5 * MILLIS,
                budget: good.tick_budget_ns,
            }]
        );
        actions.clear();
        app.on_event(&ev, &mut Context::new(7, &mut actions, &mut dropped));
        assert!(actions.is_empty(), "nothing to re-arm the second time");
    }
}
