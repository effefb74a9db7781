//! `tickloop status` and `tickloop config check`: read what a running engine wrote, or what
//! a config file says, and present it. Exit codes are for monitors: status 0 fresh, 1 stale,
//! stopped or crashed, 2 missing or unreadable.

use crate::config::EngineConfig;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Clone)]
pub struct StatusArgs {
    /// The status file the engine writes (`status.path` in its config, or `run --status`).
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// Older than this is stale (e.g. 3s, 500ms, 1m); default three of the engine's intervals.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_age: Option<u64>,
    /// Print the status file itself.
    #[arg(long)]
    pub json: bool,
}

/// "250ms", "3s", "2m", "1h" (or a bare number of seconds) → nanoseconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let scale = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return Err(format!("{s:?}: use a number with ms, s, m or h, e.g. 3s")),
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n > 0.0 && n.is_finite() => Ok((n * scale) as u64),
        _ => Err(format!(
            "{s:?}: use a positive number with ms, s, m or h, e.g. 3s"
        )),
    }
}

pub fn status(args: &StatusArgs) -> ExitCode {
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "tickloop: status {}: cannot read it: {e} (is the engine running, and is this its status.path?)",
                args.file.display()
            );
            return ExitCode::from(2);
        }
    };
    let doc: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "tickloop: status {}: not a status file: {e}",
                args.file.display()
            );
            return ExitCode::from(2);
        }
    };
    let num = |k: &str| doc[k].as_u64().unwrap_or(0);
    let written = doc["written_unix_ns"].as_i64().unwrap_or(0);
    let age = (tickloop_ring::sys::realtime_ns() - written).max(0) as u64;
    let max_age = args
        .max_age
        .unwrap_or_else(|| 3 * num("interval_ns").max(1_000_000));
    let state = doc["state"].as_str().unwrap_or("unknown");
    if args.json {
        print!("{text}");
    } else {
        let lag = &doc["loop_lag"];
        let written = match doc["written_unix_ns"] {
            serde_json::Value::Null => "no status written before".to_string(),
            _ => format!("written {:.1} s ago", age as f64 / 1e9),
        };
        println!(
            "{}@{} pid {} ({}): {state}, {written}, up {:.1} s",
            doc["component"].as_str().unwrap_or("?"),
            doc["account"].as_str().unwrap_or("?"),
            num("pid"),
            doc["version"].as_str().unwrap_or("?"),
            num("uptime_ns") as f64 / 1e9
        );
        println!(
            "loop: {} on {}, {} iterations, {} events, lag p50 {} ns p99 {} ns max {} ns",
            doc["mode"].as_str().unwrap_or("?"),
            doc["driver"].as_str().unwrap_or("?"),
            num("iterations"),
            num("events"),
            lag["p50_ns"].as_u64().unwrap_or(0),
            lag["p99_ns"].as_u64().unwrap_or(0),
            lag["max_ns"].as_u64().unwrap_or(0)
        );
        match doc["last_candle"]["age_ns"].as_u64() {
            Some(a) => println!(
                "candles: {} received, {} lost, last one {:.3} s ago",
                num("candles"),
                num("candles_lost"),
                a as f64 / 1e9
            ),
            None => println!("candles: none yet"),
        }
        for r in doc["rings"].as_array().into_iter().flatten() {
            println!(
                "ring {}: lag {}, lost {} in {} overruns{}",
                r["path"].as_str().unwrap_or("?"),
                r["lag"],
                r["lost"],
                r["overruns"],
                if r["removed"] == true {
                    " (removed)"
                } else {
                    ""
                }
            );
        }
        let tr = &doc["trading"];
        if tr.is_object() {
            let positions: Vec<String> = tr["positions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("symbol {} {}", p["symbol"], p["size"]))
                .collect();
            println!(
                "trading: {} with {} orders ({} open), {} fills, {} denied, {} trades, realized {:+.2}; positions: {}",
                tr["strategy"].as_str().unwrap_or("?"),
                tr["orders"],
                tr["open_orders"],
                tr["fills"],
                tr["denied"],
                tr["trades"],
                tr["realized_pnl"].as_f64().unwrap_or(0.0),
                if positions.is_empty() {
                    "none".to_string()
                } else {
                    positions.join(", ")
                }
            );
        }
        let t = &doc["telemetry"];
        if t["degraded"] == true {
            println!("telemetry degraded: {} events dropped", t["dropped"]);
        }
    }
    if state == "crashed" {
        let crash = &doc["crash"];
        let at = crash["unix_ns"].as_i64().unwrap_or(0);
        let ago = (tickloop_ring::sys::realtime_ns() - at).max(0) as f64 / 1e9;
        eprintln!(
            "tickloop: status: the engine crashed {ago:.1} s ago: {} ({}{}); its last status before that is shown above",
            crash["signal"].as_str().unwrap_or("a fatal signal"),
            crash["cause"].as_str().unwrap_or("no cause recorded"),
            match crash["ring"].as_str() {
                Some(ring) => format!(", ring {ring}"),
                None => String::new(),
            }
        );
        return ExitCode::from(1);
    }
    if state == "stopped" {
        eprintln!(
            "tickloop: status: the engine stopped (its last status is {:.1} s old)",
            age as f64 / 1e9
        );
        return ExitCode::from(1);
    }
    if age > max_age {
        eprintln!(
            "tickloop: status: stale: written {:.1} s ago, more than {:.1} s (is the loop hung or gone?)",
            age as f64 / 1e9,
            max_age as f64 / 1e9
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

pub fn config_check(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let config = EngineConfig::load(file)?;
    println!(
        "# {}: valid; the effective configuration, defaults included:",
        file.display()
    );
    print!("{}", toml::to_string_pretty(&config)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Clone)]
pub struct LocksArgs {
    /// The lock directory (default /run/tickloop for root, else $XDG_RUNTIME_DIR/tickloop).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `tickloop locks`: every instance lock in the directory and who holds it.
pub fn locks(args: &LocksArgs) -> anyhow::Result<ExitCode> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(tickloop_ops::lock::default_dir);
    let locks = tickloop_ops::lock::list(&dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&locks)?);
        return Ok(ExitCode::SUCCESS);
    }
    if locks.is_empty() {
        println!("no instance locks in {}", dir.display());
    }
    for l in &locks {
        let who = match (&l.holder, l.held) {
            (Some(h), true) => format!(
                "held by pid {} on {} (tickloop {})",
                h.pid, h.host, h.version
            ),
            (None, true) => "held (its holder is starting up)".to_string(),
            (Some(h), false) => format!("free (pid {} died holding it)", h.pid),
            (None, false) => "free".to_string(),
        };
        println!(
            "{}@{}: {who}  [{}]",
            l.component,
            l.account,
            l.path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
