//! Request lifecycle: validation and clamping, abort and stop freeing blocks
//! at once, the schedule/update protocol errors, prefix reuse between
//! requests, and the sequence limit.

mod common;

use common::{prompt, render, sample, Driver};
use ferrum_engine::{
    FinishReason, Request, RequestError, RequestStatus, Scheduler, SchedulerConfig, SchedulerError,
};

fn cfg() -> SchedulerConfig {
    SchedulerConfig {
        max_num_batched_tokens: 64,
        max_num_seqs: 4,
        max_model_len: 128,
        block_size: 16,
        n_blocks: 16,
    }
}

#[test]
fn config_is_validated() {
    let bad = SchedulerConfig {
        max_num_seqs: 0,
        ..cfg()
    };
    assert_eq!(
        Scheduler::new(bad).unwrap_err(),
        SchedulerError::ZeroConfig {
            field: "max_num_seqs"
        }
    );
    let small = SchedulerConfig {
        n_blocks: 7,
        ..cfg()
    };
    let err = Scheduler::new(small).unwrap_err();
    assert_eq!(
        err,
        SchedulerError::PoolTooSmall {
            n_blocks: 7,
            block_size: 16,
            max_model_len: 128
        }
    );
    assert!(err.to_string().contains("128"), "{err}");
}

#[test]
fn requests_are_validated_and_max_tokens_clamped() {
    let mut s = Scheduler::new(cfg()).unwrap();
    let err = s.add(Request::new(1, prompt(1, 128), 10)).unwrap_err();
    assert_eq!(
        err,
        RequestError::PromptTooLong {
            id: 1,
            prompt_len: 128,
            max_model_len: 128
        }
    );
    assert!(err.to_string().contains("128 tokens"), "{err}");
    assert_eq!(
        s.add(Request::new(2, vec![], 10)).unwrap_err(),
        RequestError::EmptyPrompt { id: 2 }
    );
    assert_eq!(
        s.add(Request::new(3, vec![1], 0)).unwrap_err(),
        RequestError::ZeroMaxTokens { id: 3 }
    );
    s.add(Request::new(4, prompt(4, 100), 1000)).unwrap();
    assert_eq!(s.get(4).unwrap().max_tokens(), 28);
    assert_eq!(
        s.add(Request::new(4, vec![1], 1)).unwrap_err(),
        RequestError::DuplicateId { id: 4 }
    );
    s.add(Request::new(5, prompt(5, 127), 5)).unwrap();
    assert_eq!(s.get(5).unwrap().max_tokens(), 1);
    assert_eq!(s.num_waiting(), 2);
}

#[test]
fn a_request_stops_at_the_context_length() {
    let mut d = Driver::new(SchedulerConfig {
        max_model_len: 40,
        n_blocks: 3,
        ..cfg()
    });
    d.add(0, 37, 100);
    let plans = d.drain(10);
    assert_eq!(
        plans,
        vec!["A:37@0[0,1,2]L", "A:1@37[0,1,2]L", "A:1@38[0,1,2]L"]
    );
    // 37 + 3 = 40 tokens; the last sampled token never needs a KV slot.
    assert_eq!(d.known[&0].len(), 40);
    d.assert_idle();
}

#[test]
fn abort_frees_blocks_at_once() {
    let mut d = Driver::new(cfg());
    d.add(0, 40, 50);
    d.add(1, 20, 50);
    d.add(2, 10, 50);
    assert_eq!(d.step_str(), "A:40@0[0,1,2]L B:20@0[3,4]L C:4@0[5]");
    // Abort a running request between steps: its 2 blocks are back now.
    let before = d.sched.block_manager().num_free();
    let r = d.sched.abort(1).unwrap();
    assert_eq!(r.status(), RequestStatus::Finished(FinishReason::Abort));
    assert_eq!(r.output(), &[sample(1, 0)]);
    assert_eq!(d.sched.block_manager().num_free(), before + 2);
    assert!(!d.sched.block_manager().has_seq(1));
    assert!(d.sched.abort(1).is_none());
    d.sched.check_invariants().unwrap();

    // Abort while a step is in flight: update skips it (and ignores a token
    // the runner may still report for it).
    let plan = d.sched.schedule().unwrap();
    assert_eq!(render(&plan), "A:1@40[0,1,2]L C:6@4[5]L");
    d.sched.abort(0).unwrap();
    let out = d
        .sched
        .update(&[(0, Some(7)), (2, Some(sample(2, 0)))])
        .unwrap();
    assert_eq!(out.tokens, vec![(2, sample(2, 0))]);
    assert_eq!(d.sched.running_ids(), &[2]);
    // Abort a waiting request: nothing to free, it just leaves the queue.
    d.sched.add(Request::new(9, vec![5; 3], 3)).unwrap();
    assert_eq!(
        d.sched.abort(9).unwrap().status(),
        RequestStatus::Finished(FinishReason::Abort)
    );
    assert_eq!(d.sched.num_waiting(), 0);
    d.sched.abort(2).unwrap();
    d.assert_idle();
}

#[test]
fn finish_on_stop_frees_blocks_and_leaves_no_state() {
    let mut d = Driver::new(cfg());
    d.add(0, 20, 50);
    let (_, out) = d.step();
    assert_eq!(out.tokens, vec![(0, sample(0, 0))]);
    // The caller saw EOS in that token.
    let r = d.sched.finish(0, FinishReason::Stop).unwrap();
    assert_eq!(r.status(), RequestStatus::Finished(FinishReason::Stop));
    assert_eq!(r.output(), &[sample(0, 0)]);
    assert_eq!(
        d.sched.finish(0, FinishReason::Stop).unwrap_err(),
        SchedulerError::UnknownRequest(0)
    );
    d.assert_idle();
    // Its full block stays cached for the next request with that prefix.
    assert_eq!(d.sched.block_manager().num_cached(), 1);
}

#[test]
fn schedule_update_protocol_errors_leave_the_step_in_flight() {
    let mut d = Driver::new(cfg());
    d.add(0, 100, 5);
    d.add(1, 3, 5);
    assert_eq!(
        d.sched.update(&[]).unwrap_err(),
        SchedulerError::NoStepInFlight
    );
    let plan = d.sched.schedule().unwrap();
    // A's first chunk (64) wants no logits; B's prompt does not fit the budget.
    assert_eq!(render(&plan), "A:64@0[0,1,2,3]");
    assert_eq!(
        d.sched.schedule().unwrap_err(),
        SchedulerError::StepInFlight
    );
    assert_eq!(
        d.sched.update(&[(0, Some(1))]).unwrap_err(),
        SchedulerError::UnexpectedToken(0)
    );
    assert_eq!(
        d.sched.update(&[(0, None), (0, None)]).unwrap_err(),
        SchedulerError::DuplicateOutput(0)
    );
    d.sched.update(&[(0, None)]).unwrap();
    let plan = d.sched.schedule().unwrap();
    assert_eq!(render(&plan), "A:36@64[0,1,2,3,4,5,6]L B:3@0[7]L");
    assert_eq!(
        d.sched.update(&[(0, Some(1))]).unwrap_err(),
        SchedulerError::MissingToken(1)
    );
    assert_eq!(
        d.sched.update(&[(0, None), (1, Some(2))]).unwrap_err(),
        SchedulerError::MissingToken(0)
    );
    let out = d.sched.update(&[(1, Some(2)), (0, Some(1))]).unwrap();
    assert_eq!(out.tokens, vec![(1, 2), (0, 1)]);
    d.sched.check_invariants().unwrap();
}

#[test]
fn second_request_reuses_the_first_ones_prefix() {
    let mut d = Driver::new(cfg());
    let shared = prompt(0, 40);
    d.add_tokens(0, shared.clone(), 2);
    assert_eq!(d.step_str(), "A:40@0[0,1,2]L");
    // Same 40-token prompt: 32 tokens (blocks 0, 1) come from the cache; the
    // block holding token 39 is computed again in a new block.
    d.add_tokens(1, shared.clone(), 2);
    assert_eq!(d.step_str(), "A:1@40[0,1,2]L B:8@32[0,1,3]L");
    assert_eq!(d.sched.get(1).unwrap().num_cached_tokens(), 32);
    d.drain(4);
    // Both finished: a third request with a longer shared prefix hits 32 too
    // (block 2 was never full: only 41 tokens were computed).
    let mut longer = shared;
    longer.extend([7, 7, 7, 7, 7, 7, 7, 7, 7, 7]);
    d.add_tokens(2, longer, 1);
    assert_eq!(d.step_str(), "C:18@32[0,1,4,5]L");
    assert_eq!(d.sched.block_manager().stats().hits, 64);
    d.assert_idle();
}

#[test]
fn same_prompt_in_one_step_is_deduplicated_after_commit() {
    let mut d = Driver::new(cfg());
    let p = prompt(0, 20);
    d.add_tokens(0, p.clone(), 3);
    d.add_tokens(1, p, 3);
    // Nothing is cached yet, so both compute the same first block...
    assert_eq!(d.step_str(), "A:20@0[0,1]L B:20@0[2,3]L");
    // ...and after the commit B shares A's block 0; its block 2 was freed.
    assert_eq!(d.step_str(), "A:1@20[0,1]L B:1@20[0,3]L");
    assert_eq!(d.sched.block_manager().ref_count(0), Some(2));
    assert_eq!(d.sched.block_manager().ref_count(2), Some(0));
    d.drain(4);
    d.assert_idle();
}

#[test]
fn max_num_seqs_bounds_running_requests() {
    let mut d = Driver::new(SchedulerConfig {
        max_num_seqs: 2,
        ..cfg()
    });
    for id in 0..4 {
        d.add(id, 3, 2);
    }
    assert_eq!(d.step_str(), "A:3@0[0]L B:3@0[1]L");
    assert_eq!(d.sched.num_running(), 2);
    // A and B finish at the end of step 2; C and D start in step 3 with the
    // next blocks of the free list (released blocks 0, 1 went to its tail).
    assert_eq!(d.step_str(), "A:1@3[0]L B:1@3[1]L");
    assert_eq!(d.step_str(), "C:3@0[2]L D:3@0[3]L");
    d.drain(4);
    d.assert_idle();
}

#[test]
fn empty_scheduler_plans_nothing() {
    let mut s = Scheduler::new(cfg()).unwrap();
    let plan = s.schedule().unwrap();
    assert!(plan.is_empty());
    let out = s.update(&[]).unwrap();
    assert!(out.tokens.is_empty() && out.finished.is_empty());
}
