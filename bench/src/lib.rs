//! tickloop's latency harness. Each benchmark measures tickloop next to its physical limit and
//! its peers in the same run, on the same cores, and reports medians and tails (hdrhistogram).
//! Benchmarks print results; they never assert speed (that belongs to committed reports).

pub mod cyclictest;
pub mod loop_bench;
pub mod ring;
pub mod timers;
