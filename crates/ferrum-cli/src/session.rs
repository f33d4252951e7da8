//! One sequence's generation state for `ferrum run`: the KV cache, its block
//! table and the tokens whose K/V it holds. A new prompt that starts with
//! cached tokens (the previous turns of a chat) prefills only what follows
//! them; from the first token that differs on, the cache is recomputed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Result};
use ferrum_engine::sampler::{Sampled, Sampler, SamplingParams};
use ferrum_kernels::{Backend, KvDType};
use ferrum_model::{ForwardBatch, KvCache, LogitRows, Model, SeqInput, BLOCK_SIZE};
use ferrum_text::{Detokenizer, StopMatcher, Tokenizer};

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// An end-of-generation token.
    Eos,
    /// A stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The context is full.
    Context,
    /// Ctrl-C.
    Interrupted,
}

impl Finish {
    /// OpenAI's `finish_reason` (plus `interrupted`).
    pub fn reason(self) -> &'static str {
        match self {
            Finish::Eos | Finish::Stop => "stop",
            Finish::Length | Finish::Context => "length",
            Finish::Interrupted => "interrupted",
        }
    }
}

/// What one generation asks for.
pub struct GenRequest<'a> {
    pub prompt: &'a [u32],
    pub params: SamplingParams,
    pub max_tokens: usize,
    pub stops: &'a [String],
}

/// What one generation produced.
pub struct Generation {
    pub completion: Vec<u32>,
    /// The text shown (stop string and special tokens excluded).
    pub text: String,
    /// One entry per completion token.
    pub steps: Vec<Sampled>,
    pub finish: Finish,
    pub seed: u64,
    /// Prompt tokens computed (the rest came from the cache).
    pub prefilled: usize,
    pub reused: usize,
    pub prefill_s: f64,
    /// Forward passes after the prefill, and their time.
    pub decode_steps: usize,
    pub decode_s: f64,
}

pub struct Session<'m, B: Backend> {
    model: &'m Model<B>,
    kv: KvCache<B>,
    table: Vec<u32>,
    ctx: usize,
    /// Tokens at positions `0..cached.len()` of the cache.
    cached: Vec<u32>,
}

impl<'m, B: Backend> Session<'m, B> {
    /// A cache for `ctx` tokens (at most the model's context length).
    pub fn new(model: &'m Model<B>, ctx: usize, kv_dtype: KvDType) -> Result<Self> {
        let ctx = ctx.min(model.cfg.max_ctx).max(1);
        let n_blocks = ctx.div_ceil(BLOCK_SIZE);
        let kv = KvCache::new(&model.backend, &model.cfg, n_blocks, kv_dtype)?;
        let table = (0..n_blocks as u32).collect();
        Ok(Session {
            model,
            kv,
            table,
            ctx,
            cached: Vec::new(),
        })
    }

    pub fn ctx(&self) -> usize {
        self.ctx
    }

    /// Forgets the cached tokens.
    pub fn clear(&mut self) {
        self.cached.clear();
    }

    /// Runs `tokens` at positions `start..` and samples the next token from
    /// the last row: on the backend when the sampler allows it (only the id
    /// comes back), else from the row's logits on the host.
    fn step(&mut self, tokens: &[u32], start: usize, sampler: &mut Sampler) -> Result<Sampled> {
        let batch = ForwardBatch {
            seqs: vec![SeqInput {
                tokens,
                start_pos: start,
                block_table: &self.table,
                logits: LogitRows::Last,
            }],
        };
        let sampled = if let Some(spec) = sampler.device_spec() {
            let picks = self.model.forward_sampled(&batch, &mut self.kv, &[spec])?;
            let Some(pick) = picks.last_of(0) else { bail!("the model returned no logits") };
            sampler.accept(pick)?
        } else {
            let logits = self.model.forward(&batch, &mut self.kv, None)?;
            let Some(row) = logits.last_of(0) else { bail!("the model returned no logits") };
            sampler.sample(row)?
        };
        self.cached.truncate(start);
        self.cached.extend_from_slice(tokens);
        Ok(sampled)
    }

    /// Makes the cache hold exactly `prompt`; returns the token sampled
    /// after its last token and how many tokens were reused.
    fn prefill(&mut self, prompt: &[u32], sampler: &mut Sampler) -> Result<(Sampled, usize)> {
        if prompt.is_empty() {
            bail!("the prompt is empty");
        }
        if prompt.len() >= self.ctx {
            bail!(
                "the prompt has {} tokens and the context holds {}",
                prompt.len(),
                self.ctx
            );
        }
        let common = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        // The last prompt token is always run: its logits pick the first token.
        let start = common.min(prompt.len() - 1);
        let first = self.step(&prompt[start..], start, sampler)?;
        Ok((first, start))
    }

    /// Generates an answer to `req.prompt`, streaming the text to `emit`.
    /// Stops at an end-of-generation token, a stop string, `max_tokens`, a
    /// full context, or when `interrupt` is set.
    pub fn generate(
        &mut self,
        tok: &Tokenizer,
        req: &GenRequest<'_>,
        interrupt: &AtomicBool,
        emit: &mut dyn FnMut(&str) -> Result<()>,
    ) -> Result<Generation> {
        let mut sampler = Sampler::new(req.params.clone(), self.model.cfg.vocab_size)?;
        sampler.observe_context(req.prompt);
        let t0 = Instant::now();
        let (mut next, reused) = self.prefill(req.prompt, &mut sampler)?;
        let prefill_s = t0.elapsed().as_secs_f64();
        let mut detok = Detokenizer::new(tok, true);
        let mut stops = StopMatcher::new(req.stops);
        let mut g = Generation {
            completion: Vec::new(),
            text: String::new(),
            steps: Vec::new(),
            finish: Finish::Length,
            seed: sampler.seed(),
            prefilled: req.prompt.len() - reused,
            reused,
            prefill_s,
            decode_steps: 0,
            decode_s: 0.0,
        };
        let mut show = |g: &mut Generation, text: &str| -> Result<()> {
            if !text.is_empty() {
                g.text.push_str(text);
                emit(text)?;
            }
            Ok(())
        };
        let t1 = Instant::now();
        loop {
            if g.completion.len() >= req.max_tokens {
                g.finish = Finish::Length;
                break;
            }
            if interrupt.load(Ordering::Relaxed) {
                g.finish = Finish::Interrupted;
                break;
            }
            let s = next;
            if tok.is_eos(s.id) {
                g.finish = Finish::Eos;
                break;
            }
            let id = s.id;
            g.completion.push(id);
            g.steps.push(s);
            let out = stops.push(&detok.push(tok, id)?);
            show(&mut g, &out.text)?;
            if out.stopped.is_some() {
                g.finish = Finish::Stop;
                break;
            }
            if g.completion.len() >= req.max_tokens {
                g.finish = Finish::Length;
                break;
            }
            if self.cached.len() + 1 >= self.ctx {
                g.finish = Finish::Context;
                break;
            }
            next = self.step(&[id], self.cached.len(), &mut sampler)?;
            g.decode_steps += 1;
        }
        g.decode_s = t1.elapsed().as_secs_f64();
        if g.finish != Finish::Stop {
            let out = stops.push(&detok.finish());
            show(&mut g, &out.text)?;
            if out.stopped.is_some() {
                g.finish = Finish::Stop;
            } else {
                let rest = stops.finish();
                show(&mut g, &rest)?;
            }
        }
        Ok(g)
    }
}
