// ak_gemm_sm90.cu — the Hopper (sm_90a) integer GEMM path AK_PATH_WGMMA: Y [M,N] = X·Wᵀ with
// wgmma.mma_async m64n128k32 s8·s8 -> s32 and the contract's GROUP and MIXED epilogues (NUMERICS.md
// "Integer GEMM with group scales", "Mixed granularity"; the arithmetic is ak_epilogue.cuh's, called
// per group in ascending K), bit-exact with quant/aq_gemm.c. ATOM (an outlier part) stays on the
// mma.sync kernels of ak_gemm.cu; the planner (ak_plan.cu) never hands it here.
//
// Block: 2 warpgroups (256 threads), tile 128 x 128 (warpgroup w owns rows 64w..64w+63), one K stage
// = 128 codes = 4 wgmma k32 steps. Every thread takes part in every phase (no producer warps):
//   1. cp.async 16 B (zero-filled outside M, N and the block's K range) brings the raw codes of stage
//      t + STAGES - 1 (packed int4 or int8, the device layout of ak_gpart as is) into a raw ring, and
//      cp.async 4 B the words holding the scales that stage's group ends need (sx, sw; MIXED: u);
//   2. each thread widens the chunks IT copied (no barrier on the raw ring) into the int8 operand
//      buffer of stage t (double-buffered; done during stage t - 1's wgmmas), in the 128-byte-
//      swizzled K-major layout of the GMMA descriptors (16-byte chunk c of row r at chunk c ^ (r & 7),
//      atoms of 8 rows x 128 B, 1024-B aligned), and converts the scale words to fp32 in the
//      consumer's register order (triple-buffered); fence.proxy.async (generic stores -> async-proxy
//      reads), __syncthreads;
//   3. each warpgroup issues the stage's wgmmas (A = its 64 X rows, B = the 128 W rows, both from
//      shared memory) and runs the group epilogue at every group end.
// int4 -> int8 widening (as the mma.sync INT8 path): a 32-bit word of 8 nibbles gives lo = (w << 4) &
// 0xF0F0F0F0 (even codes) and hi = w & 0xF0F0F0F0 (odd codes), each byte = 16·q exactly; raw chunk c
// (32 codes) becomes int8 chunks 2c (lo words) and 2c+1 (hi words). X and W get the same K
// permutation inside every 32-code step, which an exact integer sum ignores (groups are multiples of
// 32); the wgmma sums 256·p exactly, p = acc >> 8 (|256 p| < 2^30 for K <= 32768).
//
// Overlap (AK_PATH_WGMMA, the point of issue 10): two int32 accumulator sets, group j in set j % 2;
// group j's epilogue (int -> fp32, scale, fma into the fp32 accumulators, in group order) runs while
// the tensor cores multiply group j + 1: inside a stage after group j + 1's wgmmas are committed
// (wait_group 1), and for the last group of a stage in the next stage iteration, after that stage's
// wgmmas are issued; the next stage's widening also runs under the wgmmas, and each iteration ends
// with wait_group 0 (ptxas serializes every wgmma of the kernel when one is in flight across a loop
// back-edge while another set is read: kernels/NOTES.md "wgmma path"). The set a step uses is a
// compile-time constant: the static group-end pattern inside a stage for g = 32 (GS 1) and g = 64
// (GS 2), and for g a multiple of 128 (or one group per row, GS 4) the stage body is instantiated for
// both parities (a uniform branch per stage); the partial last stage runs synchronously.
// AK_PATH_WGMMA_SYNC: one set, the epilogue right after wgmma.wait_group 0 (the simple reference
// version, kept for checking).
// AK_PATH_WGMMA_NOEPI (benchmark only): the overlapped kernel with the conversion and scaling
// replaced by one xor per element (keeps the wgmma results live; Y is not the contract's): the time
// difference is the epilogue's visible cost.
//
// Split-K: as gemm_kernel (AK_SPLIT_GROUP: the contract's split at group boundaries, fp32 partials;
// AK_SPLIT_INT: exact int32 partials, split at stage boundaries), partials combined by wg_combine in
// the reference's order with ak_epilogue.cuh's arithmetic.
// Device code exists for sm_90a only (__CUDA_ARCH_FEAT_SM90_ALL); the sm_80/86/89 builds get empty
// stubs, and a sm_90-class device running a build without sm_90a code traps (never silently wrong);
// the planner only picks this path on compute capability 9.x. Notes and limits: kernels/NOTES.md.
#include "ak_internal.cuh"
#include "ak_epilogue.cuh"

#include <cstdio>
#include <type_traits>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define AK_SM90A_CODE 1
#else
#define AK_SM90A_CODE 0
#endif

namespace {

#define DEVI __device__ __forceinline__

constexpr int WG_BM = 128, WG_BN = 128;   // block tile
constexpr int WG_THREADS = 256;           // 2 warpgroups
constexpr int WG_STAGES = 4;              // raw cp.async ring depth
constexpr int WG_I8_BYTES = 256 * 128;    // one int8 operand buffer: 128 X rows then 128 W rows, 128 B each
constexpr int WG_ESC_SLOT = 256;          // floats per epilogue-scale slot: 128 sx (pair order), 128 sw/u
// Shared-memory layout (offsets from a 1024-aligned base): int8 buffers [2], epilogue scales [3][4
// slots] (triple-buffered: esc_of), raw ring [STAGES][256 rows][RAWB], raw scale words [STAGES][4 slots][256].
__host__ __device__ constexpr int wg_rawb(int bits) { return bits == 4 ? 64 : 128; }
constexpr int WG_OFF_ESC = 2 * WG_I8_BYTES;
constexpr int WG_OFF_RAW = WG_OFF_ESC + 3 * 4 * WG_ESC_SLOT * 4;
__host__ __device__ constexpr int wg_off_rsc(int bits) { return WG_OFF_RAW + WG_STAGES * 256 * wg_rawb(bits); }
__host__ __device__ constexpr int wg_smem_bytes(int bits) { return wg_off_rsc(bits) + WG_STAGES * 4 * 256 * 4 + 1024; }
static_assert(wg_smem_bytes(8) <= 227 * 1024, "shared memory of the 8-bit configuration");

// Kernel variants (template VAR).
enum { WG_OVERLAP = 0, WG_SYNC = 1, WG_NOEPI = 2 };

#if AK_SM90A_CODE

DEVI uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

DEVI void cp_async16(uint32_t dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
DEVI void cp_async4(uint32_t dst, const void *src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
DEVI void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> DEVI void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

DEVI uint4 lds128(uint32_t a) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(a) : "memory");
    return v;
}
DEVI void sts128(uint32_t a, uint4 v) {
    asm volatile("st.shared.v4.u32 [%0], {%1,%2,%3,%4};\n" ::"r"(a), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
}
DEVI uint32_t lds32(uint32_t a) {
    uint32_t v;
    asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(a) : "memory");
    return v;
}
DEVI void sts32(uint32_t a, uint32_t v) { asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(a), "r"(v) : "memory"); }
DEVI float2 lds64f(uint32_t a) {
    float2 v;
    asm volatile("ld.shared.v2.f32 {%0,%1}, [%2];\n" : "=f"(v.x), "=f"(v.y) : "r"(a) : "memory");
    return v;
}

// Generic-proxy shared stores -> async-proxy (wgmma) reads: each writing thread, before the barrier.
DEVI void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
DEVI void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
DEVI void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> DEVI void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }

// Keep the compiler from moving accesses of an accumulator set across a wgmma fence/wait.
DEVI void fence_acc(int (&d)[64]) {
#pragma unroll
    for (int i = 0; i < 64; i++) asm volatile("" : "+r"(d[i])::"memory");
}

// GMMA shared-memory descriptor, K-major, 128-byte swizzle: start address >> 4 (bits 0-13), leading
// byte offset 16 B >> 4 = 1 (unused for swizzled K-major), stride byte offset 1024 B >> 4 = 64 (8-row
// atoms of 128 B rows), base offset 0 (atoms 1024-B aligned), layout type 1 = SWIZZLE_128B (bits
// 62-63). Advancing K by one k32 step (32 bytes) adds 2 to the start address field.
DEVI uint64_t gmma_desc(uint32_t saddr) {
    return (uint64_t)((saddr & 0x3FFFFu) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) |
           ((uint64_t)1 << 62);
}

// D[64 x 128] (+)= A[64 x 32] · B[32 x 128], s8 x s8 -> s32, A and B K-major in shared memory;
// scale_d = 0 starts a fresh sum (D = A·B).
DEVI void wgmma_m64n128k32(int (&d)[64], uint64_t da, uint64_t db, int scale_d) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p;\n"
        "}\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
          "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
          "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
          "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
          "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]),
          "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
          "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
          "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
        : "l"(da), "l"(db), "r"(scale_d)
        : "memory");
}

// Position of tile row r (0..127) in an epilogue-scale slot: the rows (r0, r0 + 8) a thread holds
// (r0 = 64·wg + 16·warp + lane/4) are adjacent, so one 8-byte load gives both.
DEVI int esc_row_pos(int r) { return 2 * ((r >> 4) * 8 + (r & 7)) + ((r >> 3) & 1); }
// Position of tile column c (0..127) in the column half of a slot: thread quad q = lane % 4 holds
// columns 8i + 2q + h (i = 0..15, h = 0..1) in accumulator order, stored contiguously at 32q.
DEVI int esc_col_pos(int c) { return 128 + ((c & 7) >> 1) * 32 + (c >> 3) * 2 + (c & 1); }

// Block K range in 32-code steps, as gemm_kernel: the contract's group split or the exact integer
// split at stage (4-step) boundaries.
struct wg_range { int ss, se; };
DEVI wg_range wg_block_range(const ak_gemm_args &a, int z, int nsteps, int gsteps) {
    wg_range r{0, nsteps};
    const int S = a.splits;
    if (a.split_mode == AK_SPLIT_GROUP) {
        const int G = a.p[0].G, c = (G + S - 1) / S;
        const int j0 = min(z * c, G), j1 = min(j0 + c, G);
        r.ss = min(j0 * gsteps, nsteps);
        r.se = min(j1 * gsteps, nsteps);
    } else if (a.split_mode == AK_SPLIT_INT) {
        const int T = (nsteps + 3) / 4, tps = (T + S - 1) / S;
        const int t0 = min(z * tps, T), t1 = min(t0 + tps, T);
        r.ss = t0 * 4;
        r.se = min(t1 * 4, nsteps);
    }
    return r;
}

#endif  // AK_SM90A_CODE

// BITS: code width (4 or 8, both operands); EPI: AK_EPI_GROUP / AK_EPI_MIXED; GS: group length in
// k32 steps as the static pattern sees it (1: g = 32, 2: g = 64, 4: group ends only at stage ends:
// g a multiple of 128, or one group per row); VAR: WG_OVERLAP / WG_SYNC / WG_NOEPI.
template <int BITS, int EPI, int GS, int VAR>
__global__ void __launch_bounds__(WG_THREADS, 1) wgmma_gemm_kernel(const ak_gemm_args a) {
#if AK_SM90A_CODE
    constexpr int RAWB = wg_rawb(BITS);     // raw bytes per row per stage (128 codes)
    constexpr int CPR = RAWB / 16;          // raw 16-byte chunks per row per stage
    constexpr int CPS = BITS == 4 ? 1 : 2;  // raw chunks per k32 step
    constexpr bool OVL = VAR != WG_SYNC;
    constexpr bool DO_EPI = VAR != WG_NOEPI;
    constexpr int OFF_RSC = wg_off_rsc(BITS);
    extern __shared__ uint8_t smem_dyn[];
    const uint32_t sraw = smem_u32(smem_dyn);
    const uint32_t sb = (sraw + 1023u) & ~1023u;   // 1024-aligned base (swizzle atoms)

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wg = warp >> 2, ww = warp & 3, g = lane >> 2, q = lane & 3;
    const int M = a.M, N = a.N;
    const int m0 = blockIdx.y * WG_BM, n0 = blockIdx.x * WG_BN, z = blockIdx.z, S = a.splits;
    const ak_gpart &P = a.p[0];
    const int G = P.G;
    const int nsteps = (P.kb >> 4) / CPS, gsteps = P.gch / CPS;
    const wg_range rg = wg_block_range(a, z, nsteps, gsteps);
    const int ss = rg.ss, se = rg.se;
    const bool isplit = a.split_mode == AK_SPLIT_INT && S > 1;
    const bool needsc = !(EPI == AK_EPI_GROUP && isplit);   // per-group scales (isplit: raw int sum)
    const int T = se > ss ? (se - ss + 3) / 4 : 0;

    // Does step st end a group or this block's range (an epilogue point)?
    auto ep = [&](int st) { return (st + 1) % gsteps == 0 || st + 1 == nsteps || st + 1 == se; };

    // ---- stage t: raw copies (codes and the scale words of its epilogue points) ----
    auto issue = [&](int t) {
        const int rs = t % WG_STAGES, stb = ss + 4 * t;
        const uint32_t dst0 = sb + WG_OFF_RAW + rs * 256 * RAWB;
#pragma unroll
        for (int k = 0; k < CPR; k++) {
            const int idx = tid + WG_THREADS * k, row = idx / CPR, c = idx % CPR;
            const bool isB = row >= 128;
            const int gr = (isB ? n0 : m0) + (row & 127);
            const int step = stb + c / CPS;
            const bool ok = gr < (isB ? N : M) && step < se;
            const uint8_t *base = isB ? P.B : P.A;
            const uint8_t *src = ok ? base + (size_t)gr * (isB ? P.ldb : P.lda) + ((size_t)stb * CPS + c) * 16 : base;
            cp_async16(dst0 + row * RAWB + c * 16, src, ok ? 16 : 0);
        }
        if (needsc) {
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int st = stb + u;
                if (st >= se || !ep(st)) continue;
                const int j = st / gsteps;
                const uint32_t dst = sb + OFF_RSC + ((rs * 4 + u) * 256 + tid) * 4;
                if (EPI == AK_EPI_GROUP) {
                    const bool isB = tid >= 128;
                    const int gr = (isB ? n0 : m0) + (tid & 127), lim = isB ? N : M;
                    const __half *base = isB ? P.sb : P.sa;
                    const long long i = (long long)gr * G + j, tot = (long long)lim * G;
                    const int bytes = gr < lim ? ((i | 1) < tot ? 4 : 2) : 0;   // never past [lim, G]
                    cp_async4(dst, bytes ? base + (i & ~1LL) : base, bytes);
                } else if (tid >= 128) {
                    const int gr = n0 + tid - 128;
                    const long long i = (long long)gr * G + j, tot = (long long)N * G, w0 = i & ~3LL;
                    const int bytes = gr < N ? (int)min(4LL, tot - w0) : 0;
                    cp_async4(dst, bytes ? P.u + w0 : P.u, bytes);
                }
            }
        }
    };

    // ---- stage t: widen own raw chunks into int8 buffer t & 1, scales into epilogue slots t & 1 ----
    auto widen = [&](int t) {
        const int rs = t % WG_STAGES, b = t & 1, e3 = t % 3, stb = ss + 4 * t;
        const uint32_t r0 = sb + WG_OFF_RAW + rs * 256 * RAWB;
        const uint32_t i8 = sb + b * WG_I8_BYTES;
#pragma unroll
        for (int k0 = 0; k0 < CPR; k0 += 4) {   // 4 chunks (16 registers) at a time
        uint4 v[4];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const int idx = tid + WG_THREADS * (k0 + k), row = idx / CPR, c = idx % CPR;
            v[k] = lds128(r0 + row * RAWB + c * 16);
        }
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const int idx = tid + WG_THREADS * (k0 + k), row = idx / CPR, c = idx % CPR;
            const uint32_t rowb = i8 + row * 128;
            if (BITS == 4) {
                const uint4 w = v[k];
                const uint4 lo = make_uint4((w.x << 4) & 0xF0F0F0F0u, (w.y << 4) & 0xF0F0F0F0u, (w.z << 4) & 0xF0F0F0F0u,
                                            (w.w << 4) & 0xF0F0F0F0u);
                const uint4 hi = make_uint4(w.x & 0xF0F0F0F0u, w.y & 0xF0F0F0F0u, w.z & 0xF0F0F0F0u, w.w & 0xF0F0F0F0u);
                sts128(rowb + (((2 * c) ^ (row & 7)) << 4), lo);
                sts128(rowb + (((2 * c + 1) ^ (row & 7)) << 4), hi);
            } else {
                sts128(rowb + ((c ^ (row & 7)) << 4), v[k]);
            }
        }
        }
        if (needsc) {
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int st = stb + u;
                if (st >= se || !ep(st)) continue;
                const int j = st / gsteps;
                const uint32_t wsrc = sb + OFF_RSC + ((rs * 4 + u) * 256 + tid) * 4;
                const uint32_t esc = sb + WG_OFF_ESC + ((e3 * 4 + u) * WG_ESC_SLOT) * 4;
                if (EPI == AK_EPI_GROUP) {
                    const bool isB = tid >= 128;
                    const int gr = (isB ? n0 : m0) + (tid & 127);
                    const long long i = (long long)gr * G + j;
                    const uint32_t w = lds32(wsrc);   // zero when out of range (zero-filled copy)
                    const uint16_t h = (uint16_t)((i & 1) ? (w >> 16) : (w & 0xFFFFu));
                    const float f = __half2float(__ushort_as_half(h));
                    const int pos = isB ? esc_col_pos(tid - 128) : esc_row_pos(tid);
                    sts32(esc + pos * 4, __float_as_uint(f));
                } else if (tid >= 128) {
                    const int gr = n0 + tid - 128;
                    const long long i = (long long)gr * G + j;
                    const uint32_t w = lds32(wsrc);
                    const int uu = (int)((w >> (8 * (int)(i & 3))) & 0xFFu);
                    sts32(esc + esc_col_pos(tid - 128) * 4, (uint32_t)uu);
                }
            }
        }
    };

    int acc0[64], acc1[64];
    float accf[64];
#pragma unroll
    for (int i = 0; i < 64; i++) { acc0[i] = 0; acc1[i] = 0; accf[i] = 0.0f; }

    // Group epilogue of one accumulator set with the scales of epilogue slot `esc` (shared address).
    auto epilogue = [&](int (&acc)[64], uint32_t esc) {
        if (!DO_EPI) {   // benchmark: one integer op per element keeps the wgmma results live
#pragma unroll
            for (int i = 0; i < 64; i++) accf[i] = __int_as_float(__float_as_int(accf[i]) ^ acc[i]);
            return;
        }
        if (EPI == AK_EPI_GROUP && isplit) {   // single group, integer split: keep p exact (raw int bits)
#pragma unroll
            for (int i = 0; i < 64; i++) accf[i] = ak_epi_isplit_add(accf[i], BITS == 4 ? (acc[i] >> 8) : acc[i]);
            return;
        }
        float2 sx2 = make_float2(0.0f, 0.0f);
        if (EPI == AK_EPI_GROUP) sx2 = lds64f(esc + 4 * 2 * ((wg * 4 + ww) * 8 + g));
        const uint32_t colp = esc + 4 * (128 + 32 * q);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const uint4 c4 = lds128(colp + 16 * k);   // columns of octets 2k, 2k + 1 (sw as fp32 bits, or u)
            const uint32_t cv[4] = {c4.x, c4.y, c4.z, c4.w};
#pragma unroll
            for (int e = 0; e < 8; e++) {
                const int i = 8 * k + e;
                const uint32_t cw = cv[((e >> 2) << 1) | (e & 1)];
                const int p = BITS == 4 ? (acc[i] >> 8) : acc[i];
                if (EPI == AK_EPI_GROUP) {
                    const float sx = ((e >> 1) & 1) ? sx2.y : sx2.x;
                    accf[i] = ak_epi_group(p, BITS == 4, sx, __uint_as_float(cw), accf[i]);
                } else {
                    accf[i] = __int_as_float(ak_epi_mixed_add(__float_as_int(accf[i]), (int)cw, p));
                }
            }
        }
    };
    auto esc_of = [&](int t, int u) { return sb + WG_OFF_ESC + (((t % 3) * 4 + u) * WG_ESC_SLOT) * 4; };

    // A/B descriptor bases of int8 buffer b for this warpgroup (k step u: + 2u).
    const uint32_t a_off = (uint32_t)wg * 64 * 128, b_off = 128 * 128;
    // pend: a finished group waits for its epilogue, always in acc1 (scales at pesc); open: acc0 has
    // steps not yet through the epilogue (a short last group or a split's partial). At every stage
    // boundary the open group is in acc0 and the pending one in acc1, so no set is ever chosen at run
    // time (a run-time choice of set makes ptxas inject wgmma waits before the reads).
    bool pend = false, open = false, fresh = true, moved = false;
    uint32_t pesc = 0, nesc = 0;

    // The wgmma phase of a full stage t, its group epilogues included. ptxas keeps wgmma asynchronous
    // only when no wgmma is in flight across a loop back-edge while other accumulators are read, so
    // every overlap lives inside one stage iteration: a group's epilogue runs after the next group's
    // wgmmas of this stage are committed (wait_group 1), and the stage's last group waits in acc1
    // until the next stage, where it runs while that stage's wgmmas (issued first) execute; the
    // iteration ends with wait_group 0. GS 1/2: group u / GS of the stage in set (u / GS) & 1 (the
    // last one in acc1); GS 4: acc0 accumulates, and a group that ends with the stage is moved to
    // acc1 after the wait (64 register moves per group, `moved`).
    auto consume = [&](int t) {
        const int b = t & 1;
        const uint64_t da = gmma_desc(sb + b * WG_I8_BYTES + a_off), db = gmma_desc(sb + b * WG_I8_BYTES + b_off);
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int st = ss + 4 * t + u;
            const int set = !OVL || GS == 4 ? 0 : GS == 1 ? (u & 1) : ((u >> 1) & 1);
            const bool first = GS == 1 ? true : GS == 2 ? (u & 1) == 0 : (u == 0 && fresh);
            const bool gend = GS == 1 ? true : GS == 2 ? (u & 1) == 1 : (u == 3 && (st + 1) % gsteps == 0);
            int (&A)[64] = set ? acc1 : acc0;
            int (&O)[64] = set ? acc0 : acc1;
            if (GS == 1 || (GS == 2 && (u & 1) == 0) || (GS == 4 && u == 0)) wgmma_fence();
            wgmma_m64n128k32(A, da + 2 * u, db + 2 * u, first ? 0 : 1);
            open = true;
            if (!(gend || (GS == 4 && u == 3))) continue;
            // commit point: a group end, or (GS 4) the stage end
            wgmma_commit();
            if (OVL) {
                // the pending group: of this stage (GS 1/2 after its first group end: wait for it,
                // all but this batch) or of the previous stage (complete since that stage's wait 0)
                const bool in_stage = GS == 1 ? u > 0 : GS == 2 ? u > 1 : false;
                if (in_stage) wgmma_wait<1>();
                fence_acc(O);
                if (pend) epilogue(O, pesc);
                pend = false;
                if (gend && GS != 4) { pend = true; pesc = esc_of(t, u); open = false; }
                if (gend && GS != 4 && u == 3) { moved = true; }   // the stage's last group: see below
                if (gend && GS == 4) { moved = true; nesc = esc_of(t, u); }
            } else if (gend) {
                wgmma_wait<0>();
                fence_acc(A);
                epilogue(A, esc_of(t, u));
                open = false;
            }
            if (GS == 4) fresh = gend;
        }
    };

    // The partial last stage (v < 4 steps), synchronous: the pending group first (acc1, complete
    // since the previous stage's wait 0), then the steps into acc0; group ends inside (GS 1/2) wait
    // for their wgmma (a conditional step between a wgmma and a wait_group 1 read would make ptxas
    // serialize the kernel).
    auto tail = [&](int t) {
        const int b = t & 1, v = se - (ss + 4 * t);
        const uint64_t da = gmma_desc(sb + b * WG_I8_BYTES + a_off), db = gmma_desc(sb + b * WG_I8_BYTES + b_off);
        if (pend) { epilogue(acc1, pesc); pend = false; }
#pragma unroll
        for (int u = 0; u < 3; u++) {
            if (u >= v) continue;
            const bool first = GS == 1 ? true : GS == 2 ? (u & 1) == 0 : (u == 0 && fresh);
            const bool gend = GS == 1 ? true : GS == 2 ? (u & 1) == 1 : false;
            wgmma_fence();
            wgmma_m64n128k32(acc0, da + 2 * u, db + 2 * u, first ? 0 : 1);
            open = true;
            if (gend) {
                wgmma_commit();
                wgmma_wait<0>();
                fence_acc(acc0);
                epilogue(acc0, esc_of(t, u));
                open = false;
            }
        }
        wgmma_fence();    // (ptxas wants a fence on the paths where no step ran)
        wgmma_commit();   // the steps after the last group end (waited for at the iteration end)
    };

    // ---- main loop ----
#pragma unroll
    for (int s = 0; s < WG_STAGES - 1; s++) {
        if (s < T) issue(s);
        cp_commit();
    }
    if (T > 0) {
        cp_wait<WG_STAGES - 2>();   // own copies of stage 0 have landed
        widen(0);
        fence_proxy_async();
    }
    __syncthreads();
    for (int t = 0; t < T; t++) {
        if (t + WG_STAGES - 1 < T) issue(t + WG_STAGES - 1);   // into the raw slot stage t - 1 used
        cp_commit();
        if (ss + 4 * t + 4 > se) tail(t);
        else consume(t);
        if (t + 1 < T) {            // next stage's operands, while this stage's wgmmas run
            cp_wait<WG_STAGES - 2>();
            widen(t + 1);
            fence_proxy_async();
        }
        wgmma_wait<0>();
        fence_acc(acc0);
        fence_acc(acc1);
        if (GS == 4 && OVL && moved) {   // the group that ended with this stage becomes the pending one
#pragma unroll
            for (int i = 0; i < 64; i++) acc1[i] = acc0[i];
            pend = true; pesc = nesc; open = false; moved = false;
        }
        if (GS != 4 && OVL && moved) {   // GS 1/2: the stage's last group (acc1) now, not overlapped:
            epilogue(acc1, pesc);        // read at the next stage's first group end, after a wgmma into
            pend = false; moved = false; // acc0, ptxas injects a wait there (it does not for GS 4)
        }
        __syncthreads();            // stage t + 1 visible; buffers of stage t free
    }
    cp_wait<0>();
    // Range end: the pending group, then the open one (a short last group or a split's partial).
    const uint32_t lesc = T > 0 ? esc_of(T - 1, (se - 1 - ss) & 3) : 0;
    if (pend) epilogue(acc1, pesc);
    if (open) epilogue(acc0, lesc);

    // ---- store: split partials (int32 P / fp32 acc / raw int bits) or Y ----
    const int rbase = m0 + wg * 64 + ww * 16 + g, cbase = n0 + 2 * q;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int r = rbase + 8 * h;
        if (r >= M) continue;
        float sxm = 0.0f;
        if (EPI == AK_EPI_MIXED && S == 1) sxm = __half2float(P.sa[r]);
#pragma unroll
        for (int o = 0; o < 16; o++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int c = cbase + 8 * o + e, i = 4 * o + 2 * h + e;
                if (c >= N) continue;
                if (S > 1) {
                    static_cast<uint32_t *>(a.ws)[((size_t)z * M + r) * N + c] = __float_as_uint(accf[i]);
                } else {
                    float v = accf[i];
                    if (EPI == AK_EPI_MIXED) v = ak_epi_int_out(__float_as_int(accf[i]), sxm, __half2float(P.sb[c]), true);
                    a.Y[(size_t)r * N + c] = __float2half_rn(v);
                }
            }
    }
#else
    (void)a;
#if defined(__CUDA_ARCH__)
    // Review fix: trap on EVERY arch without sm_90a code, not only >= 900. The sm_80/86/89 stubs
    // used to return silently, and the 4-bit configuration's 160768 B of shared memory fits an
    // A100's opt-in limit, so a wgmma launch there left Y unwritten (a silent wrong Y). The host
    // (ak_launch_gemm_sm90) now refuses non-9.x devices too; this is the backstop.
    __trap();
#endif
#endif
}

// Split combine in the reference's order (gemm_kernel's combine_kernel, same ak_epilogue.cuh calls):
// INT: P = sum of the int32 partials, then the single-group / MIXED output; GROUP: y = a_0, then
// y = y + a_s over the live splits.
__global__ void wg_combine(const ak_gemm_args a) {
    const size_t MN = (size_t)a.M * a.N;
    const int S = a.splits;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < MN; i += (size_t)gridDim.x * blockDim.x) {
        const int m = (int)(i / a.N), n = (int)(i % a.N);
        float y;
        if (a.split_mode == AK_SPLIT_INT) {
            const int *w = static_cast<const int *>(a.ws);
            int Pv = 0;
            for (int s = 0; s < S; s++) Pv += w[(size_t)s * MN + i];
            y = ak_epi_int_out(Pv, __half2float(a.p[0].sa[m]), __half2float(a.p[0].sb[n]), a.epi == AK_EPI_MIXED);
        } else {
            const float *w = static_cast<const float *>(a.ws);
            y = w[i];
            for (int s = 1; s < S; s++)
                if (ak_split_live(s, S, a.p[0].G, a.nparts)) y = ak_split_add(y, w[(size_t)s * MN + i]);
        }
        a.Y[i] = __float2half_rn(y);
    }
}

template <int BITS, int EPI, int GS, int VAR>
int launch_wg(const ak_gemm_args &a, cudaStream_t st, char *err) {
    auto kern = wgmma_gemm_kernel<BITS, EPI, GS, VAR>;
    const int smem = wg_smem_bytes(BITS);
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e == cudaSuccess) {
        dim3 grid((a.N + WG_BN - 1) / WG_BN, (a.M + WG_BM - 1) / WG_BM, a.splits);
        kern<<<grid, WG_THREADS, smem, st>>>(a);
        e = cudaGetLastError();
        if (e == cudaSuccess && a.splits > 1) {
            const size_t MN = (size_t)a.M * a.N;
            const int blocks = (int)((MN + 255) / 256 < 4096 ? (MN + 255) / 256 : 4096);
            wg_combine<<<blocks, 256, 0, st>>>(a);
            e = cudaGetLastError();
        }
    }
    if (e != cudaSuccess) {
        cudaGetLastError();
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm (wgmma path): kernel launch failed: %s", cudaGetErrorString(e));
        return -1;
    }
    return 0;
}

template <int BITS, int EPI, int GS>
int launch_wg_var(const ak_gemm_args &a, int var, cudaStream_t st, char *err) {
    switch (var) {
    case WG_SYNC: return launch_wg<BITS, EPI, GS, WG_SYNC>(a, st, err);
    case WG_NOEPI: return launch_wg<BITS, EPI, GS, WG_NOEPI>(a, st, err);
    default: return launch_wg<BITS, EPI, GS, WG_OVERLAP>(a, st, err);
    }
}

template <int BITS, int EPI>
int launch_wg_gs(const ak_gemm_args &a, int gs, int var, cudaStream_t st, char *err) {
    if (gs == 1) return launch_wg_var<BITS, EPI, 1>(a, var, st, err);
    if (gs == 2) return launch_wg_var<BITS, EPI, 2>(a, var, st, err);
    return launch_wg_var<BITS, EPI, 4>(a, var, st, err);
}

}  // namespace

int ak_wgmma_group_steps(int group, int G) {
    if (group < 32 || group % 32) return 0;
    const int gs = group / 32;
    if (gs == 1 || gs == 2) return gs;
    if (gs % 4 == 0 || G == 1) return 4;
    return 0;
}

int ak_launch_gemm_sm90(const ak_gemm_args &a, ak_path path, cudaStream_t st, char *err) {
    const ak_gpart &P = a.p[0];
    const int var = path == AK_PATH_WGMMA_SYNC ? WG_SYNC : path == AK_PATH_WGMMA_NOEPI ? WG_NOEPI : WG_OVERLAP;
    const int cps = P.bits == 4 ? 1 : 2;
    const int gs = P.gch % cps ? 0 : ak_wgmma_group_steps(P.gch / cps * 32, P.G);
    const char *why = nullptr;
    if (path != AK_PATH_WGMMA && path != AK_PATH_WGMMA_SYNC && path != AK_PATH_WGMMA_NOEPI) why = "not a wgmma path";
    else if (a.nparts != 1) why = "an outlier part (atom modes stay on the mma.sync paths)";
    else if (P.bits != 4 && P.bits != 8) why = "code width other than 4 or 8";
    else if (!gs) why = "group length not 32, 64, a multiple of 128, or the whole row";
    else if (P.kb % 16 || P.lda % 16 || P.ldb % 16 || (P.kb >> 4) % cps) why = "row bytes not a multiple of 16 (K % 32)";
    else if (a.M < 1 || a.N < 1 || a.splits < 1 || a.splits > 65535 || (a.M + WG_BM - 1) / WG_BM > 65535) why = "bad M, N or splits";
    else if (a.splits > 1 && (!a.ws || a.split_mode == AK_SPLIT_NONE)) why = "split-K without a workspace";
    else if (a.split_mode == AK_SPLIT_INT && a.epi == AK_EPI_GROUP && P.G != 1) why = "integer split of a multi-group mode";
    // Review fix: K <= AK_MAX_K keeps |256 p| < 2^30 (the exact int32 sum; ak_supports checks it for
    // the public entry points, this launcher is also reached from the benchmark and tests).
    else if ((long long)P.kb * (P.bits == 4 ? 2 : 1) > AK_MAX_K) why = "K above AK_MAX_K";
    // Review fix: cp.async needs 16-byte aligned code rows and 4-byte aligned scale words (GROUP
    // reads the sx/sw fp16 pairs, MIXED the u bytes, as 4-byte words); a misaligned pointer would be a
    // device fault (sticky context error) instead of this message.
    else if (((uintptr_t)P.A | (uintptr_t)P.B) & 15) why = "code pointers not 16-byte aligned";
    else if (a.epi == AK_EPI_GROUP && (((uintptr_t)P.sa | (uintptr_t)P.sb) & 3)) why = "scale pointers not 4-byte aligned";
    else if (a.epi == AK_EPI_MIXED && ((uintptr_t)P.u & 3)) why = "sub-scale pointer not 4-byte aligned";
    if (!why) {
        // Review fix: the kernel is sm_90a code only (empty trapping stubs elsewhere): refuse any
        // other device here, whoever calls (the planner already keeps AUTO off non-9.x devices).
        int dev = 0, major = 0;
        if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
            cudaGetLastError();
            why = "cannot query the device's compute capability";
        } else if (major != 9) {
            why = "needs a compute capability 9.x device (sm_90a code)";
        }
    }
    if (why) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm (wgmma path): %s (M = %d, N = %d, bits %d, group %d codes, splits %d)", why,
                          a.M, a.N, P.bits, P.gch * (P.bits == 4 ? 32 : 16), a.splits);
        return -1;
    }
#ifdef AK_WG_EXPERIMENT   // development: compile one instantiation only
    (void)gs; (void)var;
    return launch_wg<4, AK_EPI_GROUP, AK_WG_EXPERIMENT, WG_OVERLAP>(a, st, err);
#else
    if (a.epi == AK_EPI_MIXED)
        return P.bits == 4 ? launch_wg_gs<4, AK_EPI_MIXED>(a, gs, var, st, err) : launch_wg_gs<8, AK_EPI_MIXED>(a, gs, var, st, err);
    return P.bits == 4 ? launch_wg_gs<4, AK_EPI_GROUP>(a, gs, var, st, err) : launch_wg_gs<8, AK_EPI_GROUP>(a, gs, var, st, err);
#endif
}

int ak_launch_gemm_path(const ak_gemm_args &a, ak_path path, cudaStream_t st, char *err) {
    if (path == AK_PATH_WGMMA || path == AK_PATH_WGMMA_SYNC || path == AK_PATH_WGMMA_NOEPI)
        return ak_launch_gemm_sm90(a, path, st, err);
    return ak_launch_gemm(a, path, st, err);
}
