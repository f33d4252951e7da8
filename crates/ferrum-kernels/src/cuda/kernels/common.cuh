// Shared helpers of Ferrum's CUDA kernels. The sources are compiled at run
// time by NVRTC as one translation unit and include no CUDA headers, so the
// few half-precision conversions needed are written as inline PTX.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef signed char i8;
typedef unsigned long long u64;

#define WARP 32
#define NEG_INF (-__int_as_float(0x7f800000))

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float4 f4(float a, float b, float c, float d) {
    float4 v;
    v.x = a;
    v.y = b;
    v.z = c;
    v.w = d;
    return v;
}

__device__ __forceinline__ float bf2f(u16 h) { return __int_as_float(((u32)h) << 16); }

// Little-endian loads from 2-byte-aligned addresses (block layouts of the
// legacy quants and Q6_K are only 2-byte aligned).
__device__ __forceinline__ u16 ld_u16(const u8* p) { return *(const u16*)p; }
__device__ __forceinline__ u32 ld_u32_a2(const u8* p) {
    const u16* q = (const u16*)p;
    return (u32)q[0] | ((u32)q[1] << 16);
}
__device__ __forceinline__ u32 ld_u32(const u8* p) { return *(const u32*)p; }

// The N (even) little-endian words at the 2-byte-aligned address p, from
// N / 2 + 1 aligned 8-byte loads shifted into place (instead of 2N 16-bit
// loads). Reads the aligned 8-byte words around [p, p + 4N): up to 6 bytes
// before p (never before an 8-byte-aligned buffer start) and 8 after, at
// most 12 bytes past the last block of a weight (Q5_0 / Q5_1); weight
// buffers carry 16 zero bytes after their data (WEIGHT_PAD in mod.rs).
template <int N>
__device__ __forceinline__ void ld_words_a2(const u8* p, u32* out) {
    const uint2* q = (const uint2*)((size_t)p & ~(size_t)7);
    u32 off = (u32)(size_t)p & 7u;
    u32 sh = (off & 2u) << 3;
    bool up = off >= 4;
    u32 w[N + 2];
#pragma unroll
    for (int i = 0; i <= N / 2; i++) {
        uint2 v = q[i];
        w[2 * i] = v.x;
        w[2 * i + 1] = v.y;
    }
#pragma unroll
    for (int i = 0; i < N; i++) {
        u32 lo = up ? w[i + 1] : w[i], hi = up ? w[i + 2] : w[i + 1], r;
        asm("shf.r.wrap.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(lo), "r"(hi), "r"(sh));
        out[i] = r;
    }
}

// Load through L2 (values other blocks of this grid wrote; L1 is not coherent).
__device__ __forceinline__ float ld_cg(const float* p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Reduction over a block of blockDim.x threads (a multiple of 32, at most
// 1024) by the warp reduction WarpOp, whose identity is `id`; every thread
// gets the result. `scratch` holds 32 floats of shared memory.
template <float (*WarpOp)(float)>
__device__ __forceinline__ float block_reduce(float v, float id, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = WarpOp(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int nw = blockDim.x >> 5;
    float t = lane < nw ? scratch[lane] : id;
    return WarpOp(t);
}

__device__ __forceinline__ float block_sum(float v, float* scratch) { return block_reduce<warp_sum>(v, 0.0f, scratch); }
__device__ __forceinline__ float block_max(float v, float* scratch) { return block_reduce<warp_max>(v, NEG_INF, scratch); }

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// Programmatic dependent launch (sm_90+): a kernel may be launched while the
// previous kernel of the stream still runs, so every kernel calls this before
// it touches activations, caches or tables (anything a kernel writes): it
// waits for the previous kernel to finish and its writes to be visible, then
// lets the next kernel launch. Only immutable weights may be read before.
// A no-op on older GPUs and for kernels launched the ordinary way.
__device__ __forceinline__ void pdl_sync() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Ask L2 for the `n` bytes at `p` (immutable weights, before pdl_sync), one
// 128-byte line per lane of the calling warp.
__device__ __forceinline__ void prefetch_l2(const u8* p, size_t n) {
    int lane = threadIdx.x & 31;
    const u8* end = p + n;
    for (const u8* a = p + 128 * lane; a < end; a += 128 * WARP) asm volatile("prefetch.global.L2 [%0];" ::"l"(a));
}
