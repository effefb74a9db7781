//! cyclictest (from Debian's `rt-tests`) as the timer-lateness reference of
//! `tickloop bench timers`: the same periodic-wakeup measurement, run on the same core in the
//! same run as tickloop's loop, by the tool the Linux real-time community trusts.
//!
//! [`run`] starts one cyclictest thread and returns its whole lateness distribution
//! ([`LatencySummary`]), not only cyclictest's own min/avg/max. The command line is
//!
//! ```text
//! cyclictest -q -a CORE -t 1 -i INTERVAL_US -l LOOPS -N -h 1000000 [-p PRIO -m]
//! ```
//!
//! * `-q`: no screen refresh; cyclictest prints only its histogram on exit (to stdout, which is
//!   parsed here; no temporary file is needed).
//! * `-a CORE`: the measurement thread runs on `CORE`; cyclictest also restricts its main thread
//!   there, and the process is pinned to `CORE` before `exec` (like `taskset -c CORE`), so all of
//!   cyclictest stays on that one core.
//! * `-t 1 -i INTERVAL_US -l LOOPS`: one thread waking every `interval` (whole microseconds:
//!   cyclictest's unit) for `LOOPS = duration / interval` wakeups, so the sample count is exact.
//!   cyclictest 2.x sleeps with `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`; a wakeup that
//!   is later than a whole interval skips the missed periods (they are not samples), so the run
//!   can take longer than `duration` on a bad machine.
//! * `-N -h 1000000`: latencies in nanoseconds. With `-N` cyclictest's histogram buckets are
//!   1 ns wide (not 1 µs), and cyclictest caps a histogram at 1,000,000 buckets, so the
//!   histogram covers 0..1 ms. A wakeup 1 ms late or later is an overflow: counted in
//!   `samples`, and its exact value is known only when it is the maximum.
//! * `-p PRIO -m` when [`CyclictestOptions::priority`] is `Some`: SCHED_FIFO at `PRIO` and
//!   `mlockall` (the whole real-time setup, as tickloop's host setup does for its loop).
//!   `None` passes neither: SCHED_OTHER at nice 0 with memory as the caller's loop would have
//!   it (and no locked 16 MB of histograms, past the usual 8 MB `RLIMIT_MEMLOCK` of a non-root
//!   user). On this development VM `-m` made no difference beyond run-to-run noise.
//!
//! Privileges: cyclictest 2.x refuses to start ("Unable to change scheduling policy!") unless
//! it may use SCHED_FIFO (root, `CAP_SYS_NICE` or `RLIMIT_RTPRIO` ≥ 1), even for a SCHED_OTHER
//! run; [`run`] then returns [`CyclictestOutcome::Failed`] with that message.
//!
//! Resolution: every figure in [`LatencySummary`] is in nanoseconds with 1 ns resolution
//! (cyclictest's `clock_gettime` difference), except a percentile that falls among the
//! overflows (≥ 1 ms late), which is reported as `max_ns`: an upper bound.
//!
//! What cyclictest does to the machine while it runs (its defaults, kept on purpose so the
//! reference is the cyclictest everyone runs): it holds `/dev/cpu_dma_latency` at 0 (no deep
//! C-states on any core) and its main thread wakes every 10 ms on `CORE` to check for the end.
//! The child inherits the caller's timer slack (`PR_SET_TIMERSLACK`; it applies to SCHED_OTHER
//! sleeps only).

use serde::Serialize;
use std::ffi::OsStr;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// What [`run`] reports when cyclictest is not on `PATH`.
pub const INSTALL_HINT: &str =
    "cyclictest not found: install rt-tests (apt-get install rt-tests) or run scripts/setup.sh";

/// Histogram buckets asked for: cyclictest's maximum (`HIST_MAX`), 1 ns each with `-N`.
const HISTOGRAM_BUCKETS: u64 = 1_000_000;

/// How cyclictest waits for each period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CyclictestMode {
    /// `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, next)`: cyclictest 2.x's default, so
    /// no flag is passed (2.x no longer accepts `-n`).
    #[default]
    Nanosleep,
}

/// One cyclictest run: a single measurement thread on one core.
#[derive(Debug, Clone)]
pub struct CyclictestOptions {
    /// The core (`-a CORE`); the whole cyclictest process is pinned there.
    pub core: usize,
    /// The period (`-i`, in whole microseconds; sub-microsecond parts are dropped). At least
    /// 1 µs.
    pub interval: Duration,
    /// How long to measure: `-l duration / interval` wakeups (at least one).
    pub duration: Duration,
    /// `Some(p)`: SCHED_FIFO at priority `p` (`-p p`, 1..=99) plus `mlockall` (`-m`).
    /// `None`: SCHED_OTHER, no `mlockall`.
    pub priority: Option<u8>,
    /// How cyclictest sleeps; only `clock_nanosleep` is offered.
    pub mode: CyclictestMode,
}

impl Default for CyclictestOptions {
    /// Core 0, 1 ms interval, 10 s, SCHED_OTHER, `clock_nanosleep`.
    fn default() -> Self {
        CyclictestOptions {
            core: 0,
            interval: Duration::from_millis(1),
            duration: Duration::from_secs(10),
            priority: None,
            mode: CyclictestMode::Nanosleep,
        }
    }
}

/// A lateness distribution: how long after its deadline each wakeup ran, in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Wakeups measured (histogram buckets plus overflows).
    pub samples: u64,
    /// Median: the smallest bucket whose cumulative count reaches 50% of `samples`.
    pub p50_ns: u64,
    /// The same at 99%.
    pub p99_ns: u64,
    /// The same at 99.9%.
    pub p999_ns: u64,
    /// The latest wakeup (cyclictest's "Max Latencies", exact even past the histogram).
    pub max_ns: u64,
    /// The earliest wakeup (cyclictest's "Min Latencies", exact even past the histogram).
    pub min_ns: u64,
}

/// What came of [`run`].
#[derive(Debug, Clone)]
pub enum CyclictestOutcome {
    /// The distribution, and the exact command line that produced it.
    Ran(LatencySummary, String),
    /// cyclictest is not installed: [`INSTALL_HINT`].
    Missing(String),
    /// It could not start, exited with an error, or printed no histogram: the command line,
    /// the exit status and the tail of stderr (or stdout).
    Failed(String),
}

/// Run cyclictest as `options` say and summarize its histogram. Blocks for `options.duration`
/// plus cyclictest's start and exit (about 0.1 s). Never panics on cyclictest's behalf: every problem is an outcome.
pub fn run(options: &CyclictestOptions) -> CyclictestOutcome {
    run_with(OsStr::new("cyclictest"), None, options)
}

/// cyclictest's version line (e.g. `cyclictest V 2.40`) if it is on `PATH`, for the report's
/// machine description.
pub fn available() -> Option<String> {
    available_with(OsStr::new("cyclictest"), None)
}

/// The command-line arguments (after the program name) for `options`.
fn arguments(options: &CyclictestOptions) -> Result<Vec<String>, String> {
    let interval_us = options.interval.as_micros();
    if interval_us == 0 {
        return Err(format!(
            "cyclictest interval must be at least 1 µs, not {:?}",
            options.interval
        ));
    }
    if interval_us > i32::MAX as u128 {
        return Err(format!(
            "cyclictest interval {:?} is too long",
            options.interval
        ));
    }
    let loops = (options.duration.as_micros() / interval_us).max(1);
    if loops > i32::MAX as u128 {
        return Err(format!(
            "cyclictest run of {loops} loops is too long for its -l"
        ));
    }
    if options.core >= libc::CPU_SETSIZE as usize {
        return Err(format!("core {} is past CPU_SETSIZE", options.core));
    }
    match options.mode {
        // cyclictest 2.x's default: no flag.
        CyclictestMode::Nanosleep => {}
    }
    let mut args = vec![
        "-q".to_string(),
        "-a".to_string(),
        options.core.to_string(),
        "-t".to_string(),
        "1".to_string(),
        "-i".to_string(),
        interval_us.to_string(),
        "-l".to_string(),
        loops.to_string(),
        "-N".to_string(),
        "-h".to_string(),
        HISTOGRAM_BUCKETS.to_string(),
    ];
    if let Some(priority) = options.priority {
        if !(1..=99).contains(&priority) {
            return Err(format!(
                "cyclictest SCHED_FIFO priority must be 1..=99, not {priority}"
            ));
        }
        args.extend(["-p".to_string(), priority.to_string(), "-m".to_string()]);
    }
    Ok(args)
}

/// `program` run with `PATH` replaced by `path_var` when given (tests point it at an empty
/// directory), the whole process pinned to `core`.
fn command(program: &OsStr, path_var: Option<&OsStr>, core: Option<usize>) -> Command {
    let mut command = Command::new(program);
    if let Some(path) = path_var {
        command.env("PATH", path);
    }
    if let Some(core) = core {
        // SAFETY: an all-zero cpu_set_t is a valid empty set, and `core` is below CPU_SETSIZE
        // (checked by `arguments`), so CPU_SET writes inside it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(core, &mut set) };
        // SAFETY: the closure runs between fork and exec and only makes one async-signal-safe
        // system call on a set built before the fork.
        unsafe {
            command.pre_exec(move || {
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    command
}

/// [`run`] with the program (a name searched in `PATH`, or a path) and `PATH` chosen.
fn run_with(
    program: &OsStr,
    path_var: Option<&OsStr>,
    options: &CyclictestOptions,
) -> CyclictestOutcome {
    let args = match arguments(options) {
        Ok(args) => args,
        Err(why) => return CyclictestOutcome::Failed(why),
    };
    let command_line = format!("{} {}", program.to_string_lossy(), args.join(" "));
    let output = command(program, path_var, Some(options.core))
        .args(&args)
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return CyclictestOutcome::Missing(INSTALL_HINT.to_string())
        }
        Err(error) => {
            return CyclictestOutcome::Failed(format!(
                "{command_line}: could not start (pinned to core {}): {error}",
                options.core
            ))
        }
    };
    if !output.status.success() {
        return CyclictestOutcome::Failed(format!(
            "{command_line}: {}: {}",
            output.status,
            tail(&output)
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    match parse_histogram(&stdout, 1) {
        Ok(summary) => CyclictestOutcome::Ran(summary, command_line),
        Err(why) => CyclictestOutcome::Failed(format!("{command_line}: {why}: {}", tail(&output))),
    }
}

/// [`available`] with the program and `PATH` chosen.
fn available_with(program: &OsStr, path_var: Option<&OsStr>) -> Option<String> {
    let output = command(program, path_var, None)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    // `--help` prints the version first ("cyclictest V 2.40"), to stdout in 2.x.
    let text = [&output.stdout[..], &output.stderr[..]].concat();
    String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("cyclictest V"))
        .map(str::to_string)
}

/// The last lines of stderr, or of stdout when stderr is empty, for error messages.
fn tail(output: &Output) -> String {
    const LINES: usize = 8;
    let stream = if output.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
        &output.stderr
    } else {
        &output.stdout
    };
    let text = String::from_utf8_lossy(stream);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let text = lines[lines.len().saturating_sub(LINES)..].join(" | ");
    if text.is_empty() {
        "(no output)".to_string()
    } else {
        text
    }
}

/// Summarize cyclictest's single-thread histogram output (`-h`, with or without `-q`):
/// `# Histogram`, then one `BUCKET COUNT` line per bucket (lines may be missing: they count as
/// empty), then `# Total:`, `# Min Latencies:`, `# Max Latencies:` and
/// `# Histogram Overflows:`. `unit_ns` is the bucket width: 1 with `-N`, 1000 without.
fn parse_histogram(text: &str, unit_ns: u64) -> Result<LatencySummary, String> {
    let mut in_histogram = false;
    let mut seen_histogram = false;
    let mut buckets: Vec<(u64, u64)> = Vec::new();
    // The summary lines: `# Total:` (in-range samples), `# Min Latencies:`, `# Max Latencies:`
    // and `# Histogram Overflows:`.
    let (mut total, mut min, mut max, mut overflows) = (None::<u64>, None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line == "# Histogram" {
            in_histogram = true;
            seen_histogram = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            in_histogram = false;
            let Some((key, value)) = rest.split_once(':') else {
                continue;
            };
            let first = value.split_whitespace().next().and_then(|v| v.parse().ok());
            match key.trim() {
                "Total" => total = first,
                "Min Latencies" => min = first,
                "Max Latencies" => max = first,
                "Histogram Overflows" => overflows = first,
                _ => {}
            }
            continue;
        }
        if !in_histogram || line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let parsed = match (fields.next(), fields.next(), fields.next()) {
            (Some(bucket), Some(count), None) => bucket.parse::<u64>().ok().zip(count.parse().ok()),
            _ => None,
        };
        let Some((bucket, count)) = parsed else {
            return Err(format!("unexpected histogram line {line:?}"));
        };
        if count > 0 {
            buckets.push((bucket, count));
        }
    }
    if !seen_histogram {
        return Err("no \"# Histogram\" in cyclictest's output".to_string());
    }
    let (Some(max), Some(overflows)) = (max, overflows) else {
        return Err("no \"# Max Latencies\" or \"# Histogram Overflows\" line".to_string());
    };
    buckets.sort_unstable();
    let in_range: u64 = buckets.iter().map(|&(_, count)| count).sum();
    if let Some(total) = total {
        if total != in_range {
            return Err(format!(
                "histogram buckets add up to {in_range}, cyclictest's Total says {total}"
            ));
        }
    }
    let samples = in_range + overflows;
    if samples == 0 {
        return Err("cyclictest measured no wakeups".to_string());
    }
    let max_ns = max * unit_ns;
    // The smallest bucket whose cumulative count reaches permille/1000 of the samples; past
    // the histogram (an overflow), the maximum.
    let percentile = |permille: u64| -> u64 {
        let mut cumulative = 0u64;
        for &(bucket, count) in &buckets {
            cumulative += count;
            if cumulative * 1000 >= samples * permille {
                return bucket * unit_ns;
            }
        }
        max_ns
    };
    let min_ns = min
        .map(|min| min * unit_ns)
        .into_iter()
        .chain(buckets.first().map(|&(bucket, _)| bucket * unit_ns))
        .min()
        .unwrap_or(max_ns);
    Ok(LatencySummary {
        samples,
        p50_ns: percentile(500),
        p99_ns: percentile(990),
        p999_ns: percentile(999),
        max_ns: max_ns.max(buckets.last().map_or(0, |&(b, _)| b * unit_ns)),
        min_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cyclictest -q -a 0 -i 1000 -l 40 -N -h 80000` on the development VM (rt-tests 2.4,
    /// Debian 12), trimmed: most empty buckets dropped. The 80 µs histogram made 10 of the 40
    /// wakeups overflow.
    const SAMPLE_NS: &str = "\
# /dev/cpu_dma_latency set to 0us
# Histogram
000000 000000
000001 000000
000002 000000
036089 000001
065401 000001
066168 000001
066607 000001
066610 000001
066986 000001
069009 000001
070112 000001
070515 000001
072105 000001
072372 000001
073029 000001
073291 000001
073454 000001
073935 000001
073977 000001
074346 000001
074893 000001
075686 000001
075994 000001
076783 000001
076824 000001
077007 000001
078028 000001
078048 000001
078235 000001
078326 000001
078336 000001
078359 000001
079061 000001
079998 000000
079999 000000
# Total: 000000030
# Min Latencies: 36089
# Avg Latencies: 74931
# Max Latencies: 92922
# Histogram Overflows: 00010
# Histogram Overflow at cycle number:
# Thread 0: 00000 00003 00004 00015 00016 00017 00019 00023 00024 00035

";

    #[test]
    fn cyclictest_sample_histogram_percentiles() {
        let summary = parse_histogram(SAMPLE_NS, 1).unwrap();
        assert_eq!(
            summary,
            LatencySummary {
                samples: 40,
                // The 20th of 40 wakeups.
                p50_ns: 75_994,
                // 99% and 99.9% of 40 are the 40th: an overflow, so the maximum.
                p99_ns: 92_922,
                p999_ns: 92_922,
                max_ns: 92_922,
                min_ns: 36_089,
            }
        );
    }

    #[test]
    fn cyclictest_microsecond_histogram_percentiles() {
        // Without -N: 1 µs buckets; 1000 wakeups, none overflowing.
        let text = "# Histogram\n000003 000400\n000004 000590\n000009 000009\n000050 000001\n\
                    # Total: 000001000\n# Min Latencies: 00003\n# Avg Latencies: 00004\n\
                    # Max Latencies: 00050\n# Histogram Overflows: 00000\n";
        let summary = parse_histogram(text, 1000).unwrap();
        assert_eq!(
            summary,
            LatencySummary {
                samples: 1000,
                p50_ns: 4_000,
                p99_ns: 4_000,
                p999_ns: 9_000,
                max_ns: 50_000,
                min_ns: 3_000,
            }
        );
    }

    #[test]
    fn cyclictest_output_without_histogram_is_an_error() {
        assert!(parse_histogram("T: 0 ( 1234) P: 0 I:1000 C: 1000 Min: 3", 1).is_err());
        let wrong_total = SAMPLE_NS.replace("# Total: 000000030", "# Total: 000000031");
        assert!(parse_histogram(&wrong_total, 1).is_err());
    }

    #[test]
    fn cyclictest_arguments() {
        let options = CyclictestOptions {
            core: 1,
            priority: Some(90),
            ..CyclictestOptions::default()
        };
        assert_eq!(
            arguments(&options).unwrap().join(" "),
            "-q -a 1 -t 1 -i 1000 -l 10000 -N -h 1000000 -p 90 -m"
        );
        let zero = CyclictestOptions {
            interval: Duration::from_nanos(500),
            ..CyclictestOptions::default()
        };
        assert!(arguments(&zero).is_err());
    }

    #[test]
    fn cyclictest_missing_binary_gives_the_install_hint() {
        let empty =
            std::env::temp_dir().join(format!("tickloop-no-cyclictest-{}", std::process::id()));
        // An empty directory on PATH; where the temporary directory is not writable, a missing
        // one, which the search skips just the same.
        let created = std::fs::create_dir(&empty).is_ok();
        let options = CyclictestOptions {
            duration: Duration::from_millis(10),
            ..CyclictestOptions::default()
        };
        let by_path = run_with(OsStr::new("cyclictest"), Some(empty.as_os_str()), &options);
        let by_name = run_with(empty.join("cyclictest").as_os_str(), None, &options);
        let version = available_with(OsStr::new("cyclictest"), Some(empty.as_os_str()));
        if created {
            std::fs::remove_dir(&empty).unwrap();
        }
        for outcome in [by_path, by_name] {
            match outcome {
                CyclictestOutcome::Missing(why) => assert_eq!(why, INSTALL_HINT),
                other => panic!("expected Missing, got {other:?}"),
            }
        }
        assert_eq!(version, None);
    }

    #[test]
    fn cyclictest_real_run_on_core_0() {
        let Some(version) = available() else {
            println!("skipped: {INSTALL_HINT}");
            return;
        };
        let options = CyclictestOptions {
            core: 0,
            interval: Duration::from_millis(1),
            duration: Duration::from_secs(1),
            ..CyclictestOptions::default()
        };
        match run(&options) {
            CyclictestOutcome::Failed(why)
                if why.contains("Unable to change scheduling policy") =>
            {
                println!(
                    "skipped: cyclictest needs SCHED_FIFO rights (root or CAP_SYS_NICE): {why}"
                );
            }
            CyclictestOutcome::Ran(summary, command_line) => {
                println!("{version}: {command_line}: {summary:?}");
                assert!(command_line.starts_with("cyclictest -q -a 0 "));
                assert_eq!(summary.samples, 1000);
                assert!(summary.min_ns <= summary.p50_ns);
                assert!(summary.p50_ns <= summary.p99_ns);
                assert!(summary.p99_ns <= summary.p999_ns);
                assert!(summary.p999_ns <= summary.max_ns);
            }
            other => panic!("cyclictest is installed ({version}) but: {other:?}"),
        }
    }
}
