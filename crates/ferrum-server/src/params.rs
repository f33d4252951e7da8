//! Request fields to engine parameters, with OpenAI's ranges checked.

use ferrum_engine::sampler::{SamplingParams, MAX_LOGPROBS};

use crate::error::ApiError;
use crate::protocol::CommonParams;

/// Most choices one request may ask for.
pub const MAX_N: usize = 16;
/// Most stop strings one request may give.
pub const MAX_STOPS: usize = 16;

/// What one request asks of the engine, per choice.
#[derive(Clone, Debug)]
pub struct GenParams {
    pub sampling: SamplingParams,
    pub n: usize,
    /// `None`: up to the context.
    pub max_tokens: Option<usize>,
    pub stops: Vec<String>,
    pub ignore_eos: bool,
    pub stream: bool,
    pub include_usage: bool,
}

fn in_range(name: &str, v: f64, ok: bool, expected: &str) -> Result<f32, ApiError> {
    if ok && v.is_finite() {
        Ok(v as f32)
    } else {
        Err(ApiError::param(name, format!("{v} is out of range ({expected})")))
    }
}

/// Validates the shared fields. `max_tokens` is the field in force (chat's
/// `max_completion_tokens` wins over `max_tokens`), with its name;
/// `logprobs` the number of alternatives to report per token.
pub fn gen_params(c: &CommonParams, max_tokens: (&str, Option<i64>), logprobs: usize, vocab: usize) -> Result<GenParams, ApiError> {
    let mut p = SamplingParams { repeat_last_n: 0, ..SamplingParams::default() };
    if let Some(t) = c.temperature {
        p.temperature = in_range("temperature", t, (0.0..=2.0).contains(&t), "0 to 2")?;
    }
    if let Some(t) = c.top_p {
        p.top_p = in_range("top_p", t, t > 0.0 && t <= 1.0, "greater than 0, at most 1")?;
    }
    if let Some(k) = c.top_k {
        p.top_k = match k {
            -1 | 0 => 0,
            k if k > 0 => k as usize,
            k => return Err(ApiError::param("top_k", format!("{k} is out of range (-1 or 0 for off, else positive)"))),
        };
    }
    if let Some(m) = c.min_p {
        p.min_p = in_range("min_p", m, (0.0..=1.0).contains(&m), "0 to 1")?;
    }
    if let Some(r) = c.repetition_penalty {
        p.repetition_penalty = in_range("repetition_penalty", r, r > 0.0, "greater than 0")?;
    }
    if let Some(x) = c.presence_penalty {
        p.presence_penalty = in_range("presence_penalty", x, (-2.0..=2.0).contains(&x), "-2 to 2")?;
    }
    if let Some(x) = c.frequency_penalty {
        p.frequency_penalty = in_range("frequency_penalty", x, (-2.0..=2.0).contains(&x), "-2 to 2")?;
    }
    if let Some(bias) = &c.logit_bias {
        let mut list: Vec<(u32, f32)> = Vec::with_capacity(bias.len());
        for (k, &v) in bias {
            let id = k
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|&id| (id as usize) < vocab)
                .ok_or_else(|| ApiError::param("logit_bias", format!("key `{k}` is not a token id below the vocabulary size {vocab}")))?;
            let b = in_range("logit_bias", v, (-100.0..=100.0).contains(&v), "-100 to 100")?;
            list.push((id, b));
        }
        list.sort_by_key(|x| x.0);
        p.logit_bias = list;
    }
    p.seed = c.seed.map(|s| s as u64);
    if logprobs > MAX_LOGPROBS {
        return Err(ApiError::param("logprobs", format!("{logprobs} is out of range (0 to {MAX_LOGPROBS})")));
    }
    p.logprobs = logprobs;
    let n = match c.n {
        None => 1,
        Some(n) if (1..=MAX_N as i64).contains(&n) => n as usize,
        Some(n) => return Err(ApiError::param("n", format!("{n} is out of range (1 to {MAX_N})"))),
    };
    let (mt_name, mt) = max_tokens;
    let max_tokens = match mt {
        None => None,
        Some(m) if m >= 1 => Some(m as usize),
        Some(m) => return Err(ApiError::param(mt_name, format!("{m} is out of range (at least 1)"))),
    };
    let stops: Vec<String> = c.stop.clone().map(|s| s.into_vec()).unwrap_or_default().into_iter().filter(|s| !s.is_empty()).collect();
    if stops.len() > MAX_STOPS {
        return Err(ApiError::param("stop", format!("{} stop strings given, at most {MAX_STOPS} allowed", stops.len())));
    }
    Ok(GenParams {
        sampling: p,
        n,
        max_tokens,
        stops,
        ignore_eos: c.ignore_eos.unwrap_or(false),
        stream: c.stream.unwrap_or(false),
        include_usage: c.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false),
    })
}
