//! The status file: a JSON snapshot of the loop, written atomically (temporary file, fsync,
//! rename) from the loop's own tick, from the first tick on, so a monitor (`tickloop status`,
//! systemd's ExecStartPre, a script) always reads a whole, recent picture.
//!
//! It never blocks longer than one small write, never allocates after [`StatusWriter::new`]
//! (the document is rendered into a preallocated buffer), and never stops the loop: a failed
//! write is counted and retried on the next tick. It never reads a clock: its wall times
//! (`started_unix_ns`, `written_unix_ns`) are the driver's wall clock, from the loop's view
//! (virtual under the simulated driver).
//!
//! States: `running`, `stopping`, `stopped`, and `crashed`, which only [`tickloop_ring::crash`]'s
//! SIGBUS handler writes (the last document with that state and a `crash` object; the file
//! is registered with it in [`StatusWriter::new`]).

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use std::ffi::CString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tickloop_runtime::event_loop::{LoopView, Service, StopReason};

/// Bumped when a field changes meaning; readers check it.
pub const STATUS_FORMAT: u32 = 1;

/// Extra facts other services contribute to the status (the config's digest, the host
/// doctor's verdict at start; the config's
/// generation and rejections are the loop's counts, [`tickloop_runtime::event_loop::LoopStats`], so they
/// always equal the telemetry's; adapters have their own [`StatusWriter::set_adapters`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusExtra {
    /// FNV-1a of the applied config file's bytes.
    pub config_digest: u64,
    /// The host doctor's verdict for the loop's core at start, when it ran.
    pub host_doctor: Option<HostDoctor>,
}

/// The host doctor's verdict at start (`tickloop doctor`), as the status file shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostDoctor {
    pub core: usize,
    pub profile: &'static str,
    /// ok, warn or fail.
    pub verdict: &'static str,
    /// FNV-1a of the doctor's JSON snapshot: ties a run to the host it ran on.
    pub digest: u64,
}

/// Shared between the status writer and whoever updates the extras (single-threaded).
pub type SharedExtra = std::rc::Rc<std::cell::Cell<StatusExtra>>;

/// The order side of a running strategy, kept by whoever sees its outputs (the run's output
/// sink) and shown in the status file. Sized at startup: `positions` has one entry per
/// symbol the strategy may trade.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TradingStatus {
    pub strategy: String,
    /// Orders submitted and not yet final; all orders submitted; fills booked; orders
    /// rejected and cancelled (or expired); fills not believed (`fill_fault` in telemetry);
    /// risk denials; closed trades. Each equals the count of its telemetry event.
    pub open_orders: u64,
    pub orders: u64,
    pub fills: u64,
    pub rejected: u64,
    pub cancelled: u64,
    pub fill_faults: u64,
    pub denied: u64,
    pub trades: u64,
    pub realized_pnl: f64,
    /// Reconciliations with the venue completed, the differences they found (each a
    /// `reconcile_difference` in telemetry), orders that became `Unknown`.
    pub reconciliations: u64,
    pub reconcile_differences: u64,
    pub orders_unknown: u64,
    /// Signed units held per symbol id (only the non-zero ones are written).
    #[serde(serialize_with = "held")]
    pub positions: Vec<f64>,
}

fn held<S: Serializer>(positions: &[f64], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(None)?;
    for (symbol, &size) in positions.iter().enumerate() {
        if size != 0.0 {
            seq.serialize_element(&Held { symbol, size })?;
        }
    }
    seq.end()
}

#[derive(Serialize)]
struct Held {
    symbol: usize,
    size: f64,
}

pub type SharedTrading = std::rc::Rc<std::cell::RefCell<TradingStatus>>;

pub struct StatusWriter {
    path: PathBuf,
    tmp: CString,
    dst: CString,
    interval_ns: u64,
    last_write: Option<u64>,
    buf: Vec<u8>,
    component: String,
    account: String,
    pid: u32,
    started_unix_ns: i64,
    extra: SharedExtra,
    trading: Option<SharedTrading>,
    failures: u64,
    last_error: Option<String>,
    adapters: Option<tickloop_runtime::adapter::AdapterHandle>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("status file {}: directory {} does not exist: create it or set status.path elsewhere", path.display(), dir.display())]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("status file {}: cannot write in {}: {cause} (make the directory writable for this user, or set status.path elsewhere)", path.display(), dir.display())]
    Unwritable {
        path: PathBuf,
        dir: PathBuf,
        cause: io::Error,
    },
}

impl StatusWriter {
    /// Check that `path`'s directory takes files now (a probe write), before the loop starts.
    pub fn new(
        path: &Path,
        interval_ns: u64,
        component: &str,
        account: &str,
        extra: SharedExtra,
    ) -> Result<StatusWriter, StatusError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(StatusError::NoDirectory {
                path: path.into(),
                dir,
            });
        }
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let probe = PathBuf::from(&tmp_name);
        std::fs::write(&probe, b"{}")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|cause| StatusError::Unwritable {
                path: path.into(),
                dir: dir.clone(),
                cause,
            })?;
        let pid = std::process::id();
        // Known once the loop starts (the driver's wall clock then); 0 in a crash before.
        let started_unix_ns = 0;
        let fallback = crash_fallback(pid, component, account, interval_ns, started_unix_ns);
        tickloop_ring::crash::set_status_file(path, pid, fallback);
        Ok(StatusWriter {
            path: path.into(),
            tmp: CString::new(probe.as_os_str().as_bytes()).expect("a path has no NUL"),
            dst: CString::new(path.as_os_str().as_bytes()).expect("a path has no NUL"),
            interval_ns,
            last_write: None,
            buf: Vec::with_capacity(crate::limits::MAX_STATUS_BYTES),
            component: component.into(),
            account: account.into(),
            pid,
            started_unix_ns,
            extra,
            trading: None,
            failures: 0,
            last_error: None,
            adapters: None,
        })
    }

    /// Show a strategy's orders and positions (otherwise `trading` is null: no strategy runs).
    pub fn with_trading(mut self, trading: SharedTrading) -> Self {
        self.trading = Some(trading);
        self
    }

    /// List these adapters in the status (`"adapters"`: name, state, pid, starts, requests
    /// in flight and their counters, the last time each went down and why).
    pub fn set_adapters(&mut self, adapters: tickloop_runtime::adapter::AdapterHandle) {
        self.adapters = Some(adapters);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn failures(&self) -> u64 {
        self.failures
    }

    fn write(&mut self, view: &LoopView<'_>, state: &'static str) {
        // Render into our own buffer without letting it grow (take it out while `self` is
        // borrowed by the document; taking a Vec out does not allocate).
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let rendered = {
            let doc = Doc {
                w: self,
                view,
                state,
            };
            serde_json::to_writer(Bounded(&mut buf), &doc).is_ok()
        };
        self.buf = buf;
        if !rendered {
            self.fail("the status document outgrew its 64 KiB buffer".into());
            return;
        }
        self.buf.push(b'\n');
        match write_atomically(&self.tmp, &self.dst, &self.buf) {
            Ok(()) => self.last_error = None,
            Err(e) => self.fail(e.to_string()),
        }
    }

    fn fail(&mut self, why: String) {
        self.failures += 1;
        if self.last_error.as_deref() != Some(why.as_str()) {
            tracing::warn!(
                "status file {}: {why} (retrying every tick)",
                self.path.display()
            );
            self.last_error = Some(why);
        }
    }
}

impl Service for StatusWriter {
    fn start(&mut self, view: &LoopView<'_>) {
        self.started_unix_ns = view.clock.wall_now();
        self.last_write = Some(view.now);
        self.write(view, "running");
    }
    fn tick(&mut self, view: &LoopView<'_>) {
        if self
            .last_write
            .is_none_or(|t| view.now.saturating_sub(t) >= self.interval_ns)
        {
            self.last_write = Some(view.now);
            self.write(
                view,
                if view.stopping.is_some() {
                    "stopping"
                } else {
                    "running"
                },
            );
        }
    }
    fn stop(&mut self, view: &LoopView<'_>) {
        self.write(view, "stopped");
    }
}

/// What the SIGBUS handler writes if the engine dies before its first status (the handler
/// cannot format, so it is rendered at startup), with the keys first in the order `write`
/// renders them (the handler finds `"state"` and `"pid"` near the start).
fn crash_fallback(
    pid: u32,
    component: &str,
    account: &str,
    interval_ns: u64,
    started_unix_ns: i64,
) -> Vec<u8> {
    let json = |s: &str| serde_json::to_string(s).expect("a string renders");
    format!(
        "{{\"format\":{STATUS_FORMAT},\"state\":\"crashed\",\"pid\":{pid},\"component\":{},\"account\":{},\"version\":{},\"interval_ns\":{interval_ns},\"started_unix_ns\":{started_unix_ns}}}\n",
        json(component),
        json(account),
        json(env!("CARGO_PKG_VERSION")),
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_crash_fallback_is_a_document_the_sigbus_handler_can_mark() {
        let doc = super::crash_fallback(4242, "engine", "a\"b", 1_000_000, 7);
        let (at, end) = tickloop_ring::crash::state_value(&doc).expect("state near the start");
        assert_eq!(&doc[at..end], b"crashed");
        assert!(doc[..64].windows(11).any(|w| w == b"\"pid\":4242,"));
        let parsed: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(parsed["account"], "a\"b");
        assert_eq!(parsed["pid"], 4242);
    }
}

/// tmp → write → fsync → rename over dst: a reader sees the old file or the new one, whole.
fn write_atomically(tmp: &CString, dst: &CString, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: plain syscalls on NUL-terminated paths and a buffer we own.
    unsafe {
        let fd = libc::open(
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o644,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut written = 0;
        while written < bytes.len() {
            let n = libc::write(fd, bytes[written..].as_ptr().cast(), bytes.len() - written);
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                libc::close(fd);
                libc::unlink(tmp.as_ptr());
                return Err(e);
            }
            written += n as usize;
        }
        let synced = libc::fdatasync(fd);
        libc::close(fd);
        if synced != 0 {
            let e = io::Error::last_os_error();
            libc::unlink(tmp.as_ptr());
            return Err(e);
        }
        if libc::rename(tmp.as_ptr(), dst.as_ptr()) != 0 {
            let e = io::Error::last_os_error();
            libc::unlink(tmp.as_ptr());
            return Err(e);
        }
    }
    Ok(())
}

/// An `io::Write` into a Vec's spare capacity that fails instead of growing it.
struct Bounded<'a>(&'a mut Vec<u8>);

impl Write for Bounded<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.0.len() + data.len() > self.0.capacity() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "status buffer full",
            ));
        }
        self.0.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Doc<'a, 'v> {
    w: &'a StatusWriter,
    view: &'a LoopView<'v>,
    state: &'static str,
}

struct Lat<'a>(&'a hdrhistogram::Histogram<u64>);
impl Serialize for Lat<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("count", &self.0.len())?;
        m.serialize_entry("p50_ns", &self.0.value_at_quantile(0.5))?;
        m.serialize_entry("p99_ns", &self.0.value_at_quantile(0.99))?;
        m.serialize_entry("max_ns", &self.0.max())?;
        m.end()
    }
}

struct Rings<'a, 'v>(&'a LoopView<'v>);
impl Serialize for Rings<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.rings.len()))?;
        for (source, ring) in self.0.rings.iter().enumerate() {
            seq.serialize_element(&RingDoc { source, ring })?;
        }
        seq.end()
    }
}

struct RingDoc<'a> {
    source: usize,
    ring: &'a tickloop_runtime::event_loop::RingSource,
}
impl Serialize for RingDoc<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.ring.reader();
        let stats = r.stats();
        let write_seq = r.write_seq();
        let mut m = s.serialize_map(Some(10))?;
        m.serialize_entry("source", &self.source)?;
        m.serialize_entry("path", &r.path())?;
        m.serialize_entry("cursor", &r.cursor())?;
        m.serialize_entry("write_seq", &write_seq)?;
        m.serialize_entry("lag", &write_seq.saturating_sub(r.cursor()))?;
        m.serialize_entry("received", &stats.received)?;
        m.serialize_entry("lost", &stats.lost)?;
        m.serialize_entry("overruns", &stats.overruns)?;
        m.serialize_entry("removed", &self.ring.removed())?;
        // Without a registry entry the ring's writer cannot wake it and `ring info` does not
        // list it (the registry was full, or the file is read-only to this user).
        m.serialize_entry("registered", &r.registered())?;
        m.end()
    }
}

struct Timers<'a, 'v>(&'a LoopView<'v>);
impl Serialize for Timers<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for p in self.0.periodic.iter() {
            let Some(timer) = p.timer else { continue };
            seq.serialize_element(&TimerDoc { timer, p })?;
        }
        seq.end()
    }
}

struct TimerDoc<'a> {
    timer: u32,
    p: &'a tickloop_runtime::event_loop::Periodic,
}
impl Serialize for TimerDoc<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(6))?;
        m.serialize_entry("timer", &self.timer)?;
        m.serialize_entry("period_ns", &self.p.period)?;
        m.serialize_entry("budget_ns", &self.p.budget)?;
        m.serialize_entry("lateness", &Lat(&self.p.lateness))?;
        m.serialize_entry("took", &Lat(&self.p.took))?;
        m.serialize_entry("overruns", &self.p.overruns)?;
        m.end()
    }
}

struct DoctorDoc(HostDoctor);

impl Serialize for DoctorDoc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("core", &d.core)?;
        m.serialize_entry("profile", d.profile)?;
        m.serialize_entry("verdict", d.verdict)?;
        m.serialize_entry("digest", &format_args!("0x{:016x}", d.digest))?;
        m.end()
    }
}

impl Serialize for Doc<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (w, v) = (self.w, self.view);
        let extra = w.extra.get();
        let now_unix = v.clock.wall_now();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("format", &STATUS_FORMAT)?;
        m.serialize_entry("state", self.state)?;
        m.serialize_entry("pid", &w.pid)?;
        m.serialize_entry("component", &w.component)?;
        m.serialize_entry("account", &w.account)?;
        m.serialize_entry("version", env!("CARGO_PKG_VERSION"))?;
        m.serialize_entry("written_unix_ns", &now_unix)?;
        m.serialize_entry("interval_ns", &w.interval_ns)?;
        m.serialize_entry("started_unix_ns", &w.started_unix_ns)?;
        m.serialize_entry("uptime_ns", &v.now.saturating_sub(v.started))?;
        m.serialize_entry("driver", v.driver.name())?;
        m.serialize_entry("mode", &v.mode)?;
        if let Some(reason) = v.stopping {
            m.serialize_entry("stopping", &StopDoc(reason))?;
        }
        m.serialize_entry("iterations", &v.stats.iterations)?;
        m.serialize_entry("events", &v.stats.events)?;
        m.serialize_entry("candles", &v.stats.candles)?;
        m.serialize_entry("candles_lost", &v.stats.candles_lost)?;
        m.serialize_entry("loop_lag", &Lat(v.lag))?;
        match v.last_candle {
            Some((ts_ns, at)) => m.serialize_entry(
                "last_candle",
                &LastCandle {
                    ts_ns,
                    age_ns: v.now.saturating_sub(at),
                },
            )?,
            None => m.serialize_entry("last_candle", &())?,
        }
        m.serialize_entry("rings", &Rings(v))?;
        m.serialize_entry("timers", &Timers(v))?;
        m.serialize_entry("config_generation", &v.stats.config_generation)?;
        m.serialize_entry(
            "config_digest",
            &format_args!("{:016x}", extra.config_digest),
        )?;
        m.serialize_entry("config_rejected", &v.stats.config_rejected)?;
        if let Some(d) = extra.host_doctor {
            m.serialize_entry("host_doctor", &DoctorDoc(d))?;
        }
        let (emitted, dropped, degraded) = v.telemetry;
        m.serialize_entry(
            "telemetry",
            &TelemetryDoc {
                emitted,
                dropped,
                degraded,
            },
        )?;
        match &w.trading {
            Some(t) => m.serialize_entry("trading", &*t.borrow())?,
            None => m.serialize_entry("trading", &())?,
        }
        match &w.adapters {
            Some(adapters) => m.serialize_entry("adapters", &Adapters(adapters))?,
            None => m.serialize_entry("adapters", &[(); 0])?,
        }
        m.serialize_entry("status_write_failures", &w.failures)?;
        m.end()
    }
}

struct Adapters<'a>(&'a tickloop_runtime::adapter::AdapterHandle);
impl Serialize for Adapters<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        let mut result = Ok(());
        self.0.for_each(|name, stats| {
            if result.is_ok() {
                result = seq.serialize_element(&AdapterDoc { name, stats });
            }
        });
        result?;
        seq.end()
    }
}

#[derive(Serialize)]
struct AdapterDoc<'a> {
    name: &'a str,
    #[serde(flatten)]
    stats: &'a tickloop_runtime::adapter::AdapterStats,
}

#[derive(Serialize)]
struct LastCandle {
    ts_ns: i64,
    age_ns: u64,
}

#[derive(Serialize)]
struct TelemetryDoc {
    emitted: u64,
    dropped: u64,
    degraded: bool,
}

struct StopDoc(StopReason);
impl Serialize for StopDoc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            StopReason::Signal(n) => s.serialize_str(match n {
                libc::SIGTERM => "SIGTERM",
                libc::SIGINT => "SIGINT",
                _ => "signal",
            }),
            StopReason::App => s.serialize_str("app"),
            StopReason::Deadline => s.serialize_str("deadline"),
        }
    }
}
