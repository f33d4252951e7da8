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
