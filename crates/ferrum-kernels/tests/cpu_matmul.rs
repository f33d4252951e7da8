//! `cpu::matmul` against an f64 reference at awkward sizes, and the
//! bit-exactness guarantees: AVX2 == scalar, and results independent of the
//! batch size, tiling, strategy, thread count and data alignment.

mod cpu_util;

use cpu_util::*;
use ferrum_core::GgmlType;
use ferrum_kernels::cpu::{
    matmul, matmul_with, supports, Kernel, KernelError, MatmulOptions, QMatRef, Strategy,
};

fn cols_for(ty: GgmlType) -> [usize; 3] {
    match ty.block_size() {
        256 => [256, 512, 2816 + 256],
        32 => [32, 96, 2816 + 256],
        _ => [1, 13, 2816 + 256 + 5],
    }
}

fn run(w: &QMatRef<'_>, x: &[f32], m: usize, opts: MatmulOptions) -> Vec<f32> {
    let mut y = vec![f32::NAN; m * w.rows];
    matmul_with(w, x, m, &mut y, &opts).expect("matmul");
    y
}

fn kernels() -> Vec<Kernel> {
    let mut k = vec![Kernel::Scalar];
    if Kernel::Avx2.available() {
        k.push(Kernel::Avx2);
    }
    k
}

fn check_close(ty: GgmlType, what: &str, y: &[f32], r: &(Vec<f64>, Vec<f64>)) {
    for (k, (&got, (&want, &mag))) in y.iter().zip(r.0.iter().zip(&r.1)).enumerate() {
        let tol = 4e-5 * mag + 1e-30;
        assert!(
            ((got as f64) - want).abs() <= tol,
            "{ty} {what}: output {k}: got {got}, want {want} (tol {tol:e})"
        );
    }
}

/// Every type, every kernel and strategy, against the f64 reference.
#[test]
fn matches_f64_reference() {
    let mut rng = Rng::new(1);
    for ty in ALL_TYPES {
        let cols = cols_for(ty);
        for &(rows, c, m) in &[
            (1, cols[0], 1),
            (3, cols[1], 2),
            (17, cols[2], 7),
            (257, cols[1], 33),
            (5, cols[2], 33),
        ] {
            for gaussian in [true, false] {
                if !gaussian && !ty.is_quantized() {
                    continue;
                }
                let data = if gaussian {
                    gaussian_weights(ty, rows, c, &mut rng)
                } else {
                    random_blocks(ty, rows, c, &mut rng)
                };
                let w = QMatRef {
                    ty,
                    data: &data,
                    rows,
                    cols: c,
                };
                let x = activations(m, c, &mut rng);
                let r = reference(ty, &data, rows, c, &x, m);
                for kernel in kernels() {
                    for strategy in [Strategy::Direct, Strategy::Tiled] {
                        let opts = MatmulOptions {
                            kernel: Some(kernel),
                            strategy,
                            ..Default::default()
                        };
                        let y = run(&w, &x, m, opts);
                        let what = format!("rows {rows} cols {c} m {m} {kernel:?} {strategy:?} gaussian {gaussian}");
                        check_close(ty, &what, &y, &r);
                    }
                }
            }
        }
    }
}

/// The AVX2 paths give exactly the scalar path's bits, for every type, and
/// every output is independent of m, strategy, tiling, threads and alignment.
#[test]
fn bit_exact_everywhere() {
    let mut rng = Rng::new(2);
    for ty in ALL_TYPES {
        let cols = cols_for(ty);
        for &(rows, c, m) in &[(17, cols[2], 33), (257, cols[1], 9), (3, cols[0], 6)] {
            for gaussian in [true, false] {
                if !gaussian && !ty.is_quantized() {
                    continue;
                }
                let data = if gaussian {
                    gaussian_weights(ty, rows, c, &mut rng)
                } else {
                    random_blocks(ty, rows, c, &mut rng)
                };
                let w = QMatRef {
                    ty,
                    data: &data,
                    rows,
                    cols: c,
                };
                let x = activations(m, c, &mut rng);
                let want = bits(&run(
                    &w,
                    &x,
                    m,
                    MatmulOptions {
                        kernel: Some(Kernel::Scalar),
                        max_threads: 1,
                        ..Default::default()
                    },
                ));
                let ctx = format!("{ty} rows {rows} cols {c} m {m} gaussian {gaussian}");

                for kernel in kernels() {
                    for strategy in [Strategy::Auto, Strategy::Direct, Strategy::Tiled] {
                        for (threads, per) in [(0, 0), (1, 0), (0, 1), (2, 3), (0, 7)] {
                            let opts = MatmulOptions {
                                kernel: Some(kernel),
                                strategy,
                                max_threads: threads,
                                rows_per_task: per,
                            };
                            assert_eq!(bits(&run(&w, &x, m, opts)), want, "{ctx}: {opts:?}");
                        }
                        // One activation row (decode: the 8-row kernels) over
                        // task sizes that leave 1..7 rows in the last group.
                        for (threads, per) in [(1, 0), (0, 1), (2, 3), (0, 9), (0, 13), (1, 20)] {
                            let opts = MatmulOptions {
                                kernel: Some(kernel),
                                strategy,
                                max_threads: threads,
                                rows_per_task: per,
                            };
                            let y = run(&w, &x[c..2 * c], 1, opts);
                            assert_eq!(bits(&y), want[rows..2 * rows], "{ctx}: m 1 {opts:?}");
                        }
                        // One activation row at a time (decode) and odd batches.
                        let opts = MatmulOptions {
                            kernel: Some(kernel),
                            strategy,
                            ..Default::default()
                        };
                        for (start, len) in [(0, 1), (m - 1, 1), (1, m - 1), (2, 5.min(m - 2))] {
                            let y = run(&w, &x[start * c..(start + len) * c], len, opts);
                            assert_eq!(
                                bits(&y),
                                want[start * rows..(start + len) * rows],
                                "{ctx}: rows {start}..+{len} {opts:?}"
                            );
                        }
                    }
                    // Weight row subsets (different pairing into tiles).
                    let rb = data.len() / rows;
                    for (r0, n) in [(1, rows - 1), (rows - 1, 1)] {
                        if n == 0 {
                            continue;
                        }
                        let sub = QMatRef {
                            ty,
                            data: &data[r0 * rb..(r0 + n) * rb],
                            rows: n,
                            cols: c,
                        };
                        let y = run(
                            &sub,
                            &x,
                            m,
                            MatmulOptions {
                                kernel: Some(kernel),
                                ..Default::default()
                            },
                        );
                        for i in 0..m {
                            assert_eq!(
                                bits(&y[i * n..(i + 1) * n]),
                                want[i * rows + r0..i * rows + r0 + n],
                                "{ctx}: weight rows {r0}..+{n}"
                            );
                        }
                    }
                    // Misaligned weight bytes.
                    let mut shifted = vec![0u8; data.len() + 1];
                    shifted[1..].copy_from_slice(&data);
                    let mis = QMatRef {
                        ty,
                        data: &shifted[1..],
                        rows,
                        cols: c,
                    };
                    assert_eq!(
                        bits(&run(
                            &mis,
                            &x,
                            m,
                            MatmulOptions {
                                kernel: Some(kernel),
                                ..Default::default()
                            }
                        )),
                        want,
                        "{ctx}: misaligned"
                    );
                }
            }
        }
    }
}

#[test]
fn supported_types() {
    for ty in ALL_TYPES {
        assert!(supports(ty), "{ty}");
    }
    for ty in [
        GgmlType::Q8_1,
        GgmlType::Q8K,
        GgmlType::I8,
        GgmlType::I32,
        GgmlType::F64,
    ] {
        assert!(!supports(ty), "{ty}");
    }
}

#[test]
fn errors_name_the_sizes() {
    let data = vec![0u8; 144 * 2];
    let w = QMatRef {
        ty: GgmlType::Q4K,
        data: &data,
        rows: 2,
        cols: 256,
    };
    let x = vec![0.0f32; 256];
    let mut y = vec![0.0f32; 2];
    assert!(matmul(&w, &x, 1, &mut y).is_ok());

    let e = matmul(&w, &x[..255], 1, &mut y).unwrap_err();
    assert!(
        matches!(
            e,
            KernelError::Length {
                got: 255,
                expected: 256,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("255"), "{e}");
    let e = matmul(&w, &x, 1, &mut y[..1]).unwrap_err();
    assert!(
        matches!(
            e,
            KernelError::Length {
                got: 1,
                expected: 2,
                ..
            }
        ),
        "{e}"
    );
    let short = QMatRef {
        data: &data[..200],
        ..w
    };
    let e = matmul(&short, &x, 1, &mut y).unwrap_err();
    assert_eq!(
        e,
        KernelError::WeightBytes {
            ty: GgmlType::Q4K,
            rows: 2,
            cols: 256,
            expected: 288,
            got: 200
        }
    );
    let odd = QMatRef { cols: 100, ..w };
    let e = matmul(&odd, &x[..100], 1, &mut y).unwrap_err();
    assert_eq!(
        e,
        KernelError::ColsNotBlockMultiple {
            ty: GgmlType::Q4K,
            cols: 100,
            block: 256
        }
    );
    let q81 = QMatRef {
        ty: GgmlType::Q8_1,
        ..w
    };
    assert_eq!(
        matmul(&q81, &x, 1, &mut y).unwrap_err(),
        KernelError::UnsupportedType(GgmlType::Q8_1)
    );
    let huge = QMatRef {
        rows: usize::MAX,
        ..w
    };
    assert!(matches!(
        matmul(&huge, &x, 1, &mut y).unwrap_err(),
        KernelError::Overflow { .. }
    ));
    // m = 0 and rows = 0 are fine no-ops.
    assert!(matmul(&w, &[], 0, &mut []).is_ok());
    let none = QMatRef {
        data: &[],
        rows: 0,
        ..w
    };
    assert!(matmul(&none, &x, 1, &mut []).is_ok());
}

/// Non-finite activations never panic and stay deterministic.
#[test]
fn non_finite_inputs_do_not_panic() {
    let mut rng = Rng::new(3);
    for ty in [GgmlType::Q4K, GgmlType::Q8_0, GgmlType::F16] {
        let cols = 256;
        let data = gaussian_weights(ty, 4, cols, &mut rng);
        let w = QMatRef {
            ty,
            data: &data,
            rows: 4,
            cols,
        };
        let mut x = activations(2, cols, &mut rng);
        x[3] = f32::NAN;
        x[300] = f32::INFINITY;
        let a = run(
            &w,
            &x,
            2,
            MatmulOptions {
                kernel: Some(Kernel::Scalar),
                ..Default::default()
            },
        );
        for kernel in kernels() {
            let b = run(
                &w,
                &x,
                2,
                MatmulOptions {
                    kernel: Some(kernel),
                    ..Default::default()
                },
            );
            assert_eq!(bits(&a), bits(&b), "{ty} {kernel:?}");
        }
    }
}

/// A batch of products equals the products run one by one, bit for bit.
#[test]
fn matmul_many_equals_separate_calls() {
    use ferrum_kernels::cpu::{matmul_many, MatmulJob};
    let mut rng = Rng::new(7);
    let specs = [
        (GgmlType::Q4K, 33, 512, 1),
        (GgmlType::Q5_0, 17, 96, 3),
        (GgmlType::F16, 5, 13, 2),
        (GgmlType::Q6K, 768, 256, 1),
    ];
    let data: Vec<Vec<u8>> = specs
        .iter()
        .map(|&(ty, r, c, _)| gaussian_weights(ty, r, c, &mut rng))
        .collect();
    let xs: Vec<Vec<f32>> = specs
        .iter()
        .map(|&(_, _, c, m)| activations(m, c, &mut rng))
        .collect();
    let ws: Vec<QMatRef<'_>> = specs
        .iter()
        .zip(&data)
        .map(|(&(ty, rows, cols, _), d)| QMatRef {
            ty,
            data: d,
            rows,
            cols,
        })
        .collect();
    let want: Vec<Vec<u32>> = ws
        .iter()
        .zip(&xs)
        .zip(&specs)
        .map(|((w, x), s)| bits(&run(w, x, s.3, MatmulOptions::default())))
        .collect();
    let mut ys: Vec<Vec<f32>> = specs
        .iter()
        .map(|&(_, r, _, m)| vec![f32::NAN; r * m])
        .collect();
    let mut jobs: Vec<MatmulJob<'_>> = ws
        .iter()
        .zip(&xs)
        .zip(ys.iter_mut())
        .zip(&specs)
        .map(|(((w, x), y), s)| MatmulJob {
            w: *w,
            x,
            m: s.3,
            y,
        })
        .collect();
    matmul_many(&mut jobs).expect("matmul_many");
    drop(jobs);
    for (k, (y, want)) in ys.iter().zip(&want).enumerate() {
        assert_eq!(&bits(y), want, "job {k}");
    }
    // A bad job fails the whole batch before anything runs.
    let mut short = vec![0.0f32; 3];
    let mut bad = [MatmulJob {
        w: ws[0],
        x: &xs[0],
        m: 1,
        y: &mut short,
    }];
    assert!(matches!(
        matmul_many(&mut bad),
        Err(KernelError::Length { .. })
    ));
}

/// Parts of a fused weight (mixed types, one shared input) written side by
/// side equal the parts run one by one, bit for bit, for every kernel and
/// strategy and for batch sizes on both sides of the direct/tiled switch.
#[test]
fn matmul_parts_equal_separate_calls() {
    use ferrum_kernels::cpu::matmul_parts_with;
    let mut rng = Rng::new(11);
    let cols = 512;
    // Q5_0 Q/K + Q8_0 V as in Qwen2.5's Q4_K_M, plus K-quant, dense and
    // odd-sized parts; a K-quant part next to a legacy one needs both
    // activation formats of the same input.
    let specs = [
        (GgmlType::Q5_0, 37),
        (GgmlType::Q8_0, 9),
        (GgmlType::Q4K, 20),
        (GgmlType::F16, 3),
        (GgmlType::Q6K, 1),
        (GgmlType::Q5_0, 16),
    ];
    let data: Vec<Vec<u8>> = specs
        .iter()
        .map(|&(ty, r)| gaussian_weights(ty, r, cols, &mut rng))
        .collect();
    let ws: Vec<QMatRef<'_>> = specs
        .iter()
        .zip(&data)
        .map(|(&(ty, rows), d)| QMatRef {
            ty,
            data: d,
            rows,
            cols,
        })
        .collect();
    let total: usize = specs.iter().map(|s| s.1).sum();
    for m in [1, 2, 3, 5, 8, 70] {
        let x = activations(m, cols, &mut rng);
        for kernel in kernels() {
            for strategy in [Strategy::Auto, Strategy::Direct, Strategy::Tiled] {
                let opts = MatmulOptions {
                    kernel: Some(kernel),
                    strategy,
                    ..MatmulOptions::default()
                };
                let mut want = vec![0u32; m * total];
                let mut col = 0;
                for w in &ws {
                    let y = bits(&run(w, &x, m, opts));
                    for i in 0..m {
                        want[i * total + col..i * total + col + w.rows]
                            .copy_from_slice(&y[i * w.rows..(i + 1) * w.rows]);
                    }
                    col += w.rows;
                }
                let mut y = vec![f32::NAN; m * total];
                matmul_parts_with(&ws, &x, m, &mut y, &opts).expect("matmul_parts");
                assert_eq!(bits(&y), want, "m {m} {kernel:?} {strategy:?}");
            }
        }
    }
    // Wrong output or input sizes are errors that name the sizes.
    let x = activations(2, cols, &mut rng);
    let mut short = vec![0.0f32; 2 * total - 1];
    assert!(matches!(
        matmul_parts_with(&ws, &x, 2, &mut short, &MatmulOptions::default()),
        Err(KernelError::Length { .. })
    ));
    let mut y = vec![0.0f32; 2 * total];
    assert!(matches!(
        matmul_parts_with(&ws, &x[..cols], 2, &mut y, &MatmulOptions::default()),
        Err(KernelError::Length { .. })
    ));
}
