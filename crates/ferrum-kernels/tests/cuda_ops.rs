//! Every CUDA op against a slow reference (f64 products on dequantized
//! weights) or against the CPU backend (itself tested against references),
//! at awkward sizes. Runs only where a GPU is present (scripts/gpu-check.sh
//! sets FERRUM_REQUIRE_GPU=1 so that a missing GPU fails instead of skipping).
#![cfg(feature = "cuda")]

mod cpu_util;

use cpu_util::{activations, gaussian_weights, random_blocks, Rng};
use ferrum_core::GgmlType;
use ferrum_kernels::cuda::{device_available, weight_types, CudaBackend, CudaOptions};
use ferrum_kernels::{AttnMeta, Backend, CpuBackend, HeadSpec, HostBytes, HostWeight, KvDType, KvSpec, Mat, MoeSpec, MoeWeights, Rope, RopeStyle, SeqPlan};
use std::sync::Arc;


fn gpu() -> Option<CudaBackend> {
    gpu_with(CudaOptions::default())
}

fn gpu_with(opts: CudaOptions) -> Option<CudaBackend> {
    if !device_available() {
        assert!(std::env::var_os("FERRUM_REQUIRE_GPU").is_none(), "FERRUM_REQUIRE_GPU is set but no CUDA device was found");
        eprintln!("skipped: no CUDA device");
        return None;
    }
    // Compiled kernels are cached across the tests' backends.
    let opts = CudaOptions { cache_dir: Some(std::env::temp_dir().join("ferrum-test-kernels")), ..opts };
    Some(CudaBackend::new(&opts).unwrap_or_else(|e| panic!("{e}")))
}

/// Activations as the 8-bit GEMV kernels see them: blocks of 32 scaled by
/// max|x| / 127 and rounded to the nearest integer (ties to even).
fn q8_activations(x: &[f32]) -> Vec<f32> {
    x.chunks(32)
        .flat_map(|b| {
            let d = b.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
            b.iter().map(move |&v| if d > 0.0 { (v / d).round_ties_even() * d } else { 0.0 })
        })
        .collect()
}

fn weight(name: &str, ty: GgmlType, dims: Vec<usize>, bytes: Vec<u8>) -> HostWeight {
    HostWeight { name: name.into(), ty, dims, bytes: HostBytes::Owned(Arc::new(bytes)) }
}

fn f32_weight(name: &str, dims: Vec<usize>, v: &[f32]) -> HostWeight {
    weight(name, GgmlType::F32, dims, v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths");
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// f64 `x · Wᵀ` on the dequantized weight and the f32 activations, with
/// Σ|w·x| per output for the tolerance.
fn reference(ty: GgmlType, data: &[u8], rows: usize, cols: usize, x: &[f32], m: usize) -> (Vec<f64>, Vec<f64>) {
    let w = ferrum_format::quant::dequantize_to_vec(ty, data, rows * cols).unwrap();
    let mut y = vec![0.0; m * rows];
    let mut mag = vec![0.0; m * rows];
    for i in 0..m {
        for j in 0..rows {
            for e in 0..cols {
                let p = w[j * cols + e] as f64 * x[i * cols + e] as f64;
                y[i * rows + j] += p;
                mag[i * rows + j] += p.abs();
            }
        }
    }
    (y, mag)
}

#[test]
fn linear_every_type_matches_reference() {
    let Some(q8) = gpu() else { return };
    let Some(exact) = gpu_with(CudaOptions { float_activations: true, ..Default::default() }) else { return };
    let mut rng = Rng::new(7);
    let mut failures = Vec::new();
    for ty in weight_types() {
        for &(rows, cols) in &[(1usize, 256usize), (67, 512), (5, 768), (19, 2816)] {
            let data = if ty == GgmlType::Q2K || ty == GgmlType::Q3K { random_blocks(ty, rows, cols, &mut rng) } else { gaussian_weights(ty, rows, cols, &mut rng) };
            // m = 1..8 and 9 use the GEMV kernels (one and two passes), 17 and 64 the f16 GEMM.
            for m in [1usize, 3, 8, 9, 17, 64] {
                let x = activations(m, cols, &mut rng);
                for (g, exact_x) in [(&exact, true), (&q8, false)] {
                    let w = g.upload(weight("w", ty, vec![cols, rows], data.clone())).unwrap();
                    let xa = g.act_from_host(&x, m, cols).unwrap();
                    let mut out = g.alloc(0, 0).unwrap();
                    g.linear(&xa, &w, None, &mut out).unwrap();
                    let got = g.to_host(&out).unwrap();
                    // Quantized weights of the 8-bit kernels' types see 8-bit activations
                    // (the float types keep f32 activations on either backend).
                    let xq = if exact_x || m >= 16 || ty.block_size() == 1 || ty == GgmlType::Q2K || ty == GgmlType::Q3K { x.clone() } else { q8_activations(&x) };
                    let (want, mag) = reference(ty, &data, rows, cols, &xq, m);
                    let tol = if m >= 16 { 4e-3 } else { 1e-5 };
                    let bad = got.iter().zip(want.iter().zip(&mag)).filter(|(&gv, (&wv, &mv))| (gv as f64 - wv).abs() > tol * mv + 1e-5).count();
                    if bad > 0 {
                        failures.push(format!("{ty} [{rows}x{cols}] m={m} exact={exact_x}: {bad} outputs off"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn fused_mixed_types_with_bias_equal_separate_products() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(11);
    let cols = 256;
    let parts = [(GgmlType::Q5_0, 96usize), (GgmlType::Q5_0, 32), (GgmlType::Q8_0, 32)];
    for m in [1usize, 5, 33] {
        let x = activations(m, cols, &mut rng);
        let xa = g.act_from_host(&x, m, cols).unwrap();
        let mut ws = Vec::new();
        let mut bs = Vec::new();
        let mut separate = Vec::new();
        for (i, &(ty, rows)) in parts.iter().enumerate() {
            let data = gaussian_weights(ty, rows, cols, &mut rng);
            let b: Vec<f32> = (0..rows).map(|_| rng.gauss()).collect();
            let w1 = g.upload(weight("p", ty, vec![cols, rows], data.clone())).unwrap();
            let b1 = g.upload(f32_weight("b", vec![rows], &b)).unwrap();
            let mut o = g.alloc(0, 0).unwrap();
            g.linear(&xa, &w1, Some(&b1), &mut o).unwrap();
            separate.push((rows, g.to_host(&o).unwrap()));
            ws.push(g.upload(weight(&format!("p{i}"), ty, vec![cols, rows], data)).unwrap());
            bs.push(g.upload(f32_weight("b", vec![rows], &b)).unwrap());
        }
        let w = g.fuse(ws).unwrap();
        let b = g.fuse(bs).unwrap();
        let mut out = g.alloc(0, 0).unwrap();
        g.linear(&xa, &w, Some(&b), &mut out).unwrap();
        let got = g.to_host(&out).unwrap();
        let total: usize = parts.iter().map(|p| p.1).sum();
        let mut want = vec![0.0f32; m * total];
        let mut off = 0;
        for (rows, v) in &separate {
            for r in 0..m {
                want[r * total + off..r * total + off + rows].copy_from_slice(&v[r * rows..(r + 1) * rows]);
            }
            off += rows;
        }
        assert_eq!(got, want, "m={m}");
    }
}

fn cpu_mat(v: &[f32], rows: usize, cols: usize) -> Mat {
    Mat::from_vec(v.to_vec(), rows, cols).unwrap()
}

#[test]
fn embed_norms_and_elementwise_match_cpu() {
    let Some(g) = gpu() else { return };
    let c = CpuBackend;
    let mut rng = Rng::new(3);
    for ty in weight_types() {
        let (vocab, cols) = (37, 256);
        let data = if ty == GgmlType::Q2K || ty == GgmlType::Q3K { random_blocks(ty, vocab, cols, &mut rng) } else { gaussian_weights(ty, vocab, cols, &mut rng) };
        let ids = [0u32, 36, 5, 5, 17];
        let (mut a, mut b) = (g.alloc(0, 0).unwrap(), Mat::default());
        g.embed(&g.upload(weight("t", ty, vec![cols, vocab], data.clone())).unwrap(), &ids, &mut a).unwrap();
        c.embed(&c.upload(weight("t", ty, vec![cols, vocab], data)).unwrap(), &ids, &mut b).unwrap();
        assert_eq!(g.to_host(&a).unwrap(), b.data, "embed {ty}");
    }
    for &(rows, cols) in &[(1usize, 7usize), (3, 896), (17, 2048), (2, 257)] {
        let x: Vec<f32> = (0..rows * cols).map(|_| rng.gauss()).collect();
        let d: Vec<f32> = (0..rows * cols).map(|_| rng.gauss()).collect();
        let wv: Vec<f32> = (0..cols).map(|_| 1.0 + 0.1 * rng.gauss()).collect();
        let (gw, cw) = (g.upload(f32_weight("n", vec![cols], &wv)).unwrap(), c.upload(f32_weight("n", vec![cols], &wv)).unwrap());
        let (gx, cx) = (g.act_from_host(&x, rows, cols).unwrap(), cpu_mat(&x, rows, cols));
        let (mut go, mut co) = (g.alloc(0, 0).unwrap(), Mat::default());
        g.rms_norm(&gx, &gw, 1e-6, &mut go).unwrap();
        c.rms_norm(&cx, &cw, 1e-6, &mut co).unwrap();
        assert!(rel_l2(&g.to_host(&go).unwrap(), &co.data) < 1e-6, "rms_norm {rows}x{cols}");
        let (mut gr, mut cr) = (g.act_from_host(&x, rows, cols).unwrap(), cpu_mat(&x, rows, cols));
        let (gd, cd) = (g.act_from_host(&d, rows, cols).unwrap(), cpu_mat(&d, rows, cols));
        g.add_rms_norm(&mut gr, &gd, &gw, 1e-6, &mut go).unwrap();
        c.add_rms_norm(&mut cr, &cd, &cw, 1e-6, &mut co).unwrap();
        assert_eq!(g.to_host(&gr).unwrap(), cr.data, "residual add {rows}x{cols}");
        assert!(rel_l2(&g.to_host(&go).unwrap(), &co.data) < 1e-6, "add_rms_norm {rows}x{cols}");
        if cols % 2 == 0 {
            g.silu_mul(&gx, &mut go).unwrap();
            c.silu_mul(&cx, &mut co).unwrap();
            assert!(rel_l2(&g.to_host(&go).unwrap(), &co.data) < 1e-6, "silu_mul {rows}x{cols}");
        }
        let pick = [rows - 1, 0, rows / 2];
        g.gather_rows(&gx, &pick, &mut go).unwrap();
        c.gather_rows(&cx, &pick, &mut co).unwrap();
        assert_eq!(g.to_host(&go).unwrap(), co.data, "gather_rows");
    }
}

/// One step over several sequences: each `(prefix, new)` sequence has
/// `prefix` cached tokens (written by an earlier step) and `new` new rows.
fn check_attention(heads: HeadSpec, seqs: &[(usize, usize)], style: RopeStyle, qk_norm: bool, dtype: KvDType) {
    let Some(g) = gpu() else { return };
    let c = CpuBackend;
    let hd = heads.head_dim;
    let mut rng = Rng::new((hd * 31 + heads.n_heads) as u64);
    let width = (heads.n_heads + 2 * heads.n_kv_heads) * hd;
    let inv: Vec<f32> = (0..hd / 2).map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / hd as f32)).collect();
    let rope = Rope { style, inv_freq: inv };
    let norms: Vec<Vec<f32>> = (0..2).map(|_| (0..hd).map(|_| 1.0 + 0.2 * rng.gauss()).collect()).collect();
    let (gn, cn): (Vec<_>, Vec<_>) = norms.iter().map(|n| (g.upload(f32_weight("qn", vec![hd], n)).unwrap(), c.upload(f32_weight("qn", vec![hd], n)).unwrap())).unzip();
    let n_blocks: usize = seqs.iter().map(|&(p, n)| (p + n).div_ceil(16)).sum::<usize>() + 2;
    let spec = KvSpec { n_blocks, block_size: 16, n_kv_heads: heads.n_kv_heads, head_dim: hd, dtype };
    let (mut gkv, mut ckv) = (g.alloc_kv(spec).unwrap(), c.alloc_kv(spec).unwrap());
    // Reversed, interleaved block ids: tables need not be contiguous.
    let mut free: Vec<u32> = (0..n_blocks as u32).rev().collect();
    let tables: Vec<Vec<u32>> = seqs.iter().map(|&(p, n)| (0..(p + n).div_ceil(16)).map(|_| free.pop().unwrap()).collect()).collect();
    let mut last = (Vec::new(), Vec::new());
    for step in 0..2 {
        let plans: Vec<SeqPlan<'_>> = seqs
            .iter()
            .zip(&tables)
            .filter(|(&(p, _), _)| step == 1 || p > 0)
            .map(|(&(p, n), t)| if step == 0 { SeqPlan { n_new: p, start_pos: 0, block_table: t } } else { SeqPlan { n_new: n, start_pos: p, block_table: t } })
            .collect();
        if plans.is_empty() {
            continue;
        }
        let meta = AttnMeta::build(&plans, 16, n_blocks, 1 << 20).unwrap();
        let rows = meta.n_rows();
        let qkv: Vec<f32> = (0..rows * width).map(|_| rng.gauss()).collect();
        let (gq, cq) = (g.act_from_host(&qkv, rows, width).unwrap(), cpu_mat(&qkv, rows, width));
        let (gp, cp) = (g.plan(meta.clone()).unwrap(), c.plan(meta).unwrap());
        let (mut gqo, mut cqo) = (g.alloc(0, 0).unwrap(), Mat::default());
        let (qn, kn) = if qk_norm { (Some(&gn[0]), Some(&gn[1])) } else { (None, None) };
        let (cqn, ckn) = if qk_norm { (Some(&cn[0]), Some(&cn[1])) } else { (None, None) };
        g.qk_rope_store(&gq, &mut gqo, qn, kn, &heads, &rope, &gp, &mut gkv).unwrap();
        c.qk_rope_store(&cq, &mut cqo, cqn, ckn, &heads, &rope, &cp, &mut ckv).unwrap();
        let e = rel_l2(&g.to_host(&gqo).unwrap(), &cqo.data);
        assert!(e < 1e-5, "rope q {heads:?}: {e}");
        let (mut go, mut co) = (g.alloc(0, 0).unwrap(), Mat::default());
        g.attention(&gqo, &heads, &gp, &gkv, &mut go).unwrap();
        c.attention(&cqo, &heads, &cp, &ckv, &mut co).unwrap();
        last = (g.to_host(&go).unwrap(), co.data);
        let e = rel_l2(&last.0, &last.1);
        assert!(e < 1e-4, "attention {heads:?} seqs {seqs:?} step {step} {dtype:?}: rel err {e}");
    }
    assert!(!last.0.is_empty());
}

#[test]
fn attention_matches_cpu() {
    let h = |n_heads, n_kv_heads, head_dim, window| HeadSpec { n_heads, n_kv_heads, head_dim, scale: 1.0 / (head_dim as f32).sqrt(), window, norm_eps: 1e-6 };
    let mixed = [(0usize, 1usize), (0, 17), (15, 2), (16, 1), (40, 1), (17, 15), (240, 17), (3, 257)];
    // Decode-only steps take the split-key kernel (up to 600 keys: 16 splits).
    let decode = [(40usize, 1usize), (0, 1), (300, 1), (600, 1), (15, 1)];
    // 18 rows: large groups take eight query heads a block (four below 16 rows).
    let wide: Vec<(usize, usize)> = (0..18).map(|i| (37 * i % 290, 1)).collect();
    for (heads, style, norm) in [
        (h(14, 2, 64, None), RopeStyle::NeoX, false),
        (h(4, 2, 16, None), RopeStyle::GptJ, false),
        (h(32, 4, 128, None), RopeStyle::NeoX, true),
        (h(5, 5, 32, None), RopeStyle::NeoX, true),
        (h(6, 3, 48, None), RopeStyle::GptJ, false),
        (h(8, 1, 256, None), RopeStyle::NeoX, false),
        (h(6, 2, 16, Some(8)), RopeStyle::NeoX, false),
        (h(16, 1, 64, None), RopeStyle::NeoX, false),
    ] {
        for seqs in [&mixed[..], &decode[..], &wide[..]] {
            check_attention(heads, seqs, style, norm, KvDType::F32);
            check_attention(heads, seqs, style, norm, KvDType::F16);
        }
    }
}

#[test]
fn copy_blocks_copies_k_and_v() {
    let Some(g) = gpu() else { return };
    let c = CpuBackend;
    let heads = HeadSpec { n_heads: 2, n_kv_heads: 1, head_dim: 16, scale: 0.25, window: None, norm_eps: 1e-6 };
    let spec = KvSpec { n_blocks: 3, block_size: 16, n_kv_heads: 1, head_dim: 16, dtype: KvDType::F16 };
    let (mut gkv, mut ckv) = (g.alloc_kv(spec).unwrap(), c.alloc_kv(spec).unwrap());
    let rope = Rope { style: RopeStyle::NeoX, inv_freq: vec![0.1; 8] };
    let t0 = [0u32];
    let meta = AttnMeta::build(&[SeqPlan { n_new: 5, start_pos: 0, block_table: &t0 }], 16, 3, 100).unwrap();
    let mut rng = Rng::new(5);
    let qkv: Vec<f32> = (0..5 * 64).map(|_| rng.gauss()).collect();
    let (mut gq, mut cq) = (g.alloc(0, 0).unwrap(), Mat::default());
    g.qk_rope_store(&g.act_from_host(&qkv, 5, 64).unwrap(), &mut gq, None, None, &heads, &rope, &g.plan(meta.clone()).unwrap(), &mut gkv).unwrap();
    c.qk_rope_store(&cpu_mat(&qkv, 5, 64), &mut cq, None, None, &heads, &rope, &meta, &mut ckv).unwrap();
    g.copy_blocks(&mut gkv, &[(0, 2)]).unwrap();
    c.copy_blocks(&mut ckv, &[(0, 2)]).unwrap();
    assert!(g.copy_blocks(&mut gkv, &[(0, 3)]).is_err());
    // Attend from block 2 only: the copy must hold the same keys and values.
    let t2 = [2u32];
    let m2 = AttnMeta::build(&[SeqPlan { n_new: 1, start_pos: 4, block_table: &t2 }], 16, 3, 100).unwrap();
    let q1 = g.act_from_host(&qkv[4 * 32..4 * 32 + 32], 1, 32).unwrap();
    let (mut go, mut co) = (g.alloc(0, 0).unwrap(), Mat::default());
    g.attention(&q1, &heads, &g.plan(m2.clone()).unwrap(), &gkv, &mut go).unwrap();
    c.attention(&cpu_mat(&qkv[4 * 32..4 * 32 + 32], 1, 32), &heads, &m2, &ckv, &mut co).unwrap();
    assert!(rel_l2(&g.to_host(&go).unwrap(), &co.data) < 1e-5);
}

#[test]
fn moe_matches_cpu() {
    let Some(g) = gpu() else { return };
    let c = CpuBackend;
    let mut rng = Rng::new(9);
    for &(ty, down_ty, hidden, ff, n_exp, top_k, renorm) in &[
        (GgmlType::Q8_0, GgmlType::Q8_0, 64usize, 32usize, 8usize, 2usize, false),
        (GgmlType::Q4K, GgmlType::Q6K, 256, 512, 128, 8, true),
        (GgmlType::F32, GgmlType::F16, 96, 64, 40, 3, true),
        (GgmlType::Q5K, GgmlType::Q8_0, 256, 256, 16, 4, false),
    ] {
        let mk = |name: &str, t: GgmlType, dims: Vec<usize>, rng: &mut Rng| {
            let n: usize = dims.iter().product();
            let data = gaussian_weights(t, n / dims[0], dims[0], rng);
            weight(name, t, dims, data)
        };
        let router = mk("router", GgmlType::F32, vec![hidden, n_exp], &mut rng);
        let gate = mk("gate", ty, vec![hidden, ff, n_exp], &mut rng);
        let up = mk("up", ty, vec![hidden, ff, n_exp], &mut rng);
        let down = mk("down", down_ty, vec![ff, hidden, n_exp], &mut rng);
        let gw: Vec<_> = [&router, &gate, &up, &down].iter().map(|w| g.upload((*w).clone()).unwrap()).collect();
        let cw: Vec<_> = [router, gate, up, down].into_iter().map(|w| c.upload(w).unwrap()).collect();
        let spec = MoeSpec { n_experts: n_exp, top_k, renormalize: renorm };
        // One block row per assignment (sorted by expert from 32); larger
        // batches take the int8 tensor-core kernels (k-quant / Q8_0 experts
        // of 256-multiple sizes, 256+ assignments) or, from 1024
        // assignments, dequantized cuBLAS GEMMs (the F32/F16 experts).
        for rows in [1usize, 3, 10, 40, 160, 400] {
            let x: Vec<f32> = (0..rows * hidden).map(|_| rng.gauss()).collect();
            let res: Vec<f32> = (0..rows * hidden).map(|_| rng.gauss()).collect();
            let mut gr = g.act_from_host(&res, rows, hidden).unwrap();
            let mut cr = cpu_mat(&res, rows, hidden);
            g.moe(&g.act_from_host(&x, rows, hidden).unwrap(), &MoeWeights { router: &gw[0], gate: &gw[1], up: &gw[2], down: &gw[3] }, &spec, &mut gr).unwrap();
            c.moe(&cpu_mat(&x, rows, hidden), &MoeWeights { router: &cw[0], gate: &cw[1], up: &cw[2], down: &cw[3] }, &spec, &mut cr).unwrap();
            // The CPU quantizes activations to 8 bits for its integer dot products.
            let e = rel_l2(&g.to_host(&gr).unwrap(), &cr.data);
            assert!(e < 2e-2, "moe {ty}/{down_ty} {n_exp}x top-{top_k} rows {rows}: rel err {e}");
        }
    }
}

/// Time of `f` per call in µs (queued back to back, as in a decode step).
fn time_us(g: &CudaBackend, mut f: impl FnMut()) -> f64 {
    for _ in 0..5 {
        f();
    }
    g.synchronize().unwrap();
    let n = 200;
    let t = std::time::Instant::now();
    for _ in 0..n {
        f();
    }
    g.synchronize().unwrap();
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Decode-shaped products of the benchmark models, f32 and 8-bit activations:
/// `cuda_ops -- --ignored --nocapture gemv_speed`.
#[test]
#[ignore]
fn gemv_speed() {
    let Some(q8) = gpu() else { return };
    let Some(exact) = gpu_with(CudaOptions { float_activations: true, ..Default::default() }) else { return };
    let mut rng = Rng::new(5);
    let shapes = [
        ("30B qkv", GgmlType::Q4K, 4608usize, 2048usize),
        ("30B o", GgmlType::Q4K, 2048, 4096),
        ("30B v", GgmlType::Q6K, 512, 2048),
        ("0.5B qkv", GgmlType::Q5_0, 1024, 896),
        ("0.5B gate_up", GgmlType::Q5_0, 9728, 896),
        ("0.5B down", GgmlType::Q6K, 896, 4864),
        ("0.5B down q4k", GgmlType::Q4K, 896, 4864),
        ("0.5B lm_head/4", GgmlType::Q8_0, 37984, 896),
    ];
    for (name, ty, rows, cols) in shapes {
        let data = gaussian_weights(ty, rows, cols, &mut rng);
        let bytes = data.len() as f64;
        for m in [1usize, 8] {
            let x = activations(m, cols, &mut rng);
            let mut line = format!("{name:14} {ty:5} [{rows}x{cols}] m={m}:");
            for (label, g) in [("f32", &exact), ("q8", &q8)] {
                let w = g.upload(weight("w", ty, vec![cols, rows], data.clone())).unwrap();
                let xa = g.act_from_host(&x, m, cols).unwrap();
                let mut out = g.alloc(m, rows).unwrap();
                let us = time_us(g, || g.linear(&xa, &w, None, &mut out).unwrap());
                line += &format!("  {label} {us:7.1} µs {:6.0} GB/s", bytes / us / 1e3);
            }
            eprintln!("{line}");
        }
    }
    // One MoE layer of the 30B-A3B model at batch 1.
    let (hidden, ff, n_exp, top_k) = (2048usize, 768usize, 128usize, 8usize);
    for down_ty in [GgmlType::Q4K, GgmlType::Q6K] {
        let mut line = format!("30B moe q4_k/{down_ty} m=1:");
        let mk = |t: GgmlType, dims: Vec<usize>, rng: &mut Rng| {
            let n: usize = dims.iter().product();
            weight("e", t, dims.clone(), gaussian_weights(t, n / dims[0], dims[0], rng))
        };
        let ws = [mk(GgmlType::F32, vec![hidden, n_exp], &mut rng), mk(GgmlType::Q4K, vec![hidden, ff, n_exp], &mut rng), mk(GgmlType::Q4K, vec![hidden, ff, n_exp], &mut rng), mk(down_ty, vec![ff, hidden, n_exp], &mut rng)];
        let x = activations(1, hidden, &mut rng);
        for (label, g) in [("f32", &exact), ("q8", &q8)] {
            let gw: Vec<_> = ws.iter().map(|w| g.upload(w.clone()).unwrap()).collect();
            let xa = g.act_from_host(&x, 1, hidden).unwrap();
            let mut res = g.act_from_host(&x, 1, hidden).unwrap();
            let spec = MoeSpec { n_experts: n_exp, top_k, renormalize: true };
            let us = time_us(g, || g.moe(&xa, &MoeWeights { router: &gw[0], gate: &gw[1], up: &gw[2], down: &gw[3] }, &spec, &mut res).unwrap());
            line += &format!("  {label} {us:7.1} µs");
        }
        eprintln!("{line}");
    }
}

/// The greedy choice on the device equals the host's: lowest index on ties,
/// NaN and -inf skipped, a row of nothing but -inf/NaN gives no id.
#[test]
fn argmax_rows_match_host() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(13);
    for cols in [1usize, 31, 1000, 151_936] {
        let rows = 5;
        let mut x: Vec<f32> = (0..rows * cols).map(|_| rng.gauss() * 3.0).collect();
        if cols > 2 {
            // Row 1: a tie at the maximum; row 2: NaN and -inf around; row 3: +inf.
            let m = x[cols..2 * cols].iter().copied().fold(f32::MIN, f32::max);
            x[cols + cols - 1] = m;
            x[2 * cols] = f32::NAN;
            x[2 * cols + 1] = f32::NEG_INFINITY;
            x[3 * cols + cols / 2] = f32::INFINITY;
        }
        x[4 * cols..5 * cols].fill(f32::NEG_INFINITY);
        let got = g.argmax_rows(&g.act_from_host(&x, rows, cols).unwrap(), cols).unwrap();
        for (r, p) in got.iter().enumerate() {
            let want = ferrum_kernels::RowArgmax::of(&x[r * cols..(r + 1) * cols]);
            assert_eq!(p.id, want.id, "cols {cols} row {r}");
            assert_eq!(p.logit.to_bits(), want.logit.to_bits(), "cols {cols} row {r}");
            let close = (p.lse - want.lse).abs() <= 1e-5 * want.lse.abs().max(1.0) || p.lse == want.lse || (p.lse.is_nan() && want.lse.is_nan());
            assert!(close, "cols {cols} row {r}: lse {} vs {}", p.lse, want.lse);
        }
    }
}

/// Sampling on the device draws the host reference's ids (temperature,
/// top-k, top-p, min-p, seeds), with the raw logit and the row's lse.
#[test]
fn sample_rows_match_host() {
    use ferrum_kernels::{sample_row, SampleSpec};
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(29);
    let sp = |temperature, top_k, top_p, min_p| SampleSpec { temperature, top_k, top_p, min_p, seed: 0, step: 0 };
    let specs = [
        sp(0.0, 0, 1.0, 0.0),
        sp(0.7, 40, 0.95, 0.05),
        sp(1.0, 0, 1.0, 0.0),
        sp(1.3, 0, 0.5, 0.0),
        sp(1.0, 1, 1.0, 0.0),
        sp(0.9, 0, 0.9, 0.0),
        sp(0.8, 5, 1.0, 0.0),
        sp(1.0, 0, 1.0, 0.2),
        // More than fit in shared memory: the top-k radix passes and the
        // top-p bisection run over the whole row.
        sp(1.0, 3000, 0.9, 0.0),
        sp(0.6, 0, 0.99, 0.01),
    ];
    let (mut draws, mut differ) = (0usize, Vec::new());
    for cols in [151_936usize, 1000, 33] {
        let rows = specs.len();
        // One batch: row r has spec r; rows 5 and 6 are special.
        let mut x: Vec<f32> = (0..rows * cols).map(|_| rng.gauss() * 3.0).collect();
        {
            // Row 5: NaN and -inf entries.
            let r = &mut x[5 * cols..6 * cols];
            for i in (0..cols).step_by(7) {
                r[i] = if i % 2 == 0 { f32::NAN } else { f32::NEG_INFINITY };
            }
            // Row 6 (top_k 5): the 5th largest value repeated, so that ties
            // at the boundary are kept whole.
            let r = &mut x[6 * cols..7 * cols];
            let mut sorted = r.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let v5 = sorted[4.min(cols - 1)];
            for i in (3..cols).step_by(11).take(4) {
                r[i] = v5;
            }
        }
        let xa = g.act_from_host(&x, rows, cols).unwrap();
        for step in 0..200u64 {
            let batch: Vec<SampleSpec> = specs.iter().enumerate().map(|(r, s)| SampleSpec { seed: 1000 + r as u64, step, ..*s }).collect();
            let got = g.sample_rows(&xa, cols, &batch).unwrap();
            assert_eq!(got.len(), rows);
            if step % 50 == 0 {
                // The same input gives the same bits.
                let again = g.sample_rows(&xa, cols, &batch).unwrap();
                assert!(got.iter().zip(&again).all(|(a, b)| a.id == b.id && a.logit.to_bits() == b.logit.to_bits() && a.lse.to_bits() == b.lse.to_bits()));
            }
            for (r, (p, s)) in got.iter().zip(&batch).enumerate() {
                let row = &x[r * cols..(r + 1) * cols];
                let want = sample_row(row, s);
                draws += 1;
                if p.id != want.id {
                    differ.push((cols, r, step, p.id, want.id));
                    continue;
                }
                assert_eq!(p.logit.to_bits(), want.logit.to_bits(), "cols {cols} row {r} step {step}");
                let close = (p.lse - want.lse).abs() <= 1e-5 * want.lse.abs().max(1.0) || p.lse == want.lse;
                assert!(close, "cols {cols} row {r}: lse {} vs {}", p.lse, want.lse);
            }
        }
    }
    // Exact equality is expected; a last-ulp difference of exp or log
    // between the device and the host may move a cut only at a near-tie.
    eprintln!("{} of {draws} draws differ: {:?}", differ.len(), &differ[..differ.len().min(10)]);
    assert!(differ.len() * 200 <= draws, "{} of {draws} draws differ: {:?}", differ.len(), &differ[..differ.len().min(10)]);
    // Rows without values give no id; a batch of none gives none.
    let x = vec![f32::NAN, f32::NEG_INFINITY, f32::NAN];
    let got = g.sample_rows(&g.act_from_host(&x, 1, 3).unwrap(), 3, &[sp(1.0, 0, 0.9, 0.1)]).unwrap();
    assert_eq!(got[0].id, None);
    assert!(g.sample_rows(&g.act_from_host(&x, 1, 3).unwrap(), 3, &[]).is_err());
}

/// Sampling 1 and 64 rows of 151936 logits on the device, µs per call
/// (upload of the specs and download of the ids included):
/// `cuda_ops -- --ignored --nocapture sample_rows_speed`.
#[test]
#[ignore]
fn sample_rows_speed() {
    use ferrum_kernels::SampleSpec;
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(31);
    let cols = 151_936;
    for rows in [1usize, 64] {
        let x: Vec<f32> = (0..rows * cols).map(|_| rng.gauss() * 3.0).collect();
        let xa = g.act_from_host(&x, rows, cols).unwrap();
        let us = time_us(&g, || {
            g.argmax_rows(&xa, cols).unwrap();
        });
        let mut line = format!("{rows:2} x {cols}: argmax_rows {us:6.1} µs; sample_rows:");
        for (label, s) in [
            ("greedy", SampleSpec::greedy()),
            ("T=1", SampleSpec { temperature: 1.0, ..SampleSpec::greedy() }),
            ("k40", SampleSpec { temperature: 1.0, top_k: 40, ..SampleSpec::greedy() }),
            ("k40 p.95 m.05", SampleSpec { temperature: 0.7, top_k: 40, top_p: 0.95, min_p: 0.05, ..SampleSpec::greedy() }),
            ("p.9", SampleSpec { temperature: 1.0, top_p: 0.9, ..SampleSpec::greedy() }),
            ("T1.3 p.5", SampleSpec { temperature: 1.3, top_p: 0.5, ..SampleSpec::greedy() }),
        ] {
            let specs = vec![s; rows];
            let us = time_us(&g, || {
                g.sample_rows(&xa, cols, &specs).unwrap();
            });
            line += &format!("  {label} {us:7.1} µs");
        }
        eprintln!("{line}");
    }
}
