//! Seeded randomness for the quant tests (no external crates): SplitMix64
//! and Box-Muller Gaussians.

#![allow(dead_code)]

use ferrum_core::GgmlType;

/// Every type the codecs dequantize: the float and block types of the GGML
/// type table (integer tensors and F64 are not weights).
pub fn decoded_types() -> Vec<GgmlType> {
    use GgmlType::*;
    GgmlType::ALL.into_iter().filter(|t| !matches!(t, I8 | I16 | I32 | I64 | F64)).collect()
}

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller; one of the pair is discarded).
    pub fn gaussian(&mut self) -> f32 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    pub fn gaussians(&mut self, n: usize, sigma: f32) -> Vec<f32> {
        (0..n).map(|_| self.gaussian() * sigma).collect()
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
