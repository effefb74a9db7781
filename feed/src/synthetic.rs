//! A seeded random-walk feed: deterministic candles for N symbols (`SYN0000`, `SYN0001`, ...),
//! sealed so a verifying reader can prove each one whole, published at a fixed rate or as fast
//! as possible.
//!
//! Same seed, same candles (prices and order; only `ts_ns`, the publish time, differs). It
//! allocates only at start (one price per symbol) and never waits for readers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tickloop_ring::sys;
use tickloop_ring::{verify, Candle, RingError, Writer};

/// SplitMix64: a small, fast, well-distributed generator; the seed fully determines it.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn next_signed_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// The candle generator: one price per symbol, round-robin over symbols.
pub struct RandomWalk {
    rng: SplitMix64,
    prices: Vec<f64>,
    next_symbol: usize,
}

impl RandomWalk {
    pub fn new(symbols: usize, seed: u64) -> RandomWalk {
        let mut rng = SplitMix64::new(seed);
        let prices = (0..symbols.max(1))
            .map(|_| 100.0 * (1.0 + 0.5 * rng.next_signed_unit()))
            .collect();
        RandomWalk {
            rng,
            prices,
            next_symbol: 0,
        }
    }

    /// The next candle (symbol ids are indices into `ids`, the ring's ids for our symbols).
    #[inline]
    pub fn next(&mut self, ts_ns: i64, ids: &[u32]) -> Candle {
        let index = self.next_symbol;
        self.next_symbol = if index + 1 == self.prices.len() {
            0
        } else {
            index + 1
        };
        let open = self.prices[index];
        let step = |rng: &mut SplitMix64| 1.0 + 0.001 * rng.next_signed_unit();
        let close = (open * step(&mut self.rng)).max(0.01);
        let wick_up = open.max(close) * (1.0 + 0.0005 * self.rng.next_signed_unit().abs());
        let wick_down = open.min(close) * (1.0 - 0.0005 * self.rng.next_signed_unit().abs());
        self.prices[index] = close;
        Candle {
            ts_ns,
            symbol: ids[index],
            flags: 0,
            open,
            high: wick_up,
            low: wick_down,
            close,
            volume: (1000.0 * (1.0 + self.rng.next_signed_unit())).round(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SyntheticOptions {
    pub symbols: usize,
    /// Candles to publish; 0 = until stopped.
    pub count: u64,
    /// Candles per second; 0 = as fast as possible.
    pub rate: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SyntheticReport {
    pub published: u64,
    pub seconds: f64,
    pub epoch: u64,
    pub first_position: u64,
}

impl SyntheticReport {
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.published as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Register the feed's symbols in the ring; returns their ids.
pub fn register_symbols(writer: &mut Writer, symbols: usize) -> Result<Vec<u32>, RingError> {
    (0..symbols.max(1))
        .map(|i| writer.symbol(&format!("SYN{i:04}")))
        .collect()
}

/// Publish sealed random-walk candles until `count` is reached or `stop` is set. `progress`
/// is called about every 50 ms with the number published so far.
pub fn run(
    writer: &mut Writer,
    options: &SyntheticOptions,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<SyntheticReport, RingError> {
    let (capacity, _) = writer.symbol_room();
    if options.symbols > capacity as usize {
        return Err(RingError::SymbolsFull {
            path: writer.path().to_owned(),
            capacity,
        });
    }
    let ids = register_symbols(writer, options.symbols)?;
    let mut walk = RandomWalk::new(ids.len(), options.seed);
    let start = sys::monotonic_ns();
    let first_position = writer.next_position();
    let interval_ns = if options.rate > 0.0 {
        1e9 / options.rate
    } else {
        0.0
    };
    let mut published: u64 = 0;
    let mut last_housekeeping = start;
    // Unpaced, the publish time is read once per batch: a clock read per candle would cost as
    // much as the publish itself.
    const UNPACED_BATCH: u64 = 64;
    let mut ts_ns = sys::realtime_ns();
    while options.count == 0 || published < options.count {
        if interval_ns > 0.0 {
            let due = start + (published as f64 * interval_ns) as i64;
            let mut now = sys::monotonic_ns();
            // Long waits sleep in slices of at most 50 ms, so a stop request is seen promptly.
            while due - now > 200_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let nap = (due - now - 100_000).min(50_000_000);
                std::thread::sleep(Duration::from_nanos(nap as u64));
                now = sys::monotonic_ns();
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            while now < due {
                core::hint::spin_loop();
                now = sys::monotonic_ns();
            }
            ts_ns = sys::realtime_ns();
        } else if published.is_multiple_of(UNPACED_BATCH) {
            ts_ns = sys::realtime_ns();
        }
        let pos = writer.next_position();
        let candle = verify::seal(pos, walk.next(ts_ns, &ids));
        writer.publish(&candle);
        published += 1;
        if published.is_multiple_of(1024) || interval_ns >= 1e5 {
            let now = sys::monotonic_ns();
            if now - last_housekeeping >= 50_000_000 {
                last_housekeeping = now;
                writer.heartbeat(sys::realtime_ns());
                progress(published);
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
    }
    writer.heartbeat(sys::realtime_ns());
    progress(published);
    Ok(SyntheticReport {
        published,
        seconds: (sys::monotonic_ns() - start) as f64 / 1e9,
        epoch: writer.epoch(),
        first_position,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_walk_other_seed_other_walk() {
        let ids: Vec<u32> = (0..3).collect();
        let mut a = RandomWalk::new(3, 7);
        let mut b = RandomWalk::new(3, 7);
        let mut c = RandomWalk::new(3, 8);
        let (xa, xb, xc): (Vec<_>, Vec<_>, Vec<_>) = (
            (0..100).map(|_| a.next(0, &ids)).collect(),
            (0..100).map(|_| b.next(0, &ids)).collect(),
            (0..100).map(|_| c.next(0, &ids)).collect(),
        );
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
        for candle in &xa {
            assert!(candle.low <= candle.open.min(candle.close));
            assert!(candle.high >= candle.open.max(candle.close));
            assert!(candle.low > 0.0 && candle.volume >= 0.0);
        }
        assert_eq!(xa[0].symbol, 0);
        assert_eq!(xa[4].symbol, 1);
    }
}
