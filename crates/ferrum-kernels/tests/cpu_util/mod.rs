//! Shared helpers for the CPU kernel tests: a seeded PRNG, weight makers and
//! the f64 reference matmul.
#![allow(dead_code)]

use ferrum_core::GgmlType;
use ferrum_kernels::cpu::act_quant::{quantize_row, ActBlock};
use ferrum_kernels::cpu::Kernel;

/// xorshift64* with Box-Muller Gaussians.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn gauss(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Every type `matmul` supports.
pub const ALL_TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::IQ4NL,
    GgmlType::IQ4XS,
];

/// Byte offsets of the f16 scale fields in one block of `ty`.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4NL | IQ4XS => &[0],
        Q4_1 | Q5_1 | Q4K | Q5K => &[0, 2],
        Q2K => &[80, 82],
        Q3K => &[108],
        Q6K => &[208],
        _ => &[],
    }
}

/// Random block bytes with sane f16 scales (every quant bit pattern occurs,
/// including the extreme ones such as Q8_0's -128 and 6-bit scales of 63).
pub fn random_blocks(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let bs = ty.type_size();
    let nblocks = rows * cols / ty.block_size();
    let mut data = rng.bytes(nblocks * bs);
    for blk in data.chunks_exact_mut(bs) {
        for &off in f16_fields(ty) {
            let v = half::f16::from_f32((0.002 + 0.05 * rng.uniform()) as f32);
            blk[off..off + 2].copy_from_slice(&v.to_bits().to_le_bytes());
        }
    }
    data
}

/// Gaussian weights encoded as `ty` (random blocks for types the
/// ferrum-format quantizer cannot encode).
pub fn gaussian_weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let vals: Vec<f32> = (0..rows * cols).map(|_| rng.gauss()).collect();
    match ty {
        GgmlType::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => vals
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
            .collect(),
        GgmlType::BF16 => vals
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes())
            .collect(),
        t if ferrum_format::quant::can_quantize(t) => {
            ferrum_format::quant::quantize(t, &vals).expect("quantize")
        }
        t => random_blocks(t, rows, cols, rng),
    }
}

/// Activations: Gaussian, with a few outliers, one all-zero row (if m > 1)
/// and a zero stretch of 256 values in the last row (if cols allows).
pub fn activations(m: usize, cols: usize, rng: &mut Rng) -> Vec<f32> {
    let mut x: Vec<f32> = (0..m * cols).map(|_| rng.gauss()).collect();
    for i in 0..m {
        let j = (rng.next_u64() as usize) % cols.max(1);
        if cols > 0 {
            x[i * cols + j] *= 20.0;
        }
    }
    if m > 1 {
        x[cols..2 * cols].fill(0.0);
    }
    if cols >= 512 {
        x[(m - 1) * cols + 256..(m - 1) * cols + 512].fill(0.0);
    }
    x
}

/// The activations as the kernels see them: quantized to the weight type's
/// activation blocks (unchanged for float weights).
pub fn quantized_activations(ty: GgmlType, x: &[f32], m: usize, cols: usize) -> Vec<f32> {
    fn deq<const G: usize, const S: usize>(x: &[f32], m: usize, cols: usize) -> Vec<f32> {
        let nb = cols / G;
        let mut out = Vec::with_capacity(m * cols);
        let mut blocks = vec![ActBlock::<G, S>::ZERO; nb];
        for i in 0..m {
            quantize_row(&x[i * cols..(i + 1) * cols], &mut blocks, Kernel::Scalar);
            for b in &blocks {
                out.extend((0..G).map(|e| b.value(e)));
            }
        }
        out
    }
    match ty.block_size() {
        1 => x.to_vec(),
        32 => deq::<32, 2>(x, m, cols),
        _ => deq::<256, 16>(x, m, cols),
    }
}

/// f64 reference `y = x · Wᵀ` on dequantized weights and quantized
/// activations; also returns sum |w_e x_e| per output, for tolerances.
pub fn reference(
    ty: GgmlType,
    data: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
) -> (Vec<f64>, Vec<f64>) {
    let w = ferrum_format::quant::dequantize_to_vec(ty, data, rows * cols).expect("dequantize");
    let xq = quantized_activations(ty, x, m, cols);
    let mut y = vec![0.0; m * rows];
    let mut mag = vec![0.0; m * rows];
    for i in 0..m {
        for j in 0..rows {
            let (mut s, mut a) = (0.0f64, 0.0f64);
            for e in 0..cols {
                let p = w[j * cols + e] as f64 * xq[i * cols + e] as f64;
                s += p;
                a += p.abs();
            }
            y[i * rows + j] = s;
            mag[i * rows + j] = a;
        }
    }
    (y, mag)
}

pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}
