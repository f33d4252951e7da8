//! Dequantization of the non-linear 4-bit types IQ4_NL (32 elements) and
//! IQ4_XS (256 elements with 6-bit sub-block scales).

use super::blocks::{BlockIQ4NL, BlockIQ4XS};
use super::kquants::QK_K;

/// The 16 reconstruction levels shared by IQ4_NL and IQ4_XS (a 4-bit index
/// selects one; the block scale multiplies it).
pub const IQ4NL_TABLE: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Elements per IQ4_NL block.
pub const QK4_NL: usize = 32;

#[inline]
fn level(index: u8) -> f32 {
    f32::from(IQ4NL_TABLE[usize::from(index & 0x0f)])
}

/// IQ4_NL: element `j < 16` indexes the table with the low nibble of
/// `qs[j]`, element `j + 16` with the high nibble. `x = d * table[q]`.
pub fn dequantize_iq4nl(blocks: &[BlockIQ4NL], dst: &mut [f32]) {
    for (b, out) in blocks.iter().zip(dst.as_chunks_mut::<QK4_NL>().0) {
        let d = b.d.to_f32();
        let (lo, hi) = out.split_at_mut(16);
        for ((&q, l), h) in b.qs.iter().zip(lo).zip(hi) {
            *l = d * level(q);
            *h = d * level(q >> 4);
        }
    }
}

/// The 8 sub-block scales of an IQ4_XS block, offset by -32: low 4 bits from
/// nibble `ib % 2` of `scales_l[ib / 2]`, top 2 bits from bits `2ib..2ib+2`
/// of `scales_h`.
pub fn iq4xs_scales(scales_h: u16, scales_l: &[u8; 4]) -> [i8; 8] {
    let mut out = [0i8; 8];
    for (ib, o) in out.iter_mut().enumerate() {
        let low = (scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f;
        let high = ((scales_h >> (2 * ib)) & 3) as u8;
        *o = ((low | (high << 4)) as i8) - 32;
    }
    out
}

/// IQ4_XS: sub-block `ib` (32 elements) uses `qs[16ib..16ib + 16]` with the
/// IQ4_NL nibble order. `x = (d * sc) * table[q]`.
pub fn dequantize_iq4xs(blocks: &[BlockIQ4XS], dst: &mut [f32]) {
    for (b, out) in blocks.iter().zip(dst.as_chunks_mut::<QK_K>().0) {
        let d = b.d.to_f32();
        let scales = iq4xs_scales(b.scales_h, &b.scales_l);
        let subs = out.as_chunks_mut::<32>().0.iter_mut();
        for ((o32, qs), &sc) in subs.zip(b.qs.as_chunks::<16>().0).zip(&scales) {
            let dl = d * f32::from(sc);
            let (lo, hi) = o32.split_at_mut(16);
            for ((&q, l), h) in qs.iter().zip(lo).zip(hi) {
                *l = dl * level(q);
                *h = dl * level(q >> 4);
            }
        }
    }
}
