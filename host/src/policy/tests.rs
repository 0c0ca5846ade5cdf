//! Runtime tests against the shipped components built into this crate.

use std::time::Duration;

use super::*;
use crate::names::{PolicyName, TenantName};
use crate::state::StateDir;

fn fleet(n: u32) -> FleetFacts {
    FleetFacts {
        generation: 1,
        backends: (0..n)
            .map(|i| BackendFacts {
                name: format!("b{i}"),
                vendor: "nvidia".into(),
                accelerator: "h100".into(),
                ..BackendFacts::default()
            })
            .collect(),
    }
}

fn request() -> RequestFacts {
    RequestFacts {
        id: 7,
        tenant: "acme".into(),
        model: "m".into(),
        prompt_tokens: 1000,
        max_tokens: 10,
        ..RequestFacts::default()
    }
}

fn runtime(state: Option<StateDir>) -> Policies {
    // A generous deadline: these tests check behaviour, and a loaded CI machine must not
    // turn a preempted call into a fault.
    let limits = Limits {
        deadline: std::time::Duration::from_secs(2),
        ..Limits::default()
    };
    let p = Policies::new(limits, state).expect("engine");
    p.install_shipped().expect("shipped policies load");
    p.restore_policies();
    p.restore_pipelines();
    p
}

fn acme() -> TenantName {
    TenantName::new("acme").unwrap()
}

fn name(n: &str) -> PolicyName {
    PolicyName::new(n).unwrap()
}

fn prefix_pipeline() -> PipelineSpec {
    PipelineSpec {
        scorers: vec![WeightedStageSpec {
            stage: StageSpec::new("prefix-affinity", serde_json::Value::Null),
            weight: 1.0,
        }],
        ..PipelineSpec::default()
    }
}

/// Three candidates, one holding most of the prompt.
fn candidates() -> Vec<Candidate> {
    [0, 900, 100]
        .into_iter()
        .enumerate()
        .map(|(i, cached)| Candidate {
            backend: i as u32,
            cached_prefix_tokens: cached,
            ..Candidate::default()
        })
        .collect()
}

fn prefix_bytes() -> &'static [u8] {
    shipped_component("prefix-affinity").expect("prefix-affinity ships")
}

#[test]
fn shipped_policies_register_with_their_world() {
    let p = runtime(None);
    let v = p.versions();
    let prefix = v
        .iter()
        .find(|v| v.name == "prefix-affinity")
        .expect("listed");
    assert_eq!(prefix.kind, PolicyKind::Scorer);
    assert!(prefix.shipped);
    assert_eq!(prefix.version.len(), 12);
}

#[test]
fn wasm_scorer_sends_request_to_the_cached_prefix() {
    let p = runtime(None);
    p.set_pipeline(&acme(), prefix_pipeline()).unwrap();
    let d = p
        .pipeline("acme")
        .decide(&fleet(3), &request(), &candidates());
    assert_eq!(d.placement, Placement::Single(1));
    assert!(d.fault.is_none());
    assert!(d.fuel_used > 0);
    assert_eq!(d.scores[1], (1, 0.9));
}

#[test]
fn tenants_without_a_pipeline_get_the_default_routing() {
    let p = runtime(None);
    let cands = [
        Candidate {
            backend: 0,
            waiting: 5,
            ..Candidate::default()
        },
        Candidate {
            backend: 1,
            ..Candidate::default()
        },
    ];
    let d = p.pipeline("nobody").decide(&fleet(2), &request(), &cands);
    assert_eq!(d.placement, Placement::Single(1), "backend 0 is busier");
    let names: Vec<&str> = d
        .policies
        .iter()
        .map(|p| p.split('@').next().unwrap_or_default())
        .collect();
    assert_eq!(names, ["prefix-affinity", "least-load", "prefix-home"]);
    assert_eq!(d.pipeline_version, 0);
    assert!(d.fault.is_none());
}

#[test]
fn bad_uploads_are_refused_with_the_reason() {
    let p = runtime(None);
    assert!(matches!(
        p.upload(&name("x"), b"not wasm at all", true),
        Err(Error::NotWasm)
    ));
    assert!(matches!(
        p.upload(&name("x"), b"\0asm\x01\0\0\0", true),
        Err(Error::CoreModule)
    ));
    let big = vec![0u8; Limits::default().max_upload_bytes + 1];
    assert!(matches!(
        p.upload(&name("x"), &big, true),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn invalid_pipelines_change_nothing() {
    let p = runtime(None);
    p.set_pipeline(&acme(), prefix_pipeline()).unwrap();
    let wrong_kind = PipelineSpec {
        placer: Some(StageSpec::new("prefix-affinity", serde_json::Value::Null)),
        ..PipelineSpec::default()
    };
    let err = p.set_pipeline(&acme(), wrong_kind).unwrap_err();
    assert!(
        err.to_string().contains("is a scorer, not a placer"),
        "{err}"
    );
    let mut heavy = prefix_pipeline();
    heavy.scorers[0].weight = 1.7;
    let err = p.set_pipeline(&acme(), heavy).unwrap_err();
    assert!(
        err.to_string()
            .contains("scorers[0].weight: 1.7 is outside [0, 1]"),
        "{err}"
    );
    let unknown = PipelineSpec {
        filters: vec![StageSpec::new("nope@123", serde_json::Value::Null)],
        ..PipelineSpec::default()
    };
    assert!(matches!(
        p.set_pipeline(&acme(), unknown),
        Err(Error::UnknownPolicy(_))
    ));
    assert_eq!(p.pipeline("acme").info().version, 1);
}

#[test]
fn rollback_restores_the_previous_pipeline() {
    let p = runtime(None);
    p.set_pipeline(&acme(), PipelineSpec::builtin()).unwrap();
    p.set_pipeline(&acme(), prefix_pipeline()).unwrap();
    let info = p.rollback(&acme()).unwrap();
    assert_eq!(info.active, PipelineSpec::builtin());
    assert_eq!(info.version, 3);
    assert!(matches!(p.rollback(&acme()), Err(Error::NoHistory(_))));
}

#[test]
fn uploads_and_pipelines_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let uploaded = {
        let p = runtime(Some(state.clone()));
        let v = p.upload(&name("mine"), prefix_bytes(), true).unwrap();
        let mut spec = prefix_pipeline();
        spec.scorers[0].stage.policy = v.label();
        p.set_pipeline(&acme(), spec).unwrap();
        v
    };
    let p = runtime(Some(state.clone()));
    assert!(p.versions().iter().any(|v| v.label() == uploaded.label()));
    let info = p.pipeline("acme").info().clone();
    assert_eq!(info.active.scorers[0].stage.policy, uploaded.label());
    assert_eq!(p.pipelines().len(), 1);
    assert!(state.damaged().is_empty());
}

/// The pipeline of the issue: a shipped filter and a shipped scorer.
fn residency_pipeline() -> PipelineSpec {
    PipelineSpec {
        filters: vec![StageSpec::new(
            "data-residency",
            serde_json::json!({"default": "allow"}),
        )],
        ..prefix_pipeline()
    }
}

#[test]
fn stored_pipelines_naming_shipped_policies_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let before = {
        let p = runtime(Some(state.clone()));
        p.set_pipeline(&acme(), residency_pipeline()).unwrap()
    };
    let p = runtime(Some(state.clone()));
    assert!(state.damaged().is_empty(), "{:?}", state.damaged());
    assert_eq!(p.pipeline("acme").info(), &before);
    let d = p
        .pipeline("acme")
        .decide(&fleet(3), &request(), &candidates());
    assert_eq!(d.policies.len(), 2, "{:?}", d.policies);
    assert!(d.policies[0].starts_with("data-residency@"));
}

#[test]
fn a_damaged_stored_pipeline_refuses_its_tenant_until_set_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    {
        let p = runtime(Some(state.clone()));
        p.set_pipeline(&TenantName::new("default").unwrap(), prefix_pipeline())
            .unwrap();
    }
    state.write("tenants/acme.json", b"{ truncated").unwrap();
    let p = runtime(Some(state.clone()));
    let damaged = state.damaged();
    assert_eq!(damaged.len(), 1);
    assert_eq!(damaged[0].entry, "tenants/acme.json");
    // Never decided by `default`'s pipeline instead: refused.
    let t = p.pipeline("acme");
    assert_eq!(t.damaged(), Some("tenants/acme.json"));
    let d = t.decide(&fleet(3), &request(), &candidates());
    assert!(matches!(d.placement, Placement::Reject { status: 503, .. }));
    assert!(d.policies.is_empty());
    assert!(p.pipeline("other").damaged().is_none());
    // A canary cannot build on the damaged pipeline; setting the pipeline repairs it.
    let canary = CanarySpec {
        pipeline: prefix_pipeline(),
        share: 0.5,
    };
    assert!(matches!(
        p.set_canary(&acme(), Some(canary)),
        Err(Error::Damaged { .. })
    ));
    p.set_pipeline(&acme(), PipelineSpec::builtin()).unwrap();
    assert!(p.pipeline("acme").damaged().is_none());
    assert!(state.damaged().is_empty());
}

#[test]
fn a_damaged_stored_pipeline_is_skipped_when_the_config_says_so() {
    let dir = tempfile::tempdir().unwrap();
    {
        let state = StateDir::open(dir.path()).unwrap();
        state.write("tenants/acme.json", b"{ truncated").unwrap();
    }
    let state = StateDir::open_with(dir.path(), crate::state::OnDamagedEntry::Skip).unwrap();
    let p = runtime(Some(state.clone()));
    assert!(state.damaged().is_empty());
    assert!(p.pipeline("acme").damaged().is_none());
}

/// A scorer whose bytes differ from prefix-affinity's: a second version of `foo`.
fn other_scorer_bytes() -> &'static [u8] {
    shipped_component("least-load").expect("least-load ships")
}

fn foo_pipeline(follow_latest: bool) -> PipelineSpec {
    let mut spec = prefix_pipeline();
    spec.scorers[0].stage.policy = "foo".into();
    spec.scorers[0].stage.follow_latest = follow_latest;
    spec
}

#[test]
fn a_later_upload_never_changes_a_running_pipeline_canary_or_rollback_target() {
    let p = runtime(None);
    let v1 = p
        .upload(&name("foo"), prefix_bytes(), true)
        .unwrap()
        .label();
    let set = p.set_pipeline(&acme(), foo_pipeline(false)).unwrap();
    assert_eq!(set.active.scorers[0].stage.policy, v1, "stored pinned");
    let v2 = p
        .upload(&name("foo"), other_scorer_bytes(), true)
        .unwrap()
        .label();
    assert_ne!(v1, v2);
    // A 0% canary and a shadow rebuild the active pipeline: it must stay on v1.
    p.set_canary(
        &acme(),
        Some(CanarySpec {
            pipeline: foo_pipeline(false),
            share: 0.0,
        }),
    )
    .unwrap();
    let info = p.set_shadow(&acme(), Some(foo_pipeline(false))).unwrap();
    assert_eq!(info.active.scorers[0].stage.policy, v1);
    assert_eq!(info.canary.unwrap().pipeline.scorers[0].stage.policy, v2);
    let d = p
        .pipeline("acme")
        .decide(&fleet(3), &request(), &candidates());
    assert_eq!(d.policies, [v1.as_str().into()]);
    // The rollback target is the pinned v1 too.
    p.set_pipeline(&acme(), PipelineSpec::builtin()).unwrap();
    let back = p.rollback(&acme()).unwrap();
    assert_eq!(back.active.scorers[0].stage.policy, v1);
}

#[test]
fn follow_latest_stages_move_to_the_newest_upload_on_rebuild() {
    let p = runtime(None);
    p.upload(&name("foo"), prefix_bytes(), true).unwrap();
    let set = p.set_pipeline(&acme(), foo_pipeline(true)).unwrap();
    assert_eq!(set.active.scorers[0].stage.policy, "foo", "stored unpinned");
    let v2 = p
        .upload(&name("foo"), other_scorer_bytes(), true)
        .unwrap()
        .label();
    p.set_canary(&acme(), None).unwrap();
    let d = p
        .pipeline("acme")
        .decide(&fleet(3), &request(), &candidates());
    assert_eq!(d.policies, [v2.as_str().into()]);
    let mut pinned_and_following = foo_pipeline(true);
    pinned_and_following.scorers[0].stage.policy = v2;
    assert!(matches!(
        p.set_pipeline(&acme(), pinned_and_following),
        Err(Error::InvalidPipeline(_))
    ));
}

#[test]
fn a_stored_pipeline_with_bare_names_is_pinned_at_restore() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let stored = PipelineInfo {
        tenant: acme(),
        version: 4,
        active: prefix_pipeline(),
        canary: None,
        shadow: None,
        history: vec![prefix_pipeline()],
    };
    state
        .write("tenants/acme.json", &serde_json::to_vec(&stored).unwrap())
        .unwrap();
    let p = runtime(Some(state.clone()));
    let info = p.pipeline("acme").info().clone();
    let label = p
        .versions()
        .into_iter()
        .find(|v| v.name == "prefix-affinity")
        .unwrap()
        .label();
    assert_eq!(info.version, 4);
    assert_eq!(info.active.scorers[0].stage.policy, label);
    assert_eq!(info.history[0].scorers[0].stage.policy, label);
    let on_disk: PipelineInfo =
        serde_json::from_slice(&state.read("tenants/acme.json").unwrap().unwrap()).unwrap();
    assert_eq!(on_disk, info);
}

#[test]
fn an_upload_serves_on_baseline_code_until_the_optimized_code_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let p = runtime(Some(state.clone()));
    let v = p.upload(&name("mine"), prefix_bytes(), true).unwrap();
    // NB: Cranelift takes tens of milliseconds; the upload returns before it could finish.
    assert_eq!(v.tier, Tier::Baseline);
    let cwasm = format!("policies/{}.cwasm", v.label());
    let stage = p.stage(&v.label(), &serde_json::Value::Null).unwrap();
    let (before, first) = stage.run(&fleet(3), &request(), &candidates()).unwrap();
    assert_eq!(before, Outcome::Scores(vec![0.0, 0.9, 0.1]));

    assert!(
        p.wait_optimized(&v.label(), Duration::from_secs(60))
            .unwrap()
    );
    let listed = p.versions().into_iter().find(|l| l.label() == v.label());
    assert_eq!(listed.map(|l| l.tier), Some(Tier::Optimized));
    // The same stage moves to the new code on its next call, and decides the same.
    let (after, report) = stage.run(&fleet(3), &request(), &candidates()).unwrap();
    assert_eq!(report.tier, Tier::Optimized);
    assert_eq!(after, before);
    // Both compilers charge fuel per Wasm operation, but not at identical points: the
    // same call has cost the same on both tiers, and 2504 (Winch) against 2584
    // (Cranelift) after an unrelated change to the guest. A budget means nearly, not
    // exactly, the same on either tier.
    let (a, b) = (report.fuel_used as f64, first.fuel_used as f64);
    assert!(
        (a - b).abs() <= 0.1 * a.max(b),
        "fuel {} on optimized code, {} on baseline code",
        report.fuel_used,
        first.fuel_used
    );
    // The optimized artifact is stored (after the swap, so wait for the file), and a
    // restart loads it without compiling.
    let started = std::time::Instant::now();
    while state.read(&cwasm).unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{cwasm} never written"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let restored = runtime(Some(state));
    let again = restored
        .versions()
        .into_iter()
        .find(|l| l.label() == v.label())
        .unwrap();
    assert_eq!((again.tier, again.compile_ms), (Tier::Optimized, 0.0));
}

#[test]
fn without_the_baseline_tier_an_upload_is_optimized_when_it_returns() {
    let p = Policies::new(
        Limits {
            baseline_tier: false,
            deadline: Duration::from_secs(2),
            ..Limits::default()
        },
        None,
    )
    .unwrap();
    let v = p.upload(&name("mine"), prefix_bytes(), true).unwrap();
    assert_eq!(v.tier, Tier::Optimized);
    let stage = p.stage(&v.label(), &serde_json::Value::Null).unwrap();
    let (_, report) = stage.run(&fleet(3), &request(), &candidates()).unwrap();
    assert_eq!(report.tier, Tier::Optimized);
}

#[test]
fn canary_share_splits_by_request_id() {
    let p = runtime(None);
    p.set_pipeline(&acme(), PipelineSpec::builtin()).unwrap();
    p.set_canary(
        &acme(),
        Some(CanarySpec {
            pipeline: prefix_pipeline(),
            share: 0.25,
        }),
    )
    .unwrap();
    let t = p.pipeline("acme");
    let cands = [Candidate::default()];
    let canaries = (0..4000u64)
        .filter(|id| {
            let req = RequestFacts {
                id: *id,
                ..request()
            };
            t.decide(&fleet(1), &req, &cands).variant == Variant::Canary
        })
        .count();
    assert!(
        (800..1200).contains(&canaries),
        "{canaries} of 4000 in a 25% canary"
    );
}

#[test]
fn shadow_counts_disagreements() {
    let p = runtime(None);
    p.set_pipeline(&acme(), PipelineSpec::builtin()).unwrap();
    p.set_shadow(&acme(), Some(prefix_pipeline())).unwrap();
    let cands = [
        Candidate {
            backend: 0,
            ..Candidate::default()
        },
        Candidate {
            backend: 1,
            waiting: 3,
            cached_prefix_tokens: 1000,
            ..Candidate::default()
        },
    ];
    let d = p.pipeline("acme").decide(&fleet(2), &request(), &cands);
    assert_eq!(d.placement, Placement::Single(0));
    assert_eq!(d.shadow_agreed, Some(false));
}

#[test]
fn swapping_under_concurrent_decisions_never_mixes_versions() {
    let p = runtime(None);
    let one = p
        .upload(&name("pa-one"), prefix_bytes(), true)
        .unwrap()
        .label();
    let two = p
        .upload(&name("pa-two"), prefix_bytes(), true)
        .unwrap()
        .label();
    let spec = |label: &str| PipelineSpec {
        scorers: vec![WeightedStageSpec {
            stage: StageSpec::new(label, serde_json::Value::Null),
            weight: 1.0,
        }],
        ..PipelineSpec::default()
    };
    // Odd pipeline versions run `one`, even ones `two`.
    p.set_pipeline(&acme(), spec(&one)).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let cands: Vec<Candidate> = (0..8)
        .map(|i| Candidate {
            backend: i,
            cached_prefix_tokens: i * 10,
            ..Candidate::default()
        })
        .collect();
    let fleet = fleet(8);
    std::thread::scope(|s| {
        let deciders: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut seen = 0u32;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let d = p.pipeline("acme").decide(&fleet, &request(), &cands);
                        assert!(d.fault.is_none(), "decision failed: {:?}", d.fault);
                        assert_eq!(d.placement, Placement::Single(7));
                        let expected = if d.pipeline_version % 2 == 1 {
                            &one
                        } else {
                            &two
                        };
                        assert_eq!(d.policies, [expected.as_str().into()], "mixed versions");
                        seen += 1;
                    }
                    seen
                })
            })
            .collect();
        for i in 0..100 {
            p.set_pipeline(&acme(), spec(if i % 2 == 0 { &two } else { &one }))
                .unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for d in deciders {
            assert!(d.join().expect("decider panicked") > 0);
        }
    });
    assert_eq!(p.pipeline("acme").info().version, 101);
}

/// A runtime whose fuel budget lets prefix-affinity score a few candidates but not
/// thousands: a fault that depends on the request, as a client can trigger one.
fn input_dependent_runtime(park_for: Duration) -> Policies {
    let probe = runtime(None);
    probe.set_pipeline(&acme(), prefix_pipeline()).unwrap();
    let few = probe
        .pipeline("acme")
        .decide(&fleet(3), &request(), &candidates())
        .fuel_used;
    let limits = Limits {
        deadline: Duration::from_secs(2),
        fuel_per_call: few * 20,
        park_after_failures: 2,
        park_for,
        ..Limits::default()
    };
    let p = Policies::new(limits, None).expect("engine");
    p.install_shipped().expect("shipped policies load");
    p.set_pipeline(&acme(), prefix_pipeline()).unwrap();
    p
}

fn many_candidates() -> Vec<Candidate> {
    (0..3000u32)
        .map(|i| Candidate {
            backend: i % 3,
            ..Candidate::default()
        })
        .collect()
}

#[test]
fn parking_is_temporary_and_a_passed_trial_call_unparks() {
    let p = input_dependent_runtime(Duration::from_millis(150));
    let t = p.pipeline("acme");
    let fault = |c: &[Candidate]| t.decide(&fleet(3), &request(), c).fault.map(|f| f.kind);
    assert_eq!(fault(&many_candidates()), Some(PolicyFault::OutOfFuel));
    assert_eq!(fault(&many_candidates()), Some(PolicyFault::OutOfFuel));
    // Parked: a request the policy would serve is not even tried.
    assert_eq!(fault(&candidates()), Some(PolicyFault::Parked));
    std::thread::sleep(Duration::from_millis(200));
    // The period is over: one trial call, which passes and unparks.
    assert_eq!(fault(&candidates()), None);
    assert_eq!(fault(&candidates()), None);
}

#[test]
fn a_failed_trial_call_parks_the_policy_again() {
    let p = input_dependent_runtime(Duration::from_millis(150));
    let t = p.pipeline("acme");
    let fault = |c: &[Candidate]| t.decide(&fleet(3), &request(), c).fault.map(|f| f.kind);
    for _ in 0..2 {
        assert_eq!(fault(&many_candidates()), Some(PolicyFault::OutOfFuel));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        fault(&many_candidates()),
        Some(PolicyFault::OutOfFuel),
        "the trial"
    );
    assert_eq!(
        fault(&candidates()),
        Some(PolicyFault::Parked),
        "parked again"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(fault(&candidates()), None);
}
