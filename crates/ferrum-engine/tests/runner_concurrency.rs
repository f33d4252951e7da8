//! 16 concurrent greedy requests of mixed prompt lengths produce exactly
//! what each produces alone, under chunked prefill and KV pressure
//! (preemption); afterwards every block is free or cached and the
//! scheduler's invariants hold.

mod runner_util;

use runner_util::*;

fn requests() -> Vec<(Vec<u32>, usize)> {
    let lens = [1usize, 5, 17, 40, 3, 90, 16, 33, 120, 8, 64, 2, 150, 31, 15, 70];
    lens.iter().enumerate().map(|(i, &l)| (prompt(l, i as u32), 6 + (i * 5) % 23)).collect()
}

#[test]
fn concurrent_matches_alone() {
    let reqs = requests();
    // Alone: a fresh engine per request, no batching, no cache hits.
    let alone: Vec<_> = reqs
        .iter()
        .map(|(p, m)| {
            let e = engine(config(512, 1, 64));
            drain(e.submit(greedy(p.clone(), *m)).unwrap())
        })
        .collect();
    for a in &alone {
        assert_eq!(a.finish.reason, ferrum_engine::FinishReason::Length);
    }

    // Together: small step budget (chunked prefill) and a pool of 48 blocks
    // (768 tokens) for ~1,000 tokens of demand, so some requests are preempted.
    for (budget, n_blocks) in [(64, 48), (512, 256)] {
        let e = engine(config(budget, 16, n_blocks));
        let streams: Vec<_> = reqs.iter().map(|(p, m)| e.submit(greedy(p.clone(), *m)).unwrap()).collect();
        let handles: Vec<_> = streams.into_iter().map(|s| std::thread::spawn(move || drain(s))).collect();
        let together: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
            assert_eq!(a.tokens, t.tokens, "request {i} (budget {budget}, {n_blocks} blocks)");
            assert_eq!(a.logprobs, t.logprobs, "request {i} logprobs");
            assert_eq!(t.finish.completion_tokens, t.tokens.len());
        }
        wait_idle(&e);
        let s = e.stats();
        assert_eq!(s.kv_blocks_used, 0, "{s:?}");
        assert!(s.kv_blocks_cached <= s.kv_blocks_total);
        e.check_invariants().unwrap();
        if n_blocks == 48 {
            assert!(s.preemptions > 0, "the small pool should force preemption: {s:?}");
        }
        let total: usize = reqs.iter().map(|(p, _)| p.len()).sum();
        assert_eq!(s.prompt_tokens, total as u64);
    }
}
