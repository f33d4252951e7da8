//! `y = x · Wᵀ` entry points: validation, planning (activation
//! quantization, kernel choice) and the split over the worker pool.
//!
//! Work is split over weight rows: a task owns a contiguous range of one
//! product's weight rows and computes every activation row's output for
//! them. Each output is computed by exactly one task with the canonical
//! arithmetic, so neither the split nor the thread that runs a task changes
//! any bit of the result. [`matmul_many`] runs the tasks of several products
//! in one fork-join; [`matmul_parts`] does the same for the parts of a fused
//! weight, each writing its own columns of one output (a row stride). Every
//! distinct input is quantized once per activation format (`act_set`).

use super::act_set::{ActKey, ActSet};
use super::dot::{float, QuantKind};
use super::pool::{num_threads, par_for_limit};
use super::qplan::QPlan;
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
    matmul_many_with(&mut [MatmulJob { w: *w, x, m, y }], opts)
}

/// One product `y = x · Wᵀ` of a [`matmul_many`] batch (shapes as in
/// [`matmul`]).
pub struct MatmulJob<'a> {
    pub w: QMatRef<'a>,
    pub x: &'a [f32],
    pub m: usize,
    pub y: &'a mut [f32],
}

/// Several independent products in one fork-join (e.g. the experts of a MoE
/// layer): saves a pool round trip per product and balances small products
/// across threads. Products that read the same `x` (the same slice) share
/// one activation quantization. Results equal separate [`matmul`] calls.
pub fn matmul_many(jobs: &mut [MatmulJob<'_>]) -> Result<(), KernelError> {
    matmul_many_with(jobs, &MatmulOptions::default())
}

/// [`matmul_many`] with explicit scheduling options.
pub fn matmul_many_with(
    jobs: &mut [MatmulJob<'_>],
    opts: &MatmulOptions,
) -> Result<(), KernelError> {
    for j in jobs.iter() {
        validate(&j.w, j.x.len(), j.m, j.y.len())?;
    }
    let products: Vec<Product<'_>> = jobs
        .iter_mut()
        .map(|j| Product {
            w: j.w,
            x: j.x,
            m: j.m,
            out: Out::new(j.y.as_mut_ptr(), j.w.rows),
        })
        .collect();
    run(&products, opts)
}

/// `y = x · [W_0; W_1; ...]ᵀ` for weights that share the input (a fused
/// projection whose parts have different types): `x` is `[m, cols]`, `y` is
/// `[m, Σ rows]` with part `k`'s outputs in its own column range, in part
/// order. The input is quantized once per activation format and each part
/// writes straight into its columns. Results equal separate [`matmul`]
/// calls, bit for bit.
pub fn matmul_parts(
    ws: &[QMatRef<'_>],
    x: &[f32],
    m: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    matmul_parts_with(ws, x, m, y, &MatmulOptions::default())
}

/// [`matmul_parts`] with explicit scheduling options.
pub fn matmul_parts_with(
    ws: &[QMatRef<'_>],
    x: &[f32],
    m: usize,
    y: &mut [f32],
    opts: &MatmulOptions,
) -> Result<(), KernelError> {
    let mut total = 0usize;
    for w in ws {
        // Each part alone must fit `x`; `y` is checked for the sum below.
        validate(w, x.len(), m, mul("outputs", m, w.rows)?)?;
        total = total.checked_add(w.rows).ok_or(KernelError::Overflow {
            what: "fused rows",
            a: total,
            b: w.rows,
        })?;
    }
    let ye = mul("outputs", m, total)?;
    if y.len() != ye {
        return Err(KernelError::Length {
            what: "y (fused outputs)",
            got: y.len(),
            m,
            n: total,
            expected: ye,
        });
    }
    let base = y.as_mut_ptr();
    let mut col = 0;
    let mut products = Vec::with_capacity(ws.len());
    for w in ws {
        // SAFETY: col + w.rows <= total, so the offset stays inside `y`
        // (or one past its end for an empty last part, never written).
        let ptr = unsafe { base.add(col.min(ye)) };
        products.push(Product {
            w: *w,
            x,
            m,
            out: Out::new(ptr, total),
        });
        col += w.rows;
    }
    run(&products, opts)
}

/// One validated product: `x` `[m, w.cols]` times `wᵀ`, output `(i, j)`
/// written through `out.set(i, j, _)`.
struct Product<'a> {
    w: QMatRef<'a>,
    x: &'a [f32],
    m: usize,
    out: Out,
}

/// Run validated products in one fork-join: quantize each distinct input
/// once per format, plan each product, split weight rows into tasks.
fn run(products: &[Product<'_>], opts: &MatmulOptions) -> Result<(), KernelError> {
    let kernel = opts.kernel.unwrap_or_else(Kernel::best);
    if !kernel.available() {
        return Err(KernelError::KernelUnavailable(kernel));
    }
    let threads = if opts.max_threads == 0 {
        usize::MAX
    } else {
        opts.max_threads
    };
    let live = || products.iter().filter(|p| p.m > 0 && p.w.rows > 0);
    let mut acts = ActSet::default();
    let mut keys = Vec::with_capacity(products.len());
    for p in live() {
        keys.push(match p.w.ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => None,
            ty => {
                let kind = super::dot::quant_kind(ty).ok_or(KernelError::UnsupportedType(ty))?;
                Some((kind, acts.add(p.x, p.m, kind.group)))
            }
        });
    }
    acts.quantize(kernel, threads);
    let mut plans = Vec::with_capacity(keys.len());
    for (p, key) in live().zip(&keys) {
        plans.push(Plan::new(p, *key, &acts, kernel, opts.strategy));
    }
    // Tasks: (plan, first row, end row), several per thread for balance.
    let pool_threads = threads.min(num_threads()).max(1);
    let mut tasks = Vec::new();
    for (pi, p) in plans.iter().enumerate() {
        let rows = p.w.rows;
        let per = if opts.rows_per_task > 0 {
            opts.rows_per_task
        } else {
            p.rows_per_task(pool_threads)
        };
        tasks.extend(
            (0..rows)
                .step_by(per)
                .map(|r0| (pi, r0, (r0 + per).min(rows))),
        );
    }
    par_for_limit(tasks.len(), threads, &|t| {
        let (pi, r0, r1) = tasks[t];
        plans[pi].run(r0, r1);
    });
    Ok(())
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
        return Err(KernelError::ColsNotBlockMultiple {
            ty,
            cols: w.cols,
            block,
        });
    }
    let row_bytes = mul("weight row bytes", w.cols / block, ty.type_size())?;
    let expected = mul("weight bytes", w.rows, row_bytes)?;
    if w.data.len() != expected {
        return Err(KernelError::WeightBytes {
            ty,
            rows: w.rows,
            cols: w.cols,
            expected,
            got: w.data.len(),
        });
    }
    let xe = mul("activations", m, w.cols)?;
    if x_len != xe {
        return Err(KernelError::Length {
            what: "x (activations)",
            got: x_len,
            m,
            n: w.cols,
            expected: xe,
        });
    }
    let ye = mul("outputs", m, w.rows)?;
    if y_len != ye {
        return Err(KernelError::Length {
            what: "y (outputs)",
            got: y_len,
            m,
            n: w.rows,
            expected: ye,
        });
    }
    Ok(())
}

/// A raw output pointer shared by tasks that write disjoint elements:
/// element `(i, j)` (activation row `i`, weight row `j`) lives at
/// `ptr + i * ld + j`.
#[derive(Clone, Copy)]
pub(super) struct Out {
    ptr: *mut f32,
    ld: usize,
}
// SAFETY: tasks write disjoint elements of the buffer, which outlives them.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    fn new(ptr: *mut f32, ld: usize) -> Out {
        Out { ptr, ld }
    }

    /// # Safety
    /// `(i, j)` is inside the product's output and no other task writes it.
    #[inline(always)]
    pub(super) unsafe fn set(self, i: usize, j: usize, v: f32) {
        *self.ptr.add(i * self.ld + j) = v;
    }
}

/// One validated product, ready to run by row ranges.
struct Plan<'a> {
    w: QMatRef<'a>,
    x: &'a [f32],
    m: usize,
    kernel: Kernel,
    out: Out,
    body: Body<'a>,
}

enum Body<'a> {
    Dense,
    Legacy(QPlan<'a, 32, 2>),
    KQuant(QPlan<'a, 256, 16>),
}

impl<'a> Plan<'a> {
    /// `key`: the quantized-activation kind and entry for quantized types
    /// (`None` for dense weights).
    fn new(
        p: &Product<'a>,
        key: Option<(QuantKind, ActKey)>,
        acts: &'a ActSet<'_>,
        kernel: Kernel,
        strategy: Strategy,
    ) -> Self {
        let (w, m) = (p.w, p.m);
        let body = match key {
            None => Body::Dense,
            Some((kind, k)) if kind.group == 32 => {
                Body::Legacy(QPlan::new(w, kind, acts.get32(k), m, kernel, strategy))
            }
            Some((kind, k)) => {
                Body::KQuant(QPlan::new(w, kind, acts.get256(k), m, kernel, strategy))
            }
        };
        Plan {
            w,
            x: p.x,
            m,
            kernel,
            out: p.out,
            body,
        }
    }

    /// Weight rows per task: about 4 tasks per thread, rounded to what the
    /// kernels consume per step.
    fn rows_per_task(&self, threads: usize) -> usize {
        let per_thread = self.w.rows.div_ceil(threads * 4);
        let (align, max) = match &self.body {
            Body::Dense => (4, 64),
            Body::Legacy(q) => q.rows_per_task(per_thread),
            Body::KQuant(q) => q.rows_per_task(per_thread),
        };
        per_thread.clamp(align, max.max(align)).div_ceil(align) * align
    }

    fn run(&self, r0: usize, r1: usize) {
        match &self.body {
            Body::Dense => self.dense(r0, r1),
            Body::Legacy(q) => q.run(r0, r1, self.out),
            Body::KQuant(q) => q.run(r0, r1, self.out),
        }
    }

    /// Dense (F32/F16/BF16) weight rows `r0..r1` for every activation row.
    fn dense(&self, r0: usize, r1: usize) {
        let (w, x, m, out) = (&self.w, self.x, self.m, self.out);
        #[cfg(target_arch = "x86_64")]
        if self.kernel == Kernel::Avx2 {
            // SAFETY: AVX2/FMA/F16C detected; pointers index validated rows.
            unsafe { dense_avx2(w, x, m, r0, r1, out) };
            return;
        }
        let cols = w.cols;
        let rb = cols * w.ty.type_size();
        for j in r0..r1 {
            let row = &w.data[j * rb..(j + 1) * rb];
            for i in 0..m {
                // SAFETY: (i, j) belongs to this task only; in bounds.
                unsafe {
                    out.set(
                        i,
                        j,
                        float::dot_scalar(w.ty, row, &x[i * cols..(i + 1) * cols]),
                    )
                };
            }
        }
    }
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
unsafe fn dense_avx2_t<const T: u8>(
    w: &QMatRef<'_>,
    x: &[f32],
    m: usize,
    r0: usize,
    r1: usize,
    out: Out,
) {
    let cols = w.cols;
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
                    out.set(i + r, j + c, v);
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
            let ws = [
                wp(j),
                wp(j + 1.min(n - 1)),
                wp(j + 2.min(n - 1)),
                wp(j + 3.min(n - 1)),
            ];
            let mut o = [[0.0f32; 4]; 1];
            float::tile::<T, 1, 4>(ws, [xp(i)], cols, &mut o);
            for (c, &v) in o[0].iter().enumerate().take(n) {
                out.set(i, j + c, v);
            }
            j += n;
        }
        i += 1;
    }
}
