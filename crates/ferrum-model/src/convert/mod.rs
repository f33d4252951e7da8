//! Writing model files: `synth` (random weights with a real architecture's
//! exact shapes) and `quantize` (HF safetensors or a float GGUF to a
//! llama.cpp-compatible quantized GGUF).
//!
//! Both share one description of an architecture ([`ArchSpec`]), its GGUF
//! tensor list and metadata ([`gguf_meta`]), and llama.cpp's per-tensor type
//! choice ([`type_mix`]). Output is streamed: memory holds the metadata plus
//! one tensor at a time.

pub mod gguf_meta;
mod output;
pub mod presets;
pub mod quantize;
mod rows;
mod safetensors_out;
pub mod spec;
pub mod synth;
mod tile;
pub mod tokenizer;
pub mod type_mix;

use std::path::PathBuf;

use ferrum_core::GgmlType;

pub use presets::{preset, PRESET_NAMES};
pub use quantize::{quantize_model, QuantizeReport};
pub use spec::{Arch, ArchSpec, Llama3Rope, MoeSpec, TensorDesc, TensorKind};
pub use synth::{plan_gguf, synth_gguf, synth_safetensors, SynthOptions, SynthReport};
pub use type_mix::{MixContext, PlannedTensor};

/// Errors of `synth` and `quantize`; each names the file, tensor or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("unknown preset `{name}`; valid presets: {valid}")]
    UnknownPreset { name: String, valid: String },
    #[error("unknown quantization type `{name}`; valid types: {valid}")]
    UnknownScheme { name: String, valid: String },
    #[error("unknown output format `{name}`; valid formats: gguf, safetensors")]
    UnknownFormat { name: String },
    // The io error is part of the message, not a `source` (the CLI prints
    // both, which would say it twice).
    #[error("cannot write {path}: {error}")]
    Output { path: PathBuf, error: std::io::Error },
    #[error("cannot read {path}: {error}")]
    Input { path: PathBuf, error: std::io::Error },
    #[error("{path}: {reason}")]
    BadInput { path: PathBuf, reason: String },
    #[error("tensor `{tensor}` has type {ty}; only F32, F16 and BF16 tensors can be quantized (requantizing is not supported)")]
    Requantize { tensor: String, ty: GgmlType },
    #[error("tensor `{tensor}`: {error}")]
    Quant { tensor: String, error: ferrum_format::quant::QuantError },
    #[error("donor {path}: {reason}")]
    Donor { path: PathBuf, reason: String },
    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error(transparent)]
    Gguf(#[from] ferrum_format::gguf::GgufError),
    #[error(transparent)]
    Safetensors(#[from] ferrum_format::safetensors::SafetensorsError),
    #[error(transparent)]
    HfConfig(#[from] ferrum_format::hf_config::HfConfigError),
}

pub type Result<T> = std::result::Result<T, ConvertError>;

/// The quantization schemes `quantize` and `synth` write, named as
/// llama.cpp's `llama-quantize` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantScheme {
    Q4KM,
    Q5KM,
    Q6K,
    Q8_0,
    F16,
}

impl QuantScheme {
    pub const ALL: [QuantScheme; 5] = [QuantScheme::Q4KM, QuantScheme::Q5KM, QuantScheme::Q6K, QuantScheme::Q8_0, QuantScheme::F16];

    pub fn name(self) -> &'static str {
        match self {
            QuantScheme::Q4KM => "Q4_K_M",
            QuantScheme::Q5KM => "Q5_K_M",
            QuantScheme::Q6K => "Q6_K",
            QuantScheme::Q8_0 => "Q8_0",
            QuantScheme::F16 => "F16",
        }
    }

    /// Case-insensitive: `Q4_K_M`, `q4_k_m`, ...
    pub fn parse(name: &str) -> Result<QuantScheme> {
        Self::ALL.iter().copied().find(|s| s.name().eq_ignore_ascii_case(name)).ok_or_else(|| ConvertError::UnknownScheme {
            name: name.to_string(),
            valid: Self::ALL.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "),
        })
    }

    /// llama.cpp's `llama_ftype` id, written as `general.file_type`.
    pub fn file_type(self) -> u32 {
        match self {
            QuantScheme::Q4KM => 15,
            QuantScheme::Q5KM => 17,
            QuantScheme::Q6K => 18,
            QuantScheme::Q8_0 => 7,
            QuantScheme::F16 => 1,
        }
    }

    /// The type most weight matrices get (before the per-tensor rules).
    pub fn default_type(self) -> GgmlType {
        match self {
            QuantScheme::Q4KM => GgmlType::Q4K,
            QuantScheme::Q5KM => GgmlType::Q5K,
            QuantScheme::Q6K => GgmlType::Q6K,
            QuantScheme::Q8_0 => GgmlType::Q8_0,
            QuantScheme::F16 => GgmlType::F16,
        }
    }
}

impl std::fmt::Display for QuantScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Progress of a long write: `done` of `total` bytes of tensor data, and
/// the tensor just finished.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    pub done: u64,
    pub total: u64,
    pub tensor: &'a str,
}
