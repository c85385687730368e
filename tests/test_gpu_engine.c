/* test_gpu_engine.c — the cuda backend of eval/engine.h on the device (skipped visibly without one).
 *  - in situ: every projection of the first and last layer of a real checkpoint
 *    (wiki-gutenberg-13M from the data root), run by the cuda engine exactly as its forward pass runs
 *    it (resident weights quantized on the GPU, the site's activation quantizer, the GEMM kernel), is
 *    byte-identical to the CPU --gemm exact path on the same fp16 inputs (aq_quantize_w of the fp16
 *    weights, aq_quantize_x, aq_gemm with k_splits = 1, as eval/forward.c), for the integer modes;
 *  - the cuda engine's FP16 window NLL agrees with the cpu engine's to fp16-activation rounding. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "ak.h"
#include "engine.h"
#include "testutil.h"

static ae_model *real_model(void) {
    char root[AX_PATH_LEN], p[AX_PATH_LEN + 64], err[AX_ERR_LEN] = "";
    if (tu_data_root(root, sizeof root)) cr_skip_test("skipped: no data root");
    snprintf(p, sizeof p, "%s/models/wiki-gutenberg-13M", root);
    ae_model *m = NULL;
    cr_assert_eq(ae_model_load(p, &m, err), 0, "%s", err);
    return m;
}

/* Random permutations per (layer, site) as an Atom calibration would give (Fisher-Yates, seeded). */
static ae_calib *fake_calib(const ae_model *m) {
    const ae_config *c = &m->cfg;
    ae_calib *k = calloc(1, sizeof *k);
    k->n_layers = c->n_layers;
    int w[AE_NSITES] = {c->dim, c->n_heads * c->head_dim, c->dim, c->hidden_dim};
    for (int i = 0; i < AE_NSITES; i++) k->width[i] = w[i];
    k->perm = calloc((size_t)c->n_layers * AE_NSITES, sizeof *k->perm);
    k->sumsq = calloc((size_t)c->n_layers * AE_NSITES, sizeof *k->sumsq);
    uint64_t s = 99;
    for (int i = 0; i < c->n_layers * AE_NSITES; i++) {
        int n = w[i % AE_NSITES];
        k->perm[i] = malloc((size_t)n * sizeof(int32_t));
        k->sumsq[i] = calloc((size_t)n, sizeof(double));
        for (int j = 0; j < n; j++) k->perm[i][j] = j;
        for (int j = n - 1; j > 0; j--) {
            int r = (int)(tu_rand_u64(&s) % (uint64_t)(j + 1)), t = k->perm[i][j];
            k->perm[i][j] = k->perm[i][r];
            k->perm[i][r] = t;
        }
    }
    return k;
}

/* Every projection of the first and last layer, T tokens, modes[0 .. nm-1]: engine vs CPU exact. */
static long in_situ(ae_model *m, ae_calib *cal, const char *const *modes, size_t nm, int T) {
    const ae_config *c = &m->cfg;
    char err[AX_ERR_LEN] = "";
    long compared = 0;
    for (size_t mi = 0; mi < nm; mi++) {
        ae_engine_opts o;
        memset(&o, 0, sizeof o);
        o.device = AE_DEV_CUDA;
        cr_assert_eq(aq_mode_parse(modes[mi], &o.mode, err), 0, "%s", err);
        o.gemm = AE_GEMM_EXACT;
        o.max_seq = T > 64 ? T : 64;
        ae_engine *e = NULL;
        cr_assert_eq(ae_engine_new(m, &o, cal, &e, err), 0, "%s: %s", modes[mi], err);
        int layers[2] = {0, c->n_layers - 1};
        for (int li = 0; li < 2; li++) {
            int l = layers[li];
            const ae_tensor_id ids[7] = {AE_T_WQ, AE_T_WK, AE_T_WV, AE_T_WO, AE_T_GATE, AE_T_UP, AE_T_DOWN};
            int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
            int Ns[7] = {qd, kvd, kvd, c->dim, c->hidden_dim, c->hidden_dim, c->dim};
            int Ks[7] = {c->dim, c->dim, c->dim, qd, c->dim, c->dim, c->hidden_dim};
            int site[7] = {AE_SITE_ATTN_IN, AE_SITE_ATTN_IN, AE_SITE_ATTN_IN, AE_SITE_ATTN_OUT, AE_SITE_MLP_IN,
                           AE_SITE_MLP_IN, AE_SITE_MLP_OUT};
            for (int p = 0; p < 7; p++) {
                int N = Ns[p], K = Ks[p];
                uint16_t *x = malloc((size_t)T * K * 2), *w16 = malloc((size_t)N * K * 2);
                uint16_t *yc = malloc((size_t)T * N * 2), *yg = malloc((size_t)T * N * 2);
                ak_fill_input(AK_INPUT_HEAVY, 1000u + (unsigned)(l * 7 + p), T, K, x);
                cr_assert_eq(ae_model_read_f16(m, l, ids[p], 0, (size_t)N, w16, err), 0, "%s", err);
                const int32_t *perm = o.mode.kind == AQ_KIND_ATOM ? cal->perm[l * AE_NSITES + site[p]] : NULL;
                aq_qtensor qw, qx;
                cr_assert_eq(aq_quantize_w(&o.mode, w16, N, K, perm, &qw, err), 0, "%s", err);
                cr_assert_eq(aq_quantize_x(&o.mode, x, T, K, perm, &qx, err), 0, "%s", err);
                cr_assert_eq(aq_gemm(&qx, &qw, 1, yc, 2, err), 0, "%s", err);
                cr_assert_eq(ae_engine_probe_linear(e, l, p, x, T, yg, err), 0, "%s", err);
                long diff = 0;
                for (long i = 0; i < (long)T * N; i++) diff += yc[i] != yg[i];
                cr_assert_eq(diff, 0, "%s layer %d projection %d: %ld of %ld outputs differ", modes[mi], l, p, diff,
                             (long)T * N);
                compared += (long)T * N;
                aq_qtensor_free(&qw);
                aq_qtensor_free(&qx);
                free(x); free(w16); free(yc); free(yg);
            }
        }
        ae_engine_free(e);
    }
    return compared;
}

Test(gpu_engine, in_situ_projections_match_cpu_exact_path_byte_for_byte) {
    if (ak_device_count() < 1) cr_skip_test("skipped: no CUDA device");
    ae_model *m = real_model();
    ae_calib *cal = fake_calib(m);
    const char *modes[] = {"w4a4-g128", "w4a4-g32", "w4a4-pc", "w8a8", "w4a4-mixed-g128", "atom-g128-o128"};
    long compared = in_situ(m, cal, modes, sizeof modes / sizeof *modes, 37);
    cr_log_info("in situ: %ld projection outputs compared, all byte-identical", compared);
    ae_calib_free(cal);
    ae_model_free(m);
}

/* APEX4_GEMM_PATH=wgmma: the engine's exact route on the Hopper wgmma kernels (M = 150 >= 64: two
 * 128-row tiles, the second partial) gives the CPU reference's bytes too (on a GPU without wgmma the
 * planner's path serves, and the comparison still holds). An unknown path name is refused, named. */
Test(gpu_engine, in_situ_on_the_wgmma_path_and_bad_gemm_path_refused) {
    if (ak_device_count() < 1) cr_skip_test("skipped: no CUDA device");
    ae_model *m = real_model();
    ae_calib *cal = fake_calib(m);
    const char *modes[] = {"w4a4-g128", "w4a4-g32", "w4a4-pc", "w8a8", "w4a4-mixed-g128"};
    cr_assert_eq(setenv("APEX4_GEMM_PATH", "wgmma", 1), 0);
    long compared = in_situ(m, cal, modes, sizeof modes / sizeof *modes, 150);
    cr_log_info("in situ, wgmma path: %ld projection outputs compared, all byte-identical", compared);
    cr_assert_eq(setenv("APEX4_GEMM_PATH", "int5", 1), 0);
    ae_engine_opts o;
    memset(&o, 0, sizeof o);
    o.device = AE_DEV_CUDA;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(aq_mode_parse("w4a4-g128", &o.mode, err), 0, "%s", err);
    o.gemm = AE_GEMM_EXACT;
    o.max_seq = 16;
    ae_engine *e = NULL;
    cr_assert_neq(ae_engine_new(m, &o, NULL, &e, err), 0);
    cr_assert_null(e);
    cr_assert(strstr(err, "APEX4_GEMM_PATH 'int5'"), "%s", err);
    unsetenv("APEX4_GEMM_PATH");
    ae_calib_free(cal);
    ae_model_free(m);
}

/* FP16: the cuda engine (fp16 activations, as HF) against the cpu engine (fp32) on real text-like
 * tokens of a real model: per-position NLL within 2e-2 nats (fp16 rounding of activations), mean
 * within 2e-3 nats. */
Test(gpu_engine, fp16_window_nll_close_to_cpu) {
    if (ak_device_count() < 1) cr_skip_test("skipped: no CUDA device");
    ae_model *m = real_model();
    const int T = 256;
    int tok[256];
    uint64_t s = 5;
    for (int i = 0; i < T; i++) tok[i] = (int)(tu_rand_u64(&s) % 2000) + 3;
    double nc[256], ng[256];
    char err[AX_ERR_LEN] = "";
    for (int d = 0; d < 2; d++) {
        ae_engine_opts o;
        memset(&o, 0, sizeof o);
        o.device = d ? AE_DEV_CUDA : AE_DEV_CPU;
        cr_assert_eq(aq_mode_parse("fp16", &o.mode, err), 0);
        o.gemm = AE_GEMM_FAKE;
        o.nthreads = 4;
        o.max_seq = T;
        ae_engine *e = NULL;
        cr_assert_eq(ae_engine_new(m, &o, NULL, &e, err), 0, "%s", err);
        cr_assert_eq(ae_engine_score_window(e, tok, T, NULL, 0, 0, d ? ng : nc, NULL, NULL, err), 0, "%s", err);
        ae_engine_free(e);
    }
    double sc = 0, sg = 0, worst = 0;
    for (int t = 0; t < T - 1; t++) {
        sc += nc[t];
        sg += ng[t];
        if (fabs(nc[t] - ng[t]) > worst) worst = fabs(nc[t] - ng[t]);
    }
    cr_assert_lt(worst, 2e-2, "worst per-position NLL difference %g", worst);
    cr_assert_lt(fabs(sc - sg) / (T - 1), 2e-3, "mean NLL %g (cpu) vs %g (cuda)", sc / (T - 1), sg / (T - 1));
    ae_model_free(m);
}
