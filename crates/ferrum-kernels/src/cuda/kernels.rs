//! The loaded kernel functions, looked up by name once at start-up; the hot
//! path indexes typed fields (per weight type: a table indexed by GGUF id).

use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaFunction, CudaModule};
use ferrum_core::GgmlType;

use super::dev_err;
use crate::backend::{BackendError, Result};

/// The weight types the CUDA kernels decode, with their kernel-name suffix.
pub const TYPES: [(GgmlType, &str); 13] = [
    (GgmlType::F32, "f32"),
    (GgmlType::F16, "f16"),
    (GgmlType::BF16, "bf16"),
    (GgmlType::Q4_0, "q4_0"),
    (GgmlType::Q4_1, "q4_1"),
    (GgmlType::Q5_0, "q5_0"),
    (GgmlType::Q5_1, "q5_1"),
    (GgmlType::Q8_0, "q8_0"),
    (GgmlType::Q2K, "q2_k"),
    (GgmlType::Q3K, "q3_k"),
    (GgmlType::Q4K, "q4_k"),
    (GgmlType::Q5K, "q5_k"),
    (GgmlType::Q6K, "q6_k"),
];

/// The types with 8-bit-activation (dp4a) GEMV kernels (gemv_q8.cu).
const Q8_TYPES: [GgmlType; 8] =
    [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K];

/// The types with int8 tensor-core expert kernels (moe_mmq.cu).
const MMQ_TYPES: [GgmlType; 4] = [GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K, GgmlType::Q8_0];

/// The kernel-name suffix of `ty` (from TYPES).
fn suffix(ty: GgmlType) -> &'static str {
    TYPES.iter().find(|(t, _)| *t == ty).map(|(_, s)| *s).unwrap_or("")
}

/// GEMV and expert kernels with activations quantized to 8 bits (`gemv_q8.cu`).
pub struct Q8Kernels {
    /// One activation row, two output rows per warp.
    pub gemv1: CudaFunction,
    /// Up to GEMV_M activation rows.
    pub gemv: CudaFunction,
    pub moe_gate_up: CudaFunction,
    pub moe_down: CudaFunction,
}

/// Kernels instantiated for one weight type.
pub struct TypeKernels {
    pub gemv: CudaFunction,
    /// GEMV for a single activation row.
    pub gemv1: CudaFunction,
    pub moe_gate_up: CudaFunction,
    pub moe_down: CudaFunction,
    pub dequant_f16: CudaFunction,
    pub embed: CudaFunction,
    pub q8: Option<Q8Kernels>,
}

pub struct Kernels {
    by_type: Vec<Option<TypeKernels>>,
    /// Experts of large batches on the int8 tensor cores, by weight type.
    moe_mmq: Vec<(GgmlType, CudaFunction)>,
    pub rms_norm: CudaFunction,
    pub add_rms_norm: CudaFunction,
    pub add_inplace: CudaFunction,
    pub add_bias: CudaFunction,
    pub silu_mul: CudaFunction,
    pub gather_rows: CudaFunction,
    pub to_f16: CudaFunction,
    pub quantize_q8: CudaFunction,
    /// 8-bit-activation GEMV over up to three weight parts of any q8 type:
    /// one activation row (two output rows per warp) / up to GEMV_M rows.
    pub linear1_q8: CudaFunction,
    pub linear_q8: CudaFunction,
    pub argmax_part: CudaFunction,
    pub argmax_merge: CudaFunction,
    /// Temperature / top-k / top-p / min-p sampling, one block per row.
    pub sample_rows: CudaFunction,
    pub copy_blocks: CudaFunction,
    pub qk_rope_store: CudaFunction,
    /// Attention for head dims up to 32, 64, 128 and 256.
    pub attention: [CudaFunction; 4],
    /// Decode-only batches: split-key attention, by head dims a lane
    /// (2, 4, 8) and query heads a block (1, 4, 8); the merge of its splits.
    pub attention_decode: [[CudaFunction; 3]; 3],
    /// Four query heads a block with eight warps, by head dims a lane.
    pub attention_decode_w8: [CudaFunction; 3],
    pub attention_combine: CudaFunction,
    pub moe_route: CudaFunction,
    /// Assignments bucketed by expert and cut into tiles.
    pub moe_tiles: CudaFunction,
    pub moe_combine: CudaFunction,
    pub moe_gather_f16: CudaFunction,
    pub moe_combine_sorted: CudaFunction,
}

/// Largest dynamic shared memory an attention block asks for.
pub const ATTN_MAX_SMEM: usize = 160 * 1024;

impl Kernels {
    pub fn load(m: &Arc<CudaModule>) -> Result<Kernels> {
        let f = |name: &str| m.load_function(name).map_err(|e| BackendError::Device { op: "load kernels", detail: format!("{name}: {e:?}") });
        let mut by_type: Vec<Option<TypeKernels>> = (0..=GgmlType::BF16.id() as usize).map(|_| None).collect();
        for (ty, s) in TYPES {
            let k = TypeKernels {
                gemv: f(&format!("gemv_{s}"))?,
                gemv1: f(&format!("gemv1_{s}"))?,
                moe_gate_up: f(&format!("moe_gate_up_{s}"))?,
                moe_down: f(&format!("moe_down_{s}"))?,
                dequant_f16: f(&format!("dequant_f16_{s}"))?,
                embed: f(&format!("embed_{s}"))?,
                q8: None,
            };
            by_type[ty.id() as usize] = Some(k);
        }
        for ty in Q8_TYPES {
            let s = suffix(ty);
            let q8 = Q8Kernels {
                gemv1: f(&format!("gemv1_q8_{s}"))?,
                gemv: f(&format!("gemv_q8_{s}"))?,
                moe_gate_up: f(&format!("moe_gate_up_q8_{s}"))?,
                moe_down: f(&format!("moe_down_q8_{s}"))?,
            };
            if let Some(Some(k)) = by_type.get_mut(ty.id() as usize) {
                k.q8 = Some(q8);
            }
        }
        let attention = [f("attention_d1")?, f("attention_d2")?, f("attention_d4")?, f("attention_d8")?];
        for a in &attention {
            a.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, ATTN_MAX_SMEM as i32)
                .map_err(|e| dev_err("attention smem", e))?;
        }
        let dec = |v: usize| -> Result<[CudaFunction; 3]> {
            let g = |g: usize| f(&format!("attention_decode_v{v}_g{g}"));
            Ok([g(1)?, g(4)?, g(8)?])
        };
        let attention_decode = [dec(2)?, dec(4)?, dec(8)?];
        let w8 = |v: usize| f(&format!("attention_decode_v{v}_g4_w8"));
        let attention_decode_w8 = [w8(2)?, w8(4)?, w8(8)?];
        let mut moe_mmq = Vec::new();
        for ty in MMQ_TYPES {
            let k = f(&format!("moe_mmq_{}", suffix(ty)))?;
            k.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 48 * 1024)
                .map_err(|e| dev_err("moe_mmq smem", e))?;
            moe_mmq.push((ty, k));
        }
        Ok(Kernels {
            by_type,
            moe_mmq,
            rms_norm: f("rms_norm")?,
            add_rms_norm: f("add_rms_norm")?,
            add_inplace: f("add_inplace")?,
            add_bias: f("add_bias")?,
            silu_mul: f("silu_mul")?,
            gather_rows: f("gather_rows")?,
            to_f16: f("to_f16")?,
            quantize_q8: f("quantize_q8")?,
            linear1_q8: f("linear1_q8")?,
            linear_q8: f("linear_q8")?,
            argmax_part: f("argmax_part")?,
            argmax_merge: f("argmax_merge")?,
            sample_rows: f("sample_rows")?,
            copy_blocks: f("copy_blocks")?,
            qk_rope_store: f("qk_rope_store")?,
            attention,
            attention_decode,
            attention_decode_w8,
            attention_combine: f("attention_combine")?,
            moe_route: f("moe_route")?,
            moe_tiles: f("moe_tiles")?,
            moe_combine: f("moe_combine")?,
            moe_gather_f16: f("moe_gather_f16")?,
            moe_combine_sorted: f("moe_combine_sorted")?,
        })
    }

    /// The int8 tensor-core expert kernel of `ty`, if it has one.
    pub fn moe_mmq(&self, ty: GgmlType) -> Option<&CudaFunction> {
        self.moe_mmq.iter().find(|(t, _)| *t == ty).map(|(_, k)| k)
    }

    pub fn supports(&self, ty: GgmlType) -> bool {
        self.by_type.get(ty.id() as usize).map(|k| k.is_some()).unwrap_or(false)
    }

    pub fn for_type(&self, ty: GgmlType) -> Result<&TypeKernels> {
        self.by_type
            .get(ty.id() as usize)
            .and_then(|k| k.as_ref())
            .ok_or(BackendError::UnsupportedType { op: "cuda kernel", ty, backend: "cuda" })
    }
}
