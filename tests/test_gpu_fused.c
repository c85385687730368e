/* test_gpu_fused.c — the fused RMSNorm + activation quantizer (kernels/ak.h ak_rmsnorm_quantize_x_dev)
 * against the two calls it replaces in the engine: ak_ops_add_rmsnorm (r given) or ak_ops_rmsnorm
 * (no r) into an fp16 buffer, then ak_quantize_x_dev on that buffer. Expectations come from that
 * two-call path, which is itself verified elsewhere against independent code: ak_quantize_x_dev byte
 * for byte against the CPU reference aq_quantize_x (tests/test_gpu.c, apex4 check), the RMSNorm
 * kernels against the HF formula computed on the host (tests/test_gpu_ops.c). Here: codes, scales,
 * outlier part, perm copy and the x written back must be identical bytes, and the errors must name
 * the same things. Every test skips visibly ("skipped: no CUDA device") without a device. All device
 * buffers come from ak_ops_alloc (cudaMalloc: 256-byte aligned), so the two-call path takes its
 * 16-byte rmsnorm8_kernel route (K % 8 == 0), the route the fused kernel reproduces. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ak.h"
#include "ak_ops.h"
#include "aq.h"
#include "testutil.h"

#define EPS 1e-5f

static aq_mode mode_of(const char *name) {
    aq_mode m;
    char err[AX_ERR_LEN];
    cr_assert_eq(aq_mode_parse(name, &m, err), 0, "%s", err);
    return m;
}

/* One ak_ops (its stream) and one ak_ctx ordered on that stream, as the engine sets them up. */
typedef struct {
    ak_ops *o;
    ak_ctx *c;
} env;

static env env_new(void) {
    env e = {NULL, NULL};
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_ops_new(0, &e.o, err), 0, "%s", err);
    cr_assert_eq(ak_ctx_new(0, &e.c, err), 0, "%s", err);
    cr_assert_eq(ak_ctx_set_stream(e.c, ak_ops_stream(e.o)), 0);
    return e;
}
static void env_free(env *e) {   /* the context first: it uses the ops stream */
    ak_ctx_free(e->c);
    ak_ops_free(e->o);
}
static void *to_dev(env *e, const void *h, size_t bytes) {
    void *d = NULL;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_ops_alloc(e->o, bytes, &d, "test tensor", err), 0, "%s", err);
    if (h) cr_assert_eq(ak_ops_upload(e->o, d, h, bytes, err), 0, "%s", err);
    return d;
}
static void from_dev(env *e, void *h, const void *d, size_t bytes) {
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_ops_download(e->o, h, d, bytes, err), 0, "%s", err);
}

static double randn(uint64_t *s) {
    double u1 = tu_rand_unit(s), u2 = tu_rand_unit(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
/* x [M, K]: N(0, 1) scaled per row by 2^(t % 7 - 3), every 97th channel x 30 (outlier channels, as
 * LLaMA's), row 2 all zeros (sum of squares 0: inv = 1/sqrt(eps), zero scales). */
static void fill_x(uint16_t *x, int M, int K, uint64_t seed) {
    uint64_t s = seed;
    for (int t = 0; t < M; t++) {
        double sc = ldexp(1.0, t % 7 - 3);
        for (int k = 0; k < K; k++) {
            double v = t == 2 ? 0.0 : sc * randn(&s) * (k % 97 == 5 ? 30.0 : 1.0);
            x[(size_t)t * K + k] = aq_f32_to_f16((float)v);
        }
    }
}
static void fill_uniform(uint16_t *x, size_t n, double lo, double hi, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) x[i] = aq_f32_to_f16((float)(lo + (hi - lo) * tu_rand_unit(&s)));
}
static int32_t *rand_perm(int K, uint64_t seed) {   /* Fisher-Yates, splitmix64 (testutil.h) */
    int32_t *p = malloc((size_t)K * sizeof *p);
    cr_assert_not_null(p);
    for (int k = 0; k < K; k++) p[k] = k;
    for (int k = K - 1; k > 0; k--) {
        int j = (int)(tu_rand_u64(&seed) % (uint64_t)(k + 1));
        int32_t t = p[k]; p[k] = p[j]; p[j] = t;
    }
    return p;
}

static size_t qrow(const aq_qmat *q) { return q->bits == 4 ? (size_t)(q->cols + 1) / 2 : (size_t)q->cols; }
/* 0 if the two parts hold the same layout and bytes, else 1 with msg. */
static int qmat_diff(const char *what, const aq_qmat *g, const aq_qmat *r, char *msg, size_t len) {
    if (g->rows != r->rows || g->cols != r->cols || g->bits != r->bits || g->group != r->group ||
        g->ngroups != r->ngroups || (g->sub != NULL) != (r->sub != NULL)) {
        snprintf(msg, len, "%s: layout differs", what);
        return 1;
    }
    const size_t nc = (size_t)r->rows * qrow(r), ns = (size_t)r->rows * (size_t)r->ngroups;
    for (size_t i = 0; i < nc; i++)
        if (g->codes[i] != r->codes[i]) {
            snprintf(msg, len, "%s codes differ at row %zu byte %zu: fused 0x%02x two-call 0x%02x", what, i / qrow(r),
                     i % qrow(r), g->codes[i], r->codes[i]);
            return 1;
        }
    for (size_t i = 0; i < ns; i++)
        if (g->scales[i] != r->scales[i]) {
            snprintf(msg, len, "%s scales differ at [%zu, %zu]: fused 0x%04x two-call 0x%04x", what, i / r->ngroups,
                     i % r->ngroups, g->scales[i], r->scales[i]);
            return 1;
        }
    return 0;
}
static int qt_diff(const aq_qtensor *g, const aq_qtensor *r, char *msg, size_t len) {
    if (g->rows != r->rows || g->K != r->K || strcmp(g->mode.name, r->mode.name)) {
        snprintf(msg, len, "tensor shape/mode differ");
        return 1;
    }
    if (qmat_diff("main", &g->main, &r->main, msg, len)) return 1;
    if ((g->outl.rows > 0) != (r->outl.rows > 0)) { snprintf(msg, len, "outlier part present in one only"); return 1; }
    if (r->outl.rows > 0 && qmat_diff("outliers", &g->outl, &r->outl, msg, len)) return 1;
    if ((g->perm != NULL) != (r->perm != NULL) || (r->perm && memcmp(g->perm, r->perm, (size_t)r->K * 4))) {
        snprintf(msg, len, "perm differs");
        return 1;
    }
    return 0;
}

/* One case: the fused call and the two calls on copies of the same x; compares the quantized tensors
 * and x after the call (with r: x += r written back by both). */
static void check_case(env *e, const char *mname, int M, int K, int with_r, uint64_t seed) {
    aq_mode m = mode_of(mname);
    char err[AX_ERR_LEN] = "", msg[256] = "";
    const size_t n = (size_t)M * K;
    uint16_t *x = malloc(n * 2), *r = malloc(n * 2), *w = malloc((size_t)K * 2), *x1 = malloc(n * 2), *x2 = malloc(n * 2);
    cr_assert(x && r && w && x1 && x2);
    fill_x(x, M, K, seed);
    fill_x(r, M, K, seed + 1);
    fill_uniform(w, (size_t)K, 0.25, 2.0, seed + 2);
    int32_t *perm = m.permuted ? rand_perm(K, seed + 3) : NULL;
    uint16_t *dx1 = to_dev(e, x, n * 2), *dx2 = to_dev(e, x, n * 2), *dr = with_r ? to_dev(e, r, n * 2) : NULL;
    uint16_t *dw = to_dev(e, w, (size_t)K * 2), *dxb = to_dev(e, NULL, n * 2);
    int32_t *dperm = perm ? to_dev(e, perm, (size_t)K * 4) : NULL;
    ak_dqt q1, q2;
    cr_assert_eq(ak_dqt_alloc(e->c, &m, 0, M + 3, K, &q1, "X two-call", err), 0, "%s", err);
    cr_assert_eq(ak_dqt_alloc(e->c, &m, 0, M, K, &q2, "X fused", err), 0, "%s", err);
    /* the two calls */
    int rc = with_r ? ak_ops_add_rmsnorm(e->o, dx1, dr, dw, M, K, EPS, dxb, err) : ak_ops_rmsnorm(e->o, dx1, dw, M, K, EPS, dxb, err);
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(ak_quantize_x_dev(e->c, &m, dxb, M, K, dperm, &q1, "X", err), 0, "%s %d x %d: %s", mname, M, K, err);
    /* the fused call */
    cr_assert_eq(ak_rmsnorm_quantize_x_dev(e->c, &m, dx2, dr, dw, M, K, EPS, dperm, &q2, "X", err), 0, "%s %d x %d: %s",
                 mname, M, K, err);
    cr_assert_eq(q2.rows, M);
    aq_qtensor h1, h2;
    cr_assert_eq(ak_dqt_download(e->c, &q1, &h1, err), 0, "%s", err);
    cr_assert_eq(ak_dqt_download(e->c, &q2, &h2, err), 0, "%s", err);
    cr_assert_eq(qt_diff(&h2, &h1, msg, sizeof msg), 0, "%s M=%d K=%d r=%d: %s", mname, M, K, with_r, msg);
    from_dev(e, x1, dx1, n * 2);
    from_dev(e, x2, dx2, n * 2);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(x2[i], x1[i], "%s M=%d K=%d r=%d: x written back differs at [%zu, %zu]: fused 0x%04x two-call 0x%04x",
                     mname, M, K, with_r, i / K, i % K, x2[i], x1[i]);
    if (!with_r) cr_assert_eq(memcmp(x2, x, n * 2), 0, "x changed without r");
    aq_qtensor_free(&h1);
    aq_qtensor_free(&h2);
    ak_dqt_free(e->c, &q1);
    ak_dqt_free(e->c, &q2);
    ak_ops_dfree(e->o, dx1); ak_ops_dfree(e->o, dx2); ak_ops_dfree(e->o, dr); ak_ops_dfree(e->o, dw);
    ak_ops_dfree(e->o, dxb); ak_ops_dfree(e->o, dperm);
    free(x); free(r); free(w); free(x1); free(x2); free(perm);
}

static const char *modes[] = {"w4a4-g128", "w4a4-g32", "w4a4-pc", "w4a4-mixed-g128", "w8a8", "atom-g128-o128"};
#define NMODES (int)(sizeof modes / sizeof modes[0])

/* LLaMA-2-7B's widths (4096 hidden; 11008 = 86 x 128 is the MLP's, here as a norm width: a row of 344
 * quads, more than the 256 threads of a block), M = 1 (decode), 5, 300 (prefill), with and without r. */
Test(gpu_fused, matches_rmsnorm_then_quantize_llama_widths) {
    if (ak_device_count() < 1) cr_skip_test("skipped: no CUDA device");
    env e = env_new();
    static const int Ks[] = {4096, 11008}, Ms[] = {1, 5, 300};
    uint64_t seed = 100;
    for (int mi = 0; mi < NMODES; mi++)
        for (int ki = 0; ki < 2; ki++)
            for (int si = 0; si < 3; si++)
                for (int with_r = 0; with_r < 2; with_r++) check_case(&e, modes[mi], Ms[si], Ks[ki], with_r, seed++);
    env_free(&e);
}

/* Wider rows: 3 and 4 quads per thread (20480 = 160 x 128; 28672 = LLaMA-2-70B's MLP width, 64 KB of
 * shared memory per row: the opt-in above 48 KB), and the smallest row (K = 256: 8 quads, most of
 * the block idle). */
Test(gpu_fused, matches_rmsnorm_then_quantize_wide_and_narrow_rows) {
    if (ak_device_count() < 1) cr_skip_test("skipped: no CUDA device");
    env e = env_new();
    static const int Ks[] = {256, 20480, 28672};
    uint64_t seed = 500;
    for (int mi = 0; mi < NMODES; mi++)
        for (int ki = 0; ki < 3; ki++) {
            check_case(&e, modes[mi], 5, Ks[ki], 1, seed++);
            check_case(&e, modes[mi], 1, Ks[ki], 0, seed++);
        }
    env_free(&e);
}

/* Bad arguments: each refused with a message naming what is wrong, before any work. */
Test(gpu_fused, rejects_bad_arguments) {
    if (ak_device_count() < 1) cr_skip_test("skipped: no CUDA device");
    env e = env_new();
    aq_mode g128 = mode_of("w4a4-g128"), atom = mode_of("atom-g128-o128"), fp16 = mode_of("fp16");
    const int M = 4, K = 4096;
    uint16_t *dx = to_dev(&e, NULL, (size_t)M * K * 2 + 16), *dw = to_dev(&e, NULL, (size_t)K * 2 + 16);
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_ops_zero(e.o, dx, (size_t)M * K * 2 + 16, err), 0, "%s", err);
    cr_assert_eq(ak_ops_zero(e.o, dw, (size_t)K * 2 + 16, err), 0, "%s", err);
    ak_dqt q, qa, q2k;
    cr_assert_eq(ak_dqt_alloc(e.c, &g128, 0, M, K, &q, "X", err), 0, "%s", err);
    cr_assert_eq(ak_dqt_alloc(e.c, &atom, 0, M, K, &qa, "X", err), 0, "%s", err);
    cr_assert_eq(ak_dqt_alloc(e.c, &g128, 0, M, 2048, &q2k, "X", err), 0, "%s", err);
    int32_t *perm = rand_perm(K, 9);
    int32_t *dperm = to_dev(&e, perm, (size_t)K * 4);
#define REFUSED(call, needle)                                                                              \
    do {                                                                                                   \
        err[0] = 0;                                                                                        \
        cr_assert_neq((call), 0, "accepted: " #call);                                                      \
        cr_assert(strstr(err, needle), "message for " #call " lacks '%s': %s", needle, err);               \
        cr_assert(strstr(err, "ak_rmsnorm_quantize_x_dev") || strstr(err, "mode") || strstr(err, "K ="), "%s", err); \
    } while (0)
    REFUSED(ak_rmsnorm_quantize_x_dev(NULL, &g128, dx, NULL, dw, M, K, EPS, NULL, &q, "X", err), "NULL context");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &g128, NULL, NULL, dw, M, K, EPS, NULL, &q, "X", err), "NULL");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &g128, dx, NULL, NULL, M, K, EPS, NULL, &q, "X", err), "NULL");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &g128, dx, NULL, dw, M, K, EPS, NULL, NULL, "X", err), "NULL");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, NULL, dx, NULL, dw, M, K, EPS, NULL, &q, "X", err), "NULL");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &g128, dx, NULL, dw, 0, K, EPS, NULL, &q, "X", err), "bad shape [0, 4096]");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &g128, dx, NULL, dw, M, 0, EPS, NULL, &q, "X", err), "bad shape [4, 0]");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &g128, dx, NULL, dw, M, K, -1.0f, NULL, &q, "X", err), "eps");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &g128, dx, NULL, dw, M, K, NAN, NULL, &q, "X", err), "eps");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &g128, dx, NULL, dw, M, K, INFINITY, NULL, &q, "X", err), "eps");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &g128, dx, NULL, dw, M, 4000, EPS, NULL, &q, "X", err), "K = 4000");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &fp16, dx, NULL, dw, M, K, EPS, NULL, &q, "X", err), "fp16");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &g128, dx + 1, NULL, dw, M, K, EPS, NULL, &q, "X", err), "16-byte aligned");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &g128, dx, dx + 3, dw, M, K, EPS, NULL, &q, "X", err), "16-byte aligned");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &g128, dx, NULL, dw + 4, M, K, EPS, NULL, &q, "X", err), "16-byte aligned");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &atom, dx, NULL, dw, M, K, EPS, NULL, &qa, "X", err), "needs a channel permutation");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &g128, dx, NULL, dw, M, K, EPS, dperm, &q, "X", err), "only used by atom");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &g128, dx, NULL, dw, M + 1, K, EPS, NULL, &q, "X", err), "output tensor");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &g128, dx, NULL, dw, M, K, EPS, NULL, &q2k, "X", err), "output tensor");
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &g128, dx, NULL, dw, M, K, EPS, NULL, &qa, "X", err), "output tensor");
    /* a perm that is not a permutation: found on the device, named as ak_quantize_x_dev names it */
    perm[17] = perm[18];
    cr_assert_eq(ak_ops_upload(e.o, dperm, perm, (size_t)K * 4, err), 0, "%s", err);
    REFUSED(ak_rmsnorm_quantize_x_dev(e.c, &atom, dx, NULL, dw, M, K, EPS, dperm, &qa, "X", err), "not a permutation");
#undef REFUSED
    ak_dqt_free(e.c, &q); ak_dqt_free(e.c, &qa); ak_dqt_free(e.c, &q2k);
    ak_ops_dfree(e.o, dx); ak_ops_dfree(e.o, dw); ak_ops_dfree(e.o, dperm);
    free(perm);
    env_free(&e);
}

/* "[row, col]" of the first non-finite value named in msg (after "at "), or -1. */
static int named_index(const char *msg, long *row, long *col) {
    const char *p = strstr(msg, "non-finite");
    if (!p || !(p = strstr(p, " at ["))) return -1;
    return sscanf(p, " at [%ld, %ld]", row, col) == 2 ? 0 : -1;
}

/* A non-finite value reaching the quantizer: x = inf at [2, 7] (-> the normalized row is NaN there),
 * and with r, x + r overflowing fp16 at [1, 100] (60000 + 60000 -> inf). The fused call names the same
 * [row, col] as the two calls (the first non-finite normalized value in row-major order), with the
 * caller's tensor name; x has been updated as by the two calls; synchronous and deferred checks. */
Test(gpu_fused, names_non_finite_like_the_quantizer) {
    if (ak_device_count() < 1) cr_skip_test("skipped: no CUDA device");
    env e = env_new();
    const int M = 4, K = 4096;
    const size_t n = (size_t)M * K;
    static const char *ms[] = {"w4a4-g128", "atom-g128-o128"};
    for (int mi = 0; mi < 2; mi++)
        for (int with_r = 0; with_r < 2; with_r++) {
            aq_mode m = mode_of(ms[mi]);
            uint16_t *x = malloc(n * 2), *r = malloc(n * 2), *w = malloc((size_t)K * 2), *x1 = malloc(n * 2),
                     *x2 = malloc(n * 2);
            cr_assert(x && r && w && x1 && x2);
            fill_x(x, M, K, 31);
            fill_x(r, M, K, 32);
            fill_uniform(w, (size_t)K, 0.5, 1.5, 33);
            long er = 2, ec = 7;
            if (with_r) {   /* x + r overflows at [1, 100] only (and x itself stays finite there) */
                x[(size_t)1 * K + 100] = aq_f32_to_f16(60000.0f);
                r[(size_t)1 * K + 100] = aq_f32_to_f16(60000.0f);
                x[(size_t)3 * K + 9] = 0x7c00;   /* a later row too: the first one is named */
                er = 1; ec = 100;
            } else {
                x[(size_t)2 * K + 7] = 0x7c00;   /* +inf */
                x[(size_t)2 * K + 900] = 0xfc00; /* -inf, later in the row */
            }
            int32_t *perm = m.permuted ? rand_perm(K, 34) : NULL;
            uint16_t *dx1 = to_dev(&e, x, n * 2), *dx2 = to_dev(&e, x, n * 2), *dr = with_r ? to_dev(&e, r, n * 2) : NULL;
            uint16_t *dw = to_dev(&e, w, (size_t)K * 2), *dxb = to_dev(&e, NULL, n * 2);
            int32_t *dperm = perm ? to_dev(&e, perm, (size_t)K * 4) : NULL;
            ak_dqt q;
            char err[AX_ERR_LEN] = "", e1[AX_ERR_LEN] = "", e2[AX_ERR_LEN] = "";
            cr_assert_eq(ak_dqt_alloc(e.c, &m, 0, M, K, &q, "X", err), 0, "%s", err);
            int rc = with_r ? ak_ops_add_rmsnorm(e.o, dx1, dr, dw, M, K, EPS, dxb, err)
                            : ak_ops_rmsnorm(e.o, dx1, dw, M, K, EPS, dxb, err);
            cr_assert_eq(rc, 0, "%s", err);
            cr_assert_neq(ak_quantize_x_dev(e.c, &m, dxb, M, K, dperm, &q, "layer 3 site 0 input", e1), 0);
            cr_assert_neq(ak_rmsnorm_quantize_x_dev(e.c, &m, dx2, dr, dw, M, K, EPS, dperm, &q, "layer 3 site 0 input", e2), 0);
            long r1, c1, r2, c2;
            cr_assert_eq(named_index(e1, &r1, &c1), 0, "two-call message: %s", e1);
            cr_assert_eq(named_index(e2, &r2, &c2), 0, "fused message: %s", e2);
            cr_assert(r1 == er && c1 == ec, "two-call path names [%ld, %ld], expected [%ld, %ld]: %s", r1, c1, er, ec, e1);
            cr_assert(r2 == r1 && c2 == c1, "fused names [%ld, %ld], two calls [%ld, %ld]: %s", r2, c2, r1, c1, e2);
            cr_assert(strstr(e2, "layer 3 site 0 input") && strstr(e2, "ak_rmsnorm_quantize_x_dev"), "%s", e2);
            from_dev(&e, x1, dx1, n * 2);
            from_dev(&e, x2, dx2, n * 2);
            cr_assert_eq(memcmp(x1, x2, n * 2), 0, "x written back differs after the failed call");
            /* deferred: the call returns 0, ak_ctx_check reports the same index */
            cr_assert_eq(ak_ops_upload(e.o, dx2, x, n * 2, err), 0, "%s", err);
            ak_ctx_set_sync_checks(e.c, 0);
            cr_assert_eq(ak_rmsnorm_quantize_x_dev(e.c, &m, dx2, dr, dw, M, K, EPS, dperm, &q, "deferred X", err), 0, "%s", err);
            cr_assert_neq(ak_ctx_check(e.c, err), 0);
            cr_assert_eq(named_index(err, &r2, &c2), 0, "deferred message: %s", err);
            cr_assert(r2 == er && c2 == ec && strstr(err, "deferred X"), "%s", err);
            cr_assert_eq(ak_ctx_check(e.c, err), 0, "the failure is reported once: %s", err);
            ak_ctx_set_sync_checks(e.c, 1);
            ak_dqt_free(e.c, &q);
            ak_ops_dfree(e.o, dx1); ak_ops_dfree(e.o, dx2); ak_ops_dfree(e.o, dr); ak_ops_dfree(e.o, dw);
            ak_ops_dfree(e.o, dxb); ak_ops_dfree(e.o, dperm);
            free(x); free(r); free(w); free(x1); free(x2); free(perm);
        }
    env_free(&e);
}
