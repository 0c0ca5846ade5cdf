//! `switchyard kv ...`: benchmark the KV-cache index and check a model's keying.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use parking_lot::RwLock;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use switchyard_kv::{
    Batch, BlockStored, Counters, Event, Index, IndexSink, Limits, Prompt, Sink, Tier, Tokenizer,
    encode_batch, key,
};

/// Subcommands of `switchyard kv`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Measure ingest rate, lookup latency, memory per entry and tokenization.
    Bench(BenchArgs),
    /// Print a prompt's token count and block keys as the router computes them.
    Keys(KeysArgs),
}

/// Arguments of `switchyard kv bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// (block, backend) entries in the index measured for memory and lookups.
    #[arg(long, default_value_t = 10_000_000)]
    entries: usize,
    /// Backends in the index.
    #[arg(long, default_value_t = 64)]
    backends: usize,
    /// Blocks in the looked-up prompt (512 x 16 = 8192 tokens).
    #[arg(long, default_value_t = 512)]
    blocks: usize,
    /// Lookups timed.
    #[arg(long, default_value_t = 20_000)]
    lookups: usize,
    /// BlockStored batches (16 blocks each) ingested.
    #[arg(long, default_value_t = 50_000)]
    batches: usize,
    /// A `tokenizer.json` for the tokenization figures.
    #[arg(long, default_value = "examples/tokenizer/tokenizer.json")]
    tokenizer: PathBuf,
}

/// Arguments of `switchyard kv keys`.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    /// The model's `tokenizer.json`.
    #[arg(long)]
    tokenizer: PathBuf,
    /// The model's `tokenizer_config.json` (for chat prompts).
    #[arg(long)]
    chat_template: Option<PathBuf>,
    /// The model (or LoRA) name keys are seeded with.
    #[arg(long)]
    model: String,
    /// Tokens per block.
    #[arg(long, default_value_t = key::DEFAULT_BLOCK_SIZE)]
    block_size: u32,
    /// Treat the prompt as one user message rendered through the chat template.
    #[arg(long)]
    chat: bool,
    /// The prompt.
    prompt: String,
}

/// Runs a `switchyard kv` subcommand.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Bench(args) => bench(&args),
        Command::Keys(args) => keys(&args),
    }
}

fn keys(args: &KeysArgs) -> anyhow::Result<()> {
    let tok = Tokenizer::from_files(&args.tokenizer, args.chat_template.as_deref())?;
    let messages = [("user", args.prompt.as_str())];
    let prompt = if args.chat {
        Prompt::Chat(&messages)
    } else {
        Prompt::Text(&args.prompt)
    };
    let ids = tok.encode_prompt(prompt)?;
    let mut keys = Vec::new();
    key::token_keys(
        key::root(&args.model, None),
        &ids,
        args.block_size,
        &mut keys,
    );
    println!("tokens: {}", ids.len());
    println!("token ids: {ids:?}");
    for (i, k) in keys.iter().enumerate() {
        println!("block {i}: {k:016x}");
    }
    Ok(())
}

/// The figures `kv bench` reports.
#[derive(Debug, Serialize)]
struct Report {
    /// BlockStored blocks decoded and applied per second of the ingest thread's CPU
    /// time (one core), steady state.
    ingest_blocks_per_s: f64,
    /// The same per second of wall time (lower on a shared machine).
    ingest_blocks_per_wall_s: f64,
    /// The first pass into a fresh index (page faults included), per CPU second.
    ingest_cold_blocks_per_s: f64,
    /// Lookup of `blocks` keys across `backends` backends, read lock included.
    lookup_median_us: f64,
    lookup_p99_us: f64,
    lookup_max_us: f64,
    /// Bytes the index allocates per (block, backend) entry, tables sized from the
    /// backends' capacities.
    bytes_per_entry: f64,
    /// The same with no capacities configured (tables grown on demand, 1.5x).
    bytes_per_entry_grown: f64,
    /// Resident memory growth per entry while filling the index.
    rss_bytes_per_entry: f64,
    entries: usize,
    backends: usize,
    blocks: usize,
    /// Cold tokenization throughput (no prefix cache).
    tokenize_tokens_per_s: Option<f64>,
    /// An ~8k-token prompt whose 7k-token system prompt was seen before.
    tokenize_cached_prompt_us: Option<f64>,
    /// Keying 8192 tokens into 512 blocks.
    keys_8k_tokens_us: f64,
}

fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=switchyard_kv::MAX_BACKENDS).contains(&args.backends),
        "--backends must be in 1..={}",
        switchyard_kv::MAX_BACKENDS
    );
    anyhow::ensure!(
        args.blocks >= args.backends,
        "--blocks must be at least --backends"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let ingest = ingest(args, &mut rng)?;
    let (bytes_per_entry_grown, _) = fill(args, &mut rng, false)?;
    let (bytes_per_entry, lookups) = fill(args, &mut rng, true)?;
    let (tokenize_tokens_per_s, tokenize_cached_prompt_us) = tokenize(&args.tokenizer)?.unzip();
    let report = Report {
        ingest_blocks_per_s: ingest.cpu,
        ingest_blocks_per_wall_s: ingest.wall,
        ingest_cold_blocks_per_s: ingest.cold_cpu,
        lookup_median_us: lookups.median_us,
        lookup_p99_us: lookups.p99_us,
        lookup_max_us: lookups.max_us,
        bytes_per_entry,
        bytes_per_entry_grown,
        rss_bytes_per_entry: lookups.rss_per_entry,
        entries: args.entries,
        backends: args.backends,
        blocks: args.blocks,
        tokenize_tokens_per_s,
        tokenize_cached_prompt_us,
        keys_8k_tokens_us: keys_time(&mut rng),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// Decodes and applies BlockStored batches of 16 blocks on this thread.
fn ingest(args: &BenchArgs, rng: &mut ChaCha8Rng) -> anyhow::Result<Ingest> {
    const BLOCKS: usize = 16;
    let index = Arc::new(RwLock::new(Index::new(16, None)));
    let mut sinks = Vec::new();
    // Capacities as engines announce them (`num_gpu_blocks`): the tables are sized up
    // front, as in a running router, rather than grown from empty.
    let capacity = (args.batches.div_ceil(args.backends) * BLOCKS) as u32;
    for _ in 0..args.backends {
        let slot = index.write().add_slot(Some(capacity))?;
        let counters = Arc::new(Counters::default());
        sinks.push((
            IndexSink::new(
                index.clone(),
                slot,
                "bench".into(),
                counters,
                None,
                Limits::default(),
            ),
            None,
            0,
        ));
    }
    // Each backend extends its current chain, starting a new prompt every 32 batches.
    let mut payloads = Vec::with_capacity(args.batches);
    for i in 0..args.batches {
        let b = i % args.backends;
        let (_, parent, len) = &mut sinks[b];
        if *len == 32 {
            (*parent, *len) = (None, 0);
        }
        let hashes: Vec<u64> = (0..BLOCKS).map(|_| rng.random()).collect();
        let tokens: Vec<u32> = (0..BLOCKS * 16)
            .map(|_| rng.random_range(0..65_000))
            .collect();
        let stored = BlockStored {
            hashes: hashes.clone(),
            parent: *parent,
            tokens,
            block_size: 16,
            lora_name: None,
            tier: Tier::Gpu,
            is_full_attention: true,
        };
        *parent = hashes.last().copied();
        *len += 1;
        let batch = Batch {
            ts: i as f64,
            events: vec![Event::Stored(stored)],
            dp_rank: Some(0),
            skipped: 0,
        };
        payloads.push((b, encode_batch(&batch)));
    }
    // Pass 1 from a cold index (first touch of its memory); pass 2, after clearing
    // every backend, is the steady state of a running router reusing that memory.
    let mut rates = [(0.0, 0.0); 2];
    for rate in &mut rates {
        let mut guard = index.write();
        for slot in 0..args.backends as u8 {
            guard.clear(slot);
        }
        drop(guard);
        let (start, cpu_start) = (Instant::now(), thread_cpu_s()?);
        for (b, payload) in &payloads {
            sinks[*b].0.apply(payload);
        }
        let (secs, cpu_secs) = (start.elapsed().as_secs_f64(), thread_cpu_s()? - cpu_start);
        let entries = index.read().entries();
        anyhow::ensure!(
            entries == args.batches * BLOCKS,
            "ingest lost blocks: {entries} entries"
        );
        let blocks = (args.batches * BLOCKS) as f64;
        *rate = (blocks / cpu_secs, blocks / secs);
    }
    Ok(Ingest {
        cpu: rates[1].0,
        wall: rates[1].1,
        cold_cpu: rates[0].0,
    })
}

/// Ingest rates in blocks per second.
struct Ingest {
    /// Steady state, per CPU second of the ingest thread.
    cpu: f64,
    /// Steady state, per wall second.
    wall: f64,
    /// First pass into a fresh index, per CPU second.
    cold_cpu: f64,
}

struct Lookups {
    median_us: f64,
    p99_us: f64,
    max_us: f64,
    rss_per_entry: f64,
}

/// Fills an index with `entries` entries (backend `j` holding the first
/// `blocks x (j+1) / backends` blocks of the prompt, the rest unshared random blocks),
/// then times lookups of the prompt.
fn fill(args: &BenchArgs, rng: &mut ChaCha8Rng, reserve: bool) -> anyhow::Result<(f64, Lookups)> {
    let per_backend = args.entries / args.backends;
    let rss_before = rss_bytes();
    let mut index = Index::new(16, None);
    let slots: Vec<u8> = (0..args.backends)
        .map(|_| index.add_slot(reserve.then_some(per_backend as u32)))
        .collect::<Result<_, _>>()?;
    let prompt: Vec<u64> = (0..args.blocks).map(|_| rng.random()).collect();
    let depth = |j: usize| args.blocks * (j + 1) / args.backends;
    for (j, &slot) in slots.iter().enumerate() {
        for &k in &prompt[..depth(j)] {
            index.store_engine(slot, k, Tier::Gpu, rng.random());
        }
        for _ in depth(j)..per_backend {
            index.store_engine(slot, rng.random(), Tier::Gpu, rng.random());
        }
    }
    let rss_per_entry = rss_bytes().saturating_sub(rss_before) as f64 / index.entries() as f64;
    let bytes_per_entry = index.memory_bytes() as f64 / index.entries() as f64;
    let index = RwLock::new(index);
    let mut out = vec![0u32; slots.len()];
    let mut hist = Histogram::<u64>::new(3)?;
    for _ in 0..args.lookups {
        let start = Instant::now();
        index.read().lookup(&prompt, &slots, &mut out);
        hist.record(start.elapsed().as_nanos() as u64)?;
    }
    for (j, &tokens) in out.iter().enumerate() {
        anyhow::ensure!(
            tokens as usize == depth(j) * 16,
            "backend {j}: wrong depth {tokens}"
        );
    }
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let lookups = Lookups {
        median_us: us(0.5),
        p99_us: us(0.99),
        max_us: hist.max() as f64 / 1000.0,
        rss_per_entry,
    };
    Ok((bytes_per_entry, lookups))
}

/// Cold tokens per second and the cached-prefix prompt time, if the tokenizer exists.
fn tokenize(path: &Path) -> anyhow::Result<Option<(f64, f64)>> {
    if !path.exists() {
        return Ok(None);
    }
    let tok =
        Tokenizer::from_files(path, None).with_context(|| format!("loading {}", path.display()))?;
    let system: String = (0..300)
        .map(|i| format!("Rule {i}: answer briefly, cite the manual section {i}, never guess.\n"))
        .collect();
    let cold_start = Instant::now();
    let mut tokens = 0;
    for round in 0..5 {
        tokens += tok
            .encode_uncached(&format!("{system}Question {round}?"), true)?
            .len();
    }
    let tokens_per_s = tokens as f64 / cold_start.elapsed().as_secs_f64();
    tok.encode(&format!("{system}warm-up"), true)?;
    let rounds = 50;
    let start = Instant::now();
    for round in 0..rounds {
        tok.encode(
            &format!("{system}Question {round}: what does rule {round} mean?"),
            true,
        )?;
    }
    let cached_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    Ok(Some((tokens_per_s, cached_us)))
}

fn keys_time(rng: &mut ChaCha8Rng) -> f64 {
    let tokens: Vec<u32> = (0..8192).map(|_| rng.random_range(0..65_000)).collect();
    let mut keys = Vec::with_capacity(512);
    let rounds = 1000;
    let start = Instant::now();
    for _ in 0..rounds {
        keys.clear();
        key::token_keys(key::root("bench", None), &tokens, 16, &mut keys);
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
}

/// CPU time of the calling thread in seconds, from the nanosecond thread CPU clock
/// (`CLOCK_THREAD_CPUTIME_ID`). The ingest pass runs on this one thread (decode and
/// apply both), so the thread clock is the whole of its work.
fn thread_cpu_s() -> anyhow::Result<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    anyhow::ensure!(
        rc == 0,
        "clock_gettime(CLOCK_THREAD_CPUTIME_ID): {}",
        std::io::Error::last_os_error()
    );
    Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

/// Resident set size of this process (Linux), 0 elsewhere.
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}
