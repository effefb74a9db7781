//! A real account's life through the ccxt adapter (`adapters/ccxt`, Python, ccxt 4.x) against
//! the mock Binance spot exchange (`tickloop_ccxt.mock_binance`, aiohttp on loopback): real
//! processes, real HTTP, real signals. The engine (`tickloop run`) trades, is SIGKILLed, and
//! restarts; what it believes is checked against the exchange's own books.
//!
//! The virtual environment comes from `scripts/ccxt_venv.sh` (made under target/ the first
//! time, from PyPI).

mod common;
use common::prom::http;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "tk-key-6f1d2c";
const SECRET: &str = "tk-secret-a91e77d04b";

/// The venv's python, made by the script (one at a time, whatever runs in parallel).
fn python() -> String {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ccxt_venv.sh"))
        .output()
        .expect("run scripts/ccxt_venv.sh");
    assert!(
        out.status.success(),
        "scripts/ccxt_venv.sh failed (it needs python3-venv and PyPI): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The mock exchange, on a free loopback port.
struct Mock {
    child: Child,
    addr: String,
}

impl Mock {
    fn start(python: &str, extra: &[&str]) -> Mock {
        let mut child = Command::new(python)
            .args(["-m", "tickloop_ccxt.mock_binance", "--port", "0"])
            .args(["--key", KEY, "--secret", SECRET])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the mock exchange");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("the mock said {line:?}"))
            .to_string();
        Mock { child, addr }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn get(&self, path: &str) -> Value {
        let (code, body) = http(
            &self.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let body = body.to_string();
        let (code, text) = http(
            &self.addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: mock\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        );
        assert_eq!(code, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    fn state(&self) -> Value {
        self.get("/mock/state")
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One test's account: the mock exchange, a ring, the engine's config and its files.
struct Account {
    mock: Mock,
    ring: Name,
    dir: TempDir,
    cfg: String,
    status: String,
    tele: String,
}

/// The adapter's command line, the engine's `[orders]` extras and the adapter's own keys:
/// what a test changes.
struct Setup<'a> {
    mock_args: &'a [&'a str],
    strategy: &'a str,
    adapter_args: &'a [&'a str],
    orders: &'a str,
    adapter: &'a str,
    env: String,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            mock_args: &[
                "--symbols",
                "EUR/USD",
                "--balance",
                "USD=10000",
                "--price",
                "EURUSD=1.1",
            ],
            adapter_args: &[],
            strategy: "[strategy]\nname = \"drop_trigger\"\n[strategy.params]\ntrigger = 0.997\n\
                       lookback = 12\ntake_profit = 1.002\nstop_loss = 0.995\nsize_quote = 1000\n\
                       max_positions = 2\n",
            orders: "",
            adapter: "request_timeout_ms = 10000",
            env: format!("TICKLOOP_CCXT_API_KEY = \"{KEY}\", TICKLOOP_CCXT_SECRET = \"{SECRET}\""),
        }
    }
}

impl Account {
    fn new(tag: &str, setup: Setup<'_>) -> Account {
        let python = python();
        let mock = Mock::start(&python, setup.mock_args);
        let ring = Name::new();
        create_ring(&ring, 1 << 13);
        let dir = TempDir::new(tag);
        let cfg = dir.file("engine.toml");
        let mut command = vec![
            python.as_str(),
            "-m",
            "tickloop_ccxt",
            "--exchange",
            "binance",
            "--quote",
            "USD",
            "--poll-ms",
            "100",
            "--deadline-ms",
            "8000",
        ];
        let base = mock.base();
        command.extend(["--api-base", &base]);
        command.extend(setup.adapter_args);
        std::fs::write(
            &cfg,
            format!(
                "[engine]\naccount = \"ccxt-test\"\nlock_dir = \"{locks}\"\n\n\
                 [[rings]]\nname = \"{ring}\"\n\n\
                 [status]\npath = \"{status}\"\ninterval_ms = 100\n\
                 [journal]\npath = \"{journal}\"\n[telemetry]\ndir = \"{tele}\"\n\
                 {strategy}\
                 [orders]\ncash = 10000\nadapter = 0\n{orders}\n\
                 [risk]\nmax_order_notional = 1000000\n\
                 [adapters]\nsymbols = [\"EURUSD\"]\n\n\
                 [[adapters.adapter]]\nname = \"binance\"\ncommand = {command:?}\n{adapter}\n\
                 env = {{ {env} }}\n",
                locks = dir.file("locks"),
                ring = ring.0,
                status = dir.file("status.json"),
                journal = dir.file("run-{epoch}.tlj"),
                tele = dir.file("telemetry"),
                orders = setup.orders,
                strategy = setup.strategy,
                adapter = setup.adapter,
                env = setup.env,
            ),
        )
        .unwrap();
        std::fs::create_dir(dir.file("telemetry")).unwrap();
        Account {
            status: dir.file("status.json"),
            tele: dir.file("telemetry"),
            mock,
            ring,
            dir,
            cfg,
        }
    }

    fn start(&self, log: &str) -> Child {
        Command::new(TICKLOOP)
            .args(["run", "--config", &self.cfg])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.file(log)).unwrap())
            .spawn()
            .unwrap()
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        telemetry_events(&self.tele)
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .collect()
    }

    fn status(&self) -> Value {
        status_doc(&self.status)
    }

    /// The strategy starts once the books are reconciled with the exchange's.
    fn wait_reconciled(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.events("reconciled").is_empty() {
            assert!(
                Instant::now() < deadline,
                "no reconciliation in 60 s: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The engine logs of the run so far, for a failure's message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(&self.dir.0).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "log") {
                out += &format!(
                    "\n--- {}:\n{}",
                    p.display(),
                    std::fs::read_to_string(&p).unwrap()
                );
            }
        }
        out
    }

    /// Rows `rows` of the EURUSD hourly data into the ring, fast.
    fn feed(&self, rows: std::ops::Range<usize>) {
        let all = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/EURUSD.csv"))
            .unwrap();
        let mut lines = all.lines();
        let header = lines.next().unwrap();
        let part = self.dir.file(&format!("EURUSD-{}.csv", rows.start));
        let body: Vec<&str> = lines.skip(rows.start).take(rows.len()).collect();
        std::fs::write(&part, format!("{header}\n{}\n", body.join("\n"))).unwrap();
        let fed = tickloop(&[
            "feed",
            "replay",
            "--data",
            &part,
            "--ring",
            &self.ring.0,
            "--symbol",
            "EURUSD",
            "--pace",
            "x3600000",
        ]);
        assert!(
            fed.status.success(),
            "{}",
            String::from_utf8_lossy(&fed.stderr)
        );
    }

    /// Every candle read and every order of the engine's settled.
    fn wait_settled(&self, candles: u64, limit: Duration) {
        wait("every candle read and every order settled", limit, || {
            let doc = self.status();
            doc["candles"] == candles && doc["trading"]["open_orders"] == 0
        });
        // The fill poll runs every 100 ms: the last fills are in well before 2 s.
        std::thread::sleep(Duration::from_secs(2));
    }

    /// The engine's fills and position are the exchange's trades and balance; no client id
    /// was placed twice.
    fn assert_books_match(&self) -> Value {
        let doc = self.status();
        let state = self.mock.state();
        let trading = &doc["trading"];
        let trades = state["trades"].as_array().unwrap();
        assert_eq!(
            trading["fills"].as_u64().unwrap() as usize,
            trades.len(),
            "{doc}\n{state}"
        );
        let balance = &state["balances"]["EUR"];
        let eur =
            balance["free"].as_f64().unwrap_or(0.0) + balance["locked"].as_f64().unwrap_or(0.0);
        let held: f64 = trading["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["size"].as_f64().unwrap())
            .sum();
        assert!(
            (held - eur).abs() < 1e-6,
            "engine holds {held}, the exchange {eur}: {doc}"
        );
        assert_each_client_id_once(&state);
        state
    }

    /// No file of the run holds the API key or the secret.
    fn assert_no_secret(&self) {
        let mut files: Vec<_> = std::fs::read_dir(&self.dir.0)
            .unwrap()
            .chain(std::fs::read_dir(&self.tele).unwrap())
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && !p.ends_with("engine.toml"))
            .collect();
        files.sort();
        assert!(
            files.iter().any(|f| f.to_string_lossy().ends_with(".tlj")),
            "{files:?}"
        );
        for path in files {
            let bytes = std::fs::read(&path).unwrap();
            for secret in [KEY, SECRET] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} holds {secret}",
                    path.display()
                );
            }
        }
    }

    fn stop(&self, mut engine: Child, log: &str) {
        unsafe { libc::kill(engine.id() as i32, libc::SIGTERM) };
        let out = engine.wait().unwrap();
        let text = std::fs::read_to_string(self.dir.file(log)).unwrap();
        assert!(out.success(), "{text}");
    }
}

fn wait(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The engine's orders at the exchange (client ids of its account's prefix), each once.
fn assert_each_client_id_once(state: &Value) -> usize {
    let mut ids: Vec<&str> = state["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["clientOrderId"].as_str().unwrap())
        .filter(|c| c.starts_with("tl-ccxt-test-"))
        .collect();
    let placed = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), placed, "a client id was placed twice: {state}");
    placed
}

/// This account's client id of order `n` of epoch 5 (an earlier run's).
fn earlier(n: u64) -> (u64, String) {
    let id = (5u64 << 31) + n;
    (id, format!("tl-ccxt-test-{id}"))
}

#[test]
fn a_bot_trades_through_ccxt_and_its_books_are_the_exchanges() {
    let a = Account::new("ccxt-trade", Setup::default());
    let engine = a.start("engine.log");
    a.wait_reconciled();
    a.feed(0..3000);
    a.wait_settled(3000, Duration::from_secs(60));
    let state = a.assert_books_match();
    assert!(
        state["trades"].as_array().unwrap().len() >= 4,
        "too few trades: {state}"
    );
    assert_eq!(a.status()["trading"]["rejected"], 0);
    a.stop(engine, "engine.log");
    a.assert_no_secret();
}

/// While the engine is down, one of this account's orders from an earlier run fills (a
/// position), another rests (a working limit order), and someone places an order at the
/// exchange behind the engine's back. What the exchange then holds in EUR.
fn exchange_moves_on(a: &Account) -> f64 {
    let order = |side: &str, kind: &str, qty: f64, price: f64, cid: &str| {
        a.mock.post(
            "/mock/order",
            json!({"symbol": "EURUSD", "side": side, "type": kind, "quantity": qty, "price": price, "clientOrderId": cid}),
        );
    };
    order("BUY", "MARKET", 500.0, 0.0, &earlier(1).1);
    order("BUY", "LIMIT", 300.0, 1.0, &earlier(2).1);
    order("SELL", "LIMIT", 100.0, 1.5, "web_by_hand");
    let state = a.mock.state();
    let eur = &state["balances"]["EUR"];
    eur["free"].as_f64().unwrap() + eur["locked"].as_f64().unwrap()
}

/// Each start journals to a file of its own, named by its epoch; the reconciled run's
/// replays to the same decisions.
fn assert_each_start_journals_apart(a: &Account) {
    let epoch = std::fs::read_to_string(a.dir.file("locks/ccxt-test.epoch")).unwrap();
    let epoch: u64 = epoch.trim().parse().unwrap();
    assert!(std::path::Path::new(&a.dir.file(&format!("run-{}.tlj", epoch - 1))).exists());
    let journal = a.dir.file(&format!("run-{epoch}.tlj"));
    let r = tickloop(&["replay", "--journal", &journal, "--verify"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

#[test]
fn a_sigkilled_engine_adopts_the_position_and_working_order_the_exchange_holds() {
    let a = Account::new("ccxt-restart", Setup::default());
    let mut engine = a.start("engine1.log");
    a.wait_reconciled();
    a.feed(0..1500);
    a.wait_settled(1500, Duration::from_secs(60));
    a.assert_books_match();
    // SIGKILL: no goodbye. Meanwhile the exchange moves on.
    engine.kill().unwrap();
    engine.wait().unwrap();
    let venue_eur = exchange_moves_on(&a);
    for f in std::fs::read_dir(&a.tele).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let _ = std::fs::remove_file(&a.status);
    let engine = a.start("engine2.log");
    a.wait_reconciled();
    let diffs = a.events("reconcile_difference");
    let find = |d: &str| {
        let found = diffs.iter().find(|e| e["difference"] == d).cloned();
        found.unwrap_or_else(|| panic!("no {d} difference: {diffs:?}"))
    };
    let position = find("position");
    assert_eq!(position["venue"].as_f64().unwrap(), venue_eur, "{position}");
    assert_eq!(position["adopted"], true);
    let adopted = find("order_not_in_engine");
    assert_eq!(
        adopted["order"].as_u64().unwrap(),
        earlier(2).0,
        "{adopted}"
    );
    assert_eq!(adopted["venue"].as_f64().unwrap(), 300.0);
    let foreign = find("foreign_order");
    assert_eq!(
        (foreign["order"].as_u64(), foreign["adopted"].as_bool()),
        (Some(0), Some(false))
    );
    wait(
        "the status to show what was adopted",
        Duration::from_secs(10),
        || {
            let doc = a.status();
            let positions = doc["trading"]["positions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            doc["trading"]["open_orders"] == 1
                && positions
                    .iter()
                    .any(|p| p["size"].as_f64() == Some(venue_eur))
        },
    );
    // The strategy goes on; the adopted order's fill is booked when the price comes to it.
    a.feed(1500..2500);
    wait("the second part read", Duration::from_secs(60), || {
        a.status()["candles"] == 1000
    });
    a.mock
        .post("/mock/price", json!({"symbol": "EURUSD", "price": 0.99}));
    wait("the adopted order's fill", Duration::from_secs(20), || {
        a.events("fill")
            .iter()
            .any(|f| f["order"].as_u64() == Some(earlier(2).0))
    });
    a.stop(engine, "engine2.log");
    assert_each_client_id_once(&a.mock.state());
    assert_each_start_journals_apart(&a);
    a.assert_no_secret();
}

#[test]
fn a_place_whose_answer_is_lost_is_unknown_until_the_exchange_says_and_is_placed_once() {
    // The engine gives up on an answer after 1.5 s; the exchange takes the first order and
    // never answers (the adapter's own HTTP timeout is 3 s).
    let setup = Setup {
        adapter_args: &["--timeout-ms", "3000"],
        adapter: "request_timeout_ms = 1500",
        ..Setup::default()
    };
    let a = Account::new("ccxt-lost", setup);
    a.mock.post(
        "/mock/faults",
        json!({"lose_response": 1, "hang_s": 6, "paths": ["/api/v3/order"]}),
    );
    let engine = a.start("engine.log");
    a.wait_reconciled();
    a.feed(0..2000);
    a.wait_settled(2000, Duration::from_secs(60));
    let unknown = a.events("order_unknown");
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    let order = unknown[0]["order"].as_u64().unwrap();
    // Resolved by the exchange's answer: its fill is booked, once.
    let fills: Vec<Value> = a
        .events("fill")
        .into_iter()
        .filter(|f| f["order"].as_u64() == Some(order))
        .collect();
    assert_eq!(fills.len(), 1, "{fills:?}");
    let state = a.assert_books_match();
    assert_eq!(state["faults_fired"]["lose_response"], 1, "{state}");
    let cid = format!("tl-ccxt-test-{order}");
    let at_exchange = state["orders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["clientOrderId"] == cid.as_str())
        .count();
    assert_eq!(at_exchange, 1, "{state}");
    assert_eq!(a.status()["trading"]["orders_unknown"], 1);
    a.stop(engine, "engine.log");
}

#[test]
fn an_adapter_killed_with_orders_in_flight_is_restarted_and_reconciled_before_any_new_order() {
    let a = Account::new("ccxt-adapter-kill", Setup::default());
    // Every answer takes 300 ms: orders are in flight when the adapter dies.
    a.mock.post("/mock/faults", json!({"latency_ms": 300}));
    let engine = a.start("engine.log");
    a.wait_reconciled();
    let feeder = {
        let ring = a.ring.0.clone();
        let data = a.dir.file("EURUSD-slow.csv");
        let all = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/EURUSD.csv"))
            .unwrap();
        std::fs::write(
            &data,
            all.lines().take(2001).collect::<Vec<_>>().join("\n") + "\n",
        )
        .unwrap();
        std::thread::spawn(move || {
            tickloop(&[
                "feed", "replay", "--data", &data, "--ring", &ring, "--symbol", "EURUSD", "--pace",
                "x720000",
            ])
        })
    };
    // Once orders flow, kill the adapter (SIGKILL: its requests die with it).
    wait("the first fills", Duration::from_secs(30), || {
        a.status()["trading"]["fills"].as_u64().unwrap_or(0) >= 2
    });
    wait("an order in flight", Duration::from_secs(30), || {
        a.status()["adapters"][0]["in_flight"].as_u64().unwrap_or(0) > 0
    });
    let pid = a.status()["adapters"][0]["pid"].as_i64().unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(feeder.join().unwrap().status.success());
    a.wait_settled(2000, Duration::from_secs(60));
    let doc = a.status();
    assert!(doc["adapters"][0]["starts"].as_u64().unwrap() >= 2, "{doc}");
    assert!(
        doc["trading"]["reconciliations"].as_u64().unwrap() >= 2,
        "{doc}"
    );
    a.assert_books_match();
    // Orders the strategy made while the books were reconciled were denied, never sent.
    for d in a.events("risk_denied") {
        assert!(
            ["reconciling"].contains(&d["reason"].as_str().unwrap()),
            "{d}"
        );
    }
    a.stop(engine, "engine.log");
}

#[test]
fn rate_limits_server_errors_timeouts_and_garbage_are_waited_out_and_every_request_ends() {
    let setup = Setup {
        adapter_args: &["--timeout-ms", "2000"],
        ..Setup::default()
    };
    let a = Account::new("ccxt-faults", setup);
    a.mock.post(
        "/mock/faults",
        json!({
            "rate_limit": {"n": 4}, "retry_after_s": 1,
            "server_error": {"n": 3, "paths": ["/api/v3/order", "/api/v3/account"]},
            "timeout": {"n": 2, "paths": ["/api/v3/openOrders", "/api/v3/order"]}, "hang_s": 4,
            "garbage": {"n": 2, "paths": ["/api/v3/account", "/api/v3/myTrades"]},
            "duplicate_fill": {"n": 3},
            "drop_connection": {"n": 2, "paths": ["/api/v3/myTrades", "/api/v3/order"]},
        }),
    );
    let engine = a.start("engine.log");
    a.wait_reconciled();
    a.feed(0..2000);
    a.wait_settled(2000, Duration::from_secs(90));
    let state = a.assert_books_match();
    let fired = &state["faults_fired"];
    for (fault, n) in [
        ("rate_limit", 4),
        ("server_error", 3),
        ("timeout", 2),
        ("garbage", 2),
        ("duplicate_fill", 3),
        ("drop_connection", 2),
    ] {
        assert_eq!(fired[fault], n, "{fault}: {state}");
    }
    let doc = a.status();
    // The adapter waited as the exchange asked (Retry-After: 1).
    let log = std::fs::read_to_string(a.dir.file("engine.log")).unwrap();
    assert!(
        log.contains("rate limited; waiting 1.0 s as the exchange asks (Retry-After)"),
        "{log}"
    );
    // Nothing is left hanging: every request the engine sent ended, and the loop stayed on
    // time while the adapter waited.
    assert_eq!(doc["adapters"][0]["in_flight"], 0, "{doc}");
    let lag = &doc["loop_lag"];
    assert!(lag["p99_ns"].as_u64().unwrap() < 50_000_000, "{lag}");
    assert!(lag["max_ns"].as_u64().unwrap() < 250_000_000, "{lag}");
    a.stop(engine, "engine.log");
    a.assert_no_secret();
}

/// A run of the engine that is expected to go nowhere: its log after `secs`, then SIGTERM.
fn log_after(a: &Account, secs: u64) -> String {
    let engine = a.start("engine.log");
    std::thread::sleep(Duration::from_secs(secs));
    a.stop(engine, "engine.log");
    std::fs::read_to_string(a.dir.file("engine.log")).unwrap()
}

#[test]
fn bad_keys_an_unknown_exchange_and_an_unknown_symbol_are_named_and_no_secret_is_written() {
    let wrong = Setup {
        env: format!(
            "TICKLOOP_CCXT_API_KEY = \"wrong-{KEY}\", TICKLOOP_CCXT_SECRET = \"{SECRET}\""
        ),
        ..Setup::default()
    };
    let a = Account::new("ccxt-bad-key", wrong);
    let log = log_after(&a, 6);
    assert!(log.contains("binance refused the API key"), "{log}");
    assert!(log.contains("check TICKLOOP_CCXT_API_KEY"), "{log}");
    // Nothing traded on an account it cannot see: the strategy never started.
    assert!(a.events("reconciled").is_empty());
    a.assert_no_secret();
    drop(a);

    let none = Setup {
        env: String::new(),
        ..Setup::default()
    };
    let a = Account::new("ccxt-no-key", none);
    let log = log_after(&a, 6);
    assert!(
        log.contains("no API key: set TICKLOOP_CCXT_API_KEY and TICKLOOP_CCXT_SECRET"),
        "{log}"
    );
    drop(a);

    let typo = Setup {
        adapter_args: &["--exchange", "binanse"],
        ..Setup::default()
    };
    let a = Account::new("ccxt-typo", typo);
    let log = log_after(&a, 6);
    assert!(
        log.contains("unknown exchange 'binanse' (did you mean binance"),
        "{log}"
    );
    drop(a);

    // The engine's symbol is not a market of the exchange: each order is refused, naming it.
    let other = Setup {
        mock_args: &["--symbols", "BTC/USDT", "--balance", "USD=10000"],
        ..Setup::default()
    };
    let a = Account::new("ccxt-symbol", other);
    let engine = a.start("engine.log");
    a.wait_reconciled();
    a.feed(0..1500);
    a.wait_settled(1500, Duration::from_secs(60));
    let rejected = a.events("order_rejected");
    assert!(!rejected.is_empty(), "{}\n{}", a.status(), a.logs());
    for r in &rejected {
        assert_eq!(r["reason"], "the venue refused it: unknown_symbol", "{r}");
    }
    a.stop(engine, "engine.log");
    let log = std::fs::read_to_string(a.dir.file("engine.log")).unwrap();
    assert!(log.contains("binance has no market 'EURUSD'"), "{log}");
}

/// `tickloop feed poll` through the ccxt adapter: `symbols` markets of the mock exchange, each
/// answer 300 ms late, for `seconds`; its JSON summary.
fn poll_through_ccxt(symbols: usize, seconds: u64, concurrency: u32) -> Value {
    let python = python();
    let count = symbols.to_string();
    let mock = Mock::start(
        &python,
        &["--symbols", "BTC/USDT", "--symbol-count", &count],
    );
    mock.post("/mock/faults", json!({"latency_ms": 300}));
    let names: Vec<String> = (0..symbols).map(|i| format!("S{i}USDT")).collect();
    let adapter = format!(
        "{python} -m tickloop_ccxt --exchange binance --api-base {} --quote USDT --rate-limit-ms 5",
        mock.base()
    );
    let ring = Name::new();
    let dir = TempDir::new("ccxt-poll");
    let journal = dir.file("poll.journal");
    let o = tickloop(&[
        "feed",
        "poll",
        "--ring",
        &ring.0,
        "--create",
        "--adapter",
        &adapter,
        "--symbols",
        &names.join(","),
        "--concurrency",
        &concurrency.to_string(),
        "--duration",
        &seconds.to_string(),
        "--journal",
        &journal,
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let v = tickloop(&["replay", "--journal", &journal, "--verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let _ = std::fs::remove_file(ring.path());
    r
}

#[test]
fn the_polling_feed_through_ccxt_keeps_130_symbols_on_a_1_5_s_cycle_with_300_ms_answers() {
    let r = poll_through_ccxt(130, 120, 32);
    println!("{r:#}");
    assert_eq!(r["overruns"], 0, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert!(r["cycles"].as_u64().unwrap() >= 70, "{r}");
    // Every symbol was asked, each answer took the exchange's 300 ms, and one bar of each
    // symbol's every complete minute reached the ring.
    assert!(r["answered"].as_u64().unwrap() >= 130, "{r}");
    assert!(r["cycle_max_ms"].as_f64().unwrap() < 1500.0, "{r}");
    assert!(r["published"].as_u64().unwrap() >= 130, "{r}");
}

/// The adapter process alone, spoken to over its pipes as the engine would.
struct AdapterProcess {
    child: Child,
    stdin: std::process::ChildStdin,
    frames: std::sync::mpsc::Receiver<Value>,
}

impl AdapterProcess {
    fn start(python: &str, mock: &Mock) -> AdapterProcess {
        let mut child = Command::new(python)
            .args([
                "-m",
                "tickloop_ccxt",
                "--exchange",
                "binance",
                "--quote",
                "USD",
            ])
            .args(["--api-base", &mock.base(), "--poll-ms", "100"])
            .env("TICKLOOP_CCXT_API_KEY", KEY)
            .env("TICKLOOP_CCXT_SECRET", SECRET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, frames) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut len = [0u8; 4];
            while stdout.read_exact(&mut len).is_ok() {
                let mut body = vec![0; u32::from_le_bytes(len) as usize];
                stdout.read_exact(&mut body).unwrap();
                if tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                    break;
                }
            }
        });
        let mut a = AdapterProcess {
            child,
            stdin,
            frames,
        };
        a.send(
            json!({"type": "hello", "protocol": 2, "engine": "test", "adapter": "t",
            "max_frame": 1 << 20, "ping_interval_ms": 1000, "client_prefix": "tl-t-"}),
        );
        a
    }

    fn send(&mut self, message: Value) {
        use std::io::Write;
        let body = message.to_string();
        self.stdin
            .write_all(&(body.len() as u32).to_le_bytes())
            .unwrap();
        self.stdin.write_all(body.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next frame of type `kind` (others skipped), within 20 s.
    fn next(&self, kind: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self
                .frames
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {kind} from the adapter"));
            if m["type"] == kind {
                return m;
            }
        }
    }

    /// Request `message` (its `id`): its final `done` or `error`.
    fn ask(&mut self, message: Value) -> Value {
        let id = message["id"].clone();
        self.send(message);
        loop {
            let m = self.next_any();
            if m["id"] == id && (m["type"] == "done" || m["type"] == "error") {
                return m;
            }
        }
    }

    fn next_any(&self) -> Value {
        self.frames
            .recv_timeout(Duration::from_secs(20))
            .expect("an answer from the adapter")
    }
}

impl Drop for AdapterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A mock exchange trading EUR/USD at 1.072 (10000 USD in the account), the adapter spoken to
/// directly, and its hello.
fn eurusd_adapter() -> (Mock, AdapterProcess, Value) {
    let python = python();
    let mock = Mock::start(
        &python,
        &[
            "--symbols",
            "EUR/USD",
            "--balance",
            "USD=10000",
            "--price",
            "EURUSD=1.072",
        ],
    );
    let a = AdapterProcess::start(&python, &mock);
    let hello = a.next("hello");
    (mock, a, hello)
}

#[test]
fn stop_orders_rest_at_the_exchange_until_the_price_reaches_them() {
    let (mock, mut a, hello) = eurusd_adapter();
    let caps = hello["capabilities"].as_array().unwrap();
    assert!(
        caps.contains(&json!("stop_orders")) && caps.contains(&json!("reconcile")),
        "{hello}"
    );
    // A buy stop above the market rests at the exchange.
    let place = |id: u64, side: &str, kind: &str, qty: f64, limit: Option<f64>, stop: f64| {
        json!({"type": "place_order", "id": id, "client_id": format!("tl-t-{id}"), "symbol": "EURUSD",
            "side": side, "qty": qty, "order_type": kind, "limit_price": limit, "stop_price": stop})
    };
    let done = a.ask(place(1, "buy", "stop", 100.0, None, 1.08));
    assert_eq!(done["type"], "done", "{done}");
    let orders = mock.state()["orders"].clone();
    assert_eq!(orders[0]["type"], "STOP_LOSS", "{orders}");
    assert_eq!(orders[0]["status"], "NEW", "{orders}");
    assert_eq!(orders[0]["clientOrderId"], "tl-t-1", "{orders}");
    // The market reaches it: it fills there, at the market, and the fill is reported once.
    mock.post("/mock/price", json!({"symbol": "EURUSD", "price": 1.09}));
    let fill = a.next("fill");
    assert_eq!(
        (
            fill["order"].as_u64(),
            fill["qty"].as_f64(),
            fill["price"].as_f64()
        ),
        (Some(1), Some(100.0), Some(1.09)),
        "{fill}"
    );
    // A stop-limit sell: triggered at its stop, it sells at its limit or better.
    let done = a.ask(place(2, "sell", "stop_limit", 60.0, Some(1.05), 1.07));
    assert_eq!(done["type"], "done", "{done}");
    mock.post("/mock/price", json!({"symbol": "EURUSD", "price": 1.06}));
    let fill = a.next("fill");
    assert_eq!(
        (fill["order"].as_u64(), fill["price"].as_f64()),
        (Some(2), Some(1.06)),
        "{fill}"
    );
    // A stop the market is already through is refused, naming why.
    let refused = a.ask(place(3, "buy", "stop", 10.0, None, 1.0));
    assert_eq!(refused["code"], "rejected", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("would trigger immediately"),
        "{refused}"
    );
    // Placing a client id again answers with the order it already is: never a second one.
    let again = a.ask(place(1, "buy", "stop", 100.0, None, 1.08));
    assert_eq!(again["type"], "done", "{again}");
    let state = mock.state();
    assert_eq!(state["orders"].as_array().unwrap().len(), 2, "{state}");
    assert_eq!(state["trades"].as_array().unwrap().len(), 2, "{state}");
}

/// A limit buy of EURUSD, client id `tl-t-<id>`.
fn limit_buy(id: u64, qty: f64, limit: f64) -> Value {
    json!({"type": "place_order", "id": id, "client_id": format!("tl-t-{id}"), "symbol": "EURUSD",
        "side": "buy", "qty": qty, "order_type": "limit", "limit_price": limit})
}

/// Replace `order` (a limit buy) by request `id`.
fn replace_buy(id: u64, order: u64, qty: f64, limit: f64) -> Value {
    json!({"type": "replace_order", "id": id, "order": order, "client_id": format!("tl-t-{order}"),
        "new_client_id": format!("tl-t-{id}"), "symbol": "EURUSD", "side": "buy", "qty": qty,
        "order_type": "limit", "limit_price": limit})
}

/// The exchange's order of client id `cid`.
fn order_of(state: &Value, cid: &str) -> Value {
    state["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["clientOrderId"] == cid)
        .cloned()
        .unwrap_or_else(|| panic!("no order {cid} at the exchange: {state}"))
}

/// The next fill, and what came before it.
fn next_fill(a: &AdapterProcess) -> (Value, Vec<Value>) {
    let mut seen = Vec::new();
    loop {
        let m = a.next_any();
        if m["type"] == "fill" {
            return (m, seen);
        }
        seen.push(m);
    }
}

#[test]
fn a_replace_changes_the_order_at_the_exchange_once_and_its_fills_keep_naming_it() {
    let (mock, mut a, hello) = eurusd_adapter();
    assert!(
        hello["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("replace")),
        "{hello}"
    );
    assert_eq!(a.ask(limit_buy(1, 100.0, 1.06))["type"], "done");
    // Changed: the exchange cancelled the order and holds the new one, by the replace's id.
    let done = a.ask(replace_buy(2, 1, 80.0, 1.065));
    assert_eq!(done["type"], "done", "{done}");
    let state = mock.state();
    assert_eq!(order_of(&state, "tl-t-1")["status"], "CANCELED", "{state}");
    let new = order_of(&state, "tl-t-2");
    assert_eq!(
        (
            new["status"].as_str(),
            new["origQty"].as_str(),
            new["price"].as_str()
        ),
        (Some("NEW"), Some("80.00000000"), Some("1.06500000")),
        "{state}"
    );
    // It fills at its new limit, reported by the replace's id (the engine's order is known
    // by it now); the old one's cancel is not the engine order's end.
    mock.post("/mock/price", json!({"symbol": "EURUSD", "price": 1.064}));
    let (fill, seen) = next_fill(&a);
    assert_eq!(
        (
            fill["order"].as_u64(),
            fill["qty"].as_f64(),
            fill["price"].as_f64()
        ),
        (Some(2), Some(80.0), Some(1.065)),
        "{fill}"
    );
    assert!(
        !seen.iter().any(|m| m["type"] == "order_update"),
        "{seen:?}"
    );
    // An order no longer open cannot be changed.
    let gone = a.ask(replace_buy(3, 2, 10.0, 1.06));
    assert_eq!(gone["code"], "unknown_order", "{gone}");
    refused_and_lost_replaces(&mock, &mut a);
}

/// A refused replace, and one whose answer is lost, of a new order `tl-t-4`.
fn refused_and_lost_replaces(mock: &Mock, a: &mut AdapterProcess) {
    // A change the exchange refuses leaves the order as it was.
    assert_eq!(a.ask(limit_buy(4, 10.0, 1.0))["type"], "done");
    let refused = a.ask(replace_buy(5, 4, 0.00001, 1.0));
    assert_eq!(refused["code"], "rejected", "{refused}");
    assert_eq!(order_of(&mock.state(), "tl-t-4")["status"], "NEW");
    // Its answer lost: the adapter finds the new order at the exchange, and the change is
    // made once, however often it is asked.
    mock.post(
        "/mock/faults",
        json!({"lose_response": {"n": 1, "paths": ["/api/v3/order/cancelReplace"]}, "hang_s": 0.3}),
    );
    let done = a.ask(replace_buy(6, 4, 12.0, 1.01));
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(a.ask(replace_buy(6, 4, 12.0, 1.01))["type"], "done");
    let state = mock.state();
    assert_eq!(order_of(&state, "tl-t-4")["status"], "CANCELED", "{state}");
    assert_eq!(order_of(&state, "tl-t-6")["status"], "NEW", "{state}");
    assert_eq!(state["faults_fired"]["lose_response"], 1, "{state}");
    let mut ids: Vec<_> = state["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["clientOrderId"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["tl-t-1", "tl-t-2", "tl-t-4", "tl-t-6"], "{state}");
}
