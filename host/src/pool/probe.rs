//! The per-backend prober: health checks and `/metrics` scrapes on their own intervals,
//! each in the backend's own root span. Ends when the backend is removed and dropped.

use std::sync::{Arc, Weak};

use tracing::Instrument;

use super::PoolSettings;
use super::backend::Backend;
use super::scrape::{self, EngineKind, ScrapeError};
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
    // llama.cpp and SGLang report their KV capacity outside their metrics: asked until known.
    let mut learned = None;
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
            if learned.is_none() {
                learned = learn_cache(&client, &backend, &settings).await;
            }
            scrape_once(&client, &backend, &settings, &oversized, learned).await;
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

/// The cache a backend reports outside its metrics: llama.cpp at `/props`, SGLang at
/// `/get_server_info`; `None` for other engines, and (logged at debug) when it cannot be
/// read.
async fn learn_cache(
    client: &reqwest::Client,
    backend: &Backend,
    settings: &PoolSettings,
) -> Option<scrape::EngineCache> {
    type Parse = fn(&[u8]) -> Option<scrape::EngineCache>;
    let (path, parse): (&str, Parse) = match backend.spec.engine {
        EngineKind::Llamacpp => ("/props", scrape::llamacpp_capacity),
        EngineKind::Sglang => ("/get_server_info", scrape::sglang_capacity),
        _ => return None,
    };
    let res = client
        .get(backend.spec.endpoint(path))
        .timeout(settings.probe_timeout)
        .send()
        .await
        .and_then(|r| r.error_for_status());
    let body = match res {
        Ok(r) => scrape::read_body(r, scrape::MAX_METRICS_BYTES).await,
        Err(e) => Err(ScrapeError::Fetch(e)),
    };
    let capacity = body.ok().and_then(|b| parse(b.as_bytes()));
    match capacity {
        Some(c) => tracing::info!(
            slots = c.slots,
            tokens = c.tokens,
            path,
            "KV capacity learned"
        ),
        None => tracing::debug!(path, "no KV capacity reported"),
    }
    capacity
}

/// One scrape; a failure leaves the last figures to go stale. An oversized body is
/// warned about once per burst (`oversized`), other failures at debug level. A capacity
/// learned elsewhere (`learned`: llama.cpp's `/props`, SGLang's `/get_server_info`)
/// fills in what the metrics do not say.
async fn scrape_once(
    client: &reqwest::Client,
    backend: &Backend,
    settings: &PoolSettings,
    oversized: &Burst,
    learned: Option<scrape::EngineCache>,
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
            Ok(mut load) => {
                if let Some(c) = learned {
                    load.kv_capacity_tokens = load.kv_capacity_tokens.or(Some(c.tokens));
                    load.kv_prompt_slots = c.slots;
                }
                backend.set_load(load);
            }
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
