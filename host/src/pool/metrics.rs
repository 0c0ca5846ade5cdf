//! `switchyard_backend_*` gauges, read from the live fleet at each Prometheus scrape so
//! they can never disagree with it.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Pool;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

/// A collector for the fleet's state gauges.
#[derive(Debug)]
pub struct PoolCollector {
    pool: Pool,
}

impl PoolCollector {
    /// A collector over `pool`.
    pub fn new(pool: Pool) -> PoolCollector {
        PoolCollector { pool }
    }
}

type Read = fn(&super::BackendStatus) -> f64;

const GAUGES: &[(&str, &str, Read)] = &[
    (
        "switchyard_backend_healthy",
        "1 when the backend passes health checks",
        |s| f64::from(u8::from(s.healthy)),
    ),
    (
        "switchyard_backend_draining",
        "1 when the backend is draining",
        |s| f64::from(u8::from(s.draining)),
    ),
    (
        "switchyard_backend_breaker_state",
        "Circuit breaker: 0 closed, 1 open, 2 half-open",
        |s| match s.breaker {
            "closed" => 0.0,
            "open" => 1.0,
            _ => 2.0,
        },
    ),
    (
        "switchyard_backend_in_flight_requests",
        "Requests the router has in flight to the backend",
        |s| f64::from(s.in_flight_requests),
    ),
    (
        "switchyard_backend_in_flight_prefill_tokens",
        "Prompt tokens in flight before their first byte",
        |s| f64::from(s.in_flight_prefill_tokens),
    ),
    (
        "switchyard_backend_waiting_requests",
        "Requests queued in the engine (scraped)",
        |s| s.load.map_or(0.0, |l| f64::from(l.waiting)),
    ),
    (
        "switchyard_backend_running_requests",
        "Requests running in the engine (scraped)",
        |s| s.load.map_or(0.0, |l| f64::from(l.running)),
    ),
    (
        "switchyard_backend_kv_usage_ratio",
        "Fraction of the engine's KV cache in use (scraped)",
        |s| s.load.map_or(0.0, |l| f64::from(l.kv_usage)),
    ),
    (
        "switchyard_backend_metrics_stale",
        "1 when the engine's scraped figures are stale or missing",
        |s| f64::from(u8::from(s.metrics_stale)),
    ),
];

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let statuses = self.pool.statuses();
        for (name, help, read) in GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in &statuses {
                let labels = BackendLabels {
                    backend: s.spec.name.to_string(),
                };
                ConstGauge::new(read(s)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
