//! The one generic decoder: Llama, Qwen2, Qwen3 and Qwen3-MoE differ only
//! through `ModelConfig` options (biases, QK-norm, dense or MoE FFN, tied
//! output, rope layout and scaling).

use ferrum_kernels::{AttnMeta, Backend, HeadSpec, MoeSpec, MoeWeights, Rope, SampleSpec, SeqPlan};

use crate::batch::{ForwardBatch, LogitRows, Logits, Picks};
use crate::config::{Ffn, ModelConfig};
use crate::error::{ModelError, Result};
use crate::kv::KvCache;
use crate::weights::{FfnWeights, Weights};

/// Receives every named intermediate of a forward pass (`[rows, cols]` f32).
pub type Tracer<'a> = &'a mut dyn FnMut(&str, Option<usize>, &[f32]);

pub struct Model<B: Backend> {
    pub cfg: ModelConfig,
    pub backend: B,
    weights: Weights<B::Weight>,
    rope: Rope,
    heads: HeadSpec,
}

/// `(sequence, position)` of each row asked for, and their logits on the backend.
type PassOut<A> = (Vec<(usize, usize)>, Option<A>);

/// Scratch activations of one forward pass.
struct Scratch<A> {
    x: A,
    h: A,
    qkv: A,
    q: A,
    attn: A,
    o: A,
    gate_up: A,
    act: A,
}

impl<B: Backend> Model<B> {
    pub fn new(cfg: ModelConfig, backend: B, weights: Weights<B::Weight>) -> Result<Self> {
        let mut inv_freq = cfg.rope_inv_freq();
        if let Some(f) = &weights.rope_factors {
            for (x, d) in inv_freq.iter_mut().zip(f) {
                *x /= d;
            }
        }
        let rope = Rope { style: cfg.rope.style, inv_freq };
        let heads = HeadSpec {
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
            window: cfg.sliding_window,
            norm_eps: cfg.rms_eps,
        };
        Ok(Model { cfg, backend, weights, rope, heads })
    }

    /// Run one step over every sequence of `batch`, writing their K/V into
    /// `kv`, and return the logits of the rows asked for.
    pub fn forward(&self, batch: &ForwardBatch<'_>, kv: &mut KvCache<B>, trace: Option<Tracer<'_>>) -> Result<Logits> {
        let (rows, logits) = self.pass(batch, kv, trace)?;
        let data = match &logits {
            Some(l) => self.backend.to_host(l)?,
            None => Vec::new(),
        };
        Ok(Logits { rows, data, vocab: self.cfg.vocab_size })
    }

    /// As [`Model::forward`], each asked-for row of sequence `i` chosen on
    /// the backend by `specs[i]` (greedy, or sampled by temperature, top-k,
    /// top-p, min-p, seed and step; see [`ferrum_kernels::sample`]): only
    /// ids and log-probabilities come back. All-greedy steps take the
    /// backend's argmax reduction, which is faster than a sampling pass.
    pub fn forward_sampled(&self, batch: &ForwardBatch<'_>, kv: &mut KvCache<B>, specs: &[SampleSpec]) -> Result<Picks> {
        if specs.len() != batch.seqs.len() {
            return Err(ModelError::Batch(format!("{} sampling specs for {} sequences", specs.len(), batch.seqs.len())));
        }
        let (rows, logits) = self.pass(batch, kv, None)?;
        let picks = match &logits {
            Some(l) => {
                let per_row: Vec<SampleSpec> = rows.iter().map(|&(s, _)| specs[s]).collect();
                if per_row.iter().all(|s| s.inv_temperature().is_none()) {
                    self.backend.argmax_rows(l, self.cfg.vocab_size)?
                } else {
                    self.backend.sample_rows(l, self.cfg.vocab_size, &per_row)?
                }
            }
            None => Vec::new(),
        };
        Ok(Picks { rows, picks })
    }

    /// The forward pass: `(sequence, position)` of each row asked for, and
    /// their logits `[rows, vocab]` on the backend (`None` when none is asked for).
    fn pass(&self, batch: &ForwardBatch<'_>, kv: &mut KvCache<B>, mut trace: Option<Tracer<'_>>) -> Result<PassOut<B::Act>> {
        let cfg = &self.cfg;
        if kv.layers.len() != cfg.n_layers {
            return Err(ModelError::Batch(format!("KV cache has {} layers, model {}", kv.layers.len(), cfg.n_layers)));
        }
        let plans: Vec<SeqPlan<'_>> = batch
            .seqs
            .iter()
            .map(|s| SeqPlan { n_new: s.tokens.len(), start_pos: s.start_pos, block_table: s.block_table })
            .collect();
        let meta = AttnMeta::build(&plans, kv.spec.block_size, kv.spec.n_blocks, cfg.max_ctx)?;
        let b = &self.backend;
        let meta = b.plan(meta)?;
        // Decode steps that want every logit row and no trace run the same
        // kernels for every batch of their shape: replayable.
        if trace.is_none() && batch.seqs.iter().all(|s| s.tokens.len() == 1 && matches!(s.logits, LogitRows::Last | LogitRows::All)) {
            b.replayable(&meta, &kv.layers)?;
        }
        let ids: Vec<u32> = batch.seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(ModelError::Batch(format!("token id {bad} >= vocabulary size {}", cfg.vocab_size)));
        }

        let n = ids.len();
        let mut s = Scratch {
            x: b.alloc(n, cfg.hidden)?,
            h: b.alloc(n, cfg.hidden)?,
            qkv: b.alloc(n, cfg.q_dim() + 2 * cfg.kv_dim())?,
            q: b.alloc(n, cfg.q_dim())?,
            attn: b.alloc(n, cfg.q_dim())?,
            o: b.alloc(n, cfg.hidden)?,
            gate_up: b.alloc(0, 0)?,
            act: b.alloc(0, 0)?,
        };
        let w = &self.weights;
        let mut tr = |name: &str, layer: Option<usize>, a: &B::Act| -> Result<()> {
            if let Some(t) = trace.as_mut() {
                t(name, layer, &b.to_host(a)?);
            }
            Ok(())
        };

        b.embed(&w.embed, &ids, &mut s.x)?;
        tr("embed", None, &s.x)?;
        // Whether `s.h` already holds this layer's attention-norm input (fused
        // into the previous layer's residual add).
        let mut normed = false;
        for (li, lw) in w.layers.iter().enumerate() {
            let l = Some(li);
            if !std::mem::take(&mut normed) {
                b.rms_norm(&s.x, &lw.attn_norm, cfg.rms_eps, &mut s.h)?;
            }
            tr("attn_norm", l, &s.h)?;
            let a = &lw.attn;
            // [rows, q_dim + 2·kv_dim]: one projection, split by the rope kernel.
            b.linear(&s.h, &a.qkv, a.qkv_bias.as_ref(), &mut s.qkv)?;
            tr("qkv", l, &s.qkv)?;
            b.qk_rope_store(&s.qkv, &mut s.q, a.q_norm.as_ref(), a.k_norm.as_ref(), &self.heads, &self.rope, &meta, &mut kv.layers[li])?;
            tr("q_rope", l, &s.q)?;
            b.attention(&s.q, &self.heads, &meta, &kv.layers[li], &mut s.attn)?;
            tr("attn", l, &s.attn)?;
            b.linear(&s.attn, &a.o, None, &mut s.o)?;
            tr("attn_out", l, &s.o)?;
            b.add_rms_norm(&mut s.x, &s.o, &lw.ffn_norm, cfg.rms_eps, &mut s.h)?;
            tr("ffn_norm", l, &s.h)?;
            match (&lw.ffn, &cfg.ffn) {
                (FfnWeights::Dense { gate_up, down }, _) => {
                    b.linear(&s.h, gate_up, None, &mut s.gate_up)?;
                    b.silu_mul(&s.gate_up, &mut s.act)?;
                    b.linear(&s.act, down, None, &mut s.o)?;
                    tr("ffn_out", l, &s.o)?;
                    match w.layers.get(li + 1) {
                        // Cross-layer fusion: residual add + the next layer's input norm.
                        Some(next) => {
                            b.add_rms_norm(&mut s.x, &s.o, &next.attn_norm, cfg.rms_eps, &mut s.h)?;
                            normed = true;
                        }
                        None => b.add(&mut s.x, &s.o)?,
                    }
                }
                (FfnWeights::Moe { router, gate, up, down }, Ffn::Moe { n_experts, top_k, renormalize, .. }) => {
                    let spec = MoeSpec { n_experts: *n_experts, top_k: *top_k, renormalize: *renormalize };
                    b.moe(&s.h, &MoeWeights { router, gate, up, down }, &spec, &mut s.x)?;
                }
                _ => return Err(ModelError::Config("FFN weights do not match the config".into())),
            }
            tr("residual", l, &s.x)?;
        }

        let mut rows = Vec::new();
        let mut picked = Vec::new();
        let mut row = 0;
        for (si, seq) in batch.seqs.iter().enumerate() {
            let n = seq.tokens.len();
            let range = match seq.logits {
                LogitRows::None => 0..0,
                LogitRows::Last => n - 1..n,
                LogitRows::All => 0..n,
                LogitRows::Tail(t) => n.saturating_sub(t)..n,
            };
            for i in range {
                rows.push((si, seq.start_pos + i));
                picked.push(row + i);
            }
            row += n;
        }
        if picked.is_empty() {
            return Ok((rows, None));
        }
        b.gather_rows(&s.x, &picked, &mut s.o)?;
        b.rms_norm(&s.o, &w.out_norm, cfg.rms_eps, &mut s.h)?;
        tr("output_norm", None, &s.h)?;
        let out_w = w.output.as_ref().unwrap_or(&w.embed);
        let mut logits = b.alloc(0, 0)?;
        b.linear(&s.h, out_w, None, &mut logits)?;
        Ok((rows, Some(logits)))
    }
}
