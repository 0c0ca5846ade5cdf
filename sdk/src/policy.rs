//! The three policy traits and the values they return.

use crate::config::ConfigError;
use crate::fleet::{BackendId, Fleet};
use crate::request::{Candidate, Request};

/// A score in [0, 1]; higher is better. Construction clamps, and NaN becomes 0, so a
/// policy built with this type can never return a value the host rejects.
///
/// NB: `repr(transparent)` over `f32`, so a `Vec<Score>` is handed to the host as its
/// `list<f32>` without a copy.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, bytemuck::NoUninit)]
#[repr(transparent)]
pub struct Score(f32);

impl Score {
    /// The worst score.
    pub const ZERO: Score = Score(0.0);
    /// The best score.
    pub const ONE: Score = Score(1.0);

    /// `value` clamped to [0, 1]; NaN becomes 0.
    #[inline]
    pub fn new(value: f32) -> Score {
        if value.is_nan() {
            Score::ZERO
        } else {
            Score(value.clamp(0.0, 1.0))
        }
    }

    /// `part / whole` as a score; 0 when `whole` is 0.
    #[inline]
    pub fn ratio(part: u32, whole: u32) -> Score {
        if whole == 0 {
            Score::ZERO
        } else {
            Score::new(part as f32 / whole as f32)
        }
    }

    /// `1 - self`.
    #[inline]
    pub fn inverted(self) -> Score {
        Score(1.0 - self.0)
    }

    /// The value, in [0, 1].
    #[inline]
    pub fn get(self) -> f32 {
        self.0
    }
}

impl From<f32> for Score {
    #[inline]
    fn from(value: f32) -> Self {
        Score::new(value)
    }
}

/// A filter's verdict on one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The backend may serve the request.
    Allow,
    /// The backend must not serve the request, for this reason.
    Exclude(String),
}

/// Where a placer sends a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// One backend serves the whole request.
    Single(BackendId),
    /// The prompt runs on `prefill`, generation on `decode`.
    Split {
        /// Backend running the prompt.
        prefill: BackendId,
        /// Backend generating and streaming to the client.
        decode: BackendId,
    },
    /// Refuse the request with this HTTP status (400..=599) and message.
    Reject {
        /// HTTP status.
        status: u16,
        /// Message for the client.
        message: String,
    },
}

/// Removes backends that must not serve a request.
pub trait Filter: Sized + 'static {
    /// Builds the policy from its JSON config (empty when none is set).
    ///
    /// # Errors
    ///
    /// A message for the operator when the config is unusable.
    fn configure(config: &str) -> Result<Self, ConfigError>;

    /// Judges one candidate.
    fn check(&self, req: &Request, candidate: &Candidate, fleet: &Fleet) -> Verdict;

    /// Judges every candidate; returns the excluded ones with reasons. Override it when
    /// the verdict depends on the candidates as a group.
    fn exclude(
        &self,
        req: &Request,
        candidates: &[Candidate],
        fleet: &Fleet,
    ) -> Vec<(BackendId, String)> {
        candidates
            .iter()
            .filter_map(|c| match self.check(req, c, fleet) {
                Verdict::Allow => None,
                Verdict::Exclude(reason) => Some((c.backend, reason)),
            })
            .collect()
    }
}

/// Rates each candidate in [0, 1].
pub trait Scorer: Sized + 'static {
    /// Builds the policy from its JSON config (empty when none is set).
    ///
    /// # Errors
    ///
    /// A message for the operator when the config is unusable.
    fn configure(config: &str) -> Result<Self, ConfigError>;

    /// Rates one candidate.
    fn score(&self, req: &Request, candidate: &Candidate, fleet: &Fleet) -> Score;

    /// Rates every candidate, in order. Override it when a score depends on the others
    /// (normalising against the best, say).
    fn score_all(&self, req: &Request, candidates: &[Candidate], fleet: &Fleet) -> Vec<Score> {
        candidates
            .iter()
            .map(|c| self.score(req, c, fleet))
            .collect()
    }
}

/// Takes the whole routing decision.
pub trait Placer: Sized + 'static {
    /// Builds the policy from its JSON config (empty when none is set).
    ///
    /// # Errors
    ///
    /// A message for the operator when the config is unusable.
    fn configure(config: &str) -> Result<Self, ConfigError>;

    /// Chooses where the request goes; `candidates` is never empty.
    fn place(&self, req: &Request, candidates: &[Candidate], fleet: &Fleet) -> Placement;
}
