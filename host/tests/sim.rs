//! The `switchyard sim` and `switchyard bench` binaries end to end on loopback: the sim
//! announces itself on stdout, serves, and `bench --json` prints the documented object.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// A spawned `switchyard sim`, killed and reaped on drop (panics included).
struct Sim {
    child: Child,
    info: Value,
}

impl Sim {
    fn start(args: &[&str]) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("sim")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning switchyard sim")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut sim = Self {
            child,
            info: Value::Null,
        };
        // The first stdout line is the backend's ready line.
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        sim.info = serde_json::from_str(&line).with_context(|| format!("ready line {line:?}"))?;
        Ok(sim)
    }

    fn url(&self) -> &str {
        self.info["base_url"].as_str().unwrap_or_default()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(url: &str) -> Result<u16> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(async { reqwest::get(url).await.map(|r| r.status().as_u16()) })?)
}

fn wait_healthy(url: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if get(&format!("{url}/health")).ok() == Some(200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{url} never became healthy")
}

#[test]
fn bench_json_against_a_sim_binary_has_the_documented_fields() -> Result<()> {
    let sim = Sim::start(&[
        "--profile",
        "mi300x",
        "--port",
        "0",
        "--speed",
        "20",
        "--kv-events-port",
        "0",
    ])?;
    assert_eq!(sim.info["vendor"], "amd");
    assert!(
        sim.info["kv_events_endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with("tcp://127.0.0.1:"))
    );
    wait_healthy(sim.url())?;
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "bench",
            "--url",
            sim.url(),
            "--groups",
            "3",
            "--prompts-per-group",
            "3",
        ])
        .args([
            "--system-prompt-len",
            "200",
            "--question-len",
            "20",
            "--output-len",
            "10",
        ])
        .args(["--concurrency", "2", "--json"])
        .output()?;
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout)?;
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    let report: Value = serde_json::from_str(&stdout)?;
    assert_eq!(report["requests"], 9);
    assert_eq!(report["errors"], 0);
    for key in ["ttft_ms", "itl_ms", "e2e_ms"] {
        for p in ["p50", "p90", "p99"] {
            assert!(
                report[key][p].as_f64().is_some_and(|v| v > 0.0),
                "{key}.{p} in {report}"
            );
        }
    }
    assert!(
        report["output_tokens_per_s"]
            .as_f64()
            .is_some_and(|v| v > 0.0)
    );
    Ok(())
}

#[test]
fn a_sim_that_crashes_by_fault_injection_exits() -> Result<()> {
    let mut sim = Sim::start(&["--port", "0", "--speed", "50", "--crash-after", "0"])?;
    wait_healthy(sim.url())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = serde_json::json!({"prompt": "hello", "max_tokens": 1});
    let url = format!("{}/v1/completions", sim.url());
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(&url)
            .json(&body)
            .send()
            .await
            .map(|r| r.status())
    });
    assert!(status.map_or(true, |s| s.is_server_error()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = sim.child.try_wait()? {
            assert!(!status.success(), "a crash is a failure exit");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("the crashed sim did not exit")
}
