//! Every limit of the operating services, in one place: a component's or an account's name
//! (the lock's, and so the status file's and the metrics page's) and the status document,
//! tied to what the SIGBUS handler can rewrite by the assertion below. The metrics page's own
//! sizes are its format's (`metrics::layout`).
//!
//! It holds numbers only and imports no other module of this crate.

/// Longest component or account name, in bytes.
pub const MAX_NAME: usize = 64;

/// The largest status document the writer produces (a bigger one is not written, and said so).
pub const MAX_STATUS_BYTES: usize = 64 << 10;

const _: () = {
    // The SIGBUS handler can rewrite any status document the writer produced.
    assert!(MAX_STATUS_BYTES <= tickloop_ring::crash::STATUS_BYTES);
};
