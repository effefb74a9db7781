//! Signals as a source of the loop: SIGTERM, SIGINT and SIGHUP are blocked for the thread
//! and read from a signalfd, so they arrive as ordinary readiness, in order, between events.
//!
//! It never installs a signal handler and never acts on a signal itself: the loop turns each
//! one into an event (stop or reload).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use tickloop_app::SignalKind;

/// The signalfd. Dropping it closes the fd but leaves the signals blocked on the thread; once
/// the loop has taken a stop signal it calls [`Signals::release_stop`], so that a second
/// SIGTERM or SIGINT during shutdown ends the process at once (the default action).
pub struct Signals {
    fd: OwnedFd,
}

const HANDLED: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

impl Signals {
    /// Block SIGTERM, SIGINT and SIGHUP on the calling thread (threads it spawns later inherit
    /// that) and open a non-blocking signalfd for them.
    pub fn open() -> io::Result<Signals> {
        // SAFETY: sigset manipulation on local values; pthread_sigmask on this thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in HANDLED {
                libc::sigaddset(&mut set, signal);
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Signals {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// Unblock SIGTERM and SIGINT on this thread: the next one takes its default action and
    /// ends the process. (SIGHUP stays blocked.) Called once a stop is under way: a person
    /// who sends a second stop wants the process gone now, not after a slow shutdown.
    pub fn release_stop() {
        // SAFETY: sigset manipulation on local values; pthread_sigmask on this thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next pending signal, or None when there is none (read until None after readiness).
    pub fn next_signal(&mut self) -> Option<SignalKind> {
        loop {
            // SAFETY: signalfd_siginfo is plain data; we read exactly one.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    &mut info as *mut _ as *mut libc::c_void,
                    size,
                )
            };
            if n != size as isize {
                if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return None;
            }
            let signal = info.ssi_signo as i32;
            return Some(if signal == libc::SIGHUP {
                SignalKind::Reload
            } else {
                SignalKind::Stop { signal }
            });
        }
    }
}
