// Quantized matrix-vector products for decode and small batches: y = x · Wᵀ
// with W `[rows, cols]` in its GGUF encoding, decoded in registers.
//
// One warp computes one output row for up to GEMV_M activation rows; the
// lanes take the row's 8-element groups in turn (dq8), so adjacent lanes read
// adjacent weight bytes and adjacent activations. Each activation row's sum
// is formed in the same order whatever the batch size.

#define GEMV_WARPS 4
#define GEMV_M 8

__device__ __forceinline__ float dot8(const float* w, const float* x) {
    const float4* x4 = (const float4*)x;
    float4 a = x4[0], b = x4[1];
    return w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y + w[6] * b.z + w[7] * b.w;
}

// grid: (ceil(rows / GEMV_WARPS), ceil(m / M)); block: 32 * GEMV_WARPS. M = 1 (decode of one
// sequence: fewer registers) or GEMV_M.
// x: [m, cols] (row stride cols); y: [m, ldy], written at columns y_off + r.
template <int T, int M>
__device__ void gemv(const u8* W, const float* x, float* y, int rows, int cols, int m, int ldy, int y_off) {
    int lane = threadIdx.x & 31;
    int r = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    int m0 = blockIdx.y * M;
    int mm = min(M, m - m0);
    const u8* row = W + (size_t)r * row_bytes<T>(cols);
    const float* xb = x + (size_t)m0 * cols;
    prefetch_l2(row, row_bytes<T>(cols));
    pdl_sync();
    float acc[M];
#pragma unroll
    for (int t = 0; t < M; t++) acc[t] = 0.0f;
    int ng = cols >> 3;
#pragma unroll 8
    for (int g = lane; g < ng; g += WARP) {
        float w[8];
        dq8<T>(row, g, w);
#pragma unroll
        for (int t = 0; t < M; t++)
            if (t < mm) acc[t] += dot8(w, xb + (size_t)t * cols + 8 * g);
    }
#pragma unroll
    for (int t = 0; t < M; t++) {
        if (t < mm) {
            float s = warp_sum(acc[t]);
            if (lane == 0) y[(size_t)(m0 + t) * ldy + y_off + r] = s;
        }
    }
}

// Mixture-of-experts products over assignments (token, slot): each
// assignment `a` runs expert `ids[a]`, sliced in place from the 3-D tensor.
// `order` (optional) lists the assignments grouped by expert so that blocks
// running at the same time share an expert's weights in L2.
//
// gate_up: act[a, r] = silu(x[a / top_k] · gate_e[r]) * (x[a / top_k] · up_e[r]); act [n_assign, ff].
// grid: (ceil(ff / GEMV_WARPS), n_assign).
template <int T>
__device__ void moe_gate_up(const u8* G, const u8* U, const int* ids, const int* order, const float* x,
                            float* act, int ff, int hidden, int top_k) {
    pdl_sync();
    int lane = threadIdx.x & 31;
    int r = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (r >= ff) return;
    int a = order ? order[blockIdx.y] : blockIdx.y;
    size_t rb = row_bytes<T>(hidden);
    size_t off = (size_t)ids[a] * ff * rb + (size_t)r * rb;
    const u8* g = G + off;
    const u8* u = U + off;
    const float* xr = x + (size_t)(a / top_k) * hidden;
    float sg = 0.0f, su = 0.0f;
    int ng = hidden >> 3;
#pragma unroll 8
    for (int k = lane; k < ng; k += WARP) {
        float w[8];
        dq8<T>(g, k, w);
        sg += dot8(w, xr + 8 * k);
        dq8<T>(u, k, w);
        su += dot8(w, xr + 8 * k);
    }
    sg = warp_sum(sg);
    su = warp_sum(su);
    if (lane == 0) act[(size_t)a * ff + r] = silu(sg) * su;
}

// down: y[a, r] = act[a] · down_e[r]; y [n_assign, hidden]. grid: (ceil(hidden / GEMV_WARPS), n_assign).
template <int T>
__device__ void moe_down(const u8* D, const int* ids, const int* order, const float* act, float* y, int hidden, int ff) {
    pdl_sync();
    int lane = threadIdx.x & 31;
    int r = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (r >= hidden) return;
    int a = order ? order[blockIdx.y] : blockIdx.y;
    size_t rb = row_bytes<T>(ff);
    const u8* row = D + (size_t)ids[a] * hidden * rb + (size_t)r * rb;
    const float* xr = act + (size_t)a * ff;
    float s = 0.0f;
    int ng = ff >> 3;
#pragma unroll 8
    for (int k = lane; k < ng; k += WARP) {
        float w[8];
        dq8<T>(row, k, w);
        s += dot8(w, xr + 8 * k);
    }
    s = warp_sum(s);
    if (lane == 0) y[(size_t)a * hidden + r] = s;
}

// Dequantize W [rows, cols] to f16 rows of `out` (row stride cols, starting
// at row `row_off`), for the tensor-core GEMM of large batches. One thread per
// 8 values (dq8): consecutive threads read consecutive weight bytes and write
// consecutive 16-byte pieces. grid: ceil(rows * cols / 8 / 256); block 256.
template <int T>
__device__ void dequant_f16(const u8* W, u16* out, int rows, int cols, int row_off) {
    pdl_sync();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    int ng = cols >> 3;
    if (i >= (size_t)rows * ng) return;
    int r = (int)(i / ng), g = (int)(i % ng);
    float w[8];
    dq8<T>(W + (size_t)r * row_bytes<T>(cols), g, w);
    uint4 v;
    v.x = (u32)f2h(w[0]) | ((u32)f2h(w[1]) << 16);
    v.y = (u32)f2h(w[2]) | ((u32)f2h(w[3]) << 16);
    v.z = (u32)f2h(w[4]) | ((u32)f2h(w[5]) << 16);
    v.w = (u32)f2h(w[6]) | ((u32)f2h(w[7]) << 16);
    *(uint4*)(out + (size_t)(row_off + r) * cols + 8 * g) = v;
}

// Rows of an embedding table: out[i] = table[ids[i]]. grid: n_ids; block 128.
template <int T>
__device__ void embed(const u8* table, const u32* ids, float* out, int cols) {
    pdl_sync();
    const u8* row = table + (size_t)ids[blockIdx.x] * row_bytes<T>(cols);
    float* o = out + (size_t)blockIdx.x * cols;
    for (int c = threadIdx.x; c < (cols >> 5); c += blockDim.x) {
        float w[32];
        Q<T>::dq32(row, c, w);
#pragma unroll
        for (int k = 0; k < 32; k++) o[32 * c + k] = w[k];
    }
}

#define GEMV_ENTRY(T, S)                                                                                          \
    extern "C" __global__ void __launch_bounds__(32 * GEMV_WARPS) gemv_##S(                                      \
        const u8* W, const float* x, float* y, int rows, int cols, int m, int ldy, int y_off) {                   \
        gemv<T, GEMV_M>(W, x, y, rows, cols, m, ldy, y_off);                                                      \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * GEMV_WARPS) gemv1_##S(                                     \
        const u8* W, const float* x, float* y, int rows, int cols, int m, int ldy, int y_off) {                   \
        gemv<T, 1>(W, x, y, rows, cols, m, ldy, y_off);                                                           \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * GEMV_WARPS) moe_gate_up_##S(                               \
        const u8* G, const u8* U, const int* ids, const int* order, const float* x, float* act, int ff,           \
        int hidden, int top_k) {                                                                                  \
        moe_gate_up<T>(G, U, ids, order, x, act, ff, hidden, top_k);                                              \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * GEMV_WARPS) moe_down_##S(                                  \
        const u8* D, const int* ids, const int* order, const float* act, float* y, int hidden, int ff) {          \
        moe_down<T>(D, ids, order, act, y, hidden, ff);                                                           \
    }                                                                                                             \
    extern "C" __global__ void dequant_f16_##S(const u8* W, u16* out, int rows, int cols, int row_off) {          \
        dequant_f16<T>(W, out, rows, cols, row_off);                                                              \
    }                                                                                                             \
    extern "C" __global__ void embed_##S(const u8* table, const u32* ids, float* out, int cols) {                 \
        embed<T>(table, ids, out, cols);                                                                          \
    }

FOR_EACH_TYPE(GEMV_ENTRY)
