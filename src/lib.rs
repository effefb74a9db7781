//! tickloop as a library: the whole engine program (config, run, backtest, replay, status,
//! config check, feeds, adapters) with the strategies a user's crate registers next to the
//! built-in ones. A bot is a few lines:
//!
//! ```no_run
//! use tickloop::strategy::host::{Strategy, StrategyCx};
//! use tickloop::Candle;
//!
//! #[derive(Default)]
//! struct Hold;
//!
//! impl Strategy for Hold {
//!     type Config = ();
//!     const NAME: &'static str = "hold";
//!     fn new(_config: (), _symbols: u32) -> Result<Self, String> {
//!         Ok(Hold)
//!     }
//!     fn on_candle(&mut self, _cx: &mut StrategyCx<'_, '_>, _pos: u64, _candle: &Candle) {}
//!     fn on_config(&mut self, _config: ()) -> Result<(), String> {
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     tickloop::Program::new("mybot").strategy::<Hold>().main()
//! }
//! ```
//!
//! Then `mybot run --config F`, `mybot backtest --strategy hold ...`,
//! `mybot replay --journal F --verify` and `mybot config check F` all know `hold`. See
//! `docs/strategy-guide.md` and the template in `examples/my-bot/`.
//!
//! The modules here parse, wire and present; the loop, the ring, the strategy host and the
//! feeds live in the crates re-exported below. Nothing here runs on the loop's hot path
//! except the output sinks and services each command installs.

mod adapter_cmd;
mod backtest_cmd;
mod cli;
mod config;
mod demo_cmd;
mod doctor_cmd;
mod feed_cmd;
mod interrupt;
mod logging;
mod metrics_cmd;
mod metrics_http;
mod poll_cmd;
mod program;
mod ring_cmd;
mod ring_demo;
mod run_cmd;
mod status_cmd;
mod strategies;
mod top_cmd;

pub use program::Program;

/// The application interface: events, actions, the venue vocabulary, telemetry.
pub use tickloop_app as app;
/// One candle as it travels through the ring.
pub use tickloop_ring::Candle;
/// The strategy host, orders, risk, indicators and the example strategies.
pub use tickloop_strategy as strategy;
