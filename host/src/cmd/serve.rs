//! `switchyard serve`.

/// Arguments of `switchyard serve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `switchyard serve`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`switchyard serve` is not built yet")
}
