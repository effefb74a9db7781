//! The schema of tickloop's telemetry: [`Telemetry`], one enum for every event the engine can
//! report to the outside world, with the inline [`Text`] it carries instead of `String`.
//!
//! It owns the variants, their field names and their `kind` strings, which are the JSON-lines
//! contract (the sink that writes them lives in the runtime's `telemetry` module). It must
//! never allocate, do IO or read a clock: every value is `Copy` and fixed-size, so the order
//! path can build one per event for free.

use crate::event::EventKind;
use crate::venue::{AdapterEvent, Difference, FillFault, RequestKind, Side};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// A short string that lives inline (no allocation): at most [`Text::CAPACITY`] bytes of
/// UTF-8, truncated at a char boundary when made. Serializes as a JSON string.
#[derive(Clone, Copy)]
pub struct Text {
    len: u8,
    bytes: [u8; Text::CAPACITY],
}

impl Text {
    pub const CAPACITY: usize = 96;

    pub const EMPTY: Text = Text {
        len: 0,
        bytes: [0; Text::CAPACITY],
    };

    /// `s`, truncated to [`Text::CAPACITY`] bytes at a char boundary.
    pub fn new(s: &str) -> Text {
        let s = truncate(s, Text::CAPACITY);
        let mut text = Text::EMPTY;
        text.bytes[..s.len()].copy_from_slice(s.as_bytes());
        text.len = s.len() as u8;
        text
    }

    /// Formatted text without a `String`: `Text::from_fmt(format_args!("{err}"))`. What does
    /// not fit is cut at a char boundary (and nothing after the cut is appended).
    pub fn from_fmt(args: fmt::Arguments<'_>) -> Text {
        struct Fill {
            text: Text,
            full: bool,
        }
        impl fmt::Write for Fill {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                if self.full {
                    return Ok(());
                }
                let at = self.text.len as usize;
                let part = truncate(s, Text::CAPACITY - at);
                self.text.bytes[at..at + part.len()].copy_from_slice(part.as_bytes());
                self.text.len = (at + part.len()) as u8;
                self.full = part.len() < s.len();
                Ok(())
            }
        }
        let mut fill = Fill {
            text: Text::EMPTY,
            full: false,
        };
        let _ = fmt::Write::write_fmt(&mut fill, args);
        fill.text
    }

    pub fn as_str(&self) -> &str {
        // Always whole UTF-8: only `new` and `from_fmt` fill it, both at char boundaries.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends at a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Default for Text {
    fn default() -> Self {
        Text::EMPTY
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text::new(s)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A `&'static str` field, serialized truncated like a [`Text`] so every line stays within
/// the sink's longest line.
fn short_str<S: Serializer>(s: &&'static str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(truncate(s, Text::CAPACITY))
}

/// Why the loop is stopping. Serialized as a string: `"app"`, `"deadline"`, `"SIGTERM"`,
/// `"SIGINT"`, `"SIGHUP"`, `"SIGQUIT"`, or `"signal <n>"` for any other number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    Signal(i32),
    App,
    Deadline,
}

impl Serialize for StopCause {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            StopCause::App => serializer.serialize_str("app"),
            StopCause::Deadline => serializer.serialize_str("deadline"),
            StopCause::Signal(libc::SIGTERM) => serializer.serialize_str("SIGTERM"),
            StopCause::Signal(libc::SIGINT) => serializer.serialize_str("SIGINT"),
            StopCause::Signal(libc::SIGHUP) => serializer.serialize_str("SIGHUP"),
            StopCause::Signal(libc::SIGQUIT) => serializer.serialize_str("SIGQUIT"),
            StopCause::Signal(n) => serializer.collect_str(&format_args!("signal {n}")),
        }
    }
}

/// The life of a broker or data adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterStateKind {
    Starting,
    Ready,
    Faulty,
    Restarting,
    Stopped,
}

/// Every event tickloop can emit. Serialized as one JSON object per line:
/// `{"at_ns":..,"unix_ns":..,"kind":"timer_overrun",...fields}`; `kind` is the variant's name
/// in snake_case ([`Telemetry::kind`]), the fields keep their names here.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Telemetry {
    // --- lifecycle ---
    /// The loop is about to run.
    Started {
        pid: u32,
        #[serde(serialize_with = "short_str")]
        version: &'static str,
        #[serde(serialize_with = "short_str")]
        driver: &'static str,
        #[serde(serialize_with = "short_str")]
        mode: &'static str,
    },
    /// The loop was asked to stop (it still runs the app's shutdown).
    Stopping {
        reason: StopCause,
    },
    /// The loop stopped after `events` events, `candles` of them candles.
    Stopped {
        events: u64,
        candles: u64,
    },

    // --- configuration ---
    /// A configuration (generation `generation`) is in force; `restart_needed` of its changed
    /// fields only take effect after a restart.
    ConfigApplied {
        generation: u64,
        restart_needed: u32,
    },
    /// A new configuration was refused (at `line` of the file, 0 if none applies); generation
    /// `generation_kept` stays in force.
    ConfigRejected {
        generation_kept: u64,
        line: u32,
        reason: Text,
    },

    // --- market data and timing ---
    /// A reader of ring `source` was lapped: exactly `lost` candles skipped.
    CandlesLost {
        source: u16,
        lost: u64,
    },
    /// A new writer (epoch `epoch`) took over ring `source`.
    NewWriter {
        source: u16,
        epoch: u64,
    },
    /// Ring `source`'s file was removed.
    RingRemoved {
        source: u16,
    },
    /// Periodic timer `timer` broke its budget (see [`EventKind::TimerOverrun`]).
    TimerOverrun {
        timer: u32,
        late_ns: u64,
        took_ns: u64,
        budget_ns: u64,
        skipped: u32,
    },
    /// A polling feed's cycle `cycle` was still unfinished when the next one was due:
    /// `pending` of its requests were still queued or in flight (they carry over).
    PollOverrun {
        cycle: u64,
        pending: u32,
    },

    // --- orders and fills ---
    /// `qty` is what was sent to the venue (whole lots). With the strategy host's built-in
    /// paper broker, nothing is sent: a size given in quote currency or as all the equity is
    /// then estimated at the last close, and its `fill` says what traded. `price` is `None`
    /// (JSON `null`) for a market order.
    OrderSubmitted {
        order: u64,
        symbol: u32,
        side: Side,
        qty: f64,
        price: Option<f64>,
    },
    OrderAccepted {
        order: u64,
    },
    OrderRejected {
        order: u64,
        reason: Text,
    },
    OrderCancelled {
        order: u64,
    },
    /// A stop order's stop was reached: it now works as a market or limit order.
    OrderTriggered {
        order: u64,
    },
    /// A working order was changed: what it is for now (`qty` left to fill).
    OrderReplaced {
        order: u64,
        qty: f64,
        limit: Option<f64>,
        stop: Option<f64>,
    },
    /// A cancel or replace of `order` was refused (the order is as it was).
    OrderRefused {
        order: u64,
        reason: Text,
    },
    /// A fill booked: `qty` signed (+ bought, - sold).
    Fill {
        order: u64,
        qty: f64,
        price: f64,
    },
    /// A fill adapter `adapter` reported for `order` was not believed (see [`FillFault`]):
    /// the book did not move. `qty` and `price` as the adapter sent them; `remaining` is
    /// what the order had left (NaN for an unknown order).
    FillFault {
        adapter: u16,
        order: u64,
        fault: FillFault,
        qty: f64,
        price: f64,
        remaining: f64,
    },
    /// A place or cancel of `order` got no answer (it timed out, or the adapter went down
    /// with it in flight): the venue may have it. It is `Unknown` until the venue answers a
    /// query for it, is counted by risk as possibly filled, and is never placed again.
    OrderUnknown {
        order: u64,
        reason: Text,
    },
    /// The engine compared its books with adapter `adapter`'s venue and adopted the venue's
    /// (`first`: before the run's first intent). `differences` of them follow as
    /// `reconcile_difference` events.
    Reconciled {
        adapter: u16,
        first: bool,
        positions: u32,
        orders: u32,
        differences: u32,
        cash: f64,
    },
    /// What the engine believed and what the venue says differ: `engine` and `venue` are
    /// the position, cash or quantity on each side (an order's units left to fill; 0 on the
    /// side that does not have the order).
    /// `order` is the engine's id (0 for an order that is not the engine's).
    ReconcileDifference {
        adapter: u16,
        difference: Difference,
        symbol: u32,
        order: u64,
        engine: f64,
        venue: f64,
        adopted: bool,
    },
    /// An order on `symbol` was refused before it was sent: by risk, or by the strategy
    /// host's checks of its prices, size and bracket (`reason` names which).
    RiskDenied {
        symbol: u32,
        reason: Text,
    },

    // --- adapters (`adapter` is the adapter's id: its position in the configuration) ---
    /// An adapter became ready (`Ready`), or is stopping for good (`Stopped`).
    AdapterState {
        adapter: u16,
        state: AdapterStateKind,
    },
    /// An adapter went down: why, how its process ended, and when it restarts (0: never).
    AdapterDown {
        adapter: u16,
        cause: Text,
        status: Text,
        restart_in_ms: u32,
    },
    /// A request failed, an adapter reported an error, or adapter events were lost.
    AdapterError {
        adapter: u16,
        reason: Text,
    },

    // --- telemetry itself ---
    /// `count` events were lost (buffer full, or their batch could not be written) since the
    /// last batch that was written. Written first in the next batch that succeeds, stamped
    /// with the clock of the most recent event lost.
    Dropped {
        count: u64,
    },
}

impl Telemetry {
    /// The `kind` this event has in its JSON line.
    pub fn kind(&self) -> &'static str {
        match self {
            Telemetry::Started { .. } => "started",
            Telemetry::Stopping { .. } => "stopping",
            Telemetry::OrderUnknown { .. } => "order_unknown",
            Telemetry::Reconciled { .. } => "reconciled",
            Telemetry::ReconcileDifference { .. } => "reconcile_difference",
            Telemetry::Stopped { .. } => "stopped",
            Telemetry::ConfigApplied { .. } => "config_applied",
            Telemetry::ConfigRejected { .. } => "config_rejected",
            Telemetry::CandlesLost { .. } => "candles_lost",
            Telemetry::NewWriter { .. } => "new_writer",
            Telemetry::RingRemoved { .. } => "ring_removed",
            Telemetry::TimerOverrun { .. } => "timer_overrun",
            Telemetry::PollOverrun { .. } => "poll_overrun",
            Telemetry::OrderSubmitted { .. } => "order_submitted",
            Telemetry::OrderAccepted { .. } => "order_accepted",
            Telemetry::OrderRejected { .. } => "order_rejected",
            Telemetry::OrderCancelled { .. } => "order_cancelled",
            Telemetry::OrderTriggered { .. } => "order_triggered",
            Telemetry::OrderReplaced { .. } => "order_replaced",
            Telemetry::OrderRefused { .. } => "order_refused",
            Telemetry::Fill { .. } => "fill",
            Telemetry::FillFault { .. } => "fill_fault",
            Telemetry::RiskDenied { .. } => "risk_denied",
            Telemetry::AdapterState { .. } => "adapter_state",
            Telemetry::AdapterDown { .. } => "adapter_down",
            Telemetry::AdapterError { .. } => "adapter_error",
            Telemetry::Dropped { .. } => "dropped",
        }
    }

    /// The telemetry event for a loop event that is worth reporting outside (lost candles, a
    /// new writer, a removed ring, a timer overrun); `None` for the others.
    pub fn from_event(kind: &EventKind) -> Option<Telemetry> {
        match *kind {
            EventKind::CandlesLost { source, lost } => {
                Some(Telemetry::CandlesLost { source, lost })
            }
            EventKind::NewWriter { source, epoch } => Some(Telemetry::NewWriter { source, epoch }),
            EventKind::RingRemoved { source } => Some(Telemetry::RingRemoved { source }),
            EventKind::TimerOverrun {
                timer,
                late_ns,
                took_ns,
                budget_ns,
                skipped,
            } => Some(Telemetry::TimerOverrun {
                timer,
                late_ns,
                took_ns,
                budget_ns,
                skipped,
            }),
            EventKind::Adapter(a) => Telemetry::from_adapter(&a),
            _ => None,
        }
    }

    /// Adapter events worth reporting at the loop: the adapter's life (ready, down), its
    /// errors and failed requests. Order facts (accepted, rejected, cancelled, filled) are
    /// the app's to report, once each, because only the app knows which of them it believed
    /// (a place_order that failed is the app's `order_rejected`, with the reason).
    fn from_adapter(event: &AdapterEvent) -> Option<Telemetry> {
        Some(match *event {
            AdapterEvent::Ready { adapter, .. } => Telemetry::AdapterState {
                adapter,
                state: AdapterStateKind::Ready,
            },
            AdapterEvent::Down {
                adapter,
                cause,
                status,
                restart_in_ms,
            } => Telemetry::AdapterDown {
                adapter,
                cause: Text::from_fmt(format_args!("{cause}")),
                status: Text::from_fmt(format_args!("{status}")),
                restart_in_ms,
            },
            AdapterEvent::Failed {
                kind: RequestKind::PlaceOrder,
                ..
            } => return None,
            AdapterEvent::Failed {
                adapter,
                request,
                kind,
                reason,
            } => Telemetry::AdapterError {
                adapter,
                reason: Text::from_fmt(format_args!("request {request} ({kind}) failed: {reason}")),
            },
            AdapterEvent::Error { adapter, code } => Telemetry::AdapterError {
                adapter,
                reason: Text::from_fmt(format_args!("adapter error {}", code.as_str())),
            },
            AdapterEvent::EventsLost { adapter, count } => Telemetry::AdapterError {
                adapter,
                reason: Text::from_fmt(format_args!("{count} events lost (event queue full)")),
            },
            AdapterEvent::OrderUpdate { .. }
            | AdapterEvent::Fill { .. }
            | AdapterEvent::Account { .. }
            | AdapterEvent::Bar { .. }
            | AdapterEvent::Done { .. }
            | AdapterEvent::Position { .. }
            | AdapterEvent::VenueOrder { .. }
            | AdapterEvent::Candle { .. } => return None,
        })
    }
}
