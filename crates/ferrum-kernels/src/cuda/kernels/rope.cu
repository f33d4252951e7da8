// Split the fused [q | k | v] projection, apply the optional per-head QK
// RMSNorm and the rotary embedding, write K and V into the paged cache and
// Q to its own buffer.
//
// grid: (rows, n_heads + n_kv_heads); block: 128 (head_dim <= 256, each
// thread owns elements tid and tid + 128). Heads below n_heads are query
// heads; the others are KV heads, whose block also stores V.

__device__ __forceinline__ void kv_put(void* pool, int f16, size_t at, float v) {
    if (f16) ((u16*)pool)[at] = f2h(v);
    else ((float*)pool)[at] = v;
}

extern "C" __global__ void qk_rope_store(const float* qkv, float* q, const float* q_norm, const float* k_norm,
                                         const float* inv_freq, const u32* pos, const u32* slot, void* kc, void* vc,
                                         int kv_f16, int n_heads, int n_kv, int hd, int neox, float eps) {
    pdl_sync();
    __shared__ float x[256];
    __shared__ float scratch[32];
    int r = blockIdx.x, h = blockIdx.y, t = threadIdx.x;
    int qd = n_heads * hd, kvd = n_kv * hd;
    const float* row = qkv + (size_t)r * (qd + 2 * kvd);
    bool is_q = h < n_heads;
    const float* src = is_q ? row + h * hd : row + qd + (h - n_heads) * hd;
    const float* nw = is_q ? q_norm : k_norm;
    float ss = 0.0f;
    for (int i = t; i < hd; i += blockDim.x) {
        float v = src[i];
        x[i] = v;
        ss += v * v;
    }
    if (nw) {
        ss = block_sum(ss, scratch);
        float inv = rsqrtf(ss / (float)hd + eps);
        for (int i = t; i < hd; i += blockDim.x) x[i] = x[i] * inv * nw[i];
    }
    __syncthreads();
    float p = (float)pos[r];
    int half_d = hd / 2;
    float out[2];
    int n_out = 0;
    for (int i = t; i < hd; i += blockDim.x) {
        // Element i pairs with its rotation partner j; pair index f picks the frequency.
        int f, j;
        float sign;
        if (neox) {
            f = i < half_d ? i : i - half_d;
            j = i < half_d ? i + half_d : i - half_d;
            sign = i < half_d ? -1.0f : 1.0f;
        } else {
            f = i >> 1;
            j = i ^ 1;
            sign = (i & 1) ? 1.0f : -1.0f;
        }
        float s, c;
        sincosf(p * inv_freq[f], &s, &c);
        out[n_out++] = x[i] * c + sign * x[j] * s;
    }
    n_out = 0;
    if (is_q) {
        float* o = q + (size_t)r * qd + h * hd;
        for (int i = t; i < hd; i += blockDim.x) o[i] = out[n_out++];
    } else {
        int kh = h - n_heads;
        size_t base = (size_t)slot[r] * kvd + kh * hd;
        const float* vs = row + qd + kvd + kh * hd;
        for (int i = t; i < hd; i += blockDim.x) {
            kv_put(kc, kv_f16, base + i, out[n_out++]);
            kv_put(vc, kv_f16, base + i, vs[i]);
        }
    }
}
