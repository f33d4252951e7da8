//! Helpers shared by the model tests.
#![allow(dead_code)]

use std::path::PathBuf;

use ferrum_kernels::{CpuBackend, KvDType};
use ferrum_model::{ForwardBatch, KvCache, LogitRows, Model, SeqInput, BLOCK_SIZE};

/// KV element type of the test caches (llama.cpp defaults to f16).
pub const KV_DTYPE: KvDType = KvDType::F32;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The real default model, or `None` when model tests are explicitly skipped.
/// Panics with instructions when the model is missing and not skipped.
pub fn default_model() -> Option<PathBuf> {
    if std::env::var("FERRUM_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
        return None;
    }
    let p = std::env::var_os("FERRUM_DEFAULT_MODEL").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".cache/ferrum/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    });
    assert!(p.exists(), "default model not found at {}: run scripts/fetch-default-model.sh (or set FERRUM_SKIP_MODEL_TESTS=1)", p.display());
    Some(p)
}

/// Greedy generation of `n` tokens for one sequence on its own cache.
pub fn greedy(model: &Model<CpuBackend>, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let ctx = prompt.len() + n;
    let n_blocks = ctx.div_ceil(BLOCK_SIZE);
    let mut kv = KvCache::new(&model.backend, &model.cfg, n_blocks, KV_DTYPE).unwrap();
    let table: Vec<u32> = (0..n_blocks as u32).collect();
    let mut out = Vec::new();
    let mut rows = Vec::new();
    let mut pos = 0;
    let mut input = prompt.to_vec();
    for _ in 0..n {
        let batch = ForwardBatch { seqs: vec![SeqInput { tokens: &input, start_pos: pos, block_table: &table, logits: LogitRows::Last }] };
        let logits = model.forward(&batch, &mut kv, None).unwrap();
        let row = logits.row(0).to_vec();
        let next = argmax(&row);
        pos += input.len();
        input = vec![next];
        out.push(next);
        rows.push(row);
    }
    (out, rows)
}

pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Logits of every position of `tokens` in one prefill.
pub fn all_logits(model: &Model<CpuBackend>, tokens: &[u32]) -> Vec<Vec<f32>> {
    let n_blocks = tokens.len().div_ceil(BLOCK_SIZE);
    let mut kv = KvCache::new(&model.backend, &model.cfg, n_blocks, KV_DTYPE).unwrap();
    let table: Vec<u32> = (0..n_blocks as u32).collect();
    let batch = ForwardBatch { seqs: vec![SeqInput { tokens, start_pos: 0, block_table: &table, logits: LogitRows::All }] };
    let l = model.forward(&batch, &mut kv, None).unwrap();
    (0..l.rows.len()).map(|i| l.row(i).to_vec()).collect()
}

pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln()
}
