//! The `synthnet` command line: a dispatcher over the library. Each subcommand owns its
//! flags (a `clap::Args` struct) and its `run` in [`synthnet::commands`]; this file
//! parses, sets up the log, runs the one asked for and prints the error chain once.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::process::ExitCode;
use synthnet::commands::{
    attach, bridge, check, compile_check, ctl, replay, run, scaffold, status, takeover,
};
#[cfg(feature = "tools")]
use synthnet::commands::{bench, bench_bridge, demo};

#[derive(Parser)]
#[command(
    name = "synthnet",
    version,
    about = "A userspace synthetic network: wasm packet functions between two interfaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands, in the order `--help` lists them; what each does is its `Args`
/// struct's doc comment.
#[derive(Subcommand)]
enum Command {
    #[command(name = "__compile-check", hide = true)]
    CompileCheck(compile_check::CompileCheckArgs),
    Bridge(bridge::BridgeArgs),
    Run(run::RunArgs),
    #[command(name = "__run-outer", hide = true)]
    RunOuter(run::OuterArgs),
    #[command(name = "__run-inner", hide = true)]
    RunInner(run::InnerArgs),
    Attach(attach::AttachArgs),
    #[cfg(feature = "tools")]
    Demo(demo::DemoArgs),
    Check(check::CheckArgs),
    Replay(replay::ReplayArgs),
    #[cfg(feature = "tools")]
    BenchBridge(bench_bridge::BenchBridgeArgs),
    Takeover(takeover::TakeoverArgs),
    Ctl(ctl::CtlArgs),
    Plugin(scaffold::PluginArgs),
    #[cfg(feature = "tools")]
    Bench(bench::BenchArgs),
}

impl Command {
    fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::CompileCheck(a) => Ok(a.run()),
            Command::Bridge(a) => a.run(),
            Command::Run(a) => Ok(a.run()),
            Command::RunOuter(a) => a.run(),
            Command::RunInner(a) => Ok(a.run()),
            Command::Attach(a) => a.run(),
            #[cfg(feature = "tools")]
            Command::Demo(a) => a.run(),
            Command::Check(a) => a.run(),
            Command::Replay(a) => a.run(),
            #[cfg(feature = "tools")]
            Command::BenchBridge(a) => a.run(),
            Command::Takeover(a) => a.run(),
            Command::Ctl(a) => a.run(),
            Command::Plugin(a) => a.run(),
            #[cfg(feature = "tools")]
            Command::Bench(a) => a.run(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A front door's terminal belongs to the command it runs: only warnings and errors.
    let quiet = matches!(
        cli.command,
        Command::Run(_) | Command::RunOuter(_) | Command::RunInner(_)
    );
    let default = if quiet { "warn" } else { "info" };
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    logger.format_timestamp_millis();
    // The bridge's status line is redrawn in place on a terminal: a log line clears it
    // first (it comes back at its next second).
    if matches!(cli.command, Command::Bridge(_)) && std::io::stderr().is_terminal() {
        logger.format(|buf, record| {
            use std::io::Write;
            let style = buf.default_level_style(record.level());
            writeln!(
                buf,
                "{}[{} {style}{:<5}{style:#} {}] {}",
                status::CLEAR,
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                record.args()
            )
        });
    }
    logger.init();
    match cli.command.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("synthnet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every argument of every visible command says what it is, and every command that
    /// does something shows examples (`--help`).
    #[test]
    fn every_argument_has_a_description_and_every_command_examples() {
        let mut missing = Vec::new();
        synthnet::commands::undescribed(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}
