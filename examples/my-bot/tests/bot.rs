//! The template bot as its user runs it: `mybot backtest` over the bundled data, trade for
//! trade against the strategy's rule evaluated here, and `mybot run` live against a ring and
//! the paper adapter, whose journal `mybot replay --verify` reproduces.

use my_bot::indicators::{Ema, Rsi};
use my_bot::{decide, Decision, MeanReversionConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const MYBOT: &str = env!("CARGO_BIN_EXE_mybot");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/EURUSD.csv");

fn mybot(args: &[&str]) -> Output {
    Command::new(MYBOT).args(args).output().expect("run mybot")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("mybot-test-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (open, low, close) of every bar of the bundled file.
fn bars() -> Vec<(f64, f64, f64)> {
    let text = std::fs::read_to_string(DATA).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            (
                f[1].parse().unwrap(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            )
        })
        .collect()
}

/// The trades the rule makes over `bars`, as (entry bar, exit bar, units, entry, exit): a
/// signal on bar i's close fills at bar i+1's open, in whole units of `size_quote`; the
/// stop-loss (the signal's close × stop_loss) fills at the first bar from the entry's on whose
/// low reaches it, at the stop (or the open, when it opened below), unless an exit signal's
/// close filled at that bar's open first.
fn expected_trades(
    c: &MeanReversionConfig,
    bars: &[(f64, f64, f64)],
) -> Vec<(u64, u64, f64, f64, f64)> {
    let (mut ema, mut rsi) = (Ema::new(c.ema), Rsi::new(c.rsi));
    let mut open: Option<(u64, f64, f64, f64)> = None;
    let mut pending: Option<(Decision, f64)> = None;
    let mut trades = Vec::new();
    for (i, &(o, low, close)) in bars.iter().enumerate() {
        let i = i as u64;
        match pending.take() {
            Some((Decision::Buy, sl)) => open = Some((i, (c.size_quote / o).floor(), o, sl)),
            Some((Decision::Close, _)) => {
                let (bar, units, entry, _) = open.take().unwrap();
                trades.push((bar, i, units, entry, o));
            }
            _ => {}
        }
        if let Some((bar, units, entry, sl)) = open {
            if sl > 0.0 && low <= sl {
                trades.push((bar, i, units, entry, o.min(sl)));
                open = None;
            }
        }
        let (Some(e), Some(r)) = (ema.push(close), rsi.push(close)) else {
            continue;
        };
        match decide(c, close, e, r, open.map(|(_, _, entry, _)| entry)) {
            Decision::Nothing => {}
            d => pending = Some((d, close * c.stop_loss)),
        }
    }
    trades
}

#[test]
fn a_backtest_makes_exactly_the_trades_of_the_rule() {
    let dir = TempDir::new("backtest");
    let trades_file = dir.file("trades.jsonl");
    let journal = dir.file("backtest.journal");
    let o = mybot(&[
        "backtest",
        "--strategy",
        "mean_reversion",
        "--data",
        DATA,
        "--json",
        "--trades-out",
        &trades_file,
        "--journal",
        &journal,
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    let got: Vec<Value> = std::fs::read_to_string(&trades_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want = expected_trades(&MeanReversionConfig::default(), &bars());
    assert!(
        want.len() >= 10,
        "the rule trades on this data: {}",
        want.len()
    );
    assert_eq!(got.len(), want.len(), "trades: {summary}");
    assert_eq!(summary["trades"], want.len());
    let mut pnl = 0.0;
    for (g, (entry_bar, exit_bar, units, entry, exit)) in got.iter().zip(&want) {
        assert_eq!(g["entry_bar"], *entry_bar, "{g}");
        assert_eq!(g["exit_bar"], *exit_bar, "{g}");
        assert_eq!(g["size"].as_f64(), Some(*units), "{g}");
        assert_eq!(g["entry_price"].as_f64(), Some(*entry), "{g}");
        assert_eq!(g["exit_price"].as_f64(), Some(*exit), "{g}");
        pnl += units * (exit - entry);
    }
    let booked: f64 = got.iter().map(|g| g["pnl"].as_f64().unwrap()).sum();
    assert!((booked - pnl).abs() < 1e-6, "{booked} vs {pnl}");
    // The backtest's journal replays to the same decisions, in the program that has the strategy.
    let r = mybot(&["replay", "--journal", &journal, "--verify"]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(
        text(&r.stdout).contains("every action matches"),
        "{}",
        text(&r.stdout)
    );
}

#[test]
fn bad_parameters_are_one_line_naming_the_key() {
    for (param, want) in [
        (
            "ema=abc",
            "mean_reversion: ema: invalid type: string \"abc\", expected u32",
        ),
        ("emma=3", "unknown field `emma`"),
        ("oversold=80", "0 < oversold < exit_rsi < 100"),
    ] {
        let o = mybot(&[
            "backtest",
            "--strategy",
            "mean_reversion",
            "--data",
            DATA,
            "--param",
            param,
        ]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{param}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{param}: {err}");
        assert!(
            err.starts_with("mybot: error: ") && err.contains(want),
            "{param}: {err}"
        );
    }
    let o = mybot(&["backtest", "--strategy", "mean_revert", "--data", DATA]);
    let err = text(&o.stderr);
    assert!(
        err.contains("\"mean_revert\" is not a strategy mybot has: use one of sma_cross, drop_trigger, limit_bracket, stop_breakout, mean_reversion"),
        "{err}"
    );
    let o = mybot(&["strategies"]);
    assert_eq!(
        text(&o.stdout),
        "sma_cross\ndrop_trigger\nlimit_bracket\nstop_breakout\nmean_reversion\n"
    );
}

fn status(path: &str) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn live_config(dir: &TempDir, ring: &str) -> String {
    let cfg = dir.file("mybot.toml");
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/mybot.toml")).unwrap();
    // The template's own file, with this test's ring, files and the binary's full path.
    let text = template
        .replace("name = \"eurusd\"", &format!("name = \"{ring}\""))
        .replace("/tmp/mybot.status.json", &dir.file("status.json"))
        .replace("/tmp/mybot.journal", &dir.file("run.journal"))
        .replace(
            "\"mybot\", \"adapter\", \"paper\", \"--ring\", \"eurusd\"",
            &format!("{MYBOT:?}, \"adapter\", \"paper\", \"--ring\", \"{ring}\""),
        )
        .replace(
            "account = \"mybot-paper\"",
            &format!(
                "account = \"mybot-test-{}\"\nlock_dir = \"{}\"",
                std::process::id(),
                dir.file("locks")
            ),
        );
    assert!(
        text.contains(ring) && text.contains(MYBOT),
        "the template's keys moved: {text}"
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// A program without the strategy says which program recorded the journal, in one line.
fn replay_in_tickloop_names_mybot(journal: &str) {
    let tickloop = Path::new(MYBOT).with_file_name("tickloop");
    if !tickloop.is_file() {
        println!(
            "skipping the replay in tickloop: {} is not built",
            tickloop.display()
        );
        return;
    }
    let o = Command::new(&tickloop)
        .args(["replay", "--journal", journal])
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(
            "was recorded by mybot running strategy \"mean_reversion\", which tickloop does not have"
        ),
        "{err}"
    );
}

/// `mybot run` on the template's config, once its status file shows it running.
fn start_engine(cfg: &str, status_file: &str) -> std::process::Child {
    let check = mybot(&["config", "check", cfg]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    let run = Command::new(MYBOT)
        .args(["run", "--config", cfg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the status file", Duration::from_secs(30), || {
        status(status_file).is_some()
    });
    run
}

#[test]
fn a_live_run_trades_through_the_paper_adapter_and_its_journal_replays() {
    let dir = TempDir::new("live");
    let ring = format!("mybot-test-{}", std::process::id());
    let ring_path = Path::new("/dev/shm").join(&ring);
    let _ = std::fs::remove_file(&ring_path);
    let o = mybot(&["ring", "create", "--ring", &ring, "--slots", "8192"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let status_file = dir.file("status.json");
    let run = start_engine(&live_config(&dir, &ring), &status_file);
    let fed = mybot(&[
        "feed", "replay", "--data", DATA, "--ring", &ring, "--pace", "x3600000",
    ]);
    assert!(fed.status.success(), "{}", text(&fed.stderr));
    // Every candle read and every entry done: at most the stop-loss of a trade still open
    // rests at the end.
    wait_for("every candle and order", Duration::from_secs(60), || {
        status(&status_file).is_some_and(|d| {
            d["candles"] == 5000 && d["trading"]["open_orders"].as_u64().is_some_and(|n| n <= 1)
        })
    });
    let doc = status(&status_file).unwrap();
    assert_eq!(doc["trading"]["strategy"], "mean_reversion", "{doc}");
    let fills = doc["trading"]["fills"].as_u64().unwrap_or(0);
    assert!(
        fills >= 10,
        "the paper adapter filled the strategy's orders: {doc}"
    );
    assert_eq!(doc["trading"]["fill_faults"], 0, "{doc}");
    // SIGTERM: a clean stop, exit 0.
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(run.id() as i32, libc::SIGTERM) }, 0);
    let out = run.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&ring_path);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let journal = dir.file("run.journal");
    let r = mybot(&["replay", "--journal", &journal, "--verify"]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(
        text(&r.stdout).contains("every action matches"),
        "{}",
        text(&r.stdout)
    );
    replay_in_tickloop_names_mybot(&journal);
}
