//! GGUF metadata as llama.cpp's converter writes it: `general.*` and the
//! `{arch}.*` hyper-parameters Ferrum and llama.cpp read.

use ferrum_format::gguf::GgufValue;

use super::spec::ArchSpec;
use super::QuantScheme;

pub type Kv = (String, GgufValue);

/// llama.cpp's `GGML_QNT_VERSION`.
pub const QUANTIZATION_VERSION: u32 = 2;

pub const FILE_TYPE_KEY: &str = "general.file_type";
pub const QUANT_VERSION_KEY: &str = "general.quantization_version";

fn u32_value(v: usize) -> GgufValue {
    GgufValue::U32(u32::try_from(v).unwrap_or(u32::MAX))
}

/// `general.*` then `{arch}.*` keys (no tokenizer keys).
pub fn arch_kvs(s: &ArchSpec, scheme: QuantScheme) -> Vec<Kv> {
    let arch = s.arch.gguf_name();
    let mut kv: Vec<Kv> = vec![
        ("general.architecture".into(), GgufValue::String(arch.into())),
        ("general.name".into(), GgufValue::String(s.name.clone())),
        (FILE_TYPE_KEY.into(), GgufValue::U32(scheme.file_type())),
        (QUANT_VERSION_KEY.into(), GgufValue::U32(QUANTIZATION_VERSION)),
    ];
    let mut put = |key: &str, v: GgufValue| kv.push((format!("{arch}.{key}"), v));
    put("vocab_size", u32_value(s.vocab));
    put("context_length", u32_value(s.ctx));
    put("embedding_length", u32_value(s.hidden));
    put("block_count", u32_value(s.n_layers));
    put("feed_forward_length", u32_value(s.ff));
    put("attention.head_count", u32_value(s.n_heads));
    put("attention.head_count_kv", u32_value(s.n_kv_heads));
    put("attention.layer_norm_rms_epsilon", GgufValue::F32(s.rms_eps));
    put("rope.freq_base", GgufValue::F32(s.rope_theta));
    if s.arch == super::Arch::Llama {
        put("rope.dimension_count", u32_value(s.head_dim));
    }
    if s.explicit_head_dim() {
        put("attention.key_length", u32_value(s.head_dim));
        put("attention.value_length", u32_value(s.head_dim));
    }
    if let Some(m) = &s.moe {
        put("expert_count", u32_value(m.n_experts));
        put("expert_used_count", u32_value(m.top_k));
        put("expert_feed_forward_length", u32_value(m.ff));
    }
    kv
}

/// Set `general.file_type` and `general.quantization_version` in a copied
/// metadata list (replacing them in place, or appending).
pub fn set_file_type(kv: &mut Vec<Kv>, scheme: QuantScheme) {
    for (key, value) in [(FILE_TYPE_KEY, scheme.file_type()), (QUANT_VERSION_KEY, QUANTIZATION_VERSION)] {
        match kv.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = GgufValue::U32(value),
            None => kv.push((key.to_string(), GgufValue::U32(value))),
        }
    }
}
