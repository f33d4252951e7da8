//! Run-time compilation of Ferrum's CUDA kernels with NVRTC, to a cubin for
//! the device's architecture, cached on disk by source hash and target.
//!
//! The kernel sources (kernels/*.cu) form one translation unit and include no
//! CUDA headers, so compiling needs only the NVRTC library: on the GPU machine
//! the toolkit's, in CI the `nvidia-cuda-nvrtc-cu12` wheel's (no GPU needed).

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};

use cudarc::nvrtc::{result, sys};
use sha2::{Digest, Sha256};

use crate::backend::{BackendError, Result};

/// The kernel sources, in dependency order.
const SOURCES: [(&str, &str); 10] = [
    ("common.cuh", include_str!("kernels/common.cuh")),
    ("quant.cuh", include_str!("kernels/quant.cuh")),
    ("gemv.cu", include_str!("kernels/gemv.cu")),
    ("gemv_q8.cu", include_str!("kernels/gemv_q8.cu")),
    ("moe_mmq.cu", include_str!("kernels/moe_mmq.cu")),
    ("elementwise.cu", include_str!("kernels/elementwise.cu")),
    ("rope.cu", include_str!("kernels/rope.cu")),
    ("attention.cu", include_str!("kernels/attention.cu")),
    ("moe.cu", include_str!("kernels/moe.cu")),
    ("sample.cu", include_str!("kernels/sample.cu")),
];

/// The whole translation unit.
pub fn source() -> String {
    let mut s = String::new();
    for (name, text) in SOURCES {
        s.push_str(&format!("// ---- {name}\n"));
        s.push_str(text);
        s.push('\n');
    }
    s
}

fn err(detail: String) -> BackendError {
    BackendError::Device { op: "nvrtc", detail }
}

/// Whether the NVRTC library can be loaded (searched on the library path).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to open the shared library.
    unsafe { sys::is_culib_present() }
}

/// The NVRTC version, `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: plain out-parameters.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result().map_err(|e| err(format!("{e:?}")))?;
    Ok((major, minor))
}

/// Compile the kernels for `arch` (e.g. `sm_90a`, `sm_80`) to a cubin.
pub fn compile_cubin(arch: &str) -> Result<Vec<u8>> {
    if !nvrtc_available() {
        return Err(err("the NVRTC library (libnvrtc.so) was not found on the library path".into()));
    }
    let src = CString::new(source()).map_err(|e| err(e.to_string()))?;
    let name = CString::new("ferrum_kernels.cu").map_err(|e| err(e.to_string()))?;
    let prog = result::create_program(&src, Some(&name)).map_err(|e| err(format!("create program: {e:?}")))?;
    let opts = [format!("--gpu-architecture={arch}"), "--std=c++17".into(), "--fmad=true".into(), "-lineinfo".into()];
    // SAFETY: `prog` is live until destroyed below; the buffers are sized by NVRTC.
    let out = unsafe {
        let compiled = result::compile_program(prog, &opts);
        let out = match compiled {
            Err(e) => {
                let log = result::get_program_log(prog)
                    .map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().into_owned())
                    .unwrap_or_default();
                Err(err(format!("compiling for {arch} failed ({e:?}):\n{log}")))
            }
            Ok(()) => {
                let mut size = 0usize;
                sys::nvrtcGetCUBINSize(prog, &mut size).result().map_err(|e| err(format!("cubin size: {e:?}")))?;
                let mut cubin = vec![0u8; size];
                sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char)
                    .result()
                    .map_err(|e| err(format!("cubin: {e:?}")))?;
                Ok(cubin)
            }
        };
        let _ = result::destroy_program(prog);
        out
    };
    out
}

/// The cubin for `arch`, from `cache_dir` when present there, else compiled
/// and written there (a failed write only costs a recompilation next time).
pub fn cubin_cached(arch: &str, cache_dir: Option<&Path>) -> Result<Vec<u8>> {
    let Some(dir) = cache_dir else {
        return compile_cubin(arch);
    };
    let (major, minor) = nvrtc_version()?;
    let mut h = Sha256::new();
    h.update(source().as_bytes());
    h.update(format!("{arch} nvrtc {major}.{minor}").as_bytes());
    let key: String = h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect();
    let path: PathBuf = dir.join(format!("kernels-{arch}-{key}.cubin"));
    if let Ok(bytes) = std::fs::read(&path) {
        return Ok(bytes);
    }
    let cubin = compile_cubin(arch)?;
    if std::fs::create_dir_all(dir).is_ok() {
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, &cubin).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok(cubin)
}
