//! Quantized activations shared by the products of one matmul call.
//!
//! Products that read the same input (the parts of a fused Q/K/V weight, or
//! the gate and up experts of a MoE layer) need its rows quantized only once
//! per activation format: 32-element blocks for the legacy weight types,
//! 256-element blocks for the K-quants. An [`ActSet`] records each distinct
//! `(input, format)` once, quantizes them all in one fork-join, and hands the
//! products shared slices. The block buffers are kept per thread between
//! calls, so a step does not allocate them again for every projection.
//!
//! Quantization is row by row with the canonical arithmetic of
//! [`super::act_quant`], so sharing changes no bit of any result.

use std::cell::RefCell;

use super::act_quant::{quantize_row, ActBlock, ActQ8K, ActQ8_32};
use super::pool::par_for_limit;
use super::Kernel;

/// One distinct input in one format: `x` is `[m, cols]`; `blocks` is
/// `[m, cols / G]` once quantized.
struct Entry<'a, const G: usize, const S: usize> {
    x: &'a [f32],
    m: usize,
    blocks: Vec<ActBlock<G, S>>,
}

impl<'a, const G: usize, const S: usize> Entry<'a, G, S> {
    fn same(&self, x: &[f32], m: usize) -> bool {
        std::ptr::eq(self.x.as_ptr(), x.as_ptr()) && self.x.len() == x.len() && self.m == m
    }
}

/// Which quantized copy a product reads: `(format group, entry index)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ActKey {
    group: usize,
    index: usize,
}

/// The distinct inputs of one call, by format.
#[derive(Default)]
pub(super) struct ActSet<'a> {
    q32: Vec<Entry<'a, 32, 2>>,
    q256: Vec<Entry<'a, 256, 16>>,
}

/// Block buffers kept for the next call on this thread (at most a few of
/// each format, so a rare huge call does not pin memory in many of them).
#[derive(Default)]
struct Spare {
    q32: Vec<Vec<ActQ8_32>>,
    q256: Vec<Vec<ActQ8K>>,
}

const MAX_SPARE: usize = 4;

thread_local! {
    static SPARE: RefCell<Spare> = RefCell::new(Spare::default());
}

/// Rows per quantization task.
const ROWS_PER_TASK: usize = 4;

fn take_spare<T>(list: &mut Vec<Vec<T>>) -> Vec<T> {
    list.pop().unwrap_or_default()
}

impl<'a> ActSet<'a> {
    /// Register `x` (`[m, cols]`, validated) for weights of block size
    /// `group` (32 or 256); the same input registered again shares the entry.
    pub fn add(&mut self, x: &'a [f32], m: usize, group: usize) -> ActKey {
        fn find<'a, const G: usize, const S: usize>(
            list: &mut Vec<Entry<'a, G, S>>,
            x: &'a [f32],
            m: usize,
        ) -> usize {
            if let Some(i) = list.iter().position(|e| e.same(x, m)) {
                return i;
            }
            list.push(Entry {
                x,
                m,
                blocks: Vec::new(),
            });
            list.len() - 1
        }
        let index = if group == 32 {
            find(&mut self.q32, x, m)
        } else {
            find(&mut self.q256, x, m)
        };
        ActKey { group, index }
    }

    /// Quantize every registered input (rows spread over at most `threads`
    /// threads when the work is large enough to pay for a fork-join).
    pub fn quantize(&mut self, kernel: Kernel, threads: usize) {
        SPARE.with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                for e in self.q32.iter_mut() {
                    e.blocks = take_spare(&mut s.q32);
                }
                for e in self.q256.iter_mut() {
                    e.blocks = take_spare(&mut s.q256);
                }
            }
        });
        let mut work = 0usize;
        // Tasks: (format, entry, first row).
        let mut tasks: Vec<(bool, usize, usize)> = Vec::new();
        for (i, e) in self.q32.iter_mut().enumerate() {
            size(e);
            work += e.x.len();
            tasks.extend((0..e.m).step_by(ROWS_PER_TASK).map(|r| (false, i, r)));
        }
        for (i, e) in self.q256.iter_mut().enumerate() {
            size(e);
            work += e.x.len();
            tasks.extend((0..e.m).step_by(ROWS_PER_TASK).map(|r| (true, i, r)));
        }
        let threads = if work >= 1 << 16 { threads } else { 1 };
        let p32: Vec<BlocksPtr<32, 2>> = self.q32.iter_mut().map(BlocksPtr::new).collect();
        let p256: Vec<BlocksPtr<256, 16>> = self.q256.iter_mut().map(BlocksPtr::new).collect();
        let (q32, q256) = (&self.q32, &self.q256);
        par_for_limit(tasks.len(), threads, &|t| {
            let (big, i, r0) = tasks[t];
            // SAFETY (both arms): task (entry, r0) alone writes rows
            // r0..r0 + ROWS_PER_TASK of that entry's blocks.
            if big {
                unsafe { p256[i].rows(&q256[i], r0, kernel) };
            } else {
                unsafe { p32[i].rows(&q32[i], r0, kernel) };
            }
        });
    }

    pub fn get32(&self, k: ActKey) -> &[ActQ8_32] {
        self.q32.get(k.index).map_or(&[], |e| &e.blocks[..])
    }

    pub fn get256(&self, k: ActKey) -> &[ActQ8K] {
        self.q256.get(k.index).map_or(&[], |e| &e.blocks[..])
    }
}

impl Drop for ActSet<'_> {
    fn drop(&mut self) {
        SPARE.with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                for e in self.q32.drain(..) {
                    if s.q32.len() < MAX_SPARE {
                        s.q32.push(e.blocks);
                    }
                }
                for e in self.q256.drain(..) {
                    if s.q256.len() < MAX_SPARE {
                        s.q256.push(e.blocks);
                    }
                }
            }
        });
    }
}

/// Give an entry exactly `m * cols / G` blocks, reusing its buffer.
fn size<const G: usize, const S: usize>(e: &mut Entry<'_, G, S>) {
    let n = e.x.len() / G;
    e.blocks.truncate(n);
    e.blocks.resize(n, ActBlock::ZERO);
}

/// An entry's block buffer, written by tasks at disjoint rows.
struct BlocksPtr<const G: usize, const S: usize>(*mut ActBlock<G, S>);
// SAFETY: tasks write disjoint rows of a buffer that outlives them.
unsafe impl<const G: usize, const S: usize> Send for BlocksPtr<G, S> {}
unsafe impl<const G: usize, const S: usize> Sync for BlocksPtr<G, S> {}

impl<const G: usize, const S: usize> BlocksPtr<G, S> {
    fn new(e: &mut Entry<'_, G, S>) -> Self {
        BlocksPtr(e.blocks.as_mut_ptr())
    }

    /// Quantize rows `r0 .. r0 + ROWS_PER_TASK` (clipped to `m`) of `e`.
    ///
    /// # Safety
    /// `self` points at `e`'s buffer of `e.x.len() / G` blocks, and no other
    /// task touches these rows.
    unsafe fn rows(&self, e: &Entry<'_, G, S>, r0: usize, kernel: Kernel) {
        let cols = e.x.len() / e.m.max(1);
        let nb = cols / G;
        for i in r0..(r0 + ROWS_PER_TASK).min(e.m) {
            let blocks = std::slice::from_raw_parts_mut(self.0.add(i * nb), nb);
            quantize_row(&e.x[i * cols..(i + 1) * cols], blocks, kernel);
        }
    }
}
