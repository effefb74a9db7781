//! `tickloop demo`: the whole system on built-in defaults, no arguments, no setup. Two
//! engines (`tickloop run`, each its own process with its own config, lock, status, telemetry
//! and journal) run the example strategies with the paper broker: `sma_cross` on real EURUSD
//! hourly candles replayed by a feed process, `drop_trigger` on a synthetic 8-symbol random
//! walk from another. Candles cross processes through shared-memory rings. It shows progress,
//! stops the engines with SIGTERM as a service manager would, verifies each journal by replay,
//! and prints a summary a person can read. Rings are removed whatever happens; the run's files
//! stay for inspection.
//!
//! This file only orchestrates processes and prints; everything it runs is a public command.

use anyhow::{bail, Context as _, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tickloop_ring::{self as ring, CreateOptions};

/// The bundled EURUSD hourly candles (backtesting.py's sample data), so the demo needs no files.
const EURUSD: &str = include_str!("../data/EURUSD.csv");
const EURUSD_CANDLES: u64 = 5000;

#[derive(clap::Args, Clone)]
pub struct DemoArgs {
    /// Where the run's files (configs, status, telemetry, journals) go; default a new
    /// directory under the system's temporary directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Replay speed of the EURUSD candles (their 294 days take about 5 s at the default).
    #[arg(long, default_value_t = 5_000_000.0)]
    pub speed: f64,
    /// Synthetic candles (8 symbols) the second engine trades on.
    #[arg(long, default_value_t = 100_000)]
    pub synthetic: u64,
    /// Synthetic candles per second.
    #[arg(long, default_value_t = 25_000.0)]
    pub synthetic_rate: f64,
}

/// One engine of the demo and what it needs.
struct Engine {
    label: &'static str,
    strategy: &'static str,
    ring: String,
    config: PathBuf,
    status: PathBuf,
    journal: PathBuf,
    telemetry: PathBuf,
    expected: u64,
    child: Option<Child>,
}

/// Stops the children and removes the rings on every way out.
struct Cleanup {
    rings: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.children {
            if let Ok(None) = child.try_wait() {
                // SAFETY: signalling our own child by pid.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                let _ = child.wait();
            }
        }
        for ring in &self.rings {
            let _ = std::fs::remove_file(ring);
        }
    }
}

fn status_of(path: &Path) -> serde_json::Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn write_config(e: &Engine, dir: &Path, params: &str, symbols: u32, extra: &str) -> Result<()> {
    let text = format!(
        "# Written by `tickloop demo`.\n\
         [engine]\ncomponent = \"demo\"\naccount = \"{label}\"\nlock_dir = \"{locks}\"\n\n\
         [[rings]]\nname = \"{ring}\"\nstart = \"oldest\"\n\n\
         [status]\npath = \"{status}\"\ninterval_ms = 100\n\n\
         [journal]\npath = \"{journal}\"\n\n\
         [telemetry]\ndir = \"{telemetry}\"\n\n\
         [strategy]\nname = \"{strategy}\"\n\n[strategy.params]\n{params}\n\
         [orders]\ncash = 10000.0\nsymbols = {symbols}\n{extra}",
        label = e.label,
        locks = dir.join("locks").display(),
        ring = e.ring,
        status = e.status.display(),
        journal = e.journal.display(),
        telemetry = e.telemetry.display(),
        strategy = e.strategy,
    );
    std::fs::create_dir_all(&e.telemetry)?;
    std::fs::write(&e.config, text).with_context(|| format!("writing {}", e.config.display()))?;
    Ok(())
}

pub fn run(args: &DemoArgs) -> Result<ExitCode> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        bail!("--speed {} must be a positive number", args.speed);
    }
    if args.synthetic == 0 || !(args.synthetic_rate.is_finite() && args.synthetic_rate > 0.0) {
        bail!("--synthetic and --synthetic-rate must be positive");
    }
    let stop = crate::interrupt::stop_flag();
    let exe = std::env::current_exe().context("finding the tickloop executable")?;
    let pid = std::process::id();
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("tickloop-demo-{pid}")),
    };
    std::fs::create_dir_all(dir.join("locks"))
        .with_context(|| format!("creating the demo's directory {}", dir.display()))?;
    let data = dir.join("EURUSD.csv");
    std::fs::write(&data, EURUSD).with_context(|| format!("writing {}", data.display()))?;

    let mut cleanup = Cleanup {
        rings: Vec::new(),
        children: Vec::new(),
    };
    let mut engines = Vec::new();
    for (label, strategy, expected) in [
        ("eurusd", "sma_cross", EURUSD_CANDLES),
        ("synthetic", "drop_trigger", args.synthetic),
    ] {
        let ring = format!("tickloop-demo-{pid}-{label}");
        let path = ring::ring_path(&ring)?;
        ring::create(
            &path,
            CreateOptions {
                slots: 1 << 16,
                ..CreateOptions::default()
            },
        )?;
        cleanup.rings.push(path);
        engines.push(Engine {
            label,
            strategy,
            ring,
            config: dir.join(format!("{label}.toml")),
            status: dir.join(format!("{label}.status.json")),
            journal: dir.join(format!("{label}.journal")),
            telemetry: dir.join(format!("{label}-telemetry")),
            expected,
            child: None,
        });
    }
    // The EURUSD engine fills with the strategy host's own paper broker (deterministic:
    // the same trades as `tickloop backtest`); the synthetic one sends its orders to the
    // paper adapter, a child process that reads the same ring and fills market orders at the
    // next candle's open it sees.
    write_config(&engines[0], &dir, "n1 = 10\nn2 = 20\n", 8, "")?;
    let synthetic_symbols: Vec<String> = (0..8).map(|i| format!("\"SYN{i:04}\"")).collect();
    let paper = format!(
        "adapter = 0\n\n[adapters]\nsymbols = [{}]\n\n[[adapters.adapter]]\nname = \"paper\"\ncommand = [{:?}, \"adapter\", \"paper\", \"--ring\", \"{}\", \"--cash\", \"10000\"]\n",
        synthetic_symbols.join(", "),
        exe.display().to_string(),
        engines[1].ring
    );
    write_config(
        &engines[1],
        &dir,
        "trigger = 0.99\nlookback = 200\nanchor = \"since_exit\"\ntake_profit = 1.01\nstop_loss = 0.99\nsize_quote = 2000.0\nmax_positions = 4\n",
        8,
        &paper,
    )?;
    println!(
        "tickloop demo: two engines, each one process on one loop, reading shared-memory rings written by feed processes; files in {}",
        dir.display()
    );
    for e in &mut engines {
        let child = Command::new(&exe)
            .args(["run", "--config"])
            .arg(&e.config)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the {} engine", e.label))?;
        e.child = Some(child);
    }
    // Engines are up once they write their first status.
    let started = Instant::now();
    for e in &mut engines {
        while !e.status.exists() {
            if let Some(Ok(Some(status))) = e.child.as_mut().map(|c| c.try_wait()) {
                let mut err = String::new();
                if let Some(mut stderr) = e.child.as_mut().and_then(|c| c.stderr.take()) {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
                }
                bail!(
                    "the {} engine exited at start ({status}): {}",
                    e.label,
                    err.trim()
                );
            }
            if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(30) {
                bail!("the {} engine did not start", e.label);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    println!(
        "engines:  {} (sma_cross 10/20 on EURUSD hourly, the host's paper broker) and {} (drop_trigger on 8 synthetic symbols, orders to the paper adapter process), started",
        engines[0].label, engines[1].label
    );
    let feeds = [
        Command::new(&exe)
            .args(["feed", "replay", "--data"])
            .arg(&data)
            .args(["--ring", &engines[0].ring])
            .args(["--pace", &format!("x{}", args.speed)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the EURUSD feed")?,
        Command::new(&exe)
            .args(["feed", "synthetic", "--ring", &engines[1].ring])
            .args(["--count", &args.synthetic.to_string()])
            .args(["--rate", &args.synthetic_rate.to_string()])
            .args(["--symbols", "8"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the synthetic feed")?,
    ];
    let feed_count = feeds.len();
    cleanup.children.extend(feeds);

    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>10} {bar:40} {pos}/{len} candles  {msg}")
        .expect("static template");
    let progress: Vec<ProgressBar> = engines
        .iter()
        .map(|e| {
            bars.add(
                ProgressBar::new(e.expected)
                    .with_style(style.clone())
                    .with_prefix(e.label),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted; the demo's rings were removed");
        }
        let mut done = true;
        for (e, bar) in engines.iter().zip(&progress) {
            let s = status_of(&e.status);
            let seen = s["candles"].as_u64().unwrap_or(0) + s["candles_lost"].as_u64().unwrap_or(0);
            bar.set_position(seen.min(e.expected));
            bar.set_message(format!(
                "{} orders, {} fills",
                s["trading"]["orders"], s["trading"]["fills"]
            ));
            done &= seen >= e.expected;
        }
        for (i, feed) in cleanup.children[..feed_count].iter_mut().enumerate() {
            if let Ok(Some(status)) = feed.try_wait() {
                if !status.success() {
                    let mut err = String::new();
                    if let Some(mut stderr) = feed.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
                    }
                    bail!("feed {i} failed ({status}): {}", err.trim());
                }
            }
        }
        if done {
            break;
        }
        if Instant::now() > deadline {
            bail!("the engines did not read every candle within 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // One more status write after the last candle, then stop them as systemd would.
    std::thread::sleep(Duration::from_millis(250));
    for bar in &progress {
        bar.finish();
    }
    let mut reports = Vec::new();
    for e in &mut engines {
        let child = e.child.take().expect("started above");
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "the {} engine failed ({}): {}",
                e.label,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("reading the {} engine's report", e.label))?;
        let replay = Command::new(&exe)
            .args(["replay", "--verify", "--journal"])
            .arg(&e.journal)
            .output()?;
        reports.push((report, status_of(&e.status), replay.status.success()));
    }
    println!();
    let mut lost_total = 0;
    let mut all_verified = true;
    for (e, (report, status, verified)) in engines.iter().zip(&reports) {
        let stats = &report["stats"];
        let trading = &report["outputs"];
        let lag = &status["loop_lag"];
        let lost = stats["candles_lost"].as_u64().unwrap_or(0);
        lost_total += lost;
        all_verified &= verified;
        println!(
            "{} engine: {} on {}{}",
            e.label,
            e.strategy,
            report["driver"].as_str().unwrap_or("?"),
            match status["adapters"].as_array().and_then(|a| a.first()) {
                Some(a) => format!(
                    ", orders through the {} adapter (pid {}, {} requests, {} failed, started {} time(s))",
                    a["name"].as_str().unwrap_or("?"),
                    a["pid"],
                    a["requests"],
                    a["failed"],
                    a["starts"]
                ),
                None => ", paper fills in the strategy host".into(),
            }
        );
        println!("  candles    {} read, {} lost", stats["candles"], lost);
        println!(
            "  orders     {} ({} fills, {} denied), {} trades closed, realized PnL {:+.2}, {} position(s) left open",
            trading["orders"],
            trading["fills"],
            trading["denied"],
            trading["trades"],
            trading["realized_pnl"].as_f64().unwrap_or(0.0),
            trading["positions"].as_array().map_or(0, |p| p.len())
        );
        println!(
            "  loop lag   p50 {} µs, p99 {} µs, max {} µs (how late the loop's own tick ran)",
            lag["p50_ns"].as_u64().unwrap_or(0) / 1000,
            lag["p99_ns"].as_u64().unwrap_or(0) / 1000,
            lag["max_ns"].as_u64().unwrap_or(0) / 1000
        );
        println!(
            "  files      status {}, telemetry {}, journal {}",
            e.status.display(),
            e.telemetry.display(),
            e.journal.display()
        );
        println!(
            "  replay     {} (tickloop replay --journal {} --verify)",
            if *verified {
                "every decision reproduced"
            } else {
                "DIVERGED"
            },
            e.journal.display()
        );
    }
    println!();
    if lost_total == 0 && all_verified {
        println!("result:  OK, 0 candles lost, every run replayed identically; rings removed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("result:  FAILED: {lost_total} candles lost, replays verified: {all_verified}");
        Ok(ExitCode::from(1))
    }
}
