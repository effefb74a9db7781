//! What every benchmark reports, and how: rows of latency percentiles, checks against targets,
//! notes, and the machine it ran on; printed as a Markdown table or as JSON, and saved as
//! `NAME.json` and `NAME.md` when asked (the committed `bench/results/`).

use hdrhistogram::Histogram;
use serde::Serialize;
use std::path::PathBuf;

/// The options every `tickloop bench NAME` takes.
#[derive(clap::Args, Clone, Debug)]
pub struct OutputArgs {
    /// A short run (seconds) for smoke tests; numbers are noisier.
    #[arg(long)]
    pub quick: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write NAME.md, NAME.json, one NAME-ROW.hgrm per measured row and the plots
    /// NAME.svg and NAME.png into this directory (created if missing). `--save` is the same.
    #[arg(long = "out", visible_alias = "save", value_name = "DIR")]
    pub save: Option<PathBuf>,
}

/// Check before a run that `--out DIR` can be written (creating it), so a long run does not
/// end in an error; the error names the directory and what to do.
pub fn check_out_dir(dir: &std::path::Path) -> Result<(), String> {
    let what = |e: std::io::Error| {
        format!(
            "cannot write into the output directory {}: {e} (pass --out a directory you may write)",
            dir.display()
        )
    };
    std::fs::create_dir_all(dir).map_err(what)?;
    let probe = dir.join(format!(".tickloop-bench-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(what)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// A latency distribution's percentiles and maximum, in nanoseconds; null when not measured.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[cfg_attr(test, derive(serde::Deserialize))]
pub struct Percentiles {
    pub p50_ns: Option<f64>,
    pub p99_ns: Option<f64>,
    pub p999_ns: Option<f64>,
    pub max_ns: Option<f64>,
}

impl Percentiles {
    /// `h`'s percentiles and maximum, each times `scale`.
    pub fn scaled(h: &Histogram<u64>, scale: f64) -> Percentiles {
        let q = |q: f64| Some(h.value_at_quantile(q) as f64 * scale);
        Percentiles {
            p50_ns: q(0.5),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            max_ns: Some(h.max() as f64 * scale),
        }
    }

    /// `h`'s percentiles and maximum; all null when it is empty.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            Percentiles::default()
        } else {
            Percentiles::scaled(h, 1.0)
        }
    }

    /// A table row's cells: `name`, p50, p99, p99.9, max, then `columns`, then `note`.
    pub(crate) fn cells(
        &self,
        name: &str,
        columns: impl IntoIterator<Item = String>,
        note: &str,
    ) -> Vec<String> {
        let mut cells = vec![name.to_string()];
        cells.extend([self.p50_ns, self.p99_ns, self.p999_ns, self.max_ns].map(fmt_ns));
        cells.extend(columns);
        cells.push(note.to_string());
        cells
    }
}

/// One row of the timer and loop reports: a latency distribution (ns) and how it varied across
/// rounds (or blocks).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(serde::Deserialize))]
pub struct Row {
    pub name: String,
    #[serde(flatten)]
    pub latency: Percentiles,
    pub samples: u64,
    /// The p50 of each round (or block), in run order.
    pub rounds_p50_ns: Vec<f64>,
    /// The p99 of each round (or block), in run order: how much the host moved the tail.
    pub rounds_p99_ns: Vec<f64>,
    /// Candles lost (feed benchmarks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    pub note: String,
}

impl Row {
    /// A row of `h` (all null when it is empty), without per-round series yet.
    pub fn new(name: &str, h: &Histogram<u64>, note: String) -> Row {
        Row {
            latency: Percentiles::of(h),
            samples: h.len(),
            ..Row::unmeasured(name, note)
        }
    }

    /// A row that was not measured; `note` says why.
    pub fn unmeasured(name: &str, note: String) -> Row {
        Row {
            name: name.into(),
            latency: Percentiles::default(),
            samples: 0,
            rounds_p50_ns: Vec::new(),
            rounds_p99_ns: Vec::new(),
            lost: None,
            note,
        }
    }

    fn cells(&self) -> Vec<String> {
        let columns = [self.samples.to_string(), rounds_text(&self.rounds_p99_ns)];
        self.latency.cells(&self.name, columns, &self.note)
    }
}

/// A target and what was measured against it. `pass` is null when it could not be measured
/// (a reference missing); the sentence then says why.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(serde::Deserialize))]
pub struct Check {
    pub target: String,
    pub measured: String,
    pub pass: Option<bool>,
}

/// A benchmark's report: its rows, the machine, the checks and, where there are any, notes.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(test, derive(serde::Deserialize))]
pub struct Report<R = Row> {
    pub rows: Vec<R>,
    pub machine: serde_json::Value,
    pub checks: Vec<Check>,
    /// What the numbers mean on this host, in sentences (also under the Markdown table).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Each measured row's whole distribution, for the `.hgrm` files and the plots (not in
    /// the JSON, which carries the percentiles).
    #[serde(skip)]
    pub distributions: Vec<Distribution>,
}

/// One row's latency distribution: `hist` holds values in units of `scale` ns (1.0: ns).
#[derive(Debug, Clone)]
pub struct Distribution {
    /// The row's name, as in the table.
    pub row: String,
    pub hist: Histogram<u64>,
    pub scale: f64,
}

impl Distribution {
    /// A row's distribution in ns.
    pub fn ns(row: &str, hist: &Histogram<u64>) -> Distribution {
        Distribution {
            row: row.to_string(),
            hist: hist.clone(),
            scale: 1.0,
        }
    }
}

impl<R: Serialize> Report<R> {
    /// The report as Markdown: the title line, the table (row, p50, p99, p99.9, max, then
    /// `columns`, then note; `cells` gives a row's cells in that order), the checks, the notes.
    pub fn table(
        &self,
        title: &str,
        columns: &[&str],
        cells: impl Fn(&R) -> Vec<String>,
    ) -> String {
        let machine = machine_section(&self.machine).map_or(String::new(), |m| m + "\n");
        let mut s = format!(
            "{title}\n\n{machine}| row | p50 | p99 | p99.9 | max | {} | note |\n|---|{}---|\n",
            columns.join(" | "),
            "---:|".repeat(4 + columns.len())
        );
        for row in &self.rows {
            s += &format!("| {} |\n", cells(row).join(" | "));
        }
        s += "\n";
        for c in &self.checks {
            s += &format!(
                "- {} {}: {}\n",
                match c.pass {
                    Some(true) => "PASS",
                    Some(false) => "MISS",
                    None => "NOT MEASURED",
                },
                c.target,
                c.measured
            );
        }
        if !self.notes.is_empty() {
            s += "\n";
            for note in &self.notes {
                s += &format!("{note}\n\n");
            }
            s.pop();
        }
        s
    }

    /// The title line: "KIND benchmark: " and the machine, then `rest`, then " (--quick)" for
    /// a quick run.
    pub(crate) fn title(&self, kind: &str, rest: &str) -> String {
        let m = &self.machine;
        format!(
            "{kind} benchmark: {} ({} cores, {}), kernel {}, clocksource {}{rest}{}",
            m["cpu"].as_str().unwrap_or("?"),
            m["cores"],
            m["arch"].as_str().unwrap_or("?"),
            m["kernel"].as_str().unwrap_or("?"),
            m["clocksource"].as_str().unwrap_or("?"),
            if m["quick"].as_bool() == Some(true) {
                " (--quick)"
            } else {
                ""
            }
        )
    }

    /// The report as what `--out` writes: its Markdown `text`, its JSON, its distributions.
    pub fn rendered(&self, name: &str, text: String) -> Result<Rendered, String> {
        Ok(Rendered {
            name: name.to_string(),
            markdown: text,
            json: serde_json::to_string_pretty(self).map_err(|e| e.to_string())? + "\n",
            machine: self.machine.clone(),
            distributions: self.distributions.clone(),
            what: "latency".into(),
        })
    }
}

/// A finished report, ready to print or write: `NAME.md` is `markdown`, `NAME.json` is `json`
/// (pretty JSON text, fields in the report's order), the `.hgrm` files and plots come from
/// `distributions`; `machine` is the host it ran on (as in the JSON).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub name: String,
    pub markdown: String,
    pub json: String,
    pub machine: serde_json::Value,
    pub distributions: Vec<Distribution>,
    /// What the distributions measure, for the plot's y axis ("latency").
    pub what: String,
}

impl Rendered {
    /// Print the Markdown, or the JSON.
    pub fn print(&self, json: bool) {
        if json {
            print!("{}", self.json);
        } else {
            print!("{}", self.markdown);
        }
    }
}

impl Report {
    /// A timer or loop report, made of rounds (or blocks) long enough for other tasks to
    /// matter: the machine (with the benchmark's `fields`) says which cpuidle driver it has and
    /// how much of a core other tasks used meanwhile (`others`, percent), and so does the last
    /// note, after the benchmark's own `checks` and notes.
    pub(crate) fn of_rounds(
        rows: Vec<Row>,
        (checks, mut notes): (Vec<Check>, Vec<String>),
        mut fields: serde_json::Value,
        quick: bool,
        others: f64,
    ) -> Report {
        notes.push(background_note(others));
        fields["cpuidle"] = cpuidle().into();
        fields["other_tasks_percent_of_a_core"] = others.into();
        Report {
            rows,
            machine: machine(quick, fields),
            checks,
            notes,
            distributions: Vec::new(),
        }
    }

    /// The timer and loop reports as Markdown. `unit` names what the per-row series are made
    /// of ("round", "block").
    pub fn rounds_table(&self, title: &str, unit: &str) -> String {
        let per_round = if self.rows.iter().any(|row| row.rounds_p99_ns.len() > 6) {
            format!("p99 per {unit} (min / median / max)")
        } else {
            format!("p99 per {unit}")
        };
        self.table(title, &["samples", &per_round], Row::cells)
    }
}

/// Per-round values: all of them when few, else min / median / max.
fn rounds_text(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let short = |x: f64| fmt_ns(Some(x)).replace(' ', "\u{a0}");
    if v.len() <= 6 {
        return v.iter().map(|&x| short(x)).collect::<Vec<_>>().join(", ");
    }
    let (lo, mid, hi) = spread(v);
    format!("{} / {} / {}", short(lo), short(mid), short(hi))
}

/// (min, median, max) of a non-empty slice.
pub(crate) fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
    )
}

pub(crate) fn fmt_ns(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 10_000.0 => format!("{v:.0} ns"),
        Some(v) if v < 10_000_000.0 => format!("{:.1} µs", v / 1e3),
        Some(v) => format!("{:.1} ms", v / 1e6),
    }
}

pub(crate) fn fmt_rate(per_sec: f64) -> String {
    if per_sec >= 1e5 {
        format!("{:.2} M", per_sec / 1e6)
    } else {
        format!("{per_sec:.0}")
    }
}

/// The machine a report ran on (CPU, cores online and used, SMT, each used core's frequency
/// governor, kernel, clocksource, isolated and nohz_full cores, whether pinning, SCHED_FIFO and
/// mlockall took effect, whether `--quick`, tickloop's version), with the benchmark's own
/// `fields` (an object) added. The cores used are the fields named `core` or `*_core`; a bench
/// that knows better sets `pinning`, `sched_fifo` or `mlockall` itself, else they are observed
/// on this process at the end of the run ("not attempted" where nothing was in effect).
pub(crate) fn machine(quick: bool, fields: serde_json::Value) -> serde_json::Value {
    let used = cores_used(&fields);
    machine_on(quick, used, fields)
}

/// [`machine`] for a run whose cores are known otherwise (`bench all`: every scenario's).
pub(crate) fn machine_on(
    quick: bool,
    used: Vec<u64>,
    fields: serde_json::Value,
) -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into())
    };
    let governor: serde_json::Map<String, serde_json::Value> = used
        .iter()
        .map(|c| (c.to_string(), governor(*c).into()))
        .collect();
    let mut m = serde_json::json!({
        "cpu": cpu,
        "cores": unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) },
        "arch": std::env::consts::ARCH,
        "kernel": read("/proc/sys/kernel/osrelease"),
        "clocksource": read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "quick": quick,
        "tickloop": env!("CARGO_PKG_VERSION"),
        "cores_online": read("/sys/devices/system/cpu/online"),
        "cores_used": used,
        "smt": smt(),
        "cpuidle": cpuidle(),
        "governor": governor,
        "isolated": cpu_list("/sys/devices/system/cpu/isolated"),
        "nohz_full": cpu_list("/sys/devices/system/cpu/nohz_full"),
        "pinning": pinning(),
        "sched_fifo": sched_fifo(&fields),
        "mlockall": mlockall(),
    });
    if let (Some(m), serde_json::Value::Object(fields)) = (m.as_object_mut(), fields) {
        m.extend(fields);
    }
    m
}

/// The cores a bench's `fields` name (`core`, `reader_core`, `engine_core`...), in order.
fn cores_used(fields: &serde_json::Value) -> Vec<u64> {
    let mut cores = Vec::new();
    if let Some(fields) = fields.as_object() {
        for (key, value) in fields {
            let named = key == "core" || (key.ends_with("_core") && !key.contains("percent"));
            if let (true, Some(c)) = (named, value.as_u64()) {
                if !cores.contains(&c) {
                    cores.push(c);
                }
            }
        }
    }
    cores.sort_unstable();
    cores
}

/// "on", "off", or why it is not known (/sys/devices/system/cpu/smt/active).
fn smt() -> String {
    match std::fs::read_to_string("/sys/devices/system/cpu/smt/active") {
        Ok(s) if s.trim() == "1" => "on".into(),
        Ok(s) if s.trim() == "0" => "off".into(),
        Ok(s) => format!("unknown ({})", s.trim()),
        Err(_) => "unknown (no /sys/devices/system/cpu/smt)".into(),
    }
}

/// A core's cpufreq governor; "none" without cpufreq (as in most VMs).
fn governor(core: u64) -> String {
    std::fs::read_to_string(format!(
        "/sys/devices/system/cpu/cpu{core}/cpufreq/scaling_governor"
    ))
    .map(|s| s.trim().to_string())
    .unwrap_or_else(|_| "none".into())
}

/// A sysfs CPU list ("2-3"); "none" when empty, "not supported by this kernel" when missing.
fn cpu_list(path: &str) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() || s.trim() == "(null)" => "none".into(),
        Ok(s) => s.trim().to_string(),
        Err(_) => "not supported by this kernel".into(),
    }
}

/// The cores this thread may run on, from its affinity mask (never empty).
pub(crate) fn allowed_cores() -> Result<Vec<usize>, String> {
    match tickloop_runtime::host::thread_affinity() {
        Ok(cores) if cores.is_empty() => {
            Err("this process may run on no core (empty affinity mask)".into())
        }
        Ok(cores) => Ok(cores),
        Err(e) => Err(format!("sched_getaffinity failed: {e}")),
    }
}

/// Whether this process was pinned, from its affinity at the end of the run.
fn pinning() -> String {
    match allowed_cores() {
        Ok(cores) if cores.len() == 1 => format!(
            "this process on core {} at the end of the run; the bench's child processes pin themselves or fail",
            cores[0]
        ),
        Ok(cores) => format!("this process not pinned (allowed cores {cores:?})"),
        Err(e) => format!("unknown ({e})"),
    }
}

/// SCHED_FIFO: what the bench asked for (its `scheduling` field), else this thread's policy.
fn sched_fifo(fields: &serde_json::Value) -> String {
    if let Some(s) = fields["scheduling"].as_str() {
        if s.starts_with("SCHED_FIFO") {
            return format!("requested ({s}); a refusal is in the rows' notes");
        }
    }
    // SAFETY: sched_getscheduler on the calling thread has no preconditions.
    if unsafe { libc::sched_getscheduler(0) } == libc::SCHED_FIFO {
        "in effect".into()
    } else {
        "not attempted".into()
    }
}

/// mlockall: in effect when this process has locked memory (VmLck), else not attempted.
fn mlockall() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let locked_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    if locked_kb > 0 {
        format!("in effect ({locked_kb} kB locked)")
    } else {
        "not attempted".into()
    }
}

/// The Markdown "Machine" section for a report's `machine`; None for reports written before
/// it was recorded (so their committed Markdown renders the same).
pub fn machine_section(m: &serde_json::Value) -> Option<String> {
    m.get("cores_used")?;
    let text = |key: &str| match &m[key] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "?".into(),
        other => other.to_string(),
    };
    let used: Vec<String> = m["cores_used"]
        .as_array()
        .map(|a| a.iter().map(|c| c.to_string()).collect())
        .unwrap_or_default();
    let governors: Vec<String> = m["governor"]
        .as_object()
        .map(|g| {
            g.iter()
                .map(|(core, gov)| format!("core {core} {}", gov.as_str().unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default();
    Some(format!(
        "Machine:\n\n- CPU: {}, {} ({} cores online: {}; used: {}); SMT {}\n- kernel {}, clocksource {}, cpuidle {}; frequency governor: {}\n- isolated cores: {}; nohz_full: {}\n- this run: pinning: {}; SCHED_FIFO: {}; mlockall: {}\n",
        text("cpu"),
        text("arch"),
        text("cores"),
        text("cores_online"),
        if used.is_empty() { "none named".into() } else { used.join(", ") },
        text("smt"),
        text("kernel"),
        text("clocksource"),
        text("cpuidle"),
        if governors.is_empty() { "-".into() } else { governors.join(", ") },
        text("isolated"),
        text("nohz_full"),
        text("pinning"),
        text("sched_fifo"),
        text("mlockall"),
    ))
}

/// The cpuidle driver ("none" where there is none), for the machine description.
pub(crate) fn cpuidle() -> String {
    std::fs::read_to_string("/sys/devices/system/cpu/cpuidle/current_driver")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "none".into())
}

/// What the rest of the machine did meanwhile, in one sentence.
pub(crate) fn background_note(percent: f64) -> String {
    format!(
        "Other tasks on this machine (everything but this benchmark and its children: builds, tests, kernel threads) used {percent:.1}% of a core during the run{}.",
        if percent >= 10.0 {
            ": a busy machine, so expect tails from tasks sharing the measured cores (see the preemption counts)"
        } else {
            ""
        }
    )
}

/// One progress line on stderr after each round (or block): "bench BENCH: UNIT I/N: ..."
/// with, per row, its short name and `values` (none when the row has nothing yet).
pub(crate) fn progress<'a>(
    bench: &str,
    unit: &str,
    done: usize,
    of: usize,
    rows: impl Iterator<Item = (&'a str, Option<Vec<(&'a str, f64)>>)>,
) {
    let rows: Vec<String> = rows
        .map(|(short, values)| match values {
            Some(values) => values.iter().fold(short.to_string(), |s, (what, v)| {
                format!("{s} {what} {}", fmt_ns(Some(*v)))
            }),
            None => format!("{short} -"),
        })
        .collect();
    eprintln!("bench {bench}: {unit} {done}/{of}: {}", rows.join(", "));
}

#[cfg(test)]
mod tests {
    use super::Report;
    use serde::{de::DeserializeOwned, Serialize};

    /// The committed report `bench/results/NAME.{json,md}` is what `emit` writes today: its JSON
    /// reads back and serializes to the same text (numbers to 1e-12: serde_json may parse a
    /// float one ulp off), and `markdown` renders it to the same Markdown, byte for byte.
    fn committed<R: Serialize + DeserializeOwned>(name: &str, markdown: fn(&Report<R>) -> String) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        let read = |file: String| std::fs::read_to_string(dir.join(file)).unwrap();
        let json = read(format!("{name}.json"));
        let report: Report<R> = serde_json::from_str(&json).unwrap();
        let again = serde_json::to_string_pretty(&report).unwrap() + "\n";
        let number = |line: &str| {
            let (key, value) = line.split_once(": ")?;
            let value: f64 = value.strip_suffix(',').unwrap_or(value).parse().ok()?;
            Some((key.to_string(), value, line.ends_with(',')))
        };
        assert_eq!(again.lines().count(), json.lines().count(), "{again}");
        for (a, b) in again.lines().zip(json.lines()) {
            let close = match (number(a), number(b)) {
                (Some((ka, va, ca)), Some((kb, vb, cb))) => {
                    ka == kb && ca == cb && (va - vb).abs() <= vb.abs() * 1e-12
                }
                _ => false,
            };
            assert!(a == b || close, "{a:?} != {b:?}");
        }
        assert!(again.ends_with("}\n") && json.ends_with("}\n"));
        assert_eq!(markdown(&report), read(format!("{name}.md")));
    }

    #[test]
    fn committed_ring_report_renders_the_same() {
        committed("ring", crate::ring::markdown);
    }

    #[test]
    fn committed_timers_report_renders_the_same() {
        committed("timers", crate::timers::markdown);
    }

    #[test]
    fn committed_loop_report_renders_the_same() {
        committed("loop", crate::loop_bench::markdown);
    }

    #[test]
    fn committed_adapter_report_renders_the_same() {
        committed("adapter", crate::adapter::markdown);
    }
}
