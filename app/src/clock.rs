//! The loop's clock: [`Nanos`] on CLOCK_MONOTONIC, read once per loop iteration by the driver
//! and handed to everything else as `now`. Also the simulated clock for tests and replay.
//!
//! Nothing outside the driver reads a clock; the app only ever sees the `now` it is given.
//! A clock that goes backwards is a broken invariant and aborts loudly.

/// Nanoseconds on the loop's clock (CLOCK_MONOTONIC, or virtual time in simulation).
pub type Nanos = u64;

pub const MICROS: Nanos = 1_000;
pub const MILLIS: Nanos = 1_000_000;
pub const SECONDS: Nanos = 1_000_000_000;
