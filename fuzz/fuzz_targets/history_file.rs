//! Fuzzes what `lockcheck check --recheck FILE` reads: arbitrary text as a kept history. It
//! must never panic; a history the validator accepts goes through every checker, whose
//! arithmetic must take anything the validator lets in.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use lockcheck_history::{Capabilities, KeptHistory, Timing};

fuzz_target!(|text: &str| {
    let Ok(kept) = KeptHistory::from_json(text) else { return };
    if kept.history.validate().is_err() {
        return;
    }
    let claims = kept.capabilities.unwrap_or_else(Capabilities::all_in_process);
    let verdicts = lockcheck_history::check_all(
        &kept.history,
        &Timing::in_process(),
        &claims,
        Duration::from_millis(50),
    );
    assert!(!verdicts.is_empty());
});
