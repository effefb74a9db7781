//! The loop's inputs: an [`Event`] is a [`EventKind`] stamped with the loop's clock, and it is
//! all an app ever learns of the world (candles, timers, signals, adapters' answers).
//!
//! It owns the vocabulary of inputs and nothing else: no state, no IO, no clock. Every input is
//! `Copy`, fixed-size and serde, because the journal records each one and replay feeds it back.

use crate::clock::Nanos;
use crate::venue::AdapterEvent;
use serde::{Deserialize, Serialize};
use tickloop_ring::Candle;

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
    /// The loop is running; the first event of every run. `wall_ns` is the loop's wall
    /// clock then (ns since the Unix epoch; the simulated driver's epoch in simulation): with
    /// the event's `at`, the app's one way from a time of day to the loop's clock.
    Started { wall_ns: i64 },
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
    /// Something an fd source (an fd source of the loop) reports: bytes read from
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
    /// From a broker or exchange adapter (see [`crate::venue`]): an answer, a live candle,
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

/// What a signal asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignalKind {
    /// SIGTERM or SIGINT: finish the iteration, run shutdown, exit 0.
    Stop { signal: i32 },
    /// SIGHUP: look at the configuration now.
    Reload,
}
