//! The CPU paged attention: the AVX2 path equals the scalar reference bit for
//! bit at awkward sizes (odd head counts, GQA groups 1..7, head sizes that
//! are and are not multiples of 8, lengths around the 8-position blocks, f32
//! and f16 caches, sliding windows), both stay close to an f64 reference,
//! and a row's output does not depend on the batch it is computed in.

use ferrum_kernels::cpu::Kernel;
use ferrum_kernels::{AttnMeta, Backend, CpuBackend, CpuKv, HeadSpec, KvDType, KvSpec, Mat, Rope, RopeStyle, SeqPlan};

const BS: usize = 16;

/// Deterministic pseudo-random numbers in [-1, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, amp: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * amp).collect()
    }
}

fn kernels() -> Vec<Kernel> {
    [Kernel::Scalar, Kernel::Avx2].into_iter().filter(|k| k.available()).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// One sequence's full Q/K/V (`[ctx, ...]`) and a shuffled block table.
struct Seq {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    table: Vec<u32>,
}

struct Case {
    h: HeadSpec,
    dtype: KvDType,
    n_blocks: usize,
}

impl Case {
    fn new(n_heads: usize, n_kv: usize, hd: usize, window: Option<usize>, dtype: KvDType, n_blocks: usize) -> Case {
        let h = HeadSpec { n_heads, n_kv_heads: n_kv, head_dim: hd, scale: 1.0 / (hd as f32).sqrt(), window, norm_eps: 1e-6 };
        Case { h, dtype, n_blocks }
    }

    fn kv(&self) -> CpuKv {
        let spec = KvSpec { n_blocks: self.n_blocks, block_size: BS, n_kv_heads: self.h.n_kv_heads, head_dim: self.h.head_dim, dtype: self.dtype };
        CpuBackend.alloc_kv(spec).unwrap()
    }

    fn seq(&self, ctx: usize, blocks: &[u32], seed: u64) -> Seq {
        let mut rng = Lcg(seed);
        let (qd, kvd) = (self.h.n_heads * self.h.head_dim, self.h.n_kv_heads * self.h.head_dim);
        // Scores of a few units: the softmax has both large and tiny weights.
        Seq { q: rng.vec(ctx * qd, 2.0), k: rng.vec(ctx * kvd, 2.0), v: rng.vec(ctx * kvd, 1.0), table: blocks.to_vec() }
    }

    /// Write rows `start..start + n` of each listed sequence into the cache
    /// (one step with all of them) and return that step's plan and queries.
    fn step(&self, kv: &mut CpuKv, seqs: &[(&Seq, usize, usize)]) -> (AttnMeta, Mat) {
        let b = CpuBackend;
        let plans: Vec<SeqPlan<'_>> = seqs.iter().map(|&(s, start, n)| SeqPlan { n_new: n, start_pos: start, block_table: &s.table }).collect();
        let meta = AttnMeta::build(&plans, BS, self.n_blocks, 1 << 20).unwrap();
        let (qd, kvd) = (self.h.n_heads * self.h.head_dim, self.h.n_kv_heads * self.h.head_dim);
        let mut qkv = Vec::new();
        for &(s, start, n) in seqs {
            for p in start..start + n {
                qkv.extend_from_slice(&s.q[p * qd..(p + 1) * qd]);
                qkv.extend_from_slice(&s.k[p * kvd..(p + 1) * kvd]);
                qkv.extend_from_slice(&s.v[p * kvd..(p + 1) * kvd]);
            }
        }
        let rows = meta.n_rows();
        let qkv = Mat::from_vec(qkv, rows, qd + 2 * kvd).unwrap();
        let rope = Rope { style: RopeStyle::NeoX, inv_freq: vec![0.0; self.h.head_dim / 2] };
        let mut q = Mat::default();
        b.qk_rope_store(&qkv, &mut q, None, None, &self.h, &rope, &meta, kv).unwrap();
        (meta, q)
    }

    fn attend(&self, kernel: Kernel, q: &Mat, meta: &AttnMeta, kv: &CpuKv) -> Mat {
        let mut out = Mat::default();
        CpuBackend.attention_with(kernel, q, &self.h, meta, kv, &mut out).unwrap();
        out
    }

    /// f64 attention of `s`'s rows `start..start + n` (K/V rounded as cached).
    fn reference(&self, s: &Seq, start: usize, n: usize) -> Vec<f64> {
        let h = &self.h;
        let (hd, g) = (h.head_dim, h.n_heads / h.n_kv_heads);
        let kvd = h.n_kv_heads * hd;
        let round = |x: f32| match self.dtype {
            KvDType::F32 => x as f64,
            KvDType::F16 => half::f16::from_f32(x).to_f32() as f64,
        };
        let mut out = Vec::with_capacity(n * h.n_heads * hd);
        for p in start..start + n {
            let lo = h.window.map_or(0, |w| (p + 1).saturating_sub(w));
            for head in 0..h.n_heads {
                let kvh = head / g;
                let qv = &s.q[p * h.n_heads * hd + head * hd..][..hd];
                let sc: Vec<f64> = (lo..=p)
                    .map(|j| qv.iter().zip(&s.k[j * kvd + kvh * hd..][..hd]).map(|(&a, &b)| a as f64 * round(b)).sum::<f64>() * h.scale as f64)
                    .collect();
                let max = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for d in 0..hd {
                    out.push((lo..=p).zip(&e).map(|(j, w)| w / sum * round(s.v[j * kvd + kvh * hd + d])).sum());
                }
            }
        }
        out
    }
}

fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Prefill `chunk` rows after a cached `prefix`, every kernel: identical
/// bits across kernels, and close to the f64 reference.
fn check(c: &Case, prefix: usize, chunk: usize) {
    let ctx = prefix + chunk;
    let mut table: Vec<u32> = (0..c.n_blocks as u32).rev().collect();
    table.rotate_left(1);
    let s = c.seq(ctx, &table, (ctx * 131 + c.h.n_heads * 7 + c.h.head_dim) as u64);
    let mut kv = c.kv();
    if prefix > 0 {
        c.step(&mut kv, &[(&s, 0, prefix)]);
    }
    let (meta, q) = c.step(&mut kv, &[(&s, prefix, chunk)]);
    let outs: Vec<Mat> = kernels().into_iter().map(|k| c.attend(k, &q, &meta, &kv)).collect();
    let what = format!("heads {}/{} hd {} prefix {prefix} chunk {chunk} window {:?} {:?}", c.h.n_heads, c.h.n_kv_heads, c.h.head_dim, c.h.window, c.dtype);
    for o in &outs[1..] {
        assert_eq!(bits(&o.data), bits(&outs[0].data), "{what}: AVX2 != scalar");
    }
    let e = rel_err(&outs[0].data, &c.reference(&s, prefix, chunk));
    assert!(e < 2e-6, "{what}: rel err {e}");
}

#[test]
fn avx2_equals_scalar_at_awkward_sizes() {
    for dtype in [KvDType::F32, KvDType::F16] {
        // GQA groups 1..7, odd head counts, several KV heads.
        for &(nh, nkv) in &[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1), (7, 1), (3, 3), (6, 2), (9, 3), (14, 2), (10, 5)] {
            for &hd in &[8, 24, 64] {
                for &(prefix, chunk) in &[(0, 1), (0, 15), (0, 17), (16, 1), (7, 1), (15, 2), (0, 257)] {
                    check(&Case::new(nh, nkv, hd, None, dtype, 20), prefix, chunk);
                }
            }
        }
        // Head sizes: 128, 40 (32 + 8 in the value pass) and ones the AVX2
        // path leaves to the scalar reference (not multiples of 8).
        for &hd in &[128, 40, 12, 3] {
            for &(prefix, chunk) in &[(0, 17), (250, 7)] {
                check(&Case::new(6, 2, hd, None, dtype, 20), prefix, chunk);
            }
        }
        // Sliding windows shorter and longer than the context.
        for &w in &[1, 8, 9, 100, 1000] {
            check(&Case::new(7, 1, 16, Some(w), dtype, 20), 33, 40);
            check(&Case::new(4, 2, 64, Some(w), dtype, 20), 0, 257);
        }
    }
}

/// A sequence's rows are bit-identical whether computed alone in one
/// prefill, in chunks, or in a batch with other sequences' prefill and
/// decode rows.
#[test]
fn rows_do_not_depend_on_the_batch() {
    for dtype in [KvDType::F32, KvDType::F16] {
        let c = Case::new(14, 2, 64, None, dtype, 40);
        let tables: Vec<Vec<u32>> = (0..4u32).map(|s| (0..10).map(|b| s * 10 + b).collect()).collect();
        let target = c.seq(37, &tables[0], 1);
        let others: Vec<Seq> = (1..4).map(|i| c.seq(60, &tables[i], 10 + i as u64)).collect();
        for kernel in kernels() {
            let mut kv = c.kv();
            let (meta, q) = c.step(&mut kv, &[(&target, 0, 37)]);
            let alone = c.attend(kernel, &q, &meta, &kv);
            let row = |m: &Mat, r: usize| bits(m.row(r));

            let mut kv = c.kv();
            c.step(&mut kv, &[(&others[2], 0, 50)]);
            let (meta, q) = c.step(&mut kv, &[(&others[0], 0, 3), (&target, 0, 37), (&others[1], 0, 20), (&others[2], 50, 1)]);
            let batched = c.attend(kernel, &q, &meta, &kv);
            for p in 0..37 {
                assert_eq!(row(&batched, 3 + p), row(&alone, p), "{kernel:?} {dtype:?}: batched row {p}");
            }

            let mut kv = c.kv();
            for start in (0..37).step_by(5) {
                let n = 5.min(37 - start);
                let (meta, q) = c.step(&mut kv, &[(&target, start, n)]);
                let out = c.attend(kernel, &q, &meta, &kv);
                for i in 0..n {
                    assert_eq!(row(&out, i), row(&alone, start + i), "{kernel:?} {dtype:?}: chunked row {}", start + i);
                }
            }
        }
    }
}

/// Plans that do not fit the pool are errors, not out-of-bounds reads.
#[test]
fn mismatched_plans_are_errors() {
    let c = Case::new(4, 2, 8, None, KvDType::F32, 2);
    let mut kv = c.kv();
    let s = c.seq(3, &[1], 5);
    let (meta, q) = c.step(&mut kv, &[(&s, 0, 3)]);
    let mut out = Mat::default();
    // A plan for a bigger pool: block 5 does not exist here.
    let big = AttnMeta::build(&[SeqPlan { n_new: 3, start_pos: 0, block_table: &[5] }], BS, 8, 100).unwrap();
    assert!(CpuBackend.attention(&q, &c.h, &big, &kv, &mut out).is_err());
    // Queries for more rows than the plan has.
    let q4 = Mat::zeros(4, q.cols);
    assert!(CpuBackend.attention(&q4, &c.h, &meta, &kv, &mut out).is_err());
    // A different block size.
    let other = AttnMeta::build(&[SeqPlan { n_new: 3, start_pos: 0, block_table: &[1] }], 8, 2, 100).unwrap();
    assert!(CpuBackend.attention(&q, &c.h, &other, &kv, &mut out).is_err());
    // A window of no positions.
    let h0 = HeadSpec { window: Some(0), ..c.h };
    assert!(CpuBackend.attention(&q, &h0, &meta, &kv, &mut out).is_err());
    assert!(CpuBackend.attention(&q, &c.h, &meta, &kv, &mut out).is_ok());
}
