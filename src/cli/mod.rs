//! The `tripwire` command line: data to stdout, diagnostics (and progress, on a terminal) to
//! stderr.

mod bench;
mod emit;
mod events;
mod keys;
mod progress;
mod rate_limits;
mod remote;
mod replay;
mod runs;
mod schemas;
mod serve;
mod triggers;

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
    /// Measure the durable path over real HTTP (ingest, firings, paced latency, memory,
    /// restart) beside the machine's limits, and print a table (`--json FILE` for every figure).
    Bench(bench::BenchArgs),
    /// Send one event to a server and print the accepted id as JSON.
    Emit(emit::EmitArgs),
    /// Read a server's events: `events tail [--follow]` prints one readable line each
    /// (`--json` for JSON lines).
    Events(events::EventsArgs),
    /// Manage API keys: `keys create --role admin --name NAME` (the first key must be admin),
    /// `keys list`, `keys revoke NAME`, on a running server (`--api`, with an admin key) or a
    /// data directory (`--data DIR`).
    Keys(keys::KeysArgs),
    /// Manage a server's rate limits: `rate-limits put github-api 5000/hour`, `list`,
    /// `delete KEY`.
    RateLimits(rate_limits::RateLimitsArgs),
    /// Run trigger definitions over a file of past events on a virtual clock and print one JSON
    /// line per firing ("what would have fired").
    Replay(replay::ReplayArgs),
    /// List and show the runs on a server.
    Runs(runs::RunsArgs),
    /// Write the JSON Schemas of the public formats (events, trigger definitions, deployments,
    /// runs, firings) to --out, one file each, and print the paths written.
    Schemas(schemas::SchemasArgs),
    /// Run the server: HTTP API on --addr, data in --data (embedded redb, nothing else to
    /// install).
    Serve(serve::ServeArgs),
    /// Manage a server's trigger definitions: apply a file, list, show, buckets, delete,
    /// enable, disable.
    Triggers(triggers::TriggersArgs),
}

/// Parses the command line and runs the command; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Emit(args) => emit::run(args),
        Command::Events(args) => events::run(args),
        Command::Keys(args) => keys::run(args),
        Command::RateLimits(args) => rate_limits::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Runs(args) => runs::run(args),
        Command::Schemas(args) => schemas::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Triggers(args) => triggers::run(args),
    }
}
