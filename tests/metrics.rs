//! The engine's metrics page and its readers as processes: `tickloop run` publishes the page
//! under /dev/shm, `tickloop metrics serve` exports it (its text checked line by line here and
//! by `promtool check metrics` when installed), `tickloop top --once` shows it. An engine at
//! its limits shows every row; killing the exporter never disturbs the engine; an engine
//! that is gone is `tickloop_up 0`, not old numbers; bad input is one line and a non-zero
//! exit.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::prom::{find, promtool_check, Exporter, Sample};
use common::*;

/// An engine run from `dir/engine.toml` reading `rings`, publishing its page at `page`.
fn engine_config(dir: &TempDir, rings: &[&Name], page: &Name, extra: &str) -> (String, String) {
    let (cfg, status) = (dir.file("engine.toml"), dir.file("s.json"));
    let rings: String = rings
        .iter()
        .map(|r| format!("[[rings]]\nname = \"{}\"\n", r.0))
        .collect();
    std::fs::write(
        &cfg,
        format!(
            "[engine]\naccount = \"metrics\"\nlock_dir = \"{}\"\n{rings}\n[status]\npath = \"{status}\"\ninterval_ms = 100\n[metrics]\npage = \"{}\"\n{extra}",
            dir.file("locks"),
            page.0
        ),
    )
    .unwrap();
    (cfg, status)
}

fn start_engine(cfg: &str) -> Child {
    Command::new(TICKLOOP)
        .args(["run", "--config", cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn sigterm(child: &Child) {
    // SAFETY: our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The engine's status file's last write, ns since the Unix epoch.
fn written(status: &str) -> i64 {
    status_doc(status)["written_unix_ns"].as_i64().unwrap_or(0)
}

/// `[adapters]` with `count` echo adapters, `echo-00`, `echo-01`...
fn echo_adapters(count: usize) -> String {
    let mut extra = String::from("[adapters]\nsymbols = [\"EURUSD\"]\n");
    for a in 0..count {
        extra += &format!(
            "[[adapters.adapter]]\nname = \"echo-{a:02}\"\ncommand = [{TICKLOOP:?}, \"adapter\", \"echo\"]\n"
        );
    }
    extra
}

/// Every ring, adapter and the signal app's timer has its series, and no row was left out.
fn assert_every_row(body: &str, samples: &[Sample], rings: &[Name], adapters: usize) {
    assert_eq!(find(samples, "tickloop_up", &[]).unwrap().value, 1.0);
    for (source, ring) in rings.iter().enumerate() {
        let labels = [("ring", ring.0.as_str()), ("source", &source.to_string())];
        for family in [
            "tickloop_ring_lag_candles",
            "tickloop_ring_writer_alive",
            "tickloop_ring_lost_candles_total",
        ] {
            assert!(
                find(samples, family, &labels).is_some(),
                "{family} {labels:?}:\n{body}"
            );
        }
    }
    for a in 0..adapters {
        let labels = [("adapter", format!("echo-{a:02}"))];
        let labels = [(labels[0].0, labels[0].1.as_str())];
        assert!(find(samples, "tickloop_adapter_requests_total", &labels).is_some());
    }
    // The signal app's periodic summary timer (id 0), with p50, p99 and p999.
    for q in ["0.5", "0.99", "0.999"] {
        let labels = [("timer", "0"), ("quantile", q)];
        assert!(
            find(samples, "tickloop_timer_lateness_seconds", &labels).is_some(),
            "{body}"
        );
    }
    for section in ["timers", "rings", "adapters"] {
        let labels = [("section", section)];
        let rows = find(samples, "tickloop_metrics_rows_not_shown", &labels).unwrap();
        assert_eq!(rows.value, 0.0, "{section}");
    }
    // Every metric the engine's own endpoint had, by the same name.
    for name in OLD_NAMES {
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "{name} is missing:\n{body}"
        );
    }
}

/// Rings as many as a test can make cheaply, 16 echo adapters (the adapter host's limit):
/// the exporter shows every one, and the text is valid.
#[test]
fn an_engine_at_its_limits_shows_every_ring_timer_and_adapter() {
    const RINGS: usize = 48;
    let adapters = tickloop_runtime::adapter::MAX_ADAPTERS;
    let rings: Vec<Name> = (0..RINGS).map(|_| Name::new()).collect();
    for r in &rings {
        create_ring(r, 64);
    }
    let page = Name::new();
    let dir = TempDir::new("metrics-limits");
    let refs: Vec<&Name> = rings.iter().collect();
    let (cfg, status) = engine_config(&dir, &refs, &page, &echo_adapters(adapters));
    let mut engine = start_engine(&cfg);
    wait_for_file(&status);
    let exporter = Exporter::start(&page.0);
    let ready = |samples: &[Sample]| {
        let ready = samples
            .iter()
            .filter(|s| s.name == "tickloop_adapter_state" && s.value == 2.0);
        ready.count() == adapters
    };
    wait_until("every adapter ready in the metrics", || {
        ready(&exporter.metrics().1)
    });
    let (body, samples) = exporter.metrics();
    assert_every_row(&body, &samples, &rings, adapters);
    promtool_check(&body);
    // `tickloop top` shows the same rows.
    let top = tickloop(&["top", "--page", &page.0, "--once", "--rows", "100"]);
    let text = stdout(&top);
    assert_eq!(top.status.code(), Some(0), "{text}");
    assert!(text.contains(&format!("rings ({RINGS})")), "{text}");
    assert!(text.contains(&rings[RINGS - 1].0), "{text}");
    assert!(text.contains(&format!("adapters ({adapters})")), "{text}");
    assert!(text.contains("echo-15"), "{text}");
    sigterm(&engine);
    assert!(engine.wait().unwrap().success());
    assert!(
        !page.path().exists(),
        "the engine removes its page when it stops"
    );
}

/// The families the engine's HTTP endpoint served before the page replaced it.
const OLD_NAMES: &[&str] = &[
    "tickloop_uptime_seconds",
    "tickloop_loop_iterations_total",
    "tickloop_events_total",
    "tickloop_candles_total",
    "tickloop_candles_lost_total",
    "tickloop_loop_lag_seconds",
    "tickloop_loop_lag_max_seconds",
    "tickloop_timer_lateness_seconds",
    "tickloop_timer_lateness_max_seconds",
    "tickloop_timer_run_seconds",
    "tickloop_timer_run_max_seconds",
    "tickloop_timer_overruns_total",
    "tickloop_timer_skipped_periods_total",
    "tickloop_ring_lag_candles",
    "tickloop_ring_lost_candles_total",
    "tickloop_ring_overruns_total",
    "tickloop_ring_writer_alive",
    "tickloop_orders_submitted_total",
    "tickloop_fills_total",
    "tickloop_orders_rejected_total",
    "tickloop_orders_cancelled_total",
    "tickloop_orders_denied_total",
    "tickloop_fill_faults_total",
    "tickloop_telemetry_emitted_total",
    "tickloop_telemetry_dropped_total",
    "tickloop_telemetry_degraded",
    "tickloop_adapter_state",
    "tickloop_config_generation",
    "tickloop_config_rejected_total",
    "tickloop_metrics_connections_total",
    "tickloop_metrics_connections_refused_total",
    "tickloop_metrics_connections_timed_out_total",
    "tickloop_metrics_connections_open",
    "tickloop_metrics_responses_total",
];

#[test]
fn killing_the_exporter_never_disturbs_the_engine() {
    let (ring, page) = (Name::new(), Name::new());
    create_ring(&ring, 1 << 12);
    let dir = TempDir::new("metrics-kill");
    let (cfg, status) = engine_config(&dir, &[&ring], &page, "");
    let mut engine = start_engine(&cfg);
    wait_for_file(&status);
    let mut first = Exporter::start(&page.0);
    // A client that connects and sends nothing holds one worker; the others answer.
    let _silent = std::net::TcpStream::connect(&first.addr).unwrap();
    assert_eq!(first.value("tickloop_up"), Some(1.0));
    assert_eq!(first.get("/nope").0, 404);
    let (code, _) = common::prom::http(&first.addr, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 405);
    // SIGKILL, in the middle of whatever it does.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let before = written(&status);
    let fed = synthetic_feed(&ring, 5_000, 50_000, 4).status().unwrap();
    assert!(fed.success());
    wait_until("the status file stopped advancing", || {
        written(&status) > before + 300_000_000
    });
    assert!(
        engine.try_wait().unwrap().is_none(),
        "the engine is still running"
    );
    // A new exporter serves the engine's numbers, fresh.
    let second = Exporter::start(&page.0);
    wait_until("the candles never showed", || {
        second.value("tickloop_candles_total") == Some(5000.0)
    });
    let publishes = |e: &Exporter| e.value("tickloop_metrics_page_publishes_total").unwrap();
    let p = publishes(&second);
    wait_until("the page stopped advancing", || {
        publishes(&second) > p + 2.0
    });
    let top = tickloop(&["top", "--page", &page.0, "--once"]);
    let text = stdout(&top);
    assert_eq!(top.status.code(), Some(0), "{text}");
    assert!(
        text.contains("running") && text.contains("5000 candles (0 lost)"),
        "{text}"
    );
    assert!(text.contains(&ring.0), "{text}");
    sigterm(&engine);
    assert!(
        engine.wait().unwrap().success(),
        "the engine exits 0 on SIGTERM"
    );
    // The engine is gone: up 0, and none of its numbers are served as live.
    wait_until("the exporter never said the engine is gone", || {
        second.value("tickloop_up") == Some(0.0)
    });
    let (body, _) = second.metrics();
    assert!(!body.contains("tickloop_candles_total"), "{body}");
}

#[test]
fn an_engine_that_is_gone_is_up_0_and_a_new_one_takes_its_page() {
    let (ring, page) = (Name::new(), Name::new());
    create_ring(&ring, 1 << 12);
    let dir = TempDir::new("metrics-gone");
    let (cfg, status) = engine_config(&dir, &[&ring], &page, "");
    let mut engine = start_engine(&cfg);
    wait_for_file(&status);
    let exporter = Exporter::start(&page.0);
    assert_eq!(exporter.value("tickloop_up"), Some(1.0));
    engine.kill().unwrap();
    engine.wait().unwrap();
    assert!(page.path().exists(), "a killed engine leaves its page");
    wait_until("a killed engine still up", || {
        exporter.value("tickloop_up") == Some(0.0)
    });
    let (body, _) = exporter.metrics();
    assert!(
        !body.contains("tickloop_loop_iterations_total"),
        "old numbers served: {body}"
    );
    let top = tickloop(&["top", "--page", &page.0, "--once"]);
    assert_eq!(top.status.code(), Some(1));
    assert!(stdout(&top).contains("is gone"), "{}", stdout(&top));
    // A new engine replaces the dead one's page; the exporter follows it.
    let mut again = start_engine(&cfg);
    wait_until("the exporter never followed the new page", || {
        exporter.value("tickloop_up") == Some(1.0)
    });
    sigterm(&again);
    assert!(again.wait().unwrap().success());
}

/// A real page held by this process, for the exporter's argument checks.
fn live_page(page: &Name) -> tickloop_ops::metrics::PageWriter {
    use tickloop_ops::metrics::{layout::Shape, Identity, PageWriter};
    let id = Identity {
        instance: "engine@t",
        started_unix_ns: 0,
        interval_ns: 100_000_000,
    };
    PageWriter::create(
        &page.path(),
        Shape {
            timers: 1,
            rings: 1,
            adapters: 1,
        },
        &id,
    )
    .unwrap()
}

#[test]
fn bad_input_is_one_line_and_a_non_zero_exit() {
    let missing = Name::new();
    let err = clear_failure(&tickloop(&["metrics", "serve", "--page", &missing.0]));
    assert!(err.contains("does not exist"), "{err}");
    let err = clear_failure(&tickloop(&["top", "--page", &missing.0, "--once"]));
    assert!(err.contains("does not exist"), "{err}");
    let other = Name::new();
    let mut bytes = vec![0u8; 8192];
    bytes[..8].copy_from_slice(b"TICKMTRC");
    bytes[8..16].copy_from_slice(&2u64.to_le_bytes());
    std::fs::write(other.path(), &bytes).unwrap();
    let err = clear_failure(&tickloop(&["metrics", "serve", "--page", &other.0]));
    assert!(err.contains("layout 2.0"), "{err}");
    std::fs::write(other.path(), b"not a page").unwrap();
    let err = clear_failure(&tickloop(&["top", "--page", &other.0, "--once"]));
    assert!(err.contains("is not a metrics page"), "{err}");
    // A good page, with bad addresses and limits.
    let page = Name::new();
    let _writer = live_page(&page);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let serve = |extra: &[&str]| {
        let mut args = vec!["metrics", "serve", "--page", &page.0];
        args.extend_from_slice(extra);
        clear_failure(&tickloop(&args))
    };
    assert!(serve(&["--listen", &addr]).contains("already in use"));
    assert!(serve(&["--listen", "0.0.0.0:0"]).contains("not a loopback address"));
    assert!(serve(&["--max-connections", "0"]).contains("--max-connections 0"));
    let err = clear_failure(&tickloop(&["metrics", "serve", "--page", ""]));
    assert!(err.contains("is not allowed"), "{err}");
    // The engine's old HTTP keys are refused, pointing at the exporter.
    let dir = TempDir::new("metrics-bad");
    let (cfg, _) = engine_config(&dir, &[], &Name::new(), "listen = \"127.0.0.1:9464\"\n");
    for command in ["check", "run"] {
        let o = if command == "check" {
            tickloop(&["config", "check", &cfg])
        } else {
            tickloop(&["run", "--config", &cfg])
        };
        let err = clear_failure(&o);
        assert!(
            err.contains("tickloop metrics serve") && err.contains("line 10"),
            "{err}"
        );
    }
    let (cfg, _) = engine_config(&dir, &[], &Name::new(), "max_connections = 8\n");
    let err = clear_failure(&tickloop(&["config", "check", &cfg]));
    assert!(
        err.contains("metrics.max_connections") && err.contains("tickloop metrics serve"),
        "{err}"
    );
    // A page that is not a page is never replaced by an engine.
    let (ring, user_file) = (Name::new(), Name::new());
    create_ring(&ring, 64);
    std::fs::write(user_file.path(), b"mine").unwrap();
    let (cfg, _) = engine_config(&dir, &[&ring], &user_file, "");
    let err = clear_failure(&tickloop(&["run", "--config", &cfg, "--duration", "1"]));
    assert!(err.contains("not a metrics page is there"), "{err}");
    assert_eq!(std::fs::read(user_file.path()).unwrap(), b"mine");
    assert!(Path::new(&user_file.path()).exists());
}
