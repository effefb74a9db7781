//! Whole-program tests of the feeds: `tickloop feed replay` of the bundled data into a ring read
//! by another process, pacing, bad files refused before the ring is touched, `tickloop feed
//! ingest` over TCP and UDP, and the synthetic feed's symbol names.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tickloop_ring::{verify, ReadResult, Reader, ReaderOptions, Start};

mod common;
use common::*;

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
        .display()
        .to_string()
}

fn info(name: &Name) -> serde_json::Value {
    let o = tickloop(&["ring", "info", "--ring", &name.0, "--json"]);
    assert!(o.status.success(), "{o:?}");
    serde_json::from_slice(&o.stdout).unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn replay_of_eurusd_delivers_5000_named_candles_to_a_reader() {
    let name = Name::new();
    create_ring(&name, 8192);
    let tail = spawn(&[
        "ring",
        "tail",
        "--ring",
        &name.0,
        "--count",
        "5000",
        "--verify",
        "--idle-exit",
        "30",
    ]);
    wait_for_reader(&name);
    let o = tickloop(&[
        "feed",
        "replay",
        "--data",
        &data("EURUSD.csv"),
        "--ring",
        &name.0,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = stderr(&o);
    assert!(
        report.contains("replayed 5000 of 5000 candles of 1 symbol (EURUSD)")
            && report.contains("bars 2017-04-19 09:00:00 to 2018-02-07 15:00:00 UTC")
            && report.contains("candles/s"),
        "{report}"
    );
    let t = tail.wait_with_output().unwrap();
    assert!(t.status.success(), "{t:?}");
    assert_eq!(
        summary(&t),
        serde_json::json!({"received": 5000, "lost": 0, "duplicates": 0, "torn": 0, "overruns": 0})
    );
    let shown = info(&name);
    assert_eq!(shown["write_seq"], 5000);
    assert_eq!(shown["symbol_names"], serde_json::json!(["EURUSD"]));

    // Every candle, read back by the runtime's reader, is the file's row.
    let text = std::fs::read_to_string(data("EURUSD.csv")).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let mut reader = Reader::attach(
        &name.path(),
        ReaderOptions {
            start: Start::At(0),
            register: false,
        },
    )
    .unwrap();
    let mut n = 0;
    loop {
        match reader.try_read() {
            ReadResult::Candle { pos, candle } => {
                let row = &rows[pos as usize];
                let f = |i: usize| row[i].parse::<f64>().unwrap();
                assert!(verify::seal_ok(pos, &candle));
                assert_eq!(reader.symbol_name(candle.symbol), Some("EURUSD"));
                assert_eq!(candle.ts_ns, tickloop_feed::parse_time(row[0]).unwrap());
                assert_eq!(
                    (
                        candle.open,
                        candle.high,
                        candle.low,
                        candle.close,
                        candle.volume
                    ),
                    (f(1), f(2), f(3), f(4), f(5))
                );
                n += 1;
            }
            ReadResult::NewWriter { .. } => {}
            ReadResult::Empty => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(n, 5000);
}

#[test]
fn paced_replay_takes_about_the_expected_time() {
    // EURUSD spans 294 days 6 hours = 25,423,200 s; at x10,000,000 that is 2.54 s.
    let name = Name::new();
    let started = Instant::now();
    let o = tickloop(&[
        "feed",
        "replay",
        "--data",
        &data("EURUSD.csv"),
        "--ring",
        &name.0,
        "--create",
        "--pace",
        "x10000000",
    ]);
    let took = started.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("pace x10000000"), "{}", stderr(&o));
    assert!(
        (2.3..8.0).contains(&took),
        "took {took:.2} s, expected about 2.54 s"
    );
    assert_eq!(info(&name)["write_seq"], 5000);
}

/// Bad files, each refused with the file, where, which field and what; the ring untouched.
#[test]
fn bad_files_are_refused_before_the_ring_is_touched() {
    let dir = TempDir::new("feed-bad");
    let head = ",Open,High,Low,Close,Volume\n";
    let row1 = "2017-04-19 09:00:00,1.0716,1.0722,1.07083,1.07219,1413\n";
    let row2 = "2017-04-19 10:00:00,1.07214,1.07296,1.07214,1.0726,1241\n";
    let dbn = std::fs::read(data("dbn/test_data.ohlcv-1m.dbn")).unwrap();
    let noise: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let files: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "missing.csv",
            format!(",Open,High,Close,Volume\n{row1}").into_bytes(),
            &["line 1", "field Low", "no Low column"],
        ),
        (
            "backwards.csv",
            format!("{head}{row1}{row2}{row1}").into_bytes(),
            &[
                "line 4",
                "field time (first column)",
                "before the previous bar",
            ],
        ),
        (
            "nan.csv",
            format!("{head}{row1}2017-04-19 10:00:00,NaN,1.07296,1.07214,1.0726,1241\n")
                .into_bytes(),
            &["line 3", "field Open", "NaN"],
        ),
        (
            "truncated.dbn",
            dbn[..dbn.len() - 20].to_vec(),
            &["record 2", "cut short", "truncated"],
        ),
        (
            "garbage.bin",
            noise,
            &["line 1", "neither CSV text nor DBN"],
        ),
    ];
    for (file, bytes, wanted) in files {
        let name = Name::new();
        create_ring(&name, 1024);
        let path = dir.file(file);
        std::fs::write(&path, bytes).unwrap();
        let o = tickloop(&["feed", "replay", "--data", &path, "--ring", &name.0]);
        let err = clear_failure(&o);
        assert!(err.contains(&path), "{file}: names the file: {err}");
        for w in wanted {
            assert!(err.contains(w), "{file}: {w:?} missing from {err}");
        }
        assert!(err.contains("nothing was written to ring"), "{err}");
        let shown = info(&name);
        assert_eq!(shown["write_seq"], 0, "{file}: nothing written");
        assert_eq!(
            shown["writer"]["epoch"], 0,
            "{file}: the ring was never taken over"
        );
        assert_eq!(shown["symbols"], 0, "{file}: no symbol registered");
    }
    // With --create, a bad file creates nothing either.
    let name = Name::new();
    let path = dir.file("nan.csv");
    let o = tickloop(&[
        "feed", "replay", "--data", &path, "--ring", &name.0, "--create",
    ]);
    clear_failure(&o);
    assert!(!name.path().exists());
}

/// Start `feed ingest` on port 0 and return it with the address it announced.
// The caller waits for the child; clippy cannot see that through the return value.
#[allow(clippy::zombie_processes)]
fn start_ingest(
    name: &Name,
    scheme: &str,
    extra: &[&str],
) -> (
    std::process::Child,
    String,
    BufReader<std::process::ChildStderr>,
) {
    let mut child = Command::new(TICKLOOP)
        .args(["feed", "ingest", "--ring", &name.0, "--create", "--listen"])
        .arg(format!("{scheme}://127.0.0.1:0"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap_or(0) > 0,
            "ingest exited early"
        );
        if let Some(rest) = line.split("listening on ").nth(1) {
            let url = rest.split(',').next().unwrap().to_owned();
            let addr = url.split("://").nth(1).unwrap().to_owned();
            return (child, addr, err);
        }
    }
}

const LINES: [&str; 5] = [
    r#"{"ts_ns":1000,"symbol":"EURUSD","open":1.1,"high":1.2,"low":1.0,"close":1.15,"volume":5}"#,
    r#"{"ts_ns":1000,"symbol":"EURUSD","open":"x"}"#,
    r#"{"ts_ns":2000,"symbol":"EURUSD","open":1.15,"high":1.2,"low":1.1,"close":1.12}"#,
    r#"{"ts_ns":3000,"symbol":"EURUSD","open":-1,"high":1.2,"low":1.1,"close":1.12}"#,
    r#"{"ts_ns":1500,"symbol":"USDJPY","open":150.1,"high":150.3,"low":150.0,"close":150.2,"volume":3}"#,
];

fn check_ingested(name: &Name, report: &str) {
    assert!(
        report.contains("ingested 3 candles of 2 symbols"),
        "{report}"
    );
    assert!(report.contains("2 bad lines"), "{report}");
    assert!(
        report.contains(r#""{\"ts_ns\":1000,\"symbol\":\"EURUSD\",\"open\":\"x\"}""#),
        "quotes the line: {report}"
    );
    assert!(report.contains("the price -1 is negative"), "{report}");
    let shown = info(name);
    assert_eq!(shown["write_seq"], 3);
    assert_eq!(
        shown["symbol_names"],
        serde_json::json!(["EURUSD", "USDJPY"])
    );
}

#[test]
fn ingest_over_tcp_publishes_good_lines_and_counts_bad_ones() {
    let name = Name::new();
    let (mut child, addr, mut err) = start_ingest(&name, "tcp", &[]);
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    for line in LINES {
        stream.write_all(line.as_bytes()).unwrap();
        stream.write_all(b"\n").unwrap();
    }
    stream.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while info(&name)["write_seq"] != 3 {
        assert!(Instant::now() < deadline, "never got 3 candles");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stream);
    // SAFETY: our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut report = String::new();
    err.read_to_string(&mut report).unwrap();
    assert!(status.success(), "{status}: {report}");
    assert!(report.contains("from 1 connections"), "{report}");
    check_ingested(&name, &report);
}

#[test]
fn ingest_over_udp_publishes_good_lines_and_counts_bad_ones() {
    let name = Name::new();
    let (mut child, addr, mut err) = start_ingest(&name, "udp", &["--count", "3"]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // One line per datagram, and the last two lines in one datagram.
    for line in &LINES[..3] {
        socket.send_to(line.as_bytes(), &addr).unwrap();
    }
    socket
        .send_to(format!("{}\n{}\n", LINES[3], LINES[4]).as_bytes(), &addr)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "ingest --count 3 never ended");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut report = String::new();
    err.read_to_string(&mut report).unwrap();
    assert!(status.success(), "{status}: {report}");
    assert!(report.contains("from 4 datagrams"), "{report}");
    check_ingested(&name, &report);
}

#[test]
fn ingest_refuses_addresses_off_loopback() {
    let name = Name::new();
    let o = tickloop(&[
        "feed",
        "ingest",
        "--ring",
        &name.0,
        "--create",
        "--listen",
        "tcp://0.0.0.0:0",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("loopback"), "{}", stderr(&o));
    assert!(!name.path().exists());
}

#[test]
fn synthetic_symbols_are_named_in_the_ring() {
    let name = Name::new();
    let o = synthetic_feed(&name, 30, 0, 3).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        info(&name)["symbol_names"],
        serde_json::json!(["SYN0000", "SYN0001", "SYN0002"])
    );
}

#[test]
fn replay_of_a_dbn_file_names_its_instruments() {
    let name = Name::new();
    let o = tickloop(&[
        "feed",
        "replay",
        "--data",
        &data("dbn/test_data.ohlcv-1m.dbn.zst"),
        "--ring",
        &name.0,
        "--create",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shown = info(&name);
    assert_eq!(shown["write_seq"], 2);
    assert_eq!(shown["symbol_names"], serde_json::json!(["ESH1"]));
}
