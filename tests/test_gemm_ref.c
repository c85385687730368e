/* test_gemm_ref.c — the integer GEMM of the CPU reference (aq_gemm) against NUMERICS.md.
 *
 * Three independent checks: hand-derived cases (values worked out in the comments and cross-checked
 * with Python's struct 'e'/'f' formats), a deliberately naive re-implementation of the contract's
 * loops written here from NUMERICS.md (no blocking, no threads, no SIMD; it shares only the code
 * unpacking of aq.h, tested in test_quant.c), and an error bound against an fp64 product of the
 * dequantized matrices. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aq.h"
#include "testutil.h"

/* ---- naive contract ------------------------------------------------------------------------- */

static int code(const aq_qmat *q, int r, int c) {
    if (q->bits == 8) return (int8_t)q->codes[(size_t)r * q->cols + c];
    int8_t v[2];
    aq_unpack_int4(q->codes + (size_t)r * ((q->cols + 1) / 2) + c / 2, 2, v);
    return v[c & 1];
}

/* NUMERICS.md, literally: per (m, n), per split s: acc_s over its groups with fmaf; outlier group
 * appended to the last split; splits combined left to right; mixed: one product. */
static void naive_gemm(const aq_qtensor *qx, const aq_qtensor *qw, int ks, uint16_t *y) {
    const aq_qmat *X = &qx->main, *W = &qw->main;
    int M = qx->rows, N = qw->rows;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float out;
            if (qx->mode.epilogue == AQ_EPI_MIXED) {
                int32_t P = 0;
                for (int k = 0; k < X->cols; k++) P += code(X, m, k) * code(W, n, k) * W->sub[n * W->ngroups + k / W->group];
                out = (float)P * (aq_f16_to_f32(X->scales[m]) * aq_f16_to_f32(W->scales[n]));
            } else {
                int G = X->ngroups, c = (G + ks - 1) / ks;
                float acc = 0.0f;
                for (int s = 0; s < ks; s++) {
                    float a = 0.0f;
                    for (int j = s * c; j < (s + 1) * c && j < G; j++) {
                        int32_t p = 0;
                        for (int k = j * X->group; k < (j + 1) * X->group && k < X->cols; k++) p += code(X, m, k) * code(W, n, k);
                        a = fmaf((float)p, aq_f16_to_f32(X->scales[m * G + j]) * aq_f16_to_f32(W->scales[n * G + j]), a);
                    }
                    if (s == ks - 1 && qx->outl.rows) {
                        int32_t p = 0;
                        for (int k = 0; k < qx->outl.cols; k++) p += code(&qx->outl, m, k) * code(&qw->outl, n, k);
                        a = fmaf((float)p, aq_f16_to_f32(qx->outl.scales[m]) * aq_f16_to_f32(qw->outl.scales[n]), a);
                    }
                    acc = s == 0 ? a : acc + a;
                }
                out = acc;
            }
            y[m * N + n] = aq_f32_to_f16(out);
        }
}

/* The plain order of NUMERICS.md "Integer GEMM with group scales" (no split notion at all): what
 * k_splits = 1 must reproduce. Group and atom modes only. */
static uint16_t plain_one(const aq_qtensor *qx, const aq_qtensor *qw, int m, int n) {
    const aq_qmat *X = &qx->main, *W = &qw->main;
    int G = X->ngroups;
    float acc = 0.0f;
    for (int j = 0; j < G; j++) {
        int32_t p = 0;
        for (int k = j * X->group; k < (j + 1) * X->group && k < X->cols; k++) p += code(X, m, k) * code(W, n, k);
        acc = fmaf((float)p, aq_f16_to_f32(X->scales[m * G + j]) * aq_f16_to_f32(W->scales[n * G + j]), acc);
    }
    if (qx->outl.rows) {
        int32_t p = 0;
        for (int k = 0; k < qx->outl.cols; k++) p += code(&qx->outl, m, k) * code(&qw->outl, n, k);
        acc = fmaf((float)p, aq_f16_to_f32(qx->outl.scales[m]) * aq_f16_to_f32(qw->outl.scales[n]), acc);
    }
    return aq_f32_to_f16(acc);
}

/* Random fp16 matrix: normal-ish (sum of 4 uniforms) or heavy-tailed (normal / sqrt(uniform)). */
static void rand_f16(uint16_t *h, size_t n, uint64_t *st, int heavy, double scale) {
    for (size_t i = 0; i < n; i++) {
        double z = 0;
        for (int t = 0; t < 4; t++) z += tu_rand_unit(st) - 0.5;
        z *= 1.7;
        if (heavy) z /= sqrt(tu_rand_unit(st) * 0.999 + 0.001);
        h[i] = aq_f32_to_f16((float)(z * scale));
    }
}

static void rand_perm(int32_t *p, int K, uint64_t *st) {
    for (int i = 0; i < K; i++) p[i] = i;
    for (int i = K - 1; i > 0; i--) {
        int j = (int)(tu_rand_u64(st) % (uint64_t)(i + 1));
        int32_t t = p[i]; p[i] = p[j]; p[j] = t;
    }
}

/* ---- hand-derived cases ---------------------------------------------------------------------- */

Test(gemm_hand, w4a4_g2_one_output) {
    /* X = {7, 3 | 0.7, -0.7} (fp16: 0.7 -> 0.7001953125), W = {1, -1 | 14, 2}, g = 2.
     * X g0: s = 1, q {7, 3}; X g1: s = fp16(0.70019531/7) = 0.10003662109375, q {7, -7} (6.9994 -> 7).
     * W g0: s = fp16(1/7) = 0.142822265625, q {7, -7} (7.0017 -> 7); W g1: s = 2, q {7, 1}.
     * p0 = 49 - 21 = 28, σ0 = 0.142822265625 -> acc = 3.9990234375;
     * p1 = 49 - 7 = 42, σ1 = 0.2000732421875 -> acc = fp32(3.9990234375 + 8.403076171875) = 12.402099609375
     * (exact). y = fp16: spacing 2^-7, 12.4021·128 = 1587.47 -> 1587/128 = 12.3984375 = 0x4a33. */
    char err[AX_ERR_LEN];
    aq_mode m;
    aq_mode_parse("w4a4-g2", &m, err);
    float xf[4] = {7, 3, 0.7f, -0.7f}, wf[4] = {1, -1, 14, 2};
    uint16_t x[4], w[4], y[1];
    for (int i = 0; i < 4; i++) { x[i] = aq_f32_to_f16(xf[i]); w[i] = aq_f32_to_f16(wf[i]); }
    aq_qtensor qx, qw;
    cr_assert_eq(aq_quantize_x(&m, x, 1, 4, NULL, &qx, err), 0, "%s", err);
    cr_assert_eq(aq_quantize_w(&m, w, 1, 4, NULL, &qw, err), 0, "%s", err);
    cr_assert_eq(qx.main.scales[1], 0x2e67, "%04x", qx.main.scales[1]);
    cr_assert_eq(aq_gemm(&qx, &qw, 1, y, 1, err), 0, "%s", err);
    cr_assert_eq(y[0], 0x4a33, "%04x", y[0]);
    cr_assert_eq(aq_gemm(&qx, &qw, 2, y, 1, err), 0, "%s", err);
    cr_assert_eq(y[0], 0x4a33, "exact partial sums: the split does not matter here");
    aq_qtensor_free(&qx);
    aq_qtensor_free(&qw);
}

/* Hand-built operands (codes and scales chosen directly) for the accumulation order. */
static void build(aq_qtensor *t, const aq_mode *m, const int8_t *q, const uint16_t *s, int K) {
    memset(t, 0, sizeof *t);
    t->mode = *m;
    t->rows = 1;
    t->K = K;
    t->main = (aq_qmat){.rows = 1, .cols = K, .bits = 4, .group = m->x.group, .ngroups = (K + m->x.group - 1) / m->x.group};
    t->main.codes = calloc((size_t)(K + 1) / 2, 1);
    t->main.scales = malloc((size_t)t->main.ngroups * sizeof(uint16_t));
    cr_assert_eq(aq_pack_int4(q, (size_t)K, t->main.codes), 0);
    memcpy(t->main.scales, s, (size_t)t->main.ngroups * sizeof(uint16_t));
}

Test(gemm_hand, k_splits_change_the_rounding) {
    /* g = 2, K = 8, groups: p = {3, 0, 1, 1}, σ = {683·2^-11 (0x3556)·1 (0x3c00), 0, 2^-12·2^-12, 2^-12·2^-12}.
     * group 0: fmaf(3, 0.33349609375, 0) = 2049/2048 = 1 + 2^-11 (exact).
     * k_splits = 1: (1 + 2^-11) + 2^-24 is a tie at the fp32 ulp 2^-23 and 1 + 2^-11 is even -> stays;
     *   twice -> 1 + 2^-11 -> fp16 tie between 1 and 1 + 2^-10 -> even 1.0 = 0x3c00.
     * k_splits = 2 (c = 2): acc_1 = 2^-24 + 2^-24 = 2^-23; 1 + 2^-11 + 2^-23 is exact in fp32 and lies
     *   above the fp16 tie -> 1 + 2^-10 = 0x3c01. k_splits = 3: c = 2 again -> 0x3c01.
     * k_splits = 4 (c = 1): ((a + 0) + 2^-24) + 2^-24 -> a -> 0x3c00. */
    char err[AX_ERR_LEN];
    aq_mode m;
    aq_mode_parse("w4a4-g2", &m, err);
    int8_t qxc[8] = {1, 1, 0, 0, 1, 0, 1, 0}, qwc[8] = {1, 2, 0, 0, 1, 0, 1, 0};
    uint16_t sx[4] = {0x3556, 0, 0x0c00, 0x0c00}, sw[4] = {0x3c00, 0, 0x0c00, 0x0c00};
    aq_qtensor qx, qw;
    build(&qx, &m, qxc, sx, 8);
    build(&qw, &m, qwc, sw, 8);
    uint16_t want[5] = {0, 0x3c00, 0x3c01, 0x3c01, 0x3c00}, y[1], yn[1];
    for (int ks = 1; ks <= 4; ks++) {
        cr_assert_eq(aq_gemm(&qx, &qw, ks, y, 1, err), 0, "%s", err);
        cr_assert_eq(y[0], want[ks], "k_splits %d: %04x", ks, y[0]);
        naive_gemm(&qx, &qw, ks, yn);
        cr_assert_eq(yn[0], want[ks], "naive k_splits %d: %04x", ks, yn[0]);
    }
    aq_qtensor_free(&qx);
    aq_qtensor_free(&qw);
}

Test(gemm_hand, mixed_one_product) {
    /* X = {7, -7, 1, 0} per-token: s = 1, q = {7, -7, 1, 0}. W = {7, -3.5, 0.7, 0.35} with g = 2
     * (test_quant.c mixed_subscales): q = {7, -4, 5, 3}, u = {15, 2}, S = 0.066650390625.
     * P = 7·7·15 + (-7)(-4)·15 + 1·5·2 + 0 = 735 + 420 + 10 = 1165; y = fp16(1165·S = 77.647705078125):
     * spacing 2^-4 -> 1242.36 -> 1242/16 = 77.625 = 0x54da. */
    char err[AX_ERR_LEN];
    aq_mode m;
    aq_mode_parse("w4a4-mixed-g2", &m, err);
    float xf[4] = {7, -7, 1, 0}, wf[4] = {7, -3.5f, 0.7f, 0.35f};
    uint16_t x[4], w[4], y[1];
    for (int i = 0; i < 4; i++) { x[i] = aq_f32_to_f16(xf[i]); w[i] = aq_f32_to_f16(wf[i]); }
    aq_qtensor qx, qw;
    cr_assert_eq(aq_quantize_x(&m, x, 1, 4, NULL, &qx, err), 0);
    cr_assert_eq(aq_quantize_w(&m, w, 1, 4, NULL, &qw, err), 0);
    for (int ks = 1; ks <= 3; ks++) {
        cr_assert_eq(aq_gemm(&qx, &qw, ks, y, 2, err), 0, "%s", err);
        cr_assert_eq(y[0], 0x54da, "%04x", y[0]);
    }
    aq_qtensor_free(&qx);
    aq_qtensor_free(&qw);
}

Test(gemm_hand, atom_outlier_group_is_the_last_fma) {
    /* atom-g2-o2, K = 4, perm = identity: main = channels {0, 1} (one group), outliers {2, 3}.
     * X = {7, 0, 127, 0}, W = {7, 0, 1, 0}.
     * main: X t = fp32(7·0.9f) = 6.3, s = fp16(0.9) = 0.89990234375, q = 7.78 -> 7;
     *   W t = fp32(7·0.85f) = 5.95, s = fp16(0.85) = 0.85009765625, q = 8.23 -> 7; p = 49,
     *   σ = 0.89990234375·0.85009765625 = 0.7650048732757568 (exact), acc = fp32(49·σ =
     *   37.485238790512085) = 37.48523712158203.
     * outliers (8-bit, α = 1): X s = fp16(127/127) = 1, q = 127; W s = fp16(1/127) = 0.00787353515625,
     *   q = 127.0078 -> 127; p = 16129, σ = 0.00787353515625, p·σ = 126.99224853515625.
     *   fmaf: 126.99224853515625 + 37.48523712158203 = 164.47748565673828 -> fp32 164.47747802734375.
     * y = fp16: spacing 2^-3 -> 1315.82 -> 1316/8 = 164.5 = 0x5924. */
    char err[AX_ERR_LEN];
    aq_mode m;
    aq_mode_parse("atom-g2-o2", &m, err);
    float xf[4] = {7, 0, 127, 0}, wf[4] = {7, 0, 1, 0};
    uint16_t x[4], w[4], y[1], yn[1];
    for (int i = 0; i < 4; i++) { x[i] = aq_f32_to_f16(xf[i]); w[i] = aq_f32_to_f16(wf[i]); }
    int32_t perm[4] = {0, 1, 2, 3};
    aq_qtensor qx, qw;
    cr_assert_eq(aq_quantize_x(&m, x, 1, 4, perm, &qx, err), 0, "%s", err);
    cr_assert_eq(aq_quantize_w(&m, w, 1, 4, perm, &qw, err), 0, "%s", err);
    cr_assert(qx.main.scales[0] == aq_f32_to_f16(0.89990234375f) && qw.main.scales[0] == aq_f32_to_f16(0.85009765625f));
    cr_assert_eq(aq_gemm(&qx, &qw, 1, y, 1, err), 0, "%s", err);
    cr_assert_eq(y[0], 0x5924, "%04x", y[0]);
    naive_gemm(&qx, &qw, 1, yn);
    cr_assert_eq(yn[0], 0x5924);
    aq_qtensor_free(&qx);
    aq_qtensor_free(&qw);
}

/* ---- every mode on awkward shapes ------------------------------------------------------------ */

static void check_mode(const char *name, int M, int N, int K, int heavy, uint64_t seed) {
    char err[AX_ERR_LEN];
    aq_mode m;
    cr_assert_eq(aq_mode_parse(name, &m, err), 0, "%s", err);
    uint64_t st = seed;
    uint16_t *x = malloc((size_t)M * K * 2), *w = malloc((size_t)N * K * 2);
    uint16_t *y = malloc((size_t)M * N * 2), *yn = malloc((size_t)M * N * 2), *y1 = malloc((size_t)M * N * 2);
    int32_t *perm = malloc((size_t)K * sizeof *perm);
    rand_f16(x, (size_t)M * K, &st, heavy, 1.0);
    rand_f16(w, (size_t)N * K, &st, heavy, 0.05);
    rand_perm(perm, K, &st);
    const int32_t *p = m.permuted ? perm : NULL;
    aq_qtensor qx, qw;
    cr_assert_eq(aq_quantize_x(&m, x, M, K, p, &qx, err), 0, "%s: %s", name, err);
    cr_assert_eq(aq_quantize_w(&m, w, N, K, p, &qw, err), 0, "%s: %s", name, err);
    int G = qx.main.ngroups;
    int splits[4] = {1, 2, 3, G + 2};
    for (int si = 0; si < 4; si++) {
        naive_gemm(&qx, &qw, splits[si], yn);
        for (int th = 1; th <= 3; th++) {
            cr_assert_eq(aq_gemm(&qx, &qw, splits[si], y, th, err), 0, "%s", err);
            for (int i = 0; i < M * N; i++)
                cr_assert_eq(y[i], yn[i], "%s M%d N%d K%d k_splits %d threads %d: y[%d] = %04x, naive %04x",
                             name, M, N, K, splits[si], th, i, y[i], yn[i]);
        }
        if (si == 0) memcpy(y1, yn, (size_t)M * N * 2);
    }
    if (m.epilogue != AQ_EPI_MIXED)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                cr_assert_eq(y1[(size_t)i * N + j], plain_one(&qx, &qw, i, j), "%s: k_splits 1 vs plain order", name);
    /* error bound against fp64 on the dequantized operands (see gemm_bound below for the derivation) */
    float *xd = malloc((size_t)M * K * 4), *wd = malloc((size_t)N * K * 4);
    cr_assert_eq(aq_dequantize(&qx, xd, err), 0, "%s", err);
    cr_assert_eq(aq_dequantize(&qw, wd, err), 0, "%s", err);
    int ngr = G + (qx.outl.rows > 0);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double ref = 0, A = 0;
            for (int k = 0; k < K; k++) {
                ref += (double)xd[(size_t)i * K + k] * wd[(size_t)j * K + k];
                A += fabs((double)xd[(size_t)i * K + k] * wd[(size_t)j * K + k]);
            }
            /* y1 = k_splits 1. fp32 accumulation: each of the ngr fmaf (mixed: int->float and one
             * multiply) rounds once, relative 2^-24 of a partial sum bounded by A: e1 <= (ngr+2)·2^-24·A;
             * fp16 output: 2^-11 relative + 2^-25 absolute (half the smallest subnormal). The fp64 sum
             * itself errs by at most K·2^-53·A. */
            double e1 = (ngr + 2) * 0x1p-24 * A + K * 0x1p-53 * A;
            double bound = e1 + 0x1p-11 * (fabs(ref) + e1) + 0x1p-25;
            double got = aq_f16_to_f32(y1[(size_t)i * N + j]);
            cr_assert(fabs(got - ref) <= bound, "%s: y[%d,%d] = %.9g, fp64 %.9g, bound %.3g", name, i, j, got, ref, bound);
        }
    free(xd); free(wd);
    aq_qtensor_free(&qx);
    aq_qtensor_free(&qw);
    free(x); free(w); free(y); free(yn); free(y1); free(perm);
}

static const char *const int_modes[] = {"w8a8", "w4a4-pc", "w4a4-g32", "w4a4-g64", "w4a4-g128", "w4a4-g256",
                                        "w4a4-g96", "w4a4-g2", "w4a4-mixed-g128", "w4a4-mixed-g32",
                                        "atom-g128-o128", "atom-g64-o32", "atom-g32-o0", NULL};

Test(gemm_modes, awkward_shapes_normal) {
    /* M, N, K not multiples of 16, 64 or g; K = 300 leaves short last groups for every g. */
    for (int i = 0; int_modes[i]; i++) check_mode(int_modes[i], 67, 133, 300, 0, 100 + (uint64_t)i);
}

Test(gemm_modes, awkward_shapes_heavy_tails) {
    for (int i = 0; int_modes[i]; i++) check_mode(int_modes[i], 5, 259, 401, 1, 200 + (uint64_t)i);
}

Test(gemm_modes, tiny_shapes) {
    check_mode("w4a4-g32", 1, 1, 1, 0, 1);
    check_mode("w4a4-g32", 1, 3, 33, 1, 2);
    check_mode("atom-g2-o1", 2, 5, 4, 1, 3);
    check_mode("w4a4-mixed-g2", 3, 1, 3, 0, 4);
    check_mode("w8a8", 129, 2, 17, 1, 5);
}

/* ---- errors ---------------------------------------------------------------------------------- */

Test(gemm_errors, mismatches_are_reported) {
    char err[AX_ERR_LEN];
    aq_mode a, b;
    aq_mode_parse("w4a4-g32", &a, err);
    aq_mode_parse("w4a4-g64", &b, err);
    uint16_t x[2 * 64] = {0}, y[4];
    x[3] = 0x3c00;
    aq_qtensor qx, qw, qw2;
    cr_assert_eq(aq_quantize_x(&a, x, 2, 64, NULL, &qx, err), 0);
    cr_assert_eq(aq_quantize_w(&b, x, 2, 64, NULL, &qw, err), 0);
    cr_assert_neq(aq_gemm(&qx, &qw, 1, y, 1, err), 0);
    cr_assert(strstr(err, "w4a4-g32") && strstr(err, "w4a4-g64"), "%s", err);
    cr_assert_eq(aq_quantize_w(&a, x, 2, 63, NULL, &qw2, err), 0);
    cr_assert_neq(aq_gemm(&qx, &qw2, 1, y, 1, err), 0);
    cr_assert(strstr(err, "K mismatch"), "%s", err);
    aq_qtensor_free(&qw2);
    cr_assert_eq(aq_quantize_w(&a, x, 2, 64, NULL, &qw2, err), 0);
    cr_assert_neq(aq_gemm(&qx, &qw2, 0, y, 1, err), 0);
    cr_assert(strstr(err, "k_splits"), "%s", err);
    cr_assert_neq(aq_gemm(&qx, &qw2, 1, y, 0, err), 0);
    cr_assert_eq(aq_gemm(&qx, &qw2, 1, y, 64, err), 0, "more threads than tiles is fine");
    aq_qtensor_free(&qx);
    aq_qtensor_free(&qw);
    aq_qtensor_free(&qw2);
    /* atom operands quantized with different permutations */
    aq_mode at;
    aq_mode_parse("atom-g2-o1", &at, err);
    int32_t p1[4] = {0, 1, 2, 3}, p2[4] = {1, 0, 2, 3};
    cr_assert_eq(aq_quantize_x(&at, x, 1, 4, p1, &qx, err), 0);
    cr_assert_eq(aq_quantize_w(&at, x, 1, 4, p2, &qw, err), 0);
    cr_assert_neq(aq_gemm(&qx, &qw, 1, y, 1, err), 0);
    cr_assert(strstr(err, "permutation"), "%s", err);
    aq_qtensor_free(&qx);
    aq_qtensor_free(&qw);
}
