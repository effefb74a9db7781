//! Drivers: the only code that waits for readiness and reads the clock. Three backends behind
//! one [`Driver`] trait: [`epoll`] (through mio, with a timerfd for precise deadlines),
//! [`uring`] (io_uring multishot polls and timed waits) and [`sim`] (virtual time, for tests).
//! The loop above cannot tell which one runs.
//!
//! The clock: one monotonic clock ([`Driver::now`], CLOCK_MONOTONIC or virtual) and one wall
//! clock ([`Driver::wall_now`], CLOCK_REALTIME, or the simulated driver's epoch plus virtual
//! time). Everything else is handed `now` by the loop, or a [`Clock`] copied out of the driver
//! where it must keep time outside the loop's iterations (a service's final stop, an app's
//! config made before the loop exists). Nothing outside this module reads a clock for the
//! loop (`tests/one_clock.rs` greps for it).
//!
//! Contract: readiness is edge-like. A ready fd is reported at least once after it becomes
//! ready; the consumer must read it until `EAGAIN` before expecting another report. A driver
//! never allocates after construction, never blocks longer than the deadline it is given, and
//! never rounds a deadline to whole milliseconds or turns it into a spin.

pub mod epoll;
pub mod sim;
pub mod uring;

use std::io;
use std::os::fd::RawFd;
use tickloop_app::clock::Nanos;

/// Names a registered fd in readiness reports. Tokens are small integers below the driver's
/// fd capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    Read,
    Write,
    ReadWrite,
}

impl Interest {
    pub fn readable(self) -> bool {
        matches!(self, Interest::Read | Interest::ReadWrite)
    }
    pub fn writable(self) -> bool {
        matches!(self, Interest::Write | Interest::ReadWrite)
    }
}

/// One readiness report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub token: Token,
    pub readable: bool,
    pub writable: bool,
    /// The peer hung up (or the fd is in error): read what is left, then expect EOF.
    pub hangup: bool,
}

/// A fixed-capacity list of readiness reports, filled by [`Driver::wait`].
pub struct ReadyList {
    items: Vec<Readiness>,
}

impl ReadyList {
    pub fn with_capacity(capacity: usize) -> ReadyList {
        assert!(
            capacity > 0,
            "a ready list needs room for at least one report"
        );
        ReadyList {
            items: Vec::with_capacity(capacity),
        }
    }
    pub fn capacity(&self) -> usize {
        self.items.capacity()
    }
    pub fn clear(&mut self) {
        self.items.clear();
    }
    pub fn is_full(&self) -> bool {
        self.items.len() == self.items.capacity()
    }
    /// Adds a report; returns false (and drops it) when full, which never happens if the
    /// backend asks for at most `capacity` reports.
    pub fn push(&mut self, readiness: Readiness) -> bool {
        if self.is_full() {
            return false;
        }
        self.items.push(readiness);
        true
    }
    pub fn iter(&self) -> impl Iterator<Item = &Readiness> {
        self.items.iter()
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn get(&self, index: usize) -> Option<Readiness> {
        self.items.get(index).copied()
    }
}

/// How long [`Driver::wait`] may block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Not at all: report what is ready now.
    Poll,
    /// Until this time on the driver's clock (or until something is ready).
    Until(Nanos),
    /// Until something is ready.
    Forever,
}

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverChoice {
    /// io_uring if the probe passes, else epoll (saying why).
    #[default]
    Auto,
    Epoll,
    IoUring,
    Simulated,
}

/// Which backend runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverKind {
    Epoll,
    IoUring,
    Simulated,
}

impl DriverKind {
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::Epoll => "epoll",
            DriverKind::IoUring => "io_uring",
            DriverKind::Simulated => "simulated",
        }
    }
}

impl std::str::FromStr for DriverChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DriverChoice::Auto),
            "epoll" => Ok(DriverChoice::Epoll),
            "io_uring" | "io-uring" | "uring" => Ok(DriverChoice::IoUring),
            "simulated" | "sim" => Ok(DriverChoice::Simulated),
            other => Err(format!(
                "unknown driver {other:?}: use auto, epoll, io_uring or simulated"
            )),
        }
    }
}

/// The interface every backend implements.
pub trait Driver {
    fn kind(&self) -> DriverKind;
    /// The loop's clock: CLOCK_MONOTONIC in nanoseconds (virtual in simulation).
    fn now(&mut self) -> Nanos;
    /// The wall clock in ns since the Unix epoch (negative before 1970): CLOCK_REALTIME, or
    /// in simulation the configured epoch plus the virtual time (reading it advances nothing).
    fn wall_now(&self) -> i64;
    /// This driver's clock as a value, as it stands now (see [`Clock`]).
    fn clock(&self) -> Clock;
    /// Simulation: whether an fd source is owed input it asked for (see [`sim`]). Returns
    /// whether the driver holds its clock for it, in which case the loop reads nothing but
    /// fd sources until it comes. Real drivers never hold.
    fn hold(&mut self, owed: bool) -> bool {
        let _ = owed;
        false
    }
    /// A stopwatch for measuring how long something took (a periodic timer's run time): the
    /// same clock, but reading it is not a clock reading of the loop (virtual time does not
    /// advance for it in simulation).
    fn stopwatch(&mut self) -> Nanos;
    /// Start reporting readiness of `fd` as `token`. `token.0` must be below the driver's fd
    /// capacity and not in use.
    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()>;
    /// Stop reporting `fd`. Reports already queued for it may still arrive once.
    fn deregister(&mut self, fd: RawFd, token: Token) -> io::Result<()>;
    /// Fill `ready` (cleared first, at most its capacity) with readiness, blocking per `wait`.
    /// An interrupted wait (a signal) returns Ok with whatever is ready.
    fn wait(&mut self, wait: Wait, ready: &mut ReadyList) -> io::Result<()>;
}

/// The backend chosen at startup. An enum rather than a trait object, so the loop's calls
/// are direct.
pub enum AnyDriver {
    Epoll(epoll::EpollDriver),
    IoUring(Box<uring::UringDriver>),
    Simulated(sim::SimDriver),
}

/// What opening a driver did: which one runs, and why it is not the one asked for.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DriverReport {
    pub kind: DriverKind,
    /// Set when `auto` or `io_uring` fell back to epoll: the probe's reason.
    pub fallback: Option<String>,
}

/// The simulated wall clock's default epoch: 2024-01-01T00:00:00Z.
pub const SIM_EPOCH_UNIX_NS: i64 = 1_704_067_200_000_000_000;

#[derive(Debug, Clone, Copy)]
pub struct DriverOptions {
    /// Registered fds the driver can hold (tokens are below this).
    pub fd_capacity: u32,
    /// Readiness reports one wait returns at most: the capacity of the [`ReadyList`] the
    /// caller passes (reports beyond it stay queued in the kernel for the next wait).
    pub ready_capacity: u32,
    /// Virtual start time and the virtual time each clock read advances (simulated only).
    pub sim_start: Nanos,
    pub sim_step: Nanos,
    /// The simulated wall clock at virtual time 0, in ns since the Unix epoch.
    pub sim_epoch_unix_ns: i64,
    /// How long (real time) the simulated clock stands still for input an fd source is owed
    /// before it gives up on it and lets virtual time run.
    pub sim_wait_cap: Nanos,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            fd_capacity: 64,
            ready_capacity: 64,
            sim_start: tickloop_app::clock::SECONDS,
            sim_step: tickloop_app::clock::MICROS,
            sim_epoch_unix_ns: SIM_EPOCH_UNIX_NS,
            sim_wait_cap: 10 * tickloop_app::clock::SECONDS,
        }
    }
}

impl AnyDriver {
    /// Open the chosen backend. `IoUring` is strict (an error if the probe fails); `Auto`
    /// falls back to epoll and reports why.
    pub fn open(
        choice: DriverChoice,
        options: DriverOptions,
    ) -> io::Result<(AnyDriver, DriverReport)> {
        let report = |kind, fallback| DriverReport { kind, fallback };
        match choice {
            DriverChoice::Epoll => Ok((
                AnyDriver::Epoll(epoll::EpollDriver::new(options)?),
                report(DriverKind::Epoll, None),
            )),
            DriverChoice::Simulated => Ok((
                AnyDriver::Simulated(sim::SimDriver::new(options)?),
                report(DriverKind::Simulated, None),
            )),
            DriverChoice::IoUring => match uring::UringDriver::new(options.fd_capacity) {
                Ok(d) => Ok((
                    AnyDriver::IoUring(Box::new(d)),
                    report(DriverKind::IoUring, None),
                )),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!(
                        "io_uring is not usable here: {e} (use the epoll or auto driver: --driver epoll)"
                    ),
                )),
            },
            DriverChoice::Auto => match uring::UringDriver::new(options.fd_capacity) {
                Ok(d) => Ok((
                    AnyDriver::IoUring(Box::new(d)),
                    report(DriverKind::IoUring, None),
                )),
                Err(e) => Ok((
                    AnyDriver::Epoll(epoll::EpollDriver::new(options)?),
                    report(DriverKind::Epoll, Some(e.to_string())),
                )),
            },
        }
    }
}

macro_rules! each {
    ($self:ident, $d:ident => $e:expr) => {
        match $self {
            AnyDriver::Epoll($d) => $e,
            AnyDriver::IoUring($d) => $e,
            AnyDriver::Simulated($d) => $e,
        }
    };
}

impl Driver for AnyDriver {
    fn kind(&self) -> DriverKind {
        each!(self, d => d.kind())
    }
    #[inline]
    fn now(&mut self) -> Nanos {
        each!(self, d => d.now())
    }
    #[inline]
    fn wall_now(&self) -> i64 {
        each!(self, d => d.wall_now())
    }
    fn clock(&self) -> Clock {
        each!(self, d => d.clock())
    }
    #[inline]
    fn hold(&mut self, owed: bool) -> bool {
        each!(self, d => d.hold(owed))
    }
    #[inline]
    fn stopwatch(&mut self) -> Nanos {
        each!(self, d => d.stopwatch())
    }
    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        each!(self, d => d.register(fd, token, interest))
    }
    fn deregister(&mut self, fd: RawFd, token: Token) -> io::Result<()> {
        each!(self, d => d.deregister(fd, token))
    }
    #[inline]
    fn wait(&mut self, wait: Wait, ready: &mut ReadyList) -> io::Result<()> {
        each!(self, d => d.wait(wait, ready))
    }
}

/// The loop's time as a value, for code that must keep it outside the loop's iterations: a
/// service's final stop waits on it (the adapter host's graceful stop), the status file takes
/// its wall time from it, and an app's config made before the loop exists can take the offset
/// between the two clocks from it ([`Clock::for_driver`]). It is copied out of a driver
/// ([`Driver::clock`]): reading a copy of the virtual clock advances that copy only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Clock {
    /// CLOCK_MONOTONIC and CLOCK_REALTIME (the epoll and io_uring drivers).
    Real,
    /// The simulated driver's virtual time (see [`sim`]).
    Virtual(sim::VirtualClock),
}

impl Clock {
    /// The clock a driver opened with `choice` and `options` starts on.
    pub fn for_driver(choice: DriverChoice, options: &DriverOptions) -> Clock {
        match choice {
            DriverChoice::Simulated => Clock::Virtual(sim::VirtualClock::new(options)),
            _ => Clock::Real,
        }
    }

    /// The monotonic clock (a virtual one advances by its step).
    pub fn now(&mut self) -> Nanos {
        match self {
            Clock::Real => monotonic_now(),
            Clock::Virtual(v) => v.now(),
        }
    }

    /// The wall clock in ns since the Unix epoch.
    pub fn wall_now(&self) -> i64 {
        match self {
            Clock::Real => wall_now(),
            Clock::Virtual(v) => v.wall_now(),
        }
    }

    /// Block until `fd` is readable or this clock reaches `until`; true if readable. A
    /// virtual clock waits in real time (what it waits for is a process that runs in real
    /// time) at most its wait cap and the virtual time left, then advances by the real time
    /// waited, or to `until` if nothing came.
    pub fn wait_readable(&mut self, fd: RawFd, until: Nanos) -> bool {
        match self {
            Clock::Real => poll_readable(fd, until.saturating_sub(monotonic_now())),
            Clock::Virtual(v) => v.wait_readable(fd, until),
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds (the vDSO: no system call): the loop's real clock.
#[inline]
pub(crate) fn monotonic_now() -> Nanos {
    tickloop_ring::sys::monotonic_ns() as Nanos
}

/// CLOCK_REALTIME in ns since the Unix epoch: the real wall clock.
#[inline]
pub(crate) fn wall_now() -> i64 {
    tickloop_ring::sys::realtime_ns()
}

/// Wait at most `timeout` ns (real time) for `fd` to be readable (or hung up); true if it is.
/// A signal ends the wait early (false): callers look at their clock again.
pub(crate) fn poll_readable(fd: RawFd, timeout: Nanos) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: (timeout / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: one valid pollfd and a valid timespec for the duration of the call; no signal
    // mask is passed.
    let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    n > 0 && pfd.revents != 0
}

pub(crate) fn check_token(token: Token, capacity: u32) -> io::Result<()> {
    if token.0 >= capacity {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "token {} is beyond the driver's fd capacity {capacity}",
                token.0
            ),
        ));
    }
    Ok(())
}
