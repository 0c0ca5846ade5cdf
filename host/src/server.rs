//! Assembling and running the router from a [`Config`]: the pool, the policy runtime,
//! the metrics registry, the client and admin listeners, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::admin::audit::AuditLog;
use crate::admin::auth::Credentials;
use tokio::net::TcpListener;

use crate::cluster::{AuditStream, Cluster, ClusterConfig, Signals};
use crate::config::Config;
use crate::listener::{self, ListenerLimits, ListenerMetrics};
use crate::names::{PolicyName, TenantName};
use crate::policy::Policies;
use crate::pool::{Pool, PoolCollector};
use crate::proxy::{App, AppParts, DecisionLog, Tenants};
use crate::state::StateDir;
use crate::telemetry::ProxyMetrics;
use crate::{admin, policy, proxy};
use switchyard_kv::{self as kv, KvIndex};

/// Why the router could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The state directory cannot be opened.
    #[error(transparent)]
    State(#[from] crate::state::Error),
    /// The policy runtime failed to start.
    #[error("policy runtime")]
    Policies(#[source] Box<policy::Error>),
    /// A policy listed in the config cannot be loaded.
    #[error("{config}: policies: `{name}` from {file}")]
    Policy {
        /// The config file.
        config: String,
        /// The policy name.
        name: PolicyName,
        /// Its component file.
        file: String,
        /// Why.
        #[source]
        source: PolicyLoadError,
    },
    /// A tenant's configured pipeline cannot be installed.
    #[error("{config}: tenants.{tenant}.pipeline")]
    Pipeline {
        /// The config file.
        config: String,
        /// The tenant.
        tenant: TenantName,
        /// Why.
        #[source]
        source: Box<policy::Error>,
    },
    /// The KV index cannot start (a tokenizer file, an endpoint).
    #[error("kv index")]
    Kv(#[source] Box<switchyard_kv::Error>),
    /// A listener cannot be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Cluster mode could not start.
    #[error("cluster")]
    Cluster(#[source] crate::cluster::Error),
    /// The audit log cannot be opened.
    #[error("cannot open the audit log")]
    Audit(#[source] std::io::Error),
    /// A start-up task died.
    #[error("start-up task failed")]
    Task(#[from] tokio::task::JoinError),
    /// Serving failed.
    #[error("serving failed")]
    Serve(#[source] std::io::Error),
}

/// Why a configured policy file did not load.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The file cannot be read.
    #[error("cannot read")]
    Read(#[source] std::io::Error),
    /// The runtime refused it.
    #[error(transparent)]
    Upload(Box<policy::Error>),
}

/// The state-directory file holding the secret tenants' cache salts derive from.
const CACHE_SECRET: &str = "cache-salt.key";

/// A router with its listeners bound, ready to serve.
pub struct Server {
    client: ClientListener,
    admin: Option<Listener>,
    metrics: ListenerMetrics,
}

/// The client listener: one socket per thread serving it (see
/// [`listener::serve_threads`]), what it serves, and its limits.
struct ClientListener {
    sockets: Vec<std::net::TcpListener>,
    router: axum::Router,
    limits: ListenerLimits,
}

/// A bound listener, what it serves, and its limits.
struct Listener {
    socket: TcpListener,
    router: axum::Router,
    limits: ListenerLimits,
}

impl Server {
    /// Builds everything from `config` and binds both listeners. Nothing is served
    /// until [`Server::serve`]; a failure here leaves nothing half-started. Call inside
    /// a tokio runtime.
    ///
    /// # Errors
    ///
    /// When the state directory, a policy, a pipeline or a listener fails.
    pub async fn bind(config: Config) -> Result<Server, Error> {
        let state = config
            .state_dir
            .as_ref()
            .map(|dir| StateDir::open_with(dir, config.state.on_damaged_entry))
            .transpose()?;
        let cluster = match (&config.cluster, &state) {
            (Some(c), Some(state)) => Some(join_cluster(c, state).await?),
            _ => None,
        };
        let policies = start_policies(&config, state.clone()).await?;
        let pool = Pool::start(config.pool.clone(), config.backends.clone(), state.clone());
        let kv = start_kv(&config, &pool)?;

        let mut registry = Registry::default();
        let metrics = ProxyMetrics::default();
        metrics.register(&mut registry);
        let listener_metrics = ListenerMetrics::default();
        listener_metrics.register(&mut registry);
        policies.metrics().register(&mut registry);
        registry.register_collector(Box::new(PoolCollector::new(pool.clone())));
        if let Some(state) = &state {
            state.register_metrics(&mut registry);
        }
        registry.register_collector(Box::new(kv.collector()));
        let signals = match (&cluster, &state) {
            (Some(c), Some(state)) => {
                c.register_metrics(&mut registry);
                c.follow(state.clone(), policies.clone(), pool.clone(), kv.clone());
                let signals = Signals::start(c, pool.clone(), kv.clone(), &mut registry);
                Some(signals.await.map_err(Error::Cluster)?)
            }
            _ => None,
        };
        // NB: with a state directory, tenants keep their cache salts across restarts.
        let cache_secret = match &state {
            Some(s) => s.secret(CACHE_SECRET)?,
            None => rand::random(),
        };
        let shared_audit = match &cluster {
            Some(c) => Some(AuditStream::open(c).await.map_err(Error::Cluster)?),
            None => None,
        };
        let audit = AuditLog::open(state.as_ref().map(|s| s.root().to_path_buf()), shared_audit)
            .map_err(Error::Audit)?;
        audit.register_metrics(&mut registry);

        let decisions = Arc::new(DecisionLog::new(config.proxy.decision_log));
        let app = App::new(AppParts {
            pool: pool.clone(),
            policies: policies.clone(),
            tenants: Tenants::new(&config.auth, &config.tenants, &cache_secret),
            settings: config.proxy.clone(),
            decisions: decisions.clone(),
            metrics,
            registry: Arc::new(registry),
            kv: kv.clone(),
            state: state.clone(),
            signals,
        });
        // NB: one thread per core serves the client API; the admin API and background
        // work (probes, scrapes, KV events) stay on the caller's runtime.
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let client = ClientListener {
            sockets: listener::bind_threads(config.listen, threads)
                .await
                .map_err(|source| Error::Bind {
                    addr: config.listen,
                    source,
                })?,
            router: proxy::router(app),
            limits: config.listeners.client,
        };
        let admin = match &config.admin {
            Some(a) => {
                let router = crate::admin_app(admin::Admin {
                    pool,
                    policies,
                    decisions,
                    kv,
                    state,
                    credentials: Arc::new(Credentials::new(a.credentials.clone())),
                    audit,
                    private_labels: a.private_labels.clone().into(),
                });
                Some(Listener {
                    socket: bind(a.listen).await?,
                    router,
                    limits: config.listeners.admin,
                })
            }
            None => None,
        };
        Ok(Server {
            client,
            admin,
            metrics: listener_metrics,
        })
    }

    /// The client API's bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.client.sockets.first()?.local_addr().ok()
    }

    /// The admin API's bound address, when enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.socket.local_addr().ok())
    }

    /// Serves both APIs until `shutdown` resolves, then lets in-flight requests finish.
    /// Each listener applies its [`ListenerLimits`] (see [`crate::listener`]).
    ///
    /// # Errors
    ///
    /// When the client API's threads cannot start; nothing is served then.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let client = listener::serve_threads(
            "client",
            self.client.sockets,
            self.client.router,
            self.client.limits,
            self.metrics.clone(),
            stop_rx.clone(),
        )
        .map_err(Error::Serve)?;
        let admin = async {
            if let Some(l) = self.admin {
                let (metrics, stop) = (self.metrics.clone(), stop_rx.clone());
                listener::serve("admin", l.socket, l.router, l.limits, metrics, stop).await;
            }
        };
        tokio::join!(client, admin);
        Ok(())
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Joins the cluster and fills the state directory (this replica's cache) with the
/// shared state, so the restore that follows starts from the cluster's state.
async fn join_cluster(config: &ClusterConfig, state: &StateDir) -> Result<Cluster, Error> {
    let cluster = Cluster::connect(config.clone())
        .await
        .map_err(Error::Cluster)?;
    state.share(cluster.store().clone());
    let entries = cluster.store().sync(state).await.map_err(Error::Cluster)?;
    tracing::info!(entries, "loaded the cluster's shared state");
    Ok(cluster)
}

/// Starts the KV index: the config's models plus, keyed on text, every other model the
/// fleet serves; every backend of the pool (restored ones included), followed through its
/// KV events when it publishes them, else in approximate mode.
fn start_kv(config: &Config, pool: &Pool) -> Result<KvIndex, Error> {
    let mut kv = config.kv.clone();
    let statuses = pool.statuses();
    for status in &statuses {
        for model in &status.spec.models {
            if !kv.models.iter().any(|m| &m.name == model) {
                kv.models.push(kv::ModelConfig::text_keyed(model));
            }
        }
    }
    for status in &statuses {
        if let Some(b) = status.spec.kv_backend()
            && !kv.backends.iter().any(|k| k.name == b.name)
        {
            kv.backends.push(b);
        }
    }
    KvIndex::new(&kv).map_err(|e| Error::Kv(Box::new(e)))
}

/// Starts the policy runtime: shipped policies, stored uploads, the config's policies,
/// stored pipelines, then the config's pipelines for tenants that have none restored.
async fn start_policies(config: &Config, state: Option<StateDir>) -> Result<Policies, Error> {
    let config = config.clone();
    // NB: the order matters. Stored pipelines name shipped, stored and configured
    // policies, so they are restored only once all three are registered; stored uploads
    // come before configured ones, so an unchanged configured policy is its stored
    // version and keeps its upload order.
    let task = tokio::task::spawn_blocking(move || {
        let policies = Policies::new(config.policy_limits.clone(), state)
            .map_err(|e| Error::Policies(Box::new(e)))?;
        for t in &config.tenants {
            policies.configure_tenant(&t.name, t.policy_quota, t.policy_budget);
        }
        policies
            .install_shipped()
            .map_err(|e| Error::Policies(Box::new(e)))?;
        policies.restore_policies();
        let cfg = config.path.display().to_string();
        for (name, file) in &config.policies {
            let err = |source| Error::Policy {
                config: cfg.clone(),
                name: name.clone(),
                file: file.display().to_string(),
                source,
            };
            let bytes = std::fs::read(file).map_err(|e| err(PolicyLoadError::Read(e)))?;
            policies
                .upload(name, &bytes, true)
                .map_err(|e| err(PolicyLoadError::Upload(Box::new(e))))?;
        }
        policies.restore_pipelines();
        for t in &config.tenants {
            if let Some(spec) = &t.pipeline {
                policies
                    .set_initial_pipeline(&t.name, spec.clone())
                    .map_err(|source| Error::Pipeline {
                        config: cfg.clone(),
                        tenant: t.name.clone(),
                        source: Box::new(source),
                    })?;
            }
        }
        Ok(policies)
    });
    task.await
        .map_err(|e| Error::Serve(std::io::Error::other(e)))?
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
