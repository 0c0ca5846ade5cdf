//! Approximate mode: the index filled from our own routing decisions.
//!
//! A backend that publishes no KV events is assumed to hold a prompt's blocks from the
//! moment we route the prompt to it until [`DEFAULT_TTL_S`] after their last use, within
//! a capacity taken from the engine's `cache_config_info` (number of GPU blocks) when it
//! publishes one. Dynamo's approximate router uses the same 120 s TTL; the GIE scorer's
//! per-server LRU of 31,250 blocks is the default capacity.

use parking_lot::RwLock;

use super::index::Index;

/// Seconds a routed block counts as cached after its last use.
pub const DEFAULT_TTL_S: u64 = 120;

/// Blocks a backend is assumed to hold when it publishes no capacity.
pub const DEFAULT_CAPACITY_BLOCKS: u32 = 31_250;

/// The engine's KV capacity in blocks from its Prometheus text: the `num_gpu_blocks`
/// label of vLLM's `vllm:cache_config_info`.
pub fn num_gpu_blocks(metrics: &str) -> Option<u32> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("vllm:cache_config_info{"))
        .find_map(|labels| {
            let (_, rest) = labels.split_once("num_gpu_blocks=\"")?;
            rest.split_once('"')?.0.parse().ok()
        })
}

/// Forgets the blocks of the slots in `mask` last used before `cutoff_s`.
pub fn expire(index: &RwLock<Index>, mask: u64, cutoff_s: u64) {
    if mask == 0 {
        return;
    }
    let mut index = index.write();
    let mut bits = mask;
    while bits != 0 {
        index.expire(bits.trailing_zeros() as u8, cutoff_s);
        bits &= bits - 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_comes_from_cache_config_info() {
        let text = "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n\
            # TYPE vllm:cache_config_info gauge\n\
            vllm:cache_config_info{block_size=\"16\",cache_dtype=\"auto\",num_gpu_blocks=\"27215\"} 1.0\n\
            vllm:num_requests_running{model_name=\"m\"} 0.0\n";
        assert_eq!(num_gpu_blocks(text), Some(27215));
        assert_eq!(num_gpu_blocks("vllm:num_requests_running 0\n"), None);
    }
}
