//! The harness: [`Switchyard`] (the real binary as a child process), [`TestBackend`]
//! (an in-process OpenAI-compatible backend with fault knobs) and [`Fleet`] (config
//! building), [`NatsCluster`] (a 3-node `nats-server` cluster for the replica tests).

mod backend;
mod external;
mod nats;
mod openai_client;
mod process;

pub use backend::{Mode, TestBackend, WORDS};
pub use external::{ExternalBackend, free_port};
pub use nats::NatsCluster;
pub use openai_client::run_openai_client;
pub use process::{Switchyard, switchyard_binary};

/// The admin token every test config uses.
pub const TOKEN: &str = "e2e-admin-token-0123456789";

/// The model every test backend serves.
pub const MODEL: &str = "test-model";

/// `Fleet::extra` for tests that must know where a request goes: an empty pipeline, so
/// the native least-load decides (ties to the lowest index) rather than the default
/// `prefix-home`, which spreads prompts without a prefix group by request id.
pub const LEAST_LOAD: &str = "tenants:\n  default:\n    pipeline: {}\n";

/// A test config: backends plus sections to add or override. Listens on port 0.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// `(name, url, engine)` of each backend, all serving [`MODEL`].
    pub backends: Vec<(String, String, &'static str)>,
    /// YAML lines for the `pool:` section (indented by 2).
    pub pool: String,
    /// YAML lines for the `proxy:` section (indented by 2).
    pub proxy: String,
    /// YAML lines added to the `admin:` section (indented by 2): credentials.
    pub admin: String,
    /// Extra top-level YAML (tenants, auth, state_dir).
    pub extra: String,
}

impl Fleet {
    /// A config over `backends` with fast health checks and scrapes.
    pub fn new(backends: &[&TestBackend]) -> Fleet {
        Fleet {
            backends: backends
                .iter()
                .map(|b| (b.name.clone(), b.url.clone(), "vllm"))
                .collect(),
            pool: "  health_interval_ms: 100\n  scrape_interval_ms: 50\n  unhealthy_after: 1\n"
                .into(),
            proxy: "  attempt_timeout_ms: 5000\n".into(),
            admin: String::new(),
            extra: String::new(),
        }
    }

    /// The YAML text.
    pub fn yaml(&self) -> String {
        let mut y = format!(
            "listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n  token: {TOKEN}\n{}pool:\n{}proxy:\n{}backends:\n",
            self.admin, self.pool, self.proxy
        );
        for (name, url, engine) in &self.backends {
            y.push_str(&format!(
                "  - name: {name}\n    url: {url}\n    models: [{MODEL}]\n    engine: {engine}\n    vendor: nvidia\n"
            ));
        }
        y.push_str(&self.extra);
        y
    }
}

/// The `x-switchyard-backend` header of `r`: the backend that served it, or "".
pub fn served_backend(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-switchyard-backend")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// A chat request body.
pub fn chat(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": MODEL,
        "stream": stream,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "Say hello to the router."}]
    })
}

/// A shared HTTP client.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client")
}

/// Polls `check` every 20 ms until it returns true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("timed out after {secs} s waiting for: {what}");
}
