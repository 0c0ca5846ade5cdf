//! Accelerator profiles: the latency model and memory of one kind of card.
//!
//! Built in: `h100` and `h200` (measured), `a100`, `l40s`, `mi300x`, `gaudi3` (the H100 fit
//! scaled by the factors in `calibration/README.md`). Others are defined in the fleet file
//! as a built-in profile with its own factors ([`CustomProfile`]).

use serde::{Deserialize, Serialize};

use super::latency::{KV_BYTES_PER_TOKEN, LatencyModel};

/// Fraction of device memory the engine may use (vLLM's `gpu_memory_utilization`).
const MEMORY_UTILIZATION: f64 = 0.9;

/// Weights of the calibrated 8B model in bf16, in GB.
const WEIGHTS_GB: f64 = 16.0;

/// One kind of accelerator as the simulator sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    /// Profile name, e.g. `h100`.
    pub name: String,
    /// Vendor, e.g. `nvidia`, `amd`, `intel`.
    pub vendor: String,
    /// Step latency model.
    pub latency: LatencyModel,
    /// Device memory, in GB (10^9 bytes).
    pub memory_gb: f64,
}

/// The built-in profile names.
pub const BUILTIN: [&str; 6] = ["h100", "h200", "a100", "l40s", "mi300x", "gaudi3"];

/// A profile defined in the fleet file, derived from a built-in one.
///
/// ```yaml
/// profiles:
///   - { name: b200, base: h100, vendor: nvidia, prefill_speed: 2.2, decode_speed: 2.4, memory_gb: 192 }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomProfile {
    /// Name requests and backends refer to it by.
    pub name: String,
    /// Built-in profile it scales. Default `h100`.
    #[serde(default = "default_base")]
    pub base: String,
    /// Vendor label. Default: the base profile's vendor.
    #[serde(default)]
    pub vendor: Option<String>,
    /// Prefill speed relative to the base (2.0 = twice as fast). Default 1.
    #[serde(default = "one")]
    pub prefill_speed: f64,
    /// Decode speed relative to the base. Default 1.
    #[serde(default = "one")]
    pub decode_speed: f64,
    /// Device memory in GB. Default: the base profile's.
    #[serde(default)]
    pub memory_gb: Option<f64>,
    /// Latency coefficients replacing the scaled base's, for an engine whose costs do not
    /// scale like an H100's (a llama.cpp server on CPU cores). Example `latency:
    /// { prefill_base_ms: 1, prefill_token_ms: 0.25, prefill_attention_ms: 1.5e-4,
    /// decode_base_ms: 2.3, decode_seq_ms: 0.2, decode_context_ms: 0 }`. Default: none.
    #[serde(default)]
    pub latency: Option<LatencyModel>,
}

fn default_base() -> String {
    "h100".to_owned()
}

fn one() -> f64 {
    1.0
}

impl Profile {
    /// The built-in profile called `name`, if there is one.
    pub fn builtin(name: &str) -> Option<Self> {
        let h100 = LatencyModel::H100;
        let (vendor, latency, memory_gb) = match name {
            "h100" => ("nvidia", h100, 80.0),
            "h200" => ("nvidia", LatencyModel::H200, 141.0),
            "a100" => ("nvidia", h100.scaled(0.32, 0.61), 80.0),
            "l40s" => ("nvidia", h100.scaled(0.37, 0.26), 48.0),
            "mi300x" => ("amd", h100.scaled(1.10, 1.40), 192.0),
            "gaudi3" => ("intel", h100.scaled(0.90, 1.00), 128.0),
            _ => return None,
        };
        Some(Self {
            name: name.to_owned(),
            vendor: vendor.to_owned(),
            latency,
            memory_gb,
        })
    }

    /// Builds a custom profile, or `None` if its base is not a built-in profile.
    pub fn custom(spec: &CustomProfile) -> Option<Self> {
        let base = Self::builtin(&spec.base)?;
        Some(Self {
            name: spec.name.clone(),
            vendor: spec.vendor.clone().unwrap_or(base.vendor),
            latency: spec
                .latency
                .unwrap_or_else(|| base.latency.scaled(spec.prefill_speed, spec.decode_speed)),
            memory_gb: spec.memory_gb.unwrap_or(base.memory_gb),
        })
    }

    /// KV-cache blocks of `block_size` tokens that fit in memory: 90% of the device minus
    /// the weights, at [`KV_BYTES_PER_TOKEN`] (an H100 holds ~427k tokens, ~26.7k blocks).
    pub fn num_gpu_blocks(&self, block_size: usize) -> usize {
        let kv_bytes = (self.memory_gb * MEMORY_UTILIZATION - WEIGHTS_GB).max(0.0) * 1e9;
        let tokens = kv_bytes / KV_BYTES_PER_TOKEN as f64;
        (tokens as usize) / block_size.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_name_resolves_and_h100_holds_about_27k_blocks() {
        for name in BUILTIN {
            assert!(Profile::builtin(name).is_some(), "{name}");
        }
        let blocks = Profile::builtin("h100").map(|p| p.num_gpu_blocks(16));
        assert_eq!(blocks, Some(26_702));
        assert!(Profile::builtin("tpu").is_none());
    }

    #[test]
    fn custom_profile_scales_its_base() {
        let spec = CustomProfile {
            name: "fast".into(),
            base: "h100".into(),
            vendor: None,
            prefill_speed: 2.0,
            decode_speed: 1.0,
            memory_gb: Some(40.0),
            latency: None,
        };
        let p = Profile::custom(&spec).expect("h100 is built in");
        assert_eq!(p.vendor, "nvidia");
        let h100 = LatencyModel::H100;
        assert!((p.latency.prefill_ms(8192, 0) * 2.0 - h100.prefill_ms(8192, 0)).abs() < 1e-9);
        assert!(p.num_gpu_blocks(16) < 10_000);
    }
}
