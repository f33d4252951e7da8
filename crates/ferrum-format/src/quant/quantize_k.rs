//! Quantizers for the K-quant super-blocks Q4_K, Q5_K, Q6_K and Q8_K.
//!
//! Q4_K / Q5_K: each 32-element sub-block gets a weighted affine fit
//! ([`fit_affine`], weights `rms + |x|`); the 8 scales and 8 mins are then
//! quantized to 6 bits against the super-block's largest, and every element
//! is re-rounded against the scales as they will actually be decoded.
//! Q6_K: each 16-element sub-block gets a symmetric fit ([`fit_symmetric`]);
//! the 16 scales become signed 8-bit against the largest magnitude.
//! Every function fills `min(src.len() / 256, dst.len())` blocks.

use half::f16;

use super::blocks::{BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, K_SCALE_SIZE};
use super::kquants::{get_scale_min_k4, QK_K};
use super::search::{fit_affine, fit_symmetric, nearest_int, Grid};

/// Sub-block search settings for Q4_K (4-bit levels).
const GRID_Q4K: Grid = Grid {
    rmin: -1.0,
    rdelta: 0.1,
    steps: 20,
};
/// Sub-block search settings for Q5_K (5-bit levels).
const GRID_Q5K: Grid = Grid {
    rmin: -0.5,
    rdelta: 0.1,
    steps: 15,
};

/// Pack eight 6-bit scales and mins into the 12-byte Q4_K/Q5_K layout (the
/// inverse of [`get_scale_min_k4`]).
fn pack_scale_min_k4(sc: &[u8; 8], mn: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut p = [0u8; K_SCALE_SIZE];
    for j in 0..4 {
        p[j] = sc[j] & 63;
        p[j + 4] = mn[j] & 63;
    }
    for j in 4..8 {
        p[j + 4] = (sc[j] & 0x0f) | ((mn[j] & 0x0f) << 4);
        p[j - 4] |= ((sc[j] >> 4) & 3) << 6;
        p[j] |= ((mn[j] >> 4) & 3) << 6;
    }
    p
}

/// Shared Q4_K/Q5_K path: fit sub-blocks, quantize scales/mins to 6 bits and
/// return `(d, dmin, packed scales, levels)` with levels in `0..=nmax`.
fn quantize_affine_superblock(
    x: &[f32; QK_K],
    nmax: u8,
    grid: Grid,
) -> (f16, f16, [u8; K_SCALE_SIZE], [u8; QK_K]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let subs = x.as_chunks::<32>().0.iter();
    let outs = levels.as_chunks_mut::<32>().0.iter_mut();
    for (j, (xs, qs)) in subs.zip(outs).enumerate() {
        let rms = (xs.iter().map(|v| v * v).sum::<f32>() / 32.0).sqrt();
        let w = xs.map(|v| rms + v.abs());
        let (scale, offset) = fit_affine(xs, &w, nmax, grid, qs);
        scales[j] = scale;
        mins[j] = offset;
    }
    let max_scale = scales.iter().fold(0.0f32, |a, &b| a.max(b));
    let max_min = mins.iter().fold(0.0f32, |a, &b| a.max(b));
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let sc = scales.map(|s| nearest_int(inv_scale * s).clamp(0, 63) as u8);
    let mn = mins.map(|m| nearest_int(inv_min * m).clamp(0, 63) as u8);
    let packed = pack_scale_min_k4(&sc, &mn);
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);

    // Re-round every element against the scales the decoder will see.
    let subs = x.as_chunks::<32>().0.iter();
    let outs = levels.as_chunks_mut::<32>().0.iter_mut();
    for (j, (xs, qs)) in subs.zip(outs).enumerate() {
        let (s, m) = get_scale_min_k4(j, &packed);
        let dl = d.to_f32() * f32::from(s);
        if dl == 0.0 {
            continue;
        }
        let ml = dmin.to_f32() * f32::from(m);
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = nearest_int((v + ml) / dl).clamp(0, i32::from(nmax)) as u8;
        }
    }
    (d, dmin, packed, levels)
}

/// Q4_K: 8 sub-blocks of 32 with 6-bit scales and mins, 4-bit levels.
pub fn quantize_q4k(src: &[f32], dst: &mut [BlockQ4K]) {
    for (x, b) in src.as_chunks::<QK_K>().0.iter().zip(dst) {
        let (d, dmin, scales, levels) = quantize_affine_superblock(x, 15, GRID_Q4K);
        b.d = d;
        b.dmin = dmin;
        b.scales = scales;
        // 64-element chunk c: sub-block 2c in low nibbles, 2c + 1 in high.
        for (c, chunk) in levels.as_chunks::<64>().0.iter().enumerate() {
            for l in 0..32 {
                b.qs[32 * c + l] = chunk[l] | (chunk[l + 32] << 4);
            }
        }
    }
}

/// Q5_K: as Q4_K with 5-bit levels; bit 4 of sub-block `s`'s element `l`
/// is bit `s` of `qh[l]`.
pub fn quantize_q5k(src: &[f32], dst: &mut [BlockQ5K]) {
    for (x, b) in src.as_chunks::<QK_K>().0.iter().zip(dst) {
        let (d, dmin, scales, levels) = quantize_affine_superblock(x, 31, GRID_Q5K);
        b.d = d;
        b.dmin = dmin;
        b.scales = scales;
        b.qs = [0; 128];
        b.qh = [0; 32];
        for (s, sub) in levels.as_chunks::<32>().0.iter().enumerate() {
            let (c, shift) = (s / 2, 4 * (s % 2));
            for (l, &q) in sub.iter().enumerate() {
                b.qs[32 * c + l] |= (q & 0x0f) << shift;
                b.qh[l] |= ((q >> 4) & 1) << s;
            }
        }
    }
}

/// Q6_K: 16 sub-blocks of 16 with signed 8-bit scales, 6-bit levels.
pub fn quantize_q6k(src: &[f32], dst: &mut [BlockQ6K]) {
    for (x, b) in src.as_chunks::<QK_K>().0.iter().zip(dst) {
        let mut levels = [0u8; QK_K];
        let mut scales = [0f32; 16];
        let subs = x.as_chunks::<16>().0.iter();
        let outs = levels.as_chunks_mut::<16>().0.iter_mut();
        for ((xs, qs), s) in subs.zip(outs).zip(scales.iter_mut()) {
            *s = fit_symmetric(xs, 32, qs);
        }
        // The scale of largest magnitude, sign kept, maps to -128.
        let (mut amax, mut max_scale) = (0.0f32, 0.0f32);
        for &s in &scales {
            if s.abs() > amax {
                amax = s.abs();
                max_scale = s;
            }
        }
        if amax < 1e-15 || amax.is_infinite() {
            *b = super::blocks::zeroed_block();
            continue;
        }
        let iscale = -128.0 / max_scale;
        b.d = f16::from_f32(1.0 / iscale);
        b.scales = scales.map(|s| nearest_int(iscale * s).clamp(-128, 127) as i8);

        let d = b.d.to_f32();
        let subs = x.as_chunks::<16>().0.iter();
        let outs = levels.as_chunks_mut::<16>().0.iter_mut();
        for ((xs, qs), &sc) in subs.zip(outs).zip(&b.scales) {
            let dl = d * f32::from(sc);
            if dl == 0.0 {
                continue;
            }
            for (q, &v) in qs.iter_mut().zip(xs) {
                *q = (nearest_int(v / dl).clamp(-32, 31) + 32) as u8;
            }
        }

        // Per 128-element half h, element r = 32k + l: low nibble into
        // ql[64h + 32(k % 2) + l] (k < 2 low, else high nibble), top two bits
        // into qh[32h + l] at bit pair k.
        b.ql = [0; 128];
        b.qh = [0; 64];
        for (e, &q) in levels.iter().enumerate() {
            let (h, k, l) = (e / 128, (e % 128) / 32, e % 32);
            b.ql[64 * h + 32 * (k % 2) + l] |= (q & 0x0f) << (4 * (k / 2));
            b.qh[32 * h + l] |= ((q >> 4) & 3) << (2 * k);
        }
    }
}

/// Q8_K: `d = max / -127` (max = signed extreme, f32 scale), `q = round(x / d)`
/// (ties to even) capped at 127, plus the sums of each 16 quants.
pub fn quantize_q8k(src: &[f32], dst: &mut [BlockQ8K]) {
    for (x, b) in src.as_chunks::<QK_K>().0.iter().zip(dst) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *b = super::blocks::zeroed_block();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).clamp(-128, 127) as i8;
        }
        for (sum, group) in b.bsums.iter_mut().zip(b.qs.as_chunks::<16>().0) {
            // 16 values of at most 128 in magnitude: fits an i16.
            *sum = group.iter().map(|&q| i16::from(q)).sum();
        }
        b.d = 1.0 / iscale;
    }
}
