//! The live polling feed: an [`App`] that asks an exchange adapter for each symbol's latest
//! bars on the [`TieredPoller`]'s schedule and says which bars to publish into the ring.
//!
//! It owns the schedule, the table of requests in flight and the last bar published per
//! symbol. It is app logic run by the loop: it never reads a clock (event times are the loop's;
//! Unix times are the loop's clock plus `epoch_offset_ns`, fixed in its config at startup, so
//! a journal replays exactly), never does IO (requests and candles leave as [`PollOutput`]s,
//! which the embedding program sends to the adapter host and writes to the ring), and never
//! allocates after [`PollFeed::new`].
//!
//! Each request asks for `[start of the previous bar, now]`: the previous bar, complete, and
//! the one forming. A complete bar newer than the last published for its symbol is published
//! once; the newest close (forming bar included) is what the schedule sees to decide tiers.

use crate::tiered::{Overrun, Tier, TieredConfig, TieredPoller};
use serde::{Deserialize, Serialize};
use tickloop_app::telemetry::Telemetry;
use tickloop_app::venue::{AdapterEvent, AdapterId, AdapterRequest, FailReason, Request};
use tickloop_app::{App, Context, Event, EventKind, TimerId};
use tickloop_ring::Candle;

/// The app's timer: the next cycle of the schedule.
const CYCLE_TIMER: TimerId = 0;

/// Everything the feed needs; journaled as the app's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollConfig {
    pub tiered: TieredConfig,
    /// Symbols polled: ids `0..symbols` of the adapter host's symbol table.
    pub symbols: u32,
    /// Symbols held (a position open): always hot.
    pub hold: Vec<u32>,
    /// The bar length asked for (ns).
    pub bar_ns: u64,
    /// Unix time = loop clock + this (ns), measured once when the feed starts.
    pub epoch_offset_ns: i64,
    /// The adapter asked.
    pub adapter: AdapterId,
}

impl PollConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.tiered.validate()?;
        if self.symbols == 0 {
            return Err("no symbols to poll: name at least one".into());
        }
        if self.bar_ns < 1_000_000 {
            return Err(format!("bar = {} ns must be at least 1 ms", self.bar_ns));
        }
        if let Some(h) = self.hold.iter().find(|&&h| h >= self.symbols) {
            return Err(format!(
                "held symbol {h} is not one of the {} polled",
                self.symbols
            ));
        }
        Ok(())
    }
}

/// What the feed asks of the program running it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PollOutput {
    /// Send this request to the adapter host.
    Request(AdapterRequest),
    /// Publish this complete bar (its `symbol` is the adapter host's symbol id).
    Publish(Candle),
    /// A cycle overran (a typed `poll_overrun` telemetry event).
    Overrun(Overrun),
    /// A request for `symbol` failed; the symbol is asked again when next due.
    Failed { symbol: u32, reason: FailReason },
}

/// A request in flight: its id, symbol, and the newest bars of its answer so far.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    id: u64,
    symbol: u32,
    /// The newest bar of the answer (forming or complete).
    newest: Option<Candle>,
    /// The newest complete bar of the answer.
    complete: Option<Candle>,
    /// The bar that was forming when the request was sent starts here (Unix ns).
    forming_from: i64,
}

/// What became of the answers (requests sent and overruns are the schedule's own counters:
/// [`TieredPoller::requests`], [`TieredPoller::overruns`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PollCounts {
    pub answered: u64,
    pub failed: u64,
    pub published: u64,
    /// Answers that carried no bar.
    pub empty: u64,
}

pub struct PollFeed {
    config: PollConfig,
    poller: TieredPoller,
    in_flight: Vec<InFlight>,
    /// Time stamp of the last bar published, per symbol (`i64::MIN`: none yet).
    last_published: Vec<i64>,
    next_id: u64,
    ready: bool,
    started: bool,
    pub counts: PollCounts,
}

impl PollFeed {
    pub const NAME: &'static str = "poll";

    pub fn new(config: PollConfig) -> Result<PollFeed, String> {
        config.validate()?;
        let mut poller = TieredPoller::new(config.tiered.clone(), config.symbols)?;
        for &h in &config.hold {
            poller.set_holding(h, true);
        }
        Ok(PollFeed {
            in_flight: Vec::with_capacity(config.tiered.concurrency as usize),
            last_published: vec![i64::MIN; config.symbols as usize],
            poller,
            next_id: 0,
            ready: false,
            started: false,
            counts: PollCounts::default(),
            config,
        })
    }

    pub fn poller(&self) -> &TieredPoller {
        &self.poller
    }

    /// Symbols now in each tier: (hot, warm, cold).
    pub fn tiers(&self) -> (u32, u32, u32) {
        let mut t = (0, 0, 0);
        for s in 0..self.config.symbols {
            match self.poller.tier(s) {
                Tier::Hot => t.0 += 1,
                Tier::Warm => t.1 += 1,
                Tier::Cold => t.2 += 1,
            }
        }
        t
    }

    fn unix(&self, at: u64) -> i64 {
        (at as i64).saturating_add(self.config.epoch_offset_ns)
    }

    /// Send what the schedule allows now.
    fn send(&mut self, cx: &mut Context<'_, PollOutput>) {
        if !self.ready {
            return;
        }
        let now = self.unix(cx.now());
        let bar = self.config.bar_ns as i64;
        let forming_from = now - now.rem_euclid(bar);
        while let Some(symbol) = self.poller.next_request() {
            self.next_id += 1;
            // The in-flight limit of the schedule bounds this table.
            assert!(self.in_flight.len() < self.config.tiered.concurrency as usize);
            self.in_flight.push(InFlight {
                id: self.next_id,
                symbol,
                newest: None,
                complete: None,
                forming_from,
            });
            cx.emit(PollOutput::Request(AdapterRequest {
                adapter: self.config.adapter,
                id: self.next_id,
                request: Request::GetHistoricalBars {
                    symbol,
                    from_ns: forming_from - bar,
                    to_ns: now + 1,
                    bar_ns: self.config.bar_ns,
                },
            }));
        }
    }

    fn slot(&self, request: u64) -> Option<usize> {
        self.in_flight.iter().position(|f| f.id == request)
    }

    fn tick(&mut self, cx: &mut Context<'_, PollOutput>) {
        if let Some(overrun) = self.poller.tick(cx.now()) {
            cx.emit(PollOutput::Overrun(overrun));
        }
        cx.set_timer(CYCLE_TIMER, self.poller.next_cycle_at());
        self.send(cx);
    }

    fn answered(&mut self, at: usize, cx: &mut Context<'_, PollOutput>) {
        let f = self.in_flight.swap_remove(at);
        self.counts.answered += 1;
        if let Some(bar) = f.complete {
            let last = &mut self.last_published[f.symbol as usize];
            if bar.ts_ns > *last {
                *last = bar.ts_ns;
                self.counts.published += 1;
                cx.emit(PollOutput::Publish(bar));
            }
        }
        if f.newest.is_none() {
            self.counts.empty += 1;
        }
        self.poller
            .on_response(cx.now(), f.symbol, f.newest.map(|c| c.close));
        self.send(cx);
    }
}

impl App for PollFeed {
    type Output = PollOutput;

    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn on_event(&mut self, event: &Event, cx: &mut Context<'_, PollOutput>) {
        let EventKind::Adapter(e) = event.kind else {
            if let EventKind::Timer {
                timer: CYCLE_TIMER, ..
            } = event.kind
            {
                self.tick(cx);
            }
            return;
        };
        match e {
            AdapterEvent::Ready { adapter, .. } if adapter == self.config.adapter => {
                self.ready = true;
                if !self.started {
                    self.started = true;
                    self.tick(cx);
                } else {
                    self.send(cx);
                }
            }
            AdapterEvent::Down { adapter, .. } if adapter == self.config.adapter => {
                // Its requests in flight follow as `Failed`; nothing is sent until it is back.
                self.ready = false;
            }
            AdapterEvent::Bar {
                request, candle, ..
            } => {
                if let Some(at) = self.slot(request) {
                    let f = &mut self.in_flight[at];
                    if f.newest.is_none_or(|n| candle.ts_ns >= n.ts_ns) {
                        f.newest = Some(candle);
                    }
                    if candle.ts_ns < f.forming_from
                        && f.complete.is_none_or(|c| candle.ts_ns >= c.ts_ns)
                    {
                        f.complete = Some(candle);
                    }
                }
            }
            AdapterEvent::Done { request, .. } => {
                if let Some(at) = self.slot(request) {
                    self.answered(at, cx);
                }
            }
            AdapterEvent::Failed {
                request, reason, ..
            } => {
                if let Some(at) = self.slot(request) {
                    let f = self.in_flight.swap_remove(at);
                    self.counts.failed += 1;
                    cx.emit(PollOutput::Failed {
                        symbol: f.symbol,
                        reason,
                    });
                    self.poller.on_response(cx.now(), f.symbol, None);
                    self.send(cx);
                }
            }
            _ => {}
        }
    }

    fn telemetry_of(&self, output: &PollOutput) -> Option<Telemetry> {
        match *output {
            PollOutput::Overrun(o) => Some(Telemetry::PollOverrun {
                cycle: o.cycle,
                pending: o.pending,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickloop_app::venue::RequestKind;
    use tickloop_app::Action;

    const MS: u64 = 1_000_000;

    fn feed(concurrency: u32) -> PollFeed {
        PollFeed::new(PollConfig {
            tiered: TieredConfig {
                concurrency,
                warm_every: 1,
                cold_every: 1,
                ..TieredConfig::default()
            },
            symbols: 3,
            hold: vec![],
            bar_ns: 60_000 * MS,
            epoch_offset_ns: 1_700_000_000_000_000_000,
            adapter: 0,
        })
        .unwrap()
    }

    fn event(feed: &mut PollFeed, at: u64, kind: EventKind) -> Vec<Action<PollOutput>> {
        let mut actions = Vec::with_capacity(64);
        let mut dropped = 0;
        let mut cx = Context::new(at, &mut actions, &mut dropped);
        feed.on_event(&Event { at, kind }, &mut cx);
        assert_eq!(dropped, 0);
        actions
    }

    fn requests(actions: &[Action<PollOutput>]) -> Vec<AdapterRequest> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Output(PollOutput::Request(r)) => Some(*r),
                _ => None,
            })
            .collect()
    }

    fn ready() -> EventKind {
        EventKind::Adapter(AdapterEvent::Ready {
            adapter: 0,
            protocol: 1,
            capabilities: tickloop_app::venue::Capabilities::BARS,
            starts: 1,
        })
    }

    fn bar_event(request: u64, symbol: u32, ts_ns: i64, close: f64) -> EventKind {
        EventKind::Adapter(AdapterEvent::Bar {
            adapter: 0,
            request,
            candle: Candle {
                ts_ns,
                symbol,
                flags: 0,
                open: close,
                high: close,
                low: close,
                close,
                volume: 1.0,
            },
        })
    }

    fn done(request: u64) -> EventKind {
        EventKind::Adapter(AdapterEvent::Done {
            adapter: 0,
            request,
            kind: RequestKind::GetHistoricalBars,
            count: 2,
        })
    }

    #[test]
    fn asks_for_the_previous_and_forming_bar_within_the_limit_and_publishes_each_complete_bar_once()
    {
        let mut f = feed(2);
        assert!(requests(&event(&mut f, 0, EventKind::Started { wall_ns: 0 })).is_empty());
        let at = 5 * MS;
        let first = event(&mut f, at, ready());
        let sent = requests(&first);
        assert_eq!(sent.len(), 2, "two in flight at most: {first:?}");
        let now = 1_700_000_000_000_000_000 + at as i64;
        let bar = 60_000 * MS as i64;
        let forming = now - now.rem_euclid(bar);
        match sent[0].request {
            Request::GetHistoricalBars {
                symbol,
                from_ns,
                to_ns,
                bar_ns,
            } => {
                assert_eq!((symbol, from_ns, to_ns), (0, forming - bar, now + 1));
                assert_eq!(bar_ns, bar as u64);
            }
            other => panic!("{other:?}"),
        }
        // The answer: the complete bar and the forming one.
        event(&mut f, at + MS, bar_event(1, 0, forming - bar, 10.0));
        event(&mut f, at + MS, bar_event(1, 0, forming, 11.0));
        let answer = event(&mut f, at + MS, done(1));
        let published: Vec<_> = answer
            .iter()
            .filter_map(|a| match a {
                Action::Output(PollOutput::Publish(c)) => Some(*c),
                _ => None,
            })
            .collect();
        assert_eq!(published.len(), 1);
        assert_eq!(
            (published[0].ts_ns, published[0].close),
            (forming - bar, 10.0)
        );
        // The freed place goes to the third symbol.
        assert_eq!(requests(&answer).len(), 1);
        assert_eq!(f.poller().requests, 3);
        // The same complete bar again (next cycle) is not published twice.
        let cycle = f.poller().next_cycle_at();
        event(
            &mut f,
            cycle,
            EventKind::Timer {
                timer: 0,
                deadline: cycle,
            },
        );
        assert_eq!(f.counts.published, 1);
    }

    #[test]
    fn a_late_cycle_is_a_typed_overrun_and_a_failure_frees_its_place() {
        let mut f = feed(1);
        event(&mut f, 0, ready());
        let cycle = f.poller().next_cycle_at();
        let late = event(
            &mut f,
            cycle,
            EventKind::Timer {
                timer: 0,
                deadline: cycle,
            },
        );
        let overrun = late
            .iter()
            .find_map(|a| match a {
                Action::Output(o @ PollOutput::Overrun(_)) => Some(*o),
                _ => None,
            })
            .expect("the first cycle had 2 symbols still pending");
        assert_eq!(
            f.telemetry_of(&overrun),
            Some(Telemetry::PollOverrun {
                cycle: 0,
                pending: 3
            })
        );
        let failed = event(
            &mut f,
            cycle + MS,
            EventKind::Adapter(AdapterEvent::Failed {
                adapter: 0,
                request: 1,
                kind: RequestKind::GetHistoricalBars,
                reason: FailReason::Timeout,
            }),
        );
        assert_eq!(requests(&failed).len(), 1, "the next symbol goes out");
        assert_eq!((f.counts.failed, f.poller().overruns), (1, 1));
    }

    #[test]
    fn nothing_is_sent_while_the_adapter_is_down() {
        let mut f = feed(4);
        event(&mut f, 0, ready());
        event(
            &mut f,
            MS,
            EventKind::Adapter(AdapterEvent::Down {
                adapter: 0,
                cause: tickloop_app::venue::DownCause::Exited,
                status: tickloop_app::venue::ExitStatus::Code(1),
                restart_in_ms: 100,
            }),
        );
        for id in 1..=3 {
            event(
                &mut f,
                2 * MS,
                EventKind::Adapter(AdapterEvent::Failed {
                    adapter: 0,
                    request: id,
                    kind: RequestKind::GetHistoricalBars,
                    reason: FailReason::AdapterRestarted,
                }),
            );
        }
        let cycle = f.poller().next_cycle_at();
        let tick = event(
            &mut f,
            cycle,
            EventKind::Timer {
                timer: 0,
                deadline: cycle,
            },
        );
        assert!(requests(&tick).is_empty(), "{tick:?}");
        assert_eq!(requests(&event(&mut f, cycle + MS, ready())).len(), 3);
    }
}
