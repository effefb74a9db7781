//! End-to-end checking of what a reader receives: the **seal** a verifying writer puts in a
//! candle's flags (a 24-bit checksum of the position and every other field), and the
//! [`Verifier`] that `ring tail --verify` and the tests run over a reader's results.
//!
//! The seal lets a reader prove, without trusting the ring, that a candle is whole and belongs
//! to the position it was delivered at. The Python module (feed/python) computes the same seal.

use super::{Candle, ReadResult};
use hdrhistogram::Histogram;

/// Set in `flags` when the low 24 bits hold the seal.
pub const FLAG_SEALED: u32 = 1 << 31;
/// The low 24 bits of `flags`.
pub const SEAL_MASK: u32 = 0x00ff_ffff;

/// The 24-bit seal of `candle` at position `pos` (ignores the seal bits themselves).
pub fn seal_of(pos: u64, candle: &Candle) -> u32 {
    let words = [
        pos,
        candle.ts_ns as u64,
        candle.symbol as u64 | ((candle.flags & !SEAL_MASK) as u64) << 32,
        candle.open.to_bits(),
        candle.high.to_bits(),
        candle.low.to_bits(),
        candle.close.to_bits(),
        candle.volume.to_bits(),
    ];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        h ^= w;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    }
    ((h ^ (h >> 32)) as u32) & SEAL_MASK
}

/// Return `candle` sealed for position `pos`.
pub fn seal(pos: u64, mut candle: Candle) -> Candle {
    candle.flags = (candle.flags & !SEAL_MASK) | FLAG_SEALED;
    candle.flags |= seal_of(pos, &candle);
    candle
}

/// True if the candle carries a seal and the seal matches `pos` and its contents.
pub fn seal_ok(pos: u64, candle: &Candle) -> bool {
    candle.flags & FLAG_SEALED != 0 && candle.flags & SEAL_MASK == seal_of(pos, candle)
}

/// The line `ring tail --verify` ends with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifySummary {
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub torn: u64,
    pub overruns: u64,
}

/// Checks every result a reader returns: seals, position continuity (per writer epoch, and
/// positions continue across epochs), duplicates, and that every gap was announced by an
/// overrun of exactly its size.
pub struct Verifier {
    summary: VerifySummary,
    next_pos: Option<u64>,
    announced_lost: u64,
    unannounced_gaps: u64,
    unsealed: u64,
    writers: u64,
    latency_ns: Histogram<u64>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new()
    }
}

impl Verifier {
    pub fn new() -> Verifier {
        Verifier {
            summary: VerifySummary::default(),
            next_pos: None,
            announced_lost: 0,
            unannounced_gaps: 0,
            unsealed: 0,
            writers: 0,
            // 1 ns .. 60 s at 3 significant digits; allocated once here.
            latency_ns: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    /// Account for one reader result; `now_ns` (CLOCK_REALTIME) measures candle age.
    pub fn observe(&mut self, result: &ReadResult, now_ns: i64) {
        match *result {
            ReadResult::Candle { pos, candle } => self.candle(pos, &candle, now_ns),
            ReadResult::Overrun { lost } => {
                self.summary.overruns += 1;
                self.announced_lost += lost;
                if let Some(next) = self.next_pos.as_mut() {
                    *next += lost;
                }
            }
            ReadResult::NewWriter { .. } => self.writers += 1,
            ReadResult::Empty | ReadResult::RingRemoved => {}
        }
    }

    fn candle(&mut self, pos: u64, candle: &Candle, now_ns: i64) {
        if let Some(expected) = self.next_pos {
            if pos < expected {
                self.summary.duplicates += 1;
                return;
            }
            if pos > expected {
                self.unannounced_gaps += pos - expected;
            }
        }
        self.next_pos = Some(pos + 1);
        if candle.flags & FLAG_SEALED == 0 {
            self.unsealed += 1;
        } else if !seal_ok(pos, candle) {
            self.summary.torn += 1;
            return;
        }
        self.summary.received += 1;
        let age = now_ns.saturating_sub(candle.ts_ns).max(1) as u64;
        self.latency_ns.saturating_record(age);
    }

    /// Totals, with `lost` = every position skipped (announced or not).
    pub fn summary(&self) -> VerifySummary {
        VerifySummary {
            lost: self.announced_lost + self.unannounced_gaps,
            ..self.summary
        }
    }

    /// Positions skipped without an overrun saying so (must be zero).
    pub fn unannounced_gaps(&self) -> u64 {
        self.unannounced_gaps
    }

    /// Candles without a seal (a feed that does not seal cannot be checked for tearing).
    pub fn unsealed(&self) -> u64 {
        self.unsealed
    }

    /// Writer take-overs seen while reading.
    pub fn writers_seen(&self) -> u64 {
        self.writers
    }

    /// Positions consumed so far (received + torn + lost; duplicates repeat a position and do
    /// not count): what `ring tail --count` counts against.
    pub fn consumed(&self) -> u64 {
        let s = self.summary();
        s.received + s.torn + s.lost
    }

    /// Age of candles on arrival (now − ts_ns), for feeds that stamp publish time.
    pub fn latency(&self) -> &Histogram<u64> {
        &self.latency_ns
    }

    /// True when nothing was torn, duplicated, or skipped without an overrun.
    pub fn clean(&self) -> bool {
        self.summary.torn == 0 && self.summary.duplicates == 0 && self.unannounced_gaps == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candle(i: u64) -> Candle {
        Candle {
            ts_ns: 1_700_000_000_000_000_000 + i as i64,
            symbol: (i % 7) as u32,
            flags: 0x0100_0000,
            open: 1.0 + i as f64,
            high: 2.0,
            low: 0.5,
            close: 1.5,
            volume: 10.0,
        }
    }

    #[test]
    fn seal_detects_any_changed_field_or_position() {
        let sealed = seal(42, candle(42));
        assert!(seal_ok(42, &sealed));
        assert!(!seal_ok(43, &sealed), "a candle moved to another position");
        let mut c = sealed;
        c.close = 1.5000001;
        assert!(!seal_ok(42, &c));
        let mut c = sealed;
        c.symbol ^= 1;
        assert!(!seal_ok(42, &c));
        let mut c = sealed;
        c.flags ^= 0x0100_0000;
        assert!(!seal_ok(42, &c));
    }

    #[test]
    fn seal_matches_the_documented_vector() {
        // The same vector is asserted by the Python module's self-test (docs/ring-format.md).
        let c = Candle {
            ts_ns: 1_000,
            symbol: 3,
            flags: 0,
            open: 1.5,
            high: 2.5,
            low: 0.5,
            close: 2.0,
            volume: 100.0,
        };
        assert_eq!(seal_of(7, &c), 0x00d8_48f5);
    }

    #[test]
    fn verifier_counts_gaps_duplicates_and_tears() {
        let mut v = Verifier::new();
        let now = 1_800_000_000_000_000_000;
        for pos in 0..10 {
            v.observe(
                &ReadResult::Candle {
                    pos,
                    candle: seal(pos, candle(pos)),
                },
                now,
            );
        }
        v.observe(&ReadResult::Overrun { lost: 5 }, now);
        v.observe(
            &ReadResult::Candle {
                pos: 15,
                candle: seal(15, candle(15)),
            },
            now,
        );
        assert!(v.clean());
        v.observe(
            &ReadResult::Candle {
                pos: 15,
                candle: seal(15, candle(15)),
            },
            now,
        );
        v.observe(
            &ReadResult::Candle {
                pos: 17,
                candle: seal(17, candle(17)),
            },
            now,
        );
        let mut torn = seal(18, candle(18));
        torn.open = -1.0;
        v.observe(
            &ReadResult::Candle {
                pos: 18,
                candle: torn,
            },
            now,
        );
        let s = v.summary();
        assert_eq!(
            s,
            VerifySummary {
                received: 12,
                lost: 6,
                duplicates: 1,
                torn: 1,
                overruns: 1
            }
        );
        assert_eq!(v.unannounced_gaps(), 1);
        assert!(!v.clean());
    }
}
