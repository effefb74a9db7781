//! `tickloop bench ring`: the ring between two processes pinned to two cores, next to the
//! physical limit (a cache-line round trip between the same two cores) and next to the Python
//! ring users build today, all in one run.
//!
//! Rows: the cache-line round trip and its half (the one-way limit); the ring's one-way latency
//! with a paced writer (publish-time stamp carried in the candle, read against the same
//! monotonic clock); the ring's throughput with an unpaced writer; the peers (`peers`: iceoryx2,
//! crossbeam, rtrb, std and tokio channels, a pipe, UDP), measured the same way on the same two
//! cores; the Python ring. Every measured row's whole histogram goes into the report's
//! `distributions`. It measures and reports; it never fails on a slow result or a peer that
//! cannot run (that row says why).

use crate::harness::{
    attach, bench_candle, fork_pinned, histogram, histogram_of_pairs, publish_paced, reap,
    spin_read, spin_until, stamp, stamp_ns, two_cores, with_temp_ring, SharedPage,
};
use crate::peers::{self, Cores, PeerRun};
use crate::report::{self, fmt_ns, fmt_rate, spread, Check, Distribution, OutputArgs, Percentiles};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::atomic::Ordering;
use tickloop_ring::sys;
use tickloop_ring::{Candle, CreateOptions, ReadResult, Start, Writer};

#[derive(clap::Args, Clone, Debug)]
#[command(mut_arg("save", |a| a.help("Also write ring.md, ring.json, ring-ROW.hgrm per measured row and the plots ring.svg and ring.png into this directory (--save is the same)")))]
pub struct RingBenchArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// The two cores: reader first, writer second.
    #[arg(long, value_delimiter = ',', default_value = "0,1", value_name = "A,B")]
    pub cpus: Vec<usize>,
    /// Skip the Python peer.
    #[arg(long)]
    pub no_python: bool,
    /// Skip the other peers (iceoryx2, crossbeam, rtrb, std and tokio channels, pipe, UDP).
    #[arg(long)]
    pub no_peers: bool,
}

/// One row of the ring report: a latency distribution (ns) and a rate.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(serde::Deserialize))]
pub struct Row {
    pub name: String,
    #[serde(flatten)]
    pub latency: Percentiles,
    pub per_sec: Option<f64>,
    pub samples: u64,
    pub note: String,
}

impl Row {
    fn cells(&self) -> Vec<String> {
        let rate = self.per_sec.map_or("-".into(), fmt_rate);
        self.latency.cells(&self.name, [rate], &self.note)
    }
}

/// The ring report: no notes (its checks say it all).
pub type Report = report::Report<Row>;

struct Sizes {
    stall_seconds: f64,
    local: u64,
    rtt: u64,
    latency: u64,
    throughput: u64,
    python: u64,
    /// As many as the ring's latency rows, so each block exposes a peer to the host as long.
    peer_latency: u64,
    peer_throughput: u64,
}

/// Latency rows: one candle (or ping) every PACE_NS, in BLOCKS alternating blocks.
const PACE_NS: i64 = 1_000;
const BLOCKS: u64 = 40;

const PYTHON_USERS_RING: &str = include_str!("../python/users_ring.py");

pub fn main(args: &RingBenchArgs) -> Result<(), String> {
    let report = run(args)?;
    report.emit(markdown(&report), &args.output, "ring")
}

pub fn run(args: &RingBenchArgs) -> Result<Report, String> {
    let (reader_core, writer_core) = two_cores(&args.cpus)?;
    let sizes = if args.output.quick {
        Sizes {
            stall_seconds: 0.2,
            local: 1_000_000,
            rtt: 100_000,
            latency: 100_000,
            throughput: 5_000_000,
            python: 20_000,
            peer_latency: 100_000,
            peer_throughput: 200_000,
        }
    } else {
        Sizes {
            stall_seconds: 2.0,
            local: 20_000_000,
            rtt: 1_000_000,
            latency: 1_000_000,
            throughput: 100_000_000,
            python: 200_000,
            peer_latency: 1_000_000,
            peer_throughput: 2_000_000,
        }
    };
    stamp_ns(0); // calibrate the stopwatch once, before any child is forked
    let mut rows = Rows::default();
    eprintln!("bench ring: host stalls on cores {reader_core} and {writer_core} ...");
    let stalls = host_stalls(reader_core, writer_core, sizes.stall_seconds)?;
    rows.add(
        "host stalls (spinning core, gaps over 1 µs)",
        &stalls.hist,
        1.0,
        Some(stalls.hist.len() as f64 / sizes.stall_seconds),
        &format!(
            "the noise floor: stalled {:.2}% of the time on core {reader_core}, {:.2}% on core {writer_core}; per second = stalls per second",
            stalls.fraction[0] * 100.0,
            stalls.fraction[1] * 100.0
        ),
    );
    // The round trip and the ring's one-way latency run in alternating blocks at the same pace,
    // so both see the same host (vCPU placement, stalls) and their ratio is a fair one.
    eprintln!("bench ring: round trip and ring one-way latency, {BLOCKS} alternating blocks ...");
    let mut rtt = histogram();
    let mut latency = histogram();
    let mut latency_lost = 0;
    let mut closed = histogram();
    let mut ratios = Vec::new();
    let mut closed_ratios = Vec::new();
    let cores = Cores {
        reader: reader_core,
        writer: writer_core,
    };
    let mut accs: Vec<PeerAcc> = if args.no_peers {
        Vec::new()
    } else {
        peers::PEERS.iter().map(PeerAcc::new).collect()
    };
    if !accs.is_empty() {
        eprintln!(
            "bench ring: with the peers in every block ({}) ...",
            accs.iter()
                .map(|a| a.peer.short)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for _ in 0..BLOCKS {
        let rtt_block =
            cache_line_round_trip(reader_core, writer_core, sizes.rtt / BLOCKS, PACE_NS)?;
        rtt.add(&rtt_block).map_err(|e| e.to_string())?;
        let half_rtt = rtt_block.value_at_quantile(0.5) as f64 / 2.0;
        // Open loop, then closed loop.
        for (closed_loop, hist, ratios) in [
            (false, &mut latency, &mut ratios),
            (true, &mut closed, &mut closed_ratios),
        ] {
            let n = sizes.latency / BLOCKS;
            let block = ring_run(reader_core, writer_core, n, PACE_NS, closed_loop)?;
            hist.add(&block.hist).map_err(|e| e.to_string())?;
            latency_lost += block.lost;
            ratios.push(block.hist.value_at_quantile(0.5) as f64 / half_rtt);
        }
        // The peers, at the same pace on the same cores, in the same blocks.
        for acc in accs.iter_mut().filter(|a| a.failed.is_none()) {
            match (acc.peer.run)(cores, sizes.peer_latency / BLOCKS, PACE_NS) {
                Ok(run) => acc.add(&run)?,
                Err(why) => acc.failed = Some(why),
            }
        }
    }
    let (low_ratio, median_ratio, high_ratio) = spread(&ratios);
    let (closed_low, closed_ratio, closed_high) = spread(&closed_ratios);
    let pace = format!("one every {} µs", PACE_NS / 1000);
    rows.add(
        "cache-line round trip",
        &rtt,
        1.0,
        Some(1e9 / PACE_NS as f64),
        &format!("two processes ping-pong one 64-byte line, {pace}"),
    );
    rows.add(
        "cache-line one-way (half round trip)",
        &rtt,
        0.5,
        None,
        "the physical limit for a candle crossing cores",
    );
    rows.add(
        "tickloop ring one-way (2^16 slots)",
        &latency,
        1.0,
        Some(1e9 / PACE_NS as f64),
        &format!(
            "publish to read, stopwatch (TSC) stamp carried in the candle, {pace}; {latency_lost} lost"
        ),
    );
    rows.add(
        "tickloop ring one-way, closed loop (2^16 slots)",
        &closed,
        1.0,
        Some(1e9 / PACE_NS as f64),
        "as above, but the writer waits for the reader's acknowledgement before the next candle: the round trip's method, which hides host stalls",
    );
    eprintln!(
        "bench ring: throughput, writer paced at {} M/s ...",
        THROUGHPUT_RATE / 1e6
    );
    let throughput = ring_run(
        reader_core,
        writer_core,
        sizes.throughput,
        -(THROUGHPUT_RATE as i64),
        false,
    )?;
    rows.add(
        &format!(
            "tickloop ring throughput (writer at {} M/s, 2^20 slots)",
            THROUGHPUT_RATE / 1e6
        ),
        &throughput.hist,
        1.0,
        Some(throughput.per_sec),
        &format!(
            "{} candles; percentiles are the age of one candle in 64; {} lost in {} overruns",
            throughput.received + throughput.lost,
            throughput.lost,
            throughput.overruns
        ),
    );
    eprintln!("bench ring: throughput, unpaced writer ...");
    let flat_out = ring_run(reader_core, writer_core, sizes.throughput, 0, false)?;
    rows.add(
        "tickloop ring, writer unpaced (2^20 slots)",
        &flat_out.hist,
        1.0,
        Some(flat_out.per_sec),
        &format!(
            "delivered per second at the reader; {} lost in {} overruns (a reader slower than the writer is lapped)",
            flat_out.lost, flat_out.overruns
        ),
    );
    eprintln!("bench ring: write + read in one process ...");
    let local = write_read_one_process(sizes.local)?;
    rows.add(
        "tickloop ring write+read, one process",
        &local,
        1.0,
        Some(1e9 / local.mean()),
        "per candle, timed over batches of 1000 (the Python row's measure)",
    );
    let mut measured_peers = Vec::new();
    for acc in &accs {
        if acc.hist.is_empty() {
            let why = acc.failed.as_deref().unwrap_or("no block ran");
            rows.add_unmeasured(peer_unmeasured(acc.peer.name, why));
            continue;
        }
        eprintln!("bench ring: {}, writer unpaced ...", acc.peer.short);
        let unpaced = (acc.peer.run)(cores, sizes.peer_throughput, 0);
        rows.add_row(peer_row(acc, unpaced), &acc.hist, 1.0);
        measured_peers.push((acc.peer.short, acc.hist.clone()));
    }
    if !args.no_python {
        eprintln!("bench ring: the Python ring users build today ...");
        let (row, hist) = python_row(sizes.python);
        match hist {
            Some(h) => rows.add_row(row, &h, 1.0),
            None => rows.add_unmeasured(row),
        }
    }
    let half_rtt_p50 = rtt.value_at_quantile(0.5) as f64 / 2.0;
    let half_rtt_p99 = rtt.value_at_quantile(0.99) as f64 / 2.0;
    let one_way_p50 = latency.value_at_quantile(0.5) as f64;
    let one_way_p99 = latency.value_at_quantile(0.99) as f64;
    let closed_p99 = closed.value_at_quantile(0.99) as f64;
    // The round trip is closed-loop (one ping in flight), so the closed-loop ring rows are the
    // like-for-like comparison; the open-loop rows are what a feed sees, host stalls included.
    let mut checks = vec![
        Check {
            target: "one-way p50 within 1.5x of half the cache-line round trip (median of per-block ratios; closed loop, the round trip's method)".into(),
            measured: format!(
                "closed loop {closed_ratio:.2}x (blocks {closed_low:.2}x to {closed_high:.2}x); open loop {median_ratio:.2}x (blocks {low_ratio:.2}x to {high_ratio:.2}x); all blocks: {one_way_p50:.0} ns vs {half_rtt_p50:.0} ns"
            ),
            pass: Some(closed_ratio <= 1.5),
        },
        Check {
            target: "one-way p99 under 1 µs (closed loop, the round trip's method)".into(),
            measured: format!(
                "closed loop {closed_p99:.0} ns (half round trip p99 {half_rtt_p99:.0} ns); open loop {one_way_p99:.0} ns, set by the host, which stalls each core {:.1}% / {:.1}% of the time",
                stalls.fraction[0] * 100.0,
                stalls.fraction[1] * 100.0
            ),
            pass: Some(closed_p99 < 1000.0),
        },
        Check {
            target: "at least 20M candles/s, none lost".into(),
            measured: format!("{:.1} M/s, {} lost", throughput.per_sec / 1e6, throughput.lost),
            pass: Some(throughput.per_sec >= 20e6 && throughput.lost == 0),
        },
    ];
    checks.push(limit_check(one_way_p50, half_rtt_p50, median_ratio));
    checks.push(peers_check(
        one_way_p50,
        one_way_p99,
        &measured_peers,
        &rows.rows,
    ));
    if let Some(py) = rows.rows.iter().find(|r| r.name.starts_with("python")) {
        if let Some(p50) = py.latency.p50_ns {
            let ours = local.value_at_quantile(0.5) as f64;
            checks.push(Check {
                target: "faster than the Python ring users build today (write+read, one process)"
                    .into(),
                measured: format!(
                    "{ours:.0} ns vs {p50:.0} ns per candle ({:.0}x)",
                    p50 / ours
                ),
                pass: Some(ours < p50),
            });
        }
    }
    Ok(Report {
        rows: rows.rows,
        machine: report::machine(
            args.output.quick,
            serde_json::json!({"reader_core": reader_core, "writer_core": writer_core}),
        ),
        checks,
        notes: if measured_peers.is_empty() {
            Vec::new()
        } else {
            vec![PEERS_NOTE.to_string()]
        },
        distributions: rows.distributions,
    })
}

/// The rows so far, and each measured row's whole distribution under the row's name.
#[derive(Default)]
struct Rows {
    rows: Vec<Row>,
    distributions: Vec<Distribution>,
}

impl Rows {
    /// A row of `h` (values times `scale` are ns), and its distribution.
    fn add(
        &mut self,
        name: &str,
        h: &Histogram<u64>,
        scale: f64,
        per_sec: Option<f64>,
        note: &str,
    ) {
        self.add_row(row_from(name, h, scale, per_sec, note), h, scale);
    }

    fn add_row(&mut self, row: Row, h: &Histogram<u64>, scale: f64) {
        self.distributions.push(Distribution {
            row: row.name.clone(),
            hist: h.clone(),
            scale,
        });
        self.rows.push(row);
    }

    /// A row without a distribution (not measured).
    fn add_unmeasured(&mut self, row: Row) {
        self.rows.push(row);
    }
}

fn peer_unmeasured(name: &str, why: &str) -> Row {
    Row {
        name: name.into(),
        latency: Percentiles::default(),
        per_sec: None,
        samples: 0,
        note: format!("not measured: {why}"),
    }
}

/// How to read the peers' rows against the ring's, under the table.
const PEERS_NOTE: &str = "The peers carry a 16-byte message (stamp, sequence) where the ring carries a 56-byte candle; crossbeam, rtrb and the std and tokio channels run as two threads of one process (they cannot cross processes), the ring and the other peers as two processes. The bounded peers (crossbeam, rtrb, std and tokio mpsc: 1024 messages, about 1 ms at this pace; the pipe: 64 KiB) hold their writer back when the reader stalls for longer than that, and the messages not yet written are stamped when it resumes, so their tails leave out part of each host stall that the ring, which never holds its writer back (a stalled reader is lapped instead), records in full; iceoryx2 (safe overflow) and UDP drop messages instead, counted lost. On a host that stalls the cores, compare the p50s, or the p99s of a quiet run.";

/// What one peer gathered across the blocks.
struct PeerAcc {
    peer: &'static peers::Peer,
    hist: Histogram<u64>,
    sent: u64,
    received: u64,
    lost: u64,
    seconds: f64,
    /// Why a block could not run (the peer is skipped in later blocks).
    failed: Option<String>,
}

impl PeerAcc {
    fn new(peer: &'static peers::Peer) -> PeerAcc {
        PeerAcc {
            peer,
            hist: histogram(),
            sent: 0,
            received: 0,
            lost: 0,
            seconds: 0.0,
            failed: None,
        }
    }

    fn add(&mut self, run: &PeerRun) -> Result<(), String> {
        self.hist.add(&run.hist).map_err(|e| e.to_string())?;
        self.sent += run.received + run.lost;
        self.received += run.received;
        self.lost += run.lost;
        self.seconds += run.seconds;
        Ok(())
    }
}

/// A peer's row: the paced blocks' one-way latency; per second is the unpaced run's rate.
fn peer_row(acc: &PeerAcc, unpaced: Result<PeerRun, String>) -> Row {
    let mut note = format!(
        "{}; one every {} µs, stopwatch (TSC) stamp carried in the message, in the same blocks as the ring; {} of {} lost",
        acc.peer.how,
        PACE_NS / 1000,
        acc.lost,
        acc.sent
    );
    let paced_rate = acc.received as f64 / acc.seconds.max(1e-9);
    if acc.seconds > 0.0 && paced_rate < 0.9e9 / PACE_NS as f64 {
        note += &format!(
            " (the writer kept only {}/s of the pace)",
            fmt_rate(paced_rate)
        );
    }
    if let Some(f) = &acc.failed {
        note += &format!("; a later block failed: {f}");
    }
    let per_sec = match unpaced {
        Ok(t) => {
            note += &format!(
                "; per second: writer unpaced, {} messages, {} lost",
                t.received + t.lost,
                t.lost
            );
            Some(t.per_sec())
        }
        Err(why) => {
            note += &format!("; unpaced run failed: {why}");
            None
        }
    };
    Row {
        name: acc.peer.name.into(),
        latency: Percentiles::of(&acc.hist),
        per_sec,
        samples: acc.hist.len(),
        note,
    }
}

/// The open-loop ring row against the one-way limit, as the table shows them.
fn limit_check(one_way_p50: f64, half_rtt_p50: f64, median_ratio: f64) -> Check {
    let ratio = one_way_p50 / half_rtt_p50.max(1.0);
    let by = if ratio <= 1.3 {
        String::new()
    } else {
        format!(
            ", {:.0} ns ({:.0}%) over the 1.3x target",
            one_way_p50 - 1.3 * half_rtt_p50,
            (ratio / 1.3 - 1.0) * 100.0
        )
    };
    Check {
        target: "tickloop ring p50 within 1.3x of the cache-line one-way limit (open loop, the peers' method; all blocks)".into(),
        measured: format!(
            "{ratio:.2}x: {one_way_p50:.0} ns vs {half_rtt_p50:.0} ns{by} (median of per-block ratios {median_ratio:.2}x)"
        ),
        pass: Some(ratio <= 1.3),
    }
}

/// The open-loop ring row against every peer that ran, at p50 and p99.
fn peers_check(
    one_way_p50: f64,
    one_way_p99: f64,
    measured: &[(&str, Histogram<u64>)],
    rows: &[Row],
) -> Check {
    let short = |name: &str| {
        peers::PEERS
            .iter()
            .find(|p| p.name == name || p.short == name)
            .map_or(name, |p| p.short)
            .to_string()
    };
    let target = "tickloop ring ahead of every peer at p50 and p99 (one-way, open loop, same cores, same pace)".to_string();
    if measured.is_empty() {
        let why: Vec<String> = rows
            .iter()
            .filter(|r| r.name.starts_with("peer: "))
            .map(|r| format!("{}: {}", short(&r.name), r.note))
            .collect();
        return Check {
            target,
            measured: if why.is_empty() {
                "not measured: the peers were skipped (--no-peers)".into()
            } else {
                format!("not measured: no peer ran ({})", why.join("; "))
            },
            pass: None,
        };
    }
    let mut behind = Vec::new();
    let mut closest: Option<(f64, String)> = None;
    for (name, h) in measured {
        for (what, ours, q) in [("p50", one_way_p50, 0.5), ("p99", one_way_p99, 0.99)] {
            let theirs = h.value_at_quantile(q) as f64;
            if ours >= theirs {
                behind.push(format!(
                    "{} at {what} by {} ({} vs {})",
                    short(name),
                    fmt_ns(Some(ours - theirs)),
                    fmt_ns(Some(ours)),
                    fmt_ns(Some(theirs))
                ));
            } else {
                let margin = theirs / ours.max(1.0);
                if closest.as_ref().is_none_or(|(m, _)| margin < *m) {
                    closest = Some((
                        margin,
                        format!(
                            "{} at {what}: {} vs {}",
                            short(name),
                            fmt_ns(Some(ours)),
                            fmt_ns(Some(theirs))
                        ),
                    ));
                }
            }
        }
    }
    let skipped = rows
        .iter()
        .filter(|r| r.name.starts_with("peer: ") && r.samples == 0)
        .map(|r| short(&r.name))
        .collect::<Vec<_>>();
    let mut text = if behind.is_empty() {
        format!(
            "ahead of all {} peers that ran; closest: {}",
            measured.len(),
            closest
                .map(|(m, s)| format!("{s} ({m:.2}x)"))
                .unwrap_or_default()
        )
    } else {
        format!("behind {}", behind.join("; "))
    };
    if !skipped.is_empty() {
        text += &format!("; not run: {}", skipped.join(", "));
    }
    Check {
        target,
        measured: text,
        pass: Some(behind.is_empty()),
    }
}

fn row_from(name: &str, h: &Histogram<u64>, scale: f64, per_sec: Option<f64>, note: &str) -> Row {
    Row {
        name: name.into(),
        latency: Percentiles::scaled(h, scale),
        per_sec,
        samples: h.len(),
        note: note.into(),
    }
}

/// Two processes bounce one cache line, one round trip every `gap_ns`; each is timed by the
/// initiator.
fn cache_line_round_trip(
    a: usize,
    b: usize,
    n: u64,
    gap_ns: i64,
) -> Result<Histogram<u64>, String> {
    let page = SharedPage::new()?;
    let line = page.word(0);
    let warmup = n / 10;
    let total = n + warmup;
    let pid = fork_pinned(b, || {
        for i in 0..total {
            // Both spins use `pause`: the fastest ping-pong here (without it each side's
            // polling steals the line back from the other and the round trip doubles).
            while line.load(Ordering::Acquire) != 2 * i + 1 {
                core::hint::spin_loop();
            }
            line.store(2 * i + 2, Ordering::Release);
        }
    })?;
    sys::pin_to_core(a)?;
    let mut hist = histogram();
    let mut due = sys::monotonic_ns();
    for i in 0..total {
        due += gap_ns;
        spin_until(due);
        let t0 = stamp();
        line.store(2 * i + 1, Ordering::Release);
        while line.load(Ordering::Acquire) != 2 * i + 2 {
            core::hint::spin_loop();
        }
        let t1 = stamp();
        if i >= warmup {
            hist.saturating_record(stamp_ns(t1 - t0));
        }
    }
    reap(pid)?;
    Ok(hist)
}

/// Write then read one candle at a time in one process: the per-candle cost of the ring's code
/// itself, the measure the Python row uses. Timed per batch of 1000 (a stopwatch read per
/// candle would cost more than the candle).
fn write_read_one_process(n: u64) -> Result<Histogram<u64>, String> {
    with_temp_ring(CreateOptions::default().slots, |path| {
        let mut writer = Writer::open(path).map_err(|e| e.to_string())?;
        let mut reader = attach(path, Start::Next)?;
        let mut hist = histogram();
        let mut candle = Candle {
            close: 1.0,
            ..Candle::default()
        };
        const BATCH: u64 = 1000;
        for _ in 0..n / BATCH {
            let t0 = stamp();
            for i in 0..BATCH {
                candle.ts_ns = i as i64;
                writer.publish(&candle);
                match reader.try_read() {
                    ReadResult::Candle { candle: got, .. } => assert_eq!(got.ts_ns, i as i64),
                    other => return Err(format!("one-process read returned {other:?}")),
                }
            }
            hist.saturating_record((stamp_ns(stamp() - t0) / BATCH).max(1));
        }
        Ok(hist)
    })
}

struct Stalls {
    hist: Histogram<u64>,
    /// Fraction of the time each core (reader's, writer's) spent in gaps over 1 µs.
    fraction: [f64; 2],
}

/// A process on each core reads the clock in a tight loop for `seconds`; every gap over 1 µs
/// is time the host took the core away (interrupts, hypervisor exits). Records core A's gaps.
fn host_stalls(a: usize, b: usize, seconds: f64) -> Result<Stalls, String> {
    fn spin(seconds: f64, mut gap: impl FnMut(u64)) {
        let start = sys::monotonic_ns();
        let end = start + (seconds * 1e9) as i64;
        let mut last = start;
        while last < end {
            let now = sys::monotonic_ns();
            if now - last > 1_000 {
                gap((now - last) as u64);
            }
            last = now;
        }
    }
    let page = SharedPage::new()?;
    let child_total = page.word(0);
    let pid = fork_pinned(b, || {
        spin(seconds, |gap| {
            child_total.fetch_add(gap, Ordering::Relaxed);
        })
    })?;
    sys::pin_to_core(a)?;
    let mut hist = histogram();
    let mut total = 0;
    spin(seconds, |gap| {
        total += gap;
        hist.saturating_record(gap);
    });
    reap(pid)?;
    let b_total = child_total.load(Ordering::Relaxed);
    Ok(Stalls {
        hist,
        fraction: [
            total as f64 / (seconds * 1e9),
            b_total as f64 / (seconds * 1e9),
        ],
    })
}

struct RingRun {
    hist: Histogram<u64>,
    per_sec: f64,
    received: u64,
    lost: u64,
    overruns: u64,
}

/// Ring size of the latency row (a 4 MiB ring, the default size).
const LATENCY_SLOTS: u64 = 1 << 16;

/// Candles per second of the throughput row.
const THROUGHPUT_RATE: f64 = 25e6;

/// A writer process publishes `n` candles and this process reads them with a busy-spinning
/// reader. `gap_ns > 0`: one candle every `gap_ns`, each stamped with its stopwatch publish
/// time; `gap_ns < 0`: `-gap_ns` candles per second, paced and stamped once per 64; `0`: as
/// fast as possible, stamped once per 64 (a clock read per candle would halve the rate).
/// `closed_loop` (paced runs only) makes the writer wait for the reader's
/// acknowledgement of each candle before the next, the round trip's own method.
fn ring_run(
    reader_core: usize,
    writer_core: usize,
    n: u64,
    gap_ns: i64,
    closed_loop: bool,
) -> Result<RingRun, String> {
    // The latency row uses the default 4 MiB ring; the throughput rows a 64 MiB one, which
    // absorbs a 40 ms stall of the reader (a hypervisor preempting its vCPU) at 25 M/s.
    let slots = if gap_ns > 0 { LATENCY_SLOTS } else { 1 << 20 };
    with_temp_ring(slots, |path| {
        ring_run_on(path, reader_core, writer_core, n, gap_ns, closed_loop)
    })
}

fn ring_run_on(
    path: &std::path::Path,
    reader_core: usize,
    writer_core: usize,
    n: u64,
    gap_ns: i64,
    closed_loop: bool,
) -> Result<RingRun, String> {
    let acks = SharedPage::new()?;
    let ack = acks.word(0);
    let mut reader = attach(path, Start::At(0))?;
    let writer_path = path.to_owned();
    let pid = fork_pinned(writer_core, move || {
        let Ok(mut writer) = Writer::open(&writer_path) else {
            // SAFETY: child exit.
            unsafe { libc::_exit(3) };
        };
        if gap_ns > 0 {
            publish_paced(&mut writer, n, gap_ns, |i| {
                if closed_loop {
                    while ack.load(Ordering::Acquire) <= i {
                        core::hint::spin_loop();
                    }
                }
                closed_loop
            });
        } else {
            let mut candle = bench_candle();
            let start = sys::monotonic_ns();
            let ns_per_candle = if gap_ns < 0 {
                1e9 / -gap_ns as f64
            } else {
                0.0
            };
            for i in 0..n {
                if i % 64 == 0 {
                    spin_until(start + (i as f64 * ns_per_candle) as i64);
                    candle.ts_ns = stamp();
                } else {
                    candle.ts_ns = 0;
                }
                writer.publish(&candle);
            }
        }
    })?;
    sys::pin_to_core(reader_core)?;
    let mut hist = histogram();
    let warmup = if gap_ns > 0 { n / 10 } else { 0 };
    let mut stamped = 0u64;
    let mut first = None;
    let mut last = 0;
    let taken = spin_read(&mut reader, pid, n, |candle, received| {
        if candle.ts_ns != 0 {
            let age = stamp_ns(stamp() - candle.ts_ns);
            if stamped >= warmup {
                hist.saturating_record(age);
            }
            stamped += 1;
            last = sys::monotonic_ns();
            first.get_or_insert(last);
        }
        if closed_loop {
            ack.store(received, Ordering::Release);
        }
    });
    let end = sys::monotonic_ns().max(last);
    reap(pid)?;
    let taken = taken?;
    let seconds = (end - first.unwrap_or(end)) as f64 / 1e9;
    Ok(RingRun {
        hist,
        per_sec: if seconds > 0.0 {
            taken.received as f64 / seconds
        } else {
            0.0
        },
        received: taken.received,
        lost: taken.lost,
        overruns: taken.overruns,
    })
}

/// The Python ring's row, and its distribution where it ran.
fn python_row(count: u64) -> (Row, Option<Histogram<u64>>) {
    let name = "python ring (users' design), one process";
    let missing = |why: String| {
        (
            Row {
                name: name.into(),
                latency: Percentiles::default(),
                per_sec: None,
                samples: 0,
                note: why,
            },
            None,
        )
    };
    let child = std::process::Command::new("python3")
        .args(["-", "--count", &count.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return missing(format!("not measured: python3 could not run ({e})")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = std::io::Write::write_all(&mut stdin, PYTHON_USERS_RING.as_bytes());
    }
    let output = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => return missing(format!("not measured: {e}")),
    };
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&output.stdout).ok();
    let Some(v) = parsed.filter(|_| output.status.success()) else {
        let err = String::from_utf8_lossy(&output.stderr);
        return missing(format!(
            "not measured: python3 failed: {}",
            err.lines().last().unwrap_or("")
        ));
    };
    let one = &v["one_process"];
    let two = &v["two_process"];
    let row = Row {
        name: name.into(),
        latency: Percentiles {
            p50_ns: one["p50_ns"].as_f64(),
            p99_ns: one["p99_ns"].as_f64(),
            p999_ns: one["p999_ns"].as_f64(),
            max_ns: one["max_ns"].as_f64(),
        },
        per_sec: one["per_sec"].as_f64(),
        samples: one["count"].as_u64().unwrap_or(0),
        note: format!(
            "write+read per candle; across two processes it lost {:.1}% and duplicated {:.1}%",
            two["lost_pct"].as_f64().unwrap_or(f64::NAN),
            two["duplicate_pct"].as_f64().unwrap_or(f64::NAN)
        ),
    };
    let hist = histogram_of_pairs(&one["histogram"]);
    (row, Some(hist))
}

/// The report as a Markdown table with the checks under it.
pub fn markdown(r: &Report) -> String {
    let m = &r.machine;
    let rest = format!(
        ", reader on core {}, writer on core {}",
        m["reader_core"], m["writer_core"]
    );
    r.table(&r.title("Ring", &rest), &["per second"], Row::cells)
}
