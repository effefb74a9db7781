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

/// Run reference script `script` into `target/NAME-check.json`: what it wrote (and its
/// stderr), or `None` when the machine cannot run it (said why).
fn regenerate(script: &str) -> Option<(serde_json::Value, String)> {
    let venv_ok = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !venv_ok {
        skip("python3 with venv and ensurepip is not installed (scripts/setup.sh installs python3-venv)");
        return None;
    }
    let out = Path::new(ROOT).join(format!("target/{script}-check.json"));
    let o = Command::new(Path::new(ROOT).join(format!("scripts/{script}.sh")))
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{script}.sh: {e}"));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        if err.contains("pip") || err.contains("Could not find") || err.contains("network") {
            skip(&format!(
                "installing backtesting.py from PyPI failed: {}",
                err.trim()
            ));
            return None;
        }
        panic!("scripts/{script}.sh failed: {err}");
    }
    let fresh = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    Some((fresh, err))
}

fn committed(name: &str) -> serde_json::Value {
    let path = Path::new(ROOT).join("data/reference").join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn backtesting_py_reference_reproduces() {
    let Some((mut fresh, err)) = regenerate("backtesting_reference") else {
        return;
    };
    let mut committed = committed("sma_cross_eurusd.json");
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
    let Some((mut fresh, err)) = regenerate("order_reference") else {
        return;
    };
    let mut committed = committed("orders_eurusd.json");
    for v in [&mut fresh, &mut committed] {
        v["versions"]["python"] = serde_json::Value::Null;
    }
    assert_eq!(committed, fresh, "the order reference changed: {err}");
}
