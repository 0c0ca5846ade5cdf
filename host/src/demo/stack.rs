//! One run: a cold simulated fleet and a router in this process, one workload through
//! one pipeline, then the figures the comparison needs.
//!
//! The *stack* is the fleet plus the router in front of it. It is built fresh for every
//! run, so every pipeline starts with empty caches and idle backends, and torn down
//! (router shut down, fleet dropped) before the next.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Error;
use super::scenario::{BLOCK_SIZE, Pipeline, Scenario};
use switchyard::Server;
use switchyard::admin::auth::{Credential, Role, TokenSource};
use switchyard::config::{
    AdminConfig, AuthConfig, Config, ListenersConfig, ProxySettings, SplitFallback, TenantConfig,
};
use switchyard::names::{BackendName, CredentialName, TenantName};
use switchyard::policy::{DEFAULT_TENANT, PolicyBudget, PolicyQuota};
use switchyard::pool::{BackendSpec, Capability, EngineKind, PoolSettings};
use switchyard_sim::load::{self, Arrival, BenchConfig, BenchReport};
use switchyard_sim::{self as sim, BackendFile, FleetFile, FleetSpec, KV_BYTES_PER_TOKEN, Profile};

/// KV transfer link declared to policies, GB/s (the simulator's default link).
const KV_LINK_GB_PER_S: f64 = 45.0;

/// Longest wait for the router to see every backend healthy and scraped.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Decisions kept per run, enough for any run the demo makes.
const DECISION_LOG: usize = 200_000;

/// What one run is.
#[derive(Debug, Clone)]
pub struct RunParams<'a> {
    /// Fleet, workload and concurrency.
    pub scenario: &'a Scenario,
    /// Pipeline under test.
    pub pipeline: &'a Pipeline,
    /// Poisson arrival rate, requests per simulated second.
    pub rate_rps: f64,
    /// How long requests keep arriving, wall time.
    pub duration: Duration,
    /// Simulator time scale.
    pub speed: f64,
    /// Seed of the fleet and the workload, the same for every pipeline.
    pub seed: u64,
    /// Show the bench progress bar.
    pub progress: bool,
}

/// What one run measured. Latencies and throughput are in simulated time (wall time
/// multiplied by the speed), so they read as on real hardware.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The load generator's report, converted to simulated time.
    pub bench: BenchReport,
    /// Prefix-cache hits over queries, in tokens, summed over the fleet's
    /// `vllm:prefix_cache_hits` / `vllm:prefix_cache_queries`.
    pub prefix_cache_hit_rate: f64,
    /// Share of responses per vendor, from the `x-switchyard-backend` header.
    pub vendor_share: BTreeMap<String, f64>,
    /// Share of responses per backend.
    pub backend_share: BTreeMap<String, f64>,
    /// Decisions that chose a prefill/decode split, from the router's decision log.
    pub split_decisions: u64,
    /// Requests served in two phases, prefill then decode, from the decision log.
    pub splits_served: u64,
}

/// Runs `p.pipeline` once on a fresh stack.
///
/// # Errors
///
/// When the fleet or the router cannot start, the router never sees the whole fleet
/// healthy, the benchmark cannot run, or the backends' metrics cannot be read.
pub async fn run(p: &RunParams<'_>) -> Result<RunResult, Error> {
    let fleet = sim::Fleet::start(fleet_spec(p.scenario, p.speed, p.seed)?).await?;
    let vendors: BTreeMap<String, String> = fleet
        .backends()
        .iter()
        .map(|b| (b.info().name.clone(), b.info().vendor.clone()))
        .collect();
    let token = uuid::Uuid::new_v4().to_string();
    let config = router_config(p, &fleet, &token);
    let server = Server::bind(config)
        .await
        .map_err(|e| Error::Router(Box::new(e)))?;
    let (Some(url), Some(admin)) = (server.local_addr(), server.admin_addr()) else {
        return Err(Error::NotReady("router has no bound address".to_owned()));
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let admin = AdminClient::new(format!("http://{admin}"), token)?;
    let outcome = async {
        admin.wait_ready(fleet.backends().len()).await?;
        let mut config = BenchConfig::new(format!("http://{url}"), p.scenario.workload.clone());
        config.arrival = Arrival::Poisson(p.rate_rps * p.speed);
        config.max_concurrency = Some(p.scenario.max_concurrency);
        config.duration = Some(p.duration);
        config.seed = p.seed;
        config.timeout = Duration::from_secs(300);
        config.progress = p.progress;
        let report = load::run(config).await?;
        let hit_rate = fleet_hit_rate(&admin.client, &fleet).await?;
        let decisions = admin.decisions().await?;
        Ok::<_, Error>((report, hit_rate, decisions))
    }
    .await;
    let _ = stop.send(());
    let _ = serving.await;
    drop(fleet);
    let (report, prefix_cache_hit_rate, decisions) = outcome?;
    let share = |key: &dyn Fn(&str) -> String| {
        let total = report.backends.values().sum::<u64>().max(1) as f64;
        let mut out = BTreeMap::new();
        for (backend, n) in &report.backends {
            *out.entry(key(backend)).or_insert(0.0) += *n as f64 / total;
        }
        out
    };
    let vendor_share = share(&|b| vendors.get(b).cloned().unwrap_or_else(|| "?".into()));
    let backend_share = share(&|b| b.to_owned());
    Ok(RunResult {
        bench: to_simulated_time(report, p.speed),
        prefix_cache_hit_rate,
        vendor_share,
        backend_share,
        split_decisions: decisions.iter().filter(|d| d.placement == "split").count() as u64,
        splits_served: decisions.iter().filter(|d| d.split).count() as u64,
    })
}

/// The scenario's fleet as simulator specs: backends named `<profile>-<n>` on
/// `127.0.0.1:0`, caches shrunk by `kv_scale`.
fn fleet_spec(s: &Scenario, speed: f64, seed: u64) -> Result<FleetSpec, Error> {
    let backends = s
        .cards
        .iter()
        .map(|c| BackendFile {
            name: Some(c.profile.to_owned()),
            replicas: c.replicas,
            block_size: BLOCK_SIZE,
            num_gpu_blocks: s.num_gpu_blocks(c),
            ..BackendFile::new(c.profile)
        })
        .collect();
    let mut file = FleetFile::new(backends);
    file.speed = speed;
    file.seed = seed;
    Ok(FleetSpec::from_file(file)?)
}

/// The router's config: every backend with its vendor, price and declared capability,
/// the pipeline under test as the default tenant's, and an admin listener for the
/// decision log.
fn router_config(p: &RunParams<'_>, fleet: &sim::Fleet, token: &str) -> Config {
    let prices: BTreeMap<&str, f64> = p
        .scenario
        .cards
        .iter()
        .map(|c| (c.profile, c.cost_per_hour))
        .collect();
    let backends = fleet
        .backends()
        .iter()
        .map(|b| {
            let info = b.info();
            let capability = Profile::builtin(&info.profile)
                .map(|profile| declared_capability(&profile, p.speed, info.capacity_tokens))
                .unwrap_or_default();
            BackendSpec {
                name: BackendName::new(&info.name)
                    .expect("simulated backends are named from their profile"),
                url: info.base_url.clone(),
                models: vec![info.model.clone()],
                engine: EngineKind::Vllm,
                vendor: info.vendor.clone(),
                accelerator: info.profile.clone(),
                region: String::new(),
                labels: BTreeMap::new(),
                role: Default::default(),
                cost_per_hour: prices.get(info.profile.as_str()).copied().unwrap_or(0.0),
                capability,
                kv_events: None,
                kv_replay: None,
                health_path: None,
            }
        })
        .collect();
    let localhost = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    Config {
        path: PathBuf::from("<switchyard demo>"),
        listen: localhost,
        admin: Some(AdminConfig {
            listen: localhost,
            credentials: vec![Credential {
                name: CredentialName::new("demo").expect("a valid name"),
                role: Role::Operator,
                token: TokenSource::Fixed(token.into()),
            }],
            private_labels: Vec::new(),
        }),
        listeners: ListenersConfig::default(),
        state_dir: None,
        state: Default::default(),
        cluster: None,
        proxy: ProxySettings {
            max_body_bytes: 16 << 20,
            attempt_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(600),
            max_attempts: 3,
            decision_log: DECISION_LOG,
            split_fallback: SplitFallback::default(),
            max_resumes: 2,
            stream_idle_timeout: None,
            label_headers: Vec::new(),
            default_max_tokens: 1024,
        },
        // NB: generous probes. Every backend, the router and the load generator share
        // this process and, on a small machine, its cores with whatever else runs; a
        // health check answered late is contention, not a dead backend, and marking
        // backends down mid-run would skew the comparison.
        pool: PoolSettings {
            health_interval: Duration::from_millis(250),
            probe_timeout: Duration::from_secs(3),
            unhealthy_after: 8,
            ..PoolSettings::default()
        },
        backends,
        // NB: the simulated backends publish no KV events here, so the index follows
        // them in approximate mode, from the router's own routing decisions.
        kv: Default::default(),
        auth: AuthConfig::default(),
        tenants: vec![TenantConfig {
            name: TenantName::new(DEFAULT_TENANT).expect("`default` is a valid tenant name"),
            api_keys: Vec::new(),
            pipeline: Some(p.pipeline.spec.clone()),
            max_concurrent: None,
            requests_per_s: None,
            tokens_per_s: None,
            policy_quota: PolicyQuota::default(),
            policy_budget: Some(PolicyBudget::DEFAULT),
            cache_isolation: false,
        }],
        policies: Vec::new(),
        policy_limits: Default::default(),
    }
}

/// What a backend declares to policies: prefill speed on a 4096-token prompt, decode
/// speed per sequence at batch 32 with 2048-token contexts, both in wall time at
/// `speed` (the router measures wall time too), and its KV figures.
fn declared_capability(profile: &Profile, speed: f64, kv_tokens: usize) -> Capability {
    let m = &profile.latency;
    Capability {
        prefill_tokens_per_s: (4096.0 / m.prefill_ms(4096, 0) * 1e3 * speed) as f32,
        decode_tokens_per_s: (1e3 / m.decode_step_ms(32, 32 * 2048) * speed) as f32,
        kv_capacity_tokens: kv_tokens as u64,
        kv_link_gbytes_per_s: KV_LINK_GB_PER_S as f32,
        kv_bytes_per_token: KV_BYTES_PER_TOKEN as u32,
    }
}

/// `report` with latencies multiplied and rates divided by `speed`.
fn to_simulated_time(mut r: BenchReport, speed: f64) -> BenchReport {
    for p in [&mut r.ttft_ms, &mut r.itl_ms, &mut r.e2e_ms] {
        p.p50 *= speed;
        p.p90 *= speed;
        p.p99 *= speed;
        p.mean *= speed;
        p.max *= speed;
    }
    r.duration_s *= speed;
    r.output_tokens_per_s /= speed;
    r.requests_per_s /= speed;
    r
}

/// Prefix-cache hits over queries summed over the fleet, from each backend's
/// `/metrics`.
async fn fleet_hit_rate(client: &reqwest::Client, fleet: &sim::Fleet) -> Result<f64, Error> {
    let (mut hits, mut queries) = (0.0, 0.0);
    for url in fleet.base_urls() {
        let text = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(Error::Http)?
            .text()
            .await
            .map_err(Error::Http)?;
        hits += counter(&text, "vllm:prefix_cache_hits");
        queries += counter(&text, "vllm:prefix_cache_queries");
    }
    Ok(if queries > 0.0 { hits / queries } else { 0.0 })
}

/// Sum of the samples of counter `name` (`<name>_total{...} value`) in a Prometheus
/// exposition.
fn counter(text: &str, name: &str) -> f64 {
    let total = format!("{name}_total");
    text.lines()
        .filter(|l| {
            l.strip_prefix(total.as_str())
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The router's admin API, for readiness and the decision log.
struct AdminClient {
    client: reqwest::Client,
    url: String,
    token: String,
}

/// The parts of a backend status the demo reads.
#[derive(Deserialize)]
struct Status {
    healthy: bool,
    metrics_stale: bool,
}

/// The parts of a decision record the demo reads.
#[derive(Deserialize)]
struct Decision {
    placement: String,
    /// Whether the request was served in two phases.
    #[serde(default)]
    split: bool,
}

impl AdminClient {
    fn new(url: String, token: String) -> Result<Self, Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(Error::Http)?;
        Ok(Self { client, url, token })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.client
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(Error::Http)?
            .json()
            .await
            .map_err(Error::Http)
    }

    /// Polls until the router sees `backends` healthy backends with fresh metrics.
    async fn wait_ready(&self, backends: usize) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let statuses: Vec<Status> = self.get("/admin/backends").await?;
            let ready = statuses
                .iter()
                .filter(|s| s.healthy && !s.metrics_stale)
                .count();
            if ready == backends {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::NotReady(format!(
                    "{ready} of {backends} backends healthy with fresh metrics after {READY_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn decisions(&self) -> Result<Vec<Decision>, Error> {
        self.get(&format!("/admin/decisions?limit={DECISION_LOG}"))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_label_sets_and_other_names_ignored() {
        let text = "# TYPE vllm:prefix_cache_hits counter\n\
            vllm:prefix_cache_hits_total{model_name=\"m\",engine=\"0\"} 64\n\
            vllm:prefix_cache_hits_total{model_name=\"m\",engine=\"1\"} 36\n\
            vllm:prefix_cache_hits_created{model_name=\"m\"} 17\n\
            vllm:prefix_cache_queries_total{model_name=\"m\"} 400\n";
        assert_eq!(counter(text, "vllm:prefix_cache_hits"), 100.0);
        assert_eq!(counter(text, "vllm:prefix_cache_queries"), 400.0);
    }

    #[test]
    fn simulated_time_scales_latency_up_and_rates_down() {
        let mut r = BenchReport::default();
        r.ttft_ms.p50 = 10.0;
        r.output_tokens_per_s = 1000.0;
        let s = to_simulated_time(r, 4.0);
        assert_eq!(s.ttft_ms.p50, 40.0);
        assert_eq!(s.output_tokens_per_s, 250.0);
    }
}
