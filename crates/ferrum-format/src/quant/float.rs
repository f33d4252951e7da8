//! Plain float element types (F32, F16, BF16) stored as little-endian bytes.
//!
//! F16 uses IEEE binary16 with round-to-nearest-even on encode (what numpy's
//! `astype(float16)` and ggml do). BF16 is the high half of an f32; encoding
//! rounds to nearest even and forces NaNs quiet, matching ggml's
//! `fp32_to_bf16` and gguf-py.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// BF16 bits to f32 (exact: the bits become the top half of the f32).
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// f32 to BF16 bits, rounding to nearest even. A NaN keeps its top 16 bits
/// with the quiet bit set, so it can never round into an infinity.
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 0x40) as u16;
    }
    // Largest non-NaN pattern is 0xff80_0000, so adding at most 0x8000
    // cannot overflow; wrapping_add keeps debug builds quiet regardless.
    let rounding = 0x7fff + ((u >> 16) & 1);
    (u.wrapping_add(rounding) >> 16) as u16
}

pub(crate) fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (b, o) in src.as_chunks::<4>().0.iter().zip(dst) {
        *o = f32::from_le_bytes(*b);
    }
}

/// Elements converted per batch by the F16 paths (half's slice conversion
/// uses F16C/NEON when the CPU has it).
const F16_BATCH: usize = 256;

pub(crate) fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    let mut halves = [f16::ZERO; F16_BATCH];
    for (bytes, out) in src.chunks(2 * F16_BATCH).zip(dst.chunks_mut(F16_BATCH)) {
        let h = &mut halves[..out.len()];
        for (v, b) in h.iter_mut().zip(bytes.as_chunks::<2>().0) {
            *v = f16::from_bits(u16::from_le_bytes(*b));
        }
        h.convert_to_f32_slice(out);
    }
}

pub(crate) fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    for (b, o) in src.as_chunks::<2>().0.iter().zip(dst) {
        *o = bf16_to_f32(u16::from_le_bytes(*b));
    }
}

pub(crate) fn quantize_f32(src: &[f32], dst: &mut [u8]) {
    for (x, o) in src.iter().zip(dst.as_chunks_mut::<4>().0) {
        *o = x.to_le_bytes();
    }
}

pub(crate) fn quantize_f16(src: &[f32], dst: &mut [u8]) {
    let mut halves = [f16::ZERO; F16_BATCH];
    for (x, bytes) in src.chunks(F16_BATCH).zip(dst.chunks_mut(2 * F16_BATCH)) {
        let h = &mut halves[..x.len()];
        h.convert_from_f32_slice(x);
        for (v, b) in h.iter().zip(bytes.as_chunks_mut::<2>().0) {
            *b = v.to_bits().to_le_bytes();
        }
    }
}

pub(crate) fn quantize_bf16(src: &[f32], dst: &mut [u8]) {
    for (x, o) in src.iter().zip(dst.as_chunks_mut::<2>().0) {
        *o = f32_to_bf16(*x).to_le_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_and_nan() {
        // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        // A NaN whose payload sits only in the low half must stay NaN.
        let nan = f32::from_bits(0x7f80_0001);
        assert!(bf16_to_f32(f32_to_bf16(nan)).is_nan());
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80); // rounds up to +inf
        assert_eq!(bf16_to_f32(0xbf80), -1.0);
    }
}
