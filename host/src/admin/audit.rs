//! The audit log: one JSON line per admin call that changed (or tried to change) state,
//! and per refused call, appended to `<state_dir>/audit.jsonl` and synced to disk before
//! the call's response leaves. The file rotates by size (`audit.1.jsonl` is the newest
//! rotated file, up to [`KEEP_ROTATED`] of them), so its disk use is bounded.
//!
//! Without a state directory the log is kept in memory (the newest
//! [`MEMORY_RECORDS`] records) and lost on restart.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;

use crate::cluster::AuditStream;

/// A file rotates once it would grow past this many bytes.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Rotated files kept beside the current one.
pub const KEEP_ROTATED: usize = 3;
/// Records kept when there is no state directory.
pub const MEMORY_RECORDS: usize = 10_000;

/// One audited call.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Increases by one per record, across restarts.
    pub seq: u64,
    /// When the call ended, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The same instant, milliseconds since the Unix epoch.
    pub unix_ms: i64,
    /// The credential's name; `None` when no valid token was presented.
    pub credential: Option<String>,
    /// `operator` or `tenant`; `None` without a valid token.
    pub role: Option<String>,
    /// The tenant the call concerned: the caller's own for a tenant credential, else the
    /// tenant named in the path, if any.
    pub tenant: Option<String>,
    /// HTTP method.
    pub method: String,
    /// The route, as declared (`/admin/tenants/{tenant}/pipeline`).
    pub route: String,
    /// The path called (`/admin/tenants/acme/pipeline`).
    pub target: String,
    /// What the target was before the call (a pipeline version, a policy version).
    pub before: Option<String>,
    /// What it is after.
    pub after: Option<String>,
    /// The response status.
    pub status: u16,
    /// Cluster mode: the replica that took the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// What a call changed, attached by its handler to the response for the audit record.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// Before the call.
    pub before: Option<String>,
    /// After it.
    pub after: Option<String>,
}

/// The audit log. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    sink: Mutex<Sink>,
    /// Cluster mode: the stream every replica's records also go to.
    shared: Option<AuditStream>,
    failures: Counter,
}

enum Sink {
    File {
        dir: PathBuf,
        file: File,
        bytes: u64,
        next_seq: u64,
    },
    Memory {
        records: VecDeque<AuditRecord>,
        next_seq: u64,
    },
}

const FILE: &str = "audit.jsonl";

fn rotated(dir: &std::path::Path, n: usize) -> PathBuf {
    dir.join(format!("audit.{n}.jsonl"))
}

impl AuditLog {
    /// A log appending to `dir/audit.jsonl` (continuing its sequence numbers), or kept
    /// in memory when `dir` is `None`; in cluster mode each record also goes to the
    /// `shared` stream, which queries then read.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened.
    pub fn open(dir: Option<PathBuf>, shared: Option<AuditStream>) -> std::io::Result<AuditLog> {
        let sink = match dir {
            None => Sink::Memory {
                records: VecDeque::new(),
                next_seq: 1,
            },
            Some(dir) => {
                let path = dir.join(FILE);
                let file = OpenOptions::new().create(true).append(true).open(&path)?;
                let bytes = file.metadata()?.len();
                let last = read_file(&path)?.last().map_or(0, |r| r.seq);
                let last = if last == 0 {
                    // NB: the current file may have just rotated; its predecessor counts.
                    read_file(&rotated(&dir, 1))
                        .ok()
                        .and_then(|r| r.last().map(|r| r.seq))
                        .unwrap_or(0)
                } else {
                    last
                };
                Sink::File {
                    dir,
                    file,
                    bytes,
                    next_seq: last + 1,
                }
            }
        };
        Ok(AuditLog {
            inner: Arc::new(Inner {
                sink: Mutex::new(sink),
                shared,
                failures: Counter::default(),
            }),
        })
    }

    /// Registers `switchyard_audit_write_failures_total`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "switchyard_audit_write_failures",
            "Audit records that could not be written to the audit log",
            self.inner.failures.clone(),
        );
    }

    /// Appends `record` (its `seq` is assigned here) and syncs it to disk, then, in
    /// cluster mode, to the shared stream. Blocking. A failure is logged and counted;
    /// the call it records has already happened.
    pub fn append(&self, mut record: AuditRecord) {
        if let Some(shared) = &self.inner.shared {
            record.replica = Some(shared.replica().to_string());
        }
        self.append_local(&mut record);
        if let Some(shared) = &self.inner.shared
            && let Err(e) = shared.append(&record)
        {
            self.inner.failures.inc();
            tracing::error!(error = %e, ?record, "audit record not shared with the cluster (kept in this replica's audit.jsonl)");
        }
    }

    fn append_local(&self, record: &mut AuditRecord) {
        let mut sink = self.inner.sink.lock().expect("audit lock");
        let result = match &mut *sink {
            Sink::Memory { records, next_seq } => {
                record.seq = *next_seq;
                *next_seq += 1;
                if records.len() == MEMORY_RECORDS {
                    records.pop_front();
                }
                records.push_back(record.clone());
                Ok(())
            }
            Sink::File {
                dir,
                file,
                bytes,
                next_seq,
            } => {
                record.seq = *next_seq;
                let mut line = serde_json::to_vec(&*record).expect("audit record serializes");
                line.push(b'\n');
                let written = (|| {
                    if *bytes > 0 && *bytes + line.len() as u64 > MAX_FILE_BYTES {
                        rotate(dir)?;
                        *file = OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(dir.join(FILE))?;
                        *bytes = 0;
                    }
                    file.write_all(&line)?;
                    file.sync_data()?;
                    *bytes += line.len() as u64;
                    Ok::<_, std::io::Error>(())
                })();
                if written.is_ok() {
                    *next_seq += 1;
                }
                written
            }
        };
        if let Err(e) = result {
            self.inner.failures.inc();
            tracing::error!(error = %e, ?record, "audit record not written");
        }
    }

    /// Records with `unix_ms >= since` (all when `None`) of `tenant` (all when `None`),
    /// oldest first; with `since`, the oldest `limit` of them, without, the newest
    /// `limit`. In cluster mode, every replica's records from the shared stream; while it
    /// cannot be read, this replica's own (logged).
    ///
    /// # Errors
    ///
    /// When a log file cannot be read.
    pub fn query(
        &self,
        since: Option<i64>,
        limit: usize,
        tenant: Option<&str>,
    ) -> std::io::Result<Vec<AuditRecord>> {
        if let Some(shared) = &self.inner.shared {
            match shared.query(since, limit, tenant) {
                Ok(records) => return Ok(records),
                Err(e) => {
                    tracing::warn!(error = %e, "the cluster's audit stream cannot be read; answering with this replica's records")
                }
            }
        }
        self.query_local(since, limit, |r| {
            tenant.is_none_or(|t| r.tenant.as_deref() == Some(t))
        })
    }

    fn query_local(
        &self,
        since: Option<i64>,
        limit: usize,
        keep: impl Fn(&AuditRecord) -> bool,
    ) -> std::io::Result<Vec<AuditRecord>> {
        let all: Vec<AuditRecord> = {
            let sink = self.inner.sink.lock().expect("audit lock");
            match &*sink {
                Sink::Memory { records, .. } => records.iter().cloned().collect(),
                Sink::File { dir, .. } => {
                    let mut all = Vec::new();
                    for n in (1..=KEEP_ROTATED).rev() {
                        all.extend(read_file(&rotated(dir, n))?);
                    }
                    all.extend(read_file(&dir.join(FILE))?);
                    all
                }
            }
        };
        let matching = all
            .into_iter()
            .filter(|r| since.is_none_or(|s| r.unix_ms >= s))
            .filter(|r| keep(r));
        Ok(match since {
            Some(_) => matching.take(limit).collect(),
            None => {
                let v: Vec<AuditRecord> = matching.collect();
                let skip = v.len().saturating_sub(limit);
                v.into_iter().skip(skip).collect()
            }
        })
    }
}

/// Shifts `audit.jsonl` to `audit.1.jsonl`, `.1` to `.2`, ..., dropping the oldest.
fn rotate(dir: &std::path::Path) -> std::io::Result<()> {
    let oldest = rotated(dir, KEEP_ROTATED);
    match std::fs::remove_file(&oldest) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    for n in (1..KEEP_ROTATED).rev() {
        match std::fs::rename(rotated(dir, n), rotated(dir, n + 1)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(dir.join(FILE), rotated(dir, 1))
}

/// The records of one file; none when it does not exist. A line that does not parse
/// (a torn final write) is skipped with a warning.
fn read_file(path: &std::path::Path) -> std::io::Result<Vec<AuditRecord>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        match serde_json::from_str(&line) {
            Ok(r) => out.push(r),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable audit line skipped")
            }
        }
    }
    Ok(out)
}

/// Now as (RFC 3339 with milliseconds, Unix milliseconds).
pub fn now() -> (String, i64) {
    let t = chrono::Utc::now();
    (
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        t.timestamp_millis(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(target: &str) -> AuditRecord {
        let (time, unix_ms) = now();
        AuditRecord {
            seq: 0,
            time,
            unix_ms,
            credential: Some("ops".into()),
            role: Some("operator".into()),
            tenant: None,
            method: "PUT".into(),
            route: "/admin/x".into(),
            target: target.into(),
            before: None,
            after: None,
            status: 200,
            replica: None,
        }
    }

    #[test]
    fn records_survive_reopening_and_keep_their_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(Some(dir.path().into()), None).unwrap();
        log.append(record("a"));
        log.append(record("b"));
        drop(log);
        let log = AuditLog::open(Some(dir.path().into()), None).unwrap();
        log.append(record("c"));
        let all = log.query(None, 10, None).unwrap();
        let seen: Vec<(u64, &str)> = all.iter().map(|r| (r.seq, r.target.as_str())).collect();
        assert_eq!(seen, [(1, "a"), (2, "b"), (3, "c")]);
        assert_eq!(log.query(None, 1, None).unwrap()[0].target, "c");
        let future = all[2].unix_ms + 1;
        assert!(log.query(Some(future), 10, None).unwrap().is_empty());
    }

    #[test]
    fn rotation_bounds_the_files_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(Some(dir.path().into()), None).unwrap();
        let big = "x".repeat(1024 * 1024);
        for _ in 0..80 {
            log.append(record(&big));
        }
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 1 + KEEP_ROTATED);
        let total: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(
            total <= (1 + KEEP_ROTATED as u64) * MAX_FILE_BYTES,
            "{total}"
        );
        let newest = log.query(None, 1, None).unwrap();
        assert_eq!(newest[0].seq, 80);
        drop(log);
        let log = AuditLog::open(Some(dir.path().into()), None).unwrap();
        log.append(record("after"));
        assert_eq!(log.query(None, 1, None).unwrap()[0].seq, 81);
    }
}
