//! KV-cache awareness: which backend holds which prefix of a prompt.
//!
//! Per request the router calls [`KvIndex::prepare`] once (tokens as the engine sees
//! them, then our chained [block keys](key)), [`KvIndex::lookup`] to get every
//! candidate's cached-prefix tokens in one pass, and [`KvIndex::record`] with the
//! decision. Underneath:
//!
//! - [`Tokenizer`]: `tokenizer.json` plus chat template, with a prefix piece cache.
//! - [`key`]: block keys, seeded by model or LoRA name and cache salt; full blocks only.
//! - [`Index`]: key -> backends (and tier), per-backend LRU and capacity, the
//!   ref-counted (backend, engine hash) -> key map, the one-pass lookup.
//! - ingest: a ZeroMQ SUB per backend (or one bound endpoint), msgpack event batches
//!   ([`decode_batch`]) applied in order per backend, gaps replayed through the engine's
//!   ROUTER, restarts and unrecoverable gaps cleared.
//! - approximate mode for backends without events: the same index filled from routing
//!   decisions with a TTL, within the engine's capacity when the router learned it.
//! - [`ExactHasher`]: vLLM's `sha256_cbor` chain, to cross-check engines (optional).
//! - [`BackendStats`]: per-backend counters for the admin API.
//!
//! Design and measured figures: `docs/kv-index.md`.

mod apply;
mod approx;
pub mod burst;
mod config;
#[cfg(test)]
mod conformance;
mod event;
mod exact;
pub mod head;
mod index;
mod ingest;
pub mod key;
mod service;
mod stats;
mod tokens;

pub use approx::{Capacity, DEFAULT_CAPACITY_BLOCKS, DEFAULT_TTL_S, SLOT_SIMILARITY};
pub use config::{BackendConfig, ExactConfig, KvConfig, ModelConfig};
#[cfg(any(test, fuzzing))]
pub use event::assert_decoders_agree;
pub use event::{
    Batch, BlockStored, DecodeError, Event, decode_batch, encode_batch, normalize_hash,
};
pub use exact::{Algorithm, ExactHasher, ExtraKey};
pub use head::PrefixGroup;
pub use index::{Index, IndexError, MAX_BACKENDS, MAX_ENTRIES, Tier, TierWeights, part_hash};
pub use ingest::{IndexSink, IngestError, Limits, Sink};
pub use service::{
    BackendId, BackendPrefix, Error, KvCollector, KvIndex, PrefixReport, PromptKeys, Scope,
    SlotLease,
};
pub use stats::{BackendStats, Counters, Mode, PromptSlotStats, Reject};
pub use tokens::{Prompt, TokenizeError, Tokenizer};
