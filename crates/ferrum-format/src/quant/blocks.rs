//! On-disk block layouts of the GGML quantized types, as `#[repr(C)]` structs
//! whose sizes equal `GgmlType::type_size`. Scales stored as f16 are kept as
//! `half::f16` (bit-exact, little-endian on every supported target).
//!
//! Element `i` of a block is reconstructed as documented on each struct; the
//! codecs in this module and the kernels in `ferrum-kernels` share these types.

use half::f16;

/// Q4_0: 32 elements. `x = d * (q - 8)`, q = 4-bit; element j<16 in the low
/// nibble of `qs[j]`, element j+16 in the high nibble.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; 16],
}

/// Q4_1: 32 elements. `x = d * q + m`, nibble layout as Q4_0.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; 16],
}

/// Q5_0: 32 elements. `x = d * (q - 16)`; low 4 bits as Q4_0, bit 4 of
/// element j is bit j of the little-endian u32 `qh`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// Q5_1: 32 elements. `x = d * q + m`, bits as Q5_0.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

/// Q8_0: 32 elements. `x = d * q`, q signed 8-bit.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; 32],
}

/// Q8_1: 32 elements. `x = d * q`; `s = d * sum(q)` (used by dot products).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; 32],
}

/// Bytes of packed 6-bit scales/mins in Q4_K and Q5_K.
pub const K_SCALE_SIZE: usize = 12;

/// Q2_K: 256 elements in 16 sub-blocks of 16. `scales[i]`: low nibble scale,
/// high nibble min; `x = d * sc * q - dmin * m`, q 2-bit.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ2K {
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    pub d: f16,
    pub dmin: f16,
}

/// Q3_K: 256 elements in 16 sub-blocks of 16; 2 low bits in `qs`, high bit in
/// `hmask`, 6-bit signed scales packed in `scales`; `x = d * (sc - 32) * q`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ3K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: f16,
}

/// Q4_K: 256 elements in 8 sub-blocks of 32 with 6-bit scales and mins;
/// `x = d * sc * q - dmin * m`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; 128],
}

/// Q5_K: as Q4_K plus a fifth bit per element in `qh`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}

/// Q6_K: 256 elements in 16 sub-blocks of 16; 4 low bits in `ql`, 2 high bits
/// in `qh`, signed 8-bit scales; `x = d * sc * (q - 32)`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: f16,
}

/// Q8_K: 256 elements, f32 scale, and the sums of each group of 16 quants
/// (used to apply the K-quant minimums in dot products).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; 256],
    pub bsums: [i16; 16],
}

/// IQ4_NL: 32 elements; 4-bit indices into a fixed non-linear table.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockIQ4NL {
    pub d: f16,
    pub qs: [u8; 16],
}

/// IQ4_XS: 256 elements in 8 sub-blocks of 32 with 6-bit scales
/// (low 4 bits in `scales_l`, high 2 bits in `scales_h`), table as IQ4_NL.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockIQ4XS {
    pub d: f16,
    pub scales_h: u16,
    pub scales_l: [u8; 4],
    pub qs: [u8; 128],
}

// The structs must match the on-disk sizes exactly.
const _: () = {
    use std::mem::size_of;
    assert!(size_of::<BlockQ4_0>() == 18);
    assert!(size_of::<BlockQ4_1>() == 20);
    assert!(size_of::<BlockQ5_0>() == 22);
    assert!(size_of::<BlockQ5_1>() == 24);
    assert!(size_of::<BlockQ8_0>() == 34);
    assert!(size_of::<BlockQ8_1>() == 36);
    assert!(size_of::<BlockQ2K>() == 84);
    assert!(size_of::<BlockQ3K>() == 110);
    assert!(size_of::<BlockQ4K>() == 144);
    assert!(size_of::<BlockQ5K>() == 176);
    assert!(size_of::<BlockQ6K>() == 210);
    assert!(size_of::<BlockQ8K>() == 292);
    assert!(size_of::<BlockIQ4NL>() == 18);
    assert!(size_of::<BlockIQ4XS>() == 136);
};

/// A block type that can be viewed in place inside a byte buffer.
///
/// # Safety
/// Implementors are `#[repr(C)]`, contain only plain integers/floats (every
/// bit pattern valid) and have no padding.
pub unsafe trait Block: Copy + 'static {}

unsafe impl Block for BlockQ4_0 {}
unsafe impl Block for BlockQ4_1 {}
unsafe impl Block for BlockQ5_0 {}
unsafe impl Block for BlockQ5_1 {}
unsafe impl Block for BlockQ8_0 {}
unsafe impl Block for BlockQ8_1 {}
unsafe impl Block for BlockQ2K {}
unsafe impl Block for BlockQ3K {}
unsafe impl Block for BlockQ4K {}
unsafe impl Block for BlockQ5K {}
unsafe impl Block for BlockQ6K {}
unsafe impl Block for BlockQ8K {}
unsafe impl Block for BlockIQ4NL {}
unsafe impl Block for BlockIQ4XS {}

/// View `bytes` as a slice of blocks. `None` when the length is not a whole
/// number of blocks or the pointer is misaligned for `B`.
pub fn cast_blocks<B: Block>(bytes: &[u8]) -> Option<&[B]> {
    let size = std::mem::size_of::<B>();
    if !bytes.len().is_multiple_of(size)
        || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<B>())
    {
        return None;
    }
    // SAFETY: length and alignment checked above; `Block` guarantees every
    // bit pattern is a valid `B` and there is no padding.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const B, bytes.len() / size) })
}

/// Mutable counterpart of [`cast_blocks`].
pub fn cast_blocks_mut<B: Block>(bytes: &mut [u8]) -> Option<&mut [B]> {
    let size = std::mem::size_of::<B>();
    if !bytes.len().is_multiple_of(size)
        || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<B>())
    {
        return None;
    }
    // SAFETY: as in `cast_blocks`; the borrow is unique.
    Some(unsafe {
        std::slice::from_raw_parts_mut(bytes.as_mut_ptr() as *mut B, bytes.len() / size)
    })
}

/// Copy one block out of `bytes` (any alignment). `None` unless `bytes` is
/// exactly one block long.
pub fn block_from_bytes<B: Block>(bytes: &[u8]) -> Option<B> {
    if bytes.len() != std::mem::size_of::<B>() {
        return None;
    }
    // SAFETY: the length equals size_of::<B>() and `Block` makes every bit
    // pattern a valid `B`; read_unaligned has no alignment requirement.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const B) })
}

/// The raw bytes of a block (its on-disk encoding on little-endian targets).
pub fn block_bytes<B: Block>(block: &B) -> &[u8] {
    // SAFETY: `Block` types have no padding, so all size_of::<B>() bytes are
    // initialised; the slice borrows `block`.
    unsafe { std::slice::from_raw_parts(block as *const B as *const u8, std::mem::size_of::<B>()) }
}

/// A block whose bytes are all zero (a valid value of every `Block`).
pub fn zeroed_block<B: Block>() -> B {
    // SAFETY: `Block` guarantees the all-zero bit pattern is a valid `B`.
    unsafe { std::mem::zeroed() }
}
