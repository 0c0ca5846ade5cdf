//! Builds every policy under `policies/` to a WebAssembly component and embeds them, so
//! the `switchyard` binary ships its policies and runs with no set-up.
//!
//! The guests build with a nested `cargo build --target wasm32-wasip2 --profile guest`
//! into `target/guest-build` (a separate target directory, so the outer build's lock
//! is not contended).

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest
        .parent()
        .expect("host/ sits in the workspace")
        .to_path_buf();
    // NB: the Rust SDK only: `sdk/python` (and the `__pycache__` its tests write) does
    // not go into the guests.
    for dir in ["policies", "sdk/src", "sdk/Cargo.toml", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let names = policy_names(&root.join("policies"));
    let target_dir = root.join("target").join("guest-build");
    build_guests(&root, &target_dir, &names);

    let mut out = String::from("/// Shipped policies as (name, component bytes).\n");
    out.push_str("pub(crate) const COMPONENTS: &[(&str, &[u8])] = &[\n");
    for name in &names {
        let file = target_dir
            .join(TARGET)
            .join("guest")
            .join(format!("{}.wasm", name.replace('-', "_")));
        assert!(file.exists(), "built component missing: {}", file.display());
        writeln!(
            out,
            "    ({name:?}, include_bytes!({:?})),",
            file.display().to_string()
        )
        .expect("write to string");
    }
    out.push_str("];\n");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out_dir.join("shipped.rs"), out).expect("write shipped.rs");
}

fn policy_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("policies/ exists")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

fn build_guests(root: &Path, target_dir: &Path, names: &[String]) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--quiet", "--target", TARGET, "--profile", "guest"])
        .env("CARGO_TARGET_DIR", target_dir);
    for name in names {
        cmd.args(["-p", name]);
    }
    // NB: the outer build's flags and wrappers (clippy, coverage) are for the host
    // target; they must not leak into the guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the policies");
    assert!(
        status.success(),
        "building the policies to {TARGET} failed; is the target installed? \
         run `rustup target add {TARGET}` (or use `cargo xtask`, which does)"
    );
}
