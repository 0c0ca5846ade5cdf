//! KV-cache awareness: block keys, the prefix index, engine KV-event ingest.
pub mod index;
pub mod key;
