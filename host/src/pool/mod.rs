//! The backend pool: every backend's spec and live state, health checks, `/metrics`
//! scraping, circuit breaking and drain, handed out as [`Fleet`] snapshots.
//!
//! - [`Pool`] is the handle other modules hold. Adding, draining and removing backends
//!   goes through it and persists to the state directory.
//! - [`Fleet`] is an immutable snapshot (held in an `ArcSwap`): the backends in index
//!   order and the [`FleetFacts`] policies see, whose generation changes whenever the
//!   backend set does. A request loads it once.
//! - [`InFlight`] is one attempt's claim on a backend; its drop returns the router's
//!   in-flight counts on every path.
//!
//! Words: a *backend* is one model server; the *fleet* is all of them.

mod backend;
mod breaker;
mod learned;
mod metrics;
mod probe;
mod scrape;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use backend::{Backend, BackendSpec, Capability, InFlight, StreamSlot};
pub use learned::{Ewma, MIN_SAMPLES, Measured};
pub use metrics::PoolCollector;
pub use scrape::EngineKind;
pub use scrape::{EngineLoad, ScrapeError, parse as parse_metrics};

use crate::names::BackendName;
use crate::policy::{BackendFacts, Candidate, FleetFacts};
use crate::state::StateDir;
use breaker::Breaker;

/// Health checks, scraping and circuit breaking.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Interval between `/metrics` scrapes.
    pub scrape_interval: Duration,
    /// Age after which scraped figures are stale.
    pub stale_after: Duration,
    /// Interval between health checks.
    pub health_interval: Duration,
    /// Timeout of one scrape or health check.
    pub probe_timeout: Duration,
    /// Consecutive failed health checks that mark a backend down, >= 1.
    pub unhealthy_after: u32,
    /// Consecutive failed requests that open a circuit, >= 1.
    pub breaker_failures: u32,
    /// How long an open circuit stays open.
    pub breaker_open: Duration,
}

/// Errors from changing the pool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No backend has that name.
    #[error("no backend named `{0}`")]
    NotFound(String),
    /// A backend with that name exists.
    #[error("a backend named `{0}` already exists")]
    Exists(String),
    /// The spec is invalid; each problem names its field.
    #[error("invalid backend: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// Only a draining backend may be removed.
    #[error("backend `{0}` is not draining: drain it first")]
    NotDrained(String),
    /// Persisting the change failed; the change was not made.
    #[error(transparent)]
    State(#[from] crate::state::Error),
}

/// A backend's state as the admin API and metrics show it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct BackendStatus {
    /// As configured.
    #[serde(flatten)]
    pub spec: BackendSpec,
    /// Passing health checks.
    pub healthy: bool,
    /// Taking no new requests.
    pub draining: bool,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// The router's in-flight requests to it.
    pub in_flight_requests: u32,
    /// Streams the router is passing through from it now (left to finish or move when
    /// it drains).
    pub streams: u32,
    /// Streams moved away from it at a drain deadline.
    pub streams_moved: u64,
    /// Prompt tokens in flight before their first byte.
    pub in_flight_prefill_tokens: u32,
    /// Speeds measured from routed requests, next to the declared `capability`.
    pub measured: Measured,
    /// The latest scraped figures, if any.
    pub load: Option<EngineLoad>,
    /// Age of those figures, milliseconds.
    pub metrics_age_ms: Option<u64>,
    /// Whether the figures are missing or older than `stale_after` (for engines with
    /// metrics).
    pub metrics_stale: bool,
    /// The engine's KV capacity in tokens as the router uses it: declared, else learned
    /// from the engine; `None` when unknown.
    pub kv_capacity_tokens: Option<u64>,
}

/// An immutable snapshot of the fleet.
#[derive(Debug)]
pub struct Fleet {
    /// Static facts for policies; `facts.backends[i]` is `backends[i]`.
    pub facts: Arc<FleetFacts>,
    /// The backends, in index order.
    pub backends: Vec<Arc<Backend>>,
    stale_after: std::time::Duration,
}

impl Fleet {
    /// The backend at fleet index `index`.
    pub fn backend(&self, index: u32) -> Option<&Arc<Backend>> {
        self.backends.get(index as usize)
    }

    /// The fleet index of `backend`, if it is in this snapshot.
    pub fn index_of(&self, backend: &Arc<Backend>) -> Option<u32> {
        let i = self.backends.iter().position(|b| Arc::ptr_eq(b, backend))?;
        u32::try_from(i).ok()
    }

    /// Whether any backend (available or not) serves `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.backends
            .iter()
            .any(|b| b.spec.models.iter().any(|m| m == model))
    }

    /// The union of the fleet's models, sorted.
    pub fn models(&self) -> BTreeSet<&str> {
        self.backends
            .iter()
            .flat_map(|b| b.spec.models.iter().map(String::as_str))
            .collect()
    }

    /// Whether any backend is available for new requests.
    pub fn is_ready(&self) -> bool {
        self.backends.iter().any(|b| b.is_available())
    }

    /// The candidates for a request for `model`: available backends serving it (never
    /// draining, down or with an open circuit), with their live figures; speeds are the
    /// measured ones once enough samples exist, else the declared ones. Stale scraped
    /// figures are left at zero; `metrics_age_ms` says how old they are. In cluster mode
    /// the in-flight figures include the other replicas'.
    pub fn candidates(&self, model: &str) -> Vec<Candidate> {
        self.backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.spec.models.iter().any(|m| m == model) && b.is_available())
            .map(|(i, b)| {
                let (peer_requests, peer_prefill) = b.peer_load();
                let mut c = Candidate {
                    backend: i as u32,
                    in_flight_requests: b.in_flight_requests().saturating_add(peer_requests),
                    in_flight_prefill_tokens: b
                        .in_flight_prefill_tokens()
                        .saturating_add(peer_prefill),
                    prefill_tokens_per_s: b.prefill_tokens_per_s(),
                    decode_tokens_per_s: b.decode_tokens_per_s(),
                    metrics_age_ms: u32::MAX,
                    ..Candidate::default()
                };
                if let Some((load, age)) = b.load() {
                    c.metrics_age_ms = u32::try_from(age.as_millis()).unwrap_or(u32::MAX);
                    if age <= self.stale_after {
                        c.waiting = load.waiting;
                        c.running = load.running;
                        c.kv_usage = load.kv_usage;
                    }
                }
                c
            })
            .collect()
    }
}

/// What applying another replica's backend change did to the fleet.
#[derive(Debug)]
pub enum SharedChange {
    /// The backend joined the fleet.
    Added(Box<BackendSpec>),
    /// The backend left the fleet.
    Removed,
    /// Its drain state follows the stored one.
    Updated,
    /// Nothing to do (a tombstone for a backend not in the fleet, say).
    Unchanged,
}

/// The handle on the pool. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    fleet: ArcSwap<Fleet>,
    /// Serialises changes so each builds on the latest fleet.
    writer: Mutex<()>,
    generation: AtomicU64,
    settings: PoolSettings,
    client: reqwest::Client,
    state: Option<StateDir>,
}

/// What the state directory keeps per changed backend.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    spec: BackendSpec,
    draining: bool,
    /// When an admin call added it, nanoseconds since the Unix epoch; `None` for a
    /// configured backend (drained or undrained), which keeps its place in the config's
    /// order. Added backends follow the configured ones in the order they were added,
    /// so a restart gives every backend the fleet index it had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    added: Option<u64>,
}

const BACKENDS_DIR: &str = "backends";
const REMOVED_DIR: &str = "removed-backends";

impl Pool {
    /// Starts the pool with the configured backends, then applies the admin changes
    /// kept in `state` (added, drained and removed backends), each backend at the fleet
    /// index it had. An entry that cannot be restored is reported to the state
    /// directory. Starts one prober per backend; call inside a tokio runtime.
    pub fn start(settings: PoolSettings, specs: Vec<BackendSpec>, state: Option<StateDir>) -> Pool {
        let client = reqwest::Client::builder()
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        let mut entries: Vec<(BackendSpec, bool)> = specs.into_iter().map(|s| (s, false)).collect();
        if let Some(state) = &state {
            restore(state, &mut entries);
        }
        let pool = Pool {
            inner: Arc::new(Inner {
                fleet: ArcSwap::from_pointee(Fleet {
                    facts: Arc::new(FleetFacts::default()),
                    backends: Vec::new(),
                    stale_after: settings.stale_after,
                }),
                writer: Mutex::new(()),
                generation: AtomicU64::new(0),
                settings,
                client,
                state,
            }),
        };
        let backends = entries
            .into_iter()
            .map(|(spec, draining)| pool.new_backend(spec, draining))
            .collect();
        pool.install(backends);
        pool
    }

    /// The current snapshot.
    pub fn fleet(&self) -> Arc<Fleet> {
        self.inner.fleet.load_full()
    }

    /// Every backend's state, in fleet order.
    pub fn statuses(&self) -> Vec<BackendStatus> {
        let fleet = self.fleet();
        fleet.backends.iter().map(|b| self.status_of(b)).collect()
    }

    /// One backend's state.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`].
    pub fn status(&self, name: &str) -> Result<BackendStatus, Error> {
        let fleet = self.fleet();
        let b = find(&fleet, name)?;
        Ok(self.status_of(b))
    }

    fn status_of(&self, b: &Backend) -> BackendStatus {
        let load = b.load();
        BackendStatus {
            spec: b.spec.clone(),
            healthy: b.is_healthy(),
            draining: b.is_draining(),
            breaker: b.breaker_state(),
            in_flight_requests: b.in_flight_requests(),
            streams: b.streams(),
            streams_moved: b.streams_moved(),
            in_flight_prefill_tokens: b.in_flight_prefill_tokens(),
            measured: b.measured(),
            load: load.map(|(l, _)| l),
            metrics_age_ms: load.map(|(_, age)| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
            metrics_stale: b.spec.engine.has_metrics()
                && load.is_none_or(|(_, age)| age > self.inner.settings.stale_after),
            kv_capacity_tokens: b.kv_capacity_tokens(),
        }
    }

    /// Adds a backend and persists it.
    ///
    /// # Errors
    ///
    /// When the spec is invalid, the name is taken, or persisting fails.
    pub fn add(&self, spec: BackendSpec) -> Result<BackendStatus, Error> {
        let problems = spec.problems();
        if !problems.is_empty() {
            return Err(Error::Invalid(problems));
        }
        let _w = self.lock();
        let fleet = self.fleet();
        if find(&fleet, &spec.name).is_ok() {
            return Err(Error::Exists(spec.name.into()));
        }
        let added = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.persist(&spec, false, Some(added))?;
        if let Some(state) = &self.inner.state {
            state.remove(format!("{REMOVED_DIR}/{}", spec.name))?;
        }
        let backend = self.new_backend(spec, false);
        let status = self.status_of(&backend);
        let mut backends = fleet.backends.clone();
        backends.push(backend);
        self.install(backends);
        Ok(status)
    }

    /// Starts (`true`) or ends (`false`) draining a backend: a draining one gets no new
    /// requests while its in-flight ones finish. Persisted.
    ///
    /// # Errors
    ///
    /// When no backend has that name or persisting fails.
    pub fn set_draining(&self, name: &str, draining: bool) -> Result<BackendStatus, Error> {
        let _w = self.lock();
        let fleet = self.fleet();
        let b = find(&fleet, name)?;
        let added = self.stored(name).and_then(|s| s.added);
        self.persist(&b.spec, draining, added)?;
        b.set_draining(draining);
        tracing::info!(backend = name, draining, "drain state changed");
        Ok(self.status_of(b))
    }

    /// Starts draining a backend and, `deadline` later, asks the streams still running on
    /// it to move to other backends (if it is still draining then). Persisted as a drain.
    ///
    /// # Errors
    ///
    /// As [`Pool::set_draining`].
    pub fn drain_with_deadline(
        &self,
        name: &str,
        deadline: std::time::Duration,
    ) -> Result<BackendStatus, Error> {
        let status = self.set_draining(name, true)?;
        let backend = find(&self.fleet(), name)?.clone();
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            tracing::info!(backend = %backend.spec.name, streams = backend.streams(), "drain deadline: moving streams");
            backend.move_streams();
        });
        Ok(status)
    }

    /// Removes a draining backend; requests still in flight to it finish.
    ///
    /// # Errors
    ///
    /// When no backend has that name, it is not draining, or persisting fails.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        let _w = self.lock();
        let fleet = self.fleet();
        let b = find(&fleet, name)?;
        if !b.is_draining() {
            return Err(Error::NotDrained(name.into()));
        }
        if let Some(state) = &self.inner.state {
            state.write(format!("{REMOVED_DIR}/{name}"), b"removed")?;
            state.remove(format!("{BACKENDS_DIR}/{name}.json"))?;
        }
        b.mark_removed();
        self.install_without(&fleet, name);
        Ok(())
    }

    /// Installs `fleet` less backend `name`.
    fn install_without(&self, fleet: &Fleet, name: &str) {
        let backends = fleet
            .backends
            .iter()
            .filter(|x| x.spec.name != name)
            .cloned()
            .collect();
        self.install(backends);
    }

    /// Cluster mode: applies a change another replica made to backend `name` (added,
    /// drained or undrained, removed). `commit` writes it into the state directory first;
    /// the fleet then follows what is stored there, under the writer lock.
    ///
    /// # Errors
    ///
    /// Why the stored entry cannot be applied; the fleet is unchanged then.
    pub fn apply_shared(
        &self,
        name: &str,
        commit: impl FnOnce() -> Result<(), crate::state::Error>,
    ) -> Result<SharedChange, String> {
        let _w = self.lock();
        commit().map_err(|e| format!("{e:#}"))?;
        let Some(state) = &self.inner.state else {
            return Ok(SharedChange::Unchanged);
        };
        let removed = state
            .read(format!("{REMOVED_DIR}/{name}"))
            .map_err(|e| format!("{e:#}"))?
            .is_some();
        let rel = format!("{BACKENDS_DIR}/{name}.json");
        let stored = restore_one(state, &rel, &format!("{name}.json"))?;
        let fleet = self.fleet();
        Ok(match (find(&fleet, name).ok(), stored, removed) {
            (Some(b), _, true) => {
                b.mark_removed();
                self.install_without(&fleet, name);
                SharedChange::Removed
            }
            (Some(b), Some(s), false) => {
                b.set_draining(s.draining);
                SharedChange::Updated
            }
            (None, Some(s), false) => {
                let spec = s.spec.clone();
                let mut backends = fleet.backends.clone();
                backends.push(self.new_backend(s.spec, s.draining));
                self.install(backends);
                SharedChange::Added(Box::new(spec))
            }
            _ => SharedChange::Unchanged,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored entry of `name`, if there is a readable one.
    fn stored(&self, name: &str) -> Option<Stored> {
        let bytes = self
            .inner
            .state
            .as_ref()?
            .read(format!("{BACKENDS_DIR}/{name}.json"))
            .ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    fn persist(&self, spec: &BackendSpec, draining: bool, added: Option<u64>) -> Result<(), Error> {
        let Some(state) = &self.inner.state else {
            return Ok(());
        };
        let stored = Stored {
            spec: spec.clone(),
            draining,
            added,
        };
        let bytes = serde_json::to_vec_pretty(&stored).unwrap_or_default();
        // NB: `spec.name` is a validated name, so this stays inside the directory.
        state.write(format!("{BACKENDS_DIR}/{}.json", spec.name), &bytes)?;
        Ok(())
    }

    fn new_backend(&self, spec: BackendSpec, draining: bool) -> Arc<Backend> {
        let s = &self.inner.settings;
        let b = Arc::new(Backend::new(
            spec,
            draining,
            Breaker::new(s.breaker_failures, s.breaker_open),
        ));
        probe::spawn(&b, s.clone(), self.inner.client.clone());
        b
    }

    /// Swaps in a fleet of `backends` with a new generation.
    fn install(&self, backends: Vec<Arc<Backend>>) {
        let generation = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let facts = FleetFacts {
            generation,
            backends: backends.iter().map(|b| facts_of(&b.spec)).collect(),
        };
        self.inner.fleet.store(Arc::new(Fleet {
            facts: Arc::new(facts),
            backends,
            stale_after: self.inner.settings.stale_after,
        }));
    }
}

fn find<'f>(fleet: &'f Fleet, name: &str) -> Result<&'f Arc<Backend>, Error> {
    fleet
        .backends
        .iter()
        .find(|b| b.spec.name == name)
        .ok_or_else(|| Error::NotFound(name.into()))
}

fn facts_of(s: &BackendSpec) -> BackendFacts {
    BackendFacts {
        name: s.name.to_string(),
        vendor: s.vendor.clone(),
        accelerator: s.accelerator.clone(),
        region: s.region.clone(),
        labels: s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        role: s.role,
        cost_per_hour: s.cost_per_hour,
        prefill_tokens_per_s: s.capability.prefill_tokens_per_s,
        decode_tokens_per_s: s.capability.decode_tokens_per_s,
        kv_capacity_tokens: s.capability.kv_capacity_tokens,
        kv_link_gbytes_per_s: s.capability.kv_link_gbytes_per_s,
        kv_bytes_per_token: s.capability.kv_bytes_per_token,
    }
}

/// Applies stored admin changes to the configured `entries`: a stored configured backend
/// replaces its entry in place, added backends follow in the order they were added,
/// tombstones remove entries. An entry that cannot be restored is reported to the state
/// directory.
fn restore(state: &StateDir, entries: &mut Vec<(BackendSpec, bool)>) {
    let mut added = Vec::new();
    match state.list(BACKENDS_DIR) {
        Ok(files) => {
            for file in files {
                let rel = format!("{BACKENDS_DIR}/{file}");
                match restore_one(state, &rel, &file) {
                    Ok(Some(s)) => match s.added {
                        None => match entries.iter_mut().find(|(e, _)| e.name == s.spec.name) {
                            Some(entry) => *entry = (s.spec, s.draining),
                            None => added.push((0, s)),
                        },
                        Some(at) => {
                            entries.retain(|(e, _)| e.name != s.spec.name);
                            added.push((at, s));
                        }
                    },
                    Ok(None) => {}
                    Err(problem) => {
                        state.report_damaged(&rel, &problem);
                    }
                }
            }
        }
        Err(e) => {
            state.report_damaged(BACKENDS_DIR, &format_args!("{e:#}"));
        }
    }
    added.sort_by(|(a, x), (b, y)| (a, &x.spec.name).cmp(&(b, &y.spec.name)));
    entries.extend(added.into_iter().map(|(_, s)| (s.spec, s.draining)));
    match state.list(REMOVED_DIR) {
        Ok(names) => {
            for name in &names {
                if BackendName::new(name).is_err() {
                    state.report_damaged(
                        &format!("{REMOVED_DIR}/{name}"),
                        &"not named after a valid backend name",
                    );
                }
            }
            entries.retain(|(e, _)| !names.iter().any(|n| e.name == n.as_str()));
        }
        Err(e) => {
            state.report_damaged(REMOVED_DIR, &format_args!("{e:#}"));
        }
    }
}

/// One stored backend, checked against its file name `<name>.json`.
fn restore_one(state: &StateDir, rel: &str, file: &str) -> Result<Option<Stored>, String> {
    let Some(bytes) = state.read(rel).map_err(|e| format!("{e:#}"))? else {
        return Ok(None);
    };
    let s: Stored = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if file.strip_suffix(".json") != Some(s.spec.name.as_str()) {
        return Err(format!("holds backend `{}`", s.spec.name));
    }
    let problems = s.spec.problems();
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(Some(s))
}

#[cfg(test)]
mod tests;
