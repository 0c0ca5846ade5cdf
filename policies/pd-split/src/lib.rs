//! Placer: decode-first prefill/decode disaggregation. Choose the backend that will
//! generate, then hand the prompt to a faster prefill backend when computing it there and
//! shipping the KV cache over beats computing it locally.

use std::fmt;

use switchyard_policy_sdk::prelude::*;

/// Decode-first placement with an estimated-time split decision.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PdSplit {
    /// Never split when the decode backend would compute fewer uncached prompt tokens
    /// than this. Default 2048.
    pub min_uncached_tokens: u32,
    /// Split only when prefilling locally is estimated to take at least this many times
    /// as long as prefilling remotely plus the KV transfer. Default 1.2; at least 1.
    pub min_gain_ratio: f32,
    /// Decode choice: weight of the cached share of the prompt. Default 1.0.
    pub cache_weight: f32,
    /// Decode choice: weight of `1 / (1 + load / half_load)`. Default 1.0.
    pub load_weight: f32,
    /// Decode choice: load (requests) at which the load term is halved. Default 8.
    pub half_load: f32,
    /// Decode choice: weight of decode speed relative to the fastest decoder. Default 0.5.
    pub speed_weight: f32,
    /// KV bytes per token when neither backend declares it; 0 (default): unknown, and
    /// such a pair is never split.
    pub kv_bytes_per_token: u32,
    /// KV link bandwidth in GB/s when neither backend declares it; 0 (default): unknown,
    /// and such a pair is never split.
    pub kv_link_gbytes_per_s: f32,
    /// Log every decision and its reason at debug level. Default false.
    pub log_decisions: bool,
}

impl Default for PdSplit {
    fn default() -> Self {
        PdSplit {
            min_uncached_tokens: 2048,
            min_gain_ratio: 1.2,
            cache_weight: 1.0,
            load_weight: 1.0,
            half_load: 8.0,
            speed_weight: 0.5,
            kv_bytes_per_token: 0,
            kv_link_gbytes_per_s: 0.0,
            log_decisions: false,
        }
    }
}

/// Why a request was or was not split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Why {
    /// No candidate can decode; the request is rejected.
    NoDecoder,
    /// The decode backend has too little of the prompt left to compute.
    FewUncached {
        /// Uncached prompt tokens on the decode backend.
        uncached: u32,
    },
    /// The decode backend's prefill speed is unknown, so no comparison can be made.
    LocalSpeedUnknown,
    /// No other prefill-capable backend with a known speed, KV size and link.
    NoPrefillBackend,
    /// The best split is not fast enough to be worth it.
    SmallGain {
        /// Estimated local prefill, milliseconds.
        local_ms: f32,
        /// Estimated remote prefill plus KV transfer, milliseconds.
        split_ms: f32,
    },
    /// The split is estimated to be faster by at least `min_gain_ratio`.
    Faster {
        /// Estimated local prefill, milliseconds.
        local_ms: f32,
        /// Estimated remote prefill plus KV transfer, milliseconds.
        split_ms: f32,
    },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::NoDecoder => f.write_str("no candidate can decode"),
            Why::FewUncached { uncached } => {
                write!(
                    f,
                    "single: {uncached} uncached tokens, below the split minimum"
                )
            }
            Why::LocalSpeedUnknown => f.write_str("single: decode backend's prefill speed unknown"),
            Why::NoPrefillBackend => {
                f.write_str("single: no prefill backend with known speed, KV size and link")
            }
            Why::SmallGain { local_ms, split_ms } => write!(
                f,
                "single: local prefill {local_ms:.0} ms vs split {split_ms:.0} ms, gain too small"
            ),
            Why::Faster { local_ms, split_ms } => {
                write!(
                    f,
                    "split: local prefill {local_ms:.0} ms vs split {split_ms:.0} ms"
                )
            }
        }
    }
}

/// A placement and the reason for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Where the request goes.
    pub placement: Placement,
    /// Why it was or was not split.
    pub why: Why,
}

impl PdSplit {
    /// Places the request and says why.
    pub fn decide(&self, req: &Request, candidates: &[Candidate], fleet: &Fleet) -> Decision {
        let Some(decode) = self.choose_decode(req, candidates, fleet) else {
            return Decision {
                placement: Placement::Reject {
                    status: 503,
                    message: "no candidate can decode this request".into(),
                },
                why: Why::NoDecoder,
            };
        };
        let single = |why| Decision {
            placement: Placement::Single(decode.backend),
            why,
        };
        let uncached = decode.uncached_tokens(req);
        if uncached < self.min_uncached_tokens {
            return single(Why::FewUncached { uncached });
        }
        let Some(local_s) = decode.prefill_seconds(uncached) else {
            return single(Why::LocalSpeedUnknown);
        };
        let best = candidates
            .iter()
            .filter(|p| p.backend != decode.backend && fleet.can_prefill(p.backend))
            .filter_map(|p| Some((p, self.split_seconds(req, p, decode, uncached, fleet)?)))
            .min_by(|(a, ta), (b, tb)| ta.total_cmp(tb).then(a.backend.cmp(&b.backend)));
        let Some((prefill, split_s)) = best else {
            return single(Why::NoPrefillBackend);
        };
        let (local_ms, split_ms) = (local_s * 1e3, split_s * 1e3);
        if local_s < self.min_gain_ratio * split_s {
            return single(Why::SmallGain { local_ms, split_ms });
        }
        Decision {
            placement: Placement::Split {
                prefill: prefill.backend,
                decode: decode.backend,
            },
            why: Why::Faster { local_ms, split_ms },
        }
    }

    /// The decode backend: the best weighted sum of cached share, load and decode speed
    /// among candidates that can decode; ties go to the lowest index.
    fn choose_decode<'a>(
        &self,
        req: &Request,
        candidates: &'a [Candidate],
        fleet: &Fleet,
    ) -> Option<&'a Candidate> {
        let decoders = || candidates.iter().filter(|c| fleet.can_decode(c.backend));
        let fastest = decoders()
            .map(|c| c.decode_tokens_per_s)
            .fold(0.0_f32, f32::max);
        let value = |c: &Candidate| {
            let speed = if fastest > 0.0 {
                c.decode_tokens_per_s / fastest
            } else {
                0.0
            };
            self.cache_weight * Score::ratio(c.cached_prefix_tokens, req.prompt_tokens).get()
                + self.load_weight * normalize::decay(c.load() as f32, self.half_load).get()
                + self.speed_weight * speed
        };
        decoders().max_by(|a, b| {
            value(a)
                .total_cmp(&value(b))
                .then(b.backend.cmp(&a.backend))
        })
    }

    /// Seconds to prefill on `prefill` (its own queue and cache) and move the `uncached`
    /// tokens the decode backend lacks; `None` when a figure is unknown.
    fn split_seconds(
        &self,
        req: &Request,
        prefill: &Candidate,
        decode: &Candidate,
        uncached: u32,
        fleet: &Fleet,
    ) -> Option<f32> {
        let compute = prefill.prefill_seconds(prefill.uncached_tokens(req))?;
        let (p, d) = (fleet.get(prefill.backend)?, fleet.get(decode.backend)?);
        let bytes_per_token = [
            d.kv_bytes_per_token,
            p.kv_bytes_per_token,
            self.kv_bytes_per_token,
        ]
        .into_iter()
        .find(|&b| b > 0)?;
        // The slower end of the link bounds the transfer.
        let declared = [d.kv_link_gbytes_per_s, p.kv_link_gbytes_per_s]
            .into_iter()
            .filter(|&g| g > 0.0)
            .reduce(f32::min);
        let link = declared.unwrap_or(self.kv_link_gbytes_per_s);
        if link <= 0.0 {
            return None;
        }
        let transfer = bytes_per_token as f32 * uncached as f32 / (link * 1e9);
        Some(compute + transfer)
    }
}

impl Placer for PdSplit {
    fn configure(config: &str) -> Result<Self, ConfigError> {
        let policy: PdSplit = config::from_json(config)?;
        let mut problems = Vec::new();
        if !(policy.min_gain_ratio.is_finite() && policy.min_gain_ratio >= 1.0) {
            problems.push(format!(
                "min_gain_ratio: {} must be at least 1",
                policy.min_gain_ratio
            ));
        }
        if !(policy.half_load.is_finite() && policy.half_load > 0.0) {
            problems.push(format!("half_load: {} must be positive", policy.half_load));
        }
        for (name, v) in [
            ("cache_weight", policy.cache_weight),
            ("load_weight", policy.load_weight),
            ("speed_weight", policy.speed_weight),
            ("kv_link_gbytes_per_s", policy.kv_link_gbytes_per_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                problems.push(format!("{name}: {v} must be a non-negative number"));
            }
        }
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(ConfigError::new(problems.join("; ")))
        }
    }

    fn place(&self, req: &Request, candidates: &[Candidate], fleet: &Fleet) -> Placement {
        let decision = self.decide(req, candidates, fleet);
        if self.log_decisions {
            switchyard_policy_sdk::debug(&decision.why.to_string());
        }
        decision.placement
    }
}

switchyard_policy_sdk::export_placer!(PdSplit);

#[cfg(test)]
mod tests;
