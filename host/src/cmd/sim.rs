//! `switchyard sim`.

/// Arguments of `switchyard sim`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `switchyard sim`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`switchyard sim` is not built yet")
}
