//! What machine this is: kernel, board, architecture, command line, kernel config and log,
//! and the profile whose thresholds fit it (co-located x86, VM, Pi 4, Pi 5).
//!
//! It owns reading the machine's identity and the kernel's own account of its boot. It never
//! judges a knob (the checks do) and never runs a program but `vcgencmd`, and that only on the
//! live machine.

use crate::report::HostInfo;
use crate::root::Root;
use serde::{Deserialize, Serialize};

/// The kind of machine, for thresholds and fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// A co-located x86 host tuned for latency: isolation and the rest are required.
    X86Colo,
    /// A virtual machine: the hypervisor decides much; what the guest can change is advised.
    Vm,
    Pi4,
    Pi5,
}

impl Profile {
    pub const ALL: [Profile; 4] = [Profile::X86Colo, Profile::Vm, Profile::Pi4, Profile::Pi5];

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::X86Colo => "x86-colo",
            Profile::Vm => "vm",
            Profile::Pi4 => "pi4",
            Profile::Pi5 => "pi5",
        }
    }

    pub fn parse(name: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.as_str() == name)
    }

    pub fn is_pi(self) -> bool {
        matches!(self, Profile::Pi4 | Profile::Pi5)
    }

    /// Whether a knob the profile requires is a failure (else a warning) when missing.
    pub fn strict(self) -> bool {
        self == Profile::X86Colo
    }

    /// Where the kernel command line is edited on this kind of machine.
    pub fn cmdline_file(self) -> &'static str {
        if self.is_pi() {
            "/boot/firmware/cmdline.txt (one line)"
        } else {
            "GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub"
        }
    }

    /// The profile a machine fits: its board, else whether it runs under a hypervisor.
    pub fn detect(root: &Root) -> Profile {
        let model = board(root);
        if model.contains("Raspberry Pi 5") {
            return Profile::Pi5;
        }
        if model.contains("Raspberry Pi") {
            return Profile::Pi4;
        }
        if hypervisor(root) {
            Profile::Vm
        } else {
            Profile::X86Colo
        }
    }
}

/// The board's name from the device tree; empty when there is none.
pub fn board(root: &Root) -> String {
    [
        "/proc/device-tree/model",
        "/sys/firmware/devicetree/base/model",
    ]
    .iter()
    .find_map(|p| root.text(p))
    .map(|m| m.trim_end_matches('\0').to_string())
    .unwrap_or_default()
}

/// Whether the CPU says it runs under a hypervisor (x86's `hypervisor` flag, or a DMI
/// vendor that is one).
fn hypervisor(root: &Root) -> bool {
    let cpuinfo = root.text("/proc/cpuinfo").unwrap_or_default();
    let flagged = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "hypervisor"));
    let vendor = root
        .text("/sys/class/dmi/id/sys_vendor")
        .unwrap_or_default();
    flagged
        || [
            "QEMU",
            "KVM",
            "Xen",
            "Amazon EC2",
            "Google",
            "Microsoft",
            "VMware",
        ]
        .iter()
        .any(|v| vendor.contains(v))
}

/// The online CPUs.
pub fn online(root: &Root) -> Vec<usize> {
    root.text("/sys/devices/system/cpu/online")
        .and_then(|t| crate::cpulist::parse(&t))
        .unwrap_or_default()
}

/// The kernel's release (`6.12.25+rpt-rpi-2712`), from `/proc/sys/kernel/osrelease`.
pub fn release(root: &Root) -> String {
    root.text("/proc/sys/kernel/osrelease").unwrap_or_default()
}

/// The machine's identity for the report.
pub fn host_info(root: &Root, profile: Profile) -> HostInfo {
    let dmi = root
        .text("/sys/class/dmi/id/product_name")
        .unwrap_or_default();
    let model = match board(root) {
        b if b.is_empty() => dmi,
        b => b,
    };
    let arch = root
        .text("/proc/sys/kernel/arch")
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    HostInfo {
        kernel: root.text("/proc/version").unwrap_or_default(),
        release: release(root),
        model,
        arch,
        cmdline: root.text("/proc/cmdline").unwrap_or_default(),
        cpus: online(root).len(),
        profile: profile.as_str().to_string(),
        firmware: firmware(root, profile),
    }
}

fn firmware(root: &Root, profile: Profile) -> String {
    if !profile.is_pi() {
        return String::new();
    }
    if let Some(v) = root.text("/proc/device-tree/system/linux,revision") {
        return format!("board revision {}", v.trim_end_matches('\0'));
    }
    if root.is_live() {
        if let Some(v) = run("vcgencmd", &["version"]) {
            return v.lines().next().unwrap_or_default().to_string();
        }
    }
    String::new()
}

/// A program's standard output, if it ran and succeeded.
pub fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The kernel command line's value of `key` (`isolcpus=2,3` gives `2,3`; a flag gives "").
pub fn cmdline_param(root: &Root, key: &str) -> Option<String> {
    let cmdline = root.text("/proc/cmdline")?;
    cmdline
        .split_whitespace()
        .find_map(|arg| match arg.split_once('=') {
            Some((k, v)) if k == key => Some(v.to_string()),
            None if arg == key => Some(String::new()),
            _ => None,
        })
}

/// The CPUs of a command-line list that may carry flags first (`isolcpus=nohz,domain,2-3`,
/// `nohz_full=2-3`).
pub fn cmdline_cpus(root: &Root, key: &str) -> Option<Vec<usize>> {
    let value = cmdline_param(root, key)?;
    let list = value
        .split(',')
        .filter(|p| p.starts_with(|c: char| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(",");
    crate::cpulist::parse(&list)
}

/// The kernel's build config: `/boot/config-<release>` (Debian, Ubuntu, Raspberry Pi OS).
/// `None` when it is not there.
pub fn kernel_config(root: &Root) -> Option<String> {
    root.read(&format!("/boot/config-{}", release(root))).text()
}

/// Whether the kernel was built with `option` (`CONFIG_NO_HZ_FULL`); `None` when the config
/// is not there.
pub fn config_has(root: &Root, option: &str) -> Option<bool> {
    let config = kernel_config(root)?;
    let set = format!("{option}=y");
    Some(config.lines().any(|l| l.trim() == set))
}

/// The kernel's messages the checks read (a fixture's log keeps only these).
pub const LOG_MESSAGES: [&str; 3] = [
    "nohz unsupported",
    "Unknown kernel command line parameters",
    "Offload RCU callbacks from CPUs:",
];

/// The lines of the kernel log that contain `needle`.
pub fn log_lines(log: &str, needle: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(needle))
        .map(|l| l.trim().to_string())
        .collect()
}
