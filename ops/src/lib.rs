//! tickloop's operating services: what runs beside the loop so that an engine can be operated,
//! each a `Service` on the loop's housekeeping tick or a file other processes read.
//!
//! - [`lock`]: the single-instance lock per (component, account);
//! - [`status`]: the status file, written atomically from the tick;
//! - [`systemd`]: READY / WATCHDOG / STOPPING when `NOTIFY_SOCKET` is set;
//! - [`metrics`]: the shared-memory metrics page (`docs/metrics-format.md`) and its reader;
//! - [`limits`]: their limits, in one place.
//!
//! It builds on `tickloop-runtime` (the loop's `Service` and `LoopView`, the adapter host's
//! handle) and never reads a clock itself: every service is handed the loop's `now`. It never
//! contains trading logic and never serves HTTP (`tickloop metrics serve` does, in its own
//! process).

pub mod limits;
pub mod lock;
pub mod metrics;
pub mod status;
pub mod systemd;
