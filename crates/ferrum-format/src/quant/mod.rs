//! GGML block-quantization codecs: dequantize every supported type, quantize
//! F32/F16/BF16, the legacy Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 and the K-quants
//! Q4_K/Q5_K/Q6_K/Q8_K.
//!
//! Byte buffers may have any alignment: blocks are viewed in place when the
//! buffer happens to be aligned and copied out (`read_unaligned`) in small
//! chunks otherwise. Results agree bit-for-bit with gguf-py's
//! `gguf.quants.dequantize` / `quantize` (see `tests/quant_vectors.rs`).

pub mod blocks;
mod float;
mod iquants;
mod kquants;
mod legacy;
mod quantize_k;
mod quantize_legacy;
mod search;

use ferrum_core::GgmlType;

pub use blocks::*;
pub use float::{bf16_to_f32, f32_to_bf16};
pub use iquants::{dequantize_iq4nl, dequantize_iq4xs, iq4xs_scales, IQ4NL_TABLE, QK4_NL};
pub use kquants::{
    dequantize_q2k, dequantize_q3k, dequantize_q4k, dequantize_q5k, dequantize_q6k, dequantize_q8k,
    get_scale_min_k4, q3k_scales, QK_K,
};
pub use legacy::{
    dequantize_q4_0, dequantize_q4_1, dequantize_q5_0, dequantize_q5_1, dequantize_q8_0,
    dequantize_q8_1, QK as QK_LEGACY,
};
pub use quantize_k::{quantize_q4k, quantize_q5k, quantize_q6k, quantize_q8k};
pub use quantize_legacy::{
    quantize_q4_0, quantize_q4_1, quantize_q5_0, quantize_q5_1, quantize_q8_0,
};

/// Errors of the codecs; every variant names the type and the sizes involved.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum QuantError {
    #[error("{ty}: {elements} elements is not a whole number of {block_size}-element blocks")]
    NotBlockMultiple {
        ty: GgmlType,
        elements: usize,
        block_size: usize,
    },
    #[error("{ty}: {elements} elements take {expected} bytes, but the buffer has {bytes}")]
    LengthMismatch {
        ty: GgmlType,
        elements: usize,
        bytes: usize,
        expected: u64,
    },
    #[error("{ty}: the byte size of {elements} elements overflows")]
    SizeOverflow { ty: GgmlType, elements: usize },
    #[error("{op} is not supported for {ty}")]
    Unsupported { ty: GgmlType, op: &'static str },
}

/// Blocks decoded or encoded per round when the byte buffer is misaligned.
const CHUNK_BLOCKS: usize = 64;

/// Check that `elements` values of `ty` occupy exactly `bytes` bytes.
fn check_sizes(ty: GgmlType, elements: usize, bytes: usize) -> Result<(), QuantError> {
    let block_size = ty.block_size();
    if !elements.is_multiple_of(block_size) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            elements,
            block_size,
        });
    }
    let expected = ty
        .bytes_for(elements as u64)
        .ok_or(QuantError::SizeOverflow { ty, elements })?;
    if expected != bytes as u64 {
        return Err(QuantError::LengthMismatch {
            ty,
            elements,
            bytes,
            expected,
        });
    }
    Ok(())
}

/// Run a block decoder over `src` (any alignment). `per_block` floats per block.
fn decode<B: Block>(src: &[u8], dst: &mut [f32], per_block: usize, f: fn(&[B], &mut [f32])) {
    if let Some(blocks) = cast_blocks::<B>(src) {
        f(blocks, dst);
        return;
    }
    let size = std::mem::size_of::<B>();
    let mut buf: Vec<B> = Vec::with_capacity(CHUNK_BLOCKS);
    for (bytes, out) in src
        .chunks(CHUNK_BLOCKS * size)
        .zip(dst.chunks_mut(CHUNK_BLOCKS * per_block))
    {
        buf.clear();
        buf.extend(bytes.chunks_exact(size).filter_map(block_from_bytes::<B>));
        f(&buf, out);
    }
}

/// Run a block encoder into `dst` (any alignment). `per_block` floats per block.
fn encode<B: Block>(src: &[f32], dst: &mut [u8], per_block: usize, f: fn(&[f32], &mut [B])) {
    if let Some(blocks) = cast_blocks_mut::<B>(dst) {
        f(src, blocks);
        return;
    }
    let size = std::mem::size_of::<B>();
    let mut buf: Vec<B> = vec![zeroed_block(); CHUNK_BLOCKS];
    for (x, out) in src
        .chunks(CHUNK_BLOCKS * per_block)
        .zip(dst.chunks_mut(CHUNK_BLOCKS * size))
    {
        f(x, &mut buf);
        for (b, o) in buf.iter().zip(out.chunks_exact_mut(size)) {
            o.copy_from_slice(block_bytes(b));
        }
    }
}

/// Decode `dst.len()` elements of type `ty` from `src`, which must hold
/// exactly `ty.bytes_for(dst.len())` bytes.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    use GgmlType::*;
    if matches!(ty, I8 | I16 | I32 | I64 | F64) {
        return Err(QuantError::Unsupported {
            ty,
            op: "dequantize",
        });
    }
    check_sizes(ty, dst.len(), src.len())?;
    let n = ty.block_size();
    match ty {
        F32 => float::dequantize_f32(src, dst),
        F16 => float::dequantize_f16(src, dst),
        BF16 => float::dequantize_bf16(src, dst),
        Q4_0 => decode(src, dst, n, dequantize_q4_0),
        Q4_1 => decode(src, dst, n, dequantize_q4_1),
        Q5_0 => decode(src, dst, n, dequantize_q5_0),
        Q5_1 => decode(src, dst, n, dequantize_q5_1),
        Q8_0 => decode(src, dst, n, dequantize_q8_0),
        Q8_1 => decode(src, dst, n, dequantize_q8_1),
        Q2K => decode(src, dst, n, dequantize_q2k),
        Q3K => decode(src, dst, n, dequantize_q3k),
        Q4K => decode(src, dst, n, dequantize_q4k),
        Q5K => decode(src, dst, n, dequantize_q5k),
        Q6K => decode(src, dst, n, dequantize_q6k),
        Q8K => decode(src, dst, n, dequantize_q8k),
        IQ4NL => decode(src, dst, n, dequantize_iq4nl),
        IQ4XS => decode(src, dst, n, dequantize_iq4xs),
        I8 | I16 | I32 | I64 | F64 => {
            return Err(QuantError::Unsupported {
                ty,
                op: "dequantize",
            })
        }
    }
    Ok(())
}

/// Decode `n` elements into a new vector. The size check happens before the
/// allocation, so `n` is bounded by the real length of `src`.
pub fn dequantize_to_vec(ty: GgmlType, src: &[u8], n: usize) -> Result<Vec<f32>, QuantError> {
    check_sizes(ty, n, src.len())?;
    let mut out = vec![0.0f32; n];
    dequantize(ty, src, &mut out)?;
    Ok(out)
}

/// Whether [`quantize`] can encode `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4K | Q5K | Q6K | Q8K
    )
}

/// Encode `src` as `ty` into a new buffer of `ty.bytes_for(src.len())` bytes.
pub fn quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    if !can_quantize(ty) {
        return Err(QuantError::Unsupported { ty, op: "quantize" });
    }
    let block_size = ty.block_size();
    if !src.len().is_multiple_of(block_size) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            elements: src.len(),
            block_size,
        });
    }
    let bytes = ty
        .bytes_for(src.len() as u64)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or(QuantError::SizeOverflow {
            ty,
            elements: src.len(),
        })?;
    let mut out = vec![0u8; bytes];
    quantize_into(ty, src, &mut out)?;
    Ok(out)
}

/// Encode `src` as `ty` into `dst`, which must hold exactly
/// `ty.bytes_for(src.len())` bytes.
pub fn quantize_into(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    use GgmlType::*;
    if !can_quantize(ty) {
        return Err(QuantError::Unsupported { ty, op: "quantize" });
    }
    check_sizes(ty, src.len(), dst.len())?;
    let n = ty.block_size();
    match ty {
        F32 => float::quantize_f32(src, dst),
        F16 => float::quantize_f16(src, dst),
        BF16 => float::quantize_bf16(src, dst),
        Q4_0 => encode(src, dst, n, quantize_q4_0),
        Q4_1 => encode(src, dst, n, quantize_q4_1),
        Q5_0 => encode(src, dst, n, quantize_q5_0),
        Q5_1 => encode(src, dst, n, quantize_q5_1),
        Q8_0 => encode(src, dst, n, quantize_q8_0),
        Q4K => encode(src, dst, n, quantize_q4k),
        Q5K => encode(src, dst, n, quantize_q5k),
        Q6K => encode(src, dst, n, quantize_q6k),
        Q8K => encode(src, dst, n, quantize_q8k),
        _ => return Err(QuantError::Unsupported { ty, op: "quantize" }),
    }
    Ok(())
}
