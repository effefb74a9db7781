//! The command line every program built on the library shares (`tickloop`, or a user's
//! `mybot`): the subcommands and their arguments, and the dispatch to the command modules.
//! It holds no logic of its own beyond presenting results; errors leave as one line on stderr.

use crate::ring_cmd::{RingCommand, SyntheticArgs};
use crate::{
    adapter_cmd, backtest_cmd, demo_cmd, doctor_cmd, feed_cmd, metrics_cmd, metrics_http, poll_cmd,
    run_cmd, status_cmd, top_cmd,
};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "tickloop",
    version,
    about = "A deterministic, single-threaded event loop runtime for trading bots on Linux"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Benchmarks, measured against their physical limits and peers in the same run (the
    /// `tickloop-bench` program: `tickloop bench --help` lists them).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
    /// List the strategies this program can run, one name per line.
    Strategies,
    /// Adapter programs speaking docs/adapter-protocol.md (run by the engine, not by hand).
    #[command(subcommand)]
    Adapter(adapter_cmd::AdapterCommand),
    /// An engine's metrics page, read from another process: `metrics serve` exports it to
    /// Prometheus over HTTP.
    #[command(subcommand)]
    Metrics(metrics_cmd::MetricsCommand),
    /// A live terminal view of an engine's metrics page (`--once`: one frame, then exit).
    Top(metrics_cmd::TopArgs),
    /// What on this machine can still reach the engine's core: each knob's verdict, reason
    /// and fix; exit 0 ok, 1 warnings, 2 failures.
    Doctor(doctor_cmd::DoctorArgs),
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

/// Run one command of `cli`; errors come back for [`crate::Program`] to print.
pub(crate) fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    use crate::ring_cmd;
    match cli.command {
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
        Command::Bench { args } => bench(&args),
        Command::Adapter(cmd) => adapter_cmd::run(cmd),
        Command::Metrics(metrics_cmd::MetricsCommand::Serve(args)) => metrics_http::serve(&args),
        Command::Top(args) => top_cmd::top(&args),
        Command::Doctor(args) => doctor_cmd::run(&args),
        Command::Strategies => {
            for name in crate::strategies::registry().names() {
                println!("{name}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `tickloop bench ...`: the benchmarks are their own program (`tickloop-bench`, built next to
/// this one), so the engine links none of the peers they measure. It is run with the same
/// arguments and told where this program is (the adapter benchmark runs its echo adapter).
fn bench(args: &[std::ffi::OsString]) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find this program's own path: {e}"))?;
    let bench = me.with_file_name("tickloop-bench");
    if !bench.is_file() {
        anyhow::bail!(
            "the benchmarks are a program of their own and {} is not there: build it with `cargo build --release -p tickloop-bench`",
            bench.display()
        );
    }
    let err = std::process::Command::new(&bench)
        .args(args)
        .env("TICKLOOP_EXE", &me)
        .exec();
    anyhow::bail!("cannot run {}: {err}", bench.display())
}
