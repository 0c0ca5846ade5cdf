//! Reading an engine's Prometheus `/metrics` into the figures policies use, for each
//! engine kind, with the `prometheus-parse` text parser.

use prometheus_parse::{Sample, Scrape, Value};

use super::backend::EngineKind;

/// Live figures scraped from an engine.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
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
}

/// Why a scrape gave no figures.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The text is not Prometheus exposition format.
    #[error("unparsable metrics text")]
    Parse(#[source] std::io::Error),
    /// None of the engine's metric names appear.
    #[error("none of the {0:?} metrics the router reads are present")]
    NoFigures(EngineKind),
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
    fn wrong_engine_metrics_are_an_error() {
        let err = parse(EngineKind::Sglang, "vllm:num_requests_waiting 1\n").unwrap_err();
        assert!(matches!(err, ScrapeError::NoFigures(EngineKind::Sglang)));
    }
}
