//! `ferrum run [-m MODEL] [PROMPT]`: with PROMPT, one answer streamed to
//! stdout (or one JSON object with `--json`); without, an interactive chat
//! (see `repl`). Prefill and decode speeds go to stderr.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use ferrum_engine::sampler::SamplingParams;
use ferrum_format::hf_config::GenerationConfig;
use ferrum_kernels::{Backend, KvDType};
use ferrum_model::load::ModelFile;
use ferrum_model::Model;
use ferrum_text::{ChatTemplate, Tokenizer};

use crate::session::{GenRequest, Generation, Session};
use crate::{chat, loading, model_path, repl, run_output};

#[derive(Args)]
pub struct RunArgs {
    /// Model: a GGUF file, a Hugging Face directory, an alias
    /// (qwen2.5-coder:0.5b, qwen2.5-coder:1.5b, qwen3:0.6b, ...), or a
    /// Hugging Face repo id (owner/name, owner/name:FILE).
    #[arg(short, long, default_value = model_path::DEFAULT_ALIAS)]
    pub model: String,
    /// The prompt (a user message, rendered with the model's chat template).
    /// Without it, an interactive chat starts.
    pub prompt: Option<String>,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Maximum new tokens per answer.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy). Default: the model's
    /// generation_config.json, else 0.8.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Keep the K most likely tokens (0 = off). Default: generation config, else 40.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling threshold in (0, 1]. Default: generation config, else 0.95.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Drop tokens below MIN_P times the best one's probability. Default: generation config, else 0.05.
    #[arg(long)]
    pub min_p: Option<f32>,
    /// Repetition penalty (1 = off) over the last --repeat-last-n tokens.
    #[arg(long)]
    pub repeat_penalty: Option<f32>,
    /// Window of the repetition penalty, prompt included (0 = whole context).
    #[arg(long)]
    pub repeat_last_n: Option<usize>,
    /// OpenAI presence penalty in [-2, 2].
    #[arg(long)]
    pub presence_penalty: Option<f32>,
    /// OpenAI frequency penalty in [-2, 2].
    #[arg(long)]
    pub frequency_penalty: Option<f32>,
    /// Add BIAS to token ID's logit (ID=BIAS; BIAS may be -inf). Repeatable.
    #[arg(long, value_name = "ID=BIAS")]
    pub logit_bias: Vec<String>,
    /// RNG seed: the same seed reproduces an answer.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop when this text is generated (not shown). Repeatable; \n and \t are understood.
    #[arg(long)]
    pub stop: Vec<String>,
    /// PROMPT is raw text: special tokens in it are parsed, no chat template,
    /// no BOS unless the model's metadata asks for one.
    #[arg(long)]
    pub raw: bool,
    /// Report the K most likely tokens of every step (at most 20).
    #[arg(long, value_name = "K")]
    pub logprobs: Option<usize>,
    /// Print one JSON object (ids, text, logprobs, finish reason, timings) instead of streaming.
    #[arg(long)]
    pub json: bool,
    /// Context length (tokens) to reserve.
    #[arg(long, default_value_t = 4096)]
    pub ctx: usize,
    /// Drop the oldest prompt tokens when the prompt does not fit the context.
    #[arg(long)]
    pub truncate: bool,
    /// Turn thinking off in templates that support it (Qwen3's enable_thinking = false).
    #[arg(long)]
    pub no_think: bool,
    #[command(flatten)]
    pub backend: loading::BackendArgs,
}

/// Ctrl-C during generation sets this; the answer ends, the program does not.
static INTERRUPT: AtomicBool = AtomicBool::new(false);
/// Whether a generation is running (Ctrl-C outside one exits).
static GENERATING: AtomicBool = AtomicBool::new(false);

fn install_interrupt_handler() {
    // A second registration fails; the first one stays in force.
    let _ = ctrlc::set_handler(|| {
        if GENERATING.load(Ordering::SeqCst) {
            INTERRUPT.store(true, Ordering::SeqCst);
        } else {
            std::process::exit(130);
        }
    });
}

/// Everything a turn needs besides the KV session.
pub struct Runner {
    pub tok: Tokenizer,
    pub template: Option<ChatTemplate>,
    pub params: SamplingParams,
    pub stops: Vec<String>,
    pub max_tokens: usize,
    pub raw: bool,
    pub system: Option<String>,
    pub json: bool,
    /// The template's `enable_thinking` (unset: the template's default).
    pub enable_thinking: Option<bool>,
}

impl Runner {
    /// The template, or an error saying how to do without one.
    pub fn template(&self) -> Result<&ChatTemplate> {
        self.template
            .as_ref()
            .context("the model has no chat template; use --raw")
    }

    /// Runs one generation with Ctrl-C armed; text goes to `emit`.
    pub fn generate<B: Backend>(
        &self,
        session: &mut Session<'_, B>,
        prompt: &[u32],
        emit: &mut dyn FnMut(&str) -> Result<()>,
    ) -> Result<Generation> {
        let req = GenRequest {
            prompt,
            params: self.params.clone(),
            max_tokens: self.max_tokens,
            stops: &self.stops,
        };
        INTERRUPT.store(false, Ordering::SeqCst);
        GENERATING.store(true, Ordering::SeqCst);
        let out = session.generate(&self.tok, &req, &INTERRUPT, emit);
        GENERATING.store(false, Ordering::SeqCst);
        out
    }
}

pub fn run(a: RunArgs) -> Result<()> {
    if a.json && a.prompt.is_none() {
        bail!("--json needs a PROMPT");
    }
    let path = model_path::resolve(&a.model)?;
    let backend = a.backend.clone();
    loading::with_model(&path, &backend, Generate { a, t_load: Instant::now() })
}

struct Generate {
    a: RunArgs,
    t_load: Instant,
}

impl loading::ModelTask for Generate {
    type Out = ();

    fn run<B: Backend + 'static>(self, file: ModelFile, model: Model<B>, info: loading::BackendInfo) -> Result<()> {
        answer(self.a, self.t_load.elapsed().as_secs_f64(), file, &model, info.kv_dtype)
    }
}

fn answer<B: Backend>(a: RunArgs, load_s: f64, file: ModelFile, model: &Model<B>, kv_dtype: KvDType) -> Result<()> {
    let tok = load_tokenizer(&file)?;
    let template = if a.raw {
        None
    } else {
        chat::load_template(&file, &tok)?
    };
    let params = sampling_params(&a, &file, tok.vocab_size())?;
    let runner = Runner {
        template,
        params,
        stops: a.stop.iter().map(|s| unescape(s)).collect(),
        max_tokens: a.max_tokens,
        raw: a.raw,
        system: a.system.clone(),
        json: a.json,
        enable_thinking: a.no_think.then_some(false),
        tok,
    };
    if a.raw && a.system.is_some() {
        eprintln!("warning: --system is ignored with --raw");
    }
    let mut session = Session::new(model, a.ctx, kv_dtype)?;
    install_interrupt_handler();
    let Some(prompt) = &a.prompt else {
        return repl::run(&runner, &mut session);
    };
    let mut ids = if runner.raw {
        chat::encode_raw(&runner.tok, prompt)?
    } else {
        let mut messages = Vec::new();
        if let Some(s) = &runner.system {
            messages.push(chat::message("system", s));
        }
        messages.push(chat::message("user", prompt));
        chat::encode_conversation(
            runner.template()?,
            &runner.tok,
            &messages,
            runner.enable_thinking,
        )?
    };
    fit_context(
        &mut ids,
        session.ctx(),
        a.max_tokens,
        a.truncate,
        runner.tok.bos_id(),
    )?;
    let prompt_ids = ids;
    let mut stdout = std::io::stdout();
    let g = if runner.json {
        runner.generate(&mut session, &prompt_ids, &mut |_| Ok(()))?
    } else {
        let g = runner.generate(&mut session, &prompt_ids, &mut |t| {
            stdout.write_all(t.as_bytes())?;
            stdout.flush()?;
            Ok(())
        })?;
        writeln!(stdout)?;
        g
    };
    if runner.json {
        let v = run_output::json(&prompt_ids, &g, load_s, runner.params.logprobs > 0);
        writeln!(stdout, "{}", serde_json::to_string(&v)?)?;
    } else if runner.params.logprobs > 0 {
        run_output::print_logprobs(&runner.tok, &g);
    }
    run_output::print_stats(&g);
    Ok(())
}

/// Checks that the prompt leaves room to generate; with `truncate`, drops
/// the oldest tokens (keeping a leading BOS) until it does.
fn fit_context(
    ids: &mut Vec<u32>,
    ctx: usize,
    max_tokens: usize,
    truncate: bool,
    bos: Option<u32>,
) -> Result<()> {
    if ids.len() < ctx {
        return Ok(());
    }
    if !truncate {
        bail!(
            "the prompt has {} tokens but the context holds {ctx}: shorten the prompt, raise --ctx (the model allows more up to its context length), or pass --truncate",
            ids.len()
        );
    }
    // Leave room for the answer: max_tokens, but at most half the context.
    let keep = ctx - max_tokens.clamp(1, ctx / 2).max(1);
    let keep_bos = bos.is_some() && ids.first().copied() == bos;
    let drop = ids.len() - keep;
    let from = usize::from(keep_bos);
    ids.drain(from..from + drop);
    eprintln!(
        "warning: the prompt was truncated to its last {} tokens",
        ids.len()
    );
    Ok(())
}

/// The tokenizer of a model file; for Hugging Face directories the
/// end-of-generation ids of generation_config.json are added.
pub fn load_tokenizer(file: &ModelFile) -> Result<Tokenizer> {
    Ok(match file {
        ModelFile::Gguf(g) => Tokenizer::from_gguf(g)?,
        ModelFile::Hf { dir, .. } => {
            let tok = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
            let gen = dir.join("generation_config.json");
            if gen.is_file() {
                let g = GenerationConfig::from_file(&gen)?;
                let mut ids = tok.eos_ids().to_vec();
                ids.extend(g.eos_token_id);
                tok.with_eos_ids(ids)
            } else {
                tok
            }
        }
    })
}

/// Defaults from the model (generation_config.json, else llama.cpp's),
/// then the command-line flags.
fn sampling_params(a: &RunArgs, file: &ModelFile, vocab: usize) -> Result<SamplingParams> {
    let mut p = match file {
        ModelFile::Hf { dir, .. } if dir.join("generation_config.json").is_file() => {
            SamplingParams::from_generation_config(&GenerationConfig::from_file(
                &dir.join("generation_config.json"),
            )?)
        }
        _ => SamplingParams::llama_cpp_defaults(),
    };
    macro_rules! set {
        ($flag:ident, $field:ident) => {
            if let Some(v) = a.$flag {
                p.$field = v;
            }
        };
    }
    set!(temperature, temperature);
    set!(top_k, top_k);
    set!(top_p, top_p);
    set!(min_p, min_p);
    set!(repeat_penalty, repetition_penalty);
    set!(repeat_last_n, repeat_last_n);
    set!(presence_penalty, presence_penalty);
    set!(frequency_penalty, frequency_penalty);
    p.seed = a.seed;
    p.logprobs = a.logprobs.unwrap_or(0);
    for b in &a.logit_bias {
        let (id, bias) = b
            .split_once('=')
            .with_context(|| format!("--logit-bias {b}: expected ID=BIAS"))?;
        let id: u32 = id
            .trim()
            .parse()
            .with_context(|| format!("--logit-bias {b}: bad token id"))?;
        let bias: f32 = match bias.trim() {
            "-inf" => f32::NEG_INFINITY,
            s => s
                .parse()
                .with_context(|| format!("--logit-bias {b}: bad bias"))?,
        };
        p.logit_bias.push((id, bias));
    }
    p.validate(vocab)?;
    Ok(p)
}

/// `\n`, `\t`, `\r` and `\\` in a command-line string.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(unescape(r"a\nb\\n\q"), "a\nb\\n\\q");
    }

    #[test]
    fn truncation_keeps_bos_and_leaves_room() {
        let mut ids: Vec<u32> = (0..20).collect();
        fit_context(&mut ids, 10, 4, true, Some(0)).unwrap();
        assert_eq!(ids, [0, 15, 16, 17, 18, 19]);
        let mut ids: Vec<u32> = (0..20).collect();
        assert!(fit_context(&mut ids, 10, 4, false, None)
            .unwrap_err()
            .to_string()
            .contains("--truncate"));
    }
}
