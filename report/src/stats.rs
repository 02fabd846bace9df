//! Latency distributions: what a mean hides.
//!
//! Criterion reports means; a lock user cares about the tail (the waiter that waits 50× the
//! median is the one that times out). Every measurement keeps its samples and is summarized as
//! p50 / p90 / p99 / max plus a down-sampled CDF for plotting.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Samples kept per measurement; beyond this a measurement keeps every k-th sample so memory
/// stays bounded however long criterion decides to run.
const MAX_SAMPLES: usize = 1 << 20;
/// Points of the stored CDF (enough for a smooth curve, small enough for a JSON file).
const CDF_POINTS: usize = 200;

/// Latency samples of one measurement, in nanoseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    nanos: Vec<u64>,
    seen: u64,
    stride: u64,
}

impl Samples {
    /// No samples yet.
    pub fn new() -> Self {
        Samples { nanos: Vec::new(), seen: 0, stride: 1 }
    }

    /// Adds one sample.
    pub fn push(&mut self, latency: Duration) {
        self.seen += 1;
        if self.stride == 0 {
            self.stride = 1;
        }
        if !self.seen.is_multiple_of(self.stride) {
            return;
        }
        self.nanos.push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        if self.nanos.len() >= MAX_SAMPLES {
            // Thin out evenly: keep every other sample and halve the intake from now on.
            let mut i = 0;
            self.nanos.retain(|_| {
                i += 1;
                i % 2 == 0
            });
            self.stride *= 2;
        }
    }

    /// Adds many samples.
    pub fn extend(&mut self, latencies: impl IntoIterator<Item = Duration>) {
        for latency in latencies {
            self.push(latency);
        }
    }

    /// Number of samples kept.
    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    /// No samples kept.
    pub fn is_empty(&self) -> bool {
        self.nanos.is_empty()
    }

    /// The distribution's summary, or `None` without samples.
    pub fn summary(&self) -> Option<Summary> {
        Summary::of(&self.nanos)
    }
}

/// A latency distribution: count, mean, percentiles and a CDF, all in nanoseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub count: u64,
    /// Arithmetic mean.
    pub mean_ns: f64,
    /// Smallest sample.
    pub min_ns: f64,
    /// Median.
    pub p50_ns: f64,
    /// 90th percentile.
    pub p90_ns: f64,
    /// 99th percentile.
    pub p99_ns: f64,
    /// 99.9th percentile.
    pub p999_ns: f64,
    /// Largest sample.
    pub max_ns: f64,
    /// The empirical CDF: `(latency_ns, fraction of samples ≤ latency)`, down-sampled.
    pub cdf: Vec<(f64, f64)>,
}

impl Summary {
    /// The summary of `nanos`, or `None` if it is empty.
    pub fn of(nanos: &[u64]) -> Option<Summary> {
        if nanos.is_empty() {
            return None;
        }
        let mut sorted = nanos.to_vec();
        sorted.sort_unstable();
        let n = sorted.len();
        let sum: f64 = sorted.iter().map(|&x| x as f64).sum();
        let step = (n / CDF_POINTS).max(1);
        let mut cdf: Vec<(f64, f64)> =
            (0..n).step_by(step).map(|i| (sorted[i] as f64, (i + 1) as f64 / n as f64)).collect();
        if cdf.last().is_none_or(|&(_, f)| f < 1.0) {
            cdf.push((sorted[n - 1] as f64, 1.0));
        }
        Some(Summary {
            count: n as u64,
            mean_ns: sum / n as f64,
            min_ns: sorted[0] as f64,
            p50_ns: percentile(&sorted, 0.50),
            p90_ns: percentile(&sorted, 0.90),
            p99_ns: percentile(&sorted, 0.99),
            p999_ns: percentile(&sorted, 0.999),
            max_ns: sorted[n - 1] as f64,
            cdf,
        })
    }
}

/// The `q`-quantile of sorted samples by the nearest-rank method (no interpolation: every
/// reported figure is a latency that actually happened).
pub fn percentile(sorted: &[u64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// The median of some figures (e.g. one p50 per repeated run); `None` if empty. Ties in an
/// even count are averaged.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.5), 50.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&sorted, 1.0), 100.0);
        assert_eq!(percentile(&sorted, 0.0), 1.0);
    }

    #[test]
    fn summary_reports_the_tail_a_mean_hides() {
        let mut nanos = vec![1_000u64; 990];
        nanos.extend(std::iter::repeat_n(1_000_000u64, 10));
        let s = Summary::of(&nanos).unwrap();
        assert_eq!(s.p50_ns, 1_000.0);
        assert_eq!(s.p99_ns, 1_000.0);
        assert_eq!(s.p999_ns, 1_000_000.0);
        assert_eq!(s.max_ns, 1_000_000.0);
        assert!(s.mean_ns > 10_000.0, "the mean is dragged up by the tail: {}", s.mean_ns);
        assert_eq!(s.cdf.last().unwrap(), &(1_000_000.0, 1.0));
        assert!(s.cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1), "CDF is monotonic");
    }

    #[test]
    fn samples_stay_bounded_and_evenly_thinned() {
        let mut samples = Samples::new();
        for i in 0..(3 * MAX_SAMPLES as u64) {
            samples.push(Duration::from_nanos(i % 1000));
        }
        assert!(samples.len() < MAX_SAMPLES);
        let s = samples.summary().unwrap();
        assert!((400.0..=600.0).contains(&s.p50_ns), "thinning keeps the shape: p50 {}", s.p50_ns);
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
