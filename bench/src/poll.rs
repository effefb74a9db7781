//! `tickloop bench poll`: the tiered polling schedule (`tickloop_feed::tiered`) in simulated
//! time against a venue that answers every request after a fixed latency, swept over the
//! number of requests in flight. It states the smallest concurrency that meets the cycle
//! target with no overrun. Deterministic (seeded), so the committed result is reproducible to
//! the digit.

use tickloop_feed::tiered::{smallest_concurrency, TieredConfig};

#[derive(clap::Args, Clone)]
pub struct PollBenchArgs {
    /// Symbols polled.
    #[arg(long, default_value_t = 130)]
    pub symbols: u32,
    /// Each request's answer time (ms).
    #[arg(long, default_value_t = 300)]
    pub latency_ms: u64,
    /// The cycle's target (ms).
    #[arg(long, default_value_t = 1500)]
    pub cycle_ms: u64,
    /// Simulated minutes per concurrency.
    #[arg(long, default_value_t = 5)]
    pub minutes: u64,
    /// Sweep concurrency from 1 to this.
    #[arg(long, default_value_t = 24)]
    pub max_concurrency: u32,
    /// Percent of symbols moving enough to turn hot at any time.
    #[arg(long, default_value_t = 2.0)]
    pub movers_pct: f64,
    /// Write poll.md and poll.json into this directory.
    #[arg(long, value_name = "DIR")]
    pub save: Option<std::path::PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn main(args: &PollBenchArgs) -> Result<(), String> {
    let base = TieredConfig {
        cycle_ns: args.cycle_ms.saturating_mul(1_000_000),
        ..TieredConfig::default()
    };
    let (best, runs) = smallest_concurrency(
        &base,
        args.symbols,
        args.latency_ms * 1_000_000,
        args.minutes * 60_000_000_000,
        args.movers_pct,
        7,
        args.max_concurrency,
    )?;
    // No finished cycle (every one overran): nothing to show.
    let ms = |ns: u64| {
        if ns == 0 {
            "—".to_string()
        } else {
            format!("{:.0}", ns as f64 / 1e6)
        }
    };
    let mut md = format!(
        "Tiered polling, simulated: {} symbols, every request answered after {} ms, cycle target {} ms, {} simulated minutes per row, {} % movers; tiers: hot every cycle, warm every {}, cold every {} cycles (`tickloop bench poll`).\n\n| in flight | cycles | overruns (cycles unfinished when the next was due) | requests | cycle p50 ms | cycle p99 ms | cycle max ms | hot / warm / cold at the end |\n|---:|---:|---:|---:|---:|---:|---:|---|\n",
        args.symbols, args.latency_ms, args.cycle_ms, args.minutes, args.movers_pct, base.warm_every, base.cold_every
    );
    for r in &runs {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} / {} |\n",
            r.concurrency,
            r.cycles,
            r.overruns,
            r.requests,
            ms(r.cycle_p50_ns),
            ms(r.cycle_p99_ns),
            ms(r.cycle_max_ns),
            r.hot,
            r.warm,
            r.cold
        ));
    }
    md.push_str(&match best {
        Some(c) => format!(
            "\nThe smallest concurrency that meets the {} ms target with no overrun: **{c}**.\n",
            args.cycle_ms
        ),
        None => format!(
            "\nNo concurrency up to {} meets the {} ms target.\n",
            args.max_concurrency, args.cycle_ms
        ),
    });
    let json = serde_json::json!({ "smallest_concurrency": best, "runs": runs });
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?
        );
    } else {
        print!("{md}");
    }
    if let Some(dir) = &args.save {
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text)
                .map_err(|e| format!("writing {}: {e}", dir.join(name).display()))
        };
        write("poll.md", md)?;
        write(
            "poll.json",
            serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?,
        )?;
    }
    Ok(())
}
