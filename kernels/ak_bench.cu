// ak_bench.cu — benchmark primitives for apex4 bench gemm (kernels/ak.h): cuBLAS FP16 and INT8
// baselines, the apex4 GEMM kernels (every path, AK_PATH_WGMMA_NOEPI included: the wgmma kernel with
// its epilogue switched off), the activation quantizer and a device-to-device copy, all timed
// with CUDA events around each run after a warm-up; medians are taken by the caller's numbers here.
// Inputs come from a counter hash on the device (never zeros) and rotate over enough copies that
// their total is >= 3x the L2, so each run reads its operands from HBM (METHOD.md "Time properly").
#include "ak_internal.cuh"
#include "ak_fill.cuh"

#include <cublas_v2.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

struct ak_bench {
    cublasHandle_t h;
    cudaStream_t st;
    long l2;
    size_t free_mem;
    int sms;          // SM count of device 0 (the launch planner's input)
    int cc;           // its compute capability, 10 * major + minor (the planner's other input)
};

#ifndef AK_BENCH_WPAD
#define AK_BENCH_WPAD 0   // extra bytes per W row (row pitch experiment; 0 = the ak_gemm layout)
#endif

namespace {

using ak_fill::fill_bytes;
using ak_fill::fill_half;
using ak_fill::fill_sub;

struct pool {   // device allocations of one benchmark case
    std::vector<void *> p;
    ~pool() { for (void *q : p) cudaFree(q); }
    template <class T> T *get(size_t bytes, char *err, const char *what) {
        void *q = nullptr;
        if (cudaMalloc(&q, bytes ? (bytes + 15) & ~(size_t)15 : 16) != cudaSuccess) {   // as dqmat_alloc's padding
            cudaGetLastError();
            if (err) snprintf(err, AX_ERR_LEN, "bench: cudaMalloc of %zu bytes for %s failed", bytes, what);
            return nullptr;
        }
        p.push_back(q);
        return static_cast<T *>(q);
    }
};

int copies_for(const ak_bench *b, size_t set_bytes) {
    size_t want = 3 * (size_t)b->l2;
    int r = (int)((want + set_bytes - 1) / set_bytes);
    return std::max(1, std::min(r, 256));
}

double median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Time fn(i) for warmup + runs calls (i = call index, for rotation), each between two events.
template <class F>
int time_runs(ak_bench *b, int warmup, int runs, F fn, double *med, double *mn, double *mx, char *err) {
    std::vector<cudaEvent_t> ev(2 * (size_t)runs);
    int rc = -1;
    int made = 0;
    for (auto &e : ev) {
        if (cudaEventCreate(&e) != cudaSuccess) { if (err) snprintf(err, AX_ERR_LEN, "bench: cudaEventCreate failed"); goto done; }
        made++;
    }
    for (int i = 0; i < warmup; i++)
        if (fn(i)) goto done;
    for (int i = 0; i < runs; i++) {
        cudaEventRecord(ev[2 * i], b->st);
        if (fn(warmup + i)) goto done;
        cudaEventRecord(ev[2 * i + 1], b->st);
    }
    {
        cudaError_t e = cudaStreamSynchronize(b->st);
        if (e != cudaSuccess) { if (err) snprintf(err, AX_ERR_LEN, "bench: run failed: %s", cudaGetErrorString(e)); goto done; }
        std::vector<float> t(runs);
        for (int i = 0; i < runs; i++) cudaEventElapsedTime(&t[i], ev[2 * i], ev[2 * i + 1]);
        *med = median(t);
        if (mn) *mn = *std::min_element(t.begin(), t.end());
        if (mx) *mx = *std::max_element(t.begin(), t.end());
        rc = 0;
    }
done:
    for (int i = 0; i < made; i++) cudaEventDestroy(ev[i]);
    return rc;
}

void fillb(ak_bench *b, uint8_t *p, size_t n, uint32_t seed) { fill_bytes<<<1024, 256, 0, b->st>>>(p, n, seed); }
void fillh(ak_bench *b, __half *p, size_t n, uint32_t seed, float lo, float hi) {
    fill_half<<<1024, 256, 0, b->st>>>(p, n, seed, lo, hi);
}


}  // namespace

extern "C" int ak_device_info(ak_devinfo *d, char *err) {
    memset(d, 0, sizeof *d);
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, 0);
    if (e != cudaSuccess) { if (err) snprintf(err, AX_ERR_LEN, "no CUDA device: %s", cudaGetErrorString(e)); return -1; }
    snprintf(d->name, sizeof d->name, "%.127s", p.name);
    d->sms = p.multiProcessorCount; d->cc_major = p.major; d->cc_minor = p.minor;
    int v = 0;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrClockRate, 0) == cudaSuccess) d->sm_clock_mhz = v / 1000;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMemoryClockRate, 0) == cudaSuccess) d->mem_clock_mhz = v / 1000;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrGlobalMemoryBusWidth, 0) == cudaSuccess) d->mem_bus_bits = v;
    d->l2_bytes = p.l2CacheSize;
    d->mem_gib = (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0);
    cudaDriverGetVersion(&d->driver);
    cudaRuntimeGetVersion(&d->runtime);
    cudaGetLastError();
    return 0;
}

extern "C" int ak_bench_new(ak_bench **out, char *err) {
    *out = nullptr;
    if (ak_device_count() < 1) { if (err) snprintf(err, AX_ERR_LEN, "no CUDA device"); return -1; }
    ak_bench *b = (ak_bench *)calloc(1, sizeof *b);
    if (!b) { if (err) snprintf(err, AX_ERR_LEN, "bench: out of memory"); return -1; }
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess || cudaStreamCreate(&b->st) != cudaSuccess) {
        if (err) snprintf(err, AX_ERR_LEN, "bench: cannot set up device 0");
        free(b);
        return -1;
    }
    b->l2 = p.l2CacheSize;
    b->sms = p.multiProcessorCount;
    b->cc = 10 * p.major + p.minor;
    if (cublasCreate(&b->h) != CUBLAS_STATUS_SUCCESS) {
        if (err) snprintf(err, AX_ERR_LEN, "bench: cublasCreate failed");
        cudaStreamDestroy(b->st);
        free(b);
        return -1;
    }
    cublasSetStream(b->h, b->st);
    *out = b;
    return 0;
}

extern "C" void ak_bench_free(ak_bench *b) {
    if (!b) return;
    cublasDestroy(b->h);
    cudaStreamDestroy(b->st);
    free(b);
}

extern "C" int ak_bench_copy(ak_bench *b, size_t bytes, int runs, double *gbs, char *err) {
    pool P;
    uint8_t *s = P.get<uint8_t>(bytes, err, "copy source"), *d = P.get<uint8_t>(bytes, err, "copy destination");
    if (!s || !d) return -1;
    fillb(b, s, bytes, 7);
    double med = 0;
    auto fn = [&](int) { return cudaMemcpyAsync(d, s, bytes, cudaMemcpyDeviceToDevice, b->st) == cudaSuccess ? 0 : -1; };
    if (time_runs(b, 3, runs, fn, &med, nullptr, nullptr, err)) return -1;
    *gbs = 2.0 * (double)bytes / (med * 1e-3) / 1e9;
    return 0;
}

extern "C" int ak_bench_gemm(ak_bench *b, ak_impl impl, const aq_mode *mode, ak_path path, int M, int N, int K,
                             int warmup, int runs, double *ms_median, double *ms_min, double *ms_max, char *err) {
    if (M < 1 || N < 1 || K < 1 || runs < 1 || warmup < 0) {
        if (err) snprintf(err, AX_ERR_LEN, "bench: bad shape M=%d N=%d K=%d or runs=%d", M, N, K, runs);
        return -1;
    }
    pool P;
    const size_t MK = (size_t)M * K, NK = (size_t)N * K, MN = (size_t)M * N;
    if (impl == AK_IMPL_CUBLAS_FP16 || impl == AK_IMPL_CUBLAS_INT8) {
        const bool i8 = impl == AK_IMPL_CUBLAS_INT8;
        if (i8 && (K % 4 || N % 4)) {
            if (err) snprintf(err, AX_ERR_LEN, "cuBLAS INT8 needs K and N multiples of 4 (N=%d, K=%d)", N, K);
            return -1;
        }
        const size_t esz = i8 ? 1 : 2, set = (MK + NK) * esz;
        const int R = copies_for(b, set);
        std::vector<void *> X(R), W(R);
        for (int r = 0; r < R; r++) {
            X[r] = P.get<uint8_t>(MK * esz, err, "X");
            W[r] = P.get<uint8_t>(NK * esz, err, "W");
            if (!X[r] || !W[r]) return -1;
            if (i8) { fillb(b, (uint8_t *)X[r], MK, 100 + r); fillb(b, (uint8_t *)W[r], NK, 200 + r); }
            else { fillh(b, (__half *)X[r], MK, 100 + r, -1.f, 1.f); fillh(b, (__half *)W[r], NK, 200 + r, -1.f, 1.f); }
        }
        void *Y = P.get<uint8_t>(MN * (i8 ? 4 : 2), err, "Y");
        if (!Y) return -1;
        // Row-major Y [M,N] = X [M,K] W^T is column-major Y^T [N,M] = W^T(op T of col-major [K,N]) X.
        auto fn = [&](int i) {
            int r = i % R;
            cublasStatus_t s;
            if (i8) {
                const int32_t al = 1, be = 0;
                s = cublasGemmEx(b->h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &al, W[r], CUDA_R_8I, K, X[r], CUDA_R_8I, K,
                                 &be, Y, CUDA_R_32I, N, CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT);
            } else {
                const float al = 1.f, be = 0.f;
                s = cublasGemmEx(b->h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &al, W[r], CUDA_R_16F, K, X[r], CUDA_R_16F, K,
                                 &be, Y, CUDA_R_16F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
            }
            if (s != CUBLAS_STATUS_SUCCESS) {
                if (err) snprintf(err, AX_ERR_LEN, "cublasGemmEx (%s) failed with status %d", i8 ? "int8" : "fp16", (int)s);
                return -1;
            }
            return 0;
        };
        return time_runs(b, warmup, runs, fn, ms_median, ms_min, ms_max, err);
    }

    if (ak_supports(mode, K, err)) return -1;
    const bool mixed = mode->epilogue == AQ_EPI_MIXED;
    const int o = mode->outliers;
    ak_gemm_args base;
    memset(&base, 0, sizeof base);
    base.M = M; base.N = N;
    base.epi = ak_epi_of(mode);
    base.nparts = o > 0 ? 2 : 1;
    size_t szA[2], szB[2], szsa[2], szsb[2], szu[2] = {0, 0}, set = 0;
    for (int i = 0; i < base.nparts; i++) {
        const int cols = i ? o : K - o, bits = i ? mode->outl.bits : mode->x.bits;
        int g = aq_operand_group(i ? &mode->outl : &mode->w, cols);   // the GEMM's groups are W's (MIXED: sub-scales)
        if (g > cols) g = cols;
        ak_gpart &Q = base.p[i];
        Q.bits = bits;
        Q.kb = bits == 4 ? cols / 2 : cols;
        Q.lda = Q.kb;
        Q.ldb = Q.kb + AK_BENCH_WPAD;
        Q.gch = (bits == 4 ? g / 2 : g) / 16;
        Q.G = (cols + g - 1) / g;
        szA[i] = (size_t)M * Q.lda; szB[i] = (size_t)N * Q.ldb;
        szsa[i] = (size_t)M * (mixed ? 1 : Q.G) * 2;
        szsb[i] = (size_t)N * (mixed ? 1 : Q.G) * 2;
        if (mixed) szu[i] = (size_t)N * Q.G;
        set += szA[i] + szB[i] + szsa[i] + szsb[i] + szu[i];
    }
    const int R = copies_for(b, set);
    std::vector<ak_gemm_args> sets(R, base);
    for (int r = 0; r < R; r++)
        for (int i = 0; i < base.nparts; i++) {
            ak_gpart &Q = sets[r].p[i];
            uint8_t *A = P.get<uint8_t>(szA[i], err, "X codes"), *B = P.get<uint8_t>(szB[i], err, "W codes");
            __half *sa = P.get<__half>(szsa[i], err, "X scales"), *sb = P.get<__half>(szsb[i], err, "W scales");
            if (!A || !B || !sa || !sb) return -1;
            uint32_t sd = 1000u * (uint32_t)r + 10u * (uint32_t)i;
            fillb(b, A, szA[i], sd + 1); fillb(b, B, szB[i], sd + 2);
            fillh(b, sa, szsa[i] / 2, sd + 3, 0.004f, 0.06f);
            fillh(b, sb, szsb[i] / 2, sd + 4, 0.004f, 0.06f);
            if (mixed) {
                uint8_t *u = P.get<uint8_t>(szu[i], err, "W sub-scales");
                if (!u) return -1;
                fill_sub<<<1024, 256, 0, b->st>>>(u, szu[i], sd + 5);
                Q.u = u;
            }
            Q.A = A; Q.B = B; Q.sa = sa; Q.sb = sb;
        }
    __half *Y = P.get<__half>(MN * 2, err, "Y");
    if (!Y) return -1;
    ak_plan pl;   // the launch planner's plan for this path (as ak_gemm_dev_ex), for device 0
    if (ak_gemm_plan_ex(mode, M, N, K, b->sms, b->cc, path, 0, &pl)) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_bench_gemm: no launch plan for mode '%s' on the %s path, M=%d N=%d K=%d%s", mode->name,
                          ak_path_name(path), M, N, K,
                          ak_path_is_wgmma(path) ? " (the wgmma paths need compute capability 9.x, no outlier part and groups of "
                                                   "32, 64, a multiple of 128 codes or the whole row)" : "");
        return -1;
    }
    const int S = pl.splits;
    void *ws = nullptr;
    if (S > 1) {
        if (!(ws = P.get<uint8_t>(ak_ws_bytes(S, M, N), err, "split-K workspace"))) return -1;
        if (cudaMemset(ws, 0, ak_ws_bytes(S, M, N)) != cudaSuccess) {
            if (err) snprintf(err, AX_ERR_LEN, "ak_bench_gemm: cudaMemset split-K workspace failed");
            return -1;
        }
    }
    for (auto &s : sets) {
        s.Y = Y; s.splits = S; s.split_mode = pl.split_kind; s.ws = ws; s.cfg = pl.cfg;
        s.cnt = ws ? reinterpret_cast<unsigned *>(static_cast<uint8_t *>(ws) + ak_ws_part_bytes(S, M, N)) : nullptr;
    }
    auto fn = [&](int i) { return ak_launch_gemm_path(sets[i % R], path, b->st, err); };
    return time_runs(b, warmup, runs, fn, ms_median, ms_min, ms_max, err);
}

// The quantizer's launch arguments for mode at [M, K] without buffers (ak_bench_quant and
// ak_bench_rmsnorm_quant fill them per copy).
static ak_quant_args quant_base(const aq_mode *mode, int M, int K) {
    const int o = mode->outliers, Km = K - o;
    int g = aq_operand_group(&mode->x, Km);
    if (g > Km) g = Km;
    ak_quant_args base;
    memset(&base, 0, sizeof base);
    base.M = M; base.K = K;
    base.nparts = o > 0 ? 2 : 1;
    base.p[0] = ak_qpart{0, Km, mode->x.bits, g, (Km + g - 1) / g, mode->x.clip, nullptr, mode->x.bits == 4 ? Km / 2 : Km, nullptr};
    if (o > 0)
        base.p[1] = ak_qpart{Km, o, mode->outl.bits, o, 1, mode->outl.clip, nullptr, mode->outl.bits == 4 ? o / 2 : o, nullptr};
    return base;
}

// A random channel permutation [K] on the device (Fisher-Yates on the host, fixed seed). 0 or -1.
static int bench_perm(pool &P, int K, int32_t **perm, char *err) {
    std::vector<int32_t> h(K);
    for (int k = 0; k < K; k++) h[k] = k;
    uint32_t s = 12345u;
    for (int k = K - 1; k > 0; k--) {
        s = s * 1664525u + 1013904223u;
        std::swap(h[k], h[(int)((s >> 8) % (uint32_t)(k + 1))]);
    }
    *perm = P.get<int32_t>((size_t)K * 4, err, "perm");
    if (!*perm || cudaMemcpy(*perm, h.data(), (size_t)K * 4, cudaMemcpyHostToDevice) != cudaSuccess) {
        if (err && *perm) snprintf(err, AX_ERR_LEN, "bench: upload of perm failed");
        return -1;
    }
    return 0;
}

extern "C" int ak_bench_quant(ak_bench *b, const aq_mode *mode, int M, int K, int warmup, int runs,
                              double *ms_median, double *bytes, char *err) {
    if (ak_supports(mode, K, err)) return -1;
    pool P;
    const ak_quant_args base = quant_base(mode, M, K);
    size_t set = (size_t)M * K * 2;
    for (int i = 0; i < base.nparts; i++) set += (size_t)M * base.p[i].rb + (size_t)M * base.p[i].G * 2;
    *bytes = (double)set;
    const int R = copies_for(b, set);
    int32_t *perm = nullptr;
    unsigned long long *bad = P.get<unsigned long long>(8, err, "flag");
    if (!bad) return -1;
    if (mode->permuted && bench_perm(P, K, &perm, err)) return -1;
    std::vector<ak_quant_args> sets(R, base);
    for (int r = 0; r < R; r++) {
        __half *x = P.get<__half>((size_t)M * K * 2, err, "X");
        if (!x) return -1;
        fillh(b, x, (size_t)M * K, 300 + r, -4.f, 4.f);
        sets[r].x = x; sets[r].perm = perm; sets[r].bad = bad;
        for (int i = 0; i < base.nparts; i++) {
            sets[r].p[i].codes = P.get<uint8_t>((size_t)M * base.p[i].rb, err, "codes");
            sets[r].p[i].scales = P.get<__half>((size_t)M * base.p[i].G * 2, err, "scales");
            if (!sets[r].p[i].codes || !sets[r].p[i].scales) return -1;
        }
    }
    auto fn = [&](int i) { return ak_launch_quant(sets[i % R], b->st, err); };
    return time_runs(b, warmup, runs, fn, ms_median, nullptr, nullptr, err);
}

extern "C" int ak_bench_rmsnorm_quant(ak_bench *b, const aq_mode *mode, int M, int K, int residual, int warmup, int runs,
                                      double *ms_median, double *bytes, char *err) {
    if (ak_supports(mode, K, err)) return -1;
    if (M < 1 || runs < 1 || warmup < 0) {
        if (err) snprintf(err, AX_ERR_LEN, "bench: bad shape M=%d or runs=%d", M, runs);
        return -1;
    }
    pool P;
    const ak_quant_args base = quant_base(mode, M, K);
    const size_t MK2 = (size_t)M * K * 2;
    size_t set = MK2 * (residual ? 2 : 1);   // per copy: x (and r)
    for (int i = 0; i < base.nparts; i++) set += (size_t)M * base.p[i].rb + (size_t)M * base.p[i].G * 2;
    // memory traffic: x read (+ r read + x written), w read once, codes + scales written
    *bytes = (double)(set + (residual ? MK2 : 0) + (size_t)K * 2);
    const int R = copies_for(b, set);
    int32_t *perm = nullptr;
    unsigned long long *bad = P.get<unsigned long long>(8, err, "flag");
    __half *w = P.get<__half>((size_t)K * 2, err, "norm weight");
    if (!bad || !w) return -1;
    fillh(b, w, (size_t)K, 77, 0.5f, 1.5f);
    if (mode->permuted && bench_perm(P, K, &perm, err)) return -1;
    std::vector<ak_quant_args> sets(R, base);
    std::vector<__half *> xs(R), rs(R, nullptr);
    for (int r = 0; r < R; r++) {
        xs[r] = P.get<__half>(MK2, err, "X");
        if (!xs[r]) return -1;
        // each run adds r into x again: r in +-1/64 keeps |x| < 4 + runs/64, finite for any --runs
        fillh(b, xs[r], (size_t)M * K, 300 + r, -4.f, 4.f);
        if (residual) {
            if (!(rs[r] = P.get<__half>(MK2, err, "residual"))) return -1;
            fillh(b, rs[r], (size_t)M * K, 500 + r, -1.f / 64, 1.f / 64);
        }
        sets[r].x = xs[r]; sets[r].perm = perm; sets[r].bad = bad;
        for (int i = 0; i < base.nparts; i++) {
            sets[r].p[i].codes = P.get<uint8_t>((size_t)M * base.p[i].rb, err, "codes");
            sets[r].p[i].scales = P.get<__half>((size_t)M * base.p[i].G * 2, err, "scales");
            if (!sets[r].p[i].codes || !sets[r].p[i].scales) return -1;
        }
    }
    auto fn = [&](int i) {
        const int r = i % R;
        return ak_launch_rmsnorm_quant(sets[r], reinterpret_cast<uint16_t *>(xs[r]), reinterpret_cast<const uint16_t *>(rs[r]),
                                       reinterpret_cast<const uint16_t *>(w), 1e-5f, b->st, err);
    };
    return time_runs(b, warmup, runs, fn, ms_median, nullptr, nullptr, err);
}
