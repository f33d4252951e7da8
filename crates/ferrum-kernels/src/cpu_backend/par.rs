//! Row-parallel helpers for the element-wise ops.

use crate::cpu::par_for;

/// A raw pointer that tasks share to write disjoint ranges of one buffer.
#[derive(Clone, Copy)]
pub(super) struct SyncPtr<T>(*mut T);
// SAFETY: users write disjoint ranges of a buffer that outlives the tasks.
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    pub fn new(s: &mut [T]) -> Self {
        SyncPtr(s.as_mut_ptr())
    }

    /// `len` elements from `at`.
    ///
    /// # Safety
    /// The range is inside the buffer and no other task uses it.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, at: usize, len: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(at), len)
    }
}

/// `f(start, end)` over `0..n` in chunks of `chunk` items, spread over the
/// pool when there is more than one chunk. Each item must be computed the
/// same way whatever chunk it falls in (results never depend on the split).
pub(super) fn par_chunks(n: usize, chunk: usize, f: impl Fn(usize, usize) + Sync) {
    let chunk = chunk.max(1);
    let tasks = n.div_ceil(chunk);
    if tasks <= 1 {
        if n > 0 {
            f(0, n);
        }
        return;
    }
    par_for(tasks, |t| f(t * chunk, ((t + 1) * chunk).min(n)));
}
