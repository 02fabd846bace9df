//! Explanations: which property an operation the spec refuses breaks, and why, in one sentence
//! a lock user can check against the history.
//!
//! A linearizability checker that finds no order for a history knows only that. The
//! operation that cannot follow the longest linearizable prefix (the first return that no
//! order explains), and the spec states that prefix can reach, say more: in each such state
//! the operation's answer is impossible for a reason that names a property — a grant while
//! the key was full breaks mutual exclusion (P1), a release answering "held" for a lease that
//! was not breaks ownership (P2), a fencing token that goes back breaks fencing (P3), a
//! refusal while there was room breaks expiry (P4), or no lost wake-up (P5) when the refused
//! acquire was waiting for that room.
//!
//! The spec's state knows the key's current holders, not who they were or how earlier leases
//! ended; a [`Story`] carries what the history shows of that, so the sentence can say "L180
//! was released at 25279.2 ms" rather than only "the key was free".

use std::collections::BTreeMap;

use super::{LeaseId, Liveness, LockOp, LockRet, LockSpec, Micros, Property};

/// What a history shows beyond the spec's state, for an explanation to name: whether the
/// acquire explained waited, who held each lease, and how leases ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Story {
    /// Whether the operation explained is an acquire that waited for room (the lock API's
    /// `acquire`, not `try_acquire`). A waiting acquire refused while there was room lost its
    /// wake-up (P5).
    pub waited: bool,
    /// The client each lease the history shows granted was granted to.
    pub holders: BTreeMap<LeaseId, u32>,
    /// The fencing token each lease the history shows granted was granted.
    pub fences: BTreeMap<LeaseId, u64>,
    /// When each lease the history shows granted was granted (its grant returned), µs.
    pub granted: BTreeMap<LeaseId, Micros>,
    /// How leases ended, as the history shows.
    pub endings: Vec<Ending>,
}

/// How and by when a lease ended, as a history shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    /// The lease.
    pub lease: LeaseId,
    /// By when it had ended, µs.
    pub at: Micros,
    /// How.
    pub how: Ended,
}

/// How a lease ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// A release of it answered "was held".
    Released,
    /// Its lease duration ran out (counted from the end of its grant or last refresh).
    Expired,
    /// It was a cancelled acquire's, whose clean-up was due: whatever it was granted was given
    /// back by then (P7).
    CleanedUp,
}

impl Story {
    /// The lease with its client, e.g. `L3 (client 1)`.
    fn lease(&self, lease: LeaseId) -> String {
        match self.holders.get(&lease) {
            Some(client) => format!("{lease} (client {client})"),
            None => lease.to_string(),
        }
    }

    /// How `lease` ended, if the history shows it: the earliest ending.
    fn ending_of(&self, lease: LeaseId) -> Option<Ending> {
        self.endings.iter().filter(|ending| ending.lease == lease).min_by_key(|ending| ending.at).copied()
    }

    /// The release of another lease, answered "was held", between `lease`'s grant and `by`:
    /// the one that may have freed `lease` instead of its own (the latest).
    fn freed_by(&self, lease: LeaseId, by: Micros) -> Option<Ending> {
        let granted = *self.granted.get(&lease)?;
        self.endings
            .iter()
            .filter(|ending| ending.how == Ended::Released && ending.lease != lease)
            .filter(|ending| (granted..=by).contains(&ending.at))
            .max_by_key(|ending| ending.at)
            .copied()
    }

    /// The lease that ended last by `at`: the one a refusal at `at` might have been waiting for.
    fn last_ended_by(&self, at: Micros) -> Option<Ending> {
        self.endings.iter().filter(|ending| ending.at <= at).max_by_key(|ending| ending.at).copied()
    }
}

impl Ending {
    /// `L180 was released at 25279.2 ms`.
    fn sentence(&self, story: &Story) -> String {
        let lease = story.lease(self.lease);
        match self.how {
            Ended::Released => format!("{lease} was released at {}", ms(self.at)),
            Ended::Expired => format!("{lease} had expired by {}", ms(self.at)),
            Ended::CleanedUp => {
                format!("the cancelled acquire of {lease} was to give back any grant by {}", ms(self.at))
            }
        }
    }
}

fn ms(us: Micros) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// `at 12.0 ms`, `between 12.0 ms and 14.5 ms`, or `after 12.0 ms` for a window that never
/// closed.
fn when(from: Micros, to: Micros) -> String {
    if to == Micros::MAX {
        format!("after {}", ms(from))
    } else if to.saturating_sub(from) < 50 {
        format!("at {}", ms(from))
    } else {
        format!("between {} and {}", ms(from), ms(to))
    }
}

fn permits(held: usize, limit: u32) -> String {
    format!("{held} of {limit} permits {} held", if held == 1 { "was" } else { "were" })
}

impl LockSpec {
    /// Which property `op` answering `ret` breaks in this state (the state just before it), and
    /// one sentence naming the operation and why. See [`LockSpec::explain_with`].
    ///
    /// ```
    /// use lockcheck_model::spec::{LeaseId, LockOp, LockRet, LockSpec, Property, Window};
    ///
    /// let mut key = LockSpec::with_tolerance(0);
    /// let acquire = |lease, at| LockOp::Acquire { lease: LeaseId(lease), ttl: 80_000, limit: 1, at: Window::at(at) };
    /// assert!(key.step(&acquire(3, 0), Some(&LockRet::Granted { fence: 1 })));
    /// let (property, why) = key.explain(&acquire(4, 12_000), &LockRet::Granted { fence: 2 });
    /// assert_eq!(property, Property::MutualExclusion);
    /// assert_eq!(why, "try_acquire granted at 12.0 ms while L3 held the key until at least 80.0 ms");
    /// ```
    pub fn explain(&self, op: &LockOp, ret: &LockRet) -> (Property, String) {
        self.explain_with(op, ret, &Story::default())
    }

    /// [`LockSpec::explain`] with what the history shows beyond the state ([`Story`]): who
    /// held each lease, how leases ended, whether the acquire waited.
    ///
    /// - a grant while the key was full: P1 mutual exclusion;
    /// - a fencing token not above the last one granted: P3 fencing;
    /// - a refusal while there was room: P4 expiry, or P5 no lost wake-up if the refused
    ///   acquire was waiting and the last lease to end before it did not expire (was
    ///   released, or there was none); the sentence names that lease;
    /// - a release, refresh or remaining-TTL answering "held" for a lease that was not: P2
    ///   ownership (a token not current acted as current);
    /// - one answering "not held" for a lease that surely was: P2 ownership if another lease's
    ///   release, answered "was held", came after its grant (that release freed it); else P1
    ///   mutual exclusion (the backend ended it early, under a holder that still holds it);
    /// - a remaining TTL outside the lease's expiry interval: P4 expiry.
    ///
    /// The state should be one that reaches `op` (every operation that returned before `op`
    /// was invoked is placed); in any other, the sentence says what had to come first.
    pub fn explain_with(&self, op: &LockOp, ret: &LockRet, story: &Story) -> (Property, String) {
        let name = |op: &LockOp| match op {
            LockOp::Acquire { .. } if story.waited => "acquire".to_owned(),
            LockOp::Acquire { .. } => "try_acquire".to_owned(),
            LockOp::CancelledAcquire { lease, .. } => format!("the cancelled acquire of {lease}"),
            LockOp::Release { lease, .. } => format!("release of {lease}"),
            LockOp::Refresh { lease, .. } => format!("refresh of {lease}"),
            LockOp::Remaining { lease, .. } => format!("remaining_ttl of {lease}"),
            LockOp::Withdraw { lease, .. } => format!("the clean-up of the cancelled acquire of {lease}"),
            LockOp::SessionEnded { lease, .. } => format!("the end of {lease}'s session"),
        };
        let window = op.window();
        if !self.fits_next(op) {
            return (
                self.fallback_property(op, ret),
                format!(
                    "{} returned at {}, before an operation that must precede it took effect ({})",
                    name(op),
                    ms(window.to),
                    ms(self.now)
                ),
            );
        }
        let mut probe = self.clone();
        let (from, to) = probe.enter(window);
        let at = when(from, to);
        let alive: Vec<&super::Holder> =
            probe.holders.iter().filter(|holder| probe.liveness(holder, from, to) == Liveness::Alive).collect();
        // "L3 (client 1) held the key until at least 80.0 ms": surely alive while
        // `t + early tolerance` is before its earliest expiry.
        let until = |holder: &super::Holder| {
            format!(
                "{} held the key until at least {}",
                story.lease(holder.lease),
                ms(holder.expires_between.0.saturating_sub(probe.early_tolerance))
            )
        };
        let full = |limit: u32, alive: &[&super::Holder]| match alive {
            [holder] if limit == 1 => until(holder),
            _ => format!(
                "{} ({})",
                permits(alive.len(), limit),
                alive.iter().map(|holder| until(holder)).collect::<Vec<_>>().join(", ")
            ),
        };
        match (op, ret) {
            (LockOp::Acquire { lease, limit, .. }, LockRet::Granted { fence }) => {
                if probe.position(*lease).is_some() {
                    (
                        Property::MutualExclusion,
                        format!("{} granted {lease} {at} although {lease} already held it", name(op)),
                    )
                } else if alive.len() >= *limit as usize {
                    (Property::MutualExclusion, format!("{} granted {at} while {}", name(op), full(*limit, &alive)))
                } else if probe.fence_goes_backwards(*fence) {
                    (
                        Property::Fencing,
                        format!(
                            "fencing token {fence} granted {at} after {}",
                            probe.earlier_token(*lease, *fence, story)
                        ),
                    )
                } else {
                    self.unexplained(op, ret, &name(op))
                }
            }
            (LockOp::CancelledAcquire { lease, limit, .. }, LockRet::Granted { fence }) => {
                if probe.withdrawn.contains(lease) {
                    (Property::CancelSafety, format!("{} was granted after its clean-up", name(op)))
                } else if probe.first_room(*limit, from, to).is_none() {
                    (
                        Property::MutualExclusion,
                        format!(
                            "{} was granted {at} while {} (no room before its clean-up)",
                            name(op),
                            full(*limit, &alive)
                        ),
                    )
                } else if probe.fence_goes_backwards(*fence) {
                    (
                        Property::Fencing,
                        format!(
                            "fencing token {fence} granted {at} after {}",
                            probe.earlier_token(*lease, *fence, story)
                        ),
                    )
                } else {
                    self.unexplained(op, ret, &name(op))
                }
            }
            (LockOp::Acquire { limit, .. }, LockRet::NotGranted) if probe.holders.len() < *limit as usize => {
                // Which lease should have made room is not always clear (a cancelled
                // acquire's leaked grant and a lease that never expired explain the same
                // refusal), so the property is the refused call's, and the sentence names the
                // last lease to end before it.
                // A waiter refused after a release lost its wake-up; after an expiry, the
                // expiry is in question first.
                let last = story.last_ended_by(from);
                let after_expiry = matches!(last, Some(Ending { how: Ended::Expired, .. }));
                let property = if story.waited && !after_expiry { Property::NoLostWakeup } else { Property::Expiry };
                let verb = if story.waited { "timed out" } else { "refused" };
                let room = if probe.holders.is_empty() {
                    "although no lease could still hold the key".to_owned()
                } else {
                    format!("while only {}", permits(probe.holders.len(), *limit))
                };
                let context = last.map(|ending| format!(" ({})", ending.sentence(story))).unwrap_or_default();
                (property, format!("{} {verb} {at} {room}{context}", name(op)))
            }
            (
                LockOp::Release { lease, .. } | LockOp::Refresh { lease, .. },
                LockRet::Released(true) | LockRet::Refreshed(true),
            )
            | (LockOp::Remaining { lease, .. }, LockRet::Remaining(Some(_)))
                if probe.position(*lease).is_none() =>
            {
                let answer = match ret {
                    LockRet::Remaining(Some(left)) => format!("{} left", ms(*left)),
                    _ => "'was held'".to_owned(),
                };
                let but = match story.ending_of(*lease) {
                    Some(ending) if ending.at <= to => ending.sentence(story),
                    _ if !story.holders.contains_key(lease) => format!("{lease} was never granted"),
                    _ => format!("{} no longer held the key", story.lease(*lease)),
                };
                (Property::Ownership, format!("{} {at} answered {answer} but {but}", name(op)))
            }
            (
                LockOp::Release { lease, .. } | LockOp::Refresh { lease, .. } | LockOp::Remaining { lease, .. },
                LockRet::Released(false) | LockRet::Refreshed(false) | LockRet::Remaining(None),
            ) if alive.iter().any(|holder| holder.lease == *lease) => {
                let holder = alive.iter().find(|holder| holder.lease == *lease).expect("checked");
                let answer = format!("{} {at} answered 'not held' although {}", name(op), until(holder));
                // Ended under its holder: by another lease's release (ownership), or by the
                // backend on its own before its time (its holder's exclusion ended early).
                match story.freed_by(*lease, to) {
                    Some(ending) => (
                        Property::Ownership,
                        format!(
                            "{answer} (the release of {} at {} may have freed it)",
                            story.lease(ending.lease),
                            ms(ending.at)
                        ),
                    ),
                    None => (Property::MutualExclusion, format!("{answer}: the backend ended it early")),
                }
            }
            (LockOp::Remaining { lease, .. }, LockRet::Remaining(Some(left))) => {
                let holder = &probe.holders[probe.position(*lease).expect("the arm above takes non-holders")];
                let (earliest, latest) = holder.expires_between;
                (
                    Property::Expiry,
                    format!(
                        "{} {at} answered {} left, but {} ends between {} and {}",
                        name(op),
                        ms(*left),
                        story.lease(*lease),
                        ms(earliest),
                        ms(latest)
                    ),
                )
            }
            _ => self.unexplained(op, ret, &name(op)),
        }
    }

    /// The explanation in the first of `states` that reaches `op` (every operation that had to
    /// precede it is placed), or in the first state if none does; `None` without states.
    /// A checker passes the states its search tried `op` in, the most advanced first.
    pub fn explain_among<'a>(
        states: impl IntoIterator<Item = &'a LockSpec>,
        op: &LockOp,
        ret: &LockRet,
        story: &Story,
    ) -> Option<(Property, String)> {
        let mut first = None;
        for state in states {
            if state.fits_next(op) {
                return Some(state.explain_with(op, ret, story));
            }
            first.get_or_insert(state);
        }
        first.map(|state| state.explain_with(op, ret, story))
    }

    /// The earlier grant a token `fence` for `lease` does not exceed, as the history shows it:
    /// `L1 (client 0)'s token 7`. The state knows only the last token; the lease it went to is
    /// the one the history shows with that token, or a holder granted a larger one (a grant
    /// whose answer came later, which the state placed before with a token of its choosing).
    fn earlier_token(&self, lease: LeaseId, fence: u64, story: &Story) -> String {
        let last = self.last_fence.unwrap_or_default();
        let others = || story.fences.iter().filter(|(other, _)| **other != lease);
        let named = others()
            .find(|(_, token)| **token == last)
            .or_else(|| others().find(|(other, token)| **token >= fence && self.position(**other).is_some()));
        match named {
            Some((other, token)) => format!("{}'s token {token}", story.lease(*other)),
            None => format!("token {last}"),
        }
    }

    /// A step the spec refuses for no reason the cases above name (an answer of the wrong
    /// kind, a withdrawal that cannot happen here).
    fn unexplained(&self, op: &LockOp, ret: &LockRet, name: &str) -> (Property, String) {
        (self.fallback_property(op, ret), format!("{name} answered {ret:?}, which no order of the operations explains"))
    }

    fn fallback_property(&self, op: &LockOp, ret: &LockRet) -> Property {
        match (op, ret) {
            (LockOp::Acquire { .. } | LockOp::CancelledAcquire { .. }, LockRet::Granted { .. }) => {
                Property::MutualExclusion
            }
            (LockOp::Acquire { .. }, LockRet::NotGranted) => Property::Expiry,
            _ => Property::Ownership,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Window;

    const TTL: Micros = 80_000;

    fn acquire(lease: u32, limit: u32, at: Micros) -> LockOp {
        LockOp::Acquire { lease: LeaseId(lease), ttl: TTL, limit, at: Window::at(at) }
    }

    fn granted(fence: u64) -> LockRet {
        LockRet::Granted { fence }
    }

    #[test]
    fn a_refusal_after_the_last_lease_was_released_is_an_expiry_violation_naming_the_release() {
        let mut key = LockSpec::with_tolerance(0);
        assert!(key.step(&acquire(180, 1, 25_250_000), Some(&granted(1))));
        let release = LockOp::Release { lease: LeaseId(180), at: Window::at(25_279_200) };
        assert!(key.step(&release, Some(&LockRet::Released(true))));
        let story = Story {
            waited: false,
            holders: BTreeMap::from([(LeaseId(180), 2)]),
            fences: BTreeMap::new(),
            granted: BTreeMap::new(),
            endings: vec![Ending { lease: LeaseId(180), at: 25_279_200, how: Ended::Released }],
        };
        let (property, why) = key.explain_with(&acquire(181, 1, 25_279_400), &LockRet::NotGranted, &story);
        assert_eq!(property, Property::Expiry);
        assert_eq!(
            why,
            "try_acquire refused at 25279.4 ms although no lease could still hold the key \
             (L180 (client 2) was released at 25279.2 ms)"
        );
        // The same refusal of a waiting acquire lost its wake-up...
        let waited = Story { waited: true, ..story };
        let (property, why) = key.explain_with(&acquire(181, 1, 25_279_400), &LockRet::NotGranted, &waited);
        assert_eq!(property, Property::NoLostWakeup);
        assert!(why.starts_with("acquire timed out at 25279.4 ms"), "{why}");
        // ...but after an expiry, the expiry is in question.
        let expired =
            Story { endings: vec![Ending { lease: LeaseId(180), at: 25_279_200, how: Ended::Expired }], ..waited };
        let (property, _) = key.explain_with(&acquire(181, 1, 25_279_400), &LockRet::NotGranted, &expired);
        assert_eq!(property, Property::Expiry);
    }

    #[test]
    fn a_semaphore_refusal_with_a_free_permit_counts_the_permits() {
        let mut key = LockSpec::with_tolerance(0);
        assert!(key.step(&acquire(1, 2, 0), Some(&granted(1))));
        let (property, why) = key.explain(&acquire(2, 2, 41_200), &LockRet::NotGranted);
        assert_eq!(property, Property::Expiry);
        assert_eq!(why, "try_acquire refused at 41.2 ms while only 1 of 2 permits was held");
    }

    #[test]
    fn a_refusal_after_a_cancelled_acquire_was_cleaned_up_names_the_clean_up() {
        let key = LockSpec::with_tolerance(0);
        let story = Story {
            waited: false,
            holders: BTreeMap::new(),
            fences: BTreeMap::new(),
            granted: BTreeMap::new(),
            endings: vec![Ending { lease: LeaseId(2), at: 15_000, how: Ended::CleanedUp }],
        };
        let (property, why) = key.explain_with(&acquire(3, 1, 20_000), &LockRet::NotGranted, &story);
        assert_eq!(property, Property::Expiry);
        assert!(why.ends_with("(the cancelled acquire of L2 was to give back any grant by 15.0 ms)"), "{why}");
    }

    #[test]
    fn a_grant_while_held_names_the_holder_and_a_token_going_back_names_both_tokens() {
        let mut key = LockSpec::with_tolerance(0);
        assert!(key.step(&acquire(3, 1, 0), Some(&granted(7))));
        let story = Story { holders: BTreeMap::from([(LeaseId(3), 1)]), ..Story::default() };
        let (property, why) = key.explain_with(&acquire(4, 1, 12_000), &granted(8), &story);
        assert_eq!(property, Property::MutualExclusion);
        assert_eq!(why, "try_acquire granted at 12.0 ms while L3 (client 1) held the key until at least 80.0 ms");
        // Both a double grant and a token going back: the double grant is the worse news.
        assert_eq!(key.explain(&acquire(4, 1, 12_000), &granted(4)).0, Property::MutualExclusion);
        let release = LockOp::Release { lease: LeaseId(3), at: Window::at(20_000) };
        assert!(key.step(&release, Some(&LockRet::Released(true))));
        let (property, why) = key.explain(&acquire(4, 1, 30_000), &granted(4));
        assert_eq!(property, Property::Fencing);
        assert_eq!(why, "fencing token 4 granted at 30.0 ms after token 7");
        let named = Story { fences: BTreeMap::from([(LeaseId(3), 7)]), ..story };
        let (_, why) = key.explain_with(&acquire(4, 1, 30_000), &granted(4), &named);
        assert_eq!(why, "fencing token 4 granted at 30.0 ms after L3 (client 1)'s token 7");
    }

    #[test]
    fn a_release_answering_held_for_an_expired_lease_breaks_ownership() {
        let mut key = LockSpec::with_tolerance(0);
        assert!(key.step(&acquire(5, 1, 220_000), Some(&granted(1))));
        let story = Story {
            waited: false,
            holders: BTreeMap::from([(LeaseId(5), 0)]),
            fences: BTreeMap::new(),
            granted: BTreeMap::new(),
            endings: vec![Ending { lease: LeaseId(5), at: 300_000, how: Ended::Expired }],
        };
        let release = LockOp::Release { lease: LeaseId(5), at: Window::at(310_000) };
        let (property, why) = key.explain_with(&release, &LockRet::Released(true), &story);
        assert_eq!(property, Property::Ownership);
        assert_eq!(why, "release of L5 at 310.0 ms answered 'was held' but L5 (client 0) had expired by 300.0 ms");
        let forged = LockOp::Release { lease: LeaseId(9), at: Window::at(10_000) };
        let (_, why) = LockSpec::with_tolerance(0).explain(&forged, &LockRet::Released(true));
        assert_eq!(why, "release of L9 at 10.0 ms answered 'was held' but L9 was never granted");
        // Answering "not held" for a lease surely alive: the backend ended it early...
        let mut held = LockSpec::with_tolerance(0);
        assert!(held.step(&acquire(5, 1, 0), Some(&granted(1))));
        let early = LockOp::Refresh { lease: LeaseId(5), ttl: TTL, at: Window::at(40_000) };
        let (property, why) = held.explain(&early, &LockRet::Refreshed(false));
        assert_eq!(property, Property::MutualExclusion);
        assert_eq!(
            why,
            "refresh of L5 at 40.0 ms answered 'not held' although L5 held the key until at least 80.0 ms: \
             the backend ended it early"
        );
        // ...or another lease's release, answered "was held" after its grant, freed it.
        let story = Story {
            granted: BTreeMap::from([(LeaseId(5), 0)]),
            endings: vec![Ending { lease: LeaseId(4), at: 30_000, how: Ended::Released }],
            ..Story::default()
        };
        let (property, why) = held.explain_with(&early, &LockRet::Refreshed(false), &story);
        assert_eq!(property, Property::Ownership);
        assert!(why.ends_with("(the release of L4 at 30.0 ms may have freed it)"), "{why}");
    }

    #[test]
    fn the_explanation_comes_from_a_state_that_reaches_the_operation() {
        let mut ahead = LockSpec::with_tolerance(0);
        assert!(ahead.step(&acquire(1, 1, 50_000), Some(&granted(1))));
        let free = LockSpec::with_tolerance(0);
        // In `ahead` the clock is past the refusal's window: it cannot be placed there.
        let (_, why) =
            LockSpec::explain_among([&ahead, &free], &acquire(2, 1, 10_000), &LockRet::NotGranted, &Story::default())
                .expect("states given");
        assert_eq!(why, "try_acquire refused at 10.0 ms although no lease could still hold the key");
    }
}
