//! The `switchyard` command: CLI parsing, telemetry setup and the exit code. Each
//! subcommand's glue lives in `cmd/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod demo;

/// mimalloc instead of glibc malloc: the request path allocates on every thread, and
/// glibc's arenas cost a fifth of a request thread's time (docs/router-latency.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An inference router for mixed LLM fleets with hot-swappable WebAssembly policies.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the demo: a simulated three-vendor fleet, round-robin vs Switchyard's pipeline.
    Demo(cmd::demo::Args),
    /// Run the router in front of a fleet.
    Serve(cmd::serve::Args),
    /// Run simulated vLLM-like backends.
    Sim(cmd::sim::Args),
    /// Generate load against an OpenAI-compatible URL and report latency figures.
    Bench(cmd::bench::Args),
    /// Check, run, benchmark and scaffold routing policies.
    #[command(subcommand)]
    Policy(cmd::policy::Command),
    /// Inspect and benchmark the KV-cache prefix index.
    #[command(subcommand)]
    Kv(cmd::kv::Command),
    /// Print the admin API's OpenAPI document (what `GET /admin/openapi.json` serves).
    Openapi,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints a table; the router's per-backend info lines would bury it.
    match cli.command {
        Command::Demo(_) => switchyard::telemetry::init_logging_at("warn"),
        _ => switchyard::telemetry::init_logging(),
    }
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Sim(args) => cmd::sim::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Policy(command) => cmd::policy::run(command),
        Command::Kv(command) => cmd::kv::run(command),
        Command::Openapi => {
            println!("{}", switchyard::admin::openapi_document());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
