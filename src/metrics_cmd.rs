//! `tickloop metrics serve` and `tickloop top`: the readers of an engine's metrics page, each
//! in its own process. This file owns their arguments and [`PageSource`], the page as both
//! see it (opened again when an engine replaces it, judged live or not); the HTTP exporter is
//! `metrics_http.rs`, the terminal view `top_cmd.rs`.
//!
//! Nothing here writes to the page or signals the engine: a reader cannot disturb it.

use anyhow::bail;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use tickloop_ops::metrics::layout::Clock;
use tickloop_ops::metrics::{Liveness, MetricsError, PageReader, Snapshot};

#[derive(Subcommand)]
pub enum MetricsCommand {
    /// Serve an engine's metrics page as Prometheus text over HTTP, from this process.
    Serve(ServeArgs),
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// The engine's metrics page (`metrics.page`; `tickloop config check FILE` prints it): a
    /// name under /dev/shm or a path.
    #[arg(long, value_name = "PATH")]
    pub page: String,
    /// Where to listen (port 0: the kernel picks one; the address is logged).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,
    /// The exporter has no authentication: an address that is not loopback is refused unless
    /// this is given.
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Connections served at once (one worker thread each); as many more wait in a queue,
    /// beyond that they are answered 503 at once.
    #[arg(long, default_value_t = 8)]
    pub max_connections: u32,
    /// A connection's whole exchange must end within this many milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub request_timeout_ms: u32,
    /// A snapshot older than this is stale (`tickloop_up 0`); default three of the engine's
    /// publishing intervals, at least 1 s.
    #[arg(long, value_name = "DURATION", value_parser = crate::status_cmd::parse_duration)]
    pub max_age: Option<u64>,
}

#[derive(Args, Clone)]
pub struct TopArgs {
    /// The engine's metrics page; default: the one running engine's page under /dev/shm.
    #[arg(long, value_name = "PATH")]
    pub page: Option<String>,
    /// Print one frame (no screen control) and exit: 0 if the engine is up, 1 if not.
    #[arg(long)]
    pub once: bool,
    /// Refresh every this many milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub interval_ms: u64,
    /// Rows shown per table at most (the rest are counted).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub rows: u64,
    /// A snapshot older than this is stale; default as for `metrics serve`.
    #[arg(long, value_name = "DURATION", value_parser = crate::status_cmd::parse_duration)]
    pub max_age: Option<u64>,
}

/// What one look at the page found.
pub struct Observation<'a> {
    /// `None` when there is no page to read (the engine stopped and removed it).
    pub snapshot: Option<&'a Snapshot>,
    pub liveness: Option<Liveness>,
    /// Since the last publish, when the engine's clock is CLOCK_MONOTONIC.
    pub age_ns: Option<u64>,
    /// Why there is no snapshot, or what else a person should know.
    pub note: Option<String>,
}

impl Observation<'_> {
    pub fn is_up(&self) -> bool {
        self.liveness.is_some_and(Liveness::is_up)
    }
}

/// An engine's page as a reader follows it: across the engine removing it at stop and a new
/// engine putting a new one in its place.
pub struct PageSource {
    path: PathBuf,
    reader: Option<PageReader>,
    snapshot: Snapshot,
    have_snapshot: bool,
    max_age: Option<u64>,
}

impl PageSource {
    /// Open `page` (a name under /dev/shm or a path); a missing page or one this tickloop
    /// cannot read is an error here, before anything is served.
    pub fn open(page: &str, max_age: Option<u64>) -> anyhow::Result<PageSource> {
        let path = tickloop_ops::metrics::page_path(page)?;
        let reader = PageReader::open(&path)?;
        Ok(PageSource {
            path,
            reader: Some(reader),
            snapshot: Snapshot::default(),
            have_snapshot: false,
            max_age,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Look at the page now.
    pub fn observe(&mut self) -> Observation<'_> {
        let note = self.follow();
        let Some(reader) = self.reader.as_mut() else {
            return Observation {
                snapshot: None,
                liveness: None,
                age_ns: None,
                note,
            };
        };
        let alive = reader.engine_alive();
        if reader.snapshot(&mut self.snapshot).is_err() {
            let note =
                Some("the engine was writing the page on every try (or died writing it)".into());
            let liveness = Some(if alive {
                Liveness::Starting
            } else {
                Liveness::Gone
            });
            let snapshot = self.have_snapshot.then_some(&self.snapshot);
            return Observation {
                snapshot,
                liveness,
                age_ns: None,
                note,
            };
        }
        self.have_snapshot = true;
        let s = &self.snapshot;
        let now = tickloop_ring::sys::monotonic_ns().max(0) as u64;
        let max_age = self.max_age.unwrap_or_else(|| s.default_max_age_ns());
        let monotonic = s.clock == Clock::Monotonic as u64 && s.publishes > 0;
        Observation {
            snapshot: Some(s),
            liveness: Some(s.liveness(alive, now, max_age)),
            age_ns: monotonic.then(|| now.saturating_sub(s.updated_ns)),
            note,
        }
    }

    /// Open the path again when the file there is no longer the one mapped: a new engine's
    /// page replaces the old one; with no file there, the old mapping still tells how its
    /// engine ended. Returns a note when the path holds something unreadable.
    fn follow(&mut self) -> Option<String> {
        if self.reader.as_ref().is_some_and(PageReader::is_current) {
            return None;
        }
        match PageReader::open(&self.path) {
            Ok(reader) => {
                self.reader = Some(reader);
                self.have_snapshot = false;
                None
            }
            Err(MetricsError::Missing { .. }) if self.reader.is_some() => None,
            Err(MetricsError::Missing { .. }) => Some(format!(
                "no metrics page at {} (no engine running there)",
                self.path.display()
            )),
            Err(e) => {
                self.reader = None;
                Some(e.to_string())
            }
        }
    }
}

/// The one running engine's page under /dev/shm, for `tickloop top` without `--page`.
pub fn find_page() -> anyhow::Result<String> {
    let mut live = Vec::new();
    let entries = std::fs::read_dir("/dev/shm")?;
    for entry in entries.flatten().take(100_000) {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Any file may be a page (`--metrics-page` names it freely); opening one reads its
        // header and refuses it unless it starts with the page magic.
        if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if PageReader::open(&entry.path()).is_ok_and(|r| r.engine_alive()) {
            live.push(name);
        }
    }
    live.sort();
    match live.len() {
        1 => Ok(live.remove(0)),
        0 => bail!(
            "no running engine's metrics page under /dev/shm: start one, or name its page with --page"
        ),
        n => bail!(
            "{n} running engines publish metrics pages ({}{}): name one with --page",
            live[..n.min(5)].join(", "),
            if n > 5 { ", ..." } else { "" }
        ),
    }
}
