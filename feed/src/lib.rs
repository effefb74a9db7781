//! Producers that write candles into a tickloop ring.
//!
//! Today: [`synthetic`], a seeded random walk over N symbols at a fixed rate or as fast as
//! possible. Replay (CSV, DBN), line-protocol ingest and tiered polling join it later. A feed
//! owns its pacing and its symbols; it never reads from the ring it writes.

pub mod synthetic;
