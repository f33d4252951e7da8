//! The input of one forward step: several sequences, each with its new tokens,
//! position offset and KV block table.

use ferrum_kernels::RowArgmax;

/// Which rows of a sequence need logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitRows {
    None,
    Last,
    All,
    /// The last `n` rows (perplexity scores the second half of a chunk).
    Tail(usize),
}

/// One sequence of a step.
#[derive(Clone, Debug)]
pub struct SeqInput<'a> {
    /// New tokens: a prefill chunk of any length, or one decode token.
    pub tokens: &'a [u32],
    /// Position of `tokens[0]` (= tokens of this sequence already cached).
    pub start_pos: usize,
    /// Cache blocks of this sequence, covering at least `start_pos + tokens.len()` positions.
    pub block_table: &'a [u32],
    pub logits: LogitRows,
}

/// One forward call's batch.
#[derive(Clone, Debug, Default)]
pub struct ForwardBatch<'a> {
    pub seqs: Vec<SeqInput<'a>>,
}

/// Logits of the rows asked for, in batch order.
#[derive(Clone, Debug, Default)]
pub struct Logits {
    /// `(sequence index, position)` of each returned row.
    pub rows: Vec<(usize, usize)>,
    /// `[rows.len(), vocab]`.
    pub data: Vec<f32>,
    pub vocab: usize,
}

impl Logits {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }

    /// The logits of the last returned row of sequence `seq`.
    pub fn last_of(&self, seq: usize) -> Option<&[f32]> {
        self.rows.iter().rposition(|r| r.0 == seq).map(|i| self.row(i))
    }
}

/// The backend's choice (greedy or sampled) of each row asked for, in batch order.
pub struct Picks {
    /// `(sequence index, position)` of each returned row.
    pub rows: Vec<(usize, usize)>,
    pub picks: Vec<RowArgmax>,
}

impl Picks {
    /// The choice for the last returned row of sequence `seq`.
    pub fn last_of(&self, seq: usize) -> Option<&RowArgmax> {
        self.rows.iter().rposition(|r| r.0 == seq).and_then(|i| self.picks.get(i))
    }
}
