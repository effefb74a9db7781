//! Databento DBN files of OHLCV bars (`ohlcv-1s`, `-1m`, `-1h`, `-1d`, `-eod`), plain or
//! zstd-compressed, decoded with the `dbn` crate into a [`Dataset`].
//!
//! * Prices are DBN fixed-point (1 unit = 1e-9) and become f64 with `dbn::pretty::px_to_f64`
//!   (one correctly rounded division); an undefined price (`UNDEF_PRICE`) is an error.
//! * `ts_ns` is the bar's `ts_event` (its open time); volume becomes f64.
//! * Symbols come from the metadata's symbology (and any symbol-mapping records) for the bar's
//!   time and instrument id; an instrument the file has no name for is named by its id in
//!   decimal (`5482`).
//! * Records are read as the file's own DBN version (no upgrade), so the bytes the decoder
//!   consumed add up to the file's length exactly: a file that ends inside a record is reported
//!   as truncated at that record. (The decoder itself stops quietly at a partial record.)
//!
//! This module only decodes the stream it is handed (read once, its raw bytes bounded by
//! [`crate::bounded`]); the checks are [`crate::dataset::Builder`]'s, and it never opens a file
//! or writes anywhere. Memory: the decompressed file is held once, bounded by the candle limit
//! (room for the metadata and `max_candles` records) and by the file limit.

use crate::dataset::{
    limit_text, out_of_memory, read_error, Builder, Dataset, Format, LoadError, LoadOptions,
    Location,
};
use dbn::decode::{DbnDecoder, DbnMetadata, DecodeRecordRef, DynReader};
use dbn::{Compression, OhlcvMsg, Record, Schema, VersionUpgradePolicy};
use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;
use tickloop_ring::Candle;

use crate::limits::MAX_METADATA;

pub(crate) fn load(
    path: &Path,
    stream: impl Read,
    zstd: bool,
    options: &LoadOptions,
) -> Result<Dataset, LoadError> {
    let file_error = |problem: String, fix: &str| {
        LoadError::new(path, Location::File, None, problem, fix.to_owned())
    };
    let compression = if zstd {
        Compression::Zstd
    } else {
        Compression::None
    };
    let reader = DynReader::with_buffer(BufReader::new(stream), compression).map_err(|e| {
        file_error(
            format!("cannot open it as DBN: {e}"),
            "check the path and that it is a DBN file",
        )
    })?;
    // Room for the metadata and one more record than max_candles bars; and, once decompressed,
    // no more than the file limit.
    let records = (options.max_candles as u64)
        .saturating_add(1)
        .saturating_mul(64);
    let for_candles = MAX_METADATA.saturating_add(records);
    let limit = for_candles.min(options.max_file_bytes.saturating_add(1));
    let mut bytes = Vec::new();
    reader
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::OutOfMemory => out_of_memory(path, Location::File),
            _ if zstd && crate::bounded::over_in(&e).is_none() => file_error(
                format!("its zstd compression is damaged or cut short: {e}"),
                "download the file again",
            ),
            _ => read_error(path, e),
        })?;
    if bytes.len() as u64 > options.max_file_bytes {
        return Err(file_error(
            format!(
                "decompressed, it is longer than the --max-file-bytes limit of {}",
                limit_text(options.max_file_bytes)
            ),
            "raise --max-file-bytes, or split the file",
        ));
    }
    if bytes.len() as u64 >= for_candles {
        return Err(file_error(
            format!(
                "more than {} bars' worth of records (the --max-candles limit)",
                options.max_candles
            ),
            "raise --max-candles (each bar holds 56 bytes of memory), or split the file",
        ));
    }
    if !bytes.starts_with(b"DBN") {
        return Err(file_error(
            "not a DBN file (no DBN signature at its start)".into(),
            "check the file, or name its format with --format csv or --format binance",
        ));
    }
    let metadata_len = bytes
        .get(4..8)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
    let end_of_metadata = match metadata_len {
        Some(len) if 8 + len <= bytes.len() => 8 + len,
        _ => {
            return Err(file_error(
                format!(
                    "the metadata header is cut short ({} bytes in the file)",
                    bytes.len()
                ),
                "the file is truncated: download it again",
            ))
        }
    };
    let mut decoder = DbnDecoder::with_upgrade_policy(&bytes[..], VersionUpgradePolicy::AsIs)
        .map_err(|e| {
            file_error(
                format!("its metadata header is damaged: {e}"),
                "download the file again",
            )
        })?;
    let metadata = decoder.metadata().clone();
    if let Some(schema) = metadata.schema {
        if !is_ohlcv(schema) {
            return Err(file_error(
                format!("its schema is {schema}, not OHLCV bars"),
                "use an ohlcv-1s, ohlcv-1m, ohlcv-1h, ohlcv-1d or ohlcv-eod file",
            ));
        }
    }
    // Instrument ids to names; absent (or unusable) symbology leaves ids as names.
    let mut symbols = metadata.symbol_map().unwrap_or_default();
    let mut builder = Builder::new(path, options.max_candles);
    let mut ids: HashMap<(u32, String), u32> = HashMap::new();
    let mut consumed = end_of_metadata;
    let mut record_no: u64 = 0;
    loop {
        let record = match decoder.decode_record_ref() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                return Err(LoadError::new(
                    path,
                    Location::Record(record_no + 1),
                    None,
                    format!("undecodable: {e}"),
                    "the file is damaged: download it again",
                ))
            }
        };
        record_no += 1;
        consumed += record.record_size();
        let at = Location::Record(record_no);
        if record.has::<OhlcvMsg>() {
            let bar = record.try_get::<OhlcvMsg>().map_err(|_| {
                LoadError::new(
                    path,
                    at,
                    None,
                    format!(
                        "an OHLCV record of {} bytes, too short for a bar",
                        record.record_size()
                    ),
                    "the file is damaged: download it again",
                )
            })?;
            let ts = bar.hd.ts_event;
            if ts == dbn::UNDEF_TIMESTAMP || ts > i64::MAX as u64 {
                return Err(LoadError::new(
                    path,
                    at,
                    Some("ts_event"),
                    if ts == dbn::UNDEF_TIMESTAMP {
                        "the time is undefined".to_owned()
                    } else {
                        format!("{ts} ns is {}", crate::csv_file::out_of_range())
                    },
                    "correct or remove that bar",
                ));
            }
            for (field, px) in [
                ("open", bar.open),
                ("high", bar.high),
                ("low", bar.low),
                ("close", bar.close),
            ] {
                if px == dbn::UNDEF_PRICE {
                    return Err(LoadError::new(
                        path,
                        at,
                        Some(field),
                        "the price is undefined (UNDEF_PRICE)",
                        "correct or remove that bar",
                    ));
                }
            }
            let iid = bar.hd.instrument_id;
            let name = symbols
                .get_for_ts(ts, iid)
                .cloned()
                .unwrap_or_else(|| iid.to_string());
            let symbol = match ids.get(&(iid, name.clone())) {
                Some(&s) => s,
                None => {
                    let s = builder.symbol(
                        &name,
                        at,
                        "the ring's symbol table holds names of 1 to 31 bytes",
                    )?;
                    ids.insert((iid, name), s);
                    s
                }
            };
            let candle = Candle {
                ts_ns: ts as i64,
                symbol,
                flags: 0,
                open: dbn::pretty::px_to_f64(bar.open),
                high: dbn::pretty::px_to_f64(bar.high),
                low: dbn::pretty::px_to_f64(bar.low),
                close: dbn::pretty::px_to_f64(bar.close),
                volume: bar.volume as f64,
            };
            builder.push(
                candle,
                at,
                ["ts_event", "open", "high", "low", "close", "volume"],
            )?;
        } else if record.has::<dbn::SymbolMappingMsg>() || record.has::<dbn::v1::SymbolMappingMsg>()
        {
            symbols.on_record(record).map_err(|e| {
                LoadError::new(
                    path,
                    at,
                    Some("symbol"),
                    format!("a symbol mapping record that cannot be read: {e}"),
                    "the file is damaged: download it again",
                )
            })?;
        } else if record.has::<dbn::SystemMsg>() || record.has::<dbn::v1::SystemMsg>() {
            // Heartbeats and notices of a live session: not data.
        } else {
            let rtype = record.header().rtype;
            return Err(LoadError::new(
                path,
                at,
                None,
                format!(
                    "a record of type 0x{rtype:02x} ({}), not an OHLCV bar",
                    record
                        .rtype()
                        .map_or_else(|_| "unknown".to_owned(), |r| format!("{r:?}"))
                ),
                "use a file of an OHLCV schema",
            ));
        }
    }
    if consumed < bytes.len() {
        let wanted = bytes[consumed] as usize * dbn::RecordHeader::LENGTH_MULTIPLIER;
        return Err(LoadError::new(
            path,
            Location::Record(record_no + 1),
            None,
            format!(
                "cut short: the file ends {} bytes into this record{}",
                bytes.len() - consumed,
                if wanted > 0 {
                    format!(", which is {wanted} bytes long")
                } else {
                    String::new()
                }
            ),
            "the file is truncated: download it again",
        ));
    }
    Ok(builder.finish(Format::Dbn))
}

fn is_ohlcv(schema: Schema) -> bool {
    matches!(
        schema,
        Schema::Ohlcv1S | Schema::Ohlcv1M | Schema::Ohlcv1H | Schema::Ohlcv1D | Schema::OhlcvEod
    )
}
