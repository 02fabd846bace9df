//! `lockcheck selftest` (being built).

use std::process::ExitCode;

/// Arguments of `lockcheck selftest`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`lockcheck selftest` is not built yet")
}
