//! Shared by the integration tests that run the test guests in `tests/guests/`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn guests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/guests")
}

/// Builds every test guest once per test binary and returns `name`'s component bytes.
pub fn guest(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--target",
                "wasm32-wasip2",
                "--profile",
                "guest",
            ])
            .arg("--manifest-path")
            .arg(guests_dir().join("Cargo.toml"))
            // NB: explicit, so a `CARGO_TARGET_DIR` in the environment does not send the
            // components somewhere this function does not read them from.
            .arg("--target-dir")
            .arg(guests_dir().join("target"))
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("run cargo for the test guests");
        assert!(status.success(), "building tests/guests failed");
    });
    let file = guests_dir()
        .join("target/wasm32-wasip2/guest")
        .join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}
