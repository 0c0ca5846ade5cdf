//! The engine loop: one tokio task per backend that steps the [`Scheduler`] on a
//! simulated clock, sleeping to each step's deadline, and feeds every request's stream
//! through a channel.
//!
//! Simulated time follows wall time scaled by `speed` while the engine is idle; while it
//! is busy, simulated time advances by exactly each step's modelled duration and the loop
//! sleeps until the wall instant that corresponds. A step that completes after its
//! deadline is *lag*: it is recorded, and the schedule is kept (later steps catch up)
//! rather than shifted, so lag never accumulates into the simulated latencies.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use super::cache::{BlockId, CacheEvent};
use super::events::Publisher;
use super::metrics::Metrics;
use super::scheduler::{Emission, KvCache, Scheduler, SeqId, Submission, Usage};

/// What a request's stream receives from the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// Every output token up to and including `through` (0 = the first) is generated.
    /// With a stream interval of k, this comes for the first token and then every k-th.
    Tokens {
        /// Position in the output of the last token released.
        through: usize,
    },
    /// The request completed.
    Finished {
        /// Token counts.
        usage: Usage,
        /// KV blocks that held the prompt.
        prompt_blocks: Vec<BlockId>,
    },
}

/// Cached block hashes and occupancy of an engine's KV cache at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSnapshot {
    /// Each cached block hash with the number of physical blocks holding it.
    pub hashes: HashMap<u64, usize>,
    /// Fraction of blocks in use.
    pub usage: f64,
    /// Total blocks (0 with a slot cache).
    pub num_blocks: usize,
    /// With a slot cache, whether each slot is running a request; empty with blocks.
    pub slots_processing: Vec<bool>,
}

enum Command {
    Submit {
        sub: Submission,
        arrived: Instant,
        tx: mpsc::UnboundedSender<StreamEvent>,
    },
    Abort(SeqId),
    Snapshot(oneshot::Sender<CacheSnapshot>),
    ResetPrefixCache,
}

/// Sends requests to an engine loop. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Submit { .. } => "Submit",
            Command::Abort(_) => "Abort",
            Command::Snapshot(_) => "Snapshot",
            Command::ResetPrefixCache => "ResetPrefixCache",
        })
    }
}

impl EngineHandle {
    /// Queues a request; its tokens arrive on the returned receiver, which ends early only
    /// if the engine stops. Dropping the receiver aborts the request at the next token.
    pub fn submit(&self, sub: Submission) -> mpsc::UnboundedReceiver<StreamEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.tx.send(Command::Submit {
            sub,
            arrived: Instant::now(),
            tx,
        });
        rx
    }

    /// Drops a request.
    pub fn abort(&self, id: SeqId) {
        let _ = self.tx.send(Command::Abort(id));
    }

    /// Forgets every cached prefix.
    pub fn reset_prefix_cache(&self) {
        let _ = self.tx.send(Command::ResetPrefixCache);
    }

    /// The cache's contents as of the last completed step, or `None` if the engine stopped.
    pub async fn snapshot(&self) -> Option<CacheSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Snapshot(tx)).ok()?;
        rx.await.ok()
    }
}

/// Maps between wall instants and simulated milliseconds.
#[derive(Debug, Clone, Copy)]
struct Clock {
    origin: Instant,
    speed: f64,
}

impl Clock {
    fn sim_ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.origin).as_secs_f64() * 1e3 * self.speed
    }

    fn wall(&self, sim_ms: f64) -> Instant {
        self.origin + Duration::from_secs_f64((sim_ms / 1e3 / self.speed).max(0.0))
    }
}

/// The cores a fleet's engines share, as CPU engines on one host do (`llama-server -t 1`
/// processes on a small machine): processor sharing, so while more engines run a step
/// than there are cores, every running step advances at cores / running of real time.
/// Cheap to clone; clones share the cores.
#[derive(Debug, Clone)]
pub struct SharedCores(Arc<CoresInner>);

#[derive(Debug)]
struct CoresInner {
    cores: usize,
    state: std::sync::Mutex<CoresState>,
    /// Told whenever an engine starts or ends a step: the others' pace changed.
    changed: Notify,
}

#[derive(Debug)]
struct CoresState {
    /// Engines running a step.
    running: usize,
    /// Work (wall seconds at full speed) each running step has done since the cores
    /// were made.
    done: f64,
    /// When `done` was last brought up to date.
    at: Instant,
}

impl CoresState {
    /// The pace of each running step: 1 while every one has a core.
    fn pace(&self, cores: usize) -> f64 {
        if self.running <= cores {
            1.0
        } else {
            cores as f64 / self.running as f64
        }
    }

    fn catch_up(&mut self, now: Instant, cores: usize) {
        self.done += now.saturating_duration_since(self.at).as_secs_f64() * self.pace(cores);
        self.at = now;
    }
}

impl SharedCores {
    /// `cores` cores (at least 1) for the engines that get a clone.
    pub fn new(cores: usize) -> SharedCores {
        SharedCores(Arc::new(CoresInner {
            cores: cores.max(1),
            state: std::sync::Mutex::new(CoresState {
                running: 0,
                done: 0.0,
                at: Instant::now(),
            }),
            changed: Notify::new(),
        }))
    }

    /// Cores shared.
    pub fn cores(&self) -> usize {
        self.0.cores
    }

    /// Runs a step of `work` at full speed on the shared cores, due to start at `start`
    /// (the time since then, a wake-up delay, counts as done); returns when it is done,
    /// the instant it was done (before any wake-up delay).
    async fn step(&self, start: Instant, work: Duration) -> Instant {
        let inner = &self.0;
        let (running, target) = {
            let now = Instant::now();
            let mut s = inner.state.lock().expect("shared cores");
            s.catch_up(now, inner.cores);
            s.running += 1;
            let late = now.saturating_duration_since(start).min(work);
            (Running(inner), s.done + (work - late).as_secs_f64())
        };
        inner.changed.notify_waiters();
        let finished = loop {
            // NB: registered before the state is read, so a change in between wakes it.
            let changed = inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (left, pace, at) = {
                let mut s = inner.state.lock().expect("shared cores");
                s.catch_up(Instant::now(), inner.cores);
                (target - s.done, s.pace(inner.cores), s.at)
            };
            if left <= 0.0 {
                break at - Duration::from_secs_f64((-left / pace).min(work.as_secs_f64()));
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs_f64(left / pace)) => {}
                () = changed => {}
            }
        };
        drop(running);
        finished
    }
}

/// A step running on [`SharedCores`]; dropping it ends the step, also when the engine
/// task is aborted mid-step (a crash fault), so the others do not slow down for good.
struct Running<'a>(&'a CoresInner);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        {
            let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
            s.catch_up(Instant::now(), self.0.cores);
            s.running -= 1;
        }
        self.0.changed.notify_waiters();
    }
}

struct Stream {
    tx: mpsc::UnboundedSender<StreamEvent>,
    arrival_ms: f64,
    last_ms: f64,
}

/// The state the engine task owns.
struct Engine {
    scheduler: Scheduler,
    clock: Clock,
    now_ms: f64,
    metrics: Arc<Metrics>,
    publisher: Option<Publisher>,
    streams: HashMap<SeqId, Stream>,
    /// Tokens per stream release (vLLM's `--stream-interval`), at least 1.
    stream_interval: usize,
    /// The cores shared with the fleet's other engines; `None`: an accelerator of its own.
    host: Option<SharedCores>,
}

/// The runtime every engine loop of the process runs on: one dedicated thread.
///
/// NB: engine steps must not queue behind the thousands of HTTP stream tasks of the
/// caller's runtime; on their own thread they get an OS share of the CPU and keep their
/// schedule even when token delivery falls behind.
fn engine_runtime() -> std::io::Result<&'static Handle> {
    static RUNTIME: OnceLock<Handle> = OnceLock::new();
    if let Some(handle) = RUNTIME.get() {
        return Ok(handle);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("sim-engines".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    // A racing caller may have set it first; its thread then serves both.
    Ok(RUNTIME.get_or_init(|| handle))
}

/// Starts an engine loop on the engines' runtime thread; it runs until every handle is
/// dropped (or the task is aborted). Streams get their tokens `stream_interval` at a time
/// (after the first, which is released at once). With `host`, its steps stretch while
/// more of the fleet's engines step than there are cores ([`SharedCores`]).
///
/// # Errors
///
/// When the engines' runtime thread cannot be started.
pub fn spawn(
    scheduler: Scheduler,
    speed: f64,
    metrics: Arc<Metrics>,
    publisher: Option<Publisher>,
    stream_interval: usize,
    host: Option<SharedCores>,
) -> std::io::Result<(EngineHandle, tokio::task::JoinHandle<()>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let engine = Engine {
        scheduler,
        clock: Clock {
            origin: Instant::now(),
            speed,
        },
        now_ms: 0.0,
        metrics,
        publisher,
        streams: HashMap::new(),
        stream_interval: stream_interval.max(1),
        host,
    };
    Ok((EngineHandle { tx }, engine_runtime()?.spawn(engine.run(rx))))
}

impl Engine {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        // Set when a step could schedule nothing (no free blocks): wait for a change.
        let mut stalled = false;
        loop {
            if stalled || !self.scheduler.has_runnable() {
                stalled = false;
                let command = match self.scheduler.next_transfer_ms() {
                    Some(t) => tokio::select! {
                        c = rx.recv() => c.map(Some),
                        () = sleep_until(self.clock.wall(t)) => Some(None),
                    },
                    None => rx.recv().await.map(Some),
                };
                match command {
                    None => return,
                    Some(Some(c)) => {
                        // Idle: simulated time catches up with the request's arrival (not
                        // with the later instant this task woke up, which would charge
                        // the wake-up delay to the request), or with the wall clock.
                        let arrival_ms = self.handle(c);
                        let caught_up =
                            arrival_ms.unwrap_or_else(|| self.clock.sim_ms(Instant::now()));
                        self.now_ms = self.now_ms.max(caught_up);
                    }
                    // A transfer completed: resume at its simulated deadline, not at the
                    // (slightly later) instant the timer fired.
                    Some(None) => {
                        self.now_ms = self
                            .now_ms
                            .max(self.scheduler.next_transfer_ms().unwrap_or(self.now_ms));
                    }
                }
            }
            while let Ok(c) = rx.try_recv() {
                self.handle(c);
            }
            if !self.scheduler.has_runnable()
                && self
                    .scheduler
                    .next_transfer_ms()
                    .is_none_or(|t| t > self.now_ms)
            {
                continue;
            }
            let out = self.scheduler.step(self.now_ms);
            if out.batch_size == 0 && out.emissions.is_empty() && out.events.is_empty() {
                stalled = true;
                continue;
            }
            let deadline = match &self.host {
                None => {
                    self.now_ms += out.duration_ms;
                    let deadline = self.clock.wall(self.now_ms);
                    sleep_until(deadline).await;
                    deadline
                }
                Some(host) => {
                    let work = Duration::from_secs_f64(out.duration_ms / 1e3 / self.clock.speed);
                    let finished = host.step(self.clock.wall(self.now_ms), work).await;
                    self.now_ms = self.now_ms.max(self.clock.sim_ms(finished));
                    finished
                }
            };
            let lag = Instant::now().saturating_duration_since(deadline);
            self.metrics.observe_lag(lag.as_secs_f64());
            self.deliver(out.emissions);
            self.metrics.record_stats(&self.scheduler.stats());
            self.publish(out.events);
        }
    }

    /// Applies a command; a submission returns its simulated arrival time.
    fn handle(&mut self, command: Command) -> Option<f64> {
        match command {
            Command::Submit { sub, arrived, tx } => {
                let arrival_ms = self.clock.sim_ms(arrived);
                self.streams.insert(
                    sub.id,
                    Stream {
                        tx,
                        arrival_ms,
                        last_ms: arrival_ms,
                    },
                );
                self.scheduler.submit(sub);
                return Some(arrival_ms);
            }
            Command::Abort(id) => {
                self.streams.remove(&id);
                self.scheduler.abort(id);
            }
            Command::Snapshot(reply) => {
                let snapshot = match self.scheduler.kv() {
                    KvCache::Blocks(cache) => CacheSnapshot {
                        hashes: cache.cached_hashes(),
                        usage: cache.usage(),
                        num_blocks: cache.num_blocks(),
                        slots_processing: Vec::new(),
                    },
                    KvCache::Slots(slots) => CacheSnapshot {
                        hashes: HashMap::new(),
                        usage: slots.usage(),
                        num_blocks: 0,
                        slots_processing: (0..slots.num_slots())
                            .map(|id| slots.is_processing(id))
                            .collect(),
                    },
                };
                let _ = reply.send(snapshot);
            }
            Command::ResetPrefixCache => {
                let events = self.scheduler.reset_prefix_cache();
                self.publish(events);
            }
        }
        None
    }

    fn deliver(&mut self, emissions: Vec<Emission>) {
        let now = self.now_ms;
        let mut gone = Vec::new();
        for e in emissions {
            match e {
                Emission::Token { seq, index, .. } => {
                    let Some(stream) = self.streams.get_mut(&seq) else {
                        continue;
                    };
                    if index == 0 {
                        self.metrics
                            .observe_first_token((now - stream.arrival_ms).max(0.0) / 1e3);
                    } else {
                        self.metrics.observe_token((now - stream.last_ms) / 1e3);
                    }
                    stream.last_ms = now;
                    let release = index == 0 || (index + 1) % self.stream_interval == 0;
                    if release
                        && stream
                            .tx
                            .send(StreamEvent::Tokens { through: index })
                            .is_err()
                    {
                        gone.push(seq);
                    }
                }
                Emission::Finished {
                    seq,
                    usage,
                    prompt_blocks,
                } => {
                    let Some(stream) = self.streams.remove(&seq) else {
                        continue;
                    };
                    self.metrics.observe_finished(
                        (now - stream.arrival_ms).max(0.0) / 1e3,
                        usage.prompt_tokens,
                    );
                    let _ = stream.tx.send(StreamEvent::Finished {
                        usage,
                        prompt_blocks,
                    });
                }
            }
        }
        for seq in gone {
            self.streams.remove(&seq);
            self.scheduler.abort(seq);
        }
    }

    fn publish(&self, events: Vec<CacheEvent>) {
        if let Some(p) = &self.publisher {
            p.publish(events);
        }
    }
}
