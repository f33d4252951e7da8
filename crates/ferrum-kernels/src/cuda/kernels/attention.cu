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
// parallelism (flash-decoding). A block takes one sequence, up to DG query
// heads of one KV head's group (each key and value row is read once for all
// of them) and one split of the keys: split z of S scans keys
// [lo + z·len, lo + (z+1)·len), len = ceil(context / S). Its W warps
// (DEC_WARPS, or 8 for small batches) take K keys each in turn (their loads in flight together); a lane
// holds V consecutive head dims of every head. The DG dot products of a key
// are summed across the warp by halving exchanges (each round a lane keeps
// half of its heads and trades the other half with its partner), so that
// lane ends with the score of one head (head_of(lane)); that lane keeps the
// head's online softmax and broadcasts its weights for the value update.
// The warps' states merge in shared memory. With several splits the partial
// (max, sum, weighted values) go to `part_*` (slot (z, row, head)) and
// attention_combine merges them.
//
// grid: (rows, n_kv · ceil(group / DG), S); block: 32 · W.

#define DEC_WARPS 4

// V consecutive values at `at` (at % V == 0) of an f16 or f32 pool.
template <int V>
__device__ __forceinline__ void kv_load(const void* pool, int f16, size_t at, float (&x)[V]) {
    if (f16) {
        const u16* p = (const u16*)pool + at;
        u32 w[V / 2];
        if constexpr (V == 2) {
            w[0] = *(const u32*)p;
        } else if constexpr (V == 4) {
            uint2 h = *(const uint2*)p;
            w[0] = h.x, w[1] = h.y;
        } else {
            uint4 h = *(const uint4*)p;
            w[0] = h.x, w[1] = h.y, w[2] = h.z, w[3] = h.w;
        }
#pragma unroll
        for (int i = 0; i < V / 2; i++) {
            x[2 * i] = h2f((u16)(w[i] & 0xffffu));
            x[2 * i + 1] = h2f((u16)(w[i] >> 16));
        }
    } else {
        const float* p = (const float*)pool + at;
#pragma unroll
        for (int i = 0; i < V; i += 2) {
            float2 f = *(const float2*)(p + i);
            x[i] = f.x, x[i + 1] = f.y;
        }
    }
}

// log2 of DG (1, 4 or 8).
template <int DG>
__device__ constexpr int dec_rounds() { return DG == 8 ? 3 : DG == 4 ? 2 : DG == 2 ? 1 : 0; }

// The head whose full sum lane ends with in dec_scatter_sum, and the first
// lane holding head g.
template <int DG>
__device__ __forceinline__ int head_of(int lane) {
    int g = 0;
#pragma unroll
    for (int r = 0; r < dec_rounds<DG>(); r++) g += (lane & (16 >> r)) ? (DG >> (r + 1)) : 0;
    return g;
}
template <int DG>
__device__ __forceinline__ int lane_of(int g) {
    int l = 0;
#pragma unroll
    for (int r = 0; r < dec_rounds<DG>(); r++) l += (g & (DG >> (r + 1))) ? (16 >> r) : 0;
    return l;
}

// Sums a[0..DG) over the warp; returns this lane's share: the total of head_of(lane).
template <int DG>
__device__ __forceinline__ float dec_scatter_sum(float (&a)[DG], int lane) {
#pragma unroll
    for (int r = 0; r < dec_rounds<DG>(); r++) {
        const int half = DG >> (r + 1), off = 16 >> r;
        bool upper = lane & off;
#pragma unroll
        for (int i = 0; i < half; i++) {
            float keep = upper ? a[i + half] : a[i], send = upper ? a[i] : a[i + half];
            a[i] = keep + __shfl_xor_sync(0xffffffffu, send, off);
        }
    }
    float v = a[0];
#pragma unroll
    for (int off = 16 >> dec_rounds<DG>(); off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

template <int V, int DG, int K, int W>
__device__ void attention_decode(const float* q, float* out, u8* q8, float* part_o, float* part_ml, const void* kc,
                                 const void* vc, int kv_f16, const u32* pos, const u32* bt_off, const u32* tables,
                                 int n_heads, int n_kv, int hd, int block_size, float scale, int window) {
    pdl_sync();
    __shared__ float s_ml[W][DG][2];
    __shared__ float s_o[W][DG][32 * V];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int r = blockIdx.x, z = blockIdx.z, n_splits = gridDim.z;
    int group = n_heads / n_kv, hgs = (group + DG - 1) / DG;
    int kvh = blockIdx.y / hgs, g0 = (blockIdx.y - kvh * hgs) * DG, ng = min(DG, group - g0);
    int h0 = kvh * group + g0, kvd = n_kv * hd;
    int p = pos[r];
    int lo = window > 0 ? max(0, p - window + 1) : 0;
    int len = (p + 1 - lo + n_splits - 1) / n_splits;
    int j0 = lo + z * len, j1 = min(p + 1, j0 + len);
    const u32* bt = tables + bt_off[r];
    bool on = lane * V < hd;
    float qv[DG][V], o[DG][V];
#pragma unroll
    for (int g = 0; g < DG; g++)
#pragma unroll
        for (int v = 0; v < V; v++) {
            qv[g][v] = g < ng && on ? q[(size_t)r * n_heads * hd + (h0 + g) * hd + lane * V + v] * scale : 0.0f;
            o[g][v] = 0.0f;
        }
    // The online softmax of head head_of(lane).
    float m = NEG_INF, l = 0.0f;
    for (int j = j0 + warp * K; j < j1; j += W * K) {
        float kx[K][V], vx[K][V];
#pragma unroll
        for (int u = 0; u < K; u++) {
            int ju = min(j + u, j1 - 1);
            size_t at = ((size_t)bt[ju / block_size] * block_size + ju % block_size) * kvd + kvh * hd + lane * V;
            if (on) {
                kv_load<V>(kc, kv_f16, at, kx[u]);
                kv_load<V>(vc, kv_f16, at, vx[u]);
            } else {
#pragma unroll
                for (int v = 0; v < V; v++) kx[u][v] = vx[u][v] = 0.0f;
            }
        }
        float s[K], mn = m;
#pragma unroll
        for (int u = 0; u < K; u++) {
            float a[DG];
#pragma unroll
            for (int g = 0; g < DG; g++) {
                float t = 0.0f;
#pragma unroll
                for (int v = 0; v < V; v++) t += qv[g][v] * kx[u][v];
                a[g] = t;
            }
            float sc = dec_scatter_sum<DG>(a, lane);
            s[u] = j + u < j1 ? sc : NEG_INF;
            mn = fmaxf(mn, s[u]);
        }
        // Key j < j1, so mn is finite.
        float corr = expf(m - mn), pu[K];
        l *= corr;
#pragma unroll
        for (int u = 0; u < K; u++) {
            pu[u] = expf(s[u] - mn);
            l += pu[u];
        }
        m = mn;
#pragma unroll
        for (int g = 0; g < DG; g++) {
            int src = lane_of<DG>(g);
            float cg = __shfl_sync(0xffffffffu, corr, src);
#pragma unroll
            for (int v = 0; v < V; v++) o[g][v] *= cg;
#pragma unroll
            for (int u = 0; u < K; u++) {
                float pg = __shfl_sync(0xffffffffu, pu[u], src);
#pragma unroll
                for (int v = 0; v < V; v++) o[g][v] += pg * vx[u][v];
            }
        }
    }
    if ((lane & (32 / DG - 1)) == 0) {
        s_ml[warp][head_of<DG>(lane)][0] = m;
        s_ml[warp][head_of<DG>(lane)][1] = l;
    }
#pragma unroll
    for (int g = 0; g < DG; g++)
#pragma unroll
        for (int v = 0; v < V; v++) s_o[warp][g][lane * V + v] = o[g][v];
    __syncthreads();
    // Each head's maximum M, its warps' scales exp(m_w - M) (0 for a warp
    // without keys) and its sum L, once per head.
    __shared__ float s_f[W][DG], s_M[DG], s_L[DG];
    if (threadIdx.x < DG) {
        int g = threadIdx.x;
        float M = NEG_INF, L = 0.0f;
#pragma unroll
        for (int w = 0; w < W; w++) M = fmaxf(M, s_ml[w][g][0]);
#pragma unroll
        for (int w = 0; w < W; w++) {
            float mw = s_ml[w][g][0], f = mw != NEG_INF ? expf(mw - M) : 0.0f;
            s_f[w][g] = f;
            if (mw != NEG_INF) L += s_ml[w][g][1] * f;
        }
        s_M[g] = M;
        s_L[g] = L;
    }
    __syncthreads();
    // Merge the warps: warp w takes the 32-dim chunks w, w + W, ... of the heads.
    int chunks = (hd + 31) / 32;
    for (int c = warp; c < ng * chunks; c += W) {
        int g = c / chunks, d = (c - g * chunks) * 32 + lane, h = h0 + g;
        float M = s_M[g], L = s_L[g], v = 0.0f;
        // (A warp without keys has o = 0 and scale 0.)
#pragma unroll
        for (int w = 0; w < W; w++)
            if (d < hd) v += s_o[w][g][d] * s_f[w][g];
        if (n_splits > 1) {
            size_t slot = ((size_t)z * gridDim.x + r) * n_heads + h;
            if (lane == 0) {
                part_ml[2 * slot] = M;
                part_ml[2 * slot + 1] = L;
            }
            if (d < hd) part_o[slot * hd + d] = v;
        } else {
            v = L > 0.0f ? v / L : 0.0f;
            if (d < hd) out[(size_t)r * n_heads * hd + h * hd + d] = v;
            if (q8) q8_store(q8, r, h * hd + d, n_heads * hd, v);
        }
    }
}

// Entry points: V head dims a lane (head_dim <= 32 V), DG query heads a
// block, W warps (the _w8 ones, for small batches: a split's keys in one pass).
#define DEC_ENTRY_W(V, DG, K, W, SUFFIX)                                                                              \
    extern "C" __global__ void __launch_bounds__(32 * W) attention_decode_v##V##_g##DG##SUFFIX(                       \
        const float* q, float* out, u8* q8, float* part_o, float* part_ml, const void* kc, const void* vc, int kv_f16, \
        const u32* pos, const u32* bt_off, const u32* tables, int n_heads, int n_kv, int hd, int block_size,          \
        float scale, int window) {                                                                                   \
        attention_decode<V, DG, K, W>(q, out, q8, part_o, part_ml, kc, vc, kv_f16, pos, bt_off, tables, n_heads,      \
                                      n_kv, hd, block_size, scale, window);                                          \
    }
#define DEC_ENTRY(V, DG, K) DEC_ENTRY_W(V, DG, K, DEC_WARPS, )

DEC_ENTRY(2, 1, 4)
DEC_ENTRY(2, 4, 4)
DEC_ENTRY(2, 8, 4)
DEC_ENTRY(4, 1, 4)
DEC_ENTRY(4, 4, 4)
DEC_ENTRY(4, 8, 4)
DEC_ENTRY(8, 1, 2)
DEC_ENTRY(8, 4, 2)
DEC_ENTRY(8, 8, 2)
DEC_ENTRY_W(2, 4, 4, 8, _w8)
DEC_ENTRY_W(4, 4, 4, 8, _w8)
DEC_ENTRY_W(8, 4, 2, 8, _w8)

// Most key splits of a decode attention (as DEC_BLOCKS in attention.rs).
#define DEC_MAX_SPLITS 1024

// Merge the splits of attention_decode. Each split's scale is computed once
// (threads take the splits in parallel) and the per-dim sums run with their
// loads unrolled, so the merge costs a few load round trips, not one per
// split. grid: (rows, n_heads); block: 128.
extern "C" __global__ void attention_combine(const float* part_o, const float* part_ml, float* out, u8* q8, int n_heads,
                                             int hd, int n_splits) {
    __shared__ float s_f[DEC_MAX_SPLITS];
    __shared__ float scratch[32];
    pdl_sync();
    int r = blockIdx.x, h = blockIdx.y, rows = gridDim.x, t = threadIdx.x;
    auto slot = [&](int z) { return ((size_t)z * rows + r) * n_heads + h; };
    float M = NEG_INF;
    for (int z = t; z < n_splits; z += blockDim.x) M = fmaxf(M, part_ml[2 * slot(z)]);
    M = block_max(M, scratch);
    float L = 0.0f;
    for (int z = t; z < n_splits; z += blockDim.x) {
        float mz = part_ml[2 * slot(z)];
        float f = mz != NEG_INF ? expf(mz - M) : 0.0f;
        s_f[z] = f;
        L += part_ml[2 * slot(z) + 1] * f;
    }
    L = block_sum(L, scratch);
    __syncthreads();
    for (int d = t; d < hd; d += blockDim.x) {
        float v = 0.0f;
#pragma unroll 8
        for (int z = 0; z < n_splits; z++) v += part_o[slot(z) * hd + d] * s_f[z];
        v = L > 0.0f ? v / L : 0.0f;
        out[(size_t)r * n_heads * hd + h * hd + d] = v;
        if (q8) q8_store(q8, r, h * hd + d, n_heads * hd, v);
    }
}
