//! The tiered polling schedule: which symbols to ask an exchange adapter about, and when, so
//! that a cycle of requests fits its time target with a limited number of requests in flight.
//!
//! Symbols sit in three tiers. **Hot** symbols are polled every cycle, **warm** ones every
//! `warm_every` cycles and **cold** ones every `cold_every` cycles (spread across cycles by
//! symbol id, so the load is even). A symbol moves up to hot when its price moved by at least
//! `move_threshold` since its last poll, or while it holds a position; it moves down one tier
//! after `demote_after` polls without a move. Cycles start on a fixed grid of `cycle_ns`; a
//! cycle still unfinished when the next one is due is an overrun (its remaining requests
//! carry over, never twice in flight). Cycle durations go into a histogram.
//!
//! It is a state machine without IO (quinn-proto style): the caller asks it for the next
//! request, tells it each response, and ticks it with the loop's clock. It never reads a
//! clock, never allocates after `new`, and its order is deterministic. [`simulate`] runs it
//! against a model venue that answers every request after a fixed latency.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TieredConfig {
    /// The cycle's time target and grid (ns).
    pub cycle_ns: u64,
    /// Requests in flight at most.
    pub concurrency: u32,
    pub warm_every: u32,
    pub cold_every: u32,
    /// A relative price move (0.005 = 0.5 %) that makes a symbol hot.
    pub move_threshold: f64,
    /// Polls without a move before a symbol moves down a tier.
    pub demote_after: u32,
}

impl Default for TieredConfig {
    fn default() -> Self {
        TieredConfig {
            cycle_ns: 1_500_000_000,
            concurrency: 16,
            warm_every: 4,
            cold_every: 16,
            move_threshold: 0.005,
            demote_after: 8,
        }
    }
}

impl TieredConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.cycle_ns < 1_000_000 {
            return Err(format!(
                "cycle_ns = {} must be at least 1 ms",
                self.cycle_ns
            ));
        }
        if self.concurrency == 0 || self.concurrency > 4096 {
            return Err(format!(
                "concurrency = {} must be 1 to 4096",
                self.concurrency
            ));
        }
        if self.warm_every == 0 || self.cold_every < self.warm_every {
            return Err(format!(
                "warm_every = {} and cold_every = {} must satisfy 1 <= warm_every <= cold_every",
                self.warm_every, self.cold_every
            ));
        }
        if !(self.move_threshold.is_finite() && self.move_threshold > 0.0) {
            return Err(format!(
                "move_threshold = {} must be a positive fraction",
                self.move_threshold
            ));
        }
        if self.demote_after == 0 {
            return Err("demote_after must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Hot,
    Warm,
    Cold,
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    tier: Tier,
    last: f64,
    quiet: u32,
    holding: bool,
    /// Queued or in flight: never twice.
    busy: bool,
}

/// A cycle that did not finish before the next was due.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Overrun {
    pub cycle: u64,
    /// Requests of it still queued or in flight when the next cycle was due.
    pub pending: u32,
}

pub struct TieredPoller {
    config: TieredConfig,
    symbols: Vec<Symbol>,
    queue: VecDeque<u32>,
    in_flight: u32,
    cycle: u64,
    cycle_start: u64,
    next_cycle: u64,
    /// The current cycle has all its answers.
    finished: bool,
    started: bool,
    durations: Histogram<u64>,
    pub overruns: u64,
    pub requests: u64,
    pub responses: u64,
}

impl TieredPoller {
    pub fn new(config: TieredConfig, symbols: u32) -> Result<TieredPoller, String> {
        config.validate()?;
        Ok(TieredPoller {
            symbols: vec![
                Symbol {
                    tier: Tier::Warm,
                    last: f64::NAN,
                    quiet: 0,
                    holding: false,
                    busy: false,
                };
                symbols as usize
            ],
            queue: VecDeque::with_capacity(symbols as usize),
            in_flight: 0,
            cycle: 0,
            cycle_start: 0,
            next_cycle: 0,
            finished: true,
            started: false,
            durations: Histogram::new_with_bounds(1_000, 3_600_000_000_000, 2)
                .expect("valid histogram bounds"),
            overruns: 0,
            requests: 0,
            responses: 0,
            config,
        })
    }

    pub fn config(&self) -> &TieredConfig {
        &self.config
    }
    pub fn tier(&self, symbol: u32) -> Tier {
        self.symbols[symbol as usize].tier
    }
    pub fn cycles(&self) -> u64 {
        self.cycle
    }
    /// Durations of finished cycles (ns).
    pub fn durations(&self) -> &Histogram<u64> {
        &self.durations
    }
    /// When the next cycle is due (for the caller's timer).
    pub fn next_cycle_at(&self) -> u64 {
        self.next_cycle
    }

    /// A position opened or closed: held symbols stay hot.
    pub fn set_holding(&mut self, symbol: u32, holding: bool) {
        if let Some(s) = self.symbols.get_mut(symbol as usize) {
            s.holding = holding;
            if holding {
                s.tier = Tier::Hot;
                s.quiet = 0;
            }
        }
    }

    fn due(&self, id: usize, cycle: u64) -> bool {
        let every = match self.symbols[id].tier {
            Tier::Hot => return true,
            Tier::Warm => self.config.warm_every as u64,
            Tier::Cold => self.config.cold_every as u64,
        };
        (id as u64 + cycle).is_multiple_of(every)
    }

    /// Start cycles that are due at `now`; returns the overrun of the previous cycle, if it
    /// had not finished.
    pub fn tick(&mut self, now: u64) -> Option<Overrun> {
        if self.started && now < self.next_cycle {
            return None;
        }
        let mut overrun = None;
        if self.started && !self.finished {
            self.overruns += 1;
            overrun = Some(Overrun {
                cycle: self.cycle,
                pending: self.queue.len() as u32 + self.in_flight,
            });
        }
        if self.started {
            self.cycle += 1;
            // The grid: skip whole cycles that passed (each was an overrun already counted
            // once above, not once per missed slot).
            let missed = (now - self.next_cycle) / self.config.cycle_ns;
            self.cycle += missed;
            self.next_cycle += (missed + 1) * self.config.cycle_ns;
        } else {
            self.started = true;
            self.next_cycle = now + self.config.cycle_ns;
        }
        self.cycle_start = now;
        for id in 0..self.symbols.len() {
            if !self.symbols[id].busy && self.due(id, self.cycle) {
                self.symbols[id].busy = true;
                self.queue.push_back(id as u32);
            }
        }
        self.finished = self.queue.is_empty() && self.in_flight == 0;
        if self.finished {
            self.durations.saturating_record(1_000);
        }
        overrun
    }

    /// The next symbol to request, while the in-flight limit allows.
    pub fn next_request(&mut self) -> Option<u32> {
        if self.in_flight >= self.config.concurrency {
            return None;
        }
        let id = self.queue.pop_front()?;
        self.in_flight += 1;
        self.requests += 1;
        Some(id)
    }

    /// The answer for `symbol` at `now`: its latest close, or `None` if the request failed
    /// (the symbol is asked again when next due).
    pub fn on_response(&mut self, now: u64, symbol: u32, close: Option<f64>) {
        let Some(s) = self.symbols.get_mut(symbol as usize) else {
            return;
        };
        assert!(s.busy && self.in_flight > 0, "a response with no request");
        s.busy = false;
        self.in_flight -= 1;
        self.responses += 1;
        if let Some(close) = close.filter(|c| c.is_finite() && *c > 0.0) {
            let moved =
                s.last.is_finite() && (close / s.last - 1.0).abs() >= self.config.move_threshold;
            s.last = close;
            if moved || s.holding {
                s.tier = Tier::Hot;
                s.quiet = 0;
            } else {
                s.quiet += 1;
                if s.quiet >= self.config.demote_after {
                    s.quiet = 0;
                    s.tier = match s.tier {
                        Tier::Hot => Tier::Warm,
                        _ => Tier::Cold,
                    };
                }
            }
        }
        if !self.finished && self.queue.is_empty() && self.in_flight == 0 {
            self.finished = true;
            self.durations
                .saturating_record(now.saturating_sub(self.cycle_start).max(1_000));
        }
    }
}

/// What [`simulate`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub symbols: u32,
    pub concurrency: u32,
    pub latency_ns: u64,
    pub cycle_ns: u64,
    pub simulated_ns: u64,
    pub cycles: u64,
    pub overruns: u64,
    pub requests: u64,
    pub cycle_p50_ns: u64,
    pub cycle_p99_ns: u64,
    pub cycle_max_ns: u64,
    pub hot: u32,
    pub warm: u32,
    pub cold: u32,
    /// Every finished cycle's duration (ns), for the bench's percentile files and plot.
    #[serde(skip)]
    pub durations: Histogram<u64>,
}

/// Run the schedule for `duration_ns` of simulated time against a venue that answers each
/// request after `latency_ns`, with prices from a seeded random walk in which about
/// `movers_pct` % of symbols move enough to turn hot at any time.
pub fn simulate(
    config: TieredConfig,
    symbols: u32,
    latency_ns: u64,
    duration_ns: u64,
    movers_pct: f64,
    seed: u64,
) -> Result<SimReport, String> {
    let mut poller = TieredPoller::new(config.clone(), symbols)?;
    let mut rng = crate::synthetic::SplitMix64::new(seed);
    let mut prices: Vec<f64> = (0..symbols).map(|_| 100.0).collect();
    // Requests in flight, answered in order (every request takes the same latency).
    let mut pending: VecDeque<(u64, u32)> = VecDeque::with_capacity(symbols as usize);
    let mut now = 0u64;
    while now <= duration_ns {
        poller.tick(now);
        while let Some(id) = poller.next_request() {
            pending.push_back((now + latency_ns, id));
        }
        // The next thing that happens: an answer or the next cycle.
        let next_answer = pending.front().map(|&(t, _)| t);
        let next_cycle = poller.next_cycle_at();
        match next_answer {
            Some(t) if t <= next_cycle => {
                now = t;
                while let Some(&(t, id)) = pending.front() {
                    if t > now {
                        break;
                    }
                    pending.pop_front();
                    let p = &mut prices[id as usize];
                    let mover = (rng.next_u64() % 10_000) as f64 / 100.0 < movers_pct;
                    let step = if mover { 0.01 } else { 0.0005 };
                    *p *= 1.0 + step * rng.next_signed_unit().signum();
                    poller.on_response(now, id, Some(*p));
                    while let Some(id) = poller.next_request() {
                        pending.push_back((now + latency_ns, id));
                    }
                }
            }
            _ => now = next_cycle,
        }
    }
    let d = poller.durations();
    let count = |tier| (0..symbols).filter(|&s| poller.tier(s) == tier).count() as u32;
    Ok(SimReport {
        symbols,
        concurrency: config.concurrency,
        latency_ns,
        cycle_ns: config.cycle_ns,
        simulated_ns: duration_ns,
        cycles: poller.cycles(),
        overruns: poller.overruns,
        requests: poller.requests,
        cycle_p50_ns: d.value_at_quantile(0.5),
        cycle_p99_ns: d.value_at_quantile(0.99),
        cycle_max_ns: d.max(),
        hot: count(Tier::Hot),
        warm: count(Tier::Warm),
        cold: count(Tier::Cold),
        durations: d.clone(),
    })
}

/// The smallest concurrency (1..=max) with no overrun, and every run of the sweep.
pub fn smallest_concurrency(
    base: &TieredConfig,
    symbols: u32,
    latency_ns: u64,
    duration_ns: u64,
    movers_pct: f64,
    seed: u64,
    max: u32,
) -> Result<(Option<u32>, Vec<SimReport>), String> {
    let mut runs = Vec::new();
    let mut best = None;
    for c in 1..=max {
        let r = simulate(
            TieredConfig {
                concurrency: c,
                ..base.clone()
            },
            symbols,
            latency_ns,
            duration_ns,
            movers_pct,
            seed,
        )?;
        let ok = r.overruns == 0;
        runs.push(r);
        if ok && best.is_none() {
            best = Some(c);
        }
    }
    Ok((best, runs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const FIVE_MINUTES: u64 = 300_000 * MS;

    #[test]
    fn one_hundred_thirty_symbols_fit_a_1_5_s_cycle_with_16_in_flight() {
        let r = simulate(TieredConfig::default(), 130, 300 * MS, FIVE_MINUTES, 2.0, 7).unwrap();
        assert_eq!(r.overruns, 0, "{r:?}");
        assert!(r.cycles >= 199, "{r:?}");
        assert!(r.cycle_max_ns <= 1_500 * MS, "{r:?}");
        // Every symbol was asked about, repeatedly.
        assert!(r.requests > 130 * 10, "{r:?}");
    }

    #[test]
    fn too_little_concurrency_overruns_and_the_sweep_finds_the_smallest_that_does_not() {
        let base = TieredConfig::default();
        let r = simulate(
            TieredConfig {
                concurrency: 1,
                ..base.clone()
            },
            130,
            300 * MS,
            FIVE_MINUTES,
            2.0,
            7,
        )
        .unwrap();
        assert!(r.overruns > 10, "{r:?}");
        let (best, runs) =
            smallest_concurrency(&base, 130, 300 * MS, FIVE_MINUTES, 2.0, 7, 16).unwrap();
        let best = best.expect("16 is enough");
        assert!(best > 1 && best <= 16);
        assert!(runs[best as usize - 2].overruns > 0, "one less overruns");
        assert_eq!(runs[best as usize - 1].overruns, 0);
    }

    #[test]
    fn symbols_move_between_tiers() {
        let mut p = TieredPoller::new(
            TieredConfig {
                demote_after: 2,
                warm_every: 1,
                cold_every: 1,
                ..TieredConfig::default()
            },
            3,
        )
        .unwrap();
        let mut now = 0;
        let mut poll = |p: &mut TieredPoller, prices: [f64; 3]| {
            p.tick(now);
            let mut asked = Vec::new();
            while let Some(id) = p.next_request() {
                asked.push(id);
            }
            for id in asked {
                p.on_response(now + 1, id, Some(prices[id as usize]));
            }
            now += p.config().cycle_ns;
        };
        poll(&mut p, [100.0, 100.0, 100.0]);
        poll(&mut p, [110.0, 100.0, 100.0]);
        assert_eq!(p.tier(0), Tier::Hot, "a move makes it hot");
        poll(&mut p, [110.0, 100.0, 100.0]);
        poll(&mut p, [110.0, 100.0, 100.0]);
        assert_eq!(p.tier(0), Tier::Warm, "quiet polls cool it down");
        assert_eq!(p.tier(1), Tier::Cold);
        p.set_holding(2, true);
        poll(&mut p, [110.0, 100.0, 100.0]);
        poll(&mut p, [110.0, 100.0, 100.0]);
        poll(&mut p, [110.0, 100.0, 100.0]);
        assert_eq!(p.tier(2), Tier::Hot, "a held symbol stays hot");
        assert_eq!(p.overruns, 0);
    }
}
