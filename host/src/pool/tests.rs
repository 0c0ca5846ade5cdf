use std::time::Duration;

use super::*;

fn spec(name: &str, models: &[&str]) -> BackendSpec {
    BackendSpec {
        name: crate::names::BackendName::new(name).unwrap(),
        url: "http://127.0.0.1:1".into(),
        models: models.iter().map(|m| m.to_string()).collect(),
        engine: EngineKind::Vllm,
        vendor: String::new(),
        accelerator: String::new(),
        region: String::new(),
        labels: Default::default(),
        role: Default::default(),
        cost_per_hour: 0.0,
        capability: Capability::default(),
        kv_events: None,
        kv_replay: None,
        health_path: None,
    }
}

fn backend(name: &str) -> Arc<Backend> {
    let b = Arc::new(Backend::new(
        spec(name, &["m"]),
        false,
        Breaker::new(1, Duration::from_secs(60)),
    ));
    b.record_health(true, 1);
    b
}

fn fleet(backends: Vec<Arc<Backend>>) -> Fleet {
    Fleet {
        facts: Arc::new(FleetFacts::default()),
        backends,
        stale_after: Duration::from_secs(1),
    }
}

#[test]
fn candidates_skip_down_draining_open_and_other_models() {
    let (up, down, draining, open) = (
        backend("up"),
        backend("down"),
        backend("drain"),
        backend("open"),
    );
    down.mark_down("test");
    draining.set_draining(true);
    open.try_claim(0).unwrap().settle(false);
    let other = Arc::new(Backend::new(
        spec("other", &["x"]),
        false,
        Breaker::new(1, Duration::ZERO),
    ));
    other.record_health(true, 1);
    up.set_load(EngineLoad {
        waiting: 3,
        running: 2,
        kv_usage: 0.5,
        kv_capacity_tokens: None,
        kv_prompt_slots: None,
    });
    let f = fleet(vec![up, down, draining, open, other]);
    let c = f.candidates("m");
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].backend, c[0].waiting, c[0].running), (0, 3, 2));
    assert!(c[0].metrics_age_ms < 1000);
    assert!(f.serves("x") && !f.serves("y"));
}

#[test]
fn claims_count_in_flight_until_dropped() {
    let b = backend("a");
    let mut claim = b.try_claim(100).unwrap();
    assert_eq!(
        (b.in_flight_requests(), b.in_flight_prefill_tokens()),
        (1, 100)
    );
    claim.first_byte();
    assert_eq!(
        (b.in_flight_requests(), b.in_flight_prefill_tokens()),
        (1, 0)
    );
    drop(claim);
    assert_eq!(
        (b.in_flight_requests(), b.in_flight_prefill_tokens()),
        (0, 0)
    );

    b.set_draining(true);
    assert!(
        b.try_claim(5).is_none(),
        "a draining backend takes no claim"
    );
    assert_eq!(
        (b.in_flight_requests(), b.in_flight_prefill_tokens()),
        (0, 0)
    );
}

#[tokio::test]
async fn changes_persist_and_bump_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let pool = Pool::start(
        PoolSettings::default(),
        vec![spec("a", &["m"])],
        Some(state.clone()),
    );
    let g0 = pool.fleet().facts.generation;
    pool.add(spec("b", &["m"])).unwrap();
    assert!(matches!(pool.add(spec("b", &["m"])), Err(Error::Exists(_))));
    assert!(matches!(pool.remove("a"), Err(Error::NotDrained(_))));
    pool.set_draining("a", true).unwrap();
    pool.remove("a").unwrap();
    let fleet = pool.fleet();
    assert!(fleet.facts.generation > g0);
    assert_eq!(fleet.facts.backends.len(), 1);
    assert_eq!(fleet.facts.backends[0].name, "b");

    let restored = Pool::start(
        PoolSettings::default(),
        vec![spec("a", &["m"])],
        Some(state),
    );
    let names: Vec<String> = restored
        .statuses()
        .into_iter()
        .map(|s| s.spec.name.into())
        .collect();
    assert_eq!(
        names,
        vec!["b".to_string()],
        "a stays removed, b stays added"
    );
}

#[tokio::test]
async fn a_restart_keeps_every_backend_at_its_fleet_index() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    let configured = vec![spec("a", &["m"]), spec("b", &["m"])];
    let pool = Pool::start(
        PoolSettings::default(),
        configured.clone(),
        Some(state.clone()),
    );
    pool.add(spec("z", &["m"])).unwrap();
    pool.add(spec("c", &["m"])).unwrap();
    pool.set_draining("a", true).unwrap();
    pool.set_draining("z", true).unwrap();
    let order = |p: &Pool| -> Vec<(String, bool)> {
        p.statuses()
            .into_iter()
            .map(|s| (s.spec.name.into(), s.draining))
            .collect()
    };
    let before = order(&pool);
    drop(pool);
    let restored = Pool::start(PoolSettings::default(), configured, Some(state.clone()));
    assert_eq!(order(&restored), before);
    assert!(state.damaged().is_empty());
}

#[tokio::test]
async fn a_damaged_stored_backend_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(dir.path()).unwrap();
    state.write("backends/x.json", b"{ truncated").unwrap();
    state.write("removed-backends/..x", b"removed").unwrap();
    let pool = Pool::start(
        PoolSettings::default(),
        vec![spec("a", &["m"])],
        Some(state.clone()),
    );
    assert_eq!(pool.statuses().len(), 1);
    let entries: Vec<String> = state.damaged().into_iter().map(|d| d.entry).collect();
    assert_eq!(entries, ["backends/x.json", "removed-backends/..x"]);
}
