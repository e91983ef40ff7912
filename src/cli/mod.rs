//! The `tripwire` command line: data to stdout, diagnostics to stderr.

mod replay;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tripwire: stateful sequence triggers with Prefect's semantics.
#[derive(Debug, Parser)]
#[command(name = "tripwire", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run trigger definitions over a file of past events on a virtual clock and print one JSON
    /// line per firing ("what would have fired").
    Replay(replay::ReplayArgs),
    /// Run the server: HTTP API on --addr, data in --data (embedded redb, nothing else to
    /// install).
    Serve(serve::ServeArgs),
}

/// Parses the command line and runs the command; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay(args) => replay::run(args),
        Command::Serve(args) => serve::run(args),
    }
}
