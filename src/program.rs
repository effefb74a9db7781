//! [`Program`]: a program built on the library, named by its author, with the strategies it
//! registers. It owns the start of a process: the registry, the command line's name, logging,
//! and how an error leaves (one line, `NAME: error: ...`, exit 2). It never decides anything
//! a command decides.

use crate::backtest_cmd::StrategyBacktest;
use crate::run_cmd::StrategyFns;
use crate::strategies::{builtin, Entry, ForStrategy, Registry};
use clap::{CommandFactory, FromArgMatches};
use std::ffi::OsString;
use std::process::ExitCode;
use tickloop_strategy::host::Strategy;

/// The engine program with its strategies: `Program::new("mybot").strategy::<MyStrategy>()`.
pub struct Program {
    registry: Registry,
    /// The commands' functions for each strategy, in the registry's order.
    run: Vec<StrategyFns>,
    backtest: Vec<StrategyBacktest>,
    error: Option<String>,
}

impl Program {
    /// A program named `name` (its command name in help and errors, and in its journals) with
    /// tickloop's built-in strategies.
    pub fn new(name: &'static str) -> Program {
        Program {
            registry: Registry::builtin(name),
            run: builtin(),
            backtest: builtin(),
            error: None,
        }
    }

    /// Register `S` under `S::NAME`; a name already taken makes [`Program::main`] fail.
    pub fn strategy<S: Strategy + 'static>(mut self) -> Program {
        match self.registry.add(Entry::of::<S>()) {
            Ok(()) => {
                self.run.push(StrategyFns::of::<S>());
                self.backtest.push(StrategyBacktest::of::<S>());
            }
            Err(why) => {
                self.error.get_or_insert(why);
            }
        }
        self
    }

    /// Parse the process's arguments, run the command, and return its exit code.
    pub fn main(self) -> ExitCode {
        self.main_with(std::env::args_os())
    }

    /// As [`Program::main`], with these arguments (the first is the program's name).
    pub fn main_with(self, args: impl IntoIterator<Item = OsString>) -> ExitCode {
        let name = self.registry.program;
        if let Some(why) = self.error {
            eprintln!("{name}: error: {why}");
            return ExitCode::from(2);
        }
        let matches = crate::cli::Cli::command()
            .name(name)
            .bin_name(name)
            .get_matches_from(args);
        let cli = match crate::cli::Cli::from_arg_matches(&matches) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        };
        crate::strategies::install(self.registry);
        crate::run_cmd::STRATEGIES.install(self.run);
        crate::backtest_cmd::STRATEGIES.install(self.backtest);
        crate::logging::init(name);
        match crate::cli::dispatch(cli) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("{name}: error: {err:#}");
                ExitCode::from(2)
            }
        }
    }
}
