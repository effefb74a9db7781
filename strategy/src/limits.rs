//! Every limit of the strategy host, in one place: the bounds its config is checked against
//! and the fixed capacities of the tables it preallocates, tied together by the assertions
//! below so that changing one that would break another fails the build.
//!
//! It holds numbers only and imports no other module of this crate.

/// Largest `symbols`: the host's book has a row per symbol id, and ids are the ring's.
pub const MAX_SYMBOLS: u32 = tickloop_ring::layout::MAX_SYMBOLS;
/// Largest `max_open_orders` and `max_open_trades`.
pub const MAX_OPEN_ORDERS: u32 = 1 << 16;
pub const MAX_OPEN_TRADES: u32 = 1 << 16;
/// Largest `intents_per_event` (orders and cancels a strategy may ask for in one event).
pub const MAX_INTENTS_PER_EVENT: u32 = 4096;
/// Largest `risk.max_orders_per_sec` (its window holds that many order times).
pub const MAX_ORDERS_PER_SEC: u32 = 100_000;

/// Updates one order makes in one event at most (submitted, accepted, filled...).
pub const UPDATES_PER_ORDER: usize = 4;
/// Rounds of "tell the strategy, act on its new intents" per event.
pub const SETTLE_ROUNDS: usize = 4;
/// Fills remembered per open order allowed, to refuse duplicates (a venue resending a fill),
/// and at most this many in all (each fill scans them: 16 Ki keys are a few µs).
pub const FILLS_REMEMBERED_PER_ORDER: usize = 16;
pub const FILLS_REMEMBERED_MAX: usize = 16 << 10;
/// Fill faults the strategy can be told of per event; more are counted as updates dropped.
pub const FAULTS_PER_EVENT: usize = 64;

const _: () = {
    // Every fill an order can take in one event's updates is remembered.
    assert!(FILLS_REMEMBERED_PER_ORDER >= UPDATES_PER_ORDER);
    assert!(FILLS_REMEMBERED_MAX >= FILLS_REMEMBERED_PER_ORDER);
    // The update tables (UPDATES_PER_ORDER per open order) stay within a u32 count.
    assert!(UPDATES_PER_ORDER as u64 * MAX_OPEN_ORDERS as u64 <= u32::MAX as u64);
    // One event's intents can all become open orders, and a strategy gets at least one
    // round to act on what its first intents caused.
    assert!(MAX_INTENTS_PER_EVENT <= MAX_OPEN_ORDERS);
    assert!(SETTLE_ROUNDS >= 2);
};
