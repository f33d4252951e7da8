//! quantize -> dequantize round trips on seeded random data: the error must
//! stay within what each format can represent.

mod quant_util;

use ferrum_core::GgmlType;
use ferrum_format::quant::{can_quantize, dequantize_to_vec, quantize};
use quant_util::Rng;

fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let q = quantize(ty, x).unwrap();
    assert_eq!(q.len() as u64, ty.bytes_for(x.len() as u64).unwrap());
    dequantize_to_vec(ty, &q, x.len()).unwrap()
}

fn rms(v: impl Iterator<Item = f32>) -> f32 {
    let (s, n) = v.fold((0.0f64, 0usize), |(s, n), e| {
        (s + f64::from(e) * f64::from(e), n + 1)
    });
    (s / n.max(1) as f64).sqrt() as f32
}

/// Largest |error| in each block must stay below `bound(block)`.
fn check_blockwise(ty: GgmlType, x: &[f32], y: &[f32], bound: impl Fn(&[f32]) -> f32) {
    let bs = ty.block_size();
    for (i, (xb, yb)) in x.chunks(bs).zip(y.chunks(bs)).enumerate() {
        let worst = xb
            .iter()
            .zip(yb)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let limit = bound(xb);
        assert!(
            worst <= limit,
            "{ty} block {i}: max error {worst:e} > bound {limit:e}"
        );
    }
}

fn amax(b: &[f32]) -> f32 {
    b.iter().fold(0.0f32, |a, v| a.max(v.abs()))
}

fn spread(b: &[f32]) -> f32 {
    let lo = b.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    hi - lo
}

/// Gaussian data whose scale varies block to block (1e-3 .. 1e2).
fn test_data(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut x = rng.gaussians(n, 1.0);
    for chunk in x.chunks_mut(256) {
        let s = 10f32.powf(rng.uniform() as f32 * 5.0 - 3.0);
        chunk.iter_mut().for_each(|v| *v *= s);
    }
    x
}

#[test]
fn floats_round_trip() {
    let x = test_data(1, 4096);
    assert_eq!(round_trip(GgmlType::F32, &x), x);
    for (ty, rel) in [(GgmlType::F16, 1.0 / 2048.0), (GgmlType::BF16, 1.0 / 256.0)] {
        let y = round_trip(ty, &x);
        for (a, b) in x.iter().zip(&y) {
            // Half a step relative, or half the smallest f16 subnormal (2^-25).
            assert!((a - b).abs() <= rel * a.abs() + 3e-8, "{ty}: {a} -> {b}");
        }
    }
}

#[test]
fn legacy_error_bounds() {
    let x = test_data(2, 32 * 256);
    // The f16 rounding of the block scale adds up to ~2^-11 relative to the
    // block extreme; the rest is half a step (a full step at the clamped end
    // for the symmetric 4/5-bit types, whose positive side is one level short).
    let f16_slack = |b: &[f32]| amax(b) * 2e-3;
    let y = round_trip(GgmlType::Q8_0, &x);
    check_blockwise(GgmlType::Q8_0, &x, &y, |b| {
        amax(b) / 127.0 * 0.5 + f16_slack(b)
    });
    let y = round_trip(GgmlType::Q4_0, &x);
    check_blockwise(GgmlType::Q4_0, &x, &y, |b| amax(b) / 8.0 + f16_slack(b));
    let y = round_trip(GgmlType::Q5_0, &x);
    check_blockwise(GgmlType::Q5_0, &x, &y, |b| amax(b) / 16.0 + f16_slack(b));
    let y = round_trip(GgmlType::Q4_1, &x);
    check_blockwise(GgmlType::Q4_1, &x, &y, |b| {
        spread(b) / 15.0 + f16_slack(b) * 8.0
    });
    let y = round_trip(GgmlType::Q5_1, &x);
    check_blockwise(GgmlType::Q5_1, &x, &y, |b| {
        spread(b) / 31.0 + f16_slack(b) * 16.0
    });
}

#[test]
fn k_quant_error_bounds() {
    // Unit Gaussian: relative RMSE limits a bit above what the searches reach
    // (see docs/bench/quant-rmse.md), plus a per-super-block max-error bound.
    let mut rng = Rng::new(3);
    let x = rng.gaussians(256 * 64, 1.0);
    for (ty, rmse_limit, step_frac) in [
        (GgmlType::Q4K, 0.080, 1.0 / 7.0),
        (GgmlType::Q5K, 0.040, 1.0 / 15.0),
        (GgmlType::Q6K, 0.020, 1.0 / 30.0),
        (GgmlType::Q8K, 0.008, 1.0 / 127.0),
    ] {
        let y = round_trip(ty, &x);
        let err = rms(x.iter().zip(&y).map(|(a, b)| a - b));
        assert!(err < rmse_limit, "{ty}: RMSE {err} >= {rmse_limit}");
        check_blockwise(ty, &x, &y, |b| amax(b) * step_frac);
    }
    // The same holds relative to the data's scale at other magnitudes.
    let x = test_data(4, 256 * 32);
    for ty in [GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K, GgmlType::Q8K] {
        let y = round_trip(ty, &x);
        for (xb, yb) in x.chunks(256).zip(y.chunks(256)) {
            let rel = rms(xb.iter().zip(yb).map(|(a, b)| a - b)) / rms(xb.iter().copied());
            assert!(
                rel < 0.1,
                "{ty}: relative RMSE {rel} at scale {}",
                rms(xb.iter().copied())
            );
        }
    }
}

#[test]
fn special_inputs_round_trip() {
    let quantizable: Vec<GgmlType> = GgmlType::ALL
        .into_iter()
        .filter(|t| can_quantize(*t))
        .collect();
    assert_eq!(quantizable.len(), 12);
    for ty in quantizable {
        let n = 512;
        // All zeros decode to zeros.
        assert!(
            round_trip(ty, &vec![0.0; n]).iter().all(|v| *v == 0.0),
            "{ty}: zeros"
        );
        // A constant block is reproduced closely.
        let y = round_trip(ty, &vec![0.37; n]);
        assert!(
            y.iter().all(|v| (v - 0.37).abs() < 0.37 * 0.07),
            "{ty}: constant -> {:?}",
            &y[..4]
        );
        let y = round_trip(ty, &vec![-1.5; n]);
        assert!(
            y.iter().all(|v| (v + 1.5).abs() < 1.5 * 0.07),
            "{ty}: constant -> {:?}",
            &y[..4]
        );
        // A single spike in a zero block survives.
        let mut x = vec![0.0; n];
        x[77] = 4.0;
        let y = round_trip(ty, &x);
        assert!((y[77] - 4.0).abs() < 0.1, "{ty}: spike -> {}", y[77]);
        // Non-finite input must not panic (the output is unspecified).
        let mut x = Rng::new(9).gaussians(n, 1.0);
        x[3] = f32::NAN;
        x[300] = f32::INFINITY;
        x[301] = f32::NEG_INFINITY;
        let q = quantize(ty, &x).unwrap();
        let _ = dequantize_to_vec(ty, &q, n).unwrap();
    }
}
