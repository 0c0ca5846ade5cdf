//! A stage: one policy version with its config, and the warm instances that run it.
//!
//! Instances are reused across calls (a fresh one costs ~15 us, a call on a warm one
//! ~2 us). Each is dropped after any failure (a trapped store is poisoned), after
//! `max_calls_per_instance` calls, and once its version's optimized code has replaced
//! the baseline code it was made from. The pool holds at most one idle instance per
//! thread that has decided concurrently, so in practice one per worker thread.
//!
//! Parking: after `park_after_failures` consecutive failures a stage is parked for
//! `park_for`; its calls fail at once with [`PolicyFault::Parked`] and the pipeline
//! applies the tenant's failure mode. Once the period is over, one call is let through as
//! a trial: a success unparks the stage, a failure parks it for another period. Parking
//! is never permanent, so a client whose inputs make a policy fail cannot switch it off
//! for good.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::{Store, Trap};

use super::bindings::{filter, host, placer, scorer, types};
use super::engine::{HostState, KindPre, PolicyEngine, Tier};
use super::facts::{FleetFacts, Placement, Role};
use super::registry::{Code, LoadedVersion};
use super::{Error, Fault, PolicyFault, PolicyKind};

/// What one successful call cost and said.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallReport {
    /// Fuel the call used.
    pub fuel_used: u64,
    /// Log lines the policy wrote, as `level: message`.
    pub logs: Vec<String>,
    /// Log lines over the per-call cap, counted and dropped.
    pub dropped_logs: u32,
    /// Largest linear memory the instance has had so far, bytes.
    pub peak_memory_bytes: usize,
    /// Which compiler's code ran the call.
    pub tier: Tier,
}

/// What a policy returned, whatever its world.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A filter's exclusions, as (fleet index, reason).
    Exclusions(Vec<(u32, String)>),
    /// A scorer's scores, one per candidate.
    Scores(Vec<f32>),
    /// A placer's placement.
    Placement(Placement),
}

enum Exports {
    Filter(filter::Filter),
    Scorer(scorer::Scorer),
    Placer(placer::Placer),
}

struct Warm {
    /// The code the instance runs; once the version's code is swapped (baseline to
    /// optimized) the instance is retired.
    code: Arc<Code>,
    store: Store<HostState>,
    exports: Exports,
    fleet_generation: Option<u64>,
    calls: u32,
    /// Row buffer refilled for every call, so a call allocates nothing for it.
    candidates: types::Candidates,
}

/// One policy version with its config, ready to call.
pub struct Stage {
    /// `name@version`, made once: every decision records it.
    label: Arc<str>,
    engine: Arc<PolicyEngine>,
    version: Arc<LoadedVersion>,
    config: String,
    idle: Mutex<Vec<Warm>>,
    consecutive_failures: AtomicU32,
    /// Nanoseconds after `born` until which the stage is parked: [`NOT_PARKED`], a
    /// time, or [`ON_TRIAL`] while the one trial call runs.
    parked_until: AtomicU64,
    born: Instant,
}

/// `parked_until` of a stage that is not parked.
const NOT_PARKED: u64 = 0;
/// `parked_until` while the trial call after a parking period runs; other calls stay
/// parked meanwhile.
const ON_TRIAL: u64 = u64::MAX;

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("policy", &self.label())
            .field("config", &self.config)
            .finish()
    }
}

impl Stage {
    /// A stage for `version` with `config`; instantiates once to run `configure`, so a
    /// bad config fails here, not on the first request.
    ///
    /// # Errors
    ///
    /// [`Error::Configure`] when the policy rejects its config, [`Error::Smoke`] when the
    /// instance cannot be created.
    pub(crate) fn new(
        engine: Arc<PolicyEngine>,
        version: Arc<LoadedVersion>,
        config: &serde_json::Value,
    ) -> Result<Stage, Error> {
        let config = if config.is_null() {
            String::new()
        } else {
            config.to_string()
        };
        let stage = Stage {
            label: version.info.label().into(),
            engine,
            version,
            config,
            idle: Mutex::new(Vec::new()),
            consecutive_failures: AtomicU32::new(0),
            parked_until: AtomicU64::new(NOT_PARKED),
            born: Instant::now(),
        };
        let warm = stage
            .instantiate(stage.version.code())
            .map_err(|e| match e {
                Instantiate::Config(message) => Error::Configure {
                    policy: stage.label().to_string(),
                    message,
                },
                Instantiate::Fault(f) => Error::Smoke(f),
            })?;
        stage.idle.lock().expect("stage pool").push(warm);
        Ok(stage)
    }

    /// `name@version` of the policy.
    pub fn label(&self) -> &Arc<str> {
        &self.label
    }

    /// The world the policy targets.
    pub fn kind(&self) -> PolicyKind {
        self.version.kind()
    }

    /// Whether the stage is parked after repeated failures (its trial call included).
    pub fn is_parked(&self) -> bool {
        match self.parked_until.load(Ordering::Relaxed) {
            NOT_PARKED => false,
            until => self.now() < until,
        }
    }

    /// Nanoseconds since the stage was made; never [`NOT_PARKED`] or [`ON_TRIAL`].
    fn now(&self) -> u64 {
        (self.born.elapsed().as_nanos() as u64).clamp(1, ON_TRIAL - 1)
    }

    /// Whether this call may run: `Ok(false)` when the stage is not parked (the fast path,
    /// one load), `Ok(true)` for the one trial call after a parking period, else the
    /// parked fault.
    fn admit(&self) -> Result<bool, Fault> {
        let until = self.parked_until.load(Ordering::Relaxed);
        if until == NOT_PARKED {
            return Ok(false);
        }
        if until != ON_TRIAL
            && self.now() >= until
            && self
                .parked_until
                .compare_exchange(until, ON_TRIAL, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Ok(true);
        }
        Err(self.fault(
            PolicyFault::Parked,
            format!(
                "parked for {:?} after {} consecutive failures",
                self.engine.limits.park_for, self.engine.limits.park_after_failures
            ),
        ))
    }

    /// Books a failed call; parks the stage when it has failed often enough, or again
    /// when it failed its trial.
    fn book_failure(&self, trial: bool, fault: &Fault) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let limits = &self.engine.limits;
        let until = self.now().saturating_add(limits.park_for.as_nanos() as u64);
        let until = until.min(ON_TRIAL - 1);
        if trial {
            self.parked_until.store(until, Ordering::Release);
            tracing::warn!(policy = %self.label(), %fault, park_for = ?limits.park_for, "policy failed its trial call; parked again");
        } else if failures >= limits.park_after_failures
            && self
                .parked_until
                .compare_exchange(NOT_PARKED, until, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(policy = %self.label(), failures, %fault, park_for = ?limits.park_for, "policy parked after repeated failures");
        }
    }

    /// Runs the filter; returns exclusions as (fleet index, reason).
    pub(crate) fn exclude(
        &self,
        fleet: &FleetFacts,
        req: &CallRequest,
        candidates: &[super::Candidate],
    ) -> Result<(Vec<(u32, String)>, CallReport), Fault> {
        self.call(fleet, req, candidates, |warm| match &warm.exports {
            Exports::Filter(f) => {
                let out = f
                    .call_exclude(&mut warm.store, &req.record, &warm.candidates)
                    .map_err(Failure::Wasm)?;
                for e in &out {
                    if !candidates.iter().any(|c| c.backend == e.backend) {
                        return Err(Failure::Output(format!(
                            "excluded backend {} is not a candidate",
                            e.backend
                        )));
                    }
                }
                Ok(out.into_iter().map(|e| (e.backend, e.reason)).collect())
            }
            _ => Err(Failure::Output("not a filter".into())),
        })
    }

    /// Runs the scorer; returns one score in [0, 1] per candidate.
    pub(crate) fn score(
        &self,
        fleet: &FleetFacts,
        req: &CallRequest,
        candidates: &[super::Candidate],
    ) -> Result<(Vec<f32>, CallReport), Fault> {
        self.call(fleet, req, candidates, |warm| match &warm.exports {
            Exports::Scorer(s) => {
                let out = s
                    .call_score(&mut warm.store, &req.record, &warm.candidates)
                    .map_err(Failure::Wasm)?;
                if out.len() != candidates.len() {
                    return Err(Failure::Output(format!(
                        "{} scores for {} candidates",
                        out.len(),
                        candidates.len()
                    )));
                }
                if let Some(bad) = out.iter().find(|s| !(0.0..=1.0).contains(*s)) {
                    return Err(Failure::Output(format!("score {bad} is outside [0, 1]")));
                }
                Ok(out)
            }
            _ => Err(Failure::Output("not a scorer".into())),
        })
    }

    /// Runs the placer.
    pub(crate) fn place(
        &self,
        fleet: &FleetFacts,
        req: &CallRequest,
        candidates: &[super::Candidate],
    ) -> Result<(Placement, CallReport), Fault> {
        self.call(fleet, req, candidates, |warm| match &warm.exports {
            Exports::Placer(p) => {
                let out = p
                    .call_place(&mut warm.store, &req.record, &warm.candidates)
                    .map_err(Failure::Wasm)?;
                check_placement(fleet, candidates, out).map_err(Failure::Output)
            }
            _ => Err(Failure::Output("not a placer".into())),
        })
    }

    /// Runs the policy once, whatever its world, on `req`: for the authoring tools and
    /// the smoke call after upload.
    ///
    /// # Errors
    ///
    /// The fault, when the call fails.
    pub fn run(
        &self,
        fleet: &FleetFacts,
        req: &super::RequestFacts,
        candidates: &[super::Candidate],
    ) -> Result<(Outcome, CallReport), Fault> {
        let req = CallRequest::new(req);
        match self.kind() {
            PolicyKind::Filter => self
                .exclude(fleet, &req, candidates)
                .map(|(o, r)| (Outcome::Exclusions(o), r)),
            PolicyKind::Scorer => self
                .score(fleet, &req, candidates)
                .map(|(o, r)| (Outcome::Scores(o), r)),
            PolicyKind::Placer => self
                .place(fleet, &req, candidates)
                .map(|(o, r)| (Outcome::Placement(o), r)),
        }
    }

    /// Calls `f` on a warm instance; the request id seeds the call's virtual WASI
    /// randomness.
    fn call<R>(
        &self,
        fleet: &FleetFacts,
        req: &CallRequest,
        candidates: &[super::Candidate],
        f: impl FnOnce(&mut Warm) -> Result<R, Failure>,
    ) -> Result<(R, CallReport), Fault> {
        let trial = self.admit()?;
        let idle = self.idle.lock().expect("stage pool").pop();
        let warm = match idle {
            Some(w) if self.version.is_current(&w.code) => Ok(w),
            _ => self.instantiate(self.version.code()).map_err(|e| match e {
                Instantiate::Config(m) => self.fault(PolicyFault::Trap, m),
                Instantiate::Fault(f) => f,
            }),
        };
        let result = warm.and_then(|mut warm| {
            let out = self.call_on(&mut warm, fleet, req, candidates, f);
            match out {
                Ok(out) => {
                    warm.calls += 1;
                    if warm.calls < self.engine.limits.max_calls_per_instance {
                        self.idle.lock().expect("stage pool").push(warm);
                    }
                    Ok(out)
                }
                // NB: the instance is dropped here: after a trap its store is poisoned,
                // and after bad output its state is not to be trusted.
                Err(failure) => Err(self.classify(&warm, failure)),
            }
        });
        match &result {
            Ok(_) => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                if trial {
                    self.parked_until.store(NOT_PARKED, Ordering::Release);
                    tracing::info!(policy = %self.label(), "policy passed its trial call; unparked");
                }
            }
            Err(fault) => self.book_failure(trial, fault),
        }
        result
    }

    fn call_on<R>(
        &self,
        warm: &mut Warm,
        fleet: &FleetFacts,
        req: &CallRequest,
        candidates: &[super::Candidate],
        f: impl FnOnce(&mut Warm) -> Result<R, Failure>,
    ) -> Result<(R, CallReport), Failure> {
        if warm.fleet_generation != Some(fleet.generation) {
            self.arm(&mut warm.store, 0, None)?;
            let wit_fleet = to_wit_fleet(fleet);
            match &warm.exports {
                Exports::Filter(p) => p.call_set_fleet(&mut warm.store, &wit_fleet),
                Exports::Scorer(p) => p.call_set_fleet(&mut warm.store, &wit_fleet),
                Exports::Placer(p) => p.call_set_fleet(&mut warm.store, &wit_fleet),
            }
            .map_err(Failure::Wasm)?;
            warm.fleet_generation = Some(fleet.generation);
        }
        fill_rows(&mut warm.candidates, candidates);
        let budget = self.arm(&mut warm.store, req.record.id, req.prefix)?;
        let out = f(warm)?;
        let fuel_used = budget - warm.store.get_fuel().unwrap_or(0);
        let state = warm.store.data_mut();
        let report = CallReport {
            fuel_used,
            logs: std::mem::take(&mut state.logs),
            dropped_logs: std::mem::take(&mut state.dropped_logs),
            peak_memory_bytes: state.peak_memory_bytes,
            tier: warm.code.tier,
        };
        Ok((out, report))
    }

    /// Refills fuel, re-arms the deadline and resets per-call host state (the log, the
    /// virtual clock, the random stream seeded with `seed`, the request's prefix group);
    /// returns the fuel budget.
    fn arm(
        &self,
        store: &mut Store<HostState>,
        seed: u64,
        prefix: Option<host::PrefixGroup>,
    ) -> Result<u64, Failure> {
        let budget = self.engine.limits.fuel_per_call;
        store.set_fuel(budget).map_err(Failure::Wasm)?;
        store.set_epoch_deadline(self.engine.deadline_ticks());
        store.data_mut().begin_call(seed, prefix);
        Ok(budget)
    }

    fn instantiate(&self, code: Arc<Code>) -> Result<Warm, Instantiate> {
        let mut store = Store::new(code.pre.engine(), HostState::new(&self.engine.limits));
        store.limiter(|s| s);
        self.arm(&mut store, 0, None)
            .map_err(|f| Instantiate::Fault(self.fault(PolicyFault::Trap, f.to_string())))?;
        let wasm_fault = |store: &Store<HostState>, e: wasmtime::Error| {
            Instantiate::Fault(self.classify_error(store.data(), e))
        };
        let (exports, configured) = match &code.pre {
            KindPre::Filter(pre) => {
                let p = pre
                    .instantiate(&mut store)
                    .map_err(|e| wasm_fault(&store, e))?;
                let c = p.call_configure(&mut store, &self.config);
                (Exports::Filter(p), c)
            }
            KindPre::Scorer(pre) => {
                let p = pre
                    .instantiate(&mut store)
                    .map_err(|e| wasm_fault(&store, e))?;
                let c = p.call_configure(&mut store, &self.config);
                (Exports::Scorer(p), c)
            }
            KindPre::Placer(pre) => {
                let p = pre
                    .instantiate(&mut store)
                    .map_err(|e| wasm_fault(&store, e))?;
                let c = p.call_configure(&mut store, &self.config);
                (Exports::Placer(p), c)
            }
        };
        configured
            .map_err(|e| wasm_fault(&store, e))?
            .map_err(Instantiate::Config)?;
        Ok(Warm {
            code,
            store,
            exports,
            fleet_generation: None,
            calls: 0,
            candidates: types::Candidates { rows: Vec::new() },
        })
    }

    fn classify(&self, warm: &Warm, failure: Failure) -> Fault {
        match failure {
            Failure::Wasm(e) => self.classify_error(warm.store.data(), e),
            Failure::Output(m) => self.fault(PolicyFault::BadOutput, m),
        }
    }

    fn classify_error(&self, state: &HostState, e: wasmtime::Error) -> Fault {
        let trap = e.downcast_ref::<Trap>();
        let kind = match trap {
            _ if state.limit_hit => PolicyFault::Memory,
            Some(Trap::OutOfFuel) => PolicyFault::OutOfFuel,
            Some(Trap::Interrupt) => PolicyFault::Deadline,
            _ => PolicyFault::Trap,
        };
        // NB: the trap's own description ("wasm `unreachable` instruction executed") says
        // more to an operator than the backtrace wrapped around it.
        let cause = match trap {
            Some(t) => t.to_string(),
            None => e.root_cause().to_string(),
        };
        let message = match kind {
            PolicyFault::Trap => trap_message(state, cause),
            _ => cause,
        };
        self.fault(kind, message)
    }

    fn fault(&self, kind: PolicyFault, message: String) -> Fault {
        Fault {
            policy: self.label().to_string(),
            kind,
            message,
        }
    }
}

/// Log lines a trap's fault quotes, the last ones.
const FAULT_LOG_LINES: usize = 4;

/// A trap's fault message: a Python exception as the SDK reports it (`policy raised
/// ValueError: boom at app.py:9 in score`), a panic as a panic (`panicked at
/// src/lib.rs:3:5: boom`, from what std's panic hook wrote to stderr), other stderr
/// output when there is some, the trap itself, and the call's last log lines.
fn trap_message(state: &HostState, trap: String) -> String {
    let stderr = state.stderr_tail.as_str();
    let raised = stderr
        .rfind("policy raised ")
        .and_then(|at| stderr[at..].lines().next());
    let mut message = match (raised, stderr.rfind("panicked at ")) {
        (Some(raised), _) => format!("{} ({trap})", raised.trim()),
        (None, Some(at)) => {
            let panic: Vec<&str> = stderr[at..]
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
                .collect();
            format!("policy {} ({trap})", panic.join(" "))
        }
        (None, None) if !stderr.trim().is_empty() => {
            format!("{trap}; stderr: {}", stderr.trim())
        }
        (None, None) => trap,
    };
    let logged: Vec<&str> = state
        .logs
        .iter()
        .filter(|l| !l.starts_with("stderr: "))
        .map(String::as_str)
        .collect();
    if !logged.is_empty() {
        let last = &logged[logged.len().saturating_sub(FAULT_LOG_LINES)..];
        message.push_str(&format!("; last log lines: {}", last.join(" | ")));
    }
    message
}

/// Why a call on a warm instance failed, before classification.
enum Failure {
    Wasm(wasmtime::Error),
    Output(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Wasm(e) => write!(f, "{e:#}"),
            Failure::Output(m) => f.write_str(m),
        }
    }
}

/// Why a fresh instance could not be made.
enum Instantiate {
    /// `configure` returned an error message.
    Config(String),
    /// Instantiation or `configure` failed in the runtime.
    Fault(Fault),
}

fn check_placement(
    fleet: &FleetFacts,
    candidates: &[super::Candidate],
    out: types::Placement,
) -> Result<Placement, String> {
    let is_candidate = |b: u32| candidates.iter().any(|c| c.backend == b);
    let role = |b: u32| {
        fleet
            .backends
            .get(b as usize)
            .map(|f| f.role)
            .unwrap_or_default()
    };
    match out {
        types::Placement::Single(b) if is_candidate(b) => Ok(Placement::Single(b)),
        types::Placement::Single(b) => Err(format!("placed on backend {b}, not a candidate")),
        types::Placement::Split(s) => {
            if !is_candidate(s.prefill) || !is_candidate(s.decode) {
                return Err(format!(
                    "split {}->{} names a backend that is not a candidate",
                    s.prefill, s.decode
                ));
            }
            if s.prefill == s.decode {
                return Err(format!("split uses backend {} for both legs", s.decode));
            }
            if role(s.prefill) == Role::Decode || role(s.decode) == Role::Prefill {
                return Err(format!(
                    "split {}->{} puts a leg on a backend whose role forbids it",
                    s.prefill, s.decode
                ));
            }
            Ok(Placement::Split {
                prefill: s.prefill,
                decode: s.decode,
            })
        }
        types::Placement::Reject(r) if (400..=599).contains(&r.status) => Ok(Placement::Reject {
            status: r.status,
            message: r.message,
        }),
        types::Placement::Reject(r) => Err(format!("rejection status {} is not 4xx/5xx", r.status)),
    }
}

fn to_wit_role(r: Role) -> types::Role {
    match r {
        Role::Any => types::Role::Any,
        Role::Prefill => types::Role::Prefill,
        Role::Decode => types::Role::Decode,
    }
}

fn to_wit_fleet(f: &FleetFacts) -> types::Fleet {
    types::Fleet {
        generation: f.generation,
        backends: f
            .backends
            .iter()
            .map(|b| types::BackendInfo {
                name: b.name.clone(),
                vendor: b.vendor.clone(),
                accelerator: b.accelerator.clone(),
                region: b.region.clone(),
                labels: b.labels.clone(),
                role: to_wit_role(b.role),
                cost_per_hour: b.cost_per_hour,
                prefill_tokens_per_s: b.prefill_tokens_per_s,
                decode_tokens_per_s: b.decode_tokens_per_s,
                kv_capacity_tokens: b.kv_capacity_tokens,
                kv_link_gbytes_per_s: b.kv_link_gbytes_per_s,
                kv_bytes_per_token: b.kv_bytes_per_token,
            })
            .collect(),
    }
}

/// Words per candidate in the contract's packed rows.
const CANDIDATE_WORDS: usize = 10;

/// Refills the row buffer with `candidates`, keeping its capacity. The word order is the
/// contract's row layout (`wit/types.wit`).
fn fill_rows(packed: &mut types::Candidates, candidates: &[super::Candidate]) {
    let rows = &mut packed.rows;
    rows.clear();
    rows.reserve(candidates.len() * CANDIDATE_WORDS);
    rows.extend(candidates.iter().flat_map(|c| {
        [
            c.backend,
            c.waiting,
            c.running,
            c.kv_usage.to_bits(),
            c.cached_prefix_tokens,
            c.in_flight_requests,
            c.in_flight_prefill_tokens,
            c.prefill_tokens_per_s.to_bits(),
            c.decode_tokens_per_s.to_bits(),
            c.metrics_age_ms,
        ]
    }));
}

/// A request as a decision's policy calls receive it: the contract's record, built once
/// per decision, and what the `request-prefix` import answers during each call.
pub(crate) struct CallRequest {
    pub record: types::Request,
    pub prefix: Option<host::PrefixGroup>,
}

impl CallRequest {
    /// Converts request facts, once per decision.
    pub(crate) fn new(r: &super::RequestFacts) -> Self {
        CallRequest {
            record: types::Request {
                id: r.id,
                tenant: r.tenant.clone(),
                model: r.model.clone(),
                prompt_tokens: r.prompt_tokens,
                max_tokens: r.max_tokens,
                session: r.session.clone(),
                labels: r.labels.clone(),
                slo_ttft_ms: r.slo_ttft_ms.unwrap_or(0),
                slo_tpot_ms: r.slo_tpot_ms.unwrap_or(0),
            },
            prefix: r.prefix.map(|p| host::PrefixGroup {
                key: p.key,
                head_tokens: p.head_tokens,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Candidate;

    #[test]
    fn rows_hold_ten_words_per_candidate_in_contract_order_and_keep_their_buffer() {
        let cands: Vec<Candidate> = (0..3u32)
            .map(|i| Candidate {
                backend: i,
                waiting: 10 + i,
                running: 20 + i,
                kv_usage: i as f32 / 10.0,
                cached_prefix_tokens: 30 + i,
                in_flight_requests: 40 + i,
                in_flight_prefill_tokens: 50 + i,
                prefill_tokens_per_s: 60.0 + i as f32,
                decode_tokens_per_s: 70.0 + i as f32,
                metrics_age_ms: 80 + i,
            })
            .collect();
        let mut packed = types::Candidates { rows: Vec::new() };
        fill_rows(&mut packed, &cands);
        assert_eq!(packed.rows.len(), 3 * CANDIDATE_WORDS);
        assert_eq!(
            packed.rows[CANDIDATE_WORDS..2 * CANDIDATE_WORDS],
            [
                1,
                11,
                21,
                0.1f32.to_bits(),
                31,
                41,
                51,
                61.0f32.to_bits(),
                71.0f32.to_bits(),
                81
            ]
        );

        let buffer = packed.rows.as_ptr();
        fill_rows(&mut packed, &cands[2..]);
        assert_eq!(packed.rows.len(), CANDIDATE_WORDS);
        assert_eq!(packed.rows[0], 2);
        assert_eq!(packed.rows.as_ptr(), buffer, "buffer reused");
    }
}
