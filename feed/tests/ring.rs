//! Feeds into real rings: a replayed dataset arrives whole, in order, under its symbol names;
//! ingest turns good lines into candles and counts (and quotes) bad ones, over TCP and UDP.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tickloop_feed::ingest::{Ingest, Listen, MAX_INGEST_LINE};
use tickloop_feed::{load, replay, Format, Pace};
use tickloop_ring::{
    self as ring, verify, CreateOptions, ReadResult, Reader, ReaderOptions, Start, Writer,
};

struct TestRing(PathBuf);

impl TestRing {
    fn new(slots: u64) -> TestRing {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = PathBuf::from(format!(
            "/dev/shm/tickloop-feed-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        ring::create(
            &path,
            CreateOptions {
                slots,
                ..CreateOptions::default()
            },
        )
        .unwrap();
        TestRing(path)
    }
}

impl Drop for TestRing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn read_all(path: &Path, n: usize) -> (Reader, Vec<(u64, ring::Candle)>) {
    let mut reader = Reader::attach(
        path,
        ReaderOptions {
            start: Start::At(0),
            register: false,
        },
    )
    .unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        match reader.try_read() {
            ReadResult::Candle { pos, candle } => out.push((pos, candle)),
            ReadResult::NewWriter { .. } => {}
            ReadResult::Empty => break,
            other => panic!("{other:?}"),
        }
    }
    (reader, out)
}

#[test]
fn a_replayed_dataset_arrives_whole_in_order_and_named() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/EURUSD.csv");
    let dataset = load(&data, Format::Auto).unwrap();
    let ring = TestRing::new(8192);
    let mut writer = Writer::open(&ring.0).unwrap();
    let stop = AtomicBool::new(false);
    let mut calls = 0;
    let report = replay(&dataset, &mut writer, Pace::Asap, &stop, &mut |_| {
        calls += 1
    })
    .unwrap();
    assert_eq!(report.published, 5000);
    assert_eq!(report.symbols, 1);
    assert_eq!((report.first_ts_ns, report.last_ts_ns), dataset.span_ns());
    assert!(!report.stopped && calls >= 1);
    let (reader, got) = read_all(&ring.0, 5000);
    assert_eq!(got.len(), 5000);
    for (i, ((pos, c), want)) in got.iter().zip(&dataset.candles).enumerate() {
        assert_eq!(*pos, i as u64);
        assert!(verify::seal_ok(*pos, c), "sealed");
        assert_eq!(reader.symbol_name(c.symbol), Some("EURUSD"));
        assert_eq!(
            (c.ts_ns, c.open, c.high, c.low, c.close, c.volume),
            (
                want.ts_ns,
                want.open,
                want.high,
                want.low,
                want.close,
                want.volume
            )
        );
    }
}

#[test]
fn a_dbn_file_fills_the_symbol_table_with_its_metadata_names() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/dbn/test_data.ohlcv-1m.dbn");
    let dataset = load(&data, Format::Auto).unwrap();
    let ring = TestRing::new(64);
    let mut writer = Writer::open(&ring.0).unwrap();
    replay(
        &dataset,
        &mut writer,
        Pace::Asap,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    let (reader, got) = read_all(&ring.0, dataset.len());
    assert_eq!(got.len(), dataset.len());
    for ((_, c), want) in got.iter().zip(&dataset.candles) {
        assert_eq!(reader.symbol_name(c.symbol), Some(dataset.symbol_of(want)));
    }
    assert_eq!(
        dataset.symbols,
        ["ESH1"],
        "instrument 5482 named by the metadata"
    );
    // Replaying again into the same ring reuses the names: no new symbols.
    let before = writer.symbol_room().1;
    replay(
        &dataset,
        &mut writer,
        Pace::Asap,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(writer.symbol_room().1, before);
}

#[test]
fn a_stop_request_ends_a_paced_replay_promptly() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/EURUSD.csv");
    let dataset = load(&data, Format::Auto).unwrap();
    let ring = TestRing::new(64);
    let mut writer = Writer::open(&ring.0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        s.store(true, Ordering::Relaxed);
    });
    let started = std::time::Instant::now();
    // Real time: the second bar is an hour away.
    let report = replay(&dataset, &mut writer, Pace::RealTime, &stop, &mut |_| {}).unwrap();
    stopper.join().unwrap();
    assert!(report.stopped);
    assert_eq!(report.published, 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

const GOOD: [&str; 3] = [
    r#"{"ts_ns":1000,"symbol":"EURUSD","open":1.1,"high":1.2,"low":1.0,"close":1.15,"volume":5}"#,
    r#"{"ts_ns":2000,"symbol":"EURUSD","open":1.15,"high":1.2,"low":1.1,"close":1.12}"#,
    r#"{"ts_ns":1500,"symbol":"GBPUSD","open":1.3,"high":1.3,"low":1.3,"close":1.3,"volume":0}"#,
];

fn serve(
    listen: Listen,
    count: u64,
) -> (
    TestRing,
    std::net::SocketAddr,
    std::thread::JoinHandle<tickloop_feed::ingest::IngestReport>,
    Arc<AtomicBool>,
) {
    let ring = TestRing::new(64);
    let mut writer = Writer::open(&ring.0).unwrap();
    let mut ingest = Ingest::bind(listen, 2).unwrap();
    let addr = ingest.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || ingest.run(&mut writer, count, &s).unwrap());
    (ring, addr, handle, stop)
}

#[test]
fn tcp_ingest_publishes_good_lines_and_counts_bad_ones() {
    let (ring, addr, handle, stop) = serve("tcp://127.0.0.1:0".parse().unwrap(), 0);
    let long = format!("{{\"x\":\"{}\"}}", "y".repeat(MAX_INGEST_LINE + 10));
    let mut a = std::net::TcpStream::connect(addr).unwrap();
    let lines = [
        GOOD[0],
        "not json",
        GOOD[1],
        r#"{"ts_ns":500,"symbol":"EURUSD","open":1.1,"high":1.2,"low":1.0,"close":1.15}"#, // goes back
        r#"{"ts_ns":3000,"symbol":"EURUSD","open":1.1,"high":1.0,"low":1.2,"close":1.15}"#, // high < low
        &long,
        r#"{"ts_ns":3000,"symbol":"EURUSD","open":1.1,"high":1.2,"low":1.0,"close":1.15,"vol":1}"#, // unknown field
        "",
    ];
    a.write_all(lines.join("\n").as_bytes()).unwrap();
    a.write_all(b"\n").unwrap();
    // A second producer whose last line has no newline: it counts when the connection closes.
    let mut b = std::net::TcpStream::connect(addr).unwrap();
    b.write_all(GOOD[2].as_bytes()).unwrap();
    drop(b);
    // A third connection is over the limit of two: refused.
    let c = std::net::TcpStream::connect(addr).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, got) = read_all(&ring.0, 10);
        if got.len() >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} candles",
            got.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    drop((a, c));
    stop.store(true, Ordering::Relaxed);
    let report = handle.join().unwrap();
    assert_eq!(report.candles, 3, "{report:?}");
    assert_eq!(report.bad_lines, 5, "{report:?}");
    assert_eq!(report.symbols, 2);
    assert_eq!(report.first_bad.len(), 5);
    let problems: Vec<&str> = report
        .first_bad
        .iter()
        .map(|b| b.problem.as_str())
        .collect();
    assert!(problems[0].contains("expected"), "{problems:?}");
    assert!(
        problems[1].contains("before EURUSD's previous"),
        "{problems:?}"
    );
    assert!(problems[2].contains("high < low"), "{problems:?}");
    assert!(problems[3].contains("longer than 4096"), "{problems:?}");
    assert!(problems[4].contains("unknown field"), "{problems:?}");
    assert_eq!(report.first_bad[0].text, "not json");
    assert!(
        report.first_bad[0].from.ends_with("line 2"),
        "{:?}",
        report.first_bad[0]
    );
    assert!(report.first_bad[3].text.len() <= 120 + 2);
    let (reader, got) = read_all(&ring.0, 10);
    let named = |name| -> Vec<ring::Candle> {
        got.iter()
            .filter(|(_, c)| reader.symbol_name(c.symbol) == Some(name))
            .map(|(_, c)| *c)
            .collect()
    };
    let (eur, gbp) = (named("EURUSD"), named("GBPUSD"));
    assert_eq!((eur.len(), gbp.len()), (2, 1));
    assert_eq!((eur[0].ts_ns, eur[1].ts_ns), (1000, 2000));
    assert_eq!(eur[1].volume, 0.0, "volume is optional");
    assert!(got.iter().all(|(p, c)| verify::seal_ok(*p, c)));
}

#[test]
fn udp_ingest_takes_lines_from_datagrams() {
    let (ring, addr, handle, _stop) = serve("udp://127.0.0.1:0".parse().unwrap(), 3);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .send_to(format!("{}\n{}\n", GOOD[0], "{}").as_bytes(), addr)
        .unwrap();
    socket.send_to(GOOD[1].as_bytes(), addr).unwrap();
    socket
        .send_to(format!("[1,2]\n{}\n", GOOD[2]).as_bytes(), addr)
        .unwrap();
    let report = handle.join().unwrap(); // ends after 3 candles
    assert_eq!(
        (report.candles, report.bad_lines, report.datagrams),
        (3, 2, 3),
        "{report:?}"
    );
    assert!(report.first_bad[0].from.contains("datagram 1"));
    assert_eq!(read_all(&ring.0, 10).1.len(), 3);
}
