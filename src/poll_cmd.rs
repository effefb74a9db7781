//! `tickloop feed poll`: the live tiered polling feed. It wires `tickloop_feed::poll::PollFeed`
//! (the schedule, an app on the loop) to an exchange adapter (a child process of the loop's
//! adapter host) and to a ring writer, and reports the run.
//!
//! It owns the IO side of the feed: sending the app's requests, writing its bars into the
//! ring (sealed), the writer's heartbeat and the progress line. It never decides what to ask or
//! publish: that is the app's, so a journal of the run replays to the same decisions.

use crate::ring_cmd::RingArg;
use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use tickloop_app::clock::{Nanos, MILLIS, SECONDS};
use tickloop_feed::poll::{PollConfig, PollCounts, PollFeed, PollOutput};
use tickloop_feed::tiered::TieredConfig;
use tickloop_ring::{ring_path, verify, Writer};
use tickloop_runtime::adapter::{
    AdapterConfig, AdapterHandle, AdapterHost, AdapterHostConfig, SharedHost,
};
use tickloop_runtime::event_loop::{EventLoop, LoopBuilder, LoopConfig, LoopView, Service};
use tickloop_runtime::telemetry::{TelemetryConfig, TelemetrySink};

#[derive(Args, Clone)]
pub struct PollArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// The exchange adapter's command line (program and arguments, split on spaces), e.g.
    /// "python3 adapters/binance.py" or "tickloop adapter echo --delay-ms 300".
    #[arg(long, value_name = "COMMAND")]
    pub adapter: String,
    /// The symbols to poll, comma-separated (as the adapter names them).
    #[arg(long, value_delimiter = ',', value_name = "A,B,...")]
    pub symbols: Vec<String>,
    /// A file with more symbols, one per line (blank lines and # comments skipped).
    #[arg(long, value_name = "FILE")]
    pub symbols_file: Option<PathBuf>,
    /// Symbols with an open position: polled every cycle.
    #[arg(long, value_delimiter = ',', value_name = "A,B,...")]
    pub hold: Vec<String>,
    /// The cycle's time target (ms): hot symbols are asked once per cycle.
    #[arg(long, default_value_t = 1500)]
    pub cycle_ms: u64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u32,
    /// Warm symbols are asked every N cycles.
    #[arg(long, default_value_t = 4)]
    pub warm_every: u32,
    /// Cold symbols are asked every N cycles.
    #[arg(long, default_value_t = 16)]
    pub cold_every: u32,
    /// A relative price move (0.005 = 0.5 %) since the last poll that makes a symbol hot.
    #[arg(long, default_value_t = 0.005)]
    pub move_threshold: f64,
    /// Polls without a move before a symbol moves down a tier.
    #[arg(long, default_value_t = 8)]
    pub demote_after: u32,
    /// The bar length asked for (ms); each complete bar is published once.
    #[arg(long, default_value_t = 60_000)]
    pub bar_ms: u64,
    /// A request unanswered after this long fails (ms) and its symbol is asked again when due.
    #[arg(long, default_value_t = 5_000)]
    pub request_timeout_ms: u32,
    /// Stop after this many seconds (default: until SIGTERM or Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Write typed telemetry (JSON lines; a `poll_overrun` per late cycle) into this directory.
    #[arg(long, value_name = "DIR")]
    pub telemetry: Option<PathBuf>,
    /// Record every input and decision; `tickloop replay --journal FILE --verify` checks them.
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// Create the ring if it does not exist.
    #[arg(long)]
    pub create: bool,
    /// Slots, if the ring has to be created.
    #[arg(long, default_value_t = 65536)]
    pub slots: u64,
    /// Pin the loop to this core (the adapter runs on the others).
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The symbols of `--symbols` and `--symbols-file`, checked: at least one, none twice.
fn symbols(args: &PollArgs) -> Result<Vec<String>> {
    let mut names: Vec<String> = args.symbols.iter().map(|s| s.trim().to_string()).collect();
    if let Some(file) = &args.symbols_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read --symbols-file {}", file.display()))?;
        names.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    if let Some(empty) = names.iter().position(String::is_empty) {
        bail!(
            "--symbols: symbol {} is empty (two commas in a row?)",
            empty + 1
        );
    }
    if names.is_empty() {
        bail!("no symbols to poll: pass --symbols A,B,... or --symbols-file FILE");
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
        bail!("symbol {dup:?} is named twice: name each symbol once");
    }
    Ok(names)
}

/// The bars and counters the IO side saw, shared with the progress service.
#[derive(Default)]
struct Seen {
    published: Cell<u64>,
    failed: Cell<u64>,
    overruns: Cell<u64>,
}

/// Performs the app's outputs: requests to the adapter host, bars into the ring.
struct PollSink {
    adapters: AdapterHandle,
    writer: Rc<RefCell<Writer>>,
    /// The ring's id of each polled symbol (indexed like the adapter host's table).
    ring_ids: Vec<u32>,
    names: Vec<String>,
    seen: Rc<Seen>,
}

impl tickloop_app::OutputSink<PollOutput> for PollSink {
    fn output(&mut self, at: Nanos, output: &PollOutput) {
        match *output {
            // A refusal comes back to the app as `Failed { Refused }`.
            PollOutput::Request(r) => {
                let _ = self.adapters.request(at, &r);
            }
            PollOutput::Publish(bar) => {
                let mut w = self.writer.borrow_mut();
                let pos = w.next_position();
                let candle = tickloop_ring::Candle {
                    symbol: self.ring_ids[bar.symbol as usize],
                    ..bar
                };
                w.publish(&verify::seal(pos, candle));
                self.seen.published.set(self.seen.published.get() + 1);
            }
            PollOutput::Overrun(o) => {
                self.seen.overruns.set(self.seen.overruns.get() + 1);
                tracing::warn!(
                    "poll cycle {} overran its target: {} requests still queued or in flight (raise --concurrency or --cycle-ms)",
                    o.cycle,
                    o.pending
                );
            }
            PollOutput::Failed { symbol, reason } => {
                let n = self.seen.failed.get() + 1;
                self.seen.failed.set(n);
                // The first few, then every hundredth: a dead venue must not flood the log.
                if n <= 5 || n.is_multiple_of(100) {
                    tracing::warn!(
                        "request for {} failed ({reason}); asked again when next due ({n} failures so far)",
                        self.names[symbol as usize]
                    );
                }
            }
        }
    }
}

/// The ring writer's heartbeat and the progress line, on the loop's housekeeping tick.
struct Housekeeping {
    writer: Rc<RefCell<Writer>>,
    seen: Rc<Seen>,
    bar: indicatif::ProgressBar,
}

impl Service for Housekeeping {
    fn tick(&mut self, view: &LoopView<'_>) {
        self.writer
            .borrow_mut()
            .heartbeat(tickloop_ring::sys::realtime_ns());
        let secs = view.now.saturating_sub(view.started) as f64 / SECONDS as f64;
        self.bar.set_message(format!(
            "{secs:.0} s: {} bars published, {} failed requests, {} overruns",
            self.seen.published.get(),
            self.seen.failed.get(),
            self.seen.overruns.get()
        ));
    }
}

#[derive(Serialize)]
struct PollReport {
    ring: PathBuf,
    symbols: u32,
    seconds: f64,
    cycles: u64,
    requests: u64,
    overruns: u64,
    #[serde(flatten)]
    counts: PollCounts,
    cycle_p50_ms: f64,
    cycle_p99_ms: f64,
    cycle_max_ms: f64,
    cycle_target_ms: u64,
    concurrency: u32,
    hot: u32,
    warm: u32,
    cold: u32,
    journal: Option<PathBuf>,
    telemetry: String,
}

pub fn poll(args: &PollArgs) -> Result<ExitCode> {
    let names = symbols(args)?;
    let hold = args
        .hold
        .iter()
        .map(|h| {
            names
                .iter()
                .position(|n| n == h.trim())
                .map(|i| i as u32)
                .with_context(|| {
                    format!("--hold {h}: not one of the symbols polled; add it to --symbols")
                })
        })
        .collect::<Result<Vec<u32>>>()?;
    let command: Vec<String> = args
        .adapter
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if command.is_empty() {
        bail!("--adapter is empty: give the exchange adapter's command line");
    }
    let duration = crate::run_cmd::duration_ns(args.duration)?;
    if args.bar_ms == 0 {
        bail!("--bar-ms must be at least 1");
    }
    let mut lc = LoopConfig {
        actions_per_event: args.concurrency.saturating_add(16),
        ..LoopConfig::default()
    };
    lc.host.core = args.cpu;
    // Bar times are wall times: the offset between the loop's clock and the wall clock, from
    // the clock the loop will run on.
    let mut clock = lc.clock();
    let epoch_offset_ns = clock.wall_now() - clock.now() as i64;
    let config = PollConfig {
        tiered: TieredConfig {
            cycle_ns: args.cycle_ms.saturating_mul(MILLIS),
            concurrency: args.concurrency,
            warm_every: args.warm_every,
            cold_every: args.cold_every,
            move_threshold: args.move_threshold,
            demote_after: args.demote_after,
        },
        symbols: names.len() as u32,
        hold,
        bar_ns: args.bar_ms.saturating_mul(MILLIS),
        epoch_offset_ns,
        adapter: 0,
    };
    let app = PollFeed::new(config.clone()).map_err(|e| anyhow::anyhow!("feed poll: {e}"))?;
    let host_config = AdapterHostConfig {
        symbols: names.clone(),
        adapters: vec![AdapterConfig {
            name: "exchange".into(),
            command,
            max_in_flight: args.concurrency,
            // Each answer is a few events (bars, then done); a dying adapter fails all at once.
            event_queue: args.concurrency.saturating_mul(4).saturating_add(64),
            request_timeout_ms: args.request_timeout_ms,
            ..AdapterConfig::default()
        }],
        ..AdapterHostConfig::default()
    };
    // Everything that can be checked is checked before the ring is touched.
    let host = SharedHost::new(
        AdapterHost::new(&host_config)
            .map_err(|e| anyhow::anyhow!("--adapter {:?}: {e}", args.adapter))?,
    );
    let telemetry = TelemetrySink::open(&TelemetryConfig {
        dir: args.telemetry.clone(),
        file_prefix: "poll".into(),
        ..TelemetryConfig::default()
    })?;
    let path = ring_path(&args.ring.ring)?;
    let mut writer = crate::feed_cmd::open_writer(&path, args.create, args.slots, &names)?;
    let ring_ids = names
        .iter()
        .map(|n| writer.symbol(n))
        .collect::<Result<Vec<u32>, _>>()?;
    let writer = Rc::new(RefCell::new(writer));
    let seen = Rc::new(Seen::default());
    let sink = PollSink {
        adapters: host.handle(),
        writer: writer.clone(),
        ring_ids,
        names: names.clone(),
        seen: seen.clone(),
    };
    let mut event_loop = EventLoop::new(
        LoopBuilder {
            config: &lc,
            rings: vec![],
            journal: args.journal.clone(),
            app_config: postcard::to_stdvec(&config)?,
            program: crate::strategies::registry().program,
        },
        app,
        sink,
    )?;
    host.install(&mut event_loop)?;
    event_loop.set_telemetry(telemetry);
    let bar = if std::io::stderr().is_terminal() && !args.json {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    event_loop.add_service(Box::new(Housekeeping {
        writer: writer.clone(),
        seen,
        bar: bar.clone(),
    }))?;
    crate::run_cmd::warn_host_setup(&event_loop);
    if let Some(ns) = duration {
        event_loop.stop_after(ns);
    }
    if !args.json {
        tracing::info!(
            "polling {} symbols through `{}` every {} ms, {} in flight at most, into ring {}; SIGTERM or Ctrl-C stops it",
            names.len(),
            args.adapter,
            args.cycle_ms,
            args.concurrency,
            path.display()
        );
    }
    let started = std::time::Instant::now();
    event_loop.run()?;
    tickloop_runtime::signals::Signals::release_stop();
    bar.finish_and_clear();
    let app = event_loop.app();
    let d = app.poller().durations();
    let ms = |v: u64| v as f64 / MILLIS as f64;
    let (hot, warm, cold) = app.tiers();
    let report = PollReport {
        ring: path,
        symbols: names.len() as u32,
        seconds: started.elapsed().as_secs_f64(),
        // The schedule numbers cycles from 0 once it has started.
        cycles: app.poller().cycles() + u64::from(app.poller().requests > 0),
        requests: app.poller().requests,
        overruns: app.poller().overruns,
        counts: app.counts,
        cycle_p50_ms: if d.is_empty() {
            0.0
        } else {
            ms(d.value_at_quantile(0.5))
        },
        cycle_p99_ms: if d.is_empty() {
            0.0
        } else {
            ms(d.value_at_quantile(0.99))
        },
        cycle_max_ms: ms(d.max()),
        cycle_target_ms: args.cycle_ms,
        concurrency: args.concurrency,
        hot,
        warm,
        cold,
        journal: args.journal.clone(),
        telemetry: event_loop.telemetry().stats().summary(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let c = &report.counts;
        println!(
            "polled {} symbols for {:.1} s: {} cycles, {} overruns (target {} ms, {} in flight at most)",
            report.symbols, report.seconds, report.cycles, report.overruns, args.cycle_ms, args.concurrency
        );
        println!(
            "cycle           p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            report.cycle_p50_ms, report.cycle_p99_ms, report.cycle_max_ms
        );
        println!(
            "requests        {} sent, {} answered ({} without a bar), {} failed",
            report.requests, c.answered, c.empty, c.failed
        );
        println!(
            "ring            {} bars published into {}",
            c.published,
            report.ring.display()
        );
        println!("tiers now       {hot} hot, {warm} warm, {cold} cold");
        println!("telemetry       {}", report.telemetry);
        if let Some(j) = &report.journal {
            println!(
                "journal         {} (check: tickloop replay --journal {} --verify)",
                j.display(),
                j.display()
            );
        }
    }
    if let Some(why) = event_loop.journal_failure() {
        tracing::error!("the journal stopped recording: {why}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
