//! [`AuditStream`]: the cluster's audit log, a JetStream stream every replica appends its
//! audit records to, so `GET /admin/audit` on any replica shows the calls all of them took.
//! Each replica still writes its own `audit.jsonl` first (the record of last resort while
//! NATS is away).

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

use super::{Cluster, Error, block_on_jetstream};
use crate::admin::audit::AuditRecord;

/// Most bytes the stream keeps; the oldest records go first.
const MAX_BYTES: i64 = 64 * 1024 * 1024;
/// How long an append or a query waits for JetStream.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Records read per fetch.
const FETCH: usize = 512;

/// The shared audit stream. Cheap to clone.
#[derive(Clone)]
pub struct AuditStream {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    subject: String,
    replica: String,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for AuditStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditStream")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl AuditStream {
    /// Opens the stream `switchyard-<name>-audit` (subjects `switchyard.<name>.audit.>`),
    /// creating it with `stream_replicas` replicas on first use. Call inside the runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Setup`] when the stream can be neither opened nor created.
    pub async fn open(cluster: &Cluster) -> Result<AuditStream, Error> {
        let config = cluster.config();
        let mut js = jetstream::new(cluster.client().clone());
        js.set_timeout(TIMEOUT);
        let name = format!("switchyard-{}-audit", config.name);
        let subject = format!("switchyard.{}.audit", config.name);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                description: Some("Switchyard admin audit records".into()),
                subjects: vec![format!("{subject}.>")],
                storage: stream::StorageType::File,
                num_replicas: config.stream_replicas,
                max_bytes: MAX_BYTES,
                discard: stream::DiscardPolicy::Old,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Setup {
                what: name,
                source: Box::new(e),
            })?;
        Ok(AuditStream {
            client: cluster.client().clone(),
            js,
            stream,
            subject,
            replica: config.replica.clone(),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// This replica's id, stamped on the records it appends.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Appends `record` and waits for JetStream's acknowledgement. Blocking.
    ///
    /// # Errors
    ///
    /// Why the record is not in the stream (NATS unreachable, no answer in time).
    pub fn append(&self, record: &AuditRecord) -> Result<(), String> {
        let subject = self.subject_of(record.tenant.as_deref());
        let payload = serde_json::to_vec(record).expect("audit record serializes");
        let js = self.js.clone();
        self.block(async move {
            js.publish(subject, payload.into())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    /// The records of every replica, in the order the stream took them: with `since`
    /// (Unix ms) the first `limit` at or after it, without the newest `limit`; only
    /// `tenant`'s when given. Blocking.
    ///
    /// # Errors
    ///
    /// Why the stream could not be read.
    pub fn query(
        &self,
        since: Option<i64>,
        limit: usize,
        tenant: Option<&str>,
    ) -> Result<Vec<AuditRecord>, String> {
        let filter_subject = match tenant {
            Some(t) => self.subject_of(Some(t)),
            None => format!("{}.>", self.subject),
        };
        let deliver_policy = match since {
            Some(ms) => consumer::DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(ms) * 1_000_000,
                )
                .map_err(|e| e.to_string())?,
            },
            None => consumer::DeliverPolicy::All,
        };
        let every_tenant = tenant.is_none();
        let mut stream = self.stream.clone();
        self.block(async move {
            // NB: the newest `limit` of every tenant's records are the stream's last
            // `limit` messages: start there rather than read the stream through.
            let deliver_policy = match deliver_policy {
                consumer::DeliverPolicy::All if every_tenant => {
                    let last = stream
                        .info()
                        .await
                        .map_err(|e| e.to_string())?
                        .state
                        .last_sequence;
                    consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: last.saturating_sub(limit.max(1) as u64 - 1).max(1),
                    }
                }
                other => other,
            };
            let mut consumer = stream
                .create_consumer(consumer::pull::Config {
                    filter_subject,
                    deliver_policy,
                    ack_policy: consumer::AckPolicy::None,
                    inactive_threshold: Duration::from_secs(30),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            let pending = consumer
                .info()
                .await
                .map_err(|e| e.to_string())?
                .num_pending;
            let wanted = match since {
                Some(_) => pending.min(limit as u64),
                None => pending,
            };
            // NB: without `since`, the newest `limit` of one tenant's records: read them
            // all, keep the tail.
            let skip = match since {
                Some(_) => 0,
                None => pending.saturating_sub(limit as u64),
            };
            let mut records = Vec::new();
            let mut read = 0u64;
            while read < wanted {
                let mut batch = consumer
                    .fetch()
                    .max_messages(FETCH.min((wanted - read) as usize))
                    .messages()
                    .await
                    .map_err(|e| e.to_string())?;
                let before = read;
                while let Some(message) = batch.next().await {
                    let message = message.map_err(|e| e.to_string())?;
                    read += 1;
                    if read <= skip {
                        continue;
                    }
                    match serde_json::from_slice::<AuditRecord>(&message.payload) {
                        Ok(r) => records.push(r),
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable shared audit record skipped")
                        }
                    }
                }
                if read == before {
                    break;
                }
            }
            let name = consumer.cached_info().name.clone();
            let _ = stream.delete_consumer(&name).await;
            Ok(records)
        })
    }

    /// The subject of a tenant's records (`_` for calls that concern none); `.` in a
    /// tenant's name, a subject separator, becomes `~`, which names never hold.
    fn subject_of(&self, tenant: Option<&str>) -> String {
        match tenant {
            Some(t) => format!("{}.{}", self.subject, t.replace('.', "~")),
            None => format!("{}._", self.subject),
        }
    }

    fn block<T>(&self, f: impl Future<Output = Result<T, String>>) -> Result<T, String> {
        block_on_jetstream(&self.client, &self.runtime, TIMEOUT, f)
    }
}
