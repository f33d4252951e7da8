//! Sampling rows of logits on the device (`sample_rows` in
//! kernels/sample.cu, the algorithm of `crate::sample::sample_row`): only
//! each row's id, raw logit and log-sum-exp come back.

use cudarc::driver::LaunchConfig;

use super::{launch, CudaAct, CudaBackend};
use crate::backend::{BackendError, Result, RowArgmax};
use crate::sample::SampleSpec;

/// Threads of a block (`SAMPLE_THREADS` in sample.cu); one block per row.
const THREADS: u32 = 512;

/// Words of one row's spec record, as the kernel reads them.
const SPEC_WORDS: usize = 5;

/// `[inv_t bits | top_k << 32, top_p, min_p, seed, step]`, with the
/// switches already resolved as the host reference resolves them
/// (inv_t 0: greedy; top_p 1: off; min_p 0: off).
fn pack(s: &SampleSpec) -> [u64; SPEC_WORDS] {
    let inv_t = s.inv_temperature().unwrap_or(0.0);
    let top_p = s.top_p_used().unwrap_or(1.0);
    let min_p = s.min_p_used().unwrap_or(0.0);
    [inv_t.to_bits() as u64 | (s.top_k as u64) << 32, top_p.to_bits(), min_p.to_bits(), s.seed, s.step]
}

/// Samples each row of `x` (`[rows, cols]` logits) by its spec. The caller
/// has ended any recorded pass.
pub(super) fn sample_rows(be: &CudaBackend, x: &CudaAct, cols: usize, specs: &[SampleSpec]) -> Result<Vec<RowArgmax>> {
    if x.cols != cols || x.rows != specs.len() {
        return Err(BackendError::Shape {
            op: "sample_rows",
            detail: format!("[{}, {}] logits for {} specs of rows of {cols}", x.rows, x.cols, specs.len()),
        });
    }
    if x.rows == 0 {
        return Ok(Vec::new());
    }
    if cols == 0 {
        return Ok(specs.iter().map(|s| crate::sample::sample_row(&[], s)).collect());
    }
    let words: Vec<u64> = specs.iter().flat_map(pack).collect();
    let sp = be.upload_slice(&words)?;
    let out = be.buffer::<f32>(3 * x.rows)?;
    let (xp, c, spp, op) = (be.ptr(&x.buf), cols as i32, be.ptr(&sp), be.ptr(&out));
    let cfg = LaunchConfig { grid_dim: (x.rows as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
    launch!(be, &be.k.sample_rows, cfg, &xp, &c, &spp, &op)?;
    be.picks_to_host(op, x.rows)
}
