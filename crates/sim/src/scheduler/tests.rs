//! Scheduler tests: the calibration pins on the simulated clock, batching limits,
//! preemption and the remote-prefill transfer.

use super::*;

const BS: usize = 16;

fn scheduler(num_blocks: usize, limits: Limits) -> Scheduler {
    Scheduler::new(
        limits,
        LatencyModel::H100,
        BlockCache::new(num_blocks, BS, 7),
        true,
    )
}

fn blocks(s: &Scheduler) -> &BlockCache {
    match s.kv() {
        KvCache::Blocks(cache) => cache,
        KvCache::Slots(_) => panic!("a block cache"),
    }
}

fn submission(id: SeqId, prompt: Vec<u32>, output_len: usize) -> Submission {
    Submission {
        id,
        prompt,
        output: (0..output_len as u32).collect(),
        remote_prefill: false,
        cache_salt: None,
    }
}

fn tokens(start: u32, n: usize) -> Vec<u32> {
    (start..start + n as u32).collect()
}

/// Steps until idle; returns (simulated time of each emission, emission).
fn run_to_idle(s: &mut Scheduler, mut now: f64) -> Vec<(f64, Emission)> {
    let mut seen = Vec::new();
    for _ in 0..100_000 {
        if !s.has_runnable() {
            match s.next_transfer_ms() {
                Some(t) => now = now.max(t),
                None => return seen,
            }
        }
        let out = s.step(now);
        now += out.duration_ms;
        seen.extend(out.emissions.into_iter().map(|e| (now, e)));
    }
    panic!("scheduler did not go idle");
}

fn first_token_ms(seen: &[(f64, Emission)], id: SeqId) -> f64 {
    seen.iter()
        .find_map(|(t, e)| {
            matches!(e, Emission::Token { seq, index: 0, .. } if *seq == id).then_some(*t)
        })
        .expect("first token")
}

fn within_5_percent(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 0.05 * expected
}

#[test]
fn pin_prefill_of_8192_tokens_from_scratch() {
    let mut s = scheduler(10_000, Limits::default());
    s.submit(submission(1, tokens(0, 8192), 1));
    let seen = run_to_idle(&mut s, 0.0);
    let ttft = first_token_ms(&seen, 1);
    let fitted = 3.9 + 0.02779 * 8192.0 + 5.16e-7 * 8192.0 * 8192.0;
    assert!(
        within_5_percent(ttft, fitted),
        "ttft {ttft} ms vs fit {fitted} ms"
    );
}

#[test]
fn pin_prefill_of_256_new_tokens_after_a_7936_token_cached_prefix() {
    let mut s = scheduler(10_000, Limits::default());
    let prefix = tokens(0, 7936);
    s.submit(submission(1, prefix.clone(), 1));
    let t0 = run_to_idle(&mut s, 0.0)
        .last()
        .map(|(t, _)| *t)
        .expect("ran");
    let mut prompt = prefix;
    prompt.extend(tokens(50_000, 256));
    s.submit(submission(2, prompt, 1));
    let seen = run_to_idle(&mut s, t0);
    let ttft = first_token_ms(&seen, 2) - t0;
    let fitted = 3.9 + 0.02779 * 256.0 + 5.16e-7 * (256.0 * 256.0 + 2.0 * 256.0 * 7936.0);
    assert!(
        within_5_percent(ttft, fitted),
        "ttft {ttft} ms vs fit {fitted} ms"
    );
    let usage = seen.iter().find_map(|(_, e)| match e {
        Emission::Finished { seq: 2, usage, .. } => Some(*usage),
        _ => None,
    });
    assert_eq!(usage.map(|u| u.cached_tokens), Some(7936));
}

#[test]
fn a_cache_salt_keeps_prefixes_apart() {
    let mut s = scheduler(10_000, Limits::default());
    let salted = |id, salt: &str| Submission {
        cache_salt: Some(salt.into()),
        ..submission(id, tokens(0, 1024), 1)
    };
    let cached = |seen: &[(f64, Emission)], id| {
        seen.iter().find_map(|(_, e)| match e {
            Emission::Finished { seq, usage, .. } if *seq == id => Some(usage.cached_tokens),
            _ => None,
        })
    };
    s.submit(salted(1, "tenant-a"));
    let t = run_to_idle(&mut s, 0.0)
        .last()
        .map(|(t, _)| *t)
        .expect("ran");
    s.submit(salted(2, "tenant-b"));
    s.submit(submission(3, tokens(0, 1024), 1));
    let seen = run_to_idle(&mut s, t);
    assert_eq!(cached(&seen, 2), Some(0), "another salt hits nothing");
    assert_eq!(cached(&seen, 3), Some(0), "no salt hits nothing salted");
    let t = seen.last().map(|(t, _)| *t).expect("ran");
    s.submit(salted(4, "tenant-a"));
    let seen = run_to_idle(&mut s, t);
    assert!(
        cached(&seen, 4) >= Some(1008),
        "the same salt hits: {:?}",
        cached(&seen, 4)
    );
}

#[test]
fn pin_one_decode_step_at_batch_32() {
    let mut s = scheduler(10_000, Limits::default());
    for id in 0..32 {
        s.submit(submission(id, tokens(id as u32 * 10_000, 1023), 8));
    }
    let mut now = 0.0;
    let mut decode_step = None;
    while s.has_runnable() {
        let out = s.step(now);
        now += out.duration_ms;
        let all_decode = out.batch_size == 32
            && out
                .emissions
                .iter()
                .all(|e| !matches!(e, Emission::Token { index: 0, .. }));
        if all_decode {
            decode_step = Some(out.duration_ms);
            break;
        }
    }
    let step = decode_step.expect("a step decoding all 32 sequences");
    let fitted = 5.35 + 0.0056 * 32.0 + 4.4e-5 * 32.0 * 1024.0;
    assert!(
        within_5_percent(step, fitted),
        "step {step} ms vs fit {fitted} ms"
    );
}

#[test]
fn long_prompts_are_chunked_to_the_token_budget() {
    let limits = Limits {
        max_num_batched_tokens: 1000,
        ..Limits::default()
    };
    let mut s = scheduler(10_000, limits);
    s.submit(submission(1, tokens(0, 2500), 1));
    let mut steps = 0;
    while s.has_runnable() {
        let out = s.step(0.0);
        steps += 1;
        assert!(out.batch_size <= 1);
    }
    assert_eq!(steps, 3, "2500 tokens at 1000 per step");
}

#[test]
fn the_running_cap_queues_the_rest() {
    let limits = Limits {
        max_num_seqs: 2,
        ..Limits::default()
    };
    let mut s = scheduler(10_000, limits);
    for id in 0..5 {
        s.submit(submission(id, tokens(id as u32 * 100, 32), 4));
    }
    s.step(0.0);
    let stats = s.stats();
    assert_eq!((stats.running, stats.waiting), (2, 3));
    let finished = run_to_idle(&mut s, 0.0)
        .iter()
        .filter(|(_, e)| matches!(e, Emission::Finished { .. }))
        .count();
    assert_eq!(finished, 5);
}

#[test]
fn out_of_blocks_preempts_the_newest_and_everything_still_finishes() {
    // 12 blocks: two sequences of 4 prompt blocks each grow past 6 blocks while decoding.
    let mut s = scheduler(12, Limits::default());
    s.submit(submission(1, tokens(0, 64), 40));
    s.submit(submission(2, tokens(1000, 64), 40));
    let seen = run_to_idle(&mut s, 0.0);
    assert!(s.stats().preemptions > 0);
    let outputs: Vec<usize> = seen
        .iter()
        .filter_map(|(_, e)| match e {
            Emission::Finished { usage, .. } => Some(usage.completion_tokens),
            _ => None,
        })
        .collect();
    assert_eq!(outputs, vec![40, 40]);
    assert_eq!(blocks(&s).num_free(), 12, "every block released");
}

#[test]
fn remote_prefill_charges_the_transfer_not_the_prefill() {
    let mut s = scheduler(10_000, Limits::default());
    let mut sub = submission(1, tokens(0, 4097), 2);
    sub.remote_prefill = true;
    s.submit(sub);
    let seen = run_to_idle(&mut s, 0.0);
    let ttft = first_token_ms(&seen, 1);
    let transfer = transfer_ms(4096, KV_BYTES_PER_TOKEN, 45.0);
    let one_token = LatencyModel::H100.prefill_ms(1, 4096);
    assert!((ttft - (transfer + one_token)).abs() < 1e-6, "ttft {ttft}");
    assert!(ttft < LatencyModel::H100.prefill_ms(4097, 0) / 5.0);
}

#[test]
fn aborting_releases_blocks() {
    let mut s = scheduler(100, Limits::default());
    s.submit(submission(1, tokens(0, 320), 100));
    s.step(0.0);
    assert!(blocks(&s).num_free() < 100);
    s.abort(1);
    assert_eq!(blocks(&s).num_free(), 100);
    assert!(!s.has_runnable());
}

#[test]
fn prefix_counters_count_tokens() {
    let mut s = scheduler(1000, Limits::default());
    s.submit(submission(1, tokens(0, 100), 1));
    run_to_idle(&mut s, 0.0);
    s.submit(submission(2, tokens(0, 100), 1));
    run_to_idle(&mut s, 0.0);
    let stats = s.stats();
    assert_eq!(stats.prefix_queries, 200);
    assert_eq!(stats.prefix_hits, 96, "6 full blocks of the second prompt");
}
