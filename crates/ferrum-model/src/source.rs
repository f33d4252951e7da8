//! Tensor sources: one name map per format. Every source speaks GGUF tensor
//! names (`blk.3.attn_q.weight`) and GGUF dimension order (contiguous first),
//! and records which tensors were taken so loading can be strict.

use std::collections::BTreeSet;
use std::sync::Arc;

use ferrum_core::GgmlType;
use ferrum_format::gguf::GgufFile;
use ferrum_format::safetensors::SafeTensors;
use ferrum_kernels::{HostBytes, HostWeight};

use crate::error::{ModelError, Result};

/// Where weights come from.
pub trait TensorSource {
    /// Take tensor `name` (GGUF naming). Each tensor may be taken once.
    fn take(&mut self, name: &str) -> Result<HostWeight>;
    fn contains(&self, name: &str) -> bool;
    /// Names never taken (non-empty means the file has tensors we do not use).
    fn leftovers(&self) -> Vec<String>;
}

/// Tensors of a memory-mapped GGUF file, borrowed in place.
pub struct GgufSource {
    file: Arc<GgufFile>,
    taken: BTreeSet<String>,
}

/// Lets a `HostBytes::Mapped` keep the map alive.
struct GgufBytes(Arc<GgufFile>);

impl AsRef<[u8]> for GgufBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl GgufSource {
    pub fn new(file: Arc<GgufFile>) -> GgufSource {
        GgufSource { file, taken: BTreeSet::new() }
    }
}

impl TensorSource for GgufSource {
    fn take(&mut self, name: &str) -> Result<HostWeight> {
        let t = self.file.tensor(name).ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        if !self.taken.insert(name.to_string()) {
            return Err(ModelError::Config(format!("tensor `{name}` used twice")));
        }
        let start = (self.file.data_offset() + t.offset) as usize;
        let len = t.n_bytes() as usize;
        let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(GgufBytes(self.file.clone()));
        Ok(HostWeight {
            name: name.to_string(),
            ty: t.ty,
            dims: t.dims.iter().map(|&d| d as usize).collect(),
            bytes: HostBytes::Mapped { owner, start, len },
        })
    }

    fn contains(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    fn leftovers(&self) -> Vec<String> {
        self.file.tensors().iter().filter(|t| !self.taken.contains(&t.name)).map(|t| t.name.clone()).collect()
    }
}

/// Tensors of a Hugging Face safetensors checkpoint, renamed to GGUF names.
/// F32/F16/BF16 tensors keep their type; MoE experts are stacked into 3-D.
pub struct HfSource {
    st: SafeTensors,
    taken: BTreeSet<String>,
}

impl HfSource {
    pub fn new(st: SafeTensors) -> HfSource {
        HfSource { st, taken: BTreeSet::new() }
    }

    fn take_hf(&mut self, hf: &str) -> Result<(GgmlType, Vec<usize>, Vec<u8>)> {
        let t = self.st.get(hf).ok_or_else(|| ModelError::MissingTensor(hf.to_string()))?;
        if !self.taken.insert(hf.to_string()) {
            return Err(ModelError::Config(format!("tensor `{hf}` used twice")));
        }
        let ty = match t.dtype {
            ferrum_core::DType::F32 => GgmlType::F32,
            ferrum_core::DType::F16 => GgmlType::F16,
            ferrum_core::DType::BF16 => GgmlType::BF16,
        };
        // HF shapes are outermost first; GGUF dims are contiguous first.
        let dims: Vec<usize> = t.shape.iter().rev().copied().collect();
        Ok((ty, dims, t.data.to_vec()))
    }
}

/// The HF name of a GGUF-named tensor (`None` for stacked experts).
pub fn hf_name(gguf: &str) -> Option<String> {
    let map_global = |n: &str| match n {
        "token_embd.weight" => Some("model.embed_tokens.weight".to_string()),
        "output_norm.weight" => Some("model.norm.weight".to_string()),
        "output.weight" => Some("lm_head.weight".to_string()),
        _ => None,
    };
    if let Some(n) = map_global(gguf) {
        return Some(n);
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, name) = rest.split_once('.')?;
    let (base, suffix) = name.rsplit_once('.')?;
    let hf = match base {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "ffn_gate_inp" => "mlp.gate",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// `blk.N.ffn_{gate,up,down}_exps.weight` → (layer, HF projection name).
pub fn expert_parts(gguf: &str) -> Option<(&str, &str)> {
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, name) = rest.split_once('.')?;
    let proj = match name {
        "ffn_gate_exps.weight" => "gate_proj",
        "ffn_up_exps.weight" => "up_proj",
        "ffn_down_exps.weight" => "down_proj",
        _ => return None,
    };
    Some((layer, proj))
}

impl TensorSource for HfSource {
    fn take(&mut self, name: &str) -> Result<HostWeight> {
        if let Some((layer, proj)) = expert_parts(name) {
            let mut bytes = Vec::new();
            let mut first: Option<(GgmlType, Vec<usize>)> = None;
            let mut e = 0;
            loop {
                let hf = format!("model.layers.{layer}.mlp.experts.{e}.{proj}.weight");
                if self.st.get(&hf).is_none() {
                    break;
                }
                let (ty, dims, data) = self.take_hf(&hf)?;
                match &first {
                    None => first = Some((ty, dims)),
                    Some((t0, d0)) if *t0 == ty && *d0 == dims => {}
                    Some((_, d0)) => {
                        return Err(ModelError::TensorShape { name: hf, expected: d0.clone(), found: dims });
                    }
                }
                bytes.extend_from_slice(&data);
                e += 1;
            }
            let (ty, mut dims) = first.ok_or_else(|| ModelError::MissingTensor(format!("model.layers.{layer}.mlp.experts.0.{proj}.weight")))?;
            dims.push(e);
            return Ok(HostWeight { name: name.to_string(), ty, dims, bytes: HostBytes::Owned(Arc::new(bytes)) });
        }
        let hf = hf_name(name).ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let (ty, dims, data) = self.take_hf(&hf)?;
        Ok(HostWeight { name: name.to_string(), ty, dims, bytes: HostBytes::Owned(Arc::new(data)) })
    }

    fn contains(&self, name: &str) -> bool {
        if let Some((layer, proj)) = expert_parts(name) {
            return self.st.get(&format!("model.layers.{layer}.mlp.experts.0.{proj}.weight")).is_some();
        }
        hf_name(name).is_some_and(|hf| self.st.get(&hf).is_some())
    }

    fn leftovers(&self) -> Vec<String> {
        self.st.names().filter(|n| !self.taken.contains(*n)).map(|n| n.to_string()).collect()
    }
}
