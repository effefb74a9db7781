//! The strategies a program can run, by name: tickloop's own and those a user's crate
//! registers with [`crate::Program::strategy`]. Each is kept as a table of `S`'s
//! monomorphised functions ([`Entry`]), so `run`, `replay`, `backtest` and `config check` reach
//! a strategy they know only by the name in a config file or a journal.
//!
//! It owns the registry of one process (set once, before any command runs), the one list of
//! tickloop's own strategies, and the checking of a strategy's parameters (a TOML table, the
//! config file's `[strategy.params]` or `--param KEY=VALUE`) into the strategy's own typed
//! config. It never runs a strategy itself and imports no command: a command that runs a
//! strategy by name keeps its own [`Table`] of functions, one row per registered strategy.

use std::sync::OnceLock;
use tickloop_strategy::crossover::SmaCross;
use tickloop_strategy::drop_trigger::DropTrigger;
use tickloop_strategy::host::{HostConfig, HostSetup, Strategy};
use tickloop_strategy::limit_bracket::LimitBracket;
use tickloop_strategy::risk::RiskConfig;
use tickloop_strategy::stop_breakout::StopBreakout;

/// Something made for each strategy from its type: its registry [`Entry`], or a command's
/// functions for it (a row of that command's [`Table`]).
pub trait ForStrategy: Sized + Send + Sync + 'static {
    fn of<S: Strategy + 'static>() -> Self;
}

/// tickloop's own strategies, each as `T`: the one list of them.
pub fn builtin<T: ForStrategy>() -> Vec<T> {
    vec![
        T::of::<SmaCross>(),
        T::of::<DropTrigger>(),
        T::of::<LimitBracket>(),
        T::of::<StopBreakout>(),
    ]
}

/// A strategy's app config from its settings and the run's epoch (postcard `HostSetup`).
pub type SetupBytes = fn(&HostConfig, &RiskConfig, &toml::Table, u32) -> Result<Vec<u8>, String>;

/// A strategy as the registry knows it: its name and its config check.
#[derive(Clone, Copy)]
pub struct Entry {
    pub name: &'static str,
    /// The app config (postcard `HostSetup`) for these settings, after checking every part.
    pub setup_bytes: SetupBytes,
}

impl ForStrategy for Entry {
    fn of<S: Strategy + 'static>() -> Entry {
        Entry {
            name: S::NAME,
            setup_bytes: encode::<S>,
        }
    }
}

/// One command's functions for each registered strategy, in the registry's order: installed
/// with the registry, or tickloop's own strategies' when none was.
pub struct Table<T: 'static>(OnceLock<Vec<T>>);

impl<T: ForStrategy> Table<T> {
    pub const fn new() -> Table<T> {
        Table(OnceLock::new())
    }

    /// Install the rows (once, with [`install`]; a second call is ignored).
    pub fn install(&self, rows: Vec<T>) {
        let _ = self.0.set(rows);
    }

    /// The row of the strategy named `name`, or the registry's one-line refusal.
    pub fn get(&self, name: &str) -> Result<&T, String> {
        let index = registry().index(name)?;
        let rows = self.0.get_or_init(builtin::<T>);
        assert_eq!(
            rows.len(),
            registry().entries.len(),
            "a table installed without its registry"
        );
        Ok(&rows[index])
    }
}

/// The program's name and its strategies, in the order they were registered.
pub struct Registry {
    pub program: &'static str,
    entries: Vec<Entry>,
}

impl Registry {
    /// tickloop's own strategies, under `program`'s name.
    pub fn builtin(program: &'static str) -> Registry {
        Registry {
            program,
            entries: builtin::<Entry>(),
        }
    }

    /// Add `S`; a name already taken (by a built-in or an earlier one) is refused.
    pub fn add(&mut self, entry: Entry) -> Result<(), String> {
        if !valid_name(entry.name) {
            return Err(format!(
                "strategy name {:?} must be 1 to 64 characters of a-z, 0-9 and _",
                entry.name
            ));
        }
        if self.entries.iter().any(|e| e.name == entry.name) {
            return Err(format!(
                "two strategies are named {:?}: give one another Strategy::NAME",
                entry.name
            ));
        }
        self.entries.push(entry);
        Ok(())
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.name).collect()
    }

    pub fn get(&self, name: &str) -> Result<&Entry, String> {
        Ok(&self.entries[self.index(name)?])
    }

    /// Where the strategy named `name` stands in the registration order.
    pub fn index(&self, name: &str) -> Result<usize, String> {
        self.entries
            .iter()
            .position(|e| e.name == name)
            .ok_or_else(|| self.unknown(name))
    }

    pub fn unknown(&self, name: &str) -> String {
        format!(
            "{name:?} is not a strategy {} has: use one of {}",
            self.program,
            self.names().join(", ")
        )
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// Install the process's registry (once, before any command runs; a second call is ignored).
pub fn install(registry: Registry) {
    let _ = REGISTRY.set(registry);
}

/// The process's registry: the installed one, or tickloop's own.
pub fn registry() -> &'static Registry {
    REGISTRY.get_or_init(|| Registry::builtin("tickloop"))
}

/// `params` as `S`'s config, checked by serde (the error names the key) and by `S::new`.
pub fn params<S: Strategy>(params: &toml::Table) -> Result<S::Config, String> {
    let config: S::Config = serde_path_to_error::deserialize(toml::Value::Table(params.clone()))
        .map_err(|e| {
            let path = e.path().to_string();
            let why = e.into_inner();
            let why = why.message().trim();
            if path == "." || why.contains("unknown field") {
                format!("{}: {why}", S::NAME)
            } else {
                format!("{}: {path}: {why}", S::NAME)
            }
        })?;
    S::new(config.clone(), 1)?;
    Ok(config)
}

fn encode<S: Strategy>(
    host: &HostConfig,
    risk: &RiskConfig,
    table: &toml::Table,
    epoch: u32,
) -> Result<Vec<u8>, String> {
    host.validate()?;
    risk.validate()?;
    let setup = HostSetup {
        host: host.clone(),
        risk: risk.clone(),
        strategy: params::<S>(table)?,
        epoch,
    };
    postcard::to_allocvec(&setup).map_err(|e| e.to_string())
}

/// The app config for strategy `name` of this process's registry (order ids from 1).
pub fn setup_bytes(
    name: &str,
    host: &HostConfig,
    risk: &RiskConfig,
    table: &toml::Table,
) -> Result<Vec<u8>, String> {
    setup_bytes_at(name, host, risk, table, 0)
}

/// The same for a run of engine epoch `epoch` (its order ids start at `epoch << 31`).
pub fn setup_bytes_at(
    name: &str,
    host: &HostConfig,
    risk: &RiskConfig,
    table: &toml::Table,
    epoch: u32,
) -> Result<Vec<u8>, String> {
    (registry().get(name)?.setup_bytes)(host, risk, table, epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_unique() {
        let mut r = Registry::builtin("mybot");
        assert!(r
            .add(Entry::of::<SmaCross>())
            .unwrap_err()
            .contains("two strategies"));
        assert!(r
            .get("nope")
            .err()
            .unwrap()
            .contains("mybot has: use one of sma_cross"));
        assert!(valid_name("mean_reversion_2"));
        assert!(!valid_name("Mean") && !valid_name("") && !valid_name("a-b"));
    }
}
