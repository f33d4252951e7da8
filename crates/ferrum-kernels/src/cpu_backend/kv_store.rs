//! The paged K or V pool of one layer: `[n_blocks * block_size, n_kv_heads * head_dim]`
//! in f32 or f16.

use crate::backend::KvDType;

pub(super) enum KvStore {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

impl KvStore {
    pub(super) fn new(dtype: KvDType, n: usize) -> KvStore {
        match dtype {
            KvDType::F32 => KvStore::F32(vec![0.0; n]),
            KvDType::F16 => KvStore::F16(vec![half::f16::ZERO; n]),
        }
    }

    pub(super) fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            KvStore::F32(d) => d[at..at + src.len()].copy_from_slice(src),
            KvStore::F16(d) => {
                for (o, &x) in d[at..at + src.len()].iter_mut().zip(src) {
                    *o = half::f16::from_f32(x);
                }
            }
        }
    }

    pub(super) fn copy_block(&mut self, src: usize, dst: usize, len: usize) {
        match self {
            KvStore::F32(d) => d.copy_within(src..src + len, dst),
            KvStore::F16(d) => d.copy_within(src..src + len, dst),
        }
    }

    /// The pool's elements, by type.
    pub(super) fn view(&self) -> KvView<'_> {
        match self {
            KvStore::F32(d) => KvView::F32(d),
            KvStore::F16(d) => KvView::F16(d),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            KvStore::F32(d) => d.len(),
            KvStore::F16(d) => d.len(),
        }
    }
}

/// A borrowed pool.
pub(super) enum KvView<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
}
