/* test_forward.c — the CPU forward pass (eval/forward.c): against an independent float64 LLaMA
 * forward written here (one token at a time, llama2.c run.c semantics with HF rotate-half RoPE),
 * greedy generation against the model author's published output, quantized sites, KV cache,
 * calibration and its cache file, error paths. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ax_util.h"
#include "engine.h"
#include "forward.h"
#include "model.h"
#include "testutil.h"
#include "tokenizer.h"

/* ---- helpers ------------------------------------------------------------------------------- */

/* A random-weight checkpoint (ae_make_model) with shapes chosen for the test: K multiples of 128
 * (every group size applies, and dim 256 > 128 Atom outliers), GQA 4 heads over 2 KV heads. */
static void make_model(char *dir, size_t len, int dim, int hidden, int layers, int vocab) {
    tu_make_model(dir, len, dim, hidden, layers, vocab, 0, 1234);
    snprintf(dir + strlen(dir), len - strlen(dir), "/m");
}

static void rm_tree(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static ae_model *load(const char *dir) {
    ae_model *m = NULL;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ae_model_load(dir, &m, err), 0, "%s", err);
    return m;
}

static ae_runner *runner(const ae_model *m, const char *mode, ae_gemm_kind g, int kv4, int max_seq,
                         const ae_calib *c) {
    ae_run_opts o;
    memset(&o, 0, sizeof o);
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(aq_mode_parse(mode, &o.mode, err), 0, "%s", err);
    o.gemm = g; o.kv4 = kv4; o.nthreads = 2; o.max_seq = max_seq;
    ae_runner *r = NULL;
    cr_assert_eq(ae_runner_build(m, &o, c, &r, err), 0, "%s: %s", mode, err);
    return r;
}

static void tokens_of(int *t, int n, int vocab, uint64_t seed) {
    for (int i = 0; i < n; i++) t[i] = (int)(tu_rand_u64(&seed) % (uint64_t)vocab);
}

/* ---- independent float64 reference forward --------------------------------------------------- */
/* Straight loops, one token at a time, double accumulation, double trig. Quantized modes: weights
 * and every site input go through aq_fakequant (the quant/ reference) — the code under test is the
 * wiring in forward.c, not the quantizer. sumsq (optional, n_layers*4 arrays) accumulates Σx² of
 * each site input. Returns logits [T, vocab] (malloc'd). */
static void fq(const aq_mode *mode, int is_w, double *v, int rows, int K, const int32_t *perm) {
    if (!mode || mode->kind == AQ_KIND_FP16 || (!is_w && !aq_mode_is_integer(mode))) return;
    size_t n = (size_t)rows * K;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    for (size_t i = 0; i < n; i++) a[i] = (float)v[i];
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(aq_fakequant(mode, is_w, a, rows, K, perm, b, "naive", err), 0, "%s", err);
    for (size_t i = 0; i < n; i++) v[i] = b[i];
    free(a); free(b);
}

/* The whole tensor (layer, id) widened to fp32 (ae_model_read_f32); caller frees. */
static float *tw(const ae_model *m, int layer, ae_tensor_id id) {
    size_t r, c;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ae_model_tensor_shape(m, layer, id, &r, &c, NULL, err), 0, "%s", err);
    float *x = malloc(r * c * sizeof *x);
    cr_assert_not_null(x);
    cr_assert_eq(ae_model_read_f32(m, layer, id, 0, r, x, err), 0, "%s", err);
    return x;
}

static double *dmat(const float *w, size_t n) {
    double *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = w[i];
    return d;
}

static void matvec(const double *W, const double *x, double *y, int N, int K) {
    for (int n = 0; n < N; n++) {
        double s = 0;
        for (int k = 0; k < K; k++) s += W[(size_t)n * K + k] * x[k];
        y[n] = s;
    }
}

static void rms(const double *x, const float *w, double *o, int n, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) o[i] = (double)w[i] * x[i] * inv;
}

static void site_acc(double **sumsq, int idx, const double *x, int n) {
    if (!sumsq) return;
    for (int i = 0; i < n; i++) sumsq[idx][i] += x[i] * x[i];
}

static double *naive_forward(const ae_model *m, const int *tok, int T, const aq_mode *mode,
                             int32_t **perm, int kv4, double **sumsq) {
    const ae_config *c = &m->cfg;
    int D = c->dim, H = c->hidden_dim, nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim;
    int qd = nh * hd, kvd = nkv * hd, V = c->vocab_size, NL = c->n_layers;
    double **W = calloc((size_t)NL * 7, sizeof *W);
    float **an = calloc((size_t)NL, sizeof *an), **fn = calloc((size_t)NL, sizeof *fn);
    float *emb = tw(m, -1, AE_T_EMB), *fnorm = tw(m, -1, AE_T_FINAL_NORM), *head = tw(m, -1, AE_T_LM_HEAD);
    for (int l = 0; l < NL; l++) {
        const ae_tensor_id ids[7] = {AE_T_WQ, AE_T_WK, AE_T_WV, AE_T_WO, AE_T_GATE, AE_T_UP, AE_T_DOWN};
        int rows[7] = {qd, kvd, kvd, D, H, H, D}, cols[7] = {D, D, D, qd, D, D, H};
        int site[7] = {0, 0, 0, 1, 2, 2, 3};
        an[l] = tw(m, l, AE_T_ATTN_NORM);
        fn[l] = tw(m, l, AE_T_FFN_NORM);
        for (int i = 0; i < 7; i++) {
            float *src = tw(m, l, ids[i]);
            W[l * 7 + i] = dmat(src, (size_t)rows[i] * cols[i]);
            free(src);
            fq(mode, 1, W[l * 7 + i], rows[i], cols[i], perm ? perm[l * 4 + site[i]] : NULL);
        }
    }
    double *kc = calloc((size_t)NL * T * kvd, sizeof *kc), *vc = calloc((size_t)NL * T * kvd, sizeof *vc);
    double *x = malloc((size_t)D * sizeof *x), *xb = malloc((size_t)(D > qd ? D : qd) * sizeof *xb);
    double *q = malloc((size_t)qd * sizeof *q), *att = malloc((size_t)qd * sizeof *att);
    double *hb = malloc((size_t)H * sizeof *hb), *hb2 = malloc((size_t)H * sizeof *hb2);
    double *tmp = malloc((size_t)(D > H ? D : H) * sizeof *tmp), *sc = malloc((size_t)T * sizeof *sc);
    double *logits = malloc((size_t)T * V * sizeof *logits);
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < D; i++) x[i] = emb[(size_t)tok[t] * D + i];
        for (int l = 0; l < NL; l++) {
            double *k = kc + ((size_t)l * T + t) * kvd, *v = vc + ((size_t)l * T + t) * kvd;
            rms(x, an[l], xb, D, c->rms_eps);
            site_acc(sumsq, l * 4 + 0, xb, D);
            fq(mode, 0, xb, 1, D, perm ? perm[l * 4 + 0] : NULL);
            matvec(W[l * 7 + 0], xb, q, qd, D);
            matvec(W[l * 7 + 1], xb, k, kvd, D);
            matvec(W[l * 7 + 2], xb, v, kvd, D);
            /* rotate-half RoPE: pairs (i, i + hd/2), angle t * theta^(-2i/hd) */
            for (int h = 0; h < nh + nkv; h++) {
                double *z = h < nh ? q + h * hd : k + (h - nh) * hd;
                for (int i = 0; i < hd / 2; i++) {
                    double a = t * pow((double)c->rope_theta, -2.0 * i / hd);
                    double z0 = z[i], z1 = z[i + hd / 2];
                    z[i] = z0 * cos(a) - z1 * sin(a);
                    z[i + hd / 2] = z1 * cos(a) + z0 * sin(a);
                }
            }
            if (kv4)
                for (int h = 0; h < nkv; h++) {
                    float fk[512], fv[512];
                    for (int i = 0; i < hd; i++) { fk[i] = (float)k[h * hd + i]; fv[i] = (float)v[h * hd + i]; }
                    aq_kv4_fakequant(fk, hd);
                    aq_kv4_fakequant(fv, hd);
                    for (int i = 0; i < hd; i++) { k[h * hd + i] = fk[i]; v[h * hd + i] = fv[i]; }
                }
            for (int h = 0; h < nh; h++) {
                int g = h / (nh / nkv);
                double mx = -INFINITY, sum = 0;
                for (int s = 0; s <= t; s++) {
                    const double *ks = kc + ((size_t)l * T + s) * kvd + g * hd;
                    double d = 0;
                    for (int i = 0; i < hd; i++) d += q[h * hd + i] * ks[i];
                    sc[s] = d / sqrt((double)hd);
                    if (sc[s] > mx) mx = sc[s];
                }
                for (int s = 0; s <= t; s++) { sc[s] = exp(sc[s] - mx); sum += sc[s]; }
                for (int i = 0; i < hd; i++) {
                    double o = 0;
                    for (int s = 0; s <= t; s++) o += sc[s] / sum * vc[((size_t)l * T + s) * kvd + g * hd + i];
                    att[h * hd + i] = o;
                }
            }
            site_acc(sumsq, l * 4 + 1, att, qd);
            fq(mode, 0, att, 1, qd, perm ? perm[l * 4 + 1] : NULL);
            matvec(W[l * 7 + 3], att, tmp, D, qd);
            for (int i = 0; i < D; i++) x[i] += tmp[i];
            rms(x, fn[l], xb, D, c->rms_eps);
            site_acc(sumsq, l * 4 + 2, xb, D);
            fq(mode, 0, xb, 1, D, perm ? perm[l * 4 + 2] : NULL);
            matvec(W[l * 7 + 4], xb, hb, H, D);
            matvec(W[l * 7 + 5], xb, hb2, H, D);
            for (int i = 0; i < H; i++) hb[i] = hb[i] / (1.0 + exp(-hb[i])) * hb2[i];
            site_acc(sumsq, l * 4 + 3, hb, H);
            fq(mode, 0, hb, 1, H, perm ? perm[l * 4 + 3] : NULL);
            matvec(W[l * 7 + 6], hb, tmp, D, H);
            for (int i = 0; i < D; i++) x[i] += tmp[i];
        }
        rms(x, fnorm, xb, D, c->rms_eps);
        for (int v = 0; v < V; v++) {
            double s = 0;
            for (int i = 0; i < D; i++) s += (double)head[(size_t)v * D + i] * xb[i];
            logits[(size_t)t * V + v] = s;
        }
    }
    for (int i = 0; i < NL * 7; i++) free(W[i]);
    for (int l = 0; l < NL; l++) { free(an[l]); free(fn[l]); }
    free(an); free(fn); free(emb); free(fnorm); free(head);
    free(W); free(kc); free(vc); free(x); free(xb); free(q); free(att); free(hb); free(hb2); free(tmp); free(sc);
    return logits;
}

/* ||a - b|| / ||b|| over n values */
static double rel_l2(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) { num += (a[i] - b[i]) * (a[i] - b[i]); den += b[i] * b[i]; }
    return sqrt(num / den);
}
static double rel_l2d(const double *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) { num += (a[i] - b[i]) * (a[i] - b[i]); den += b[i] * b[i]; }
    return sqrt(num / den);
}

static float *run_logits(ae_runner *r, const int *tok, int T) {
    int V = ae_runner_model(r)->cfg.vocab_size;
    float *l = malloc((size_t)T * V * sizeof *l);
    char err[AX_ERR_LEN] = "";
    ae_runner_truncate(r, 0);
    cr_assert_eq(ae_forward(r, tok, T, 0, 0, l, err), 0, "%s", err);
    return l;
}

/* ---- tests -------------------------------------------------------------------------------- */

/* The model author's greedy sample (REFERENCE.md: llama2.c run.c, temperature 0, fp32) must come
 * out exactly: 256 new tokens after BOS, decoded. The expected text is read from REFERENCE.md. */
Test(forward, generate_stories260k_matches_published_reference) {
    char root[AX_PATH_LEN], dir[AX_PATH_LEN + 64], ref[AX_PATH_LEN + 128];
    if (tu_data_root(root, sizeof root)) cr_skip_test("skipped: no data root (set APEX4_DATA or ../shared)");
    snprintf(dir, sizeof dir, "%.4000s/models/stories260K", root);
    snprintf(ref, sizeof ref, "%.4100s/REFERENCE.md", dir);
    char *md = NULL, err[AX_ERR_LEN] = "";
    size_t mdlen = 0;
    cr_assert_eq(ax_read_file(ref, &md, &mdlen, err), 0, "%s", err);
    char *a = strstr(md, "```\n");
    cr_assert_not_null(a);
    a += 4;
    char *b = strstr(a, "\n```");
    cr_assert_not_null(b);
    *b = 0;
    cr_assert_eq(strlen(a), 565, "REFERENCE.md says 565 characters");
    ae_model *m = load(dir);
    ae_tokenizer *tok = NULL;
    char tp[AX_PATH_LEN + 128];
    snprintf(tp, sizeof tp, "%.4100s/tokenizer.json", dir);
    cr_assert_eq(ae_tokenizer_load(tp, &tok, err), 0, "%s", err);
    ae_runner *r = runner(m, "fp16", AE_GEMM_FAKE, 0, 512, NULL);
    int bos = 1, out[300], n_out = 0, stop[1] = {1}; /* run.c stops at BOS (id 1) */
    cr_assert_eq(ae_generate(r, &bos, 1, 256, stop, 1, out, &n_out, NULL, NULL, err), 0, "%s", err);
    cr_assert_eq(n_out, 256);
    int seq[301];
    seq[0] = bos;
    memcpy(seq + 1, out, sizeof(int) * (size_t)n_out);
    char *text = ae_detokenize(tok, seq, (size_t)n_out + 1);
    cr_assert_str_eq(text, a);
    free(text);
    ae_runner_free(r);
    ae_tokenizer_free(tok);
    ae_model_free(m);
    free(md);
}

/* stories260K (trained, fp32) logits vs the float64 reference: fp32 rounding only. */
Test(forward, stories260k_logits_match_float64_reference) {
    char root[AX_PATH_LEN], dir[AX_PATH_LEN + 64];
    if (tu_data_root(root, sizeof root)) cr_skip_test("skipped: no data root (set APEX4_DATA or ../shared)");
    snprintf(dir, sizeof dir, "%.4000s/models/stories260K", root);
    ae_model *m = load(dir);
    int T = 40, tok[40];
    tokens_of(tok, T, m->cfg.vocab_size, 7);
    tok[0] = 1;
    double *ref = naive_forward(m, tok, T, NULL, NULL, 0, NULL);
    ae_runner *r = runner(m, "fp16", AE_GEMM_FAKE, 0, 64, NULL);
    float *l = run_logits(r, tok, T);
    double e = rel_l2(l, ref, (size_t)T * m->cfg.vocab_size);
    cr_assert_lt(e, 1e-5, "relative L2 error %g", e);
    free(l); free(ref);
    ae_runner_free(r);
    ae_model_free(m);
}

/* GQA model from make-model: fp16 path vs float64 reference; incremental decoding (chunks through
 * the KV cache) and rewinding give the same logits as one batch. */
Test(forward, make_model_gqa_matches_reference_and_cache_is_consistent) {
    char dir[256];
    make_model(dir, sizeof dir, 256, 384, 2, 300);
    ae_model *m = load(dir);
    int T = 48, V = m->cfg.vocab_size, tok[48];
    tokens_of(tok, T, V, 11);
    double *ref = naive_forward(m, tok, T, NULL, NULL, 0, NULL);
    ae_runner *r = runner(m, "fp16", AE_GEMM_FAKE, 0, 64, NULL);
    float *l = run_logits(r, tok, T);
    double e = rel_l2(l, ref, (size_t)T * V);
    cr_assert_lt(e, 1e-5, "relative L2 error %g", e);
    cr_assert_eq(ae_runner_pos(r), T);
    /* chunks 1 + 16 + 31 */
    float *inc = malloc((size_t)T * V * sizeof *inc);
    char err[AX_ERR_LEN] = "";
    ae_runner_truncate(r, 0);
    cr_assert_eq(ae_forward(r, tok, 1, 0, 0, inc, err), 0, "%s", err);
    cr_assert_eq(ae_forward(r, tok + 1, 16, 1, 0, inc + V, err), 0, "%s", err);
    cr_assert_eq(ae_forward(r, tok + 17, 31, 17, 0, inc + 17 * V, err), 0, "%s", err);
    double d = rel_l2(inc, ref, (size_t)T * V);
    cr_assert_lt(d, 1e-5, "incremental: relative L2 error %g", d);
    /* rewind to 20 and redo the tail with logits only for the last 3 positions */
    ae_runner_truncate(r, 20);
    cr_assert_eq(ae_forward(r, tok + 20, 28, 20, 25, inc, err), 0, "%s", err);
    double d2 = rel_l2(inc, ref + (size_t)45 * V, (size_t)3 * V);
    cr_assert_lt(d2, 1e-5, "after truncate: relative L2 error %g", d2);
    free(inc); free(l); free(ref);
    ae_runner_free(r);
    ae_model_free(m);
    rm_tree(dir);
}

/* Quantized modes: every projection quantized at the right site. The runner must agree with the
 * reference that applies aq_fakequant at the same sites far better than either agrees with fp16
 * (if a site were skipped or quantized twice, the error would be of the quantization's order). */
static void check_mode(const char *name, int kv4) {
    char dir[256];
    make_model(dir, sizeof dir, 256, 384, 2, 300);
    ae_model *m = load(dir);
    int T = 24, V = m->cfg.vocab_size, tok[24];
    tokens_of(tok, T, V, 5);
    aq_mode mode;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(aq_mode_parse(name, &mode, err), 0, "%s", err);
    ae_calib *cal = NULL;
    if (mode.kind == AQ_KIND_ATOM) cr_assert_eq(ae_calibrate(m, tok, 1, T, 2, &cal, err), 0, "%s", err);
    double *ref_q = naive_forward(m, tok, T, &mode, cal ? cal->perm : NULL, kv4, NULL);
    double *ref_f = naive_forward(m, tok, T, NULL, NULL, 0, NULL);
    ae_runner *r = runner(m, name, AE_GEMM_FAKE, kv4, T, cal);
    float *l = run_logits(r, tok, T);
    double e = rel_l2(l, ref_q, (size_t)T * V), qe = rel_l2d(ref_q, ref_f, (size_t)T * V);
    cr_assert_gt(qe, 1e-4, "%s: quantization must change the logits (%g)", name, qe);
    cr_assert_lt(e, qe / 10, "%s%s: runner vs reference %g, quantization effect %g", name, kv4 ? "+kv4" : "", e, qe);
    free(l); free(ref_q); free(ref_f);
    ae_runner_free(r);
    ae_calib_free(cal);
    ae_model_free(m);
    rm_tree(dir);
}
Test(forward, w4a4_g128_sites_match_reference) { check_mode("w4a4-g128", 0); }
Test(forward, w4a16_g128_weight_only_matches_reference) { check_mode("w4a16-g128", 0); }
Test(forward, w4a4_mixed_matches_reference) { check_mode("w4a4-mixed-g128", 0); }
Test(forward, atom_matches_reference_with_calibrated_order) { check_mode("atom-g128-o128", 0); }
Test(forward, fp16_kv4_matches_reference) { check_mode("fp16", 1); }

/* --gemm exact (integer reference GEMM, fp16 outputs) vs fake-quant + sgemm (fp32 outputs): a single
 * GEMM differs by the fp16 rounding of its output (2^-11 relative), but that moves some values of
 * the next site across a 4-bit rounding boundary (one step = amax/7), so differences cascade through
 * the layers: measured ~3-5 % relative on the logits for w4a4 modes (0.7 % for w8a8), against ~26 %
 * for the quantization itself. The bound below (a quarter of the quantization effect) separates
 * "same computation up to rounding" from a wiring error (wrong site, missing scale, transposed W),
 * which is of the order of the quantization effect or larger. */
Test(forward, exact_gemm_close_to_fake_quant) {
    char dir[256];
    make_model(dir, sizeof dir, 256, 384, 1, 300);
    ae_model *m = load(dir);
    int T = 12, V = m->cfg.vocab_size, tok[12];
    tokens_of(tok, T, V, 3);
    ae_runner *rf = runner(m, "w4a4-g128", AE_GEMM_FAKE, 0, T, NULL);
    ae_runner *rx = runner(m, "w4a4-g128", AE_GEMM_EXACT, 0, T, NULL);
    ae_runner *r16 = runner(m, "fp16", AE_GEMM_FAKE, 0, T, NULL);
    float *lf = run_logits(rf, tok, T), *lx = run_logits(rx, tok, T), *l16 = run_logits(r16, tok, T);
    double *df = malloc((size_t)T * V * sizeof *df), *d16 = malloc((size_t)T * V * sizeof *d16);
    for (size_t i = 0; i < (size_t)T * V; i++) { df[i] = lf[i]; d16[i] = l16[i]; }
    double e = rel_l2(lx, df, (size_t)T * V), qe = rel_l2d(df, d16, (size_t)T * V);
    cr_assert_gt(e, 0.0, "exact must differ somewhere (fp16 outputs)");
    cr_assert_lt(e, qe / 4, "exact vs fake %g, quantization effect %g", e, qe);
    free(lf); free(lx); free(l16); free(df); free(d16);
    ae_runner_free(rf); ae_runner_free(rx); ae_runner_free(r16);
    ae_model_free(m);
    rm_tree(dir);
}

/* Calibration: Σx² per site equals the reference's; perm sorts it ascending; cache file round trip
 * and corruption detection. */
Test(forward, calibration_sums_order_and_cache_file) {
    char dir[256];
    make_model(dir, sizeof dir, 256, 384, 2, 300);
    ae_model *m = load(dir);
    int T = 16, nw = 2, V = m->cfg.vocab_size, tok[32];
    tokens_of(tok, T * nw, V, 9);
    char err[AX_ERR_LEN] = "";
    ae_calib *c = NULL;
    cr_assert_eq(ae_calibrate(m, tok, nw, T, 2, &c, err), 0, "%s", err);
    cr_assert_eq(c->tokens, 32);
    const size_t w[4] = {256, 256, 256, 384};
    double **ss = calloc(8, sizeof *ss);
    for (int i = 0; i < 8; i++) ss[i] = calloc(w[i % 4], sizeof(double));
    for (int k = 0; k < nw; k++) free(naive_forward(m, tok + k * T, T, NULL, NULL, 0, ss));
    for (int i = 0; i < 8; i++) {
        cr_assert_eq((size_t)c->width[i % 4], w[i % 4]);
        for (size_t j = 0; j < w[i % 4]; j++)
            cr_assert_leq(fabs(c->sumsq[i][j] - ss[i][j]), 1e-4 * ss[i][j] + 1e-12, "site %d ch %zu: %g vs %g", i,
                          j, c->sumsq[i][j], ss[i][j]);
        int *seen = calloc(w[i % 4], sizeof *seen);
        for (size_t j = 0; j < w[i % 4]; j++) {
            cr_assert(c->perm[i][j] >= 0 && (size_t)c->perm[i][j] < w[i % 4] && !seen[c->perm[i][j]]);
            seen[c->perm[i][j]] = 1;
            if (j) cr_assert_leq(c->sumsq[i][c->perm[i][j - 1]], c->sumsq[i][c->perm[i][j]]);
        }
        free(seen);
    }
    char path[300];
    snprintf(path, sizeof path, "%s/calib.bin", dir);
    cr_assert_eq(ae_calib_save(c, path, err), 0, "%s", err);
    ae_calib *c2 = NULL;
    cr_assert_eq(ae_calib_load(m, path, &c2, err), 0, "%s", err);
    cr_assert_eq(c2->tokens, c->tokens);
    for (int i = 0; i < 8; i++) {
        cr_assert_eq(memcmp(c2->perm[i], c->perm[i], w[i % 4] * 4), 0);
        cr_assert_eq(memcmp(c2->sumsq[i], c->sumsq[i], w[i % 4] * 8), 0);
    }
    ae_calib_free(c2);
    /* flip one byte in the middle: checksum error naming the file */
    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    fseek(f, 100, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, 100, SEEK_SET);
    fputc(ch ^ 0x40, f);
    fclose(f);
    c2 = NULL;
    cr_assert_neq(ae_calib_load(m, path, &c2, err), 0);
    cr_assert_null(c2);
    cr_assert(strstr(err, path) != NULL, "%s", err);
    /* truncated */
    cr_assert_eq(ae_calib_save(c, path, err), 0, "%s", err);
    cr_assert_eq(truncate(path, 50), 0);
    cr_assert_neq(ae_calib_load(m, path, &c2, err), 0);
    cr_assert(strstr(err, "expected") || strstr(err, "not an apex4"), "%s", err);
    for (int i = 0; i < 8; i++) free(ss[i]);
    free(ss);
    ae_calib_free(c);
    ae_model_free(m);
    rm_tree(dir);
}

Test(forward, errors_are_reported_not_crashed) {
    char dir[256];
    make_model(dir, sizeof dir, 128, 256, 1, 300);
    ae_model *m = load(dir);
    char err[AX_ERR_LEN] = "";
    ae_runner *r = runner(m, "fp16", AE_GEMM_FAKE, 0, 8, NULL);
    int tok[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    float *l = malloc(10 * 300 * sizeof *l);
    cr_assert_neq(ae_forward(r, tok, 9, 0, 0, l, err), 0);            /* beyond max_seq 8 */
    cr_assert(strstr(err, "max_seq"), "%s", err);
    cr_assert_neq(ae_forward(r, tok, 2, 3, 0, l, err), 0);            /* pos != cached 0 */
    cr_assert(strstr(err, "truncate"), "%s", err);
    int bad[2] = {5, 300};
    cr_assert_neq(ae_forward(r, bad, 2, 0, 0, l, err), 0);            /* token out of range */
    cr_assert(strstr(err, "index 1"), "%s", err);
    cr_assert_neq(ae_forward(r, tok, 2, 0, 0, NULL, err), 0);         /* logits needed */
    cr_assert_eq(ae_runner_pos(r), 0);
    ae_runner_free(r);
    /* Atom needs calibration; o = 128 does not fit K = 128 */
    ae_run_opts o;
    memset(&o, 0, sizeof o);
    cr_assert_eq(aq_mode_parse("atom-g64-o32", &o.mode, err), 0, "%s", err);
    o.max_seq = 8;
    cr_assert_neq(ae_runner_build(m, &o, NULL, &r, err), 0);
    cr_assert(strstr(err, "calibration"), "%s", err);
    cr_assert_eq(aq_mode_parse("atom-g128-o128", &o.mode, err), 0, "%s", err);
    cr_assert_neq(ae_mode_check(m, &o.mode, err), 0);
    cr_assert(strstr(err, "K = 128"), "%s", err);
    free(l);
    ae_model_free(m);
    rm_tree(dir);
}

/* `apex4 generate` on stories260K prints the reference text (plus a final newline). */
Test(forward, cli_generate_prints_reference) {
    char root[AX_PATH_LEN];
    if (tu_data_root(root, sizeof root)) cr_skip_test("skipped: no data root (set APEX4_DATA or ../shared)");
    const char *bin = getenv("APEX4_BIN");
    if (!bin) cr_skip_test("skipped: APEX4_BIN not set (run through make test)");
    char cmd[AX_PATH_LEN * 2], ref[AX_PATH_LEN + 64], err[AX_ERR_LEN];
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s/models/stories260K' -n 256 --threads 1", bin, root);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    char out[4096];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    cr_assert_eq(pclose(p), 0);
    snprintf(ref, sizeof ref, "%s/models/stories260K/REFERENCE.md", root);
    char *md;
    size_t mdlen;
    cr_assert_eq(ax_read_file(ref, &md, &mdlen, err), 0, "%s", err);
    char *a = strstr(md, "```\n") + 4, *b = strstr(a, "\n```");
    memcpy(b, "\n", 2); /* expected: the text and the newline generate prints after it */
    cr_assert_str_eq(out, a);
    free(md);
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s/models/stories260K' --mode nonsense 2>&1", bin, root);
    p = popen(cmd, "r");
    n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    cr_assert_eq(WEXITSTATUS(pclose(p)), 2);
    cr_assert(strstr(out, "apex4 generate:"), "%s", out);
}

/* ae_exp_shifted: within 3e-7 relative of the double-precision exp over the whole range (Cephes
 * expf claims ~1 ulp = 6e-8 relative; a few ulp allowed); the AVX2 lanes (calls with n >= 8) and the
 * scalar tail (n = 1) give identical bits; underflow to 0, overflow to inf, NaN kept, exp(0) = 1. */
Test(forward, exp_shifted_accuracy_and_vector_scalar_identity) {
    enum { N = 4099 };
    float *x = malloc(N * sizeof *x), *v = malloc(N * sizeof *v), *s1 = malloc(N * sizeof *s1);
    uint64_t st = 5;
    for (int i = 0; i < N; i++) x[i] = (float)(-87.0 + 175.5 * tu_rand_unit(&st));
    x[0] = 0.0f; x[1] = -87.3f; x[2] = 88.7f; x[3] = 1e-8f; x[4] = -0.5f;
    ae_exp_shifted(x, 0.0f, v, N);
    for (int i = 0; i < N; i++) ae_exp_shifted(x + i, 0.0f, s1 + i, 1);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(memcmp(&v[i], &s1[i], sizeof(float)), 0, "x = %.9g: vector %.9g scalar %.9g", x[i], v[i], s1[i]);
        double want = exp((double)x[i]), rel = fabs(v[i] - want) / want;
        if (rel > worst) worst = rel;
    }
    cr_assert_lt(worst, 3e-7, "worst relative error %g", worst);
    cr_assert_eq(v[0], 1.0f);
    /* shift: exp(x - shift) */
    float y[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, o[9];
    ae_exp_shifted(y, 9.0f, o, 9);
    for (int i = 0; i < 9; i++) cr_assert_float_eq(o[i], exp((double)y[i] - 9.0), 3e-7 * exp((double)y[i] - 9.0));
    float e[10] = {-100.0f, 100.0f, NAN, -INFINITY, INFINITY, 0, 0, 0, 0, -1000.0f}, eo[10];
    for (int k = 0; k < 2; k++) { /* k = 0: vector path (n = 10), k = 1: scalar calls */
        if (k == 0) ae_exp_shifted(e, 0.0f, eo, 10);
        else for (int i = 0; i < 10; i++) ae_exp_shifted(e + i, 0.0f, eo + i, 1);
        cr_assert_eq(eo[0], 0.0f);
        cr_assert(isinf(eo[1]) && eo[1] > 0);
        cr_assert(isnan(eo[2]));
        cr_assert_eq(eo[3], 0.0f);
        cr_assert(isinf(eo[4]));
        cr_assert_eq(eo[9], 0.0f);
    }
    free(x); free(v); free(s1);
}

/* ae_calib_obtain: WikiText-2 validation windows, cached: the second call loads the file the first
 * wrote (same path, same sums), and says which split it used. */
Test(forward, calib_obtain_caches_and_reloads) {
    char root[AX_PATH_LEN], dir[AX_PATH_LEN + 64], tp[AX_PATH_LEN + 128];
    if (tu_data_root(root, sizeof root)) cr_skip_test("skipped: no data root (set APEX4_DATA or ../shared)");
    snprintf(dir, sizeof dir, "%.4000s/models/stories260K", root);
    snprintf(tp, sizeof tp, "%.4100s/tokenizer.json", dir);
    ae_model *m = load(dir);
    ae_tokenizer *tok = NULL;
    char err[AX_ERR_LEN] = "", tmp[64], p1[AX_PATH_LEN], p2[AX_PATH_LEN];
    cr_assert_eq(ae_tokenizer_load(tp, &tok, err), 0, "%s", err);
    cr_assert_eq(tu_mkdtemp(tmp, sizeof tmp), 0);
    char *log1 = NULL, *log2 = NULL;
    size_t l1, l2;
    FILE *f1 = open_memstream(&log1, &l1), *f2 = open_memstream(&log2, &l2);
    ae_calib *a = NULL, *b = NULL;
    cr_assert_eq(ae_calib_obtain(m, tok, 64, 3, tmp, 1, f1, &a, p1, err), 0, "%s", err);
    cr_assert_eq(ae_calib_obtain(m, tok, 64, 3, tmp, 1, f2, &b, p2, err), 0, "%s", err);
    fclose(f1);
    fclose(f2);
    cr_assert(strstr(log1, "validation split (train split not available)"), "%s", log1);
    cr_assert(strstr(log1, "cached in"), "%s", log1);
    cr_assert(strstr(log2, "loaded"), "%s", log2);
    cr_assert_str_eq(p1, p2);
    cr_assert(strstr(p1, "/calib-stories260K-") != NULL, "%s", p1);
    cr_assert_eq(a->tokens, 3 * 64);
    cr_assert_eq(b->tokens, 3 * 64);
    for (int i = 0; i < m->cfg.n_layers * 4; i++)
        cr_assert_eq(memcmp(a->sumsq[i], b->sumsq[i], (size_t)a->width[i % 4] * sizeof(double)), 0);
    /* other parameters: another file */
    ae_calib *c = NULL;
    char p3[AX_PATH_LEN];
    cr_assert_eq(ae_calib_obtain(m, tok, 64, 2, tmp, 1, NULL, &c, p3, err), 0, "%s", err);
    cr_assert_str_neq(p3, p1);
    ae_calib_free(a); ae_calib_free(b); ae_calib_free(c);
    free(log1); free(log2);
    ae_tokenizer_free(tok);
    ae_model_free(m);
    rm_tree(tmp);
}

/* Seeded virtual checkpoints: random:<config.json>,seed=S and the checkpoint make-model writes for
 * the same config and seed give bit-identical logits through the cpu engine, FP16 (fp32 compute on
 * the fp16 values) and the integer exact path (w4a4-g32, fp16 weights read directly), on a few
 * tokens, with a multi-token prefill and an incremental step. */
Test(forward, virtual_model_logits_equal_the_written_checkpoint) {
    char dir[256], cfg[600], spec[700], err[AX_ERR_LEN] = "";
    tu_make_model(dir, sizeof dir, 128, 256, 2, 300, 0, 77);   /* writes <dir>/config.json, <dir>/m */
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(spec, sizeof spec, "random:%s,seed=77", cfg);
    char mdir[600];
    snprintf(mdir, sizeof mdir, "%s/m", dir);
    ae_model *mf = load(mdir), *mv = load(spec);
    const char *modes[2] = {"fp16", "w4a4-g32"};
    int tok[9];
    tokens_of(tok, 9, 300, 5);
    for (int mi = 0; mi < 2; mi++) {
        float *lf = malloc(9 * 300 * sizeof(float)), *lv = malloc(9 * 300 * sizeof(float));
        for (int w = 0; w < 2; w++) {
            ae_engine_opts o;
            memset(&o, 0, sizeof o);
            o.device = AE_DEV_CPU;
            cr_assert_eq(aq_mode_parse(modes[mi], &o.mode, err), 0, "%s", err);
            o.gemm = mi ? AE_GEMM_EXACT : AE_GEMM_FAKE;
            o.nthreads = 2;
            o.max_seq = 16;
            ae_engine *e = NULL;
            cr_assert_eq(ae_engine_new(w ? mv : mf, &o, NULL, &e, err), 0, "%s", err);
            float *out = w ? lv : lf;
            cr_assert_eq(ae_engine_forward(e, tok, 8, 0, 0, out, err), 0, "%s", err);
            cr_assert_eq(ae_engine_forward(e, tok + 8, 1, 8, 0, out + 8 * 300, err), 0, "%s", err);
            ae_engine_free(e);
        }
        cr_assert_eq(memcmp(lf, lv, 9 * 300 * sizeof(float)), 0, "%s: logits differ", modes[mi]);
        int finite = 1;
        for (int i = 0; i < 9 * 300; i++) finite &= isfinite(lf[i]) != 0;
        cr_assert(finite);
        free(lf); free(lv);
    }
    ae_model_free(mf);
    ae_model_free(mv);
    rm_tree(dir);
}
