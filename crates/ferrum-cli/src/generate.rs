//! `ferrum run`: generate an answer to PROMPT, streamed to stdout.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use ferrum_kernels::KvDType;
use ferrum_model::load::ModelFile;
use ferrum_model::{ForwardBatch, KvCache, LogitRows, SeqInput, BLOCK_SIZE};
use ferrum_text::Tokenizer;

use crate::{chat, loading, model_path};

#[derive(Args)]
pub struct RunArgs {
    /// Model: a GGUF file, a Hugging Face directory, or an alias.
    #[arg(short, long, default_value = model_path::DEFAULT_ALIAS)]
    model: String,
    /// The prompt (a user message, rendered with the model's chat template).
    prompt: String,
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    /// Maximum new tokens.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// PROMPT is raw text: no chat template; special tokens in it are parsed.
    #[arg(long)]
    raw: bool,
    /// Context length (tokens) to reserve.
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
}

pub fn run(a: RunArgs) -> Result<()> {
    let path = model_path::resolve(&a.model)?;
    let (file, model) = loading::load(&path)?;
    let tok = match &file {
        ModelFile::Gguf(g) => Tokenizer::from_gguf(g)?,
        ModelFile::Hf { dir, .. } => Tokenizer::from_file(&dir.join("tokenizer.json"))?,
    };
    let prompt_ids = if a.raw {
        tok.encode(&a.prompt, true, tok.add_bos())?
    } else {
        let text = chat::render(&file, a.system.as_deref(), &a.prompt)?;
        tok.encode(&text, true, false)?
    };
    let ctx = a.ctx.min(model.cfg.max_ctx);
    if prompt_ids.len() >= ctx {
        bail!("the prompt has {} tokens; the context holds {ctx}", prompt_ids.len());
    }
    let max_new = a.max_tokens.min(ctx - prompt_ids.len());
    let n_blocks = ctx.div_ceil(BLOCK_SIZE);
    let mut kv = KvCache::new(&model.backend, &model.cfg, n_blocks, KvDType::F32)?;
    let table: Vec<u32> = (0..n_blocks as u32).collect();

    let t0 = Instant::now();
    let batch = ForwardBatch { seqs: vec![SeqInput { tokens: &prompt_ids, start_pos: 0, block_table: &table, logits: LogitRows::Last }] };
    let logits = model.forward(&batch, &mut kv, None)?;
    let prefill_s = t0.elapsed().as_secs_f64();
    let mut next = argmax(logits.row(0));
    let mut out_ids: Vec<u32> = Vec::new();
    let mut printed = 0usize;
    let mut stdout = std::io::stdout();
    let t1 = Instant::now();
    loop {
        if tok.eos_ids().contains(&next) {
            break;
        }
        out_ids.push(next);
        let text = tok.decode(&out_ids, true)?;
        // Hold back an incomplete UTF-8 character (decoded as U+FFFD).
        if !text.ends_with('\u{FFFD}') && text.len() > printed {
            if let Some(new) = text.get(printed..) {
                write!(stdout, "{new}")?;
                stdout.flush()?;
                printed = text.len();
            }
        }
        if out_ids.len() >= max_new {
            break;
        }
        let pos = prompt_ids.len() + out_ids.len() - 1;
        let step = [next];
        let batch = ForwardBatch { seqs: vec![SeqInput { tokens: &step, start_pos: pos, block_table: &table, logits: LogitRows::Last }] };
        next = argmax(model.forward(&batch, &mut kv, None)?.row(0));
    }
    writeln!(stdout)?;
    let decode_s = t1.elapsed().as_secs_f64();
    eprintln!(
        "prefill: {} tokens, {:.1} tok/s; decode: {} tokens, {:.1} tok/s",
        prompt_ids.len(),
        prompt_ids.len() as f64 / prefill_s,
        out_ids.len(),
        out_ids.len().saturating_sub(1) as f64 / decode_s.max(1e-9)
    );
    Ok(())
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
