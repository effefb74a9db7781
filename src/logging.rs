//! Human logs: one `tracing` subscriber writing to stderr. Owns the log format and the level.
//! The level comes from `TICKLOOP_LOG` (a tracing filter: `info`, `debug`, `tickloop=trace`)
//! when set, else from the config file's `[log] level` (which may change while running),
//! else `info`. Machine-readable events are telemetry's job, never this module's.
//!
//! Lines read `tickloop: message`, `tickloop: warning: message`, `tickloop: error: message`;
//! when stderr is neither a terminal nor the systemd journal (which stamps lines itself), a
//! wall-clock time comes first.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

pub const ENV: &str = "TICKLOOP_LOG";

type Handle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;
static HANDLE: OnceLock<Option<Handle>> = OnceLock::new();

struct Format {
    timestamps: bool,
    /// The program's name, first on every line.
    program: &'static str,
}

impl<S, N> FormatEvent<S, N> for Format
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        cx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.timestamps {
            SystemTime.format_time(&mut w)?;
            w.write_char(' ')?;
        }
        let level = match *event.metadata().level() {
            Level::ERROR => "error: ",
            Level::WARN => "warning: ",
            Level::INFO => "",
            Level::DEBUG => "debug: ",
            Level::TRACE => "trace: ",
        };
        write!(w, "{}: {level}", self.program)?;
        cx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Install the subscriber (once, first thing in `main`).
pub fn init(program: &'static str) {
    let stderr = std::io::stderr();
    let timestamps = !stderr.is_terminal() && std::env::var_os("JOURNAL_STREAM").is_none();
    let (filter, from_env) = match std::env::var(ENV) {
        Ok(spec) => match EnvFilter::try_new(&spec) {
            Ok(f) => (f, true),
            Err(e) => {
                eprintln!(
                    "{program}: warning: {ENV}={spec:?} is not a log filter ({e}); using info"
                );
                (EnvFilter::new("info"), false)
            }
        },
        Err(_) => (EnvFilter::new("info"), false),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(Format {
            timestamps,
            program,
        });
    if tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
        .is_ok()
    {
        // The environment wins over the config file's level.
        let _ = HANDLE.set((!from_env).then_some(handle));
    }
}

/// Is `level` a log level the config file may name?
pub fn check_level(level: &str) -> Result<(), String> {
    match level {
        "error" | "warn" | "info" | "debug" | "trace" => Ok(()),
        other => Err(format!(
            "{other:?} is not a log level: use error, warn, info, debug or trace"
        )),
    }
}

/// Set the level from the config file (at startup and on every applied change). Returns
/// false when `TICKLOOP_LOG` fixes the level instead.
pub fn set_level(level: &str) -> bool {
    let Some(Some(handle)) = HANDLE.get() else {
        return false;
    };
    handle.reload(EnvFilter::new(level)).is_ok()
}
