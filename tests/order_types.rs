//! Every order type and time in force fills the same through the strategy host's own paper
//! broker and through the paper adapter process (`tickloop adapter paper`, spoken to over
//! real pipes, reading candles from a real ring in /dev/shm): the same script of orders
//! over the same candles gives the same fills, order by order (units, price, candle).
//!
//! The in-host run is the host in paper mode. The adapter run is the same host in adapter
//! mode: what it sends goes to the adapter process as frames, what the adapter answers comes
//! back to it as adapter events, one candle at a time (the candle is published, the
//! requests follow, then a ping whose pong says the adapter has done everything before it).

mod common;
use common::*;

use serde_json::json;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use tickloop_app::clock::{MILLIS, SECONDS};
use tickloop_app::venue::{
    AdapterEvent, Capabilities, OrderStatus, Request, RequestKind, TimeInForce,
};
use tickloop_app::{Action, App, Context, Event, EventKind};
use tickloop_ring::{Candle, CreateOptions, Writer};
use tickloop_strategy::host::{
    HostConfig, HostOutput, HostSetup, Strategy, StrategyCx, StrategyHost,
};
use tickloop_strategy::orders::{OrderId, OrderRequest, Replace, Size};
use tickloop_strategy::risk::RiskConfig;

/// What the script does after candle `bar` (orders are numbered in the order they are
/// placed: by bar, then as listed).
#[derive(Clone, Copy)]
enum Step {
    Place(OrderRequest),
    /// Cancel the n-th order the script placed.
    Cancel(usize),
    /// Change the n-th order the script placed.
    Change(usize, Replace),
}

thread_local! {
    static SCRIPT: RefCell<Vec<(u64, Step)>> = const { RefCell::new(Vec::new()) };
    static PLACED: RefCell<Vec<Option<OrderId>>> = const { RefCell::new(Vec::new()) };
}

struct Scripted {
    bar: u64,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct NoConfig {}

impl Strategy for Scripted {
    type Config = NoConfig;
    const NAME: &'static str = "scripted";
    fn new(_: NoConfig, _: u32) -> Result<Self, String> {
        Ok(Scripted { bar: 0 })
    }
    fn on_candle(&mut self, cx: &mut StrategyCx<'_, '_>, _pos: u64, _c: &Candle) {
        let steps: Vec<Step> = SCRIPT.with(|s| {
            s.borrow()
                .iter()
                .filter(|(b, _)| *b == self.bar)
                .map(|(_, st)| *st)
                .collect()
        });
        for step in steps {
            match step {
                Step::Place(order) => {
                    let id = cx.place(order);
                    PLACED.with(|p| p.borrow_mut().push(id));
                }
                Step::Cancel(n) => {
                    if let Some(Some(id)) = PLACED.with(|p| p.borrow().get(n).copied()) {
                        cx.cancel(id);
                    }
                }
                Step::Change(n, change) => {
                    if let Some(Some(id)) = PLACED.with(|p| p.borrow().get(n).copied()) {
                        cx.replace(id, change);
                    }
                }
            }
        }
        self.bar += 1;
    }
    fn on_config(&mut self, _: NoConfig) -> Result<(), String> {
        Ok(())
    }
}

/// A fill: which order of the script (by the order it was placed), signed units, price,
/// and the candle (by time).
type Filled = (usize, f64, f64, i64);

fn candles() -> Vec<Candle> {
    // A walk with wide bars, gaps and quiet stretches: every kind of order gets its chance.
    let mut out = Vec::new();
    let mut open = 100.0;
    for i in 0..40i64 {
        // Up for 20 bars, then down.
        let step = if i < 20 {
            [1.5, -2.0, 2.5, 3.0, -1.0, 1.5, 0.25, 2.0][i as usize % 8]
        } else {
            [-1.5, 2.0, -2.5, -3.0, 1.0, -1.5, -0.25, -2.0][i as usize % 8]
        };
        let close: f64 = open + step;
        let high = open.max(close) + [0.5, 1.0, 0.25, 2.0][i as usize % 4];
        let low = open.min(close) - [1.0, 0.25, 1.5, 0.5][i as usize % 4];
        out.push(Candle {
            ts_ns: 1_700_000_000_000_000_000 + i * 3_600_000_000_000,
            symbol: 0,
            flags: 0,
            open,
            high,
            low,
            close,
            volume: 1.0,
        });
        // The next bar opens off this close: sometimes a gap.
        open = close + [0.0, 0.75, 0.0, -1.25][i as usize % 4];
    }
    out
}

fn host(adapter: Option<u16>) -> StrategyHost<Scripted> {
    StrategyHost::new(HostSetup {
        host: HostConfig {
            symbols: 1,
            adapter,
            cash: 1e9,
            ..HostConfig::default()
        },
        risk: RiskConfig::default(),
        strategy: NoConfig {},
        epoch: 0,
    })
    .unwrap()
}

fn step(host: &mut StrategyHost<Scripted>, at: &mut u64, kind: EventKind) -> Vec<HostOutput> {
    let mut actions = Vec::with_capacity(256);
    let mut dropped = 0;
    *at += MILLIS;
    host.on_event(
        &Event { at: *at, kind },
        &mut Context::new(*at, &mut actions, &mut dropped),
    );
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Output(o) => Some(o),
            _ => None,
        })
        .collect()
}

fn script_index(id: OrderId) -> usize {
    PLACED.with(|p| {
        p.borrow()
            .iter()
            .position(|&x| x == Some(id))
            .expect("a scripted order")
    })
}

fn fills_of(outputs: &[HostOutput], into: &mut Vec<Filled>) {
    for o in outputs {
        if let HostOutput::Fill(f) = o {
            into.push((script_index(f.order), f.units, f.price, f.ts_ns));
        }
    }
}

fn in_host(script: &[(u64, Step)]) -> Vec<Filled> {
    SCRIPT.with(|s| *s.borrow_mut() = script.to_vec());
    PLACED.with(|p| p.borrow_mut().clear());
    let mut h = host(None);
    let mut at = SECONDS;
    let mut fills = Vec::new();
    for (pos, candle) in candles().into_iter().enumerate() {
        let out = step(
            &mut h,
            &mut at,
            EventKind::Candle {
                source: 0,
                pos: pos as u64,
                candle,
            },
        );
        fills_of(&out, &mut fills);
    }
    fills
}

struct Adapter {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Adapter {
    fn send(&mut self, message: serde_json::Value) {
        let body = serde_json::to_vec(&message).unwrap();
        self.stdin
            .write_all(&(body.len() as u32).to_le_bytes())
            .unwrap();
        self.stdin.write_all(&body).unwrap();
        self.stdin.flush().unwrap();
    }
    fn recv(&mut self) -> serde_json::Value {
        let mut len = [0u8; 4];
        self.stdout
            .read_exact(&mut len)
            .expect("the paper adapter's next frame");
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        self.stdout.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }
}

impl Drop for Adapter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The adapter's answer as the event the engine's session would make of it.
fn event_of(m: &serde_json::Value) -> Option<AdapterEvent> {
    let u = |k: &str| m[k].as_u64().unwrap_or(0);
    let f = |k: &str| m[k].as_f64().unwrap_or(0.0);
    Some(match m["type"].as_str()? {
        "done" => AdapterEvent::Done {
            adapter: 0,
            request: u("id"),
            kind: RequestKind::PlaceOrder,
            count: 0,
        },
        "order_update" => AdapterEvent::OrderUpdate {
            adapter: 0,
            order: u("order"),
            status: OrderStatus::from_wire(m["status"].as_str()?)?,
            filled: f("filled"),
            remaining: f("remaining"),
            avg_price: f("avg_price"),
        },
        "fill" => AdapterEvent::Fill {
            adapter: 0,
            order: u("order"),
            qty: f("qty"),
            price: f("price"),
            fee: f("fee"),
            ts_ns: m["ts_ns"].as_i64()?,
            trade: None,
        },
        _ => return None,
    })
}

/// The protocol frame of what the host sends.
fn frame_of(r: &tickloop_app::venue::AdapterRequest) -> serde_json::Value {
    match r.request {
        Request::PlaceOrder {
            side,
            qty,
            limit,
            stop,
            tif,
            reduce_only,
            ..
        } => json!({
            "type": "place_order", "id": r.id, "symbol": "AAA",
            "side": if side == tickloop_app::venue::Side::Buy { "buy" } else { "sell" },
            "qty": qty, "order_type": tickloop_app::venue::OrderType::of(limit, stop).as_str(),
            "limit_price": limit, "stop_price": stop, "time_in_force": tif.as_str(),
            "expire_ns": match tif { TimeInForce::Gtd(t) => Some(t), _ => None },
            "reduce_only": reduce_only,
        }),
        Request::CancelOrder { order, .. } => {
            json!({"type": "cancel_order", "id": r.id, "order": order})
        }
        Request::ReplaceOrder {
            order,
            side,
            qty,
            limit,
            stop,
            ..
        } => json!({
            "type": "replace_order", "id": r.id, "order": order, "symbol": "AAA",
            "side": if side == tickloop_app::venue::Side::Buy { "buy" } else { "sell" },
            "qty": qty, "order_type": tickloop_app::venue::OrderType::of(limit, stop).as_str(),
            "limit_price": limit, "stop_price": stop,
        }),
        other => panic!("the host sent {other:?}"),
    }
}

/// The hello exchange: the paper adapter's capabilities (every order type, and replace).
fn handshake(a: &mut Adapter) -> Capabilities {
    a.send(json!({"type": "hello", "protocol": 2, "engine": "test", "max_frame": 1 << 20, "ping_interval_ms": 1000}));
    let hello = a.recv();
    let caps = hello["capabilities"].to_string();
    for c in ["stop_orders", "time_in_force", "reduce_only", "replace"] {
        assert!(caps.contains(c), "the paper adapter announces {c}: {hello}");
    }
    hello["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| Capabilities::from_name(c.as_str()?))
        .fold(Capabilities::default(), Capabilities::union)
}

fn via_adapter(script: &[(u64, Step)]) -> Vec<Filled> {
    SCRIPT.with(|s| *s.borrow_mut() = script.to_vec());
    PLACED.with(|p| p.borrow_mut().clear());
    let ring = Name::new();
    let (mut writer, _) = Writer::open_or_create(&ring.path(), CreateOptions::default()).unwrap();
    writer.symbol("AAA").unwrap();
    let mut child = Command::new(TICKLOOP)
        .args(["adapter", "paper", "--ring", &ring.path().to_string_lossy()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let mut a = Adapter {
        child,
        stdin,
        stdout,
    };
    let capabilities = handshake(&mut a);
    let mut h = host(Some(0));
    let mut at = SECONDS;
    let ready = AdapterEvent::Ready {
        adapter: 0,
        protocol: 2,
        capabilities,
        starts: 1,
    };
    assert!(step(&mut h, &mut at, EventKind::Adapter(ready)).is_empty());
    let mut fills = Vec::new();
    for (pos, candle) in candles().into_iter().enumerate() {
        writer.publish(&candle);
        let mut pending = step(
            &mut h,
            &mut at,
            EventKind::Candle {
                source: 0,
                pos: pos as u64,
                candle,
            },
        );
        // Until the adapter has nothing more to say about this candle and what it caused.
        loop {
            let mut sent = 0;
            for o in std::mem::take(&mut pending) {
                let HostOutput::Send(r) = o else {
                    fills_of(&[o], &mut fills);
                    continue;
                };
                sent += 1;
                a.send(frame_of(&r));
            }
            a.send(json!({"type": "ping", "seq": pos}));
            loop {
                let m = a.recv();
                if m["type"] == "pong" {
                    break;
                }
                if let Some(e) = event_of(&m) {
                    pending.extend(step(&mut h, &mut at, EventKind::Adapter(e)));
                }
            }
            if sent == 0 && pending.iter().all(|o| !matches!(o, HostOutput::Send(_))) {
                fills_of(&pending, &mut fills);
                break;
            }
        }
    }
    fills
}

fn same_fills(what: &str, script: &[(u64, Step)]) -> Vec<Filled> {
    let host = in_host(script);
    let adapter = via_adapter(script);
    assert_eq!(
        host, adapter,
        "{what}: in-host paper broker vs the paper adapter process"
    );
    host
}

fn buy(units: f64) -> OrderRequest {
    OrderRequest::buy(0, Size::Units(units))
}
fn sell(units: f64) -> OrderRequest {
    OrderRequest::sell(0, Size::Units(units))
}

#[test]
fn every_order_type_fills_alike_in_the_host_and_through_the_paper_adapter() {
    use Step::*;
    // The candles (see `candles`): up from 100 to about 120 by bar 20, then down to 98.
    let fills = same_fills(
        "market, limit, stop, stop-limit, cancel",
        &[
            (0, Place(buy(10.0))),
            // A limit the bar reaches, and one the open is already through.
            (1, Place(sell(4.0).limit(104.0))),
            (2, Place(buy(3.0).limit(103.0))),
            // Stops: reached within a bar, and gapped through by the open.
            (3, Place(buy(2.0).stop(108.0))),
            (23, Place(sell(2.0).stop(115.5))),
            // Stop-limits: the limit beyond the stop fills at the stop; one short of it
            // waits for the next bar as a limit.
            (5, Place(buy(1.0).stop(105.5).limit(106.0))),
            (8, Place(buy(1.0).stop(109.0).limit(108.5))),
            (26, Place(sell(1.0).stop(112.5).limit(112.0))),
            // Far from the market: never fills; cancelled.
            (7, Place(buy(6.0).limit(60.0))),
            (9, Cancel(6)),
            (4, Place(sell(5.0).stop(98.0))),
        ],
    );
    assert_eq!(
        fills.iter().map(|f| (f.0, f.2)).collect::<Vec<_>>(),
        vec![
            (0, 101.5),
            (1, 104.0),
            (2, 102.75),
            (5, 105.5),
            (3, 108.0),
            (7, 107.0),
            (8, 114.75),
            (9, 112.5),
            (4, 98.0)
        ],
        "the fills backtesting.py's rules give on these candles"
    );
}

#[test]
fn every_time_in_force_ends_alike_in_the_host_and_through_the_paper_adapter() {
    use Step::*;
    let t = |bar: i64| 1_700_000_000_000_000_000 + bar * 3_600_000_000_000;
    let fills = same_fills(
        "gtc, ioc, fok, gtd, reduce-only",
        &[
            (0, Place(buy(5.0))),
            // IOC / FOK: the next candle or never.
            (1, Place(buy(1.0).limit(90.0).tif(TimeInForce::Ioc))),
            (1, Place(sell(1.0).limit(100.0).tif(TimeInForce::Ioc))),
            (2, Place(buy(2.0).stop(200.0).tif(TimeInForce::Fok))),
            (3, Place(buy(1.0).tif(TimeInForce::Fok))),
            // GTD: good till bar 7 expires at it; good till bar 8 fills at bar 7.
            (4, Place(sell(1.0).limit(109.5).tif(TimeInForce::Gtd(t(7))))),
            (4, Place(sell(1.0).limit(109.5).tif(TimeInForce::Gtd(t(8))))),
            // Reduce-only: cut to the position, and one that finds nothing to reduce.
            (10, Place(sell(50.0).reduce_only())),
            (14, Place(sell(1.0).limit(80.0).reduce_only())),
            (20, Place(buy(3.0).limit(500.0))),
        ],
    );
    assert_eq!(
        fills.iter().map(|f| (f.0, f.1, f.2)).collect::<Vec<_>>(),
        vec![
            (0, 5.0, 101.5),
            (2, -1.0, 100.25),
            (4, 1.0, 104.5),
            (6, -1.0, 109.5),
            (7, -4.0, 109.5),
            (9, 3.0, 119.0)
        ],
        "the fills backtesting.py's rules give on these candles"
    );
}

#[test]
fn replaced_orders_fill_alike_in_the_host_and_through_the_paper_adapter() {
    use Step::*;
    let to =
        |limit: Option<f64>, stop: Option<f64>, units: Option<f64>| Replace { limit, stop, units };
    let fills = same_fills(
        "replace of limits, stops and units",
        &[
            // A limit far below, moved up to where the market comes back (bar 2's low).
            (0, Place(buy(2.0).limit(50.0))),
            (1, Change(0, to(Some(101.0), None, Some(3.0)))),
            // A stop far above, moved down into the rise.
            (2, Place(buy(1.0).stop(300.0))),
            (4, Change(1, to(None, Some(108.0), None))),
            // A sell limit made smaller (to whole units), then filled.
            (6, Place(sell(4.0).limit(400.0))),
            (7, Change(2, to(Some(113.0), None, Some(2.5)))),
            // Changed to where the market falls to at the end, and cancelled on the same
            // bar: the cancel waits for the replace's answer and ends the changed order.
            (8, Place(buy(1.0).limit(50.0))),
            (9, Change(3, to(Some(99.0), None, None))),
            (9, Cancel(3)),
        ],
    );
    assert_eq!(
        fills.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(),
        vec![(0, 3.0), (1, 1.0), (2, -2.0)],
        "each filled at its size after the replace"
    );
}
