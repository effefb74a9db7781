//! `tickloop ring demo`: the ring end to end with no arguments. Creates a private ring, starts a
//! synthetic writer process and a verifying reader process (this same program), shows progress,
//! reports what a person wants to know, and removes the ring whatever happens.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tickloop_ring::verify::VerifySummary;
use tickloop_ring::{self as ring, info, CreateOptions};

#[derive(clap::Args, Clone)]
pub struct DemoArgs {
    /// Candles to send through the ring.
    #[arg(long, default_value_t = 5_000_000)]
    pub count: u64,
    /// Candles per second (0 = as fast as possible; latency then includes queueing).
    #[arg(long, default_value_t = 2_000_000.0)]
    pub rate: f64,
    /// Symbols in the random walk.
    #[arg(long, default_value_t = 8)]
    pub symbols: usize,
    /// Ring slots (a power of two).
    #[arg(long, default_value_t = 65536)]
    pub slots: u64,
}

/// Removes the ring and stops the children on every way out.
struct Cleanup {
    path: PathBuf,
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
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn run(args: &DemoArgs) -> Result<ExitCode> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    // Registered first: a Ctrl-C at any point reaches the loop below or `wait_for_reader`,
    // and the ring is removed on the way out.
    let stop = crate::interrupt::stop_flag();
    let exe = std::env::current_exe().context("finding the tickloop executable")?;
    let name = format!("tickloop-demo-{}", std::process::id());
    let path = ring::ring_path(&name)?;
    ring::create(
        &path,
        CreateOptions {
            slots: args.slots,
            ..CreateOptions::default()
        },
    )?;
    let mut cleanup = Cleanup {
        path: path.clone(),
        children: Vec::new(),
    };
    let report = std::env::temp_dir().join(format!("{name}.report.json"));
    let cores = core_count();
    let (writer_core, reader_core) = if cores >= 2 {
        (Some(0), Some(1))
    } else {
        (None, None)
    };
    println!(
        "tickloop ring demo: {} candles at {} through {} ({} slots), writer and reader in two processes{}",
        group(args.count),
        if args.rate > 0.0 { format!("{}/s", group(args.rate as u64)) } else { "full speed".into() },
        path.display(),
        group(args.slots),
        if cores >= 2 { " pinned to cores 0 and 1" } else { "" }
    );

    let mut reader = Command::new(&exe);
    reader.args([
        "ring", "tail", "--ring", &name, "--verify", "--wait", "spin",
    ]);
    reader.args(["--count", &args.count.to_string(), "--idle-exit", "10"]);
    reader.arg("--report").arg(&report);
    if let Some(core) = reader_core {
        reader.args(["--cpu", &core.to_string()]);
    }
    let reader = reader
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the reader process")?;
    let reader_pid = reader.id();
    cleanup.children.push(reader);
    wait_for_reader(&path, reader_pid, &stop)?;

    let mut writer = Command::new(&exe);
    writer.args(["feed", "synthetic", "--ring", &name]);
    writer.args([
        "--count",
        &args.count.to_string(),
        "--rate",
        &args.rate.to_string(),
    ]);
    writer.args(["--symbols", &args.symbols.to_string()]);
    if let Some(core) = writer_core {
        writer.args(["--cpu", &core.to_string()]);
    }
    let writer = writer
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the writer process")?;
    cleanup.children.push(writer);

    let bar = ProgressBar::new(args.count).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} candles read  {per_sec}  {msg}")
            .expect("static template"),
    );
    let started = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            bar.abandon_with_message("interrupted");
            bail!("interrupted; the demo ring was removed");
        }
        if let Ok(shown) = info::inspect(&path, 0) {
            if let Some(r) = shown.readers.iter().find(|r| r.pid == reader_pid) {
                bar.set_position(r.received + r.lost);
                bar.set_message(format!("lag {}", r.lag));
            }
        }
        if let Ok(Some(_)) = cleanup.children[0].try_wait() {
            break;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!("the demo took over an hour; giving up");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();

    let reader_status = cleanup.children[0].wait()?;
    let writer_status = cleanup.children[1].wait()?;
    let mut reader_out = String::new();
    if let Some(mut stdout) = cleanup.children[0].stdout.take() {
        std::io::Read::read_to_string(&mut stdout, &mut reader_out)?;
    }
    let mut writer_err = String::new();
    if let Some(mut stderr) = cleanup.children[1].stderr.take() {
        std::io::Read::read_to_string(&mut stderr, &mut writer_err)?;
    }
    let summary: VerifySummary = serde_json::from_str(reader_out.trim())
        .with_context(|| format!("the reader printed no summary ({reader_status})"))?;
    let full: serde_json::Value = std::fs::read_to_string(&report)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let _ = std::fs::remove_file(&report);

    println!("writer:  {}", writer_err.trim());
    println!(
        "reader:  {} received, {} lost, {} duplicates, {} torn, {} overruns ({:.2} M candles/s)",
        group(summary.received),
        group(summary.lost),
        summary.duplicates,
        summary.torn,
        summary.overruns,
        full["per_sec"].as_f64().unwrap_or(0.0) / 1e6
    );
    let lat = &full["latency_ns"];
    println!(
        "latency: publish -> read  p50 {}  p99 {}  p99.9 {}  max {}",
        ns(lat["p50"].as_u64()),
        ns(lat["p99"].as_u64()),
        ns(lat["p999"].as_u64()),
        ns(lat["max"].as_u64())
    );
    let clean = reader_status.success() && writer_status.success();
    if clean && summary.lost == 0 {
        println!("result:  OK, every candle arrived once and whole; ring removed");
        Ok(ExitCode::SUCCESS)
    } else if clean {
        println!(
            "result:  OK but the reader fell behind and was lapped ({} lost, each counted); try a lower --rate or more --slots",
            group(summary.lost)
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("result:  FAILED (reader {reader_status}, writer {writer_status})");
        Ok(ExitCode::from(1))
    }
}

fn wait_for_reader(path: &Path, pid: u32, stop: &std::sync::atomic::AtomicBool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted; the demo ring was removed");
        }
        if let Ok(shown) = info::inspect(path, 0) {
            if shown.readers.iter().any(|r| r.pid == pid) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!(
        "the reader process did not attach to {} within 10 s",
        path.display()
    )
}

fn core_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ns(value: Option<u64>) -> String {
    match value {
        None => "-".into(),
        Some(v) if v < 10_000 => format!("{v} ns"),
        Some(v) if v < 10_000_000 => format!("{:.1} µs", v as f64 / 1e3),
        Some(v) => format!("{:.1} ms", v as f64 / 1e6),
    }
}
