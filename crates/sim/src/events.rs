//! KV-cache events over ZeroMQ in vLLM's wire format (`kv-events.md` §1).
//!
//! A [`Publisher`] owns a PUB socket (3-frame messages: topic, 8-byte big-endian sequence
//! number, msgpack `KVEventBatch`) and a ROUTER replay socket that re-sends buffered
//! batches from a requested sequence number in the v0.26 layout
//! (`[topic, seq, payload]`, ended by `["", 0xFF×8, ""]`). The sockets live on one
//! thread per publisher because libzmq sockets are not thread-safe; the engine hands it
//! batches over a channel and never blocks on the network.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rmpv::Value;

use super::cache::CacheEvent;

/// Sequence number of the replay end marker (−1 as a signed 8-byte value).
const END_OF_REPLAY: [u8; 8] = [0xFF; 8];

/// How often the publisher thread looks at the replay socket when no batch arrives.
const REPLAY_POLL: Duration = Duration::from_millis(10);

/// Errors setting up the event sockets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A ZeroMQ socket could not be created or bound.
    #[error("cannot bind kv events socket {endpoint}")]
    Bind {
        /// The endpoint asked for.
        endpoint: String,
        /// Cause.
        #[source]
        source: zmq::Error,
    },
    /// The publisher thread could not be started.
    #[error("cannot start the kv events thread")]
    Thread(#[source] std::io::Error),
}

/// Where and how to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsSpec {
    /// Interface to bind, e.g. `127.0.0.1`.
    pub host: String,
    /// PUB port; 0 lets the OS choose.
    pub port: u16,
    /// ROUTER replay port; 0 lets the OS choose, `None` disables replay.
    pub replay_port: Option<u16>,
    /// First frame of every message, e.g. `kv@127.0.0.1:9001@model`.
    pub topic: String,
    /// Batches kept for replay (vLLM's `buffer_steps`, default 10000).
    pub buffer_steps: usize,
}

/// A running publisher; dropping it stops its thread (which closes the sockets within
/// one replay poll, without the dropper waiting for it).
#[derive(Debug)]
pub struct Publisher {
    tx: mpsc::Sender<Vec<CacheEvent>>,
    endpoint: String,
    replay_endpoint: Option<String>,
}

fn context() -> &'static zmq::Context {
    static CONTEXT: OnceLock<zmq::Context> = OnceLock::new();
    CONTEXT.get_or_init(zmq::Context::new)
}

fn bind(kind: zmq::SocketType, host: &str, port: u16) -> Result<(zmq::Socket, String), Error> {
    let port_part = if port == 0 {
        "*".to_owned()
    } else {
        port.to_string()
    };
    let endpoint = format!("tcp://{host}:{port_part}");
    let err = |source| Error::Bind {
        endpoint: endpoint.clone(),
        source,
    };
    let socket = context().socket(kind).map_err(err)?;
    socket.set_linger(0).map_err(err)?;
    if kind == zmq::PUB {
        socket.set_sndhwm(100_000).map_err(err)?;
    }
    socket.bind(&endpoint).map_err(err)?;
    let bound = match socket.get_last_endpoint() {
        Ok(Ok(s)) => s,
        _ => endpoint.clone(),
    };
    Ok((socket, bound))
}

impl Publisher {
    /// Binds the sockets and starts the publisher thread.
    ///
    /// # Errors
    ///
    /// [`Error::Bind`] when a socket cannot be bound.
    pub fn start(spec: &EventsSpec) -> Result<Self, Error> {
        let (publish, endpoint) = bind(zmq::PUB, &spec.host, spec.port)?;
        let (replay, replay_endpoint) = match spec.replay_port {
            Some(port) => {
                let (s, e) = bind(zmq::ROUTER, &spec.host, port)?;
                (Some(s), Some(e))
            }
            None => (None, None),
        };
        let (tx, rx) = mpsc::channel();
        let mut state = Thread {
            publish,
            replay,
            topic: spec.topic.clone().into_bytes(),
            next_seq: 0,
            buffer: VecDeque::new(),
            buffer_steps: spec.buffer_steps.max(1),
        };
        std::thread::Builder::new()
            .name("sim-kv-events".into())
            .spawn(move || state.run(&rx))
            .map_err(Error::Thread)?;
        Ok(Self {
            tx,
            endpoint,
            replay_endpoint,
        })
    }

    /// The bound PUB endpoint, e.g. `tcp://127.0.0.1:41234`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bound ROUTER replay endpoint, if replay is on.
    pub fn replay_endpoint(&self) -> Option<&str> {
        self.replay_endpoint.as_deref()
    }

    /// Queues one batch (one engine step's events) for publishing. Empty batches are
    /// skipped, as in vLLM.
    pub fn publish(&self, events: Vec<CacheEvent>) {
        if events.is_empty() {
            return;
        }
        // NB: the thread only exits once this sender is dropped, so a send cannot fail
        // while `self` is alive.
        let _ = self.tx.send(events);
    }
}

/// State owned by the publisher thread.
struct Thread {
    publish: zmq::Socket,
    replay: Option<zmq::Socket>,
    topic: Vec<u8>,
    next_seq: u64,
    buffer: VecDeque<(u64, Vec<u8>)>,
    buffer_steps: usize,
}

impl Thread {
    fn run(&mut self, rx: &mpsc::Receiver<Vec<CacheEvent>>) {
        loop {
            self.serve_replays();
            match rx.recv_timeout(REPLAY_POLL) {
                Ok(events) => self.send(&events),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn send(&mut self, events: &[CacheEvent]) {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let payload = encode_batch(ts, events, Some(0));
        let seq = self.next_seq;
        self.next_seq += 1;
        let frames: [&[u8]; 3] = [&self.topic, &seq.to_be_bytes(), &payload];
        // A full high-water mark drops the batch, as vLLM does; subscribers see a gap.
        let _ = self.publish.send_multipart(frames, zmq::DONTWAIT);
        if self.buffer.len() == self.buffer_steps {
            self.buffer.pop_front();
        }
        self.buffer.push_back((seq, payload));
    }

    fn serve_replays(&self) {
        let Some(replay) = &self.replay else { return };
        while let Ok(frames) = replay.recv_multipart(zmq::DONTWAIT) {
            // `[identity, "", start_seq]`; anything else is ignored, as in vLLM.
            let [identity, delimiter, start] = frames.as_slice() else {
                continue;
            };
            let Ok(start) = <[u8; 8]>::try_from(start.as_slice()) else {
                continue;
            };
            let start = u64::from_be_bytes(start);
            for (seq, payload) in self.buffer.iter().filter(|(s, _)| *s >= start) {
                let frames: [&[u8]; 5] = [
                    identity,
                    delimiter,
                    &self.topic,
                    &seq.to_be_bytes(),
                    payload,
                ];
                let _ = replay.send_multipart(frames, 0);
            }
            let end: [&[u8]; 5] = [identity, delimiter, b"", &END_OF_REPLAY, b""];
            let _ = replay.send_multipart(end, 0);
        }
    }
}

/// Encodes a `KVEventBatch` as msgpack: `[ts, events, data_parallel_rank]` with
/// positional events in the 2026 schema (`BlockStored` with 11 fields, `BlockRemoved`
/// with 3, `AllBlocksCleared` with none).
pub fn encode_batch(ts: f64, events: &[CacheEvent], data_parallel_rank: Option<u32>) -> Vec<u8> {
    let nil = || Value::Nil;
    let gpu = || Value::from("GPU");
    let hashes = |hs: &[u64]| Value::Array(hs.iter().map(|h| Value::from(*h)).collect());
    let events = events
        .iter()
        .map(|e| match e {
            CacheEvent::Stored {
                hashes: hs,
                parent,
                token_ids,
            } => {
                let block_size = if hs.is_empty() {
                    0
                } else {
                    token_ids.len() / hs.len()
                };
                Value::Array(vec![
                    Value::from("BlockStored"),
                    hashes(hs),
                    parent.map_or(nil(), Value::from),
                    Value::Array(token_ids.iter().map(|t| Value::from(*t)).collect()),
                    Value::from(block_size),
                    nil(), // lora_id
                    gpu(), // medium
                    nil(), // lora_name
                    nil(), // extra_keys
                    nil(), // group_idx
                    nil(), // kv_cache_spec_kind
                    nil(), // kv_cache_spec_sliding_window
                ])
            }
            CacheEvent::Removed { hashes: hs } => {
                Value::Array(vec![Value::from("BlockRemoved"), hashes(hs), gpu(), nil()])
            }
            CacheEvent::Cleared => Value::Array(vec![Value::from("AllBlocksCleared")]),
        })
        .collect();
    let batch = Value::Array(vec![
        Value::F64(ts),
        Value::Array(events),
        data_parallel_rank.map_or(nil(), Value::from),
    ]);
    let mut out = Vec::new();
    // NB: writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &batch);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_g3_block_stored_batch() {
        // kv-events.md §7 G3, except block_size: ours is derived from the tokens.
        let e = CacheEvent::Stored {
            hashes: vec![1, 2],
            parent: None,
            token_ids: vec![1, 2, 3, 4],
        };
        let hex = hex::encode(encode_batch(1.5, &[e], Some(0)));
        assert_eq!(
            hex,
            "93cb3ff8000000000000919cab426c6f636b53746f726564920102c0940102030402c0a3475055c0c0c0c0c000"
        );
    }

    #[test]
    fn golden_g8_removed_and_cleared_batch() {
        let events = [CacheEvent::Removed { hashes: vec![2] }, CacheEvent::Cleared];
        let hex = hex::encode(encode_batch(1.5, &events, None));
        assert_eq!(
            hex,
            "93cb3ff80000000000009294ac426c6f636b52656d6f7665649102a3475055c091b0416c6c426c6f636b73436c6561726564c0"
        );
    }

    #[test]
    fn hashes_at_or_above_2_pow_63_are_uint64() {
        let e = CacheEvent::Removed {
            hashes: vec![u64::MAX],
        };
        let bytes = encode_batch(0.0, &[e], None);
        let needle = hex::decode("cfffffffffffffffff").expect("hex");
        assert!(bytes.windows(needle.len()).any(|w| w == needle.as_slice()));
    }

    #[test]
    fn live_and_replayed_messages_follow_the_wire_format() {
        let spec = EventsSpec {
            host: "127.0.0.1".into(),
            port: 0,
            replay_port: Some(0),
            topic: "kv@test@m".into(),
            buffer_steps: 2,
        };
        let publisher = Publisher::start(&spec).expect("bind");
        let sub = context().socket(zmq::SUB).expect("sub");
        sub.connect(publisher.endpoint()).expect("connect");
        sub.set_subscribe(b"kv@").expect("subscribe");
        sub.set_rcvtimeo(100).expect("timeout");
        // Slow joiner: publish until the subscription is live.
        let first = loop {
            publisher.publish(vec![CacheEvent::Cleared]);
            if let Ok(frames) = sub.recv_multipart(0) {
                break frames;
            }
        };
        assert_eq!(first.len(), 3);
        assert_eq!(first[0], b"kv@test@m");
        assert_eq!(first[1].len(), 8);
        let first_seq = u64::from_be_bytes(first[1].as_slice().try_into().expect("8 bytes"));

        let dealer = context().socket(zmq::DEALER).expect("dealer");
        dealer
            .connect(publisher.replay_endpoint().expect("replay on"))
            .expect("connect");
        dealer.set_rcvtimeo(2000).expect("timeout");
        dealer
            .send_multipart([&b""[..], &0u64.to_be_bytes()], 0)
            .expect("send");
        let mut seqs = Vec::new();
        loop {
            let frames = dealer.recv_multipart(0).expect("replay reply");
            assert_eq!(frames.len(), 4, "delimiter, topic, seq, payload");
            if frames[2] == END_OF_REPLAY {
                assert!(frames[1].is_empty() && frames[3].is_empty());
                break;
            }
            assert_eq!(frames[1], b"kv@test@m");
            seqs.push(u64::from_be_bytes(
                frames[2].as_slice().try_into().expect("8 bytes"),
            ));
        }
        // Only the last `buffer_steps` batches are kept, in order, and include the first
        // one received live or later ones.
        assert_eq!(seqs.len().min(2), seqs.len());
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
        assert!(seqs.last().copied() >= Some(first_seq));
    }
}
