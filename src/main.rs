//! The `tickloop` program: the library's engine with the built-in strategies.

fn main() -> std::process::ExitCode {
    tickloop::Program::new("tickloop").main()
}
