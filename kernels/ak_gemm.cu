// ak_gemm.cu — W4A4 / W8A8 integer GEMM with the contract's group epilogue (NUMERICS.md "Integer GEMM
// with group scales", "Mixed granularity", "Atom-style W4Ax"), bit-exact against quant/aq_gemm.c.
//
// Structure (CUTLASS-style multistage mainloop, Ampere/Hopper mma.sync):
//   - block tile BM x BN, k-tile of BKB = 64/128/256 BYTES per row (2 int4 or 1 int8 code a byte);
//   - global -> shared with cp.async.cg 16 B (zero-filled outside M, N, K), STAGES deep;
//   - shared rows of BKB bytes, 16-byte chunks XOR-swizzled (swz<BKB>) so that every
//     ldmatrix phase of 8 rows hits 8 distinct bank groups;
//   - shared -> registers with ldmatrix.x4 (b16 view: one 32-bit register = 8 int4 or 4 int8 codes);
//   - INT8 path (AK_PATH_INT8, all GPUs, the one used on Hopper): each 32-bit register of 8 nibbles
//     is widened to two int8 registers WITHOUT sign-extension arithmetic: lo = (w << 4) & 0xF0F0F0F0
//     holds the even nibbles and hi = w & 0xF0F0F0F0 the odd ones, each as int8 = 16 * code (exact).
//     Both operands get the same treatment, so mma.m16n8k32.s8 accumulates 256 * p exactly, and the
//     K order inside an mma (lo -> k-slots 0..15, hi -> 16..31) is a permutation shared by A and B,
//     which an exact integer sum ignores. p = acc >> 8 is exact (|256 p| < 2^31 for K <= 32768).
//   - INT4 path (AK_PATH_INT4): the same ldmatrix registers are exactly the A/B fragments of
//     mma.m16n8k64.s4 (native on sm_80/86/89; on sm_90 the PTX still runs, emulated). g = 32 spans
//     half an mma: two mmas with the other half of A zeroed.
//   - 8-bit parts (w8a8, ATOM outliers) use mma.m16n8k32.s8 directly on both paths.
// Epilogue per group j (in ascending K): GROUP: acc = fmaf(float(p), float(sx)*float(sw), acc) with
// __fmaf_rn / __fmul_rn (one rounding each, as the reference); MIXED: P += u * p in int32, then
// y = fp16(float(P) * (float(sx) * float(S))). float(p) for 4-bit codes uses the exact magic-number
// conversion (|p| <= 2^22): bits(p + 0x4B400000) - 1.5 * 2^23, two full-rate ops instead of I2F.
// Split-K over blockIdx.z (ak_internal.cuh AK_SPLIT_*) writes int32 / fp32 partials that
// combine_kernel adds in the reference's order. Tile configurations (launch_epi): M <= 16: 16 x
// AK_SMALL_BN, 4 warps; few tiles: 64 x 128, 8 warps; else 128 x 128, 8 warps of 64 x 32.
// Measurements and limits: kernels/NOTES.md.
#include "ak_internal.cuh"

#include <cstdio>

namespace {

#define DEVI __device__ __forceinline__

// Shared-memory swizzle of 16-byte chunk c in row r of a tile with BKB bytes per row: the 8 rows an
// ldmatrix phase reads land in 8 distinct 16-byte bank groups.
template <int BKB> DEVI int swz(int r, int c) { return BKB == 64 ? (c ^ ((r >> 1) & 3)) : (c ^ (r & 7)); }

DEVI uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

DEVI void cp_async16(uint32_t dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
DEVI void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> DEVI void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

DEVI void ldsm_x4(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

DEVI void mma_s8(int *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};\n"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

DEVI void mma_s4(int *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k64.row.col.s32.s4.s4.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};\n"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Exact int -> float for |p| <= 2^22 (4-bit groups up to 65536 codes).
DEVI float i2f_small(int p) { return __fsub_rn(__int_as_float(p + 0x4B400000), 12582912.0f); }

template <int BM, int BN, int BKB, int WM, int WN, int STAGES, int EPI, bool INT4>
__global__ void __launch_bounds__(WM *WN * 32) gemm_kernel(const ak_gemm_args a) {
    constexpr int NT = WM * WN * 32;
    constexpr int CPR = BKB / 16;   // 16-byte chunks per tile row
    constexpr int WTM = BM / WM, WTN = BN / WN, MI = WTM / 16, NI = WTN / 8;
    static_assert(MI >= 1 && NI >= 2 && NI % 2 == 0, "warp tile");
    extern __shared__ __align__(128) uint8_t smem[];
    uint8_t *sA = smem;                         // [STAGES][BM][BKB]
    uint8_t *sB = smem + STAGES * BM * BKB;     // [STAGES][BN][BKB]

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / WN, wn = warp % WN;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int M = a.M, N = a.N;
    // K range of this block in 16-byte chunks [cs, ce) per part (split-K over blockIdx.z).
    const int z = blockIdx.z, S = a.splits;
    const int nch0 = a.p[0].kb >> 4, nch1 = a.nparts > 1 ? a.p[1].kb >> 4 : 0;
    int cs0 = 0, ce0 = nch0;
    bool has1 = a.nparts > 1;
    if (a.split_mode == AK_SPLIT_GROUP) {
        const int G = a.p[0].G, c = (G + S - 1) / S;
        const int j0 = min(z * c, G), j1 = min(j0 + c, G);
        cs0 = min(j0 * a.p[0].gch, nch0);
        ce0 = min(j1 * a.p[0].gch, nch0);
        has1 = a.nparts > 1 && z == S - 1;
    } else if (a.split_mode == AK_SPLIT_INT) {
        const int T = (nch0 + CPR - 1) / CPR, tps = (T + S - 1) / S;
        const int t0 = min(z * tps, T), t1 = min(t0 + tps, T);
        cs0 = t0 * CPR;
        ce0 = min(t1 * CPR, nch0);
        has1 = false;
    }
    const int cs1 = 0, ce1 = has1 ? nch1 : 0;
    const bool isplit = a.split_mode == AK_SPLIT_INT;
    const int T0 = (ce0 - cs0 + CPR - 1) / CPR;
    const int T = T0 + (ce1 - cs1 + CPR - 1) / CPR;

    int acc[MI][NI][4];
    float accf[MI][NI][4];
    int accP[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < NI; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) { acc[i][j][e] = 0; accf[i][j][e] = 0.0f; accP[i][j][e] = 0; }

    auto load_tile = [&](int t, int stage) {
        const bool p1 = t >= T0;
        const uint8_t *A = p1 ? a.p[1].A : a.p[0].A;
        const uint8_t *B = p1 ? a.p[1].B : a.p[0].B;
        const int lda = p1 ? a.p[1].lda : a.p[0].lda, ldb = p1 ? a.p[1].ldb : a.p[0].ldb;
        const int ch0 = (p1 ? cs1 + (t - T0) * CPR : cs0 + t * CPR), ce = p1 ? ce1 : ce0;
        uint8_t *dA = sA + stage * BM * BKB, *dB = sB + stage * BN * BKB;
#pragma unroll
        for (int i = tid; i < BM * CPR; i += NT) {
            int r = i / CPR, c = i % CPR, gr = m0 + r, kbyte = (ch0 + c) * 16;
            bool ok = gr < M && ch0 + c < ce;
            const uint8_t *src = ok ? A + (size_t)gr * lda + kbyte : A;
            cp_async16(smem_u32(dA + r * BKB + (swz<BKB>(r, c) << 4)), src, ok ? 16 : 0);
        }
#pragma unroll
        for (int i = tid; i < BN * CPR; i += NT) {
            int r = i / CPR, c = i % CPR, gr = n0 + r, kbyte = (ch0 + c) * 16;
            bool ok = gr < N && ch0 + c < ce;
            const uint8_t *src = ok ? B + (size_t)gr * ldb + kbyte : B;
            cp_async16(smem_u32(dB + r * BKB + (swz<BKB>(r, c) << 4)), src, ok ? 16 : 0);
        }
    };

    const int rbase = m0 + wm * WTM + (lane >> 2);      // + mi*16 (+8)
    const int cbase = n0 + wn * WTN + (lane & 3) * 2;   // + ni*8 (+1)

    // Scales (GROUP: sx, sw; MIXED: u) of the next group, loaded one group ahead when the warp tile
    // is small enough to keep them in registers (hides their load latency behind the mma work).
    constexpr bool PFS = MI * NI <= 8;
    float psx[MI][2], psw[NI][2];
    int pu[NI][2];
    auto load_scales = [&](const ak_gpart &P, int j) {
        if (j >= P.G) return;
        if (EPI == AK_EPI_GROUP) {
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    int r = rbase + mi * 16 + h * 8;
                    psx[mi][h] = r < M ? __half2float(P.sa[(size_t)r * P.G + j]) : 0.0f;
                }
#pragma unroll
            for (int ni = 0; ni < NI; ni++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    int c = cbase + ni * 8 + h;
                    psw[ni][h] = c < N ? __half2float(P.sb[(size_t)c * P.G + j]) : 0.0f;
                }
        } else {
#pragma unroll
            for (int ni = 0; ni < NI; ni++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    int c = cbase + ni * 8 + h;
                    pu[ni][h] = c < N ? (int)P.u[(size_t)c * P.G + j] : 0;
                }
        }
    };

    // Group epilogue of group j of part P (p = acc, scaled by 256 on the widened INT8 path).
    auto group_end = [&](const ak_gpart &P, int j) {
        const bool wide = P.bits == 4 && !INT4;
        if (EPI == AK_EPI_GROUP && isplit) {        // single group, integer split: keep p exact
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
#pragma unroll
                for (int ni = 0; ni < NI; ni++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        // the int32 partial lives in accf's register as raw bits (no extra array)
                        int p = acc[mi][ni][e];
                        accf[mi][ni][e] = __int_as_float(__float_as_int(accf[mi][ni][e]) + (wide ? (p >> 8) : p));
                        acc[mi][ni][e] = 0;
                    }
        } else if (EPI == AK_EPI_GROUP) {
            float sx[MI][2], sw[NI][2];
            if (PFS) {
#pragma unroll
                for (int mi = 0; mi < MI; mi++) { sx[mi][0] = psx[mi][0]; sx[mi][1] = psx[mi][1]; }
#pragma unroll
                for (int ni = 0; ni < NI; ni++) { sw[ni][0] = psw[ni][0]; sw[ni][1] = psw[ni][1]; }
                load_scales(P, j + 1);
            } else {
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    int r = rbase + mi * 16 + h * 8;
                    sx[mi][h] = r < M ? __half2float(P.sa[(size_t)r * P.G + j]) : 0.0f;
                }
#pragma unroll
            for (int ni = 0; ni < NI; ni++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    int c = cbase + ni * 8 + h;
                    sw[ni][h] = c < N ? __half2float(P.sb[(size_t)c * P.G + j]) : 0.0f;
                }
            }
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
#pragma unroll
                for (int ni = 0; ni < NI; ni++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int p = acc[mi][ni][e];
                        float pf;
                        if (P.bits == 4) pf = i2f_small(wide ? (p >> 8) : p);
                        else pf = __int2float_rn(p);
                        float sig = __fmul_rn(sx[mi][e >> 1], sw[ni][e & 1]);
                        accf[mi][ni][e] = __fmaf_rn(pf, sig, accf[mi][ni][e]);
                        acc[mi][ni][e] = 0;
                    }
        } else {
            int u[NI][2];
            if (PFS) {
#pragma unroll
                for (int ni = 0; ni < NI; ni++) { u[ni][0] = pu[ni][0]; u[ni][1] = pu[ni][1]; }
                load_scales(P, j + 1);
            } else {
#pragma unroll
            for (int ni = 0; ni < NI; ni++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    int c = cbase + ni * 8 + h;
                    u[ni][h] = c < N ? (int)P.u[(size_t)c * P.G + j] : 0;
                }
            }
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
#pragma unroll
                for (int ni = 0; ni < NI; ni++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int p = acc[mi][ni][e];
                        if (wide) p >>= 8;
                        accP[mi][ni][e] += u[ni][e & 1] * p;
                        acc[mi][ni][e] = 0;
                    }
        }
    };

    // Group tracking without divisions in the loop: gj = current group of the current part, gend =
    // its end chunk (exclusive, clipped to the part). Parts are visited in order: part 0, then 1.
    int gj = cs0 / a.p[0].gch;
    int gend = min((gj + 1) * a.p[0].gch, nch0);
    if (PFS && !(EPI == AK_EPI_GROUP && isplit)) load_scales(a.p[0], gj);
    auto compute_tile = [&](int t, int stage) {
        if (t == T0) {                                           // first tile of the outlier part
            gj = 0;
            gend = min(a.p[1].gch, nch1);
            if (PFS) load_scales(a.p[1], 0);
        }
        const bool p1 = t >= T0;
        const ak_gpart &P = p1 ? a.p[1] : a.p[0];
        const int tl = p1 ? t - T0 : t;
        const int nch = P.kb >> 4, cs = p1 ? cs1 : cs0, ce = p1 ? ce1 : ce0;
        // After chunk c: a group ends at its own end (gend, clipped to K) or, with the integer split,
        // at the end of this block's range (the partial p is flushed; integer sums are split-exact).
        auto after = [&](int c) {
            if (c + 1 == gend) {
                group_end(P, gj);
                gj++;
                gend = min(gend + P.gch, nch);
            } else if (isplit && c + 1 == ce) {
                group_end(P, gj);
            }
        };
        const uint8_t *bA = sA + stage * BM * BKB, *bB = sB + stage * BN * BKB;
#pragma unroll
        for (int ks = 0; ks < BKB / 32; ks++) {
            const int c0 = cs + tl * CPR + ks * 2;   // first 16-byte chunk of this k-step
            if (c0 >= ce) break;                   // uniform: padding beyond this block's K range
            uint32_t ra[MI][4], rb[NI / 2][4];
#pragma unroll
            for (int mi = 0; mi < MI; mi++) {
                int row = wm * WTM + mi * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
                int ch = ks * 2 + (lane >> 4);
                ldsm_x4(smem_u32(bA + row * BKB + (swz<BKB>(row, ch) << 4)), ra[mi][0], ra[mi][1],
                        ra[mi][2], ra[mi][3]);
            }
#pragma unroll
            for (int np = 0; np < NI / 2; np++) {
                int row = wn * WTN + np * 16 + (lane & 7) + (lane >> 4) * 8;
                int ch = ks * 2 + ((lane >> 3) & 1);
                ldsm_x4(smem_u32(bB + row * BKB + (swz<BKB>(row, ch) << 4)), rb[np][0], rb[np][1],
                        rb[np][2], rb[np][3]);
            }
            if (P.bits == 8) {
#pragma unroll
                for (int mi = 0; mi < MI; mi++)
#pragma unroll
                    for (int ni = 0; ni < NI; ni++)
                        mma_s8(acc[mi][ni], ra[mi][0], ra[mi][1], ra[mi][2], ra[mi][3], rb[ni >> 1][(ni & 1) * 2],
                               rb[ni >> 1][(ni & 1) * 2 + 1]);
                const int c1 = c0 + 1;          // 8-bit: gch, nch and split bounds are even
                after(c1);
            } else if (INT4) {
                if (P.gch == 1) {               // g = 32: each half of the k64 mma is one group
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        if (c0 + h >= ce) break;
#pragma unroll
                        for (int mi = 0; mi < MI; mi++)
#pragma unroll
                            for (int ni = 0; ni < NI; ni++)
                                mma_s4(acc[mi][ni], h ? 0u : ra[mi][0], h ? 0u : ra[mi][1], h ? ra[mi][2] : 0u,
                                       h ? ra[mi][3] : 0u, rb[ni >> 1][(ni & 1) * 2], rb[ni >> 1][(ni & 1) * 2 + 1]);
                        after(c0 + h);              // gch == 1: every chunk ends a group
                    }
                } else {
#pragma unroll
                    for (int mi = 0; mi < MI; mi++)
#pragma unroll
                        for (int ni = 0; ni < NI; ni++)
                            mma_s4(acc[mi][ni], ra[mi][0], ra[mi][1], ra[mi][2], ra[mi][3], rb[ni >> 1][(ni & 1) * 2],
                                   rb[ni >> 1][(ni & 1) * 2 + 1]);
                    // gch even: a group can only end after the second chunk (or at the last chunk)
                    const int c1 = c0 + 1 < ce ? c0 + 1 : ce - 1;
                    after(c1);
                }
            } else {
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int c = c0 + h;
                    if (c >= ce) break;
#pragma unroll
                    for (int mi = 0; mi < MI; mi++) {
                        uint32_t w0 = ra[mi][2 * h], w1 = ra[mi][2 * h + 1];   // rows g, g+8
                        uint32_t a0 = (w0 << 4) & 0xF0F0F0F0u, a2 = w0 & 0xF0F0F0F0u;
                        uint32_t a1 = (w1 << 4) & 0xF0F0F0F0u, a3 = w1 & 0xF0F0F0F0u;
#pragma unroll
                        for (int ni = 0; ni < NI; ni++) {
                            uint32_t wb = rb[ni >> 1][(ni & 1) * 2 + h];
                            mma_s8(acc[mi][ni], a0, a1, a2, a3, (wb << 4) & 0xF0F0F0F0u, wb & 0xF0F0F0F0u);
                        }
                    }
                    after(c);
                }
            }
        }
    };

    // Multistage pipeline.
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < T) load_tile(s, s);
        cp_commit();
    }
    for (int t = 0; t < T; t++) {
        cp_wait<STAGES - 2>();
        __syncthreads();
        int tn = t + STAGES - 1;
        if (tn < T) load_tile(tn, tn % STAGES);
        cp_commit();
        compute_tile(t, t % STAGES);
    }
    cp_wait<0>();

    // Split-K: store this block's partial (int32 P or fp32 acc) for ak_combine_kernel.
    if (S > 1) {
#pragma unroll
        for (int mi = 0; mi < MI; mi++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int r = rbase + mi * 16 + h * 8;
                if (r >= M) continue;
#pragma unroll
                for (int ni = 0; ni < NI; ni++)
#pragma unroll
                    for (int q = 0; q < 2; q++) {
                        int c = cbase + ni * 8 + q;
                        if (c >= N) continue;
                        size_t o = ((size_t)z * M + r) * N + c;
                        if (EPI == AK_EPI_MIXED) static_cast<int *>(a.ws)[o] = accP[mi][ni][h * 2 + q];
                        else static_cast<float *>(a.ws)[o] = accf[mi][ni][h * 2 + q];   // int bits if isplit
                    }
            }
        return;
    }
    // Store Y.
    const ak_gpart &P0 = a.p[0];
#pragma unroll
    for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int r = rbase + mi * 16 + h * 8;
            if (r >= M) continue;
            float sxm = 0.0f;
            if (EPI == AK_EPI_MIXED) sxm = __half2float(P0.sa[r]);
#pragma unroll
            for (int ni = 0; ni < NI; ni++)
#pragma unroll
                for (int q = 0; q < 2; q++) {
                    int c = cbase + ni * 8 + q;
                    if (c >= N) continue;
                    float v;
                    if (EPI == AK_EPI_MIXED)
                        v = __fmul_rn(__int2float_rn(accP[mi][ni][h * 2 + q]), __fmul_rn(sxm, __half2float(P0.sb[c])));
                    else
                        v = accf[mi][ni][h * 2 + q];
                    a.Y[(size_t)r * N + c] = __float2half_rn(v);
                }
        }
}

// Combine split-K partials into Y, in the reference's order (aq_gemm): INT: P = sum of int32
// partials (exact), then the single-group epilogue; GROUP: tot = a_0, tot = tot + a_s over the
// non-empty splits s = 1.. (split s is empty when s*c >= G, except the last one with ATOM outliers).
__global__ void combine_kernel(const ak_gemm_args a) {
    const size_t MN = (size_t)a.M * a.N;
    const int S = a.splits;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < MN; i += (size_t)gridDim.x * blockDim.x) {
        const int m = (int)(i / a.N), n = (int)(i % a.N);
        float y;
        if (a.split_mode == AK_SPLIT_INT) {
            const int *w = static_cast<const int *>(a.ws);
            int P = 0;
            for (int s = 0; s < S; s++) P += w[(size_t)s * MN + i];
            const float sig = __fmul_rn(__half2float(a.p[0].sa[m]), __half2float(a.p[0].sb[n]));
            y = a.epi == AK_EPI_MIXED ? __fmul_rn(__int2float_rn(P), sig) : __fmaf_rn(__int2float_rn(P), sig, 0.0f);
        } else {
            const float *w = static_cast<const float *>(a.ws);
            const int G = a.p[0].G, c = (G + S - 1) / S;
            y = w[i];
            for (int s = 1; s < S; s++)
                if (s * c < G || (s == S - 1 && a.nparts > 1)) y = __fadd_rn(y, w[(size_t)s * MN + i]);
        }
        a.Y[i] = __float2half_rn(y);
    }
}

template <int BM, int BN, int BKB, int WM, int WN, int STAGES, int EPI, bool INT4>
int launch_cfg(const ak_gemm_args &a, cudaStream_t st, char *err) {
    auto kern = gemm_kernel<BM, BN, BKB, WM, WN, STAGES, EPI, INT4>;
    const int smem = STAGES * (BM + BN) * BKB;
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e == cudaSuccess) {
        dim3 grid((a.N + BN - 1) / BN, (a.M + BM - 1) / BM, a.splits);
        if (grid.y > 65535 || a.splits > 65535) {
            if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: M = %d / splits = %d exceed the grid limits", a.M, a.splits);
            return -1;
        }
        kern<<<grid, WM * WN * 32, smem, st>>>(a);
        e = cudaGetLastError();
        if (e == cudaSuccess && a.splits > 1) {
            size_t MN = (size_t)a.M * a.N;
            int blocks = (int)((MN + 255) / 256 < 4096 ? (MN + 255) / 256 : 4096);
            combine_kernel<<<blocks, 256, 0, st>>>(a);
            e = cudaGetLastError();
        }
    }
    if (e != cudaSuccess) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: kernel launch failed: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

template <int EPI, bool INT4>
int launch_epi(const ak_gemm_args &a, cudaStream_t st, char *err) {
    const long long big_tiles = (long long)((a.M + 127) / 128) * ((a.N + 127) / 128);
    if (a.M <= 16) return launch_cfg<16, AK_SMALL_BN, AK_SMALL_BKB, 1, 4, AK_SMALL_STAGES, EPI, INT4>(a, st, err);
    if (big_tiles < 264) return launch_cfg<64, 128, 128, 2, 4, 4, EPI, INT4>(a, st, err);
    return launch_cfg<128, 128, 128, 2, 4, 3, EPI, INT4>(a, st, err);
}

}  // namespace

int ak_launch_gemm(const ak_gemm_args &a, ak_path path, cudaStream_t st, char *err) {
    if (a.M < 1 || a.N < 1 || a.splits < 1 || (a.splits > 1 && (!a.ws || a.split_mode == AK_SPLIT_NONE)) ||
        (a.split_mode == AK_SPLIT_INT && (a.nparts > 1 || (a.epi == AK_EPI_GROUP && a.p[0].G != 1)))) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: bad launch M = %d, N = %d, splits = %d (mode %d)", a.M, a.N,
                          a.splits, a.split_mode);
        return -1;
    }
    const bool int4 = path == AK_PATH_INT4;
    if (a.epi == AK_EPI_MIXED)
        return int4 ? launch_epi<AK_EPI_MIXED, true>(a, st, err) : launch_epi<AK_EPI_MIXED, false>(a, st, err);
    return int4 ? launch_epi<AK_EPI_GROUP, true>(a, st, err) : launch_epi<AK_EPI_GROUP, false>(a, st, err);
}
