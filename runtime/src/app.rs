//! The application interface: events in, actions out. The loop stamps every input with its
//! clock and hands it to [`App::on_event`] as an [`Event`]; the app answers through a
//! [`Context`] that records [`Action`]s, which the loop performs after the call returns.
//!
//! An app never reads a clock (it has `event.at`), never spawns a thread, never does IO, never
//! iterates a randomly-seeded map and never allocates per event. Then the same events give
//! the same actions, byte for byte, which is what `tickloop replay --verify` checks.

use crate::adapter::AdapterEvent;
use crate::clock::Nanos;
use crate::ring::Candle;
use crate::signals::SignalKind;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// An input, stamped with the loop's clock.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: Nanos,
    pub kind: EventKind,
}

/// Index of a ring source, in the order the rings were given to the loop.
pub type SourceId = u16;

/// An app timer's id: chosen by the app, below the loop's timer capacity.
pub type TimerId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// The loop is running; the first event of every run.
    Started,
    /// A candle from ring source `source`, at ring position `pos`.
    Candle {
        source: SourceId,
        pos: u64,
        candle: Candle,
    },
    /// The ring's writer lapped this reader: exactly `lost` candles were skipped.
    CandlesLost { source: SourceId, lost: u64 },
    /// A new writer took over the ring (its epoch); positions continue.
    NewWriter { source: SourceId, epoch: u64 },
    /// The ring's file was removed; the source delivers nothing more.
    RingRemoved { source: SourceId },
    /// A finite source (a data file replayed by a backtest) delivered its last candle.
    SourceEnded { source: SourceId },
    /// App timer `timer` was due at `deadline` (lateness is `at - deadline`).
    Timer { timer: TimerId, deadline: Nanos },
    /// Periodic timer `timer` broke its budget on the firing just delivered: it fired
    /// `late_ns` after its deadline, or the app took `took_ns` to handle it, more than
    /// `budget_ns`; or `skipped` whole periods had passed (they are not fired late, just
    /// dropped). Delivered right after that firing's `Timer` event.
    TimerOverrun {
        timer: TimerId,
        late_ns: Nanos,
        took_ns: Nanos,
        budget_ns: Nanos,
        skipped: u32,
    },
    /// A timer action could not be performed (see [`TimerRefusal`]).
    TimerRefused {
        timer: TimerId,
        reason: TimerRefusal,
    },
    /// The app returned more actions from one event than the loop's limit; the rest were
    /// dropped (counted in the loop's stats too).
    ActionsDropped { dropped: u32 },
    /// Something an fd source (see [`crate::event_loop::FdSource`]) reports: bytes read from
    /// a pipe, an eventfd count, a child's exit status. Sources with richer payloads get
    /// their own variants.
    Notify { source: SourceId, value: u64 },
    /// A signal: stop (SIGTERM/SIGINT) or reload (SIGHUP).
    Signal(SignalKind),
    /// The app took a new configuration ([`App::reconfigure`] returned `Ok`): generation
    /// `generation` of the config file is in force. Timers it should re-arm, it re-arms now.
    Reconfigured { generation: u64 },
    /// The last event: the loop stops after performing the actions the app returns now.
    Shutdown,
    /// From a broker or exchange adapter (see [`crate::adapter`]): an answer, a live candle,
    /// an order update or fill, or a change in the adapter's life.
    Adapter(AdapterEvent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimerRefusal {
    /// The id is not below the timer capacity.
    BadId,
    /// Every timer entry is in use.
    WheelFull,
    /// A periodic timer needs a period of at least 1 µs.
    BadPeriod,
    /// Every periodic-timer slot (with its histograms) is in use.
    TooManyPeriodic,
}

/// What an app asks the loop to do. `O` is the app's own output (orders, signals...), which
/// the loop hands to its output sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action<O> {
    /// Fire `timer` once at `deadline` (replaces an earlier setting of the same id).
    SetTimer {
        timer: TimerId,
        deadline: Nanos,
    },
    /// Fire `timer` every `period` from `first`, with a run-time and lateness budget.
    SetPeriodic {
        timer: TimerId,
        first: Nanos,
        period: Nanos,
        budget: Nanos,
    },
    CancelTimer {
        timer: TimerId,
    },
    /// Stop the loop (after this iteration; the app then gets [`EventKind::Shutdown`]).
    Stop,
    Output(O),
}

/// The app's side of an event: the time and a bounded list of actions.
pub struct Context<'a, O> {
    now: Nanos,
    actions: &'a mut Vec<Action<O>>,
    dropped: &'a mut u32,
}

impl<'a, O> Context<'a, O> {
    /// `actions` must be empty; its capacity is the limit per event.
    pub fn new(now: Nanos, actions: &'a mut Vec<Action<O>>, dropped: &'a mut u32) -> Self {
        debug_assert!(actions.is_empty());
        Context {
            now,
            actions,
            dropped,
        }
    }

    /// The event's time on the loop's clock (the only clock an app has).
    pub fn now(&self) -> Nanos {
        self.now
    }

    fn push(&mut self, action: Action<O>) {
        if self.actions.len() < self.actions.capacity() {
            self.actions.push(action);
        } else {
            *self.dropped += 1;
        }
    }

    pub fn set_timer(&mut self, timer: TimerId, deadline: Nanos) {
        self.push(Action::SetTimer { timer, deadline });
    }

    /// A periodic timer first due one period from now.
    pub fn every(&mut self, timer: TimerId, period: Nanos, budget: Nanos) {
        let first = self.now.saturating_add(period);
        self.push(Action::SetPeriodic {
            timer,
            first,
            period,
            budget,
        });
    }

    pub fn cancel_timer(&mut self, timer: TimerId) {
        self.push(Action::CancelTimer { timer });
    }

    pub fn stop(&mut self) {
        self.push(Action::Stop);
    }

    pub fn emit(&mut self, output: O) {
        self.push(Action::Output(output));
    }
}

/// An application: deterministic logic over events.
pub trait App {
    /// The app's own output; it is recorded in the journal, so it must serialize.
    type Output: Serialize + DeserializeOwned + Clone + PartialEq + Debug;
    /// A stable name, recorded in the journal so `replay` can build the same app.
    fn name(&self) -> &'static str;
    fn on_event(&mut self, event: &Event, cx: &mut Context<'_, Self::Output>);
    /// Take new parameters while running (postcard bytes of the app's config, as in the
    /// journal's header). On `Ok` the loop delivers [`EventKind::Reconfigured`] next; on
    /// `Err` the app must be unchanged. It may allocate (this is not per event). The call is
    /// journaled, so replay makes it at the same point.
    /// The typed telemetry event an output stands for (an order's transition, a fill...), if
    /// any: the loop emits it when it performs the output.
    fn telemetry_of(&self, _output: &Self::Output) -> Option<crate::telemetry::Telemetry> {
        None
    }
    fn reconfigure(&mut self, _config: &[u8]) -> Result<(), String> {
        Err(format!(
            "app {} takes no new config while running",
            self.name()
        ))
    }
}

/// Where the loop sends the app's outputs (the order router, a test's collector...).
pub trait OutputSink<O> {
    fn output(&mut self, at: Nanos, output: &O);
}

/// A sink that drops outputs (they are still journaled).
pub struct Discard;

impl<O> OutputSink<O> for Discard {
    fn output(&mut self, _at: Nanos, _output: &O) {}
}
