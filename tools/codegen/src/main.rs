//! `millrace-codegen`: writes the generated Rust of `crates/wire` from the service models.
//!
//! For each service in [`SERVICES`] it reads the stripped botocore model under `model/` and
//! writes `crates/wire/src/<module>/generated.rs` (typed structs and enums, the static shape
//! table validation walks, `Operation`, `Request`, `Response`, `decode_request`,
//! `encode_response`) and `OPERATIONS.md` beside it. The output is run through `rustfmt`, so
//! it is byte-for-byte what `cargo fmt` keeps, and it is deterministic. `--check` compares
//! instead of writing and exits non-zero when a committed file is stale.
//!
//! Deliberately not here: runtime behaviour. The generated code only calls into the
//! hand-written modules of `millrace-wire` (`typecheck`, `validate`, `convert`, `encode`).

mod generate;
mod model;
mod names;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// One service to generate: its model file and the `wire` module it becomes.
pub struct Service {
    pub model_path: &'static str,
    /// The module under `crates/wire/src/`.
    pub module: &'static str,
    /// Deliberate departures from the model: (string shape, the pattern Millrace enforces
    /// instead). Each one says why beside it.
    pub pattern_overrides: &'static [(&'static str, &'static str)],
}

pub const SERVICES: &[Service] = &[
    Service {
        model_path: "model/kinesis-2013-12-02.json",
        module: "kinesis",
        pattern_overrides: &[],
    },
    Service {
        model_path: "model/firehose-2015-08-04.json",
        module: "firehose",
        // AWS only delivers to HTTPS endpoints; a self-hosted Firehose must reach plain
        // HTTP ones too (a collector on localhost, a test endpoint).
        pattern_overrides: &[("HttpEndpointUrl", "https?://.*")],
    },
];

fn main() -> ExitCode {
    let check = std::env::args().skip(1).any(|arg| arg == "--check");
    match run(check) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("millrace-codegen: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Generate every service; with `check`, report stale files instead of writing. Returns
/// whether everything was up to date (always true when writing).
fn run(check: bool) -> Result<bool> {
    let root = workspace_root();
    let mut up_to_date = true;
    for service in SERVICES {
        let model_path = root.join(service.model_path);
        let text = std::fs::read_to_string(&model_path)
            .with_context(|| format!("reading {}", model_path.display()))?;
        let version = std::fs::read_to_string(root.join("model/VERSION")).unwrap_or_default();
        let mut model = model::Model::parse(&text)
            .with_context(|| format!("parsing {}", model_path.display()))?;
        model.override_patterns(service.pattern_overrides)?;
        let out_dir = root.join("crates/wire/src").join(service.module);
        let generated = generate::rust(&model, service, version.trim())?;
        let formatted = rustfmt(&root, &generated)?;
        let operations = generate::operations_markdown(&model, service);
        for (path, content) in [
            (out_dir.join("generated.rs"), formatted),
            (out_dir.join("OPERATIONS.md"), operations),
        ] {
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == content {
                continue;
            }
            if check {
                eprintln!(
                    "stale: {} (run `cargo run -p millrace-codegen`)",
                    path.display()
                );
                up_to_date = false;
            } else {
                std::fs::create_dir_all(&out_dir)?;
                std::fs::write(&path, content)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(up_to_date)
}

fn workspace_root() -> PathBuf {
    // tools/codegen -> workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// Format with the workspace's rustfmt configuration, as `cargo fmt` would.
fn rustfmt(root: &Path, source: &str) -> Result<String> {
    use std::io::Write as _;
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2024", "--emit", "stdout"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running rustfmt (is it installed?)")?;
    let mut stdin = child.stdin.take().context("rustfmt stdin")?;
    let input = source.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("rustfmt writer panicked"))??;
    if !output.status.success() {
        bail!(
            "rustfmt failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}
