//! Project automation, so a newcomer needs two commands and nothing else:
//!
//! - `cargo xtask demo [ARGS]`: installs the `wasm32-wasip2` target if missing, then runs
//!   `switchyard demo` (release build) on its embedded default fleet and workload.
//! - `cargo xtask test`: installs the wasm target, the Python packages the end-to-end
//!   tests drive the router with and the Python policy tools (componentize-py, pinned;
//!   pytest), builds a real llama.cpp `llama-server` and a tiny model
//!   (`tests/llama/setup.sh`, cached under `target/`), installs `nats-server` for the
//!   replica tests when missing (`tests/nats/setup.sh`), then runs the whole workspace's
//!   tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const WASM_TARGET: &str = "wasm32-wasip2";

/// Python packages the tests use, each with a check that it is there: the real OpenAI
/// client, a ZeroMQ publisher speaking vLLM's KV-event wire format, the GGUF writer of
/// the tiny llama.cpp model; and for Python policies componentize-py (the exact release
/// they are built and measured with) and pytest (the Python SDK's native tests).
const PYTHON_PACKAGES: &[(&str, &str)] = &[
    ("import openai", "openai>=1.40"),
    ("import zmq", "pyzmq>=25"),
    ("import msgspec", "msgspec>=0.18"),
    ("import gguf", "gguf>=0.10"),
    (
        "import importlib.metadata as m; assert m.version('componentize-py') == '0.25.1'",
        "componentize-py==0.25.1",
    ),
    ("import pytest", "pytest>=7"),
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("demo") => {
            ensure_wasm_target()?;
            cargo(
                &root,
                &[
                    &["run", "--release", "-p", "switchyard", "--", "demo"],
                    &str_refs(&args[1..])[..],
                ]
                .concat(),
            )
        }
        Some("test") => {
            ensure_wasm_target()?;
            ensure_python_packages()?;
            llama_setup(&root)?;
            setup_script(
                &root,
                "tests/nats/setup.sh",
                "nats-server for the replica tests",
            )?;
            cargo(
                &root,
                &[&["test", "--workspace"], &str_refs(&args[1..])[..]].concat(),
            )
        }
        _ => bail!("usage: cargo xtask <demo [ARGS] | test [ARGS]>"),
    }
}

fn str_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The workspace `cargo xtask` was run in.
///
/// NB: `cargo run` sets `CARGO_MANIFEST_DIR` for the process too, and that one wins over
/// the compiled-in path: two checkouts sharing one `CARGO_TARGET_DIR` share the
/// `target/debug/xtask` binary, and one built in the other checkout would run that
/// checkout's scripts and tests.
fn workspace_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .parent()
        .expect("xtask/ sits in the workspace")
        .to_path_buf()
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .current_dir(root)
        .status()
        .context("run cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs `tests/llama/setup.sh`: builds `llama-server` (first run only, several minutes;
/// installs `cmake` and `ninja-build` with apt if missing) and writes the tiny model.
fn llama_setup(root: &Path) -> Result<()> {
    setup_script(
        root,
        "tests/llama/setup.sh",
        "llama.cpp server and tiny model for the e2e tests",
    )
}

/// Runs the set-up script `script` (relative to the root), which installs `what`.
fn setup_script(root: &Path, script: &str, what: &str) -> Result<()> {
    eprintln!("xtask: {script} ({what})");
    let status = Command::new("bash")
        .arg(root.join(script))
        .current_dir(root)
        .status()
        .with_context(|| format!("run {script}"))?;
    if !status.success() {
        bail!("{script} failed ({status})");
    }
    Ok(())
}

fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .context("run rustc")?;
    let libdir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && Path::new(&libdir).exists() {
        return Ok(());
    }
    eprintln!("xtask: installing the {WASM_TARGET} target (policies build to it)");
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
        .context("run rustup; install the target by hand with `rustup target add wasm32-wasip2`")?;
    if !status.success() {
        bail!("rustup target add {WASM_TARGET} failed");
    }
    Ok(())
}

fn ensure_python_packages() -> Result<()> {
    let missing: Vec<&str> = PYTHON_PACKAGES
        .iter()
        .filter(|(check, _)| {
            !Command::new("python3")
                .args(["-c", check])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .map(|(_, spec)| *spec)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Python packages for the tests: {missing:?}");
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(&missing)
        .status()
        .context("run pip")?;
    if !status.success() {
        bail!("pip install {missing:?} failed");
    }
    Ok(())
}
