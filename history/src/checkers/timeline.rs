//! The text timeline of a counterexample ([`Counterexample::timeline`]): the picture a reader
//! draws on paper to see which operations overlapped, who held the key when, and where the
//! blamed operation falls.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use lockcheck_model::spec::{LeaseId, Micros};

use super::{Counterexample, TIMELINE_COLUMNS};
use crate::history::{Call, Operation, Outcome};

const LEGEND: &str = "T try_acquire  A acquire  R release  F refresh  Q remaining_ttl  ─ until it returned\n\
                      ✗ refused  ? outcome unknown  ═ held  X crashed  S session cut";

/// Milliseconds, to the microsecond when the picture spans less than 10 ms (a sequential
/// run's operations take microseconds).
fn ms(us: Micros, span: Micros) -> String {
    if span < 10_000 { format!("{:.3}ms", us as f64 / 1000.0) } else { format!("{:.1}ms", us as f64 / 1000.0) }
}

/// The letter an operation starts with.
fn letter(call: &Call) -> char {
    match call {
        Call::TryAcquire { .. } => 'T',
        Call::Acquire { .. } => 'A',
        Call::Release { .. } => 'R',
        Call::Refresh { .. } => 'F',
        Call::RemainingTtl { .. } => 'Q',
        Call::SessionEnded { crashed: true, .. } => 'X',
        Call::SessionEnded { crashed: false, .. } => 'S',
    }
}

/// The mark at an operation's return.
fn end_mark(outcome: &Outcome) -> char {
    match outcome {
        Outcome::NotGranted | Outcome::TimedOut => '✗',
        Outcome::Pending | Outcome::Indeterminate { .. } | Outcome::Cancelled | Outcome::TimedOutLocally => '?',
        _ => '┤',
    }
}

/// Until when a grant's holder could believe it held the key: its lease's first release, or
/// its expiry (extended by refreshes that found it held).
fn held_until(grant: &Operation, returned: Micros, ops: &[Operation]) -> Micros {
    let lease = grant.call.lease();
    let mut until = returned.saturating_add(grant.lease_ttl().unwrap_or_default());
    let mut later: Vec<&Operation> =
        ops.iter().filter(|op| op.call.lease() == lease && !op.call.is_acquire() && op.invoked >= returned).collect();
    later.sort_by_key(|op| op.invoked);
    for op in later {
        if op.invoked >= until {
            break;
        }
        match (&op.call, &op.outcome, op.returned) {
            (Call::Refresh { .. }, Outcome::Refreshed { held: true, .. }, Some(refreshed)) => {
                until = until.max(refreshed.saturating_add(op.lease_ttl().unwrap_or_default()));
            }
            // A crashed holder believes nothing any more.
            (Call::Release { .. }, _, _) | (Call::SessionEnded { crashed: true, .. }, _, _) => return op.invoked,
            _ => {}
        }
    }
    until
}

pub(super) fn draw(counterexample: &Counterexample) -> String {
    let ops = &counterexample.history.operations;
    if ops.is_empty() {
        return String::new();
    }
    let start = ops.iter().map(|op| op.invoked).min().unwrap_or_default();
    let end = ops.iter().map(|op| op.returned.unwrap_or(op.invoked).max(op.invoked)).max().unwrap_or(start);
    let span = end.saturating_sub(start).max(1);
    let last = TIMELINE_COLUMNS - 1;
    let column = |at: Micros| (u128::from(at.clamp(start, end) - start) * last as u128 / u128::from(span)) as usize;

    let clients: BTreeSet<u32> = ops.iter().map(|op| op.client).collect();
    let mut lanes: BTreeMap<u32, Vec<char>> =
        clients.iter().map(|client| (*client, vec![' '; TIMELINE_COLUMNS])).collect();
    // Held leases first, operations drawn over them.
    let mut drawn_leases: BTreeSet<LeaseId> = BTreeSet::new();
    for op in ops {
        let (Outcome::Granted { .. }, Some(returned)) = (&op.outcome, op.returned) else { continue };
        if !drawn_leases.insert(op.call.lease()) {
            continue;
        }
        let until = held_until(op, returned, ops);
        let lane = lanes.get_mut(&op.client).expect("a lane per client");
        // A lease that outlives the picture runs to its edge.
        let to = if until > end { last } else { column(until) };
        for cell in &mut lane[column(returned)..=to.max(column(returned))] {
            *cell = '═';
        }
    }
    for op in ops {
        let lane = lanes.get_mut(&op.client).expect("a lane per client");
        let (from, to) = (column(op.invoked), column(op.returned.unwrap_or(end)));
        for cell in lane.iter_mut().take(to).skip(from + 1) {
            *cell = '─';
        }
        if to > from {
            lane[to] = if op.returned.is_some() { end_mark(&op.outcome) } else { '?' };
        }
        lane[from] = letter(&op.call);
    }

    let label = |client: u32| format!("client {client}");
    let width = clients.iter().map(|client| label(*client).chars().count()).max().unwrap_or(0);
    let blamed = counterexample.blamed_operation();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "time {} → {}, one column ≈ {}",
        ms(start, span),
        ms(end, span),
        ms(span.div_ceil(last as u64), span)
    );
    for (client, lane) in &lanes {
        let mark = if blamed.is_some_and(|op| op.client == *client) { ">>" } else { "  " };
        let lane: String = lane.iter().collect();
        let _ = writeln!(out, "{mark} {:<width$} │{lane}│", label(*client));
        if let (Some(op), Some(position)) = (blamed, counterexample.blamed)
            && op.client == *client
        {
            let _ = writeln!(out, "   {:<width$} │{}^ {}", "", " ".repeat(column(op.invoked)), position + 1);
        }
    }
    out.push_str(LEGEND);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use lockcheck_model::spec::{LeaseId, Property};

    use super::*;

    fn op(client: u32, call: Call, invoked: Micros, returned: Micros, outcome: Outcome) -> Operation {
        Operation { client, key: "k".into(), call, invoked, returned: Some(returned), outcome }
    }

    /// Client 0 holds L1 and releases it at 300 ms; client 1 is refused while it is held;
    /// client 2 is refused after the release: the blamed operation.
    fn refused_after_release() -> Counterexample {
        let try_acquire = |lease| Call::TryAcquire { lease: LeaseId(lease), ttl: 1_000_000, limit: 1 };
        let granted = Outcome::Granted { fence: 1, acquired_at: 0, ttl: None };
        let ops = vec![
            op(0, try_acquire(1), 0, 1_000, granted),
            op(1, try_acquire(2), 150_000, 160_000, Outcome::NotGranted),
            op(0, Call::Release { lease: LeaseId(1) }, 300_000, 301_000, Outcome::Released { held: true }),
            op(2, try_acquire(3), 310_000, 320_000, Outcome::NotGranted),
        ];
        Counterexample::new(Property::Expiry, "refused after the release", ops).blaming(3)
    }

    #[test]
    fn a_lane_per_client_with_holds_bars_and_the_blamed_operation_marked() {
        let counterexample = refused_after_release();
        let picture = counterexample.timeline();
        let lines: Vec<&str> = picture.lines().collect();
        assert!(lines[0].starts_with("time 0.0ms → 320.0ms"), "{picture}");
        let lanes: Vec<&str> = lines.iter().copied().filter(|line| line.contains("client ")).collect();
        assert_eq!(lanes.len(), 3, "one lane per client:\n{picture}");
        for lane in &lanes {
            let inner = lane.split('│').nth(1).expect("a bordered lane");
            assert_eq!(inner.chars().count(), TIMELINE_COLUMNS, "{lane}");
        }
        // Client 0: granted at the start, held until the release at 300 ms (column 66 of 0–71).
        let zero: Vec<char> = lanes[0].split('│').nth(1).expect("lane").chars().collect();
        assert_eq!(zero[0], 'T');
        assert!(zero[1..66].iter().all(|&c| c == '═'), "{}", lanes[0]);
        assert_eq!(zero[66], 'R');
        assert!(zero[67..].iter().all(|&c| c == ' '), "{}", lanes[0]);
        // Client 1: refused, a short bar ending in ✗.
        assert!(lanes[1].contains("T─✗") || lanes[1].contains("T✗"), "{}", lanes[1]);
        // Client 2's lane is marked, and the operation pointed at under it.
        assert!(lanes[2].starts_with(">> client 2"), "{}", lanes[2]);
        assert!(lanes[0].starts_with("   client 0") && lanes[1].starts_with("   client 1"));
        let pointer = lines[lines.iter().position(|line| line.starts_with(">> client 2")).expect("marked") + 1];
        let column = pointer.split('│').nth(1).expect("pointer row").find('^').expect("a ^");
        assert_eq!(column, 68, "310 ms of 320 ms on columns 0–71:\n{picture}");
        assert!(pointer.ends_with("^ 4"), "{pointer}");
        assert!(picture.contains("═ held"), "a legend");
    }

    #[test]
    fn a_picture_of_microseconds_counts_microseconds() {
        let mut counterexample = refused_after_release();
        for op in &mut counterexample.history.operations {
            op.invoked /= 100;
            op.returned = op.returned.map(|returned| returned / 100);
        }
        let picture = counterexample.timeline();
        assert!(picture.starts_with("time 0.000ms → 3.200ms, one column ≈ 0.046ms"), "{picture}");
    }

    #[test]
    fn the_display_marks_the_blamed_line_and_draws_the_timeline() {
        let shown = refused_after_release().to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], "P4 expiry violated: refused after the release");
        assert!(lines[4].starts_with(">>  4. client 2"), "{shown}");
        assert!(lines[1..4].iter().all(|line| line.starts_with("    ")), "{shown}");
        assert!(shown.contains(">> client 2 │"), "{shown}");
    }
}
