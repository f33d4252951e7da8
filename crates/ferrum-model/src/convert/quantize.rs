//! `quantize`: an HF safetensors directory or an F32/F16/BF16 GGUF in, a
//! llama.cpp-compatible GGUF of the chosen scheme out.
//!
//! Everything that can fail on the input (types, names, shapes, the
//! tokenizer) is checked before the first tensor is encoded; then tensors
//! are streamed one at a time (memory: one tensor as f32 plus its encoding).
//!
//! From HF, the result is what llama.cpp's converter followed by
//! `llama-quantize` would write: GGUF names (the loader's own map,
//! `source::hf_name` / `expert_parts`), experts stacked into 3-D tensors,
//! Llama's q/k rows permuted for its interleaved rope (per head of width d:
//! GGUF row 2j = HF row j, row 2j+1 = HF row j + d/2), `rope_freqs` for
//! Llama 3 scaling, non-quantized tensors in F32, and the tokenizer from
//! tokenizer.json. From GGUF, metadata and tensor order are copied,
//! `general.file_type` is set, and non-quantized tensors keep their type.

use std::collections::BTreeSet;
use std::path::Path;

use ferrum_core::GgmlType;
use ferrum_format::gguf::{GgufFile, GgufWriter};
use ferrum_format::hf_config::HfConfig;
use ferrum_format::quant;
use ferrum_format::safetensors::SafeTensors;

use super::gguf_meta::{arch_kvs, set_file_type, Kv};
use super::output::OutFile;
use super::rows;
use super::spec::{Arch, ArchSpec, TensorDesc, TensorKind};
use super::type_mix::{plan, MixContext, PlannedTensor};
use super::{tokenizer, ConvertError, Progress, QuantScheme, Result};
use crate::source::{expert_parts, hf_name};

#[derive(Clone, Debug)]
pub struct QuantizeReport {
    /// `general.architecture` of the output.
    pub arch: String,
    pub tensors: Vec<PlannedTensor>,
    /// Tensor data bytes read and written.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Tensors whose rows did not fit the scheme's block (see `type_mix`).
    pub n_fallback: usize,
}

/// Where one output tensor's values come from.
enum Source {
    /// GGUF tensor, by name.
    Gguf(String),
    /// HF tensor, rows permuted for `Some(n_heads)` (Llama q/k).
    Hf { name: String, permute_heads: Option<usize> },
    /// HF experts `model.layers.{layer}.mlp.experts.{e}.{proj}.weight`, stacked.
    HfExperts { layer: String, proj: String, n: u64 },
    /// Computed values (rope_freqs).
    Values(Vec<f32>),
}

/// An opened input: metadata for the output and a source per tensor.
struct Job {
    kv: Vec<Kv>,
    tensors: Vec<(String, Vec<u64>, GgmlType)>,
    sources: Vec<Source>,
    ctx: MixContext,
    arch: String,
    gguf: Option<GgufFile>,
    hf: Option<SafeTensors>,
    head_dim: usize,
    input: std::path::PathBuf,
}

fn bad(path: &Path, reason: String) -> ConvertError {
    ConvertError::BadInput { path: path.to_path_buf(), reason }
}

fn gguf_job(path: &Path, scheme: QuantScheme) -> Result<Job> {
    let f = GgufFile::open(path)?;
    let arch = f.get_str("general.architecture")?.to_string();
    let key = |k: &str| format!("{arch}.{k}");
    let n_layers = f.get_u64(&key("block_count"))? as usize;
    let n_heads = f.get_u64(&key("attention.head_count")).unwrap_or(0) as usize;
    let n_kv = f.get_u64(&key("attention.head_count_kv")).unwrap_or(n_heads as u64) as usize;
    let mut tensors = Vec::new();
    let mut sources = Vec::new();
    for t in f.tensors() {
        if !matches!(t.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            return Err(ConvertError::Requantize { tensor: t.name.clone(), ty: t.ty });
        }
        tensors.push((t.name.clone(), t.dims.clone(), t.ty));
        sources.push(Source::Gguf(t.name.clone()));
    }
    let ctx = MixContext {
        n_layers,
        n_attn_v: f.tensors().iter().filter(|t| t.name.contains("attn_v.weight")).count(),
        n_experts: f.get_u64(&key("expert_count")).unwrap_or(0) as usize,
        tied: f.tensor("output.weight").is_none(),
        llama_70b: arch == "llama" && n_layers == 80 && n_heads != n_kv,
    };
    let mut kv = f.metadata().to_vec();
    set_file_type(&mut kv, scheme);
    Ok(Job { kv, tensors, sources, ctx, arch, gguf: Some(f), hf: None, head_dim: 0, input: path.to_path_buf() })
}

/// Checks an HF tensor exists with the PyTorch shape `shape`.
fn check_hf(st: &SafeTensors, dir: &Path, name: &str, shape: &[u64]) -> Result<()> {
    let t = st.tensor(name)?;
    if !t.shape.iter().map(|&d| d as u64).eq(shape.iter().copied()) {
        return Err(bad(dir, format!("tensor `{name}` has shape {:?}, expected {shape:?}", t.shape)));
    }
    Ok(())
}

fn hf_job(dir: &Path, scheme: QuantScheme) -> Result<Job> {
    let cfg = HfConfig::from_file(&dir.join("config.json"))?;
    let st = SafeTensors::open(dir)?;
    let rows = st.get("model.embed_tokens.weight").and_then(|t| t.shape.first().copied());
    let mut spec = ArchSpec::from_hf(&cfg, dir, rows)?;
    spec.tied = cfg.tie_word_embeddings || !st.contains("lm_head.weight");
    if let Some(name) = dir.canonicalize().ok().and_then(|d| {
        let leaf = d.file_name()?.to_str()?.to_string();
        // Fixture-style `<model>/hf` directories are named by their parent.
        if leaf == "hf" {
            Some(d.parent()?.file_name()?.to_str()?.to_string())
        } else {
            Some(leaf)
        }
    }) {
        spec.name = name;
    }
    // Counts from config.json size the tensor list: tie them to the file
    // before trusting them (a forged count must not allocate hugely).
    let (h, q) = (spec.hidden as u64, spec.q_dim() as u64);
    check_hf(&st, dir, "model.embed_tokens.weight", &[spec.vocab as u64, h])?;
    check_hf(&st, dir, "model.layers.0.self_attn.q_proj.weight", &[q, h])?;
    let n_experts = spec.moe.as_ref().map_or(0, |m| m.n_experts);
    if spec.n_layers > st.len() || n_experts > st.len() {
        return Err(bad(
            dir,
            format!("config.json claims {} layers and {n_experts} experts, but the checkpoint holds only {} tensors", spec.n_layers, st.len()),
        ));
    }
    let mut kv = arch_kvs(&spec, scheme);
    kv.extend(tokenizer::hf_kvs(dir, spec.vocab, spec.bos, spec.eos)?);
    let descs = spec.gguf_tensors();
    let mut used = BTreeSet::new();
    let mut sources = Vec::with_capacity(descs.len());
    for TensorDesc { name, dims, kind } in &descs {
        let hf_shape: Vec<u64> = dims.iter().rev().copied().collect();
        let src = if *kind == TensorKind::RopeFreqs {
            Source::Values(spec.rope_freqs().unwrap_or_default())
        } else if let (Some((layer, proj)), &[d0, d1, n]) = (expert_parts(name), dims.as_slice()) {
            for e in 0..n {
                let hf = format!("model.layers.{layer}.mlp.experts.{e}.{proj}.weight");
                check_hf(&st, dir, &hf, &[d1, d0])?;
                used.insert(hf);
            }
            Source::HfExperts { layer: layer.to_string(), proj: proj.to_string(), n }
        } else {
            let hf = hf_name(name).ok_or_else(|| bad(dir, format!("no HF name for tensor `{name}`")))?;
            check_hf(&st, dir, &hf, &hf_shape)?;
            used.insert(hf.clone());
            let permute_heads = match (spec.arch, name.as_str()) {
                (Arch::Llama, n) if n.contains("attn_q.") => Some(spec.n_heads),
                (Arch::Llama, n) if n.contains("attn_k.") => Some(spec.n_kv_heads),
                _ => None,
            };
            Source::Hf { name: hf, permute_heads }
        };
        sources.push(src);
    }
    let ignorable = |n: &str| n.ends_with("rotary_emb.inv_freq") || (spec.tied && n == "lm_head.weight");
    let left: Vec<&str> = st.names().filter(|n| !used.contains(*n) && !ignorable(n)).collect();
    if !left.is_empty() {
        return Err(bad(dir, format!("{} tensor(s) not used by a {} model: {}", left.len(), spec.arch.gguf_name(), left.join(", "))));
    }
    let ctx = MixContext::from_spec(&spec);
    let tensors = descs.into_iter().map(|t| (t.name, t.dims, GgmlType::F32)).collect();
    Ok(Job {
        kv,
        tensors,
        sources,
        ctx,
        arch: spec.arch.gguf_name().to_string(),
        gguf: None,
        hf: Some(st),
        head_dim: spec.head_dim,
        input: dir.to_path_buf(),
    })
}

/// Rows of `data` (`cols` wide) reordered per head of `d` rows: output row
/// 2j is input row j, output row 2j+1 is input row j + d/2.
fn permute_rows(data: &[f32], n_heads: usize, d: usize, cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len());
    for h in 0..n_heads {
        for j in 0..d / 2 {
            for src in [h * d + j, h * d + j + d / 2] {
                out.extend_from_slice(data.get(src * cols..(src + 1) * cols).unwrap_or(&[]));
            }
        }
    }
    out
}

impl Job {
    /// The f32 values of tensor `i`, or its bytes unchanged when `ty` is
    /// already its type.
    fn load(&self, i: usize, ty: GgmlType) -> Result<Data<'_>> {
        let (name, dims, _) = &self.tensors[i];
        match (&self.sources[i], &self.gguf, &self.hf) {
            (Source::Gguf(n), Some(f), _) => {
                let t = f.tensor(n).ok_or_else(|| bad(&self.input, format!("no tensor `{n}`")))?;
                let bytes = f.tensor_data(t);
                if t.ty == ty {
                    return Ok(Data::Bytes(bytes));
                }
                let n_el = t.n_elements() as usize;
                quant::dequantize_to_vec(t.ty, bytes, n_el)
                    .map(Data::Values)
                    .map_err(|source| ConvertError::Quant { tensor: name.clone(), error: source })
            }
            (Source::Hf { name: hf, permute_heads }, _, Some(st)) => {
                let v = st.to_f32(hf)?;
                Ok(Data::Values(match permute_heads {
                    Some(heads) => {
                        let cols = if dims.len() > 1 { dims[0] as usize } else { 1 };
                        permute_rows(&v, *heads, self.head_dim, cols)
                    }
                    None => v,
                }))
            }
            (Source::HfExperts { layer, proj, n }, _, Some(st)) => {
                let mut v = Vec::with_capacity(dims.iter().product::<u64>() as usize);
                for e in 0..*n {
                    v.extend(st.to_f32(&format!("model.layers.{layer}.mlp.experts.{e}.{proj}.weight"))?);
                }
                Ok(Data::Values(v))
            }
            (Source::Values(v), _, _) => Ok(Data::Values(v.clone())),
            _ => Err(bad(&self.input, format!("no source for tensor `{name}`"))),
        }
    }
}

enum Data<'a> {
    Bytes(&'a [u8]),
    Values(Vec<f32>),
}

/// Bytes of source data behind tensor `i` (for the report).
fn source_bytes(job: &Job, i: usize) -> u64 {
    let (_, dims, keep) = &job.tensors[i];
    let n: u64 = dims.iter().product();
    match (&job.sources[i], &job.hf) {
        (Source::Gguf(_), _) => keep.bytes_for(n).unwrap_or(0),
        (Source::Hf { name, .. }, Some(st)) => st.get(name).map_or(0, |t| t.data.len() as u64),
        (Source::HfExperts { layer, proj, n }, Some(st)) => {
            (0..*n).filter_map(|e| st.get(&format!("model.layers.{layer}.mlp.experts.{e}.{proj}.weight"))).map(|t| t.data.len() as u64).sum()
        }
        _ => n * 4,
    }
}

/// Quantize `input` (an HF directory or a float GGUF) to `output` under
/// `scheme`. The output file is created first (an unwritable path fails
/// before any work) and removed if anything fails later.
pub fn quantize_model(input: &Path, output: &Path, scheme: QuantScheme, progress: &mut dyn FnMut(Progress<'_>)) -> Result<QuantizeReport> {
    let mut file = OutFile::create(output)?;
    if !input.exists() {
        return Err(ConvertError::Input { path: input.to_path_buf(), error: std::io::ErrorKind::NotFound.into() });
    }
    let job = if input.is_dir() { hf_job(input, scheme)? } else { gguf_job(input, scheme)? };
    let planned = plan(scheme, &job.tensors, &job.ctx);
    let mut w = GgufWriter::new();
    for (k, v) in &job.kv {
        w.add_kv(k.clone(), v.clone())?;
    }
    for p in &planned {
        w.add_tensor(p.name.clone(), &p.dims, p.ty)?;
    }
    let total: u64 = planned.iter().map(PlannedTensor::n_bytes).sum();
    let bytes_in = (0..job.tensors.len()).map(|i| source_bytes(&job, i)).sum();
    let writer = file.writer()?;
    let mut sink = w.begin(writer).map_err(|e| file.gguf_err(e))?;
    let mut done = 0u64;
    for (i, p) in planned.iter().enumerate() {
        let encoded;
        let bytes = match job.load(i, p.ty)? {
            Data::Bytes(b) => b,
            Data::Values(v) => {
                encoded = rows::encode(&p.name, p.ty, &v, p.dims.first().copied().unwrap_or(1) as usize)?;
                &encoded[..]
            }
        };
        sink.write_tensor(&p.name, bytes).map_err(|e| file.gguf_err(e))?;
        done += bytes.len() as u64;
        progress(Progress { done, total, tensor: &p.name });
    }
    sink.finish().map_err(|e| file.gguf_err(e))?;
    file.keep();
    let n_fallback = planned.iter().filter(|p| p.fallback).count();
    Ok(QuantizeReport { arch: job.arch, tensors: planned, bytes_in, bytes_out: total, n_fallback })
}
