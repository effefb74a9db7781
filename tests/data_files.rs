//! Data files as a hostile or merely unusual user hands them to `tickloop backtest` and `tickloop
//! feed replay`: through a pipe (`/dev/stdin`) or a FIFO with `--format auto` (read once, so
//! nothing is lost to format detection), a huge line refused at its line under a memory limit
//! far below its size, files past the byte and bar bounds, and a date past what the clock holds.
//! Real processes, real pipes.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tickloop_ring::{ReadResult, Reader, ReaderOptions, Start};

mod common;
use common::*;

const EURUSD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/EURUSD.csv");
const DBN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/dbn/test_data.ohlcv-1m.dbn"
);
const DBN_ZST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/dbn/test_data.ohlcv-1m.dbn.zst"
);

/// `cat FILE`, its stdout a pipe for another process's stdin.
fn cat(file: &str) -> Child {
    Command::new("cat")
        .arg(file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run cat")
}

/// `tickloop ARGS` with its stdin the output of `cat FILE`.
fn tickloop_fed_by_cat(file: &str, args: &[&str]) -> Output {
    let mut writer = cat(file);
    let o = Command::new(TICKLOOP)
        .args(args)
        .stdin(writer.stdout.take().unwrap())
        .output()
        .expect("run tickloop");
    writer.wait().unwrap();
    o
}

/// `command` run with `feed` written to its stdin by another thread, in pieces of `piece`
/// bytes, until it is written or the reader closes the pipe; and how many bytes got in.
fn fed(
    mut command: Command,
    feed: impl Iterator<Item = Vec<u8>> + Send + 'static,
) -> (Output, u64) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut written = 0u64;
        for piece in feed {
            if stdin.write_all(&piece).is_err() {
                break; // the reader stopped: that is its answer
            }
            written += piece.len() as u64;
        }
        written
    });
    let o = child.wait_with_output().unwrap();
    (o, feeder.join().unwrap())
}

/// The backtest's JSON summary, less the field that names where the data came from.
fn backtest_summary(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", clear_failure(o));
    let mut s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    s.as_object_mut().unwrap().remove("data");
    s
}

fn backtest_args<'a>(data: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "backtest",
        "--data",
        data,
        "--strategy",
        "sma_cross",
        "--format",
        "auto",
        "--json",
    ];
    args.extend(more);
    args
}

/// The FIFO's write end, once `reader` has opened the read end (a reader that exits first
/// fails the test instead of leaving it blocked in open).
fn open_fifo_writer(path: &Path, reader: &mut Child) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(file) => {
                use std::os::fd::AsRawFd;
                // SAFETY: an open descriptor; clearing O_NONBLOCK makes writes wait for room.
                assert_eq!(
                    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) },
                    0
                );
                return file;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                if let Some(status) = reader.try_wait().unwrap() {
                    panic!("the reader exited ({status}) without opening {path:?}");
                }
                assert!(
                    Instant::now() < deadline,
                    "{path:?} never opened for reading"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("open {path:?}: {e}"),
        }
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {path:?}"
    );
}

#[test]
fn backtest_from_a_pipe_and_a_fifo_with_format_auto_equals_backtest_from_the_file() {
    let from_file = backtest_summary(&tickloop(&backtest_args(EURUSD, &[])));
    assert_eq!(from_file["candles"], 5000);
    assert_eq!(from_file["trades"], 262);

    // A pipe from another process: /dev/stdin, named EURUSD with --symbol.
    let o = tickloop_fed_by_cat(
        EURUSD,
        &backtest_args("/dev/stdin", &["--symbol", "EURUSD"]),
    );
    assert_eq!(backtest_summary(&o), from_file, "from a pipe");

    // A FIFO named like the file (so it names the symbol), written in pieces smaller than the
    // head the format is detected from, by a writer that opens it after the reader.
    let dir = TempDir::new("data-fifo");
    let fifo = dir.0.join("EURUSD.csv");
    mkfifo(&fifo);
    let fifo_text = fifo.display().to_string();
    let mut reader = spawn(&backtest_args(&fifo_text, &[]));
    let bytes = std::fs::read(EURUSD).unwrap();
    let mut writer = open_fifo_writer(&fifo, &mut reader);
    for piece in bytes.chunks(1000) {
        writer.write_all(piece).unwrap();
        writer.flush().unwrap();
    }
    drop(writer);
    let o = reader.wait_with_output().unwrap();
    assert_eq!(backtest_summary(&o), from_file, "from a FIFO");
}

/// Every candle in the ring, as (ts_ns, open, high, low, close, volume).
fn ring_candles(name: &Name) -> Vec<(i64, [f64; 5])> {
    let mut reader = Reader::attach(
        &name.path(),
        ReaderOptions {
            start: Start::At(0),
            register: false,
        },
    )
    .unwrap();
    let mut out = Vec::new();
    loop {
        match reader.try_read() {
            ReadResult::Candle { candle: c, .. } => {
                out.push((c.ts_ns, [c.open, c.high, c.low, c.close, c.volume]))
            }
            ReadResult::NewWriter { .. } => {}
            ReadResult::Empty => return out,
            other => panic!("{other:?}"),
        }
    }
}

fn file_candles(path: &str) -> Vec<(i64, [f64; 5])> {
    tickloop_feed::load(path, tickloop_feed::Format::Auto)
        .unwrap()
        .candles
        .iter()
        .map(|c| (c.ts_ns, [c.open, c.high, c.low, c.close, c.volume]))
        .collect()
}

fn ring_symbols(name: &Name) -> serde_json::Value {
    let o = tickloop(&["ring", "info", "--ring", &name.0, "--json"]);
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["symbol_names"].clone()
}

#[test]
fn feed_replay_from_a_pipe_with_format_auto_publishes_the_whole_file() {
    let name = Name::new();
    let o = tickloop_fed_by_cat(
        EURUSD,
        &[
            "feed",
            "replay",
            "--data",
            "/dev/stdin",
            "--format",
            "auto",
            "--symbol",
            "EURUSD",
            "--ring",
            &name.0,
            "--create",
        ],
    );
    let report = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{report}");
    assert!(
        report.contains("replayed 5000 of 5000 candles of 1 symbol (EURUSD) from /dev/stdin (csv)"),
        "{report}"
    );
    assert_eq!(ring_candles(&name), file_candles(EURUSD));
    assert_eq!(ring_symbols(&name), serde_json::json!(["EURUSD"]));
}

#[test]
fn dbn_files_through_a_pipe_are_detected_and_decoded_plain_and_compressed() {
    for file in [DBN, DBN_ZST] {
        // backtest: the same bars as from the file.
        let from_file = backtest_summary(&tickloop(&backtest_args(file, &[])));
        let o = tickloop_fed_by_cat(file, &backtest_args("/dev/stdin", &[]));
        let from_pipe = backtest_summary(&o);
        assert_eq!(from_pipe, from_file, "{file}");
        assert_eq!(from_pipe["symbols"], serde_json::json!(["ESH1"]), "{file}");
        assert_eq!(from_pipe["candles"], 2, "{file}");
        // feed replay: the bars into a ring, named from the file's symbology.
        let name = Name::new();
        let o = tickloop_fed_by_cat(
            file,
            &[
                "feed",
                "replay",
                "--data",
                "/dev/stdin",
                "--ring",
                &name.0,
                "--create",
            ],
        );
        let report = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{file}: {report}");
        assert!(report.contains("from /dev/stdin (dbn)"), "{report}");
        assert_eq!(ring_candles(&name), file_candles(file), "{file}");
        assert_eq!(ring_symbols(&name), serde_json::json!(["ESH1"]));
    }
}

/// `tickloop ARGS` under `ulimit -v` of `kib` KiB (address space: every mapping counts).
fn under_memory_limit(kib: u64, args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
        .arg(TICKLOOP)
        .args(args);
    c
}

/// A valid head, two bars, then `tail_mib` MiB without a line end, in 1 MiB pieces.
fn head_and_endless_line(tail_mib: usize) -> impl Iterator<Item = Vec<u8>> + Send {
    let head = ",Open,High,Low,Close,Volume\n\
                2017-04-19 09:00:00,1.0716,1.0722,1.07083,1.07219,1413\n\
                2017-04-19 10:00:00,1.07214,1.07296,1.07214,1.0726,1241\n";
    std::iter::once(head.as_bytes().to_vec())
        .chain(std::iter::repeat_n(vec![b'9'; 1 << 20], tail_mib))
}

/// A refusal as a user deserves it, even when memory is short: one error line, no abort.
fn refused_cleanly(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_ne!(o.status.code(), Some(134), "aborted: {err}");
    assert!(
        o.status.code().is_some(),
        "killed by a signal: {:?} {err}",
        o.status
    );
    assert!(!err.contains("memory allocation"), "{err}");
    clear_failure(o)
}

#[test]
fn a_huge_line_is_refused_at_its_line_under_a_memory_limit_far_below_its_size() {
    // 200 MiB with no line end, through a pipe, into a process allowed 400 MB of address space
    // in all (binary, libraries, stacks and heap).
    let ring = Name::new();
    for (args, more) in [
        (
            vec![
                "backtest",
                "--data",
                "/dev/stdin",
                "--strategy",
                "sma_cross",
            ],
            None,
        ),
        (
            vec![
                "feed",
                "replay",
                "--data",
                "/dev/stdin",
                "--ring",
                &ring.0,
                "--create",
            ],
            Some("nothing was written to ring"),
        ),
    ] {
        let started = Instant::now();
        let (o, written) = fed(
            under_memory_limit(400_000, &args),
            head_and_endless_line(200),
        );
        let took = started.elapsed();
        let err = refused_cleanly(&o);
        assert!(
            err.contains(
                "bad data file /dev/stdin, line 4: the line is longer than the --max-line-bytes limit of 64 KiB (65536 bytes)"
            ) && err.contains("--max-line-bytes"),
            "{err}"
        );
        if let Some(more) = more {
            assert!(err.contains(more), "{err}");
        }
        // Refused at the bound, not after reading the line: the writer was cut off early.
        assert!(
            written < 16 << 20,
            "{written} bytes were read before the refusal"
        );
        assert!(took < Duration::from_secs(20), "took {took:?}");
        assert!(!ring.path().exists(), "a refused file creates no ring");
    }
    // A raised bound is the one named.
    let (o, _) = fed(
        under_memory_limit(
            400_000,
            &[
                "backtest",
                "--data",
                "/dev/stdin",
                "--strategy",
                "sma_cross",
                "--max-line-bytes",
                "1MiB",
            ],
        ),
        head_and_endless_line(200),
    );
    let err = refused_cleanly(&o);
    assert!(
        err.contains(
            "line 4: the line is longer than the --max-line-bytes limit of 1 MiB (1048576 bytes)"
        ),
        "{err}"
    );
}

#[test]
fn files_past_the_byte_and_bar_bounds_are_refused_naming_the_bound_and_its_flag() {
    let o = tickloop(&backtest_args(EURUSD, &["--max-candles", "1000"]));
    let err = clear_failure(&o);
    assert!(
        err.contains("EURUSD.csv, line 1002: more than 1000 bars (the --max-candles limit)")
            && err.contains("raise --max-candles"),
        "{err}"
    );
    let o = tickloop(&backtest_args(EURUSD, &["--max-file-bytes", "100KiB"]));
    let err = clear_failure(&o);
    assert!(
        err.contains(
            "the file is longer than the --max-file-bytes limit of 100 KiB (102400 bytes)"
        ) && err.contains("raise --max-file-bytes"),
        "{err}"
    );
    // feed replay: refused before the ring is made.
    let name = Name::new();
    let o = tickloop(&[
        "feed",
        "replay",
        "--data",
        EURUSD,
        "--ring",
        &name.0,
        "--create",
        "--max-candles",
        "10",
    ]);
    let err = clear_failure(&o);
    assert!(
        err.contains("more than 10 bars") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!name.path().exists());
    // A zstd file small on disk but past the bound once decompressed.
    let o = tickloop(&backtest_args(DBN_ZST, &["--max-file-bytes", "200"]));
    let err = clear_failure(&o);
    assert!(
        err.contains("decompressed, it is longer than the --max-file-bytes limit of 200 bytes"),
        "{err}"
    );
    // An endless stream of empty lines (never an error by itself) ends at the file bound.
    let (o, _) = fed(
        under_memory_limit(
            400_000,
            &[
                "backtest",
                "--data",
                "/dev/stdin",
                "--strategy",
                "sma_cross",
                "--max-file-bytes",
                "8MiB",
            ],
        ),
        std::iter::once(b",Open,High,Low,Close\n".to_vec())
            .chain(std::iter::repeat(vec![b'\n'; 1 << 16])),
    );
    let err = refused_cleanly(&o);
    assert!(
        err.contains("the file is longer than the --max-file-bytes limit of 8 MiB"),
        "{err}"
    );
    // The defaults are in --help.
    for command in [&["backtest", "--help"][..], &["feed", "replay", "--help"]] {
        let help = stdout(&tickloop(command));
        for default in [
            "[default: 64KiB]",
            "[default: 16GiB]",
            "[default: 20000000]",
        ] {
            assert!(
                help.contains(default),
                "{command:?}: {default} missing from {help}"
            );
        }
    }
}

#[test]
fn a_bar_in_the_year_9999_is_a_date_out_of_range() {
    let dir = TempDir::new("data-far");
    let far = dir.file("far.csv");
    std::fs::write(
        &far,
        ",Open,High,Low,Close,Volume\n\
         2017-04-19 09:00:00,1.0716,1.0722,1.07083,1.07219,1413\n\
         9999-01-01 00:00:00,1.07214,1.07296,1.07214,1.0726,1241\n",
    )
    .unwrap();
    let o = tickloop(&backtest_args(&far, &[]));
    let err = clear_failure(&o);
    assert!(
        err.contains("far.csv, line 3, field time (first column): \"9999-01-01 00:00:00\" is a date out of range")
            && err.contains("1677-09-21 00:12:43.145224192 and 2262-04-11 23:47:16.854775807 UTC"),
        "{err}"
    );
    assert!(!err.contains("not a date or time"), "{err}");
}
