//! tickloop strategies: pure application logic over the loop's events.
//!
//! - [`host`]: the `Strategy` trait and the host that runs one as an `App`: orders and their
//!   states, positions and PnL, risk checks ([`risk`]), and the paper broker.
//! - [`crossover`] (SMA crossover, backtesting.py's tutorial strategy), [`limit_bracket`]
//!   (limit entries with a stop-loss and take-profit), [`stop_breakout`] (stop entries) and
//!   [`drop_trigger`]: the example strategies.
//! - [`limits`]: every bound of the host's config and tables, in one place.
//! - [`sma`]: a moving-average crossover *signal* app (no orders) that the loop's tests and
//!   benchmarks use as a workload across many symbols.
//!
//! Everything here is deterministic: it never reads a clock, never spawns a thread, never
//! iterates a randomly-seeded map and never allocates per event.

pub mod crossover;
pub mod drop_trigger;
pub mod host;
pub mod indicators;
pub mod limit_bracket;
pub mod limits;
pub mod matching;
pub mod orders;
pub mod risk;
pub mod sma;
pub mod stop_breakout;
