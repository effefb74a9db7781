//! tickloop's latency harness. Each benchmark measures tickloop next to its physical limit and
//! its peers in the same run, and reports medians and tails (hdrhistogram).
//! Benchmarks print results; they never assert speed (that belongs to committed reports).
//! `report` is what they all print and save; `output` writes their `.hgrm` files and plots;
//! `harness` is how they measure; `all` runs every scenario in turn.
//!
//! It is a program of its own, `tickloop-bench` (`tickloop bench ...` runs it), so the engine
//! links none of the peers measured here (iceoryx2, tokio, crossbeam, rtrb, plotters).

mod adapter;
mod all;
mod cyclictest;
mod harness;
mod loop_bench;
mod output;
mod peers;
mod poll;
mod report;
mod ring;
mod timers;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "tickloop bench",
    bin_name = "tickloop bench",
    version,
    about = "Benchmarks, measured against their physical limits and peers in the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The tiered polling schedule in simulated time, swept over requests in flight: the
    /// smallest concurrency that meets the cycle target.
    Poll(poll::PollBenchArgs),
    /// Ring latency and throughput between two pinned processes, with the cache-line round trip
    /// and the Python ring users build today measured in the same run.
    Ring(ring::RingBenchArgs),
    /// Lateness of a periodic timer in the loop (busy, epoll, io_uring) next to cyclictest on
    /// the same core.
    Timers(timers::TimersBenchArgs),
    /// Feed-to-handler latency through the whole loop (busy and park modes) next to the ring's
    /// own one-way latency.
    Loop(loop_bench::LoopBenchArgs),
    /// A request's round trip through the adapter host and the echo adapter, next to a raw
    /// pipe ping-pong between the same two programs on the same cores.
    Adapter(adapter::AdapterBenchArgs),
    /// Every benchmark in turn (ring, timers, loop, adapter, poll), then a summary; a failed
    /// one is reported and the rest still run (the exit code says one failed).
    All(all::AllBenchArgs),
}

/// The `tickloop` program the benchmarks run (the echo adapter, feeds): `TICKLOOP_EXE` when
/// `tickloop bench` started this one, else the `tickloop` next to it.
pub(crate) fn tickloop_exe() -> Result<std::path::PathBuf, String> {
    if let Some(exe) = std::env::var_os("TICKLOOP_EXE") {
        return Ok(exe.into());
    }
    let me =
        std::env::current_exe().map_err(|e| format!("cannot find tickloop-bench itself: {e}"))?;
    let exe = me.with_file_name("tickloop");
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!(
            "{} is not there: build it with `cargo build --release`, or set TICKLOOP_EXE",
            exe.display()
        ))
    }
}

/// Warnings and errors only: a benchmark starts and stops adapters and loops by the dozen,
/// and their lifecycle lines would bury its progress. `TICKLOOP_LOG` wins.
fn init_logging() {
    let filter = std::env::var("TICKLOOP_LOG")
        .ok()
        .and_then(|spec| tracing_subscriber::EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let cmd = cli.command;
    let output = match &cmd {
        BenchCommand::Poll(a) => &a.output,
        BenchCommand::Ring(a) => &a.output,
        BenchCommand::Timers(a) => &a.output,
        BenchCommand::Loop(a) => &a.output,
        BenchCommand::Adapter(a) => &a.output,
        BenchCommand::All(a) => &a.output,
    };
    // `--out DIR` is checked before it starts, not after minutes of measuring.
    if let Some(dir) = &output.save {
        if let Err(why) = report::check_out_dir(dir) {
            eprintln!("tickloop: error: {why}");
            return ExitCode::from(2);
        }
    }
    let result = match &cmd {
        BenchCommand::Poll(a) => poll::main(a),
        BenchCommand::Ring(a) => ring::main(a),
        BenchCommand::Timers(a) => timers::main(a),
        BenchCommand::Loop(a) => loop_bench::main(a),
        BenchCommand::Adapter(a) => adapter::main(a),
        BenchCommand::All(a) => all::main(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tickloop: error: {err}");
            ExitCode::from(2)
        }
    }
}
