//! Per-block dot products of quantized weight rows with quantized activation
//! rows, and the canonical arithmetic they all share.
//!
//! # The canonical dot product (batch invariance)
//!
//! For a weight row `w` and an activation row `a` (quantized per
//! [`super::act_quant`]), every weight block `b` (32 or 256 elements, the same
//! size as the activation block) contributes two exact integers
//!
//! ```text
//! sumi_b = sum_t sc_t * sum_{e in sub-block t} v_e * a.qs_e + sum_t bc_t * a.bsums_t
//! summ_b = sum_t mn_t * a.bsums_t                                   (types with a min)
//! ```
//!
//! where `v_e` is the weight's integer value (unsigned, or signed for Q8_0 and
//! the IQ4 types), `sc_t` its scale per 16 elements, `bc_t` a per-16 offset
//! (e.g. -8 for Q4_0, -32 * sc_t for Q6_K) and `mn_t` the per-16 minimum.
//! The f32 result is then, in block order starting from `acc = +0.0`:
//!
//! ```text
//! acc = fma(dw_b * a.d, sumi_b as f32, acc)
//! acc = fma(cw_b * a.d, summ_b as f32, acc)                          (types with a min)
//! ```
//!
//! with `dw_b` the block scale and `cw_b` the min scale (`-dmin` for K-quants,
//! `+m` for Q4_1/Q5_1). The integers are exact whatever order computes them,
//! so the direct AVX2 kernels, the tiled kernel and the scalar fallback give
//! bit-identical results for every output, whatever `m`, tiling or thread.

pub(crate) mod float;
pub(crate) mod kquants;
pub(crate) mod legacy;
pub(crate) mod tile;

use super::act_quant::ActBlock;
use ferrum_core::GgmlType;

/// Where one weight block unpacks to: `vals` (one byte per element) and, per
/// 16 elements, `sc`, `bc`, `mn` (only the first `group / 16` are used).
pub(crate) struct BlockOut<'a> {
    pub vals: &'a mut [u8],
    pub sc: &'a mut [i16; 16],
    pub bc: &'a mut [i16; 16],
    pub mn: &'a mut [i16; 16],
}

/// Unpack one weight block (`bytes` is exactly one block); returns `(dw, cw)`.
pub(crate) type UnpackFn = fn(bytes: &[u8], out: BlockOut<'_>) -> (f32, f32);

/// What the generic kernels need to know about a quantized weight type.
#[derive(Clone, Copy)]
pub(crate) struct QuantKind {
    /// Elements per weight block (= activation block): 32 or 256.
    pub group: usize,
    /// Bytes per weight block.
    pub block_bytes: usize,
    /// Weight values are signed bytes (else unsigned, at most 63).
    pub signed: bool,
    /// The block has a min term (`summ`).
    pub has_min: bool,
    /// Legacy types: `bc` is the same for every element, so the tiled kernel
    /// adds `side_mul * ysum` (the offset term, or for types with a min,
    /// `side_mul` = 1 gives `summ` = `ysum`). 0 for the K-quants.
    pub side_mul: i32,
    pub unpack: UnpackFn,
}

/// The kind of a block-quantized type, `None` for others.
pub(crate) fn quant_kind(ty: GgmlType) -> Option<QuantKind> {
    use GgmlType::*;
    let (signed, has_min, side_mul, unpack): (bool, bool, i32, UnpackFn) = match ty {
        Q4_0 => (false, false, -8, legacy::unpack_q4_0),
        Q4_1 => (false, true, 1, legacy::unpack_q4_1),
        Q5_0 => (false, false, -16, legacy::unpack_q5_0),
        Q5_1 => (false, true, 1, legacy::unpack_q5_1),
        Q8_0 => (true, false, 0, legacy::unpack_q8_0),
        IQ4NL => (true, false, 0, legacy::unpack_iq4_nl),
        Q2K => (false, true, 0, kquants::unpack_q2_k),
        Q3K => (false, false, 0, kquants::unpack_q3_k),
        Q4K => (false, true, 0, kquants::unpack_q4_k),
        Q5K => (false, true, 0, kquants::unpack_q5_k),
        Q6K => (false, false, 0, kquants::unpack_q6_k),
        IQ4XS => (true, false, 0, kquants::unpack_iq4_xs),
        _ => return None,
    };
    Some(QuantKind {
        group: ty.block_size(),
        block_bytes: ty.type_size(),
        signed,
        has_min,
        side_mul,
        unpack,
    })
}

/// Read a little-endian f16 at `off` as f32.
#[inline]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// Weight rows unpacked for the tiled and scalar kernels.
///
/// Per row: `vals` [cols] bytes; `scl` [cols / 2] i16 laid out for AVX2 (for
/// each 32 elements: 8 copies of the first sub-block's scale, then 8 of the
/// second's, matching `maddubs` output lanes); `bc`, `mn` [groups * group / 16].
/// The block scales are stored per row pair, as the tiled kernel reads them:
/// `dw2[(j / 2) * groups + g] = [dw of row j & !1, dw of row (j | 1)]`, the
/// second repeating the first when the panel has an odd last row.
#[derive(Default)]
pub(crate) struct Panel {
    pub rows: usize,
    pub cols: usize,
    pub groups: usize,
    pub vals: Vec<u8>,
    pub scl: Vec<i16>,
    pub dw2: Vec<[f32; 2]>,
    pub cw2: Vec<[f32; 2]>,
    pub bc: Vec<i16>,
    pub mn: Vec<i16>,
}

impl Panel {
    /// Unpack `rows` weight rows of `cols` elements from `data` (the rows'
    /// bytes, back to back).
    pub fn fill(&mut self, kind: &QuantKind, data: &[u8], rows: usize, cols: usize) {
        let g = kind.group;
        let groups = cols / g;
        let s = g / 16;
        self.rows = rows;
        self.cols = cols;
        self.groups = groups;
        self.vals.resize(rows * cols, 0);
        self.scl.resize(rows * cols / 2, 0);
        self.dw2.resize(rows.div_ceil(2) * groups, [0.0; 2]);
        self.cw2.resize(rows.div_ceil(2) * groups, [0.0; 2]);
        self.bc.resize(rows * cols / 16, 0);
        self.mn.resize(rows * cols / 16, 0);
        let (mut sc, mut bc, mut mn) = ([0i16; 16], [0i16; 16], [0i16; 16]);
        let mut blocks = data.chunks_exact(kind.block_bytes);
        for j in 0..rows {
            for gi in 0..groups {
                let Some(blk) = blocks.next() else { return };
                let bi = j * groups + gi;
                let out = BlockOut {
                    vals: &mut self.vals[bi * g..(bi + 1) * g],
                    sc: &mut sc,
                    bc: &mut bc,
                    mn: &mut mn,
                };
                let (dw, cw) = (kind.unpack)(blk, out);
                let pair = &mut self.dw2[(j / 2) * groups + gi];
                pair[j % 2] = dw;
                let cpair = &mut self.cw2[(j / 2) * groups + gi];
                cpair[j % 2] = cw;
                if j % 2 == 0 {
                    pair[1] = dw;
                    cpair[1] = cw;
                }
                self.bc[bi * s..(bi + 1) * s].copy_from_slice(&bc[..s]);
                self.mn[bi * s..(bi + 1) * s].copy_from_slice(&mn[..s]);
                let scl = &mut self.scl[bi * g / 2..(bi + 1) * g / 2];
                for (t, &v) in sc[..s].iter().enumerate() {
                    scl[8 * t..8 * t + 8].fill(v);
                }
            }
        }
    }

    /// `(dw, cw)` of row `j`, group `g`.
    #[inline]
    pub fn scales(&self, j: usize, g: usize) -> (f32, f32) {
        let pair = (j / 2) * self.groups + g;
        (self.dw2[pair][j % 2], self.cw2[pair][j % 2])
    }
}

/// Per activation-row group (4 rows, or 1) and block: the activation scales
/// and `side_mul * ysum` laid out per output lane (lane `2 r + w`), so the
/// tiled kernel loads them instead of gathering.
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
pub(crate) struct Side {
    pub dy: [f32; 8],
    pub ys: [i32; 8],
}

/// Fill `side` ([nb]) for activation rows `rows` (each `[nb]` blocks).
pub(crate) fn fill_side<const G: usize, const S: usize>(
    rows: &[&[ActBlock<G, S>]],
    side_mul: i32,
    side: &mut [Side],
) {
    for (g, sd) in side.iter_mut().enumerate() {
        *sd = Side::default();
        for (r, a) in rows.iter().enumerate() {
            let b = &a[g];
            let ysum = b.bsums.iter().map(|&v| v as i32).sum::<i32>();
            sd.dy[2 * r] = b.d;
            sd.dy[2 * r + 1] = b.d;
            sd.ys[2 * r] = side_mul * ysum;
            sd.ys[2 * r + 1] = side_mul * ysum;
        }
    }
}

/// The canonical dot product of panel row `r` with one activation row, in
/// plain Rust (the reference every other path must match bit for bit).
pub(crate) fn dot_panel_scalar<const G: usize, const S: usize>(
    p: &Panel,
    r: usize,
    act: &[ActBlock<G, S>],
    signed: bool,
    has_min: bool,
) -> f32 {
    let mut acc = 0.0f32;
    for (g, a) in act.iter().enumerate().take(p.groups) {
        let bi = r * p.groups + g;
        let vals = &p.vals[bi * G..(bi + 1) * G];
        let scl = &p.scl[bi * G / 2..(bi + 1) * G / 2];
        let mut sumi = 0i32;
        for t in 0..S {
            let mut s = 0i32;
            for (&w, &q) in vals[16 * t..16 * t + 16]
                .iter()
                .zip(&a.qs[16 * t..16 * t + 16])
            {
                let v = if signed { w as i8 as i32 } else { w as i32 };
                s += v * q as i32;
            }
            sumi += scl[8 * t] as i32 * s;
        }
        let mut summ = 0i32;
        for t in 0..S {
            sumi += p.bc[bi * S + t] as i32 * a.bsums[t] as i32;
            summ += p.mn[bi * S + t] as i32 * a.bsums[t] as i32;
        }
        let (dw, cw) = p.scales(r, g);
        acc = (dw * a.d).mul_add(sumi as f32, acc);
        if has_min {
            acc = (cw * a.d).mul_add(summ as f32, acc);
        }
    }
    acc
}
