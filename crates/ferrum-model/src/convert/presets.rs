//! Architectures `synth` can write: real models' exact shapes (from their
//! published config.json) and tiny variants of each family for tests.

use super::spec::{Arch, ArchSpec, Llama3Rope, MoeSpec};
use super::{ConvertError, Result};

/// Every preset name, real models first.
pub const PRESET_NAMES: [&str; 9] =
    ["qwen3moe-30b-a3b", "qwen3-0.6b", "qwen3-8b", "llama-3.1-8b", "qwen2.5-0.5b", "qwen3moe-tiny", "qwen3-tiny", "llama-tiny", "qwen2-tiny"];

/// Qwen's tokenizer: 151936 rows (151665 tokens padded), bos/eos ids.
const QWEN_VOCAB: usize = 151_936;
const QWEN_BOS: u32 = 151_643;
const QWEN_EOS: u32 = 151_645;
/// Tiny presets' synthetic vocabulary.
const TINY_VOCAB: usize = 1024;

/// A Qwen3-shaped spec; callers adjust what differs.
fn qwen3(name: &str, hidden: usize, n_layers: usize, n_heads: usize, n_kv_heads: usize, ff: usize, tied: bool) -> ArchSpec {
    ArchSpec {
        arch: Arch::Qwen3,
        name: name.to_string(),
        vocab: QWEN_VOCAB,
        hidden,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim: 128,
        ff,
        moe: None,
        rms_eps: 1e-6,
        rope_theta: 1_000_000.0,
        rope_llama3: None,
        ctx: 40_960,
        tied,
        qkv_bias: false,
        bos: QWEN_BOS,
        eos: QWEN_EOS,
    }
}

fn llama(name: &str, vocab: usize, hidden: usize, n_layers: usize, n_heads: usize, n_kv_heads: usize, ff: usize) -> ArchSpec {
    ArchSpec {
        arch: Arch::Llama,
        name: name.to_string(),
        vocab,
        hidden,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim: hidden / n_heads,
        ff,
        moe: None,
        rms_eps: 1e-5,
        rope_theta: 500_000.0,
        rope_llama3: Some(Llama3Rope { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_pos: 8192.0 }),
        ctx: 131_072,
        tied: false,
        qkv_bias: false,
        bos: 128_000,
        eos: 128_009,
    }
}

/// Shrink a spec to the synthetic tokenizer (ids 0..2 are its specials).
fn tiny(mut s: ArchSpec) -> ArchSpec {
    s.vocab = TINY_VOCAB;
    s.bos = 0;
    s.eos = 2;
    s.ctx = 4096;
    s
}

/// The spec of preset `name`; an unknown name is an error listing them all.
pub fn preset(name: &str) -> Result<ArchSpec> {
    let spec = match name {
        // Qwen/Qwen3-30B-A3B: 48 layers, 128 experts (top 8) of FFN 768.
        "qwen3moe-30b-a3b" => {
            let mut s = qwen3("Qwen3-30B-A3B (synthetic)", 2048, 48, 32, 4, 6144, false);
            s.arch = Arch::Qwen3Moe;
            s.moe = Some(MoeSpec { n_experts: 128, top_k: 8, ff: 768, norm_topk_prob: true });
            s
        }
        "qwen3-0.6b" => qwen3("Qwen3-0.6B (synthetic)", 1024, 28, 16, 8, 3072, true),
        "qwen3-8b" => qwen3("Qwen3-8B (synthetic)", 4096, 36, 32, 8, 12288, false),
        "llama-3.1-8b" => llama("Llama-3.1-8B (synthetic)", 128_256, 4096, 32, 32, 8, 14336),
        // Qwen2.5-0.5B, the default model's shapes (hidden 896: rows not a
        // multiple of 256, so K-quant fallbacks apply).
        "qwen2.5-0.5b" => {
            let mut s = qwen3("Qwen2.5-0.5B (synthetic)", 896, 24, 14, 2, 4864, true);
            s.arch = Arch::Qwen2;
            s.head_dim = 64;
            s.qkv_bias = true;
            s.ctx = 32_768;
            s
        }
        "qwen3moe-tiny" => {
            let mut s = qwen3("qwen3moe-tiny (synthetic)", 256, 4, 4, 2, 512, false);
            s.arch = Arch::Qwen3Moe;
            s.head_dim = 64;
            s.moe = Some(MoeSpec { n_experts: 16, top_k: 4, ff: 256, norm_topk_prob: true });
            tiny(s)
        }
        // head_dim 128 with hidden 256 / 4 heads: q is wider than hidden, as in Qwen3-0.6B.
        "qwen3-tiny" => tiny(qwen3("qwen3-tiny (synthetic)", 256, 4, 4, 2, 512, true)),
        "llama-tiny" => {
            let mut s = llama("llama-tiny (synthetic)", TINY_VOCAB, 256, 4, 4, 2, 512);
            if let Some(r) = s.rope_llama3.as_mut() {
                r.original_max_pos = 64.0;
            }
            tiny(s)
        }
        // hidden 224 (7 x 32): K-quant fallbacks, like Qwen2.5's 896.
        "qwen2-tiny" => {
            let mut s = qwen3("qwen2-tiny (synthetic)", 224, 4, 7, 1, 512, true);
            s.arch = Arch::Qwen2;
            s.head_dim = 32;
            s.qkv_bias = true;
            tiny(s)
        }
        _ => {
            return Err(ConvertError::UnknownPreset { name: name.to_string(), valid: PRESET_NAMES.join(", ") });
        }
    };
    Ok(spec)
}
