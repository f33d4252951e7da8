//! Fast random weights for `synth`: a pool of template blocks made by really
//! quantizing Gaussian noise, tiled over the tensor with a cheap per-block
//! variation (a random template, its scales multiplied by a factor in
//! [0.8, 1.25], its quant bytes rotated by a random offset). Every block is
//! a valid encoding of finite values of the template's magnitude, and the
//! output is produced at memory-copy speed rather than encoder speed.

use ferrum_core::GgmlType;
use ferrum_format::quant;
use half::f16;

use super::{ConvertError, Result};

/// xorshift64* — fast, good enough for noise.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Never zero (xorshift's fixed point); splitmix the seed.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    pub fn gauss(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

/// Where a block keeps its f16 scales and its quant bytes.
struct Layout {
    /// Byte offsets of f16 scale fields multiplied by the per-block factor.
    scales: &'static [usize],
    /// The byte range rotated (element-aligned for float types).
    data: (usize, usize),
    /// Rotation granularity in bytes.
    step: usize,
}

fn layout(ty: GgmlType) -> Option<Layout> {
    use GgmlType::*;
    let l = |scales, data, step| Some(Layout { scales, data, step });
    match ty {
        F32 => l(&[], (0, 128), 4),
        F16 | BF16 => l(&[], (0, 64), 2),
        Q8_0 => l(&[0], (2, 34), 1),
        Q4_0 => l(&[0], (2, 18), 1),
        Q4_1 => l(&[0, 2], (4, 20), 1),
        Q5_0 => l(&[0], (6, 22), 1),
        Q5_1 => l(&[0, 2], (8, 24), 1),
        Q4K => l(&[0, 2], (16, 144), 1),
        Q5K => l(&[0, 2], (48, 176), 1),
        Q6K => l(&[208], (0, 128), 1),
        _ => None,
    }
}

/// Number of template units per pool.
const POOL: usize = 256;

pub struct Tiler {
    layout: Layout,
    /// Elements and bytes per unit (a block; 32 elements for float types).
    unit_elems: usize,
    unit_bytes: usize,
    pool: Vec<u8>,
    /// Scale factors 0.8 · 1.5625^(k/256): log-uniform over [0.8, 1.25).
    factors: [f32; 256],
}

impl Tiler {
    /// Templates of `ty` encoding N(0, std²) noise.
    pub fn new(ty: GgmlType, std: f32, rng: &mut Rng) -> Result<Tiler> {
        let layout = layout(ty).ok_or(ConvertError::Quant {
            tensor: format!("synthetic {ty} template"),
            error: quant::QuantError::Unsupported { ty, op: "synthesize" },
        })?;
        let unit_elems = if ty.is_quantized() { ty.block_size() } else { 32 };
        let unit_bytes = ty.bytes_for(unit_elems as u64).unwrap_or(0) as usize;
        let noise: Vec<f32> = (0..POOL * unit_elems).map(|_| rng.gauss() * std).collect();
        let pool = quant::quantize(ty, &noise).map_err(|error| ConvertError::Quant { tensor: format!("synthetic {ty} template"), error })?;
        let factors = std::array::from_fn(|k| 0.8 * 1.5625f32.powf(k as f32 / 256.0));
        Ok(Tiler { layout, unit_elems, unit_bytes, pool, factors })
    }

    /// Fill `out` (a whole number of units) with varied template units.
    pub fn fill(&self, out: &mut [u8], rng: &mut Rng) {
        let (start, end) = self.layout.data;
        let span = end - start;
        let steps = span / self.layout.step;
        for unit in out.chunks_exact_mut(self.unit_bytes) {
            let r = rng.next_u64();
            let t = (r as usize & (POOL - 1)) * self.unit_bytes;
            let Some(tpl) = self.pool.get(t..t + self.unit_bytes) else { continue };
            // Rotate the data bytes by `rot`; copy the rest as is.
            let rot = ((r >> 16) as usize % steps) * self.layout.step;
            unit[..start].copy_from_slice(&tpl[..start]);
            unit[end..].copy_from_slice(&tpl[end..]);
            unit[start..end - rot].copy_from_slice(&tpl[start + rot..end]);
            unit[end - rot..end].copy_from_slice(&tpl[start..start + rot]);
            if !self.layout.scales.is_empty() {
                let factor = self.factors[(r >> 48) as usize & 0xff];
                for &o in self.layout.scales {
                    let d = f16::from_le_bytes([unit[o], unit[o + 1]]).to_f32() * factor;
                    unit[o..o + 2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                }
            }
        }
    }

    /// Elements per unit: tensors tiled by this must hold a multiple of it.
    pub fn unit_elems(&self) -> usize {
        self.unit_elems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_decode_to_sane_values() {
        let mut rng = Rng::new(7);
        for ty in [
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
            GgmlType::Q8_0,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::F32,
        ] {
            let t = Tiler::new(ty, 0.02, &mut rng).unwrap();
            let n = 4096;
            let mut bytes = vec![0u8; ty.bytes_for(n as u64).unwrap() as usize];
            t.fill(&mut bytes, &mut rng);
            let v = quant::dequantize_to_vec(ty, &bytes, n).unwrap();
            let mean = v.iter().sum::<f32>() / n as f32;
            let std = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n as f32).sqrt();
            assert!(v.iter().all(|x| x.is_finite() && x.abs() < 0.2), "{ty}");
            assert!(mean.abs() < 0.004 && (0.01..0.04).contains(&std), "{ty}: mean {mean} std {std}");
        }
    }
}
