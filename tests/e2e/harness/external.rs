//! [`ExternalBackend`]: any OpenAI-compatible server started as a command (a simulator,
//! `llama-server`, another router), on a free loopback port, killed and reaped on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A backend process.
pub struct ExternalBackend {
    child: Child,
    /// Its name in router configs.
    pub name: String,
    /// Base URL.
    pub url: String,
}

impl ExternalBackend {
    /// Runs `program` with `args` (`{port}` replaced by `port`, e.g. from
    /// [`free_port`]) and waits until `GET <url><ready_path>` answers 200.
    pub async fn start(
        name: &str,
        port: u16,
        program: &Path,
        args: &[&str],
        ready_path: &str,
    ) -> ExternalBackend {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let child = Command::new(program)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} {args:?}: {e}", program.display()));
        let b = ExternalBackend {
            child,
            name: name.into(),
            url: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}{ready_path}", b.url)).send().await
                && r.status().is_success()
            {
                return b;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} {args:?} never answered {ready_path}",
                program.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl ExternalBackend {
    /// Kills the process with SIGKILL at once and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ExternalBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
