//! Tensor descriptors as stored in a GGUF header, and the shape rules both the
//! reader and the writer enforce.

use ferrum_core::GgmlType;

use super::GgufError;

/// GGML allows at most four dimensions.
pub const MAX_DIMS: usize = 4;

/// One tensor's header entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// `[ne0, ne1, ...]`: ne0 is the contiguous (fastest-varying) dimension,
    /// i.e. the reverse of the PyTorch shape.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Byte offset of the data, relative to the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// Product of the dims (`u64::MAX` if it overflows, which a validated
    /// info never does).
    pub fn n_elements(&self) -> u64 {
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// Bytes of data (`u64::MAX` for an invalid shape, which a validated info
    /// from [`super::GgufFile`] or the writer never has).
    pub fn n_bytes(&self) -> u64 {
        self.ty.bytes_for(self.n_elements()).unwrap_or(u64::MAX)
    }
}

/// Check a tensor's shape and return its data size in bytes: 1..=4 dims, no
/// dim or element count above `i64::MAX` (ggml counts in `int64_t`), and rows
/// (`ne0`) made of whole quantization blocks.
pub(crate) fn checked_n_bytes(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64, GgufError> {
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(GgufError::BadDimCount {
            tensor: name.to_owned(),
            n_dims: u32::try_from(dims.len()).unwrap_or(u32::MAX),
        });
    }
    let overflow = || GgufError::ElementCountOverflow {
        tensor: name.to_owned(),
        dims: dims.to_vec(),
    };
    let limit = i64::MAX as u64;
    let mut n: u64 = 1;
    for &d in dims {
        if d > limit {
            return Err(overflow());
        }
        n = n
            .checked_mul(d)
            .filter(|&n| n <= limit)
            .ok_or_else(overflow)?;
    }
    let block = ty.block_size() as u64;
    let ne0 = dims.first().copied().unwrap_or(0);
    if !ne0.is_multiple_of(block) {
        return Err(GgufError::NotBlockMultiple {
            tensor: name.to_owned(),
            ne0,
            ty,
            block_size: block,
        });
    }
    ty.bytes_for(n).ok_or_else(overflow)
}

/// `x` rounded up to a multiple of `align` (a power of two), or `None` on overflow.
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    let mask = align.checked_sub(1)?;
    Some(x.checked_add(mask)? & !mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(
            checked_n_bytes("t", &[256, 2], GgmlType::Q4K).ok(),
            Some(288)
        );
        assert!(matches!(
            checked_n_bytes("t", &[128, 2], GgmlType::Q4K),
            Err(GgufError::NotBlockMultiple { ne0: 128, .. })
        ));
        assert!(matches!(
            checked_n_bytes("t", &[1 << 32, 1 << 32], GgmlType::F32),
            Err(GgufError::ElementCountOverflow { .. })
        ));
        assert!(matches!(
            checked_n_bytes("t", &[1 << 62], GgmlType::F64),
            Err(GgufError::ElementCountOverflow { .. })
        ));
        assert!(matches!(
            checked_n_bytes("t", &[], GgmlType::F32),
            Err(GgufError::BadDimCount { n_dims: 0, .. })
        ));
        assert_eq!(checked_n_bytes("t", &[0, 5], GgmlType::F32).ok(), Some(0));
        assert_eq!(align_up(33, 32), Some(64));
        assert_eq!(align_up(64, 32), Some(64));
        assert_eq!(align_up(u64::MAX, 32), None);
    }
}
