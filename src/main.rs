//! The `tickloop` command line: parses arguments, wires the libraries together, runs. It holds
//! no logic of its own beyond presenting results; errors leave as one line on stderr.

mod adapter_cmd;
mod backtest_cmd;
mod config;
mod demo_cmd;
mod feed_cmd;
mod logging;
mod metrics_cmd;
mod metrics_http;
mod poll_cmd;
mod ring_cmd;
mod ring_demo;
mod run_cmd;
mod status_cmd;
mod strategies;
mod top_cmd;

use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "tickloop",
    version,
    about = "A deterministic, single-threaded event loop runtime for trading bots on Linux"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole system on built-in defaults: feeds, rings, two engines with strategies and
    /// the paper broker, a summary (about 10 s).
    Demo(demo_cmd::DemoArgs),
    /// Shared-memory candle rings: create, inspect, remove, read, demonstrate.
    #[command(subcommand)]
    Ring(RingCommand),
    /// Feeds that write candles into a ring.
    #[command(subcommand)]
    Feed(FeedCommand),
    /// Run the loop: read rings, run the app, until SIGTERM/SIGINT (or --duration).
    Run(run_cmd::RunArgs),
    /// Feed a journal through its app again; with --verify, check every action.
    Replay(run_cmd::ReplayArgs),
    /// Run a strategy over a data file through the loop (simulated clock, paper fills).
    Backtest(backtest_cmd::BacktestArgs),
    /// Show a running engine's status file; exit 0 fresh, 1 stale, stopped or crashed, 2 missing.
    Status(status_cmd::StatusArgs),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List the single-instance locks and who holds them.
    Locks(status_cmd::LocksArgs),
    /// Benchmarks, measured against their physical limits and peers in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Adapter programs speaking docs/adapter-protocol.md (run by the engine, not by hand).
    #[command(subcommand)]
    Adapter(adapter_cmd::AdapterCommand),
    /// An engine's metrics page, read from another process: `metrics serve` exports it to
    /// Prometheus over HTTP.
    #[command(subcommand)]
    Metrics(metrics_cmd::MetricsCommand),
    /// A live terminal view of an engine's metrics page (`--once`: one frame, then exit).
    Top(metrics_cmd::TopArgs),
}

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
    Demo(ring_demo::DemoArgs),
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

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file and print the effective configuration (non-zero exit if invalid).
    Check {
        /// The TOML file.
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
pub enum FeedCommand {
    /// A seeded random walk over N symbols, sealed for verification.
    Synthetic(SyntheticArgs),
    /// Replay a data file (CSV, Binance klines, Databento DBN), validated whole first, paced.
    Replay(feed_cmd::ReplayArgs),
    /// Take candles as JSON lines over loopback TCP or UDP; bad lines are counted and reported.
    Ingest(feed_cmd::IngestArgs),
    /// Poll an exchange adapter for N symbols on a hot/warm/cold schedule, bars into the ring.
    Poll(poll_cmd::PollArgs),
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

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The tiered polling schedule in simulated time, swept over requests in flight: the
    /// smallest concurrency that meets the cycle target.
    Poll(tickloop_bench::poll::PollBenchArgs),
    /// Ring latency and throughput between two pinned processes, with the cache-line round trip
    /// and the Python ring users build today measured in the same run.
    Ring(tickloop_bench::ring::RingBenchArgs),
    /// Lateness of a periodic timer in the loop (busy, epoll, io_uring) next to cyclictest on
    /// the same core.
    Timers(tickloop_bench::timers::TimersBenchArgs),
    /// Feed-to-handler latency through the whole loop (busy and park modes) next to the ring's
    /// own one-way latency.
    Loop(tickloop_bench::loop_bench::LoopBenchArgs),
    /// A request's round trip through the adapter host and the echo adapter, next to a raw
    /// pipe ping-pong between the same two programs on the same cores.
    Adapter(tickloop_bench::adapter::AdapterBenchArgs),
    /// Every benchmark in turn (ring, timers, loop, adapter, poll), then a summary; a failed
    /// one is reported and the rest still run (the exit code says one failed).
    All(tickloop_bench::all::AllBenchArgs),
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode such as 600 or 640"))
}

/// Set by SIGINT/SIGTERM: long-running commands finish their current step and stop.
pub fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registration only fails for forbidden signals, which these are not.
        let _ = signal_hook::flag::register(signal, stop.clone());
    }
    stop
}

/// Run a benchmark; `--out DIR` is checked before it starts, not after minutes of measuring.
fn bench(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    use tickloop_bench as b;
    let output = match &cmd {
        BenchCommand::Poll(a) => &a.output,
        BenchCommand::Ring(a) => &a.output,
        BenchCommand::Timers(a) => &a.output,
        BenchCommand::Loop(a) => &a.output,
        BenchCommand::Adapter(a) => &a.output,
        BenchCommand::All(a) => &a.output,
    };
    if let Some(dir) = &output.save {
        b::report::check_out_dir(dir).map_err(anyhow::Error::msg)?;
    }
    // A benchmark starts and stops adapters and loops by the dozen: their lifecycle lines
    // (info) would bury its progress. Warnings and errors still show; TICKLOOP_LOG wins.
    logging::set_level("warn");
    match &cmd {
        BenchCommand::Poll(a) => b::poll::main(a),
        BenchCommand::Ring(a) => b::ring::main(a),
        BenchCommand::Timers(a) => b::timers::main(a),
        BenchCommand::Loop(a) => b::loop_bench::main(a),
        BenchCommand::Adapter(a) => b::adapter::main(a),
        BenchCommand::All(a) => b::all::main(a),
    }
    .map(|()| ExitCode::SUCCESS)
    .map_err(anyhow::Error::msg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    let result = match cli.command {
        Command::Demo(args) => demo_cmd::run(&args),
        Command::Ring(cmd) => ring_cmd::run(cmd),
        Command::Feed(FeedCommand::Synthetic(args)) => ring_cmd::synthetic(&args),
        Command::Feed(FeedCommand::Replay(args)) => feed_cmd::replay(&args),
        Command::Feed(FeedCommand::Ingest(args)) => feed_cmd::ingest(&args),
        Command::Feed(FeedCommand::Poll(args)) => poll_cmd::poll(&args),
        Command::Run(args) => run_cmd::run(&args),
        Command::Replay(args) => run_cmd::replay(&args),
        Command::Backtest(args) => backtest_cmd::run(&args),
        Command::Status(args) => Ok(status_cmd::status(&args)),
        Command::Config(ConfigCommand::Check { file }) => status_cmd::config_check(&file),
        Command::Locks(args) => status_cmd::locks(&args),
        Command::Bench(cmd) => bench(cmd),
        Command::Adapter(cmd) => adapter_cmd::run(cmd),
        Command::Metrics(metrics_cmd::MetricsCommand::Serve(args)) => metrics_http::serve(&args),
        Command::Top(args) => top_cmd::top(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tickloop: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
