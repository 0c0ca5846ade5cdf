//! `switchyard demo`.

/// Arguments of `switchyard demo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `switchyard demo`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`switchyard demo` is not built yet")
}
