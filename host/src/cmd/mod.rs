//! Glue for each subcommand: turns arguments into calls on the library and prints the
//! results. `anyhow` lives here, at the binary's edge.

pub mod bench;
pub mod demo;
pub mod kv;
pub mod policy;
pub mod scaffold;
pub mod serve;
pub mod sim;
