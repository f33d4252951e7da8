//! Dot products of F32 / F16 / BF16 weight rows with f32 activation rows.
//!
//! Canonical arithmetic (identical bits on every path): 8 f32 lanes; element
//! `i` goes to lane `i % 8` as `lane = fma(w_i, x_i, lane)` in increasing `i`;
//! the row is zero-padded to a multiple of 8 (the padding FMAs are performed);
//! then `t_j = l_j + l_{j+4}`, result `= (t_0 + t_2) + (t_1 + t_3)`.

use ferrum_core::GgmlType;

/// Weight element `i` of a row of type `ty` stored at `row` (little-endian).
#[inline(always)]
fn weight(ty: GgmlType, row: &[u8], i: usize) -> f32 {
    match ty {
        GgmlType::F16 => {
            half::f16::from_bits(u16::from_le_bytes([row[2 * i], row[2 * i + 1]])).to_f32()
        }
        GgmlType::BF16 => {
            f32::from_bits((u16::from_le_bytes([row[2 * i], row[2 * i + 1]]) as u32) << 16)
        }
        _ => f32::from_le_bytes([row[4 * i], row[4 * i + 1], row[4 * i + 2], row[4 * i + 3]]),
    }
}

/// The canonical dot product in plain Rust. `row` holds `x.len()` weights.
pub(crate) fn dot_scalar(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    let mut lanes = [0.0f32; 8];
    let padded = n.div_ceil(8) * 8;
    for i in 0..padded {
        let (w, v) = if i < n {
            (weight(ty, row, i), x[i])
        } else {
            (0.0, 0.0)
        };
        lanes[i % 8] = w.mul_add(v, lanes[i % 8]);
    }
    let t = [
        lanes[0] + lanes[4],
        lanes[1] + lanes[5],
        lanes[2] + lanes[6],
        lanes[3] + lanes[7],
    ];
    (t[0] + t[2]) + (t[1] + t[3])
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::*;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use ferrum_core::GgmlType;
    use std::arch::x86_64::*;

    /// Weight storage: F32 (0), F16 (1), BF16 (2), as a const parameter.
    pub(crate) const F32: u8 = 0;
    pub(crate) const F16: u8 = 1;
    pub(crate) const BF16: u8 = 2;

    pub(crate) fn code(ty: GgmlType) -> u8 {
        match ty {
            GgmlType::F16 => F16,
            GgmlType::BF16 => BF16,
            _ => F32,
        }
    }

    /// 8 weights at element `i` of the row at `p`.
    #[inline(always)]
    unsafe fn load_w<const T: u8>(p: *const u8, i: usize) -> __m256 {
        match T {
            F16 => _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i) as *const __m128i)),
            BF16 => _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128(p.add(2 * i) as *const __m128i)),
                16,
            )),
            _ => _mm256_loadu_ps(p.add(4 * i) as *const f32),
        }
    }

    /// The last `n % 8` weights of a row (bytes at `p`), zero-padded to 8.
    #[inline(always)]
    unsafe fn load_w_tail<const T: u8>(p: *const u8, start: usize, n: usize) -> __m256 {
        let esz = if T == F32 { 4 } else { 2 };
        let mut buf = [0u8; 32];
        std::ptr::copy_nonoverlapping(p.add(esz * start), buf.as_mut_ptr(), esz * (n - start));
        load_w::<T>(buf.as_ptr(), 0)
    }

    #[inline(always)]
    unsafe fn load_x_tail(x: *const f32, start: usize, n: usize) -> __m256 {
        let mut buf = [0.0f32; 8];
        std::ptr::copy_nonoverlapping(x.add(start), buf.as_mut_ptr(), n - start);
        _mm256_loadu_ps(buf.as_ptr())
    }

    /// The canonical horizontal sum.
    #[inline(always)]
    unsafe fn hsum_canonical(v: __m256) -> f32 {
        let t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let u = _mm_add_ps(t, _mm_movehl_ps(t, t));
        _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 1)))
    }

    /// `out[r][w]` = canonical dot of weight row `w_rows[w]` (bytes, `n`
    /// elements) with activation row `x_rows[r]` (`n` f32).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn tile<const T: u8, const MR: usize, const NR: usize>(
        w_rows: [*const u8; NR],
        x_rows: [*const f32; MR],
        n: usize,
        out: &mut [[f32; NR]; MR],
    ) {
        let mut acc = [[_mm256_setzero_ps(); NR]; MR];
        let full = n / 8 * 8;
        let mut i = 0;
        while i < full {
            let mut wv = [_mm256_setzero_ps(); NR];
            for w in 0..NR {
                wv[w] = load_w::<T>(w_rows[w], i);
            }
            for r in 0..MR {
                let xv = _mm256_loadu_ps(x_rows[r].add(i));
                for w in 0..NR {
                    acc[r][w] = _mm256_fmadd_ps(wv[w], xv, acc[r][w]);
                }
            }
            i += 8;
        }
        if full < n {
            let mut wv = [_mm256_setzero_ps(); NR];
            for w in 0..NR {
                wv[w] = load_w_tail::<T>(w_rows[w], full, n);
            }
            for r in 0..MR {
                let xv = load_x_tail(x_rows[r], full, n);
                for w in 0..NR {
                    acc[r][w] = _mm256_fmadd_ps(wv[w], xv, acc[r][w]);
                }
            }
        }
        for r in 0..MR {
            for w in 0..NR {
                out[r][w] = hsum_canonical(acc[r][w]);
            }
        }
    }
}
