//! CSV bars: backtesting.py's format and Binance's klines, read with the `csv` crate into a
//! [`Dataset`] (one symbol per file).
//!
//! * **backtesting.py**: a header naming `Open`, `High`, `Low`, `Close` and optionally `Volume`
//!   (any case, any order, other columns ignored), and a time column: the one named `time`,
//!   `date`, `datetime` or `timestamp`, else an unnamed first column (what `DataFrame.to_csv`
//!   writes). Times are `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS[.fffffffff]]` (or with `T`),
//!   optionally ending in `Z` or `+HH:MM`; without an offset they are UTC.
//! * **Binance klines**: 12 columns (open time, open, high, low, close, volume, close time,
//!   quote volume, trades, taker buy base, taker buy quote, ignore), with or without a header
//!   line. The open time is milliseconds since the epoch, or microseconds in the newer spot
//!   dumps (from 2025): each row's value is read as microseconds when it is at least 10^14
//!   (no millisecond time before the year 5138 is that large, no microsecond time after 1973
//!   is smaller), else as milliseconds.
//!
//! The symbol is `--symbol` or the file name: its stem for backtesting.py files
//! (`EURUSD.csv` → `EURUSD`), the part before the first `-` for Binance dumps
//! (`BTCUSDT-1m-2024-01.csv` → `BTCUSDT`). A time that is a real date but outside what
//! nanoseconds since 1970 in an `i64` hold (1677-09-21 to 2262-04-11) is refused as out of
//! range, not as unreadable.
//!
//! This module only parses the stream it is handed (read once, bounded by
//! [`crate::bounded`]); the checks are [`crate::dataset::Builder`]'s, and it never opens a
//! file or writes anywhere.

use crate::dataset::{read_error, Builder, Dataset, Format, LoadError, LoadOptions, Location};
use std::io::Read;
use std::path::Path;
use tickloop_ring::Candle;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::parsing::Parsed;

const TIME_COLUMNS: [&str; 4] = ["time", "date", "datetime", "timestamp"];

pub(crate) fn load(
    path: &Path,
    stream: impl Read,
    format: Format,
    options: &LoadOptions,
) -> Result<Dataset, LoadError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(stream);
    let symbol = match &options.symbol {
        Some(s) => s.clone(),
        None => symbol_from_name(path, format),
    };
    let mut builder = Builder::new(path, options.max_candles);
    let id = builder.symbol(
        &symbol,
        Location::File,
        "name the symbol with --symbol NAME (1 to 31 bytes)",
    )?;
    let mut columns: Option<Columns> = None;
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(path, e)),
        }
        let line = record.position().map_or(0, |p| p.line());
        let at = Location::Line(line);
        if columns.is_none() {
            let (c, is_header) = match format {
                Format::Binance => binance_columns(path, &record, at)?,
                _ => (backtesting_columns(path, &record, at)?, true),
            };
            columns = Some(c);
            if is_header {
                continue;
            }
        }
        let cols = columns.as_ref().expect("set above");
        if record.len() != cols.width {
            return Err(LoadError::new(
                path,
                at,
                None,
                format!(
                    "{} fields, but {} {}",
                    record.len(),
                    if format == Format::Binance {
                        "Binance klines have"
                    } else {
                        "the header has"
                    },
                    cols.width
                ),
                "every row needs the same columns as the header",
            ));
        }
        let number = |index: usize, name: &str| -> Result<f64, LoadError> {
            let text = &record[index];
            if text.is_empty() {
                return Err(LoadError::new(
                    path,
                    at,
                    Some(name),
                    "the value is missing",
                    "fill it in or remove the row",
                ));
            }
            text.parse::<f64>().map_err(|_| {
                LoadError::new(
                    path,
                    at,
                    Some(name),
                    format!("{text:?} is not a number"),
                    "correct or remove the row",
                )
            })
        };
        let time_text = &record[cols.time];
        let ts_ns = match format {
            Format::Binance => binance_time(time_text),
            _ => time_of(time_text),
        }
        .map_err(|bad| {
            let problem = match bad {
                BadTime::OutOfRange => format!("{time_text:?} is {}", out_of_range()),
                BadTime::Unreadable if format == Format::Binance => format!(
                    "{time_text:?} is not an open time in milliseconds or microseconds since 1970"
                ),
                BadTime::Unreadable => format!(
                    "{time_text:?} is not a date or time (YYYY-MM-DD[ HH:MM[:SS[.fff]]][Z|+HH:MM])"
                ),
            };
            LoadError::new(
                path,
                at,
                Some(&cols.time_name),
                problem,
                "correct or remove the row",
            )
        })?;
        let candle = Candle {
            ts_ns,
            symbol: id,
            flags: 0,
            open: number(cols.open, &cols.names[0])?,
            high: number(cols.high, &cols.names[1])?,
            low: number(cols.low, &cols.names[2])?,
            close: number(cols.close, &cols.names[3])?,
            volume: match cols.volume {
                Some(i) => number(i, &cols.names[4])?,
                None => 0.0,
            },
        };
        let [o, h, l, c, v] = &cols.names;
        builder.push(candle, at, [&cols.time_name, o, h, l, c, v])?;
    }
    if columns.is_none() {
        return Err(LoadError::new(
            path,
            Location::File,
            None,
            "the file is empty",
            "check that it is the file you meant",
        ));
    }
    Ok(builder.finish(format))
}

/// Column indices, and the names errors use for them.
struct Columns {
    width: usize,
    time: usize,
    time_name: String,
    open: usize,
    high: usize,
    low: usize,
    close: usize,
    volume: Option<usize>,
    names: [String; 5],
}

fn backtesting_columns(
    path: &Path,
    header: &csv::StringRecord,
    at: Location,
) -> Result<Columns, LoadError> {
    let find = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let found = || header.iter().collect::<Vec<_>>().join(",");
    let need = |name: &str| {
        find(name).ok_or_else(|| {
            LoadError::new(
                path,
                at,
                Some(name),
                format!("no {name} column in the header ({:?})", found()),
                "backtesting.py's format has a header time,Open,High,Low,Close[,Volume] (the time column may be unnamed); for Binance klines use --format binance",
            )
        })
    };
    let (open, high, low, close) = (need("Open")?, need("High")?, need("Low")?, need("Close")?);
    let time = TIME_COLUMNS
        .iter()
        .find_map(|n| find(n))
        .or_else(|| header.get(0).filter(|h| h.is_empty()).map(|_| 0))
        .ok_or_else(|| {
            LoadError::new(
                path,
                at,
                Some("time"),
                format!("no time column in the header ({:?})", found()),
                "name it time, date, datetime or timestamp, or leave the first column's name empty",
            )
        })?;
    let name = |i: usize| header.get(i).unwrap_or_default().to_owned();
    let volume = find("Volume");
    Ok(Columns {
        width: header.len(),
        time,
        time_name: if header[time].is_empty() {
            "time (first column)".to_owned()
        } else {
            name(time)
        },
        open,
        high,
        low,
        close,
        volume,
        names: [
            name(open),
            name(high),
            name(low),
            name(close),
            volume.map(name).unwrap_or_default(),
        ],
    })
}

/// Binance's fixed columns; the first record is a header if its first field is not a number.
fn binance_columns(
    path: &Path,
    first: &csv::StringRecord,
    at: Location,
) -> Result<(Columns, bool), LoadError> {
    if first.len() != 12 {
        return Err(LoadError::new(
            path,
            at,
            None,
            format!("{} fields, but Binance klines have 12", first.len()),
            "check the file, or use --format csv for backtesting.py's format",
        ));
    }
    let is_header = first[0].parse::<i64>().is_err();
    let names = ["open", "high", "low", "close", "volume"].map(str::to_owned);
    Ok((
        Columns {
            width: 12,
            time: 0,
            time_name: "open_time".to_owned(),
            open: 1,
            high: 2,
            low: 3,
            close: 4,
            volume: Some(5),
            names,
        },
        is_header,
    ))
}

/// Why a time field is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BadTime {
    /// Not a time in the format at all.
    Unreadable,
    /// A real time, but not one ns since 1970 in an i64 can hold.
    OutOfRange,
}

/// What an out-of-range time is, with the range tickloop holds.
pub(crate) fn out_of_range() -> String {
    format!(
        "a date out of range: times must lie between {} and {} UTC (nanoseconds since 1970 in 64 bits)",
        crate::format_ts(i64::MIN),
        crate::format_ts(i64::MAX)
    )
}

/// Binance open time: milliseconds, or microseconds when at least 10^14 (see the module doc).
fn binance_time(text: &str) -> Result<i64, BadTime> {
    let value: i64 = text
        .parse()
        .ok()
        .filter(|v| *v >= 0)
        .ok_or(BadTime::Unreadable)?;
    if value >= 100_000_000_000_000 {
        value.checked_mul(1_000)
    } else {
        value.checked_mul(1_000_000)
    }
    .ok_or(BadTime::OutOfRange)
}

const TIME_FORMAT: &[BorrowedFormatItem<'static>] = format_description!(
    version = 2,
    "[year]-[month]-[day][optional [[first [T][ ]][hour]:[minute][optional [:[second][optional [.[subsecond]]]]]]][optional [[first [Z][[offset_hour sign:mandatory]:[offset_minute]]]]]"
);

/// A backtesting.py time (see the module doc) as ns since the epoch; `None` if it is not one,
/// or is out of the range an `i64` of ns holds.
pub fn parse_time(text: &str) -> Option<i64> {
    time_of(text).ok()
}

fn time_of(text: &str) -> Result<i64, BadTime> {
    let bad = BadTime::Unreadable;
    let mut parsed = Parsed::new();
    let rest = parsed
        .parse_items(text.as_bytes(), TIME_FORMAT)
        .map_err(|_| bad)?;
    if !rest.is_empty() {
        return Err(bad);
    }
    let (year, month, day) = (
        parsed.year().ok_or(bad)?,
        parsed.month().ok_or(bad)?,
        parsed.day().ok_or(bad)?,
    );
    let date = time::Date::from_calendar_date(year, month, day.get()).map_err(|_| bad)?;
    let clock = time::Time::from_hms_nano(
        parsed.hour_24().unwrap_or(0),
        parsed.minute().unwrap_or(0),
        parsed.second().unwrap_or(0),
        parsed.subsecond().unwrap_or(0),
    )
    .map_err(|_| bad)?;
    let offset = match parsed.offset_hour() {
        Some(h) => time::UtcOffset::from_hms(h, parsed.offset_minute_signed().unwrap_or(0), 0)
            .map_err(|_| bad)?,
        None => time::UtcOffset::UTC,
    };
    let ns = time::PrimitiveDateTime::new(date, clock)
        .assume_offset(offset)
        .unix_timestamp_nanos();
    i64::try_from(ns).map_err(|_| BadTime::OutOfRange)
}

fn symbol_from_name(path: &Path, format: Format) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match format {
        Format::Binance => stem.split('-').next().unwrap_or_default().to_owned(),
        _ => stem,
    }
}

fn csv_error(path: &Path, e: csv::Error) -> LoadError {
    let line = e.position().map(|p| p.line());
    let at = line.map_or(Location::File, Location::Line);
    match e.into_kind() {
        csv::ErrorKind::Io(e) => read_error(path, e),
        csv::ErrorKind::Utf8 { pos, .. } => LoadError::new(
            path,
            pos.map_or(at, |p| Location::Line(p.line())),
            None,
            "not UTF-8 text",
            "check that it is a CSV file, or name its format with --format",
        ),
        other => LoadError::new(
            path,
            at,
            None,
            format!("unreadable CSV: {other:?}"),
            "check the file",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_backtesting_py_files() {
        let t = |s| parse_time(s);
        assert_eq!(t("1970-01-02"), Some(86_400_000_000_000));
        assert_eq!(t("2017-04-19 09:00:00"), Some(1_492_592_400_000_000_000));
        assert_eq!(t("2017-04-19T09:00:00"), t("2017-04-19 09:00:00"));
        assert_eq!(t("2017-04-19 09:00"), t("2017-04-19 09:00:00"));
        assert_eq!(t("2017-04-19 09:00:00Z"), t("2017-04-19 09:00:00"));
        assert_eq!(t("2017-04-19 11:00:00+02:00"), t("2017-04-19 09:00:00"));
        assert_eq!(t("2017-04-19 09:00:00.25"), Some(1_492_592_400_250_000_000));
        for bad in [
            "",
            "2017-13-01",
            "2017-04-19 25:00",
            "yesterday",
            "2017-04-19 09:00:00 x",
        ] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[test]
    fn binance_times_in_ms_and_us() {
        assert_eq!(binance_time("1704067200000"), Ok(1_704_067_200_000_000_000));
        assert_eq!(
            binance_time("1735689600000000"),
            Ok(1_735_689_600_000_000_000)
        );
        assert_eq!(binance_time("-5"), Err(BadTime::Unreadable));
        assert_eq!(binance_time("1.5"), Err(BadTime::Unreadable));
        // Milliseconds past 2262-04-11: a time, but not one an i64 of ns holds.
        assert_eq!(binance_time("9300000000000"), Err(BadTime::OutOfRange));
    }

    #[test]
    fn times_past_what_ns_in_an_i64_hold_are_out_of_range_not_unreadable() {
        for far in [
            "9999-12-31",
            "2262-04-12",
            "2262-04-11 23:47:17",
            "1677-09-21 00:12:43",
            "0001-01-01",
        ] {
            assert_eq!(time_of(far), Err(BadTime::OutOfRange), "{far}");
        }
        // The last and first whole seconds that fit.
        assert!(time_of("2262-04-11 23:47:16").is_ok());
        assert!(time_of("1677-09-21 00:12:44").is_ok());
        assert_eq!(time_of("9999-13-01"), Err(BadTime::Unreadable));
        assert!(out_of_range().contains("1677-09-21 00:12:43.145224192"));
        assert!(out_of_range().contains("2262-04-11 23:47:16.854775807"));
    }
}
