//! `y = x · Wᵀ` dispatch: validation, activation quantization, choice of the
//! direct or tiled kernel, and the split over the worker pool.
//!
//! Work is split over weight rows: a task owns a contiguous range of rows and
//! computes every activation row's output for them. Each output is computed
//! by exactly one task with the canonical arithmetic, so neither the split nor
//! the thread that runs a task changes any bit of the result.

use std::cell::RefCell;

use super::act_quant::{quantize_row, ActBlock};
use super::dot::{self, fill_side, float, Panel, QuantKind, Side};
use super::pool::par_for_limit;
use super::{Kernel, KernelError, MatmulOptions, QMatRef, Strategy};
use ferrum_core::GgmlType;

/// `y = x · Wᵀ`: `x` is `[m, w.cols]` row-major, `y` is `[m, w.rows]`.
pub fn matmul(w: &QMatRef<'_>, x: &[f32], m: usize, y: &mut [f32]) -> Result<(), KernelError> {
    matmul_with(w, x, m, y, &MatmulOptions::default())
}

/// [`matmul`] with explicit scheduling options (the results are identical).
pub fn matmul_with(
    w: &QMatRef<'_>,
    x: &[f32],
    m: usize,
    y: &mut [f32],
    opts: &MatmulOptions,
) -> Result<(), KernelError> {
    validate(w, x.len(), m, y.len())?;
    let kernel = opts.kernel.unwrap_or_else(Kernel::best);
    if !kernel.available() {
        return Err(KernelError::KernelUnavailable(kernel));
    }
    if m == 0 || w.rows == 0 {
        return Ok(());
    }
    let threads = if opts.max_threads == 0 { usize::MAX } else { opts.max_threads };
    let ctx = Ctx { w, m, kernel, threads, opts };
    match w.ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            dense(&ctx, x, y);
            Ok(())
        }
        ty => {
            let kind = dot::quant_kind(ty).ok_or(KernelError::UnsupportedType(ty))?;
            if kind.group == 32 {
                quant::<32, 2>(&ctx, &kind, x, y);
            } else {
                quant::<256, 16>(&ctx, &kind, x, y);
            }
            Ok(())
        }
    }
}

fn mul(what: &'static str, a: usize, b: usize) -> Result<usize, KernelError> {
    a.checked_mul(b).ok_or(KernelError::Overflow { what, a, b })
}

fn validate(w: &QMatRef<'_>, x_len: usize, m: usize, y_len: usize) -> Result<(), KernelError> {
    let ty = w.ty;
    if !super::supports(ty) {
        return Err(KernelError::UnsupportedType(ty));
    }
    let block = ty.block_size();
    if !w.cols.is_multiple_of(block) {
        return Err(KernelError::ColsNotBlockMultiple { ty, cols: w.cols, block });
    }
    let row_bytes = mul("weight row bytes", w.cols / block, ty.type_size())?;
    let expected = mul("weight bytes", w.rows, row_bytes)?;
    if w.data.len() != expected {
        return Err(KernelError::WeightBytes { ty, rows: w.rows, cols: w.cols, expected, got: w.data.len() });
    }
    let xe = mul("activations", m, w.cols)?;
    if x_len != xe {
        return Err(KernelError::Length { what: "x (activations)", got: x_len, m, n: w.cols, expected: xe });
    }
    let ye = mul("outputs", m, w.rows)?;
    if y_len != ye {
        return Err(KernelError::Length { what: "y (outputs)", got: y_len, m, n: w.rows, expected: ye });
    }
    Ok(())
}

struct Ctx<'a, 'b> {
    w: &'a QMatRef<'b>,
    m: usize,
    kernel: Kernel,
    threads: usize,
    opts: &'a MatmulOptions,
}

impl Ctx<'_, '_> {
    /// Weight rows per task: several tasks per thread for balance, rounded
    /// to `align`.
    fn rows_per_task(&self, align: usize, max: usize) -> usize {
        if self.opts.rows_per_task > 0 {
            return self.opts.rows_per_task;
        }
        let threads = self.threads.min(super::num_threads()).max(1);
        let per = self.w.rows.div_ceil(threads * 4).clamp(align, max.max(align));
        per.div_ceil(align) * align
    }

    /// Run `f(row_start, row_end)` over the weight rows in tasks.
    fn for_row_ranges(&self, per: usize, f: impl Fn(usize, usize) + Sync) {
        let rows = self.w.rows;
        let tasks = rows.div_ceil(per);
        par_for_limit(tasks, self.threads, &|t| f(t * per, ((t + 1) * per).min(rows)));
    }
}

/// A raw output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: tasks write disjoint elements of the buffer, which outlives them.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// # Safety
    /// `i` is in bounds and no other task writes element `i`.
    unsafe fn set(self, i: usize, v: f32) {
        *self.0.add(i) = v;
    }
}

fn dense(ctx: &Ctx<'_, '_>, x: &[f32], y: &mut [f32]) {
    let w = ctx.w;
    let (rows, cols, m) = (w.rows, w.cols, ctx.m);
    let esz = w.ty.type_size();
    let out = Out(y.as_mut_ptr());
    let per = ctx.rows_per_task(4, 64);
    ctx.for_row_ranges(per, |r0, r1| {
        #[cfg(target_arch = "x86_64")]
        if ctx.kernel == Kernel::Avx2 {
            // SAFETY: AVX2/FMA/F16C detected; pointers index validated rows.
            unsafe { dense_avx2(w, x, m, r0, r1, out) };
            return;
        }
        for j in r0..r1 {
            let row = &w.data[j * cols * esz..(j + 1) * cols * esz];
            for i in 0..m {
                // SAFETY: (i, j) belongs to this task only; in bounds.
                unsafe { out.set(i * rows + j, float::dot_scalar(w.ty, row, &x[i * cols..(i + 1) * cols])) };
            }
        }
    });
}

#[cfg(target_arch = "x86_64")]
unsafe fn dense_avx2(w: &QMatRef<'_>, x: &[f32], m: usize, r0: usize, r1: usize, out: Out) {
    match float::code(w.ty) {
        float::F16 => dense_avx2_t::<{ float::F16 }>(w, x, m, r0, r1, out),
        float::BF16 => dense_avx2_t::<{ float::BF16 }>(w, x, m, r0, r1, out),
        _ => dense_avx2_t::<{ float::F32 }>(w, x, m, r0, r1, out),
    }
}

/// Dense rows `r0..r1` for every activation row: 4 x 2 tiles, then 1 x 4
/// tiles for the last `m % 4` rows (a short tile repeats its last row and
/// drops the duplicate results).
#[cfg(target_arch = "x86_64")]
unsafe fn dense_avx2_t<const T: u8>(w: &QMatRef<'_>, x: &[f32], m: usize, r0: usize, r1: usize, out: Out) {
    let (rows, cols) = (w.rows, w.cols);
    let rb = cols * w.ty.type_size();
    let wp = |j: usize| w.data.as_ptr().add(j * rb);
    let xp = |i: usize| x.as_ptr().add(i * cols);
    let mut i = 0;
    while i + 4 <= m {
        let xs = [xp(i), xp(i + 1), xp(i + 2), xp(i + 3)];
        let mut j = r0;
        while j < r1 {
            let n = (r1 - j).min(2);
            let mut o = [[0.0f32; 2]; 4];
            float::tile::<T, 4, 2>([wp(j), wp(j + n - 1)], xs, cols, &mut o);
            for (r, orow) in o.iter().enumerate() {
                for (c, &v) in orow.iter().enumerate().take(n) {
                    out.set((i + r) * rows + j + c, v);
                }
            }
            j += n;
        }
        i += 4;
    }
    while i < m {
        let mut j = r0;
        while j < r1 {
            let n = (r1 - j).min(4);
            let ws = [wp(j), wp(j + 1.min(n - 1)), wp(j + 2.min(n - 1)), wp(j + 3.min(n - 1))];
            let mut o = [[0.0f32; 4]; 1];
            float::tile::<T, 1, 4>(ws, [xp(i)], cols, &mut o);
            for (c, &v) in o[0].iter().enumerate().take(n) {
                out.set(i * rows + j + c, v);
            }
            j += n;
        }
        i += 1;
    }
}

thread_local! {
    static PANEL: RefCell<Panel> = RefCell::new(Panel::default());
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
struct Direct {
    f1: unsafe fn([*const u8; 4], [*const u8; 1], usize) -> [[f32; 4]; 1],
    f2: unsafe fn([*const u8; 4], [*const u8; 2], usize) -> [[f32; 4]; 2],
    f4: unsafe fn([*const u8; 4], [*const u8; 4], usize) -> [[f32; 4]; 4],
    /// From this many activation rows on, `Strategy::Auto` prefers unpacking
    /// weight panels for the tiled kernel (crossovers measured with
    /// `matbench --micro`).
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
            Direct { f1: $f::<1, $($c),*>, f2: $f::<2, $($c),*>, f4: $f::<4, $($c),*>, tiled_from: $from }
        };
        ($f:ident ; $from:expr) => {
            Direct { f1: $f::<1>, f2: $f::<2>, f4: $f::<4>, tiled_from: $from }
        };
    }
    use k::{dot_k45, dot_q6_k};
    use l::{dot_nib, dot_q8_0};
    Some(match ty {
        GgmlType::Q4K => direct!(dot_k45, false; 64),
        GgmlType::Q5K => direct!(dot_k45, true; 64),
        GgmlType::Q6K => direct!(dot_q6_k; 64),
        GgmlType::Q8_0 => direct!(dot_q8_0; 64),
        GgmlType::Q5_0 => direct!(dot_nib, true; 64),
        GgmlType::Q4_0 => direct!(dot_nib, false; 64),
        _ => return None,
    })
}

fn quant<const G: usize, const S: usize>(ctx: &Ctx<'_, '_>, kind: &QuantKind, x: &[f32], y: &mut [f32]) {
    let w = ctx.w;
    let (m, cols) = (ctx.m, w.cols);
    let nb = cols / G;
    // Quantize every activation row once: [m, nb] blocks.
    let mut act = vec![ActBlock::<G, S>::ZERO; m * nb];
    if m * cols >= 1 << 16 {
        let per = 4usize;
        let ap = ActPtr(act.as_mut_ptr());
        par_for_limit(m.div_ceil(per), ctx.threads, &|t| {
            for i in t * per..((t + 1) * per).min(m) {
                // SAFETY: row i's blocks are written by this task only.
                let blocks = unsafe { std::slice::from_raw_parts_mut(ap.get().add(i * nb), nb) };
                quantize_row(&x[i * cols..(i + 1) * cols], blocks, ctx.kernel);
            }
        });
    } else {
        for (i, blocks) in act.chunks_exact_mut(nb.max(1)).enumerate().take(m) {
            quantize_row(&x[i * cols..(i + 1) * cols], blocks, ctx.kernel);
        }
    }
    let act = &act[..];
    let out = Out(y.as_mut_ptr());

    #[cfg(target_arch = "x86_64")]
    if ctx.kernel == Kernel::Avx2 {
        let direct = direct_kernel(w.ty).filter(|d| match ctx.opts.strategy {
            Strategy::Auto => m < d.tiled_from,
            Strategy::Direct => true,
            Strategy::Tiled => false,
        });
        if let Some(d) = direct {
            let rb = nb * kind.block_bytes;
            let per = ctx.rows_per_task(4, 1 << 20);
            let ap = |i: usize| act[i * nb..].as_ptr() as *const u8;
            ctx.for_row_ranges(per, |r0, r1| {
                // Group g takes row g of each quarter of the task, so each of
                // the 4 rows is one long sequential stream for the
                // prefetchers (4 consecutive short rows would restart 4
                // streams every few blocks).
                let stride = (r1 - r0).div_ceil(4);
                for gi in 0..stride {
                    let first = r0 + gi;
                    let rows = [first, first + stride, first + 2 * stride, first + 3 * stride];
                    // SAFETY: rows past the task repeat `first` (< r1), so
                    // every pointer is in bounds.
                    let ws = rows.map(|j| unsafe { w.data.as_ptr().add(if j < r1 { j } else { first } * rb) });
                    let emit = |i: usize, v: &[f32; 4]| {
                        for (&j, &vk) in rows.iter().zip(v) {
                            if j < r1 {
                                // SAFETY: output (i, j) belongs to this task.
                                unsafe { out.set(i * w.rows + j, vk) };
                            }
                        }
                    };
                    let mut i = 0;
                    // SAFETY (calls): AVX2 detected; every activation row
                    // pointer has nb blocks.
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
            });
            return;
        }
    }
    // Tiled / scalar path. Activation rows go in groups of 4, then singly;
    // `side` holds each group's per-lane scales.
    let m4 = m / 4 * 4;
    let ngroups = m4 / 4 + (m - m4);
    let mut side = vec![Side::default(); if ctx.kernel == Kernel::Avx2 { ngroups * nb } else { 0 }];
    for (gi, sd) in side.chunks_exact_mut(nb.max(1)).enumerate().take(if nb == 0 { 0 } else { ngroups }) {
        let (i0, len) = if gi < m4 / 4 { (4 * gi, 4) } else { (m4 + gi - m4 / 4, 1) };
        let rows: Vec<&[ActBlock<G, S>]> = (i0..i0 + len).map(|i| &act[i * nb..(i + 1) * nb]).collect();
        fill_side(&rows, kind.side_mul, sd);
    }
    let side = &side[..];
    let per = ctx.rows_per_task(2, 32);
    ctx.for_row_ranges(per, |r0, r1| {
        with_panel(|p| {
            let rb = nb * kind.block_bytes;
            p.fill(kind, &w.data[r0 * rb..r1 * rb], r1 - r0, cols);
            panel_rows::<G, S>(ctx, kind, p, act, side, r0, out);
        })
    });
}

#[derive(Clone, Copy)]
struct ActPtr<T>(*mut T);
// SAFETY: tasks write disjoint rows.
unsafe impl<T> Send for ActPtr<T> {}
unsafe impl<T> Sync for ActPtr<T> {}

impl<T> ActPtr<T> {
    /// A method (not a field access) so closures capture the whole wrapper.
    fn get(self) -> *mut T {
        self.0
    }
}

/// All outputs of the panel's rows (weight rows `r0 ..`), for every
/// activation row.
fn panel_rows<const G: usize, const S: usize>(
    ctx: &Ctx<'_, '_>,
    kind: &QuantKind,
    p: &Panel,
    act: &[ActBlock<G, S>],
    side: &[Side],
    r0: usize,
    out: Out,
) {
    let (m, rows, nb) = (ctx.m, ctx.w.rows, p.groups);
    #[cfg(target_arch = "x86_64")]
    if ctx.kernel == Kernel::Avx2 {
        // SAFETY: AVX2 detected; the panel and act rows are sized by nb.
        unsafe {
            match (kind.signed, kind.has_min) {
                (false, false) => tiled_avx2::<G, S, false, false>(p, act, side, m, rows, r0, out),
                (false, true) => tiled_avx2::<G, S, false, true>(p, act, side, m, rows, r0, out),
                (true, false) => tiled_avx2::<G, S, true, false>(p, act, side, m, rows, r0, out),
                (true, true) => tiled_avx2::<G, S, true, true>(p, act, side, m, rows, r0, out),
            }
        }
        return;
    }
    for j in 0..p.rows {
        for i in 0..m {
            let v = dot::dot_panel_scalar(p, j, &act[i * nb..(i + 1) * nb], kind.signed, kind.has_min);
            // SAFETY: (i, r0 + j) belongs to this task only.
            unsafe { out.set(i * rows + r0 + j, v) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn tiled_avx2<const G: usize, const S: usize, const SIGNED: bool, const HAS_MIN: bool>(
    p: &Panel,
    act: &[ActBlock<G, S>],
    side: &[Side],
    m: usize,
    rows: usize,
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
                    out.set((i + r) * rows + r0 + j + c, v);
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
                out.set(i * rows + r0 + j + c, v);
            }
        }
    }
}
