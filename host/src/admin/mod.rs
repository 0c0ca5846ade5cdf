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
use axum::routing::delete;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::Error;

use crate::names::{BackendName, InvalidName, PolicyName, TenantName};
use crate::policy::PolicyVersion;
use crate::policy::{CanarySpec, PipelineSpec, Policies};
use crate::pool::{BackendSpec, BackendStatus, Pool};
use crate::proxy::{DecisionLog, ErrorBody};
use crate::state::StateDir;
use audit::{AuditLog, AuditRecord, Change};
use auth::{Caller, Credentials};
use switchyard_kv::{KvIndex, Prompt, Scope};

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

/// The document's frame: title, the bearer scheme every route needs, and the 401 every
/// operation can answer; the paths and schemas come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard admin API",
        description = "The admin API of the Switchyard router, on its own listener \
(`admin.listen`). Every route, this document included, needs `Authorization: Bearer <token>` \
of a credential: `admin.token`/`admin.token_env` (the operator credential `admin`) or one of \
`admin.credentials`; tokens are compared in constant time. An `operator` may call everything. \
A `tenant` credential may upload and delete policies in its own namespace (`<tenant>/<name>`), \
set, canary, shadow and roll back its own tenant's pipeline (using global policies and its own \
namespace only), and read its own tenant, quota, decisions, policies and audit records, and the \
backends without addresses or private labels; every other call is 403 (`permission_error`) \
naming the missing right. Every call that changes state, and every refusal (401, 403), is \
appended to the audit log before the response leaves. Errors use the OpenAI shape. Changes \
persist to `state_dir` when one is configured. Generated from the router's handlers and types."
    ),
    paths(discard_damaged),
    modifiers(&Frame)
)]
struct ApiDoc;

/// Adds the bearer scheme every route needs.
struct Frame;

impl utoipa::Modify for Frame {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        doc.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// Adds the 401 every operation answers without a valid token.
fn add_unauthorized(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let unauthorized = ResponseBuilder::new()
        .description("No valid token.")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ];
        for op in ops.into_iter().flatten() {
            op.responses
                .responses
                .insert("401".into(), unauthorized.clone().into());
        }
    }
}

/// Every route with its documentation. The damaged-entry discard takes a path with
/// slashes, so it is routed on its own and documented through [`ApiDoc`].
fn routes() -> OpenApiRouter<Admin> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi))
        .routes(routes!(list_backends, add_backend))
        .routes(routes!(get_backend, remove_backend))
        .routes(routes!(drain))
        .routes(routes!(undrain))
        .routes(routes!(kv_stats))
        .routes(routes!(kv_lookup))
        .routes(routes!(list_policies))
        .routes(routes!(upload_global_policy, delete_global_policy))
        .routes(routes!(upload_tenant_policy, delete_tenant_policy))
        .routes(routes!(list_tenants))
        .routes(routes!(quota))
        .routes(routes!(set_pipeline))
        .routes(routes!(set_canary, clear_canary))
        .routes(routes!(set_shadow, clear_shadow))
        .routes(routes!(rollback))
        .routes(routes!(decisions))
        .routes(routes!(audit_records))
        .routes(routes!(list_damaged))
        .route("/admin/state/damaged/{*entry}", delete(discard_damaged))
}

/// The admin API's OpenAPI 3.1 document, generated from the handlers and types: what
/// `GET /admin/openapi.json` serves and `switchyard openapi` prints.
pub fn openapi_document() -> &'static str {
    static DOC: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let (_, mut doc) = routes().split_for_parts();
        add_unauthorized(&mut doc);
        doc.to_pretty_json().expect("the document serializes")
    });
    &DOC
}

/// The admin routes, all behind a credential.
pub fn router(admin: Admin) -> Router {
    let (router, _) = routes().split_for_parts();
    router
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
            replica: None,
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

/// This document.
///
/// The OpenAPI 3.1 document of the admin API, generated from the router's handlers.
#[utoipa::path(get, path = "/admin/openapi.json", responses((status = OK, description = "The document.", body = Object)))]
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi_document(),
    )
        .into_response()
}

/// A backend's status with what the KV index tracks for it. A tenant credential's view
/// has no `url`, `kv_events` or `kv_replay`, and no labels in `admin.private_labels`.
#[derive(serde::Serialize, ToSchema)]
struct BackendView {
    #[serde(flatten)]
    status: BackendStatus,
    /// The KV index's view: mode, blocks tracked, capacity in blocks; `None` when the
    /// backend is not indexed.
    kv: Option<KvOccupancy>,
}

/// What the KV index holds for one backend.
#[derive(serde::Serialize, ToSchema)]
struct KvOccupancy {
    /// `events` (followed through KV events) or `approximate` (from routing).
    mode: switchyard_kv::Mode,
    /// Blocks the index holds for the backend now.
    blocks: u32,
    /// Most blocks it holds before the least recently used are forgotten.
    capacity_blocks: u32,
    /// Prompts held and slots, for an engine that keeps one prompt per slot (llama.cpp).
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_slots: Option<switchyard_kv::PromptSlotStats>,
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
                prompt_slots: s.prompt_slots,
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

/// List backends.
///
/// Every backend with its live state: health, drain, breaker, the router's in-flight counts,
/// the latest scraped engine figures and what the KV index holds for it.
#[utoipa::path(get, path = "/admin/backends", responses((status = OK, description = "Every backend.", body = Vec<BackendView>)))]
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

/// One backend.
#[utoipa::path(get, path = "/admin/backends/{name}", params(("name" = String, Path, description = "The name of the backend.")), responses((status = OK, description = "The backend.", body = BackendView), (status = 400, description = "An invalid name.", body = ErrorBody), (status = 404, description = "No such backend.", body = ErrorBody)))]
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

/// Add a backend.
///
/// Same fields as a `backends` entry of the config file. Persisted. Operators only.
#[utoipa::path(post, path = "/admin/backends", request_body = BackendSpec, responses((status = CREATED, description = "Added.", body = BackendStatus), (status = 400, description = "An invalid spec.", body = ErrorBody), (status = 403, description = "Not an operator.", body = ErrorBody), (status = 409, description = "The name is taken.", body = ErrorBody)))]
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

/// Remove a backend.
///
/// Removes a draining backend; requests in flight to it finish. Operators only.
#[utoipa::path(delete, path = "/admin/backends/{name}", params(("name" = String, Path, description = "The name of the backend.")), responses((status = NO_CONTENT, description = "Removed."), (status = 400, description = "An invalid name.", body = ErrorBody), (status = 403, description = "Not an operator.", body = ErrorBody), (status = 404, description = "No such backend.", body = ErrorBody), (status = 409, description = "It is not draining.", body = ErrorBody)))]
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

/// The KV index, per backend.
///
/// Each indexed backend's figures: its mode (`events` from KV events, `approximate` from
/// routing), blocks held and capacity in blocks, and event, gap and replay counters.
/// Operators only.
#[utoipa::path(get, path = "/admin/kv", responses((status = OK, description = "Every indexed backend.", body = Vec<switchyard_kv::BackendStats>), (status = 403, description = "Not an operator.", body = ErrorBody)))]
async fn kv_stats(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Error> {
    caller.require_operator("read the KV index (operator only)")?;
    Ok(Json(a.kv.stats()).into_response())
}

/// The body of `POST /admin/kv/lookup`: a model and a prompt, as text or chat messages.
#[derive(serde::Deserialize, ToSchema)]
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

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LookupMessage {
    role: String,
    content: String,
}

/// Look up a prompt's cached prefix.
///
/// Tokenizes the prompt with the model's tokenizer and reports, per backend of the model,
/// how many leading tokens the index says it holds. Operators only: it would tell a tenant
/// whether another tenant's prompt is cached.
#[utoipa::path(post, path = "/admin/kv/lookup", request_body = LookupRequest, responses((status = OK, description = "Each backend and its cached prefix.", body = switchyard_kv::PrefixReport), (status = 400, description = "An invalid body, or a prompt the tokenizer refuses.", body = ErrorBody), (status = 403, description = "Not an operator.", body = ErrorBody), (status = 404, description = "A model the index does not know.", body = ErrorBody)))]
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
#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DrainQuery {
    /// After this long, streams still running on the backend move to other backends.
    deadline_ms: Option<u64>,
}

/// Drain a backend.
///
/// The backend gets no new request from the moment this returns; in-flight requests finish
/// (watch `in_flight_requests` reach 0), then it can be removed. With `deadline_ms`, streams
/// still running on it that long after move to other backends by stream resumption.
/// Persisted. Operators only.
#[utoipa::path(post, path = "/admin/backends/{name}/drain", params(("name" = String, Path, description = "The name of the backend."), DrainQuery), responses((status = OK, description = "Draining.", body = BackendStatus), (status = 400, description = "An invalid name or query.", body = ErrorBody), (status = 403, description = "Not an operator.", body = ErrorBody), (status = 404, description = "No such backend.", body = ErrorBody)))]
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

/// End a drain.
///
/// The backend takes new requests again. Persisted. Operators only.
#[utoipa::path(post, path = "/admin/backends/{name}/undrain", params(("name" = String, Path, description = "The name of the backend.")), responses((status = OK, description = "Taking requests.", body = BackendStatus), (status = 400, description = "An invalid name.", body = ErrorBody), (status = 403, description = "Not an operator.", body = ErrorBody), (status = 404, description = "No such backend.", body = ErrorBody)))]
async fn undrain(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
    Name(name): Name<BackendName>,
) -> Result<Response, Error> {
    caller.require_operator(MANAGE_BACKENDS)?;
    let status = a.pool.set_draining(&name, false)?;
    Ok(changed(Json(status), Some("draining".into()), None))
}

/// List policy versions.
///
/// Every registered version, shipped and uploaded, with the `tier` its code is on. A tenant
/// credential sees the global versions and its own namespace's.
#[utoipa::path(get, path = "/admin/policies", responses((status = OK, description = "The versions.", body = Vec<PolicyVersion>)))]
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

/// The body of a policy upload, as the document describes it: the component's bytes.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(
    dead_code,
    reason = "describes the raw body the handler reads as `Bytes`"
)]
struct WasmComponent(Vec<u8>);

/// Query of a policy upload.
#[derive(Debug, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
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

/// Upload a global policy.
///
/// Checks (size, header, imports, world), compiles and, unless `smoke=false`, calls the
/// component once on a synthetic fleet. The version decides as soon as this returns; the
/// optimized code replaces it in the background. The same bytes again are a no-op.
/// Operators only: tenants upload into their namespace.
#[utoipa::path(put, path = "/admin/policies/{name}", params(("name" = String, Path, description = "The name of the policy."), UploadQuery), request_body(content = WasmComponent, content_type = "application/wasm", description = "The bytes of the component."), responses((status = OK, description = "Registered, or already was.", body = PolicyVersion), (status = 400, description = "Refused: size, header, compile, imports, world or smoke call, named.", body = ErrorBody), (status = 403, description = "Not an operator.", body = ErrorBody)))]
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

/// Upload a policy into a tenant's namespace.
///
/// Stored as `<namespace>/<name>`, within the tenant's `policy_quota`; otherwise as the
/// global upload.
#[utoipa::path(put, path = "/admin/policies/{namespace}/{name}", params(("namespace" = String, Path, description = "The tenant whose namespace it is; a tenant credential may name only its own."), ("name" = String, Path, description = "The name of the policy."), UploadQuery), request_body(content = WasmComponent, content_type = "application/wasm", description = "The bytes of the component."), responses((status = OK, description = "Registered, or already was.", body = PolicyVersion), (status = 400, description = "Refused, with the reason.", body = ErrorBody), (status = 403, description = "A namespace of another tenant.", body = ErrorBody), (status = 409, description = "The policy quota of the tenant is full.", body = ErrorBody)))]
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

/// Delete a global policy version.
///
/// Deletes the version and its stored files; refused while any tenant's active, canary or
/// shadow pipeline uses it, or it is the pipeline a rollback would restore. Operators only.
#[utoipa::path(delete, path = "/admin/policies/{name}", params(("name" = String, Path, description = "`<name>@<version>`, the version in full (12 hex digits).")), responses((status = NO_CONTENT, description = "Deleted."), (status = 400, description = "No version named.", body = ErrorBody), (status = 403, description = "Not an operator.", body = ErrorBody), (status = 404, description = "No such version.", body = ErrorBody), (status = 409, description = "In use (the message names the user), or shipped.", body = ErrorBody)))]
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

/// Delete a version from a tenant's namespace.
///
/// As the global delete, within one tenant's namespace.
#[utoipa::path(delete, path = "/admin/policies/{namespace}/{name}", params(("namespace" = String, Path, description = "The tenant whose namespace it is; a tenant credential may name only its own."), ("name" = String, Path, description = "`<name>@<version>`, the version in full (12 hex digits).")), responses((status = NO_CONTENT, description = "Deleted."), (status = 400, description = "No version named.", body = ErrorBody), (status = 403, description = "A namespace of another tenant.", body = ErrorBody), (status = 404, description = "No such version.", body = ErrorBody), (status = 409, description = "In use; the message names the user.", body = ErrorBody)))]
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

/// List tenant pipelines.
///
/// Every tenant with a pipeline: the active one, canary, shadow and history. A tenant
/// credential sees its own tenant only.
#[utoipa::path(get, path = "/admin/tenants", responses((status = OK, description = "The pipelines.", body = Vec<crate::policy::PipelineInfo>)))]
async fn list_tenants(State(a): State<Admin>, Extension(caller): Extension<Caller>) -> Response {
    let visible: Vec<_> = a
        .policies
        .pipelines()
        .into_iter()
        .filter(|p| caller.acts_for(&p.tenant))
        .collect();
    Json(visible).into_response()
}

/// A tenant's quota and budget.
///
/// What the tenant's namespace holds against its `policy_quota`, and its policy CPU budget
/// with the fuel in its bucket now.
#[utoipa::path(get, path = "/admin/tenants/{tenant}/quota", params(("tenant" = String, Path, description = "The tenant; a tenant credential may name only its own.")), responses((status = OK, description = "Usage and budget.", body = crate::policy::TenantUsage), (status = 400, description = "An invalid name.", body = ErrorBody), (status = 403, description = "Another tenant.", body = ErrorBody)))]
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

/// Set a tenant's pipeline.
///
/// Active for new requests at once; requests already deciding keep the version they loaded.
/// The previous pipeline goes to the history; canary and shadow are cleared.
#[utoipa::path(put, path = "/admin/tenants/{tenant}/pipeline", params(("tenant" = String, Path, description = "The tenant; a tenant credential may name only its own.")), request_body = crate::policy::PipelineSpec, responses((status = OK, description = "Installed.", body = crate::policy::PipelineInfo), (status = 400, description = "An invalid name or pipeline, or unknown policies.", body = ErrorBody), (status = 403, description = "Another tenant, or policies of another tenant.", body = ErrorBody)))]
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

/// Set a canary.
///
/// A pipeline deciding `share` of the tenant's requests, chosen by the hash of the request
/// id.
#[utoipa::path(put, path = "/admin/tenants/{tenant}/canary", params(("tenant" = String, Path, description = "The tenant; a tenant credential may name only its own.")), request_body = CanarySpec, responses((status = OK, description = "Installed.", body = crate::policy::PipelineInfo), (status = 400, description = "An invalid name or pipeline, or unknown policies.", body = ErrorBody), (status = 403, description = "Another tenant, or policies of another tenant.", body = ErrorBody), (status = 409, description = "A damaged stored pipeline; set the active pipeline first.", body = ErrorBody)))]
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

/// Clear the canary.
#[utoipa::path(delete, path = "/admin/tenants/{tenant}/canary", params(("tenant" = String, Path, description = "The tenant; a tenant credential may name only its own.")), responses((status = OK, description = "Cleared.", body = crate::policy::PipelineInfo), (status = 400, description = "An invalid name or pipeline, or unknown policies.", body = ErrorBody), (status = 403, description = "Another tenant, or policies of another tenant.", body = ErrorBody), (status = 409, description = "A damaged stored pipeline; set the active pipeline first.", body = ErrorBody)))]
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

/// Set a shadow pipeline.
///
/// Run beside the active one on every request; its decisions are only compared
/// (`switchyard_shadow_disagreements_total`).
#[utoipa::path(put, path = "/admin/tenants/{tenant}/shadow", params(("tenant" = String, Path, description = "The tenant; a tenant credential may name only its own.")), request_body = crate::policy::PipelineSpec, responses((status = OK, description = "Installed.", body = crate::policy::PipelineInfo), (status = 400, description = "An invalid name or pipeline, or unknown policies.", body = ErrorBody), (status = 403, description = "Another tenant, or policies of another tenant.", body = ErrorBody), (status = 409, description = "A damaged stored pipeline; set the active pipeline first.", body = ErrorBody)))]
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

/// Clear the shadow.
#[utoipa::path(delete, path = "/admin/tenants/{tenant}/shadow", params(("tenant" = String, Path, description = "The tenant; a tenant credential may name only its own.")), responses((status = OK, description = "Cleared.", body = crate::policy::PipelineInfo), (status = 400, description = "An invalid name or pipeline, or unknown policies.", body = ErrorBody), (status = 403, description = "Another tenant, or policies of another tenant.", body = ErrorBody), (status = 409, description = "A damaged stored pipeline; set the active pipeline first.", body = ErrorBody)))]
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

/// Roll back.
///
/// Restores the tenant's previous active pipeline.
#[utoipa::path(post, path = "/admin/tenants/{tenant}/rollback", params(("tenant" = String, Path, description = "The tenant; a tenant credential may name only its own.")), responses((status = OK, description = "Rolled back.", body = crate::policy::PipelineInfo), (status = 400, description = "An invalid name or pipeline, or unknown policies.", body = ErrorBody), (status = 403, description = "Another tenant, or policies of another tenant.", body = ErrorBody), (status = 409, description = "No earlier pipeline, or a damaged stored one.", body = ErrorBody)))]
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
#[derive(Debug, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
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

/// Recent decisions.
///
/// The newest decisions from a bounded ring (`proxy.decision_log`), with every candidate's
/// live figures and score, filter exclusions and any policy fault. A tenant credential sees
/// its own tenant's only.
#[utoipa::path(get, path = "/admin/decisions", params(DecisionsQuery), responses((status = OK, description = "Newest first.", body = Vec<crate::proxy::DecisionRecord>), (status = 400, description = "An invalid query.", body = ErrorBody), (status = 403, description = "Another tenant.", body = ErrorBody)))]
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
#[derive(Debug, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Records at or after this time (RFC 3339), oldest first; without it, the newest.
    since: Option<String>,
    /// Most records returned. Default 100.
    #[serde(default = "default_limit")]
    limit: usize,
}

/// The audit log.
///
/// With `since`, the first `limit` records at or after it; without, the newest `limit`.
/// Operators see all records, a tenant credential those of its own tenant.
#[utoipa::path(get, path = "/admin/audit", params(AuditQuery), responses((status = OK, description = "Oldest first.", body = Vec<audit::AuditRecord>), (status = 400, description = "An invalid query.", body = ErrorBody)))]
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
    let records = tokio::task::spawn_blocking(move || log.query(since, q.limit, own.as_deref()))
        .await?
        .map_err(Error::Audit)?;
    Ok(Json(records).into_response())
}

/// Damaged stored entries.
///
/// Stored entries that could not be restored at start. While any is listed, `/ready`
/// answers 503 naming them, and a tenant whose pipeline is damaged gets 503 for every
/// request. Operators only.
#[utoipa::path(get, path = "/admin/state/damaged", responses((status = OK, description = "The damaged entries.", body = Vec<crate::state::DamagedEntry>), (status = 403, description = "Not an operator.", body = ErrorBody)))]
async fn list_damaged(
    State(a): State<Admin>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, Error> {
    caller.require_operator("read the state directory's damaged entries (operator only)")?;
    let damaged = a.state.as_ref().map(StateDir::damaged).unwrap_or_default();
    Ok(Json(damaged).into_response())
}

/// Discard a damaged entry.
///
/// Moves it to `quarantine/` in the state directory and forgets it: `/ready` stops naming
/// it, and a tenant whose pipeline it was is served like a tenant without one (by
/// `default`'s pipeline). Operators only.
#[utoipa::path(delete, path = "/admin/state/damaged/{entry}", params(("entry" = String, Path, description = "The entry as listed, e.g. `tenants/acme.json` (slashes included).")), responses((status = NO_CONTENT, description = "Discarded."), (status = 403, description = "Not an operator.", body = ErrorBody), (status = 404, description = "The entry is not damaged.", body = ErrorBody)))]
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
