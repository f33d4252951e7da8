//! Round-to-nearest quantizers for the 32-element legacy types.
//!
//! These are the deterministic reference schemes (one scale from the block's
//! extreme values, no search), computed in f32 with the same operation order
//! as ggml's `quantize_row_*_ref` and gguf-py, so the bytes are identical.
//! Every function fills `min(src.len() / 32, dst.len())` blocks.
//! (`f as u8` truncates toward zero and saturates, which is the reference's
//! `trunc` then clamp at 0.)

use half::f16;

use super::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use super::legacy::QK;

/// The element of largest magnitude, sign kept (first one on ties).
#[inline]
fn signed_absmax(x: &[f32; QK]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    max
}

#[inline]
fn min_max(x: &[f32; QK]) -> (f32, f32) {
    x.iter()
        .fold((f32::MAX, -f32::MAX), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

#[inline]
fn inverse(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

/// Pack 32 values of at most 4 bits: element j low nibble, j + 16 high.
#[inline]
fn pack_nibbles(q: &[u8; QK]) -> [u8; 16] {
    let mut qs = [0u8; 16];
    for (j, b) in qs.iter_mut().enumerate() {
        *b = (q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4);
    }
    qs
}

/// Bit 4 of element j goes to bit j of a little-endian u32.
#[inline]
fn pack_fifth_bits(q: &[u8; QK]) -> [u8; 4] {
    let mut qh = 0u32;
    for (j, &v) in q.iter().enumerate() {
        qh |= u32::from((v >> 4) & 1) << j;
    }
    qh.to_le_bytes()
}

/// Q8_0: `d = max|x| / 127`, `q = round(x / d)` (ties away from zero).
pub fn quantize_q8_0(src: &[f32], dst: &mut [BlockQ8_0]) {
    for (x, b) in src.as_chunks::<QK>().0.iter().zip(dst) {
        let amax = x.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = inverse(d);
        b.d = f16::from_f32(d);
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
    }
}

/// Q4_0: `d = max / -8` (max = signed extreme), `q = trunc(x / d + 8.5)`,
/// clamped to 15, so the extreme maps to 0 and the levels span -8..=7.
pub fn quantize_q4_0(src: &[f32], dst: &mut [BlockQ4_0]) {
    for (x, b) in src.as_chunks::<QK>().0.iter().zip(dst) {
        let d = signed_absmax(x) / -8.0;
        let id = inverse(d);
        let q = x.map(|v| ((v * id + 8.5) as u8).min(15));
        b.d = f16::from_f32(d);
        b.qs = pack_nibbles(&q);
    }
}

/// Q4_1: `d = (max - min) / 15`, `m = min`, `q = trunc((x - min) / d + 0.5)`.
pub fn quantize_q4_1(src: &[f32], dst: &mut [BlockQ4_1]) {
    for (x, b) in src.as_chunks::<QK>().0.iter().zip(dst) {
        let (lo, hi) = min_max(x);
        let d = (hi - lo) / 15.0;
        let id = inverse(d);
        let q = x.map(|v| (((v - lo) * id + 0.5) as u8).min(15));
        b.d = f16::from_f32(d);
        b.m = f16::from_f32(lo);
        b.qs = pack_nibbles(&q);
    }
}

/// Q5_0: `d = max / -16`, `q = trunc(x / d + 16.5)` clamped to 31.
pub fn quantize_q5_0(src: &[f32], dst: &mut [BlockQ5_0]) {
    for (x, b) in src.as_chunks::<QK>().0.iter().zip(dst) {
        let d = signed_absmax(x) / -16.0;
        let id = inverse(d);
        let q = x.map(|v| ((v * id + 16.5) as u8).min(31));
        b.d = f16::from_f32(d);
        b.qh = pack_fifth_bits(&q);
        b.qs = pack_nibbles(&q);
    }
}

/// Q5_1: `d = (max - min) / 31`, `m = min`, `q = trunc((x - min) / d + 0.5)`.
pub fn quantize_q5_1(src: &[f32], dst: &mut [BlockQ5_1]) {
    for (x, b) in src.as_chunks::<QK>().0.iter().zip(dst) {
        let (lo, hi) = min_max(x);
        let d = (hi - lo) / 31.0;
        let id = inverse(d);
        let q = x.map(|v| (((v - lo) * id + 0.5) as u8).min(31));
        b.d = f16::from_f32(d);
        b.m = f16::from_f32(lo);
        b.qh = pack_fifth_bits(&q);
        b.qs = pack_nibbles(&q);
    }
}
