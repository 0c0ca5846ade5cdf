//! `switchyard policy ...`.

/// Subcommands of `switchyard policy`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Placeholder until the subcommands land.
    Todo,
}

/// Runs a `switchyard policy` subcommand.
pub fn run(_command: Command) -> anyhow::Result<()> {
    anyhow::bail!("`switchyard policy` is not built yet")
}
