//! The registry of uploaded policy versions, by name, persisted to the state directory.
//!
//! A version is immutable and named by the first 12 hex digits of its sha256, so
//! uploading the same bytes twice is a no-op and a pipeline pinned to a version always
//! means the same code. On disk, under `policies/`: `<name>@<version>.wasm` (the upload),
//! `.cwasm` (the precompiled artifact) and `.json` (metadata, including the engine
//! compatibility hash the artifact was made under).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use super::Error;
use super::engine::{KindPre, PolicyEngine, PolicyKind};
use crate::state::StateDir;

/// Public facts about one uploaded version.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// Upload order: higher is newer. `name` alone resolves to the newest.
    pub sequence: u64,
    /// Engine compatibility hash the stored artifact was built under.
    #[serde(default)]
    pub engine: String,
}

impl PolicyVersion {
    /// `name@version`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// A version loaded into the engine.
pub(crate) struct LoadedVersion {
    pub info: PolicyVersion,
    pub pre: KindPre,
}

/// A checked, compiled upload not yet registered.
pub(crate) struct Prepared {
    /// The version, loaded.
    pub loaded: Arc<LoadedVersion>,
    /// The precompiled artifact; `None` when the version was already registered.
    artifact: Option<Vec<u8>>,
}

impl Prepared {
    /// Whether the same bytes were registered before under this name.
    pub(crate) fn is_registered(&self) -> bool {
        self.artifact.is_none()
    }
}

/// Policy versions by name, oldest first.
pub(crate) struct Registry {
    engine: Arc<PolicyEngine>,
    versions: RwLock<BTreeMap<String, Vec<Arc<LoadedVersion>>>>,
    state: Option<StateDir>,
}

const DIR: &str = "policies";

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

impl Registry {
    pub(crate) fn new(engine: Arc<PolicyEngine>, state: Option<StateDir>) -> Self {
        Registry {
            engine,
            versions: RwLock::new(BTreeMap::new()),
            state,
        }
    }

    /// Checks and compiles an upload without registering it. When the same bytes were
    /// uploaded before under this name, the existing version is returned instead.
    pub(crate) fn prepare(&self, name: &str, bytes: &[u8]) -> Result<Prepared, Error> {
        if !is_valid_name(name) {
            return Err(Error::InvalidName(name.to_string()));
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        if let Some(existing) = self.find(name, Some(&sha256[..12])) {
            return Ok(Prepared {
                loaded: existing,
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
            engine: self.engine.compat.clone(),
        };
        Ok(Prepared {
            loaded: Arc::new(LoadedVersion {
                info,
                pre: compiled.pre,
            }),
            artifact: Some(compiled.artifact),
        })
    }

    /// Stores a prepared upload (`bytes` are the component it was prepared from) and
    /// registers it as the newest version of its name.
    pub(crate) fn commit(
        &self,
        prepared: Prepared,
        bytes: &[u8],
        shipped: bool,
    ) -> Result<Arc<LoadedVersion>, Error> {
        let Some(artifact) = prepared.artifact else {
            return Ok(prepared.loaded);
        };
        let mut info = prepared.loaded.info.clone();
        info.shipped = shipped;
        info.sequence = self.next_sequence();
        // NB: shipped policies are rebuilt into every binary; storing them would only
        // shadow a newer build's copy.
        if let (Some(state), false) = (&self.state, shipped) {
            let base = format!("{DIR}/{}", info.label());
            state.write(format!("{base}.wasm"), bytes)?;
            state.write(format!("{base}.cwasm"), &artifact)?;
            let meta = serde_json::to_vec_pretty(&info).expect("version metadata serializes");
            state.write(format!("{base}.json"), &meta)?;
        }
        Ok(self.insert(info, prepared.loaded.pre.clone()))
    }

    /// Loads every stored version. Entries that cannot be read or loaded are reported and
    /// skipped; artifacts from another engine build are recompiled from the component.
    pub(crate) fn restore(&self) -> Vec<String> {
        let Some(state) = &self.state else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        let names = match state.list(DIR) {
            Ok(n) => n,
            Err(e) => return vec![format!("{e:#}")],
        };
        for meta_name in names.iter().filter(|n| n.ends_with(".json")) {
            let base = meta_name.trim_end_matches(".json");
            if let Err(e) = self.restore_one(state, base) {
                tracing::warn!(entry = base, error = %e, "skipping unreadable stored policy");
                problems.push(format!("{DIR}/{base}: {e}"));
            }
        }
        problems
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
                let compiled = self.engine.compile(&wasm).map_err(|e| e.to_string())?;
                info.engine = self.engine.compat.clone();
                state
                    .write(format!("{DIR}/{base}.cwasm"), &compiled.artifact)
                    .map_err(|e| format!("{e:#}"))?;
                let meta = serde_json::to_vec_pretty(&info).expect("version metadata serializes");
                state
                    .write(format!("{DIR}/{base}.json"), &meta)
                    .map_err(|e| format!("{e:#}"))?;
                compiled.pre
            }
        };
        info.compile_ms = 0.0;
        if self.find(&info.name, Some(&info.version)).is_none() {
            self.insert(info, pre);
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

    fn insert(&self, info: PolicyVersion, pre: KindPre) -> Arc<LoadedVersion> {
        let loaded = Arc::new(LoadedVersion { info, pre });
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

    /// Every version, by name then age.
    pub(crate) fn list(&self) -> Vec<PolicyVersion> {
        let versions = self.versions.read().expect("registry lock");
        versions
            .values()
            .flatten()
            .map(|v| v.info.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::is_valid_name;

    #[test]
    fn names_are_kebab_case() {
        assert!(is_valid_name("prefix-affinity"));
        assert!(is_valid_name("v2-scorer"));
        assert!(!is_valid_name("Prefix"));
        assert!(!is_valid_name("../etc"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("-x"));
    }
}
