//! Which GGML type each tensor gets under a scheme: llama.cpp's
//! `llama-quantize` rules for the schemes Ferrum writes, restated.
//!
//! - Only tensors of 2+ dims whose name ends in `weight` are quantized, and
//!   never norms (`*_norm.weight`) or MoE routers (`ffn_gate_inp.weight`);
//!   the rest keep their type (F32 when converting from HF).
//! - F16: every quantizable tensor is F16; no other rule applies.
//! - `output.weight` (and `token_embd.weight` when the output is tied to it)
//!   is Q6_K, or Q8_0 under the Q8_0 scheme or when its rows are not a
//!   multiple of the scheme's block.
//! - Q4_K_M / Q5_K_M: `attn_v` and `ffn_down` use Q6_K in the "more bits"
//!   layers: the first and last eighth and every third layer in between.
//! - Models with exactly 8 experts: `attn_v` and `attn_k` are Q8_0 and, for
//!   Q4_K_M, `attn_output` is Q5_K. Llama 70B (80 layers, GQA): a Q4_K
//!   `attn_v` becomes Q5_K.
//! - Rows whose length is not a multiple of the type's block fall back:
//!   Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, then F16 if still not whole
//!   32-element blocks (llama.cpp refuses a Q8_0 that does not fit; Ferrum
//!   also falls back to F16 there).

use ferrum_core::GgmlType;

use super::spec::{Arch, ArchSpec};
use super::QuantScheme;

/// Model facts the rules look at.
#[derive(Clone, Debug, PartialEq)]
pub struct MixContext {
    pub n_layers: usize,
    /// Number of `attn_v` tensors (one per layer).
    pub n_attn_v: usize,
    pub n_experts: usize,
    /// No `output.weight`: the embedding doubles as the output projection.
    pub tied: bool,
    /// Llama with 80 layers and grouped-query attention.
    pub llama_70b: bool,
}

impl MixContext {
    pub fn from_spec(s: &ArchSpec) -> MixContext {
        MixContext {
            n_layers: s.n_layers,
            n_attn_v: s.n_layers,
            n_experts: s.moe.as_ref().map_or(0, |m| m.n_experts),
            tied: s.tied,
            llama_70b: s.arch == Arch::Llama && s.n_layers == 80 && s.n_heads != s.n_kv_heads,
        }
    }
}

/// A tensor with its chosen output type.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedTensor {
    pub name: String,
    /// GGUF order (ne0 first).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// The scheme's first choice did not fit the row length.
    pub fallback: bool,
}

impl PlannedTensor {
    /// Bytes of data (0 for an impossible shape, which planning never makes).
    pub fn n_bytes(&self) -> u64 {
        self.ty.bytes_for(self.dims.iter().product()).unwrap_or(0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    Output,
    AttnV,
    AttnK,
    AttnOutput,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        Category::Output
    } else if name == "token_embd.weight" {
        Category::TokenEmbd
    } else if name.contains("attn_v.weight") {
        Category::AttnV
    } else if name.contains("attn_k.weight") {
        Category::AttnK
    } else if name.contains("attn_output.weight") {
        Category::AttnOutput
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

/// Whether llama.cpp quantizes a tensor of this name and rank at all.
pub fn allows_quantization(name: &str, dims: &[u64]) -> bool {
    dims.len() >= 2 && name.ends_with("weight") && !name.contains("_norm.weight") && !name.contains("ffn_gate_inp.weight")
}

/// llama.cpp's "use more bits" layers: first and last eighth, and every
/// third one in between.
pub fn use_more_bits(layer: usize, n_layers: usize) -> bool {
    layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2
}

/// `blk.N.` → N.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The type for tensor `name` of shape `dims` under `scheme`; `keep` is the
/// type of tensors that are not quantized. Returns the type and whether the
/// row-length fallback applied.
pub fn choose_type(scheme: QuantScheme, name: &str, dims: &[u64], keep: GgmlType, ctx: &MixContext) -> (GgmlType, bool) {
    if !allows_quantization(name, dims) {
        return (keep, false);
    }
    let default = scheme.default_type();
    if !default.is_quantized() {
        return (default, false);
    }
    let ne0 = dims.first().copied().unwrap_or(0);
    let more_bits = matches!(scheme, QuantScheme::Q4KM | QuantScheme::Q5KM);
    let layer = layer_of(name).unwrap_or(0);
    let mut ty = default;
    match category(name) {
        Category::Output | Category::TokenEmbd if category(name) == Category::Output || ctx.tied => {
            if ne0 % ty.block_size() as u64 != 0 {
                ty = GgmlType::Q8_0;
            } else if ty != GgmlType::Q8_0 {
                ty = GgmlType::Q6K;
            }
        }
        Category::AttnV => {
            if more_bits && use_more_bits(layer, ctx.n_attn_v) {
                ty = GgmlType::Q6K;
            }
            if ctx.llama_70b && matches!(ty, GgmlType::Q3K | GgmlType::Q4K) {
                ty = GgmlType::Q5K;
            }
            if ctx.n_experts == 8 {
                ty = GgmlType::Q8_0;
            }
        }
        Category::AttnK if ctx.n_experts == 8 => ty = GgmlType::Q8_0,
        Category::FfnDown if more_bits && use_more_bits(layer, ctx.n_layers) => ty = GgmlType::Q6K,
        Category::AttnOutput if ctx.n_experts == 8 && scheme == QuantScheme::Q4KM => ty = GgmlType::Q5K,
        _ => {}
    }
    fallback(ty, ne0)
}

/// Replace a type whose block does not divide the row length.
fn fallback(ty: GgmlType, ne0: u64) -> (GgmlType, bool) {
    let fits = |t: GgmlType| ne0.is_multiple_of(t.block_size() as u64);
    if fits(ty) {
        return (ty, false);
    }
    let next = match ty {
        GgmlType::Q2K | GgmlType::Q3K => GgmlType::Q4_0,
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        _ => GgmlType::F16,
    };
    (if fits(next) { next } else { GgmlType::F16 }, true)
}

/// Types for a whole tensor list: `(name, dims, keep)` in, planned tensors out.
pub fn plan(scheme: QuantScheme, tensors: &[(String, Vec<u64>, GgmlType)], ctx: &MixContext) -> Vec<PlannedTensor> {
    tensors
        .iter()
        .map(|(name, dims, keep)| {
            let (ty, fallback) = choose_type(scheme, name, dims, *keep, ctx);
            PlannedTensor { name: name.clone(), dims: dims.clone(), ty, fallback }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(n: usize) -> MixContext {
        MixContext { n_layers: n, n_attn_v: n, n_experts: 0, tied: false, llama_70b: false }
    }

    #[test]
    fn more_bits_layers() {
        // 24 layers: 0..3, 21..24, and 5, 8, 11, 14, 17, 20.
        let got: Vec<usize> = (0..24).filter(|&l| use_more_bits(l, 24)).collect();
        assert_eq!(got, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
    }

    #[test]
    fn fallbacks() {
        let c = ctx(24);
        let t = |name: &str, dims: &[u64]| choose_type(QuantScheme::Q4KM, name, dims, GgmlType::F32, &c).0;
        assert_eq!(t("blk.2.attn_q.weight", &[896, 896]), GgmlType::Q5_0);
        assert_eq!(t("blk.0.attn_v.weight", &[896, 128]), GgmlType::Q8_0);
        assert_eq!(t("blk.3.attn_v.weight", &[896, 128]), GgmlType::Q5_0);
        assert_eq!(t("blk.0.ffn_down.weight", &[4864, 896]), GgmlType::Q6K);
        assert_eq!(t("blk.3.ffn_down.weight", &[4864, 896]), GgmlType::Q4K);
        assert_eq!(t("output.weight", &[896, 1000]), GgmlType::Q8_0);
        assert_eq!(t("output.weight", &[1024, 1000]), GgmlType::Q6K);
        assert_eq!(t("blk.0.attn_norm.weight", &[896]), GgmlType::F32);
        assert_eq!(t("blk.0.ffn_gate_inp.weight", &[896, 8]), GgmlType::F32);
        assert_eq!(t("blk.0.ffn_gate.weight", &[48, 8]), GgmlType::F16);
    }
}
