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

use arc_swap::ArcSwap;

pub use backend::{Backend, BackendSpec, Capability, EngineKind, InFlight, StreamSlot};
pub use learned::{Ewma, MIN_SAMPLES, Measured};
pub use metrics::PoolCollector;
pub use scrape::{EngineLoad, ScrapeError, parse as parse_metrics};

use crate::config::PoolSettings;
use crate::policy::{BackendFacts, Candidate, FleetFacts};
use crate::state::StateDir;
use breaker::Breaker;

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
#[derive(Debug, Clone, serde::Serialize)]
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
    /// figures are left at zero; `metrics_age_ms` says how old they are.
    pub fn candidates(&self, model: &str) -> Vec<Candidate> {
        self.backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.spec.models.iter().any(|m| m == model) && b.is_available())
            .map(|(i, b)| {
                let mut c = Candidate {
                    backend: i as u32,
                    in_flight_requests: b.in_flight_requests(),
                    in_flight_prefill_tokens: b.in_flight_prefill_tokens(),
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
}

const BACKENDS_DIR: &str = "backends";
const REMOVED_DIR: &str = "removed-backends";

impl Pool {
    /// Starts the pool with the configured backends, then applies the admin changes
    /// kept in `state` (added, drained and removed backends). An entry that cannot be
    /// read is logged and skipped. Starts one prober per backend; call inside a tokio
    /// runtime.
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
            return Err(Error::Exists(spec.name));
        }
        self.persist(&spec, false)?;
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
        self.persist(&b.spec, draining)?;
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
        let backends = fleet
            .backends
            .iter()
            .filter(|x| x.spec.name != name)
            .cloned()
            .collect();
        self.install(backends);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist(&self, spec: &BackendSpec, draining: bool) -> Result<(), Error> {
        let Some(state) = &self.inner.state else {
            return Ok(());
        };
        let stored = Stored {
            spec: spec.clone(),
            draining,
        };
        let bytes = serde_json::to_vec_pretty(&stored).unwrap_or_default();
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
        name: s.name.clone(),
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

/// Applies stored admin changes to the configured `entries`: stored backends replace or
/// join them, tombstones remove them. Unreadable entries are logged and skipped.
fn restore(state: &StateDir, entries: &mut Vec<(BackendSpec, bool)>) {
    let skip = |file: &str, problem: &dyn std::fmt::Display| {
        tracing::warn!(file, %problem, "stored backend skipped");
    };
    match state.list(BACKENDS_DIR) {
        Ok(files) => {
            for file in files {
                let rel = format!("{BACKENDS_DIR}/{file}");
                let stored = match state.read(&rel) {
                    Ok(Some(bytes)) => serde_json::from_slice::<Stored>(&bytes),
                    Ok(None) => continue,
                    Err(e) => {
                        skip(&rel, &e);
                        continue;
                    }
                };
                match stored {
                    Ok(s) if s.spec.problems().is_empty() => {
                        entries.retain(|(e, _)| e.name != s.spec.name);
                        entries.push((s.spec, s.draining));
                    }
                    Ok(s) => skip(&rel, &s.spec.problems().join("; ")),
                    Err(e) => skip(&rel, &e),
                }
            }
        }
        Err(e) => skip(BACKENDS_DIR, &e),
    }
    match state.list(REMOVED_DIR) {
        Ok(names) => entries.retain(|(e, _)| !names.contains(&e.name)),
        Err(e) => skip(REMOVED_DIR, &e),
    }
}

#[cfg(test)]
mod tests;
