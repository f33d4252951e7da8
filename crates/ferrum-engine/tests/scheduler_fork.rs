//! `n > 1` groups in the scheduler, with exact plans: one prefill, every
//! prompt block shared by reference count after the fork, copy-on-write of
//! the partial last block only (the last writer keeps the original), abort
//! and preemption of group members releasing their references, and the
//! sequence limit counting a whole group. The driver (tests/common) checks
//! every plan against a shadow KV cache and the invariants after every step.

mod common;

use common::{prompt, sample, Driver};
use ferrum_engine::{BlockManager, Request, RequestError, RequestStatus, SchedulerConfig};

fn cfg() -> SchedulerConfig {
    SchedulerConfig {
        max_num_batched_tokens: 64,
        max_num_seqs: 4,
        max_model_len: 128,
        block_size: 16,
        n_blocks: 16,
    }
}

fn refs(bm: &BlockManager, blocks: &[u32]) -> Vec<u32> {
    blocks.iter().map(|&b| bm.ref_count(b).unwrap()).collect()
}

/// Prompt of 40 tokens (2 full blocks + 8 tokens), n = 3, 5 tokens each.
#[test]
fn fork_shares_every_prompt_block_and_copies_only_the_partial_one() {
    let mut d = Driver::new(cfg());
    d.add_n(&[0, 1, 2], 40, 5);
    assert_eq!(d.sched.num_waiting(), 1);
    assert_eq!(d.sched.num_awaiting_fork(), 2);
    assert_eq!(
        d.sched.get(1).unwrap().status(),
        RequestStatus::AwaitingFork
    );
    assert_eq!(d.sched.get(0).unwrap().forks(), &[1, 2]);

    // Step 1: one prefill; B and C sample their first token from A's row
    // and then share all three blocks, the partial one included.
    assert_eq!(d.step_str(), "A:40@0[0,1,2]L+BC");
    let bm = d.sched.block_manager();
    for id in [0, 1, 2] {
        assert_eq!(bm.block_table(id).unwrap(), &[0, 1, 2]);
        assert_eq!(d.sched.get(id).unwrap().num_computed_tokens(), 40);
        assert_eq!(d.streamed[&id], vec![sample(id, 0)]);
    }
    assert_eq!(refs(bm, &[0, 1, 2]), vec![3, 3, 3]);
    assert!(bm.is_registered(0) && bm.is_registered(1) && !bm.is_registered(2));
    assert_eq!(bm.num_free(), 13);
    assert_eq!(d.sched.running_ids(), &[0, 1, 2]);
    assert_eq!(d.sched.num_awaiting_fork(), 0);
    // The prompt was looked up (and computed) once.
    assert_eq!(bm.stats().queries, 40);

    // Step 2: every child writes position 40 into the shared partial block
    // 2. A and B get copies (3, 4); C, the last writer, holds block 2 alone
    // by then and writes in place. The full blocks are never copied.
    assert_eq!(
        d.step_str(),
        "A:1@40[0,1,3]L B:1@40[0,1,4]L C:1@40[0,1,2]L cp[2>3,2>4]"
    );
    let bm = d.sched.block_manager();
    assert_eq!(refs(bm, &[0, 1, 2, 3, 4]), vec![3, 3, 1, 1, 1]);
    // Later decodes write into private blocks: no more copies.
    assert_eq!(d.step_str(), "A:1@41[0,1,3]L B:1@41[0,1,4]L C:1@41[0,1,2]L");
    d.drain(10);
    d.assert_idle();
    for id in [0, 1, 2] {
        let want: Vec<u32> = (0..5).map(|j| sample(id, j)).collect();
        assert_eq!(d.streamed[&id], want);
    }
    // The two committed prompt blocks stay cached for later requests.
    assert_eq!(d.sched.block_manager().num_cached(), 2);
}

/// A 32-token prompt ends on a block boundary: nothing is shared partially,
/// so each child's first decode takes a new block and nothing is copied.
#[test]
fn a_prompt_on_a_block_boundary_forks_without_copies() {
    let mut d = Driver::new(cfg());
    d.add_n(&[0, 1], 32, 2);
    assert_eq!(d.step_str(), "A:32@0[0,1]L+B");
    assert_eq!(refs(d.sched.block_manager(), &[0, 1]), vec![2, 2]);
    assert_eq!(d.step_str(), "A:1@32[0,1,2]L B:1@32[0,1,3]L");
    d.assert_idle();
}

/// A prompt shorter than a block: the one block is shared, then copied.
#[test]
fn a_prompt_inside_one_block_is_shared_then_copied() {
    let mut d = Driver::new(cfg());
    d.add_n(&[0, 1, 2, 3], 5, 3);
    assert_eq!(d.step_str(), "A:5@0[0]L+BCD");
    assert_eq!(refs(d.sched.block_manager(), &[0]), vec![4]);
    assert_eq!(
        d.step_str(),
        "A:1@5[1]L B:1@5[2]L C:1@5[3]L D:1@5[0]L cp[0>1,0>2,0>3]"
    );
    d.drain(5);
    d.assert_idle();
}

#[test]
fn aborting_forked_children_releases_their_references() {
    let mut d = Driver::new(cfg());
    d.add_n(&[0, 1, 2], 40, 20);
    d.step();
    d.step();
    assert_eq!(
        refs(d.sched.block_manager(), &[0, 1, 2, 3, 4]),
        vec![3, 3, 1, 1, 1]
    );
    let free = d.sched.block_manager().num_free();
    // B: the shared blocks lose one reference, its private copy is freed.
    d.sched.abort(1).unwrap();
    let bm = d.sched.block_manager();
    assert_eq!(refs(bm, &[0, 1, 2, 3, 4]), vec![2, 2, 1, 1, 0]);
    assert_eq!(bm.num_free(), free + 1);
    d.sched.check_invariants().unwrap();
    // The leader (already forked): C keeps running on the shared blocks.
    d.sched.abort(0).unwrap();
    assert_eq!(
        refs(d.sched.block_manager(), &[0, 1, 2, 3]),
        vec![1, 1, 1, 0]
    );
    assert_eq!(d.step_str(), "C:1@41[0,1,2]L");
    d.sched.abort(2).unwrap();
    d.assert_idle();
    assert_eq!(d.sched.block_manager().num_cached(), 2);
}

/// Four blocks of 4 tokens; a 6-token prompt, n = 3, 6 tokens each. The
/// copies use up the pool; at position 8 every child needs a third block:
/// A (oldest) preempts C, evicting C's released block, and B must yield too.
/// They recompute later from the prefix cache (the shared first block, and
/// B's own second block, which survived in the cache).
#[test]
fn preempted_children_release_their_references_and_recompute() {
    let mut d = Driver::new(SchedulerConfig {
        max_num_batched_tokens: 64,
        max_num_seqs: 4,
        max_model_len: 16,
        block_size: 4,
        n_blocks: 4,
    });
    d.add_n(&[0, 1, 2], 6, 6);
    assert_eq!(d.step_str(), "A:6@0[0,1]L+BC");
    assert_eq!(
        d.step_str(),
        "A:1@6[0,2]L B:1@6[0,3]L C:1@6[0,1]L cp[1>2,1>3]"
    );
    assert_eq!(d.sched.block_manager().num_free(), 0);
    assert_eq!(d.step_str(), "A:1@7[0,2]L B:1@7[0,3]L C:1@7[0,1]L");
    assert_eq!(d.step_str(), "A:1@8[0,2,1]L pre[CB]");
    let bm = d.sched.block_manager();
    assert_eq!(refs(bm, &[0, 1, 2, 3]), vec![1, 1, 1, 0]);
    assert!(!bm.has_seq(1) && !bm.has_seq(2));
    assert_eq!(d.sched.waiting_ids(), vec![1, 2]);
    for id in [1, 2] {
        assert_eq!(d.sched.get(id).unwrap().status(), RequestStatus::Preempted);
    }
    let rest = d.drain(20);
    assert_eq!(
        rest,
        vec![
            "A:1@9[0,2,1]L",
            "A:1@10[0,2,1]L",
            "B:1@8[0,3,1]L",
            "B:1@9[0,3,1]L",
            "B:1@10[0,3,1]L",
            "C:5@4[0,1,2]L",
            "C:1@9[0,1,2]L",
            "C:1@10[0,1,2]L",
        ]
    );
    d.assert_idle();
    for id in [0, 1, 2] {
        let want: Vec<u32> = (0..6).map(|j| sample(id, j)).collect();
        assert_eq!(d.streamed[&id], want, "each token streamed exactly once");
    }
}

/// The leader is aborted mid-prefill (chunks of 16): B leads now, finds
/// A's committed first block in the prefix cache and forks C at the end.
#[test]
fn aborting_the_leader_before_the_fork_promotes_a_sibling() {
    let mut d = Driver::new(SchedulerConfig {
        max_num_batched_tokens: 16,
        ..cfg()
    });
    d.add_n(&[0, 1, 2], 40, 3);
    assert_eq!(d.step_str(), "A:16@0[0]");
    d.sched.abort(0).unwrap();
    assert_eq!(d.sched.waiting_ids(), vec![1]);
    assert_eq!(d.sched.get(1).unwrap().forks(), &[2]);
    assert_eq!(d.sched.get(2).unwrap().fork_of(), Some(1));
    d.sched.check_invariants().unwrap();
    assert_eq!(d.step_str(), "B:16@16[0,1]");
    assert_eq!(d.step_str(), "B:8@32[0,1,2]L+C");
    assert_eq!(d.step_str(), "B:1@40[0,1,3]L C:1@40[0,1,2]L cp[2>3]");
    d.drain(5);
    d.assert_idle();
    assert!(!d.streamed.contains_key(&0));
}

#[test]
fn aborting_a_waiting_sibling_or_leader() {
    let mut d = Driver::new(cfg());
    d.add_n(&[0, 1, 2, 3], 20, 2);
    // A sibling leaves before the fork: the others are unaffected.
    let r = d.sched.abort(2).unwrap();
    assert_eq!(
        r.status(),
        ferrum_engine::RequestStatus::Finished(ferrum_engine::FinishReason::Abort)
    );
    assert_eq!(d.sched.get(0).unwrap().forks(), &[1, 3]);
    // The never-admitted leader leaves: B leads in its place with D.
    d.sched.abort(0).unwrap();
    assert_eq!(d.sched.waiting_ids(), vec![1]);
    assert_eq!(d.sched.get(1).unwrap().forks(), &[3]);
    d.sched.check_invariants().unwrap();
    assert_eq!(d.step_str(), "B:20@0[0,1]L+D");
    d.drain(5);
    d.assert_idle();
    assert_eq!(d.streamed[&3], vec![sample(3, 0), sample(3, 1)]);
}

/// `max_tokens = 1`: every child ends at its first token, the one prefill.
#[test]
fn children_finishing_at_the_fork_free_everything() {
    let mut d = Driver::new(cfg());
    d.add_n(&[0, 1, 2], 20, 1);
    let (plan, out) = d.step();
    assert_eq!(common::render(&plan), "A:20@0[0,1]L+BC");
    assert_eq!(out.finished.len(), 3);
    d.assert_idle();
}

/// A group is admitted only when all its sequences fit in `max_num_seqs`.
#[test]
fn a_group_needs_seats_for_all_its_sequences() {
    let mut d = Driver::new(cfg());
    d.add(0, 10, 3);
    d.add_n(&[1, 2, 3, 4], 10, 2);
    d.add(5, 10, 2);
    // 1 running + a group of 4 > 4 seats: the group (and E behind it) waits.
    assert_eq!(d.step_str(), "A:10@0[0]L");
    assert_eq!(d.step_str(), "A:1@10[0]L");
    assert_eq!(d.step_str(), "A:1@11[0]L");
    assert_eq!(d.step_str(), "B:10@0[1]L+CDE");
    // B, C, D, E run; F waits for a seat.
    assert_eq!(d.sched.num_running(), 4);
    assert_eq!(d.sched.waiting_ids(), vec![5]);
    d.drain(10);
    d.assert_idle();
}

#[test]
fn groups_are_validated() {
    let mut d = Driver::new(cfg());
    let s = &mut d.sched;
    let group = |ids: &[u64], p: &[u32]| -> Vec<Request> {
        ids.iter()
            .map(|&id| Request::new(id, p.to_vec(), 4))
            .collect()
    };
    assert_eq!(s.add_n(vec![]).unwrap_err(), RequestError::EmptyGroup);
    let err = s.add_n(group(&[1, 2, 3, 4, 5], &[7; 3])).unwrap_err();
    assert_eq!(
        err,
        RequestError::GroupTooLarge {
            id: 1,
            n: 5,
            max_num_seqs: 4
        }
    );
    assert!(
        err.to_string().contains('5') && err.to_string().contains('4'),
        "{err}"
    );
    let mut mixed = group(&[1, 2], &[7; 3]);
    mixed.push(Request::new(3, vec![8; 3], 4));
    assert_eq!(
        s.add_n(mixed).unwrap_err(),
        RequestError::GroupPromptMismatch { id: 3, leader: 1 }
    );
    assert_eq!(
        s.add_n(group(&[1, 2, 1], &[7; 3])).unwrap_err(),
        RequestError::DuplicateId { id: 1 }
    );
    assert_eq!(
        s.add_n(group(&[1, 2], &[])).unwrap_err(),
        RequestError::EmptyPrompt { id: 1 }
    );
    // Nothing was queued by the failures.
    assert!(!s.has_unfinished());
    s.add_n(group(&[1, 2], &prompt(1, 127))).unwrap();
    // Both clamped to the context (128 - 127).
    assert_eq!(s.get(2).unwrap().max_tokens(), 1);
    s.check_invariants().unwrap();
}

/// The update protocol: a forking sibling must get a token.
#[test]
fn a_forking_sibling_without_a_token_is_an_error() {
    let mut d = Driver::new(cfg());
    d.add_n(&[0, 1], 20, 3);
    let plan = d.sched.schedule().unwrap();
    assert_eq!(plan.seqs[0].forks, vec![1]);
    assert_eq!(
        d.sched.update(&[(0, Some(5))]).unwrap_err(),
        ferrum_engine::SchedulerError::MissingToken(1)
    );
    let out = d.sched.update(&[(0, Some(5)), (1, Some(6))]).unwrap();
    assert_eq!(out.tokens, vec![(0, 5), (1, 6)]);
    assert_eq!(d.sched.get(1).unwrap().output(), &[6]);
    d.sched.check_invariants().unwrap();
}
