//! The wasmtime engines policies run on, the limits each call runs under, and the upload
//! checks that turn bytes into a ready-to-instantiate policy.
//!
//! Compilation is tiered. An upload is checked and compiled by Winch, wasmtime's
//! single-pass baseline compiler (about 5x faster to compile than Cranelift, code about
//! 1.5x slower), and serves at once; Cranelift compiles it again in the background and the
//! optimized code replaces the baseline code when ready (see `registry`). Where Winch is
//! not available (or [`Limits::baseline_tier`] is off), uploads compile with Cranelift
//! only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Engine, OptLevel, ProfilingStrategy, ResourceLimiter, Strategy};

use super::Error;
use super::bindings::{filter, host, placer, scorer};
use super::wasi::{Output, Stdio, Virtual};

/// Budgets and caps for every policy.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Fuel (roughly, Wasm instructions) one call may use. Deterministic: the same input
    /// always finishes or always runs out. Default 10 million.
    pub fuel_per_call: u64,
    /// Wall-clock backstop per call. Default 100 ms: fuel is the budget; the deadline only
    /// catches what fuel cannot (a host preempting the thread counts against it too).
    pub deadline: Duration,
    /// Linear memory per instance, bytes. Default 32 MiB.
    pub memory_bytes: usize,
    /// Table elements per instance. Default 100 000.
    pub table_elements: usize,
    /// Largest accepted upload, bytes. Default 32 MiB: a Python policy built by
    /// componentize-py carries CPython and is ~18 MB; a Rust one is ~60-200 KB.
    pub max_upload_bytes: usize,
    /// Longest the compile an upload waits for (the baseline one, or the optimized one
    /// without a baseline tier) may take before the upload is refused, plus one second
    /// per MiB of component: compile time grows with size. Default 10 s (so 28 s for
    /// CPython's ~18 MB, which Winch compiles in ~3.5-4.5 s on a loaded 2-core machine).
    pub compile_timeout: Duration,
    /// Longest an optimized compile in the background (or when restoring a version
    /// whose artifact is missing) may take; past it the version stays on baseline code.
    /// Default 120 s (Cranelift compiles CPython in ~33 s on one thread of a loaded
    /// 2-core machine).
    pub optimize_timeout: Duration,
    /// Calls after which a warm instance is retired. Default 10 000.
    pub max_calls_per_instance: u32,
    /// Log lines kept per call. Default 32.
    pub log_lines_per_call: usize,
    /// Consecutive failures after which a stage is parked. Default 5.
    pub park_after_failures: u32,
    /// How long a parked stage stays parked before one trial call decides whether it is
    /// unparked (success) or parked again (failure). Default 30 s.
    pub park_for: Duration,
    /// Serve uploads on baseline-compiled code while the optimized code compiles in the
    /// background. Default on; off, an upload is active only once Cranelift is done.
    pub baseline_tier: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel_per_call: 10_000_000,
            deadline: Duration::from_millis(100),
            memory_bytes: 32 << 20,
            table_elements: 100_000,
            max_upload_bytes: 32 << 20,
            compile_timeout: Duration::from_secs(10),
            optimize_timeout: Duration::from_secs(120),
            max_calls_per_instance: 10_000,
            log_lines_per_call: 32,
            park_after_failures: 5,
            park_for: Duration::from_secs(30),
            baseline_tier: true,
        }
    }
}

/// Which world a policy targets.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// Removes backends.
    Filter,
    /// Rates backends.
    Scorer,
    /// Takes the whole decision.
    Placer,
}

impl PolicyKind {
    /// The world's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Filter => "filter",
            PolicyKind::Scorer => "scorer",
            PolicyKind::Placer => "placer",
        }
    }
}

/// The typed pre-instantiated form of a policy, one variant per world.
#[derive(Clone)]
pub(crate) enum KindPre {
    Filter(filter::FilterPre<HostState>),
    Scorer(scorer::ScorerPre<HostState>),
    Placer(placer::PlacerPre<HostState>),
}

impl KindPre {
    pub(crate) fn kind(&self) -> PolicyKind {
        match self {
            KindPre::Filter(_) => PolicyKind::Filter,
            KindPre::Scorer(_) => PolicyKind::Scorer,
            KindPre::Placer(_) => PolicyKind::Placer,
        }
    }

    /// The engine the code was compiled for; its stores must come from it.
    pub(crate) fn engine(&self) -> &Engine {
        match self {
            KindPre::Filter(p) => p.instance_pre().engine(),
            KindPre::Scorer(p) => p.instance_pre().engine(),
            KindPre::Placer(p) => p.instance_pre().engine(),
        }
    }
}

/// Which compiler made a policy's code.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Winch, the single-pass baseline compiler: what an upload serves on first.
    Baseline,
    /// Cranelift, the optimizing compiler.
    #[default]
    Optimized,
}

/// A compiled, type-checked policy, ready to instantiate.
pub(crate) struct Compiled {
    pub pre: KindPre,
    pub tier: Tier,
    /// The optimized precompiled artifact, kept so a restart skips compilation; `None`
    /// for baseline code, which is never stored.
    pub artifact: Option<Vec<u8>>,
    pub compile_time: Duration,
}

/// Per-store state: the memory limiter and the log lines of the current call.
pub(crate) struct HostState {
    memory_bytes: usize,
    table_elements: usize,
    /// Set when the guest asked for more memory or table than allowed.
    pub limit_hit: bool,
    /// Largest linear memory the instance has had, bytes.
    pub peak_memory_bytes: usize,
    pub logs: Vec<String>,
    pub dropped_logs: u32,
    log_cap: usize,
    /// Partial lines written to stdout and stderr, not yet in `logs`.
    stdout_line: Vec<u8>,
    stderr_line: Vec<u8>,
    /// The last [`STDERR_TAIL_BYTES`] written to stderr in the call: where a panic's
    /// message is, whatever the guest logged before it.
    pub stderr_tail: String,
    /// The virtual WASI's clock and random stream.
    wasi: Virtual,
    /// What `request-prefix` answers during the current call.
    prefix: Option<host::PrefixGroup>,
}

/// Bytes of stderr kept for the fault of a failed call.
const STDERR_TAIL_BYTES: usize = 1024;

impl HostState {
    pub(crate) fn new(limits: &Limits) -> Self {
        HostState {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            limit_hit: false,
            peak_memory_bytes: 0,
            logs: Vec::new(),
            dropped_logs: 0,
            log_cap: limits.log_lines_per_call,
            stdout_line: Vec::new(),
            stderr_line: Vec::new(),
            stderr_tail: String::new(),
            wasi: Virtual::default(),
            prefix: None,
        }
    }

    /// Prepares the state for one call: clears the previous call's log, rewinds the
    /// virtual clock and random stream, seeded with `seed` (the request id, or 0), and
    /// sets the request's prefix group (`None` outside a decision).
    pub(crate) fn begin_call(&mut self, seed: u64, prefix: Option<host::PrefixGroup>) {
        self.clear_logs();
        self.wasi.reset(seed);
        self.prefix = prefix;
    }

    /// Clears what one call logged.
    pub(crate) fn clear_logs(&mut self) {
        self.logs.clear();
        self.dropped_logs = 0;
        self.stdout_line.clear();
        self.stderr_line.clear();
        self.stderr_tail.clear();
    }

    /// Adds a log line, cut to [`LOG_LINE_BYTES`], unless the call's cap is reached.
    fn push_log(&mut self, level: &str, mut line: String) {
        if self.logs.len() >= self.log_cap {
            self.dropped_logs += 1;
            return;
        }
        if line.len() > LOG_LINE_BYTES {
            line.truncate(floor_char_boundary(&line, LOG_LINE_BYTES));
        }
        self.logs.push(format!("{level}: {line}"));
    }
}

impl Output for HostState {
    /// Files `bytes` the guest wrote to `to`: each complete line becomes a log line
    /// (`stdout: ...`, `stderr: ...`) under the same caps as the `log` import; stderr is
    /// also kept in `stderr_tail`.
    fn capture(&mut self, to: Stdio, bytes: &[u8]) {
        if to == Stdio::Stderr {
            let text = String::from_utf8_lossy(bytes);
            let text = tail(&text, STDERR_TAIL_BYTES);
            let keep = STDERR_TAIL_BYTES - text.len();
            let cut = self.stderr_tail.len() - tail(&self.stderr_tail, keep).len();
            self.stderr_tail.drain(..cut);
            self.stderr_tail.push_str(text);
        }
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let (level, pending) = match to {
                Stdio::Stdout => ("stdout", &mut self.stdout_line),
                Stdio::Stderr => ("stderr", &mut self.stderr_line),
            };
            let room = LOG_LINE_BYTES.saturating_sub(pending.len());
            pending.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.ends_with(b"\n") {
                let line = String::from_utf8_lossy(pending).trim_end().to_owned();
                pending.clear();
                self.push_log(level, line);
            }
        }
    }

    fn virtual_state(&mut self) -> &mut Virtual {
        &mut self.wasi
    }
}

/// The largest char boundary of `s` at or below `at`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    let mut cut = at.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

/// The last at most `max` bytes of `s`, cut at a char boundary.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.limit_hit = true;
            return Ok(false);
        }
        self.peak_memory_bytes = self.peak_memory_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            self.limit_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        // NB: a component instantiates a handful of core instances (the guest, its
        // adapter shims); more than this is not a policy.
        32
    }

    fn memories(&self) -> usize {
        4
    }

    fn tables(&self) -> usize {
        8
    }
}

/// Longest log line kept, bytes.
const LOG_LINE_BYTES: usize = 512;

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) {
        self.push_log(level_name(level), message);
    }

    fn request_prefix(&mut self) -> Option<host::PrefixGroup> {
        self.prefix
    }
}

impl super::bindings::types::Host for HostState {}

fn level_name(level: host::Level) -> &'static str {
    match level {
        host::Level::Trace => "trace",
        host::Level::Debug => "debug",
        host::Level::Info => "info",
        host::Level::Warn => "warn",
        host::Level::Error => "error",
    }
}

/// Import namespaces a policy may name. Of WASI, what a std guest or an interpreter
/// links in gets the virtual, deterministic shims in `wasi` (an empty environment,
/// output into the call's log, a frozen clock, seeded randomness, no preopened
/// directories); every other function of them traps, so nothing of the host is granted.
const TOLERATED_IMPORTS: &[&str] = &[
    "switchyard:policy/",
    "wasi:io/",
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
];

/// How often the epoch ticks for `deadline`: a tenth of it, between 1 and 10 ms.
/// Deadlines are counted in ticks, so a call is cut within a tick of its deadline.
///
/// NB: every tick wakes a core, busy or not; a fixed 1 ms tick was 1000 wake-ups a second
/// on an idle router, preempting request threads on a small machine.
fn epoch_tick(deadline: Duration) -> Duration {
    (deadline / 10).clamp(Duration::from_millis(1), Duration::from_millis(10))
}

/// Set (to anything) to write `/tmp/perf-<pid>.map`, so `perf report` names the functions
/// of policies (built unstripped) and wasmtime's trampolines.
const PERF_MAP_ENV: &str = "SWITCHYARD_PERF_MAP";

/// One compiler configuration: its engine and a linker with the host interface.
struct Compiler {
    engine: Engine,
    linker: Linker<HostState>,
}

impl Compiler {
    /// `parallel`: compile a component's functions on wasmtime's thread pool (rayon),
    /// else all on the calling thread.
    fn new(strategy: Strategy, parallel: bool) -> Result<Self, Error> {
        let mut config = Config::new();
        config
            .strategy(strategy)
            .parallel_compilation(parallel)
            .consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .max_wasm_stack(512 << 10);
        if std::env::var_os(PERF_MAP_ENV).is_some() {
            config.profiler(ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| Error::Compile(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| Error::Compile(format!("{e:#}")))?;
        Ok(Compiler { engine, linker })
    }
}

/// The optimizing and baseline compilers, and the limits.
pub(crate) struct PolicyEngine {
    optimized: Compiler,
    /// `None` where Winch is unavailable or the baseline tier is off.
    baseline: Option<Compiler>,
    pub limits: Limits,
    /// How often the epoch ticks ([`epoch_tick`]).
    tick: Duration,
    /// `precompile_compatibility_hash` as hex: artifacts made under another hash are
    /// recompiled from the stored component.
    pub compat: String,
}

impl PolicyEngine {
    /// Builds the engines and starts the epoch ticker thread.
    pub(crate) fn new(limits: Limits) -> Result<Arc<Self>, Error> {
        let baseline = if limits.baseline_tier {
            Compiler::new(Strategy::Winch, true)
                .inspect_err(|e| tracing::info!(error = %e, "no baseline compiler; uploads compile optimized only"))
                .ok()
        } else {
            None
        };
        // NB: with a baseline tier, Cranelift compiles only in the background, one
        // component at a time on its own thread. On the shared thread pool a large
        // component (CPython, ~20 s) would hold every worker, and an upload's Winch
        // compile queued behind it would wait for all of it.
        let optimized = Compiler::new(Strategy::Cranelift, baseline.is_none())?;
        let compat = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            optimized
                .engine
                .precompile_compatibility_hash()
                .hash(&mut h);
            format!("{:016x}", h.finish())
        };
        let optimized_weak = optimized.engine.weak();
        let baseline_weak = baseline.as_ref().map(|c| c.engine.weak());
        let tick = epoch_tick(limits.deadline);
        std::thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || {
                // NB: ticks while the optimizing engine lives; the baseline one is
                // dropped with it.
                while let Some(engine) = optimized_weak.upgrade() {
                    engine.increment_epoch();
                    if let Some(baseline) = baseline_weak.as_ref().and_then(|w| w.upgrade()) {
                        baseline.increment_epoch();
                    }
                    drop(engine);
                    std::thread::sleep(tick);
                }
            })
            .map_err(|e| Error::Compile(format!("epoch thread: {e}")))?;
        Ok(Arc::new(PolicyEngine {
            optimized,
            baseline,
            limits,
            tick,
            compat,
        }))
    }

    /// Epoch ticks a call may run for.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        (self.limits.deadline.as_micros() / self.tick.as_micros()).max(1) as u64
    }

    /// Checks and compiles an upload: size cap, component header, bounded compile,
    /// imports, and the world it fits. Compiles with the baseline compiler when there is
    /// one, else optimized.
    ///
    /// # Errors
    ///
    /// The first check that fails.
    pub(crate) fn compile(&self, bytes: &[u8]) -> Result<Compiled, Error> {
        let timeout = self.limits.compile_timeout + Duration::from_secs((bytes.len() >> 20) as u64);
        match &self.baseline {
            Some(baseline) => self.compile_with(baseline, Tier::Baseline, bytes, timeout),
            None => self.compile_with(&self.optimized, Tier::Optimized, bytes, timeout),
        }
    }

    /// [`Self::compile`] with the optimizing compiler, the code that is stored, bounded
    /// by [`Limits::optimize_timeout`]: for the background recompile and restores.
    ///
    /// # Errors
    ///
    /// The first check that fails.
    pub(crate) fn compile_optimized(&self, bytes: &[u8]) -> Result<Compiled, Error> {
        let timeout = self.limits.optimize_timeout;
        self.compile_with(&self.optimized, Tier::Optimized, bytes, timeout)
    }

    fn compile_with(
        &self,
        compiler: &Compiler,
        tier: Tier,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<Compiled, Error> {
        if bytes.len() > self.limits.max_upload_bytes {
            return Err(Error::TooLarge {
                size: bytes.len(),
                max: self.limits.max_upload_bytes,
            });
        }
        check_header(bytes)?;
        let started = Instant::now();
        let artifact = precompile_bounded(&compiler.engine, bytes, timeout)?;
        let compile_time = started.elapsed();
        let pre = Self::load_with(compiler, &artifact)?;
        Ok(Compiled {
            pre,
            tier,
            artifact: (tier == Tier::Optimized).then_some(artifact),
            compile_time,
        })
    }

    /// Loads an optimized artifact this engine produced, and type-checks it.
    ///
    /// # Errors
    ///
    /// When the artifact is not loadable or fits no world.
    pub(crate) fn load(&self, artifact: &[u8]) -> Result<KindPre, Error> {
        Self::load_with(&self.optimized, artifact)
    }

    fn load_with(compiler: &Compiler, artifact: &[u8]) -> Result<KindPre, Error> {
        // SAFETY: artifacts come only from `precompile_bounded` on this compiler's engine
        // (or the state directory it writes, checked against `compat`); user bytes never
        // reach here unless compiled first.
        let component = unsafe { Component::deserialize(&compiler.engine, artifact) }
            .map_err(|e| Error::Compile(format!("{e:#}")))?;
        check_imports(&compiler.engine, &component)?;
        let mut linker = compiler.linker.clone();
        super::wasi::define(&mut linker, &compiler.engine, &component)
            .map_err(|e| Error::Compile(format!("{e:#}")))?;
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| Error::Compile(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| Error::WrongWorld(format!("{e:#}")))?;
        classify(pre)
    }
}

/// Compiles `bytes` on a worker thread, giving up after `timeout`.
fn precompile_bounded(engine: &Engine, bytes: &[u8], timeout: Duration) -> Result<Vec<u8>, Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    let engine = engine.clone();
    let owned = bytes.to_vec();
    std::thread::Builder::new()
        .name("policy-compile".into())
        .spawn(move || {
            let _ = tx.send(engine.precompile_component(&owned));
        })
        .map_err(|e| Error::Compile(format!("compile thread: {e}")))?;
    // NB: a compile that overruns keeps its thread until it finishes; wasmtime offers
    // no way to cancel it. The upload is refused either way.
    match rx.recv_timeout(timeout) {
        Ok(Ok(artifact)) => Ok(artifact),
        Ok(Err(e)) => Err(Error::Compile(format!("{e:#}"))),
        Err(_) => Err(Error::Compile(format!("took longer than {timeout:?}"))),
    }
}

fn check_imports(engine: &Engine, component: &Component) -> Result<(), Error> {
    let ty = component.component_type();
    let forbidden: Vec<&str> = ty
        .imports(engine)
        .map(|(name, _)| name)
        .filter(|name| !TOLERATED_IMPORTS.iter().any(|p| name.starts_with(p)))
        .collect();
    if forbidden.is_empty() {
        Ok(())
    } else {
        Err(Error::ForbiddenImport(forbidden.join(", ")))
    }
}

fn check_header(bytes: &[u8]) -> Result<(), Error> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE: [u8; 4] = [1, 0, 0, 0];
    const COMPONENT: [u8; 4] = [0x0d, 0, 1, 0];
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(Error::NotWasm);
    }
    match <[u8; 4]>::try_from(&bytes[4..8]) {
        Ok(v) if v == CORE => Err(Error::CoreModule),
        Ok(v) if v == COMPONENT => Ok(()),
        _ => Err(Error::NotWasm),
    }
}

fn classify(pre: InstancePre<HostState>) -> Result<KindPre, Error> {
    let as_filter = filter::FilterPre::new(pre.clone()).map(KindPre::Filter);
    let as_scorer = || scorer::ScorerPre::new(pre.clone()).map(KindPre::Scorer);
    let as_placer = || placer::PlacerPre::new(pre.clone()).map(KindPre::Placer);
    as_filter
        .or_else(|_| as_scorer())
        .or_else(|_| as_placer())
        .map_err(|e| Error::WrongWorld(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_ticks_a_tenth_of_the_deadline_within_1_to_10_ms() {
        let ms = Duration::from_millis;
        assert_eq!(
            epoch_tick(ms(100)),
            ms(10),
            "the default: 100 wake-ups a second"
        );
        assert_eq!(epoch_tick(ms(30)), ms(3));
        assert_eq!(epoch_tick(ms(2)), ms(1));
        assert_eq!(epoch_tick(Duration::from_secs(10)), ms(10));
    }

    #[test]
    fn guest_output_becomes_bounded_log_lines_and_a_stderr_tail() {
        let mut state = HostState::new(&Limits {
            log_lines_per_call: 3,
            ..Limits::default()
        });
        state.capture(
            Stdio::Stderr,
            b"thread 'main' panicked at src/lib.rs:3:5:\nbo",
        );
        state.capture(Stdio::Stderr, b"om\n");
        state.capture(Stdio::Stdout, &[b'x'; 2 * LOG_LINE_BYTES]);
        state.capture(Stdio::Stdout, b"\nlast\n");
        assert_eq!(
            state.logs[..2],
            [
                "stderr: thread 'main' panicked at src/lib.rs:3:5:",
                "stderr: boom"
            ]
        );
        assert_eq!(state.logs[2].len(), "stdout: ".len() + LOG_LINE_BYTES);
        assert_eq!(state.dropped_logs, 1, "the cap holds for guest output too");
        assert!(
            state
                .stderr_tail
                .ends_with("panicked at src/lib.rs:3:5:\nboom\n")
        );

        state.capture(Stdio::Stderr, &[b'y'; 3 * STDERR_TAIL_BYTES]);
        assert_eq!(state.stderr_tail.len(), STDERR_TAIL_BYTES);
        state.clear_logs();
        assert!(state.logs.is_empty() && state.stderr_tail.is_empty());
    }

    #[test]
    fn header_checks_tell_module_from_component() {
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(Error::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(matches!(check_header(b"hello world"), Err(Error::NotWasm)));
        assert!(matches!(check_header(b"\0as"), Err(Error::NotWasm)));
    }
}
