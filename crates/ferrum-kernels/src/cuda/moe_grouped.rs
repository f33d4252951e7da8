//! MoE for large batches whose expert types have no int8 tensor-core
//! kernels (see moe_mmq.rs): the assignments are bucketed by expert (one
//! host round trip for the expert ids), every expert's weights are
//! dequantized to f16 once, and each active expert runs as one tensor-core
//! GEMM over all of its tokens: gate and up into `[n_assign, 2·ff]`, SiLU·up,
//! down into `[n_assign, hidden]`, then the weighted sum into the residual.


use super::linear::{gemm_group, GroupItem};
use super::moe::Routed;
use super::{dev_err, grid1, launch, CudaAct, CudaBackend, CudaWeight, DevBuf};
use crate::backend::{Backend, Result};

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

pub fn run(be: &CudaBackend, r: &Routed<'_>, residual: &mut CudaAct) -> Result<()> {
    let Routed { x, gate, up, down, spec, ids, wts } = *r;
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

    // x rows in expert order, f16 [n_assign, hidden].
    let xg = be.buffer::<u16>(n_assign * hidden)?;
    let (xp, op, xgp, hi, ki) = (be.ptr(&x.buf), be.ptr(&order_d), be.ptr(&xg), hidden as i32, k as i32);
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
