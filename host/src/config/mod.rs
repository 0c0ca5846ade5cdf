//! The router's config file: read and validated once into a [`Config`].
//!
//! Two layers: `file` holds the serde types exactly as written (unknown fields
//! rejected, defaults as named functions); [`Config`] is the validated form (addresses
//! parsed, durations typed, names unique, weights in range). Validation collects every
//! problem, each naming its field path, so one run shows everything to fix.

mod file;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::HeaderName;

use crate::admin::auth::{self, Credential, Role, TokenSource};
use crate::listener::ListenerLimits;
use crate::names::{CredentialName, PolicyName, TenantName};
use crate::policy::{PipelineSpec, PolicyBudget, PolicyQuota};
use crate::pool::{BackendSpec, PoolSettings};
use crate::state::OnDamagedEntry;

/// Why the config cannot be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: cannot read")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("{path}: {field}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// Path of the offending field, e.g. `backends[1].engine`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The file parsed but some values are wrong; every problem is listed.
    #[error("{path}: {} problem(s):\n  {}", problems.len(), problems.join("\n  "))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// One line per problem, each starting with its field path.
        problems: Vec<String>,
    },
}

/// The validated config. The rest of the router sees only this.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Client API address.
    pub listen: SocketAddr,
    /// The admin API, when enabled.
    pub admin: Option<AdminConfig>,
    /// Connection limits of both listeners.
    pub listeners: ListenersConfig,
    /// Where admin changes persist.
    pub state_dir: Option<PathBuf>,
    /// What start-up does with the state directory's content.
    pub state: StateSettings,
    /// Cluster mode, when configured.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Request handling limits.
    pub proxy: ProxySettings,
    /// Health checks, scraping and circuit breaking.
    pub pool: PoolSettings,
    /// The backends, names unique.
    pub backends: Vec<BackendSpec>,
    /// How tenants are recognised.
    pub auth: AuthConfig,
    /// The tenants, names unique.
    pub tenants: Vec<TenantConfig>,
    /// Policy components to upload at start: (name, file).
    pub policies: Vec<(PolicyName, PathBuf)>,
    /// Budgets every policy call runs under, and how uploads compile.
    pub policy_limits: crate::policy::Limits,
    /// The KV index's settings, tokenizer paths resolved against the file's directory.
    pub kv: switchyard_kv::KvConfig,
}

/// What start-up does with the state directory's content.
#[derive(Debug, Clone, Copy, Default)]
pub struct StateSettings {
    /// What a stored entry that cannot be restored does.
    pub on_damaged_entry: OnDamagedEntry,
}

/// The admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Address.
    pub listen: SocketAddr,
    /// Who may call, names unique, at least one.
    pub credentials: Vec<Credential>,
    /// Backend labels tenants' credentials do not see.
    pub private_labels: Vec<String>,
}

/// Connection limits of the client and admin listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenersConfig {
    /// The client API's.
    pub client: ListenerLimits,
    /// The admin API's.
    pub admin: ListenerLimits,
}

impl Default for ListenersConfig {
    fn default() -> Self {
        ListenersConfig {
            client: ListenerLimits::CLIENT,
            admin: ListenerLimits::ADMIN,
        }
    }
}

/// Request handling limits.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Longest wait for a backend's first body byte per attempt.
    pub attempt_timeout: Duration,
    /// Longest a whole request may take.
    pub request_timeout: Duration,
    /// Most backends tried per request, >= 1.
    pub max_attempts: u32,
    /// Decisions kept for the admin API.
    pub decision_log: usize,
    /// What a prefill/decode split does when its prefill leg fails.
    pub split_fallback: SplitFallback,
    /// Most resumptions of one stream on another backend; 0: never resume.
    pub max_resumes: u32,
    /// Longest a stream may go without a byte from its backend; `None`: no limit.
    pub stream_idle_timeout: Option<Duration>,
    /// Request headers whose values policies receive as labels, with the label names.
    pub label_headers: Vec<(HeaderName, String)>,
    /// Output tokens policies see for a request that names none, >= 1.
    pub default_max_tokens: u32,
}

/// Most `proxy.label_headers`.
pub const MAX_LABEL_HEADERS: usize = 16;

/// What a prefill/decode split does when its prefill leg fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitFallback {
    /// Try the prefill on the next prefill-capable candidate, then serve the whole
    /// request on the decode backend if none succeeds (default).
    #[default]
    Retry,
    /// Serve the whole request on the decode backend at once.
    DecodeOnly,
}

impl Default for PoolSettings {
    /// The config file's defaults.
    fn default() -> Self {
        settings_from(&file::PoolFile::default())
    }
}

/// How tenants are recognised.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Reject requests whose API key belongs to no tenant.
    pub require_api_key: bool,
    /// Header naming the tenant when no key matched.
    pub tenant_header: Option<HeaderName>,
}

/// One tenant.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// Unique name.
    pub name: TenantName,
    /// API keys identifying it.
    pub api_keys: Vec<String>,
    /// Its pipeline, if it has its own.
    pub pipeline: Option<PipelineSpec>,
    /// Most requests in flight at once.
    pub max_concurrent: Option<u32>,
    /// Most requests per second.
    pub requests_per_s: Option<NonZeroU32>,
    /// Most tokens per second.
    pub tokens_per_s: Option<NonZeroU32>,
    /// Limits on the policies stored in its namespace.
    pub policy_quota: PolicyQuota,
    /// Its pipeline's CPU budget; `None`: unlimited.
    pub policy_budget: Option<PolicyBudget>,
    /// Whether its requests carry a per-tenant secret `cache_salt`.
    pub cache_isolation: bool,
}

impl Config {
    /// Reads and validates the YAML file at `path`.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, does not parse, or has invalid values; the error
    /// names the file, the field and the problem.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(path, &text)
    }

    /// Parses and validates `text` as if read from `path`.
    ///
    /// # Errors
    ///
    /// As [`Config::load`], without the read.
    pub fn from_yaml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let raw: file::File = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            ConfigError::Parse {
                path: path.to_path_buf(),
                field: if field == "." { "(top)".into() } else { field },
                message: e.into_inner().to_string(),
            }
        })?;
        let mut problems = Vec::new();
        let config = validate(path, raw, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }
}

/// The runtime's limits with the file's overrides; zero budgets are problems.
fn policy_limits(
    raw: &file::PolicyRuntimeFile,
    problems: &mut Vec<String>,
) -> crate::policy::Limits {
    let defaults = crate::policy::Limits::default();
    for (field, value) in [
        ("fuel_per_call", raw.fuel_per_call),
        ("deadline_ms", raw.deadline_ms),
        ("memory_mib", raw.memory_mib.map(|v| v as u64)),
        ("max_upload_bytes", raw.max_upload_bytes.map(|v| v as u64)),
        ("compile_timeout_ms", raw.compile_timeout_ms),
        (
            "max_calls_per_instance",
            raw.max_calls_per_instance.map(u64::from),
        ),
        (
            "park_after_failures",
            raw.park_after_failures.map(u64::from),
        ),
        ("park_for_ms", raw.park_for_ms),
    ] {
        if value == Some(0) {
            problems.push(format!("policy_runtime.{field}: must be at least 1"));
        }
    }
    crate::policy::Limits {
        fuel_per_call: raw.fuel_per_call.unwrap_or(defaults.fuel_per_call),
        deadline: raw
            .deadline_ms
            .map_or(defaults.deadline, Duration::from_millis),
        memory_bytes: raw
            .memory_mib
            .map_or(defaults.memory_bytes, |m| m.saturating_mul(1 << 20)),
        max_upload_bytes: raw.max_upload_bytes.unwrap_or(defaults.max_upload_bytes),
        compile_timeout: raw
            .compile_timeout_ms
            .map_or(defaults.compile_timeout, Duration::from_millis),
        max_calls_per_instance: raw
            .max_calls_per_instance
            .unwrap_or(defaults.max_calls_per_instance),
        park_after_failures: raw
            .park_after_failures
            .unwrap_or(defaults.park_after_failures),
        park_for: raw
            .park_for_ms
            .map_or(defaults.park_for, Duration::from_millis),
        baseline_tier: raw.baseline_tier.unwrap_or(defaults.baseline_tier),
        ..defaults
    }
}

/// A listener's limits: the file's values over `defaults`; zeros are problems.
fn listener_limits(
    at: &str,
    raw: &file::ListenerFile,
    defaults: ListenerLimits,
    problems: &mut Vec<String>,
) -> ListenerLimits {
    for (field, value) in [
        ("header_read_timeout_ms", raw.header_read_timeout_ms),
        ("body_read_timeout_ms", raw.body_read_timeout_ms),
        ("idle_timeout_ms", raw.idle_timeout_ms),
        ("max_connections", raw.max_connections.map(u64::from)),
    ] {
        if value == Some(0) {
            problems.push(format!("listeners.{at}.{field}: must be at least 1"));
        }
    }
    let ms = |v: Option<u64>, d: Duration| v.filter(|&n| n > 0).map_or(d, Duration::from_millis);
    ListenerLimits {
        header_read_timeout: ms(raw.header_read_timeout_ms, defaults.header_read_timeout),
        body_read_timeout: ms(raw.body_read_timeout_ms, defaults.body_read_timeout),
        idle_timeout: ms(raw.idle_timeout_ms, defaults.idle_timeout),
        max_connections: raw
            .max_connections
            .filter(|&n| n > 0)
            .unwrap_or(defaults.max_connections),
    }
}

fn validate(path: &Path, raw: file::File, problems: &mut Vec<String>) -> Config {
    let listen = parse_addr("listen", &raw.listen, problems);
    let base = path.parent().unwrap_or(Path::new("."));
    let admin = raw.admin.as_ref().map(|a| AdminConfig {
        listen: parse_addr("admin.listen", &a.listen, problems),
        credentials: credentials(a, &raw.tenants, base, problems),
        private_labels: a.private_labels.clone(),
    });
    let listeners = ListenersConfig {
        client: listener_limits(
            "client",
            &raw.listeners.client,
            ListenerLimits::CLIENT,
            problems,
        ),
        admin: listener_limits(
            "admin",
            &raw.listeners.admin,
            ListenerLimits::ADMIN,
            problems,
        ),
    };
    let p = &raw.proxy;
    if p.max_attempts == 0 {
        problems.push("proxy.max_attempts: must be at least 1".into());
    }
    if p.max_body_bytes == 0 {
        problems.push("proxy.max_body_bytes: must be at least 1".into());
    }
    if p.default_max_tokens == 0 {
        problems.push("proxy.default_max_tokens: must be at least 1".into());
    }
    if p.label_headers.len() > MAX_LABEL_HEADERS {
        problems.push(format!(
            "proxy.label_headers: {} headers, at most {MAX_LABEL_HEADERS}",
            p.label_headers.len()
        ));
    }
    let mut label_headers = Vec::new();
    for (header, label) in &p.label_headers {
        match HeaderName::from_bytes(header.as_bytes()) {
            Err(_) => problems.push(format!(
                "proxy.label_headers: `{header}` is not a valid header name"
            )),
            Ok(_)
                if label.is_empty() || label.len() > 63 || label.chars().any(char::is_control) =>
            {
                problems.push(format!(
                    "proxy.label_headers.{header}: the label name must be 1 to 63 printable characters"
                ));
            }
            Ok(name) => label_headers.push((name, label.clone())),
        }
    }
    let proxy = ProxySettings {
        max_body_bytes: p.max_body_bytes,
        attempt_timeout: Duration::from_millis(p.attempt_timeout_ms),
        request_timeout: Duration::from_millis(p.request_timeout_ms),
        max_attempts: p.max_attempts.max(1),
        decision_log: p.decision_log,
        split_fallback: p.split_fallback,
        max_resumes: p.max_resumes,
        stream_idle_timeout: (p.stream_idle_timeout_ms > 0)
            .then(|| Duration::from_millis(p.stream_idle_timeout_ms)),
        label_headers,
        default_max_tokens: p.default_max_tokens.max(1),
    };
    for (field, value) in [
        ("pool.scrape_interval_ms", raw.pool.scrape_interval_ms),
        ("pool.health_interval_ms", raw.pool.health_interval_ms),
        ("pool.probe_timeout_ms", raw.pool.probe_timeout_ms),
        ("pool.unhealthy_after", u64::from(raw.pool.unhealthy_after)),
        (
            "pool.breaker_failures",
            u64::from(raw.pool.breaker_failures),
        ),
    ] {
        if value == 0 {
            problems.push(format!("{field}: must be at least 1"));
        }
    }
    let pool = settings_from(&raw.pool);

    let mut names = BTreeSet::new();
    for (i, b) in raw.backends.iter().enumerate() {
        for problem in b.problems() {
            problems.push(format!("backends[{i}].{problem}"));
        }
        if !names.insert(b.name.as_str()) {
            problems.push(format!("backends[{i}].name: `{}` is used twice", b.name));
        }
    }

    let tenant_header = raw.auth.tenant_header.as_deref().and_then(|h| {
        HeaderName::try_from(h)
            .map_err(|_| problems.push(format!("auth.tenant_header: `{h}` is not a header name")))
            .ok()
    });
    let mut key_owner: HashMap<&str, &TenantName> = HashMap::new();
    let mut tenants = Vec::new();
    for (name, t) in &raw.tenants {
        for key in &t.api_keys {
            if let Some(other) = key_owner.insert(key, name) {
                problems.push(format!(
                    "tenants.{name}.api_keys: a key is also a key of tenant `{other}`"
                ));
            }
        }
        if let Some(spec) = &t.pipeline {
            pipeline_problems(&format!("tenants.{name}.pipeline"), spec, problems);
        }
        let positive = |field: &str, v: Option<u32>, problems: &mut Vec<String>| {
            v.and_then(|n| {
                NonZeroU32::new(n).or_else(|| {
                    problems.push(format!("tenants.{name}.{field}: must be at least 1"));
                    None
                })
            })
        };
        tenants.push(TenantConfig {
            name: name.clone(),
            api_keys: t.api_keys.clone(),
            pipeline: t.pipeline.clone(),
            max_concurrent: positive("max_concurrent", t.max_concurrent, problems).map(u32::from),
            requests_per_s: positive("requests_per_s", t.requests_per_s, problems),
            tokens_per_s: positive("tokens_per_s", t.tokens_per_s, problems),
            policy_quota: t.policy_quota,
            policy_budget: budget(name, t.policy_budget.as_ref(), problems),
            cache_isolation: t.cache_isolation,
        });
    }

    for problem in raw.kv.problems() {
        problems.push(format!("kv.{problem}"));
    }

    let policy_limits = policy_limits(&raw.policy_runtime, problems);
    let cluster = raw.cluster.as_ref().map(|c| {
        if raw.state_dir.is_none() {
            problems.push(
                "cluster: needs `state_dir` (the replica's cache of the shared state)".into(),
            );
        }
        cluster(c, base, problems)
    });
    let policies = raw
        .policies
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let file = base.join(&p.path);
            if !file.is_file() {
                problems.push(format!(
                    "policies[{i}].path: {} is not a readable file",
                    file.display()
                ));
            }
            (p.name.clone(), file)
        })
        .collect();

    Config {
        path: path.to_path_buf(),
        listen,
        admin,
        listeners,
        state_dir: raw.state_dir.map(|d| base.join(d)),
        state: StateSettings {
            on_damaged_entry: raw.state.on_damaged_entry,
        },
        cluster,
        proxy,
        pool,
        backends: raw.backends,
        auth: AuthConfig {
            require_api_key: raw.auth.require_api_key,
            tenant_header,
        },
        tenants,
        policies,
        policy_limits,
        kv: resolve_kv_paths(raw.kv, base),
    }
}

/// Makes the KV section's tokenizer and template paths relative to the config file.
fn resolve_kv_paths(mut kv: switchyard_kv::KvConfig, base: &Path) -> switchyard_kv::KvConfig {
    for m in &mut kv.models {
        m.tokenizer = m.tokenizer.take().map(|t| base.join(t));
        m.chat_template = m.chat_template.take().map(|t| base.join(t));
    }
    kv
}

fn settings_from(p: &file::PoolFile) -> PoolSettings {
    PoolSettings {
        scrape_interval: Duration::from_millis(p.scrape_interval_ms.max(1)),
        stale_after: Duration::from_millis(p.stale_after_ms),
        health_interval: Duration::from_millis(p.health_interval_ms.max(1)),
        probe_timeout: Duration::from_millis(p.probe_timeout_ms.max(1)),
        unhealthy_after: p.unhealthy_after.max(1),
        breaker_failures: p.breaker_failures.max(1),
        breaker_open: Duration::from_millis(p.breaker_open_ms),
    }
}

fn parse_addr(field: &str, value: &str, problems: &mut Vec<String>) -> SocketAddr {
    value.parse().unwrap_or_else(|_| {
        problems.push(format!(
            "{field}: `{value}` is not an address like 127.0.0.1:8080"
        ));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

/// The admin credentials: `token`/`token_env` as the operator `admin`, then the list.
fn credentials(
    a: &file::AdminFile,
    tenants: &std::collections::BTreeMap<TenantName, file::TenantFile>,
    base: &Path,
    problems: &mut Vec<String>,
) -> Vec<Credential> {
    let mut out = Vec::new();
    let env = |field: &str, var: &str, problems: &mut Vec<String>| match std::env::var(var) {
        Ok(t) if !t.is_empty() => Some(t),
        _ => {
            problems.push(format!(
                "{field}: environment variable {var} is not set or empty"
            ));
            None
        }
    };
    let fixed = |field: &str, token: String, problems: &mut Vec<String>| {
        auth::check_token(&token)
            .map_err(|e| problems.push(format!("{field}: {e}")))
            .ok()
            .map(|()| TokenSource::Fixed(token.into()))
    };
    let legacy = match (&a.token, &a.token_env) {
        (Some(t), None) => fixed("admin.token", t.clone(), problems),
        (None, Some(var)) => env("admin.token_env", var, problems)
            .and_then(|t| fixed("admin.token_env", t, problems)),
        (Some(_), Some(_)) => {
            problems.push("admin: give one of token and token_env, not both".into());
            None
        }
        (None, None) => None,
    };
    if let Some(token) = legacy {
        out.push(Credential {
            name: CredentialName::new("admin").expect("a valid name"),
            role: Role::Operator,
            token,
        });
    }
    for (i, c) in a.credentials.iter().enumerate() {
        let at = format!("admin.credentials[{i}]");
        let name = match CredentialName::new(&c.name) {
            Ok(n) => n,
            Err(e) => {
                problems.push(format!("{at}.name: {e}"));
                continue;
            }
        };
        if out.iter().any(|o: &Credential| o.name == name) {
            problems.push(format!("{at}.name: `{name}` is used twice"));
        }
        let token = match (&c.token_env, &c.token_file) {
            (Some(var), None) => env(&format!("{at}.token_env"), var, problems)
                .and_then(|t| fixed(&format!("{at}.token_env"), t, problems)),
            (None, Some(file)) => {
                let file = base.join(file);
                match auth::read_token_file(&file) {
                    Ok(_) => Some(TokenSource::File(file)),
                    Err(e) => {
                        problems.push(format!("{at}.token_file: {}: {e}", file.display()));
                        None
                    }
                }
            }
            _ => {
                problems.push(format!("{at}: give one of token_env and token_file"));
                None
            }
        };
        let role = match (c.role, &c.tenant) {
            (file::RoleFile::Operator, None) => Some(Role::Operator),
            (file::RoleFile::Operator, Some(_)) => {
                problems.push(format!("{at}.tenant: an operator is bound to no tenant"));
                None
            }
            (file::RoleFile::Tenant, Some(t)) if tenants.contains_key(t) => {
                Some(Role::Tenant(t.clone()))
            }
            (file::RoleFile::Tenant, Some(t)) => {
                problems.push(format!("{at}.tenant: `{t}` is not a tenant in `tenants`"));
                None
            }
            (file::RoleFile::Tenant, None) => {
                problems.push(format!("{at}.tenant: a tenant credential names its tenant"));
                None
            }
        };
        if let (Some(token), Some(role)) = (token, role) {
            out.push(Credential { name, role, token });
        }
    }
    if a.token.is_none() && a.token_env.is_none() && a.credentials.is_empty() {
        problems.push("admin: give token, token_env or credentials".into());
    }
    out
}

/// A tenant's policy budget: configured, `unlimited`, or the default.
fn budget(
    tenant: &TenantName,
    raw: Option<&file::BudgetFile>,
    problems: &mut Vec<String>,
) -> Option<PolicyBudget> {
    match raw {
        None => Some(PolicyBudget::DEFAULT),
        Some(file::BudgetFile::Word(w)) if w == "unlimited" => None,
        Some(file::BudgetFile::Word(w)) => {
            problems.push(format!(
                "tenants.{tenant}.policy_budget: `{w}`: give `unlimited` or {{fuel_per_s: N, burst: M}}"
            ));
            None
        }
        Some(file::BudgetFile::Limit { fuel_per_s, burst }) => {
            let burst = burst.unwrap_or(fuel_per_s / 10);
            if *fuel_per_s == 0 || burst == 0 {
                problems.push(format!(
                    "tenants.{tenant}.policy_budget: fuel_per_s and burst must be above 0"
                ));
            }
            Some(PolicyBudget {
                fuel_per_s: *fuel_per_s,
                burst,
            })
        }
    }
}

/// Checks what can be checked of a pipeline without the policy registry: weights and
/// picker parameters. Unknown policies are reported when the pipeline is installed.
fn pipeline_problems(at: &str, spec: &PipelineSpec, problems: &mut Vec<String>) {
    for (i, s) in spec.scorers.iter().enumerate() {
        if !(0.0..=1.0).contains(&s.weight) {
            problems.push(format!(
                "{at}.scorers[{i}].weight: {} is outside [0, 1]",
                s.weight
            ));
        }
    }
    if let crate::policy::Picker::Softmax { temperature } = spec.picker
        && (temperature.is_nan() || temperature <= 0.0)
    {
        problems.push(format!(
            "{at}.picker.temperature: {temperature} must be above 0"
        ));
    }
    if spec.placer.is_some() && !spec.scorers.is_empty() {
        problems.push(format!("{at}: a placer takes no scorers"));
    }
}

/// Validates the `cluster` section.
fn cluster(
    c: &file::ClusterFile,
    base: &Path,
    problems: &mut Vec<String>,
) -> crate::cluster::ClusterConfig {
    use crate::cluster::{ClusterConfig, NatsAuth, NatsTls};
    if c.nats.is_empty() {
        problems.push("cluster.nats: list at least one NATS server URL".into());
    }
    for (i, url) in c.nats.iter().enumerate() {
        if url.parse::<async_nats::ServerAddr>().is_err() {
            problems.push(format!("cluster.nats[{i}]: `{url}` is not a NATS URL"));
        }
    }
    let is_token = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
    };
    if !is_token(&c.name) {
        problems.push(format!("cluster.name: `{}` must be [A-Za-z0-9_-]+", c.name));
    }
    let replica = c.replica.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "replica".into());
        format!("{host}-{}", std::process::id())
    });
    let env = |field: &str, var: &str, problems: &mut Vec<String>| {
        std::env::var(var).unwrap_or_else(|_| {
            problems.push(format!(
                "cluster.{field}: environment variable {var} is not set"
            ));
            String::new()
        })
    };
    let auth = match (&c.credentials_file, &c.user, &c.token_env) {
        (Some(f), None, None) => NatsAuth::CredentialsFile(base.join(f)),
        (None, Some(user), None) => {
            let password = match &c.password_env {
                Some(v) => env("password_env", v, problems),
                None => {
                    problems.push("cluster.user: needs `password_env`".into());
                    String::new()
                }
            };
            NatsAuth::UserPassword {
                user: user.clone(),
                password,
            }
        }
        (None, None, Some(v)) => NatsAuth::Token(env("token_env", v, problems)),
        (None, None, None) => NatsAuth::None,
        _ => {
            problems.push(
                "cluster: give at most one of `credentials_file`, `user`, `token_env`".into(),
            );
            NatsAuth::None
        }
    };
    let client_cert = match (&c.tls.cert_file, &c.tls.key_file) {
        (Some(cert), Some(key)) => Some((base.join(cert), base.join(key))),
        (None, None) => None,
        _ => {
            problems.push("cluster.tls: `cert_file` and `key_file` go together".into());
            None
        }
    };
    let stream_replicas = c
        .stream_replicas
        .unwrap_or(if c.nats.len() >= 3 { 3 } else { 1 });
    if !(1..=5).contains(&stream_replicas) {
        problems.push(format!(
            "cluster.stream_replicas: {stream_replicas} is outside [1, 5]"
        ));
    }
    ClusterConfig {
        nats: c.nats.clone(),
        name: c.name.clone(),
        replica,
        auth,
        tls: NatsTls {
            required: c.tls.required,
            ca_file: c.tls.ca_file.as_ref().map(|f| base.join(f)),
            client_cert,
        },
        stream_replicas,
        connect_timeout: Duration::from_millis(c.connect_timeout_ms),
        load_interval: Duration::from_millis(c.load_interval_ms.max(1)),
        load_expiry: Duration::from_millis(c.load_expiry_ms.max(1)),
    }
}

#[cfg(test)]
mod tests;
