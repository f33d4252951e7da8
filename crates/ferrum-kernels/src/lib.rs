//! Compute kernels. `cpu` holds the CPU implementations (quantized matmul,
//! dense GEMM, the worker pool); the `Backend` trait and its CPU and CUDA
//! implementations build on them.

pub mod cpu;
