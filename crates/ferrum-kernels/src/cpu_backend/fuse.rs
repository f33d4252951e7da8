//! Fused weights on the CPU: Q/K/V (or gate/up) joined along their output
//! rows so one `linear` call computes them all.
//!
//! Parts of one type are concatenated into a single matrix (one product);
//! parts of different types (e.g. Q5_0 Q/K with a Q8_0 V) stay separate and
//! run as one fork-join of several products whose outputs are interleaved
//! into the fused row `[part0 | part1 | ...]`.

use std::sync::Arc;

use ferrum_core::GgmlType;

use super::{check_cols, CpuWeight, Mat};
use crate::backend::{BackendError, HostBytes, Result};
use crate::cpu::{self, MatmulJob};

pub(super) fn fuse(parts: Vec<CpuWeight>) -> Result<CpuWeight> {
    let shape = |detail: String| BackendError::Shape { op: "fuse", detail };
    let first = parts.first().ok_or_else(|| shape("no parts".into()))?;
    let name = parts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join("+");
    if parts.iter().all(|p| p.dims.len() == 1) {
        // Biases: join the f32 values.
        let mut v = Vec::new();
        for p in &parts {
            v.extend_from_slice(p.vector(p.dims[0], "fuse")?);
        }
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let n = v.len();
        return Ok(CpuWeight { ty: GgmlType::F32, dims: vec![n], bytes: HostBytes::Owned(Arc::new(bytes)), vector: Some(v), name, parts: Vec::new() });
    }
    let cols = first.dims[0];
    if parts.iter().any(|p| p.dims.len() != 2 || p.dims[0] != cols || !p.parts.is_empty()) {
        let dims: Vec<_> = parts.iter().map(|p| p.dims.clone()).collect();
        return Err(shape(format!("{name}: parts must be 2-D with one input size, got {dims:?}")));
    }
    let rows: usize = parts.iter().map(|p| p.dims[1]).sum();
    if parts.iter().all(|p| p.ty == first.ty) {
        // One type: one contiguous matrix (rows are whole blocks).
        let mut bytes = Vec::with_capacity(parts.iter().map(|p| p.bytes().len()).sum());
        for p in &parts {
            bytes.extend_from_slice(p.bytes());
        }
        return Ok(CpuWeight { ty: first.ty, dims: vec![cols, rows], bytes: HostBytes::Owned(Arc::new(bytes)), vector: None, name, parts: Vec::new() });
    }
    Ok(CpuWeight { ty: first.ty, dims: vec![cols, rows], bytes: HostBytes::Owned(Arc::new(Vec::new())), vector: None, name, parts })
}

/// `out = x · [part0; part1; ...]ᵀ` for parts of different types.
pub(super) fn linear_parts(x: &Mat, parts: &[CpuWeight], out: &mut Mat) -> Result<()> {
    let mats = parts.iter().map(|p| p.mat("linear")).collect::<Result<Vec<_>>>()?;
    check_cols("linear", x, mats[0].cols)?;
    let total: usize = mats.iter().map(|m| m.rows).sum();
    let mut tmp: Vec<Vec<f32>> = mats.iter().map(|m| vec![0.0f32; x.rows * m.rows]).collect();
    let mut jobs: Vec<MatmulJob<'_>> =
        mats.iter().zip(tmp.iter_mut()).map(|(m, y)| MatmulJob { w: *m, x: &x.data, m: x.rows, y }).collect();
    cpu::matmul_many(&mut jobs)?;
    out.reshape(x.rows, total);
    for r in 0..x.rows {
        let mut off = r * total;
        for (m, y) in mats.iter().zip(&tmp) {
            out.data[off..off + m.rows].copy_from_slice(&y[r * m.rows..(r + 1) * m.rows]);
            off += m.rows;
        }
    }
    Ok(())
}
