//! End-to-end KV-event ingest over real ZeroMQ sockets on 127.0.0.1.
//!
//! A test engine (`Engine`) binds a PUB and a ROUTER on OS-chosen ports and speaks the
//! vLLM wire format built from the library's encoder (checked byte-for-byte against the
//! golden vectors in the unit tests); the router's [`KvIndex`] subscribes to it, and
//! each test checks what lookups see. Waits are readiness polls with a deadline.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchyard_kv::{
    BackendConfig, BackendStats, Batch, BlockStored, Event, KvConfig, KvIndex, ModelConfig, Prompt,
    Scope, Tier, Tokenizer, encode_batch,
};

const MODEL: &str = "m";

fn tokenizer_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/tokenizer/tokenizer.json")
}

/// Replay reply layouts: vLLM <= 0.25 / SGLang, and vLLM >= 0.26 (with topic).
#[derive(Clone, Copy)]
enum Layout {
    Old,
    New,
}

/// Batches an engine keeps for replay: (seq, payload).
type Buffered = Vec<(u64, Vec<u8>)>;

/// A test engine: PUB for live batches, ROUTER serving replays from a bounded buffer.
struct Engine {
    publisher: zmq::Socket,
    endpoint: String,
    replay_endpoint: String,
    topic: Vec<u8>,
    buffer: Arc<Mutex<Buffered>>,
    keep: usize,
    seq: u64,
    stop: Arc<AtomicBool>,
    router: Option<JoinHandle<()>>,
}

fn bound(socket: &zmq::Socket) -> String {
    socket
        .get_last_endpoint()
        .expect("endpoint")
        .expect("utf-8 endpoint")
}

impl Engine {
    /// Binds both sockets; keeps the last `keep` batches for replay.
    fn start(layout: Layout, keep: usize) -> Self {
        Self::with_publisher(layout, keep, None)
    }

    /// Like [`start`], but the PUB connects to `connect` (the router's bound endpoint).
    fn with_publisher(layout: Layout, keep: usize, connect: Option<&str>) -> Self {
        let ctx = zmq::Context::new();
        let publisher = ctx.socket(zmq::PUB).expect("pub socket");
        publisher.set_linger(0).expect("linger");
        let endpoint = match connect {
            Some(ep) => {
                publisher.connect(ep).expect("connect");
                ep.to_owned()
            }
            None => {
                publisher.bind("tcp://127.0.0.1:0").expect("bind pub");
                bound(&publisher)
            }
        };
        let router = ctx.socket(zmq::ROUTER).expect("router socket");
        router.set_linger(0).expect("linger");
        router.set_rcvtimeo(20).expect("timeout");
        router.bind("tcp://127.0.0.1:0").expect("bind router");
        let replay_endpoint = bound(&router);
        let buffer: Arc<Mutex<Buffered>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let topic = b"kv@engine@m".to_vec();
        let handle = {
            let (buffer, stop, topic) = (buffer.clone(), stop.clone(), topic.clone());
            std::thread::spawn(move || serve_replay(&router, &buffer, &stop, &topic, layout))
        };
        Self {
            publisher,
            endpoint,
            replay_endpoint,
            topic,
            buffer,
            keep,
            seq: 0,
            stop,
            router: Some(handle),
        }
    }

    /// Buffers the next batch and, if `send`, publishes it (else it is "lost").
    fn emit(&mut self, events: Vec<Event>, send: bool) -> u64 {
        let seq = self.seq;
        self.seq += 1;
        let payload = encode_batch(&Batch {
            ts: 0.0,
            events,
            dp_rank: Some(0),
            skipped: 0,
        });
        {
            let mut buffer = self.buffer.lock().expect("buffer");
            buffer.push((seq, payload.clone()));
            let excess = buffer.len().saturating_sub(self.keep);
            buffer.drain(..excess);
        }
        if send {
            self.send_frames(&[&self.topic, &seq.to_be_bytes(), &payload]);
        }
        seq
    }

    fn publish(&mut self, events: Vec<Event>) -> u64 {
        self.emit(events, true)
    }

    fn send_frames(&self, frames: &[&[u8]]) {
        self.publisher.send_multipart(frames, 0).expect("publish");
    }

    /// A restart: the sequence starts again at 0 and the replay buffer is empty.
    fn restart(&mut self) {
        self.seq = 0;
        self.buffer.lock().expect("buffer").clear();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.router.take() {
            let _ = h.join();
        }
    }
}

fn serve_replay(
    router: &zmq::Socket,
    buffer: &Mutex<Buffered>,
    stop: &AtomicBool,
    topic: &[u8],
    layout: Layout,
) {
    while !stop.load(Relaxed) {
        let Ok(frames) = router.recv_multipart(0) else {
            continue;
        };
        let [id, delimiter, start] = frames.as_slice() else {
            continue;
        };
        let (Ok(start), true) = (<[u8; 8]>::try_from(start.as_slice()), delimiter.is_empty())
        else {
            continue;
        };
        let start = u64::from_be_bytes(start);
        let batches: Vec<(u64, Vec<u8>)> = buffer
            .lock()
            .expect("buffer")
            .iter()
            .filter(|(s, _)| *s >= start)
            .cloned()
            .collect();
        let end = u64::MAX.to_be_bytes();
        for (seq, payload) in batches
            .iter()
            .map(|(s, p)| (s.to_be_bytes(), p.as_slice()))
            .chain(std::iter::once((end, &[][..])))
        {
            let reply: Vec<&[u8]> = match layout {
                Layout::Old => vec![id, b"", &seq, payload],
                Layout::New if seq == end => vec![id, b"", b"", &seq, payload],
                Layout::New => vec![id, b"", topic, &seq, payload],
            };
            let _ = router.send_multipart(reply, 0);
        }
    }
}

/// The router side, one backend "b" following `engine`, plus the prompt's tokens.
struct Router {
    kv: KvIndex,
    tokens: Vec<u32>,
    prompt: String,
}

fn model() -> ModelConfig {
    ModelConfig {
        name: MODEL.into(),
        block_size: 16,
        tokenizer: Some(tokenizer_path()),
        chat_template: None,
        exact: None,
    }
}

fn backend(name: &str, engine: Option<&Engine>, topic: Option<&str>) -> BackendConfig {
    BackendConfig {
        name: name.into(),
        model: MODEL.into(),
        events: engine.map(|e| e.endpoint.clone()),
        replay: engine.map(|e| e.replay_endpoint.clone()),
        topic: topic.map(str::to_owned),
        capacity_blocks: None,
    }
}

impl Router {
    fn follow(engine: &Engine, queue_capacity: usize) -> Self {
        let config = KvConfig {
            models: vec![model()],
            backends: vec![backend("b", Some(engine), None)],
            queue_capacity,
            ..KvConfig::default()
        };
        Self::new(config)
    }

    fn new(config: KvConfig) -> Self {
        let kv = KvIndex::new(&config).expect("kv index starts");
        let prompt: String = (0..40)
            .map(|i| format!("Shared system rule number {i}. "))
            .collect();
        let tok = Tokenizer::from_files(&tokenizer_path(), None).expect("tokenizer");
        let tokens = tok.encode(&prompt, true).expect("tokens");
        assert!(tokens.len() >= 64, "the prompt spans at least 4 blocks");
        Self { kv, tokens, prompt }
    }

    fn cached(&self, name: &str) -> u32 {
        let keys = self
            .kv
            .prepare(MODEL, Prompt::Text(&self.prompt), Scope::default())
            .expect("keys");
        let id = self.kv.backend(name).expect("backend");
        let mut out = [u32::MAX];
        self.kv.lookup(&keys, &[id], &mut out, None);
        out[0]
    }

    fn stats(&self, name: &str) -> BackendStats {
        self.kv
            .stats()
            .into_iter()
            .find(|s| s.name == name)
            .expect("stats")
    }

    /// Polls `cond` until it holds, failing with the backend's stats after 10 s.
    fn eventually(&self, name: &str, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.stats(name)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Events storing blocks `from..to` of the prompt (16-token blocks), hashes 1000+i.
    fn stored(&self, from: usize, to: usize) -> Event {
        Event::Stored(BlockStored {
            hashes: (from..to).map(|i| 1000 + i as u64).collect(),
            parent: from.checked_sub(1).map(|p| 1000 + p as u64),
            tokens: self.tokens[from * 16..to * 16].to_vec(),
            block_size: 16,
            lora_name: None,
            tier: Tier::Gpu,
            is_full_attention: true,
        })
    }
}

/// Publishes empty batches until the subscriber has applied one: the subscription is
/// live (a PUB drops everything sent before it is).
fn connect(engine: &mut Engine, router: &Router, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while router.stats(name).batches_applied == 0 {
        assert!(Instant::now() < deadline, "subscriber never connected");
        engine.publish(vec![]);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn stored_blocks_show_up_and_removals_and_clears_take_them_away() {
    let mut engine = Engine::start(Layout::New, 1000);
    let router = Router::follow(&engine, 1024);
    connect(&mut engine, &router, "b");
    engine.publish(vec![router.stored(0, 2)]);
    engine.publish(vec![router.stored(2, 4)]);
    router.eventually("b", "4 blocks", |r| r.cached("b") == 64);
    engine.publish(vec![Event::Removed {
        hashes: vec![1002],
        tier: Tier::Gpu,
    }]);
    router.eventually("b", "a removal", |r| r.cached("b") == 32);
    engine.publish(vec![Event::Cleared]);
    router.eventually("b", "a clear", |r| r.cached("b") == 0);
    let s = router.stats("b");
    assert_eq!((s.gaps, s.unknown_parent, s.blocks), (0, 0, 0));
}

fn dropped_message_is_replayed(layout: Layout) {
    let mut engine = Engine::start(layout, 1000);
    let router = Router::follow(&engine, 1024);
    connect(&mut engine, &router, "b");
    engine.publish(vec![router.stored(0, 1)]);
    engine.emit(vec![router.stored(1, 3)], false); // lost on the way
    engine.publish(vec![router.stored(3, 4)]);
    router.eventually("b", "the replayed blocks", |r| r.cached("b") == 64);
    let s = router.stats("b");
    assert_eq!(
        (s.gaps, s.replays, s.clears, s.unknown_parent),
        (1, 1, 0, 0)
    );
    assert_eq!(s.last_seq, Some(engine.seq - 1));
}

#[test]
fn dropped_message_is_replayed_old_layout() {
    dropped_message_is_replayed(Layout::Old);
}

#[test]
fn dropped_message_is_replayed_new_layout() {
    dropped_message_is_replayed(Layout::New);
}

#[test]
fn publisher_restart_clears_stale_blocks() {
    let mut engine = Engine::start(Layout::New, 1000);
    let router = Router::follow(&engine, 1024);
    connect(&mut engine, &router, "b");
    engine.publish(vec![router.stored(0, 4)]);
    router.eventually("b", "4 blocks", |r| r.cached("b") == 64);
    // The engine comes back empty and caches only the first block again.
    engine.restart();
    engine.publish(vec![router.stored(0, 1)]);
    router.eventually("b", "the restart", |r| r.stats("b").restarts == 1);
    router.eventually("b", "one block", |r| r.cached("b") == 16);
}

#[test]
fn a_gap_replay_cannot_cover_clears_the_backend() {
    let mut engine = Engine::start(Layout::Old, 2);
    let router = Router::follow(&engine, 1024);
    connect(&mut engine, &router, "b");
    engine.publish(vec![router.stored(0, 4)]);
    router.eventually("b", "4 blocks", |r| r.cached("b") == 64);
    for _ in 0..5 {
        engine.emit(
            vec![Event::Removed {
                hashes: vec![1003],
                tier: Tier::Gpu,
            }],
            false,
        );
    }
    engine.publish(vec![]);
    router.eventually("b", "a clear", |r| r.stats("b").clears == 1);
    assert_eq!(router.cached("b"), 0, "stale is worse than empty");
}

#[test]
fn bad_frames_and_corrupt_payloads_are_counted_and_skipped() {
    let mut engine = Engine::start(Layout::New, 1000);
    let router = Router::follow(&engine, 1024);
    connect(&mut engine, &router, "b");
    engine.send_frames(&[b"kv@engine@m", &[0u8; 8]]); // two frames
    engine.send_frames(&[b"kv@engine@m", &[0u8; 4], b"x"]); // 4-byte seq
    let seq = engine.seq;
    engine.seq += 1;
    engine.send_frames(&[b"kv@engine@m", &seq.to_be_bytes(), &[0x93, 0xcb]]); // truncated
    engine.publish(vec![router.stored(0, 2)]);
    router.eventually("b", "the good batch", |r| r.cached("b") == 32);
    let s = router.stats("b");
    assert_eq!((s.bad_messages, s.gaps), (3, 0));
}

#[test]
fn a_flood_is_bounded_counted_and_recovered() {
    let mut engine = Engine::start(Layout::New, 100_000);
    let router = Router::follow(&engine, 4);
    connect(&mut engine, &router, "b");
    let floods: u32 = 3000;
    for i in 0..floods {
        let h = 10_000 + u64::from(i);
        let tokens = vec![i; 16];
        engine.publish(vec![Event::Stored(BlockStored {
            hashes: vec![h],
            parent: None,
            tokens,
            block_size: 16,
            lora_name: None,
            tier: Tier::Gpu,
            is_full_attention: true,
        })]);
    }
    engine.publish(vec![router.stored(0, 4)]);
    // NB: ZeroMQ's own high-water marks may drop the tail of a burst silently; like a
    // busy engine, keep publishing so the next message reveals the gap.
    let deadline = Instant::now() + Duration::from_secs(20);
    while router.cached("b") != 64 {
        assert!(
            Instant::now() < deadline,
            "flood never drained: {:?}",
            router.stats("b")
        );
        engine.publish(vec![]);
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = router.stats("b");
    assert!(s.dropped > 0, "the 4-message queue overflowed: {s:?}");
    assert!(s.gaps > 0 && s.replays > 0, "drops were replayed: {s:?}");
    assert_eq!(s.blocks, floods + 4, "every block recovered: {s:?}");
}

#[test]
fn bind_mode_routes_by_topic() {
    let config = KvConfig {
        models: vec![model()],
        backends: vec![
            backend("a", None, Some("kv@engine@m")),
            backend("z", None, Some("kv@z@m")),
        ],
        bind: Some("tcp://127.0.0.1:0".into()),
        ..KvConfig::default()
    };
    let router = Router::new(config);
    let endpoint = router.kv.bound_endpoint().expect("bound").to_owned();
    assert!(!endpoint.ends_with(":0"), "the OS chose a port: {endpoint}");
    let mut engine = Engine::with_publisher(Layout::New, 1000, Some(&endpoint));
    connect(&mut engine, &router, "a");
    engine.publish(vec![router.stored(0, 3)]);
    router.eventually("a", "3 blocks", |r| r.cached("a") == 48);
    assert_eq!(router.cached("z"), 0, "another topic's backend");
    router.kv.remove_backend("a").expect("removed");
    assert!(router.kv.backend("a").is_none());
}

/// `switchyard_kv_events_rejected_total{backend, reason}` as the router's registry
/// renders it.
fn rejected(router: &Router, backend: &str, reason: &str) -> u64 {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(router.kv.collector()));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("metrics text");
    let series = format!(
        "switchyard_kv_events_rejected_total{{backend=\"{backend}\",reason=\"{reason}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .expect("a count")
}

/// Sends `payload` as the next live message with the engine's next sequence number.
fn send_raw(engine: &mut Engine, payload: &[u8]) {
    let seq = engine.seq;
    engine.seq += 1;
    engine.send_frames(&[b"kv@engine@m", &seq.to_be_bytes(), payload]);
}

#[test]
fn seven_bytes_declaring_four_billion_events_are_rejected_and_the_stream_goes_on() {
    let mut engine = Engine::start(Layout::New, 1000);
    let router = Router::follow(&engine, 1024);
    connect(&mut engine, &router, "b");
    send_raw(&mut engine, &[0x92, 0x00, 0xdd, 0xff, 0xff, 0xff, 0xff]);
    engine.publish(vec![router.stored(0, 2)]);
    router.eventually("b", "the good batch after the bad one", |r| {
        r.cached("b") == 32
    });
    assert_eq!(rejected(&router, "b", "not_msgpack"), 1);
    assert_eq!(rejected(&router, "b", "too_large"), 0);
    let s = router.stats("b");
    assert_eq!((s.bad_messages, s.gaps, s.clears), (1, 0, 0));
}

#[test]
fn a_message_over_the_size_cap_is_rejected_and_the_stream_goes_on() {
    let mut engine = Engine::start(Layout::New, 1000);
    let config = KvConfig {
        models: vec![model()],
        backends: vec![backend("b", Some(&engine), None)],
        max_message_bytes: 1024,
        ..KvConfig::default()
    };
    let router = Router::new(config);
    connect(&mut engine, &router, "b");
    // Every frame under the cap, the message over it: our own check.
    send_raw(&mut engine, &[0xc0; 1010]);
    // One frame over the cap: ZeroMQ refuses it and drops the connection, which comes
    // back; the lost message is then a gap the replay fills.
    send_raw(&mut engine, &[0xc0; 2000]);
    // NB: the skipped sequence numbers are gaps the engine's buffer cannot fill, so the
    // backend is cleared; the engine's next stores apply.
    let deadline = Instant::now() + Duration::from_secs(10);
    while router.cached("b") != 32 {
        assert!(Instant::now() < deadline, "{:?}", router.stats("b"));
        engine.publish(vec![router.stored(0, 2)]);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rejected(&router, "b", "too_large"), 1);
    assert_eq!(router.stats("b").blocks, 2);
}
