//! The simulated backend: virtual time for tests, backtests and replay. Every clock read
//! advances the virtual clock by a fixed step, and a wait with a deadline jumps straight to it
//! when no fd is ready, so hours of timers run in milliseconds and every run sees the same
//! times. Its wall clock is a fixed epoch (`sim_epoch_unix_ns`) plus the virtual time, so the
//! journal's header, telemetry and the status file carry the same stamps every run.
//!
//! Real fds still work (polled through epoll), so signals, pipes and adapter processes behave
//! as in production. A process on the other side of a pipe runs in real time, so the loop
//! tells the driver when an fd source is **owed** input it asked for ([`Driver::hold`]): an
//! adapter's hello after a spawn, the end of every request in flight, a pong, the exit of a
//! process being stopped. While anything is owed the driver **holds** its clock: virtual time
//! stands still, the loop reads nothing but its fd sources (no ring is read, no timer comes
//! due), and a wait blocks in real time until an fd is ready. An answer is then the next input
//! after its request, at the same virtual time however long the process took, and no virtual
//! deadline (a request's timeout, a missed ping, the handshake's) passes before an answer that
//! comes.
//!
//! Deterministic: given the same inputs and adapters that answer each request with the same
//! frames, two runs journal the same inputs, in the same order, at the same virtual times,
//! byte for byte. Not deterministic: what comes unasked (an adapter's candles, fills or order
//! updates it sends after a request's `done`, a crash, a signal, candles from a ring a live
//! writer fills) lands at whatever virtual time the loop has reached when it is seen; the
//! answers of several adapters owed at once interleave as their bytes arrive; and an answer
//! owed for longer than the wait cap (`sim_wait_cap`, real time): the driver then warns once
//! and lets virtual time run until nothing is owed, so a hung adapter is still found out, on
//! virtual time. The graceful stop after the loop waits on a copy of the clock
//! ([`VirtualClock::wait_readable`]); nothing after the loop is journaled.
//!
//! It reads the real clock only to bound its blocking waits by the cap.

use super::epoll::EpollDriver;
use super::{
    monotonic_now, poll_readable, Clock, Driver, DriverKind, DriverOptions, Interest, ReadyList,
    Token, Wait,
};
use std::io;
use std::os::fd::RawFd;
use tickloop_app::clock::Nanos;

/// Virtual time as a value: the simulated driver's clock copied out ([`Clock::Virtual`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VirtualClock {
    now: Nanos,
    step: Nanos,
    epoch_unix_ns: i64,
    wait_cap: Nanos,
}

impl VirtualClock {
    /// The clock a simulated driver opened with `options` starts on.
    pub fn new(options: &DriverOptions) -> VirtualClock {
        VirtualClock {
            now: options.sim_start,
            step: options.sim_step,
            epoch_unix_ns: options.sim_epoch_unix_ns,
            wait_cap: options.sim_wait_cap,
        }
    }

    /// Read it: it advances by its step.
    pub fn now(&mut self) -> Nanos {
        self.now = self.now.saturating_add(self.step);
        self.now
    }

    /// The epoch plus the virtual time (not advanced).
    pub fn wall_now(&self) -> i64 {
        self.epoch_unix_ns
            .saturating_add(i64::try_from(self.now).unwrap_or(i64::MAX))
    }

    /// Wait in real time for `fd`, at most the cap and the virtual time left before `until`;
    /// then advance by the real time waited (at least a step), or to `until` if nothing came.
    pub fn wait_readable(&mut self, fd: RawFd, until: Nanos) -> bool {
        let bound = until.saturating_sub(self.now).min(self.wait_cap);
        let started = monotonic_now();
        let readable = poll_readable(fd, bound);
        let waited = monotonic_now().saturating_sub(started);
        if readable || waited < bound {
            // Readable, or a signal ended the wait early.
            self.now = self.now.saturating_add(waited.max(self.step));
        } else {
            self.now = self.now.max(until);
        }
        readable
    }
}

pub struct SimDriver {
    fds: EpollDriver,
    clock: VirtualClock,
    /// While an fd source is owed input: when (real time) the hold began.
    held_since: Option<Nanos>,
    /// The hold outlasted the cap: virtual time runs until nothing is owed.
    overdue: bool,
}

impl SimDriver {
    pub fn new(options: DriverOptions) -> io::Result<SimDriver> {
        Ok(SimDriver {
            fds: EpollDriver::new(options)?,
            clock: VirtualClock::new(&options),
            held_since: None,
            overdue: false,
        })
    }

    /// Move virtual time forward.
    pub fn advance(&mut self, by: Nanos) {
        self.clock.now = self.clock.now.saturating_add(by);
    }

    fn holding(&self) -> bool {
        self.held_since.is_some() && !self.overdue
    }

    /// Holding: block until an fd is ready or the cap passes. False once the cap has passed
    /// (the hold is then overdue); true if the wait ended otherwise (ready, or a signal).
    fn wait_held(&mut self, ready: &mut ReadyList) -> io::Result<bool> {
        let cap_at = self
            .held_since
            .unwrap_or_else(monotonic_now)
            .saturating_add(self.clock.wait_cap);
        self.fds.wait(Wait::Until(cap_at), ready)?;
        if !ready.is_empty() || monotonic_now() < cap_at {
            return Ok(true);
        }
        self.overdue = true;
        tracing::warn!(
            "simulated driver: input an fd source is owed did not come within {} ms of real time; virtual time runs on until nothing is owed, and this run is no longer deterministic",
            self.clock.wait_cap / tickloop_app::clock::MILLIS
        );
        Ok(false)
    }
}

impl Driver for SimDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Simulated
    }

    /// Advances by the step, except while the clock is held.
    #[inline]
    fn now(&mut self) -> Nanos {
        if self.holding() {
            return self.clock.now;
        }
        self.clock.now()
    }

    fn wall_now(&self) -> i64 {
        self.clock.wall_now()
    }

    fn clock(&self) -> Clock {
        Clock::Virtual(self.clock)
    }

    fn hold(&mut self, owed: bool) -> bool {
        if !owed {
            self.held_since = None;
            self.overdue = false;
        } else if self.held_since.is_none() {
            self.held_since = Some(monotonic_now());
        }
        self.holding()
    }

    /// Virtual time, not advanced: in simulation a handler takes no time.
    fn stopwatch(&mut self) -> Nanos {
        self.clock.now
    }

    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        self.fds.register(fd, token, interest)
    }

    fn deregister(&mut self, fd: RawFd, token: Token) -> io::Result<()> {
        self.fds.deregister(fd, token)
    }

    /// `Poll` never blocks. A timed or endless wait blocks (really) while the clock is held,
    /// up to the cap; otherwise a timed wait jumps to its deadline.
    fn wait(&mut self, wait: Wait, ready: &mut ReadyList) -> io::Result<()> {
        self.fds.wait(Wait::Poll, ready)?;
        if !ready.is_empty() {
            return Ok(());
        }
        if wait != Wait::Poll && self.holding() && self.wait_held(ready)? {
            return Ok(());
        }
        match wait {
            Wait::Poll => Ok(()),
            Wait::Until(deadline) => {
                self.clock.now = self.clock.now.max(deadline);
                Ok(())
            }
            Wait::Forever => self.fds.wait(Wait::Forever, ready),
        }
    }
}
