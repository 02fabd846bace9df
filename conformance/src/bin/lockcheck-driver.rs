//! `lockcheck-driver [--flaw FLAW] URL`: the driver protocol on stdin/stdout for the backend
//! `URL` names (`lockcheck_conformance::driver`). The same as the hidden `lockcheck driver`
//! subcommand, built with the conformance crate so its integration tests can start it.

use std::process::ExitCode;

use lockcheck_conformance::driver::{Flaw, serve_with};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut flaw, mut url) = (None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--flaw" => match args.next().map(|name| name.parse::<Flaw>()) {
                Some(Ok(parsed)) => flaw = Some(parsed),
                Some(Err(error)) => return usage(&error),
                None => return usage("--flaw needs a value"),
            },
            _ if url.is_none() => url = Some(arg),
            _ => return usage(&format!("unexpected argument {arg:?}")),
        }
    }
    let Some(url) = url else { return usage("a backend URL is needed") };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return usage(&format!("no runtime: {error}")),
    };
    match runtime.block_on(serve_with(&url, flaw, tokio::io::stdin(), tokio::io::stdout())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lockcheck-driver: {error}");
            ExitCode::from(2)
        }
    }
}

fn usage(error: &str) -> ExitCode {
    eprintln!("lockcheck-driver: {error}\nusage: lockcheck-driver [--flaw FLAW] URL");
    ExitCode::from(2)
}
