/* test_engine.c — the language-model interface (eval/engine.h): option parsing, the cpu backend
 * against the runner it wraps, window scoring against an independent long-double log-softmax, and
 * the reference store (KL divergence of a model against itself is 0, top-1 agreement 1; against a
 * quantized mode, KL equals Σ p (log p − log q) recomputed here from both engines' logits). The cuda
 * backend's tests run on the device (tests/test_gpu_engine.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "ak.h"
#include "engine.h"
#include "testutil.h"

Test(engine_opts, device_and_gemm_strings) {
    ae_device d;
    ae_gemm_kind g;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ae_device_parse("cpu", "--device", &d, err), 0);
    cr_assert_eq(d, AE_DEV_CPU);
    cr_assert_eq(ae_device_parse("auto", "--device", &d, err), 0);
    cr_assert_eq(d, ak_device_count() > 0 ? AE_DEV_CUDA : AE_DEV_CPU);
    if (ak_device_count() == 0) {
        cr_assert_neq(ae_device_parse("cuda", "--device", &d, err), 0);
        cr_assert(strstr(err, "--device") && strstr(err, "CUDA"), "%s", err);
    }
    cr_assert_neq(ae_device_parse("gpu", "--device", &d, err), 0);
    cr_assert(strstr(err, "cpu, cuda or auto") && strstr(err, "'gpu'"), "%s", err);
    cr_assert_eq(ae_gemm_parse("exact", "--gemm", &g, err), 0);
    cr_assert_eq(g, AE_GEMM_EXACT);
    cr_assert_eq(ae_gemm_parse("fake", "--gemm", &g, err), 0);
    cr_assert_eq(g, AE_GEMM_FAKE);
    cr_assert_neq(ae_gemm_parse("", "--gemm", &g, err), 0);
    cr_assert(strstr(err, "--gemm"), "%s", err);
}

static ae_model *small_model(char *dir, size_t len) {
    tu_make_model(dir, len, 128, 256, 2, 300, 0, 7);
    char p[512], err[AX_ERR_LEN] = "";
    snprintf(p, sizeof p, "%s/m", dir);
    ae_model *m = NULL;
    cr_assert_eq(ae_model_load(p, &m, err), 0, "%s", err);
    return m;
}

static ae_engine *cpu_engine(const ae_model *m, const char *mode, int T) {
    ae_engine_opts o;
    memset(&o, 0, sizeof o);
    o.device = AE_DEV_CPU;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(aq_mode_parse(mode, &o.mode, err), 0, "%s", err);
    o.gemm = AE_GEMM_FAKE;
    o.nthreads = 1;
    o.max_seq = T;
    ae_engine *e = NULL;
    cr_assert_eq(ae_engine_new(m, &o, NULL, &e, err), 0, "%s", err);
    return e;
}

/* The cpu engine is the runner: the same logits bit for bit, and the same cache bookkeeping. */
Test(engine_cpu, forward_is_the_runner_bit_for_bit) {
    char dir[256];
    ae_model *m = small_model(dir, sizeof dir);
    const int T = 24, V = 300;
    int tok[24];
    uint64_t s = 3;
    for (int i = 0; i < T; i++) tok[i] = (int)(tu_rand_u64(&s) % V);
    ae_engine *e = cpu_engine(m, "w4a4-g64", T);
    ae_run_opts ro;
    memset(&ro, 0, sizeof ro);
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(aq_mode_parse("w4a4-g64", &ro.mode, err), 0);
    ro.max_seq = T;
    ro.nthreads = 1;
    ae_runner *r = NULL;
    cr_assert_eq(ae_runner_build(m, &ro, NULL, &r, err), 0, "%s", err);
    float *a = malloc(sizeof(float) * T * V), *b = malloc(sizeof(float) * T * V);
    cr_assert_eq(ae_engine_forward(e, tok, T, 0, 0, a, err), 0, "%s", err);
    cr_assert_eq(ae_engine_pos(e), T);
    cr_assert_eq(ae_forward(r, tok, T, 0, 0, b, err), 0, "%s", err);
    cr_assert_eq(memcmp(a, b, sizeof(float) * T * V), 0, "engine and runner logits differ");
    /* incrementally (10 then 14 tokens): the same function, up to sgemm rounding (OpenBLAS picks its
     * blocking by the row count, so on some CPUs the bits differ; seen on a 16-core x86 host) */
    ae_engine_truncate(e, 0);
    cr_assert_eq(ae_engine_forward(e, tok, 10, 0, 0, a, err), 0, "%s", err);
    cr_assert_eq(ae_engine_forward(e, tok + 10, T - 10, 10, 0, a + 10 * V, err), 0, "%s", err);
    for (int i = 0; i < T * V; i++) cr_assert(fabsf(a[i] - b[i]) <= 1e-3f * (1 + fabsf(b[i])), "logit %d: %g vs %g", i, a[i], b[i]);
    ae_engine_truncate(e, 5);
    cr_assert_eq(ae_engine_pos(e), 5);
    cr_assert_neq(ae_engine_forward(e, tok, 2, 0, 0, a, err), 0, "pos 0 with 5 cached must fail");
    char desc[160];
    ae_engine_describe(e, desc, sizeof desc);
    cr_assert(strstr(desc, "cpu"), "%s", desc);
    cr_assert_eq(ae_engine_peak_bytes(e), 0);
    free(a); free(b);
    ae_runner_free(r);
    ae_engine_free(e);
    ae_model_free(m);
}

/* nll from score_window against a long-double log-softmax of the engine's own logits; KL of the
 * model against itself through the store is exactly the formula's value on identical inputs (0),
 * top-1 agreement 1; against w4a4-g64, KL recomputed here in long double from both logits. */
Test(engine_cpu, score_window_and_reference_store) {
    char dir[256];
    ae_model *m = small_model(dir, sizeof dir);
    const int T = 20, V = 300, NW = 2;
    int tok[40];
    uint64_t s = 11;
    for (int i = 0; i < T * NW; i++) tok[i] = (int)(tu_rand_u64(&s) % V);
    ae_engine *ref = cpu_engine(m, "fp16", T), *q = cpu_engine(m, "w4a4-g64", T);
    char err[AX_ERR_LEN] = "";
    ae_refstore *rs = NULL;
    cr_assert_eq(ae_refstore_new(ref, NW, T, &rs, err), 0, "%s", err);
    double nll[20], kld[20];
    int same[20];
    float *lr = malloc(sizeof(float) * T * V), *lq = malloc(sizeof(float) * T * V);
    for (int w = 0; w < NW; w++) {
        const int *tw = tok + w * T;
        cr_assert_eq(ae_engine_score_window(ref, tw, T, rs, w, 1, nll, NULL, NULL, err), 0, "%s", err);
        ae_engine_truncate(ref, 0);
        cr_assert_eq(ae_engine_forward(ref, tw, T, 0, 0, lr, err), 0, "%s", err);
        for (int t = 0; t < T - 1; t++) {
            const float *l = lr + (size_t)t * V;
            long double mx = l[0], z = 0;
            for (int v = 1; v < V; v++) if (l[v] > mx) mx = l[v];
            for (int v = 0; v < V; v++) z += expl((long double)l[v] - mx);
            long double want = mx + logl(z) - l[tw[t + 1]];
            cr_assert(fabsl((long double)nll[t] - want) < 1e-9L * (1 + fabsl(want)), "w %d t %d: %.12f vs %.12Lf",
                      w, t, nll[t], want);
        }
    }
    /* itself against the store */
    cr_assert_eq(ae_engine_score_window(ref, tok, T, rs, 0, 0, nll, kld, same, err), 0, "%s", err);
    for (int t = 0; t < T - 1; t++) {
        cr_assert(fabs(kld[t]) < 1e-6, "self-KL at %d = %g", t, kld[t]);
        cr_assert_eq(same[t], 1);
    }
    /* a quantized mode against the store, window 1 */
    const int *tw = tok + T;
    cr_assert_eq(ae_engine_score_window(q, tw, T, rs, 1, 0, nll, kld, same, err), 0, "%s", err);
    ae_engine_truncate(ref, 0);
    cr_assert_eq(ae_engine_forward(ref, tw, T, 0, 0, lr, err), 0, "%s", err);
    ae_engine_truncate(q, 0);
    cr_assert_eq(ae_engine_forward(q, tw, T, 0, 0, lq, err), 0, "%s", err);
    int differ = 0;
    for (int t = 0; t < T - 1; t++) {
        const float *a = lr + (size_t)t * V, *b = lq + (size_t)t * V;
        long double ma = a[0], mb = b[0], za = 0, zb = 0;
        int aa = 0, ab = 0;
        for (int v = 1; v < V; v++) { if (a[v] > ma) { ma = a[v]; aa = v; } if (b[v] > mb) { mb = b[v]; ab = v; } }
        for (int v = 0; v < V; v++) { za += expl(a[v] - ma); zb += expl(b[v] - mb); }
        long double la = ma + logl(za), lb = mb + logl(zb), k = 0;
        for (int v = 0; v < V; v++) k += expl(a[v] - la) * ((a[v] - la) - (b[v] - lb));
        cr_assert(fabsl((long double)kld[t] - k) < 1e-5L + 1e-4L * fabsl(k), "t %d: %.9f vs %.9Lf", t, kld[t], k);
        cr_assert_eq(same[t], aa == ab, "t %d", t);
        differ += k > 1e-6L;
    }
    cr_assert_gt(differ, 0, "w4a4-g64 logits should differ from fp16");
    /* bad window / foreign shape */
    cr_assert_neq(ae_engine_score_window(q, tw, T, rs, 2, 0, nll, kld, same, err), 0);
    cr_assert(strstr(err, "window 2"), "%s", err);
    /* the store outlives the engine that filled it */
    ae_engine_free(ref);
    ae_refstore_free(rs);
    free(lr); free(lq);
    ae_engine_free(q);
    ae_model_free(m);
}

/* loglik_packed: every scored position equals log softmax of a fresh full forward of its sequence
 * (computed here in long double), whatever prefix the engine reused from the sequence before — to
 * float rounding: OpenBLAS picks its sgemm blocking by the row count, so a continuation run on a
 * cached context rounds differently from the whole sequence in one batch (seen: 5e-9 relative). */
Test(engine_cpu, loglik_packed_matches_fresh_forwards) {
    char dir[256];
    ae_model *m = small_model(dir, sizeof dir);
    const int V = 300;
    /* three sequences: a context + two continuations sharing it, then an unrelated one */
    int ctx[9] = {1, 17, 250, 3, 99, 42, 7, 7, 120};
    int toks[64], off[5], tg[64];
    int n = 0, ns = 0;
    off[0] = 0;
    int conts[3][3] = {{5, 6, 9}, {5, 8, 2}, {200, 201, 202}};
    for (int c = 0; c < 3; c++) {
        int L = c < 2 ? 9 : 4;
        for (int j = 0; j < L; j++) toks[n + j] = c < 2 ? ctx[j] : 30 + j;
        for (int j = 0; j < 3; j++) toks[n + L + j] = conts[c][j];
        for (int j = 0; j < L + 3; j++) tg[n + j] = -1;
        for (int j = L - 1; j < L + 2; j++) tg[n + j] = toks[n + j + 1];
        tg[n + L + 2] = 11;   /* the last token scored against a caller-given id */
        n += L + 3;
        off[++ns] = n;
    }
    double lp[64];
    int gr[64];
    for (int j = 0; j < n; j++) { lp[j] = 99; gr[j] = 7; }
    ae_engine *e = cpu_engine(m, "w4a4-g64", 32);
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ae_engine_loglik_packed(e, toks, off, ns, tg, lp, gr, err), 0, "%s", err);
    ae_engine *f = cpu_engine(m, "w4a4-g64", 32);
    float *l = malloc(sizeof(float) * 32 * V);
    for (int i = 0; i < ns; i++) {
        int L = off[i + 1] - off[i];
        ae_engine_truncate(f, 0);
        cr_assert_eq(ae_engine_forward(f, toks + off[i], L, 0, 0, l, err), 0, "%s", err);
        for (int j = 0; j < L; j++) {
            int k = off[i] + j;
            if (tg[k] < 0) { cr_assert_eq(lp[k], 99); cr_assert_eq(gr[k], 7); continue; }
            const float *r = l + (size_t)j * V;
            long double mx = r[0], z = 0;
            int am = 0;
            for (int v = 1; v < V; v++) if (r[v] > mx) { mx = r[v]; am = v; }
            for (int v = 0; v < V; v++) z += expl(r[v] - mx);
            long double want = r[tg[k]] - (mx + logl(z));
            cr_assert(fabsl(lp[k] - want) < 1e-6L * (1 + fabsl(want)), "seq %d pos %d: %.12f vs %.12Lf", i, j, lp[k], want);
            if (fabsl(r[am] - r[tg[k]]) > 1e-4L) cr_assert_eq(gr[k], am == tg[k]);
        }
    }
    /* bad input */
    int bad_off[2] = {0, 40};
    cr_assert_neq(ae_engine_loglik_packed(e, toks, bad_off, 1, tg, lp, gr, err), 0);
    cr_assert(strstr(err, "sequence 0"), "%s", err);
    free(l);
    ae_engine_free(e);
    ae_engine_free(f);
    ae_model_free(m);
}

/* ae_engine_score_windows on the cpu backend (no layer-major there): n windows at once equal n calls
 * of ae_engine_score_window, array by array; the engine reports itself not layer-major; bad calls
 * (n < 1, windows past the store) are refused. */
Test(engine_cpu, score_windows_equals_window_by_window) {
    char dir[256];
    ae_model *m = small_model(dir, sizeof dir);
    const int T = 16, V = 300, NW = 3;
    int tok[48];
    uint64_t s = 5;
    for (int i = 0; i < T * NW; i++) tok[i] = (int)(tu_rand_u64(&s) % V);
    ae_engine *ref = cpu_engine(m, "fp16", T), *q = cpu_engine(m, "w4a4-g64", T);
    cr_assert_eq(ae_engine_layer_major(ref), 0);
    char err[AX_ERR_LEN] = "";
    ae_refstore *rs = NULL;
    cr_assert_eq(ae_refstore_new(ref, NW, T, &rs, err), 0, "%s", err);
    double a_nll[45], b_nll[45], a_kld[45], b_kld[45];
    int a_same[45], b_same[45];
    cr_assert_eq(ae_engine_score_windows(ref, tok, NW, T, rs, 0, 1, a_nll, NULL, NULL, err), 0, "%s", err);
    for (int w = 0; w < NW; w++)
        cr_assert_eq(ae_engine_score_window(ref, tok + w * T, T, NULL, 0, 0, b_nll + w * (T - 1), NULL, NULL, err), 0,
                     "%s", err);
    cr_assert_eq(memcmp(a_nll, b_nll, sizeof(double) * NW * (T - 1)), 0);
    cr_assert_eq(ae_engine_score_windows(q, tok, NW, T, rs, 0, 0, a_nll, a_kld, a_same, err), 0, "%s", err);
    for (int w = 0; w < NW; w++)
        cr_assert_eq(ae_engine_score_window(q, tok + w * T, T, rs, w, 0, b_nll + w * (T - 1), b_kld + w * (T - 1),
                                            b_same + w * (T - 1), err), 0, "%s", err);
    cr_assert_eq(memcmp(a_nll, b_nll, sizeof a_nll), 0);
    cr_assert_eq(memcmp(a_kld, b_kld, sizeof a_kld), 0);
    cr_assert_eq(memcmp(a_same, b_same, sizeof a_same), 0);
    cr_assert_eq(ae_engine_pos(q), 0, "scoring leaves an empty cache");
    cr_assert_neq(ae_engine_score_windows(q, tok, 0, T, rs, 0, 0, a_nll, a_kld, a_same, err), 0);
    cr_assert_neq(ae_engine_score_windows(q, tok, 2, T, rs, 2, 0, a_nll, a_kld, a_same, err), 0);
    cr_assert(strstr(err, "window"), "%s", err);
    ae_refstore_free(rs);
    ae_engine_free(ref);
    ae_engine_free(q);
    ae_model_free(m);
}
