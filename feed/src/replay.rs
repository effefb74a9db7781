//! Replay of a validated [`Dataset`] into a ring: symbols registered first (all or none), then
//! every candle in file order, sealed, at a [`Pace`]: as fast as possible, at the speed of the
//! candles' own timestamps, or N times that.
//!
//! It owns pacing and the writer's heartbeat while it runs. It never changes a candle's time or
//! prices (the ring carries the bar's own `ts_ns`), never reorders, and never waits for readers:
//! a reader more than a ring's worth behind is lapped and told so by the ring (`Overrun`).

use crate::Dataset;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tickloop_ring::sys;
use tickloop_ring::{info, verify, Candle, RingError, Writer};

/// How fast a replay publishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as the writer goes.
    Asap,
    /// Candle `i` is published `ts[i] - ts[0]` after the first.
    RealTime,
    /// N times real time: candle `i` is published `(ts[i] - ts[0]) / N` after the first.
    Speed(f64),
}

impl Pace {
    /// Seconds a whole replay of `span_ns` of candle time should take (0 for `Asap`).
    pub fn duration_of(self, span_ns: i64) -> f64 {
        match self {
            Pace::Asap => 0.0,
            Pace::RealTime => span_ns as f64 / 1e9,
            Pace::Speed(n) => span_ns as f64 / 1e9 / n,
        }
    }

    fn speed(self) -> Option<f64> {
        match self {
            Pace::Asap => None,
            Pace::RealTime => Some(1.0),
            Pace::Speed(n) => Some(n),
        }
    }
}

impl std::str::FromStr for Pace {
    type Err = String;
    fn from_str(s: &str) -> Result<Pace, String> {
        match s {
            "asap" => Ok(Pace::Asap),
            "real" => Ok(Pace::RealTime),
            _ => s
                .strip_prefix('x')
                .and_then(|n| n.parse::<f64>().ok())
                .filter(|n| n.is_finite() && *n > 0.0)
                .map(Pace::Speed)
                .ok_or_else(|| {
                    format!(
                        "{s:?} is not a pace: use asap, real, or xN for N times real time (x60, x0.5)"
                    )
                }),
        }
    }
}

impl std::fmt::Display for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pace::Asap => f.write_str("asap"),
            Pace::RealTime => f.write_str("real time"),
            Pace::Speed(n) => write!(f, "x{n}"),
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayReport {
    /// Candles published.
    pub published: u64,
    /// Symbols of the dataset (all registered in the ring).
    pub symbols: usize,
    /// Wall-clock seconds from the first publish to the last.
    pub seconds: f64,
    /// Time of the first and last candle published (ns since the epoch).
    pub first_ts_ns: i64,
    pub last_ts_ns: i64,
    /// Ring position of the first candle published.
    pub first_position: u64,
    pub epoch: u64,
    /// Stopped by the stop flag before the end of the dataset.
    pub stopped: bool,
}

impl ReplayReport {
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.published as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Register the dataset's symbols in the ring and return their ring ids (indexed like
/// `dataset.symbols`). If they cannot all fit, none is added.
pub fn register_symbols(dataset: &Dataset, writer: &mut Writer) -> Result<Vec<u32>, RingError> {
    let (capacity, count) = writer.symbol_room();
    if count as usize + dataset.symbols.len() > capacity as usize {
        let known = info::inspect(writer.path(), usize::MAX)?.symbol_names;
        let new = dataset
            .symbols
            .iter()
            .filter(|s| !known.contains(s))
            .count();
        if count as usize + new > capacity as usize {
            return Err(RingError::SymbolsFull {
                path: writer.path().to_owned(),
                capacity,
            });
        }
    }
    dataset.symbols.iter().map(|s| writer.symbol(s)).collect()
}

/// Publish every candle of `dataset` into `writer`'s ring at `pace`, sealed for verification,
/// until the end or until `stop` is set. `progress` is called about every 50 ms with the
/// number published so far, and once at the end.
pub fn replay(
    dataset: &Dataset,
    writer: &mut Writer,
    pace: Pace,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<ReplayReport, RingError> {
    let ids = register_symbols(dataset, writer)?;
    let first_position = writer.next_position();
    let t0 = dataset.candles.first().map_or(0, |c| c.ts_ns);
    let speed = pace.speed();
    let start = sys::monotonic_ns();
    let mut last_housekeeping = start;
    let mut published: u64 = 0;
    let mut stopped = false;
    let mut last_ts = t0;
    let mut housekeeping = |writer: &mut Writer, published: u64, force: bool| {
        let now = sys::monotonic_ns();
        if force || now - last_housekeeping >= 50_000_000 {
            last_housekeeping = now;
            writer.heartbeat(sys::realtime_ns());
            progress(published);
        }
    };
    for candle in &dataset.candles {
        if let Some(speed) = speed {
            let due = start + ((candle.ts_ns - t0) as f64 / speed) as i64;
            loop {
                let now = sys::monotonic_ns();
                if now >= due || stop.load(Ordering::Relaxed) {
                    break;
                }
                // Sleep in slices, so a stop request and the heartbeat are served meanwhile.
                std::thread::sleep(Duration::from_nanos((due - now).min(50_000_000) as u64));
                housekeeping(writer, published, false);
            }
        }
        if stop.load(Ordering::Relaxed) {
            stopped = true;
            break;
        }
        let pos = writer.next_position();
        let out = Candle {
            symbol: ids[candle.symbol as usize],
            ..*candle
        };
        writer.publish(&verify::seal(pos, out));
        published += 1;
        last_ts = candle.ts_ns;
        if published.is_multiple_of(1024) || speed.is_some() {
            housekeeping(writer, published, false);
        }
    }
    let seconds = (sys::monotonic_ns() - start) as f64 / 1e9;
    housekeeping(writer, published, true);
    Ok(ReplayReport {
        published,
        symbols: dataset.symbols.len(),
        seconds,
        first_ts_ns: t0,
        last_ts_ns: last_ts,
        first_position,
        epoch: writer.epoch(),
        stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_parse() {
        assert_eq!("asap".parse::<Pace>(), Ok(Pace::Asap));
        assert_eq!("real".parse::<Pace>(), Ok(Pace::RealTime));
        assert_eq!("x60".parse::<Pace>(), Ok(Pace::Speed(60.0)));
        assert_eq!("x0.5".parse::<Pace>(), Ok(Pace::Speed(0.5)));
        for bad in ["", "x", "x0", "x-2", "xinf", "fast", "60"] {
            assert!(bad.parse::<Pace>().is_err(), "{bad}");
        }
        assert_eq!(Pace::Speed(2.0).duration_of(4_000_000_000), 2.0);
    }
}
