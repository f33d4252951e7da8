//! Kernel launches: every kernel goes through `launch!` (recorded passes
//! replay their graphs instead), with programmatic dependent launch on
//! sm_90+: a kernel may start while its predecessor still runs and waits on
//! the device (`pdl_sync` in kernels/common.cuh).

use std::ffi::c_void;

use cudarc::driver::{sys, CudaFunction, LaunchConfig};

use super::{dev_err, CudaBackend};
use crate::backend::Result;

/// Launch `$f` with `$cfg` and the given argument references (nothing to
/// do while a recorded pass replays: its graph holds the launch).
macro_rules! launch {
    ($be:expr, $f:expr, $cfg:expr, $($a:expr),* $(,)?) => {{
        if $be.replaying() {
            Ok(())
        } else {
            let mut args = [$( $a as *const _ as *mut ::std::ffi::c_void ),*];
            $be.launch_raw($f, $cfg, &mut args)
        }
    }};
}
pub(crate) use launch;

impl CudaBackend {
    /// Launch kernel `f` with `args` (addresses of its parameter values, in
    /// order) on the backend's stream; with programmatic dependent launch
    /// where the device has it.
    pub(crate) fn launch_raw(&self, f: &CudaFunction, cfg: LaunchConfig, args: &mut [*mut c_void]) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| dev_err("launch", e))?;
        // SAFETY: a plain C struct; all-zero is a valid (empty) attribute.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let c = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: self.pdl as u32,
        };
        // SAFETY: every kernel's parameter list is matched by its launcher
        // (`launch!`), and the argument values outlive this call.
        unsafe { sys::cuLaunchKernelEx(&c, f.cu_function(), args.as_mut_ptr(), std::ptr::null_mut()) }
            .result()
            .map_err(|e| dev_err("launch", e))
    }

}
