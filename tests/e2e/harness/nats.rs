//! [`NatsCluster`]: a 3-node `nats-server` cluster with JetStream on loopback, for the
//! replica tests. Each node keeps its storage in the test's directory; every node is
//! killed and reaped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

/// The `nats-server` binary: `$NATS_SERVER`, else the first on `PATH` or in `/usr/sbin`
/// (where Debian's package puts it). Panics naming the fix when there is none.
pub fn nats_server() -> PathBuf {
    if let Ok(bin) = std::env::var("NATS_SERVER") {
        return PathBuf::from(bin);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found (on PATH, in /usr/sbin or as $NATS_SERVER): the replica \
                 tests need it. Install it with `apt-get install -y nats-server` (Debian's 2.9.x); \
                 `cargo xtask test` does so when it is missing"
            )
        })
}

/// One node: its ports, its storage, its process while running.
struct Node {
    name: String,
    client_port: u16,
    cluster_port: u16,
    monitor_port: u16,
    store: PathBuf,
    child: Option<Child>,
}

/// A running 3-node cluster.
pub struct NatsCluster {
    nodes: Vec<Node>,
    routes: String,
}

impl NatsCluster {
    /// Starts three nodes (storage under `dir`) and waits until JetStream answers on
    /// each.
    pub async fn start(dir: &Path) -> NatsCluster {
        let nodes: Vec<Node> = (1..=3)
            .map(|i| Node {
                name: format!("n{i}"),
                client_port: free_port(),
                cluster_port: free_port(),
                monitor_port: free_port(),
                store: dir.join(format!("nats-n{i}")),
                child: None,
            })
            .collect();
        let routes = nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = NatsCluster { nodes, routes };
        for i in 0..3 {
            cluster.spawn(i);
        }
        cluster.wait_ready().await;
        cluster
    }

    /// The client URLs, as a YAML flow list.
    pub fn urls_yaml(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    fn spawn(&mut self, i: usize) {
        let bin = nats_server();
        let routes = self.routes.clone();
        let n = &mut self.nodes[i];
        let child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p"])
            .arg(n.client_port.to_string())
            .args(["-n", &n.name, "-js", "-sd"])
            .arg(&n.store)
            .args(["-m", &n.monitor_port.to_string()])
            .args(["--cluster_name", "sy", "--cluster"])
            .arg(format!("nats://127.0.0.1:{}", n.cluster_port))
            .args(["--routes", &routes])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        n.child = Some(child);
    }

    /// Stops node `i` as an operator would (SIGTERM: it flushes its streams and leaves
    /// the cluster) and reaps it; SIGKILL if it is still up after 10 s.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let pid = libc::pid_t::try_from(c.id()).expect("pid fits");
            // SAFETY: `pid` is our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if std::time::Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = c.wait();
        }
    }

    /// Copies every stopped node's storage aside (`<store>.backup`), as an operator's
    /// backup would.
    pub fn back_up(&self) {
        for n in &self.nodes {
            assert!(n.child.is_none(), "{} is running", n.name);
            copy_dir(&n.store, &n.store.with_extension("backup"));
        }
    }

    /// Puts every stopped node's storage back as [`NatsCluster::back_up`] left it: NATS
    /// then comes back without what was written since.
    pub fn restore_backup(&self) {
        for n in &self.nodes {
            assert!(n.child.is_none(), "{} is running", n.name);
            std::fs::remove_dir_all(&n.store).expect("remove a node's storage");
            copy_dir(&n.store.with_extension("backup"), &n.store);
        }
    }

    /// Restarts the stopped node `i` on its ports and storage.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} is running");
        self.spawn(i);
    }

    /// Waits until every running node's `/healthz` (JetStream included) answers 200.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            let url = format!("http://127.0.0.1:{}/healthz", n.monitor_port);
            loop {
                if let Ok(r) = client.get(&url).send().await
                    && r.status().is_success()
                {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "nats-server {} never became healthy ({url})",
                    n.name
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// `cp -a from to`, replacing `to`.
fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}
