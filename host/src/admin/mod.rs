//! The admin API, on its own listener: backends (list, add, drain, remove), policies
//! (upload, list), tenant pipelines (set, canary, shadow, rollback), recent decisions,
//! damaged stored entries (list, discard), and its OpenAPI document. Every route is
//! behind a bearer token compared in constant time. Tenant, backend and policy names in
//! paths are validated before anything else. It owns no state: it calls [`Pool`],
//! [`Policies`] and the [`StateDir`].

mod error;

use std::str::FromStr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

pub use error::Error;

use crate::names::{BackendName, InvalidName, PolicyName, TenantName};
use crate::policy::{CanarySpec, PipelineSpec, Policies};
use crate::pool::{BackendSpec, BackendStatus, Pool};
use crate::proxy::DecisionLog;
use crate::state::StateDir;
use switchyard_kv::{KvIndex, Prompt, Scope};

/// The hand-written OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("../../../docs/admin-openapi.json");

/// The admin API's handles. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    /// The backend pool.
    pub pool: Pool,
    /// The policy runtime.
    pub policies: Policies,
    /// The decision log.
    pub decisions: Arc<DecisionLog>,
    /// The KV-cache prefix index.
    pub kv: KvIndex,
    /// The state directory, when changes persist.
    pub state: Option<StateDir>,
    /// The bearer token.
    pub token: Arc<str>,
}

/// The admin routes, all behind the token.
pub fn router(admin: Admin) -> Router {
    let token = admin.token.clone();
    Router::new()
        .route("/admin/openapi.json", get(openapi))
        .route("/admin/backends", get(list_backends).post(add_backend))
        .route(
            "/admin/backends/{name}",
            get(get_backend).delete(remove_backend),
        )
        .route("/admin/backends/{name}/drain", post(drain))
        .route("/admin/backends/{name}/undrain", post(undrain))
        .route("/admin/kv", get(kv_stats))
        .route("/admin/kv/lookup", post(kv_lookup))
        .route("/admin/policies", get(list_policies))
        .route("/admin/policies/{name}", put(upload_policy))
        .route("/admin/tenants", get(list_tenants))
        .route("/admin/tenants/{tenant}/pipeline", put(set_pipeline))
        .route(
            "/admin/tenants/{tenant}/canary",
            put(set_canary).delete(clear_canary),
        )
        .route(
            "/admin/tenants/{tenant}/shadow",
            put(set_shadow).delete(clear_shadow),
        )
        .route("/admin/tenants/{tenant}/rollback", post(rollback))
        .route("/admin/decisions", get(decisions))
        .route("/admin/state/damaged", get(list_damaged))
        .route("/admin/state/damaged/{*entry}", delete(discard_damaged))
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(token, authorize))
        .with_state(admin)
}

/// Rejects calls without the right `Authorization: Bearer` token. The comparison takes
/// the same time wherever the tokens differ.
async fn authorize(State(token): State<Arc<str>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        next.run(req).await
    } else {
        Error::Unauthorized.into_response()
    }
}

/// A validated name from the route's one path parameter (`{tenant}`, `{name}`); a bad
/// one is a 400 in the API's error format before the handler runs.
struct Name<T>(T);

impl<S: Send + Sync, T: FromStr<Err = InvalidName>> FromRequestParts<S> for Name<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::BadBody(e.body_text()))?;
        Ok(Name(raw.parse()?))
    }
}

fn json<T: DeserializeOwned>(body: &Bytes) -> Result<T, Error> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de)
        .map_err(|e| Error::BadBody(format!("{}: {}", e.path(), e.inner())))
}

/// Runs a blocking policy-runtime call (compiles, instantiations) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::policy::Error> + Send + 'static,
) -> Result<T, Error> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// A backend's status with what the KV index tracks for it.
#[derive(serde::Serialize)]
struct BackendView {
    #[serde(flatten)]
    status: BackendStatus,
    /// The KV index's view: mode, blocks tracked, capacity in blocks; `None` when the
    /// backend is not indexed.
    kv: Option<KvOccupancy>,
}

/// What the KV index holds for one backend.
#[derive(serde::Serialize)]
struct KvOccupancy {
    mode: switchyard_kv::Mode,
    blocks: u32,
    capacity_blocks: u32,
}

impl Admin {
    fn view(&self, status: BackendStatus, stats: &[switchyard_kv::BackendStats]) -> BackendView {
        let kv = stats
            .iter()
            .find(|s| s.name == status.spec.name.as_str())
            .map(|s| KvOccupancy {
                mode: s.mode,
                blocks: s.blocks,
                capacity_blocks: s.capacity_blocks,
            });
        BackendView { status, kv }
    }
}

async fn list_backends(State(a): State<Admin>) -> Response {
    let stats = a.kv.stats();
    let views: Vec<BackendView> = a
        .pool
        .statuses()
        .into_iter()
        .map(|s| a.view(s, &stats))
        .collect();
    Json(views).into_response()
}

async fn get_backend(
    State(a): State<Admin>,
    Name(name): Name<BackendName>,
) -> Result<Response, Error> {
    let status = a.pool.status(&name)?;
    Ok(Json(a.view(status, &a.kv.stats())).into_response())
}

async fn add_backend(State(a): State<Admin>, body: Bytes) -> Result<Response, Error> {
    let spec: BackendSpec = json(&body)?;
    let kv_backend = spec.kv_backend();
    let status = a.pool.add(spec)?;
    if let Some(b) = kv_backend
        && let Err(e) = a.kv.add_backend(&b)
    {
        // NB: the backend serves without prefix tracking rather than not at all.
        tracing::warn!(backend = %b.name, error = %e, "backend added without KV tracking");
    }
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

async fn remove_backend(
    State(a): State<Admin>,
    Name(name): Name<BackendName>,
) -> Result<Response, Error> {
    a.pool.remove(&name)?;
    // A backend the index never tracked has nothing to forget.
    let _ = a.kv.remove_backend(&name);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn kv_stats(State(a): State<Admin>) -> Response {
    Json(a.kv.stats()).into_response()
}

/// The body of `POST /admin/kv/lookup`: a model and a prompt, as text or chat messages.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupRequest {
    model: String,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<LookupMessage>>,
    #[serde(default)]
    cache_salt: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupMessage {
    role: String,
    content: String,
}

async fn kv_lookup(State(a): State<Admin>, body: Bytes) -> Result<Response, Error> {
    let req: LookupRequest = json(&body)?;
    let chat: Vec<(&str, &str)> = req
        .messages
        .iter()
        .flatten()
        .map(|m| (m.role.as_str(), m.content.as_str()))
        .collect();
    let prompt = match (&req.prompt, req.messages.is_some()) {
        (Some(p), false) => Prompt::Text(p),
        (None, true) => Prompt::Chat(&chat),
        _ => {
            return Err(Error::BadBody(
                "give exactly one of `prompt` and `messages`".into(),
            ));
        }
    };
    let scope = Scope {
        lora: None,
        cache_salt: req.cache_salt.as_deref(),
    };
    let report = a.kv.lookup_prompt(&req.model, prompt, scope)?;
    Ok(Json(report).into_response())
}

/// `POST /admin/backends/{name}/drain[?deadline_ms=N]`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainQuery {
    /// After this long, streams still running on the backend move to other backends.
    deadline_ms: Option<u64>,
}

async fn drain(
    State(a): State<Admin>,
    Name(name): Name<BackendName>,
    query: Result<Query<DrainQuery>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(q) = query.map_err(|e| Error::BadBody(e.body_text()))?;
    let status = match q.deadline_ms {
        Some(ms) => a
            .pool
            .drain_with_deadline(&name, std::time::Duration::from_millis(ms))?,
        None => a.pool.set_draining(&name, true)?,
    };
    Ok(Json(status).into_response())
}

async fn undrain(State(a): State<Admin>, Name(name): Name<BackendName>) -> Result<Response, Error> {
    Ok(Json(a.pool.set_draining(&name, false)?).into_response())
}

async fn list_policies(State(a): State<Admin>) -> Response {
    Json(a.policies.versions()).into_response()
}

/// Query of a policy upload.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// Call the policy once on a synthetic fleet before accepting it. Default true.
    #[serde(default = "yes")]
    smoke: bool,
}

fn yes() -> bool {
    true
}

async fn upload_policy(
    State(a): State<Admin>,
    Name(name): Name<PolicyName>,
    q: Result<Query<UploadQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, Error> {
    let Query(q) = q.map_err(|e| Error::BadBody(e.body_text()))?;
    let policies = a.policies.clone();
    let version = blocking(move || policies.upload(&name, &body, q.smoke)).await?;
    tracing::info!(policy = %version.label(), compile_ms = version.compile_ms, "policy uploaded");
    Ok(Json(version).into_response())
}

async fn list_tenants(State(a): State<Admin>) -> Response {
    Json(a.policies.pipelines()).into_response()
}

async fn set_pipeline(
    State(a): State<Admin>,
    Name(tenant): Name<TenantName>,
    body: Bytes,
) -> Result<Response, Error> {
    let spec: PipelineSpec = json(&body)?;
    let p = a.policies.clone();
    Ok(Json(blocking(move || p.set_pipeline(&tenant, spec)).await?).into_response())
}

async fn set_canary(
    State(a): State<Admin>,
    Name(tenant): Name<TenantName>,
    body: Bytes,
) -> Result<Response, Error> {
    let spec: CanarySpec = json(&body)?;
    let p = a.policies.clone();
    Ok(Json(blocking(move || p.set_canary(&tenant, Some(spec))).await?).into_response())
}

async fn clear_canary(
    State(a): State<Admin>,
    Name(tenant): Name<TenantName>,
) -> Result<Response, Error> {
    let p = a.policies.clone();
    Ok(Json(blocking(move || p.set_canary(&tenant, None)).await?).into_response())
}

async fn set_shadow(
    State(a): State<Admin>,
    Name(tenant): Name<TenantName>,
    body: Bytes,
) -> Result<Response, Error> {
    let spec: PipelineSpec = json(&body)?;
    let p = a.policies.clone();
    Ok(Json(blocking(move || p.set_shadow(&tenant, Some(spec))).await?).into_response())
}

async fn clear_shadow(
    State(a): State<Admin>,
    Name(tenant): Name<TenantName>,
) -> Result<Response, Error> {
    let p = a.policies.clone();
    Ok(Json(blocking(move || p.set_shadow(&tenant, None)).await?).into_response())
}

async fn rollback(
    State(a): State<Admin>,
    Name(tenant): Name<TenantName>,
) -> Result<Response, Error> {
    let p = a.policies.clone();
    Ok(Json(blocking(move || p.rollback(&tenant)).await?).into_response())
}

/// Query of `GET /admin/decisions`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionsQuery {
    /// Most records returned, newest first. Default 100.
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

async fn decisions(
    State(a): State<Admin>,
    q: Result<Query<DecisionsQuery>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(q) = q.map_err(|e| Error::BadBody(e.body_text()))?;
    let recent = a.decisions.recent(q.limit);
    let records: Vec<&crate::proxy::DecisionRecord> = recent.iter().map(|r| &**r).collect();
    Ok(Json(records).into_response())
}

async fn list_damaged(State(a): State<Admin>) -> Response {
    let damaged = a.state.as_ref().map(StateDir::damaged).unwrap_or_default();
    Json(damaged).into_response()
}

/// Moves a damaged entry to the state directory's `quarantine/` and forgets it: `/ready`
/// stops naming it, and a tenant whose pipeline it was is served like a tenant without
/// one (by `default`'s pipeline).
async fn discard_damaged(
    State(a): State<Admin>,
    Path(entry): Path<String>,
) -> Result<Response, Error> {
    let discarded = match &a.state {
        Some(state) => state.discard_damaged(&entry)?,
        None => false,
    };
    if !discarded {
        return Err(Error::NotDamaged(entry));
    }
    a.policies.forget_damaged(&entry);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn no_route(uri: Uri) -> Error {
    Error::NoRoute(uri.path().to_owned())
}
