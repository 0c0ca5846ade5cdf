//! `switchyard kv ...`.

/// Subcommands of `switchyard kv`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Placeholder until the subcommands land.
    Todo,
}

/// Runs a `switchyard kv` subcommand.
pub fn run(_command: Command) -> anyhow::Result<()> {
    anyhow::bail!("`switchyard kv` is not built yet")
}
