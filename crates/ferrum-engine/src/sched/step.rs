//! The step loop: `schedule()` packs one varlen batch, `update()` applies its
//! sampled tokens.
//!
//! `schedule` runs three passes under the token budget:
//! 1. decode rows (1 token) of running requests, oldest arrival first;
//! 2. the next chunk of running requests with more than one token to compute
//!    (an unfinished prefill, or a recompute after preemption), oldest first;
//! 3. if nothing was preempted in this step, admit waiting requests from the
//!    front (FCFS, stop at the first that does not fit) while their sequences
//!    (an `n > 1` leader counts its siblings too) fit in `max_num_seqs`: the
//!    prefix cache supplies what it can, and the first chunk needs free
//!    blocks for its slots.
//!
//! Preemption: when a running request cannot get slots, the newest running
//! request not yet scheduled this step (possibly itself) is preempted, and
//! the allocation retried. A request's computed-token count advances when it
//! is scheduled; the sampled token arrives with `update`.

use std::collections::{HashMap, HashSet};

use super::{InFlight, ScheduledSeq, Scheduler, SchedulerError, StepPlan, UpdateOutput};
use crate::blocks::BlockError;
use crate::request::{FinishReason, RequestId, RequestStatus};

impl Scheduler {
    /// Plans the next step. Call `update` with its outputs before scheduling
    /// again. An empty plan means nothing can run (no requests).
    pub fn schedule(&mut self) -> Result<StepPlan, SchedulerError> {
        if self.in_flight.is_some() {
            return Err(SchedulerError::StepInFlight);
        }
        let mut budget = self.config.max_num_batched_tokens;
        let mut chosen: Vec<(RequestId, usize)> = Vec::new();
        let mut scheduled: HashSet<RequestId> = HashSet::new();
        let mut plan = StepPlan::default();

        for decode_pass in [true, false] {
            let mut i = 0;
            while i < self.running.len() && budget > 0 {
                let id = self.running[i];
                let req = self
                    .requests
                    .get(&id)
                    .ok_or(SchedulerError::UnknownRequest(id))?;
                let needed = req.num_tokens() - req.num_computed_tokens;
                if needed == 0 || (needed == 1) != decode_pass || scheduled.contains(&id) {
                    i += 1;
                    continue;
                }
                let n = needed.min(budget);
                let before = self.running.len();
                if self.reserve_running(id, n, &scheduled, &mut plan)? {
                    scheduled.insert(id);
                    chosen.push((id, n));
                    budget -= n;
                }
                i = if self.running.len() == before {
                    i + 1
                } else {
                    // Preemption removed entries: resume after `id` (or at
                    // its old index if `id` itself was preempted).
                    self.running
                        .iter()
                        .position(|&r| r == id)
                        .map_or(i, |p| p + 1)
                };
            }
        }

        if plan.preempted.is_empty() {
            let mut seats = self.running.len() + self.reserved_seats();
            while budget > 0 {
                let Some(&id) = self.waiting.front() else {
                    break;
                };
                let group = self.group_seats(id);
                if seats + group > self.config.max_num_seqs {
                    break;
                }
                let req = self
                    .requests
                    .get(&id)
                    .ok_or(SchedulerError::UnknownRequest(id))?;
                let hit = match self.blocks.allocate_prompt(id, req.all_tokens(), budget) {
                    Ok(hit) => hit,
                    Err(BlockError::OutOfBlocks { .. }) => break,
                    Err(e) => return Err(e.into()),
                };
                self.waiting.pop_front();
                let req = self
                    .requests
                    .get_mut(&id)
                    .ok_or(SchedulerError::UnknownRequest(id))?;
                if req.status == RequestStatus::Waiting {
                    req.num_cached_tokens = hit.cached_tokens;
                }
                req.status = RequestStatus::Running;
                req.num_computed_tokens = hit.cached_tokens;
                let arrival = req.arrival;
                self.insert_running(id, arrival);
                seats += group;
                chosen.push((id, hit.num_new_tokens));
                budget -= hit.num_new_tokens;
            }
        }

        let mut flight = Vec::with_capacity(chosen.len());
        for (id, n) in chosen {
            let req = self
                .requests
                .get_mut(&id)
                .ok_or(SchedulerError::UnknownRequest(id))?;
            let start = req.num_computed_tokens;
            let wants_logits = start + n == req.num_tokens();
            let tokens = req.all_tokens()[start..start + n].to_vec();
            // The chunk ends the leader's prompt: its siblings sample too.
            let forks = if wants_logits {
                req.forks.clone()
            } else {
                Vec::new()
            };
            req.num_computed_tokens += n;
            let block_table = self
                .blocks
                .block_table(id)
                .ok_or(BlockError::UnknownSeq(id))?
                .to_vec();
            plan.seqs.push(ScheduledSeq {
                id,
                tokens,
                start_pos: start,
                block_table,
                wants_logits,
                forks,
            });
            flight.push(InFlight { id, wants_logits });
        }
        self.in_flight = Some(flight);
        self.maybe_check()?;
        Ok(plan)
    }

    /// Reserves `n` slots for running request `id`, preempting the newest
    /// unscheduled running requests while blocks are short. Returns false if
    /// `id` itself had to be preempted.
    fn reserve_running(
        &mut self,
        id: RequestId,
        n: usize,
        scheduled: &HashSet<RequestId>,
        plan: &mut StepPlan,
    ) -> Result<bool, SchedulerError> {
        loop {
            match self.blocks.append_slots(id, n) {
                Ok(copy) => {
                    plan.block_copies.extend(copy);
                    return Ok(true);
                }
                Err(BlockError::OutOfBlocks { .. }) => {
                    // `id` is unscheduled and running, so a victim always exists.
                    let victim = self
                        .running
                        .iter()
                        .rev()
                        .copied()
                        .find(|r| !scheduled.contains(r))
                        .unwrap_or(id);
                    self.preempt(victim)?;
                    plan.preempted.push(victim);
                    if victim == id {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Applies the step's outputs: `(id, Some(token))` for every row that
    /// wanted logits and for every sibling in its `forks`, `None` (or no
    /// entry) for the others. Commits blocks that became full, forks the
    /// siblings of leaders whose prompt is now computed, appends tokens,
    /// finishes requests at `max_tokens` (freeing their blocks). Ids aborted
    /// since `schedule` are ignored. On an error nothing is applied and the
    /// step stays in flight.
    pub fn update(
        &mut self,
        outputs: &[(RequestId, Option<u32>)],
    ) -> Result<UpdateOutput, SchedulerError> {
        let flight = self
            .in_flight
            .take()
            .ok_or(SchedulerError::NoStepInFlight)?;
        if let Err(e) = self.validate_outputs(&flight, outputs) {
            self.in_flight = Some(flight);
            return Err(e);
        }
        for f in &flight {
            if let Some(req) = self
                .requests
                .get(&f.id)
                .filter(|r| r.status == RequestStatus::Running)
            {
                let computed = &req.all_tokens()[..req.num_computed_tokens];
                self.blocks.commit_full_blocks(f.id, computed)?;
            }
        }
        self.fork_siblings(&flight)?;
        let mut out = UpdateOutput::default();
        for &(id, token) in outputs {
            let req = self
                .requests
                .get_mut(&id)
                .filter(|r| r.status == RequestStatus::Running);
            let (Some(token), Some(req)) = (token, req) else {
                continue;
            };
            req.push_output(token);
            out.tokens.push((id, token));
            if req.output_len() >= req.max_tokens() {
                out.finished.push(self.finish(id, FinishReason::Length)?);
            }
        }
        self.maybe_check()?;
        Ok(out)
    }

    fn validate_outputs(
        &self,
        flight: &[InFlight],
        outputs: &[(RequestId, Option<u32>)],
    ) -> Result<(), SchedulerError> {
        // Rows still live, and whether each needs a token; a leader's
        // siblings need one from its row.
        let mut live: Vec<(RequestId, bool)> = Vec::with_capacity(flight.len());
        for f in flight {
            let Some(r) = self
                .requests
                .get(&f.id)
                .filter(|r| r.status == RequestStatus::Running)
            else {
                continue;
            };
            live.push((f.id, f.wants_logits));
            if f.wants_logits {
                live.extend(r.forks.iter().map(|&s| (s, true)));
            }
        }
        let wants: HashMap<RequestId, bool> = live.iter().copied().collect();
        let mut given = HashSet::new();
        for &(id, token) in outputs {
            if !given.insert(id) {
                return Err(SchedulerError::DuplicateOutput(id));
            }
            let want = match wants.get(&id) {
                Some(&w) => w,
                None if self.is_running(id) => false,
                None => continue, // aborted or finished since schedule()
            };
            match (want, token) {
                (true, None) => return Err(SchedulerError::MissingToken(id)),
                (false, Some(_)) => return Err(SchedulerError::UnexpectedToken(id)),
                _ => {}
            }
        }
        for &(id, w) in &live {
            if w && !given.contains(&id) {
                return Err(SchedulerError::MissingToken(id));
            }
        }
        Ok(())
    }

    fn is_running(&self, id: RequestId) -> bool {
        self.requests
            .get(&id)
            .is_some_and(|r| r.status == RequestStatus::Running)
    }
}
