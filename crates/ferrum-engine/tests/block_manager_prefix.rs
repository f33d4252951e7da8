//! Prefix caching: exact hit blocks and counters, the last-token cap, token
//! verification under forced hash collisions, duplicate commits and LRU
//! eviction order. Block size 4.

use ferrum_engine::blocks::{chained_hash, ROOT_HASH};
use ferrum_engine::{BlockManager, PrefixCacheStats, PrefixHit};

fn ok(bm: &BlockManager) {
    if let Err(e) = bm.check_invariants() {
        panic!("invariants: {e}");
    }
}

/// Every block hashes alike: any hit must come from token verification.
fn colliding(_parent: u64, _tokens: &[u32]) -> u64 {
    42
}

/// Allocates a whole prompt, "computes" it and commits its full blocks.
fn run_prompt(bm: &mut BlockManager, seq: u64, prompt: &[u32]) -> PrefixHit {
    let hit = bm.allocate_prompt(seq, prompt, prompt.len()).unwrap();
    bm.commit_full_blocks(seq, prompt).unwrap();
    ok(bm);
    hit
}

#[test]
fn prefix_hit_reuses_the_exact_blocks_and_counts_tokens() {
    let mut bm = BlockManager::new(10, 4).unwrap();
    let a: Vec<u32> = (0..10).collect();
    assert_eq!(run_prompt(&mut bm, 1, &a).cached_tokens, 0);
    assert_eq!(bm.block_table(1).unwrap(), &[0, 1, 2]);
    assert_eq!(bm.num_committed_blocks(1), Some(2));
    assert!(bm.is_registered(0) && bm.is_registered(1) && !bm.is_registered(2));
    // Same first 8 tokens, then different ones: blocks 0 and 1 are shared.
    let b: Vec<u32> = (0..8).chain([77, 78, 79]).collect();
    let hit = run_prompt(&mut bm, 2, &b);
    assert_eq!(
        hit,
        PrefixHit {
            cached_tokens: 8,
            num_new_tokens: 3
        }
    );
    assert_eq!(bm.block_table(2).unwrap(), &[0, 1, 3]);
    assert_eq!((bm.ref_count(0), bm.ref_count(1)), (Some(2), Some(2)));
    assert_eq!(
        bm.stats(),
        PrefixCacheStats {
            queries: 21,
            hits: 8,
            evictions: 0
        }
    );
    // Only the first block matches here.
    let c: Vec<u32> = (0..4).chain([9, 9, 9, 9, 9]).collect();
    assert_eq!(run_prompt(&mut bm, 3, &c).cached_tokens, 4);
    assert_eq!(bm.block_table(3).unwrap(), &[0, 4, 5]);
    // The hit survives the original owner's release (blocks become cached).
    bm.free(1).unwrap();
    bm.free(2).unwrap();
    bm.free(3).unwrap();
    ok(&bm);
    assert_eq!(bm.eviction_order(), vec![1, 4, 0]);
    let hit = run_prompt(&mut bm, 4, &a);
    assert_eq!(hit.cached_tokens, 8);
    assert_eq!(&bm.block_table(4).unwrap()[..2], &[0, 1]);
    assert_eq!(bm.eviction_order(), vec![4]);
    assert_eq!(bm.cached_prefix_len(&b), 8);
}

#[test]
fn the_block_holding_the_last_prompt_token_is_never_a_hit() {
    let mut bm = BlockManager::new(8, 4).unwrap();
    let p: Vec<u32> = (0..8).collect();
    run_prompt(&mut bm, 1, &p);
    assert_eq!(bm.num_committed_blocks(1), Some(2));
    bm.free(1).unwrap();
    // 8 tokens = 2 full cached blocks, but the hit stops at 4: token 7 must
    // be computed to get logits.
    let hit = bm.allocate_prompt(2, &p, 8).unwrap();
    assert_eq!(
        hit,
        PrefixHit {
            cached_tokens: 4,
            num_new_tokens: 4
        }
    );
    assert_eq!(bm.block_table(2).unwrap(), &[0, 2]);
    // One more token makes both blocks usable.
    let p9: Vec<u32> = (0..9).collect();
    assert_eq!(bm.allocate_prompt(3, &p9, 9).unwrap().cached_tokens, 8);
    assert_eq!(bm.block_table(3).unwrap(), &[0, 1, 3]);
    ok(&bm);
}

#[test]
fn forced_hash_collisions_never_give_a_false_hit() {
    let mut bm = BlockManager::with_hash_fn(12, 4, colliding).unwrap();
    let a = [1, 1, 1, 1, 5, 5, 5, 5, 0];
    let b = [2, 2, 2, 2, 6, 6, 6, 6, 0];
    run_prompt(&mut bm, 1, &a);
    // Same hashes everywhere, other tokens: no hit.
    assert_eq!(run_prompt(&mut bm, 2, &b).cached_tokens, 0);
    // First block of b, second block of a: the second block's tokens are
    // cached (under a's first block) but its parent differs, so only 4 hit.
    let c = [2, 2, 2, 2, 5, 5, 5, 5, 0];
    assert_eq!(run_prompt(&mut bm, 3, &c).cached_tokens, 4);
    assert_eq!(bm.block_table(3).unwrap()[0], bm.block_table(2).unwrap()[0]);
    assert_ne!(bm.block_table(3).unwrap()[1], bm.block_table(1).unwrap()[1]);
    // A genuine repeat still hits through the collision chain.
    assert_eq!(run_prompt(&mut bm, 4, &a).cached_tokens, 8);
    assert_eq!(
        &bm.block_table(4).unwrap()[..2],
        &bm.block_table(1).unwrap()[..2]
    );
    for s in 1..=4 {
        bm.free(s).unwrap();
        ok(&bm);
    }
}

#[test]
fn chained_hash_depends_on_the_parent() {
    let x = [5, 5, 5, 5];
    let h1 = chained_hash(chained_hash(ROOT_HASH, &[1, 1, 1, 1]), &x);
    let h2 = chained_hash(chained_hash(ROOT_HASH, &[2, 2, 2, 2]), &x);
    assert_ne!(h1, h2);
}

#[test]
fn duplicate_commit_switches_to_the_cached_block() {
    let mut bm = BlockManager::new(8, 4).unwrap();
    let p: Vec<u32> = (0..9).collect();
    // Both miss (nothing committed yet), so both compute the same blocks.
    bm.allocate_prompt(1, &p, 9).unwrap();
    bm.allocate_prompt(2, &p, 9).unwrap();
    assert_eq!(bm.block_table(2).unwrap(), &[3, 4, 5]);
    bm.commit_full_blocks(1, &p).unwrap();
    bm.commit_full_blocks(2, &p).unwrap();
    // Seq 2 now shares 0 and 1; its own copies went back to the free list.
    assert_eq!(bm.block_table(2).unwrap(), &[0, 1, 5]);
    assert_eq!((bm.ref_count(0), bm.ref_count(1)), (Some(2), Some(2)));
    assert_eq!(bm.free_order(), vec![6, 7, 3, 4]);
    // Committing again is a no-op.
    assert_eq!(bm.commit_full_blocks(2, &p).unwrap(), 0);
    ok(&bm);
}

#[test]
fn cached_blocks_are_evicted_least_recently_released_first() {
    let mut bm = BlockManager::new(6, 4).unwrap();
    let a: Vec<u32> = (0..9).collect();
    let b: Vec<u32> = (100..109).collect();
    run_prompt(&mut bm, 1, &a); // blocks 0 1 | 2
    run_prompt(&mut bm, 2, &b); // blocks 3 4 | 5
    bm.free(1).unwrap();
    // Released last-first: partial block 2 is free; 1 then 0 cached.
    assert_eq!(bm.free_order(), vec![2]);
    assert_eq!(bm.eviction_order(), vec![1, 0]);
    bm.free(2).unwrap();
    assert_eq!(bm.free_order(), vec![2, 5]);
    assert_eq!(bm.eviction_order(), vec![1, 0, 4, 3]);
    assert_eq!(bm.num_free(), 6);
    // A hit on a's first block takes it off the LRU list...
    let a2: Vec<u32> = (0..4).chain([50, 51]).collect();
    assert_eq!(run_prompt(&mut bm, 3, &a2).cached_tokens, 4);
    assert_eq!(bm.block_table(3).unwrap(), &[0, 2]);
    assert_eq!(bm.eviction_order(), vec![1, 4, 3]);
    // ...and its release puts it at the tail (most recently used).
    bm.free(3).unwrap();
    assert_eq!(bm.eviction_order(), vec![1, 4, 3, 0]);
    assert_eq!(bm.free_order(), vec![5, 2]);
    // 6 blocks of new tokens: free blocks first, then evictions in LRU order.
    let c: Vec<u32> = (200..224).collect();
    bm.allocate_prompt(4, &c, 24).unwrap();
    assert_eq!(bm.block_table(4).unwrap(), &[5, 2, 1, 4, 3, 0]);
    assert_eq!(bm.stats().evictions, 4);
    assert_eq!(bm.num_cached(), 0);
    ok(&bm);
    // Evicted content is gone.
    bm.free(4).unwrap();
    assert_eq!(bm.cached_prefix_len(&a), 0);
    assert_eq!(bm.cached_prefix_len(&b), 0);
    ok(&bm);
}

#[test]
fn evicting_a_middle_hit_candidate_is_accounted_for() {
    // A hit on a cached block removes it from the evictable pool, so the
    // admission check must not count it as free twice.
    let mut bm = BlockManager::new(3, 4).unwrap();
    let a: Vec<u32> = (0..9).collect();
    run_prompt(&mut bm, 1, &a);
    bm.free(1).unwrap();
    assert_eq!(bm.num_free(), 3);
    // 8 cached + 5 new tokens needs 2 new blocks, but only 1 is not a hit.
    let longer: Vec<u32> = (0..13).collect();
    let err = bm.allocate_prompt(2, &longer, 13).unwrap_err();
    assert_eq!(
        err,
        ferrum_engine::BlockError::OutOfBlocks {
            needed: 2,
            available: 1
        }
    );
    assert_eq!(bm.eviction_order(), vec![1, 0]);
    let hit = bm.allocate_prompt(2, &longer, 4).unwrap();
    assert_eq!(
        hit,
        PrefixHit {
            cached_tokens: 8,
            num_new_tokens: 4
        }
    );
    assert_eq!(bm.block_table(2).unwrap(), &[0, 1, 2]);
    ok(&bm);
}

#[test]
fn reset_prefix_cache_drops_only_unreferenced_blocks() {
    let mut bm = BlockManager::new(6, 4).unwrap();
    let a: Vec<u32> = (0..9).collect();
    run_prompt(&mut bm, 1, &a);
    run_prompt(&mut bm, 2, &a);
    bm.free(1).unwrap();
    assert_eq!(bm.reset_prefix_cache(), 0); // seq 2 still holds 0 and 1
    bm.free(2).unwrap();
    assert_eq!(bm.reset_prefix_cache(), 2);
    assert_eq!(bm.cached_prefix_len(&a), 0);
    assert_eq!(bm.num_free(), 6);
    ok(&bm);
}

#[test]
fn fork_sibling_commit_after_the_canonical_parent_was_evicted() {
    let mut bm = BlockManager::new(6, 4).unwrap();
    let x: Vec<u32> = (0..4).chain([9]).collect();
    let y: Vec<u32> = (0..8).chain([5]).collect();
    bm.allocate_prompt(1, &x, 5).unwrap(); // [0, 1]
    bm.allocate_prompt(2, &y, 9).unwrap(); // [2, 3, 4]: no hit yet
    bm.fork(2, 3).unwrap();
    bm.commit_full_blocks(1, &x).unwrap(); // block 0 registered
                                           // Seq 2 switches its first block to the cached duplicate 0 and registers
                                           // block 3 under it; seq 3 still holds blocks 2, 3, 4 uncommitted.
    bm.commit_full_blocks(2, &y).unwrap();
    assert_eq!(bm.block_table(2).unwrap(), &[0, 3, 4]);
    bm.free(2).unwrap();
    bm.free(1).unwrap();
    assert_eq!(bm.eviction_order(), vec![0]);
    // Evict block 0.
    bm.allocate_prompt(4, &[50; 12], 12).unwrap();
    assert_eq!(bm.block_table(4).unwrap(), &[5, 1, 0]);
    ok(&bm);
    // Seq 3 commits: its block 2 is registered as the first block, and block
    // 3 (registered under the evicted block 0) is re-chained under block 2.
    assert_eq!(bm.commit_full_blocks(3, &y).unwrap(), 2);
    assert_eq!(bm.block_table(3).unwrap(), &[2, 3, 4]);
    ok(&bm);
    let z: Vec<u32> = (0..8).chain([7]).collect();
    assert_eq!(bm.cached_prefix_len(&z), 8);
    let hit = bm.allocate_prompt(5, &z, 0).unwrap();
    assert_eq!(hit.cached_tokens, 8);
    assert_eq!(bm.block_table(5).unwrap(), &[2, 3]);
    ok(&bm);
}
