// Causal paged attention over a varlen batch (prefill chunks and decode rows
// in one launch), with GQA and an optional sliding window.
//
// A block takes one tile of up to `qt` consecutive rows of one sequence and
// one KV head; its work items are (row, query head of the KV head's group).
// Keys and values stream through shared memory KT at a time (read once for
// all items of the tile); every item keeps an online softmax (running max,
// sum, and the weighted value sum, its head dims spread over the lanes).
//
// tiles: [n_tiles, 3] = (sequence, first row, rows); grid: (n_tiles, n_kv);
// block: 128 (4 warps); dynamic shared memory: see attn_smem_bytes on the host.

#define ATT_WARPS 4
#define KT 32

__device__ __forceinline__ float kv_get(const void* pool, int f16, size_t at) {
    return f16 ? h2f(((const u16*)pool)[at]) : ((const float*)pool)[at];
}

template <int DPL, int MAXI>
__device__ void attention(const float* q, float* out, const void* kc, const void* vc, int kv_f16, const u32* tiles,
                          const u32* pos, const u32* bt_off, const u32* tables, int n_heads, int n_kv, int hd,
                          int block_size, float scale, int window) {
    extern __shared__ float smem[];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int seq = tiles[3 * blockIdx.x], row0 = tiles[3 * blockIdx.x + 1], nrows = tiles[3 * blockIdx.x + 2];
    int kvh = blockIdx.y;
    int group = n_heads / n_kv;
    int n_items = nrows * group;
    int kvd = n_kv * hd, ks = hd + 1;
    float* Qs = smem;                      // [n_items, hd]
    float* Ks = Qs + n_items * hd;         // [KT, hd + 1]
    float* Vs = Ks + KT * ks;              // [KT, hd]
    const u32* bt = tables + bt_off[seq];

    for (int i = threadIdx.x; i < n_items * hd; i += blockDim.x) {
        int item = i / hd, d = i % hd;
        int r = row0 + item / group, h = kvh * group + item % group;
        Qs[i] = q[(size_t)r * n_heads * hd + h * hd + d];
    }
    int last = pos[row0 + nrows - 1];
    int first = pos[row0];
    if (window > 0) first = max(0, first - window + 1);
    else first = 0;

    float m[MAXI], l[MAXI], o[MAXI][DPL];
#pragma unroll
    for (int i = 0; i < MAXI; i++) {
        m[i] = NEG_INF;
        l[i] = 0.0f;
#pragma unroll
        for (int k = 0; k < DPL; k++) o[i][k] = 0.0f;
    }

    for (int j0 = first; j0 <= last; j0 += KT) {
        __syncthreads();
        for (int i = threadIdx.x; i < KT * hd; i += blockDim.x) {
            int jj = i / hd, d = i % hd, j = j0 + jj;
            float kv = 0.0f, vv = 0.0f;
            if (j <= last) {
                size_t at = ((size_t)bt[j / block_size] * block_size + j % block_size) * kvd + kvh * hd + d;
                kv = kv_get(kc, kv_f16, at);
                vv = kv_get(vc, kv_f16, at);
            }
            Ks[jj * ks + d] = kv;
            Vs[jj * hd + d] = vv;
        }
        __syncthreads();
#pragma unroll
        for (int ii = 0; ii < MAXI; ii++) {
            int item = warp + ATT_WARPS * ii;
            if (item >= n_items) break;
            int p = pos[row0 + item / group];
            int lo = window > 0 ? max(0, p - window + 1) : 0;
            int j = j0 + lane;
            float s = NEG_INF;
            if (j <= p && j >= lo) {
                const float* qv = Qs + item * hd;
                const float* kr = Ks + lane * ks;
                float acc = 0.0f;
                for (int d = 0; d < hd; d++) acc += qv[d] * kr[d];
                s = acc * scale;
            }
            float mt = warp_max(s);
            if (mt == NEG_INF) continue;
            float mn = fmaxf(m[ii], mt);
            float corr = expf(m[ii] - mn);
            float pj = s == NEG_INF ? 0.0f : expf(s - mn);
            l[ii] = l[ii] * corr + warp_sum(pj);
            m[ii] = mn;
#pragma unroll
            for (int k = 0; k < DPL; k++) o[ii][k] *= corr;
            for (int jj = 0; jj < KT; jj++) {
                float w = __shfl_sync(0xffffffffu, pj, jj);
#pragma unroll
                for (int k = 0; k < DPL; k++) {
                    int d = lane + 32 * k;
                    if (d < hd) o[ii][k] += w * Vs[jj * hd + d];
                }
            }
        }
    }
#pragma unroll
    for (int ii = 0; ii < MAXI; ii++) {
        int item = warp + ATT_WARPS * ii;
        if (item >= n_items) break;
        int r = row0 + item / group, h = kvh * group + item % group;
        float inv = l[ii] > 0.0f ? 1.0f / l[ii] : 0.0f;
#pragma unroll
        for (int k = 0; k < DPL; k++) {
            int d = lane + 32 * k;
            if (d < hd) out[(size_t)r * n_heads * hd + h * hd + d] = o[ii][k] * inv;
        }
    }
}

#define ATT_ENTRY(DPL, MAXI)                                                                                         \
    extern "C" __global__ void __launch_bounds__(32 * ATT_WARPS) attention_d##DPL(                                  \
        const float* q, float* out, const void* kc, const void* vc, int kv_f16, const u32* tiles, const u32* pos,   \
        const u32* bt_off, const u32* tables, int n_heads, int n_kv, int hd, int block_size, float scale,           \
        int window) {                                                                                                \
        attention<DPL, MAXI>(q, out, kc, vc, kv_f16, tiles, pos, bt_off, tables, n_heads, n_kv, hd, block_size,     \
                             scale, window);                                                                         \
    }

ATT_ENTRY(1, 8)
ATT_ENTRY(2, 8)
ATT_ENTRY(4, 8)
ATT_ENTRY(8, 4)
