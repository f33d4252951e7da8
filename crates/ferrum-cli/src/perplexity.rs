//! `ferrum perplexity`: llama.cpp's method — the text is tokenized once,
//! cut into non-overlapping chunks of `ctx` tokens, and each chunk scores the
//! log-likelihood of the tokens in its second half.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use ferrum_kernels::{Backend, KvDType};
use ferrum_model::load::ModelFile;
use ferrum_model::{ForwardBatch, KvCache, LogitRows, Model, SeqInput, BLOCK_SIZE};

use crate::{loading, model_path};

#[derive(Args)]
pub struct PerplexityArgs {
    /// Model: a GGUF file, a Hugging Face directory, or an alias.
    #[arg(short, long, default_value = model_path::DEFAULT_ALIAS)]
    model: String,
    /// The text file to score.
    file: PathBuf,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Score at most this many chunks.
    #[arg(long)]
    chunks: Option<usize>,
    #[command(flatten)]
    backend: loading::BackendArgs,
}

pub fn run(a: PerplexityArgs) -> Result<()> {
    if a.ctx < 4 || a.ctx % 2 != 0 {
        bail!("--ctx must be an even number >= 4, got {}", a.ctx);
    }
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let path = model_path::resolve(&a.model)?;
    let backend = a.backend.clone();
    loading::with_model(&path, &backend, Perplexity { a, text })
}

struct Perplexity {
    a: PerplexityArgs,
    text: String,
}

impl loading::ModelTask for Perplexity {
    type Out = ();

    fn run<B: Backend + 'static>(self, file: ModelFile, model: Model<B>, info: loading::BackendInfo) -> Result<()> {
        score(self.a, &self.text, file, model, info.kv_dtype)
    }
}

fn score<B: Backend>(a: PerplexityArgs, text: &str, file: ModelFile, model: Model<B>, kv_dtype: KvDType) -> Result<()> {
    let tok = match &file {
        ModelFile::Gguf(g) => ferrum_text::Tokenizer::from_gguf(g)?,
        ModelFile::Hf { dir, .. } => ferrum_text::Tokenizer::from_file(&dir.join("tokenizer.json"))?,
    };
    let tokens = tok.encode(text, false, true)?;
    let mut n_chunks = tokens.len() / a.ctx;
    if let Some(c) = a.chunks {
        n_chunks = n_chunks.min(c);
    }
    if n_chunks == 0 {
        bail!("{} tokens are fewer than one chunk of {}", tokens.len(), a.ctx);
    }
    eprintln!("perplexity: {} tokens, {n_chunks} chunks of {}", tokens.len(), a.ctx);
    let n_blocks = a.ctx.div_ceil(BLOCK_SIZE);
    let mut kv = KvCache::new(&model.backend, &model.cfg, n_blocks, kv_dtype)?;
    let table: Vec<u32> = (0..n_blocks as u32).collect();
    let first = a.ctx / 2;
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let start = Instant::now();
    for c in 0..n_chunks {
        let mut chunk = tokens[c * a.ctx..(c + 1) * a.ctx].to_vec();
        if tok.add_bos() {
            if let Some(b) = tok.bos_id() {
                chunk[0] = b;
            }
        }
        let batch = ForwardBatch {
            seqs: vec![SeqInput { tokens: &chunk, start_pos: 0, block_table: &table, logits: LogitRows::Tail(a.ctx - first) }],
        };
        let logits = model.forward(&batch, &mut kv, None)?;
        // Row i of the result is position first + i; it predicts token first + i + 1.
        for i in 0..a.ctx - 1 - first {
            let row = logits.row(i);
            let target = chunk[first + i + 1] as usize;
            let v = -log_softmax_at(row, target);
            nll += v;
            nll2 += v * v;
            count += 1;
        }
        eprint!("[{}]{:.4},", c + 1, (nll / count as f64).exp());
    }
    eprintln!();
    let mean = nll / count as f64;
    let ppl = mean.exp();
    let var = (nll2 / count as f64 - mean * mean).max(0.0);
    let err = ppl * (var / (count as f64 - 1.0).max(1.0)).sqrt();
    eprintln!("{count} tokens scored in {:.1} s", start.elapsed().as_secs_f64());
    println!("Final estimate: PPL = {ppl:.4} +/- {err:.5}");
    println!("PPL = {ppl:.4}");
    Ok(())
}

/// `log softmax(row)[target]`, accumulated in f64.
fn log_softmax_at(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    row[target] as f64 - max - sum.ln()
}
