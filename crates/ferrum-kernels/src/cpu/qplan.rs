//! Quantized-weight matmul plans: given the activations quantized once per
//! call (see `act_set`), per task (a range of weight rows) either the direct
//! kernels (small m) or weight panels unpacked for the tiled kernel (large
//! m, and the types without direct kernels). The scalar kernel always uses
//! panels.

use std::cell::RefCell;

use super::act_quant::ActBlock;
use super::dot::{self, fill_side, Panel, QuantKind, Side};
use super::matmul::Out;
use super::{Kernel, QMatRef, Strategy};
#[cfg(target_arch = "x86_64")]
use ferrum_core::GgmlType;

/// A prepared quantized matmul: weights, quantized activations `[m, nb]`,
/// and (tiled AVX2 path) the per-row-group side data.
pub(super) struct QPlan<'a, const G: usize, const S: usize> {
    w: QMatRef<'a>,
    kind: QuantKind,
    m: usize,
    kernel: Kernel,
    act: &'a [ActBlock<G, S>],
    side: Vec<Side>,
    #[cfg(target_arch = "x86_64")]
    direct: Option<Direct>,
}

impl<'a, const G: usize, const S: usize> QPlan<'a, G, S> {
    /// Choose the kernels for `act` (`[m, w.cols / G]`, the quantized
    /// activations, possibly shared with other products).
    pub fn new(
        w: QMatRef<'a>,
        kind: QuantKind,
        act: &'a [ActBlock<G, S>],
        m: usize,
        kernel: Kernel,
        strategy: Strategy,
    ) -> Self {
        let nb = w.cols / G;
        #[cfg(target_arch = "x86_64")]
        let direct = if kernel == Kernel::Avx2 {
            direct_kernel(w.ty).filter(|d| match strategy {
                Strategy::Auto => m < d.tiled_from,
                Strategy::Direct => true,
                Strategy::Tiled => false,
            })
        } else {
            None
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = strategy;
        let mut plan = QPlan {
            w,
            kind,
            m,
            kernel,
            act,
            side: Vec::new(),
            #[cfg(target_arch = "x86_64")]
            direct,
        };
        if kernel == Kernel::Avx2 && !plan.uses_direct() && nb > 0 {
            // Activation rows go in groups of 4, then singly.
            let m4 = m / 4 * 4;
            let ngroups = m4 / 4 + (m - m4);
            plan.side = SIDE_SPARE
                .with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
                .unwrap_or_default();
            plan.side.clear();
            plan.side.resize(ngroups * nb, Side::default());
            for (gi, sd) in plan.side.chunks_exact_mut(nb).enumerate() {
                let (i0, len) = if gi < m4 / 4 {
                    (4 * gi, 4)
                } else {
                    (m4 + gi - m4 / 4, 1)
                };
                let rows: [&[ActBlock<G, S>]; 4] =
                    std::array::from_fn(|r| &act[(i0 + r.min(len - 1)) * nb..][..nb]);
                fill_side(&rows[..len], kind.side_mul, sd);
            }
        }
        plan
    }

    fn uses_direct(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self.direct.is_some();
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Weight rows per task: direct kernels stream, tiles need a panel.
    pub fn rows_per_task(&self, per_thread: usize) -> (usize, usize) {
        if self.uses_direct() {
            (4, per_thread.max(4))
        } else {
            (2, per_thread.clamp(2, 32))
        }
    }

    /// Every activation row's outputs for weight rows `r0..r1`.
    pub fn run(&self, r0: usize, r1: usize, out: Out) {
        #[cfg(target_arch = "x86_64")]
        if let Some(d) = &self.direct {
            self.run_direct(d, r0, r1, out);
            return;
        }
        let nb = self.w.cols / G;
        let rb = nb * self.kind.block_bytes;
        with_panel(|p| {
            p.fill(
                &self.kind,
                &self.w.data[r0 * rb..r1 * rb],
                r1 - r0,
                self.w.cols,
            );
            self.panel_rows(p, r0, out);
        })
    }

    #[cfg(target_arch = "x86_64")]
    fn run_direct(&self, d: &Direct, r0: usize, r1: usize, out: Out) {
        let (w, m) = (&self.w, self.m);
        let nb = w.cols / G;
        let rb = nb * self.kind.block_bytes;
        let ap = |i: usize| self.act[i * nb..].as_ptr() as *const u8;
        // Group g takes row g of each quarter of the task, so each of the 4
        // rows is one long sequential stream for the prefetchers (4
        // consecutive short rows would restart 4 streams every few blocks).
        if m == 1 {
            if let Some(f8) = d.f1x8 {
                self.run_direct8(f8, r0, r1, out);
                return;
            }
        }
        let stride = (r1 - r0).div_ceil(4);
        for gi in 0..stride {
            let first = r0 + gi;
            let rows = [
                first,
                first + stride,
                first + 2 * stride,
                first + 3 * stride,
            ];
            // SAFETY: rows past the task repeat `first` (< r1), so every
            // pointer is in bounds.
            let ws =
                rows.map(|j| unsafe { w.data.as_ptr().add(if j < r1 { j } else { first } * rb) });
            let emit = |i: usize, v: &[f32; 4]| {
                for (&j, &vk) in rows.iter().zip(v) {
                    if j < r1 {
                        // SAFETY: output (i, j) belongs to this task.
                        unsafe { out.set(i, j, vk) };
                    }
                }
            };
            let mut i = 0;
            // SAFETY (calls): AVX2 detected; every activation row pointer
            // has nb blocks.
            while i < m {
                if m - i >= 4 {
                    let v = unsafe { (d.f4)(ws, [ap(i), ap(i + 1), ap(i + 2), ap(i + 3)], nb) };
                    v.iter().enumerate().for_each(|(k, v)| emit(i + k, v));
                    i += 4;
                } else if m - i >= 2 {
                    let v = unsafe { (d.f2)(ws, [ap(i), ap(i + 1)], nb) };
                    v.iter().enumerate().for_each(|(k, v)| emit(i + k, v));
                    i += 2;
                } else {
                    emit(i, &unsafe { (d.f1)(ws, [ap(i)], nb) }[0]);
                    i += 1;
                }
            }
        }
    }

    /// One activation row, weight rows `r0..r1` in groups of 8 (row g of
    /// each eighth of the range: 8 sequential streams, as in `run_direct`).
    #[cfg(target_arch = "x86_64")]
    fn run_direct8(&self, f8: Direct8Fn, r0: usize, r1: usize, out: Out) {
        let w = &self.w;
        let rb = w.cols / G * self.kind.block_bytes;
        let a = self.act.as_ptr() as *const u8;
        let stride = (r1 - r0).div_ceil(8);
        for first in r0..r0 + stride {
            let rows: [usize; 8] = std::array::from_fn(|k| first + k * stride);
            // SAFETY: rows past the task repeat `first` (< r1), so every
            // pointer is in bounds.
            let ws =
                rows.map(|j| unsafe { w.data.as_ptr().add(if j < r1 { j } else { first } * rb) });
            // SAFETY: AVX2 detected; the activation row has cols / G blocks.
            let v = unsafe { (f8.0)(ws, a, w.cols / G) };
            for (&lane_row, &vk) in f8.1.iter().zip(&v) {
                let j = rows[lane_row];
                if j < r1 {
                    // SAFETY: output (0, j) belongs to this task.
                    unsafe { out.set(0, j, vk) };
                }
            }
        }
    }

    /// All outputs of the panel's rows (weight rows `r0 ..`), for every
    /// activation row.
    fn panel_rows(&self, p: &Panel, r0: usize, out: Out) {
        let (m, nb, kind) = (self.m, p.groups, &self.kind);
        let (act, side) = (self.act, &self.side[..]);
        #[cfg(target_arch = "x86_64")]
        if self.kernel == Kernel::Avx2 {
            // SAFETY: AVX2 detected; the panel and act rows are sized by nb.
            unsafe {
                match (kind.signed, kind.has_min) {
                    (false, false) => tiled_avx2::<G, S, false, false>(p, act, side, m, r0, out),
                    (false, true) => tiled_avx2::<G, S, false, true>(p, act, side, m, r0, out),
                    (true, false) => tiled_avx2::<G, S, true, false>(p, act, side, m, r0, out),
                    (true, true) => tiled_avx2::<G, S, true, true>(p, act, side, m, r0, out),
                }
            }
            return;
        }
        for j in 0..p.rows {
            for i in 0..m {
                let v = dot::dot_panel_scalar(
                    p,
                    j,
                    &act[i * nb..(i + 1) * nb],
                    kind.signed,
                    kind.has_min,
                );
                // SAFETY: (i, r0 + j) belongs to this task only.
                unsafe { out.set(i, r0 + j, v) };
            }
        }
    }
}

thread_local! {
    static PANEL: RefCell<Panel> = RefCell::new(Panel::default());
    /// Side buffers of finished plans, for the next call on this thread.
    static SIDE_SPARE: RefCell<Vec<Vec<Side>>> = const { RefCell::new(Vec::new()) };
}

impl<const G: usize, const S: usize> Drop for QPlan<'_, G, S> {
    fn drop(&mut self) {
        if self.side.capacity() > 0 {
            let side = std::mem::take(&mut self.side);
            SIDE_SPARE.with(|s| {
                if let Ok(mut s) = s.try_borrow_mut() {
                    if s.len() < 4 {
                        s.push(side);
                    }
                }
            });
        }
    }
}

/// Run `f` with this thread's reusable panel (a fresh one if it is in use).
fn with_panel<R>(f: impl FnOnce(&mut Panel) -> R) -> R {
    PANEL.with(|cell| {
        if let Ok(mut p) = cell.try_borrow_mut() {
            return f(&mut p);
        }
        f(&mut Panel::default())
    })
}

/// Direct AVX2 kernels for one weight type: 4 weight rows (pointers; repeat
/// one to fill) times 1, 2 or 4 activation rows of `nb` blocks, returning
/// `out[i][r]`; each unpacks a weight block once for all its activation rows.
#[cfg(target_arch = "x86_64")]
type DirectFn<const MR: usize> =
    unsafe fn([*const u8; 4], [*const u8; MR], usize) -> [[f32; 4]; MR];

/// A direct kernel for one activation row and 8 weight rows (`lanes[k]`:
/// the row of result lane k).
#[cfg(target_arch = "x86_64")]
type Direct8Fn = (
    unsafe fn([*const u8; 8], *const u8, usize) -> [f32; 8],
    [usize; 8],
);

#[cfg(target_arch = "x86_64")]
struct Direct {
    /// m = 1 with 8 weight rows per call, where it exists.
    f1x8: Option<Direct8Fn>,
    f1: DirectFn<1>,
    f2: DirectFn<2>,
    f4: DirectFn<4>,
    /// From this many activation rows on, `Strategy::Auto` prefers unpacking
    /// weight panels for the tiled kernel: direct cost per block vs. tiled
    /// cost plus the unpacking amortized over m, from `matbench --micro`.
    tiled_from: usize,
}

/// The direct kernels for `ty`, if it has them. Each kernel walks its 4
/// weight rows block by block; the rows are spread over the task so that
/// they form 4 long sequential streams (more memory requests in flight).
#[cfg(target_arch = "x86_64")]
fn direct_kernel(ty: GgmlType) -> Option<Direct> {
    use super::dot::{kquants as k, legacy as l};
    macro_rules! direct {
        ($f:ident, $($c:expr),* ; $from:expr) => {
            Direct { f1x8: None, f1: $f::<1, $($c),*>, f2: $f::<2, $($c),*>, f4: $f::<4, $($c),*>, tiled_from: $from }
        };
        ($f:ident ; $from:expr) => {
            Direct { f1x8: None, f1: $f::<1>, f2: $f::<2>, f4: $f::<4>, tiled_from: $from }
        };
    }
    use k::{dot_k45, dot_q6_k};
    use l::{dot_nib, dot_nib8, dot_q8_0, dot_q8_0x8};
    Some(match ty {
        GgmlType::Q4K => direct!(dot_k45, false; 48),
        GgmlType::Q5K => direct!(dot_k45, true; 32),
        GgmlType::Q6K => direct!(dot_q6_k; 24),
        GgmlType::Q8_0 => Direct {
            f1x8: Some((dot_q8_0x8, [0, 1, 2, 3, 4, 5, 6, 7])),
            ..direct!(dot_q8_0; 64)
        },
        GgmlType::Q5_0 => Direct {
            f1x8: Some((dot_nib8::<true>, l::NIB8_LANE_ROW)),
            ..direct!(dot_nib, true; 64)
        },
        GgmlType::Q4_0 => Direct {
            f1x8: Some((dot_nib8::<false>, l::NIB8_LANE_ROW)),
            ..direct!(dot_nib, false; 64)
        },
        _ => return None,
    })
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn tiled_avx2<const G: usize, const S: usize, const SIGNED: bool, const HAS_MIN: bool>(
    p: &Panel,
    act: &[ActBlock<G, S>],
    side: &[Side],
    m: usize,
    r0: usize,
    out: Out,
) {
    use super::dot::tile::tile;
    let (np, nb) = (p.rows, p.groups);
    let arow = |i: usize| &act[i * nb..(i + 1) * nb];
    let sgroup = |gi: usize| &side[gi * nb..(gi + 1) * nb];
    let m4 = m / 4 * 4;
    for i in (0..m4).step_by(4) {
        let acts = [arow(i), arow(i + 1), arow(i + 2), arow(i + 3)];
        let sd = sgroup(i / 4);
        for j in (0..np).step_by(2) {
            let n = (np - j).min(2);
            let mut o = [[0.0f32; 2]; 4];
            tile::<G, S, 4, SIGNED, HAS_MIN>(p, j, n, acts, sd, &mut o);
            for (r, orow) in o.iter().enumerate() {
                for (c, &v) in orow.iter().enumerate().take(n) {
                    out.set(i + r, r0 + j + c, v);
                }
            }
        }
    }
    for i in m4..m {
        let sd = sgroup(m4 / 4 + (i - m4));
        for j in (0..np).step_by(2) {
            let n = (np - j).min(2);
            let mut o = [[0.0f32; 2]; 1];
            tile::<G, S, 1, SIGNED, HAS_MIN>(p, j, n, [arow(i)], sd, &mut o);
            for (c, &v) in o[0].iter().enumerate().take(n) {
                out.set(i, r0 + j + c, v);
            }
        }
    }
}
