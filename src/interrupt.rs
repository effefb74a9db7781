//! Ctrl-C for the commands that run outside the loop (feeds, demos, readers): SIGINT and
//! SIGTERM set a flag that a long-running command checks between steps. The loop itself takes
//! its signals from a signalfd instead (`tickloop_runtime::signals`); nothing here runs there.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Set by SIGINT/SIGTERM: long-running commands finish their current step and stop.
pub fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registration only fails for forbidden signals, which these are not.
        let _ = signal_hook::flag::register(signal, stop.clone());
    }
    stop
}
