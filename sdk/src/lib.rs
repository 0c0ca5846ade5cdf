//! Write Switchyard routing policies as plain Rust.
//!
//! A policy is one of three kinds, each a trait:
//!
//! - [`Filter`]: removes backends that must not serve a request, with a reason each.
//! - [`Scorer`]: rates each candidate backend in [0, 1]; the router sums weighted scores.
//! - [`Placer`]: takes the whole decision: one backend, a prefill/decode pair, or a refusal.
//!
//! Implement the trait, then export it with [`export_filter!`], [`export_scorer!`] or
//! [`export_placer!`] and build with `cargo build --target wasm32-wasip2 --release`. The
//! result is a WebAssembly component the router loads and swaps at run time.
//!
//! ```no_run
//! use switchyard_policy_sdk::prelude::*;
//!
//! /// Prefer the backend holding the most of this prompt, unless it is queueing.
//! #[derive(serde::Deserialize)]
//! struct PrefixFirst {
//!     /// Waiting requests beyond which a cache hit no longer counts.
//!     max_waiting: u32,
//! }
//!
//! impl Scorer for PrefixFirst {
//!     fn configure(config: &str) -> Result<Self, ConfigError> {
//!         config::from_json(config)
//!     }
//!
//!     fn score(&self, req: &Request, c: &Candidate, _fleet: &Fleet) -> Score {
//!         if c.waiting > self.max_waiting {
//!             return Score::ZERO;
//!         }
//!         Score::ratio(c.cached_prefix_tokens, req.prompt_tokens)
//!     }
//! }
//!
//! switchyard_policy_sdk::export_scorer!(PrefixFirst);
//! ```
//!
//! Helpers: [`normalize`] turns raw figures into scores, [`Candidate::load`] and
//! [`Candidate::prefill_seconds`] estimate a backend's queue, [`Request::rng`] gives
//! randomness that replays with the request, [`config::from_json`] reads the config.
//!
//! Policy logic is unit-tested natively with [`testing`], no Wasm involved.
#![deny(missing_docs)]

pub mod config;
mod fleet;
mod log;
pub mod normalize;
mod policy;
pub mod random;
mod request;
#[doc(hidden)]
pub mod rt;
pub mod testing;
#[doc(hidden)]
pub mod wit;

pub use config::ConfigError;
pub use fleet::{Backend, BackendId, Fleet, Role};
pub use log::{debug, error, info, warn};
pub use policy::{Filter, Placement, Placer, Score, Scorer, Verdict};
pub use random::Rng;
pub use request::{Candidate, PrefixGroup, Request};

/// Everything a policy usually needs, in one `use`.
pub mod prelude {
    pub use crate::config::{self, ConfigError};
    pub use crate::normalize;
    pub use crate::{
        Backend, BackendId, Candidate, Filter, Fleet, Placement, Placer, PrefixGroup, Request, Rng,
        Role, Score, Scorer, Verdict,
    };
}
