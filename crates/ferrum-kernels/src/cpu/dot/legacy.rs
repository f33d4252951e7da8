//! The 32-element legacy types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL):
//! portable unpacking (the scalar path and the tiled kernel's input) and AVX2
//! direct dot products for the hot types (Q8_0, Q5_0, Q4_0) against
//! [`ActQ8_32`] activation rows. See `dot/mod.rs` for the canonical sums.

use super::{f16_at, BlockOut};

/// IQ4_NL / IQ4_XS value table.
pub(crate) const IQ4_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// The unpack functions below see exactly one block; a short slice (never
/// produced by `Panel::fill`) unpacks as zeros.
macro_rules! chunks {
    ($vals:ident, $b:expr, $out:expr, $( $name:ident : $off:expr, $len:expr );* ) => {
        let Some($vals) = $out.vals.first_chunk_mut::<32>() else { return (0.0, 0.0) };
        $( let Some($name) = $b.get($off..).and_then(|s| s.first_chunk::<$len>()) else { return (0.0, 0.0) }; )*
    };
}

/// Nibbles of 16 bytes in element order: low nibbles are elements 0..16,
/// high nibbles 16..32.
fn nibbles(qs: &[u8; 16], vals: &mut [u8; 32]) {
    for j in 0..16 {
        vals[j] = qs[j] & 0x0f;
        vals[j + 16] = qs[j] >> 4;
    }
}

/// `SPREAD[b]`: byte k is 0x10 when bit k of `b` is set.
const SPREAD: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut k = 0;
        while k < 8 {
            if b >> k & 1 == 1 {
                t[b] |= 0x10 << (8 * k);
            }
            k += 1;
        }
        b += 1;
    }
    t
};

/// Bit `j` of `qh` (little-endian u32) is bit 4 of element `j`.
fn fifth_bits(qh: &[u8; 4], vals: &mut [u8; 32]) {
    for (i, &byte) in qh.iter().enumerate() {
        let add = SPREAD[byte as usize].to_le_bytes();
        for k in 0..8 {
            vals[8 * i + k] |= add[k];
        }
    }
}

fn plain(out: &mut BlockOut<'_>, bc: i16, mn: i16) {
    out.sc[..2].fill(1);
    out.bc[..2].fill(bc);
    out.mn[..2].fill(mn);
}

/// Q4_0 [18 B]: d, qs[16]; x = d (q - 8).
pub(crate) fn unpack_q4_0(b: &[u8], mut out: BlockOut<'_>) -> (f32, f32) {
    chunks!(vals, b, out, qs: 2, 16);
    nibbles(qs, vals);
    plain(&mut out, -8, 0);
    (f16_at(b, 0), 0.0)
}

/// Q4_1 [20 B]: d, m, qs[16]; x = d q + m.
pub(crate) fn unpack_q4_1(b: &[u8], mut out: BlockOut<'_>) -> (f32, f32) {
    chunks!(vals, b, out, qs: 4, 16);
    nibbles(qs, vals);
    plain(&mut out, 0, 1);
    (f16_at(b, 0), f16_at(b, 2))
}

/// Q5_0 [22 B]: d, qh[4], qs[16]; x = d (q - 16).
pub(crate) fn unpack_q5_0(b: &[u8], mut out: BlockOut<'_>) -> (f32, f32) {
    chunks!(vals, b, out, qh: 2, 4; qs: 6, 16);
    nibbles(qs, vals);
    fifth_bits(qh, vals);
    plain(&mut out, -16, 0);
    (f16_at(b, 0), 0.0)
}

/// Q5_1 [24 B]: d, m, qh[4], qs[16]; x = d q + m.
pub(crate) fn unpack_q5_1(b: &[u8], mut out: BlockOut<'_>) -> (f32, f32) {
    chunks!(vals, b, out, qh: 4, 4; qs: 8, 16);
    nibbles(qs, vals);
    fifth_bits(qh, vals);
    plain(&mut out, 0, 1);
    (f16_at(b, 0), f16_at(b, 2))
}

/// Q8_0 [34 B]: d, qs[32] (signed); x = d q.
pub(crate) fn unpack_q8_0(b: &[u8], mut out: BlockOut<'_>) -> (f32, f32) {
    chunks!(vals, b, out, qs: 2, 32);
    *vals = *qs;
    plain(&mut out, 0, 0);
    (f16_at(b, 0), 0.0)
}

/// IQ4_NL [18 B]: d, qs[16] indices into [`IQ4_VALUES`]; x = d table[q].
pub(crate) fn unpack_iq4_nl(b: &[u8], mut out: BlockOut<'_>) -> (f32, f32) {
    chunks!(vals, b, out, qs: 2, 16);
    nibbles(qs, vals);
    for v in vals.iter_mut() {
        *v = IQ4_VALUES[(*v & 15) as usize] as u8;
    }
    plain(&mut out, 0, 0);
    (f16_at(b, 0), 0.0)
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::*;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::cpu::act_quant::ActQ8_32;
    use std::arch::x86_64::*;

    /// Lane r of the result = sum of the lanes of `v[r]` (r < 4), from
    /// unpacks and adds (`hadd` is slow on Zen).
    #[inline(always)]
    unsafe fn hsum4(v: &[__m256i; 4]) -> __m128i {
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

    /// The f16 block scales at bytes 0..2 of `head[r]` (the first 8 bytes
    /// of row r's block) as 4 f32 lanes. Shuffles, not 4 scalar stores and
    /// a vector load (a store-forwarding stall per block).
    #[inline(always)]
    unsafe fn scales4(head: &[__m128i; 4]) -> __m128 {
        let ab = _mm_unpacklo_epi16(head[0], head[1]);
        let cd = _mm_unpacklo_epi16(head[2], head[3]);
        _mm_cvtph_ps(_mm_unpacklo_epi32(ab, cd))
    }

    /// Four weight rows (`w[r]`, any alignment; repeat a row to fill) of
    /// Q8_0 blocks times `MR` activation rows (`out[i][r]`): the canonical
    /// per-block sums, with the f32 steps done for the 4 rows as 4 lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_q8_0<const MR: usize>(
        w: [*const u8; 4],
        a: [*const u8; MR],
        nb: usize,
    ) -> [[f32; 4]; MR] {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm_setzero_ps(); MR];
        for b in 0..nb {
            let ys = a.map(|p| &*(p as *const ActQ8_32).add(b));
            // (Loops, not `array::map`: a closure would not inherit AVX2.)
            let mut av = [_mm256_setzero_si256(); MR];
            for i in 0..MR {
                av[i] = _mm256_loadu_si256(ys[i].qs.as_ptr() as *const __m256i);
            }
            let mut v = [[_mm256_setzero_si256(); 4]; MR];
            let mut head = [_mm_setzero_si128(); 4];
            for r in 0..4 {
                let blk = w[r].add(34 * b);
                head[r] = _mm_loadl_epi64(blk as *const __m128i);
                let wv = _mm256_loadu_si256(blk.add(2) as *const __m256i);
                let wa = _mm256_abs_epi8(wv);
                for i in 0..MR {
                    v[i][r] = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(wa, _mm256_sign_epi8(av[i], wv)),
                        ones,
                    );
                }
            }
            let dw = scales4(&head);
            for i in 0..MR {
                let sumi = hsum4(&v[i]);
                acc[i] = _mm_fmadd_ps(
                    _mm_mul_ps(dw, _mm_set1_ps(ys[i].d)),
                    _mm_cvtepi32_ps(sumi),
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

    /// Q8_0, one activation row (decode) times 8 weight rows: as
    /// [`dot_q8_0`], with the reduction and f32 steps for 8 rows at once.
    /// Lanes in row order.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_q8_0x8(w: [*const u8; 8], a: *const u8, nb: usize) -> [f32; 8] {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let y = &*(a as *const ActQ8_32).add(b);
            let av = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            let mut head = [_mm_setzero_si128(); 8];
            for r in 0..8 {
                head[r] = _mm_loadl_epi64(w[r].add(34 * b) as *const __m128i);
            }
            let lo = _mm_unpacklo_epi32(
                _mm_unpacklo_epi16(head[0], head[1]),
                _mm_unpacklo_epi16(head[2], head[3]),
            );
            let hi = _mm_unpacklo_epi32(
                _mm_unpacklo_epi16(head[4], head[5]),
                _mm_unpacklo_epi16(head[6], head[7]),
            );
            let dw = _mm256_cvtph_ps(_mm_unpacklo_epi64(lo, hi));
            // Rows 2p, 2p + 1 -> i32 lanes [r r' r r' | r r' r r'].
            let mut pr = [_mm256_setzero_si256(); 4];
            for p in 0..4 {
                let mut v = [_mm256_setzero_si256(); 2];
                for k in 0..2 {
                    let wv = _mm256_loadu_si256(w[2 * p + k].add(34 * b + 2) as *const __m256i);
                    v[k] = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(av, wv)),
                        ones,
                    );
                }
                pr[p] = _mm256_add_epi32(
                    _mm256_unpacklo_epi32(v[0], v[1]),
                    _mm256_unpackhi_epi32(v[0], v[1]),
                );
            }
            // [r0 r1 r2 r3 | r0 r1 r2 r3] and the same for rows 4..8.
            let q0 = _mm256_add_epi32(
                _mm256_unpacklo_epi64(pr[0], pr[1]),
                _mm256_unpackhi_epi64(pr[0], pr[1]),
            );
            let q1 = _mm256_add_epi32(
                _mm256_unpacklo_epi64(pr[2], pr[3]),
                _mm256_unpackhi_epi64(pr[2], pr[3]),
            );
            let sumi = _mm256_add_epi32(
                _mm256_permute2x128_si256(q0, q1, 0x20),
                _mm256_permute2x128_si256(q0, q1, 0x31),
            );
            acc = _mm256_fmadd_ps(
                _mm256_mul_ps(dw, _mm256_set1_ps(y.d)),
                _mm256_cvtepi32_ps(sumi),
                acc,
            );
        }
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
        out
    }

    /// Q5_0 (`FIVE`) or Q4_0, one activation row (decode) times 8 weight
    /// rows (`w[r]`; repeat a row to fill): [`dot_nib`]'s row-pair
    /// unpacking, with the per-block reduction and f32 steps done for 8
    /// rows at once. The lanes of the result are rows `[0, 2, 4, 6, 1, 3, 5,
    /// 7]` (see [`NIB8_LANE_ROW`]).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_nib8<const FIVE: bool>(
        w: [*const u8; 8],
        a: *const u8,
        nb: usize,
    ) -> [f32; 8] {
        let (bytes, qs_off, bc) = if FIVE { (22, 6, -16) } else { (18, 2, -8) };
        let m4 = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let x10 = _mm256_set1_epi8(0x10);
        // Header byte (qh at 2..6, per lane: A's header low, B's high) each
        // output byte reads: elements 0..16 (`sel_lo`), then 16..32.
        let sel_lo = _mm256_setr_epi64x(
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        );
        let sel_hi = _mm256_setr_epi64x(
            0x0404_0404_0404_0404,
            0x0505_0505_0505_0505,
            0x0404_0404_0404_0404,
            0x0505_0505_0505_0505,
        );
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let y = &*(a as *const ActQ8_32).add(b);
            let a_lo =
                _mm256_broadcastsi128_si256(_mm_loadu_si128(y.qs.as_ptr() as *const __m128i));
            let a_hi = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                y.qs.as_ptr().add(16) as *const __m128i
            ));
            // Block scales first (lane order of the result), so that the
            // headers need not stay in registers.
            let mut head = [_mm_setzero_si128(); 8];
            for r in 0..8 {
                head[r] = _mm_loadu_si128(w[r].add(bytes * b) as *const __m128i);
            }
            let even = _mm_unpacklo_epi32(
                _mm_unpacklo_epi16(head[0], head[2]),
                _mm_unpacklo_epi16(head[4], head[6]),
            );
            let odd = _mm_unpacklo_epi32(
                _mm_unpacklo_epi16(head[1], head[3]),
                _mm_unpacklo_epi16(head[5], head[7]),
            );
            let dw = _mm256_cvtph_ps(_mm_unpacklo_epi64(even, odd));
            // Per row pair (2p, 2p + 1): i16 lanes [8 of row 2p | 8 of row
            // 2p + 1], each the sum of 4 products (at most 4 * 31 * 127).
            let mut pv = [_mm256_setzero_si256(); 4];
            for p in 0..4 {
                let pa = w[2 * p].add(bytes * b);
                let pb = w[2 * p + 1].add(bytes * b);
                let q = _mm256_set_m128i(
                    _mm_loadu_si128(pb.add(qs_off) as *const __m128i),
                    _mm_loadu_si128(pa.add(qs_off) as *const __m128i),
                );
                let mut lo = _mm256_and_si256(q, m4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                if FIVE {
                    // [A's first 16 bytes | B's]: qh at bytes 2..6 of each lane.
                    let h = _mm256_set_m128i(
                        _mm_loadu_si128(pb as *const __m128i),
                        _mm_loadu_si128(pa as *const __m128i),
                    );
                    let x = _mm256_and_si256(_mm256_shuffle_epi8(h, sel_lo), bits);
                    lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_cmpeq_epi8(x, bits), x10));
                    let x = _mm256_and_si256(_mm256_shuffle_epi8(h, sel_hi), bits);
                    hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_cmpeq_epi8(x, bits), x10));
                }
                pv[p] = _mm256_add_epi16(
                    _mm256_maddubs_epi16(lo, a_lo),
                    _mm256_maddubs_epi16(hi, a_hi),
                );
            }
            // Fold pairs of 32-bit units (i16 sums of 8 products, at most
            // 8 * 31 * 127 < 2^15: exact), then to i32: lanes [r0 r2 r0 r2 |
            // r1 r3 r1 r3] and [r4 r6 r4 r6 | r5 r7 r5 r7].
            let x = fold_pairs(pv[0], pv[1], ones);
            let z = fold_pairs(pv[2], pv[3], ones);
            let sumi = _mm256_add_epi32(
                _mm256_add_epi32(_mm256_unpacklo_epi64(x, z), _mm256_unpackhi_epi64(x, z)),
                _mm256_set1_epi32(bc * (y.bsums[0] as i32 + y.bsums[1] as i32)),
            );
            acc = _mm256_fmadd_ps(
                _mm256_mul_ps(dw, _mm256_set1_ps(y.d)),
                _mm256_cvtepi32_ps(sumi),
                acc,
            );
        }
        let mut out = [0.0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
        out
    }

    /// `[u0 v0 u1 v1 | ..]` 32-bit units of `u` and `v` summed in pairs as
    /// i16, then each unit's two i16 summed as i32 (see [`dot_nib8`]).
    #[inline(always)]
    unsafe fn fold_pairs(u: __m256i, v: __m256i, ones: __m256i) -> __m256i {
        _mm256_madd_epi16(
            _mm256_add_epi16(_mm256_unpacklo_epi32(u, v), _mm256_unpackhi_epi32(u, v)),
            ones,
        )
    }

    /// Weight row (index into `w`) of each lane of [`dot_nib8`]'s result.
    pub(crate) const NIB8_LANE_ROW: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

    /// Q5_0 (`FIVE`) or Q4_0: as [`dot_q8_0`], but two weight rows share
    /// each vector (`[row A elements 0..16 | row B elements 0..16]`, then
    /// 16..32), which halves the nibble and fifth-bit unpacking per row.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_nib<const MR: usize, const FIVE: bool>(
        w: [*const u8; 4],
        a: [*const u8; MR],
        nb: usize,
    ) -> [[f32; 4]; MR] {
        let (bytes, qs_off, bc) = if FIVE { (22, 6, -16) } else { (18, 2, -8) };
        let m4 = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let x10 = _mm256_set1_epi8(0x10);
        // Header byte (qh at 2..6, per lane: A's header low, B's high) each
        // output byte reads: elements 0..16 (`sel_lo`), then 16..32.
        let sel_lo = _mm256_setr_epi64x(
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        );
        let sel_hi = _mm256_setr_epi64x(
            0x0404_0404_0404_0404,
            0x0505_0505_0505_0505,
            0x0404_0404_0404_0404,
            0x0505_0505_0505_0505,
        );
        let mut acc = [_mm_setzero_ps(); MR];
        for b in 0..nb {
            let ys = a.map(|p| &*(p as *const ActQ8_32).add(b));
            // (Loops, not `array::map`: a closure would not inherit AVX2.)
            let (mut a_lo, mut a_hi) = ([_mm256_setzero_si256(); MR], [_mm256_setzero_si256(); MR]);
            for i in 0..MR {
                a_lo[i] = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                    ys[i].qs.as_ptr() as *const __m128i
                ));
                a_hi[i] = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                    ys[i].qs.as_ptr().add(16) as *const __m128i
                ));
            }
            let mut v = [[_mm256_setzero_si256(); 2]; MR];
            let mut head = [_mm_setzero_si128(); 4];
            for r in 0..4 {
                head[r] = _mm_loadu_si128(w[r].add(bytes * b) as *const __m128i);
            }
            let dw = scales4(&head);
            for p in 0..2 {
                let pa = w[2 * p].add(bytes * b);
                let pb = w[2 * p + 1].add(bytes * b);
                let q = _mm256_set_m128i(
                    _mm_loadu_si128(pb.add(qs_off) as *const __m128i),
                    _mm_loadu_si128(pa.add(qs_off) as *const __m128i),
                );
                let mut lo = _mm256_and_si256(q, m4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                if FIVE {
                    // [A's first 16 bytes | B's]: qh at bytes 2..6 of each
                    // lane.
                    let h = _mm256_set_m128i(
                        _mm_loadu_si128(pb as *const __m128i),
                        _mm_loadu_si128(pa as *const __m128i),
                    );
                    let set = |sel: __m256i| {
                        let x = _mm256_and_si256(_mm256_shuffle_epi8(h, sel), bits);
                        _mm256_and_si256(_mm256_cmpeq_epi8(x, bits), x10)
                    };
                    lo = _mm256_or_si256(lo, set(sel_lo));
                    hi = _mm256_or_si256(hi, set(sel_hi));
                }
                for i in 0..MR {
                    // Each maddubs lane is at most 2 * 31 * 127, so two add
                    // exactly in i16.
                    let p16 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(lo, a_lo[i]),
                        _mm256_maddubs_epi16(hi, a_hi[i]),
                    );
                    v[i][p] = _mm256_madd_epi16(p16, ones);
                }
            }
            for i in 0..MR {
                // v[i][0] lanes: row 0 (low half), row 1 (high); v[i][1]:
                // rows 2, 3.
                let (v0, v1) = (v[i][0], v[i][1]);
                let t =
                    _mm256_add_epi32(_mm256_unpacklo_epi32(v0, v1), _mm256_unpackhi_epi32(v0, v1));
                let u = _mm256_add_epi32(t, _mm256_shuffle_epi32(t, 0b01_00_11_10));
                let sumi =
                    _mm_unpacklo_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
                let ysum = ys[i].bsums[0] as i32 + ys[i].bsums[1] as i32;
                let sumi = _mm_add_epi32(sumi, _mm_set1_epi32(bc * ysum));
                acc[i] = _mm_fmadd_ps(
                    _mm_mul_ps(dw, _mm_set1_ps(ys[i].d)),
                    _mm_cvtepi32_ps(sumi),
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
}
