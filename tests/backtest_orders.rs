//! The orders real strategies need, against backtesting.py 0.6.6 itself: every run of the
//! committed reference (data/reference/orders_eurusd.json, made by scripts/order_reference.sh)
//! through `tickloop backtest` with the same strategy, parameters and options gives the same
//! trades (size, entry and exit bar, prices, PnL, commission) and the same final cash and
//! equity, to the bit. The runs: (a) SMA(10, 20) with commission and finalize_trades, (b)
//! limit entries with stop-loss and take-profit, (c) stop entries, then the same strategies
//! with trade_on_close, exclusive_orders, margin, spread and fixed commission.

mod common;
use common::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/EURUSD.csv");
const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/reference/orders_eurusd.json"
);

fn bits(v: &serde_json::Value, what: &str) -> u64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
        .to_bits()
}

/// `tickloop backtest` as reference run `name` describes it (`t`: strategy, params, flags):
/// its summary and its trade list.
fn backtest(
    dir: &TempDir,
    name: &str,
    t: &serde_json::Value,
) -> (serde_json::Value, Vec<serde_json::Value>) {
    let trades_out = dir.file(&format!("{name}.jsonl"));
    let mut args = vec![
        "backtest".to_string(),
        "--data".into(),
        DATA.into(),
        "--strategy".into(),
        t["strategy"].as_str().unwrap().into(),
        "--trades-out".into(),
        trades_out.clone(),
        "--json".into(),
    ];
    for p in t["params"].as_array().unwrap() {
        args.push("--param".into());
        args.push(p.as_str().unwrap().into());
    }
    for f in t["flags"].as_array().unwrap() {
        args.push(f.as_str().unwrap().into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = tickloop(&args);
    assert!(o.status.success(), "{name}: {}", clear_failure(&o));
    let trades = std::fs::read_to_string(&trades_out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (serde_json::from_slice(&o.stdout).unwrap(), trades)
}

#[test]
fn every_reference_run_reproduces_backtesting_py_trade_for_trade() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(REFERENCE).unwrap()).unwrap();
    let runs = reference["runs"].as_object().unwrap();
    assert!(runs.len() >= 3, "the references (a), (b) and (c)");
    let dir = TempDir::new("backtest-orders");
    for (name, run) in runs {
        let (summary, got) = backtest(&dir, name, &run["tickloop"]);
        let want = run["trades"].as_array().unwrap();
        assert!(
            want.len() > 50,
            "{name}: a reference with few trades proves little"
        );
        assert_eq!(got.len(), want.len(), "{name}: closed trades");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            for field in [
                "size",
                "entry_bar",
                "exit_bar",
                "entry_price",
                "exit_price",
                "pnl",
                "commission",
            ] {
                assert_eq!(
                    bits(&g[field], field),
                    bits(&w[field], field),
                    "{name}: trade {i} {field}: tickloop {g}, backtesting.py {w}"
                );
            }
        }
        for (mine, theirs) in [
            ("final_equity", "final_equity"),
            ("final_cash", "final_cash"),
        ] {
            assert_eq!(
                bits(&summary[mine], mine),
                bits(&run[theirs], theirs),
                "{name}: {mine}: tickloop {}, backtesting.py {}",
                summary[mine],
                run[theirs]
            );
        }
        let open: f64 = run["open_trades"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["size"].as_f64().unwrap())
            .sum();
        let mine: f64 = summary["open_positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["size"].as_f64().unwrap())
            .sum();
        assert_eq!(mine, open, "{name}: the position left open");
    }
}

/// A backtest full of resting orders, cancels and brackets replays to identical decisions.
#[test]
fn a_run_with_brackets_and_cancels_replays_exactly() {
    let dir = TempDir::new("backtest-orders-replay");
    let journal = dir.file("bt.tlj");
    let o = tickloop(&[
        "backtest",
        "--data",
        DATA,
        "--strategy",
        "stop_breakout",
        "--spread",
        "0.0001",
        "--commission",
        "0.0001",
        "--finalize-trades",
        "--journal",
        &journal,
        "--json",
    ]);
    assert!(o.status.success(), "{}", clear_failure(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        summary["stats"]["cancelled"].as_u64().unwrap() > 100,
        "{summary}"
    );
    let o = tickloop(&["replay", "--journal", &journal, "--verify"]);
    assert!(o.status.success(), "{}", clear_failure(&o));
}
