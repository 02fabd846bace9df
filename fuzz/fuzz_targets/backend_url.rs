//! Fuzzes the backend URL parser (`lockcheck check --backend URL`): arbitrary text must give a
//! backend or a clear error naming the URL, never a panic. Nothing connects: a backend is
//! only built, as `check` builds it before its first check.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|url: &str| {
    // The one URL that starts a server when parsed; every other URL only builds a backend.
    if url == "dflockd-embedded" {
        return;
    }
    match lockcheck_conformance::backends::from_url(url) {
        Ok(backend) => assert!(!backend.name().is_empty()),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
