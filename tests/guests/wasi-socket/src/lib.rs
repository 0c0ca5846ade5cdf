//! Hostile scorer: opens a TCP connection in `score`, so the component imports
//! `wasi:sockets`. The host grants no network: it must refuse the component or trap the
//! call, and no connection must be made.

use std::net::TcpStream;

use switchyard_policy_sdk::prelude::*;

/// Scores 1 if it could connect out, else 0.
struct WasiSocket;

impl Scorer for WasiSocket {
    fn configure(_config: &str) -> Result<Self, ConfigError> {
        Ok(WasiSocket)
    }

    fn score(&self, _req: &Request, _c: &Candidate, _fleet: &Fleet) -> Score {
        match TcpStream::connect("127.0.0.1:9") {
            Ok(_) => {
                switchyard_policy_sdk::error("connected to 127.0.0.1:9");
                Score::ONE
            }
            Err(_) => Score::ZERO,
        }
    }
}

switchyard_policy_sdk::export_scorer!(WasiSocket);
