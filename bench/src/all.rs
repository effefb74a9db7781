//! `tickloop bench all`: every scenario in turn (ring, timers, loop, adapter, poll) with its
//! default options, progress on stderr, each scenario's files written as soon as it finishes,
//! and a combined summary (and machine description) at the end. A scenario that fails is
//! reported as failed with its error and the rest still run; the command fails at the end.
//! It owns the sequence and the summary; it never measures anything itself, and it never
//! changes what a scenario measures (each starts with this process's original affinity and
//! scheduling, so one scenario's pinning does not move the next).

use crate::report::{self, OutputArgs, Rendered};
use clap::{Args, FromArgMatches};
use std::time::Instant;

#[derive(clap::Args, Clone, Debug)]
#[command(mut_arg("save", |a| a.help("Also write every scenario's files (NAME.md, NAME.json, NAME-ROW.hgrm, NAME.svg, NAME.png), summary.md, summary.json, machine.md and machine.json into this directory (--save is the same)")))]
pub struct AllBenchArgs {
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The scenarios, in the order they run.
pub const SCENARIOS: [&str; 5] = ["ring", "timers", "loop", "adapter", "poll"];

/// A scenario's options as its own subcommand would parse `flags` (defaults otherwise).
fn parse<T: Args + FromArgMatches>(flags: &[&str]) -> Result<T, String> {
    let cmd = T::augment_args(clap::Command::new("bench"));
    let matches = cmd
        .try_get_matches_from(std::iter::once("bench").chain(flags.iter().copied()))
        .map_err(|e| e.to_string())?;
    T::from_arg_matches(&matches).map_err(|e| e.to_string())
}

/// Run one scenario with its default options (and `--quick` when asked).
pub fn run_scenario(name: &str, quick: bool) -> Result<Rendered, String> {
    let flags: &[&str] = if quick { &["--quick"] } else { &[] };
    match name {
        "ring" => {
            let r = crate::ring::run(&parse(flags)?)?;
            r.rendered(name, crate::ring::markdown(&r))
        }
        "timers" => {
            let r = crate::timers::run(&parse(flags)?)?;
            r.rendered(name, crate::timers::markdown(&r))
        }
        "loop" => {
            let r = crate::loop_bench::run(&parse(flags)?)?;
            r.rendered(name, crate::loop_bench::markdown(&r))
        }
        "adapter" => {
            let r = crate::adapter::run(&parse(flags)?)?;
            r.rendered(name, crate::adapter::markdown(&r))
        }
        "poll" => crate::poll::rendered(&parse(flags)?),
        other => Err(format!(
            "no scenario {other:?} (scenarios: {})",
            SCENARIOS.join(", ")
        )),
    }
}

/// How one scenario ended.
struct Outcome {
    name: &'static str,
    seconds: f64,
    result: Result<Rendered, String>,
}

/// This process's affinity mask and scheduling policy, to give every scenario the same start.
struct Start {
    mask: libc::cpu_set_t,
    policy: libc::c_int,
    param: libc::sched_param,
}

impl Start {
    fn save() -> Start {
        // SAFETY: zeroed cpu_set_t and sched_param are valid; the calls fill them for this
        // thread.
        unsafe {
            let mut mask: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut mask);
            let mut param: libc::sched_param = std::mem::zeroed();
            libc::sched_getparam(0, &mut param);
            Start {
                mask,
                policy: libc::sched_getscheduler(0),
                param,
            }
        }
    }

    fn restore(&self) {
        // SAFETY: values read by `save` for this thread.
        unsafe {
            libc::sched_setscheduler(0, self.policy.max(0), &self.param);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.mask);
        }
    }
}

pub fn main(args: &AllBenchArgs) -> Result<(), String> {
    run_all(args, run_scenario)
}

/// The sequence, with `scenario(name, quick)` running each one (a stand-in in the tests).
fn run_all(
    args: &AllBenchArgs,
    scenario: impl Fn(&str, bool) -> Result<Rendered, String> + std::panic::RefUnwindSafe,
) -> Result<(), String> {
    let quick = args.output.quick;
    if let Some(dir) = &args.output.save {
        report::check_out_dir(dir)?;
    }
    let start = Start::save();
    let began = Instant::now();
    let n = SCENARIOS.len();
    let mut outcomes: Vec<Outcome> = Vec::new();
    for (i, &name) in SCENARIOS.iter().enumerate() {
        eprintln!(
            "bench all: [{}/{n}] {name} ... ({:.0} s elapsed)",
            i + 1,
            began.elapsed().as_secs_f64()
        );
        start.restore();
        let t = Instant::now();
        let result = std::panic::catch_unwind(|| scenario(name, quick)).unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown".into());
            Err(format!("panicked: {why}"))
        });
        let seconds = t.elapsed().as_secs_f64();
        match &result {
            Ok(r) => {
                eprintln!(
                    "bench all: [{}/{n}] {name} done in {seconds:.1} s ({:.0} s elapsed)",
                    i + 1,
                    began.elapsed().as_secs_f64()
                );
                if !args.output.json {
                    println!("{}", r.markdown);
                }
                if let Some(dir) = &args.output.save {
                    let written = r.write(dir)?;
                    eprintln!("saved {}", crate::output::describe(dir, &written));
                }
            }
            Err(e) => eprintln!(
                "bench all: [{}/{n}] {name} FAILED after {seconds:.1} s: {e}",
                i + 1
            ),
        }
        let interrupted = matches!(&result, Err(e) if e.starts_with("interrupted by signal"));
        outcomes.push(Outcome {
            name,
            seconds,
            result,
        });
        if interrupted {
            eprintln!("bench all: interrupted; the scenarios after {name} do not run");
            break;
        }
    }
    start.restore();
    let total = began.elapsed().as_secs_f64();
    let per_scenario = "per scenario (machine.md, or each report's machine)";
    let mut cores: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok())
        .filter_map(|r| r.machine["cores_used"].as_array())
        .flatten()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    cores.sort_unstable();
    cores.dedup();
    let machine = report::machine_on(
        quick,
        cores,
        serde_json::json!({
            "pinning": per_scenario,
            "sched_fifo": per_scenario,
            "mlockall": per_scenario,
        }),
    );
    let summary = summary_markdown(&outcomes, &machine, quick, total);
    let json = summary_json(&outcomes, &machine, quick, total);
    if args.output.json {
        print!("{json}");
    } else {
        print!("{summary}");
    }
    if let Some(dir) = &args.output.save {
        let (machine_md, machine_json) = machine_files(&outcomes, &machine);
        for (file, text) in [
            ("summary.md", &summary),
            ("summary.json", &json),
            ("machine.md", &machine_md),
            ("machine.json", &machine_json),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, text).map_err(|e| {
                format!(
                    "cannot write {}: {e} (pass --out a directory you may write)",
                    path.display()
                )
            })?;
        }
        eprintln!(
            "saved {}",
            crate::output::describe(
                dir,
                &["summary.md", "summary.json", "machine.md", "machine.json"].map(String::from)
            )
        );
    }
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err().map(|e| format!("{} ({e})", o.name)))
        .collect();
    let not_run = n - outcomes.len();
    if failed.is_empty() && not_run == 0 {
        eprintln!("bench all: {n} scenarios in {total:.0} s");
        Ok(())
    } else {
        Err(format!(
            "{} of {n} scenarios failed{}: {}",
            failed.len(),
            if not_run > 0 {
                format!(", {not_run} not run")
            } else {
                String::new()
            },
            failed.join("; ")
        ))
    }
}

/// A report's JSON as a value (for reading its checks and rows).
fn value(r: &Rendered) -> serde_json::Value {
    serde_json::from_str(&r.json).unwrap_or_default()
}

/// "3 PASS, 1 MISS" from a report's checks, or the poll's answer.
fn checks_text(v: &serde_json::Value) -> String {
    if let Some(best) = v.get("smallest_concurrency") {
        return match best.as_u64() {
            Some(c) => format!("smallest concurrency meeting the target: {c}"),
            None => "no concurrency meets the target".into(),
        };
    }
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    let count = |pass: Option<bool>| {
        checks
            .iter()
            .filter(|c| c["pass"].as_bool() == pass)
            .count()
    };
    let mut parts = Vec::new();
    for (n, word) in [
        (count(Some(true)), "PASS"),
        (count(Some(false)), "MISS"),
        (count(None), "NOT MEASURED"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// "4 of 5" rows with a measured p50 (or the poll's runs).
fn rows_text(v: &serde_json::Value) -> String {
    if let Some(runs) = v["runs"].as_array() {
        return format!("{} concurrencies", runs.len());
    }
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    let measured = rows.iter().filter(|r| r["p50_ns"].is_number()).count();
    format!("{measured} of {}", rows.len())
}

fn summary_markdown(
    outcomes: &[Outcome],
    machine: &serde_json::Value,
    quick: bool,
    total: f64,
) -> String {
    let ok = outcomes.iter().filter(|o| o.result.is_ok()).count();
    let mut s = format!(
        "All benchmarks (`tickloop bench all{}`): {ok} of {} scenarios ran, in {total:.0} s.\n\n",
        if quick { " --quick" } else { "" },
        SCENARIOS.len()
    );
    if let Some(section) = report::machine_section(machine) {
        s += &section;
        s += "\n";
    }
    s += "| scenario | result | time | checks | rows measured |\n|---|---|---:|---|---:|\n";
    for name in SCENARIOS {
        match outcomes.iter().find(|o| o.name == name) {
            None => s += &format!("| {name} | not run (interrupted) | - | - | - |\n"),
            Some(o) => match &o.result {
                Ok(r) => {
                    let v = value(r);
                    s += &format!(
                        "| {name} | ok | {:.1} s | {} | {} |\n",
                        o.seconds,
                        checks_text(&v),
                        rows_text(&v)
                    );
                }
                Err(e) => {
                    s += &format!(
                        "| {name} | FAILED: {} | {:.1} s | - | - |\n",
                        e.replace('|', "/").replace('\n', " "),
                        o.seconds
                    );
                }
            },
        }
    }
    s
}

/// The JSON for `--json` and summary.json: the machine, then every scenario with its status,
/// time and whole report (the report's own JSON text, fields in its order).
fn summary_json(
    outcomes: &[Outcome],
    machine: &serde_json::Value,
    quick: bool,
    total: f64,
) -> String {
    let scenarios: Vec<serde_json::Value> = SCENARIOS
        .iter()
        .map(|&name| match outcomes.iter().find(|o| o.name == name) {
            None => serde_json::json!({"name": name, "status": "not run"}),
            Some(o) => match &o.result {
                Ok(_) => serde_json::json!({
                    "name": name,
                    "status": "ok",
                    "seconds": o.seconds,
                    "report": format!("@@report:{name}@@"),
                }),
                Err(e) => serde_json::json!({
                    "name": name,
                    "status": "failed",
                    "seconds": o.seconds,
                    "error": e,
                }),
            },
        })
        .collect();
    let all = serde_json::json!({
        "quick": quick,
        "seconds": total,
        "machine": machine,
        "scenarios": scenarios,
    });
    let mut text = serde_json::to_string_pretty(&all).unwrap_or_else(|_| "{}".into()) + "\n";
    for o in outcomes {
        if let Ok(r) = &o.result {
            text = splice(
                &text,
                &format!("\"@@report:{}@@\"", o.name),
                r.json.trim_end(),
            );
        }
    }
    text
}

/// `text` with `placeholder` replaced by `json`, indented like the placeholder's line.
fn splice(text: &str, placeholder: &str, json: &str) -> String {
    let Some(at) = text.find(placeholder) else {
        return text.to_string();
    };
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let indent: String = text[line_start..]
        .chars()
        .take_while(|c| *c == ' ')
        .collect();
    let indented = json.replace('\n', &format!("\n{indent}"));
    format!(
        "{}{indented}{}",
        &text[..at],
        &text[at + placeholder.len()..]
    )
}

/// machine.md and machine.json: the host, and per scenario the cores it used and whether
/// pinning, SCHED_FIFO and mlockall took effect.
fn machine_files(outcomes: &[Outcome], machine: &serde_json::Value) -> (String, String) {
    let mut md = report::machine_section(machine).unwrap_or_default();
    md += "\nPer scenario:\n\n";
    let mut per = serde_json::Map::new();
    for o in outcomes {
        let Ok(r) = &o.result else {
            md += &format!("- {}: failed, nothing recorded\n", o.name);
            continue;
        };
        let m = &r.machine;
        let text = |key: &str| {
            m[key]
                .as_str()
                .map_or_else(|| m[key].to_string(), String::from)
        };
        md += &format!(
            "- {}: cores used {}; pinning: {}; SCHED_FIFO: {}; mlockall: {}\n",
            o.name,
            m["cores_used"],
            text("pinning"),
            text("sched_fifo"),
            text("mlockall")
        );
        per.insert(o.name.to_string(), m.clone());
    }
    let json = serde_json::json!({ "machine": machine, "scenarios": per });
    (
        md,
        serde_json::to_string_pretty(&json).unwrap_or_else(|_| "{}".into()) + "\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_spliced_in_with_its_field_order_and_the_result_is_json() {
        let outer = serde_json::to_string_pretty(&serde_json::json!({
            "a": [{"report": "@@report:x@@"}]
        }))
        .unwrap();
        let text = splice(&outer, "\"@@report:x@@\"", "{\n  \"z\": 1,\n  \"b\": 2\n}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["a"][0]["report"]["z"], 1);
        assert!(text.find("\"z\"").unwrap() < text.find("\"b\"").unwrap());
    }

    /// A scenario that fails or panics is reported, the others still run and write their
    /// files, and the whole run fails at the end naming it.
    #[test]
    fn a_failed_scenario_does_not_stop_the_others() {
        let dir = std::env::temp_dir().join(format!("tickloop-all-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let args = AllBenchArgs {
            output: OutputArgs {
                quick: true,
                json: true,
                save: Some(dir.clone()),
            },
        };
        let fake = |name: &str, _quick: bool| -> Result<Rendered, String> {
            match name {
                "timers" => Err("cyclictest exploded".into()),
                "adapter" => panic!("adapter went wrong"),
                _ => {
                    let mut h = crate::harness::histogram();
                    h.record(1000).unwrap();
                    Ok(Rendered {
                        name: name.into(),
                        markdown: format!("{name} table\n"),
                        json: "{\n  \"rows\": [],\n  \"checks\": []\n}\n".into(),
                        machine: report::machine(true, serde_json::json!({"core": 0})),
                        distributions: vec![report::Distribution::ns("one row", &h)],
                        what: "latency".into(),
                    })
                }
            }
        };
        let err = run_all(&args, fake).unwrap_err();
        assert!(err.starts_with("2 of 5 scenarios failed"), "{err}");
        assert!(err.contains("timers (cyclictest exploded)"), "{err}");
        assert!(
            err.contains("adapter (panicked: adapter went wrong)"),
            "{err}"
        );
        for name in ["ring", "loop", "poll"] {
            for ext in ["md", "json", "svg", "png"] {
                assert!(dir.join(format!("{name}.{ext}")).exists(), "{name}.{ext}");
            }
            assert!(dir.join(format!("{name}-one-row.hgrm")).exists(), "{name}");
        }
        assert!(!dir.join("timers.md").exists());
        let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
        assert!(summary.contains("3 of 5 scenarios ran"), "{summary}");
        assert!(
            summary.contains("| timers | FAILED: cyclictest exploded |"),
            "{summary}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(json["scenarios"][1]["status"], "failed");
        assert_eq!(
            json["scenarios"][2]["report"]["rows"],
            serde_json::json!([])
        );
        assert!(dir.join("machine.md").exists() && dir.join("machine.json").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_scenario_parses_its_default_options() {
        let ring: crate::ring::RingBenchArgs = parse(&["--quick"]).unwrap();
        assert!(ring.output.quick && ring.output.save.is_none());
        let _: crate::timers::TimersBenchArgs = parse(&[]).unwrap();
        let _: crate::loop_bench::LoopBenchArgs = parse(&[]).unwrap();
        let _: crate::adapter::AdapterBenchArgs = parse(&[]).unwrap();
        let poll: crate::poll::PollBenchArgs = parse(&["--quick"]).unwrap();
        assert!(poll.output.quick);
        assert!(run_scenario("nope", true)
            .unwrap_err()
            .contains("no scenario"));
    }
}
