//! The `Backend` trait: the narrow, LLM-shaped set of operations every
//! compute backend (CPU, CUDA) provides. The decoder in `ferrum-model` is
//! written once against it.
//!
//! Activations are row-major matrices `[rows, cols]` of f32 (the CPU backend)
//! or a device type; one row per token of the batch.

use ferrum_core::GgmlType;
use std::sync::Arc;

use crate::attn_meta::AttnMeta;
use crate::sample::{sample_row, SampleSpec};

/// Errors of backend operations: shape or type mismatches and bad metadata.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("{op}: weight type {ty} is not supported by the {backend} backend")]
    UnsupportedType { op: &'static str, ty: GgmlType, backend: &'static str },
    #[error("{op}: {detail}")]
    Invalid { op: &'static str, detail: String },
    #[error(transparent)]
    Kernel(#[from] crate::cpu::KernelError),
    /// A device (driver, compiler or library) call failed.
    #[error("{op}: device error: {detail}")]
    Device { op: &'static str, detail: String },
}

pub type Result<T> = std::result::Result<T, BackendError>;

/// Bytes of a weight tensor as held on the host: borrowed from a memory map
/// kept alive by `owner`, or owned.
#[derive(Clone)]
pub enum HostBytes {
    Owned(Arc<Vec<u8>>),
    Mapped { owner: Arc<dyn AsRef<[u8]> + Send + Sync>, start: usize, len: usize },
}

impl HostBytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            HostBytes::Owned(v) => v,
            HostBytes::Mapped { owner, start, len } => {
                let all: &[u8] = (**owner).as_ref();
                all.get(*start..start + len).unwrap_or(&[])
            }
        }
    }
}

/// A weight tensor on the host, in GGUF conventions: `dims[0]` is the
/// contiguous (input) dimension, `dims[1]` the rows (outputs), `dims[2]` the
/// experts of a 3-D MoE tensor.
#[derive(Clone)]
pub struct HostWeight {
    pub name: String,
    pub ty: GgmlType,
    pub dims: Vec<usize>,
    pub bytes: HostBytes,
}

impl HostWeight {
    pub fn n_elements(&self) -> usize {
        self.dims.iter().product()
    }
}

/// Element type of the paged KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvDType {
    F32,
    F16,
}

/// Geometry of one layer's paged K/V pools: `[n_blocks, block_size, n_kv_heads, head_dim]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvSpec {
    pub n_blocks: usize,
    pub block_size: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub dtype: KvDType,
}

/// Rotary embedding layout: which pairs of a head's elements rotate together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(i, i + d/2)` (GPT-NeoX, Hugging Face `rotate_half`).
    NeoX,
    /// Adjacent pairs `(2i, 2i + 1)` (GPT-J; llama.cpp's `llama` GGUFs).
    GptJ,
}

/// Rotary embedding tables: one inverse frequency per rotated pair.
#[derive(Clone, Debug)]
pub struct Rope {
    pub style: RopeStyle,
    /// `[head_dim / 2]`: angle of pair i at position p is `p * inv_freq[i]`.
    pub inv_freq: Vec<f32>,
}

/// Attention head geometry of one layer.
#[derive(Clone, Copy, Debug)]
pub struct HeadSpec {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Softmax scale, usually `1/sqrt(head_dim)`.
    pub scale: f32,
    /// Attend only to the last `window` positions (sliding-window attention).
    pub window: Option<usize>,
    /// Epsilon of the per-head QK RMSNorm.
    pub norm_eps: f32,
}

/// Routing parameters of a mixture-of-experts layer.
#[derive(Clone, Copy, Debug)]
pub struct MoeSpec {
    pub n_experts: usize,
    pub top_k: usize,
    /// Renormalise the top-k probabilities to sum to one (`norm_topk_prob`).
    pub renormalize: bool,
}

/// The weights of one MoE layer: router `[n_experts, hidden]` and the 3-D
/// expert tensors (gate/up: `[n_experts, ff, hidden]`, down `[n_experts, hidden, ff]`,
/// outermost first).
pub struct MoeWeights<'a, W> {
    pub router: &'a W,
    pub gate: &'a W,
    pub up: &'a W,
    pub down: &'a W,
}

/// The greedy choice of one row of logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowArgmax {
    /// The largest value's index, lowest on ties (NaN and -inf skipped);
    /// `None` when no value is finite or +inf.
    pub id: Option<u32>,
    /// Its logit.
    pub logit: f32,
    /// The row's log-sum-exp (NaN skipped): the chosen token's
    /// log-probability is `logit - lse`.
    pub lse: f32,
}

impl RowArgmax {
    /// Computed on the host (f32 exponentials summed in f64).
    pub fn of(row: &[f32]) -> RowArgmax {
        let mut best: Option<(u32, f32)> = None;
        for (i, &v) in row.iter().enumerate() {
            if !v.is_nan() && v != f32::NEG_INFINITY && best.is_none_or(|(_, b)| v > b) {
                best = Some((i as u32, v));
            }
        }
        let max = row.iter().copied().filter(|x| !x.is_nan()).fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().filter(|x| !x.is_nan()).map(|&x| f64::from((x - max).exp())).sum();
        let lse = if max == f32::NEG_INFINITY { f32::NEG_INFINITY } else { (f64::from(max) + sum.ln()) as f32 };
        RowArgmax { id: best.map(|b| b.0), logit: best.map_or(f32::NEG_INFINITY, |b| b.1), lse }
    }
}

/// The operations of a compute backend. Every method is fallible; shapes are
/// checked and mismatches reported, never assumed.
pub trait Backend: Send + Sync {
    /// An activation matrix `[rows, cols]`.
    type Act: Send;
    /// A weight tensor resident on the backend (quantized blocks stay quantized).
    type Weight: Send + Sync;
    /// One layer's paged K and V pools.
    type Kv: Send;
    /// A step's attention metadata in the form the backend's kernels read
    /// (built once per forward call by [`Backend::plan`], shared by all layers).
    type Plan: Send;

    fn name(&self) -> &'static str;

    fn upload(&self, w: HostWeight) -> Result<Self::Weight>;
    /// Join weights along their output rows into one (QKV, gate+up), so one
    /// `linear` computes them all: 2-D parts share the input dimension (their
    /// types may differ); 1-D parts (biases) are joined end to end.
    fn fuse(&self, parts: Vec<Self::Weight>) -> Result<Self::Weight>;
    fn alloc(&self, rows: usize, cols: usize) -> Result<Self::Act>;
    fn alloc_kv(&self, spec: KvSpec) -> Result<Self::Kv>;
    /// Copy an activation back to the host as `[rows * cols]` f32.
    fn to_host(&self, x: &Self::Act) -> Result<Vec<f32>>;
    /// Prepare a step's attention metadata for the kernels (plan/run).
    fn plan(&self, meta: AttnMeta) -> Result<Self::Plan>;
    /// Declare that the pass about to run on `plan` and the KV pools `kv` (it
    /// ends at the next `to_host`) launches the same kernels with the same
    /// arguments for every batch of its shape, so that the backend may record
    /// it once and replay it (CUDA graphs). Default: nothing.
    fn replayable(&self, _plan: &Self::Plan, _kv: &[Self::Kv]) -> Result<()> {
        Ok(())
    }
    /// Copy whole KV blocks `src -> dst` (copy-on-write of shared blocks).
    fn copy_blocks(&self, kv: &mut Self::Kv, pairs: &[(u32, u32)]) -> Result<()>;

    /// `out[i] = table[ids[i]]` (rows of a `[vocab, hidden]` table, any type).
    fn embed(&self, table: &Self::Weight, ids: &[u32], out: &mut Self::Act) -> Result<()>;
    /// `out = rms_norm(x) * w`, per row.
    fn rms_norm(&self, x: &Self::Act, w: &Self::Weight, eps: f32, out: &mut Self::Act) -> Result<()>;
    /// `residual += delta; out = rms_norm(residual) * w`, per row.
    fn add_rms_norm(
        &self,
        residual: &mut Self::Act,
        delta: &Self::Act,
        w: &Self::Weight,
        eps: f32,
        out: &mut Self::Act,
    ) -> Result<()>;
    /// `residual += delta`.
    fn add(&self, residual: &mut Self::Act, delta: &Self::Act) -> Result<()>;
    /// `out = x · wᵀ (+ bias)`; `w` is `[out, in]` dense or quantized.
    fn linear(&self, x: &Self::Act, w: &Self::Weight, bias: Option<&Self::Weight>, out: &mut Self::Act) -> Result<()>;
    /// Split a fused `qkv` row `[q | k | v]` (`[rows, (n_heads + 2·n_kv_heads)·head_dim]`),
    /// apply the per-head QK RMSNorm (optional) and the rotary embedding at each
    /// row's position, write K and V into the paged cache at each row's slot,
    /// and the rotated Q to `q` (`[rows, n_heads·head_dim]`).
    #[allow(clippy::too_many_arguments)]
    fn qk_rope_store(
        &self,
        qkv: &Self::Act,
        q: &mut Self::Act,
        q_norm: Option<&Self::Weight>,
        k_norm: Option<&Self::Weight>,
        heads: &HeadSpec,
        rope: &Rope,
        plan: &Self::Plan,
        kv: &mut Self::Kv,
    ) -> Result<()>;
    /// Causal paged attention of every row against its sequence's cached
    /// keys/values (positions `0..=pos`, limited by the window).
    fn attention(&self, q: &Self::Act, heads: &HeadSpec, plan: &Self::Plan, kv: &Self::Kv, out: &mut Self::Act) -> Result<()>;
    /// `out = silu(gate) * up` of a fused `[gate | up]` row (`[rows, 2·ff]` -> `[rows, ff]`).
    fn silu_mul(&self, gate_up: &Self::Act, out: &mut Self::Act) -> Result<()>;
    /// Mixture of experts: route each row, run its top-k experts
    /// (`down(silu(gate(x)) * up(x))`) and add the weighted sum to `residual`.
    fn moe(&self, x: &Self::Act, w: &MoeWeights<'_, Self::Weight>, spec: &MoeSpec, residual: &mut Self::Act) -> Result<()>;
    /// The greedy choice of each row of `x` (logits, rows of `cols`), so
    /// that only token ids and log-probabilities come back to the host.
    /// Default: on the host.
    fn argmax_rows(&self, x: &Self::Act, cols: usize) -> Result<Vec<RowArgmax>> {
        Ok(self.to_host(x)?.chunks(cols.max(1)).map(RowArgmax::of).collect())
    }
    /// Samples each row of `x` (logits, rows of `cols`) by its spec
    /// (`specs.len()` rows), so that only token ids and log-probabilities
    /// come back to the host. Default: on the host ([`sample_row`]).
    fn sample_rows(&self, x: &Self::Act, cols: usize, specs: &[SampleSpec]) -> Result<Vec<RowArgmax>> {
        let host = self.to_host(x)?;
        if Some(host.len()) != cols.checked_mul(specs.len()) {
            return Err(BackendError::Shape { op: "sample_rows", detail: format!("{} values for {} rows of {cols}", host.len(), specs.len()) });
        }
        if cols == 0 {
            return Ok(specs.iter().map(|s| sample_row(&[], s)).collect());
        }
        Ok(host.chunks(cols).zip(specs).map(|(r, s)| sample_row(r, s)).collect())
    }
    /// `out = x[rows]` (used to compute logits only for the rows asked for).
    fn gather_rows(&self, x: &Self::Act, rows: &[usize], out: &mut Self::Act) -> Result<()>;
}
