//! `tickloop run` and `tickloop replay`: wire rings, a driver and an app into the loop, run it,
//! and present what happened. The loop and the app live in the libraries; this file only
//! parses, builds and prints.

use crate::config::{ConfigWatcher, EngineConfig, StartAt};
use crate::strategies::{ForStrategy, Table};
use anyhow::{bail, Context as _};
use clap::Args;
use serde::Serialize;
use std::io::{BufWriter, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use tickloop_app::clock::{Nanos, MICROS, SECONDS};
use tickloop_app::venue::Difference;
use tickloop_app::App;
use tickloop_app::OutputSink;
use tickloop_ops::lock::{self, InstanceLock};
use tickloop_ops::metrics::{Identity, MetricsService};
use tickloop_ops::status::StatusWriter;
use tickloop_ops::status::{SharedTrading, TradingStatus};
use tickloop_ring::{self as ring, Start};
use tickloop_runtime::adapter::{AdapterHandle, AdapterHost, AdapterHostConfig, SharedHost};
use tickloop_runtime::driver::{AnyDriver, DriverChoice, DriverOptions};
use tickloop_runtime::event_loop::{EventLoop, LoopBuilder, LoopConfig, Mode, RingSpec};
use tickloop_runtime::journal::JournalReader;
use tickloop_runtime::telemetry::{TelemetryConfig, TelemetrySink};
use tickloop_strategy::host::{HostOutput, HostSetup, Strategy, StrategyHost};
use tickloop_strategy::orders::OrderState;
use tickloop_strategy::sma::{SmaConfig, SmaOutput, SmaSignals};

#[derive(Args, Clone)]
pub struct RunArgs {
    /// Run from this TOML config file (see examples/tickloop.toml) instead of the flags below.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["rings", "driver", "mode", "core", "sched_fifo", "mlock", "cpu_dma_latency", "timer_capacity", "batch", "journal", "status", "telemetry", "account", "lock_dir", "fast", "slow", "tick_us", "strategy", "metrics_page"])]
    pub config: Option<PathBuf>,
    /// Write the status file here (every second, atomically).
    #[arg(long, value_name = "FILE")]
    pub status: Option<PathBuf>,
    /// Take the single-instance lock for this account (a config file always does).
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
    /// Where instance locks live (default /run/tickloop for root, else $XDG_RUNTIME_DIR/tickloop).
    #[arg(long, value_name = "DIR")]
    pub lock_dir: Option<PathBuf>,
    /// Publish the metrics page here (a name under /dev/shm or a path), for `tickloop metrics
    /// serve` and `tickloop top`; a config file publishes one by default.
    #[arg(long, value_name = "NAME")]
    pub metrics_page: Option<String>,
    /// Write typed telemetry (JSON lines, rotated) into this directory.
    #[arg(long, value_name = "DIR")]
    pub telemetry: Option<PathBuf>,
    /// Ring to read (a name under /dev/shm or a path); repeat for several.
    #[arg(long = "ring", value_name = "NAME")]
    pub rings: Vec<String>,
    /// Start with the next candle published, or the oldest still in the ring.
    #[arg(long, value_enum, default_value_t = crate::ring_cmd::From::Next)]
    pub from: crate::ring_cmd::From,
    /// auto (io_uring if usable, else epoll), epoll, io_uring or simulated.
    #[arg(long, default_value = "auto")]
    pub driver: DriverChoice,
    /// busy (spin, lowest latency) or park (sleep in the driver when idle).
    #[arg(long, default_value = "park")]
    pub mode: Mode,
    /// Pin the loop to this core (checked: a missing or disallowed core is an error).
    #[arg(long)]
    pub core: Option<usize>,
    /// Run under SCHED_FIFO at this priority (1-99).
    #[arg(long, value_name = "PRIORITY")]
    pub sched_fifo: Option<u8>,
    /// Lock all memory (mlockall) so the loop never takes a page fault.
    #[arg(long)]
    pub mlock: bool,
    /// Hold /dev/cpu_dma_latency at 0 while running.
    #[arg(long)]
    pub cpu_dma_latency: bool,
    /// Timers the wheel can hold.
    #[arg(long, default_value_t = LoopConfig::default().timer_capacity)]
    pub timer_capacity: u32,
    /// Candles read from each ring per iteration.
    #[arg(long, default_value_t = LoopConfig::default().batch)]
    pub batch: u32,
    /// Record every input and action to this journal (never overwritten).
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// Stop after this many seconds (default: run until SIGTERM/SIGINT).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// The app's fast and slow moving-average windows.
    #[arg(long, default_value_t = SmaConfig::default().fast)]
    pub fast: u32,
    #[arg(long, default_value_t = SmaConfig::default().slow)]
    pub slow: u32,
    /// Run this strategy (`strategies` lists them) with the paper broker instead of the
    /// signal app.
    #[arg(long, value_name = "NAME")]
    pub strategy: Option<String>,
    /// A strategy parameter, e.g. `--param n1=10`.
    #[arg(long = "param", value_name = "KEY=VALUE", requires = "strategy")]
    pub params: Vec<String>,
    /// A risk limit, e.g. `--risk max_order_notional=5000`.
    #[arg(long = "risk", value_name = "KEY=VALUE", requires = "strategy")]
    pub risk: Vec<String>,
    /// Period of the app's summary timer, in microseconds.
    #[arg(long, default_value_t = 1000)]
    pub tick_us: u64,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Clone)]
pub struct ReplayArgs {
    /// The journal a `tickloop run --journal` recorded.
    #[arg(long, value_name = "FILE")]
    pub journal: PathBuf,
    /// Check every action against the recording: exit 1 at the first difference, 3 if all
    /// match but the journal is incomplete (cut off or damaged), 0 if complete and matching.
    #[arg(long)]
    pub verify: bool,
    /// Driver to replay on (the outputs must not depend on it).
    #[arg(long, default_value = "auto")]
    pub driver: DriverChoice,
    /// Write every replayed action here, one JSON line each.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What a run's output sink tells the final report.
trait SinkReport {
    /// `(label, value)` lines for a person, and the same as JSON.
    fn lines(&self) -> Vec<(&'static str, String)>;
    fn json(&self) -> serde_json::Value;
}

/// Counts the signal app's outputs.
#[derive(Default)]
struct Tally {
    crosses: u64,
    summaries: u64,
}

impl OutputSink<SmaOutput> for Tally {
    fn output(&mut self, _at: Nanos, output: &SmaOutput) {
        match output {
            SmaOutput::Cross { .. } => self.crosses += 1,
            SmaOutput::Tick { .. } => self.summaries += 1,
        }
    }
}

impl SinkReport for Tally {
    fn lines(&self) -> Vec<(&'static str, String)> {
        vec![("crosses", self.crosses.to_string())]
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({ "crosses": self.crosses })
    }
}

/// The strategy host's outputs: kept for the status file, open positions logged at
/// shutdown. (Orders go to the paper broker inside the host; adapters take this place for
/// live venues.)
struct HostSink {
    trading: SharedTrading,
    /// Where `Send` outputs go (orders for a venue adapter).
    adapters: Option<AdapterHandle>,
}

impl OutputSink<HostOutput> for HostSink {
    fn output(&mut self, at: Nanos, output: &HostOutput) {
        let mut t = self.trading.borrow_mut();
        match *output {
            HostOutput::Order(u) => count_order(&mut t, u.state),
            HostOutput::FillFault(f) => {
                t.fill_faults += 1;
                // Every one is in telemetry; the log has the first ten, then every 1000th.
                if t.fill_faults <= 10 || t.fill_faults.is_multiple_of(1000) {
                    tracing::warn!(
                        "adapter {} reported a fill that was not believed ({} so far): order {}, qty {}, price {}, remaining {}: {}; the book did not move",
                        f.adapter, t.fill_faults, f.order, f.qty, f.price, f.remaining, f.fault
                    );
                }
            }
            HostOutput::Replaced(u) => tracing::debug!(
                "order {} replaced: {} left, limit {:?}, stop {:?}",
                u.order,
                u.units.abs(),
                u.limit,
                u.stop
            ),
            HostOutput::Denied { .. } | HostOutput::Refused(_) => {
                t.denied += matches!(output, HostOutput::Denied { .. }) as u64;
                tracing::debug!("{output:?}");
            }
            HostOutput::Fill(f) => {
                t.fills += 1;
                if let Some(p) = t.positions.get_mut(f.symbol as usize) {
                    *p += f.units;
                }
            }
            HostOutput::Trade(trade) => {
                t.trades += 1;
                t.realized_pnl += trade.pnl;
            }
            HostOutput::OpenPosition {
                symbol,
                size,
                avg_entry,
                last_price,
                unrealized,
            } => tracing::info!(
                "open position left as it is: symbol {symbol}, {size} units from {avg_entry} (last {last_price}, unrealized {unrealized:+.2})"
            ),
            HostOutput::Send(request) => match &self.adapters {
                // A refusal also reaches the app as the request's `Failed` event.
                Some(h) => {
                    if let Err(e) = h.request(at, &request) {
                        tracing::debug!("order {} refused by the adapter host: {e:?}", request.id);
                    }
                }
                None => tracing::error!(
                    "order {} is for adapter {}, but no [[adapters.adapter]] is configured",
                    request.id,
                    request.adapter
                ),
            },
            HostOutput::IntentsDropped { dropped } => {
                tracing::warn!("{dropped} order intents dropped (intents_per_event)")
            }
            HostOutput::Unknown { .. }
            | HostOutput::Reconciled { .. }
            | HostOutput::Difference { .. } => reconcile_output(&mut t, output),
        }
    }
}

/// The status counts of an order's transition.
fn count_order(t: &mut tickloop_ops::status::TradingStatus, state: OrderState) {
    match state {
        OrderState::Submitted => {
            t.orders += 1;
            t.open_orders += 1;
        }
        OrderState::Rejected => t.rejected += 1,
        OrderState::Cancelled | OrderState::Expired => t.cancelled += 1,
        _ => {}
    }
    if state.is_final() && state != OrderState::Denied {
        t.open_orders = t.open_orders.saturating_sub(1);
    }
}

/// The status counts and log lines of the host's reconciliation outputs.
fn reconcile_output(t: &mut tickloop_ops::status::TradingStatus, output: &HostOutput) {
    match *output {
        HostOutput::Unknown { order, reason } => {
            t.orders_unknown += 1;
            tracing::warn!("order {order}: {reason}; it is Unknown until the venue says what became of it (it is never placed again)");
        }
        HostOutput::Reconciled {
            first,
            positions,
            orders,
            differences,
            cash,
            ..
        } => {
            t.reconciliations += 1;
            tracing::info!(
                    "reconciled with the venue{}: {positions} position(s), {orders} open order(s), cash {cash}, {differences} difference(s)",
                    if first { " before the first order" } else { "" }
                );
        }
        HostOutput::Difference {
            difference,
            symbol,
            venue,
            adopted,
            ..
        } => {
            t.reconcile_differences += 1;
            match difference {
                Difference::OrderNotInEngine if adopted => t.open_orders += 1,
                Difference::Position if adopted => {
                    if let Some(p) = t.positions.get_mut(symbol as usize) {
                        *p = venue;
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
}

impl SinkReport for HostSink {
    fn lines(&self) -> Vec<(&'static str, String)> {
        let t = self.trading.borrow();
        vec![
            (
                "orders",
                format!(
                    "{} ({} open, {} fills, {} rejected, {} denied, {} fill faults)",
                    t.orders, t.open_orders, t.fills, t.rejected, t.denied, t.fill_faults
                ),
            ),
            (
                "trades",
                format!("{} closed, realized PnL {:+.2}", t.trades, t.realized_pnl),
            ),
        ]
    }
    fn json(&self) -> serde_json::Value {
        serde_json::to_value(&*self.trading.borrow()).unwrap_or_default()
    }
}

#[derive(Serialize)]
struct Percentiles {
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
}

fn percentiles(h: &hdrhistogram::Histogram<u64>) -> Percentiles {
    Percentiles {
        p50_ns: h.value_at_quantile(0.5),
        p99_ns: h.value_at_quantile(0.99),
        p999_ns: h.value_at_quantile(0.999),
        max_ns: h.max(),
    }
}

#[derive(Serialize)]
struct PeriodicReport {
    timer: u32,
    period_ns: u64,
    budget_ns: u64,
    firings: u64,
    lateness: Percentiles,
    took: Percentiles,
    overruns: u64,
    skipped: u64,
}

#[derive(Serialize)]
struct RunReport {
    stopped_by: String,
    driver: String,
    driver_fallback: Option<String>,
    mode: Mode,
    host: tickloop_runtime::host::HostReport,
    stats: tickloop_runtime::event_loop::LoopStats,
    periodic: Vec<PeriodicReport>,
    app: String,
    outputs: serde_json::Value,
    #[serde(skip)]
    output_lines: Vec<(&'static str, String)>,
    journal: Option<PathBuf>,
    journal_failure: Option<String>,
    telemetry: String,
}

/// The app a run hosts, with its config as the journal records it.
enum AppChoice {
    /// The `[sma]` signal app (no orders).
    Signals(SmaConfig),
    /// A strategy with the order host and risk (postcard `HostSetup`).
    Strategy { name: String, config: Vec<u8> },
}

/// Everything a run needs, from the command line or from a config file.
pub(crate) struct Plan {
    config: LoopConfig,
    rings: Vec<RingSpec>,
    journal: Option<PathBuf>,
    app: AppChoice,
    /// Adapter programs to run (none from the command line).
    adapters: AdapterHostConfig,
    status: Option<(PathBuf, u64)>,
    telemetry: TelemetryConfig,
    /// Where to publish the metrics page (none: no page).
    metrics: Option<PathBuf>,
    component: String,
    account: String,
    /// The config file to poll for changes, as loaded.
    watch: Option<(PathBuf, EngineConfig)>,
    /// Take the single-instance lock for (component, account) in this directory.
    lock_dir: Option<PathBuf>,
}

fn plan_from_args(args: &RunArgs) -> anyhow::Result<Plan> {
    let mut config = LoopConfig {
        driver: args.driver,
        mode: args.mode,
        timer_capacity: args.timer_capacity,
        batch: args.batch,
        ..LoopConfig::default()
    };
    config.host.core = args.core;
    config.host.sched_fifo = args.sched_fifo;
    config.host.mlock = args.mlock;
    config.host.cpu_dma_latency = args.cpu_dma_latency;
    let sma = SmaConfig {
        fast: args.fast,
        slow: args.slow,
        tick_ns: args.tick_us.saturating_mul(MICROS),
        ..SmaConfig::default()
    };
    let start = match args.from {
        crate::ring_cmd::From::Next => Start::Next,
        crate::ring_cmd::From::Oldest => Start::Oldest,
    };
    let rings = args
        .rings
        .iter()
        .map(|name| {
            Ok(RingSpec {
                path: ring::ring_path(name)?,
                start,
            })
        })
        .collect::<Result<Vec<_>, ring::RingError>>()?;
    let app = match &args.strategy {
        None => AppChoice::Signals(sma),
        Some(name) => {
            let table = crate::backtest_cmd::table(&args.params, "param")?;
            let risk = crate::backtest_cmd::parse(&args.risk, "risk")?;
            let config = crate::strategies::setup_bytes(
                name,
                &tickloop_strategy::host::HostConfig::default(),
                &risk,
                &table,
            )
            .map_err(|e| anyhow::anyhow!("--strategy {name}: {e}"))?;
            AppChoice::Strategy {
                name: name.clone(),
                config,
            }
        }
    };
    Ok(Plan {
        config,
        rings,
        journal: args.journal.clone(),
        app,
        adapters: AdapterHostConfig::default(),
        status: args.status.clone().map(|p| (p, 1000)),
        telemetry: TelemetryConfig {
            dir: args.telemetry.clone(),
            ..TelemetryConfig::default()
        },
        metrics: metrics_page(args.metrics_page.as_deref())?,
        component: "engine".into(),
        account: args.account.clone().unwrap_or_else(|| "default".into()),
        watch: None,
        lock_dir: args
            .account
            .as_ref()
            .map(|_| args.lock_dir.clone().unwrap_or_else(lock::default_dir)),
    })
}

/// What this account's client order ids start with: `tl-`, the account (at most 16 of its
/// characters), `-`. With an order id of at most 16 digits it fits the 36 characters venues
/// allow (Binance: `^[.A-Z:/a-z0-9_-]{1,36}$`).
pub(crate) fn client_prefix(account: &str) -> String {
    let cut: String = account.chars().take(16).collect();
    format!("tl-{cut}-")
}

/// In `[journal] path`: this start's epoch (a new file every start).
const EPOCH_PLACEHOLDER: &str = "{epoch}";

fn plan_from_file(path: &std::path::Path) -> anyhow::Result<Plan> {
    let mut file = EngineConfig::load(path)?;
    crate::logging::set_level(&file.log.level);
    let loaded = file.clone();
    let lock_dir = file
        .engine
        .lock_dir
        .clone()
        .unwrap_or_else(lock::default_dir);
    // Orders for a venue are named by ids no earlier start used: the epoch counts starts.
    // A journal path may name the start by it, so a restart never finds its file taken.
    let venue = file.strategy.is_some() && file.orders.adapter.is_some();
    let journal_per_start = file
        .journal
        .path
        .as_ref()
        .is_some_and(|p| p.to_string_lossy().contains(EPOCH_PLACEHOLDER));
    if venue || journal_per_start {
        let max = tickloop_strategy::host::MAX_EPOCH;
        let epoch = lock::next_epoch(&lock_dir, &file.engine.account, max)?;
        if venue {
            file.epoch = epoch;
        }
        if let Some(p) = &file.journal.path {
            let named = p
                .to_string_lossy()
                .replace(EPOCH_PLACEHOLDER, &epoch.to_string());
            file.journal.path = Some(PathBuf::from(named));
        }
    }
    file.adapters
        .set_client_prefix(&client_prefix(&file.engine.account));
    let app = match &file.strategy {
        None => AppChoice::Signals(file.sma.clone()),
        Some(st) => AppChoice::Strategy {
            name: st.name.clone(),
            config: file.app_config().map_err(anyhow::Error::msg)?,
        },
    };
    let metrics = file.metrics_page()?;
    let rings = file
        .rings
        .iter()
        .map(|r| {
            Ok(RingSpec {
                path: ring::ring_path(&r.name)?,
                start: match r.start {
                    StartAt::Next => Start::Next,
                    StartAt::Oldest => Start::Oldest,
                },
            })
        })
        .collect::<Result<Vec<_>, ring::RingError>>()?;
    Ok(Plan {
        config: file.event_loop,
        rings,
        journal: file.journal.path,
        app,
        adapters: file.adapters,
        status: file.status.path.map(|p| (p, file.status.interval_ms)),
        telemetry: file.telemetry,
        metrics,
        component: file.engine.component,
        account: file.engine.account,
        watch: Some((path.to_path_buf(), loaded)),
        lock_dir: Some(lock_dir),
    })
}

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let plan = match &args.config {
        Some(path) => plan_from_file(path)?,
        None => plan_from_args(args)?,
    };
    // Adapter programs are looked up now: a missing one is an error before anything starts.
    let adapters = if plan.adapters.adapters.is_empty() {
        None
    } else {
        Some(SharedHost::new(AdapterHost::new(&plan.adapters)?))
    };
    match &plan.app {
        AppChoice::Signals(sma) => {
            let app = SmaSignals::new(sma.clone()).map_err(anyhow::Error::msg)?;
            let config = postcard::to_allocvec(sma)?;
            run_with(args, plan, app, config, Tally::default(), None, adapters)
        }
        AppChoice::Strategy { name, config } => {
            let fns = STRATEGIES.get(name).map_err(anyhow::Error::msg)?;
            let config = config.clone();
            (fns.run)(args, plan, config, adapters)
        }
    }
}

/// `run` and `replay` for each registered strategy, in the registry's order.
pub(crate) static STRATEGIES: Table<StrategyFns> = Table::new();

/// How `run` and `replay` reach a strategy they know only by name: `S`'s own functions.
pub(crate) struct StrategyFns {
    run: fn(&RunArgs, Plan, Vec<u8>, Option<SharedHost>) -> anyhow::Result<ExitCode>,
    replay: fn(ReplayInput<'_>) -> anyhow::Result<tickloop_runtime::replay::ReplayReport>,
}

impl ForStrategy for StrategyFns {
    fn of<S: Strategy + 'static>() -> StrategyFns {
        StrategyFns {
            run: run_strategy::<S>,
            replay: replay_host::<S>,
        }
    }
}

fn run_strategy<S: Strategy>(
    args: &RunArgs,
    plan: Plan,
    config: Vec<u8>,
    adapters: Option<SharedHost>,
) -> anyhow::Result<ExitCode> {
    let setup: HostSetup<S::Config> = postcard::from_bytes(&config)?;
    let trading = std::rc::Rc::new(std::cell::RefCell::new(TradingStatus {
        strategy: S::NAME.into(),
        positions: vec![0.0; setup.host.symbols as usize],
        ..TradingStatus::default()
    }));
    let host = StrategyHost::<S>::new(setup).map_err(anyhow::Error::msg)?;
    let sink = HostSink {
        trading: trading.clone(),
        adapters: adapters.as_ref().map(|h| h.handle()),
    };
    run_with(args, plan, host, config, sink, Some(trading), adapters)
}

/// `--duration SECONDS` as the loop's time, checked: positive and finite.
pub(crate) fn duration_ns(seconds: Option<f64>) -> anyhow::Result<Option<Nanos>> {
    match seconds {
        Some(d) if !(d > 0.0 && d.is_finite()) => {
            bail!("--duration {d} must be a positive number of seconds")
        }
        Some(d) => Ok(Some((d * SECONDS as f64) as Nanos)),
        None => Ok(None),
    }
}

/// `--metrics-page NAME` as a path.
fn metrics_page(arg: Option<&str>) -> anyhow::Result<Option<PathBuf>> {
    Ok(arg.map(tickloop_ops::metrics::page_path).transpose()?)
}

/// The engine's metrics page, sized from the loop's limits (every periodic timer it allows,
/// every ring it reads, every adapter the host allows), publishing these adapters and
/// order counters.
fn metrics_service<A: App, K: OutputSink<A::Output>>(
    path: &std::path::Path,
    config: &LoopConfig,
    event_loop: &EventLoop<A, K>,
    instance: &str,
    (adapters, trading): (Option<&SharedHost>, Option<&SharedTrading>),
    quiet: bool,
) -> anyhow::Result<MetricsService> {
    let shape = tickloop_ops::metrics::layout::Shape {
        timers: config.periodic_capacity,
        rings: event_loop.rings().len() as u32,
        adapters: tickloop_runtime::adapter::MAX_ADAPTERS as u32,
    };
    let id = Identity {
        instance,
        started_unix_ns: config.clock().wall_now(),
        interval_ns: config.housekeeping_ns,
    };
    let mut service = MetricsService::create(path, shape, &id)?;
    if let Some(host) = adapters {
        service.set_adapters(host.handle());
    }
    if let Some(t) = trading {
        service.set_trading(t.clone());
    }
    if !quiet {
        tracing::info!(
            "metrics page {} (`tickloop top --page {0}`, `tickloop metrics serve --page {0}`)",
            path.display()
        );
    }
    Ok(service)
}

/// Log what host setup (pinning, SCHED_FIFO, mlock...) could not do, before the loop runs.
pub(crate) fn warn_host_setup<A: App, K: OutputSink<A::Output>>(event_loop: &EventLoop<A, K>) {
    for warning in &event_loop.host_report().warnings {
        tracing::warn!("{warning}");
    }
}

/// The status file's writer, checked before the loop starts (an unwritable status directory
/// is a startup error, not a surprise an hour later), with what it shows besides the loop.
fn status_writer(
    status: Option<&(PathBuf, u64)>,
    (component, account): (&str, &str),
    extra: &tickloop_ops::status::SharedExtra,
    trading: Option<&SharedTrading>,
) -> anyhow::Result<Option<StatusWriter>> {
    let Some((path, interval_ms)) = status else {
        return Ok(None);
    };
    let interval = interval_ms.saturating_mul(1_000_000);
    let writer = StatusWriter::new(path, interval, component, account, extra.clone())?;
    Ok(Some(match trading {
        Some(t) => writer.with_trading(t.clone()),
        None => writer,
    }))
}

fn run_with<A: App, K: OutputSink<A::Output> + SinkReport>(
    args: &RunArgs,
    plan: Plan,
    app: A,
    app_config: Vec<u8>,
    sink: K,
    trading: Option<SharedTrading>,
    adapters: Option<SharedHost>,
) -> anyhow::Result<ExitCode> {
    let Plan {
        config,
        rings,
        journal,
        app: _,
        adapters: _,
        status,
        telemetry,
        metrics,
        component,
        account,
        watch,
        lock_dir,
    } = plan;
    // One engine per (component, account): taken first, held until the process ends (the
    // kernel releases it even on SIGKILL).
    let _instance = match &lock_dir {
        Some(dir) => {
            let (held, acquired) = InstanceLock::acquire(dir, &component, &account)?;
            if let Some(note) = acquired.note() {
                tracing::info!("{note}");
            }
            Some(held)
        }
        None => None,
    };
    let telemetry = TelemetrySink::open(&telemetry)?;
    let duration = duration_ns(args.duration)?;
    let extra = tickloop_ops::status::SharedExtra::default();
    let status_writer = status_writer(
        status.as_ref(),
        (&component, &account),
        &extra,
        trading.as_ref(),
    )?;
    let ring_count = rings.len();
    let mode = config.mode;
    let core = config.host.core;
    let builder = LoopBuilder {
        config: &config,
        rings,
        journal: journal.clone(),
        app_config,
        program: crate::strategies::registry().program,
    };
    // Before the rings are mapped: a ring truncated under the engine is then one line naming
    // it and a `crashed` status, not a silent SIGBUS.
    tickloop_ring::crash::install("the engine").context("installing the SIGBUS handler")?;
    let mut event_loop = EventLoop::new(builder, app, sink)?;
    for ring in event_loop.rings() {
        let parks = mode == Mode::Park;
        if let Some(warning) = crate::ring_cmd::unregistered_warning(ring.reader(), parks) {
            tracing::warn!("{warning}");
        }
    }
    // Before the status writer: services stop in order, so the status says "running" while
    // adapters get their grace periods.
    if let Some(host) = &adapters {
        host.install(&mut event_loop)?;
    }
    event_loop.set_telemetry(telemetry);
    if let Some(path) = &metrics {
        let instance = format!("{component}@{account}");
        let sources = (adapters.as_ref(), trading.as_ref());
        let service = metrics_service(path, &config, &event_loop, &instance, sources, args.json)?;
        event_loop.add_service(Box::new(service))?;
    }
    if let Some((path, loaded)) = watch {
        let poll_ms = loaded.config.poll_ms;
        event_loop.add_service(Box::new(ConfigWatcher::new(
            &path,
            loaded,
            poll_ms,
            extra.clone(),
        )))?;
    }
    if let Some(mut writer) = status_writer {
        if let Some(host) = &adapters {
            writer.set_adapters(host.handle());
        }
        event_loop.add_service(Box::new(writer))?;
    }
    if let Some(notifier) = tickloop_ops::systemd::Notifier::from_env() {
        event_loop.add_service(Box::new(notifier))?;
    }
    if let Some(why) = &event_loop.driver_report().fallback {
        tracing::warn!("io_uring is not usable ({why}); the loop runs on epoll");
    }
    warn_host_setup(&event_loop);
    crate::doctor_cmd::at_start(&config.host, &extra)?;
    if let Some(ns) = duration {
        event_loop.stop_after(ns);
    }
    if !args.json {
        tracing::info!(
            "loop running on {} in {} mode, reading {} ring(s){}; SIGTERM or Ctrl-C stops it",
            event_loop.driver_kind().name(),
            mode,
            ring_count,
            core.map(|c| format!(", pinned to core {c}"))
                .unwrap_or_default(),
        );
    }
    let stopped = event_loop.run()?;
    // The loop has shut down; what is left is reporting. From here a second SIGTERM or
    // SIGINT ends the process at once (the default action) instead of waiting in a signalfd.
    tickloop_runtime::signals::Signals::release_stop();
    let report = RunReport {
        stopped_by: format!("{stopped:?}"),
        driver: event_loop.driver_kind().name().to_string(),
        driver_fallback: event_loop.driver_report().fallback.clone(),
        mode,
        host: event_loop.host_report().clone(),
        stats: event_loop.stats(),
        periodic: event_loop
            .periodic()
            .map(|p| PeriodicReport {
                timer: p.timer.unwrap_or_default(),
                period_ns: p.period,
                budget_ns: p.budget,
                firings: p.lateness.len(),
                lateness: percentiles(&p.lateness),
                took: percentiles(&p.took),
                overruns: p.overruns,
                skipped: p.skipped,
            })
            .collect(),
        app: event_loop.app().name().to_string(),
        outputs: event_loop.sink().json(),
        output_lines: event_loop.sink().lines(),
        journal,
        journal_failure: event_loop.journal_failure().map(str::to_string),
        telemetry: event_loop.telemetry().stats().summary(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_run(&report);
    }
    if let Some(why) = &report.journal_failure {
        tracing::error!("the journal stopped recording: {why}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_run(r: &RunReport) {
    let s = &r.stats;
    println!("stopped by      {}", r.stopped_by);
    println!("driver          {} ({} mode)", r.driver, r.mode);
    println!(
        "events          {} ({} candles, {} lost, {} timer firings)",
        s.events, s.candles, s.candles_lost, s.timers_fired
    );
    println!(
        "iterations      {} ({} parks, {} fd polls)",
        s.iterations, s.parks, s.fd_polls
    );
    println!(
        "backlog         {} iterations left candles for the next one (max backlog {})",
        s.backlog_iterations, s.max_backlog
    );
    println!("app             {}", r.app);
    for (label, value) in &r.output_lines {
        println!("{label:<15} {value}");
    }
    for p in &r.periodic {
        println!(
            "timer {}         every {} µs: {} firings, lateness p50 {} p99 {} max {} ns, run p99 {} ns, {} overruns",
            p.timer,
            p.period_ns / 1000,
            p.firings,
            p.lateness.p50_ns,
            p.lateness.p99_ns,
            p.lateness.max_ns,
            p.took.p99_ns,
            p.overruns
        );
    }
    if let Some(j) = &r.journal {
        println!(
            "journal         {} ({} records, {} dropped)",
            j.display(),
            s.journal_records,
            s.journal_dropped
        );
    }
}

/// What replaying a journal needs, whatever app it holds.
pub(crate) struct ReplayInput<'a> {
    pub header: &'a tickloop_runtime::journal::JournalHeader,
    pub journal: &'a mut JournalReader,
    pub driver: &'a mut AnyDriver,
    pub out: Option<&'a mut BufWriter<std::fs::File>>,
    pub progress: &'a mut dyn FnMut(u64),
}

/// Replay a journal of the app `build` makes from the journal's config (postcard `C`; `what`
/// names it in an error).
fn replay_app<C: serde::de::DeserializeOwned, A: App>(
    what: &str,
    build: impl FnOnce(C) -> Result<A, String>,
    input: ReplayInput<'_>,
) -> anyhow::Result<tickloop_runtime::replay::ReplayReport> {
    let config: C = postcard::from_bytes(&input.header.app_config)
        .with_context(|| format!("the journal's {what} config does not decode"))?;
    let mut app = build(config).map_err(anyhow::Error::msg)?;
    Ok(tickloop_runtime::replay::replay(
        input.journal,
        &mut app,
        input.driver,
        input.header.actions_per_event as usize,
        input.out.map(|w| w as &mut dyn std::io::Write),
        input.progress,
    )?)
}

/// Replay a journal of a strategy host running `S`.
fn replay_host<S: Strategy>(
    input: ReplayInput<'_>,
) -> anyhow::Result<tickloop_runtime::replay::ReplayReport> {
    replay_app(S::NAME, StrategyHost::<S>::new, input)
}

pub fn replay(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let mut journal = JournalReader::open(&args.journal)?;
    let header = journal.header().clone();
    if header.build != env!("CARGO_PKG_VERSION") {
        tracing::warn!(
            "{} was recorded by tickloop {}, this is {}: a divergence may come from the app's code changing",
            args.journal.display(),
            header.build,
            env!("CARGO_PKG_VERSION")
        );
    }
    let (mut driver, report) = AnyDriver::open(args.driver, DriverOptions::default())
        .context("cannot open the replay's driver")?;
    if let Some(why) = &report.fallback {
        tracing::warn!("io_uring is not usable ({why}); replaying on epoll");
    }
    let mut out = match &args.out {
        Some(path) => Some(BufWriter::new(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| {
                    format!(
                        "cannot create --out {} (it is never overwritten)",
                        path.display()
                    )
                })?,
        )),
        None => None,
    };
    let bar = if std::io::stderr().is_terminal() && !args.json {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message("replaying");
        Some(bar)
    } else {
        None
    };
    let mut progress = |n: u64| {
        if let Some(bar) = &bar {
            bar.set_position(n);
        }
    };
    let input = ReplayInput {
        header: &header,
        journal: &mut journal,
        driver: &mut driver,
        out: out.as_mut(),
        progress: &mut progress,
    };
    let result = match header.app.as_str() {
        tickloop_feed::poll::PollFeed::NAME => {
            replay_app("poll feed", tickloop_feed::poll::PollFeed::new, input)?
        }
        SmaSignals::NAME => replay_app("sma", SmaSignals::new, input)?,
        name => {
            let registry = crate::strategies::registry();
            let fns = STRATEGIES.get(name).map_err(|_| {
                anyhow::anyhow!(
                    "journal {} was recorded by {} running strategy {name:?}, which {} does not have (it has {}): replay it with the program that recorded it",
                    args.journal.display(),
                    header.program,
                    registry.program,
                    registry.names().join(", ")
                )
            })?;
            (fns.replay)(input)?
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "replayed {} inputs and {} actions of app {} (recorded on {}, replayed on {})",
            result.inputs, result.actions, result.app, result.recorded_on, result.replayed_on
        );
    }
    if result.interrupted {
        eprintln!(
            "tickloop: replay interrupted after {} inputs",
            result.inputs
        );
        return Ok(ExitCode::from(130));
    }
    if args.verify {
        if let Some(d) = &result.divergence {
            eprintln!(
                "tickloop: replay diverges at input {} ({}), action {}: recorded {}, replayed {}",
                d.input, d.event, d.action, d.recorded, d.replayed
            );
            return Ok(ExitCode::from(1));
        }
        if let Some(why) = &result.truncated {
            eprintln!(
                "tickloop: the {} inputs the journal holds match, but it is incomplete: {why}",
                result.inputs
            );
            return Ok(ExitCode::from(3));
        }
        if !args.json {
            println!("verify: every action matches the recording");
        }
    } else if let Some(why) = &result.truncated {
        eprintln!("tickloop: note: the journal is incomplete: {why}");
    }
    Ok(ExitCode::SUCCESS)
}
