//! `switchyard demo`: a simulated three-vendor fleet, the router and a workload in one
//! process, run once per pipeline, compared in a table, JSON and an HTML report.
//!
//! Principal items:
//!
//! - [`Scenario`]: the fleet, workload, arrival rates and pipelines compared
//!   ([`Scenario::default_demo`] for issue 4, [`Scenario::hetero`] for issue 5).
//! - `stack::run`: one pipeline at one rate on a fresh stack.
//! - [`compare`]: runs every pipeline at every rate, each on a fresh (cold) fleet and
//!   router, and returns a [`Comparison`].
//! - [`Comparison::to_json`], [`Comparison::table`], [`Comparison::html`]: the three
//!   ways to show it.
//!
//! Every figure is in *simulated* time: wall time multiplied by the simulator's speed,
//! so a run at `speed` 4 reads as it would on real cards, ratios unchanged.
//!
//! ```ignore
//! # async fn demo() -> Result<(), crate::demo::Error> {
//! use std::time::Duration;
//! use crate::demo::{Options, Scenario, compare};
//! let options = Options { duration: Duration::from_secs(5), ..Options::default() };
//! let comparison = compare(&Scenario::default_demo(), &options).await?;
//! println!("{}", comparison.table());
//! # Ok(()) }
//! ```

mod html;
mod report;
mod scenario;
mod stack;

use std::time::Duration;

pub use report::{Comparison, PipelineSummary, Point, SweepPoint};
pub use scenario::Scenario;
pub use stack::RunParams;

/// Why a demo run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The simulated fleet did not start.
    #[error("simulated fleet")]
    Fleet(#[from] switchyard_sim::Error),
    /// The router did not start or stopped.
    #[error("router")]
    Router(#[source] Box<switchyard::server::Error>),
    /// The router never saw the whole fleet ready.
    #[error("router not ready: {0}")]
    NotReady(String),
    /// The load generator could not run.
    #[error("load generator")]
    Bench(#[from] switchyard_sim::load::Error),
    /// A call to the router's admin API or a backend's metrics failed.
    #[error("http")]
    Http(#[source] reqwest::Error),
}

/// How to run a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// How long requests keep arriving in each run, wall time.
    pub duration: Duration,
    /// Simulator time scale (2 = twice as fast as real time); figures are reported in
    /// simulated time.
    pub speed: f64,
    /// Seed of the fleet and the workload.
    pub seed: u64,
    /// Replace the scenario's arrival rates (requests per simulated second).
    pub rates_rps: Option<Vec<f64>>,
    /// Show a progress bar per run and one line per finished run on stderr.
    pub progress: bool,
}

impl Default for Options {
    /// 25-second runs at real time (the default scenario's), seed 7, the scenario's
    /// own rates, quiet.
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(25),
            speed: 1.0,
            seed: 7,
            rates_rps: None,
            progress: false,
        }
    }
}

/// Runs every pipeline of `scenario` at every rate, each run on a fresh fleet and
/// router, in order (baseline first), and collects the figures.
///
/// # Errors
///
/// The first run that fails; see [`Error`].
pub async fn compare(scenario: &Scenario, options: &Options) -> Result<Comparison, Error> {
    let rates = options
        .rates_rps
        .clone()
        .unwrap_or_else(|| scenario.rates_rps.clone());
    let mut pipelines = Vec::new();
    for pipeline in &scenario.pipelines {
        let mut points = Vec::new();
        for &rate_rps in &rates {
            let run = stack::run(&RunParams {
                scenario,
                pipeline,
                rate_rps,
                duration: options.duration,
                speed: options.speed,
                seed: options.seed,
                progress: options.progress,
            })
            .await?;
            if options.progress {
                eprintln!(
                    "demo: {} at {rate_rps} req/s: ttft p50 {:.0} ms, {:.0} output tok/s, cache hits {:.0}%",
                    pipeline.name,
                    run.bench.ttft_ms.p50,
                    run.bench.output_tokens_per_s,
                    run.prefix_cache_hit_rate * 100.0
                );
            }
            points.push(Point { rate_rps, run });
        }
        pipelines.push((pipeline.clone(), points));
    }
    Ok(Comparison::new(scenario, options, pipelines))
}
