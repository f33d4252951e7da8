//! Rotary position embedding, and the fused split / QK-norm / RoPE / KV
//! write of `qk_rope_store`.

use std::cell::RefCell;

use super::norm;
use super::par::{par_chunks, SyncPtr};
use super::{check_cols, CpuKv, CpuWeight, Mat};
use crate::attn_meta::AttnMeta;
use crate::backend::{BackendError, HeadSpec, Result, Rope, RopeStyle};

/// Rows per task of the parallel part of `qk_rope_store`.
const ROWS_PER_TASK: usize = 4;

/// Pairs whose angles are kept on the stack (larger heads compute the
/// angles per head instead; the values are the same).
const MAX_PAIRS: usize = 128;

thread_local! {
    /// `[rows, kv_dim]`: the rotated keys of one call, before the cache write.
    static KEYS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `(sin, cos)` of every rotated pair at position `pos` (`out` is `[pairs]`).
fn angles(pos: usize, rope: &Rope, out: &mut [(f32, f32)]) {
    let p = pos as f32;
    for (o, &f) in out.iter_mut().zip(&rope.inv_freq) {
        *o = (p * f).sin_cos();
    }
}

/// Rotate `head` by precomputed `angles` (one per pair).
fn rotate(head: &mut [f32], angles: &[(f32, f32)], style: RopeStyle) {
    let half = angles.len();
    for (i, &(sin, cos)) in angles.iter().enumerate() {
        let (a, b) = match style {
            RopeStyle::NeoX => (i, i + half),
            RopeStyle::GptJ => (2 * i, 2 * i + 1),
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos - x1 * sin;
        head[b] = x0 * sin + x1 * cos;
    }
}

/// Rotate `head` (`[head_dim]`) to position `pos`.
pub fn apply(head: &mut [f32], pos: usize, rope: &Rope) {
    let mut buf = [(0.0f32, 0.0f32); MAX_PAIRS];
    if rope.inv_freq.len() <= MAX_PAIRS {
        let a = &mut buf[..rope.inv_freq.len()];
        angles(pos, rope, a);
        rotate(head, a, rope.style);
    } else {
        let mut a = vec![(0.0f32, 0.0f32); rope.inv_freq.len()];
        angles(pos, rope, &mut a);
        rotate(head, &a, rope.style);
    }
}

/// QK-norm (optional) and RoPE of every head of one row, in place:
/// `q` is `[n_heads * hd]`, `k` `[n_kv_heads * hd]`.
fn row(q: &mut [f32], k: &mut [f32], norms: (Option<&[f32]>, Option<&[f32]>), h: &HeadSpec, pos: usize, rope: &Rope) {
    let ((qn, kn), hd, eps) = (norms, h.head_dim, h.norm_eps);
    let mut buf = [(0.0f32, 0.0f32); MAX_PAIRS];
    let pairs = rope.inv_freq.len();
    let shared = pairs <= MAX_PAIRS;
    if shared {
        angles(pos, rope, &mut buf[..pairs]);
    }
    for (head, w) in q.chunks_exact_mut(hd).map(|h| (h, qn)).chain(k.chunks_exact_mut(hd).map(|h| (h, kn))) {
        if let Some(w) = w {
            norm::rms_norm_in_place(head, w, eps);
        }
        if shared {
            rotate(head, &buf[..pairs], rope.style);
        } else {
            apply(head, pos, rope);
        }
    }
}

/// [`crate::Backend::qk_rope_store`] on the CPU: every check first (no
/// partial write on error), then the rows' norms and rotations in
/// parallel, then the cache writes.
#[allow(clippy::too_many_arguments)]
pub(super) fn qk_rope_store(
    qkv: &Mat,
    q: &mut Mat,
    q_norm: Option<&CpuWeight>,
    k_norm: Option<&CpuWeight>,
    heads: &HeadSpec,
    rope: &Rope,
    meta: &AttnMeta,
    kv: &mut CpuKv,
) -> Result<()> {
    let hd = heads.head_dim;
    let (qd, kvd) = (heads.n_heads * hd, heads.n_kv_heads * hd);
    check_cols("qk_rope_store qkv", qkv, qd + 2 * kvd)?;
    if qkv.rows != meta.n_rows() {
        return Err(BackendError::Shape { op: "qk_rope_store", detail: format!("{} rows vs plan of {}", qkv.rows, meta.n_rows()) });
    }
    if kv.spec.n_kv_heads != heads.n_kv_heads || kv.spec.head_dim != hd || kv.spec.block_size != meta.block_size {
        return Err(BackendError::Shape { op: "qk_rope_store", detail: format!("KV pool {:?} vs heads {heads:?}", kv.spec) });
    }
    if 2 * rope.inv_freq.len() > hd {
        return Err(BackendError::Shape { op: "qk_rope_store", detail: format!("{} rotary pairs for head size {hd}", rope.inv_freq.len()) });
    }
    let qn = q_norm.map(|w| w.vector(hd, "q_norm")).transpose()?;
    let kn = k_norm.map(|w| w.vector(hd, "k_norm")).transpose()?;
    let capacity = kv.spec.n_blocks * kv.spec.block_size;
    if kv.k.len() < capacity * kvd || kv.v.len() < capacity * kvd {
        return Err(BackendError::Invalid { op: "qk_rope_store", detail: format!("KV pools smaller than {capacity} slots of {kvd}") });
    }
    if let Some(row) = meta.rows.iter().find(|r| r.slot as usize >= capacity) {
        return Err(BackendError::Invalid { op: "qk_rope_store", detail: format!("slot {} outside the pool of {capacity}", row.slot) });
    }
    let rows = qkv.rows;
    q.reshape(rows, qd);
    KEYS.with(|cell| {
        let mut fresh = Vec::new();
        let mut guard = cell.try_borrow_mut();
        let keys: &mut Vec<f32> = match guard.as_mut() {
            Ok(k) => k,
            Err(_) => &mut fresh,
        };
        keys.resize(rows * kvd, 0.0);
        let (qp, kp) = (SyncPtr::new(&mut q.data), SyncPtr::new(keys));
        par_chunks(rows, ROWS_PER_TASK, |r0, r1| {
            for r in r0..r1 {
                let src = qkv.row(r);
                // SAFETY: row r of q and of keys belongs to this task only.
                let (qr, kr) = unsafe { (qp.slice(r * qd, qd), kp.slice(r * kvd, kvd)) };
                qr.copy_from_slice(&src[..qd]);
                kr.copy_from_slice(&src[qd..qd + kvd]);
                row(qr, kr, (qn, kn), heads, meta.rows[r].pos as usize, rope);
            }
        });
        // Serial: two rows of a (malformed) plan may share a slot.
        for (r, m) in meta.rows.iter().enumerate() {
            let at = m.slot as usize * kvd;
            kv.k.write(at, &keys[r * kvd..(r + 1) * kvd]);
            kv.v.write(at, &qkv.row(r)[qd + kvd..]);
        }
    });
    Ok(())
}
