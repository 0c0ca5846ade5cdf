//! Conformance with the golden vectors of `kv-events.md` §7 (G3-G17).

use rmpv::ValueRef;

use super::event::event_value;
use super::event::{Batch, BlockStored, Event, decode_batch, encode_batch, normalize_hash};
use super::exact::{Algorithm, ExactHasher, ExtraKey};
use super::index::Tier;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("golden vectors are hex")
}

/// The G3-G6 event: hashes [1, 2], no parent, tokens 1..=4, block size 2, GPU.
fn g3_event() -> Event {
    Event::Stored(BlockStored {
        hashes: vec![1, 2],
        parent: None,
        tokens: vec![1, 2, 3, 4],
        block_size: 2,
        lora_name: None,
        tier: Tier::Gpu,
        is_full_attention: true,
    })
}

fn decode(hex: &str) -> Batch {
    decode_batch(&unhex(hex)).expect("golden batch decodes")
}

#[test]
fn g3_positional_eleven_field_schema() {
    let b = decode(
        "93cb3ff8000000000000919cab426c6f636b53746f726564920102c0940102030402c0a3475055c0c0c0c0c000",
    );
    assert_eq!(
        b,
        Batch {
            ts: 1.5,
            events: vec![g3_event()],
            dp_rank: Some(0),
            skipped: 0
        }
    );
}

#[test]
fn g3_is_what_the_encoder_writes() {
    let batch = Batch {
        ts: 1.5,
        events: vec![g3_event()],
        dp_rank: Some(0),
        skipped: 0,
    };
    assert_eq!(
        hex::encode(encode_batch(&batch)),
        "93cb3ff8000000000000919cab426c6f636b53746f726564920102c0940102030402c0a3475055c0c0c0c0c000"
    );
    let mixed = Batch {
        ts: 2.0,
        events: vec![
            Event::Removed {
                hashes: vec![u64::MAX],
                tier: Tier::Cpu,
            },
            Event::Cleared,
        ],
        dp_rank: None,
        skipped: 0,
    };
    assert_eq!(
        decode_batch(&encode_batch(&mixed)).expect("round trip"),
        mixed
    );
}

#[test]
fn g4_positional_seven_field_event() {
    let event = unhex("98ab426c6f636b53746f726564920102c0940102030402c0a3475055c0");
    // Wrap the bare event in a 3-field batch: [1.5, [event], 0].
    let mut payload = unhex("93cb3ff800000000000091");
    payload.extend_from_slice(&event);
    payload.push(0x00);
    let b = decode_batch(&payload).expect("batch decodes");
    assert_eq!(b.events, vec![g3_event()]);
}

#[test]
fn g5_v0_9_two_element_batch() {
    let b = decode("92cb3ff80000000000009196ab426c6f636b53746f726564920102c0940102030402c0");
    assert_eq!(
        b,
        Batch {
            ts: 1.5,
            events: vec![g3_event()],
            dp_rank: None,
            skipped: 0
        }
    );
}

#[test]
fn g6_map_encoded_event() {
    let b = decode(concat!(
        "93cb3ff80000000000009188a474797065ab426c6f636b53746f726564ac626c6f636b5f686173686573",
        "920102b1706172656e745f626c6f636b5f68617368c0a9746f6b656e5f6964739401020304aa626c6f63",
        "6b5f73697a6502a76c6f72615f6964c0a66d656469756da3475055a96c6f72615f6e616d65c000"
    ));
    assert_eq!(b.events, vec![g3_event()]);
    assert_eq!(b.dp_rank, Some(0));
}

#[test]
fn g7_map_removed_and_cleared() {
    let b = decode(concat!(
        "93cb3ff80000000000009283a474797065ac426c6f636b52656d6f766564ac626c6f636b5f6861736865",
        "739102a66d656469756da347505581a474797065b0416c6c426c6f636b73436c656172656400"
    ));
    assert_eq!(
        b.events,
        vec![
            Event::Removed {
                hashes: vec![2],
                tier: Tier::Gpu
            },
            Event::Cleared
        ]
    );
}

#[test]
fn g8_positional_removed_and_cleared_without_rank() {
    let b = decode(
        "93cb3ff80000000000009294ac426c6f636b52656d6f7665649102a3475055c091b0416c6c426c6f636b73436c6561726564c0",
    );
    assert_eq!(
        b.events,
        vec![
            Event::Removed {
                hashes: vec![2],
                tier: Tier::Gpu
            },
            Event::Cleared
        ]
    );
    assert_eq!(b.dp_rank, None);
}

#[test]
fn positional_and_map_events_mix_in_one_batch() {
    // [1.5, [G4 positional event, G7's map BlockRemoved], 3]
    let mut payload = unhex("93cb3ff800000000000092");
    payload.extend(unhex(
        "98ab426c6f636b53746f726564920102c0940102030402c0a3475055c0",
    ));
    payload.extend(unhex(
        "83a474797065ac426c6f636b52656d6f766564ac626c6f636b5f6861736865739102a66d656469756da3475055",
    ));
    payload.push(0x03);
    let b = decode_batch(&payload).expect("batch decodes");
    assert_eq!(b.events.len(), 2);
    assert_eq!(b.events[0], g3_event());
    assert_eq!(b.dp_rank, Some(3));
}

#[test]
fn g9_hash_normalisation() {
    let mut rd = &unhex("cfffffffffffffffff")[..];
    let v = rmpv::decode::read_value_ref(&mut rd).expect("msgpack");
    assert_eq!(normalize_hash(&v), Some(u64::MAX));
    // A 32-byte digest: the last 8 bytes, big-endian.
    let digest = unhex("202da172482d928bbc42ab25b0151e2b895f13f41002e27b2ceabcfae6d332ea");
    assert_eq!(
        normalize_hash(&ValueRef::Binary(&digest)),
        Some(3236607068019569386)
    );
    // Short bytes are left-padded; negative ints keep their bits (SGLang).
    assert_eq!(normalize_hash(&ValueRef::Binary(&[1, 2])), Some(0x0102));
    assert_eq!(normalize_hash(&ValueRef::from(-1i64)), Some(u64::MAX));
    assert_eq!(normalize_hash(&ValueRef::from("12")), None);
}

fn tokens(range: std::ops::RangeInclusive<u32>) -> Vec<u32> {
    range.collect()
}

#[test]
fn g10_to_g13_sha256_cbor_chain() {
    let h = ExactHasher::new(Algorithm::Sha256Cbor, "0");
    assert_eq!(
        hex::encode(h.none_hash()),
        "4e1195df020de59e0d65a33a4279f1183e7ae4e5d980e309f8b55adff2e61c3e"
    );
    let digests = h.digests(&tokens(1..=32), 16, &[]);
    assert_eq!(
        hex::encode(&digests[0]),
        "202da172482d928bbc42ab25b0151e2b895f13f41002e27b2ceabcfae6d332ea"
    );
    assert_eq!(
        hex::encode(&digests[1]),
        "4a0a393805c6d2f0ed831000d41bb65980336c4c04895d5e26470bbec927f5bf"
    );
    assert_eq!(
        h.event_hashes(&tokens(1..=32), 16, &[]),
        vec![3236607068019569386, 2758186210834249151]
    );
}

#[test]
fn g14_extra_keys() {
    let h = ExactHasher::new(Algorithm::Sha256Cbor, "0");
    let with = |s: &str| vec![Some(vec![ExtraKey::Str(s.to_owned())])];
    assert_eq!(
        h.event_hashes(&tokens(1..=16), 16, &with("my-lora")),
        vec![15444946753610453501]
    );
    assert_eq!(
        h.event_hashes(&tokens(1..=16), 16, &with("salt1")),
        vec![4511955560064254276]
    );
}

#[test]
fn g16_xxhash_cbor_chain() {
    let h = ExactHasher::new(Algorithm::XxhashCbor, "0");
    assert_eq!(
        hex::encode(h.none_hash()),
        "1ebe36576dcb573f26b99533a20aaeca"
    );
    assert_eq!(
        h.event_hashes(&tokens(1..=32), 16, &[]),
        vec![882618318818381833, 12890060145260523405]
    );
}

#[test]
fn g17_legacy_sha256_cbor_64bit_chain() {
    let h = ExactHasher::new(Algorithm::Sha256Cbor64bit, "0");
    assert_eq!(event_value(h.none_hash()), 17921330210090130494);
    assert_eq!(
        h.event_hashes(&tokens(1..=32), 16, &[]),
        vec![6090100016636780107, 3502488347233910028]
    );
}

#[test]
fn exact_check_accepts_a_true_chain_and_flags_a_false_one() {
    let h = ExactHasher::new(Algorithm::Sha256Cbor, "0");
    let mut event = BlockStored {
        hashes: vec![3236607068019569386, 2758186210834249151],
        parent: None,
        tokens: tokens(1..=32),
        block_size: 16,
        lora_name: None,
        tier: Tier::Gpu,
        is_full_attention: true,
    };
    assert_eq!(h.check(&event), Some(true));
    event.hashes[1] ^= 1;
    assert_eq!(h.check(&event), Some(false));
    event.parent = Some(1);
    assert_eq!(h.check(&event), None);
}

// === bad input ===

#[test]
fn corrupt_msgpack_is_an_error() {
    // Truncated G3: the event list promises more than the payload holds.
    let mut payload = unhex("93cb3ff8000000000000919cab426c6f636b53746f726564");
    assert!(matches!(
        decode_batch(&payload),
        Err(super::event::DecodeError::Msgpack(_))
    ));
    payload.clear();
    assert!(decode_batch(&payload).is_err());
    // Valid msgpack that is not a batch.
    assert!(matches!(
        decode_batch(&unhex("a3475055")),
        Err(super::event::DecodeError::NotABatch { .. })
    ));
}

#[test]
fn unknown_tag_and_bad_event_are_skipped_and_counted() {
    // [1.5, [["Mystery", 1], G4 event, ["BlockStored", "not-a-list"], G7 map removed], nil]
    let mut payload = unhex("93cb3ff800000000000094");
    payload.extend(unhex("92a74d79737465727901"));
    payload.extend(unhex(
        "98ab426c6f636b53746f726564920102c0940102030402c0a3475055c0",
    ));
    payload.extend(unhex("92ab426c6f636b53746f726564a3626164"));
    payload.extend(unhex(
        "83a474797065ac426c6f636b52656d6f766564ac626c6f636b5f6861736865739102a66d656469756da3475055",
    ));
    payload.push(0xc0);
    let b = decode_batch(&payload).expect("the batch itself is fine");
    assert_eq!(b.skipped, 2);
    assert_eq!(
        b.events,
        vec![
            g3_event(),
            Event::Removed {
                hashes: vec![2],
                tier: Tier::Gpu
            }
        ]
    );
}
