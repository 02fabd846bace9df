//! Backend URLs, arbitrary or hostile, get a backend or a clear error, never a panic.

use lockcheck_conformance::backends::from_url;
use proptest::prelude::*;

/// Text shaped like a backend URL: a known scheme (or near miss), a separator, then address,
/// path and parameter characters, with the occasional character no URL holds.
fn url_like() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        Just("memory".to_owned()),
        Just("redis".to_owned()),
        Just("redis+all".to_owned()),
        Just("redis+quorum".to_owned()),
        Just("nats".to_owned()),
        Just("dflockd".to_owned()),
        Just("dflockd-embedded".to_owned()),
        "[a-z+]{0,10}",
    ];
    let separator = prop_oneof![Just("://"), Just(""), Just(":/"), Just("?"), Just(":")];
    let rest = prop_oneof![
        "[a-zA-Z0-9:/,?&=.%@_ -]{0,40}",
        "[0-9.:,]{0,30}(\\?(cleanup|bucket|replicas|storage|offers|auth|session)=[a-z0-9.]{0,12}){0,3}",
        "\\PC{0,20}",
    ];
    (scheme, separator, rest).prop_map(|(scheme, separator, rest)| format!("{scheme}{separator}{rest}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_backend_url_gets_a_backend_or_a_clear_error(url in prop_oneof![url_like(), any::<String>()]) {
        // Some backends start helpers on a runtime when they are built.
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()
            .expect("a runtime");
        let _entered = runtime.enter();
        match from_url(&url) {
            Ok(backend) => prop_assert!(!backend.name().is_empty()),
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
    }

}
