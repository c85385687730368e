/* aq_gemm.c — integer group GEMM Y = X·Wᵀ of the CPU reference (NUMERICS.md "Integer GEMM with group
 * scales", "Mixed granularity", "Atom-style W4Ax"; split rule in quant/NUMERICS.md "apex4
 * clarifications").
 *
 * Bit-exact by construction: each group's dot product p is an exact int32 (any order), and the float
 * epilogue acc = fmaf((float)p, sx·sw, acc) runs per (m, n) over the groups in ascending order, so
 * the result does not depend on threads or blocking.
 *
 * Speed (not naive): codes are widened once per tile into int16 rows laid out group by group, each
 * group zero-padded to a multiple of 16 (padding adds 0 to p); a 2 (X rows) x 4 (W rows) micro-kernel
 * computes 8 group dot products with AVX2 vpmaddwd (16-bit products summed pairwise into int32; codes
 * are at most 128 in magnitude so nothing saturates), with a portable C fallback elsewhere. Tasks of
 * (64 X rows x 256 W rows) are spread across pthreads. Widening per task is O((mb + nc)·K) against
 * O(mb·nc·K) multiply-accumulates. */
#include "aq.h"
#include "aq_priv.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#define MB 64      /* X rows per task   */
#define NC 256     /* W rows per task   */
#define NR 4       /* W rows per panel  */
#define MR 2       /* X rows per micro-kernel */
#define LANES 16   /* int16 lanes per padded chunk */

/* Group layout of a widened row: ngr groups (main groups, then ATOM's outlier group), group j at
 * off[j] in int16 elements, padded length off[j+1] - off[j] (a multiple of LANES). */
typedef struct {
    int  ngr, G, has_o, mixed;
    int *off;           /* [ngr + 1] */
    int  rowlen;        /* off[ngr]  */
} layout;

typedef struct {
    const aq_qtensor *qx, *qw;
    const layout *lay;
    int k_splits, c;   /* c = groups per split */
    uint16_t *y;
    int ntasks, tiles_n, nthreads, tid;
    int failed;
} job;

static int pad16(int n) { return (n + LANES - 1) / LANES * LANES; }

/* Widen row r of operand t into dst [rowlen] int16 (group-padded layout). MIXED W: q·u. */
static void widen_row(const aq_qtensor *t, const layout *L, int r, int16_t *dst) {
    memset(dst, 0, (size_t)L->rowlen * sizeof *dst);
    const aq_qmat *q = &t->main;
    if (L->mixed) {                 /* one group [0, K): codes (times u for weights) */
        for (int k = 0; k < q->cols; k++) {
            int v = aq_qmat_code(q, r, k);
            if (q->sub) v *= q->sub[(size_t)r * (size_t)q->ngroups + (size_t)(k / q->group)];
            dst[k] = (int16_t)v;
        }
        return;
    }
    if (q->bits == 4) {
        const uint8_t *b = q->codes + (size_t)r * aq_qmat_row_bytes(q);
        for (int j = 0; j < L->G; j++) {
            int k0 = j * q->group, k1 = k0 + q->group < q->cols ? k0 + q->group : q->cols;
            int16_t *d = dst + L->off[j] - k0;
            for (int k = k0; k < k1; k++) {
                int nib = (k & 1) ? (b[k >> 1] >> 4) : (b[k >> 1] & 0x0f);
                d[k] = (int16_t)((nib ^ 8) - 8);
            }
        }
    } else {
        const int8_t *b = (const int8_t *)q->codes + (size_t)r * (size_t)q->cols;
        for (int j = 0; j < L->G; j++) {
            int k0 = j * q->group, k1 = k0 + q->group < q->cols ? k0 + q->group : q->cols;
            for (int k = k0; k < k1; k++) dst[L->off[j] + k - k0] = b[k];
        }
    }
    if (L->has_o) {
        const int8_t *b = (const int8_t *)t->outl.codes + (size_t)r * (size_t)t->outl.cols;
        for (int k = 0; k < t->outl.cols; k++) dst[L->off[L->G] + k] = b[k];
    }
}

/* Scale of row r for layout group j as fp32 (MIXED: the single per-row scale). */
static float row_scale(const aq_qtensor *t, const layout *L, int r, int j) {
    if (L->mixed) return aq_f16_to_f32(t->main.scales[r]);
    if (j < L->G) return aq_f16_to_f32(t->main.scales[(size_t)r * (size_t)t->main.ngroups + (size_t)j]);
    return aq_f16_to_f32(t->outl.scales[r]);
}

/* p[i*NR + jn] = Σ_k x_i[k]·w_jn[k] over n16 multiples of 16 elements (exact int32). */
static void dot_2x4(const int16_t *x0, const int16_t *x1, const int16_t *const w[NR], int n16,
                    int32_t p[MR * NR]) {
#if defined(__AVX2__)
    __m256i a00 = _mm256_setzero_si256(), a01 = a00, a02 = a00, a03 = a00;
    __m256i a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    const int16_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    for (int k = 0; k < n16; k += LANES) {
        __m256i b0 = _mm256_loadu_si256((const __m256i *)(w0 + k));
        __m256i b1 = _mm256_loadu_si256((const __m256i *)(w1 + k));
        __m256i b2 = _mm256_loadu_si256((const __m256i *)(w2 + k));
        __m256i b3 = _mm256_loadu_si256((const __m256i *)(w3 + k));
        __m256i x = _mm256_loadu_si256((const __m256i *)(x0 + k));
        a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(x, b0));
        a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(x, b1));
        a02 = _mm256_add_epi32(a02, _mm256_madd_epi16(x, b2));
        a03 = _mm256_add_epi32(a03, _mm256_madd_epi16(x, b3));
        x = _mm256_loadu_si256((const __m256i *)(x1 + k));
        a10 = _mm256_add_epi32(a10, _mm256_madd_epi16(x, b0));
        a11 = _mm256_add_epi32(a11, _mm256_madd_epi16(x, b1));
        a12 = _mm256_add_epi32(a12, _mm256_madd_epi16(x, b2));
        a13 = _mm256_add_epi32(a13, _mm256_madd_epi16(x, b3));
    }
    /* Transpose-reduce the 8 vectors of 8 int32 into one vector of 8 sums (exact integer adds). */
    __m256i h0 = _mm256_hadd_epi32(a00, a01), h1 = _mm256_hadd_epi32(a02, a03);
    __m256i h2 = _mm256_hadd_epi32(a10, a11), h3 = _mm256_hadd_epi32(a12, a13);
    h0 = _mm256_hadd_epi32(h0, h1);      /* per 128-bit half: a00 a01 a02 a03 */
    h2 = _mm256_hadd_epi32(h2, h3);      /* per 128-bit half: a10 a11 a12 a13 */
    __m256i lo = _mm256_permute2x128_si256(h0, h2, 0x20), hi = _mm256_permute2x128_si256(h0, h2, 0x31);
    _mm256_storeu_si256((__m256i *)p, _mm256_add_epi32(lo, hi));
#else
    for (int jn = 0; jn < NR; jn++) {
        int32_t s0 = 0, s1 = 0;
        for (int k = 0; k < n16; k++) { s0 += x0[k] * w[jn][k]; s1 += x1[k] * w[jn][k]; }
        p[jn] = s0;
        p[NR + jn] = s1;
    }
#endif
}

static void run_task(job *J, int task, int16_t *xb, int16_t *wb, float *xs, float *ws) {
    const layout *L = J->lay;
    const int M = J->qx->rows, N = J->qw->rows, ngr = L->ngr, rl = L->rowlen;
    int tm = task / J->tiles_n, tn = task % J->tiles_n;
    int m0 = tm * MB, m1 = m0 + MB < M ? m0 + MB : M;
    int n0 = tn * NC, n1 = n0 + NC < N ? n0 + NC : N;
    for (int m = m0; m < m1; m++) {
        widen_row(J->qx, L, m, xb + (size_t)(m - m0) * (size_t)rl);
        for (int j = 0; j < ngr; j++) xs[(size_t)(m - m0) * (size_t)ngr + (size_t)j] = row_scale(J->qx, L, m, j);
    }
    for (int np = n0; np < n1; np += NR) {
        int nr = n1 - np < NR ? n1 - np : NR;
        for (int i = 0; i < nr; i++) {
            widen_row(J->qw, L, np + i, wb + (size_t)i * (size_t)rl);
            for (int j = 0; j < ngr; j++) ws[(size_t)i * (size_t)ngr + (size_t)j] = row_scale(J->qw, L, np + i, j);
        }
        const int16_t *wrow[NR];
        for (int i = 0; i < NR; i++) wrow[i] = wb + (size_t)(i < nr ? i : 0) * (size_t)rl;
        for (int m = m0; m < m1; m += MR) {
            int mr = m1 - m < MR ? m1 - m : MR;
            const int16_t *x0 = xb + (size_t)(m - m0) * (size_t)rl;
            const int16_t *x1 = mr > 1 ? x0 + rl : x0;
            const float *s0 = xs + (size_t)(m - m0) * (size_t)ngr, *s1 = mr > 1 ? s0 + ngr : s0;
            float tot[MR * NR];
            int32_t p[MR * NR];
            if (L->mixed) {
                dot_2x4(x0, x1, wrow, rl, p);
                for (int i = 0; i < MR; i++)
                    for (int jn = 0; jn < NR; jn++)
                        tot[i * NR + jn] = (float)p[i * NR + jn] * ((i ? s1 : s0)[0] * ws[(size_t)jn * (size_t)ngr]);
            } else {
                for (int s = 0; s < J->k_splits; s++) {
                    int last = s == J->k_splits - 1;
                    int j0 = s * J->c < L->G ? s * J->c : L->G;     /* c >= 1; s·c <= INT_MAX / 2 */
                    int j1 = j0 + J->c < L->G ? j0 + J->c : L->G;
                    if (last && L->has_o) j1 = L->G + 1;   /* the outlier group closes the last split */
                    if (j0 >= j1) continue;  /* empty split: acc_s = +0.0f, adding it is a no-op since
                                              * tot is never -0 (fmaf/+ from +0 cannot give -0 in RNE) */
                    float a[MR * NR];
                    for (int i = 0; i < MR * NR; i++) a[i] = 0.0f;
                    for (int j = j0; j < j1; j++) {
                        int off = L->off[j], len = L->off[j + 1] - off;
                        const int16_t *wj[NR] = {wrow[0] + off, wrow[1] + off, wrow[2] + off, wrow[3] + off};
                        dot_2x4(x0 + off, x1 + off, wj, len, p);
                        for (int i = 0; i < MR; i++) {
                            float sxv = (i ? s1 : s0)[j];
                            for (int jn = 0; jn < NR; jn++) {
                                float sig = sxv * ws[(size_t)jn * (size_t)ngr + (size_t)j];
                                a[i * NR + jn] = fmaf((float)p[i * NR + jn], sig, a[i * NR + jn]);
                            }
                        }
                    }
                    for (int i = 0; i < MR * NR; i++) tot[i] = s == 0 ? a[i] : tot[i] + a[i];
                }
            }
            for (int i = 0; i < mr; i++)
                for (int jn = 0; jn < nr; jn++)
                    J->y[(size_t)(m + i) * (size_t)N + (size_t)(np + jn)] = aq_f32_to_f16(tot[i * NR + jn]);
        }
    }
}

static void *worker(void *arg) {
    job *J = arg;
    const layout *L = J->lay;
    size_t rl = (size_t)L->rowlen;
    int16_t *xb = malloc((size_t)MB * rl * sizeof *xb), *wb = malloc((size_t)NR * rl * sizeof *wb);
    float *xs = malloc((size_t)MB * (size_t)L->ngr * sizeof *xs), *ws = malloc((size_t)NR * (size_t)L->ngr * sizeof *ws);
    if (!xb || !wb || !xs || !ws) J->failed = 1;
    else
        for (int t = J->tid; t < J->ntasks; t += J->nthreads) run_task(J, t, xb, wb, xs, ws);
    free(xb); free(wb); free(xs); free(ws);
    return NULL;
}

int aq_gemm(const aq_qtensor *qx, const aq_qtensor *qw, int k_splits, uint16_t *y, int nthreads,
            char *err) {
    if (!qx || !qw || !y || !qx->main.codes || !qw->main.codes || qx->rows < 1 || qw->rows < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "gemm: NULL or empty operand");
        return -1;
    }
    if (!aq_mode_is_integer(&qx->mode) || !aq_mode_same(&qx->mode, &qw->mode)) {
        if (err) snprintf(err, AX_ERR_LEN, "gemm: X mode '%s' and W mode '%s' differ or are not integer modes",
                          qx->mode.name, qw->mode.name);
        return -1;
    }
    if (qx->K != qw->K) {
        if (err) snprintf(err, AX_ERR_LEN, "gemm: K mismatch: X has K = %d, W has K = %d", qx->K, qw->K);
        return -1;
    }
    if (k_splits < 1 || k_splits > 65536 || nthreads < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "gemm: k_splits (%d) must be 1..65536 and nthreads (%d) >= 1",
                          k_splits, nthreads);
        return -1;
    }
    const aq_qmat *xm = &qx->main, *wm = &qw->main;
    int mixed = qx->mode.epilogue == AQ_EPI_MIXED;
    if (xm->cols != wm->cols || qx->outl.cols != qw->outl.cols ||
        (mixed ? (!wm->sub || xm->sub || xm->ngroups != 1 || !xm->scales || !wm->scales)
               : (xm->group != wm->group || xm->ngroups != wm->ngroups || xm->sub || wm->sub)) ||
        (qx->outl.rows > 0) != (qw->outl.rows > 0) || (qx->outl.rows > 0 && qx->outl.rows != qx->rows) ||
        (qw->outl.rows > 0 && qw->outl.rows != qw->rows) || xm->rows != qx->rows || wm->rows != qw->rows) {
        if (err) snprintf(err, AX_ERR_LEN, "gemm: X and W quantized layouts do not match for mode '%s'",
                          qx->mode.name);
        return -1;
    }
    if (qx->perm && qw->perm && memcmp(qx->perm, qw->perm, (size_t)qx->K * sizeof *qx->perm)) {
        if (err) snprintf(err, AX_ERR_LEN, "gemm: X and W were quantized with different channel permutations");
        return -1;
    }
    /* int32 exactness: |code| <= 8 (4-bit), 128 (8-bit), |q·u| <= 120 (mixed weights). */
    long long maxpe = mixed ? 8LL * 120 : (long long)(xm->bits == 8 ? 128 : 8) * (wm->bits == 8 ? 128 : 8);
    long long glen = mixed ? xm->cols : (xm->group < xm->cols ? xm->group : xm->cols);
    if (maxpe * glen >= (1LL << 31) || 128LL * 128 * qx->outl.cols >= (1LL << 31)) {
        if (err) snprintf(err, AX_ERR_LEN, "gemm: group length %lld too long for an exact int32 dot product", glen);
        return -1;
    }
    layout L = {0};
    L.mixed = mixed;
    L.G = mixed ? 1 : xm->ngroups;
    L.has_o = !mixed && qx->outl.rows > 0;
    L.ngr = L.G + L.has_o;
    L.off = malloc((size_t)(L.ngr + 1) * sizeof *L.off);
    if (!L.off) { if (err) snprintf(err, AX_ERR_LEN, "gemm: out of memory"); return -1; }
    L.off[0] = 0;
    for (int j = 0; j < L.G; j++) {
        int len = mixed ? xm->cols : (j + 1 < L.G ? xm->group : xm->cols - j * xm->group);
        L.off[j + 1] = L.off[j] + pad16(len);
    }
    if (L.has_o) L.off[L.ngr] = L.off[L.G] + pad16(qx->outl.cols);
    L.rowlen = L.off[L.ngr];

    int M = qx->rows, N = qw->rows;
    int tiles_m = (M + MB - 1) / MB, tiles_n = (N + NC - 1) / NC;
    int ntasks = tiles_m * tiles_n;
    if (nthreads > ntasks) nthreads = ntasks;
    job *jobs = calloc((size_t)nthreads, sizeof *jobs);
    pthread_t *th = calloc((size_t)nthreads, sizeof *th);
    if (!jobs || !th) {
        free(jobs); free(th); free(L.off);
        if (err) snprintf(err, AX_ERR_LEN, "gemm: out of memory");
        return -1;
    }
    int failed = 0;
    char *created = calloc((size_t)nthreads, 1);
    if (!created) {
        free(jobs); free(th); free(L.off);
        if (err) snprintf(err, AX_ERR_LEN, "gemm: out of memory");
        return -1;
    }
    int c = (L.G + k_splits - 1) / k_splits;
    for (int t = 0; t < nthreads; t++) {
        jobs[t] = (job){qx, qw, &L, k_splits, c, y, ntasks, tiles_n, nthreads, t, 0};
        if (t > 0) created[t] = pthread_create(&th[t], NULL, worker, &jobs[t]) == 0;
    }
    worker(&jobs[0]);
    for (int t = 1; t < nthreads; t++) {
        if (created[t]) pthread_join(th[t], NULL);
        else worker(&jobs[t]);   /* a thread that could not start: the caller does its share */
    }
    free(created);
    for (int t = 0; t < nthreads; t++) failed |= jobs[t].failed;
    free(jobs); free(th); free(L.off);
    if (failed) {
        if (err) snprintf(err, AX_ERR_LEN, "gemm: out of memory for the per-thread tiles");
        return -1;
    }
    return 0;
}
