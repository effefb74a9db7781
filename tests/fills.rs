//! Fills the engine must not believe, and telemetry that counts each fact once: a real engine
//! (`tickloop run`) trading through a real adapter process that answers every order with an
//! overfill, a negative and a zero-priced fill, a fill for an order never placed and
//! duplicates, around the fills that are real; and that is slow to connect, so the strategy
//! waits for it (no order is refused for want of it).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;
use serde_json::Value;

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

#[test]
fn fills_that_do_not_fit_their_order_never_move_the_book_and_each_is_one_fault_event() {
    let ring = Name::new();
    create_ring(&ring, 1 << 13);
    let dir = TempDir::new("bad-fills");
    let (cfg, status, journal, tele) = (
        dir.file("engine.toml"),
        dir.file("s.json"),
        dir.file("run.tlj"),
        dir.file("telemetry"),
    );
    std::fs::create_dir(&tele).unwrap();
    let page = Name::new();
    std::fs::write(
        &cfg,
        format!(
            "[engine]\naccount = \"bad-fills\"\nlock_dir = \"{locks}\"\n\n\
             [[rings]]\nname = \"{ring}\"\n\n\
             [status]\npath = \"{status}\"\ninterval_ms = 100\n\
             [metrics]\npage = \"{page}\"\n\
             [journal]\npath = \"{journal}\"\n[telemetry]\ndir = \"{tele}\"\n\
             [strategy]\nname = \"sma_cross\"\n[strategy.params]\nn1 = 3\nn2 = 7\n\
             [orders]\ncash = 10000\nadapter = 0\n\
             [risk]\nmax_order_notional = 1000000\n\
             [adapters]\nsymbols = [\"EURUSD\"]\n\n\
             [[adapters.adapter]]\nname = \"bad\"\n\
             command = [{TICKLOOP:?}, \"adapter\", \"fault\", \"--mode\", \"bad-fills\", \"--hello-delay-ms\", \"800\", \"--price\", \"1.1\"]\n",
            locks = dir.file("locks"),
            ring = ring.0,
            page = page.0,
        ),
    )
    .unwrap();
    let run = Command::new(TICKLOOP)
        .args(["run", "--config", &cfg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&status);
    // 5000 hourly bars at 3.6 million times real time: about 5 s; the first come while the
    // adapter still connects (it waits 0.8 s to say hello), before the strategy starts.
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data/EURUSD.csv");
    let fed = tickloop(&[
        "feed", "replay", "--data", data, "--ring", &ring.0, "--pace", "x3600000",
    ]);
    assert!(
        fed.status.success(),
        "{}",
        String::from_utf8_lossy(&fed.stderr)
    );
    // Every candle read and every order settled (the adapter answers at once).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let doc = status_doc(&status);
        if doc["candles"] == 5000 && doc["trading"]["open_orders"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never settled: {doc}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Metrics count the same (from the next snapshot, taken on a tick), through the exporter.
    let exporter = prom::Exporter::start(&page.0);
    let trading = status_doc(&status)["trading"].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (text, _) = exporter.metrics();
        let same = [
            ("tickloop_orders_submitted_total", "orders"),
            ("tickloop_fills_total", "fills"),
            ("tickloop_fill_faults_total", "fill_faults"),
            ("tickloop_orders_rejected_total", "rejected"),
            ("tickloop_orders_cancelled_total", "cancelled"),
            ("tickloop_orders_denied_total", "denied"),
        ]
        .iter()
        .all(|(name, field)| {
            text.lines()
                .any(|l| l == format!("{name} {}", trading[field].as_u64().unwrap()))
        });
        if same {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never matched the status {trading}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let out = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("was not believed"), "{err}");
    let doc = status_doc(&status);
    let trading = &doc["trading"];
    let events = telemetry_events(&tele);
    assert_eq!(
        of_kind(&events, "dropped").len(),
        0,
        "telemetry lost events"
    );

    // One telemetry event per fact: the counts are the status file's.
    let count = |kind: &str| of_kind(&events, kind).len() as u64;
    for (kind, field) in [
        ("order_submitted", "orders"),
        ("fill", "fills"),
        ("fill_fault", "fill_faults"),
        ("order_rejected", "rejected"),
        ("order_cancelled", "cancelled"),
        ("risk_denied", "denied"),
    ] {
        assert_eq!(
            count(kind),
            trading[field].as_u64().unwrap(),
            "{kind} events against status trading.{field}: {trading}"
        );
    }

    // Orders: what was submitted is what was sent, whole units.
    let mut submitted: BTreeMap<u64, f64> = BTreeMap::new();
    for e in of_kind(&events, "order_submitted") {
        let qty = e["qty"].as_f64().unwrap();
        assert!(qty >= 0.0 && qty.fract() == 0.0, "not whole lots: {e}");
        let sign = if e["side"] == "buy" { 1.0 } else { -1.0 };
        submitted.insert(e["order"].as_u64().unwrap(), sign * qty);
    }
    // Fills: never more than an order's quantity; each order that reached the adapter is
    // filled exactly once over, in one or two real fills.
    let mut filled: BTreeMap<u64, f64> = BTreeMap::new();
    for e in of_kind(&events, "fill") {
        let order = e["order"].as_u64().unwrap();
        *filled.entry(order).or_default() += e["qty"].as_f64().unwrap();
    }
    assert!(
        filled.len() > 20,
        "too few orders reached the adapter: {trading}"
    );
    for (order, units) in &filled {
        let want = submitted[order];
        assert_eq!(*units, want, "order {order}: filled {units} of {want}");
    }
    // The position is the sum of the real fills: 3x overfills, negative fills and
    // duplicates left no trace.
    let position: f64 = filled.values().sum();
    let held: f64 = trading["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["size"].as_f64().unwrap())
        .sum();
    assert!(
        (held - position).abs() < 1e-6,
        "status position {held} != the real fills' {position}"
    );

    // Every fault the adapter sent is one fault event, with its numbers.
    let faults = of_kind(&events, "fill_fault");
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for f in &faults {
        *by_kind
            .entry(f["fault"].as_str().unwrap().into())
            .or_default() += 1;
        assert_eq!(f["adapter"], 0, "{f}");
    }
    let orders = filled.len() as u64;
    let halves = filled
        .iter()
        .filter(|(o, _)| (submitted[o].abs() / 2.0).floor() > 0.0)
        .count() as u64;
    assert_eq!(by_kind.get("overfill"), Some(&orders), "{by_kind:?}");
    assert_eq!(by_kind.get("bad_quantity"), Some(&orders), "{by_kind:?}");
    assert_eq!(by_kind.get("bad_price"), Some(&orders), "{by_kind:?}");
    assert_eq!(by_kind.get("unknown_order"), Some(&orders), "{by_kind:?}");
    assert_eq!(
        by_kind.get("duplicate"),
        Some(&(orders + halves)),
        "{by_kind:?}"
    );
    let over = faults.iter().find(|f| f["fault"] == "overfill").unwrap();
    let remaining = over["remaining"].as_f64().unwrap();
    assert_eq!(over["qty"].as_f64().unwrap(), 3.0 * remaining, "{over}");

    // The strategy starts once its adapter is ready: no order is refused for want of it.
    let rejected = of_kind(&events, "order_rejected");
    assert!(
        !rejected
            .iter()
            .any(|r| r["reason"] == "not sent: adapter not ready"),
        "an order was sent before the adapter was ready: {rejected:?}"
    );
    for r in &rejected {
        let reason = r["reason"].as_str().unwrap();
        assert!(!reason.contains("no margin, or"), "{r}");
    }

    // The run, faults included, replays to identical decisions.
    let r = tickloop(&["replay", "--journal", &journal, "--verify"]);
    assert!(
        r.status.success(),
        "{}{}",
        stdout(&r),
        String::from_utf8_lossy(&r.stderr)
    );
}
