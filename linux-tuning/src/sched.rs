//! What decides whether the engine may run real-time and lock its memory: RT group scheduling
//! and the process's cgroup, RT throttling, resource limits and capabilities.
//!
//! It owns these readings for the doctor and for the runtime's startup (which explains a
//! refused `SCHED_FIFO` with [`rt_group_cause`]). It never changes a limit or a group.

use crate::root::Root;

/// A field of `/proc/<pid>/status` (`CapEff`, `Cpus_allowed_list`).
pub fn status_field(status: &str, field: &str) -> Option<String> {
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim().to_string())
    })
}

/// Whether a status's effective capabilities hold `bit` (`CAP_IPC_LOCK` 14, `CAP_SYS_NICE` 23).
pub fn has_capability(status: &str, bit: u32) -> bool {
    status_field(status, "CapEff")
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|caps| caps >> bit & 1 == 1)
}

pub const CAP_IPC_LOCK: u32 = 14;
pub const CAP_SYS_NICE: u32 = 23;

/// A soft limit from `/proc/<pid>/limits` by its name (`Max locked memory`): `u64::MAX` for
/// unlimited; `None` when not listed.
pub fn soft_limit(limits: &str, name: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let soft = line[name.len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// Why RT group scheduling refuses a real-time task of the process whose cgroup is at
/// `/proc/<who>/cgroup`, with the fix; `None` if it does not.
pub fn rt_group_cause(root: &Root, who: &str) -> Option<String> {
    if root.text("/proc/sys/kernel/sched_rt_runtime_us").as_deref() == Some("0") {
        return Some(
            "kernel.sched_rt_runtime_us is 0, so no real-time task may run anywhere: set it back (`sysctl kernel.sched_rt_runtime_us=950000`)".into(),
        );
    }
    let cgroups = root.text(&format!("/proc/{who}/cgroup"))?;
    let mounts = root.text("/proc/self/mountinfo").unwrap_or_default();
    let mut v2_path = None;
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            v2_path = Some(path.to_string());
            continue;
        }
        if controllers.split(',').any(|c| c == "cpu") {
            return v1_cause(root, &mounts, path);
        }
    }
    v2_cause(root, &mounts, &v2_path?)
}

/// cgroup v1 with a cpu controller: the group's own `cpu.rt_runtime_us` decides.
fn v1_cause(root: &Root, mounts: &str, path: &str) -> Option<String> {
    if path == "/" {
        return None;
    }
    let is_cpu_v1 =
        |fstype: &str, opts: &str| fstype == "cgroup" && opts.split(',').any(|o| o == "cpu");
    let dir = cgroup_dir(mounts, is_cpu_v1, path);
    let top = cgroup_dir(mounts, is_cpu_v1, "/").unwrap_or_else(|| "/sys/fs/cgroup/cpu".into());
    // Without RT group scheduling (not built, or rt_group_sched=0) no group has the file.
    if matches!(
        root.read(&format!("{top}/cpu.rt_runtime_us")),
        crate::Read::Missing
    ) {
        return None;
    }
    let file = format!(
        "{}/cpu.rt_runtime_us",
        dir.as_deref().unwrap_or(&format!("{top}{path}"))
    );
    let fix = format!(
        "give the group RT runtime (`echo 950000 > {file}`, after its parent groups have at least as much) or run the loop in the root cpu cgroup (`echo $PID > {top}/cgroup.procs`)"
    );
    match dir.as_deref().map(|_| root.text(&file)) {
        Some(Some(v)) if v == "0" => Some(format!(
            "RT group scheduling: this thread is in cgroup v1 cpu group {path}, whose cpu.rt_runtime_us ({file}) is 0, so it may not run real-time tasks: {fix}"
        )),
        Some(Some(_)) => None,
        _ => Some(format!(
            "RT group scheduling: this thread is in the non-root cgroup v1 cpu group {path}, whose cpu.rt_runtime_us ({file}) could not be read and is most likely 0 (new groups get no real-time runtime): {fix}"
        )),
    }
}

/// cgroup v2: with CONFIG_RT_GROUP_SCHED, a group with the cpu controller enabled gets no
/// real-time runtime, and cgroup v2 has no file to grant one.
fn v2_cause(root: &Root, mounts: &str, path: &str) -> Option<String> {
    if path == "/" || rt_group_sched_enabled(root) == Some(false) {
        return None;
    }
    let top = cgroup_dir(mounts, |fstype, _| fstype == "cgroup2", "/")?;
    // The thread's cpu group is the nearest ancestor (itself included) with cpu enabled.
    let mut group = path.trim_end_matches('/').to_string();
    while !group.is_empty() {
        let controllers = root
            .text(&format!("{top}{group}/cgroup.controllers"))
            .unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "cpu") {
            let built = match rt_group_sched_enabled(root) {
                Some(true) => "the kernel has RT group scheduling (CONFIG_RT_GROUP_SCHED)",
                _ => "the kernel most likely has RT group scheduling (CONFIG_RT_GROUP_SCHED; check `zgrep RT_GROUP_SCHED /proc/config.gz`)",
            };
            return Some(format!(
                "RT group scheduling: this thread is in cgroup v2 group {path} with the cpu controller enabled (at {group}) and {built}, which gives such groups no real-time runtime: run the loop in the root cgroup, or disable the cpu controller for its subtree (no CPUWeight=/CPUQuota= on its slice), or boot with rt_group_sched=0 (kernel >= 6.16)"
            ));
        }
        match group.rfind('/') {
            Some(i) => group.truncate(i),
            None => break,
        }
    }
    None
}

/// Is RT group scheduling compiled in and enabled? `None` when this cannot be told.
pub fn rt_group_sched_enabled(root: &Root) -> Option<bool> {
    match crate::machine::cmdline_param(root, "rt_group_sched").as_deref() {
        Some("0") => return Some(false),
        Some("1") => return Some(true),
        _ => {}
    }
    crate::machine::config_has(root, "CONFIG_RT_GROUP_SCHED")
}

/// The directory of cgroup `path` under the first mount that `matches` (fstype, super options).
pub fn cgroup_dir(
    mounts: &str,
    matches: impl Fn(&str, &str) -> bool,
    path: &str,
) -> Option<String> {
    for line in mounts.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split_whitespace();
        let (Some(fstype), _, Some(opts)) = (right.next(), right.next(), right.next()) else {
            continue;
        };
        if !matches(fstype, opts) {
            continue;
        }
        let left: Vec<&str> = left.split_whitespace().collect();
        let (Some(root), Some(mount_point)) = (left.get(3), left.get(4)) else {
            continue;
        };
        let mount_point = unescape_mount(mount_point);
        let relative = match path.strip_prefix(root) {
            Some(rest) if *root != "/" => rest,
            _ => path,
        };
        let relative = relative.trim_end_matches('/');
        let relative = if relative.is_empty() || relative.starts_with('/') {
            relative.to_string()
        } else {
            format!("/{relative}")
        };
        return Some(format!("{}{relative}", mount_point.trim_end_matches('/')));
    }
    None
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape_mount(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_escapes() {
        assert_eq!(unescape_mount(r"/a\040b"), "/a b");
        assert_eq!(unescape_mount(r"/a\04"), r"/a\04");
    }

    #[test]
    fn cgroup_dirs() {
        let mounts = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                      40 31 0:40 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw";
        let cpu = |f: &str, o: &str| f == "cgroup" && o.split(',').any(|o| o == "cpu");
        assert_eq!(
            cgroup_dir(mounts, cpu, "/a/b").as_deref(),
            Some("/sys/fs/cgroup/cpu/a/b")
        );
        assert_eq!(
            cgroup_dir(mounts, |f, _| f == "cgroup2", "/").as_deref(),
            Some("/sys/fs/cgroup/unified")
        );
    }

    #[test]
    fn limits_and_capabilities() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max locked memory         8388608              8388608              bytes\n\
                      Max realtime priority     unlimited            unlimited";
        assert_eq!(soft_limit(limits, "Max locked memory"), Some(8_388_608));
        assert_eq!(soft_limit(limits, "Max realtime priority"), Some(u64::MAX));
        let status = "Name:\tx\nCapEff:\t0000000000804000\n";
        assert!(has_capability(status, CAP_IPC_LOCK) && has_capability(status, CAP_SYS_NICE));
        assert!(!has_capability("CapEff:\t0\n", CAP_SYS_NICE));
    }
}
