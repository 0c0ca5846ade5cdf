//! The admin API, on its own listener: backends (list, add, drain, remove), policies
//! (upload, list, delete), tenant pipelines (set, canary, shadow, rollback), tenants'
//! quotas, recent decisions, the audit log, damaged stored entries (list, discard), and
//! its OpenAPI document.
//!
//! Every route is behind a bearer token ([`auth`]): operators may do everything; a
//! tenant's credential only what concerns its own tenant (its namespace of policies, its
//! pipelines, decisions and audit records) and a redacted view of the backends. Every
//! call that changes state, and every refusal, is appended to the [`audit`] log before
//! the response leaves. Tenant, backend and policy names in paths are validated before
//! anything else. It owns no state: it calls [`Pool`], [`Policies`] and the
//! [`StateDir`].

pub mod audit;
pub mod auth;
mod error;

use std::str::FromStr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

pub use error::Error;

use crate::names::{BackendName, InvalidName, PolicyName, TenantName};
use crate::policy::{CanarySpec, PipelineSpec, Policies};
use crate::pool::{BackendSpec, BackendStatus, Pool};
use crate::proxy::DecisionLog;
use crate::state::StateDir;
use audit::{AuditLog, AuditRecord, Change};
use auth::{Caller, Credentials};
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
    /// Who may call, and as what.
    pub credentials: Arc<Credentials>,
    /// Where calls are recorded.
    pub audit: AuditLog,
    /// Backend labels tenants' credentials do not see.
    pub private_labels: Arc<[String]>,
}

/// The admin routes, all behind a credential.
pub fn router(admin: Admin) -> Router {
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
        .route(
            "/admin/policies/{name}",
            put(upload_global_policy).delete(delete_global_policy),
        )
        .route(
            "/admin/policies/{namespace}/{name}",
            put(upload_tenant_policy).delete(delete_tenant_policy),
        )
        .route("/admin/tenants", get(list_tenants))
        .route("/admin/tenants/{tenant}/quota", get(quota))
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
        .route("/admin/audit", get(audit_records))
        .route("/admin/state/damaged", get(list_damaged))
        .route("/admin/state/damaged/{*entry}", delete(discard_damaged))
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(admin.clone(), gate))
        .with_state(admin)
}

/// Checks the `Authorization: Bearer` token (401 without a valid one), hands the handler
/// its [`Caller`], and audits the call when it changed state or was refused: the record
/// is on disk before the response leaves.
async fn gate(State(a): State<Admin>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let caller = a.credentials.authenticate(token.as_bytes());
    let method = req.method().clone();
    let target = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| target.clone(), |m| m.as_str().to_owned());
    let response = match &caller {
        Some(c) => {
            req.extensions_mut().insert(c.clone());
            next.run(req).await
        }
        None => Error::Unauthorized.into_response(),
    };
    let status = response.status();
    let refused = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
    if refused || !matches!(method, Method::GET | Method::HEAD) {
        let change = response
            .extensions()
            .get::<Change>()
            .cloned()
            .unwrap_or_default();
        let (time, unix_ms) = audit::now();
        let tenant = caller
            .as_ref()
            .and_then(|c| c.tenant().map(|t| t.to_string()))
            .or_else(|| path_tenant(&target));
        let record = AuditRecord {
            seq: 0,
            time,
            unix_ms,
            credential: caller.as_ref().map(|c| c.credential.to_string()),
            role: caller.as_ref().map(|c| c.role.as_str().to_owned()),
            tenant,
            method: method.to_string(),
            route,
            target,
            before: change.before,
            after: change.after,
            status: status.as_u16(),
        };
        let log = a.audit.clone();
        // NB: the append syncs to disk; a dead blocking task leaves the record logged
        // in the append's own error path, never a lost response.
        let _ = tokio::task::spawn_blocking(move || log.append(record)).await;
    }
    response
}

/// The tenant a path names: `/admin/tenants/{tenant}/..` or `/admin/policies/{tenant}/..`.
fn path_tenant(path: &str) -> Option<String> {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("admin"), Some("tenants"), Some(t), Some(_))
        | (Some("admin"), Some("policies"), Some(t), Some(_)) => Some(t.to_owned()),
        _ => None,
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

/// Fields of a backend a tenant's credential does not see: where it is.
const ADDRESS_FIELDS: [&str; 3] = ["url", "kv_events", "kv_replay"];

impl Admin {
    /// `status` as `caller` may see it: for tenants, without addresses and without the
    /// labels the operator marked private.
    fn view(
        &self,
        caller: &Caller,
        status: BackendStatus,
        stats: &[switchyard_kv::BackendStats],
    ) -> serde_json::Value {
        let kv = stats
            .iter()
            .find(|s| s.name == status.spec.name.as_str())
            .map(|s| KvOccupancy {
                mode: s.mode,
                blocks: s.blocks,
                capacity_blocks: s.capacity_blocks,
            });
        let mut value =
            serde_json::to_value(BackendView { status, kv }).expect("backend view serializes");
        if caller.tenant().is_some()
            && let Some(fields) = value.as_object_mut()
        {
            for f in ADDRESS_FIELDS {
                fields.remove(f);
            }
            if let Some(labels) = fields.get_mut("labels").and_then(|l| l.as_object_mut()) {
                labels.retain(|k, _| !self.private_labels.iter().any(|p| p == k));
            }
        }
        value
    }
}

/// A response carrying what it changed, for the audit record.
fn changed(response: impl IntoResponse, before: Option<String>, after: Option<String>) -> Response {
    let mut response = response.into_response();
    response.extensions_mut().insert(Change { before, after });
    response
}

async fn list_backends(State(a): State<Admin>, Extension(caller): Extension<Caller>) -> Response {
    let stats = a.kv.stats();
    let views: Vec<serde_json::Value> = a
        .pool
        .statuses()
        .into_iter()
        .map(|s| a.view(&caller, s, &stats))
        .collect();
    Json(views).into_response()
}

async fn get_backend(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    Name(name): Name<BackendName>,
) -> Result<Response, Error> {
    let status = a.pool.status(&name)?;
    Ok(Json(a.view(&caller, status, &a.kv.stats())).into_response())
}

/// The right tenants lack on the fleet.
const MANAGE_BACKENDS: &str = "manage backends (operator only)";

async fn add_backend(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, Error> {
    caller.require_operator(MANAGE_BACKENDS)?;
    let spec: BackendSpec = json(&body)?;
    let kv_backend = spec.kv_backend();
    let status = a.pool.add(spec)?;
    if let Some(b) = kv_backend
        && let Err(e) = a.kv.add_backend(&b)
    {
        // NB: the backend serves without prefix tracking rather than not at all.
        tracing::warn!(backend = %b.name, error = %e, "backend added without KV tracking");
    }
    let after = status.spec.name.to_string();
    Ok(changed(
        (StatusCode::CREATED, Json(status)),
        None,
        Some(after),
    ))
}

async fn remove_backend(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    Name(name): Name<BackendName>,
) -> Result<Response, Error> {
    caller.require_operator(MANAGE_BACKENDS)?;
    a.pool.remove(&name)?;
    // A backend the index never tracked has nothing to forget.
    let _ = a.kv.remove_backend(&name);
    Ok(changed(
        StatusCode::NO_CONTENT,
        Some(name.to_string()),
        None,
    ))
}

async fn kv_stats(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Error> {
    caller.require_operator("read the KV index (operator only)")?;
    Ok(Json(a.kv.stats()).into_response())
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

async fn kv_lookup(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, Error> {
    // NB: a lookup tells whether a prompt is cached anywhere: another tenant's prompt.
    caller.require_operator("look up prompts in the KV index (operator only)")?;
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
    Extension(caller): Extension<Caller>,
    Name(name): Name<BackendName>,
    query: Result<Query<DrainQuery>, QueryRejection>,
) -> Result<Response, Error> {
    caller.require_operator(MANAGE_BACKENDS)?;
    let Query(q) = query.map_err(|e| Error::BadBody(e.body_text()))?;
    let status = match q.deadline_ms {
        Some(ms) => a
            .pool
            .drain_with_deadline(&name, std::time::Duration::from_millis(ms))?,
        None => a.pool.set_draining(&name, true)?,
    };
    Ok(changed(Json(status), None, Some("draining".into())))
}

async fn undrain(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    Name(name): Name<BackendName>,
) -> Result<Response, Error> {
    caller.require_operator(MANAGE_BACKENDS)?;
    let status = a.pool.set_draining(&name, false)?;
    Ok(changed(Json(status), Some("draining".into()), None))
}

async fn list_policies(State(a): State<Admin>, Extension(caller): Extension<Caller>) -> Response {
    let visible: Vec<_> = a
        .policies
        .versions()
        .into_iter()
        .filter(|v| {
            v.name
                .split_once('/')
                .is_none_or(|(ns, _)| caller.acts_for(ns))
        })
        .collect();
    Json(visible).into_response()
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

/// The policy a two-segment path names: `{namespace}/{name}`, namespace checked against
/// the caller.
fn tenant_policy(
    caller: &Caller,
    namespace: &str,
    name: &str,
    right: &str,
) -> Result<PolicyName, Error> {
    let full: PolicyName = format!("{namespace}/{name}").parse()?;
    caller.require_tenant(namespace, right)?;
    Ok(full)
}

async fn upload_global_policy(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    Name(name): Name<PolicyName>,
    q: Result<Query<UploadQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, Error> {
    caller.require_operator(&format!(
        "upload the global policy `{name}` (tenants upload into their namespace: `<tenant>/{name}`)"
    ))?;
    upload(a, name, q, body).await
}

async fn upload_tenant_policy(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
    q: Result<Query<UploadQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, Error> {
    let name = tenant_policy(
        &caller,
        &namespace,
        &name,
        "upload policies into the namespace",
    )?;
    upload(a, name, q, body).await
}

async fn upload(
    a: Admin,
    name: PolicyName,
    q: Result<Query<UploadQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, Error> {
    let Query(q) = q.map_err(|e| Error::BadBody(e.body_text()))?;
    let policies = a.policies.clone();
    let version = blocking(move || policies.upload(&name, &body, q.smoke)).await?;
    tracing::info!(policy = %version.label(), compile_ms = version.compile_ms, "policy uploaded");
    let after = version.label();
    Ok(changed(Json(version), None, Some(after)))
}

/// Splits `name@version` from a path segment.
fn versioned(segment: &str) -> Result<(&str, &str), Error> {
    segment
        .split_once('@')
        .filter(|(_, v)| !v.is_empty())
        .ok_or_else(|| Error::BadBody(format!("`{segment}`: name a version, `<name>@<version>`")))
}

async fn delete_global_policy(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    Path(segment): Path<String>,
) -> Result<Response, Error> {
    let (name, version) = versioned(&segment)?;
    let name: PolicyName = name.parse()?;
    caller.require_operator(&format!("delete the global policy `{name}`"))?;
    delete_policy(a, name, version.to_owned()).await
}

async fn delete_tenant_policy(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    Path((namespace, segment)): Path<(String, String)>,
) -> Result<Response, Error> {
    let (name, version) = versioned(&segment)?;
    let name = tenant_policy(
        &caller,
        &namespace,
        name,
        "delete policies of the namespace",
    )?;
    delete_policy(a, name, version.to_owned()).await
}

async fn delete_policy(a: Admin, name: PolicyName, version: String) -> Result<Response, Error> {
    let p = a.policies.clone();
    let label = blocking(move || p.delete(&name, &version)).await?;
    Ok(changed(StatusCode::NO_CONTENT, Some(label), None))
}

async fn list_tenants(State(a): State<Admin>, Extension(caller): Extension<Caller>) -> Response {
    let visible: Vec<_> = a
        .policies
        .pipelines()
        .into_iter()
        .filter(|p| caller.acts_for(&p.tenant))
        .collect();
    Json(visible).into_response()
}

async fn quota(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    Name(tenant): Name<TenantName>,
) -> Result<Response, Error> {
    caller.require_tenant(&tenant, "read the quota")?;
    Ok(Json(a.policies.usage(&tenant)).into_response())
}

/// Refuses a tenant's credential a pipeline that names another tenant's policies.
fn check_references<'a>(
    caller: &Caller,
    specs: impl IntoIterator<Item = &'a PipelineSpec>,
) -> Result<(), Error> {
    let Some(own) = caller.tenant() else {
        return Ok(());
    };
    for spec in specs {
        for stage in spec.stages() {
            if let Some((ns, _)) = stage.policy.split_once('/')
                && ns != own.as_str()
            {
                return Err(caller.forbidden(&format!(
                    "use `{}`, a policy of tenant `{ns}`",
                    stage.policy
                )));
            }
        }
    }
    Ok(())
}

/// A pipeline change's audit entry: the tenant's pipeline version before and after
/// (every change adds one; a tenant's first pipeline is version 1).
fn pipeline_change(info: crate::policy::PipelineInfo) -> Response {
    let before = (info.version > 1).then(|| (info.version - 1).to_string());
    let after = info.version.to_string();
    changed(Json(info), before, Some(after))
}

async fn set_pipeline(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    Name(tenant): Name<TenantName>,
    body: Bytes,
) -> Result<Response, Error> {
    caller.require_tenant(&tenant, "set the pipeline")?;
    let spec: PipelineSpec = json(&body)?;
    check_references(&caller, [&spec])?;
    let p = a.policies.clone();
    let info = blocking(move || p.set_pipeline(&tenant, spec)).await?;
    Ok(pipeline_change(info))
}

async fn set_canary(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    Name(tenant): Name<TenantName>,
    body: Bytes,
) -> Result<Response, Error> {
    caller.require_tenant(&tenant, "set the canary")?;
    let spec: CanarySpec = json(&body)?;
    check_references(&caller, [&spec.pipeline])?;
    let p = a.policies.clone();
    let info = blocking(move || p.set_canary(&tenant, Some(spec))).await?;
    Ok(pipeline_change(info))
}

async fn clear_canary(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    Name(tenant): Name<TenantName>,
) -> Result<Response, Error> {
    caller.require_tenant(&tenant, "clear the canary")?;
    let p = a.policies.clone();
    let info = blocking(move || p.set_canary(&tenant, None)).await?;
    Ok(pipeline_change(info))
}

async fn set_shadow(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    Name(tenant): Name<TenantName>,
    body: Bytes,
) -> Result<Response, Error> {
    caller.require_tenant(&tenant, "set the shadow")?;
    let spec: PipelineSpec = json(&body)?;
    check_references(&caller, [&spec])?;
    let p = a.policies.clone();
    let info = blocking(move || p.set_shadow(&tenant, Some(spec))).await?;
    Ok(pipeline_change(info))
}

async fn clear_shadow(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    Name(tenant): Name<TenantName>,
) -> Result<Response, Error> {
    caller.require_tenant(&tenant, "clear the shadow")?;
    let p = a.policies.clone();
    let info = blocking(move || p.set_shadow(&tenant, None)).await?;
    Ok(pipeline_change(info))
}

async fn rollback(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    Name(tenant): Name<TenantName>,
) -> Result<Response, Error> {
    caller.require_tenant(&tenant, "roll back the pipeline")?;
    let p = a.policies.clone();
    let info = blocking(move || p.rollback(&tenant)).await?;
    Ok(pipeline_change(info))
}

/// Query of `GET /admin/decisions`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionsQuery {
    /// Most records returned, newest first. Default 100.
    #[serde(default = "default_limit")]
    limit: usize,
    /// Only this tenant's decisions. A tenant's credential sees only its own, whether
    /// or not it names itself here.
    tenant: Option<TenantName>,
}

fn default_limit() -> usize {
    100
}

async fn decisions(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<DecisionsQuery>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(q) = q.map_err(|e| Error::BadBody(e.body_text()))?;
    if let Some(t) = &q.tenant {
        caller.require_tenant(t, "read the decisions")?;
    }
    let only = q.tenant.as_ref().or(caller.tenant());
    let recent = a
        .decisions
        .recent(q.limit, |r| only.is_none_or(|t| r.tenant == t.as_str()));
    let records: Vec<&crate::proxy::DecisionRecord> = recent.iter().map(|r| &**r).collect();
    Ok(Json(records).into_response())
}

/// Query of `GET /admin/audit`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Records at or after this time (RFC 3339), oldest first; without it, the newest.
    since: Option<String>,
    /// Most records returned. Default 100.
    #[serde(default = "default_limit")]
    limit: usize,
}

async fn audit_records(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(q) = q.map_err(|e| Error::BadBody(e.body_text()))?;
    let since = q
        .since
        .as_deref()
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|e| Error::BadBody(format!("since: `{s}` is not an RFC 3339 time: {e}")))
        })
        .transpose()?;
    let log = a.audit.clone();
    let own = caller.tenant().map(|t| t.to_string());
    let records = tokio::task::spawn_blocking(move || {
        log.query(since, q.limit, |r| own.is_none() || r.tenant == own)
    })
    .await?
    .map_err(Error::Audit)?;
    Ok(Json(records).into_response())
}

async fn list_damaged(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Error> {
    caller.require_operator("read the state directory's damaged entries (operator only)")?;
    let damaged = a.state.as_ref().map(StateDir::damaged).unwrap_or_default();
    Ok(Json(damaged).into_response())
}

/// Moves a damaged entry to the state directory's `quarantine/` and forgets it: `/ready`
/// stops naming it, and a tenant whose pipeline it was is served like a tenant without
/// one (by `default`'s pipeline).
async fn discard_damaged(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    Path(entry): Path<String>,
) -> Result<Response, Error> {
    caller.require_operator("discard damaged entries (operator only)")?;
    let discarded = match &a.state {
        Some(state) => state.discard_damaged(&entry)?,
        None => false,
    };
    if !discarded {
        return Err(Error::NotDamaged(entry));
    }
    a.policies.forget_damaged(&entry);
    Ok(changed(StatusCode::NO_CONTENT, Some(entry), None))
}

async fn no_route(uri: Uri) -> Error {
    Error::NoRoute(uri.path().to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The paths `router` declares, read from this file's source.
    fn declared_paths() -> BTreeSet<String> {
        let source = include_str!("mod.rs");
        let body = &source[source.find("pub fn router(").expect("router fn")..];
        let body = &body[..body.find("\n}\n").expect("end of router fn")];
        body.split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| s.starts_with("/admin/"))
            .map(|s| s.replace("{*entry}", "{entry}"))
            .collect()
    }

    #[test]
    fn the_openapi_document_lists_every_route_and_no_other() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let documented: BTreeSet<String> =
            doc["paths"].as_object().unwrap().keys().cloned().collect();
        let declared = declared_paths();
        assert!(declared.len() > 15, "{declared:?}");
        assert_eq!(documented, declared);
    }
}
