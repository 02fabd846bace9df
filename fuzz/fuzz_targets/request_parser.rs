//! Fuzzes the dflockd request framing and parser exactly as the server runs them: arbitrary
//! bytes split into capped lines, three lines per request. The parser must never panic and
//! must never accept a key the protocol forbids (whitespace, control characters, empty).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lockcheck_impls::dflockd::protocol::{self, Request};

fuzz_target!(|input: &[u8]| {
    for request in protocol::parse_stream(input).into_iter().flatten() {
        match request {
            Request::Acquire { key, .. }
            | Request::Release { key, .. }
            | Request::Renew { key, .. }
            | Request::Enqueue { key, .. }
            | Request::Wait { key, .. } => assert!(protocol::is_valid_key(&key), "accepted {key:?}"),
            Request::Auth { .. } | Request::Stats | Request::Ping => {}
        }
    }
});
