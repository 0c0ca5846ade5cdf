use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Request};
use tower::ServiceExt;

use super::*;
use crate::config::{AuthConfig, SplitFallback, TenantConfig};
use crate::policy::{Limits, Variant};
use crate::pool::PoolSettings;

fn decision(placement: Placement, scores: Vec<(u32, f32)>) -> Decision {
    Decision {
        placement,
        variant: Variant::Active,
        pipeline_version: 1,
        policies: Vec::new(),
        scores,
        exclusions: Vec::new(),
        fault: None,
        fuel_used: 0,
        shadow_agreed: None,
        budget_exhausted: false,
        elapsed: Duration::ZERO,
    }
}

fn candidate(backend: u32, in_flight_requests: u32) -> Candidate {
    Candidate {
        backend,
        in_flight_requests,
        ..Candidate::default()
    }
}

fn facts(roles: &[Role]) -> FleetFacts {
    FleetFacts {
        generation: 1,
        backends: roles
            .iter()
            .map(|&role| crate::policy::BackendFacts {
                role,
                ..Default::default()
            })
            .collect(),
    }
}

#[test]
fn retries_follow_scores_then_load() {
    let cands = [
        candidate(0, 0),
        candidate(1, 5),
        candidate(2, 0),
        candidate(3, 1),
    ];
    let any = facts(&[Role::Any; 4]);
    let d = decision(
        Placement::Single(2),
        vec![(0, 0.1), (1, 0.9), (2, 0.5), (3, 0.1)],
    );
    assert_eq!(
        route(&d, &cands, &any).unwrap(),
        Route::Single(vec![2, 1, 0, 3])
    );
}

#[test]
fn split_legs_fall_back_only_to_backends_their_role_allows() {
    let cands = [
        candidate(0, 0),
        candidate(1, 5),
        candidate(2, 0),
        candidate(3, 1),
    ];
    let roles = facts(&[Role::Prefill, Role::Decode, Role::Any, Role::Decode]);
    let d = decision(
        Placement::Split {
            prefill: 0,
            decode: 3,
        },
        Vec::new(),
    );
    assert_eq!(
        route(&d, &cands, &roles).unwrap(),
        Route::Split(SplitRoute {
            prefill: vec![0, 2],
            decode: vec![3, 2, 1],
        })
    );
}

#[test]
fn a_policy_rejection_keeps_its_status() {
    let d = decision(
        Placement::Reject {
            status: 451,
            message: "not here".into(),
        },
        Vec::new(),
    );
    let err = route(&d, &[candidate(0, 0)], &facts(&[Role::Any])).unwrap_err();
    assert!(matches!(err, ApiError::Rejected { status, .. } if status.as_u16() == 451));
}

fn tenant(name: &str, key: &str, max_concurrent: Option<u32>) -> TenantConfig {
    TenantConfig {
        name: name.parse().expect("a valid tenant name"),
        api_keys: vec![key.into()],
        pipeline: None,
        max_concurrent,
        requests_per_s: None,
        tokens_per_s: None,
        policy_quota: Default::default(),
        policy_budget: None,
        cache_isolation: false,
    }
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn tenants_come_from_keys_then_the_header() {
    let auth = AuthConfig {
        require_api_key: false,
        tenant_header: Some(HeaderName::from_static("x-tenant")),
    };
    let open = TenantConfig {
        api_keys: Vec::new(),
        ..tenant("open", "", None)
    };
    let t = Tenants::new(
        &auth,
        &[tenant("acme", "k1", None), tenant("beta", "k2", None), open],
        &[0; 32],
    );
    let name = |h: HeaderMap| t.resolve(&h).unwrap().name.clone();
    assert_eq!(name(headers(&[("authorization", "Bearer k2")])), "beta");
    assert_eq!(name(headers(&[("x-tenant", "open")])), "open");
    assert_eq!(name(headers(&[("x-tenant", "nobody")])), "default");
    assert_eq!(
        name(headers(&[
            ("authorization", "Bearer k1"),
            ("x-tenant", "beta")
        ])),
        "acme"
    );

    let strict = Tenants::new(
        &AuthConfig {
            require_api_key: true,
            tenant_header: None,
        },
        &[tenant("acme", "k1", None)],
        &[0; 32],
    );
    assert!(matches!(
        strict.resolve(&headers(&[("authorization", "Bearer nope")])),
        Err(ApiError::Unauthorized)
    ));
    assert!(matches!(
        strict.resolve(&HeaderMap::new()),
        Err(ApiError::Unauthorized)
    ));
}

#[test]
fn a_tenant_header_never_selects_a_tenant_that_has_api_keys() {
    let auth = AuthConfig {
        require_api_key: false,
        tenant_header: Some(HeaderName::from_static("x-tenant")),
    };
    let t = Tenants::new(&auth, &[tenant("acme", "k1", None)], &[0; 32]);
    assert!(matches!(
        t.resolve(&headers(&[("x-tenant", "acme")])),
        Err(ApiError::KeyRequired(name)) if name == "acme"
    ));
    assert!(matches!(
        t.resolve(&headers(&[
            ("authorization", "Bearer wrong"),
            ("x-tenant", "acme")
        ])),
        Err(ApiError::KeyRequired(_))
    ));
    let keyed = t
        .resolve(&headers(&[
            ("authorization", "Bearer k1"),
            ("x-tenant", "acme"),
        ]))
        .unwrap();
    assert_eq!(keyed.name, "acme");
}

#[test]
fn concurrency_slots_return_on_drop() {
    let t = Tenants::new(
        &AuthConfig::default(),
        &[tenant("default", "k", Some(1))],
        &[0; 32],
    );
    let tenant = t.resolve(&HeaderMap::new()).unwrap();
    let first = tenant.admit(10).unwrap();
    assert!(matches!(
        tenant.admit(10),
        Err(ApiError::RateLimited {
            limit: "concurrency",
            ..
        })
    ));
    drop(first);
    assert!(tenant.admit(10).is_ok());
}

#[tokio::test]
async fn router_answers_without_backends() {
    let app = App::new(AppParts {
        pool: Pool::start(PoolSettings::default(), Vec::new(), None),
        policies: Policies::new(Limits::default(), None).unwrap(),
        tenants: Tenants::new(&AuthConfig::default(), &[], &[0; 32]),
        settings: ProxySettings {
            max_body_bytes: 1024,
            attempt_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            max_attempts: 2,
            decision_log: 8,
            split_fallback: SplitFallback::default(),
            max_resumes: 2,
            stream_idle_timeout: None,
            label_headers: Vec::new(),
            default_max_tokens: 1024,
        },
        decisions: Arc::new(DecisionLog::new(8)),
        metrics: ProxyMetrics::default(),
        registry: Arc::new(Registry::default()),
        kv: switchyard_kv::KvIndex::new(&switchyard_kv::KvConfig::default()).unwrap(),
        state: None,
        signals: None,
    });
    let call = |req: Request<Body>| router(app.clone()).oneshot(req);
    let post = |body: &'static str| {
        Request::post("/v1/chat/completions")
            .header("x-request-id", "r-1")
            .body(Body::from(body))
            .unwrap()
    };
    let r = call(post(r#"{"model":"m","messages":[]}"#)).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["x-request-id"], "r-1");
    let r = call(post("{")).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = call(Request::get("/ready").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = call(Request::get("/v1/models").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
    assert_eq!(&body[..], br#"{"data":[],"object":"list"}"#);
}
