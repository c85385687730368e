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
//
// One block per token (row). Thread tid owns chunks c = tid + i * NT (i < NCH) of 8 consecutive
// (permuted) channels, loaded as one 16-byte vector (or gathered) and kept as raw fp16 bits. Group
// absmax: chunks of one group sit in consecutive lanes, so a group of 8·2^k <= 256 channels is an
// xor-shuffle reduction; larger groups (per-token) reduce per warp, then with a shared-memory
// atomicMax on the float bits (non-negative floats order like their bit patterns). Codes: 8 nibbles
// -> one 32-bit store (4-bit) or 8 bytes (8-bit), coalesced; the first chunk of a group stores s.
#include "ak_internal.cuh"

#include <cstdio>

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
// quarter-rate pipes and made the quantizer instruction-bound). For v and s fp16 values (s > 0)
// and r ~ 1/s (a few ulp):
//   k   = rne(v * r) via the 1.5*2^23 magic add (input pre-clamped to +-1024: only the clamp
//         can see values that far out);
//   rem = v - k*s with one fma: exact (k*s has <= 22 significant bits, and |rem| <= 1.5 s is a
//         multiple of min(ulp(v), ulp(s)) with <= 13 significant bits);
//   |rem| > s/2 moves k one step toward v/s; |rem| == s/2 is a tie, resolved to the even k.
// This is rne(v/s) exactly. It equals rne(RN32(v/s)) (the contract's double rounding) because for
// fp16 v, s a quotient that is not a tie stays at least 2^-13 away from k + 1/2, far more than
// the half-ulp (<= 2^-20 below 2^4) that RN32 can move it. ak_selftest_rounding checks all
// fp16 (v, s) pairs against code_ref on the device.
// Branch-free core: returns the bits of 1.5*2^23 + q (q = the clamped code), whose low 8 bits are
// q in two's complement (1.5*2^23 + q = 2^23 + 2^22 + q and 2^22 is a multiple of 256).
DEVI int code_bits(float v, float s, float r, float qminf, float qmaxf) {
    float x = __fmul_rn(v, r);
    x = fminf(fmaxf(x, -1024.0f), 1024.0f);
    const int kb = __float_as_int(__fadd_rn(x, 12582912.0f));       // 1.5*2^23 + rne(x)
    float k = __fsub_rn(__int_as_float(kb), 12582912.0f);
    const float rem = __fmaf_rn(-k, s, v), h = __fmul_rn(0.5f, s), ar = fabsf(rem);
    const bool up = ar > h || (ar == h && (kb & 1));                   // tie: move off an odd k
    k = up ? __fadd_rn(k, rem < 0.0f ? -1.0f : 1.0f) : k;
    k = fminf(fmaxf(k, qminf), qmaxf);
    return __float_as_int(__fadd_rn(k, 12582912.0f));
}
DEVI int code_fast(float v, float s, float r, int qmin, int qmax) {
    return code_bits(v, s, r, (float)qmin, (float)qmax) - 0x4B400000;
}

template <int NT, int NCH, bool PERM>
__global__ void __launch_bounds__(NT) quant_kernel(const ak_quant_args a) {
    extern __shared__ __align__(16) uint8_t qsm[];
    const int m = blockIdx.x, tid = threadIdx.x, lane = tid & 31;
    const int K = a.K;
    const unsigned short *xrow = reinterpret_cast<const unsigned short *>(a.x) + (size_t)m * K;
    unsigned short *xs = reinterpret_cast<unsigned short *>(qsm);                 // PERM: [K]
    unsigned *gmax = reinterpret_cast<unsigned *>(qsm + (PERM ? ((size_t)K * 2 + 15) / 16 * 16 : 0));

    if (PERM) {
        for (int c = tid; c < K / 8; c += NT) {
            uint4 v = *reinterpret_cast<const uint4 *>(xrow + c * 8);
            *reinterpret_cast<uint4 *>(xs + c * 8) = v;
            const unsigned short *h = reinterpret_cast<const unsigned short *>(&v);
#pragma unroll
            for (int e = 0; e < 8; e++)
                if ((h[e] & 0x7c00u) == 0x7c00u) atomicMin(a.bad, (unsigned long long)m * K + c * 8 + e);
        }
        __syncthreads();
    }

    for (int part = 0; part < a.nparts; part++) {
        const ak_qpart &P = part ? a.p[1] : a.p[0];
        const int nchunks = P.cols / 8, gch = P.g / 8;
        const int qmax = (1 << (P.bits - 1)) - 1, qmin = -(1 << (P.bits - 1));
        uint4 raw[NCH];          // 8 fp16 values per chunk, as loaded (4 registers)
        float am[NCH];
#pragma unroll
        for (int i = 0; i < NCH; i++) {
            const int c = tid + i * NT;
            raw[i] = make_uint4(0, 0, 0, 0);
            if (c < nchunks) {
                unsigned short *h = reinterpret_cast<unsigned short *>(&raw[i]);
                if (PERM) {
#pragma unroll
                    for (int e = 0; e < 8; e++) h[e] = xs[a.perm[P.col0 + c * 8 + e]];
                } else {
                    raw[i] = *reinterpret_cast<const uint4 *>(xrow + P.col0 + c * 8);
                }
            }
        }
#pragma unroll
        for (int i = 0; i < NCH; i++) {
            const int c = tid + i * NT;
            const uint32_t w[4] = {raw[i].x, raw[i].y, raw[i].z, raw[i].w};
            // non-finite check, two halves per op (exponent all ones); rare slow path names the index
            uint32_t nf = 0, mx = 0;
#pragma unroll
            for (int q = 0; q < 4; q++) {
                nf |= __vcmpeq2(w[q] & 0x7c007c00u, 0x7c007c00u);
                mx = __vmaxu2(mx, w[q] & 0x7fff7fffu);   // |v| of finite fp16 orders like its bits
            }
            if (!PERM && nf && c < nchunks) {
                const unsigned short *h = reinterpret_cast<const unsigned short *>(&raw[i]);
                for (int e = 0; e < 8; e++)
                    if ((h[e] & 0x7c00u) == 0x7c00u) atomicMin(a.bad, (unsigned long long)m * K + P.col0 + c * 8 + e);
            }
            const uint32_t m16 = (mx >> 16) > (mx & 0xffffu) ? (mx >> 16) : (mx & 0xffffu);
            am[i] = h2f_bits((unsigned short)m16);
        }
        // Group absmax.
        if (gch <= 32 && (gch & (gch - 1)) == 0) {
            for (int off = 1; off < gch; off <<= 1)
#pragma unroll
                for (int i = 0; i < NCH; i++) am[i] = fmaxf(am[i], __shfl_xor_sync(0xffffffffu, am[i], off));
        } else {
            for (int j = tid; j < P.G; j += NT) gmax[j] = 0u;
            __syncthreads();
            const bool whole_warp = gch % 32 == 0;
#pragma unroll
            for (int i = 0; i < NCH; i++) {
                const int c = tid + i * NT;
                float r = am[i];
                if (whole_warp) {
#pragma unroll
                    for (int off = 1; off < 32; off <<= 1) r = fmaxf(r, __shfl_xor_sync(0xffffffffu, r, off));
                    if (lane == 0 && c < nchunks) atomicMax(&gmax[c / gch], __float_as_uint(r));
                } else if (c < nchunks) {
                    atomicMax(&gmax[c / gch], __float_as_uint(r));
                }
            }
            __syncthreads();
#pragma unroll
            for (int i = 0; i < NCH; i++) {
                const int c = tid + i * NT;
                if (c < nchunks) am[i] = __uint_as_float(gmax[c / gch]);
            }
        }
        // Scales and codes.
#pragma unroll
        for (int i = 0; i < NCH; i++) {
            const int c = tid + i * NT;
            if (c >= nchunks) continue;
            const float t = P.alpha == 1.0f ? am[i] : __fmul_rn(am[i], P.alpha);
            const float s32 = __fdiv_rn(t, (float)qmax);
            const __half s = __float2half_rn(s32 < 65504.0f ? s32 : 65504.0f);
            const float sf = __half2float(s);
            const float rs = sf == 0.0f ? 0.0f : __frcp_rn(sf);
            const __half2 *h2 = reinterpret_cast<const __half2 *>(&raw[i]);
            int q[8];                                   // bits with the code in the low 8 bits
            if (sf == 0.0f) {
#pragma unroll
                for (int e = 0; e < 8; e++) q[e] = 0;
            } else {
                const float qminf = (float)qmin, qmaxf = (float)qmax;
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float2 f = __half22float2(h2[e]);
                    q[2 * e] = code_bits(f.x, sf, rs, qminf, qmaxf);
                    q[2 * e + 1] = code_bits(f.y, sf, rs, qminf, qmaxf);
                }
            }
            uint8_t *dst = P.codes + (size_t)m * P.rb;
            if (P.bits == 4) {
                uint32_t w = 0;
#pragma unroll
                for (int e = 0; e < 8; e++) w |= (uint32_t)(q[e] & 0xF) << (4 * e);
                *reinterpret_cast<uint32_t *>(dst + c * 4) = w;
            } else {
                const uint32_t w0 = __byte_perm(__byte_perm(q[0], q[1], 0x0040), __byte_perm(q[2], q[3], 0x0040), 0x5410);
                const uint32_t w1 = __byte_perm(__byte_perm(q[4], q[5], 0x0040), __byte_perm(q[6], q[7], 0x0040), 0x5410);
                *reinterpret_cast<uint2 *>(dst + c * 8) = make_uint2(w0, w1);
            }
            if (c % gch == 0) P.scales[(size_t)m * P.G + c / gch] = s;
        }
        __syncthreads();   // gmax is reused by the next part
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

// One thread per 8-channel chunk up to 1024 chunks (K <= 8192), then 2 or 4 chunks per thread.
template <bool PERM>
int launch_perm(const ak_quant_args &a, int nch, cudaStream_t st, char *err) {
    if (nch <= 256) return launch_q<256, 1, PERM>(a, st, err);
    if (nch <= 512) return launch_q<512, 1, PERM>(a, st, err);
    if (nch <= 1024) return launch_q<1024, 1, PERM>(a, st, err);
    if (nch <= 2048) return launch_q<1024, 2, PERM>(a, st, err);
    return launch_q<1024, 4, PERM>(a, st, err);
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
    int nch = a.p[0].cols / 8;
    if (a.nparts > 1 && a.p[1].cols / 8 > nch) nch = a.p[1].cols / 8;
    if (nch > 4096 || a.M < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: shape M = %d, K = %d outside the kernel's range", a.M, a.K);
        return -1;
    }
    return a.perm ? launch_perm<true>(a, nch, st, err) : launch_perm<false>(a, nch, st, err);
}
