// ak_cuda.cu — host side of the CUDA kernels (kernels/ak.h): device discovery, shape/mode checks,
// ak_quantize_x and ak_gemm (upload the CPU reference's layout, launch, download). No contract math
// happens here: it is all in ak_quant.cu / ak_gemm.cu, checked against quant/ by apex4 check.
#include "ak_internal.cuh"

#include <cstdio>
#include <cstdlib>
#include <cstring>

extern "C" int ak_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) { cudaGetLastError(); return 0; }
    return n;
}

extern "C" void ak_device_describe(char *buf, size_t len) {
    int n = ak_device_count();
    if (n == 0) { snprintf(buf, len, "no CUDA device (no GPU or no driver visible to this process)"); return; }
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) { snprintf(buf, len, "no CUDA device: cannot query device 0"); return; }
    snprintf(buf, len, "%s, %d SMs, sm_%d%d, %.0f MiB", p.name, p.multiProcessorCount, p.major, p.minor,
             (double)p.totalGlobalMem / 1048576.0);
}

extern "C" int ak_supports(const aq_mode *m, int K, char *err) {
    if (!m || !aq_mode_is_integer(m)) {
        if (err) snprintf(err, AX_ERR_LEN, "mode '%s' has no integer GEMM (the GPU kernels need w4a4-*, w8a8, atom-*)",
                          m ? m->name : "(null)");
        return -1;
    }
    if (m->wbits != m->xbits || (m->wbits != 4 && m->wbits != 8)) {
        if (err) snprintf(err, AX_ERR_LEN, "mode '%s': the GPU kernels need equal weight/activation bits of 4 or 8 (got w%d a%d)",
                          m->name, m->wbits, m->xbits);
        return -1;
    }
    if (K < 32 || K > AK_MAX_K || K % 32) {
        if (err) snprintf(err, AX_ERR_LEN, "K = %d: the GPU kernels need K a multiple of 32 in 32..%d (mode '%s')",
                          K, AK_MAX_K, m->name);
        return -1;
    }
    if (m->kind != AQ_KIND_GROUP || m->group != 0) {
        if (m->group % 32) {
            if (err) snprintf(err, AX_ERR_LEN, "mode '%s': the GPU kernels need a group size that is a multiple of 32 (got %d)",
                              m->name, m->group);
            return -1;
        }
    }
    if (m->kind == AQ_KIND_ATOM) {
        if (m->outliers % 32 || K - m->outliers < 32) {
            if (err) snprintf(err, AX_ERR_LEN, "mode '%s', K = %d: the GPU kernels need the outlier count (%d) and "
                              "K - outliers (%d) to be multiples of 32, with K - outliers >= 32",
                              m->name, K, m->outliers, K - m->outliers);
            return -1;
        }
    }
    return 0;
}

namespace {

struct devbufs {   // every device allocation of one call, freed together
    void *p[16];
    int n = 0;
    ~devbufs() { for (int i = 0; i < n; i++) cudaFree(p[i]); }
    template <class T> cudaError_t alloc(T **out, size_t bytes) {
        void *q = nullptr;
        cudaError_t e = cudaMalloc(&q, bytes ? bytes : 16);
        if (e == cudaSuccess) p[n++] = q;
        *out = static_cast<T *>(q);
        return e;
    }
};

int perm_ok(const int32_t *perm, int K, char *err) {
    if (!perm) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: X: atom mode needs a channel permutation perm [%d]", K);
        return -1;
    }
    unsigned char *seen = (unsigned char *)calloc((size_t)K, 1);
    if (!seen) { if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: out of memory"); return -1; }
    for (int i = 0; i < K; i++) {
        int32_t v = perm[i];
        if (v < 0 || v >= K || seen[v]) {
            if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: X: perm is not a permutation of 0..%d: perm[%d] = %d",
                              K - 1, i, (int)v);
            free(seen);
            return -1;
        }
        seen[v] = 1;
    }
    free(seen);
    return 0;
}

int qmat_host_alloc(aq_qmat *q, int rows, int cols, int bits, int group) {
    memset(q, 0, sizeof *q);
    q->rows = rows; q->cols = cols; q->bits = bits; q->group = group;
    q->ngroups = (cols + group - 1) / group;
    size_t rb = bits == 4 ? (size_t)(cols + 1) / 2 : (size_t)cols;
    q->codes = (uint8_t *)calloc((size_t)rows * rb, 1);
    q->scales = (uint16_t *)calloc((size_t)rows * (size_t)q->ngroups, sizeof(uint16_t));
    return q->codes && q->scales ? 0 : -1;
}

size_t row_bytes(const aq_qmat *q) { return q->bits == 4 ? (size_t)(q->cols + 1) / 2 : (size_t)q->cols; }

}  // namespace

extern "C" int ak_quantize_x(const aq_mode *m, const uint16_t *x, int M, int K, const int32_t *perm,
                             aq_qtensor *out, char *err) {
    if (!out) { if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: NULL output"); return -1; }
    memset(out, 0, sizeof *out);
    if (!m || !x || M < 1 || K < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: X: bad shape [%d, %d] or NULL data/mode", M, K);
        return -1;
    }
    if (ak_supports(m, K, err)) return -1;
    if (m->kind == AQ_KIND_ATOM) {
        if (perm_ok(perm, K, err)) return -1;
    } else if (perm) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: X: a channel permutation is only used by atom modes, not '%s'", m->name);
        return -1;
    }
    if (ak_device_count() < 1) { if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: no CUDA device"); return -1; }

    ak_quant_args a;
    memset(&a, 0, sizeof a);
    a.M = M; a.K = K;
    const int o = m->kind == AQ_KIND_ATOM ? m->outliers : 0;
    const int Km = K - o;
    int g = m->kind == AQ_KIND_MIXED ? K : (m->group ? m->group : K);
    a.nparts = o > 0 ? 2 : 1;
    a.p[0] = ak_qpart{0, Km, m->xbits, g < Km ? g : Km, 0, m->alpha_x, nullptr, 0, nullptr};
    if (o > 0) a.p[1] = ak_qpart{Km, o, 8, o, 1, 1.0f, nullptr, o, nullptr};

    devbufs d;
    int rc = -1;
    __half *dx = nullptr;
    int32_t *dperm = nullptr;
    unsigned long long *dbad = nullptr, bad = ~0ull;
    out->mode = *m; out->rows = M; out->K = K;
    if (qmat_host_alloc(&out->main, M, Km, m->xbits, g) ||
        (o > 0 && qmat_host_alloc(&out->outl, M, o, 8, o))) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: out of memory for [%d, %d] codes", M, K);
        goto fail;
    }
    if (o > 0 || m->kind == AQ_KIND_ATOM) {
        out->perm = (int32_t *)malloc((size_t)K * sizeof(int32_t));
        if (!out->perm) { if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: out of memory"); goto fail; }
        memcpy(out->perm, perm, (size_t)K * sizeof(int32_t));
    }
    a.p[0].G = out->main.ngroups;
    a.p[0].rb = (int)row_bytes(&out->main);
    // The quantizer works on g as the group length; a group longer than the part is the part.
    AK_CUDA_TRY(d.alloc(&dx, (size_t)M * K * 2), "ak_quantize_x: cudaMalloc X");
    AK_CUDA_TRY(d.alloc(&dbad, sizeof bad), "ak_quantize_x: cudaMalloc");
    AK_CUDA_TRY(d.alloc(&a.p[0].codes, (size_t)M * a.p[0].rb), "ak_quantize_x: cudaMalloc codes");
    AK_CUDA_TRY(d.alloc(&a.p[0].scales, (size_t)M * a.p[0].G * 2), "ak_quantize_x: cudaMalloc scales");
    if (o > 0) {
        AK_CUDA_TRY(d.alloc(&a.p[1].codes, (size_t)M * o), "ak_quantize_x: cudaMalloc outlier codes");
        AK_CUDA_TRY(d.alloc(&a.p[1].scales, (size_t)M * 2), "ak_quantize_x: cudaMalloc outlier scales");
    }
    if (m->kind == AQ_KIND_ATOM) {
        AK_CUDA_TRY(d.alloc(&dperm, (size_t)K * 4), "ak_quantize_x: cudaMalloc perm");
        AK_CUDA_TRY(cudaMemcpy(dperm, perm, (size_t)K * 4, cudaMemcpyHostToDevice), "ak_quantize_x: upload perm");
    }
    AK_CUDA_TRY(cudaMemcpy(dx, x, (size_t)M * K * 2, cudaMemcpyHostToDevice), "ak_quantize_x: upload X");
    AK_CUDA_TRY(cudaMemcpy(dbad, &bad, sizeof bad, cudaMemcpyHostToDevice), "ak_quantize_x: upload");
    a.x = dx; a.perm = dperm; a.bad = dbad;
    if (ak_launch_quant(a, 0, err)) goto fail;
    AK_CUDA_TRY(cudaDeviceSynchronize(), "ak_quantize_x: kernel");
    AK_CUDA_TRY(cudaMemcpy(&bad, dbad, sizeof bad, cudaMemcpyDeviceToHost), "ak_quantize_x: download");
    if (bad != ~0ull) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_quantize_x: X: non-finite fp16 value (0x%04x) at [%llu, %llu]",
                          x[bad], bad / (unsigned long long)K, bad % (unsigned long long)K);
        goto fail;
    }
    AK_CUDA_TRY(cudaMemcpy(out->main.codes, a.p[0].codes, (size_t)M * a.p[0].rb, cudaMemcpyDeviceToHost),
                "ak_quantize_x: download codes");
    AK_CUDA_TRY(cudaMemcpy(out->main.scales, a.p[0].scales, (size_t)M * a.p[0].G * 2, cudaMemcpyDeviceToHost),
                "ak_quantize_x: download scales");
    if (o > 0) {
        AK_CUDA_TRY(cudaMemcpy(out->outl.codes, a.p[1].codes, (size_t)M * o, cudaMemcpyDeviceToHost),
                    "ak_quantize_x: download outlier codes");
        AK_CUDA_TRY(cudaMemcpy(out->outl.scales, a.p[1].scales, (size_t)M * 2, cudaMemcpyDeviceToHost),
                    "ak_quantize_x: download outlier scales");
    }
    rc = 0;
fail:
    if (rc) aq_qtensor_free(out);
    return rc;
}

namespace {

int layouts_match(const aq_qtensor *qx, const aq_qtensor *qw, char *err) {
    const aq_qmat *xm = &qx->main, *wm = &qw->main;
    const bool mixed = qx->mode.kind == AQ_KIND_MIXED;
    const char *why = nullptr;
    if (strcmp(qx->mode.name, qw->mode.name) || qx->mode.kind != qw->mode.kind) why = "X and W modes differ";
    else if (qx->K != qw->K) why = "X and W have different K";
    else if (!xm->codes || !wm->codes || !xm->scales || !wm->scales) why = "missing codes or scales";
    else if (xm->rows != qx->rows || wm->rows != qw->rows || xm->cols != wm->cols) why = "main parts have different shapes";
    else if (xm->bits != wm->bits || xm->bits != qx->mode.xbits) why = "code widths differ from the mode";
    else if (mixed && (!wm->sub || xm->sub || xm->ngroups != 1)) why = "mixed mode needs per-token X and W sub-scales";
    else if (!mixed && (xm->group != wm->group || xm->ngroups != wm->ngroups || xm->sub || wm->sub)) why = "group layouts differ";
    else if ((qx->outl.rows > 0) != (qw->outl.rows > 0)) why = "only one operand has outlier channels";
    else if (qx->outl.rows > 0 && (qx->outl.rows != qx->rows || qw->outl.rows != qw->rows || qx->outl.cols != qw->outl.cols ||
                                   qx->outl.bits != 8 || qw->outl.bits != 8 || !qx->outl.codes || !qw->outl.codes))
        why = "outlier parts do not match";
    else if (xm->cols + qx->outl.cols != qx->K) why = "main + outlier channels != K";
    if (why) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: %s (mode '%s', K = %d / %d)", why, qx->mode.name, qx->K, qw->K);
        return -1;
    }
    return 0;
}

}  // namespace

int ak_split_mode(const aq_mode *m) {
    if (m->kind == AQ_KIND_MIXED || (m->kind == AQ_KIND_GROUP && m->group == 0)) return AK_SPLIT_INT;
    return AK_SPLIT_GROUP;
}

extern "C" int ak_gemm_splits(const aq_mode *m, int M, int N, int K) {
    if (!m || M < 1 || N < 1 || K < 32 || !aq_mode_is_integer(m)) return 1;
    if (M <= 16 && AK_GEMV) {   // gemv_kernel (ak_gemm.cu): warps of AK_GEMV_NCOLS columns
        const long long warps = (N + AK_GEMV_NCOLS - 1) / AK_GEMV_NCOLS, want = 132LL * AK_GEMV_WARPS_PER_SM;
        if (warps >= want) return 1;
        int S = (int)((want + warps - 1) / warps);
        const int o = m->kind == AQ_KIND_ATOM ? m->outliers : 0;
        const int spans = ((K - o) * m->xbits / 8 + 63) / 64;
        if (S > spans / AK_GEMV_MIN_SPANS) S = spans / AK_GEMV_MIN_SPANS;
        if (ak_split_mode(m) == AK_SPLIT_GROUP) {
            const int g = m->group ? m->group : K;
            const int G = (K - o + g - 1) / g;
            if (S > G) S = G;
        }
        return S < 1 ? 1 : S;
    }
    // Same tile choice as launch_epi (ak_gemm.cu): split only the two smaller configurations.
    long long blocks;
    if (M <= 16) blocks = (long long)((N + AK_SMALL_BN - 1) / AK_SMALL_BN);
    else if ((long long)((M + 127) / 128) * ((N + 127) / 128) < 264) blocks = (long long)((M + 63) / 64) * ((N + 127) / 128);
    else return 1;
    const long long want = 2LL * 132;
    if (blocks >= want) return 1;
    int S = (int)((want + blocks - 1) / blocks);
    const int o = m->kind == AQ_KIND_ATOM ? m->outliers : 0;
    const int tile_bytes = M <= 16 ? AK_SMALL_BKB : 128;   // BKB of the configuration (ak_gemm.cu launch_epi)
    const int tiles = ((K - o) * m->xbits / 8 + tile_bytes - 1) / tile_bytes;
    if (S > tiles / 2) S = tiles / 2;
    if (ak_split_mode(m) == AK_SPLIT_GROUP) {
        const int g = m->group ? m->group : K;
        const int G = (K - o + g - 1) / g;
        if (S > G) S = G;
    }
    return S < 1 ? 1 : S;
}

extern "C" int ak_gemm(const aq_qtensor *qx, const aq_qtensor *qw, ak_path path, uint16_t *y, char *err) {
    return ak_gemm_ex(qx, qw, path, 1, y, err);
}

extern "C" int ak_gemm_ex(const aq_qtensor *qx, const aq_qtensor *qw, ak_path path, int k_splits, uint16_t *y,
                          char *err) {
    if (k_splits < 1 || k_splits > 65535) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: k_splits = %d must be 1..65535", k_splits);
        return -1;
    }
    if (!qx || !qw || !y || qx->rows < 1 || qw->rows < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: NULL or empty operand");
        return -1;
    }
    if (path != AK_PATH_INT8 && path != AK_PATH_INT4) {
        if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: unknown path %d", (int)path);
        return -1;
    }
    if (layouts_match(qx, qw, err)) return -1;
    if (ak_supports(&qx->mode, qx->K, err)) return -1;
    if (ak_device_count() < 1) { if (err) snprintf(err, AX_ERR_LEN, "ak_gemm: no CUDA device"); return -1; }

    const int M = qx->rows, N = qw->rows;
    const bool mixed = qx->mode.kind == AQ_KIND_MIXED;
    ak_gemm_args a;
    memset(&a, 0, sizeof a);
    a.M = M; a.N = N;
    a.epi = mixed ? AK_EPI_MIXED : AK_EPI_GROUP;
    a.nparts = qx->outl.rows > 0 ? 2 : 1;
    devbufs d;
    int rc = -1;
    for (int i = 0; i < a.nparts; i++) {
        const aq_qmat *xm = i ? &qx->outl : &qx->main, *wm = i ? &qw->outl : &qw->main;
        ak_gpart &P = a.p[i];
        const size_t kb = row_bytes(xm);
        const int glen = mixed ? wm->group : (xm->group < xm->cols ? xm->group : xm->cols);
        P.kb = (int)kb;
        P.lda = P.ldb = (int)kb;
        P.bits = xm->bits;
        P.gch = (xm->bits == 4 ? glen / 2 : glen) / 16;
        P.G = wm->ngroups;
        const size_t sx_n = (size_t)M * xm->ngroups, sw_n = (size_t)N * (mixed ? 1 : wm->ngroups);
        uint8_t *A = nullptr, *B = nullptr, *u = nullptr;
        __half *sa = nullptr, *sb = nullptr;
        AK_CUDA_TRY(d.alloc(&A, (size_t)M * kb), "ak_gemm: cudaMalloc X codes");
        AK_CUDA_TRY(d.alloc(&B, (size_t)N * kb), "ak_gemm: cudaMalloc W codes");
        AK_CUDA_TRY(d.alloc(&sa, sx_n * 2), "ak_gemm: cudaMalloc X scales");
        AK_CUDA_TRY(d.alloc(&sb, sw_n * 2), "ak_gemm: cudaMalloc W scales");
        AK_CUDA_TRY(cudaMemcpy(A, xm->codes, (size_t)M * kb, cudaMemcpyHostToDevice), "ak_gemm: upload X codes");
        AK_CUDA_TRY(cudaMemcpy(B, wm->codes, (size_t)N * kb, cudaMemcpyHostToDevice), "ak_gemm: upload W codes");
        AK_CUDA_TRY(cudaMemcpy(sa, xm->scales, sx_n * 2, cudaMemcpyHostToDevice), "ak_gemm: upload X scales");
        AK_CUDA_TRY(cudaMemcpy(sb, wm->scales, sw_n * 2, cudaMemcpyHostToDevice), "ak_gemm: upload W scales");
        if (mixed) {
            AK_CUDA_TRY(d.alloc(&u, (size_t)N * wm->ngroups), "ak_gemm: cudaMalloc W sub-scales");
            AK_CUDA_TRY(cudaMemcpy(u, wm->sub, (size_t)N * wm->ngroups, cudaMemcpyHostToDevice), "ak_gemm: upload sub-scales");
        }
        P.A = A; P.B = B; P.sa = sa; P.sb = sb; P.u = u;
    }
    AK_CUDA_TRY(d.alloc(&a.Y, (size_t)M * N * 2), "ak_gemm: cudaMalloc Y");
    a.splits = k_splits;
    a.split_mode = k_splits > 1 ? (a.p[0].G == 1 && a.nparts == 1 ? AK_SPLIT_INT : ak_split_mode(&qx->mode))
                                : AK_SPLIT_NONE;
    if (a.split_mode == AK_SPLIT_INT && a.nparts > 1) a.split_mode = AK_SPLIT_GROUP;
    if (k_splits > 1) {
        AK_CUDA_TRY(d.alloc(&a.ws, ak_ws_bytes(k_splits, M, N)), "ak_gemm: cudaMalloc split-K workspace");
        AK_CUDA_TRY(cudaMemset(a.ws, 0, ak_ws_bytes(k_splits, M, N)), "ak_gemm: cudaMemset split-K workspace");
    }
    if (ak_launch_gemm(a, path, 0, err)) goto fail;
    AK_CUDA_TRY(cudaDeviceSynchronize(), "ak_gemm: kernel");
    AK_CUDA_TRY(cudaMemcpy(y, a.Y, (size_t)M * N * 2, cudaMemcpyDeviceToHost), "ak_gemm: download Y");
    rc = 0;
fail:
    return rc;
}
