//! Reading an engine's Prometheus `/metrics` into the figures policies use, for each
//! engine kind, with the `prometheus-parse` text parser. A body beyond
//! [`MAX_METRICS_BYTES`] is not read on: the scrape fails and the figures go stale.

use prometheus_parse::{Sample, Scrape, Value};
use serde::{Deserialize, Serialize};

/// Which engine a backend runs; decides how its `/metrics` are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// vLLM (`vllm:*` metrics).
    Vllm,
    /// SGLang (`sglang:*` metrics).
    Sglang,
    /// llama.cpp `llama-server` (`llamacpp:*` metrics, needs `--metrics`).
    Llamacpp,
    /// Any other OpenAI-compatible server; no metrics are scraped (default).
    #[default]
    Openai,
}

impl EngineKind {
    /// The path health checks request.
    pub(super) fn default_health_path(self) -> &'static str {
        match self {
            EngineKind::Openai => "/v1/models",
            _ => "/health",
        }
    }

    /// Whether the engine exposes metrics the router understands.
    pub fn has_metrics(self) -> bool {
        self != EngineKind::Openai
    }
}

/// Largest `/metrics` body a scrape reads (8 MiB; an engine's is typically tens of KiB).
pub const MAX_METRICS_BYTES: usize = 8 << 20;

/// Live figures scraped from an engine.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct EngineLoad {
    /// Requests waiting in the engine's queue.
    pub waiting: u32,
    /// Requests in the engine's running batch.
    pub running: u32,
    /// Fraction of the KV cache in use, [0, 1].
    pub kv_usage: f32,
    /// KV cache capacity in tokens, when the engine reports it (vLLM's
    /// `cache_config_info`: blocks times block size).
    pub kv_capacity_tokens: Option<u64>,
    /// Prompts the cache holds at once when it keeps one per slot (llama.cpp's
    /// `total_slots`).
    pub kv_prompt_slots: Option<u32>,
}

/// What an engine reports of its prefix cache outside its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineCache {
    /// Prompts held at once when the cache keeps one per slot (llama.cpp).
    pub slots: Option<u32>,
    /// Capacity in tokens.
    pub tokens: u64,
}

/// The cache an SGLang server reports at `/get_server_info`: `max_total_num_tokens`, at
/// the top level or in the first of `internal_states` (newer versions). `None` without
/// it, or 0.
pub fn sglang_capacity(info: &[u8]) -> Option<EngineCache> {
    let v: serde_json::Value = serde_json::from_slice(info).ok()?;
    let tokens = v
        .get("max_total_num_tokens")
        .or_else(|| {
            v.get("internal_states")?
                .get(0)?
                .get("max_total_num_tokens")
        })?
        .as_u64()
        .filter(|&t| t > 0)?;
    Some(EngineCache {
        slots: None,
        tokens,
    })
}

/// The cache a llama.cpp `llama-server` reports at `/props`: `total_slots` slots of
/// `default_generation_settings.n_ctx` tokens, each keeping the last prompt it ran.
/// `None` for a body without both, or with either 0.
pub fn llamacpp_capacity(props: &[u8]) -> Option<EngineCache> {
    #[derive(Deserialize)]
    struct Props {
        total_slots: u64,
        default_generation_settings: Generation,
    }
    #[derive(Deserialize)]
    struct Generation {
        n_ctx: u64,
    }
    let p: Props = serde_json::from_slice(props).ok()?;
    let per_slot = p.default_generation_settings.n_ctx;
    (p.total_slots > 0 && per_slot > 0).then(|| EngineCache {
        slots: Some(u32::try_from(p.total_slots).unwrap_or(u32::MAX)),
        tokens: p.total_slots.saturating_mul(per_slot),
    })
}

/// Why a scrape gave no figures.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The request failed, or the body could not be read.
    #[error("fetching /metrics")]
    Fetch(#[source] reqwest::Error),
    /// The body is longer than the scrape reads.
    #[error("metrics body over {limit} bytes, not read on")]
    TooLarge {
        /// The cap, bytes.
        limit: usize,
    },
    /// The text is not Prometheus exposition format.
    #[error("unparsable metrics text")]
    Parse(#[source] std::io::Error),
    /// None of the engine's metric names appear.
    #[error("none of the {0:?} metrics the router reads are present")]
    NoFigures(EngineKind),
}

/// Reads a `/metrics` response's body, up to `limit` bytes: a longer body (declared or
/// streamed) is an error, and what is beyond the limit is never read.
///
/// # Errors
///
/// [`ScrapeError::TooLarge`] past the limit, [`ScrapeError::Fetch`] when reading fails.
pub async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<String, ScrapeError> {
    let too_large = ScrapeError::TooLarge { limit };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ScrapeError::Fetch)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Metric names per engine: (waiting, running, kv usage ratio).
fn names(kind: EngineKind) -> Option<(&'static str, &'static str, &'static str)> {
    match kind {
        EngineKind::Vllm => Some((
            "vllm:num_requests_waiting",
            "vllm:num_requests_running",
            "vllm:kv_cache_usage_perc",
        )),
        EngineKind::Sglang => Some((
            "sglang:num_queue_reqs",
            "sglang:num_running_reqs",
            "sglang:token_usage",
        )),
        EngineKind::Llamacpp => Some((
            "llamacpp:requests_deferred",
            "llamacpp:requests_processing",
            "llamacpp:kv_cache_usage_ratio",
        )),
        EngineKind::Openai => None,
    }
}

fn scalar(s: &Sample) -> Option<f64> {
    match s.value {
        Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => {
            Some(v).filter(|v| v.is_finite())
        }
        _ => None,
    }
}

/// `line` with `:` in its metric name (sample, `# HELP` or `# TYPE`) made `_`.
///
/// NB: `prometheus-parse` matches metric names with `\w+`, so the engines' `vllm:...`,
/// `sglang:...` and `llamacpp:...` names would be skipped as unparsable; label values
/// are left alone.
fn colons_to_underscores(line: &str) -> String {
    let (prefix, rest) = match line
        .strip_prefix("# HELP ")
        .or_else(|| line.strip_prefix("# TYPE "))
    {
        Some(rest) => (&line[..7], rest),
        None => ("", line),
    };
    let end = rest
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(rest.len());
    format!("{prefix}{}{}", rest[..end].replace(':', "_"), &rest[end..])
}

/// Parses `text` as `kind`'s metrics. Series with several label sets (one per model)
/// are summed; the KV usage is their maximum.
///
/// # Errors
///
/// When the text does not parse or holds none of the engine's figures.
pub fn parse(kind: EngineKind, text: &str) -> Result<EngineLoad, ScrapeError> {
    let (waiting, running, kv) = names(kind).ok_or(ScrapeError::NoFigures(kind))?;
    let scrape = Scrape::parse(text.lines().map(|l| Ok(colons_to_underscores(l))))
        .map_err(ScrapeError::Parse)?;
    let (waiting, running, kv) = (
        waiting.replace(':', "_"),
        running.replace(':', "_"),
        kv.replace(':', "_"),
    );
    let mut load = EngineLoad::default();
    let mut seen = false;
    for s in &scrape.samples {
        let Some(v) = scalar(s) else { continue };
        let name = s.metric.as_str();
        if name == waiting.as_str() {
            load.waiting = load.waiting.saturating_add(v.max(0.0) as u32);
        } else if name == running.as_str() {
            load.running = load.running.saturating_add(v.max(0.0) as u32);
        } else if name == kv.as_str() {
            load.kv_usage = load.kv_usage.max(v.clamp(0.0, 1.0) as f32);
        } else if name == "vllm_cache_config_info" {
            let blocks = s
                .labels
                .get("num_gpu_blocks")
                .and_then(|b| b.parse::<u64>().ok());
            let size = s
                .labels
                .get("block_size")
                .and_then(|b| b.parse::<u64>().ok());
            if let (Some(blocks), Some(size)) = (blocks, size) {
                load.kv_capacity_tokens = Some(blocks.saturating_mul(size));
            }
            continue;
        } else {
            continue;
        }
        seen = true;
    }
    if seen {
        Ok(load)
    } else {
        Err(ScrapeError::NoFigures(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_sums_models_and_reads_cache_config() {
        let text = r#"# HELP vllm:num_requests_waiting Waiting
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="a"} 3.0
vllm:num_requests_waiting{model_name="b"} 2.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="a"} 7.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="a"} 0.25
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",num_gpu_blocks="1000"} 1.0
"#;
        let l = parse(EngineKind::Vllm, text).unwrap();
        assert_eq!((l.waiting, l.running), (5, 7));
        assert!((l.kv_usage - 0.25).abs() < 1e-6);
        assert_eq!(l.kv_capacity_tokens, Some(16_000));
    }

    #[test]
    fn sglang_and_llamacpp_names() {
        let sg = "sglang:num_queue_reqs 4\nsglang:num_running_reqs 9\nsglang:token_usage 0.5\n";
        let l = parse(EngineKind::Sglang, sg).unwrap();
        assert_eq!((l.waiting, l.running), (4, 9));
        let ll = "# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 2\n\
                  llamacpp:requests_deferred 1\nllamacpp:kv_cache_usage_ratio 0.75\n";
        let l = parse(EngineKind::Llamacpp, ll).unwrap();
        assert_eq!((l.waiting, l.running), (1, 2));
        assert!((l.kv_usage - 0.75).abs() < 1e-6);
    }

    #[test]
    fn llamacpp_capacity_is_slots_times_context_per_slot() {
        // The shape `llama-server -np 2 -c 4096` answers at /props (fields trimmed).
        let props = br#"{"default_generation_settings":{"n_ctx":2048,"params":{}},
            "total_slots":2,"model_alias":"m","chat_template":"{{ x }}"}"#;
        assert_eq!(
            llamacpp_capacity(props),
            Some(EngineCache {
                slots: Some(2),
                tokens: 4096
            })
        );
        assert_eq!(llamacpp_capacity(br#"{"total_slots":2}"#), None);
        let zero = br#"{"default_generation_settings":{"n_ctx":0},"total_slots":2}"#;
        assert_eq!(llamacpp_capacity(zero), None);
        assert_eq!(llamacpp_capacity(b"<html>"), None);
    }

    #[test]
    fn sglang_capacity_is_max_total_num_tokens() {
        // Trimmed from SGLang 0.4's /get_server_info (server args, then scheduler info).
        let old = br#"{"model_path":"m","tp_size":1,"page_size":1,"max_total_num_tokens":411840,
            "max_req_input_len":131066,"version":"0.4.6"}"#;
        let want = EngineCache {
            slots: None,
            tokens: 411_840,
        };
        assert_eq!(sglang_capacity(old), Some(want));
        // Newer versions report it per scheduler, in `internal_states`.
        let new = br#"{"model_path":"m","internal_states":[{"max_total_num_tokens":411840,
            "last_gen_throughput":0.0}],"version":"0.5.3"}"#;
        assert_eq!(sglang_capacity(new), Some(want));
        assert_eq!(sglang_capacity(br#"{"max_total_num_tokens":0}"#), None);
        assert_eq!(sglang_capacity(br#"{"internal_states":[]}"#), None);
        assert_eq!(sglang_capacity(b"not json"), None);
    }

    /// Serves one HTTP response with a `body_len`-byte body, with or without a
    /// `Content-Length`, and returns its URL.
    async fn serve_body(body_len: usize, declare_length: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = conn.read(&mut request).await;
            let head = if declare_length {
                format!("HTTP/1.1 200 OK\r\ncontent-length: {body_len}\r\n\r\n")
            } else {
                "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_owned()
            };
            let _ = conn.write_all(head.as_bytes()).await;
            let line = b"vllm:num_requests_waiting 1\n";
            let mut sent = 0;
            while sent < body_len {
                let n = line.len().min(body_len - sent);
                if conn.write_all(&line[..n]).await.is_err() {
                    return; // the reader gave up: expected past the limit
                }
                sent += n;
            }
        });
        format!("http://{addr}/metrics")
    }

    #[tokio::test]
    async fn a_metrics_body_over_the_cap_fails_the_scrape() {
        let client = reqwest::Client::new();
        for declared in [true, false] {
            let url = serve_body(MAX_METRICS_BYTES + 1, declared).await;
            let response = client.get(url).send().await.unwrap();
            let err = read_body(response, MAX_METRICS_BYTES).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    ScrapeError::TooLarge {
                        limit: MAX_METRICS_BYTES
                    }
                ),
                "declared length {declared}: {err}"
            );
        }
        let url = serve_body(28 * 10, false).await; // ten whole 28-byte lines
        let response = client.get(url).send().await.unwrap();
        let text = read_body(response, MAX_METRICS_BYTES).await.unwrap();
        assert_eq!(parse(EngineKind::Vllm, &text).unwrap().waiting, 10);
    }

    #[test]
    fn wrong_engine_metrics_are_an_error() {
        let err = parse(EngineKind::Sglang, "vllm:num_requests_waiting 1\n").unwrap_err();
        assert!(matches!(err, ScrapeError::NoFigures(EngineKind::Sglang)));
    }
}
