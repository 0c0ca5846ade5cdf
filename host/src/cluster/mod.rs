//! Cluster mode: several replicas of the router sharing their admin state and routing
//! signals through NATS JetStream, so any replica can take any request or admin call.
//!
//! - [`Cluster`] owns the NATS connection, its link gauge and the cluster's metrics;
//!   [`Cluster::connect`] connects, creates or opens the buckets and returns once the
//!   link is up.
//! - [`AdminStore`] (`admin_store.rs`): the shared admin state. Pipelines, policy
//!   metadata, added, drained and removed backends and the cache-salt secret are
//!   entries of a JetStream KV bucket, written
//!   with a compare-and-set on the entry's revision; component bytes live in a JetStream
//!   object store. Every replica watches the bucket and applies changes in revision
//!   order; the local state directory is a cache of it.
//! - [`AuditStream`] (`audit_stream.rs`): the audit records of every replica, in one
//!   JetStream stream, so any replica's `GET /admin/audit` shows the whole cluster's.
//! - [`Signals`] (`signals.rs`): routing signals over core NATS subjects, off the request
//!   path: each replica's in-flight load per backend, published every `load_interval`
//!   and summed into what policies see; and approximate-mode KV records, batched and
//!   applied to the other replicas' indexes.
//!
//! Precise KV mode needs nothing shared: every replica subscribes to the engines' events.
//! Without a `cluster` section none of this runs and the router is alone with its state
//! directory.

mod admin_store;
mod audit_stream;
mod signals;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use admin_store::{AdminStore, Change};
pub use audit_stream::AuditStream;

use crate::names::TenantName;
use crate::policy::Policies;
use crate::pool::{Pool, SharedChange};
use crate::state::StateDir;
pub use signals::Signals;
use switchyard_kv::KvIndex;

/// The validated `cluster` section.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URLs, at least one.
    pub nats: Vec<String>,
    /// The cluster's name: replicas with the same name share state. `[A-Za-z0-9_-]+`.
    pub name: String,
    /// This replica's id, unique in the cluster.
    pub replica: String,
    /// How to authenticate to NATS.
    pub auth: NatsAuth,
    /// TLS towards NATS.
    pub tls: NatsTls,
    /// JetStream replicas of each bucket (3 on a 3-node NATS cluster).
    pub stream_replicas: usize,
    /// How long start-up waits for NATS before giving up.
    pub connect_timeout: Duration,
    /// How often this replica publishes its in-flight load.
    pub load_interval: Duration,
    /// How long another replica's load counts after its last report.
    pub load_expiry: Duration,
}

/// How the router authenticates to NATS.
#[derive(Debug, Clone, Default)]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// A `.creds` file (JWT and NKey seed).
    CredentialsFile(PathBuf),
    /// User and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A token.
    Token(String),
}

/// TLS towards NATS; with none of the fields set, TLS is used only when the server asks.
#[derive(Debug, Clone, Default)]
pub struct NatsTls {
    /// Refuse to talk to NATS without TLS.
    pub required: bool,
    /// Extra root certificates (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), for servers that verify clients.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No NATS server answered within the connect timeout.
    #[error("cannot connect to NATS at {urls} within {timeout_ms} ms")]
    Connect {
        /// The configured URLs.
        urls: String,
        /// The configured timeout.
        timeout_ms: u128,
        /// The last failure, when there was one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A bucket or subscription could not be set up.
    #[error("cannot set up {what} in JetStream")]
    Setup {
        /// The bucket or subject.
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The cluster's metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClusterMetrics {
    /// 1 while the NATS link is up.
    pub link_up: Gauge,
    /// Changes from other replicas applied (admin entries and KV-record batches).
    pub applied: Counter,
    /// Changes from other replicas that could not be applied.
    pub failed: Counter,
    /// Admin writes refused: another replica's change won (409).
    pub conflicts: Counter,
    /// Times the NATS link came back after a loss; the shared-state watch restarts on
    /// each (its consumer may have lived on the server that went away).
    pub reconnects: Counter,
}

/// A replica's membership in the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    client: async_nats::Client,
    metrics: ClusterMetrics,
    store: AdminStore,
}

impl Cluster {
    /// Connects to NATS (retrying until `connect_timeout`) and opens the shared buckets,
    /// creating them on first use. Reconnection afterwards is automatic; the link state
    /// is logged and kept in `switchyard_cluster_link_up`.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] when no server answers in time; [`Error::Setup`] when the
    /// buckets cannot be created (JetStream off, fewer nodes than `stream_replicas`).
    pub async fn connect(config: ClusterConfig) -> Result<Cluster, Error> {
        let metrics = ClusterMetrics::default();
        let client = connect_nats(&config, &metrics).await?;
        let store = AdminStore::open(&config, client.clone(), metrics.clone()).await?;
        tracing::info!(
            cluster = %config.name,
            replica = %config.replica,
            nats = %config.nats.join(","),
            "joined the cluster"
        );
        Ok(Cluster {
            inner: Arc::new(Inner {
                config,
                client,
                metrics,
                store,
            }),
        })
    }

    /// The shared admin store.
    pub fn store(&self) -> &AdminStore {
        &self.inner.store
    }

    /// The NATS client.
    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The cluster's settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    pub(crate) fn metrics(&self) -> &ClusterMetrics {
        &self.inner.metrics
    }

    /// Registers the cluster's metrics with `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.inner.metrics;
        registry.register(
            "switchyard_cluster_link_up",
            "1 while this replica's link to NATS is up; 0 while it routes on its last state",
            m.link_up.clone(),
        );
        registry.register(
            "switchyard_cluster_applied",
            "Changes from other replicas applied (admin entries, KV-record batches)",
            m.applied.clone(),
        );
        registry.register(
            "switchyard_cluster_apply_failed",
            "Changes from other replicas that could not be applied",
            m.failed.clone(),
        );
        registry.register(
            "switchyard_cluster_conflicts",
            "Admin writes refused because another replica changed the entry first (409)",
            m.conflicts.clone(),
        );
        registry.register(
            "switchyard_cluster_reconnects",
            "Times the link to NATS came back after a loss",
            m.reconnects.clone(),
        );
    }
}

/// Connects with the configured credentials, retrying until the timeout; reconnects
/// quickly afterwards (at most a second apart) so a replica resyncs soon after NATS is
/// back.
async fn connect_nats(
    config: &ClusterConfig,
    metrics: &ClusterMetrics,
) -> Result<async_nats::Client, Error> {
    let urls = config.nats.join(",");
    let fail = |source: Option<Box<dyn std::error::Error + Send + Sync>>| Error::Connect {
        urls: urls.clone(),
        timeout_ms: config.connect_timeout.as_millis(),
        source,
    };
    let was_up = Arc::new(AtomicBool::new(false));
    let link_up = metrics.link_up.clone();
    let reconnects = metrics.reconnects.clone();
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("switchyard {}/{}", config.name, config.replica))
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_millis(500))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64 * 100).min(1000))
        })
        .event_callback(move |event| {
            let was_up = was_up.clone();
            let link_up = link_up.clone();
            let reconnects = reconnects.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        link_up.set(1);
                        if !was_up.swap(true, Ordering::SeqCst) {
                            tracing::info!("cluster link up");
                        } else {
                            reconnects.inc();
                            tracing::info!("cluster link back up");
                        }
                    }
                    async_nats::Event::Disconnected => {
                        link_up.set(0);
                        tracing::warn!(
                            "cluster link down: routing on the last state, admin changes refused"
                        );
                    }
                    other => tracing::debug!(event = %other, "nats event"),
                }
            }
        });
    options = match &config.auth {
        NatsAuth::None => options,
        NatsAuth::CredentialsFile(path) => options
            .credentials_file(path)
            .await
            .map_err(|e| fail(Some(Box::new(e))))?,
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
        NatsAuth::Token(t) => options.token(t.clone()),
    };
    if config.tls.required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &config.tls.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &config.tls.client_cert {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let client = options
        .connect(config.nats.as_slice())
        .await
        .map_err(|e| fail(Some(Box::new(e))))?;
    // NB: with `retry_on_initial_connect` the client returns at once and connects in the
    // background; start-up waits for the link, within the timeout.
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    while client.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() >= deadline {
            return Err(fail(None));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    metrics.link_up.set(1);
    Ok(client)
}

/// Runs a JetStream call from a blocking context (an admin call's thread) on `runtime`,
/// within `timeout`; refused at once while the link is down. The error says why, for an
/// operator.
fn block_on_jetstream<T, E: std::fmt::Display>(
    client: &async_nats::Client,
    runtime: &tokio::runtime::Handle,
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    if !is_connected(client) {
        return Err("not connected to NATS".into());
    }
    let call = tokio::time::timeout(timeout, f);
    // NB: admin writes run on blocking threads; `block_in_place` also covers a call made
    // on a runtime worker (it hands the worker's other tasks away first).
    match tokio::task::block_in_place(|| runtime.block_on(call)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer from JetStream within {timeout:?}")),
    }
}

/// Whether the NATS link is up now.
fn is_connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

impl Cluster {
    /// Applies the admin changes other replicas make, from where [`AdminStore::sync`]
    /// left off: pipelines and policies through `policies`, backends through `pool` and
    /// `kv` (each under its writer lock), anything else into `state`.
    pub fn follow(&self, state: StateDir, policies: Policies, pool: Pool, kv: KvIndex) {
        self.store().follow(move |change| {
            let rel = change.rel.as_str();
            let backend = rel
                .strip_prefix("backends/")
                .and_then(|f| f.strip_suffix(".json"))
                .or_else(|| rel.strip_prefix("removed-backends/"));
            if let Some(name) = backend {
                let name = name.to_string();
                match pool.apply_shared(&name, || change.commit(&state))? {
                    SharedChange::Added(spec) => {
                        if let Some(b) = spec.kv_backend() {
                            kv.add_backend(&b).map_err(|e| e.to_string())?;
                        }
                    }
                    SharedChange::Removed => {
                        let _ = kv.remove_backend(&name);
                    }
                    SharedChange::Updated | SharedChange::Unchanged => {}
                }
                return Ok(());
            }
            if let Some(tenant) = rel
                .strip_prefix("tenants/")
                .and_then(|f| f.strip_suffix(".json"))
            {
                let tenant = TenantName::new(tenant).map_err(|e| e.to_string())?;
                return policies.apply_shared_pipeline(&tenant, || change.commit(&state));
            }
            if let Some(base) = rel
                .strip_prefix("policies/")
                .and_then(|f| f.strip_suffix(".json"))
            {
                return policies.apply_shared_policy(base, || change.commit(&state));
            }
            change.commit(&state).map_err(|e| format!("{e:#}"))
        });
    }
}
