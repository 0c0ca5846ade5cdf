//! `switchyard policy new`: scaffolds a policy: a Rust crate, either a member of this
//! repository's workspace (`policies/NAME`) or a standalone crate anywhere (`--path`)
//! that builds against the SDK on its own; or a Python project (`--lang python`) built
//! with componentize-py against the WIT it carries and the Python SDK.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// World choice for `policy new`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// Removes backends.
    Filter,
    /// Rates backends.
    Scorer,
    /// Takes the whole decision.
    Placer,
}

impl Kind {
    fn trait_name(self) -> &'static str {
        match self {
            Kind::Filter => "Filter",
            Kind::Scorer => "Scorer",
            Kind::Placer => "Placer",
        }
    }

    fn world(self) -> &'static str {
        match self {
            Kind::Filter => "filter",
            Kind::Scorer => "scorer",
            Kind::Placer => "placer",
        }
    }
}

/// Language choice for `policy new`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A Rust crate built with cargo for `wasm32-wasip2`.
    Rust,
    /// A Python module built with componentize-py.
    Python,
}

/// The componentize-py release Python policies are built and tested with.
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// The contract, written into a Python project (componentize-py reads the WIT).
const WIT: [(&str, &str); 3] = [
    ("wit/host.wit", include_str!("../../../wit/host.wit")),
    ("wit/types.wit", include_str!("../../../wit/types.wit")),
    ("wit/worlds.wit", include_str!("../../../wit/worlds.wit")),
];

/// Where the new policy goes and what it builds against.
#[derive(Debug)]
pub struct Target {
    /// Policy name, lowercase kebab-case.
    pub name: String,
    /// The world it targets.
    pub kind: Kind,
    /// The language it is written in.
    pub lang: Lang,
    /// Parent directory of a workspace member (`policies`), used without `path`.
    pub dir: PathBuf,
    /// The standalone project's own directory.
    pub path: Option<PathBuf>,
    /// The SDK directory (this repository's `sdk/`), for a standalone crate or a Python
    /// project.
    pub sdk: Option<PathBuf>,
}

/// The SDK of the source tree this binary was built from, if it is still there.
fn built_from_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    sdk.join("Cargo.toml").is_file().then_some(sdk)
}

/// The SDK a standalone project builds against: `--sdk`, else the one beside the
/// source tree this binary was built from; `None` when neither exists.
fn sdk_dir(explicit: Option<&Path>) -> Result<Option<PathBuf>> {
    let dir = match explicit {
        Some(dir) => {
            let manifest = dir.join("Cargo.toml");
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("--sdk {}: no Cargo.toml", dir.display()))?;
            if !text.contains("name = \"switchyard-policy-sdk\"") {
                bail!(
                    "--sdk {}: not the switchyard-policy-sdk crate (the repository's `sdk/` directory)",
                    dir.display()
                );
            }
            dir.to_path_buf()
        }
        None => match built_from_sdk() {
            Some(dir) => dir,
            None => return Ok(None),
        },
    };
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolve {}", dir.display()))?;
    Ok(Some(dir))
}

/// Scaffolds the policy; prints where it went and how to build it.
pub fn scaffold(t: &Target) -> Result<()> {
    if t.name.is_empty()
        || !t
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || !t.name.as_bytes()[0].is_ascii_lowercase()
    {
        bail!(
            "policy name `{}` must start with a lowercase letter and hold only lowercase letters, digits and `-`",
            t.name
        );
    }
    let root = match &t.path {
        Some(path) => path.clone(),
        None => t.dir.join(&t.name),
    };
    if root.exists()
        && std::fs::read_dir(&root)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} already exists and is not empty", root.display());
    }
    let files = match (t.lang, &t.path) {
        (Lang::Python, _) => {
            let sdk = sdk_dir(t.sdk.as_deref())?.map(|d| d.join("python"));
            match &sdk {
                Some(python) if !python.join("switchyard_policy/__init__.py").is_file() => {
                    bail!(
                        "{}: no Python SDK (switchyard_policy) there",
                        python.display()
                    )
                }
                Some(_) => {}
                None => eprintln!(
                    "note: no SDK found beside this binary's source tree; install the Python \
                     SDK (`pip install <switchyard checkout>/sdk/python`) or pass --sdk DIR"
                ),
            }
            python_files(t, sdk.as_deref())
        }
        (Lang::Rust, Some(_)) => {
            let sdk = sdk_dir(t.sdk.as_deref())?;
            if sdk.is_none() {
                eprintln!(
                    "note: no SDK found beside this binary's source tree; the crate depends on \
                     switchyard-policy-sdk {} from the registry (pass --sdk DIR to use a checkout)",
                    env!("CARGO_PKG_VERSION")
                );
            }
            rust_files(t, &RustDep::Standalone(sdk))
        }
        (Lang::Rust, None) => {
            let in_workspace = t.dir.join("..").join("sdk").join("Cargo.toml").exists();
            rust_files(t, &RustDep::Member { in_workspace })
        }
    };
    for (file, text) in files {
        let file = root.join(file);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("write {}", file.display()))?;
    }
    println!("created {}", root.display());
    Ok(())
}

/// How a Rust policy crate gets the SDK.
enum RustDep {
    /// A member of this repository's workspace (`policies/NAME`).
    Member { in_workspace: bool },
    /// A standalone crate: a path to the SDK checkout, else the registry version.
    Standalone(Option<PathBuf>),
}

/// The type name of a kebab-case policy name: `least-waiting` -> `LeastWaiting`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    let escaped: String = s
        .chars()
        .flat_map(|c| match c {
            '\\' => vec!['\\', '\\'],
            '"' => vec!['\\', '"'],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

/// The files of a Rust policy crate, relative to its root.
fn rust_files(t: &Target, dep: &RustDep) -> Vec<(&'static str, String)> {
    let name = t.name.as_str();
    let ty = type_name(name);
    let trait_name = t.kind.trait_name();
    let kind = t.kind.world();
    let version = env!("CARGO_PKG_VERSION");
    let (body, export, test) = match t.kind {
        Kind::Scorer => (
            "    fn score(&self, req: &Request, c: &Candidate, _fleet: &Fleet) -> Score {\n        Score::ratio(c.cached_prefix_tokens, req.prompt_tokens)\n    }",
            "export_scorer",
            "        let warm = Candidate { cached_prefix_tokens: 512, ..testing::candidate(1) };\n        let s = testing::score::<TYPE>(\"\", &testing::request(1024), &[testing::candidate(0), warm], &testing::fleet(2));\n        assert_eq!(s, vec![0.0, 0.5]);",
        ),
        Kind::Filter => (
            "    fn check(&self, _req: &Request, c: &Candidate, fleet: &Fleet) -> Verdict {\n        if fleet.backend(c.backend).region.is_empty() {\n            Verdict::Exclude(\"no region configured\".into())\n        } else {\n            Verdict::Allow\n        }\n    }",
            "export_filter",
            "        let out = testing::exclude::<TYPE>(\"\", &testing::request(16), &[testing::candidate(0)], &testing::fleet(1));\n        assert_eq!(out.len(), 1);",
        ),
        Kind::Placer => (
            "    fn place(&self, _req: &Request, candidates: &[Candidate], _fleet: &Fleet) -> Placement {\n        let best = candidates.iter().min_by_key(|c| c.waiting + c.in_flight_requests).expect(\"never empty\");\n        Placement::Single(best.backend)\n    }",
            "export_placer",
            "        let busy = Candidate { waiting: 3, ..testing::candidate(0) };\n        let p = testing::place::<TYPE>(\"\", &testing::request(16), &[busy, testing::candidate(1)], &testing::fleet(2));\n        assert_eq!(p, Placement::Single(BackendId(1)));",
        ),
    };
    let (sdk_dep, standalone) = match dep {
        RustDep::Member { in_workspace: true } => (
            "switchyard-policy-sdk = { path = \"../../sdk\" }".to_string(),
            false,
        ),
        RustDep::Member {
            in_workspace: false,
        } => (format!("switchyard-policy-sdk = \"{version}\""), false),
        RustDep::Standalone(Some(sdk)) => (
            format!(
                "switchyard-policy-sdk = {{ path = {}, version = \"{version}\" }}",
                toml_string(&sdk.display().to_string())
            ),
            true,
        ),
        RustDep::Standalone(None) => (format!("switchyard-policy-sdk = \"{version}\""), true),
    };
    let mut cargo_toml = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n[lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n[dependencies]\n{sdk_dep}\nserde = {{ version = \"1\", features = [\"derive\"] }}\n"
    );
    if standalone {
        cargo_toml.push_str(
            "\n# A crate of its own, even when created inside another workspace's directory.\n[workspace]\n\n# Small components, as the shipped policies are built.\n[profile.release]\nopt-level = \"s\"\nlto = true\ncodegen-units = 1\nstrip = true\npanic = \"abort\"\n",
        );
    }
    let lib = format!(
        "//! {name}: a Switchyard {kind} policy.\n\nuse switchyard_policy_sdk::prelude::*;\n\n/// The policy and its config.\n#[derive(Debug, Default, serde::Deserialize)]\n#[serde(deny_unknown_fields, default)]\npub struct {ty} {{}}\n\nimpl {trait_name} for {ty} {{\n    fn configure(config: &str) -> Result<Self, ConfigError> {{\n        config::from_json(config)\n    }}\n\n{body}\n}}\n\nswitchyard_policy_sdk::{export}!({ty});\n\n#[cfg(test)]\nmod tests {{\n    use super::*;\n    use switchyard_policy_sdk::testing;\n\n    #[test]\n    fn decides_as_intended() {{\n{test}\n    }}\n}}\n",
        test = test.replace("TYPE", &ty),
    );
    let file = name.replace('-', "_");
    let readme = if standalone {
        format!(
            "# {name}\n\nA Switchyard {kind} policy, a crate of its own.\n\n```sh\ncargo test                                          # unit-test it natively\ncargo build --target wasm32-wasip2 --release        # build the component\nswitchyard policy check target/wasm32-wasip2/release/{file}.wasm\nswitchyard policy run target/wasm32-wasip2/release/{file}.wasm --input case.json\n```\n\nThe target: `rustup target add wasm32-wasip2`.\n"
        )
    } else {
        format!(
            "# {name}\n\nA Switchyard {kind} policy.\n\nTest natively: `cargo test -p {name}`\n\nBuild: `cargo build -p {name} --target wasm32-wasip2 --release`\n\nCheck: `switchyard policy check target/wasm32-wasip2/release/{file}.wasm`\n"
        )
    };
    let mut files = vec![
        ("Cargo.toml", cargo_toml),
        ("src/lib.rs", lib),
        ("README.md", readme),
    ];
    if standalone {
        files.push((".gitignore", "/target\n".to_string()));
    }
    files
}

/// The files of a Python policy project, relative to its root. `sdk` is the Python
/// SDK's directory (`sdk/python`), when known.
fn python_files(t: &Target, sdk: Option<&Path>) -> Vec<(&'static str, String)> {
    let name = t.name.as_str();
    let ty = type_name(name);
    let world = t.kind.world();
    let (import, body, test_import, test) = match t.kind {
        Kind::Scorer => (
            "Score, Scorer",
            "    \"\"\"Prefers the backend holding the most of this prompt, unless it is queueing.\"\"\"\n\n    def __init__(self, max_waiting: int = 8):\n        self.max_waiting = max_waiting\n\n    def score(self, req, candidate, fleet):\n        if candidate.waiting > self.max_waiting:\n            return Score.ZERO\n        return Score.ratio(candidate.cached_prefix_tokens, req.prompt_tokens)",
            "",
            "    warm = testing.candidate(1, cached_prefix_tokens=512)\n    cands = [testing.candidate(0), warm]\n    scores = testing.score(TYPE, \"\", testing.request(1024), cands, testing.fleet(2))\n    assert scores == [0.0, 0.5]",
        ),
        Kind::Filter => (
            "Allow, Exclude, Filter",
            "    \"\"\"Excludes backends with no region configured.\"\"\"\n\n    def check(self, req, candidate, fleet):\n        if not fleet.backend(candidate.backend).region:\n            return Exclude(\"no region configured\")\n        return Allow",
            "",
            "    cands = [testing.candidate(0)]\n    out = testing.exclude(TYPE, \"\", testing.request(16), cands, testing.fleet(1))\n    assert out == [(0, \"no region configured\")]",
        ),
        Kind::Placer => (
            "Placer, Single",
            "    \"\"\"Sends the request to the backend with the fewest queued and in-flight requests.\"\"\"\n\n    def place(self, req, candidates, fleet):\n        best = min(candidates, key=lambda c: c.waiting + c.in_flight_requests)\n        return Single(best.backend)",
            "Single, ",
            "    busy = testing.candidate(0, waiting=3)\n    p = testing.place(TYPE, \"\", testing.request(16), [busy, testing.candidate(1)], testing.fleet(2))\n    assert p == Single(1)",
        ),
    };
    let wasm = format!("{}.wasm", name.replace('-', "_"));
    let sdk_path = sdk.map(|p| p.display().to_string());
    let build = match &sdk_path {
        Some(p) => {
            format!("componentize-py -d wit -w {world} componentize app -p . -p {p} -o {wasm}")
        }
        None => format!("componentize-py -d wit -w {world} componentize app -o {wasm}"),
    };
    let app = format!(
        "\"\"\"{name}: a Switchyard {world} policy in Python.\"\"\"\n\nfrom switchyard_policy import {import}\n\n\nclass {ty}({kind}):\n{body}\n",
        kind = t.kind.trait_name(),
    );
    let test_app = format!(
        "\"\"\"Native unit tests: `python -m pytest`, no Wasm involved.\"\"\"\n\nfrom switchyard_policy import {test_import}testing\n\nfrom app import {ty}\n\n\ndef test_decides_as_intended():\n{test}\n",
        test = test.replace("TYPE", &ty),
    );
    let pythonpath = match &sdk_path {
        Some(p) => format!("[\".\", {}]", toml_string(p)),
        None => "[\".\"]".to_string(),
    };
    let pyproject = format!(
        "# {name}: a Switchyard {world} policy in Python (see README.md).\n[project]\nname = \"{name}\"\nversion = \"0.1.0\"\nrequires-python = \">=3.9\"\n\n[tool.pytest.ini_options]\n# The policy, and the Switchyard Python SDK it is tested against.\npythonpath = {pythonpath}\n"
    );
    let readme = format!(
        "# {name}\n\nA Switchyard {world} policy in Python: `app.py`. It is built with componentize-py into\na WebAssembly component (~18 MB: CPython comes with it) against the contract in `wit/`.\n\n```sh\npip install componentize-py=={COMPONENTIZE_PY} pytest\npython -m pytest                      # unit-test it natively\n{build}\nswitchyard policy check {wasm}\nswitchyard policy run {wasm} --input case.json\nswitchyard policy bench {wasm} --candidates 100 --iterations 2000\n```\n\nThe policy runs in a virtual, deterministic world: no files, no network, a clock frozen\nat the start of each call, randomness (Python's `random` too) seeded by the request id.\nEach call costs fuel for every Python operation: ~35 K per candidate for a simple scorer,\nso the default 10 M budget covers about 280 candidates.\n"
    );
    let mut files = vec![
        ("app.py", app),
        ("test_app.py", test_app),
        ("pyproject.toml", pyproject),
        ("README.md", readme),
        (".gitignore", "*.wasm\n__pycache__/\n".to_string()),
    ];
    files.extend(WIT.iter().map(|(f, text)| (*f, text.to_string())));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(kind: Kind) -> Target {
        Target {
            name: "least-waiting".into(),
            kind,
            lang: Lang::Rust,
            dir: "policies".into(),
            path: Some("/tmp/x".into()),
            sdk: None,
        }
    }

    #[test]
    fn a_standalone_crate_names_the_sdk_by_absolute_path_and_stands_alone() {
        let files = rust_files(
            &target(Kind::Scorer),
            &RustDep::Standalone(Some("/src/switch \"yard\"/sdk".into())),
        );
        let cargo = &files.iter().find(|(f, _)| *f == "Cargo.toml").unwrap().1;
        assert!(
            cargo.contains(
                r#"switchyard-policy-sdk = { path = "/src/switch \"yard\"/sdk", version = ""#
            ),
            "{cargo}"
        );
        assert!(cargo.contains("\n[workspace]\n"), "{cargo}");
        assert!(cargo.contains("[profile.release]"), "{cargo}");
        let lib = &files.iter().find(|(f, _)| *f == "src/lib.rs").unwrap().1;
        assert!(lib.contains("impl Scorer for LeastWaiting"), "{lib}");
        assert!(lib.contains("export_scorer!(LeastWaiting)"), "{lib}");
    }

    #[test]
    fn a_workspace_member_uses_the_relative_sdk_and_no_workspace_table() {
        let files = rust_files(
            &target(Kind::Placer),
            &RustDep::Member { in_workspace: true },
        );
        let cargo = &files[0].1;
        assert!(cargo.contains(r#"{ path = "../../sdk" }"#), "{cargo}");
        assert!(!cargo.contains("[workspace]"), "{cargo}");
    }

    #[test]
    fn a_python_project_carries_the_contract_and_names_the_sdk() {
        let files = python_files(&target(Kind::Filter), Some(Path::new("/src/sdk/python")));
        let file = |name: &str| &files.iter().find(|(f, _)| *f == name).unwrap().1;
        assert!(file("app.py").contains("class LeastWaiting(Filter):"));
        assert!(file("test_app.py").contains("testing.exclude(LeastWaiting,"));
        assert!(
            file("pyproject.toml").contains(r#"pythonpath = [".", "/src/sdk/python"]"#),
            "{}",
            file("pyproject.toml")
        );
        assert!(file("README.md").contains(
            "componentize-py -d wit -w filter componentize app -p . -p /src/sdk/python -o least_waiting.wasm"
        ));
        assert_eq!(
            file("wit/worlds.wit"),
            include_str!("../../../wit/worlds.wit")
        );
    }

    #[test]
    fn names_become_type_names() {
        assert_eq!(type_name("least-waiting"), "LeastWaiting");
        assert_eq!(type_name("p2c"), "P2c");
    }
}
