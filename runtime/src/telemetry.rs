//! Typed telemetry: every event tickloop can report to the outside world is a variant of one
//! enum, [`Telemetry`], written as JSON lines by a bounded [`TelemetrySink`].
//!
//! It owns the telemetry files (`<dir>/<prefix>.jsonl` and the rotated
//! `<dir>/<prefix>-1.jsonl` .. `<prefix>-<keep_files>.jsonl`, newest first), one preallocated
//! batch buffer, and the counters behind [`TelemetryStats`].
//!
//! It must never:
//! - read a clock: both stamps of a line (`at_ns`, `unix_ns`) are handed to
//!   [`TelemetrySink::emit`] by the loop, from its driver;
//! - block the loop longer than one bounded write: [`TelemetrySink::emit`] only serializes
//!   into the buffer (no IO); [`TelemetrySink::flush`], called from the loop's housekeeping
//!   tick, issues one write of at most `buffer_bytes` (plus, at most, a rotation: renames and
//!   an open). It never fsyncs, except in [`TelemetrySink::finish`] at shutdown;
//! - propagate an error to its caller after [`TelemetrySink::open`]: a full disk, a removed
//!   or unwritable directory, an I/O error drop the batch, count the events lost, and mark
//!   the sink `degraded` (with the reason) until a later write succeeds; the first batch that
//!   succeeds starts with a [`Telemetry::Dropped`] line saying how many were lost. Order flow
//!   never sees a telemetry failure;
//! - allocate in `emit` or `flush`: events are `Copy` and fixed-size ([`Text`] instead of
//!   `String`), serialized by serde_json straight into the spare capacity of the buffer
//!   allocated in `open`; rotated file names are built in `open` too. (`stats` allocates: it
//!   is for status, not for the loop's hot path.)
//! - leave a partial line in a file: a write that lands only partly (ENOSPC halfway through a
//!   batch) is cut back to its last whole line with `ftruncate`, the whole lines that landed
//!   count as written, the rest of the batch as dropped. Keeping the remainder for the next
//!   tick was rejected: on a full disk the retry fails too, and meanwhile the buffer would be
//!   full of old events and newer ones dropped at emit. Dropping the rest of the batch keeps
//!   the accounting exact (`emitted = written + dropped + buffered`) and the buffer free.
//!
//! A missing variant is a compile error, not a crash in the order path: the schema is fixed
//! here, including variants for the order layer and adapters that come later.
//!
//! Line format (one JSON object per line, keys in this order):
//! `{"at_ns":<loop clock>,"unix_ns":<wall clock>,"kind":"<snake_case variant>",<fields>}`, e.g.
//! `{"at_ns":1200,"unix_ns":1754000000000000000,"kind":"timer_overrun","timer":3,"late_ns":80000,"took_ns":1000,"budget_ns":50000,"skipped":0}`.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use tickloop_app::telemetry::Telemetry;

use crate::limits::DROPPED_RESERVE;
pub use crate::limits::{MAX_BUFFER, MAX_KEEP_FILES, MAX_LINE, MIN_BUFFER};

/// One JSON line: the two clocks, then the event's own fields.
#[derive(Serialize)]
struct Line<'a> {
    at_ns: u64,
    unix_ns: i64,
    #[serde(flatten)]
    event: &'a Telemetry,
}

/// An `io::Write` over a Vec's spare capacity up to `limit` bytes: it refuses (without
/// allocating) what does not fit, so serde_json can never grow the Vec.
struct Spare<'a> {
    buf: &'a mut Vec<u8>,
    limit: usize,
}

impl Write for Spare<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.len() > self.limit - self.buf.len() {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An `io::Write` into a fixed array.
struct Slice<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Write for Slice<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.len() > self.buf.len() - self.len {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.buf[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Serialize one line (newline included) into `out`; the length, or None if it did not fit
/// (impossible for `out.len() >= MAX_LINE`).
fn encode_line(out: &mut [u8], at_ns: u64, unix_ns: i64, event: &Telemetry) -> Option<usize> {
    let mut w = Slice { buf: out, len: 0 };
    let line = Line {
        at_ns,
        unix_ns,
        event,
    };
    serde_json::to_writer(&mut w, &line).ok()?;
    w.write_all(b"\n").ok()?;
    Some(w.len)
}

/// Where and how telemetry is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The directory of the telemetry files; `None` turns telemetry off.
    pub dir: Option<PathBuf>,
    /// Files are `<prefix>.jsonl` (current) and `<prefix>-<n>.jsonl` (rotated, 1 = newest).
    pub file_prefix: String,
    /// A file is rotated before a batch would make it larger than this. At least
    /// `buffer_bytes`, so a batch always fits in a new file.
    pub rotate_bytes: u64,
    /// Rotated files kept (0: the current file is removed at rotation).
    pub keep_files: u32,
    /// The in-memory batch, written out on every flush. Events that do not fit before the
    /// next flush are dropped and counted.
    pub buffer_bytes: u32,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            dir: None,
            file_prefix: "telemetry".into(),
            rotate_bytes: 64 << 20,
            keep_files: 8,
            buffer_bytes: 256 << 10,
        }
    }
}

impl TelemetryConfig {
    /// Check the limits and the prefix (the directory is checked by [`TelemetrySink::open`]).
    pub fn validate(&self) -> Result<(), TelemetryError> {
        let bad = |field: &'static str, value: String, fix: &'static str| {
            Err(TelemetryError::Config { field, value, fix })
        };
        let p = &self.file_prefix;
        if p.is_empty()
            || p.len() > 64
            || p.starts_with('.')
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return bad(
                "file_prefix",
                format!("{p:?}"),
                "use 1 to 64 characters of A-Z a-z 0-9 . _ - not starting with a dot",
            );
        }
        if !(MIN_BUFFER..=MAX_BUFFER).contains(&self.buffer_bytes) {
            return bad(
                "buffer_bytes",
                self.buffer_bytes.to_string(),
                "use 16384 (16 KiB) to 67108864 (64 MiB)",
            );
        }
        if self.rotate_bytes < self.buffer_bytes as u64 || self.rotate_bytes > 1 << 40 {
            return bad(
                "rotate_bytes",
                self.rotate_bytes.to_string(),
                "use at least buffer_bytes (a batch must fit in a new file) and at most 1 TiB",
            );
        }
        if self.keep_files > MAX_KEEP_FILES {
            return bad("keep_files", self.keep_files.to_string(), "use 0 to 1000");
        }
        Ok(())
    }
}

/// What can stop telemetry from starting. After [`TelemetrySink::open`] nothing is an error.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry: {field} = {value} is invalid: {fix}")]
    Config {
        field: &'static str,
        value: String,
        fix: &'static str,
    },
    #[error("telemetry directory {}: does not exist: create it (mkdir -p {}) or set the telemetry dir to an existing directory", dir.display(), dir.display())]
    NoDirectory { dir: PathBuf },
    #[error("telemetry directory {}: is not a directory: set the telemetry dir to a directory", dir.display())]
    NotDirectory { dir: PathBuf },
    #[error("telemetry directory {}: cannot create a file in it: {cause}: make it writable by this user or set the telemetry dir to a writable directory", dir.display())]
    Unwritable { dir: PathBuf, cause: io::Error },
    #[error("telemetry file {}: cannot open it for writing: {cause}: remove or fix it, or choose another file_prefix", path.display())]
    Open { path: PathBuf, cause: io::Error },
}

/// The sink's counters and state, for status and the run's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TelemetryStats {
    /// False when no directory was configured.
    pub enabled: bool,
    /// `emit` calls (while enabled).
    pub emitted: u64,
    /// Events written to a file (the `dropped` lines not counted).
    pub written: u64,
    /// Events lost: buffer full at `emit`, or their batch failed to write.
    pub dropped: u64,
    /// Events in the buffer, waiting for the next flush (`emitted = written + dropped + buffered`).
    pub buffered: u64,
    /// Why telemetry is degraded (the last write failed), `None` when healthy or off.
    pub degraded: Option<String>,
    /// The current file.
    pub file: PathBuf,
    /// Rotations since `open`.
    pub rotations: u64,
    /// Bytes written since `open`, all files together.
    pub bytes_written: u64,
}

impl TelemetryStats {
    /// One line for status: `telemetry ok`, `telemetry off`, or `telemetry degraded: <why>`.
    pub fn summary(&self) -> String {
        match (&self.degraded, self.enabled) {
            (_, false) => "telemetry off".into(),
            (None, true) => format!(
                "telemetry ok: {} events written, {} dropped, to {}",
                self.written,
                self.dropped,
                self.file.display()
            ),
            (Some(why), true) => format!(
                "telemetry degraded: {why}; {} events dropped so far",
                self.dropped
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultOp {
    Open,
    Write,
    Cut,
    Rotate,
    Sync,
}

/// The last failure: what was being done and the errno (0: a write that made no progress).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fault {
    op: FaultOp,
    errno: i32,
}

impl Fault {
    fn new(op: FaultOp, e: &io::Error) -> Fault {
        Fault {
            op,
            errno: e.raw_os_error().unwrap_or(0),
        }
    }
}

/// Writes [`Telemetry`] as JSON lines: `emit` into a bounded buffer, `flush` from the loop's
/// tick. See the module documentation for what it guarantees.
pub struct TelemetrySink {
    active: Option<Active>,
    emitted: u64,
    written: u64,
    dropped: u64,
}

/// An enabled sink's files and buffer.
struct Active {
    dir: PathBuf,
    current: PathBuf,
    /// `<prefix>-1.jsonl` .. `<prefix>-<keep_files>.jsonl`.
    old: Vec<PathBuf>,
    rotate_bytes: u64,
    /// `DROPPED_RESERVE` bytes, then the buffered lines; never more than `limit` bytes.
    buf: Vec<u8>,
    limit: usize,
    /// Events in `buf`.
    events: u64,
    file: Option<File>,
    /// (st_dev, st_ino) of `file`, to notice the path being removed or replaced.
    id: (u64, u64),
    /// Bytes of whole lines in `file`.
    file_len: u64,
    /// A partial write could not be cut back yet: cut the file to `file_len` first.
    needs_cut: bool,
    /// Events lost since the last successful write (the next `dropped` line's count).
    pending_dropped: u64,
    /// The clocks of the most recent lost event.
    drop_stamp: (u64, i64),
    /// The clocks of the most recent `emit`.
    last_stamp: (u64, i64),
    fault: Option<Fault>,
    rotations: u64,
    bytes_written: u64,
}

impl TelemetrySink {
    /// A sink that does nothing (telemetry off).
    pub fn off() -> TelemetrySink {
        TelemetrySink {
            active: None,
            emitted: 0,
            written: 0,
            dropped: 0,
        }
    }

    /// Validate the configuration and the directory (it exists, is a directory, and a probe
    /// file can be created, written and removed in it), open the current file (appending to
    /// it if it ends on a whole line, rotating it away otherwise) and allocate the buffer.
    /// `dir: None` gives a sink that is off.
    pub fn open(config: &TelemetryConfig) -> Result<TelemetrySink, TelemetryError> {
        config.validate()?;
        let Some(dir) = &config.dir else {
            return Ok(TelemetrySink::off());
        };
        match fs::metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TelemetryError::NoDirectory { dir: dir.clone() })
            }
            Err(cause) => {
                return Err(TelemetryError::Unwritable {
                    dir: dir.clone(),
                    cause,
                })
            }
            Ok(m) if !m.is_dir() => return Err(TelemetryError::NotDirectory { dir: dir.clone() }),
            Ok(_) => {}
        }
        probe(dir, &config.file_prefix).map_err(|cause| TelemetryError::Unwritable {
            dir: dir.clone(),
            cause,
        })?;
        let prefix = &config.file_prefix;
        let current = dir.join(format!("{prefix}.jsonl"));
        let old = (1..=config.keep_files)
            .map(|n| dir.join(format!("{prefix}-{n}.jsonl")))
            .collect();
        let limit = config.buffer_bytes as usize;
        let mut buf = Vec::with_capacity(limit);
        buf.resize(DROPPED_RESERVE, 0);
        let mut active = Active {
            dir: dir.clone(),
            current,
            old,
            rotate_bytes: config.rotate_bytes,
            buf,
            limit,
            events: 0,
            file: None,
            id: (0, 0),
            file_len: 0,
            needs_cut: false,
            pending_dropped: 0,
            drop_stamp: (0, 0),
            last_stamp: (0, 0),
            fault: None,
            rotations: 0,
            bytes_written: 0,
        };
        active.open_file().map_err(|e| TelemetryError::Open {
            path: active.current.clone(),
            cause: io::Error::from_raw_os_error(e.errno),
        })?;
        Ok(TelemetrySink {
            active: Some(active),
            emitted: 0,
            written: 0,
            dropped: 0,
        })
    }

    /// Touch every page of the buffer now, so `emit` never page-faults.
    pub fn prefault(&mut self) {
        if let Some(a) = &mut self.active {
            for byte in a.buf.spare_capacity_mut() {
                byte.write(0);
            }
        }
    }

    /// Serialize `event` into the bounded buffer, stamped with the loop's clock `at_ns` and
    /// the wall clock `unix_ns` (the driver's, handed in: the sink reads no clock). Never allocates, never does IO, never fails: an event that
    /// does not fit in what is left of the buffer is dropped and counted.
    pub fn emit(&mut self, at_ns: u64, unix_ns: i64, event: &Telemetry) {
        let Some(a) = &mut self.active else {
            return;
        };
        self.emitted += 1;
        a.last_stamp = (at_ns, unix_ns);
        let start = a.buf.len();
        let room = a.limit - start;
        let fits = if room >= MAX_LINE {
            // The common case: straight into the buffer. It cannot fail, as no line is longer
            // than MAX_LINE (serde_json's error would allocate; it never gets the chance).
            let line = Line {
                at_ns,
                unix_ns,
                event,
            };
            let mut w = Spare {
                buf: &mut a.buf,
                limit: a.limit,
            };
            let ok = serde_json::to_writer(&mut w, &line).is_ok() && w.write_all(b"\n").is_ok();
            if !ok {
                a.buf.truncate(start);
            }
            ok
        } else {
            // Near the end of the buffer: into the stack first, then copy if it fits.
            let mut scratch = [0u8; MAX_LINE];
            match encode_line(&mut scratch, at_ns, unix_ns, event) {
                Some(n) if n <= room => {
                    a.buf.extend_from_slice(&scratch[..n]);
                    true
                }
                _ => false,
            }
        };
        debug_assert!(a.buf.len() - start <= MAX_LINE);
        if fits {
            a.events += 1;
        } else {
            self.dropped += 1;
            a.pending_dropped += 1;
            a.drop_stamp = (at_ns, unix_ns);
        }
    }

    /// Write the buffer out: one write of at most `buffer_bytes`, after a `dropped` line if
    /// events were lost since the last successful write, rotating first if the file would
    /// grow past `rotate_bytes`, reopening first if the file was removed or replaced. A
    /// failure drops what did not land, counts it, and marks the sink degraded; the next
    /// flush tries again. Never allocates, never returns an error.
    pub fn flush(&mut self) {
        let Some(a) = &mut self.active else {
            return;
        };
        if a.events == 0 && a.pending_dropped == 0 {
            return;
        }
        let mut start = DROPPED_RESERVE;
        if a.pending_dropped > 0 {
            let mut line = [0u8; DROPPED_RESERVE];
            let dropped = Telemetry::Dropped {
                count: a.pending_dropped,
            };
            let n = encode_line(&mut line, a.drop_stamp.0, a.drop_stamp.1, &dropped)
                .expect("a dropped line fits in its reserve");
            start = DROPPED_RESERVE - n;
            a.buf[start..DROPPED_RESERVE].copy_from_slice(&line[..n]);
        }
        let dropped_line = DROPPED_RESERVE - start;
        match a.write_batch(start) {
            Ok(()) => {
                self.written += a.events;
                a.pending_dropped = 0;
                a.fault = None;
            }
            Err((fault, landed)) => {
                // `landed` bytes of whole lines made it: the dropped line first (if any and
                // if whole), then events.
                let newlines = a.buf[start..start + landed]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count() as u64;
                let mut landed_events = newlines;
                if dropped_line > 0 && landed >= dropped_line {
                    landed_events -= 1;
                    a.pending_dropped = 0;
                }
                let lost = a.events - landed_events;
                self.written += landed_events;
                self.dropped += lost;
                if lost > 0 {
                    a.pending_dropped += lost;
                    a.drop_stamp = a.last_stamp;
                }
                a.fault = Some(fault);
            }
        }
        a.buf.truncate(DROPPED_RESERVE);
        a.events = 0;
    }

    /// At shutdown: flush, then fdatasync the current file. A failure is kept in the stats.
    pub fn finish(&mut self) {
        self.flush();
        if let Some(a) = &mut self.active {
            if a.fault.is_none() {
                if let Some(file) = &a.file {
                    if let Err(e) = file.sync_data() {
                        a.fault = Some(Fault::new(FaultOp::Sync, &e));
                    }
                }
            }
        }
    }

    /// Events emitted, and dropped, so far (no allocation, unlike [`TelemetrySink::stats`]).
    pub fn counts(&self) -> (u64, u64) {
        (self.emitted, self.dropped)
    }

    /// Whether the last write failed (see [`TelemetryStats::degraded`] for why).
    pub fn is_degraded(&self) -> bool {
        self.active.as_ref().is_some_and(|a| a.fault.is_some())
    }

    pub fn stats(&self) -> TelemetryStats {
        let (buffered, degraded, file, rotations, bytes_written) = match &self.active {
            None => (0, None, PathBuf::new(), 0, 0),
            Some(a) => (
                a.events,
                a.fault.map(|f| a.describe(f)),
                a.current.clone(),
                a.rotations,
                a.bytes_written,
            ),
        };
        TelemetryStats {
            enabled: self.active.is_some(),
            emitted: self.emitted,
            written: self.written,
            dropped: self.dropped,
            buffered,
            degraded,
            file,
            rotations,
            bytes_written,
        }
    }
}

impl Drop for TelemetrySink {
    /// Write out what is buffered (best effort, no fsync: call `finish` for that).
    fn drop(&mut self) {
        self.flush();
    }
}

/// Create, write and remove a file in `dir`, as rotation will need to.
fn probe(dir: &Path, prefix: &str) -> io::Result<()> {
    let path = dir.join(format!(".{prefix}.probe.{}", std::process::id()));
    let result = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(b"probe\n"));
    let removed = fs::remove_file(&path);
    result?;
    removed
}

impl Active {
    /// Open (or create) the current file for appending whole lines; a file that does not
    /// end on a whole line (a run killed mid-write) is rotated away first.
    fn open_file(&mut self) -> Result<(), Fault> {
        self.file = None;
        self.needs_cut = false;
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .open(&self.current)
            .map_err(|e| Fault::new(FaultOp::Open, &e))?;
        let meta = file.metadata().map_err(|e| Fault::new(FaultOp::Open, &e))?;
        let len = meta.len();
        if len > 0 {
            let mut last = [0u8; 1];
            let whole = matches!(file.read_at(&mut last, len - 1), Ok(1) if last[0] == b'\n');
            if !whole {
                drop(file);
                return self.rotate();
            }
        }
        self.id = (meta.dev(), meta.ino());
        self.file_len = len;
        self.file = Some(file);
        Ok(())
    }

    /// Shift `<prefix>-<n>` to `<prefix>-<n+1>` (the oldest is replaced), the current file to
    /// `<prefix>-1`, and start a new current file.
    fn rotate(&mut self) -> Result<(), Fault> {
        self.file = None;
        let ignore_missing = |r: io::Result<()>| match r {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Fault::new(FaultOp::Rotate, &e)),
            _ => Ok(()),
        };
        for n in (1..self.old.len()).rev() {
            ignore_missing(fs::rename(&self.old[n - 1], &self.old[n]))?;
        }
        match self.old.first() {
            Some(newest) => ignore_missing(fs::rename(&self.current, newest))?,
            None => ignore_missing(fs::remove_file(&self.current))?,
        }
        self.rotations += 1;
        self.open_file()
    }

    /// Is `file` still the file at `current`?
    fn file_is_current(&self) -> bool {
        self.file.is_some()
            && fs::metadata(&self.current).is_ok_and(|m| (m.dev(), m.ino()) == self.id)
    }

    /// Write `buf[start..]` at the end of the current file. On failure: the fault, and how
    /// many bytes of whole lines landed (the file is cut back to them).
    fn write_batch(&mut self, start: usize) -> Result<(), (Fault, usize)> {
        if !self.file_is_current() {
            self.open_file().map_err(|f| (f, 0))?;
        }
        if self.needs_cut {
            let file = self.file.as_ref().expect("opened above");
            file.set_len(self.file_len)
                .map_err(|e| (Fault::new(FaultOp::Cut, &e), 0))?;
            self.needs_cut = false;
        }
        let len = self.buf.len() - start;
        if self.file_len > 0 && self.file_len + len as u64 > self.rotate_bytes {
            self.rotate().map_err(|f| (f, 0))?;
        }
        let file = self.file.as_ref().expect("opened above");
        let bytes = &self.buf[start..];
        let mut done = 0;
        let mut fault = None;
        while done < len {
            match file.write_at(&bytes[done..], self.file_len + done as u64) {
                Ok(0) => {
                    fault = Some(Fault {
                        op: FaultOp::Write,
                        errno: 0,
                    });
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    fault = Some(Fault::new(FaultOp::Write, &e));
                    break;
                }
            }
        }
        let Some(fault) = fault else {
            self.file_len += len as u64;
            self.bytes_written += len as u64;
            return Ok(());
        };
        // Keep the whole lines that landed; cut off a partial one.
        let keep = bytes[..done]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if keep < done && file.set_len(self.file_len + keep as u64).is_err() {
            self.needs_cut = true;
        }
        self.file_len += keep as u64;
        self.bytes_written += keep as u64;
        Err((fault, keep))
    }

    /// Why the sink is degraded, in one line naming the cause and the fix.
    fn describe(&self, fault: Fault) -> String {
        let dir = self.dir.display();
        let current = self.current.display();
        let doing = match fault.op {
            FaultOp::Open => format!("opening {current}"),
            FaultOp::Write => format!("writing {current}"),
            FaultOp::Cut => format!("cutting a partial line off {current}"),
            FaultOp::Rotate => format!("rotating the files in {dir}"),
            FaultOp::Sync => format!("syncing {current}"),
        };
        let cause = match fault.errno {
            0 => "the write made no progress".to_string(),
            errno => io::Error::from_raw_os_error(errno).to_string(),
        };
        let what = match fault.errno {
            libc::ENOSPC => format!("the disk is full: free space in {dir}"),
            libc::EDQUOT => {
                format!("the disk quota is exhausted: free space in {dir} or raise the quota")
            }
            libc::EACCES | libc::EPERM => {
                format!("permission denied: make {dir} writable by this user")
            }
            libc::ENOENT => format!("the directory {dir} is gone: recreate it"),
            libc::EROFS => format!("the filesystem of {dir} is read-only: remount it read-write"),
            libc::EIO => format!("an I/O error: check the disk holding {dir}"),
            _ => "writing failed".to_string(),
        };
        format!("{what} ({doing}: {cause}); events are dropped and counted until a write succeeds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickloop_app::telemetry::{AdapterStateKind, StopCause, Text};
    use tickloop_app::venue::{Difference, FillFault, Side};

    fn line(event: &Telemetry, at_ns: u64, unix_ns: i64) -> String {
        let mut out = [0u8; MAX_LINE];
        let n = encode_line(&mut out, at_ns, unix_ns, event).expect("fits");
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    /// The order and fill events at their widest, for `every_variant_fits_in_max_line`.
    fn worst_order_events(f: f64, worst_text: Text) -> Vec<Telemetry> {
        vec![
            Telemetry::OrderSubmitted {
                order: u64::MAX,
                symbol: u32::MAX,
                side: Side::Sell,
                qty: f,
                price: Some(f),
            },
            Telemetry::OrderAccepted { order: u64::MAX },
            Telemetry::OrderRejected {
                order: u64::MAX,
                reason: worst_text,
            },
            Telemetry::OrderCancelled { order: u64::MAX },
            Telemetry::OrderTriggered { order: u64::MAX },
            Telemetry::OrderReplaced {
                order: u64::MAX,
                qty: f,
                limit: Some(f),
                stop: Some(f),
            },
            Telemetry::OrderRefused {
                order: u64::MAX,
                reason: worst_text,
            },
            Telemetry::Fill {
                order: u64::MAX,
                qty: f,
                price: f,
            },
            Telemetry::FillFault {
                adapter: u16::MAX,
                order: u64::MAX,
                fault: FillFault::BadQuantity,
                qty: f,
                price: f,
                remaining: f,
            },
            Telemetry::RiskDenied {
                symbol: u32::MAX,
                reason: worst_text,
            },
            Telemetry::OrderUnknown {
                order: u64::MAX,
                reason: worst_text,
            },
            Telemetry::Reconciled {
                adapter: u16::MAX,
                first: false,
                positions: u32::MAX,
                orders: u32::MAX,
                differences: u32::MAX,
                cash: f,
            },
            Telemetry::ReconcileDifference {
                adapter: u16::MAX,
                difference: Difference::OrderNotInEngine,
                symbol: u32::MAX,
                order: u64::MAX,
                engine: f,
                venue: f,
                adopted: true,
            },
        ]
    }

    /// The longest line each variant can make: every number at its widest, every text
    /// 96 control characters (escaped as \u00XX, six bytes each).
    #[test]
    fn every_variant_fits_in_max_line() {
        let worst_text = Text::new(&"\u{1}".repeat(200));
        assert_eq!(worst_text.len(), Text::CAPACITY);
        let worst_str: &'static str = Box::leak("\u{1}".repeat(500).into_boxed_str());
        let f = -1.2345678901234567e-300_f64;
        let mut all = vec![
            Telemetry::Started {
                pid: u32::MAX,
                version: worst_str,
                driver: worst_str,
                mode: worst_str,
            },
            Telemetry::Stopping {
                reason: StopCause::Signal(i32::MIN),
            },
            Telemetry::Stopped {
                events: u64::MAX,
                candles: u64::MAX,
            },
            Telemetry::ConfigApplied {
                generation: u64::MAX,
                restart_needed: u32::MAX,
            },
            Telemetry::ConfigRejected {
                generation_kept: u64::MAX,
                line: u32::MAX,
                reason: worst_text,
            },
            Telemetry::CandlesLost {
                source: u16::MAX,
                lost: u64::MAX,
            },
            Telemetry::NewWriter {
                source: u16::MAX,
                epoch: u64::MAX,
            },
            Telemetry::RingRemoved { source: u16::MAX },
            Telemetry::TimerOverrun {
                timer: u32::MAX,
                late_ns: u64::MAX,
                took_ns: u64::MAX,
                budget_ns: u64::MAX,
                skipped: u32::MAX,
            },
            Telemetry::AdapterState {
                adapter: u16::MAX,
                state: AdapterStateKind::Restarting,
            },
            Telemetry::AdapterDown {
                adapter: u16::MAX,
                cause: worst_text,
                status: worst_text,
                restart_in_ms: u32::MAX,
            },
            Telemetry::AdapterError {
                adapter: u16::MAX,
                reason: worst_text,
            },
            Telemetry::Dropped { count: u64::MAX },
        ];
        all.extend(worst_order_events(f, worst_text));
        for event in &all {
            let l = line(event, u64::MAX, i64::MIN);
            assert!(l.len() <= MAX_LINE, "{}: {} bytes", event.kind(), l.len());
            assert!(l.ends_with('\n') && !l[..l.len() - 1].contains('\n'));
        }
        let dropped = line(&Telemetry::Dropped { count: u64::MAX }, u64::MAX, i64::MIN);
        assert!(dropped.len() <= DROPPED_RESERVE, "{}", dropped.len());
    }

    #[test]
    fn text_truncates_at_a_char_boundary() {
        let s = "é".repeat(60); // 120 bytes
        let t = Text::new(&s);
        assert_eq!(t.len(), 96);
        assert_eq!(t.as_str(), "é".repeat(48));
        let t = Text::new(&format!("a{s}"));
        assert_eq!(t.len(), 95);
        let t = Text::from_fmt(format_args!("{}{}", "x".repeat(95), "éz"));
        assert_eq!(t.as_str(), "x".repeat(95));
        assert_eq!(
            Text::from_fmt(format_args!("{} {}", 1, "two")).as_str(),
            "1 two"
        );
    }

    #[test]
    fn line_format() {
        let l = line(
            &Telemetry::TimerOverrun {
                timer: 3,
                late_ns: 80_000,
                took_ns: 1_000,
                budget_ns: 50_000,
                skipped: 0,
            },
            1200,
            1_754_000_000_000_000_000,
        );
        assert_eq!(
            l,
            "{\"at_ns\":1200,\"unix_ns\":1754000000000000000,\"kind\":\"timer_overrun\",\"timer\":3,\"late_ns\":80000,\"took_ns\":1000,\"budget_ns\":50000,\"skipped\":0}\n"
        );
        let l = line(
            &Telemetry::Stopping {
                reason: StopCause::Signal(10),
            },
            1,
            2,
        );
        assert!(l.contains("\"reason\":\"signal 10\""), "{l}");
    }
}
