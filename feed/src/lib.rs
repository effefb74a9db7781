//! Producers that write candles into a tickloop ring, and the data files they read.
//!
//! * [`load`] / [`load_with`]: a whole CSV (backtesting.py's format, Binance klines) or
//!   Databento DBN file, validated, as a [`Dataset`] of candles and symbol names: read once
//!   from any readable stream (a file, a pipe, a FIFO, `/dev/stdin`), within the bounds of
//!   [`LoadOptions`]. This is the API a backtest or demo uses; [`replay`] feeds a dataset into
//!   a ring, paced.
//! * [`ingest`]: JSON lines from external producers over TCP or UDP on loopback.
//! * [`limits`]: every bound of the feeds (a file's candles, lines and bytes; ingest's lines
//!   and producers), in one place.
//! * [`synthetic`]: a seeded random walk over N symbols.
//! * [`tiered`]: the hot/warm/cold polling schedule (sans IO); [`poll`]: the live polling feed,
//!   an app that runs the schedule against an exchange adapter on the loop.
//!
//! A feed owns its pacing and its symbols; it never reads from the ring it writes, and nothing
//! from a bad file ever reaches a ring (files are checked whole first).

mod bounded;
mod csv_file;
pub mod dataset;
mod dbn_file;
pub mod ingest;
pub mod limits;
mod load;
pub mod poll;
pub mod replay;
pub mod synthetic;
pub mod tiered;

pub use csv_file::parse_time;
pub use dataset::{
    check_candle, Dataset, Format, LoadError, LoadOptions, Location, MAX_CANDLES, MAX_FILE_BYTES,
    MAX_LINE_BYTES,
};
pub use load::{detect, load, load_with};
pub use replay::{replay, Pace, ReplayReport};

/// A time in ns since the epoch as `YYYY-MM-DD HH:MM:SS[.fff]` UTC, for reports and errors.
pub fn format_ts(ts_ns: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(ts_ns as i128) else {
        return format!("{ts_ns} ns");
    };
    let (ms, rest) = (t.millisecond(), t.nanosecond() % 1_000_000);
    let base = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    match (ms, rest) {
        (0, 0) => base,
        (_, 0) => format!("{base}.{ms:03}"),
        _ => format!("{base}.{:09}", t.nanosecond()),
    }
}

/// A duration in ns for people: `294 d 06:00:00`, `01:30:00`, `0.250 s`.
pub fn format_span(ns: i64) -> String {
    let s = ns / 1_000_000_000;
    if s == 0 {
        return format!("{:.3} s", ns as f64 / 1e9);
    }
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d} d {h:02}:{m:02}:{sec:02}")
    } else {
        format!("{h:02}:{m:02}:{sec:02}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_print_for_people() {
        assert_eq!(
            super::format_ts(1_492_592_400_000_000_000),
            "2017-04-19 09:00:00"
        );
        assert_eq!(super::format_ts(1_500), "1970-01-01 00:00:00.000001500");
        assert_eq!(super::format_ts(250_000_000), "1970-01-01 00:00:00.250");
        assert_eq!(super::format_span(25_423_200_000_000_000), "294 d 06:00:00");
        assert_eq!(super::format_span(250_000_000), "0.250 s");
    }
}
