//! Helpers shared by the model tests.
#![allow(dead_code)]

use std::path::PathBuf;


use ferrum_kernels::{Backend, KvDType};
use ferrum_model::{ForwardBatch, KvCache, LogitRows, Model, SeqInput, BLOCK_SIZE};

/// KV element type of the test caches (llama.cpp defaults to f16).
pub const KV_DTYPE: KvDType = KvDType::F32;

/// The repository root: FERRUM_REPO_ROOT when set (test binaries run on a
/// machine other than the one that built them), else the source tree.
pub fn repo_root() -> PathBuf {
    std::env::var_os("FERRUM_REPO_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
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
pub fn greedy<B: Backend>(model: &Model<B>, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
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
pub fn all_logits<B: Backend>(model: &Model<B>, tokens: &[u32]) -> Vec<Vec<f32>> {
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

/// One of llama.cpp's greedy continuations of the real default model
/// (tests/fixtures/reference/visible_ref.json).
#[derive(serde::Deserialize)]
pub struct RefCase {
    pub id: String,
    pub prompt_tokens: Vec<u32>,
    pub completion_tokens: Vec<u32>,
    pub top5_per_step: Vec<serde_json::Value>,
}

pub fn llama_cpp_cases() -> Vec<RefCase> {
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/reference/visible_ref.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// How many of llama.cpp's eight 48-token greedy continuations `model`
/// reproduces exactly, and of how many; prints the first divergence and its
/// logit gap for the others.
pub fn llama_cpp_greedy_matches<B: Backend>(model: &Model<B>) -> (usize, usize) {
    let cases = llama_cpp_cases();
    let mut matched = 0;
    for c in &cases {
        let n = c.completion_tokens.len();
        let (got, rows) = greedy(model, &c.prompt_tokens, n);
        match got.iter().zip(&c.completion_tokens).position(|(a, b)| a != b) {
            None => matched += 1,
            Some(i) => {
                let row = &rows[i];
                let gap = row[got[i] as usize] - row[c.completion_tokens[i] as usize];
                eprintln!(
                    "{}: first divergence at step {i}: ours {} vs llama.cpp {} (logit gap {gap:.4}; llama.cpp top-5 {})",
                    c.id, got[i], c.completion_tokens[i], c.top5_per_step[i]
                );
            }
        }
    }
    eprintln!("{matched}/{} prompts match llama.cpp's 48 greedy tokens", cases.len());
    (matched, cases.len())
}

/// The fixture families (tests/fixtures/models).
pub const FAMILIES: [&str; 4] = ["llama", "qwen2", "qwen3", "qwen3moe"];

#[derive(serde::Deserialize)]
pub struct Reference {
    pub results: Vec<RefResult>,
}

#[derive(serde::Deserialize)]
pub struct RefResult {
    pub prompt: Vec<u32>,
    pub greedy: Vec<u32>,
    pub prefill_logits: Vec<Vec<f32>>,
    pub decode_logits: Vec<Vec<f32>>,
}

pub fn dir(family: &str) -> PathBuf {
    repo_root().join("tests/fixtures/models").join(family)
}

pub fn reference(family: &str) -> Reference {
    reference_file(family, "reference.json")
}

pub fn reference_file(family: &str, file: &str) -> Reference {
    let text = std::fs::read_to_string(dir(family).join(file)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Worst relative L2 error over every prefill and decode row, and whether the
/// greedy chain matches.
pub fn compare<B: Backend>(model: &Model<B>, r: &Reference) -> (f64, bool) {
    let mut worst = 0.0f64;
    let mut same = true;
    for res in &r.results {
        let rows = all_logits(model, &res.prompt);
        for (got, want) in rows.iter().zip(&res.prefill_logits) {
            worst = worst.max(rel_l2(got, want));
        }
        let (greedy, decode_rows) = greedy(model, &res.prompt, res.greedy.len());
        same &= greedy == res.greedy;
        for (got, want) in decode_rows.iter().zip(&res.decode_logits) {
            worst = worst.max(rel_l2(got, want));
        }
    }
    (worst, same)
}

