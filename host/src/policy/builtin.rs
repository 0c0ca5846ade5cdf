//! The native least-load policy: the fallback when a tenant's pipeline fails, the
//! decision maker for tenants with no pipeline, and the baseline policy benchmarks
//! measure Wasm against.

use super::facts::{Candidate, Placement, RequestFacts};

/// Load of a candidate as the built-in sees it: queued and running requests as scraped,
/// plus the router's own in-flight count (fresher than any scrape), plus a unit per 1024
/// in-flight prefill tokens.
pub fn load(c: &Candidate) -> f32 {
    (c.waiting + c.running + c.in_flight_requests) as f32 + c.in_flight_prefill_tokens as f32 / 1024.0
}

/// Scores each candidate in [0, 1]: `1 / (1 + load / 8)`, so an idle backend scores 1.
pub fn score(candidates: &[Candidate], out: &mut Vec<f32>) {
    out.clear();
    out.extend(candidates.iter().map(|c| 1.0 / (1.0 + load(c) / 8.0)));
}

/// Places the request on the least-loaded candidate; ties go to the lowest index.
/// Rejects with 503 when there is no candidate.
pub fn place(_req: &RequestFacts, candidates: &[Candidate]) -> Placement {
    candidates
        .iter()
        .min_by(|a, b| load(a).total_cmp(&load(b)).then(a.backend.cmp(&b.backend)))
        .map(|c| Placement::Single(c.backend))
        .unwrap_or_else(|| Placement::Reject {
            status: 503,
            message: "no backend can serve this request".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(backend: u32, waiting: u32, in_flight: u32) -> Candidate {
        Candidate {
            backend,
            waiting,
            in_flight_requests: in_flight,
            ..Candidate::default()
        }
    }

    #[test]
    fn picks_least_loaded() {
        let cands = [cand(0, 3, 0), cand(1, 0, 1), cand(2, 2, 2)];
        assert_eq!(place(&RequestFacts::default(), &cands), Placement::Single(1));
    }

    #[test]
    fn ties_go_to_lowest_index() {
        let cands = [cand(4, 1, 0), cand(2, 0, 1)];
        assert_eq!(place(&RequestFacts::default(), &cands), Placement::Single(2));
    }

    #[test]
    fn no_candidates_is_503() {
        assert!(matches!(
            place(&RequestFacts::default(), &[]),
            Placement::Reject { status: 503, .. }
        ));
    }

    #[test]
    fn idle_scores_one_and_busy_less() {
        let mut out = Vec::new();
        score(&[cand(0, 0, 0), cand(1, 8, 0)], &mut out);
        assert_eq!(out, vec![1.0, 0.5]);
    }
}
