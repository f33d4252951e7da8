//! `ferrum bench`: offline prompt-processing (pp) and token-generation (tg)
//! throughput, measured as llama-bench does: a warm-up run, then `-r`
//! repeats; mean ± standard deviation of tokens/s.
//!
//! pp N: one forward over N random tokens from an empty cache.
//! tg N: N single-token steps from an empty cache (B sequences decoding
//! together with `--batch B`; tokens/s counts all B sequences).
//! `-d D` (llama-bench's depth) first fills each cache with D tokens, untimed.
//!
//! `ferrum bench serve ...` instead load-tests a running OpenAI-compatible
//! server (see `bench_serve`).

use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use ferrum_kernels::{Backend, KvDType, SampleSpec};
use ferrum_model::load::ModelFile;
use ferrum_model::{ForwardBatch, KvCache, LogitRows, Model, SeqInput, BLOCK_SIZE};
use serde::Serialize;

use crate::{loading, model_path};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    cmd: Option<BenchCmd>,
    /// Model: a GGUF file, a Hugging Face directory, or an alias.
    #[arg(short, long, default_value = model_path::DEFAULT_ALIAS)]
    model: String,
    /// Prompt tokens of the pp test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    n_prompt: usize,
    /// Generated tokens of the tg test (0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Tokens already in each sequence's cache before a test (untimed).
    #[arg(short = 'd', long = "n-depth", default_value_t = 0)]
    n_depth: usize,
    /// Repeats after one warm-up run.
    #[arg(short = 'r', long, default_value_t = 5)]
    repetitions: usize,
    /// Decode batch sizes for tg (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    batch: Vec<usize>,
    #[command(flatten)]
    backend: loading::BackendArgs,
    /// Print JSON instead of a markdown table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Load-test a running OpenAI-compatible server (Ferrum, llama-server, vLLM).
    Serve(crate::bench_serve::ServeBenchArgs),
}

#[derive(Serialize)]
struct Row {
    model: String,
    test: String,
    batch: usize,
    tokens_per_s_mean: f64,
    tokens_per_s_std: f64,
    runs: Vec<f64>,
}

pub fn run(mut a: BenchArgs) -> Result<()> {
    if let Some(BenchCmd::Serve(s)) = a.cmd.take() {
        return crate::bench_serve::run(s);
    }
    if a.repetitions == 0 || a.batch.iter().any(|&b| b == 0) {
        bail!("--repetitions and every --batch size must be at least 1");
    }
    let path = model_path::resolve(&a.model)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("model").to_string();
    let backend = a.backend.clone();
    loading::with_model(&path, &backend, Bench { a, name })
}

struct Bench {
    a: BenchArgs,
    name: String,
}

impl loading::ModelTask for Bench {
    type Out = ();

    fn run<B: Backend + 'static>(self, _: ModelFile, model: Model<B>, info: loading::BackendInfo) -> Result<()> {
        let Bench { a, name } = self;
        let (kv, d) = (info.kv_dtype, a.n_depth);
        let at = if d > 0 { format!(" @ d{d}") } else { String::new() };
        let mut rows = Vec::new();
        if a.n_prompt > 0 {
            let runs = measure(a.repetitions, || pp(&model, kv, d, a.n_prompt))?;
            rows.push(row(&name, format!("pp{}{at}", a.n_prompt), 1, runs));
        }
        if a.n_gen > 0 {
            for &b in &a.batch {
                let runs = measure(a.repetitions, || tg(&model, kv, d, a.n_gen, b))?;
                rows.push(row(&name, format!("tg{}{at}", a.n_gen), b, runs));
            }
        }
        if a.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            let threads = if info.name == "cpu" { ferrum_kernels::cpu::num_threads().to_string() } else { "-".into() };
            println!("| model | backend | threads | test | batch | t/s |");
            println!("|---|---|---:|---|---:|---:|");
            for r in &rows {
                println!(
                    "| {} | {} | {} | {} | {} | {:.2} ± {:.2} |",
                    r.model, info.name, threads, r.test, r.batch, r.tokens_per_s_mean, r.tokens_per_s_std
                );
            }
        }
        Ok(())
    }
}

fn row(model: &str, test: String, batch: usize, runs: Vec<f64>) -> Row {
    let mean = runs.iter().sum::<f64>() / runs.len() as f64;
    let var = runs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (runs.len().max(2) - 1) as f64;
    Row { model: model.to_string(), test, batch, tokens_per_s_mean: mean, tokens_per_s_std: var.sqrt(), runs }
}

/// One warm-up call, then `reps` timed calls; each returns the tokens it
/// processed and the seconds the timed part took.
fn measure(reps: usize, mut f: impl FnMut() -> Result<(usize, f64)>) -> Result<Vec<f64>> {
    f()?;
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        let (n, secs) = f()?;
        out.push(n as f64 / secs);
    }
    Ok(out)
}

/// Deterministic token ids spread over the vocabulary.
fn tokens(vocab: usize, n: usize, salt: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + salt * 104_729 + 17) % vocab) as u32).collect()
}

fn cache<B: Backend>(model: &Model<B>, dtype: KvDType, seqs: usize, len: usize) -> Result<(KvCache<B>, usize)> {
    let per = len.div_ceil(BLOCK_SIZE);
    Ok((KvCache::new(&model.backend, &model.cfg, seqs * per, dtype)?, per))
}

/// Fills the first `depth` positions of each sequence's cache (untimed).
fn fill<B: Backend>(model: &Model<B>, kv: &mut KvCache<B>, tables: &[Vec<u32>], depth: usize) -> Result<()> {
    for (s, table) in tables.iter().enumerate() {
        let toks = tokens(model.cfg.vocab_size, depth, s + 1);
        for (i, chunk) in toks.chunks(512).enumerate() {
            let seqs = vec![SeqInput { tokens: chunk, start_pos: i * 512, block_table: table, logits: LogitRows::None }];
            model.forward(&ForwardBatch { seqs }, kv, None)?;
        }
    }
    Ok(())
}

fn pp<B: Backend>(model: &Model<B>, dtype: KvDType, depth: usize, n: usize) -> Result<(usize, f64)> {
    let (mut kv, per) = cache(model, dtype, 1, depth + n)?;
    let table: Vec<u32> = (0..per as u32).collect();
    fill(model, &mut kv, std::slice::from_ref(&table), depth)?;
    let toks = tokens(model.cfg.vocab_size, n, 0);
    let t = Instant::now();
    let batch = ForwardBatch { seqs: vec![SeqInput { tokens: &toks, start_pos: depth, block_table: &table, logits: LogitRows::Last }] };
    model.forward(&batch, &mut kv, None)?;
    Ok((n, t.elapsed().as_secs_f64()))
}

fn tg<B: Backend>(model: &Model<B>, dtype: KvDType, depth: usize, n: usize, b: usize) -> Result<(usize, f64)> {
    let (mut kv, per) = cache(model, dtype, b, depth + n)?;
    let tables: Vec<Vec<u32>> = (0..b).map(|s| ((s * per) as u32..((s + 1) * per) as u32).collect()).collect();
    fill(model, &mut kv, &tables, depth)?;
    let mut next: Vec<u32> = (0..b).map(|s| tokens(model.cfg.vocab_size, 1, s)[0]).collect();
    let greedy = vec![SampleSpec::greedy(); b];
    let t = Instant::now();
    for pos in depth..depth + n {
        let steps: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let seqs = (0..b)
            .map(|s| SeqInput { tokens: &steps[s], start_pos: pos, block_table: &tables[s], logits: LogitRows::Last })
            .collect();
        // Greedy, chosen on the backend (as the server does for greedy requests).
        let picks = model.forward_sampled(&ForwardBatch { seqs }, &mut kv, &greedy)?;
        for (s, t) in next.iter_mut().enumerate() {
            *t = picks.last_of(s).and_then(|p| p.id).unwrap_or(0);
        }
    }
    Ok((n * b, t.elapsed().as_secs_f64()))
}
