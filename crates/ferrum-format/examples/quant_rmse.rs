//! Quantize 2^20 seeded Gaussian(0, 1) values with every quantizer and print
//! a markdown table of bits per weight and reconstruction error.
//!
//! `cargo run -p ferrum-format --example quant_rmse`

#[path = "../tests/quant_util/mod.rs"]
mod quant_util;

use ferrum_core::GgmlType;
use ferrum_format::quant::{dequantize_to_vec, quantize, QuantError};

const N: usize = 1 << 20;
const SEED: u64 = 0x5eed_0001;

fn main() -> Result<(), QuantError> {
    let x = quant_util::Rng::new(SEED).gaussians(N, 1.0);
    println!("Input: {N} Gaussian(0, 1) values, SplitMix64 seed {SEED:#x}, Box-Muller.\n");
    println!("| type | bits/weight | RMSE | max abs error |");
    println!("|------|------------:|-----:|--------------:|");
    let types = [
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q8K,
        GgmlType::Q6K,
        GgmlType::Q5_1,
        GgmlType::Q5_0,
        GgmlType::Q5K,
        GgmlType::Q4_1,
        GgmlType::Q4_0,
        GgmlType::Q4K,
    ];
    for ty in types {
        let q = quantize(ty, &x)?;
        let y = dequantize_to_vec(ty, &q, N)?;
        let (mut sq, mut worst) = (0.0f64, 0.0f32);
        for (a, b) in x.iter().zip(&y) {
            let e = a - b;
            sq += f64::from(e) * f64::from(e);
            worst = worst.max(e.abs());
        }
        let rmse = (sq / N as f64).sqrt();
        let bpw = 8.0 * ty.type_size() as f64 / ty.block_size() as f64;
        println!("| {} | {bpw:.4} | {rmse:.6} | {worst:.6} |", ty.name());
    }
    Ok(())
}
