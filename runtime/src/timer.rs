//! (being written) The fixed-capacity timer wheel.
