//! The request being routed and the candidates it can go to.

use crate::fleet::{BackendId, find_label};
use crate::random::Rng;
use crate::wit::types;

/// One request being routed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    /// Stable hash of the request id; seed any randomness with it.
    pub id: u64,
    /// Tenant name.
    pub tenant: String,
    /// Model name.
    pub model: String,
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// Requested output tokens.
    pub max_tokens: u32,
    /// Client session id, if any.
    pub session: Option<String>,
    /// Labels from configured request headers, e.g. `("data-class", "pii")`.
    pub labels: Vec<(String, String)>,
    /// Time-to-first-token objective in milliseconds, if any.
    pub slo_ttft_ms: Option<u32>,
    /// Time-per-output-token objective in milliseconds, if any.
    pub slo_tpot_ms: Option<u32>,
}

impl Request {
    /// The value of request label `key`, if set.
    pub fn label(&self, key: &str) -> Option<&str> {
        find_label(&self.labels, key)
    }

    /// A random number generator seeded from the request id, so a decision that draws
    /// from it is the same every time the request is replayed.
    pub fn rng(&self) -> Rng {
        Rng::new(self.id)
    }

    /// Where the prompt's own prefix starts, past the head most prompts of the model
    /// share; `None` when the router does not key the model's prompts or the prompt is
    /// shorter than one KV block. Each call asks the host: call it once per decision
    /// (in [`crate::Scorer::score_all`] or [`crate::Placer::place`]), not per candidate.
    /// In native tests it answers what [`crate::testing::set_prefix_group`] set.
    pub fn prefix_group(&self) -> Option<PrefixGroup> {
        #[cfg(target_arch = "wasm32")]
        return crate::wit::host::request_prefix().map(|p| PrefixGroup {
            key: p.key,
            head_tokens: p.head_tokens,
        });
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::prefix_group()
    }
}

/// A request's prefix group (the contract's `prefix-group`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrefixGroup {
    /// Names the group: requests with the same key share every token up to the end of
    /// the KV block it keys, the first past the shared head.
    pub key: u64,
    /// Leading tokens of the prompt that most of the model's prompts also begin with;
    /// cached prefixes up to this long say nothing about where the request belongs.
    pub head_tokens: u32,
}

/// One backend able to serve the request, with its live figures.
///
/// NB: `repr(C)` with the fields in the order of the contract's row layout (ten 4-byte
/// words), so the host's rows are read in place as candidates, without a copy.
#[derive(Debug, Clone, Copy, PartialEq, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Candidate {
    /// The backend, to look up in the [`crate::Fleet`].
    pub backend: BackendId,
    /// Requests waiting in the engine's queue.
    pub waiting: u32,
    /// Requests running in the engine's batch.
    pub running: u32,
    /// Fraction of the KV cache in use, in [0, 1]. For a slot-per-prompt engine
    /// (llama.cpp), at least the share of its slots running the router's requests: at 1
    /// a request sent there queues.
    pub kv_usage: f32,
    /// Tokens of this prompt already cached on this backend.
    pub cached_prefix_tokens: u32,
    /// Requests the router has in flight to this backend.
    pub in_flight_requests: u32,
    /// Uncached prompt tokens of the router's in-flight requests still in prefill.
    pub in_flight_prefill_tokens: u32,
    /// Effective prefill speed, tokens per second; 0 when unknown.
    pub prefill_tokens_per_s: f32,
    /// Effective decode speed per sequence, tokens per second; 0 when unknown.
    pub decode_tokens_per_s: f32,
    /// Milliseconds since the engine's metrics were scraped.
    pub metrics_age_ms: u32,
}

impl Candidate {
    /// Prompt tokens this backend would have to compute for `req` (not cached).
    pub fn uncached_tokens(&self, req: &Request) -> u32 {
        req.prompt_tokens.saturating_sub(self.cached_prefix_tokens)
    }

    /// Requests on this backend: the larger of the engine's scraped queue
    /// (`waiting + running`) and the router's own in-flight count. The scrape sees every
    /// client but lags; the in-flight count is fresh but sees only this router, and the
    /// two overlap, so the larger is the better estimate and neither is counted twice.
    pub fn load(&self) -> u32 {
        self.waiting
            .saturating_add(self.running)
            .max(self.in_flight_requests)
    }

    /// Seconds until `tokens` more prompt tokens would be prefilled here: the router's
    /// in-flight prefill tokens are ahead of them, all at the effective prefill speed.
    /// `None` when the speed is unknown.
    pub fn prefill_seconds(&self, tokens: u32) -> Option<f32> {
        (self.prefill_tokens_per_s > 0.0).then(|| {
            (self.in_flight_prefill_tokens as f32 + tokens as f32) / self.prefill_tokens_per_s
        })
    }
}

impl From<types::Request> for Request {
    fn from(r: types::Request) -> Self {
        Request {
            id: r.id,
            tenant: r.tenant,
            model: r.model,
            prompt_tokens: r.prompt_tokens,
            max_tokens: r.max_tokens,
            session: r.session,
            labels: r.labels,
            slo_ttft_ms: (r.slo_ttft_ms > 0).then_some(r.slo_ttft_ms),
            slo_tpot_ms: (r.slo_tpot_ms > 0).then_some(r.slo_tpot_ms),
        }
    }
}

/// Words per candidate in the contract's `candidates.rows`.
pub(crate) const CANDIDATE_WORDS: usize = 10;

const _: () = assert!(std::mem::size_of::<Candidate>() == CANDIDATE_WORDS * 4);

impl Candidate {
    /// Views the contract's packed `candidates.rows` as candidates, in place. A trailing
    /// partial row (never sent by the host) is ignored.
    pub fn from_rows(rows: &[u32]) -> &[Candidate] {
        let whole = rows.len() - rows.len() % CANDIDATE_WORDS;
        bytemuck::cast_slice(&rows[..whole])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_takes_the_larger_view_without_double_counting() {
        let scraped = Candidate {
            waiting: 3,
            running: 4,
            in_flight_requests: 5,
            ..Candidate::default()
        };
        assert_eq!(scraped.load(), 7);
        let fresh = Candidate {
            in_flight_requests: 9,
            ..scraped
        };
        assert_eq!(fresh.load(), 9);
    }

    #[test]
    fn prefill_seconds_queues_behind_in_flight_prefill() {
        let c = Candidate {
            in_flight_prefill_tokens: 1000,
            prefill_tokens_per_s: 2000.0,
            ..Candidate::default()
        };
        assert_eq!(c.prefill_seconds(3000), Some(2.0));
        assert_eq!(Candidate::default().prefill_seconds(10), None);
    }

    #[test]
    fn rows_are_read_in_place_one_candidate_per_ten_words() {
        let rows: Vec<u32> = (0..2u32)
            .flat_map(|i| {
                [
                    10 + i,
                    20 + i,
                    30 + i,
                    (i as f32 / 10.0).to_bits(),
                    40 + i,
                    50 + i,
                    60 + i,
                    (1.0 + i as f32 / 10.0).to_bits(),
                    (2.0 + i as f32 / 10.0).to_bits(),
                    70 + i,
                ]
            })
            .collect();
        let cands = Candidate::from_rows(&rows);
        assert_eq!(cands.len(), 2);
        assert_eq!(cands[0].backend, BackendId(10));
        assert_eq!(
            cands[1],
            Candidate {
                backend: BackendId(11),
                waiting: 21,
                running: 31,
                kv_usage: 0.1,
                cached_prefix_tokens: 41,
                in_flight_requests: 51,
                in_flight_prefill_tokens: 61,
                prefill_tokens_per_s: 1.1,
                decode_tokens_per_s: 2.1,
                metrics_age_ms: 71,
            }
        );
    }

    #[test]
    fn a_partial_row_is_ignored() {
        let rows = vec![7u32; CANDIDATE_WORDS * 2 + 3];
        assert_eq!(Candidate::from_rows(&rows).len(), 2);
        assert!(Candidate::from_rows(&rows[..CANDIDATE_WORDS - 1]).is_empty());
    }

    #[test]
    fn rng_is_seeded_by_request_id() {
        let a = Request {
            id: 42,
            ..Request::default()
        };
        assert_eq!(a.rng().next_u64(), a.clone().rng().next_u64());
        let b = Request {
            id: 43,
            ..a.clone()
        };
        assert_ne!(a.rng().next_u64(), b.rng().next_u64());
    }
}
