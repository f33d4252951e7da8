//! Loading the decoder's weights from a tensor source, strictly: shapes and
//! types checked, every tensor used exactly once.

use ferrum_kernels::{Backend, HostWeight};

use crate::config::{Ffn, ModelConfig, RopeScaling};
use crate::error::{ModelError, Result};
use crate::source::TensorSource;

pub enum FfnWeights<W> {
    /// `gate_up`: gate and up fused along the output rows, `[2·ff, hidden]`.
    Dense { gate_up: W, down: W },
    Moe { router: W, gate: W, up: W, down: W },
}

pub struct AttnWeights<W> {
    /// Q, K and V fused along the output rows: `[q_dim + 2·kv_dim, hidden]`.
    pub qkv: W,
    pub qkv_bias: Option<W>,
    pub q_norm: Option<W>,
    pub k_norm: Option<W>,
    pub o: W,
}

pub struct LayerWeights<W> {
    pub attn_norm: W,
    pub attn: AttnWeights<W>,
    pub ffn_norm: W,
    pub ffn: FfnWeights<W>,
}

pub struct Weights<W> {
    pub embed: W,
    pub layers: Vec<LayerWeights<W>>,
    pub out_norm: W,
    /// `None` when the output projection is tied to the embedding.
    pub output: Option<W>,
    /// Per-pair rotary frequency divisors from the file (Llama 3 GGUFs).
    pub rope_factors: Option<Vec<f32>>,
}

struct Loader<'a, B: Backend> {
    src: &'a mut dyn TensorSource,
    backend: &'a B,
    progress: &'a mut dyn FnMut(usize),
    loaded: usize,
}

impl<B: Backend> Loader<'_, B> {
    /// Take `name`, check its dims (GGUF order) and upload it.
    fn get(&mut self, name: &str, dims: &[usize]) -> Result<B::Weight> {
        let w = self.src.take(name)?;
        check_dims(&w, dims)?;
        self.loaded += 1;
        (self.progress)(self.loaded);
        Ok(self.backend.upload(w)?)
    }

    fn opt(&mut self, name: &str, dims: &[usize], present: bool) -> Result<Option<B::Weight>> {
        if present {
            self.get(name, dims).map(Some)
        } else {
            Ok(None)
        }
    }
}

fn check_dims(w: &HostWeight, dims: &[usize]) -> Result<()> {
    if w.dims != dims {
        return Err(ModelError::TensorShape { name: w.name.clone(), expected: dims.to_vec(), found: w.dims.clone() });
    }
    Ok(())
}

/// Number of tensors `load` will take (for a progress bar).
pub fn tensor_count(cfg: &ModelConfig) -> usize {
    let per_layer = 7 + if cfg.qkv_bias { 3 } else { 0 } + if cfg.qk_norm { 2 } else { 0 } + match cfg.ffn {
        Ffn::Dense { .. } => 0,
        Ffn::Moe { .. } => 1,
    };
    2 + usize::from(!cfg.tied_embeddings) + cfg.n_layers * per_layer
}

pub fn load<B: Backend>(
    cfg: &ModelConfig,
    src: &mut dyn TensorSource,
    backend: &B,
    progress: &mut dyn FnMut(usize),
) -> Result<Weights<B::Weight>> {
    let (h, qd, kvd, hd) = (cfg.hidden, cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
    let rope_factors = match cfg.rope.scaling {
        RopeScaling::FreqFactors => {
            let w = src.take("rope_freqs.weight")?;
            check_dims(&w, &[hd / 2])?;
            let mut v = vec![0.0f32; hd / 2];
            ferrum_format::quant::dequantize(w.ty, w.bytes.as_slice(), &mut v)
                .map_err(|e| ModelError::Config(format!("rope_freqs.weight: {e}")))?;
            Some(v)
        }
        _ => None,
    };
    let mut l = Loader { src, backend, progress, loaded: 0 };
    let embed = l.get("token_embd.weight", &[h, cfg.vocab_size])?;
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for i in 0..cfg.n_layers {
        let n = |s: &str| format!("blk.{i}.{s}");
        let qkv = vec![
            l.get(&n("attn_q.weight"), &[h, qd])?,
            l.get(&n("attn_k.weight"), &[h, kvd])?,
            l.get(&n("attn_v.weight"), &[h, kvd])?,
        ];
        let qkv_bias = if cfg.qkv_bias {
            let parts = vec![
                l.get(&n("attn_q.bias"), &[qd])?,
                l.get(&n("attn_k.bias"), &[kvd])?,
                l.get(&n("attn_v.bias"), &[kvd])?,
            ];
            Some(backend.fuse(parts)?)
        } else {
            None
        };
        let attn = AttnWeights {
            qkv: backend.fuse(qkv)?,
            qkv_bias,
            q_norm: l.opt(&n("attn_q_norm.weight"), &[hd], cfg.qk_norm)?,
            k_norm: l.opt(&n("attn_k_norm.weight"), &[hd], cfg.qk_norm)?,
            o: l.get(&n("attn_output.weight"), &[qd, h])?,
        };
        let ffn = match cfg.ffn {
            Ffn::Dense { ff } => FfnWeights::Dense {
                gate_up: backend.fuse(vec![l.get(&n("ffn_gate.weight"), &[h, ff])?, l.get(&n("ffn_up.weight"), &[h, ff])?])?,
                down: l.get(&n("ffn_down.weight"), &[ff, h])?,
            },
            Ffn::Moe { n_experts, ff, .. } => FfnWeights::Moe {
                router: l.get(&n("ffn_gate_inp.weight"), &[h, n_experts])?,
                gate: l.get(&n("ffn_gate_exps.weight"), &[h, ff, n_experts])?,
                up: l.get(&n("ffn_up_exps.weight"), &[h, ff, n_experts])?,
                down: l.get(&n("ffn_down_exps.weight"), &[ff, h, n_experts])?,
            },
        };
        layers.push(LayerWeights {
            attn_norm: l.get(&n("attn_norm.weight"), &[h])?,
            attn,
            ffn_norm: l.get(&n("ffn_norm.weight"), &[h])?,
            ffn,
        });
    }
    let out_norm = l.get("output_norm.weight", &[h])?;
    let output = if cfg.tied_embeddings { None } else { Some(l.get("output.weight", &[h, cfg.vocab_size])?) };
    let left = l.src.leftovers();
    if !left.is_empty() {
        return Err(ModelError::Leftover(left.join(", ")));
    }
    Ok(Weights { embed, layers, out_norm, output, rope_factors })
}
