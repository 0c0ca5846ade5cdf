//! Unit-test a policy natively with `cargo test`, no Wasm involved.
//!
//! Build inputs with [`request`], [`candidate`], [`backend`] and [`fleet`], then call the
//! policy through [`score`], [`exclude`] or [`place`]: they configure it from a JSON
//! string and check its output the way the router does (one score per candidate, each in
//! [0, 1]; only candidates' backends in exclusions and placements).
//!
//! ```
//! use switchyard_policy_sdk::prelude::*;
//! use switchyard_policy_sdk::testing;
//!
//! struct Busy;
//! impl Scorer for Busy {
//!     fn configure(_: &str) -> Result<Self, ConfigError> { Ok(Busy) }
//!     fn score(&self, _: &Request, c: &Candidate, _: &Fleet) -> Score {
//!         normalize::decay(c.waiting as f32, 4.0)
//!     }
//! }
//!
//! let idle = testing::candidate(0);
//! let busy = Candidate { waiting: 4, ..testing::candidate(1) };
//! let scores = testing::score::<Busy>("", &testing::request(100), &[idle, busy], &testing::fleet(2));
//! assert_eq!(scores, vec![1.0, 0.5]);
//! ```

use std::cell::RefCell;

use crate::fleet::{Backend, BackendId, Fleet};
use crate::policy::{Filter, Placement, Placer, Scorer};
use crate::request::{Candidate, PrefixGroup, Request};
#[cfg(not(target_arch = "wasm32"))]
use crate::wit::host::Level;

thread_local! {
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static PREFIX: RefCell<Option<PrefixGroup>> = const { RefCell::new(None) };
}

/// Sets what [`Request::prefix_group`] answers on this thread, as the router's KV index
/// would for the request being decided.
pub fn set_prefix_group(group: Option<PrefixGroup>) {
    PREFIX.with(|p| *p.borrow_mut() = group);
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn prefix_group() -> Option<PrefixGroup> {
    PREFIX.with(|p| *p.borrow())
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn record_log(level: Level, message: &str) {
    // NB: the generated `Level`'s Debug prints `Level::Debug`; the documented form is `Debug`.
    let level = match level {
        Level::Trace => "Trace",
        Level::Debug => "Debug",
        Level::Info => "Info",
        Level::Warn => "Warn",
        Level::Error => "Error",
    };
    LOG.with(|l| l.borrow_mut().push(format!("{level}: {message}")));
}

/// Takes the lines the policy logged on this thread so far, as `"Level: message"`.
pub fn take_logs() -> Vec<String> {
    LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// A request for `model` from tenant `default` with this prompt length and 128 output tokens.
pub fn request(prompt_tokens: u32) -> Request {
    Request {
        id: 1,
        tenant: "default".into(),
        model: "model".into(),
        prompt_tokens,
        max_tokens: 128,
        ..Request::default()
    }
}

/// An idle candidate for backend `index` with nothing cached.
pub fn candidate(index: u32) -> Candidate {
    Candidate {
        backend: BackendId(index),
        ..Candidate::default()
    }
}

/// A backend named `b<index>` from vendor `nvidia`, accelerator `h100`, no labels.
pub fn backend(index: u32) -> Backend {
    Backend {
        name: format!("b{index}"),
        vendor: "nvidia".into(),
        accelerator: "h100".into(),
        ..Backend::default()
    }
}

/// A fleet of `n` backends built by [`backend`].
pub fn fleet(n: u32) -> Fleet {
    Fleet {
        generation: 1,
        backends: (0..n).map(backend).collect(),
    }
}

/// The fenced ```` ```json ```` blocks of a markdown document, so a policy's tests can
/// check that the example configs in its README are accepted:
///
/// ```
/// let readme = "Example:\n\n```json\n{\"half_load\": 4}\n```\n";
/// assert_eq!(switchyard_policy_sdk::testing::json_blocks(readme), vec!["{\"half_load\": 4}\n"]);
/// ```
pub fn json_blocks(markdown: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = markdown;
    while let Some(start) = rest.find("```json\n") {
        let body = &rest[start + "```json\n".len()..];
        let Some(end) = body.find("```") else { break };
        blocks.push(&body[..end]);
        rest = &body[end + 3..];
    }
    blocks
}

fn configured<P>(make: fn(&str) -> Result<P, crate::ConfigError>, config: &str) -> P {
    make(config).unwrap_or_else(|e| panic!("configure({config:?}) failed: {e}"))
}

fn assert_candidate(candidates: &[Candidate], id: BackendId, what: &str) {
    assert!(
        candidates.iter().any(|c| c.backend == id),
        "{what} names backend {} which is not a candidate",
        id.0
    );
}

/// Configures scorer `P` with `config` and scores `candidates`, checking the result as the
/// router would.
///
/// # Panics
///
/// When configuration fails, or the result has the wrong length or a value outside [0, 1].
pub fn score<P: Scorer>(
    config: &str,
    req: &Request,
    candidates: &[Candidate],
    fleet: &Fleet,
) -> Vec<f32> {
    let policy = configured(P::configure, config);
    let scores: Vec<f32> = policy
        .score_all(req, candidates, fleet)
        .into_iter()
        .map(|s| s.get())
        .collect();
    assert_eq!(scores.len(), candidates.len(), "one score per candidate");
    assert!(
        scores.iter().all(|s| (0.0..=1.0).contains(s)),
        "scores in [0, 1]: {scores:?}"
    );
    scores
}

/// Configures filter `P` with `config` and returns the excluded backends with reasons.
///
/// # Panics
///
/// When configuration fails or an exclusion names a backend that is not a candidate.
pub fn exclude<P: Filter>(
    config: &str,
    req: &Request,
    candidates: &[Candidate],
    fleet: &Fleet,
) -> Vec<(BackendId, String)> {
    let policy = configured(P::configure, config);
    let out = policy.exclude(req, candidates, fleet);
    for (id, _) in &out {
        assert_candidate(candidates, *id, "an exclusion");
    }
    out
}

/// Configures placer `P` with `config` and places the request.
///
/// # Panics
///
/// When configuration fails, the placement names a backend that is not a candidate, or a
/// rejection's status is outside 400..=599.
pub fn place<P: Placer>(
    config: &str,
    req: &Request,
    candidates: &[Candidate],
    fleet: &Fleet,
) -> Placement {
    let policy = configured(P::configure, config);
    let placement = policy.place(req, candidates, fleet);
    match &placement {
        Placement::Single(id) => assert_candidate(candidates, *id, "the placement"),
        Placement::Split { prefill, decode } => {
            assert_candidate(candidates, *prefill, "the prefill leg");
            assert_candidate(candidates, *decode, "the decode leg");
        }
        Placement::Reject { status, .. } => {
            assert!((400..=599).contains(status), "rejection status {status}")
        }
    }
    placement
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_blocks_skips_other_languages_and_unclosed_fences() {
        let md = "```sh\nls\n```\n```json\n{}\n```\ntext\n```json\n[1]\n```\n```json\n{";
        assert_eq!(json_blocks(md), vec!["{}\n", "[1]\n"]);
    }

    #[test]
    fn logs_are_kept_as_level_and_message() {
        let _ = take_logs();
        crate::info("hello");
        crate::warn("careful");
        assert_eq!(take_logs(), vec!["Info: hello", "Warn: careful"]);
        assert!(take_logs().is_empty());
    }
}
