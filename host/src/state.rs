//! The state directory: where admin changes (uploaded policies, their precompiled
//! artifacts, tenant pipelines, dynamically added or drained backends) persist.
//!
//! Every write is atomic (a temporary file in the same directory, synced, then renamed
//! over the target), so a crash mid-write leaves either the old or the new file, and
//! nothing already acknowledged is lost.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A failure reading or writing the state directory.
#[derive(Debug, thiserror::Error)]
#[error("state directory {path}: {action}")]
pub struct Error {
    /// The file or directory concerned.
    pub path: PathBuf,
    /// What was being done.
    pub action: &'static str,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// A handle on the state directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed) the state directory at `root`.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| Error {
            path: root.clone(),
            action: "create",
            source,
        })?;
        Ok(StateDir { root })
    }

    /// The directory's path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of `rel` inside the directory.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes `bytes` to `rel` atomically, creating parent directories.
    ///
    /// # Errors
    ///
    /// When any step fails; the previous content of `rel`, if any, is then untouched.
    pub fn write(&self, rel: impl AsRef<Path>, bytes: &[u8]) -> Result<(), Error> {
        let path = self.path(rel);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let err = |action| {
            let path = path.clone();
            move |source| Error {
                path,
                action,
                source,
            }
        };
        std::fs::create_dir_all(&dir).map_err(err("create parent of"))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(err("create temporary for"))?;
        tmp.write_all(bytes).map_err(err("write"))?;
        tmp.as_file().sync_all().map_err(err("sync"))?;
        tmp.persist(&path).map_err(|e| err("rename into")(e.error))?;
        // NB: the rename is durable only once the directory entry is synced too.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
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
            Err(source) => Err(Error {
                path,
                action: "read",
                source,
            }),
        }
    }

    /// Removes `rel` if it exists.
    ///
    /// # Errors
    ///
    /// When it exists and cannot be removed.
    pub fn remove(&self, rel: impl AsRef<Path>) -> Result<(), Error> {
        let path = self.path(rel);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error {
                path,
                action: "remove",
                source,
            }),
        }
    }

    /// Names of the files directly inside `rel` (sorted), skipping temporaries; empty when
    /// `rel` does not exist.
    ///
    /// # Errors
    ///
    /// When the directory exists but cannot be listed.
    pub fn list(&self, rel: impl AsRef<Path>) -> Result<Vec<String>, Error> {
        let path = self.path(rel);
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error {
                    path,
                    action: "list",
                    source,
                });
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with(".tmp"))
            .collect();
        names.sort();
        Ok(names)
    }
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
        assert_eq!(state.read("a/b.json").unwrap().as_deref(), Some(&b"two"[..]));
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
}
