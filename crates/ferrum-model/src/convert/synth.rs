//! `synth`: a GGUF with a real architecture's exact shapes and random but
//! finite weights, so that performance can be measured where the real
//! weights are not at hand.
//!
//! Matrices are N(0, 0.02²) noise quantized per llama.cpp's type mix for the
//! scheme (tiled from template blocks, see `tile`), norms are 1.0, the MoE
//! router is small noise kept in F32 (near-uniform routing, as in a trained
//! model's balanced load), biases are small noise, and Llama 3's
//! `rope_freqs` are the real divisors. Tokenizer metadata comes from a donor
//! GGUF or is a synthetic byte-level vocabulary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ferrum_core::GgmlType;
use ferrum_format::gguf::GgufWriter;
use ferrum_format::quant;

use super::gguf_meta::arch_kvs;
use super::output::OutFile;
use super::spec::{ArchSpec, TensorDesc, TensorKind};
use super::tile::{Rng, Tiler};
use super::type_mix::{choose_type, MixContext, PlannedTensor};
use super::{tokenizer, ConvertError, Progress, QuantScheme, Result};

/// Standard deviation of synthetic matrices, embeddings, routers and biases
/// (the usual initializer range).
pub const WEIGHT_STD: f32 = 0.02;

#[derive(Clone, Debug)]
pub struct SynthOptions {
    pub scheme: QuantScheme,
    /// Copy `tokenizer.*` from this GGUF instead of a synthetic vocabulary.
    pub donor: Option<PathBuf>,
    pub seed: u64,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions { scheme: QuantScheme::Q4KM, donor: None, seed: 0 }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SynthReport {
    pub tensors: usize,
    /// Tensor data bytes written.
    pub bytes: u64,
    pub n_params: u64,
}

/// The tensors `synth_gguf` writes, with their types, without writing.
pub fn plan_gguf(spec: &ArchSpec, scheme: QuantScheme) -> Vec<PlannedTensor> {
    let ctx = MixContext::from_spec(spec);
    spec.gguf_tensors()
        .into_iter()
        .map(|t| {
            let (ty, fallback) = choose_type(scheme, &t.name, &t.dims, GgmlType::F32, &ctx);
            PlannedTensor { name: t.name, dims: t.dims, ty, fallback }
        })
        .collect()
}

/// Random weights for one tensor, encoded as `ty`.
pub(super) struct WeightMaker {
    rng: Rng,
    tilers: HashMap<GgmlType, Tiler>,
}

impl WeightMaker {
    pub(super) fn new(seed: u64) -> WeightMaker {
        WeightMaker { rng: Rng::new(seed), tilers: HashMap::new() }
    }

    fn noise(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.rng.gauss() * WEIGHT_STD).collect()
    }

    pub(super) fn make(&mut self, t: &TensorDesc, ty: GgmlType, spec: &ArchSpec) -> Result<Vec<u8>> {
        let n = usize::try_from(t.n_elements()).unwrap_or(usize::MAX);
        let encode = |v: &[f32]| quant::quantize(ty, v).map_err(|source| ConvertError::Quant { tensor: t.name.clone(), error: source });
        match t.kind {
            TensorKind::Norm => encode(&vec![1.0; n]),
            TensorKind::Bias | TensorKind::Router => {
                let v = self.noise(n);
                encode(&v)
            }
            TensorKind::RopeFreqs => encode(&spec.rope_freqs().unwrap_or_else(|| vec![1.0; n])),
            TensorKind::Matrix => {
                if !self.tilers.contains_key(&ty) {
                    let tiler = Tiler::new(ty, WEIGHT_STD, &mut self.rng)?;
                    self.tilers.insert(ty, tiler);
                }
                let Some(tiler) = self.tilers.get(&ty).filter(|t| n % t.unit_elems() == 0) else {
                    let v = self.noise(n);
                    return encode(&v);
                };
                let bytes = ty
                    .bytes_for(n as u64)
                    .and_then(|b| usize::try_from(b).ok())
                    .ok_or_else(|| ConvertError::Quant { tensor: t.name.clone(), error: quant::QuantError::SizeOverflow { ty, elements: n } })?;
                let mut out = vec![0u8; bytes];
                tiler.fill(&mut out, &mut self.rng);
                Ok(out)
            }
        }
    }
}

/// Write `spec` as a GGUF of random weights to `out`.
pub fn synth_gguf(spec: &ArchSpec, out: &Path, opts: &SynthOptions, progress: &mut dyn FnMut(Progress<'_>)) -> Result<SynthReport> {
    let mut file = OutFile::create(out)?;
    let tok = match &opts.donor {
        Some(p) => tokenizer::donor_kvs(p, spec.vocab)?,
        None => tokenizer::synthetic_kvs(spec.vocab),
    };
    let descs = spec.gguf_tensors();
    let plan = plan_gguf(spec, opts.scheme);
    let mut w = GgufWriter::new();
    for (k, v) in arch_kvs(spec, opts.scheme).into_iter().chain(tok) {
        w.add_kv(k, v)?;
    }
    for p in &plan {
        w.add_tensor(p.name.clone(), &p.dims, p.ty)?;
    }
    let total: u64 = plan.iter().map(PlannedTensor::n_bytes).sum();
    let writer = file.writer()?;
    let mut sink = w.begin(writer).map_err(|e| file.gguf_err(e))?;
    let mut maker = WeightMaker::new(opts.seed);
    let mut done = 0u64;
    for (d, p) in descs.iter().zip(&plan) {
        let bytes = maker.make(d, p.ty, spec)?;
        sink.write_tensor(&p.name, &bytes).map_err(|e| file.gguf_err(e))?;
        done += bytes.len() as u64;
        progress(Progress { done, total, tensor: &p.name });
    }
    sink.finish().map_err(|e| file.gguf_err(e))?;
    file.keep();
    Ok(SynthReport { tensors: plan.len(), bytes: total, n_params: spec.n_params() })
}

pub use super::safetensors_out::synth_safetensors;
