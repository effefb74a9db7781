//! Replay: feed a journal's inputs through an app again, on any driver, and check that every
//! action is the one recorded, naming the first that differs.
//!
//! The recorded times are the clock: replay never reads the driver's clock for the app. The
//! driver serves the replay's signals (Ctrl-C stops a long replay cleanly). Replay never
//! performs actions: timers, outputs and stops are only compared (and written out if asked).

use crate::driver::{AnyDriver, Driver, DriverOptions, Interest, ReadyList, Token, Wait};
use crate::journal::{JournalError, JournalReader, Record};
use crate::signals::Signals;
use serde::Serialize;
use std::io::{self, Write};
use tickloop_app::SignalKind;
use tickloop_app::{Action, App, Context, Event};

/// The first place a replay differs from the recording.
#[derive(Debug, Clone, Serialize)]
pub struct Divergence {
    /// Index of the input event (0 = the first) whose actions differ.
    pub input: u64,
    pub event: String,
    /// Index of the action within that event's actions.
    pub action: usize,
    /// What the journal recorded, and what the app did now ("nothing" if absent).
    pub recorded: String,
    pub replayed: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub app: String,
    pub recorded_on: String,
    pub replayed_on: String,
    /// Inputs whose actions were all checked (fully verified with `--verify`).
    pub inputs: u64,
    pub actions: u64,
    /// The journal ends with the end marker of a clean stop.
    pub clean_end: bool,
    /// The journal was cut off (a killed run): replayed up to the last whole record.
    pub truncated: Option<String>,
    /// Stopped early by a signal.
    pub interrupted: bool,
    pub divergence: Option<Divergence>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("replay: {0}")]
    Io(#[from] io::Error),
}

const SIGNAL_TOKEN: Token = Token(0);

/// Replay `journal` through `app`. Every action the app returns now is compared with the
/// recorded one and, when `out` is given, written to it as one JSON line. Stops at the first
/// divergence.
pub fn replay<A: App>(
    journal: &mut JournalReader,
    app: &mut A,
    driver: &mut AnyDriver,
    actions_per_event: usize,
    mut out: Option<&mut dyn Write>,
    progress: &mut dyn FnMut(u64),
) -> Result<ReplayReport, ReplayError> {
    let mut signals = Signals::open()?;
    driver.register(signals.fd(), SIGNAL_TOKEN, Interest::Read)?;
    let mut ready = ReadyList::with_capacity(DriverOptions::default().ready_capacity as usize);
    let mut report = ReplayReport {
        app: journal.header().app.clone(),
        recorded_on: journal.header().driver.clone(),
        replayed_on: driver.kind().name().to_string(),
        inputs: 0,
        actions: 0,
        clean_end: false,
        truncated: None,
        interrupted: false,
        divergence: None,
    };
    let mut actions: Vec<Action<A::Output>> = Vec::with_capacity(actions_per_event.max(1));
    // The input being checked and how many of its recorded actions matched so far.
    let mut current: Option<(Event, usize)> = None;
    let mut ended = false;
    loop {
        let record = match journal.next_record::<A::Output>() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e @ JournalError::Damaged { .. }) => {
                report.truncated = Some(e.to_string());
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if ended {
            report.truncated = Some(format!(
                "record {} follows the end marker: the file was appended to or damaged",
                journal.index()
            ));
            break;
        }
        match record {
            Record::Input(event) => {
                if let Some(d) = finish_input(&current, &actions, report.inputs) {
                    report.divergence = Some(d);
                    break;
                }
                if current.take().is_some() {
                    report.inputs += 1;
                }
                if report.inputs.is_multiple_of(4096) {
                    progress(report.inputs);
                    driver.wait(Wait::Poll, &mut ready)?;
                    while let Some(signal) = signals.next_signal() {
                        if let SignalKind::Stop { .. } = signal {
                            report.interrupted = true;
                        }
                    }
                    if report.interrupted {
                        break;
                    }
                }
                actions.clear();
                let mut dropped = 0;
                app.on_event(
                    &event,
                    &mut Context::new(event.at, &mut actions, &mut dropped),
                );
                if let Some(out) = out.as_deref_mut() {
                    for action in &actions {
                        serde_json::to_writer(&mut *out, action).map_err(io::Error::other)?;
                        out.write_all(b"\n")?;
                    }
                }
                report.actions += actions.len() as u64;
                current = Some((event, 0));
            }
            Record::Output(recorded) => {
                let Some((event, matched)) = &mut current else {
                    report.divergence = Some(Divergence {
                        input: report.inputs,
                        event: "(none: an action with no input before it)".into(),
                        action: 0,
                        recorded: format!("{recorded:?}"),
                        replayed: "nothing".into(),
                    });
                    break;
                };
                let replayed = actions.get(*matched);
                if replayed != Some(&recorded) {
                    report.divergence = Some(Divergence {
                        input: report.inputs,
                        event: format!("{event:?}"),
                        action: *matched,
                        recorded: format!("{recorded:?}"),
                        replayed: replayed.map_or("nothing".into(), |a| format!("{a:?}")),
                    });
                    break;
                }
                *matched += 1;
            }
            Record::AppConfig {
                generation,
                config,
                accepted,
            } => {
                // Offered between inputs: the previous input's actions are complete.
                if let Some(d) = finish_input(&current, &actions, report.inputs) {
                    report.divergence = Some(d);
                    break;
                }
                if current.take().is_some() {
                    report.inputs += 1;
                }
                actions.clear();
                let replayed = app.reconfigure(&config);
                if replayed.is_ok() != accepted {
                    report.divergence = Some(Divergence {
                        input: report.inputs,
                        event: format!("new app config, generation {generation}"),
                        action: 0,
                        recorded: if accepted { "accepted" } else { "refused" }.into(),
                        replayed: match replayed {
                            Ok(()) => "accepted".into(),
                            Err(why) => format!("refused: {why}"),
                        },
                    });
                    break;
                }
            }
            Record::End { inputs } => {
                if let Some(d) = finish_input(&current, &actions, report.inputs) {
                    report.divergence = Some(d);
                    break;
                }
                if current.take().is_some() {
                    report.inputs += 1;
                }
                ended = true;
                report.clean_end = inputs == report.inputs;
                if !report.clean_end {
                    report.truncated = Some(format!(
                        "the end marker counts {inputs} inputs but {} were read",
                        report.inputs
                    ));
                }
            }
        }
    }
    // A journal without its end marker was cut off (a killed run, a full disk): the last input
    // may have lost actions with the cut, so it is neither judged nor counted.
    if !ended && report.truncated.is_none() && report.divergence.is_none() && !report.interrupted {
        report.truncated = Some(
            "the journal has no end marker: the run did not stop cleanly (killed, or its disk \
             filled)"
                .into(),
        );
    }
    if let Some(out) = out {
        out.flush()?;
    }
    let _ = driver.deregister(signals.fd(), SIGNAL_TOKEN);
    Ok(report)
}

/// The app returned more actions for the current input than were recorded?
fn finish_input<O: std::fmt::Debug>(
    current: &Option<(Event, usize)>,
    actions: &[Action<O>],
    input: u64,
) -> Option<Divergence> {
    let (event, matched) = current.as_ref()?;
    (actions.len() > *matched).then(|| Divergence {
        input,
        event: format!("{event:?}"),
        action: *matched,
        recorded: "nothing".into(),
        replayed: format!("{:?}", actions[*matched]),
    })
}
