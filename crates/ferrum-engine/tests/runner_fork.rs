//! `n > 1` end to end on the fixture model: the prompt is computed once, the
//! children share its blocks (fork) and copy the partial last block on their
//! first write (copy-on-write, performed by the engine thread before the
//! forward pass). Greedy children equal an `n = 1` run token for token and
//! logprob for logprob; seeded children differ from each other, each equals
//! an `n = 1` run with its seed, and a repeat reproduces them.

mod runner_util;

use ferrum_engine::runner::{Engine, Event, GenerateRequest};
use ferrum_engine::sampler::SamplingParams;
use ferrum_engine::FinishReason;
use runner_util::*;

/// Runs `req` with `n` children on `e`; returns the outputs and the growth
/// of (prefill tokens, KV block copies, prefix-cache queries) meanwhile.
fn run_n(e: &Engine, req: GenerateRequest, n: usize) -> (Vec<Done>, [u64; 3]) {
    let s0 = e.stats();
    let streams = e.submit_n(req, n).unwrap();
    let handles: Vec<_> = streams.into_iter().map(|s| std::thread::spawn(move || drain(s))).collect();
    let outs: Vec<Done> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    wait_idle(e);
    let s1 = e.stats();
    let grew = [
        s1.prefill_tokens - s0.prefill_tokens,
        s1.kv_block_copies - s0.kv_block_copies,
        s1.prefix_cache_queries - s0.prefix_cache_queries,
    ];
    (outs, grew)
}

fn assert_idle(e: &Engine) {
    let s = e.stats();
    assert_eq!((s.running, s.waiting, s.kv_blocks_used), (0, 0, 0), "{s:?}");
    e.check_invariants().unwrap();
}

#[test]
fn greedy_children_equal_one_run_and_prefill_once() {
    // 70 tokens: 4 full blocks + 6 (a shared partial block to copy); 64: a
    // block boundary (nothing to copy); 9: a prompt inside one block.
    for (len, copies) in [(70usize, 2u64), (64, 0), (9, 2)] {
        let p = prompt(len, 21);
        let alone = drain(engine(config(512, 8, 64)).submit(greedy(p.clone(), 40)).unwrap());
        // A fresh engine: no prefix-cache hits can hide a missed prefill.
        let e = engine(config(512, 8, 64));
        let (outs, [prefill, copied, queried]) = run_n(&e, greedy(p.clone(), 40), 3);
        for (i, o) in outs.iter().enumerate() {
            assert_eq!(o.tokens, alone.tokens, "prompt {len}: child {i} differs from n = 1");
            assert_eq!(o.logprobs, alone.logprobs, "prompt {len}: child {i} logprobs");
            assert_eq!(o.finish.reason, FinishReason::Length);
            assert_eq!(o.finish.cached_tokens, 0);
        }
        assert_eq!(prefill, len as u64, "prompt {len}: computed once");
        assert_eq!(queried, len as u64, "prompt {len}: looked up once");
        assert_eq!(copied, copies, "prompt {len}: copy-on-write of the partial block");
        assert_idle(&e);
    }
}

#[test]
fn seeded_children_differ_and_reproduce() {
    let e = engine(config(512, 8, 64));
    let p = prompt(45, 22);
    let req = |seed: u64| {
        let params = SamplingParams { temperature: 1.0, seed: Some(seed), ..Default::default() };
        GenerateRequest { ignore_eos: true, ..GenerateRequest::new(p.clone(), Some(30), params) }
    };
    let (first, [prefill, copied, _]) = run_n(&e, req(42), 3);
    assert_eq!((prefill, copied), (45, 2));
    let tokens: Vec<&Vec<u32>> = first.iter().map(|d| &d.tokens).collect();
    assert_ne!(tokens[0], tokens[1]);
    assert_ne!(tokens[0], tokens[2]);
    assert_ne!(tokens[1], tokens[2]);
    for (i, d) in first.iter().enumerate() {
        assert_eq!(d.finish.seed, 42 + i as u64);
    }
    // Reproducible: again with n = 3 (the prompt's full blocks now come from
    // the prefix cache), and child i alone with seed 42 + i.
    let (again, _) = run_n(&e, req(42), 3);
    for (a, f) in again.iter().zip(&first) {
        assert_eq!((&a.tokens, &a.logprobs), (&f.tokens, &f.logprobs));
        assert_eq!(a.finish.cached_tokens, 32);
    }
    for (i, d) in first.iter().enumerate() {
        let alone = drain(engine(config(512, 8, 64)).submit(req(42 + i as u64)).unwrap());
        assert_eq!(alone.tokens, d.tokens, "child {i}");
        assert_eq!(alone.logprobs, d.logprobs, "child {i}");
    }
    assert_idle(&e);
}

/// A pool of 16 blocks (one context) for three 70 + 120 token children:
/// children are preempted and recomputed, and still equal `n = 1`. (Seeded
/// sampling makes them diverge: identical greedy children would converge on
/// the same committed blocks and never run short.)
#[test]
fn children_survive_preemption() {
    let p = prompt(70, 23);
    let req = |seed: u64| {
        let params = SamplingParams { temperature: 1.0, seed: Some(seed), ..Default::default() };
        GenerateRequest { ignore_eos: true, ..GenerateRequest::new(p.clone(), Some(120), params) }
    };
    let e = engine(config(512, 8, 16));
    let (outs, [prefill, ..]) = run_n(&e, req(7), 3);
    assert!(e.stats().preemptions > 0, "{:?}", e.stats());
    // Recomputing a preempted child counts as prefill again.
    assert!(prefill > 70);
    for (i, o) in outs.iter().enumerate() {
        let alone = drain(engine(config(512, 8, 64)).submit(req(7 + i as u64)).unwrap());
        assert_eq!(o.tokens, alone.tokens, "child {i}");
        assert_eq!(o.logprobs, alone.logprobs, "child {i}");
    }
    assert_idle(&e);
}

/// `n` above `max_num_seqs` (2) runs as groups of 2, 2 and 1, one after
/// another: the first computes the prompt, the later ones only its partial
/// block (the full ones come from the prefix cache).
#[test]
fn an_n_above_max_num_seqs_runs_in_groups() {
    let p = prompt(70, 25);
    let alone = drain(engine(config(512, 8, 64)).submit(greedy(p.clone(), 10)).unwrap());
    let e = engine(config(512, 2, 64));
    let (outs, [prefill, copied, _]) = run_n(&e, greedy(p, 10), 5);
    assert_eq!(outs.len(), 5);
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(o.tokens, alone.tokens, "child {i}");
    }
    assert_eq!(prefill, 70 + 6 + 6);
    assert_eq!(copied, 2);
    assert_idle(&e);
}

/// Cancelling one child frees only its references; the others go on.
#[test]
fn cancelling_a_child_leaves_the_others() {
    let p = prompt(50, 24);
    let alone = drain(engine(config(512, 8, 64)).submit(greedy(p.clone(), 60)).unwrap());
    let e = engine(config(512, 8, 64));
    let mut streams = e.submit_n(greedy(p, 60), 3).unwrap();
    let mut middle = streams.remove(1);
    let mut got = 0;
    while let Some(ev) = middle.blocking_recv() {
        if let Event::Token(_) = ev {
            got += 1;
            if got == 3 {
                break;
            }
        }
    }
    middle.cancel();
    for s in streams {
        assert_eq!(drain(s).tokens, alone.tokens);
    }
    wait_idle(&e);
    assert_idle(&e);
}
