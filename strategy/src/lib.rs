//! tickloop strategies: pure application logic over the loop's events.
//!
//! Today it holds [`sma`], a moving-average crossover signal app that the loop's tests,
//! benchmarks and `tickloop run` use as a real workload. The `Strategy` trait, orders and
//! their states, positions, risk checks and the paper broker come next.
//!
//! Everything here is deterministic: it never reads a clock, never spawns a thread, never
//! iterates a randomly-seeded map and never allocates per event.

pub mod sma;
