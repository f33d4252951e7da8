//! `ferrum serve [-m MODEL] [--host 127.0.0.1] [--port 8000]`: the
//! OpenAI-compatible server. The listener is bound first; the model is
//! resolved, loaded and warmed up behind it (`/health` says 503 until then).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use ferrum_engine::runner::{Engine, EngineConfig};
use ferrum_kernels::Backend;
use ferrum_model::load::ModelFile;
use ferrum_model::{KvCache, Model};
use ferrum_server::{ModelBundle, ServerConfig};
use ferrum_text::{ChatTemplate, Tokenizer};

use crate::{chat, generate, loading, model_path};

#[derive(Args)]
pub struct ServeArgs {
    /// Model: a GGUF file, a Hugging Face directory, an alias or a repo id (as for `ferrum run`).
    #[arg(short, long, default_value = model_path::DEFAULT_ALIAS)]
    pub model: String,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/*.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Read the API key from a file (first line).
    #[arg(long, value_name = "FILE", conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
    /// The model name clients use (default: MODEL as given).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// A Jinja chat template to use instead of the model's own.
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,
    /// Context length per request, prompt included (default: the model's, at most 8192).
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// Tokens of KV cache to allocate for all requests together
    /// (default: 16384, at most 2 GiB of cache, at least one full context).
    #[arg(long)]
    pub kv_cache_tokens: Option<usize>,
    /// Most sequences decoded together.
    #[arg(long, default_value_t = 64)]
    pub max_num_seqs: usize,
    /// Token budget of one engine step (prefill chunk size).
    #[arg(long, default_value_t = 512)]
    pub max_num_batched_tokens: usize,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Seconds in-flight requests may run on after SIGINT/SIGTERM before they are cancelled.
    #[arg(long, default_value_t = 30)]
    pub shutdown_timeout: u64,
    #[command(flatten)]
    pub backend: loading::BackendArgs,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let api_key = match (&a.api_key, &a.api_key_file) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading the API key file {}", f.display()))?;
            let key = text.lines().next().unwrap_or_default().trim().to_string();
            if key.is_empty() {
                bail!("the API key file {} is empty", f.display());
            }
            Some(key)
        }
        (None, None) => None,
    };
    if api_key.as_deref().is_some_and(str::is_empty) {
        bail!("--api-key is empty");
    }
    let label = served_name(&a);
    let mut cfg = ServerConfig::new(a.host.clone(), a.port, label);
    cfg.api_key = api_key;
    cfg.max_body_bytes = a.max_body_bytes;
    cfg.shutdown_timeout = Duration::from_secs(a.shutdown_timeout);
    ferrum_server::run(cfg, Box::new(move || load(&a).map_err(|e| format!("{e:#}"))))?;
    Ok(())
}

/// Resolves, loads and warms up the model; builds the engine.
fn load(a: &ServeArgs) -> Result<ModelBundle> {
    let t = Instant::now();
    let path = model_path::resolve(&a.model)?;
    loading::with_model(&path, &a.backend, Serve { a, path: &path, t })
}

struct Serve<'a> {
    a: &'a ServeArgs,
    path: &'a Path,
    t: Instant,
}

impl loading::ModelTask for Serve<'_> {
    type Out = ModelBundle;

    fn run<B: Backend + 'static>(self, file: ModelFile, model: Model<B>, info: loading::BackendInfo) -> Result<ModelBundle> {
        let Serve { a, path, t } = self;
        let load_time = t.elapsed();
        let tok = generate::load_tokenizer(&file)?;
        let template = match &a.chat_template {
            Some(f) => Some(template_file(f, &tok)?),
            None => chat::load_template(&file, &tok)?,
        };
        let model_ctx = model.cfg.max_ctx;
        let max_model_len = match a.max_model_len {
            Some(n) if n > model_ctx => bail!("--max-model-len {n} exceeds the model's context length {model_ctx}"),
            Some(0) => bail!("--max-model-len must be at least 1"),
            Some(n) => n,
            None => model_ctx.min(8192),
        };
        // The CPU default: 16k tokens within 2 GiB; a GPU sizes the cache from its free memory.
        let cpu_default = 16384.min((2usize << 30) / KvCache::<B>::bytes_per_token(&model.cfg, info.kv_dtype).max(1));
        let kv_tokens = a.kv_cache_tokens.unwrap_or_else(|| info.kv_tokens(&model, cpu_default)).max(max_model_len);
        let mut ecfg = EngineConfig::new(max_model_len, kv_tokens);
        ecfg.max_num_seqs = a.max_num_seqs.max(1);
        ecfg.max_num_batched_tokens = a.max_num_batched_tokens.max(1);
        ecfg.kv_dtype = info.kv_dtype;
        let engine = Engine::start(model, tok.eos_ids().to_vec(), ecfg)?;
        // Clients may name the model as listed, as given to -m, or by its file name.
        let mut names = vec![served_name(a), a.model.clone()];
        for n in [path.file_stem(), path.file_name()].into_iter().flatten() {
            names.extend(n.to_str().map(str::to_string));
        }
        names.dedup();
        Ok(ModelBundle { engine, tokenizer: tok, template, names, load_time })
    }
}

/// The name `/v1/models` lists: --served-model-name, else the file (or
/// directory) name without extension when MODEL is a path, else MODEL.
fn served_name(a: &ServeArgs) -> String {
    if let Some(n) = &a.served_model_name {
        return n.clone();
    }
    let p = Path::new(&a.model);
    if p.exists() {
        if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
            return stem.to_string();
        }
    }
    a.model.clone()
}

/// A template from a file, given the tokenizer's BOS/EOS spellings.
fn template_file(f: &Path, tok: &Tokenizer) -> Result<ChatTemplate> {
    let src = std::fs::read_to_string(f).with_context(|| format!("reading the chat template {}", f.display()))?;
    let spelling = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
    let t = ChatTemplate::new(src).with_context(|| format!("parsing the chat template {}", f.display()))?;
    Ok(t.with_special_tokens(spelling(tok.bos_id()), spelling(tok.eos_ids().first().copied())))
}
