//! The tiled AVX2 kernel on unpacked weight rows ([`Panel`]): `MR` activation
//! rows x 2 weight rows per step, so each weight chunk loaded from the panel
//! serves `MR` activation rows and each activation chunk serves 2 weight rows.
//! Per block it forms the exact integers of the canonical dot product (see
//! `dot/mod.rs`) and applies the same per-lane f32 operations, one lane per
//! output, so results equal the scalar and direct paths bit for bit.

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::*;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::{Panel, Side};
    use crate::cpu::act_quant::ActBlock;
    use std::arch::x86_64::*;

    /// Lane k of the result = sum of the lanes of `v[k]` (k < 8). Built from
    /// unpacks and adds (single-uop instructions; `hadd` is slow on Zen).
    #[inline(always)]
    unsafe fn hsum8(v: &[__m256i; 8]) -> __m256i {
        #[inline(always)]
        unsafe fn pair32(a: __m256i, b: __m256i) -> __m256i {
            _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b))
        }
        #[inline(always)]
        unsafe fn pair64(a: __m256i, b: __m256i) -> __m256i {
            _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b))
        }
        // Per 128-bit half: [a, b, a, b] partial sums, then [a, b, c, d].
        let q03 = pair64(pair32(v[0], v[1]), pair32(v[2], v[3]));
        let q47 = pair64(pair32(v[4], v[5]), pair32(v[6], v[7]));
        let lo = _mm256_permute2x128_si256(q03, q47, 0x20);
        let hi = _mm256_permute2x128_si256(q03, q47, 0x31);
        _mm256_add_epi32(lo, hi)
    }

    /// Load the `S` i16 values at `p` (S = 16: all lanes; S = 2: lane 0).
    #[inline(always)]
    unsafe fn load_s<const S: usize>(p: *const i16) -> __m256i {
        if S == 16 {
            _mm256_loadu_si256(p as *const __m256i)
        } else {
            let v = (p as *const i32).read_unaligned();
            _mm256_zextsi128_si256(_mm_cvtsi32_si128(v))
        }
    }

    /// Outputs `out[r][w]` = canonical dot of panel rows `j + w` (`w < n`;
    /// `j` even, `n` 1 or 2) with activation rows `acts[r]` (r < MR <= 4);
    /// `side` holds the row group's [`Side`] per block.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn tile<
        const G: usize,
        const S: usize,
        const MR: usize,
        const SIGNED: bool,
        const HAS_MIN: bool,
    >(
        p: &Panel,
        j: usize,
        n: usize,
        acts: [&[ActBlock<G, S>]; MR],
        side: &[Side],
        out: &mut [[f32; 2]; MR],
    ) {
        let groups = p.groups;
        let wr = [j, j + n - 1];
        let vals = [
            p.vals.as_ptr().add(wr[0] * p.cols),
            p.vals.as_ptr().add(wr[1] * p.cols),
        ];
        let scl = [
            p.scl.as_ptr().add(wr[0] * p.cols / 2),
            p.scl.as_ptr().add(wr[1] * p.cols / 2),
        ];
        let pair = (j / 2) * groups;
        let bc = [
            p.bc.as_ptr().add(wr[0] * groups * S),
            p.bc.as_ptr().add(wr[1] * groups * S),
        ];
        let mn = [
            p.mn.as_ptr().add(wr[0] * groups * S),
            p.mn.as_ptr().add(wr[1] * groups * S),
        ];
        let ones = _mm256_set1_epi16(1);
        let mut accf = _mm256_setzero_ps();
        for g in 0..groups {
            let mut acc = [_mm256_setzero_si256(); 8];
            for c in 0..G / 32 {
                let off = g * G + 32 * c;
                let wv = [
                    _mm256_loadu_si256(vals[0].add(off) as *const __m256i),
                    _mm256_loadu_si256(vals[1].add(off) as *const __m256i),
                ];
                // Legacy blocks have unit sub-block scales.
                let sv = if G == 32 {
                    [ones, ones]
                } else {
                    [
                        _mm256_loadu_si256(scl[0].add(off / 2) as *const __m256i),
                        _mm256_loadu_si256(scl[1].add(off / 2) as *const __m256i),
                    ]
                };
                let wa = if SIGNED {
                    [_mm256_abs_epi8(wv[0]), _mm256_abs_epi8(wv[1])]
                } else {
                    wv
                };
                for r in 0..MR {
                    let av = _mm256_loadu_si256(
                        acts[r].get_unchecked(g).qs.as_ptr().add(32 * c) as *const __m256i
                    );
                    for w in 0..2 {
                        let pr = if SIGNED {
                            _mm256_maddubs_epi16(wa[w], _mm256_sign_epi8(av, wv[w]))
                        } else {
                            _mm256_maddubs_epi16(wv[w], av)
                        };
                        acc[2 * r + w] =
                            _mm256_add_epi32(acc[2 * r + w], _mm256_madd_epi16(pr, sv[w]));
                    }
                }
            }
            let sd = side.get_unchecked(g);
            let dy = _mm256_load_ps(sd.dy.as_ptr());
            let dwv = _mm256_castpd_ps(_mm256_broadcast_sd(
                &*(p.dw2.as_ptr().add(pair + g) as *const f64),
            ));
            let cwv = _mm256_castpd_ps(_mm256_broadcast_sd(
                &*(p.cw2.as_ptr().add(pair + g) as *const f64),
            ));
            if G == 32 {
                // Legacy: offset (or min) term = side_mul * ysum, from `side`.
                let ys = _mm256_load_si256(sd.ys.as_ptr() as *const __m256i);
                let mut sumi = hsum8(&acc);
                if !HAS_MIN {
                    sumi = _mm256_add_epi32(sumi, ys);
                }
                accf = _mm256_fmadd_ps(_mm256_mul_ps(dwv, dy), _mm256_cvtepi32_ps(sumi), accf);
                if HAS_MIN {
                    accf = _mm256_fmadd_ps(_mm256_mul_ps(cwv, dy), _mm256_cvtepi32_ps(ys), accf);
                }
                continue;
            }
            // K-quants: per-16 offset and min terms from the activation bsums.
            let mut accm = [_mm256_setzero_si256(); 8];
            let bcv = [load_s::<S>(bc[0].add(g * S)), load_s::<S>(bc[1].add(g * S))];
            let mnv = [load_s::<S>(mn[0].add(g * S)), load_s::<S>(mn[1].add(g * S))];
            for r in 0..MR {
                let bs = load_s::<S>(acts[r].get_unchecked(g).bsums.as_ptr());
                for w in 0..2 {
                    acc[2 * r + w] =
                        _mm256_add_epi32(acc[2 * r + w], _mm256_madd_epi16(bcv[w], bs));
                    if HAS_MIN {
                        accm[2 * r + w] = _mm256_madd_epi16(mnv[w], bs);
                    }
                }
            }
            let sumi = _mm256_cvtepi32_ps(hsum8(&acc));
            accf = _mm256_fmadd_ps(_mm256_mul_ps(dwv, dy), sumi, accf);
            if HAS_MIN {
                let summ = _mm256_cvtepi32_ps(hsum8(&accm));
                accf = _mm256_fmadd_ps(_mm256_mul_ps(cwv, dy), summ, accf);
            }
        }
        let mut res = [0.0f32; 8];
        _mm256_storeu_ps(res.as_mut_ptr(), accf);
        for r in 0..MR {
            out[r] = [res[2 * r], res[2 * r + 1]];
        }
    }
}
