// Norms, residual adds, activation and row gathers. Activations are f32
// `[rows, cols]`, row-major.

// Values per thread of the norms' register cache: rows of up to
// NORM_VALS · blockDim values are read once, with every load (row, delta, weight)
// issued before any store (one block per row is latency-bound otherwise);
// longer rows loop.
#define NORM_VALS 8

// One row `x` of `cols` values (with `delta` added and stored back into `x`
// when ADD): o = x / rms(x) * w; optionally also quantized to 8 bits per 32
// values into `q8` (the layout of quantize_q8 in gemv_q8.cu; null: not
// wanted; then cols % 32 == 0). Every thread of the block calls it.
template <bool ADD>
__device__ void norm_row(float* __restrict__ x, const float* __restrict__ delta, const float* __restrict__ w,
                         float* __restrict__ o, u8* __restrict__ q8, int cols, float eps) {
    __shared__ float scratch[32];
    int t = threadIdx.x, nt = blockDim.x, lane = t & 31;
    float v[NORM_VALS], wv[NORM_VALS];
    float ss = 0.0f;
    bool cached = cols <= NORM_VALS * nt;
    if (cached) {
#pragma unroll
        for (int k = 0; k < NORM_VALS; k++) {
            int i = t + k * nt;
            bool in = i < cols;
            v[k] = in ? x[i] + (ADD ? delta[i] : 0.0f) : 0.0f;
            wv[k] = in ? w[i] : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < NORM_VALS; k++) {
            int i = t + k * nt;
            if (ADD && i < cols) x[i] = v[k];
            ss += v[k] * v[k];
        }
    } else {
        for (int i = t; i < cols; i += nt) {
            float xi = x[i] + (ADD ? delta[i] : 0.0f);
            if (ADD) x[i] = xi;
            ss += xi * xi;
        }
    }
    ss = block_sum(ss, scratch);
    float inv = rsqrtf(ss / (float)cols + eps);
    // Value i of a warp's 32-value block (all lanes of the warp take part).
    auto emit = [&](int i, float xi, float wi) {
        float y = xi * inv * wi;
        if (i < cols) o[i] = y;
        if (q8) q8_store(q8, 0, i, cols, y);
    };
    if (cached) {
#pragma unroll
        for (int k = 0; k < NORM_VALS; k++) {
            int i = t + k * nt;
            if (i - lane < cols) emit(i, v[k], wv[k]);
        }
    } else {
        for (int base = t - lane; base < cols; base += nt) {
            int i = base + lane;
            emit(i, i < cols ? x[i] : 0.0f, i < cols ? w[i] : 0.0f);
        }
    }
}

// out[r] = x[r] / rms(x[r]) * w (and its 8-bit form in q8, if not null). grid: rows; block: 1024.
extern "C" __global__ void rms_norm(const float* x, const float* w, float* out, u8* q8, int cols, float eps) {
    pdl_sync();
    size_t r = blockIdx.x;
    norm_row<false>((float*)x + r * cols, nullptr, w, out + r * cols, q8 ? q8 + r * q8_row(cols) : nullptr, cols, eps);
}

// res[r] += delta[r]; out[r] = rms_norm(res[r]) * w (and q8 as rms_norm). grid: rows; block: 1024.
extern "C" __global__ void add_rms_norm(float* res, const float* delta, const float* w, float* out, u8* q8, int cols,
                                        float eps) {
    pdl_sync();
    size_t r = blockIdx.x;
    norm_row<true>(res + r * cols, delta + r * cols, w, out + r * cols, q8 ? q8 + r * q8_row(cols) : nullptr, cols, eps);
}

// a[i] += b[i].
extern "C" __global__ void add_inplace(float* a, const float* b, int n) {
    pdl_sync();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] += b[i];
}

// out[r, c] += bias[c].
extern "C" __global__ void add_bias(float* out, const float* bias, int rows, int cols) {
    pdl_sync();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < rows * cols) out[i] += bias[i % cols];
}

// out[r, i] = silu(gu[r, i]) * gu[r, ff + i]; gu [rows, 2·ff]; also the 8-bit
// form in q8 when not null (then ff % 32 == 0: a warp's values share a block);
// out may be null when only the 8-bit form is wanted.
extern "C" __global__ void silu_mul(const float* gu, float* out, u8* q8, int rows, int ff) {
    pdl_sync();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i - (threadIdx.x & 31) >= rows * ff) return;
    int r = i / ff, c = i % ff;
    bool in = i < rows * ff;
    const float* g = gu + (size_t)r * 2 * ff;
    float y = in ? silu(g[c]) * g[ff + c] : 0.0f;
    if (in && out) out[i] = y;
    if (q8) q8_store(q8, r, c, ff, y);
}

// out[i] = x[rows[i]]. grid: n; block: 256.
extern "C" __global__ void gather_rows(const float* x, const u32* rows, float* out, int cols) {
    pdl_sync();
    const float* src = x + (size_t)rows[blockIdx.x] * cols;
    float* o = out + (size_t)blockIdx.x * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) o[i] = src[i];
}

// f32 -> f16 (activations for the tensor-core GEMM).
extern "C" __global__ void to_f16(const float* x, u16* out, int n) {
    pdl_sync();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = f2h(x[i]);
}

// Copy whole KV blocks: for each pair p, dst block pairs[2p+1] = src block pairs[2p].
// `block_words`: 32-bit words per block. grid: (n_pairs, 2 for K and V).
extern "C" __global__ void copy_blocks(u32* k, u32* v, const u32* pairs, int block_words) {
    pdl_sync();
    u32* pool = blockIdx.y == 0 ? k : v;
    const u32* src = pool + (size_t)pairs[2 * blockIdx.x] * block_words;
    u32* dst = pool + (size_t)pairs[2 * blockIdx.x + 1] * block_words;
    for (int i = threadIdx.x; i < block_words; i += blockDim.x) dst[i] = src[i];
}

// The greedy choice and log-sum-exp of each row of logits x [rows, cols], in
// two steps: `argmax_part` reduces `parts` slices of each row (so that a long
// row is read by many blocks at once), `argmax_merge` merges their results.
// A partial result is (best value, its index, max, Σ exp(v - max)); NaN and
// -inf are skipped, ties go to the lower index.
struct ArgLse {
    float bv, m, s;
    int bi;
};

__device__ __forceinline__ ArgLse arg_lse_merge(ArgLse a, ArgLse b) {
    if (b.bv > a.bv || (b.bv == a.bv && b.bi < a.bi)) {
        a.bv = b.bv;
        a.bi = b.bi;
    }
    float nm = fmaxf(a.m, b.m);
    if (nm != NEG_INF) a.s = (a.m == NEG_INF ? 0.0f : a.s * expf(a.m - nm)) + (b.m == NEG_INF ? 0.0f : b.s * expf(b.m - nm));
    a.m = nm;
    return a;
}

__device__ __forceinline__ ArgLse arg_lse_warp(ArgLse a) {
    for (int o = 16; o > 0; o >>= 1) {
        ArgLse b;
        b.bv = __shfl_xor_sync(0xffffffffu, a.bv, o);
        b.bi = __shfl_xor_sync(0xffffffffu, a.bi, o);
        b.m = __shfl_xor_sync(0xffffffffu, a.m, o);
        b.s = __shfl_xor_sync(0xffffffffu, a.s, o);
        a = arg_lse_merge(a, b);
    }
    return a;
}

__device__ __forceinline__ ArgLse arg_lse_empty() {
    ArgLse a;
    a.bv = NEG_INF;
    a.m = NEG_INF;
    a.s = 0.0f;
    a.bi = 0x7fffffff;
    return a;
}

// tmp[(r·parts + p)·4 ..] = the partial result of slice p of row r.
// grid: (rows, parts); block: 256.
extern "C" __global__ void argmax_part(const float* x, int cols, int parts, float* tmp) {
    pdl_sync();
    __shared__ ArgLse sh[32];
    const float* row = x + (size_t)blockIdx.x * cols;
    int chunk = (cols + parts - 1) / parts;
    int lo = blockIdx.y * chunk, hi = min(cols, lo + chunk);
    ArgLse a = arg_lse_empty();
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        float v = row[i];
        if (v != v || v == NEG_INF) continue;
        if (v > a.bv) {
            a.bv = v;
            a.bi = i;
        }
        if (v > a.m) {
            a.s = a.s * expf(a.m - v) + 1.0f;
            a.m = v;
        } else {
            a.s += expf(v - a.m);
        }
    }
    a = arg_lse_warp(a);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sh[warp] = a;
    __syncthreads();
    if (warp != 0) return;
    a = lane < (int)(blockDim.x >> 5) ? sh[lane] : arg_lse_empty();
    a = arg_lse_warp(a);
    if (lane == 0) {
        float* t = tmp + ((size_t)blockIdx.x * parts + blockIdx.y) * 4;
        t[0] = a.bv;
        t[1] = __int_as_float(a.bi);
        t[2] = a.m;
        t[3] = a.s;
    }
}

// out[3r] = index (int bits; -1 if none), out[3r + 1] = its value,
// out[3r + 2] = log-sum-exp, from the `parts` (at most 32) partial results of
// row r. grid: rows; block: 32.
extern "C" __global__ void argmax_merge(const float* tmp, int parts, float* out) {
    pdl_sync();
    int lane = threadIdx.x;
    ArgLse a = arg_lse_empty();
    if (lane < parts) {
        const float* t = tmp + ((size_t)blockIdx.x * parts + lane) * 4;
        a.bv = t[0];
        a.bi = __float_as_int(t[1]);
        a.m = t[2];
        a.s = t[3];
    }
    a = arg_lse_warp(a);
    if (lane == 0) {
        float* o = out + 3 * (size_t)blockIdx.x;
        o[0] = __int_as_float(a.bi == 0x7fffffff ? -1 : a.bi);
        o[1] = a.bv;
        o[2] = a.m == NEG_INF ? NEG_INF : a.m + logf(a.s);
    }
}
