//! Every conformance check against a real etcd, one `#[test]` per check, for both etcd
//! recipes: the revision queue run by the client (`etcd://`) and etcd's own lock service
//! (`etcd+lockservice://`). Every test starts its own server (a container, or an `etcd`
//! process without Docker) and stops it when it ends, so a red run names the check and the
//! recipe.
#![cfg(feature = "etcd")]

use lockcheck_conformance::backends::etcd::EtcdBackend;
use lockcheck_conformance::conformance_suite;
use lockcheck_conformance::{Served, SuiteConfig};
use lockcheck_impls::etcd::EtcdMode;
use lockcheck_support::etcd::{EtcdOptions, etcd};

fn single_server(mode: EtcdMode) -> Option<Served<EtcdBackend>> {
    let server = tokio::runtime::Handle::current()
        .block_on(etcd(&EtcdOptions::default()))
        .expect("an etcd server (scripts/setup/etcd.sh)")?;
    Some(Served::new(EtcdBackend::on(mode, std::slice::from_ref(&server)), server))
}

conformance_suite!(revision_queue, single_server(EtcdMode::Queue), SuiteConfig::default());
conformance_suite!(lock_service, single_server(EtcdMode::LockService), SuiteConfig::default());
