//! Per-sub-block scale searches used by the K-quant quantizers.
//!
//! Two fits, both weighted least squares over a handful of candidate grids:
//! * [`fit_affine`]: `x ≈ scale * q - offset`, `q` in `0..=nmax`, `offset >= 0`
//!   (Q4_K, Q5_K sub-blocks, which store a scale and a min);
//! * [`fit_symmetric`]: `x ≈ scale * q`, `q` in `-nmax..nmax` (Q6_K).
//!
//! Each tries several inverse scales around the naive one (max / nmax), rounds
//! every element at that grid, solves for the best scale (and offset) given
//! those integers, and keeps the candidate with the smallest weighted error.
//! All float-to-int conversions saturate, so NaN/inf input cannot panic.

/// Round to nearest, ties to even (ggml's `nearest_int`). NaN gives 0 and
/// magnitudes are capped at 2^22 - 1, where the result stops mattering.
///
/// Adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits
/// (the FPU's own ties-to-even rounding); this avoids a libm `rintf` call on
/// targets without SSE4.1.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    const LIMIT: f32 = 4_194_303.0;
    let x = if x.is_nan() {
        0.0
    } else {
        x.clamp(-LIMIT, LIMIT)
    };
    let bits = (x + 12_582_912.0).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// Candidate grid for [`fit_affine`]: inverse scales
/// `(nmax + rmin + rdelta * k) / range` for `k` in `0..=steps`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    pub rmin: f32,
    pub rdelta: f32,
    pub steps: u32,
}

/// Round each `x` onto the affine grid `q = round(iscale * (x - min))`,
/// clamped to `0..=nmax`.
#[inline]
fn snap_affine<const N: usize>(x: &[f32; N], iscale: f32, min: f32, nmax: i32, q: &mut [u8; N]) {
    for (qi, &xi) in q.iter_mut().zip(x) {
        *qi = nearest_int(iscale * (xi - min)).clamp(0, nmax) as u8;
    }
}

#[inline]
fn affine_error<const N: usize>(
    x: &[f32; N],
    w: &[f32; N],
    q: &[u8; N],
    scale: f32,
    min: f32,
) -> f32 {
    let mut err = 0.0f32;
    for ((&xi, &wi), &qi) in x.iter().zip(w).zip(q) {
        let diff = scale * f32::from(qi) + min - xi;
        err += wi * diff * diff;
    }
    err
}

/// Fit `x ≈ scale * q + min` (`min <= 0`) minimising `Σ w (…)²`; writes the
/// integers to `q` and returns `(scale, -min)`. A constant sub-block gives
/// scale 0 and `q = 0`.
pub(crate) fn fit_affine<const N: usize>(
    x: &[f32; N],
    w: &[f32; N],
    nmax: u8,
    grid: Grid,
    q: &mut [u8; N],
) -> (f32, f32) {
    let nmax_i = i32::from(nmax);
    let nmax_f = f32::from(nmax);
    let lo = x.iter().fold(f32::INFINITY, |a, &b| a.min(b)).min(0.0);
    let hi = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let span = hi - lo;
    if !span.is_finite() || span <= 0.0 {
        q.fill(0);
        let offset = if lo.is_finite() { -lo } else { 0.0 };
        return (0.0, offset);
    }
    let (mut sum_w, mut sum_x) = (0.0f32, 0.0f32);
    for (&xi, &wi) in x.iter().zip(w) {
        sum_w += wi;
        sum_x += wi * xi;
    }

    // Start from the grid that spans [lo, hi] exactly.
    let mut min = lo;
    let mut scale = (hi - lo) / nmax_f;
    snap_affine(x, nmax_f / (hi - lo), min, nmax_i, q);
    let mut best = affine_error(x, w, q, scale, min);

    let mut cand = [0u8; N];
    for k in 0..=grid.steps {
        // The grid is anchored at the best offset found so far.
        let range = hi - min;
        if range.is_nan() || range <= 0.0 {
            break;
        }
        let iscale = (grid.rmin + grid.rdelta * k as f32 + nmax_f) / range;
        snap_affine(x, iscale, min, nmax_i, &mut cand);
        let (mut sl, mut sl2, mut sxl) = (0.0f32, 0.0f32, 0.0f32);
        for ((&xi, &wi), &qi) in x.iter().zip(w).zip(&cand) {
            let l = f32::from(qi);
            sl += wi * l;
            sl2 += wi * l * l;
            sxl += wi * l * xi;
        }
        // Normal equations of the 2-parameter weighted fit.
        let det = sum_w * sl2 - sl * sl;
        if det.is_nan() || det <= 0.0 {
            continue;
        }
        let mut this_scale = (sum_w * sxl - sum_x * sl) / det;
        let mut this_min = (sl2 * sum_x - sl * sxl) / det;
        if this_min > 0.0 {
            // The offset is constrained to be subtracted: refit scale alone.
            this_min = 0.0;
            this_scale = sxl / sl2;
        }
        let err = affine_error(x, w, &cand, this_scale, this_min);
        if err < best {
            best = err;
            *q = cand;
            scale = this_scale;
            min = this_min;
        }
    }
    (scale, -min)
}

/// Fit `x ≈ scale * l`, `l` in `-nmax..nmax`, with weights `x²` (big values
/// matter most). Writes `l + nmax` (so `0..2*nmax`) to `q` and returns the
/// scale, which is negative when the largest-magnitude element is positive
/// (that element maps to `-nmax`, using the wider side of the range).
pub(crate) fn fit_symmetric<const N: usize>(x: &[f32; N], nmax: i8, q: &mut [u8; N]) -> f32 {
    let nmax_i = i32::from(nmax);
    let nmax_f = f32::from(nmax);
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &xi in x {
        if xi.abs() > amax {
            amax = xi.abs();
            max = xi;
        }
    }
    // amax only grows through `>` comparisons, so it is never NaN.
    if amax < 1e-15 || amax.is_infinite() {
        q.fill(0);
        return 0.0;
    }

    // Weighted sums for grid `iscale`: (Σ w x l, Σ w l²).
    let sums = |iscale: f32, out: Option<&mut [u8; N]>| -> (f32, f32) {
        let (mut sxl, mut sl2) = (0.0f32, 0.0f32);
        let mut levels = [0i32; N];
        for (li, &xi) in levels.iter_mut().zip(x) {
            let l = nearest_int(iscale * xi).clamp(-nmax_i, nmax_i - 1);
            *li = l;
            let w = xi * xi;
            sxl += w * xi * l as f32;
            sl2 += w * (l * l) as f32;
        }
        if let Some(q) = out {
            for (qi, &l) in q.iter_mut().zip(&levels) {
                *qi = (l + nmax_i) as u8;
            }
        }
        (sxl, sl2)
    };

    let (sxl, sl2) = sums(-nmax_f / max, Some(q));
    let mut scale = if sl2 > 0.0 { sxl / sl2 } else { 0.0 };
    // `scale * sxl` is the error reduction of the fit; larger is better.
    let mut best = scale * sxl;
    for k in (-9i8..=9).filter(|&k| k != 0) {
        let iscale = -(nmax_f + 0.1 * f32::from(k)) / max;
        let (sxl, sl2) = sums(iscale, None);
        if sl2 > 0.0 && sxl * sxl > best * sl2 {
            sums(iscale, Some(q));
            scale = sxl / sl2;
            best = scale * sxl;
        }
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_ties_to_even_and_saturates() {
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(0.49999997), 0);
        assert_eq!(nearest_int(1e9), 4_194_303);
        assert_eq!(nearest_int(f32::NAN), 0);
        assert_eq!(nearest_int(f32::NEG_INFINITY), -4_194_303);
        for i in -2000..2000 {
            let x = i as f32 * 0.37;
            assert_eq!(nearest_int(x), x.round_ties_even() as i32, "{x}");
        }
    }

    #[test]
    fn affine_fit_is_exact_on_a_grid() {
        // Values already on a 4-bit grid with offset -1 and step 0.25.
        let mut x = [0.0f32; 32];
        for (i, v) in x.iter_mut().enumerate() {
            *v = -1.0 + 0.25 * (i % 16) as f32;
        }
        let w = [1.0f32; 32];
        let mut q = [0u8; 32];
        let grid = Grid {
            rmin: -1.0,
            rdelta: 0.1,
            steps: 20,
        };
        let (scale, offset) = fit_affine(&x, &w, 15, grid, &mut q);
        for (i, &qi) in q.iter().enumerate() {
            let back = scale * f32::from(qi) - offset;
            assert!((back - x[i]).abs() < 1e-5, "{i}: {back} vs {}", x[i]);
        }
    }

    #[test]
    fn symmetric_fit_reconstructs() {
        let mut x = [0.0f32; 16];
        for (i, v) in x.iter_mut().enumerate() {
            *v = (i as f32 - 7.5) * 0.1;
        }
        let mut q = [0u8; 16];
        let scale = fit_symmetric(&x, 32, &mut q);
        for (i, &qi) in q.iter().enumerate() {
            let back = scale * (i32::from(qi) - 32) as f32;
            // Within (about) half a step of the fitted grid.
            assert!(
                (back - x[i]).abs() <= 0.6 * scale.abs(),
                "{i}: {back} vs {}",
                x[i]
            );
        }
    }
}
