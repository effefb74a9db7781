//! tickloop's runtime: the event loop and every source and service it drives.
//!
//! - the loop: [`driver`] (epoll, io_uring, simulated; the only code that waits or reads the
//!   clock), [`timer`] (the wheel), [`signals`], [`event_loop`], [`journal`] and [`replay`],
//!   [`series`] (a data file as a source), [`host`] (pinning, SCHED_FIFO, mlock);
//! - the adapter host ([`adapter`]): broker and exchange adapters as child processes;
//! - [`telemetry`]: the bounded sink the loop writes its typed telemetry into;
//! - [`limits`]: every limit of the above, in one place.
//!
//! The operating services that run on the loop's tick (the lock, the status file, systemd,
//! the metrics page) are `tickloop-ops`, above this crate.
//!
//! It builds on `tickloop-ring` (the shared-memory ring it reads) and `tickloop-app` (the
//! interface its apps implement). It never contains trading logic: strategies, orders and
//! risk live in `tickloop-strategy`.

pub mod adapter;
pub mod alloc_count;
pub mod driver;
pub mod event_loop;
pub mod host;
pub mod journal;
pub mod limits;
pub mod replay;
/// A finite in-memory series of candles as a loop source (backtests).
pub mod series;
pub mod signals;
pub mod telemetry;
pub mod timer;
