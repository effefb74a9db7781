//! The bounds on what one data file can make the loader hold: a reader that passes a file's
//! bytes through unchanged and stops at the first byte past a bound, at most `max_bytes` in all
//! and, for CSV text, at most `max_line` in one row.
//!
//! A row ends where the `csv` crate's parser ends a record: at `\r` or `\n` outside a quoted
//! field (the same state machine as `csv-core` with the loader's settings), so a quoted field
//! cannot carry an unbounded record past the bound, and the parser's record buffer never grows
//! beyond it. Past a bound the reader returns the bytes before it, then an [`Over`] inside an
//! `io::Error`, so a bad row earlier in the file is still the one reported.
//!
//! This module only counts: it never buffers, never allocates and never interprets a field.

use std::fmt;
use std::io::{self, Read};

/// A bound the file went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Over {
    /// A row of more than `limit` bytes; `line` is the line it starts on (1-based).
    Line { line: u64, limit: u64 },
    /// More than `limit` bytes in the file; `line` is where (text only).
    File { line: Option<u64>, limit: u64 },
}

impl fmt::Display for Over {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Over::Line { line, limit } => write!(f, "line {line} is longer than {limit} bytes"),
            Over::File { limit, .. } => write!(f, "the file is longer than {limit} bytes"),
        }
    }
}

impl std::error::Error for Over {}

/// Where the scanner is in a CSV record (`csv-core`'s states, reduced to what decides where a
/// record ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    /// Between records: terminators here are empty lines, skipped.
    Start,
    FieldStart,
    Field,
    Quoted,
    /// A quote inside a quoted field: the field's end, or the first of a doubled quote.
    QuoteInQuoted,
}

pub(crate) struct Bounded<R> {
    inner: R,
    max_bytes: u64,
    /// `None`: not text, no rows (DBN).
    max_line: Option<u64>,
    read: u64,
    /// The line of the next byte (1-based).
    line: u64,
    row_line: u64,
    row_len: u64,
    row: Row,
    over: Option<Over>,
}

impl<R: Read> Bounded<R> {
    pub fn new(inner: R, max_bytes: u64, max_line: Option<u64>) -> Bounded<R> {
        Bounded {
            inner,
            max_bytes,
            max_line,
            read: 0,
            line: 1,
            row_line: 1,
            row_len: 0,
            row: Row::Start,
            over: None,
        }
    }

    /// How many bytes of `bytes` are within the line bound (all of them, or up to the first
    /// byte past it, recorded in `self.over`).
    fn scan(&mut self, bytes: &[u8], max_line: u64) -> usize {
        let mut i = 0;
        while i < bytes.len() {
            // A run of bytes that change nothing but the row's length (found with memchr: most
            // of a row is one run, so the scan costs little next to parsing).
            let rest = &bytes[i..];
            let run = match self.row {
                Row::FieldStart | Row::Field => memchr::memchr3(b'\n', b'\r', b'"', rest),
                Row::Quoted => memchr::memchr2(b'"', b'\n', rest),
                Row::Start | Row::QuoteInQuoted => Some(0),
            }
            .unwrap_or(rest.len());
            if run > 0 {
                let room = max_line - self.row_len;
                if run as u64 > room {
                    self.over = Some(Over::Line {
                        line: self.row_line,
                        limit: max_line,
                    });
                    return i + room as usize;
                }
                self.row_len += run as u64;
                if self.row != Row::Quoted {
                    // No quote or line end in the run: only commas, which start fields.
                    self.row = if rest[run - 1] == b',' {
                        Row::FieldStart
                    } else {
                        Row::Field
                    };
                }
                i += run;
                continue;
            }
            // One byte that may start or end a row, open or close a quote, or end a line.
            let b = bytes[i];
            let term = b == b'\n' || b == b'\r';
            if self.row == Row::Start && !term {
                self.row = Row::FieldStart;
                self.row_line = self.line;
                self.row_len = 0;
            }
            if self.row != Row::Start {
                self.row = match (self.row, b) {
                    (Row::FieldStart, b'"') => Row::Quoted,
                    (Row::Quoted, b'"') => Row::QuoteInQuoted,
                    (Row::Quoted, _) => Row::Quoted,
                    (Row::QuoteInQuoted, b'"') => Row::Quoted,
                    (_, b',') => Row::FieldStart,
                    (_, b'\n' | b'\r') => Row::Start,
                    _ => Row::Field,
                };
                if self.row != Row::Start {
                    self.row_len += 1;
                    if self.row_len > max_line {
                        self.over = Some(Over::Line {
                            line: self.row_line,
                            limit: max_line,
                        });
                        return i;
                    }
                }
            }
            if b == b'\n' {
                self.line += 1;
            }
            i += 1;
        }
        bytes.len()
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(over) = self.over {
            return Err(io::Error::other(over));
        }
        let n = self.inner.read(buf)?;
        let room = self.max_bytes - self.read;
        let allowed = n.min(usize::try_from(room).unwrap_or(usize::MAX));
        let within = match self.max_line {
            Some(max_line) => self.scan(&buf[..allowed], max_line),
            None => allowed,
        };
        if self.over.is_none() && allowed < n {
            self.over = Some(Over::File {
                line: self.max_line.map(|_| self.line),
                limit: self.max_bytes,
            });
        }
        self.read += within as u64;
        match self.over {
            Some(over) if within == 0 => Err(io::Error::other(over)),
            _ => Ok(within),
        }
    }
}

/// The [`Over`] inside an error from a [`Bounded`] reader (through any reader or parser that
/// passes I/O errors on unchanged).
pub(crate) fn over_in(e: &io::Error) -> Option<Over> {
    e.get_ref()?.downcast_ref::<Over>().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read `text` through a bound in chunks of `chunk` bytes: what got through, and the bound.
    fn through(
        text: &[u8],
        max_bytes: u64,
        max_line: u64,
        chunk: usize,
    ) -> (Vec<u8>, Option<Over>) {
        let mut r = Bounded::new(text, max_bytes, Some(max_line));
        let mut out = Vec::new();
        let mut buf = vec![0; chunk];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return (out, None),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (out, Some(over_in(&e).expect("a bound"))),
            }
        }
    }

    #[test]
    fn rows_within_the_bound_pass_unchanged() {
        let text = b"a,b\n12,34\r\n\n\n56,78\n";
        for chunk in [1, 3, 4096] {
            assert_eq!(through(text, 1 << 20, 5, chunk), (text.to_vec(), None));
        }
    }

    #[test]
    fn a_long_row_stops_at_its_first_byte_past_the_bound_naming_its_line() {
        let text = b"a,b\n1,2\n\n123456789\n";
        for chunk in [1, 2, 4096] {
            let (got, over) = through(text, 1 << 20, 5, chunk);
            assert_eq!(got, b"a,b\n1,2\n\n12345", "chunk {chunk}");
            assert_eq!(over, Some(Over::Line { line: 4, limit: 5 }));
        }
    }

    #[test]
    fn a_quoted_field_does_not_end_the_row_but_a_stray_quote_is_just_a_byte() {
        // A newline inside quotes continues the record (csv-core reads one record, lines 2-3).
        let (_, over) = through(b"h\n\"ab\ncd\"\n", 1 << 20, 5, 7);
        assert_eq!(over, Some(Over::Line { line: 2, limit: 5 }));
        // A doubled quote stays inside; after the closing quote, the newline ends the record.
        assert_eq!(through(b"\"a\"\"\"\nxy\n", 1 << 20, 5, 64).1, None);
        // A quote in the middle of an unquoted field is a plain byte: the newline ends it.
        assert_eq!(through(b"ab\"c\nx\"y\n", 1 << 20, 5, 64).1, None);
    }

    /// The bound byte by byte, straight from csv-core's transitions: where the first byte past
    /// it is, and the line its row starts on.
    fn reference(text: &[u8], max_line: u64) -> Option<(usize, u64)> {
        let (mut row, mut line, mut row_line, mut len) = (Row::Start, 1, 1, 0);
        for (i, &b) in text.iter().enumerate() {
            let term = b == b'\n' || b == b'\r';
            if row == Row::Start && !term {
                (row, row_line, len) = (Row::FieldStart, line, 0);
            }
            if row != Row::Start {
                row = match (row, b) {
                    (Row::FieldStart, b'"') => Row::Quoted,
                    (Row::Quoted, b'"') => Row::QuoteInQuoted,
                    (Row::Quoted, _) => Row::Quoted,
                    (Row::QuoteInQuoted, b'"') => Row::Quoted,
                    (_, b',') => Row::FieldStart,
                    (_, b'\n' | b'\r') => Row::Start,
                    _ => Row::Field,
                };
                if row != Row::Start {
                    len += 1;
                    if len > max_line {
                        return Some((i, row_line));
                    }
                }
            }
            line += u64::from(b == b'\n');
        }
        None
    }

    #[test]
    fn the_fast_scan_agrees_with_the_byte_by_byte_one() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let len = (next() % 200) as usize;
            let text: Vec<u8> = (0..len)
                .map(|_| b"aaaa,,\"\n\r"[(next() % 9) as usize])
                .collect();
            let max_line = 1 + next() % 12;
            let chunk = 1 + (next() % 17) as usize;
            let (got, over) = through(&text, 1 << 20, max_line, chunk);
            match reference(&text, max_line) {
                None => assert_eq!((got.len(), over), (text.len(), None), "{text:?}"),
                Some((at, line)) => {
                    assert_eq!(got.len(), at, "{text:?} max {max_line}");
                    assert_eq!(
                        over,
                        Some(Over::Line {
                            line,
                            limit: max_line
                        }),
                        "{text:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_file_bound_allows_exactly_its_bytes() {
        assert_eq!(through(b"1,2\n3,4\n", 8, 100, 3).1, None);
        let (got, over) = through(b"1,2\n3,4\n5", 8, 100, 3);
        assert_eq!(got, b"1,2\n3,4\n");
        assert_eq!(
            over,
            Some(Over::File {
                line: Some(3),
                limit: 8
            })
        );
    }
}
