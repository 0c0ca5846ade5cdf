//! [`Signals`]: the routing signals replicas exchange over core NATS (not JetStream:
//! they are fresh or worthless), always off the request path.
//!
//! - Load: every `load_interval` each replica publishes its own in-flight requests and
//!   prefill tokens per backend on `switchyard.<cluster>.load`; each replica sums the
//!   other replicas' reports received within `load_expiry` into each backend's peer load,
//!   which candidates add to their own. A replica that dies stops reporting and its
//!   contribution expires.
//! - KV records (approximate mode): the backend that served a prompt and the prompt's
//!   block keys, queued by the request path on a bounded channel (dropped, and counted,
//!   when full), published in batches on `switchyard.<cluster>.kv`, and recorded into the
//!   other replicas' indexes as if they had routed the request themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Cluster, Error, is_connected};
use crate::pool::Pool;
use switchyard_kv::KvIndex;

/// Records waiting to be published; beyond it the request path drops them.
const RECORD_QUEUE: usize = 4096;
/// Most records per published batch.
const RECORD_BATCH: usize = 256;
/// Longest a record waits for its batch to fill.
const RECORD_LINGER: Duration = Duration::from_millis(5);

/// One replica's load report.
#[derive(Serialize, Deserialize)]
struct LoadReport {
    replica: String,
    /// (backend, in-flight requests, in-flight prefill tokens), backends with any.
    backends: Vec<(String, u32, u32)>,
}

/// A batch of approximate-mode KV records.
#[derive(Serialize, Deserialize)]
struct RecordBatch {
    replica: String,
    records: Vec<Record>,
}

/// A backend served a prompt with these block keys.
#[derive(Serialize, Deserialize)]
struct Record {
    backend: String,
    keys: Vec<u64>,
}

/// What another replica last reported.
struct PeerLoad {
    at: Instant,
    backends: HashMap<String, (u32, u32)>,
}

/// This replica's end of the signal exchange. Cheap to clone.
#[derive(Clone)]
pub struct Signals {
    records: mpsc::Sender<Record>,
    dropped: Counter,
}

impl Signals {
    /// Subscribes to the other replicas' signals and starts publishing this one's:
    /// its load from `pool`, the records queued with [`Signals::record`]; others' records
    /// go into `kv`.
    ///
    /// # Errors
    ///
    /// [`Error::Setup`] when the subjects cannot be subscribed to.
    pub async fn start(
        cluster: &Cluster,
        pool: Pool,
        kv: KvIndex,
        registry: &mut Registry,
    ) -> Result<Signals, Error> {
        let config = cluster.config();
        let client = cluster.client().clone();
        let load_subject = format!("switchyard.{}.load", config.name);
        let kv_subject = format!("switchyard.{}.kv", config.name);
        let subscribe = |subject: String| {
            let client = client.clone();
            async move {
                client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|e| Error::Setup {
                        what: subject,
                        source: Box::new(e),
                    })
            }
        };
        let mut loads = subscribe(load_subject.clone()).await?;
        let mut batches = subscribe(kv_subject.clone()).await?;
        let me = config.replica.clone();
        let peers: Arc<Mutex<HashMap<String, PeerLoad>>> = Arc::default();

        // Others' load reports.
        tokio::spawn({
            let peers = peers.clone();
            let me = me.clone();
            async move {
                while let Some(msg) = loads.next().await {
                    let Ok(report) = serde_json::from_slice::<LoadReport>(&msg.payload) else {
                        continue;
                    };
                    if report.replica == me {
                        continue;
                    }
                    let backends = report
                        .backends
                        .into_iter()
                        .map(|(b, r, p)| (b, (r, p)))
                        .collect();
                    peers.lock().expect("peer load lock").insert(
                        report.replica,
                        PeerLoad {
                            at: Instant::now(),
                            backends,
                        },
                    );
                }
            }
        });

        // This replica's load out, others' load in, every interval.
        let interval = config.load_interval;
        let expiry = config.load_expiry;
        tokio::spawn({
            let client = client.clone();
            let pool = pool.clone();
            let me = me.clone();
            async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let fleet = pool.fleet();
                    let report = LoadReport {
                        replica: me.clone(),
                        backends: fleet
                            .backends
                            .iter()
                            .filter(|b| b.in_flight_requests() > 0)
                            .map(|b| {
                                (
                                    b.spec.name.to_string(),
                                    b.in_flight_requests(),
                                    b.in_flight_prefill_tokens(),
                                )
                            })
                            .collect(),
                    };
                    // NB: while NATS is down nothing is sent (the client would queue, then
                    // wait); peers' figures expire meanwhile, so routing uses local load.
                    if is_connected(&client) {
                        let payload = serde_json::to_vec(&report).expect("load report serializes");
                        let _ = client.publish(load_subject.clone(), payload.into()).await;
                    }
                    let mut peers = peers.lock().expect("peer load lock");
                    peers.retain(|_, p| p.at.elapsed() < expiry);
                    for b in &fleet.backends {
                        let (mut requests, mut prefill) = (0u32, 0u32);
                        for p in peers.values() {
                            if let Some((r, t)) = p.backends.get(b.spec.name.as_str()) {
                                requests = requests.saturating_add(*r);
                                prefill = prefill.saturating_add(*t);
                            }
                        }
                        b.set_peer_load(requests, prefill);
                    }
                }
            }
        });

        // Others' KV records into this replica's index.
        let applied = cluster.metrics().applied.clone();
        tokio::spawn({
            let me = me.clone();
            let pool = pool.clone();
            async move {
                while let Some(msg) = batches.next().await {
                    let Ok(batch) = serde_json::from_slice::<RecordBatch>(&msg.payload) else {
                        continue;
                    };
                    if batch.replica == me {
                        continue;
                    }
                    let fleet = pool.fleet();
                    for r in &batch.records {
                        let Some(Some(id)) = kv.backend_ids([r.backend.as_str()]).pop() else {
                            continue;
                        };
                        let capacity = fleet
                            .backends
                            .iter()
                            .find(|b| b.spec.name.as_str() == r.backend)
                            .and_then(|b| b.kv_capacity());
                        kv.record_keys(&r.keys, id, capacity);
                    }
                    applied.inc();
                }
            }
        });

        // This replica's KV records out, batched.
        let (tx, mut rx) = mpsc::channel::<Record>(RECORD_QUEUE);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut records = vec![first];
                let linger = tokio::time::sleep(RECORD_LINGER);
                tokio::pin!(linger);
                while records.len() < RECORD_BATCH {
                    tokio::select! {
                        next = rx.recv() => match next {
                            Some(r) => records.push(r),
                            None => break,
                        },
                        () = &mut linger => break,
                    }
                }
                let batch = RecordBatch {
                    replica: me.clone(),
                    records,
                };
                if is_connected(&client) {
                    let payload = serde_json::to_vec(&batch).expect("record batch serializes");
                    let _ = client.publish(kv_subject.clone(), payload.into()).await;
                }
            }
        });

        let dropped = Counter::default();
        registry.register(
            "switchyard_cluster_kv_records_dropped",
            "Approximate-mode KV records not shared with other replicas: the queue was full",
            dropped.clone(),
        );
        Ok(Signals {
            records: tx,
            dropped,
        })
    }

    /// Queues for the other replicas that `backend` served a prompt with these block
    /// keys. Never waits: when the queue is full the record is dropped and counted.
    pub fn record(&self, backend: &str, keys: &[u64]) {
        let record = Record {
            backend: backend.to_string(),
            keys: keys.to_vec(),
        };
        if self.records.try_send(record).is_err() {
            self.dropped.inc();
        }
    }
}
