//! tickloop's latency harness. Each benchmark measures tickloop next to its physical limit and
//! its peers in the same run, and reports medians and tails (hdrhistogram).
//! Benchmarks print results; they never assert speed (that belongs to committed reports).
//! `report` is what they all print and save; `output` writes their `.hgrm` files and plots;
//! `harness` is how they measure; `all` runs every scenario in turn.

pub mod adapter;
pub mod all;
pub mod cyclictest;
mod harness;
pub mod loop_bench;
pub mod output;
mod peers;
pub mod poll;
pub mod report;
pub mod ring;
pub mod timers;
