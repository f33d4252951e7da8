//! `n > 1` groups: one prompt, `n` sequences, one prefill.
//!
//! `add_n` queues the group's first request (the leader) as usual and parks
//! the others as `AwaitingFork` siblings: they hold no blocks and are never
//! scheduled themselves. The leader's admission reserves a sequence seat for
//! every sibling, so `max_num_seqs` holds once they join. The step whose
//! chunk reaches the end of the leader's prompt lists the siblings in
//! `ScheduledSeq::forks`: the runner samples one token per sibling from the
//! leader's logits row, and `update` forks the leader's block table to each
//! sibling (every block shared by reference count, the partial last block
//! included) before appending the sampled tokens. From then on the siblings
//! are ordinary running requests; the first decode token of each writes into
//! the shared partial block, where the block manager's copy-on-write hands
//! it a private copy (listed in `StepPlan::block_copies`), except for the
//! last writer, which by then holds the original alone.
//!
//! If the leader ends before its prompt is computed (abort, failure), its
//! first sibling becomes the group's leader and takes its place in the
//! queue (the front, if the old leader had been admitted).

use std::collections::HashSet;

use super::{InFlight, Scheduler, SchedulerError};
use crate::request::{Request, RequestError, RequestId, RequestStatus};

impl Scheduler {
    /// Queues a group of requests with one prompt (OpenAI's `n`): the first
    /// computes the prompt once, the others share its KV blocks by fork.
    /// Each request is validated and clamped as by `add`; the prompts must be
    /// equal and the group must fit in `max_num_seqs`. All or nothing.
    pub fn add_n(&mut self, requests: Vec<Request>) -> Result<(), RequestError> {
        let Some(first) = requests.first() else {
            return Err(RequestError::EmptyGroup);
        };
        let leader = first.id();
        if requests.len() > self.config.max_num_seqs {
            return Err(RequestError::GroupTooLarge {
                id: leader,
                n: requests.len(),
                max_num_seqs: self.config.max_num_seqs,
            });
        }
        let mut ids = HashSet::with_capacity(requests.len());
        for r in &requests {
            self.validate(r)?;
            if !ids.insert(r.id()) {
                return Err(RequestError::DuplicateId { id: r.id() });
            }
            if r.prompt() != first.prompt() {
                return Err(RequestError::GroupPromptMismatch { id: r.id(), leader });
            }
        }
        let siblings: Vec<RequestId> = requests[1..].iter().map(Request::id).collect();
        let max_model_len = self.config.max_model_len;
        for (i, mut r) in requests.into_iter().enumerate() {
            let id = r.id();
            r.clamp_max_tokens(max_model_len - r.prompt().len());
            r.num_computed_tokens = 0;
            r.arrival = self.next_arrival;
            self.next_arrival += 1;
            if i == 0 {
                r.status = RequestStatus::Waiting;
                r.fork_of = None;
                r.forks = siblings.clone();
                self.waiting.push_back(id);
            } else {
                r.status = RequestStatus::AwaitingFork;
                r.fork_of = Some(leader);
                r.forks = Vec::new();
            }
            self.requests.insert(id, r);
        }
        Ok(())
    }

    /// The checks of `add` for one request (in this order: duplicate id,
    /// empty prompt, zero `max_tokens`, prompt too long).
    pub(super) fn validate(&self, r: &Request) -> Result<(), RequestError> {
        let id = r.id();
        let prompt_len = r.prompt().len();
        let max_model_len = self.config.max_model_len;
        if self.requests.contains_key(&id) {
            return Err(RequestError::DuplicateId { id });
        }
        if prompt_len == 0 {
            return Err(RequestError::EmptyPrompt { id });
        }
        if r.max_tokens() == 0 {
            return Err(RequestError::ZeroMaxTokens { id });
        }
        if prompt_len >= max_model_len {
            return Err(RequestError::PromptTooLong {
                id,
                prompt_len,
                max_model_len,
            });
        }
        Ok(())
    }

    /// Siblings parked for fork (they hold no blocks and are never scheduled).
    pub fn num_awaiting_fork(&self) -> usize {
        self.requests
            .values()
            .filter(|r| r.status == RequestStatus::AwaitingFork)
            .count()
    }

    /// Sequence seats promised to the siblings of running leaders.
    pub(super) fn reserved_seats(&self) -> usize {
        self.running
            .iter()
            .filter_map(|id| self.requests.get(id))
            .map(|r| r.forks.len())
            .sum()
    }

    /// Seats a waiting request needs to be admitted: itself and its siblings.
    pub(super) fn group_seats(&self, id: RequestId) -> usize {
        self.requests.get(&id).map_or(1, |r| 1 + r.forks.len())
    }

    /// A sibling leaves its group: its leader stops waiting for it.
    pub(super) fn detach_sibling(&mut self, sibling: &Request) {
        let id = sibling.id();
        if let Some(leader) = sibling.fork_of.and_then(|l| self.requests.get_mut(&l)) {
            leader.forks.retain(|&s| s != id);
        }
    }

    /// The leader of `forks` ended before its prompt was computed: the first
    /// sibling leads the rest, queued at `waiting` index `at`.
    pub(super) fn promote_siblings(&mut self, forks: Vec<RequestId>, at: usize) {
        let mut it = forks.into_iter();
        let Some(new_leader) = it.next() else { return };
        let rest: Vec<RequestId> = it.collect();
        for s in &rest {
            if let Some(r) = self.requests.get_mut(s) {
                r.fork_of = Some(new_leader);
            }
        }
        if let Some(r) = self.requests.get_mut(&new_leader) {
            r.status = RequestStatus::Waiting;
            r.fork_of = None;
            r.forks = rest;
            let at = at.min(self.waiting.len());
            self.waiting.insert(at, new_leader);
        }
    }

    /// After the step that computed a leader's last prompt token: every
    /// sibling takes the leader's block table (shared by reference count)
    /// and joins `running` with the prompt computed. Called by `update` after
    /// the leader's full blocks are committed, before tokens are appended.
    pub(super) fn fork_siblings(&mut self, flight: &[InFlight]) -> Result<(), SchedulerError> {
        for f in flight.iter().filter(|f| f.wants_logits) {
            let Some(leader) = self
                .requests
                .get_mut(&f.id)
                .filter(|r| r.status == RequestStatus::Running)
            else {
                continue;
            };
            if leader.forks.is_empty() {
                continue;
            }
            let forks = std::mem::take(&mut leader.forks);
            let computed = leader.num_computed_tokens;
            let cached = leader.num_cached_tokens;
            for sib in forks {
                self.blocks.fork(f.id, sib)?;
                let r = self
                    .requests
                    .get_mut(&sib)
                    .ok_or(SchedulerError::UnknownRequest(sib))?;
                r.status = RequestStatus::Running;
                r.fork_of = None;
                r.num_computed_tokens = computed;
                r.num_cached_tokens = cached;
                let arrival = r.arrival;
                self.insert_running(sib, arrival);
            }
        }
        Ok(())
    }

    /// Group invariants: every `AwaitingFork` sibling is listed by exactly
    /// its leader, which waits or runs, has no output yet and shares its
    /// prompt; siblings hold no blocks and have nothing computed; running
    /// sequences plus reserved seats fit in `max_num_seqs`.
    pub(super) fn check_forks(&self) -> Result<(), String> {
        let mut listed = 0usize;
        for (&id, r) in &self.requests {
            match r.status {
                RequestStatus::AwaitingFork => {
                    let leader = r
                        .fork_of
                        .and_then(|l| self.requests.get(&l))
                        .ok_or_else(|| format!("sibling {id}: leader {:?} unknown", r.fork_of))?;
                    if leader.forks.iter().filter(|&&s| s == id).count() != 1 {
                        return Err(format!(
                            "sibling {id}: not listed once by its leader {}",
                            leader.id()
                        ));
                    }
                    if r.num_computed_tokens != 0 || self.blocks.has_seq(id) || !r.forks.is_empty()
                    {
                        return Err(format!(
                            "sibling {id} holds blocks, computed tokens or forks"
                        ));
                    }
                }
                _ if !r.forks.is_empty() => {
                    if !matches!(
                        r.status,
                        RequestStatus::Waiting | RequestStatus::Preempted | RequestStatus::Running
                    ) || r.fork_of.is_some()
                        || r.output_len() != 0
                    {
                        return Err(format!(
                            "leader {id} ({:?}) cannot have pending forks",
                            r.status
                        ));
                    }
                    for s in &r.forks {
                        let sib = self
                            .requests
                            .get(s)
                            .ok_or_else(|| format!("leader {id}: sibling {s} unknown"))?;
                        if sib.status != RequestStatus::AwaitingFork
                            || sib.fork_of != Some(id)
                            || sib.prompt() != r.prompt()
                        {
                            return Err(format!("leader {id}: sibling {s} is not its fork"));
                        }
                    }
                    listed += r.forks.len();
                }
                _ => {
                    if r.fork_of.is_some() {
                        return Err(format!(
                            "request {id} ({:?}) still names a leader",
                            r.status
                        ));
                    }
                }
            }
        }
        if listed != self.num_awaiting_fork() {
            return Err(format!(
                "leaders list {listed} siblings but {} await a fork",
                self.num_awaiting_fork()
            ));
        }
        let seats = self.running.len() + self.reserved_seats();
        if seats > self.config.max_num_seqs {
            return Err(format!(
                "{} running + {} reserved seats > max_num_seqs {}",
                self.running.len(),
                self.reserved_seats(),
                self.config.max_num_seqs
            ));
        }
        Ok(())
    }
}
