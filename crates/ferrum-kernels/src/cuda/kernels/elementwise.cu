// Norms, residual adds, activation and row gathers. Activations are f32
// `[rows, cols]`, row-major.

// out[r] = x[r] / rms(x[r]) * w. grid: rows; block: 256.
extern "C" __global__ void rms_norm(const float* x, const float* w, float* out, int cols, float eps) {
    __shared__ float scratch[32];
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* o = out + (size_t)blockIdx.x * cols;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss, scratch);
    float inv = rsqrtf(ss / (float)cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) o[i] = xr[i] * inv * w[i];
}

// res[r] += delta[r]; out[r] = rms_norm(res[r]) * w. grid: rows; block: 256.
extern "C" __global__ void add_rms_norm(float* res, const float* delta, const float* w, float* out, int cols, float eps) {
    __shared__ float scratch[32];
    float* xr = res + (size_t)blockIdx.x * cols;
    const float* dr = delta + (size_t)blockIdx.x * cols;
    float* o = out + (size_t)blockIdx.x * cols;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        float v = xr[i] + dr[i];
        xr[i] = v;
        ss += v * v;
    }
    ss = block_sum(ss, scratch);
    float inv = rsqrtf(ss / (float)cols + eps);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) o[i] = xr[i] * inv * w[i];
}

// a[i] += b[i].
extern "C" __global__ void add_inplace(float* a, const float* b, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] += b[i];
}

// out[r, c] += bias[c].
extern "C" __global__ void add_bias(float* out, const float* bias, int rows, int cols) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < rows * cols) out[i] += bias[i % cols];
}

// out[r, i] = silu(gu[r, i]) * gu[r, ff + i]; gu [rows, 2·ff].
extern "C" __global__ void silu_mul(const float* gu, float* out, int rows, int ff) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * ff) return;
    int r = i / ff, c = i % ff;
    const float* g = gu + (size_t)r * 2 * ff;
    out[i] = silu(g[c]) * g[ff + c];
}

// out[i] = x[rows[i]]. grid: n; block: 256.
extern "C" __global__ void gather_rows(const float* x, const u32* rows, float* out, int cols) {
    const float* src = x + (size_t)rows[blockIdx.x] * cols;
    float* o = out + (size_t)blockIdx.x * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) o[i] = src[i];
}

// f32 -> f16 (activations for the tensor-core GEMM).
extern "C" __global__ void to_f16(const float* x, u16* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = f2h(x[i]);
}

// Copy whole KV blocks: for each pair p, dst block pairs[2p+1] = src block pairs[2p].
// `block_words`: 32-bit words per block. grid: (n_pairs, 2 for K and V).
extern "C" __global__ void copy_blocks(u32* k, u32* v, const u32* pairs, int block_words) {
    u32* pool = blockIdx.y == 0 ? k : v;
    const u32* src = pool + (size_t)pairs[2 * blockIdx.x] * block_words;
    u32* dst = pool + (size_t)pairs[2 * blockIdx.x + 1] * block_words;
    for (int i = threadIdx.x; i < block_words; i += blockDim.x) dst[i] = src[i];
}
