//! The engine's configuration file (TOML): what `tickloop run --config FILE` runs and what
//! `tickloop config check FILE` validates and prints. Unknown keys are refused; every error
//! names the file, the line, the field, the bad value and the fix, before anything starts.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tickloop_app::telemetry::{Telemetry, Text};
use tickloop_ops::metrics::MetricsConfig;
use tickloop_runtime::event_loop::{LoopConfig, LoopView};
use tickloop_runtime::telemetry::TelemetryConfig;
use tickloop_strategy::host::HostConfig;
use tickloop_strategy::risk::RiskConfig;
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
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub config: ConfigSection,
    #[serde(default)]
    pub log: LogSection,
    /// The strategy to run (with the order host and risk below); without it the engine runs
    /// the `[sma]` signal app, which places no orders.
    #[serde(default)]
    pub strategy: Option<StrategySection>,
    #[serde(default)]
    pub orders: HostConfig,
    /// This start's engine epoch (set by `tickloop run`, from the epoch file beside the
    /// instance lock; not a key of the file).
    #[serde(skip)]
    pub epoch: u32,
    /// Broker and exchange adapters run as child processes (docs/adapter-protocol.md).
    #[serde(default)]
    pub adapters: tickloop_runtime::adapter::AdapterHostConfig,
    #[serde(default)]
    pub risk: RiskConfig,
    #[serde(default)]
    pub sma: SmaConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StrategySection {
    /// The strategy, by name (`strategies` lists those this program has).
    pub name: String,
    /// The strategy's parameters (see examples/tickloop.toml).
    #[serde(default)]
    pub params: toml::Table,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// error, warn, info, debug or trace (applied while running; `TICKLOOP_LOG` overrides).
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigSection {
    /// How often the engine looks at this file for changes (ms, from the loop's tick).
    pub poll_ms: u64,
    /// Every this many polls, read the file even when its stat fingerprint is unchanged and
    /// compare its content (catches an edit whose size and mtime were restored); 0: only on
    /// SIGHUP.
    pub content_check_every: u32,
}

impl Default for ConfigSection {
    fn default() -> Self {
        ConfigSection {
            poll_ms: 1000,
            content_check_every: 10,
        }
    }
}

/// The largest config file read (at start, by `config check`, and while running): a bigger
/// one is refused before it is read, so no file can stall the loop reading it.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// With `account`, names the single-instance lock: one engine per (component, account).
    #[serde(default = "default_component")]
    pub component: String,
    pub account: String,
    /// Where the instance lock lives (default /run/tickloop for root, else
    /// $XDG_RUNTIME_DIR/tickloop). Engines exclude each other only within one directory.
    #[serde(default)]
    pub lock_dir: Option<PathBuf>,
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
    /// `[orders]` and the adapters it names.
    fn validate_orders(&self, path: &Path, text: &str) -> anyhow::Result<()> {
        if let Err(why) = self.orders.validate() {
            anyhow::bail!("config {}: orders.{why}", at(path, text, "[orders"));
        }
        if let Err(e) = self.adapters.validate() {
            anyhow::bail!("config {}: adapters: {e}", at(path, text, "[adapters"));
        }
        if let Some(a) = self.orders.adapter {
            if a as usize >= self.adapters.adapters.len() {
                anyhow::bail!(
                    "config {}: orders.adapter = {a}, but only {} [[adapters.adapter]] are configured (the first is 0)",
                    at(path, text, "adapter"),
                    self.adapters.adapters.len()
                );
            }
        }
        Ok(())
    }

    /// The app's config as the journal records it and `App::reconfigure` takes it: the
    /// strategy host's setup, or the signal app's `[sma]`.
    pub fn app_config(&self) -> Result<Vec<u8>, String> {
        match &self.strategy {
            Some(s) => crate::strategies::setup_bytes_at(
                &s.name,
                &self.orders,
                &self.risk,
                &s.params,
                self.epoch,
            ),
            None => postcard::to_allocvec(&self.sma).map_err(|e| e.to_string()),
        }
    }

    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> anyhow::Result<EngineConfig> {
        let mut bytes = Vec::new();
        read_bounded(path, &mut bytes).map_err(|e| match e {
            ReadError::Io(e) => anyhow::anyhow!(
                "config {}: cannot read it: {e} (check the path, or start from examples/tickloop.toml)",
                path.display()
            ),
            too_big => anyhow::anyhow!("config {}: {too_big}", path.display()),
        })?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| anyhow::anyhow!("config {}: not UTF-8: {e}", path.display()))?;
        Self::parse(path, text)
    }

    pub fn parse(path: &Path, text: &str) -> anyhow::Result<EngineConfig> {
        let mut config: EngineConfig = toml::from_str(text).map_err(|e| {
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
        if config.metrics.enabled && config.metrics.page.is_none() {
            config.metrics.page = Some(default_metrics_page(
                &config.engine.component,
                &config.engine.account,
                config.engine.lock_dir.as_deref(),
            ));
        }
        Ok(config)
    }

    /// Where the engine publishes its metrics page (`None`: `metrics.enabled = false`).
    pub fn metrics_page(&self) -> anyhow::Result<Option<PathBuf>> {
        match (&self.metrics.page, self.metrics.enabled) {
            (Some(page), true) => Ok(Some(tickloop_ops::metrics::page_path(page)?)),
            _ => Ok(None),
        }
    }

    fn validate(&self, path: &Path, text: &str) -> anyhow::Result<()> {
        for (field, value) in [
            ("component", &self.engine.component),
            ("account", &self.engine.account),
        ] {
            if tickloop_ops::lock::validate_name(field, value).is_err() {
                anyhow::bail!(
                    "config {}: engine.{field} = {value:?} must be 1 to {} letters, digits, '.', '_' or '-' (it names the instance lock)",
                    at(path, text, field),
                    tickloop_ops::lock::MAX_NAME
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
        self.validate_orders(path, text)?;
        if let Err(why) = self.risk.validate() {
            anyhow::bail!("config {}: {why}", at(path, text, "[risk"));
        }
        if let Some(strategy) = &self.strategy {
            if let Err(why) = self.app_config() {
                let known = crate::strategies::registry().get(&strategy.name).is_ok();
                let key = if known { "[strategy.params" } else { "name" };
                anyhow::bail!("config {}: strategy: {why}", at(path, text, key));
            }
        }
        if let Err(why) = crate::logging::check_level(&self.log.level) {
            anyhow::bail!("config {}: log.level = {why}", at(path, text, "level"));
        }
        if !(100..=3_600_000).contains(&self.config.poll_ms) {
            anyhow::bail!(
                "config {}: config.poll_ms = {} must be 100 to 3600000",
                at(path, text, "poll_ms"),
                self.config.poll_ms
            );
        }
        if let Err(e) = self.metrics.validate() {
            let key = e.config_key().unwrap_or("[metrics");
            anyhow::bail!("config {}: {e}", at(path, text, key));
        }
        if let Err(e) = self.telemetry.validate() {
            anyhow::bail!("config {}: {e}", at(path, text, "[telemetry"));
        }
        for ring in &self.rings {
            tickloop_ring::ring_path(&ring.name)
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

/// The metrics page an engine publishes unless `metrics.page` says otherwise: named like its
/// instance lock (`COMPONENT@ACCOUNT`), so two engines never share one. Engines exclude each
/// other only within one lock directory, so a configured `engine.lock_dir` adds a hash of it.
pub fn default_metrics_page(component: &str, account: &str, lock_dir: Option<&Path>) -> String {
    match lock_dir {
        None => format!("tickloop-{component}@{account}.metrics"),
        Some(dir) => {
            let hash = digest(dir.as_os_str().as_encoded_bytes()) as u32;
            format!("tickloop-{component}@{account}-{hash:08x}.metrics")
        }
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

/// Why a config file could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    NotAFile,
    TooBig(u64),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "cannot read it: {e}"),
            ReadError::NotAFile => f.write_str("it is not a regular file (a config is read whole, at once)"),
            ReadError::TooBig(size) => write!(
                f,
                "it is {size} bytes, over the {MAX_CONFIG_BYTES}-byte limit for a config file (is this the right file?)"
            ),
        }
    }
}

/// Read the regular file `path` into `buf` (cleared first; its capacity is kept, so polling
/// the same file again allocates nothing), refusing one over [`MAX_CONFIG_BYTES`] before
/// reading it, or once it grows past that while being read. Never blocks on a FIFO.
fn read_bounded(path: &Path, buf: &mut Vec<u8>) -> Result<(), ReadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    buf.clear();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile);
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ReadError::TooBig(meta.len()));
    }
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(buf)
        .map_err(ReadError::Io)?;
    if buf.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ReadError::TooBig(buf.len() as u64));
    }
    Ok(())
}

/// Polls the config file on the loop's tick (no watcher thread): a stat fingerprint (device,
/// inode, size, mtime in ns) catches in-place edits and replacement by rename alike. A change
/// is applied only once the file has held still for one poll (so a file written in pieces is
/// never read half-written) and only if it parses and validates; otherwise the last good
/// config stays and the rejection is reported once. A file whose content equals the applied
/// one (touched, or copied back) is taken as it is, without a new generation.
///
/// The fingerprint misses an in-place edit of the same size whose mtime was restored (`cp -p`,
/// `rsync -t`, deploy tools that pin mtimes), so the content is compared too: at once on
/// SIGHUP, and every `config.content_check_every` polls (a different content must then hold
/// still for one more poll). SIGHUP also judges again a file that was refused (a directory it
/// names may exist now) and reports again a file that is still missing.
///
/// Every rejection is one `ConfigRejected` event; the loop counts them as it emits them, so
/// telemetry, the status file and metrics always show the same number.
pub struct ConfigWatcher {
    path: PathBuf,
    interval_ns: u64,
    content_every: u32,
    polls: u64,
    last_poll: u64,
    reloads_seen: u64,
    /// Generations applied since start (0: the config the engine started with).
    generation: u64,
    applied: Fingerprint,
    applied_digest: u64,
    /// A changed fingerprint waiting to hold still for one poll.
    settling: Option<Fingerprint>,
    /// A changed content under an unchanged fingerprint, waiting to hold still for one poll.
    content_settling: Option<u64>,
    /// The file last refused (its fingerprint, and its digest when it was read), so it is
    /// reported once.
    rejected_fp: Option<Fingerprint>,
    rejected_digest: Option<u64>,
    /// Why the file cannot be looked at (reported once per cause until it is back).
    unstatable: Option<std::io::ErrorKind>,
    current: EngineConfig,
    extra: tickloop_ops::status::SharedExtra,
    /// The file's bytes, reused from poll to poll.
    buf: Vec<u8>,
}

type Fingerprint = (u64, u64, u64, i64, i64);

fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

pub fn digest(bytes: &[u8]) -> u64 {
    tickloop_ring::layout::fnv1a64(bytes)
}

impl ConfigWatcher {
    pub fn new(
        path: &Path,
        current: EngineConfig,
        poll_ms: u64,
        extra: tickloop_ops::status::SharedExtra,
    ) -> ConfigWatcher {
        let mut buf = Vec::new();
        let applied_digest = match read_bounded(path, &mut buf) {
            Ok(()) => digest(&buf),
            Err(_) => 0,
        };
        let mut e = extra.get();
        e.config_digest = applied_digest;
        extra.set(e);
        ConfigWatcher {
            path: path.into(),
            interval_ns: poll_ms.saturating_mul(1_000_000),
            content_every: current.config.content_check_every,
            polls: 0,
            last_poll: 0,
            reloads_seen: 0,
            generation: 0,
            applied: fingerprint(path).unwrap_or_default(),
            applied_digest,
            settling: None,
            content_settling: None,
            rejected_fp: None,
            rejected_digest: None,
            unstatable: None,
            current,
            extra,
            buf,
        }
    }

    fn poll(&mut self, forced: bool, view: &LoopView<'_>) {
        self.polls += 1;
        let fp = match fingerprint(&self.path) {
            Ok(fp) => fp,
            Err(e) => return self.cannot_stat(e, forced, view),
        };
        if self.unstatable.take().is_some() {
            tracing::info!(
                "config {}: the file is back; judging it",
                self.path.display()
            );
        }
        let known = fp == self.applied || Some(fp) == self.rejected_fp;
        if known {
            self.settling = None;
            let due = forced
                || self.content_settling.is_some()
                || (self.content_every > 0 && self.polls.is_multiple_of(self.content_every as u64));
            if !due {
                return;
            }
        } else {
            self.content_settling = None;
            if self.settling != Some(fp) && !forced {
                self.settling = Some(fp);
                return;
            }
            self.settling = None;
        }
        let mut buf = std::mem::take(&mut self.buf);
        let read = read_bounded(&self.path, &mut buf);
        // The file may have changed again between the stat and the read: judge it next time.
        if fingerprint(&self.path).ok() == Some(fp) {
            match read {
                Err(e) => {
                    if forced || Some(fp) != self.rejected_fp {
                        self.reject(
                            fp,
                            None,
                            &format!("config {}: {e}", self.path.display()),
                            view,
                        );
                    }
                }
                Ok(()) => self.judge(fp, &buf, known, forced, view),
            }
        }
        self.buf = buf;
    }

    /// The file as read under fingerprint `fp`: the same content as applied, already refused,
    /// waiting to hold still, or a candidate to validate and apply.
    fn judge(
        &mut self,
        fp: Fingerprint,
        bytes: &[u8],
        known: bool,
        forced: bool,
        view: &LoopView<'_>,
    ) {
        let d = digest(bytes);
        if d == self.applied_digest {
            if self.rejected_fp.is_some() {
                tracing::info!(
                    "config {}: back to the content of generation {}",
                    self.path.display(),
                    self.generation
                );
            }
            self.applied = fp;
            self.rejected_fp = None;
            self.rejected_digest = None;
            self.content_settling = None;
            return;
        }
        if known && !forced {
            if Some(d) == self.rejected_digest {
                return;
            }
            if self.content_settling != Some(d) {
                self.content_settling = Some(d);
                return;
            }
        }
        self.content_settling = None;
        if known {
            tracing::info!(
                "config {}: the content changed under the same size and mtime (digest {d:016x}); judging it",
                self.path.display()
            );
        }
        let parsed = std::str::from_utf8(bytes)
            .map_err(|e| anyhow::anyhow!("config {}: not UTF-8: {e}", self.path.display()))
            .and_then(|text| EngineConfig::parse(&self.path, text));
        let new = match parsed {
            Ok(new) => new,
            Err(e) => return self.reject(fp, Some(d), &format!("{e:#}"), view),
        };
        let restart = restart_needed(&self.current, &new);
        self.generation += 1;
        let generation = self.generation;
        tracing::info!(
            "config {}: generation {generation} applied (digest {d:016x}){}",
            self.path.display(),
            if restart.is_empty() {
                String::new()
            } else {
                format!(
                    "; these take effect at the next restart: {}",
                    restart.join(", ")
                )
            }
        );
        match (self.current.app_config(), new.app_config()) {
            (Ok(old), Ok(bytes)) if old != bytes => view.reconfigure_app(generation, bytes),
            (_, Err(e)) => tracing::error!("config: cannot encode the app's config: {e}"),
            _ => {}
        }
        if new.log != self.current.log && !crate::logging::set_level(&new.log.level) {
            tracing::info!(
                "config: log.level {} not applied: {} sets the level",
                new.log.level,
                crate::logging::ENV
            );
        }
        self.interval_ns = new.config.poll_ms.saturating_mul(1_000_000);
        self.content_every = new.config.content_check_every;
        view.emit_telemetry(Telemetry::ConfigApplied {
            generation,
            restart_needed: restart.len() as u32,
        });
        self.current = new;
        self.applied = fp;
        self.applied_digest = d;
        self.rejected_fp = None;
        self.rejected_digest = None;
        let mut extra = self.extra.get();
        extra.config_digest = d;
        self.extra.set(extra);
    }

    /// One rejection: logged whole, and one `ConfigRejected` event whose reason leaves out
    /// the file's path (the event's 96 bytes are for what went wrong).
    fn reject(&mut self, fp: Fingerprint, digest: Option<u64>, reason: &str, view: &LoopView<'_>) {
        tracing::error!(
            "config rejected, keeping generation {}: {reason}",
            self.generation
        );
        view.emit_telemetry(Telemetry::ConfigRejected {
            generation_kept: self.generation,
            line: line_in(reason),
            reason: Text::new(without_path(reason, &self.path)),
        });
        self.rejected_fp = Some(fp);
        self.rejected_digest = digest;
    }

    /// The file cannot be stat'ed: a rejection, reported once per cause (again on SIGHUP).
    fn cannot_stat(&mut self, e: std::io::Error, forced: bool, view: &LoopView<'_>) {
        self.settling = None;
        self.content_settling = None;
        if self.unstatable == Some(e.kind()) && !forced {
            return;
        }
        self.unstatable = Some(e.kind());
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => {
                "the config file is missing (removed, or renamed away)".to_string()
            }
            _ => format!("the config file cannot be looked at: {e}"),
        };
        tracing::warn!(
            "config {}: {why}; keeping generation {} (put it back; SIGHUP looks at once)",
            self.path.display(),
            self.generation
        );
        view.emit_telemetry(Telemetry::ConfigRejected {
            generation_kept: self.generation,
            line: 0,
            reason: Text::new(&why),
        });
    }
}

/// `reason` without its leading "config PATH" and " line N" (the event has the line).
fn without_path<'a>(reason: &'a str, path: &Path) -> &'a str {
    let prefix = format!("config {}", path.display());
    let Some(rest) = reason.strip_prefix(&prefix) else {
        return reason;
    };
    let rest = match rest.strip_prefix(" line ") {
        Some(r) => r.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    rest.strip_prefix(": ").unwrap_or(rest)
}

/// The line number an error message names ("... line 12: ..."), or 0.
fn line_in(message: &str) -> u32 {
    message
        .split(" line ")
        .nth(1)
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(0)
}

/// The sections of `new` that differ from `old` and are not applied while running (all but
/// the app's parameters (`[sma]`, `[strategy.params]`), `[risk]`, `orders.cancel_on_shutdown`,
/// the log level and the poll interval).
fn restart_needed(old: &EngineConfig, new: &EngineConfig) -> Vec<&'static str> {
    let same = |a: &dyn erased::Ser, b: &dyn erased::Ser| a.json() == b.json();
    let mut fields = Vec::new();
    if !same(&old.engine, &new.engine) {
        fields.push("engine");
    }
    if !same(&old.rings, &new.rings) {
        fields.push("rings");
    }
    if !same(&old.event_loop, &new.event_loop) {
        fields.push("loop");
    }
    if !same(&old.journal, &new.journal) {
        fields.push("journal");
    }
    if !same(&old.status, &new.status) {
        fields.push("status");
    }
    if !same(&old.telemetry, &new.telemetry) {
        fields.push("telemetry");
    }
    if !same(&old.metrics, &new.metrics) {
        fields.push("metrics");
    }
    if !same(&old.adapters, &new.adapters) {
        fields.push("adapters");
    }
    if old.strategy.as_ref().map(|s| &s.name) != new.strategy.as_ref().map(|s| &s.name) {
        fields.push("strategy.name");
    }
    let sizes = |o: &HostConfig| HostConfig {
        cancel_on_shutdown: false,
        ..o.clone()
    };
    if sizes(&old.orders) != sizes(&new.orders) {
        fields.push("orders");
    }
    fields
}

mod erased {
    /// Compare two config sections by their serialized form.
    pub trait Ser {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}

impl tickloop_runtime::event_loop::Service for ConfigWatcher {
    fn tick(&mut self, view: &LoopView<'_>) {
        let reload = view.stats.reload_requests != self.reloads_seen;
        if reload || view.now.saturating_sub(self.last_poll) >= self.interval_ns {
            self.reloads_seen = view.stats.reload_requests;
            self.last_poll = view.now;
            self.poll(reload, view);
        }
    }
}
