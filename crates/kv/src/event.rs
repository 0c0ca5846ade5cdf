//! Decoding vLLM/SGLang KV-event batches (msgpack, as msgspec writes them).
//!
//! A batch is `[ts, events, data_parallel_rank?]` (or a map with those names). Each event
//! is either positional, `["BlockStored", f1, f2, ...]`, or a map with a `"type"` key;
//! both may appear in one batch. Every schema generation is accepted: missing trailing
//! fields take their defaults, unknown trailing fields and keys are ignored. An event
//! that cannot be read (unknown tag, wrong field type) is skipped and counted in
//! [`Batch::skipped`]; the others still apply. Engine hashes arrive as unsigned ints,
//! signed ints or bytes and are normalised by [`normalize_hash`].
//!
//! [`encode_batch`] writes the newest positional form, for test publishers and the
//! simulated backend.

mod fast;

use rmpv::ValueRef;

use super::index::Tier;

/// Why a payload could not be read as a batch at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is not valid msgpack.
    #[error("payload is not msgpack")]
    Msgpack(#[source] rmpv::decode::Error),
    /// The payload is msgpack but not a batch: `what` names the missing piece.
    #[error("payload is not an event batch: {what}")]
    NotABatch {
        /// The part of the batch that was missing or of the wrong type.
        what: &'static str,
    },
}

/// One decoded `KVEventBatch`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    /// Publisher timestamp, seconds since the epoch.
    pub ts: f64,
    /// Events that could be read, in order.
    pub events: Vec<Event>,
    /// The engine's data-parallel rank, when the schema carries it.
    pub dp_rank: Option<u32>,
    /// Events skipped: unknown tag or unreadable fields.
    pub skipped: u32,
}

/// One cache event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Blocks became full and cached.
    Stored(BlockStored),
    /// Blocks were evicted from `tier`.
    Removed {
        /// Engine hashes of the evicted blocks.
        hashes: Vec<u64>,
        /// Where they were evicted from.
        tier: Tier,
    },
    /// Every block was dropped (`reset_prefix_cache`).
    Cleared,
}

/// A `BlockStored` event: the fields the index uses.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockStored {
    /// Engine hashes of the stored blocks, in chain order.
    pub hashes: Vec<u64>,
    /// Engine hash of the block before the first one, `None` at the start of a prompt.
    pub parent: Option<u64>,
    /// All tokens of the listed blocks, concatenated (empty for a tier update).
    pub tokens: Vec<u32>,
    /// Tokens per engine block.
    pub block_size: u32,
    /// The LoRA adapter the blocks belong to.
    pub lora_name: Option<String>,
    /// Where the blocks are stored.
    pub tier: Tier,
    /// Whether the blocks belong to a full-attention KV group (hybrid models also
    /// announce sliding-window groups, which are not prefix-cacheable the same way).
    pub is_full_attention: bool,
}

/// Positional field order of `BlockStored` after the tag (§1.5 of the spec).
const STORED_FIELDS: [&str; 11] = [
    "block_hashes",
    "parent_block_hash",
    "token_ids",
    "block_size",
    "lora_id",
    "medium",
    "lora_name",
    "extra_keys",
    "group_idx",
    "kv_cache_spec_kind",
    "kv_cache_spec_sliding_window",
];

/// Positional field order of `BlockRemoved` after the tag.
const REMOVED_FIELDS: [&str; 3] = ["block_hashes", "medium", "group_idx"];

/// Decodes one msgpack `KVEventBatch` payload.
///
/// # Errors
///
/// [`DecodeError`] when the payload is not msgpack or has no event list; a bad event
/// inside a good batch is skipped and counted instead.
pub fn decode_batch(payload: &[u8]) -> Result<Batch, DecodeError> {
    match fast::decode(payload) {
        Some(batch) => Ok(batch),
        None => decode_general(payload),
    }
}

/// Runs both decoders on `payload` and panics unless they agree: whatever the fast
/// decoder reads, the general one reads the same (the fast one declines, rather than
/// refuses, every other shape; the general one then decides). Neither may panic. For
/// the `kv_event` fuzz target and the seed-corpus test.
#[cfg(any(test, fuzzing))]
pub fn assert_decoders_agree(payload: &[u8]) {
    let general = decode_general(payload);
    let Some(fast) = fast::decode(payload) else {
        return;
    };
    let general = match general {
        Ok(b) => b,
        Err(e) => panic!("the fast decoder read {fast:?}, the general one refused: {e}"),
    };
    // NB: by bits, so a NaN timestamp compares equal to itself.
    assert_eq!(fast.ts.to_bits(), general.ts.to_bits(), "timestamps differ");
    assert_eq!(
        Batch { ts: 0.0, ..fast },
        Batch { ts: 0.0, ..general },
        "the decoders disagree"
    );
}

/// Decodes any batch through an `rmpv` value tree.
fn decode_general(payload: &[u8]) -> Result<Batch, DecodeError> {
    let mut rd = payload;
    let value = rmpv::decode::read_value_ref(&mut rd).map_err(DecodeError::Msgpack)?;
    let (ts, events, dp) = match &value {
        ValueRef::Array(items) => (items.first(), items.get(1), items.get(2)),
        ValueRef::Map(_) => (
            map_get(&value, "ts"),
            map_get(&value, "events"),
            map_get(&value, "data_parallel_rank"),
        ),
        _ => {
            return Err(DecodeError::NotABatch {
                what: "array or map",
            });
        }
    };
    let Some(ValueRef::Array(events)) = events else {
        return Err(DecodeError::NotABatch {
            what: "events list",
        });
    };
    let mut batch = Batch {
        ts: ts.and_then(as_f64).unwrap_or(0.0),
        dp_rank: dp.and_then(as_u64).and_then(|r| u32::try_from(r).ok()),
        events: Vec::with_capacity(events.len()),
        skipped: 0,
    };
    for event in events {
        match decode_event(event) {
            Some(e) => batch.events.push(e),
            None => batch.skipped += 1,
        }
    }
    Ok(batch)
}

/// A field view over either encoding of one event.
enum Fields<'v, 'a> {
    Positional(&'v [ValueRef<'a>]),
    Map(&'v ValueRef<'a>),
}

impl<'v, 'a> Fields<'v, 'a> {
    /// The field `name`, at position `pos` (after the tag) in the positional form.
    /// Absent and nil read the same.
    fn get(&self, pos: usize, name: &str) -> Option<&'v ValueRef<'a>> {
        let v = match self {
            Fields::Positional(items) => items.get(pos + 1),
            Fields::Map(map) => map_get(map, name),
        };
        v.filter(|v| !matches!(v, ValueRef::Nil))
    }
}

fn decode_event(value: &ValueRef<'_>) -> Option<Event> {
    let (tag, fields) = match value {
        ValueRef::Array(items) => (items.first().and_then(as_str)?, Fields::Positional(items)),
        ValueRef::Map(_) => (map_get(value, "type").and_then(as_str)?, Fields::Map(value)),
        _ => return None,
    };
    match tag {
        "BlockStored" => decode_stored(&fields).map(Event::Stored),
        "BlockRemoved" => {
            let hashes = hash_list(fields.get(0, REMOVED_FIELDS[0])?)?;
            let tier = medium(fields.get(1, REMOVED_FIELDS[1]))?;
            Some(Event::Removed { hashes, tier })
        }
        "AllBlocksCleared" => Some(Event::Cleared),
        _ => None,
    }
}

fn decode_stored(f: &Fields<'_, '_>) -> Option<BlockStored> {
    let field = |i: usize| f.get(i, STORED_FIELDS[i]);
    let hashes = hash_list(field(0)?)?;
    let parent = match field(1) {
        Some(v) => Some(normalize_hash(v)?),
        None => None,
    };
    let tokens = match field(2) {
        Some(ValueRef::Array(items)) => items
            .iter()
            .map(|t| as_u64(t).and_then(|t| u32::try_from(t).ok()))
            .collect::<Option<Vec<u32>>>()?,
        Some(_) => return None,
        None => Vec::new(),
    };
    let block_size = match field(3) {
        Some(v) => u32::try_from(as_u64(v)?).ok()?,
        None => 0,
    };
    let tier = medium(field(5))?;
    let lora_name = match field(6) {
        Some(v) => Some(as_str(v)?.to_owned()),
        None => None,
    };
    let is_full_attention = match field(9) {
        Some(v) => as_str(v)? == "full_attention",
        None => true,
    };
    Some(BlockStored {
        hashes,
        parent,
        tokens,
        block_size,
        lora_name,
        tier,
        is_full_attention,
    })
}

/// Encodes a batch as vLLM >= 0.12 does before the map form: positional events with all
/// 11 `BlockStored` fields (`nil` where unknown) and a 3-element batch.
pub fn encode_batch(batch: &Batch) -> Vec<u8> {
    use rmpv::Value;
    let hashes = |hs: &[u64]| Value::Array(hs.iter().map(|&h| Value::from(h)).collect());
    let medium = |t: Tier| {
        Value::from(match t {
            Tier::Gpu => "GPU",
            Tier::Cpu => "CPU",
            Tier::Disk => "DISK",
        })
    };
    let events = batch
        .events
        .iter()
        .map(|e| match e {
            Event::Stored(s) => Value::Array(vec![
                Value::from("BlockStored"),
                hashes(&s.hashes),
                s.parent.map_or(Value::Nil, Value::from),
                Value::Array(s.tokens.iter().map(|&t| Value::from(t)).collect()),
                Value::from(s.block_size),
                Value::Nil,
                medium(s.tier),
                s.lora_name.as_deref().map_or(Value::Nil, Value::from),
                Value::Nil,
                Value::Nil,
                Value::Nil,
                Value::Nil,
            ]),
            Event::Removed { hashes: hs, tier } => Value::Array(vec![
                Value::from("BlockRemoved"),
                hashes(hs),
                medium(*tier),
                Value::Nil,
            ]),
            Event::Cleared => Value::Array(vec![Value::from("AllBlocksCleared")]),
        })
        .collect();
    let value = Value::Array(vec![
        Value::F64(batch.ts),
        Value::Array(events),
        batch.dp_rank.map_or(Value::Nil, Value::from),
    ]);
    let mut out = Vec::new();
    // NB: writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &value);
    out
}

/// Reads an optional `medium` (absent = GPU); `None` if it is not a string.
fn medium(v: Option<&ValueRef<'_>>) -> Option<Tier> {
    match v {
        Some(v) => Some(Tier::from_medium(Some(as_str(v)?))),
        None => Some(Tier::Gpu),
    }
}

fn hash_list(v: &ValueRef<'_>) -> Option<Vec<u64>> {
    match v {
        ValueRef::Array(items) => items.iter().map(normalize_hash).collect(),
        _ => None,
    }
}

/// An engine block hash as a `u64`: unsigned ints as they are, negative ints by their
/// two's-complement bits (SGLang), bytes by their last 8 bytes big-endian, left-padded
/// when shorter (vLLM with `VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0`).
pub fn normalize_hash(v: &ValueRef<'_>) -> Option<u64> {
    match v {
        ValueRef::Integer(i) => i.as_u64().or_else(|| i.as_i64().map(|i| i as u64)),
        ValueRef::Binary(bytes) => {
            let tail = &bytes[bytes.len().saturating_sub(8)..];
            Some(tail.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
        }
        _ => None,
    }
}

fn map_get<'v, 'a>(map: &'v ValueRef<'a>, name: &str) -> Option<&'v ValueRef<'a>> {
    match map {
        ValueRef::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| as_str(k) == Some(name))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn as_str<'v>(v: &'v ValueRef<'_>) -> Option<&'v str> {
    match v {
        ValueRef::String(s) => s.as_str(),
        _ => None,
    }
}

fn as_u64(v: &ValueRef<'_>) -> Option<u64> {
    match v {
        ValueRef::Integer(i) => i.as_u64(),
        _ => None,
    }
}

fn as_f64(v: &ValueRef<'_>) -> Option<f64> {
    match v {
        ValueRef::F64(f) => Some(*f),
        ValueRef::F32(f) => Some(f64::from(*f)),
        ValueRef::Integer(i) => i.as_f64(),
        _ => None,
    }
}

/// The published form of a digest: its last 8 bytes, big-endian.
pub fn event_value(digest: &[u8]) -> u64 {
    let tail = &digest[digest.len().saturating_sub(8)..];
    tail.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Payloads whose every container or string head, at each nesting level, declares
    /// 2^32 - 1 (or 2^16 - 1) elements or bytes the message does not hold.
    fn lying_lengths() -> Vec<Vec<u8>> {
        let stored_tag: &[u8] = b"\xabBlockStored";
        let mut prefixes: Vec<Vec<u8>> = vec![
            vec![],                                               // the batch
            vec![0x92, 0x00],                                     // the event list
            vec![0x92, 0x00, 0x91],                               // an event
            vec![0x92, 0x00, 0x91, 0x91],                         // the tag
            [&[0x92, 0x00, 0x91, 0x9c][..], stored_tag].concat(), // block hashes
        ];
        let event = [&[0x92, 0x00, 0x91, 0x9c][..], stored_tag].concat();
        let hashes_then = |rest: &[u8]| [&event[..], &[0x91, 0x01], rest].concat();
        prefixes.push([&event[..], &[0x91]].concat()); // a hash
        prefixes.push(hashes_then(&[])); // the parent
        prefixes.push(hashes_then(&[0xc0])); // the token list
        prefixes.push(hashes_then(&[0xc0, 0x91])); // a token
        prefixes.push(hashes_then(&[0xc0, 0x90, 0x10, 0xc0])); // the medium
        let mut out = Vec::new();
        for prefix in prefixes {
            for head in [
                &[0xdd, 0xff, 0xff, 0xff, 0xff][..],   // array 32
                &[0xdc, 0xff, 0xff],                   // array 16
                &[0xdf, 0xff, 0xff, 0xff, 0xff],       // map 32
                &[0xdb, 0xff, 0xff, 0xff, 0xff],       // str 32
                &[0xc6, 0xff, 0xff, 0xff, 0xff],       // bin 32
                &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01], // ext 32
            ] {
                out.push([&prefix[..], head].concat());
            }
        }
        out
    }

    #[test]
    fn the_seven_byte_killer_is_refused() {
        let payload = [0x92, 0x00, 0xdd, 0xff, 0xff, 0xff, 0xff];
        assert!(fast::decode(&payload).is_none());
        assert!(matches!(
            decode_batch(&payload),
            Err(DecodeError::Msgpack(_))
        ));
    }

    #[test]
    fn huge_declared_lengths_at_every_level_are_refused_by_both_decoders() {
        for payload in lying_lengths() {
            let hex = hex::encode(&payload);
            assert!(fast::decode(&payload).is_none(), "fast: {hex}");
            assert!(decode_general(&payload).is_err(), "general: {hex}");
            assert!(decode_batch(&payload).is_err(), "{hex}");
            assert_decoders_agree(&payload);
        }
    }

    #[test]
    fn decoders_agree_on_the_fuzz_seed_corpus() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/kv_event");
        let mut seeds = 0;
        for entry in std::fs::read_dir(&dir).expect("the kv_event seed corpus") {
            let payload = std::fs::read(entry.expect("corpus entry").path()).expect("seed");
            assert_decoders_agree(&payload);
            seeds += 1;
        }
        assert!(seeds >= 10, "{seeds} seeds in {}", dir.display());
    }
}
