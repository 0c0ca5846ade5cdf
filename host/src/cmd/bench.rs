//! `switchyard bench`.

/// Arguments of `switchyard bench`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `switchyard bench`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`switchyard bench` is not built yet")
}
