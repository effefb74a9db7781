//! What `tickloop ring info` reports about a ring: its header, its writer and whether that
//! writer is alive, and the registered readers with their lag. Read-only; never modifies the
//! segment and never takes its lock.

use super::error::RingError;
use super::layout::*;
use super::segment::{Access, Segment};
use crate::sys;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::Ordering;

#[derive(Debug, Clone, Serialize)]
pub struct RingInfo {
    pub path: String,
    pub layout: String,
    pub segment_bytes: u64,
    pub mode: String,
    pub slots: u64,
    pub slot_bytes: u32,
    pub symbols: u32,
    pub symbol_capacity: u32,
    pub symbol_names: Vec<String>,
    pub created_ns: u64,
    pub write_seq: u64,
    pub writer: WriterInfo,
    pub parked_readers: u32,
    pub readers: Vec<ReaderInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WriterInfo {
    pub epoch: u64,
    pub pid: u32,
    pub alive: bool,
    pub membarrier: bool,
    pub started_ns: u64,
    pub heartbeat_age_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReaderInfo {
    pub pid: u32,
    pub alive: bool,
    pub cursor: u64,
    pub lag: u64,
    pub received: u64,
    pub lost: u64,
    pub overruns: u64,
    pub parked: bool,
    pub updated_age_ms: f64,
}

/// Inspect the ring at `path` (at most `max_symbols` symbol names are listed).
pub fn inspect(path: &Path, max_symbols: usize) -> Result<RingInfo, RingError> {
    let seg = Segment::open(path, Access::Inspect)?;
    let h = seg.header();
    let now = sys::realtime_ns();
    let age_ms = |ns: u64| (now - ns as i64).max(0) as f64 / 1e6;
    let write_seq = h.write_seq.load(Ordering::Acquire);
    let pid = h.writer_pid.load(Ordering::Relaxed);
    let epoch = h.writer_epoch.load(Ordering::Acquire);
    let heartbeat = h.writer_heartbeat_ns.load(Ordering::Relaxed);
    let control = seg.control_view();
    let readers = control
        .readers
        .iter()
        .filter_map(|entry| {
            let pid = entry.pid.load(Ordering::Acquire);
            if pid == 0 {
                return None;
            }
            let cursor = entry.cursor.load(Ordering::Relaxed);
            Some(ReaderInfo {
                pid,
                alive: sys::process_alive(pid, entry.start_ticks.load(Ordering::Relaxed)),
                cursor,
                lag: write_seq.saturating_sub(cursor),
                received: entry.received.load(Ordering::Relaxed),
                lost: entry.lost.load(Ordering::Relaxed),
                overruns: entry.overruns.load(Ordering::Relaxed),
                parked: entry.parked.load(Ordering::Relaxed) != 0,
                updated_age_ms: age_ms(entry.updated_ns.load(Ordering::Relaxed)),
            })
        })
        .collect();
    let symbols = seg.symbol_count();
    Ok(RingInfo {
        path: path.display().to_string(),
        layout: format!("{}.{}", h.layout_major, h.layout_minor),
        segment_bytes: h.segment_size,
        mode: format!("{:o}", h.mode),
        slots: h.slot_count,
        slot_bytes: h.slot_size,
        symbols,
        symbol_capacity: h.symbol_capacity,
        symbol_names: (0..symbols.min(max_symbols as u32))
            .filter_map(|id| seg.symbol_name(id).map(str::to_owned))
            .collect(),
        created_ns: h.created_ns,
        write_seq,
        writer: WriterInfo {
            epoch,
            pid,
            alive: seg.writer_running(),
            membarrier: h.writer_flags.load(Ordering::Relaxed) & WRITER_MEMBARRIER != 0,
            started_ns: h.writer_started_ns.load(Ordering::Relaxed),
            heartbeat_age_ms: (epoch > 0).then(|| age_ms(heartbeat)),
        },
        parked_readers: control.doorbell.parked.load(Ordering::Relaxed),
        readers,
    })
}

/// What `remove` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// The writer that was still running when `force` removed the ring.
    pub live_writer: Option<u32>,
}

/// Remove the ring at `path`. Refuses a file that is not a ring, and a ring whose writer is
/// alive, unless `force`. A damaged ring (truncated, other version) can always be removed.
pub fn remove(path: &Path, force: bool) -> Result<Removed, RingError> {
    let mut live_writer = None;
    // Held across the unlink, so a writer cannot start on the ring between our check and it.
    let mut _lock = None;
    match Segment::open(path, Access::Inspect) {
        Ok(seg) => {
            let h = seg.header();
            let pid = h.writer_pid.load(Ordering::Relaxed);
            let file =
                std::fs::File::open(path).map_err(|e| RingError::io("opening ring", path, e))?;
            let free = sys::try_lock_exclusive(&file)
                .map_err(|e| RingError::io("locking ring", path, e))?;
            _lock = Some(file);
            if !free {
                if !force {
                    return Err(RingError::WriterBusy {
                        path: path.to_owned(),
                        pid,
                    });
                }
                live_writer = Some(pid);
            }
        }
        Err(RingError::NotARing { .. } | RingError::OtherUser { .. }) if force => {}
        Err(
            RingError::Truncated { .. }
            | RingError::Version { .. }
            | RingError::NotInitialised { .. },
        ) => {}
        Err(e) => return Err(e),
    }
    std::fs::remove_file(path).map_err(|e| RingError::io("removing ring", path, e))?;
    Ok(Removed { live_writer })
}
