//! `ModelConfig`: every architecture quirk normalised once, at load time,
//! into typed options the generic decoder reads.

use ferrum_format::gguf::GgufFile;
use ferrum_format::hf_config::{HfConfig, RopeScalingKind};
use ferrum_kernels::RopeStyle;

use crate::error::{ModelError, Result};

/// Feed-forward block of every layer.
#[derive(Clone, Debug, PartialEq)]
pub enum Ffn {
    /// SwiGLU MLP with `ff` intermediate features.
    Dense { ff: usize },
    /// Mixture of SwiGLU experts.
    Moe { n_experts: usize, top_k: usize, ff: usize, renormalize: bool },
}

/// How rotary frequencies are scaled.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Llama 3 frequency-dependent scaling.
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_max_pos: f32 },
    /// Per-pair divisors read from the model file (`rope_freqs.weight`).
    FreqFactors,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub theta: f32,
    pub style: RopeStyle,
    pub scaling: RopeScaling,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Architecture name as found in the file (for display).
    pub arch: String,
    pub vocab_size: usize,
    pub hidden: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub max_ctx: usize,
    pub rope: RopeConfig,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    pub ffn: Ffn,
    pub tied_embeddings: bool,
    pub sliding_window: Option<usize>,
}

/// Per-architecture facts that differ between families.
struct ArchTraits {
    style: RopeStyle,
    qkv_bias: bool,
    qk_norm: bool,
    moe: bool,
}

fn gguf_traits(arch: &str) -> Result<ArchTraits> {
    let t = |style, qkv_bias, qk_norm, moe| Ok(ArchTraits { style, qkv_bias, qk_norm, moe });
    match arch {
        // llama.cpp's converter permutes Q/K of `llama` models for adjacent-pair rotation.
        "llama" => t(RopeStyle::GptJ, false, false, false),
        "qwen2" => t(RopeStyle::NeoX, true, false, false),
        "qwen3" => t(RopeStyle::NeoX, false, true, false),
        "qwen3moe" => t(RopeStyle::NeoX, false, true, true),
        other => Err(ModelError::UnsupportedArch(other.to_string())),
    }
}

fn hf_traits(arch: &str) -> Result<ArchTraits> {
    let t = |qkv_bias, qk_norm, moe| Ok(ArchTraits { style: RopeStyle::NeoX, qkv_bias, qk_norm, moe });
    match arch {
        "LlamaForCausalLM" | "MistralForCausalLM" => t(false, false, false),
        "Qwen2ForCausalLM" => t(true, false, false),
        "Qwen3ForCausalLM" => t(false, true, false),
        "Qwen3MoeForCausalLM" => t(false, true, true),
        other => Err(ModelError::UnsupportedArch(other.to_string())),
    }
}

fn key_usize(f: &GgufFile, key: &str) -> Result<usize> {
    let v = f.get(key).ok_or_else(|| ModelError::MissingKey(key.to_string()))?;
    v.as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| ModelError::BadKey { key: key.to_string(), detail: format!("expected an integer, found {}", v.type_name()) })
}

fn key_f32(f: &GgufFile, key: &str) -> Result<Option<f32>> {
    match f.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_f32()
            .map(Some)
            .ok_or_else(|| ModelError::BadKey { key: key.to_string(), detail: format!("expected a number, found {}", v.type_name()) }),
    }
}

impl ModelConfig {
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig> {
        let arch = f
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .ok_or_else(|| ModelError::MissingKey("general.architecture".into()))?
            .to_string();
        let tr = gguf_traits(&arch)?;
        let k = |s: &str| format!("{arch}.{s}");
        let hidden = key_usize(f, &k("embedding_length"))?;
        let n_heads = key_usize(f, &k("attention.head_count"))?;
        let n_kv_heads = match f.get(&k("attention.head_count_kv")) {
            Some(_) => key_usize(f, &k("attention.head_count_kv"))?,
            None => n_heads,
        };
        let head_dim = match f.get(&k("attention.key_length")) {
            Some(_) => key_usize(f, &k("attention.key_length"))?,
            None if n_heads > 0 => hidden / n_heads,
            None => 0,
        };
        let embd = f.tensor("token_embd.weight").ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?;
        let vocab_size = embd.dims.get(1).copied().unwrap_or(0) as usize;
        let ffn = if tr.moe {
            Ffn::Moe {
                n_experts: key_usize(f, &k("expert_count"))?,
                top_k: key_usize(f, &k("expert_used_count"))?,
                ff: key_usize(f, &k("expert_feed_forward_length"))?,
                // llama.cpp always renormalises Qwen3-MoE routing weights.
                renormalize: f.get(&k("expert_weights_norm")).and_then(|v| v.as_bool()).unwrap_or(true),
            }
        } else {
            Ffn::Dense { ff: key_usize(f, &k("feed_forward_length"))? }
        };
        let scaling = if f.tensor("rope_freqs.weight").is_some() { RopeScaling::FreqFactors } else { RopeScaling::None };
        let cfg = ModelConfig {
            vocab_size,
            hidden,
            n_layers: key_usize(f, &k("block_count"))?,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_eps: key_f32(f, &k("attention.layer_norm_rms_epsilon"))?
                .ok_or_else(|| ModelError::MissingKey(k("attention.layer_norm_rms_epsilon")))?,
            max_ctx: key_usize(f, &k("context_length"))?,
            rope: RopeConfig { theta: key_f32(f, &k("rope.freq_base"))?.unwrap_or(10000.0), style: tr.style, scaling },
            qkv_bias: tr.qkv_bias && f.tensor("blk.0.attn_q.bias").is_some(),
            qk_norm: tr.qk_norm,
            ffn,
            tied_embeddings: f.tensor("output.weight").is_none(),
            sliding_window: None,
            arch,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_hf(c: &HfConfig) -> Result<ModelConfig> {
        let arch = c.architectures.first().cloned().ok_or_else(|| ModelError::MissingKey("architectures".into()))?;
        let tr = hf_traits(&arch)?;
        let n_heads = c.num_attention_heads;
        let ffn = if tr.moe {
            let need = |v: Option<usize>, key: &str| v.ok_or_else(|| ModelError::MissingKey(key.to_string()));
            Ffn::Moe {
                n_experts: need(c.num_experts, "num_experts")?,
                top_k: need(c.num_experts_per_tok, "num_experts_per_tok")?,
                ff: need(c.moe_intermediate_size, "moe_intermediate_size")?,
                renormalize: c.norm_topk_prob,
            }
        } else {
            Ffn::Dense { ff: c.intermediate_size }
        };
        if tr.moe && (0..c.num_hidden_layers).any(|l| !c.is_moe_layer(l)) {
            return Err(ModelError::Config("dense layers inside a MoE model (mlp_only_layers / decoder_sparse_step) are not supported".into()));
        }
        let scaling = match c.rope_scaling.as_ref().map(|s| s.kind()).transpose()? {
            None | Some(RopeScalingKind::None) => RopeScaling::None,
            Some(RopeScalingKind::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings }) => {
                RopeScaling::Llama3 {
                    factor: factor as f32,
                    low_freq_factor: low_freq_factor as f32,
                    high_freq_factor: high_freq_factor as f32,
                    original_max_pos: original_max_position_embeddings as f32,
                }
            }
            Some(other) => return Err(ModelError::Config(format!("rope scaling {other:?} is not supported"))),
        };
        let window = if c.use_sliding_window || arch == "MistralForCausalLM" { c.sliding_window } else { None };
        let cfg = ModelConfig {
            vocab_size: c.vocab_size,
            hidden: c.hidden_size,
            n_layers: c.num_hidden_layers,
            n_heads,
            n_kv_heads: c.num_key_value_heads.unwrap_or(n_heads),
            head_dim: c.head_dim.unwrap_or(if n_heads > 0 { c.hidden_size / n_heads } else { 0 }),
            rms_eps: c.rms_norm_eps as f32,
            max_ctx: c.max_position_embeddings,
            rope: RopeConfig { theta: c.rope_theta as f32, style: tr.style, scaling },
            qkv_bias: tr.qkv_bias || c.attention_bias,
            qk_norm: tr.qk_norm,
            ffn,
            tied_embeddings: c.tie_word_embeddings,
            sliding_window: window,
            arch,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.hidden == 0 || self.n_layers == 0 || self.n_heads == 0 || self.head_dim == 0 || self.vocab_size == 0 {
            return bad(format!("zero-sized model dimension in {self:?}"));
        }
        if self.n_kv_heads == 0 || self.n_heads % self.n_kv_heads != 0 {
            return bad(format!("{} attention heads are not a multiple of {} KV heads", self.n_heads, self.n_kv_heads));
        }
        if self.head_dim % 2 != 0 {
            return bad(format!("head_dim {} is odd; rotary embedding needs pairs", self.head_dim));
        }
        if let Ffn::Moe { n_experts, top_k, .. } = self.ffn {
            if top_k == 0 || top_k > n_experts {
                return bad(format!("top-k {top_k} of {n_experts} experts"));
            }
        }
        Ok(())
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Inverse rotary frequencies `[head_dim / 2]`, before per-pair factors
    /// read from the file.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f32> = (0..d / 2).map(|i| 1.0 / self.rope.theta.powf((2 * i) as f32 / d as f32)).collect();
        match self.rope.scaling {
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_pos } => {
                let low_wavelen = original_max_pos / low_freq_factor;
                let high_wavelen = original_max_pos / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (original_max_pos / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
            RopeScaling::None | RopeScaling::FreqFactors => base,
        }
    }
}
