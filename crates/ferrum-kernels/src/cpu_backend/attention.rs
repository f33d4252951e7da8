//! Causal paged attention on the CPU.
//!
//! Work is split into tasks of (sequence, KV head, chunk of that sequence's
//! rows); a task runs every query head of its KV head's group for each of
//! its rows, so each K/V row is read once per group, not once per head. The
//! arithmetic of a row (see `attn_kernel`) depends only on that row, so the
//! split — and therefore the batch and the chunking of a prefill — changes
//! no bit of the result.

use std::cell::RefCell;

use super::attn_kernel::{self, attend_rows, KvElem, Keys};
use super::kv_store::KvView;
use super::par::SyncPtr;
use super::{CpuKv, Mat};
use crate::attn_meta::AttnMeta;
use crate::backend::{BackendError, HeadSpec, Result};
use crate::cpu::{par_for, Kernel};

/// Rows of one sequence per task: small enough to spread a single long
/// prefill over the threads, large enough that a task's rows reuse the
/// K/V they share while it is in cache.
const ROWS_PER_TASK: usize = 8;

/// Per-thread scratch reused across tasks and calls.
#[derive(Default)]
struct Scratch {
    /// `[positions of the task]`: element offset of each position's K/V head vector.
    offs: Vec<usize>,
    /// Per row: (first index into `offs`, number of positions).
    spans: Vec<(usize, usize)>,
    /// `[rows, group * head_dim]`: the task's queries, then its results.
    q: Vec<f32>,
    out: Vec<f32>,
    kernel: attn_kernel::Scratch,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// One task: rows `r0..r1` (all of sequence `seq`) against KV head `kvh`.
#[derive(Clone, Copy)]
struct Task {
    seq: usize,
    kvh: usize,
    r0: usize,
    r1: usize,
}

/// `out = attention(q)` for every row of `meta`; `q` and `out` are
/// `[rows, n_heads * head_dim]` (`out` already shaped).
pub fn run(q: &Mat, h: &HeadSpec, meta: &AttnMeta, kv: &CpuKv, out: &mut Mat, kernel: Kernel) -> Result<()> {
    validate(q, h, meta, kv)?;
    match (kv.k.view(), kv.v.view()) {
        (KvView::F32(k), KvView::F32(v)) => run_typed(q, h, meta, k, v, out, kernel),
        (KvView::F16(k), KvView::F16(v)) => run_typed(q, h, meta, k, v, out, kernel),
        _ => return Err(BackendError::Invalid { op: "attention", detail: "K and V pools of different types".into() }),
    }
    Ok(())
}

/// Everything the kernels index is inside the pools: rows match the plan,
/// each row's sequence exists, its positions are covered by the block
/// table, and every block id is inside this pool.
fn validate(q: &Mat, h: &HeadSpec, meta: &AttnMeta, kv: &CpuKv) -> Result<()> {
    let invalid = |detail: String| BackendError::Invalid { op: "attention", detail };
    if q.rows != meta.n_rows() {
        return Err(BackendError::Shape { op: "attention", detail: format!("{} rows vs plan of {}", q.rows, meta.n_rows()) });
    }
    if h.window == Some(0) {
        return Err(invalid("a sliding window of 0 positions".into()));
    }
    let s = &kv.spec;
    if s.n_kv_heads != h.n_kv_heads || s.head_dim != h.head_dim || s.block_size != meta.block_size {
        return Err(BackendError::Shape { op: "attention", detail: format!("KV pool {s:?} vs heads {h:?}, block size {}", meta.block_size) });
    }
    let need = s.n_blocks * s.block_size * s.n_kv_heads * s.head_dim;
    if kv.k.len() < need || kv.v.len() < need {
        return Err(invalid(format!("KV pools hold {} / {} values, {need} expected", kv.k.len(), kv.v.len())));
    }
    for (si, seq) in meta.seqs.iter().enumerate() {
        if let Some(&b) = seq.block_table.iter().find(|&&b| b as usize >= s.n_blocks) {
            return Err(invalid(format!("sequence {si}: block id {b} outside the pool of {}", s.n_blocks)));
        }
    }
    for (r, row) in meta.rows.iter().enumerate() {
        let seq = meta.seqs.get(row.seq as usize).ok_or_else(|| invalid(format!("row {r}: sequence {} of {}", row.seq, meta.seqs.len())))?;
        if row.pos as usize >= seq.block_table.len().saturating_mul(meta.block_size) {
            return Err(invalid(format!("row {r}: position {} beyond the {} blocks of its table", row.pos, seq.block_table.len())));
        }
    }
    Ok(())
}

/// First position row `pos` attends to.
fn first_pos(pos: usize, window: Option<usize>) -> usize {
    match window {
        Some(w) if pos + 1 > w => pos + 1 - w,
        _ => 0,
    }
}

fn run_typed<T: KvElem>(q: &Mat, h: &HeadSpec, meta: &AttnMeta, k: &[T], v: &[T], out: &mut Mat, kernel: Kernel) {
    let hd = h.head_dim;
    let group = h.n_heads / h.n_kv_heads;
    let kv_width = h.n_kv_heads * hd;
    // Runs of consecutive rows of one sequence, cut into chunks; the
    // latest (longest) rows first, so the costliest tasks start early.
    let mut tasks = Vec::new();
    let mut r = 0;
    while r < meta.rows.len() {
        let seq = meta.rows[r].seq as usize;
        let mut end = r + 1;
        while end < meta.rows.len() && meta.rows[end].seq as usize == seq && end - r < ROWS_PER_TASK {
            end += 1;
        }
        for kvh in 0..h.n_kv_heads {
            tasks.push(Task { seq, kvh, r0: r, r1: end });
        }
        r = end;
    }
    tasks.reverse();
    let out_ptr = SyncPtr::new(&mut out.data);
    let qcols = q.cols;
    par_for(tasks.len(), |t| {
        let Task { seq, kvh, r0, r1 } = tasks[t];
        let rows = &meta.rows[r0..r1];
        let lo = rows.iter().map(|x| first_pos(x.pos as usize, h.window)).min().unwrap_or(0);
        let hi = rows.iter().map(|x| x.pos as usize).max().unwrap_or(0);
        SCRATCH.with(|cell| {
            let mut fresh = Scratch::default();
            let mut guard = cell.try_borrow_mut();
            let sc: &mut Scratch = match guard.as_mut() {
                Ok(s) => s,
                Err(_) => &mut fresh,
            };
            let gh = group * hd;
            sc.offs.clear();
            sc.offs.extend((lo..=hi).map(|p| meta.slot_of(seq, p) * kv_width + kvh * hd));
            sc.spans.clear();
            sc.spans.extend(rows.iter().map(|x| {
                let (pos, first) = (x.pos as usize, first_pos(x.pos as usize, h.window));
                (first - lo, pos + 1 - first)
            }));
            // The group's queries `[rows, group * hd]`, gathered.
            sc.q.clear();
            for r in r0..r1 {
                sc.q.extend_from_slice(&q.data[r * qcols + kvh * gh..][..gh]);
            }
            sc.out.resize(sc.q.len(), 0.0);
            let keys = Keys { k, v, offs: &sc.offs, hd, scale: h.scale };
            // Always true after `validate`; checked once per task so that
            // the kernels never read out of bounds.
            if keys.in_bounds() {
                attend_rows(&keys, &sc.q, &sc.spans, &mut sc.out, &mut sc.kernel, kernel);
            } else {
                sc.out.fill(f32::NAN);
            }
            for (i, res) in sc.out.chunks_exact(gh).enumerate() {
                let r = r0 + i;
                // SAFETY: task (rows r0..r1, kvh) alone writes out[r, kvh's
                // group columns]; `out` is [rows, n_heads * hd].
                let og = unsafe { out_ptr.slice(r * qcols + kvh * gh, gh) };
                og.copy_from_slice(res);
            }
        });
    });
}
