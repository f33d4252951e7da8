//! Summary statistics of latency samples: mean, median, p90, p99, with
//! percentiles linearly interpolated between order statistics (numpy's default).

use serde::Serialize;

/// Summary of one metric in milliseconds; all zero when there are no samples.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
}

/// The `p`-th percentile (0..=100) of ascending `sorted`; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => sorted[0],
        n => {
            let rank = (p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

pub fn summarize(values: &[f64]) -> Summary {
    if values.is_empty() {
        return Summary::default();
    }
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    Summary { mean, median: percentile(&v, 50.0), p90: percentile(&v, 90.0), p99: percentile(&v, 99.0) }
}

/// A small seeded generator (SplitMix64): reproducible prompts and arrivals
/// without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi) (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// Exponential with rate `rate` (per second): Poisson inter-arrival gaps.
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -(1.0 - self.next_f64()).ln() / rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert!((percentile(&v, 90.0) - 3.7).abs() < 1e-12);
        assert_eq!(percentile(&[], 50.0), 0.0);
        let s = summarize(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.mean, s.median), (2.5, 2.5));
    }

    #[test]
    fn rng_is_seeded_and_in_range() {
        let a: Vec<u64> = (0..5).map({ let mut r = Rng::new(7); move |_| r.range(1000, 20000) }).collect();
        let b: Vec<u64> = (0..5).map({ let mut r = Rng::new(7); move |_| r.range(1000, 20000) }).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|&x| (1000..20000).contains(&x)));
        let mut r = Rng::new(1);
        let mean = (0..20000).map(|_| r.exponential(4.0)).sum::<f64>() / 20000.0;
        assert!((mean - 0.25).abs() < 0.02, "{mean}");
    }
}
