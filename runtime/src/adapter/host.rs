//! The adapter host's IO layer: it runs every adapter process, moves bytes between their
//! pipes and their [`Session`]s, and plugs into the loop as **one** [`FdSource`] (a private
//! epoll holding every pipe, pidfd and its own eventfd) plus **one** [`Service`] (deadlines,
//! pings, backoff and the exit sweep on the housekeeping tick; spawning at start; the graceful
//! stop at the end), both the same [`SharedHost`] (`Rc<RefCell<AdapterHost>>`, as metrics).
//!
//! It owns the private epoll, the eventfd, one [`Slot`] per adapter (its session, its process,
//! its stderr log) and a scratch buffer, all made in [`AdapterHost::new`]; after that, steady
//! state allocates nothing (a spawn does: it is not steady state).
//!
//! It never blocks the loop: every fd is non-blocking, every read stops at `EAGAIN` or a
//! per-call byte budget (then it asks to be called again), every write stops at `EAGAIN` and
//! resumes on the writable edge, and events are handed to the loop one at a time with no
//! borrow held, so the app may call back in ([`AdapterHandle::request`]) from its handler.
//! The only waiting is [`AdapterHost::shutdown`], after the loop has stopped, bounded by the
//! grace periods. It never leaves a zombie: every child is reaped, at exit, at shutdown, or
//! (SIGKILL, then `waitpid`) when the host is dropped.
//!
//! It never reads a clock: every call is handed `now` by its caller (the loop's fd-source
//! call and tick, the app's output sink), and the graceful stop keeps time and waits on the
//! driver's [`Clock`], so under the simulated driver adapters run on virtual time. It tells
//! the loop when it is owed an answer ([`FdSource::owed`]), which is what lets the simulated
//! driver record the same run twice.

use super::config::{AdapterConfig, AdapterHostConfig, AdapterSetupError, ExitWatch};
use super::process::{self, Io, Process};
use super::session::{AdapterStats, IoAction, Session, SymbolTable};
use super::stderr::StderrLog;
use crate::driver::{Clock, Interest, Readiness};
use crate::event_loop::{EventLoop, FdSource, LoopError, LoopView, Service};
use mio::unix::SourceFd;
use mio::{Events, Poll, Token};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use tickloop_app::clock::{Nanos, MILLIS, SECONDS};
use tickloop_app::venue::{
    AdapterEvent, AdapterId, AdapterRequest, FailReason, Request, RequestError, RequestId, Side,
};
use tickloop_app::{EventKind, OutputSink};

/// Bytes read from one adapter's stdout per call of the fd source; beyond, it asks to be
/// called again (so a flooding adapter costs the loop a bounded slice of each iteration).
const READ_BUDGET: usize = 256 << 10;
/// Bytes read from one adapter's stderr per call.
const STDERR_BUDGET: usize = 64 << 10;
/// Inside a round, a queue holding this much is written at once rather than at the round's
/// end.
const ROUND_FLUSH: u32 = 16 << 10;
/// Readiness reports taken from the private epoll per poll.
const EVENTS: usize = 64;
/// Refusals for adapter ids that do not exist, waiting for the app.
const ORPHANS: usize = 64;

const STDOUT: usize = 0;
const STDERR: usize = 1;
const STDIN: usize = 2;
const PIDFD: usize = 3;
const DOORBELL: Token = Token(usize::MAX - 1);
const SIGCHLD: Token = Token(usize::MAX - 2);

fn token(slot: usize, which: usize) -> Token {
    Token(slot * 4 + which)
}

/// One adapter: its configuration, session, process and what its fds last reported.
struct Slot {
    config: AdapterConfig,
    program: PathBuf,
    cpus: Option<libc::cpu_set_t>,
    session: Session,
    process: Option<Process>,
    stderr: StderrLog,
    /// Stdout may hold bytes (an edge was seen and no EAGAIN since).
    out_ready: bool,
    err_ready: bool,
    /// The process may have ended (pidfd readable or SIGCHLD).
    exit_ready: bool,
    /// The last write got EAGAIN: wait for the writable edge.
    stdin_blocked: bool,
    read_budget: usize,
}

/// Every adapter of one engine. See the module documentation; the loop uses it through
/// [`SharedHost`], the app's outputs through [`AdapterHandle`].
pub struct AdapterHost {
    poll: Poll,
    events: Events,
    doorbell: OwnedFd,
    rung: bool,
    sigchld: Option<OwnedFd>,
    use_pidfd: bool,
    slots: Vec<Slot>,
    cursor: usize,
    symbols: SymbolTable,
    started: bool,
    closed: bool,
    /// Inside a call of the fd source: requests are queued and written at its end (one
    /// write for all the requests the app made while handling the events of that call).
    in_round: bool,
    /// Adapters with requests queued during the round (bit i: adapter i).
    unflushed: u32,
    /// The private epoll may hold readiness not taken yet (its batches were all full).
    readiness_pending: bool,
    orphans: VecDeque<AdapterEvent>,
    orphans_lost: u64,
    scratch: Box<[u8]>,
    /// The latest time a caller handed in (for a call that comes without one).
    now: Nanos,
}

impl AdapterHost {
    /// Check the configuration, find every program, and allocate everything. Nothing starts
    /// until the loop runs (the service's `start`): the sessions' time starts at 0 and follows
    /// the `now` the loop hands in from then on.
    pub fn new(config: &AdapterHostConfig) -> Result<AdapterHost, AdapterSetupError> {
        config.validate()?;
        let io = |what: &'static str| move |source| AdapterSetupError::Io { what, source };
        let poll = Poll::new().map_err(io("cannot create an epoll instance"))?;
        let doorbell = process::eventfd().map_err(io("cannot create an eventfd"))?;
        poll.registry()
            .register(
                &mut SourceFd(&doorbell.as_raw_fd()),
                DOORBELL,
                mio::Interest::READABLE,
            )
            .map_err(io("cannot register the eventfd"))?;
        let use_pidfd = match config.exit_watch {
            ExitWatch::Auto => process::pidfd_supported(),
            ExitWatch::Pidfd => {
                if !process::pidfd_supported() {
                    return Err(AdapterSetupError::Host {
                        field: "exit_watch",
                        value: "\"pidfd\"".into(),
                        fix: "this kernel has no pidfd_open (Linux 5.3+): use \"auto\" or \"sigchld\"".into(),
                    });
                }
                true
            }
            ExitWatch::Sigchld => false,
        };
        let sigchld = if use_pidfd || config.adapters.is_empty() {
            None
        } else {
            let fd = process::sigchld_fd().map_err(io("cannot create a signalfd for SIGCHLD"))?;
            poll.registry()
                .register(
                    &mut SourceFd(&fd.as_raw_fd()),
                    SIGCHLD,
                    mio::Interest::READABLE,
                )
                .map_err(io("cannot register the SIGCHLD signalfd"))?;
            Some(fd)
        };
        process::ignore_sigpipe();
        let mut slots = Vec::with_capacity(config.adapters.len());
        for (i, a) in config.adapters.iter().enumerate() {
            let program =
                process::resolve_program(a).map_err(|message| AdapterSetupError::Program {
                    adapter: a.name.clone(),
                    message,
                })?;
            slots.push(Slot {
                config: a.clone(),
                program,
                cpus: None,
                session: Session::new(i as AdapterId, a, 0),
                process: None,
                stderr: StderrLog::new(a.stderr_line_bytes, a.stderr_lines_per_sec, 0),
                out_ready: false,
                err_ready: false,
                exit_ready: false,
                stdin_blocked: false,
                read_budget: READ_BUDGET,
            });
        }
        Ok(AdapterHost {
            poll,
            events: Events::with_capacity(EVENTS),
            doorbell,
            rung: false,
            sigchld,
            use_pidfd,
            slots,
            cursor: 0,
            symbols: SymbolTable::new(&config.symbols),
            started: false,
            closed: false,
            in_round: false,
            unflushed: 0,
            readiness_pending: false,
            orphans: VecDeque::with_capacity(ORPHANS),
            orphans_lost: 0,
            scratch: vec![0u8; 64 << 10].into_boxed_slice(),
            now: 0,
        })
    }

    /// The adapter named `name`.
    pub fn adapter_id(&self, name: &str) -> Option<AdapterId> {
        self.slots
            .iter()
            .position(|s| s.config.name == name)
            .map(|i| i as AdapterId)
    }

    pub fn name(&self, adapter: AdapterId) -> Option<&str> {
        self.slots
            .get(adapter as usize)
            .map(|s| s.config.name.as_str())
    }

    /// How many adapters it runs.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn stats(&self, adapter: AdapterId) -> Option<AdapterStats> {
        self.slots.get(adapter as usize).map(|s| s.session.stats())
    }

    pub fn symbols(&self) -> &SymbolTable {
        &self.symbols
    }

    /// Whether exits are watched through pidfds (else SIGCHLD).
    pub fn uses_pidfd(&self) -> bool {
        self.use_pidfd
    }

    /// Send a request at `now` on the loop's clock (see [`AdapterHandle::request`]).
    pub fn request(&mut self, now: Nanos, r: &AdapterRequest) -> Result<RequestId, RequestError> {
        let now = self.observe(now);
        let i = r.adapter as usize;
        if i >= self.slots.len() {
            if self.orphans.len() < ORPHANS {
                self.orphans.push_back(AdapterEvent::Failed {
                    adapter: r.adapter,
                    request: r.id,
                    kind: r.request.kind(),
                    reason: FailReason::Refused(RequestError::UnknownAdapter),
                });
            } else {
                self.orphans_lost += 1;
            }
            self.ring();
            return Err(RequestError::UnknownAdapter);
        }
        match self.slots[i]
            .session
            .request(now, r.id, &r.request, &self.symbols)
        {
            Ok(()) => {
                if self.in_round && self.slots[i].session.stats().queued_bytes < ROUND_FLUSH {
                    self.unflushed |= 1 << i;
                } else {
                    self.flush(i, now);
                }
                Ok(r.id)
            }
            Err(e) => {
                self.ring();
                Err(e)
            }
        }
    }

    /// Ring our own eventfd: the loop will call the fd source, which delivers what is queued.
    fn ring(&mut self) {
        if !self.rung {
            self.rung = true;
            process::ring(&self.doorbell);
        }
    }

    /// Take `now` from a caller; the host's time never goes back.
    fn observe(&mut self, now: Nanos) -> Nanos {
        self.now = self.now.max(now);
        self.now
    }

    /// Whether any adapter owes an answer (see [`Session::owed`]).
    pub fn owed(&self) -> bool {
        !self.closed && self.slots.iter().any(|s| s.session.owed())
    }

    /// Start every adapter at `now` (the service's `start`).
    pub fn start(&mut self, now: Nanos) {
        if self.started || self.closed {
            return;
        }
        self.started = true;
        let now = self.observe(now);
        for i in 0..self.slots.len() {
            // Brings the session's timers to the loop's time before anything is armed.
            self.slots[i].session.handle_timeout(now);
            self.slots[i].session.start();
            self.drive(i, now);
        }
        if self.has_events() {
            self.ring();
        }
    }

    /// Perform what session `i` asks, then write what it has queued.
    fn drive(&mut self, i: usize, now: Nanos) {
        // Bounded: a session queues at most a spawn and a kill between calls.
        for _ in 0..8 {
            let Some(action) = self.slots[i].session.poll_action() else {
                break;
            };
            match action {
                IoAction::Spawn => self.spawn(i, now),
                IoAction::Kill => {
                    if let Some(p) = &self.slots[i].process {
                        process::signal(p.pid, libc::SIGKILL);
                    }
                }
            }
        }
        self.flush(i, now);
    }

    fn spawn(&mut self, i: usize, now: Nanos) {
        if self.closed {
            return;
        }
        let slot = &mut self.slots[i];
        if slot.process.is_some() {
            return;
        }
        if slot.cpus.is_none() {
            slot.cpus = process::adapter_cpus(&slot.config.cpus);
        }
        let spawned = process::spawn(
            &slot.program,
            &slot.config,
            slot.cpus.as_ref(),
            self.use_pidfd,
        );
        let p = match spawned {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(adapter = %slot.config.name, program = %slot.program.display(), "cannot start the adapter: {e}");
                slot.session
                    .spawn_failed(now, e.raw_os_error().unwrap_or(libc::EIO));
                return;
            }
        };
        let registry = self.poll.registry();
        let register = |fd: &Option<OwnedFd>, which: usize, interest: mio::Interest| match fd {
            Some(fd) => {
                registry.register(&mut SourceFd(&fd.as_raw_fd()), token(i, which), interest)
            }
            None => Ok(()),
        };
        let registered = register(&p.stdout, STDOUT, mio::Interest::READABLE)
            .and_then(|()| register(&p.stderr, STDERR, mio::Interest::READABLE))
            .and_then(|()| register(&p.stdin, STDIN, mio::Interest::WRITABLE))
            .and_then(|()| register(&p.pidfd, PIDFD, mio::Interest::READABLE));
        if let Err(e) = registered {
            tracing::error!(adapter = %slot.config.name, "cannot watch the adapter's pipes: {e}");
            process::signal(p.pid, libc::SIGKILL);
            let _ = process::reap_blocking(p.pid, Duration::from_secs(2));
            slot.session
                .spawn_failed(now, e.raw_os_error().unwrap_or(libc::EIO));
            return;
        }
        tracing::info!(adapter = %slot.config.name, pid = p.pid, program = %slot.program.display(), "adapter started");
        slot.session.spawned(now, p.pid as u32);
        slot.out_ready = false;
        slot.err_ready = false;
        slot.exit_ready = false;
        slot.stdin_blocked = false;
        slot.process = Some(p);
    }

    /// Write what session `i` has queued, until it is all out or the pipe is full.
    fn flush(&mut self, i: usize, now: Nanos) {
        let slot = &mut self.slots[i];
        if slot.stdin_blocked {
            return;
        }
        let Some(fd) = slot
            .process
            .as_ref()
            .and_then(|p| p.stdin.as_ref())
            .map(|f| f.as_raw_fd())
        else {
            return;
        };
        // Bounded: each round writes bytes or stops.
        for _ in 0..64 {
            let data = slot.session.transmit();
            if data.is_empty() {
                return;
            }
            match process::write(fd, data) {
                Io::Done(0) => return,
                Io::Done(n) => slot.session.transmitted(n),
                Io::WouldBlock => {
                    slot.stdin_blocked = true;
                    return;
                }
                Io::Broken | Io::Failed(_) | Io::Eof => {
                    slot.session.stdin_closed(now);
                    if let Some(p) = &mut slot.process {
                        p.stdin = None;
                    }
                    return;
                }
            }
        }
    }

    /// Read adapter `i`'s stderr, at most [`STDERR_BUDGET`] bytes, into its log.
    fn drain_stderr(&mut self, i: usize, now: Nanos, budget: usize) {
        let slot = &mut self.slots[i];
        let mut left = budget;
        while slot.err_ready && left > 0 {
            let Some(fd) = slot
                .process
                .as_ref()
                .and_then(|p| p.stderr.as_ref())
                .map(|f| f.as_raw_fd())
            else {
                slot.err_ready = false;
                break;
            };
            let room = left.min(self.scratch.len());
            match process::read(fd, &mut self.scratch[..room]) {
                Io::Done(n) => {
                    left -= n;
                    slot.stderr.feed(&slot.config.name, &self.scratch[..n], now);
                    let stats = slot.session.stats_mut();
                    stats.stderr_bytes += n as u64;
                }
                Io::WouldBlock => slot.err_ready = false,
                _ => {
                    slot.err_ready = false;
                    if let Some(p) = &mut slot.process {
                        p.stderr = None;
                    }
                }
            }
        }
        let stats = slot.session.stats_mut();
        stats.stderr_lines = slot.stderr.lines;
        stats.stderr_suppressed = slot.stderr.suppressed_total;
    }

    /// Take readiness from the private epoll into the slots' flags. False if it may hold
    /// more than was taken (called again next round).
    fn take_readiness(&mut self) -> bool {
        // Bounded: a full batch means "maybe more"; a few batches, then the next call.
        for _ in 0..16 {
            if self
                .poll
                .poll(&mut self.events, Some(Duration::ZERO))
                .is_err()
            {
                return true;
            }
            let mut n = 0;
            for e in self.events.iter() {
                n += 1;
                match e.token() {
                    DOORBELL => {}
                    SIGCHLD => {
                        if let Some(fd) = &self.sigchld {
                            process::drain_sigchld(fd);
                        }
                        for slot in &mut self.slots {
                            if slot.process.as_ref().is_some_and(|p| exited(p.pid)) {
                                slot.exit_ready = true;
                                slot.out_ready = true;
                            }
                        }
                    }
                    Token(t) => {
                        let Some(slot) = self.slots.get_mut(t / 4) else {
                            continue;
                        };
                        match t % 4 {
                            STDOUT => slot.out_ready = true,
                            STDERR => slot.err_ready = true,
                            STDIN => slot.stdin_blocked = false,
                            _ => {
                                // Ended: read what it wrote to the last byte, then reap.
                                slot.exit_ready = true;
                                slot.out_ready = true;
                            }
                        }
                    }
                }
            }
            if n < EVENTS {
                return true;
            }
        }
        false
    }

    /// The start of one call of the fd source: readiness, deadlines, writes, stderr.
    fn begin_round(&mut self, now: Nanos) {
        self.in_round = true;
        process::drain(&self.doorbell);
        self.rung = false;
        self.readiness_pending = !self.take_readiness();
        for i in 0..self.slots.len() {
            self.slots[i].read_budget = READ_BUDGET;
            self.slots[i].session.handle_timeout(now);
            self.drive(i, now);
            self.drain_stderr(i, now, STDERR_BUDGET);
        }
    }

    /// The next event for the app, adapters taken in turn (one event each per turn).
    fn next_event(&mut self, now: Nanos) -> Option<AdapterEvent> {
        let n = self.slots.len();
        for _ in 0..n {
            let i = self.cursor;
            self.cursor = (self.cursor + 1) % n;
            if let Some(e) = self.slot_event(i, now) {
                return Some(e);
            }
        }
        if let Some(e) = self.orphans.pop_front() {
            return Some(e);
        }
        if self.orphans_lost > 0 {
            tracing::warn!(
                lost = self.orphans_lost,
                "refusals for unknown adapter ids were lost (more than {ORPHANS} at once)"
            );
            self.orphans_lost = 0;
        }
        None
    }

    /// Adapter `i`'s next event: what its session holds, after reading more of its stdout
    /// (within the budget) and reaping it once it ended.
    fn slot_event(&mut self, i: usize, now: Nanos) -> Option<AdapterEvent> {
        // Bounded: each round reads, reaps or returns; the budget ends the reading.
        for _ in 0..1024 {
            let slot = &mut self.slots[i];
            if let Some(e) = slot.session.poll_event(now, &self.symbols) {
                self.drive(i, now);
                return Some(e);
            }
            self.drive(i, now);
            let slot = &mut self.slots[i];
            if slot.out_ready && slot.read_budget > 0 {
                let Some(fd) = slot
                    .process
                    .as_ref()
                    .and_then(|p| p.stdout.as_ref())
                    .map(|f| f.as_raw_fd())
                else {
                    slot.out_ready = false;
                    continue;
                };
                let wanted = slot.session.wants_input();
                let buf: &mut [u8] = if wanted {
                    slot.session.read_space()
                } else {
                    &mut self.scratch[..]
                };
                let room = buf.len().min(slot.read_budget);
                // Never 0: the input buffer holds a whole frame of max_frame and more, so it
                // has room whenever no whole frame waits in it.
                assert!(room > 0, "no room to read into");
                match process::read(fd, &mut buf[..room]) {
                    Io::Done(n) => {
                        slot.read_budget -= n;
                        if wanted {
                            slot.session.filled(n);
                        }
                    }
                    Io::WouldBlock => slot.out_ready = false,
                    Io::Eof | Io::Failed(_) | Io::Broken => {
                        slot.out_ready = false;
                        slot.session.stdout_closed(now);
                        if let Some(p) = &mut slot.process {
                            p.stdout = None;
                        }
                    }
                }
                continue;
            }
            if slot.exit_ready && !slot.out_ready {
                slot.exit_ready = false;
                let Some(pid) = slot.process.as_ref().map(|p| p.pid) else {
                    continue;
                };
                if let Some(status) = process::try_reap(pid) {
                    slot.err_ready = true;
                    self.drain_stderr(i, now, STDERR_BUDGET);
                    let slot = &mut self.slots[i];
                    slot.stderr.finish(&slot.config.name, now);
                    slot.process = None;
                    slot.session.exited(now, status);
                    continue;
                }
            }
            return None;
        }
        None
    }

    fn has_events(&self) -> bool {
        !self.orphans.is_empty() || self.slots.iter().any(|s| s.session.has_events())
    }

    /// The end of one call of the fd source: write what the app asked for meanwhile.
    fn end_round(&mut self, now: Nanos) {
        self.in_round = false;
        let mut pending = std::mem::take(&mut self.unflushed);
        while pending != 0 {
            let i = pending.trailing_zeros() as usize;
            pending &= pending - 1;
            self.flush(i, now);
        }
    }

    /// After a call of the fd source: is there more to do (a budget ran out)?
    fn more(&self) -> bool {
        self.readiness_pending
            || self.has_events()
            || self
                .slots
                .iter()
                .any(|s| s.out_ready || s.err_ready || s.exit_ready)
    }

    /// The housekeeping tick at `now`: deadlines, pings, restarts, the exit sweep without
    /// pidfds.
    pub fn housekeeping(&mut self, now: Nanos) {
        let now = self.observe(now);
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if !self.use_pidfd && slot.process.as_ref().is_some_and(|p| exited(p.pid)) {
                slot.exit_ready = true;
                slot.out_ready = true;
            }
            slot.session.handle_timeout(now);
            self.drive(i, now);
        }
        if self.more() {
            self.ring();
        }
    }

    /// Stop every adapter on `clock` (the loop's, once it has stopped), gracefully and within
    /// the grace periods: close its stdin (the protocol's "stop"), wait `shutdown_grace_ms`,
    /// SIGTERM, wait `term_grace_ms`, SIGKILL; read and drop what they write meanwhile (a
    /// child blocked writing cannot exit), log their stderr, and reap every one. Blocks for at
    /// most the longest grace plus a few seconds (a process stuck in the kernel after SIGKILL
    /// is given up on, loudly). It waits only in [`Clock::wait_readable`] on its private
    /// epoll, which holds every pipe and pidfd: under the simulated driver the grace periods
    /// are virtual deadlines, waited for in real time at most.
    pub fn shutdown(&mut self, clock: &mut Clock) {
        if self.closed {
            return;
        }
        self.closed = true;
        let start = self.observe(clock.now());
        let mut phases = vec![(StopPhase::Done, start); self.slots.len()];
        for (i, slot) in self.slots.iter_mut().enumerate() {
            slot.session.close();
            if let Some(p) = &mut slot.process {
                p.stdin = None;
                // Read what is there already once; edges tell of what comes after.
                slot.out_ready = true;
                slot.err_ready = true;
                let grace = slot.config.shutdown_grace_ms as Nanos * MILLIS;
                phases[i] = (StopPhase::Closing, start.saturating_add(grace));
            }
        }
        let mut more = self.drain_stopping(start);
        loop {
            let now = self.observe(clock.now());
            self.stop_round(now, start, &mut phases);
            let Some(next) = phases
                .iter()
                .filter(|(p, _)| *p != StopPhase::Done)
                .map(|&(_, deadline)| deadline)
                .min()
            else {
                break;
            };
            // Without pidfds an exit is only seen by looking: at least every 5 ms. A pipe left
            // with bytes (its budget ran out) is read again at once.
            let mut until = next;
            if !self.use_pidfd {
                until = until.min(now.saturating_add(5 * MILLIS));
            }
            if more {
                until = now;
            }
            clock.wait_readable(self.poll.as_raw_fd(), until);
            self.readiness_pending = !self.take_readiness();
            more = self.drain_stopping(self.now);
        }
    }

    /// One round of the graceful stop at `now`: reap what ended, and move on the phase of
    /// what did not once its deadline has passed.
    fn stop_round(&mut self, now: Nanos, start: Nanos, phases: &mut [(StopPhase, Nanos)]) {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(pid) = slot.process.as_ref().map(|p| p.pid) else {
                continue;
            };
            if let Some(status) = process::try_reap(pid) {
                let after = now.saturating_sub(start) / MILLIS;
                tracing::info!(adapter = %slot.config.name, pid, "adapter stopped: {status} after {after} ms");
                slot.stderr.finish(&slot.config.name, now);
                slot.session.stats_mut().last_down =
                    Some((tickloop_app::venue::DownCause::Exited, status));
                slot.process = None;
                phases[i].0 = StopPhase::Done;
                continue;
            }
            let (phase, deadline) = phases[i];
            if now < deadline {
                continue;
            }
            phases[i] = match phase {
                StopPhase::Closing => {
                    tracing::info!(adapter = %slot.config.name, pid, "adapter still running {} ms after its stdin closed: SIGTERM", slot.config.shutdown_grace_ms);
                    process::signal(pid, libc::SIGTERM);
                    let grace = slot.config.term_grace_ms as Nanos * MILLIS;
                    (StopPhase::Terminated, now.saturating_add(grace))
                }
                StopPhase::Terminated => {
                    tracing::warn!(adapter = %slot.config.name, pid, "adapter ignored SIGTERM for {} ms: SIGKILL", slot.config.term_grace_ms);
                    process::signal(pid, libc::SIGKILL);
                    (StopPhase::Killed, now.saturating_add(5 * SECONDS))
                }
                StopPhase::Killed => {
                    tracing::error!(adapter = %slot.config.name, pid, "adapter not gone 5 s after SIGKILL (stuck in the kernel?): giving up on it here; dropping the host tries once more");
                    (StopPhase::Done, deadline)
                }
                StopPhase::Done => (StopPhase::Done, deadline),
            };
        }
    }

    /// While stopping: read what the adapters write, at most [`READ_BUDGET`] per pipe (stdout
    /// dropped, stderr logged). True if a pipe may hold more (its budget ran out).
    fn drain_stopping(&mut self, now: Nanos) -> bool {
        let mut more = false;
        for slot in &mut self.slots {
            let Some(p) = &mut slot.process else { continue };
            for which in [STDOUT, STDERR] {
                let (ready, fd) = if which == STDOUT {
                    (&mut slot.out_ready, &mut p.stdout)
                } else {
                    (&mut slot.err_ready, &mut p.stderr)
                };
                let Some(raw) = fd.as_ref().map(|f| f.as_raw_fd()).filter(|_| *ready) else {
                    continue;
                };
                let mut left = READ_BUDGET;
                while left > 0 {
                    match process::read(raw, &mut self.scratch[..]) {
                        Io::Done(n) => {
                            left = left.saturating_sub(n);
                            if which == STDERR {
                                slot.stderr.feed(&slot.config.name, &self.scratch[..n], now);
                            }
                        }
                        Io::WouldBlock => {
                            *ready = false;
                            break;
                        }
                        _ => {
                            *ready = false;
                            *fd = None;
                            break;
                        }
                    }
                }
                more |= *ready;
            }
        }
        more
    }
}

/// How far the graceful stop has gone with one adapter.
#[derive(Clone, Copy, PartialEq)]
enum StopPhase {
    /// Its stdin is closed: it has `shutdown_grace_ms` to exit.
    Closing,
    /// SIGTERM sent: `term_grace_ms` more.
    Terminated,
    /// SIGKILL sent: 5 s more, then it is given up on.
    Killed,
    Done,
}

/// Whether our child `pid` has ended, without reaping it (so its pipes can be read first).
fn exited(pid: i32) -> bool {
    // SAFETY: an all-zero siginfo_t is valid; waitid with WNOWAIT leaves the child waitable.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid is set by waitid when a child is reported (0 otherwise).
    rc != 0 || unsafe { info.si_pid() } != 0
}

impl Drop for AdapterHost {
    /// The last line of defence against zombies: anything still running is killed and reaped.
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if let Some(p) = slot.process.take() {
                process::signal(p.pid, libc::SIGKILL);
                if process::reap_blocking(p.pid, Duration::from_secs(2)).is_none() {
                    tracing::error!(adapter = %slot.config.name, pid = p.pid, "adapter not gone 2 s after SIGKILL");
                }
            }
        }
    }
}

/// The host, shared between the loop (as fd source and service) and the app's output sink
/// (as [`AdapterHandle`]). Single-threaded: `Rc<RefCell>`.
#[derive(Clone)]
pub struct SharedHost(pub Rc<RefCell<AdapterHost>>);

impl SharedHost {
    pub fn new(host: AdapterHost) -> SharedHost {
        SharedHost(Rc::new(RefCell::new(host)))
    }

    /// Register with `event_loop`: one fd source (the private epoll) and one service.
    pub fn install<A: tickloop_app::App, S: OutputSink<A::Output>>(
        &self,
        event_loop: &mut EventLoop<A, S>,
    ) -> Result<(), LoopError> {
        event_loop.add_fd_source(Box::new(self.clone()))?;
        event_loop.add_service(Box::new(self.clone()))
    }

    /// A handle for the embedding program's output sink.
    pub fn handle(&self) -> AdapterHandle {
        AdapterHandle(self.0.clone())
    }
}

impl FdSource for SharedHost {
    fn fd(&self) -> RawFd {
        self.0.borrow().poll.as_raw_fd()
    }

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn on_ready(
        &mut self,
        now: Nanos,
        _ready: Readiness,
        emit: &mut dyn FnMut(EventKind) -> bool,
    ) -> bool {
        let now = self.0.borrow_mut().observe(now);
        self.0.borrow_mut().begin_round(now);
        // No borrow is held while the app runs: its outputs may call `request`.
        let mut more = false;
        loop {
            let next = self.0.borrow_mut().next_event(now);
            let Some(event) = next else { break };
            if !emit(EventKind::Adapter(event)) {
                more = true;
                break;
            }
        }
        let mut host = self.0.borrow_mut();
        host.end_round(now);
        more || host.more()
    }

    fn owed(&self) -> bool {
        self.0.borrow().owed()
    }
}

impl Service for SharedHost {
    fn start(&mut self, view: &LoopView<'_>) {
        self.0.borrow_mut().start(view.now);
    }
    fn tick(&mut self, view: &LoopView<'_>) {
        self.0.borrow_mut().housekeeping(view.now);
    }
    /// The graceful stop, on the loop's clock.
    fn stop(&mut self, view: &LoopView<'_>) {
        let mut clock = view.clock;
        self.0.borrow_mut().shutdown(&mut clock);
    }
}

/// What the embedding program's output sink holds to send the app's requests. Every method
/// takes `now`, the loop's time (the `at` an output sink is given), and returns at once: the
/// request is written to the adapter's stdin (or queued); its answer comes back as events. A refusal is returned **and** delivered to the app as
/// `AdapterEvent::Failed { reason: FailReason::Refused(..) }`, so an app that only sees
/// events (as it must, to replay) learns of it too.
#[derive(Clone)]
pub struct AdapterHandle(Rc<RefCell<AdapterHost>>);

impl AdapterHandle {
    /// Send `r` at `now` (its deadline counts from there); its id on success.
    pub fn request(&self, now: Nanos, r: &AdapterRequest) -> Result<RequestId, RequestError> {
        self.0.borrow_mut().request(now, r)
    }

    pub fn get_accounts(
        &self,
        now: Nanos,
        adapter: AdapterId,
        id: RequestId,
    ) -> Result<RequestId, RequestError> {
        self.request(
            now,
            &AdapterRequest {
                adapter,
                id,
                request: Request::GetAccounts,
            },
        )
    }

    // The request's own fields, and the loop's `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn get_historical_bars(
        &self,
        now: Nanos,
        adapter: AdapterId,
        id: RequestId,
        symbol: u32,
        from_ns: i64,
        to_ns: i64,
        bar_ns: u64,
    ) -> Result<RequestId, RequestError> {
        self.request(
            now,
            &AdapterRequest {
                adapter,
                id,
                request: Request::GetHistoricalBars {
                    symbol,
                    from_ns,
                    to_ns,
                    bar_ns,
                },
            },
        )
    }

    pub fn subscribe(
        &self,
        now: Nanos,
        adapter: AdapterId,
        id: RequestId,
        symbol: u32,
    ) -> Result<RequestId, RequestError> {
        self.request(
            now,
            &AdapterRequest {
                adapter,
                id,
                request: Request::Subscribe { symbol },
            },
        )
    }

    /// `limit: None` is a market order. The order is named by `id` from now on.
    // The request's own fields, and the loop's `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn place_order(
        &self,
        now: Nanos,
        adapter: AdapterId,
        id: RequestId,
        symbol: u32,
        side: Side,
        qty: f64,
        limit: Option<f64>,
    ) -> Result<RequestId, RequestError> {
        self.request(
            now,
            &AdapterRequest {
                adapter,
                id,
                request: Request::order(symbol, side, qty, limit),
            },
        )
    }

    pub fn cancel_order(
        &self,
        now: Nanos,
        adapter: AdapterId,
        id: RequestId,
        (order, symbol): (RequestId, u32),
    ) -> Result<RequestId, RequestError> {
        self.request(
            now,
            &AdapterRequest {
                adapter,
                id,
                request: Request::CancelOrder { order, symbol },
            },
        )
    }

    pub fn adapter_id(&self, name: &str) -> Option<AdapterId> {
        self.0.borrow().adapter_id(name)
    }

    /// A symbol's id in the host's table.
    pub fn symbol(&self, name: &str) -> Option<u32> {
        self.0.borrow().symbols().id(name)
    }

    pub fn stats(&self, adapter: AdapterId) -> Option<AdapterStats> {
        self.0.borrow().stats(adapter)
    }

    /// Call `f` with each adapter's name and stats, in id order (no allocation).
    pub fn for_each(&self, mut f: impl FnMut(&str, &AdapterStats)) {
        let host = self.0.borrow();
        for slot in &host.slots {
            f(&slot.config.name, &slot.session.stats());
        }
    }

    /// Each adapter's name and stats, in id order.
    pub fn all_stats(&self) -> Vec<(String, AdapterStats)> {
        let host = self.0.borrow();
        host.slots
            .iter()
            .map(|s| (s.config.name.clone(), s.session.stats()))
            .collect()
    }
}

/// An app whose output is [`AdapterRequest`] can use the handle as its sink directly; the
/// result is dropped here because a refusal also reaches the app as an event.
impl OutputSink<AdapterRequest> for AdapterHandle {
    fn output(&mut self, at: Nanos, output: &AdapterRequest) {
        let _ = self.request(at, output);
    }
}
