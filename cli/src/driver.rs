//! `lockcheck driver URL` (hidden): this binary as a driver process for the backend `URL`
//! names, speaking the driver protocol on stdin/stdout (`docs/driver-protocol.md`). The nemesis
//! of `lockcheck faults` starts it as the client process it pauses or kills.

use std::process::ExitCode;

use lockcheck_conformance::driver::{Flaw, serve_with};

/// Arguments of `lockcheck driver`.
#[derive(clap::Args)]
pub struct Args {
    /// The backend URL to serve.
    url: String,
    /// A deliberate flaw (double-grant, stale-fence, unusual, crash-on=N, garbage, silent,
    /// late=MS), to prove the checks and the `exec:` backend both ways.
    #[arg(long, value_parser = |text: &str| text.parse::<Flaw>())]
    flaw: Option<Flaw>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(serve_with(&args.url, args.flaw, tokio::io::stdin(), tokio::io::stdout()))?;
    Ok(ExitCode::SUCCESS)
}
