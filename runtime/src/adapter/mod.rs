//! Broker and exchange adapters: programs in any language, run as child processes, that speak
//! the framed JSON protocol of `docs/adapter-protocol.md` on their stdin and stdout. To the
//! loop an adapter is one more source of events; nothing about it can block the loop, and
//! every failure becomes an event naming its cause.
//!
//! It owns the adapter processes (spawned, watched, restarted, stopped and reaped here) and
//! everything between them and the app. It never blocks the loop's thread while the loop
//! runs, never allocates per message in steady state, never trusts an adapter (a malicious
//! one can get itself killed and restarted, never crash the engine), and never lets a request
//! end silently.
//!
//! Layers, sans IO below IO (as quinn-proto and quinn):
//! - the app's side, [`AdapterRequest`] out and [`AdapterEvent`] in (all `Copy`), is
//!   `tickloop_app::venue`, re-exported here.
//! - [`protocol`]: frames and messages, encoded into and decoded from fixed buffers.
//! - [`session`]: one adapter's state machine: handshake, in-flight table with deadlines on a
//!   [`crate::timer::TimerWheel`], pings, faults, backoff. No fds, no clock.
//! - [`stderr`]: an adapter's stderr as bounded, rate-limited log lines (`tracing`).
//! - `process`: the system calls: spawn with three non-blocking close-on-exec pipes, pidfds,
//!   reads, writes, signals, reaping.
//! - [`host`]: the IO layer: [`AdapterHost`] moves bytes between processes and sessions and
//!   joins the loop as one `FdSource` and one `Service` ([`SharedHost`]); the app's outputs
//!   reach it through an [`AdapterHandle`].
//! - [`config`]: the `[adapters]` configuration and its checks.
//!
//! Wiring it into an engine:
//!
//! ```no_run
//! # use tickloop_runtime::adapter::*;
//! # use tickloop_runtime::event_loop::*;
//! # use tickloop_app::*;
//! # struct MyApp;
//! # impl App for MyApp { type Output = AdapterRequest; fn name(&self) -> &'static str { "x" }
//! #   fn on_event(&mut self, _: &Event, _: &mut Context<'_, AdapterRequest>) {} }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config: AdapterHostConfig = toml::from_str(r#"
//!     symbols = ["AAPL", "MSFT"]
//!     [[adapter]]
//!     name = "paper"
//!     command = ["tickloop", "adapter", "paper", "--ring", "candles"]
//! "#)?;
//! let host = SharedHost::new(AdapterHost::new(&config)?); // checks, finds programs
//! let loop_config = LoopConfig::default();
//! let builder = LoopBuilder { config: &loop_config, rings: vec![], journal: None, app_config: vec![], program: "mybot" };
//! let mut event_loop = EventLoop::new(builder, MyApp, host.handle())?;
//! host.install(&mut event_loop)?; // one fd source + one service
//! event_loop.run()?; // adapters start with the loop and stop (gracefully) with it
//! # Ok(()) }
//! ```

pub mod config;
pub mod host;
mod process;
pub mod protocol;
pub mod session;
pub mod stderr;

pub use config::{AdapterConfig, AdapterHostConfig, AdapterSetupError, ExitWatch, MAX_ADAPTERS};
pub use host::{AdapterHandle, AdapterHost, SharedHost};
pub use session::{AdapterState, AdapterStats, SymbolTable};
pub use tickloop_app::venue::{
    AdapterEvent, AdapterId, AdapterRequest, Capabilities, DownCause, ErrorCode, ExitStatus,
    FailReason, Fault, FillFault, Name, OrderStatus, OrderType, Request, RequestError, RequestId,
    RequestKind, Side, TimeInForce, TradeId, MAX_REQUEST_ID,
};
