//! Per-sequence operations of the block manager: prompt allocation with
//! prefix reuse, growing a table, committing full blocks, fork and
//! copy-on-write, and release.
//!
//! Every fallible operation checks its block needs before touching state, so an
//! `Err` leaves the manager exactly as it was.

use super::{BlockCopy, BlockError, BlockManager, PrefixHit, SeqBlocks, SeqId, ROOT_HASH};

impl BlockManager {
    /// Creates the block table of a new sequence whose known tokens are
    /// `tokens` (prompt, or prompt + output when recomputing after preemption).
    ///
    /// Reuses the longest verified cached prefix (whole blocks, never the block
    /// holding the last token in full: the model must compute at least one
    /// token to produce logits), then allocates slots for up to
    /// `max_new_tokens` of the remaining tokens. `max_new_tokens == 0` only
    /// takes the cached blocks. All or nothing: on `OutOfBlocks` nothing changed.
    pub fn allocate_prompt(
        &mut self,
        seq: SeqId,
        tokens: &[u32],
        max_new_tokens: usize,
    ) -> Result<PrefixHit, BlockError> {
        if self.seqs.contains_key(&seq) {
            return Err(BlockError::SeqExists(seq));
        }
        let (hits, last_hash) = self.match_prefix(tokens);
        let cached_tokens = hits.len() * self.block_size;
        let num_new_tokens = max_new_tokens.min(tokens.len().saturating_sub(cached_tokens));
        let needed = self.blocks_for(cached_tokens + num_new_tokens) - hits.len();
        // Hits that are cached (unreferenced) stop being evictable once taken.
        let evictable_hits = hits
            .iter()
            .filter(|&&b| self.meta[b as usize].ref_count == 0)
            .count();
        let available = self.num_free() - evictable_hits;
        if needed > available {
            return Err(BlockError::OutOfBlocks { needed, available });
        }
        let mut table = Vec::with_capacity(hits.len() + needed);
        for &b in &hits {
            self.incref(b);
            table.push(b);
        }
        for _ in 0..needed {
            table.push(self.take_block()?);
        }
        self.stats.queries += tokens.len() as u64;
        self.stats.hits += cached_tokens as u64;
        self.seqs.insert(
            seq,
            SeqBlocks {
                table,
                num_tokens: cached_tokens + num_new_tokens,
                num_committed: hits.len(),
                last_hash,
            },
        );
        Ok(PrefixHit {
            cached_tokens,
            num_new_tokens,
        })
    }

    /// Blocks `append_slots(seq, n)` would take now (including a copy-on-write).
    pub fn blocks_needed_to_append(&self, seq: SeqId, n: usize) -> Result<usize, BlockError> {
        let s = self.seqs.get(&seq).ok_or(BlockError::UnknownSeq(seq))?;
        let grow = self.blocks_for(s.num_tokens + n) - s.table.len();
        Ok(grow + usize::from(n > 0 && self.needs_cow(s)))
    }

    /// Reserves slots for `n` more tokens of `seq`, growing its table. If the
    /// partially filled last block is shared (after `fork`), it is first
    /// copied (copy-on-write) and the copy is returned for the runner to
    /// perform. All or nothing: on `OutOfBlocks` nothing changed.
    pub fn append_slots(&mut self, seq: SeqId, n: usize) -> Result<Option<BlockCopy>, BlockError> {
        let needed = self.blocks_needed_to_append(seq, n)?;
        if needed > self.num_free() {
            return Err(BlockError::OutOfBlocks {
                needed,
                available: self.num_free(),
            });
        }
        if n == 0 {
            return Ok(None);
        }
        let copy = self.copy_on_write(seq)?;
        let mut s = self.seqs.remove(&seq).ok_or(BlockError::UnknownSeq(seq))?;
        let grow = self.blocks_for(s.num_tokens + n) - s.table.len();
        let mut result = Ok(copy);
        for _ in 0..grow {
            match self.take_block() {
                Ok(b) => s.table.push(b),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            s.num_tokens += n;
        }
        self.seqs.insert(seq, s);
        result
    }

    /// Whether the sequence's next write lands in a shared, partially filled block.
    fn needs_cow(&self, s: &SeqBlocks) -> bool {
        !s.num_tokens.is_multiple_of(self.block_size)
            && s.table
                .last()
                .is_some_and(|&b| self.meta[b as usize].ref_count > 1)
    }

    /// If the sequence's partially filled last block is shared, gives the
    /// sequence a private block and returns the copy the runner must perform
    /// (`src` keeps serving the other sharers). `None` when no copy is needed.
    pub fn copy_on_write(&mut self, seq: SeqId) -> Result<Option<BlockCopy>, BlockError> {
        let s = self.seqs.get(&seq).ok_or(BlockError::UnknownSeq(seq))?;
        if !self.needs_cow(s) {
            return Ok(None);
        }
        let last = s.table.len() - 1;
        let src = s.table[last];
        if self.num_free() == 0 {
            return Err(BlockError::OutOfBlocks {
                needed: 1,
                available: 0,
            });
        }
        let dst = self.take_block()?;
        // A partial block is never registered, so this is a plain decrement.
        self.release(src);
        if let Some(s) = self.seqs.get_mut(&seq) {
            s.table[last] = dst;
        }
        Ok(Some(BlockCopy { src, dst }))
    }

    /// Registers the sequence's blocks that became full, so later requests can
    /// reuse them. `tokens` are the sequence's tokens whose KV is computed
    /// (`tokens.len() <= num_tokens`); blocks already committed are skipped.
    /// If an identical block is already cached (two requests computed the same
    /// prefix at once), the sequence switches to that block and its own copy
    /// is released. Returns how many blocks were newly committed.
    pub fn commit_full_blocks(&mut self, seq: SeqId, tokens: &[u32]) -> Result<usize, BlockError> {
        let s = self.seqs.get(&seq).ok_or(BlockError::UnknownSeq(seq))?;
        if tokens.len() <= s.num_tokens && tokens.len() / self.block_size <= s.num_committed {
            return Ok(0); // the common decode step: no block became full
        }
        let mut s = self.seqs.remove(&seq).ok_or(BlockError::UnknownSeq(seq))?;
        let result = self.commit_inner(seq, &mut s, tokens);
        self.seqs.insert(seq, s);
        result
    }

    fn commit_inner(
        &mut self,
        seq: SeqId,
        s: &mut SeqBlocks,
        tokens: &[u32],
    ) -> Result<usize, BlockError> {
        if tokens.len() > s.num_tokens {
            return Err(BlockError::CommitBeyondSlots {
                seq,
                tokens: tokens.len(),
                slots: s.num_tokens,
            });
        }
        let bs = self.block_size;
        let full = tokens.len() / bs;
        let start = s.num_committed;
        for i in start..full {
            let chunk = &tokens[i * bs..(i + 1) * bs];
            let parent = match i {
                0 => None,
                _ => {
                    let p = s.table[i - 1];
                    Some((p, self.meta[p as usize].generation))
                }
            };
            let h = (self.hash_fn)(s.last_hash, chunk);
            let own = s.table[i];
            let found = self.find_cached(h, parent, chunk);
            if self.meta[own as usize].hash.is_some() && found != Some(own) {
                // Shared through fork and committed by a sibling under another
                // parent: the sibling had switched to a cached duplicate of
                // our block i-1, which was evicted since (if it were live, our
                // own commit of block i-1 would have switched to it too). No
                // sequence can have `own` committed then (it would hold that
                // parent), so re-chaining it under our block i-1 is safe.
                if self.block_tokens(own) != chunk {
                    return Err(BlockError::CommitMismatch {
                        seq,
                        block: own,
                        index: i,
                    });
                }
                if let Some(existing) = found {
                    self.incref(existing);
                    self.release(own);
                    s.table[i] = existing;
                } else {
                    self.unregister(own);
                    self.register(own, h, s.last_hash, parent, chunk);
                }
            } else if self.meta[own as usize].hash.is_some() {
                // Committed by a fork sibling with the same chain: nothing to do.
            } else if let Some(existing) = found {
                self.incref(existing);
                self.release(own);
                s.table[i] = existing;
            } else {
                self.register(own, h, s.last_hash, parent, chunk);
            }
            s.last_hash = h;
            s.num_committed = i + 1;
        }
        Ok(full.saturating_sub(start))
    }

    /// Gives `child` a copy of `parent`'s block table, sharing every block
    /// (ref count + 1). The first write into a shared partial block triggers
    /// copy-on-write (`append_slots` / `copy_on_write`).
    pub fn fork(&mut self, parent: SeqId, child: SeqId) -> Result<(), BlockError> {
        if self.seqs.contains_key(&child) {
            return Err(BlockError::SeqExists(child));
        }
        let s = self
            .seqs
            .get(&parent)
            .ok_or(BlockError::UnknownSeq(parent))?
            .clone();
        for &b in &s.table {
            self.incref(b);
        }
        self.seqs.insert(child, s);
        Ok(())
    }

    /// Releases the sequence's blocks at once, last block first. Registered
    /// blocks left unreferenced become cached (evictable, LRU); others go to
    /// the free list.
    pub fn free(&mut self, seq: SeqId) -> Result<(), BlockError> {
        let s = self.seqs.remove(&seq).ok_or(BlockError::UnknownSeq(seq))?;
        for &b in s.table.iter().rev() {
            self.release(b);
        }
        Ok(())
    }

    /// Chained hash of the sequence's last committed block (`ROOT_HASH` if none).
    pub fn last_committed_hash(&self, seq: SeqId) -> Option<u64> {
        self.seqs.get(&seq).map(|s| {
            if s.num_committed == 0 {
                ROOT_HASH
            } else {
                s.last_hash
            }
        })
    }

    /// Number of leading table blocks registered for reuse.
    pub fn num_committed_blocks(&self, seq: SeqId) -> Option<usize> {
        self.seqs.get(&seq).map(|s| s.num_committed)
    }
}
