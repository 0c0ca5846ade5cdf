//! [`AdminStore`]: the admin state every replica shares. Entries are named by their path
//! in the state directory (`tenants/acme.json`, `policies/acme/p@0123456789ab.json`,
//! `backends/b1.json`, `removed-backends/b2`); small ones live in a JetStream KV bucket,
//! component bytes in an object store.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, kv, object_store};
use futures::StreamExt;
use tokio::io::AsyncReadExt;

use super::{ClusterConfig, ClusterMetrics, Error, block_on_jetstream, is_connected};
use crate::state::{self, StateDir};

/// How long an admin write waits for JetStream before answering 503.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the watcher checks that it keeps up with the bucket.
const WATCH_CHECK: Duration = Duration::from_millis(500);
/// The file holding the cluster's cache-salt secret, shared like an entry.
const SHARED_FILES: [&str; 1] = ["cache-salt.key"];

/// Where a state-directory entry lives in cluster mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// A KV entry, written with compare-and-set.
    Kv,
    /// An object (component bytes, immutable: named by their hash).
    Object,
    /// Only in this replica's directory (compiled artifacts, quarantine, the lock).
    Local,
}

fn place(rel: &str) -> Place {
    let in_dir = |dir: &str| {
        rel.strip_prefix(dir)
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|file| !file.contains('/'))
    };
    if SHARED_FILES.contains(&rel)
        || (in_dir("tenants") && rel.ends_with(".json"))
        || (in_dir("backends") && rel.ends_with(".json"))
        || in_dir("removed-backends")
    {
        return Place::Kv;
    }
    if rel.starts_with("policies/") {
        if rel.ends_with(".json") {
            return Place::Kv;
        }
        if rel.ends_with(".wasm") {
            return Place::Object;
        }
    }
    Place::Local
}

/// A KV key for an entry path: `@` (not allowed in keys) becomes `=` (not allowed in
/// names).
fn key_of(rel: &str) -> String {
    rel.replace('@', "=")
}

fn rel_of(key: &str) -> String {
    key.replace('=', "@")
}

/// The component object of a policy's metadata entry.
fn component_of(meta_rel: &str) -> Option<String> {
    meta_rel
        .strip_prefix("policies/")
        .and_then(|r| r.strip_suffix(".json"))
        .map(|base| format!("policies/{base}.wasm"))
}

/// One change made on another replica, in revision order, for the replica to apply.
#[derive(Debug)]
pub struct Change {
    /// The entry, as a path in the state directory.
    pub rel: String,
    /// Its new content; `None` when it was deleted.
    pub value: Option<Vec<u8>>,
    /// A policy's component bytes, with its metadata entry.
    component: Option<(String, Vec<u8>)>,
    revision: u64,
    store: AdminStore,
}

impl Change {
    /// Writes the change into `state` (the replica's cache) and records its revision, so
    /// this replica's next write of the entry compares against it. Call under the lock
    /// that serialises local changes of what the entry holds.
    ///
    /// # Errors
    ///
    /// When the directory cannot be written.
    pub fn commit(&self, state: &StateDir) -> Result<(), state::Error> {
        match &self.value {
            Some(v) => {
                if let Some((rel, bytes)) = &self.component {
                    state.write_local(rel, bytes)?;
                }
                state.write_local(&self.rel, v)?;
            }
            None => {
                state.remove_local(&self.rel)?;
                if let Some(wasm) = component_of(&self.rel) {
                    state.remove_local(&wasm)?;
                    state.remove_local(wasm.replace(".wasm", ".cwasm"))?;
                }
            }
        }
        self.store.note(&self.rel, self.revision);
        Ok(())
    }
}

/// The shared admin state, seen from one replica: the KV bucket, the object store, and
/// the revision of each entry this replica last saw (what its next write of the entry
/// compares against). Cheap to clone.
///
/// Writes come from blocking threads (the admin API runs policy changes off the async
/// threads) and wait for JetStream's acknowledgement, at most [`WRITE_TIMEOUT`].
#[derive(Clone)]
pub struct AdminStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    kv: kv::Store,
    objects: object_store::ObjectStore,
    runtime: tokio::runtime::Handle,
    revisions: Mutex<HashMap<String, u64>>,
    /// The bucket's stream sequence up to which changes were applied.
    applied_up_to: AtomicU64,
    /// Set when the store turned out to be behind this replica; the watcher then
    /// re-reads it from the start.
    regressed: AtomicBool,
    metrics: ClusterMetrics,
}

impl std::fmt::Debug for AdminStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminStore")
            .field("bucket", &self.inner.kv.name)
            .finish_non_exhaustive()
    }
}

impl AdminStore {
    /// Opens the cluster's bucket `switchyard-<name>-state` and object store
    /// `switchyard-<name>-components`, creating them (`stream_replicas` each) on first
    /// use. Call inside the tokio runtime.
    pub(super) async fn open(
        config: &ClusterConfig,
        client: async_nats::Client,
        metrics: ClusterMetrics,
    ) -> Result<AdminStore, Error> {
        let mut js = jetstream::new(client.clone());
        js.set_timeout(WRITE_TIMEOUT);
        let bucket = format!("switchyard-{}-state", config.name);
        let setup = |what: &str| {
            let what = what.to_string();
            move |e: Box<dyn std::error::Error + Send + Sync>| Error::Setup { what, source: e }
        };
        let kv = match js.get_key_value(&bucket).await {
            Ok(kv) => kv,
            Err(_) => {
                // NB: `create_key_value` first reads the account info, whose 2.9 form
                // this client cannot parse; the bucket's stream is created as it would.
                let created = js
                    .create_stream(jetstream::stream::Config {
                        name: format!("KV_{bucket}"),
                        description: Some("Switchyard admin state".into()),
                        subjects: vec![format!("$KV.{bucket}.>")],
                        max_messages_per_subject: 8,
                        max_bytes: -1,
                        max_messages: -1,
                        max_message_size: -1,
                        max_consumers: -1,
                        storage: jetstream::stream::StorageType::File,
                        num_replicas: config.stream_replicas,
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        discard: jetstream::stream::DiscardPolicy::New,
                        duplicate_window: Duration::from_secs(120),
                        ..Default::default()
                    })
                    .await;
                match js.get_key_value(&bucket).await {
                    Ok(kv) => kv,
                    // NB: another replica may have created it meanwhile; only when the
                    // bucket is still missing does the create's error matter.
                    Err(e) => {
                        let source: Box<dyn std::error::Error + Send + Sync> = match created {
                            Err(c) => Box::new(c),
                            Ok(_) => Box::new(e),
                        };
                        return Err(setup(&bucket)(source));
                    }
                }
            }
        };
        let objects_name = format!("switchyard-{}-components", config.name);
        let objects = match js.get_object_store(&objects_name).await {
            Ok(o) => o,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: objects_name.clone(),
                    description: Some("Switchyard uploaded policy components".into()),
                    num_replicas: config.stream_replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| setup(&objects_name)(Box::new(e)))?,
        };
        Ok(AdminStore {
            inner: Arc::new(Inner {
                client,
                kv,
                objects,
                runtime: tokio::runtime::Handle::current(),
                revisions: Mutex::new(HashMap::new()),
                applied_up_to: AtomicU64::new(0),
                regressed: AtomicBool::new(false),
                metrics,
            }),
        })
    }

    /// Writes `rel` to the shared store if it is a shared entry: a compare-and-set
    /// against the revision this replica last saw (a create for a new entry). Other
    /// entries are left alone (the caller writes them to its directory).
    ///
    /// # Errors
    ///
    /// [`state::Error::Conflict`] when another replica changed the entry meanwhile;
    /// [`state::Error::Unavailable`] when JetStream cannot be reached or does not answer.
    pub fn put(&self, rel: &str, bytes: &[u8]) -> Result<(), state::Error> {
        match place(rel) {
            Place::Local => Ok(()),
            Place::Object => {
                let objects = self.inner.objects.clone();
                let mut data: &[u8] = bytes;
                self.block(async move { objects.put(rel, &mut data).await.map(|_| ()) })
            }
            Place::Kv => {
                let key = key_of(rel);
                let expected = self.revision(rel);
                let kv = self.inner.kv.clone();
                let value = bytes::Bytes::copy_from_slice(bytes);
                let result = self.block(async move {
                    let written = if expected == 0 {
                        kv.create(&key, value).await.map_err(|e| match e.kind() {
                            kv::CreateErrorKind::AlreadyExists => Refused::Conflict,
                            _ => Refused::Other(e.to_string()),
                        })
                    } else {
                        kv.update(&key, value, expected)
                            .await
                            .map_err(|e| match e.kind() {
                                kv::UpdateErrorKind::WrongLastRevision => Refused::Conflict,
                                _ => Refused::Other(e.to_string()),
                            })
                    };
                    Ok::<_, String>(written)
                })?;
                match result {
                    Ok(revision) if expected != 0 && self.overwrote(rel, expected, revision)? => {
                        self.inner.metrics.conflicts.inc();
                        Err(state::Error::Conflict {
                            entry: rel.to_string(),
                        })
                    }
                    Ok(revision) => {
                        self.note(rel, revision);
                        Ok(())
                    }
                    Err(Refused::Other(reason)) => Err(state::Error::Unavailable { reason }),
                    Err(Refused::Conflict) => self.resolve_conflict(rel, bytes, expected),
                }
            }
        }
    }

    /// Whether the write of `rel` at `revision` (expecting `expected`) landed on top of
    /// another replica's write instead of on `expected`. When it did, that write is put
    /// back, so the first writer wins and all replicas converge on its value.
    ///
    /// NB: nats-server 2.9 checks the expected revision of clustered streams against its
    /// applied state, so two writes proposed at once can both pass; the second one finds
    /// out here, from the entry's history.
    fn overwrote(&self, rel: &str, expected: u64, revision: u64) -> Result<bool, state::Error> {
        let kv = self.inner.kv.clone();
        let key = key_of(rel);
        self.block(async move {
            let mut history = kv.history(&key).await.map_err(|e| e.to_string())?;
            let mut before = None;
            while let Some(entry) = history.next().await {
                let entry = entry.map_err(|e| e.to_string())?;
                if entry.revision >= revision {
                    break;
                }
                before = Some(entry);
            }
            let Some(before) = before.filter(|b| b.revision > expected) else {
                return Ok(false);
            };
            tracing::warn!(entry = %rel_of(&key), revision, overwritten = before.revision, "a concurrent write got in first; restoring it");
            if before.operation == kv::Operation::Put {
                // NB: best effort: a newer write meanwhile stands instead.
                let _ = kv.update(&key, before.value.clone(), revision).await;
            }
            Ok::<_, String>(true)
        })
    }

    /// A write expecting revision `expected` found the entry changed. The same content (a
    /// replica seeding the same config pipeline) or an existing policy version (immutable:
    /// named by its hash) is no conflict; anything else is. An entry older than the one
    /// this replica saw means the store lost changes (every NATS node restarted without
    /// them): the replica takes the store's revision, so the caller's retry can succeed,
    /// and its watcher re-reads the store.
    fn resolve_conflict(&self, rel: &str, bytes: &[u8], expected: u64) -> Result<(), state::Error> {
        let kv = self.inner.kv.clone();
        let subject = format!("{}{}", kv.prefix, key_of(rel));
        // NB: from the stream's leader, which checked the write; a direct get may be
        // answered by a follower that is behind.
        let current = self.block(async move {
            match kv.stream.get_last_raw_message_by_subject(&subject).await {
                Ok(message) => Ok(Some(message)),
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        let found = current.as_ref().map_or(0, |m| m.sequence);
        if let Some(message) = &current
            && message.headers.get("KV-Operation").is_none()
            && (message.payload == bytes || rel.starts_with("policies/"))
        {
            self.note(rel, found);
            return Ok(());
        }
        if found < expected {
            tracing::warn!(entry = %rel, expected, found, "the shared store is behind this replica: NATS lost changes; taking its revision and re-reading it");
            self.inner
                .revisions
                .lock()
                .expect("revisions lock")
                .insert(rel.to_string(), found);
            self.inner.regressed.store(true, Ordering::SeqCst);
        }
        self.inner.metrics.conflicts.inc();
        Err(state::Error::Conflict {
            entry: rel.to_string(),
        })
    }

    /// Deletes `rel` from the shared store if it is a shared entry, compare-and-set as
    /// [`AdminStore::put`].
    ///
    /// # Errors
    ///
    /// As [`AdminStore::put`].
    pub fn delete(&self, rel: &str) -> Result<(), state::Error> {
        match place(rel) {
            Place::Local => Ok(()),
            Place::Object => {
                let objects = self.inner.objects.clone();
                let rel = rel.to_string();
                self.block(async move {
                    match objects.delete(&rel).await {
                        Err(e) if e.kind() == object_store::DeleteErrorKind::NotFound => Ok(()),
                        other => other,
                    }
                })
            }
            Place::Kv => {
                let expected = self.revision(rel);
                if expected == 0 {
                    return Ok(());
                }
                let kv = self.inner.kv.clone();
                let key = key_of(rel);
                let result = self.block(async move {
                    Ok::<_, String>(kv.delete_expect_revision(&key, Some(expected)).await)
                })?;
                match result {
                    Ok(()) => {
                        self.note(rel, 0);
                        Ok(())
                    }
                    Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => {
                        self.inner.metrics.conflicts.inc();
                        Err(state::Error::Conflict {
                            entry: rel.to_string(),
                        })
                    }
                    Err(e) => Err(state::Error::Unavailable {
                        reason: e.to_string(),
                    }),
                }
            }
        }
    }

    /// The shared value of `rel`, creating it with `bytes` when absent (the first
    /// replica's wins).
    ///
    /// # Errors
    ///
    /// [`state::Error::Unavailable`].
    pub fn get_or_create(&self, rel: &str, bytes: &[u8]) -> Result<Vec<u8>, state::Error> {
        let kv = self.inner.kv.clone();
        let key = key_of(rel);
        let value = bytes::Bytes::copy_from_slice(bytes);
        self.block(async move {
            match kv.create(&key, value.clone()).await {
                Ok(_) => Ok(value.to_vec()),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let current = kv.get(&key).await.map_err(|e| e.to_string())?;
                    current
                        .map(|b| b.to_vec())
                        .ok_or_else(|| format!("{key} vanished"))
                }
                Err(e) => Err(e.to_string()),
            }
        })
    }

    /// Records that this replica has seen `rel` at `revision` (0: absent); never moves
    /// backwards except to 0 for a deletion.
    fn note(&self, rel: &str, revision: u64) {
        let mut revisions = self.inner.revisions.lock().expect("revisions lock");
        let r = revisions.entry(rel.to_string()).or_default();
        if revision == 0 || revision > *r {
            *r = revision;
        }
    }

    fn revision(&self, rel: &str) -> u64 {
        let revisions = self.inner.revisions.lock().expect("revisions lock");
        revisions.get(rel).copied().unwrap_or(0)
    }

    /// Runs a JetStream call from a blocking context, within [`WRITE_TIMEOUT`]; refused
    /// at once while the link is down.
    fn block<T, E: std::fmt::Display>(
        &self,
        f: impl Future<Output = Result<T, E>>,
    ) -> Result<T, state::Error> {
        block_on_jetstream(&self.inner.client, &self.inner.runtime, WRITE_TIMEOUT, f)
            .map_err(|reason| state::Error::Unavailable { reason })
    }

    /// Fills `state` (this replica's cache) with every shared entry and drops cached
    /// entries the store no longer holds, so start-up restores exactly the cluster's
    /// state. Returns once done; the watcher then follows from where this left off.
    ///
    /// # Errors
    ///
    /// [`Error::Setup`] when the bucket cannot be read.
    pub async fn sync(&self, state: &StateDir) -> Result<usize, Error> {
        let fail = |e: String| Error::Setup {
            what: format!("reading {}", self.inner.kv.name),
            source: e.into(),
        };
        let kv = self.inner.kv.clone();
        // NB: the sequence is taken before the keys are listed: the watcher re-reads
        // anything written meanwhile, and skips what this pass already applied.
        let last = kv.status().await.map_err(|e| fail(e.to_string()))?;
        let last = last.info.state.last_sequence;
        let mut keys = kv.keys().await.map_err(|e| fail(e.to_string()))?;
        let mut seen = HashSet::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| fail(e.to_string()))?;
            let Some(entry) = kv.entry(&key).await.map_err(|e| fail(e.to_string()))? else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let change = self.change(entry).await.map_err(fail)?;
            change.commit(state).map_err(|e| fail(format!("{e:#}")))?;
            seen.insert(change.rel);
        }
        prune(state, &seen).map_err(|e| fail(format!("{e:#}")))?;
        self.inner.applied_up_to.store(last, Ordering::SeqCst);
        Ok(seen.len())
    }

    /// Reads what an entry's change needs: its value and, for a policy, its component.
    async fn change(&self, entry: kv::Entry) -> Result<Change, String> {
        let rel = rel_of(&entry.key);
        let value = match entry.operation {
            kv::Operation::Put => Some(entry.value.to_vec()),
            _ => None,
        };
        let component = match (&value, component_of(&rel)) {
            (Some(_), Some(wasm)) => {
                let mut object = self
                    .inner
                    .objects
                    .get(&wasm)
                    .await
                    .map_err(|e| format!("{wasm}: {e}"))?;
                let mut bytes = Vec::new();
                object
                    .read_to_end(&mut bytes)
                    .await
                    .map_err(|e| format!("{wasm}: {e}"))?;
                Some((wasm, bytes))
            }
            _ => None,
        };
        Ok(Change {
            rel,
            value,
            component,
            revision: entry.revision,
            store: self.clone(),
        })
    }

    /// Follows the bucket from where [`AdminStore::sync`] left off, for as long as the
    /// process lives, handing each change another replica made to `apply` (on a blocking
    /// thread, one at a time, in revision order). Changes this replica made itself, or
    /// already applied, are skipped. When the link drops, it resumes after the last
    /// applied revision once NATS is back, so a replica resyncs after an outage.
    pub fn follow(&self, apply: impl Fn(Change) -> Result<(), String> + Send + Sync + 'static) {
        let store = self.clone();
        let apply = Arc::new(apply);
        tokio::spawn(async move {
            loop {
                while !is_connected(&store.inner.client) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // NB: right after NATS restarts the bucket may not answer yet; the watch
                // starts once it is known whether this replica is ahead of it.
                if !store.replay_if_regressed().await {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                let link = store.inner.metrics.reconnects.get();
                let from = store.inner.applied_up_to.load(Ordering::SeqCst) + 1;
                match store.inner.kv.watch_all_from_revision(from).await {
                    Ok(mut watch) => {
                        let mut check = tokio::time::interval(WATCH_CHECK);
                        let mut behind_at = None;
                        loop {
                            tokio::select! {
                                next = watch.next() => match next {
                                    Some(Ok(entry)) => store.apply(entry, &apply).await,
                                    Some(Err(e)) => {
                                        tracing::warn!(error = %e, "shared state watch failed; resuming");
                                        break;
                                    }
                                    None => break,
                                },
                                _ = check.tick() => {
                                    // NB: a watch can stall silently when its server goes
                                    // away; one behind the bucket for a whole check restarts.
                                    if store.inner.regressed.load(Ordering::SeqCst) {
                                        break;
                                    }
                                    if store.inner.metrics.reconnects.get() != link {
                                        tracing::info!("the NATS link came back; resuming the shared state watch");
                                        break;
                                    }
                                    let applied = store.inner.applied_up_to.load(Ordering::SeqCst);
                                    let last = store.inner.kv.status().await.map(|s| s.info.state.last_sequence);
                                    if last.is_ok_and(|l| l > applied) {
                                        if behind_at == Some(applied) {
                                            tracing::warn!("shared state watch stalled; resuming");
                                            break;
                                        }
                                        behind_at = Some(applied);
                                    } else {
                                        behind_at = None;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "shared state watch not started"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    /// When the bucket is behind what this replica saw (NATS restarted without the latest
    /// changes, or from a backup), found by a write or by the bucket's last revision as
    /// the watch (re)starts, forgets what it saw so the watch replays the bucket from
    /// the start and the replica converges on it. Without this the replica would skip
    /// new changes whose revisions it had already seen used. False while the bucket's
    /// state cannot be read.
    async fn replay_if_regressed(&self) -> bool {
        let applied = self.inner.applied_up_to.load(Ordering::SeqCst);
        let behind = match self.inner.kv.status().await {
            Ok(s) => s.info.state.last_sequence < applied,
            Err(e) => {
                tracing::debug!(error = %e, "shared state bucket not readable yet");
                return false;
            }
        };
        if self.inner.regressed.swap(false, Ordering::SeqCst) || behind {
            tracing::warn!(
                applied,
                "the shared store is behind this replica (NATS lost changes); re-reading it"
            );
            self.inner.revisions.lock().expect("revisions lock").clear();
            self.inner.applied_up_to.store(0, Ordering::SeqCst);
        }
        true
    }

    async fn apply(
        &self,
        entry: kv::Entry,
        apply: &Arc<impl Fn(Change) -> Result<(), String> + Send + Sync + 'static>,
    ) {
        let sequence = entry.revision;
        let rel = rel_of(&entry.key);
        let known = self.revision(&rel);
        let is_delete = entry.operation != kv::Operation::Put;
        let fresh = if is_delete {
            known != 0 && sequence > known
        } else {
            sequence > known
        };
        if fresh {
            let outcome = match self.change(entry).await {
                Ok(change) => {
                    let apply = apply.clone();
                    tokio::task::spawn_blocking(move || apply(change))
                        .await
                        .unwrap_or_else(|e| Err(e.to_string()))
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {
                    self.inner.metrics.applied.inc();
                    tracing::info!(entry = %rel, revision = sequence, "applied a change from another replica");
                }
                Err(error) => {
                    self.inner.metrics.failed.inc();
                    tracing::warn!(entry = %rel, revision = sequence, %error, "a change from another replica could not be applied");
                }
            }
        }
        self.inner
            .applied_up_to
            .fetch_max(sequence, Ordering::SeqCst);
    }
}

/// A write the store refused.
enum Refused {
    Conflict,
    Other(String),
}

/// Removes cached shared entries (and a policy's component and artifact) that are not in
/// `seen`.
fn prune(state: &StateDir, seen: &HashSet<String>) -> Result<(), state::Error> {
    let mut dirs: Vec<String> = ["tenants", "policies", "backends", "removed-backends"]
        .map(String::from)
        .into();
    for ns in state.list_dirs("policies")? {
        dirs.push(format!("policies/{ns}"));
    }
    for dir in dirs {
        for file in state.list(&dir)? {
            let rel = format!("{dir}/{file}");
            let meta = match rel.rsplit_once('.') {
                Some((base, "wasm" | "cwasm")) => format!("{base}.json"),
                _ => rel.clone(),
            };
            if place(&meta) == Place::Kv && !seen.contains(&meta) {
                tracing::info!(entry = %rel, "dropping a cached entry the cluster no longer holds");
                state.remove_local(&rel)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_entries_are_shared_and_caches_stay_local() {
        for (rel, want) in [
            ("tenants/acme.json", Place::Kv),
            ("policies/p@0123456789ab.json", Place::Kv),
            ("policies/acme/p@0123456789ab.json", Place::Kv),
            ("policies/acme/p@0123456789ab.wasm", Place::Object),
            ("policies/acme/p@0123456789ab.cwasm", Place::Local),
            ("backends/b1.json", Place::Kv),
            ("removed-backends/b2", Place::Kv),
            ("cache-salt.key", Place::Kv),
            ("quarantine/tenants/acme.json", Place::Local),
            ("tenants/acme/nested.json", Place::Local),
            ("audit/2026-11-30.jsonl", Place::Local),
        ] {
            assert_eq!(place(rel), want, "{rel}");
        }
    }

    #[test]
    fn keys_round_trip_and_avoid_characters_nats_refuses() {
        let rel = "policies/acme/p@0123456789ab.json";
        let key = key_of(rel);
        assert!(!key.contains('@'), "{key}");
        assert_eq!(rel_of(&key), rel);
        assert_eq!(
            component_of(rel).as_deref(),
            Some("policies/acme/p@0123456789ab.wasm")
        );
        assert_eq!(component_of("tenants/acme.json"), None);
    }
}
