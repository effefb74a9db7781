//! The epoll backend, through mio. mio's own timeout is whole milliseconds, so a deadline is
//! a timerfd armed at the exact nanosecond (re-armed only when the deadline changes) and the
//! poll itself waits without a timeout.
//!
//! It never rounds a deadline, and never allocates after `new`.

use super::{
    check_token, monotonic_now, wall_now, Clock, Driver, DriverKind, DriverOptions, Interest,
    Readiness, ReadyList, Token, Wait,
};
use mio::unix::SourceFd;
use mio::{Events, Poll};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use tickloop_app::clock::Nanos;

/// The timerfd's token inside mio (never handed out).
const TIMER_TOKEN: mio::Token = mio::Token(usize::MAX - 1);

pub struct EpollDriver {
    poll: Poll,
    events: Events,
    timer: Timerfd,
    capacity: u32,
}

impl EpollDriver {
    /// One wait returns at most `options.ready_capacity` reports; the rest stay queued in
    /// the kernel (an edge is never taken from epoll and then dropped).
    pub fn new(options: DriverOptions) -> io::Result<EpollDriver> {
        let poll = Poll::new()?;
        let timer = Timerfd::new()?;
        poll.registry().register(
            &mut SourceFd(&timer.fd.as_raw_fd()),
            TIMER_TOKEN,
            mio::Interest::READABLE,
        )?;
        Ok(EpollDriver {
            poll,
            // One more for the timerfd, which is not reported.
            events: Events::with_capacity(options.ready_capacity.max(1) as usize + 1),
            timer,
            capacity: options.fd_capacity,
        })
    }
}

fn mio_interest(interest: Interest) -> mio::Interest {
    match interest {
        Interest::Read => mio::Interest::READABLE,
        Interest::Write => mio::Interest::WRITABLE,
        Interest::ReadWrite => mio::Interest::READABLE | mio::Interest::WRITABLE,
    }
}

impl Driver for EpollDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Epoll
    }

    #[inline]
    fn now(&mut self) -> Nanos {
        monotonic_now()
    }

    #[inline]
    fn wall_now(&self) -> i64 {
        wall_now()
    }

    fn clock(&self) -> Clock {
        Clock::Real
    }

    #[inline]
    fn stopwatch(&mut self) -> Nanos {
        monotonic_now()
    }

    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        check_token(token, self.capacity)?;
        self.poll.registry().register(
            &mut SourceFd(&fd),
            mio::Token(token.0 as usize),
            mio_interest(interest),
        )
    }

    fn deregister(&mut self, fd: RawFd, _token: Token) -> io::Result<()> {
        self.poll.registry().deregister(&mut SourceFd(&fd))
    }

    fn wait(&mut self, wait: Wait, ready: &mut ReadyList) -> io::Result<()> {
        ready.clear();
        let timeout = match wait {
            Wait::Poll => Some(std::time::Duration::ZERO),
            Wait::Forever => None,
            Wait::Until(deadline) => {
                if deadline <= monotonic_now() {
                    Some(std::time::Duration::ZERO)
                } else {
                    self.timer.arm(deadline)?;
                    None
                }
            }
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for event in self.events.iter() {
            if event.token() == TIMER_TOKEN {
                self.timer.drain();
                continue;
            }
            let pushed = ready.push(Readiness {
                token: Token(event.token().0 as u32),
                readable: event.is_readable() || event.is_read_closed(),
                writable: event.is_writable(),
                hangup: event.is_read_closed() || event.is_write_closed() || event.is_error(),
            });
            // The list holds ready_capacity reports and epoll returned at most that many
            // besides the timerfd: nothing is ever dropped here.
            debug_assert!(
                pushed,
                "ready list smaller than the driver's ready_capacity"
            );
        }
        Ok(())
    }
}

/// A CLOCK_MONOTONIC timerfd armed at absolute deadlines.
pub(crate) struct Timerfd {
    pub(crate) fd: OwnedFd,
    armed: Option<Nanos>,
}

impl Timerfd {
    pub(crate) fn new() -> io::Result<Timerfd> {
        // SAFETY: plain syscall; the fd is owned below.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Timerfd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            armed: None,
        })
    }

    /// Arm for `deadline` (absolute), unless already armed for it.
    pub(crate) fn arm(&mut self, deadline: Nanos) -> io::Result<()> {
        if self.armed == Some(deadline) {
            return Ok(());
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (deadline / 1_000_000_000) as libc::time_t,
                tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid fd and itimerspec.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            self.armed = None;
            return Err(io::Error::last_os_error());
        }
        self.armed = Some(deadline);
        Ok(())
    }

    /// Consume an expiry (the fd is non-blocking; nothing to read is fine).
    pub(crate) fn drain(&mut self) {
        let mut expirations = 0u64;
        // SAFETY: reads 8 bytes into a u64.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut expirations as *mut u64).cast(),
                8,
            )
        };
        self.armed = None;
    }
}
