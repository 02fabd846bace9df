//! The seeded schedule of a nemesis run: when each fault window opens, on which instance, and
//! how long it lasts. The same seed, fault, instance count, duration and time scales give the
//! same schedule.

use std::fmt;
use std::time::Duration;

use lockcheck_history::Timing;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::faults::Fault;

/// One fault window: injected `at` after the workload starts, healed `hold` later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// When the fault is injected, from the start of the workload.
    pub at: Duration,
    /// The fault.
    pub fault: Fault,
    /// The instance it hits (0 for a single server).
    pub instance: usize,
    /// How long until it is healed.
    pub hold: Duration,
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on #{} at {}ms for {}ms", self.fault, self.instance, self.at.as_millis(), self.hold.as_millis())
    }
}

/// The fault windows of a run, in order, never overlapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The windows.
    pub windows: Vec<Window>,
}

impl Schedule {
    /// The windows of `fault` over a workload of `duration` on a target of `instances`, from
    /// `seed`. Pauses, partitions and a fast-running clock outlast the longest lease the
    /// workload asks for (twice the base), so leases end inside them; kills are short outages,
    /// and a clock's step happens at the window's start (its hold is only the gap before the
    /// next). Quiet gaps of about a
    /// lease separate the windows, so the workload also runs between faults. There is always
    /// at least one window, even if it ends after `duration`.
    pub fn new(seed: u64, fault: Fault, instances: usize, duration: Duration, timing: &Timing) -> Schedule {
        // Its own stream, apart from the clients' plans, which are seeded from the same seed.
        let mut rng = StdRng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7300);
        let base = timing.base_ttl;
        let mut windows = Vec::new();
        let mut at = base.mul_f64(rng.random_range(0.3..0.8));
        loop {
            let hold = match fault {
                Fault::ServerPausedPastTtl
                | Fault::NetworkPartition
                | Fault::NodePartitioned
                | Fault::ServerClockSkewed
                | Fault::ClientPausedPastLease => base.mul_f64(rng.random_range(2.2..3.0)),
                Fault::OneInstanceKilled => base.mul_f64(rng.random_range(1.0..3.0)),
                _ => base.mul_f64(rng.random_range(0.1..0.5)),
            };
            let instance = rng.random_range(0..instances.max(1));
            if !windows.is_empty() && at + hold > duration {
                break;
            }
            windows.push(Window { at, fault, instance, hold });
            at += hold + base.mul_f64(rng.random_range(0.8..2.0));
        }
        Schedule { windows }
    }

    /// When the last window is healed (as planned).
    pub fn span(&self) -> Duration {
        self.windows.last().map_or(Duration::ZERO, |window| window.at + window.hold)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, window) in self.windows.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{window}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let timing = Timing::networked();
        let duration = Duration::from_secs(5);
        let one = Schedule::new(7, Fault::OneInstanceRestarted, 3, duration, &timing);
        assert_eq!(one, Schedule::new(7, Fault::OneInstanceRestarted, 3, duration, &timing));
        assert_ne!(one, Schedule::new(8, Fault::OneInstanceRestarted, 3, duration, &timing));
        assert!(one.windows.len() > 1, "{one}");
        assert!(one.windows.iter().all(|window| window.instance < 3), "{one}");
    }

    #[test]
    fn windows_do_not_overlap_and_pauses_outlast_every_lease() {
        let timing = Timing::networked();
        for seed in 0..50 {
            let schedule = Schedule::new(seed, Fault::ServerPausedPastTtl, 1, Duration::from_secs(4), &timing);
            assert!(!schedule.windows.is_empty());
            for pair in schedule.windows.windows(2) {
                assert!(pair[0].at + pair[0].hold < pair[1].at, "{schedule}");
            }
            assert!(schedule.windows.iter().all(|window| window.hold > timing.base_ttl * 2), "{schedule}");
            assert!(schedule.span() <= Duration::from_secs(4) || schedule.windows.len() == 1, "{schedule}");
        }
    }

    #[test]
    fn a_fast_clock_outlasts_every_lease_and_a_step_is_brief() {
        let timing = Timing::networked();
        for seed in 0..20 {
            let skew = Schedule::new(seed, Fault::ServerClockSkewed, 1, Duration::from_secs(4), &timing);
            assert!(skew.windows.iter().all(|window| window.hold > timing.base_ttl * 2), "{skew}");
            let jump = Schedule::new(seed, Fault::ServerClockJumpedForward, 1, Duration::from_secs(4), &timing);
            assert!(jump.windows.iter().all(|window| window.hold < timing.base_ttl), "{jump}");
        }
    }

    #[test]
    fn a_run_too_short_for_a_window_still_gets_one() {
        let schedule = Schedule::new(1, Fault::ServerPausedPastTtl, 1, Duration::ZERO, &Timing::networked());
        assert_eq!(schedule.windows.len(), 1);
    }
}
