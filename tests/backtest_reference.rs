//! The committed backtesting.py references (data/reference/sma_cross_eurusd.json and
//! orders_eurusd.json) are what backtesting.py really produces: re-run
//! scripts/backtesting_reference.sh and scripts/order_reference.sh (a venv under target/ with
//! the pinned versions, kept between runs) and compare. Skips, saying why, where python3, its
//! venv module or PyPI is unavailable.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn skip(why: &str) {
    eprintln!("SKIP backtesting.py reference: {why}");
}

#[test]
fn backtesting_py_reference_reproduces() {
    let venv_ok = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !venv_ok {
        return skip("python3 with venv and ensurepip is not installed (scripts/setup.sh installs python3-venv)");
    }
    let out = Path::new(ROOT).join("target/backtesting-reference-check.json");
    let o = Command::new(Path::new(ROOT).join("scripts/backtesting_reference.sh"))
        .arg(&out)
        .output()
        .expect("run scripts/backtesting_reference.sh");
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        if err.contains("pip") || err.contains("Could not find") || err.contains("network") {
            return skip(&format!(
                "installing backtesting.py from PyPI failed: {}",
                err.trim()
            ));
        }
        panic!("the reference script failed: {err}");
    }
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let mut fresh = read(&out);
    let mut committed = read(&Path::new(ROOT).join("data/reference/sma_cross_eurusd.json"));
    let _ = std::fs::remove_file(&out);
    // The interpreter's version is recorded but does not decide the numbers.
    for v in [&mut fresh, &mut committed] {
        v["versions"]["python"] = serde_json::Value::Null;
    }
    assert_eq!(
        committed["trades"], fresh["trades"],
        "the trade list changed"
    );
    assert_eq!(committed["final_equity"], fresh["final_equity"]);
    // backtesting.py's summary statistics (alpha, beta...) go through numpy reductions whose
    // last bit depends on the CPU's SIMD path: equal to 1e-12 relative, then compared no more.
    // The trades, the equity curve and everything tickloop reproduces stay exact.
    let stats = |v: &serde_json::Value| v["stats"].as_object().cloned().unwrap_or_default();
    let (a, b) = (stats(&committed), stats(&fresh));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the stats changed"
    );
    for (k, x) in &a {
        let y = &b[k];
        match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => assert!(
                x == y || (x - y).abs() <= x.abs().max(y.abs()) * 1e-12,
                "stat {k}: committed {x}, fresh {y}"
            ),
            _ => assert_eq!(x, y, "stat {k}"),
        }
    }
    for v in [&mut fresh, &mut committed] {
        v["stats"] = serde_json::Value::Null;
    }
    assert_eq!(committed, fresh, "the reference changed: {err}");
    assert_eq!(fresh["trades"].as_array().unwrap().len(), 262);
    assert_eq!(
        fresh["numerics"]["documented_rules_reproduce_every_trade_and_equity_bit_for_bit"],
        true
    );
}

/// The order references: every run's trades, cash and equity as committed (the interpreter's
/// version aside). Runs after the venv exists or skips as the test above does.
#[test]
fn order_references_reproduce() {
    let venv_ok = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !venv_ok {
        return skip("python3 with venv and ensurepip is not installed (scripts/setup.sh installs python3-venv)");
    }
    let out = Path::new(ROOT).join("target/order-reference-check.json");
    let o = Command::new(Path::new(ROOT).join("scripts/order_reference.sh"))
        .arg(&out)
        .output()
        .expect("run scripts/order_reference.sh");
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        if err.contains("pip") || err.contains("Could not find") || err.contains("network") {
            return skip(&format!(
                "installing backtesting.py from PyPI failed: {}",
                err.trim()
            ));
        }
        panic!("the order reference script failed: {err}");
    }
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let mut fresh = read(&out);
    let mut committed = read(&Path::new(ROOT).join("data/reference/orders_eurusd.json"));
    let _ = std::fs::remove_file(&out);
    for v in [&mut fresh, &mut committed] {
        v["versions"]["python"] = serde_json::Value::Null;
    }
    assert_eq!(committed, fresh, "the order reference changed: {err}");
}
