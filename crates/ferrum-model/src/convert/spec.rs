//! One architecture description for both writers: the hyper-parameters a
//! GGUF or `config.json` records, and the GGUF tensor list they imply, in
//! the order llama.cpp's converter writes it.

use std::path::Path;

use ferrum_format::hf_config::{HfConfig, RopeScalingKind};

use super::{ConvertError, Result};

/// The families Ferrum runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Qwen3Moe,
}

impl Arch {
    /// `general.architecture`.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Qwen3Moe => "qwen3moe",
        }
    }

    /// `architectures[0]` of config.json.
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
            Arch::Qwen3Moe => "Qwen3MoeForCausalLM",
        }
    }

    /// `model_type` of config.json.
    pub fn hf_model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Qwen3Moe => "qwen3_moe",
        }
    }

    pub fn from_gguf(name: &str) -> Option<Arch> {
        [Arch::Llama, Arch::Qwen2, Arch::Qwen3, Arch::Qwen3Moe].into_iter().find(|a| a.gguf_name() == name)
    }

    /// Mistral converts to llama.cpp's `llama` architecture.
    pub fn from_hf_class(class: &str) -> Option<Arch> {
        match class {
            "LlamaForCausalLM" | "MistralForCausalLM" => Some(Arch::Llama),
            "Qwen2ForCausalLM" => Some(Arch::Qwen2),
            "Qwen3ForCausalLM" => Some(Arch::Qwen3),
            "Qwen3MoeForCausalLM" => Some(Arch::Qwen3Moe),
            _ => None,
        }
    }

    pub fn qk_norm(self) -> bool {
        matches!(self, Arch::Qwen3 | Arch::Qwen3Moe)
    }
}

/// Mixture-of-experts FFN.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeSpec {
    pub n_experts: usize,
    pub top_k: usize,
    /// Per-expert intermediate size.
    pub ff: usize,
    pub norm_topk_prob: bool,
}

/// Llama 3 rope scaling parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Llama3Rope {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_pos: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ArchSpec {
    pub arch: Arch,
    /// `general.name`.
    pub name: String,
    pub vocab: usize,
    pub hidden: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Dense intermediate size (MoE models record it too, unused).
    pub ff: usize,
    pub moe: Option<MoeSpec>,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub rope_llama3: Option<Llama3Rope>,
    pub ctx: usize,
    pub tied: bool,
    pub qkv_bias: bool,
    pub bos: u32,
    pub eos: u32,
}

/// What a tensor is, for initialisation (synth) and type choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// A weight matrix (or a stack of expert matrices).
    Matrix,
    /// RMSNorm weight: 1.0 in synth.
    Norm,
    Bias,
    /// MoE router `[hidden, n_experts]`: small weights in synth, kept F32.
    Router,
    /// Llama 3 per-pair rotary divisors `[head_dim / 2]`.
    RopeFreqs,
}

/// One tensor of the GGUF file, in GGUF naming and dimension order
/// (ne0 = contiguous = input dimension first).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDesc {
    pub name: String,
    pub dims: Vec<u64>,
    pub kind: TensorKind,
}

impl TensorDesc {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

impl ArchSpec {
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Whether GGUF records `attention.key_length` (Qwen3 always; others when
    /// head_dim is not hidden / heads).
    pub fn explicit_head_dim(&self) -> bool {
        self.arch.qk_norm() || self.n_heads * self.head_dim != self.hidden
    }

    /// Every tensor, in the converter's order: embedding, rope_freqs, each
    /// layer, output norm, output.
    pub fn gguf_tensors(&self) -> Vec<TensorDesc> {
        let (h, q, kv, v) = (self.hidden as u64, self.q_dim() as u64, self.kv_dim() as u64, self.vocab as u64);
        let mut out = Vec::new();
        let mut push = |name: String, dims: Vec<u64>, kind| out.push(TensorDesc { name, dims, kind });
        push("token_embd.weight".into(), vec![h, v], TensorKind::Matrix);
        if self.rope_llama3.is_some() {
            push("rope_freqs.weight".into(), vec![self.head_dim as u64 / 2], TensorKind::RopeFreqs);
        }
        for l in 0..self.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}");
            push(n("attn_norm.weight"), vec![h], TensorKind::Norm);
            for (p, rows) in [("attn_q", q), ("attn_k", kv), ("attn_v", kv)] {
                push(n(&format!("{p}.weight")), vec![h, rows], TensorKind::Matrix);
                if self.qkv_bias {
                    push(n(&format!("{p}.bias")), vec![rows], TensorKind::Bias);
                }
            }
            if self.arch.qk_norm() {
                push(n("attn_q_norm.weight"), vec![self.head_dim as u64], TensorKind::Norm);
                push(n("attn_k_norm.weight"), vec![self.head_dim as u64], TensorKind::Norm);
            }
            push(n("attn_output.weight"), vec![q, h], TensorKind::Matrix);
            push(n("ffn_norm.weight"), vec![h], TensorKind::Norm);
            match &self.moe {
                None => {
                    let ff = self.ff as u64;
                    push(n("ffn_gate.weight"), vec![h, ff], TensorKind::Matrix);
                    push(n("ffn_up.weight"), vec![h, ff], TensorKind::Matrix);
                    push(n("ffn_down.weight"), vec![ff, h], TensorKind::Matrix);
                }
                Some(m) => {
                    let (ff, e) = (m.ff as u64, m.n_experts as u64);
                    push(n("ffn_gate_inp.weight"), vec![h, e], TensorKind::Router);
                    push(n("ffn_gate_exps.weight"), vec![h, ff, e], TensorKind::Matrix);
                    push(n("ffn_up_exps.weight"), vec![h, ff, e], TensorKind::Matrix);
                    push(n("ffn_down_exps.weight"), vec![ff, h, e], TensorKind::Matrix);
                }
            }
        }
        push("output_norm.weight".into(), vec![h], TensorKind::Norm);
        if !self.tied {
            push("output.weight".into(), vec![h, v], TensorKind::Matrix);
        }
        out
    }

    /// Total parameter count (rope_freqs excluded).
    pub fn n_params(&self) -> u64 {
        self.gguf_tensors().iter().filter(|t| t.kind != TensorKind::RopeFreqs).map(TensorDesc::n_elements).sum()
    }

    /// llama.cpp's rope "freq_factors" for Llama 3 scaling: per-pair divisors
    /// of the base inverse frequencies `theta^(-2i/d)`.
    pub fn rope_freqs(&self) -> Option<Vec<f32>> {
        let r = self.rope_llama3.as_ref()?;
        let d = self.head_dim as f64;
        let (orig, lo_f, hi_f) = (r.original_max_pos as f64, r.low_freq_factor as f64, r.high_freq_factor as f64);
        let (low_wavelen, high_wavelen) = (orig / lo_f, orig / hi_f);
        let freqs = (0..self.head_dim / 2)
            .map(|i| {
                let base = (self.rope_theta as f64).powf(-((2 * i) as f64) / d);
                let wavelen = 2.0 * std::f64::consts::PI / base;
                if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    r.factor
                } else {
                    let s = (orig / wavelen - lo_f) / (hi_f - lo_f);
                    (1.0 / ((1.0 - s) / r.factor as f64 + s)) as f32
                }
            })
            .collect();
        Some(freqs)
    }

    /// From a Hugging Face `config.json`; `embed_rows` (the embedding's row
    /// count) is the vocabulary size when known.
    pub fn from_hf(cfg: &HfConfig, path: &Path, embed_rows: Option<usize>) -> Result<ArchSpec> {
        let bad = |reason: String| ConvertError::BadInput { path: path.to_path_buf(), reason };
        let class = cfg.architectures.first().map(String::as_str).unwrap_or("");
        let arch = Arch::from_hf_class(class).ok_or_else(|| {
            bad(format!(
                "architecture `{class}` is not supported (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM)"
            ))
        })?;
        let moe = if arch == Arch::Qwen3Moe {
            let need = |v: Option<usize>, key: &str| v.ok_or_else(|| bad(format!("config.json has no `{key}`")));
            if (0..cfg.num_hidden_layers).any(|l| !cfg.is_moe_layer(l)) {
                return Err(bad("dense layers inside a MoE model (mlp_only_layers / decoder_sparse_step) are not supported".into()));
            }
            Some(MoeSpec {
                n_experts: need(cfg.num_experts, "num_experts")?,
                top_k: need(cfg.num_experts_per_tok, "num_experts_per_tok")?,
                ff: need(cfg.moe_intermediate_size, "moe_intermediate_size")?,
                norm_topk_prob: cfg.norm_topk_prob,
            })
        } else {
            None
        };
        let rope_llama3 = match cfg.rope_scaling.as_ref().map(|s| s.kind()).transpose()? {
            None | Some(RopeScalingKind::None) => None,
            Some(RopeScalingKind::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings }) => Some(Llama3Rope {
                factor: factor as f32,
                low_freq_factor: low_freq_factor as f32,
                high_freq_factor: high_freq_factor as f32,
                original_max_pos: original_max_position_embeddings as f32,
            }),
            Some(other) => return Err(bad(format!("rope scaling {other:?} is not supported (only llama3)"))),
        };
        if rope_llama3.is_some() && arch != Arch::Llama {
            return Err(bad(format!("llama3 rope scaling on a {class} model is not supported")));
        }
        Ok(ArchSpec {
            arch,
            name: path.file_name().and_then(|n| n.to_str()).unwrap_or("model").to_string(),
            vocab: embed_rows.unwrap_or(cfg.vocab_size),
            hidden: cfg.hidden_size,
            n_layers: cfg.num_hidden_layers,
            n_heads: cfg.num_attention_heads,
            n_kv_heads: cfg.num_kv_heads(),
            head_dim: cfg.head_dim(),
            ff: cfg.intermediate_size,
            moe,
            rms_eps: cfg.rms_norm_eps as f32,
            rope_theta: cfg.rope_theta as f32,
            rope_llama3,
            ctx: cfg.max_position_embeddings,
            tied: cfg.tie_word_embeddings,
            qkv_bias: arch == Arch::Qwen2 || cfg.attention_bias,
            bos: cfg.bos_token_id.unwrap_or(0),
            eos: cfg.eos_token_id.first().copied().unwrap_or(0),
        })
    }
}
