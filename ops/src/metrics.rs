//! The engine's metrics: published into a shared-memory page that other processes read, so
//! nothing on the loop's thread serves a client.
//!
//! **What it owns.** The `[metrics]` configuration ([`MetricsConfig`]), the page's layout
//! ([`layout`], `docs/metrics-format.md`), its one writer ([`page`]), its readers
//! ([`reader`]), the Prometheus text of a snapshot ([`render`]), and [`MetricsService`], the
//! [`Service`] that publishes the loop's counters into the page on the housekeeping tick.
//! `tickloop metrics serve` (an HTTP exporter) and `tickloop top` read the page in their own
//! processes; killing them cannot touch the engine.
//!
//! **What it never does.** On the loop's thread it never allocates (everything is sized in
//! [`MetricsService::create`] from the loop's limits: every periodic timer, every ring, every
//! adapter the host allows), never blocks, never reads a clock (the time is the tick's `now`),
//! and never drops a row silently: a row without room is counted in the page and warned about.
//! Nothing here is an input of the app, so nothing is journaled.

pub mod layout;
pub mod page;
pub mod reader;
pub mod render;

use layout::{
    header, AdapterRecord, Clock, LoopRecord, PageState, RingRecord, Section, Shape, Summary,
    TimerRecord, TradingRecord,
};
use serde::{Deserialize, Serialize};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tickloop_app::clock::Nanos;
use tickloop_app::TimerId;
use tickloop_runtime::event_loop::{LoopView, Service};

pub use page::{Identity, PageWriter, Publish};
pub use reader::{Busy, Liveness, PageReader, Snapshot};
pub use render::{render, render_serve_stats, render_up, ServeStats, RESPONSE_CODES};

/// Keys `[metrics]` had while the engine served HTTP itself; they are refused with a pointer
/// to `tickloop metrics serve`.
pub const RETIRED_KEYS: [&str; 6] = [
    "listen",
    "allow_non_loopback",
    "max_connections",
    "request_timeout_ms",
    "max_request_bytes",
    "send_buffer_bytes",
];

/// A config key that is no longer served: present or not, whatever its value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retired(pub bool);

impl<'de> Deserialize<'de> for Retired {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Retired(true))
    }
}

/// The `[metrics]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Publish the metrics page (default true for an engine run from a config file).
    pub enabled: bool,
    /// The page: a name under /dev/shm, or a path containing '/'. Default (filled in by the
    /// engine's config): `tickloop-COMPONENT@ACCOUNT.metrics`, named like the instance lock.
    pub page: Option<String>,
    #[serde(skip_serializing)]
    pub listen: Retired,
    #[serde(skip_serializing)]
    pub allow_non_loopback: Retired,
    #[serde(skip_serializing)]
    pub max_connections: Retired,
    #[serde(skip_serializing)]
    pub request_timeout_ms: Retired,
    #[serde(skip_serializing)]
    pub max_request_bytes: Retired,
    #[serde(skip_serializing)]
    pub send_buffer_bytes: Retired,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            page: None,
            listen: Retired(false),
            allow_non_loopback: Retired(false),
            max_connections: Retired(false),
            request_timeout_ms: Retired(false),
            max_request_bytes: Retired(false),
            send_buffer_bytes: Retired(false),
        }
    }
}

impl MetricsConfig {
    /// Check every field; the error names the field, the bad value and the fix.
    pub fn validate(&self) -> Result<(), MetricsError> {
        let retired = [
            self.listen,
            self.allow_non_loopback,
            self.max_connections,
            self.request_timeout_ms,
            self.max_request_bytes,
            self.send_buffer_bytes,
        ];
        if let Some((key, _)) = RETIRED_KEYS.iter().zip(retired).find(|(_, r)| r.0) {
            return Err(MetricsError::Retired { key });
        }
        if let Some(page) = &self.page {
            page_path(page)?;
        }
        Ok(())
    }
}

/// Turn a `metrics.page` / `--page` value into a path: a plain name lives under /dev/shm;
/// anything with a '/' is a path.
pub fn page_path(arg: &str) -> Result<PathBuf, MetricsError> {
    tickloop_ring::shm_path(arg).map_err(|why| MetricsError::BadPage {
        page: arg.to_owned(),
        why,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{}", retired_message(key))]
    Retired { key: &'static str },
    #[error("metrics page {page:?} is not allowed: {why}")]
    BadPage { page: String, why: &'static str },
    #[error(
        "metrics page {} does not exist (is the engine running, and is this its metrics.page? \
         `tickloop config check FILE` prints it)", path.display()
    )]
    Missing { path: PathBuf },
    #[error("{} is not a metrics page: {why}", path.display())]
    NotAPage { path: PathBuf, why: String },
    #[error(
        "{} is a metrics page of layout {major}.{minor}; this tickloop reads layout {}.x: use \
         the tickloop of the engine that wrote it", path.display(), layout::LAYOUT_MAJOR
    )]
    OtherLayout {
        path: PathBuf,
        major: u64,
        minor: u64,
    },
    #[error("cannot {what} metrics page {}: {source}", path.display())]
    Page {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "metrics page {}: directory {} does not exist: create it or set metrics.page elsewhere",
        path.display(), dir.display()
    )]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error(
        "metrics page {}: {} has no room for its {needed} bytes: free space there (df {}) or set \
         metrics.page on a larger tmpfs", path.display(), dir.display(), dir.display()
    )]
    NoSpace {
        path: PathBuf,
        dir: PathBuf,
        needed: u64,
    },
    #[error(
        "metrics page {}: a file that is not a metrics page is there, and it is never replaced: \
         remove it or set metrics.page elsewhere", path.display()
    )]
    NotAPageThere { path: PathBuf },
    #[error(
        "metrics page {} is in use by the running engine pid {pid}: give each engine its own \
         metrics.page", path.display()
    )]
    InUse { path: PathBuf, pid: u64 },
}

impl MetricsError {
    /// The `[metrics]` key an error is about, for a message that names its line.
    pub fn config_key(&self) -> Option<&'static str> {
        match self {
            MetricsError::Retired { key } => Some(key),
            MetricsError::BadPage { .. } => Some("page"),
            _ => None,
        }
    }
}

/// Why a retired `[metrics]` key is refused, and what to do instead.
fn retired_message(key: &str) -> String {
    if key == "listen" {
        return "metrics.listen: the engine no longer serves HTTP itself: it publishes its \
                metrics to a shared-memory page (metrics.page), and `tickloop metrics serve \
                --page PAGE --listen ADDR` serves them as Prometheus text from its own process: \
                remove metrics.listen and run that beside the engine"
            .to_string();
    }
    format!(
        "metrics.{key}: the HTTP endpoint's settings belong to `tickloop metrics serve` now (see \
         `tickloop metrics serve --help`): remove metrics.{key}; the engine only publishes its \
         metrics page"
    )
}

/// One periodic-table entry's last published record, and what it was computed from (so a
/// timer that did not fire since costs no walk of its histograms).
#[derive(Debug, Clone, Copy, Default)]
struct TimerCache {
    key: Option<(TimerId, Nanos, u64, u64)>,
    record: TimerRecord,
}

/// The [`Service`] that publishes the loop into its metrics page on every housekeeping tick,
/// at start, and a last time (state `stopped`) at stop. The page is removed when it drops.
pub struct MetricsService {
    page: PageWriter,
    trading: Option<crate::status::SharedTrading>,
    adapters: Option<tickloop_runtime::adapter::AdapterHandle>,
    timers: Vec<TimerCache>,
    lag: (u64, Summary),
    publishes: u64,
    warned: bool,
}

impl MetricsService {
    /// Create the page at `path` for a loop of `shape` (see [`PageWriter::create`]); every
    /// buffer the service will use is allocated here.
    pub fn create(path: &Path, shape: Shape, id: &Identity<'_>) -> Result<Self, MetricsError> {
        let page = PageWriter::create(path, shape, id)?;
        if page.instance_truncated() {
            tracing::warn!(
                "metrics page {}: the instance name {:?} is longer than {} bytes and was cut",
                path.display(),
                id.instance,
                layout::INSTANCE_BYTES
            );
        }
        Ok(MetricsService {
            page,
            trading: None,
            adapters: None,
            timers: vec![TimerCache::default(); shape.timers as usize],
            lag: (0, Summary::default()),
            publishes: 0,
            warned: false,
        })
    }

    /// Publish these adapters (each one's name, state and request counters).
    pub fn set_adapters(&mut self, adapters: tickloop_runtime::adapter::AdapterHandle) {
        self.adapters = Some(adapters);
    }

    /// Publish a strategy's order counters, the ones the status file shows.
    pub fn set_trading(&mut self, trading: crate::status::SharedTrading) {
        self.trading = Some(trading);
    }

    pub fn path(&self) -> &Path {
        self.page.path()
    }

    /// Recompute the summaries of the timers that fired since the last publish.
    fn refresh(&mut self, view: &LoopView<'_>) {
        for (cache, p) in self.timers.iter_mut().zip(view.periodic) {
            let Some(timer) = p.timer else {
                cache.key = None;
                continue;
            };
            let key = Some((timer, p.period, p.lateness.len(), p.took.len()));
            if cache.key != key {
                cache.key = key;
                cache.record.timer = timer as u64;
                cache.record.period_ns = p.period;
                cache.record.budget_ns = p.budget;
                cache
                    .record
                    .set_lateness(Summary::from_histogram(&p.lateness));
                cache.record.set_run(Summary::from_histogram(&p.took));
            }
            cache.record.overruns = p.overruns;
            cache.record.skipped = p.skipped;
        }
        if view.lag.len() != self.lag.0 {
            self.lag = (view.lag.len(), Summary::from_histogram(view.lag));
        }
    }

    fn publish(&mut self, view: &LoopView<'_>, state: PageState) {
        self.refresh(view);
        self.publishes += 1;
        let clock = match view.driver {
            tickloop_runtime::driver::DriverKind::Simulated => Clock::Virtual,
            _ => Clock::Monotonic,
        };
        let lp = loop_record(view, self.lag.1);
        let trading = self.trading_record();
        let layout = *self.page.layout();
        let publishes = self.publishes;
        let timers = &self.timers;
        let adapters = self.adapters.as_ref();
        let instance_cut = self.page.instance_truncated() as u64;
        let p = self.page.begin();
        p.set(header::STATE, state as u64);
        p.set(header::CLOCK, clock as u64);
        p.set(header::PUBLISHES, publishes);
        p.set(header::STARTED_NS, view.started);
        p.set(header::UPDATED_NS, view.now);
        p.set_all(layout.word(Section::Loop, 0), &lp.to_words());
        p.set_all(layout.word(Section::Trading, 0), &trading.to_words());
        let counts = [
            write_timers(&p, &layout, timers, view.periodic.len()),
            write_rings(&p, &layout, view),
            write_adapters(&p, &layout, adapters),
        ];
        let cut = counts.iter().map(|c| c.cut).sum::<u64>() + instance_cut;
        for (i, section) in [Section::Timers, Section::Rings, Section::Adapters]
            .iter()
            .enumerate()
        {
            p.set(section.descriptor() + 3, counts[i].shown);
            p.set(header::TIMERS_NOT_SHOWN + i, counts[i].not_shown);
        }
        p.set(header::NAMES_TRUNCATED, cut);
        drop(p);
        self.warn_once(&counts, cut);
    }

    fn trading_record(&self) -> TradingRecord {
        let Some(t) = &self.trading else {
            return TradingRecord::default();
        };
        let t = t.borrow();
        TradingRecord {
            strategy: 1,
            orders_submitted: t.orders,
            fills: t.fills,
            orders_rejected: t.rejected,
            orders_cancelled: t.cancelled,
            orders_denied: t.denied,
            fill_faults: t.fill_faults,
            open_orders: t.open_orders,
            trades: t.trades,
            realized_pnl: t.realized_pnl.to_bits(),
            reconciliations: t.reconciliations,
            reconcile_differences: t.reconcile_differences,
            orders_unknown: t.orders_unknown,
        }
    }

    /// Rows without room or names cut: said once (the page counts them on every snapshot).
    fn warn_once(&mut self, counts: &[Rows; 3], cut: u64) {
        let lost: u64 = counts.iter().map(|c| c.not_shown).sum();
        if self.warned || (lost == 0 && cut == 0) {
            return;
        }
        self.warned = true;
        tracing::warn!(
            "metrics page {}: {} timer, {} ring and {} adapter row(s) had no room, and {cut} name(s) were cut to fit; the page counts them (tickloop_metrics_rows_not_shown, tickloop_metrics_names_truncated)",
            self.page.path().display(),
            counts[0].not_shown,
            counts[1].not_shown,
            counts[2].not_shown
        );
    }
}

/// What one list section got at a publish.
#[derive(Debug, Clone, Copy, Default)]
struct Rows {
    shown: u64,
    not_shown: u64,
    /// Names cut to fit.
    cut: u64,
}

fn loop_record(view: &LoopView<'_>, lag: Summary) -> LoopRecord {
    let s = &view.stats;
    let mut r = LoopRecord {
        iterations: s.iterations,
        events: s.events,
        candles: s.candles,
        candles_lost: s.candles_lost,
        timers_fired: s.timers_fired,
        backlog_iterations: s.backlog_iterations,
        max_backlog: s.max_backlog,
        parks: s.parks,
        fd_polls: s.fd_polls,
        actions: s.actions,
        actions_dropped: s.actions_dropped,
        follow_ups_dropped: s.follow_ups_dropped,
        timer_refusals: s.timer_refusals,
        reload_requests: s.reload_requests,
        app_reconfigured: s.app_reconfigured,
        config_generation: s.config_generation,
        config_rejected: s.config_rejected,
        service_requests_dropped: s.service_requests_dropped,
        journal_records: s.journal_records,
        journal_dropped: s.journal_dropped,
        telemetry_emitted: view.telemetry.0,
        telemetry_dropped: view.telemetry.1,
        telemetry_degraded: view.telemetry.2 as u64,
        ..LoopRecord::default()
    };
    r.set_lag(lag);
    r
}

/// The used entries of the periodic table, densely, in table order.
fn write_timers(
    p: &Publish<'_>,
    layout: &layout::Layout,
    timers: &[TimerCache],
    table: usize,
) -> Rows {
    let capacity = layout.capacity(Section::Timers);
    let mut rows = Rows {
        // Entries of a table longer than the page was made for (never expected).
        not_shown: table.saturating_sub(timers.len()) as u64,
        ..Rows::default()
    };
    for cache in timers.iter().filter(|c| c.key.is_some()) {
        if rows.shown as usize >= capacity {
            rows.not_shown += 1;
            continue;
        }
        p.set_all(
            layout.word(Section::Timers, rows.shown as usize),
            &cache.record.to_words(),
        );
        rows.shown += 1;
    }
    rows
}

fn write_rings(p: &Publish<'_>, layout: &layout::Layout, view: &LoopView<'_>) -> Rows {
    let capacity = layout.capacity(Section::Rings);
    let mut rows = Rows::default();
    for (source, ring) in view.rings.iter().enumerate() {
        if source >= capacity {
            rows.not_shown += 1;
            continue;
        }
        let r = ring.reader();
        let stats = r.stats();
        let name = r
            .path()
            .file_name()
            .map(|n| n.as_bytes())
            .unwrap_or_default();
        let kept = layout::cut_name(name, layout::RING_NAME_BYTES);
        rows.cut += (kept.len() < name.len()) as u64;
        let record = RingRecord {
            source: source as u64,
            lag: r.write_seq().saturating_sub(r.cursor()),
            lost: stats.lost,
            overruns: stats.overruns,
            received: stats.received,
            writer_alive: !ring.removed() as u64,
            registered: r.registered() as u64,
            name_len: kept.len() as u64,
        };
        let at = layout.word(Section::Rings, source);
        p.set_all(at, &record.to_words());
        let mut words = [0u64; layout::RING_NAME_BYTES / 8];
        layout::pack_name(kept, &mut words);
        p.set_all(at + RingRecord::WORDS, &words);
        rows.shown += 1;
    }
    rows
}

fn write_adapters(
    p: &Publish<'_>,
    layout: &layout::Layout,
    adapters: Option<&tickloop_runtime::adapter::AdapterHandle>,
) -> Rows {
    let capacity = layout.capacity(Section::Adapters);
    let mut rows = Rows::default();
    let Some(adapters) = adapters else {
        return rows;
    };
    adapters.for_each(|name, s| {
        let row = rows.shown as usize;
        if row >= capacity {
            rows.not_shown += 1;
            return;
        }
        let kept = layout::cut_name(name.as_bytes(), layout::ADAPTER_NAME_BYTES);
        rows.cut += (kept.len() < name.len()) as u64;
        let record = AdapterRecord {
            adapter: row as u64,
            state: s.state.code() as u64,
            pid: s.pid as u64,
            starts: s.starts as u64,
            in_flight: s.in_flight as u64,
            requests: s.requests,
            done: s.done,
            failed: s.failed,
            timeouts: s.timeouts,
            refused: s.refused,
            events_lost: s.events_lost,
            name_len: kept.len() as u64,
        };
        let at = layout.word(Section::Adapters, row);
        p.set_all(at, &record.to_words());
        let mut words = [0u64; layout::ADAPTER_NAME_BYTES / 8];
        layout::pack_name(kept, &mut words);
        p.set_all(at + AdapterRecord::WORDS, &words);
        rows.shown += 1;
    });
    rows
}

impl Service for MetricsService {
    fn start(&mut self, view: &LoopView<'_>) {
        self.publish(view, PageState::Running);
    }
    fn tick(&mut self, view: &LoopView<'_>) {
        self.publish(view, PageState::Running);
    }
    fn stop(&mut self, view: &LoopView<'_>) {
        self.publish(view, PageState::Stopped);
    }
}
