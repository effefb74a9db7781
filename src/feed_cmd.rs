//! `tickloop feed replay` and `tickloop feed ingest`: argument wiring, progress and the final
//! report over `tickloop_feed`.
//!
//! It holds no data logic: the library loads and validates the whole file before this module
//! opens the ring, so a bad file never takes the ring's writer lock, bumps its epoch or writes a
//! candle. Progress goes to stderr only when stderr is a terminal. [`LimitArgs`] are the data
//! file's bounds as flags, shared with `tickloop backtest`.

use crate::ring_cmd::RingArg;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tickloop_feed::ingest::{Ingest, IngestReport, Listen, MAX_CLIENTS};
use tickloop_feed::{
    format_span, format_ts, Dataset, Format, LoadOptions, Pace, ReplayReport, MAX_CANDLES,
    MAX_FILE_BYTES, MAX_LINE_BYTES,
};
use tickloop_ring::{info, ring_path, CreateOptions, RingError, Writer};

/// How much of a data file is accepted; each bound is checked as the file is read, so memory
/// stays bounded whatever the file holds.
#[derive(Args, Clone)]
pub struct LimitArgs {
    /// Refuse a CSV line longer than this (bytes, or with a unit: 64KiB, 1MiB).
    #[arg(long, value_name = "BYTES", default_value_t = ByteSize(MAX_LINE_BYTES))]
    pub max_line_bytes: ByteSize,
    /// Refuse a file longer than this (for zstd-compressed DBN, also once decompressed).
    #[arg(long, value_name = "BYTES", default_value_t = ByteSize(MAX_FILE_BYTES))]
    pub max_file_bytes: ByteSize,
    /// Refuse a file of more bars than this (each holds 56 bytes of memory).
    #[arg(long, value_name = "N", default_value_t = MAX_CANDLES, value_parser = at_least_one)]
    pub max_candles: usize,
}

impl LimitArgs {
    /// The load options for `format` and `symbol` within these bounds.
    pub fn options(&self, format: Format, symbol: Option<String>) -> LoadOptions {
        LoadOptions {
            format,
            symbol,
            max_candles: self.max_candles,
            max_line_bytes: self.max_line_bytes.0,
            max_file_bytes: self.max_file_bytes.0,
        }
    }
}

/// A size in bytes on the command line: `65536`, or with a unit, `64KiB` (also `K`), `1MiB`
/// (`M`), `16GiB` (`G`), `1TiB` (`T`); `kB`, `MB`, `GB`, `TB` are powers of 1000. Printed in
/// the largest binary unit that is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<ByteSize, String> {
        let bad = || {
            format!("{s:?} is not a size: write bytes, or a number with a unit such as 64KiB, 1MiB or 16GiB")
        };
        let t = s.trim();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let number: u64 = t[..digits].parse().map_err(|_| bad())?;
        let unit: u64 = match t[digits..].trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(bad()),
        };
        match number.checked_mul(unit) {
            Some(0) => Err(format!(
                "{s:?}: a bound of zero bytes refuses every file; give at least 1"
            )),
            Some(n) => Ok(ByteSize(n)),
            None => Err(format!("{s:?} is more bytes than 64 bits hold")),
        }
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if self.0 >= 1 << shift && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("a bound of zero bars refuses every file; give at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number of bars")),
    }
}

#[derive(Args, Clone)]
pub struct ReplayArgs {
    /// The data file: CSV (backtesting.py's format or Binance klines) or Databento DBN
    /// (`.dbn`, `.dbn.zst`); a pipe, a FIFO or /dev/stdin too (read once, front to back). It is
    /// checked whole before anything is written.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    #[command(flatten)]
    pub ring: RingArg,
    /// The file's format: auto decides from its name and first bytes.
    #[arg(long, default_value = "auto", value_name = "auto|csv|binance|dbn")]
    pub format: Format,
    /// Symbol name for a CSV file (default: the file name; DBN files name their own).
    #[arg(long, value_name = "NAME")]
    pub symbol: Option<String>,
    /// asap (as fast as possible), real (at the bars' own timestamps), or xN (N times that).
    #[arg(long, default_value = "asap", value_name = "asap|real|xN")]
    pub pace: Pace,
    /// Create the ring if it does not exist.
    #[arg(long)]
    pub create: bool,
    /// Slots, if the ring has to be created.
    #[arg(long, default_value_t = 65536)]
    pub slots: u64,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Args, Clone)]
pub struct IngestArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// tcp://127.0.0.1:PORT or udp://127.0.0.1:PORT (loopback only; port 0 picks a free one,
    /// announced on stderr).
    #[arg(long, value_name = "URL")]
    pub listen: Listen,
    /// Create the ring if it does not exist.
    #[arg(long)]
    pub create: bool,
    /// Slots, if the ring has to be created.
    #[arg(long, default_value_t = 65536)]
    pub slots: u64,
    /// Stop after this many candles; 0 = until SIGINT/SIGTERM.
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Most TCP producers at once; more are accepted and closed at once (counted).
    #[arg(long, default_value_t = MAX_CLIENTS)]
    pub max_clients: usize,
}

pub fn replay(args: &ReplayArgs) -> Result<ExitCode> {
    let path = ring_path(&args.ring.ring)?;
    let dataset = tickloop_feed::load_with(
        &args.data,
        &args.limits.options(args.format, args.symbol.clone()),
    )
    .map_err(|e| anyhow!("{e}; nothing was written to ring {}", path.display()))?;
    let mut writer = open_writer(&path, args.create, args.slots, &dataset.symbols)?;
    if dataset.len() as u64 > writer.capacity() {
        eprintln!(
            "tickloop: note: {} candles is more than the ring's {} slots: a reader more than {} behind loses the oldest (and is told how many)",
            dataset.len(),
            writer.capacity(),
            writer.capacity()
        );
    }
    let (first, last) = dataset.span_ns();
    let expected = args.pace.duration_of(last - first);
    let bar = if std::io::stderr().is_terminal() && (expected >= 1.0 || dataset.len() > 1_000_000) {
        let bar =
            ProgressBar::with_draw_target(Some(dataset.len() as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {human_pos}/{human_len} candles  {per_sec}  eta {eta}",
            )
            .expect("a valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let stop = crate::interrupt::stop_flag();
    let report = tickloop_feed::replay(&dataset, &mut writer, args.pace, &stop, &mut |n| {
        bar.set_position(n)
    })?;
    bar.finish_and_clear();
    eprintln!(
        "{}",
        replay_line(&dataset, &report, &path, args.pace, &args.data)
    );
    Ok(ExitCode::SUCCESS)
}

/// The one-line report: candles, symbols, rate, time span, positions.
fn replay_line(
    dataset: &Dataset,
    r: &ReplayReport,
    ring: &Path,
    pace: Pace,
    data: &Path,
) -> String {
    let names = if dataset.symbols.len() <= 4 {
        dataset.symbols.join(", ")
    } else {
        format!(
            "{}, ... {} more",
            dataset.symbols[..3].join(", "),
            dataset.symbols.len() - 3
        )
    };
    format!(
        "{} {} of {} candles of {} symbol{} ({names}) from {} ({}) into {} in {:.3} s ({}, pace {pace}); bars {} to {} UTC ({}); positions {}..{}, writer epoch {}",
        if r.stopped { "stopped after" } else { "replayed" },
        r.published,
        dataset.len(),
        r.symbols,
        if r.symbols == 1 { "" } else { "s" },
        data.display(),
        dataset.format,
        ring.display(),
        r.seconds,
        rate(r.per_second()),
        format_ts(r.first_ts_ns),
        format_ts(r.last_ts_ns),
        format_span(r.last_ts_ns - r.first_ts_ns),
        r.first_position,
        r.first_position + r.published,
        r.epoch
    )
}

/// Candles per second for people: `950 candles/s`, `12.5 k candles/s`, `3.20 M candles/s`.
fn rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2} M candles/s", per_second / 1e6)
    } else if per_second >= 1e4 {
        format!("{:.1} k candles/s", per_second / 1e3)
    } else {
        format!("{per_second:.0} candles/s")
    }
}

/// Open the ring as its writer, creating it if allowed; refuse before taking over (a take-over
/// bumps the epoch) if the symbols cannot fit.
pub(crate) fn open_writer(
    path: &Path,
    create: bool,
    slots: u64,
    symbols: &[String],
) -> Result<Writer> {
    tickloop_ring::crash::install("the feed").context("installing the SIGBUS handler")?;
    match info::inspect(path, usize::MAX) {
        Ok(existing) => {
            let new = symbols
                .iter()
                .filter(|s| !existing.symbol_names.contains(s))
                .count();
            if existing.symbols as usize + new > existing.symbol_capacity as usize {
                bail!(
                    "ring {} has room for {} more symbols but the data has {new} new ones: create a ring with more --symbols; nothing was written",
                    path.display(),
                    existing.symbol_capacity - existing.symbols
                );
            }
            Ok(Writer::open(path)?)
        }
        Err(RingError::NotFound { .. }) if create => {
            let (writer, created) = Writer::open_or_create(
                path,
                CreateOptions {
                    slots,
                    symbols: (symbols.len() as u32).max(1024),
                    ..CreateOptions::default()
                },
            )?;
            if created {
                eprintln!(
                    "created ring {} ({} slots)",
                    path.display(),
                    writer.capacity()
                );
            }
            Ok(writer)
        }
        Err(RingError::NotFound { .. }) => bail!(
            "ring {} not found: create it with `tickloop ring create --ring {}`, or pass --create",
            path.display(),
            path.display()
        ),
        Err(e) => Err(e.into()),
    }
}

pub fn ingest(args: &IngestArgs) -> Result<ExitCode> {
    let path = ring_path(&args.ring.ring)?;
    if args.max_clients == 0 {
        bail!("--max-clients must be at least 1");
    }
    let mut writer = open_writer(&path, args.create, args.slots, &[])?;
    let mut ingest = Ingest::bind(args.listen, args.max_clients)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!(
        "tickloop feed ingest: listening on {}, writing to {}",
        ingest.url(),
        path.display()
    );
    let stop = crate::interrupt::stop_flag();
    let report = ingest.run(&mut writer, args.count, &stop)?;
    eprint!("{}", ingest_report(&report, &path, &ingest.url()));
    Ok(ExitCode::SUCCESS)
}

fn ingest_report(r: &IngestReport, ring: &Path, url: &str) -> String {
    let from = if url.starts_with("udp") {
        format!("{} datagrams", r.datagrams)
    } else {
        format!(
            "{} connections ({} refused: over --max-clients)",
            r.connections, r.refused
        )
    };
    let mut out = format!(
        "ingested {} candles of {} symbols into {} in {:.3} s from {from}; {} bad lines\n",
        r.candles,
        r.symbols,
        ring.display(),
        r.seconds,
        r.bad_lines
    );
    for bad in &r.first_bad {
        out.push_str(&format!(
            "  bad: {}: {}: {:?}\n",
            bad.from, bad.problem, bad.text
        ));
    }
    if r.bad_lines > r.first_bad.len() as u64 {
        out.push_str(&format!(
            "  ... and {} more bad lines\n",
            r.bad_lines - r.first_bad.len() as u64
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn sizes_parse_with_units_and_print_in_the_largest_exact_one() {
        for (text, bytes) in [
            ("65536", 65536),
            ("64KiB", 64 << 10),
            ("64k", 64 << 10),
            ("1 MiB", 1 << 20),
            ("16GiB", 16 << 30),
            ("2G", 2 << 30),
            ("5MB", 5_000_000),
            ("1000", 1000),
        ] {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
        for bad in [
            "",
            "0",
            "0KiB",
            "-1",
            "1.5MiB",
            "12 parsecs",
            "99999999999TiB",
        ] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
        assert_eq!(ByteSize(64 << 10).to_string(), "64KiB");
        assert_eq!(ByteSize(16 << 30).to_string(), "16GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        for size in [ByteSize(64 << 10), ByteSize(16 << 30), ByteSize(1000)] {
            assert_eq!(size.to_string().parse::<ByteSize>(), Ok(size));
        }
    }
}
