use std::collections::BTreeMap;
use std::time::Duration;

use lockcheck_history::{Counterexample, Timing};
use lockcheck_model::outcome::{Outcome, PropertyOutcome, Verdict};
use lockcheck_model::spec::{Capabilities, Property, Status};

use super::*;
use crate::results::{BenchRun, Kind, Machine, Measurement, Mode, Role};
use crate::stats::Summary;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn round_trip<D: Document + std::fmt::Debug>(document: &D) -> D {
    let json = document.to_json().expect("serializes");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["kind"], D::KIND);
    assert_eq!(value["version"], D::VERSION);
    assert!(json.trim_start().starts_with("{\n  \"kind\""), "kind comes first: {json}");
    D::from_json(&json).expect("reads back")
}

pub(crate) fn suite_report() -> SuiteReport {
    let mut properties = BTreeMap::new();
    properties.insert(Property::MutualExclusion, Status::Passed);
    properties.insert(Property::Fencing, Status::NotClaimed);
    SuiteReport {
        backend: "memory".to_owned(),
        capabilities: Some(Capabilities::all_in_process()),
        seed: 7,
        timing: Timing::in_process(),
        checks: vec![CheckResult {
            check: "racing_try_acquires".to_owned(),
            properties,
            counterexamples: Vec::<Counterexample>::new(),
            notes: vec!["a note".to_owned()],
            elapsed: Duration::from_millis(12),
            operations: 4,
        }],
        elapsed: Duration::from_millis(20),
    }
}

#[test]
fn a_check_document_round_trips() {
    let document = CheckDocument::new(7, vec![suite_report()]);
    let back = round_trip(&document);
    assert_eq!(back.seed, 7);
    assert_eq!(back.backends[0].by_property(), document.backends[0].by_property());
    assert_eq!(back.table["memory"][&Property::MutualExclusion], Status::Passed);
    assert_eq!(back.backends[0].checks[0].elapsed, Duration::from_millis(12));
}

#[test]
fn a_selftest_document_round_trips() {
    let document = SelftestDocument {
        seed: 3,
        mutants: vec![MutantOutcome {
            mutant: "no_ttl".to_owned(),
            failure_class: "lease never expires".to_owned(),
            expected: Property::Expiry,
            status: Hunt::CaughtOther,
            caught_by: Some(Property::MutualExclusion),
            check: Some("ttl_expiry_frees_lock".to_owned()),
            counterexample_operations: Some(3),
            time_to_catch: Duration::from_millis(1500),
            counterexample: None,
        }],
    };
    let back = round_trip(&document);
    assert_eq!(back.mutants[0].status, Hunt::CaughtOther);
    assert_eq!(back.mutants[0].caught_by, Some(Property::MutualExclusion));
    assert_eq!(back.mutants[0].time_to_catch, Duration::from_millis(1500));
}

#[test]
fn a_model_document_round_trips() {
    let document = ModelDocument {
        outcomes: vec![Outcome {
            system: "redis-del".to_owned(),
            clients: 2,
            keys: 1,
            complete: false,
            reduced: true,
            symmetry: true,
            server_symmetry: false,
            replies_taken_at_once: true,
            unique_states: 345,
            states: 900,
            max_depth: 12,
            seconds: 0.5,
            states_per_second: 690.0,
            properties: vec![PropertyOutcome {
                name: "ownership (only its holder or its TTL frees a lease)".to_owned(),
                property: Some(Property::Ownership),
                verdict: Verdict::Violated { trace: vec!["1. step".to_owned()] },
            }],
        }],
    };
    assert_eq!(round_trip(&document), document);
}

#[test]
fn a_faults_document_round_trips_and_keeps_one_result_per_backend_and_fault() {
    let record = |fault: &str, status| FaultRecord {
        backend: "redis".to_owned(),
        fault: fault.to_owned(),
        status,
        property: (status != Status::Passed).then_some(Property::MutualExclusion),
        evidence: None,
        predicted_by: (status == Status::Predicted).then(|| "survives_server_restart: false".to_owned()),
        notes: Vec::new(),
        counterexample: None,
        runs: Vec::new(),
    };
    let dir = std::env::temp_dir().join(format!("lockcheck-faults-doc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("faults.json");
    FaultsDocument::record_in(&path, record("server restarted", Status::Violated)).unwrap();
    FaultsDocument::record_in(&path, record("client crashed", Status::Passed)).unwrap();
    FaultsDocument::record_in(&path, record("server restarted", Status::Predicted)).unwrap();
    let document = FaultsDocument::read(&path).unwrap();
    assert_eq!(document.results.len(), 2);
    assert_eq!(document.results[1].status, Status::Predicted);
    assert_eq!(round_trip(&document), document);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn seeded_runs_of_one_cell_join_into_one_record_whose_status_is_the_worst() {
    use crate::documents::FaultRun;
    let run = |seed, status, evidence: &str| FaultRecord {
        backend: "nats".to_owned(),
        fault: "nemesis: server paused past the TTL".to_owned(),
        status,
        property: (status == Status::Violated).then_some(Property::MutualExclusion),
        evidence: Some(evidence.to_owned()),
        predicted_by: None,
        notes: Vec::new(),
        counterexample: None,
        runs: vec![FaultRun { seed, status }],
    };
    let mut document = FaultsDocument::default();
    document.record(run(1, Status::Passed, "first"));
    document.record(run(2, Status::Violated, "second"));
    document.record(run(3, Status::Passed, "third"));
    assert_eq!(document.results.len(), 1);
    let cell = &document.results[0];
    assert_eq!((cell.status, cell.evidence.as_deref()), (Status::Violated, Some("second")));
    assert_eq!(cell.tally(), Some((1, 3)));
    // Seed 2 run again, now ok: the cell is ok, with three runs still.
    document.record(run(2, Status::Passed, "again"));
    let cell = &document.results[0];
    assert_eq!((cell.status, cell.tally()), (Status::Passed, Some((3, 3))));
    // A scripted fault's record (no runs) replaces, as before.
    let mut scripted = run(9, Status::Predicted, "scripted");
    scripted.runs.clear();
    document.record(scripted);
    assert_eq!((document.results[0].status, document.results[0].tally()), (Status::Predicted, None));
}

#[test]
fn a_bench_run_round_trips() {
    let run = BenchRun {
        suite: "memory".to_owned(),
        mode: Mode::Quick,
        started_unix: 1,
        finished_unix: 2,
        machine: Machine::default(),
        versions: BTreeMap::new(),
        command: "cargo bench".to_owned(),
        measurements: vec![Measurement {
            subject: "memory".to_owned(),
            role: Role::Subject,
            kind: Kind::HandOff { waiters: 8 },
            latency: Summary::of(&[1_000, 2_000]).unwrap(),
            ops_per_sec: None,
        }],
    };
    assert_eq!(round_trip(&run), run);
}

#[test]
fn another_kind_is_refused_naming_both() {
    let json = SelftestDocument { seed: 1, mutants: Vec::new() }.to_json().unwrap();
    let error = CheckDocument::from_json(&json).expect_err("a selftest document is no check document");
    let message = error.to_string();
    assert!(message.contains("lockcheck.selftest") && message.contains("lockcheck.check"), "{message}");
    assert!(matches!(error, DocumentError::WrongKind { .. }));
}

#[test]
fn a_newer_version_is_refused_naming_both() {
    let json = r#"{"kind": "lockcheck.faults", "version": 2, "results": []}"#;
    let error = FaultsDocument::from_json(json).expect_err("version 2 is not known yet");
    let message = error.to_string();
    assert!(message.contains("version 2") && message.contains("up to 1"), "{message}");
    assert!(matches!(error, DocumentError::NewerVersion { found: 2, supported: 1, .. }));
}

#[test]
fn an_unmarked_file_is_refused_unless_its_shape_is_a_known_earlier_one() {
    let error = FaultsDocument::from_json(r#"[{"backend": "redis", "fault": "x", "outcome": "safe"}]"#)
        .expect_err("the unmarked fault rows are not a faults document");
    assert!(error.to_string().contains("lockcheck.faults"), "{error}");
    assert!(CheckDocument::from_json("[]").is_err());
}

/// `check --json` as it was written before documents were marked: `--recheck` and the
/// report still read it, as version 0.
#[test]
fn the_unmarked_check_output_is_read_as_version_0() {
    let document = CheckDocument::from_json(&fixture("check-v0.json")).expect("the previous shape reads");
    assert_eq!(document.seed, 42);
    let report = &document.backends[0];
    assert_eq!(report.backend, "memory");
    assert_eq!(report.counterexamples().count(), 1);
    assert_eq!(report.by_property()[&Property::MutualExclusion], Status::Violated);
}

#[test]
fn the_unmarked_model_output_is_read_as_version_0() {
    let document = ModelDocument::from_json(&fixture("model-v0.json")).expect("the previous shape reads");
    assert_eq!(document.outcomes.len(), 2);
    assert_eq!(document.outcomes[1].properties[0].property, None, "version 0 named no catalogue property");
}

#[test]
fn every_fixture_reads_as_its_kind() {
    CheckDocument::from_json(&fixture("check.json")).expect("check");
    SelftestDocument::from_json(&fixture("selftest.json")).expect("selftest");
    ModelDocument::from_json(&fixture("model.json")).expect("model");
    FaultsDocument::from_json(&fixture("faults.json")).expect("faults");
    BenchRun::from_json(&fixture("bench-memory.json")).expect("bench");
}
