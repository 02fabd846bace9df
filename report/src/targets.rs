//! The performance targets of every benchmark suite, in one place: each a ratio of a p50 to
//! the floor measured in the same run (or to a peer in the same run), so that a loaded or
//! faster machine moves the floor and the subject together. The benchmarks print them against
//! their run; the report judges the medians of the kept runs against them.

/// The targets of one suite. `None`: the suite has no such target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SuiteTargets {
    /// Uncontended acquire + release, at most this multiple of the floor.
    pub uncontended: Option<f64>,
    /// Hand-off to the next waiter, at most this multiple of the floor at every queue length.
    pub hand_off: Option<f64>,
    /// "Flat in waiters": the p50 hand-off with the most waiters at most this multiple of the
    /// p50 with the fewest.
    pub flatness: f64,
    /// Against the slowest peer of the same run: throughput (dflockd) or hand-off (Redis) at
    /// least this many times the peer's.
    pub peer_speedup: Option<f64>,
    /// What the floor is, for people.
    pub floor: &'static str,
}

/// "Flat in waiters", the same for every backend.
pub const FLATNESS: f64 = 1.5;

const NONE: SuiteTargets =
    SuiteTargets { uncontended: None, hand_off: None, flatness: FLATNESS, peer_speedup: None, floor: "" };

/// The in-memory locker against `tokio::sync::Mutex`.
pub const MEMORY: SuiteTargets =
    SuiteTargets { uncontended: Some(10.0), hand_off: Some(2.0), floor: "tokio::sync::Mutex", ..NONE };

/// The Redis lockers against `PING`, and against the polling peers' hand-off.
pub const REDIS: SuiteTargets =
    SuiteTargets { uncontended: Some(2.5), hand_off: Some(4.0), peer_speedup: Some(10.0), floor: "PING", ..NONE };

/// The NATS locker against a NATS round trip.
pub const NATS: SuiteTargets = SuiteTargets { hand_off: Some(4.0), floor: "the NATS round trip", ..NONE };

/// The reference dflockd server against a TCP echo, and against the Python server's
/// throughput.
pub const DFLOCKD: SuiteTargets = SuiteTargets {
    uncontended: Some(3.0),
    hand_off: Some(3.0),
    peer_speedup: Some(10.0),
    floor: "the TCP echo",
    ..NONE
};

/// The targets of `suite` (`memory`, `redis`, `nats`, `dflockd`); a suite without targets
/// gets none but flatness.
pub fn for_suite(suite: &str) -> SuiteTargets {
    match suite {
        "memory" => MEMORY,
        "redis" => REDIS,
        "nats" => NATS,
        "dflockd" => DFLOCKD,
        _ => NONE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_with_a_floor_has_a_hand_off_target() {
        for suite in ["memory", "redis", "nats", "dflockd"] {
            let targets = for_suite(suite);
            assert!(targets.hand_off.is_some_and(|t| t > 1.0), "{suite}");
            assert!(!targets.floor.is_empty(), "{suite}");
        }
        assert_eq!(for_suite("unknown").hand_off, None);
    }
}
