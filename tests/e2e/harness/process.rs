//! [`Switchyard`]: the real `switchyard serve` as a child process, killed and reaped on
//! drop (panics included).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The `switchyard` binary: `$SWITCHYARD_BIN`, or `target/debug/switchyard` of this
/// workspace, built once per test run with `cargo build -p switchyard`.
pub fn switchyard_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("SWITCHYARD_BIN") {
            return PathBuf::from(bin);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ sits in the workspace")
            .to_path_buf();
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--quiet",
                "-p",
                "switchyard",
                "--bin",
                "switchyard",
            ])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p switchyard failed");
        target.join("debug").join("switchyard")
    })
    .clone()
}

/// A running router. Its config and state live in its own temporary directory.
pub struct Switchyard {
    child: Child,
    /// Client API base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// Admin API base URL.
    pub admin: String,
    /// The directory holding `config.yaml` (and any state dir the test puts there).
    pub dir: PathBuf,
    config: String,
    output: Arc<Mutex<String>>,
}

impl Switchyard {
    /// Starts the router with `config` in `dir` and waits until `/ready` answers 200
    /// and every backend passes its health checks.
    pub async fn start(dir: &Path, config: &str) -> Switchyard {
        let s = Switchyard::spawn(dir, config);
        s.wait_for("/ready").await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let backends = s.admin_get("/admin/backends").await;
            let all = backends.as_array().expect("backend list");
            if all.iter().all(|b| b["healthy"] == true) {
                return s;
            }
            if tokio::time::Instant::now() > deadline {
                s.fail(&format!("backends never all healthy: {backends}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the router and waits only for `/health` (for fleets with no healthy
    /// backend).
    pub async fn start_unready(dir: &Path, config: &str) -> Switchyard {
        let s = Switchyard::spawn(dir, config);
        s.wait_for("/health").await;
        s
    }

    /// Runs `switchyard serve` expecting it to fail; returns its stderr.
    pub fn start_failing(dir: &Path, config: &str) -> String {
        let path = dir.join("config.yaml");
        std::fs::write(&path, config).expect("write config");
        let out = Command::new(switchyard_binary())
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .expect("spawn switchyard");
        assert!(
            !out.status.success(),
            "switchyard started with a bad config:\n{config}"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn spawn(dir: &Path, config: &str) -> Switchyard {
        let path = dir.join("config.yaml");
        std::fs::write(&path, config).expect("write config");
        let bin = switchyard_binary();
        let mut child = Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&path)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let output = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("output")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut s = Switchyard {
            child,
            url: String::new(),
            admin: String::new(),
            dir: dir.to_path_buf(),
            config: config.to_owned(),
            output,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while s.url.is_empty() || s.admin.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("admin listening on ") {
                        s.admin = format!("http://{a}");
                    } else if let Some(a) = line.strip_prefix("listening on ") {
                        s.url = format!("http://{a}");
                    }
                }
                Err(_) => s.fail("no `listening on` lines"),
            }
        }
        s
    }

    async fn wait_for(&self, path: &str) {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}{path}", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.fail(&format!("{path} never answered 200"));
    }

    /// Everything the router wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.output.lock().expect("output").clone()
    }

    /// Panics with the command, config and stderr tail.
    pub fn fail(&self, why: &str) -> ! {
        let out = self.stderr();
        let tail: String = out
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        panic!(
            "switchyard: {why}\ncommand: {} serve --config {}\nconfig:\n{}\nstderr tail:\n{tail}",
            switchyard_binary().display(),
            self.dir.join("config.yaml").display(),
            self.config
        );
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The router's `/metrics` page as text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// `GET` on the admin API with the token, as JSON.
    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.admin))
            .bearer_auth(super::TOKEN)
            .send()
            .await
            .expect("admin get");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.expect("admin json")
    }

    /// A request builder on the admin API with the token.
    pub fn admin_call(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(super::TOKEN)
    }

    /// Sends `body` as JSON to the admin API with the token; the response, any status.
    pub async fn admin_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.admin_call(method, path)
            .json(body)
            .send()
            .await
            .expect("admin call")
    }

    /// One backend's admin status.
    pub async fn backend(&self, name: &str) -> serde_json::Value {
        self.admin_get(&format!("/admin/backends/{name}")).await
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        self.kill();
    }
}
