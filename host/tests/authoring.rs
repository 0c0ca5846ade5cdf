//! Policy authoring outside this repository: `switchyard policy new --path` creates a
//! standalone crate in a temporary directory, which unit-tests natively, builds for
//! `wasm32-wasip2` against the SDK and passes `switchyard policy check`.
//!
//! The crate builds into `target/standalone-policy` with this workspace's lock file
//! copied in (the same dependency versions, nothing resolved anew), so after the first
//! run the builds take about a second.

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
