//! The request being routed and the candidates it can go to.

use crate::fleet::{BackendId, find_label};
use crate::wit::types;

/// One request being routed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    /// Stable hash of the request id; seed any randomness with it.
    pub id: u64,
    /// Tenant name.
    pub tenant: String,
    /// Model name.
    pub model: String,
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// Requested output tokens.
    pub max_tokens: u32,
    /// Client session id, if any.
    pub session: Option<String>,
    /// Labels from configured request headers, e.g. `("data-class", "pii")`.
    pub labels: Vec<(String, String)>,
    /// Time-to-first-token objective in milliseconds, if any.
    pub slo_ttft_ms: Option<u32>,
    /// Time-per-output-token objective in milliseconds, if any.
    pub slo_tpot_ms: Option<u32>,
}

impl Request {
    /// The value of request label `key`, if set.
    pub fn label(&self, key: &str) -> Option<&str> {
        find_label(&self.labels, key)
    }
}

/// One backend able to serve the request, with its live figures.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Candidate {
    /// The backend, to look up in the [`crate::Fleet`].
    pub backend: BackendId,
    /// Requests waiting in the engine's queue.
    pub waiting: u32,
    /// Requests running in the engine's batch.
    pub running: u32,
    /// Fraction of the KV cache in use, in [0, 1].
    pub kv_usage: f32,
    /// Tokens of this prompt already cached on this backend.
    pub cached_prefix_tokens: u32,
    /// Requests the router has in flight to this backend.
    pub in_flight_requests: u32,
    /// Uncached prompt tokens of the router's in-flight requests still in prefill.
    pub in_flight_prefill_tokens: u32,
    /// Effective prefill speed, tokens per second; 0 when unknown.
    pub prefill_tokens_per_s: f32,
    /// Effective decode speed per sequence, tokens per second; 0 when unknown.
    pub decode_tokens_per_s: f32,
    /// Milliseconds since the engine's metrics were scraped.
    pub metrics_age_ms: u32,
}

impl Candidate {
    /// Prompt tokens this backend would have to compute for `req` (not cached).
    pub fn uncached_tokens(&self, req: &Request) -> u32 {
        req.prompt_tokens.saturating_sub(self.cached_prefix_tokens)
    }
}

impl From<types::Request> for Request {
    fn from(r: types::Request) -> Self {
        Request {
            id: r.id,
            tenant: r.tenant,
            model: r.model,
            prompt_tokens: r.prompt_tokens,
            max_tokens: r.max_tokens,
            session: r.session,
            labels: r.labels,
            slo_ttft_ms: r.slo_ttft_ms,
            slo_tpot_ms: r.slo_tpot_ms,
        }
    }
}

impl From<types::Candidate> for Candidate {
    fn from(c: types::Candidate) -> Self {
        Candidate {
            backend: BackendId(c.backend),
            waiting: c.waiting,
            running: c.running,
            kv_usage: c.kv_usage,
            cached_prefix_tokens: c.cached_prefix_tokens,
            in_flight_requests: c.in_flight_requests,
            in_flight_prefill_tokens: c.in_flight_prefill_tokens,
            prefill_tokens_per_s: c.prefill_tokens_per_s,
            decode_tokens_per_s: c.decode_tokens_per_s,
            metrics_age_ms: c.metrics_age_ms,
        }
    }
}
