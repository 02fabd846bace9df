use std::path::{Path, PathBuf};

use lockcheck_model::spec::Status;

use super::inputs::Input;
use super::*;
use crate::documents::{Document, FaultRecord};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn loaded<D: Document>(name: &str) -> D {
    D::read(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The README of the fixture documents, without pictures (which need a font).
fn readme_of_fixtures(check: &str) -> String {
    let mut options = RenderOptions::new(std::env::temp_dir().join("lockcheck-no-report"));
    options.check = fixture(check);
    options.selftest = fixture("selftest.json");
    options.model = fixture("model.json");
    options.faults = fixture("faults.json");
    let report = Report {
        bench: BenchInputs::default(),
        figures: BTreeMap::new(),
        pictures: BTreeMap::new(),
        check: Input::load(&options.check),
        selftest: Input::load(&options.selftest),
        model: Input::load(&options.model),
        faults: Input::load(&options.faults),
        missing: Vec::new(),
        options,
    };
    readme::readme(&report)
}

#[test]
fn every_status_is_one_word() {
    let words: BTreeSet<&str> = Status::ALL.iter().map(|s| status_word(*s)).collect();
    assert_eq!(words.len(), Status::ALL.len(), "two statuses share a word: {words:?}");
    assert_eq!(status_word(Status::Passed), "ok");
    assert_eq!(status_word(Status::Violated), "VIOLATED");
}

#[test]
fn the_check_fixture_renders_as_a_backend_by_property_table() {
    let readme = readme_of_fixtures("check.json");
    assert!(readme.contains("| backend | mutual-exclusion | ownership | fencing | fifo |"), "{readme}");
    assert!(readme.contains("| memory | VIOLATED | ok | not claimed | not run |"), "{readme}");
    assert!(readme.contains("| redis | ok | UNKNOWN | predicted | – |"), "{readme}");
    let (_, _, cells) = check_matrix(&loaded::<CheckDocument>("check.json")).unwrap();
    assert_eq!(cells[&(0, 0)].0, Status::Violated);
}

#[test]
fn the_unmarked_check_output_renders_the_same() {
    let readme = readme_of_fixtures("check-v0.json");
    assert!(readme.contains("| memory | VIOLATED |"), "{readme}");
}

#[test]
fn the_selftest_fixture_renders_one_row_per_mutant() {
    let readme = readme_of_fixtures("check.json");
    assert!(
        readme.contains(
            "| no_ttl | lease never expires | expiry | caught | expiry | ttl_expiry_frees_lock | 1.500 s | 3 |"
        ),
        "{readme}"
    );
    assert!(
        readme.contains("| always_grants | double grant | mutual-exclusion | survived |  |  | 9.000 s |  |"),
        "{readme}"
    );
}

#[test]
fn the_model_fixture_renders_one_row_per_system() {
    let readme = readme_of_fixtures("check.json");
    assert!(readme.contains("| redis-single | 2 | 321 | 59403 | 0.01 | exhaustive | none |"), "{readme}");
}

#[test]
fn the_faults_fixture_renders_as_a_backend_by_fault_table() {
    let readme = readme_of_fixtures("check.json");
    assert!(
        readme.contains(
            "| backend | client crashed | nemesis: server paused past the TTL | server restarted without persistence |"
        ),
        "{readme}"
    );
    assert!(readme.contains("| redis | ok | – | predicted |"), "{readme}");
    // A cell of seeded runs says how many had its (worst) status, and the findings name it.
    assert!(readme.contains("| nats | ok | VIOLATED 1/3 | – |"), "{readme}");
    assert!(readme.contains("- **nats × nemesis: server paused past the TTL**: VIOLATED — P1"), "{readme}");
    assert!(readme.contains("; seeds 19"), "{readme}");
    assert!(readme.contains("predicted by `survives_server_restart: false`"), "{readme}");
}

#[test]
fn a_fault_runs_counterexample_becomes_a_timeline_named_by_its_cell_and_seed() {
    let faults = loaded::<FaultsDocument>("faults.json");
    let found = fault_counterexamples(Some(&faults));
    assert_eq!(found.len(), 1, "only the nemesis record carries a history");
    assert_eq!(found[0].0, "nats × nemesis: server paused past the TTL, seed 19");
    let (title, ops, _) = timeline_of(&found[0].0, found[0].1).expect("a timeline");
    assert!(title.contains("(nats × nemesis: server paused past the TTL, seed 19)"), "{title}");
    assert_eq!(ops.len(), 4);
}

#[test]
fn the_counterexample_of_the_check_fixture_becomes_a_timeline() {
    let check = loaded::<CheckDocument>("check.json");
    let found = counterexamples(Some(&check), None);
    assert_eq!(found.len(), 1);
    let (title, ops, holdings) = timeline_of(&found[0].0, found[0].1).expect("a timeline");
    assert!(title.starts_with("mutual-exclusion violated (backend memory, check racing_try_acquires): "), "{title}");
    assert_eq!(ops.len(), 4);
    assert_eq!(ops[0].label, "acquire L1 → granted, fence 1");
    assert_eq!(ops[3].status, Some(Status::Unknown));
    assert_eq!(holdings.len(), 2);
    assert_eq!((holdings[0].from_ms, holdings[0].to_ms), (0.3, 4.0));
}

#[test]
fn documents_of_another_kind_are_reported_unreadable_naming_both_kinds() {
    let input = Input::<CheckDocument>::load(&fixture("faults.json"));
    let Input::Unreadable(_, why) = input else { panic!("a faults document read as a check document") };
    assert!(why.contains("lockcheck.faults") && why.contains("lockcheck.check"), "{why}");
}

#[test]
fn the_fault_matrix_does_not_depend_on_the_order_faults_were_recorded_in() {
    let record = |backend: &str, fault: &str, status| FaultRecord {
        backend: backend.to_owned(),
        fault: fault.to_owned(),
        status,
        property: None,
        evidence: None,
        predicted_by: None,
        notes: Vec::new(),
        counterexample: None,
        runs: Vec::new(),
    };
    let recorded = vec![
        record("redis", "server restarted", Status::Passed),
        record("nats", "client crashed", Status::Passed),
        record("redis+quorum", "one instance killed", Status::Passed),
        record("nats", "server restarted", Status::Predicted),
    ];
    let mut reversed = recorded.clone();
    reversed.reverse();
    let forward = fault_matrix(&FaultsDocument { results: recorded }).expect("faults found");
    let backward = fault_matrix(&FaultsDocument { results: reversed }).expect("faults found");
    assert_eq!(forward, backward);
    let (rows, columns, cells) = forward;
    assert_eq!(rows, ["nats", "redis", "redis+quorum"]);
    assert_eq!(columns, ["client crashed", "one instance killed", "server restarted"]);
    assert_eq!(cells.get(&(0, 2)).map(|cell| cell.0), Some(Status::Predicted));
    assert_eq!(cells.len(), 4);
}
