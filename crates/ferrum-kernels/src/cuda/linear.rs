//! `linear` on the device: small batches run the quantized GEMV kernels
//! (weights decoded in registers, read once per 8 activation rows); larger
//! batches dequantize the weight to f16 in a reusable scratch buffer and
//! multiply on the tensor cores through cuBLAS (f32 accumulation).

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cublas::{result as blas, sys as bsys};
use cudarc::driver::{CudaSlice, CudaStream, LaunchConfig};

use ferrum_core::GgmlType;

use super::{grid1, launch, CudaAct, CudaBackend, CudaWeight};
use crate::backend::{BackendError, Result};

/// Activation rows from which the dequantize + tensor-core path is used.
pub const GEMM_MIN_ROWS: usize = 16;
/// Warps (output rows) per GEMV block and activation rows per GEMV pass; as in gemv.cu.
pub(super) const GEMV_WARPS: usize = 4;
const GEMV_M: usize = 8;
/// Warps per block and output rows per warp (one activation row) of the
/// 8-bit-activation GEMV kernels; as in gemv_q8.cu.
pub(super) const Q8_WARPS: usize = 4;
pub(super) const Q8_RPW1: usize = 2;
/// Output rows per warp of the 8-bit-activation expert kernels (gate + up, down).
pub(super) const Q8_RPW_GATE_UP: usize = 2;
pub(super) const Q8_RPW_DOWN: usize = 1;

fn blas_err(op: &'static str, e: impl std::fmt::Debug) -> BackendError {
    BackendError::Device { op, detail: format!("cuBLAS: {e:?}") }
}

/// The cuBLAS handle and the f16 scratch buffers of the GEMM path.
pub struct Blas {
    handle: cudarc::cublas::CudaBlas,
    scratch: Mutex<Scratch>,
    /// Cleared when cuBLAS refuses grouped GEMMs (then they run one by one).
    grouped_ok: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Scratch {
    w: Option<CudaSlice<u16>>,
    x: Option<CudaSlice<u16>>,
}

impl Blas {
    pub fn new(stream: &Arc<CudaStream>) -> Result<Blas> {
        let handle = cudarc::cublas::CudaBlas::new(stream.clone()).map_err(|e| blas_err("init", e))?;
        Ok(Blas { handle, scratch: Mutex::new(Scratch::default()), grouped_ok: std::sync::atomic::AtomicBool::new(true) })
    }
}

fn grow(be: &CudaBackend, slot: &mut Option<CudaSlice<u16>>, n: usize) -> Result<u64> {
    if slot.as_ref().map(|s| s.len() < n).unwrap_or(true) {
        *slot = Some(be.persistent::<u16>(n)?);
    }
    Ok(slot.as_ref().map(|s| be.ptr(s)).unwrap_or(0))
}

pub fn run(be: &CudaBackend, x: &CudaAct, w: &CudaWeight, bias: Option<&CudaWeight>, out: &mut CudaAct) -> Result<()> {
    if w.dims.len() != 2 || w.parts.is_empty() {
        return Err(BackendError::Shape { op: "linear", detail: format!("{} is not a 2-D weight: {:?}", w.name, w.dims) });
    }
    let (cols, rows) = (w.dims[0], w.dims[1]);
    if x.cols != cols {
        return Err(BackendError::Shape { op: "linear", detail: format!("{}: input has {} columns, weight {cols}", w.name, x.cols) });
    }
    be.shape(out, x.rows, rows)?;
    let m = x.rows;
    if m == 0 {
        return Ok(());
    }
    let bias = bias.map(|b| be.vector(b, rows, "linear bias")).transpose()?;
    if m >= GEMM_MIN_ROWS {
        gemm(be, x, w, out)?;
    } else if gemv(be, x, w, bias.map(|b| be.ptr(b)).unwrap_or(0), out)? {
        return Ok(());
    }
    if let Some(bv) = bias {
        let (op, bp, r, c) = (be.ptr(&out.buf), be.ptr(bv), m as i32, rows as i32);
        launch!(be, &be.k.add_bias, grid1(m * rows, 256), &op, &bp, &r, &c)?;
    }
    Ok(())
}

/// Weight parts of one 8-bit-activation GEMV launch (as `Q8Parts` in
/// gemv_q8.cu): part p owns blocks `start[p]..start[p + 1]`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Q8Parts {
    w: [u64; Q8_PARTS],
    ty: [i32; Q8_PARTS],
    rows: [i32; Q8_PARTS],
    y_off: [i32; Q8_PARTS],
    start: [i32; Q8_PARTS + 1],
}

/// Weight parts one 8-bit-activation GEMV launch takes (as in gemv_q8.cu).
const Q8_PARTS: usize = 3;

/// The GEMV kernels for `m < GEMM_MIN_ROWS` activation rows: with 8-bit
/// activations where every part's type has them (up to Q8_PARTS parts of
/// any types per launch; then the bias `bias_ptr`, if not 0, is added by the
/// kernels and this returns true), else f32 activations, one launch per part.
fn gemv(be: &CudaBackend, x: &CudaAct, w: &CudaWeight, bias_ptr: u64, out: &mut CudaAct) -> Result<bool> {
    let (cols, rows, m) = (w.dims[0], w.dims[1], x.rows);
    let (xp, op, ci, mi, ldy) = (be.ptr(&x.buf), be.ptr(&out.buf), cols as i32, m as i32, rows as i32);
    if w.parts.iter().all(|p| be.q8_kernels(p.ty).is_some()) {
        let mut tmp = None;
        let xqp = be.q8_of(x, xp, &mut tmp)?;
        let (rows_per_block, tile) = if m == 1 { (Q8_WARPS * Q8_RPW1, 1) } else { (Q8_WARPS, GEMV_M) };
        if let Some((p, q8)) = w.parts.first().filter(|_| w.parts.len() == 1).and_then(|p| Some((p, be.q8_kernels(p.ty)?))) {
            // One matrix: the kernel of its type.
            let (k, wp, r) = (if m == 1 { &q8.gemv1 } else { &q8.gemv }, be.ptr(&p.buf), p.rows as i32);
            let cfg = LaunchConfig {
                grid_dim: (p.rows.div_ceil(rows_per_block) as u32, m.div_ceil(tile) as u32, 1),
                block_dim: (32 * Q8_WARPS as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            launch!(be, k, cfg, &wp, &xqp, &op, &bias_ptr, &r, &ci, &mi, &ldy)?;
            return Ok(bias_ptr != 0);
        }
        let k = if m == 1 { &be.k.linear1_q8 } else { &be.k.linear_q8 };
        let mut off = 0usize;
        for chunk in w.parts.chunks(Q8_PARTS) {
            let mut parts = Q8Parts::default();
            for (i, p) in chunk.iter().enumerate() {
                parts.w[i] = be.ptr(&p.buf);
                parts.ty[i] = p.ty.id() as i32;
                parts.rows[i] = p.rows as i32;
                parts.y_off[i] = off as i32;
                parts.start[i + 1] = parts.start[i] + p.rows.div_ceil(rows_per_block) as i32;
                off += p.rows;
            }
            for i in chunk.len()..Q8_PARTS {
                parts.start[i + 1] = parts.start[i];
            }
            let cfg = LaunchConfig {
                grid_dim: (parts.start[Q8_PARTS] as u32, m.div_ceil(tile) as u32, 1),
                block_dim: (32 * Q8_WARPS as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            launch!(be, k, cfg, &parts, &xqp, &op, &bias_ptr, &ci, &mi, &ldy)?;
        }
        return Ok(bias_ptr != 0);
    }
    let mut off = 0usize;
    for p in &w.parts {
        let (wp, r, yo) = (be.ptr(&p.buf), p.rows as i32, off as i32);
        let tk = be.k.for_type(p.ty)?;
        let k = if m == 1 { &tk.gemv1 } else { &tk.gemv };
        let cfg = LaunchConfig {
            grid_dim: (p.rows.div_ceil(GEMV_WARPS) as u32, m.div_ceil(GEMV_M) as u32, 1),
            block_dim: (32 * GEMV_WARPS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(be, k, cfg, &wp, &xp, &op, &r, &ci, &mi, &ldy, &yo)?;
        off += p.rows;
    }
    Ok(false)
}

/// out [m, rows] = x [m, cols] · Wᵀ on the tensor cores: f16 copies of a
/// quantized or f16 weight and of x; f32 weights multiply in f32 as they are.
fn gemm(be: &CudaBackend, x: &CudaAct, w: &CudaWeight, out: &mut CudaAct) -> Result<()> {
    let (cols, rows, m) = (w.dims[0], w.dims[1], x.rows);
    let op = be.ptr(&out.buf);
    if w.parts.iter().all(|p| p.ty == GgmlType::F32) {
        let mut off = 0usize;
        for p in &w.parts {
            let c = op + 4 * off as u64;
            gemm_ex(be, p.rows, m, cols, be.ptr(&p.buf), be.ptr(&x.buf), bsys::cudaDataType_t::CUDA_R_32F, c, rows)?;
            off += p.rows;
        }
        return Ok(());
    }
    let mut s = be.blas.scratch.lock().map_err(|_| BackendError::Invalid { op: "linear", detail: "lock poisoned".into() })?;
    let wp = grow(be, &mut s.w, rows * cols)?;
    let xp16 = grow(be, &mut s.x, m * cols)?;
    let mut row_off = 0usize;
    for p in &w.parts {
        let k = &be.k.for_type(p.ty)?.dequant_f16;
        let (src, r, c, ro) = (be.ptr(&p.buf), p.rows as i32, cols as i32, row_off as i32);
        launch!(be, k, grid1(p.rows * (cols / 8), 256), &src, &wp, &r, &c, &ro)?;
        row_off += p.rows;
    }
    let (xp, n) = (be.ptr(&x.buf), (m * cols) as i32);
    launch!(be, &be.k.to_f16, grid1(m * cols, 256), &xp, &xp16, &n)?;
    gemm_ex(be, rows, m, cols, wp, xp16, bsys::cudaDataType_t::CUDA_R_16F, op, rows)
}

/// Column-major view: C (n_out × m, ld `ldc`) = op(A)ᵀ·B with A = W
/// (cols × n_out, ld cols) and B = X (cols × m, ld cols), which is
/// `out [m, ldc]` row-major. A and B are of type `ty`; C is f32.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_ex(be: &CudaBackend, n_out: usize, m: usize, cols: usize, a: u64, b: u64, ty: bsys::cudaDataType_t, c: u64, ldc: usize) -> Result<()> {
    not_recorded(be)?;
    let (alpha, beta) = (1.0f32, 0.0f32);
    // SAFETY: the pointers are live device buffers of the sizes given.
    unsafe {
        blas::gemm_ex(
            *be.blas.handle.handle(),
            bsys::cublasOperation_t::CUBLAS_OP_T,
            bsys::cublasOperation_t::CUBLAS_OP_N,
            n_out as i32,
            m as i32,
            cols as i32,
            &alpha as *const f32 as *const c_void,
            a as *const c_void,
            ty,
            cols as i32,
            b as *const c_void,
            ty,
            cols as i32,
            &beta as *const f32 as *const c_void,
            c as *mut c_void,
            bsys::cudaDataType_t::CUDA_R_32F,
            ldc as i32,
            bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| blas_err("linear", e))
}

/// cuBLAS calls are not part of recorded passes (those have fewer than
/// GEMM_MIN_ROWS rows).
fn not_recorded(be: &CudaBackend) -> Result<()> {
    if be.recording() {
        return Err(BackendError::Invalid { op: "linear", detail: "cuBLAS call inside a recorded pass".into() });
    }
    Ok(())
}

/// One GEMM of a group: `c [m, ldc]` (f32) = `b [m, cols]` · `aᵀ` with `a`
/// `[n_out, cols]`; `a` and `b` f16.
pub(super) struct GroupItem {
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub m: usize,
}

/// Several f16 GEMMs sharing `n_out`, `cols` and `ldc` (one per expert, with
/// its own row count): one cuBLAS grouped call where cuBLAS supports it,
/// else one call each.
pub(super) fn gemm_group(be: &CudaBackend, items: &[GroupItem], n_out: usize, cols: usize, ldc: usize) -> Result<()> {
    use std::sync::atomic::Ordering;
    let h16 = bsys::cudaDataType_t::CUDA_R_16F;
    if items.is_empty() {
        return Ok(());
    }
    not_recorded(be)?;
    if be.blas.grouped_ok.load(Ordering::Relaxed) {
        let g = items.len();
        let ptrs: Vec<u64> = items.iter().map(|i| i.a).chain(items.iter().map(|i| i.b)).chain(items.iter().map(|i| i.c)).collect();
        let d = be.upload_slice(&ptrs)?;
        let base = be.ptr(&d);
        let ta = vec![bsys::cublasOperation_t::CUBLAS_OP_T; g];
        let tb = vec![bsys::cublasOperation_t::CUBLAS_OP_N; g];
        let (ms, ns, ks) = (vec![n_out as i32; g], items.iter().map(|i| i.m as i32).collect::<Vec<_>>(), vec![cols as i32; g]);
        let (alpha, beta) = (vec![1.0f32; g], vec![0.0f32; g]);
        let (lda, ldcs, sizes) = (vec![cols as i32; g], vec![ldc as i32; g], vec![1i32; g]);
        // SAFETY: host arrays of `g` entries; device pointer arrays of `g` live buffers each.
        let status = unsafe {
            bsys::cublasGemmGroupedBatchedEx(
                *be.blas.handle.handle(),
                ta.as_ptr(),
                tb.as_ptr(),
                ms.as_ptr(),
                ns.as_ptr(),
                ks.as_ptr(),
                alpha.as_ptr() as *const c_void,
                base as *const *const c_void,
                h16,
                lda.as_ptr(),
                (base + 8 * g as u64) as *const *const c_void,
                h16,
                lda.as_ptr(),
                beta.as_ptr() as *const c_void,
                (base + 16 * g as u64) as *const *mut c_void,
                bsys::cudaDataType_t::CUDA_R_32F,
                ldcs.as_ptr(),
                g as i32,
                sizes.as_ptr(),
                bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            )
        };
        if status == bsys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            // `d` is freed in stream order, after the GEMMs that read it.
            return Ok(());
        }
        be.blas.grouped_ok.store(false, Ordering::Relaxed);
    }
    for i in items {
        gemm_ex(be, n_out, i.m, cols, i.a, i.b, h16, i.c, ldc)?;
    }
    Ok(())
}
