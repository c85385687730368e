/* ak_check.c — one bit-exact check case of the CUDA kernels against the CPU reference (quant/aq.h):
 * the expected values all come from aq_quantize_x / aq_quantize_w / aq_gemm; this file only
 * generates inputs, calls both sides and compares bytes (CUTLASS-style testbed, STYLE.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aq.h"
#include "ak.h"
#include "ak_inputs.h"

const char *ak_input_name(ak_input k) { return (int)k >= 0 && (int)k < 3 ? akin_names[k] : "?"; }

int ak_input_parse(const char *s) {
    for (int i = 0; i < 3; i++)
        if (s && !strcmp(s, akin_names[i])) return i;
    return -1;
}

void ak_fill_input(ak_input k, unsigned seed, int rows, int K, uint16_t *x) { akin_fill(k, seed, rows, K, x); }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* First differing byte of two buffers, or -1. */
static long first_diff(const void *a, const void *b, size_t n) {
    const unsigned char *p = a, *q = b;
    for (size_t i = 0; i < n; i++)
        if (p[i] != q[i]) return (long)i;
    return -1;
}

static size_t qrow_bytes(const aq_qmat *q) { return q->bits == 4 ? (size_t)(q->cols + 1) / 2 : (size_t)q->cols; }

/* Compare one quantized part (codes then scales); 0 if equal, else 1 with msg. */
static int cmp_qmat(const char *what, const aq_qmat *g, const aq_qmat *r, long *bytes, char *msg) {
    if (g->rows != r->rows || g->cols != r->cols || g->bits != r->bits || g->ngroups != r->ngroups) {
        snprintf(msg, 256, "%s: layout differs (gpu %dx%d b%d G%d, ref %dx%d b%d G%d)", what, g->rows, g->cols,
                 g->bits, g->ngroups, r->rows, r->cols, r->bits, r->ngroups);
        return 1;
    }
    if ((g->sub != NULL) != (r->sub != NULL)) {
        snprintf(msg, 256, "%s: only one side has sub-scales", what);
        return 1;
    }
    /* scale columns: 1 for MIXED weights (per-row S; sub holds the groups), else ngroups */
    const size_t scols = r->sub ? 1 : (size_t)r->ngroups;
    size_t rb = qrow_bytes(r), nc = (size_t)r->rows * rb, ns = (size_t)r->rows * scols;
    long d = first_diff(g->codes, r->codes, nc);
    if (d >= 0) {
        snprintf(msg, 256, "%s codes differ at row %ld byte %ld: gpu 0x%02x ref 0x%02x", what, d / (long)rb,
                 d % (long)rb, g->codes[d], r->codes[d]);
        return 1;
    }
    d = first_diff(g->scales, r->scales, ns * 2);
    if (d >= 0) {
        long e = d / 2;
        snprintf(msg, 256, "%s scales differ at [%ld, %ld]: gpu 0x%04x ref 0x%04x", what, e / (long)scols,
                 e % (long)scols, g->scales[e], r->scales[e]);
        return 1;
    }
    *bytes += (long)(nc + ns * 2);
    return 0;
}

/* Weight quantizer on the device (ak_quantize_w_dev) against the reference's qw: 0 when it ran (match
 * or not: *ok), -1 on a CUDA error (err). */
static int check_wquant(const aq_mode *m, const uint16_t *w, int N, int K, const int32_t *perm, const aq_qtensor *qwr,
                        ak_check_result *r, int *ok, char *err) {
    ak_ctx *c = NULL;
    void *dw = NULL, *dp = NULL;
    ak_dqt q;
    aq_qtensor g;
    memset(&q, 0, sizeof q);
    memset(&g, 0, sizeof g);
    int rc = -1;
    const size_t wb = (size_t)N * (size_t)K * 2;
    if (ak_ctx_new(0, &c, err) || ak_dmalloc(c, wb, &dw, "W", err) || ak_upload(c, dw, w, wb, "W", err)) goto done;
    if (perm && (ak_dmalloc(c, (size_t)K * 4, &dp, "perm", err) || ak_upload(c, dp, perm, (size_t)K * 4, "perm", err)))
        goto done;
    if (ak_dqt_alloc(c, m, 1, N, K, &q, "W", err) || ak_quantize_w_dev(c, m, dw, N, K, dp, &q, "W", err) ||
        ak_dqt_download(c, &q, &g, err))
        goto done;
    *ok = !cmp_qmat("W main (device quantizer)", &g.main, &qwr->main, &r->quant_bytes, r->msg) &&
          (qwr->outl.rows == 0 || !cmp_qmat("W outliers (device quantizer)", &g.outl, &qwr->outl, &r->quant_bytes, r->msg));
    if (*ok && qwr->main.sub) {
        size_t nu = (size_t)N * (size_t)qwr->main.ngroups;
        long d = first_diff(g.main.sub, qwr->main.sub, nu);
        if (d >= 0) {
            snprintf(r->msg, sizeof r->msg, "W sub-scales (device quantizer) differ at [%ld, %ld]: gpu %u ref %u",
                     d / qwr->main.ngroups, d % qwr->main.ngroups, g.main.sub[d], qwr->main.sub[d]);
            *ok = 0;
        } else {
            r->quant_bytes += (long)nu;
        }
    }
    rc = 0;
done:
    aq_qtensor_free(&g);
    if (c) {
        ak_dqt_free(c, &q);
        ak_dfree(c, dw);
        ak_dfree(c, dp);
        ak_ctx_free(c);
    }
    return rc;
}

int ak_check_case(const aq_mode *m, int M, int N, int K, ak_input input, unsigned seed, int paths_mask,
                  int ref_threads, ak_check_result *r, char *err) {
    memset(r, 0, sizeof *r);
    if (!m || M < 1 || N < 1 || K < 1 || (paths_mask & ~15) || ref_threads < 1) {
        if (err) snprintf(err, AX_ERR_LEN, "check: bad case M=%d N=%d K=%d paths=%d", M, N, K, paths_mask);
        return -1;
    }
    if (ak_supports(m, K, err)) return -1;
    int rc = -1;
    uint16_t *x = malloc((size_t)M * (size_t)K * 2), *w = malloc((size_t)N * (size_t)K * 2);
    uint16_t *yr = malloc((size_t)M * (size_t)N * 2), *yg = malloc((size_t)M * (size_t)N * 2);
    int32_t *perm = NULL;
    aq_qtensor qxr, qwr, qxg;
    memset(&qxr, 0, sizeof qxr); memset(&qwr, 0, sizeof qwr); memset(&qxg, 0, sizeof qxg);
    if (!x || !w || !yr || !yg) { if (err) snprintf(err, AX_ERR_LEN, "check: out of memory for M=%d N=%d K=%d", M, N, K); goto done; }
    ak_fill_input(input, seed, M, K, x);
    ak_fill_input(input, seed + 1, N, K, w);
    if (m->permuted) {
        perm = malloc((size_t)K * sizeof *perm);
        if (!perm) { if (err) snprintf(err, AX_ERR_LEN, "check: out of memory"); goto done; }
        uint64_t s = 0xABCDull + seed;
        for (int k = 0; k < K; k++) perm[k] = k;
        for (int k = K - 1; k > 0; k--) {
            int j = (int)(akin_next(&s) % (uint64_t)(k + 1));
            int32_t t = perm[k]; perm[k] = perm[j]; perm[j] = t;
        }
    }
    double t0 = now_s();
    if (aq_quantize_x(m, x, M, K, perm, &qxr, err) || aq_quantize_w(m, w, N, K, perm, &qwr, err) ||
        aq_gemm(&qxr, &qwr, 1, yr, ref_threads, err))
        goto done;
    double t1 = now_s();
    if (ak_quantize_x(m, x, M, K, perm, &qxg, err)) goto done;
    r->ok = 1;
    snprintf(r->msg, sizeof r->msg, "ok");
    if (cmp_qmat("X main", &qxg.main, &qxr.main, &r->quant_bytes, r->msg) ||
        (qxr.outl.rows > 0 && cmp_qmat("X outliers", &qxg.outl, &qxr.outl, &r->quant_bytes, r->msg)) ||
        (qxr.outl.rows == 0 && qxg.outl.rows != 0 && (snprintf(r->msg, sizeof r->msg, "X outliers: unexpected part"), 1)))
        r->ok = 0;
    if (r->ok) {   /* the device weight quantizer against aq_quantize_w */
        int ok = 1;
        if (check_wquant(m, w, N, K, perm, &qwr, r, &ok, err)) goto done;
        if (!ok) r->ok = 0;
    }
    /* k_splits = 1, then the split count the kernels pick for this shape (at least 3, so the
     * split-K code runs in every case); the reference is recomputed with the same k_splits. */
    int splits[2] = {1, ak_gemm_splits(m, M, N, K)};
    if (splits[1] < 3) splits[1] = 3;
    r->splits = splits[1];
    /* The wgmma paths run where they serve (compute capability 9.x, the mode's groups, no outliers:
     * ak_gemm_plan_ex); elsewhere they are skipped and left out of r->paths_run. */
    static const ak_path path_of[4] = {AK_PATH_INT8, AK_PATH_INT4, AK_PATH_WGMMA, AK_PATH_WGMMA_SYNC};
    int run_mask = paths_mask & 3;
    if (paths_mask & 12) {
        ak_devinfo di;
        ak_plan pl;
        if (ak_device_info(&di, err)) goto done;
        for (int p = 2; p < 4; p++)
            if ((paths_mask & (1 << p)) &&
                !ak_gemm_plan_ex(m, M, N, K, di.sms, 10 * di.cc_major + di.cc_minor, path_of[p], 0, &pl))
                run_mask |= 1 << p;
    }
    r->paths_run = run_mask;
    for (int si = 0; si < 2 && r->ok; si++) {
        if (si == 1) {
            double t2 = now_s();
            if (aq_gemm(&qxr, &qwr, splits[1], yr, ref_threads, err)) goto done;
            r->ref_s += now_s() - t2;
        }
        for (int p = 0; p < 4 && r->ok; p++) {
            if (!(run_mask & (1 << p))) continue;
            memset(yg, 0xFF, (size_t)M * (size_t)N * 2);   /* poison: every element must be written */
            if (ak_gemm_ex(&qxr, &qwr, path_of[p], splits[si], yg, err)) goto done;
            long d = first_diff(yg, yr, (size_t)M * (size_t)N * 2);
            if (d >= 0) {
                long e = d / 2;
                snprintf(r->msg, sizeof r->msg, "Y (%s path, k_splits %d) differs at [%ld, %ld]: gpu 0x%04x ref 0x%04x",
                         ak_path_name(path_of[p]), splits[si], e / N, e % N, yg[e], yr[e]);
                r->ok = 0;
            }
            r->y_elems = (long)M * N;
        }
    }
    /* M <= 16 (the GEMV kernels): also row prefixes M' < M of X (the first rows of the same quantized
     * X: M' <= 8 leaves rows g + 8 of every mma fragment empty, 9..15 part of them) and a ragged split
     * count (7, or 5 when the planner's is 7: uneven stage and group splits, empty integer splits), each
     * against aq_gemm on the same view and k_splits (kernels/NOTES.md "Decode GEMV"). */
    if (M <= 16 && r->ok) {
        const int ragged = splits[1] == 7 ? 5 : 7;
        const int sub_m[5] = {M, 1, 5, 9, 13}, sub_s[5] = {ragged, 1, ragged, 1, ragged};
        for (int c = 0; c < 5 && r->ok; c++) {
            const int Ms = sub_m[c], ks = sub_s[c];
            if (c > 0 && Ms >= M) continue;
            aq_qtensor view = qxr;   /* a row prefix: codes and scales are row-major, rows first */
            view.rows = Ms;
            view.main.rows = Ms;
            if (view.outl.rows > 0) view.outl.rows = Ms;
            double t2 = now_s();
            if (aq_gemm(&view, &qwr, ks, yr, ref_threads, err)) goto done;
            r->ref_s += now_s() - t2;
            for (int p = 0; p < 4 && r->ok; p++) {
                if (!(run_mask & (1 << p))) continue;
                memset(yg, 0xFF, (size_t)Ms * (size_t)N * 2);
                if (ak_gemm_ex(&view, &qwr, path_of[p], ks, yg, err)) goto done;
                long d = first_diff(yg, yr, (size_t)Ms * (size_t)N * 2);
                if (d >= 0) {
                    long e = d / 2;
                    snprintf(r->msg, sizeof r->msg, "Y (%s path, rows 0..%d of X, k_splits %d) differs at [%ld, %ld]: gpu 0x%04x ref 0x%04x",
                             ak_path_name(path_of[p]), Ms - 1, ks, e / N, e % N, yg[e], yr[e]);
                    r->ok = 0;
                }
            }
        }
    }
    r->ref_s += t1 - t0;
    r->gpu_s = now_s() - t1 - r->ref_s + (t1 - t0);
    rc = 0;
done:
    aq_qtensor_free(&qxr); aq_qtensor_free(&qwr); aq_qtensor_free(&qxg);
    free(x); free(w); free(yr); free(yg); free(perm);
    return rc;
}
