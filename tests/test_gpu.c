/* test_gpu.c — the CUDA kernels (kernels/ak.h) against hand-derived values and, byte for byte, the
 * CPU reference (quant/aq.h) over a small sweep of modes, shapes and inputs. Every test skips visibly
 * ("skipped: no CUDA device") when no device is present (CI has none). Shapes are small so that the
 * binary stays fast under ASan+UBSan; the full sweep is `apex4 check --device cuda`. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aq.h"
#include "ak.h"
#include "testutil.h"

#define NEED_DEVICE()                                                              \
    do {                                                                           \
        if (ak_device_count() < 1) cr_skip_test("skipped: no CUDA device");        \
    } while (0)

/* 1 when device 0 has compute capability 9.x (the wgmma paths run there). */
static int hopper_device(void) {
    ak_devinfo di;
    char err[AX_ERR_LEN];
    return ak_device_count() > 0 && !ak_device_info(&di, err) && di.cc_major == 9;
}

static aq_mode mode_of(const char *name) {
    aq_mode m;
    char err[AX_ERR_LEN];
    cr_assert_eq(aq_mode_parse(name, &m, err), 0, "%s", err);
    return m;
}

/* Hand-derived: w4a4-pc, K = 32. X row 0 = 7 everywhere -> amax 7, s = 7/7 = 1, codes 7.
 * X row 1 = 3.5 everywhere except x[0] = 7 -> s = 1, 3.5/1 = 3.5 is a tie -> rne gives 4; codes
 * {7, 4 x 31}. W row 0 = 7 everywhere (codes 7, s = 1); W row 1 = -7 (codes -7, s = 1).
 * Y[0,0] = 32·7·7 = 1568, Y[0,1] = -1568, Y[1,0] = 7·(7 + 31·4) = 7·131 = 917, Y[1,1] = -917;
 * all integers below 2048, exact in fp16: 1568 = 0x6620, 917 = 0x632A (917 = 1.791015625·2^9,
 * mantissa 0.791015625·1024 = 810 = 0x32A, exponent 9+15 = 24 -> 0x6000 | 0x32A). */
Test(gpu, hand_derived_w4a4_pc_with_ties) {
    NEED_DEVICE();
    aq_mode m = mode_of("w4a4-pc");
    uint16_t x[2 * 32], w[2 * 32], y[4];
    for (int k = 0; k < 32; k++) {
        x[k] = aq_f32_to_f16(7.0f);
        x[32 + k] = aq_f32_to_f16(k ? 3.5f : 7.0f);
        w[k] = aq_f32_to_f16(7.0f);
        w[32 + k] = aq_f32_to_f16(-7.0f);
    }
    char err[AX_ERR_LEN];
    aq_qtensor qx, qw;
    cr_assert_eq(ak_quantize_x(&m, x, 2, 32, NULL, &qx, err), 0, "%s", err);
    cr_assert_eq(qx.main.scales[0], 0x3c00);                   /* s = 1.0 */
    cr_assert_eq(qx.main.scales[1], 0x3c00);
    cr_assert_eq(qx.main.codes[0], 0x77);                      /* 7 | 7 << 4 */
    cr_assert_eq(qx.main.codes[16], 0x47);                     /* row 1: x0 = 7 (low), x1 = 4 (high) */
    cr_assert_eq(qx.main.codes[17], 0x44);
    cr_assert_eq(aq_quantize_w(&m, w, 2, 32, NULL, &qw, err), 0, "%s", err);
    /* every path; the wgmma ones (M = 2: one ragged 128 x 128 tile, one k32 step) on Hopper only */
    static const ak_path paths[4] = {AK_PATH_INT8, AK_PATH_INT4, AK_PATH_WGMMA, AK_PATH_WGMMA_SYNC};
    const int np = hopper_device() ? 4 : 2;
    for (int p = 0; p < np; p++) {
        memset(y, 0xff, sizeof y);
        cr_assert_eq(ak_gemm(&qx, &qw, paths[p], y, err), 0, "%s", err);
        cr_assert_eq(y[0], 0x6620, "path %d: y[0,0] = 0x%04x", p, y[0]);
        cr_assert_eq(y[1], 0xe620, "path %d: y[0,1] = 0x%04x", p, y[1]);
        cr_assert_eq(y[2], 0x632a, "path %d: y[1,0] = 0x%04x", p, y[2]);
        cr_assert_eq(y[3], 0xe32a, "path %d: y[1,1] = 0x%04x", p, y[3]);
    }
    aq_qtensor_free(&qx);
    aq_qtensor_free(&qw);
}

/* Hand-derived: a group whose scale underflows. x = 2^-24 (fp16 min subnormal) in every channel:
 * amax/7 = 2^-24/7 < 2^-25 -> fp16 rounds to 0 -> s = 0 and every code 0 (NUMERICS.md step 4). */
Test(gpu, scale_underflow_gives_zero_codes) {
    NEED_DEVICE();
    aq_mode m = mode_of("w4a4-g32");
    uint16_t x[64];
    for (int k = 0; k < 64; k++) x[k] = 0x0001;
    char err[AX_ERR_LEN];
    aq_qtensor q;
    cr_assert_eq(ak_quantize_x(&m, x, 1, 64, NULL, &q, err), 0, "%s", err);
    cr_assert_eq(q.main.ngroups, 2);
    cr_assert_eq(q.main.scales[0], 0);
    cr_assert_eq(q.main.scales[1], 0);
    for (int i = 0; i < 32; i++) cr_assert_eq(q.main.codes[i], 0);
    aq_qtensor_free(&q);
}

/* Every standard integer mode, odd M/N, K a multiple of 32 but not of 128, each input kind, both
 * paths: codes, scales and Y must equal the CPU reference's bytes. */
Test(gpu, sweep_matches_reference_byte_for_byte) {
    NEED_DEVICE();
    static const char *modes[] = {"w8a8", "w4a4-pc", "w4a4-g32", "w4a4-g64", "w4a4-g128", "w4a4-g256",
                                  "w4a4-mixed-g128", "atom-g128-o128"};
    static const int shapes[][3] = {{1, 33, 160}, {7, 131, 352}, {130, 67, 416}};
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        aq_mode m = mode_of(modes[i]);
        for (int s = 0; s < 3; s++)
            for (int in = 0; in < 3; in++) {
                ak_check_result r;
                char err[AX_ERR_LEN];
                int rc = ak_check_case(&m, shapes[s][0], shapes[s][1], shapes[s][2], (ak_input)in, 11u + (unsigned)s, 3, 2,
                                       &r, err);
                cr_assert_eq(rc, 0, "%s M=%d N=%d K=%d: %s", modes[i], shapes[s][0], shapes[s][1], shapes[s][2], err);
                cr_expect(r.ok, "%s M=%d N=%d K=%d %s: %s", modes[i], shapes[s][0], shapes[s][1], shapes[s][2],
                          ak_input_name((ak_input)in), r.msg);
                cr_assert_gt(r.quant_bytes, 0);
            }
    }
}

/* Shapes the kernels do not take are rejected with a message naming the constraint. */
Test(gpu, rejects_unsupported_shapes) {
    NEED_DEVICE();
    aq_mode m = mode_of("w4a4-g128");
    char err[AX_ERR_LEN] = "";
    uint16_t x[100] = {0};
    aq_qtensor q;
    cr_assert_neq(ak_quantize_x(&m, x, 1, 100, NULL, &q, err), 0);
    cr_assert(strstr(err, "multiple of 32"), "%s", err);
    aq_mode g48 = mode_of("w4a4-g48");
    cr_assert_neq(ak_supports(&g48, 96, err), 0);
    cr_assert(strstr(err, "group size"), "%s", err);
    aq_mode fp = mode_of("fp16");
    cr_assert_neq(ak_supports(&fp, 64, err), 0);
    cr_assert_eq(ak_supports(&m, 160, err), 0, "%s", err);
}

/* A non-finite activation is an error naming X and the position, not a silently wrong code. */
Test(gpu, rejects_non_finite_input) {
    NEED_DEVICE();
    aq_mode m = mode_of("w4a4-g32");
    uint16_t x[2 * 64];
    for (int i = 0; i < 128; i++) x[i] = 0x3c00;
    x[64 + 5] = 0x7e00;   /* NaN at [1, 5] */
    char err[AX_ERR_LEN] = "";
    aq_qtensor q;
    cr_assert_neq(ak_quantize_x(&m, x, 2, 64, NULL, &q, err), 0);
    cr_assert(strstr(err, "[1, 5]"), "%s", err);
}

/* GEMM operands from different modes are refused. */
Test(gpu, rejects_mismatched_operands) {
    NEED_DEVICE();
    aq_mode a = mode_of("w4a4-g32"), b = mode_of("w4a4-g64");
    uint16_t x[64], y[1];
    for (int i = 0; i < 64; i++) x[i] = aq_f32_to_f16((float)(i % 5) - 2.0f);
    char err[AX_ERR_LEN] = "";
    aq_qtensor qx, qw;
    cr_assert_eq(aq_quantize_x(&a, x, 1, 64, NULL, &qx, err), 0, "%s", err);
    cr_assert_eq(aq_quantize_w(&b, x, 1, 64, NULL, &qw, err), 0, "%s", err);
    cr_assert_neq(ak_gemm(&qx, &qw, AK_PATH_INT8, y, err), 0);
    cr_assert(strstr(err, "modes differ"), "%s", err);
    aq_qtensor_free(&qx);
    aq_qtensor_free(&qw);
}

/* The quantizer's division-free rounding equals clamp(__float2int_rn(__fdiv_rn(v, s))) (the
 * contract's CUDA spelling, computed on the device by the IEEE intrinsics) for ALL fp16 pairs. */
Test(gpu, fast_rounding_matches_ieee_division_for_all_fp16_pairs) {
    NEED_DEVICE();
    long long pairs = 0, bad = -1;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_selftest_rounding(&pairs, &bad, err), 0, "%s", err);
    cr_assert_eq(pairs, 31743LL * 63488LL);   /* s: 0x0001..0x7bff; v: 65536 - 2048 inf/NaN patterns */
    cr_assert_eq(bad, 0, "%s", err);
}

/* ---- device-resident API (ak_ctx, ak_dqt, *_dev) ----------------------------------------------------
 * Expectations come from the CPU reference (quant/aq_quant.c, quant/aq_gemm.c: independent C code) or by
 * hand; the device results are downloaded and compared byte for byte. One context per test, reused by
 * every case in it (the split-K workspace grows and is reused across shapes). */

static ak_ctx *ctx_or_skip(void) {
    if (ak_device_count() < 1) cr_skip_test("skipped: no CUDA device");
    ak_ctx *c = NULL;
    char err[AX_ERR_LEN];
    cr_assert_eq(ak_ctx_new(0, &c, err), 0, "%s", err);
    return c;
}

static void *dev_copy(ak_ctx *c, const void *h, size_t bytes) {
    void *d = NULL;
    char err[AX_ERR_LEN];
    cr_assert_eq(ak_dmalloc(c, bytes, &d, "test buffer", err), 0, "%s", err);
    cr_assert_eq(ak_upload(c, d, h, bytes, "test buffer", err), 0, "%s", err);
    return d;
}

/* A random permutation of 0..K-1 (Fisher-Yates, splitmix64 from testutil.h). */
static int32_t *rand_perm(int K, uint64_t seed) {
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

/* Byte comparison of two quantized parts; 0 if equal, else 1 with msg. */
static int qmat_diff(const char *what, const aq_qmat *g, const aq_qmat *r, char *msg, size_t len) {
    if (g->rows != r->rows || g->cols != r->cols || g->bits != r->bits || g->group != r->group ||
        g->ngroups != r->ngroups || (g->sub != NULL) != (r->sub != NULL)) {
        snprintf(msg, len, "%s: layout differs (gpu %dx%d b%d g%d G%d sub %d; ref %dx%d b%d g%d G%d sub %d)", what, g->rows,
                 g->cols, g->bits, g->group, g->ngroups, g->sub != NULL, r->rows, r->cols, r->bits, r->group, r->ngroups,
                 r->sub != NULL);
        return 1;
    }
    size_t nc = (size_t)r->rows * qrow(r), ns = (size_t)r->rows * (r->sub ? 1 : (size_t)r->ngroups);
    for (size_t i = 0; i < nc; i++)
        if (g->codes[i] != r->codes[i]) {
            snprintf(msg, len, "%s codes differ at row %zu byte %zu: gpu 0x%02x ref 0x%02x", what, i / qrow(r), i % qrow(r),
                     g->codes[i], r->codes[i]);
            return 1;
        }
    for (size_t i = 0; i < ns; i++)
        if (g->scales[i] != r->scales[i]) {
            snprintf(msg, len, "%s scales differ at %zu: gpu 0x%04x ref 0x%04x", what, i, g->scales[i], r->scales[i]);
            return 1;
        }
    if (r->sub)
        for (size_t i = 0; i < (size_t)r->rows * (size_t)r->ngroups; i++)
            if (g->sub[i] != r->sub[i]) {
                snprintf(msg, len, "%s sub-scales differ at %zu: gpu %u ref %u", what, i, g->sub[i], r->sub[i]);
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

/* Weight-quantizer cases: every standard integer mode and parametric ones, shapes with odd N, K a
 * multiple of 32 but not of the group, and K not a multiple of 32 (the general kernel takes any K). */
static const char *wq_modes[] = {"w8a8", "w4a4-pc", "w4a4-g32", "w4a4-g64", "w4a4-g128", "w4a4-g256", "w4a4-mixed-g128",
                                 "w4a4-mixed-g32", "atom-g128-o128", "atom-g32-o32", "atom-g64-o0", "w4a4-g2"};
static const int wq_shapes[][2] = {{33, 160}, {7, 352}, {65, 416}, {9, 33}, {5, 70}, {3, 200}};

Test(gpu_dev, weight_quantizer_matches_aq_quantize_w_byte_for_byte) {
    ak_ctx *c = ctx_or_skip();
    char err[AX_ERR_LEN], msg[256];
    int cases = 0;
    for (size_t mi = 0; mi < sizeof wq_modes / sizeof *wq_modes; mi++) {
        aq_mode m = mode_of(wq_modes[mi]);
        for (size_t si = 0; si < sizeof wq_shapes / sizeof *wq_shapes; si++)
            for (int in = 0; in < 3; in++) {
                const int N = wq_shapes[si][0], K = wq_shapes[si][1];
                if (m.permuted && K - m.outliers < 1) continue;   /* the reference refuses it too */
                uint16_t *w = malloc((size_t)N * K * 2);
                cr_assert_not_null(w);
                ak_fill_input((ak_input)in, 40u + (unsigned)si, N, K, w);
                int32_t *perm = m.permuted ? rand_perm(K, 7u + si) : NULL;
                aq_qtensor ref, got;
                cr_assert_eq(aq_quantize_w(&m, w, N, K, perm, &ref, err), 0, "%s", err);
                void *dw = dev_copy(c, w, (size_t)N * K * 2), *dp = perm ? dev_copy(c, perm, (size_t)K * 4) : NULL;
                ak_dqt q;
                cr_assert_eq(ak_dqt_alloc(c, &m, 1, N, K, &q, "W", err), 0, "%s", err);
                cr_assert_eq(ak_quantize_w_dev(c, &m, dw, N, K, dp, &q, "W", err), 0, "%s [%d, %d] %s: %s", m.name, N, K,
                             ak_input_name((ak_input)in), err);
                cr_assert_eq(ak_dqt_download(c, &q, &got, err), 0, "%s", err);
                cr_expect_eq(qt_diff(&got, &ref, msg, sizeof msg), 0, "%s [%d, %d] %s: %s", m.name, N, K,
                             ak_input_name((ak_input)in), msg);
                cases++;
                aq_qtensor_free(&ref); aq_qtensor_free(&got);
                ak_dqt_free(c, &q);
                ak_dfree(c, dw); ak_dfree(c, dp);
                free(w); free(perm);
            }
    }
    cr_assert_gt(cases, 150);
    ak_ctx_free(c);
}

/* The first non-finite weight in row-major order is named, as aq_quantize_w names it. */
Test(gpu_dev, weight_quantizer_names_first_non_finite) {
    ak_ctx *c = ctx_or_skip();
    aq_mode m = mode_of("w4a4-g32");
    enum { N = 6, K = 64 };
    uint16_t w[N * K];
    for (int i = 0; i < N * K; i++) w[i] = 0x3c00;
    w[4 * K + 0] = 0x7e00;   /* NaN at [4, 0] */
    w[3 * K + 5] = 0x7c00;   /* +inf at [3, 5]: first in row-major order */
    char err[AX_ERR_LEN] = "";
    void *dw = dev_copy(c, w, sizeof w);
    ak_dqt q;
    cr_assert_eq(ak_dqt_alloc(c, &m, 1, N, K, &q, "W", err), 0, "%s", err);
    cr_assert_neq(ak_quantize_w_dev(c, &m, dw, N, K, NULL, &q, "layer0.w", err), 0);
    cr_assert(strstr(err, "layer0.w") && strstr(err, "[3, 5]") && strstr(err, "0x7c00"), "%s", err);
    cr_assert_eq(q.rows, 0);
    ak_dqt_free(c, &q);
    ak_dfree(c, dw);
    ak_ctx_free(c);
}

/* A device perm that is not a permutation is refused by the weight and activation quantizers (the
 * context stays usable). */
Test(gpu_dev, rejects_bad_device_perm) {
    ak_ctx *c = ctx_or_skip();
    aq_mode m = mode_of("atom-g32-o32");
    enum { R = 2, K = 96 };
    uint16_t x[R * K];
    for (int i = 0; i < R * K; i++) x[i] = aq_f32_to_f16((float)(i % 9) - 4.0f);
    int32_t perm[K];
    for (int k = 0; k < K; k++) perm[k] = k;
    perm[50] = 7;   /* 7 twice, 50 missing */
    char err[AX_ERR_LEN] = "";
    void *dx = dev_copy(c, x, sizeof x), *dp = dev_copy(c, perm, sizeof perm);
    ak_dqt qw, qx;
    cr_assert_eq(ak_dqt_alloc(c, &m, 1, R, K, &qw, "W", err), 0, "%s", err);
    cr_assert_eq(ak_dqt_alloc(c, &m, 0, R, K, &qx, "X", err), 0, "%s", err);
    cr_assert_neq(ak_quantize_w_dev(c, &m, dx, R, K, dp, &qw, "W", err), 0);
    cr_assert(strstr(err, "not a permutation"), "%s", err);
    err[0] = 0;
    cr_assert_neq(ak_quantize_x_dev(c, &m, dx, R, K, dp, &qx, "X", err), 0);
    cr_assert(strstr(err, "not a permutation"), "%s", err);
    perm[50] = 50;
    cr_assert_eq(ak_upload(c, dp, perm, sizeof perm, "perm", err), 0, "%s", err);
    cr_assert_eq(ak_quantize_x_dev(c, &m, dx, R, K, dp, &qx, "X", err), 0, "%s", err);
    ak_dqt_free(c, &qw); ak_dqt_free(c, &qx);
    ak_dfree(c, dx); ak_dfree(c, dp);
    ak_ctx_free(c);
}

/* The device chain X, W (fp16 on the device) -> ak_quantize_x_dev / ak_quantize_w_dev -> ak_gemm_dev
 * equals aq_quantize_x / aq_quantize_w / aq_gemm at the planner's k_splits, and ak_gemm_dev_ex equals
 * aq_gemm at k_splits = 3 on both paths. */
Test(gpu_dev, device_gemm_chain_matches_aq_gemm) {
    ak_ctx *c = ctx_or_skip();
    static const char *modes[] = {"w8a8", "w4a4-pc", "w4a4-g32", "w4a4-g64", "w4a4-g128", "w4a4-g256",
                                  "w4a4-mixed-g128", "atom-g128-o128", "atom-g32-o32", "w4a4-mixed-g32"};
    static const int shapes[][3] = {{1, 33, 160}, {7, 131, 352}, {16, 300, 2080}, {130, 67, 416}};
    char err[AX_ERR_LEN];
    for (size_t mi = 0; mi < sizeof modes / sizeof *modes; mi++) {
        aq_mode m = mode_of(modes[mi]);
        for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
            const int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
            const ak_input in = (ak_input)((mi + si) % 3);
            uint16_t *x = malloc((size_t)M * K * 2), *w = malloc((size_t)N * K * 2);
            uint16_t *yr = malloc((size_t)M * N * 2), *yg = malloc((size_t)M * N * 2);
            cr_assert(x && w && yr && yg);
            ak_fill_input(in, 70u + (unsigned)si, M, K, x);
            ak_fill_input(in, 71u + (unsigned)si, N, K, w);
            int32_t *perm = m.permuted ? rand_perm(K, 99u + si) : NULL;
            aq_qtensor rx, rw, gx;
            cr_assert_eq(aq_quantize_x(&m, x, M, K, perm, &rx, err), 0, "%s", err);
            cr_assert_eq(aq_quantize_w(&m, w, N, K, perm, &rw, err), 0, "%s", err);
            void *dx = dev_copy(c, x, (size_t)M * K * 2), *dw = dev_copy(c, w, (size_t)N * K * 2);
            void *dp = perm ? dev_copy(c, perm, (size_t)K * 4) : NULL, *dy = NULL;
            cr_assert_eq(ak_dmalloc(c, (size_t)M * N * 2, &dy, "Y", err), 0, "%s", err);
            ak_dqt qx, qw;
            /* X buffer with spare rows: the call quantizes only the first M */
            cr_assert_eq(ak_dqt_alloc(c, &m, 0, M + 5, K, &qx, "X", err), 0, "%s", err);
            cr_assert_eq(ak_dqt_alloc(c, &m, 1, N, K, &qw, "W", err), 0, "%s", err);
            cr_assert_eq(ak_quantize_w_dev(c, &m, dw, N, K, dp, &qw, "W", err), 0, "%s", err);
            cr_assert_eq(ak_quantize_x_dev(c, &m, dx, M, K, dp, &qx, "X", err), 0, "%s", err);
            cr_assert_eq(qx.rows, M);
            char msg[256];
            cr_assert_eq(ak_dqt_download(c, &qx, &gx, err), 0, "%s", err);
            cr_expect_eq(qt_diff(&gx, &rx, msg, sizeof msg), 0, "%s X [%d, %d]: %s", m.name, M, K, msg);
            ak_plan pl;
            cr_assert_eq(ak_gemm_plan(&m, M, N, K, ak_ctx_info(c)->sms, 0, &pl), 0);
            for (int run = 0; run < 3; run++) {
                const int ks = run == 0 ? pl.splits : 3;
                memset(yg, 0xff, (size_t)M * N * 2);
                cr_assert_eq(ak_dmemset(c, dy, 0xff, (size_t)M * N * 2, "Y", err), 0, "%s", err);   /* poison */
                if (run == 0) cr_assert_eq(ak_gemm_dev(c, &qx, &qw, dy, err), 0, "%s", err);
                else cr_assert_eq(ak_gemm_dev_ex(c, &qx, &qw, run == 1 ? AK_PATH_INT8 : AK_PATH_INT4, 3, dy, err), 0, "%s", err);
                cr_assert_eq(ak_ctx_sync(c, err), 0, "%s", err);
                cr_assert_eq(ak_download(c, yg, dy, (size_t)M * N * 2, "Y", err), 0, "%s", err);
                cr_assert_eq(aq_gemm(&rx, &rw, ks, yr, 1, err), 0, "%s", err);
                long bad = -1;
                for (long i = 0; i < (long)M * N && bad < 0; i++)
                    if (yg[i] != yr[i]) bad = i;
                cr_expect_eq(bad, -1, "%s M=%d N=%d K=%d %s run %d (k_splits %d): Y[%ld, %ld] gpu 0x%04x ref 0x%04x", m.name, M,
                             N, K, ak_input_name(in), run, ks, bad / N, bad % N, bad >= 0 ? yg[bad] : 0, bad >= 0 ? yr[bad] : 0);
            }
            aq_qtensor_free(&rx); aq_qtensor_free(&rw); aq_qtensor_free(&gx);
            ak_dqt_free(c, &qx); ak_dqt_free(c, &qw);
            ak_dfree(c, dx); ak_dfree(c, dw); ak_dfree(c, dp); ak_dfree(c, dy);
            free(x); free(w); free(yr); free(yg); free(perm);
        }
    }
    ak_ctx_free(c);
}

/* Expected fp16 of a reference fp32 array: aq_f32_to_f16 per element; *ovf = first flat index whose
 * fp16 is infinite (-1 if none). */
static uint16_t *expect_f16(const float *v, size_t n, long *ovf) {
    uint16_t *h = malloc(n * 2);
    cr_assert_not_null(h);
    *ovf = -1;
    for (size_t i = 0; i < n; i++) {
        h[i] = aq_f32_to_f16(v[i]);
        if (*ovf < 0 && (h[i] & 0x7fffu) == 0x7c00u) *ovf = (long)i;
    }
    return h;
}

/* Compare a device fp16 result with the expected bytes, or, when the reference's value overflows fp16,
 * expect the call to have failed naming the first overflowing [row, col]. */
static void check_f16_result(int rc, const char *err, ak_ctx *c, const void *dout, const uint16_t *exp, long ovf,
                             int rows, int K, const char *label) {
    if (ovf >= 0) {
        char pos[64];
        snprintf(pos, sizeof pos, "[%ld, %ld]", ovf / K, ovf % K);
        cr_expect_neq(rc, 0, "%s: expected an fp16 overflow error at %s", label, pos);
        cr_expect(strstr(err, "overflows fp16") && strstr(err, pos), "%s: %s (expected %s)", label, err, pos);
        return;
    }
    cr_assert_eq(rc, 0, "%s: %s", label, err);
    uint16_t *g = malloc((size_t)rows * K * 2);
    cr_assert_not_null(g);
    char e2[AX_ERR_LEN];
    cr_assert_eq(ak_download(c, g, dout, (size_t)rows * K * 2, "out", e2), 0, "%s", e2);
    long bad = -1;
    for (long i = 0; i < (long)rows * K && bad < 0; i++)
        if (g[i] != exp[i]) bad = i;
    cr_expect_eq(bad, -1, "%s: [%ld, %ld] gpu 0x%04x expected 0x%04x", label, bad / K, bad % K, bad >= 0 ? g[bad] : 0,
                 bad >= 0 ? exp[bad] : 0);
    free(g);
}

/* ak_dequantize_w_dev == aq_dequantize (original channel order) rounded to fp16. */
Test(gpu_dev, dequantize_matches_aq_dequantize_rounded_to_fp16) {
    ak_ctx *c = ctx_or_skip();
    char err[AX_ERR_LEN], label[128];
    for (size_t mi = 0; mi < sizeof wq_modes / sizeof *wq_modes; mi++) {
        aq_mode m = mode_of(wq_modes[mi]);
        for (size_t si = 0; si < 3; si++)
            for (int in = 0; in < 3; in++) {
                const int N = wq_shapes[si][0], K = wq_shapes[si][1];
                if (m.permuted && K - m.outliers < 1) continue;
                uint16_t *w = malloc((size_t)N * K * 2);
                float *ref = malloc((size_t)N * K * sizeof *ref);
                cr_assert(w && ref);
                ak_fill_input((ak_input)in, 140u + (unsigned)si, N, K, w);
                int32_t *perm = m.permuted ? rand_perm(K, 17u + si) : NULL;
                aq_qtensor rq;
                cr_assert_eq(aq_quantize_w(&m, w, N, K, perm, &rq, err), 0, "%s", err);
                cr_assert_eq(aq_dequantize(&rq, ref, err), 0, "%s", err);
                long ovf;
                uint16_t *exp = expect_f16(ref, (size_t)N * K, &ovf);
                void *dw = dev_copy(c, w, (size_t)N * K * 2), *dp = perm ? dev_copy(c, perm, (size_t)K * 4) : NULL, *dout = NULL;
                cr_assert_eq(ak_dmalloc(c, (size_t)N * K * 2, &dout, "out", err), 0, "%s", err);
                ak_dqt q;
                cr_assert_eq(ak_dqt_alloc(c, &m, 1, N, K, &q, "W", err), 0, "%s", err);
                cr_assert_eq(ak_quantize_w_dev(c, &m, dw, N, K, dp, &q, "W", err), 0, "%s", err);
                err[0] = 0;
                int rc = ak_dequantize_w_dev(c, &q, dout, "W", err);
                snprintf(label, sizeof label, "%s [%d, %d] %s", m.name, N, K, ak_input_name((ak_input)in));
                check_f16_result(rc, err, c, dout, exp, ovf, N, K, label);
                aq_qtensor_free(&rq);
                ak_dqt_free(c, &q);
                ak_dfree(c, dw); ak_dfree(c, dp); ak_dfree(c, dout);
                free(w); free(ref); free(exp); free(perm);
            }
    }
    ak_ctx_free(c);
}

/* ak_fakequant_x_dev / ak_fakequant_w_dev == aq_fakequant (on the fp16-exact input) rounded to fp16,
 * for every standard mode (fp16 and w4a16 included: X is copied, W weight-only quantized) and
 * parametric ones. */
Test(gpu_dev, fakequant_matches_aq_fakequant_rounded_to_fp16) {
    ak_ctx *c = ctx_or_skip();
    static const char *modes[] = {"fp16", "w4a16-g128", "w4a16-g32", "w8a8", "w4a4-pc", "w4a4-g32", "w4a4-g128",
                                  "w4a4-g256", "w4a4-mixed-g128", "atom-g128-o128", "atom-g32-o32"};
    static const int shapes[][2] = {{5, 160}, {33, 416}, {3, 70}};
    char err[AX_ERR_LEN], label[160];
    for (size_t mi = 0; mi < sizeof modes / sizeof *modes; mi++) {
        aq_mode m = mode_of(modes[mi]);
        for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
            for (int in = 0; in < 3; in++)
                for (int isw = 0; isw < 2; isw++) {
                    const int R = shapes[si][0], K = shapes[si][1];
                    if (m.permuted && K - m.outliers < 1) continue;
                    const size_t n = (size_t)R * K;
                    uint16_t *h = malloc(n * 2);
                    float *f = malloc(n * sizeof *f);
                    cr_assert(h && f);
                    ak_fill_input((ak_input)in, 200u + (unsigned)si, R, K, h);
                    for (size_t i = 0; i < n; i++) f[i] = aq_f16_to_f32(h[i]);
                    int32_t *perm = m.permuted ? rand_perm(K, 33u + si) : NULL;
                    cr_assert_eq(aq_fakequant(&m, isw, f, R, K, perm, f, isw ? "W" : "X", err), 0, "%s", err);
                    long ovf;
                    uint16_t *exp = expect_f16(f, n, &ovf);
                    void *dx = dev_copy(c, h, n * 2), *dp = perm ? dev_copy(c, perm, (size_t)K * 4) : NULL, *dout = NULL;
                    cr_assert_eq(ak_dmalloc(c, n * 2, &dout, "out", err), 0, "%s", err);
                    err[0] = 0;
                    int rc = isw ? ak_fakequant_w_dev(c, &m, dx, R, K, dp, dout, NULL, err)
                                 : ak_fakequant_x_dev(c, &m, dx, R, K, dp, dout, NULL, err);
                    snprintf(label, sizeof label, "%s %s [%d, %d] %s", m.name, isw ? "W" : "X", R, K, ak_input_name((ak_input)in));
                    check_f16_result(rc, err, c, dout, exp, ovf, R, K, label);
                    ak_dfree(c, dx); ak_dfree(c, dp); ak_dfree(c, dout);
                    free(h); free(f); free(exp); free(perm);
                }
    }
    ak_ctx_free(c);
}

/* In place (out == x) gives the same bytes as out-of-place. */
Test(gpu_dev, fakequant_x_in_place) {
    ak_ctx *c = ctx_or_skip();
    aq_mode m = mode_of("atom-g32-o32");
    enum { R = 9, K = 128 };
    uint16_t h[R * K], a[R * K], b[R * K];
    ak_fill_input(AK_INPUT_HEAVY, 5, R, K, h);
    int32_t *perm = rand_perm(K, 3);
    char err[AX_ERR_LEN];
    void *dx = dev_copy(c, h, sizeof h), *dp = dev_copy(c, perm, (size_t)K * 4), *dout = NULL;
    cr_assert_eq(ak_dmalloc(c, sizeof h, &dout, "out", err), 0, "%s", err);
    cr_assert_eq(ak_fakequant_x_dev(c, &m, dx, R, K, dp, dout, "X", err), 0, "%s", err);
    cr_assert_eq(ak_fakequant_x_dev(c, &m, dx, R, K, dp, dx, "X", err), 0, "%s", err);
    cr_assert_eq(ak_download(c, a, dout, sizeof a, "out", err), 0, "%s", err);
    cr_assert_eq(ak_download(c, b, dx, sizeof b, "x", err), 0, "%s", err);
    cr_assert_eq(memcmp(a, b, sizeof a), 0);
    ak_dfree(c, dx); ak_dfree(c, dp); ak_dfree(c, dout);
    free(perm);
    ak_ctx_free(c);
}

/* Deferred checks: a non-finite activation does not fail the call; the next ak_ctx_check names the
 * call's tensor and position, and a second check is clean. */
Test(gpu_dev, deferred_check_reports_first_bad_call) {
    ak_ctx *c = ctx_or_skip();
    ak_ctx_set_sync_checks(c, 0);
    aq_mode m = mode_of("w4a4-g32");
    enum { M = 4, K = 64 };
    uint16_t x[M * K];
    for (int i = 0; i < M * K; i++) x[i] = 0x3c00;
    char err[AX_ERR_LEN] = "";
    void *good = dev_copy(c, x, sizeof x);
    x[2 * K + 37] = 0xfc00;   /* -inf at [2, 37] */
    void *bad = dev_copy(c, x, sizeof x);
    ak_dqt q;
    cr_assert_eq(ak_dqt_alloc(c, &m, 0, M, K, &q, "X", err), 0, "%s", err);
    cr_assert_eq(ak_quantize_x_dev(c, &m, good, M, K, NULL, &q, "layer1.x", err), 0, "%s", err);
    cr_assert_eq(ak_quantize_x_dev(c, &m, bad, M, K, NULL, &q, "layer2.x", err), 0, "%s", err);
    cr_assert_eq(ak_quantize_x_dev(c, &m, good, M, K, NULL, &q, "layer3.x", err), 0, "%s", err);
    cr_assert_neq(ak_ctx_check(c, err), 0);
    cr_assert(strstr(err, "layer2.x") && strstr(err, "[2, 37]") && strstr(err, "deferred"), "%s", err);
    cr_assert_eq(ak_ctx_check(c, err), 0, "%s", err);
    /* more calls than check slots: the ring is recycled without losing the clean state */
    for (int i = 0; i < 600; i++) cr_assert_eq(ak_quantize_x_dev(c, &m, good, M, K, NULL, &q, "loop", err), 0, "%s", err);
    cr_assert_eq(ak_ctx_sync(c, err), 0, "%s", err);
    ak_dqt_free(c, &q);
    ak_dfree(c, good); ak_dfree(c, bad);
    ak_ctx_free(c);
}

/* Upload then download gives back the same bytes (layout mirror of aq_qtensor). */
Test(gpu_dev, dqt_upload_download_round_trip) {
    ak_ctx *c = ctx_or_skip();
    static const char *modes[] = {"w4a4-mixed-g128", "atom-g128-o128", "w8a8"};
    char err[AX_ERR_LEN], msg[256];
    for (int i = 0; i < 3; i++) {
        aq_mode m = mode_of(modes[i]);
        enum { N = 11, K = 288 };
        uint16_t *w = malloc((size_t)N * K * 2);
        cr_assert_not_null(w);
        ak_fill_input(AK_INPUT_NORMAL, 9, N, K, w);
        int32_t *perm = m.permuted ? rand_perm(K, 1) : NULL;
        aq_qtensor r, g;
        cr_assert_eq(aq_quantize_w(&m, w, N, K, perm, &r, err), 0, "%s", err);
        ak_dqt d;
        cr_assert_eq(ak_dqt_upload(c, &r, &d, "W", err), 0, "%s", err);
        cr_assert_eq(d.rows, N);
        cr_assert_eq(ak_dqt_download(c, &d, &g, err), 0, "%s", err);
        cr_expect_eq(qt_diff(&g, &r, msg, sizeof msg), 0, "%s: %s", m.name, msg);
        aq_qtensor_free(&r); aq_qtensor_free(&g);
        ak_dqt_free(c, &d);
        free(w); free(perm);
    }
    ak_ctx_free(c);
}

/* The mma.sync planner policy: compute capability 0 (unknown) never picks the wgmma path, so these
 * expectations hold on every GPU (on a Hopper device ak_gemm_plan plans the wgmma path for M >= 64:
 * planner_picks_wgmma_on_hopper). */
static int plan_mma(const aq_mode *m, int M, int N, int K, int sms, int ks, ak_plan *p) {
#ifdef APEX4_CUDA
    return ak_gemm_plan_ex(m, M, N, K, sms, 0, AK_PATH_AUTO, ks, p);
#else
    return ak_gemm_plan(m, M, N, K, sms, ks, p);
#endif
}

/* The planner's choices, derived by hand from its policy (kernels/NOTES.md "M <= 16: gemv_kernel",
 * "Design"): no device needed, only a CUDA build (the CPU-only stub refuses every plan). */
Test(gpu_dev, planner_follows_its_policy) {
    aq_mode pc = mode_of("w4a4-pc"), g128 = mode_of("w4a4-g128"), atom = mode_of("atom-g128-o128");
    ak_plan p;
    if (ak_gemm_plan(&pc, 4096, 8192, 8192, 132, 0, &p)) cr_skip_test("skipped: built without CUDA");
    cr_assert_eq(plan_mma(&pc, 4096, 8192, 8192, 132, 0, &p), 0);
    /* M = 4096, N = 8192: 32 x 64 = 2048 tiles of 128 x 128 >= 2 x 132 -> BIG, no split */
    cr_assert_eq(p.cfg, 4); cr_assert_eq(p.splits, 1); cr_assert_eq(p.split_kind, 0);
    /* M = 16, N = K = 8192 on 132 SMs: 512 warps of 16 columns, want 132 x 12 = 1584 -> ceil(1584 / 512)
     * = 4 splits; 8192 4-bit codes = 4096 B = 64 spans, cap 64 / 8 = 8: 4; pc is single-group: exact
     * int32 split (kind 1) */
    cr_assert_eq(plan_mma(&pc, 16, 8192, 8192, 132, 0, &p), 0);
    cr_assert_eq(p.cfg, 1); cr_assert_eq(p.splits, 4); cr_assert_eq(p.split_kind, 1);
    /* the same shape on a 66-SM GPU: want 792 -> ceil(792 / 512) = 2 */
    cr_assert_eq(plan_mma(&pc, 16, 8192, 8192, 66, 0, &p), 0);
    cr_assert_eq(p.splits, 2);
    /* g128, M = 1, N = 1024, K = 8192: 64 warps, want 1584 -> 25; spans 64 -> cap 8; G = 64: 8 splits,
     * the contract's group split (kind 2) */
    cr_assert_eq(plan_mma(&g128, 1, 1024, 8192, 132, 0, &p), 0);
    cr_assert_eq(p.splits, 8); cr_assert_eq(p.split_kind, 2);
    /* M = 200, N = 256: 2 x 2 = 4 big tiles < 264 -> MID (64 x 128): 4 x 2 = 8 blocks, want 264 -> 33;
     * K = 4096 at 4 bits = 2048 B = 16 k-tiles of 128 B -> cap 8; G = 32: 8. Atom adds outliers: group
     * split even with one main group. */
    cr_assert_eq(plan_mma(&g128, 200, 256, 4096, 132, 0, &p), 0);
    cr_assert_eq(p.cfg, 3); cr_assert_eq(p.splits, 8);
    cr_assert_eq(plan_mma(&atom, 200, 256, 4096, 132, 3, &p), 0);
    cr_assert_eq(p.splits, 3); cr_assert_eq(p.split_kind, 2);
    /* refusals */
    aq_mode fp = mode_of("fp16");
    cr_assert_neq(plan_mma(&fp, 1, 1, 64, 132, 0, &p), 0);
    cr_assert_neq(plan_mma(&pc, 1, 1, 64, 0, 0, &p), 0);
}

/* A context can run on another stream (here a second context's): the calls still give the reference's
 * bytes, and NULL returns it to its own stream. */
Test(gpu_dev, external_stream) {
    ak_ctx *c = ctx_or_skip(), *other = NULL;
    char err[AX_ERR_LEN], msg[256];
    cr_assert_eq(ak_ctx_new(0, &other, err), 0, "%s", err);
    cr_assert_not_null(ak_ctx_stream(other));
    cr_assert_eq(ak_ctx_set_stream(c, ak_ctx_stream(other)), 0);
    cr_assert_eq(ak_ctx_stream(c), ak_ctx_stream(other));
    aq_mode m = mode_of("w4a4-g64");
    enum { M = 3, K = 192 };
    uint16_t x[M * K];
    ak_fill_input(AK_INPUT_HEAVY, 4, M, K, x);
    aq_qtensor r, g;
    cr_assert_eq(aq_quantize_x(&m, x, M, K, NULL, &r, err), 0, "%s", err);
    void *dx = dev_copy(c, x, sizeof x);
    ak_dqt q;
    cr_assert_eq(ak_dqt_alloc(c, &m, 0, M, K, &q, "X", err), 0, "%s", err);
    cr_assert_eq(ak_quantize_x_dev(c, &m, dx, M, K, NULL, &q, "X", err), 0, "%s", err);
    cr_assert_eq(ak_ctx_sync(c, err), 0, "%s", err);
    cr_assert_eq(ak_dqt_download(c, &q, &g, err), 0, "%s", err);
    cr_expect_eq(qt_diff(&g, &r, msg, sizeof msg), 0, "%s", msg);
    cr_assert_eq(ak_ctx_set_stream(c, NULL), 0);
    cr_assert_neq(ak_ctx_stream(c), ak_ctx_stream(other));
    aq_qtensor_free(&r); aq_qtensor_free(&g);
    ak_dqt_free(c, &q);
    ak_dfree(c, dx);
    ak_ctx_free(c);
    ak_ctx_free(other);
}

/* ---- the Hopper wgmma path (kernels/ak_gemm_sm90.cu) ------------------------------------------------ */

/* The planner's wgmma choices, derived by hand from its policy (kernels/NOTES.md "wgmma path"): pure
 * (ak_gemm_plan_ex takes the compute capability), so no device is needed, only a CUDA build. */
Test(gpu_dev, planner_picks_wgmma_on_hopper) {
#ifndef APEX4_CUDA
    cr_skip_test("skipped: built without CUDA");
#else
    aq_mode pc = mode_of("w4a4-pc"), g128 = mode_of("w4a4-g128"), atom = mode_of("atom-g128-o128");
    aq_mode mixed = mode_of("w4a4-mixed-g128"), g96 = mode_of("w4a4-g96"), w8 = mode_of("w8a8");
    ak_plan p;
    /* AUTO picks the wgmma path only when built with AK_WGMMA_AUTO 1 (kernels/ak.h: off until the path is
     * verified on a device); asking for it by name plans it wherever it serves the mode. */
    cr_assert_eq(ak_gemm_plan_ex(&pc, 4096, 8192, 8192, 132, 90, AK_PATH_AUTO, 0, &p), 0);
    cr_assert_eq(p.path, AK_WGMMA_AUTO ? AK_PATH_WGMMA : AK_PATH_INT8);
    /* M = 4096, N = K = 8192 on cc 9.0: 32 x 64 = 2048 blocks of 128 x 128 >= 132 SMs -> no split;
     * cfg stays the mma.sync one for the shape (BIG: 2048 >= 2 x 132) */
    cr_assert_eq(ak_gemm_plan_ex(&pc, 4096, 8192, 8192, 132, 90, AK_PATH_WGMMA, 0, &p), 0);
    cr_assert_eq(p.path, AK_PATH_WGMMA); cr_assert_eq(p.cfg, 4); cr_assert_eq(p.splits, 1); cr_assert_eq(p.split_kind, 0);
    cr_assert_eq(ak_gemm_plan_ex(&w8, 4096, 8192, 8192, 132, 90, AK_PATH_WGMMA, 0, &p), 0);
    cr_assert_eq(p.path, AK_PATH_WGMMA);
    /* the same on cc 8.9 and cc 0 (unknown): the mma.sync INT8 path */
    cr_assert_eq(ak_gemm_plan_ex(&pc, 4096, 8192, 8192, 132, 89, AK_PATH_AUTO, 0, &p), 0);
    cr_assert_eq(p.path, AK_PATH_INT8); cr_assert_eq(p.cfg, 4);
    cr_assert_eq(ak_gemm_plan_ex(&pc, 4096, 8192, 8192, 132, 0, AK_PATH_AUTO, 0, &p), 0);
    cr_assert_eq(p.path, AK_PATH_INT8);
    /* M below 64: the mma.sync kernels (M = 16: GEMV) */
    cr_assert_eq(ak_gemm_plan_ex(&pc, 16, 8192, 8192, 132, 90, AK_PATH_AUTO, 0, &p), 0);
    cr_assert_eq(p.path, AK_PATH_INT8); cr_assert_eq(p.cfg, 1);
    cr_assert_eq(ak_gemm_plan_ex(&pc, 63, 8192, 8192, 132, 90, AK_PATH_AUTO, 0, &p), 0);
    cr_assert_eq(p.path, AK_PATH_INT8);
    cr_assert_eq(ak_gemm_plan_ex(&pc, 64, 8192, 8192, 132, 90, AK_PATH_WGMMA, 0, &p), 0);
    cr_assert_eq(p.path, AK_PATH_WGMMA);
    /* g128, M = 200, N = 256, K = 4096: 2 x 2 = 4 blocks -> ceil(132 / 4) = 33 splits; 4096 / 128 = 32
     * stages -> cap 16; 32 groups: 16, the contract's group split (kind 2) */
    cr_assert_eq(ak_gemm_plan_ex(&g128, 200, 256, 4096, 132, 90, AK_PATH_WGMMA, 0, &p), 0);
    cr_assert_eq(p.path, AK_PATH_WGMMA); cr_assert_eq(p.splits, 16); cr_assert_eq(p.split_kind, 2);
    /* mixed-g128, M = 128, N = 1024, K = 4096: 8 blocks -> ceil(132 / 8) = 17 -> cap 16; MIXED splits
     * the exact int32 sum (kind 1) */
    cr_assert_eq(ak_gemm_plan_ex(&mixed, 128, 1024, 4096, 132, 90, AK_PATH_WGMMA, 0, &p), 0);
    cr_assert_eq(p.path, AK_PATH_WGMMA); cr_assert_eq(p.splits, 16); cr_assert_eq(p.split_kind, 1);
    /* forced k_splits is kept */
    cr_assert_eq(ak_gemm_plan_ex(&g128, 200, 256, 4096, 132, 90, AK_PATH_WGMMA, 3, &p), 0);
    cr_assert_eq(p.splits, 3); cr_assert_eq(p.path, AK_PATH_WGMMA);
    /* not served: an outlier part (atom), a group of 96 codes (3 k32 steps: no static pattern), a GPU
     * that is not 9.x. AUTO falls back to INT8; asking for the wgmma path fails. */
    cr_assert_eq(ak_gemm_plan_ex(&atom, 4096, 8192, 8192, 132, 90, AK_PATH_AUTO, 0, &p), 0);
    cr_assert_eq(p.path, AK_PATH_INT8);
    cr_assert_neq(ak_gemm_plan_ex(&atom, 4096, 8192, 8192, 132, 90, AK_PATH_WGMMA, 0, &p), 0);
    cr_assert_eq(ak_gemm_plan_ex(&g96, 4096, 8192, 8192, 132, 90, AK_PATH_AUTO, 0, &p), 0);
    cr_assert_eq(p.path, AK_PATH_INT8);
    cr_assert_neq(ak_gemm_plan_ex(&g96, 4096, 8192, 8192, 132, 90, AK_PATH_WGMMA_SYNC, 0, &p), 0);
    cr_assert_neq(ak_gemm_plan_ex(&pc, 4096, 8192, 8192, 132, 80, AK_PATH_WGMMA, 0, &p), 0);
    /* one group per row is served whatever K (K = 160: 5 steps, the group ends with the row) */
    cr_assert_eq(ak_gemm_plan_ex(&pc, 64, 64, 160, 132, 90, AK_PATH_WGMMA, 0, &p), 0);
    cr_assert_eq(ak_gemm_plan_ex(&pc, 64, 64, 160, 132, 90, 7, 0, &p), -1);   /* no such path */
#endif
}

/* The wgmma kernel (overlapped and synchronous epilogue) against the CPU reference, byte for byte
 * (ak_check_case: aq_gemm at k_splits 1 and max(3, the planner's)): every group pattern it has
 * (g32: 1 step, g64: 2, g128/g256/whole row: stage ends), 4- and 8-bit codes, GROUP and MIXED,
 * ragged M/N (one block row, several, partial tiles), K with full and partial 128-code stages and
 * short last groups (K = 160, 416, 2080, 4128). Hopper only. */
Test(gpu_dev, wgmma_matches_reference_byte_for_byte) {
    if (!hopper_device()) cr_skip_test("skipped: no compute capability 9.x device");
    static const char *modes[] = {"w8a8", "w4a4-pc", "w4a4-g32", "w4a4-g64", "w4a4-g128", "w4a4-g256",
                                  "w4a4-mixed-g128", "w4a4-mixed-g32"};
    static const int shapes[][3] = {{2, 3, 160}, {64, 128, 416}, {130, 67, 2080}, {300, 257, 4128}};
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        aq_mode m = mode_of(modes[i]);
        for (int s = 0; s < 4; s++) {
            ak_check_result r;
            char err[AX_ERR_LEN];
            const ak_input in = (ak_input)((i + (size_t)s) % 3);
            int rc = ak_check_case(&m, shapes[s][0], shapes[s][1], shapes[s][2], in, 31u + (unsigned)s, 12, 2, &r, err);
            cr_assert_eq(rc, 0, "%s M=%d N=%d K=%d: %s", modes[i], shapes[s][0], shapes[s][1], shapes[s][2], err);
            cr_expect_eq(r.paths_run, 12, "%s: the wgmma paths did not run (paths_run %d)", modes[i], r.paths_run);
            cr_expect(r.ok, "%s M=%d N=%d K=%d %s: %s", modes[i], shapes[s][0], shapes[s][1], shapes[s][2],
                      ak_input_name(in), r.msg);
        }
    }
}

/* Refusals: the benchmark-only path is never a GEMM path; an atom mode (outlier part) is not served by
 * the wgmma path, and the message says what the path needs. */
Test(gpu, wgmma_refusals_name_the_path) {
    NEED_DEVICE();
    aq_mode atom = mode_of("atom-g32-o32"), pc = mode_of("w4a4-pc");
    uint16_t x[4 * 64], w[4 * 64], y[16];
    ak_fill_input(AK_INPUT_NORMAL, 5, 4, 64, x);
    ak_fill_input(AK_INPUT_NORMAL, 6, 4, 64, w);
    int32_t perm[64];
    for (int k = 0; k < 64; k++) perm[k] = 63 - k;
    char err[AX_ERR_LEN] = "";
    aq_qtensor qx, qw, px, pw;
    cr_assert_eq(aq_quantize_x(&atom, x, 4, 64, perm, &qx, err), 0, "%s", err);
    cr_assert_eq(aq_quantize_w(&atom, w, 4, 64, perm, &qw, err), 0, "%s", err);
    cr_assert_neq(ak_gemm(&qx, &qw, AK_PATH_WGMMA, y, err), 0);
    cr_expect(strstr(err, "wgmma") != NULL, "%s", err);
    cr_assert_eq(aq_quantize_x(&pc, x, 4, 64, NULL, &px, err), 0, "%s", err);
    cr_assert_eq(aq_quantize_w(&pc, w, 4, 64, NULL, &pw, err), 0, "%s", err);
    cr_assert_neq(ak_gemm(&px, &pw, AK_PATH_WGMMA_NOEPI, y, err), 0);
    cr_expect(strstr(err, "wgmma-noepi") != NULL, "%s", err);
    aq_qtensor_free(&qx); aq_qtensor_free(&qw); aq_qtensor_free(&px); aq_qtensor_free(&pw);
}
