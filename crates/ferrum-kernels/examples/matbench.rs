//! CPU matmul micro-benchmark.
//!
//! `cargo run --release -p ferrum-kernels --example matbench [-- --quick]`
//!
//! Prints the machine's streaming read bandwidth (1 and all threads), the
//! pool's fork-join overhead, then for Q4_K, Q6_K, Q8_0 and Q5_0: m = 1
//! matvec time and bandwidth at the Qwen2.5-0.5B shapes and for 8 experts of
//! a [128, 768, 2048] MoE tensor, and the m = 512 matmul's GFLOP/s. Weights
//! are rotated through copies totalling more than the L3 cache, so matvecs
//! stream from memory as in real decoding. Each figure is the best of several
//! rounds (other processes share the machine).

use std::hint::black_box;
use std::time::{Duration, Instant};

use ferrum_core::GgmlType;
use ferrum_kernels::cpu::{matmul, matmul_with, num_threads, par_for, MatmulOptions, QMatRef};

/// Total bytes of weight copies a matvec benchmark rotates through.
const ROTATE_BYTES: usize = 256 << 20;

fn best_of<F: FnMut() -> f64>(rounds: usize, mut f: F) -> f64 {
    (0..rounds).map(|_| f()).fold(f64::INFINITY, f64::min)
}

/// Seconds per call of `f`, averaged over at least `min` time.
fn time_per_call(min: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < min {
        f();
        n += 1;
    }
    start.elapsed().as_secs_f64() / n as f64
}

/// Sum of a buffer's u64 words over `threads` threads (streaming reads).
fn read_all(buf: &[u64], threads: usize) -> u64 {
    let chunk = buf.len().div_ceil(threads);
    let sums: Vec<std::sync::atomic::AtomicU64> = (0..threads).map(|_| Default::default()).collect();
    let body = |t: usize| {
        let part = &buf[(t * chunk).min(buf.len())..((t + 1) * chunk).min(buf.len())];
        // Eight independent accumulators so the loop is load-bound.
        let mut acc = [0u64; 8];
        for c in part.chunks_exact(8) {
            for k in 0..8 {
                acc[k] = acc[k].wrapping_add(c[k]);
            }
        }
        let s = acc.iter().fold(0u64, |a, &b| a.wrapping_add(b));
        sums[t].store(s, std::sync::atomic::Ordering::Relaxed);
    };
    if threads == 1 {
        body(0);
    } else {
        par_for(threads, body);
    }
    sums.iter().map(|s| s.load(std::sync::atomic::Ordering::Relaxed)).fold(0, u64::wrapping_add)
}

fn bandwidth(threads: usize) -> f64 {
    let buf: Vec<u64> = (0..(512usize << 20) / 8).map(|i| i as u64).collect();
    let bytes = (buf.len() * 8) as f64;
    let best = best_of(5, || {
        let t = Instant::now();
        black_box(read_all(&buf, threads));
        t.elapsed().as_secs_f64()
    });
    bytes / best / 1e9
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn gauss(&mut self) -> f32 {
        let u1 = ((self.next() >> 11) as f64 / (1u64 << 53) as f64).max(1e-300);
        let u2 = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

fn weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let vals: Vec<f32> = (0..rows * cols).map(|_| rng.gauss()).collect();
    match ferrum_format::quant::quantize(ty, &vals) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("quantize {ty}: {e}");
            std::process::exit(1)
        }
    }
}

/// Copies of one weight matrix, enough to exceed the caches.
fn copies(one: &[u8]) -> Vec<u8> {
    let n = (ROTATE_BYTES / one.len()).max(2);
    let mut all = Vec::with_capacity(n * one.len());
    for _ in 0..n {
        all.extend_from_slice(one);
    }
    all
}

struct Row {
    what: String,
    bytes: usize,
    secs: f64,
}

fn matvec_bench(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng, min: Duration) -> Row {
    let one = weights(ty, rows, cols, rng);
    let all = copies(&one);
    let n = all.len() / one.len();
    let x: Vec<f32> = (0..cols).map(|_| rng.gauss()).collect();
    let mut y = vec![0.0f32; rows];
    let mut k = 0;
    let secs = best_of(5, || {
        time_per_call(min, || {
            let w = QMatRef { ty, data: &all[k * one.len()..(k + 1) * one.len()], rows, cols };
            k = (k + 1) % n;
            let _ = matmul(&w, &x, 1, &mut y);
        })
    });
    Row { what: format!("{ty} matvec rows {rows} cols {cols}"), bytes: one.len(), secs }
}

/// 8 experts of a [128, 768, 2048] tensor per token, picked at random.
fn moe_bench(ty: GgmlType, rng: &mut Rng, min: Duration) -> Row {
    let (experts, rows, cols) = (128usize, 768usize, 2048usize);
    let one = weights(ty, rows, cols, rng);
    let mut all = Vec::with_capacity(experts * one.len());
    for _ in 0..experts {
        all.extend_from_slice(&one);
    }
    let x: Vec<f32> = (0..cols).map(|_| rng.gauss()).collect();
    let mut y = vec![0.0f32; rows];
    let secs = best_of(5, || {
        time_per_call(min, || {
            for _ in 0..8 {
                let e = (rng.next() % experts as u64) as usize;
                let w = QMatRef { ty, data: &all[e * one.len()..(e + 1) * one.len()], rows, cols };
                let _ = matmul(&w, &x, 1, &mut y);
            }
        })
    });
    Row { what: format!("{ty} MoE 8 x matvec rows {rows} cols {cols}"), bytes: 8 * one.len(), secs }
}

fn gemm_bench(ty: GgmlType, rows: usize, cols: usize, m: usize, rng: &mut Rng, min: Duration) -> (f64, f64) {
    let one = weights(ty, rows, cols, rng);
    let x: Vec<f32> = (0..m * cols).map(|_| rng.gauss()).collect();
    let mut y = vec![0.0f32; m * rows];
    let w = QMatRef { ty, data: &one, rows, cols };
    let secs = best_of(3, || {
        time_per_call(min, || {
            let _ = matmul_with(&w, &x, m, &mut y, &MatmulOptions::default());
        })
    });
    (secs, 2.0 * (m * rows * cols) as f64 / secs / 1e9)
}

/// Single-thread, cache-resident timings (min of many short samples): the
/// kernels' compute cost, free of memory and scheduling noise.
fn micro() {
    let mut rng = Rng(7);
    let types = [GgmlType::Q4K, GgmlType::Q6K, GgmlType::Q8_0, GgmlType::Q5_0, GgmlType::Q4_0, GgmlType::Q5K, GgmlType::Q2K, GgmlType::Q3K, GgmlType::Q4_1, GgmlType::IQ4NL, GgmlType::IQ4XS, GgmlType::F16, GgmlType::F32];
    for ty in types {
        let (rows, cols) = (32usize, 2048usize);
        let vals: Vec<f32> = (0..rows * cols).map(|_| rng.gauss()).collect();
        let data = match ferrum_format::quant::quantize(ty, &vals) {
            Ok(v) => v,
            Err(_) => (0..rows * cols / ty.block_size() * ty.type_size()).map(|i| (i * 7 % 251) as u8 & 0x3f).collect(),
        };
        let w = QMatRef { ty, data: &data, rows, cols };
        for m in [1usize, 4, 16, 64] {
            let x: Vec<f32> = (0..m * cols).map(|_| rng.gauss()).collect();
            let mut y = vec![0.0f32; m * rows];
            let opts = MatmulOptions { max_threads: 1, ..Default::default() };
            let mut best = f64::INFINITY;
            for _ in 0..300 {
                let t = Instant::now();
                let _ = matmul_with(&w, &x, m, &mut y, &opts);
                best = best.min(t.elapsed().as_secs_f64());
            }
            let macs = (m * rows * cols) as f64;
            println!("{ty:>6} m {m:>2}: {:8.1} us  {:6.2} ns/256 MAC  {:6.1} GMAC/s/thread", best * 1e6, best * 1e9 / macs * 256.0, macs / best / 1e9);
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--micro") {
        micro();
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let min = Duration::from_millis(if quick { 60 } else { 250 });
    let threads = num_threads();
    println!("ferrum-kernels matbench: {threads} threads, kernel {:?}", ferrum_kernels::cpu::Kernel::best());

    let bw1 = bandwidth(1);
    let bwn = bandwidth(threads);
    println!("read bandwidth (512 MiB streaming sum): 1 thread {bw1:.1} GB/s, {threads} threads {bwn:.1} GB/s");

    let fork = best_of(5, || time_per_call(Duration::from_millis(50), || par_for(threads, |i| {
        black_box(i);
    })));
    println!("pool fork-join overhead (par_for over {threads} no-op tasks): {:.2} us", fork * 1e6);
    println!();

    let mut rng = Rng(0x1234_5678_9abc_def1);
    println!("m = 1 matvec (weights streamed from memory; GB/s = weight bytes / time)");
    println!("| case | weight MiB | time us | GB/s | % of {threads}-thread bandwidth |");
    println!("|---|---|---|---|---|");
    let types = [GgmlType::Q4K, GgmlType::Q6K, GgmlType::Q8_0, GgmlType::Q5_0];
    for ty in types {
        let mut rows = Vec::new();
        for (r, c) in [(4864usize, 896usize), (896, 4864)] {
            if c % ty.block_size() != 0 {
                println!("| {ty} matvec rows {r} cols {c} | n/a: {c} is not a multiple of {} | | | |", ty.block_size());
                continue;
            }
            rows.push(matvec_bench(ty, r, c, &mut rng, min));
        }
        rows.push(moe_bench(ty, &mut rng, min));
        for row in rows {
            let gbs = row.bytes as f64 / row.secs / 1e9;
            println!(
                "| {} | {:.2} | {:.1} | {:.1} | {:.0}% |",
                row.what,
                row.bytes as f64 / (1 << 20) as f64,
                row.secs * 1e6,
                gbs,
                100.0 * gbs / bwn
            );
        }
    }
    println!();
    let m = 512;
    println!("m = {m} quantized matmul (GFLOP/s = 2 m rows cols / time)");
    println!("| case | time ms | GFLOP/s |");
    println!("|---|---|---|");
    for ty in types {
        for (r, c) in [(4864usize, 896usize), (896, 4864)] {
            if c % ty.block_size() != 0 {
                println!("| {ty} rows {r} cols {c} | n/a | |");
                continue;
            }
            let (secs, gflops) = gemm_bench(ty, r, c, m, &mut rng, min);
            println!("| {ty} rows {r} cols {c} | {:.2} | {gflops:.1} |", secs * 1e3);
        }
    }
}
