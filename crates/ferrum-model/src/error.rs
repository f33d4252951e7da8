//! Errors of model configuration, loading and the forward pass.

use ferrum_core::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unsupported architecture `{0}` (supported: llama, qwen2, qwen3, qwen3moe; HF: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM)")]
    UnsupportedArch(String),
    #[error("missing metadata key `{0}`")]
    MissingKey(String),
    #[error("metadata key `{key}`: {detail}")]
    BadKey { key: String, detail: String },
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    TensorShape { name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("tensor `{name}` has type {ty}, which is not supported here")]
    TensorType { name: String, ty: GgmlType },
    #[error("unused tensor(s) in the model file: {0}")]
    Leftover(String),
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Gguf(#[from] ferrum_format::gguf::GgufError),
    #[error(transparent)]
    Safetensors(#[from] ferrum_format::safetensors::SafetensorsError),
    #[error(transparent)]
    HfConfig(#[from] ferrum_format::hf_config::HfConfigError),
    #[error(transparent)]
    Backend(#[from] ferrum_kernels::BackendError),
    #[error("batch: {0}")]
    Batch(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;
