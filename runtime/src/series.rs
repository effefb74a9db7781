//! A finite series of candles held in memory (a data file a backtest replays) as a source of
//! the loop: an [`FdSource`] on an eventfd that stays readable, delivering `Candle` events in
//! order within the loop's per-iteration budget, then one `SourceEnded`.
//!
//! It owns its candles and the eventfd. It never reorders or drops a candle, never reads a
//! clock and never allocates after `new`.

use crate::driver::{Interest, Readiness};
use crate::event_loop::FdSource;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use tickloop_app::{EventKind, SourceId};
use tickloop_ring::Candle;

pub struct SeriesSource {
    candles: Vec<Candle>,
    next: usize,
    /// The id the loop gave this source (`add_fd_source`'s answer), used in its events.
    source: SourceId,
    ended: bool,
    fd: OwnedFd,
}

impl SeriesSource {
    /// `source` must be the id `EventLoop::add_fd_source` returns for it (sources are numbered
    /// in the order they are added: pass the count of fd sources added before this one).
    pub fn new(candles: Vec<Candle>, source: SourceId) -> io::Result<SeriesSource> {
        // SAFETY: eventfd with a constant initial value; the fd is checked, then owned.
        let fd = unsafe { libc::eventfd(1, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SeriesSource {
            candles,
            next: 0,
            source,
            ended: false,
            // SAFETY: a fresh fd we own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn delivered(&self) -> usize {
        self.next
    }
}

impl FdSource for SeriesSource {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn on_ready(
        &mut self,
        _now: tickloop_app::clock::Nanos,
        _ready: Readiness,
        emit: &mut dyn FnMut(EventKind) -> bool,
    ) -> bool {
        while self.next < self.candles.len() {
            let candle = self.candles[self.next];
            let pos = self.next as u64;
            self.next += 1;
            let more = emit(EventKind::Candle {
                source: self.source,
                pos,
                candle,
            });
            if !more {
                return true;
            }
        }
        if !self.ended {
            self.ended = true;
            emit(EventKind::SourceEnded {
                source: self.source,
            });
        }
        false
    }
}
