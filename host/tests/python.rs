//! Python policies, built with componentize-py from `wit/` and the Python SDK: the
//! example passes `switchyard policy check` and `policy run` with the default limits and
//! decides like its Rust twin; a policy that tries files, clocks or the network gets
//! nothing it can use; decisions replay; an exception is reported with where it was
//! raised.

#[path = "support/python.rs"]
mod python;
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use switchyard::policy::{
    BackendFacts, Candidate, FleetFacts, Limits, Outcome, Policies, PolicyFault, RequestFacts,
    Stage,
};

fn example() -> PathBuf {
    python::build(
        &python::repo().join("examples/python-least-waiting"),
        "scorer",
    )
}

fn probe() -> PathBuf {
    python::build(&python::repo().join("tests/guests/python-probe"), "scorer")
}

/// The runtime the in-process tests share, with the example, its Rust twin and the
/// probe uploaded (each upload compiles CPython, ~4 s, then again in the background,
/// ~35 s: once per test binary is enough). The twin is uploaded while the example's
/// optimized compile runs; the time its upload took is kept.
struct Shared {
    policies: Policies,
    example: String,
    twin: String,
    probe: String,
    twin_upload: Duration,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let policies = Policies::new(Limits::default(), None).expect("engine");
        let upload = |name: &str, bytes: &[u8]| {
            policies
                .upload(&name.parse().unwrap(), bytes, true)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .label()
        };
        let example = upload("least-waiting-py", &std::fs::read(example()).unwrap());
        let twin_bytes = support::guest("least-waiting");
        let started = Instant::now();
        let twin = upload("least-waiting-rs", &twin_bytes);
        let twin_upload = started.elapsed();
        let probe = upload("probe", &std::fs::read(probe()).unwrap());
        Shared {
            policies,
            example,
            twin,
            probe,
            twin_upload,
        }
    })
}

fn fleet(n: u32) -> FleetFacts {
    FleetFacts {
        generation: 1,
        backends: (0..n)
            .map(|i| BackendFacts {
                name: format!("b{i}"),
                vendor: "nvidia".into(),
                region: "eu-west".into(),
                ..BackendFacts::default()
            })
            .collect(),
    }
}

fn candidates(n: u32) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            backend: i,
            waiting: (i * 7) % 5,
            running: i % 3,
            kv_usage: (i % 10) as f32 / 10.0,
            ..Candidate::default()
        })
        .collect()
}

fn request(id: u64) -> RequestFacts {
    RequestFacts {
        id,
        tenant: "t".into(),
        model: "m".into(),
        prompt_tokens: 512,
        max_tokens: 64,
        ..RequestFacts::default()
    }
}

/// Runs `switchyard ARGS --json`; the one JSON object it prints.
fn cli(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .arg("--json")
        .output()
        .expect("run switchyard");
    assert!(
        out.status.success(),
        "switchyard {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn the_example_passes_check_and_run_with_the_default_limits() {
    let wasm = example();
    let wasm = wasm.to_str().unwrap();
    let size = std::fs::metadata(wasm).unwrap().len() as usize;
    assert!(
        size > 4 << 20 && size < Limits::default().max_upload_bytes,
        "{size} bytes: larger than the old 4 MiB cap, within the new one"
    );
    let check = cli(&["policy", "check", wasm]);
    assert_eq!(check["world"], "scorer", "{check}");
    let case = python::repo().join("examples/policy-case.json");
    let run = cli(&["policy", "run", wasm, "--input", case.to_str().unwrap()]);
    // Waiting 2, 0 and 5: 1/3, 1 and 1/6.
    assert_eq!(
        run["decision"]["scores"],
        serde_json::json!([0.33333334, 1.0, 0.16666667]),
        "{run}"
    );
    assert!(
        run["peak_memory_bytes"].as_u64().unwrap() < Limits::default().memory_bytes as u64,
        "{run}"
    );
}

#[test]
fn python_and_rust_twins_decide_alike() {
    let s = shared();
    let (fleet, cands) = (fleet(100), candidates(100));
    let score = |label: &str| {
        let stage = s.policies.stage(label, &serde_json::Value::Null).unwrap();
        match stage.run(&fleet, &request(7), &cands) {
            Ok((Outcome::Scores(scores), report)) => (scores, report.fuel_used),
            other => panic!("{label}: {other:?}"),
        }
    };
    let (py_scores, py_fuel) = score(&s.example);
    let (rs_scores, rs_fuel) = score(&s.twin);
    assert_eq!(py_scores, rs_scores);
    assert!(
        py_fuel < Limits::default().fuel_per_call / 2,
        "100 candidates in Python: {py_fuel} fuel (Rust: {rs_fuel})"
    );
}

#[test]
fn a_small_upload_is_not_held_up_by_a_large_background_compile() {
    // The twin was uploaded while Cranelift compiled CPython in the background. On the
    // shared compile thread pool it waited for all of it (over the 10 s compile bound on
    // two cores); on the background thread of its own, Winch compiles it at once.
    let s = shared();
    assert!(
        s.twin_upload < Duration::from_secs(2),
        "{:?}",
        s.twin_upload
    );
}

/// The probe's scores and log lines for request `id` on `stage`.
fn probe_run(stage: &Stage, id: u64) -> (Vec<f32>, Vec<String>) {
    match stage.run(&fleet(3), &request(id), &candidates(3)) {
        Ok((Outcome::Scores(s), report)) => (s, report.logs),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_python_policy_gets_nothing_from_files_clocks_or_the_network_and_replays() {
    let s = shared();
    let stage = s
        .policies
        .stage(&s.probe, &serde_json::Value::Null)
        .unwrap();
    let (scores, logs) = probe_run(&stage, 42);
    let expected = [
        "info: file: FileNotFoundError",
        "info: listdir: FileNotFoundError",
        // 2025-01-01T00:00:00Z and 0 at the start of the call, whatever the host's time.
        "info: time: 1735689600.0",
        "info: monotonic: 0",
        // The sleep returned at once and moved the virtual clocks by 2.5 s.
        "info: after sleep: 1735689602.5 2500000000",
        "info: environ: {}",
    ];
    assert_eq!(logs[..expected.len()], expected, "{logs:?}");
    assert!(
        logs[expected.len()].starts_with("info: urandom: "),
        "{logs:?}"
    );
    assert_eq!(logs[expected.len() + 1], "info: socket: PermissionError");
    assert!(
        scores.iter().all(|s| *s < 1.0),
        "nothing leaked: {scores:?}"
    );

    // The same request decides identically, `os.urandom` and `random` included: again
    // on the same (warm) instance, and on a fresh one. Another request draws otherwise.
    assert_eq!(probe_run(&stage, 42), (scores.clone(), logs.clone()));
    let fresh = s
        .policies
        .stage(&s.probe, &serde_json::Value::Null)
        .unwrap();
    assert_eq!(probe_run(&fresh, 42), (scores.clone(), logs.clone()));
    let (other, other_logs) = probe_run(&stage, 43);
    assert_ne!(other, scores);
    assert_ne!(other_logs[expected.len()], logs[expected.len()], "urandom");
    assert_eq!(other_logs[..expected.len()], expected);
}

#[test]
fn a_python_exception_is_a_trap_that_says_what_and_where() {
    let s = shared();
    let stage = s
        .policies
        .stage(&s.probe, &serde_json::json!({"raise": true}))
        .unwrap();
    let fault = stage
        .run(&fleet(3), &request(5), &candidates(3))
        .expect_err("the policy raises");
    assert_eq!(fault.kind, PolicyFault::Trap, "{fault}");
    assert!(
        fault
            .message
            .starts_with("policy raised RuntimeError: asked to fail on request 5 at app.py:")
            && fault.message.contains(" in score_all"),
        "{fault}"
    );
    let bad = s.policies.stage(&s.probe, &serde_json::json!([1, 2]));
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("expected a JSON object"),
        "a config the policy rejects is refused with its message"
    );
}
