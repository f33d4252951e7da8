//! `BlockManager::check_invariants`: a full consistency audit, O(blocks +
//! table entries). Tests run it after every operation; the scheduler runs it
//! after every step in debug builds.

use super::list::NIL;
use super::{BlockManager, ROOT_HASH};

/// Where the list walks found a block.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Nowhere,
    FreeList,
    CachedList,
}

impl BlockManager {
    /// Checks that:
    /// - the free and LRU lists are well linked and every block is in exactly
    ///   one of: free list (unregistered, ref 0), LRU list (registered, ref 0),
    ///   or referenced (ref > 0, in no list);
    /// - every ref count equals the number of table entries naming the block;
    /// - each table covers exactly its slots, its committed prefix is
    ///   registered and chained (parent = previous table block, current
    ///   generation), and its last hash matches;
    /// - the hash index holds exactly the registered blocks, each under its
    ///   own hash, the hash recomputes from (parent hash, stored tokens), and
    ///   no two registered blocks have the same parent and tokens.
    pub fn check_invariants(&self) -> Result<(), String> {
        let n = self.meta.len();
        let mut seen = vec![Seen::Nowhere; n];
        for (list, tag, name) in [
            (&self.free, Seen::FreeList, "free"),
            (&self.cached, Seen::CachedList, "cached"),
        ] {
            for b in list
                .walk(&self.links)
                .map_err(|e| format!("{name} list: {e}"))?
            {
                let slot = &mut seen[b as usize];
                if *slot != Seen::Nowhere {
                    return Err(format!("block {b} appears twice in the lists"));
                }
                *slot = tag;
            }
        }

        let mut refs = vec![0u32; n];
        for (&seq, s) in &self.seqs {
            if s.table.len() != self.blocks_for(s.num_tokens) {
                return Err(format!(
                    "seq {seq}: table has {} blocks for {} slots (block size {})",
                    s.table.len(),
                    s.num_tokens,
                    self.block_size
                ));
            }
            if s.num_committed > s.num_tokens / self.block_size {
                return Err(format!(
                    "seq {seq}: {} committed blocks but {} slots",
                    s.num_committed, s.num_tokens
                ));
            }
            for &b in &s.table {
                let r = refs
                    .get_mut(b as usize)
                    .ok_or_else(|| format!("seq {seq}: block {b} out of range"))?;
                *r += 1;
            }
            let mut expect_parent = None;
            let mut last_hash = ROOT_HASH;
            for (i, &b) in s.table[..s.num_committed].iter().enumerate() {
                let m = &self.meta[b as usize];
                let h = m.hash.ok_or_else(|| {
                    format!("seq {seq}: committed block {b} (index {i}) unregistered")
                })?;
                if m.parent != expect_parent || m.parent_hash != last_hash {
                    return Err(format!(
                        "seq {seq}: block {b} (index {i}) is not chained to the previous block"
                    ));
                }
                expect_parent = Some((b, m.generation));
                last_hash = h;
            }
            if s.last_hash != last_hash {
                return Err(format!(
                    "seq {seq}: last hash does not match block {}",
                    s.num_committed
                ));
            }
        }

        for (b, m) in self.meta.iter().enumerate() {
            if m.ref_count != refs[b] {
                return Err(format!(
                    "block {b}: ref count {} but {} table entries",
                    m.ref_count, refs[b]
                ));
            }
            let expect = match (m.ref_count, m.hash.is_some()) {
                (0, false) => Seen::FreeList,
                (0, true) => Seen::CachedList,
                _ => Seen::Nowhere,
            };
            if seen[b] != expect {
                return Err(format!(
                    "block {b}: ref count {} registered {} but list membership is wrong",
                    m.ref_count,
                    m.hash.is_some()
                ));
            }
            if m.hash.is_none() && (m.parent.is_some() || m.bucket_next != NIL) {
                return Err(format!(
                    "block {b}: unregistered but keeps a parent or bucket link"
                ));
            }
        }

        let mut indexed = 0usize;
        let mut bucket = Vec::new();
        for (&h, &head) in &self.index {
            bucket.clear();
            let mut cur = head;
            while cur != NIL {
                indexed += 1;
                if indexed > n {
                    return Err("hash index chains exceed the arena (cycle)".into());
                }
                let m = self
                    .meta
                    .get(cur as usize)
                    .ok_or_else(|| format!("index names block {cur} out of range"))?;
                if m.hash != Some(h) {
                    return Err(format!(
                        "block {cur} sits in bucket {h:#x} but has hash {:?}",
                        m.hash
                    ));
                }
                if (self.hash_fn)(m.parent_hash, self.block_tokens(cur)) != h {
                    return Err(format!(
                        "block {cur}: hash does not recompute from its tokens"
                    ));
                }
                if let Some((p, g)) = m.parent {
                    let pm = self
                        .meta
                        .get(p as usize)
                        .ok_or_else(|| format!("block {cur}: parent {p} out of range"))?;
                    if pm.generation == g && pm.hash != Some(m.parent_hash) {
                        return Err(format!("block {cur}: live parent {p} has another hash"));
                    }
                }
                bucket.push(cur);
                cur = m.bucket_next;
            }
            // Buckets hold one block unless hashes collide: pairwise is fine.
            for (i, &a) in bucket.iter().enumerate() {
                for &b in &bucket[i + 1..] {
                    let same_parent = self.meta[a as usize].parent == self.meta[b as usize].parent;
                    if same_parent && self.block_tokens(a) == self.block_tokens(b) {
                        return Err(format!("blocks {a} and {b}: duplicate registered content"));
                    }
                }
            }
        }
        let registered = self.meta.iter().filter(|m| m.hash.is_some()).count();
        if indexed != registered {
            return Err(format!(
                "hash index holds {indexed} blocks but {registered} are registered"
            ));
        }
        Ok(())
    }
}
