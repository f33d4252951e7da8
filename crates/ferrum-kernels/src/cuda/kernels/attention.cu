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

// Elements at .. at + 3 (at % 4 == 0) of an f16 or f32 pool.
__device__ __forceinline__ float4 kv_get4(const void* pool, int f16, size_t at) {
    if (!f16) return *(const float4*)((const float*)pool + at);
    uint2 h = *(const uint2*)((const u16*)pool + at);
    return f4(h2f((u16)(h.x & 0xffffu)), h2f((u16)(h.x >> 16)), h2f((u16)(h.y & 0xffffu)), h2f((u16)(h.y >> 16)));
}

template <int DPL, int MAXI>
__device__ void attention(const float* q, float* out, const void* kc, const void* vc, int kv_f16, const u32* tiles,
                          const u32* pos, const u32* bt_off, const u32* tables, int n_heads, int n_kv, int hd,
                          int block_size, float scale, int window) {
    extern __shared__ float smem[];
    pdl_sync();
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int seq = tiles[3 * blockIdx.x], row0 = tiles[3 * blockIdx.x + 1], nrows = tiles[3 * blockIdx.x + 2];
    int kvh = blockIdx.y;
    int group = n_heads / n_kv;
    int n_items = nrows * group;
    // hd % 4 == 0 (16-byte loads); K rows padded by 4 (conflict-free reads).
    int kvd = n_kv * hd, ks = hd + 4;
    float* Qs = smem;                      // [n_items, hd]
    float* Ks = Qs + n_items * hd;         // [KT, hd + 4]
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

    // Warp w's items are w, w + ATT_WARPS, ...: each keeps its position's
    // key range, running max m, sum l and weighted value sum o.
    float m[MAXI], l[MAXI], o[MAXI][DPL];
    int hi[MAXI], lo[MAXI];
#pragma unroll
    for (int i = 0; i < MAXI; i++) {
        int item = warp + ATT_WARPS * i;
        int p = item < n_items ? (int)pos[row0 + item / group] : -1;
        hi[i] = p;
        lo[i] = window > 0 ? max(0, p - window + 1) : 0;
        m[i] = NEG_INF;
        l[i] = 0.0f;
#pragma unroll
        for (int k = 0; k < DPL; k++) o[i][k] = 0.0f;
    }

    for (int j0 = first; j0 <= last; j0 += KT) {
        __syncthreads();
        // Warp w loads key rows w, w + ATT_WARPS, ... (all loads in flight
        // before the stores), each lane 4 dims at a time.
        for (int c0 = 0; c0 < hd; c0 += 128) {
            int d = c0 + 4 * lane;
            float4 kr4[KT / ATT_WARPS], vr4[KT / ATT_WARPS];
#pragma unroll
            for (int u = 0; u < KT / ATT_WARPS; u++) {
                int j = j0 + warp + ATT_WARPS * u;
                bool ok = j <= last && d < hd;
                size_t at = ok ? ((size_t)bt[j / block_size] * block_size + j % block_size) * kvd + kvh * hd + d : 0;
                kr4[u] = ok ? kv_get4(kc, kv_f16, at) : f4(0.0f, 0.0f, 0.0f, 0.0f);
                vr4[u] = ok ? kv_get4(vc, kv_f16, at) : f4(0.0f, 0.0f, 0.0f, 0.0f);
            }
            if (d < hd) {
#pragma unroll
                for (int u = 0; u < KT / ATT_WARPS; u++) {
                    int jj = warp + ATT_WARPS * u;
                    *(float4*)&Ks[jj * ks + d] = kr4[u];
                    *(float4*)&Vs[jj * hd + d] = vr4[u];
                }
            }
        }
        __syncthreads();
        // Scores of key j0 + lane against every item of the warp: each K
        // value is read once for all items.
        float sc[MAXI];
#pragma unroll
        for (int i = 0; i < MAXI; i++) sc[i] = 0.0f;
        const float* kr = Ks + lane * ks;
        for (int d = 0; d < hd; d += 4) {
            float4 k4 = *(const float4*)(kr + d);
#pragma unroll
            for (int i = 0; i < MAXI; i++) {
                int item = min(warp + ATT_WARPS * i, n_items - 1);
                float4 q4 = *(const float4*)(Qs + item * hd + d);
                sc[i] += q4.x * k4.x + q4.y * k4.y + q4.z * k4.z + q4.w * k4.w;
            }
        }
        int j = j0 + lane;
        float pj[MAXI];
#pragma unroll
        for (int i = 0; i < MAXI; i++) {
            float sv = j <= hi[i] && j >= lo[i] ? sc[i] * scale : NEG_INF;
            float mn = fmaxf(m[i], warp_max(sv));
            // mn = -inf: nothing seen yet for this item (state unchanged).
            float corr = mn == NEG_INF ? 1.0f : expf(m[i] - mn);
            pj[i] = sv == NEG_INF ? 0.0f : expf(sv - mn);
            l[i] = l[i] * corr + warp_sum(pj[i]);
            m[i] = mn;
#pragma unroll
            for (int k = 0; k < DPL; k++) o[i][k] *= corr;
        }
        // Each V value is read once for all items.
        for (int jj = 0; jj < KT; jj++) {
            float v[DPL];
#pragma unroll
            for (int k = 0; k < DPL; k++) {
                int d = lane + 32 * k;
                v[k] = d < hd ? Vs[jj * hd + d] : 0.0f;
            }
#pragma unroll
            for (int i = 0; i < MAXI; i++) {
                float w = __shfl_sync(0xffffffffu, pj[i], jj);
#pragma unroll
                for (int k = 0; k < DPL; k++) o[i][k] += w * v[k];
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

// Decode attention (one row per sequence), split over the keys for
// parallelism (flash-decoding): block (row, query head, split) scans up to
// DEC_SPLIT keys with its DEC_WARPS warps taking groups of DEC_KEYS keys in
// turn (the loads of a group's keys are in flight together), each lane
// holding head dims lane + 32k; the warps' online-softmax states are merged
// in shared memory. With several splits the partial (max, sum, weighted
// values) go to `part_*` and attention_combine merges them.
//
// grid: (rows, n_heads, n_splits); block: 32 · DEC_WARPS.

#define DEC_SPLIT 256
#define DEC_WARPS 8
#define DEC_KEYS 4

extern "C" __global__ void __launch_bounds__(32 * DEC_WARPS) attention_decode(
    const float* q, float* out, u8* q8, float* part_o, float* part_ml, const void* kc, const void* vc, int kv_f16,
    const u32* pos, const u32* bt_off, const u32* tables, int n_heads, int n_kv, int hd, int block_size, float scale,
    int window) {
    pdl_sync();
    __shared__ float sm[DEC_WARPS], sl[DEC_WARPS];
    __shared__ float so[DEC_WARPS][256];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int r = blockIdx.x, h = blockIdx.y, z = blockIdx.z, n_splits = gridDim.z;
    int kvh = h / (n_heads / n_kv), kvd = n_kv * hd;
    int p = pos[r];
    int lo = window > 0 ? max(0, p - window + 1) : 0;
    int j0 = max(lo, z * DEC_SPLIT), j1 = min(p + 1, (z + 1) * DEC_SPLIT);
    const u32* bt = tables + bt_off[r];
    float qv[8], o[8];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int d = lane + 32 * k;
        qv[k] = d < hd ? q[(size_t)r * n_heads * hd + h * hd + d] : 0.0f;
        o[k] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (int j = j0 + warp * DEC_KEYS; j < j1; j += DEC_WARPS * DEC_KEYS) {
        size_t at[DEC_KEYS];
        float s[DEC_KEYS];
#pragma unroll
        for (int u = 0; u < DEC_KEYS; u++) {
            int ju = min(j + u, j1 - 1);
            at[u] = ((size_t)bt[ju / block_size] * block_size + ju % block_size) * kvd + kvh * hd;
            s[u] = 0.0f;
        }
#pragma unroll
        for (int k = 0; k < 8; k++) {
            int d = lane + 32 * k;
            if (d < hd) {
#pragma unroll
                for (int u = 0; u < DEC_KEYS; u++) s[u] += qv[k] * kv_get(kc, kv_f16, at[u] + d);
            }
        }
        float mn = m;
#pragma unroll
        for (int u = 0; u < DEC_KEYS; u++) {
            s[u] = j + u < j1 ? warp_sum(s[u]) * scale : NEG_INF;
            mn = fmaxf(mn, s[u]);
        }
        float corr = expf(m - mn), pj[DEC_KEYS];
        l *= corr;
#pragma unroll
        for (int u = 0; u < DEC_KEYS; u++) {
            pj[u] = expf(s[u] - mn);
            l += pj[u];
        }
#pragma unroll
        for (int k = 0; k < 8; k++) {
            int d = lane + 32 * k;
            if (d < hd) {
                float acc = o[k] * corr;
#pragma unroll
                for (int u = 0; u < DEC_KEYS; u++) acc += pj[u] * kv_get(vc, kv_f16, at[u] + d);
                o[k] = acc;
            }
        }
        m = mn;
    }
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int d = lane + 32 * k;
        if (d < hd) so[warp][d] = o[k];
    }
    __syncthreads();
    if (warp != 0) return;
    float M = NEG_INF;
    for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, sm[w]);
    float L = 0.0f, f[DEC_WARPS];
    for (int w = 0; w < DEC_WARPS; w++) {
        f[w] = M == NEG_INF ? 0.0f : expf(sm[w] - M);
        L += sl[w] * f[w];
    }
    size_t slot = ((size_t)z * gridDim.x + r) * n_heads + h;
    if (n_splits > 1 && lane == 0) {
        part_ml[2 * slot] = M;
        part_ml[2 * slot + 1] = L;
    }
    for (int d = lane; d < hd; d += 32) {
        float v = 0.0f;
        for (int w = 0; w < DEC_WARPS; w++) v += so[w][d] * f[w];
        if (n_splits > 1) {
            part_o[slot * hd + d] = v;
        } else {
            v = L > 0.0f ? v / L : 0.0f;
            out[(size_t)r * n_heads * hd + h * hd + d] = v;
            if (q8) q8_store(q8, r, h * hd + d, n_heads * hd, v);
        }
    }
}

// Merge the splits of attention_decode. grid: (rows, n_heads); block: 128.
extern "C" __global__ void attention_combine(const float* part_o, const float* part_ml, float* out, u8* q8, int n_heads,
                                             int hd, int n_splits) {
    pdl_sync();
    int r = blockIdx.x, h = blockIdx.y, rows = gridDim.x;
    float M = NEG_INF;
    for (int z = 0; z < n_splits; z++) M = fmaxf(M, part_ml[2 * (((size_t)z * rows + r) * n_heads + h)]);
    float L = 0.0f;
    for (int z = 0; z < n_splits; z++) {
        size_t slot = ((size_t)z * rows + r) * n_heads + h;
        float mz = part_ml[2 * slot];
        if (mz != NEG_INF) L += part_ml[2 * slot + 1] * expf(mz - M);
    }
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float v = 0.0f;
        for (int z = 0; z < n_splits; z++) {
            size_t slot = ((size_t)z * rows + r) * n_heads + h;
            float mz = part_ml[2 * slot];
            if (mz != NEG_INF) v += part_o[slot * hd + d] * expf(mz - M);
        }
        v = L > 0.0f ? v / L : 0.0f;
        out[(size_t)r * n_heads * hd + h * hd + d] = v;
        if (q8) q8_store(q8, r, h * hd + d, n_heads * hd, v);
    }
}
