//! Attention metadata of one forward step, built once and shared by every
//! layer (plan/run): where each token row sits in its sequence and in the
//! paged KV cache.

use crate::backend::{BackendError, Result};

/// One token row of the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowMeta {
    /// Index of the row's sequence in `AttnMeta::seqs`.
    pub seq: u32,
    /// Absolute position of the token in its sequence.
    pub pos: u32,
    /// Cache slot the token's K/V are written to: `block * block_size + offset`.
    pub slot: u32,
}

/// One sequence of the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqMeta {
    /// First row of this sequence in the batch; its rows are contiguous.
    pub row_start: usize,
    pub n_rows: usize,
    /// Tokens in the cache after this step (`start_pos + n_rows`).
    pub ctx_len: usize,
    /// Cache block ids holding positions `[i*block_size, (i+1)*block_size)`.
    pub block_table: Vec<u32>,
}

/// Plan of one step: rows in batch order and the sequences they belong to.
#[derive(Clone, Debug, Default)]
pub struct AttnMeta {
    pub block_size: usize,
    pub rows: Vec<RowMeta>,
    pub seqs: Vec<SeqMeta>,
}

/// What a caller says about one sequence of a step.
pub struct SeqPlan<'a> {
    /// Number of new tokens (a prefill chunk, or 1 for decode).
    pub n_new: usize,
    /// Position of the first new token (= tokens already in the cache).
    pub start_pos: usize,
    pub block_table: &'a [u32],
}

impl AttnMeta {
    /// Build the plan, checking every position against `max_ctx` and every
    /// needed block against the table and the pool size.
    pub fn build(seqs: &[SeqPlan<'_>], block_size: usize, n_blocks: usize, max_ctx: usize) -> Result<AttnMeta> {
        let invalid = |detail: String| BackendError::Invalid { op: "plan", detail };
        if block_size == 0 {
            return Err(invalid("block size is zero".into()));
        }
        let mut meta = AttnMeta { block_size, rows: Vec::new(), seqs: Vec::with_capacity(seqs.len()) };
        for (si, s) in seqs.iter().enumerate() {
            if s.n_new == 0 {
                return Err(invalid(format!("sequence {si} has no new tokens")));
            }
            let ctx_len = s.start_pos.checked_add(s.n_new).ok_or_else(|| invalid("position overflow".into()))?;
            if ctx_len > max_ctx {
                return Err(invalid(format!(
                    "sequence {si}: positions up to {} exceed the context length {max_ctx}",
                    ctx_len - 1
                )));
            }
            let blocks_needed = ctx_len.div_ceil(block_size);
            if s.block_table.len() < blocks_needed {
                return Err(invalid(format!(
                    "sequence {si}: block table has {} blocks, {blocks_needed} needed for {ctx_len} tokens",
                    s.block_table.len()
                )));
            }
            if let Some(&b) = s.block_table[..blocks_needed].iter().find(|&&b| b as usize >= n_blocks) {
                return Err(invalid(format!("sequence {si}: block id {b} outside the pool of {n_blocks}")));
            }
            let row_start = meta.rows.len();
            for p in s.start_pos..ctx_len {
                let block = s.block_table[p / block_size] as usize;
                meta.rows.push(RowMeta { seq: si as u32, pos: p as u32, slot: (block * block_size + p % block_size) as u32 });
            }
            meta.seqs.push(SeqMeta {
                row_start,
                n_rows: s.n_new,
                ctx_len,
                block_table: s.block_table[..blocks_needed].to_vec(),
            });
        }
        Ok(meta)
    }

    pub fn n_rows(&self) -> usize {
        self.rows.len()
    }

    /// Cache slot of position `pos` of sequence `seq`.
    #[inline]
    pub fn slot_of(&self, seq: usize, pos: usize) -> usize {
        let s = &self.seqs[seq];
        s.block_table[pos / self.block_size] as usize * self.block_size + pos % self.block_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_rows_and_slots() {
        let t0 = [3u32, 1];
        let t1 = [0u32];
        let m = AttnMeta::build(
            &[SeqPlan { n_new: 3, start_pos: 14, block_table: &t0 }, SeqPlan { n_new: 1, start_pos: 0, block_table: &t1 }],
            16,
            4,
            100,
        )
        .unwrap();
        assert_eq!(m.rows.len(), 4);
        assert_eq!(m.rows[0], RowMeta { seq: 0, pos: 14, slot: 3 * 16 + 14 });
        assert_eq!(m.rows[2], RowMeta { seq: 0, pos: 16, slot: 16 });
        assert_eq!(m.rows[3], RowMeta { seq: 1, pos: 0, slot: 0 });
        assert_eq!(m.seqs[0].ctx_len, 17);
    }

    #[test]
    fn rejects_bad_plans() {
        let t = [0u32];
        assert!(AttnMeta::build(&[SeqPlan { n_new: 17, start_pos: 0, block_table: &t }], 16, 4, 100).is_err());
        assert!(AttnMeta::build(&[SeqPlan { n_new: 2, start_pos: 99, block_table: &[0; 7] }], 16, 8, 100).is_err());
        assert!(AttnMeta::build(&[SeqPlan { n_new: 1, start_pos: 0, block_table: &[9] }], 16, 4, 100).is_err());
        assert!(AttnMeta::build(&[SeqPlan { n_new: 0, start_pos: 0, block_table: &t }], 16, 4, 100).is_err());
    }
}
