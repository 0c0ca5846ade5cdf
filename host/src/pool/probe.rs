//! The per-backend prober: health checks and `/metrics` scrapes on their own intervals,
//! each in the backend's own root span. Ends when the backend is removed and dropped.

use std::sync::{Arc, Weak};

use tracing::Instrument;

use super::PoolSettings;
use super::backend::Backend;
use super::scrape::{self, ScrapeError};
use switchyard_kv::burst::Burst;

/// Starts probing `backend`; the first health check runs at once.
pub(crate) fn spawn(backend: &Arc<Backend>, settings: PoolSettings, client: reqwest::Client) {
    let span = tracing::info_span!(parent: None, "probe", backend = %backend.spec.name);
    let weak = Arc::downgrade(backend);
    tokio::spawn(run(weak, settings, client).instrument(span));
}

async fn run(weak: Weak<Backend>, settings: PoolSettings, client: reqwest::Client) {
    let mut health = tokio::time::interval(settings.health_interval);
    let mut scrape = tokio::time::interval(settings.scrape_interval);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    scrape.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let oversized = Burst::default();
    loop {
        let is_health = tokio::select! {
            _ = health.tick() => true,
            _ = scrape.tick() => false,
        };
        let Some(backend) = weak.upgrade().filter(|b| !b.is_removed()) else {
            return;
        };
        if is_health {
            let ok = check_health(&client, &backend, &settings).await;
            backend.record_health(ok, settings.unhealthy_after);
        } else if backend.spec.engine.has_metrics() {
            scrape_once(&client, &backend, &settings, &oversized).await;
        }
    }
}

async fn check_health(
    client: &reqwest::Client,
    backend: &Backend,
    settings: &PoolSettings,
) -> bool {
    let res = client
        .get(backend.spec.health_url())
        .timeout(settings.probe_timeout)
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => true,
        Ok(r) => {
            tracing::debug!(status = %r.status(), "health check failed");
            false
        }
        Err(e) => {
            tracing::debug!(error = %e, "health check failed");
            false
        }
    }
}

/// One scrape; a failure leaves the last figures to go stale. An oversized body is
/// warned about once per burst (`oversized`), other failures at debug level.
async fn scrape_once(
    client: &reqwest::Client,
    backend: &Backend,
    settings: &PoolSettings,
    oversized: &Burst,
) {
    let res = client
        .get(backend.spec.endpoint("/metrics"))
        .timeout(settings.probe_timeout)
        .send()
        .await
        .and_then(|r| r.error_for_status());
    let text = match res {
        Ok(r) => scrape::read_body(r, scrape::MAX_METRICS_BYTES).await,
        Err(e) => Err(ScrapeError::Fetch(e)),
    };
    match text {
        Ok(t) => match scrape::parse(backend.spec.engine, &t) {
            Ok(load) => backend.set_load(load),
            Err(e) => tracing::debug!(error = %e, "scrape unusable"),
        },
        Err(e @ ScrapeError::TooLarge { .. }) => {
            if let Some(suppressed) = oversized.admit() {
                tracing::warn!(error = %e, suppressed, "scrape failed; figures go stale");
            }
        }
        Err(e) => tracing::debug!(error = %e, "scrape failed"),
    }
}
