//! `switchyard demo`: runs a [`Scenario`] (a simulated three-vendor fleet, the router
//! with the shipped Wasm policies, and a workload) once per pipeline, prints the
//! comparison table (or `--json`) and writes the HTML report.

use std::path::PathBuf;
use std::time::Duration;

use crate::demo::{self, Options, Scenario};
use anyhow::Context;

/// Arguments of `switchyard demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `default` (round-robin vs Switchyard's pipeline, about 80 s) or `hetero` (six
    /// pipelines swept over request rate on llm-d's heterogeneous workload shape).
    #[arg(long, default_value = "default")]
    scenario: String,
    /// Seconds of arrivals per run, each pipeline and rate (default: the scenario's, 25
    /// or 10).
    #[arg(long)]
    duration: Option<f64>,
    /// Simulator time scale (default: the scenario's, 1 or 2); figures are reported in
    /// simulated time.
    #[arg(long)]
    speed: Option<f64>,
    /// Arrival rates to use instead of the scenario's, requests per simulated second.
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<f64>>,
    /// Seed of the fleet and the workload.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where to write the HTML report.
    #[arg(long, default_value = "switchyard-demo.html")]
    report: PathBuf,
    /// Print one JSON object keyed by pipeline name instead of the table.
    #[arg(long)]
    json: bool,
}

/// Runs `switchyard demo`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let scenario = Scenario::by_name(&args.scenario)
        .with_context(|| format!("unknown scenario `{}` (default, hetero)", args.scenario))?;
    let speed = args.speed.unwrap_or(scenario.speed);
    anyhow::ensure!(
        speed > 0.0 && speed.is_finite(),
        "--speed must be a positive number"
    );
    let duration = args.duration.unwrap_or(scenario.duration_s);
    anyhow::ensure!(
        duration > 0.0 && duration.is_finite(),
        "--duration must be a positive number of seconds"
    );
    let options = Options {
        duration: Duration::from_secs_f64(duration),
        speed,
        seed: args.seed,
        rates_rps: args.rates,
        progress: !args.json,
    };
    if !args.json {
        let runs = scenario.pipelines.len()
            * options
                .rates_rps
                .as_ref()
                .map_or(scenario.rates_rps.len(), Vec::len);
        eprintln!(
            "demo: {} backends, {} runs of {duration} s at simulator speed {} (figures in simulated time)",
            scenario.backends(),
            runs,
            speed
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let comparison = runtime.block_on(demo::compare(&scenario, &options))?;
    std::fs::write(&args.report, comparison.html())
        .with_context(|| format!("writing {}", args.report.display()))?;
    if args.json {
        println!("{}", serde_json::to_string(&comparison.to_json())?);
    } else {
        print!("{}", comparison.table());
        println!("report: {}", args.report.display());
    }
    Ok(())
}
