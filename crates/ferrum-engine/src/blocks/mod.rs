//! The KV block manager: the single owner of every KV-cache block.
//!
//! The KV pools (`[n_blocks, block_size, kv_heads, head_dim]` per layer) live on
//! the backend; this module only decides which block ids each sequence uses.
//!
//! Layout: a flat arena of `n_blocks` entries (`BlockMeta`, `Links`, and a
//! `[n_blocks, block_size]` store of token ids for registered blocks). Each
//! block is in exactly one state:
//! - **free**: ref count 0, no hash, in the free list;
//! - **cached**: ref count 0, registered (hashed, full), in the LRU list;
//!   its KV is kept so a later request with the same prefix can reuse it;
//! - **used**: ref count > 0 (one per sequence table holding it), in no list.
//!
//! Allocation order (documented, tests rely on it): the free list starts as
//! `0, 1, .., n_blocks-1`; a new block is the free-list head; released
//! unregistered blocks go to the free-list tail. Only when the free list is
//! empty is a cached block evicted: the LRU head, i.e. the one released
//! longest ago. `free(seq)` releases a table last block first, so within one
//! sequence the deepest blocks are evicted first (the prefix blocks, which
//! every hit needs, stay longest).
//!
//! Prefix reuse: a full block whose KV has been computed is committed with its
//! chained hash (`hash.rs`). A lookup walks the prompt block by block and
//! accepts a candidate only if its stored tokens equal the prompt's and its
//! parent is the block matched one step earlier (compared by id and
//! generation, the generation being bumped whenever a cached block is
//! evicted). Hash equality alone never produces a hit.

mod hash;
mod invariants;
mod list;
mod seq;

use std::collections::HashMap;

use thiserror::Error;

use hash::IdentityBuild;
pub use hash::{chained_hash, BlockHashFn, ROOT_HASH};
use list::{Links, List, NIL};

/// Index of a block in the KV pools.
pub type BlockId = u32;
/// Identifies one sequence's block table (a request, or one of its `n` forks).
pub type SeqId = u64;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BlockError {
    #[error("out of KV blocks: need {needed} but only {available} are free or evictable")]
    OutOfBlocks { needed: usize, available: usize },
    #[error("invalid KV block pool: {n_blocks} blocks of {block_size} tokens (need 1..={max_blocks} blocks of 1..={max_block_size} tokens)")]
    InvalidPool {
        n_blocks: usize,
        block_size: usize,
        max_blocks: usize,
        max_block_size: usize,
    },
    #[error("sequence {0} already has a block table")]
    SeqExists(SeqId),
    #[error("unknown sequence {0}")]
    UnknownSeq(SeqId),
    #[error("sequence {seq}: cannot commit {tokens} tokens, only {slots} slots are allocated")]
    CommitBeyondSlots {
        seq: SeqId,
        tokens: usize,
        slots: usize,
    },
    #[error(
        "sequence {seq}: block {block} at table index {index} is registered with other tokens"
    )]
    CommitMismatch {
        seq: SeqId,
        block: BlockId,
        index: usize,
    },
}

/// A KV block copy the runner must perform (all layers, K and V) before the
/// forward pass that writes into `dst`. Produced by copy-on-write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockCopy {
    pub src: BlockId,
    pub dst: BlockId,
}

/// Result of `allocate_prompt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixHit {
    /// Leading tokens whose KV was found in the cache (a multiple of the block
    /// size, at most `len - 1` so the model always computes the last token).
    pub cached_tokens: usize,
    /// Slots allocated for tokens to compute now (`cached_tokens..+this`).
    pub num_new_tokens: usize,
}

/// Prefix-cache counters, in tokens, since the manager was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    /// Prompt tokens looked up by successful `allocate_prompt` calls.
    pub queries: u64,
    /// Of those, tokens served from cached blocks.
    pub hits: u64,
    /// Cached blocks evicted to make room.
    pub evictions: u64,
}

/// Per-block bookkeeping.
#[derive(Clone, Debug)]
struct BlockMeta {
    ref_count: u32,
    /// `Some` iff registered: full, KV computed, tokens stored, in the index.
    hash: Option<u64>,
    /// Chained hash of the parent block (`ROOT_HASH` for a first block).
    parent_hash: u64,
    /// Parent block as (id, generation) at registration; `None` for a first block.
    parent: Option<(BlockId, u64)>,
    /// Bumped every time a registered block is evicted and its id reused.
    generation: u64,
    /// Next block in the same hash bucket (`NIL` ends the chain).
    bucket_next: u32,
}

/// One sequence's view: its block table and how much of it is committed.
#[derive(Clone, Debug)]
struct SeqBlocks {
    /// Block ids in token order; covers `num_tokens` slots.
    table: Vec<BlockId>,
    /// Token positions with a reserved KV slot.
    num_tokens: usize,
    /// Leading table blocks that are registered.
    num_committed: usize,
    /// Chained hash of block `num_committed - 1` (`ROOT_HASH` if none).
    last_hash: u64,
}

pub struct BlockManager {
    block_size: usize,
    meta: Vec<BlockMeta>,
    links: Vec<Links>,
    /// `[n_blocks, block_size]` token ids of registered blocks.
    tokens: Vec<u32>,
    free: List,
    cached: List,
    /// Hash -> first block of its bucket chain.
    index: HashMap<u64, BlockId, IdentityBuild>,
    seqs: HashMap<SeqId, SeqBlocks>,
    hash_fn: BlockHashFn,
    stats: PrefixCacheStats,
}

impl std::fmt::Debug for BlockManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockManager")
            .field("n_blocks", &self.meta.len())
            .field("block_size", &self.block_size)
            .field("free", &self.free.len())
            .field("cached", &self.cached.len())
            .field("seqs", &self.seqs.len())
            .finish()
    }
}

impl BlockManager {
    /// Largest pool: ids are `u32` and `u32::MAX` is the list terminator.
    pub const MAX_BLOCKS: usize = (u32::MAX - 1) as usize;
    /// Largest block: keeps the per-block token store small next to the KV.
    pub const MAX_BLOCK_SIZE: usize = 4096;

    pub fn new(n_blocks: usize, block_size: usize) -> Result<Self, BlockError> {
        Self::with_hash_fn(n_blocks, block_size, chained_hash)
    }

    /// Like `new` with a custom chained hash (tests force collisions with it).
    pub fn with_hash_fn(
        n_blocks: usize,
        block_size: usize,
        hash_fn: BlockHashFn,
    ) -> Result<Self, BlockError> {
        let bad = BlockError::InvalidPool {
            n_blocks,
            block_size,
            max_blocks: Self::MAX_BLOCKS,
            max_block_size: Self::MAX_BLOCK_SIZE,
        };
        if n_blocks == 0
            || n_blocks > Self::MAX_BLOCKS
            || block_size == 0
            || block_size > Self::MAX_BLOCK_SIZE
        {
            return Err(bad);
        }
        let n_tokens = n_blocks.checked_mul(block_size).ok_or(bad)?;
        let meta = BlockMeta {
            ref_count: 0,
            hash: None,
            parent_hash: ROOT_HASH,
            parent: None,
            generation: 0,
            bucket_next: NIL,
        };
        let mut links = vec![Links::UNLINKED; n_blocks];
        let mut free = List::new();
        for id in 0..n_blocks as u32 {
            free.push_back(&mut links, id);
        }
        Ok(BlockManager {
            block_size,
            meta: vec![meta; n_blocks],
            links,
            tokens: vec![0; n_tokens],
            free,
            cached: List::new(),
            index: HashMap::default(),
            seqs: HashMap::new(),
            hash_fn,
            stats: PrefixCacheStats::default(),
        })
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.meta.len()
    }

    /// Blocks that can be handed out now: free plus evictable cached ones.
    pub fn num_free(&self) -> usize {
        self.free.len() + self.cached.len()
    }

    /// Unreferenced registered blocks kept for prefix reuse (evictable).
    pub fn num_cached(&self) -> usize {
        self.cached.len()
    }

    /// Blocks needed to hold `n_tokens` slots.
    pub fn blocks_for(&self, n_tokens: usize) -> usize {
        n_tokens.div_ceil(self.block_size)
    }

    pub fn stats(&self) -> PrefixCacheStats {
        self.stats
    }

    pub fn has_seq(&self, seq: SeqId) -> bool {
        self.seqs.contains_key(&seq)
    }

    pub fn num_seqs(&self) -> usize {
        self.seqs.len()
    }

    /// The sequence's block table (token `p` lives in block `table[p / block_size]`).
    pub fn block_table(&self, seq: SeqId) -> Option<&[BlockId]> {
        self.seqs.get(&seq).map(|s| s.table.as_slice())
    }

    /// Token slots reserved for the sequence.
    pub fn num_tokens(&self, seq: SeqId) -> Option<usize> {
        self.seqs.get(&seq).map(|s| s.num_tokens)
    }

    /// Reference count of a block (0 for free or cached; `None` if out of range).
    pub fn ref_count(&self, block: BlockId) -> Option<u32> {
        self.meta.get(block as usize).map(|m| m.ref_count)
    }

    /// Whether the block is registered for prefix reuse (used or cached).
    pub fn is_registered(&self, block: BlockId) -> bool {
        self.meta
            .get(block as usize)
            .is_some_and(|m| m.hash.is_some())
    }

    /// Cached (evictable) blocks in eviction order, next victim first.
    pub fn eviction_order(&self) -> Vec<BlockId> {
        self.cached.walk(&self.links).unwrap_or_default()
    }

    /// Free (unregistered) blocks in allocation order.
    pub fn free_order(&self) -> Vec<BlockId> {
        self.free.walk(&self.links).unwrap_or_default()
    }

    /// Drops every unreferenced cached block (e.g. after a weight reload).
    /// Returns how many were dropped.
    pub fn reset_prefix_cache(&mut self) -> usize {
        let mut n = 0;
        while let Some(b) = self.cached.pop_front(&mut self.links) {
            self.unregister(b);
            self.free.push_back(&mut self.links, b);
            n += 1;
        }
        n
    }

    fn block_tokens(&self, b: BlockId) -> &[u32] {
        let s = b as usize * self.block_size;
        &self.tokens[s..s + self.block_size]
    }

    /// Registered block with exactly this parent and these tokens, if any.
    fn find_cached(
        &self,
        hash: u64,
        parent: Option<(BlockId, u64)>,
        tokens: &[u32],
    ) -> Option<BlockId> {
        let mut cur = *self.index.get(&hash)?;
        let mut steps = 0;
        while cur != NIL && steps <= self.meta.len() {
            let m = &self.meta[cur as usize];
            if m.hash == Some(hash) && m.parent == parent && self.block_tokens(cur) == tokens {
                return Some(cur);
            }
            cur = m.bucket_next;
            steps += 1;
        }
        None
    }

    /// Longest verified cached prefix of `tokens`, in whole blocks, leaving at
    /// least the last token uncached. Returns the blocks and the last hash.
    fn match_prefix(&self, tokens: &[u32]) -> (Vec<BlockId>, u64) {
        let bs = self.block_size;
        let max_blocks = tokens.len().saturating_sub(1) / bs;
        let mut blocks = Vec::new();
        let mut parent = None;
        let mut parent_hash = ROOT_HASH;
        for chunk in tokens.chunks_exact(bs).take(max_blocks) {
            let h = (self.hash_fn)(parent_hash, chunk);
            let Some(b) = self.find_cached(h, parent, chunk) else {
                break;
            };
            blocks.push(b);
            parent = Some((b, self.meta[b as usize].generation));
            parent_hash = h;
        }
        (blocks, parent_hash)
    }

    /// Tokens of `tokens` a new sequence would get from the cache now.
    pub fn cached_prefix_len(&self, tokens: &[u32]) -> usize {
        self.match_prefix(tokens).0.len() * self.block_size
    }

    /// Takes one reference on `b`, pulling it off the LRU list if it was cached.
    fn incref(&mut self, b: BlockId) {
        let m = &mut self.meta[b as usize];
        if m.ref_count == 0 && m.hash.is_some() {
            self.cached.remove(&mut self.links, b);
        }
        m.ref_count += 1;
    }

    /// Drops one reference; at zero the block becomes cached (registered) or free.
    fn release(&mut self, b: BlockId) {
        let m = &mut self.meta[b as usize];
        if m.ref_count == 0 {
            return; // double release: left for check_invariants to report
        }
        m.ref_count -= 1;
        if m.ref_count == 0 {
            if m.hash.is_some() {
                self.cached.push_back(&mut self.links, b);
            } else {
                self.free.push_back(&mut self.links, b);
            }
        }
    }

    /// Hands out one block (ref count 1): the free-list head, else the LRU
    /// cached block, which is evicted. Callers check `num_free()` first.
    fn take_block(&mut self) -> Result<BlockId, BlockError> {
        let b = match self.free.pop_front(&mut self.links) {
            Some(b) => b,
            None => {
                let b = self
                    .cached
                    .pop_front(&mut self.links)
                    .ok_or(BlockError::OutOfBlocks {
                        needed: 1,
                        available: 0,
                    })?;
                self.unregister(b);
                self.stats.evictions += 1;
                b
            }
        };
        self.meta[b as usize].ref_count = 1;
        Ok(b)
    }

    /// Removes a registered block from the hash index and forgets its content.
    fn unregister(&mut self, b: BlockId) {
        let Some(h) = self.meta[b as usize].hash else {
            return;
        };
        let next = self.meta[b as usize].bucket_next;
        if self.index.get(&h) == Some(&b) {
            if next == NIL {
                self.index.remove(&h);
            } else {
                self.index.insert(h, next);
            }
        } else if let Some(&head) = self.index.get(&h) {
            let mut cur = head;
            while cur != NIL {
                let after = self.meta[cur as usize].bucket_next;
                if after == b {
                    self.meta[cur as usize].bucket_next = next;
                    break;
                }
                cur = after;
            }
        }
        let m = &mut self.meta[b as usize];
        m.hash = None;
        m.parent = None;
        m.parent_hash = ROOT_HASH;
        m.bucket_next = NIL;
        m.generation += 1;
    }

    /// Registers the full block `b` with its content so later lookups find it.
    fn register(
        &mut self,
        b: BlockId,
        hash: u64,
        parent_hash: u64,
        parent: Option<(BlockId, u64)>,
        tokens: &[u32],
    ) {
        let s = b as usize * self.block_size;
        self.tokens[s..s + self.block_size].copy_from_slice(tokens);
        let head = self.index.insert(hash, b).unwrap_or(NIL);
        let m = &mut self.meta[b as usize];
        m.hash = Some(hash);
        m.parent_hash = parent_hash;
        m.parent = parent;
        m.bucket_next = head;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_pools() {
        assert!(matches!(
            BlockManager::new(0, 16),
            Err(BlockError::InvalidPool { .. })
        ));
        assert!(matches!(
            BlockManager::new(4, 0),
            Err(BlockError::InvalidPool { .. })
        ));
        assert!(matches!(
            BlockManager::new(1, 1 << 40),
            Err(BlockError::InvalidPool { .. })
        ));
        assert!(matches!(
            BlockManager::new(usize::MAX, 16),
            Err(BlockError::InvalidPool { .. })
        ));
    }

    #[test]
    fn unregister_from_middle_of_bucket() {
        fn same(_: u64, _: &[u32]) -> u64 {
            7
        }
        let mut bm = BlockManager::with_hash_fn(3, 2, same).unwrap();
        for (b, toks) in [(0u32, [1u32, 1]), (1, [2, 2]), (2, [3, 3])] {
            bm.register(b, 7, ROOT_HASH, None, &toks);
        }
        // Bucket chain is 2 -> 1 -> 0; drop the middle one.
        bm.unregister(1);
        assert_eq!(bm.find_cached(7, None, &[1, 1]), Some(0));
        assert_eq!(bm.find_cached(7, None, &[2, 2]), None);
        assert_eq!(bm.find_cached(7, None, &[3, 3]), Some(2));
        assert_eq!(bm.meta[1].generation, 1);
    }

    #[test]
    fn a_child_of_an_evicted_parent_is_not_a_hit() {
        fn same(_: u64, _: &[u32]) -> u64 {
            7
        }
        let mut bm = BlockManager::with_hash_fn(3, 2, same).unwrap();
        // Block 0 = [1,1] (first block), block 1 = [5,5] under block 0.
        bm.register(0, 7, ROOT_HASH, None, &[1, 1]);
        bm.register(1, 7, 7, Some((0, 0)), &[5, 5]);
        assert_eq!(bm.match_prefix(&[1, 1, 5, 5, 0]).0, vec![0, 1]);
        // Block 0 is evicted and reused for other content [2,2]: block 1 still
        // names (0, gen 0) as parent and must not match under the new block 0.
        bm.unregister(0);
        bm.register(0, 7, ROOT_HASH, None, &[2, 2]);
        assert_eq!(bm.match_prefix(&[2, 2, 5, 5, 0]).0, vec![0]);
        assert_eq!(bm.match_prefix(&[1, 1, 5, 5, 0]).0, Vec::<BlockId>::new());
    }
}
