//! tickloop's runtime: the layer that owns every source of events.
//!
//! Today it holds the shared-memory candle ring ([`ring`]) and the few system calls the ring
//! needs ([`sys`]). The loop itself (drivers, clock, timers, child processes, file polling,
//! signals, lock, status, telemetry, journal, metrics) joins it module by module; each source
//! of events is one module here.
//!
//! It never contains trading logic: strategies, orders and risk live in `tickloop-strategy`.

#[cfg(not(loom))]
pub mod adapter;
#[cfg(not(loom))]
pub mod alloc_count;
#[cfg(not(loom))]
pub mod app;
pub mod clock;
/// The SIGBUS handler that names the ring and marks the status file `crashed`.
#[cfg(not(loom))]
pub mod crash;
#[cfg(not(loom))]
pub mod driver;
#[cfg(not(loom))]
pub mod event_loop;
#[cfg(not(loom))]
pub mod host;
#[cfg(not(loom))]
pub mod journal;
#[cfg(not(loom))]
pub mod lock;
#[cfg(not(loom))]
pub mod metrics;
#[cfg(not(loom))]
pub mod replay;
pub mod ring;
/// A finite in-memory series of candles as a loop source (backtests).
#[cfg(not(loom))]
pub mod series;
#[cfg(not(loom))]
pub mod signals;
#[cfg(not(loom))]
pub mod status;
pub mod sync;
#[cfg(not(loom))]
pub mod sys;
#[cfg(not(loom))]
pub mod systemd;
#[cfg(not(loom))]
pub mod telemetry;
#[cfg(not(loom))]
pub mod timer;
