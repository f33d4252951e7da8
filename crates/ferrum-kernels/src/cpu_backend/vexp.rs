//! The canonical `exp` of the attention softmax: a polynomial with
//! identical bits in plain Rust and AVX2 (unlike the C library's).

#[inline(always)]
pub(super) fn vmax(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

#[inline(always)]
fn vmin(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}

// exp(x) = 2^n · e^r with n = round(x·log2 e), r = x - n·ln 2 (ln 2 split in
// a short high part, exact in the product, and the rest), e^r from its
// Taylor polynomial of degree 7 (|r| <= ln2/2: truncation error below
// 1e-8 relative, under the rounding of the last steps).
const EXP_LO: f32 = -87.0;
const EXP_HI: f32 = 88.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 355.0 / 512.0;
const LN2_LO: f32 = -2.121_944_4e-4;
const TAYLOR: [f32; 8] = [1.0, 1.0, 1.0 / 2.0, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0];

/// The canonical exp (0 below `EXP_LO` and for NaN, +inf above `EXP_HI`). Matches the AVX2 `exp8` bit for bit.
pub(super) fn exp_canon(x: f32) -> f32 {
    let xc = vmin(vmax(x, EXP_LO), EXP_HI);
    let n = (xc * LOG2E).round_ties_even();
    let r = n.mul_add(-LN2_HI, xc);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = TAYLOR[7];
    for &c in TAYLOR[..7].iter().rev() {
        p = p.mul_add(r, c);
    }
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x > EXP_HI {
        f32::INFINITY
    } else if x >= EXP_LO {
        p * scale
    } else {
        0.0
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use super::{EXP_HI, EXP_LO, LN2_HI, LN2_LO, LOG2E, TAYLOR};
    use std::arch::x86_64::*;

    /// `exp_canon` on 8 lanes.
    #[inline(always)]
    pub(in crate::cpu_backend) unsafe fn exp8(x: __m256) -> __m256 {
        let xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_LO)), _mm256_set1_ps(EXP_HI));
        let n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), xc);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
        let mut p = _mm256_set1_ps(TAYLOR[7]);
        for &c in TAYLOR[..7].iter().rev() {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
        let res = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
        let big = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_HI), _CMP_GT_OQ);
        let res = _mm256_blendv_ps(res, _mm256_set1_ps(f32::INFINITY), big);
        _mm256_and_ps(res, _mm256_cmp_ps(x, _mm256_set1_ps(EXP_LO), _CMP_GE_OQ))
    }
}

#[cfg(test)]
mod tests {
    use super::exp_canon;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 10.0 {
            let want = (x as f64).exp();
            let got = exp_canon(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_7;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp_canon(0.0), 1.0);
        assert_eq!(exp_canon(-88.0), 0.0);
        assert_eq!(exp_canon(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_canon(f32::NAN), 0.0);
        assert_eq!(exp_canon(88.5), f32::INFINITY);
    }
}
