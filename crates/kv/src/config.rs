//! The `kv` section of the router config: models to key, backends to follow.
//!
//! Plain serde types with `deny_unknown_fields`; the config module embeds [`KvConfig`]
//! and [`super::KvIndex::new`] validates it (unknown models, duplicate names).

use std::path::PathBuf;

use serde::Deserialize;

use super::exact::Algorithm;
use super::index::TierWeights;
use super::{approx, key};

/// The `kv` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvConfig {
    /// Models whose prompts are keyed; a backend names one of them.
    /// Example: `models: [{name: llama-3-8b, tokenizer: /models/llama/tokenizer.json}]`.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Backends to index, added at start; more can be added at run time.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// Centralised mode: an endpoint the router binds for engines to connect their
    /// publishers to; messages are routed to backends by topic. Default: none.
    /// Example: `bind: tcp://0.0.0.0:5557`.
    #[serde(default)]
    pub bind: Option<String>,
    /// Messages queued per backend between receipt and application; beyond it messages
    /// are dropped, counted, and the gap replayed. Default 1024. Example: `queue_capacity: 4096`.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Approximate mode: seconds a routed prompt's blocks count as cached after their
    /// last use. Default 120. Example: `approx_ttl_s: 60`.
    #[serde(default = "default_approx_ttl_s")]
    pub approx_ttl_s: u64,
    /// Weights of cached blocks per tier; default none (every tier counts fully).
    /// Example: `tier_weights: {gpu: 1.0, cpu: 0.8, disk: 0.5}`.
    #[serde(default)]
    pub tier_weights: Option<TierWeights>,
    /// Largest KV-event message accepted, in bytes (all frames together), live or
    /// replayed; set as ZeroMQ's `ZMQ_MAXMSGSIZE` on every socket, so a larger frame is
    /// never read (ZeroMQ drops the connection), and checked again on each message.
    /// Default 4 MiB. Example: `max_message_bytes: 8388608`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Most engine block hashes one event may carry; an event with more is rejected
    /// (it would hold the index for too long). Default 65536 (a 1M-token prompt in
    /// 16-token blocks). Example: `max_hashes_per_event: 131072`.
    #[serde(default = "default_max_hashes_per_event")]
    pub max_hashes_per_event: usize,
    /// Most batches one replay request takes from an engine (also the replay socket's
    /// receive high-water mark); a gap longer than what the retries cover clears the
    /// backend. Default 1024. Example: `max_replay_batches: 4096`.
    #[serde(default = "default_max_replay_batches")]
    pub max_replay_batches: usize,
}

// NB: by hand, not derived: an absent `kv:` section must get the same defaults as an
// empty one (a derived `Default` would give a TTL and a queue of zero).
impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            models: Vec::new(),
            backends: Vec::new(),
            bind: None,
            queue_capacity: default_queue_capacity(),
            approx_ttl_s: default_approx_ttl_s(),
            tier_weights: None,
            max_message_bytes: default_max_message_bytes(),
            max_hashes_per_event: default_max_hashes_per_event(),
            max_replay_batches: default_max_replay_batches(),
        }
    }
}

impl KvConfig {
    /// What is wrong with the section's limits, each as `field: problem` (for the
    /// config loader, which prefixes `kv.`).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (field, value) in [
            ("max_message_bytes", self.max_message_bytes),
            ("max_hashes_per_event", self.max_hashes_per_event),
            ("max_replay_batches", self.max_replay_batches),
        ] {
            if value == 0 {
                problems.push(format!("{field}: must be at least 1"));
            }
        }
        for (field, value) in [
            ("max_message_bytes", self.max_message_bytes),
            ("max_replay_batches", self.max_replay_batches),
        ] {
            if i32::try_from(value).is_err() {
                problems.push(format!("{field}: must be at most {}", i32::MAX));
            }
        }
        problems
    }
}

fn default_max_message_bytes() -> usize {
    4 << 20
}

fn default_max_hashes_per_event() -> usize {
    65_536
}

fn default_max_replay_batches() -> usize {
    1024
}

fn default_queue_capacity() -> usize {
    1024
}

fn default_approx_ttl_s() -> u64 {
    approx::DEFAULT_TTL_S
}

/// One model's keying.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model name requests carry. Example: `name: llama-3-8b`.
    pub name: String,
    /// Tokens per block; engine block sizes must be multiples of it. Default 16.
    /// Example: `block_size: 16`.
    #[serde(default = "default_block_size")]
    pub block_size: u32,
    /// The model's `tokenizer.json`; without it prompts are keyed on text and only the
    /// approximate mode applies. Example: `tokenizer: /models/llama/tokenizer.json`.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// The chat template: a `tokenizer_config.json` or a Jinja file.
    /// Example: `chat_template: /models/llama/tokenizer_config.json`.
    #[serde(default)]
    pub chat_template: Option<PathBuf>,
    /// Cross-check engine hashes by reproducing them. Default: off.
    /// Example: `exact: {algorithm: sha256_cbor, python_hash_seed: "0"}`.
    #[serde(default)]
    pub exact: Option<ExactConfig>,
}

fn default_block_size() -> u32 {
    key::DEFAULT_BLOCK_SIZE
}

/// The engine hashing to reproduce in exact mode.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExactConfig {
    /// The engine's `--prefix-caching-hash-algo`. Example: `algorithm: sha256_cbor`.
    pub algorithm: Algorithm,
    /// The engine's `PYTHONHASHSEED`. Example: `python_hash_seed: "0"`.
    pub python_hash_seed: String,
}

/// One backend's cache source.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// The backend's name, unique in the fleet. Example: `name: gpu-a-0`.
    pub name: String,
    /// The model it serves (one of `models`). Example: `model: llama-3-8b`.
    pub model: String,
    /// The engine's KV-event PUB endpoint to connect to. Without it (and without a
    /// `topic` in bind mode) the backend uses the approximate mode.
    /// Example: `events: tcp://10.0.0.5:5557`.
    #[serde(default)]
    pub events: Option<String>,
    /// The engine's replay ROUTER endpoint. Example: `replay: tcp://10.0.0.5:5558`.
    #[serde(default)]
    pub replay: Option<String>,
    /// Topic prefix to subscribe to; in bind mode, the exact topic this backend's engine
    /// publishes. Example: `topic: kv@10.0.0.5:8000@llama-3-8b`.
    #[serde(default)]
    pub topic: Option<String>,
    /// Blocks the backend can hold; beyond it the least recently used are forgotten.
    /// Default: unbounded with events, 31250 in approximate mode.
    /// Example: `capacity_blocks: 65536`.
    #[serde(default)]
    pub capacity_blocks: Option<u32>,
}

impl BackendConfig {
    /// A backend of `model` with no events (approximate mode) and default capacity.
    pub fn new(name: &str, model: &str) -> Self {
        BackendConfig {
            name: name.to_owned(),
            model: model.to_owned(),
            events: None,
            replay: None,
            topic: None,
            capacity_blocks: None,
        }
    }
}

impl ModelConfig {
    /// A model with no tokenizer: prompts are keyed on their text at the default block
    /// size, and only the approximate mode applies.
    pub fn text_keyed(name: &str) -> Self {
        ModelConfig {
            name: name.to_owned(),
            block_size: default_block_size(),
            tokenizer: None,
            chat_template: None,
            exact: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_section_has_the_documented_defaults() {
        let absent = KvConfig::default();
        let empty: KvConfig = serde_yaml_ng::from_str("{}").unwrap();
        assert_eq!(absent.approx_ttl_s, approx::DEFAULT_TTL_S);
        assert_eq!(absent.approx_ttl_s, empty.approx_ttl_s);
        assert_eq!(absent.queue_capacity, empty.queue_capacity);
        assert_eq!(absent.max_message_bytes, 4 << 20);
        assert_eq!(absent.max_message_bytes, empty.max_message_bytes);
        assert_eq!(absent.max_hashes_per_event, empty.max_hashes_per_event);
        assert_eq!(absent.max_replay_batches, empty.max_replay_batches);
    }

    #[test]
    fn zero_or_oversized_limits_are_problems() {
        let config: KvConfig = serde_yaml_ng::from_str(
            "{max_message_bytes: 0, max_hashes_per_event: 0, max_replay_batches: 4294967296}",
        )
        .unwrap();
        assert_eq!(
            config.problems(),
            [
                "max_message_bytes: must be at least 1",
                "max_hashes_per_event: must be at least 1",
                "max_replay_batches: must be at most 2147483647",
            ]
        );
        assert!(KvConfig::default().problems().is_empty());
    }
}
