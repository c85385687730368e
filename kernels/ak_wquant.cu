// ak_wquant.cu — the general quantizer on the GPU: weight quantization byte-identical to aq_quantize_w
// (every integer mode, any N, K, even group), dequantization of device quantized tensors to fp16, and
// fake-quant (quantize -> dequantize -> fp16) of activations and weights, plus the device check that
// a channel permutation is a permutation. Source: NUMERICS.md "Symmetric quantizer", "Mixed
// granularity", "Atom-style W4Ax"; quant/NUMERICS.md clarifications 1, 2, 5, 6. The arithmetic copies
// quant/aq_quant.c (aq_quant_group, quant_mixed_w, deq_part) operation for operation:
//   amax = max |v| (exact), t = amax·α (__fmul_rn, skipped for α = 1), s32 = t / qmax (__fdiv_rn),
//   s = fp16_rne(min(s32, 65504)) (__float2half_rn), s == 0 -> codes 0, else
//   q = clamp(rintf(__fdiv_rn(v, s)), qmin, qmax) in the float domain (rintf: round half to even);
//   MIXED: f_j = t / 7, S = fp16_rne(min(max_j f_j / 15, 65504)), u_j = clamp(rne(f_j / S), 1, 15)
//   (all 1 when S == 0), codes with the divisor S·u_j (__fmul_rn, exact);
//   dequantized value float(q)·float(s) (MIXED: float(q)·(float(S)·u)), then __float2half_rn.
// Layout of the work: one warp per (row, group) — it reads the group (through the permutation for
// ATOM), reduces the absmax with shuffles, then writes codes (4-bit: a lane packs the even/odd pair of
// one byte; groups start at even columns because group sizes are even) or dequantized fp16 values.
// This path is for one-time weight work and for the fake-quant simulation; the per-token activation
// quantizer feeding the integer GEMM is ak_quant.cu.
#include "ak_internal.cuh"

#include <cstdio>
#include <cstdlib>

namespace {

#define DEVI __device__ __forceinline__

constexpr int WQ_WARPS = 8;   // warps per block of wq_kernel / mixed_su_kernel

enum { WQ_CODES = 0, WQ_MIXF = 1, WQ_MIXCODES = 2, WQ_FAKE = 3 };

struct wq_args {
    const uint16_t *x;                // [rows, K] fp16 input
    int rows, K;
    const int32_t *perm;              // [K] or nullptr (identity)
    int col0, cols;                   // permuted columns [col0, col0 + cols) of this part
    int bits, g, G;                   // code width, group length (may exceed cols), groups
    float alpha;                      // clip ratio
    uint8_t *codes;                   // CODES / MIXCODES: [rows, rb]
    int rb;
    uint16_t *scales;                 // CODES: [rows, G] fp16 out; MIXCODES: [rows] S (in)
    const uint8_t *sub;               // MIXCODES: [rows, G] u (in)
    float *f;                         // MIXF: [rows, G] f_j out
    uint16_t *out;                    // FAKE: [rows, K] fp16, original column order
    unsigned long long *bad;          // min flat index of a non-finite input (stays ~0ull if none)
    unsigned long long *ovf;          // FAKE: min flat index of an output that overflows fp16
    const unsigned long long *perm_bad;   // nullptr, or the perm check's flag: skip unless ~0ull
};

DEVI float h2f(uint16_t b) { return __half2float(__ushort_as_half(b)); }

// quant/aq_quant.c rne_clamp: rintf (half to even) then clamp in the float domain.
DEVI int rne_clamp(float r, int lo, int hi) {
    const float v = rintf(r);
    if (!(v >= (float)lo)) return lo;
    if (v > (float)hi) return hi;
    return (int)v;
}

template <int KIND>
__global__ void __launch_bounds__(WQ_WARPS * 32) wq_kernel(const wq_args a) {
    if (a.perm_bad && *a.perm_bad != ~0ull) return;
    const int lane = threadIdx.x & 31;
    const long long unit = (long long)blockIdx.x * WQ_WARPS + (threadIdx.x >> 5);
    if (unit >= (long long)a.rows * a.G) return;
    const int r = (int)(unit / a.G), j = (int)(unit % a.G);
    const int k0 = (int)((long long)j * a.g);
    const int k1 = (int)min((long long)k0 + a.g, (long long)a.cols);
    const uint16_t *xr = a.x + (size_t)r * a.K;
    const size_t rowflat = (size_t)r * a.K;
    auto col = [&](int c) { return a.perm ? a.perm[a.col0 + c] : a.col0 + c; };

    float amax = 0.0f;
    if (KIND != WQ_MIXCODES) {
        for (int c = k0 + lane; c < k1; c += 32) {
            const int cc = col(c);
            const uint16_t b = xr[cc];
            if ((b & 0x7c00u) == 0x7c00u) { atomicMin(a.bad, (unsigned long long)(rowflat + cc)); continue; }
            amax = fmaxf(amax, fabsf(h2f(b)));
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
    }
    const int qmax = (1 << (a.bits - 1)) - 1, qmin = -(1 << (a.bits - 1));
    const float t = a.alpha == 1.0f ? amax : __fmul_rn(amax, a.alpha);
    float sc;   // the divisor of the codes (0: every code is 0) and the dequantization scale
    if (KIND == WQ_MIXF) {
        if (lane == 0) a.f[(size_t)r * a.G + j] = __fdiv_rn(t, 7.0f);
        return;
    } else if (KIND == WQ_MIXCODES) {
        const float S = h2f(a.scales[r]);
        sc = S == 0.0f ? 0.0f : __fmul_rn(S, (float)a.sub[(size_t)r * a.G + j]);   // exact: 11 x 4 bits
    } else {
        const float s32 = __fdiv_rn(t, (float)qmax);
        const __half s = __float2half_rn(s32 < 65504.0f ? s32 : 65504.0f);
        sc = __half2float(s);
        if (KIND == WQ_CODES && lane == 0) a.scales[(size_t)r * a.G + j] = __half_as_ushort(s);
    }
    auto code = [&](float v) { return sc == 0.0f ? 0 : rne_clamp(__fdiv_rn(v, sc), qmin, qmax); };

    if (KIND == WQ_FAKE) {
        for (int c = k0 + lane; c < k1; c += 32) {
            const int cc = col(c);
            const __half h = __float2half_rn(__fmul_rn((float)code(h2f(xr[cc])), sc));
            if (__hisinf(h)) atomicMin(a.ovf, (unsigned long long)(rowflat + cc));
            a.out[rowflat + cc] = __half_as_ushort(h);
        }
    } else if (a.bits == 4) {      // k0 is even: a lane owns the (even, odd) pair of one byte
        uint8_t *dst = a.codes + (size_t)r * a.rb;
        for (int c = k0 + 2 * lane; c < k1; c += 64) {
            const int q0 = code(h2f(xr[col(c)]));
            const int q1 = c + 1 < k1 ? code(h2f(xr[col(c + 1)])) : 0;   // odd part end: high nibble 0
            dst[c >> 1] = (uint8_t)((q0 & 15) | ((q1 & 15) << 4));
        }
    } else {
        uint8_t *dst = a.codes + (size_t)r * a.rb;
        for (int c = k0 + lane; c < k1; c += 32) dst[c] = (uint8_t)(int8_t)code(h2f(xr[col(c)]));
    }
}

// MIXED weights, one warp per row: S from the f_j of the row, then every u_j.
__global__ void __launch_bounds__(WQ_WARPS * 32) mixed_su_kernel(const float *f, int rows, int G, uint16_t *S,
                                                                  uint8_t *sub) {
    const int lane = threadIdx.x & 31;
    const long long r = (long long)blockIdx.x * WQ_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    const float *fr = f + (size_t)r * G;
    float fmax = 0.0f;
    for (int j = lane; j < G; j += 32) fmax = fmaxf(fmax, fr[j]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) fmax = fmaxf(fmax, __shfl_xor_sync(0xffffffffu, fmax, off));
    const float S32 = __fdiv_rn(fmax, 15.0f);
    const __half Sh = __float2half_rn(S32 < 65504.0f ? S32 : 65504.0f);
    const float Sf = __half2float(Sh);
    if (lane == 0) S[r] = __half_as_ushort(Sh);
    for (int j = lane; j < G; j += 32)
        sub[(size_t)r * G + j] = (uint8_t)(Sf == 0.0f ? 1 : rne_clamp(__fdiv_rn(fr[j], Sf), 1, 15));
}

// Dequantize one part: out[r, perm[col0 + c]] = fp16(float(q)·s), one thread per element.
struct dq_args {
    const uint8_t *codes;
    int rb;
    const uint16_t *scales;            // [rows, G], or [rows] S when sub
    const uint8_t *sub;                // [rows, G] or nullptr
    int rows, cols, bits, group, G, col0, K;
    const int32_t *perm;
    uint16_t *out;                     // [rows, K]
    unsigned long long *ovf;
};

__global__ void dq_kernel(const dq_args a) {
    const size_t n = (size_t)a.rows * a.cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int r = (int)(i / a.cols), c = (int)(i % a.cols), j = c / a.group;
        int q;
        if (a.bits == 4) {
            const uint8_t b = a.codes[(size_t)r * a.rb + (c >> 1)];
            q = (((c & 1) ? (b >> 4) : (b & 15)) ^ 8) - 8;
        } else {
            q = (int8_t)a.codes[(size_t)r * a.rb + c];
        }
        float v;
        if (a.sub) v = __fmul_rn((float)q, __fmul_rn(h2f(a.scales[r]), (float)a.sub[(size_t)r * a.G + j]));
        else v = __fmul_rn((float)q, h2f(a.scales[(size_t)r * a.G + j]));
        const int cc = a.perm ? a.perm[a.col0 + c] : a.col0 + c;
        if ((unsigned)cc >= (unsigned)a.K) continue;   // a perm validated at quantization; never out of range
        const __half h = __float2half_rn(v);
        if (__hisinf(h)) atomicMin(a.ovf, (unsigned long long)r * a.K + cc);
        a.out[(size_t)r * a.K + cc] = __half_as_ushort(h);
    }
}

// out = x with a non-finite check (fake-quant of fp16 / weight-only activations). out may equal x.
__global__ void copy_check_kernel(const uint16_t *x, uint16_t *out, size_t n, unsigned long long *bad) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const uint16_t b = x[i];
        if ((b & 0x7c00u) == 0x7c00u) atomicMin(bad, (unsigned long long)i);
        out[i] = b;
    }
}

// One block: a bitmap of K bits in shared memory; an index whose entry is out of range or already
// set is recorded (atomicMin, so the smallest such index among those seen).
__global__ void __launch_bounds__(1024) perm_check_kernel(const int32_t *perm, int K, unsigned long long *flag) {
    extern __shared__ unsigned bm[];
    const int nw = (K + 31) / 32;
    for (int i = threadIdx.x; i < nw; i += blockDim.x) bm[i] = 0u;
    __syncthreads();
    for (int i = threadIdx.x; i < K; i += blockDim.x) {
        const int p = perm[i];
        if (p < 0 || p >= K) { atomicMin(flag, (unsigned long long)i); continue; }
        const unsigned bit = 1u << (p & 31);
        if (atomicOr(&bm[p >> 5], bit) & bit) atomicMin(flag, (unsigned long long)i);
    }
}

int launched(const char *op, const char *what, char *err) {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) return 0;
    if (err) snprintf(err, AX_ERR_LEN, "%s: %s: kernel launch failed: %s", op, what, cudaGetErrorString(e));
    return -1;
}

template <int KIND>
int launch_wq(const wq_args &a, cudaStream_t st, const char *op, const char *what, char *err) {
    const long long units = (long long)a.rows * a.G, blocks = (units + WQ_WARPS - 1) / WQ_WARPS;
    if (blocks > 0x7fffffffLL) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: %s: %lld groups exceed the grid", op, what, units);
        return -1;
    }
    if (blocks > 0) wq_kernel<KIND><<<(unsigned)blocks, WQ_WARPS * 32, 0, st>>>(a);
    return launched(op, what, err);
}

const char *nz(const char *what, const char *dflt) { return what && *what ? what : dflt; }

// One part of a quantize/fake-quant call for (mode, X/W, K), from the shared layout (ak_internal.cuh).
wq_args part_args(const aq_mode *m, bool is_w, const uint16_t *x, int rows, int K, const int32_t *perm, int part) {
    const qlayout L = layout_of(m, is_w, K);
    wq_args a;
    memset(&a, 0, sizeof a);
    a.x = x; a.rows = rows; a.K = K; a.perm = perm;
    a.col0 = part ? L.cols[0] : 0;
    a.cols = L.cols[part];
    a.bits = L.bits[part];
    a.g = L.group[part];
    a.G = (a.cols + a.g - 1) / a.g;
    a.alpha = part ? m->outl.clip : (is_w ? m->w.clip : m->x.clip);
    return a;
}

// Common argument checks of the device quantize/fake-quant calls; -1 with err.
int check_args(const char *op, const char *what, const aq_mode *m, bool need_int, const void *x, const void *out,
               int rows, int K, const int32_t *perm, char *err) {
    if (!m || !x || !out || rows < 1 || K < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: %s: bad shape [%d, %d] or NULL mode/data/output", op, what, rows, K);
        return -1;
    }
    if (need_int && !aq_mode_is_integer(m)) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: %s: mode '%s' has no integer quantization", op, what, m->name);
        return -1;
    }
    if (m->permuted) {
        if (!perm) {
            if (err) snprintf(err, AX_ERR_LEN, "%s: %s: atom mode '%s' needs a channel permutation perm [%d]", op, what, m->name, K);
            return -1;
        }
        if (K - m->outliers < 1 || K > AK_PERM_MAX_K) {
            if (err) snprintf(err, AX_ERR_LEN, "%s: %s: K = %d must leave main channels next to %d outliers and be <= %d (%s)",
                              op, what, K, m->outliers, AK_PERM_MAX_K, m->name);
            return -1;
        }
    } else if (perm) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: %s: a channel permutation is only used by atom modes, not '%s'", op, what, m->name);
        return -1;
    }
    return 0;
}

}  // namespace

int ak_launch_perm_check(const int32_t *perm, int K, unsigned long long *flag, cudaStream_t st, char *err) {
    if (K < 1 || K > AK_PERM_MAX_K) {
        if (err) snprintf(err, AX_ERR_LEN, "perm check: K = %d outside 1..%d", K, AK_PERM_MAX_K);
        return -1;
    }
    const size_t smem = (size_t)(K + 31) / 32 * 4;
    perm_check_kernel<<<1, 1024, smem, st>>>(perm, K, flag);
    return launched("perm check", "perm", err);
}

extern "C" int ak_quantize_w_dev(ak_ctx *c, const aq_mode *m, const uint16_t *w, int N, int K, const int32_t *perm,
                                 ak_dqt *out, const char *what, char *err) {
    static const char *op = "ak_quantize_w_dev";
    what = nz(what, "W");
    if (ak_ctx_use(c, op, err) || check_args(op, what, m, true, w, out, N, K, perm, err)) return -1;
    const qlayout L = layout_of(m, true, K);
    bool ok = !strcmp(out->mode.name, m->name) && out->K == K && out->cap == N && out->main.codes &&
              out->main.cols == L.cols[0] && out->main.bits == L.bits[0] && out->main.group == L.group[0] &&
              (out->main.sub != nullptr) == L.sub && (L.nparts < 2 || (out->outl.codes && out->outl.cols == L.cols[1])) &&
              (!m->permuted || out->perm);
    if (!ok) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: %s: the output tensor is not mode '%s''s weight layout for [%d, %d] "
                          "(ak_dqt_alloc(mode, is_weight = 1, cap = N, K); it has mode '%s', [%d, %d])",
                          op, what, m->name, N, K, out->mode.name, out->cap, out->K);
        return -1;
    }
    const int slot = ak_slot_open(c, op, what, K, w, perm, err);
    if (slot < 0) return -1;
    unsigned long long *fl = c->flags + (size_t)slot * AK_SLOT_WORDS;
    float *f = nullptr;
    int rc = 0;
    if (perm) {
        rc = ak_launch_perm_check(perm, K, fl + 1, c->st, err);
        if (!rc && cudaMemcpyAsync(out->perm, perm, (size_t)K * 4, cudaMemcpyDeviceToDevice, c->st) != cudaSuccess)
            rc = launched(op, "copy of perm", err);
    }
    for (int i = 0; !rc && i < L.nparts; i++) {
        ak_dqmat *d = i ? &out->outl : &out->main;
        wq_args a = part_args(m, true, w, N, K, perm, i);
        a.codes = d->codes; a.rb = (int)dq_row_bytes(d);
        a.bad = fl; a.perm_bad = perm ? fl + 1 : nullptr;
        if (!L.sub) {
            a.scales = d->scales;
            rc = launch_wq<WQ_CODES>(a, c->st, op, what, err);
            continue;
        }
        // MIXED: f_j per (row, group), then S and u per row, then the codes.
        if (cudaMalloc(&f, (size_t)N * a.G * 4) != cudaSuccess) { rc = launched(op, "cudaMalloc of the f_j scratch", err); break; }
        a.f = f;
        rc = launch_wq<WQ_MIXF>(a, c->st, op, what, err);
        if (!rc) {
            mixed_su_kernel<<<(unsigned)((N + WQ_WARPS - 1) / WQ_WARPS), WQ_WARPS * 32, 0, c->st>>>(f, N, a.G, d->scales, d->sub);
            rc = launched(op, what, err);
        }
        a.scales = d->scales; a.sub = d->sub;
        if (!rc) rc = launch_wq<WQ_MIXCODES>(a, c->st, op, what, err);
    }
    if (!rc) out->rows = N;
    const int rc2 = ak_slot_close(c, slot, true, rc ? nullptr : err);   // waits: the scratch is free to go
    if (f) { cudaStreamSynchronize(c->st); cudaFree(f); }
    if (rc || rc2) { out->rows = 0; return -1; }
    return 0;
}

extern "C" int ak_dequantize_w_dev(ak_ctx *c, const ak_dqt *t, uint16_t *out, const char *what, char *err) {
    static const char *op = "ak_dequantize_w_dev";
    what = nz(what, "tensor");
    if (ak_ctx_use(c, op, err)) return -1;
    if (!t || !out || t->rows < 1 || !t->main.codes || t->K < 1 || (t->mode.permuted && !t->perm)) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: %s: empty quantized tensor (quantize it first) or NULL output", op, what);
        return -1;
    }
    const int slot = ak_slot_open(c, op, what, t->K, nullptr, nullptr, err);
    if (slot < 0) return -1;
    int rc = 0;
    for (int i = 0; !rc && i < 2; i++) {
        const ak_dqmat *d = i ? &t->outl : &t->main;
        if (!d->codes) continue;
        dq_args a;
        memset(&a, 0, sizeof a);
        a.codes = d->codes; a.rb = (int)dq_row_bytes(d);
        a.scales = d->scales; a.sub = d->sub;
        a.rows = t->rows; a.cols = d->cols; a.bits = d->bits; a.group = d->group; a.G = d->ngroups;
        a.col0 = i ? t->main.cols : 0; a.K = t->K;
        a.perm = t->perm; a.out = out;
        a.ovf = c->flags + (size_t)slot * AK_SLOT_WORDS + 2;
        const size_t n = (size_t)a.rows * a.cols;
        const unsigned blocks = (unsigned)((n + 255) / 256 < 65536 ? (n + 255) / 256 : 65536);
        dq_kernel<<<blocks, 256, 0, c->st>>>(a);
        rc = launched(op, what, err);
    }
    const int rc2 = ak_slot_close(c, slot, true, rc ? nullptr : err);
    return rc || rc2 ? -1 : 0;
}

namespace {

// Fake-quant of rows x K fp16 values as X (is_w = 0) or W; shared by the two public calls.
int fakequant(ak_ctx *c, const char *op, const char *what, const aq_mode *m, bool is_w, const uint16_t *x, int rows,
              int K, const int32_t *perm, uint16_t *out, char *err) {
    if (ak_ctx_use(c, op, err) || check_args(op, what, m, false, x, out, rows, K, perm, err)) return -1;
    const aq_operand *opd = is_w ? &m->w : &m->x;
    const bool copy = opd->elem == AQ_ELEM_F16;   // a float operand (fp16 mode, X of w4a16-gN)
    if (!copy && opd->scale == AQ_SCALE_F16_U4SUB) {   // through the sub-scales: quantize, then dequantize
        ak_dqt q;
        if (ak_dqt_alloc(c, m, 1, rows, K, &q, what, err)) return -1;
        const int rc = ak_quantize_w_dev(c, m, x, rows, K, nullptr, &q, what, err) ||
                       ak_dequantize_w_dev(c, &q, out, what, err);
        ak_dqt_free(c, &q);
        return rc ? -1 : 0;
    }
    const int slot = ak_slot_open(c, op, what, K, x, perm, err);
    if (slot < 0) return -1;
    unsigned long long *fl = c->flags + (size_t)slot * AK_SLOT_WORDS;
    int rc = 0;
    if (copy) {
        const size_t n = (size_t)rows * K;
        const unsigned blocks = (unsigned)((n + 255) / 256 < 65536 ? (n + 255) / 256 : 65536);
        copy_check_kernel<<<blocks, 256, 0, c->st>>>(x, out, n, fl);
        rc = launched(op, what, err);
    } else {
        if (perm) rc = ak_launch_perm_check(perm, K, fl + 1, c->st, err);
        const qlayout L = layout_of(m, is_w, K);
        for (int i = 0; !rc && i < L.nparts; i++) {
            wq_args a = part_args(m, is_w, x, rows, K, perm, i);
            a.out = out; a.bad = fl; a.ovf = fl + 2; a.perm_bad = perm ? fl + 1 : nullptr;
            rc = launch_wq<WQ_FAKE>(a, c->st, op, what, err);
        }
    }
    const int rc2 = ak_slot_close(c, slot, is_w, rc ? nullptr : err);
    return rc || rc2 ? -1 : 0;
}

}  // namespace

extern "C" int ak_fakequant_x_dev(ak_ctx *c, const aq_mode *m, const uint16_t *x, int M, int K, const int32_t *perm,
                                  uint16_t *out, const char *what, char *err) {
    return fakequant(c, "ak_fakequant_x_dev", nz(what, "X"), m, false, x, M, K, perm, out, err);
}

extern "C" int ak_fakequant_w_dev(ak_ctx *c, const aq_mode *m, const uint16_t *w, int N, int K, const int32_t *perm,
                                  uint16_t *out, const char *what, char *err) {
    return fakequant(c, "ak_fakequant_w_dev", nz(what, "W"), m, true, w, N, K, perm, out, err);
}
