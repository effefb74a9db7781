//! The shared-memory candle ring: one writer process publishes 64-byte candles into a
//! preallocated segment under /dev/shm (or hugetlbfs); any number of reader processes follow it,
//! each with its own cursor in its own memory.
//!
//! * [`protocol`]: the seqlock and doorbell orderings (model-checked with loom).
//! * [`layout`]: the segment's bytes; [`segment`]: files, validation, mappings.
//! * [`Writer`] / [`Reader`]: the two roles; [`WaitStrategy`]: how a reader waits.
//! * [`verify`]: the candle seal and the verifier behind `ring tail --verify`.
//! * [`info`]: what `ring info` reports.
//!
//! The ring never blocks its writer, never allocates after attach, and never hands out a torn
//! or overwritten candle: a reader that is lapped gets `Overrun { lost }` with the exact count.
//!
//! The crate needs no event loop: feeds write with it, and the engine's loop reads with it.
//! Beside the ring it holds the few system calls it makes ([`sys`]), the atomics its protocols
//! are written against ([`sync`], swapped for loom's under `--cfg loom`) and the SIGBUS
//! handler that names a ring truncated under a process ([`crash`]).

/// The SIGBUS handler that names the ring and marks the status file `crashed`.
#[cfg(not(loom))]
pub mod crash;
pub mod sync;
#[cfg(not(loom))]
pub mod sys;

pub mod protocol;

#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
pub mod info;
#[cfg(not(loom))]
pub mod layout;
#[cfg(not(loom))]
mod reader;
#[cfg(not(loom))]
pub mod segment;
#[cfg(not(loom))]
pub mod verify;
#[cfg(not(loom))]
mod writer;

#[cfg(not(loom))]
pub use error::{Bytes, RingError};
#[cfg(not(loom))]
pub use reader::{
    ReadResult, Reader, ReaderOptions, ReaderStats, Start, Unregistered, WaitStrategy,
};
#[cfg(not(loom))]
pub use segment::{create, ring_path, shm_path, CreateOptions};
#[cfg(not(loom))]
pub use writer::Writer;

/// One candle as it travels through the ring (the slot's `seq` word is not part of it).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Candle {
    /// Bar time, or for a live feed the time it was published: nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// Index into the ring's symbol table.
    pub symbol: u32,
    /// Feed-defined bits; the top byte is reserved for tickloop (see [`verify`]).
    pub flags: u32,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
}

impl Candle {
    #[inline(always)]
    pub fn to_words(&self) -> [u64; protocol::PAYLOAD_WORDS] {
        [
            self.ts_ns as u64,
            self.symbol as u64 | (self.flags as u64) << 32,
            self.open.to_bits(),
            self.high.to_bits(),
            self.low.to_bits(),
            self.close.to_bits(),
            self.volume.to_bits(),
        ]
    }

    #[inline(always)]
    pub fn from_words(w: &[u64; protocol::PAYLOAD_WORDS]) -> Candle {
        Candle {
            ts_ns: w[0] as i64,
            symbol: w[1] as u32,
            flags: (w[1] >> 32) as u32,
            open: f64::from_bits(w[2]),
            high: f64::from_bits(w[3]),
            low: f64::from_bits(w[4]),
            close: f64::from_bits(w[5]),
            volume: f64::from_bits(w[6]),
        }
    }
}
