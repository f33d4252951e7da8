//! Exact tests of block allocation order, growth, fork, copy-on-write, release
//! and error atomicity. Block size 4 keeps the arithmetic readable.

use ferrum_engine::{BlockCopy, BlockError, BlockManager, PrefixHit};

fn toks(range: std::ops::Range<u32>) -> Vec<u32> {
    range.collect()
}

fn ok(bm: &BlockManager) {
    if let Err(e) = bm.check_invariants() {
        panic!("invariants: {e}");
    }
}

#[test]
fn ids_are_handed_out_in_documented_order() {
    let mut bm = BlockManager::new(8, 4).unwrap();
    assert_eq!(bm.free_order(), vec![0, 1, 2, 3, 4, 5, 6, 7]);
    // 10 tokens -> 3 blocks from the free-list head.
    let hit = bm.allocate_prompt(1, &toks(0..10), 10).unwrap();
    assert_eq!(
        hit,
        PrefixHit {
            cached_tokens: 0,
            num_new_tokens: 10
        }
    );
    assert_eq!(bm.block_table(1).unwrap(), &[0, 1, 2]);
    ok(&bm);
    // Chunked: only 5 of 9 tokens get slots now.
    let hit = bm.allocate_prompt(2, &toks(100..109), 5).unwrap();
    assert_eq!(
        hit,
        PrefixHit {
            cached_tokens: 0,
            num_new_tokens: 5
        }
    );
    assert_eq!(bm.block_table(2).unwrap(), &[3, 4]);
    assert_eq!(bm.num_tokens(2), Some(5));
    // Growing: 10 -> 12 fits block 2; 12 -> 13 needs a new block.
    assert_eq!(bm.append_slots(1, 2).unwrap(), None);
    assert_eq!(bm.block_table(1).unwrap(), &[0, 1, 2]);
    assert_eq!(bm.append_slots(1, 1).unwrap(), None);
    assert_eq!(bm.block_table(1).unwrap(), &[0, 1, 2, 5]);
    assert_eq!(bm.blocks_needed_to_append(2, 4).unwrap(), 1);
    bm.append_slots(2, 4).unwrap();
    assert_eq!(bm.block_table(2).unwrap(), &[3, 4, 6]);
    assert_eq!(bm.num_free(), 1);
    ok(&bm);
    // Nothing was committed, so release sends blocks to the free-list tail,
    // last table block first.
    bm.free(1).unwrap();
    assert_eq!(bm.free_order(), vec![7, 5, 2, 1, 0]);
    bm.free(2).unwrap();
    assert_eq!(bm.free_order(), vec![7, 5, 2, 1, 0, 6, 4, 3]);
    assert_eq!(bm.num_free(), 8);
    assert_eq!(bm.num_cached(), 0);
    ok(&bm);
}

#[test]
fn out_of_blocks_changes_nothing() {
    let mut bm = BlockManager::new(3, 4).unwrap();
    bm.allocate_prompt(1, &toks(0..8), 8).unwrap();
    let err = bm.allocate_prompt(2, &toks(50..59), 9).unwrap_err();
    assert_eq!(
        err,
        BlockError::OutOfBlocks {
            needed: 3,
            available: 1
        }
    );
    assert!(!bm.has_seq(2));
    assert_eq!(
        bm.append_slots(1, 5).unwrap_err(),
        BlockError::OutOfBlocks {
            needed: 2,
            available: 1
        }
    );
    assert_eq!(bm.num_tokens(1), Some(8));
    assert_eq!(bm.block_table(1).unwrap(), &[0, 1]);
    assert_eq!(bm.free_order(), vec![2]);
    assert_eq!(bm.stats().queries, 8);
    ok(&bm);
}

#[test]
fn errors_name_the_sequence() {
    let mut bm = BlockManager::new(4, 4).unwrap();
    bm.allocate_prompt(1, &toks(0..3), 3).unwrap();
    assert_eq!(
        bm.allocate_prompt(1, &toks(0..3), 3).unwrap_err(),
        BlockError::SeqExists(1)
    );
    assert_eq!(
        bm.append_slots(9, 1).unwrap_err(),
        BlockError::UnknownSeq(9)
    );
    assert_eq!(bm.free(9).unwrap_err(), BlockError::UnknownSeq(9));
    assert_eq!(bm.fork(9, 10).unwrap_err(), BlockError::UnknownSeq(9));
    assert_eq!(bm.fork(1, 1).unwrap_err(), BlockError::SeqExists(1));
    assert_eq!(
        bm.commit_full_blocks(1, &toks(0..4)).unwrap_err(),
        BlockError::CommitBeyondSlots {
            seq: 1,
            tokens: 4,
            slots: 3
        }
    );
    let msg = BlockError::OutOfBlocks {
        needed: 3,
        available: 1,
    }
    .to_string();
    assert!(msg.contains('3') && msg.contains('1'), "{msg}");
    ok(&bm);
}

#[test]
fn fork_shares_blocks_and_copy_on_write_splits_the_partial_one() {
    let mut bm = BlockManager::new(8, 4).unwrap();
    let prompt = toks(0..6);
    bm.allocate_prompt(1, &prompt, 6).unwrap();
    assert_eq!(bm.commit_full_blocks(1, &prompt).unwrap(), 1);
    bm.fork(1, 2).unwrap();
    bm.fork(1, 3).unwrap();
    assert_eq!(bm.block_table(2).unwrap(), &[0, 1]);
    assert_eq!((bm.ref_count(0), bm.ref_count(1)), (Some(3), Some(3)));
    ok(&bm);
    // Child 2 writes position 6, inside the shared partial block 1: copy first.
    assert_eq!(
        bm.append_slots(2, 1).unwrap(),
        Some(BlockCopy { src: 1, dst: 2 })
    );
    assert_eq!(bm.block_table(2).unwrap(), &[0, 2]);
    assert_eq!((bm.ref_count(1), bm.ref_count(2)), (Some(2), Some(1)));
    // Explicit copy_on_write for child 3, then its append needs no copy.
    assert_eq!(
        bm.copy_on_write(3).unwrap(),
        Some(BlockCopy { src: 1, dst: 3 })
    );
    assert_eq!(bm.copy_on_write(3).unwrap(), None);
    assert_eq!(bm.append_slots(3, 3).unwrap(), None);
    assert_eq!(bm.block_table(3).unwrap(), &[0, 3, 4]);
    // The parent now owns block 1 alone: writes in place.
    assert_eq!(bm.ref_count(1), Some(1));
    assert_eq!(bm.append_slots(1, 1).unwrap(), None);
    assert_eq!(bm.block_table(1).unwrap(), &[0, 1]);
    assert_eq!(bm.ref_count(0), Some(3));
    ok(&bm);
    for s in [2, 1, 3] {
        bm.free(s).unwrap();
        ok(&bm);
    }
    // Block 0 was committed: cached, not free.
    assert_eq!(bm.eviction_order(), vec![0]);
    assert_eq!(bm.num_free(), 8);
}

#[test]
fn fork_at_a_block_boundary_needs_no_copy() {
    let mut bm = BlockManager::new(4, 4).unwrap();
    bm.allocate_prompt(1, &toks(0..8), 8).unwrap();
    bm.fork(1, 2).unwrap();
    assert_eq!(bm.blocks_needed_to_append(2, 1).unwrap(), 1);
    assert_eq!(bm.append_slots(2, 1).unwrap(), None);
    assert_eq!(bm.block_table(2).unwrap(), &[0, 1, 2]);
    assert_eq!(bm.copy_on_write(1).unwrap(), None);
    ok(&bm);
}

#[test]
fn copy_on_write_fails_cleanly_without_blocks() {
    let mut bm = BlockManager::new(2, 4).unwrap();
    bm.allocate_prompt(1, &toks(0..6), 6).unwrap();
    bm.fork(1, 2).unwrap();
    assert_eq!(
        bm.copy_on_write(2).unwrap_err(),
        BlockError::OutOfBlocks {
            needed: 1,
            available: 0
        }
    );
    assert_eq!(
        bm.append_slots(2, 1).unwrap_err(),
        BlockError::OutOfBlocks {
            needed: 1,
            available: 0
        }
    );
    assert_eq!(bm.block_table(2).unwrap(), &[0, 1]);
    bm.free(1).unwrap();
    // Now the child is the only owner: no copy.
    assert_eq!(bm.append_slots(2, 1).unwrap(), None);
    ok(&bm);
}
