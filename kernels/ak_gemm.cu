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
// combine_kernel adds in the reference's order. Tile configurations (launch_epi, chosen by the planner
// ak_gemm_plan in ak_plan.cu): M <= 16: gemv_ms_kernel on compute capability 9.x (a cp.async ring in shared
// memory, AK_GEMV_MS), else gemv_kernel (or 16 x AK_SMALL_BN, 4 warps, with AK_GEMV = 0); few
// tiles for the GPU's SMs: 64 x 128, 8 warps; else 128 x 128, 8 warps of 64 x 32. The epilogue arithmetic
// of every kernel is spelled once, in ak_epilogue.cuh.
// Measurements and limits: kernels/NOTES.md.
#include "ak_internal.cuh"
#include "ak_epilogue.cuh"

#include <cstdio>
#include <type_traits>

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


// XOPS > 0: benchmark-only rho emulation (ak_epi_extra, kernels/ak_emul.cu); production kernels use 0.
template <int BM, int BN, int BKB, int WM, int WN, int STAGES, int EPI, bool INT4, int XOPS = 0>
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
                        accf[mi][ni][e] = ak_epi_isplit_add(accf[mi][ni][e], wide ? (p >> 8) : p);
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
                        const int p = acc[mi][ni][e];
                        float pf;
                        if (P.bits == 4) pf = ak_i2f_small(wide ? (p >> 8) : p);
                        else pf = __int2float_rn(p);
                        accf[mi][ni][e] = ak_epi_group_f(pf, sx[mi][e >> 1], sw[ni][e & 1], accf[mi][ni][e]);
                        if (XOPS > 0) accf[mi][ni][e] = ak_epi_extra<XOPS>(accf[mi][ni][e], ak_epi_one(M));
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
                        accP[mi][ni][e] = ak_epi_mixed_add(accP[mi][ni][e], u[ni][e & 1], p);
                        if (XOPS > 0) accf[mi][ni][e] = ak_epi_extra<XOPS>(accf[mi][ni][e], ak_epi_one(M));
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
                    if (EPI == AK_EPI_MIXED) {
                        v = ak_epi_int_out(accP[mi][ni][h * 2 + q], sxm, __half2float(P0.sb[c]), true);
                        if (XOPS > 0) v = __fadd_rn(v, -fabsf(accf[mi][ni][h * 2 + q]));   // + (-0): keeps the extra ops live
                    } else {
                        v = accf[mi][ni][h * 2 + q];
                    }
                    a.Y[(size_t)r * N + c] = __float2half_rn(v);
                }
        }
}

// Combine split-K partials into Y, in the reference's order (aq_gemm): INT: P = sum of int32
// partials (exact), then the single-group epilogue; GROUP: tot = a_0, tot = tot + a_s over the
// non-empty splits s = 1.. (split s is empty when s*c >= G, except the last one with ATOM outliers).
// One element (m, n) (flat index i = m N + n) of the split combine; CG: read the partials through
// L2 (__ldcg), as the last block of gemv_kernel must (other blocks wrote them).
template <bool CG>
DEVI float combine_one(const ak_gemm_args &a, size_t i, int m, int n) {
    const size_t MN = (size_t)a.M * a.N;
    const int S = a.splits;
    float y;
    if (a.split_mode == AK_SPLIT_INT) {
        const int *w = static_cast<const int *>(a.ws);
        int P = 0;
        for (int s = 0; s < S; s++) P += CG ? __ldcg(w + (size_t)s * MN + i) : w[(size_t)s * MN + i];
        y = ak_epi_int_out(P, __half2float(a.p[0].sa[m]), __half2float(a.p[0].sb[n]), a.epi == AK_EPI_MIXED);
    } else {
        const float *w = static_cast<const float *>(a.ws);
        const int G = a.p[0].G;
        y = CG ? __ldcg(w + i) : w[i];
        for (int s = 1; s < S; s++)
            if (ak_split_live(s, S, G, a.nparts))
                y = ak_split_add(y, CG ? __ldcg(w + (size_t)s * MN + i) : w[(size_t)s * MN + i]);
    }
    return y;
}

__global__ void combine_kernel(const ak_gemm_args a) {
    const size_t MN = (size_t)a.M * a.N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < MN; i += (size_t)gridDim.x * blockDim.x) {
        const int m = (int)(i / a.N), n = (int)(i % a.N);
        a.Y[i] = __float2half_rn(combine_one<false>(a, i, m, n));
    }
}

// ---- M <= 16: GEMV-style kernel ---------------------------------------------------------------------
// A warp owns AK_GEMV_NCOLS = 16 output columns (two octets n8) over its block's K range, walked in
// spans of 4 consecutive 16-byte chunks (64 B per row). Lane (g = lane / 4, t = lane % 4) loads, per
// span, chunk t of W rows n0 + g and n0 + 8 + g (16-byte ld.global.nc, L1 bypassed) and of X rows g
// and g + 8 (16-byte __ldg, L1-cached: every warp of the SM reads the same X) straight into registers
// (zero outside M, N and the K range); GV_U spans are loaded before any is used, so 16 loads of 16 B
// per lane are in flight (a shared-memory cp.async ring per warp was tried: slower, kernels/NOTES.md). The 16 bytes of a lane are mma
// fragments directly (the same K permutation for X and W, legal because a group's integer sum is
// order free):
//   4-bit, INT8 path: word w of the chunk -> lo = (w << 4) & 0xF0F0F0F0 (even nibbles, 16 q),
//     hi = w & 0xF0F0F0F0 (odd nibbles): one m16n8k32.s8 per word (a0/a1 = lo of X rows g/g+8,
//     a2/a3 = hi; b0 = lo, b1 = hi of W), acc = 256 p;
//   4-bit, INT4 path: words (2h, 2h+1) are the k64 fragments of one m16n8k64.s4 (h = 0, 1);
//   8-bit: words (2h, 2h+1) are the k32 fragments of one m16n8k32.s8.
// The mma sums the span's 4 chunks (the 4 lanes of a quad); where a span holds chunks of several
// groups (g < 128, or a group not aligned to the span) the span is run once per group with the X
// fragments of the other chunks zeroed. Groups end in ascending K and run gemm_kernel's epilogue
// (the next group's scales are loaded when a group ends). Split-K uses gemm_kernel's split rules
// (AK_SPLIT_INT at span boundaries); the partials are combined in split order by the last block of
// each column tile to finish (a counter per tile after the partials, ak_ws_bytes), with
// combine_kernel's arithmetic: no second launch.
constexpr int GV_WARPS = 4;                 // warps per block
constexpr int GV_NO = AK_GEMV_NCOLS / 8;    // column octets per warp
constexpr int GV_U = AK_GEMV_U;             // spans per batch of loads
static_assert(GV_WARPS * AK_GEMV_NCOLS == AK_GEMV_BLOCK_COLS, "column tile of gemv_kernel");

DEVI uint4 ldg_stream(const uint8_t *p) {
    uint4 r;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
        : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
        : "l"(p));
    return r;
}
DEVI void prefetch_l2(const void *p) { asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p)); }
DEVI uint32_t u4w(const uint4 &v, int w) { return w == 0 ? v.x : (w == 1 ? v.y : (w == 2 ? v.z : v.w)); }

template <int EPI, bool INT4>
__global__ void __launch_bounds__(GV_WARPS * 32, INT4 ? 1 : 4) gemv_kernel(const ak_gemm_args a) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int nw = (blockIdx.x * GV_WARPS + warp) * AK_GEMV_NCOLS;   // first column of this warp
    const int M = a.M, N = a.N;
    const bool live = nw < N;                // dead warps only join the barriers of the split combine
    const int z = blockIdx.z, S = a.splits;
    const bool isplit = a.split_mode == AK_SPLIT_INT;
    const int nch0 = a.p[0].kb >> 4, nch1 = a.nparts > 1 ? a.p[1].kb >> 4 : 0;
    int cs0 = 0, ce0 = nch0;
    bool has1 = a.nparts > 1;
    if (a.split_mode == AK_SPLIT_GROUP) {    // the contract's split, as gemm_kernel
        const int G = a.p[0].G, c = (G + S - 1) / S;
        const int j0 = min(z * c, G), j1 = min(j0 + c, G);
        cs0 = min(j0 * a.p[0].gch, nch0);
        ce0 = min(j1 * a.p[0].gch, nch0);
        has1 = a.nparts > 1 && z == S - 1;
    } else if (isplit) {                     // exact integer split, at span boundaries
        const int T = (nch0 + 3) / 4, tps = (T + S - 1) / S;
        const int t0 = min(z * tps, T), t1 = min(t0 + tps, T);
        cs0 = t0 * 4;
        ce0 = min(t1 * 4, nch0);
        has1 = false;
    }

    int acc[GV_NO][4], accP[GV_NO][4];
    float accf[GV_NO][4];
#pragma unroll
    for (int o = 0; o < GV_NO; o++)
#pragma unroll
        for (int e = 0; e < 4; e++) { acc[o][e] = 0; accP[o][e] = 0; accf[o][e] = 0.0f; }
    // Scales of the current group (GROUP: sx, sw; MIXED: u), loaded when the previous group ends
    // (two register sets loaded two groups ahead cost 25 registers and occupancy: slower).
    float sx[2] = {0.0f, 0.0f}, sw[GV_NO][2];
    int uu[GV_NO][2];
#pragma unroll
    for (int o = 0; o < GV_NO; o++) { sw[o][0] = sw[o][1] = 0.0f; uu[o][0] = uu[o][1] = 0; }
    auto load_scales = [&](const ak_gpart &P, int j) {
        if (j >= P.G) return;
        if (EPI == AK_EPI_GROUP) {
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int r = g + h * 8;
                sx[h] = r < M ? __half2float(P.sa[(size_t)r * P.G + j]) : 0.0f;
            }
#pragma unroll
            for (int o = 0; o < GV_NO; o++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int c = nw + o * 8 + 2 * t + h;
                    sw[o][h] = c < N ? __half2float(P.sb[(size_t)c * P.G + j]) : 0.0f;
                }
        } else {
#pragma unroll
            for (int o = 0; o < GV_NO; o++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int c = nw + o * 8 + 2 * t + h;
                    uu[o][h] = c < N ? (int)P.u[(size_t)c * P.G + j] : 0;
                }
        }
    };
    // Epilogue of the current group (p = acc, 256 p on the widened path), as gemm_kernel's group_end.
    auto group_end = [&](bool wide, bool b4) {
#pragma unroll
        for (int o = 0; o < GV_NO; o++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int p = wide ? (acc[o][e] >> 8) : acc[o][e];
                if (EPI == AK_EPI_GROUP && isplit) {
                    accf[o][e] = ak_epi_isplit_add(accf[o][e], p);
                } else if (EPI == AK_EPI_GROUP) {
                    accf[o][e] = ak_epi_group(p, b4, sx[e >> 1], sw[o][e & 1], accf[o][e]);
                } else {
                    accP[o][e] = ak_epi_mixed_add(accP[o][e], uu[o][e & 1], p);
                }
                acc[o][e] = 0;
            }
    };

    auto run_part = [&](const ak_gpart &P, int cs, int ce, auto bits_c) {
        constexpr int B = decltype(bits_c)::value;
        constexpr bool WIDE = B == 4 && !INT4;
        if (cs >= ce) return;
        const int gch = P.gch, nch = P.kb >> 4;
        int gj = cs / gch;
        int gend = min((gj + 1) * gch, nch);
        const bool scl = !(EPI == AK_EPI_GROUP && isplit);
        if (scl) load_scales(P, gj);
        const bool okx0 = g < M, okx1 = g + 8 < M;
        const uint8_t *xr0 = P.A + (size_t)(okx0 ? g : 0) * P.lda;
        const uint8_t *xr1 = P.A + (size_t)(okx1 ? g + 8 : 0) * P.lda;
        const uint8_t *wr[GV_NO];
        bool okw[GV_NO];
#pragma unroll
        for (int o = 0; o < GV_NO; o++) {
            const int row = nw + o * 8 + g;
            okw[o] = row < N;
            wr[o] = P.B + (size_t)(okw[o] ? row : 0) * P.ldb;
        }
        const uint4 zero = make_uint4(0, 0, 0, 0);
        for (int c0 = cs; c0 < ce; c0 += 4 * GV_U) {
            if (scl && gch < 8 * GV_U) {
                // The per-column scales (sw or u) of the next batch's groups, one DRAM round trip
                // ahead: prefetched to L2 (no registers held); each is read by one lane only.
                const int j0 = min((c0 + 4 * GV_U) / gch, P.G - 1);   // G <= 2048: 128 B lines hold 64 groups
#pragma unroll
                for (int o = 0; o < GV_NO; o++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const int c = min(nw + o * 8 + 2 * t + h, N - 1);
                        const void *p0 = EPI == AK_EPI_GROUP ? (const void *)(P.sb + (size_t)c * P.G + j0)
                                                             : (const void *)(P.u + (size_t)c * P.G + j0);
                        prefetch_l2(p0);
                    }
            }
            uint4 xv[GV_U][2], wv[GV_U][GV_NO];
#pragma unroll
            for (int u = 0; u < GV_U; u++) {      // all loads of the batch first: GV_U * 4 in flight
                const int c = c0 + 4 * u + t;
                const bool in = c < ce;
#pragma unroll
                for (int o = 0; o < GV_NO; o++) wv[u][o] = in && okw[o] ? ldg_stream(wr[o] + (size_t)c * 16) : zero;
                xv[u][0] = in && okx0 ? __ldg(reinterpret_cast<const uint4 *>(xr0 + (size_t)c * 16)) : zero;
                xv[u][1] = in && okx1 ? __ldg(reinterpret_cast<const uint4 *>(xr1 + (size_t)c * 16)) : zero;
            }
#pragma unroll
            for (int u = 0; u < GV_U; u++) {
            const int cb = c0 + 4 * u;
            if (cb >= ce) break;                  // uniform
            const int cend = min(cb + 4, ce);
            const uint4 xv0 = xv[u][0], xv1 = xv[u][1];
            int lo = cb;
            while (lo < cend) {                 // one pass per group in this span (uniform)
                const int hi = min(gend, cend);
                const bool act = (lo == cb && hi == cend) || (cb + t >= lo && cb + t < hi);
                const uint4 x0 = act ? xv0 : zero, x1 = act ? xv1 : zero;
                if (WIDE) {
#pragma unroll
                    for (int w = 0; w < 4; w++) {
                        const uint32_t xa = u4w(x0, w), xb = u4w(x1, w);
                        const uint32_t a0 = (xa << 4) & 0xF0F0F0F0u, a2 = xa & 0xF0F0F0F0u;
                        const uint32_t a1 = (xb << 4) & 0xF0F0F0F0u, a3 = xb & 0xF0F0F0F0u;
#pragma unroll
                        for (int o = 0; o < GV_NO; o++) {
                            const uint32_t wb = u4w(wv[u][o], w);
                            mma_s8(acc[o], a0, a1, a2, a3, (wb << 4) & 0xF0F0F0F0u, wb & 0xF0F0F0F0u);
                        }
                    }
                } else {
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const uint32_t a0 = u4w(x0, 2 * h), a1 = u4w(x1, 2 * h);
                        const uint32_t a2 = u4w(x0, 2 * h + 1), a3 = u4w(x1, 2 * h + 1);
#pragma unroll
                        for (int o = 0; o < GV_NO; o++) {
                            const uint32_t b0 = u4w(wv[u][o], 2 * h), b1 = u4w(wv[u][o], 2 * h + 1);
                            if (B == 8) mma_s8(acc[o], a0, a1, a2, a3, b0, b1);
                            else mma_s4(acc[o], a0, a1, a2, a3, b0, b1);
                        }
                    }
                }
                if (hi == gend) {                   // group gj ends here
                    group_end(WIDE, B == 4);
                    gj++;
                    gend = min(gend + gch, nch);
                    if (scl) load_scales(P, gj);
                } else if (isplit && hi == ce) {    // end of this block's integer range
                    group_end(WIDE, B == 4);
                }
                lo = hi;
            }
            }
        }
    };
    if (live) {
        if (a.p[0].bits == 4) run_part(a.p[0], cs0, ce0, std::integral_constant<int, 4>());
        else run_part(a.p[0], cs0, ce0, std::integral_constant<int, 8>());
        if (has1) {
            if (a.p[1].bits == 8) run_part(a.p[1], 0, nch1, std::integral_constant<int, 8>());
            else run_part(a.p[1], 0, nch1, std::integral_constant<int, 4>());
        }
    }

    // Store: split partials (int32 P or fp32 acc, then the last block of the tile combines), else Y.
    const ak_gpart &P0 = a.p[0];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int r = g + h * 8;
        if (!live || r >= M) continue;
        float sxm = 0.0f;
        if (EPI == AK_EPI_MIXED && S == 1) sxm = __half2float(P0.sa[r]);
#pragma unroll
        for (int o = 0; o < GV_NO; o++)
#pragma unroll
            for (int q = 0; q < 2; q++) {
                const int c = nw + o * 8 + 2 * t + q;
                if (c >= N) continue;
                const int e = h * 2 + q;
                if (S > 1) {
                    const size_t i = ((size_t)z * M + r) * N + c;
                    if (EPI == AK_EPI_MIXED) static_cast<int *>(a.ws)[i] = accP[o][e];
                    else static_cast<float *>(a.ws)[i] = accf[o][e];   // int bits if isplit
                } else {
                    float v;
                    if (EPI == AK_EPI_MIXED)
                        v = ak_epi_int_out(accP[o][e], sxm, __half2float(P0.sb[c]), true);
                    else
                        v = accf[o][e];
                    a.Y[(size_t)r * N + c] = __float2half_rn(v);
                }
            }
    }
    if (S == 1) return;
    __shared__ unsigned last;
    unsigned *cnt = a.cnt;                   // zero before the launch (ak_gemm_args)
    __threadfence();                         // this block's partials, visible before the count
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&cnt[blockIdx.x], 1u) == (unsigned)(S - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    // combine_one's arithmetic, with the loops swapped (splits outer, this thread's PER elements
    // inner) so that PER partial loads are in flight at a time; the split order per element is kept.
    constexpr int PER = 16 * AK_GEMV_BLOCK_COLS / (GV_WARPS * 32);   // M <= 16
    const int n0 = blockIdx.x * AK_GEMV_BLOCK_COLS, nc = min(AK_GEMV_BLOCK_COLS, N - n0), tot = M * nc;
    const size_t MN = (size_t)M * N;
    size_t off[PER];
    int mm[PER], nn[PER];
#pragma unroll
    for (int k = 0; k < PER; k++) {
        const int i = min((int)threadIdx.x + k * GV_WARPS * 32, tot - 1);   // clamped: duplicates store the same
        mm[k] = i / nc;
        nn[k] = n0 + i % nc;
        off[k] = (size_t)mm[k] * N + nn[k];
    }
    float y[PER];
    if (a.split_mode == AK_SPLIT_INT) {
        const int *w = static_cast<const int *>(a.ws);
        int Pk[PER];
#pragma unroll
        for (int k = 0; k < PER; k++) Pk[k] = 0;
        for (int s = 0; s < S; s++)
#pragma unroll
            for (int k = 0; k < PER; k++) Pk[k] += __ldcg(w + (size_t)s * MN + off[k]);
#pragma unroll
        for (int k = 0; k < PER; k++) {
            y[k] = ak_epi_int_out(Pk[k], __half2float(a.p[0].sa[mm[k]]), __half2float(a.p[0].sb[nn[k]]),
                                  a.epi == AK_EPI_MIXED);
        }
    } else {
        const float *w = static_cast<const float *>(a.ws);
        const int G = a.p[0].G;
#pragma unroll
        for (int k = 0; k < PER; k++) y[k] = __ldcg(w + off[k]);
        for (int s = 1; s < S; s++)
            if (ak_split_live(s, S, G, a.nparts))
#pragma unroll
                for (int k = 0; k < PER; k++) y[k] = ak_split_add(y[k], __ldcg(w + (size_t)s * MN + off[k]));
    }
#pragma unroll
    for (int k = 0; k < PER; k++)
        if ((int)threadIdx.x + k * GV_WARPS * 32 < tot) a.Y[off[k]] = __float2half_rn(y[k]);
    if (threadIdx.x == 0) cnt[blockIdx.x] = 0u;   // ready for the next launch with this workspace
}

// ---- M <= 16: multistage GEMV (gemv_ms_kernel; compute capability 9.x, AK_GEMV_MS) ----------------------
// gemv_kernel's warp work (16 columns per warp, the same mma fragments, group passes and epilogue),
// but the codes reach the warps through a per-block cp.async ring in shared memory instead of
// registers, so the bytes in flight no longer depend on registers or on how many warps an SM holds
// (kernels/NOTES.md "Decode GEMV"):
//   - block = 4 warps = AK_GEMV_BLOCK_COLS (64) columns, its K range (the split rules of gemv_kernel;
//     the exact integer split at stage boundaries) walked in stages of MS_SKC 16-byte chunks (256 B)
//     per row; a stage holds the 64 W rows, the 16 X rows (X once per block, not once per warp) and,
//     where the loop needs them, the scales of the groups the stage touches;
//   - MS_ST stages in the ring (classic multistage: cp.async.wait_group MS_ST - 2, one __syncthreads
//     per stage, then the copies of stage i + MS_ST - 1 are issued into the buffer stage i - 1 used):
//     MS_ST - 1 stages (48 KB of W at 4 stages) in flight per block, 2 blocks per SM;
//   - W copies are plain cp.async.cg (an L2 evict_first cache-hint copy,
//     `cp.async.cg.shared.global.L2::cache_hint`, raised "illegal instruction" on the H200: memcheck,
//     2026-11-30);
//   - rows of 256 B, chunk c of row r at c ^ 4 (r & 1): the 8 lanes of a 16-byte shared-load phase
//     (rows g, g + 1, chunks 4u..4u+3) hit 8 distinct bank groups, and the copy phases (8 chunks of
//     one row) too;
//   - scales: the 4-byte word holding each needed fp16 sw / sx (u8 u for MIXED) is copied by
//     cp.async 4 B (src-size clipped at the array's end: never past [rows, G]) into a per-stage slot
//     [80 rows][ngs] (ngs = the most groups a stage can touch); the lane picks its half / byte by the
//     element's parity (the arrays' bases are 4-byte aligned: ms_serves checks). A group's scales are
//     read from the stage holding its last chunk: no global load in the loop;
//   - chunks past the stage's end hold stale data: their X is zeroed by the group pass mask (`act`),
//     so they add nothing; X rows >= M are zeroed once at the start; W rows >= N are never copied
//     (their columns are not stored).
// Split partials and the in-kernel combine: gemv_kernel's (the last block of each 64-column tile).
// OFF (0) by default: bit-exact but SLOWER than gemv_kernel on the H200 (2026-11-30, second run, after
// the L2 cache-hint copy that raised "illegal instruction" in the first run was replaced: `apex4 check`
// 535/536 bit-exact on int8 and int4, memcheck and racecheck clean; the 536th case, w4a4-g32 at
// N = 8192, K = 28672, M = 16, is refused at launch with 102400 B of shared memory: "too many resources
// requested"). LLaMA-2-70B, M = 16: q/o pc 22.4 us vs 18.7, gate/up pc 71.5 vs 42.4, g128 101 vs 66:
// the consumer (8 warps per SM reading every fragment from shared memory) is the limit, not the bytes in
// flight (kernels/NOTES.md "Decode GEMV"). Build with -DAK_GEMV_MS=1 to work on it.
#ifndef AK_GEMV_MS
#define AK_GEMV_MS 0           // 0: M <= 16 always runs gemv_kernel (and the planner its split policy)
#endif
#ifndef AK_GEMV_MS_STAGES
#define AK_GEMV_MS_STAGES 4
#endif
constexpr int MS_NT = GV_WARPS * 32;                 // 128 threads
constexpr int MS_BC = AK_GEMV_BLOCK_COLS;            // 64 columns (16 per warp)
constexpr int MS_SKC = 16;                           // 16-byte chunks per row and stage
constexpr int MS_RB = MS_SKC * 16;                   // 256 bytes per row and stage
constexpr int MS_ST = AK_GEMV_MS_STAGES;
constexpr int MS_CODES = (MS_BC + 16) * MS_RB;       // 64 W rows, then 16 X rows
constexpr int MS_SLOT_ROWS = MS_BC + 16;             // scale-word rows: 64 W columns, then 16 X rows
static_assert(MS_ST >= 2 && MS_ST <= 8, "gemv_ms stages");
static_assert(MS_NT == 8 * MS_SKC && MS_BC % 8 == 0, "gemv_ms copy mapping: 8 rows x 16 chunks per pass");

// Scale-word slots per row and stage: the most groups of gch chunks that MS_SKC consecutive chunks touch.
__host__ __device__ inline int ms_ngs(int gch, int G) {
    const int n = (MS_SKC + gch - 2) / gch + 1;
    return n < G ? n : G;
}
// Bytes of one ring stage of a launch (host: the launch's dynamic shared memory / MS_ST; kernel: layout).
__host__ __device__ inline int ms_stage_bytes(const ak_gemm_args &a) {
    int ngs = 0;
    if (!(a.epi == AK_EPI_GROUP && a.split_mode == AK_SPLIT_INT)) {   // scales needed inside the loop
        ngs = ms_ngs(a.p[0].gch, a.p[0].G);
        if (a.nparts > 1) ngs = max(ngs, ms_ngs(a.p[1].gch, a.p[1].G));
    }
    return MS_CODES + MS_SLOT_ROWS * ngs * 4;
}
DEVI int ms_swz(int r, int c) { return c ^ ((r & 1) << 2); }

// The aligned 4-byte word holding the element at `elem` (array ends at `end`, base 4-byte aligned):
// src-size clipped so nothing past `end` is read (the rest of the word is zero-filled).
DEVI void cp_async_word(uint32_t dst, const void *elem, const void *end) {
    const uintptr_t w = reinterpret_cast<uintptr_t>(elem) & ~static_cast<uintptr_t>(3);
    const uintptr_t left = reinterpret_cast<uintptr_t>(end) - w;
    const int src = left >= 4 ? 4 : static_cast<int>(left);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(w), "r"(src));
}
DEVI float ms_half(uint32_t word, unsigned e) {   // fp16 element e (its word as copied) -> float
    return __half2float(__ushort_as_half(static_cast<unsigned short>(e & 1u ? word >> 16 : word & 0xFFFFu)));
}

// B0: code bits of the main part (4 or 8); B1: of the outlier part (8), 0 = none.
template <int EPI, bool INT4, int B0, int B1>
__global__ void __launch_bounds__(MS_NT) gemv_ms_kernel(const ak_gemm_args a) {
    extern __shared__ __align__(128) uint8_t smem[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int n0 = blockIdx.x * MS_BC, nw = n0 + warp * AK_GEMV_NCOLS;   // block / warp first column
    const int M = a.M, N = a.N;
    const bool live = nw < N;                // dead warps copy and join the barriers only
    const int z = blockIdx.z, S = a.splits;
    const bool isplit = a.split_mode == AK_SPLIT_INT;
    const int nch0 = a.p[0].kb >> 4, nch1 = B1 ? a.p[1].kb >> 4 : 0;
    int cs0 = 0, ce0 = nch0;
    bool has1 = B1 != 0;
    if (a.split_mode == AK_SPLIT_GROUP) {    // the contract's split, as gemm_kernel / gemv_kernel
        const int G = a.p[0].G, c = (G + S - 1) / S;
        const int j0 = min(z * c, G), j1 = min(j0 + c, G);
        cs0 = min(j0 * a.p[0].gch, nch0);
        ce0 = min(j1 * a.p[0].gch, nch0);
        has1 = B1 != 0 && z == S - 1;
    } else if (isplit) {                     // exact integer split, at stage boundaries
        const int T = (nch0 + MS_SKC - 1) / MS_SKC, tps = (T + S - 1) / S;
        const int t0 = min(z * tps, T), t1 = min(t0 + tps, T);
        cs0 = t0 * MS_SKC;
        ce0 = min(t1 * MS_SKC, nch0);
        has1 = false;
    }
    const int T0 = (ce0 - cs0 + MS_SKC - 1) / MS_SKC;
    const int T = T0 + (has1 ? (nch1 + MS_SKC - 1) / MS_SKC : 0);
    const bool scl = !(EPI == AK_EPI_GROUP && isplit);
    const int sbytes = ms_stage_bytes(a);
    const int ngs = (sbytes - MS_CODES) / (MS_SLOT_ROWS * 4);

    // X rows >= M: zero in every stage once (never copied; their mma rows are then exact zeros).
    for (int s = 0; s < MS_ST; s++)
        for (int q = tid; q < (16 - M) * MS_SKC; q += MS_NT)
            *reinterpret_cast<uint4 *>(smem + s * sbytes + (MS_BC + M + q / MS_SKC) * MS_RB + (q % MS_SKC) * 16) =
                make_uint4(0, 0, 0, 0);

    // Copies of stage i: thread (cr, cch) = (tid / 16, tid % 16) copies chunk cch of rows cr + 8k.
    const int cr = tid / MS_SKC, cch = tid % MS_SKC;
    const int coff = cr * MS_RB + (ms_swz(cr, cch) << 4);   // rows cr + 8k: same parity, + 8k rows
    auto issue = [&](int i) {
        const bool p1 = B1 != 0 && i >= T0;
        const uint8_t *A = p1 ? a.p[1].A : a.p[0].A, *B = p1 ? a.p[1].B : a.p[0].B;
        const int lda = p1 ? a.p[1].lda : a.p[0].lda, ldb = p1 ? a.p[1].ldb : a.p[0].ldb;
        const int c0 = p1 ? (i - T0) * MS_SKC : cs0 + i * MS_SKC;
        const int c1 = min(c0 + MS_SKC, p1 ? nch1 : ce0);
        uint8_t *stg = smem + (i % MS_ST) * sbytes;
        if (c0 + cch < c1) {
            const uint32_t dst = smem_u32(stg + coff);
            const uint8_t *wsrc = B + (size_t)(n0 + cr) * ldb + (size_t)(c0 + cch) * 16;
#pragma unroll
            for (int k = 0; k < MS_BC / 8; k++)
                if (n0 + cr + 8 * k < N) cp_async16(dst + k * 8 * MS_RB, wsrc + (size_t)k * 8 * ldb, 16);
            const uint8_t *xsrc = A + (size_t)cr * lda + (size_t)(c0 + cch) * 16;
#pragma unroll
            for (int k = 0; k < 2; k++)
                if (cr + 8 * k < M) cp_async16(dst + (MS_BC + 8 * k) * MS_RB, xsrc + (size_t)k * 8 * lda, 16);
        }
        if (scl) {   // words of the scales of groups [ja, ja + ng) (those the stage's chunks touch)
            const int gch = p1 ? a.p[1].gch : a.p[0].gch, G = p1 ? a.p[1].G : a.p[0].G;
            const int ja = c0 / gch, ng = (c1 - 1) / gch - ja + 1;
            const uint32_t sd = smem_u32(stg + MS_CODES);
            const int rows = EPI == AK_EPI_GROUP ? MS_SLOT_ROWS : MS_BC;
            for (int q = tid; q < rows * ng; q += MS_NT) {
                const int row = q / ng, k = q - row * ng, j = ja + k;
                const uint32_t dst = sd + (uint32_t)(row * ngs + k) * 4;
                if (EPI == AK_EPI_MIXED) {
                    if (n0 + row < N) cp_async_word(dst, a.p[0].u + (size_t)(n0 + row) * G + j, a.p[0].u + (size_t)N * G);
                } else if (row < MS_BC) {
                    const __half *sb = p1 ? a.p[1].sb : a.p[0].sb;
                    if (n0 + row < N) cp_async_word(dst, sb + (size_t)(n0 + row) * G + j, sb + (size_t)N * G);
                } else {
                    const __half *sa = p1 ? a.p[1].sa : a.p[0].sa;
                    const int r = row - MS_BC;
                    if (r < M) cp_async_word(dst, sa + (size_t)r * G + j, sa + (size_t)M * G);
                }
            }
        }
    };

    int acc[GV_NO][4], accP[GV_NO][4];
    float accf[GV_NO][4];
#pragma unroll
    for (int o = 0; o < GV_NO; o++)
#pragma unroll
        for (int e = 0; e < 4; e++) { acc[o][e] = 0; accP[o][e] = 0; accf[o][e] = 0.0f; }
    int gj = 0, gend = 0;   // current group of the current part and its end chunk (clipped to the part)

    // Consume stage i (all of it in shared memory): gemv_kernel's span / group-pass / mma code.
    auto consume = [&](int i, auto bits_c) {
        constexpr int B = decltype(bits_c)::value;
        constexpr bool WIDE = B == 4 && !INT4;
        const bool p1 = B1 != 0 && i >= T0;
        const int gch = p1 ? a.p[1].gch : a.p[0].gch, G = p1 ? a.p[1].G : a.p[0].G;
        const int nch = p1 ? nch1 : nch0, cs = p1 ? 0 : cs0, ce = p1 ? nch1 : ce0;
        const int c0 = cs + (p1 ? i - T0 : i) * MS_SKC, c1 = min(c0 + MS_SKC, ce);
        if (i == 0 || i == T0) {             // first stage of a part
            gj = cs / gch;
            gend = min((gj + 1) * gch, nch);
        }
        const uint8_t *stg = smem + (i % MS_ST) * sbytes;
        const uint32_t *slot = reinterpret_cast<const uint32_t *>(stg + MS_CODES);
        const int ja = c0 / gch;
        uint4 wv[4][GV_NO], xv[4][2];        // the whole stage first (stale chunks are masked below)
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int ch = 4 * u + t;
#pragma unroll
            for (int o = 0; o < GV_NO; o++) {
                const int row = warp * AK_GEMV_NCOLS + o * 8 + g;
                wv[u][o] = *reinterpret_cast<const uint4 *>(stg + row * MS_RB + (ms_swz(row, ch) << 4));
            }
            xv[u][0] = *reinterpret_cast<const uint4 *>(stg + (MS_BC + g) * MS_RB + (ms_swz(g, ch) << 4));
            xv[u][1] = *reinterpret_cast<const uint4 *>(stg + (MS_BC + g + 8) * MS_RB + (ms_swz(g, ch) << 4));
        }
        // Epilogue of group gj (its scales in this stage's slot gj - ja), as gemv_kernel's group_end.
        auto group_end = [&](bool with_scales) {
            float sx[2] = {0.0f, 0.0f}, sw[GV_NO][2];
            int uu[GV_NO][2];
#pragma unroll
            for (int o = 0; o < GV_NO; o++) { sw[o][0] = sw[o][1] = 0.0f; uu[o][0] = uu[o][1] = 0; }
            if (with_scales) {
                const int k = gj - ja;
                if (EPI == AK_EPI_GROUP) {
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const int r = g + 8 * h;
                        sx[h] = ms_half(slot[(MS_BC + r) * ngs + k], (unsigned)r * (unsigned)G + (unsigned)gj);
                    }
                }
#pragma unroll
                for (int o = 0; o < GV_NO; o++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const int row = warp * AK_GEMV_NCOLS + o * 8 + 2 * t + h;
                        const uint32_t w = slot[row * ngs + k];
                        const unsigned e = (unsigned)(n0 + row) * (unsigned)G + (unsigned)gj;
                        if (EPI == AK_EPI_GROUP) sw[o][h] = ms_half(w, e);
                        else uu[o][h] = (int)((w >> (8 * (e & 3u))) & 0xFFu);
                    }
            }
#pragma unroll
            for (int o = 0; o < GV_NO; o++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int p = WIDE ? (acc[o][e] >> 8) : acc[o][e];
                    if (EPI == AK_EPI_GROUP && isplit) accf[o][e] = ak_epi_isplit_add(accf[o][e], p);
                    else if (EPI == AK_EPI_GROUP) accf[o][e] = ak_epi_group(p, B == 4, sx[e >> 1], sw[o][e & 1], accf[o][e]);
                    else accP[o][e] = ak_epi_mixed_add(accP[o][e], uu[o][e & 1], p);
                    acc[o][e] = 0;
                }
        };
        const uint4 zero = make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int cb = c0 + 4 * u;
            if (cb >= c1) break;                  // uniform
            const int cend = min(cb + 4, c1);
            int lo = cb;
            while (lo < cend) {                   // one pass per group in this span (uniform)
                const int hi = min(gend, cend);
                // a full span of one group uses every lane; else only the lanes whose chunk is in [lo, hi)
                const bool act = (lo == cb && hi == cb + 4) || (cb + t >= lo && cb + t < hi);
                const uint4 x0 = act ? xv[u][0] : zero, x1 = act ? xv[u][1] : zero;
                if (WIDE) {
#pragma unroll
                    for (int w = 0; w < 4; w++) {
                        const uint32_t xa = u4w(x0, w), xb = u4w(x1, w);
                        const uint32_t a0 = (xa << 4) & 0xF0F0F0F0u, a2 = xa & 0xF0F0F0F0u;
                        const uint32_t a1 = (xb << 4) & 0xF0F0F0F0u, a3 = xb & 0xF0F0F0F0u;
#pragma unroll
                        for (int o = 0; o < GV_NO; o++) {
                            const uint32_t wb = u4w(wv[u][o], w);
                            mma_s8(acc[o], a0, a1, a2, a3, (wb << 4) & 0xF0F0F0F0u, wb & 0xF0F0F0F0u);
                        }
                    }
                } else {
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const uint32_t a0 = u4w(x0, 2 * h), a1 = u4w(x1, 2 * h);
                        const uint32_t a2 = u4w(x0, 2 * h + 1), a3 = u4w(x1, 2 * h + 1);
#pragma unroll
                        for (int o = 0; o < GV_NO; o++) {
                            const uint32_t b0 = u4w(wv[u][o], 2 * h), b1 = u4w(wv[u][o], 2 * h + 1);
                            if (B == 8) mma_s8(acc[o], a0, a1, a2, a3, b0, b1);
                            else mma_s4(acc[o], a0, a1, a2, a3, b0, b1);
                        }
                    }
                }
                if (hi == gend) {                   // group gj ends here
                    group_end(scl);
                    gj++;
                    gend = min(gend + gch, nch);
                } else if (isplit && hi == ce) {    // end of this block's integer range
                    group_end(false);
                }
                lo = hi;
            }
        }
    };

    // The ring: MS_ST - 1 stages issued ahead; per stage: wait for its copies (own), barrier (all
    // threads' copies visible, everyone done with the buffer about to be refilled), refill, consume.
#pragma unroll
    for (int s = 0; s < MS_ST - 1; s++) {
        if (s < T) issue(s);
        cp_commit();
    }
    for (int i = 0; i < T; i++) {
        cp_wait<MS_ST - 2>();
        __syncthreads();
        if (i + MS_ST - 1 < T) issue(i + MS_ST - 1);
        cp_commit();
        if (live) {
            if (B1 == 0 || i < T0) consume(i, std::integral_constant<int, B0>());
            else consume(i, std::integral_constant<int, (B1 ? B1 : B0)>());
        }
    }
    cp_wait<0>();

    // Store: split partials (int32 P or fp32 acc, then the last block of the tile combines), else Y
    // (gemv_kernel's code).
    const ak_gpart &P0 = a.p[0];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int r = g + h * 8;
        if (!live || r >= M) continue;
        float sxm = 0.0f;
        if (EPI == AK_EPI_MIXED && S == 1) sxm = __half2float(P0.sa[r]);
#pragma unroll
        for (int o = 0; o < GV_NO; o++)
#pragma unroll
            for (int q = 0; q < 2; q++) {
                const int c = nw + o * 8 + 2 * t + q;
                if (c >= N) continue;
                const int e = h * 2 + q;
                if (S > 1) {
                    const size_t i = ((size_t)z * M + r) * N + c;
                    if (EPI == AK_EPI_MIXED) static_cast<int *>(a.ws)[i] = accP[o][e];
                    else static_cast<float *>(a.ws)[i] = accf[o][e];   // int bits if isplit
                } else {
                    float v;
                    if (EPI == AK_EPI_MIXED)
                        v = ak_epi_int_out(accP[o][e], sxm, __half2float(P0.sb[c]), true);
                    else
                        v = accf[o][e];
                    a.Y[(size_t)r * N + c] = __float2half_rn(v);
                }
            }
    }
    if (S == 1) return;
    __shared__ unsigned last;
    unsigned *cnt = a.cnt;                   // zero before the launch (ak_gemm_args)
    __threadfence();                         // this block's partials, visible before the count
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(&cnt[blockIdx.x], 1u) == (unsigned)(S - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    // combine_one's arithmetic (splits outer, PER elements per thread inner; split order kept).
    constexpr int PER = 16 * MS_BC / MS_NT;   // M <= 16
    const int nc = min(MS_BC, N - n0), tot = M * nc;
    const size_t MN = (size_t)M * N;
    size_t off[PER];
    int mm[PER], nn[PER];
#pragma unroll
    for (int k = 0; k < PER; k++) {
        const int i = min((int)threadIdx.x + k * MS_NT, tot - 1);   // clamped: duplicates store the same
        mm[k] = i / nc;
        nn[k] = n0 + i % nc;
        off[k] = (size_t)mm[k] * N + nn[k];
    }
    float y[PER];
    if (a.split_mode == AK_SPLIT_INT) {
        const int *w = static_cast<const int *>(a.ws);
        int Pk[PER];
#pragma unroll
        for (int k = 0; k < PER; k++) Pk[k] = 0;
        for (int s = 0; s < S; s++)
#pragma unroll
            for (int k = 0; k < PER; k++) Pk[k] += __ldcg(w + (size_t)s * MN + off[k]);
#pragma unroll
        for (int k = 0; k < PER; k++)
            y[k] = ak_epi_int_out(Pk[k], __half2float(a.p[0].sa[mm[k]]), __half2float(a.p[0].sb[nn[k]]),
                                  a.epi == AK_EPI_MIXED);
    } else {
        const float *w = static_cast<const float *>(a.ws);
        const int G = a.p[0].G;
#pragma unroll
        for (int k = 0; k < PER; k++) y[k] = __ldcg(w + off[k]);
        for (int s = 1; s < S; s++)
            if (ak_split_live(s, S, G, a.nparts))
#pragma unroll
                for (int k = 0; k < PER; k++) y[k] = ak_split_add(y[k], __ldcg(w + (size_t)s * MN + off[k]));
    }
#pragma unroll
    for (int k = 0; k < PER; k++)
        if ((int)threadIdx.x + k * MS_NT < tot) a.Y[off[k]] = __float2half_rn(y[k]);
    if (threadIdx.x == 0) cnt[blockIdx.x] = 0u;   // ready for the next launch with this workspace
}

// Does gemv_ms_kernel take launch a? Compute capability 9.x (the current device; the planner gives
// such devices its split policy: ak_gemv_ms_splits), code widths 4 / 8 (+ an 8-bit outlier part for
// 4-bit GROUP), 4-byte aligned scale arrays (the word copies), 16-byte aligned codes. Else gemv_kernel.
bool ms_serves(const ak_gemm_args &a) {
    if (!AK_GEMV_MS) return false;
    int dev = 0, maj = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&maj, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    if (maj != 9) return false;
    if (a.p[0].bits != 4 && a.p[0].bits != 8) return false;
    if (a.nparts > 1 && (a.epi != AK_EPI_GROUP || a.p[0].bits != 4 || a.p[1].bits != 8)) return false;
    for (int i = 0; i < a.nparts; i++) {
        const ak_gpart &P = a.p[i];
        const uintptr_t al = reinterpret_cast<uintptr_t>(P.sa) | reinterpret_cast<uintptr_t>(P.sb) |
                             reinterpret_cast<uintptr_t>(P.u);
        const uintptr_t a16 = reinterpret_cast<uintptr_t>(P.A) | reinterpret_cast<uintptr_t>(P.B) |
                              static_cast<uintptr_t>(P.lda) | static_cast<uintptr_t>(P.ldb);
        if ((al & 3) || (a16 & 15) || P.gch < 1 || P.G < 1) return false;
    }
    return true;
}

template <int EPI, bool INT4, int B0, int B1>
int launch_ms(const ak_gemm_args &a, cudaStream_t st, char *err) {
    auto kern = gemv_ms_kernel<EPI, INT4, B0, B1>;
    const int smem = MS_ST * ms_stage_bytes(a);
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e == cudaSuccess) {
        dim3 grid((a.N + MS_BC - 1) / MS_BC, 1, a.splits);
        kern<<<grid, MS_NT, smem, st>>>(a);
        e = cudaGetLastError();
    }
    if (e != cudaSuccess) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: multistage GEMV kernel launch failed (%d B shared memory): %s", smem,
                          cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

template <int EPI, bool INT4>
int launch_gemv(const ak_gemm_args &a, cudaStream_t st, char *err) {
    if (ms_serves(a)) {
        if constexpr (EPI == AK_EPI_MIXED)
            return a.p[0].bits == 4 ? launch_ms<EPI, INT4, 4, 0>(a, st, err) : launch_ms<EPI, INT4, 8, 0>(a, st, err);
        else if (a.nparts > 1)
            return launch_ms<EPI, INT4, 4, 8>(a, st, err);
        else
            return a.p[0].bits == 4 ? launch_ms<EPI, INT4, 4, 0>(a, st, err) : launch_ms<EPI, INT4, 8, 0>(a, st, err);
    }
    dim3 grid((a.N + AK_GEMV_BLOCK_COLS - 1) / AK_GEMV_BLOCK_COLS, 1, a.splits);
    gemv_kernel<EPI, INT4><<<grid, GV_WARPS * 32, 0, st>>>(a);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: GEMV kernel launch failed: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

template <int BM, int BN, int BKB, int WM, int WN, int STAGES, int EPI, bool INT4, int XOPS = 0>
int launch_cfg(const ak_gemm_args &a, cudaStream_t st, char *err) {
    auto kern = gemm_kernel<BM, BN, BKB, WM, WN, STAGES, EPI, INT4, XOPS>;
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

// The configuration is the planner's (ak_gemm_plan, kernels/ak_plan.cu): a.cfg.
template <int EPI, bool INT4>
int launch_epi(const ak_gemm_args &a, cudaStream_t st, char *err) {
    switch (a.cfg) {
    case AK_CFG_GEMV: return launch_gemv<EPI, INT4>(a, st, err);
    case AK_CFG_SMALL: return launch_cfg<16, AK_SMALL_BN, AK_SMALL_BKB, 1, 4, AK_SMALL_STAGES, EPI, INT4>(a, st, err);
    case AK_CFG_MID: return launch_cfg<64, 128, 128, 2, 4, 4, EPI, INT4>(a, st, err);
    default: return launch_cfg<128, 128, 128, 2, 4, 3, EPI, INT4>(a, st, err);
    }
}

}  // namespace

// Split count of gemv_ms_kernel (k_splits = 0) for mode m at N x K on `sms` SMs; ak_gemm_plan_ex
// (kernels/ak_plan.cu) asks for it for M <= 16 on compute capability 9.x, where ak_launch_gemm runs
// that kernel. 0 when the kernel is compiled out (AK_GEMV_MS 0: gemv_kernel's policy applies).
// Policy (kernels/NOTES.md "Decode GEMV"): two 64-column blocks per SM fit (shared memory); when the
// column tiles alone leave slots free, split K so that all blocks are resident at once:
// S = floor(2 SMs / tiles), at most one split per 256-byte stage of the main part, at most G for the
// contract's group split. Once the blocks cover the slots, no split (every block streams MS_ST - 1
// stages, so the bytes in flight no longer need more blocks).
int ak_gemv_ms_splits(const aq_mode *m, int N, int K, int sms) {
    if (!AK_GEMV_MS || !m || N < 1 || K < 1 || sms < 1) return 0;
    const int kc = K - m->outliers;
    const int gw = aq_operand_group(&m->w, kc);
    const int G = gw > 0 ? (kc + gw - 1) / gw : 1;
    const long long tiles = (N + MS_BC - 1) / MS_BC, slots = 2LL * sms;
    long long S = slots / tiles;
    const long long stages = ((long long)kc * m->x.bits / 8 + MS_RB - 1) / MS_RB;
    if (S > stages) S = stages;
    if (ak_split_mode(m) == AK_SPLIT_GROUP && S > G) S = G;
    return S < 1 ? 1 : (int)S;
}

int ak_launch_gemm(const ak_gemm_args &a, ak_path path, cudaStream_t st, char *err) {
    if (a.M < 1 || a.N < 1 || a.splits < 1 || (a.splits > 1 && (!a.ws || a.split_mode == AK_SPLIT_NONE)) ||
        (a.split_mode == AK_SPLIT_INT && (a.nparts > 1 || (a.epi == AK_EPI_GROUP && a.p[0].G != 1))) ||
        a.cfg < AK_CFG_GEMV || a.cfg > AK_CFG_BIG || (a.cfg == AK_CFG_GEMV && (a.M > 16 || (a.splits > 1 && !a.cnt))) ||
        (a.cfg == AK_CFG_SMALL && a.M > 16)) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: bad launch M = %d, N = %d, splits = %d (mode %d), cfg %d", a.M, a.N,
                          a.splits, a.split_mode, a.cfg);
        return -1;
    }
    const bool int4 = path == AK_PATH_INT4;
    if (a.epi == AK_EPI_MIXED)
        return int4 ? launch_epi<AK_EPI_MIXED, true>(a, st, err) : launch_epi<AK_EPI_MIXED, false>(a, st, err);
    return int4 ? launch_epi<AK_EPI_GROUP, true>(a, st, err) : launch_epi<AK_EPI_GROUP, false>(a, st, err);
}

// Benchmark-only rho emulation (kernels/ak_emul.cu, apex4 bench rho): ak_launch_gemm on the INT8 path
// with XOPS extra dependent fp32 operations per group in the epilogue (ak_epi_extra; Y is unchanged).
// xops in {0, 1, 2, 4, 8, 16}; tile configurations MID and BIG only (M > 16). -1 with err otherwise.
template <int XOPS>
static int launch_xops(const ak_gemm_args &a, cudaStream_t st, char *err) {
    const bool mid = a.cfg == AK_CFG_MID;
    if (a.epi == AK_EPI_MIXED)
        return mid ? launch_cfg<64, 128, 128, 2, 4, 4, AK_EPI_MIXED, false, XOPS>(a, st, err)
                   : launch_cfg<128, 128, 128, 2, 4, 3, AK_EPI_MIXED, false, XOPS>(a, st, err);
    return mid ? launch_cfg<64, 128, 128, 2, 4, 4, AK_EPI_GROUP, false, XOPS>(a, st, err)
               : launch_cfg<128, 128, 128, 2, 4, 3, AK_EPI_GROUP, false, XOPS>(a, st, err);
}
int ak_launch_gemm_xops(const ak_gemm_args &a, int xops, cudaStream_t st, char *err) {
    if (xops == 0) return ak_launch_gemm(a, AK_PATH_INT8, st, err);
    if ((a.cfg != AK_CFG_MID && a.cfg != AK_CFG_BIG) || a.M <= 16) {
        if (err) snprintf(err, AX_ERR_LEN, "rho emulation: M = %d uses tile configuration %d; only M > 16 (64x128 or 128x128 tiles) is emulated", a.M, a.cfg);
        return -1;
    }
    switch (xops) {
    case 1: return launch_xops<1>(a, st, err);
    case 2: return launch_xops<2>(a, st, err);
    case 4: return launch_xops<4>(a, st, err);
    case 8: return launch_xops<8>(a, st, err);
    case 16: return launch_xops<16>(a, st, err);
    default:
        if (err) snprintf(err, AX_ERR_LEN, "rho emulation: %d extra operations per group not built (0, 1, 2, 4, 8, 16)", xops);
        return -1;
    }
}
