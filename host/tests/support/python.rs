//! Builds Python policies with componentize-py for the tests, once per content: each
//! component is cached under `target/python-policies/` by a hash of the policy's files,
//! the Python SDK, the WIT and the componentize-py release, so later runs reuse it
//! (a build takes ~15 s). Shared by `host/tests` and `tests/e2e` (included by path).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The componentize-py release the tests build with (`cargo xtask test` installs it).
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository")
}

/// The files under `dir` ending in one of `exts`, sorted, skipping caches.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                if name != "__pycache__" && !name.starts_with('.') {
                    todo.push(path);
                }
            } else if exts.iter().any(|e| name.ends_with(e)) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Fails with how to install componentize-py unless the pinned release is there.
fn check_componentize_py() {
    let out = Command::new("python3")
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('componentize-py'))",
        ])
        .output()
        .expect("run python3");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && version == COMPONENTIZE_PY,
        "componentize-py {COMPONENTIZE_PY} is needed to build Python policies (found {version:?}): \
         `pip install componentize-py=={COMPONENTIZE_PY}` (`cargo xtask test` installs it)\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the Python policy in `dir` (its `app` module) for `world` against the WIT in
/// `dir/wit` (a scaffolded project's copy), else this repository's, and this
/// repository's Python SDK; returns the component's path.
pub fn build(dir: &Path, world: &str) -> PathBuf {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let repo = repo();
    let sdk = repo.join("sdk/python");
    let wit = match dir.join("wit") {
        own if own.is_dir() => own,
        _ => repo.join("wit"),
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (COMPONENTIZE_PY, world).hash(&mut h);
    for file in files(dir, &[".py"])
        .into_iter()
        .chain(files(&sdk.join("switchyard_policy"), &[".py"]))
        .chain(files(&wit, &[".wit"]))
    {
        std::fs::read(&file).unwrap().hash(&mut h);
    }
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let cache = repo.join("target/python-policies");
    let out = cache.join(format!("{name}-{:016x}.wasm", h.finish()));
    if out.is_file() {
        return out;
    }
    check_componentize_py();
    std::fs::create_dir_all(&cache).unwrap();
    let partial = out.with_extension(format!("{}.partial", std::process::id()));
    let status = Command::new("python3")
        .args([
            "-c",
            "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
            "-q",
            "-d",
        ])
        .arg(&wit)
        .args(["-w", world, "componentize", "app", "-p"])
        .arg(dir)
        .arg("-p")
        .arg(&sdk)
        .arg("-o")
        .arg(&partial)
        .status()
        .expect("run componentize-py");
    assert!(
        status.success(),
        "componentize-py failed on {}",
        dir.display()
    );
    std::fs::rename(&partial, &out).unwrap();
    out
}
