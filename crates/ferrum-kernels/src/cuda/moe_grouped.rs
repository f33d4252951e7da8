//! MoE for large batches (prefill): the assignments are bucketed by expert
//! (one host round trip for the expert ids); gate and up into
//! `[n_assign, 2·ff]`, SiLU·up, down into `[n_assign, hidden]`, then the
//! weighted sum into the residual. Experts of the k-quant and Q8_0 types run
//! on the int8 tensor cores from their GGUF blocks (moe_mmq.cu, activations
//! quantized to 8 bits, tiles of MMQ_TOK assignments of one expert); others
//! are dequantized to f16 once and each active expert runs as one cuBLAS GEMM.


use super::linear::{gemm_group, GroupItem};
use cudarc::driver::{CudaFunction, LaunchConfig};

use super::{dev_err, grid1, launch, q8_row, CudaAct, CudaBackend, CudaWeight, DevBuf};
use crate::backend::{Backend, MoeSpec, Result};

/// Assignments (tokens × top-k) from which the grouped path is used.
pub const GROUPED_MIN_ASSIGN: usize = 1024;

/// `w` (3-D, `[n_exp][rows][cols]`) dequantized to f16.
fn dequant_all(be: &CudaBackend, w: &CudaWeight) -> Result<DevBuf<u16>> {
    let (cols, rows, n_exp) = (w.dims[0], w.dims[1], w.dims[2]);
    let out = be.buffer::<u16>(n_exp * rows * cols)?;
    let p = &w.parts[0];
    let k = &be.k.for_type(p.ty)?.dequant_f16;
    let (src, dst, r, c, zero) = (be.ptr(&p.buf), be.ptr(&out), (n_exp * rows) as i32, cols as i32, 0i32);
    launch!(be, k, grid1(n_exp * rows * (cols / 8), 256), &src, &dst, &r, &c, &zero)?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    be: &CudaBackend,
    x: &CudaAct,
    gate: &CudaWeight,
    up: &CudaWeight,
    down: &CudaWeight,
    spec: &MoeSpec,
    ids: &DevBuf<i32>,
    wts: &DevBuf<f32>,
    residual: &mut CudaAct,
) -> Result<()> {
    let (t, k, hidden, ff) = (x.rows, spec.top_k, x.cols, gate.dims[1]);
    let n_assign = t * k;
    // Bucket the assignments by expert (stable), and the inverse permutation.
    let mut ids_h = vec![0i32; n_assign];
    // SAFETY: `ids` holds `n_assign` values; the copy completes before they are read.
    unsafe { cudarc::driver::result::memcpy_dtoh_async(&mut ids_h, be.ptr(ids), be.stream.cu_stream()) }.map_err(|e| dev_err("moe ids", e))?;
    be.synchronize()?;
    let mut counts = vec![0usize; spec.n_experts];
    for &e in &ids_h[..n_assign] {
        counts[e as usize] += 1;
    }
    let mut start = vec![0usize; spec.n_experts + 1];
    for e in 0..spec.n_experts {
        start[e + 1] = start[e] + counts[e];
    }
    let mut next = start.clone();
    let mut order = vec![0u32; n_assign];
    let mut inv = vec![0u32; n_assign];
    for (a, &e) in ids_h[..n_assign].iter().enumerate() {
        let i = next[e as usize];
        next[e as usize] += 1;
        order[i] = a as u32;
        inv[a] = i as u32;
    }
    let order_d = be.upload_slice(&order)?;
    let inv_d = be.upload_slice(&inv)?;
    let (hi, ki) = (hidden as i32, k as i32);
    if let Some(mmq) = mmq_kernels(be, gate, up, down, hidden, ff) {
        let y = mmq_experts(be, x, mmq, gate, up, down, spec, &counts, &start, &order)?;
        let (rp, yp, wp, ip, ti) = (be.ptr(&residual.buf), be.ptr(&y), be.ptr(wts), be.ptr(&inv_d), t as i32);
        return launch!(be, &be.k.moe_combine_sorted, grid1(t * hidden, 256), &rp, &yp, &wp, &ip, &ti, &hi, &ki);
    }

    // x rows in expert order, f16 [n_assign, hidden].
    let xg = be.buffer::<u16>(n_assign * hidden)?;
    let (xp, op, xgp) = (be.ptr(&x.buf), be.ptr(&order_d), be.ptr(&xg));
    let cfg = cudarc::driver::LaunchConfig { grid_dim: (n_assign as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    launch!(be, &be.k.moe_gather_f16, cfg, &xp, &op, &xgp, &hi, &ki)?;

    let (g16, u16w, d16) = (dequant_all(be, gate)?, dequant_all(be, up)?, dequant_all(be, down)?);
    let gu = be.alloc(n_assign, 2 * ff)?;
    let gup = be.ptr(&gu.buf);
    let active: Vec<usize> = (0..spec.n_experts).filter(|&e| counts[e] > 0).collect();
    // [gate | up] of each token: two GEMMs per expert writing the two halves of `gu`.
    for (w16, half) in [(&g16, 0u64), (&u16w, 4 * ff as u64)] {
        let items: Vec<GroupItem> = active
            .iter()
            .map(|&e| GroupItem {
                a: be.ptr(w16) + 2 * (e * ff * hidden) as u64,
                b: be.ptr(&xg) + 2 * (start[e] * hidden) as u64,
                c: gup + 4 * (start[e] * 2 * ff) as u64 + half,
                m: counts[e],
            })
            .collect();
        gemm_group(be, &items, ff, hidden, 2 * ff)?;
    }
    let mut act = be.alloc(0, 0)?;
    be.silu_mul(&gu, &mut act)?;
    drop(gu);
    let act16 = be.buffer::<u16>(n_assign * ff)?;
    let (ap, a16, n) = (be.ptr(&act.buf), be.ptr(&act16), (n_assign * ff) as i32);
    launch!(be, &be.k.to_f16, grid1(n_assign * ff, 256), &ap, &a16, &n)?;
    let y = be.buffer::<f32>(n_assign * hidden)?;
    let items: Vec<GroupItem> = active
        .iter()
        .map(|&e| GroupItem {
            a: be.ptr(&d16) + 2 * (e * hidden * ff) as u64,
            b: a16 + 2 * (start[e] * ff) as u64,
            c: be.ptr(&y) + 4 * (start[e] * hidden) as u64,
            m: counts[e],
        })
        .collect();
    gemm_group(be, &items, hidden, ff, hidden)?;
    let (rp, yp, wp, ip, ti) = (be.ptr(&residual.buf), be.ptr(&y), be.ptr(wts), be.ptr(&inv_d), t as i32);
    launch!(be, &be.k.moe_combine_sorted, grid1(t * hidden, 256), &rp, &yp, &wp, &ip, &ti, &hi, &ki)
}

/// Output rows and assignments per block of the int8 tensor-core expert
/// kernels (as in moe_mmq.cu), and the columns they decode at a time.
const MMQ_ROWS: usize = 64;
const MMQ_TOK: usize = 32;
const MMQ_K: usize = 256;
/// Shared memory of one block (`MmqTile` in moe_mmq.cu).
const MMQ_SMEM: u32 = ((MMQ_ROWS + MMQ_TOK) * ((MMQ_K + 16) + (MMQ_K / 32 + 1) * 16)) as u32;

/// The int8 tensor-core kernels of (gate/up, down), when their types have them.
fn mmq_kernels<'k>(be: &'k CudaBackend, gate: &CudaWeight, up: &CudaWeight, down: &CudaWeight, hidden: usize, ff: usize) -> Option<(&'k CudaFunction, &'k CudaFunction)> {
    if be.float_activations || gate.ty != up.ty || !hidden.is_multiple_of(MMQ_K) || !ff.is_multiple_of(MMQ_K) {
        return None;
    }
    Some((be.k.moe_mmq(gate.ty)?, be.k.moe_mmq(down.ty)?))
}

/// The experts on the int8 tensor cores: `y [n_assign, hidden]`, rows in
/// expert order (`order`, with `counts` / `start` per expert).
#[allow(clippy::too_many_arguments)]
fn mmq_experts(
    be: &CudaBackend,
    x: &CudaAct,
    (kgu, kd): (&CudaFunction, &CudaFunction),
    gate: &CudaWeight,
    up: &CudaWeight,
    down: &CudaWeight,
    spec: &MoeSpec,
    counts: &[usize],
    start: &[usize],
    order: &[u32],
) -> Result<DevBuf<f32>> {
    let (t, hidden, ff, n_assign) = (x.rows, x.cols, gate.dims[1], order.len());
    // (expert, first assignment, assignments) of every tile.
    let mut tiles = Vec::new();
    for e in 0..spec.n_experts {
        for off in (0..counts[e]).step_by(MMQ_TOK) {
            tiles.extend([e as u32, (start[e] + off) as u32, (counts[e] - off).min(MMQ_TOK) as u32]);
        }
    }
    let n_tiles = tiles.len() / 3;
    let xrow: Vec<u32> = order.iter().map(|&a| a / spec.top_k as u32).collect();
    let (tiles_d, xrow_d) = (be.upload_slice(&tiles)?, be.upload_slice(&xrow)?);
    let xq = be.quantize_q8(be.ptr(&x.buf), t, hidden)?;
    let cfg = |rows: usize| LaunchConfig { grid_dim: (rows.div_ceil(MMQ_ROWS) as u32, n_tiles as u32, 1), block_dim: (128, 1, 1), shared_mem_bytes: MMQ_SMEM };
    // [gate | up] of each assignment, in expert order.
    let gu = be.buffer::<f32>(n_assign * 2 * ff)?;
    let (tp, xqp, xrp, gup) = (be.ptr(&tiles_d), be.ptr(&xq), be.ptr(&xrow_d), be.ptr(&gu));
    let (ffi, hi, ldgu) = (ff as i32, hidden as i32, 2 * ff as i32);
    for (w, off) in [(gate, 0i32), (up, ff as i32)] {
        let wp = be.ptr(&w.parts[0].buf);
        launch!(be, kgu, cfg(ff), &wp, &ffi, &hi, &tp, &xqp, &xrp, &gup, &ldgu, &off)?;
    }
    // SiLU·up, in 8-bit form for the down projection.
    let act = be.buffer::<f32>(n_assign * ff)?;
    let actq = be.buffer::<u8>(n_assign * q8_row(ff))?;
    let (ap, aqp, na) = (be.ptr(&act), be.ptr(&actq), n_assign as i32);
    launch!(be, &be.k.silu_mul, grid1(n_assign * ff, 256), &gup, &ap, &aqp, &na, &ffi)?;
    let y = be.buffer::<f32>(n_assign * hidden)?;
    let (dp, yp, none, zero) = (be.ptr(&down.parts[0].buf), be.ptr(&y), 0u64, 0i32);
    launch!(be, kd, cfg(hidden), &dp, &hi, &ffi, &tp, &aqp, &none, &yp, &hi, &zero)?;
    Ok(y)
}
