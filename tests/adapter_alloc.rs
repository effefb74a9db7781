//! No heap allocation per message in steady state on the adapter path: a counting global
//! allocator watches the loop's thread while 20,000 requests go to a real `tickloop adapter
//! echo` process and come back (requests encoded into the fixed outbound queue, written,
//! answers read into the fixed frame buffer, decoded into fixed structs, delivered as
//! events, orders with their updates and fills).

use tickloop_app::clock::SECONDS;
use tickloop_app::{App, Context, Event, EventKind};
use tickloop_runtime::adapter::{
    AdapterConfig, AdapterEvent, AdapterHost, AdapterHostConfig, AdapterRequest, Request,
    SharedHost, Side,
};
use tickloop_runtime::alloc_count::{allocations, watch, CountingAllocator};
use tickloop_runtime::driver::DriverChoice;
use tickloop_runtime::event_loop::{EventLoop, LoopBuilder, LoopConfig, Mode};

mod common;
use common::TICKLOOP;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const WINDOW: u64 = 16;
const WARM_UP: u64 = 2_000;
const TOTAL: u64 = 22_000;

/// Keeps WINDOW requests in flight; counting starts after the warm-up.
struct Pump {
    next: u64,
    completed: u64,
    fills: u64,
    failed: u64,
}

impl Pump {
    fn send(&mut self, cx: &mut Context<'_, AdapterRequest>) {
        self.next += 1;
        let request = if self.next.is_multiple_of(2) {
            Request::GetAccounts
        } else {
            Request::order((self.next % 3) as u32, Side::Buy, 1.0, Some(99.5))
        };
        cx.emit(AdapterRequest {
            adapter: 0,
            id: self.next,
            request,
        });
    }
}

impl App for Pump {
    type Output = AdapterRequest;
    fn name(&self) -> &'static str {
        "adapter-pump"
    }
    fn on_event(&mut self, event: &Event, cx: &mut Context<'_, AdapterRequest>) {
        let EventKind::Adapter(e) = event.kind else {
            if event.kind == EventKind::Shutdown {
                watch(false);
            }
            return;
        };
        match e {
            AdapterEvent::Ready { .. } => {
                for _ in 0..WINDOW {
                    self.send(cx);
                }
            }
            AdapterEvent::Done { .. } | AdapterEvent::Failed { .. } => {
                self.completed += 1;
                self.failed += matches!(e, AdapterEvent::Failed { .. }) as u64;
                if self.completed == WARM_UP {
                    watch(true);
                }
                if self.completed == TOTAL {
                    watch(false);
                    cx.stop();
                } else if self.next < TOTAL {
                    self.send(cx);
                }
            }
            AdapterEvent::Fill { .. } => self.fills += 1,
            _ => {}
        }
    }
}

#[test]
fn no_allocation_per_message_in_steady_state() {
    let config = AdapterHostConfig {
        symbols: vec!["AAA".into(), "BBB".into(), "CCC".into()],
        adapters: vec![AdapterConfig {
            name: "echo".into(),
            command: vec![TICKLOOP.into(), "adapter".into(), "echo".into()],
            ..AdapterConfig::default()
        }],
        ..AdapterHostConfig::default()
    };
    let host = SharedHost::new(AdapterHost::new(&config).unwrap());
    let lc = LoopConfig {
        driver: DriverChoice::Epoll,
        mode: Mode::Park,
        ..LoopConfig::default()
    };
    let app = Pump {
        next: 0,
        completed: 0,
        fills: 0,
        failed: 0,
    };
    let mut lp = EventLoop::new(
        LoopBuilder {
            config: &lc,
            rings: vec![],
            journal: None,
            app_config: vec![],
            program: "tickloop",
        },
        app,
        host.handle(),
    )
    .unwrap();
    host.install(&mut lp).unwrap();
    lp.stop_after(60 * SECONDS);
    let before = allocations();
    lp.run().unwrap();
    let counted = allocations() - before;
    let app = lp.app();
    assert_eq!(app.completed, TOTAL, "the run did not finish");
    assert_eq!(app.failed, 0);
    assert_eq!(app.fills, TOTAL / 2);
    assert_eq!(
        counted,
        0,
        "{counted} allocations over {} round trips",
        TOTAL - WARM_UP
    );
}
