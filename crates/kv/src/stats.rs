//! Per-backend counters (plain atomics, for the admin API and metrics).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::burst::Burst;

/// Why a KV-event message or event was refused; the `reason` label of
/// `switchyard_kv_events_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// A message over `kv.max_message_bytes` (all frames together).
    TooLarge,
    /// Not 3 frames with an 8-byte sequence (live), or a replay reply of no known layout.
    BadFrames,
    /// The payload is not msgpack (truncated, or a length beyond the message).
    NotMsgpack,
    /// The payload is msgpack but not an event batch.
    NotABatch,
    /// An event whose block size is not a supported multiple of the model's.
    BlockSize,
    /// An event with more hashes than `kv.max_hashes_per_event`.
    TooManyHashes,
}

impl Reject {
    /// Every reason, in label order.
    pub const ALL: [Reject; 6] = [
        Reject::TooLarge,
        Reject::BadFrames,
        Reject::NotMsgpack,
        Reject::NotABatch,
        Reject::BlockSize,
        Reject::TooManyHashes,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::TooLarge => "too_large",
            Reject::BadFrames => "bad_frames",
            Reject::NotMsgpack => "not_msgpack",
            Reject::NotABatch => "not_a_batch",
            Reject::BlockSize => "block_size",
            Reject::TooManyHashes => "too_many_hashes",
        }
    }

    /// Whether the whole message was dropped (else one event of it).
    fn is_message(self) -> bool {
        !matches!(self, Reject::BlockSize | Reject::TooManyHashes)
    }
}

/// Live counters of one backend's ingest; every field only grows except `last_seq`.
///
/// Written by the backend's ingest threads, read by anyone; `Relaxed` is enough since
/// each counter stands alone.
#[derive(Debug, Default)]
pub struct Counters {
    /// Batches applied to the index (live or replayed).
    pub batches_applied: AtomicU64,
    /// Events applied (BlockStored, BlockRemoved, AllBlocksCleared).
    pub events_applied: AtomicU64,
    /// (block, backend) entries stored, counting each of our blocks.
    pub blocks_stored: AtomicU64,
    /// Engine blocks removed.
    pub blocks_removed: AtomicU64,
    /// Sequence gaps seen on the live stream.
    pub gaps: AtomicU64,
    /// Replay requests sent to the engine.
    pub replays: AtomicU64,
    /// Batches received by replay.
    pub replayed_batches: AtomicU64,
    /// Times the backend's blocks were all forgotten (event, restart, unrecoverable gap).
    pub clears: AtomicU64,
    /// Engine restarts detected (sequence going back).
    pub restarts: AtomicU64,
    /// Messages dropped because the apply queue was full.
    pub dropped: AtomicU64,
    /// BlockStored events dropped because their parent block is unknown.
    pub unknown_parent: AtomicU64,
    /// Removals or tier updates naming an engine hash we do not know.
    pub unknown_hash: AtomicU64,
    /// Events skipped inside good batches (unknown tag, unreadable fields).
    pub skipped_events: AtomicU64,
    /// Events not indexed: token count not matching the block size, or a
    /// non-full-attention KV group. (Block sizes that do not fit the model's are
    /// rejected, see [`Reject::BlockSize`].)
    pub unsupported_events: AtomicU64,
    /// Chains checked by the exact mode, and how many disagreed.
    pub exact_checked: AtomicU64,
    /// Chains whose published hashes differ from the exact mode's.
    pub exact_mismatches: AtomicU64,
    /// Routing decisions recorded (approximate mode).
    pub decisions: AtomicU64,
    /// Messages and events refused, per [`Reject`] reason (in [`Reject::ALL`] order).
    rejected: [AtomicU64; Reject::ALL.len()],
    /// Rate limit of the rejection warning.
    reject_log: Burst,
    /// Last applied sequence number plus one (0 = none yet).
    last_seq_plus_one: AtomicU64,
    /// The engine's data-parallel rank plus one (0 = not announced).
    dp_rank_plus_one: AtomicU64,
}

impl Counters {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Counts a refused message or event and logs it, once per burst (the ingest
    /// threads' span names the backend).
    pub fn reject(&self, reason: Reject, detail: &dyn std::fmt::Display) {
        self.rejected[reason as usize].fetch_add(1, Relaxed);
        if let Some(suppressed) = self.reject_log.admit() {
            tracing::warn!(
                reason = reason.as_str(),
                %detail,
                suppressed,
                "kv event message rejected; the stream goes on"
            );
        }
    }

    /// Messages and events refused for `reason` so far.
    pub fn rejected(&self, reason: Reject) -> u64 {
        self.rejected[reason as usize].load(Relaxed)
    }

    /// Records the last applied sequence number (`None` after a clear).
    pub fn set_last_seq(&self, seq: Option<u64>) {
        self.last_seq_plus_one
            .store(seq.map_or(0, |s| s.saturating_add(1)), Relaxed);
    }

    /// Records the data-parallel rank a batch announced.
    pub fn set_dp_rank(&self, rank: u32) {
        self.dp_rank_plus_one.store(u64::from(rank) + 1, Relaxed);
    }

    /// A snapshot; `blocks` comes from the index.
    pub fn snapshot(&self, name: &str, model: &str, mode: Mode, blocks: u32) -> BackendStats {
        let get = |c: &AtomicU64| c.load(Relaxed);
        BackendStats {
            name: name.to_owned(),
            model: model.to_owned(),
            mode,
            blocks,
            capacity_blocks: 0,
            prompt_slots: None,
            batches_applied: get(&self.batches_applied),
            events_applied: get(&self.events_applied),
            blocks_stored: get(&self.blocks_stored),
            blocks_removed: get(&self.blocks_removed),
            gaps: get(&self.gaps),
            replays: get(&self.replays),
            replayed_batches: get(&self.replayed_batches),
            clears: get(&self.clears),
            restarts: get(&self.restarts),
            dropped: get(&self.dropped),
            unknown_parent: get(&self.unknown_parent),
            unknown_hash: get(&self.unknown_hash),
            bad_messages: Reject::ALL
                .into_iter()
                .filter(|r| r.is_message())
                .map(|r| self.rejected(r))
                .sum(),
            skipped_events: get(&self.skipped_events),
            unsupported_events: get(&self.unsupported_events),
            exact_checked: get(&self.exact_checked),
            exact_mismatches: get(&self.exact_mismatches),
            decisions: get(&self.decisions),
            last_seq: get(&self.last_seq_plus_one).checked_sub(1),
            dp_rank: get(&self.dp_rank_plus_one).checked_sub(1).map(|r| r as u32),
        }
    }
}

/// How a backend's entries are filled.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// From the engine's KV events.
    Events,
    /// From our own routing decisions, with a TTL.
    Approximate,
}

/// What the index tracks of a slot-per-prompt engine's cache.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PromptSlotStats {
    /// Prompts the index believes the engine holds.
    pub held: u32,
    /// The engine's slots, each holding one prompt.
    pub slots: u32,
    /// Slots running a request the router sent.
    pub busy: u32,
}

/// One backend's index figures, for the admin API; see [`Counters`] for each field.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[allow(missing_docs, reason = "each field is documented on `Counters`")]
pub struct BackendStats {
    pub name: String,
    pub model: String,
    pub mode: Mode,
    /// Blocks the index holds for this backend now.
    pub blocks: u32,
    /// Most blocks it holds before the least recently used are forgotten: the engine's
    /// KV capacity when learned (approximate mode), else the default.
    pub capacity_blocks: u32,
    /// Prompts held and slots, for an engine that keeps one prompt per slot (llama.cpp)
    /// in approximate mode.
    pub prompt_slots: Option<PromptSlotStats>,
    pub batches_applied: u64,
    pub events_applied: u64,
    pub blocks_stored: u64,
    pub blocks_removed: u64,
    pub gaps: u64,
    pub replays: u64,
    pub replayed_batches: u64,
    pub clears: u64,
    pub restarts: u64,
    pub dropped: u64,
    pub unknown_parent: u64,
    pub unknown_hash: u64,
    /// Messages refused whole (the message-level [`Reject`] reasons together).
    pub bad_messages: u64,
    pub skipped_events: u64,
    pub unsupported_events: u64,
    pub exact_checked: u64,
    pub exact_mismatches: u64,
    pub decisions: u64,
    pub last_seq: Option<u64>,
    pub dp_rank: Option<u32>,
}
