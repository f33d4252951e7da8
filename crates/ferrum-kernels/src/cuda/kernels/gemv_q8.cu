// Quantized matrix-vector products with 8-bit activations (decode and small
// batches): y = x · Wᵀ with integer dot products (dp4a) on the GGUF blocks.
//
// The activation rows are first quantized to 8 bits in blocks of 32 (scale =
// max|x| / 127, round to nearest even) by `quantize_q8`, with the sum of every
// 16 quantized values; then each warp computes RPW output rows, its lanes
// taking the row's tasks in turn. A task is one load-sized piece of
// a GGUF block (K8<T>::TASKS per block): `load` decodes its weights to packed
// 8-bit integers and scales, `dot` multiplies them with one activation row.
// Weights are read once for all activation rows of the block.

#define Q8_WARPS 4
#define M4 0x0f0f0f0fu

__device__ __forceinline__ int dp4a(u32 a, int b, int c) {
    int d;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// Σ of 16 products: 4 packed words of weights with 16 activations.
__device__ __forceinline__ int dot16(const u32* w, int4 x) {
    return dp4a(w[3], x.w, dp4a(w[2], x.z, dp4a(w[1], x.y, dp4a(w[0], x.x, 0))));
}

// One quantized activation row: q [cols] int8, d [cols/32] scales, s [cols/16]
// sums of 16 quantized values.
struct XRow {
    const i8* q;
    const float* d;
    const short* s;
    __device__ __forceinline__ int4 q16(int e) const { return *(const int4*)(q + e); }
};

// Bit j of `b` (j < 4) to bit 4 of byte j.
__device__ __forceinline__ u32 spread4(u32 b) {
    return ((b & 1u) << 4) | ((b & 2u) << 11) | ((b & 4u) << 18) | ((b & 8u) << 25);
}

template <int T> struct K8;

// Legacy quants: one task per 32-value block, value = d·q + m; words 0-3
// hold elements 0-15, words 4-7 elements 16-31.
struct Legacy {
    static constexpr int TASKS = 1;
    u32 w[8];
    float d, m;
    int e;
    // The 16 bytes of words q: low nibbles are elements 0-15, high nibbles
    // 16-31; bit j of `qh` becomes bit 4 of element j (five-bit quants).
    __device__ __forceinline__ void nibbles(const u32* q, u32 qh) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            u32 v = q[i];
            w[i] = (v & M4) | spread4(qh >> (4 * i));
            w[4 + i] = ((v >> 4) & M4) | spread4(qh >> (16 + 4 * i));
        }
    }
    __device__ __forceinline__ float dot(const XRow& x) const {
        int s = dot16(w, x.q16(e)) + dot16(w + 4, x.q16(e + 16));
        int sx = x.s[e >> 4] + x.s[(e >> 4) + 1];
        return x.d[e >> 5] * (d * (float)s + m * (float)sx);
    }
};

template <> struct K8<T_Q4_0> : Legacy {
    __device__ __forceinline__ void load(const u8* row, int t) {
        const u8* b = row + 18 * t;
        d = h2f(ld_u16(b));
        m = -8.0f * d;
        u32 q[4];
        ld_words_a2<4>(b + 2, q);
        nibbles(q, 0);
        e = 32 * t;
    }
};

template <> struct K8<T_Q4_1> : Legacy {
    __device__ __forceinline__ void load(const u8* row, int t) {
        const u8* b = row + 20 * t;
        d = h2f(ld_u16(b));
        m = h2f(ld_u16(b + 2));
        u32 q[4];
        ld_words_a2<4>(b + 4, q);
        nibbles(q, 0);
        e = 32 * t;
    }
};

template <> struct K8<T_Q5_0> : Legacy {
    __device__ __forceinline__ void load(const u8* row, int t) {
        const u8* b = row + 22 * t;
        d = h2f(ld_u16(b));
        m = -16.0f * d;
        u32 q[6];  // qh, then the 16 bytes of nibbles
        ld_words_a2<6>(b + 2, q);
        nibbles(q + 1, q[0]);
        e = 32 * t;
    }
};

template <> struct K8<T_Q5_1> : Legacy {
    __device__ __forceinline__ void load(const u8* row, int t) {
        const u8* b = row + 24 * t;
        d = h2f(ld_u16(b));
        m = h2f(ld_u16(b + 2));
        u32 q[6];  // qh, then the 16 bytes of nibbles
        ld_words_a2<6>(b + 4, q);
        nibbles(q + 1, q[0]);
        e = 32 * t;
    }
};

template <> struct K8<T_Q8_0> : Legacy {
    __device__ __forceinline__ void load(const u8* row, int t) {
        const u8* b = row + 34 * t;
        d = h2f(ld_u16(b));
        m = 0.0f;
        ld_words_a2<8>(b + 2, w);
        e = 32 * t;
    }
};

// Six-bit scales and mins of sub-blocks 2j and 2j + 1 (j = 0..3) of a
// Q4_K/Q5_K block from its 12 scale bytes in words a, b, c: the low two
// bytes of *sc / *mn (sub-block 2j in the low byte). Bytes 0-3 of a / b hold
// the scales / mins of sub-blocks 0-3 in their low six bits; sub-blocks 4-7
// take their low four bits from the nibbles of c and their top two from the
// top bits of a / b. Branch-free: every lane of a warp takes the same path.
__device__ __forceinline__ void scale_min_pair(u32 a, u32 b, u32 c, int j, u32* sc, u32* mn) {
    u32 s = j < 2 ? (a & 0x3f3f3f3fu) : ((c & 0x0f0f0f0fu) | ((a >> 2) & 0x30303030u));
    u32 m = j < 2 ? (b & 0x3f3f3f3fu) : (((c >> 4) & 0x0f0f0f0fu) | ((b >> 2) & 0x30303030u));
    int sh = 16 * (j & 1);
    *sc = (s >> sh) & 0xffffu;
    *mn = (m >> sh) & 0xffffu;
}

// Six-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block (the
// prefill kernels' form).
__device__ __forceinline__ void scale_min6(u32 a, u32 b, u32 c, int j, float* sc, float* mn) {
    u32 s, m;
    scale_min_pair(a, b, c, j >> 1, &s, &m);
    int sh = 8 * (j & 1);
    *sc = (float)((s >> sh) & 0xffu);
    *mn = (float)((m >> sh) & 0xffu);
}

// A Q4_K/Q5_K task: 16 elements of sub-block 2j (`lo`) and the same 16 of
// sub-block 2j + 1 (`hi`) as packed 8-bit values, with the block's d and
// dmin and the two sub-blocks' six-bit scales and mins (`sc`, `mn`: low
// byte 2j, next byte 2j + 1). The products with the scales stay integer
// until the last step.
struct KPair {
    static constexpr int TASKS = 8;
    u32 lo[4], hi[4];
    u32 sc, mn;
    float d, dmin;
    int e;
    // Block header of block `blk` at `b` (d, dmin, 12 scale bytes: one
    // 16-byte load); task geometry.
    __device__ __forceinline__ void header(const u8* b, int blk, int j, int h) {
        uint4 hd = *(const uint4*)b;
        d = h2f((u16)(hd.x & 0xffffu));
        dmin = h2f((u16)(hd.x >> 16));
        scale_min_pair(hd.y, hd.z, hd.w, j, &sc, &mn);
        e = 256 * blk + 64 * j + 16 * h;
    }
    __device__ __forceinline__ float dot(const XRow& x) const {
        int s0 = dot16(lo, x.q16(e)), s1 = dot16(hi, x.q16(e + 32));
        int p0 = (int)(sc & 0xffu) * s0, p1 = (int)(sc >> 8) * s1;
        int q0 = (int)(mn & 0xffu) * x.s[e >> 4], q1 = (int)(mn >> 8) * x.s[(e + 32) >> 4];
        return x.d[e >> 5] * (d * (float)p0 - dmin * (float)q0) + x.d[(e >> 5) + 1] * (d * (float)p1 - dmin * (float)q1);
    }
};

// Q4_K: 8 tasks per 256-value block. Task k = 2j + h takes 16 bytes of the
// 32-byte group j: low nibbles are elements 16h.. of sub-block 2j, high
// nibbles the same elements of sub-block 2j + 1.
template <> struct K8<T_Q4_K> : KPair {
    __device__ __forceinline__ void load(const u8* row, int t) {
        int blk = t >> 3, j = (t >> 1) & 3, h = t & 1;
        const u8* b = row + 144 * blk;
        uint4 q = *(const uint4*)(b + 16 + 32 * j + 16 * h);
        u32 qq[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            lo[i] = qq[i] & M4;
            hi[i] = (qq[i] >> 4) & M4;
        }
        header(b, blk, j, h);
    }
};

// Q5_K: as Q4_K, with bit 2j (low) / 2j + 1 (high) of qh[l] as bit 4.
template <> struct K8<T_Q5_K> : KPair {
    __device__ __forceinline__ void load(const u8* row, int t) {
        int blk = t >> 3, j = (t >> 1) & 3, h = t & 1;
        const u8* b = row + 176 * blk;
        uint4 q = *(const uint4*)(b + 48 + 32 * j + 16 * h);
        uint4 qh = *(const uint4*)(b + 16 + 16 * h);
        u32 qq[4] = {q.x, q.y, q.z, q.w}, hh[4] = {qh.x, qh.y, qh.z, qh.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            lo[i] = (qq[i] & M4) | (((hh[i] >> (2 * j)) & 0x01010101u) << 4);
            hi[i] = ((qq[i] >> 4) & M4) | (((hh[i] >> (2 * j + 1)) & 0x01010101u) << 4);
        }
        header(b, blk, j, h);
    }
};

// Q6_K: 4 tasks per 256-value block. Task k = 2·half + g takes elements
// 16g.. of the four 32-value quarters of one 128-value half: quarters 0/2
// are the low/high nibbles of ql[64·half + 16g ..], quarters 1/3 those of
// ql[64·half + 32 + 16g ..]; qh[32·half + 16g ..] holds two high bits per
// quarter. Values are q - 32 with one int8 scale per 16 elements.
template <> struct K8<T_Q6_K> {
    static constexpr int TASKS = 4;
    u32 w[4][4];
    float dl[4];
    int e;
    __device__ __forceinline__ void load(const u8* row, int t) {
        int blk = t >> 2, half = (t >> 1) & 1, g = t & 1;
        const u8* b = row + 210 * blk;
        const u8* qa = b + 64 * half + 16 * g;
        const u8* qh = b + 128 + 32 * half + 16 * g;
        float d = h2f(ld_u16(b + 208));
        u32 av[4], cv[4], hv[4];
        ld_words_a2<4>(qa, av);
        ld_words_a2<4>(qa + 32, cv);
        ld_words_a2<4>(qh, hv);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            u32 a = av[i], c = cv[i], h = hv[i];
            w[0][i] = (a & M4) | ((h & 0x03030303u) << 4);
            w[1][i] = (c & M4) | (((h >> 2) & 0x03030303u) << 4);
            w[2][i] = ((a >> 4) & M4) | (((h >> 4) & 0x03030303u) << 4);
            w[3][i] = ((c >> 4) & M4) | (((h >> 6) & 0x03030303u) << 4);
        }
        const i8* sc = (const i8*)(b + 192 + 8 * half + g);
#pragma unroll
        for (int k = 0; k < 4; k++) dl[k] = d * (float)sc[2 * k];
        e = 256 * blk + 128 * half + 16 * g;
    }
    __device__ __forceinline__ float dot(const XRow& x) const {
        float r = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            int ek = e + 32 * k;
            int s = dot16(w[k], x.q16(ek)) - 32 * x.s[ek >> 4];
            r += dl[k] * x.d[ek >> 5] * (float)s;
        }
        return r;
    }
};

// Row stride in bytes of quantized activations of `cols` values (a multiple
// of 32): q [cols] int8 | d [cols/32] f32 | s [cols/16] i16, padded to 16 bytes.
__device__ __forceinline__ size_t q8_row(int cols) { return ((size_t)cols * 5 / 4 + 15) & ~(size_t)15; }

__device__ __forceinline__ XRow xrow(const u8* xq, int cols, int t) {
    const u8* b = xq + (size_t)t * q8_row(cols);
    XRow x;
    x.q = (const i8*)b;
    x.d = (const float*)(b + cols);
    x.s = (const short*)(b + cols + cols / 8);
    return x;
}

// Quantize value y (element c of row r) of a warp's 32-value block to 8 bits
// into `q8` (rows of q8_row(cols) bytes: q | d | s, as xrow reads them).
// Every lane of the warp calls it (quantize_q8, and the norms and SiLU·mul
// that write their consumer's 8-bit rows).
__device__ __forceinline__ void q8_store(u8* q8, int r, int c, int cols, float y) {
    int lane = threadIdx.x & 31;
    u8* row = q8 + (size_t)r * q8_row(cols);
    float amax = warp_max(fabsf(y));
    float dd = amax / 127.0f;
    int qi = dd > 0.0f ? (int)rintf(y / dd) : 0;
    int sum = qi;
#pragma unroll
    for (int off = 8; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    ((i8*)row)[c] = (i8)qi;
    if (lane == 0) ((float*)(row + cols))[c >> 5] = dd;
    if ((lane & 15) == 0) ((short*)(row + cols + cols / 8))[c >> 4] = (short)sum;
}

// Quantize x [rows, cols] to 8 bits per 32 values (scale max|x| / 127, round
// to nearest even), with the sum of every 16 quantized values, into `out`
// (rows of q8_row(cols) bytes). One warp per 32-value block; grid:
// ceil(rows · cols / 32 / 4); block 128.
extern "C" __global__ void quantize_q8(const float* x, u8* out, int rows, int cols) {
    pdl_sync();
    int nb = cols >> 5;
    int b = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (b >= rows * nb) return;
    int t = b / nb, c = 32 * (b - t * nb) + (threadIdx.x & 31);
    q8_store(out, t, c, cols, x[(size_t)t * cols + c]);
}

// y[m0 + t, y_off + r] = xq[m0 + t] · W[r] (+ bias[y_off + r]) for M activation rows
// (quantized by quantize_q8) and RPW rows per warp; Q8_WARPS·RPW rows per block.
// bx: the block's index along the rows (blockIdx.x less the blocks of
// earlier parts, see gemv_q8_parts).
template <int T, int M, int RPW>
__device__ void gemv_q8(const u8* W, const u8* xq, float* y, const float* bias, int rows, int cols, int m, int ldy,
                        int y_off, int bx) {
    int m0 = blockIdx.y * M;
    int mm = min(M, m - m0);
    int lane = threadIdx.x & 31;
    int r0 = (bx * Q8_WARPS + (threadIdx.x >> 5)) * RPW;
    if (r0 >= rows) return;
    size_t rb = row_bytes<T>(cols);
    int ntask = cols / Q<T>::ELEMS * K8<T>::TASKS;
    prefetch_l2(W + (size_t)r0 * rb, (size_t)(min(r0 + RPW, rows) - r0) * rb);
    pdl_sync();
    float acc[RPW][M];
#pragma unroll
    for (int i = 0; i < RPW; i++)
#pragma unroll
        for (int t = 0; t < M; t++) acc[i][t] = 0.0f;
#pragma unroll(M == 1 ? 2 : 1)
    for (int k = lane; k < ntask; k += WARP) {
        K8<T> w[RPW];
#pragma unroll
        for (int i = 0; i < RPW; i++) w[i].load(W + (size_t)min(r0 + i, rows - 1) * rb, k);
#pragma unroll
        for (int t = 0; t < M; t++) {
            if (t < mm) {
                XRow xr = xrow(xq, cols, m0 + t);
#pragma unroll
                for (int i = 0; i < RPW; i++) acc[i][t] += w[i].dot(xr);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < RPW; i++) {
        int r = r0 + i;
#pragma unroll
        for (int t = 0; t < M; t++) {
            float v = warp_sum(acc[i][t]);
            if (lane == 0 && t < mm && r < rows) y[(size_t)(m0 + t) * ldy + y_off + r] = v + (bias ? bias[y_off + r] : 0.0f);
        }
    }
}

// Experts, as moe_gate_up / moe_down in gemv.cu, with 8-bit activations.
// gate_up: act[a, r] = silu(x_a · gate_e[r]) * (x_a · up_e[r]), xq: the tokens'
// quantized rows. grid: (ceil(ff / (Q8_WARPS·RPW)), n_assign).
template <int T, int RPW>
__device__ void moe_gate_up_q8(const u8* G, const u8* U, const int* ids, const int* order, const u8* xq, float* act,
                               int ff, int hidden, int top_k) {
    pdl_sync();
    int a = order ? order[blockIdx.y] : blockIdx.y;
    int lane = threadIdx.x & 31;
    int r0 = (blockIdx.x * Q8_WARPS + (threadIdx.x >> 5)) * RPW;
    if (r0 >= ff) return;
    size_t rb = row_bytes<T>(hidden);
    size_t base = (size_t)ids[a] * ff * rb;
    int ntask = hidden / Q<T>::ELEMS * K8<T>::TASKS;
    XRow xr = xrow(xq, hidden, a / top_k);
    float sg[RPW], su[RPW];
#pragma unroll
    for (int i = 0; i < RPW; i++) sg[i] = su[i] = 0.0f;
#pragma unroll(RPW == 1 ? 2 : 1)
    for (int k = lane; k < ntask; k += WARP) {
        K8<T> g[RPW], u[RPW];
#pragma unroll
        for (int i = 0; i < RPW; i++) {
            size_t off = base + (size_t)min(r0 + i, ff - 1) * rb;
            g[i].load(G + off, k);
            u[i].load(U + off, k);
        }
#pragma unroll
        for (int i = 0; i < RPW; i++) {
            sg[i] += g[i].dot(xr);
            su[i] += u[i].dot(xr);
        }
    }
#pragma unroll
    for (int i = 0; i < RPW; i++) {
        float gs = warp_sum(sg[i]), us = warp_sum(su[i]);
        if (lane == 0 && r0 + i < ff) act[(size_t)a * ff + r0 + i] = silu(gs) * us;
    }
}

// down, with each token's weighted sum over its experts added to the
// residual: res[t, r] += Σ_k wts[t·top_k + k] · (actq[t·top_k + k] · down_e[r]),
// e = ids[t·top_k + k]. The lanes share the (expert, task) pairs of a row, so
// a short row (small ff) still keeps every lane busy; each residual value is
// written by one lane (deterministic). grid: (ceil(hidden / (Q8_WARPS·RPW)), n_tokens).
template <int T, int RPW>
__device__ void moe_down_q8(const u8* D, const int* ids, const float* wts, const u8* actq, float* res, int hidden,
                            int ff, int top_k) {
    pdl_sync();
    int tok = blockIdx.y;
    int lane = threadIdx.x & 31;
    int r0 = (blockIdx.x * Q8_WARPS + (threadIdx.x >> 5)) * RPW;
    if (r0 >= hidden) return;
    size_t rb = row_bytes<T>(ff);
    int ntask = ff / Q<T>::ELEMS * K8<T>::TASKS;
    float s[RPW];
#pragma unroll
    for (int i = 0; i < RPW; i++) s[i] = 0.0f;
#pragma unroll 4
    for (int j = lane; j < top_k * ntask; j += WARP) {
        int k = j / ntask, task = j - k * ntask;
        int a = tok * top_k + k;
        const u8* base = D + (size_t)ids[a] * hidden * rb;
        K8<T> w[RPW];
#pragma unroll
        for (int i = 0; i < RPW; i++) w[i].load(base + (size_t)min(r0 + i, hidden - 1) * rb, task);
        XRow xr = xrow(actq, ff, a);
        float wk = wts[a];
#pragma unroll
        for (int i = 0; i < RPW; i++) s[i] += wk * w[i].dot(xr);
    }
#pragma unroll
    for (int i = 0; i < RPW; i++) {
        float v = warp_sum(s[i]);
        if (lane == 0 && r0 + i < hidden) res[(size_t)tok * hidden + r0 + i] += v;
    }
}

// Rows per warp: 2 for one activation row, 1 for GEMV_M rows (8x the work
// per weight load); 2 for the experts' gate + up (so that a token's 8
// experts fit one wave of blocks), 1 for their down (whose task loop is
// unrolled instead, keeping more loads in flight per lane).
#define Q8_RPW1 2
#define Q8_RPW_GATE_UP 2
#define Q8_RPW_DOWN 1
#define Q8_ENTRY(T, S)                                                                                            \
    extern "C" __global__ void __launch_bounds__(32 * Q8_WARPS) gemv1_q8_##S(                                    \
        const u8* W, const u8* x, float* y, const float* bias, int rows, int cols, int m, int ldy) {              \
        gemv_q8<T, 1, Q8_RPW1>(W, x, y, bias, rows, cols, m, ldy, 0, blockIdx.x);                                 \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * Q8_WARPS) gemv_q8_##S(                                     \
        const u8* W, const u8* x, float* y, const float* bias, int rows, int cols, int m, int ldy) {              \
        gemv_q8<T, GEMV_M, 1>(W, x, y, bias, rows, cols, m, ldy, 0, blockIdx.x);                                  \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * Q8_WARPS) moe_gate_up_q8_##S(                              \
        const u8* G, const u8* U, const int* ids, const int* order, const u8* x, float* act, int ff,              \
        int hidden, int top_k) {                                                                                  \
        moe_gate_up_q8<T, Q8_RPW_GATE_UP>(G, U, ids, order, x, act, ff, hidden, top_k);                                  \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * Q8_WARPS) moe_down_q8_##S(                                 \
        const u8* D, const int* ids, const float* wts, const u8* act, float* res, int hidden, int ff, int top_k) { \
        moe_down_q8<T, Q8_RPW_DOWN>(D, ids, wts, act, res, hidden, ff, top_k);                                        \
    }

#define FOR_EACH_Q8_TYPE(MACRO) \
    MACRO(T_Q4_0, q4_0)         \
    MACRO(T_Q4_1, q4_1)         \
    MACRO(T_Q5_0, q5_0)         \
    MACRO(T_Q5_1, q5_1)         \
    MACRO(T_Q8_0, q8_0)         \
    MACRO(T_Q4_K, q4_k)         \
    MACRO(T_Q5_K, q5_k)         \
    MACRO(T_Q6_K, q6_k)

FOR_EACH_Q8_TYPE(Q8_ENTRY)

// Up to Q8_PARTS weight matrices of possibly different types (a fused
// projection such as Q4_K q/k with Q6_K v) with one input, in one launch
// (one kernel for every type: it needs the registers of the largest, so a
// single matrix runs the kernels of its own type above):
// part p owns blocks [start[p], start[p + 1]) along x and writes its rows
// at columns y_off[p] of y.
#define Q8_PARTS 3
struct Q8Parts {
    const u8* w[Q8_PARTS];
    int ty[Q8_PARTS];
    int rows[Q8_PARTS];
    int y_off[Q8_PARTS];
    int start[Q8_PARTS + 1];
};

template <int M, int RPW>
__device__ __forceinline__ void gemv_q8_parts(const Q8Parts& P, const u8* x, float* y, const float* bias, int cols,
                                              int m, int ldy) {
    int p = 0;
#pragma unroll
    for (int i = 1; i < Q8_PARTS; i++) p += (int)blockIdx.x >= P.start[i];
    int bx = blockIdx.x - P.start[p];
    const u8* W = P.w[p];
    int rows = P.rows[p], yo = P.y_off[p];
    switch (P.ty[p]) {
#define Q8_CASE(T, S) \
    case T:           \
        gemv_q8<T, M, RPW>(W, x, y, bias, rows, cols, m, ldy, yo, bx); \
        break;
        FOR_EACH_Q8_TYPE(Q8_CASE)
#undef Q8_CASE
    }
}

// One activation row (decode of one sequence): Q8_RPW1 rows per warp.
// grid: (start[Q8_PARTS], m); block 32·Q8_WARPS. Registers capped for six
// blocks an SM, so that a fused q/k/v projection (640 blocks for 30B-A3B)
// is one wave.
extern "C" __global__ void __launch_bounds__(32 * Q8_WARPS, 6)
    linear1_q8(Q8Parts P, const u8* x, float* y, const float* bias, int cols, int m, int ldy) {
    gemv_q8_parts<1, Q8_RPW1>(P, x, y, bias, cols, m, ldy);
}

// Up to GEMV_M activation rows per block, one row per warp.
// grid: (start[Q8_PARTS], ceil(m / GEMV_M)); block 32·Q8_WARPS.
extern "C" __global__ void __launch_bounds__(32 * Q8_WARPS)
    linear_q8(Q8Parts P, const u8* x, float* y, const float* bias, int cols, int m, int ldy) {
    gemv_q8_parts<GEMV_M, 1>(P, x, y, bias, cols, m, ldy);
}
