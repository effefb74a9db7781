//! (being written) Host setup: pinning, SCHED_FIFO, mlockall, prefaulting, cpu_dma_latency.
