//! `tickloop ring create|info|rm|tail` and `tickloop feed synthetic`: argument wiring and
//! presentation over `tickloop_runtime::ring` and `tickloop_feed`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tickloop_ring::info::{self, RingInfo};
use tickloop_ring::layout::MAX_READERS;
use tickloop_ring::sys;
use tickloop_ring::verify::Verifier;
use tickloop_ring::{
    self as ring, ring_path, Bytes, CreateOptions, ReadResult, Reader, ReaderOptions, Start,
    Unregistered, WaitStrategy, Writer,
};

#[derive(Subcommand)]
pub enum RingCommand {
    /// Create a ring (crash-safe: temporary name, fallocate, rename).
    Create(CreateArgs),
    /// Show a ring's header, writer, and readers' lag.
    Info {
        #[command(flatten)]
        ring: RingArg,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove a ring (refuses while its writer runs, unless --force).
    Rm {
        #[command(flatten)]
        ring: RingArg,
        /// Remove even if a writer is running or the file is not a ring.
        #[arg(long)]
        force: bool,
    },
    /// Read candles from a ring; with --verify, check every one and end with a JSON summary.
    Tail(TailArgs),
    /// Create a ring, run a synthetic writer and a verifying reader process, report, clean up.
    Demo(crate::ring_demo::DemoArgs),
}

#[derive(Args, Clone)]
pub struct RingArg {
    /// A name under /dev/shm, or a path containing '/' (e.g. on hugetlbfs).
    #[arg(long = "ring", value_name = "NAME")]
    pub ring: String,
}

#[derive(Args, Clone)]
pub struct CreateArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// Number of 64-byte slots (a power of two).
    #[arg(long, default_value_t = 65536)]
    pub slots: u64,
    /// Capacity of the symbol table.
    #[arg(long, default_value_t = 1024)]
    pub symbols: u32,
    /// File mode, in octal.
    #[arg(long, default_value = "600", value_parser = parse_mode)]
    pub mode: u32,
}

#[derive(Args, Clone)]
pub struct TailArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// Stop after this many positions (received + lost + torn); 0 = until interrupted.
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Check every candle and end with {"received","lost","duplicates","torn","overruns"}.
    #[arg(long)]
    pub verify: bool,
    /// Start with the next candle published, or the oldest still in the ring.
    #[arg(long, value_enum, default_value_t = From::Next)]
    pub from: From,
    /// How to wait for candles.
    #[arg(long, value_enum, default_value_t = Wait::Park)]
    pub wait: Wait,
    /// Pin the reader to this core.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Write a fuller JSON report (rate, latency percentiles) to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
    /// Give up after this many seconds without a candle (exit code 3).
    #[arg(long, value_name = "SECONDS")]
    pub idle_exit: Option<f64>,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum From {
    Next,
    Oldest,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Busy-spin: lowest latency, burns the core.
    Spin,
    /// Spin briefly, then sleep on the ring's doorbell.
    Park,
    /// Look every 100 µs.
    Poll,
}

#[derive(Args, Clone)]
pub struct SyntheticArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// Number of symbols (SYN0000, SYN0001, ...).
    #[arg(long, default_value_t = 8)]
    pub symbols: usize,
    /// Candles to publish; 0 = until interrupted.
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Candles per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seed of the random walk.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Slots, if the ring has to be created.
    #[arg(long, default_value_t = 65536)]
    pub slots: u64,
    /// Pin the writer to this core.
    #[arg(long)]
    pub cpu: Option<usize>,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode such as 600 or 640"))
}

/// What a reader without a control-page entry is told (`ring tail` and the engine say the
/// same), or None when it holds one. `parks`: whether it would sleep on the doorbell.
pub(crate) fn unregistered_warning(reader: &Reader, parks: bool) -> Option<String> {
    let (why, fix) = match reader.unregistered()? {
        Unregistered::ReadOnly => (
            "the ring file is read-only to this user".to_string(),
            "run it as the ring's owner",
        ),
        Unregistered::RegistryFull => (
            format!("all {MAX_READERS} reader entries are held by live readers"),
            "stop a reader (`tickloop ring info` lists them) to free one",
        ),
    };
    let effect = if parks {
        "it reads every candle but polls every 0.1 ms instead of parking, and `ring info` does not list it"
    } else {
        "it reads every candle, but `ring info` does not list it"
    };
    Some(format!(
        "ring {}: no control-page entry for this reader ({why}): {effect}; {fix}",
        reader.path().display()
    ))
}

pub fn run(command: RingCommand) -> Result<ExitCode> {
    match command {
        RingCommand::Create(args) => {
            let path = ring_path(&args.ring.ring)?;
            let options = CreateOptions {
                slots: args.slots,
                symbols: args.symbols,
                mode: args.mode,
            };
            ring::create(&path, options)?;
            let shown = info::inspect(&path, 0)?;
            println!(
                "created ring {} ({} slots, {} symbols, {}, mode {})",
                shown.path,
                shown.slots,
                shown.symbol_capacity,
                Bytes(shown.segment_bytes),
                shown.mode
            );
            Ok(ExitCode::SUCCESS)
        }
        RingCommand::Info { ring, json } => {
            let path = ring_path(&ring.ring)?;
            let shown = info::inspect(&path, 64)?;
            if json {
                println!("{}", serde_json::to_string(&shown)?);
            } else {
                print_info(&shown);
            }
            Ok(ExitCode::SUCCESS)
        }
        RingCommand::Rm { ring, force } => {
            let path = ring_path(&ring.ring)?;
            let removed = info::remove(&path, force)?;
            if let Some(pid) = removed.live_writer {
                eprintln!(
                    "tickloop: warning: writer pid {pid} is still running; it keeps writing into the removed segment"
                );
            }
            println!("removed ring {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        RingCommand::Tail(args) => tail(&args),
        RingCommand::Demo(args) => crate::ring_demo::run(&args),
    }
}

fn print_info(i: &RingInfo) {
    let w = &i.writer;
    println!("ring      {}", i.path);
    println!(
        "layout    {}  ({} slots x {} bytes, {} in all, mode {})",
        i.layout,
        i.slots,
        i.slot_bytes,
        Bytes(i.segment_bytes),
        i.mode
    );
    println!(
        "symbols   {} of {}{}{}",
        i.symbols,
        i.symbol_capacity,
        if i.symbol_names.is_empty() { "" } else { ": " },
        i.symbol_names.join(" ")
    );
    println!("write_seq {}", i.write_seq);
    if w.epoch == 0 {
        println!("writer    none yet (epoch 0)");
    } else {
        let heartbeat = w
            .heartbeat_age_ms
            .map(|ms| format!(", heartbeat {ms:.0} ms ago"))
            .unwrap_or_default();
        println!(
            "writer    pid {} {} (epoch {}{}{})",
            w.pid,
            if w.alive { "running" } else { "gone" },
            w.epoch,
            heartbeat,
            if w.membarrier { ", membarrier" } else { "" }
        );
    }
    if i.readers.is_empty() {
        println!("readers   none registered");
    }
    for r in &i.readers {
        println!(
            "reader    pid {} {}: lag {} (cursor {}), received {}, lost {} in {} overruns{}",
            r.pid,
            if r.alive { "running" } else { "gone" },
            r.lag,
            r.cursor,
            r.received,
            r.lost,
            r.overruns,
            if r.parked { ", parked" } else { "" }
        );
    }
}

fn tail(args: &TailArgs) -> Result<ExitCode> {
    let path = ring_path(&args.ring.ring)?;
    if let Some(s) = args.idle_exit {
        if !(s.is_finite() && s > 0.0) {
            anyhow::bail!("--idle-exit {s} must be a positive number of seconds");
        }
    }
    if let Some(file) = &args.report {
        // Fail now, not after the whole run, if the report cannot be written.
        std::fs::write(file, "{}")
            .with_context(|| format!("cannot write --report {}", file.display()))?;
    }
    if let Some(core) = args.cpu {
        sys::pin_to_core(core).map_err(anyhow::Error::msg)?;
    }
    let start = match args.from {
        From::Next => Start::Next,
        From::Oldest => Start::Oldest,
    };
    tickloop_ring::crash::install("this reader").context("installing the SIGBUS handler")?;
    let mut reader = Reader::attach(
        &path,
        ReaderOptions {
            start,
            register: true,
        },
    )?;
    let strategy = match args.wait {
        Wait::Spin => WaitStrategy::Spin,
        Wait::Park => WaitStrategy::default(),
        Wait::Poll => WaitStrategy::Poll {
            interval: Duration::from_micros(100),
        },
    };
    if let Some(warning) = unregistered_warning(&reader, args.wait == Wait::Park) {
        tracing::warn!("{warning}");
    }
    let stop = crate::interrupt::stop_flag();
    let idle_limit = args.idle_exit.map(|s| (s * 1e9) as i64);
    let mut verifier = Verifier::new();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let started = sys::monotonic_ns();
    let mut last_activity = started;
    let mut idled_out = false;
    let mut removed = false;
    let mut first_candle_ns = None;
    while args.count == 0 || verifier.consumed() < args.count {
        let mut should_stop = || {
            if stop.load(Ordering::Relaxed) {
                return true;
            }
            match idle_limit {
                Some(limit) if sys::monotonic_ns() - last_activity > limit => {
                    idled_out = true;
                    true
                }
                _ => false,
            }
        };
        let result = reader.wait(&strategy, &mut should_stop);
        if result == ReadResult::Empty {
            break;
        }
        if result == ReadResult::RingRemoved {
            removed = true;
            break;
        }
        let now = sys::realtime_ns();
        last_activity = sys::monotonic_ns();
        first_candle_ns.get_or_insert(last_activity);
        verifier.observe(&result, now);
        if args.verify {
            continue;
        }
        let written = match result {
            ReadResult::Candle { pos, candle } => {
                let name = reader.symbol_name(candle.symbol).unwrap_or("?");
                writeln!(
                    out,
                    "{pos} {name} {} o={} h={} l={} c={} v={}",
                    candle.ts_ns, candle.open, candle.high, candle.low, candle.close, candle.volume
                )
            }
            ReadResult::Overrun { lost } => writeln!(out, "# overrun: {lost} candles lost"),
            ReadResult::NewWriter { epoch } => writeln!(out, "# new writer: epoch {epoch}"),
            ReadResult::Empty | ReadResult::RingRemoved => Ok(()),
        };
        if !output_ok(written)? {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if !output_ok(out.flush())? {
        return Ok(ExitCode::SUCCESS);
    }
    drop(out);
    let summary = verifier.summary();
    if let Some(file) = &args.report {
        let seconds = first_candle_ns
            .map(|t| (last_activity - t) as f64 / 1e9)
            .unwrap_or(0.0);
        let latency = verifier.latency();
        let report = serde_json::json!({
            "summary": summary,
            "unannounced_gaps": verifier.unannounced_gaps(),
            "unsealed": verifier.unsealed(),
            "writers_seen": verifier.writers_seen(),
            "parks": reader.stats().parks,
            "seconds": seconds,
            "per_sec": if seconds > 0.0 { summary.received as f64 / seconds } else { 0.0 },
            "latency_ns": {
                "p50": latency.value_at_quantile(0.5),
                "p99": latency.value_at_quantile(0.99),
                "p999": latency.value_at_quantile(0.999),
                "max": latency.max(),
            },
        });
        std::fs::write(file, report.to_string())
            .with_context(|| format!("writing report {}", file.display()))?;
    }
    if args.verify {
        println!("{}", serde_json::to_string(&summary)?);
        if verifier.unsealed() > 0 {
            eprintln!(
                "tickloop: note: {} candles carried no seal, so they could not be checked for tearing",
                verifier.unsealed()
            );
        }
    }
    if !verifier.clean() {
        eprintln!(
            "tickloop: error: verification failed: {} torn, {} duplicates, {} positions skipped without an overrun",
            summary.torn,
            summary.duplicates,
            verifier.unannounced_gaps()
        );
        return Ok(ExitCode::from(1));
    }
    if removed {
        eprintln!(
            "tickloop: error: ring {} was removed while being read (after {} of {} positions): recreate it and restart its feed and readers",
            path.display(),
            verifier.consumed(),
            args.count
        );
        return Ok(ExitCode::from(4));
    }
    if idled_out {
        eprintln!(
            "tickloop: error: no candle for {} s on {} after {} of {} positions: is its writer running? (`tickloop ring info --ring {}`)",
            args.idle_exit.unwrap_or(0.0),
            path.display(),
            verifier.consumed(),
            args.count,
            path.display()
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// A closed stdout (`ring tail | head`) is the reader of our output going away: stop quietly.
fn output_ok(result: std::io::Result<()>) -> Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

pub fn synthetic(args: &SyntheticArgs) -> Result<ExitCode> {
    let path = ring_path(&args.ring.ring)?;
    if args.symbols == 0 {
        anyhow::bail!("--symbols must be at least 1");
    }
    if !(args.rate == 0.0 || (args.rate >= 0.001 && args.rate.is_finite())) {
        anyhow::bail!(
            "--rate {} must be at least 0.001 candles per second, or 0 for as fast as possible",
            args.rate
        );
    }
    if let Some(core) = args.cpu {
        sys::pin_to_core(core).map_err(anyhow::Error::msg)?;
    }
    let options = CreateOptions {
        slots: args.slots,
        symbols: (args.symbols as u32).max(1024),
        ..CreateOptions::default()
    };
    // Refuse before taking over (a take-over bumps the epoch) if the symbols cannot fit.
    if let Ok(existing) = info::inspect(&path, 0) {
        if args.symbols > existing.symbol_capacity as usize {
            anyhow::bail!(
                "--symbols {} does not fit the symbol table of ring {} ({} symbols): use fewer, or create the ring with more --symbols",
                args.symbols,
                path.display(),
                existing.symbol_capacity
            );
        }
    }
    tickloop_ring::crash::install("the feed").context("installing the SIGBUS handler")?;
    let (mut writer, created) = Writer::open_or_create(&path, options)?;
    if created {
        eprintln!(
            "created ring {} ({} slots)",
            path.display(),
            writer.capacity()
        );
    }
    let stop = crate::interrupt::stop_flag();
    let report = tickloop_feed::synthetic::run(
        &mut writer,
        &tickloop_feed::synthetic::SyntheticOptions {
            symbols: args.symbols,
            count: args.count,
            rate: args.rate,
            seed: args.seed,
        },
        &stop,
        &mut |_| {},
    )?;
    eprintln!(
        "published {} candles to {} in {:.3} s ({:.2} M/s), epoch {}, positions {}..{}",
        report.published,
        path.display(),
        report.seconds,
        report.per_second() / 1e6,
        report.epoch,
        report.first_position,
        report.first_position + report.published
    );
    Ok(ExitCode::SUCCESS)
}
