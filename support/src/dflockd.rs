//! The Python dflockd server (`dflockd` 0.5 from PyPI), run as a process from the venv
//! `scripts/setup/python.sh` makes.
//!
//! | variable | meaning |
//! |---|---|
//! | `LOCKCHECK_DFLOCKD_SERVER` | the Python `dflockd` console script (default: `$LOCKCHECK_VENV/bin/dflockd`, else `dflockd` on `PATH`). |
//! | `LOCKCHECK_VENV` | the venv holding the Python server and client (default `~/.cache/lockcheck/venv`). |

use std::path::PathBuf;

use crate::{Probe, Service, ServiceError, ServiceSpec, provision};

/// The venv of the Python peers.
pub fn venv() -> PathBuf {
    if let Some(venv) = std::env::var_os("LOCKCHECK_VENV") {
        return PathBuf::from(venv);
    }
    let home = std::env::var_os("LOCKCHECK_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/lockcheck"));
    home.join("venv")
}

/// The venv's Python (for the Python client's scripts).
pub fn venv_python() -> PathBuf {
    venv().join("bin/python")
}

fn python_server_binary() -> String {
    if let Ok(binary) = std::env::var("LOCKCHECK_DFLOCKD_SERVER") {
        return binary;
    }
    let in_venv = venv().join("bin/dflockd");
    if in_venv.is_file() { in_venv.to_string_lossy().into_owned() } else { "dflockd".to_owned() }
}

/// Settings of the Python server, passed as flags (its `DFLOCKD_*` variables are mostly
/// overridden by flag defaults).
#[derive(Clone, Debug)]
pub struct PythonDflockdOptions {
    /// `--default-lease-ttl` (default 33).
    pub default_lease_ttl_s: u64,
    /// `--read-timeout` (default 23).
    pub read_timeout_s: u64,
    /// `--max-locks` (default 1024).
    pub max_locks: u64,
    /// `--[no-]auto-release-on-disconnect` (default on).
    pub auto_release_on_disconnect: bool,
}

impl Default for PythonDflockdOptions {
    fn default() -> Self {
        PythonDflockdOptions {
            default_lease_ttl_s: 33,
            read_timeout_s: 23,
            max_locks: 1024,
            auto_release_on_disconnect: true,
        }
    }
}

/// How to run the Python server: a process only (there is no image of it); ready when it
/// logs `listening on` and accepts a connection. It has no `ping`, so the probe only connects.
pub fn python_spec(options: &PythonDflockdOptions) -> ServiceSpec {
    let options = options.clone();
    ServiceSpec::new("dflockd-python", "lockcheck/dflockd-python:0.5", python_server_binary(), 6388)
        .args(move |port| {
            let auto_release = if options.auto_release_on_disconnect {
                "--auto-release-on-disconnect"
            } else {
                "--no-auto-release-on-disconnect"
            };
            [
                auto_release,
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--default-lease-ttl",
                &options.default_lease_ttl_s.to_string(),
                "--read-timeout",
                &options.read_timeout_s.to_string(),
                "--max-locks",
                &options.max_locks.to_string(),
            ]
            .map(str::to_owned)
            .to_vec()
        })
        .ready_log("listening on")
        .probe(Probe::Connect)
}

/// Starts the Python server (`Ok(None)`, printed, only under `LOCKCHECK_SERVICES=skip`).
pub async fn python_dflockd(options: &PythonDflockdOptions) -> Result<Option<Service>, ServiceError> {
    provision(&python_spec(options)).await
}

/// How to run `lockcheck serve`, the reference dflockd server, as a process: `binary` is the
/// `lockcheck` executable. With `persist_fences`, the server keeps its fencing counter's
/// ceiling in `fence.state` in its scratch directory, which outlives a restart: tokens stay
/// monotonic across restarts whatever the clock does. Leases are never persisted.
pub fn lockcheck_serve_spec(binary: impl Into<String>, persist_fences: bool) -> ServiceSpec {
    ServiceSpec::new("lockcheck-serve", "lockcheck/serve:none", binary, 6388)
        .args(move |port| {
            let mut args: Vec<String> =
                ["serve", "--host", "127.0.0.1", "--port", &port.to_string()].map(str::to_owned).to_vec();
            if persist_fences {
                args.extend(["--fence-state-file".to_owned(), "fence.state".to_owned()]);
            }
            args
        })
        .ready_log("lockcheck serve: listening on")
        .probe(Probe::Connect)
}
