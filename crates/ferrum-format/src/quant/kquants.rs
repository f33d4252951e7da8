//! Dequantization of the 256-element K-quant super-blocks Q2_K..Q8_K, and the
//! scale-unpacking helpers the CPU kernels share.
//!
//! Every function writes `min(blocks.len(), dst.len() / 256)` whole blocks;
//! callers pass `dst.len() == blocks.len() * 256`. Operation order follows
//! gguf-py (sub-block scale first, `dl = d * sc`, then `dl * q - ml`), so the
//! f32 results are bit-identical to it.

use super::blocks::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, K_SCALE_SIZE};

/// Elements per K-quant super-block.
pub const QK_K: usize = 256;

/// Scale and min (both 6-bit) of sub-block `j` (0..8) of a Q4_K / Q5_K block.
///
/// Layout of the 12 bytes: bytes 0..4 hold the low 6 bits of scales 0..3 and
/// bytes 4..8 the low 6 bits of mins 0..3; for sub-blocks 4..7 the low nibble
/// of byte `j + 4` is the scale's low 4 bits and its high nibble the min's,
/// while the top 2 bits come from the spare top bits of bytes `j - 4` (scale)
/// and `j` (min). Out-of-range `j` yields `(0, 0)`.
pub fn get_scale_min_k4(j: usize, scales: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    match j {
        0..4 => (scales[j] & 63, scales[j + 4] & 63),
        4..8 => (
            (scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        ),
        _ => (0, 0),
    }
}

/// The 16 signed 6-bit sub-block scales of a Q3_K block, already offset by
/// -32. Scale `s` takes its low 4 bits from byte `s % 8` (low nibble for
/// `s < 8`, high nibble otherwise) and its top 2 bits from byte
/// `8 + s % 4`, bit pair `s / 4`.
pub fn q3k_scales(scales: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (s, o) in out.iter_mut().enumerate() {
        let low = if s < 8 {
            scales[s] & 0x0f
        } else {
            scales[s - 8] >> 4
        };
        let high = (scales[8 + s % 4] >> (2 * (s / 4))) & 3;
        *o = ((low | (high << 4)) as i8) - 32;
    }
    out
}

/// Q2_K: element `e` of the block sits in byte `32 * (e / 128) + e % 32` of
/// `qs`, bit pair `(e % 128) / 32`; sub-block `e / 16` has a 4-bit scale (low
/// nibble) and 4-bit min (high nibble). `x = (d * sc) * q - dmin * m`.
pub fn dequantize_q2k(blocks: &[BlockQ2K], dst: &mut [f32]) {
    for (b, out) in blocks.iter().zip(dst.as_chunks_mut::<QK_K>().0) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        // 16-element group g: half g / 8, bit pair (g % 8) / 2, bytes
        // 16 * (g % 2) .. +16 of that half's 32.
        for (g, o16) in out.as_chunks_mut::<16>().0.iter_mut().enumerate() {
            let sc = b.scales[g];
            let dl = d * f32::from(sc & 0x0f);
            let ml = dmin * f32::from(sc >> 4);
            let shift = 2 * ((g % 8) / 2);
            let base = 32 * (g / 8) + 16 * (g % 2);
            for (o, &byte) in o16.iter_mut().zip(&b.qs[base..base + 16]) {
                *o = dl * f32::from((byte >> shift) & 3) - ml;
            }
        }
    }
}

/// Q3_K: low 2 bits as in Q2_K; bit `e / 32` of `hmask[e % 32]` set means
/// "no -4 offset". `x = (d * sc) * q`, q in -4..=3.
pub fn dequantize_q3k(blocks: &[BlockQ3K], dst: &mut [f32]) {
    for (b, out) in blocks.iter().zip(dst.as_chunks_mut::<QK_K>().0) {
        let d = b.d.to_f32();
        let scales = q3k_scales(&b.scales);
        // 16-element group g as in Q2_K; its high bits are bit g / 2 of
        // hmask[16 * (g % 2) ..].
        for (g, o16) in out.as_chunks_mut::<16>().0.iter_mut().enumerate() {
            let dl = d * f32::from(scales[g]);
            let shift = 2 * ((g % 8) / 2);
            let base = 32 * (g / 8) + 16 * (g % 2);
            let hbase = 16 * (g % 2);
            let lows = &b.qs[base..base + 16];
            let highs = &b.hmask[hbase..hbase + 16];
            for ((o, &lo), &hi) in o16.iter_mut().zip(lows).zip(highs) {
                let low = ((lo >> shift) & 3) as i8;
                let q = if (hi >> (g / 2)) & 1 == 1 {
                    low
                } else {
                    low - 4
                };
                *o = dl * f32::from(q);
            }
        }
    }
}

/// Q4_K: 64-element chunk `c` uses `qs[32c..32c + 32]`, low nibbles for
/// sub-block `2c`, high nibbles for `2c + 1`. `x = (d * sc) * q - dmin * m`.
pub fn dequantize_q4k(blocks: &[BlockQ4K], dst: &mut [f32]) {
    for (b, out) in blocks.iter().zip(dst.as_chunks_mut::<QK_K>().0) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for (sub, o32) in out.as_chunks_mut::<32>().0.iter_mut().enumerate() {
            let (sc, m) = get_scale_min_k4(sub, &b.scales);
            let dl = d * f32::from(sc);
            let ml = dmin * f32::from(m);
            let (c, shift) = (sub / 2, 4 * (sub % 2));
            for (l, o) in o32.iter_mut().enumerate() {
                let q = (b.qs[32 * c + l] >> shift) & 0x0f;
                *o = dl * f32::from(q) - ml;
            }
        }
    }
}

/// Q5_K: as Q4_K, plus bit `sub` of `qh[l]` as bit 4 of element `l` of
/// sub-block `sub`.
pub fn dequantize_q5k(blocks: &[BlockQ5K], dst: &mut [f32]) {
    for (b, out) in blocks.iter().zip(dst.as_chunks_mut::<QK_K>().0) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for (sub, o32) in out.as_chunks_mut::<32>().0.iter_mut().enumerate() {
            let (sc, m) = get_scale_min_k4(sub, &b.scales);
            let dl = d * f32::from(sc);
            let ml = dmin * f32::from(m);
            let (c, shift) = (sub / 2, 4 * (sub % 2));
            for (l, o) in o32.iter_mut().enumerate() {
                let low = (b.qs[32 * c + l] >> shift) & 0x0f;
                let high = (b.qh[l] >> sub) & 1;
                *o = dl * f32::from(low | (high << 4)) - ml;
            }
        }
    }
}

/// Q6_K: within each 128-element half `h`, element `r = 32k + l` takes its
/// low nibble from `ql[64h + l + 32 * (k % 2)]` (low nibble for k < 2, high
/// for k >= 2) and its top 2 bits from `qh[32h + l]`, bit pair `k`.
/// `x = (d * sc) * (q - 32)` with signed 8-bit `sc` per 16 elements.
pub fn dequantize_q6k(blocks: &[BlockQ6K], dst: &mut [f32]) {
    for (b, out) in blocks.iter().zip(dst.as_chunks_mut::<QK_K>().0) {
        let d = b.d.to_f32();
        for (g, o16) in out.as_chunks_mut::<16>().0.iter_mut().enumerate() {
            // Group g covers elements 16g..16g+16: half h, 32-run k, lanes
            // l0..l0+16.
            let (h, k, l0) = (g / 8, (g % 8) / 2, 16 * (g % 2));
            let dl = d * f32::from(b.scales[g]);
            let lbase = 64 * h + 32 * (k % 2) + l0;
            let hbase = 32 * h + l0;
            let lows = &b.ql[lbase..lbase + 16];
            let highs = &b.qh[hbase..hbase + 16];
            let (lshift, hshift) = (4 * (k / 2), 2 * k);
            for ((o, &lo), &hi) in o16.iter_mut().zip(lows).zip(highs) {
                let q = ((lo >> lshift) & 0x0f) | (((hi >> hshift) & 3) << 4);
                *o = dl * (i32::from(q) - 32) as f32;
            }
        }
    }
}

/// Q8_K: `x = d * q` with an f32 `d`.
pub fn dequantize_q8k(blocks: &[BlockQ8K], dst: &mut [f32]) {
    for (b, out) in blocks.iter().zip(dst.as_chunks_mut::<QK_K>().0) {
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = b.d * f32::from(q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_unpacking() {
        // Pack known 6-bit values the way the Q4_K layout describes.
        let sc = [1u8, 22, 33, 63, 5, 40, 17, 62];
        let mn = [63u8, 0, 9, 31, 48, 7, 60, 2];
        let mut p = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                p[j] = sc[j];
                p[j + 4] = mn[j];
            } else {
                p[j + 4] = (sc[j] & 0xf) | ((mn[j] & 0xf) << 4);
                p[j - 4] |= (sc[j] >> 4) << 6;
                p[j] |= (mn[j] >> 4) << 6;
            }
        }
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &p), (sc[j], mn[j]), "sub-block {j}");
        }
        assert_eq!(get_scale_min_k4(8, &p), (0, 0));
    }
}
