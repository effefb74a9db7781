//! The crates' layers hold: what each crate's dependency closure must never contain, checked
//! with `cargo tree` on the real workspace (a strategy crate must build without the loop's IO;
//! the loop must not link an HTTP stack or the operating services; the engine must not link the
//! benchmark's peers).

use std::process::Command;

/// Every package in `package`'s normal (non-dev, non-build) dependency closure.
fn closure(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(cargo)
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}", "-p", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        o.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn assert_none_of(package: &str, banned: &[&str]) {
    let names = closure(package);
    assert!(
        names.iter().any(|n| n == package),
        "{package} not in its own tree: {names:?}"
    );
    let found: Vec<&String> = names
        .iter()
        .filter(|n| banned.contains(&n.as_str()))
        .collect();
    assert!(
        found.is_empty(),
        "{package} depends on {found:?} (its closure: {names:?})"
    );
}

/// The loop's IO and any HTTP stack.
const LOOP_IO: &[&str] = &[
    "io-uring",
    "mio",
    "httparse",
    "sd-notify",
    "hyper",
    "http",
    "tiny_http",
    "tokio",
    "tickloop-runtime",
];

#[test]
fn the_strategy_and_app_crates_build_without_the_loop_s_io() {
    assert_none_of("tickloop-strategy", LOOP_IO);
    assert_none_of("tickloop-app", LOOP_IO);
    assert_none_of("tickloop-ring", LOOP_IO);
}

#[test]
fn the_loop_builds_without_an_http_stack_or_the_operating_services() {
    let above = [
        "httparse",
        "hyper",
        "http",
        "tiny_http",
        "tokio",
        "sd-notify",
        "tickloop-ops",
    ];
    assert_none_of("tickloop-runtime", &above);
}

#[test]
fn the_host_doctor_is_a_leaf_the_runtime_may_use() {
    let ours = [
        "tickloop-ring",
        "tickloop-app",
        "tickloop-runtime",
        "tickloop-strategy",
        "tickloop-ops",
        "mio",
        "io-uring",
    ];
    assert_none_of("tickloop-linux-tuning", &ours);
}

#[test]
fn the_engine_links_no_benchmark_peer() {
    let peers = [
        "iceoryx2",
        "tokio",
        "plotters",
        "crossbeam-queue",
        "rtrb",
        "tickloop-bench",
    ];
    assert_none_of("tickloop", &peers);
    assert_none_of("my-bot", &peers);
}
