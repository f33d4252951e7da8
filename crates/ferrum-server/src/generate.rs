//! Shared by both completion endpoints: submitting a request's prompts ×
//! `n` choices, collecting them (non-streaming), usage, ids and the
//! per-token log-probability entries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ferrum_engine::runner::GenerateRequest;
use ferrum_engine::sampler::Sampled;
use ferrum_text::Tokenizer;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::choice::{self, ChoiceEnd, ChoiceMsg, ChoiceSetup};
use crate::error::ApiError;
use crate::params::GenParams;
use crate::reasoning::ReasoningSplitter;
use crate::state::{AppState, ModelBundle};

/// One prompt to run `n` times.
pub struct PromptJob {
    pub tokens: Vec<u32>,
    /// Scored prompt log-probabilities (completions' echo + logprobs).
    pub prompt_logprobs: Option<usize>,
    /// Initial state of the reasoning splitter (`None`: no splitting).
    pub reasoning: Option<bool>,
}

/// The choices of a request in flight: messages tagged with the choice index.
pub struct Running {
    pub rx: mpsc::Receiver<(usize, ChoiceMsg)>,
    pub n_choices: usize,
    /// Prompt tokens of the request (each prompt counted once).
    pub prompt_tokens: usize,
}

/// Submits every prompt's `n` choices; choice `p * n + j` is prompt `p`'s `j`-th.
pub fn submit(state: &Arc<AppState>, bundle: &Arc<ModelBundle>, jobs: Vec<PromptJob>, gp: &GenParams, prompt_param: &str) -> Result<Running, ApiError> {
    let arrival = Instant::now();
    let n_choices = jobs.len() * gp.n;
    let (tx, rx) = mpsc::channel(64 + 4 * n_choices);
    let mut prompt_tokens = 0;
    // Submit everything first: if a later prompt is refused, the streams
    // already made are dropped here, which cancels them.
    let mut all = Vec::with_capacity(jobs.len());
    for job in jobs {
        prompt_tokens += job.tokens.len();
        let req = GenerateRequest {
            prompt: job.tokens,
            max_tokens: gp.max_tokens,
            params: gp.sampling.clone(),
            ignore_eos: gp.ignore_eos,
            prompt_logprobs: job.prompt_logprobs,
        };
        let streams = bundle.engine.submit_n(req, gp.n).map_err(|e| ApiError::submit(e, prompt_param))?;
        all.push((streams, job.reasoning));
    }
    for (p, (streams, reasoning)) in all.into_iter().enumerate() {
        for (j, stream) in streams.into_iter().enumerate() {
            let setup = ChoiceSetup { index: p * gp.n + j, stops: gp.stops.clone(), reasoning: reasoning.map(ReasoningSplitter::new), arrival };
            choice::spawn(state.clone(), bundle.clone(), stream, setup, tx.clone());
        }
    }
    Ok(Running { rx, n_choices, prompt_tokens })
}

/// A finished choice, collected.
#[derive(Clone, Debug, Default)]
pub struct Collected {
    pub content: String,
    pub reasoning: String,
    pub tokens: Vec<Sampled>,
    pub prompt_logprobs: Option<Vec<Option<Sampled>>>,
    pub end: Option<ChoiceEnd>,
}

/// Waits for every choice to finish.
pub async fn collect(mut run: Running) -> Result<(Vec<Collected>, Usage), ApiError> {
    let mut out = vec![Collected::default(); run.n_choices];
    let mut done = 0;
    while done < run.n_choices {
        let Some((i, msg)) = run.rx.recv().await else {
            return Err(ApiError::internal("the request's choices ended without finishing"));
        };
        let c = &mut out[i];
        match msg {
            ChoiceMsg::PromptLogprobs(lp) => c.prompt_logprobs = Some(lp),
            ChoiceMsg::Delta { content, reasoning, tokens } => {
                c.content.push_str(&content);
                c.reasoning.push_str(&reasoning);
                c.tokens.extend(tokens);
            }
            ChoiceMsg::Done(end) => {
                c.end = Some(end);
                done += 1;
            }
            ChoiceMsg::Error(e) => return Err(ApiError::internal(format!("generation failed: {e}"))),
        }
    }
    let usage = Usage::of(run.prompt_tokens, out.iter().filter_map(|c| c.end.as_ref()));
    Ok((out, usage))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
}

impl Usage {
    pub fn of<'a>(prompt_tokens: usize, ends: impl Iterator<Item = &'a ChoiceEnd>) -> Self {
        let mut u = Usage { prompt_tokens, ..Default::default() };
        for e in ends {
            u.completion_tokens += e.completion_tokens;
            u.cached_tokens = u.cached_tokens.max(e.cached_tokens);
        }
        u
    }

    pub fn add(&mut self, e: &ChoiceEnd) {
        self.completion_tokens += e.completion_tokens;
        self.cached_tokens = self.cached_tokens.max(e.cached_tokens);
    }

    pub fn json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        })
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A response id with `prefix` (`chatcmpl`, `cmpl`).
pub fn response_id(prefix: &str) -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    format!("{prefix}-{:016x}{:08x}", t, n)
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A token's text as OpenAI shows it (bytes of a split character lossily).
pub fn token_text(tok: &Tokenizer, id: u32) -> String {
    tok.token_bytes(id).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// Chat's `logprobs.content` entries.
pub fn chat_logprobs(tok: &Tokenizer, tokens: &[Sampled]) -> Value {
    let entry = |id: u32, lp: f32| {
        let bytes = tok.token_bytes(id).unwrap_or_default();
        json!({"token": String::from_utf8_lossy(&bytes), "logprob": finite(lp), "bytes": bytes})
    };
    let content: Vec<Value> = tokens
        .iter()
        .map(|s| {
            let mut e = entry(s.id, s.logprob);
            e["top_logprobs"] = Value::Array(s.top.iter().map(|t| entry(t.id, t.logprob)).collect());
            e
        })
        .collect();
    json!({"content": content})
}

/// Completions' `logprobs` object; `offset0` is the text offset of the first token.
pub fn completion_logprobs(tok: &Tokenizer, tokens: &[Option<Sampled>], ids: &[u32], offset0: usize) -> Value {
    let mut texts = Vec::with_capacity(ids.len());
    let mut lps = Vec::with_capacity(ids.len());
    let mut tops = Vec::with_capacity(ids.len());
    let mut offsets = Vec::with_capacity(ids.len());
    let mut off = offset0;
    for (s, &id) in tokens.iter().zip(ids) {
        let t = token_text(tok, id);
        offsets.push(off);
        off += t.len();
        texts.push(t);
        match s {
            Some(s) => {
                lps.push(json!(finite(s.logprob)));
                let mut m = serde_json::Map::new();
                for x in &s.top {
                    m.insert(token_text(tok, x.id), json!(finite(x.logprob)));
                }
                tops.push(Value::Object(m));
            }
            None => {
                lps.push(Value::Null);
                tops.push(Value::Null);
            }
        }
    }
    json!({"tokens": texts, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

/// JSON has no infinities: -inf (an impossible token) is shown as -9999.
fn finite(x: f32) -> f32 {
    if x.is_finite() {
        x
    } else {
        -9999.0
    }
}
