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
    (sc_lo as u64 | (sc_hi as u64) << 32, mn_lo as u64 | (mn_hi as u64) << 32)
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
    use super::super::tile::hsum_epi32;
    use super::k4_scales_mins;
    use crate::cpu::act_quant::ActQ8K;
    use std::arch::x86_64::*;

    /// The f16 at `p` as f32 (F16C; exact).
    #[inline(always)]
    unsafe fn f16_ptr(p: *const u8) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128((p as *const u16).read_unaligned() as i32)))
    }

    /// The two f16 at `p` (d, dmin) as f32.
    #[inline(always)]
    unsafe fn f16x2_ptr(p: *const u8) -> (f32, f32) {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }

    /// Sums of the lanes of `a` and of `b` (exact).
    #[inline(always)]
    unsafe fn hsum2_epi32(a: __m256i, b: __m256i) -> (i32, i32) {
        let x = _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
        let x = _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
        let x = _mm_add_epi32(x, _mm_unpackhi_epi64(x, x));
        (_mm_cvtsi128_si32(x), _mm_extract_epi32(x, 1))
    }

    /// Broadcast i16 lane `s` (of each 128-bit half) to all 16 lanes.
    #[inline(always)]
    unsafe fn bcast_i16(v: __m256i, s: i16) -> __m256i {
        _mm256_shuffle_epi8(v, _mm256_set1_epi16(0x0100 + 0x0202 * s))
    }

    /// Q4_K/Q5_K min term, per lane: mn_s * bsums[t] for t in {2s, 2s + 1}
    /// (8 lanes; their sum is the block's `summ`).
    #[inline(always)]
    unsafe fn k4_min_lanes(mn: u64, y: &ActQ8K) -> __m256i {
        let bs = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
        let m = _mm_cvtsi64_si128(mn as i64);
        let mins16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
        _mm256_madd_epi16(mins16, bs)
    }

    /// One Q4_K block [144 B] at `blk` against `y`: the canonical f32 step.
    #[inline(always)]
    unsafe fn step_q4_k(blk: *const u8, y: &ActQ8K, acc: f32) -> f32 {
        let m4 = _mm256_set1_epi8(0x0f);
        let (sc, mn) = k4_scales_mins(&*(blk.add(4) as *const [u8; 12]));
        let mins = k4_min_lanes(mn, y);
        let scv = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
        let q = blk.add(16);
        let yq = y.qs.as_ptr();
        let mut sum = _mm256_setzero_si256();
        for c in 0..4 {
            let v = _mm256_loadu_si256(q.add(32 * c) as *const __m256i);
            let lo = _mm256_and_si256(v, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            let a0 = _mm256_loadu_si256(yq.add(64 * c) as *const __m256i);
            let a1 = _mm256_loadu_si256(yq.add(64 * c + 32) as *const __m256i);
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a0), bcast_i16(scv, 2 * c as i16));
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a1), bcast_i16(scv, 2 * c as i16 + 1));
            sum = _mm256_add_epi32(sum, _mm256_add_epi32(p0, p1));
        }
        let (sumi, summ) = hsum2_epi32(sum, mins);
        let (d, dmin) = f16x2_ptr(blk);
        let acc = (d * y.d).mul_add(sumi as f32, acc);
        (-dmin * y.d).mul_add(summ as f32, acc)
    }

    /// One Q5_K block [176 B]: Q4_K plus a fifth bit from qh.
    #[inline(always)]
    unsafe fn step_q5_k(blk: *const u8, y: &ActQ8K, acc: f32) -> f32 {
        let m4 = _mm256_set1_epi8(0x0f);
        let one = _mm256_set1_epi8(1);
        let two = _mm256_set1_epi8(2);
        let (sc, mn) = k4_scales_mins(&*(blk.add(4) as *const [u8; 12]));
        let mins = k4_min_lanes(mn, y);
        let scv = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
        let mut h = _mm256_loadu_si256(blk.add(16) as *const __m256i);
        let q = blk.add(48);
        let yq = y.qs.as_ptr();
        let mut sum = _mm256_setzero_si256();
        for c in 0..4 {
            let v = _mm256_loadu_si256(q.add(32 * c) as *const __m256i);
            let lo = _mm256_or_si256(_mm256_and_si256(v, m4), _mm256_slli_epi16(_mm256_and_si256(h, one), 4));
            let hi = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
                _mm256_slli_epi16(_mm256_and_si256(h, two), 3),
            );
            h = _mm256_srli_epi16(h, 2);
            let a0 = _mm256_loadu_si256(yq.add(64 * c) as *const __m256i);
            let a1 = _mm256_loadu_si256(yq.add(64 * c + 32) as *const __m256i);
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a0), bcast_i16(scv, 2 * c as i16));
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a1), bcast_i16(scv, 2 * c as i16 + 1));
            sum = _mm256_add_epi32(sum, _mm256_add_epi32(p0, p1));
        }
        let (sumi, summ) = hsum2_epi32(sum, mins);
        let (d, dmin) = f16x2_ptr(blk);
        let acc = (d * y.d).mul_add(sumi as f32, acc);
        (-dmin * y.d).mul_add(summ as f32, acc)
    }

    /// One Q6_K block [210 B].
    #[inline(always)]
    unsafe fn step_q6_k(blk: *const u8, y: &ActQ8K, acc: f32) -> f32 {
        let m4 = _mm256_set1_epi8(0x0f);
        let m30 = _mm256_set1_epi8(0x30);
        let sc8 = _mm_loadu_si128(blk.add(192) as *const __m128i);
        // Offset term: -32 * sum_t sc_t * bsums_t.
        let bs = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
        let off = _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), bs);
        let mut sum = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
        let yq = y.qs.as_ptr();
        for h in 0..2 {
            let ql0 = _mm256_loadu_si256(blk.add(64 * h) as *const __m256i);
            let ql1 = _mm256_loadu_si256(blk.add(64 * h + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(blk.add(128 + 32 * h) as *const __m256i);
            let q = [
                _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30)),
                _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m30)),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                    _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30),
                ),
            ];
            for (k, qk) in q.iter().enumerate() {
                let t = (8 * h + 2 * k) as i64;
                let ctl = _mm_set_epi64x((t + 1) * 0x0101_0101_0101_0101, t * 0x0101_0101_0101_0101);
                let scales = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, ctl));
                let av = _mm256_loadu_si256(yq.add(128 * h + 32 * k) as *const __m256i);
                sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(*qk, av), scales));
            }
        }
        let sumi = hsum_epi32(sum);
        (f16_ptr(blk.add(208)) * y.d).mul_add(sumi as f32, acc)
    }

    /// 4 weight rows (any alignment; repeat one to fill) x one Q8_K row,
    /// block by block, so the 4 rows stream in parallel.
    macro_rules! dot4 {
        ($name:ident, $step:ident, $bytes:expr) => {
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(crate) unsafe fn $name(w: [*const u8; 4], a: *const u8, nb: usize) -> [f32; 4] {
                let a = a as *const ActQ8K;
                let mut acc = [0.0f32; 4];
                for b in 0..nb {
                    let y = &*a.add(b);
                    for r in 0..4 {
                        acc[r] = $step(w[r].add($bytes * b), y, acc[r]);
                    }
                }
                acc
            }
        };
    }

    dot4!(dot4_q4_k, step_q4_k, 144);
    dot4!(dot4_q5_k, step_q5_k, 176);
    dot4!(dot4_q6_k, step_q6_k, 210);
}
