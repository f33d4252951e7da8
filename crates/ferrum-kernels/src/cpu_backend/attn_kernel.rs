//! The attention of query rows for the query heads of one KV head (a GQA
//! group), against K/V head vectors gathered from the paged cache: the
//! canonical arithmetic, its scalar reference, and the dispatch to the AVX2
//! kernel (`attn_avx2`).
//!
//! # The canonical arithmetic (identical bits on every path)
//!
//! For query head `h` (`[hd]`) and the `L` attended positions `j` (K/V head
//! vectors `k_j`, `v_j`):
//!
//! ```text
//! s_j   = reduce8(lanes) * scale     lane l = fma chain of q[d]·k_j[d], d ≡ l (mod 8), d ascending
//! (positions L .. L8, L8 = L rounded up to 8, hold s = -inf)
//! max   = vmax-tree of lane maxima   lane l = vmax(s_j, lane) over j ≡ l (mod 8), j ascending, from -inf
//! e_j   = exp8(s_j - max)            (the polynomial below; 0 for the -inf padding)
//! sum   = reduce8(lanes)             lane l = Σ e_j over j ≡ l (mod 8), j ascending, from +0
//! out_d = acc_d * (1 / sum)          acc_d = fma chain of e_j·v_j[d], j ascending, from +0
//! ```
//!
//! with `reduce8(l) = ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))` and
//! `vmax(a, b) = if a > b { a } else { b }` (the semantics of `maxps`). Each
//! output depends only on its own row's query and positions, so results do
//! not depend on the batch, the chunking of a prefill, the split into tasks,
//! which rows share a task, or the kernel (the AVX2 path needs `hd % 8 == 0`; other sizes run the
//! scalar path, which is the reference).

use super::vexp::{exp_canon, vmax};
use crate::cpu::Kernel;

/// An element of the KV cache: f32 or f16 (converted exactly to f32).
pub(super) trait KvElem: Copy + Send + Sync {
    fn to_f32(self) -> f32;
    /// 8 consecutive elements at `p` as f32.
    ///
    /// # Safety
    /// AVX2 and F16C are available; `p .. p + 8` is readable.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl KvElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
}

impl KvElem for half::f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const half::f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
}

/// The K/V head vectors of a task's positions: position `j`'s K is
/// `k[offs[j] .. offs[j] + hd]`, its V the same range of `v`.
#[derive(Clone, Copy)]
pub(super) struct Keys<'a, T> {
    pub k: &'a [T],
    pub v: &'a [T],
    pub offs: &'a [usize],
    pub hd: usize,
    pub scale: f32,
}

impl<T> Keys<'_, T> {
    /// Every offset leaves room for a whole head vector in both pools.
    pub fn in_bounds(&self) -> bool {
        let n = self.k.len().min(self.v.len());
        self.offs.iter().all(|&o| o.checked_add(self.hd).is_some_and(|e| e <= n))
    }
}

/// Reusable buffers of [`attend_rows`].
#[derive(Default)]
pub(super) struct Scratch {
    /// Per row `[g, L8]`: scores, then softmax weights.
    scores: Vec<f32>,
    /// `[rows, g]`: 1 / sum of each row and head's weights.
    inv: Vec<f32>,
}

/// Attention of a task's rows over `keys` (`keys.in_bounds()`): row `i`'s
/// `g` query heads are `q[i]` (`q` is `[rows, g * hd]`), it attends to
/// positions `keys.offs[a .. a + l]` for `(a, l) = spans[i]`, and its result
/// goes to `out[i]` (`[rows, g * hd]`). Each row's arithmetic is the
/// canonical one; rows only share loads.
pub(super) fn attend_rows<T: KvElem>(keys: &Keys<'_, T>, q: &[f32], spans: &[(usize, usize)], out: &mut [f32], sc: &mut Scratch, kernel: Kernel) {
    let (hd, rows) = (keys.hd, spans.len());
    if hd == 0 || rows == 0 {
        out.fill(0.0);
        return;
    }
    let gh = q.len() / rows;
    let g = gh / hd;
    let valid = |&(a, l): &(usize, usize)| l > 0 && a.checked_add(l).is_some_and(|e| e <= keys.offs.len());
    if out.len() != q.len() || g * hd != gh || gh * rows != q.len() || !spans.iter().all(valid) {
        // Unreachable from `attention::run`; never index out of bounds.
        out.fill(f32::NAN);
        return;
    }
    let total: usize = spans.iter().map(|&(_, l)| g * l.div_ceil(8) * 8).sum();
    if sc.scores.len() < total {
        sc.scores.resize(total, 0.0);
    }
    if sc.inv.len() < rows * g {
        sc.inv.resize(rows * g, 0.0);
    }
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx2 && hd % 8 == 0 {
        // SAFETY: AVX2/FMA/F16C were detected (`Kernel::Avx2` is only used
        // when available); offsets are in bounds (caller) and spans inside
        // them (checked); the buffers are sized above.
        unsafe { super::attn_avx2::attend_rows(keys, q, spans, out, &mut sc.scores[..total], &mut sc.inv[..rows * g], g) };
        return;
    }
    let _ = kernel;
    for (i, &(a, l)) in spans.iter().enumerate() {
        let k = Keys { offs: &keys.offs[a..a + l], ..*keys };
        let l8 = l.div_ceil(8) * 8;
        attend_scalar(&k, &q[i * gh..(i + 1) * gh], &mut out[i * gh..(i + 1) * gh], &mut sc.scores[..g * l8], g);
    }
}

#[inline(always)]
pub(super) fn reduce8(l: &[f32; 8]) -> f32 {
    ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
}

/// The `vmax` tree of 8 lanes, in `reduce8`'s pairing.
#[inline(always)]
pub(super) fn max8(l: &[f32; 8]) -> f32 {
    vmax(vmax(vmax(l[0], l[1]), vmax(l[2], l[3])), vmax(vmax(l[4], l[5]), vmax(l[6], l[7])))
}

/// The canonical arithmetic in plain Rust (the reference).
fn attend_scalar<T: KvElem>(keys: &Keys<'_, T>, q: &[f32], out: &mut [f32], scores: &mut [f32], g: usize) {
    let (hd, l) = (keys.hd, keys.offs.len());
    let l8 = scores.len() / g;
    for h in 0..g {
        let qh = &q[h * hd..(h + 1) * hd];
        let s = &mut scores[h * l8..(h + 1) * l8];
        for (sj, &o) in s.iter_mut().zip(keys.offs) {
            let kj = &keys.k[o..o + hd];
            let mut lanes = [0.0f32; 8];
            for (d, (&a, &b)) in qh.iter().zip(kj).enumerate() {
                lanes[d % 8] = a.mul_add(b.to_f32(), lanes[d % 8]);
            }
            *sj = reduce8(&lanes) * keys.scale;
        }
        s[l..].fill(f32::NEG_INFINITY);
        let mut lanes = [f32::NEG_INFINITY; 8];
        for (j, &v) in s.iter().enumerate() {
            lanes[j % 8] = vmax(v, lanes[j % 8]);
        }
        let max = max8(&lanes);
        let mut lanes = [0.0f32; 8];
        for (j, v) in s.iter_mut().enumerate() {
            *v = exp_canon(*v - max);
            lanes[j % 8] += *v;
        }
        let inv = 1.0 / reduce8(&lanes);
        let oh = &mut out[h * hd..(h + 1) * hd];
        oh.fill(0.0);
        for (&e, &o) in s[..l].iter().zip(keys.offs) {
            for (a, &b) in oh.iter_mut().zip(&keys.v[o..o + hd]) {
                *a = e.mul_add(b.to_f32(), *a);
            }
        }
        for a in oh.iter_mut() {
            *a *= inv;
        }
    }
}
