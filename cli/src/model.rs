//! `lockcheck model` (being built).

use std::process::ExitCode;

/// Arguments of `lockcheck model`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`lockcheck model` is not built yet")
}
