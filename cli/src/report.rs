//! `lockcheck report`: renders `reports/` (pictures and README.md) from the latest benchmark
//! runs and the JSON results of `check`, `selftest`, `model` and the fault runs.
//!
//! Missing inputs do not fail the command: the report says what is missing and which command
//! produces it. The rendering itself lives in `lockcheck_report::render`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use lockcheck_report::render::{RenderOptions, render};

/// Arguments of `lockcheck report`.
#[derive(clap::Args)]
pub struct Args {
    /// The report folder to write.
    #[arg(long, default_value_os_t = lockcheck_report::workspace_root().join("reports"))]
    out: PathBuf,
    /// A folder of benchmark runs (`<dir>/<suite>/*.json`); repeatable. Default: where
    /// `cargo bench -p lockcheck-bench` writes ($LOCKCHECK_BENCH_OUT, else
    /// $CARGO_TARGET_DIR/lockcheck-bench). `<out>/raw/bench` is always read too.
    #[arg(long = "bench-dir")]
    bench_dirs: Vec<PathBuf>,
    /// Medians are taken over this many of the newest runs of each backend.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// `lockcheck check --json` output (default: <out>/raw/check.json).
    #[arg(long)]
    check: Option<PathBuf>,
    /// `lockcheck selftest --json` output (default: <out>/raw/selftest.json).
    #[arg(long)]
    selftest: Option<PathBuf>,
    /// `lockcheck model --json` output (default: <out>/raw/model.json).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Fault-run results (default: <out>/raw/faults.json).
    #[arg(long)]
    faults: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut options = RenderOptions::new(args.out.clone());
    if !args.bench_dirs.is_empty() {
        options.bench_dirs = args.bench_dirs;
    }
    options.runs = args.runs.max(1);
    options.check = args.check.unwrap_or(options.check);
    options.selftest = args.selftest.unwrap_or(options.selftest);
    options.model = args.model.unwrap_or(options.model);
    options.faults = args.faults.unwrap_or(options.faults);
    let rendered = render(&options).with_context(|| format!("rendering {}", args.out.display()))?;
    for file in &rendered.files {
        println!("wrote {}", file.display());
    }
    for missing in &rendered.missing {
        eprintln!("missing: {missing}");
    }
    println!("report: {}", args.out.join("README.md").display());
    Ok(ExitCode::SUCCESS)
}
