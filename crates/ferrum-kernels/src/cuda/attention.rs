//! Attention on the device: the step's plan uploaded once (plan/run), the
//! fused split + QK-norm + RoPE + paged-cache write, and paged attention.

use std::sync::Mutex;

use cudarc::driver::LaunchConfig;

use super::kernels::ATTN_MAX_SMEM;
use super::{launch, CudaAct, CudaBackend, CudaKv, CudaWeight, DevBuf};
use crate::attn_meta::AttnMeta;
use crate::backend::{BackendError, HeadSpec, KvDType, Result, Rope};

/// Keys per shared-memory tile, warps per block and keys per decode split; as in attention.cu.
const KT: usize = 32;
const ATT_WARPS: usize = 4;
/// Warps of a decode attention block; as in attention.cu.
const DEC_WARPS: u32 = 4;
/// Decode attention blocks a step aims for (a few per SM), and the fewest
/// keys a split takes.
/// (At most DEC_MAX_SPLITS in attention.cu, which this bounds.)
const DEC_BLOCKS: usize = 1024;
const DEC_MIN_SPLIT: usize = 32;
/// Decode rows from which the attention leaves its small-batch kernel.
const DEC_SMALL_ROWS: usize = 16;

/// A step's attention metadata on the device, in one buffer uploaded at
/// first use: `[pos (rows) | slot (rows) | block-table offset (seqs) | block tables]`.
/// In a recorded pass every table is padded to the blocks of the decode
/// splits, so that a shape's upload always has the same size.
pub struct CudaPlan {
    pub meta: AttnMeta,
    buf: Mutex<Option<DevBuf<u32>>>,
    n_rows: usize,
    n_seqs: usize,
    /// Row tiles `(seq, first row, rows)` per tile height, built on first use.
    tiles: Mutex<Vec<(usize, DevBuf<u32>, usize)>>,
}

/// The longest context of `plan` rounded up to a power of two (at least
/// DEC_MIN_SPLIT): the decode attention's shape depends on it, not on the
/// exact lengths, so a recorded pass serves every context up to it.
pub fn decode_span(plan: &CudaPlan) -> usize {
    plan.meta.seqs.iter().map(|s| s.ctx_len).max().unwrap_or(1).next_power_of_two().max(DEC_MIN_SPLIT)
}

/// Key splits of the decode attention: enough blocks to fill the GPU
/// (`blocks` of them per split), splits of at least DEC_MIN_SPLIT keys.
fn decode_splits(span: usize, blocks: usize) -> usize {
    (span / DEC_MIN_SPLIT).min(DEC_BLOCKS.div_ceil(blocks.max(1)).next_power_of_two()).max(1)
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| BackendError::Invalid { op: "attention", detail: "lock poisoned".into() })
}

impl CudaPlan {
    pub fn new(meta: AttnMeta) -> Result<CudaPlan> {
        let (n_rows, n_seqs) = (meta.rows.len(), meta.seqs.len());
        Ok(CudaPlan { meta, buf: Mutex::new(None), n_rows, n_seqs, tiles: Mutex::new(Vec::new()) })
    }

    /// The device address of the plan's buffer, uploading it on first use.
    pub(super) fn upload(&self, be: &CudaBackend) -> Result<u64> {
        let mut buf = lock(&self.buf)?;
        if let Some(b) = buf.as_ref() {
            return Ok(be.ptr(b));
        }
        let pad = (be.pass_active()).then(|| decode_span(self).div_ceil(self.meta.block_size));
        let meta = &self.meta;
        let mut v: Vec<u32> = Vec::with_capacity(2 * self.n_rows + self.n_seqs + meta.seqs.iter().map(|s| s.block_table.len()).sum::<usize>());
        v.extend(meta.rows.iter().map(|r| r.pos));
        v.extend(meta.rows.iter().map(|r| r.slot));
        let mut off = 0u32;
        for s in &meta.seqs {
            v.push(off);
            off += pad.unwrap_or(s.block_table.len()) as u32;
        }
        for s in &meta.seqs {
            match pad {
                Some(n) => v.extend((0..n).map(|i| s.block_table.get(i).copied().unwrap_or(0))),
                None => v.extend_from_slice(&s.block_table),
            }
        }
        let b = be.upload_slice(&v)?;
        let p = be.ptr(&b);
        *buf = Some(b);
        Ok(p)
    }

    fn pos(&self, be: &CudaBackend) -> Result<u64> {
        self.upload(be)
    }
    fn slot(&self, be: &CudaBackend) -> Result<u64> {
        Ok(self.upload(be)? + 4 * self.n_rows as u64)
    }
    fn bt_off(&self, be: &CudaBackend) -> Result<u64> {
        Ok(self.upload(be)? + 8 * self.n_rows as u64)
    }
    fn tables(&self, be: &CudaBackend) -> Result<u64> {
        Ok(self.upload(be)? + 4 * (2 * self.n_rows + self.n_seqs) as u64)
    }

    /// Device tiles of at most `qt` consecutive rows of one sequence, and their count.
    fn tiles(&self, be: &CudaBackend, qt: usize) -> Result<(u64, usize)> {
        let mut t = lock(&self.tiles)?;
        if let Some((_, d, n)) = t.iter().find(|(q, _, _)| *q == qt) {
            return Ok((be.ptr(d), *n));
        }
        let mut v = Vec::new();
        for (si, s) in self.meta.seqs.iter().enumerate() {
            let mut r = 0;
            while r < s.n_rows {
                let n = qt.min(s.n_rows - r);
                v.extend_from_slice(&[si as u32, (s.row_start + r) as u32, n as u32]);
                r += n;
            }
        }
        let n = v.len() / 3;
        let d = be.upload_slice(&v)?;
        let p = be.ptr(&d);
        t.push((qt, d, n));
        Ok((p, n))
    }
}

fn check_kv(op: &'static str, kv: &CudaKv, heads: &HeadSpec, plan: &CudaPlan) -> Result<()> {
    if kv.spec.n_kv_heads != heads.n_kv_heads || kv.spec.head_dim != heads.head_dim || kv.spec.block_size != plan.meta.block_size {
        return Err(BackendError::Shape { op, detail: format!("KV pool {:?} vs heads {heads:?}", kv.spec) });
    }
    // (Head dims a multiple of 4: the attention kernels move 4 values at a time.)
    if heads.n_kv_heads == 0 || heads.n_heads % heads.n_kv_heads != 0 || heads.head_dim > 256 || heads.head_dim % 4 != 0 {
        return Err(BackendError::Invalid { op, detail: format!("unsupported head geometry {heads:?} (head_dim must be a multiple of 4, at most 256)") });
    }
    if let Some(bad) = plan.meta.rows.iter().map(|r| r.slot).find(|&s| s as usize >= kv.spec.n_blocks * kv.spec.block_size) {
        return Err(BackendError::Invalid { op, detail: format!("slot {bad} outside the pool") });
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn qk_rope_store(
    be: &CudaBackend,
    qkv: &CudaAct,
    q: &mut CudaAct,
    q_norm: Option<&CudaWeight>,
    k_norm: Option<&CudaWeight>,
    heads: &HeadSpec,
    rope: &Rope,
    plan: &CudaPlan,
    kv: &mut CudaKv,
) -> Result<()> {
    let hd = heads.head_dim;
    let (qd, kvd) = (heads.n_heads * hd, heads.n_kv_heads * hd);
    if qkv.cols != qd + 2 * kvd || qkv.rows != plan.n_rows {
        return Err(BackendError::Shape {
            op: "qk_rope_store",
            detail: format!("qkv [{}, {}] vs plan of {} rows and {} columns", qkv.rows, qkv.cols, plan.n_rows, qd + 2 * kvd),
        });
    }
    check_kv("qk_rope_store", kv, heads, plan)?;
    if rope.inv_freq.len() != hd / 2 {
        return Err(BackendError::Shape { op: "qk_rope_store", detail: format!("{} rope frequencies for head dim {hd}", rope.inv_freq.len()) });
    }
    be.shape(q, qkv.rows, qd)?;
    if qkv.rows == 0 {
        return Ok(());
    }
    let qn = q_norm.map(|w| be.vector(w, hd, "q_norm").map(|v| be.ptr(v))).transpose()?.unwrap_or(0);
    let kn = k_norm.map(|w| be.vector(w, hd, "k_norm").map(|v| be.ptr(v))).transpose()?.unwrap_or(0);
    let freq = be.rope_table(rope)?;
    let (qkvp, qp, pos, slot, kp, vp) = (be.ptr(&qkv.buf), be.ptr(&q.buf), plan.pos(be)?, plan.slot(be)?, be.ptr(&kv.k), be.ptr(&kv.v));
    let f16 = i32::from(kv.spec.dtype == KvDType::F16);
    let (nh, nkv, hdi) = (heads.n_heads as i32, heads.n_kv_heads as i32, hd as i32);
    let neox = i32::from(rope.style == crate::backend::RopeStyle::NeoX);
    let cfg = LaunchConfig { grid_dim: (qkv.rows as u32, (heads.n_heads + heads.n_kv_heads) as u32, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    launch!(be, &be.k.qk_rope_store, cfg, &qkvp, &qp, &qn, &kn, &freq, &pos, &slot, &kp, &vp, &f16, &nh, &nkv, &hdi, &neox, &heads.norm_eps)
}

pub fn attention(be: &CudaBackend, q: &CudaAct, heads: &HeadSpec, plan: &CudaPlan, kv: &CudaKv, out: &mut CudaAct) -> Result<()> {
    let hd = heads.head_dim;
    if q.cols != heads.n_heads * hd || q.rows != plan.n_rows {
        return Err(BackendError::Shape { op: "attention", detail: format!("q [{}, {}] vs plan of {} rows", q.rows, q.cols, plan.n_rows) });
    }
    check_kv("attention", kv, heads, plan)?;
    be.shape(out, q.rows, q.cols)?;
    if q.rows == 0 {
        return Ok(());
    }
    if plan.meta.seqs.iter().all(|s| s.n_rows == 1) {
        return decode(be, q, heads, plan, kv, out);
    }
    // Dims per lane picks the kernel; items (row, head) per warp bound the tile height.
    let (kernel, max_items) = match hd.div_ceil(32) {
        1 => (0, 8),
        2 => (1, 8),
        3 | 4 => (2, 8),
        _ => (3, 4),
    };
    let group = heads.n_heads / heads.n_kv_heads;
    if group > ATT_WARPS * max_items {
        return Err(BackendError::Invalid { op: "attention", detail: format!("{group} query heads per KV head (at most {})", ATT_WARPS * max_items) });
    }
    let qt = (ATT_WARPS * max_items / group).max(1);
    // Q [items, hd], K [KT, hd + 4], V [KT, hd] (as in attention.cu).
    let smem = 4 * (qt * group * hd + KT * (hd + 4) + KT * hd);
    if smem > ATTN_MAX_SMEM {
        return Err(BackendError::Invalid { op: "attention", detail: format!("{smem} bytes of shared memory for {heads:?}") });
    }
    let (tiles, n_tiles) = plan.tiles(be, qt)?;
    let (qp, op, kp, vp) = (be.ptr(&q.buf), be.ptr(&out.buf), be.ptr(&kv.k), be.ptr(&kv.v));
    let f16 = i32::from(kv.spec.dtype == KvDType::F16);
    let (pos, bt_off, tables) = (plan.pos(be)?, plan.bt_off(be)?, plan.tables(be)?);
    let (nh, nkv, hdi, bs) = (heads.n_heads as i32, heads.n_kv_heads as i32, hd as i32, plan.meta.block_size as i32);
    let window = heads.window.map(|w| w as i32).unwrap_or(0);
    let cfg = LaunchConfig {
        grid_dim: (n_tiles as u32, heads.n_kv_heads as u32, 1),
        block_dim: (32 * ATT_WARPS as u32, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    launch!(be, &be.k.attention[kernel], cfg, &qp, &op, &kp, &vp, &f16, &tiles, &pos, &bt_off, &tables, &nh, &nkv, &hdi, &bs, &heads.scale, &window)
}

/// A decode-only step (one row per sequence): split-key attention, merged
/// by a second kernel when there are several splits.
fn decode(be: &CudaBackend, q: &CudaAct, heads: &HeadSpec, plan: &CudaPlan, kv: &CudaKv, out: &mut CudaAct) -> Result<()> {
    let (rows, hd) = (q.rows, heads.head_dim);
    // Head dims a lane (loads of V consecutive values).
    let (vi, v) = match hd {
        0..=64 => (0, 2),
        65..=128 => (1, 4),
        _ => (2, 8),
    };
    if hd > 256 || hd % v != 0 {
        return Err(BackendError::Invalid { op: "attention", detail: format!("decode attention needs head_dim <= 256 and a multiple of {v}, got {hd}") });
    }
    let group = heads.n_heads / heads.n_kv_heads;
    // The kernel: query heads a block and warps. Small batches take four
    // heads a block with eight warps (twice the blocks of eight heads, each
    // with half the serial work; a split's keys in one pass of the warps:
    // one H100, 30B-A3B batch-1 decode +3 % and +4 %); from DEC_SMALL_ROWS
    // rows, up to eight heads with four warps (2 % faster at 64 rows).
    let k = &be.k;
    let (f, dg, warps) = match group {
        1 => (&k.attention_decode[vi][0], 1, DEC_WARPS),
        _ if rows < DEC_SMALL_ROWS => (&k.attention_decode_w8[vi], 4, 8),
        2..=4 => (&k.attention_decode[vi][1], 4, DEC_WARPS),
        _ => (&k.attention_decode[vi][2], 8, DEC_WARPS),
    };
    let head_blocks = heads.n_kv_heads * group.div_ceil(dg);
    let n_splits = decode_splits(decode_span(plan), rows * head_blocks);
    let (part_o, part_ml) = if n_splits > 1 {
        (Some(be.buffer::<f32>(n_splits * rows * q.cols)?), Some(be.buffer::<f32>(2 * n_splits * rows * heads.n_heads)?))
    } else {
        (None, None)
    };
    let po = part_o.as_ref().map(|b| be.ptr(b)).unwrap_or(0);
    let pml = part_ml.as_ref().map(|b| be.ptr(b)).unwrap_or(0);
    let (qp, op, kp, vp) = (be.ptr(&q.buf), be.ptr(&out.buf), be.ptr(&kv.k), be.ptr(&kv.v));
    let f16 = i32::from(kv.spec.dtype == KvDType::F16);
    let (pos, bt_off, tables) = (plan.pos(be)?, plan.bt_off(be)?, plan.tables(be)?);
    let (nh, nkv, hdi, bs) = (heads.n_heads as i32, heads.n_kv_heads as i32, heads.head_dim as i32, plan.meta.block_size as i32);
    let window = heads.window.map(|w| w as i32).unwrap_or(0);
    // The output's 8-bit form for the O projection (a warp's 32 values must
    // lie in one head).
    let q8 = if heads.head_dim.is_multiple_of(32) { be.q8_out(out)? } else { 0 };
    let cfg = LaunchConfig { grid_dim: (rows as u32, head_blocks as u32, n_splits as u32), block_dim: (32 * warps, 1, 1), shared_mem_bytes: 0 };
    launch!(be, f, cfg, &qp, &op, &q8, &po, &pml, &kp, &vp, &f16, &pos, &bt_off, &tables, &nh, &nkv, &hdi, &bs, &heads.scale, &window)?;
    if n_splits > 1 {
        let ns = n_splits as i32;
        let cfg = LaunchConfig { grid_dim: (rows as u32, heads.n_heads as u32, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        launch!(be, &be.k.attention_combine, cfg, &po, &pml, &op, &q8, &nh, &hdi, &ns)?;
    }
    Ok(())
}
