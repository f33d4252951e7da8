//! The AVX2 attention kernel: the canonical arithmetic of `attn_kernel` with
//! 8-lane vectors, for all the rows of a task at once.
//!
//! The task's positions are walked in blocks small enough to stay in L1;
//! every row of the task uses a block's K (then V) rows before the next
//! block is loaded, so a prefill chunk streams its keys and values once per
//! task rather than once per row. The value accumulators live in `out`
//! between blocks; each `(row, head, dim)` still sums its positions in
//! ascending order, so the bits are those of the row-by-row reference.

#![allow(clippy::needless_range_loop)] // register arrays `[__m256; N]` (N constant) stay unrolled

use std::arch::x86_64::*;

use super::attn_kernel::{max8, reduce8, KvElem, Keys};
use super::vexp::avx2::exp8;

fn lanes(v: __m256) -> [f32; 8] {
    // SAFETY: __m256 and [f32; 8] have the same size; any bits are valid.
    unsafe { std::mem::transmute(v) }
}

/// Positions per block: K or V rows of about 16 KiB.
fn block_len(hd: usize) -> usize {
    (4096 / hd.max(1)).clamp(8, 64) / 8 * 8
}

/// Scores of query head `qh` (`[hd]`) against 8 positions (`offs`,
/// repeat one to fill): lane `i` = `reduce8` of position `i`'s lanes, times
/// `scale` (an `hadd` tree pairs the lanes exactly as `reduce8`).
#[inline(always)]
unsafe fn qk8<T: KvElem>(qh: *const f32, k: *const T, offs: [usize; 8], hd: usize, scale: __m256) -> __m256 {
    let mut acc = [_mm256_setzero_ps(); 8];
    let kp = offs.map(|o| k.add(o));
    for d in (0..hd).step_by(8) {
        let qv = _mm256_loadu_ps(qh.add(d));
        for i in 0..8 {
            acc[i] = _mm256_fmadd_ps(qv, T::load8(kp[i].add(d)), acc[i]);
        }
    }
    // hadd(a, b) = [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7]
    let b01 = _mm256_hadd_ps(acc[0], acc[1]);
    let b23 = _mm256_hadd_ps(acc[2], acc[3]);
    let b45 = _mm256_hadd_ps(acc[4], acc[5]);
    let b67 = _mm256_hadd_ps(acc[6], acc[7]);
    // Lane i < 4: (l0+l1)+(l2+l3) of position i; lane 4+i: (l4+l5)+(l6+l7).
    let c0 = _mm256_hadd_ps(b01, b23);
    let c1 = _mm256_hadd_ps(b45, b67);
    let lo = _mm256_permute2f128_ps(c0, c1, 0x20);
    let hi = _mm256_permute2f128_ps(c0, c1, 0x31);
    _mm256_mul_ps(_mm256_add_ps(lo, hi), scale)
}

/// `acc[h][d0 .. d0 + 8 DV] += Σ_j e[h][j] · v_j[..]` over `offs`, for the
/// `NH` heads from `h0`; `e` is `[g, l8]` (weights from index 0 = `offs[0]`,
/// offset by `j0`), `acc` is `[g, hd]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pv<T: KvElem, const NH: usize, const DV: usize>(
    e: *const f32,
    l8: usize,
    j0: usize,
    v: *const T,
    offs: &[usize],
    h0: usize,
    d0: usize,
    hd: usize,
    acc_out: *mut f32,
) {
    let mut acc = [[_mm256_setzero_ps(); DV]; NH];
    for h in 0..NH {
        for c in 0..DV {
            acc[h][c] = _mm256_loadu_ps(acc_out.add((h0 + h) * hd + d0 + 8 * c));
        }
    }
    for (j, &o) in offs.iter().enumerate() {
        let vp = v.add(o + d0);
        let mut vv = [_mm256_setzero_ps(); DV];
        for c in 0..DV {
            vv[c] = T::load8(vp.add(8 * c));
        }
        for h in 0..NH {
            let w = _mm256_broadcast_ss(&*e.add((h0 + h) * l8 + j0 + j));
            for c in 0..DV {
                acc[h][c] = _mm256_fmadd_ps(w, vv[c], acc[h][c]);
            }
        }
    }
    for h in 0..NH {
        for c in 0..DV {
            _mm256_storeu_ps(acc_out.add((h0 + h) * hd + d0 + 8 * c), acc[h][c]);
        }
    }
}

/// Softmax of one row and head in place over `s` (`[l8]`, scores at
/// `0..l`): pads with -inf, then `e_j` and returns `1 / sum`.
#[inline(always)]
unsafe fn softmax(s: *mut f32, l: usize, l8: usize) -> f32 {
    for j in l..l8 {
        *s.add(j) = f32::NEG_INFINITY;
    }
    let mut vm = _mm256_set1_ps(f32::NEG_INFINITY);
    for j in (0..l8).step_by(8) {
        vm = _mm256_max_ps(_mm256_loadu_ps(s.add(j)), vm);
    }
    let vmx = _mm256_set1_ps(max8(&lanes(vm)));
    let mut vs = _mm256_setzero_ps();
    for j in (0..l8).step_by(8) {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s.add(j)), vmx));
        _mm256_storeu_ps(s.add(j), e);
        vs = _mm256_add_ps(vs, e);
    }
    1.0 / reduce8(&lanes(vs))
}

/// See `attn_kernel::attend_rows`; `hd % 8 == 0`.
///
/// # Safety
/// AVX2/FMA/F16C available; `keys.in_bounds()`; every span non-empty and
/// inside `keys.offs`; `q` and `out` are `[rows, g * hd]`; `scores` holds
/// `Σ g * L8` values, `inv` `rows * g`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn attend_rows<T: KvElem>(
    keys: &Keys<'_, T>,
    q: &[f32],
    spans: &[(usize, usize)],
    out: &mut [f32],
    scores: &mut [f32],
    inv: &mut [f32],
    g: usize,
) {
    let (hd, offs) = (keys.hd, keys.offs);
    let gh = g * hd;
    let n = offs.len();
    let kb = block_len(hd);
    let scale = _mm256_set1_ps(keys.scale);
    let (sp, op) = (scores.as_mut_ptr(), out.as_mut_ptr());
    // Row i's scores: `[g, l8(i)]` after those of the rows before it.
    let l8 = |i: usize| spans[i].1.div_ceil(8) * 8;
    // Scores: per block, every row's 8-position groups that start in it
    // (groups are aligned to the row's first position; the last one repeats
    // its last position, overwritten with -inf by `softmax`).
    for b0 in (0..n).step_by(kb) {
        let mut base = 0;
        for (i, &(a, l)) in spans.iter().enumerate() {
            let li8 = l8(i);
            let first = b0.saturating_sub(a).div_ceil(8) * 8;
            let end = (b0 + kb).saturating_sub(a).min(l);
            for j0 in (first..end).step_by(8) {
                let o: [usize; 8] = std::array::from_fn(|t| offs[a + (j0 + t).min(l - 1)]);
                for h in 0..g {
                    let s = qk8::<T>(q.as_ptr().add(i * gh + h * hd), keys.k.as_ptr(), o, hd, scale);
                    _mm256_storeu_ps(sp.add(base + h * li8 + j0), s);
                }
            }
            base += g * li8;
        }
    }
    let mut base = 0;
    for (i, &(_, l)) in spans.iter().enumerate() {
        let li8 = l8(i);
        for h in 0..g {
            inv[i * g + h] = softmax(sp.add(base + h * li8), l, li8);
        }
        base += g * li8;
    }
    // Weighted values, accumulated in `out` block by block: 32 dims x 2
    // heads per pass, then the rest.
    out.fill(0.0);
    let v = keys.v.as_ptr();
    for b0 in (0..n).step_by(kb) {
        let mut base = 0;
        for (i, &(a, l)) in spans.iter().enumerate() {
            let li8 = l8(i);
            let (j0, j1) = (b0.max(a) - a, (b0 + kb).min(a + l).saturating_sub(a));
            if j0 < j1 {
                let o = &offs[a + j0..a + j1];
                let (e, acc) = (sp.add(base), op.add(i * gh));
                let mut h = 0;
                while h < g {
                    let nh = if g - h >= 2 { 2 } else { 1 };
                    let mut d = 0;
                    while d < hd {
                        match (nh, hd - d >= 32) {
                            (2, true) => pv::<T, 2, 4>(e, li8, j0, v, o, h, d, hd, acc),
                            (2, false) => pv::<T, 2, 1>(e, li8, j0, v, o, h, d, hd, acc),
                            (_, true) => pv::<T, 1, 4>(e, li8, j0, v, o, h, d, hd, acc),
                            (_, false) => pv::<T, 1, 1>(e, li8, j0, v, o, h, d, hd, acc),
                        }
                        d += if hd - d >= 32 { 32 } else { 8 };
                    }
                    h += nh;
                }
            }
            base += g * li8;
        }
    }
    for (i, row) in out.chunks_exact_mut(gh).enumerate() {
        for (h, oh) in row.chunks_exact_mut(hd).enumerate() {
            let s = _mm256_set1_ps(inv[i * g + h]);
            for d in (0..hd).step_by(8) {
                let p = oh.as_mut_ptr().add(d);
                _mm256_storeu_ps(p, _mm256_mul_ps(_mm256_loadu_ps(p), s));
            }
        }
    }
}
