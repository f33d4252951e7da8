//! CPU backend ops against slow, obviously-correct references at awkward
//! sizes: attention over shuffled paged blocks with cached prefixes, GQA,
//! sliding windows; RoPE in both layouts; RMSNorm; MoE routing.

use std::sync::Arc;

use ferrum_core::GgmlType;
use ferrum_kernels::{
    AttnMeta, Backend, CpuBackend, HeadSpec, HostBytes, HostWeight, KvDType, KvSpec, Mat, MoeSpec, MoeWeights, Rope, RopeStyle,
    SeqPlan,
};

/// Deterministic pseudo-random numbers in [-1, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn f32_weight(name: &str, dims: Vec<usize>, data: &[f32]) -> HostWeight {
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    HostWeight { name: name.into(), ty: GgmlType::F32, dims, bytes: HostBytes::Owned(Arc::new(bytes)) }
}

fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Reference attention for one sequence whose full K/V (`[ctx, n_kv*hd]`) are known.
fn ref_attention(q: &[f32], k: &[f32], v: &[f32], pos: &[usize], h: &HeadSpec) -> Vec<f64> {
    let hd = h.head_dim;
    let group = h.n_heads / h.n_kv_heads;
    let kvw = h.n_kv_heads * hd;
    let mut out = vec![0.0f64; pos.len() * h.n_heads * hd];
    for (r, &p) in pos.iter().enumerate() {
        for head in 0..h.n_heads {
            let kvh = head / group;
            let qv = &q[r * h.n_heads * hd + head * hd..][..hd];
            let lo = h.window.map_or(0, |w| (p + 1).saturating_sub(w));
            let scores: Vec<f64> = (lo..=p)
                .map(|j| qv.iter().zip(&k[j * kvw + kvh * hd..][..hd]).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * h.scale as f64)
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (jj, j) in (lo..=p).enumerate() {
                for d in 0..hd {
                    out[r * h.n_heads * hd + head * hd + d] += e[jj] / sum * v[j * kvw + kvh * hd + d] as f64;
                }
            }
        }
    }
    out
}

/// `[q | k | v]` per row, as the fused QKV projection produces.
fn fuse_rows(parts: &[&Mat]) -> Mat {
    let rows = parts[0].rows;
    let cols: usize = parts.iter().map(|p| p.cols).sum();
    let mut data = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for p in parts {
            data.extend_from_slice(p.row(r));
        }
    }
    Mat::from_vec(data, rows, cols).unwrap()
}

fn check_attention(n_heads: usize, n_kv: usize, hd: usize, prefix: usize, chunk: usize, window: Option<usize>, dtype: KvDType) {
    let b = CpuBackend;
    let h = HeadSpec { n_heads, n_kv_heads: n_kv, head_dim: hd, scale: 1.0 / (hd as f32).sqrt(), window, norm_eps: 1e-6 };
    let ctx = prefix + chunk;
    let n_blocks = ctx.div_ceil(16) + 3;
    // A shuffled block table: blocks need not be contiguous or ordered.
    let mut table: Vec<u32> = (0..n_blocks as u32).rev().collect();
    table.rotate_left(1);
    let mut kv = b.alloc_kv(KvSpec { n_blocks, block_size: 16, n_kv_heads: n_kv, head_dim: hd, dtype }).unwrap();
    let mut rng = Lcg(ctx as u64 * 31 + n_heads as u64);
    let kvw = n_kv * hd;
    let k_all = rng.vec(ctx * kvw);
    let v_all = rng.vec(ctx * kvw);
    let q_all = rng.vec(ctx * n_heads * hd);
    let rope = Rope { style: RopeStyle::NeoX, inv_freq: vec![0.0; hd / 2] }; // identity rotation
    // Write the prefix (as an earlier step would), then run the chunk.
    let mut out = Mat::default();
    for (start, n) in [(0, prefix), (prefix, chunk)] {
        if n == 0 {
            continue;
        }
        let meta = AttnMeta::build(&[SeqPlan { n_new: n, start_pos: start, block_table: &table }], 16, n_blocks, 1 << 20).unwrap();
        let q = Mat::from_vec(q_all[start * n_heads * hd..(start + n) * n_heads * hd].to_vec(), n, n_heads * hd).unwrap();
        let k = Mat::from_vec(k_all[start * kvw..(start + n) * kvw].to_vec(), n, kvw).unwrap();
        let v = Mat::from_vec(v_all[start * kvw..(start + n) * kvw].to_vec(), n, kvw).unwrap();
        let q = {
            let qkv = fuse_rows(&[&q, &k, &v]);
            let mut out = Mat::default();
            b.qk_rope_store(&qkv, &mut out, None, None, &h, &rope, &meta, &mut kv).unwrap();
            out
        };
        b.attention(&q, &h, &meta, &kv, &mut out).unwrap();
    }
    let round = |x: &[f32]| -> Vec<f32> {
        match dtype {
            KvDType::F32 => x.to_vec(),
            KvDType::F16 => x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
        }
    };
    let pos: Vec<usize> = (prefix..ctx).collect();
    let want = ref_attention(&q_all[prefix * n_heads * hd..], &round(&k_all), &round(&v_all), &pos, &h);
    let e = rel_err(&out.data, &want);
    assert!(e < 1e-5, "attention heads {n_heads}/{n_kv} hd {hd} prefix {prefix} chunk {chunk} window {window:?}: rel err {e}");
}

#[test]
fn attention_matches_reference() {
    for &(nh, nkv, hd) in &[(1, 1, 8), (6, 2, 16), (6, 3, 64), (14, 2, 64), (5, 5, 32)] {
        for &(prefix, chunk) in &[(0, 1), (0, 15), (0, 17), (16, 1), (15, 2), (17, 15), (0, 257), (240, 17)] {
            check_attention(nh, nkv, hd, prefix, chunk, None, KvDType::F32);
        }
    }
    check_attention(6, 2, 16, 33, 40, Some(8), KvDType::F32);
    check_attention(6, 2, 16, 0, 257, Some(100), KvDType::F32);
    check_attention(6, 2, 64, 17, 15, None, KvDType::F16);
}

#[test]
fn rope_layouts_match_reference() {
    let b = CpuBackend;
    let hd = 8;
    let inv: Vec<f32> = (0..hd / 2).map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / hd as f32)).collect();
    let h = HeadSpec { n_heads: 1, n_kv_heads: 1, head_dim: hd, scale: 1.0, window: None, norm_eps: 1e-6 };
    for style in [RopeStyle::NeoX, RopeStyle::GptJ] {
        let rope = Rope { style, inv_freq: inv.clone() };
        let table = [0u32];
        let meta = AttnMeta::build(&[SeqPlan { n_new: 3, start_pos: 5, block_table: &table }], 16, 1, 100).unwrap();
        let x: Vec<f32> = (0..3 * hd).map(|i| (i as f32 * 0.37).sin()).collect();
        let x3 = Mat::from_vec(x.clone(), 3, hd).unwrap();
        let qkv = fuse_rows(&[&x3, &x3, &x3]);
        let mut q = Mat::default();
        let mut kv = b.alloc_kv(KvSpec { n_blocks: 1, block_size: 16, n_kv_heads: 1, head_dim: hd, dtype: KvDType::F32 }).unwrap();
        b.qk_rope_store(&qkv, &mut q, None, None, &h, &rope, &meta, &mut kv).unwrap();
        // K is rotated by the same code path: a second call with the same input
        // must give the same Q (and writes the same cache slots).
        let k = {
            let mut k = Mat::default();
            b.qk_rope_store(&qkv, &mut k, None, None, &h, &rope, &meta, &mut kv).unwrap();
            k
        };
        for r in 0..3 {
            let p = (5 + r) as f64;
            for (i, &f) in inv.iter().enumerate() {
                let (a, bb) = match style {
                    RopeStyle::NeoX => (i, i + hd / 2),
                    RopeStyle::GptJ => (2 * i, 2 * i + 1),
                };
                let ang = p * f as f64;
                let (x0, x1) = (x[r * hd + a] as f64, x[r * hd + bb] as f64);
                assert!((q.data[r * hd + a] as f64 - (x0 * ang.cos() - x1 * ang.sin())).abs() < 1e-5);
                assert!((q.data[r * hd + bb] as f64 - (x0 * ang.sin() + x1 * ang.cos())).abs() < 1e-5);
            }
        }
        assert_eq!(q, k);
    }
}

#[test]
fn rms_norm_matches_reference() {
    let b = CpuBackend;
    for &cols in &[1usize, 7, 64, 257, 896] {
        let mut rng = Lcg(cols as u64);
        let x = Mat::from_vec(rng.vec(3 * cols), 3, cols).unwrap();
        let g = rng.vec(cols);
        let w = b.upload(f32_weight("g", vec![cols], &g)).unwrap();
        let mut out = Mat::default();
        b.rms_norm(&x, &w, 1e-6, &mut out).unwrap();
        let mut want = vec![0.0f64; 3 * cols];
        for r in 0..3 {
            let row = &x.data[r * cols..(r + 1) * cols];
            let ms: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / cols as f64;
            for c in 0..cols {
                want[r * cols + c] = row[c] as f64 / (ms + 1e-6).sqrt() * g[c] as f64;
            }
        }
        assert!(rel_err(&out.data, &want) < 1e-6);
    }
}

#[test]
fn moe_matches_reference() {
    let b = CpuBackend;
    let (hidden, ff, ne, topk, rows) = (32, 24, 8, 2, 5);
    let mut rng = Lcg(7);
    let router = rng.vec(ne * hidden);
    let gate = rng.vec(ne * ff * hidden);
    let up = rng.vec(ne * ff * hidden);
    let down = rng.vec(ne * hidden * ff);
    let x = Mat::from_vec(rng.vec(rows * hidden), rows, hidden).unwrap();
    let wr = b.upload(f32_weight("router", vec![hidden, ne], &router)).unwrap();
    let wg = b.upload(f32_weight("gate", vec![hidden, ff, ne], &gate)).unwrap();
    let wu = b.upload(f32_weight("up", vec![hidden, ff, ne], &up)).unwrap();
    let wd = b.upload(f32_weight("down", vec![ff, hidden, ne], &down)).unwrap();
    for renormalize in [false, true] {
        let spec = MoeSpec { n_experts: ne, top_k: topk, renormalize };
        let mut res = Mat::zeros(rows, hidden);
        b.moe(&x, &MoeWeights { router: &wr, gate: &wg, up: &wu, down: &wd }, &spec, &mut res).unwrap();
        let mut want = vec![0.0f64; rows * hidden];
        for r in 0..rows {
            let xr = &x.data[r * hidden..(r + 1) * hidden];
            let dot = |w: &[f32], xs: &[f64]| -> f64 { w.iter().zip(xs).map(|(&a, &b)| a as f64 * b).sum() };
            let xs: Vec<f64> = xr.iter().map(|&v| v as f64).collect();
            let logits: Vec<f64> = (0..ne).map(|e| dot(&router[e * hidden..(e + 1) * hidden], &xs)).collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            let mut probs: Vec<(usize, f64)> = logits.iter().enumerate().map(|(e, l)| (e, (l - max).exp() / sum)).collect();
            probs.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
            let top = &probs[..topk];
            let norm: f64 = if renormalize { top.iter().map(|t| t.1).sum() } else { 1.0 };
            for &(e, p) in top {
                let act: Vec<f64> = (0..ff)
                    .map(|i| {
                        let g = dot(&gate[(e * ff + i) * hidden..][..hidden], &xs);
                        let u = dot(&up[(e * ff + i) * hidden..][..hidden], &xs);
                        g / (1.0 + (-g).exp()) * u
                    })
                    .collect();
                for o in 0..hidden {
                    want[r * hidden + o] += p / norm * dot(&down[(e * hidden + o) * ff..][..ff], &act);
                }
            }
        }
        assert!(rel_err(&res.data, &want) < 1e-5, "renormalize {renormalize}");
    }
}

#[test]
fn bad_plans_are_errors() {
    let b = CpuBackend;
    let h = HeadSpec { n_heads: 2, n_kv_heads: 1, head_dim: 8, scale: 1.0, window: None, norm_eps: 1e-6 };
    let table = [0u32];
    let meta = AttnMeta::build(&[SeqPlan { n_new: 2, start_pos: 0, block_table: &table }], 16, 1, 100).unwrap();
    let kv = b.alloc_kv(KvSpec { n_blocks: 1, block_size: 16, n_kv_heads: 1, head_dim: 8, dtype: KvDType::F32 }).unwrap();
    let mut out = Mat::default();
    let mut q2 = Mat::default();
    let mut kv2 = kv;
    // 3 rows but the plan has 2.
    assert!(b.qk_rope_store(&Mat::zeros(3, 32), &mut q2, None, None, &h, &Rope { style: RopeStyle::NeoX, inv_freq: vec![0.0; 4] }, &meta, &mut kv2).is_err());
    assert!(b.attention(&Mat::zeros(2, 15), &h, &meta, &kv2, &mut out).is_err());
}

fn quant_weight(name: &str, ty: GgmlType, rows: usize, cols: usize, rng: &mut Lcg) -> HostWeight {
    let vals = rng.vec(rows * cols);
    let bytes = ferrum_format::quant::quantize(ty, &vals).unwrap();
    HostWeight { name: name.into(), ty, dims: vec![cols, rows], bytes: HostBytes::Owned(Arc::new(bytes)) }
}

/// A fused weight (same-type runs concatenated, mixed types kept as parts)
/// gives exactly the separate projections side by side, with the fused bias.
#[test]
fn fused_linear_equals_separate_linears() {
    let b = CpuBackend;
    let cols = 96;
    let mixes: [&[(GgmlType, usize)]; 4] = [
        // Qwen2.5 Q4_K_M's Q/K/V: Q5_0, Q5_0, Q8_0.
        &[(GgmlType::Q5_0, 56), (GgmlType::Q5_0, 8), (GgmlType::Q8_0, 8)],
        &[(GgmlType::Q8_0, 7), (GgmlType::Q5_0, 32), (GgmlType::Q8_0, 5)],
        &[(GgmlType::Q4_0, 16), (GgmlType::F32, 3), (GgmlType::Q4_0, 16)],
        &[(GgmlType::Q8_0, 33), (GgmlType::Q8_0, 31)],
    ];
    for (mi, mix) in mixes.iter().enumerate() {
        let mut rng = Lcg(100 + mi as u64);
        let hosts: Vec<HostWeight> = mix
            .iter()
            .enumerate()
            .map(|(k, &(ty, rows))| match ty {
                GgmlType::F32 => f32_weight(&format!("p{k}"), vec![cols, rows], &rng.vec(rows * cols)),
                _ => quant_weight(&format!("p{k}"), ty, rows, cols, &mut rng),
            })
            .collect();
        let biases: Vec<Vec<f32>> = mix.iter().map(|&(_, rows)| rng.vec(rows)).collect();
        let total: usize = mix.iter().map(|p| p.1).sum();
        let parts: Vec<_> = hosts
            .iter()
            .map(|h| b.upload(HostWeight { name: h.name.clone(), ty: h.ty, dims: h.dims.clone(), bytes: h.bytes.clone() }).unwrap())
            .collect();
        let bias_parts: Vec<_> = biases.iter().enumerate().map(|(k, v)| b.upload(f32_weight(&format!("b{k}"), vec![v.len()], v)).unwrap()).collect();
        let separate: Vec<_> = hosts.into_iter().map(|h| b.upload(h).unwrap()).collect();
        let fused = b.fuse(parts).unwrap();
        let fused_bias = b.fuse(bias_parts).unwrap();
        for m in [1, 3, 4, 9, 80] {
            let x = Mat::from_vec(rng.vec(m * cols), m, cols).unwrap();
            let mut want = vec![0.0f32; m * total];
            let mut col = 0;
            for (w, bias) in separate.iter().zip(&biases) {
                let mut y = Mat::default();
                b.linear(&x, w, None, &mut y).unwrap();
                for r in 0..m {
                    for (c, (&v, &bv)) in y.row(r).iter().zip(bias).enumerate() {
                        want[r * total + col + c] = v + bv;
                    }
                }
                col += y.cols;
            }
            let mut got = Mat::default();
            b.linear(&x, &fused, Some(&fused_bias), &mut got).unwrap();
            assert_eq!((got.rows, got.cols), (m, total));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.data), bits(&want), "mix {mi}, m {m}");
        }
    }
}
