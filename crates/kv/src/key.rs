//! Block keys: our own chained 64-bit keys over full blocks of token ids.
//!
//! A *block key* names one full block of `block_size` tokens together with everything
//! before it: `key_i = xxh3_64(tokens_i as u32 LE, seed = key_{i-1})`, with `key_{-1}`
//! the *root* derived from the model (or LoRA adapter) name and the request's cache salt.
//! Two prompts share a key exactly when they share the whole prefix up to the end of
//! that block, so an index over keys answers "how many leading blocks does this backend
//! hold" without storing tokens. A trailing partial block has no key, as in every engine.
//!
//! Prompts of a model without a tokenizer are keyed on text instead ([`text_keys`]):
//! chunks of `4 x block_size` bytes approximate a block of tokens. Text keys never match
//! token keys, so such a model can only use the approximate mode.

use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed};

/// Block size in tokens used when a model's configuration names none (vLLM's default).
pub const DEFAULT_BLOCK_SIZE: u32 = 16;

/// Bytes of text standing in for one token when a model has no tokenizer.
pub const BYTES_PER_TOKEN: u32 = 4;

/// The root of a chain: the seed of block 0, from the model or LoRA name and the salt.
///
/// `namespace` is the LoRA adapter name when the request names one, else the model name,
/// so two adapters of one base model never share blocks.
pub fn root(namespace: &str, cache_salt: Option<&str>) -> u64 {
    let mut h = Xxh3::with_seed(0);
    h.update(namespace.as_bytes());
    if let Some(salt) = cache_salt {
        // NB: the separator keeps ("ab", "c") and ("a", "bc") apart.
        h.update(&[0xff]);
        h.update(salt.as_bytes());
    }
    h.digest()
}

/// The key of one block of tokens following the block whose key is `parent`.
pub fn chain(parent: u64, tokens: &[u32]) -> u64 {
    #[cfg(target_endian = "little")]
    let bytes: &[u8] = bytemuck::cast_slice(tokens);
    #[cfg(not(target_endian = "little"))]
    let bytes = &tokens
        .iter()
        .flat_map(|t| t.to_le_bytes())
        .collect::<Vec<u8>>();
    xxh3_64_with_seed(bytes, parent)
}

/// Appends the keys of every full block of `tokens` after `parent` to `out`.
///
/// Returns the key of the last full block, or `parent` when there is none, so a caller
/// can continue a chain across calls.
pub fn token_keys(parent: u64, tokens: &[u32], block_size: u32, out: &mut Vec<u64>) -> u64 {
    let mut key = parent;
    for block in tokens.chunks_exact(block_size.max(1) as usize) {
        key = chain(key, block);
        out.push(key);
    }
    key
}

/// Appends the keys of every full chunk of `4 x block_size` bytes of `text` to `out`.
pub fn text_keys(parent: u64, text: &str, block_size: u32, out: &mut Vec<u64>) {
    let chunk = (block_size.max(1) * BYTES_PER_TOKEN) as usize;
    let mut key = parent;
    for block in text.as_bytes().chunks_exact(chunk) {
        key = xxh3_64_with_seed(block, key);
        out.push(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_chain_over_full_blocks_only() {
        let tokens: Vec<u32> = (1..=40).collect();
        let mut keys = Vec::new();
        let last = token_keys(root("m", None), &tokens, 16, &mut keys);
        assert_eq!(keys.len(), 2, "the 8-token tail has no key");
        assert_eq!(last, keys[1]);
        // A prompt sharing only the first block shares only the first key.
        let mut other: Vec<u32> = tokens.clone();
        other[20] = 999;
        let mut other_keys = Vec::new();
        token_keys(root("m", None), &other, 16, &mut other_keys);
        assert_eq!(other_keys[0], keys[0]);
        assert_ne!(other_keys[1], keys[1]);
    }

    #[test]
    fn root_separates_models_adapters_and_salts() {
        let base = root("m", None);
        assert_ne!(base, root("m2", None));
        assert_ne!(base, root("m", Some("s")));
        assert_ne!(root("ab", Some("c")), root("a", Some("bc")));
        assert_eq!(base, root("m", None));
    }

    #[test]
    fn keys_continue_across_calls() {
        let tokens: Vec<u32> = (0..64).collect();
        let mut whole = Vec::new();
        token_keys(7, &tokens, 16, &mut whole);
        let mut split = Vec::new();
        let mid = token_keys(7, &tokens[..32], 16, &mut split);
        token_keys(mid, &tokens[32..], 16, &mut split);
        assert_eq!(whole, split);
    }

    #[test]
    fn text_keys_use_four_bytes_per_token() {
        let text = "x".repeat(64 * 2 + 10);
        let mut keys = Vec::new();
        text_keys(1, &text, 16, &mut keys);
        assert_eq!(keys.len(), 2);
    }
}
