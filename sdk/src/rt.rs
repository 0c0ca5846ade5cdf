//! Glue between the generated exports and the policy traits. Used by the export macros;
//! not part of the public API.
//!
//! NB: a component instance is single-threaded, so the configured policy and the fleet
//! live in thread-locals for the life of the instance.

use std::any::Any;
use std::cell::RefCell;

use crate::config::ConfigError;
use crate::fleet::{BackendId, Fleet};
use crate::policy::{Filter, Placement, Placer, Scorer};
use crate::request::{Candidate, Request};
use crate::wit::types;

thread_local! {
    static POLICY: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    static FLEET: RefCell<Fleet> = RefCell::new(Fleet::default());
}

/// Builds the policy with `make` and keeps it for the instance's later calls.
pub fn configure<P: 'static>(
    make: fn(&str) -> Result<P, ConfigError>,
    config: String,
) -> Result<(), String> {
    let policy = make(&config).map_err(|e| e.0)?;
    POLICY.with(|p| *p.borrow_mut() = Some(Box::new(policy)));
    Ok(())
}

/// Replaces the instance's fleet.
pub fn set_fleet(fleet: types::Fleet) {
    FLEET.with(|f| *f.borrow_mut() = fleet.into());
}

fn with_policy<P: 'static, R>(f: impl FnOnce(&P, &Fleet) -> R) -> R {
    POLICY.with(|p| {
        let guard = p.borrow();
        let policy = guard
            .as_ref()
            .and_then(|b| b.downcast_ref::<P>())
            .expect("policy called before configure");
        FLEET.with(|fleet| f(policy, &fleet.borrow()))
    })
}

/// The author-facing request, and the candidates read in place from their rows.
fn convert(request: types::Request, candidates: &types::Candidates) -> (Request, &[Candidate]) {
    (request.into(), Candidate::from_rows(&candidates.rows))
}

/// The `exclude` export for filter `P`.
pub fn exclude<P: Filter>(
    request: types::Request,
    candidates: types::Candidates,
) -> Vec<types::Exclusion> {
    let (req, cands) = convert(request, &candidates);
    with_policy::<P, _>(|p, fleet| {
        p.exclude(&req, cands, fleet)
            .into_iter()
            .map(|(backend, reason)| types::Exclusion {
                backend: backend.0,
                reason,
            })
            .collect()
    })
}

/// The `score` export for scorer `P`.
pub fn score<P: Scorer>(request: types::Request, candidates: types::Candidates) -> Vec<f32> {
    let (req, cands) = convert(request, &candidates);
    with_policy::<P, _>(|p, fleet| bytemuck::allocation::cast_vec(p.score_all(&req, cands, fleet)))
}

/// The `place` export for placer `P`.
pub fn place<P: Placer>(
    request: types::Request,
    candidates: types::Candidates,
) -> types::Placement {
    let (req, cands) = convert(request, &candidates);
    with_policy::<P, _>(|p, fleet| match p.place(&req, cands, fleet) {
        Placement::Single(BackendId(b)) => types::Placement::Single(b),
        Placement::Split { prefill, decode } => types::Placement::Split(types::Split {
            prefill: prefill.0,
            decode: decode.0,
        }),
        Placement::Reject { status, message } => {
            types::Placement::Reject(types::Rejection { status, message })
        }
    })
}

/// Exports a [`Filter`](crate::Filter) implementation as the component's `filter` world.
#[macro_export]
macro_rules! export_filter {
    ($policy:ty) => {
        #[doc(hidden)]
        struct __SwitchyardFilterExport;

        impl $crate::wit::filter::Guest for __SwitchyardFilterExport {
            fn configure(
                config: ::std::string::String,
            ) -> ::std::result::Result<(), ::std::string::String> {
                $crate::rt::configure::<$policy>(<$policy as $crate::Filter>::configure, config)
            }
            fn set_fleet(fleet: $crate::wit::types::Fleet) {
                $crate::rt::set_fleet(fleet)
            }
            fn exclude(
                request: $crate::wit::types::Request,
                candidates: $crate::wit::types::Candidates,
            ) -> ::std::vec::Vec<$crate::wit::types::Exclusion> {
                $crate::rt::exclude::<$policy>(request, candidates)
            }
        }

        $crate::wit::filter::export_filter_world!(
            __SwitchyardFilterExport with_types_in $crate::wit::filter
        );
    };
}

/// Exports a [`Scorer`](crate::Scorer) implementation as the component's `scorer` world.
#[macro_export]
macro_rules! export_scorer {
    ($policy:ty) => {
        #[doc(hidden)]
        struct __SwitchyardScorerExport;

        impl $crate::wit::scorer::Guest for __SwitchyardScorerExport {
            fn configure(
                config: ::std::string::String,
            ) -> ::std::result::Result<(), ::std::string::String> {
                $crate::rt::configure::<$policy>(<$policy as $crate::Scorer>::configure, config)
            }
            fn set_fleet(fleet: $crate::wit::types::Fleet) {
                $crate::rt::set_fleet(fleet)
            }
            fn score(
                request: $crate::wit::types::Request,
                candidates: $crate::wit::types::Candidates,
            ) -> ::std::vec::Vec<f32> {
                $crate::rt::score::<$policy>(request, candidates)
            }
        }

        $crate::wit::scorer::export_scorer_world!(
            __SwitchyardScorerExport with_types_in $crate::wit::scorer
        );
    };
}

/// Exports a [`Placer`](crate::Placer) implementation as the component's `placer` world.
#[macro_export]
macro_rules! export_placer {
    ($policy:ty) => {
        #[doc(hidden)]
        struct __SwitchyardPlacerExport;

        impl $crate::wit::placer::Guest for __SwitchyardPlacerExport {
            fn configure(
                config: ::std::string::String,
            ) -> ::std::result::Result<(), ::std::string::String> {
                $crate::rt::configure::<$policy>(<$policy as $crate::Placer>::configure, config)
            }
            fn set_fleet(fleet: $crate::wit::types::Fleet) {
                $crate::rt::set_fleet(fleet)
            }
            fn place(
                request: $crate::wit::types::Request,
                candidates: $crate::wit::types::Candidates,
            ) -> $crate::wit::types::Placement {
                $crate::rt::place::<$policy>(request, candidates)
            }
        }

        $crate::wit::placer::export_placer_world!(
            __SwitchyardPlacerExport with_types_in $crate::wit::placer
        );
    };
}
