//! The engine thread: commands in, one scheduler step at a time, events out.
//!
//! Each iteration: apply queued commands (new requests, cancellations) ->
//! `schedule()` -> one `model.forward` over the step's varlen batch -> sample
//! the rows that want logits -> `update()` -> end requests at an
//! end-of-generation token -> send every new token to its stream. A stream
//! whose receiver is gone is aborted at once, freeing its blocks.
//!
//! KV block copies the step lists (copy-on-write of blocks shared by `n > 1`
//! siblings) are applied before the forward pass; a leader's logits row also
//! gives each of its forking siblings a first token, from its own sampler.

use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ferrum_kernels::{Backend, SampleSpec};
use ferrum_model::{ForwardBatch, KvCache, LogitRows, Model, SeqInput};
use tokio::sync::mpsc::UnboundedSender;

use super::{prompt_logprobs, Command, EngineStats, Event, FinishInfo, NewSeq};
use crate::request::{FinishReason, Request, RequestId};
use crate::sampler::{Sampled, Sampler};
use crate::sched::{Scheduler, StepPlan};

/// A request the scheduler knows, seen from the runner.
struct Live {
    sampler: Sampler,
    tx: UnboundedSender<Event>,
    ignore_eos: bool,
    prompt_len: usize,
    streamed: usize,
}

pub(super) struct EngineLoop<B: Backend> {
    model: Model<B>,
    kv: KvCache<B>,
    sched: Scheduler,
    eos: Vec<u32>,
    live: HashMap<RequestId, Live>,
    stats: Arc<Mutex<EngineStats>>,
    totals: EngineStats,
}

impl<B: Backend> EngineLoop<B> {
    pub(super) fn new(model: Model<B>, kv: KvCache<B>, sched: Scheduler, eos: Vec<u32>, stats: Arc<Mutex<EngineStats>>) -> Self {
        let mut s = EngineLoop { model, kv, sched, eos, live: HashMap::new(), stats, totals: EngineStats::default() };
        s.publish();
        s
    }

    pub(super) fn run(mut self, rx: mpsc::Receiver<Command>) {
        loop {
            // Idle: block until something arrives.
            if !self.sched.has_unfinished() {
                match rx.recv() {
                    Ok(cmd) => {
                        if !self.apply(cmd) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            let mut stop = false;
            loop {
                match rx.try_recv() {
                    Ok(cmd) => {
                        if !self.apply(cmd) {
                            stop = true;
                            break;
                        }
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        stop = true;
                        break;
                    }
                }
            }
            if stop {
                break;
            }
            if self.sched.has_unfinished() && !self.step() {
                // Nothing could run: wait a little for commands instead of spinning.
                if let Ok(cmd) = rx.recv_timeout(Duration::from_millis(5)) {
                    if !self.apply(cmd) {
                        break;
                    }
                }
            }
            self.publish();
        }
        self.abort_all();
        self.publish();
    }

    /// Applies one command; false means shut down.
    fn apply(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Submit(mut seqs) => {
                if !self.score_prompt(&mut seqs) {
                    return true;
                }
                // A group fits in max_num_seqs; a larger `n` (rare) becomes
                // several groups, the later ones finding the prompt's full
                // blocks in the prefix cache.
                let max = self.sched.config().max_num_seqs.max(1);
                let mut seqs = seqs.into_iter().peekable();
                while seqs.peek().is_some() {
                    let group: Vec<NewSeq> = seqs.by_ref().take(max).collect();
                    self.add_group(group);
                }
            }
            Command::Cancel(id) => self.end(id, FinishReason::Abort),
            Command::AbortAll => self.abort_all(),
            Command::CheckInvariants(tx) => {
                let _ = tx.send(self.sched.check_invariants());
            }
            Command::Shutdown => return false,
        }
        self.publish();
        true
    }

    /// Scores the (shared) prompt of a submission when asked and sends the
    /// result to every sequence of it; false if that failed (each got an error).
    fn score_prompt(&mut self, seqs: &mut [NewSeq]) -> bool {
        let Some(k) = seqs.iter().find_map(|s| s.prompt_logprobs) else { return true };
        let Some(first) = seqs.first() else { return true };
        let chunk = self.sched.config().max_num_batched_tokens;
        let ev = match prompt_logprobs::score(&self.model, &first.prompt, k, chunk) {
            Ok(lp) => Event::PromptLogprobs(lp),
            Err(e) => Event::Error(format!("scoring the prompt: {e}")),
        };
        let ok = matches!(ev, Event::PromptLogprobs(_));
        for s in seqs.iter_mut() {
            s.prompt_logprobs = None;
            let _ = s.tx.send(ev.clone());
        }
        ok
    }

    /// Hands `n` sequences of one prompt to the scheduler as one group: the
    /// first computes the prompt, the others fork from it.
    fn add_group(&mut self, group: Vec<NewSeq>) {
        let requests = group.iter().map(|s| Request::new(s.id, s.prompt.clone(), s.max_tokens)).collect();
        if let Err(e) = self.sched.add_n(requests) {
            for s in group {
                let _ = s.tx.send(Event::Error(e.to_string()));
            }
            return;
        }
        for mut s in group {
            s.sampler.observe_context(&s.prompt);
            let prompt_len = s.prompt.len();
            self.totals.prompt_tokens += prompt_len as u64;
            self.live.insert(s.id, Live { sampler: s.sampler, tx: s.tx, ignore_eos: s.ignore_eos, prompt_len, streamed: 0 });
        }
    }

    /// Ends request `id` (if the scheduler still has it) and tells its stream.
    fn end(&mut self, id: RequestId, reason: FinishReason) {
        let req = self.sched.finish(id, reason).ok();
        let Some(live) = self.live.remove(&id) else { return };
        let info = FinishInfo {
            reason,
            prompt_tokens: live.prompt_len,
            cached_tokens: req.as_ref().map_or(0, |r| r.num_cached_tokens()),
            completion_tokens: live.streamed,
            seed: live.sampler.seed(),
        };
        let _ = live.tx.send(Event::Finished(info));
        self.totals.requests_finished += 1;
    }

    fn abort_all(&mut self) {
        // Siblings first, so no leader's end promotes a sibling in vain.
        let mut ids: Vec<RequestId> = self.live.keys().copied().collect();
        ids.sort_unstable_by_key(|&id| std::cmp::Reverse(id));
        for id in ids {
            self.end(id, FinishReason::Abort);
        }
    }

    /// Runs one step; false when the plan was empty.
    fn step(&mut self) -> bool {
        let t = Instant::now();
        let ran = self.step_inner();
        if ran {
            self.totals.step_ns += t.elapsed().as_nanos() as u64;
        }
        ran
    }

    fn step_inner(&mut self) -> bool {
        let plan = match self.sched.schedule() {
            Ok(p) => p,
            Err(e) => {
                self.fail_all(&format!("scheduler: {e}"));
                return false;
            }
        };
        if plan.is_empty() {
            let _ = self.sched.update(&[]);
            return false;
        }
        self.totals.steps += 1;
        self.totals.preemptions += plan.preempted.len() as u64;
        let t = Instant::now();
        let sampled = self.forward_and_sample(&plan);
        self.totals.forward_ns += t.elapsed().as_nanos() as u64;
        let sampled = match sampled {
            Ok(s) => s,
            Err(msg) => {
                for s in &plan.seqs {
                    self.fail(s.id, &msg);
                }
                let _ = self.sched.update(&[]);
                return true;
            }
        };
        let outputs: Vec<(RequestId, Option<u32>)> =
            plan.seqs.iter().flat_map(|s| std::iter::once(s.id).chain(s.forks.iter().copied())).map(|id| (id, sampled.get(&id).map(|x| x.id))).collect();
        let update = match self.sched.update(&outputs) {
            Ok(u) => u,
            Err(e) => {
                self.fail_all(&format!("scheduler update: {e}"));
                return true;
            }
        };
        let mut sampled = sampled;
        let mut to_stop = Vec::new();
        for &(id, tok) in &update.tokens {
            self.totals.generation_tokens += 1;
            let Some(live) = self.live.get_mut(&id) else { continue };
            if !live.ignore_eos && self.eos.contains(&tok) {
                to_stop.push(id);
                continue;
            }
            let Some(s) = sampled.remove(&id) else { continue };
            if live.tx.send(Event::Token(s)).is_err() {
                to_stop.push(id);
                continue;
            }
            live.streamed += 1;
        }
        let mut at_length: HashMap<RequestId, Request> = update.finished.into_iter().map(|r| (r.id(), r)).collect();
        for id in to_stop {
            let reason = if self.live.get(&id).is_some_and(|l| l.tx.is_closed()) { FinishReason::Abort } else { FinishReason::Stop };
            match at_length.remove(&id) {
                // The end-of-generation token was also the last allowed one.
                Some(req) => self.report_finished(req, reason),
                None => self.end(id, reason),
            }
        }
        for (_, req) in at_length {
            self.report_finished(req, FinishReason::Length);
        }
        true
    }

    /// A request the scheduler ended at `max_tokens` (blocks already freed).
    fn report_finished(&mut self, req: Request, reason: FinishReason) {
        let id = req.id();
        let Some(live) = self.live.remove(&id) else { return };
        let info = FinishInfo {
            reason,
            prompt_tokens: live.prompt_len,
            cached_tokens: req.num_cached_tokens(),
            completion_tokens: live.streamed,
            seed: live.sampler.seed(),
        };
        let _ = live.tx.send(Event::Finished(info));
        self.totals.requests_finished += 1;
    }

    /// The step's KV block copies, then one forward pass over the plan, then
    /// a token for each row that wants one and for each forking sibling.
    fn forward_and_sample(&mut self, plan: &StepPlan) -> Result<HashMap<RequestId, Sampled>, String> {
        if !plan.block_copies.is_empty() {
            // In order: a later pair may reuse a block an earlier one read.
            let pairs: Vec<(u32, u32)> = plan.block_copies.iter().map(|c| (c.src, c.dst)).collect();
            self.kv.copy_blocks(&self.model.backend, &pairs).map_err(|e| format!("copying KV blocks: {e}"))?;
            self.totals.kv_block_copies += pairs.len() as u64;
        }
        for s in &plan.seqs {
            let prompt_len = self.live.get(&s.id).map_or(0, |l| l.prompt_len);
            let end = (s.start_pos + s.tokens.len()).min(prompt_len);
            self.totals.prefill_tokens += end.saturating_sub(s.start_pos) as u64;
        }
        let batch = ForwardBatch {
            seqs: plan
                .seqs
                .iter()
                .map(|s| SeqInput {
                    tokens: &s.tokens,
                    start_pos: s.start_pos,
                    block_table: &s.block_table,
                    logits: if s.wants_logits { LogitRows::Last } else { LogitRows::None },
                })
                .collect(),
        };
        // Rows the backend can choose for (greedy, or sampled without
        // penalties, bias or top log-probabilities) send back only ids. A
        // row with forking siblings only when greedy (they share the
        // token); sampled siblings need their own draws: on the host.
        let sampler = |id: &RequestId| self.live.get(id).map(|l| &l.sampler);
        let on_device = plan.seqs.iter().filter(|s| s.wants_logits).all(|s| {
            let choosable = |x: &Sampler| if s.forks.is_empty() { x.device_spec().is_some() } else { x.plain_greedy() };
            std::iter::once(&s.id).chain(&s.forks).all(|id| sampler(id).is_none_or(choosable))
        });
        let mut out = HashMap::new();
        if on_device {
            // Rows not asked for (or of requests gone) take any spec.
            let specs: Vec<SampleSpec> = plan.seqs.iter().map(|s| sampler(&s.id).and_then(|x| x.device_spec()).unwrap_or_else(SampleSpec::greedy)).collect();
            let picks = self.model.forward_sampled(&batch, &mut self.kv, &specs).map_err(|e| format!("forward pass: {e}"))?;
            for (i, s) in plan.seqs.iter().enumerate().filter(|(_, s)| s.wants_logits) {
                let pick = picks.last_of(i).ok_or_else(|| format!("the model returned no logits for request {}", s.id))?;
                self.sample_all(s.id, &s.forks, Choice::Pick(pick), &mut out);
            }
            return Ok(out);
        }
        let logits = self.model.forward(&batch, &mut self.kv, None).map_err(|e| format!("forward pass: {e}"))?;
        for (i, s) in plan.seqs.iter().enumerate().filter(|(_, s)| s.wants_logits) {
            let row = logits.last_of(i).ok_or_else(|| format!("the model returned no logits for request {}", s.id))?;
            self.sample_all(s.id, &s.forks, Choice::Logits(row), &mut out);
        }
        Ok(out)
    }

    /// Samples the token of `id` and of its forks from one choice.
    fn sample_all(&mut self, id: RequestId, forks: &[RequestId], c: Choice<'_>, out: &mut HashMap<RequestId, Sampled>) {
        if !self.sample_into(id, c, out) {
            // The leader is gone: its first sibling leads now and will
            // compute the prompt itself.
            return;
        }
        for &sib in forks {
            self.sample_into(sib, c, out);
        }
    }

    /// Samples `id`'s token from `c` into `out`; false if `id` is not live
    /// or its sampler failed (then it alone is ended with an error).
    fn sample_into(&mut self, id: RequestId, c: Choice<'_>, out: &mut HashMap<RequestId, Sampled>) -> bool {
        let Some(live) = self.live.get_mut(&id) else { return false };
        let sampled = match c {
            Choice::Logits(row) => live.sampler.sample(row),
            Choice::Pick(p) => live.sampler.accept(p),
        };
        match sampled {
            Ok(x) => {
                out.insert(id, x);
                true
            }
            // This request alone fails; the step goes on for the others.
            Err(e) => {
                let _ = live.tx.send(Event::Error(format!("sampling: {e}")));
                self.sched.abort(id);
                self.live.remove(&id);
                false
            }
        }
    }

    fn fail(&mut self, id: RequestId, msg: &str) {
        self.sched.abort(id);
        if let Some(live) = self.live.remove(&id) {
            let _ = live.tx.send(Event::Error(msg.to_string()));
        }
    }

    fn fail_all(&mut self, msg: &str) {
        let ids: Vec<RequestId> = self.live.keys().copied().collect();
        for id in ids {
            self.fail(id, msg);
        }
        let _ = self.sched.update(&[]);
    }

    /// Copies the gauges and counters into the shared snapshot.
    fn publish(&mut self) {
        let bm = self.sched.block_manager();
        let pc = bm.stats();
        let s = EngineStats {
            running: self.sched.num_running(),
            waiting: self.sched.num_waiting() + self.sched.num_awaiting_fork(),
            kv_blocks_total: bm.num_blocks(),
            kv_blocks_used: bm.num_blocks() - bm.num_free(),
            kv_blocks_cached: bm.num_cached(),
            block_size: bm.block_size(),
            prefix_cache_queries: pc.queries,
            prefix_cache_hits: pc.hits,
            ..self.totals
        };
        if let Ok(mut g) = self.stats.lock() {
            *g = s;
        }
    }
}

/// What a request's token is sampled from: its row of logits, or the
/// backend's greedy choice.
#[derive(Clone, Copy)]
enum Choice<'a> {
    Logits(&'a [f32]),
    Pick(&'a ferrum_kernels::RowArgmax),
}
