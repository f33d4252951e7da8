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
use crate::cpu;

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
    // Runs of one type become one contiguous matrix (rows are whole
    // blocks); a run of one part is kept as it is (possibly borrowed).
    let ty = first.ty;
    let mut runs: Vec<CpuWeight> = Vec::with_capacity(parts.len());
    let mut run: Vec<CpuWeight> = Vec::new();
    for p in parts {
        if run.first().is_some_and(|r| r.ty != p.ty) {
            runs.push(concat(std::mem::take(&mut run), cols));
        }
        run.push(p);
    }
    runs.push(concat(run, cols));
    if runs.len() == 1 {
        let mut one = runs.remove(0);
        one.name = name;
        return Ok(one);
    }
    Ok(CpuWeight { ty, dims: vec![cols, rows], bytes: HostBytes::Owned(Arc::new(Vec::new())), vector: None, name, parts: runs })
}

/// Same-type 2-D parts (`[rows_k, cols]`, at least one) stacked into one
/// `[Σ rows_k, cols]` weight.
fn concat(mut parts: Vec<CpuWeight>, cols: usize) -> CpuWeight {
    if parts.len() == 1 {
        return parts.remove(0);
    }
    let name = parts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join("+");
    let rows = parts.iter().map(|p| p.dims[1]).sum();
    let mut bytes = Vec::with_capacity(parts.iter().map(|p| p.bytes().len()).sum());
    for p in &parts {
        bytes.extend_from_slice(p.bytes());
    }
    CpuWeight { ty: parts[0].ty, dims: vec![cols, rows], bytes: HostBytes::Owned(Arc::new(bytes)), vector: None, name, parts: Vec::new() }
}

/// `out = x · [part0; part1; ...]ᵀ` for parts of different types: one
/// fork-join, the input quantized once per activation format, each part
/// writing its own column range of `out` (`[rows, Σ part rows]`).
pub(super) fn linear_parts(x: &Mat, parts: &[CpuWeight], out: &mut Mat) -> Result<()> {
    let mats = parts.iter().map(|p| p.mat("linear")).collect::<Result<Vec<_>>>()?;
    let cols = mats.first().map_or(0, |m| m.cols);
    check_cols("linear", x, cols)?;
    let total: usize = mats.iter().map(|m| m.rows).sum();
    out.reshape(x.rows, total);
    cpu::matmul_parts(&mats, &x.data, x.rows, &mut out.data)?;
    Ok(())
}
