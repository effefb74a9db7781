//! Loading data files: the bundled samples decode to exactly what their bytes say (CSV rows as
//! text, DBN records as the `dbn` crate's own decoder reads them), and every kind of bad file is
//! one error naming the file, the line or record, the field and the problem.

use dbn::decode::{DbnMetadata, DecodeRecord, DynDecoder};
use dbn::{OhlcvMsg, VersionUpgradePolicy};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tickloop_feed::{load, load_with, Dataset, Format, LoadError, LoadOptions, Location};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data")
        .join(name)
}

/// A file in a private directory, removed with it.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tickloop-feed-load-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn file(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ts(s: &str) -> i64 {
    tickloop_feed::parse_time(s).unwrap()
}

/// Every row of a backtesting.py CSV, parsed independently of the loader.
fn rows(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

fn check_against_rows(d: &Dataset, path: &Path) {
    let rows = rows(path);
    assert_eq!(d.len(), rows.len());
    for (c, row) in d.candles.iter().zip(&rows) {
        let f = |i: usize| row[i].parse::<f64>().unwrap();
        assert_eq!(c.ts_ns, ts(&row[0]), "{row:?}");
        assert_eq!(
            (c.open, c.high, c.low, c.close, c.volume),
            (f(1), f(2), f(3), f(4), f(5)),
            "{row:?}"
        );
        assert_eq!((c.symbol, c.flags), (0, 0));
    }
}

#[test]
fn eurusd_hourly_loads_whole() {
    let path = data("EURUSD.csv");
    let d = load(&path, Format::Auto).unwrap();
    assert_eq!(d.format, Format::Csv);
    assert_eq!(d.symbols, ["EURUSD"]);
    assert_eq!(d.len(), 5000);
    assert_eq!(
        d.span_ns(),
        (ts("2017-04-19 09:00:00"), ts("2018-02-07 15:00:00"))
    );
    let first = d.candles[0];
    assert_eq!(
        (first.open, first.high, first.low, first.close, first.volume),
        (1.0716, 1.0722, 1.07083, 1.07219, 1413.0)
    );
    check_against_rows(&d, &path);
}

#[test]
fn btcusd_monthly_dates_load() {
    let path = data("BTCUSD.csv");
    let d = load(&path, Format::Csv).unwrap();
    assert_eq!(d.symbols, ["BTCUSD"]);
    assert_eq!(d.candles[0].ts_ns, ts("2012-01-31"));
    check_against_rows(&d, &path);
}

#[test]
fn symbol_name_and_column_variants() {
    let s = Scratch::new();
    // Named time column, other order, lower case, an extra column, no volume, T separator.
    let p = s.file(
        "x.csv",
        "close,Date,open,extra,high,low\n1.5,2024-01-02T10:00:00Z,1.0,x,2.0,0.5\n1.6,2024-01-02T11:00:00Z,1.5,y,1.7,1.4\n",
    );
    let d = load_with(
        &p,
        &LoadOptions {
            symbol: Some("MYSYM".into()),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(d.symbols, ["MYSYM"]);
    assert_eq!(d.candles[1].ts_ns, ts("2024-01-02 11:00:00"));
    assert_eq!(
        (d.candles[0].open, d.candles[0].close, d.candles[0].volume),
        (1.0, 1.5, 0.0)
    );
}

const KLINE_HEADER: &str = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore\n";

fn kline(open_time: i64, o: &str, h: &str, l: &str, c: &str, v: &str) -> String {
    format!(
        "{open_time},{o},{h},{l},{c},{v},{},12345.6,42,1.5,100.25,0\n",
        open_time + 59_999
    )
}

#[test]
fn binance_klines_with_and_without_header_in_ms_and_us() {
    let s = Scratch::new();
    let ms = 1_704_067_200_000i64; // 2024-01-01 00:00:00 UTC
    let us = 1_735_689_600_000_000i64; // 2025-01-01 00:00:00 UTC
    let body_ms = [
        kline(
            ms, "42283.58", "42298.62", "42261.02", "42298.61", "35.92724",
        ),
        kline(
            ms + 60_000,
            "42298.62",
            "42320.00",
            "42298.61",
            "42319.99",
            "21.60536",
        ),
    ]
    .concat();
    let body_us = [
        kline(
            us, "93576.00", "93610.93", "93537.50", "93610.93", "8.21827",
        ),
        kline(
            us + 60_000_000,
            "93610.93",
            "93652.00",
            "93606.00",
            "93634.01",
            "13.05001",
        ),
    ]
    .concat();
    for (name, text, first_ns) in [
        ("BTCUSDT-1m-2024-01.csv", body_ms.clone(), ms * 1_000_000),
        (
            "BTCUSDT-1m-2024-01-h.csv",
            format!("{KLINE_HEADER}{body_ms}"),
            ms * 1_000_000,
        ),
        ("BTCUSDT-1m-2025-01.csv", body_us.clone(), us * 1_000),
        (
            "BTCUSDT-1m-2025-01-h.csv",
            format!("{KLINE_HEADER}{body_us}"),
            us * 1_000,
        ),
    ] {
        let p = s.file(name, &text);
        let d = load(&p, Format::Auto).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.format, Format::Binance, "{name}");
        assert_eq!(d.symbols, ["BTCUSDT"], "{name}");
        assert_eq!(d.len(), 2);
        assert_eq!(d.candles[0].ts_ns, first_ns, "{name}");
        assert_eq!(
            d.candles[1].ts_ns - d.candles[0].ts_ns,
            60_000_000_000,
            "{name}"
        );
        let line = text.lines().find(|l| !l.starts_with("open_time")).unwrap();
        let f: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
        let c = d.candles[0];
        assert_eq!(
            (c.open, c.high, c.low, c.close, c.volume),
            (f[1], f[2], f[3], f[4], f[5])
        );
    }
}

/// The candles the `dbn` crate's own decoder reads from a file, with names from its symbology.
fn dbn_reference(path: &Path) -> Vec<(i64, String, [f64; 4], f64)> {
    let mut decoder = DynDecoder::from_file(path, VersionUpgradePolicy::default()).unwrap();
    let map = decoder.metadata().symbol_map().unwrap();
    let mut out = Vec::new();
    while let Some(bar) = decoder.decode_record::<OhlcvMsg>().unwrap() {
        let name = map
            .get_for_ts(bar.hd.ts_event, bar.hd.instrument_id)
            .cloned()
            .unwrap_or_else(|| bar.hd.instrument_id.to_string());
        out.push((
            bar.hd.ts_event as i64,
            name,
            [bar.open, bar.high, bar.low, bar.close].map(dbn::pretty::px_to_f64),
            bar.volume as f64,
        ));
    }
    out
}

#[test]
fn databento_test_files_decode_as_the_dbn_crate_reads_them() {
    // Databento's ohlcv-1d test file holds a header and no bars: both readers agree, and the
    // loader says so instead of feeding nothing.
    let empty = data("dbn/test_data.ohlcv-1d.dbn");
    assert!(dbn_reference(&empty).is_empty());
    let e = load(&empty, Format::Auto).unwrap_err();
    assert!(e.problem.contains("no bars"), "{e}");
    for name in [
        "dbn/test_data.ohlcv-1m.dbn",
        "dbn/test_data.ohlcv-1m.dbn.zst",
    ] {
        let path = data(name);
        let d = load(&path, Format::Auto).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.format, Format::Dbn);
        let want = dbn_reference(&path);
        assert!(!want.is_empty());
        assert_eq!(d.len(), want.len(), "{name}");
        for (c, (ts, sym, px, vol)) in d.candles.iter().zip(&want) {
            assert_eq!(c.ts_ns, *ts, "{name}");
            assert_eq!(d.symbol_of(c), sym, "{name}");
            assert_eq!([c.open, c.high, c.low, c.close], *px, "{name}");
            assert_eq!(c.volume, *vol, "{name}");
            assert!(
                !sym.chars().all(|ch| ch.is_ascii_digit()),
                "named from metadata: {sym}"
            );
        }
        // Forced format gives the same.
        assert_eq!(load(&path, Format::Dbn).unwrap(), d);
    }
    let plain = load(data("dbn/test_data.ohlcv-1m.dbn"), Format::Auto).unwrap();
    let zst = load(data("dbn/test_data.ohlcv-1m.dbn.zst"), Format::Auto).unwrap();
    assert_eq!(plain.candles, zst.candles);
    assert_eq!(plain.symbols, zst.symbols);
}

fn fails(path: &Path, format: Format) -> LoadError {
    let e = load(path, format).expect_err("a bad file must not load");
    let text = e.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "names the file: {text}"
    );
    assert!(!text.contains('\n'), "one line: {text}");
    e
}

#[test]
fn bad_csv_files_name_file_line_field_and_problem() {
    let s = Scratch::new();
    let head = ",Open,High,Low,Close,Volume\n";
    let good1 = "2017-04-19 09:00:00,1.0716,1.0722,1.07083,1.07219,1413\n";
    let good2 = "2017-04-19 10:00:00,1.07214,1.07296,1.07214,1.0726,1241\n";
    let cases: Vec<(&str, String, Location, Option<&str>, &str)> = vec![
        (
            "missing_column.csv",
            format!(",Open,Low,Close,Volume\n{good1}"),
            Location::Line(1),
            Some("High"),
            "no High column",
        ),
        (
            "not_monotonic.csv",
            format!("{head}{good2}{good1}"),
            Location::Line(3),
            Some("time (first column)"),
            "before the previous bar",
        ),
        (
            "duplicate_time.csv",
            format!("{head}{good1}{good1}"),
            Location::Line(3),
            Some("time (first column)"),
            "a second bar of",
        ),
        (
            "nan_price.csv",
            format!("{head}{good1}2017-04-19 10:00:00,1.07214,NaN,1.07214,1.0726,1241\n"),
            Location::Line(3),
            Some("High"),
            "NaN",
        ),
        (
            "inf_price.csv",
            format!("{head}2017-04-19 10:00:00,inf,1.07296,1.07214,1.0726,1241\n"),
            Location::Line(2),
            Some("Open"),
            "inf",
        ),
        (
            "negative_price.csv",
            format!("{head}2017-04-19 10:00:00,1.07214,1.07296,-1.07214,1.0726,1241\n"),
            Location::Line(2),
            Some("Low"),
            "negative",
        ),
        (
            "high_below_low.csv",
            format!("{head}2017-04-19 10:00:00,1.07214,1.07,1.08,1.0726,1241\n"),
            Location::Line(2),
            Some("High"),
            "high < low",
        ),
        (
            "not_a_number.csv",
            format!("{head}{good1}{good2}2017-04-19 11:00:00,1.07,1.08,1.06,abc,5\n"),
            Location::Line(4),
            Some("Close"),
            "\"abc\" is not a number",
        ),
        (
            "empty_value.csv",
            format!("{head}2017-04-19 10:00:00,1.07214,1.07296,1.07214,,1241\n"),
            Location::Line(2),
            Some("Close"),
            "missing",
        ),
        (
            "short_row.csv",
            format!("{head}{good1}2017-04-19 10:00:00,1.07214,1.07296\n"),
            Location::Line(3),
            None,
            "3 fields, but the header has 6",
        ),
        (
            "bad_time.csv",
            format!("{head}19/04/2017 09:00,1.0716,1.0722,1.07083,1.07219,1413\n"),
            Location::Line(2),
            Some("time (first column)"),
            "is not a date or time",
        ),
        (
            "header_only.csv",
            head.to_owned(),
            Location::File,
            None,
            "no bars",
        ),
        ("empty.csv", String::new(), Location::File, None, "empty"),
    ];
    for (name, text, at, field, problem) in cases {
        let e = fails(&s.file(name, text), Format::Auto);
        assert_eq!(e.at, at, "{name}: {e}");
        assert_eq!(e.field.as_deref(), field, "{name}: {e}");
        assert!(e.problem.contains(problem), "{name}: {e}");
    }
    // A bad Binance row: named by line and Binance's column name.
    let bad = format!(
        "{KLINE_HEADER}{}{}",
        kline(1_704_067_200_000, "1", "2", "0.5", "1.5", "3"),
        kline(1_704_067_260_000, "1", "2", "0.5", "1.5", "-3"),
    );
    let e = fails(&s.file("BTCUSDT-bad.csv", bad), Format::Auto);
    assert_eq!(
        (e.at, e.field.as_deref()),
        (Location::Line(3), Some("volume")),
        "{e}"
    );
    let e = fails(
        &s.file("BTCUSDT-short.csv", "1704067200000,1,2,0.5,1.5\n"),
        Format::Binance,
    );
    assert!(e.problem.contains("Binance klines have 12"), "{e}");
}

#[test]
fn garbage_and_truncated_dbn_files_are_refused_with_the_record() {
    let s = Scratch::new();
    // Garbage: binary noise is neither CSV nor DBN.
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let e = fails(&s.file("garbage.bin", &noise), Format::Auto);
    assert!(e.problem.contains("neither CSV text nor DBN"), "{e}");
    let e = fails(&s.file("garbage.dbn", &noise), Format::Auto);
    assert!(
        e.problem.contains("not a DBN file") || e.problem.contains("cannot open"),
        "{e}"
    );

    let whole = std::fs::read(data("dbn/test_data.ohlcv-1m.dbn")).unwrap();
    let records = load(data("dbn/test_data.ohlcv-1m.dbn"), Format::Dbn)
        .unwrap()
        .len() as u64;
    // Cut inside the last record.
    let e = fails(&s.file("cut.dbn", &whole[..whole.len() - 10]), Format::Auto);
    assert_eq!(e.at, Location::Record(records), "{e}");
    assert!(
        e.problem.contains("cut short") && e.problem.contains("46 bytes into"),
        "{e}"
    );
    // Cut inside the metadata header.
    let e = fails(&s.file("cut-header.dbn", &whole[..40]), Format::Auto);
    assert_eq!(e.at, Location::File, "{e}");
    assert!(e.problem.contains("metadata header is cut short"), "{e}");
    // A zstd stream cut short.
    let zst = std::fs::read(data("dbn/test_data.ohlcv-1m.dbn.zst")).unwrap();
    let e = fails(&s.file("cut.dbn.zst", &zst[..zst.len() - 20]), Format::Auto);
    assert!(
        e.problem.contains("zstd") || e.problem.contains("cut short"),
        "{e}"
    );
    // A bar with an impossible price, patched into the file: named by record and field.
    let mut patched = whole.clone();
    let first_record = 8 + u32::from_le_bytes(whole[4..8].try_into().unwrap()) as usize;
    // OhlcvMsg: 16-byte header, then open, high, low, close (i64 each), volume.
    patched[first_record + 24..first_record + 32].copy_from_slice(&(-5i64).to_le_bytes());
    let e = fails(&s.file("negative.dbn", &patched), Format::Auto);
    assert_eq!(
        (e.at, e.field.as_deref()),
        (Location::Record(1), Some("high")),
        "{e}"
    );
}

#[test]
fn a_missing_file_is_a_plain_error() {
    let e = fails(Path::new("/nonexistent/EURUSD.csv"), Format::Auto);
    assert!(e.problem.contains("cannot read"), "{e}");
    let e = fails(Path::new("/nonexistent/x.dbn"), Format::Auto);
    assert!(e.problem.contains("cannot read"), "{e}");
}

/// A DBN file made with the `dbn` crate's own encoder: bars of `(instrument, ts_event, close)`,
/// with symbology naming instruments 101 and 202.
fn encode_dbn(path: &Path, bars: &[(u32, u64, i64)], zstd: bool) {
    use dbn::encode::{DbnEncoder, EncodeRecord};
    let day = |d| time::Date::from_calendar_date(2024, time::Month::January, d).unwrap();
    let mapping = |raw: &str, id: &str| dbn::SymbolMapping {
        raw_symbol: raw.to_owned(),
        intervals: vec![dbn::MappingInterval {
            start_date: day(1),
            end_date: day(3),
            symbol: id.to_owned(),
        }],
    };
    let metadata = dbn::Metadata::builder()
        .dataset("GLBX.MDP3")
        .schema(Some(dbn::Schema::Ohlcv1M))
        .start(1_704_067_200_000_000_000)
        .stype_in(Some(dbn::SType::RawSymbol))
        .stype_out(dbn::SType::InstrumentId)
        .symbols(vec!["AAA".into(), "BBB".into()])
        .mappings(vec![mapping("AAA", "101"), mapping("BBB", "202")])
        .build();
    let records: Vec<OhlcvMsg> = bars
        .iter()
        .map(|&(id, ts, close)| OhlcvMsg {
            hd: dbn::RecordHeader::new::<OhlcvMsg>(dbn::rtype::OHLCV_1M, 1, id, ts),
            open: close,
            high: close + 250_000_000,
            low: close - 250_000_000,
            close,
            volume: 7,
        })
        .collect();
    let file = std::fs::File::create(path).unwrap();
    if zstd {
        let mut e = DbnEncoder::with_zstd(file, &metadata).unwrap();
        e.encode_records(&records).unwrap();
    } else {
        let mut e = DbnEncoder::new(file, &metadata).unwrap();
        e.encode_records(&records).unwrap();
    }
}

#[test]
fn multi_symbol_dbn_files_name_every_instrument_and_keep_time_order() {
    let s = Scratch::new();
    let t0 = 1_704_067_200_000_000_000u64; // 2024-01-01 00:00 UTC
    let minute = 60_000_000_000u64;
    let bars = [
        (101, t0, 100_000_000_000),
        (202, t0, 20_500_000_000),
        (303, t0, 1_000_000_000), // no symbology: named by its id
        (101, t0 + minute, 100_250_000_000),
        (202, t0 + minute, 20_750_000_000),
    ];
    for zstd in [false, true] {
        let path = s.0.join(if zstd { "multi.dbn.zst" } else { "multi.dbn" });
        encode_dbn(&path, &bars, zstd);
        let d = load(&path, Format::Auto).unwrap();
        assert_eq!(d.symbols, ["AAA", "BBB", "303"]);
        let names: Vec<&str> = d.candles.iter().map(|c| d.symbol_of(c)).collect();
        assert_eq!(names, ["AAA", "BBB", "303", "AAA", "BBB"]);
        let want = dbn_reference(&path);
        for (c, (ts, sym, px, vol)) in d.candles.iter().zip(&want) {
            assert_eq!((c.ts_ns, d.symbol_of(c)), (*ts, sym.as_str()));
            assert_eq!(([c.open, c.high, c.low, c.close], c.volume), (*px, *vol));
        }
        assert_eq!(d.candles[1].close, 20.5);
    }
    // Time going back across symbols, and a repeated bar of one symbol.
    let back = s.0.join("back.dbn");
    encode_dbn(&back, &[bars[3], bars[1]], false);
    let e = fails(&back, Format::Auto);
    assert_eq!(
        (e.at, e.field.as_deref()),
        (Location::Record(2), Some("ts_event")),
        "{e}"
    );
    let twice = s.0.join("twice.dbn");
    encode_dbn(&twice, &[bars[0], bars[1], bars[0]], false);
    let e = fails(&twice, Format::Auto);
    assert_eq!(e.at, Location::Record(3), "{e}");
    assert!(e.problem.contains("a second bar of AAA"), "{e}");
}

/// `bytes` loaded through a pipe (its read end opened by path, as `/dev/stdin` would be), written
/// in small pieces by another thread so the loader sees the head arrive in parts.
fn load_from_pipe(bytes: Vec<u8>, options: &LoadOptions) -> Result<Dataset, LoadError> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let (reader, mut writer) = std::io::pipe().unwrap();
    let path = PathBuf::from(format!("/proc/self/fd/{}", reader.as_raw_fd()));
    let feeder = std::thread::spawn(move || {
        for piece in bytes.chunks(700) {
            if writer.write_all(piece).is_err() {
                return; // the loader stopped reading: that is its answer
            }
        }
    });
    let result = load_with(&path, options);
    drop(reader);
    feeder.join().unwrap();
    result
}

#[test]
fn every_format_loads_from_a_pipe_as_from_its_file() {
    for name in [
        "EURUSD.csv",
        "BTCUSD.csv",
        "dbn/test_data.ohlcv-1m.dbn",
        "dbn/test_data.ohlcv-1m.dbn.zst",
    ] {
        let path = data(name);
        let from_file = load(&path, Format::Auto).unwrap();
        let options = LoadOptions {
            // The pipe's path names no symbol; the file's name did.
            symbol: Some(from_file.symbols[0].clone()),
            ..LoadOptions::default()
        };
        let from_pipe = load_from_pipe(std::fs::read(&path).unwrap(), &options)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(from_pipe.format, from_file.format, "{name}");
        assert_eq!(from_pipe.symbols, from_file.symbols, "{name}");
        assert_eq!(from_pipe.candles, from_file.candles, "{name}");
    }
    // Binance klines are told from backtesting.py's CSV by the head read from the pipe too.
    let rows = [
        kline(1_704_067_200_000, "1", "2", "0.5", "1.5", "3"),
        kline(1_704_067_260_000, "1.5", "2", "1", "1.2", "4"),
    ]
    .concat();
    let d = load_from_pipe(rows.into_bytes(), &LoadOptions::default()).unwrap();
    assert_eq!((d.format, d.len()), (Format::Binance, 2));
}

#[test]
fn a_line_past_the_bound_is_refused_at_its_line_without_reading_the_rest() {
    let head =
        ",Open,High,Low,Close,Volume\n2017-04-19 09:00:00,1.0716,1.0722,1.07083,1.07219,1413\n";
    // 64 MiB with no line end: refused at the bound, long before the end.
    let mut bytes = head.as_bytes().to_vec();
    bytes.resize(bytes.len() + (64 << 20), b'7');
    let e = load_from_pipe(bytes, &LoadOptions::default()).unwrap_err();
    assert_eq!((e.at, e.field.as_deref()), (Location::Line(3), None), "{e}");
    assert!(
        e.problem
            .contains("longer than the --max-line-bytes limit of 64 KiB (65536 bytes)")
            && e.fix.contains("--max-line-bytes"),
        "{e}"
    );
    // A quoted field does not hide a long record from the bound: named at the line it starts.
    let s = Scratch::new();
    let quoted = format!(
        "{head}\"2017-04-19 10:00:00{}\",1,1,1,1,1\n",
        "\n".repeat(100)
    );
    let options = LoadOptions {
        max_line_bytes: 64,
        ..LoadOptions::default()
    };
    let e = load_with(&s.file("quoted.csv", quoted), &options).unwrap_err();
    assert_eq!(e.at, Location::Line(3), "{e}");
    assert!(e.problem.contains("limit of 64 bytes"), "{e}");
    // A bad row before the long one is the one reported.
    let bad_then_long = format!(
        "{head}2017-04-19 10:00:00,x,1,1,1,1\n{}\n",
        "9".repeat(1000)
    );
    let e = load_with(&s.file("bad-then-long.csv", bad_then_long), &options).unwrap_err();
    assert_eq!(
        (e.at, e.field.as_deref()),
        (Location::Line(3), Some("Open")),
        "{e}"
    );
    // A line of exactly the bound loads (the row is 54 bytes, its line end not counted).
    let ok = s.file("ok.csv", head);
    let bound = |max_line_bytes| LoadOptions {
        max_line_bytes,
        ..LoadOptions::default()
    };
    assert_eq!(load_with(&ok, &bound(54)).unwrap().len(), 1);
    assert_eq!(
        load_with(&ok, &bound(53)).unwrap_err().at,
        Location::Line(2)
    );
}

#[test]
fn files_past_the_byte_and_bar_bounds_are_refused_naming_the_flag() {
    let eurusd = data("EURUSD.csv");
    let e = load_with(
        &eurusd,
        &LoadOptions {
            max_candles: 1000,
            ..LoadOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.at, Location::Line(1002), "{e}");
    assert!(
        e.problem.contains("more than 1000 bars") && e.fix.contains("--max-candles"),
        "{e}"
    );
    let e = load_with(
        &eurusd,
        &LoadOptions {
            max_file_bytes: 100 << 10,
            ..LoadOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e.at, Location::Line(_)), "{e}");
    assert!(
        e.problem
            .contains("longer than the --max-file-bytes limit of 100 KiB (102400 bytes)")
            && e.fix.contains("--max-file-bytes"),
        "{e}"
    );
    // An endless run of empty lines (nothing that is ever an error by itself) ends at the
    // file bound.
    let e = load_from_pipe(
        [",Open,High,Low,Close\n".as_bytes(), &[b'\n'; 3 << 20]].concat(),
        &LoadOptions {
            max_file_bytes: 1 << 20,
            ..LoadOptions::default()
        },
    )
    .unwrap_err();
    assert!(e.problem.contains("limit of 1 MiB"), "{e}");
    // DBN: the compressed bytes, and what they decompress to, are both bounded.
    let zst = data("dbn/test_data.ohlcv-1m.dbn.zst");
    let (packed, unpacked) = (
        std::fs::metadata(&zst).unwrap().len(),
        std::fs::metadata(data("dbn/test_data.ohlcv-1m.dbn"))
            .unwrap()
            .len(),
    );
    assert!(packed < 200 && unpacked > 200);
    let limited = |max_file_bytes, max_candles| LoadOptions {
        max_file_bytes,
        max_candles,
        ..LoadOptions::default()
    };
    let e = load_with(&zst, &limited(200, MAX)).unwrap_err();
    assert!(
        e.problem
            .contains("decompressed, it is longer than the --max-file-bytes limit of 200 bytes"),
        "{e}"
    );
    let e = load_with(&zst, &limited(100, MAX)).unwrap_err();
    assert!(
        e.problem
            .starts_with("the file is longer than the --max-file-bytes limit of 100 bytes"),
        "{e}"
    );
    let e = load_with(&zst, &limited(u64::MAX, 1)).unwrap_err();
    assert_eq!(e.at, Location::Record(2), "{e}");
    assert!(e.problem.contains("more than 1 bars"), "{e}");
    assert_eq!(load_with(&zst, &limited(unpacked, 2)).unwrap().len(), 2);
}

const MAX: usize = tickloop_feed::MAX_CANDLES;

#[test]
fn a_bar_past_2262_is_a_date_out_of_range() {
    let s = Scratch::new();
    let p = s.file(
        "far.csv",
        ",Open,High,Low,Close\n2017-04-19 09:00:00,1,2,0.5,1.5\n9999-01-01 00:00:00,1,2,0.5,1.5\n",
    );
    let e = load(&p, Format::Auto).unwrap_err();
    assert_eq!(
        (e.at, e.field.as_deref()),
        (Location::Line(3), Some("time (first column)")),
        "{e}"
    );
    assert!(
        e.problem.contains("is a date out of range")
            && e.problem.contains("1677-09-21")
            && e.problem.contains("2262-04-11"),
        "{e}"
    );
    // Binance: an open time in ms past 2262 is out of range too.
    let p = s.file(
        "BTCUSDT-far.csv",
        kline(9_300_000_000_000, "1", "2", "0.5", "1.5", "3"),
    );
    let e = load(&p, Format::Auto).unwrap_err();
    assert!(e.problem.contains("is a date out of range"), "{e}");
}
