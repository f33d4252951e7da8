//! Token sampling: penalties, logit bias, temperature, top-k, top-p, min-p,
//! a per-request seeded RNG, and the log-probabilities OpenAI reports.
//!
//! Order of operations on one row of logits (the order of Hugging Face's
//! logits processors, so `generation_config.json` values mean what they mean
//! there):
//! 1. logit bias (`-inf` bans a token);
//! 2. repetition penalty (CTRL / HF / llama.cpp form: a positive logit is
//!    divided by the penalty, a negative one multiplied) over the distinct
//!    tokens of the last `repeat_last_n` tokens of the context — prompt and
//!    generated tokens alike, as llama.cpp and HF do; `repeat_last_n = 0`
//!    means the whole context (HF's behaviour);
//! 3. presence and frequency penalties (OpenAI form:
//!    `logit -= presence * [count > 0] + frequency * count`) over the
//!    generated tokens only;
//! 4. `temperature == 0`: the argmax (lowest id on ties), done;
//! 5. divide by the temperature; keep the `top_k` best; keep the smallest
//!    set whose probability reaches `top_p`; drop tokens whose probability
//!    is below `min_p` times the best one's; sample from what is left
//!    ([`ferrum_kernels::sample`] defines each step exactly).
//!
//! Reported log-probabilities are the log-softmax of the raw logits (before
//! penalties, bias and temperature), as OpenAI reports them.
//!
//! The draw is a Gumbel-max over a counter-based hash of (seed, step,
//! token): the same seed, parameters and logits give the same tokens on
//! every platform, and on the device as on the host — a request with no
//! penalties, bias or top log-probabilities is sampled on the backend
//! ([`Sampler::device_spec`]) and only its token id comes back.

use std::collections::{HashMap, VecDeque};

use ferrum_format::hf_config::GenerationConfig;
use ferrum_kernels::{sample_row, SampleSpec};

#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum SamplerError {
    #[error("sampling parameter {name} = {value} is out of range ({expected})")]
    OutOfRange {
        name: &'static str,
        value: f64,
        expected: &'static str,
    },
    #[error("logit bias for token {id}: the vocabulary has {vocab} tokens")]
    BiasToken { id: u32, vocab: usize },
    #[error("logit bias for token {id} is NaN")]
    BiasNan { id: u32 },
    #[error("logits row has {got} entries, the vocabulary {vocab}")]
    RowLength { got: usize, vocab: usize },
    #[error("no token can be sampled: every logit is -inf or NaN after bias and penalties")]
    NothingToSample,
}

/// Sampling parameters of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// In (0, 1]; 1 = off.
    pub top_p: f32,
    /// In [0, 1]; 0 = off.
    pub min_p: f32,
    /// > 0; 1 = off.
    pub repetition_penalty: f32,
    /// Window of the repetition penalty in tokens (prompt included); 0 = all.
    pub repeat_last_n: usize,
    /// In [-2, 2]; 0 = off.
    pub presence_penalty: f32,
    /// In [-2, 2]; 0 = off.
    pub frequency_penalty: f32,
    /// Added to the logits of the given tokens (`f32::NEG_INFINITY` bans one).
    pub logit_bias: Vec<(u32, f32)>,
    /// RNG seed; `None` draws one from the OS (see [`Sampler::seed`]).
    pub seed: Option<u64>,
    /// How many most likely tokens to report per step (0 = none).
    pub logprobs: usize,
}

/// OpenAI's API allows at most 20 top log-probabilities.
pub const MAX_LOGPROBS: usize = 20;

impl Default for SamplingParams {
    /// Plain sampling from the model's distribution (OpenAI's defaults).
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
            logprobs: 0,
        }
    }
}

impl SamplingParams {
    /// Always the most likely token.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// llama.cpp's defaults (`llama-cli`): temperature 0.8, top-k 40,
    /// top-p 0.95, min-p 0.05 — for models that ship no generation config.
    pub fn llama_cpp_defaults() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            ..Default::default()
        }
    }

    /// The parameters `transformers` would use with this generation config:
    /// greedy unless `do_sample` is true; unset values take HF's defaults
    /// (temperature 1, top-k 50, top-p 1); the repetition penalty covers the
    /// whole context.
    pub fn from_generation_config(g: &GenerationConfig) -> Self {
        let mut p = SamplingParams {
            repeat_last_n: 0,
            ..Default::default()
        };
        p.repetition_penalty = g.repetition_penalty.map_or(1.0, |r| r as f32);
        if g.do_sample != Some(true) {
            p.temperature = 0.0;
            return p;
        }
        p.temperature = g.temperature.map_or(1.0, |t| t as f32);
        p.top_k = g.top_k.unwrap_or(50);
        p.top_p = g.top_p.map_or(1.0, |t| t as f32);
        p.min_p = g.min_p.map_or(0.0, |m| m as f32);
        p
    }

    /// Checks every range; `vocab` bounds the logit-bias ids.
    pub fn validate(&self, vocab: usize) -> Result<(), SamplerError> {
        let range = |name, v: f32, ok: bool, expected| {
            if ok {
                Ok(())
            } else {
                Err(SamplerError::OutOfRange {
                    name,
                    value: f64::from(v),
                    expected,
                })
            }
        };
        let t = self.temperature;
        range("temperature", t, t.is_finite() && t >= 0.0, ">= 0")?;
        range(
            "top_p",
            self.top_p,
            self.top_p > 0.0 && self.top_p <= 1.0,
            "in (0, 1]",
        )?;
        range(
            "min_p",
            self.min_p,
            (0.0..=1.0).contains(&self.min_p),
            "in [0, 1]",
        )?;
        let r = self.repetition_penalty;
        range("repetition_penalty", r, r.is_finite() && r > 0.0, "> 0")?;
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            range(name, v, (-2.0..=2.0).contains(&v), "in [-2, 2]")?;
        }
        if self.logprobs > MAX_LOGPROBS {
            return Err(SamplerError::OutOfRange {
                name: "logprobs",
                value: self.logprobs as f64,
                expected: "at most 20",
            });
        }
        for &(id, b) in &self.logit_bias {
            if id as usize >= vocab {
                return Err(SamplerError::BiasToken { id, vocab });
            }
            if b.is_nan() {
                return Err(SamplerError::BiasNan { id });
            }
        }
        Ok(())
    }
}

/// One token and its log-probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
}

/// The result of one sampling step.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    pub id: u32,
    /// Log-probability of `id` under the raw logits.
    pub logprob: f32,
    /// The `logprobs` most likely tokens under the raw logits, best first.
    pub top: Vec<TokenLogprob>,
}

/// Per-request sampling state: parameters, seed, step and token history.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    vocab: usize,
    seed: u64,
    /// Tokens sampled so far (the draw's counter).
    step: u64,
    /// Generated token counts (presence / frequency penalties).
    counts: HashMap<u32, u32>,
    /// The last `repeat_last_n` context tokens (all when it is 0).
    recent: VecDeque<u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams, vocab: usize) -> Result<Self, SamplerError> {
        params.validate(vocab)?;
        let seed = params.seed.unwrap_or_else(rand::random);
        Ok(Sampler {
            step: 0,
            params,
            vocab,
            seed,
            counts: HashMap::new(),
            recent: VecDeque::new(),
        })
    }

    /// The seed in use (drawn from the OS when none was given): passing it
    /// back reproduces the request.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Records context tokens that were not sampled (the prompt) for the
    /// repetition penalty window.
    pub fn observe_context(&mut self, ids: &[u32]) {
        for &id in ids {
            self.push_recent(id);
        }
    }

    fn push_recent(&mut self, id: u32) {
        self.recent.push_back(id);
        let n = self.params.repeat_last_n;
        if n > 0 && self.recent.len() > n {
            self.recent.pop_front();
        }
    }

    /// Picks the next token from one row of logits and records it as generated.
    pub fn sample(&mut self, logits: &[f32]) -> Result<Sampled, SamplerError> {
        if logits.len() != self.vocab {
            return Err(SamplerError::RowLength {
                got: logits.len(),
                vocab: self.vocab,
            });
        }
        let mut w = logits.to_vec();
        self.apply_bias_and_penalties(&mut w);
        let id = if self.params.temperature == 0.0 { argmax(&w) } else { sample_row(&w, &self.spec()).id };
        let id = id.ok_or(SamplerError::NothingToSample)?;
        let (logprob, top) = raw_logprobs(logits, id, self.params.logprobs);
        self.record(id);
        Ok(Sampled { id, logprob, top })
    }

    /// The spec of this step's draw.
    fn spec(&self) -> SampleSpec {
        let p = &self.params;
        SampleSpec {
            temperature: p.temperature,
            top_k: u32::try_from(p.top_k).unwrap_or(u32::MAX),
            top_p: p.top_p,
            min_p: p.min_p,
            seed: self.seed,
            step: self.step,
        }
    }

    /// This step's draw, when the backend can make it: no bias or
    /// penalties (which need the token history) and no top
    /// log-probabilities (which need the row). Record the result with
    /// [`Sampler::accept`].
    pub fn device_spec(&self) -> Option<SampleSpec> {
        let p = &self.params;
        let plain = p.logit_bias.is_empty()
            && p.repetition_penalty == 1.0
            && p.presence_penalty == 0.0
            && p.frequency_penalty == 0.0
            && p.logprobs == 0;
        plain.then(|| self.spec())
    }

    fn record(&mut self, id: u32) {
        self.push_recent(id);
        *self.counts.entry(id).or_insert(0) += 1;
        self.step += 1;
    }

    /// Whether this sampler takes the raw argmax and reports only the chosen
    /// token's log-probability, so that the backend can choose
    /// ([`Sampler::accept`]) and only ids come back from the device.
    pub fn plain_greedy(&self) -> bool {
        self.params.temperature == 0.0 && self.device_spec().is_some()
    }

    /// Records a choice made by the backend, greedy ([`Sampler::plain_greedy`])
    /// or drawn by [`Sampler::device_spec`].
    pub fn accept(&mut self, pick: &ferrum_kernels::RowArgmax) -> Result<Sampled, SamplerError> {
        let id = pick.id.ok_or(SamplerError::NothingToSample)?;
        self.record(id);
        Ok(Sampled { id, logprob: pick.logit - pick.lse, top: Vec::new() })
    }

    fn apply_bias_and_penalties(&self, w: &mut [f32]) {
        let p = &self.params;
        for &(id, b) in &p.logit_bias {
            if let Some(x) = w.get_mut(id as usize) {
                *x += b;
            }
        }
        if p.repetition_penalty != 1.0 {
            let mut seen: Vec<u32> = self.recent.iter().copied().collect();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(x) = w.get_mut(id as usize) {
                    *x = if *x > 0.0 {
                        *x / p.repetition_penalty
                    } else {
                        *x * p.repetition_penalty
                    };
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&id, &n) in &self.counts {
                if let Some(x) = w.get_mut(id as usize) {
                    *x -= p.presence_penalty + p.frequency_penalty * n as f32;
                }
            }
        }
    }
}

/// Index of the largest value, lowest index on ties; `None` when every
/// value is NaN or -inf.
pub fn argmax(row: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if v.is_nan() || v == f32::NEG_INFINITY {
            continue;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i as u32)
}

/// Log-softmax of the raw `logits` at `id`, and the `k` best tokens.
pub fn raw_logprobs(logits: &[f32], id: u32, k: usize) -> (f32, Vec<TokenLogprob>) {
    let max = logits
        .iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    // f32 exponentials (vectorised; once per token over the whole vocabulary),
    // summed in f64.
    let sum: f64 = logits
        .iter()
        .filter(|x| !x.is_nan())
        .map(|&x| f64::from((x - max).exp()))
        .sum();
    // As the backend reports it (RowArgmax: an f32 log-sum-exp), so that a
    // token's log-probability does not depend on where it was chosen.
    let lse = (f64::from(max) + sum.ln()) as f32;
    let lp = |x: f32| x - lse;
    let chosen = logits
        .get(id as usize)
        .map_or(f32::NEG_INFINITY, |&x| lp(x));
    if k == 0 {
        return (chosen, Vec::new());
    }
    let key = |x: f32| if x.is_nan() { f32::NEG_INFINITY } else { x };
    let order = |a: &u32, b: &u32| {
        key(logits[*b as usize])
            .total_cmp(&key(logits[*a as usize]))
            .then(a.cmp(b))
    };
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(idx.len());
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_unstable_by(order);
    (
        chosen,
        idx.into_iter()
            .map(|i| TokenLogprob {
                id: i,
                logprob: lp(logits[i as usize]),
            })
            .collect(),
    )
}
