//! The real `openai` Python package against the router: streaming and non-streaming
//! chat and completions, an error, the model list. Needs `python3` with `openai`
//! installed (`pip install openai`).

use crate::harness::{Fleet, MODEL, Switchyard, TestBackend, run_openai_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_package_streams_and_not() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestBackend::start("a").await;
    let sy = Switchyard::start(dir.path(), &Fleet::new(&[&a]).yaml()).await;
    let run = run_openai_client(&sy.url, MODEL).await;
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    let expected = [
        "ok chat Hello from the backend",
        "ok chat-stream 4 Hello from the backend",
        "ok completion Hello from the backend",
        "ok completion-stream 4 Hello from the backend",
        "ok not-found 404",
        &format!("ok models {MODEL}"),
    ];
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, expected, "stderr:\n{stderr}");
    assert_eq!(a.requests(), 4);
}
