//! The fleet file (`switchyard sim --fleet FILE`) and the validated specs it becomes.
//!
//! ```yaml
//! model: meta-llama/Llama-3.1-8B-Instruct
//! speed: 1.0
//! seed: 7
//! backends:
//!   - { name: h100-a, profile: h100, port: 9001 }
//!   - { name: mi300x-a, profile: mi300x, port: 9002, kv_events: { port: 5557, replay_port: 5558 } }
//!   - { name: cpu-a, profile: h100, cache: { model: slots, slots: 2, ctx_per_slot: 4096 } }
//! ```
//!
//! `host_cores: 2` makes the engines share two cores, as one-thread CPU engines on a small
//! machine do: while more engines step than there are cores, each step takes longer.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Error;
use super::engine::SharedCores;
use super::events::EventsSpec;
use super::profile::{CustomProfile, Profile};
use super::scheduler::Limits;
use super::slots::DEFAULT_SIMILARITY;
use super::tokenizer::Tokenizer;

/// Raw fleet file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    /// Model name served and reported. Default `meta-llama/Llama-3.1-8B-Instruct`.
    #[serde(default = "default_model")]
    pub model: String,
    /// Time scale: 10 runs ten times faster than real time. Default 1.
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// Seed of generated tokens, fault draws and block hashes. Default 0.
    #[serde(default)]
    pub seed: u64,
    /// A Hugging Face `tokenizer.json`; the built-in tokenizer when absent.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Extra accelerator profiles.
    #[serde(default)]
    pub profiles: Vec<CustomProfile>,
    /// Cores every backend's engine shares, as CPU engines on one host do: while more
    /// engines run a step than there are cores, each step takes that many times longer.
    /// Default: none shared, each backend an accelerator of its own.
    #[serde(default)]
    pub host_cores: Option<usize>,
    /// The backends.
    pub backends: Vec<BackendFile>,
}

/// One backend (or `replicas` identical ones) in the fleet file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendFile {
    /// Name; default `<profile>-<index>`. Replicas get `-<n>` appended.
    #[serde(default)]
    pub name: Option<String>,
    /// Accelerator profile: built-in or from `profiles`. Example `profile: mi300x`.
    pub profile: String,
    /// Copies of this backend, on consecutive ports (when `port` is not 0). Default 1.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Interface to bind. Default `127.0.0.1`.
    #[serde(default = "default_host")]
    pub host: IpAddr,
    /// HTTP port; 0 lets the OS choose. Default 0.
    #[serde(default)]
    pub port: u16,
    /// vLLM `--max-num-seqs`. Default 256.
    #[serde(default = "default_max_num_seqs")]
    pub max_num_seqs: usize,
    /// vLLM `--max-num-batched-tokens`. Default 8192.
    #[serde(default = "default_max_num_batched_tokens")]
    pub max_num_batched_tokens: usize,
    /// Tokens per KV block. Default 16.
    #[serde(default = "default_block_size")]
    pub block_size: usize,
    /// KV blocks; default from the profile's memory.
    #[serde(default)]
    pub num_gpu_blocks: Option<usize>,
    /// The KV cache model. Default `{ model: blocks }` (sized by `block_size` and
    /// `num_gpu_blocks`). Example `cache: { model: slots, slots: 2, ctx_per_slot: 4096 }`.
    #[serde(default)]
    pub cache: CacheModel,
    /// KV transfer link for disaggregated prefill, GB/s. Default 45.
    #[serde(default = "default_link")]
    pub kv_transfer_gb_per_s: f64,
    /// Output length when a request gives no `max_tokens`. Default 128.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u32,
    /// Tokens per streamed chunk after the first (vLLM's `--stream-interval`). Default 1.
    #[serde(default = "default_stream_interval")]
    pub stream_interval: usize,
    /// KV events; off when absent. Example `kv_events: { port: 0, replay_port: 0 }`.
    #[serde(default)]
    pub kv_events: Option<EventsFile>,
    /// Fault injection; none by default.
    #[serde(default)]
    pub faults: Faults,
}

/// How a backend keeps KV cache across requests.
///
/// ```yaml
/// cache: { model: blocks }                                # vLLM: a block pool, LRU
/// cache: { model: slots, slots: 2, ctx_per_slot: 4096 }   # llama-server -np 2 -c 8192
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum CacheModel {
    /// vLLM's block pool: `num_gpu_blocks` blocks of `block_size` tokens shared by hash,
    /// freed blocks evicted least recently used first.
    #[default]
    Blocks,
    /// llama.cpp's slots: each runs one request and keeps that sequence's KV (see
    /// `slots.rs`); the backend serves `/props` and `/slots` and `llamacpp:` metrics.
    Slots {
        /// Slots (`-np`). Example `slots: 2`.
        slots: usize,
        /// Context of each slot, in tokens (`-c` / `-np`). Example `ctx_per_slot: 4096`.
        ctx_per_slot: usize,
        /// Least shared fraction of a prompt for a slot to be chosen by content
        /// (`--slot-prompt-similarity`), in [0, 1]. Default 0.1.
        #[serde(default = "default_similarity")]
        slot_prompt_similarity: f64,
    },
}

fn default_similarity() -> f64 {
    DEFAULT_SIMILARITY
}

/// KV-event sockets of one backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsFile {
    /// PUB port; 0 lets the OS choose. Default 0.
    #[serde(default)]
    pub port: u16,
    /// ROUTER replay port; 0 lets the OS choose. Default 0; `null` disables replay.
    #[serde(default = "default_replay_port")]
    pub replay_port: Option<u16>,
    /// Topic; default `kv@<host>:<http port>@<model>` (llm-d's form).
    #[serde(default)]
    pub topic: Option<String>,
    /// Batches kept for replay. Default 10000.
    #[serde(default = "default_buffer_steps")]
    pub buffer_steps: usize,
}

/// Fault injection for one backend.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Probability in [0, 1] that a request fails at once with a 500. Default 0.
    #[serde(default)]
    pub error_rate: f64,
    /// Extra delay before a request reaches the engine, simulated ms. Default 0.
    #[serde(default)]
    pub added_latency_ms: f64,
    /// Probability in [0, 1] that a request never gets an answer. Default 0.
    #[serde(default)]
    pub hang_rate: f64,
    /// The backend crashes (stops listening, drops every stream) on request N+1.
    #[serde(default)]
    pub crash_after: Option<u64>,
}

impl FleetFile {
    /// A fleet of `backends` with every other field at its default.
    pub fn new(backends: Vec<BackendFile>) -> Self {
        Self {
            model: default_model(),
            speed: default_speed(),
            seed: 0,
            tokenizer: None,
            profiles: Vec::new(),
            host_cores: None,
            backends,
        }
    }
}

impl BackendFile {
    /// One backend of `profile` with every other field at its default.
    pub fn new(profile: impl Into<String>) -> Self {
        Self {
            name: None,
            profile: profile.into(),
            replicas: default_replicas(),
            host: default_host(),
            port: 0,
            max_num_seqs: default_max_num_seqs(),
            max_num_batched_tokens: default_max_num_batched_tokens(),
            block_size: default_block_size(),
            num_gpu_blocks: None,
            cache: CacheModel::Blocks,
            kv_transfer_gb_per_s: default_link(),
            default_max_tokens: default_max_tokens(),
            stream_interval: default_stream_interval(),
            kv_events: None,
            faults: Faults::default(),
        }
    }
}

fn default_model() -> String {
    "meta-llama/Llama-3.1-8B-Instruct".to_owned()
}
fn default_speed() -> f64 {
    1.0
}
fn default_replicas() -> usize {
    1
}
fn default_host() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
fn default_max_num_seqs() -> usize {
    256
}
fn default_max_num_batched_tokens() -> usize {
    8192
}
fn default_block_size() -> usize {
    16
}
fn default_link() -> f64 {
    45.0
}
fn default_max_tokens() -> u32 {
    128
}
fn default_stream_interval() -> usize {
    1
}
fn default_replay_port() -> Option<u16> {
    Some(0)
}
fn default_buffer_steps() -> usize {
    10_000
}

/// Everything one simulated backend needs to start. Build with [`BackendSpec::new`] and
/// adjust fields, or get them from a [`FleetSpec`].
#[derive(Debug, Clone)]
pub struct BackendSpec {
    /// Backend name.
    pub name: String,
    /// Accelerator profile.
    pub profile: Profile,
    /// Address to bind (port 0: the OS chooses).
    pub addr: SocketAddr,
    /// Model name served.
    pub model: String,
    /// Scheduler limits.
    pub limits: Limits,
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV blocks; `None` derives them from the profile's memory.
    pub num_gpu_blocks: Option<usize>,
    /// The KV cache model; block geometry applies to [`CacheModel::Blocks`] only.
    pub cache: CacheModel,
    /// Output length when a request gives none.
    pub default_max_tokens: u32,
    /// Tokens per streamed chunk after the first.
    pub stream_interval: usize,
    /// Time scale (10 = ten times faster than real time).
    pub speed: f64,
    /// Seed of generated tokens, fault draws and block hashes.
    pub seed: u64,
    /// KV events; `None` publishes nothing. A `None` topic defaults to llm-d's form.
    pub kv_events: Option<EventsFile>,
    /// Fault injection.
    pub faults: Faults,
    /// Tokenizer, shared across a fleet.
    pub tokenizer: Arc<Tokenizer>,
    /// Cores shared with the fleet's other engines; `None`: an accelerator of its own.
    pub host: Option<SharedCores>,
}

impl BackendSpec {
    /// A backend with vLLM's defaults on `127.0.0.1:0`, at speed 1, no events, no faults.
    pub fn new(name: impl Into<String>, profile: Profile) -> Self {
        Self {
            name: name.into(),
            profile,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            model: default_model(),
            limits: Limits::default(),
            block_size: default_block_size(),
            num_gpu_blocks: None,
            cache: CacheModel::Blocks,
            default_max_tokens: default_max_tokens(),
            stream_interval: default_stream_interval(),
            speed: 1.0,
            seed: 0,
            kv_events: None,
            faults: Faults::default(),
            tokenizer: Arc::new(Tokenizer::builtin()),
            host: None,
        }
    }

    /// The KV blocks this backend has.
    pub fn num_blocks(&self) -> usize {
        self.num_gpu_blocks
            .unwrap_or_else(|| self.profile.num_gpu_blocks(self.block_size))
    }

    /// Tokens of KV the backend can hold: blocks times block size, or slots times context.
    pub fn capacity_tokens(&self) -> usize {
        match self.cache {
            CacheModel::Blocks => self.num_blocks() * self.block_size,
            CacheModel::Slots {
                slots,
                ctx_per_slot,
                ..
            } => slots * ctx_per_slot,
        }
    }

    /// The event sockets to open once the HTTP port is known.
    pub(crate) fn events_spec(&self, http: SocketAddr) -> Option<EventsSpec> {
        self.kv_events.as_ref().map(|e| EventsSpec {
            host: http.ip().to_string(),
            port: e.port,
            replay_port: e.replay_port,
            topic: e
                .topic
                .clone()
                .unwrap_or_else(|| format!("kv@{http}@{}", self.model)),
            buffer_steps: e.buffer_steps,
        })
    }
}

/// A validated fleet: the specs of every backend.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// The backends, in file order.
    pub backends: Vec<BackendSpec>,
}

impl FleetSpec {
    /// Parses and validates a fleet file.
    ///
    /// # Errors
    ///
    /// [`Error::Fleet`] listing every problem, each with its path; [`Error::Tokenizer`] if
    /// the tokenizer cannot be loaded.
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        let file: FleetFile =
            serde_yaml_ng::from_str(text).map_err(|e| Error::Fleet(vec![e.to_string()]))?;
        Self::from_file(file)
    }

    /// Validates a parsed fleet file.
    ///
    /// # Errors
    ///
    /// As [`FleetSpec::from_yaml`].
    pub fn from_file(file: FleetFile) -> Result<Self, Error> {
        let mut problems = Vec::new();
        if !(file.speed > 0.0 && file.speed.is_finite()) {
            problems.push(format!("speed: {} is not a positive number", file.speed));
        }
        let mut customs = Vec::new();
        for (i, p) in file.profiles.iter().enumerate() {
            match Profile::custom(p) {
                Some(profile) if p.prefill_speed > 0.0 && p.decode_speed > 0.0 => {
                    customs.push(profile)
                }
                Some(_) => problems.push(format!("profiles[{i}]: speeds must be positive")),
                None => problems.push(format!("profiles[{i}].base: unknown profile {:?}", p.base)),
            }
        }
        let tokenizer = match &file.tokenizer {
            Some(path) => Arc::new(Tokenizer::from_file(path)?),
            None => Arc::new(Tokenizer::builtin()),
        };
        if file.host_cores == Some(0) {
            problems.push("host_cores: must be positive".to_owned());
        }
        let host = file.host_cores.map(SharedCores::new);
        let mut backends = Vec::new();
        for (i, b) in file.backends.iter().enumerate() {
            let profile = customs
                .iter()
                .find(|p| p.name == b.profile)
                .cloned()
                .or_else(|| Profile::builtin(&b.profile));
            let Some(profile) = profile else {
                problems.push(format!(
                    "backends[{i}].profile: unknown profile {:?}",
                    b.profile
                ));
                continue;
            };
            for (field, rate) in [
                ("error_rate", b.faults.error_rate),
                ("hang_rate", b.faults.hang_rate),
            ] {
                if !(0.0..=1.0).contains(&rate) {
                    problems.push(format!(
                        "backends[{i}].faults.{field}: {rate} is outside [0, 1]"
                    ));
                }
            }
            if b.block_size == 0 || b.max_num_seqs == 0 || b.max_num_batched_tokens == 0 {
                problems.push(format!(
                    "backends[{i}]: block_size, max_num_seqs and max_num_batched_tokens must be positive"
                ));
            }
            if let CacheModel::Slots {
                slots,
                ctx_per_slot,
                slot_prompt_similarity,
            } = b.cache
            {
                if slots == 0 || ctx_per_slot == 0 {
                    problems.push(format!(
                        "backends[{i}].cache: slots and ctx_per_slot must be positive"
                    ));
                }
                if !(0.0..=1.0).contains(&slot_prompt_similarity) {
                    problems.push(format!(
                        "backends[{i}].cache.slot_prompt_similarity: {slot_prompt_similarity} is outside [0, 1]"
                    ));
                }
                if b.kv_events.is_some() {
                    problems.push(format!(
                        "backends[{i}].kv_events: a slot cache publishes no KV events"
                    ));
                }
            }
            let base_name = b
                .name
                .clone()
                .unwrap_or_else(|| format!("{}-{i}", b.profile));
            for r in 0..b.replicas {
                let name = if b.replicas == 1 {
                    base_name.clone()
                } else {
                    format!("{base_name}-{r}")
                };
                let port = if b.port == 0 {
                    0
                } else {
                    b.port.saturating_add(r as u16)
                };
                let mut kv_events = b.kv_events.clone();
                if let Some(e) = kv_events.as_mut().filter(|_| r > 0) {
                    // Replicas shift fixed event ports like their HTTP port.
                    e.port = if e.port == 0 {
                        0
                    } else {
                        e.port.saturating_add(2 * r as u16)
                    };
                    e.replay_port = e.replay_port.map(|p| {
                        if p == 0 {
                            0
                        } else {
                            p.saturating_add(2 * r as u16)
                        }
                    });
                }
                backends.push(BackendSpec {
                    name,
                    profile: profile.clone(),
                    addr: SocketAddr::new(b.host, port),
                    model: file.model.clone(),
                    limits: Limits {
                        max_num_seqs: b.max_num_seqs,
                        max_num_batched_tokens: b.max_num_batched_tokens,
                        kv_transfer_gb_per_s: b.kv_transfer_gb_per_s,
                    },
                    block_size: b.block_size,
                    num_gpu_blocks: b.num_gpu_blocks,
                    cache: b.cache,
                    default_max_tokens: b.default_max_tokens,
                    stream_interval: b.stream_interval.max(1),
                    speed: file.speed,
                    seed: file.seed,
                    kv_events,
                    faults: b.faults.clone(),
                    tokenizer: tokenizer.clone(),
                    host: host.clone(),
                });
            }
        }
        let mut names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
        names.sort_unstable();
        for w in names.windows(2).filter(|w| w[0] == w[1]) {
            problems.push(format!("backends: name {:?} is used twice", w[0]));
        }
        if backends.is_empty() && problems.is_empty() {
            problems.push("backends: the fleet is empty".to_owned());
        }
        if problems.is_empty() {
            Ok(Self { backends })
        } else {
            Err(Error::Fleet(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_cores_are_shared_by_every_backend_and_must_be_positive() {
        let spec =
            FleetSpec::from_yaml("host_cores: 2\nbackends:\n  - { profile: h100, replicas: 3 }\n")
                .expect("valid");
        assert!(
            spec.backends
                .iter()
                .all(|b| b.host.as_ref().map(SharedCores::cores) == Some(2))
        );
        let none = FleetSpec::from_yaml("backends:\n  - { profile: h100 }\n").expect("valid");
        assert!(none.backends[0].host.is_none());
        let Err(Error::Fleet(problems)) =
            FleetSpec::from_yaml("host_cores: 0\nbackends:\n  - { profile: h100 }\n")
        else {
            panic!("0 cores accepted");
        };
        assert_eq!(problems, ["host_cores: must be positive"]);
    }

    #[test]
    fn replicas_get_names_and_consecutive_ports() {
        let spec = FleetSpec::from_yaml(
            "backends:\n  - { name: a, profile: h100, port: 9001, replicas: 2 }\n  - { profile: gaudi3 }\n",
        )
        .expect("valid");
        let names: Vec<_> = spec
            .backends
            .iter()
            .map(|b| (b.name.as_str(), b.addr.port()))
            .collect();
        assert_eq!(names, vec![("a-0", 9001), ("a-1", 9002), ("gaudi3-1", 0)]);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let err = FleetSpec::from_yaml(
            "speed: 0\nbackends:\n  - { profile: tpu }\n  - { profile: h100, faults: { error_rate: 2 } }\n",
        )
        .expect_err("invalid");
        let Error::Fleet(problems) = err else {
            panic!("{err}")
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[1].starts_with("backends[0].profile"));
        assert!(problems[2].starts_with("backends[1].faults.error_rate"));
    }

    #[test]
    fn custom_profiles_are_usable_by_name() {
        let spec = FleetSpec::from_yaml(
            "profiles:\n  - { name: b200, base: h100, prefill_speed: 2, memory_gb: 192 }\nbackends:\n  - { profile: b200 }\n",
        )
        .expect("valid");
        assert_eq!(spec.backends[0].profile.memory_gb, 192.0);
    }

    #[test]
    fn a_backend_chooses_its_cache_model() {
        let spec = FleetSpec::from_yaml(
            "backends:\n  - { profile: h100, cache: { model: slots, slots: 2, ctx_per_slot: 4096 } }\n  - { profile: h100, num_gpu_blocks: 10, cache: { model: blocks } }\n",
        )
        .expect("valid");
        assert_eq!(
            spec.backends[0].cache,
            CacheModel::Slots {
                slots: 2,
                ctx_per_slot: 4096,
                slot_prompt_similarity: 0.1
            }
        );
        assert_eq!(spec.backends[0].capacity_tokens(), 8192);
        assert_eq!(spec.backends[1].cache, CacheModel::Blocks);
        assert_eq!(spec.backends[1].capacity_tokens(), 160);
        let err = FleetSpec::from_yaml(
            "backends:\n  - { profile: h100, cache: { model: slots, slots: 0, ctx_per_slot: 1, slot_prompt_similarity: 2 } }\n",
        )
        .expect_err("invalid");
        assert_eq!(
            err.to_string().matches("backends[0].cache").count(),
            2,
            "{err}"
        );
        assert!(
            FleetSpec::from_yaml("backends:\n  - { profile: h100, cache: { model: pages } }\n")
                .is_err()
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(FleetSpec::from_yaml("backends:\n  - { profile: h100, colour: red }\n").is_err());
    }
}
