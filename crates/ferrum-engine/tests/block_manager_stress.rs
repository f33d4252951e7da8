//! Randomised block-manager operations against a shadow model of what each
//! KV block holds. After every operation: `check_invariants` passes, and every
//! block of every table holds exactly that sequence's token prefix (so no
//! prefix hit, fork or copy-on-write ever exposes another sequence's KV).

use std::collections::HashMap;

use ferrum_engine::{BlockError, BlockManager};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// New sequence with a prompt drawn from a few shared stems.
    New {
        stem: u8,
        extra: Vec<u8>,
        chunk: u8,
    },
    Append {
        seq: u8,
        tokens: Vec<u8>,
    },
    Commit {
        seq: u8,
    },
    Fork {
        seq: u8,
    },
    Free {
        seq: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3, prop::collection::vec(0u8..3, 0..10), 1u8..20)
            .prop_map(|(stem, extra, chunk)| Op::New { stem, extra, chunk }),
        (any::<u8>(), prop::collection::vec(0u8..3, 1..6))
            .prop_map(|(seq, tokens)| Op::Append { seq, tokens }),
        any::<u8>().prop_map(|seq| Op::Commit { seq }),
        any::<u8>().prop_map(|seq| Op::Fork { seq }),
        any::<u8>().prop_map(|seq| Op::Free { seq }),
    ]
}

/// Weak hash: only the first token and the parent matter, so collisions abound.
fn weak_hash(parent: u64, tokens: &[u32]) -> u64 {
    parent.wrapping_mul(31) ^ u64::from(tokens.first().copied().unwrap_or(0) % 2)
}

struct Shadow {
    bm: BlockManager,
    bs: usize,
    /// Tokens with reserved (and, here, immediately computed) slots per sequence.
    seqs: HashMap<u64, Vec<u32>>,
    /// For each block: the token prefix whose KV it holds (up to its last slot).
    kv: HashMap<u32, Vec<u32>>,
    next_id: u64,
}

impl Shadow {
    fn pick(&self, k: u8) -> Option<u64> {
        let mut ids: Vec<u64> = self.seqs.keys().copied().collect();
        ids.sort_unstable();
        (!ids.is_empty()).then(|| ids[k as usize % ids.len()])
    }

    /// Writes KV for slots `from..to` of `seq`: every touched block now holds
    /// the sequence's prefix up to the block end (or `to`).
    fn write(&mut self, seq: u64, from: usize, to: usize) {
        let table = self.bm.block_table(seq).unwrap().to_vec();
        let toks = &self.seqs[&seq];
        let touched = table
            .iter()
            .enumerate()
            .take(to.div_ceil(self.bs))
            .skip(from / self.bs);
        for (i, &b) in touched {
            let end = ((i + 1) * self.bs).min(to);
            self.kv.insert(b, toks[..end].to_vec());
        }
    }

    fn check(&self) {
        if let Err(e) = self.bm.check_invariants() {
            panic!("invariants: {e}");
        }
        for (&seq, toks) in &self.seqs {
            let table = self.bm.block_table(seq).unwrap();
            assert_eq!(self.bm.num_tokens(seq), Some(toks.len()));
            for (i, b) in table.iter().enumerate() {
                let end = ((i + 1) * self.bs).min(toks.len());
                assert_eq!(
                    self.kv.get(b).map(|v| v.as_slice()),
                    Some(&toks[..end]),
                    "seq {seq} block {i} = {b}"
                );
            }
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::New { stem, extra, chunk } => {
                let mut prompt: Vec<u32> = (0..(8 + 4 * u32::from(stem)))
                    .map(|t| t + 100 * u32::from(stem))
                    .collect();
                prompt.extend(extra.iter().map(|&t| u32::from(t)));
                let seq = self.next_id;
                self.next_id += 1;
                let expect_cached = self.bm.cached_prefix_len(&prompt);
                match self.bm.allocate_prompt(seq, &prompt, chunk as usize) {
                    Ok(hit) => {
                        assert_eq!(hit.cached_tokens, expect_cached);
                        assert!(hit.cached_tokens < prompt.len());
                        let n = hit.cached_tokens + hit.num_new_tokens;
                        self.seqs.insert(seq, prompt[..n].to_vec());
                        // Hit blocks must already hold exactly this prefix.
                        let table = self.bm.block_table(seq).unwrap().to_vec();
                        for (i, b) in table.iter().take(hit.cached_tokens / self.bs).enumerate() {
                            assert_eq!(self.kv[b], prompt[..(i + 1) * self.bs], "false prefix hit");
                        }
                        self.write(seq, hit.cached_tokens, n);
                    }
                    Err(BlockError::OutOfBlocks { .. }) => assert!(!self.bm.has_seq(seq)),
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Append { seq, tokens } => {
                let Some(seq) = self.pick(seq) else { return };
                let before = self.bm.block_table(seq).unwrap().to_vec();
                match self.bm.append_slots(seq, tokens.len()) {
                    Ok(copy) => {
                        if let Some(c) = copy {
                            let src = self.kv[&c.src].clone();
                            self.kv.insert(c.dst, src);
                        }
                        let from = self.seqs[&seq].len();
                        self.seqs
                            .get_mut(&seq)
                            .unwrap()
                            .extend(tokens.iter().map(|&t| u32::from(t)));
                        self.write(seq, from, from + tokens.len());
                    }
                    Err(BlockError::OutOfBlocks { .. }) => {
                        assert_eq!(self.bm.block_table(seq).unwrap(), &before[..]);
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Commit { seq } => {
                let Some(seq) = self.pick(seq) else { return };
                let toks = self.seqs[&seq].clone();
                self.bm.commit_full_blocks(seq, &toks).unwrap();
            }
            Op::Fork { seq } => {
                let Some(parent) = self.pick(seq) else { return };
                let child = self.next_id;
                self.next_id += 1;
                self.bm.fork(parent, child).unwrap();
                let toks = self.seqs[&parent].clone();
                self.seqs.insert(child, toks);
            }
            Op::Free { seq } => {
                let Some(seq) = self.pick(seq) else { return };
                self.bm.free(seq).unwrap();
                self.seqs.remove(&seq);
            }
        }
        self.check();
    }
}

fn run(ops: Vec<Op>, weak: bool) {
    let (n_blocks, bs) = (24, 4);
    let bm = if weak {
        BlockManager::with_hash_fn(n_blocks, bs, weak_hash).unwrap()
    } else {
        BlockManager::new(n_blocks, bs).unwrap()
    };
    let mut s = Shadow {
        bm,
        bs,
        seqs: HashMap::new(),
        kv: HashMap::new(),
        next_id: 0,
    };
    for op in ops {
        s.apply(op);
    }
    let ids: Vec<u64> = s.seqs.keys().copied().collect();
    for id in ids {
        s.bm.free(id).unwrap();
        s.seqs.remove(&id);
        s.check();
    }
    // Zero leaks: every block is free or cached again.
    assert_eq!(s.bm.num_free(), n_blocks);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_ops_keep_invariants(ops in prop::collection::vec(op(), 1..120)) {
        run(ops, false);
    }

    #[test]
    fn random_ops_with_colliding_hashes(ops in prop::collection::vec(op(), 1..120)) {
        run(ops, true);
    }
}
