//! Paged KV storage: per-layer K/V block pools owned by the caller (the
//! engine), addressed through block tables. The model allocates nothing per
//! request.

use ferrum_kernels::{Backend, KvDType, KvSpec};

use crate::config::ModelConfig;
use crate::error::Result;

/// Tokens per KV block.
pub const BLOCK_SIZE: usize = 16;

pub struct KvCache<B: Backend> {
    pub spec: KvSpec,
    pub layers: Vec<B::Kv>,
}

impl<B: Backend> KvCache<B> {
    /// Pools of `n_blocks` blocks for every layer of `cfg`.
    pub fn new(backend: &B, cfg: &ModelConfig, n_blocks: usize, dtype: KvDType) -> Result<Self> {
        let spec = KvSpec { n_blocks, block_size: BLOCK_SIZE, n_kv_heads: cfg.n_kv_heads, head_dim: cfg.head_dim, dtype };
        let layers = (0..cfg.n_layers).map(|_| backend.alloc_kv(spec)).collect::<std::result::Result<_, _>>()?;
        Ok(KvCache { spec, layers })
    }

    /// Copy blocks `src -> dst` in every layer (copy-on-write of a shared block).
    pub fn copy_blocks(&mut self, backend: &B, pairs: &[(u32, u32)]) -> Result<()> {
        for layer in &mut self.layers {
            backend.copy_blocks(layer, pairs)?;
        }
        Ok(())
    }

    pub fn n_blocks(&self) -> usize {
        self.spec.n_blocks
    }

    /// Bytes of K and V per token across all layers.
    pub fn bytes_per_token(cfg: &ModelConfig, dtype: KvDType) -> usize {
        let el = match dtype {
            KvDType::F32 => 4,
            KvDType::F16 => 2,
        };
        2 * cfg.n_layers * cfg.kv_dim() * el
    }
}
