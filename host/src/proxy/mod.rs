//! The OpenAI-compatible client API: parse → enrich → decide → send → stream back.
//!
//! - [`App`] is the request path's state: handles on the pool and the policies, the
//!   tenant table, the decision log, metrics. [`router`] serves it.
//! - Each request is parsed once ([`Parsed`]), gets one fleet snapshot and one pipeline
//!   snapshot, one candidate list and one decision; the send loop then retries on other
//!   backends only before the first byte reached the client; after it, a broken stream
//!   resumes on another backend (`resume`).
//! - A prefill/decode split is served in two phases (`split`): prefill on one backend,
//!   decode, streamed back, on another; the response names both
//!   ([`BACKEND_HEADER`], [`PREFILL_BACKEND_HEADER`]).
//! - Every failure is an [`ApiError`] with an OpenAI-shaped body.

mod decisions;
mod error;
mod forward;
mod request;
mod respond;
mod resume;
mod split;
mod tenant;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use tracing::Instrument;
use tracing::field::Empty;

pub use decisions::{DecisionLog, DecisionRecord, Legs};
pub use decisions::{StreamLeg, StreamLegs};
pub use error::ApiError;
pub(crate) use error::error_body;
pub use error::{ErrorBody, ErrorDetail};
pub use request::{
    ClientHints, Endpoint, Parsed, PromptFacts, ROUTER_OWNED_FIELDS, SESSION_HEADER,
    SLO_TPOT_HEADER, SLO_TTFT_HEADER, output_tokens, prompt_facts,
};
pub use resume::{Fed, SseFollower};
pub use split::PREFILL_BACKEND_HEADER;
pub use tenant::{Admission, Tenant, Tenants};

use crate::cluster::Signals;
use crate::config::ProxySettings;
use crate::listener::BodyTimeout;
use crate::policy::{Candidate, Decision, FleetFacts, Placement, Policies, Role, builtin_load};
use crate::pool::Pool;
use crate::state::StateDir;
use crate::telemetry::{FieldLabels, ProxyMetrics, RequestLabels};
use decisions::RecordContext;
use forward::{Attempt, Outgoing};
use split::SplitRoute;
use switchyard_kv::KvIndex;

/// Response header naming the backend that served a request.
pub const BACKEND_HEADER: HeaderName = HeaderName::from_static("x-switchyard-backend");
/// Request and response header carrying the request id.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// What [`App::new`] is built from.
pub struct AppParts {
    /// The backend pool.
    pub pool: Pool,
    /// The policy runtime.
    pub policies: Policies,
    /// The tenant table.
    pub tenants: Tenants,
    /// Request limits.
    pub settings: ProxySettings,
    /// The decision log, shared with the admin API.
    pub decisions: Arc<DecisionLog>,
    /// The data plane's metrics.
    pub metrics: ProxyMetrics,
    /// The registry `/metrics` encodes.
    pub registry: Arc<Registry>,
    /// The KV-cache prefix index.
    pub kv: KvIndex,
    /// The state directory, whose damaged entries make `/ready` answer 503.
    pub state: Option<StateDir>,
    /// Cluster mode: where approximate-mode KV records go for the other replicas.
    pub signals: Option<Signals>,
}

/// The client API's state. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    policies: Policies,
    tenants: Tenants,
    settings: ProxySettings,
    decisions: Arc<DecisionLog>,
    metrics: ProxyMetrics,
    registry: Arc<Registry>,
    kv: KvIndex,
    state: Option<StateDir>,
    signals: Option<Signals>,
}

impl App {
    /// Builds the state.
    pub fn new(parts: AppParts) -> App {
        App {
            inner: Arc::new(Inner {
                pool: parts.pool,
                policies: parts.policies,
                tenants: parts.tenants,
                settings: parts.settings,
                decisions: parts.decisions,
                metrics: parts.metrics,
                registry: parts.registry,
                kv: parts.kv,
                state: parts.state,
                signals: parts.signals,
            }),
        }
    }

    /// The output tokens policies see for `req`: its own, or `proxy.default_max_tokens`.
    fn policy_max_tokens(&self, req: &Parsed) -> u32 {
        match req.max_tokens {
            0 => self.inner.settings.default_max_tokens,
            n => n,
        }
    }

    /// Serves one OpenAI request and labels the outcome: request id header, metrics,
    /// span fields.
    async fn handle(&self, endpoint: Endpoint, headers: HeaderMap, body: Body) -> Response {
        let started = Instant::now();
        let request_id = headers
            .get(&REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map_or_else(new_request_id, str::to_owned);
        let span = tracing::info_span!(
            "request",
            id = %request_id,
            tenant = Empty,
            model = Empty,
            backend = Empty,
            status = Empty
        );
        let mut tenant = String::new();
        let result = self
            .serve(endpoint, &headers, body, &request_id, started, &mut tenant)
            .instrument(span.clone())
            .await;
        let mut resp = result.unwrap_or_else(IntoResponse::into_response);
        let backend = resp
            .headers()
            .get(&BACKEND_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let status = resp.status().as_u16();
        span.record("backend", backend.as_str());
        span.record("status", status);
        self.inner
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                tenant,
                backend,
                status,
            })
            .inc();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert(REQUEST_ID_HEADER, v);
        }
        resp
    }

    async fn serve(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
        body: Body,
        request_id: &str,
        started: Instant,
        tenant_label: &mut String,
    ) -> Result<Response, ApiError> {
        let span = tracing::Span::current();
        let tenant = self.inner.tenants.resolve(headers)?;
        tenant_label.clone_from(&tenant.name);
        span.record("tenant", tenant.name.as_str());
        let hints = ClientHints::from_headers(headers, &self.inner.settings.label_headers)?;
        let body = read_body(headers, body, self.inner.settings.max_body_bytes).await?;
        let mut req = Parsed::from_openai(endpoint, body)?;
        if let Some(salt) = &tenant.cache_salt {
            req = req.with_cache_salt(salt)?;
        }
        span.record("model", req.model.as_str());
        for field in &req.stripped {
            tracing::debug!(field, "router-owned field removed from the client's body");
            self.inner
                .metrics
                .stripped_fields
                .get_or_create(&FieldLabels {
                    field: (*field).to_owned(),
                })
                .inc();
        }

        let fleet = self.inner.pool.fleet();
        if !fleet.serves(&req.model) {
            return Err(ApiError::UnknownModel(req.model));
        }
        let mut candidates = fleet.candidates(&req.model);
        if candidates.is_empty() {
            return Err(ApiError::NoBackend(req.model));
        }
        let prompt = prompt_facts(&req, &fleet, &self.inner.kv, &mut candidates);
        let admission = tenant.admit(prompt.prompt_tokens.saturating_add(req.max_tokens))?;
        let facts = hints.facts(
            request_id,
            &tenant.name,
            &req,
            &prompt,
            prompt.prompt_tokens,
            self.policy_max_tokens(&req),
        );

        let pipeline = self.inner.policies.pipeline(&tenant.name);
        if pipeline.damaged().is_some() {
            return Err(ApiError::PipelineDamaged(tenant.name.clone()));
        }
        let decide =
            tracing::info_span!("decide", policy = Empty, version = pipeline.info().version);
        let decision = decide.in_scope(|| pipeline.decide(&fleet.facts, &facts, &candidates));
        if !decide.is_disabled() {
            decide.record("policy", decision.policies.join(",").as_str());
        }
        decide.record("elapsed_us", decision.elapsed.as_micros() as u64);
        let mut record = DecisionRecord::new(
            RecordContext {
                request_id,
                tenant: &tenant.name,
                model: &req.model,
                prompt_tokens: prompt.prompt_tokens,
            },
            &fleet,
            &candidates,
            &decision,
        );
        let route = match route(&decision, &candidates, &fleet.facts) {
            Ok(r) => r,
            Err(e) => {
                self.inner.decisions.push(record);
                return Err(e);
            }
        };
        let out = Outgoing {
            req,
            request_id: request_id.to_owned(),
            prompt,
            started,
            admission,
            tenant: tenant.name.clone(),
            legs: record.legs.stream_legs.clone(),
            hints,
        };
        let result = match &route {
            Route::Single(order) => {
                let attempts = order
                    .iter()
                    .map(|&b| Attempt::whole(&out, b, &candidates))
                    .collect();
                self.send(out, &fleet, attempts).await
            }
            Route::Split(s) => {
                self.send_split(out, &fleet, &candidates, s, &mut record.legs)
                    .await
            }
        };
        record.legs.served_by = result.as_ref().ok().and_then(|r| {
            r.headers()
                .get(&BACKEND_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        self.inner.decisions.push(record);
        result
    }
}

/// A random (version 4) UUID for a request that came without an id.
fn new_request_id() -> String {
    // NB: `Uuid::new_v4` without uuid's `fast-rng` asks the OS for its randomness, a
    // `getrandom` system call per request; `rand`'s thread-local generator does not.
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

/// Where to send a request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// The whole request, on these backends in order; never empty.
    Single(Vec<u32>),
    /// Prefill on one backend, decode on another; both lists never empty.
    Split(SplitRoute),
}

/// The backends to try, best first: the decision's choice, then the other candidates by
/// score, then by load. A split's legs fall back only to backends whose role allows them.
fn route(d: &Decision, candidates: &[Candidate], facts: &FleetFacts) -> Result<Route, ApiError> {
    let score = |c: &Candidate| {
        d.scores
            .iter()
            .find(|(i, _)| *i == c.backend)
            .map_or(f32::NEG_INFINITY, |(_, s)| *s)
    };
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| {
        score(b)
            .total_cmp(&score(a))
            .then(builtin_load(a).total_cmp(&builtin_load(b)))
    });
    let ranked: Vec<u32> = sorted.iter().map(|c| c.backend).collect();
    let role = |b: u32| facts.backends.get(b as usize).map_or(Role::Any, |f| f.role);
    // `first`, then the ranked candidates other than `first` and `skip` that `can` serve.
    let order = |first: u32, skip: u32, can: fn(Role) -> bool| -> Vec<u32> {
        std::iter::once(first)
            .chain(
                ranked
                    .iter()
                    .copied()
                    .filter(|&b| b != first && b != skip && can(role(b))),
            )
            .collect()
    };
    match &d.placement {
        Placement::Single(i) => Ok(Route::Single(order(*i, *i, |_| true))),
        Placement::Split { prefill, decode } => Ok(Route::Split(SplitRoute {
            prefill: order(*prefill, *decode, |r| r != Role::Decode),
            decode: order(*decode, *decode, |r| r != Role::Prefill),
        })),
        Placement::Reject { status, message } => Err(ApiError::Rejected {
            status: StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            message: message.clone(),
        }),
    }
}

/// Reads the body up to `max` bytes, within the listener's body read timeout.
async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(ApiError::TooLarge { max });
    }
    axum::body::to_bytes(body, max).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ApiError::TooLarge { max };
            }
            if let Some(t) = s.downcast_ref::<BodyTimeout>() {
                return ApiError::BodyTimeout(t.0);
            }
            source = s.source();
        }
        ApiError::BadJson(format!("cannot read body: {e}"))
    })
}

/// The client API's routes.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(no_route)
        .with_state(app)
}

async fn chat(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    app.handle(Endpoint::Chat, headers, body).await
}

async fn completions(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    app.handle(Endpoint::Completions, headers, body).await
}

async fn models(State(app): State<App>) -> Response {
    let fleet = app.inner.pool.fleet();
    let data: Vec<_> = fleet
        .models()
        .into_iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "switchyard"}))
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

async fn health() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

/// 503 while a stored entry is damaged (naming each), or while no backend is available.
async fn ready(State(app): State<App>) -> Response {
    let damaged = app
        .inner
        .state
        .as_ref()
        .map(StateDir::damaged)
        .unwrap_or_default();
    if !damaged.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "damaged state", "damaged": damaged})),
        )
            .into_response();
    }
    if app.inner.pool.fleet().is_ready() {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "no healthy backend"})),
        )
            .into_response()
    }
}

async fn metrics(State(app): State<App>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &app.inner.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

#[cfg(test)]
mod tests;
