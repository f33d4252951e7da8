// Mixture-of-experts routing on the device: softmax over the router logits,
// top-k (ties to the lower expert id), optional renormalisation; bucketing of
// the assignments by expert; the weighted sum of the expert outputs added to
// the residual.

#define MOE_MAX_PER_LANE 8

// One warp per token. logits [tokens, n_exp]; ids, wts [tokens, top_k].
extern "C" __global__ void moe_route(const float* logits, int n_tokens, int n_exp, int top_k, int renorm, int* ids,
                                     float* wts) {
    pdl_sync();
    int lane = threadIdx.x & 31;
    int t = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (t >= n_tokens) return;
    const float* lg = logits + (size_t)t * n_exp;
    float p[MOE_MAX_PER_LANE];
    float mx = NEG_INF;
#pragma unroll
    for (int i = 0; i < MOE_MAX_PER_LANE; i++) {
        int e = lane + 32 * i;
        p[i] = e < n_exp ? lg[e] : NEG_INF;
        mx = fmaxf(mx, p[i]);
    }
    mx = warp_max(mx);
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < MOE_MAX_PER_LANE; i++) {
        int e = lane + 32 * i;
        p[i] = e < n_exp ? expf(p[i] - mx) : 0.0f;
        sum += p[i];
    }
    sum = warp_sum(sum);
#pragma unroll
    for (int i = 0; i < MOE_MAX_PER_LANE; i++) {
        int e = lane + 32 * i;
        p[i] = e < n_exp ? p[i] / sum : -1.0f;
    }
    float picked = 0.0f;
    for (int k = 0; k < top_k; k++) {
        // Lane-local best (lowest id on ties), then across the warp.
        float best = -2.0f;
        int be = 0x7fffffff;
#pragma unroll
        for (int i = 0; i < MOE_MAX_PER_LANE; i++) {
            if (p[i] > best) {
                best = p[i];
                be = lane + 32 * i;
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float ob = __shfl_xor_sync(0xffffffffu, best, o);
            int oe = __shfl_xor_sync(0xffffffffu, be, o);
            if (ob > best || (ob == best && oe < be)) {
                best = ob;
                be = oe;
            }
        }
        if (lane == 0) {
            ids[t * top_k + k] = be;
            wts[t * top_k + k] = best;
        }
        picked += best;
        if ((be & 31) == lane) p[be >> 5] = -1.0f;
    }
    if (renorm) {
        __syncwarp();
        if (lane < top_k) wts[t * top_k + lane] /= picked;
    }
}

// Bucket the assignments by expert on the device and cut each expert's run
// into tiles of at most `per_tile`: order[pos] = a and inv[a] = pos (pos:
// the assignment's place in expert order), tiles[3i ..] = (expert, first
// position, count), *n_tiles. One block (1024 threads); shared memory
// 3·(n_exp + 1) ints.
extern "C" __global__ void moe_tiles(const int* ids, int n_assign, int n_exp, int per_tile, u32* order, u32* inv,
                                     u32* tiles, u32* n_tiles) {
    extern __shared__ int tiles_smem[];
    int *count = tiles_smem, *next = count + n_exp + 1, *tile0 = next + n_exp + 1;
    pdl_sync();
    int tid = threadIdx.x, nt = blockDim.x;
    for (int e = tid; e <= n_exp; e += nt) count[e] = 0;
    __syncthreads();
    for (int a = tid; a < n_assign; a += nt) atomicAdd(&count[ids[a]], 1);
    __syncthreads();
    if (tid == 0) {
        int at = 0, tl = 0;
        for (int e = 0; e < n_exp; e++) {
            next[e] = at;
            tile0[e] = tl;
            at += count[e];
            tl += (count[e] + per_tile - 1) / per_tile;
        }
        *n_tiles = tl;
    }
    __syncthreads();
    for (int e = tid; e < n_exp; e += nt)
        for (int off = 0, i = 0; off < count[e]; off += per_tile, i++) {
            u32* tt = tiles + 3 * (tile0[e] + i);
            tt[0] = e;
            tt[1] = next[e] + off;
            tt[2] = min(per_tile, count[e] - off);
        }
    __syncthreads();
    for (int a = tid; a < n_assign; a += nt) {
        int pos = atomicAdd(&next[ids[a]], 1);
        order[pos] = a;
        inv[a] = pos;
    }
}

// res[t, i] += sum_k wts[t, k] * y[t * top_k + k, i] (slots in order).
extern "C" __global__ void moe_combine(float* res, const float* y, const float* wts, int n_tokens, int hidden,
                                       int top_k) {
    pdl_sync();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_tokens * hidden) return;
    int t = i / hidden, c = i % hidden;
    float s = 0.0f;
#pragma unroll 8
    for (int k = 0; k < top_k; k++) s += wts[t * top_k + k] * y[((size_t)t * top_k + k) * hidden + c];
    res[i] += s;
}

// Rows of x in expert order, as f16 for the grouped GEMMs of a large batch:
// out[i] = f16(x[order[i] / top_k]). grid: n_assign; block: 256.
extern "C" __global__ void moe_gather_f16(const float* x, const u32* order, u16* out, int hidden, int top_k) {
    pdl_sync();
    const float* src = x + (size_t)(order[blockIdx.x] / top_k) * hidden;
    u16* o = out + (size_t)blockIdx.x * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) o[i] = f2h(src[i]);
}

// As moe_combine, with the expert outputs in expert order: row of
// assignment a is y[inv[a]].
extern "C" __global__ void moe_combine_sorted(float* res, const float* y, const float* wts, const u32* inv, int n_tokens,
                                              int hidden, int top_k) {
    pdl_sync();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_tokens * hidden) return;
    int t = i / hidden, c = i % hidden;
    float s = 0.0f;
    for (int k = 0; k < top_k; k++) s += wts[t * top_k + k] * y[(size_t)inv[t * top_k + k] * hidden + c];
    res[i] += s;
}
