// Experts of a large batch (prefill) on the int8 tensor cores, weights read
// in their GGUF encoding: y[i, y_off + r] = x_i · W_e[r] for the assignments
// i of a tile of one expert e, with x_i quantized to 8 bits (q8 rows, see
// quantize_q8) and W_e decoded to 8-bit integers in shared memory 256
// columns at a time, with one scale and one offset ("min") per 16 columns.
//
// A thread block computes MMQ_ROWS weight rows for up to MMQ_TOK assignments
// (one tile); warp w takes rows 16w .. 16w + 15 with mma.m16n8k32 (int8 in,
// int32 out) per 32 columns, each product then scaled in f32:
//   Σ_c w·x = dx · (sc · Σ q_w q_x − mn · Σ q_x)  per 16 columns.

#define MMQ_ROWS 64
#define MMQ_TOK 32
#define MMQ_K 256
// Row stride of the int8 tiles in shared memory (padded: conflict-free
// fragment loads).
#define MMQ_LD (MMQ_K + 16)

// One chunk of 256 columns. Per 32 columns (sub-block): the weight row's
// (scale, scale, min, min) of its two 16-column halves, and the assignment's
// (dx, dx·Σq_x of the first half, dx·Σq_x of the second, 0): one 16-byte
// load each per product; types with one scale per 32 columns (not PER16)
// keep (scale, min) and (dx, dx·Σq_x) in the first 8 bytes (8-byte loads).
// (Rows of ws / xs padded by one: conflict-free 16-byte loads.)
struct MmqTile {
    i8 w[MMQ_ROWS][MMQ_LD];
    float4 ws[MMQ_ROWS][MMQ_K / 32 + 1];
    i8 x[MMQ_TOK][MMQ_LD];
    float4 xs[MMQ_TOK][MMQ_K / 32 + 1];
};

// Decoding of 128 columns (half `h` of a 256-column chunk starting at column
// k0) of one weight row, in two steps so that a chunk's loads are in flight
// while the previous chunk multiplies: `fetch` loads its GGUF bytes into
// registers (Raw), `decode` writes w[0..127] (integers) and sc/mn[0..7]
// (per 16 columns).
template <int T> struct Mmq;

// Q4_K/Q5_K scales of sub-blocks 4h .. 4h + 3 from the block header
// (d, dmin | 12 scale bytes).
__device__ __forceinline__ void kquant_scales(uint4 hdr, int h, float* sc, float* mn) {
    float d = h2f((u16)(hdr.x & 0xffffu)), dmin = h2f((u16)(hdr.x >> 16));
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float s, m;
        scale_min6(hdr.y, hdr.z, hdr.w, 4 * h + j, &s, &m);
        sc[2 * j] = sc[2 * j + 1] = d * s;
        mn[2 * j] = mn[2 * j + 1] = dmin * m;
    }
}

// Q4_K/Q5_K columns of half h: q[2jj + p] = bytes 16p .. of the 32-byte
// group j = 2h + jj of qs, holding columns 64j + l (low nibbles) and
// 64j + 32 + l (high); Q5_K (FIVE) adds bit 2j / 2j + 1 of qh[l] as bit 4.
template <bool FIVE>
__device__ __forceinline__ void kquant_values(const uint4* q, const uint4* qh, int h, i8* w) {
#pragma unroll
    for (int jj = 0; jj < 2; jj++) {
        int j = 2 * h + jj;
#pragma unroll
        for (int p = 0; p < 2; p++) {
            uint4 v = q[2 * jj + p];
            uint4 hv = FIVE ? qh[p] : v;
            u32 vv[4] = {v.x, v.y, v.z, v.w}, hh[4] = {hv.x, hv.y, hv.z, hv.w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                u32 lo = FIVE ? ((hh[i] >> (2 * j)) & 0x01010101u) << 4 : 0u;
                u32 hi = FIVE ? ((hh[i] >> (2 * j + 1)) & 0x01010101u) << 4 : 0u;
                *(u32*)(w + 64 * jj + 16 * p + 4 * i) = (vv[i] & M4) | lo;
                *(u32*)(w + 64 * jj + 32 + 16 * p + 4 * i) = ((vv[i] >> 4) & M4) | hi;
            }
        }
    }
}

template <> struct Mmq<T_Q4_K> {
    static constexpr bool PER16 = false;
    struct Raw {
        uint4 hdr, q[4];
    };
    __device__ __forceinline__ static void fetch(const u8* row, int k0, int h, Raw& r) {
        const u8* b = row + 144 * (k0 / 256);
        r.hdr = *(const uint4*)b;
#pragma unroll
        for (int i = 0; i < 4; i++) r.q[i] = *(const uint4*)(b + 16 + 64 * h + 16 * i);
    }
    __device__ __forceinline__ static void decode(const Raw& r, int h, i8* w, float* sc, float* mn) {
        kquant_scales(r.hdr, h, sc, mn);
        kquant_values<false>(r.q, nullptr, h, w);
    }
};

template <> struct Mmq<T_Q5_K> {
    static constexpr bool PER16 = false;
    struct Raw {
        uint4 hdr, qh[2], q[4];
    };
    __device__ __forceinline__ static void fetch(const u8* row, int k0, int h, Raw& r) {
        const u8* b = row + 176 * (k0 / 256);
        r.hdr = *(const uint4*)b;
        r.qh[0] = *(const uint4*)(b + 16);
        r.qh[1] = *(const uint4*)(b + 32);
#pragma unroll
        for (int i = 0; i < 4; i++) r.q[i] = *(const uint4*)(b + 48 + 64 * h + 16 * i);
    }
    __device__ __forceinline__ static void decode(const Raw& r, int h, i8* w, float* sc, float* mn) {
        kquant_scales(r.hdr, h, sc, mn);
        kquant_values<true>(r.q, r.qh, h, w);
    }
};

// Q6_K: half h is the block's 128-value half h; values q − 32 with one int8
// scale per 16 (stored as q, with mn = 32·scale).
template <> struct Mmq<T_Q6_K> {
    static constexpr bool PER16 = true;
    struct Raw {
        u32 a[8], c[8], hb[8], s[2];
        u16 d;
    };
    __device__ __forceinline__ static void fetch(const u8* row, int k0, int h, Raw& r) {
        const u8* b = row + 210 * (k0 / 256);
        const u8* ql = b + 64 * h;
        const u8* qh = b + 128 + 32 * h;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            r.a[i] = ld_u32_a2(ql + 4 * i);
            r.c[i] = ld_u32_a2(ql + 32 + 4 * i);
            r.hb[i] = ld_u32_a2(qh + 4 * i);
        }
        r.s[0] = ld_u32_a2(b + 192 + 8 * h);
        r.s[1] = ld_u32_a2(b + 196 + 8 * h);
        r.d = ld_u16(b + 208);
    }
    __device__ __forceinline__ static void decode(const Raw& r, int h, i8* w, float* sc, float* mn) {
        float d = h2f(r.d);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            sc[i] = d * (float)(i8)((r.s[i >> 2] >> (8 * (i & 3))) & 0xffu);
            mn[i] = 32.0f * sc[i];
        }
#pragma unroll
        for (int i = 0; i < 8; i++) {
            u32 a = r.a[i], c = r.c[i], hb = r.hb[i];
            *(u32*)(w + 4 * i) = (a & M4) | ((hb & 0x03030303u) << 4);
            *(u32*)(w + 32 + 4 * i) = (c & M4) | (((hb >> 2) & 0x03030303u) << 4);
            *(u32*)(w + 64 + 4 * i) = ((a >> 4) & M4) | (((hb >> 4) & 0x03030303u) << 4);
            *(u32*)(w + 96 + 4 * i) = ((c >> 4) & M4) | (((hb >> 6) & 0x03030303u) << 4);
        }
    }
};

// Q8_0: four 32-value blocks.
template <> struct Mmq<T_Q8_0> {
    static constexpr bool PER16 = false;
    struct Raw {
        u32 q[4][8];
        u16 d[4];
    };
    __device__ __forceinline__ static void fetch(const u8* row, int k0, int h, Raw& r) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const u8* b = row + 34 * (k0 / 32 + 4 * h + j);
            r.d[j] = ld_u16(b);
#pragma unroll
            for (int i = 0; i < 8; i++) r.q[j][i] = ld_u32_a2(b + 2 + 4 * i);
        }
    }
    __device__ __forceinline__ static void decode(const Raw& r, int h, i8* w, float* sc, float* mn) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            sc[2 * j] = sc[2 * j + 1] = h2f(r.d[j]);
            mn[2 * j] = mn[2 * j + 1] = 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++) *(u32*)(w + 32 * j + 4 * i) = r.q[j][i];
        }
    }
};

__device__ __forceinline__ void mma_s8(int* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
#if __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

// tiles[3·blockIdx.y ..]: (expert, first assignment, assignments ≤ MMQ_TOK),
// *n_tiles of them (blocks past the last exit). Assignment i (in expert
// order) reads q8 row order[i] / top_k of xq (order null: row i); W: the
// experts' [n_exp][rows][cols] weights; y: [n_assign, ldy], written at
// columns y_off + r. cols % 256 == 0.
// grid: (ceil(rows / MMQ_ROWS), at least *n_tiles); block 128.
template <int T>
__device__ void moe_mmq(const u8* W, int rows, int cols, const u32* tiles, const u32* n_tiles, const u8* xq,
                        const u32* order, int top_k, float* y, int ldy, int y_off) {
    extern __shared__ __align__(16) u8 mmq_smem[];
    MmqTile& s = *(MmqTile*)mmq_smem;
    pdl_sync();
    if (blockIdx.y >= *n_tiles) return;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int g = lane >> 2, t4 = lane & 3;
    int e = tiles[3 * blockIdx.y], first = tiles[3 * blockIdx.y + 1], count = tiles[3 * blockIdx.y + 2];
    int r0 = blockIdx.x * MMQ_ROWS;
    size_t rb = row_bytes<T>(cols);
    const u8* Wr = W + ((size_t)e * rows + min(r0 + (tid >> 1), rows - 1)) * rb;
    // The q8 row of this thread's token slot (tid / 4) and its quarter of a chunk.
    int tn = tid >> 2, tq = tid & 3;
    int xi = first + min(tn, count - 1);
    const u8* xb = xq + (size_t)(order ? order[xi] / top_k : xi) * q8_row(cols);
    int x_slots = (count + 7) & ~7;
    float acc[4][4];
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc[j][i] = 0.0f;
    int r = tid >> 1, h = tid & 1;
    typename Mmq<T>::Raw raw;
    Mmq<T>::fetch(Wr, 0, h, raw);
    for (int k0 = 0; k0 < cols; k0 += MMQ_K) {
        {
            float sc[8], mn[8];
            Mmq<T>::decode(raw, h, &s.w[r][128 * h], sc, mn);
#pragma unroll
            for (int j = 0; j < 4; j++)
                s.ws[r][4 * h + j] = Mmq<T>::PER16 ? f4(sc[2 * j], sc[2 * j + 1], mn[2 * j], mn[2 * j + 1])
                                                   : f4(sc[2 * j], mn[2 * j], 0.0f, 0.0f);
        }
        // Only the token slots of the 8-wide MMA tiles in use (small tiles:
        // decode batches give an expert a few tokens).
        if (tn < x_slots) {
            const int4* xv = (const int4*)(xb + k0 + 64 * tq);
#pragma unroll
            for (int p = 0; p < 4; p++) *(int4*)&s.x[tn][64 * tq + 16 * p] = xv[p];
            const float* xd = (const float*)(xb + cols) + k0 / 32;
            const short* xsum = (const short*)(xb + cols + cols / 8) + k0 / 16;
#pragma unroll
            for (int p = 0; p < 2; p++) {
                int b = 2 * tq + p;
                float dx = xd[b];
                float s0 = (float)xsum[2 * b], s1 = (float)xsum[2 * b + 1];
                s.xs[tn][b] = Mmq<T>::PER16 ? f4(dx, dx * s0, dx * s1, 0.0f) : f4(dx, dx * (s0 + s1), 0.0f, 0.0f);
            }
        }
        __syncthreads();
        // The next chunk's weights load while this one multiplies.
        if (k0 + MMQ_K < cols) Mmq<T>::fetch(Wr, k0 + MMQ_K, h, raw);
        int wr = 16 * warp + g;
#pragma unroll
        for (int sb = 0; sb < MMQ_K / 32; sb++) {
            int kc = 32 * sb + 4 * t4;
            u32 a0 = *(const u32*)&s.w[wr][kc], a1 = *(const u32*)&s.w[wr + 8][kc];
            u32 a2 = *(const u32*)&s.w[wr][kc + 16], a3 = *(const u32*)&s.w[wr + 8][kc + 16];
            // One scale and one min per 32 columns (8-byte records) unless PER16.
            float4 wsr[2];
#pragma unroll
            for (int h = 0; h < 2; h++) {
                if (Mmq<T>::PER16) {
                    wsr[h] = s.ws[wr + 8 * h][sb];
                } else {
                    float2 v = *(const float2*)&s.ws[wr + 8 * h][sb];
                    wsr[h] = f4(v.x, 0.0f, v.y, 0.0f);
                }
            }
#pragma unroll
            for (int j = 0; j < 4; j++) {
                if (8 * j >= count) break;  // no assignments left in this tile
                int n = 8 * j + g;
                u32 b0 = *(const u32*)&s.x[n][kc], b1 = *(const u32*)&s.x[n][kc + 16];
                int c[4] = {0, 0, 0, 0}, c1[4] = {0, 0, 0, 0};
                if (Mmq<T>::PER16) {
                    mma_s8(c, a0, a1, 0u, 0u, b0, b1);
                    mma_s8(c1, 0u, 0u, a2, a3, b0, b1);
                } else {
                    mma_s8(c, a0, a1, a2, a3, b0, b1);
                }
                float4 xsr[2];
#pragma unroll
                for (int u = 0; u < 2; u++) {
                    const float4* xp = &s.xs[8 * j + 2 * t4 + u][sb];
                    if (Mmq<T>::PER16) {
                        xsr[u] = *xp;
                    } else {
                        float2 v = *(const float2*)xp;
                        xsr[u] = f4(v.x, v.y, 0.0f, 0.0f);
                    }
                }
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float4 w = wsr[i >> 1], x = xsr[i & 1];
                    if (Mmq<T>::PER16)
                        acc[j][i] += x.x * (w.x * (float)c[i] + w.y * (float)c1[i]) - w.z * x.y - w.w * x.z;
                    else
                        acc[j][i] += x.x * (w.x * (float)c[i]) - w.z * x.y;
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int r = r0 + 16 * warp + g + 8 * (i >> 1), tok = 8 * j + 2 * t4 + (i & 1);
            if (r < rows && tok < count) y[(size_t)(first + tok) * ldy + y_off + r] = acc[j][i];
        }
}

#define MMQ_ENTRY(T, S)                                                                                      \
    extern "C" __global__ void __launch_bounds__(128)                                                        \
        moe_mmq_##S(const u8* W, int rows, int cols, const u32* tiles, const u32* n_tiles, const u8* xq,     \
                    const u32* order, int top_k, float* y, int ldy, int y_off) {                             \
        moe_mmq<T>(W, rows, cols, tiles, n_tiles, xq, order, top_k, y, ldy, y_off);                          \
    }
MMQ_ENTRY(T_Q4_K, q4_k)
MMQ_ENTRY(T_Q5_K, q5_k)
MMQ_ENTRY(T_Q6_K, q6_k)
MMQ_ENTRY(T_Q8_0, q8_0)
