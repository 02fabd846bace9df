//! `lockcheck check` (being built).

use std::process::ExitCode;

/// Arguments of `lockcheck check`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`lockcheck check` is not built yet")
}
