//! The listeners under slow and greedy clients: header, body and idle timeouts close
//! what dribbles or idles, on the client and the admin port, while a normal client is
//! served throughout; connections over the cap are refused with 503 and counted.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Fleet, Switchyard, TestBackend, chat, client};

/// Raises this process's open-file limit to its hard limit: the tests below hold
/// hundreds of sockets, and the router (a child) inherits the limit.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Opens a connection and sends a request head one byte a second, forever; returns when
/// the server closed the connection, with how long it stayed open.
async fn dribble(addr: String) -> Duration {
    let head = b"GET /health HTTP/1.1\r\nhost: router\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    let opened = Instant::now();
    let mut buf = [0u8; 256];
    for byte in head.iter().cycle() {
        if s.write_all(&[*byte]).await.is_err() {
            return opened.elapsed();
        }
        // A response (hyper may answer 408) or nothing yet: keep dribbling.
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await
        {
            return opened.elapsed();
        }
    }
    unreachable!("the head cycles forever")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn metrics(sy: &Switchyard) -> String {
    sy.metrics().await
}

/// The value of the sample line starting with `series`, 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_header_clients_are_closed_by_the_header_timeout_while_others_are_served() {
    raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let mut fleet = Fleet::new(&[&a]);
    fleet.extra = "listeners:\n  client:\n    header_read_timeout_ms: 2000\n  admin:\n    header_read_timeout_ms: 2000\n".into();
    let sy = Switchyard::start(dir.path(), &fleet.yaml()).await;

    let started = Instant::now();
    let slow: Vec<_> = (0..500)
        .map(|_| tokio::spawn(dribble(host_port(&sy.url))))
        .collect();
    let admin_slow = tokio::spawn(dribble(host_port(&sy.admin)));

    // A normal client, one request every 10 ms while the slow ones are open.
    let c = client();
    let mut latencies = Vec::new();
    while started.elapsed() < Duration::from_secs(4) {
        let sent = Instant::now();
        let r = c
            .post(format!("{}/v1/chat/completions", sy.url))
            .json(&chat(false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        latencies.push(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    latencies.sort();
    let p99 = percentile(&latencies, 0.99);
    // NB: a client starved by the slow ones would wait for their 2 s header timeout; the
    // bound leaves room for a debug build on a loaded 2-core machine (52 ms seen).
    assert!(
        p99 < Duration::from_millis(250),
        "p99 {p99:?} over {} requests",
        latencies.len()
    );

    let bound = Duration::from_secs(5);
    for task in slow {
        let open = tokio::time::timeout(bound, task)
            .await
            .expect("a slow connection outlived the bound")
            .unwrap();
        assert!(
            open >= Duration::from_millis(1500) && open < Duration::from_millis(4000),
            "closed after {open:?}, header timeout 2 s"
        );
    }
    let open = admin_slow.await.unwrap();
    assert!(open < Duration::from_millis(4000), "admin: {open:?}");
    let m = metrics(&sy).await;
    assert!(
        sample(
            &m,
            "switchyard_connection_timeouts_total{listener=\"client\",timeout=\"header\"}"
        ) >= 500.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "switchyard_connection_timeouts_total{listener=\"admin\",timeout=\"header\"}"
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_by_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let mut fleet = Fleet::new(&[&a]);
    fleet.extra = "listeners:\n  client:\n    header_read_timeout_ms: 500\n".into();
    let sy = Switchyard::start(dir.path(), &fleet.yaml()).await;
    // Nothing sent at all: not even the protocol is known yet.
    let mut s = TcpStream::connect(host_port(&sy.url)).await.unwrap();
    let opened = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("closed within the bound")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(opened.elapsed() >= Duration::from_millis(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_refused_with_408() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let mut fleet = Fleet::new(&[&a]);
    fleet.extra = "listeners:\n  client:\n    body_read_timeout_ms: 1000\n".into();
    let sy = Switchyard::start(dir.path(), &fleet.yaml()).await;
    let mut s = TcpStream::connect(host_port(&sy.url)).await.unwrap();
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: router\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let sent = Instant::now();
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("answered and closed within the bound");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    assert!(sent.elapsed() >= Duration::from_millis(900));
    assert_eq!(a.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_by_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let mut fleet = Fleet::new(&[&a]);
    fleet.extra =
        "listeners:\n  client:\n    header_read_timeout_ms: 10000\n    idle_timeout_ms: 500\n"
            .into();
    let sy = Switchyard::start(dir.path(), &fleet.yaml()).await;
    let mut s = TcpStream::connect(host_port(&sy.url)).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: router\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let answered = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("closed well before the header timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(answered.elapsed() >= Duration::from_millis(400));
    let m = metrics(&sy).await;
    assert!(
        sample(
            &m,
            "switchyard_connection_timeouts_total{listener=\"client\",timeout=\"idle\"}"
        ) >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_with_503_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let mut fleet = Fleet::new(&[&a]);
    fleet.extra = "listeners:\n  client:\n    max_connections: 8\n".into();
    let sy = Switchyard::start(dir.path(), &fleet.yaml()).await;
    // Eight connections, each answered once (so the router has accepted it), fill the
    // cap; one refused meanwhile is a readiness poll of the harness still closing.
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() < 8 {
        assert!(Instant::now() < deadline, "could not hold 8 connections");
        let mut s = TcpStream::connect(host_port(&sy.url)).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nhost: router\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap_or(0);
        if buf[..n].starts_with(b"HTTP/1.1 200") {
            held.push(s);
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut s = TcpStream::connect(host_port(&sy.url)).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut answer))
        .await
        .expect("refused at once")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("too_many_connections"), "{text}");

    drop(held);
    crate::harness::eventually(5, "a slot is free again", || async {
        client()
            .get(format!("{}/health", sy.url))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let m = metrics(&sy).await;
    assert!(
        sample(
            &m,
            "switchyard_connections_refused_total{listener=\"client\"}"
        ) >= 1.0,
        "{m}"
    );
    assert!(
        sy.stderr()
            .contains("connection refused: the listener is at max_connections"),
        "the refusal is logged"
    );
}
