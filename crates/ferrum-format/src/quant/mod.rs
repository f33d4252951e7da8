//! GGML block-quantization codecs (dequantize every type, quantize some).

pub mod blocks;
