//! The engine's configuration file (TOML): what `tickloop run --config FILE` runs and what
//! `tickloop config check FILE` validates and prints. Unknown keys are refused; every error
//! names the file, the line, the field, the bad value and the fix, before anything starts.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tickloop_runtime::event_loop::LoopConfig;
use tickloop_runtime::telemetry::TelemetryConfig;
use tickloop_strategy::sma::SmaConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    pub engine: EngineSection,
    /// Rings to read, in order (source 0, 1, ...).
    #[serde(default)]
    pub rings: Vec<RingEntry>,
    #[serde(default, rename = "loop")]
    pub event_loop: LoopConfig,
    #[serde(default)]
    pub journal: JournalSection,
    #[serde(default)]
    pub status: StatusSection,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub sma: SmaConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// With `account`, names the single-instance lock: one engine per (component, account).
    #[serde(default = "default_component")]
    pub component: String,
    pub account: String,
}

fn default_component() -> String {
    "engine".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingEntry {
    pub name: String,
    #[serde(default)]
    pub start: StartAt,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    #[default]
    Next,
    Oldest,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    /// Record every input and action here (never overwritten). Off when absent.
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusSection {
    /// Where the status file is written (atomically). Off when absent.
    pub path: Option<PathBuf>,
    /// How often (ms), from the loop's tick.
    pub interval_ms: u64,
}

impl Default for StatusSection {
    fn default() -> Self {
        StatusSection {
            path: None,
            interval_ms: 1000,
        }
    }
}

/// The 1-based line of `needle` (a `key =` or `[table]` text) in the file, for messages.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with(key) && l[key.len()..].trim_start().starts_with(['=', ']', '.'])
        })
        .map(|i| i + 1)
}

fn at(path: &Path, text: &str, key: &str) -> String {
    match line_of(text, key) {
        Some(line) => format!("{} line {line}", path.display()),
        None => path.display().to_string(),
    }
}

impl EngineConfig {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> anyhow::Result<EngineConfig> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "config {}: cannot read it (check the path, or start from examples/tickloop.toml)",
                path.display()
            )
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> anyhow::Result<EngineConfig> {
        let config: EngineConfig = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().replace('\n', " ");
            match line {
                Some(line) => anyhow::anyhow!("config {} line {line}: {message}", path.display()),
                None => anyhow::anyhow!("config {}: {message}", path.display()),
            }
        })?;
        config.validate(path, text)?;
        Ok(config)
    }

    fn validate(&self, path: &Path, text: &str) -> anyhow::Result<()> {
        for (field, value) in [
            ("component", &self.engine.component),
            ("account", &self.engine.account),
        ] {
            let ok = !value.is_empty()
                && value.len() <= 64
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                anyhow::bail!(
                    "config {}: engine.{field} = {value:?} must be 1 to 64 letters, digits, '.', '_' or '-' (it names the instance lock)",
                    at(path, text, field)
                );
            }
        }
        if let Err(e) = self.event_loop.validate() {
            let field = match &e {
                tickloop_runtime::event_loop::LoopError::Config { field, .. } => {
                    field.rsplit('.').next().unwrap_or(field).to_string()
                }
                _ => String::new(),
            };
            anyhow::bail!(
                "config {}: loop.{}",
                at(path, text, &field),
                e.to_string().trim_start_matches("config: ")
            );
        }
        if let Some(core) = self.event_loop.host.core {
            let allowed = tickloop_runtime::host::allowed_cpus();
            if !allowed.contains(&core) {
                anyhow::bail!(
                    "config {}: loop.host.core = {core} is not a core this process may use (cores {:?}): pick one of them",
                    at(path, text, "core"),
                    allowed
                );
            }
        }
        if let Err(why) = self.sma.validate() {
            anyhow::bail!("config {}: {why}", at(path, text, "[sma"));
        }
        if let Err(e) = self.telemetry.validate() {
            anyhow::bail!("config {}: {e}", at(path, text, "[telemetry"));
        }
        for ring in &self.rings {
            tickloop_runtime::ring::ring_path(&ring.name)
                .map_err(|e| anyhow::anyhow!("config {}: rings: {e}", at(path, text, "name")))?;
        }
        // The status file is written from the housekeeping tick, so no more often than it.
        let tick_ms = self.event_loop.housekeeping_ns.div_ceil(1_000_000);
        if !(tick_ms..=3_600_000).contains(&self.status.interval_ms) {
            anyhow::bail!(
                "config {}: status.interval_ms = {} must be {tick_ms} (loop.housekeeping_ns) to 3600000",
                at(path, text, "interval_ms"),
                self.status.interval_ms
            );
        }
        for (what, file) in [
            ("status.path", self.status.path.as_deref()),
            ("journal.path", self.journal.path.as_deref()),
        ] {
            let Some(file) = file else { continue };
            let dir = match file.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                anyhow::bail!(
                    "config {}: {what} = {}: directory {} does not exist (create it or choose another path)",
                    at(path, text, "path"),
                    file.display(),
                    dir.display()
                );
            }
            if !writable(dir) {
                anyhow::bail!(
                    "config {}: {what} = {}: directory {} is not writable by this user",
                    at(path, text, "path"),
                    file.display(),
                    dir.display()
                );
            }
        }
        Ok(())
    }
}

/// Can this process create a file in `dir`? (A real probe: access(2) says yes to root even
/// on read-only file systems and /proc.)
fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".tickloop-probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}
