//! Test scorer (not hostile): looks at everything WASI offers a policy, directly through
//! the WASI bindings, and logs what it saw, one line each: the wall clock, the
//! monotonic clock before and after a 1.5 s sleep, random bytes, the insecure seed,
//! the environment and arguments, the preopened directories, and what creating a TCP
//! socket gives. It scores every candidate 0.
//!
//! The host must show a virtual world: a fixed clock that a sleep moves at once,
//! randomness that replays with the request id, nothing of the environment, no
//! directories, no network.

use switchyard_policy_sdk::prelude::*;
use wasip2::{cli, clocks, filesystem, random, sockets};

/// Logs what WASI shows it.
struct WasiVirtual;

impl Scorer for WasiVirtual {
    fn configure(_config: &str) -> Result<Self, ConfigError> {
        Ok(WasiVirtual)
    }

    fn score(&self, _req: &Request, _c: &Candidate, _fleet: &Fleet) -> Score {
        Score::ZERO
    }

    fn score_all(&self, _req: &Request, candidates: &[Candidate], _fleet: &Fleet) -> Vec<Score> {
        let wall = clocks::wall_clock::now();
        switchyard_policy_sdk::info(&format!("wall: {}.{:09}", wall.seconds, wall.nanoseconds));
        let before = clocks::monotonic_clock::now();
        clocks::monotonic_clock::subscribe_duration(1_500_000_000).block();
        let after = clocks::monotonic_clock::now();
        switchyard_policy_sdk::info(&format!("monotonic: {before} then {after}"));
        let wall = clocks::wall_clock::now();
        switchyard_policy_sdk::info(&format!(
            "wall after sleep: {}.{:09}",
            wall.seconds, wall.nanoseconds
        ));
        let bytes: String = random::random::get_random_bytes(8)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        switchyard_policy_sdk::info(&format!("random: {bytes}"));
        let (a, b) = random::insecure_seed::insecure_seed();
        switchyard_policy_sdk::info(&format!("insecure seed: {a:016x}{b:016x}"));
        switchyard_policy_sdk::info(&format!(
            "environment: {:?} arguments: {:?} cwd: {:?}",
            cli::environment::get_environment(),
            cli::environment::get_arguments(),
            cli::environment::initial_cwd()
        ));
        let dirs: Vec<String> = filesystem::preopens::get_directories()
            .into_iter()
            .map(|(_, name)| name)
            .collect();
        switchyard_policy_sdk::info(&format!("preopens: {dirs:?}"));
        let socket =
            sockets::tcp_create_socket::create_tcp_socket(sockets::network::IpAddressFamily::Ipv4);
        switchyard_policy_sdk::info(&format!("tcp socket: {:?}", socket.map(|_| "made")));
        vec![Score::ZERO; candidates.len()]
    }
}

switchyard_policy_sdk::export_scorer!(WasiVirtual);
