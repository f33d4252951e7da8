// Decoding GGUF blocks in registers. `dq32<T>(row, c, w)` writes the 32
// values of chunk `c` (elements 32c .. 32c+31) of one weight row to `w`.
// Type tags are GGUF's type ids. Layouts follow the GGUF block definitions
// (see ferrum-format's quant/blocks.rs for the same layouts in Rust).

#define T_F32 0
#define T_F16 1
#define T_Q4_0 2
#define T_Q4_1 3
#define T_Q5_0 6
#define T_Q5_1 7
#define T_Q8_0 8
#define T_Q2_K 10
#define T_Q3_K 11
#define T_Q4_K 12
#define T_Q5_K 13
#define T_Q6_K 14
#define T_BF16 30

// 16 packed nibbles: low nibbles are elements 0..15, high 16..31.
__device__ __forceinline__ void nibbles(const u8* qs, float* lo, float* hi, float d, float off) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        u32 v = ld_u32_a2(qs + 4 * i);
#pragma unroll
        for (int b = 0; b < 4; b++) {
            u32 byte = (v >> (8 * b)) & 0xffu;
            lo[4 * i + b] = d * (float)(byte & 15u) + off;
            hi[4 * i + b] = d * (float)(byte >> 4) + off;
        }
    }
}

__device__ __forceinline__ void get_scale_min_k4(int j, const u8* s, float* sc, float* mn) {
    u32 a, b;
    if (j < 4) {
        a = s[j] & 63;
        b = s[j + 4] & 63;
    } else {
        a = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        b = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
    *sc = (float)a;
    *mn = (float)b;
}

template <int T> struct Q;

template <> struct Q<T_F32> {
    static constexpr int BYTES = 4, ELEMS = 1;
    static __device__ __forceinline__ void dq32(const u8* row, int c, float* w) {
        const float4* p = (const float4*)(row + 128 * c);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float4 v = p[i];
            w[4 * i] = v.x; w[4 * i + 1] = v.y; w[4 * i + 2] = v.z; w[4 * i + 3] = v.w;
        }
    }
};

template <> struct Q<T_F16> {
    static constexpr int BYTES = 2, ELEMS = 1;
    static __device__ __forceinline__ void dq32(const u8* row, int c, float* w) {
        const u32* p = (const u32*)(row + 64 * c);
#pragma unroll
        for (int i = 0; i < 16; i++) {
            u32 v = p[i];
            w[2 * i] = h2f((u16)(v & 0xffffu));
            w[2 * i + 1] = h2f((u16)(v >> 16));
        }
    }
};

template <> struct Q<T_BF16> {
    static constexpr int BYTES = 2, ELEMS = 1;
    static __device__ __forceinline__ void dq32(const u8* row, int c, float* w) {
        const u32* p = (const u32*)(row + 64 * c);
#pragma unroll
        for (int i = 0; i < 16; i++) {
            u32 v = p[i];
            w[2 * i] = bf2f((u16)(v & 0xffffu));
            w[2 * i + 1] = bf2f((u16)(v >> 16));
        }
    }
};

template <> struct Q<T_Q4_0> {
    static constexpr int BYTES = 18, ELEMS = 32;
    static __device__ __forceinline__ void dq32(const u8* row, int c, float* w) {
        const u8* b = row + 18 * c;
        float d = h2f(ld_u16(b));
        nibbles(b + 2, w, w + 16, d, -8.0f * d);
    }
};

template <> struct Q<T_Q4_1> {
    static constexpr int BYTES = 20, ELEMS = 32;
    static __device__ __forceinline__ void dq32(const u8* row, int c, float* w) {
        const u8* b = row + 20 * c;
        nibbles(b + 4, w, w + 16, h2f(ld_u16(b)), h2f(ld_u16(b + 2)));
    }
};

// Five-bit values: nibbles plus bit j of the 32-bit `qh` as bit 4 of element j.
__device__ __forceinline__ void five_bits(const u8* qs, u32 qh, float* w, float d, float off) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        u32 v = ld_u32_a2(qs + 4 * i);
#pragma unroll
        for (int b = 0; b < 4; b++) {
            int j = 4 * i + b;
            u32 byte = (v >> (8 * b)) & 0xffu;
            w[j] = d * (float)((byte & 15u) | (((qh >> j) & 1u) << 4)) + off;
            w[j + 16] = d * (float)((byte >> 4) | (((qh >> (j + 16)) & 1u) << 4)) + off;
        }
    }
}

template <> struct Q<T_Q5_0> {
    static constexpr int BYTES = 22, ELEMS = 32;
    static __device__ __forceinline__ void dq32(const u8* row, int c, float* w) {
        const u8* b = row + 22 * c;
        float d = h2f(ld_u16(b));
        five_bits(b + 6, ld_u32_a2(b + 2), w, d, -16.0f * d);
    }
};

template <> struct Q<T_Q5_1> {
    static constexpr int BYTES = 24, ELEMS = 32;
    static __device__ __forceinline__ void dq32(const u8* row, int c, float* w) {
        const u8* b = row + 24 * c;
        five_bits(b + 8, ld_u32(b + 4), w, h2f(ld_u16(b)), h2f(ld_u16(b + 2)));
    }
};

template <> struct Q<T_Q8_0> {
    static constexpr int BYTES = 34, ELEMS = 32;
    static __device__ __forceinline__ void dq32(const u8* row, int c, float* w) {
        const u8* b = row + 34 * c;
        float d = h2f(ld_u16(b));
#pragma unroll
        for (int i = 0; i < 8; i++) {
            u32 v = ld_u32_a2(b + 2 + 4 * i);
#pragma unroll
            for (int k = 0; k < 4; k++) w[4 * i + k] = d * (float)(signed char)((v >> (8 * k)) & 0xffu);
        }
    }
};

template <> struct Q<T_Q2_K> {
    static constexpr int BYTES = 84, ELEMS = 256;
    static __device__ __forceinline__ void dq32(const u8* row, int c, float* w) {
        const u8* b = row + 84 * (c >> 3);
        int s = c & 7;
        float d = h2f(ld_u16(b + 80)), dmin = h2f(ld_u16(b + 82));
        int shift = 2 * (s & 3);
        const u8* qs = b + 16 + 32 * (s >> 2);
#pragma unroll
        for (int h = 0; h < 2; h++) {
            u32 sc = b[2 * s + h];
            float dl = d * (float)(sc & 15u), ml = dmin * (float)(sc >> 4);
#pragma unroll
            for (int l = 0; l < 16; l++) w[16 * h + l] = dl * (float)((qs[16 * h + l] >> shift) & 3) - ml;
        }
    }
};

template <> struct Q<T_Q3_K> {
    static constexpr int BYTES = 110, ELEMS = 256;
    static __device__ __forceinline__ void dq32(const u8* row, int c, float* w) {
        const u8* b = row + 110 * (c >> 3);
        int s = c & 7;
        float d = h2f(ld_u16(b + 108));
        const u8* scales = b + 96;
        int shift = 2 * (s & 3);
        const u8* qs = b + 32 + 32 * (s >> 2);
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int g = 2 * s + h;
            u32 low = g < 8 ? (scales[g] & 15u) : (scales[g - 8] >> 4);
            u32 high = (scales[8 + (g & 3)] >> (2 * (g >> 2))) & 3u;
            float dl = d * (float)((int)(low | (high << 4)) - 32);
#pragma unroll
            for (int l = 0; l < 16; l++) {
                int q = (qs[16 * h + l] >> shift) & 3;
                if (!((b[16 * h + l] >> s) & 1)) q -= 4;
                w[16 * h + l] = dl * (float)q;
            }
        }
    }
};

template <> struct Q<T_Q4_K> {
    static constexpr int BYTES = 144, ELEMS = 256;
    static __device__ __forceinline__ void dq32(const u8* row, int c, float* w) {
        const u8* b = row + 144 * (c >> 3);
        int s = c & 7;
        float sc, mn;
        get_scale_min_k4(s, b + 4, &sc, &mn);
        float dl = h2f(ld_u16(b)) * sc, ml = h2f(ld_u16(b + 2)) * mn;
        int shift = 4 * (s & 1);
        const u8* qs = b + 16 + 32 * (s >> 1);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            u32 v = ld_u32(qs + 4 * i);
#pragma unroll
            for (int k = 0; k < 4; k++) w[4 * i + k] = dl * (float)((v >> (8 * k + shift)) & 15u) - ml;
        }
    }
};

template <> struct Q<T_Q5_K> {
    static constexpr int BYTES = 176, ELEMS = 256;
    static __device__ __forceinline__ void dq32(const u8* row, int c, float* w) {
        const u8* b = row + 176 * (c >> 3);
        int s = c & 7;
        float sc, mn;
        get_scale_min_k4(s, b + 4, &sc, &mn);
        float dl = h2f(ld_u16(b)) * sc, ml = h2f(ld_u16(b + 2)) * mn;
        int shift = 4 * (s & 1);
        const u8* qh = b + 16;
        const u8* qs = b + 48 + 32 * (s >> 1);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            u32 v = ld_u32(qs + 4 * i), h = ld_u32(qh + 4 * i);
#pragma unroll
            for (int k = 0; k < 4; k++) {
                u32 q = ((v >> (8 * k + shift)) & 15u) | (((h >> (8 * k + s)) & 1u) << 4);
                w[4 * i + k] = dl * (float)q - ml;
            }
        }
    }
};

template <> struct Q<T_Q6_K> {
    static constexpr int BYTES = 210, ELEMS = 256;
    static __device__ __forceinline__ void dq32(const u8* row, int c, float* w) {
        const u8* b = row + 210 * (c >> 3);
        int s = c & 7;
        int h = s >> 2, k = s & 3;
        float d = h2f(ld_u16(b + 208));
        const u8* ql = b + 64 * h + 32 * (k & 1);
        const u8* qh = b + 128 + 32 * h;
        int lshift = 4 * (k >> 1), hshift = 2 * k;
        float d0 = d * (float)(signed char)b[192 + 2 * s], d1 = d * (float)(signed char)b[192 + 2 * s + 1];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            u32 lo = ld_u32_a2(ql + 4 * i), hi = ld_u32_a2(qh + 4 * i);
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                int q = (int)(((lo >> (8 * kk + lshift)) & 15u) | (((hi >> (8 * kk + hshift)) & 3u) << 4)) - 32;
                w[4 * i + kk] = (i < 4 ? d0 : d1) * (float)q;
            }
        }
    }
};

// Row size in bytes of `cols` elements of type T.
template <int T> __device__ __forceinline__ size_t row_bytes(int cols) {
    return (size_t)(cols / Q<T>::ELEMS) * Q<T>::BYTES;
}

// Instantiate `MACRO(T, suffix)` for every supported weight type.
#define FOR_EACH_TYPE(MACRO) \
    MACRO(T_F32, f32)        \
    MACRO(T_F16, f16)        \
    MACRO(T_BF16, bf16)      \
    MACRO(T_Q4_0, q4_0)      \
    MACRO(T_Q4_1, q4_1)      \
    MACRO(T_Q5_0, q5_0)      \
    MACRO(T_Q5_1, q5_1)      \
    MACRO(T_Q8_0, q8_0)      \
    MACRO(T_Q2_K, q2_k)      \
    MACRO(T_Q3_K, q3_k)      \
    MACRO(T_Q4_K, q4_k)      \
    MACRO(T_Q5_K, q5_k)      \
    MACRO(T_Q6_K, q6_k)

// ---- Eight-value decoding for the matrix-vector kernels: `dq8(row, g, w)`
// writes elements 8g .. 8g+7 of a row. Adjacent lanes take adjacent groups,
// so both the weight bytes and the activations they multiply are read
// coalesced across the warp.

__device__ __forceinline__ void nib8(u32 lo, u32 hi, int high, float d, float off, float* w) {
    // Eight bytes (lo, hi words); the low or the high nibble of each.
    int sh = high ? 4 : 0;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        w[k] = d * (float)((lo >> (8 * k + sh)) & 15u) + off;
        w[4 + k] = d * (float)((hi >> (8 * k + sh)) & 15u) + off;
    }
}

template <int T> __device__ __forceinline__ void dq8(const u8* row, int g, float* w);

template <> __device__ __forceinline__ void dq8<T_F32>(const u8* row, int g, float* w) {
    const float4* p = (const float4*)(row + 32 * g);
    float4 a = p[0], b = p[1];
    w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w; w[4] = b.x; w[5] = b.y; w[6] = b.z; w[7] = b.w;
}

template <> __device__ __forceinline__ void dq8<T_F16>(const u8* row, int g, float* w) {
    uint4 v = *(const uint4*)(row + 16 * g);
    u32 u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
        w[2 * k] = h2f((u16)(u[k] & 0xffffu));
        w[2 * k + 1] = h2f((u16)(u[k] >> 16));
    }
}

template <> __device__ __forceinline__ void dq8<T_BF16>(const u8* row, int g, float* w) {
    uint4 v = *(const uint4*)(row + 16 * g);
    u32 u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
        w[2 * k] = bf2f((u16)(u[k] & 0xffffu));
        w[2 * k + 1] = bf2f((u16)(u[k] >> 16));
    }
}

// Legacy 32-element blocks: group g is quarter q = g % 4 of block g / 4;
// quarters 0-1 are low nibbles of qs[8q..], quarters 2-3 high nibbles of qs[8(q-2)..].
template <> __device__ __forceinline__ void dq8<T_Q4_0>(const u8* row, int g, float* w) {
    const u8* b = row + 18 * (g >> 2);
    int q = g & 3;
    float d = h2f(ld_u16(b));
    const u8* qs = b + 2 + 8 * (q & 1);
    nib8(ld_u32_a2(qs), ld_u32_a2(qs + 4), q >> 1, d, -8.0f * d, w);
}

template <> __device__ __forceinline__ void dq8<T_Q4_1>(const u8* row, int g, float* w) {
    const u8* b = row + 20 * (g >> 2);
    int q = g & 3;
    const u8* qs = b + 4 + 8 * (q & 1);
    nib8(ld_u32(qs), ld_u32(qs + 4), q >> 1, h2f(ld_u16(b)), h2f(ld_u16(b + 2)), w);
}

__device__ __forceinline__ void five8(u32 lo, u32 hi, int q, u32 qh, float d, float off, float* w) {
    int sh = (q >> 1) ? 4 : 0;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        u32 byte = k < 4 ? (lo >> (8 * k)) : (hi >> (8 * (k - 4)));
        int j = 8 * q + k;
        w[k] = d * (float)(((byte >> sh) & 15u) | (((qh >> j) & 1u) << 4)) + off;
    }
}

template <> __device__ __forceinline__ void dq8<T_Q5_0>(const u8* row, int g, float* w) {
    const u8* b = row + 22 * (g >> 2);
    int q = g & 3;
    float d = h2f(ld_u16(b));
    const u8* qs = b + 6 + 8 * (q & 1);
    five8(ld_u32_a2(qs), ld_u32_a2(qs + 4), q, ld_u32_a2(b + 2), d, -16.0f * d, w);
}

template <> __device__ __forceinline__ void dq8<T_Q5_1>(const u8* row, int g, float* w) {
    const u8* b = row + 24 * (g >> 2);
    int q = g & 3;
    const u8* qs = b + 8 + 8 * (q & 1);
    five8(ld_u32(qs), ld_u32(qs + 4), q, ld_u32(b + 4), h2f(ld_u16(b)), h2f(ld_u16(b + 2)), w);
}

template <> __device__ __forceinline__ void dq8<T_Q8_0>(const u8* row, int g, float* w) {
    const u8* b = row + 34 * (g >> 2);
    float d = h2f(ld_u16(b));
    const u8* qs = b + 2 + 8 * (g & 3);
    u32 lo = ld_u32_a2(qs), hi = ld_u32_a2(qs + 4);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        w[k] = d * (float)(signed char)((lo >> (8 * k)) & 0xffu);
        w[4 + k] = d * (float)(signed char)((hi >> (8 * k)) & 0xffu);
    }
}

// K-quants: group g is part p = g % 4 (elements l0 = 8p .. 8p+7) of the
// 32-element chunk s = (g / 4) % 8 of super-block g / 32.
template <> __device__ __forceinline__ void dq8<T_Q2_K>(const u8* row, int g, float* w) {
    const u8* b = row + 84 * (g >> 5);
    int s = (g >> 2) & 7, l0 = 8 * (g & 3);
    float d = h2f(ld_u16(b + 80)), dmin = h2f(ld_u16(b + 82));
    u32 sc = b[2 * s + (l0 >> 4)];
    float dl = d * (float)(sc & 15u), ml = dmin * (float)(sc >> 4);
    const u8* qs = b + 16 + 32 * (s >> 2) + l0;
    u32 lo = ld_u32(qs), hi = ld_u32(qs + 4);
    int shift = 2 * (s & 3);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        w[k] = dl * (float)((lo >> (8 * k + shift)) & 3u) - ml;
        w[4 + k] = dl * (float)((hi >> (8 * k + shift)) & 3u) - ml;
    }
}

template <> __device__ __forceinline__ void dq8<T_Q3_K>(const u8* row, int g, float* w) {
    const u8* b = row + 110 * (g >> 5);
    int s = (g >> 2) & 7, l0 = 8 * (g & 3);
    float d = h2f(ld_u16(b + 108));
    const u8* scales = b + 96;
    int sg = 2 * s + (l0 >> 4);
    u32 low = sg < 8 ? (scales[sg] & 15u) : (scales[sg - 8] >> 4);
    u32 high = (scales[8 + (sg & 3)] >> (2 * (sg >> 2))) & 3u;
    float dl = d * (float)((int)(low | (high << 4)) - 32);
    const u8* qs = b + 32 + 32 * (s >> 2) + l0;
    u32 lo = ld_u32_a2(qs), hi = ld_u32_a2(qs + 4);
    u32 hlo = ld_u32_a2(b + l0), hhi = ld_u32_a2(b + l0 + 4);
    int shift = 2 * (s & 3);
#pragma unroll
    for (int k = 0; k < 8; k++) {
        u32 qv = k < 4 ? (lo >> (8 * k)) : (hi >> (8 * (k - 4)));
        u32 hm = k < 4 ? (hlo >> (8 * k)) : (hhi >> (8 * (k - 4)));
        int q = (int)((qv >> shift) & 3u) - (((hm >> s) & 1u) ? 0 : 4);
        w[k] = dl * (float)q;
    }
}

template <> __device__ __forceinline__ void dq8<T_Q4_K>(const u8* row, int g, float* w) {
    const u8* b = row + 144 * (g >> 5);
    int s = (g >> 2) & 7, l0 = 8 * (g & 3);
    float sc, mn;
    get_scale_min_k4(s, b + 4, &sc, &mn);
    float dl = h2f(ld_u16(b)) * sc, ml = h2f(ld_u16(b + 2)) * mn;
    const u8* qs = b + 16 + 32 * (s >> 1) + l0;
    u32 lo = ld_u32(qs), hi = ld_u32(qs + 4);
    int shift = 4 * (s & 1);
#pragma unroll
    for (int k = 0; k < 4; k++) {
        w[k] = dl * (float)((lo >> (8 * k + shift)) & 15u) - ml;
        w[4 + k] = dl * (float)((hi >> (8 * k + shift)) & 15u) - ml;
    }
}

template <> __device__ __forceinline__ void dq8<T_Q5_K>(const u8* row, int g, float* w) {
    const u8* b = row + 176 * (g >> 5);
    int s = (g >> 2) & 7, l0 = 8 * (g & 3);
    float sc, mn;
    get_scale_min_k4(s, b + 4, &sc, &mn);
    float dl = h2f(ld_u16(b)) * sc, ml = h2f(ld_u16(b + 2)) * mn;
    const u8* qs = b + 48 + 32 * (s >> 1) + l0;
    u32 lo = ld_u32(qs), hi = ld_u32(qs + 4);
    u32 hlo = ld_u32(b + 16 + l0), hhi = ld_u32(b + 20 + l0);
    int shift = 4 * (s & 1);
#pragma unroll
    for (int k = 0; k < 8; k++) {
        u32 qv = k < 4 ? (lo >> (8 * k)) : (hi >> (8 * (k - 4)));
        u32 hm = k < 4 ? (hlo >> (8 * k)) : (hhi >> (8 * (k - 4)));
        w[k] = dl * (float)(((qv >> shift) & 15u) | (((hm >> s) & 1u) << 4)) - ml;
    }
}

template <> __device__ __forceinline__ void dq8<T_Q6_K>(const u8* row, int g, float* w) {
    const u8* b = row + 210 * (g >> 5);
    int s = (g >> 2) & 7, l0 = 8 * (g & 3);
    int h = s >> 2, k4 = s & 3;
    float dl = h2f(ld_u16(b + 208)) * (float)(signed char)b[192 + 2 * s + (l0 >> 4)];
    const u8* ql = b + 64 * h + 32 * (k4 & 1) + l0;
    const u8* qh = b + 128 + 32 * h + l0;
    u32 lo = ld_u32_a2(ql), hi = ld_u32_a2(ql + 4), hlo = ld_u32_a2(qh), hhi = ld_u32_a2(qh + 4);
    int lshift = 4 * (k4 >> 1), hshift = 2 * k4;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        u32 qv = k < 4 ? (lo >> (8 * k)) : (hi >> (8 * (k - 4)));
        u32 hm = k < 4 ? (hlo >> (8 * k)) : (hhi >> (8 * (k - 4)));
        int q = (int)(((qv >> lshift) & 15u) | (((hm >> hshift) & 3u) << 4)) - 32;
        w[k] = dl * (float)q;
    }
}
