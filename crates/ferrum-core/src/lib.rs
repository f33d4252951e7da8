//! Types shared by every Ferrum crate: the GGML tensor element types and the
//! plain activation dtypes.

mod ggml_type;

pub use ggml_type::{GgmlType, UnknownGgmlType};

/// Element type of activations and of dense (unquantized) buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}
