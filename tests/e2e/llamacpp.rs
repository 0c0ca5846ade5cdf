//! Two real llama.cpp `llama-server` processes behind the router: the `openai` Python
//! client streaming and not, the `llamacpp:*` metric names scraped, and real prompt
//! caching. Needs `tests/llama/setup.sh` (run by `cargo xtask test`); without its build
//! the tests fail, naming the script.

use std::path::{Path, PathBuf};

use crate::harness::{
    ExternalBackend, Fleet, LEAST_LOAD, MODEL, Switchyard, client, free_port, run_openai_client,
};

/// The load metrics the router reads from llama.cpp. The engine's third name,
/// `llamacpp:kv_cache_usage_ratio`, is no longer exposed by current llama.cpp (this build,
/// 11434), so the router's KV usage figure for it stays 0.
const METRICS: [&str; 2] = ["llamacpp:requests_processing", "llamacpp:requests_deferred"];

/// `$LLAMA_SERVER` or the setup script's build, and `$LLAMA_MODEL` or its model.
fn artifacts() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace");
    let pick = |var: &str, default: &str| {
        std::env::var(var)
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join(default))
    };
    let server = pick("LLAMA_SERVER", "target/llama.cpp/build/bin/llama-server");
    let model = pick("LLAMA_MODEL", "target/llama-model/tiny-llama.gguf");
    for p in [&server, &model] {
        assert!(
            p.exists(),
            "{} is missing: run tests/llama/setup.sh (cargo xtask test does)",
            p.display()
        );
    }
    (server, model)
}

/// Starts `llama-server` named `name` on a free port; ready when `/health` answers 200.
pub(crate) async fn llama(name: &str) -> ExternalBackend {
    let (server, model) = artifacts();
    let model = model.to_string_lossy().into_owned();
    let args = [
        "-m",
        &model,
        "--metrics",
        "-np",
        "2",
        "-c",
        "4096",
        "-t",
        "1",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
    ];
    ExternalBackend::start(name, free_port(), &server, &args, "/health").await
}

/// Two llama-servers and a router over them (engine kind `llamacpp`); the native
/// least-load decides, so a request goes to `llama-a` unless it is busier.
pub(crate) async fn fleet(dir: &Path) -> (ExternalBackend, ExternalBackend, Switchyard) {
    let (a, b) = tokio::join!(llama("llama-a"), llama("llama-b"));
    let mut f = Fleet::new(&[]);
    f.extra = LEAST_LOAD.into();
    for backend in [&a, &b] {
        f.backends
            .push((backend.name.clone(), backend.url.clone(), "llamacpp"));
    }
    let sy = Switchyard::start(dir, &f.yaml()).await;
    (a, b, sy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_client_through_router_to_llama_server() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, _b, sy) = fleet(dir.path()).await;
    let run = run_openai_client(&sy.url, MODEL).await;
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    // The model's text is random (and may hold newlines): check each step's tag line and,
    // for streams, that several chunks arrived.
    let tagged = |tag: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .unwrap_or_else(|| panic!("no {tag:?} line\nstdout:\n{stdout}\nstderr:\n{stderr}"))
            .to_owned()
    };
    for tag in ["ok chat-stream ", "ok completion-stream "] {
        let chunks: usize = tagged(tag)
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("chunk count");
        assert!(chunks >= 2, "{tag}: {chunks} chunks\nstdout:\n{stdout}");
    }
    tagged("ok chat ");
    tagged("ok completion ");
    assert_eq!(tagged("ok not-found "), "404");
    assert_eq!(tagged("ok models "), MODEL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llamacpp_metric_names_are_scraped() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, sy) = fleet(dir.path()).await;
    for backend in [&a, &b] {
        let text = client()
            .get(format!("{}/metrics", backend.url))
            .send()
            .await
            .expect("scrape llama-server")
            .text()
            .await
            .unwrap();
        for name in METRICS {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{} does not expose {name}:\n{text}",
                backend.name
            );
        }
    }
    // The router's view: fresh scraped figures from both engines.
    crate::harness::eventually(10, "fresh llamacpp figures for both backends", || async {
        let all = sy.admin_get("/admin/backends").await;
        all.as_array().is_some_and(|list| {
            list.len() == 2
                && list
                    .iter()
                    .all(|b| b["metrics_stale"] == false && b["load"]["running"] == 0)
        })
    })
    .await;
    // A long generation sent to llama-a directly (not through the router, so only the
    // scrape can see it) shows up as a running request in the router's view.
    let long = serde_json::json!({
        "prompt": "Once upon a time", "max_tokens": 1800, "ignore_eos": true, "stream": true
    });
    let url = format!("{}/v1/completions", a.url);
    let generation = tokio::spawn(async move {
        let mut r = client().post(url).json(&long).send().await.unwrap();
        while let Ok(Some(_)) = r.chunk().await {}
    });
    crate::harness::eventually(
        10,
        "llama-a running 1 in the router's scraped view",
        || async {
            let s = sy.backend("llama-a").await;
            s["load"]["running"] == 1 && s["metrics_stale"] == false
        },
    )
    .await;
    generation.abort();
    assert_eq!(sy.backend("llama-b").await["load"]["running"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_prompt_hits_the_prompt_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, _b, sy) = fleet(dir.path()).await;
    let prompt = "The router sends every request to the backend that holds its prefix. ".repeat(20);
    let body = serde_json::json!({
        "model": MODEL, "prompt": prompt, "max_tokens": 2, "cache_prompt": true
    });
    // Three identical requests over two backends: at least two land on the same one, and
    // the later of those reuses the cached prompt there.
    let mut seen: Vec<(String, u64, u64)> = Vec::new();
    for _ in 0..3 {
        let r = client()
            .post(format!("{}/v1/completions", sy.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let backend = r.headers()["x-switchyard-backend"]
            .to_str()
            .unwrap()
            .to_owned();
        let v: serde_json::Value = r.json().await.unwrap();
        let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().expect("usage");
        let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0);
        seen.push((backend, prompt_tokens, cached));
    }
    for (i, (backend, prompt_tokens, cached)) in seen.iter().enumerate() {
        let earlier = seen[..i].iter().any(|(b, _, _)| b == backend);
        if earlier {
            assert!(
                *cached > *prompt_tokens / 2,
                "repeat on {backend} reused {cached} of {prompt_tokens} tokens: {seen:?}"
            );
        } else {
            assert!(
                *cached == 0,
                "first request on {backend} was cached: {seen:?}"
            );
        }
    }
}

/// The router learns each llama-server's cache from `/props` (`-np 2 -c 4096`: two
/// slots, 4096 tokens), shows it in `GET /admin/backends`, and tracks the approximate
/// index of each backend as llama.cpp keeps it: one prompt per slot, so after six
/// unrelated prompts no backend is believed to hold more than two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_capacity_is_learned_from_llama_server_props() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, _b, sy) = fleet(dir.path()).await;
    crate::harness::eventually(10, "capacity of both backends learned", || async {
        let all = sy.admin_get("/admin/backends").await;
        all.as_array().is_some_and(|list| {
            list.len() == 2
                && list.iter().all(|b| {
                    b["load"]["kv_capacity_tokens"] == 4096 && b["load"]["kv_prompt_slots"] == 2
                })
        })
    })
    .await;
    let subjects = ["router", "kernel", "garden", "harbour", "violin", "glacier"];
    let mut blocks_per_prompt = 0;
    for subject in subjects {
        let r = client()
            .post(format!("{}/v1/completions", sy.url))
            .json(&serde_json::json!({
                "model": MODEL, "max_tokens": 2,
                "prompt": format!("The {subject} kept a careful record of everything it saw. ").repeat(8),
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        if blocks_per_prompt == 0 {
            let served = r.headers()["x-switchyard-backend"]
                .to_str()
                .unwrap()
                .to_owned();
            blocks_per_prompt = sy.backend(&served).await["kv"]["blocks"].as_u64().unwrap();
        }
    }
    assert!(blocks_per_prompt > 0, "the first prompt is tracked");
    let mut held = 0;
    for b in sy.admin_get("/admin/backends").await.as_array().unwrap() {
        let kv = &b["kv"];
        if kv["prompt_slots"].is_null() {
            assert_eq!(
                kv["blocks"], 0,
                "a backend that served nothing holds nothing: {b}"
            );
            continue;
        }
        assert_eq!(kv["prompt_slots"]["slots"], 2, "{b}");
        let prompts = kv["prompt_slots"]["held"].as_u64().unwrap_or(0);
        assert!(prompts <= 2, "one prompt per slot: {b}");
        assert!(
            kv["blocks"].as_u64().unwrap() <= 2 * blocks_per_prompt + 2,
            "the replaced prompts' blocks are forgotten: {b}"
        );
        held += prompts;
    }
    assert!(held >= 2, "six prompts over two backends fill slots");

    // A request running holds its slot: lookups see it busy until the claim ends, here
    // by the client going away mid-stream.
    for b in sy.admin_get("/admin/backends").await.as_array().unwrap() {
        let busy = &b["kv"]["prompt_slots"]["busy"];
        assert!(
            busy.is_null() || *busy == 0,
            "answered requests free their slot: {b}"
        );
    }
    let mut stream = client()
        .post(format!("{}/v1/completions", sy.url))
        .json(&serde_json::json!({
            "model": MODEL, "max_tokens": 400, "stream": true, "ignore_eos": true,
            "prompt": "The lighthouse kept a careful record of every ship it saw. ".repeat(8),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let served = stream.headers()["x-switchyard-backend"]
        .to_str()
        .unwrap()
        .to_owned();
    stream.chunk().await.unwrap().expect("a first chunk");
    assert_eq!(
        sy.backend(&served).await["kv"]["prompt_slots"]["busy"],
        1,
        "the running request's slot is busy"
    );
    // The next decision sees that engine's KV cache half in use (one of two slots).
    let r = client()
        .post(format!("{}/v1/completions", sy.url))
        .json(
            &serde_json::json!({"model": MODEL, "max_tokens": 2, "prompt": "The harbour at dawn."}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let decision = &sy.admin_get("/admin/decisions?limit=1").await[0];
    let figures = decision["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == served.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(figures["kv_usage"], 0.5, "{decision}");
    drop(stream);
    crate::harness::eventually(10, "the abandoned request's slot freed", || async {
        sy.backend(&served).await["kv"]["prompt_slots"]["busy"] == 0
    })
    .await;
}
