//! Causal paged attention on the CPU: one task per (row, head), each with a
//! fixed summation order (so results do not depend on the batch).

use super::{CpuKv, Mat};
use crate::attn_meta::AttnMeta;
use crate::backend::HeadSpec;
use crate::cpu::par_for;

/// A raw pointer that tasks of `par_for` share to write disjoint ranges.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: each task writes a distinct `[head_dim]` range of the output.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method (not a field access) so closures capture the whole `Sync` wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

pub fn run(q: &Mat, h: &HeadSpec, meta: &AttnMeta, kv: &CpuKv, out: &mut Mat) {
    let hd = h.head_dim;
    let group = h.n_heads / h.n_kv_heads;
    let kv_width = h.n_kv_heads * hd;
    let out_ptr = OutPtr(out.data.as_mut_ptr());
    let n_tasks = meta.n_rows() * h.n_heads;
    par_for(n_tasks, |task| {
        let (r, head) = (task / h.n_heads, task % h.n_heads);
        let row = meta.rows[r];
        let pos = row.pos as usize;
        let first = match h.window {
            Some(w) if pos + 1 > w => pos + 1 - w,
            _ => 0,
        };
        let kvh = head / group;
        let qv = &q.data[r * q.cols + head * hd..r * q.cols + (head + 1) * hd];
        let seq = row.seq as usize;
        let mut kbuf = vec![0.0f32; hd];
        let mut scores = Vec::with_capacity(pos + 1 - first);
        let mut max = f32::NEG_INFINITY;
        for p in first..=pos {
            let slot = meta.slot_of(seq, p);
            kv.k.read(slot * kv_width + kvh * hd, &mut kbuf);
            let s = dot(qv, &kbuf) * h.scale;
            max = max.max(s);
            scores.push(s);
        }
        let mut sum = 0.0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let mut acc = vec![0.0f32; hd];
        for (j, p) in (first..=pos).enumerate() {
            let slot = meta.slot_of(seq, p);
            kv.v.read(slot * kv_width + kvh * hd, &mut kbuf);
            let w = scores[j];
            for (a, &v) in acc.iter_mut().zip(&kbuf) {
                *a += w * v;
            }
        }
        let inv = 1.0 / sum;
        // SAFETY: task (r, head) owns out[r, head*hd .. (head+1)*hd].
        let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(r * h.n_heads * hd + head * hd), hd) };
        for (d, a) in dst.iter_mut().zip(&acc) {
            *d = a * inv;
        }
    });
}

/// Dot product with 8 independent partial sums (a fixed order, vectorisable).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}
