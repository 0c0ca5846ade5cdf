//! Optional exact mode: vLLM's own block hashes, reproduced to cross-check the index.
//!
//! vLLM (>= 0.10.2) hashes block `i` as `H_i = hash_fn(cbor([H_{i-1}, tokens_i,
//! extra_keys_i]))` with `H_{-1} = NONE_HASH = hash_fn(cbor(PYTHONHASHSEED))`, and
//! publishes the last 8 bytes of the digest read big-endian. This is reproducible only
//! for the CBOR hash functions and only when the engine's `PYTHONHASHSEED` is known; the
//! index never depends on it (it keys on its own block keys), so this module only
//! verifies chains that start at block 0.

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::xxh3_128;

use super::event::{BlockStored, event_value};

/// vLLM's `--prefix-caching-hash-algo` values that can be reproduced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// SHA-256 of canonical CBOR, 32-byte chain (vLLM >= 0.10.2).
    Sha256Cbor,
    /// XXH3-128 of canonical CBOR, 16-byte chain (vLLM >= ~0.12).
    XxhashCbor,
    /// Low 64 bits of SHA-256 of CBOR with a 64-bit integer chain (vLLM 0.10.0-0.10.1).
    Sha256Cbor64bit,
}

/// One element of a block's `extra_keys` tuple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtraKey {
    /// A string: a LoRA name, a cache salt, a multimodal identifier.
    Str(String),
    /// An integer: a legacy LoRA id or an offset.
    Int(u64),
}

/// Reproduces one engine's block hashes; see the module doc.
#[derive(Clone, Debug)]
pub struct ExactHasher {
    algorithm: Algorithm,
    none_hash: Vec<u8>,
}

impl ExactHasher {
    /// A hasher for engines started with `PYTHONHASHSEED=python_hash_seed`.
    pub fn new(algorithm: Algorithm, python_hash_seed: &str) -> Self {
        let mut seed = Vec::new();
        cbor_text(&mut seed, python_hash_seed);
        let none_hash = digest(algorithm, &seed);
        Self {
            algorithm,
            none_hash,
        }
    }

    /// `NONE_HASH`, the parent of block 0.
    pub fn none_hash(&self) -> &[u8] {
        &self.none_hash
    }

    /// Digests of every full block of `tokens`, chained from `NONE_HASH`; `extras[i]`
    /// is block `i`'s extra keys (missing = none).
    pub fn digests(
        &self,
        tokens: &[u32],
        block_size: u32,
        extras: &[Option<Vec<ExtraKey>>],
    ) -> Vec<Vec<u8>> {
        let mut parent = self.none_hash.clone();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for (i, block) in tokens.chunks_exact(block_size.max(1) as usize).enumerate() {
            buf.clear();
            cbor_head(&mut buf, 4, 3);
            match self.algorithm {
                Algorithm::Sha256Cbor64bit => cbor_head(&mut buf, 0, event_value(&parent)),
                Algorithm::Sha256Cbor | Algorithm::XxhashCbor => {
                    cbor_head(&mut buf, 2, parent.len() as u64);
                    buf.extend_from_slice(&parent);
                }
            }
            cbor_head(&mut buf, 4, block.len() as u64);
            for &t in block {
                cbor_head(&mut buf, 0, u64::from(t));
            }
            match extras.get(i).and_then(Option::as_ref) {
                Some(keys) => {
                    cbor_head(&mut buf, 4, keys.len() as u64);
                    for k in keys {
                        match k {
                            ExtraKey::Str(s) => cbor_text(&mut buf, s),
                            ExtraKey::Int(n) => cbor_head(&mut buf, 0, *n),
                        }
                    }
                }
                None => buf.push(0xf6),
            }
            parent = digest(self.algorithm, &buf);
            out.push(parent.clone());
        }
        out
    }

    /// The values an engine would publish for every full block of `tokens`.
    pub fn event_hashes(
        &self,
        tokens: &[u32],
        block_size: u32,
        extras: &[Option<Vec<ExtraKey>>],
    ) -> Vec<u64> {
        self.digests(tokens, block_size, extras)
            .iter()
            .map(|d| event_value(d))
            .collect()
    }

    /// Whether a `BlockStored` that starts a chain carries the hashes this hasher
    /// computes from its tokens; `None` when it cannot be checked (it continues a chain
    /// whose full parent digest the event does not carry, or has no tokens).
    pub fn check(&self, event: &BlockStored) -> Option<bool> {
        if event.parent.is_some() || event.tokens.is_empty() {
            return None;
        }
        let blocks = event.hashes.len();
        let extras: Vec<Option<Vec<ExtraKey>>> = match &event.lora_name {
            Some(name) => vec![Some(vec![ExtraKey::Str(name.clone())]); blocks],
            None => Vec::new(),
        };
        Some(self.event_hashes(&event.tokens, event.block_size, &extras) == event.hashes)
    }
}

fn digest(algorithm: Algorithm, bytes: &[u8]) -> Vec<u8> {
    match algorithm {
        Algorithm::Sha256Cbor | Algorithm::Sha256Cbor64bit => Sha256::digest(bytes).to_vec(),
        Algorithm::XxhashCbor => xxh3_128(bytes).to_be_bytes().to_vec(),
    }
}

/// A CBOR head with the shortest argument encoding (canonical CBOR).
fn cbor_head(buf: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => buf.push(m | n as u8),
        24..=0xff => buf.extend_from_slice(&[m | 24, n as u8]),
        0x100..=0xffff => {
            buf.push(m | 25);
            buf.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            buf.push(m | 26);
            buf.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            buf.push(m | 27);
            buf.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn cbor_text(buf: &mut Vec<u8>, s: &str) {
    cbor_head(buf, 3, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}
