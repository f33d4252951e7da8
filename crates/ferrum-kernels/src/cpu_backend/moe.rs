//! Mixture of experts on the CPU: softmax router, top-k (optionally
//! renormalised), tokens grouped per expert so each expert's weights are
//! read once per step, and the weighted sum added to the residual in rank
//! order (so a row's result does not depend on which rows share its experts).

use super::{norm::silu, CpuWeight, Mat};
use crate::backend::{BackendError, MoeSpec, MoeWeights, Result};
use crate::cpu::{self, QMatRef};

/// Top-k of one row's router logits: `(expert, weight)` by descending
/// probability (ties to the lower expert id).
pub fn route(logits: &[f32], spec: &MoeSpec) -> Vec<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = probs.iter().sum();
    for p in probs.iter_mut() {
        *p /= sum;
    }
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let mut top: Vec<(usize, f32)> = order.iter().take(spec.top_k).map(|&e| (e, probs[e])).collect();
    if spec.renormalize {
        let s: f32 = top.iter().map(|t| t.1).sum();
        for t in top.iter_mut() {
            t.1 /= s;
        }
    }
    top
}

pub fn run(x: &Mat, w: &MoeWeights<'_, CpuWeight>, spec: &MoeSpec, residual: &mut Mat) -> Result<()> {
    let shape = |detail: String| BackendError::Shape { op: "moe", detail };
    if residual.rows != x.rows || residual.cols != x.cols {
        return Err(shape(format!("residual [{}, {}] vs x [{}, {}]", residual.rows, residual.cols, x.rows, x.cols)));
    }
    if spec.top_k == 0 || spec.top_k > spec.n_experts {
        return Err(shape(format!("top-k {} of {} experts", spec.top_k, spec.n_experts)));
    }
    let router = w.router.mat("moe router")?;
    if router.rows != spec.n_experts || router.cols != x.cols {
        return Err(shape(format!("router [{}, {}] for {} experts, hidden {}", router.rows, router.cols, spec.n_experts, x.cols)));
    }
    let mut logits = vec![0.0f32; x.rows * spec.n_experts];
    cpu::matmul(&router, &x.data, x.rows, &mut logits)?;
    let routes: Vec<Vec<(usize, f32)>> = logits.chunks_exact(spec.n_experts).map(|l| route(l, spec)).collect();

    // Rows routed to each expert, with the rank the expert has for that row.
    let mut by_expert: Vec<Vec<(usize, usize)>> = vec![Vec::new(); spec.n_experts];
    for (r, top) in routes.iter().enumerate() {
        for (rank, &(e, _)) in top.iter().enumerate() {
            by_expert[e].push((r, rank));
        }
    }
    let hidden = x.cols;
    // Per active expert: its rows' inputs `[n, hidden]`, gate and up
    // outputs `[n, ff]`, down output `[n, hidden]`.
    let mut active = Vec::new();
    for (e, members) in by_expert.iter().enumerate() {
        if members.is_empty() {
            continue;
        }
        let gate = w.gate.expert(e, "moe gate")?;
        let up = w.up.expert(e, "moe up")?;
        let down = w.down.expert(e, "moe down")?;
        check_expert(&gate, &up, &down, hidden)?;
        let (n, ff) = (members.len(), gate.rows);
        let mut xe = Vec::with_capacity(n * hidden);
        for &(r, _) in members {
            xe.extend_from_slice(x.row(r));
        }
        active.push(Expert {
            members,
            gate,
            up,
            down,
            xe,
            g: vec![0.0f32; n * ff],
            u: vec![0.0f32; n * ff],
            d: vec![0.0f32; n * hidden],
        });
    }
    // Every gate and up product in one fork-join, then every down product
    // (the same per-output arithmetic as separate `matmul` calls).
    let mut jobs = Vec::with_capacity(2 * active.len());
    for a in active.iter_mut() {
        let m = a.members.len();
        jobs.push(cpu::MatmulJob { w: a.gate, x: &a.xe, m, y: &mut a.g });
        jobs.push(cpu::MatmulJob { w: a.up, x: &a.xe, m, y: &mut a.u });
    }
    cpu::matmul_many(&mut jobs)?;
    drop(jobs);
    let mut jobs = Vec::with_capacity(active.len());
    for a in active.iter_mut() {
        for (gv, &uv) in a.g.iter_mut().zip(&a.u) {
            *gv = silu(*gv) * uv;
        }
        let m = a.members.len();
        jobs.push(cpu::MatmulJob { w: a.down, x: &a.g, m, y: &mut a.d });
    }
    cpu::matmul_many(&mut jobs)?;
    drop(jobs);
    // Un-weighted expert outputs, `[rows, top_k, hidden]`.
    let mut outs = vec![0.0f32; x.rows * spec.top_k * hidden];
    for a in &active {
        for (i, &(r, rank)) in a.members.iter().enumerate() {
            let at = (r * spec.top_k + rank) * hidden;
            outs[at..at + hidden].copy_from_slice(&a.d[i * hidden..(i + 1) * hidden]);
        }
    }
    for (r, top) in routes.iter().enumerate() {
        let res = &mut residual.data[r * hidden..(r + 1) * hidden];
        let mut acc = vec![0.0f32; hidden];
        for (rank, &(_, wt)) in top.iter().enumerate() {
            let o = &outs[(r * spec.top_k + rank) * hidden..][..hidden];
            for (a, &v) in acc.iter_mut().zip(o) {
                *a += wt * v;
            }
        }
        for (dst, a) in res.iter_mut().zip(&acc) {
            *dst += a;
        }
    }
    Ok(())
}

/// One expert with rows routed to it this step.
struct Expert<'a> {
    /// `(row, rank)` of each routed row.
    members: &'a [(usize, usize)],
    gate: QMatRef<'a>,
    up: QMatRef<'a>,
    down: QMatRef<'a>,
    xe: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    d: Vec<f32>,
}

fn check_expert(gate: &QMatRef<'_>, up: &QMatRef<'_>, down: &QMatRef<'_>, hidden: usize) -> Result<()> {
    if gate.cols != hidden || up.cols != hidden || up.rows != gate.rows || down.cols != gate.rows || down.rows != hidden {
        return Err(BackendError::Shape {
            op: "moe",
            detail: format!(
                "expert shapes gate [{}, {}], up [{}, {}], down [{}, {}] for hidden {hidden}",
                gate.rows, gate.cols, up.rows, up.cols, down.rows, down.cols
            ),
        });
    }
    Ok(())
}
