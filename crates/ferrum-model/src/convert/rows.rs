//! Encoding one tensor's rows in parallel: K-quant encoding runs at a few
//! million elements per second per core, so rows are split into chunks
//! spread over the CPU pool.

use std::sync::Mutex;

use ferrum_core::GgmlType;
use ferrum_format::quant::{self, QuantError};
use ferrum_kernels::cpu::{num_threads, par_for};

use super::{ConvertError, Result};

/// Elements per parallel task (at least one row).
const TASK_ELEMENTS: usize = 1 << 16;

/// Encode `data` (rows of `ne0` elements) as `ty`.
pub fn encode(tensor: &str, ty: GgmlType, data: &[f32], ne0: usize) -> Result<Vec<u8>> {
    let wrap = |source| ConvertError::Quant { tensor: tensor.to_string(), error: source };
    if !ty.is_quantized() || data.len() <= TASK_ELEMENTS || num_threads() <= 1 || ne0 == 0 {
        return quant::quantize(ty, data).map_err(wrap);
    }
    let n_bytes = ty.bytes_for(data.len() as u64).and_then(|b| usize::try_from(b).ok()).ok_or(wrap(QuantError::NotBlockMultiple {
        ty,
        elements: data.len(),
        block_size: ty.block_size(),
    }))?;
    let row_bytes =
        ty.bytes_for(ne0 as u64).map(|b| b as usize).ok_or(wrap(QuantError::NotBlockMultiple { ty, elements: ne0, block_size: ty.block_size() }))?;
    let rows_per_task = (TASK_ELEMENTS / ne0).max(1);
    let mut out = vec![0u8; n_bytes];
    let tasks: Vec<Mutex<(&[f32], &mut [u8])>> =
        data.chunks(rows_per_task * ne0).zip(out.chunks_mut(rows_per_task * row_bytes)).map(Mutex::new).collect();
    let failure: Mutex<Option<QuantError>> = Mutex::new(None);
    par_for(tasks.len(), |i| {
        let Some(task) = tasks.get(i) else { return };
        let mut guard = task.lock().unwrap_or_else(|p| p.into_inner());
        let (src, dst) = &mut *guard;
        if let Err(e) = quant::quantize_into(ty, src, dst) {
            *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
    });
    drop(tasks);
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(wrap(e)),
        None => Ok(out),
    }
}
