// ak_emul.cu — benchmark-only rho emulation (kernels/ak_emul.h, apex4 bench rho): the integer GEMM of
// ak_gemm.cu instantiated with XOPS extra dependent fp32 operations per group in the epilogue
// (ak_epilogue.cuh ak_epi_extra, ak_gemm.cu ak_launch_gemm_xops), timed as ak_bench_gemm times the
// production kernel: CUDA events around each run, warm-up, median; random non-zero codes and scales
// rotated over copies totalling >= 3x the L2. Never used for results.
#include "ak_internal.cuh"
#include "ak_fill.cuh"
extern "C" {
#include "ak_emul.h"
}

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

// Defined in ak_gemm.cu (benchmark-only entry point next to ak_launch_gemm).
int ak_launch_gemm_xops(const ak_gemm_args &a, int xops, cudaStream_t st, char *err);

extern "C" const int ak_emul_xops[AK_EMUL_NXOPS] = {0, 1, 2, 4, 8, 16};

struct ak_emul {
    cudaStream_t st;
    long l2;
    int sms;
};

namespace {

struct epool {   // device allocations of one case, freed together
    std::vector<void *> p;
    ~epool() { for (void *q : p) cudaFree(q); }
    void *get(size_t bytes, char *err, const char *what) {
        void *q = nullptr;
        if (cudaMalloc(&q, bytes ? bytes : 16) != cudaSuccess) {
            cudaGetLastError();
            if (err) snprintf(err, AX_ERR_LEN, "rho emulation: cudaMalloc of %zu bytes for %s failed", bytes, what);
            return nullptr;
        }
        p.push_back(q);
        return q;
    }
};

}  // namespace

extern "C" int ak_emul_new(ak_emul **out, char *err) {
    *out = nullptr;
    if (ak_device_count() < 1) { if (err) snprintf(err, AX_ERR_LEN, "rho emulation: no CUDA device"); return -1; }
    ak_emul *e = (ak_emul *)calloc(1, sizeof *e);
    cudaDeviceProp p;
    if (!e || cudaGetDeviceProperties(&p, 0) != cudaSuccess || cudaStreamCreate(&e->st) != cudaSuccess) {
        cudaGetLastError();
        if (err) snprintf(err, AX_ERR_LEN, "rho emulation: cannot set up device 0");
        free(e);
        return -1;
    }
    e->l2 = p.l2CacheSize;
    e->sms = p.multiProcessorCount;
    *out = e;
    return 0;
}

extern "C" void ak_emul_free(ak_emul *e) {
    if (!e) return;
    cudaStreamDestroy(e->st);
    free(e);
}

extern "C" int ak_emul_gemm(ak_emul *e, const aq_mode *mode, int M, int N, int K, int xops, int warmup, int runs,
                            double *ms_median, double *ms_min, double *ms_max, char *err) {
    bool known = false;
    for (int i = 0; i < AK_EMUL_NXOPS; i++) known = known || ak_emul_xops[i] == xops;
    if (!known) { if (err) snprintf(err, AX_ERR_LEN, "rho emulation: k = %d is not built (0, 1, 2, 4, 8, 16)", xops); return -1; }
    if (M < 1 || N < 1 || runs < 1 || warmup < 0) {
        if (err) snprintf(err, AX_ERR_LEN, "rho emulation: bad shape M=%d N=%d or runs=%d", M, N, runs);
        return -1;
    }
    if (!mode || !aq_mode_is_integer(mode) || mode->permuted || mode->outliers > 0) {
        if (err) snprintf(err, AX_ERR_LEN, "rho emulation: mode '%s' is not a single-part GROUP or MIXED mode", mode ? mode->name : "?");
        return -1;
    }
    if (ak_supports(mode, K, err)) return -1;
    const bool mixed = mode->epilogue == AQ_EPI_MIXED;
    ak_gemm_args base;
    memset(&base, 0, sizeof base);
    base.M = M; base.N = N; base.nparts = 1;
    base.epi = mixed ? AK_EPI_MIXED : AK_EPI_GROUP;
    const int bits = mode->x.bits;
    int g = aq_operand_group(&mode->w, K);   // the GEMM's groups are W's (MIXED: sub-scales)
    if (g > K) g = K;
    ak_gpart &Q = base.p[0];
    Q.bits = bits; Q.kb = bits == 4 ? K / 2 : K; Q.lda = Q.ldb = Q.kb;
    Q.gch = (bits == 4 ? g / 2 : g) / 16; Q.G = (K + g - 1) / g;
    const size_t szA = (size_t)M * Q.kb, szB = (size_t)N * Q.kb, szsa = (size_t)M * (mixed ? 1 : Q.G) * 2,
                 szsb = (size_t)N * (mixed ? 1 : Q.G) * 2, szu = mixed ? (size_t)N * Q.G : 0;
    const size_t set = szA + szB + szsa + szsb + szu;
    const int R = std::max(1, std::min((int)((3 * (size_t)e->l2 + set - 1) / set), 256));
    epool P;
    std::vector<ak_gemm_args> sets(R, base);
    for (int r = 0; r < R; r++) {
        ak_gpart &S = sets[r].p[0];
        uint8_t *A = (uint8_t *)P.get(szA, err, "X codes"), *B = (uint8_t *)P.get(szB, err, "W codes");
        __half *sa = (__half *)P.get(szsa, err, "X scales"), *sb = (__half *)P.get(szsb, err, "W scales");
        if (!A || !B || !sa || !sb) return -1;
        const uint32_t sd = 1000u * (uint32_t)r;
        ak_fill::fill_bytes<<<1024, 256, 0, e->st>>>(A, szA, sd + 1);
        ak_fill::fill_bytes<<<1024, 256, 0, e->st>>>(B, szB, sd + 2);
        ak_fill::fill_half<<<1024, 256, 0, e->st>>>(sa, szsa / 2, sd + 3, 0.004f, 0.06f);
        ak_fill::fill_half<<<1024, 256, 0, e->st>>>(sb, szsb / 2, sd + 4, 0.004f, 0.06f);
        if (mixed) {
            uint8_t *u = (uint8_t *)P.get(szu, err, "W sub-scales");
            if (!u) return -1;
            ak_fill::fill_sub<<<1024, 256, 0, e->st>>>(u, szu, sd + 5);
            S.u = u;
        }
        S.A = A; S.B = B; S.sa = sa; S.sb = sb;
    }
    __half *Y = (__half *)P.get((size_t)M * N * 2, err, "Y");
    if (!Y) return -1;
    ak_plan pl;
    if (ak_gemm_plan(mode, M, N, K, e->sms, 0, &pl)) {
        if (err) snprintf(err, AX_ERR_LEN, "rho emulation: no launch plan for mode '%s', M=%d N=%d K=%d", mode->name, M, N, K);
        return -1;
    }
    void *ws = nullptr;
    if (pl.splits > 1) {
        const size_t wb = ak_ws_bytes(pl.splits, M, N);
        if (!(ws = P.get(wb, err, "split-K workspace"))) return -1;
        if (cudaMemset(ws, 0, wb) != cudaSuccess) {
            if (err) snprintf(err, AX_ERR_LEN, "rho emulation: cudaMemset of the split-K workspace failed");
            return -1;
        }
    }
    for (auto &s : sets) {
        s.Y = Y; s.splits = pl.splits; s.split_mode = pl.split_kind; s.ws = ws; s.cfg = pl.cfg;
        s.cnt = ws ? reinterpret_cast<unsigned *>(static_cast<uint8_t *>(ws) + ak_ws_part_bytes(pl.splits, M, N)) : nullptr;
    }
    std::vector<cudaEvent_t> ev(2 * (size_t)runs);
    int made = 0, rc = -1;
    for (auto &v : ev) {
        if (cudaEventCreate(&v) != cudaSuccess) { if (err) snprintf(err, AX_ERR_LEN, "rho emulation: cudaEventCreate failed"); goto done; }
        made++;
    }
    for (int i = 0; i < warmup; i++)
        if (ak_launch_gemm_xops(sets[i % R], xops, e->st, err)) goto done;
    for (int i = 0; i < runs; i++) {
        cudaEventRecord(ev[2 * i], e->st);
        if (ak_launch_gemm_xops(sets[(warmup + i) % R], xops, e->st, err)) goto done;
        cudaEventRecord(ev[2 * i + 1], e->st);
    }
    {
        cudaError_t ce = cudaStreamSynchronize(e->st);
        if (ce != cudaSuccess) { if (err) snprintf(err, AX_ERR_LEN, "rho emulation: run failed: %s", cudaGetErrorString(ce)); goto done; }
        std::vector<float> t(runs);
        for (int i = 0; i < runs; i++) cudaEventElapsedTime(&t[i], ev[2 * i], ev[2 * i + 1]);
        std::sort(t.begin(), t.end());
        *ms_median = runs % 2 ? t[runs / 2] : 0.5 * ((double)t[runs / 2 - 1] + t[runs / 2]);
        if (ms_min) *ms_min = t.front();
        if (ms_max) *ms_max = t.back();
        rc = 0;
    }
done:
    for (int i = 0; i < made; i++) cudaEventDestroy(ev[i]);
    return rc;
}
