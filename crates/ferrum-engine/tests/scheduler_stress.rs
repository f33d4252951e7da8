//! Randomised scheduler runs: random configs, prompts with shared prefixes,
//! `n > 1` groups (fork and copy-on-write), steps, stops, aborts (also
//! between schedule and update). After every
//! operation the scheduler and block-manager invariants hold; every plan is
//! checked against a shadow KV cache (tests/common); at the end every block is
//! free or cached and every request streamed exactly its tokens, once each.

mod common;

use common::{sample, Driver};
use ferrum_engine::{FinishReason, SchedulerConfig};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Add {
        stem: u8,
        stem_len: u8,
        extra: u8,
        max_tokens: u8,
        /// Sequences of the prompt (`add_n`), clamped to `max_num_seqs`.
        n: u8,
    },
    Step,
    /// Step and stop (as on EOS) the requests whose new token hits `mask`.
    StepStop {
        mask: u8,
    },
    StepAbortMid {
        k: u8,
    },
    Abort {
        k: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3, 0u8..40, 0u8..12, 1u8..20, prop_oneof![2 => Just(1u8), 1 => 2u8..5])
            .prop_map(|(stem, stem_len, extra, max_tokens, n)| Op::Add { stem, stem_len, extra, max_tokens, n }),
        6 => Just(Op::Step),
        1 => any::<u8>().prop_map(|mask| Op::StepStop { mask }),
        1 => any::<u8>().prop_map(|k| Op::StepAbortMid { k }),
        1 => any::<u8>().prop_map(|k| Op::Abort { k }),
    ]
}

fn config() -> impl Strategy<Value = SchedulerConfig> {
    (
        prop::sample::select(vec![1usize, 2, 4, 16]),
        1usize..48,
        1usize..5,
        8usize..64,
        0usize..6,
    )
        .prop_map(
            |(block_size, budget, seqs, max_len, extra_blocks)| SchedulerConfig {
                max_num_batched_tokens: budget,
                max_num_seqs: seqs,
                max_model_len: max_len,
                block_size,
                n_blocks: max_len.div_ceil(block_size) + extra_blocks,
            },
        )
}

fn run(cfg: SchedulerConfig, ops: Vec<Op>) {
    let mut d = Driver::new(cfg);
    let mut next_id = 0u64;
    let mut expected_len = std::collections::HashMap::new();
    for op in ops {
        match op {
            Op::Add {
                stem,
                stem_len,
                extra,
                max_tokens,
                n,
            } => {
                let mut p: Vec<u32> = (0..u32::from(stem_len))
                    .map(|i| 100 * u32::from(stem) + i)
                    .collect();
                p.extend((0..u32::from(extra)).map(|i| 50_000 + 100 * next_id as u32 + i));
                p.truncate(cfg.max_model_len - 1);
                if p.is_empty() {
                    p.push(7);
                }
                let limit = usize::from(max_tokens).min(cfg.max_model_len - p.len());
                let n = usize::from(n).min(cfg.max_num_seqs) as u64;
                let ids: Vec<u64> = (next_id..next_id + n).collect();
                for &id in &ids {
                    expected_len.insert(id, limit);
                }
                d.add_n_tokens(&ids, p, usize::from(max_tokens));
                next_id += n;
            }
            Op::Step => {
                d.step();
            }
            Op::StepStop { mask } => {
                let (_, out) = d.step();
                for (id, tok) in out.tokens {
                    if tok % 8 == u32::from(mask % 8) && d.sched.get(id).is_some() {
                        d.sched.finish(id, FinishReason::Stop).unwrap();
                        d.cut_short.insert(id);
                    }
                }
            }
            Op::StepAbortMid { k } => {
                d.step_abort_mid(Some(usize::from(k)));
            }
            Op::Abort { k } => {
                let mut ids: Vec<u64> = (0..next_id)
                    .filter(|id| d.sched.get(*id).is_some())
                    .collect();
                ids.sort_unstable();
                if !ids.is_empty() {
                    let id = ids[usize::from(k) % ids.len()];
                    d.sched.abort(id).unwrap();
                    d.cut_short.insert(id);
                }
            }
        }
        d.sched.check_invariants().unwrap();
    }
    // Liveness: everything left finishes; no request is starved by preemption.
    d.drain(20_000);
    d.assert_idle();
    for id in 0..next_id {
        let got = d.streamed.get(&id).cloned().unwrap_or_default();
        // Stopped or aborted requests end early; the others run to max_tokens.
        let n = if d.cut_short.contains(&id) {
            got.len()
        } else {
            expected_len[&id]
        };
        assert!(got.len() <= expected_len[&id]);
        let want: Vec<u32> = (0..n).map(|j| sample(id, j)).collect();
        assert_eq!(got, want, "request {id} streamed the wrong tokens");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_traffic_keeps_invariants_and_leaks_nothing(cfg in config(), ops in prop::collection::vec(op(), 1..80)) {
        run(cfg, ops);
    }
}
