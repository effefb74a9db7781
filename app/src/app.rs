//! The application interface: events in, actions out. The loop stamps every input with its
//! clock and hands it to [`App::on_event`] as an [`Event`]; the app answers through a
//! [`Context`] that records [`Action`]s, which the loop performs after the call returns.
//!
//! An app never reads a clock (it has `event.at`), never spawns a thread, never does IO, never
//! iterates a randomly-seeded map and never allocates per event. Then the same events give
//! the same actions, byte for byte, which is what `tickloop replay --verify` checks.

use crate::clock::Nanos;
use crate::event::{Event, TimerId};
use crate::telemetry::Telemetry;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

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
    /// Stop the loop (after this iteration; the app then gets [`crate::EventKind::Shutdown`]).
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
    /// journal's header). On `Ok` the loop delivers [`crate::EventKind::Reconfigured`] next; on
    /// `Err` the app must be unchanged. It may allocate (this is not per event). The call is
    /// journaled, so replay makes it at the same point.
    /// The typed telemetry event an output stands for (an order's transition, a fill...), if
    /// any: the loop emits it when it performs the output.
    fn telemetry_of(&self, _output: &Self::Output) -> Option<Telemetry> {
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
