//! A generation request as the scheduler sees it: token ids and counters.

use thiserror::Error;

/// Engine-assigned request id (also the block manager's `SeqId`).
pub type RequestId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS or a stop sequence (decided by the caller, `Scheduler::finish`).
    Stop,
    /// `max_tokens` reached (clamped to the context length).
    Length,
    /// Cancelled: client disconnect or explicit abort.
    Abort,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestStatus {
    /// Queued, never admitted.
    Waiting,
    /// Admitted: holds blocks and is scheduled each step.
    Running,
    /// Lost its blocks to preemption; waits at the queue front to be
    /// recomputed (prompt + generated tokens) without re-sending output.
    Preempted,
    /// A sibling of an `n > 1` group (`Scheduler::add_n`): holds no blocks
    /// and is never scheduled itself; when the group's leader has computed
    /// the shared prompt, it samples its first token from the leader's
    /// logits row and takes the leader's blocks by reference (fork).
    AwaitingFork,
    Finished(FinishReason),
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RequestError {
    #[error("request {id}: empty prompt")]
    EmptyPrompt { id: RequestId },
    #[error("request {id}: prompt has {prompt_len} tokens but the context is {max_model_len}; at least one position must remain for output")]
    PromptTooLong {
        id: RequestId,
        prompt_len: usize,
        max_model_len: usize,
    },
    #[error("request {id}: max_tokens must be at least 1")]
    ZeroMaxTokens { id: RequestId },
    #[error("request {id} is already queued or running")]
    DuplicateId { id: RequestId },
    #[error("request group is empty")]
    EmptyGroup,
    #[error("request {id}: a group of {n} sequences exceeds max_num_seqs {max_num_seqs}")]
    GroupTooLarge {
        id: RequestId,
        n: usize,
        max_num_seqs: usize,
    },
    #[error(
        "request {id}: its prompt differs from the prompt of its group's first request {leader}"
    )]
    GroupPromptMismatch { id: RequestId, leader: RequestId },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    id: RequestId,
    /// Prompt then generated tokens: `[prompt_len + output_len]`.
    tokens: Vec<u32>,
    prompt_len: usize,
    max_tokens: usize,
    pub(crate) num_computed_tokens: usize,
    pub(crate) num_cached_tokens: usize,
    pub(crate) num_preemptions: u32,
    pub(crate) status: RequestStatus,
    /// Admission order key: lower is older.
    pub(crate) arrival: u64,
    /// Siblings (`AwaitingFork`) that fork from this request once its prompt
    /// is computed; empty once forked (or for `n = 1`).
    pub(crate) forks: Vec<RequestId>,
    /// The leader this `AwaitingFork` sibling waits for.
    pub(crate) fork_of: Option<RequestId>,
}

impl Request {
    /// A new request; `max_tokens` is clamped by `Scheduler::add`.
    pub fn new(id: RequestId, prompt: Vec<u32>, max_tokens: usize) -> Self {
        let prompt_len = prompt.len();
        Request {
            id,
            tokens: prompt,
            prompt_len,
            max_tokens,
            num_computed_tokens: 0,
            num_cached_tokens: 0,
            num_preemptions: 0,
            status: RequestStatus::Waiting,
            arrival: 0,
            forks: Vec::new(),
            fork_of: None,
        }
    }

    pub fn id(&self) -> RequestId {
        self.id
    }

    pub fn prompt(&self) -> &[u32] {
        &self.tokens[..self.prompt_len]
    }

    /// Generated tokens so far (each reported exactly once by `update`).
    pub fn output(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// Prompt followed by output: every token known so far.
    pub fn all_tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn num_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Output limit after clamping to the context.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Leading tokens whose KV is computed (or scheduled in the step in flight).
    pub fn num_computed_tokens(&self) -> usize {
        self.num_computed_tokens
    }

    /// Prompt tokens served from the prefix cache at first admission.
    pub fn num_cached_tokens(&self) -> usize {
        self.num_cached_tokens
    }

    pub fn num_preemptions(&self) -> u32 {
        self.num_preemptions
    }

    pub fn status(&self) -> RequestStatus {
        self.status
    }

    /// Siblings still waiting to fork from this request (`n > 1`).
    pub fn forks(&self) -> &[RequestId] {
        &self.forks
    }

    /// For an `AwaitingFork` sibling, the request it will fork from.
    pub fn fork_of(&self) -> Option<RequestId> {
        self.fork_of
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.status, RequestStatus::Finished(_))
    }

    pub(crate) fn clamp_max_tokens(&mut self, limit: usize) {
        self.max_tokens = self.max_tokens.min(limit);
    }

    pub(crate) fn push_output(&mut self, token: u32) {
        self.tokens.push(token);
    }

    pub(crate) fn output_len(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
}
