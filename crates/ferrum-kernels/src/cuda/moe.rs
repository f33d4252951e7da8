//! Mixture of experts on the device with no host round trip: router GEMV,
//! softmax + top-k (+ renormalisation), assignments bucketed by expert,
//! fused gate + up + SiLU per assignment, down projection, and the weighted
//! sum added to the residual.

use cudarc::driver::LaunchConfig;

use super::linear::{GEMV_WARPS, Q8_RPW_DOWN, Q8_RPW_GATE_UP, Q8_WARPS};
use super::{grid1, launch, moe_grouped, moe_mmq, CudaAct, CudaBackend, CudaWeight, DevBuf};
use crate::backend::{Backend, BackendError, MoeSpec, MoeWeights, Result};

/// Assignments from which they are ordered by expert (weights shared in L2).
const SORT_MIN: usize = 32;

/// Assignments bucketed by expert on the device (`moe_tiles`): `order` lists
/// them in expert order, `inv` gives each one's place there, and `tiles`
/// (`max_tiles` slots, `n_tiles` used) cut each expert's run into pieces of
/// at most `per_tile`.
pub(super) struct Buckets {
    pub order: DevBuf<u32>,
    pub inv: DevBuf<u32>,
    pub tiles: DevBuf<u32>,
    pub n_tiles: DevBuf<u32>,
    pub max_tiles: usize,
}

pub(super) fn bucket(be: &CudaBackend, ids: &DevBuf<i32>, n_assign: usize, n_exp: usize, per_tile: usize) -> Result<Buckets> {
    // At most ceil(n / per_tile) tiles plus one partial tile per expert.
    let max_tiles = n_assign.div_ceil(per_tile) + n_exp;
    let b = Buckets {
        order: be.buffer(n_assign)?,
        inv: be.buffer(n_assign)?,
        tiles: be.buffer(3 * max_tiles)?,
        n_tiles: be.buffer(1)?,
        max_tiles,
    };
    let (ip, op, invp, tp, ntp) = (be.ptr(ids), be.ptr(&b.order), be.ptr(&b.inv), be.ptr(&b.tiles), be.ptr(&b.n_tiles));
    let (na, ne, per) = (n_assign as i32, n_exp as i32, per_tile as i32);
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 12 * (n_exp as u32 + 1) };
    launch!(be, &be.k.moe_tiles, cfg, &ip, &na, &ne, &per, &op, &invp, &tp, &ntp)?;
    Ok(b)
}

/// A routed batch for the grouped expert paths: the input rows, the experts,
/// and each row's top-k experts and weights (`[tokens, top_k]` on the device).
#[derive(Clone, Copy)]
pub(super) struct Routed<'a> {
    pub x: &'a CudaAct,
    pub gate: &'a CudaWeight,
    pub up: &'a CudaWeight,
    pub down: &'a CudaWeight,
    pub spec: &'a MoeSpec,
    pub ids: &'a DevBuf<i32>,
    pub wts: &'a DevBuf<f32>,
}

pub fn run(be: &CudaBackend, x: &CudaAct, w: &MoeWeights<'_, CudaWeight>, spec: &MoeSpec, residual: &mut CudaAct) -> Result<()> {
    let shape = |detail: String| BackendError::Shape { op: "moe", detail };
    if residual.rows != x.rows || residual.cols != x.cols {
        return Err(shape(format!("residual [{}, {}] vs x [{}, {}]", residual.rows, residual.cols, x.rows, x.cols)));
    }
    if spec.top_k == 0 || spec.top_k > spec.n_experts || spec.n_experts > 256 || spec.top_k > 32 {
        return Err(shape(format!("top-k {} of {} experts (at most 256 experts, top-32)", spec.top_k, spec.n_experts)));
    }
    let hidden = x.cols;
    let (gate, up, down) = (w.gate, w.up, w.down);
    let dims_ok = gate.dims.len() == 3
        && gate.dims == up.dims
        && gate.dims[0] == hidden
        && gate.dims[2] == spec.n_experts
        && down.dims == [gate.dims[1], hidden, spec.n_experts];
    if !dims_ok || gate.parts.len() != 1 || up.parts.len() != 1 || down.parts.len() != 1 {
        return Err(shape(format!("expert tensors gate {:?} up {:?} down {:?} for hidden {hidden}", gate.dims, up.dims, down.dims)));
    }
    if gate.ty != up.ty {
        return Err(shape(format!("gate ({}) and up ({}) experts must share a type", gate.ty, up.ty)));
    }
    let ff = gate.dims[1];
    let (t, k) = (x.rows, spec.top_k);
    let n_assign = t * k;
    if t == 0 {
        return Ok(());
    }
    let mut logits = be.alloc(0, 0)?;
    be.linear(x, w.router, None, &mut logits)?;
    if logits.cols != spec.n_experts {
        return Err(shape(format!("router gives {} logits for {} experts", logits.cols, spec.n_experts)));
    }
    let ids = be.buffer::<i32>(n_assign)?;
    let wts = be.buffer::<f32>(n_assign)?;
    let (lp, ip, wp) = (be.ptr(&logits.buf), be.ptr(&ids), be.ptr(&wts));
    let (ti, ne, ki, rn) = (t as i32, spec.n_experts as i32, k as i32, i32::from(spec.renormalize));
    launch!(be, &be.k.moe_route, grid1(t * 32, 128), &lp, &ti, &ne, &ki, &rn, &ip, &wp)?;
    residual.q8_valid = false;
    let routed = Routed { x, gate, up, down, spec, ids: &ids, wts: &wts };
    if let Some(k) = moe_mmq::kernels(be, gate, up, down).filter(|_| n_assign >= moe_mmq::MIN_ASSIGN) {
        return moe_mmq::run(be, &routed, k, residual);
    }
    if n_assign >= moe_grouped::GROUPED_MIN_ASSIGN {
        return moe_grouped::run(be, &routed, residual);
    }

    // (One tile per expert: only the order is used.)
    let buckets = if n_assign >= SORT_MIN { Some(bucket(be, &ids, n_assign, spec.n_experts, n_assign)?) } else { None };
    let op = buckets.as_ref().map(|b| be.ptr(&b.order)).unwrap_or(0);

    let act = be.buffer::<f32>(n_assign * ff)?;
    let (xp, ap) = (be.ptr(&x.buf), be.ptr(&act));
    let (ffi, hi) = (ff as i32, hidden as i32);
    let (gp, upp, dp) = (be.ptr(&gate.parts[0].buf), be.ptr(&up.parts[0].buf), be.ptr(&down.parts[0].buf));
    let grid = |rows: usize, per_block: usize, n: usize| LaunchConfig {
        grid_dim: (rows.div_ceil(per_block) as u32, n as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    };
    let rp = be.ptr(&residual.buf);
    // 8-bit activations where both expert types have the kernels: the down
    // kernel also forms the weighted sum into the residual.
    if let (Some(gq), Some(dq)) = (be.q8_kernels(gate.ty), be.q8_kernels(down.ty)) {
        let mut tmp = None;
        let xqp = be.q8_of(x, xp, &mut tmp)?;
        launch!(be, &gq.moe_gate_up, grid(ff, Q8_WARPS * Q8_RPW_GATE_UP, n_assign), &gp, &upp, &ip, &op, &xqp, &ap, &ffi, &hi, &ki)?;
        let aq = be.quantize_q8(ap, n_assign, ff)?;
        let aqp = be.ptr(&aq);
        return launch!(be, &dq.moe_down, grid(hidden, Q8_WARPS * Q8_RPW_DOWN, t), &dp, &ip, &wp, &aqp, &rp, &hi, &ffi, &ki);
    }
    let y = be.buffer::<f32>(n_assign * hidden)?;
    let yp = be.ptr(&y);
    launch!(be, &be.k.for_type(gate.ty)?.moe_gate_up, grid(ff, GEMV_WARPS, n_assign), &gp, &upp, &ip, &op, &xp, &ap, &ffi, &hi, &ki)?;
    launch!(be, &be.k.for_type(down.ty)?.moe_down, grid(hidden, GEMV_WARPS, n_assign), &dp, &ip, &op, &ap, &yp, &hi, &ffi)?;
    launch!(be, &be.k.moe_combine, grid1(t * hidden, 256), &rp, &yp, &wp, &ti, &hi, &ki)
}
