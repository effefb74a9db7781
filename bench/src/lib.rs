//! tickloop's latency harness. Each benchmark measures tickloop next to its physical limit and
//! its peers in the same run, and reports medians and tails (hdrhistogram).
//! Benchmarks print results; they never assert speed (that belongs to committed reports).
//! `report` is what they all print and save; `harness` is how they measure.

pub mod adapter;
pub mod cyclictest;
mod harness;
pub mod loop_bench;
mod peers;
pub mod poll;
pub mod report;
pub mod ring;
pub mod timers;
