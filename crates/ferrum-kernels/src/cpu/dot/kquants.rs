//! The 256-element K-quant types (Q2_K .. Q6_K, IQ4_XS): portable unpacking
//! (the scalar path and the tiled kernel's input) and AVX2 direct dot
//! products for the hot types (Q4_K, Q6_K) against [`ActQ8K`] activation
//! rows. See `dot/mod.rs` for the canonical sums.

use super::legacy::IQ4_VALUES;
use super::{f16_at, BlockOut};

/// The 8 six-bit scales and 8 six-bit mins of Q4_K/Q5_K, from their 12 packed
/// bytes, as two little-endian u64 (byte `s` = sub-block `s`).
#[inline(always)]
pub(crate) fn k4_scales_mins(b: &[u8; 12]) -> (u64, u64) {
    let u0 = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let u1 = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let u2 = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    // Sub-blocks 0..4 keep their low 6 bits in bytes 0..4 (scales) and 4..8
    // (mins); 4..8 put low nibbles in bytes 8..12 and their top 2 bits in the
    // top bits of bytes 0..8.
    let sc_lo = u0 & 0x3f3f_3f3f;
    let mn_lo = u1 & 0x3f3f_3f3f;
    let sc_hi = (u2 & 0x0f0f_0f0f) | (((u0 >> 6) & 0x0303_0303) << 4);
    let mn_hi = ((u2 >> 4) & 0x0f0f_0f0f) | (((u1 >> 6) & 0x0303_0303) << 4);
    (
        sc_lo as u64 | (sc_hi as u64) << 32,
        mn_lo as u64 | (mn_hi as u64) << 32,
    )
}

/// The unpack functions below see exactly one block; a short slice (never
/// produced by `Panel::fill`) unpacks as zeros.
macro_rules! chunks {
    ($vals:ident, $b:expr, $out:expr, $( $name:ident : $off:expr, $len:expr );* ) => {
        let Some($vals) = $out.vals.first_chunk_mut::<256>() else { return (0.0, 0.0) };
        $( let Some($name) = $b.get($off..).and_then(|s| s.first_chunk::<$len>()) else { return (0.0, 0.0) }; )*
    };
}

/// Q2_K [84 B]: scales[16] (low nibble scale, high nibble min), qs[64], d,
/// dmin. Element e = 128 n + 32 j + l is bits 2j of qs[32 n + l].
pub(crate) fn unpack_q2_k(b: &[u8], out: BlockOut<'_>) -> (f32, f32) {
    chunks!(vals, b, out, sb: 0, 16; qs: 16, 64);
    for n in 0..2 {
        for l in 0..32 {
            let q = qs[32 * n + l];
            vals[128 * n + l] = q & 3;
            vals[128 * n + 32 + l] = (q >> 2) & 3;
            vals[128 * n + 64 + l] = (q >> 4) & 3;
            vals[128 * n + 96 + l] = q >> 6;
        }
    }
    for (t, &v) in sb.iter().enumerate() {
        out.sc[t] = (v & 0x0f) as i16;
        out.mn[t] = (v >> 4) as i16;
        out.bc[t] = 0;
    }
    (f16_at(b, 80), -f16_at(b, 82))
}

/// Q3_K [110 B]: hmask[32], qs[64], scales[12] (6-bit, offset 32), d.
/// Element e = 128 n + 32 j + l: low 2 bits from qs as Q2_K, bit 2 from bit
/// 4 n + j of hmask[l]; value = that - 4, kept here as the unsigned 0..8 with
/// the -4 folded into `bc`.
pub(crate) fn unpack_q3_k(b: &[u8], out: BlockOut<'_>) -> (f32, f32) {
    chunks!(vals, b, out, hm: 0, 32; qs: 32, 64; sb: 96, 12);
    for n in 0..2 {
        for l in 0..32 {
            let (q, h) = (qs[32 * n + l], hm[l] >> (4 * n));
            vals[128 * n + l] = (q & 3) | (h & 1) << 2;
            vals[128 * n + 32 + l] = ((q >> 2) & 3) | ((h >> 1) & 1) << 2;
            vals[128 * n + 64 + l] = ((q >> 4) & 3) | ((h >> 2) & 1) << 2;
            vals[128 * n + 96 + l] = (q >> 6) | ((h >> 3) & 1) << 2;
        }
    }
    for t in 0..16 {
        let low = if t < 8 { sb[t] & 0x0f } else { sb[t - 8] >> 4 };
        let high = (sb[8 + t % 4] >> (2 * (t / 4))) & 3;
        let sc = (low | high << 4) as i16 - 32;
        out.sc[t] = sc;
        out.bc[t] = -4 * sc;
        out.mn[t] = 0;
    }
    (f16_at(b, 108), 0.0)
}

fn k4_sub_scales(sb: &[u8; 12], out: &mut BlockOut<'_>) {
    let (sc, mn) = k4_scales_mins(sb);
    for t in 0..16 {
        out.sc[t] = ((sc >> (8 * (t / 2))) & 0xff) as i16;
        out.mn[t] = ((mn >> (8 * (t / 2))) & 0xff) as i16;
        out.bc[t] = 0;
    }
}

/// Q4_K [144 B]: d, dmin, scales[12], qs[128]. Element 64 c + l is the low
/// nibble of qs[32 c + l], element 64 c + 32 + l its high nibble.
pub(crate) fn unpack_q4_k(b: &[u8], mut out: BlockOut<'_>) -> (f32, f32) {
    chunks!(vals, b, out, sb: 4, 12; qs: 16, 128);
    for c in 0..4 {
        for l in 0..32 {
            vals[64 * c + l] = qs[32 * c + l] & 0x0f;
            vals[64 * c + 32 + l] = qs[32 * c + l] >> 4;
        }
    }
    k4_sub_scales(sb, &mut out);
    (f16_at(b, 0), -f16_at(b, 2))
}

/// Q5_K [176 B]: d, dmin, scales[12], qh[32], qs[128]; as Q4_K plus bit 4 of
/// element 64 c + l from bit 2c of qh[l] (bit 2c + 1 for 64 c + 32 + l).
pub(crate) fn unpack_q5_k(b: &[u8], mut out: BlockOut<'_>) -> (f32, f32) {
    chunks!(vals, b, out, sb: 4, 12; qh: 16, 32; qs: 48, 128);
    for c in 0..4 {
        for l in 0..32 {
            let h = qh[l] >> (2 * c);
            vals[64 * c + l] = (qs[32 * c + l] & 0x0f) | (h & 1) << 4;
            vals[64 * c + 32 + l] = (qs[32 * c + l] >> 4) | ((h >> 1) & 1) << 4;
        }
    }
    k4_sub_scales(sb, &mut out);
    (f16_at(b, 0), -f16_at(b, 2))
}

/// Q6_K [210 B]: ql[128], qh[64], scales[16] (i8), d. Element
/// e = 128 h + 32 k + l: low 4 bits are nibble k / 2 of ql[64 h + 32 (k % 2) + l],
/// high 2 bits are bits 2k of qh[32 h + l]; value = q - 32, the -32 folded
/// into `bc`.
pub(crate) fn unpack_q6_k(b: &[u8], out: BlockOut<'_>) -> (f32, f32) {
    chunks!(vals, b, out, ql: 0, 128; qh: 128, 64; sb: 192, 16);
    for h in 0..2 {
        for l in 0..32 {
            let (a, b, q) = (ql[64 * h + l], ql[64 * h + 32 + l], qh[32 * h + l]);
            vals[128 * h + l] = (a & 0x0f) | (q & 3) << 4;
            vals[128 * h + 32 + l] = (b & 0x0f) | ((q >> 2) & 3) << 4;
            vals[128 * h + 64 + l] = (a >> 4) | ((q >> 4) & 3) << 4;
            vals[128 * h + 96 + l] = (b >> 4) | ((q >> 6) & 3) << 4;
        }
    }
    for (t, &v) in sb.iter().enumerate() {
        let sc = v as i8 as i16;
        out.sc[t] = sc;
        out.bc[t] = -32 * sc;
        out.mn[t] = 0;
    }
    (f16_at(b, 208), 0.0)
}

/// IQ4_XS [136 B]: d, scales_h (u16), scales_l[4], qs[128]. Sub-block ib of
/// 32: scale = (4 bits of scales_l, 2 bits of scales_h) - 32, values from the
/// IQ4 table as IQ4_NL.
pub(crate) fn unpack_iq4_xs(b: &[u8], out: BlockOut<'_>) -> (f32, f32) {
    chunks!(vals, b, out, shb: 2, 2; sl: 4, 4; qs: 8, 128);
    let sh = u16::from_le_bytes(*shb);
    for ib in 0..8 {
        let low = (sl[ib / 2] >> (4 * (ib % 2))) & 0x0f;
        let high = ((sh >> (2 * ib)) & 3) as u8;
        let sc = (low | high << 4) as i16 - 32;
        for t in [2 * ib, 2 * ib + 1] {
            out.sc[t] = sc;
            out.bc[t] = 0;
            out.mn[t] = 0;
        }
        for j in 0..16 {
            let q = qs[16 * ib + j];
            vals[32 * ib + j] = IQ4_VALUES[(q & 0x0f) as usize] as u8;
            vals[32 * ib + 16 + j] = IQ4_VALUES[(q >> 4) as usize] as u8;
        }
    }
    (f16_at(b, 0), 0.0)
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::*;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::k4_scales_mins;
    use crate::cpu::act_quant::ActQ8K;
    use std::arch::x86_64::*;

    /// Broadcast i16 lane `s` (of each 128-bit half) to all 16 lanes.
    #[inline(always)]
    unsafe fn bcast_i16(v: __m256i, s: i16) -> __m256i {
        _mm256_shuffle_epi8(v, _mm256_set1_epi16(0x0100 + 0x0202 * s))
    }

    /// One Q4_K (`FIVE` = false, 144 B) or Q5_K (176 B) block at `blk`
    /// against `MR` activation blocks: per activation row, lanes summing to
    /// the block's `sumi` and `summ`. The weights are unpacked once for all
    /// rows.
    #[inline(always)]
    unsafe fn block_k45<const MR: usize, const FIVE: bool>(
        blk: *const u8,
        ys: &[&ActQ8K; MR],
    ) -> ([__m256i; MR], [__m256i; MR]) {
        let m4 = _mm256_set1_epi8(0x0f);
        let (sc, mn) = k4_scales_mins(&*(blk.add(4) as *const [u8; 12]));
        // Min lanes: mn_s * bsums[t] for t in {2s, 2s + 1}.
        let m = _mm_cvtsi64_si128(mn as i64);
        let mins16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
        // (Loops, not `array::map`: a closure would not inherit AVX2.)
        let mut mins = [_mm256_setzero_si256(); MR];
        for i in 0..MR {
            mins[i] = _mm256_madd_epi16(
                mins16,
                _mm256_loadu_si256(ys[i].bsums.as_ptr() as *const __m256i),
            );
        }
        let scv = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
        let (q, mut h) = if FIVE {
            (
                blk.add(48),
                _mm256_loadu_si256(blk.add(16) as *const __m256i),
            )
        } else {
            (blk.add(16), _mm256_setzero_si256())
        };
        let mut sum = [_mm256_setzero_si256(); MR];
        for c in 0..4 {
            let v = _mm256_loadu_si256(q.add(32 * c) as *const __m256i);
            let mut lo = _mm256_and_si256(v, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            if FIVE {
                // Bit 2c of qh[l] is bit 4 of element 64c + l, bit 2c + 1
                // that of element 64c + 32 + l.
                let one = _mm256_set1_epi8(1);
                let two = _mm256_set1_epi8(2);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(h, one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(h, two), 3));
                h = _mm256_srli_epi16(h, 2);
            }
            let s0 = bcast_i16(scv, 2 * c as i16);
            let s1 = bcast_i16(scv, 2 * c as i16 + 1);
            for i in 0..MR {
                let yq = ys[i].qs.as_ptr();
                let a0 = _mm256_loadu_si256(yq.add(64 * c) as *const __m256i);
                let a1 = _mm256_loadu_si256(yq.add(64 * c + 32) as *const __m256i);
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a0), s0);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a1), s1);
                sum[i] = _mm256_add_epi32(sum[i], _mm256_add_epi32(p0, p1));
            }
        }
        (sum, mins)
    }

    /// One Q6_K block [210 B] against `MR` activation blocks: per activation
    /// row, lanes summing to the block's `sumi`.
    #[inline(always)]
    unsafe fn block_q6_k<const MR: usize>(blk: *const u8, ys: &[&ActQ8K; MR]) -> [__m256i; MR] {
        let m4 = _mm256_set1_epi8(0x0f);
        let m30 = _mm256_set1_epi8(0x30);
        // The 16 scales as i16: [sc0..sc8 | sc8..sc16].
        let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(192) as *const __m128i));
        // Offset term: -32 * sum_t sc_t * bsums_t.
        let mut sum = [_mm256_setzero_si256(); MR];
        for i in 0..MR {
            let off = _mm256_madd_epi16(
                sc16,
                _mm256_loadu_si256(ys[i].bsums.as_ptr() as *const __m256i),
            );
            sum[i] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
        }
        // Scales of half h in both 128-bit lanes.
        let halves = [
            _mm256_permute2x128_si256(sc16, sc16, 0x00),
            _mm256_permute2x128_si256(sc16, sc16, 0x11),
        ];
        for (h, half) in halves.iter().enumerate() {
            let ql0 = _mm256_loadu_si256(blk.add(64 * h) as *const __m256i);
            let ql1 = _mm256_loadu_si256(blk.add(64 * h + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(blk.add(128 + 32 * h) as *const __m256i);
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                    _mm256_and_si256(qh, m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                    _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30),
                ),
            ];
            for (k, qk) in q.iter().enumerate() {
                // [sc_t x 8 | sc_(t+1) x 8] for t = 8h + 2k: i16 lane 2k of
                // the low half, lane 2k + 1 of the high half.
                let lo = (0x0100 + 0x0202 * 2 * k) as i64 * 0x0001_0001_0001_0001;
                let hi = (0x0100 + 0x0202 * (2 * k + 1)) as i64 * 0x0001_0001_0001_0001;
                let scales = _mm256_shuffle_epi8(*half, _mm256_setr_epi64x(lo, lo, hi, hi));
                for i in 0..MR {
                    let av = _mm256_loadu_si256(
                        ys[i].qs.as_ptr().add(128 * h + 32 * k) as *const __m256i
                    );
                    sum[i] = _mm256_add_epi32(
                        sum[i],
                        _mm256_madd_epi16(_mm256_maddubs_epi16(*qk, av), scales),
                    );
                }
            }
        }
        sum
    }

    /// Lane k of the result = sum of the lanes of `v[k]` (exact).
    #[inline(always)]
    unsafe fn hsum8(v: [__m256i; 8]) -> __m256i {
        let p = |a: __m256i, b: __m256i| {
            _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b))
        };
        let q = |a: __m256i, b: __m256i| {
            _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b))
        };
        let q03 = q(p(v[0], v[1]), p(v[2], v[3]));
        let q47 = q(p(v[4], v[5]), p(v[6], v[7]));
        _mm256_add_epi32(
            _mm256_permute2x128_si256(q03, q47, 0x20),
            _mm256_permute2x128_si256(q03, q47, 0x31),
        )
    }

    /// Lane r of the result = sum of the lanes of `v[r]` (exact).
    #[inline(always)]
    unsafe fn hsum4(v: [__m256i; 4]) -> __m128i {
        let p01 = _mm256_add_epi32(
            _mm256_unpacklo_epi32(v[0], v[1]),
            _mm256_unpackhi_epi32(v[0], v[1]),
        );
        let p23 = _mm256_add_epi32(
            _mm256_unpacklo_epi32(v[2], v[3]),
            _mm256_unpackhi_epi32(v[2], v[3]),
        );
        let q = _mm256_add_epi32(
            _mm256_unpacklo_epi64(p01, p23),
            _mm256_unpackhi_epi64(p01, p23),
        );
        _mm_add_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1))
    }

    /// 4 weight rows (any alignment; repeat one to fill) of Q4_K / Q5_K
    /// blocks x `MR` Q8_K activation rows, block by block so the 4 rows stream
    /// in parallel; `out[i][r]`. The f32 steps run with one lane per weight
    /// row: `acc = fma(d dy, sumi, acc); acc = fma(-dmin dy, summ, acc)`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_k45<const MR: usize, const FIVE: bool>(
        w: [*const u8; 4],
        a: [*const u8; MR],
        nb: usize,
    ) -> [[f32; 4]; MR] {
        let bytes = if FIVE { 176 } else { 144 };
        let deint = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        let mut acc = [_mm_setzero_ps(); MR];
        for b in 0..nb {
            let ys = a.map(|p| &*(p as *const ActQ8K).add(b));
            let blk = w.map(|p| p.add(bytes * b));
            let r0 = block_k45::<MR, FIVE>(blk[0], &ys);
            let r1 = block_k45::<MR, FIVE>(blk[1], &ys);
            let r2 = block_k45::<MR, FIVE>(blk[2], &ys);
            let r3 = block_k45::<MR, FIVE>(blk[3], &ys);
            // d and dmin are each block's first 4 bytes:
            // [d0, dmin0, d1, dmin1, ..] -> [d0..d3 | dmin0..dmin3].
            let dm = blk.map(|p| (p as *const i32).read_unaligned());
            let dm = _mm256_permutevar8x32_ps(
                _mm256_cvtph_ps(_mm_setr_epi32(dm[0], dm[1], dm[2], dm[3])),
                deint,
            );
            for i in 0..MR {
                // [sumi of weight rows 0..4 | summ of weight rows 0..4]
                let ints = _mm256_cvtepi32_ps(hsum8([
                    r0.0[i], r1.0[i], r2.0[i], r3.0[i], r0.1[i], r1.1[i], r2.1[i], r3.1[i],
                ]));
                let dy = _mm256_setr_m128(_mm_set1_ps(ys[i].d), _mm_set1_ps(-ys[i].d));
                let f = _mm256_mul_ps(dm, dy);
                acc[i] = _mm_fmadd_ps(
                    _mm256_castps256_ps128(f),
                    _mm256_castps256_ps128(ints),
                    acc[i],
                );
                acc[i] = _mm_fmadd_ps(
                    _mm256_extractf128_ps(f, 1),
                    _mm256_extractf128_ps(ints, 1),
                    acc[i],
                );
            }
        }
        let mut out = [[0.0f32; 4]; MR];
        for i in 0..MR {
            _mm_storeu_ps(out[i].as_mut_ptr(), acc[i]);
        }
        out
    }

    /// 4 rows of Q6_K blocks x `MR` Q8_K rows (as [`dot_k45`], no min term).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_q6_k<const MR: usize>(
        w: [*const u8; 4],
        a: [*const u8; MR],
        nb: usize,
    ) -> [[f32; 4]; MR] {
        let mut acc = [_mm_setzero_ps(); MR];
        for b in 0..nb {
            let ys = a.map(|p| &*(p as *const ActQ8K).add(b));
            let blk = w.map(|p| p.add(210 * b));
            let r = [
                block_q6_k::<MR>(blk[0], &ys),
                block_q6_k::<MR>(blk[1], &ys),
                block_q6_k::<MR>(blk[2], &ys),
                block_q6_k::<MR>(blk[3], &ys),
            ];
            let d = blk.map(|p| (p.add(208) as *const i16).read_unaligned());
            let d = _mm_cvtph_ps(_mm_setr_epi16(d[0], d[1], d[2], d[3], 0, 0, 0, 0));
            for i in 0..MR {
                let ints = _mm_cvtepi32_ps(hsum4([r[0][i], r[1][i], r[2][i], r[3][i]]));
                acc[i] = _mm_fmadd_ps(_mm_mul_ps(d, _mm_set1_ps(ys[i].d)), ints, acc[i]);
            }
        }
        let mut out = [[0.0f32; 4]; MR];
        for i in 0..MR {
            _mm_storeu_ps(out[i].as_mut_ptr(), acc[i]);
        }
        out
    }
}
