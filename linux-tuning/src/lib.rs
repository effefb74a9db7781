//! tickloop host tuning (not built yet).
//!
//! This crate will own the host audit (`tickloop doctor`: isolated cores, frequency governor,
//! IRQ affinity, memlock and RT limits, clocksource), the apply/revert scripts, the systemd unit
//! and the measurement wrappers. It will only read and report unless asked to change the host.
