//! The state directory: where admin changes (uploaded policies, their precompiled
//! artifacts, tenant pipelines, dynamically added or drained backends) persist.
//!
//! Every write is atomic (a temporary file in the same directory, synced, then renamed
//! over the target), so a crash mid-write leaves either the old or the new file, and
//! nothing already acknowledged is lost.
//!
//! The directory belongs to one router process: [`StateDir::open`] takes an exclusive
//! lock on its `.lock` file, held until the last handle is dropped, so a second router
//! on the same directory fails at start instead of overwriting the first one's changes.
//!
//! In cluster mode ([`crate::cluster`]) the directory is this replica's cache of the
//! shared store: [`StateDir::write`] and [`StateDir::remove`] of a shared entry go to the
//! store first (a compare-and-set on the entry's revision) and touch the file only once
//! the store took the change; changes made on other replicas arrive through
//! [`StateDir::write_local`] and [`StateDir::remove_local`].
//!
//! A stored entry that cannot be restored is *damaged*. Unless the config says
//! `state: {on_damaged_entry: skip}`, it is recorded here, `/ready` names it, and it
//! stays recorded until an admin call writes that entry again or discards it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;

use crate::cluster::AdminStore;

/// A failure reading or writing the state directory, or (in cluster mode) the shared
/// store behind it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    #[error("state directory {path}: {action}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Cluster mode: another replica changed the entry since this one last saw it, so
    /// the write was refused rather than overwriting that change (a compare-and-set on
    /// the entry's revision). The caller should read the new state and retry.
    #[error("{entry} was changed by another replica meanwhile; reload it and retry")]
    Conflict {
        /// The entry, as a path inside the state directory.
        entry: String,
    },
    /// Cluster mode: the shared store cannot be reached, so admin changes are refused
    /// (routing goes on with the last state).
    #[error(
        "the cluster's shared state is unreachable ({reason}); admin changes are refused until the NATS link is back"
    )]
    Unavailable {
        /// Why, e.g. `not connected to NATS`.
        reason: String,
    },
}

/// What start-up does with a stored entry it cannot restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDamagedEntry {
    /// Record it: `/ready` answers 503 naming it, and a tenant whose pipeline it is gets
    /// 503 for every request, until an admin call rewrites or discards it (default).
    #[default]
    Refuse,
    /// Log a warning, count it, and go on as if it were absent.
    Skip,
}

/// A stored entry that could not be restored, as `/ready` and the admin API show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DamagedEntry {
    /// Its path inside the state directory. Example: `tenants/acme.json`.
    pub entry: String,
    /// Why it could not be restored.
    pub error: String,
}

/// A handle on the state directory. Cheap to clone; clones share the lock and the
/// record of damaged entries.
#[derive(Debug, Clone)]
pub struct StateDir {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    /// NB: the exclusive lock lives as long as this open file.
    _lock: std::fs::File,
    on_damaged: OnDamagedEntry,
    damaged: ArcSwap<BTreeMap<String, String>>,
    damaged_total: Counter,
    /// Cluster mode: the store shared entries are written to first.
    shared: OnceLock<AdminStore>,
}

/// The lock file inside the directory.
const LOCK_FILE: &str = ".lock";
/// Where discarded damaged entries are moved.
const QUARANTINE_DIR: &str = "quarantine";

impl StateDir {
    /// Opens (creating if needed) the state directory at `root` and locks it for this
    /// process; damaged entries are recorded ([`OnDamagedEntry::Refuse`]).
    ///
    /// # Errors
    ///
    /// When the directory cannot be created or another process holds its lock.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, Error> {
        StateDir::open_with(root, OnDamagedEntry::default())
    }

    /// As [`StateDir::open`], with `on_damaged` deciding what a damaged entry does.
    ///
    /// # Errors
    ///
    /// As [`StateDir::open`].
    pub fn open_with(root: impl Into<PathBuf>, on_damaged: OnDamagedEntry) -> Result<Self, Error> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| Error::Io {
            path: root.clone(),
            action: "create",
            source,
        })?;
        let lock_path = root.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| Error::Io {
                path: lock_path.clone(),
                action: "open the lock file",
                source,
            })?;
        lock.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => Error::Io {
                path: root.clone(),
                action: "lock: another switchyard process is using this state directory",
                source: std::io::Error::from(std::io::ErrorKind::WouldBlock),
            },
            std::fs::TryLockError::Error(source) => Error::Io {
                path: lock_path.clone(),
                action: "lock",
                source,
            },
        })?;
        Ok(StateDir {
            inner: Arc::new(Inner {
                root,
                _lock: lock,
                on_damaged,
                damaged: ArcSwap::from_pointee(BTreeMap::new()),
                damaged_total: Counter::default(),
                shared: OnceLock::new(),
            }),
        })
    }

    /// Registers the damaged-entry counter with `registry`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "switchyard_state_damaged_entries",
            "Stored entries that could not be restored at start",
            self.inner.damaged_total.clone(),
        );
    }

    /// Reports that `entry` (a path inside the directory) cannot be restored: counted
    /// and logged always; recorded unless the config says to skip. Whether it was
    /// recorded, so the caller knows to refuse what depended on it.
    pub fn report_damaged(&self, entry: &str, error: &dyn std::fmt::Display) -> bool {
        self.inner.damaged_total.inc();
        match self.inner.on_damaged {
            OnDamagedEntry::Skip => {
                tracing::warn!(entry, %error, "skipping damaged stored entry");
                false
            }
            OnDamagedEntry::Refuse => {
                tracing::error!(
                    entry,
                    %error,
                    "damaged stored entry; /ready answers 503 until an admin call rewrites or discards it"
                );
                let error = error.to_string();
                self.inner.damaged.rcu(|m| {
                    let mut m = (**m).clone();
                    m.insert(entry.to_string(), error.clone());
                    m
                });
                true
            }
        }
    }

    /// The damaged entries, by path.
    pub fn damaged(&self) -> Vec<DamagedEntry> {
        self.inner
            .damaged
            .load()
            .iter()
            .map(|(entry, error)| DamagedEntry {
                entry: entry.clone(),
                error: error.clone(),
            })
            .collect()
    }

    /// Moves the damaged `entry` to `quarantine/` and forgets it; `Ok(false)` when no
    /// such entry is recorded (only recorded entries can be discarded, so `entry` never
    /// names a file outside the directory).
    ///
    /// # Errors
    ///
    /// When the file exists and cannot be moved.
    pub fn discard_damaged(&self, entry: &str) -> Result<bool, Error> {
        if !self.inner.damaged.load().contains_key(entry) {
            return Ok(false);
        }
        let from = self.path(entry);
        let to = self.path(Path::new(QUARANTINE_DIR).join(entry));
        let err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io {
                path,
                action,
                source,
            }
        };
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(err("create", dir))?;
        }
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("move to quarantine", &from)(e)),
        }
        tracing::info!(entry, quarantine = %to.display(), "damaged stored entry discarded");
        self.forget_damaged(entry);
        Ok(true)
    }

    fn forget_damaged(&self, entry: &str) {
        if !self.inner.damaged.load().contains_key(entry) {
            return;
        }
        self.inner.damaged.rcu(|m| {
            let mut m = (**m).clone();
            m.remove(entry);
            m
        });
    }

    /// The directory's path.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The path of `rel` inside the directory.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.inner.root.join(rel)
    }

    /// Cluster mode: from now on, shared entries are written to `store` first. Call once,
    /// before anything is restored; a second call is ignored.
    pub fn share(&self, store: AdminStore) {
        let _ = self.inner.shared.set(store);
    }

    /// The shared store, in cluster mode.
    pub fn shared(&self) -> Option<&AdminStore> {
        self.inner.shared.get()
    }

    /// Writes `bytes` to `rel` atomically, creating parent directories. A damaged entry
    /// at `rel` is repaired by the write and forgotten. In cluster mode a shared entry
    /// goes to the shared store first.
    ///
    /// # Errors
    ///
    /// When any step fails; the previous content of `rel`, if any, is then untouched.
    /// In cluster mode also [`Error::Conflict`] (another replica changed the entry
    /// meanwhile) and [`Error::Unavailable`] (the store cannot be reached).
    pub fn write(&self, rel: impl AsRef<Path>, bytes: &[u8]) -> Result<(), Error> {
        let key = rel_key(rel.as_ref());
        if let Some(store) = self.shared() {
            store.put(&key, bytes)?;
        }
        self.write_local(rel, bytes)
    }

    /// As [`StateDir::write`], to the directory only: a local cache entry (a compiled
    /// artifact), or a change another replica made.
    ///
    /// # Errors
    ///
    /// As [`StateDir::write`], less the cluster cases.
    pub fn write_local(&self, rel: impl AsRef<Path>, bytes: &[u8]) -> Result<(), Error> {
        let path = self.path(&rel);
        let dir = path.parent().unwrap_or(&self.inner.root).to_path_buf();
        let err = |action| {
            let path = path.clone();
            move |source| Error::Io {
                path,
                action,
                source,
            }
        };
        std::fs::create_dir_all(&dir).map_err(err("create parent of"))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(err("create temporary for"))?;
        tmp.write_all(bytes).map_err(err("write"))?;
        tmp.as_file().sync_all().map_err(err("sync"))?;
        tmp.persist(&path)
            .map_err(|e| err("rename into")(e.error))?;
        // NB: the rename is durable only once the directory entry is synced too.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        self.forget_damaged(&rel_key(rel.as_ref()));
        Ok(())
    }

    /// Reads `rel`; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    ///
    /// When the file exists but cannot be read.
    pub fn read(&self, rel: impl AsRef<Path>) -> Result<Option<Vec<u8>>, Error> {
        let path = self.path(rel);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                path,
                action: "read",
                source,
            }),
        }
    }

    /// Removes `rel` if it exists; a damaged entry at `rel` is forgotten. In cluster
    /// mode a shared entry is removed from the shared store first.
    ///
    /// # Errors
    ///
    /// When it exists and cannot be removed; in cluster mode as [`StateDir::write`].
    pub fn remove(&self, rel: impl AsRef<Path>) -> Result<(), Error> {
        if let Some(store) = self.shared() {
            store.delete(&rel_key(rel.as_ref()))?;
        }
        self.remove_local(rel)
    }

    /// As [`StateDir::remove`], in the directory only (a change another replica made).
    ///
    /// # Errors
    ///
    /// When it exists and cannot be removed.
    pub fn remove_local(&self, rel: impl AsRef<Path>) -> Result<(), Error> {
        let path = self.path(&rel);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                self.forget_damaged(&rel_key(rel.as_ref()));
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget_damaged(&rel_key(rel.as_ref()));
                Ok(())
            }
            Err(source) => Err(Error::Io {
                path,
                action: "remove",
                source,
            }),
        }
    }

    /// The random 32-byte secret kept at `rel`, created on first use. In cluster mode
    /// the secret is the cluster's: the first replica to need it creates it in the
    /// shared store, the others take that one.
    ///
    /// # Errors
    ///
    /// When it cannot be read or written, or holds something else than 32 bytes.
    pub fn secret(&self, rel: impl AsRef<Path>) -> Result<[u8; 32], Error> {
        let rel = rel.as_ref();
        if let Some(store) = self.shared() {
            let mine: [u8; 32] = rand::random();
            let shared = store.get_or_create(&rel_key(rel), &mine)?;
            self.write_local(rel, &shared)?;
        }
        if let Some(bytes) = self.read(rel)? {
            return <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| Error::Io {
                path: self.path(rel),
                action: "read the secret (not 32 bytes)",
                source: std::io::Error::from(std::io::ErrorKind::InvalidData),
            });
        }
        let secret: [u8; 32] = rand::random();
        self.write(rel, &secret)?;
        Ok(secret)
    }

    /// Names of the files directly inside `rel` (sorted), skipping temporaries; empty when
    /// `rel` does not exist.
    ///
    /// # Errors
    ///
    /// When the directory exists but cannot be listed.
    pub fn list(&self, rel: impl AsRef<Path>) -> Result<Vec<String>, Error> {
        let mut names = self.entries(rel, std::fs::FileType::is_file)?;
        names.retain(|n| !n.starts_with(".tmp"));
        Ok(names)
    }

    /// Names of the directories directly inside `rel` (sorted); empty when `rel` does not
    /// exist.
    ///
    /// # Errors
    ///
    /// When the directory exists but cannot be listed.
    pub fn list_dirs(&self, rel: impl AsRef<Path>) -> Result<Vec<String>, Error> {
        self.entries(rel, std::fs::FileType::is_dir)
    }

    fn entries(
        &self,
        rel: impl AsRef<Path>,
        kind: fn(&std::fs::FileType) -> bool,
    ) -> Result<Vec<String>, Error> {
        let path = self.path(rel);
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Io {
                    path,
                    action: "list",
                    source,
                });
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| kind(&t)))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }
}

/// The key a relative path is recorded under: `/`-separated.
fn rel_key(rel: &Path) -> String {
    rel.to_string_lossy().replace('\\', "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips_and_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        state.write("a/b.json", b"one").unwrap();
        state.write("a/b.json", b"two").unwrap();
        assert_eq!(
            state.read("a/b.json").unwrap().as_deref(),
            Some(&b"two"[..])
        );
        assert_eq!(state.list("a").unwrap(), vec!["b.json".to_string()]);
        assert_eq!(state.read("missing").unwrap(), None);
    }

    #[test]
    fn remove_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        state.write("x", b"1").unwrap();
        state.remove("x").unwrap();
        state.remove("x").unwrap();
        assert_eq!(state.read("x").unwrap(), None);
    }

    #[test]
    fn a_second_open_of_a_locked_dir_fails_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateDir::open(dir.path()).unwrap();
        let err = StateDir::open(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
        assert!(
            err.to_string().contains("another switchyard process"),
            "{err}"
        );
        drop(first);
        StateDir::open(dir.path()).expect("free once the first handle is gone");
    }

    #[test]
    fn a_damaged_entry_stays_recorded_until_rewritten_or_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        state.write("tenants/a.json", b"{").unwrap();
        state.write("tenants/b.json", b"{").unwrap();
        assert!(state.report_damaged("tenants/a.json", &"corrupt"));
        assert!(state.report_damaged("tenants/b.json", &"corrupt"));
        assert_eq!(state.damaged().len(), 2);
        state.write("tenants/a.json", b"{}").unwrap();
        assert!(state.discard_damaged("tenants/b.json").unwrap());
        assert!(!state.discard_damaged("../outside").unwrap());
        assert!(state.damaged().is_empty());
        assert_eq!(state.read("tenants/b.json").unwrap(), None);
        assert!(state.read("quarantine/tenants/b.json").unwrap().is_some());
    }

    #[test]
    fn skip_mode_counts_but_does_not_record() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open_with(dir.path(), OnDamagedEntry::Skip).unwrap();
        assert!(!state.report_damaged("tenants/a.json", &"corrupt"));
        assert!(state.damaged().is_empty());
        assert_eq!(state.inner.damaged_total.get(), 1);
    }
}
