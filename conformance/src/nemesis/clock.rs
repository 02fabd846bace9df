//! Clock faults: a server's wall clock stepped forward, or running fast, while its monotonic
//! clock keeps time — what an NTP step, a VM resumed with a stale clock or a bad clock source
//! does to a machine (the case of Kleppmann's critique of Redlock, 2016).
//!
//! A lease timed by the server's wall clock (Redis `PX`) ends early: another client is granted
//! a key its holder still believes it holds. A backend that declares
//! `expiry_by_monotonic_clock: false` has said so, and that violation is *predicted*; one that
//! claims a monotonic clock and breaks is violated.
//!
//! The server runs as a process on a [`FakeClock`] (libfaketime). A server whose clock
//! libfaketime cannot reach (a Go program such as the NATS server) is still started, for its
//! other faults, and its clock faults are reported *not checked* with the reason.

use std::time::Duration;

use async_trait::async_trait;
use lockcheck_support::clock::{FakeClock, fakeable, start_with_fake_clock};
use lockcheck_support::{ServiceError, ServiceSpec, provision};
use tokio::sync::Mutex;

use super::{FaultTarget, ServiceTarget};
use crate::faults::{Fault, FaultError};

/// How far a jump steps the wall clock, in base leases: past every lease the workload asks
/// for (at most two base leases), so each lease held at the step ends at once.
const JUMP_IN_LEASES: f64 = 2.5;

/// How fast a skewed clock runs: a lease granted during the skew ends after 40 % of its TTL.
const SKEW_RATE: f64 = 2.5;

/// The clock faults.
pub const CLOCK_FAULTS: [Fault; 2] = [Fault::ServerClockJumpedForward, Fault::ServerClockSkewed];

/// One server process on a fake clock, as a fault target: its clock stepped forward or run
/// fast, and everything [`ServiceTarget`] does (pause, kill and restart — a restarted process
/// comes back on the same clock, still ahead).
///
/// Healing a jump leaves the clock where it is: a step is not an outage, and stepping back
/// would be another fault (a clock going backwards). Healing a skew stops it, the clock as far
/// ahead as it got.
pub struct ClockTarget {
    inner: ServiceTarget,
    /// `Err`: why the server's clock cannot be faked.
    clock: Result<Mutex<FakeClock>, String>,
    base_lease: Duration,
}

impl ClockTarget {
    /// Starts `spec` as a process on a fresh fake clock; `base_lease` is the backend's
    /// [`Timing::base_ttl`](lockcheck_history::Timing::base_ttl), which sizes the jump.
    /// `persistent` says whether the server keeps its state across a restart (as
    /// [`ServiceTarget::persistent`]). If libfaketime cannot reach the server's clock, the
    /// server is started as [`provision`] would, and its clock faults are not checked.
    /// `Ok(None)` only under `LOCKCHECK_SERVICES=skip`.
    pub async fn start(
        spec: &ServiceSpec,
        base_lease: Duration,
        persistent: bool,
    ) -> Result<Option<ClockTarget>, ServiceError> {
        let target =
            |service| if persistent { ServiceTarget::persistent(service) } else { ServiceTarget::new(service) };
        if let Err(why) = fakeable(spec.binary_name()) {
            let Some(service) = provision(spec).await? else { return Ok(None) };
            return Ok(Some(ClockTarget { inner: target(service), clock: Err(why), base_lease }));
        }
        let clock = FakeClock::new()?;
        let Some(service) = start_with_fake_clock(spec, &clock).await? else { return Ok(None) };
        Ok(Some(ClockTarget { inner: target(service), clock: Ok(Mutex::new(clock)), base_lease }))
    }

    /// The server.
    pub fn service(&self) -> &Mutex<lockcheck_support::Service> {
        self.inner.service()
    }

    /// How far ahead of the real time the server's wall clock is (zero where it cannot be
    /// faked).
    pub async fn ahead(&self) -> Duration {
        match &self.clock {
            Ok(clock) => clock.lock().await.ahead(),
            Err(_) => Duration::ZERO,
        }
    }
}

fn clock_error(operation: &'static str, error: std::io::Error) -> FaultError {
    FaultError::Service(ServiceError::Fault {
        operation,
        name: "fake clock".to_owned(),
        runtime: lockcheck_support::Runtime::Process,
        message: error.to_string(),
    })
}

#[async_trait]
impl FaultTarget for ClockTarget {
    fn name(&self) -> String {
        match &self.clock {
            Ok(_) => format!("{} on a fake clock", self.inner.name()),
            Err(_) => self.inner.name(),
        }
    }

    fn faults(&self) -> Vec<Fault> {
        let mut faults = self.inner.faults();
        if self.clock.is_ok() {
            faults.extend(CLOCK_FAULTS);
        }
        faults
    }

    fn impossible(&self, fault: Fault) -> Option<String> {
        match (&self.clock, CLOCK_FAULTS.contains(&fault)) {
            (Err(why), true) => Some(why.clone()),
            _ => self.inner.impossible(fault),
        }
    }

    async fn inject(&self, fault: Fault, instance: usize) -> Result<(), FaultError> {
        let Ok(clock) = &self.clock else { return self.inner.inject(fault, instance).await };
        match fault {
            Fault::ServerClockJumpedForward => {
                clock.lock().await.jump(self.base_lease.mul_f64(JUMP_IN_LEASES)).map_err(|e| clock_error("jump", e))
            }
            Fault::ServerClockSkewed => clock.lock().await.skew(SKEW_RATE).map_err(|e| clock_error("skew", e)),
            fault => self.inner.inject(fault, instance).await,
        }
    }

    async fn heal(&self, fault: Fault, instance: usize) -> Result<(), FaultError> {
        let Ok(clock) = &self.clock else { return self.inner.heal(fault, instance).await };
        match fault {
            Fault::ServerClockJumpedForward => Ok(()),
            Fault::ServerClockSkewed => {
                clock.lock().await.unskew();
                Ok(())
            }
            fault => self.inner.heal(fault, instance).await,
        }
    }
}
