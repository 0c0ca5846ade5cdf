//! Contract guest (not hostile): a placer that rejects every request with status 418 and
//! a message spelling out every request field, the `request-prefix` import's answer and
//! every candidate field it received, in order. The host's contract test compares it with what it sent, so a field lost or
//! misplaced on the way across the boundary (the packed candidate rows above all) fails.
//!
//! Message: the request line, then one line per candidate, e.g.
//!
//! ```text
//! id=9 tenant=t model=m prompt=64 max=8 session=None labels=[] ttft=None tpot=None prefix=None
//! 0 3 1 0.25 48 2 100 5000 40 7
//! ```

use std::fmt::Write;

use switchyard_policy_sdk::prelude::*;

/// Echoes its input; takes no config.
struct Echo;

impl Placer for Echo {
    fn configure(_config: &str) -> Result<Self, ConfigError> {
        Ok(Echo)
    }

    fn place(&self, req: &Request, candidates: &[Candidate], _fleet: &Fleet) -> Placement {
        let mut message = format!(
            "id={} tenant={} model={} prompt={} max={} session={:?} labels={:?} ttft={:?} tpot={:?} prefix={:?}",
            req.id,
            req.tenant,
            req.model,
            req.prompt_tokens,
            req.max_tokens,
            req.session,
            req.labels,
            req.slo_ttft_ms,
            req.slo_tpot_ms,
            req.prefix_group(),
        );
        for c in candidates {
            let _ = write!(
                message,
                "\n{} {} {} {} {} {} {} {} {} {}",
                c.backend.0,
                c.waiting,
                c.running,
                c.kv_usage,
                c.cached_prefix_tokens,
                c.in_flight_requests,
                c.in_flight_prefill_tokens,
                c.prefill_tokens_per_s,
                c.decode_tokens_per_s,
                c.metrics_age_ms,
            );
        }
        Placement::Reject {
            status: 418,
            message,
        }
    }
}

switchyard_policy_sdk::export_placer!(Echo);
