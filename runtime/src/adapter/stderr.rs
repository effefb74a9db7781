//! An adapter's stderr, as log lines: bytes are cut into lines of bounded length and logged
//! through `tracing` with the adapter's name, at most `lines_per_sec` a second (a token
//! bucket); the rest are counted and their number logged when logging resumes.
//!
//! It owns one line buffer, allocated in [`StderrLog::new`]. It never does IO itself (the
//! host reads the pipe and hands it bytes), never reads a clock (it is given `now`), never
//! allocates per line (a line that is valid UTF-8 is logged as it is; an invalid one is shown
//! lossily, which copies) and never keeps more than one line.

use tickloop_app::clock::{Nanos, SECONDS};

pub struct StderrLog {
    line: Box<[u8]>,
    len: usize,
    /// The current line passed the limit; the rest of it is dropped.
    cut: bool,
    rate: u64,
    /// Token bucket in line-nanoseconds: one line costs `SECONDS`.
    tokens: u64,
    last: Nanos,
    suppressed: u64,
    pub lines: u64,
    pub suppressed_total: u64,
}

impl StderrLog {
    pub fn new(line_bytes: u32, lines_per_sec: u32, now: Nanos) -> StderrLog {
        let rate = lines_per_sec as u64;
        StderrLog {
            line: vec![0u8; line_bytes as usize].into_boxed_slice(),
            len: 0,
            cut: false,
            rate,
            tokens: rate * SECONDS,
            last: now,
            suppressed: 0,
            lines: 0,
            suppressed_total: 0,
        }
    }

    /// Bytes read from the adapter's stderr.
    pub fn feed(&mut self, adapter: &str, mut bytes: &[u8], now: Nanos) {
        while !bytes.is_empty() {
            let (part, newline) = match bytes.iter().position(|&b| b == b'\n') {
                Some(at) => (&bytes[..at], true),
                None => (bytes, false),
            };
            let room = self.line.len() - self.len;
            if part.len() > room {
                self.cut = true;
            }
            let take = part.len().min(room);
            self.line[self.len..self.len + take].copy_from_slice(&part[..take]);
            self.len += take;
            if newline {
                self.emit(adapter, now);
                bytes = &bytes[part.len() + 1..];
            } else {
                bytes = &[];
            }
        }
    }

    /// Log what is left of an unfinished line (the process ended).
    pub fn finish(&mut self, adapter: &str, now: Nanos) {
        if self.len > 0 || self.cut {
            self.emit(adapter, now);
        }
        self.report_suppressed(adapter);
    }

    fn emit(&mut self, adapter: &str, now: Nanos) {
        self.lines += 1;
        let elapsed = now.saturating_sub(self.last).min(SECONDS);
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate * SECONDS);
        if self.tokens >= SECONDS {
            self.tokens -= SECONDS;
            self.report_suppressed(adapter);
            let mut text = &self.line[..self.len];
            if text.last() == Some(&b'\r') {
                text = &text[..text.len() - 1];
            }
            let text = String::from_utf8_lossy(text);
            if self.cut {
                tracing::info!(target: "tickloop::adapter::stderr", adapter, truncated = true, "{text}");
            } else {
                tracing::info!(target: "tickloop::adapter::stderr", adapter, "{text}");
            }
        } else {
            self.suppressed += 1;
            self.suppressed_total += 1;
        }
        self.len = 0;
        self.cut = false;
    }

    fn report_suppressed(&mut self, adapter: &str) {
        if self.suppressed > 0 {
            tracing::warn!(
                target: "tickloop::adapter::stderr",
                adapter,
                suppressed = self.suppressed,
                "{} stderr lines not logged (over stderr_lines_per_sec)",
                self.suppressed
            );
            self.suppressed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_at_the_limit_and_counted() {
        let mut log = StderrLog::new(8, 1000, 0);
        log.feed("a", b"short\nthis line is far too long\nx", 0);
        assert_eq!(log.lines, 2);
        assert_eq!(log.len, 1);
        log.feed("a", b"yz\n", 0);
        assert_eq!(log.lines, 3);
        log.finish("a", 0);
        assert_eq!(log.lines, 3);
    }

    #[test]
    fn the_rate_limit_suppresses_and_refills() {
        let mut log = StderrLog::new(64, 10, 0);
        for _ in 0..100 {
            log.feed("a", b"line\n", 0);
        }
        assert_eq!(log.suppressed_total, 90);
        for _ in 0..100 {
            log.feed("a", b"line\n", SECONDS / 2);
        }
        assert_eq!(log.suppressed_total, 90 + 95);
    }
}
