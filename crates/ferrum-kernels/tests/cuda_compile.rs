//! Every CUDA kernel compiles with NVRTC for Ampere (sm_80) and Hopper
//! (sm_90a). Needs no GPU, only the NVRTC library (scripts/test.sh installs
//! the `nvidia-cuda-nvrtc-cu12` wheel and puts it on LD_LIBRARY_PATH, and sets
//! FERRUM_REQUIRE_NVRTC=1 so that a missing library fails instead of skipping).
#![cfg(feature = "cuda")]

use ferrum_kernels::cuda::compile;

#[test]
fn kernels_compile_for_sm80_and_sm90a() {
    if !compile::nvrtc_available() {
        assert!(std::env::var_os("FERRUM_REQUIRE_NVRTC").is_none(), "FERRUM_REQUIRE_NVRTC is set but libnvrtc was not found");
        eprintln!("skipped: libnvrtc not on the library path");
        return;
    }
    let (major, minor) = compile::nvrtc_version().unwrap();
    for arch in ["sm_80", "sm_90a"] {
        let t = std::time::Instant::now();
        let cubin = compile::compile_cubin(arch).unwrap_or_else(|e| panic!("{e}"));
        assert!(cubin.len() > 1000, "{arch}: cubin of {} bytes", cubin.len());
        eprintln!("NVRTC {major}.{minor}: {arch} cubin {} KiB in {:.1} s", cubin.len() / 1024, t.elapsed().as_secs_f64());
    }
}

/// Kernels are launched while their predecessor still runs (programmatic
/// dependent launch), so every kernel must wait in `pdl_sync` before it
/// touches activations: each `__global__` body calls it, directly or through
/// device functions that do. (Textual check over the one translation unit.)
#[test]
fn every_kernel_waits_for_its_predecessor() {
    let src = compile::source();
    // The body of the function whose `{` is at byte `open`.
    let body = |open: usize| -> &str {
        let mut depth = 0;
        for (i, c) in src[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return &src[open..open + i];
                    }
                }
                _ => {}
            }
        }
        &src[open..]
    };
    // Device functions (templates included) and their bodies.
    let mut funcs = Vec::new();
    for prefix in ["__device__ void ", "__device__ __forceinline__ void "] {
        for (at, _) in src.match_indices(prefix) {
            let name: String = src[at + prefix.len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            funcs.push((name, body(at + src[at..].find('{').unwrap())));
        }
    }
    let calls = |b: &str, f: &str| b.contains(&format!("{f}<")) || b.contains(&format!("{f}("));
    // Those that call pdl_sync, directly or through one another.
    let mut syncing: Vec<String> = Vec::new();
    loop {
        let more: Vec<String> = funcs
            .iter()
            .filter(|(n, b)| !syncing.contains(n) && (b.contains("pdl_sync()") || syncing.iter().any(|f| calls(b, f))))
            .map(|(n, _)| n.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        syncing.extend(more);
    }
    let mut missing = Vec::new();
    for (at, _) in src.match_indices("__global__ void ") {
        let rest = &src[at + "__global__ void ".len()..];
        let rest = rest.strip_prefix("__launch_bounds__").map(|r| &r[r.find(')').unwrap() + 1..]).unwrap_or(rest).trim_start();
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '#').collect();
        let b = body(at + src[at..].find('{').unwrap());
        if !b.contains("pdl_sync()") && !syncing.iter().any(|f| calls(b, f)) {
            missing.push(name);
        }
    }
    assert!(!syncing.is_empty());
    assert!(missing.is_empty(), "kernels that never call pdl_sync: {missing:?}");
}
