//! The io_uring backend: each registered fd has a multishot poll in flight, so readiness
//! arrives as completions in shared memory, and a busy loop sees it without a system call.
//! Timed waits pass the exact remaining time to `io_uring_enter` (EXT_ARG).
//!
//! `new` probes the kernel and fails with the reason (disabled by sysctl, blocked by seccomp,
//! too old) so the caller can fall back to epoll. It never allocates after `new`.

use super::{
    check_token, monotonic_now, wall_now, Clock, Driver, DriverKind, Interest, Readiness,
    ReadyList, Token, Wait,
};
use io_uring::{cqueue, opcode, register::Probe, squeue, types, IoUring};
use std::io;
use std::os::fd::RawFd;
use tickloop_app::clock::Nanos;

/// user_data of poll-remove completions (ignored).
const REMOVE_TAG: u64 = u64::MAX;

#[derive(Clone, Copy)]
struct Registration {
    fd: RawFd,
    interest: Interest,
    /// Bumped on every (re)registration, so completions of an old poll are ignored.
    generation: u32,
    live: bool,
}

pub struct UringDriver {
    ring: IoUring,
    regs: Vec<Registration>,
    /// Tokens whose multishot poll ended during one `collect` (capacity: every token).
    rearm: Vec<Token>,
}

fn user_data(token: Token, generation: u32) -> u64 {
    (generation as u64) << 32 | token.0 as u64
}

fn poll_mask(interest: Interest) -> u32 {
    let mut mask = 0;
    if interest.readable() {
        mask |= (libc::POLLIN | libc::POLLRDHUP) as u32;
    }
    if interest.writable() {
        mask |= libc::POLLOUT as u32;
    }
    mask
}

/// Why io_uring cannot be used here, or None if it can.
fn disabled_by_sysctl() -> Option<String> {
    let value = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok()?;
    match value.trim() {
        "2" => Some("kernel.io_uring_disabled = 2 (io_uring is disabled for everyone)".into()),
        "1" if tickloop_ring::sys::euid() != 0 => Some(
            "kernel.io_uring_disabled = 1 (only root and the io_uring_group may use it)".into(),
        ),
        _ => None,
    }
}

impl UringDriver {
    pub fn new(fd_capacity: u32) -> io::Result<UringDriver> {
        let entries = (fd_capacity.clamp(8, 1 << 14) * 2).next_power_of_two();
        // A multishot poll posts a completion per wake-up of its fd, so bursts can outrun the
        // completion queue: size it generously (16 bytes each); overflow is kept by the kernel
        // (NODROP) and flushed by the next wait, see `wait`.
        let ring = IoUring::builder()
            .setup_cqsize(entries * 16)
            .build(entries)
            .map_err(|e| {
                let why = match e.raw_os_error() {
                    Some(libc::ENOSYS) => {
                        "the kernel has no io_uring (older than 5.1) or seccomp blocks it"
                            .to_string()
                    }
                    Some(libc::EPERM) => disabled_by_sysctl().unwrap_or_else(|| {
                        "permission denied (seccomp or a container policy blocks io_uring)".into()
                    }),
                    _ => format!("io_uring_setup failed: {e}"),
                };
                io::Error::new(e.kind(), why)
            })?;
        let params = ring.params();
        if !params.is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel's io_uring lacks timed waits (EXT_ARG, Linux 5.11)",
            ));
        }
        // Multishot polls came with Linux 5.13, like resource tagging: use that as the marker.
        if !params.is_feature_resource_tagging() || !params.is_feature_nodrop() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel's io_uring lacks multishot polls (Linux 5.13)",
            ));
        }
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (code, name) in [
            (opcode::PollAdd::CODE, "POLL_ADD"),
            (opcode::PollRemove::CODE, "POLL_REMOVE"),
        ] {
            if !probe.is_supported(code) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("the kernel's io_uring does not support {name}"),
                ));
            }
        }
        let regs = vec![
            Registration {
                fd: -1,
                interest: Interest::Read,
                generation: 0,
                live: false,
            };
            fd_capacity as usize
        ];
        Ok(UringDriver {
            ring,
            regs,
            rearm: Vec::with_capacity(fd_capacity as usize),
        })
    }

    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: poll entries reference no user memory.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.ring.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(&entry) }
                .map_err(|_| io::Error::other("io_uring submission queue is full"))?;
        }
        Ok(())
    }

    fn arm(&mut self, token: Token) -> io::Result<()> {
        let reg = self.regs[token.0 as usize];
        let entry = opcode::PollAdd::new(types::Fd(reg.fd), poll_mask(reg.interest))
            .multi(true)
            .build()
            .user_data(user_data(token, reg.generation));
        self.push(entry)
    }

    /// Move completions into `ready`; re-arm polls that ended.
    fn collect(&mut self, ready: &mut ReadyList) -> io::Result<()> {
        self.rearm.clear();
        {
            let mut cq = self.ring.completion();
            cq.sync();
            while !ready.is_full() {
                let Some(cqe) = cq.next() else { break };
                let data = cqe.user_data();
                if data == REMOVE_TAG {
                    continue;
                }
                let token = Token(data as u32);
                let generation = (data >> 32) as u32;
                let Some(reg) = self.regs.get_mut(token.0 as usize) else {
                    continue;
                };
                if !reg.live || reg.generation != generation {
                    continue;
                }
                if !cqueue::more(cqe.flags()) {
                    // This multishot poll ended (overflow, error): a new one replaces it.
                    reg.generation = generation.wrapping_add(1);
                    self.rearm.push(token);
                }
                let result = cqe.result();
                if result == -libc::ECANCELED {
                    continue;
                }
                let mask = if result < 0 {
                    libc::POLLERR as u32
                } else {
                    result as u32
                };
                let hangup = mask & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR) as u32 != 0;
                ready.push(Readiness {
                    token,
                    readable: hangup || mask & libc::POLLIN as u32 != 0,
                    writable: mask & (libc::POLLOUT | libc::POLLERR) as u32 != 0,
                    hangup,
                });
            }
        }
        for i in 0..self.rearm.len() {
            let token = self.rearm[i];
            self.arm(token)?;
        }
        Ok(())
    }
}

impl Driver for UringDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::IoUring
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
        check_token(token, self.regs.len() as u32)?;
        let reg = &mut self.regs[token.0 as usize];
        if reg.live {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("token {} is already registered", token.0),
            ));
        }
        reg.fd = fd;
        reg.interest = interest;
        reg.generation = reg.generation.wrapping_add(1);
        reg.live = true;
        self.arm(token)?;
        self.ring.submit()?;
        Ok(())
    }

    fn deregister(&mut self, _fd: RawFd, token: Token) -> io::Result<()> {
        check_token(token, self.regs.len() as u32)?;
        let reg = self.regs[token.0 as usize];
        if !reg.live {
            return Ok(());
        }
        self.regs[token.0 as usize].live = false;
        let entry = opcode::PollRemove::new(user_data(token, reg.generation))
            .build()
            .user_data(REMOVE_TAG);
        self.push(entry)?;
        self.ring.submit()?;
        Ok(())
    }

    fn wait(&mut self, wait: Wait, ready: &mut ReadyList) -> io::Result<()> {
        ready.clear();
        // Completions the kernel could not fit in the queue wait on its overflow list, and
        // only an io_uring_enter moves them in: do one whenever that flag is up, or the fds
        // behind them would look silent forever.
        let pending = !self.ring.submission().is_empty() || self.ring.submission().cq_overflow();
        let result = match wait {
            // Completions land in shared memory: without submissions, no system call.
            Wait::Poll if !pending => Ok(0),
            Wait::Poll => self.ring.submit(),
            Wait::Forever => {
                if self.ring.completion().is_empty() {
                    self.ring.submit_and_wait(1)
                } else {
                    self.ring.submit()
                }
            }
            Wait::Until(deadline) => {
                let now = monotonic_now();
                if deadline <= now || !self.ring.completion().is_empty() {
                    if pending {
                        self.ring.submit()
                    } else {
                        Ok(0)
                    }
                } else {
                    let left = deadline - now;
                    let ts = types::Timespec::new()
                        .sec(left / 1_000_000_000)
                        .nsec((left % 1_000_000_000) as u32);
                    let args = types::SubmitArgs::new().timespec(&ts);
                    self.ring.submitter().submit_with_args(1, &args)
                }
            }
        };
        match result {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        self.collect(ready)
    }
}
