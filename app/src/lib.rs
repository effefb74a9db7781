//! tickloop's application interface: what an app (a strategy, a feed's polling schedule, a
//! test's probe) sees of the engine, and nothing more.
//!
//! - [`clock`]: [`Nanos`], the loop's one time type;
//! - [`event`]: the inputs ([`Event`], [`EventKind`]), each stamped with the loop's clock;
//! - [`app`]: the [`App`] trait, its [`Context`] and the [`Action`]s it asks of the loop;
//! - [`venue`]: what crosses between an app and a broker or exchange adapter
//!   ([`venue::AdapterRequest`] out, [`venue::AdapterEvent`] in, [`venue::Side`]...);
//! - [`telemetry`]: the [`telemetry::Telemetry`] schema, one enum for every reported event.
//!
//! Imports run one way: clock ← venue ← event ← telemetry ← app. The crate depends on nothing
//! of the loop (no drivers, no epoll, no io_uring, no processes): a strategy crate that
//! depends on it alone builds without them. It never reads a clock, does IO or allocates per
//! event; everything an event carries is `Copy`.

pub mod app;
pub mod clock;
pub mod event;
pub mod telemetry;
pub mod venue;

pub use app::{Action, App, Context, Discard, OutputSink};
pub use clock::Nanos;
pub use event::{Event, EventKind, SignalKind, SourceId, TimerId, TimerRefusal};

// The interface's limits, all fixed by its types: a request id (`venue::MAX_REQUEST_ID`), a
// short name (`venue::Name::CAPACITY`) and a telemetry text (`telemetry::Text::CAPACITY`).
// Their lengths are kept in a byte; an id survives a trip through any JSON library as an
// integer; an event is copied through the loop by value, so it stays within two cache lines.
const _: () = {
    assert!(venue::Name::CAPACITY <= u8::MAX as usize);
    assert!(telemetry::Text::CAPACITY <= u8::MAX as usize);
    assert!(venue::MAX_REQUEST_ID == (1 << 53) - 1);
    assert!(core::mem::size_of::<Event>() <= 128);
};
