//! MoE for larger batches on the int8 tensor cores (moe_mmq.cu), with no
//! host round trip: the assignments are bucketed by expert on the device and
//! cut into tiles of up to MMQ_TOK assignments of one expert; gate and up run
//! from the experts' GGUF blocks on the tokens' 8-bit rows into
//! `[n_assign, 2·ff]` (expert order), SiLU·up is written in 8-bit form, down
//! runs the same way into `[n_assign, hidden]`, and each token's weighted sum
//! goes into the residual.

use cudarc::driver::{CudaFunction, LaunchConfig};

use super::moe::{bucket, Routed};
use super::{grid1, launch, q8_row, CudaAct, CudaBackend, CudaWeight};
use crate::backend::Result;

/// Assignments (tokens × top-k) from which this path is used.
pub const MIN_ASSIGN: usize = 256;

/// Output rows and assignments per block, and the columns decoded at a time
/// (as in moe_mmq.cu).
const MMQ_ROWS: usize = 64;
const MMQ_TOK: usize = 32;
const MMQ_K: usize = 256;
/// Shared memory of one block (`MmqTile` in moe_mmq.cu: int8 rows padded by
/// 16 bytes, one padded row of 16-byte scale records per 32 columns).
const MMQ_SMEM: u32 = ((MMQ_ROWS + MMQ_TOK) * ((MMQ_K + 16) + (MMQ_K / 32 + 1) * 16)) as u32;

/// The kernels for (gate/up, down), when the experts' types and sizes have them.
pub fn kernels<'k>(be: &'k CudaBackend, gate: &CudaWeight, up: &CudaWeight, down: &CudaWeight) -> Option<(&'k CudaFunction, &'k CudaFunction)> {
    let (hidden, ff) = (gate.dims[0], gate.dims[1]);
    if be.float_activations || gate.ty != up.ty || !hidden.is_multiple_of(MMQ_K) || !ff.is_multiple_of(MMQ_K) {
        return None;
    }
    Some((be.k.moe_mmq(gate.ty)?, be.k.moe_mmq(down.ty)?))
}

/// The experts of every row of the routed batch, their weighted sums added
/// to `residual`.
pub fn run(be: &CudaBackend, r: &Routed<'_>, (kgu, kd): (&CudaFunction, &CudaFunction), residual: &mut CudaAct) -> Result<()> {
    let Routed { x, gate, up, down, spec, ids, wts } = *r;
    let (t, hidden, ff, top_k) = (x.rows, x.cols, gate.dims[1], spec.top_k);
    let n_assign = t * top_k;
    let b = bucket(be, ids, n_assign, spec.n_experts, MMQ_TOK)?;
    let (op, invp, tp, ntp, max_tiles) = (be.ptr(&b.order), be.ptr(&b.inv), be.ptr(&b.tiles), be.ptr(&b.n_tiles), b.max_tiles);
    let (na, ki) = (n_assign as i32, top_k as i32);

    let xq = be.quantize_q8(be.ptr(&x.buf), t, hidden)?;
    let cfg = |rows: usize| LaunchConfig { grid_dim: (rows.div_ceil(MMQ_ROWS) as u32, max_tiles as u32, 1), block_dim: (128, 1, 1), shared_mem_bytes: MMQ_SMEM };
    // [gate | up] of each assignment, in expert order.
    let gu = be.buffer::<f32>(n_assign * 2 * ff)?;
    let (xqp, gup) = (be.ptr(&xq), be.ptr(&gu));
    let (ffi, hi, ldgu) = (ff as i32, hidden as i32, 2 * ff as i32);
    for (w, off) in [(gate, 0i32), (up, ff as i32)] {
        let wp = be.ptr(&w.parts[0].buf);
        launch!(be, kgu, cfg(ff), &wp, &ffi, &hi, &tp, &ntp, &xqp, &op, &ki, &gup, &ldgu, &off)?;
    }
    // SiLU·up, only in 8-bit form, for the down projection (rows in expert order).
    let actq = be.buffer::<u8>(n_assign * q8_row(ff))?;
    let (none, aqp) = (0u64, be.ptr(&actq));
    launch!(be, &be.k.silu_mul, grid1(n_assign * ff, 256), &gup, &none, &aqp, &na, &ffi)?;
    let y = be.buffer::<f32>(n_assign * hidden)?;
    let (dp, yp, zero) = (be.ptr(&down.parts[0].buf), be.ptr(&y), 0i32);
    launch!(be, kd, cfg(hidden), &dp, &hi, &ffi, &tp, &ntp, &aqp, &none, &ki, &yp, &hi, &zero)?;
    let (rp, wp, ti) = (be.ptr(&residual.buf), be.ptr(wts), t as i32);
    launch!(be, &be.k.moe_combine_sorted, grid1(t * hidden, 256), &rp, &yp, &wp, &invp, &ti, &hi, &ki)
}
