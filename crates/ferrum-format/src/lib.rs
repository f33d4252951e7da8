//! Weight formats: GGUF (read and write), safetensors, Hugging Face
//! `config.json`, and the GGML block-quantization codecs.

pub mod gguf;
pub mod hf_config;
pub mod quant;
pub mod safetensors;
