//! Scripted scheduler scenarios with exact step plans.
//!
//! Plans render as `A:40@0[0,1,2]L` = request A computes 40 tokens starting at
//! position 0 with block table [0,1,2] and wants logits; `pre[B]` lists the
//! requests preempted in that step. The driver (tests/common) also checks each
//! plan against a shadow KV cache, so every reused or recomputed block is
//! verified to hold the right prefix.

mod common;

use common::{sample, Driver};
use ferrum_engine::{PrefixCacheStats, RequestStatus, SchedulerConfig};

fn table(blocks: &[u32]) -> String {
    blocks
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Prompts of 40 (A), 5 (B) and 100 (C) tokens; budget 64 tokens, at most 2
/// sequences, 7 blocks of 16 (112 tokens: C alone fills the pool).
/// max_tokens: A 30, B 30, C 3.
#[test]
fn three_requests_budget_64_two_seqs_tiny_pool() {
    let cfg = SchedulerConfig {
        max_num_batched_tokens: 64,
        max_num_seqs: 2,
        max_model_len: 112,
        block_size: 16,
        n_blocks: 7,
    };
    let mut d = Driver::new(cfg);
    d.add(0, 40, 30);
    d.add(1, 5, 30);
    d.add(2, 100, 3);

    // Step 1: A's whole prompt (3 blocks) and B's (1 block); C must wait for
    // a sequence slot (max_num_seqs = 2).
    assert_eq!(d.step_str(), "A:40@0[0,1,2]L B:5@0[3]L");
    assert_eq!(d.sched.waiting_ids(), vec![2]);

    // Steps 2..=28: one decode row each. A takes a block when its KV length
    // reaches 49 (step 10: block 4) and 65 (step 26: block 6); B at 17 (step
    // 13: block 5).
    for k in 2..=28usize {
        let a = match k {
            ..=9 => table(&[0, 1, 2]),
            10..=25 => table(&[0, 1, 2, 4]),
            _ => table(&[0, 1, 2, 4, 6]),
        };
        let b = if k < 13 { table(&[3]) } else { table(&[3, 5]) };
        let expect = format!("A:1@{}[{a}]L B:1@{}[{b}]L", 40 + k - 2, 5 + k - 2);
        assert_eq!(d.step_str(), expect, "step {k}");
    }
    assert_eq!(d.sched.block_manager().num_free(), 0);

    // Step 29: B needs a 3rd block for position 32, none is left. A (older)
    // is already scheduled, so the newest unscheduled request is B itself:
    // B is preempted (its two full blocks stay cached). No admissions in a
    // step that preempted.
    assert_eq!(d.step_str(), "A:1@67[0,1,2,4,6]L pre[B]");
    let b = d.sched.get(1).unwrap();
    assert_eq!(
        (b.status(), b.num_computed_tokens(), b.output().len()),
        (RequestStatus::Preempted, 0, 28)
    );
    assert_eq!(d.sched.block_manager().eviction_order(), vec![5, 3]);

    // Step 30: A's 30th token finishes it; its blocks are released at once
    // (partial block 6 to the free list, full ones to the LRU list).
    let (plan, out) = d.step();
    assert_eq!(common::render(&plan), "A:1@68[0,1,2,4,6]L");
    assert_eq!(out.finished.len(), 1);
    assert_eq!(out.finished[0].output().len(), 30);
    let bm = d.sched.block_manager();
    assert_eq!(bm.free_order(), vec![6]);
    assert_eq!(bm.eviction_order(), vec![5, 3, 4, 2, 1, 0]);

    // Step 31: B is recomputed: prompt + 28 generated tokens = 33 tokens, of
    // which 32 come back from its own cached blocks 3 and 5, so only position
    // 32 is computed (and samples B's 29th token, never re-sending the 28).
    // C is admitted with a 63-token chunk (budget 64 - 1), evicting A's
    // cached blocks in LRU order 4, 2, 1, 0.
    assert_eq!(d.step_str(), "B:1@32[3,5,6]L C:63@0[4,2,1,0]");
    assert_eq!(d.sched.block_manager().stats().evictions, 4);

    // Step 32: B decodes; C's next chunk (37 tokens) needs 3 more blocks and
    // there are none: C is the newest unscheduled request and is preempted.
    // B's 30th token finishes it.
    let (plan, out) = d.step();
    assert_eq!(common::render(&plan), "B:1@33[3,5,6]L pre[C]");
    assert_eq!(out.finished[0].id(), 1);
    assert_eq!(d.sched.block_manager().free_order(), vec![0, 6]);
    assert_eq!(
        d.sched.block_manager().eviction_order(),
        vec![1, 2, 4, 5, 3]
    );

    // Step 33: C comes back: its first 48 tokens are cached (blocks 4, 2, 1 it
    // committed in step 31), the remaining 52 fit the budget; new blocks are
    // the free ones (0, 6) then evictions (5, 3).
    assert_eq!(d.step_str(), "C:52@48[4,2,1,0,6,5,3]L");
    assert_eq!(d.step_str(), "C:1@100[4,2,1,0,6,5,3]L");
    let (plan, out) = d.step();
    assert_eq!(common::render(&plan), "C:1@101[4,2,1,0,6,5,3]L");
    assert_eq!(out.finished[0].id(), 2);
    assert_eq!(out.finished[0].num_preemptions(), 1);
    assert_eq!(d.steps, 35);

    // Every token was streamed exactly once, in order.
    for (id, n) in [(0u64, 30usize), (1, 30), (2, 3)] {
        let expect: Vec<u32> = (0..n).map(|j| sample(id, j)).collect();
        assert_eq!(d.streamed[&id], expect, "request {id}");
    }
    // Prefix cache: B's recompute hit 32 tokens, C's 48.
    assert_eq!(
        d.sched.block_manager().stats(),
        PrefixCacheStats {
            queries: 40 + 5 + 33 + 100 + 100,
            hits: 32 + 48,
            evictions: 6
        }
    );
    d.assert_idle();
    assert_eq!(d.sched.block_manager().num_cached(), 6);
}

/// An older request's decode preempts a newer, not yet scheduled one; the
/// victim waits until blocks free up and then reuses what is still cached.
/// Block size 4, 4 blocks, budget 16, 2 sequences, prompts of 4, max 8 tokens.
#[test]
fn older_decode_preempts_newer_request() {
    let cfg = SchedulerConfig {
        max_num_batched_tokens: 16,
        max_num_seqs: 2,
        max_model_len: 16,
        block_size: 4,
        n_blocks: 4,
    };
    let mut d = Driver::new(cfg);
    d.add(0, 4, 8);
    d.add(1, 4, 8);
    let plans: Vec<String> = (0..11).map(|_| d.step_str()).collect();
    assert_eq!(
        plans,
        vec![
            "A:4@0[0]L B:4@0[1]L",
            "A:1@4[0,2]L B:1@4[1,3]L",
            "A:1@5[0,2]L B:1@5[1,3]L",
            "A:1@6[0,2]L B:1@6[1,3]L",
            "A:1@7[0,2]L B:1@7[1,3]L",
            // A needs a block for position 8: B (newest, unscheduled) is
            // preempted; its cached block 3 is evicted for A.
            "A:1@8[0,2,3]L pre[B]",
            // B (9 tokens known) would reuse block 1 but needs 2 more blocks.
            "A:1@9[0,2,3]L",
            "A:1@10[0,2,3]L",
            // A finished: B reuses block 1, recomputes 5 tokens.
            "B:5@4[1,3,2]L",
            "B:1@9[1,3,2]L",
            "B:1@10[1,3,2]L",
        ]
    );
    d.assert_idle();
    assert_eq!(
        d.streamed[&1],
        (0..8).map(|j| sample(1, j)).collect::<Vec<_>>()
    );
}

/// Decode rows go first; a long prompt is chunked by the remaining budget and
/// its positions continue where the previous chunk stopped.
#[test]
fn chunked_prefill_positions() {
    let cfg = SchedulerConfig {
        max_num_batched_tokens: 32,
        max_num_seqs: 4,
        max_model_len: 256,
        block_size: 16,
        n_blocks: 16,
    };
    let mut d = Driver::new(cfg);
    d.add(0, 10, 100);
    d.add(1, 100, 100);
    let plans: Vec<String> = (0..5).map(|_| d.step_str()).collect();
    assert_eq!(
        plans,
        vec![
            "A:10@0[0]L B:22@0[1,2]",
            "A:1@10[0]L B:31@22[1,2,3,4]",
            "A:1@11[0]L B:31@53[1,2,3,4,5,6]",
            "A:1@12[0]L B:16@84[1,2,3,4,5,6,7]L",
            "A:1@13[0]L B:1@100[1,2,3,4,5,6,7]L",
        ]
    );
    // A request arriving now waits behind nobody: it gets the leftover budget.
    d.add(2, 40, 1);
    assert_eq!(
        d.step_str(),
        "A:1@14[0]L B:1@101[1,2,3,4,5,6,7]L C:30@0[8,9]"
    );
    let (plan, out) = d.step();
    assert_eq!(
        common::render(&plan),
        "A:1@15[0]L B:1@102[1,2,3,4,5,6,7]L C:10@30[8,9,10]L"
    );
    assert_eq!(out.finished[0].id(), 2);
    for id in [0, 1] {
        d.sched.abort(id).unwrap();
    }
    d.assert_idle();
}
