//! systemd integration: when `NOTIFY_SOCKET` is set, `READY=1` once the loop runs,
//! `WATCHDOG=1` from the loop's own tick (so a hung loop stops petting the watchdog and
//! systemd restarts it), and `STOPPING=1` on shutdown. Without `NOTIFY_SOCKET` it does
//! nothing.
//!
//! It never pets the watchdog from anywhere but the loop's tick (a helper thread would keep
//! a hung loop alive), and a failed notification is reported once, never fatal.

use sd_notify::NotifyState;
use tickloop_runtime::event_loop::{LoopView, Service};

pub struct Notifier {
    /// Half of systemd's WatchdogSec (ns), or None when the watchdog is off.
    watchdog_every: Option<u64>,
    last_watchdog: u64,
    warned: bool,
}

impl Notifier {
    /// None when not started by systemd (no `NOTIFY_SOCKET`).
    pub fn from_env() -> Option<Notifier> {
        std::env::var_os("NOTIFY_SOCKET")?;
        // As sd_watchdog_enabled(3): WATCHDOG_USEC, for us unless WATCHDOG_PID names another
        // process (the sd-notify crate also requires WATCHDOG_PID to be set).
        let env_u64 = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let for_us = env_u64("WATCHDOG_PID").is_none_or(|pid| pid == std::process::id() as u64);
        let watchdog_every = env_u64("WATCHDOG_USEC")
            .filter(|_| for_us)
            .map(|usec| usec.saturating_mul(1000) / 2)
            .filter(|&ns| ns > 0);
        Some(Notifier {
            watchdog_every,
            last_watchdog: 0,
            warned: false,
        })
    }

    /// The interval at which `WATCHDOG=1` is sent (half of WatchdogSec).
    pub fn watchdog_every_ns(&self) -> Option<u64> {
        self.watchdog_every
    }

    fn send(&mut self, state: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(false, state) {
            if !self.warned {
                tracing::warn!("cannot notify systemd through NOTIFY_SOCKET: {e}");
                self.warned = true;
            }
        }
    }
}

impl Service for Notifier {
    fn start(&mut self, view: &LoopView<'_>) {
        self.last_watchdog = view.now;
        self.send(&[NotifyState::Ready, NotifyState::Status("running")]);
        if self.watchdog_every.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    fn tick(&mut self, view: &LoopView<'_>) {
        if let Some(every) = self.watchdog_every {
            if view.now.saturating_sub(self.last_watchdog) >= every {
                self.last_watchdog = view.now;
                self.send(&[NotifyState::Watchdog]);
            }
        }
    }

    fn stop(&mut self, _view: &LoopView<'_>) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}
