//! The doctor's report: one finding per knob, each with its verdict, what the machine has,
//! why it matters, the fix and whether that needs a reboot; the host it is about; the text a
//! person reads and the JSON a snapshot keeps.
//!
//! It owns the report's shape and its rendering. It never reads the host (the checks do).

use serde::{Deserialize, Serialize};

/// How a knob stands for the engine's core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    /// It could not be read: needs root, or the machine does not say.
    Unknown,
    Warn,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Unknown => "unknown",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// One knob's finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// A stable name (`isolation`, `irqs`, ...): snapshots are compared by it.
    pub id: String,
    pub verdict: Verdict,
    /// What the machine has, in a few words (`performance`, `2 device IRQs: eth0, nvme0q1`).
    pub state: String,
    /// Why that matters (or why it could not be read).
    pub reason: String,
    /// What to change; empty when nothing is to be done.
    pub fix: String,
    /// The fix takes a reboot (a kernel command-line change).
    pub reboot: bool,
}

impl Finding {
    pub fn new(id: &str, verdict: Verdict, state: impl Into<String>) -> Finding {
        Finding {
            id: id.to_string(),
            verdict,
            state: state.into(),
            reason: String::new(),
            fix: String::new(),
            reboot: false,
        }
    }

    pub fn because(mut self, reason: impl Into<String>) -> Finding {
        self.reason = reason.into();
        self
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = fix.into();
        self
    }

    /// The fix is a kernel command-line change.
    pub fn boot_fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = fix.into();
        self.reboot = true;
        self
    }

    /// Not readable without root: says so instead of guessing.
    pub fn needs_root(id: &str, what: &str) -> Finding {
        Finding::new(id, Verdict::Unknown, "unknown (needs root)")
            .because(format!("{what} can only be read by root"))
            .fix("run the doctor as root (sudo tickloop doctor ...)")
    }
}

/// The machine a report is about.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// `/proc/version`.
    pub kernel: String,
    pub release: String,
    /// The board (device tree) or the DMI product; empty when neither says.
    pub model: String,
    pub arch: String,
    pub cmdline: String,
    pub cpus: usize,
    /// The profile the verdicts were given for.
    pub profile: String,
    /// Firmware of a Raspberry Pi (`vcgencmd version`'s first line), when known.
    pub firmware: String,
}

/// A doctor's report: also the snapshot `doctor --json` writes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The snapshot's format.
    pub format: u32,
    /// The engine's core the findings are about.
    pub core: usize,
    /// Whether it was read as root (else some findings are `unknown`).
    pub root: bool,
    pub host: HostInfo,
    pub findings: Vec<Finding>,
}

pub const FORMAT: u32 = 1;

/// `n thing` or `n things`.
pub fn count(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// What changed from snapshot `a` to snapshot `b`, one line each (empty: nothing).
pub fn diff(a: &Report, b: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let host = [
        ("kernel", &a.host.release, &b.host.release),
        ("machine", &a.host.model, &b.host.model),
        ("profile", &a.host.profile, &b.host.profile),
        ("firmware", &a.host.firmware, &b.host.firmware),
        ("command line", &a.host.cmdline, &b.host.cmdline),
    ];
    let shown = |s: &str| {
        if s.is_empty() {
            "(none)".to_string()
        } else {
            s.to_string()
        }
    };
    for (what, x, y) in host {
        if x != y {
            out.push(format!("{what}: {} -> {}", shown(x), shown(y)));
        }
    }
    if a.core != b.core {
        out.push(format!("core: {} -> {}", a.core, b.core));
    }
    for f in &b.findings {
        match a.finding(&f.id) {
            None => out.push(format!("{}: new, {} {}", f.id, f.verdict.as_str(), f.state)),
            Some(e) if e.verdict != f.verdict || e.state != f.state => out.push(format!(
                "{}: {} {} -> {} {}",
                f.id,
                e.verdict.as_str(),
                e.state,
                f.verdict.as_str(),
                f.state
            )),
            Some(_) => {}
        }
    }
    for e in a.findings.iter().filter(|e| b.finding(&e.id).is_none()) {
        out.push(format!(
            "{}: gone (was {} {})",
            e.id,
            e.verdict.as_str(),
            e.state
        ));
    }
    out
}

impl Report {
    /// The worst verdict.
    pub fn worst(&self) -> Verdict {
        let acted = self.findings.iter().map(|f| f.verdict);
        acted
            .filter(|v| *v != Verdict::Unknown)
            .max()
            .unwrap_or(Verdict::Ok)
    }

    /// The exit status for `ExecStartPre=`: 0 ok, 1 warnings, 2 failures (unknowns alone
    /// are 0: the report names them).
    pub fn exit_code(&self) -> i32 {
        match self.worst() {
            Verdict::Fail => 2,
            Verdict::Warn => 1,
            _ => 0,
        }
    }

    pub fn finding(&self, id: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.id == id)
    }

    /// Counts by verdict: ok, warn, fail, unknown.
    pub fn counts(&self) -> [usize; 4] {
        let n = |v| self.findings.iter().filter(|f| f.verdict == v).count();
        [
            n(Verdict::Ok),
            n(Verdict::Warn),
            n(Verdict::Fail),
            n(Verdict::Unknown),
        ]
    }

    /// One line: the verdict for the core, and the knobs that are not ok.
    pub fn one_line(&self) -> String {
        let [ok, warn, fail, unknown] = self.counts();
        let bad: Vec<&str> = self
            .findings
            .iter()
            .filter(|f| matches!(f.verdict, Verdict::Warn | Verdict::Fail))
            .map(|f| f.id.as_str())
            .collect();
        let mut line = format!(
            "host doctor, core {} ({}): {}: {ok} ok, {warn} warn, {fail} fail, {unknown} unknown",
            self.core,
            self.host.profile,
            self.worst().as_str()
        );
        if !bad.is_empty() {
            line.push_str(&format!(" ({})", bad.join(", ")));
        }
        line
    }

    /// The report as a person reads it.
    pub fn render(&self) -> String {
        let h = &self.host;
        let mut out = format!(
            "tickloop doctor: core {} of {} on {} ({}, {}), profile {}{}\n",
            self.core,
            h.cpus,
            if h.model.is_empty() {
                "this machine"
            } else {
                &h.model
            },
            h.release,
            h.arch,
            h.profile,
            if self.root { "" } else { ", not root" }
        );
        for f in &self.findings {
            out.push_str(&format!(
                "  {:<7} {:<18} {}\n",
                f.verdict.as_str(),
                f.id,
                f.state
            ));
            if f.verdict != Verdict::Ok && !f.reason.is_empty() {
                out.push_str(&format!("          why: {}\n", f.reason));
            }
            if f.verdict != Verdict::Ok && !f.fix.is_empty() {
                let reboot = if f.reboot { " (reboot)" } else { "" };
                out.push_str(&format!("          fix{reboot}: {}\n", f.fix));
            }
        }
        out.push_str(&self.one_line());
        out.push('\n');
        out
    }
}
