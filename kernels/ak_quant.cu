// ak_quant.cu — activation quantization X fp16 [M, K] -> int4/int8 codes + fp16 scales per token and
// group (NUMERICS.md "Symmetric quantizer"), bit-exact against quant/aq_quant.c aq_quantize_x:
//   amax = max |v| (fp32), t = amax * alpha (__fmul_rn, skipped for alpha = 1), s32 = t / qmax
//   (__fdiv_rn), s = fp16_rne(min(s32, 65504)) (__float2half_rn), s == 0 -> all codes 0, else
//   q = clamp(rne(v / s), qmin, qmax): computed by code_fast (reciprocal estimate, magic-number
//   rounding and an exact fma remainder correction), which equals the contract's CUDA spelling
//   clamp(__float2int_rn(__fdiv_rn(v, s))) for every fp16 (v, s) pair: ak_selftest_rounding checks
//   all 2.0e9 pairs on the device (tests/test_gpu.c).
// Fused variants: ATOM (gather through the channel permutation from a shared-memory copy of the
// row, 4-bit main groups + INT8 per-token outliers, in one launch) and MIXED (per-token, g = K).
// RMSNorm + quantizer in one kernel (rmsq_kernel, ak_rmsnorm_quantize_x_dev, end of this file): the
// normalized row of kernels/ak_ops.cu rmsnorm8_kernel built in shared memory, then this arithmetic.
//
// One block per token (row). Thread tid owns quads c = tid + i * NT (i < NQ) of 32 consecutive
// (permuted) channels, loaded as four 16-byte vectors (or gathered) and kept as raw fp16 bits. Group
// absmax (groups are multiples of 32 channels, so a quad never straddles two): the quads of a group
// of 32·2^k <= 1024 channels sit in consecutive lanes (xor-shuffle reduction); larger groups
// (per-token) reduce per warp, then with a shared-memory atomicMax on the float bits (non-negative
// floats order like their bit patterns). The non-finite check is one compare on the packed max of
// |bits| (|bits| >= 0x7c00 iff inf/NaN). Codes: 32 nibbles -> one 16-byte store (4-bit) or 32 bytes
// -> two (8-bit); the first quad of a group stores s. Measurements: kernels/NOTES.md.
#include "ak_internal.cuh"
#include "ak_reduce.cuh"

#include <cstdio>

// Resident threads per SM the quantizer asks ptxas to fit (registers capped to match; at most 16
// blocks, the smallest per-SM block limit of the targets, sm_86).
#ifndef AK_QUANT_THREADS_PER_SM
#define AK_QUANT_THREADS_PER_SM 1536
#endif

namespace {

#define DEVI __device__ __forceinline__

DEVI float h2f_bits(unsigned short b) { return __half2float(__ushort_as_half(b)); }

// The contract's code for one value, spelled as NUMERICS.md gives it for CUDA:
// clamp(__float2int_rn(__fdiv_rn(v, s)), qmin, qmax); s > 0.
DEVI int code_ref(float v, float s, int qmin, int qmax) {
    int r = __float2int_rn(__fdiv_rn(v, s));
    return r < qmin ? qmin : (r > qmax ? qmax : r);
}

// The same integer without a division or float->int conversion per value (both run on the
// quarter-rate pipes and made the quantizer instruction-bound). For v and s fp16 values (s > 0),
// r = RN(1/s) and h = s/2 (exact):
//   kb  = M + rne(v * r), M = 1.5*2^23 (magic-number rounding; v*r pre-clamped to +-1024: only the
//         clamp can see values that far out), k = kb - M (exact);
//   rem = v - k*s with one fma: exact (k*s has <= 22 significant bits, and |rem| <= 0.51 s is a
//         multiple of min(ulp(v), ulp(s)) with <= 13 significant bits), so v/s = k + rem/s exactly;
//   not a tie (|rem| != h): M + rne(v/s) = RN(kb + rem*r) with one fma: rem*r is within
//         1.5*2^-24 of rem/s and a non-tie quotient of fp16 values stays >= 2^-13 away from a
//         half-integer, so the single rounding at ulp 1 (the fma result lies in [2^23, 2^24)) picks
//         the integer nearest to v/s; this also equals rne(RN32(v/s)) (the contract's double
//         rounding), since RN32 moves the quotient by at most 2^-20 below 2^4;
//   a tie (|rem| == h): RN(kb +- 0.5) rounds half to even (M is even), as rne does.
// The clamp to [qmin, qmax] is applied in the M + q domain (also covers the pre-clamped far-out
// quotients, whose fma result lands beyond M + qmax or below M + qmin). ak_selftest_rounding
// checks every fp16 (v, s) pair against code_ref on the device (tests/test_gpu.c).
// Returns the bits of M + q, whose low 8 bits are q in two's complement (M = 2^23 + 2^22 and 2^22
// is a multiple of 256).
DEVI int code_bits(float v, float s, float r, float h, float lo, float hi) {
    float x = __fmul_rn(v, r);
    x = fminf(fmaxf(x, -1024.0f), 1024.0f);
    const float kb = __fadd_rn(x, 12582912.0f);                       // M + rne(x)
    const float k = __fsub_rn(kb, 12582912.0f);
    const float rem = __fmaf_rn(-k, s, v);
    const float tie = __fadd_rn(kb, copysignf(0.5f, rem));
    const float nt = __fmaf_rn(rem, r, kb);
    float q = fabsf(rem) == h ? tie : nt;
    q = fminf(fmaxf(q, lo), hi);
    return __float_as_int(q);
}
DEVI int code_fast(float v, float s, float r, int qmin, int qmax) {
    return code_bits(v, s, r, __fmul_rn(0.5f, s), __fadd_rn(12582912.0f, (float)qmin),
                     __fadd_rn(12582912.0f, (float)qmax)) - 0x4B400000;
}

// 8 codes (bits of M + q, q in the low byte) -> one 32-bit word of nibbles, even index low.
DEVI uint32_t pack4(const int *q) {
    const uint32_t w0 = __byte_perm(__byte_perm(q[0], q[1], 0x0040), __byte_perm(q[2], q[3], 0x0040), 0x5410);
    const uint32_t w1 = __byte_perm(__byte_perm(q[4], q[5], 0x0040), __byte_perm(q[6], q[7], 0x0040), 0x5410);
    // byte 0 = q0 | q1 << 4, byte 2 = q2 | q3 << 4 (bitwise select of w and w >> 4)
    const uint32_t u0 = (w0 & 0x0F0F0F0Fu) | ((w0 >> 4) & 0xF0F0F0F0u);
    const uint32_t u1 = (w1 & 0x0F0F0F0Fu) | ((w1 >> 4) & 0xF0F0F0F0u);
    return __byte_perm(u0, u1, 0x6420);
}
// 4 codes -> 4 int8 bytes.
DEVI uint32_t pack8(const int *q) {
    return __byte_perm(__byte_perm(q[0], q[1], 0x0040), __byte_perm(q[2], q[3], 0x0040), 0x5410);
}

// One block per token (row); thread tid owns quads c = tid + i * NT (i < NQ) of 32 consecutive
// (permuted) channels (four 16-byte loads in flight per quad). Group sizes are multiples of 32, so a
// quad lies in one group and a group's quads sit in consecutive lanes.
template <int NT, int NQ, bool PERM>
__global__ void __launch_bounds__(NT, AK_QUANT_THREADS_PER_SM / NT < 16 ? AK_QUANT_THREADS_PER_SM / NT : 16) quant_kernel(const ak_quant_args a) {
    extern __shared__ __align__(16) uint8_t qsm[];
    if (PERM && a.perm_bad && *a.perm_bad != ~0ull) return;   // perm is not a permutation: gather nothing
    const int m = blockIdx.x, tid = threadIdx.x, lane = tid & 31;
    const int K = a.K;
    const unsigned short *xrow = reinterpret_cast<const unsigned short *>(a.x) + (size_t)m * K;
    unsigned short *xs = reinterpret_cast<unsigned short *>(qsm);                 // PERM: [K]
    unsigned *gmax = reinterpret_cast<unsigned *>(qsm + (PERM ? ((size_t)K * 2 + 15) / 16 * 16 : 0));

    if (PERM) {
        for (int c = tid; c < K / 8; c += NT) {
            uint4 v = *reinterpret_cast<const uint4 *>(xrow + c * 8);
            *reinterpret_cast<uint4 *>(xs + c * 8) = v;
            const uint32_t mx = __vmaxu2(__vmaxu2(v.x & 0x7fff7fffu, v.y & 0x7fff7fffu),
                                         __vmaxu2(v.z & 0x7fff7fffu, v.w & 0x7fff7fffu));
            if (__vcmpgeu2(mx, 0x7c007c00u)) {   // rare: name the first non-finite index
                const unsigned short *h = reinterpret_cast<const unsigned short *>(&v);
                for (int e = 0; e < 8; e++)
                    if ((h[e] & 0x7c00u) == 0x7c00u) atomicMin(a.bad, (unsigned long long)m * K + c * 8 + e);
            }
        }
        __syncthreads();
    }

    for (int part = 0; part < a.nparts; part++) {
        const ak_qpart &P = part ? a.p[1] : a.p[0];
        const int nq = P.cols / 32, gq = P.g >= P.cols ? nq : P.g / 32;   // quads per row / per group
        const int qmax = (1 << (P.bits - 1)) - 1, qmin = -(1 << (P.bits - 1));
        uint4 raw[NQ][4];        // 32 fp16 values per quad, as loaded
        float am[NQ];
#pragma unroll
        for (int i = 0; i < NQ; i++) {
            const int c = tid + i * NT;
#pragma unroll
            for (int j = 0; j < 4; j++) raw[i][j] = make_uint4(0, 0, 0, 0);
            if (c < nq) {
                if (PERM) {
                    // col0 and c * 32 are multiples of 32: the 32 indices are eight 16-byte loads
                    const int4 *pi = reinterpret_cast<const int4 *>(a.perm + P.col0 + c * 32);
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        const int4 i0 = __ldg(pi + 2 * j), i1 = __ldg(pi + 2 * j + 1);
                        raw[i][j] = make_uint4(xs[i0.x] | (uint32_t)xs[i0.y] << 16, xs[i0.z] | (uint32_t)xs[i0.w] << 16,
                                               xs[i1.x] | (uint32_t)xs[i1.y] << 16, xs[i1.z] | (uint32_t)xs[i1.w] << 16);
                    }
                } else {
                    const uint4 *src = reinterpret_cast<const uint4 *>(xrow + P.col0 + c * 32);
#pragma unroll
                    for (int j = 0; j < 4; j++) raw[i][j] = src[j];
                }
            }
        }
#pragma unroll
        for (int i = 0; i < NQ; i++) {
            const int c = tid + i * NT;
            // |v| of a finite fp16 orders like its bits, and v is non-finite iff |bits| >= 0x7c00
            uint32_t mx = 0;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                mx = __vmaxu2(mx, raw[i][j].x & 0x7fff7fffu);
                mx = __vmaxu2(mx, raw[i][j].y & 0x7fff7fffu);
                mx = __vmaxu2(mx, raw[i][j].z & 0x7fff7fffu);
                mx = __vmaxu2(mx, raw[i][j].w & 0x7fff7fffu);
            }
            uint32_t m16 = (mx >> 16) > (mx & 0xffffu) ? (mx >> 16) : (mx & 0xffffu);
            if (m16 >= 0x7c00u) {            // rare slow path: name the first non-finite index
                if (!PERM && c < nq) {
                    for (int j = 0; j < 4; j++) {
                        const unsigned short *h = reinterpret_cast<const unsigned short *>(&raw[i][j]);
                        for (int e = 0; e < 8; e++)
                            if ((h[e] & 0x7c00u) == 0x7c00u)
                                atomicMin(a.bad, (unsigned long long)m * K + P.col0 + c * 32 + j * 8 + e);
                    }
                }
                m16 = 0;                     // the call fails; keep the arithmetic below finite
            }
            am[i] = h2f_bits((unsigned short)m16);
        }
        // Group absmax.
        if (gq <= 32 && (gq & (gq - 1)) == 0) {
            for (int off = 1; off < gq; off <<= 1)
#pragma unroll
                for (int i = 0; i < NQ; i++) am[i] = fmaxf(am[i], __shfl_xor_sync(0xffffffffu, am[i], off));
        } else {
            for (int j = tid; j < P.G; j += NT) gmax[j] = 0u;
            __syncthreads();
            const bool whole_warp = gq % 32 == 0;
#pragma unroll
            for (int i = 0; i < NQ; i++) {
                const int c = tid + i * NT;
                float r = am[i];
                if (whole_warp) {
#pragma unroll
                    for (int off = 1; off < 32; off <<= 1) r = fmaxf(r, __shfl_xor_sync(0xffffffffu, r, off));
                    if (lane == 0 && c < nq) atomicMax(&gmax[c / gq], __float_as_uint(r));
                } else if (c < nq) {
                    atomicMax(&gmax[c / gq], __float_as_uint(r));
                }
            }
            __syncthreads();
#pragma unroll
            for (int i = 0; i < NQ; i++) {
                const int c = tid + i * NT;
                if (c < nq) am[i] = __uint_as_float(gmax[c / gq]);
            }
        }
        // Scales and codes.
#pragma unroll
        for (int i = 0; i < NQ; i++) {
            const int c = tid + i * NT;
            if (c >= nq) continue;
            const float t = P.alpha == 1.0f ? am[i] : __fmul_rn(am[i], P.alpha);
            const float s32 = __fdiv_rn(t, (float)qmax);
            const __half s = __float2half_rn(s32 < 65504.0f ? s32 : 65504.0f);
            const float sf = __half2float(s);
            uint8_t *dst = P.codes + (size_t)m * P.rb;
            if (sf == 0.0f) {
                if (P.bits == 4) *reinterpret_cast<uint4 *>(dst + c * 16) = make_uint4(0, 0, 0, 0);
                else {
                    *reinterpret_cast<uint4 *>(dst + c * 32) = make_uint4(0, 0, 0, 0);
                    *reinterpret_cast<uint4 *>(dst + c * 32 + 16) = make_uint4(0, 0, 0, 0);
                }
            } else {
                const float rs = __frcp_rn(sf), hs = __fmul_rn(0.5f, sf);
                const float lo = __fadd_rn(12582912.0f, (float)qmin), hi = __fadd_rn(12582912.0f, (float)qmax);
                uint32_t out[8];
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const __half2 *h2 = reinterpret_cast<const __half2 *>(&raw[i][j]);
                    int q[8];
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const float2 f = __half22float2(h2[e]);
                        q[2 * e] = code_bits(f.x, sf, rs, hs, lo, hi);
                        q[2 * e + 1] = code_bits(f.y, sf, rs, hs, lo, hi);
                    }
                    if (P.bits == 4) out[j] = pack4(q);
                    else { out[2 * j] = pack8(q); out[2 * j + 1] = pack8(q + 4); }
                }
                if (P.bits == 4) *reinterpret_cast<uint4 *>(dst + c * 16) = make_uint4(out[0], out[1], out[2], out[3]);
                else {
                    *reinterpret_cast<uint4 *>(dst + c * 32) = make_uint4(out[0], out[1], out[2], out[3]);
                    *reinterpret_cast<uint4 *>(dst + c * 32 + 16) = make_uint4(out[4], out[5], out[6], out[7]);
                }
            }
            if (c % gq == 0) P.scales[(size_t)m * P.G + c / gq] = s;
        }
        if (part + 1 < a.nparts) __syncthreads();   // gmax is reused by the next part
    }
}

template <int NT, int NCH, bool PERM>
int launch_q(const ak_quant_args &a, cudaStream_t st, char *err) {
    auto kern = quant_kernel<NT, NCH, PERM>;
    int gmax_n = a.p[0].G > (a.nparts > 1 ? a.p[1].G : 0) ? a.p[0].G : a.p[1].G;
    size_t smem = (PERM ? ((size_t)a.K * 2 + 15) / 16 * 16 : 0) + (size_t)gmax_n * 4;
    cudaError_t e = cudaSuccess;
    if (smem > 48 * 1024) e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) {
        kern<<<a.M, NT, smem, st>>>(a);
        e = cudaGetLastError();
    }
    if (e != cudaSuccess) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: kernel launch failed: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

// One thread per 32-channel quad (K <= 32768: at most 1024 quads per row).
template <bool PERM>
int launch_perm(const ak_quant_args &a, int nq, cudaStream_t st, char *err) {
    if (nq <= 32) return launch_q<32, 1, PERM>(a, st, err);
    if (nq <= 64) return launch_q<64, 1, PERM>(a, st, err);
    if (nq <= 128) return launch_q<128, 1, PERM>(a, st, err);
    if (nq <= 256) return launch_q<256, 1, PERM>(a, st, err);
    if (nq <= 512) return launch_q<512, 1, PERM>(a, st, err);
    return launch_q<1024, 1, PERM>(a, st, err);
}

// Exhaustive check of code_fast against code_ref: all positive finite fp16 s (0x0001..0x7bff) x
// all finite fp16 v, for 4-bit and 8-bit code ranges. Counts mismatches and records one.
__global__ void selftest_kernel(unsigned long long *bad, unsigned *example) {
    const unsigned sidx = blockIdx.x + 1;                 // s bits 0x0001 .. 0x7bff
    const float s = h2f_bits((unsigned short)sidx);
    const float r = __frcp_rn(s);
    for (unsigned vb = threadIdx.x; vb < 0x10000u; vb += blockDim.x) {
        if ((vb & 0x7c00u) == 0x7c00u) continue;          // inf / NaN: rejected before quantization
        const float v = h2f_bits((unsigned short)vb);
        const bool ok4 = code_fast(v, s, r, -8, 7) == code_ref(v, s, -8, 7);
        const bool ok8 = code_fast(v, s, r, -128, 127) == code_ref(v, s, -128, 127);
        if (!ok4 || !ok8) {
            atomicAdd(bad, 1ull);
            atomicExch(example, (sidx << 16) | vb);
        }
    }
}

}  // namespace

extern "C" int ak_selftest_rounding(long long *pairs, long long *mismatches, char *err) {
    unsigned long long *dbad = nullptr, hbad = 0;
    unsigned *dex = nullptr, hex = 0;
    int rc = -1;
    *pairs = 0; *mismatches = 0;
    if (cudaMalloc(&dbad, 8) != cudaSuccess || cudaMalloc(&dex, 4) != cudaSuccess ||
        cudaMemset(dbad, 0, 8) != cudaSuccess || cudaMemset(dex, 0, 4) != cudaSuccess) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_selftest_rounding: cudaMalloc/cudaMemset failed");
        goto done;
    }
    selftest_kernel<<<0x7bff, 256>>>(dbad, dex);
    if (cudaDeviceSynchronize() != cudaSuccess || cudaMemcpy(&hbad, dbad, 8, cudaMemcpyDeviceToHost) != cudaSuccess ||
        cudaMemcpy(&hex, dex, 4, cudaMemcpyDeviceToHost) != cudaSuccess) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_selftest_rounding: kernel failed: %s", cudaGetErrorString(cudaGetLastError()));
        goto done;
    }
    *pairs = 0x7bffLL * 63488LL;
    *mismatches = (long long)hbad;
    if (hbad && err)
        snprintf(err, AX_ERR_LEN, "ak_selftest_rounding: %llu mismatches, e.g. s = 0x%04x, v = 0x%04x", hbad, hex >> 16,
                 hex & 0xffff);
    rc = 0;
done:
    cudaFree(dbad);
    cudaFree(dex);
    return rc;
}

int ak_launch_quant(const ak_quant_args &a, cudaStream_t st, char *err) {
    int nq = a.p[0].cols / 32;
    if (a.nparts > 1 && a.p[1].cols / 32 > nq) nq = a.p[1].cols / 32;
    for (int i = 0; i < a.nparts; i++)
        if (a.p[i].cols % 32 || (a.p[i].g % 32 && a.p[i].g < a.p[i].cols)) nq = 0x7fffffff;
    if (nq > 1024 || a.M < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: shape M = %d, K = %d outside the kernel's range", a.M, a.K);
        return -1;
    }
    return a.perm ? launch_perm<true>(a, nq, st, err) : launch_perm<false>(a, nq, st, err);
}

// ---- fused RMSNorm + activation quantization (ak_rmsnorm_quantize_x_dev) ---------------------------
// One block of RQ_NT = 256 threads per token (row), in three phases:
//  1. x (+= r, fp16 RNE add written back) and the fp32 sum of squares with rmsnorm8_kernel's exact
//     assignment and order (kernels/ak_ops.cu): thread tid owns the 8-value chunks c = tid, tid + 256,
//     ... and adds v*v sequentially over them, then the block tree of ak_block_sum_f (ak_reduce.cuh, shared with it);
//     loads are issued RQ_B chunks at a time, the adds stay in chunk order;
//  2. inv = 1 / sqrt(ss / K + eps) (__fdiv_rn, __fsqrt_rn) and y = fp16(w * fp16(x * inv)) per value,
//     as rmsnorm8_kernel's out, into a shared-memory copy of the row (never to global memory); the
//     non-finite check of the quantizer runs here (min flat index of a non-finite y);
//  3. quant_kernel's group absmax / scale / code arithmetic on that row (ATOM: gathered through perm),
//     with the 32-channel quads of the row spread over the 256 threads (NQ quads per thread).
// The bytes are therefore those of ak_ops_add_rmsnorm (or ak_ops_rmsnorm) -> ak_quantize_x_dev when
// the former takes its rmsnorm8_kernel route (K % 8 == 0, 16-byte aligned pointers); tests/test_gpu_fused.c
// compares the two byte for byte.
namespace {

constexpr int RQ_NT = 256;   // rmsnorm8_kernel's block size: its chunk assignment and sum tree
constexpr int RQ_B = 4;      // chunks of 8 values whose loads are issued together per thread

DEVI unsigned short f2h_bits(float f) { return __half_as_ushort(__float2half_rn(f)); }
DEVI float r16f(float f) { return __half2float(__float2half_rn(f)); }   // fp16 rounding, back in fp32

template <int NQ, bool ADD, bool PERM>
__global__ void __launch_bounds__(RQ_NT) rmsq_kernel(const ak_quant_args a, uint16_t *__restrict__ x,
                                                     const uint16_t *__restrict__ r, const uint16_t *__restrict__ w,
                                                     float eps) {
    extern __shared__ __align__(16) uint8_t qsm[];
    __shared__ float sh[32];
    const int m = blockIdx.x, tid = threadIdx.x, lane = tid & 31;
    const int K = a.K, n8 = K / 8;
    uint4 *xr = reinterpret_cast<uint4 *>(x + (size_t)m * K);
    const uint4 *rr = ADD ? reinterpret_cast<const uint4 *>(r + (size_t)m * K) : nullptr;
    const uint4 *wr = reinterpret_cast<const uint4 *>(w);
    uint4 *xs4 = reinterpret_cast<uint4 *>(qsm);                                  // the row [K] fp16
    const unsigned short *xs = reinterpret_cast<const unsigned short *>(qsm);
    unsigned *gmax = reinterpret_cast<unsigned *>(qsm + (size_t)K * 2);           // K % 32 == 0

    // 1. x (+= r), sum of squares.
    float ss = 0.0f;
    for (int c0 = tid; c0 < n8; c0 += RQ_B * RQ_NT) {
        uint4 xv[RQ_B], rv[RQ_B];
#pragma unroll
        for (int j = 0; j < RQ_B; j++) {
            const int c = c0 + j * RQ_NT;
            xv[j] = make_uint4(0, 0, 0, 0);
            rv[j] = make_uint4(0, 0, 0, 0);
            if (c < n8) {
                xv[j] = xr[c];
                if (ADD) rv[j] = rr[c];
            }
        }
#pragma unroll
        for (int j = 0; j < RQ_B; j++) {
            const int c = c0 + j * RQ_NT;
            if (c >= n8) break;
            unsigned short *x16 = reinterpret_cast<unsigned short *>(&xv[j]);
            if (ADD) {
                const unsigned short *r16p = reinterpret_cast<const unsigned short *>(&rv[j]);
#pragma unroll
                for (int e = 0; e < 8; e++) x16[e] = f2h_bits(__fadd_rn(h2f_bits(x16[e]), h2f_bits(r16p[e])));
                xr[c] = xv[j];
            }
#pragma unroll
            for (int e = 0; e < 8; e++) {
                const float v = h2f_bits(x16[e]);
                ss = __fadd_rn(ss, __fmul_rn(v, v));
            }
            xs4[c] = xv[j];
        }
    }
    ss = ak_block_sum_f(ss, sh);   // rmsnorm8_kernel's sum (ak_reduce.cuh)
    const float var = __fdiv_rn(ss, (float)K);
    const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(var, eps)));

    // 2. normalized row (each thread rewrites only its own chunks: no barrier needed before).
    for (int c0 = tid; c0 < n8; c0 += RQ_B * RQ_NT) {
        uint4 wv[RQ_B];
#pragma unroll
        for (int j = 0; j < RQ_B; j++) {
            const int c = c0 + j * RQ_NT;
            wv[j] = c < n8 ? __ldg(wr + c) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int j = 0; j < RQ_B; j++) {
            const int c = c0 + j * RQ_NT;
            if (c >= n8) break;
            uint4 xv = xs4[c], ov;
            const unsigned short *x16 = reinterpret_cast<const unsigned short *>(&xv);
            const unsigned short *w16 = reinterpret_cast<const unsigned short *>(&wv[j]);
            unsigned short *o16 = reinterpret_cast<unsigned short *>(&ov);
#pragma unroll
            for (int e = 0; e < 8; e++) o16[e] = f2h_bits(__fmul_rn(h2f_bits(w16[e]), r16f(__fmul_rn(h2f_bits(x16[e]), inv))));
            xs4[c] = ov;
            const uint32_t mx = __vmaxu2(__vmaxu2(ov.x & 0x7fff7fffu, ov.y & 0x7fff7fffu),
                                         __vmaxu2(ov.z & 0x7fff7fffu, ov.w & 0x7fff7fffu));
            if (__vcmpgeu2(mx, 0x7c007c00u)) {   // rare: name the first non-finite index
                for (int e = 0; e < 8; e++)
                    if ((o16[e] & 0x7c00u) == 0x7c00u) atomicMin(a.bad, (unsigned long long)m * K + c * 8 + e);
            }
        }
    }
    __syncthreads();
    if (PERM && a.perm_bad && *a.perm_bad != ~0ull) return;   // perm is not a permutation: quantize nothing

    // 3. quantize the row (quant_kernel's arithmetic, source: shared memory).
    for (int part = 0; part < a.nparts; part++) {
        const ak_qpart &P = part ? a.p[1] : a.p[0];
        const int nq = P.cols / 32, gq = P.g >= P.cols ? nq : P.g / 32;
        const int qmax = (1 << (P.bits - 1)) - 1, qmin = -(1 << (P.bits - 1));
        uint4 raw[NQ][4];
        float am[NQ];
#pragma unroll
        for (int i = 0; i < NQ; i++) {
            const int c = tid + i * RQ_NT;
#pragma unroll
            for (int j = 0; j < 4; j++) raw[i][j] = make_uint4(0, 0, 0, 0);
            if (c < nq) {
                if (PERM) {
                    const int4 *pi = reinterpret_cast<const int4 *>(a.perm + P.col0 + c * 32);
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        const int4 i0 = __ldg(pi + 2 * j), i1 = __ldg(pi + 2 * j + 1);
                        raw[i][j] = make_uint4(xs[i0.x] | (uint32_t)xs[i0.y] << 16, xs[i0.z] | (uint32_t)xs[i0.w] << 16,
                                               xs[i1.x] | (uint32_t)xs[i1.y] << 16, xs[i1.z] | (uint32_t)xs[i1.w] << 16);
                    }
                } else {
#pragma unroll
                    for (int j = 0; j < 4; j++) raw[i][j] = xs4[(P.col0 + c * 32) / 8 + j];
                }
            }
            uint32_t mx = 0;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                mx = __vmaxu2(mx, raw[i][j].x & 0x7fff7fffu);
                mx = __vmaxu2(mx, raw[i][j].y & 0x7fff7fffu);
                mx = __vmaxu2(mx, raw[i][j].z & 0x7fff7fffu);
                mx = __vmaxu2(mx, raw[i][j].w & 0x7fff7fffu);
            }
            uint32_t m16 = (mx >> 16) > (mx & 0xffffu) ? (mx >> 16) : (mx & 0xffffu);
            if (m16 >= 0x7c00u) m16 = 0;     // flagged in phase 2; keep the arithmetic below finite
            am[i] = h2f_bits((unsigned short)m16);
        }
        // Group absmax (as quant_kernel).
        if (gq <= 32 && (gq & (gq - 1)) == 0) {
            for (int off = 1; off < gq; off <<= 1)
#pragma unroll
                for (int i = 0; i < NQ; i++) am[i] = fmaxf(am[i], __shfl_xor_sync(0xffffffffu, am[i], off));
        } else {
            for (int j = tid; j < P.G; j += RQ_NT) gmax[j] = 0u;
            __syncthreads();
            const bool whole_warp = gq % 32 == 0;
#pragma unroll
            for (int i = 0; i < NQ; i++) {
                const int c = tid + i * RQ_NT;
                float rm = am[i];
                if (whole_warp) {
#pragma unroll
                    for (int off = 1; off < 32; off <<= 1) rm = fmaxf(rm, __shfl_xor_sync(0xffffffffu, rm, off));
                    if (lane == 0 && c < nq) atomicMax(&gmax[c / gq], __float_as_uint(rm));
                } else if (c < nq) {
                    atomicMax(&gmax[c / gq], __float_as_uint(rm));
                }
            }
            __syncthreads();
#pragma unroll
            for (int i = 0; i < NQ; i++) {
                const int c = tid + i * RQ_NT;
                if (c < nq) am[i] = __uint_as_float(gmax[c / gq]);
            }
        }
        // Scales and codes (as quant_kernel).
#pragma unroll
        for (int i = 0; i < NQ; i++) {
            const int c = tid + i * RQ_NT;
            if (c >= nq) continue;
            const float t = P.alpha == 1.0f ? am[i] : __fmul_rn(am[i], P.alpha);
            const float s32 = __fdiv_rn(t, (float)qmax);
            const __half s = __float2half_rn(s32 < 65504.0f ? s32 : 65504.0f);
            const float sf = __half2float(s);
            uint8_t *dst = P.codes + (size_t)m * P.rb;
            if (sf == 0.0f) {
                if (P.bits == 4) *reinterpret_cast<uint4 *>(dst + c * 16) = make_uint4(0, 0, 0, 0);
                else {
                    *reinterpret_cast<uint4 *>(dst + c * 32) = make_uint4(0, 0, 0, 0);
                    *reinterpret_cast<uint4 *>(dst + c * 32 + 16) = make_uint4(0, 0, 0, 0);
                }
            } else {
                const float rs = __frcp_rn(sf), hs = __fmul_rn(0.5f, sf);
                const float lo = __fadd_rn(12582912.0f, (float)qmin), hi = __fadd_rn(12582912.0f, (float)qmax);
                uint32_t out[8];
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const __half2 *h2 = reinterpret_cast<const __half2 *>(&raw[i][j]);
                    int q[8];
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const float2 f = __half22float2(h2[e]);
                        q[2 * e] = code_bits(f.x, sf, rs, hs, lo, hi);
                        q[2 * e + 1] = code_bits(f.y, sf, rs, hs, lo, hi);
                    }
                    if (P.bits == 4) out[j] = pack4(q);
                    else { out[2 * j] = pack8(q); out[2 * j + 1] = pack8(q + 4); }
                }
                if (P.bits == 4) *reinterpret_cast<uint4 *>(dst + c * 16) = make_uint4(out[0], out[1], out[2], out[3]);
                else {
                    *reinterpret_cast<uint4 *>(dst + c * 32) = make_uint4(out[0], out[1], out[2], out[3]);
                    *reinterpret_cast<uint4 *>(dst + c * 32 + 16) = make_uint4(out[4], out[5], out[6], out[7]);
                }
            }
            if (c % gq == 0) P.scales[(size_t)m * P.G + c / gq] = s;
        }
        if (part + 1 < a.nparts) __syncthreads();   // gmax is reused by the next part
    }
}

template <int NQ, bool ADD, bool PERM>
int launch_rmsq(const ak_quant_args &a, uint16_t *x, const uint16_t *r, const uint16_t *w, float eps, cudaStream_t st,
                char *err) {
    auto kern = rmsq_kernel<NQ, ADD, PERM>;
    const int gmax_n = a.nparts > 1 && a.p[1].G > a.p[0].G ? a.p[1].G : a.p[0].G;
    const size_t smem = (size_t)a.K * 2 + (size_t)gmax_n * 4;
    cudaError_t e = cudaSuccess;
    if (smem > 48 * 1024) e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) {
        kern<<<a.M, RQ_NT, smem, st>>>(a, x, r, w, eps);
        e = cudaGetLastError();
    }
    if (e != cudaSuccess) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_rmsnorm_quantize_x_dev: kernel launch failed: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

template <int NQ>
int launch_rmsq_nq(const ak_quant_args &a, uint16_t *x, const uint16_t *r, const uint16_t *w, float eps, cudaStream_t st,
                   char *err) {
    if (a.perm) return r ? launch_rmsq<NQ, true, true>(a, x, r, w, eps, st, err) : launch_rmsq<NQ, false, true>(a, x, r, w, eps, st, err);
    return r ? launch_rmsq<NQ, true, false>(a, x, r, w, eps, st, err) : launch_rmsq<NQ, false, false>(a, x, r, w, eps, st, err);
}


}  // namespace

// The fused launch on prepared arguments (a as for ak_launch_quant; a.x unused): x [M, K] fp16 read
// (and, with r, x += r written back), w [K] fp16. K % 32 == 0, K <= AK_MAX_K, 16-byte aligned x, r, w.
// Also the benchmark's entry (kernels/ak_bench.cu declares it). 0 or -1 with err.
int ak_launch_rmsnorm_quant(const ak_quant_args &a, uint16_t *x, const uint16_t *r, const uint16_t *w, float eps,
                            cudaStream_t st, char *err) {
    int nq = a.p[0].cols / 32;
    if (a.nparts > 1 && a.p[1].cols / 32 > nq) nq = a.p[1].cols / 32;
    bool ok = a.M >= 1 && a.K % 32 == 0 && a.K >= 32 && a.K <= AK_MAX_K;
    for (int i = 0; i < a.nparts; i++)
        if (a.p[i].cols % 32 || (a.p[i].g % 32 && a.p[i].g < a.p[i].cols)) ok = false;
    if (!ok || nq > 4 * RQ_NT) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_rmsnorm_quantize_x_dev: shape M = %d, K = %d outside the kernel's range", a.M, a.K);
        return -1;
    }
    if (nq <= RQ_NT) return launch_rmsq_nq<1>(a, x, r, w, eps, st, err);
    if (nq <= 2 * RQ_NT) return launch_rmsq_nq<2>(a, x, r, w, eps, st, err);
    if (nq <= 3 * RQ_NT) return launch_rmsq_nq<3>(a, x, r, w, eps, st, err);
    return launch_rmsq_nq<4>(a, x, r, w, eps, st, err);
}

extern "C" int ak_rmsnorm_quantize_x_dev(ak_ctx *c, const aq_mode *m, uint16_t *x, const uint16_t *r, const uint16_t *w,
                                         int M, int K, float eps, const int32_t *perm, ak_dqt *out, const char *what,
                                         char *err) {
    static const char *op = "ak_rmsnorm_quantize_x_dev";
    what = what && *what ? what : "X";
    if (ak_ctx_use(c, op, err)) return -1;
    if (!m || !x || !w || !out || M < 1 || K < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: %s: bad shape [%d, %d] or NULL x/weight/mode/output", op, what, M, K);
        return -1;
    }
    if (!(eps >= 0.0f) || !(eps <= 3.4028234e38f)) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: %s: eps %g must be finite and >= 0", op, what, (double)eps);
        return -1;
    }
    if (((uintptr_t)x | (uintptr_t)r | (uintptr_t)w) & 15) {
        if (err) snprintf(err, AX_ERR_LEN, "%s: %s: x, r and the norm weight must be 16-byte aligned (rmsnorm8_kernel's "
                          "layout); call ak_ops_add_rmsnorm / ak_ops_rmsnorm and ak_quantize_x_dev instead", op, what);
        return -1;
    }
    // The checked input is the normalized row, which lives only in shared memory: the slot has no
    // input pointer, so a non-finite value is named by [row, col] without its bits.
    ak_quant_args a;
    const int slot = ak_quant_begin(c, op, what, m, x, nullptr, M, K, perm, out, &a, err);
    if (slot < 0) return -1;
    if (ak_launch_rmsnorm_quant(a, x, r, w, eps, c->st, err)) return -1;
    out->rows = M;
    return ak_slot_close(c, slot, false, err);
}
