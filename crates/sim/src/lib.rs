//! A simulated vLLM-like backend, calibrated on an H100, and the load generator
//! ([`load`]): testing and demonstrating the router without GPUs.
//!
//! Principal items:
//!
//! - [`Fleet::start`]: many backends in one process, from a [`FleetSpec`] (a YAML fleet
//!   file) — each with its own HTTP port, engine loop and optional KV-event sockets.
//! - [`Backend::start`]: one backend from a [`BackendSpec`].
//! - [`Profile`]: an accelerator (`h100`, `h200`, `a100`, `l40s`, `mi300x`, `gaudi3`, or
//!   custom) with its [`LatencyModel`] and memory.
//!
//! Inside a backend: `server` speaks the OpenAI API, `engine` runs one tokio task that
//! steps the continuous-batching [`Scheduler`] on a simulated clock, [`BlockCache`] is the
//! 16-token-block prefix cache (or [`SlotCache`], llama.cpp's slots, per [`CacheModel`]),
//! `events` publishes KV events over ZeroMQ in vLLM's wire
//! format and `metrics` exposes vLLM's metric names. See `docs/simulator.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard_sim::Error> {
//! use switchyard_sim::{Fleet, FleetSpec};
//! let spec = FleetSpec::from_yaml("backends:\n  - { profile: h100, replicas: 2 }\n")?;
//! let fleet = Fleet::start(spec).await?;
//! for b in fleet.backends() {
//!     println!("{} at {}", b.info().name, b.info().base_url);
//! }
//! # Ok(()) }
//! ```

mod cache;
mod engine;
mod events;
mod latency;
pub mod load;
mod metrics;
mod profile;
mod scheduler;
mod server;
mod slots;
mod spec;
mod tokenizer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::AbortHandle;

pub use cache::{BlockCache, CacheEvent};
pub use engine::{CacheSnapshot, SharedCores};
pub use events::{EventsSpec, encode_batch};
pub use latency::{KV_BYTES_PER_TOKEN, LatencyModel, StepWork, transfer_ms};
pub use metrics::{LAG_METRIC, LagSummary};
pub use profile::{BUILTIN as BUILTIN_PROFILES, CustomProfile, Profile};
pub use scheduler::{KvCache, Limits, Scheduler, Stats, Submission, Usage};
pub use slots::{DEFAULT_SIMILARITY, SlotCache, SlotId};
pub use spec::{BackendFile, BackendSpec, CacheModel, EventsFile, Faults, FleetFile, FleetSpec};
pub use tokenizer::{BUILTIN_VOCAB, ChatMessage, Tokenizer, builtin_token_id, render_chat};

/// Errors starting simulated backends.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The fleet file is invalid; one entry per problem, each naming its path.
    #[error("invalid fleet: {}", .0.join("; "))]
    Fleet(Vec<String>),
    /// The tokenizer could not be loaded.
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::Error),
    /// The HTTP port could not be bound.
    #[error("backend {backend}: cannot listen on {addr}")]
    Listen {
        /// Backend name.
        backend: String,
        /// Address asked for.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The engines' runtime thread could not be started.
    #[error("cannot start the engine runtime")]
    Runtime(#[source] std::io::Error),
    /// The KV-event sockets could not be opened.
    #[error("backend {backend}: kv events")]
    Events {
        /// Backend name.
        backend: String,
        /// Cause.
        #[source]
        source: events::Error,
    },
}

/// Where a running backend can be reached, and what it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendInfo {
    /// Backend name.
    pub name: String,
    /// Accelerator profile name.
    pub profile: String,
    /// Vendor of the profile.
    pub vendor: String,
    /// Model served.
    pub model: String,
    /// Bound HTTP address.
    pub addr: SocketAddr,
    /// `http://<addr>`: the OpenAI API is under `/v1`.
    pub base_url: String,
    /// KV blocks (0 with a slot cache).
    pub num_gpu_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// The KV cache model.
    pub cache: CacheModel,
    /// Tokens of KV the backend holds: blocks times block size, or slots times context.
    pub capacity_tokens: usize,
    /// Bound KV-event PUB endpoint, if events are on.
    pub kv_events_endpoint: Option<String>,
    /// Bound replay ROUTER endpoint, if replay is on.
    pub kv_replay_endpoint: Option<String>,
    /// Topic of the KV events, if events are on.
    pub kv_topic: Option<String>,
}

/// A running simulated backend; dropping it stops it.
///
/// Owns its HTTP server task, its engine task (which owns the scheduler, cache and event
/// publisher) and a watcher that stops both when fault injection crashes the backend.
#[derive(Debug)]
pub struct Backend {
    info: BackendInfo,
    engine: engine::EngineHandle,
    metrics: Arc<metrics::Metrics>,
    crash: watch::Sender<bool>,
    /// Server, engine and crash-watcher tasks.
    tasks: Vec<AbortHandle>,
}

impl Backend {
    /// Binds and starts a backend on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Listen`] or [`Error::Events`] when a socket cannot be bound.
    pub async fn start(spec: BackendSpec) -> Result<Self, Error> {
        let listen_err = |source| Error::Listen {
            backend: spec.name.clone(),
            addr: spec.addr,
            source,
        };
        let listener = tokio::net::TcpListener::bind(spec.addr)
            .await
            .map_err(listen_err)?;
        let addr = listener.local_addr().map_err(listen_err)?;
        let num_blocks = match spec.cache {
            CacheModel::Blocks => spec.num_blocks(),
            CacheModel::Slots { .. } => 0,
        };
        let capacity_tokens = spec.capacity_tokens();
        let events_spec = spec.events_spec(addr);
        let publisher = events_spec
            .as_ref()
            .map(events::Publisher::start)
            .transpose()
            .map_err(|source| Error::Events {
                backend: spec.name.clone(),
                source,
            })?;
        let info = BackendInfo {
            name: spec.name.clone(),
            profile: spec.profile.name.clone(),
            vendor: spec.profile.vendor.clone(),
            model: spec.model.clone(),
            addr,
            base_url: format!("http://{addr}"),
            num_gpu_blocks: num_blocks,
            block_size: spec.block_size,
            cache: spec.cache,
            capacity_tokens,
            kv_events_endpoint: publisher.as_ref().map(|p| p.endpoint().to_owned()),
            kv_replay_endpoint: publisher
                .as_ref()
                .and_then(|p| p.replay_endpoint().map(str::to_owned)),
            kv_topic: events_spec.map(|e| e.topic),
        };
        let metrics = metrics::Metrics::new(&spec.model, num_blocks, spec.block_size);
        let (metrics, kv) = match spec.cache {
            CacheModel::Blocks => (
                metrics,
                KvCache::from(BlockCache::new(num_blocks, spec.block_size, spec.seed)),
            ),
            CacheModel::Slots {
                slots,
                ctx_per_slot,
                slot_prompt_similarity,
            } => (
                metrics.with_llamacpp_names(),
                KvCache::from(SlotCache::new(slots, ctx_per_slot, slot_prompt_similarity)),
            ),
        };
        let metrics = Arc::new(metrics);
        let scheduler = Scheduler::new(spec.limits, spec.profile.latency, kv, publisher.is_some());
        let (engine, engine_task) = engine::spawn(
            scheduler,
            spec.speed,
            metrics.clone(),
            publisher,
            spec.stream_interval,
            spec.host.clone(),
        )
        .map_err(Error::Runtime)?;
        let (crash, mut crashed) = watch::channel(false);
        let shared = Arc::new(server::Shared {
            name: spec.name.clone(),
            model: spec.model.clone(),
            engine: engine.clone(),
            tokenizer: spec.tokenizer.clone(),
            metrics: metrics.clone(),
            faults: spec.faults.clone(),
            speed: spec.speed,
            seed: spec.seed,
            default_max_tokens: spec.default_max_tokens,
            max_tokens_total: match spec.cache {
                CacheModel::Blocks => capacity_tokens,
                CacheModel::Slots { ctx_per_slot, .. } => ctx_per_slot,
            },
            next_id: AtomicU64::new(0),
            fault_rng: std::sync::Mutex::new(ChaCha8Rng::seed_from_u64(spec.seed)),
            crash: crash.clone(),
            http_addr: addr,
            cache: spec.cache,
        });
        let app = server::router(shared);
        let server_task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "sim backend server stopped");
            }
        });
        let tasks = vec![server_task.abort_handle(), engine_task.abort_handle()];
        let name = spec.name.clone();
        let watcher = tokio::spawn(async move {
            if crashed.wait_for(|c| *c).await.is_ok() {
                tracing::warn!(backend = %name, "sim backend crashed");
                server_task.abort();
                engine_task.abort();
            }
        });
        let mut tasks = tasks;
        tasks.push(watcher.abort_handle());
        tracing::debug!(backend = %info.name, url = %info.base_url, "sim backend listening");
        Ok(Self {
            info,
            engine,
            metrics,
            crash,
            tasks,
        })
    }

    /// Where and what this backend is.
    pub fn info(&self) -> &BackendInfo {
        &self.info
    }

    /// The KV cache's contents as of the last completed step, or `None` once crashed.
    pub async fn cache_snapshot(&self) -> Option<CacheSnapshot> {
        self.engine.snapshot().await
    }

    /// How far behind its simulated schedule the engine has run.
    pub fn lag(&self) -> LagSummary {
        self.metrics.lag_summary()
    }

    /// Crashes the backend now: it stops listening and every open stream breaks.
    pub fn crash(&self) {
        let _ = self.crash.send(true);
    }

    /// Waits until the backend has crashed (fault injection or [`Backend::crash`]).
    pub async fn crashed(&self) {
        let mut rx = self.crash.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Simulated backends running in this process; dropping the fleet stops them all.
#[derive(Debug)]
pub struct Fleet {
    backends: Vec<Backend>,
}

impl Fleet {
    /// Starts every backend of `spec` on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// The first backend that fails to start; those already started are stopped.
    pub async fn start(spec: FleetSpec) -> Result<Self, Error> {
        let mut backends = Vec::with_capacity(spec.backends.len());
        for b in spec.backends {
            backends.push(Backend::start(b).await?);
        }
        Ok(Self { backends })
    }

    /// The backends, in spec order.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Scheduling lag over every backend.
    pub fn lag(&self) -> LagSummary {
        LagSummary::merge(self.backends.iter().map(Backend::lag))
    }

    /// Base URLs (`http://127.0.0.1:PORT`) of every backend, in spec order.
    pub fn base_urls(&self) -> Vec<String> {
        self.backends
            .iter()
            .map(|b| b.info.base_url.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests;
