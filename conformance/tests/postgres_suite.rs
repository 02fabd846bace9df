//! Every conformance check against a real Postgres, one `#[test]` per check. Every test starts
//! its own server (a `postgres` process in a scratch directory) and stops it when it ends.
//! Its leases are session-bound: `session_cut_under_holder` cuts every client session
//! (`pg_terminate_backend`) under a live holder, the violation that claim predicts.
#![cfg(feature = "postgres")]

use lockcheck_conformance::backends::postgres::PostgresBackend;
use lockcheck_conformance::conformance_suite;
use lockcheck_conformance::{Served, SuiteConfig};
use lockcheck_support::postgres::{postgres, url};

fn single_server() -> Option<Served<PostgresBackend>> {
    let server = tokio::runtime::Handle::current()
        .block_on(postgres())
        .expect("a Postgres server (scripts/setup/postgres.sh)")?;
    let backend = PostgresBackend::new(url(&server)).expect("the fixture's URL parses");
    Some(Served::new(backend, server))
}

conformance_suite!(one_server, single_server(), SuiteConfig::default());
