//! Event ingest: ZeroMQ subscribers, per-backend sequence tracking and replay.
//!
//! Each backend with events gets two threads: a *receiver* that reads 3-frame messages
//! (`[topic, seq as 8-byte BE, msgpack batch]`) from a SUB socket into a bounded queue,
//! counting what it cannot enqueue, and an *applier* that takes them in order, tracks
//! the sequence ([`Follower`]) and applies batches to the model's index. In bind mode one
//! receiver owns a bound SUB socket that every engine connects to and routes each
//! message by its topic.
//!
//! Recovery, per backend: a gap (lost messages, queue overflow) is replayed through the
//! engine's ROUTER socket; a replay that cannot cover the gap clears the backend (stale
//! is worse than empty); a sequence going back means the engine restarted, so the
//! backend is cleared and replayed from 0.
//!
//! Bounds ([`Limits`], from the `kv` config): every socket refuses frames over the
//! message cap (ZeroMQ's `ZMQ_MAXMSGSIZE`) and every message is checked against it again;
//! a replay takes at most a set number of batches; events are capped and checked before
//! they reach the index (see [`super::apply`]). What is refused is counted per reason
//! ([`Reject`]), logged once per burst, and the stream goes on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::apply::{Ratio, Target, Writer, apply_batch};
use super::config::KvConfig;
use super::event::{DecodeError, decode_batch};
use super::exact::ExactHasher;
use super::index::Index;
use super::stats::{Counters, Reject};
use crate::burst::Burst;

/// How long a blocked receive waits before checking for shutdown.
const POLL: Duration = Duration::from_millis(100);

/// How long the applier's queue must stay empty before it looks for lost messages.
const LOST_CHECK: Duration = Duration::from_millis(20);

/// Replay requests per gap before the backend is cleared instead.
const MAX_REPLAYS: usize = 4;

/// Replay end-of-stream sequence (`-1` as a signed 8-byte value).
const END_SEQ: u64 = u64::MAX;

/// Errors of the ingest sockets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// A ZeroMQ call on `endpoint` failed.
    #[error("zeromq {op} on {endpoint}")]
    Zmq {
        /// What was attempted: socket, connect, bind, send, receive.
        op: &'static str,
        /// The endpoint involved.
        endpoint: String,
        /// The ZeroMQ error.
        #[source]
        source: zmq::Error,
    },
}

fn zmq_err<'a>(op: &'static str, endpoint: &'a str) -> impl FnOnce(zmq::Error) -> IngestError + 'a {
    move |source| IngestError::Zmq {
        op,
        endpoint: endpoint.to_owned(),
        source,
    }
}

/// The bounds ingest puts on what engines send; see the `kv` config fields of the
/// same names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, all frames together, in bytes.
    pub max_message_bytes: usize,
    /// Most hashes in one event.
    pub max_hashes_per_event: usize,
    /// Most batches one replay request takes.
    pub max_replay_batches: usize,
}

impl Limits {
    /// The limits `config` sets.
    pub fn of(config: &KvConfig) -> Self {
        Limits {
            max_message_bytes: config.max_message_bytes,
            max_hashes_per_event: config.max_hashes_per_event,
            max_replay_batches: config.max_replay_batches,
        }
    }

    /// Sets the message cap on a socket, so ZeroMQ never reads a larger frame.
    fn cap(&self, socket: &zmq::Socket) -> zmq::Result<()> {
        socket.set_maxmsgsize(i64::try_from(self.max_message_bytes).unwrap_or(i64::MAX))
    }
}

impl Default for Limits {
    /// The config's defaults.
    fn default() -> Self {
        Limits::of(&KvConfig::default())
    }
}

/// One live message, past frame validation.
#[derive(Debug)]
pub struct Message {
    /// The publisher's sequence number.
    pub seq: u64,
    /// The msgpack batch.
    pub payload: Vec<u8>,
}

/// Splits a live message into topic and [`Message`]; `None` unless it is exactly 3
/// frames with an 8-byte sequence.
pub fn parse_live(mut frames: Vec<Vec<u8>>) -> Option<(Vec<u8>, Message)> {
    if frames.len() != 3 {
        return None;
    }
    let payload = frames.pop()?;
    let seq = u64::from_be_bytes(frames.pop()?.try_into().ok()?);
    let topic = frames.pop()?;
    Some((topic, Message { seq, payload }))
}

/// Fetches buffered batches from a sequence number on.
pub trait Replay {
    /// The batches the engine still buffers with `seq >= start`, in order, up to the
    /// replay's cap.
    ///
    /// # Errors
    ///
    /// [`IngestError`] when the request cannot be sent.
    fn replay(&mut self, start: u64) -> Result<Vec<Message>, IngestError>;
}

/// Replay through an engine's ROUTER socket, with a DEALER (a REQ gets one reply only).
pub struct ZmqReplay {
    ctx: zmq::Context,
    endpoint: String,
    limits: Limits,
    /// Wait for the first reply (connection set-up included).
    first_reply: Duration,
    /// Wait between replies before giving up on an end marker.
    next_reply: Duration,
}

impl ZmqReplay {
    /// Replay from the ROUTER at `endpoint`, within `limits`.
    pub fn new(ctx: zmq::Context, endpoint: String, limits: Limits) -> Self {
        Self {
            ctx,
            endpoint,
            limits,
            first_reply: Duration::from_secs(1),
            next_reply: Duration::from_millis(200),
        }
    }
}

impl std::fmt::Debug for ZmqReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZmqReplay")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Replay for ZmqReplay {
    fn replay(&mut self, start: u64) -> Result<Vec<Message>, IngestError> {
        let ep = self.endpoint.as_str();
        let sock = self
            .ctx
            .socket(zmq::DEALER)
            .map_err(zmq_err("socket", ep))?;
        sock.set_linger(0).map_err(zmq_err("socket", ep))?;
        // Buffer no more replies than one replay takes: the engine drops the rest, and a
        // hostile one cannot fill our memory.
        let max = self.limits.max_replay_batches;
        sock.set_rcvhwm(i32::try_from(max).unwrap_or(i32::MAX))
            .map_err(zmq_err("socket", ep))?;
        self.limits.cap(&sock).map_err(zmq_err("socket", ep))?;
        sock.connect(ep).map_err(zmq_err("connect", ep))?;
        // NB: a DEALER must send the empty delimiter a REQ would add.
        sock.send_multipart([&[][..], &start.to_be_bytes()[..]], 0)
            .map_err(zmq_err("send", ep))?;
        let mut out = Vec::new();
        let mut wait = self.first_reply;
        while out.len() < max {
            sock.set_rcvtimeo(wait.as_millis() as i32)
                .map_err(zmq_err("socket", ep))?;
            let frames = match sock.recv_multipart(0) {
                Ok(f) => f,
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => return Err(zmq_err("receive", ep)(e)),
            };
            wait = self.next_reply;
            match parse_reply(frames) {
                Some(Reply::Batch(m)) => out.push(m),
                Some(Reply::End) => break,
                None => {} // Not a reply layout we know: ignore it.
            }
        }
        Ok(out)
    }
}

/// One replay reply.
#[derive(Debug)]
enum Reply {
    Batch(Message),
    End,
}

/// Reads both reply layouts: `["", seq, payload]` (vLLM <= 0.25, SGLang) and
/// `["", topic, seq, payload]` (vLLM >= 0.26); the end marker has seq `0xFF x 8` or an
/// empty payload.
fn parse_reply(mut frames: Vec<Vec<u8>>) -> Option<Reply> {
    if frames.first().is_some_and(Vec::is_empty) && matches!(frames.len(), 3 | 4) {
        frames.remove(0);
    }
    if !matches!(frames.len(), 2 | 3) {
        return None;
    }
    let payload = frames.pop()?;
    let seq = u64::from_be_bytes(frames.pop()?.try_into().ok()?);
    if seq == END_SEQ || payload.is_empty() {
        return Some(Reply::End);
    }
    Some(Reply::Batch(Message { seq, payload }))
}

/// Where applied batches go: the index, or a test double.
pub trait Sink {
    /// Applies one batch payload.
    fn apply(&mut self, payload: &[u8]);
    /// Forgets everything the backend holds.
    fn clear(&mut self);
    /// The backend's counters.
    fn counters(&self) -> &Counters;
}

/// Sequence tracking for one backend's stream; see the module doc for the rules.
#[derive(Debug)]
pub struct Follower<R> {
    /// Last sequence seen on the live stream.
    live: Option<u64>,
    /// Last sequence applied (live or replayed).
    applied: Option<u64>,
    replay: Option<R>,
}

impl<R: Replay> Follower<R> {
    /// A follower that has seen nothing yet, replaying through `replay` if given.
    pub fn new(replay: Option<R>) -> Self {
        Self {
            live: None,
            applied: None,
            replay,
        }
    }

    /// Handles a live message the queue had no room for, once the queue is drained:
    /// replays from the last applied batch, so a quiet publisher's lost tail is not
    /// missed until its next message.
    pub fn on_lost(&mut self, seq: u64, sink: &mut impl Sink) {
        if self.applied.is_none_or(|a| seq > a) {
            self.live = self.live.max(Some(seq));
            self.catch_up(seq, sink);
        }
    }

    /// Handles one live message.
    pub fn on_live(&mut self, seq: u64, payload: &[u8], sink: &mut impl Sink) {
        if self.live.is_some_and(|l| seq <= l) {
            // NB: compared with the live stream, not with what replay applied, which
            // may run ahead of queued live messages.
            Counters::add(&sink.counters().restarts, 1);
            self.reset(sink);
        }
        self.live = Some(seq);
        if seq > self.applied.map_or(0, |a| a + 1) {
            self.catch_up(seq - 1, sink);
        }
        if self.applied.is_none_or(|a| seq > a) {
            self.apply(seq, payload, sink);
        }
    }

    /// Applies replayed batches until `through` is applied. A replay that starts after
    /// the hole (the engine no longer buffers it), or no replay at all, clears the
    /// backend; a replay with a hole of its own (the engine's ROUTER drops replies
    /// beyond its high-water mark) is asked again, up to [`MAX_REPLAYS`] times.
    fn catch_up(&mut self, through: u64, sink: &mut impl Sink) {
        if self.applied.is_some() {
            Counters::add(&sink.counters().gaps, 1);
        }
        for _ in 0..MAX_REPLAYS {
            let start = self.applied.map_or(0, |a| a + 1);
            if start > through {
                return;
            }
            let Some(replay) = &mut self.replay else {
                break;
            };
            Counters::add(&sink.counters().replays, 1);
            let batches = replay.replay(start).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "kv replay failed");
                Vec::new()
            });
            Counters::add(&sink.counters().replayed_batches, batches.len() as u64);
            let Some(first) = batches.first().map(|m| m.seq) else {
                break;
            };
            if first > start && self.applied.is_some() {
                self.reset(sink);
            }
            for (expected, m) in (first..).zip(batches) {
                if m.seq != expected {
                    break;
                }
                if self.applied.is_none_or(|a| m.seq > a) {
                    self.apply(m.seq, &m.payload, sink);
                }
            }
        }
        if self.applied.is_some_and(|a| a < through) {
            // Stale is worse than empty.
            self.reset(sink);
        }
    }

    fn apply(&mut self, seq: u64, payload: &[u8], sink: &mut impl Sink) {
        sink.apply(payload);
        self.applied = Some(seq);
        sink.counters().set_last_seq(Some(seq));
    }

    fn reset(&mut self, sink: &mut impl Sink) {
        sink.clear();
        Counters::add(&sink.counters().clears, 1);
        self.applied = None;
        sink.counters().set_last_seq(None);
    }
}

/// Applies batches of one backend to its model's index.
#[derive(Debug)]
pub struct IndexSink {
    /// The model's index.
    pub index: Arc<parking_lot::RwLock<Index>>,
    /// The backend's slot.
    pub slot: u8,
    /// The model name.
    pub model: String,
    /// The backend's counters.
    pub counters: Arc<Counters>,
    /// The exact-mode hasher, if configured.
    pub exact: Option<ExactHasher>,
    /// The caps on messages and events.
    pub limits: Limits,
    ratio: Ratio,
}

impl IndexSink {
    /// A sink for `slot` of `index`.
    pub fn new(
        index: Arc<parking_lot::RwLock<Index>>,
        slot: u8,
        model: String,
        counters: Arc<Counters>,
        exact: Option<ExactHasher>,
        limits: Limits,
    ) -> Self {
        Self {
            index,
            slot,
            model,
            counters,
            exact,
            limits,
            ratio: Ratio::default(),
        }
    }
}

impl Sink for IndexSink {
    fn apply(&mut self, payload: &[u8]) {
        // NB: live messages were checked whole by the receiver; this also covers replies.
        let max = self.limits.max_message_bytes;
        if payload.len() > max {
            let size = payload.len();
            let detail = format!("{size} bytes, at most {max}");
            self.counters.reject(Reject::TooLarge, &detail);
            return;
        }
        let batch = match decode_batch(payload) {
            Ok(b) => b,
            Err(e) => {
                let reason = match e {
                    DecodeError::Msgpack(_) => Reject::NotMsgpack,
                    _ => Reject::NotABatch,
                };
                self.counters.reject(reason, &e);
                return;
            }
        };
        let target = Target {
            slot: self.slot,
            model: &self.model,
            counters: &self.counters,
            exact: self.exact.as_ref(),
            max_hashes: self.limits.max_hashes_per_event,
        };
        apply_batch(&self.index, &target, &mut self.ratio, &batch);
    }

    fn clear(&mut self) {
        Writer::new(&self.index).clear(self.slot);
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// Where a receiver delivers one backend's messages.
#[derive(Debug, Clone)]
pub struct Route {
    /// The backend's bounded queue.
    pub tx: SyncSender<Message>,
    /// The backend's counters (drops, bad frames).
    pub counters: Arc<Counters>,
    /// The highest sequence dropped for lack of room, plus one (0 = none since the
    /// applier last looked).
    pub lost: Arc<AtomicU64>,
}

impl Route {
    /// Checks a received message's size and frames and queues it.
    fn take(&self, frames: Vec<Vec<u8>>, max_bytes: usize) {
        let size: usize = frames.iter().map(Vec::len).sum();
        if size > max_bytes {
            let detail = format!("{size} bytes, at most {max_bytes}");
            self.counters.reject(Reject::TooLarge, &detail);
            return;
        }
        match parse_live(frames) {
            Some((_, m)) => self.deliver(m),
            None => self.counters.reject(
                Reject::BadFrames,
                &"not 3 frames (topic, 8-byte sequence, payload)",
            ),
        }
    }

    fn deliver(&self, m: Message) {
        let seq = m.seq;
        match self.tx.try_send(m) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                Counters::add(&self.counters.dropped, 1);
                self.lost.fetch_max(seq.saturating_add(1), Relaxed);
            }
        }
    }
}

/// Messages routed by topic (bind mode), shared with the facade so backends can come
/// and go.
pub type Routes = Arc<RwLock<HashMap<Vec<u8>, Route>>>;

/// Where a receiver's SUB socket gets its messages.
#[derive(Debug)]
pub enum Source {
    /// Connect to one backend's PUB socket, keep messages whose topic starts with
    /// `topic`, and deliver them all to `route`.
    Connect {
        /// The engine's PUB endpoint, e.g. `tcp://10.0.0.5:5557`.
        endpoint: String,
        /// Topic prefix to subscribe to (`""` for all).
        topic: String,
        /// The backend's queue.
        route: Route,
    },
    /// Bind `endpoint`; engines connect and each message goes to its topic's route.
    Bind {
        /// The endpoint to bind, e.g. `tcp://127.0.0.1:0`.
        endpoint: String,
        /// Topic -> backend.
        routes: Routes,
        /// Messages whose topic (first frame) no backend claims.
        unrouted: Arc<AtomicU64>,
    },
}

/// A SUB socket, set up and ready for [`receive`].
pub struct Subscriber {
    socket: zmq::Socket,
    source: Source,
    max_message_bytes: usize,
    /// Connect mode: the socket's disconnection events. ZeroMQ does not reconnect after a
    /// protocol error (a frame over `ZMQ_MAXMSGSIZE`), so the receiver does.
    monitor: Option<zmq::Socket>,
    /// Rate limit of the reconnection warning.
    reconnects: Burst,
    /// The endpoint actually bound or connected (the bound port when 0 was asked).
    pub endpoint: String,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// Opens and connects or binds the socket, refusing frames beyond `limits`.
    ///
    /// # Errors
    ///
    /// [`IngestError::Zmq`] when the socket cannot be created, bound or connected.
    pub fn open(ctx: &zmq::Context, source: Source, limits: Limits) -> Result<Self, IngestError> {
        let (ep, topic, bind) = match &source {
            Source::Connect {
                endpoint, topic, ..
            } => (endpoint.clone(), topic.clone(), false),
            Source::Bind { endpoint, .. } => (endpoint.clone(), String::new(), true),
        };
        let socket = ctx.socket(zmq::SUB).map_err(zmq_err("socket", &ep))?;
        socket
            .set_rcvtimeo(POLL.as_millis() as i32)
            .map_err(zmq_err("socket", &ep))?;
        socket.set_linger(0).map_err(zmq_err("socket", &ep))?;
        limits.cap(&socket).map_err(zmq_err("socket", &ep))?;
        socket
            .set_subscribe(topic.as_bytes())
            .map_err(zmq_err("socket", &ep))?;
        if bind {
            socket.bind(&ep).map_err(zmq_err("bind", &ep))?;
        } else {
            socket.connect(&ep).map_err(zmq_err("connect", &ep))?;
        }
        let monitor = if bind {
            None
        } else {
            static MONITORS: AtomicU64 = AtomicU64::new(0);
            let addr = format!("inproc://kv-monitor-{}", MONITORS.fetch_add(1, Relaxed));
            let events = i32::from(zmq::SocketEvent::DISCONNECTED.to_raw());
            socket
                .monitor(&addr, events)
                .map_err(zmq_err("socket", &ep))?;
            let monitor = ctx.socket(zmq::PAIR).map_err(zmq_err("socket", &addr))?;
            monitor.connect(&addr).map_err(zmq_err("connect", &addr))?;
            Some(monitor)
        };
        let endpoint = match socket.get_last_endpoint() {
            Ok(Ok(e)) if bind => e,
            _ => ep,
        };
        Ok(Self {
            socket,
            source,
            max_message_bytes: limits.max_message_bytes,
            monitor,
            reconnects: Burst::default(),
            endpoint,
        })
    }

    /// Reconnects if the monitor saw the connection go (connect mode).
    fn reconnect_if_dropped(&self) {
        let Some(monitor) = &self.monitor else {
            return;
        };
        if monitor.poll(zmq::POLLIN, 0).unwrap_or(0) == 0 {
            return;
        }
        // NB: the event's frames say nothing we need beyond "disconnected".
        while monitor.recv_multipart(zmq::DONTWAIT).is_ok() {}
        if let Some(suppressed) = self.reconnects.admit() {
            tracing::warn!(
                endpoint = %self.endpoint,
                suppressed,
                "kv publisher connection dropped (engine gone, or a frame over \
                 kv.max_message_bytes); reconnecting"
            );
        }
        // NB: fails harmlessly when ZeroMQ already forgot the endpoint.
        let _ = self.socket.disconnect(&self.endpoint);
        if let Err(e) = self.socket.connect(&self.endpoint) {
            tracing::warn!(error = %e, endpoint = %self.endpoint, "kv reconnect failed");
        }
    }
}

/// Reads messages until `stop` is set, validating frames and delivering each to its
/// backend's queue.
pub fn receive(sub: Subscriber, stop: &AtomicBool) {
    while !stop.load(Relaxed) {
        sub.reconnect_if_dropped();
        let frames = match sub.socket.recv_multipart(0) {
            Ok(f) => f,
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, endpoint = %sub.endpoint, "kv subscriber stopped");
                return;
            }
        };
        match &sub.source {
            Source::Connect { route, .. } => route.take(frames, sub.max_message_bytes),
            Source::Bind {
                routes, unrouted, ..
            } => {
                let route = frames.first().and_then(|topic| {
                    let routes = routes.read().unwrap_or_else(|p| p.into_inner());
                    routes.get(topic).cloned()
                });
                match route {
                    Some(r) => r.take(frames, sub.max_message_bytes),
                    None => {
                        unrouted.fetch_add(1, Relaxed);
                    }
                }
            }
        }
    }
}

/// Applies queued messages in order until `stop` is set or the queue closes; when the
/// queue runs dry after drops (`lost`, see [`Route::lost`]), catches up by replay.
pub fn run_applier<R: Replay>(
    rx: &Receiver<Message>,
    lost: &AtomicU64,
    follower: &mut Follower<R>,
    sink: &mut impl Sink,
    stop: &AtomicBool,
) {
    loop {
        match rx.recv_timeout(LOST_CHECK) {
            Ok(m) => follower.on_live(m.seq, &m.payload, sink),
            Err(RecvTimeoutError::Timeout) if !stop.load(Relaxed) => {
                // NB: only with the queue empty, so no older live message is behind it.
                if let Some(seq) = lost.swap(0, Relaxed).checked_sub(1) {
                    follower.on_lost(seq, sink);
                }
            }
            Err(_) => return,
        }
    }
}

/// Stops and joins a set of ingest threads on drop.
#[derive(Debug, Default)]
pub struct Workers {
    /// Set to stop the threads.
    pub stop: Arc<AtomicBool>,
    /// The threads.
    pub threads: Vec<JoinHandle<()>>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for t in self.threads.drain(..) {
            // A panicked ingest thread has nothing left to clean up.
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
