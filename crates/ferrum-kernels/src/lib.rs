//! Compute kernels and backends.
//!
//! - [`backend`]: the `Backend` trait the decoder is written against;
//! - [`attn_meta`]: the per-step attention plan shared by all layers;
//! - [`cpu`]: CPU kernels (quantized matmul, worker pool, dense GEMM);
//! - [`cpu_backend`]: the CPU implementation of `Backend`;
//! - [`sample`]: sampling a row of logits (temperature, top-k/p, min-p, seeds);
//! - `cuda` (feature `cuda`): the CUDA implementation of `Backend`.

pub mod attn_meta;
pub mod backend;
pub mod cpu;
pub mod cpu_backend;
pub mod sample;

pub use attn_meta::{AttnMeta, RowMeta, SeqMeta, SeqPlan};
pub use backend::*;
pub use cpu_backend::{CpuBackend, CpuKv, CpuWeight, Mat};
pub use sample::{sample_row, SampleSpec};

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "cuda")]
pub use cuda::{CudaBackend, CudaOptions};
