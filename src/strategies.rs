//! The strategies `tickloop run` and `tickloop backtest` can run, by name: parameters from a
//! TOML table (the config file's `[strategy.params]`, or `--param KEY=VALUE`) checked into the
//! strategy's config, and the host's setup encoded as the app config the journal records.

use tickloop_strategy::crossover::SmaCross;
use tickloop_strategy::drop_trigger::DropTrigger;
use tickloop_strategy::host::{HostConfig, HostSetup, Strategy};
use tickloop_strategy::risk::RiskConfig;

pub const NAMES: &[&str] = &[SmaCross::NAME, DropTrigger::NAME];

/// `params` as `S`'s config, checked.
pub fn params<S: Strategy>(params: &toml::Table) -> Result<S::Config, String> {
    let config: S::Config = toml::Value::Table(params.clone())
        .try_into()
        .map_err(|e: toml::de::Error| format!("{}: {}", S::NAME, e.message().trim()))?;
    S::new(config.clone(), 1)?;
    Ok(config)
}

fn encode<S: Strategy>(
    host: &HostConfig,
    risk: &RiskConfig,
    table: &toml::Table,
) -> Result<Vec<u8>, String> {
    host.validate()?;
    risk.validate()?;
    let setup = HostSetup {
        host: host.clone(),
        risk: risk.clone(),
        strategy: params::<S>(table)?,
    };
    postcard::to_allocvec(&setup).map_err(|e| e.to_string())
}

/// The app config (postcard `HostSetup`) for strategy `name`, after checking every part.
pub fn setup_bytes(
    name: &str,
    host: &HostConfig,
    risk: &RiskConfig,
    table: &toml::Table,
) -> Result<Vec<u8>, String> {
    match name {
        SmaCross::NAME => encode::<SmaCross>(host, risk, table),
        DropTrigger::NAME => encode::<DropTrigger>(host, risk, table),
        other => Err(unknown(other)),
    }
}

pub fn unknown(name: &str) -> String {
    format!(
        "{name:?} is not a strategy tickloop has: use one of {}",
        NAMES.join(", ")
    )
}
