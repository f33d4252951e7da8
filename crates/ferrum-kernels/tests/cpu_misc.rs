//! Activation quantization (AVX2 == scalar), the worker pool and `gemm_f32`.

mod cpu_util;

use cpu_util::*;
use ferrum_kernels::cpu::act_quant::{quantize_row, ActQ8K, ActQ8_32};
use ferrum_kernels::cpu::{gemm_f32, num_threads, par_for, Kernel};
use std::sync::atomic::{AtomicUsize, Ordering};

#[test]
fn act_quant_avx2_matches_scalar() {
    if !Kernel::Avx2.available() {
        return;
    }
    let mut rng = Rng::new(4);
    let mut x: Vec<f32> = (0..1024).map(|_| rng.gauss() * 3.0).collect();
    x[5] = f32::NAN;
    x[300] = f32::NEG_INFINITY;
    x[600..632].fill(0.0);
    x[700] = 1e-30;
    // Values exactly halfway between quantization steps.
    for (k, v) in x[800..832].iter_mut().enumerate() {
        *v = (k as f32 - 16.0) + 0.5;
    }
    x[831] = 127.0;
    let (mut a, mut b) = (vec![ActQ8K::ZERO; 4], vec![ActQ8K::ZERO; 4]);
    quantize_row(&x, &mut a, Kernel::Scalar);
    quantize_row(&x, &mut b, Kernel::Avx2);
    for (p, q) in a.iter().zip(&b) {
        assert_eq!(p.d.to_bits(), q.d.to_bits());
        assert_eq!(p.qs, q.qs);
        assert_eq!(p.bsums, q.bsums);
    }
    let (mut a, mut b) = (vec![ActQ8_32::ZERO; 32], vec![ActQ8_32::ZERO; 32]);
    quantize_row(&x, &mut a, Kernel::Scalar);
    quantize_row(&x, &mut b, Kernel::Avx2);
    for (p, q) in a.iter().zip(&b) {
        assert_eq!(p.d.to_bits(), q.d.to_bits());
        assert_eq!(p.qs, q.qs);
        assert_eq!(p.bsums, q.bsums);
    }
    // Ties round to even: 0.5 -> 0, 1.5 -> 2, -0.5 -> -0, -1.5 -> -2 (scale 1).
    let blk = &a[25];
    assert_eq!(blk.d, 1.0);
    assert_eq!(&blk.qs[14..20], &[-2, 0, 0, 2, 2, 4]);
}

#[test]
fn act_quant_accuracy() {
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..512).map(|_| rng.gauss()).collect();
    let mut a = vec![ActQ8K::ZERO; 2];
    quantize_row(&x, &mut a, Kernel::best());
    for (b, xs) in a.iter().zip(x.chunks(256)) {
        let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (e, &v) in xs.iter().enumerate() {
            assert!(
                (b.value(e) - v).abs() <= 0.5 * amax / 127.0 * 1.0001,
                "{e}: {} vs {v}",
                b.value(e)
            );
        }
        for s in 0..16 {
            assert_eq!(
                b.bsums[s] as i32,
                b.qs[16 * s..16 * s + 16]
                    .iter()
                    .map(|&q| q as i32)
                    .sum::<i32>()
            );
        }
    }
}

#[test]
fn pool_runs_each_index_once() {
    assert!(num_threads() >= 1);
    for n in [1usize, 2, 5, 64, 1000] {
        let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        par_for(n, |i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }
    // Many tiny jobs back to back (the decode pattern).
    let total = AtomicUsize::new(0);
    for _ in 0..2000 {
        par_for(3, |_| {
            total.fetch_add(1, Ordering::Relaxed);
        });
    }
    assert_eq!(total.load(Ordering::Relaxed), 6000);
}

#[test]
fn gemm_f32_matches_naive() {
    let mut rng = Rng::new(6);
    for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (33, 17, 64), (64, 130, 200)] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.gauss()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.gauss()).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut c = vec![f32::NAN; m * n];
        let mut ct = vec![f32::NAN; m * n];
        gemm_f32(&a, &b, &mut c, m, n, k, false).expect("gemm");
        gemm_f32(&a, &bt, &mut ct, m, n, k, true).expect("gemm t");
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                    .sum();
                let mag: f64 = (0..k)
                    .map(|p| (a[i * k + p] as f64 * b[p * n + j] as f64).abs())
                    .sum();
                for got in [c[i * n + j], ct[i * n + j]] {
                    assert!(
                        (got as f64 - want).abs() <= 1e-5 * mag + 1e-6,
                        "({m},{n},{k}) [{i},{j}] {got} vs {want}"
                    );
                }
            }
        }
    }
    let mut c = vec![0.0; 4];
    assert!(gemm_f32(&[0.0; 3], &[0.0; 4], &mut c, 2, 2, 2, false).is_err());
}
