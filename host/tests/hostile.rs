//! Hostile policies: each gets a clear error at upload or a failed call that yields the
//! tenant's failure mode, with a counted fault; the host is never crashed or hung.
//!
//! The guests live in `tests/guests/` (their own workspace) and are built once per test
//! binary by `support::guest`.

mod support;

use std::time::Duration;

use support::guest;
use switchyard::policy::{
    BackendFacts, Candidate, Error, FailureMode, FleetFacts, Limits, Outcome, PipelineSpec,
    Placement, Policies, PolicyFault, RequestFacts, StageSpec, WeightedStageSpec,
};

fn fleet() -> FleetFacts {
    FleetFacts {
        generation: 1,
        backends: (0..4)
            .map(|i| BackendFacts {
                name: format!("b{i}"),
                vendor: "nvidia".into(),
                ..BackendFacts::default()
            })
            .collect(),
    }
}

fn candidates() -> Vec<Candidate> {
    (0..3)
        .map(|i| Candidate {
            backend: i,
            waiting: 3 - i,
            ..Candidate::default()
        })
        .collect()
}

fn request() -> RequestFacts {
    RequestFacts {
        id: 9,
        tenant: "t".into(),
        model: "m".into(),
        prompt_tokens: 64,
        max_tokens: 8,
        ..RequestFacts::default()
    }
}

/// Default limits but a generous wall-clock deadline, so each outcome below comes from the
/// deterministic mechanism under test (fuel, memory, stack, output checks), never from a
/// loaded CI machine's scheduling.
fn limits() -> Limits {
    Limits {
        deadline: Duration::from_secs(2),
        ..Limits::default()
    }
}

/// A policy name the tests know to be valid.
fn policy_name(name: &str) -> switchyard::names::PolicyName {
    name.parse().expect("a valid policy name")
}

/// The tenant every pipeline here belongs to.
fn tenant_t() -> switchyard::names::TenantName {
    "t".parse().expect("a valid tenant name")
}

fn runtime(limits: Limits) -> Policies {
    Policies::new(limits, None).expect("engine")
}

/// Uploads `name` without the smoke call and runs it once; returns the fault.
fn run_fault(name: &str, limits: Limits) -> switchyard::policy::Fault {
    let p = runtime(limits);
    let v = p
        .upload(&policy_name(name), &guest(name), false)
        .expect("upload without smoke");
    let stage = p
        .stage(&v.label(), &serde_json::Value::Null)
        .expect("stage");
    let err = stage
        .run(&fleet(), &request(), &candidates())
        .expect_err("the call must fail");
    assert_eq!(err.policy, v.label());
    err
}

/// A tenant pipeline with `name` as its one scorer, failure mode `mode`.
fn scorer_pipeline(p: &Policies, name: &str, mode: FailureMode) {
    let v = p
        .upload(&policy_name(name), &guest(name), false)
        .expect("upload");
    p.set_pipeline(
        &tenant_t(),
        PipelineSpec {
            scorers: vec![WeightedStageSpec {
                stage: StageSpec::new(v.label(), serde_json::Value::Null),
                weight: 1.0,
            }],
            failure_mode: mode,
            ..PipelineSpec::default()
        },
    )
    .expect("pipeline");
}

fn failures(p: &Policies, fault: &str) -> u64 {
    let mut registry = prometheus_client::registry::Registry::default();
    p.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text.lines()
        .filter(|l| l.starts_with("switchyard_policy_failures_total") && l.contains(fault))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn infinite_loop_is_stopped_by_fuel() {
    let f = run_fault("infinite-loop", limits());
    assert_eq!(f.kind, PolicyFault::OutOfFuel, "{f}");
}

#[test]
fn infinite_loop_is_stopped_by_the_deadline_when_fuel_is_unbounded() {
    let limits = Limits {
        fuel_per_call: u64::MAX / 2,
        deadline: Duration::from_millis(30),
        ..limits()
    };
    let started = std::time::Instant::now();
    let f = run_fault("infinite-loop", limits);
    assert_eq!(f.kind, PolicyFault::Deadline, "{f}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn infinite_loop_upload_is_refused_by_the_smoke_call() {
    let p = runtime(limits());
    match p.upload(&policy_name("infinite-loop"), &guest("infinite-loop"), true) {
        Err(Error::Smoke(f)) => assert_eq!(f.kind, PolicyFault::OutOfFuel),
        other => panic!("expected a smoke failure, got {other:?}"),
    }
    assert!(
        p.versions().is_empty(),
        "a refused upload is not registered"
    );
}

#[test]
fn a_failing_scorer_falls_back_to_least_load_and_is_counted() {
    let p = runtime(limits());
    scorer_pipeline(&p, "infinite-loop", FailureMode::Fallback);
    let d = p.pipeline("t").decide(&fleet(), &request(), &candidates());
    // The built-in picks the least waiting backend, index 2.
    assert_eq!(d.placement, Placement::Single(2));
    assert_eq!(
        d.fault.as_ref().map(|f| f.kind),
        Some(PolicyFault::OutOfFuel)
    );
    assert_eq!(failures(&p, "out_of_fuel"), 1);
}

#[test]
fn reject_mode_refuses_with_503() {
    let p = runtime(limits());
    scorer_pipeline(&p, "panics", FailureMode::Reject);
    let d = p.pipeline("t").decide(&fleet(), &request(), &candidates());
    assert!(
        matches!(d.placement, Placement::Reject { status: 503, .. }),
        "{:?}",
        d.placement
    );
}

#[test]
fn a_policy_that_keeps_failing_is_parked() {
    let p = runtime(limits());
    scorer_pipeline(&p, "panics", FailureMode::Fallback);
    let t = p.pipeline("t");
    let kinds: Vec<_> = (0..7)
        .map(|_| {
            t.decide(&fleet(), &request(), &candidates())
                .fault
                .unwrap()
                .kind
        })
        .collect();
    assert_eq!(kinds[..5], [PolicyFault::Trap; 5]);
    assert_eq!(kinds[5..], [PolicyFault::Parked; 2]);
}

#[test]
fn huge_allocation_hits_the_memory_limit() {
    let f = run_fault("huge-alloc", limits());
    assert_eq!(f.kind, PolicyFault::Memory, "{f}");
}

#[test]
fn deep_recursion_traps_on_stack_overflow() {
    let f = run_fault("deep-recursion", limits());
    assert_eq!(f.kind, PolicyFault::Trap, "{f}");
}

#[test]
fn a_panic_is_reported_as_a_panic_with_its_message() {
    let f = run_fault("panics", limits());
    assert_eq!(f.kind, PolicyFault::Trap, "{f}");
    // std's panic hook reads the (empty) environment and writes to stderr, which lands
    // in the call's log: the fault says where and why the policy panicked.
    assert!(
        f.message
            .starts_with("policy panicked at panics/src/lib.rs:")
            && f.message
                .contains("hostile guest: panic while scoring request 9"),
        "{f}"
    );
    assert!(!f.message.contains("unknown import"), "{f}");
}

#[test]
fn ten_million_scores_hit_the_memory_limit() {
    let f = run_fault("huge-result", limits());
    assert_eq!(f.kind, PolicyFault::Memory, "{f}");
}

#[test]
fn ten_million_scores_are_bad_output_when_memory_allows() {
    let limits = Limits {
        memory_bytes: 256 << 20,
        fuel_per_call: 2_000_000_000,
        deadline: Duration::from_secs(10),
        ..limits()
    };
    let f = run_fault("huge-result", limits);
    assert_eq!(f.kind, PolicyFault::BadOutput, "{f}");
    assert!(
        f.message.contains("10000000 scores for 3 candidates"),
        "{f}"
    );
}

#[test]
fn wrong_length_is_bad_output() {
    let f = run_fault("wrong-length", limits());
    assert_eq!(f.kind, PolicyFault::BadOutput);
    assert_eq!(f.message, "2 scores for 3 candidates");
}

#[test]
fn nan_and_out_of_range_scores_are_bad_output() {
    let f = run_fault("nan-scores", limits());
    assert_eq!(f.kind, PolicyFault::BadOutput);
    assert!(f.message.contains("NaN"), "{f}");
    let p = runtime(limits());
    let v = p
        .upload(&policy_name("nan-scores"), &guest("nan-scores"), false)
        .unwrap();
    let stage = p.stage(&v.label(), &serde_json::json!(1.5)).unwrap();
    let f = stage.run(&fleet(), &request(), &candidates()).unwrap_err();
    assert_eq!(f.message, "score 1.5 is outside [0, 1]");
}

#[test]
fn log_flood_is_capped_and_counted() {
    let limits = Limits {
        fuel_per_call: 100_000_000,
        deadline: Duration::from_secs(5),
        ..limits()
    };
    let p = runtime(limits);
    let v = p
        .upload(&policy_name("log-flood"), &guest("log-flood"), false)
        .unwrap();
    let stage = p.stage(&v.label(), &serde_json::Value::Null).unwrap();
    let (out, report) = stage
        .run(&fleet(), &request(), &candidates())
        .expect("succeeds");
    assert_eq!(out, Outcome::Scores(vec![1.0; 3]));
    assert_eq!(report.logs.len(), 32);
    assert_eq!(report.dropped_logs, 1_000_000 - 32);
}

#[test]
fn log_flood_under_the_default_fuel_budget_runs_out_of_fuel() {
    let f = run_fault("log-flood", limits());
    assert_eq!(f.kind, PolicyFault::OutOfFuel, "{f}");
}

/// Uploads `name` (smoke call included) and runs it once on the test request with id
/// `id`; returns its scores and log lines.
fn run_ok(name: &str, id: u64) -> (Vec<f32>, Vec<String>) {
    let p = runtime(limits());
    let v = p
        .upload(&policy_name(name), &guest(name), true)
        .expect("upload");
    let stage = p
        .stage(&v.label(), &serde_json::Value::Null)
        .expect("stage");
    let req = RequestFacts { id, ..request() };
    let (out, report) = stage
        .run(&fleet(), &req, &candidates())
        .expect("the call succeeds");
    let Outcome::Scores(scores) = out else {
        panic!("not scores: {out:?}")
    };
    (scores, report.logs)
}

#[test]
fn wasi_filesystem_has_nothing_to_open() {
    // The virtual WASI preopens no directory: the read fails inside the guest, which
    // scores 0; the file is never read.
    let (scores, logs) = run_ok("wasi-fs", 9);
    assert_eq!(scores, vec![0.0; 3]);
    assert!(!logs.iter().any(|l| l.contains("/etc/passwd")), "{logs:?}");
}

#[test]
fn wasi_sockets_refuse_every_connection() {
    // Creating a socket is refused (`access-denied`): the connect fails inside the
    // guest, which scores 0; no connection is made.
    let (scores, logs) = run_ok("wasi-socket", 9);
    assert_eq!(scores, vec![0.0; 3]);
    assert!(!logs.iter().any(|l| l.contains("connected")), "{logs:?}");
}

#[test]
fn wasi_is_virtual_and_replays_with_the_request() {
    let (scores, logs) = run_ok("wasi-virtual", 9);
    assert_eq!(scores, vec![0.0; 3]);
    let line = |prefix: &str| -> String {
        logs.iter()
            .find_map(|l| l.strip_prefix(&format!("info: {prefix}: ")))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {logs:?}"))
            .to_string()
    };
    // 2025-01-01T00:00:00Z at the start of every call; a 1.5 s sleep returns at once
    // and moves both clocks by 1.5 s.
    assert_eq!(line("wall"), "1735689600.000000000");
    assert_eq!(line("monotonic"), "0 then 1500000000");
    assert_eq!(line("wall after sleep"), "1735689601.500000000");
    assert_eq!(
        line("environment"),
        "[] arguments: [] cwd: None",
        "nothing of the host's environment"
    );
    assert_eq!(line("preopens"), "[]");
    assert!(
        line("tcp socket").starts_with("Err(ErrorCode { code: 1, name: \"access-denied\""),
        "{logs:?}"
    );

    // The same request replays exactly, randomness included; another request draws
    // other random bytes, at the same virtual time.
    let (_, again) = run_ok("wasi-virtual", 9);
    assert_eq!(again, logs);
    let (_, other) = run_ok("wasi-virtual", 10);
    let random = |logs: &[String]| {
        logs.iter()
            .find(|l| l.starts_with("info: random: "))
            .cloned()
            .unwrap()
    };
    assert_ne!(random(&other), random(&logs));
    assert_eq!(other[0], logs[0], "the same virtual clock");
}

#[test]
fn placement_outside_the_candidates_is_bad_output() {
    let f = run_fault("bad-placement", limits());
    assert_eq!(f.kind, PolicyFault::BadOutput);
    assert!(f.message.contains("not a candidate"), "{f}");
}

#[test]
fn core_module_random_bytes_and_oversize_uploads_are_refused() {
    let p = runtime(limits());
    // The smallest valid core module: magic and version 1, no sections.
    assert!(matches!(
        p.upload(&policy_name("core"), b"\0asm\x01\0\0\0", true),
        Err(Error::CoreModule)
    ));
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(matches!(
        p.upload(&policy_name("noise"), &noise, true),
        Err(Error::NotWasm)
    ));
    let mut huge = vec![0u8; 100 << 20];
    huge[..8].copy_from_slice(b"\0asm\x0d\0\x01\0");
    match p.upload(&policy_name("huge"), &huge, true) {
        Err(Error::TooLarge { size, max }) => {
            assert_eq!(size, 100 << 20);
            assert_eq!(max, 32 << 20);
        }
        other => panic!("expected too large, got {other:?}"),
    }
}

#[test]
fn the_host_keeps_deciding_after_every_hostile_call() {
    let p = runtime(limits());
    for name in ["panics", "huge-alloc", "deep-recursion", "wrong-length"] {
        scorer_pipeline(&p, name, FailureMode::Fallback);
        let d = p.pipeline("t").decide(&fleet(), &request(), &candidates());
        assert_eq!(d.placement, Placement::Single(2), "{name}");
        assert!(d.fault.is_some(), "{name}");
    }
    p.set_pipeline(&tenant_t(), PipelineSpec::builtin())
        .unwrap();
    let d = p.pipeline("t").decide(&fleet(), &request(), &candidates());
    assert!(d.fault.is_none());
}

#[test]
fn policy_run_prints_a_panic_message() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("panics.wasm");
    std::fs::write(&wasm, guest("panics")).unwrap();
    let case = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/policy-case.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["policy", "run"])
        .arg(&wasm)
        .arg("--input")
        .arg(case)
        .output()
        .expect("run switchyard policy run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("policy panicked at panics/src/lib.rs:")
            && stderr.contains("hostile guest: panic while scoring request"),
        "{stderr}"
    );
}
