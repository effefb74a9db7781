//! `tickloop backtest`: run a strategy over a data file through the same loop as a live run,
//! on the simulated driver, with the host's paper broker (backtesting.py's fill semantics:
//! docs/backtest-semantics.md), then summarise and write the trade list. This file only
//! parses, builds and prints; the loop and the strategy live in the libraries.

use crate::feed_cmd::LimitArgs;
use crate::strategies::{ForStrategy, Table};
use anyhow::{bail, Context as _};
use clap::Args;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use tickloop_app::clock::Nanos;
use tickloop_app::OutputSink;
use tickloop_feed::{format_ts, Format};
use tickloop_runtime::driver::DriverChoice;
use tickloop_runtime::event_loop::{EventLoop, LoopBuilder, LoopConfig, Mode};
use tickloop_runtime::series::SeriesSource;
use tickloop_strategy::host::{
    HostConfig, HostOutput, HostSetup, HostStats, PaperConfig, Strategy, StrategyHost,
};
use tickloop_strategy::orders::{ClosedTrade, Role};

#[derive(Args, Clone)]
pub struct BacktestArgs {
    /// The data file: backtesting.py CSV, Binance klines CSV, or Databento DBN (.zst too); a
    /// pipe, a FIFO or /dev/stdin too (read once, front to back).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// The strategy, by name (`strategies` lists those this program has).
    #[arg(long, value_name = "NAME")]
    pub strategy: String,
    /// A strategy parameter, e.g. `--param n1=10 --param n2=20` (see `examples/strategies/*.toml`).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// A risk limit, e.g. `--risk max_order_notional=5000` (all off by default).
    #[arg(long = "risk", value_name = "KEY=VALUE")]
    pub risk: Vec<String>,
    /// Starting cash, in quote currency.
    #[arg(long, default_value_t = 10_000.0)]
    pub cash: f64,
    /// The file's format: auto decides from its name and first bytes.
    #[arg(long, default_value = "auto", value_name = "auto|csv|binance|dbn")]
    pub format: Format,
    /// The symbol's name for a CSV file (default: the file name).
    #[arg(long, value_name = "NAME")]
    pub symbol: Option<String>,
    /// Write every closed trade here, one JSON object per line (never overwritten).
    #[arg(long, value_name = "FILE")]
    pub trades_out: Option<PathBuf>,
    /// Record the run's journal here (`tickloop replay --verify` reproduces it).
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
    /// Commission, a fraction of each fill's value charged when a trade opens and when it
    /// closes (backtesting.py's `commission`; 0.002 is 0.2 %).
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub commission: f64,
    /// A fixed commission charged when a trade opens and when it closes (backtesting.py's
    /// `commission=(fixed, fraction)`).
    #[arg(long, default_value_t = 0.0, value_name = "AMOUNT")]
    pub commission_fixed: f64,
    /// The bid-ask spread, a fraction of the price a trade opens against the trader.
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub spread: f64,
    /// The margin a position needs (leverage is 1 / margin; 1 is none).
    #[arg(long, default_value_t = 1.0, value_name = "FRACTION")]
    pub margin: f64,
    /// Fill market orders at the close of the candle they were placed on, not the next open.
    #[arg(long)]
    pub trade_on_close: bool,
    /// Each new order first cancels the symbol's other orders and closes its trades.
    #[arg(long)]
    pub exclusive_orders: bool,
    /// Close what is open at the end of the data (at the last candle's open, as
    /// backtesting.py does), so the trade list and the final equity include it.
    #[arg(long)]
    pub finalize_trades: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// `k=v` pairs into a TOML table, each value read as TOML (numbers, booleans, quoted
/// strings) or, failing that, as a bare string.
pub fn table(pairs: &[String], what: &str) -> anyhow::Result<toml::Table> {
    let mut t = toml::Table::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--{what} {pair:?}: write it as KEY=VALUE");
        };
        let (k, v) = (k.trim(), v.trim());
        let value = match toml::from_str::<toml::Table>(&format!("v = {v}")) {
            Ok(mut parsed) => parsed.remove("v").expect("the key just parsed"),
            Err(_) => toml::Value::String(v.to_string()),
        };
        t.insert(k.to_string(), value);
    }
    Ok(t)
}

pub fn parse<T: serde::de::DeserializeOwned>(pairs: &[String], what: &str) -> anyhow::Result<T> {
    table(pairs, what)?
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("--{what}: {}", e.message().trim()))
}

/// Collects what the summary and the trade list need from the host's outputs.
#[derive(Default)]
struct Collect {
    trades: Vec<ClosedTrade>,
    open: Vec<HostOutput>,
}

impl OutputSink<HostOutput> for Collect {
    fn output(&mut self, _at: Nanos, output: &HostOutput) {
        match output {
            HostOutput::Trade(t) => self.trades.push(*t),
            HostOutput::OpenPosition { .. } => self.open.push(*output),
            _ => {}
        }
    }
}

#[derive(Serialize)]
struct TradeLine<'a> {
    symbol: &'a str,
    size: f64,
    entry_bar: u64,
    exit_bar: u64,
    entry_time: String,
    exit_time: String,
    entry_price: f64,
    exit_price: f64,
    pnl: f64,
    commission: f64,
    exit: &'static str,
}

#[derive(Serialize)]
struct OpenLine<'a> {
    symbol: &'a str,
    size: f64,
    avg_entry: f64,
    last_price: f64,
    unrealized: f64,
}

#[derive(Serialize)]
struct Summary<'a> {
    data: String,
    strategy: &'a str,
    symbols: &'a [String],
    candles: usize,
    first_time: String,
    last_time: String,
    trades: u64,
    wins: usize,
    cash: f64,
    final_cash: f64,
    final_equity: f64,
    return_pct: f64,
    max_drawdown_pct: f64,
    stats: HostStats,
    open_positions: Vec<OpenLine<'a>>,
    finalize_trades: bool,
    trades_out: Option<PathBuf>,
    journal: Option<PathBuf>,
}

pub fn run(args: &BacktestArgs) -> anyhow::Result<ExitCode> {
    let backtest = STRATEGIES
        .get(&args.strategy)
        .map_err(|e| anyhow::anyhow!("--strategy {e}"))?;
    (backtest.0)(args)
}

/// `backtest` for each registered strategy, in the registry's order.
pub(crate) static STRATEGIES: Table<StrategyBacktest> = Table::new();

/// How `backtest` reaches a strategy it knows only by name: `S`'s own function.
pub(crate) struct StrategyBacktest(fn(&BacktestArgs) -> anyhow::Result<ExitCode>);

impl ForStrategy for StrategyBacktest {
    fn of<S: Strategy + 'static>() -> StrategyBacktest {
        StrategyBacktest(backtest::<S>)
    }
}

fn backtest<S: Strategy>(args: &BacktestArgs) -> anyhow::Result<ExitCode> {
    // Check everything before the data is read.
    let strategy = crate::strategies::params::<S>(&table(&args.params, "param")?)
        .map_err(|e| anyhow::anyhow!("--param: {e}"))?;
    let risk = parse(&args.risk, "risk")?;
    let mut trades_file = match &args.trades_out {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| {
                    format!(
                        "--trades-out {}: cannot create it (it is never overwritten)",
                        path.display()
                    )
                })?,
        )),
        None => None,
    };
    let dataset = tickloop_feed::load_with(
        &args.data,
        &args.limits.options(args.format, args.symbol.clone()),
    )?;
    let host = HostConfig {
        cash: args.cash,
        symbols: dataset.symbols.len() as u32,
        stop_when_data_ends: true,
        paper: paper_config(args)?,
        ..HostConfig::default()
    };
    let setup = HostSetup::new(host, risk, strategy);
    setup
        .host
        .validate()
        .map_err(|e| anyhow::anyhow!("--cash: {e}"))?;
    setup
        .risk
        .validate()
        .map_err(|e| anyhow::anyhow!("--risk: {e}"))?;
    let app_config = postcard::to_allocvec(&setup)?;
    let host = StrategyHost::<S>::new(setup).map_err(anyhow::Error::msg)?;
    let config = LoopConfig {
        driver: DriverChoice::Simulated,
        mode: Mode::Busy,
        ..LoopConfig::default()
    };
    let first = dataset.candles[0].ts_ns;
    let last = dataset.candles[dataset.candles.len() - 1].ts_ns;
    let candles = dataset.candles.len();
    let mut event_loop = EventLoop::new(
        LoopBuilder {
            config: &config,
            rings: vec![],
            journal: args.journal.clone(),
            app_config,
            program: crate::strategies::registry().program,
        },
        host,
        Collect::default(),
    )?;
    event_loop.add_fd_source(Box::new(SeriesSource::new(dataset.candles.clone(), 0)?))?;
    event_loop.run()?;
    if let Some(why) = event_loop.journal_failure() {
        bail!("the journal stopped recording: {why}");
    }
    let stats = event_loop.app().stats();
    let final_cash = event_loop.app().book().cash();
    let sink = event_loop.sink();
    let name = |s: u32| dataset.symbols.get(s as usize).map_or("?", |n| n.as_str());
    if let Some(file) = &mut trades_file {
        write_trades(file, &sink.trades, &name)?;
    }
    let open_positions = sink
        .open
        .iter()
        .filter_map(|o| match *o {
            HostOutput::OpenPosition {
                symbol,
                size,
                avg_entry,
                last_price,
                unrealized,
            } => Some(OpenLine {
                symbol: name(symbol),
                size,
                avg_entry,
                last_price,
                unrealized,
            }),
            _ => None,
        })
        .collect();
    let summary = Summary {
        data: args.data.display().to_string(),
        strategy: S::NAME,
        symbols: &dataset.symbols,
        candles,
        first_time: format_ts(first),
        last_time: format_ts(last),
        trades: stats.trades,
        wins: sink.trades.iter().filter(|t| t.pnl > 0.0).count(),
        cash: args.cash,
        final_cash,
        final_equity: stats.equity,
        // backtesting.py's form, so the figures agree to the last digit.
        return_pct: (stats.equity - args.cash) / args.cash * 100.0,
        max_drawdown_pct: -stats.max_drawdown * 100.0,
        stats,
        open_positions,
        finalize_trades: args.finalize_trades,
        trades_out: args.trades_out.clone(),
        journal: args.journal.clone(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(ExitCode::SUCCESS)
}

/// The paper broker's options from the flags, checked (a bad one names its flag).
fn paper_config(args: &BacktestArgs) -> anyhow::Result<PaperConfig> {
    let paper = PaperConfig {
        commission: args.commission,
        commission_fixed: args.commission_fixed,
        spread: args.spread,
        margin: args.margin,
        trade_on_close: args.trade_on_close,
        exclusive_orders: args.exclusive_orders,
        finalize_trades: args.finalize_trades,
    };
    // The paper broker's messages start with the field: name the flag instead.
    paper.validate().map_err(|e| match e.split_once(" = ") {
        Some((field, rest)) => anyhow::anyhow!("--{} {rest}", field.replace('_', "-")),
        None => anyhow::anyhow!(e),
    })?;
    Ok(paper)
}

/// `--trades-out`: one JSON object per closed trade.
fn write_trades<'a>(
    file: &mut impl Write,
    trades: &[ClosedTrade],
    name: &dyn Fn(u32) -> &'a str,
) -> anyhow::Result<()> {
    for t in trades {
        serde_json::to_writer(
            &mut *file,
            &TradeLine {
                symbol: name(t.symbol),
                size: t.size,
                entry_bar: t.entry_bar,
                exit_bar: t.exit_bar,
                entry_time: format_ts(t.entry_ts_ns),
                exit_time: format_ts(t.exit_ts_ns),
                entry_price: t.entry_price,
                exit_price: t.exit_price,
                pnl: t.pnl,
                commission: t.commission,
                exit: match t.exit_role {
                    Role::Entry => "order",
                    Role::StopLoss => "stop_loss",
                    Role::TakeProfit => "take_profit",
                    Role::Close => "close",
                },
            },
        )?;
        file.write_all(b"\n")?;
    }
    file.flush()?;
    Ok(())
}

fn print_summary(s: &Summary<'_>) {
    println!(
        "backtest        {} on {} ({} candles, {} symbol(s), {} .. {})",
        s.strategy,
        s.data,
        s.candles,
        s.symbols.len(),
        s.first_time,
        s.last_time
    );
    println!(
        "trades          {} closed ({} won), {} orders, {} fills, {} denied, {} rejected",
        s.trades, s.wins, s.stats.orders, s.stats.fills, s.stats.denied, s.stats.rejected
    );
    println!(
        "equity          {:.2} -> {:.2} ({:+.4} %), cash {:.2}",
        s.cash, s.final_equity, s.return_pct, s.final_cash
    );
    println!("max drawdown    {:.4} %", s.max_drawdown_pct);
    let why = if s.finalize_trades {
        "opened in the final step by an order of the last candle, as backtesting.py does"
    } else {
        "left open, as backtesting.py does: --finalize-trades closes it"
    };
    for p in &s.open_positions {
        println!(
            "open position   {} {} units from {} (last {}, unrealized {:+.2}; {why})",
            p.symbol, p.size, p.avg_entry, p.last_price, p.unrealized
        );
    }
    if let Some(path) = &s.trades_out {
        println!("trade list      {}", path.display());
    }
    if let Some(path) = &s.journal {
        println!(
            "journal         {} (tickloop replay --journal {} --verify)",
            path.display(),
            path.display()
        );
    }
}
