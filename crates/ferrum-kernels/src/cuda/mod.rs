//! The CUDA implementation of [`Backend`]: f32 activations on the device,
//! weights kept in their GGUF encoding and decoded inside the kernels, f16 or
//! f32 paged KV. Kernels are compiled at start-up by NVRTC for the device's
//! architecture (see `compile.rs`); the CUDA libraries are loaded
//! dynamically, so a build needs no CUDA toolkit.

pub mod compile;
mod kernels;
mod launch;
mod linear;
mod attention;
mod moe;
mod moe_grouped;
mod moe_mmq;
mod pass;
mod sample;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DriverError, LaunchConfig};
use ferrum_core::GgmlType;

use crate::attn_meta::AttnMeta;
use crate::backend::{Backend, BackendError, HeadSpec, HostWeight, KvDType, KvSpec, MoeSpec, MoeWeights, Result, Rope, RowArgmax};
use kernels::Kernels;
pub(crate) use launch::launch;
use pass::{DevAddr, DevBuf, PassKey, Recorder};

pub use attention::CudaPlan;

/// Options of the CUDA backend, parsed once by the caller.
#[derive(Clone, Debug, Default)]
pub struct CudaOptions {
    /// Device ordinal.
    pub device: usize,
    /// Where compiled kernels are cached (`None`: compile every start).
    pub cache_dir: Option<PathBuf>,
    /// Keep activations in f32 in the quantized matrix-vector kernels instead
    /// of quantizing them to 8 bits per 32 values (exact, slower).
    pub float_activations: bool,
    /// Launch every kernel of decode passes instead of recording each batch
    /// shape's pass once as a CUDA graph and replaying it.
    pub eager: bool,
    /// Start each kernel only once the previous one has finished, instead
    /// of letting it launch early and wait on the device (programmatic
    /// dependent launch, sm_90+).
    pub serial_launch: bool,
}

pub(crate) fn dev_err(op: &'static str, e: DriverError) -> BackendError {
    BackendError::Device { op, detail: format!("{e:?}") }
}

/// The weight types the CUDA kernels decode (matmul, embedding, experts).
pub fn weight_types() -> impl Iterator<Item = GgmlType> {
    kernels::TYPES.into_iter().map(|(t, _)| t)
}

/// Whether a CUDA driver and at least one device are present.
pub fn device_available() -> bool {
    // SAFETY: only tries to open the driver library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return false;
    }
    cudarc::driver::result::init().is_ok() && cudarc::driver::result::device::get_count().map(|n| n > 0).unwrap_or(false)
}

/// Bytes per row of 8-bit activations (as `q8_row` in gemv_q8.cu).
pub(crate) fn q8_row(cols: usize) -> usize {
    (cols * 5 / 4).div_ceil(16) * 16
}

/// Threads of a norm block (one row each: few values per thread keep the
/// chain of loads, reduction and 8-bit stores short).
const NORM_BLOCK: u32 = 1024;

pub(crate) fn grid1(n: usize, block: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: ((n as u32).div_ceil(block).max(1), 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 }
}

pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    k: Kernels,
    blas: linear::Blas,
    /// `(major, minor)` compute capability.
    pub compute_capability: (i32, i32),
    pub device_name: String,
    float_activations: bool,
    eager: bool,
    /// Kernels launch while their predecessor runs (sm_90+; see `pdl_sync`
    /// in common.cuh).
    pdl: bool,
    /// Buffers and graphs of recorded passes.
    pass: Recorder,
    /// Rotary frequencies on the device (one table per model).
    rope: Mutex<Option<(Vec<f32>, CudaSlice<f32>)>>,
}

/// A row-major f32 matrix `[rows, cols]` on the device. The buffer may be
/// larger than `rows * cols` (reused across steps).
pub struct CudaAct {
    buf: DevBuf<f32>,
    pub rows: usize,
    pub cols: usize,
    /// The same rows quantized to 8 bits (rows of `q8_row(cols)` bytes) by
    /// the norm that wrote them, for the 8-bit-activation kernels; valid only
    /// while `q8_valid` (every other write clears it).
    q8: Option<DevBuf<u8>>,
    q8_valid: bool,
}

impl CudaAct {
    fn new(buf: DevBuf<f32>, rows: usize, cols: usize) -> CudaAct {
        CudaAct { buf, rows, cols, q8: None, q8_valid: false }
    }
}

/// One part of a (possibly fused) weight: `rows` output rows of one type,
/// `len` bytes followed by WEIGHT_PAD zero bytes (so that the kernels' wide
/// loads of 2-byte-aligned blocks may read a little past the last block).
struct Part {
    ty: GgmlType,
    rows: usize,
    len: usize,
    buf: CudaSlice<u8>,
}

/// Zero bytes after each weight part (see `ld_words_a2` in common.cuh).
const WEIGHT_PAD: usize = 16;

/// A weight on the device. 2-D and 3-D weights hold their GGUF bytes as one
/// or more parts (fused weights keep parts of different types); 1-D weights
/// (norms, biases) are f32 vectors.
pub struct CudaWeight {
    pub ty: GgmlType,
    pub dims: Vec<usize>,
    name: String,
    parts: Vec<Part>,
    vector: Option<CudaSlice<f32>>,
}

/// One layer's paged K/V pools, `[n_blocks * block_size, n_kv_heads * head_dim]`
/// of f16 or f32.
pub struct CudaKv {
    pub spec: KvSpec,
    k: CudaSlice<u8>,
    v: CudaSlice<u8>,
}

impl CudaBackend {
    pub fn new(opts: &CudaOptions) -> Result<CudaBackend> {
        if !device_available() {
            return Err(BackendError::Device { op: "init", detail: "no CUDA driver or device found".into() });
        }
        let ctx = CudaContext::new(opts.device).map_err(|e| dev_err("init", e))?;
        // One stream: ordering is the stream's, so per-buffer events are not needed.
        // SAFETY: every buffer is used on this one stream only.
        unsafe { ctx.disable_event_tracking() };
        // Not the legacy default stream, which cannot be captured into graphs.
        let stream = ctx.new_stream().map_err(|e| dev_err("init", e))?;
        keep_freed_memory(&ctx)?;
        let cc = ctx.compute_capability().map_err(|e| dev_err("init", e))?;
        let device_name = ctx.name().unwrap_or_else(|_| "CUDA device".into());
        let arch = match cc {
            (9, 0) => "sm_90a".to_string(),
            (ma, mi) => format!("sm_{ma}{mi}"),
        };
        let cubin = compile::cubin_cached(&arch, opts.cache_dir.as_deref())?;
        let module = ctx.load_module(cudarc::nvrtc::Ptx::from_binary(cubin)).map_err(|e| dev_err("load kernels", e))?;
        let k = Kernels::load(&module)?;
        let blas = linear::Blas::new(&stream)?;
        Ok(CudaBackend {
            ctx,
            stream,
            k,
            blas,
            compute_capability: cc,
            device_name,
            float_activations: opts.float_activations,
            eager: opts.eager,
            pdl: cc.0 >= 9 && !opts.serial_launch,
            pass: Recorder::new(),
            rope: Mutex::new(None),
        })
    }

    /// Free and total device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.ctx.mem_get_info().map_err(|e| dev_err("mem_info", e))
    }

    /// Wait for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| dev_err("synchronize", e))
    }

    /// An activation `[rows, cols]` with the given host values (tests, tools).
    pub fn act_from_host(&self, data: &[f32], rows: usize, cols: usize) -> Result<CudaAct> {
        if data.len() != rows * cols {
            return Err(BackendError::Shape { op: "act_from_host", detail: format!("{} values for [{rows}, {cols}]", data.len()) });
        }
        Ok(CudaAct::new(self.upload_slice(data)?, rows, cols))
    }

    /// Whether a recorded pass is replaying (kernel launches are in its graph).
    pub(crate) fn replaying(&self) -> bool {
        self.pass.mode() == pass::Mode::Replay
    }

    /// Whether a pass that may be recorded is running (measure, capture, replay).
    pub(crate) fn pass_active(&self) -> bool {
        self.pass.mode() != pass::Mode::Eager
    }

    /// Whether a recorded pass is capturing or replaying (library calls that
    /// cannot be recorded must not run).
    pub(crate) fn recording(&self) -> bool {
        matches!(self.pass.mode(), pass::Mode::Capture | pass::Mode::Replay)
    }

    /// The 8-bit-activation kernels of `ty`, when they exist and are enabled.
    pub(crate) fn q8_kernels(&self, ty: GgmlType) -> Option<&kernels::Q8Kernels> {
        if self.float_activations {
            return None;
        }
        self.k.for_type(ty).ok()?.q8.as_ref()
    }

    /// Where a kernel writing `out` (already shaped) also puts its 8-bit form
    /// (0: nowhere, when 8-bit activations are off, the rows do not split
    /// into 32-value blocks, or the batch is one the tensor-core GEMMs take,
    /// which would not read it); marks that form valid.
    fn q8_out(&self, out: &mut CudaAct) -> Result<u64> {
        if self.float_activations || !out.cols.is_multiple_of(32) || out.rows >= linear::GEMM_MIN_ROWS {
            return Ok(0);
        }
        let n = out.rows * q8_row(out.cols);
        if out.q8.as_ref().map(|q| q.len() < n).unwrap_or(true) {
            out.q8 = Some(self.buffer::<u8>(n)?);
        }
        out.q8_valid = true;
        Ok(out.q8.as_ref().map(|q| self.ptr(q)).unwrap_or(0))
    }

    /// The 8-bit form of `x` at device address `xp`: the one its norm wrote,
    /// else quantized now into `tmp`.
    pub(crate) fn q8_of(&self, x: &CudaAct, xp: u64, tmp: &mut Option<DevBuf<u8>>) -> Result<u64> {
        if x.q8_valid {
            if let Some(q) = &x.q8 {
                return Ok(self.ptr(q));
            }
        }
        let q = self.quantize_q8(xp, x.rows, x.cols)?;
        let p = self.ptr(&q);
        *tmp = Some(q);
        Ok(p)
    }

    /// Per-row choices the argmax and sampling kernels wrote at `out`
    /// (`[rows, 3]`: id bits, raw logit, log-sum-exp), copied to the host.
    pub(crate) fn picks_to_host(&self, out: u64, rows: usize) -> Result<Vec<RowArgmax>> {
        let mut host = vec![0.0f32; 3 * rows];
        // SAFETY: `out` holds 3·rows values; the copy completes before `host` is read.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(&mut host, out, self.stream.cu_stream()) }.map_err(|e| dev_err("picks to host", e))?;
        self.synchronize()?;
        Ok(host
            .chunks(3)
            .map(|v| {
                let id = v[0].to_bits() as i32;
                RowArgmax { id: (id >= 0).then_some(id as u32), logit: v[1], lse: v[2] }
            })
            .collect())
    }

    /// `x` `[rows, cols]` (at device address `xp`) quantized to 8 bits per 32
    /// values for the 8-bit-activation kernels (rows of `q8_row(cols)` bytes).
    pub(crate) fn quantize_q8(&self, xp: u64, rows: usize, cols: usize) -> Result<DevBuf<u8>> {
        let out = self.buffer::<u8>(rows * q8_row(cols))?;
        let (op, r, c) = (self.ptr(&out), rows as i32, cols as i32);
        launch!(self, &self.k.quantize_q8, grid1(rows * cols, 128), &xp, &op, &r, &c)?;
        Ok(out)
    }

    pub(crate) fn ptr(&self, b: &impl DevAddr) -> u64 {
        b.addr(&self.stream)
    }

    /// An uninitialised buffer of `n` elements (at least one) for the current
    /// pass (from the arena of a recorded pass).
    pub(crate) fn buffer<T: cudarc::driver::DeviceRepr>(&self, n: usize) -> Result<DevBuf<T>> {
        if let Some(b) = self.pass.alloc(&self.stream, n.max(1))? {
            return Ok(b);
        }
        Ok(DevBuf::Own(self.persistent(n)?))
    }

    /// An uninitialised buffer that outlives passes (weights, caches).
    pub(crate) fn persistent<T: cudarc::driver::DeviceRepr>(&self, n: usize) -> Result<CudaSlice<T>> {
        // SAFETY: every buffer is written by a kernel or copy before it is read.
        unsafe { self.stream.alloc::<T>(n.max(1)) }.map_err(|e| dev_err("alloc", e))
    }

    /// A weight part's buffer: `len` data bytes, written by `fill` (given the
    /// first `len` bytes), then WEIGHT_PAD zero bytes.
    fn padded_part(&self, len: usize, fill: impl FnOnce(&mut cudarc::driver::CudaViewMut<'_, u8>) -> Result<()>) -> Result<CudaSlice<u8>> {
        let mut buf = self.persistent::<u8>(len + WEIGHT_PAD)?;
        self.stream.memset_zeros(&mut buf.slice_mut(len..len + WEIGHT_PAD)).map_err(|e| dev_err("weight pad", e))?;
        fill(&mut buf.slice_mut(0..len))?;
        Ok(buf)
    }

    /// Host data for the current pass (staged through pinned memory in a recorded pass).
    pub(crate) fn upload_slice<T: cudarc::driver::DeviceRepr>(&self, data: &[T]) -> Result<DevBuf<T>> {
        if data.is_empty() {
            return self.buffer(1);
        }
        if let Some(b) = self.pass.upload(&self.stream, data)? {
            return Ok(b);
        }
        Ok(DevBuf::Own(self.persistent_upload(data)?))
    }

    /// Host data that outlives passes.
    pub(crate) fn persistent_upload<T: cudarc::driver::DeviceRepr>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        if data.is_empty() {
            return self.persistent(1);
        }
        self.stream.clone_htod(data).map_err(|e| dev_err("upload", e))
    }

    /// Give `a` the shape `[rows, cols]`, growing its buffer when needed.
    pub(crate) fn shape(&self, a: &mut CudaAct, rows: usize, cols: usize) -> Result<()> {
        if a.buf.len() < rows * cols {
            a.buf = self.buffer(rows * cols)?;
        }
        a.rows = rows;
        a.cols = cols;
        a.q8_valid = false;
        Ok(())
    }

    fn vector<'w>(&self, w: &'w CudaWeight, n: usize, op: &'static str) -> Result<&'w CudaSlice<f32>> {
        match &w.vector {
            Some(v) if w.dims == [n] => Ok(v),
            _ => Err(BackendError::Shape { op, detail: format!("{} should be a vector of {n}, has dims {:?}", w.name, w.dims) }),
        }
    }

    fn rope_table(&self, rope: &Rope) -> Result<u64> {
        let mut guard = self.rope.lock().map_err(|_| BackendError::Invalid { op: "rope", detail: "lock poisoned".into() })?;
        if guard.as_ref().map(|(f, _)| f != &rope.inv_freq).unwrap_or(true) {
            *guard = Some((rope.inv_freq.clone(), self.persistent_upload(&rope.inv_freq)?));
        }
        Ok(guard.as_ref().map(|(_, d)| self.ptr(d)).unwrap_or(0))
    }
}

/// Let the device's stream-ordered allocator keep freed memory for reuse
/// instead of returning it at every synchronisation: each step allocates and
/// frees the same scratch sizes, which then cost no driver calls.
fn keep_freed_memory(ctx: &Arc<CudaContext>) -> Result<()> {
    use cudarc::driver::sys;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold = u64::MAX;
    // SAFETY: plain driver calls on the context's own device, with out-parameters.
    unsafe {
        sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()).result().map_err(|e| dev_err("memory pool", e))?;
        sys::cuMemPoolSetAttribute(pool, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &mut threshold as *mut u64 as *mut std::ffi::c_void)
            .result()
            .map_err(|e| dev_err("memory pool", e))?;
    }
    Ok(())
}

fn same_shape(op: &'static str, a: &CudaAct, b: &CudaAct) -> Result<()> {
    if a.rows != b.rows || a.cols != b.cols {
        return Err(BackendError::Shape { op, detail: format!("[{}, {}] vs [{}, {}]", a.rows, a.cols, b.rows, b.cols) });
    }
    Ok(())
}

impl Backend for CudaBackend {
    type Act = CudaAct;
    type Weight = CudaWeight;
    type Kv = CudaKv;
    type Plan = CudaPlan;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn upload(&self, w: HostWeight) -> Result<CudaWeight> {
        let n = w.n_elements();
        let bytes = w.bytes.as_slice();
        if w.ty.bytes_for(n as u64).map(|b| b as usize) != Some(bytes.len()) {
            return Err(BackendError::Shape { op: "upload", detail: format!("{}: {} bytes for {:?} of {}", w.name, bytes.len(), w.dims, w.ty) });
        }
        if w.dims.len() == 1 {
            let mut v = vec![0.0f32; n];
            ferrum_format::quant::dequantize(w.ty, bytes, &mut v)
                .map_err(|e| BackendError::Invalid { op: "upload", detail: format!("{}: {e}", w.name) })?;
            let vector = Some(self.persistent_upload(&v)?);
            return Ok(CudaWeight { ty: w.ty, dims: w.dims, name: w.name, parts: Vec::new(), vector });
        }
        if !self.k.supports(w.ty) || w.dims[0] % 32 != 0 || w.dims[0] % w.ty.block_size() != 0 {
            return Err(BackendError::UnsupportedType { op: "upload", ty: w.ty, backend: "cuda" });
        }
        let part = Part { ty: w.ty, rows: w.dims[1], len: bytes.len(), buf: self.padded_part(bytes.len(), |buf| {
            self.stream.memcpy_htod(bytes, buf).map_err(|e| dev_err("upload", e))
        })? };
        Ok(CudaWeight { ty: w.ty, dims: w.dims, name: w.name, parts: vec![part], vector: None })
    }

    fn fuse(&self, parts: Vec<CudaWeight>) -> Result<CudaWeight> {
        let shape = |detail: String| BackendError::Shape { op: "fuse", detail };
        let first = parts.first().ok_or_else(|| shape("no parts".into()))?;
        let name = parts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join("+");
        let ty = first.ty;
        if parts.iter().all(|p| p.dims.len() == 1) {
            let n: usize = parts.iter().map(|p| p.dims[0]).sum();
            let mut out = self.persistent::<f32>(n)?;
            let mut off = 0;
            for p in &parts {
                let v = self.vector(p, p.dims[0], "fuse")?;
                self.stream.memcpy_dtod(v, &mut out.slice_mut(off..off + p.dims[0])).map_err(|e| dev_err("fuse", e))?;
                off += p.dims[0];
            }
            return Ok(CudaWeight { ty: GgmlType::F32, dims: vec![n], name, parts: Vec::new(), vector: Some(out) });
        }
        let cols = first.dims[0];
        if parts.iter().any(|p| p.dims.len() != 2 || p.dims[0] != cols) {
            let dims: Vec<_> = parts.iter().map(|p| p.dims.clone()).collect();
            return Err(shape(format!("{name}: parts must be 2-D with one input size, got {dims:?}")));
        }
        let rows: usize = parts.iter().map(|p| p.dims[1]).sum();
        // Neighbouring parts of one type become one matrix (one kernel launch).
        let mut merged: Vec<Part> = Vec::new();
        for p in parts.into_iter().flat_map(|p| p.parts) {
            match merged.last_mut() {
                Some(last) if last.ty == p.ty => {
                    let (n, len) = (last.len, last.len + p.len);
                    last.buf = self.padded_part(len, |buf| {
                        self.stream.memcpy_dtod(&last.buf.slice(0..n), &mut buf.slice_mut(0..n)).map_err(|e| dev_err("fuse", e))?;
                        self.stream.memcpy_dtod(&p.buf.slice(0..p.len), &mut buf.slice_mut(n..len)).map_err(|e| dev_err("fuse", e))
                    })?;
                    last.len = len;
                    last.rows += p.rows;
                }
                _ => merged.push(p),
            }
        }
        Ok(CudaWeight { ty, dims: vec![cols, rows], name, parts: merged, vector: None })
    }

    fn alloc(&self, rows: usize, cols: usize) -> Result<CudaAct> {
        Ok(CudaAct::new(self.buffer(rows * cols)?, rows, cols))
    }

    fn alloc_kv(&self, spec: KvSpec) -> Result<CudaKv> {
        let el = match spec.dtype {
            KvDType::F32 => 4,
            KvDType::F16 => 2,
        };
        let bytes = spec
            .n_blocks
            .checked_mul(spec.block_size)
            .and_then(|x| x.checked_mul(spec.n_kv_heads * spec.head_dim * el))
            .ok_or_else(|| BackendError::Invalid { op: "alloc_kv", detail: format!("KV pool too large: {spec:?}") })?;
        let zeros = |_| self.stream.alloc_zeros::<u8>(bytes.max(4)).map_err(|e| dev_err("alloc_kv", e));
        Ok(CudaKv { spec, k: zeros(())?, v: zeros(())? })
    }

    fn to_host(&self, x: &CudaAct) -> Result<Vec<f32>> {
        // A recorded pass ends here: its graph runs before the copy.
        self.pass.finish(&self.stream)?;
        let n = x.rows * x.cols;
        let mut out = vec![0.0f32; n];
        if n > 0 {
            // SAFETY: `x.buf` holds at least `n` values; the copy completes before `out` is returned.
            unsafe { cudarc::driver::result::memcpy_dtoh_async(&mut out, self.ptr(&x.buf), self.stream.cu_stream()) }
                .map_err(|e| dev_err("to_host", e))?;
        }
        self.synchronize()?;
        Ok(out)
    }

    fn argmax_rows(&self, x: &CudaAct, cols: usize) -> Result<Vec<RowArgmax>> {
        // A recorded pass ends here: its graph runs before the reduction.
        self.pass.finish(&self.stream)?;
        if x.cols != cols {
            return Err(BackendError::Shape { op: "argmax_rows", detail: format!("rows of {} values, expected {cols}", x.cols) });
        }
        if x.rows == 0 {
            return Ok(Vec::new());
        }
        // Slices of about 4096 values, at most 32 per row, each one block.
        let parts = cols.div_ceil(4096).clamp(1, 32);
        let tmp = self.buffer::<f32>(4 * parts * x.rows)?;
        let out = self.buffer::<f32>(3 * x.rows)?;
        let (xp, c, pi, tp, op) = (self.ptr(&x.buf), cols as i32, parts as i32, self.ptr(&tmp), self.ptr(&out));
        let cfg = LaunchConfig { grid_dim: (x.rows as u32, parts as u32, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        launch!(self, &self.k.argmax_part, cfg, &xp, &c, &pi, &tp)?;
        let cfg = LaunchConfig { grid_dim: (x.rows as u32, 1, 1), block_dim: (32, 1, 1), shared_mem_bytes: 0 };
        launch!(self, &self.k.argmax_merge, cfg, &tp, &pi, &op)?;
        self.picks_to_host(op, x.rows)
    }

    fn sample_rows(&self, x: &CudaAct, cols: usize, specs: &[crate::sample::SampleSpec]) -> Result<Vec<RowArgmax>> {
        // A recorded pass ends here: its graph runs before the sampling.
        self.pass.finish(&self.stream)?;
        sample::sample_rows(self, x, cols, specs)
    }

    fn plan(&self, meta: AttnMeta) -> Result<CudaPlan> {
        self.pass.abort(&self.stream)?;
        CudaPlan::new(meta)
    }

    fn replayable(&self, plan: &CudaPlan, kv: &[CudaKv]) -> Result<()> {
        let rows = plan.meta.rows.len();
        if self.eager || rows == 0 || rows >= linear::GEMM_MIN_ROWS || plan.meta.seqs.iter().any(|s| s.n_rows != 1) {
            return Ok(());
        }
        // A graph holds the KV pools' addresses: another cache is another shape.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for l in kv {
            std::hash::Hash::hash(&(self.ptr(&l.k), self.ptr(&l.v)), &mut h);
        }
        let key = PassKey { rows, span: attention::decode_span(plan), kv: std::hash::Hasher::finish(&h) };
        self.pass.begin(&self.ctx, &self.stream, key)?;
        plan.upload(self).map(|_| ())
    }

    fn copy_blocks(&self, kv: &mut CudaKv, pairs: &[(u32, u32)]) -> Result<()> {
        self.pass.abort(&self.stream)?;
        if pairs.is_empty() {
            return Ok(());
        }
        let flat: Vec<u32> = pairs.iter().flat_map(|&(s, d)| [s, d]).collect();
        if let Some(&b) = flat.iter().find(|&&b| b as usize >= kv.spec.n_blocks) {
            return Err(BackendError::Invalid { op: "copy_blocks", detail: format!("block {b} outside the pool of {}", kv.spec.n_blocks) });
        }
        let el = if kv.spec.dtype == KvDType::F16 { 2 } else { 4 };
        let words = (kv.spec.block_size * kv.spec.n_kv_heads * kv.spec.head_dim * el / 4) as i32;
        let d = self.upload_slice(&flat)?;
        let (kp, vp, dp) = (self.ptr(&kv.k), self.ptr(&kv.v), self.ptr(&d));
        let cfg = LaunchConfig { grid_dim: (pairs.len() as u32, 2, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        launch!(self, &self.k.copy_blocks, cfg, &kp, &vp, &dp, &words)
    }

    fn embed(&self, table: &CudaWeight, ids: &[u32], out: &mut CudaAct) -> Result<()> {
        let [part] = table.parts.as_slice() else {
            return Err(BackendError::Shape { op: "embed", detail: format!("{} is not a plain 2-D table", table.name) });
        };
        let cols = table.dims[0];
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= part.rows) {
            return Err(BackendError::Invalid { op: "embed", detail: format!("token id {bad} >= vocabulary {}", part.rows) });
        }
        self.shape(out, ids.len(), cols)?;
        if ids.is_empty() {
            return Ok(());
        }
        let d = self.upload_slice(ids)?;
        let (tp, dp, op, c) = (self.ptr(&part.buf), self.ptr(&d), self.ptr(&out.buf), cols as i32);
        let cfg = LaunchConfig { grid_dim: (ids.len() as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        launch!(self, &self.k.for_type(part.ty)?.embed, cfg, &tp, &dp, &op, &c)
    }

    fn rms_norm(&self, x: &CudaAct, w: &CudaWeight, eps: f32, out: &mut CudaAct) -> Result<()> {
        let wv = self.vector(w, x.cols, "rms_norm")?;
        self.shape(out, x.rows, x.cols)?;
        if x.rows == 0 {
            return Ok(());
        }
        let qp = self.q8_out(out)?;
        let (xp, wp, op, c) = (self.ptr(&x.buf), self.ptr(wv), self.ptr(&out.buf), x.cols as i32);
        let cfg = LaunchConfig { grid_dim: (x.rows as u32, 1, 1), block_dim: (NORM_BLOCK, 1, 1), shared_mem_bytes: 0 };
        launch!(self, &self.k.rms_norm, cfg, &xp, &wp, &op, &qp, &c, &eps)
    }

    fn add_rms_norm(&self, residual: &mut CudaAct, delta: &CudaAct, w: &CudaWeight, eps: f32, out: &mut CudaAct) -> Result<()> {
        same_shape("add_rms_norm", residual, delta)?;
        let wv = self.vector(w, residual.cols, "add_rms_norm")?;
        self.shape(out, residual.rows, residual.cols)?;
        if residual.rows == 0 {
            return Ok(());
        }
        residual.q8_valid = false;
        let qp = self.q8_out(out)?;
        let (rp, dp, wp, op, c) = (self.ptr(&residual.buf), self.ptr(&delta.buf), self.ptr(wv), self.ptr(&out.buf), residual.cols as i32);
        let cfg = LaunchConfig { grid_dim: (residual.rows as u32, 1, 1), block_dim: (NORM_BLOCK, 1, 1), shared_mem_bytes: 0 };
        launch!(self, &self.k.add_rms_norm, cfg, &rp, &dp, &wp, &op, &qp, &c, &eps)
    }

    fn add(&self, residual: &mut CudaAct, delta: &CudaAct) -> Result<()> {
        same_shape("add", residual, delta)?;
        let n = residual.rows * residual.cols;
        if n == 0 {
            return Ok(());
        }
        residual.q8_valid = false;
        let (rp, dp, ni) = (self.ptr(&residual.buf), self.ptr(&delta.buf), n as i32);
        launch!(self, &self.k.add_inplace, grid1(n, 256), &rp, &dp, &ni)
    }

    fn linear(&self, x: &CudaAct, w: &CudaWeight, bias: Option<&CudaWeight>, out: &mut CudaAct) -> Result<()> {
        linear::run(self, x, w, bias, out)
    }

    fn qk_rope_store(
        &self,
        qkv: &CudaAct,
        q: &mut CudaAct,
        q_norm: Option<&CudaWeight>,
        k_norm: Option<&CudaWeight>,
        heads: &HeadSpec,
        rope: &Rope,
        plan: &CudaPlan,
        kv: &mut CudaKv,
    ) -> Result<()> {
        attention::qk_rope_store(self, qkv, q, q_norm, k_norm, heads, rope, plan, kv)
    }

    fn attention(&self, q: &CudaAct, heads: &HeadSpec, plan: &CudaPlan, kv: &CudaKv, out: &mut CudaAct) -> Result<()> {
        attention::attention(self, q, heads, plan, kv, out)
    }

    fn silu_mul(&self, gate_up: &CudaAct, out: &mut CudaAct) -> Result<()> {
        if gate_up.cols % 2 != 0 {
            return Err(BackendError::Shape { op: "silu_mul", detail: format!("[{}, {}] is not [gate | up]", gate_up.rows, gate_up.cols) });
        }
        let ff = gate_up.cols / 2;
        self.shape(out, gate_up.rows, ff)?;
        let n = gate_up.rows * ff;
        if n == 0 {
            return Ok(());
        }
        let qp = self.q8_out(out)?;
        let (gp, op, r, f) = (self.ptr(&gate_up.buf), self.ptr(&out.buf), gate_up.rows as i32, ff as i32);
        launch!(self, &self.k.silu_mul, grid1(n, 256), &gp, &op, &qp, &r, &f)
    }

    fn moe(&self, x: &CudaAct, w: &MoeWeights<'_, CudaWeight>, spec: &MoeSpec, residual: &mut CudaAct) -> Result<()> {
        moe::run(self, x, w, spec, residual)
    }

    fn gather_rows(&self, x: &CudaAct, rows: &[usize], out: &mut CudaAct) -> Result<()> {
        if let Some(&r) = rows.iter().find(|&&r| r >= x.rows) {
            return Err(BackendError::Invalid { op: "gather_rows", detail: format!("row {r} of {}", x.rows) });
        }
        self.shape(out, rows.len(), x.cols)?;
        if rows.is_empty() {
            return Ok(());
        }
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let d = self.upload_slice(&idx)?;
        let (xp, dp, op, c) = (self.ptr(&x.buf), self.ptr(&d), self.ptr(&out.buf), x.cols as i32);
        let cfg = LaunchConfig { grid_dim: (rows.len() as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        launch!(self, &self.k.gather_rows, cfg, &xp, &dp, &op, &c)
    }
}
