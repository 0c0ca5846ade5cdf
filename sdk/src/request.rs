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
}

/// One backend able to serve the request, with its live figures.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Candidate {
    /// The backend, to look up in the [`crate::Fleet`].
    pub backend: BackendId,
    /// Requests waiting in the engine's queue.
    pub waiting: u32,
    /// Requests running in the engine's batch.
    pub running: u32,
    /// Fraction of the KV cache in use, in [0, 1].
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
            slo_ttft_ms: r.slo_ttft_ms,
            slo_tpot_ms: r.slo_tpot_ms,
        }
    }
}

impl Candidate {
    /// Rebuilds the candidates from the contract's columns, one per row. The host sends
    /// columns of equal length; should they differ, the shortest bounds the rows.
    pub(crate) fn from_columns(c: &types::Candidates) -> Vec<Candidate> {
        let rows = [
            c.backend.len(),
            c.waiting.len(),
            c.running.len(),
            c.kv_usage.len(),
            c.cached_prefix_tokens.len(),
            c.in_flight_requests.len(),
            c.in_flight_prefill_tokens.len(),
            c.prefill_tokens_per_s.len(),
            c.decode_tokens_per_s.len(),
            c.metrics_age_ms.len(),
        ]
        .into_iter()
        .min()
        .unwrap_or(0);
        // NB: every column cut to `rows` first, so the indexing below is provably in
        // bounds and compiles without a check per field.
        let backend = &c.backend[..rows];
        let waiting = &c.waiting[..rows];
        let running = &c.running[..rows];
        let kv_usage = &c.kv_usage[..rows];
        let cached_prefix_tokens = &c.cached_prefix_tokens[..rows];
        let in_flight_requests = &c.in_flight_requests[..rows];
        let in_flight_prefill_tokens = &c.in_flight_prefill_tokens[..rows];
        let prefill_tokens_per_s = &c.prefill_tokens_per_s[..rows];
        let decode_tokens_per_s = &c.decode_tokens_per_s[..rows];
        let metrics_age_ms = &c.metrics_age_ms[..rows];
        (0..rows)
            .map(|i| Candidate {
                backend: BackendId(backend[i]),
                waiting: waiting[i],
                running: running[i],
                kv_usage: kv_usage[i],
                cached_prefix_tokens: cached_prefix_tokens[i],
                in_flight_requests: in_flight_requests[i],
                in_flight_prefill_tokens: in_flight_prefill_tokens[i],
                prefill_tokens_per_s: prefill_tokens_per_s[i],
                decode_tokens_per_s: decode_tokens_per_s[i],
                metrics_age_ms: metrics_age_ms[i],
            })
            .collect()
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

    fn columns(rows: u32) -> types::Candidates {
        let ids: Vec<u32> = (0..rows).collect();
        let fractions: Vec<f32> = ids.iter().map(|&i| i as f32 / 10.0).collect();
        types::Candidates {
            backend: ids.iter().map(|i| i + 10).collect(),
            waiting: ids.iter().map(|i| i + 20).collect(),
            running: ids.iter().map(|i| i + 30).collect(),
            kv_usage: fractions.clone(),
            cached_prefix_tokens: ids.iter().map(|i| i + 40).collect(),
            in_flight_requests: ids.iter().map(|i| i + 50).collect(),
            in_flight_prefill_tokens: ids.iter().map(|i| i + 60).collect(),
            prefill_tokens_per_s: fractions.iter().map(|f| f + 1.0).collect(),
            decode_tokens_per_s: fractions.iter().map(|f| f + 2.0).collect(),
            metrics_age_ms: ids.iter().map(|i| i + 70).collect(),
        }
    }

    #[test]
    fn columns_rebuild_one_candidate_per_row_in_order() {
        let cands = Candidate::from_columns(&columns(2));
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
        assert_eq!(cands.len(), 2);
        assert_eq!(cands[0].backend, BackendId(10));
    }

    #[test]
    fn uneven_columns_are_cut_to_the_shortest() {
        let mut c = columns(3);
        c.metrics_age_ms.pop();
        assert_eq!(Candidate::from_columns(&c).len(), 2);
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
