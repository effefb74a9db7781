//! `tickloop backtest` as a user runs it: the SMA crossover (10, 20) on the bundled EURUSD
//! hourly data against backtesting.py's own result (data/reference/sma_cross_eurusd.json,
//! made by scripts/backtesting_reference.sh), trade by trade, bit for bit; its journal replays
//! to identical decisions; bad input is one clear error.

mod common;
use common::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/EURUSD.csv");
const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/reference/sma_cross_eurusd.json"
);

#[test]
fn sma_cross_10_20_on_eurusd_matches_backtesting_py_trade_for_trade() {
    let dir = TempDir::new("backtest");
    let trades_out = dir.file("trades.jsonl");
    let journal = dir.file("bt.tlj");
    let o = tickloop(&[
        "backtest",
        "--data",
        DATA,
        "--strategy",
        "sma_cross",
        "--param",
        "n1=10",
        "--param",
        "n2=20",
        "--cash",
        "10000",
        "--trades-out",
        &trades_out,
        "--journal",
        &journal,
        "--json",
    ]);
    assert!(o.status.success(), "{}", clear_failure(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(REFERENCE).unwrap()).unwrap();
    let want = reference["trades"].as_array().unwrap();
    let got: Vec<serde_json::Value> = std::fs::read_to_string(&trades_out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), want.len(), "closed trades");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        for (field, exact) in [
            ("size", true),
            ("entry_bar", true),
            ("exit_bar", true),
            ("entry_price", true),
            ("exit_price", true),
            ("pnl", true),
        ] {
            let (a, b) = (g[field].as_f64().unwrap(), w[field].as_f64().unwrap());
            assert!(
                !exact || a.to_bits() == b.to_bits(),
                "trade {i} {field}: tickloop {a:?}, backtesting.py {b:?}\n{g}\n{w}"
            );
        }
        // Times: backtesting.py's ISO form against tickloop's.
        assert_eq!(
            g["entry_time"].as_str().unwrap().replace(' ', "T"),
            w["entry_time"].as_str().unwrap(),
            "trade {i}"
        );
    }
    for (ours, theirs) in [
        ("final_equity", "final_equity"),
        ("final_cash", "final_cash"),
    ] {
        assert_eq!(
            summary[ours].as_f64().unwrap().to_bits(),
            reference[theirs].as_f64().unwrap().to_bits(),
            "{ours}: {} vs {}",
            summary[ours],
            reference[theirs]
        );
    }
    assert_eq!(summary["trades"], reference["stats"]["# Trades"]);
    let dd = summary["max_drawdown_pct"].as_f64().unwrap();
    let want_dd = reference["stats"]["Max. Drawdown [%]"].as_f64().unwrap();
    assert!((dd - want_dd).abs() < 1e-9, "{dd} vs {want_dd}");
    let ret = summary["return_pct"].as_f64().unwrap();
    let want_ret = reference["stats"]["Return [%]"].as_f64().unwrap();
    assert!((ret - want_ret).abs() < 1e-9, "{ret} vs {want_ret}");
    // The open trade is left open, as backtesting.py leaves it.
    let open = &summary["open_positions"][0];
    let want_open = &reference["open_trades"][0];
    assert_eq!(open["size"].as_f64(), want_open["size"].as_f64());
    assert_eq!(open["avg_entry"], want_open["entry_price"]);

    // The journal replays to identical decisions.
    let r = tickloop(&["replay", "--journal", &journal, "--verify"]);
    assert!(r.status.success(), "{}", clear_failure(&r));
    assert!(
        stdout(&r).contains("every action matches"),
        "{}",
        stdout(&r)
    );
}

#[test]
fn the_drop_trigger_trades_and_its_risk_limits_deny_with_their_reason() {
    let base = [
        "backtest",
        "--data",
        DATA,
        "--strategy",
        "drop_trigger",
        "--param",
        "trigger=0.995",
        "--param",
        "lookback=12",
        "--param",
        "size_quote=2000",
        "--param",
        "take_profit=1.003",
        "--param",
        "stop_loss=0.997",
        "--json",
    ];
    let o = tickloop(&base);
    assert!(o.status.success(), "{}", clear_failure(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(s["trades"].as_u64().unwrap() > 10, "{s}");
    assert_eq!(s["stats"]["denied"], 0, "{s}");
    // The same run with an order limit below the position size: every entry is denied.
    let mut args = base.to_vec();
    args.extend(["--risk", "max_order_notional=1000"]);
    let o = tickloop(&args);
    assert!(o.status.success(), "{}", clear_failure(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["trades"], 0, "{s}");
    assert!(s["stats"]["denied"].as_u64().unwrap() > 10, "{s}");
}

#[test]
fn bad_backtest_input_is_one_clear_error() {
    let dir = TempDir::new("backtest-bad");
    let bad = dir.file("bad.csv");
    std::fs::write(
        &bad,
        ",Open,High,Low,Close,Volume\n2020-01-01,1,2,0.5,NaN,1\n",
    )
    .unwrap();
    for (args, expect) in [
        (
            vec!["--data", DATA, "--strategy", "nope"],
            "is not a strategy tickloop has",
        ),
        (
            vec![
                "--data",
                DATA,
                "--strategy",
                "sma_cross",
                "--param",
                "n1=30",
            ],
            "n1 = 30 and n2 = 20",
        ),
        (
            vec![
                "--data",
                DATA,
                "--strategy",
                "sma_cross",
                "--param",
                "bogus=1",
            ],
            "bogus",
        ),
        (
            vec!["--data", DATA, "--strategy", "sma_cross", "--param", "n1"],
            "KEY=VALUE",
        ),
        (vec!["--data", &bad, "--strategy", "sma_cross"], "line 2"),
        (
            vec!["--data", "/nonexistent/x.csv", "--strategy", "sma_cross"],
            "x.csv",
        ),
    ] {
        let mut full = vec!["backtest"];
        full.extend(args.iter().copied());
        let o = tickloop(&full);
        let err = clear_failure(&o);
        assert!(err.contains(expect), "{full:?}: {err}");
    }
}
