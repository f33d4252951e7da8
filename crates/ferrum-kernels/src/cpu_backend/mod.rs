//! The CPU implementation of [`Backend`]: f32 activations, weights kept in
//! their GGUF encoding (quantized blocks are decoded inside the matmul).
//!
//! Every op computes each output row with a fixed arithmetic sequence that
//! does not depend on the other rows of the batch, so results are
//! bit-identical whether a sequence runs alone, batched or chunked.

mod attention;
#[cfg(target_arch = "x86_64")]
mod attn_avx2;
mod attn_kernel;
mod fuse;
mod kv_store;
mod moe;
mod norm;
mod par;
mod rope;
mod vexp;

use ferrum_core::GgmlType;

use crate::attn_meta::AttnMeta;
use crate::backend::{Backend, BackendError, HeadSpec, HostBytes, HostWeight, KvSpec, MoeSpec, MoeWeights, Result, Rope};
use crate::cpu::{self, QMatRef};
use kv_store::KvStore;

/// Rows per task of `rms_norm`.
const ROWS_PER_NORM_TASK: usize = 16;
/// Values per task of `silu_mul` (each costs an `exp`).
const SILU_CHUNK: usize = 2048;

/// The CPU backend (stateless; the worker pool is process-wide).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

/// A row-major f32 matrix `[rows, cols]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mat {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

impl Mat {
    pub fn zeros(rows: usize, cols: usize) -> Mat {
        Mat { data: vec![0.0; rows * cols], rows, cols }
    }

    pub fn from_vec(data: Vec<f32>, rows: usize, cols: usize) -> Option<Mat> {
        (data.len() == rows * cols).then_some(Mat { data, rows, cols })
    }

    /// Set the shape, reusing the allocation (contents unspecified).
    pub fn reshape(&mut self, rows: usize, cols: usize) {
        self.rows = rows;
        self.cols = cols;
        self.data.resize(rows * cols, 0.0);
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// A weight on the CPU: the GGUF bytes (borrowed from the map or owned), plus
/// an f32 copy for 1-D tensors (norm weights, biases) that ops read directly.
pub struct CpuWeight {
    pub ty: GgmlType,
    pub dims: Vec<usize>,
    bytes: HostBytes,
    vector: Option<Vec<f32>>,
    name: String,
    /// Parts of a fused weight whose types differ, in output-row order
    /// (empty for a plain weight).
    parts: Vec<CpuWeight>,
}

impl CpuWeight {
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// The tensor as a matrix `[rows = dims[1], cols = dims[0]]`.
    fn mat(&self, op: &'static str) -> Result<QMatRef<'_>> {
        if self.dims.len() != 2 {
            return Err(BackendError::Shape { op, detail: format!("{} is not 2-D: {:?}", self.name, self.dims) });
        }
        Ok(QMatRef { ty: self.ty, data: self.bytes(), rows: self.dims[1], cols: self.dims[0] })
    }

    /// Expert `e` of a 3-D tensor `[n_experts][rows][cols]` as a matrix.
    fn expert(&self, e: usize, op: &'static str) -> Result<QMatRef<'_>> {
        let shape_err = || BackendError::Shape { op, detail: format!("{}: expert {e} of {:?}", self.name, self.dims) };
        if self.dims.len() != 3 || e >= self.dims[2] {
            return Err(shape_err());
        }
        let (cols, rows) = (self.dims[0], self.dims[1]);
        let per = self.ty.bytes_for((rows * cols) as u64).ok_or_else(shape_err)? as usize;
        let data = self.bytes().get(e * per..(e + 1) * per).ok_or_else(shape_err)?;
        Ok(QMatRef { ty: self.ty, data, rows, cols })
    }

    /// The f32 values of a 1-D weight of length `n`.
    fn vector(&self, n: usize, op: &'static str) -> Result<&[f32]> {
        match &self.vector {
            Some(v) if v.len() == n => Ok(v),
            _ => Err(BackendError::Shape {
                op,
                detail: format!("{} should be a vector of {n}, has dims {:?}", self.name, self.dims),
            }),
        }
    }
}

/// One layer's paged K/V pools, `[n_blocks * block_size, n_kv_heads * head_dim]`.
pub struct CpuKv {
    pub spec: KvSpec,
    k: KvStore,
    v: KvStore,
}

fn check_cols(op: &'static str, x: &Mat, cols: usize) -> Result<()> {
    if x.cols != cols || x.data.len() != x.rows * x.cols {
        return Err(BackendError::Shape { op, detail: format!("expected {cols} columns, got [{}, {}]", x.rows, x.cols) });
    }
    Ok(())
}

impl CpuBackend {
    /// [`Backend::attention`] on a chosen kernel: the AVX2 path and the
    /// scalar reference give identical bits (tests compare them).
    pub fn attention_with(&self, kernel: cpu::Kernel, q: &Mat, heads: &HeadSpec, meta: &AttnMeta, kv: &CpuKv, out: &mut Mat) -> Result<()> {
        check_cols("attention", q, heads.n_heads * heads.head_dim)?;
        if heads.n_kv_heads == 0 || !heads.n_heads.is_multiple_of(heads.n_kv_heads) {
            return Err(BackendError::Invalid { op: "attention", detail: format!("{heads:?}") });
        }
        if !kernel.available() {
            return Err(BackendError::Invalid { op: "attention", detail: format!("the {kernel:?} kernel is not available on this CPU") });
        }
        out.reshape(q.rows, q.cols);
        attention::run(q, heads, meta, kv, out, kernel)
    }
}

impl Backend for CpuBackend {
    type Act = Mat;
    type Weight = CpuWeight;
    type Kv = CpuKv;
    type Plan = AttnMeta;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn upload(&self, w: HostWeight) -> Result<CpuWeight> {
        let n = w.n_elements();
        let expect = w.ty.bytes_for(n as u64).map(|b| b as usize);
        if expect != Some(w.bytes.as_slice().len()) {
            return Err(BackendError::Shape {
                op: "upload",
                detail: format!("{}: {} bytes for {:?} of {}", w.name, w.bytes.as_slice().len(), w.dims, w.ty),
            });
        }
        let vector = if w.dims.len() == 1 {
            let mut v = vec![0.0f32; n];
            ferrum_format::quant::dequantize(w.ty, w.bytes.as_slice(), &mut v).map_err(|e| BackendError::Invalid {
                op: "upload",
                detail: format!("{}: {e}", w.name),
            })?;
            Some(v)
        } else {
            if !cpu::supports(w.ty) {
                return Err(BackendError::UnsupportedType { op: "upload", ty: w.ty, backend: "cpu" });
            }
            None
        };
        Ok(CpuWeight { ty: w.ty, dims: w.dims, bytes: w.bytes, vector, name: w.name, parts: Vec::new() })
    }

    fn fuse(&self, parts: Vec<CpuWeight>) -> Result<CpuWeight> {
        fuse::fuse(parts)
    }

    fn alloc(&self, rows: usize, cols: usize) -> Result<Mat> {
        Ok(Mat::zeros(rows, cols))
    }

    fn alloc_kv(&self, spec: KvSpec) -> Result<CpuKv> {
        let n = spec
            .n_blocks
            .checked_mul(spec.block_size)
            .and_then(|x| x.checked_mul(spec.n_kv_heads * spec.head_dim))
            .ok_or_else(|| BackendError::Invalid { op: "alloc_kv", detail: format!("KV pool too large: {spec:?}") })?;
        Ok(CpuKv { spec, k: KvStore::new(spec.dtype, n), v: KvStore::new(spec.dtype, n) })
    }

    fn to_host(&self, x: &Mat) -> Result<Vec<f32>> {
        Ok(x.data.clone())
    }

    fn plan(&self, meta: AttnMeta) -> Result<AttnMeta> {
        Ok(meta)
    }

    fn copy_blocks(&self, kv: &mut CpuKv, pairs: &[(u32, u32)]) -> Result<()> {
        let block = kv.spec.block_size * kv.spec.n_kv_heads * kv.spec.head_dim;
        for &(src, dst) in pairs {
            if src as usize >= kv.spec.n_blocks || dst as usize >= kv.spec.n_blocks {
                return Err(BackendError::Invalid {
                    op: "copy_blocks",
                    detail: format!("block {src} -> {dst} outside the pool of {}", kv.spec.n_blocks),
                });
            }
            kv.k.copy_block(src as usize * block, dst as usize * block, block);
            kv.v.copy_block(src as usize * block, dst as usize * block, block);
        }
        Ok(())
    }

    fn embed(&self, table: &CpuWeight, ids: &[u32], out: &mut Mat) -> Result<()> {
        let t = table.mat("embed")?;
        out.reshape(ids.len(), t.cols);
        let row_bytes = t.ty.bytes_for(t.cols as u64).unwrap_or(0) as usize;
        for (i, &id) in ids.iter().enumerate() {
            let id = id as usize;
            if id >= t.rows {
                return Err(BackendError::Invalid { op: "embed", detail: format!("token id {id} >= vocabulary {}", t.rows) });
            }
            let src = &t.data[id * row_bytes..(id + 1) * row_bytes];
            ferrum_format::quant::dequantize(t.ty, src, &mut out.data[i * t.cols..(i + 1) * t.cols])
                .map_err(|e| BackendError::Invalid { op: "embed", detail: e.to_string() })?;
        }
        Ok(())
    }

    fn rms_norm(&self, x: &Mat, w: &CpuWeight, eps: f32, out: &mut Mat) -> Result<()> {
        let w = w.vector(x.cols, "rms_norm")?;
        check_cols("rms_norm", x, x.cols)?;
        out.reshape(x.rows, x.cols);
        let cols = x.cols;
        let o = par::SyncPtr::new(&mut out.data);
        par::par_chunks(x.rows, ROWS_PER_NORM_TASK, |r0, r1| {
            for r in r0..r1 {
                // SAFETY: row r of `out` belongs to this task only.
                norm::rms_norm_row(x.row(r), w, eps, unsafe { o.slice(r * cols, cols) });
            }
        });
        Ok(())
    }

    fn add_rms_norm(&self, residual: &mut Mat, delta: &Mat, w: &CpuWeight, eps: f32, out: &mut Mat) -> Result<()> {
        self.add(residual, delta)?;
        self.rms_norm(residual, w, eps, out)
    }

    fn add(&self, residual: &mut Mat, delta: &Mat) -> Result<()> {
        if residual.rows != delta.rows || residual.cols != delta.cols {
            return Err(BackendError::Shape {
                op: "add",
                detail: format!("[{}, {}] += [{}, {}]", residual.rows, residual.cols, delta.rows, delta.cols),
            });
        }
        for (a, b) in residual.data.iter_mut().zip(&delta.data) {
            *a += *b;
        }
        Ok(())
    }

    fn linear(&self, x: &Mat, w: &CpuWeight, bias: Option<&CpuWeight>, out: &mut Mat) -> Result<()> {
        if w.parts.is_empty() {
            let m = w.mat("linear")?;
            check_cols("linear", x, m.cols)?;
            out.reshape(x.rows, m.rows);
            cpu::matmul(&m, &x.data, x.rows, &mut out.data)?;
        } else {
            fuse::linear_parts(x, &w.parts, out)?;
        }
        if let Some(b) = bias {
            let b = b.vector(out.cols, "linear bias")?;
            for row in out.data.chunks_exact_mut(out.cols) {
                for (o, &bv) in row.iter_mut().zip(b) {
                    *o += bv;
                }
            }
        }
        Ok(())
    }

    fn qk_rope_store(
        &self,
        qkv: &Mat,
        q: &mut Mat,
        q_norm: Option<&CpuWeight>,
        k_norm: Option<&CpuWeight>,
        heads: &HeadSpec,
        rope: &Rope,
        meta: &AttnMeta,
        kv: &mut CpuKv,
    ) -> Result<()> {
        rope::qk_rope_store(qkv, q, q_norm, k_norm, heads, rope, meta, kv)
    }

    fn attention(&self, q: &Mat, heads: &HeadSpec, meta: &AttnMeta, kv: &CpuKv, out: &mut Mat) -> Result<()> {
        self.attention_with(cpu::Kernel::best(), q, heads, meta, kv, out)
    }

    fn silu_mul(&self, gate_up: &Mat, out: &mut Mat) -> Result<()> {
        if !gate_up.cols.is_multiple_of(2) {
            return Err(BackendError::Shape { op: "silu_mul", detail: format!("[{}, {}] is not [gate | up]", gate_up.rows, gate_up.cols) });
        }
        check_cols("silu_mul", gate_up, gate_up.cols)?;
        let ff = gate_up.cols / 2;
        out.reshape(gate_up.rows, ff);
        // Chunks of columns within rows: decode has few, long rows.
        let per_row = ff.div_ceil(SILU_CHUNK).max(1);
        let o = par::SyncPtr::new(&mut out.data);
        par::par_chunks(gate_up.rows * per_row, 1, |t, _| {
            let (r, c) = (t / per_row, t % per_row);
            let (c0, c1) = (c * SILU_CHUNK, ((c + 1) * SILU_CHUNK).min(ff));
            let gu = &gate_up.data[r * 2 * ff..(r + 1) * 2 * ff];
            // SAFETY: (row r, columns c0..c1) of `out` belong to this task only.
            let dst = unsafe { o.slice(r * ff + c0, c1 - c0) };
            for ((d, &g), &u) in dst.iter_mut().zip(&gu[c0..c1]).zip(&gu[ff + c0..ff + c1]) {
                *d = norm::silu(g) * u;
            }
        });
        Ok(())
    }

    fn moe(&self, x: &Mat, w: &MoeWeights<'_, CpuWeight>, spec: &MoeSpec, residual: &mut Mat) -> Result<()> {
        moe::run(x, w, spec, residual)
    }

    fn gather_rows(&self, x: &Mat, rows: &[usize], out: &mut Mat) -> Result<()> {
        out.reshape(rows.len(), x.cols);
        for (i, &r) in rows.iter().enumerate() {
            if r >= x.rows {
                return Err(BackendError::Invalid { op: "gather_rows", detail: format!("row {r} of {}", x.rows) });
            }
            out.data[i * x.cols..(i + 1) * x.cols].copy_from_slice(x.row(r));
        }
        Ok(())
    }
}
