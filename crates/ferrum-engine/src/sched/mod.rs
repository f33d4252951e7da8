//! The token-budget scheduler: plain data in, a `StepPlan` out.
//!
//! Each request tracks computed tokens against known tokens (prompt + output).
//! A step gives every running request what it needs (1 token for a decode
//! row, a chunk for an unfinished prefill) and admits waiting requests, all
//! under `max_num_batched_tokens`; chunked prefill is just scheduling fewer
//! tokens than needed. See `step.rs` for the loop itself.
//!
//! Protocol (single-threaded, deterministic):
//! `add` requests any time; `schedule()` -> run the plan (block copies first,
//! then the forward pass) -> `update(sampled tokens)` -> `finish` requests the
//! caller decided to stop (EOS, stop strings) -> `schedule()` again. `abort`
//! may be called at any time and frees the request's blocks at once.
//!
//! `add_n` queues `n` sequences of one prompt that share its KV blocks after
//! a single prefill (fork + copy-on-write, see `fork.rs`).

mod fork;
mod plan;
mod step;

use std::collections::{HashMap, VecDeque};

use thiserror::Error;

use crate::blocks::{BlockError, BlockManager};
use crate::request::{FinishReason, Request, RequestError, RequestId, RequestStatus};

pub use plan::{ScheduledSeq, StepPlan, UpdateOutput};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Token budget of one step (decode rows + prefill chunks).
    pub max_num_batched_tokens: usize,
    /// Most requests holding blocks (running) at once.
    pub max_num_seqs: usize,
    /// Context length: prompt + output never exceeds it.
    pub max_model_len: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV blocks in the pool.
    pub n_blocks: usize,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SchedulerError {
    #[error("invalid scheduler config: {field} must be at least 1")]
    ZeroConfig { field: &'static str },
    #[error("KV pool of {n_blocks} blocks x {block_size} tokens cannot hold one sequence of max_model_len {max_model_len}")]
    PoolTooSmall {
        n_blocks: usize,
        block_size: usize,
        max_model_len: usize,
    },
    #[error("schedule() called while the previous step awaits update()")]
    StepInFlight,
    #[error("update() called with no step in flight")]
    NoStepInFlight,
    #[error("unknown request {0}")]
    UnknownRequest(RequestId),
    #[error("request {0} reached the end of its known tokens this step but got no sampled token")]
    MissingToken(RequestId),
    #[error("request {0} got a sampled token but its row produced no logits this step")]
    UnexpectedToken(RequestId),
    #[error("request {0} appears twice in the step outputs")]
    DuplicateOutput(RequestId),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("scheduler invariant violated: {0}")]
    Invariant(String),
}

/// One scheduled row of the step in flight.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    id: RequestId,
    wants_logits: bool,
}

pub struct Scheduler {
    config: SchedulerConfig,
    blocks: BlockManager,
    /// Every unfinished request (waiting or running).
    requests: HashMap<RequestId, Request>,
    /// Not holding blocks; front is served first (preempted ones go there).
    waiting: VecDeque<RequestId>,
    /// Holding blocks, sorted by arrival (oldest first).
    running: Vec<RequestId>,
    in_flight: Option<Vec<InFlight>>,
    next_arrival: u64,
    check_each_step: bool,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.config)
            .field("waiting", &self.waiting)
            .field("running", &self.running)
            .field("blocks", &self.blocks)
            .finish()
    }
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Result<Self, SchedulerError> {
        for (field, v) in [
            ("max_num_batched_tokens", config.max_num_batched_tokens),
            ("max_num_seqs", config.max_num_seqs),
            ("max_model_len", config.max_model_len),
            ("block_size", config.block_size),
            ("n_blocks", config.n_blocks),
        ] {
            if v == 0 {
                return Err(SchedulerError::ZeroConfig { field });
            }
        }
        let blocks = BlockManager::new(config.n_blocks, config.block_size)?;
        // A lone request must always fit, or preemption could never resolve.
        if blocks.blocks_for(config.max_model_len) > config.n_blocks {
            return Err(SchedulerError::PoolTooSmall {
                n_blocks: config.n_blocks,
                block_size: config.block_size,
                max_model_len: config.max_model_len,
            });
        }
        Ok(Scheduler {
            config,
            blocks,
            requests: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            in_flight: None,
            next_arrival: 0,
            check_each_step: cfg!(debug_assertions),
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn block_manager(&self) -> &BlockManager {
        &self.blocks
    }

    /// Run `check_invariants` at the end of every `schedule`/`update` (on by
    /// default in debug builds); a violation is returned as an error.
    pub fn set_invariant_checks(&mut self, on: bool) {
        self.check_each_step = on;
    }

    /// Queues a request. Rejects an empty prompt, `max_tokens == 0`, a prompt
    /// that leaves no room for output in the context and a duplicate id;
    /// clamps `max_tokens` to `max_model_len - prompt_len`.
    pub fn add(&mut self, request: Request) -> Result<(), RequestError> {
        self.add_n(vec![request])
    }

    pub fn get(&self, id: RequestId) -> Option<&Request> {
        self.requests.get(&id)
    }

    /// Requests queued for admission (siblings awaiting a fork are counted
    /// by `num_awaiting_fork`).
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Waiting request ids, next to admit first.
    pub fn waiting_ids(&self) -> Vec<RequestId> {
        self.waiting.iter().copied().collect()
    }

    /// Running request ids, oldest arrival first.
    pub fn running_ids(&self) -> &[RequestId] {
        &self.running
    }

    pub fn has_unfinished(&self) -> bool {
        !self.requests.is_empty()
    }

    /// Ends a request now (EOS / stop string: `Stop`; disconnect: `Abort`),
    /// frees its blocks at once and returns it with status `Finished(reason)`.
    pub fn finish(
        &mut self,
        id: RequestId,
        reason: FinishReason,
    ) -> Result<Request, SchedulerError> {
        let mut req = self
            .requests
            .remove(&id)
            .ok_or(SchedulerError::UnknownRequest(id))?;
        if req.status == RequestStatus::AwaitingFork {
            self.detach_sibling(&req);
            req.fork_of = None;
        } else {
            // Where a promoted sibling is queued: in the leader's place, or
            // at the front if the leader had been admitted.
            let mut at = 0;
            if let Some(i) = self.running.iter().position(|&r| r == id) {
                self.running.remove(i);
                self.blocks.free(id)?;
            } else if let Some(i) = self.waiting.iter().position(|&r| r == id) {
                self.waiting.remove(i);
                at = i;
            }
            let forks = std::mem::take(&mut req.forks);
            self.promote_siblings(forks, at);
        }
        req.status = RequestStatus::Finished(reason);
        Ok(req)
    }

    /// Client disconnect: `finish(id, Abort)`, `None` if the id is unknown
    /// (already finished). Safe while a step is in flight: `update` skips it.
    pub fn abort(&mut self, id: RequestId) -> Option<Request> {
        self.finish(id, FinishReason::Abort).ok()
    }

    /// Frees a running request's blocks and puts it at the waiting front; it
    /// will be recomputed from scratch (prompt + output, prefix cache helping).
    fn preempt(&mut self, id: RequestId) -> Result<(), SchedulerError> {
        self.running.retain(|&r| r != id);
        self.blocks.free(id)?;
        let req = self
            .requests
            .get_mut(&id)
            .ok_or(SchedulerError::UnknownRequest(id))?;
        req.num_computed_tokens = 0;
        req.status = RequestStatus::Preempted;
        req.num_preemptions += 1;
        self.waiting.push_front(id);
        Ok(())
    }

    /// Inserts into `running` keeping arrival order.
    fn insert_running(&mut self, id: RequestId, arrival: u64) {
        let requests = &self.requests;
        let at = self
            .running
            .partition_point(|r| requests.get(r).is_some_and(|q| q.arrival < arrival));
        self.running.insert(at, id);
    }

    /// Block manager invariants plus: waiting, running and awaiting-fork
    /// partition the requests; running is arrival-sorted, within
    /// `max_num_seqs` (with the seats reserved for siblings), and each
    /// running request's reserved slots equal its computed tokens; waiting
    /// requests hold no blocks and have nothing computed; the group
    /// invariants of `fork.rs`.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.blocks.check_invariants()?;
        let awaiting = self.num_awaiting_fork();
        if self.waiting.len() + self.running.len() + awaiting != self.requests.len() {
            return Err(format!(
                "{} waiting + {} running + {awaiting} awaiting fork but {} requests",
                self.waiting.len(),
                self.running.len(),
                self.requests.len()
            ));
        }
        self.check_forks()?;
        if self.running.len() > self.config.max_num_seqs {
            return Err(format!(
                "{} running > max_num_seqs {}",
                self.running.len(),
                self.config.max_num_seqs
            ));
        }
        if self.blocks.num_seqs() != self.running.len() {
            return Err(format!(
                "{} block tables for {} running",
                self.blocks.num_seqs(),
                self.running.len()
            ));
        }
        let mut last_arrival = None;
        for &id in &self.running {
            let r = self
                .requests
                .get(&id)
                .ok_or_else(|| format!("running {id} unknown"))?;
            if r.status != RequestStatus::Running {
                return Err(format!("running {id} has status {:?}", r.status));
            }
            if last_arrival.is_some_and(|a| a >= r.arrival) {
                return Err(format!("running list not in arrival order at {id}"));
            }
            last_arrival = Some(r.arrival);
            if self.blocks.num_tokens(id) != Some(r.num_computed_tokens) {
                return Err(format!(
                    "request {id}: {} computed tokens but {:?} slots",
                    r.num_computed_tokens,
                    self.blocks.num_tokens(id)
                ));
            }
            if r.num_computed_tokens > r.num_tokens() || r.output_len() > r.max_tokens() {
                return Err(format!("request {id}: counters out of range"));
            }
        }
        for &id in &self.waiting {
            let r = self
                .requests
                .get(&id)
                .ok_or_else(|| format!("waiting {id} unknown"))?;
            if !matches!(r.status, RequestStatus::Waiting | RequestStatus::Preempted) {
                return Err(format!("waiting {id} has status {:?}", r.status));
            }
            if r.num_computed_tokens != 0 || self.blocks.has_seq(id) {
                return Err(format!("waiting {id} holds computed tokens or blocks"));
            }
        }
        Ok(())
    }

    fn maybe_check(&self) -> Result<(), SchedulerError> {
        if self.check_each_step {
            self.check_invariants().map_err(SchedulerError::Invariant)?;
        }
        Ok(())
    }
}
