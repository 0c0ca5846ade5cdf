//! KV-cache awareness: block keys, the prefix index, engine KV-event ingest.
#[cfg(test)]
mod conformance;
pub mod event;
pub mod exact;
pub mod index;
pub mod key;
