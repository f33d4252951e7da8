//! What one scheduler step hands to the runner, and what `update` returns.

use crate::blocks::{BlockCopy, BlockId};
use crate::request::{Request, RequestId};

/// One sequence's rows in the step's varlen batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledSeq {
    pub id: RequestId,
    /// Tokens to compute this step: `[n]`, at positions `start_pos..start_pos + n`.
    /// One token for a decode row, a chunk for a prefill or a recompute.
    pub tokens: Vec<u32>,
    pub start_pos: usize,
    /// The sequence's whole block table after this step's allocation: covers
    /// `start_pos + tokens.len()` slots (token `p` goes to slot
    /// `block_table[p / block_size] * block_size + p % block_size`).
    pub block_table: Vec<BlockId>,
    /// The chunk reaches the last known token: the runner returns logits for
    /// its last row and the caller samples one token for it.
    pub wants_logits: bool,
    /// `n > 1` siblings that fork from this sequence after this step: the
    /// caller samples one token for each from this sequence's logits row
    /// (each with its own sampler) and reports it to `update` under the
    /// sibling's id. Empty unless the chunk completes a leader's prompt.
    pub forks: Vec<RequestId>,
}

/// One step: decode rows first (arrival order), then continuing prefill chunks
/// of running requests, then first chunks of newly admitted ones (FCFS).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepPlan {
    pub seqs: Vec<ScheduledSeq>,
    /// Requests preempted this step (blocks freed; they will be recomputed).
    pub preempted: Vec<RequestId>,
    /// KV block copies (all layers, K and V) to perform before the forward
    /// pass, in this order: copy-on-write of a shared partial block when a
    /// sequence first writes into it. A block freed by preemption in the
    /// same step may be handed out again, so a later pair's `dst` can be an
    /// earlier pair's `src`: apply them in order.
    pub block_copies: Vec<BlockCopy>,
}

impl StepPlan {
    /// Total tokens in the batch (at most `max_num_batched_tokens`).
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.tokens.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

/// Result of `Scheduler::update`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateOutput {
    /// Newly sampled tokens, in plan order; each generated token appears in
    /// exactly one update, even if its request is later preempted and recomputed.
    pub tokens: Vec<(RequestId, u32)>,
    /// Requests that reached `max_tokens` this step (blocks already freed),
    /// with status `Finished(Length)`.
    pub finished: Vec<Request>,
}
