//! Activation quantization: one f32 row -> 8-bit blocks with an f32 scale.
//!
//! Every quantized matmul first turns each activation row into blocks of `G`
//! signed 8-bit values (`G` = 256 for K-quant weights, 32 for the legacy
//! types) plus the sums of each 16 values (`bsums`), which the dot products use
//! to apply weight offsets and minimums without touching the activations again.
//!
//! The arithmetic is canonical (the AVX2 and scalar paths give identical bits):
//! `amax = max |x|` (NaN ignored), `d = amax / 127`, `id = 127 / amax` (0 when
//! `amax` is 0), `q = round_ties_even(clamp(x * id, -127, 127))` with NaN -> 0.

use super::Kernel;

/// `G` activations quantized to i8 with scale `d`; `bsums[s]` is the sum of
/// `qs[16 s .. 16 s + 16]` (`S = G / 16`).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct ActBlock<const G: usize, const S: usize> {
    pub d: f32,
    pub qs: [i8; G],
    pub bsums: [i16; S],
}

/// Activation blocks for K-quant weights (the layout of GGML's Q8_K).
pub type ActQ8K = ActBlock<256, 16>;
/// Activation blocks for the 32-element legacy types (Q8_0 values, f32 scale).
pub type ActQ8_32 = ActBlock<32, 2>;

impl<const G: usize, const S: usize> ActBlock<G, S> {
    pub const ZERO: Self = ActBlock {
        d: 0.0,
        qs: [0; G],
        bsums: [0; S],
    };

    /// The value this block stands for at position `i`.
    pub fn value(&self, i: usize) -> f32 {
        self.d * self.qs[i] as f32
    }
}

/// Quantize `x` (`out.len() * G` values) into `out`.
pub fn quantize_row<const G: usize, const S: usize>(
    x: &[f32],
    out: &mut [ActBlock<G, S>],
    kernel: Kernel,
) {
    debug_assert_eq!(x.len(), out.len() * G);
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Avx2 {
        for (blk, xs) in out.iter_mut().zip(x.chunks_exact(G)) {
            // SAFETY: `Kernel::Avx2` is only selected when AVX2 and FMA were
            // detected at run time; `xs` holds exactly G values.
            unsafe { quantize_block_avx2(xs, blk) };
        }
        return;
    }
    let _ = kernel;
    for (blk, xs) in out.iter_mut().zip(x.chunks_exact(G)) {
        quantize_block_scalar(xs, blk);
    }
}

fn scales(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    (d, id)
}

fn fill_bsums<const G: usize, const S: usize>(blk: &mut ActBlock<G, S>) {
    for (s, sum) in blk.bsums.iter_mut().enumerate() {
        *sum = blk.qs[16 * s..16 * s + 16].iter().map(|&q| q as i16).sum();
    }
}

fn quantize_block_scalar<const G: usize, const S: usize>(xs: &[f32], blk: &mut ActBlock<G, S>) {
    let mut amax = 0.0f32;
    for &v in xs {
        let a = v.abs();
        if a > amax {
            amax = a;
        }
    }
    let (d, id) = scales(amax);
    blk.d = d;
    for (q, &v) in blk.qs.iter_mut().zip(xs) {
        let mut t = v * id;
        if t.is_nan() {
            t = 0.0;
        }
        *q = t.clamp(-127.0, 127.0).round_ties_even() as i8;
    }
    fill_bsums(blk);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_block_avx2<const G: usize, const S: usize>(
    xs: &[f32],
    blk: &mut ActBlock<G, S>,
) {
    use std::arch::x86_64::*;
    let p = xs.as_ptr();
    let sign = _mm256_set1_ps(-0.0);
    let mut vmax = _mm256_setzero_ps();
    for i in (0..G).step_by(8) {
        let a = _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(i)));
        // `max_ps(a, m)` returns `m` when `a` is NaN: NaN is ignored, as in
        // the scalar path.
        vmax = _mm256_max_ps(a, vmax);
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let m1 = _mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1));
    let amax = _mm_cvtss_f32(m1);
    let (d, id) = scales(amax);
    blk.d = d;
    let vid = _mm256_set1_ps(id);
    let lo = _mm256_set1_ps(-127.0);
    let hi = _mm256_set1_ps(127.0);
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let q = blk.qs.as_mut_ptr();
    for i in (0..G).step_by(32) {
        let mut v = [_mm256_setzero_si256(); 4];
        for (k, vk) in v.iter_mut().enumerate() {
            let t = _mm256_mul_ps(_mm256_loadu_ps(p.add(i + 8 * k)), vid);
            // NaN -> 0, then clamp (no NaN left, so operand order is moot).
            let t = _mm256_and_ps(t, _mm256_cmp_ps(t, t, _CMP_ORD_Q));
            let t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
            let t = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            *vk = _mm256_cvtps_epi32(t);
        }
        let ab = _mm256_packs_epi32(v[0], v[1]);
        let cd = _mm256_packs_epi32(v[2], v[3]);
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), perm);
        _mm256_storeu_si256(q.add(i) as *mut __m256i, bytes);
        // Sums of each 16 values: quads via maddubs/madd, then per 128 bits.
        let quads = _mm256_madd_epi16(
            _mm256_maddubs_epi16(_mm256_set1_epi8(1), bytes),
            _mm256_set1_epi16(1),
        );
        let x = _mm256_add_epi32(quads, _mm256_shuffle_epi32(quads, 0b01_00_11_10));
        let x = _mm256_add_epi32(x, _mm256_shuffle_epi32(x, 0b10_11_00_01));
        blk.bsums[i / 16] = _mm256_extract_epi32(x, 0) as i16;
        blk.bsums[i / 16 + 1] = _mm256_extract_epi32(x, 4) as i16;
    }
}
