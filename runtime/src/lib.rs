//! tickloop's runtime: the layer that owns every source of events.
//!
//! Today it holds the shared-memory candle ring ([`ring`]) and the few system calls the ring
//! needs ([`sys`]). The loop itself (drivers, clock, timers, child processes, file polling,
//! signals, lock, status, telemetry, journal, metrics) joins it module by module; each source
//! of events is one module here.
//!
//! It never contains trading logic: strategies, orders and risk live in `tickloop-strategy`.

pub mod clock;
#[cfg(not(loom))]
pub mod host;
pub mod ring;
pub mod sync;
#[cfg(not(loom))]
pub mod sys;
#[cfg(not(loom))]
pub mod timer;
