/* test_gpu_calib.c — the Atom calibration on the GPU (eval/engine.h ae_engine_calib_sumsq /
 * ae_calibrate_on / ae_calib_obtain_on with the cuda device; kernels/ak_calib.h ak_ops_colsumsq).
 * Every test skips visibly ("skipped: no CUDA device", "skipped: no data root") without one.
 *  - the column-sum kernel against a host loop in the same order (rows in order into a double running
 *    sum that starts at acc[c]): bit for bit, on random fp16 bit patterns (subnormals, both signs, up
 *    to 65504), with a row stride wider than the width, rows past T and columns past width untouched;
 *  - wiki-gutenberg-13M on WikiText-2 validation tokens: GPU Σx² within 2e-3 (relative) of the CPU's
 *    per channel of non-negligible mass, the GPU order equal to the CPU order except between channels
 *    whose CPU sums lie within the tolerance of each other; resident and layer-major GPU calibrations
 *    bit-identical (sums and orders);
 *  - ae_calib_obtain_on on cuda: its own cache file ("-cuda-"), another file than the cpu one, the
 *    log naming the device, and a reload of the same bits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "ak.h"
#include "ak_calib.h"
#include "ak_ops.h"
#include "engine.h"
#include "testutil.h"
#include "tokenizer.h"
#include "wikitext.h"

#define NEED_GPU() do { if (ak_device_count() < 1) cr_skip_test("skipped: no CUDA device"); } while (0)

static void rm_tree(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* ---- the kernel --------------------------------------------------------------------------------- */

/* A random finite fp16 bit pattern (exponent field 0..30: subnormals and zeros included). */
static uint16_t rand_f16(uint64_t *s) {
    for (;;) {
        uint16_t h = (uint16_t)tu_rand_u64(s);
        if (((h >> 10) & 0x1f) != 0x1f) return h;
    }
}

Test(gpu_calib, colsumsq_equals_host_loop_bit_for_bit) {
    NEED_GPU();
    char err[AX_ERR_LEN] = "";
    const int T = 301, width = 1000, ld = 1037;   /* T odd (not a multiple of the unroll), width not of 128 */
    const size_t nx = (size_t)(T + 1) * ld;      /* one row past T: must not be read */
    uint16_t *x = malloc(nx * 2);
    double *acc = malloc((size_t)(width + 1) * sizeof(double)), *host = malloc((size_t)(width + 1) * sizeof(double));
    double *got = malloc((size_t)(width + 1) * sizeof(double));
    uint64_t s = 4242;
    for (size_t i = 0; i < nx; i++) x[i] = rand_f16(&s);
    for (int c = 0; c < ld; c++) x[(size_t)T * ld + c] = 0x7bff;   /* 65504 in the row past T */
    for (int c = 0; c <= width; c++) acc[c] = tu_rand_unit(&s) * 1e3;   /* a running sum to continue */
    acc[width] = -1.0;                                                  /* sentinel past width */
    ak_ops *o = NULL;
    cr_assert_eq(ak_ops_new(0, &o, err), 0, "%s", err);
    uint16_t *dx = NULL;
    double *dacc = NULL;
    cr_assert_eq(ak_ops_alloc(o, nx * 2, (void **)&dx, "x", err), 0, "%s", err);
    cr_assert_eq(ak_ops_alloc(o, (size_t)(width + 1) * sizeof(double), (void **)&dacc, "acc", err), 0, "%s", err);
    cr_assert_eq(ak_ops_upload(o, dx, x, nx * 2, err), 0, "%s", err);
    cr_assert_eq(ak_ops_upload(o, dacc, acc, (size_t)(width + 1) * sizeof(double), err), 0, "%s", err);
    /* two calls: the second continues the first's sums (as windows do) */
    cr_assert_eq(ak_ops_colsumsq(o, dx, T, ld, width, dacc, err), 0, "%s", err);
    cr_assert_eq(ak_ops_colsumsq(o, dx, 7, ld, width, dacc, err), 0, "%s", err);
    cr_assert_eq(ak_ops_sync(o, err), 0, "%s", err);
    cr_assert_eq(ak_ops_download(o, got, dacc, (size_t)(width + 1) * sizeof(double), err), 0, "%s", err);
    /* the host loop: the same additions in the same order (squares exact in double: 11-bit
     * significands; this file is compiled with -ffp-contract=off, so no fused multiply-add) */
    memcpy(host, acc, (size_t)(width + 1) * sizeof(double));
    const int rows[2] = {T, 7};
    for (int call = 0; call < 2; call++)
        for (int c = 0; c < width; c++)
            for (int t = 0; t < rows[call]; t++) {
                double v = (double)aq_f16_to_f32(x[(size_t)t * ld + c]);
                host[c] += v * v;
            }
    for (int c = 0; c < width; c++)
        cr_assert_eq(memcmp(&got[c], &host[c], sizeof(double)), 0, "column %d: %.17g (gpu) vs %.17g (host)", c, got[c],
                     host[c]);
    cr_assert_eq(got[width], -1.0, "the column past width was written");
    /* argument errors are named */
    cr_assert_neq(ak_ops_colsumsq(o, dx, T, 10, 11, dacc, err), 0);
    cr_assert(strstr(err, "ld"), "%s", err);
    cr_assert_neq(ak_ops_colsumsq(o, dx, 0, ld, width, dacc, err), 0);
    cr_assert(strstr(err, "T >= 1"), "%s", err);
    cr_assert_neq(ak_ops_colsumsq(o, dx, T, ld, width, host, err), 0);   /* host memory as acc */
    cr_assert(strstr(err, "acc"), "%s", err);
    ak_ops_dfree(o, dx);
    ak_ops_dfree(o, dacc);
    ak_ops_free(o);
    free(x); free(acc); free(host); free(got);
}

/* ---- the engine on a real model ---------------------------------------------------------------- */

/* wiki-gutenberg-13M and n tokens of WikiText-2 validation (with BOS) by its tokenizer. */
static ae_model *real_model_tokens(int n, int *tokens) {
    char root[AX_PATH_LEN], p[AX_PATH_LEN + 64], tp[AX_PATH_LEN + 128], err[AX_ERR_LEN] = "";
    if (tu_data_root(root, sizeof root)) cr_skip_test("skipped: no data root");
    snprintf(p, sizeof p, "%s/models/wiki-gutenberg-13M", root);
    snprintf(tp, sizeof tp, "%s/tokenizer.json", p);
    ae_model *m = NULL;
    cr_assert_eq(ae_model_load(p, &m, err), 0, "%s", err);
    ae_tokenizer *tok = NULL;
    cr_assert_eq(ae_tokenizer_load(tp, &tok, err), 0, "%s", err);
    ad_text txt;
    cr_assert_eq(ad_wikitext_load("validation", &txt, err), 0, "%s", err);
    int *ids = NULL;
    size_t nid = 0;
    cr_assert_eq(ae_tokenize(tok, txt.text, txt.len, 1, &ids, &nid, err), 0, "%s", err);
    cr_assert_geq(nid, (size_t)n);
    memcpy(tokens, ids, (size_t)n * sizeof(int));
    free(ids);
    ad_text_free(&txt);
    ae_tokenizer_free(tok);
    return m;
}

static ae_calib *calibrate(const ae_model *m, const int *tok, int nw, int T, ae_device d, int layer_major, char *desc) {
    ae_calib_where w;
    memset(&w, 0, sizeof w);
    w.device = d;
    w.nthreads = 4;
    w.layer_major = layer_major;
    ae_calib *c = NULL;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ae_calibrate_on(m, tok, nw, T, &w, &c, desc, 200, err), 0, "%s: %s", ae_device_name(d), err);
    cr_assert_eq(c->tokens, (long)nw * T);
    return c;
}

/* Tolerance of the GPU sums against the CPU's, per channel (relative). The GPU's site inputs are the
 * fp16 tensors of the HF-style fp16 forward, the CPU's fp32: each element differs by its own final
 * fp16 rounding (relative <= 2^-11 ~ 4.9e-4, so its square by <= ~9.8e-4) plus the differences
 * propagated through the earlier fp16 ops (of the same order, growing slowly with depth, 6 layers
 * here). Rounding to nearest is unbiased, so over 2048 tokens the relative difference of a sum is far
 * below the per-element bound; 2e-3 leaves room for the correlated part. Channels whose CPU sum is
 * below 1e-4 of the site's mean ("negligible mass") are not held to it (absolute fp16 spacing). */
#define REL_TOL 2e-3

Test(gpu_calib, gpu_sums_and_order_match_cpu_and_layer_major_is_bit_identical) {
    NEED_GPU();
    enum { NW = 8, T = 256 };
    static int tok[NW * T];
    ae_model *m = real_model_tokens(NW * T, tok);
    char dc[200], dg[200], dl[200];
    ae_calib *cc = calibrate(m, tok, NW, T, AE_DEV_CPU, 0, dc);
    ae_calib *cg = calibrate(m, tok, NW, T, AE_DEV_CUDA, -1, dg);   /* resident */
    ae_calib *cl = calibrate(m, tok, NW, T, AE_DEV_CUDA, 1, dl);    /* layer-major */
    cr_assert(strstr(dc, "cpu"), "%s", dc);
    cr_assert(strstr(dg, "cuda") && !strstr(dg, "layer-major"), "%s", dg);
    cr_assert(strstr(dl, "cuda") && strstr(dl, "layer-major"), "%s", dl);
    double worst = 0;
    long held = 0, swapped = 0;
    for (int i = 0; i < m->cfg.n_layers * AE_NSITES; i++) {
        const int n = cc->width[i % AE_NSITES];
        /* resident vs layer-major: the same activations, the same order per accumulator */
        cr_assert_eq(memcmp(cg->sumsq[i], cl->sumsq[i], (size_t)n * sizeof(double)), 0, "layer %d site %d: sums differ",
                     i / AE_NSITES, i % AE_NSITES);
        cr_assert_eq(memcmp(cg->perm[i], cl->perm[i], (size_t)n * sizeof(int32_t)), 0);
        double mean = 0;
        for (int k = 0; k < n; k++) mean += cc->sumsq[i][k] / n;
        const double floor = 1e-4 * mean;
        for (int k = 0; k < n; k++) {
            const double c = cc->sumsq[i][k], g = cg->sumsq[i][k];
            cr_assert(isfinite(g) && g >= 0, "layer %d site %d ch %d: %g", i / AE_NSITES, i % AE_NSITES, k, g);
            if (c < floor) continue;
            double r = fabs(g - c) / c;
            if (r > worst) worst = r;
            held++;
            cr_assert_leq(r, REL_TOL, "layer %d site %d channel %d: Σx² %.9g (cuda) vs %.9g (cpu)", i / AE_NSITES,
                          i % AE_NSITES, k, g, c);
        }
        /* the GPU order is ascending in the GPU sums (ties: lower channel first) — a property, checked
         * here independently of the sort */
        for (int j = 1; j < n; j++) {
            const int a = cg->perm[i][j - 1], b = cg->perm[i][j];
            cr_assert(cg->sumsq[i][a] < cg->sumsq[i][b] || (cg->sumsq[i][a] == cg->sumsq[i][b] && a < b));
        }
        /* GPU order vs CPU order: a pair the GPU puts a before b while the CPU sums say c_a > c_b is
         * allowed only when |g - c| <= tol·c for both can explain it: c_a(1 - tol) <= g_a <= g_b <=
         * c_b(1 + tol), i.e. c_a - c_b <= tol·(c_a + c_b); both of negligible mass: allowed. */
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                const int a = cg->perm[i][p], b = cg->perm[i][q];
                const double ca = cc->sumsq[i][a], cb = cc->sumsq[i][b];
                if (ca < cb || (ca == cb && a < b)) continue;   /* the CPU agrees */
                swapped++;
                if (ca < floor && cb < floor) continue;
                cr_assert_leq(ca - cb, REL_TOL * (ca + cb) + floor,
                              "layer %d site %d: cuda orders channel %d (cpu Σx² %.9g) before %d (%.9g)",
                              i / AE_NSITES, i % AE_NSITES, a, ca, b, cb);
            }
    }
    cr_log_info("cuda vs cpu calibration: %ld channels held to %g, worst relative difference %.3g; %ld pairs "
                "ordered differently, all within the tolerance", held, REL_TOL, worst, swapped);
    ae_calib_free(cc);
    ae_calib_free(cg);
    ae_calib_free(cl);
    ae_model_free(m);
}

/* ae_calib_obtain_on with cuda: a file of its own, the log names the device, a reload. */
Test(gpu_calib, obtain_on_cuda_has_its_own_cache_file) {
    NEED_GPU();
    char root[AX_PATH_LEN], p[AX_PATH_LEN + 64], tp[AX_PATH_LEN + 128], err[AX_ERR_LEN] = "";
    if (tu_data_root(root, sizeof root)) cr_skip_test("skipped: no data root");
    snprintf(p, sizeof p, "%s/models/wiki-gutenberg-13M", root);
    snprintf(tp, sizeof tp, "%s/tokenizer.json", p);
    ae_model *m = NULL;
    cr_assert_eq(ae_model_load(p, &m, err), 0, "%s", err);
    ae_tokenizer *tok = NULL;
    cr_assert_eq(ae_tokenizer_load(tp, &tok, err), 0, "%s", err);
    char tmp[64], pc[AX_PATH_LEN], pg[AX_PATH_LEN], pg2[AX_PATH_LEN];
    cr_assert_eq(tu_mkdtemp(tmp, sizeof tmp), 0);
    ae_calib_where wc = {AE_DEV_CPU, 2, 0, 0, 0}, wg = {AE_DEV_CUDA, 0, 0, 0, 0};
    char *log1 = NULL, *log2 = NULL;
    size_t l1, l2;
    FILE *f1 = open_memstream(&log1, &l1), *f2 = open_memstream(&log2, &l2);
    ae_calib *a = NULL, *b = NULL, *c = NULL;
    cr_assert_eq(ae_calib_obtain_on(m, tok, 128, 2, tmp, &wc, NULL, &a, pc, err), 0, "%s", err);
    cr_assert_eq(ae_calib_obtain_on(m, tok, 128, 2, tmp, &wg, f1, &b, pg, err), 0, "%s", err);
    cr_assert_eq(ae_calib_obtain_on(m, tok, 128, 2, tmp, &wg, f2, &c, pg2, err), 0, "%s", err);
    fclose(f1);
    fclose(f2);
    cr_assert(strstr(pg, "/calib-wiki-gutenberg-13M-cuda-"), "%s", pg);
    cr_assert(!strstr(pc, "cuda"), "%s", pc);
    cr_assert_str_neq(pc, pg);
    cr_assert_str_eq(pg, pg2);
    cr_assert(strstr(log1, " on cuda ("), "%s", log1);
    cr_assert(strstr(log1, "cached in"), "%s", log1);
    cr_assert(strstr(log2, "loaded"), "%s", log2);
    for (int i = 0; i < m->cfg.n_layers * AE_NSITES; i++) {
        cr_assert_eq(memcmp(b->sumsq[i], c->sumsq[i], (size_t)b->width[i % AE_NSITES] * sizeof(double)), 0);
        cr_assert_eq(memcmp(b->perm[i], c->perm[i], (size_t)b->width[i % AE_NSITES] * sizeof(int32_t)), 0);
    }
    ae_calib_free(a); ae_calib_free(b); ae_calib_free(c);
    free(log1); free(log2);
    ae_tokenizer_free(tok);
    ae_model_free(m);
    rm_tree(tmp);
}
