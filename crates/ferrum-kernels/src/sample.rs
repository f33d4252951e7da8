//! Sampling one row of logits: temperature, top-k, top-p, min-p and a seeded
//! draw. This is the reference; the CUDA kernel (`cuda/kernels/sample.cu`)
//! implements the same algorithm, so that only the chosen id comes back.
//!
//! For a row `x` `[n]` and a spec with `temperature > 0`:
//! - `w_i = x_i * (1 / temperature)` (f32), NaN -> -inf; `best = max w`
//!   (none finite or +inf: no id; +inf: the lowest id holding it);
//! - candidates: `w_i - best >= -45` (f32); the rest each weigh less than
//!   3e-20 of the best (see [`PRUNE`]);
//! - `e_i = exp((w_i - best) as f64)`;
//! - top-k (`0 < k < candidates`): keep `w_i >= v_k`, the k-th largest
//!   (duplicates counted, ties with it all kept);
//! - top-p (`< 1`): `Z` = Σ e over those kept; keep `w_i >= v_p`, the largest
//!   kept value whose mass `Σ_{kept, w >= v_p} e >= top_p * Z`;
//! - min-p (`> 0`, clamped to 1): keep `e_i >= min_p`;
//! - draw: the kept id maximizing `(w_i - best) as f64 + g_i`, with the
//!   Gumbel noise `g_i = -ln(-ln(uniform(seed, step, i)))`, lowest id on ties
//!   (an exact sample of the kept set's renormalized softmax).

use crate::backend::RowArgmax;

/// How one row of logits is sampled (a request without penalties or bias).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleSpec {
    /// 0 (or negative, or NaN): the greedy choice, exactly [`RowArgmax::of`].
    pub temperature: f32,
    /// 0: off.
    pub top_k: u32,
    /// In (0, 1]; 1 (or more, or NaN): off.
    pub top_p: f32,
    /// In [0, 1]; 0 (or NaN): off.
    pub min_p: f32,
    /// The request's seed and the index of the token being drawn: the same
    /// pair draws the same token from the same row.
    pub seed: u64,
    pub step: u64,
}

impl SampleSpec {
    /// The greedy choice.
    pub fn greedy() -> SampleSpec {
        SampleSpec { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 0, step: 0 }
    }

    /// `1 / temperature`, or `None` for the greedy choice.
    pub fn inv_temperature(&self) -> Option<f32> {
        (self.temperature > 0.0).then(|| 1.0 / self.temperature)
    }

    /// top-p as used: `None` when off.
    pub fn top_p_used(&self) -> Option<f64> {
        (self.top_p < 1.0).then_some(self.top_p as f64)
    }

    /// min-p as used (clamped to 1, so the best is always kept): `None` when off.
    pub fn min_p_used(&self) -> Option<f64> {
        (self.min_p > 0.0).then(|| self.min_p.min(1.0) as f64)
    }
}

/// Values below the best by more than 45 (after temperature) are dropped
/// before the thresholds are computed: each weighs less than 3e-20 of the
/// best, so together (at most ~1.5e5 of them) less than 5e-15 of the total,
/// and they can never be drawn (see [`REACH`]). Dropping them can move the
/// top-p threshold only when a cumulative mass lies within ~1e-14 (relative)
/// of `top_p * Z`, and the top-k and min-p cuts not at all (unless
/// `min_p < 3e-20`).
pub const PRUNE: f32 = -45.0;

/// Only values within 41 of the best can win a draw: the Gumbel noise lies in
/// [-3.60, 36.74] for the uniforms of [`uniform`].
pub const REACH: f32 = -41.0;

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The state shared by all ids of one (seed, step).
fn stream(seed: u64, step: u64) -> u64 {
    splitmix(splitmix(seed) ^ step)
}

/// The 52 random bits of `id` in the stream `s`.
fn uniform_bits(s: u64, id: u32) -> u64 {
    splitmix(s ^ id as u64) >> 12
}

/// The uniform of 52 random bits, centred in their cell, so in
/// [2^-53, 1 - 2^-53] (never 0 or 1).
fn uniform_of(m: u64) -> f64 {
    (m as f64 + 0.5) * (1.0 / (1u64 << 52) as f64)
}

fn uniform_at(s: u64, id: u32) -> f64 {
    uniform_of(uniform_bits(s, id))
}

/// `e` with `2^e <= 1 - uniform_of(m)`, from the bits alone:
/// `1 - u = (r + 0.5)·2^-52` with `r = 2^52 - 1 - m`.
fn log2_floor_one_minus(m: u64) -> i32 {
    let r = (1u64 << 52) - 1 - m;
    if r == 0 {
        -53
    } else {
        (63 - r.leading_zeros()) as i32 - 52
    }
}

/// The counter-based uniform of token `id` at `step` of the request seeded
/// `seed`: `splitmix(splitmix(splitmix(seed) ^ step) ^ id)`, top 52 bits.
pub fn uniform(seed: u64, step: u64, id: u32) -> f64 {
    uniform_at(stream(seed, step), id)
}

fn gumbel(u: f64) -> f64 {
    -(-u.ln()).ln()
}

/// The tempered value: NaN -> -inf, -0 -> +0 (so that equal values are equal
/// bit patterns, as the device's integer keys need).
fn tempered(x: f32, inv_t: f32) -> f32 {
    let w = x * inv_t;
    if w.is_nan() {
        f32::NEG_INFINITY
    } else if w == 0.0 {
        0.0
    } else {
        w
    }
}

/// Samples one row of logits by `spec`. The result's `logit` is the raw
/// logit of the chosen id and `lse` the raw row's log-sum-exp (as
/// [`RowArgmax::of`]), so `logit - lse` is its log-probability before
/// temperature and filtering.
pub fn sample_row(row: &[f32], spec: &SampleSpec) -> RowArgmax {
    let base = RowArgmax::of(row);
    let Some(inv_t) = spec.inv_temperature() else { return base };
    let pick = |id: usize| RowArgmax { id: Some(id as u32), logit: row[id], lse: base.lse };
    let mut best = f32::NEG_INFINITY;
    let mut best_id = None;
    for (i, &x) in row.iter().enumerate() {
        let w = tempered(x, inv_t);
        if w > best {
            best = w;
            best_id = Some(i);
        }
    }
    let Some(best_id) = best_id else { return RowArgmax { id: None, logit: f32::NEG_INFINITY, lse: base.lse } };
    if best == f32::INFINITY {
        return pick(best_id);
    }
    // [(id, w)] of the candidates, in id order.
    let cand: Vec<(u32, f32)> = row
        .iter()
        .enumerate()
        .filter_map(|(i, &x)| {
            let w = tempered(x, inv_t);
            (w - best >= PRUNE).then_some((i as u32, w))
        })
        .collect();
    let k = spec.top_k as usize;
    let v_k = if k > 0 && k < cand.len() {
        let mut ws: Vec<f32> = cand.iter().map(|c| c.1).collect();
        // Descending: the k-th largest lands at k - 1 (no NaN, no -0 here).
        *ws.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a)).1
    } else {
        f32::NEG_INFINITY
    };
    let v_p = match spec.top_p_used() {
        Some(p) => {
            // [(w, e)] of those top-k keeps.
            let we: Vec<(f32, f64)> = cand.iter().filter(|c| c.1 >= v_k).map(|&(_, w)| (w, ((w - best) as f64).exp())).collect();
            top_p_threshold(&we, best, p)
        }
        None => f32::NEG_INFINITY,
    };
    let keep_from = v_k.max(v_p);
    let min_p = spec.min_p_used();
    let s = stream(spec.seed, spec.step);
    // The best always stays (e = 1, above every threshold): its key is the
    // first lower bound of the winning key.
    let (mut win_key, mut win) = (gumbel(uniform_at(s, best_id as u32)), best_id as u32);
    for &(i, w) in &cand {
        let d = w - best;
        if w < keep_from || d < REACH {
            continue;
        }
        let m = uniform_bits(s, i);
        // The key `d - ln(-ln u)` is at most `d - ln(1 - u)` (as
        // `-ln u >= 1 - u`), and `ln(1 - u) >= e·ln 2` for the `e` read off
        // the bits: when that bound is below `win_key` (with a margin far
        // above rounding) the element cannot win, and no logarithm is spent
        // on it. Few elements pass (each with probability < 2·e^(d - win_key)).
        if log2_floor_one_minus(m) as f64 * std::f64::consts::LN_2 > d as f64 - win_key + 1e-9 {
            continue;
        }
        let u = uniform_of(m);
        if min_p.is_some_and(|m| (d as f64).exp() < m) {
            continue;
        }
        let key = d as f64 + gumbel(u);
        if key > win_key || (key == win_key && i < win) {
            (win_key, win) = (key, i);
        }
    }
    pick(win as usize)
}

/// Buckets of the top-p search, evenly over `w - best` in [PRUNE, 0].
const TOP_P_BUCKETS: usize = 4096;

/// The top-p cut of `we` (`[(w, e)]` of the values top-k keeps, in any
/// order): the largest `w` whose mass `Σ_{w' >= w} e` reaches `p · Σ e`
/// (ties are summed whole). The masses are first summed in buckets of
/// `w - best` (monotone in `w`), so only the bucket holding the cut is
/// sorted. (Summation order differs from a full sort's only by rounding.)
fn top_p_threshold(we: &[(f32, f64)], best: f32, p: f64) -> f32 {
    let scale = TOP_P_BUCKETS as f32 / -PRUNE;
    // Bucket 0 holds the best; larger buckets smaller values.
    let bucket = |w: f32| (((best - w) * scale) as usize).min(TOP_P_BUCKETS - 1);
    let mut mass = vec![0.0f64; TOP_P_BUCKETS];
    let mut z = 0.0;
    for &(w, e) in we {
        mass[bucket(w)] += e;
        z += e;
    }
    let target = p * z;
    let mut cum = 0.0;
    let Some(b) = mass.iter().position(|&m| {
        let reached = cum + m >= target;
        if !reached {
            cum += m;
        }
        reached
    }) else {
        // Rounding left the total just short of the target: keep all.
        return f32::NEG_INFINITY;
    };
    let mut head: Vec<(f32, f64)> = we.iter().copied().filter(|&(w, _)| bucket(w) == b).collect();
    head.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let mut j = 0;
    while j < head.len() {
        let v = head[j].0;
        while j < head.len() && head[j].0 == v {
            cum += head[j].1;
            j += 1;
        }
        if cum >= target {
            return v;
        }
    }
    head.last().map_or(f32::NEG_INFINITY, |v| v.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(temperature: f32, top_k: u32, top_p: f32, min_p: f32) -> SampleSpec {
        SampleSpec { temperature, top_k, top_p, min_p, seed: 42, step: 0 }
    }

    /// A reproducible row of `n` Gaussian-ish logits (scale `s`).
    fn row(n: usize, s: f32, seed: u64) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let u: f64 = (0..4).map(|j| uniform(seed, 1000 + j, i as u32)).sum();
                ((u - 2.0) * 1.7) as f32 * s
            })
            .collect()
    }

    /// The ids drawn over `steps` steps.
    fn drawn(x: &[f32], sp: SampleSpec, steps: u64) -> Vec<u32> {
        (0..steps).map(|step| sample_row(x, &SampleSpec { step, ..sp }).id.unwrap()).collect()
    }

    #[test]
    fn uniform_is_in_the_open_interval_and_deterministic() {
        for id in 0..10_000 {
            let u = uniform(7, 3, id);
            assert!(u > 0.0 && u < 1.0);
            assert_eq!(u, uniform(7, 3, id));
        }
        assert_ne!(uniform(7, 3, 0), uniform(7, 4, 0));
        assert_ne!(uniform(7, 3, 0), uniform(8, 3, 0));
        // The extremes of the 52-bit grid.
        assert_eq!(0.5f64 * (1.0 / (1u64 << 52) as f64), 2f64.powi(-53));
        assert!(((1u64 << 52) - 1) as f64 + 0.5 < (1u64 << 52) as f64);
        assert!(gumbel(2f64.powi(-53)) > -3.61 && gumbel(1.0 - 2f64.powi(-53)) < 36.75);
    }

    /// The semantics written out plainly: every key computed, a full sort.
    fn brute(row: &[f32], sp: &SampleSpec) -> Option<u32> {
        let inv_t = sp.inv_temperature()?;
        let w: Vec<f32> = row.iter().map(|&x| tempered(x, inv_t)).collect();
        let best = w.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if best == f32::NEG_INFINITY {
            return None;
        }
        if best == f32::INFINITY {
            return w.iter().position(|&v| v == best).map(|i| i as u32);
        }
        let cand: Vec<usize> = (0..w.len()).filter(|&i| w[i] - best >= PRUNE).collect();
        let mut sorted: Vec<f32> = cand.iter().map(|&i| w[i]).collect();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let k = sp.top_k as usize;
        let v_k = if k > 0 && k < sorted.len() { sorted[k - 1] } else { f32::NEG_INFINITY };
        let e = |v: f32| ((v - best) as f64).exp();
        let mut v_p = f32::NEG_INFINITY;
        if let Some(p) = sp.top_p_used() {
            let kept: Vec<f32> = sorted.iter().copied().filter(|&v| v >= v_k).collect();
            let target = p * kept.iter().map(|&v| e(v)).sum::<f64>();
            let mut cum = 0.0;
            for (j, &v) in kept.iter().enumerate() {
                cum += e(v);
                if cum >= target && kept.get(j + 1) != Some(&v) {
                    v_p = v;
                    break;
                }
            }
        }
        let s = stream(sp.seed, sp.step);
        let mut win: Option<(f64, u32)> = None;
        for &i in &cand {
            if w[i] < v_k.max(v_p) || sp.min_p_used().is_some_and(|m| e(w[i]) < m) {
                continue;
            }
            let key = (w[i] - best) as f64 + gumbel(uniform_at(s, i as u32));
            if win.is_none_or(|(bk, _)| key > bk) {
                win = Some((key, i as u32));
            }
        }
        win.map(|w| w.1)
    }

    #[test]
    fn fast_paths_equal_the_plain_algorithm() {
        let specs = [
            spec(1.0, 0, 1.0, 0.0),
            spec(0.7, 40, 0.95, 0.05),
            spec(1.3, 0, 0.5, 0.0),
            spec(1.0, 0, 0.9, 0.0),
            spec(0.5, 3, 1.0, 0.2),
            spec(2.0, 100, 0.8, 0.0),
        ];
        let mut mismatches = 0;
        let mut draws = 0;
        for (r, (n, scale)) in [(3000, 3.0), (500, 0.3), (40, 10.0), (2000, 1.0)].into_iter().enumerate() {
            let mut x = row(n, scale, 100 + r as u64);
            if r == 3 {
                // Quantized logits: many ties at every cut.
                x.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 2.0);
            }
            for sp in specs {
                for step in 0..40 {
                    let sp = SampleSpec { step, ..sp };
                    draws += 1;
                    mismatches += (sample_row(&x, &sp).id != brute(&x, &sp)) as usize;
                }
            }
        }
        assert_eq!(mismatches, 0, "{mismatches} of {draws} draws differ");
    }

    #[test]
    fn the_bits_bound_one_minus_u() {
        for id in 0..10_000 {
            let m = uniform_bits(99, id);
            let e = log2_floor_one_minus(m);
            assert!(2f64.powi(e) <= 1.0 - uniform_of(m) && 1.0 - uniform_of(m) < 2f64.powi(e + 1));
        }
        for m in [0, 1, (1u64 << 52) - 2, (1u64 << 52) - 1] {
            let e = log2_floor_one_minus(m);
            assert!(2f64.powi(e) <= 1.0 - uniform_of(m), "m {m}");
        }
    }

    #[test]
    fn temperature_zero_is_the_argmax() {
        for x in [row(1000, 3.0, 1), vec![1.0, f32::NAN, 3.0, 3.0, f32::NEG_INFINITY], vec![f32::NAN; 4], vec![]] {
            let got = sample_row(&x, &spec(0.0, 5, 0.5, 0.1));
            let want = RowArgmax::of(&x);
            assert_eq!(got.id, want.id);
            assert_eq!(got.logit.to_bits(), want.logit.to_bits());
            assert!(got.lse.to_bits() == want.lse.to_bits());
        }
    }

    #[test]
    fn top_k_1_is_the_argmax_and_reports_raw_logit_and_lse() {
        let x = row(5000, 2.0, 3);
        let want = RowArgmax::of(&x);
        for step in 0..50 {
            let got = sample_row(&x, &SampleSpec { step, ..spec(1.5, 1, 1.0, 0.0) });
            assert_eq!(got.id, want.id);
            assert_eq!(got.logit, want.logit);
            assert_eq!(got.lse, want.lse);
        }
    }

    #[test]
    fn ties_at_the_kth_value_are_all_kept() {
        // top_k = 2 over [5, 4, 4, 4, 1]: the three 4s tie with the 2nd value.
        let x = [5.0, 4.0, 4.0, 4.0, 1.0];
        let ids = drawn(&x, spec(1.0, 2, 1.0, 0.0), 4000);
        for id in 0..4 {
            assert!(ids.contains(&id), "id {id} never drawn");
        }
        assert!(!ids.contains(&4));
    }

    #[test]
    fn top_p_keeps_the_smallest_prefix_reaching_p() {
        let p = [0.5f32, 0.25, 0.15, 0.1];
        let x: Vec<f32> = p.iter().map(|v| v.ln()).collect();
        // 0.5 < 0.7 <= 0.75: the first two.
        let ids = drawn(&x, spec(1.0, 0, 0.7, 0.0), 3000);
        assert!(ids.contains(&0) && ids.contains(&1) && !ids.contains(&2) && !ids.contains(&3));
        // 0.5 >= 0.4: the first only.
        assert!(drawn(&x, spec(1.0, 0, 0.4, 0.0), 500).iter().all(|&i| i == 0));
        // 0.75 < 0.85 <= 0.9: three.
        let ids = drawn(&x, spec(1.0, 0, 0.85, 0.0), 3000);
        assert!(ids.contains(&2) && !ids.contains(&3));
        // Ties at the cut are kept whole: [3, 2, 2, 2] needs the 2s.
        let x = [3.0, 2.0, 2.0, 2.0, -1.0];
        let ids = drawn(&x, spec(1.0, 0, 0.5, 0.0), 4000);
        assert!((0..4).all(|i| ids.contains(&i)) && !ids.contains(&4));
    }

    #[test]
    fn top_p_on_a_long_row_matches_a_full_sort() {
        // Flat enough that the cut lies beyond the first heads of 64 and 512.
        let x = row(20_000, 0.4, 9);
        let best = x.iter().copied().fold(f32::MIN, f32::max);
        let we: Vec<(f32, f64)> = x.iter().map(|&w| (w, ((w - best) as f64).exp())).collect();
        let mut sorted = we.clone();
        sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
        let target = 0.9 * we.iter().map(|v| v.1).sum::<f64>();
        let mut cum = 0.0;
        let want = sorted.iter().find(|v| {
            cum += v.1;
            cum >= target
        });
        assert_eq!(top_p_threshold(&we, best, 0.9), want.unwrap().0);
    }

    #[test]
    fn min_p_drops_the_unlikely() {
        let p = [0.5f32, 0.25, 0.15, 0.1];
        let x: Vec<f32> = p.iter().map(|v| v.ln()).collect();
        // Relative to the best: 1, 0.5, 0.3, 0.2; min_p 0.25 keeps three.
        let ids = drawn(&x, spec(1.0, 0, 1.0, 0.25), 3000);
        assert!(ids.contains(&2) && !ids.contains(&3));
        assert!(drawn(&x, spec(1.0, 0, 1.0, 1.0), 200).iter().all(|&i| i == 0));
        assert!(drawn(&x, spec(1.0, 0, 1.0, 7.0), 200).iter().all(|&i| i == 0));
    }

    #[test]
    fn same_seed_and_step_same_draw_steps_vary() {
        let x = row(2000, 1.0, 5);
        let sp = spec(1.0, 0, 1.0, 0.0);
        let a = drawn(&x, sp, 64);
        assert_eq!(a, drawn(&x, sp, 64));
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 20, "{} distinct ids in 64 steps", distinct.len());
        let b = drawn(&x, SampleSpec { seed: 43, ..sp }, 64);
        assert_ne!(a, b);
    }

    /// Frequencies over 20000 steps lie within 4 sigma of the renormalized
    /// probabilities of the kept set.
    #[test]
    fn frequencies_match_the_renormalized_distribution() {
        let p = [0.4f64, 0.3, 0.2, 0.1];
        let x: Vec<f32> = p.iter().map(|v| v.ln() as f32).collect();
        let cases: [(SampleSpec, &[usize]); 5] = [
            (spec(1.0, 0, 1.0, 0.0), &[0, 1, 2, 3]),
            (spec(1.0, 3, 1.0, 0.0), &[0, 1, 2]),
            (spec(1.0, 0, 0.65, 0.0), &[0, 1]),
            (spec(1.0, 0, 1.0, 0.4), &[0, 1, 2]),
            (spec(1.0, 3, 0.95, 0.6), &[0, 1]),
        ];
        let n = 20_000;
        for (sp, kept) in cases {
            let mut counts = [0usize; 4];
            for id in drawn(&x, sp, n) {
                counts[id as usize] += 1;
            }
            let z: f64 = kept.iter().map(|&i| p[i]).sum();
            for i in 0..4 {
                let q = if kept.contains(&i) { p[i] / z } else { 0.0 };
                let sigma = (n as f64 * q * (1.0 - q)).sqrt();
                let dev = (counts[i] as f64 - n as f64 * q).abs();
                assert!(dev <= 4.0 * sigma, "{sp:?}: id {i} drawn {} times, expected {:.0} ± {sigma:.0}", counts[i], n as f64 * q);
            }
        }
        // Temperature 2 flattens: p_i^(1/2), renormalized.
        let mut counts = [0usize; 4];
        for id in drawn(&x, spec(2.0, 0, 1.0, 0.0), n) {
            counts[id as usize] += 1;
        }
        let z: f64 = p.iter().map(|v| v.sqrt()).sum();
        for i in 0..4 {
            let q = p[i].sqrt() / z;
            let sigma = (n as f64 * q * (1.0 - q)).sqrt();
            assert!((counts[i] as f64 - n as f64 * q).abs() <= 4.0 * sigma, "T=2: id {i}: {}", counts[i]);
        }
    }

    #[test]
    fn rows_without_values_and_length_one() {
        let sp = spec(0.8, 3, 0.9, 0.05);
        for x in [vec![f32::NAN; 5], vec![f32::NEG_INFINITY; 3], vec![f32::NAN, f32::NEG_INFINITY], vec![]] {
            let got = sample_row(&x, &sp);
            assert_eq!(got.id, None);
            assert_eq!(got.logit, f32::NEG_INFINITY);
            assert_eq!(got.lse.to_bits(), RowArgmax::of(&x).lse.to_bits());
        }
        let got = sample_row(&[2.5], &sp);
        assert_eq!((got.id, got.logit, got.lse), (Some(0), 2.5, 2.5));
        // NaN and -inf are never drawn; +inf wins at its lowest id.
        let x = [f32::NAN, 1.0, f32::NEG_INFINITY, 1.0];
        assert!(drawn(&x, spec(1.0, 0, 1.0, 0.0), 300).iter().all(|&i| i == 1 || i == 3));
        let x = [1.0, f32::INFINITY, 2.0, f32::INFINITY];
        assert!(drawn(&x, spec(1.0, 0, 1.0, 0.0), 50).iter().all(|&i| i == 1));
    }

    #[test]
    fn far_values_are_never_drawn_and_large_rows_are_fast() {
        // One value 50 below the rest: pruned, and never drawn.
        let mut x = row(151_936, 2.0, 11);
        x[77] = x.iter().copied().fold(f32::MAX, f32::min) - 50.0;
        let t = std::time::Instant::now();
        let ids = drawn(&x, spec(1.0, 0, 0.95, 0.0), 10);
        assert!(!ids.contains(&77));
        let ids = drawn(&x, spec(0.7, 40, 0.95, 0.05), 10);
        assert!(!ids.contains(&77));
        eprintln!("20 draws over 151936 logits: {:.1} ms each", t.elapsed().as_secs_f64() * 1e3 / 20.0);
    }
}
