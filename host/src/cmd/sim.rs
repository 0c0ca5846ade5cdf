//! `switchyard sim`: simulated vLLM-like backends, one (`--profile`) or a fleet
//! (`--fleet FILE`), until Ctrl-C.
//!
//! Prints one JSON line per backend once it listens (name, base URL, KV-event endpoints),
//! and on exit one JSON line with the scheduling lag over the whole run.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use switchyard_sim::{BackendFile, EventsFile, Faults, Fleet, FleetFile, FleetSpec};

/// Arguments of `switchyard sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A YAML fleet file: many backends in one process (see examples/quickstart-fleet.yaml).
    #[arg(long, conflicts_with_all = ["profile", "port", "name"])]
    fleet: Option<PathBuf>,
    /// Accelerator profile of a single backend: h100, h200, a100, l40s, mi300x, gaudi3.
    #[arg(long, default_value = "h100")]
    profile: String,
    /// HTTP port of a single backend (0: the OS chooses).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Interface of a single backend.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Name of a single backend.
    #[arg(long)]
    name: Option<String>,
    /// Model name served (overrides the fleet file).
    #[arg(long)]
    model: Option<String>,
    /// Time scale: 10 runs ten times faster than real time (overrides the fleet file).
    #[arg(long)]
    speed: Option<f64>,
    /// Seed of outputs, faults and block hashes (overrides the fleet file).
    #[arg(long)]
    seed: Option<u64>,
    /// A Hugging Face tokenizer.json (overrides the fleet file).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Publish KV events on this port (0: the OS chooses) with a replay socket.
    #[arg(long)]
    kv_events_port: Option<u16>,
    /// Replay (ROUTER) port of the KV events (default: the OS chooses).
    #[arg(long, requires = "kv_events_port")]
    kv_replay_port: Option<u16>,
    /// vLLM --max-num-seqs.
    #[arg(long, default_value_t = 256)]
    max_num_seqs: usize,
    /// vLLM --max-num-batched-tokens.
    #[arg(long, default_value_t = 8192)]
    max_num_batched_tokens: usize,
    /// Tokens per streamed chunk after the first (vLLM's --stream-interval).
    #[arg(long, default_value_t = 1)]
    stream_interval: usize,
    /// KV blocks (default: from the profile's memory).
    #[arg(long)]
    num_gpu_blocks: Option<usize>,
    /// Fault: probability that a request fails with a 500.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Fault: simulated ms added before each request.
    #[arg(long, default_value_t = 0.0)]
    added_latency_ms: f64,
    /// Fault: probability that a request never gets an answer.
    #[arg(long, default_value_t = 0.0)]
    hang_rate: f64,
    /// Fault: crash on request N+1.
    #[arg(long)]
    crash_after: Option<u64>,
}

impl Args {
    /// The fleet file these arguments describe: the given file, or one backend.
    fn fleet_file(&self) -> anyhow::Result<FleetFile> {
        let mut file = match &self.fleet {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                serde_yaml_ng::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?
            }
            None => {
                let backend = BackendFile {
                    name: self.name.clone(),
                    host: self.host,
                    port: self.port,
                    max_num_seqs: self.max_num_seqs,
                    max_num_batched_tokens: self.max_num_batched_tokens,
                    num_gpu_blocks: self.num_gpu_blocks,
                    stream_interval: self.stream_interval,
                    kv_events: self.kv_events_port.map(|port| EventsFile {
                        port,
                        replay_port: Some(self.kv_replay_port.unwrap_or(0)),
                        topic: None,
                        buffer_steps: 10_000,
                    }),
                    faults: Faults {
                        error_rate: self.error_rate,
                        added_latency_ms: self.added_latency_ms,
                        hang_rate: self.hang_rate,
                        crash_after: self.crash_after,
                    },
                    ..BackendFile::new(self.profile.clone())
                };
                FleetFile::new(vec![backend])
            }
        };
        if let Some(model) = &self.model {
            file.model = model.clone();
        }
        if let Some(speed) = self.speed {
            file.speed = speed;
        }
        if let Some(seed) = self.seed {
            file.seed = seed;
        }
        if let Some(tokenizer) = &self.tokenizer {
            file.tokenizer = Some(tokenizer.clone());
        }
        Ok(file)
    }
}

/// Runs `switchyard sim`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let spec = FleetSpec::from_file(args.fleet_file()?)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let fleet = Fleet::start(spec).await?;
        for b in fleet.backends() {
            println!("{}", serde_json::to_string(b.info())?);
        }
        let all_crashed = futures::future::join_all(fleet.backends().iter().map(|b| b.crashed()));
        let outcome = tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for ctrl-c"),
            _ = all_crashed => Err(anyhow::anyhow!("every backend crashed (fault injection)")),
        };
        println!("{}", serde_json::json!({ "lag": fleet.lag() }));
        outcome
    })
}
