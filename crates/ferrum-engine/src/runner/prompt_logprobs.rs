//! Log-probabilities of a prompt's own tokens (completions' `echo` with
//! `logprobs`).
//!
//! The prompt runs through the model in a scratch KV cache of its own, with
//! logits for every row: the shared pool's blocks may come from the prefix
//! cache, which holds K/V but no logits, so it cannot serve this. Costs one
//! extra prefill of the prompt; the request is then scheduled as usual.

use ferrum_kernels::{Backend, KvDType};
use ferrum_model::{ForwardBatch, KvCache, LogitRows, Model, ModelError, SeqInput, BLOCK_SIZE};

use crate::sampler::{raw_logprobs, Sampled};

/// Entry `i` scores `prompt[i]` given `prompt[..i]` (`None` for `i = 0`),
/// with the `k` most likely alternatives. Runs in chunks of `chunk` tokens.
pub(super) fn score<B: Backend>(model: &Model<B>, prompt: &[u32], k: usize, chunk: usize) -> Result<Vec<Option<Sampled>>, ModelError> {
    let n_blocks = prompt.len().div_ceil(BLOCK_SIZE).max(1);
    let mut kv = KvCache::new(&model.backend, &model.cfg, n_blocks, KvDType::F32)?;
    let table: Vec<u32> = (0..n_blocks as u32).collect();
    let mut out = Vec::with_capacity(prompt.len());
    out.push(None);
    let chunk = chunk.max(1);
    let mut start = 0;
    while start + 1 < prompt.len() {
        // The last prompt token predicts nothing inside the prompt.
        let end = (start + chunk).min(prompt.len() - 1);
        let tokens = &prompt[start..end];
        let batch = ForwardBatch { seqs: vec![SeqInput { tokens, start_pos: start, block_table: &table, logits: LogitRows::All }] };
        let logits = model.forward(&batch, &mut kv, None)?;
        for r in 0..logits.rows.len() {
            let next = prompt[start + r + 1];
            let (logprob, top) = raw_logprobs(logits.row(r), next, k);
            out.push(Some(Sampled { id: next, logprob, top }));
        }
        start = end;
    }
    Ok(out)
}
