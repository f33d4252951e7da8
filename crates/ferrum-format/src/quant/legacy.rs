//! Dequantization of the 32-element "legacy" types Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0 and Q8_1.
//!
//! Every function writes `min(blocks.len(), dst.len() / 32)` whole blocks;
//! callers pass `dst.len() == blocks.len() * 32`. The arithmetic mirrors
//! ggml / gguf-py in f32 (`d * q`, then `+ m` for the affine types), so the
//! results are bit-identical to the reference.

use super::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};

/// Elements per legacy block.
pub const QK: usize = 32;

/// Element `j < 16` is the low nibble of `qs[j]`, element `j + 16` the high one.
#[inline]
fn nibbles(qs: &[u8; 16]) -> [u8; QK] {
    let mut q = [0u8; QK];
    for (j, &b) in qs.iter().enumerate() {
        q[j] = b & 0x0f;
        q[j + 16] = b >> 4;
    }
    q
}

/// Five-bit values: nibbles as above plus bit `j` of `qh` (little-endian u32)
/// as bit 4 of element `j`.
#[inline]
fn five_bits(qs: &[u8; 16], qh: [u8; 4]) -> [u8; QK] {
    let high = u32::from_le_bytes(qh);
    let mut q = nibbles(qs);
    for (j, v) in q.iter_mut().enumerate() {
        *v |= (((high >> j) & 1) as u8) << 4;
    }
    q
}

/// `x = d * (q - 8)`.
pub fn dequantize_q4_0(blocks: &[BlockQ4_0], dst: &mut [f32]) {
    for (b, out) in blocks.iter().zip(dst.as_chunks_mut::<QK>().0) {
        let d = b.d.to_f32();
        for (o, q) in out.iter_mut().zip(nibbles(&b.qs)) {
            *o = d * (i32::from(q) - 8) as f32;
        }
    }
}

/// `x = d * q + m`.
pub fn dequantize_q4_1(blocks: &[BlockQ4_1], dst: &mut [f32]) {
    for (b, out) in blocks.iter().zip(dst.as_chunks_mut::<QK>().0) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for (o, q) in out.iter_mut().zip(nibbles(&b.qs)) {
            *o = d * f32::from(q) + m;
        }
    }
}

/// `x = d * (q - 16)`, q 5-bit.
pub fn dequantize_q5_0(blocks: &[BlockQ5_0], dst: &mut [f32]) {
    for (b, out) in blocks.iter().zip(dst.as_chunks_mut::<QK>().0) {
        let d = b.d.to_f32();
        for (o, q) in out.iter_mut().zip(five_bits(&b.qs, b.qh)) {
            *o = d * (i32::from(q) - 16) as f32;
        }
    }
}

/// `x = d * q + m`, q 5-bit.
pub fn dequantize_q5_1(blocks: &[BlockQ5_1], dst: &mut [f32]) {
    for (b, out) in blocks.iter().zip(dst.as_chunks_mut::<QK>().0) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for (o, q) in out.iter_mut().zip(five_bits(&b.qs, b.qh)) {
            *o = d * f32::from(q) + m;
        }
    }
}

/// `x = d * q`, q signed 8-bit.
pub fn dequantize_q8_0(blocks: &[BlockQ8_0], dst: &mut [f32]) {
    for (b, out) in blocks.iter().zip(dst.as_chunks_mut::<QK>().0) {
        let d = b.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = d * f32::from(q);
        }
    }
}

/// `x = d * q`; the stored sum `s` is not needed to reconstruct values.
pub fn dequantize_q8_1(blocks: &[BlockQ8_1], dst: &mut [f32]) {
    for (b, out) in blocks.iter().zip(dst.as_chunks_mut::<QK>().0) {
        let d = b.d.to_f32();
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = d * f32::from(q);
        }
    }
}
