//! `switchyard serve`: load the config, bind, print the ready lines, serve.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `switchyard serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (YAML). See `examples/config-reference.yaml`.
    #[arg(long, short, env = "SWITCHYARD_CONFIG")]
    config: PathBuf,
}

/// Runs `switchyard serve`. Prints `listening on <addr>` and, with an admin API,
/// `admin listening on <addr>` on stdout once both are bound (tests and scripts wait for
/// these lines; with `listen: 127.0.0.1:0` they carry the chosen port).
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = switchyard::Config::load(&args.config)?;
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(async {
        let server = switchyard::Server::bind(config).await?;
        let mut out = std::io::stdout().lock();
        if let Some(addr) = server.local_addr() {
            writeln!(out, "listening on {addr}")?;
        }
        if let Some(addr) = server.admin_addr() {
            writeln!(out, "admin listening on {addr}")?;
        }
        out.flush()?;
        drop(out);
        server.serve(switchyard::server::shutdown_signal()).await?;
        Ok(())
    })
}
