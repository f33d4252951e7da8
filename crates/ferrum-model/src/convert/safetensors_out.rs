//! `synth --format safetensors`: a Hugging Face directory (config.json,
//! generation_config.json, BF16 safetensors shards, and for byte-level
//! vocabularies tokenizer.json / tokenizer_config.json) of a preset's shapes.
//!
//! Shards are written by hand so that only one tensor is in memory at a
//! time (the `safetensors` crate's serializer wants every tensor of a file
//! at once). The format: an 8-byte little-endian header length, a JSON
//! header (`{"__metadata__": {...}, name: {"dtype", "shape",
//! "data_offsets": [start, end]}}`, offsets relative to the end of the
//! header, padded with spaces to a multiple of 8 bytes), then the tensors'
//! bytes back to back. More than one shard gets HF's
//! `model-0000i-of-0000n.safetensors` names and a
//! `model.safetensors.index.json` (`metadata.total_size`, `weight_map`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use ferrum_core::GgmlType;
use serde_json::{json, Map, Value};

use super::spec::{ArchSpec, TensorDesc, TensorKind};
use super::synth::{SynthOptions, SynthReport, WeightMaker};
use super::{tokenizer, ConvertError, Progress, Result};
use crate::source::{expert_parts, hf_name};

/// One HF tensor: its name, PyTorch shape (outermost first) and how to make it.
struct HfTensor {
    name: String,
    shape: Vec<u64>,
    /// The GGUF-shaped description used to generate it (2-D for one expert).
    desc: TensorDesc,
}

impl HfTensor {
    fn n_bytes(&self) -> u64 {
        self.shape.iter().product::<u64>() * 2
    }
}

/// The HF tensors of `spec` (rope_freqs has no HF counterpart; experts are
/// one tensor each).
fn hf_tensors(spec: &ArchSpec) -> Vec<HfTensor> {
    let mut out = Vec::new();
    for t in spec.gguf_tensors() {
        if t.kind == TensorKind::RopeFreqs {
            continue;
        }
        if let (Some((layer, proj)), &[d0, d1, n]) = (expert_parts(&t.name), t.dims.as_slice()) {
            for e in 0..n {
                let name = format!("model.layers.{layer}.mlp.experts.{e}.{proj}.weight");
                let desc = TensorDesc { name: name.clone(), dims: vec![d0, d1], kind: t.kind };
                out.push(HfTensor { name, shape: vec![d1, d0], desc });
            }
        } else if let Some(name) = hf_name(&t.name) {
            let shape = t.dims.iter().rev().copied().collect();
            out.push(HfTensor { name: name.clone(), shape, desc: TensorDesc { name, ..t } });
        }
    }
    out
}

/// config.json of `spec` (transformers 4 layout).
pub fn hf_config(spec: &ArchSpec) -> Value {
    let mut c = json!({
        "architectures": [spec.arch.hf_class()],
        "model_type": spec.arch.hf_model_type(),
        "hidden_size": spec.hidden,
        "intermediate_size": spec.ff,
        "num_hidden_layers": spec.n_layers,
        "num_attention_heads": spec.n_heads,
        "num_key_value_heads": spec.n_kv_heads,
        "head_dim": spec.head_dim,
        "rms_norm_eps": spec.rms_eps,
        "rope_theta": spec.rope_theta,
        "vocab_size": spec.vocab,
        "max_position_embeddings": spec.ctx,
        "tie_word_embeddings": spec.tied,
        "attention_bias": spec.qkv_bias && spec.arch != super::Arch::Qwen2,
        "hidden_act": "silu",
        "bos_token_id": spec.bos,
        "eos_token_id": spec.eos,
        "torch_dtype": "bfloat16",
    });
    if let Some(r) = &spec.rope_llama3 {
        c["rope_scaling"] = json!({
            "rope_type": "llama3",
            "factor": r.factor,
            "low_freq_factor": r.low_freq_factor,
            "high_freq_factor": r.high_freq_factor,
            "original_max_position_embeddings": r.original_max_pos as u64,
        });
    }
    if let Some(m) = &spec.moe {
        c["num_experts"] = json!(m.n_experts);
        c["num_experts_per_tok"] = json!(m.top_k);
        c["moe_intermediate_size"] = json!(m.ff);
        c["norm_topk_prob"] = json!(m.norm_topk_prob);
        c["decoder_sparse_step"] = json!(1);
        c["mlp_only_layers"] = json!([]);
    }
    c
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| ConvertError::Output { path: path.to_path_buf(), error: e.into() })?;
    std::fs::write(path, text).map_err(|source| ConvertError::Output { path: path.to_path_buf(), error: source })
}

/// Write `spec` as an HF directory of BF16 shards of at most `shard_bytes`
/// of data each (a tensor larger than that gets a shard of its own).
pub fn synth_safetensors(
    spec: &ArchSpec,
    dir: &Path,
    opts: &SynthOptions,
    shard_bytes: u64,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<SynthReport> {
    let out_err = |path: &Path, source| ConvertError::Output { path: path.to_path_buf(), error: source };
    std::fs::create_dir_all(dir).map_err(|e| out_err(dir, e))?;
    // config.json first: proves the directory writable before any work.
    write_json(&dir.join("config.json"), &hf_config(spec))?;
    let tok = match &opts.donor {
        Some(p) => tokenizer::donor_kvs(p, spec.vocab)?,
        None => tokenizer::synthetic_kvs(spec.vocab),
    };
    let tensors = hf_tensors(spec);
    let mut shards: Vec<Vec<&HfTensor>> = vec![Vec::new()];
    let mut size = 0u64;
    for t in &tensors {
        if size > 0 && size + t.n_bytes() > shard_bytes {
            shards.push(Vec::new());
            size = 0;
        }
        size += t.n_bytes();
        if let Some(s) = shards.last_mut() {
            s.push(t);
        }
    }
    let n = shards.len();
    let total: u64 = tensors.iter().map(HfTensor::n_bytes).sum();
    let mut maker = WeightMaker::new(opts.seed);
    let mut weight_map = Map::new();
    let mut done = 0u64;
    for (i, shard) in shards.iter().enumerate() {
        let file_name = if n == 1 { "model.safetensors".to_string() } else { format!("model-{:05}-of-{:05}.safetensors", i + 1, n) };
        let path = dir.join(&file_name);
        let mut header = Map::new();
        header.insert("__metadata__".into(), json!({"format": "pt"}));
        let mut offset = 0u64;
        for t in shard {
            let end = offset + t.n_bytes();
            header.insert(t.name.clone(), json!({"dtype": "BF16", "shape": t.shape, "data_offsets": [offset, end]}));
            weight_map.insert(t.name.clone(), Value::String(file_name.clone()));
            offset = end;
        }
        let mut text = Value::Object(header).to_string().into_bytes();
        text.resize(text.len().div_ceil(8) * 8, b' ');
        let file = File::create(&path).map_err(|e| out_err(&path, e))?;
        let mut w = BufWriter::with_capacity(8 << 20, file);
        w.write_all(&(text.len() as u64).to_le_bytes()).and_then(|()| w.write_all(&text)).map_err(|e| out_err(&path, e))?;
        for t in shard {
            let bytes = maker.make(&t.desc, GgmlType::BF16, spec)?;
            w.write_all(&bytes).map_err(|e| out_err(&path, e))?;
            done += bytes.len() as u64;
            progress(Progress { done, total, tensor: &t.name });
        }
        w.flush().map_err(|e| out_err(&path, e))?;
    }
    if n > 1 {
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write_json(&dir.join("model.safetensors.index.json"), &index)?;
    }
    let gen = json!({"bos_token_id": spec.bos, "eos_token_id": spec.eos});
    write_json(&dir.join("generation_config.json"), &gen)?;
    if let Some((tokenizer, config)) = tokenizer::hf_tokenizer_files(&tok) {
        write_json(&dir.join("tokenizer.json"), &tokenizer)?;
        write_json(&dir.join("tokenizer_config.json"), &config)?;
    }
    Ok(SynthReport { tensors: tensors.len(), bytes: total, n_params: spec.n_params() })
}
