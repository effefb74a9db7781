//! The journal: every input event of a run, and every action the app answered with, as
//! length-framed postcard records after a header (format version, build version, config
//! fingerprint, the app's name and config). `replay` feeds the inputs through the app again
//! and names the first action that differs.
//!
//! Writing never allocates after `create` (records are encoded into fixed buffers) and never
//! stops the loop: a write error is counted, reported, and recording stops.
//!
//! File layout: the 8 bytes `TICKJRNL`, a little-endian u16 format version, then frames of a
//! little-endian u32 length and that many postcard bytes: one [`JournalHeader`] frame, then
//! [`Record`] frames, ending with [`Record::End`] when the run stopped cleanly.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use tickloop_app::{Action, Event};

pub const MAGIC: &[u8; 8] = b"TICKJRNL";
pub const FORMAT_VERSION: u16 = 5;
pub use crate::limits::MAX_FRAME;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalHeader {
    /// The tickloop version that recorded it.
    pub build: String,
    /// FNV-1a of the loop's and the app's configuration.
    pub config_fingerprint: u64,
    /// The program that recorded it: `tickloop`, or a user's binary built on the library.
    pub program: String,
    /// Which app ran ([`tickloop_app::App::name`]) and its configuration (postcard bytes).
    pub app: String,
    pub app_config: Vec<u8>,
    /// The loop's limit of actions per event (the app sees the same limit in replay).
    pub actions_per_event: u32,
    /// The driver that ran (for information: replay works on any).
    pub driver: String,
    /// Wall-clock start, ns since the Unix epoch (for information).
    pub started_unix_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record<O> {
    Input(Event),
    Output(Action<O>),
    /// The app was offered a new configuration (postcard bytes) before the next input;
    /// `accepted` is what [`tickloop_app::App::reconfigure`] answered.
    AppConfig {
        generation: u64,
        config: Vec<u8>,
        accepted: bool,
    },
    /// The run stopped cleanly after this many inputs.
    End {
        inputs: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {}: directory {} does not exist: create it or choose another --journal path", path.display(), dir.display())]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("journal {}: {} already exists: move it away or choose another path (journals are never overwritten; in a config file, a path with {{epoch}} in it is a new file every start)", path.display(), path.display())]
    Exists { path: PathBuf },
    #[error("journal {}: cannot create it: {cause} (is the directory {} writable by this user?)", path.display(), dir.display())]
    Create {
        path: PathBuf,
        dir: PathBuf,
        cause: io::Error,
    },
    #[error("journal {}: cannot read it: {cause}", path.display())]
    Open { path: PathBuf, cause: io::Error },
    #[error("journal {}: not a tickloop journal (no TICKJRNL header)", path.display())]
    NotJournal { path: PathBuf },
    #[error("journal {}: format version {found}, but this tickloop reads version {FORMAT_VERSION}: replay it with the tickloop that recorded it", path.display())]
    Version { path: PathBuf, found: u16 },
    #[error("journal {}: record {index} at byte {offset} is damaged: {why}", path.display())]
    Damaged {
        path: PathBuf,
        index: u64,
        offset: u64,
        why: String,
    },
    #[error("journal {}: write failed: {cause}", path.display())]
    Write { path: PathBuf, cause: io::Error },
}

/// Records a run. Frames go into a fixed buffer that is written out when it fills, on
/// [`JournalWriter::flush`] (the loop calls it on its housekeeping tick) and at the end.
pub struct JournalWriter {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// Buffered bytes after which the next input first writes the buffer out.
    chunk: usize,
    /// Bytes written to the file so far (all of them whole frames).
    written: u64,
    scratch: Vec<u8>,
    records: u64,
    inputs: u64,
    /// Records not written because writing failed or one was larger than [`MAX_FRAME`].
    dropped: u64,
    failed: Option<String>,
}

impl JournalWriter {
    /// Create a new journal (never overwrites). It is written out in pieces of about
    /// `buffer` bytes; twice that (and room for a few records) is allocated now.
    pub fn create(
        path: &Path,
        header: &JournalHeader,
        buffer: usize,
    ) -> Result<JournalWriter, JournalError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(JournalError::NoDirectory {
                path: path.into(),
                dir,
            });
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|cause| match cause.kind() {
                io::ErrorKind::AlreadyExists => JournalError::Exists { path: path.into() },
                _ => JournalError::Create {
                    path: path.into(),
                    dir: dir.clone(),
                    cause,
                },
            })?;
        let mut writer = JournalWriter {
            path: path.into(),
            file,
            buf: Vec::with_capacity(2 * buffer + 4 * (MAX_FRAME + 4)),
            chunk: buffer,
            written: 0,
            scratch: vec![0; MAX_FRAME],
            records: 0,
            inputs: 0,
            dropped: 0,
            failed: None,
        };
        writer.buf.extend_from_slice(MAGIC);
        writer.buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let bytes = postcard::to_allocvec(header).expect("a header always serializes");
        writer
            .buf
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        writer.buf.extend_from_slice(&bytes);
        // Fail now, before the loop starts, if the file cannot be written at all.
        writer.flush();
        if let Some(why) = writer.failed.take() {
            let _ = std::fs::remove_file(path);
            return Err(JournalError::Write {
                path: path.into(),
                cause: io::Error::other(why),
            });
        }
        Ok(writer)
    }

    /// Touch every page of the buffer now, so recording never page-faults.
    pub fn prefault(&mut self) {
        for byte in self.buf.spare_capacity_mut() {
            byte.write(0);
        }
        self.scratch.fill(0);
    }

    pub fn record<O: Serialize>(&mut self, record: &Record<O>) {
        if self.failed.is_some() {
            self.dropped += 1;
            return;
        }
        let len = match postcard::to_slice(record, &mut self.scratch) {
            Ok(bytes) => bytes.len(),
            Err(e) => {
                // A journal with a hole would replay as a divergence: stop recording instead.
                self.failed = Some(format!(
                    "a record does not fit in {MAX_FRAME} bytes ({e}); the journal stops here"
                ));
                self.dropped += 1;
                return;
            }
        };
        // Write out between inputs, so a run that is killed leaves whole inputs with all their
        // actions; only a record that does not fit at all forces a write mid-input.
        let is_input = matches!(record, Record::Input(_));
        let starts_group = is_input || matches!(record, Record::AppConfig { .. });
        if (starts_group && self.buf.len() >= self.chunk)
            || self.buf.len() + 4 + len > self.buf.capacity()
        {
            self.flush();
            if self.failed.is_some() {
                self.dropped += 1;
                return;
            }
        }
        self.buf.extend_from_slice(&(len as u32).to_le_bytes());
        self.buf.extend_from_slice(&self.scratch[..len]);
        self.records += 1;
        if is_input {
            self.inputs += 1;
        }
    }

    /// Write out what is buffered. On failure recording stops; see [`JournalWriter::failure`].
    pub fn flush(&mut self) {
        if self.buf.is_empty() || self.failed.is_some() {
            return;
        }
        match self.file.write_all(&self.buf) {
            Ok(()) => self.written += self.buf.len() as u64,
            Err(e) => {
                self.failed = Some(format!(
                    "{e}{}",
                    if e.raw_os_error() == Some(libc::ENOSPC) {
                        " (the disk is full: free space; the journal stops here)"
                    } else {
                        ""
                    }
                ));
                // Cut the part of this write that landed back off, so the journal ends on a
                // whole input (writes start between inputs) rather than inside a record.
                let _ = self.file.set_len(self.written);
                self.dropped += self.buf_records();
            }
        }
        self.buf.clear();
    }

    fn buf_records(&self) -> u64 {
        let mut n = 0;
        let mut at = 0;
        while at + 4 <= self.buf.len() {
            let len = u32::from_le_bytes(self.buf[at..at + 4].try_into().unwrap()) as usize;
            at += 4 + len;
            n += 1;
        }
        n
    }

    /// Record the end marker, write everything out and fsync. A failure is also kept in
    /// [`JournalWriter::failure`].
    pub fn finish(&mut self) -> Result<(), JournalError> {
        let end: Record<()> = Record::End {
            inputs: self.inputs,
        };
        self.record(&end);
        self.flush();
        if self.failed.is_none() {
            if let Err(e) = self.file.sync_all() {
                self.failed = Some(format!("fsync: {e}"));
            }
        }
        match &self.failed {
            None => Ok(()),
            Some(why) => Err(JournalError::Write {
                path: self.path.clone(),
                cause: io::Error::other(why.clone()),
            }),
        }
    }

    pub fn records(&self) -> u64 {
        self.records
    }
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads a journal back.
pub struct JournalReader {
    path: PathBuf,
    input: BufReader<File>,
    header: JournalHeader,
    offset: u64,
    index: u64,
    frame: Vec<u8>,
}

impl JournalReader {
    pub fn open(path: &Path) -> Result<JournalReader, JournalError> {
        let file = File::open(path).map_err(|cause| JournalError::Open {
            path: path.into(),
            cause,
        })?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(JournalError::Open {
                path: path.into(),
                cause: io::Error::other("it is a directory; name the journal file in it"),
            });
        }
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut start = [0u8; 10];
        if input.read_exact(&mut start).is_err() || &start[..8] != MAGIC {
            return Err(JournalError::NotJournal { path: path.into() });
        }
        let found = u16::from_le_bytes([start[8], start[9]]);
        if found != FORMAT_VERSION {
            return Err(JournalError::Version {
                path: path.into(),
                found,
            });
        }
        let mut reader = JournalReader {
            path: path.into(),
            input,
            header: JournalHeader {
                build: String::new(),
                config_fingerprint: 0,
                program: String::new(),
                app: String::new(),
                app_config: Vec::new(),
                actions_per_event: 0,
                driver: String::new(),
                started_unix_ns: 0,
            },
            offset: 10,
            index: 0,
            frame: Vec::with_capacity(MAX_FRAME),
        };
        match reader.next_frame()? {
            Some(()) => {}
            None => return Err(reader.damaged("the header is missing".into())),
        }
        reader.header = postcard::from_bytes(&reader.frame)
            .map_err(|e| reader.damaged(format!("the header does not decode: {e}")))?;
        let limit = reader.header.actions_per_event;
        if !(1..=1 << 16).contains(&limit) {
            return Err(reader.damaged(format!(
                "the header's actions_per_event = {limit} is outside 1..=65536"
            )));
        }
        reader.index = 0;
        Ok(reader)
    }

    pub fn header(&self) -> &JournalHeader {
        &self.header
    }

    fn damaged(&self, why: String) -> JournalError {
        JournalError::Damaged {
            path: self.path.clone(),
            index: self.index,
            offset: self.offset,
            why,
        }
    }

    /// Read the next frame into `self.frame`; None at a clean end of file.
    fn next_frame(&mut self) -> Result<Option<()>, JournalError> {
        let mut len = [0u8; 4];
        match read_full(&mut self.input, &mut len) {
            Ok(0) => return Ok(None),
            Ok(4) => {}
            Ok(n) => {
                return Err(self.damaged(format!(
                    "the file ends inside a frame length ({n} of 4 bytes): the run was cut off"
                )))
            }
            Err(cause) => {
                return Err(JournalError::Open {
                    path: self.path.clone(),
                    cause,
                })
            }
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME.max(1 << 20) {
            return Err(self.damaged(format!("frame length {len} is impossible")));
        }
        self.frame.resize(len, 0);
        match read_full(&mut self.input, &mut self.frame) {
            Ok(n) if n == len => {}
            Ok(n) => {
                return Err(self.damaged(format!(
                    "the file ends inside a record ({n} of {len} bytes): the run was cut off"
                )))
            }
            Err(cause) => {
                return Err(JournalError::Open {
                    path: self.path.clone(),
                    cause,
                })
            }
        }
        self.offset += 4 + len as u64;
        self.index += 1;
        Ok(Some(()))
    }

    /// The next record, None at the end of the file.
    pub fn next_record<O: DeserializeOwned>(&mut self) -> Result<Option<Record<O>>, JournalError> {
        let start = self.offset;
        if self.next_frame()?.is_none() {
            return Ok(None);
        }
        postcard::from_bytes(&self.frame).map(Some).map_err(|e| {
            self.offset = start;
            self.index -= 1;
            self.damaged(format!("it does not decode as this app's record: {e}"))
        })
    }

    /// Records read so far (the header not counted).
    pub fn index(&self) -> u64 {
        self.index
    }
}

fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
