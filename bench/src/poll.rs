//! `tickloop bench poll`: the tiered polling schedule (`tickloop_feed::tiered`) in simulated
//! time against a venue that answers every request after a fixed latency, swept over the
//! number of requests in flight. It states the smallest concurrency that meets the cycle
//! target with no overrun. Deterministic (seeded), so the committed result is reproducible to
//! the digit. Its distributions are cycle durations (a few concurrencies, for the plot). It
//! measures and reports; it never fails on a slow result.

use crate::report::{self, Distribution, OutputArgs, Rendered};
use tickloop_feed::tiered::{smallest_concurrency, TieredConfig};

#[derive(clap::Args, Clone, Debug)]
#[command(mut_arg("save", |a| a.help("Also write poll.md, poll.json, poll-ROW.hgrm per plotted concurrency and the plots poll.svg and poll.png into this directory (--save is the same)")))]
#[command(mut_arg("quick", |a| a.help("One simulated minute per concurrency instead of --minutes")))]
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
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn main(args: &PollBenchArgs) -> Result<(), String> {
    let r = rendered(args)?;
    r.print(args.output.json);
    if let Some(dir) = &args.output.save {
        let written = r.write(dir)?;
        eprintln!("saved {}", crate::output::describe(dir, &written));
    }
    Ok(())
}

/// The sweep, as its table, its JSON and the cycle durations of a few concurrencies.
pub fn rendered(args: &PollBenchArgs) -> Result<Rendered, String> {
    let minutes = if args.output.quick {
        args.minutes.min(1)
    } else {
        args.minutes
    };
    let base = TieredConfig {
        cycle_ns: args.cycle_ms.saturating_mul(1_000_000),
        ..TieredConfig::default()
    };
    eprintln!(
        "bench poll: {} symbols, concurrency 1 to {}, {minutes} simulated minutes each ...",
        args.symbols, args.max_concurrency
    );
    let (best, runs) = smallest_concurrency(
        &base,
        args.symbols,
        args.latency_ms.saturating_mul(1_000_000),
        minutes.saturating_mul(60_000_000_000),
        args.movers_pct,
        7,
        args.max_concurrency,
    )?;
    let machine = report::machine(
        args.output.quick,
        serde_json::json!({
            "pinning": "not applicable (simulated time)",
            "sched_fifo": "not applicable (simulated time)",
            "mlockall": "not applicable (simulated time)",
        }),
    );
    // No finished cycle (every one overran): nothing to show.
    let ms = |ns: u64| {
        if ns == 0 {
            "—".to_string()
        } else {
            format!("{:.0}", ns as f64 / 1e6)
        }
    };
    let mut md = format!(
        "Tiered polling, simulated: {} symbols, every request answered after {} ms, cycle target {} ms, {} simulated minutes per row, {} % movers; tiers: hot every cycle, warm every {}, cold every {} cycles (`tickloop bench poll{}`).\n\n",
        args.symbols, args.latency_ms, args.cycle_ms, minutes, args.movers_pct, base.warm_every, base.cold_every,
        if args.output.quick { " --quick" } else { "" }
    );
    if let Some(section) = report::machine_section(&machine) {
        md += &section;
        md += "\n";
    }
    md += "| in flight | cycles | overruns (cycles unfinished when the next was due) | requests | cycle p50 ms | cycle p99 ms | cycle max ms | hot / warm / cold at the end |\n|---:|---:|---:|---:|---:|---:|---:|---|\n";
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
    // The plot: powers of two and the smallest that meets the target, not all of the sweep.
    let plotted = |c: u32| c.is_power_of_two() || Some(c) == best || c == args.max_concurrency;
    let distributions = runs
        .iter()
        .filter(|r| plotted(r.concurrency) && !r.durations.is_empty())
        .map(|r| Distribution::ns(&format!("{} in flight", r.concurrency), &r.durations))
        .collect();
    let json =
        serde_json::json!({ "smallest_concurrency": best, "runs": runs, "machine": machine });
    Ok(Rendered {
        name: "poll".into(),
        markdown: md,
        json: serde_json::to_string_pretty(&json).map_err(|e| e.to_string())? + "\n",
        machine,
        distributions,
        what: "cycle duration".into(),
    })
}
