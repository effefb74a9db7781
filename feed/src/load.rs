//! Reading a data file: [`load`] opens it once and reads it once, front to back (so a pipe, a
//! FIFO or `/dev/stdin` reads like a regular file), detects its format from the name and the
//! head it has already read ([`detect`]), and hands the bytes to that format's parser
//! (`csv_file`, `dbn_file`), which checks them into a [`Dataset`] with `dataset`'s rules.
//!
//! It never opens a file twice, never seeks, and never touches a ring.

use crate::bounded::Bounded;
use crate::dataset::{io_error, Dataset, Format, LoadError, LoadOptions, Location};
use std::io::{self, Read};
use std::path::Path;

/// Load and validate a whole file with default options (symbol name from the file name).
pub fn load(path: impl AsRef<Path>, format: Format) -> Result<Dataset, LoadError> {
    load_with(
        path.as_ref(),
        &LoadOptions {
            format,
            ..LoadOptions::default()
        },
    )
}

/// Bytes read to detect the format: the signature of a binary file, or a text file's first line
/// (cut here if longer).
const HEAD: u64 = 4096;

/// Load and validate a whole file: opened once and read once, front to back (a pipe, a FIFO or
/// `/dev/stdin` is read like a regular file), the format detected from the name and the head
/// already read, every bound of `options` checked as the bytes arrive.
pub fn load_with(path: &Path, options: &LoadOptions) -> Result<Dataset, LoadError> {
    let mut file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut head = Vec::with_capacity(HEAD as usize);
    (&mut file)
        .take(HEAD)
        .read_to_end(&mut head)
        .map_err(|e| io_error(path, e))?;
    let format = match options.format {
        Format::Auto => sniff(path, &head)?,
        f => f,
    };
    let zstd = head.starts_with(&ZSTD_MAGIC);
    // The head goes back in front of the rest: the parsers read the file from its first byte.
    let stream = io::Cursor::new(head).chain(file);
    let dataset = match format {
        Format::Csv | Format::Binance => crate::csv_file::load(
            path,
            Bounded::new(stream, options.max_file_bytes, Some(options.max_line_bytes)),
            format,
            options,
        )?,
        Format::Dbn => crate::dbn_file::load(
            path,
            Bounded::new(stream, options.max_file_bytes, None),
            zstd,
            options,
        )?,
        Format::Auto => unreachable!("resolved above"),
    };
    if dataset.candles.is_empty() {
        return Err(LoadError::new(
            path,
            Location::File,
            None,
            "it holds no bars",
            "check that it is the file you meant",
        ));
    }
    Ok(dataset)
}

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The format of a file, from its name and first bytes: `.dbn`/`.zst` names and files starting
/// with the DBN signature or a zstd frame are DBN; text whose first line has 12 fields starting
/// with an integer (no header) or `open_time` (a header) is Binance klines; other text is
/// backtesting.py's CSV. Binary data that is neither is refused.
///
/// This opens and reads the head of the file by itself: for a pipe or FIFO those bytes are then
/// gone. [`load_with`] detects on the head it reads anyway, and loses nothing.
pub fn detect(path: &Path) -> Result<Format, LoadError> {
    let mut head = Vec::with_capacity(HEAD as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(HEAD).read_to_end(&mut head))
        .map_err(|e| io_error(path, e))?;
    sniff(path, &head)
}

/// [`detect`] on a head already read (up to [`HEAD`] bytes, fewer only at the end of the file).
fn sniff(path: &Path, head: &[u8]) -> Result<Format, LoadError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".dbn") || name.ends_with(".zst") || name.ends_with(".dbz") {
        return Ok(Format::Dbn);
    }
    if head.starts_with(b"DBN") || head.starts_with(&ZSTD_MAGIC) {
        return Ok(Format::Dbn);
    }
    if head.is_empty() {
        return Err(LoadError::new(
            path,
            Location::File,
            None,
            "the file is empty",
            "check that it is the file you meant",
        ));
    }
    // Text: the first line, whole or cut at HEAD bytes (a cut multi-byte char is fine).
    let first = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let text = match std::str::from_utf8(first) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&first[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return Err(not_text(path, first)),
    };
    if let Some(at) = text.find(|c: char| c.is_control() && c != '\r' && c != '\t') {
        return Err(not_text(path, &first[..at]));
    }
    let fields: Vec<&str> = text.trim_end().split(',').map(str::trim).collect();
    let first_field = fields[0].trim_matches('"').to_ascii_lowercase();
    if fields.len() == 12
        && (first_field.bytes().all(|b| b.is_ascii_digit()) && !first_field.is_empty()
            || first_field == "open_time"
            || first_field == "open time")
    {
        return Ok(Format::Binance);
    }
    Ok(Format::Csv)
}

fn not_text(path: &Path, before: &[u8]) -> LoadError {
    LoadError::new(
        path,
        Location::Line(1),
        None,
        format!(
            "binary data at byte {}: it is neither CSV text nor DBN (no DBN signature)",
            before.len()
        ),
        "check the file, or name its format with --format",
    )
}
