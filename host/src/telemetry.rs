//! Logging setup and the names of Switchyard's spans and metrics.
//!
//! Spans: `request{id, tenant, model}` per client request, `decide{policy, version}`
//! around the pipeline, `forward{backend, attempt}` per attempt; outcome fields start
//! empty and are recorded once. Probes run in their own root `probe{backend}` spans.
//!
//! Metrics (one [`prometheus_client`] registry per app, no globals):
//! `switchyard_requests_total{tenant,backend,status}`, `switchyard_ttfb_seconds{backend}`,
//! `switchyard_retries_total{backend}`, `switchyard_client_fields_stripped_total{field}`,
//! `switchyard_connections_refused_total{listener, reason}`,
//! `switchyard_stream_resumes_total{from,to,reason}`, `switchyard_stream_resume_seam_seconds`,
//! the `switchyard_backend_*` gauges of [`crate::pool::PoolCollector`] (health, drain,
//! breaker, in-flight, scraped load), `switchyard_kv_events_rejected_total{backend,reason}`
//! of [`switchyard_kv::KvCollector`], the policy runtime's `switchyard_policy_*` /
//! `switchyard_decision_*`, and the state directory's `switchyard_state_damaged_entries_total`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Installs the global `tracing` subscriber: human-readable lines on stderr, filtered by
/// `RUST_LOG` (default `info`). Safe to call more than once; later calls do nothing.
pub fn init_logging() {
    init_logging_at("info");
}

/// As [`init_logging`], with `default` (e.g. `warn`) as the filter when `RUST_LOG` is
/// unset.
pub fn init_logging_at(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Labels of a finished request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Tenant name.
    pub tenant: String,
    /// Backend that served it; empty when none did.
    pub backend: String,
    /// HTTP status returned to the client.
    pub status: u16,
}

/// Labels naming a backend.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// Backend name.
    pub backend: String,
}

/// Labels naming a request body field.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FieldLabels {
    /// Field name.
    pub field: String,
}

/// Labels of a stream resumed on another backend.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResumeLabels {
    /// The backend whose leg ended.
    pub from: String,
    /// The backend the stream went on on.
    pub to: String,
    /// Why the leg ended: `transport`, `closed_early`, `engine_error`, `idle`, `drained`.
    pub reason: String,
}

/// The data plane's own metrics. Cheap to clone; clones share values.
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    /// Requests by tenant, backend and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from receiving a request to the backend's first body byte, seconds.
    pub ttfb_seconds: Family<BackendLabels, Histogram>,
    /// Attempts that failed and were retried on another backend, by failed backend.
    pub retries: Family<BackendLabels, Counter>,
    /// Router-owned fields removed from client bodies, by field.
    pub stripped_fields: Family<FieldLabels, Counter>,
    /// Streams resumed on another backend.
    pub stream_resumes: Family<ResumeLabels, Counter>,
    /// The seam of a resumed stream as the client sees it: from the old backend's last
    /// token to the new backend's first, seconds.
    pub resume_seam_seconds: Histogram,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        ProxyMetrics {
            requests: Family::default(),
            // 1 ms .. ~65 s
            ttfb_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 17))
            }),
            retries: Family::default(),
            stripped_fields: Family::default(),
            stream_resumes: Family::default(),
            // 0.5 ms .. ~64 s, in steps of 1.5x
            resume_seam_seconds: Histogram::new(exponential_buckets(0.0005, 1.5, 30)),
        }
    }
}

impl ProxyMetrics {
    /// Registers every metric under its `switchyard_*` name.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "switchyard_requests",
            "Client requests by tenant, backend and status",
            self.requests.clone(),
        );
        registry.register(
            "switchyard_ttfb_seconds",
            "Router-side time to the backend's first body byte",
            self.ttfb_seconds.clone(),
        );
        registry.register(
            "switchyard_retries",
            "Failed attempts retried on another backend",
            self.retries.clone(),
        );
        registry.register(
            "switchyard_client_fields_stripped",
            "Router-owned fields removed from client request bodies before forwarding",
            self.stripped_fields.clone(),
        );
        registry.register(
            "switchyard_stream_resumes",
            "Streams resumed on another backend after their backend failed or drained",
            self.stream_resumes.clone(),
        );
        registry.register(
            "switchyard_stream_resume_seam_seconds",
            "Time from the old backend's last token to the new backend's first, as the client sees it",
            self.resume_seam_seconds.clone(),
        );
    }
}
