//! Hugging Face `config.json` and `generation_config.json`.
//!
//! Parsing is lenient about keys Ferrum does not use and fills in Hugging
//! Face's own defaults where configs routinely omit a key; keys without a
//! sensible default (sizes, layer counts, `model_type`) are required and the
//! error names the missing key.
//!
//! Family notes:
//! - Qwen2 has q/k/v biases unconditionally; its config.json has no
//!   `attention_bias` key, so `attention_bias` reads `false` for it and the
//!   model builder must decide biases from the architecture.
//! - transformers ≥ 5 writes `rope_parameters` (holding `rope_theta` and the
//!   scaling fields) instead of top-level `rope_theta` / `rope_scaling`; both
//!   layouts are accepted and normalised into [`HfConfig::rope_theta`] and
//!   [`HfConfig::rope_scaling`]. It also writes `dtype` for `torch_dtype`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

mod rope;

pub use rope::{RopeScaling, RopeScalingKind};

#[derive(Debug, thiserror::Error)]
pub enum HfConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("config: key '{key}': {reason}")]
    Invalid { key: String, reason: String },
}

fn default_rope_theta() -> f64 {
    10000.0
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_hidden_act() -> String {
    "silu".to_string()
}
fn default_one() -> usize {
    1
}

/// The fields of a decoder-only model's `config.json` that Ferrum reads.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct HfConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Absent in multi-head (non-GQA) configs: use [`Self::num_kv_heads`].
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Absent when `hidden_size / num_attention_heads`: use [`Self::head_dim`].
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// transformers ≥ 5 layout; folded into `rope_theta`/`rope_scaling` by
    /// [`Self::from_str`] and then cleared.
    #[serde(default)]
    pub rope_parameters: Option<RopeScaling>,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama/Qwen3 q/k/v/o bias switch. Qwen2 has q/k/v biases regardless.
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default)]
    pub max_window_layers: Option<usize>,
    // --- Qwen3-MoE ---
    #[serde(default)]
    pub num_experts: Option<usize>,
    #[serde(default)]
    pub num_experts_per_tok: Option<usize>,
    #[serde(default)]
    pub moe_intermediate_size: Option<usize>,
    /// HF default for Qwen3-MoE is `false`; the released checkpoints set `true`.
    #[serde(default)]
    pub norm_topk_prob: bool,
    /// Every `decoder_sparse_step`-th layer is MoE (1 = all).
    #[serde(default = "default_one")]
    pub decoder_sparse_step: usize,
    /// Layers forced to a dense MLP.
    #[serde(default)]
    pub mlp_only_layers: Vec<usize>,
    // --- special tokens ---
    #[serde(default, deserialize_with = "de_opt_id")]
    pub bos_token_id: Option<u32>,
    /// An int or a list of ints in config.json; empty when absent or null.
    #[serde(default, deserialize_with = "de_ids")]
    pub eos_token_id: Vec<u32>,
    #[serde(default, deserialize_with = "de_opt_id")]
    pub pad_token_id: Option<u32>,
    #[serde(default, alias = "dtype")]
    pub torch_dtype: Option<String>,
}

impl std::str::FromStr for HfConfig {
    type Err = HfConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s, "config.json")
    }
}

impl HfConfig {
    pub fn from_file(path: &Path) -> Result<Self, HfConfigError> {
        let text = read(path)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `what` names the source in errors.
    pub fn parse(text: &str, what: &str) -> Result<Self, HfConfigError> {
        let mut cfg: HfConfig =
            serde_json::from_str(text).map_err(|source| HfConfigError::Json {
                what: what.to_string(),
                source,
            })?;
        cfg.fold_rope_parameters();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Moves the transformers-5 `rope_parameters` into the classic fields.
    fn fold_rope_parameters(&mut self) {
        let Some(p) = self.rope_parameters.take() else {
            return;
        };
        if let Some(theta) = p.rope_theta {
            self.rope_theta = theta;
        }
        if self.rope_scaling.is_none() && !p.is_default() {
            self.rope_scaling = Some(p);
        }
    }

    fn validate(&self) -> Result<(), HfConfigError> {
        let invalid = |key: &str, reason: String| HfConfigError::Invalid {
            key: key.to_string(),
            reason,
        };
        for (key, v) in [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("vocab_size", self.vocab_size),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be > 0".to_string()));
            }
        }
        let kv = self.num_kv_heads();
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return Err(invalid(
                "num_key_value_heads",
                format!(
                    "{kv} does not divide num_attention_heads {}",
                    self.num_attention_heads
                ),
            ));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(invalid(
                "head_dim",
                format!(
                    "absent, and hidden_size {} is not a multiple of num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if self.head_dim == Some(0) {
            return Err(invalid("head_dim", "must be > 0".to_string()));
        }
        if self.decoder_sparse_step == 0 {
            return Err(invalid("decoder_sparse_step", "must be > 0".to_string()));
        }
        if let (Some(n), Some(k)) = (self.num_experts, self.num_experts_per_tok) {
            if k == 0 || k > n {
                return Err(invalid(
                    "num_experts_per_tok",
                    format!("{k} is not in 1..={n} (num_experts)"),
                ));
            }
        }
        Ok(())
    }

    /// KV heads (equal to the query heads when the key is absent).
    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head dimension: explicit `head_dim` (Qwen3) or hidden / heads.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether any layer uses a mixture of experts.
    pub fn is_moe(&self) -> bool {
        self.num_experts.is_some_and(|n| n > 0)
    }

    /// Whether `layer` uses the MoE block (Qwen3-MoE's rule).
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        self.is_moe()
            && !self.mlp_only_layers.contains(&layer)
            && (layer + 1).is_multiple_of(self.decoder_sparse_step.max(1))
    }
}

/// `generation_config.json`: every field optional.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct GenerationConfig {
    #[serde(default, deserialize_with = "de_opt_id")]
    pub bos_token_id: Option<u32>,
    #[serde(default, deserialize_with = "de_ids")]
    pub eos_token_id: Vec<u32>,
    #[serde(default, deserialize_with = "de_opt_id")]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub do_sample: Option<bool>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub min_p: Option<f64>,
    #[serde(default)]
    pub repetition_penalty: Option<f64>,
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    #[serde(default)]
    pub max_length: Option<usize>,
}

impl std::str::FromStr for GenerationConfig {
    type Err = HfConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_str(s).map_err(|source| HfConfigError::Json {
            what: "generation_config.json".to_string(),
            source,
        })
    }
}

impl GenerationConfig {
    pub fn from_file(path: &Path) -> Result<Self, HfConfigError> {
        let text = read(path)?;
        serde_json::from_str(&text).map_err(|source| HfConfigError::Json {
            what: path.display().to_string(),
            source,
        })
    }
}

fn read(path: &Path) -> Result<String, HfConfigError> {
    std::fs::read_to_string(path).map_err(|source| HfConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A token id that may be written as `null`.
fn de_opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Option::<u32>::deserialize(d)
}

/// A token id, a list of token ids, or `null`.
fn de_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(id)) => vec![id],
        Some(OneOrMany::Many(ids)) => ids,
    })
}
