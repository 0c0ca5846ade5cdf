//! The config file as written: serde types with `deny_unknown_fields` everywhere and
//! defaults as named functions beside each struct. [`super::Config`] is built from it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::names::{PolicyName, TenantName};
use crate::policy::{PipelineSpec, PolicyQuota};
use crate::pool::BackendSpec;
use crate::state::OnDamagedEntry;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    /// Client API address. Default `127.0.0.1:8080`. Example: `listen: 0.0.0.0:8080`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The admin API; absent means no admin listener.
    pub admin: Option<AdminFile>,
    /// Where admin changes persist; absent means they are lost on restart.
    /// Example: `state_dir: /var/lib/switchyard`.
    pub state_dir: Option<PathBuf>,
    /// Connection limits of the client and admin listeners.
    #[serde(default)]
    pub listeners: ListenersFile,
    /// What start-up does with what it finds in `state_dir`.
    #[serde(default)]
    pub state: StateFile,
    /// Running as one of several replicas sharing admin state and routing signals
    /// through NATS JetStream; absent: alone with `state_dir`, as ever.
    /// Example: `cluster: {nats: [nats://127.0.0.1:4222], name: prod}`.
    pub cluster: Option<ClusterFile>,
    /// Request handling limits.
    #[serde(default)]
    pub proxy: ProxyFile,
    /// Health checks, scraping and circuit breaking.
    #[serde(default)]
    pub pool: PoolFile,
    /// The backends.
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
    /// How tenants are recognised.
    #[serde(default)]
    pub auth: AuthFile,
    /// Tenants by name: `[A-Za-z0-9][A-Za-z0-9._-]{0,62}`, no `..`.
    #[serde(default)]
    pub tenants: BTreeMap<TenantName, TenantFile>,
    /// Policy components to upload at start.
    #[serde(default)]
    pub policies: Vec<PolicyFile>,
    /// Budgets every policy call runs under, and how uploads compile.
    #[serde(default)]
    pub policy_runtime: PolicyRuntimeFile,
    /// The KV-cache prefix index: models' tokenizers, extra event settings. Backends with
    /// a `kv_events` endpoint are followed precisely; the others in approximate mode.
    #[serde(default)]
    pub kv: switchyard_kv::KvConfig,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

/// What start-up does with what it finds in the state directory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StateFile {
    /// A stored entry that cannot be restored: `refuse` (default) makes `/ready`
    /// answer 503 naming it, and refuses the requests of a tenant whose pipeline it is,
    /// until an admin call fixes or discards it; `skip` logs, counts and ignores it.
    /// Example: `state: {on_damaged_entry: skip}`.
    #[serde(default)]
    pub on_damaged_entry: OnDamagedEntry,
}

/// The `cluster` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterFile {
    /// NATS server URLs, at least one; the client fails over between them.
    /// Example: `nats: [nats://10.0.0.1:4222, nats://10.0.0.2:4222, nats://10.0.0.3:4222]`.
    pub nats: Vec<String>,
    /// The cluster's name, `[A-Za-z0-9_-]+`: replicas with the same name share state; it
    /// names the buckets (`switchyard-<name>-state`) and subjects. Example: `name: prod`.
    pub name: String,
    /// This replica's id, unique in the cluster. Default: `<host name>-<pid>`.
    /// Example: `replica: router-a`.
    pub replica: Option<String>,
    /// A NATS `.creds` file (JWT and NKey seed). Example: `credentials_file: /etc/nats/router.creds`.
    pub credentials_file: Option<PathBuf>,
    /// NATS user, with `password_env`. Example: `user: switchyard`.
    pub user: Option<String>,
    /// Environment variable holding the NATS password. Example: `password_env: NATS_PASSWORD`.
    pub password_env: Option<String>,
    /// Environment variable holding a NATS token. Example: `token_env: NATS_TOKEN`.
    pub token_env: Option<String>,
    /// TLS towards NATS.
    #[serde(default)]
    pub tls: ClusterTlsFile,
    /// JetStream replicas of each bucket. Default: 3 when `nats` lists 3 or more
    /// servers, else 1. Example: `stream_replicas: 3`.
    pub stream_replicas: Option<usize>,
    /// How long start-up waits for NATS, milliseconds. Default 10000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How often this replica publishes its in-flight load, milliseconds. Default 25.
    #[serde(default = "default_load_interval_ms")]
    pub load_interval_ms: u64,
    /// How long another replica's load report counts, milliseconds. Default 1000: a
    /// replica that dies stops counting within a second.
    #[serde(default = "default_load_expiry_ms")]
    pub load_expiry_ms: u64,
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_load_interval_ms() -> u64 {
    25
}
fn default_load_expiry_ms() -> u64 {
    1000
}

/// TLS towards NATS.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterTlsFile {
    /// Refuse NATS servers that do not speak TLS. Default false (TLS when the server
    /// asks for it). Example: `required: true`.
    #[serde(default)]
    pub required: bool,
    /// Extra root certificates to trust, PEM. Example: `ca_file: /etc/nats/ca.pem`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate, PEM, with `key_file`. Example: `cert_file: /etc/nats/router.pem`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's key, PEM. Example: `key_file: /etc/nats/router-key.pem`.
    pub key_file: Option<PathBuf>,
}

/// The admin listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminFile {
    /// Admin API address. Default `127.0.0.1:8081`.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// The bearer token, literally. Prefer `token_env`.
    pub token: Option<String>,
    /// Environment variable holding the bearer token. Example: `token_env: SWITCHYARD_ADMIN_TOKEN`.
    /// `token`/`token_env` make the operator credential named `admin`; optional when
    /// `credentials` are given.
    pub token_env: Option<String>,
    /// Named credentials, each with a role. Example:
    /// `credentials: [{name: acme-ci, token_env: ACME_TOKEN, role: tenant, tenant: acme}]`.
    #[serde(default)]
    pub credentials: Vec<CredentialFile>,
    /// Backend labels tenants' credentials do not see in `GET /admin/backends`.
    /// Example: `private_labels: [rack, cost-center]`.
    #[serde(default)]
    pub private_labels: Vec<String>,
}

/// One admin credential.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CredentialFile {
    /// Its name, as the audit log records it. Example: `name: platform-ops`.
    pub name: String,
    /// Environment variable holding its token (at least 16 bytes).
    pub token_env: Option<String>,
    /// File holding its token (at least 16 bytes, surrounding whitespace ignored),
    /// re-read when it changes, for rotation. Relative to the config file.
    pub token_file: Option<PathBuf>,
    /// `operator` (everything) or `tenant` (its own tenant only).
    pub role: RoleFile,
    /// The tenant a `tenant` credential is bound to; it must be configured in `tenants`.
    pub tenant: Option<TenantName>,
}

/// A credential's role, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RoleFile {
    /// Everything.
    Operator,
    /// One tenant's own policies, pipelines, decisions and audit records.
    Tenant,
}

fn default_admin_listen() -> String {
    "127.0.0.1:8081".into()
}

/// Connection limits, per listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenersFile {
    /// The client API's listener (`listen`).
    #[serde(default)]
    pub client: ListenerFile,
    /// The admin API's listener (`admin.listen`).
    #[serde(default)]
    pub admin: ListenerFile,
}

/// One listener's limits; each absent field keeps the listener's default
/// ([`crate::listener::ListenerLimits::CLIENT`], [`crate::listener::ListenerLimits::ADMIN`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerFile {
    /// Longest a connection may take to send a request head, milliseconds. Default 10000.
    pub header_read_timeout_ms: Option<u64>,
    /// Longest a request body may take to arrive after its head, milliseconds.
    /// Default 30000.
    pub body_read_timeout_ms: Option<u64>,
    /// Longest a connection may stay open with no request in flight, milliseconds.
    /// Default 10000.
    pub idle_timeout_ms: Option<u64>,
    /// Most connections open at once; more are answered 503 and closed. Default 4096
    /// (client), 64 (admin).
    pub max_connections: Option<u32>,
}

/// Request handling limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProxyFile {
    /// Largest request body, bytes. Default 4 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Longest wait for a backend's first body byte before the attempt counts as failed
    /// and another backend is tried, milliseconds. Default 60000.
    #[serde(default = "default_attempt_timeout_ms")]
    pub attempt_timeout_ms: u64,
    /// Longest a whole request may take, streaming included, milliseconds. Default 600000.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Most backends tried for one request. Default 3.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Recent decisions kept for `GET /admin/decisions`. Default 1024.
    #[serde(default = "default_decision_log")]
    pub decision_log: usize,
    /// When the prefill leg of a prefill/decode split fails: `retry` it on the next
    /// prefill-capable candidate, then serve the whole request on the decode backend
    /// (default), or `decode_only`: serve it there at once.
    /// Example: `split_fallback: decode_only`.
    #[serde(default)]
    pub split_fallback: super::SplitFallback,
    /// Most times one streamed response is resumed on another backend after its backend
    /// failed mid-stream (or was drained); 0 turns resumption off. Default 2.
    #[serde(default = "default_max_resumes")]
    pub max_resumes: u32,
    /// Longest a stream may go without a byte from its backend before the backend counts
    /// as stalled and the stream is resumed elsewhere (or ends with an error event),
    /// milliseconds; 0: no limit. Default 30000.
    #[serde(default = "default_stream_idle_timeout_ms")]
    pub stream_idle_timeout_ms: u64,
    /// Request headers whose values policies receive as labels, header name -> label
    /// name (the `labels` of the policy's request). At most 16. Example:
    /// `label_headers: {x-data-class: data-class}`.
    #[serde(default)]
    pub label_headers: BTreeMap<String, String>,
    /// The output tokens policies see for a request that sets neither `max_tokens` nor
    /// `max_completion_tokens` (or sets 0), >= 1. Default 1024.
    #[serde(default = "default_default_max_tokens")]
    pub default_max_tokens: u32,
}

impl Default for ProxyFile {
    fn default() -> Self {
        ProxyFile {
            max_body_bytes: default_max_body_bytes(),
            attempt_timeout_ms: default_attempt_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            max_attempts: default_max_attempts(),
            decision_log: default_decision_log(),
            split_fallback: super::SplitFallback::default(),
            max_resumes: default_max_resumes(),
            stream_idle_timeout_ms: default_stream_idle_timeout_ms(),
            label_headers: BTreeMap::new(),
            default_max_tokens: default_default_max_tokens(),
        }
    }
}

fn default_max_body_bytes() -> usize {
    4 << 20
}
fn default_attempt_timeout_ms() -> u64 {
    60_000
}
fn default_request_timeout_ms() -> u64 {
    600_000
}
fn default_max_attempts() -> u32 {
    3
}
fn default_decision_log() -> usize {
    1024
}
fn default_max_resumes() -> u32 {
    2
}
fn default_stream_idle_timeout_ms() -> u64 {
    30_000
}

fn default_default_max_tokens() -> u32 {
    1024
}

/// The policy runtime's budgets; each absent field keeps the runtime's default
/// ([`crate::policy::Limits`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyRuntimeFile {
    /// Fuel (about one per Wasm instruction) one call may use. Default 10000000.
    pub fuel_per_call: Option<u64>,
    /// Wall-clock backstop per call, milliseconds. Default 100.
    pub deadline_ms: Option<u64>,
    /// Linear memory per policy instance, MiB. Default 32.
    pub memory_mib: Option<usize>,
    /// Largest accepted policy upload, bytes. Default 33554432 (32 MiB: a Python policy
    /// carries its interpreter).
    pub max_upload_bytes: Option<usize>,
    /// Longest an upload may take to compile, milliseconds. Default 10000.
    pub compile_timeout_ms: Option<u64>,
    /// Calls after which a warm instance is retired. Default 10000.
    pub max_calls_per_instance: Option<u32>,
    /// Consecutive failures after which a policy is parked. Default 5.
    pub park_after_failures: Option<u32>,
    /// How long a parked policy stays parked before one trial call: a success unparks
    /// it, a failure parks it for another period. Milliseconds. Default 30000.
    pub park_for_ms: Option<u64>,
    /// Serve uploads on baseline-compiled (Winch) code while the optimized code compiles.
    /// Default true.
    pub baseline_tier: Option<bool>,
}

/// Health checks, scraping and circuit breaking.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PoolFile {
    /// Interval between `/metrics` scrapes, milliseconds. Default 100.
    #[serde(default = "default_scrape_interval_ms")]
    pub scrape_interval_ms: u64,
    /// Age after which scraped figures count as stale and are not used, milliseconds.
    /// Default 1000.
    #[serde(default = "default_stale_after_ms")]
    pub stale_after_ms: u64,
    /// Interval between health checks, milliseconds. Default 1000.
    #[serde(default = "default_health_interval_ms")]
    pub health_interval_ms: u64,
    /// Timeout of one scrape or health check, milliseconds. Default 500.
    #[serde(default = "default_probe_timeout_ms")]
    pub probe_timeout_ms: u64,
    /// Consecutive failed health checks that mark a backend down. Default 2.
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after: u32,
    /// Consecutive failed requests that open a backend's circuit. Default 5.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open circuit stays open before one trial request, milliseconds.
    /// Default 5000.
    #[serde(default = "default_breaker_open_ms")]
    pub breaker_open_ms: u64,
}

impl Default for PoolFile {
    fn default() -> Self {
        PoolFile {
            scrape_interval_ms: default_scrape_interval_ms(),
            stale_after_ms: default_stale_after_ms(),
            health_interval_ms: default_health_interval_ms(),
            probe_timeout_ms: default_probe_timeout_ms(),
            unhealthy_after: default_unhealthy_after(),
            breaker_failures: default_breaker_failures(),
            breaker_open_ms: default_breaker_open_ms(),
        }
    }
}

fn default_scrape_interval_ms() -> u64 {
    100
}
fn default_stale_after_ms() -> u64 {
    1000
}
fn default_health_interval_ms() -> u64 {
    1000
}
fn default_probe_timeout_ms() -> u64 {
    500
}
fn default_unhealthy_after() -> u32 {
    2
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open_ms() -> u64 {
    5000
}

/// How tenants are recognised.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthFile {
    /// Reject requests whose `Authorization: Bearer` key belongs to no tenant. Default false.
    #[serde(default)]
    pub require_api_key: bool,
    /// A header naming the tenant, used when no API key matched (and keys are not
    /// required). Example: `tenant_header: x-tenant`.
    pub tenant_header: Option<String>,
}

/// One tenant.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantFile {
    /// API keys identifying the tenant.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// The tenant's pipeline; absent means the `default` tenant's.
    pub pipeline: Option<PipelineSpec>,
    /// Most requests in flight at once.
    pub max_concurrent: Option<u32>,
    /// Most requests per second (with a burst of the same size).
    pub requests_per_s: Option<u32>,
    /// Most tokens (estimated prompt plus `max_tokens`) per second.
    pub tokens_per_s: Option<u32>,
    /// Limits on the policies stored in its namespace (`<tenant>/<name>`). Default
    /// `{versions: 20, bytes: 67108864}`.
    #[serde(default)]
    pub policy_quota: PolicyQuota,
    /// Its pipeline's CPU budget, a token bucket of Wasm fuel: `{fuel_per_s: N, burst: M}`
    /// (burst defaults to a tenth of a second's fuel) or `unlimited`. Default
    /// `{fuel_per_s: 250000000}`, about a quarter of one core.
    pub policy_budget: Option<BudgetFile>,
    /// Add a per-tenant secret `cache_salt` to its forwarded requests and key the KV index
    /// with it, so no other tenant hits or observes its cached prefixes. Default false.
    #[serde(default)]
    pub cache_isolation: bool,
}

/// A policy CPU budget, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum BudgetFile {
    /// `unlimited`.
    Word(String),
    /// `{fuel_per_s: N, burst: M}`.
    Limit {
        /// Fuel added per second.
        fuel_per_s: u64,
        /// Most fuel held. Default `fuel_per_s / 10`.
        burst: Option<u64>,
    },
}

/// A policy component to upload at start.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    /// Name to register it under: `[A-Za-z0-9][A-Za-z0-9._-]{0,62}`, no `..`.
    /// Example: `name: eu-only`.
    pub name: PolicyName,
    /// Path of the `.wasm` component, relative to the config file.
    pub path: PathBuf,
}
