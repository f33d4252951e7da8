//! The engine runner: one thread owns the model, the KV cache and the
//! scheduler and runs the step loop; callers submit requests over a channel
//! and read each request's tokens from its own stream.
//!
//! The forward pass never runs on the caller's (async) executor. Token ids
//! and their log-probabilities leave the engine thread as soon as a step is
//! sampled; detokenization and stop strings ([`TextOutput`]) run on the
//! consumer's side, overlapping the engine's next step. A consumer that sees
//! a stop string (or whose client went away) cancels its stream, and the
//! engine frees the request's blocks before its next step.
//!
//! `n > 1` ([`Engine::submit_n`]): the prompt is computed once. The first
//! sequence prefills it; its siblings each sample their first token from its
//! last logits row and take its blocks by reference count (fork), the
//! partial last block included. A sibling's first write into that shared
//! block gets it a private copy (copy-on-write: the scheduler lists the
//! copy, the engine thread performs it before the forward pass).

mod engine_loop;
mod output;
mod prompt_logprobs;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrum_kernels::{Backend, KvDType};
use ferrum_model::{ForwardBatch, KvCache, LogitRows, Model, SeqInput, BLOCK_SIZE};
use thiserror::Error;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::request::{FinishReason, RequestId};
use crate::sampler::{Sampled, Sampler, SamplerError, SamplingParams};
use crate::sched::{Scheduler, SchedulerConfig, SchedulerError};

pub use output::{TextDelta, TextOutput};

/// Sizes of the engine: the scheduler's budgets and the KV pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Token budget of one step (decode rows + prefill chunks).
    pub max_num_batched_tokens: usize,
    /// Most sequences running at once.
    pub max_num_seqs: usize,
    /// Context length: prompt + output never exceeds it.
    pub max_model_len: usize,
    /// KV blocks of `BLOCK_SIZE` tokens in the pool.
    pub n_blocks: usize,
    pub kv_dtype: KvDType,
}

impl EngineConfig {
    /// A pool of at least `kv_tokens` tokens (and at least one full context).
    pub fn new(max_model_len: usize, kv_tokens: usize) -> Self {
        let tokens = kv_tokens.max(max_model_len);
        EngineConfig {
            max_num_batched_tokens: 512,
            max_num_seqs: 64,
            max_model_len,
            n_blocks: tokens.div_ceil(BLOCK_SIZE),
            kv_dtype: KvDType::F32,
        }
    }

    /// Tokens the KV pool holds.
    pub fn kv_tokens(&self) -> usize {
        self.n_blocks * BLOCK_SIZE
    }
}

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("engine config: max_model_len {max_model_len} exceeds the model's context length {model_ctx}")]
    ContextTooLong { max_model_len: usize, model_ctx: usize },
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("engine: {0}")]
    Model(#[from] ferrum_model::ModelError),
    #[error("engine thread could not start: {0}")]
    Thread(std::io::Error),
}

/// Why a request was refused before it was queued.
#[derive(Debug, Error, PartialEq)]
pub enum SubmitError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {prompt_len} tokens but the context is {max_model_len} tokens; at least one position must remain for output")]
    PromptTooLong { prompt_len: usize, max_model_len: usize },
    #[error("max_tokens must be at least 1")]
    ZeroMaxTokens,
    #[error("n must be at least 1")]
    ZeroN,
    #[error("prompt token {id} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error(transparent)]
    Sampling(#[from] SamplerError),
    #[error("the engine has stopped")]
    Stopped,
}

/// One generation request.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    /// Output limit; `None` (or more than fits) means up to the context.
    pub max_tokens: Option<usize>,
    pub params: SamplingParams,
    /// Keep generating past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Report the log-probability of every prompt token (after the first)
    /// and the given number of alternatives (completions' `echo`).
    pub prompt_logprobs: Option<usize>,
}

impl GenerateRequest {
    pub fn new(prompt: Vec<u32>, max_tokens: Option<usize>, params: SamplingParams) -> Self {
        GenerateRequest { prompt, max_tokens, params, ignore_eos: false, prompt_logprobs: None }
    }
}

/// How a request ended, with its token counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FinishInfo {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens served from the prefix cache at admission.
    pub cached_tokens: usize,
    /// Tokens streamed (an end-of-generation token is not streamed).
    pub completion_tokens: usize,
    /// The sampler's seed (drawn from the OS when none was given).
    pub seed: u64,
}

/// What a request's stream carries, in order: optionally `PromptLogprobs`,
/// then `Token`s, then exactly one `Finished` or `Error`.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Entry `i` scores prompt token `i` (`None` for the first token).
    PromptLogprobs(Vec<Option<Sampled>>),
    Token(Sampled),
    Finished(FinishInfo),
    Error(String),
}

/// A snapshot of the engine's gauges and counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub running: usize,
    /// Queued in the scheduler plus `n > 1` siblings waiting to fork.
    pub waiting: usize,
    pub kv_blocks_total: usize,
    /// Referenced by a running sequence.
    pub kv_blocks_used: usize,
    /// Unreferenced but kept for prefix reuse.
    pub kv_blocks_cached: usize,
    pub block_size: usize,
    /// Prompt tokens looked up in the prefix cache, and those found.
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
    /// Prompt tokens of accepted requests.
    pub prompt_tokens: u64,
    /// Prompt positions run through the model (cache hits are not).
    pub prefill_tokens: u64,
    /// Tokens sampled.
    pub generation_tokens: u64,
    pub steps: u64,
    /// Nanoseconds spent in steps: scheduling, the forward pass and
    /// sampling, bookkeeping and sending the tokens.
    pub step_ns: u64,
    /// Of which in the forward pass and sampling.
    pub forward_ns: u64,
    pub preemptions: u64,
    /// KV blocks copied for copy-on-write (shared blocks of `n > 1` siblings).
    pub kv_block_copies: u64,
    pub requests_finished: u64,
}

pub(crate) struct NewSeq {
    id: RequestId,
    prompt: Vec<u32>,
    max_tokens: usize,
    sampler: Sampler,
    ignore_eos: bool,
    prompt_logprobs: Option<usize>,
    tx: UnboundedSender<Event>,
}

pub(crate) enum Command {
    /// `n` sequences of one prompt: one prefill, shared blocks (fork).
    Submit(Vec<NewSeq>),
    Cancel(RequestId),
    AbortAll,
    CheckInvariants(mpsc::Sender<Result<(), String>>),
    Shutdown,
}

/// Handle to the engine thread. Dropping it stops the thread (requests in
/// flight end with `Abort`).
pub struct Engine {
    cmd: mpsc::Sender<Command>,
    stats: Arc<Mutex<EngineStats>>,
    next_id: AtomicU64,
    thread: Option<JoinHandle<()>>,
    config: EngineConfig,
    vocab: usize,
    warmup: Duration,
}

impl Engine {
    /// Allocates the KV pool, warms the model up with one forward pass and
    /// starts the engine thread.
    pub fn start<B: Backend + 'static>(model: Model<B>, eos_ids: Vec<u32>, config: EngineConfig) -> Result<Engine, EngineError> {
        if config.max_model_len > model.cfg.max_ctx {
            return Err(EngineError::ContextTooLong { max_model_len: config.max_model_len, model_ctx: model.cfg.max_ctx });
        }
        let sched = Scheduler::new(SchedulerConfig {
            max_num_batched_tokens: config.max_num_batched_tokens,
            max_num_seqs: config.max_num_seqs,
            max_model_len: config.max_model_len,
            block_size: BLOCK_SIZE,
            n_blocks: config.n_blocks,
        })?;
        let mut kv = KvCache::new(&model.backend, &model.cfg, config.n_blocks, config.kv_dtype)?;
        let warmup = warm_up(&model, &mut kv)?;
        let vocab = model.cfg.vocab_size;
        let stats = Arc::new(Mutex::new(EngineStats::default()));
        let (cmd, rx) = mpsc::channel();
        let state = engine_loop::EngineLoop::new(model, kv, sched, eos_ids, stats.clone());
        let thread = std::thread::Builder::new()
            .name("ferrum-engine".into())
            .spawn(move || state.run(rx))
            .map_err(EngineError::Thread)?;
        Ok(Engine { cmd, stats, next_id: AtomicU64::new(1), thread: Some(thread), config, vocab, warmup })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Time of the warm-up forward pass.
    pub fn warmup_time(&self) -> Duration {
        self.warmup
    }

    /// Queues one request.
    pub fn submit(&self, req: GenerateRequest) -> Result<RequestStream, SubmitError> {
        let mut v = self.submit_n(req, 1)?;
        v.pop().ok_or(SubmitError::ZeroN)
    }

    /// Queues `n` sequences of one prompt (OpenAI's `n`); sequence `i` uses
    /// seed `seed + i` when a seed is given. The prompt is computed once and
    /// its KV blocks shared (an `n` above `max_num_seqs` runs as several
    /// such groups, one after another).
    pub fn submit_n(&self, req: GenerateRequest, n: usize) -> Result<Vec<RequestStream>, SubmitError> {
        let max_tokens = self.check(&req, n)?;
        let mut seqs = Vec::with_capacity(n);
        let mut streams = Vec::with_capacity(n);
        for i in 0..n {
            let mut params = req.params.clone();
            params.seed = req.params.seed.map(|s| s.wrapping_add(i as u64));
            let sampler = Sampler::new(params, self.vocab)?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = unbounded_channel();
            seqs.push(NewSeq {
                id,
                prompt: req.prompt.clone(),
                max_tokens,
                sampler,
                ignore_eos: req.ignore_eos,
                prompt_logprobs: req.prompt_logprobs,
                tx,
            });
            streams.push(RequestStream { id, rx, cmd: self.cmd.clone(), done: false, prompt_len: req.prompt.len(), max_tokens });
        }
        self.cmd.send(Command::Submit(seqs)).map_err(|_| SubmitError::Stopped)?;
        Ok(streams)
    }

    /// Validates a request; returns its clamped output limit.
    fn check(&self, req: &GenerateRequest, n: usize) -> Result<usize, SubmitError> {
        let len = req.prompt.len();
        let ctx = self.config.max_model_len;
        if n == 0 {
            return Err(SubmitError::ZeroN);
        }
        if len == 0 {
            return Err(SubmitError::EmptyPrompt);
        }
        if len >= ctx {
            return Err(SubmitError::PromptTooLong { prompt_len: len, max_model_len: ctx });
        }
        if req.max_tokens == Some(0) {
            return Err(SubmitError::ZeroMaxTokens);
        }
        if let Some(&id) = req.prompt.iter().find(|&&t| t as usize >= self.vocab) {
            return Err(SubmitError::TokenOutOfRange { id, vocab: self.vocab });
        }
        req.params.validate(self.vocab)?;
        Ok(req.max_tokens.unwrap_or(usize::MAX).min(ctx - len))
    }

    /// The latest snapshot (updated after every step).
    pub fn stats(&self) -> EngineStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Runs the scheduler's and block manager's invariant checks on the
    /// engine thread between steps.
    pub fn check_invariants(&self) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.cmd.send(Command::CheckInvariants(tx)).map_err(|_| "the engine has stopped".to_string())?;
        rx.recv_timeout(Duration::from_secs(60)).map_err(|e| format!("no answer from the engine thread: {e}"))?
    }

    /// Ends every request now (each stream gets `Finished(Abort)`).
    pub fn abort_all(&self) {
        let _ = self.cmd.send(Command::AbortAll);
    }

    /// Stops the engine thread and waits for it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.cmd.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One request's events. Dropping it before `Finished` cancels the request
/// (its blocks are freed before the engine's next step).
pub struct RequestStream {
    id: RequestId,
    rx: UnboundedReceiver<Event>,
    cmd: mpsc::Sender<Command>,
    done: bool,
    prompt_len: usize,
    max_tokens: usize,
}

impl RequestStream {
    pub fn id(&self) -> RequestId {
        self.id
    }

    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    /// The output limit after clamping to the context.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The next event; `None` after the last one.
    pub async fn recv(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        let ev = self.rx.recv().await;
        self.note(&ev);
        ev
    }

    /// The next event, blocking the thread (not for use inside an async runtime).
    pub fn blocking_recv(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        let ev = self.rx.blocking_recv();
        self.note(&ev);
        ev
    }

    fn note(&mut self, ev: &Option<Event>) {
        if matches!(ev, None | Some(Event::Finished(_)) | Some(Event::Error(_))) {
            self.done = true;
        }
    }

    /// Ends the request now; no further events are read.
    pub fn cancel(&mut self) {
        if !self.done {
            self.done = true;
            let _ = self.cmd.send(Command::Cancel(self.id));
        }
    }

    /// Collects every event until the end (blocking).
    pub fn collect_blocking(mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(ev) = self.blocking_recv() {
            out.push(ev);
        }
        out
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// One small forward pass so first-use allocation happens before serving.
/// It writes block 0, which is free: its contents are overwritten before
/// any sequence reads them.
fn warm_up<B: Backend>(model: &Model<B>, kv: &mut KvCache<B>) -> Result<Duration, EngineError> {
    let t = Instant::now();
    let tokens = [0u32; 4];
    let table = [0u32];
    let batch = ForwardBatch { seqs: vec![SeqInput { tokens: &tokens, start_pos: 0, block_table: &table, logits: LogitRows::Last }] };
    model.forward(&batch, kv, None)?;
    Ok(t.elapsed())
}

/// OpenAI's `finish_reason` of a finish reason (`abort` for a cancelled request).
pub fn finish_reason_str(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Abort => "abort",
    }
}
