//! tickloop strategies (not built yet).
//!
//! This crate will own the `Strategy` trait and its context, orders and their explicit states,
//! positions and PnL accounting, pre-trade risk checks, the paper broker, and the example
//! strategies. It will be pure application logic: it never reads a clock, never spawns a thread,
//! and never allocates per event.
