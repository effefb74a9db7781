//! A data file loaded whole and validated: a [`Dataset`] of candles plus symbol names, or one
//! [`LoadError`] naming the file, the line or record, the field and the problem.
//!
//! This module owns what every format's parser shares: the [`Format`]s, the bounds
//! ([`LoadOptions`]: bytes per line, bytes per file, candles per file), the candle checks
//! ([`Builder`]), and the error type. Reading a file and detecting its format is `load`'s
//! (above the parsers); this module never opens a file and never touches a ring: a file is
//! read and checked *completely* before a single candle can be fed anywhere, so bad data never
//! leaves half a file in a ring. (Whole-file
//! loading, rather than streaming with a check, because a check that guarantees nothing partial
//! is written needs to see the last line before publishing the first anyway, and a backtest
//! needs the whole series in memory.) Memory is bounded whatever the input: a line by
//! [`LoadOptions::max_line_bytes`], the candles by [`LoadOptions::max_candles`], and an
//! allocation that fails is an error, never an abort.

use crate::bounded::{over_in, Over};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use tickloop_ring::layout::SYMBOL_NAME_MAX;
use tickloop_ring::Candle;

/// Which parser reads a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Decide from the name and the first bytes (see [`crate::load::detect`]).
    Auto,
    /// backtesting.py's CSV: a time column (may be unnamed), Open, High, Low, Close, [Volume].
    Csv,
    /// Binance's 12-column klines CSV, with or without a header.
    Binance,
    /// Databento Binary Encoding, plain or zstd-compressed, OHLCV schemas.
    Dbn,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Csv => "csv",
            Format::Binance => "binance",
            Format::Dbn => "dbn",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Format::Auto),
            "csv" => Ok(Format::Csv),
            "binance" => Ok(Format::Binance),
            "dbn" => Ok(Format::Dbn),
            _ => Err(format!(
                "{s:?} is not a data format: use auto, csv, binance or dbn"
            )),
        }
    }
}

/// The validated candles of one file, in file order.
///
/// Guarantees: at least one candle; every price finite and positive with
/// `low <= open, close <= high`; volume finite and non-negative; `ts_ns` never decreases and
/// strictly increases per symbol; every `candle.symbol` indexes [`Dataset::symbols`]; `flags`
/// is 0. Symbol names are valid ring symbol names (1 to 31 bytes, no NUL), without duplicates.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The file it came from.
    pub path: PathBuf,
    /// The format it was read as (never [`Format::Auto`]).
    pub format: Format,
    /// Symbol names; a candle's `symbol` is an index into this list.
    pub symbols: Vec<String>,
    pub candles: Vec<Candle>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.candles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.candles.is_empty()
    }

    /// Time of the first and the last candle (ns since the Unix epoch, UTC).
    pub fn span_ns(&self) -> (i64, i64) {
        (
            self.candles.first().map_or(0, |c| c.ts_ns),
            self.candles.last().map_or(0, |c| c.ts_ns),
        )
    }

    /// The name of a candle's symbol.
    pub fn symbol_of(&self, candle: &Candle) -> &str {
        self.symbols
            .get(candle.symbol as usize)
            .map_or("?", String::as_str)
    }
}

/// How [`load_with`] reads a file, and what it accepts.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub format: Format,
    /// Symbol name for a CSV file (default: from the file name); ignored for DBN, whose
    /// symbols come from the file.
    pub symbol: Option<String>,
    /// Refuse files with more candles than this (memory bound: 56 bytes each).
    pub max_candles: usize,
    /// Refuse a CSV line (a record; a quoted field may span lines) longer than this many bytes.
    /// Also bounds the parser's memory for one line.
    pub max_line_bytes: u64,
    /// Refuse a file longer than this many bytes; for zstd-compressed DBN, also once
    /// decompressed (what is held in memory).
    pub max_file_bytes: u64,
}

pub use crate::limits::{MAX_CANDLES, MAX_FILE_BYTES, MAX_LINE_BYTES};

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            format: Format::Auto,
            symbol: None,
            max_candles: MAX_CANDLES,
            max_line_bytes: MAX_LINE_BYTES,
            max_file_bytes: MAX_FILE_BYTES,
        }
    }
}

/// Bytes for people: `64 KiB`, `16 GiB`, `1000 bytes` (binary units only where exact).
pub(crate) fn format_bytes(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

/// Where in a file a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The file as a whole (or its header, for DBN).
    File,
    /// A line of a text file (1-based).
    Line(u64),
    /// A record of a DBN file (1-based, after the metadata).
    Record(u64),
}

/// Why a file cannot be loaded: one line naming the file, where, which field, what is wrong and
/// what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub path: PathBuf,
    pub at: Location,
    pub field: Option<String>,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad data file {}", self.path.display())?;
        match self.at {
            Location::File => {}
            Location::Line(n) => write!(f, ", line {n}")?,
            Location::Record(n) => write!(f, ", record {n}")?,
        }
        if let Some(field) = &self.field {
            write!(f, ", field {field}")?;
        }
        write!(f, ": {}", self.problem)?;
        if !self.fix.is_empty() {
            write!(f, "; {}", self.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    pub(crate) fn new(
        path: &Path,
        at: Location,
        field: Option<&str>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> LoadError {
        LoadError {
            path: path.to_owned(),
            at,
            field: field.map(str::to_owned),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

pub(crate) fn io_error(path: &Path, e: std::io::Error) -> LoadError {
    LoadError::new(
        path,
        Location::File,
        None,
        format!("cannot read it: {e}"),
        "check the path and its permissions",
    )
}

/// An error from reading a file through its bounds: a bound it went past, memory that ran
/// out, or the plain I/O error.
pub(crate) fn read_error(path: &Path, e: std::io::Error) -> LoadError {
    match over_in(&e) {
        Some(Over::Line { line, limit }) => LoadError::new(
            path,
            Location::Line(line),
            None,
            format!(
                "the line is longer than the --max-line-bytes limit of {}",
                limit_text(limit)
            ),
            "no bar needs a line that long: check the file (a missing line end, or not a data file), or raise --max-line-bytes",
        ),
        Some(Over::File { line, limit }) => LoadError::new(
            path,
            line.map_or(Location::File, Location::Line),
            None,
            format!(
                "the file is longer than the --max-file-bytes limit of {}",
                limit_text(limit)
            ),
            "raise --max-file-bytes, or split the file",
        ),
        None if e.kind() == io::ErrorKind::OutOfMemory => out_of_memory(path, Location::File),
        None => io_error(path, e),
    }
}

/// A limit in bytes for an error: `100 bytes`, `64 KiB (65536 bytes)`.
pub(crate) fn limit_text(n: u64) -> String {
    match format_bytes(n) {
        exact if exact.ends_with(" bytes") => exact,
        unit => format!("{unit} ({n} bytes)"),
    }
}

pub(crate) fn out_of_memory(path: &Path, at: Location) -> LoadError {
    LoadError::new(
        path,
        at,
        None,
        "not enough memory to hold it",
        "free memory, lower --max-candles or --max-file-bytes to be refused sooner, or split the file",
    )
}

/// A field that failed a candle check, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadField {
    pub field: &'static str,
    pub problem: String,
}

/// The checks every candle passes, whatever its source: finite positive prices, low and high
/// around open and close, finite non-negative volume.
pub fn check_candle(c: &Candle) -> Result<(), BadField> {
    let bad = |field, problem: String| Err(BadField { field, problem });
    for (field, value) in [
        ("open", c.open),
        ("high", c.high),
        ("low", c.low),
        ("close", c.close),
    ] {
        if value.is_nan() {
            return bad(field, "the price is NaN".into());
        }
        if value.is_infinite() {
            return bad(field, format!("the price is {value}"));
        }
        if value < 0.0 {
            return bad(field, format!("the price {value} is negative"));
        }
        if value == 0.0 {
            return bad(field, "the price is zero".into());
        }
    }
    if c.volume.is_nan() || c.volume.is_infinite() || c.volume < 0.0 {
        return bad(
            "volume",
            format!(
                "the volume {} is not a finite non-negative number",
                c.volume
            ),
        );
    }
    if c.high < c.low {
        return bad(
            "high",
            format!("high {} is below low {} (high < low)", c.high, c.low),
        );
    }
    for (field, value) in [("open", c.open), ("close", c.close)] {
        if value > c.high {
            return bad(field, format!("{field} {value} is above high {}", c.high));
        }
        if value < c.low {
            return bad(field, format!("{field} {value} is below low {}", c.low));
        }
    }
    Ok(())
}

/// Checks a symbol name fits the ring's symbol table.
pub fn check_symbol_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("the symbol name is empty".into())
    } else if name.len() > SYMBOL_NAME_MAX {
        Err(format!(
            "symbol name {name:?} is longer than {SYMBOL_NAME_MAX} bytes"
        ))
    } else if name.contains('\0') {
        Err(format!("symbol name {name:?} contains a NUL byte"))
    } else {
        Ok(())
    }
}

/// Collects candles in file order, with the ordering checks: time never goes back, and a
/// symbol never has two bars at the same time or out of order.
pub(crate) struct Builder<'a> {
    path: &'a Path,
    max: usize,
    symbols: Vec<String>,
    /// Last time seen per symbol index.
    last_ts: Vec<i64>,
    last_any: Option<i64>,
    candles: Vec<Candle>,
}

impl<'a> Builder<'a> {
    pub fn new(path: &'a Path, max: usize) -> Builder<'a> {
        Builder {
            path,
            max,
            symbols: Vec::new(),
            last_ts: Vec::new(),
            last_any: None,
            candles: Vec::new(),
        }
    }

    /// The index of `name`, added if new (linear search: files hold few symbols; the DBN loader
    /// caches per instrument).
    pub fn symbol(&mut self, name: &str, at: Location, fix: &str) -> Result<u32, LoadError> {
        if let Some(i) = self.symbols.iter().position(|s| s == name) {
            return Ok(i as u32);
        }
        check_symbol_name(name)
            .map_err(|problem| LoadError::new(self.path, at, Some("symbol"), problem, fix))?;
        self.symbols.push(name.to_owned());
        self.last_ts.push(i64::MIN);
        Ok(self.symbols.len() as u32 - 1)
    }

    /// Check and append one candle (`candle.symbol` from [`Builder::symbol`]). `fields` are
    /// the file's names for time, open, high, low, close and volume, for the errors.
    pub fn push(
        &mut self,
        candle: Candle,
        at: Location,
        fields: [&str; 6],
    ) -> Result<(), LoadError> {
        let time_field = fields[0];
        if let Err(b) = check_candle(&candle) {
            let field = match b.field {
                "open" => fields[1],
                "high" => fields[2],
                "low" => fields[3],
                "close" => fields[4],
                _ => fields[5],
            };
            return Err(LoadError::new(
                self.path,
                at,
                Some(field),
                b.problem,
                "correct or remove that bar",
            ));
        }
        let ts = candle.ts_ns;
        if let Some(prev) = self.last_any {
            if ts < prev {
                return Err(LoadError::new(
                    self.path,
                    at,
                    Some(time_field),
                    format!(
                        "time {} is before the previous bar's {} (timestamps must not go back)",
                        crate::format_ts(ts),
                        crate::format_ts(prev)
                    ),
                    "sort the file by time",
                ));
            }
        }
        let last = &mut self.last_ts[candle.symbol as usize];
        if ts <= *last {
            return Err(LoadError::new(
                self.path,
                at,
                Some(time_field),
                format!(
                    "a second bar of {} at {} (each bar's time must be later than the previous one's)",
                    self.symbols[candle.symbol as usize],
                    crate::format_ts(ts)
                ),
                "remove the duplicate bar",
            ));
        }
        *last = ts;
        self.last_any = Some(ts);
        if self.candles.len() >= self.max {
            return Err(LoadError::new(
                self.path,
                at,
                None,
                format!("more than {} bars (the --max-candles limit)", self.max),
                "raise --max-candles (each bar holds 56 bytes of memory), or split the file",
            ));
        }
        // Growing the list may need more memory than there is: an error, not an abort.
        if self.candles.try_reserve(1).is_err() {
            return Err(out_of_memory(self.path, at));
        }
        self.candles.push(candle);
        Ok(())
    }

    pub fn finish(self, format: Format) -> Dataset {
        Dataset {
            path: self.path.to_owned(),
            format,
            symbols: self.symbols,
            candles: self.candles,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candle(o: f64, h: f64, l: f64, c: f64, v: f64) -> Candle {
        Candle {
            ts_ns: 0,
            symbol: 0,
            flags: 0,
            open: o,
            high: h,
            low: l,
            close: c,
            volume: v,
        }
    }

    #[test]
    fn candle_checks_name_the_field() {
        assert!(check_candle(&candle(1.0, 2.0, 0.5, 1.5, 0.0)).is_ok());
        let field = |c| check_candle(&c).unwrap_err().field;
        assert_eq!(field(candle(f64::NAN, 2.0, 0.5, 1.5, 1.0)), "open");
        assert_eq!(field(candle(1.0, f64::INFINITY, 0.5, 1.5, 1.0)), "high");
        assert_eq!(field(candle(1.0, 2.0, -0.5, 1.5, 1.0)), "low");
        assert_eq!(field(candle(1.0, 2.0, 0.5, 0.0, 1.0)), "close");
        assert_eq!(field(candle(1.0, 2.0, 0.5, 1.5, -1.0)), "volume");
        assert_eq!(field(candle(1.0, 0.4, 0.5, 0.45, 1.0)), "high");
        assert_eq!(field(candle(2.5, 2.0, 0.5, 1.5, 1.0)), "open");
        assert_eq!(field(candle(1.0, 2.0, 0.5, 0.4, 1.0)), "close");
    }

    #[test]
    fn formats_parse_and_print() {
        for f in [Format::Auto, Format::Csv, Format::Binance, Format::Dbn] {
            assert_eq!(f.name().parse::<Format>().unwrap(), f);
        }
        assert!("parquet"
            .parse::<Format>()
            .unwrap_err()
            .contains("auto, csv"));
    }
}
