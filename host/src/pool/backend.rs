//! One backend: its spec as configured and its live state (health, drain, breaker,
//! the router's own in-flight counters, the latest scraped engine figures).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::breaker::{Breaker, Pass};
use super::learned::{Learned, Measured};
use super::scrape::{EngineKind, EngineLoad};
use crate::names::BackendName;
use crate::policy::Role;

/// Declared performance figures; 0 means unknown.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Capability {
    /// Prefill speed, tokens per second. Example: `prefill_tokens_per_s: 12000`.
    pub prefill_tokens_per_s: f32,
    /// Decode speed per sequence, tokens per second.
    pub decode_tokens_per_s: f32,
    /// KV cache capacity, tokens; when 0, learned from the engine (vLLM metrics, llama.cpp `/props`).
    pub kv_capacity_tokens: u64,
    /// KV transfer link bandwidth, gigabytes per second.
    pub kv_link_gbytes_per_s: f32,
    /// KV bytes per token of context. Example: `kv_bytes_per_token: 131072`.
    pub kv_bytes_per_token: u32,
}

/// A backend as configured in the file or added through the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Unique name: `[A-Za-z0-9][A-Za-z0-9._-]{0,62}`, no `..`. Example: `name: h100-a`.
    pub name: BackendName,
    /// Server root; requests go to `<url>/v1/...`. Example: `url: http://10.0.0.5:8000`.
    pub url: String,
    /// Models it serves, as clients name them.
    pub models: Vec<String>,
    /// Engine kind. Default `openai`.
    #[serde(default)]
    pub engine: EngineKind,
    /// Accelerator vendor, lowercase. Example: `vendor: amd`.
    #[serde(default)]
    pub vendor: String,
    /// Accelerator model, lowercase. Example: `accelerator: mi300x`.
    #[serde(default)]
    pub accelerator: String,
    /// Region. Example: `region: eu-west`.
    #[serde(default)]
    pub region: String,
    /// Operator labels policies can read.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Role in prefill/decode splits. Default `any`.
    #[serde(default)]
    pub role: Role,
    /// Price per hour, any currency. Default 0.
    #[serde(default)]
    pub cost_per_hour: f64,
    /// Declared performance figures.
    #[serde(default)]
    pub capability: Capability,
    /// The engine's KV-event PUB endpoint, followed by the KV index. Without it the
    /// index tracks the backend approximately, from routing decisions.
    /// Example: `kv_events: tcp://10.0.0.5:5557`.
    #[serde(default)]
    pub kv_events: Option<String>,
    /// The engine's KV-event replay ROUTER endpoint, used to recover lost events.
    /// Example: `kv_replay: tcp://10.0.0.5:5558`.
    #[serde(default)]
    pub kv_replay: Option<String>,
    /// Health check path. Default `/health` (`/v1/models` for `openai`).
    #[serde(default)]
    pub health_path: Option<String>,
}

impl BackendSpec {
    /// The KV index's view of this backend: indexed under its first model; none without
    /// a model.
    pub fn kv_backend(&self) -> Option<switchyard_kv::BackendConfig> {
        let model = self.models.first()?;
        Some(switchyard_kv::BackendConfig {
            events: self.kv_events.clone(),
            replay: self.kv_replay.clone(),
            ..switchyard_kv::BackendConfig::new(&self.name, model)
        })
    }
}

impl BackendSpec {
    /// Problems with the spec, each starting with its field name; empty when valid.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => out.push(format!("url: `{}` is not an http(s) URL", self.url)),
        }
        if self.models.is_empty() || self.models.iter().any(String::is_empty) {
            out.push("models: list at least one non-empty model name".into());
        }
        if self.cost_per_hour.is_nan() || self.cost_per_hour < 0.0 {
            out.push(format!("cost_per_hour: {} is negative", self.cost_per_hour));
        }
        if let Some(p) = &self.health_path
            && !p.starts_with('/')
        {
            out.push(format!("health_path: `{p}` must start with `/`"));
        }
        out
    }

    /// `<url><path>`, `path` starting with `/`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }

    pub(crate) fn health_url(&self) -> String {
        self.endpoint(
            self.health_path
                .as_deref()
                .unwrap_or(self.engine.default_health_path()),
        )
    }
}

/// A backend with its live state. Shared by the fleet snapshot, the prober and
/// in-flight requests.
#[derive(Debug)]
pub struct Backend {
    /// As configured.
    pub spec: BackendSpec,
    healthy: AtomicBool,
    health_failures: AtomicU32,
    draining: AtomicBool,
    removed: AtomicBool,
    in_flight_requests: AtomicU32,
    in_flight_prefill_tokens: AtomicU32,
    /// Cluster mode: the other replicas' in-flight requests (high 32 bits) and prefill
    /// tokens (low 32 bits) to it, as last summed from their reports.
    peer_load: AtomicU64,
    load: Mutex<Option<(EngineLoad, Instant)>>,
    learned: Mutex<Learned>,
    breaker: Breaker,
    streams: AtomicU32,
    streams_moved: AtomicU64,
    /// Raised when a drain's deadline passes: the streams still running move away.
    move_streams: tokio::sync::watch::Sender<bool>,
}

impl Backend {
    pub(crate) fn new(spec: BackendSpec, draining: bool, breaker: Breaker) -> Backend {
        Backend {
            spec,
            // NB: down until the first health check passes, so /ready means something.
            healthy: AtomicBool::new(false),
            health_failures: AtomicU32::new(0),
            draining: AtomicBool::new(draining),
            removed: AtomicBool::new(false),
            in_flight_requests: AtomicU32::new(0),
            in_flight_prefill_tokens: AtomicU32::new(0),
            peer_load: AtomicU64::new(0),
            load: Mutex::new(None),
            learned: Mutex::new(Learned::default()),
            breaker,
            streams: AtomicU32::new(0),
            streams_moved: AtomicU64::new(0),
            move_streams: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Whether the last health checks passed and no request saw it die since.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// Whether it takes no new requests.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub(crate) fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::SeqCst);
        if !draining {
            self.move_streams.send_replace(false);
        }
    }

    /// Asks the streams still running on this draining backend to move to another one.
    pub(crate) fn move_streams(&self) {
        if self.is_draining() {
            self.move_streams.send_replace(true);
        }
    }

    /// Streams the router is passing through from it now.
    pub fn streams(&self) -> u32 {
        self.streams.load(Ordering::SeqCst)
    }

    /// Streams moved away from it (drain deadline) since it was added.
    pub fn streams_moved(&self) -> u64 {
        self.streams_moved.load(Ordering::SeqCst)
    }

    /// Counts a stream passed through from it until the slot drops; the slot tells
    /// when a drain deadline asks the stream to move.
    pub fn stream_slot(self: &Arc<Self>) -> StreamSlot {
        self.streams.fetch_add(1, Ordering::SeqCst);
        StreamSlot {
            backend: self.clone(),
            moves: self.move_streams.subscribe(),
        }
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    pub(crate) fn mark_removed(&self) {
        self.removed.store(true, Ordering::SeqCst);
    }

    /// Whether new requests may be sent: healthy, not draining, circuit passable.
    pub fn is_available(&self) -> bool {
        self.is_healthy() && !self.is_draining() && self.breaker.is_passable()
    }

    /// The router's own in-flight requests to it.
    pub fn in_flight_requests(&self) -> u32 {
        self.in_flight_requests.load(Ordering::SeqCst)
    }

    /// Prompt tokens of in-flight requests still before their first byte.
    pub fn in_flight_prefill_tokens(&self) -> u32 {
        self.in_flight_prefill_tokens.load(Ordering::SeqCst)
    }

    /// Cluster mode: the other replicas' in-flight requests and prefill tokens to it.
    pub fn peer_load(&self) -> (u32, u32) {
        let packed = self.peer_load.load(Ordering::Relaxed);
        ((packed >> 32) as u32, packed as u32)
    }

    /// Cluster mode: sets the other replicas' in-flight requests and prefill tokens to
    /// it, which candidates add to this router's own.
    pub fn set_peer_load(&self, requests: u32, prefill_tokens: u32) {
        let packed = (u64::from(requests) << 32) | u64::from(prefill_tokens);
        self.peer_load.store(packed, Ordering::Relaxed);
    }

    /// The circuit breaker's state name: `closed`, `open` or `half_open`.
    pub fn breaker_state(&self) -> &'static str {
        self.breaker.state_name()
    }

    /// The engine's KV cache capacity in tokens: the declared
    /// `capability.kv_capacity_tokens` when set, else what the engine reports (vLLM's
    /// `cache_config_info`, llama.cpp's `/props`); `None` when neither is known.
    pub fn kv_capacity_tokens(&self) -> Option<u64> {
        let declared = self.spec.capability.kv_capacity_tokens;
        if declared > 0 {
            return Some(declared);
        }
        self.load().and_then(|(load, _)| load.kv_capacity_tokens)
    }

    /// What the engine's prefix cache holds, for the KV index's approximate mode: the
    /// declared `capability.kv_capacity_tokens` when set, else one prompt per slot for a
    /// llama.cpp that reported its slots, else the capacity the engine reports.
    pub fn kv_capacity(&self) -> Option<switchyard_kv::Capacity> {
        use switchyard_kv::Capacity;
        let declared = self.spec.capability.kv_capacity_tokens;
        if declared > 0 {
            return Some(Capacity::Tokens(declared));
        }
        let (load, _) = self.load()?;
        load.kv_prompt_slots
            .map(Capacity::Prompts)
            .or(load.kv_capacity_tokens.map(Capacity::Tokens))
    }

    /// The latest scraped figures and their age, if any.
    pub fn load(&self) -> Option<(EngineLoad, Duration)> {
        let guard = self.load.lock().unwrap_or_else(|e| e.into_inner());
        guard.map(|(l, at)| (l, at.elapsed()))
    }

    pub(crate) fn set_load(&self, load: EngineLoad) {
        *self.load.lock().unwrap_or_else(|e| e.into_inner()) = Some((load, Instant::now()));
    }

    /// Speeds measured from the requests the router sent it.
    pub fn measured(&self) -> Measured {
        self.learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .measured()
    }

    /// Prefill speed for policies: measured when enough samples exist, else declared.
    pub fn prefill_tokens_per_s(&self) -> f32 {
        self.measured()
            .prefill_tokens_per_s
            .unwrap_or(self.spec.capability.prefill_tokens_per_s)
    }

    /// Decode speed for policies: measured when enough samples exist, else declared.
    pub fn decode_tokens_per_s(&self) -> f32 {
        self.measured()
            .decode_tokens_per_s
            .unwrap_or(self.spec.capability.decode_tokens_per_s)
    }

    /// Records that `tokens` uncached prompt tokens took `elapsed` to their first token.
    pub fn observe_prefill(&self, tokens: u32, elapsed: Duration) {
        self.learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe_prefill(tokens, elapsed);
    }

    /// Records that a stream delivered `tokens` tokens after its first in `elapsed`.
    pub fn observe_decode(&self, tokens: u32, elapsed: Duration) {
        self.learned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe_decode(tokens, elapsed);
    }

    /// Records a health check result; `threshold` consecutive failures mark it down.
    pub(crate) fn record_health(&self, ok: bool, threshold: u32) {
        if ok {
            self.health_failures.store(0, Ordering::SeqCst);
            if !self.healthy.swap(true, Ordering::SeqCst) {
                tracing::info!(backend = %self.spec.name, "backend up");
            }
        } else if self.health_failures.fetch_add(1, Ordering::SeqCst) + 1 >= threshold {
            self.mark_down("health check failed");
        }
    }

    /// Marks it down at once (a request saw it fail at the transport level); health
    /// checks bring it back.
    pub fn mark_down(&self, why: &str) {
        if self.healthy.swap(false, Ordering::SeqCst) {
            tracing::warn!(backend = %self.spec.name, reason = why, "backend down");
        }
    }

    /// Claims a slot for one attempt with `prefill_tokens` prompt tokens; `None` when the
    /// backend stopped being available (drained, down or circuit open) since the
    /// candidates were built.
    ///
    /// NB: the in-flight count goes up *before* the drain flag is read, so once a drain
    /// call has returned and the count is seen at zero, no request can reach the backend.
    pub fn try_claim(self: &Arc<Self>, prefill_tokens: u32) -> Option<InFlight> {
        self.in_flight_requests.fetch_add(1, Ordering::SeqCst);
        self.in_flight_prefill_tokens
            .fetch_add(prefill_tokens, Ordering::SeqCst);
        let mut claim = InFlight {
            backend: self.clone(),
            prefill_tokens,
            trial: false,
            settled: false,
            slot: None,
        };
        if !self.is_healthy() || self.is_draining() {
            return None;
        }
        match self.breaker.try_pass() {
            Pass::Closed => Some(claim),
            Pass::Trial => {
                claim.trial = true;
                Some(claim)
            }
            Pass::Refused => None,
        }
    }
}

/// A stream being passed through from a backend; see [`Backend::stream_slot`].
#[derive(Debug)]
pub struct StreamSlot {
    backend: Arc<Backend>,
    moves: tokio::sync::watch::Receiver<bool>,
}

impl StreamSlot {
    /// Resolves once the backend's drain deadline asks its streams to move; never when
    /// it already did (`asked_to_move` tells) or cannot any more.
    pub async fn move_asked(&mut self) {
        if self.moves.wait_for(|m| *m).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Whether the backend's drain deadline has asked its streams to move.
    pub fn asked_to_move(&self) -> bool {
        *self.moves.borrow()
    }

    /// Counts the stream as moved away.
    pub fn moved(&self) {
        self.backend.streams_moved.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.backend.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One attempt's claim on a backend. Its drop gives back the in-flight request, any
/// prefill tokens and the engine slot it holds, on every path: success, failure,
/// timeout, client disconnect.
#[derive(Debug)]
pub struct InFlight {
    backend: Arc<Backend>,
    prefill_tokens: u32,
    trial: bool,
    settled: bool,
    slot: Option<switchyard_kv::SlotLease>,
}

impl InFlight {
    /// The backend claimed.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Holds the engine slot the request runs in (slot-per-prompt engines) until the
    /// claim is dropped.
    pub fn hold_slot(&mut self, slot: Option<switchyard_kv::SlotLease>) {
        self.slot = slot;
    }

    /// The engine slot the request runs in, when the index tracks one.
    pub fn slot(&self) -> Option<&switchyard_kv::SlotLease> {
        self.slot.as_ref()
    }

    /// The first byte arrived: the prompt is no longer waiting for prefill.
    pub fn first_byte(&mut self) {
        let n = std::mem::take(&mut self.prefill_tokens);
        self.backend
            .in_flight_prefill_tokens
            .fetch_sub(n, Ordering::SeqCst);
    }

    /// Records the attempt's outcome with the circuit breaker.
    pub fn settle(&mut self, success: bool) {
        self.settled = true;
        if success {
            self.backend.breaker.record_success();
        } else {
            self.backend.breaker.record_failure();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.first_byte();
        self.backend
            .in_flight_requests
            .fetch_sub(1, Ordering::SeqCst);
        if self.trial && !self.settled {
            // The trial was abandoned (client gone): let the next request try instead.
            self.backend.breaker.abandon_trial();
        }
    }
}
