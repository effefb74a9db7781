//! Every limit of the feeds, in one place: the default bounds on a data file (its candles, a
//! line, its bytes, a DBN file's metadata) and the ingest server's (a line, its read buffer,
//! its producers), tied together by the assertions below so that changing one that would
//! break another fails the build. The file bounds are defaults: `--max-*` flags override them.
//!
//! It holds numbers only and imports no other module of this crate.

use tickloop_ring::Candle;

/// Default bound on candles per file: 20 million (about 1.2 GiB in memory).
pub const MAX_CANDLES: usize = 20_000_000;
/// Default bound on a CSV line: 64 KiB (a bar's row is under 200 bytes).
pub const MAX_LINE_BYTES: u64 = 64 << 10;
/// Default bound on a file: 16 GiB (20 million Binance rows are about 3 GiB).
pub const MAX_FILE_BYTES: u64 = 16 << 30;
/// Bytes allowed for a DBN file's metadata header (symbology can be large).
pub const MAX_METADATA: u64 = 256 << 20;

/// Longest line `feed ingest` accepts, in bytes (without the newline).
pub const MAX_INGEST_LINE: usize = 4096;
/// Bytes `feed ingest` reads from a socket at once.
pub const INGEST_READ_BUFFER: usize = 64 << 10;
/// Default bound on simultaneous TCP producers.
pub const MAX_CLIENTS: usize = 64;
/// How many bad lines the ingest report quotes.
pub const QUOTED_BAD_LINES: usize = 5;

const _: () = {
    // A line, and a DBN file's metadata, fit in a file; the candles of a file at the default
    // bound fit in memory on a small board (under 2 GiB).
    assert!(MAX_LINE_BYTES <= MAX_FILE_BYTES && MAX_METADATA <= MAX_FILE_BYTES);
    assert!(MAX_CANDLES as u64 * core::mem::size_of::<Candle>() as u64 <= 2 << 30);
    // One read holds a whole ingest line (and a UDP datagram of one).
    assert!(INGEST_READ_BUFFER > MAX_INGEST_LINE);
    assert!(QUOTED_BAD_LINES >= 1 && MAX_CLIENTS >= 1);
};
