//! CPU kernels: quantized-weight x f32-activation matmul (AVX2 with a
//! portable scalar fallback), dense F32/F16/BF16 matmul, a general f32 GEMM
//! helper and the persistent worker pool.
//!
//! Every output of [`matmul`] is computed by one canonical sequence of f32
//! operations (see `dot/mod.rs` and `dot/float.rs`), so results are
//! bit-identical whatever the batch size `m`, the tiling, the thread count
//! or the kernel (AVX2 or scalar).

pub mod act_quant;
mod act_set;
mod dense;
mod dot;
mod matmul;
mod pool;
mod qplan;

pub use dense::gemm_f32;
pub use matmul::{
    matmul, matmul_many, matmul_many_with, matmul_parts, matmul_parts_with, matmul_with, MatmulJob,
};
pub use pool::{num_threads, par_for, par_for_limit};

use ferrum_core::GgmlType;

/// A quantized (or F32/F16/BF16) weight matrix in GGUF layout.
///
/// `rows` = output features (GGUF ne1), `cols` = input features (GGUF ne0, the
/// contiguous dimension); each row is `cols / block_size` blocks, rows stored
/// one after another. `data` may have any alignment.
#[derive(Clone, Copy, Debug)]
pub struct QMatRef<'a> {
    pub ty: GgmlType,
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
}

/// Errors of the CPU kernels; messages name the offending sizes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("CPU matmul does not support weight type {0}")]
    UnsupportedType(GgmlType),
    #[error("{ty} weight has {cols} columns, not a multiple of its block size {block}")]
    ColsNotBlockMultiple {
        ty: GgmlType,
        cols: usize,
        block: usize,
    },
    #[error("{ty} weight [{rows} rows, {cols} cols] needs {expected} bytes but has {got}")]
    WeightBytes {
        ty: GgmlType,
        rows: usize,
        cols: usize,
        expected: usize,
        got: usize,
    },
    #[error("{what} has {got} values, expected {m} x {n} = {expected}")]
    Length {
        what: &'static str,
        got: usize,
        m: usize,
        n: usize,
        expected: usize,
    },
    #[error("size {a} x {b} overflows usize ({what})")]
    Overflow {
        what: &'static str,
        a: usize,
        b: usize,
    },
    #[error("the {0:?} kernel is not available on this CPU")]
    KernelUnavailable(Kernel),
}

/// Which instruction set the kernels use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust; the reference every other path matches bit for bit.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
}

impl Kernel {
    pub fn available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 => false,
        }
    }

    /// The fastest kernel this CPU runs (detected once).
    pub fn best() -> Kernel {
        static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            if Kernel::Avx2.available() {
                Kernel::Avx2
            } else {
                Kernel::Scalar
            }
        })
    }
}

/// How a quantized matmul is scheduled (results never depend on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Direct per-row kernels for small `m`, the tiled kernel otherwise.
    Auto,
    /// Direct per-row kernels where the type has one.
    Direct,
    /// Unpack weight rows into panels and run the tiled kernel.
    Tiled,
}

/// Knobs for [`matmul_with`]; meant for tests and benchmarks. The defaults
/// are what [`matmul`] uses. No knob changes the results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulOptions {
    /// `None`: the best available kernel.
    pub kernel: Option<Kernel>,
    /// At most this many threads (0: all of the pool's).
    pub max_threads: usize,
    pub strategy: Strategy,
    /// Weight rows per task (0: chosen from the shape).
    pub rows_per_task: usize,
}

impl Default for MatmulOptions {
    fn default() -> Self {
        MatmulOptions {
            kernel: None,
            max_threads: 0,
            strategy: Strategy::Auto,
            rows_per_task: 0,
        }
    }
}

/// Can [`matmul`] take weights of this type?
pub fn supports(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) || dot::quant_kind(ty).is_some()
}
