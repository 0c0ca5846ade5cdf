//! The host-side view of what a policy sees: request facts, candidates, fleet facts and
//! the placement it returns. Plain Rust types; the generated bindings never leave
//! `policy`.

/// What a backend is deployed to do in a prefill/decode split.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Whole requests, or either leg of a split.
    #[default]
    Any,
    /// Prompts only.
    Prefill,
    /// Generation only.
    Decode,
}

/// Static facts about one backend, as delivered to policies when the fleet changes.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendFacts {
    /// Unique backend name.
    pub name: String,
    /// Accelerator vendor, lowercase.
    pub vendor: String,
    /// Accelerator model, lowercase.
    pub accelerator: String,
    /// Region; empty when not configured.
    pub region: String,
    /// Operator labels.
    pub labels: Vec<(String, String)>,
    /// Deployment role.
    pub role: Role,
    /// Price per hour.
    pub cost_per_hour: f64,
    /// Declared prefill speed, tokens per second; 0 when unknown.
    pub prefill_tokens_per_s: f32,
    /// Declared decode speed per sequence, tokens per second; 0 when unknown.
    pub decode_tokens_per_s: f32,
    /// KV cache capacity in tokens; 0 when unknown.
    pub kv_capacity_tokens: u64,
    /// KV transfer link bandwidth, gigabytes per second; 0 when unknown.
    pub kv_link_gbytes_per_s: f32,
    /// KV bytes per token of context; 0 when unknown.
    pub kv_bytes_per_token: u32,
}

/// Every backend's static facts; candidates refer to them by index.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetFacts {
    /// Increases on every change, so instances know when to be told again.
    pub generation: u64,
    /// The backends, indexed by candidate `backend`.
    pub backends: Vec<BackendFacts>,
}

/// One request as policies see it.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestFacts {
    /// Stable hash of the request id.
    pub id: u64,
    /// Tenant name.
    pub tenant: String,
    /// Model name.
    pub model: String,
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// Requested output tokens.
    pub max_tokens: u32,
    /// Client session id.
    pub session: Option<String>,
    /// Request labels from configured headers.
    pub labels: Vec<(String, String)>,
    /// Time-to-first-token objective, milliseconds.
    pub slo_ttft_ms: Option<u32>,
    /// Time-per-output-token objective, milliseconds.
    pub slo_tpot_ms: Option<u32>,
    /// Where the prompt's own prefix starts (the `request-prefix` import), when the KV
    /// index keys the model's prompts.
    pub prefix: Option<switchyard_kv::PrefixGroup>,
}

/// One backend able to serve a request, with its live figures: flat scalars only.
#[derive(
    Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(default, deny_unknown_fields)]
pub struct Candidate {
    /// Index of the backend in [`FleetFacts::backends`].
    pub backend: u32,
    /// Requests waiting in the engine's queue (scraped).
    pub waiting: u32,
    /// Requests running in the engine's batch (scraped).
    pub running: u32,
    /// Fraction of the KV cache in use, [0, 1] (scraped; for a slot engine at least its
    /// busy slots' share, from the KV index).
    pub kv_usage: f32,
    /// Tokens of this prompt cached on this backend (KV index).
    pub cached_prefix_tokens: u32,
    /// Requests the router has in flight to this backend.
    pub in_flight_requests: u32,
    /// Uncached prompt tokens of in-flight requests still before their first token.
    pub in_flight_prefill_tokens: u32,
    /// Effective prefill speed, tokens per second.
    pub prefill_tokens_per_s: f32,
    /// Effective decode speed per sequence, tokens per second.
    pub decode_tokens_per_s: f32,
    /// Milliseconds since the engine's metrics were scraped.
    pub metrics_age_ms: u32,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// One backend (fleet index) serves it all.
    Single(u32),
    /// Prompt on `prefill`, generation on `decode` (fleet indices).
    Split {
        /// Backend running the prompt.
        prefill: u32,
        /// Backend generating.
        decode: u32,
    },
    /// Refused with this status and message.
    Reject {
        /// HTTP status, 400..=599.
        status: u16,
        /// Message for the client.
        message: String,
    },
}
