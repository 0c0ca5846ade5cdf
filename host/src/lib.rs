//! Switchyard: an inference router for mixed LLM fleets.
//!
//! Clients speak the OpenAI API to the router; the router keeps an index of which prefix
//! blocks each backend holds, tracks each backend's health and load, and asks the
//! tenant's *pipeline* of WebAssembly policies where each request goes.
//!
//! The KV-cache index is its own crate, `switchyard-kv`; the simulated backends and the
//! load generator are `switchyard-sim`; the one-command demo lives with the binary.
//!
//! Modules, one concern each:
//!
//! - [`config`]: the router's config file, validated once.
//! - [`policy`]: the Wasm policy runtime, registry, pipelines and the native fallback.
//! - [`pool`]: backends, health, metric scraping, circuit breaking, drain.
//! - [`proxy`]: the OpenAI endpoints: parse, enrich, decide, send, stream back.
//! - [`admin`]: the admin API.
//! - [`server`]: assembling the modules from a config and serving both listeners.
//! - [`listener`]: the accept loop: connection cap, header, body and idle timeouts.
//! - [`names`]: validated tenant, backend and policy names.
//! - [`state`]: the state directory admin changes persist to.
//! - [`telemetry`]: logging setup and metric names.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod listener;
pub mod names;
pub mod policy;
pub mod pool;
pub mod proxy;
pub mod server;
pub mod state;
pub mod telemetry;

pub use config::Config;
pub use server::Server;

/// The client API's router over `state`, for tests that drive it without sockets.
pub fn app(state: proxy::App) -> axum::Router {
    proxy::router(state)
}

/// The admin API's router over `state`. Request bodies may be as large as the largest
/// policy upload (axum's default cap is 2 MB; a Python policy is ~18 MB); the upload
/// checks the size itself and says so.
pub fn admin_app(state: admin::Admin) -> axum::Router {
    let upload = state.policies.limits().max_upload_bytes.saturating_add(1);
    admin::router(state).layer(axum::extract::DefaultBodyLimit::max(upload))
}

/// Builds the router from `config` and serves until SIGINT or SIGTERM.
///
/// # Errors
///
/// As [`Server::bind`] and [`Server::serve`].
pub async fn run(config: Config) -> Result<(), server::Error> {
    let server = Server::bind(config).await?;
    server.serve(server::shutdown_signal()).await
}
