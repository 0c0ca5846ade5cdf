//! Policy authoring outside this repository: `switchyard policy new --path` creates a
//! standalone crate in a temporary directory, which unit-tests natively, builds for
//! `wasm32-wasip2` against the SDK and passes `switchyard policy check`; with
//! `--lang python` a Python project, which passes pytest, builds with componentize-py
//! and runs in `switchyard policy run`. The Python SDK's and the Python example's own
//! tests run here too.
//!
//! The crate builds into `target/standalone-policy` with this workspace's lock file
//! copied in (the same dependency versions, nothing resolved anew), so after the first
//! run the builds take about a second; Python components are cached by content in
//! `target/python-policies`.

#[path = "support/python.rs"]
mod python;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository")
}

/// Runs `cmd`; on failure panics with the command, its status and output.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn switchyard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

/// Cargo in `dir`, building into `target/standalone-policy`, without the outer build's
/// flags and wrappers.
fn cargo(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(dir)
        .env("CARGO_TARGET_DIR", repo().join("target/standalone-policy"));
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn a_standalone_rust_policy_builds_outside_the_repository_and_passes_check() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().canonicalize().unwrap().join("my-scorer");
    assert!(
        !dir.starts_with(repo()),
        "{} is inside the repository",
        dir.display()
    );

    run(switchyard()
        .args(["policy", "new", "my-scorer", "--kind", "scorer", "--path"])
        .arg(&dir));
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let sdk = repo().join("sdk");
    assert!(
        manifest.contains(&format!("path = \"{}\"", sdk.display())),
        "{manifest}"
    );
    std::fs::copy(repo().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();

    run(cargo(&dir).args(["test", "--quiet"]));
    run(cargo(&dir).args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"]));
    let wasm = repo().join("target/standalone-policy/wasm32-wasip2/release/my_scorer.wasm");
    let out = run(switchyard().args(["policy", "check", "--json"]).arg(&wasm));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["world"], "scorer", "{report}");
    assert_eq!(report["name"], "my-scorer", "{report}");
}

#[test]
fn policy_new_refuses_a_directory_that_is_not_empty_and_an_sdk_that_is_not_one() {
    let tmp = tempfile::tempdir().expect("temp dir");
    std::fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
    let out = switchyard()
        .args(["policy", "new", "p", "--path"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = switchyard()
        .args(["policy", "new", "p", "--path"])
        .arg(tmp.path().join("p"))
        .arg("--sdk")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no Cargo.toml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!tmp.path().join("p").exists(), "nothing written");
}

/// `python3 -m pytest -q` in `dir` (which holds the pytest configuration), writing
/// nothing beside the sources.
fn pytest(dir: &Path) -> Output {
    run(Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(dir))
}

#[test]
fn the_python_sdk_and_the_python_example_pass_their_native_tests() {
    for dir in ["sdk/python", "examples/python-least-waiting"] {
        let out = pytest(&repo().join(dir));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(" passed"),
            "{dir}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn a_standalone_python_policy_tests_builds_and_runs_outside_the_repository() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().canonicalize().unwrap().join("py-placer");
    run(switchyard()
        .args([
            "policy",
            "new",
            "py-placer",
            "--lang",
            "python",
            "--kind",
            "placer",
            "--path",
        ])
        .arg(&dir));
    pytest(&dir);
    let wasm = python::build(&dir, "placer");
    let case = repo().join("examples/policy-case.json");
    let out = run(switchyard()
        .args(["policy", "run", "--json"])
        .arg(&wasm)
        .arg("--input")
        .arg(&case));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    // The scaffold's placer: the fewest waiting and in-flight requests, backend 1.
    assert_eq!(report["decision"]["placement"]["single"], 1, "{report}");
}
