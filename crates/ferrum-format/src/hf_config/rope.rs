//! `rope_scaling` (and transformers-5 `rope_parameters`): raw fields as
//! written, plus a typed view validated on demand by [`RopeScaling::kind`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::HfConfigError;

/// The raw `rope_scaling` object. Older configs spell the kind `type`, newer
/// ones `rope_type`; some write both.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct RopeScaling {
    #[serde(default)]
    pub rope_type: Option<String>,
    #[serde(default, rename = "type")]
    pub legacy_type: Option<String>,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
    #[serde(default)]
    pub beta_fast: Option<f64>,
    #[serde(default)]
    pub beta_slow: Option<f64>,
    #[serde(default)]
    pub attention_factor: Option<f64>,
    /// Only present in transformers-5 `rope_parameters`.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Every other key, kept verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The scaling schemes Ferrum knows, with their required parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScalingKind {
    /// Plain RoPE (`rope_type: "default"`).
    None,
    /// Position interpolation: positions divided by `factor`.
    Linear { factor: f64 },
    /// Dynamic NTK: base grows with sequence length beyond the original context.
    Dynamic { factor: f64 },
    /// Llama 3.1's piecewise frequency rescaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// YaRN (beta defaults 32 / 1 as in transformers).
    Yarn {
        factor: f64,
        original_max_position_embeddings: Option<usize>,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: Option<f64>,
    },
}

const KNOWN: &str = "default, linear, dynamic, llama3, yarn";

impl RopeScaling {
    /// `rope_type`, falling back to the legacy `type` key.
    pub fn type_name(&self) -> Option<&str> {
        self.rope_type.as_deref().or(self.legacy_type.as_deref())
    }

    /// True when this describes plain RoPE (no scaling).
    pub fn is_default(&self) -> bool {
        matches!(self.type_name(), None | Some("default")) && self.factor.is_none()
    }

    /// The typed scheme; an unknown type or a missing parameter is an error
    /// naming the key.
    pub fn kind(&self) -> Result<RopeScalingKind, HfConfigError> {
        let ty = self.type_name().unwrap_or("default");
        let need_f = |key: &str, v: Option<f64>| {
            v.ok_or_else(|| HfConfigError::Invalid {
                key: format!("rope_scaling.{key}"),
                reason: format!("required for rope type '{ty}' but missing"),
            })
        };
        Ok(match ty {
            "default" => RopeScalingKind::None,
            "linear" => RopeScalingKind::Linear {
                factor: need_f("factor", self.factor)?,
            },
            "dynamic" => RopeScalingKind::Dynamic {
                factor: need_f("factor", self.factor)?,
            },
            "llama3" => RopeScalingKind::Llama3 {
                factor: need_f("factor", self.factor)?,
                low_freq_factor: need_f("low_freq_factor", self.low_freq_factor)?,
                high_freq_factor: need_f("high_freq_factor", self.high_freq_factor)?,
                original_max_position_embeddings: self
                    .original_max_position_embeddings
                    .ok_or_else(|| HfConfigError::Invalid {
                        key: "rope_scaling.original_max_position_embeddings".to_string(),
                        reason: "required for rope type 'llama3' but missing".to_string(),
                    })?,
            },
            "yarn" => RopeScalingKind::Yarn {
                factor: need_f("factor", self.factor)?,
                original_max_position_embeddings: self.original_max_position_embeddings,
                beta_fast: self.beta_fast.unwrap_or(32.0),
                beta_slow: self.beta_slow.unwrap_or(1.0),
                attention_factor: self.attention_factor,
            },
            other => {
                return Err(HfConfigError::Invalid {
                    key: "rope_scaling.rope_type".to_string(),
                    reason: format!("unsupported rope type '{other}' (known: {KNOWN})"),
                })
            }
        })
    }
}
