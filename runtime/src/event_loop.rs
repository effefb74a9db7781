//! The loop: one thread that owns every source (rings, signals, registered fds) and the timer
//! wheel, turns what they deliver into [`Event`]s stamped by the driver's clock, hands them to
//! the [`App`], and performs the [`Action`]s it answers with.
//!
//! One iteration: read the clock once; fire due timers; read at most `batch` results from each
//! ring; poll fds when due (busy mode: every `fd_poll_interval`; park mode: whenever there is
//! nothing else to do, sleeping in the driver until a doorbell, a timer or an fd). It never
//! allocates after [`EventLoop::new`], never blocks except in the driver, and never lets one
//! source starve the others: a flood of candles delays a timer by at most one batch.
//!
//! It never reads a clock itself: its time is the driver's (`now` once per iteration, the wall
//! clock for telemetry and the journal's header), handed to the app, the fd sources and the
//! services. Under the simulated driver it asks its fd sources, at each clock reading, whether
//! they are owed input ([`FdSource::owed`]); while one is and the driver holds its clock, it
//! serves nothing but its fd sources (see `driver::sim`).

use crate::driver::{
    AnyDriver, Clock, Driver, DriverChoice, DriverKind, DriverOptions, DriverReport, Interest,
    Readiness, ReadyList, Token, Wait,
};
use crate::host::{self, HostConfig, HostSetup};
use crate::journal::{JournalError, JournalHeader, JournalWriter, Record};
use crate::limits;
use crate::signals::Signals;
use crate::telemetry::TelemetrySink;
use crate::timer::{TimerKey, TimerWheel};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use tickloop_app::clock::{Nanos, MICROS, MILLIS};
use tickloop_app::telemetry::{StopCause, Telemetry, Text};
use tickloop_app::SignalKind;
use tickloop_app::{
    Action, App, Context, Event, EventKind, OutputSink, SourceId, TimerId, TimerRefusal,
};
use tickloop_ring::{ReadResult, Reader, ReaderOptions, RingError, Start};

/// How the loop waits when it has nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Spin on rings and timers, never sleep (lowest latency; burns the core).
    Busy,
    /// After `park_after` idle iterations, sleep in the driver until a ring's doorbell, the
    /// next timer or an fd.
    #[default]
    Park,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Busy => "busy",
            Mode::Park => "park",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "busy" => Ok(Mode::Busy),
            "park" => Ok(Mode::Park),
            other => Err(format!("unknown mode {other:?}: use busy or park")),
        }
    }
}

/// Everything the loop needs fixed at startup. Every limit here bounds memory allocated in
/// [`EventLoop::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoopConfig {
    pub driver: DriverChoice,
    pub mode: Mode,
    /// Timers the wheel can hold; app timer ids are below this (one more is kept internally).
    pub timer_capacity: u32,
    /// Periodic timers with a budget and their two histograms.
    pub periodic_capacity: u32,
    /// Results read from each ring per iteration.
    pub batch: u32,
    /// Actions the app may return from one event; more are dropped and reported.
    pub actions_per_event: u32,
    /// Readiness reports taken from the driver per wait.
    pub ready_capacity: u32,
    /// Idle iterations before parking (park mode).
    pub park_after: u32,
    /// Busy mode: signals and fds are polled at least this often (ns).
    pub fd_poll_interval_ns: Nanos,
    /// Ring writer and removal checks, progress publishing and journal flushes (ns).
    pub housekeeping_ns: Nanos,
    /// Journal buffer (bytes), written out when full and on every housekeeping tick. Each
    /// write happens on the loop's thread, so a smaller buffer means shorter, more frequent
    /// pauses (64 KiB to tmpfs or the page cache: tens of µs).
    pub journal_buffer: u32,
    /// Simulated driver: virtual time added by each clock read (ns).
    pub sim_step_ns: Nanos,
    /// Simulated driver: the wall clock at virtual time 0 (ns since the Unix epoch), so the
    /// wall times of a simulated run (journal header, telemetry, status) are the same each run.
    pub sim_epoch_unix_ns: i64,
    /// Simulated driver: how long (real time, ns) the clock stands still for input an fd source
    /// is owed (an adapter's answer) before it gives up on it and lets virtual time run.
    pub sim_wait_cap_ns: Nanos,
    pub host: HostConfig,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            driver: DriverChoice::Auto,
            mode: Mode::Park,
            timer_capacity: 1024,
            periodic_capacity: 16,
            batch: 256,
            actions_per_event: 64,
            ready_capacity: 64,
            park_after: 64,
            fd_poll_interval_ns: 50 * MICROS,
            housekeeping_ns: 100 * MILLIS,
            journal_buffer: 64 << 10,
            sim_step_ns: MICROS,
            sim_epoch_unix_ns: crate::driver::SIM_EPOCH_UNIX_NS,
            sim_wait_cap_ns: 10_000 * MILLIS,
            host: HostConfig::default(),
        }
    }
}

impl LoopConfig {
    /// Check every limit; the error names the field, the bad value and the fix.
    pub fn validate(&self) -> Result<(), LoopError> {
        let bad = |field: &'static str, value: u64, fix: &str| {
            Err(LoopError::Config {
                field,
                value: value.to_string(),
                fix: fix.to_string(),
            })
        };
        if self.timer_capacity == 0 || self.timer_capacity > limits::MAX_TIMERS {
            return bad(
                "timer_capacity",
                self.timer_capacity as u64,
                &format!("use 1 to {} (default 1024)", limits::MAX_TIMERS),
            );
        }
        if self.periodic_capacity > self.timer_capacity {
            return bad(
                "periodic_capacity",
                self.periodic_capacity as u64,
                "use at most timer_capacity (default 16)",
            );
        }
        if self.batch == 0 || self.batch > limits::MAX_BATCH {
            let fix = format!("use 1 to {} (default 256)", limits::MAX_BATCH);
            return bad("batch", self.batch as u64, &fix);
        }
        if self.actions_per_event == 0 || self.actions_per_event > limits::MAX_ACTIONS_PER_EVENT {
            return bad(
                "actions_per_event",
                self.actions_per_event as u64,
                &format!("use 1 to {} (default 64)", limits::MAX_ACTIONS_PER_EVENT),
            );
        }
        if self.ready_capacity == 0 || self.ready_capacity > limits::MAX_READY {
            return bad(
                "ready_capacity",
                self.ready_capacity as u64,
                &format!("use 1 to {} (default 64)", limits::MAX_READY),
            );
        }
        if self.fd_poll_interval_ns == 0 || self.fd_poll_interval_ns > 100 * MILLIS {
            return bad(
                "fd_poll_interval_ns",
                self.fd_poll_interval_ns,
                "use 1 ns to 100 ms (default 50 µs)",
            );
        }
        if self.housekeeping_ns < MILLIS || self.housekeeping_ns > 10_000 * MILLIS {
            return bad(
                "housekeeping_ns",
                self.housekeeping_ns,
                "use 1 ms to 10 s (default 100 ms)",
            );
        }
        let journal = limits::MIN_JOURNAL_BUFFER..=limits::MAX_JOURNAL_BUFFER;
        if !journal.contains(&self.journal_buffer) {
            let (min, max) = journal.into_inner();
            return bad(
                "journal_buffer",
                self.journal_buffer as u64,
                &format!("use {min} to {max} bytes (default 65536)"),
            );
        }
        if let Some(p) = self.host.sched_fifo {
            if !(1..=99).contains(&p) {
                return bad("host.sched_fifo", p as u64, "use a priority from 1 to 99");
            }
        }
        self.validate_sim()
    }

    /// The simulated driver's settings.
    fn validate_sim(&self) -> Result<(), LoopError> {
        if self.sim_wait_cap_ns < MILLIS || self.sim_wait_cap_ns > 3_600_000 * MILLIS {
            return Err(LoopError::Config {
                field: "sim_wait_cap_ns",
                value: self.sim_wait_cap_ns.to_string(),
                fix: "use 1 ms to 1 h (default 10 s)".into(),
            });
        }
        Ok(())
    }

    /// What the driver is opened with (`fd_capacity` for the loop's own fds and sources).
    pub fn driver_options(&self) -> DriverOptions {
        DriverOptions {
            fd_capacity: FIRST_SOURCE_TOKEN + MAX_FD_SOURCES as u32,
            ready_capacity: self.ready_capacity,
            sim_start: tickloop_app::clock::SECONDS,
            sim_step: self.sim_step_ns,
            sim_epoch_unix_ns: self.sim_epoch_unix_ns,
            sim_wait_cap: self.sim_wait_cap_ns,
        }
    }

    /// The clock a loop with this configuration starts on, before the loop exists (an app's
    /// config that needs the offset between the loop's clock and the wall clock).
    pub fn clock(&self) -> Clock {
        Clock::for_driver(self.driver, &self.driver_options())
    }

    /// FNV-1a of the configuration, recorded in journals.
    pub fn fingerprint(&self) -> u64 {
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        tickloop_ring::layout::fnv1a64(&bytes)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("config: {field} = {value} is not allowed: {fix}")]
    Config {
        field: &'static str,
        value: String,
        fix: String,
    },
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Host(#[from] host::HostError),
    #[error("driver: {0}")]
    Driver(io::Error),
    #[error("signals: cannot open a signalfd: {0}")]
    Signals(io::Error),
    #[error("wake socket: cannot bind a Unix datagram socket in the abstract namespace: {0}")]
    Wake(io::Error),
    #[error("{0}")]
    Other(String),
}

/// One ring the loop reads.
pub struct RingSpec {
    pub path: PathBuf,
    pub start: Start,
}

/// A source of events that lives on a file descriptor (pipes, sockets, pidfds...), registered
/// by another module. On each readiness it reads its fd and emits events; each event given to
/// `emit` is dispatched to the app at once, and `emit` returns false once the source's budget
/// for this iteration (the loop's `batch`) is spent. The source must then stop reading and
/// return true ("more"): the loop calls it again next iteration. Otherwise it reads until
/// `EAGAIN` (the driver reports edges, not levels) and returns false.
///
/// A source never reads a clock: the loop hands [`FdSource::on_ready`] the iteration's `now`.
pub trait FdSource {
    fn fd(&self) -> RawFd;
    fn interest(&self) -> Interest;
    /// Serve a readiness report; `now` is the iteration's clock reading.
    fn on_ready(
        &mut self,
        now: Nanos,
        ready: Readiness,
        emit: &mut dyn FnMut(EventKind) -> bool,
    ) -> bool;
    /// Whether the source is owed input it asked for and will get without anything else
    /// happening first (an answer to a request it sent, a process's exit it caused). Only the
    /// simulated driver asks: it holds virtual time still until what is owed has come (see
    /// `driver::sim`). By default nothing is owed.
    fn owed(&self) -> bool {
        false
    }
}

/// A runtime service the embedding program runs on the loop's housekeeping tick: the status
/// file, the systemd watchdog, config polling, telemetry flushing. It sees the loop's
/// counters through a [`LoopView`], never the app, and must return quickly (it runs on the
/// loop's thread): bounded work, no blocking IO beyond one small write.
pub trait Service {
    /// Once, after `Started` was dispatched and before the first iteration.
    fn start(&mut self, _view: &LoopView<'_>) {}
    /// Every housekeeping tick (`housekeeping_ns`).
    fn tick(&mut self, view: &LoopView<'_>);
    /// Once, after `Shutdown` was dispatched.
    fn stop(&mut self, _view: &LoopView<'_>) {}
}

/// What a [`Service`] may read of the loop.
pub struct LoopView<'a> {
    pub now: Nanos,
    /// The driver's clock as it stands at `now`: the wall time (`clock.wall_now()`), and the
    /// time a service keeps after the loop, in its `stop` (a copy: reading it moves the copy).
    pub clock: Clock,
    /// When the loop started, on its clock.
    pub started: Nanos,
    pub stats: LoopStats,
    /// How late the housekeeping tick ran (ns): the loop's own lag.
    pub lag: &'a Histogram<u64>,
    pub periodic: &'a [Periodic],
    pub rings: &'a [RingSource],
    pub driver: DriverKind,
    pub mode: Mode,
    /// The time stamp of the last candle read (the candle's own `ts_ns`) and when (loop clock).
    pub last_candle: Option<(i64, Nanos)>,
    pub stopping: Option<StopReason>,
    /// Telemetry events emitted and dropped, and whether the sink is degraded.
    pub telemetry: (u64, u64, bool),
    requests: &'a RefCell<ServiceRequests>,
}

/// What services asked of the loop during one housekeeping tick; the loop performs it right
/// after the services ran. Bounded: telemetry beyond [`ServiceRequests::TELEMETRY`] per tick is
/// dropped and counted.
#[derive(Default)]
pub struct ServiceRequests {
    app_config: Option<(u64, Vec<u8>)>,
    telemetry: Vec<Telemetry>,
    dropped: u64,
}

impl ServiceRequests {
    /// Telemetry events services may emit per tick.
    pub const TELEMETRY: usize = 16;

    fn new() -> Self {
        ServiceRequests {
            app_config: None,
            telemetry: Vec::with_capacity(Self::TELEMETRY),
            dropped: 0,
        }
    }
}

impl LoopView<'_> {
    /// Offer the app a new configuration (postcard bytes) after this tick, as config file
    /// generation `generation`. The offer is journaled; a later offer in the same tick
    /// replaces an earlier one.
    pub fn reconfigure_app(&self, generation: u64, config: Vec<u8>) {
        self.requests.borrow_mut().app_config = Some((generation, config));
    }

    /// Emit a telemetry event from a service (sent after this tick, in order).
    pub fn emit_telemetry(&self, event: Telemetry) {
        let mut requests = self.requests.borrow_mut();
        if requests.telemetry.len() < ServiceRequests::TELEMETRY {
            requests.telemetry.push(event);
        } else {
            requests.dropped += 1;
        }
    }
}

impl RingSource {
    pub fn reader(&self) -> &Reader {
        &self.reader
    }
    pub fn removed(&self) -> bool {
        self.removed
    }
}

/// Where an entry in the timer wheel belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerOwner {
    App(TimerId),
    Housekeeping,
    /// The end of a run limited with [`EventLoop::stop_after`].
    Deadline,
}

#[derive(Debug, Clone, Copy, Default)]
struct AppTimer {
    key: Option<TimerKey>,
    /// Index into the periodic table while periodic.
    periodic: Option<u32>,
}

/// A periodic timer's schedule and budget accounting.
pub struct Periodic {
    pub timer: Option<TimerId>,
    pub period: Nanos,
    pub budget: Nanos,
    /// How late each firing ran (ns).
    pub lateness: Histogram<u64>,
    /// How long the app took for each firing (ns).
    pub took: Histogram<u64>,
    pub overruns: u64,
    pub skipped: u64,
}

/// One ring the loop reads, as a [`Service`] sees it.
pub struct RingSource {
    reader: Reader,
    removed: bool,
}

/// Counters of one run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LoopStats {
    pub iterations: u64,
    pub events: u64,
    pub candles: u64,
    pub candles_lost: u64,
    pub timers_fired: u64,
    /// Times a ring still had candles after its batch, or an fd source still had input
    /// after its budget (each is served again in the next iteration).
    pub backlog_iterations: u64,
    /// The largest backlog seen after a batch (candles).
    pub max_backlog: u64,
    pub parks: u64,
    pub fd_polls: u64,
    pub actions: u64,
    pub actions_dropped: u64,
    pub follow_ups_dropped: u64,
    pub timer_refusals: u64,
    /// SIGHUPs received (services that poll files look at once when this changes).
    pub reload_requests: u64,
    /// New app configurations taken while running.
    pub app_reconfigured: u64,
    /// The config generation in force (the last `ConfigApplied` emitted; 0: the one the
    /// engine started with) and the configs rejected so far (every `ConfigRejected`
    /// emitted), counted where the events are emitted, so telemetry, the status file and
    /// metrics agree by construction.
    pub config_generation: u64,
    pub config_rejected: u64,
    /// Telemetry from services beyond the per-tick limit.
    pub service_requests_dropped: u64,
    pub journal_records: u64,
    pub journal_dropped: u64,
}

/// Tokens the loop uses itself; sources registered by others start at [`FIRST_SOURCE_TOKEN`].
const SIGNAL_TOKEN: Token = Token(0);
const WAKE_TOKEN: Token = Token(1);
pub const FIRST_SOURCE_TOKEN: u32 = 2;
pub use crate::limits::{MAX_FD_SOURCES, MAX_SERVICES};

/// Why the loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StopReason {
    Signal(i32),
    App,
    /// The deadline given to [`EventLoop::stop_after`] passed.
    Deadline,
}

pub struct EventLoop<A: App, S: OutputSink<A::Output>> {
    config: LoopConfig,
    driver: AnyDriver,
    driver_report: DriverReport,
    app: A,
    sink: S,
    rings: Vec<RingSource>,
    signals: Signals,
    wake: Option<UnixDatagram>,
    fd_sources: Vec<Box<dyn FdSource>>,
    ready: ReadyList,
    wheel: TimerWheel<TimerOwner>,
    app_timers: Vec<AppTimer>,
    periodic: Vec<Periodic>,
    actions: Vec<Action<A::Output>>,
    follow_ups: std::collections::VecDeque<EventKind>,
    journal: Option<JournalWriter>,
    host: HostSetup,
    stats: LoopStats,
    now: Nanos,
    next_fd_poll: Nanos,
    stop: Option<StopReason>,
    stop_after: Option<Nanos>,
    ran: bool,
    /// Bit i: fd source i stopped at its budget and is called again next iteration.
    sources_pending: u64,
    services: Vec<Box<dyn Service>>,
    /// Typed telemetry (off unless [`EventLoop::set_telemetry`]).
    telemetry: TelemetrySink,
    /// Lateness of the housekeeping tick: the loop's lag.
    lag: Histogram<u64>,
    started: Nanos,
    last_candle: Option<(i64, Nanos)>,
    /// The config generation whose app parameters the app runs (the last it accepted).
    app_generation: u64,
    requests: RefCell<ServiceRequests>,
    /// The simulated driver runs: fd sources are asked whether they are owed input.
    simulated: bool,
}

/// Builds an [`EventLoop`]: everything is opened, allocated and checked before it runs.
pub struct LoopBuilder<'a> {
    pub config: &'a LoopConfig,
    pub rings: Vec<RingSpec>,
    pub journal: Option<PathBuf>,
    /// The app's configuration (postcard), recorded in the journal for replay.
    pub app_config: Vec<u8>,
    /// The program that runs the loop (`tickloop`, or a user's own binary), recorded in the
    /// journal so a replay in a program without its app can say which one to use.
    pub program: &'a str,
}

fn histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 2 significant digits: about 30 KiB each.
    Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid histogram bounds")
}

impl<A: App, S: OutputSink<A::Output>> EventLoop<A, S> {
    pub fn new(builder: LoopBuilder<'_>, app: A, sink: S) -> Result<Self, LoopError> {
        let config = builder.config.clone();
        config.validate()?;
        // First: from here on SIGTERM/SIGINT wait in the signalfd instead of killing us
        // halfway through setup.
        let signals = Signals::open().map_err(LoopError::Signals)?;
        let busy = config.mode == Mode::Busy;
        // Pin first, so everything below is allocated on the loop's core.
        let host = host::apply(&config.host, busy)?;
        // A sleeping SCHED_OTHER thread's timers get 50 µs of slack by default: a 200 µs
        // sleep would end anywhere up to 250 µs. The loop wants its deadlines kept.
        // SAFETY: prctl on the calling thread with a plain integer argument.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        let journal = match &builder.journal {
            None => None,
            Some(path) => {
                let header = JournalHeader {
                    build: env!("CARGO_PKG_VERSION").to_string(),
                    config_fingerprint: config.fingerprint()
                        ^ tickloop_ring::layout::fnv1a64(&builder.app_config),
                    program: builder.program.to_string(),
                    app: app.name().to_string(),
                    app_config: builder.app_config.clone(),
                    actions_per_event: config.actions_per_event,
                    driver: String::new(),
                    // The driver's wall clock, once it is open.
                    started_unix_ns: 0,
                };
                Some((path.clone(), header))
            }
        };
        let mut rings = Vec::with_capacity(builder.rings.len());
        for spec in &builder.rings {
            let reader = Reader::attach(
                &spec.path,
                ReaderOptions {
                    start: spec.start,
                    register: true,
                },
            )?;
            rings.push(RingSource {
                reader,
                removed: false,
            });
        }
        if rings.len() > SourceId::MAX as usize {
            return Err(LoopError::Other(format!(
                "{} rings is more than one loop reads (at most {})",
                rings.len(),
                SourceId::MAX
            )));
        }
        let (mut driver, driver_report) =
            AnyDriver::open(config.driver, config.driver_options()).map_err(LoopError::Driver)?;
        let journal = match journal {
            None => None,
            Some((path, mut header)) => {
                header.driver = driver_report.kind.name().to_string();
                header.started_unix_ns = driver.wall_now();
                Some(JournalWriter::create(
                    &path,
                    &header,
                    config.journal_buffer as usize,
                )?)
            }
        };
        driver
            .register(signals.fd(), SIGNAL_TOKEN, Interest::Read)
            .map_err(|e| registering("the signalfd", e))?;
        let wake = if config.mode == Mode::Park && !rings.is_empty() {
            let (socket, id) = bind_wake_socket().map_err(LoopError::Wake)?;
            driver
                .register(socket.as_raw_fd(), WAKE_TOKEN, Interest::Read)
                .map_err(|e| registering("the rings' wake socket", e))?;
            for ring in &mut rings {
                ring.reader.set_wake_socket(id);
            }
            Some(socket)
        } else {
            None
        };
        let capacity = config.timer_capacity as usize;
        let now = driver.now();
        let mut periodic = Vec::with_capacity(config.periodic_capacity as usize);
        for _ in 0..config.periodic_capacity {
            periodic.push(Periodic {
                timer: None,
                period: 0,
                budget: 0,
                lateness: histogram(),
                took: histogram(),
                overruns: 0,
                skipped: 0,
            });
        }
        let simulated = driver_report.kind == DriverKind::Simulated;
        let mut event_loop = EventLoop {
            driver,
            driver_report,
            app,
            sink,
            rings,
            signals,
            wake,
            fd_sources: Vec::with_capacity(MAX_FD_SOURCES),
            ready: ReadyList::with_capacity(config.ready_capacity as usize),
            // Two extra entries: the housekeeping tick and the run's deadline.
            wheel: TimerWheel::new(capacity + 2, now),
            app_timers: vec![AppTimer::default(); capacity],
            periodic,
            actions: Vec::with_capacity(config.actions_per_event as usize),
            follow_ups: std::collections::VecDeque::with_capacity(
                config.actions_per_event as usize * 2 + 8,
            ),
            journal,
            host,
            stats: LoopStats::default(),
            now,
            next_fd_poll: now,
            stop: None,
            stop_after: None,
            ran: false,
            sources_pending: 0,
            services: Vec::with_capacity(MAX_SERVICES),
            telemetry: TelemetrySink::off(),
            lag: histogram(),
            started: now,
            last_candle: None,
            app_generation: 0,
            requests: RefCell::new(ServiceRequests::new()),
            simulated,
            config,
        };
        event_loop.prefault()?;
        Ok(event_loop)
    }

    /// Fault in the rings' slots and the buffers allocated lazily (zeroed memory is mapped on
    /// first touch), so the loop never takes a page fault on them later.
    fn prefault(&mut self) -> Result<(), LoopError> {
        for ring in &self.rings {
            let (ptr, len) = ring.reader.slots_region();
            // SAFETY: the region is the reader's live mapping of the slots, valid for `len`.
            unsafe { host::prefault(ptr, len, false)? };
        }
        for p in &mut self.periodic {
            // Clearing writes every counter: each page of the histograms is touched now.
            p.lateness.reset();
            p.took.reset();
        }
        self.lag.reset();
        if let Some(journal) = &mut self.journal {
            journal.prefault();
        }
        Ok(())
    }

    /// Send the loop's telemetry (lifecycle, lost candles, new writers, removed rings, timer
    /// overruns) to `sink`; it is flushed on the housekeeping tick and finished at the end.
    pub fn set_telemetry(&mut self, mut sink: TelemetrySink) {
        sink.prefault();
        self.telemetry = sink;
    }

    pub fn telemetry(&self) -> &TelemetrySink {
        &self.telemetry
    }

    fn emit_telemetry(&mut self, event: Telemetry) {
        match event {
            Telemetry::ConfigApplied { generation, .. } => {
                self.stats.config_generation = generation
            }
            Telemetry::ConfigRejected { .. } => self.stats.config_rejected += 1,
            _ => {}
        }
        let wall = self.driver.wall_now();
        self.telemetry.emit(self.now, wall, &event);
    }

    /// Add a service run on the housekeeping tick (before the run).
    pub fn add_service(&mut self, service: Box<dyn Service>) -> Result<(), LoopError> {
        if self.services.len() == MAX_SERVICES {
            return Err(LoopError::Other(format!(
                "a loop holds at most {MAX_SERVICES} services"
            )));
        }
        self.services.push(service);
        Ok(())
    }

    fn view(&self) -> LoopView<'_> {
        LoopView {
            now: self.now,
            clock: self.driver.clock(),
            started: self.started,
            stats: self.stats(),
            lag: &self.lag,
            periodic: &self.periodic,
            rings: &self.rings,
            driver: self.driver_report.kind,
            mode: self.config.mode,
            last_candle: self.last_candle,
            stopping: self.stop,
            telemetry: {
                let (emitted, dropped) = self.telemetry.counts();
                (emitted, dropped, self.telemetry.is_degraded())
            },
            requests: &self.requests,
        }
    }

    /// Perform what services asked for in the tick that just ran.
    fn serve_requests(&mut self) {
        let mut requests = std::mem::take(self.requests.get_mut());
        for event in requests.telemetry.drain(..) {
            self.emit_telemetry(event);
        }
        self.stats.service_requests_dropped += std::mem::take(&mut requests.dropped);
        if let Some((generation, config)) = requests.app_config.take() {
            self.reconfigure_app(generation, config);
        }
        *self.requests.get_mut() = requests;
    }

    /// Offer the app a new configuration; on success it gets [`EventKind::Reconfigured`].
    fn reconfigure_app(&mut self, generation: u64, config: Vec<u8>) {
        let result = self.app.reconfigure(&config);
        if let Some(journal) = &mut self.journal {
            journal.record::<A::Output>(&Record::AppConfig {
                generation,
                accepted: result.is_ok(),
                config,
            });
        }
        match result {
            Ok(()) => {
                self.stats.app_reconfigured += 1;
                self.app_generation = generation;
                self.dispatch(EventKind::Reconfigured { generation });
            }
            Err(why) => {
                let kept = self.app_generation;
                tracing::error!(
                    "config generation {generation}: the app refused its new parameters and keeps those of generation {kept}: {why}"
                );
                self.emit_telemetry(Telemetry::ConfigRejected {
                    generation_kept: kept,
                    line: 0,
                    reason: Text::from_fmt(format_args!(
                        "the app refused the parameters of generation {generation}: {why}"
                    )),
                });
            }
        }
    }

    /// Run `f` on every service with a view of the loop.
    fn run_services(&mut self, f: fn(&mut dyn Service, &LoopView<'_>)) {
        let mut services = std::mem::take(&mut self.services);
        {
            let view = self.view();
            for service in &mut services {
                f(service.as_mut(), &view);
            }
        }
        self.services = services;
    }

    /// Add a source on a file descriptor (before or between runs).
    pub fn add_fd_source(&mut self, source: Box<dyn FdSource>) -> Result<SourceId, LoopError> {
        if self.fd_sources.len() == MAX_FD_SOURCES {
            return Err(LoopError::Other(format!(
                "a loop holds at most {MAX_FD_SOURCES} fd sources"
            )));
        }
        let index = self.fd_sources.len();
        let token = Token(FIRST_SOURCE_TOKEN + index as u32);
        self.driver
            .register(source.fd(), token, source.interest())
            .map_err(|e| registering(&format!("fd source {index} (fd {})", source.fd()), e))?;
        self.fd_sources.push(source);
        Ok(index as SourceId)
    }

    /// The rings the loop reads, in source order.
    pub fn rings(&self) -> &[RingSource] {
        &self.rings
    }

    pub fn driver_report(&self) -> &DriverReport {
        &self.driver_report
    }
    pub fn driver_kind(&self) -> DriverKind {
        self.driver_report.kind
    }
    pub fn host_report(&self) -> &host::HostReport {
        &self.host.report
    }
    pub fn stats(&self) -> LoopStats {
        let mut stats = self.stats;
        if let Some(j) = &self.journal {
            stats.journal_records = j.records();
            stats.journal_dropped = j.dropped();
        }
        stats
    }
    pub fn periodic(&self) -> impl Iterator<Item = &Periodic> {
        self.periodic.iter().filter(|p| p.timer.is_some())
    }
    pub fn app(&self) -> &A {
        &self.app
    }
    pub fn app_mut(&mut self) -> &mut A {
        &mut self.app
    }
    pub fn sink(&self) -> &S {
        &self.sink
    }
    pub fn ring_reader(&self, source: SourceId) -> Option<&Reader> {
        self.rings.get(source as usize).map(|r| &r.reader)
    }
    pub fn journal_failure(&self) -> Option<&str> {
        self.journal.as_ref().and_then(|j| j.failure())
    }

    /// Stop the run `after` nanoseconds from when it starts (call before [`EventLoop::run`]).
    pub fn stop_after(&mut self, after: Nanos) {
        self.stop_after = Some(after);
    }

    /// Run until a stop signal, the app's `Stop`, or the deadline of [`EventLoop::stop_after`].
    /// The app sees `Started` first and `Shutdown` last. A loop runs once: a second call is
    /// an error (build a new loop; the app's state and the journal belong to one run).
    pub fn run(&mut self) -> Result<StopReason, LoopError> {
        if self.ran {
            return Err(LoopError::Other(
                "this loop has already run: build a new EventLoop for another run".into(),
            ));
        }
        self.ran = true;
        self.now = self.driver.now();
        self.next_fd_poll = self.now;
        let housekeeping = self.now.saturating_add(self.config.housekeeping_ns);
        self.wheel
            .insert(housekeeping, TimerOwner::Housekeeping)
            .map_err(|e| LoopError::Other(e.to_string()))?;
        if let Some(after) = self.stop_after {
            self.wheel
                .insert(self.now.saturating_add(after), TimerOwner::Deadline)
                .map_err(|e| LoopError::Other(e.to_string()))?;
        }
        self.started = self.now;
        self.emit_telemetry(Telemetry::Started {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION"),
            driver: self.driver_report.kind.name(),
            mode: match self.config.mode {
                Mode::Busy => "busy",
                Mode::Park => "park",
            },
        });
        let wall_ns = self.driver.wall_now();
        self.dispatch(EventKind::Started { wall_ns });
        self.run_services(|s, v| s.start(v));
        let busy = self.config.mode == Mode::Busy;
        let mut idle: u32 = 0;
        while self.stop.is_none() {
            let now = self.read_clock();
            self.stats.iterations += 1;
            let mut worked = self.fire_timers(now);
            if self.simulated && self.driver.hold(self.sources_owed()) {
                self.serve_owed()?;
                continue;
            }
            worked |= self.read_rings();
            worked |= self.serve_pending_sources();
            if now >= self.next_fd_poll {
                self.next_fd_poll = now.saturating_add(self.config.fd_poll_interval_ns);
                self.poll_fds(Wait::Poll)?;
            }
            if worked {
                idle = 0;
            } else if busy {
                core::hint::spin_loop();
            } else {
                idle += 1;
                if idle >= self.config.park_after {
                    self.park()?;
                    idle = 0;
                }
            }
        }
        Ok(self.wind_down())
    }

    /// After the last iteration: `Shutdown` to the app, the services' stop, and the journal
    /// and telemetry written out.
    fn wind_down(&mut self) -> StopReason {
        let stop = self.stop.expect("the loop only ends on a stop");
        self.emit_telemetry(Telemetry::Stopping {
            reason: match stop {
                StopReason::Signal(n) => StopCause::Signal(n),
                StopReason::App => StopCause::App,
                StopReason::Deadline => StopCause::Deadline,
            },
        });
        self.dispatch(EventKind::Shutdown);
        for ring in &mut self.rings {
            ring.reader.publish_progress();
        }
        self.emit_telemetry(Telemetry::Stopped {
            events: self.stats.events,
            candles: self.stats.candles,
        });
        self.run_services(|s, v| s.stop(v));
        // Telemetry the services emitted while stopping; a new app config is moot now.
        self.requests.get_mut().app_config = None;
        self.serve_requests();
        self.telemetry.finish();
        if let Some(journal) = &mut self.journal {
            // A failure is kept for `journal_failure`: the run itself ended normally.
            let _ = journal.finish();
        }
        self.stop.expect("the loop only ends on a stop")
    }

    /// The one place the loop reads its clock. Time going backwards is a broken invariant.
    /// In simulation the driver is told first whether an fd source is owed input (it then
    /// holds its clock).
    fn read_clock(&mut self) -> Nanos {
        if self.simulated {
            let owed = self.sources_owed();
            self.driver.hold(owed);
        }
        let now = self.driver.now();
        assert!(
            now >= self.now,
            "the loop's clock went backwards: {now} after {}",
            self.now
        );
        self.now = now;
        now
    }

    /// Simulation: whether any fd source is owed input it asked for.
    fn sources_owed(&self) -> bool {
        self.fd_sources.iter().any(|s| s.owed())
    }

    /// Simulation, the driver holding its clock for owed input: serve the fd sources only, and
    /// wait in the driver (which blocks until an fd is ready, up to its cap) when none has
    /// input left from its last call. Rings wait, and no timer comes due: the clock stands still.
    fn serve_owed(&mut self) -> Result<(), LoopError> {
        if self.serve_pending_sources() {
            return Ok(());
        }
        let wait = self
            .wheel
            .next_deadline()
            .map_or(Wait::Forever, Wait::Until);
        self.poll_fds(wait)
    }

    /// Fire every due timer. Returns true if any fired.
    fn fire_timers(&mut self, now: Nanos) -> bool {
        let mut fired = false;
        // Bounded by the timers pending now: a timer the app sets at or before `now` from a
        // handler fires in the next iteration, after rings and signals had their turn.
        for _ in 0..self.wheel.len() {
            if self.stop.is_some() {
                break;
            }
            let Some((_key, deadline, owner)) = self.wheel.expire_one(now) else {
                break;
            };
            fired = true;
            match owner {
                TimerOwner::Housekeeping => {
                    self.lag.saturating_record((now - deadline).max(1));
                    self.housekeeping();
                    let next = now.saturating_add(self.config.housekeeping_ns);
                    self.wheel
                        .insert(next, TimerOwner::Housekeeping)
                        .expect("the housekeeping entry is reserved");
                }
                TimerOwner::App(timer) => self.fire_app_timer(timer, deadline, now),
                TimerOwner::Deadline => {
                    self.stop.get_or_insert(StopReason::Deadline);
                }
            }
        }
        fired
    }

    fn fire_app_timer(&mut self, timer: TimerId, deadline: Nanos, now: Nanos) {
        self.stats.timers_fired += 1;
        let slot = &mut self.app_timers[timer as usize];
        slot.key = None;
        let Some(index) = slot.periodic else {
            self.dispatch(EventKind::Timer { timer, deadline });
            return;
        };
        let p = &mut self.periodic[index as usize];
        let late = now - deadline;
        // Next deadline on the original grid; periods that already passed are skipped.
        let missed = late / p.period;
        let next = deadline.saturating_add((missed + 1).saturating_mul(p.period));
        let budget = p.budget;
        let key = self
            .wheel
            .insert(next, TimerOwner::App(timer))
            .expect("a fired timer's entry is free again");
        self.app_timers[timer as usize].key = Some(key);
        // The run time comes from the driver's stopwatch, not another reading of the loop's
        // clock: the app's `now` stays the iteration's one reading.
        let started = self.driver.stopwatch();
        self.dispatch(EventKind::Timer { timer, deadline });
        let took = self.driver.stopwatch().saturating_sub(started);
        // The handler may have cancelled or replaced this timer: then its slot is not ours.
        if self.app_timers[timer as usize].periodic != Some(index)
            || self.periodic[index as usize].timer != Some(timer)
        {
            return;
        }
        let p = &mut self.periodic[index as usize];
        p.lateness.saturating_record(late.max(1));
        p.took.saturating_record(took.max(1));
        p.skipped += missed;
        if late > budget || took > budget || missed > 0 {
            p.overruns += 1;
            self.dispatch(EventKind::TimerOverrun {
                timer,
                late_ns: late,
                took_ns: took,
                budget_ns: budget,
                skipped: missed.min(u32::MAX as u64) as u32,
            });
        }
    }

    /// Ring writer and removal checks, progress for `ring info`, journal flush.
    fn housekeeping(&mut self) {
        for index in 0..self.rings.len() {
            let ring = &mut self.rings[index];
            if ring.removed {
                continue;
            }
            ring.reader.publish_progress();
            if let Some(epoch) = ring.reader.check_writer() {
                self.dispatch(EventKind::NewWriter {
                    source: index as SourceId,
                    epoch,
                });
            }
            let ring = &mut self.rings[index];
            if !ring.reader.ready() && ring.reader.ring_removed() {
                ring.removed = true;
                self.dispatch(EventKind::RingRemoved {
                    source: index as SourceId,
                });
            }
        }
        if let Some(journal) = &mut self.journal {
            journal.flush();
        }
        self.run_services(|s, v| s.tick(v));
        self.serve_requests();
        self.telemetry.flush();
    }

    /// Read up to `batch` results from each ring. Returns true if anything was read.
    fn read_rings(&mut self) -> bool {
        let batch = self.config.batch;
        let mut worked = false;
        for index in 0..self.rings.len() {
            if self.rings[index].removed {
                continue;
            }
            let source = index as SourceId;
            let mut taken = 0;
            while taken < batch {
                match self.rings[index].reader.try_read() {
                    ReadResult::Candle { pos, candle } => {
                        self.stats.candles += 1;
                        self.last_candle = Some((candle.ts_ns, self.now));
                        self.dispatch(EventKind::Candle {
                            source,
                            pos,
                            candle,
                        });
                    }
                    ReadResult::Overrun { lost } => {
                        self.stats.candles_lost += lost;
                        self.dispatch(EventKind::CandlesLost { source, lost });
                    }
                    _ => break,
                }
                taken += 1;
            }
            if taken > 0 {
                worked = true;
            }
            if taken == batch {
                let reader = &self.rings[index].reader;
                if reader.ready() {
                    self.stats.backlog_iterations += 1;
                    let backlog = reader.write_seq().saturating_sub(reader.cursor());
                    self.stats.max_backlog = self.stats.max_backlog.max(backlog);
                }
            }
        }
        worked
    }

    /// Sleep in the driver until a ring's doorbell, the next timer, or an fd.
    fn park(&mut self) -> Result<(), LoopError> {
        self.stats.parks += 1;
        let mut limit: Option<Nanos> = None;
        let mut ready = false;
        for ring in &mut self.rings {
            if ring.removed {
                continue;
            }
            match ring.reader.announce_park() {
                // Not registered (the ring's 63 entries are taken): no doorbell, poll it.
                None => limit = Some(limit.map_or(MILLIS / 10, |x| x.min(MILLIS / 10))),
                Some(_) => {
                    if let Some(l) = ring.reader.park_limit() {
                        limit = Some(
                            limit.map_or(l.as_nanos() as Nanos, |x| x.min(l.as_nanos() as Nanos)),
                        );
                    }
                    if !ring.reader.writer_wakes_sockets() || self.wake.is_none() {
                        limit = Some(limit.map_or(MILLIS, |x| x.min(MILLIS)));
                    }
                }
            }
            ready |= ring.reader.ready();
        }
        if !ready {
            let now = self.now;
            let mut deadline = self.wheel.next_deadline();
            if let Some(l) = limit {
                let cap = now.saturating_add(l);
                deadline = Some(deadline.map_or(cap, |d| d.min(cap)));
            }
            let wait = deadline.map_or(Wait::Forever, Wait::Until);
            self.poll_fds(wait)?;
        }
        for ring in &mut self.rings {
            ring.reader.end_park();
        }
        Ok(())
    }

    /// Ask the driver what is ready (waiting per `wait`) and serve it.
    fn poll_fds(&mut self, wait: Wait) -> Result<(), LoopError> {
        self.stats.fd_polls += 1;
        self.driver.wait(wait, &mut self.ready).map_err(|e| {
            LoopError::Driver(io::Error::new(
                e.kind(),
                format!("waiting for readiness: {e}"),
            ))
        })?;
        if wait != Wait::Poll {
            // A sleep ends a batch: what woke the loop is stamped with the time it woke.
            self.read_clock();
        }
        for i in 0..self.ready.len() {
            let ready = self.ready.get(i).expect("index below len");
            match ready.token {
                SIGNAL_TOKEN => {
                    while let Some(signal) = self.signals.next_signal() {
                        if signal == SignalKind::Reload {
                            self.stats.reload_requests += 1;
                        }
                        self.dispatch(EventKind::Signal(signal));
                        if let SignalKind::Stop { signal } = signal {
                            self.stop.get_or_insert(StopReason::Signal(signal));
                            // A second stop signal from here on ends the process at once. Any
                            // already pending in the signalfd were sent before this one was
                            // seen (the same stop, twice): they are read with it here.
                            Signals::release_stop();
                        }
                    }
                }
                WAKE_TOKEN => {
                    if let Some(wake) = &self.wake {
                        let mut byte = [0u8; 16];
                        while wake.recv(&mut byte).is_ok() {}
                    }
                }
                Token(t) => {
                    let index = (t - FIRST_SOURCE_TOKEN) as usize;
                    if index < self.fd_sources.len() {
                        self.serve_source(index, ready);
                    }
                }
            }
        }
        Ok(())
    }

    /// Let fd source `index` read up to one batch; each event it emits is dispatched at once.
    /// A source that stops at its budget is called again next iteration (its edge is not lost).
    fn serve_source(&mut self, index: usize, ready: Readiness) {
        let mut source = std::mem::replace(&mut self.fd_sources[index], Box::new(NoSource));
        let mut budget = self.config.batch;
        let now = self.now;
        let more = source.on_ready(now, ready, &mut |kind| {
            self.dispatch(kind);
            budget = budget.saturating_sub(1);
            budget > 0
        });
        self.fd_sources[index] = source;
        if more {
            self.sources_pending |= 1 << index;
            self.stats.backlog_iterations += 1;
        } else {
            self.sources_pending &= !(1 << index);
        }
    }

    /// Call again the fd sources that stopped at their budget. Returns true if any ran.
    fn serve_pending_sources(&mut self) -> bool {
        let pending = self.sources_pending;
        if pending == 0 {
            return false;
        }
        for index in 0..self.fd_sources.len() {
            if pending & (1 << index) != 0 {
                let ready = Readiness {
                    token: Token(FIRST_SOURCE_TOKEN + index as u32),
                    readable: true,
                    writable: true,
                    hangup: false,
                };
                self.serve_source(index, ready);
            }
        }
        true
    }

    fn push_follow_up(&mut self, kind: EventKind) {
        if self.follow_ups.len() < self.follow_ups.capacity() {
            self.follow_ups.push_back(kind);
        } else {
            self.stats.follow_ups_dropped += 1;
        }
    }

    /// Hand one event to the app, record it, and perform its actions; then the follow-up
    /// events those actions caused (refusals, drops), each the same way.
    fn dispatch(&mut self, kind: EventKind) {
        self.dispatch_one(kind);
        self.dispatch_follow_ups();
    }

    fn dispatch_follow_ups(&mut self) {
        // Bounded: follow-ups are limited by the queue's capacity per event.
        let mut budget = self.follow_ups.capacity();
        while budget > 0 {
            let Some(kind) = self.follow_ups.pop_front() else {
                break;
            };
            self.dispatch_one(kind);
            budget -= 1;
        }
        self.stats.follow_ups_dropped += self.follow_ups.len() as u64;
        self.follow_ups.clear();
    }

    fn dispatch_one(&mut self, kind: EventKind) {
        if let Some(t) = Telemetry::from_event(&kind) {
            self.emit_telemetry(t);
        }
        let event = Event { at: self.now, kind };
        self.stats.events += 1;
        if let Some(journal) = &mut self.journal {
            journal.record::<A::Output>(&Record::Input(event));
        }
        let mut actions = std::mem::take(&mut self.actions);
        let mut dropped = 0u32;
        self.app.on_event(
            &event,
            &mut Context::new(self.now, &mut actions, &mut dropped),
        );
        for action in actions.drain(..) {
            self.stats.actions += 1;
            if let Some(journal) = &mut self.journal {
                journal.record(&Record::Output(action.clone()));
            }
            self.perform(action);
        }
        self.actions = actions;
        if dropped > 0 {
            self.stats.actions_dropped += dropped as u64;
            self.push_follow_up(EventKind::ActionsDropped { dropped });
        }
    }

    fn refuse(&mut self, timer: TimerId, reason: TimerRefusal) {
        self.stats.timer_refusals += 1;
        self.push_follow_up(EventKind::TimerRefused { timer, reason });
    }

    /// Remove timer `timer` from the wheel and the periodic table.
    fn clear_timer(&mut self, timer: TimerId) {
        let slot = &mut self.app_timers[timer as usize];
        if let Some(key) = slot.key.take() {
            self.wheel.cancel(key);
        }
        if let Some(index) = slot.periodic.take() {
            self.periodic[index as usize].timer = None;
        }
    }

    fn perform(&mut self, action: Action<A::Output>) {
        match action {
            Action::SetTimer { timer, deadline } => {
                if timer as usize >= self.app_timers.len() {
                    return self.refuse(timer, TimerRefusal::BadId);
                }
                self.clear_timer(timer);
                // A deadline at or before now fires in the next iteration, never in this one:
                // an app re-arming "now" from its handler cannot hold the loop.
                let deadline = deadline.max(self.now.saturating_add(1));
                match self.wheel.insert(deadline, TimerOwner::App(timer)) {
                    Ok(key) => self.app_timers[timer as usize].key = Some(key),
                    Err(_) => self.refuse(timer, TimerRefusal::WheelFull),
                }
            }
            Action::SetPeriodic {
                timer,
                first,
                period,
                budget,
            } => {
                if timer as usize >= self.app_timers.len() {
                    return self.refuse(timer, TimerRefusal::BadId);
                }
                if period < MICROS {
                    return self.refuse(timer, TimerRefusal::BadPeriod);
                }
                self.clear_timer(timer);
                let Some(index) = self.periodic.iter().position(|p| p.timer.is_none()) else {
                    return self.refuse(timer, TimerRefusal::TooManyPeriodic);
                };
                let first = first.max(self.now.saturating_add(1));
                let key = match self.wheel.insert(first, TimerOwner::App(timer)) {
                    Ok(key) => key,
                    Err(_) => return self.refuse(timer, TimerRefusal::WheelFull),
                };
                let p = &mut self.periodic[index];
                p.timer = Some(timer);
                p.period = period;
                p.budget = budget;
                p.lateness.reset();
                p.took.reset();
                p.overruns = 0;
                p.skipped = 0;
                self.app_timers[timer as usize] = AppTimer {
                    key: Some(key),
                    periodic: Some(index as u32),
                };
            }
            Action::CancelTimer { timer } => {
                if (timer as usize) < self.app_timers.len() {
                    self.clear_timer(timer);
                }
            }
            Action::Stop => {
                self.stop.get_or_insert(StopReason::App);
            }
            Action::Output(output) => {
                if let Some(event) = self.app.telemetry_of(&output) {
                    self.emit_telemetry(event);
                }
                self.sink.output(self.now, &output);
            }
        }
    }
}

fn registering(what: &str, e: io::Error) -> LoopError {
    LoopError::Driver(io::Error::new(
        e.kind(),
        format!("cannot register {what} with the driver: {e}"),
    ))
}

struct NoSource;
impl FdSource for NoSource {
    fn fd(&self) -> RawFd {
        -1
    }
    fn interest(&self) -> Interest {
        Interest::Read
    }
    fn on_ready(&mut self, _: Nanos, _: Readiness, _: &mut dyn FnMut(EventKind) -> bool) -> bool {
        false
    }
}

/// Wake sockets this process has bound: a new loop's socket gets a name of its own.
static WAKE_SOCKETS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Bind this loop's wake socket under a fresh abstract name; returns it and its id.
fn bind_wake_socket() -> io::Result<(UnixDatagram, u64)> {
    let pid = std::process::id() as u64;
    let nth = WAKE_SOCKETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut last = None;
    for n in 1..=64u64 {
        let id = pid << 32 | ((nth << 8) & 0xffff_ff00) | n;
        let name = tickloop_ring::layout::wake_socket_name(id);
        let addr = SocketAddr::from_abstract_name(name)?;
        match UnixDatagram::bind_addr(&addr) {
            Ok(socket) => {
                socket.set_nonblocking(true)?;
                return Ok((socket, id));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free wake socket name")))
}
