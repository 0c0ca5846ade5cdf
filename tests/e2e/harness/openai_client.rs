//! Runs `tests/py/openai_client.py`, the real `openai` Python package, against a router.

/// What the client printed, one `ok <step> ...` line per step.
pub struct ClientRun {
    /// Standard output.
    pub stdout: String,
    /// Standard error, for failure messages.
    pub stderr: String,
}

/// Runs the client against `url` for `model` and asserts it exited successfully.
pub async fn run_openai_client(url: &str, model: &str) -> ClientRun {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/openai_client.py");
    let (url, model) = (url.to_owned(), model.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(&script)
            .arg(&url)
            .arg(&model)
            .output()
    })
    .await
    .expect("client task")
    .expect("run python3");
    let run = ClientRun {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        out.status.success(),
        "openai client failed (is `pip install openai` done?)\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    run
}
