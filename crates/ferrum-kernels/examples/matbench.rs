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
use ferrum_kernels::cpu::{
    matmul, matmul_many, matmul_with, num_threads, par_for, MatmulJob, MatmulOptions, QMatRef,
};

/// Total bytes of weight copies a matvec benchmark rotates through.
const ROTATE_BYTES: usize = 256 << 20;

fn best_of<F: FnMut() -> f64>(rounds: usize, mut f: F) -> f64 {
    (0..rounds).map(|_| f()).fold(f64::INFINITY, f64::min)
}

/// CPU time of all this process's threads, in ns (Linux; 0 elsewhere).
fn cpu_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// Timing of a repeated call: the fastest single call (wall clock), the
/// median, and the CPU time per call divided by the thread count (what the
/// wall time would be on otherwise idle cores).
#[derive(Clone, Copy)]
struct Timing {
    best: f64,
    median: f64,
    cpu: f64,
}

fn time_calls(min: Duration, threads: usize, mut f: impl FnMut()) -> Timing {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    let c0 = cpu_ns();
    while start.elapsed() < min || times.len() < 3 {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    let cpu = (cpu_ns() - c0) as f64 * 1e-9 / times.len() as f64 / threads as f64;
    times.sort_by(f64::total_cmp);
    Timing {
        best: times[0],
        median: times[times.len() / 2],
        cpu,
    }
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

/// Sum of a buffer's u64 words over `threads` threads; each thread reads its
/// share as `streams` interleaved sequential streams (the matvec kernels
/// read 4 weight rows from 4 places at once).
fn read_all(buf: &[u64], threads: usize, streams: usize) -> u64 {
    let chunk = buf.len().div_ceil(threads);
    let sums: Vec<std::sync::atomic::AtomicU64> =
        (0..threads).map(|_| Default::default()).collect();
    let body = |t: usize| {
        let part = &buf[(t * chunk).min(buf.len())..((t + 1) * chunk).min(buf.len())];
        let q = part.len() / streams / 8 * 8;
        let mut acc = [0u64; 8];
        for i in (0..q).step_by(8) {
            for s in 0..streams {
                // SAFETY: s * q + i + 8 <= streams * q <= part.len().
                let c = unsafe { part.get_unchecked(s * q + i..s * q + i + 8) };
                for k in 0..8 {
                    acc[k] = acc[k].wrapping_add(c[k]);
                }
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
    sums.iter()
        .map(|s| s.load(std::sync::atomic::Ordering::Relaxed))
        .fold(0, u64::wrapping_add)
}

/// Streaming read bandwidth in GB/s: (fastest pass, CPU-time based), the
/// best of 1, 4 and 8 streams per thread.
fn bandwidth(buf: &[u64], threads: usize) -> (f64, f64) {
    let bytes = (buf.len() * 8) as f64;
    let mut best = (0.0f64, 0.0f64);
    for streams in [1, 4, 8] {
        let t = time_calls(Duration::from_secs(1), threads, || {
            black_box(read_all(buf, threads, streams));
        });
        best = (
            best.0.max(bytes / t.best / 1e9),
            best.1.max(bytes / t.cpu / 1e9),
        );
    }
    best
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
    bytes: usize,
    t: Timing,
    /// Best read bandwidth (GB/s) of passes interleaved with the calls.
    bw: f64,
}

/// Time `f` as [`time_calls`] does, alternating each 8 calls with 8 timed
/// streaming reads of `bytes`-sized slices of `buf` (rotating through all of
/// it, so cold like the weights): the read bandwidth at the same granularity
/// and under the same load as the calls. Returns the timing and the best
/// slice bandwidth in GB/s.
fn time_with_bandwidth(
    min: Duration,
    buf: &[u64],
    bytes: usize,
    mut f: impl FnMut(),
) -> (Timing, f64) {
    let threads = num_threads();
    let words = (bytes / 8).clamp(64, buf.len());
    let slices = buf.len() / words;
    let mut next = 0usize;
    let mut bw = 0.0f64;
    let mut t = Timing {
        best: f64::INFINITY,
        median: f64::INFINITY,
        cpu: f64::INFINITY,
    };
    let start = Instant::now();
    while start.elapsed() < min {
        for _ in 0..8 {
            let part = &buf[(next % slices) * words..(next % slices + 1) * words];
            next += 1;
            let s = Instant::now();
            black_box(read_all(part, threads, 4));
            bw = bw.max((words * 8) as f64 / s.elapsed().as_secs_f64() / 1e9);
        }
        let r = time_calls(Duration::ZERO, threads, &mut f);
        t = Timing {
            best: t.best.min(r.best),
            median: t.median.min(r.median),
            cpu: t.cpu.min(r.cpu),
        };
    }
    (t, bw)
}

fn matvec_bench(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    rng: &mut Rng,
    min: Duration,
    buf: &[u64],
) -> Row {
    let one = weights(ty, rows, cols, rng);
    let all = copies(&one);
    let n = all.len() / one.len();
    let x: Vec<f32> = (0..cols).map(|_| rng.gauss()).collect();
    let mut y = vec![0.0f32; rows];
    let mut k = 0;
    let (t, bw) = time_with_bandwidth(min, buf, one.len(), || {
        let w = QMatRef {
            ty,
            data: &all[k * one.len()..(k + 1) * one.len()],
            rows,
            cols,
        };
        k = (k + 1) % n;
        let _ = matmul(&w, &x, 1, &mut y);
    });
    Row {
        bytes: one.len(),
        t,
        bw,
    }
}

/// 8 experts of a [128, 768, 2048] tensor per token: 8 `matmul` calls, or
/// one `matmul_many` when `batched`.
fn moe_bench(ty: GgmlType, rng: &mut Rng, min: Duration, buf: &[u64], batched: bool) -> Row {
    let (experts, rows, cols) = (128usize, 768usize, 2048usize);
    let one = weights(ty, rows, cols, rng);
    let mut all = Vec::with_capacity(experts * one.len());
    for _ in 0..experts {
        all.extend_from_slice(&one);
    }
    let x: Vec<f32> = (0..cols).map(|_| rng.gauss()).collect();
    let mut y = vec![0.0f32; rows];
    // Each call takes the next 8 experts, so an expert comes back only after
    // all 128 (~100-200 MiB) were read: every call streams from memory.
    let mut next = 0usize;
    let mut ys = vec![0.0f32; 8 * rows];
    let (t, bw) = time_with_bandwidth(min, buf, 8 * one.len(), || {
        let picked: Vec<QMatRef<'_>> = (0..8)
            .map(|_| {
                let e = next % experts;
                next += 1;
                QMatRef {
                    ty,
                    data: &all[e * one.len()..(e + 1) * one.len()],
                    rows,
                    cols,
                }
            })
            .collect();
        if batched {
            let mut jobs: Vec<MatmulJob<'_>> = picked
                .iter()
                .zip(ys.chunks_exact_mut(rows))
                .map(|(w, y)| MatmulJob {
                    w: *w,
                    x: &x,
                    m: 1,
                    y,
                })
                .collect();
            let _ = matmul_many(&mut jobs);
        } else {
            for w in &picked {
                let _ = matmul(w, &x, 1, &mut y);
            }
        }
    });
    Row {
        bytes: 8 * one.len(),
        t,
        bw,
    }
}

fn gemm_bench(
    ty: GgmlType,
    rows: usize,
    cols: usize,
    m: usize,
    rng: &mut Rng,
    min: Duration,
) -> Timing {
    let one = weights(ty, rows, cols, rng);
    let x: Vec<f32> = (0..m * cols).map(|_| rng.gauss()).collect();
    let mut y = vec![0.0f32; m * rows];
    let w = QMatRef {
        ty,
        data: &one,
        rows,
        cols,
    };
    time_calls(min, num_threads(), || {
        let _ = matmul_with(&w, &x, m, &mut y, &MatmulOptions::default());
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Single-thread, cache-resident timings (min of many short samples): the
/// kernels' compute cost, free of memory and scheduling noise.
/// `matbench --micro [TYPE]`.
fn micro(only: Option<GgmlType>, shape: (usize, usize)) {
    let mut rng = Rng(7);
    let all = [
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::Q8_0,
        GgmlType::Q5_0,
        GgmlType::Q4_0,
        GgmlType::Q5K,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4_1,
        GgmlType::IQ4NL,
        GgmlType::IQ4XS,
        GgmlType::F16,
        GgmlType::F32,
    ];
    let types: Vec<GgmlType> = all
        .into_iter()
        .filter(|t| only.is_none_or(|o| o == *t))
        .collect();
    let reps = if only.is_some() { 3000 } else { 300 };
    for ty in types {
        let (rows, cols) = shape;
        let vals: Vec<f32> = (0..rows * cols).map(|_| rng.gauss()).collect();
        let data = match ferrum_format::quant::quantize(ty, &vals) {
            Ok(v) => v,
            Err(_) => (0..rows * cols / ty.block_size() * ty.type_size())
                .map(|i| (i * 7 % 251) as u8 & 0x3f)
                .collect(),
        };
        let w = QMatRef {
            ty,
            data: &data,
            rows,
            cols,
        };
        for m in [1usize, 4, 8, 16, 64] {
            let x: Vec<f32> = (0..m * cols).map(|_| rng.gauss()).collect();
            let mut y = vec![0.0f32; m * rows];
            let opts = MatmulOptions {
                max_threads: 1,
                ..Default::default()
            };
            let mut best = f64::INFINITY;
            for _ in 0..reps {
                let t = Instant::now();
                let _ = matmul_with(&w, &x, m, &mut y, &opts);
                best = best.min(t.elapsed().as_secs_f64());
            }
            let macs = (m * rows * cols) as f64;
            println!(
                "{ty:>6} m {m:>2}: {:8.1} us  {:6.2} ns/256 MAC  {:6.1} GMAC/s/thread",
                best * 1e6,
                best * 1e9 / macs * 256.0,
                macs / best / 1e9
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(k) = args.iter().position(|a| a == "--mv") {
        // --mv TYPE ROWS COLS ROWS_PER_TASK THREADS: one streamed matvec case.
        let num = |i: usize, d: usize| args.get(k + i).and_then(|v| v.parse().ok()).unwrap_or(d);
        let ty = args
            .get(k + 1)
            .and_then(|n| GgmlType::from_name(n))
            .unwrap_or(GgmlType::Q8_0);
        let (rows, cols) = (num(2, 4864), num(3, 896));
        let opts = MatmulOptions {
            rows_per_task: num(4, 0),
            max_threads: num(5, 0),
            ..Default::default()
        };
        let mut rng = Rng(3);
        let one = weights(ty, rows, cols, &mut rng);
        let all = copies(&one);
        let n = all.len() / one.len();
        let x: Vec<f32> = (0..cols).map(|_| rng.gauss()).collect();
        let mut y = vec![0.0f32; rows];
        let mut j = 0;
        let t = time_calls(Duration::from_secs(1), num_threads(), || {
            let w = QMatRef {
                ty,
                data: &all[j * one.len()..(j + 1) * one.len()],
                rows,
                cols,
            };
            j = (j + 1) % n;
            let _ = matmul_with(&w, &x, 1, &mut y, &opts);
        });
        let gb = |s: f64| one.len() as f64 / s / 1e9;
        println!("{ty} {rows}x{cols} {opts:?}: best {:.1} us ({:.1} GB/s), median {:.1} us, cpu {:.1} us ({:.1} GB/s)", t.best * 1e6, gb(t.best), t.median * 1e6, t.cpu * 1e6, gb(t.cpu));
        return;
    }
    if args.iter().any(|a| a == "--bw") {
        let buf: Vec<u64> = (0..(512usize << 20) / 8).map(|i| i as u64).collect();
        for threads in [1, num_threads()] {
            for streams in [1, 2, 4, 8, 16] {
                let t = time_calls(Duration::from_secs(1), threads, || {
                    black_box(read_all(&buf, threads, streams));
                });
                println!(
                    "{threads} threads {streams} streams: {:.1} GB/s",
                    (buf.len() * 8) as f64 / t.best / 1e9
                );
            }
        }
        return;
    }
    if let Some(k) = args.iter().position(|a| a == "--micro") {
        let num = |i: usize, d: usize| args.get(k + i).and_then(|v| v.parse().ok()).unwrap_or(d);
        micro(
            args.get(k + 1).and_then(|n| GgmlType::from_name(n)),
            (num(2, 256), num(3, 2048)),
        );
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|k| args.get(k + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    let min = Duration::from_millis(if quick { 100 } else { 400 });
    let threads = num_threads();
    println!(
        "ferrum-kernels matbench: {threads} threads, kernel {:?}, best of {rounds} rounds",
        ferrum_kernels::cpu::Kernel::best()
    );
    println!("load average before: {}", load_average());

    let fork = best_of(5, || {
        time_per_call(Duration::from_millis(50), || {
            par_for(threads, |i| {
                black_box(i);
            })
        })
    });
    let rayon_fork = best_of(5, || {
        time_per_call(Duration::from_millis(50), || {
            use rayon::prelude::*;
            (0..threads).into_par_iter().for_each(|i| {
                black_box(i);
            })
        })
    });
    println!(
        "fork-join overhead over {threads} no-op tasks: ferrum pool {:.2} us, rayon global pool {:.2} us",
        fork * 1e6,
        rayon_fork * 1e6
    );

    // Every case, measured once per round; the best of the rounds is kept.
    let types = [GgmlType::Q4K, GgmlType::Q6K, GgmlType::Q8_0, GgmlType::Q5_0];
    let shapes = [(4864usize, 896usize), (896, 4864)];
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let buf: Vec<u64> = (0..(512usize << 20) / 8).map(|i| i as u64).collect();
    let (mut bw, mut bw1) = ((0.0f64, 0.0f64), (0.0f64, 0.0f64));
    let mut mv: Vec<Option<Row>> = Vec::new();
    let mut mm: Vec<Option<Timing>> = Vec::new();
    let keep = |old: Option<Timing>, new: Timing| match old {
        Some(o) => Timing {
            best: o.best.min(new.best),
            median: o.median.min(new.median),
            cpu: o.cpu.min(new.cpu),
        },
        None => new,
    };
    for round in 0..rounds {
        eprintln!("round {} of {rounds} ...", round + 1);
        let b1 = bandwidth(&buf, 1);
        let bn = bandwidth(&buf, threads);
        bw1 = (bw1.0.max(b1.0), bw1.1.max(b1.1));
        bw = (bw.0.max(bn.0), bw.1.max(bn.1));
        let mut k = 0;
        for ty in types {
            let mut cases: Vec<Option<Row>> = Vec::new();
            for (r, c) in shapes {
                cases.push(
                    (c % ty.block_size() == 0).then(|| matvec_bench(ty, r, c, &mut rng, min, &buf)),
                );
            }
            cases.push(Some(moe_bench(ty, &mut rng, min, &buf, false)));
            cases.push(Some(moe_bench(ty, &mut rng, min, &buf, true)));
            for case in cases {
                if k == mv.len() {
                    mv.push(case);
                } else if let (Some(old), Some(new)) = (&mut mv[k], case) {
                    old.t = keep(Some(old.t), new.t);
                    old.bw = old.bw.max(new.bw);
                }
                k += 1;
            }
        }
        let mut k = 0;
        for ty in types {
            for (r, c) in shapes {
                let t = (c % ty.block_size() == 0)
                    .then(|| gemm_bench(ty, r, c, 512, &mut rng, 2 * min));
                if k == mm.len() {
                    mm.push(t);
                } else if let (Some(old), Some(new)) = (mm[k], t) {
                    mm[k] = Some(keep(Some(old), new));
                }
                k += 1;
            }
        }
    }

    println!(
        "read bandwidth (512 MiB streaming sum; fastest pass / CPU-time based): \
         1 thread {:.1} / {:.1} GB/s, {threads} threads {:.1} / {:.1} GB/s",
        bw1.0, bw1.1, bw.0, bw.1
    );
    println!();
    println!("m = 1 matvec, weights streamed from memory (copies rotated through 256 MiB); GB/s = weight bytes / time.");
    println!("best = fastest call; median = median call; bw = best read bandwidth of a streaming sum over");
    println!("a cold slice of the same size ({threads} threads, 4 streams each), interleaved with the calls,");
    println!("i.e. measured at the same granularity and under the same load.");
    println!("| case | weight MiB | best us | median us | GB/s (best) | bw GB/s | % of bw |");
    println!("|---|---|---|---|---|---|---|");
    let mut k = 0;
    for ty in types {
        let mut names: Vec<String> = shapes
            .iter()
            .map(|(r, c)| format!("{ty} matvec rows {r} cols {c}"))
            .collect();
        names.push(format!("{ty} MoE 8 x matvec rows 768 cols 2048"));
        names.push(format!("{ty} MoE, one matmul_many of the 8"));
        for name in names {
            match &mv[k] {
                None => println!(
                    "| {name} | n/a: cols not a multiple of {} | | | | | |",
                    ty.block_size()
                ),
                Some(row) => {
                    let gbs = row.bytes as f64 / row.t.best / 1e9;
                    println!(
                        "| {name} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0}% |",
                        row.bytes as f64 / (1 << 20) as f64,
                        row.t.best * 1e6,
                        row.t.median * 1e6,
                        gbs,
                        row.bw,
                        100.0 * gbs / row.bw
                    );
                }
            }
            k += 1;
        }
    }
    println!();
    println!("m = 512 quantized matmul (GFLOP/s = 2 m rows cols / time)");
    println!("| case | best ms | median ms | cpu ms | GFLOP/s (best) | GFLOP/s (cpu) |");
    println!("|---|---|---|---|---|---|");
    let mut k = 0;
    for ty in types {
        for (r, c) in shapes {
            match mm[k] {
                None => println!("| {ty} rows {r} cols {c} | n/a | | | | |"),
                Some(t) => {
                    let flop = 2.0 * (512 * r * c) as f64;
                    println!(
                        "| {ty} rows {r} cols {c} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} |",
                        t.best * 1e3,
                        t.median * 1e3,
                        t.cpu * 1e3,
                        flop / t.best / 1e9,
                        flop / t.cpu / 1e9
                    );
                }
            }
            k += 1;
        }
    }
    println!();
    println!("load average after: {}", load_average());
}
