//! The registry of uploaded policy versions, by name, persisted to the state directory.
//!
//! A version is immutable and named by the first 12 hex digits of its sha256, so
//! uploading the same bytes twice is a no-op and a pipeline pinned to a version always
//! means the same code. On disk, under `policies/`: `<name>@<version>.wasm` (the upload),
//! `.cwasm` (the precompiled artifact) and `.json` (metadata, including the engine
//! compatibility hash the artifact was made under). A tenant's `<tenant>/<name>` lives
//! one folder down, in `policies/<tenant>/`.
//!
//! A new version first serves on baseline code (see `engine`); the registry's optimizer
//! thread compiles it with Cranelift, one version at a time, swaps the optimized code in
//! and only then stores the artifact. Stages notice the swap on their next call.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

use super::Error;
use super::engine::{KindPre, PolicyEngine, PolicyKind, Tier};
use crate::names::PolicyName;
use crate::state::StateDir;

/// Public facts about one uploaded version.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PolicyVersion {
    /// Policy name, lowercase kebab-case.
    pub name: String,
    /// First 12 hex digits of the sha256.
    pub version: String,
    /// Full sha256 of the component, hex.
    pub sha256: String,
    /// The world it targets.
    pub kind: PolicyKind,
    /// Component size, bytes.
    pub size_bytes: usize,
    /// Time to compile it, milliseconds (0 when loaded from a stored artifact).
    pub compile_ms: f64,
    /// Whether it ships inside the switchyard binary.
    pub shipped: bool,
    /// Upload order: higher is newer; 0 for shipped versions, the oldest of their name.
    /// `name` alone resolves to the newest.
    pub sequence: u64,
    /// Engine compatibility hash the stored artifact was built under; empty while there
    /// is no stored artifact.
    #[serde(default)]
    pub engine: String,
    /// Which compiler's code serves now: `baseline` until the optimized code is ready.
    #[serde(default)]
    pub tier: Tier,
}

impl PolicyVersion {
    /// `name@version`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// A version's compiled code, on one tier.
pub(crate) struct Code {
    pub pre: KindPre,
    pub tier: Tier,
}

/// A version loaded into the engine.
pub(crate) struct LoadedVersion {
    pub info: PolicyVersion,
    /// Swapped once, from baseline to optimized code.
    code: ArcSwap<Code>,
}

impl LoadedVersion {
    fn new(info: PolicyVersion, pre: KindPre, tier: Tier) -> Self {
        LoadedVersion {
            info,
            code: ArcSwap::from_pointee(Code { pre, tier }),
        }
    }

    /// The code that serves now.
    pub(crate) fn code(&self) -> Arc<Code> {
        self.code.load_full()
    }

    /// Whether `code` is the code that serves now. Cheaper than [`Self::code`]: no
    /// reference count is touched.
    pub(crate) fn is_current(&self, code: &Arc<Code>) -> bool {
        Arc::ptr_eq(code, &self.code.load())
    }

    /// The world the version targets.
    pub(crate) fn kind(&self) -> PolicyKind {
        self.info.kind
    }

    /// The public facts, with the tier serving now.
    pub(crate) fn snapshot(&self) -> PolicyVersion {
        PolicyVersion {
            tier: self.code.load().tier,
            ..self.info.clone()
        }
    }

    /// Waits up to `timeout` for the optimized code; whether it is in place.
    pub(crate) fn wait_optimized(&self, timeout: Duration) -> bool {
        let started = Instant::now();
        while self.code.load().tier != Tier::Optimized {
            if started.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

/// A checked, compiled upload not yet registered.
pub(crate) struct Prepared {
    /// The version, loaded.
    pub loaded: Arc<LoadedVersion>,
    /// Whether the same bytes were registered before under this name.
    registered: bool,
    /// The optimized artifact, when the upload was compiled optimized.
    artifact: Option<Vec<u8>>,
}

impl Prepared {
    /// Whether the same bytes were registered before under this name.
    pub(crate) fn is_registered(&self) -> bool {
        self.registered
    }
}

/// A version serving baseline code, to compile optimized.
struct Job {
    /// Weak: a version dropped before its turn (its runtime is gone) is skipped.
    loaded: Weak<LoadedVersion>,
    bytes: Vec<u8>,
    /// Whether to store the optimized artifact.
    store: bool,
}

/// Policy versions by name, oldest first.
pub(crate) struct Registry {
    engine: Arc<PolicyEngine>,
    versions: RwLock<BTreeMap<String, Vec<Arc<LoadedVersion>>>>,
    state: Option<StateDir>,
    /// The optimizer thread's queue, started on first use; it ends with the registry.
    optimizer: Mutex<Option<mpsc::Sender<Job>>>,
}

const DIR: &str = "policies";

impl Registry {
    pub(crate) fn new(engine: Arc<PolicyEngine>, state: Option<StateDir>) -> Self {
        Registry {
            engine,
            versions: RwLock::new(BTreeMap::new()),
            state,
            optimizer: Mutex::new(None),
        }
    }

    /// Checks and compiles an upload without registering it. When the same bytes were
    /// uploaded before under this name, the existing version is returned instead.
    pub(crate) fn prepare(&self, name: &PolicyName, bytes: &[u8]) -> Result<Prepared, Error> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        if let Some(existing) = self.find(name, Some(&sha256[..12])) {
            return Ok(Prepared {
                loaded: existing,
                registered: true,
                artifact: None,
            });
        }
        let compiled = self.engine.compile(bytes)?;
        let info = PolicyVersion {
            name: name.to_string(),
            version: sha256[..12].to_string(),
            sha256,
            kind: compiled.pre.kind(),
            size_bytes: bytes.len(),
            compile_ms: compiled.compile_time.as_secs_f64() * 1e3,
            shipped: false,
            sequence: 0,
            engine: String::new(),
            tier: compiled.tier,
        };
        Ok(Prepared {
            loaded: Arc::new(LoadedVersion::new(info, compiled.pre, compiled.tier)),
            registered: false,
            artifact: compiled.artifact,
        })
    }

    /// Stores a prepared upload (`bytes` are the component it was prepared from) and
    /// registers it as the newest version of its name. Baseline code is queued for the
    /// optimizer, which stores the artifact once it has one.
    pub(crate) fn commit(
        &self,
        prepared: Prepared,
        bytes: &[u8],
        shipped: bool,
    ) -> Result<Arc<LoadedVersion>, Error> {
        if prepared.registered {
            return Ok(prepared.loaded);
        }
        let mut info = prepared.loaded.info.clone();
        info.shipped = shipped;
        // NB: shipped versions are the oldest of their name whatever the start-up order,
        // so an upload under a shipped name stays the newest across restarts.
        info.sequence = if shipped { 0 } else { self.next_sequence() };
        let store = self.state.is_some() && !shipped;
        // NB: shipped policies are rebuilt into every binary; storing them would only
        // shadow a newer build's copy.
        if let (Some(state), true) = (&self.state, store) {
            let base = format!("{DIR}/{}", info.label());
            state.write(format!("{base}.wasm"), bytes)?;
            if let Some(artifact) = &prepared.artifact {
                state.write(format!("{base}.cwasm"), artifact)?;
                info.engine = self.engine.compat.clone();
            }
            write_meta(state, &info)?;
        }
        let code = prepared.loaded.code();
        let loaded = self.insert(LoadedVersion::new(info, code.pre.clone(), code.tier));
        if code.tier == Tier::Baseline {
            self.optimize(Job {
                loaded: Arc::downgrade(&loaded),
                bytes: bytes.to_vec(),
                store,
            });
        }
        Ok(loaded)
    }

    /// Queues `job` for the optimizer thread, starting it on first use.
    fn optimize(&self, job: Job) {
        let mut sender = self.optimizer.lock().expect("optimizer lock");
        let tx = sender.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel();
            let engine = self.engine.clone();
            let state = self.state.clone();
            let spawned = std::thread::Builder::new()
                .name("policy-optimize".into())
                .spawn(move || {
                    for job in rx {
                        run_optimize(&engine, state.as_ref(), job);
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no optimizer thread; policies stay on baseline code");
            }
            tx
        });
        // NB: a send fails only when the thread could not start; the version then keeps
        // serving its baseline code.
        let _ = tx.send(job);
    }

    /// Loads every stored version. An entry that cannot be read or loaded is reported
    /// to the state directory as damaged; artifacts from another engine build are
    /// recompiled from the component.
    pub(crate) fn restore(&self) {
        let Some(state) = &self.state else {
            return;
        };
        let names = match state.list(DIR) {
            Ok(n) => n,
            Err(e) => {
                state.report_damaged(DIR, &format_args!("{e:#}"));
                return;
            }
        };
        for meta_name in names.iter().filter(|n| n.ends_with(".json")) {
            let base = meta_name.trim_end_matches(".json");
            if let Err(e) = self.restore_one(state, base) {
                state.report_damaged(&format!("{DIR}/{meta_name}"), &e);
            }
        }
        let namespaces = match state.list_dirs(DIR) {
            Ok(n) => n,
            Err(e) => {
                state.report_damaged(DIR, &format_args!("{e:#}"));
                return;
            }
        };
        for ns in namespaces {
            let folder = format!("{DIR}/{ns}");
            let names = match state.list(&folder) {
                Ok(n) => n,
                Err(e) => {
                    state.report_damaged(&folder, &format_args!("{e:#}"));
                    continue;
                }
            };
            for meta_name in names.iter().filter(|n| n.ends_with(".json")) {
                let base = format!("{ns}/{}", meta_name.trim_end_matches(".json"));
                if let Err(e) = self.restore_one(state, &base) {
                    state.report_damaged(&format!("{DIR}/{base}.json"), &e);
                }
            }
        }
    }

    fn restore_one(&self, state: &StateDir, base: &str) -> Result<(), String> {
        let read = |ext: &str| -> Result<Option<Vec<u8>>, String> {
            state
                .read(format!("{DIR}/{base}.{ext}"))
                .map_err(|e| format!("{e:#}"))
        };
        let meta = read("json")?.ok_or("metadata vanished")?;
        let mut info: PolicyVersion =
            serde_json::from_slice(&meta).map_err(|e| format!("corrupt metadata: {e}"))?;
        PolicyName::new(&info.name).map_err(|e| e.to_string())?;
        if info.label() != base {
            return Err(format!("metadata names {}, not {base}", info.label()));
        }
        let wasm = read("wasm")?.ok_or("component file missing")?;
        if hex::encode(Sha256::digest(&wasm)) != info.sha256 {
            return Err("component does not match its recorded sha256".into());
        }
        let artifact = read("cwasm")?;
        let pre = match artifact {
            Some(a) if info.engine == self.engine.compat => {
                self.engine.load(&a).map_err(|e| e.to_string())?
            }
            _ => {
                let compiled = self
                    .engine
                    .compile_optimized(&wasm)
                    .map_err(|e| e.to_string())?;
                let artifact = compiled.artifact.expect("optimized code has an artifact");
                store_artifact(state, &mut info, &artifact, &self.engine.compat)
                    .map_err(|e| format!("{e:#}"))?;
                compiled.pre
            }
        };
        info.compile_ms = 0.0;
        info.tier = Tier::Optimized;
        if self.find(&info.name, Some(&info.version)).is_none() {
            self.insert(LoadedVersion::new(info, pre, Tier::Optimized));
        }
        Ok(())
    }

    fn next_sequence(&self) -> u64 {
        let versions = self.versions.read().expect("registry lock");
        versions
            .values()
            .flatten()
            .map(|v| v.info.sequence)
            .max()
            .map_or(1, |m| m + 1)
    }

    fn insert(&self, loaded: LoadedVersion) -> Arc<LoadedVersion> {
        let loaded = Arc::new(loaded);
        let mut versions = self.versions.write().expect("registry lock");
        let list = versions.entry(loaded.info.name.clone()).or_default();
        list.push(loaded.clone());
        list.sort_by_key(|v| v.info.sequence);
        loaded
    }

    /// The version `name@version`, or the newest of `name` when `version` is `None`.
    pub(crate) fn find(&self, name: &str, version: Option<&str>) -> Option<Arc<LoadedVersion>> {
        let versions = self.versions.read().expect("registry lock");
        let list = versions.get(name)?;
        match version {
            Some(v) => list.iter().find(|l| l.info.version.starts_with(v)).cloned(),
            None => list.last().cloned(),
        }
    }

    /// Resolves a reference `name` or `name@version`.
    pub(crate) fn resolve(&self, reference: &str) -> Result<Arc<LoadedVersion>, Error> {
        let (name, version) = match reference.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (reference, None),
        };
        self.find(name, version)
            .ok_or_else(|| Error::UnknownPolicy(reference.to_string()))
    }

    /// Unregisters `name@version` (an exact, full version) and deletes its files; the
    /// removed version's facts. Shipped versions cannot be removed.
    pub(crate) fn remove(&self, name: &str, version: &str) -> Result<PolicyVersion, Error> {
        let label = format!("{name}@{version}");
        let mut versions = self.versions.write().expect("registry lock");
        let list = versions
            .get_mut(name)
            .ok_or_else(|| Error::NoSuchVersion(label.clone()))?;
        let at = list
            .iter()
            .position(|l| l.info.version == version)
            .ok_or_else(|| Error::NoSuchVersion(label.clone()))?;
        if list[at].info.shipped {
            return Err(Error::Shipped(label));
        }
        if let Some(state) = &self.state {
            // NB: metadata first: without it a restart ignores the other two files, so a
            // crash part-way leaves nothing that comes back.
            for ext in ["json", "wasm", "cwasm"] {
                state.remove(format!("{DIR}/{label}.{ext}"))?;
            }
        }
        let removed = list.remove(at);
        if list.is_empty() {
            versions.remove(name);
        }
        Ok(removed.snapshot())
    }

    /// Cluster mode: registers the version `base` (`name@version`) another replica
    /// uploaded, now in the state directory, or unregisters it when its metadata is gone
    /// (deleted there). Nothing happens when it is already as stored.
    pub(crate) fn apply_stored(&self, base: &str) -> Result<(), String> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        let (name, version) = base.split_once('@').ok_or("not `name@version`")?;
        let exists = state
            .read(format!("{DIR}/{base}.json"))
            .map_err(|e| format!("{e:#}"))?
            .is_some();
        let registered = self.find(name, Some(version)).is_some();
        match (exists, registered) {
            (true, false) => self.register_stored(state, base),
            (false, true) => {
                let mut versions = self.versions.write().expect("registry lock");
                if let Some(list) = versions.get_mut(name) {
                    list.retain(|l| l.info.version != version);
                    if list.is_empty() {
                        versions.remove(name);
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Registers the stored version `base` as an upload does: baseline code now, the
    /// optimized code (and its artifact, stored locally) from the optimizer thread, so
    /// a version another replica uploaded serves within the time of a baseline compile.
    fn register_stored(&self, state: &StateDir, base: &str) -> Result<(), String> {
        let read = |ext: &str| -> Result<Vec<u8>, String> {
            state
                .read(format!("{DIR}/{base}.{ext}"))
                .map_err(|e| format!("{e:#}"))?
                .ok_or_else(|| format!("{base}.{ext} missing"))
        };
        let mut info: PolicyVersion =
            serde_json::from_slice(&read("json")?).map_err(|e| format!("corrupt metadata: {e}"))?;
        let wasm = read("wasm")?;
        if hex::encode(Sha256::digest(&wasm)) != info.sha256 || info.label() != base {
            return Err("component does not match its metadata".into());
        }
        let compiled = self.engine.compile(&wasm).map_err(|e| e.to_string())?;
        info.tier = compiled.tier;
        let loaded = self.insert(LoadedVersion::new(info, compiled.pre, compiled.tier));
        if compiled.tier == Tier::Baseline {
            self.optimize(Job {
                loaded: Arc::downgrade(&loaded),
                bytes: wasm,
                store: true,
            });
        }
        Ok(())
    }

    /// Versions and component bytes registered under the `namespace/` prefix.
    pub(crate) fn namespace_usage(&self, namespace: &str) -> (u32, u64) {
        let versions = self.versions.read().expect("registry lock");
        versions
            .iter()
            .filter(|(name, _)| name.split_once('/').is_some_and(|(ns, _)| ns == namespace))
            .flat_map(|(_, list)| list)
            .fold((0, 0), |(n, bytes), v| {
                (n + 1, bytes + v.info.size_bytes as u64)
            })
    }

    /// Every version, by name then age.
    pub(crate) fn list(&self) -> Vec<PolicyVersion> {
        let versions = self.versions.read().expect("registry lock");
        versions.values().flatten().map(|v| v.snapshot()).collect()
    }
}

/// Compiles a job's version optimized, swaps the code in, then stores the artifact.
fn run_optimize(engine: &PolicyEngine, state: Option<&StateDir>, job: Job) {
    let Some(loaded) = job.loaded.upgrade() else {
        return;
    };
    let label = loaded.info.label();
    let compiled = match engine.compile_optimized(&job.bytes) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(policy = %label, error = %e, "optimized compile failed; the policy stays on baseline code");
            return;
        }
    };
    loaded.code.store(Arc::new(Code {
        pre: compiled.pre,
        tier: Tier::Optimized,
    }));
    tracing::info!(
        policy = %label,
        compile_ms = compiled.compile_time.as_secs_f64() * 1e3,
        "optimized code in place"
    );
    if let (Some(state), true, Some(artifact)) = (state, job.store, &compiled.artifact) {
        let mut info = loaded.info.clone();
        if let Err(e) = store_artifact(state, &mut info, artifact, &engine.compat) {
            tracing::warn!(policy = %label, error = %e, "storing the optimized artifact failed; a restart recompiles");
        }
    }
}

/// Writes `info`'s optimized artifact, then its metadata naming the engine it was built
/// under (in that order: a crash between leaves metadata that asks for a recompile).
fn store_artifact(
    state: &StateDir,
    info: &mut PolicyVersion,
    artifact: &[u8],
    compat: &str,
) -> Result<(), Error> {
    state.write_local(format!("{DIR}/{}.cwasm", info.label()), artifact)?;
    info.engine = compat.to_string();
    // NB: a cache update: in cluster mode the shared metadata stays as uploaded, each
    // replica keeps its own artifact.
    state.write_local(format!("{DIR}/{}.json", info.label()), &meta_bytes(info))?;
    Ok(())
}

fn write_meta(state: &StateDir, info: &PolicyVersion) -> Result<(), Error> {
    state.write(format!("{DIR}/{}.json", info.label()), &meta_bytes(info))?;
    Ok(())
}

fn meta_bytes(info: &PolicyVersion) -> Vec<u8> {
    serde_json::to_vec_pretty(info).expect("version metadata serializes")
}
