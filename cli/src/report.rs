//! `lockcheck report` (being built).

use std::process::ExitCode;

/// Arguments of `lockcheck report`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`lockcheck report` is not built yet")
}
