// ak_quant.cu — activation quantization X fp16 [M, K] -> int4/int8 codes + fp16 scales per token and
// group (NUMERICS.md "Symmetric quantizer"), bit-exact against quant/aq_quant.c aq_quantize_x:
//   amax = max |v| (fp32), t = amax * alpha (__fmul_rn, skipped for alpha = 1), s32 = t / qmax
//   (__fdiv_rn), s = fp16_rne(min(s32, 65504)) (__float2half_rn), q = clamp(rne(v / s), qmin, qmax)
//   (__fdiv_rn, __float2int_rn; cvt saturates, then the clamp), s == 0 -> all codes 0.
// Fused variants: ATOM (gather through the channel permutation from a shared-memory copy of the
// row, 4-bit main groups + INT8 per-token outliers, in one launch) and MIXED (per-token, g = K).
//
// One block per token (row). Each thread owns NCH chunks of 8 consecutive (permuted) channels,
// c = tid + i * NT, loaded as one 16-byte vector (or gathered), kept in registers. Group absmax:
// chunks of one group sit in consecutive lanes, so a group of 8·2^k <= 256 channels is an xor-shuffle
// reduction; larger groups (per-token) reduce per warp then with a shared-memory atomicMax on the
// float bits (non-negative floats order like their bit patterns). Codes: 8 nibbles -> one 32-bit
// store (4-bit) or 8 bytes (8-bit), coalesced; the first chunk of each group stores the scale.
#include "ak_internal.cuh"

#include <cstdio>

namespace {

#define DEVI __device__ __forceinline__

DEVI float h2f_bits(unsigned short b) { return __half2float(__ushort_as_half(b)); }

template <int NT, int NCH, bool PERM>
__global__ void __launch_bounds__(NT) quant_kernel(const ak_quant_args a) {
    extern __shared__ __align__(16) uint8_t qsm[];
    const int tid = threadIdx.x, lane = tid & 31;
    const int K = a.K;
    unsigned short *xs = reinterpret_cast<unsigned short *>(qsm);                 // PERM: [K]
    unsigned *gmax = reinterpret_cast<unsigned *>(qsm + (PERM ? ((size_t)K * 2 + 15) / 16 * 16 : 0));
    const unsigned short *xall = reinterpret_cast<const unsigned short *>(a.x);
    // Persistent over rows: block b takes rows b, b + gridDim.x, ...; without a permutation (one
    // part) the next row's 16-byte vectors are loaded before the current row is quantized.
    uint4 nxt[NCH];
    if (!PERM && (int)blockIdx.x < a.M) {
#pragma unroll
        for (int i = 0; i < NCH; i++) {
            const int c = tid + i * NT;
            if (c < a.p[0].cols / 8) nxt[i] = *reinterpret_cast<const uint4 *>(xall + (size_t)blockIdx.x * K + c * 8);
        }
    }
    for (int m = blockIdx.x; m < a.M; m += gridDim.x) {
    const unsigned short *xrow = xall + (size_t)m * K;
    uint4 cur[NCH];
    if (!PERM) {
        const int mn = m + gridDim.x;
#pragma unroll
        for (int i = 0; i < NCH; i++) {
            cur[i] = nxt[i];
            const int c = tid + i * NT;
            if (mn < a.M && c < a.p[0].cols / 8) nxt[i] = *reinterpret_cast<const uint4 *>(xall + (size_t)mn * K + c * 8);
        }
    }

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
        float v[NCH][8], am[NCH];
#pragma unroll
        for (int i = 0; i < NCH; i++) {
            const int c = tid + i * NT;
            am[i] = 0.0f;
            if (c < nchunks) {
                unsigned short h[8];
                if (PERM) {
#pragma unroll
                    for (int e = 0; e < 8; e++) h[e] = xs[a.perm[P.col0 + c * 8 + e]];
                } else {
                    const unsigned short *hr = reinterpret_cast<const unsigned short *>(&cur[i]);
#pragma unroll
                    for (int e = 0; e < 8; e++) {
                        h[e] = hr[e];
                        if ((h[e] & 0x7c00u) == 0x7c00u)
                            atomicMin(a.bad, (unsigned long long)m * K + P.col0 + c * 8 + e);
                    }
                }
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    v[i][e] = h2f_bits(h[e]);
                    am[i] = fmaxf(am[i], fabsf(v[i][e]));
                }
            } else {
#pragma unroll
                for (int e = 0; e < 8; e++) v[i][e] = 0.0f;
            }
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
            int q[8];
#pragma unroll
            for (int e = 0; e < 8; e++) {
                int r = sf == 0.0f ? 0 : __float2int_rn(__fdiv_rn(v[i][e], sf));
                q[e] = r < qmin ? qmin : (r > qmax ? qmax : r);
            }
            uint8_t *dst = P.codes + (size_t)m * P.rb;
            if (P.bits == 4) {
                uint32_t w = 0;
#pragma unroll
                for (int e = 0; e < 8; e++) w |= (uint32_t)(q[e] & 0xF) << (4 * e);
                *reinterpret_cast<uint32_t *>(dst + c * 4) = w;
            } else {
                uint32_t w0 = 0, w1 = 0;
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    w0 |= (uint32_t)(q[e] & 0xFF) << (8 * e);
                    w1 |= (uint32_t)(q[e + 4] & 0xFF) << (8 * e);
                }
                *reinterpret_cast<uint2 *>(dst + c * 8) = make_uint2(w0, w1);
            }
            if (c % gch == 0) P.scales[(size_t)m * P.G + c / gch] = s;
        }
        __syncthreads();   // gmax (and the row copy xs) are reused by the next part / row
    }
    }
}

template <int NT, int NCH, bool PERM>
int launch_q(const ak_quant_args &a, cudaStream_t st, char *err) {
    auto kern = quant_kernel<NT, NCH, PERM>;
    int gmax_n = a.p[0].G > (a.nparts > 1 ? a.p[1].G : 0) ? a.p[0].G : a.p[1].G;
    size_t smem = (PERM ? ((size_t)a.K * 2 + 15) / 16 * 16 : 0) + (size_t)gmax_n * 4;
    cudaError_t e = cudaSuccess;
    if (smem > 48 * 1024) e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    int dev = 0, sms = 132;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    const int grid = a.M < sms * (2048 / NT) ? a.M : sms * (2048 / NT);
    if (e == cudaSuccess) {
        kern<<<grid, NT, smem, st>>>(a);
        e = cudaGetLastError();
    }
    if (e != cudaSuccess) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: kernel launch failed: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

template <bool PERM>
int launch_perm(const ak_quant_args &a, int nch, cudaStream_t st, char *err) {
    if (nch <= 256) return launch_q<256, 1, PERM>(a, st, err);
    if (nch <= 512) return launch_q<256, 2, PERM>(a, st, err);
    if (nch <= 1024) return launch_q<256, 4, PERM>(a, st, err);
    if (nch <= 2048) return launch_q<256, 8, PERM>(a, st, err);
    return launch_q<1024, 4, PERM>(a, st, err);
}

}  // namespace

int ak_launch_quant(const ak_quant_args &a, cudaStream_t st, char *err) {
    int nch = a.p[0].cols / 8;
    if (a.nparts > 1 && a.p[1].cols / 8 > nch) nch = a.p[1].cols / 8;
    if (nch > 4096 || a.M < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: shape M = %d, K = %d outside the kernel's range", a.M, a.K);
        return -1;
    }
    return a.perm ? launch_perm<true>(a, nch, st, err) : launch_perm<false>(a, nch, st, err);
}
