//! [`KvIndex`]: the handle the router holds; models, backends, ingest threads, lookups.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use serde::Serialize;

use super::approx::{Capacity, PromptSlots};
use super::config::{BackendConfig, KvConfig};
use super::exact::ExactHasher;
use super::head::{HeadTrackers, PrefixGroup};
use super::index::{Index, IndexError};
use super::ingest::{
    Follower, IndexSink, IngestError, Limits, Route, Routes, Source, Subscriber, Workers,
    ZmqReplay, receive, run_applier,
};
use super::stats::{BackendStats, Counters, Mode, Reject};
use super::tokens::{Prompt, TokenizeError, Tokenizer};
use super::{approx, key};

/// Errors of the KV index handle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No model of that name is configured.
    #[error("unknown model {model}")]
    UnknownModel {
        /// The model asked for.
        model: String,
    },
    /// Two models share a name, or a model has block size 0.
    #[error("model {model}: {reason}")]
    BadModel {
        /// The model.
        model: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// No backend of that name is indexed.
    #[error("unknown backend {backend}")]
    UnknownBackend {
        /// The backend asked for.
        backend: String,
    },
    /// A backend of that name is already indexed.
    #[error("backend {backend} is already indexed")]
    DuplicateBackend {
        /// The backend.
        backend: String,
    },
    /// The model's index has no free backend slot.
    #[error("backend {backend}")]
    Full {
        /// The backend that did not fit.
        backend: String,
        /// The index's refusal.
        #[source]
        source: IndexError,
    },
    /// The model's tokenizer or chat template failed.
    #[error("model {model}")]
    Tokenize {
        /// The model.
        model: String,
        /// Why.
        #[source]
        source: TokenizeError,
    },
    /// A ZeroMQ socket for the backend (or the bind endpoint) could not be set up.
    #[error("kv events for {backend}")]
    Ingest {
        /// The backend, or `bind` for the shared endpoint.
        backend: String,
        /// Why.
        #[source]
        source: IngestError,
    },
    /// An ingest thread could not be started.
    #[error("cannot start ingest thread for {backend}")]
    Spawn {
        /// The backend.
        backend: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A backend's place in the index: its model and slot. Cheap to copy; valid until the
/// backend is removed (a slot is then reused by the next backend added to that model).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct BackendId {
    model: u16,
    slot: u8,
}

/// Whose cache a prompt can hit: the LoRA adapter and the cache salt it names.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scope<'a> {
    /// The LoRA adapter, which replaces the model name as the key root.
    pub lora: Option<&'a str>,
    /// The request's `cache_salt`.
    pub cache_salt: Option<&'a str>,
}

/// A prompt's block keys, computed once per request by [`KvIndex::prepare`].
#[derive(Clone, Debug)]
pub struct PromptKeys {
    model: u16,
    /// The root the keys chain from (model or adapter, and cache salt).
    root: u64,
    /// The keys of the prompt's full blocks, in order.
    pub keys: Vec<u64>,
    /// Prompt length in tokens (estimated at 4 bytes a token when keyed on text).
    pub prompt_tokens: u32,
    /// Tokens per block.
    pub block_tokens: u32,
    /// True when the model has no tokenizer and the keys come from text.
    pub text_keyed: bool,
}

/// A slot of a slot-per-prompt engine held by a request in flight, from
/// [`KvIndex::occupy`]; dropping it frees the slot.
pub struct SlotLease {
    index: KvIndex,
    backend: BackendId,
    lease: u64,
}

impl std::fmt::Debug for SlotLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotLease")
            .field("backend", &self.backend)
            .field("lease", &self.lease)
            .finish()
    }
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        let backends = self.index.backends();
        if let Some(b) = backends.iter().find(|b| b.id == self.backend) {
            b.prompts.lock().release(self.lease);
        }
    }
}

/// What the admin lookup shows for one prompt.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize)]
pub struct PrefixReport {
    /// The model.
    pub model: String,
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// Full blocks in the prompt.
    pub blocks: usize,
    /// Cached-prefix tokens per backend of the model, in the order they were added.
    pub backends: Vec<BackendPrefix>,
}

/// One backend's cached prefix for a prompt.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize)]
pub struct BackendPrefix {
    /// The backend.
    pub name: String,
    /// Leading tokens of the prompt it holds.
    pub cached_tokens: u32,
}

struct Model {
    name: String,
    block_size: u32,
    tokenizer: Option<Tokenizer>,
    exact: Option<ExactHasher>,
    index: Arc<parking_lot::RwLock<Index>>,
    /// Slots in approximate mode, for the TTL sweep.
    approx_slots: AtomicU64,
    /// The shared heads of the model's prompts.
    heads: parking_lot::Mutex<HeadTrackers>,
}

struct Backend {
    name: String,
    id: BackendId,
    mode: Mode,
    topic: Option<Vec<u8>>,
    counters: Arc<Counters>,
    /// The prompts it holds, when its cache holds one per slot ([`Capacity::Prompts`]).
    prompts: parking_lot::Mutex<PromptSlots>,
    /// Dropped (stopped and joined) when the backend is removed.
    _workers: Workers,
}

struct Bind {
    endpoint: String,
    routes: Routes,
    unrouted: Arc<AtomicU64>,
    _workers: Workers,
}

/// The KV-cache index of a fleet: which backend holds which prefix of which model.
///
/// Owns one [`Index`] per model (behind a lock: ingest writes per batch, lookups read),
/// the ingest threads of every backend with events, and a sweeper expiring
/// approximate-mode blocks. Clone it freely; the last clone dropped stops every thread.
///
/// Per request: [`prepare`](Self::prepare) once (tokenize and key), then
/// [`lookup`](Self::lookup) for the candidate backends, then [`record`](Self::record)
/// the decision.
#[derive(Clone)]
pub struct KvIndex {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: zmq::Context,
    models: Arc<[Model]>,
    backends: RwLock<Vec<Backend>>,
    bind: Option<Bind>,
    queue_capacity: usize,
    limits: Limits,
    ttl_s: u64,
    clock: Instant,
    /// Set once any backend's cache is known to hold one prompt per slot: lookups then
    /// check which slots are busy.
    slot_engines: AtomicBool,
    /// The last slot lease handed out; unique across backends, so a lease outliving its
    /// backend cannot free a slot of the backend that took its place.
    last_lease: AtomicU64,
    _sweeper: Workers,
}

impl std::fmt::Debug for KvIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let models: Vec<&str> = self.inner.models.iter().map(|m| m.name.as_str()).collect();
        f.debug_struct("KvIndex")
            .field("models", &models)
            .finish_non_exhaustive()
    }
}

fn spawn(
    workers: &mut Workers,
    what: &str,
    backend: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<(), Error> {
    let span = tracing::info_span!(parent: None, "ingest", backend = %backend);
    let handle = std::thread::Builder::new()
        .name(format!("kv-{what}"))
        .spawn(move || span.in_scope(f))
        .map_err(|source| Error::Spawn {
            backend: backend.to_owned(),
            source,
        })?;
    workers.threads.push(handle);
    Ok(())
}

impl KvIndex {
    /// Loads every model's tokenizer, binds the shared endpoint if configured, and adds
    /// the configured backends.
    ///
    /// # Errors
    ///
    /// [`Error`] naming the model or backend that could not be set up.
    pub fn new(config: &KvConfig) -> Result<Self, Error> {
        let mut models = Vec::with_capacity(config.models.len());
        for m in &config.models {
            let bad = |reason| Error::BadModel {
                model: m.name.clone(),
                reason,
            };
            if m.block_size == 0 {
                return Err(bad("block_size must be at least 1"));
            }
            if models.iter().any(|x: &Model| x.name == m.name) {
                return Err(bad("configured twice"));
            }
            let tokenizer = m
                .tokenizer
                .as_deref()
                .map(|t| Tokenizer::from_files(t, m.chat_template.as_deref()))
                .transpose()
                .map_err(|source| Error::Tokenize {
                    model: m.name.clone(),
                    source,
                })?;
            models.push(Model {
                name: m.name.clone(),
                block_size: m.block_size,
                tokenizer,
                exact: m
                    .exact
                    .as_ref()
                    .map(|e| ExactHasher::new(e.algorithm, &e.python_hash_seed)),
                index: Arc::new(parking_lot::RwLock::new(Index::new(
                    m.block_size,
                    config.tier_weights,
                ))),
                approx_slots: AtomicU64::new(0),
                heads: parking_lot::Mutex::default(),
            });
        }
        let models: Arc<[Model]> = models.into();
        let ctx = zmq::Context::new();
        let limits = Limits::of(config);
        let bind = config
            .bind
            .as_ref()
            .map(|ep| Self::bind(&ctx, ep, limits))
            .transpose()?;
        let clock = Instant::now();
        let ttl_s = config.approx_ttl_s;
        let mut sweeper = Workers::default();
        let (stop, sweep_models) = (sweeper.stop.clone(), models.clone());
        spawn(&mut sweeper, "sweep", "approx", move || {
            while !stop.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let cutoff = clock.elapsed().as_secs().saturating_sub(ttl_s);
                for m in sweep_models.iter() {
                    approx::expire(&m.index, m.approx_slots.load(Relaxed), cutoff);
                }
            }
        })?;
        let kv = Self {
            inner: Arc::new(Inner {
                ctx,
                models,
                backends: RwLock::new(Vec::new()),
                bind,
                queue_capacity: config.queue_capacity.max(1),
                limits,
                ttl_s,
                slot_engines: AtomicBool::new(false),
                last_lease: AtomicU64::new(0),
                clock,
                _sweeper: sweeper,
            }),
        };
        for b in &config.backends {
            kv.add_backend(b)?;
        }
        Ok(kv)
    }

    fn bind(ctx: &zmq::Context, endpoint: &str, limits: Limits) -> Result<Bind, Error> {
        let routes = Routes::default();
        let unrouted = Arc::new(AtomicU64::new(0));
        let source = Source::Bind {
            endpoint: endpoint.to_owned(),
            routes: routes.clone(),
            unrouted: unrouted.clone(),
        };
        let sub = Subscriber::open(ctx, source, limits).map_err(|source| Error::Ingest {
            backend: "bind".to_owned(),
            source,
        })?;
        let endpoint = sub.endpoint.clone();
        let mut workers = Workers::default();
        let stop = workers.stop.clone();
        spawn(&mut workers, "bind", "bind", move || receive(sub, &stop))?;
        Ok(Bind {
            endpoint,
            routes,
            unrouted,
            _workers: workers,
        })
    }

    /// The endpoint bound in centralised mode (with the OS-chosen port when 0 was asked).
    pub fn bound_endpoint(&self) -> Option<&str> {
        self.inner.bind.as_ref().map(|b| b.endpoint.as_str())
    }

    /// Messages on the bound endpoint that no backend's topic claimed, or malformed.
    pub fn unrouted(&self) -> u64 {
        self.inner
            .bind
            .as_ref()
            .map_or(0, |b| b.unrouted.load(Relaxed))
    }

    fn model(&self, name: &str) -> Result<(u16, &Model), Error> {
        self.inner
            .models
            .iter()
            .enumerate()
            .find(|(_, m)| m.name == name)
            .map(|(i, m)| (i as u16, m))
            .ok_or_else(|| Error::UnknownModel {
                model: name.to_owned(),
            })
    }

    fn backends(&self) -> std::sync::RwLockReadGuard<'_, Vec<Backend>> {
        self.inner
            .backends
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Starts indexing a backend: follows its events, or records decisions for it.
    ///
    /// # Errors
    ///
    /// [`Error`] for an unknown model, a duplicate name, a full index, or a socket that
    /// cannot be set up.
    pub fn add_backend(&self, config: &BackendConfig) -> Result<BackendId, Error> {
        let inner = &self.inner;
        let (model_id, model) = self.model(&config.model)?;
        let mut backends = inner.backends.write().unwrap_or_else(|p| p.into_inner());
        let name = config.name.clone();
        if backends.iter().any(|b| b.name == name) {
            return Err(Error::DuplicateBackend { backend: name });
        }
        let bound_topic = config
            .topic
            .as_ref()
            .filter(|_| config.events.is_none() && inner.bind.is_some());
        let mode = if config.events.is_some() || bound_topic.is_some() {
            Mode::Events
        } else {
            Mode::Approximate
        };
        let capacity = match mode {
            Mode::Events => config.capacity_blocks,
            Mode::Approximate => Some(
                config
                    .capacity_blocks
                    .unwrap_or(approx::DEFAULT_CAPACITY_BLOCKS),
            ),
        };
        let slot = model
            .index
            .write()
            .add_slot(capacity)
            .map_err(|source| Error::Full {
                backend: name.clone(),
                source,
            })?;
        let id = BackendId {
            model: model_id,
            slot,
        };
        let counters = Arc::new(Counters::default());
        let workers = match mode {
            Mode::Events => self.start_ingest(config, model, slot, &counters),
            Mode::Approximate => {
                model.approx_slots.fetch_or(1 << slot, Relaxed);
                Ok(Workers::default())
            }
        };
        let workers = match workers {
            Ok(w) => w,
            Err(e) => {
                model.index.write().remove_slot(slot);
                return Err(e);
            }
        };
        backends.push(Backend {
            name,
            id,
            mode,
            topic: bound_topic.map(|t| t.clone().into_bytes()),
            counters,
            prompts: parking_lot::Mutex::default(),
            _workers: workers,
        });
        Ok(id)
    }

    fn start_ingest(
        &self,
        config: &BackendConfig,
        model: &Model,
        slot: u8,
        counters: &Arc<Counters>,
    ) -> Result<Workers, Error> {
        let inner = &self.inner;
        let name = config.name.as_str();
        let (tx, rx) = sync_channel(inner.queue_capacity);
        let lost = Arc::new(AtomicU64::new(0));
        let route = Route {
            tx,
            counters: counters.clone(),
            lost: lost.clone(),
        };
        let mut workers = Workers::default();
        match (&config.events, &inner.bind, &config.topic) {
            (Some(endpoint), _, topic) => {
                let source = Source::Connect {
                    endpoint: endpoint.clone(),
                    topic: topic.clone().unwrap_or_default(),
                    route,
                };
                let sub = Subscriber::open(&inner.ctx, source, inner.limits).map_err(|source| {
                    Error::Ingest {
                        backend: name.to_owned(),
                        source,
                    }
                })?;
                let stop = workers.stop.clone();
                spawn(&mut workers, "recv", name, move || receive(sub, &stop))?;
            }
            (None, Some(bind), Some(topic)) => {
                let mut routes = bind.routes.write().unwrap_or_else(|p| p.into_inner());
                routes.insert(topic.clone().into_bytes(), route);
            }
            // NB: add_backend only starts ingest for one of the two shapes above.
            (None, _, _) => {}
        }
        let mut follower = Follower::new(
            config
                .replay
                .clone()
                .map(|ep| ZmqReplay::new(inner.ctx.clone(), ep, inner.limits)),
        );
        let mut sink = IndexSink::new(
            model.index.clone(),
            slot,
            model.name.clone(),
            counters.clone(),
            model.exact.clone(),
            inner.limits,
        );
        let stop = workers.stop.clone();
        spawn(&mut workers, "apply", name, move || {
            run_applier(&rx, &lost, &mut follower, &mut sink, &stop);
        })?;
        Ok(workers)
    }

    /// Stops indexing a backend and forgets its blocks.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownBackend`].
    pub fn remove_backend(&self, name: &str) -> Result<(), Error> {
        let inner = &self.inner;
        let backend = {
            let mut backends = inner.backends.write().unwrap_or_else(|p| p.into_inner());
            let pos = backends
                .iter()
                .position(|b| b.name == name)
                .ok_or_else(|| Error::UnknownBackend {
                    backend: name.to_owned(),
                })?;
            backends.swap_remove(pos)
        };
        if let (Some(bind), Some(topic)) = (&inner.bind, &backend.topic) {
            bind.routes
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(topic);
        }
        let id = backend.id;
        // NB: the ingest threads are joined here, before the slot can be reused.
        drop(backend);
        let model = &inner.models[id.model as usize];
        model.approx_slots.fetch_and(!(1 << id.slot), Relaxed);
        model.index.write().remove_slot(id.slot);
        Ok(())
    }

    /// The id of a backend by name.
    pub fn backend(&self, name: &str) -> Option<BackendId> {
        self.backends()
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.id)
    }

    /// The ids of several backends by name, in order, under one read of the backend list
    /// (the per-request path: one lock, not one per candidate).
    pub fn backend_ids<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Vec<Option<BackendId>> {
        let backends = self.backends();
        names
            .into_iter()
            .map(|n| backends.iter().find(|b| b.name == n).map(|b| b.id))
            .collect()
    }

    /// Tokenizes (or, without a tokenizer, reads as text) and keys a prompt, once per
    /// request.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownModel`], or [`Error::Tokenize`] when the template or tokenizer
    /// fails.
    pub fn prepare(
        &self,
        model: &str,
        prompt: Prompt<'_>,
        scope: Scope<'_>,
    ) -> Result<PromptKeys, Error> {
        let (model_id, m) = self.model(model)?;
        let root = key::root(scope.lora.unwrap_or(&m.name), scope.cache_salt);
        let mut keys = Vec::new();
        let (prompt_tokens, text_keyed) = match &m.tokenizer {
            Some(t) => {
                let ids = t.encode_prompt(prompt).map_err(|source| Error::Tokenize {
                    model: model.to_owned(),
                    source,
                })?;
                keys.reserve(ids.len() / m.block_size as usize);
                key::token_keys(root, &ids, m.block_size, &mut keys);
                (ids.len(), false)
            }
            None => {
                let text = match prompt {
                    Prompt::Text(t) => t.to_owned(),
                    Prompt::Chat(messages) => messages
                        .iter()
                        .map(|(r, c)| format!("{r}\n{c}\n"))
                        .collect(),
                };
                key::text_keys(root, &text, m.block_size, &mut keys);
                (text.len() / key::BYTES_PER_TOKEN as usize, true)
            }
        };
        Ok(PromptKeys {
            model: model_id,
            root,
            keys,
            prompt_tokens: u32::try_from(prompt_tokens).unwrap_or(u32::MAX),
            block_tokens: m.block_size,
            text_keyed,
        })
    }

    /// Counts the prompt toward its model's shared head ([`crate::head`]) and returns
    /// where its own prefix starts; `None` for a prompt without a full block. Call it
    /// once per routed request.
    pub fn prefix_group(&self, prompt: &PromptKeys) -> Option<PrefixGroup> {
        let model = self.inner.models.get(prompt.model as usize)?;
        model
            .heads
            .lock()
            .observe(prompt.root, &prompt.keys, prompt.block_tokens)
    }

    /// Fills `out[i]` with the cached-prefix tokens of `backends[i]` for the prompt, in
    /// one pass over its keys. Backends of another model, or removed, get 0; a
    /// slot-per-prompt engine counts only what its idle slots hold. `busy`, when given,
    /// gets in the same pass the share of each slot-per-prompt engine's slots running a
    /// request the router sent (`None` for other backends): at 1.0 a request sent there
    /// queues until a slot frees.
    pub fn lookup(
        &self,
        prompt: &PromptKeys,
        backends: &[BackendId],
        out: &mut [u32],
        mut busy: Option<&mut [Option<f32>]>,
    ) {
        if let Some(busy) = busy.as_deref_mut() {
            busy.fill(None);
        }
        let Some(model) = self.inner.models.get(prompt.model as usize) else {
            out.fill(0);
            return;
        };
        let slots: Vec<u8> = backends
            .iter()
            .map(|b| {
                if b.model == prompt.model {
                    b.slot
                } else {
                    u8::MAX
                }
            })
            .collect();
        model.index.read().lookup(&prompt.keys, &slots, out);
        if !self.inner.slot_engines.load(Relaxed) {
            return;
        }
        // A slot-per-prompt engine can only hit on a prompt an idle slot holds.
        let all = self.backends();
        for (i, (b, cached)) in backends.iter().zip(out.iter_mut()).enumerate() {
            let Some(backend) = all
                .iter()
                .find(|x| x.id == *b && x.mode == Mode::Approximate)
            else {
                continue;
            };
            let prompts = backend.prompts.lock();
            if let Some(stats) = prompts.stats() {
                let idle =
                    prompts.idle_shared(&prompt.keys) as u64 * u64::from(prompt.block_tokens);
                *cached = (*cached).min(u32::try_from(idle).unwrap_or(u32::MAX));
                if let Some(share) = busy.as_deref_mut().and_then(|b| b.get_mut(i)) {
                    *share = Some(stats.busy as f32 / stats.slots.max(1) as f32);
                }
            }
        }
    }

    /// A request with `prompt` is being sent to `backend`, whose cache holds one prompt
    /// per slot: takes the slot the engine will run it in until the lease is dropped, so
    /// lookups meanwhile see that slot busy. `None` for other engines, backends with
    /// events, and an engine whose slots are all busy (it queues the request).
    pub fn occupy(
        &self,
        prompt: &PromptKeys,
        backend: BackendId,
        capacity: Option<Capacity>,
    ) -> Option<SlotLease> {
        let Some(Capacity::Prompts(slots)) = capacity else {
            return None;
        };
        let backends = self.backends();
        let b = backends
            .iter()
            .find(|b| b.id == backend && b.mode == Mode::Approximate)?;
        self.inner.slot_engines.store(true, Relaxed);
        let lease = self.inner.last_lease.fetch_add(1, Relaxed) + 1;
        if !b.prompts.lock().occupy(&prompt.keys, slots, lease) {
            return None;
        }
        Some(SlotLease {
            index: self.clone(),
            backend,
            lease,
        })
    }

    /// Records that `backend` served the prompt (approximate mode; a backend with events
    /// ignores it, its engine reports the truth). `capacity`, what the engine's cache
    /// holds when known, bounds what the index keeps for it: beyond a token capacity its
    /// least recently used blocks are forgotten (at least one block is kept); with one
    /// prompt per slot, the blocks of the prompt the engine replaced are. Whether it was
    /// recorded (the backend is followed in approximate mode).
    /// `lease`, from [`occupy`](Self::occupy) when the request was sent, names the
    /// slot it ran in.
    pub fn record(
        &self,
        prompt: &PromptKeys,
        backend: BackendId,
        capacity: Option<Capacity>,
        lease: Option<&SlotLease>,
    ) -> bool {
        self.record_leased(&prompt.keys, backend, capacity, lease.map(|l| l.lease))
    }

    /// As [`KvIndex::record`], from the prompt's block keys alone: how a router replica
    /// applies what another replica recorded.
    pub fn record_keys(
        &self,
        keys: &[u64],
        backend: BackendId,
        capacity: Option<Capacity>,
    ) -> bool {
        self.record_leased(keys, backend, capacity, None)
    }

    fn record_leased(
        &self,
        keys: &[u64],
        backend: BackendId,
        capacity: Option<Capacity>,
        lease: Option<u64>,
    ) -> bool {
        let backends = self.backends();
        let Some(b) = backends
            .iter()
            .find(|b| b.id == backend && b.mode == Mode::Approximate)
        else {
            return false;
        };
        Counters::add(&b.counters.decisions, 1);
        let Some(model) = self.inner.models.get(backend.model as usize) else {
            return false;
        };
        let now = self.inner.clock.elapsed().as_secs();
        let forget = match capacity {
            Some(Capacity::Prompts(slots)) => {
                self.inner.slot_engines.store(true, Relaxed);
                b.prompts.lock().serve(keys, slots, lease)
            }
            _ => Vec::new(),
        };
        let mut index = model.index.write();
        if let Some(Capacity::Tokens(tokens)) = capacity {
            let blocks = tokens / u64::from(index.block_size().max(1));
            let blocks = u32::try_from(blocks).unwrap_or(u32::MAX).max(1);
            if index.capacity(backend.slot) != blocks {
                index.set_capacity(backend.slot, blocks);
            }
        }
        for &k in &forget {
            index.forget_approx(backend.slot, k);
        }
        for &k in keys {
            index.store_approx(backend.slot, k, now);
        }
        index.expire(backend.slot, now.saturating_sub(self.inner.ttl_s));
        true
    }

    /// Every backend's figures, for the admin API.
    pub fn stats(&self) -> Vec<BackendStats> {
        self.backends()
            .iter()
            .map(|b| {
                let model = &self.inner.models[b.id.model as usize];
                let index = model.index.read();
                let mut s = b
                    .counters
                    .snapshot(&b.name, &model.name, b.mode, index.len(b.id.slot));
                s.capacity_blocks = index.capacity(b.id.slot);
                s.prompt_slots = b.prompts.lock().stats();
                s
            })
            .collect()
    }

    /// The `switchyard_kv_*` metrics, for the router's Prometheus registry.
    pub fn collector(&self) -> KvCollector {
        KvCollector(self.clone())
    }

    /// Memory held by every model's index, in bytes, and its (block, backend) entries.
    pub fn memory(&self) -> (usize, usize) {
        self.inner
            .models
            .iter()
            .fold((0, 0), |(bytes, entries), m| {
                let index = m.index.read();
                (bytes + index.memory_bytes(), entries + index.entries())
            })
    }

    /// Each backend's cached prefix of a prompt, for the admin lookup endpoint.
    ///
    /// # Errors
    ///
    /// As [`prepare`](Self::prepare).
    pub fn lookup_prompt(
        &self,
        model: &str,
        prompt: Prompt<'_>,
        scope: Scope<'_>,
    ) -> Result<PrefixReport, Error> {
        let keys = self.prepare(model, prompt, scope)?;
        let (ids, names): (Vec<BackendId>, Vec<String>) = self
            .backends()
            .iter()
            .filter(|b| b.id.model == keys.model)
            .map(|b| (b.id, b.name.clone()))
            .unzip();
        let mut out = vec![0; ids.len()];
        self.lookup(&keys, &ids, &mut out, None);
        Ok(PrefixReport {
            model: model.to_owned(),
            prompt_tokens: keys.prompt_tokens,
            blocks: keys.keys.len(),
            backends: names
                .into_iter()
                .zip(out)
                .map(|(name, cached_tokens)| BackendPrefix {
                    name,
                    cached_tokens,
                })
                .collect(),
        })
    }
}

/// Labels of a refused KV-event message or event.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    backend: String,
    reason: String,
}

/// `switchyard_kv_events_rejected_total{backend, reason}`, read from the live counters
/// at each scrape (every reason of every backend following events, zeros included).
#[derive(Debug)]
pub struct KvCollector(KvIndex);

impl Collector for KvCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "switchyard_kv_events_rejected",
            "KV-event messages and events refused, by backend and reason",
            None,
            MetricType::Counter,
        )?;
        for b in self.0.backends().iter().filter(|b| b.mode == Mode::Events) {
            for reason in Reject::ALL {
                let labels = RejectLabels {
                    backend: b.name.clone(),
                    reason: reason.as_str().to_owned(),
                };
                ConstCounter::new(b.counters.rejected(reason))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
