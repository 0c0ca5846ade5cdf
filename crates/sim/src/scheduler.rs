//! Continuous batching: which sequences run in the next engine step, and what the step
//! costs (vLLM V1's scheduler, simplified).
//!
//! Each step serves the running sequences first (one token each when decoding, a chunk
//! when still prefilling), then admits waiting sequences first come first served while the
//! step's token budget, the running-sequence cap and free KV blocks allow. A running
//! sequence that cannot get a block preempts the most recently admitted one, which goes
//! back to the head of the queue and is recomputed. With a llama.cpp-style [`SlotCache`]
//! instead of blocks, a sequence is admitted when a slot is idle and never preempted. The
//! scheduler keeps no clock of its own: the caller passes the simulated time in and sleeps
//! for the returned duration.

use std::collections::VecDeque;

use super::cache::{BlockCache, BlockId, CacheEvent};
use super::latency::{KV_BYTES_PER_TOKEN, LatencyModel, StepWork, transfer_ms};
use super::slots::{SlotCache, SlotId};

/// Identifies a sequence (one request) inside an engine.
pub type SeqId = u64;

/// Engine limits (vLLM's `--max-num-seqs`, `--max-num-batched-tokens`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Most sequences running at once. vLLM default 256.
    pub max_num_seqs: usize,
    /// Most tokens processed in one step; longer prefills are chunked. Default 8192.
    pub max_num_batched_tokens: usize,
    /// Usable speed of the KV-transfer link for disaggregated prefill, in GB/s. Default 45
    /// (a 400 Gb/s RDMA link).
    pub kv_transfer_gb_per_s: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_num_seqs: 256,
            max_num_batched_tokens: 8192,
            kv_transfer_gb_per_s: 45.0,
        }
    }
}

/// The KV cache an engine keeps: vLLM's block pool or llama.cpp's slots.
#[derive(Debug)]
pub enum KvCache {
    /// vLLM-style blocks shared by hash, LRU-evicted ([`BlockCache`]).
    Blocks(BlockCache),
    /// llama.cpp-style slots, one prompt each ([`SlotCache`]).
    Slots(SlotCache),
}

impl KvCache {
    /// Fraction of the cache in use, in [0, 1]: blocks referenced by running sequences, or
    /// tokens held by slots.
    pub fn usage(&self) -> f64 {
        match self {
            Self::Blocks(c) => c.usage(),
            Self::Slots(c) => c.usage(),
        }
    }
}

impl From<BlockCache> for KvCache {
    fn from(cache: BlockCache) -> Self {
        Self::Blocks(cache)
    }
}

impl From<SlotCache> for KvCache {
    fn from(cache: SlotCache) -> Self {
        Self::Slots(cache)
    }
}

/// A request handed to the engine.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Caller-chosen identifier, echoed in emissions.
    pub id: SeqId,
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// The tokens to generate, in order; their count is the output length (at least one).
    pub output: Vec<u32>,
    /// The prompt's KV arrives from a remote prefill: charge a transfer instead of a
    /// prefill (vLLM's `do_remote_prefill`).
    pub remote_prefill: bool,
    /// vLLM's `cache_salt`: prompts with different salts share no cached blocks.
    pub cache_salt: Option<String>,
}

/// Token counts of a finished sequence (the OpenAI `usage` object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens found in the prefix cache at admission.
    pub cached_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
}

/// Something the step produced for one sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emission {
    /// A generated token; `index` 0 is the first token.
    Token {
        /// The sequence.
        seq: SeqId,
        /// Token id.
        token: u32,
        /// Position in the output.
        index: usize,
    },
    /// The sequence is done and its blocks are released.
    Finished {
        /// The sequence.
        seq: SeqId,
        /// Its token counts.
        usage: Usage,
        /// KV blocks that held its prompt, for `kv_transfer_params.remote_block_ids`.
        prompt_blocks: Vec<BlockId>,
    },
}

/// What one step did.
#[derive(Debug, Default)]
pub struct StepOutcome {
    /// Simulated duration of the step in ms (0 when nothing ran).
    pub duration_ms: f64,
    /// Tokens and completions, visible once the step's duration has elapsed.
    pub emissions: Vec<Emission>,
    /// Cache changes, in order (empty unless events are recorded).
    pub events: Vec<CacheEvent>,
    /// Sequences that ran in the step.
    pub batch_size: usize,
}

/// Cumulative counters and current gauges of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    /// Sequences running (including those receiving a remote KV transfer).
    pub running: usize,
    /// Sequences queued.
    pub waiting: usize,
    /// Fraction of KV blocks in use, [0, 1].
    pub kv_usage: f64,
    /// Prompt tokens looked up in the prefix cache so far.
    pub prefix_queries: u64,
    /// Prompt tokens found in the prefix cache so far.
    pub prefix_hits: u64,
    /// Sequences preempted so far.
    pub preemptions: u64,
}

/// What admitting the head of the queue did.
enum Admission {
    /// Running, with this many tokens scheduled in the step.
    Running(usize),
    /// Waiting for its remote KV transfer.
    Transferring,
    /// Not enough blocks (or nothing queued).
    NoRoom,
}

#[derive(Debug)]
struct Seq {
    id: SeqId,
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    prompt_len: usize,
    output: Vec<u32>,
    emitted: usize,
    /// Tokens whose KV is computed.
    computed: usize,
    blocks: Vec<BlockId>,
    /// Hashes of full blocks of `tokens` known so far (some may not be committed yet).
    hashes: Vec<u64>,
    /// The parent of the first block: the cache salt's hash, if any.
    root: Option<u64>,
    /// Leading blocks committed to the cache.
    committed: usize,
    cached_tokens: usize,
    remote_prefill: bool,
    /// Simulated time the remote KV transfer completes.
    transfer_until_ms: f64,
    admitted_once: bool,
    /// The slot it runs in, with a slot cache.
    slot: Option<SlotId>,
}

/// The scheduler and KV cache of one engine.
///
/// Owns the waiting queue, the running batch and the [`KvCache`]. Promises: a step never
/// exceeds the token budget or the sequence cap; every block or slot a sequence holds is
/// released when it finishes, is preempted or is aborted.
#[derive(Debug)]
pub struct Scheduler {
    limits: Limits,
    model: LatencyModel,
    kv: KvCache,
    record_events: bool,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    transferring: Vec<Seq>,
    stats: Stats,
}

impl Scheduler {
    /// An idle engine with `kv`, pricing steps with `model`; KV events are collected only
    /// when `record_events` is set (block caches only: slots publish none).
    pub fn new(
        limits: Limits,
        model: LatencyModel,
        kv: impl Into<KvCache>,
        record_events: bool,
    ) -> Self {
        Self {
            limits,
            model,
            kv: kv.into(),
            record_events,
            waiting: VecDeque::new(),
            running: Vec::new(),
            transferring: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// The KV cache, read-only.
    pub fn kv(&self) -> &KvCache {
        &self.kv
    }

    /// Queues a request.
    pub fn submit(&mut self, sub: Submission) {
        let (root, hashes) = match &self.kv {
            KvCache::Blocks(cache) => {
                let root = sub.cache_salt.as_deref().map(|s| cache.salt_root(s));
                (root, cache.hash_chain(&sub.prompt, 0, root))
            }
            KvCache::Slots(_) => (None, Vec::new()),
        };
        let mut output = sub.output;
        if output.is_empty() {
            output.push(0);
        }
        self.waiting.push_back(Seq {
            id: sub.id,
            prompt_len: sub.prompt.len(),
            tokens: sub.prompt,
            output,
            emitted: 0,
            computed: 0,
            blocks: Vec::new(),
            hashes,
            root,
            committed: 0,
            cached_tokens: 0,
            remote_prefill: sub.remote_prefill,
            transfer_until_ms: 0.0,
            admitted_once: false,
            slot: None,
        });
    }

    /// Drops a sequence wherever it is (the client went away), releasing its blocks.
    pub fn abort(&mut self, id: SeqId) {
        let kv = &mut self.kv;
        let mut drop_seq = |seq: &Seq| {
            if seq.id == id {
                release(kv, seq);
                false
            } else {
                true
            }
        };
        self.waiting.retain(&mut drop_seq);
        self.running.retain(&mut drop_seq);
        self.transferring.retain(&mut drop_seq);
    }

    /// Forgets every cached prefix (vLLM's `/reset_prefix_cache`).
    pub fn reset_prefix_cache(&mut self) -> Vec<CacheEvent> {
        let mut events = Vec::new();
        match &mut self.kv {
            KvCache::Blocks(cache) => cache.clear(self.record_events.then_some(&mut events)),
            KvCache::Slots(slots) => slots.clear(),
        }
        events
    }

    /// Whether a step would do anything now.
    pub fn has_runnable(&self) -> bool {
        !self.running.is_empty() || !self.waiting.is_empty()
    }

    /// The simulated time the earliest remote KV transfer completes, if one is under way.
    pub fn next_transfer_ms(&self) -> Option<f64> {
        self.transferring
            .iter()
            .map(|s| s.transfer_until_ms)
            .min_by(f64::total_cmp)
    }

    /// Current gauges and cumulative counters.
    pub fn stats(&self) -> Stats {
        Stats {
            running: self.running.len() + self.transferring.len(),
            waiting: self.waiting.len(),
            kv_usage: self.kv.usage(),
            ..self.stats
        }
    }

    /// Runs one step starting at simulated time `now_ms`: schedules, prices and applies it.
    /// The outcome becomes visible to clients once `duration_ms` has elapsed.
    pub fn step(&mut self, now_ms: f64) -> StepOutcome {
        let mut out = StepOutcome::default();
        self.finish_transfers(now_ms, &mut out.events);
        let mut budget = self.limits.max_num_batched_tokens;
        let mut work = StepWork::default();
        // (index in `running`, tokens this step)
        let mut batch: Vec<(usize, usize)> = Vec::new();
        let mut preempted = false;

        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let seq = &self.running[i];
            let n = (seq.tokens.len() - seq.computed).min(budget);
            let target = seq.computed + n;
            if self.grow(i, target, &mut out.events) {
                batch.push((i, n));
                budget -= n;
                i += 1;
                continue;
            }
            // Out of blocks: preempt from the back until this sequence fits or is itself
            // the one preempted.
            preempted = true;
            let fits = loop {
                let victim = self.running.len() - 1;
                self.preempt(victim);
                if victim == i {
                    break false;
                }
                if self.grow(i, target, &mut out.events) {
                    break true;
                }
            };
            if !fits {
                break;
            }
            batch.push((i, n));
            budget -= n;
            i += 1;
        }

        while !preempted
            && budget > 0
            && self.running.len() + self.transferring.len() < self.limits.max_num_seqs
        {
            match self.admit_next(budget, now_ms, &mut out.events) {
                Admission::Running(n) => {
                    batch.push((self.running.len() - 1, n));
                    budget -= n;
                }
                Admission::Transferring => {}
                Admission::NoRoom => break,
            }
        }

        for &(idx, n) in &batch {
            let seq = &self.running[idx];
            if seq.computed >= seq.prompt_len {
                work.add_decode(seq.computed + n);
            } else {
                work.add_prefill(n, seq.computed);
            }
        }
        out.duration_ms = self.model.step_ms(&work);
        out.batch_size = batch.len();
        for &(idx, n) in &batch {
            self.advance(idx, n, &mut out);
        }
        self.retire_finished(&mut out.emissions);
        out
    }

    /// Moves sequences whose remote KV has arrived into the running batch, their prompt
    /// (all but the last token) computed and cached.
    fn finish_transfers(&mut self, now_ms: f64, events: &mut Vec<CacheEvent>) {
        let mut k = 0;
        while k < self.transferring.len() {
            if self.transferring[k].transfer_until_ms > now_ms {
                k += 1;
                continue;
            }
            let mut seq = self.transferring.swap_remove(k);
            seq.computed = seq.prompt_len.saturating_sub(1);
            if let KvCache::Blocks(cache) = &mut self.kv {
                commit_full_blocks(cache, self.record_events, &mut seq, events);
            }
            self.running.push(seq);
        }
    }

    /// Tries to admit the head of the queue with at most `budget` tokens this step; on
    /// [`Admission::NoRoom`] it stays at the head, untouched.
    fn admit_next(
        &mut self,
        budget: usize,
        now_ms: f64,
        events: &mut Vec<CacheEvent>,
    ) -> Admission {
        let Some(mut seq) = self.waiting.pop_front() else {
            return Admission::NoRoom;
        };
        let remote = seq.remote_prefill && !seq.admitted_once;
        let hit_tokens = match &mut self.kv {
            KvCache::Blocks(cache) => {
                let sink = self.record_events.then_some(&mut *events);
                reserve_blocks(cache, &mut seq, budget, remote, sink)
            }
            KvCache::Slots(slots) => slots.acquire(&seq.tokens).map(|(id, cached)| {
                seq.slot = Some(id);
                cached
            }),
        };
        let Some(hit_tokens) = hit_tokens else {
            self.waiting.push_front(seq);
            return Admission::NoRoom;
        };
        let n = if remote {
            0
        } else {
            (seq.tokens.len() - hit_tokens).min(budget)
        };
        if !seq.admitted_once {
            self.stats.prefix_queries += seq.prompt_len as u64;
            self.stats.prefix_hits += hit_tokens.min(seq.prompt_len) as u64;
            seq.cached_tokens = hit_tokens.min(seq.prompt_len);
        }
        seq.computed = hit_tokens;
        if remote {
            seq.admitted_once = true;
            let uncached = seq.prompt_len.saturating_sub(1).saturating_sub(hit_tokens);
            let ms = transfer_ms(
                uncached,
                KV_BYTES_PER_TOKEN,
                self.limits.kv_transfer_gb_per_s,
            );
            seq.transfer_until_ms = now_ms + ms;
            self.transferring.push(seq);
            return Admission::Transferring;
        }
        seq.admitted_once = true;
        self.running.push(seq);
        Admission::Running(n)
    }

    /// Makes running sequence `idx` hold enough blocks for `tokens` tokens.
    fn grow(&mut self, idx: usize, tokens: usize, events: &mut Vec<CacheEvent>) -> bool {
        // A slot holds its whole context: only blocks run out.
        let KvCache::Blocks(cache) = &mut self.kv else {
            return true;
        };
        let need = tokens.div_ceil(cache.block_size());
        let have = self.running[idx].blocks.len();
        if need <= have {
            return true;
        }
        let sink = self.record_events.then_some(events);
        match cache.allocate(need - have, sink) {
            Some(fresh) => {
                self.running[idx].blocks.extend(fresh);
                true
            }
            None => false,
        }
    }

    /// Sends running sequence `idx` back to the head of the queue, to be recomputed.
    fn preempt(&mut self, idx: usize) {
        let mut seq = self.running.remove(idx);
        release(&mut self.kv, &seq);
        seq.blocks.clear();
        seq.slot = None;
        seq.computed = 0;
        seq.committed = 0;
        self.stats.preemptions += 1;
        self.waiting.push_front(seq);
    }

    /// Applies `n` computed tokens to running sequence `idx`, sampling a token when the
    /// sequence is caught up.
    fn advance(&mut self, idx: usize, n: usize, out: &mut StepOutcome) {
        let seq = &mut self.running[idx];
        seq.computed += n;
        if let KvCache::Blocks(cache) = &mut self.kv {
            commit_full_blocks(cache, self.record_events, seq, &mut out.events);
        }
        if seq.computed == seq.tokens.len() && seq.emitted < seq.output.len() {
            let token = seq.output[seq.emitted];
            out.emissions.push(Emission::Token {
                seq: seq.id,
                token,
                index: seq.emitted,
            });
            seq.emitted += 1;
            if seq.emitted < seq.output.len() {
                seq.tokens.push(token);
            }
        }
    }

    /// Releases and reports sequences that have emitted their whole output.
    fn retire_finished(&mut self, emissions: &mut Vec<Emission>) {
        let kv = &mut self.kv;
        self.running.retain(|seq| {
            if seq.emitted < seq.output.len() {
                return true;
            }
            let prompt_blocks = match kv {
                KvCache::Blocks(cache) => {
                    let n = seq.prompt_len.div_ceil(cache.block_size());
                    seq.blocks[..n.min(seq.blocks.len())].to_vec()
                }
                KvCache::Slots(_) => Vec::new(),
            };
            release(kv, seq);
            emissions.push(Emission::Finished {
                seq: seq.id,
                usage: Usage {
                    prompt_tokens: seq.prompt_len,
                    cached_tokens: seq.cached_tokens,
                    completion_tokens: seq.emitted,
                },
                prompt_blocks,
            });
            false
        });
    }
}

/// Reserves blocks for admitting `seq` with at most `budget` new tokens this step (all of
/// them for a remote prefill): references its cached leading blocks and allocates the rest.
/// Returns the cached tokens, or `None` (holding nothing) when too few blocks are free.
fn reserve_blocks(
    cache: &mut BlockCache,
    seq: &mut Seq,
    budget: usize,
    remote: bool,
    events: Option<&mut Vec<CacheEvent>>,
) -> Option<usize> {
    let bs = cache.block_size();
    // NB: at least the last prompt token is always computed, so a full hit still samples a
    // fresh first token (vLLM caps hits at `num_tokens - 1`).
    let max_hit_blocks = seq.tokens.len().saturating_sub(1) / bs;
    let hit_hashes = &seq.hashes[..max_hit_blocks.min(seq.hashes.len())];
    let hits = cache.acquire_hits(hit_hashes);
    let hit_tokens = hits.len() * bs;
    let target = if remote {
        seq.tokens.len()
    } else {
        hit_tokens + (seq.tokens.len() - hit_tokens).min(budget)
    };
    let extra = target.div_ceil(bs).saturating_sub(hits.len());
    let Some(fresh) = cache.allocate(extra, events) else {
        cache.release(&hits);
        return None;
    };
    seq.committed = hits.len();
    seq.blocks = hits;
    seq.blocks.extend(fresh);
    Some(hit_tokens)
}

/// Releases what `seq` holds: its blocks, or its slot (which keeps the computed tokens).
fn release(kv: &mut KvCache, seq: &Seq) {
    match kv {
        KvCache::Blocks(cache) => cache.release(&seq.blocks),
        KvCache::Slots(slots) => {
            if let Some(id) = seq.slot {
                slots.release(id, &seq.tokens[..seq.computed]);
            }
        }
    }
}

/// Hashes and commits the newly full blocks of `seq`, reporting them as one event.
fn commit_full_blocks(
    cache: &mut BlockCache,
    record: bool,
    seq: &mut Seq,
    events: &mut Vec<CacheEvent>,
) {
    let bs = cache.block_size();
    let full = (seq.computed / bs).min(seq.blocks.len());
    if full <= seq.committed {
        return;
    }
    if seq.hashes.len() < full {
        let parent = seq.hashes.last().copied().or(seq.root);
        let start = seq.hashes.len();
        let more = cache.hash_chain(&seq.tokens[..full * bs], start, parent);
        seq.hashes.extend(more);
    }
    let first = seq.committed;
    for b in first..full {
        cache.commit(seq.blocks[b], seq.hashes[b]);
    }
    seq.committed = full;
    if record {
        events.push(CacheEvent::Stored {
            hashes: seq.hashes[first..full].to_vec(),
            parent: first.checked_sub(1).map(|p| seq.hashes[p]),
            token_ids: seq.tokens[first * bs..full * bs].to_vec(),
        });
    }
}

#[cfg(test)]
mod tests;
