//! KV-cache awareness: block keys, the prefix index, engine KV-event ingest.
pub mod apply;
#[cfg(test)]
mod conformance;
pub mod event;
pub mod exact;
pub mod index;
pub mod ingest;
pub mod key;
pub mod stats;
pub mod tokens;
