// Sampling rows of logits on the device: temperature, top-k, top-p, min-p
// and a seeded Gumbel-max draw, one block per row. The same algorithm as the
// host's `sample_row` (src/sample.rs, which states it in full); only integer
// counts and fixed-order f64 sums decide, so a row always gives the same id.
//
// Passes over the row (SAMPLE_ILP loads in flight per thread): max and
// argmax; log-sum-exp, the number of candidates and the first top-k
// histogram; top-k (radix select, 8 bits of the keys a pass); top-p
// (bisection over the keys, 16 thresholds a pass, only the values between
// the bounds exponentiated); the draw. As soon as the values still in play
// are few (short rows, a top-k or top-p bracket narrowed down) they are
// gathered into shared memory, and the rest runs there.

#define SAMPLE_THREADS 512
#define SAMPLE_WARPS (SAMPLE_THREADS / 32)
#define SAMPLE_ILP 8
// Values gathered into shared memory at most (12 bytes each).
#define SAMPLE_CAP 2048
// Candidates: tempered value at most 45 below the best (see PRUNE in sample.rs).
#define SAMPLE_PRUNE (-45.0f)
// Only values at most 41 below the best can win a draw (see REACH).
#define SAMPLE_REACH (-41.0f)
#define SAMPLE_POS_INF __int_as_float(0x7f800000)

__device__ __forceinline__ u64 sample_splitmix(u64 x) {
    u64 z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The uniform (0, 1) of 52 random bits, centred in their cell.
__device__ __forceinline__ double sample_uniform(u64 m) { return __dmul_rn(__dadd_rn((double)m, 0.5), 0x1p-52); }

__device__ __forceinline__ double sample_gumbel(double u) { return -log(-log(u)); }

// The tempered value: NaN -> -inf, -0 -> +0 (equal values, equal keys).
// Rounded multiply: no contraction with a later subtraction, as on the host.
__device__ __forceinline__ float sample_tempered(float x, float inv_t) {
    float w = __fmul_rn(x, inv_t);
    if (w != w) return NEG_INF;
    return w == 0.0f ? 0.0f : w;
}

// Order-preserving image of a float (no NaN) in the unsigned integers.
__device__ __forceinline__ u32 sample_key(float w) {
    u32 b = __float_as_uint(w);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// hist[bin] += 1, one atomic per distinct bin among the lanes here.
__device__ __forceinline__ void sample_hist_add(u32* hist, u32 bin) {
    const u32 peers = __match_any_sync(__activemask(), bin);
    if ((threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&hist[bin], (u32)__popc(peers));
}

// The float of a key (inverse of sample_key).
__device__ __forceinline__ float sample_unkey(u32 k) { return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }

// f(i, row[i]) for this thread's i = tid, tid + SAMPLE_THREADS, ... in
// increasing order (so per-thread sums keep one order), with SAMPLE_ILP
// loads issued before any is used.
template <typename F>
__device__ __forceinline__ void sample_each(const float* row, int cols, F f) {
    for (int base = threadIdx.x; base < cols; base += SAMPLE_THREADS * SAMPLE_ILP) {
        float v[SAMPLE_ILP];
#pragma unroll
        for (int u = 0; u < SAMPLE_ILP; ++u) {
            int i = base + u * SAMPLE_THREADS;
            v[u] = i < cols ? row[i] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < SAMPLE_ILP; ++u) {
            int i = base + u * SAMPLE_THREADS;
            if (i < cols) f(i, v[u]);
        }
    }
}

// The values still in play, gathered into shared memory in a fixed order.
struct SampleList {
    u32 key[SAMPLE_CAP];
    float d[SAMPLE_CAP];
    int id[SAMPLE_CAP];
};

// f(i, d, key) for each candidate (d = w - best >= PRUNE) with key >= from:
// from the list when `n >= 0` (its n entries), else from the row.
template <typename F>
__device__ __forceinline__ void sample_each_kept(const SampleList& l, int n, const float* row, int cols, float inv_t, float wb, u32 from, F f) {
    if (n >= 0) {
        for (int j = threadIdx.x; j < n; j += SAMPLE_THREADS) {
            if (l.key[j] >= from) f(l.id[j], l.d[j], l.key[j]);
        }
        return;
    }
    sample_each(row, cols, [&](int i, float v) {
        float w = sample_tempered(v, inv_t);
        if (w == NEG_INF) return;
        float d = __fsub_rn(w, wb);
        u32 k = sample_key(w);
        if (d < SAMPLE_PRUNE || k < from) return;
        f(i, d, k);
    });
}

__device__ __forceinline__ double sample_warp_sum(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Block-wide sums of N values per thread; every thread gets the totals.
// Fixed order (warp butterflies, then the warps' totals by warp), so the
// same values give the same bits. `sh` holds N·32 values.
template <int N, typename T>
__device__ __forceinline__ void sample_block_sums(T* v, T* sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int j = 0; j < N; ++j) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v[j] += __shfl_xor_sync(0xffffffffu, v[j], o);
    }
    __syncthreads();
    if (lane == 0) {
#pragma unroll
        for (int j = 0; j < N; ++j) sh[j * 32 + warp] = v[j];
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < N; ++j) {
        v[j] = lane < SAMPLE_WARPS ? sh[j * 32 + lane] : (T)0;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v[j] += __shfl_xor_sync(0xffffffffu, v[j], o);
    }
}

// (v, i) <- the larger of (v, i) and (v2, i2), the lower index on ties.
template <typename T>
__device__ __forceinline__ void sample_arg_merge(T& v, int& i, T v2, int i2) {
    if (v2 > v || (v2 == v && i2 < i)) {
        v = v2;
        i = i2;
    }
}

// Block-wide argmax of (v, i); every thread gets the winner.
template <typename T>
__device__ __forceinline__ void sample_block_argmax(T& v, int& i, T* shv, int* shi) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sample_arg_merge(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
    __syncthreads();
    if (lane == 0) {
        shv[warp] = v;
        shi[warp] = i;
    }
    __syncthreads();
    v = shv[0];
    i = shi[0];
    for (int w = 1; w < SAMPLE_WARPS; ++w) sample_arg_merge(v, i, shv[w], shi[w]);
}

// Gathers the candidates with key >= from into `l` (at most SAMPLE_CAP; the
// caller has counted them) and sorts them by id, so that their order (and
// so every sum over them) does not depend on the order of arrival. Returns
// their number. `slot` is a shared counter.
__device__ __forceinline__ int sample_gather(const float* row, int cols, float inv_t, float wb, u32 from, SampleList& l, u32* slot) {
    const int lane = threadIdx.x & 31;
    __syncthreads();
    if (threadIdx.x == 0) *slot = 0;
    __syncthreads();
    sample_each_kept(l, -1, row, cols, inv_t, wb, from, [&](int i, float d, u32 k) {
        // One atomic per warp for the lanes here.
        const u32 act = __activemask();
        const int leader = __ffs(act) - 1;
        u32 base = 0;
        if (lane == leader) base = atomicAdd(slot, (u32)__popc(act));
        const u32 pos = __shfl_sync(act, base, leader) + __popc(act & ((1u << lane) - 1u));
        if (pos < SAMPLE_CAP) {
            l.key[pos] = k;
            l.d[pos] = d;
            l.id[pos] = i;
        }
    });
    __syncthreads();
    const int n = min((int)*slot, SAMPLE_CAP);
    int p = 1;
    while (p < n) p <<= 1;
    for (int j = n + threadIdx.x; j < p; j += SAMPLE_THREADS) {
        l.key[j] = 0;
        l.d[j] = NEG_INF;
        l.id[j] = 0x7fffffff;
    }
    __syncthreads();
    // Bitonic sort of the p entries by id (ids are distinct; pads last).
    for (int k = 2; k <= p; k <<= 1) {
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = threadIdx.x; i < p; i += SAMPLE_THREADS) {
                const int o = i ^ j;
                if (o > i && ((l.id[i] > l.id[o]) == ((i & k) == 0))) {
                    const u32 tk = l.key[i];
                    const float td = l.d[i];
                    const int ti = l.id[i];
                    l.key[i] = l.key[o];
                    l.d[i] = l.d[o];
                    l.id[i] = l.id[o];
                    l.key[o] = tk;
                    l.d[o] = td;
                    l.id[o] = ti;
                }
            }
            __syncthreads();
        }
    }
    return n;
}

// One row per block of SAMPLE_THREADS. `specs` holds 5 words per row:
// [inv_t bits | top_k << 32, top_p (f64; >= 1: off), min_p (f64; 0: off),
// seed, step]; inv_t = 0 asks for the greedy choice. out[3r] = the id (int
// bits; -1 if none), out[3r + 1] = its raw logit, out[3r + 2] = the raw
// row's log-sum-exp (f32 exponentials summed in f64, as RowArgmax::of).
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) sample_rows(const float* x, int cols, const u64* specs, float* out) {
    pdl_sync();
    __shared__ double shd[16 * 32];
    __shared__ int shn[16 * 32];
    __shared__ float shf[32];
    __shared__ int shi[32];
    __shared__ u32 hist[256];
    __shared__ u32 pick[3];
    __shared__ u32 slot;
    __shared__ SampleList list;
    const int tid = threadIdx.x;
    const float* row = x + (size_t)blockIdx.x * cols;
    const u64* sp = specs + 5 * (size_t)blockIdx.x;
    const float inv_t = __uint_as_float((u32)sp[0]);
    const u32 top_k = (u32)(sp[0] >> 32);
    const double top_p = __longlong_as_double((long long)sp[1]);
    const double min_p = __longlong_as_double((long long)sp[2]);
    const bool greedy = !(inv_t > 0.0f);
    const float t = greedy ? 1.0f : inv_t;

    // The raw maximum (NaN skipped) and the largest tempered value with its
    // lowest index (for the greedy choice, the raw argmax).
    float rmax = NEG_INF, wb = NEG_INF;
    int wi = 0x7fffffff;
    sample_each(row, cols, [&](int i, float v) {
        if (v == v) rmax = fmaxf(rmax, v);
        float w = sample_tempered(v, t);
        if (w > wb) {
            wb = w;
            wi = i;
        }
    });
    sample_block_argmax(wb, wi, shf, shi);
    {
        int unused = 0;
        sample_block_argmax(rmax, unused, shf, shi);
    }

    // Σ exp(x - rmax), the number of candidates and (for top-k) the
    // histogram of their keys' top 8 bits.
    const bool use_k = !greedy && top_k > 0;
    double acc[16];
    int cnt[16];
    acc[0] = 0.0;
    cnt[0] = 0;
    for (int b = tid; b < 256; b += SAMPLE_THREADS) hist[b] = 0;
    __syncthreads();
    sample_each(row, cols, [&](int i, float v) {
        if (v == v) acc[0] += (double)expf(__fsub_rn(v, rmax));
        float w = sample_tempered(v, t);
        if (w == NEG_INF || __fsub_rn(w, wb) < SAMPLE_PRUNE) return;
        ++cnt[0];
        if (use_k) sample_hist_add(hist, sample_key(w) >> 24);
    });
    sample_block_sums<1>(acc, shd);
    sample_block_sums<1>(cnt, shn);
    const float lse = rmax == NEG_INF ? NEG_INF : (float)((double)rmax + log(acc[0]));
    int id = wb == NEG_INF ? -1 : wi;

    if (!greedy && wb != NEG_INF && wb != SAMPLE_POS_INF) {
        // In play: the candidates with key >= from (n_from of them); in
        // `list` when n_list >= 0.
        u32 from = 0, n_from = (u32)cnt[0];
        int n_list = -1;

        // top-k: the key of the k-th largest candidate, 8 bits a pass (the
        // first histogram came with the count).
        if (top_k > 0 && top_k < n_from) {
            u32 prefix = 0, mask = 0, krem = top_k, above = 0;
            for (int shift = 24; shift >= 0; shift -= 8) {
                if (shift < 24) {
                    for (int b = tid; b < 256; b += SAMPLE_THREADS) hist[b] = 0;
                    __syncthreads();
                    sample_each_kept(list, n_list, row, cols, inv_t, wb, 0, [&](int, float, u32 k) {
                        if ((k & mask) == prefix) sample_hist_add(hist, (k >> shift) & 255u);
                    });
                }
                __syncthreads();
                if (tid == 0) {
                    u32 cum = 0;
                    int b = 255;
                    for (; b > 0; --b) {
                        if (cum + hist[b] >= krem) break;
                        cum += hist[b];
                    }
                    // (`above`: thread 0's count of keys above the prefix.)
                    above += cum;
                    pick[0] = (u32)b;
                    pick[1] = krem - cum;
                    pick[2] = above + hist[b];
                }
                __syncthreads();
                prefix |= pick[0] << shift;
                mask |= 255u << shift;
                krem = pick[1];
                // In play now: the keys >= prefix (above it, or sharing it).
                n_from = pick[2];
                __syncthreads();
                if (n_list < 0 && n_from <= SAMPLE_CAP) n_list = sample_gather(row, cols, inv_t, wb, prefix, list, &slot);
            }
            from = prefix;
        }
        if (n_list < 0 && n_from <= SAMPLE_CAP) n_list = sample_gather(row, cols, inv_t, wb, from, list, &slot);

        // top-p: the largest key T with mass(keys >= T) >= top_p · Z, by
        // bisection: M(lo) >= target > M(hi). A pass sums, for 16 rising
        // thresholds t_0 = lo <= t_j < hi, the e (and counts) of keys in
        // [t_j, hi), and adds M(hi) (n_hi). The first passes space the
        // thresholds evenly in value (from where the tail's mass is surely
        // below (1 - top_p)·Z: n·e^d < (1 - top_p), as Z >= 1), later ones
        // evenly in keys (8 passes narrow any bracket to one key).
        u32 pkey = from;
        if (top_p < 1.0) {
            u32 lo = from, hi = sample_key(wb) + 1, n_hi = 0;
            double m_hi = 0.0, target = 0.0;
            const float d_low = fminf(-1.0f, fmaxf(SAMPLE_PRUNE, (float)log((1.0 - top_p) / (double)n_from) - 1.0f));
            for (int pass = 0; pass < 64 && hi - lo > 1; ++pass) {
                const u64 span = hi - lo;
                u32 tj[16];
                tj[0] = lo;
                bool by_value = pass < 4 && span > 64;
                if (by_value) {
                    const float b = sample_unkey(hi - 1);
                    float a = pass == 0 ? __fadd_rn(wb, d_low) : sample_unkey(lo);
                    if (pass == 0 && lo > sample_key(a)) a = sample_unkey(lo);
                    a = fminf(a, b);
                    const float step = __fmul_rn(__fsub_rn(b, a), 0.0625f);
#pragma unroll
                    for (int j = 1; j < 16; ++j) tj[j] = min(max(sample_key(__fadd_rn(a, __fmul_rn(step, (float)j))), lo), hi - 1);
                    by_value = tj[15] > lo;
                }
                if (!by_value) {
#pragma unroll
                    for (int j = 1; j < 16; ++j) tj[j] = lo + (u32)((span * j) >> 4);
                }
#pragma unroll
                for (int j = 0; j < 16; ++j) {
                    acc[j] = 0.0;
                    cnt[j] = 0;
                }
                sample_each_kept(list, n_list, row, cols, inv_t, wb, lo, [&](int, float d, u32 k) {
                    if (k >= hi) return;
                    const double e = exp((double)d);
#pragma unroll
                    for (int j = 0; j < 16; ++j) {
                        if (k >= tj[j]) {
                            acc[j] += e;
                            ++cnt[j];
                        }
                    }
                });
                sample_block_sums<16>(acc, shd);
                sample_block_sums<16>(cnt, shn);
                // The first pass covers every value in play: acc[0] = Z.
                if (pass == 0) target = top_p * acc[0];
                // The last threshold whose mass reaches the target (masses
                // fall with j) and the next; unrolled, to stay in registers.
                bool reach = true;
                double m_next = m_hi;
                u32 n_next = n_hi, n_lo = n_hi + cnt[0], t_lo = lo, t_hi = hi;
#pragma unroll
                for (int j = 1; j < 16; ++j) {
                    const double m = m_hi + acc[j];
                    if (reach && m < target) {
                        m_next = m;
                        n_next = n_hi + cnt[j];
                        t_hi = tj[j];
                    }
                    reach = reach && m >= target;
                    if (reach) {
                        n_lo = n_hi + cnt[j];
                        t_lo = tj[j];
                    }
                }
                lo = t_lo;
                hi = t_hi;
                m_hi = m_next;
                n_hi = n_next;
                if (n_list < 0 && n_lo <= SAMPLE_CAP) n_list = sample_gather(row, cols, inv_t, wb, lo, list, &slot);
            }
            pkey = lo;
        }

        // The draw: the kept value maximizing (w - best) + Gumbel noise. The
        // best is always kept; its key is a lower bound of the winner's.
        const u64 stream = sample_splitmix(sample_splitmix(sp[3]) ^ sp[4]);
        double bk = sample_gumbel(sample_uniform(sample_splitmix(stream ^ (u64)(u32)wi) >> 12));
        float bkf = (float)bk;
        int bi = wi;
        sample_each_kept(list, n_list, row, cols, inv_t, wb, pkey, [&](int i, float d, u32) {
            // The noise is at most 36.74: values further below the best key
            // so far cannot win (f32 margins far above rounding).
            if (d < SAMPLE_REACH || d < bkf - 36.75f) return;
            const u64 m = sample_splitmix(stream ^ (u64)(u32)i) >> 12;
            // The key is at most d - ln(1 - u) <= d - e·ln 2 with 2^e <= 1 - u
            // (read off the bits): skip when that is below the best key.
            const u64 r = 0xFFFFFFFFFFFFFull - m;
            const int e2 = r == 0 ? -53 : (63 - __clzll((long long)r)) - 52;
            if ((float)e2 * 0.6931472f > d - bkf + 1e-3f) return;
            if (min_p > 0.0 && exp((double)d) < min_p) return;
            const double key = __dadd_rn((double)d, sample_gumbel(sample_uniform(m)));
            sample_arg_merge(bk, bi, key, i);
            bkf = (float)bk;
        });
        sample_block_argmax(bk, bi, shd, shi);
        id = bi;
    }
    if (tid == 0) {
        float* o = out + 3 * (size_t)blockIdx.x;
        o[0] = __int_as_float(id);
        o[1] = id >= 0 ? row[id] : NEG_INF;
        o[2] = lse;
    }
}
