//! `lockcheck serve` (being built).

use std::process::ExitCode;

/// Arguments of `lockcheck serve`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`lockcheck serve` is not built yet")
}
