//! The ring benchmark's peers: other ways to move a message from one core to another, each
//! measured the way the tickloop ring's open-loop row is (a stopwatch stamp carried in the
//! message, one message every `gap_ns` paced by the writer; unpaced when `gap_ns` is 0), with
//! the writer on one core and the reader on the other.
//!
//! It owns one function per peer, each returning what its reader saw (a histogram of one-way
//! latencies, counts received and lost) or an `Err` saying why the peer could not run. It never
//! panics on a peer that fails, never asserts speed, and leaves nothing behind (no service,
//! socket or child process outlives a run).

use crate::harness::{
    child_alive, fork_pinned, reap, spin_until, stamp, stamp_ns, touched_histogram, SharedPage,
};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, Ordering};
use tickloop_ring::sys;

/// The message every peer carries: the writer's stopwatch stamp and a sequence number.
type Msg = [u64; 2];

/// The sequence number of a message that only checks a connection (not counted).
const PROBE: u64 = u64::MAX;

/// Capacity of every bounded queue, channel and buffer below.
const CAPACITY: usize = 1024;

/// The two cores a peer runs on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cores {
    pub(crate) reader: usize,
    pub(crate) writer: usize,
}

/// What a peer's reader saw in one run.
pub(crate) struct PeerRun {
    /// One-way latency (ns) of each message after the first 10%.
    pub(crate) hist: Histogram<u64>,
    pub(crate) received: u64,
    /// Messages that never arrived (sequence gaps, or missing at the end).
    pub(crate) lost: u64,
    /// Seconds from the first message received to the last.
    pub(crate) seconds: f64,
}

impl PeerRun {
    /// Messages received per second, first to last.
    pub(crate) fn per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.received as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// The reader's side of every peer: records each message's age and counts gaps.
struct Tally {
    hist: Histogram<u64>,
    n: u64,
    warmup: u64,
    received: u64,
    next: u64,
    lost: u64,
    /// Stopwatch stamps of the first and last message received.
    first: Option<i64>,
    last: i64,
}

impl Tally {
    fn new(n: u64, gap_ns: i64) -> Tally {
        Tally {
            hist: touched_histogram(),
            n,
            warmup: if gap_ns > 0 { n / 10 } else { 0 },
            received: 0,
            next: 0,
            lost: 0,
            first: None,
            last: 0,
        }
    }

    #[inline(always)]
    fn on(&mut self, m: Msg) {
        if m[1] == PROBE {
            return;
        }
        // One stopwatch read per message, as the ring's reader: it stamps the age and the span.
        let now = stamp();
        let age = stamp_ns(now - m[0] as i64);
        let seq = m[1];
        if seq >= self.next {
            self.lost += seq - self.next;
            self.next = seq + 1;
        }
        if seq >= self.warmup {
            self.hist.saturating_record(age);
        }
        self.received += 1;
        self.first.get_or_insert(now);
        self.last = now;
    }

    fn done(&self) -> bool {
        self.next >= self.n
    }

    fn finish(mut self) -> PeerRun {
        self.lost += self.n.saturating_sub(self.next);
        let span = self.last - self.first.unwrap_or(self.last);
        let seconds = if span > 0 {
            stamp_ns(span) as f64 / 1e9
        } else {
            0.0
        };
        PeerRun {
            hist: self.hist,
            received: self.received,
            lost: self.lost,
            seconds,
        }
    }
}

/// The writer's side of every peer: `n` messages, one every `gap_ns` (0: as fast as `send`
/// goes), each stamped just before `send`. A `send` that waits for room is in the latency.
#[inline(always)]
fn write_paced(n: u64, gap_ns: i64, mut send: impl FnMut(Msg)) {
    let mut due = sys::monotonic_ns();
    for i in 0..n {
        if gap_ns > 0 {
            due += gap_ns;
            spin_until(due);
        }
        send([stamp() as u64, i]);
    }
}

/// Run `writer` on a thread pinned to the writer core and `reader` on this thread, pinned to
/// the reader core; `done` is set when the writer has sent everything.
fn threads(
    cores: Cores,
    writer: impl FnOnce() + Send,
    reader: impl FnOnce(&AtomicBool) -> Result<PeerRun, String>,
) -> Result<PeerRun, String> {
    sys::pin_to_core(cores.reader)?;
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let w = s.spawn(|| {
            let pinned = sys::pin_to_core(cores.writer);
            if pinned.is_ok() {
                writer();
            }
            done.store(true, Ordering::Release);
            pinned
        });
        let result = reader(&done);
        match w.join() {
            Ok(Ok(())) => result,
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the writer thread panicked".into()),
        }
    })
}

/// Spin on `try_take` until `n` messages arrived; fails if the writer finished and nothing more
/// comes (a message was dropped by a queue that must not drop).
#[inline(always)]
fn spin_take(
    n: u64,
    gap_ns: i64,
    done: &AtomicBool,
    mut try_take: impl FnMut() -> Option<Msg>,
) -> Result<PeerRun, String> {
    let mut tally = Tally::new(n, gap_ns);
    while !tally.done() {
        match try_take() {
            Some(m) => tally.on(m),
            None => {
                if done.load(Ordering::Acquire) {
                    match try_take() {
                        Some(m) => tally.on(m),
                        None => break,
                    }
                }
                core::hint::spin_loop();
            }
        }
    }
    Ok(tally.finish())
}

/// crossbeam's `ArrayQueue` between two threads: the writer retries a full queue, the reader
/// spins on `pop`.
pub(crate) fn crossbeam_array_queue(cores: Cores, n: u64, gap_ns: i64) -> Result<PeerRun, String> {
    let q = crossbeam_queue::ArrayQueue::<Msg>::new(CAPACITY);
    threads(
        cores,
        || {
            write_paced(n, gap_ns, |mut m| {
                while let Err(back) = q.push(m) {
                    m = back;
                    core::hint::spin_loop();
                }
            })
        },
        |done| spin_take(n, gap_ns, done, || q.pop()),
    )
}

/// rtrb's single-producer single-consumer ring buffer between two threads: the writer
/// retries a full ring, the reader spins on `pop`.
pub(crate) fn rtrb_ring(cores: Cores, n: u64, gap_ns: i64) -> Result<PeerRun, String> {
    let (mut tx, mut rx) = rtrb::RingBuffer::<Msg>::new(CAPACITY);
    threads(
        cores,
        move || {
            write_paced(n, gap_ns, |mut m| {
                while let Err(rtrb::PushError::Full(back)) = tx.push(m) {
                    m = back;
                    core::hint::spin_loop();
                }
            })
        },
        |done| spin_take(n, gap_ns, done, || rx.pop().ok()),
    )
}

/// std's bounded `mpsc::sync_channel` between two threads: the writer's `send` blocks on a
/// full channel, the reader spins on `try_recv`.
pub(crate) fn std_sync_channel(cores: Cores, n: u64, gap_ns: i64) -> Result<PeerRun, String> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(CAPACITY);
    threads(
        cores,
        move || {
            write_paced(n, gap_ns, |m| {
                let _ = tx.send(m);
            })
        },
        |done| spin_take(n, gap_ns, done, || rx.try_recv().ok()),
    )
}

/// tokio's bounded mpsc channel: the writer thread's `blocking_send`, the reader a task on a
/// current-thread runtime awaiting `recv` (so it parks when the channel is empty, as tokio
/// tasks do).
pub(crate) fn tokio_mpsc(cores: Cores, n: u64, gap_ns: i64) -> Result<PeerRun, String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(CAPACITY);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("cannot build a tokio runtime: {e}"))?;
    threads(
        cores,
        move || {
            write_paced(n, gap_ns, |m| {
                let _ = tx.blocking_send(m);
            })
        },
        |_| {
            let mut tally = Tally::new(n, gap_ns);
            runtime.block_on(async {
                // `recv` returns None once the writer dropped its sender and all is read.
                while let Some(m) = rx.recv().await {
                    tally.on(m);
                    if tally.done() {
                        break;
                    }
                }
            });
            Ok(tally.finish())
        },
    )
}

fn msg_bytes(m: Msg) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&m[0].to_le_bytes());
    b[8..].copy_from_slice(&m[1].to_le_bytes());
    b
}

fn msg_of(b: &[u8]) -> Msg {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(w)
    };
    [word(0), word(8)]
}

/// Close a file descriptor of ours.
fn close(fd: libc::c_int) {
    // SAFETY: an fd this module opened and owns.
    unsafe { libc::close(fd) };
}

/// A Unix pipe between two processes: the writer process writes each 16-byte message with
/// one `write(2)`, the reader blocks in `read(2)`.
pub(crate) fn unix_pipe(cores: Cores, n: u64, gap_ns: i64) -> Result<PeerRun, String> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2 failed: {}", std::io::Error::last_os_error()));
    }
    let [rfd, wfd] = fds;
    let pid = fork_pinned(cores.writer, || {
        close(rfd);
        write_paced(n, gap_ns, |m| {
            let b = msg_bytes(m);
            // SAFETY: writing our own buffer to our own pipe; 16 bytes < PIPE_BUF are atomic.
            if unsafe { libc::write(wfd, b.as_ptr().cast(), b.len()) } != 16 {
                // SAFETY: child exit.
                unsafe { libc::_exit(4) };
            }
        });
        close(wfd);
    });
    close(wfd);
    let pid = match pid {
        Ok(pid) => pid,
        Err(e) => {
            close(rfd);
            return Err(e);
        }
    };
    let read = sys::pin_to_core(cores.reader).map(|()| {
        let mut tally = Tally::new(n, gap_ns);
        let mut buf = vec![0u8; 1 << 16];
        let mut have = 0usize;
        while !tally.done() {
            // SAFETY: reading into the free part of our buffer.
            let got = unsafe { libc::read(rfd, buf[have..].as_mut_ptr().cast(), buf.len() - have) };
            if got <= 0 {
                if got < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                break; // end of file: the writer is gone
            }
            have += got as usize;
            let whole = have / 16 * 16;
            for chunk in buf[..whole].chunks_exact(16) {
                tally.on(msg_of(chunk));
            }
            buf.copy_within(whole..have, 0);
            have -= whole;
        }
        tally.finish()
    });
    close(rfd);
    reap(pid).map_err(|e| format!("the pipe's writer process: {e}"))?;
    read
}

/// UDP on loopback between two processes: the writer process sends each 16-byte message as
/// one datagram, the reader blocks in `recv`. Datagrams the kernel drops are counted lost.
pub(crate) fn udp_loopback(cores: Cores, n: u64, gap_ns: i64) -> Result<PeerRun, String> {
    use std::net::UdpSocket;
    let io = |what: &str, e: std::io::Error| format!("UDP on loopback: {what}: {e}");
    let rx = UdpSocket::bind("127.0.0.1:0").map_err(|e| io("bind", e))?;
    rx.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .map_err(|e| io("read timeout", e))?;
    let to = rx.local_addr().map_err(|e| io("local address", e))?;
    let tx = UdpSocket::bind("127.0.0.1:0").map_err(|e| io("bind", e))?;
    tx.connect(to).map_err(|e| io("connect", e))?;
    let pid = fork_pinned(cores.writer, || {
        write_paced(n, gap_ns, |m| {
            // A full socket buffer drops the datagram at the reader, not here; an error
            // (ENOBUFS) is a loss too.
            let _ = tx.send(&msg_bytes(m));
        });
    })?;
    drop(tx);
    let read = sys::pin_to_core(cores.reader).map(|()| {
        let mut tally = Tally::new(n, gap_ns);
        let mut buf = [0u8; 64];
        while !tally.done() {
            match rx.recv(&mut buf) {
                Ok(16) => tally.on(msg_of(&buf[..16])),
                Ok(_) => {}
                Err(_) if child_alive(pid) => {}
                Err(_) => break, // the writer is gone and nothing came for 200 ms
            }
        }
        tally.finish()
    });
    reap(pid).map_err(|e| format!("the UDP writer process: {e}"))?;
    read
}

/// iceoryx2 publish/subscribe between two processes (`ipc` services, zero-copy shared
/// memory): the writer process publishes with `send_copy`, the reader busy-polls `receive`.
/// A subscriber buffer that overflows drops the oldest sample (iceoryx2's safe overflow):
/// counted lost.
pub(crate) fn iceoryx2_pubsub(cores: Cores, n: u64, gap_ns: i64) -> Result<PeerRun, String> {
    use iceoryx2::prelude::*;
    set_log_level(LogLevel::Fatal);
    let err = |what: &str, e: &dyn std::fmt::Display| format!("iceoryx2: {what}: {e}");
    let name = format!("tickloop/bench/peers/{}", std::process::id());
    let service_name: ServiceName = name
        .as_str()
        .try_into()
        .map_err(|e| err("service name", &format!("{e:?}")))?;
    let node = NodeBuilder::new()
        .create::<ipc::Service>()
        .map_err(|e| err("creating a node", &e))?;
    let service = node
        .service_builder(&service_name)
        .publish_subscribe::<Msg>()
        .subscriber_max_buffer_size(CAPACITY)
        .history_size(0)
        .enable_safe_overflow(true)
        .max_publishers(1)
        .max_subscribers(1)
        .create()
        .map_err(|e| err("creating the service", &e))?;
    let subscriber = service
        .subscriber_builder()
        .buffer_size(CAPACITY)
        .create()
        .map_err(|e| err("creating the subscriber", &e))?;
    let page = SharedPage::new()?;
    let ready = page.word(0);
    // The writer opens the service afresh in its own process, with its own node.
    let pid = fork_pinned(cores.writer, || {
        let code = (|| {
            let node = NodeBuilder::new().create::<ipc::Service>().map_err(drop)?;
            let service = node
                .service_builder(&service_name)
                .publish_subscribe::<Msg>()
                .open()
                .map_err(drop)?;
            let publisher = service.publisher_builder().create().map_err(drop)?;
            // Probe until the subscriber has received a probe: until both sides have
            // connected (each maps the other's segments on its next call, which took
            // milliseconds here), samples reach nobody or pile up unread, a start-up race of
            // the bench, not the transport's latency or loss.
            let give_up = sys::monotonic_ns() + 5_000_000_000;
            while ready.load(Ordering::Acquire) == 0 {
                publisher.send_copy([0, PROBE]).map_err(drop)?;
                if sys::monotonic_ns() > give_up {
                    return Err(());
                }
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
            let mut failed = false;
            write_paced(n, gap_ns, |m| failed |= publisher.send_copy(m).is_err());
            drop(publisher);
            drop(service);
            drop(node);
            if failed {
                Err(())
            } else {
                Ok(())
            }
        })();
        if code.is_err() {
            // SAFETY: child exit.
            unsafe { libc::_exit(5) };
        }
    })?;
    let read = sys::pin_to_core(cores.reader).and_then(|()| {
        let mut tally = Tally::new(n, gap_ns);
        let mut idle = 0u64;
        while !tally.done() {
            match subscriber.receive() {
                Ok(Some(sample)) => {
                    if sample[1] == PROBE {
                        ready.store(1, Ordering::Release);
                    }
                    tally.on(*sample);
                    idle = 0;
                }
                Ok(None) => {
                    idle += 1;
                    if idle.is_multiple_of(1 << 20) && !child_alive(pid) {
                        break;
                    }
                    core::hint::spin_loop();
                }
                Err(e) => return Err(err("receive", &e)),
            }
        }
        Ok(tally.finish())
    });
    let reaped = reap(pid);
    drop(subscriber);
    drop(service);
    drop(node);
    reaped.map_err(|e| {
        format!("iceoryx2: the publisher process could not open the service or send ({e})")
    })?;
    read
}

/// A peer of the ring benchmark: its row's name, what it is, and how to run it.
pub(crate) struct Peer {
    pub(crate) name: &'static str,
    /// Its name in checks and progress lines.
    pub(crate) short: &'static str,
    pub(crate) how: &'static str,
    pub(crate) run: fn(Cores, u64, i64) -> Result<PeerRun, String>,
}

/// Every peer, in report order.
pub(crate) const PEERS: [Peer; 7] = [
    Peer {
        name: "peer: iceoryx2 publish/subscribe one-way (two processes)",
        short: "iceoryx2",
        how: "iceoryx2 ipc service, `send_copy` of 16 bytes, subscriber busy-polls `receive`, buffer 1024 with safe overflow",
        run: iceoryx2_pubsub,
    },
    Peer {
        name: "peer: crossbeam ArrayQueue one-way (two threads)",
        short: "crossbeam ArrayQueue",
        how: "capacity 1024, writer retries when full, reader spins on `pop`",
        run: crossbeam_array_queue,
    },
    Peer {
        name: "peer: rtrb SPSC ring one-way (two threads)",
        short: "rtrb",
        how: "capacity 1024, writer retries when full, reader spins on `pop`",
        run: rtrb_ring,
    },
    Peer {
        name: "peer: std mpsc sync_channel one-way (two threads)",
        short: "std mpsc",
        how: "capacity 1024, blocking `send`, reader spins on `try_recv`",
        run: std_sync_channel,
    },
    Peer {
        name: "peer: tokio mpsc one-way (two threads, current-thread runtime)",
        short: "tokio mpsc",
        how: "capacity 1024, writer thread `blocking_send`, reader task awaits `recv` (parks when empty)",
        run: tokio_mpsc,
    },
    Peer {
        name: "peer: Unix pipe one-way (two processes)",
        short: "pipe",
        how: "16 bytes per write(2), reader blocks in read(2)",
        run: unix_pipe,
    },
    Peer {
        name: "peer: UDP on loopback one-way (two processes)",
        short: "UDP",
        how: "one 16-byte datagram per message, reader blocks in recv(2)",
        run: udp_loopback,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every peer runs (or says why not) and accounts for every message, paced and unpaced.
    #[test]
    fn every_peer_accounts_for_every_message() {
        stamp_ns(0); // calibrate the stopwatch first, as the bench does (it sleeps 50 ms)
        let cores = Cores {
            reader: 0,
            writer: 1.min(crate::report::allowed_cores().unwrap().len() - 1),
        };
        for peer in &PEERS {
            for gap in [1_000, 0] {
                match (peer.run)(cores, 2_000, gap) {
                    Ok(run) => {
                        eprintln!(
                            "{} gap {gap}: received {} lost {} p50 {}",
                            peer.short,
                            run.received,
                            run.lost,
                            run.hist.value_at_quantile(0.5)
                        );
                        assert_eq!(run.received + run.lost, 2_000, "{}", peer.name);
                        assert!(run.received > 0, "{}", peer.name);
                    }
                    Err(why) => {
                        eprintln!("{}: {why}", peer.short);
                        assert!(!why.is_empty());
                    }
                }
            }
        }
    }
}
