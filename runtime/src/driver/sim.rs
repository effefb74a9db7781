//! The simulated backend: virtual time for tests and replay. Every clock read advances the
//! virtual clock by a fixed step, and a wait with a deadline jumps straight to it when no fd is
//! ready, so hours of timers run in milliseconds and every run sees the same times.
//!
//! Real fds still work (polled through epoll without blocking), so signals and pipes behave
//! as in production. It never reads the real clock.

use super::epoll::EpollDriver;
use super::{Driver, DriverKind, DriverOptions, Interest, ReadyList, Token, Wait};
use std::io;
use std::os::fd::RawFd;
use tickloop_app::clock::Nanos;

pub struct SimDriver {
    fds: EpollDriver,
    now: Nanos,
    step: Nanos,
}

impl SimDriver {
    pub fn new(options: DriverOptions) -> io::Result<SimDriver> {
        Ok(SimDriver {
            fds: EpollDriver::new(options)?,
            now: options.sim_start,
            step: options.sim_step,
        })
    }

    /// Move virtual time forward.
    pub fn advance(&mut self, by: Nanos) {
        self.now = self.now.saturating_add(by);
    }
}

impl Driver for SimDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Simulated
    }

    #[inline]
    fn now(&mut self) -> Nanos {
        self.now = self.now.saturating_add(self.step);
        self.now
    }

    /// Virtual time, not advanced: in simulation a handler takes no time.
    fn stopwatch(&mut self) -> Nanos {
        self.now
    }

    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        self.fds.register(fd, token, interest)
    }

    fn deregister(&mut self, fd: RawFd, token: Token) -> io::Result<()> {
        self.fds.deregister(fd, token)
    }

    fn wait(&mut self, wait: Wait, ready: &mut ReadyList) -> io::Result<()> {
        self.fds.wait(Wait::Poll, ready)?;
        if !ready.is_empty() {
            return Ok(());
        }
        match wait {
            Wait::Poll => Ok(()),
            Wait::Until(deadline) => {
                self.now = self.now.max(deadline);
                Ok(())
            }
            Wait::Forever => self.fds.wait(Wait::Forever, ready),
        }
    }
}
