//! `tickloop doctor`: what on this machine can still reach the engine's core, each knob with a
//! verdict, the reason and the fix (the checks live in `tickloop-linux-tuning`). Exit codes
//! fit `ExecStartPre=`: 0 ok, 1 warnings, 2 failures.
//!
//! It owns the command's arguments and output only; it never changes the host.

use crate::config::EngineConfig;
use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use tickloop_linux_tuning::{doctor, machine, Profile, Root};

#[derive(Args, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DoctorArgs {
    #[command(subcommand)]
    pub command: Option<DoctorCommand>,
    /// The engine's config: its `loop.host.core` is the core examined.
    #[arg(long, value_name = "FILE", conflicts_with = "core")]
    pub config: Option<PathBuf>,
    /// The core to examine (default: the config's, else the last online core).
    #[arg(long, value_name = "N")]
    pub core: Option<usize>,
    /// The thresholds to judge by: auto (from the machine), x86-colo, vm, pi4, pi5.
    #[arg(long, default_value = "auto", value_parser = parse_profile)]
    pub profile: ProfileArg,
    /// Print the report as JSON (a snapshot `doctor diff` compares).
    #[arg(long)]
    pub json: bool,
    /// Read another machine's tree instead of this one's (a fixture, or a mounted image).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Read as a user without root would (with --root: what only root may read is denied).
    #[arg(long, hide = true)]
    pub as_user: bool,
    /// Also copy every file the doctor read into DIR: a fixture of this machine.
    #[arg(long, value_name = "DIR")]
    pub capture: Option<PathBuf>,
}

#[derive(clap::Subcommand, Clone)]
pub enum DoctorCommand {
    /// What changed between two snapshots (`doctor --json` outputs); exit 0 none, 1 some.
    Diff { before: PathBuf, after: PathBuf },
}

#[derive(Clone, Copy)]
pub struct ProfileArg(Option<Profile>);

fn parse_profile(s: &str) -> Result<ProfileArg, String> {
    if s == "auto" {
        return Ok(ProfileArg(None));
    }
    Profile::parse(s)
        .map(|p| ProfileArg(Some(p)))
        .ok_or_else(|| format!("{s:?}: use auto, x86-colo, vm, pi4 or pi5"))
}

pub fn run(args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    if let Some(DoctorCommand::Diff { before, after }) = &args.command {
        return diff(before, after);
    }
    let mut root = match &args.root {
        Some(dir) => {
            anyhow::ensure!(
                dir.is_dir(),
                "doctor --root {}: not a directory (give the top of a machine's tree, with proc/ and sys/ in it)",
                dir.display()
            );
            Root::at(dir)
        }
        None => Root::system(),
    };
    if args.as_user {
        root = root.as_user();
    }
    if args.capture.is_some() {
        root = root.recording();
    }
    let core = core_of(args, &root)?;
    let report = doctor(&root, core, args.profile.0);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    if let Some(dir) = &args.capture {
        capture(&root, dir)?;
    }
    Ok(ExitCode::from(report.exit_code() as u8))
}

fn diff(before: &std::path::Path, after: &std::path::Path) -> anyhow::Result<ExitCode> {
    let read = |path: &std::path::Path| -> anyhow::Result<tickloop_linux_tuning::Report> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("doctor diff: cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "doctor diff: {} is not a doctor snapshot (write one with `tickloop doctor --json > FILE`)",
                path.display()
            )
        })
    };
    let (a, b) = (read(before)?, read(after)?);
    let changes = tickloop_linux_tuning::report::diff(&a, &b);
    if changes.is_empty() {
        println!("no change: {}", b.one_line());
        return Ok(ExitCode::SUCCESS);
    }
    for line in &changes {
        println!("{line}");
    }
    println!("before: {}\nafter:  {}", a.one_line(), b.one_line());
    Ok(ExitCode::from(1))
}

/// At `tickloop run`'s start (its host set up), with a core: the doctor's one line for it in
/// the log (a warning when it is not ok), its verdict and digest in the status file's extras;
/// with `doctor = "strict"` a failure refuses the start.
pub fn at_start(
    host: &tickloop_runtime::host::HostConfig,
    extra: &tickloop_ops::status::SharedExtra,
) -> anyhow::Result<()> {
    use tickloop_linux_tuning::Verdict;
    use tickloop_runtime::host::DoctorMode;
    let (Some(core), true) = (host.core, host.doctor != DoctorMode::Off) else {
        return Ok(());
    };
    let root = Root::system();
    let profile = Profile::detect(&root);
    let report = doctor(&root, core, Some(profile));
    let line = format!(
        "{}; `tickloop doctor --core {core}` says why and what to change",
        report.one_line()
    );
    match report.worst() {
        Verdict::Fail if host.doctor == DoctorMode::Strict => anyhow::bail!(
            "{line}: loop.host.doctor = \"strict\" refuses to start on a failure (fix it, or set doctor = \"report\")"
        ),
        Verdict::Warn | Verdict::Fail => tracing::warn!("{line}"),
        _ => tracing::info!("{line}"),
    }
    let snapshot = serde_json::to_vec(&report)?;
    let mut e = extra.get();
    e.host_doctor = Some(tickloop_ops::status::HostDoctor {
        core,
        profile: profile.as_str(),
        verdict: report.worst().as_str(),
        digest: tickloop_ring::layout::fnv1a64(&snapshot),
    });
    extra.set(e);
    Ok(())
}

/// The core to examine: `--core`, the config's `loop.host.core`, else the last online core.
fn core_of(args: &DoctorArgs, root: &Root) -> anyhow::Result<usize> {
    let online = machine::online(root);
    let core = match (&args.config, args.core) {
        (_, Some(core)) => core,
        (Some(file), None) => {
            let config = EngineConfig::load(file)?;
            config.event_loop.host.core.with_context(|| {
                format!(
                    "doctor --config {}: it sets no loop.host.core (the engine is not pinned): set one, or give --core",
                    file.display()
                )
            })?
        }
        (None, None) => *online
            .last()
            .context("doctor: /sys/devices/system/cpu/online lists no core: give --core")?,
    };
    anyhow::ensure!(
        online.is_empty() || online.contains(&core),
        "doctor: core {core} is not online here (online: {}): give one of them",
        tickloop_linux_tuning::cpulist::format(&online)
    );
    Ok(core)
}

/// Write every file read into `dir`, as a fixture tree: what the checks read, without what
/// is nobody else's business (processes other than the kernel's threads, mounts other than
/// the system's, init and its arguments, the kernel builder's host, cgroup names, kernel log
/// messages the checks do not read).
fn capture(root: &Root, dir: &std::path::Path) -> anyhow::Result<()> {
    let files = root.captured();
    let mut written = 0;
    for (path, text) in &files {
        let Some(text) = fixture_text(&files, path, text) else {
            continue;
        };
        let to = dir.join(path.trim_start_matches('/'));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("doctor --capture: creating {}", parent.display()))?;
        }
        std::fs::write(&to, text)
            .with_context(|| format!("doctor --capture: writing {}", to.display()))?;
        written += 1;
    }
    eprintln!(
        "tickloop: doctor: {written} of the {} files read captured under {}",
        files.len(),
        dir.display()
    );
    Ok(())
}

/// What a fixture keeps of file `path`; `None`: left out.
fn fixture_text(
    files: &std::collections::BTreeMap<String, String>,
    path: &str,
    text: &str,
) -> Option<String> {
    if let Some((pid, _)) = path.strip_prefix("/proc/").and_then(|r| r.split_once('/')) {
        if pid.bytes().all(|b| b.is_ascii_digit()) {
            let stat = files.get(&format!("/proc/{pid}/stat"))?;
            let flags = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(6))
                .and_then(|f| f.parse::<u64>().ok())?;
            // Kernel threads only (PF_KTHREAD).
            if flags & 0x0020_0000 == 0 {
                return None;
            }
        }
    }
    Some(match path {
        "/proc/cmdline" => {
            let kernel = text.split(" -- ").next().unwrap_or_default();
            let args = kernel.split_whitespace();
            let kept: Vec<&str> = args
                .filter(|a| !a.starts_with("init=") && !a.starts_with("rdinit="))
                .collect();
            kept.join(" ")
        }
        "/dev/kmsg" => text
            .lines()
            .filter(|l| machine::LOG_MESSAGES.iter().any(|m| l.contains(m)))
            .map(|l| format!("6,0,0,-;{l}\n"))
            .collect(),
        "/proc/version" => match (text.find(" ("), text.find(") (")) {
            (Some(a), Some(b)) if a < b => {
                format!("{} (builder@build-host{}", &text[..a], &text[b..])
            }
            _ => text.to_string(),
        },
        "/proc/self/mountinfo" => text
            .lines()
            .filter(|l| {
                let fstype = l
                    .split(" - ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next());
                let point = l.split_whitespace().nth(4);
                matches!(
                    fstype,
                    Some("proc" | "sysfs" | "devtmpfs" | "cgroup" | "cgroup2" | "debugfs")
                ) || point == Some("/")
            })
            .map(|l| format!("{l}\n"))
            .collect(),
        "/proc/self/cgroup" => text
            .lines()
            .map(|l| match l.rsplit_once(':') {
                Some((head, p)) if p != "/" => format!("{head}:/system.slice/tickloop.service\n"),
                _ => format!("{l}\n"),
            })
            .collect(),
        _ => text.to_string(),
    })
}
