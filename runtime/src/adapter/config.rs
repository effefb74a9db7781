//! The adapter host's configuration: the `[adapters]` section (the symbol table, how child
//! exits are watched) and one `[[adapters.adapter]]` per adapter program, with every limit
//! that sizes what the host allocates at startup.
//!
//! It owns plain data and its checks. It never touches the filesystem or a process
//! ([`AdapterHostConfig::validate`] checks values only; the program is looked up when the host
//! is made), and every error names the adapter, the field, the bad value and the fix.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::protocol::MAX_SYMBOL_BYTES;

pub use crate::limits::{MAX_ADAPTERS, MAX_ADAPTER_NAME, MAX_SYMBOLS};

/// What an adapter's name may be, as [`valid_name`] checks it.
const NAME_RULE: &str = "1 to 32 characters of A-Z a-z 0-9 _ . -";
const _: () = assert!(MAX_ADAPTER_NAME == 32, "NAME_RULE names the limit");

/// Whether `name` is a valid adapter name: [`NAME_RULE`].
fn valid_name(name: &str) -> bool {
    (1..=MAX_ADAPTER_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// How the host learns that an adapter's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitWatch {
    /// A pidfd per child (Linux 5.3+), else SIGCHLD through a signalfd.
    #[default]
    Auto,
    Pidfd,
    /// SIGCHLD through a signalfd (blocked on the loop's thread), with a `waitpid` sweep on
    /// every housekeeping tick as a safety net.
    Sigchld,
}

/// The `[adapters]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdapterHostConfig {
    /// The engine's symbol table: the position of a name is its `u32` id in requests and
    /// events; the name is what goes on the wire. Fill it from the ring's symbol table so
    /// candle and order symbols agree.
    pub symbols: Vec<String>,
    pub exit_watch: ExitWatch,
    /// The adapters, at most [`MAX_ADAPTERS`]; an adapter's id is its position here.
    #[serde(rename = "adapter")]
    pub adapters: Vec<AdapterConfig>,
}

/// One adapter program (`[[adapters.adapter]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdapterConfig {
    /// A short unique name (1 to 32 of `A-Z a-z 0-9 _ . -`): in logs, status and metrics.
    pub name: String,
    /// The program and its arguments, e.g. `["python3", "adapters/ibkr.py", "--paper"]`.
    /// A program without `/` is looked up on `PATH`.
    pub command: Vec<String>,
    /// Extra environment variables for the program (the engine's environment is kept).
    pub env: BTreeMap<String, String>,
    /// Working directory of the program (default: the engine's).
    pub cwd: Option<PathBuf>,
    /// Cores the program may run on. Empty (the default): every core except the loop's
    /// when the loop is pinned (an adapter never competes with the loop for its core).
    pub cpus: Vec<usize>,
    /// The largest frame accepted from the adapter; a larger one is a fault.
    pub max_frame_bytes: u32,
    /// The outbound queue (frames not yet written to the adapter's stdin). A request that
    /// does not fit is refused with `Backpressure`.
    pub queue_bytes: u32,
    /// Requests waiting for their final answer at most; more are refused `TooManyInFlight`.
    pub max_in_flight: u32,
    /// Events of this adapter waiting to reach the app at most; more are lost and reported
    /// as `EventsLost`. At least `max_in_flight + 8` (a dying adapter's requests all fail
    /// at once).
    pub event_queue: u32,
    /// A request without its final answer after this long fails with `Timeout`.
    pub request_timeout_ms: u32,
    /// The adapter must answer `hello` within this long after it starts.
    pub handshake_timeout_ms: u32,
    /// A `ping` this often once ready.
    pub ping_interval_ms: u32,
    /// After this many ping intervals without a `pong`, the adapter is hung: killed and
    /// restarted.
    pub missed_pings: u32,
    /// The first restart waits this long; each failure in a row doubles it, up to
    /// `backoff_max_ms`.
    pub backoff_initial_ms: u32,
    pub backoff_max_ms: u32,
    /// An adapter ready this long without going down starts its backoff over.
    pub stable_after_ms: u32,
    /// At shutdown: its stdin is closed, then it has this long to exit...
    pub shutdown_grace_ms: u32,
    /// ...then SIGTERM, and this long more, then SIGKILL.
    pub term_grace_ms: u32,
    /// A stderr line longer than this is cut (the rest of the line is dropped).
    pub stderr_line_bytes: u32,
    /// Stderr lines logged per second at most (a burst of as many is allowed); the others
    /// are counted and their number logged.
    pub stderr_lines_per_sec: u32,
    /// What the engine's client order ids start with (set by the engine from its account,
    /// not configured): the venue sees `<prefix><order id>`.
    #[serde(skip)]
    pub client_prefix: String,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        AdapterConfig {
            name: String::new(),
            command: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            cpus: Vec::new(),
            max_frame_bytes: 1 << 20,
            queue_bytes: 256 << 10,
            max_in_flight: 64,
            event_queue: 1024,
            request_timeout_ms: 30_000,
            handshake_timeout_ms: 10_000,
            ping_interval_ms: 1_000,
            missed_pings: 3,
            backoff_initial_ms: 100,
            backoff_max_ms: 30_000,
            stable_after_ms: 10_000,
            shutdown_grace_ms: 2_000,
            term_grace_ms: 1_000,
            stderr_line_bytes: 1024,
            stderr_lines_per_sec: 100,
            client_prefix: DEFAULT_CLIENT_PREFIX.to_string(),
        }
    }
}

/// The client id prefix of an engine that set none.
pub const DEFAULT_CLIENT_PREFIX: &str = "tl-";

impl AdapterHostConfig {
    /// Name this engine's orders `<prefix><order id>` at every adapter's venue.
    pub fn set_client_prefix(&mut self, prefix: &str) {
        for a in &mut self.adapters {
            a.client_prefix = prefix.to_string();
        }
    }
}

/// What can stop the adapter host from starting. After startup nothing is an error: faults
/// are events.
#[derive(Debug, thiserror::Error)]
pub enum AdapterSetupError {
    #[error("adapters: {field} = {value} is not allowed: {fix}")]
    Host {
        field: &'static str,
        value: String,
        fix: String,
    },
    #[error("adapter {adapter}: {field} = {value} is not allowed: {fix}")]
    Config {
        adapter: String,
        field: &'static str,
        value: String,
        fix: String,
    },
    #[error("adapter {adapter}: {message}")]
    Program { adapter: String, message: String },
    #[error("adapters: {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn range(
    adapter: &str,
    field: &'static str,
    value: u32,
    lo: u32,
    hi: u32,
    default: u32,
    unit: &str,
) -> Result<(), AdapterSetupError> {
    if (lo..=hi).contains(&value) {
        return Ok(());
    }
    Err(AdapterSetupError::Config {
        adapter: adapter.to_string(),
        field,
        value: value.to_string(),
        fix: format!("use {lo} to {hi}{unit} (default {default})"),
    })
}

/// Cores this machine has (configured, online or not).
pub(crate) fn configured_cores() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    usize::try_from(n).unwrap_or(1).max(1)
}

impl AdapterConfig {
    /// Check every field; the error names the adapter, the field, the value and the fix.
    pub fn validate(&self) -> Result<(), AdapterSetupError> {
        let name = if self.name.is_empty() {
            "(unnamed)"
        } else {
            &self.name
        };
        let bad = |field: &'static str, value: String, fix: &str| {
            Err(AdapterSetupError::Config {
                adapter: name.to_string(),
                field,
                value,
                fix: fix.to_string(),
            })
        };
        if !valid_name(&self.name) {
            let fix = format!("give every adapter a name of {NAME_RULE}");
            return bad("name", format!("{:?}", self.name), &fix);
        }
        match self.command.first() {
            None => {
                return bad(
                    "command",
                    "[]".into(),
                    "give the program and its arguments, e.g. command = [\"python3\", \"my_adapter.py\"]",
                )
            }
            Some(p) if p.is_empty() || p.contains('\0') => {
                return bad(
                    "command",
                    format!("{:?}", self.command),
                    "the first element must be the program's name or path",
                )
            }
            Some(_) => {}
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return bad(
                "command",
                format!("{:?}", self.command),
                "arguments cannot contain NUL bytes",
            );
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return bad(
                    "env",
                    format!("{k:?}"),
                    "variable names are non-empty without '=' or NUL; values without NUL",
                );
            }
        }
        let cores = configured_cores();
        if let Some(&c) = self.cpus.iter().find(|&&c| c >= cores.max(1) || c >= 1024) {
            return bad(
                "cpus",
                c.to_string(),
                &format!(
                    "this machine has cores 0..{}; list cores that exist",
                    cores.max(1) - 1
                ),
            );
        }
        let n = name;
        range(
            n,
            "max_frame_bytes",
            self.max_frame_bytes,
            256,
            64 << 20,
            1 << 20,
            " bytes",
        )?;
        range(
            n,
            "queue_bytes",
            self.queue_bytes,
            4096,
            64 << 20,
            256 << 10,
            " bytes",
        )?;
        range(n, "max_in_flight", self.max_in_flight, 1, 4096, 64, "")?;
        let min_events = self.max_in_flight.saturating_add(8);
        if self.event_queue < min_events || self.event_queue > 1 << 20 {
            return bad(
                "event_queue",
                self.event_queue.to_string(),
                &format!("use max_in_flight + 8 ({min_events}) to 1048576 (default 1024)"),
            );
        }
        range(
            n,
            "request_timeout_ms",
            self.request_timeout_ms,
            10,
            86_400_000,
            30_000,
            " ms",
        )?;
        range(
            n,
            "handshake_timeout_ms",
            self.handshake_timeout_ms,
            10,
            600_000,
            10_000,
            " ms",
        )?;
        range(
            n,
            "ping_interval_ms",
            self.ping_interval_ms,
            10,
            600_000,
            1_000,
            " ms",
        )?;
        range(n, "missed_pings", self.missed_pings, 1, 1000, 3, "")?;
        range(
            n,
            "backoff_initial_ms",
            self.backoff_initial_ms,
            1,
            600_000,
            100,
            " ms",
        )?;
        if self.backoff_max_ms < self.backoff_initial_ms || self.backoff_max_ms > 3_600_000 {
            return bad(
                "backoff_max_ms",
                self.backoff_max_ms.to_string(),
                "use backoff_initial_ms to 3600000 ms (default 30000)",
            );
        }
        range(
            n,
            "stable_after_ms",
            self.stable_after_ms,
            0,
            86_400_000,
            10_000,
            " ms",
        )?;
        range(
            n,
            "shutdown_grace_ms",
            self.shutdown_grace_ms,
            0,
            600_000,
            2_000,
            " ms",
        )?;
        range(
            n,
            "term_grace_ms",
            self.term_grace_ms,
            0,
            600_000,
            1_000,
            " ms",
        )?;
        range(
            n,
            "stderr_line_bytes",
            self.stderr_line_bytes,
            64,
            65_536,
            1024,
            " bytes",
        )?;
        range(
            n,
            "stderr_lines_per_sec",
            self.stderr_lines_per_sec,
            0,
            1_000_000,
            100,
            "",
        )?;
        Ok(())
    }
}

impl AdapterHostConfig {
    /// Check the symbol table and every adapter (names unique, at most [`MAX_ADAPTERS`]).
    pub fn validate(&self) -> Result<(), AdapterSetupError> {
        let host_bad = |field: &'static str, value: String, fix: &str| {
            Err(AdapterSetupError::Host {
                field,
                value,
                fix: fix.to_string(),
            })
        };
        if self.adapters.len() > MAX_ADAPTERS {
            return host_bad(
                "adapter",
                format!("{} adapters", self.adapters.len()),
                &format!("run at most {MAX_ADAPTERS} adapters in one engine"),
            );
        }
        if self.symbols.len() > MAX_SYMBOLS {
            return host_bad(
                "symbols",
                format!("{} symbols", self.symbols.len()),
                &format!("use at most {MAX_SYMBOLS}"),
            );
        }
        for s in &self.symbols {
            if s.is_empty() || s.len() > MAX_SYMBOL_BYTES || s.chars().any(char::is_control) {
                return host_bad(
                    "symbols",
                    format!("{s:?}"),
                    &format!(
                        "a symbol is 1 to {MAX_SYMBOL_BYTES} bytes without control characters"
                    ),
                );
            }
        }
        let mut sorted: Vec<&str> = self.symbols.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return host_bad(
                "symbols",
                format!("{:?}", w[0]),
                "list each symbol once (its position is its id)",
            );
        }
        for (i, a) in self.adapters.iter().enumerate() {
            a.validate()?;
            if self.adapters[..i].iter().any(|b| b.name == a.name) {
                return Err(AdapterSetupError::Config {
                    adapter: a.name.clone(),
                    field: "name",
                    value: format!("{:?}", a.name),
                    fix: "give every adapter a different name".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> AdapterConfig {
        AdapterConfig {
            name: "paper".into(),
            command: vec!["true".into()],
            ..AdapterConfig::default()
        }
    }

    #[test]
    fn defaults_with_a_name_and_command_are_valid() {
        one().validate().unwrap();
        AdapterHostConfig {
            symbols: vec!["A".into(), "B".into()],
            adapters: vec![one()],
            ..AdapterHostConfig::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn every_error_names_the_adapter_field_and_fix() {
        let cases: Vec<(AdapterConfig, &str)> = vec![
            (
                AdapterConfig {
                    name: String::new(),
                    ..one()
                },
                "name",
            ),
            (
                AdapterConfig {
                    command: vec![],
                    ..one()
                },
                "command",
            ),
            (
                AdapterConfig {
                    max_in_flight: 0,
                    ..one()
                },
                "max_in_flight = 0",
            ),
            (
                AdapterConfig {
                    event_queue: 10,
                    ..one()
                },
                "event_queue = 10",
            ),
            (
                AdapterConfig {
                    backoff_max_ms: 1,
                    ..one()
                },
                "backoff_max_ms = 1",
            ),
            (
                AdapterConfig {
                    max_frame_bytes: 1,
                    ..one()
                },
                "max_frame_bytes = 1",
            ),
            (
                AdapterConfig {
                    cpus: vec![100_000],
                    ..one()
                },
                "cpus = 100000",
            ),
        ];
        for (config, what) in cases {
            let e = config.validate().unwrap_err().to_string();
            assert!(e.starts_with("adapter "), "{e}");
            assert!(e.contains(what), "{what}: {e}");
            assert!(
                e.contains("use ") || e.contains("give ") || e.contains("list "),
                "{e}"
            );
        }
    }

    #[test]
    fn duplicate_names_and_symbols_are_refused() {
        let host = AdapterHostConfig {
            adapters: vec![one(), one()],
            ..AdapterHostConfig::default()
        };
        assert!(host
            .validate()
            .unwrap_err()
            .to_string()
            .contains("different name"));
        let host = AdapterHostConfig {
            symbols: vec!["A".into(), "A".into()],
            ..AdapterHostConfig::default()
        };
        assert!(host.validate().unwrap_err().to_string().contains("once"));
    }

    #[test]
    fn unknown_keys_are_refused_by_the_parser() {
        let e = toml::from_str::<AdapterHostConfig>(
            "symbols = [\"A\"]\n[[adapter]]\nname = \"x\"\ncommand = [\"true\"]\nmax_inflight = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_inflight"), "{e}");
        let ok = toml::from_str::<AdapterHostConfig>(
            "symbols = [\"A\"]\n[[adapter]]\nname = \"x\"\ncommand = [\"true\"]\nmax_in_flight = 3\n",
        )
        .unwrap();
        assert_eq!(ok.adapters[0].max_in_flight, 3);
        assert_eq!(ok.adapters[0].ping_interval_ms, 1000);
    }
}
