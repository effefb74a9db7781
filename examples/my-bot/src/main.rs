//! `mybot`: tickloop's whole command line with this crate's strategy registered next to the
//! built-in ones (`mybot run`, `mybot backtest`, `mybot replay`, `mybot config check`...).

fn main() -> std::process::ExitCode {
    tickloop::Program::new("mybot")
        .strategy::<my_bot::MeanReversion>()
        .main()
}
