/* test_ppl.c — perplexity / KL divergence / top-1 (eval/ppl.c) and the WikiText-2 loader
 * (datasets/wikitext.c). */
#include <criterion/criterion.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "ax_util.h"
#include "forward.h"
#include "model.h"
#include "ppl.h"
#include "safetensors.h"
#include "testutil.h"
#include "tokenizer.h"
#include "wikitext.h"

static void make_model(char *dir, size_t len, int dim, int hidden, int layers, int vocab) {
    tu_make_model(dir, len, dim, hidden, layers, vocab, 1, 99);
}

static void rm_tree(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static ae_model *load_sub(const char *dir) {
    char p[600], err[AX_ERR_LEN] = "";
    snprintf(p, sizeof p, "%s/m", dir);
    ae_model *m = NULL;
    cr_assert_eq(ae_model_load(p, &m, err), 0, "%s", err);
    return m;
}

/* ---- scoring primitives, expected values by hand -------------------------------------------- */

/* P = softmax(0, 0) = (1/2, 1/2); Q = softmax(0, ln 3) = (1/4, 3/4).
 * KL(P||Q) = 1/2 ln((1/2)/(1/4)) + 1/2 ln((1/2)/(3/4)) = 1/2 ln(4/3) = 0.143841036225890...
 * NLL of target 1 under Q = −ln(3/4) = 0.287682072451780...; argmax P = 0 (tie → lowest id),
 * argmax Q = 1: not the same. */
Test(ppl, score_row_hand_computed) {
    float ref[2] = {0.0f, 0.0f}, q[2] = {0.0f, (float)log(3.0)};
    double lse = ae_logsumexp(ref, 2);
    cr_assert_float_eq(lse, log(2.0), 1e-12);
    float p[2] = {expf((float)(0.0 - lse)), expf((float)(0.0 - lse))};
    double psum = (double)p[0] + p[1];
    double nll, kld;
    int same;
    ae_score_row(ref, lse, psum, p, 0, q, 2, 1, &nll, &kld, &same);
    cr_assert_float_eq(kld, 0.5 * log(4.0 / 3.0), 1e-6);
    cr_assert_float_eq(nll, -log(0.75), 1e-6);
    cr_assert_eq(same, 0);
    /* identical distributions: exactly 0, and the same argmax */
    ae_score_row(ref, lse, psum, p, 0, ref, 2, 0, &nll, &kld, &same);
    cr_assert_eq(kld, 0.0);
    cr_assert_eq(same, 1);
    cr_assert_float_eq(nll, log(2.0), 1e-7);
    /* large logits: no overflow, lse(1000, 1000) = 1000 + ln 2 */
    float big[2] = {1000.0f, 1000.0f};
    cr_assert_float_eq(ae_logsumexp(big, 2), 1000.0 + log(2.0), 1e-9);
}

/* V = 1003 (not a multiple of the 8 lanes): KL, NLL and top-1 against a direct long double
 * computation of softmax, Σ p (log p − log q) and −log q[target]. */
Test(ppl, score_row_matches_long_double_on_random_logits) {
    enum { V = 1003 };
    float *a = malloc(V * sizeof *a), *b = malloc(V * sizeof *b), *p = malloc(V * sizeof *p);
    uint64_t st = 17;
    for (int i = 0; i < V; i++) {
        a[i] = (float)(6 * tu_rand_unit(&st) - 3);
        b[i] = a[i] + (float)(0.5 * tu_rand_unit(&st) - 0.25);
    }
    long double ma = a[0], mb = b[0], za = 0, zb = 0;
    int ia = 0, ib = 0;
    for (int i = 1; i < V; i++) { if (a[i] > ma) { ma = a[i]; ia = i; } if (b[i] > mb) { mb = b[i]; ib = i; } }
    for (int i = 0; i < V; i++) { za += expl(a[i] - ma); zb += expl(b[i] - mb); }
    long double lsa = ma + logl(za), lsb = mb + logl(zb), kl = 0;
    for (int i = 0; i < V; i++) kl += expl(a[i] - lsa) * ((a[i] - lsa) - (b[i] - lsb));
    double lse = ae_logsumexp(a, V), psum = 0;
    cr_assert_float_eq(lse, (double)lsa, 1e-9);
    for (int i = 0; i < V; i++) { p[i] = expf((float)(a[i] - lse)); psum += p[i]; }
    double nll, kld;
    int same;
    ae_score_row(a, lse, psum, p, ia, b, V, 5, &nll, &kld, &same);
    cr_assert_float_eq(kld, (double)kl, 1e-6, "kld %.9g vs %.9Lg", kld, kl);
    cr_assert_float_eq(nll, (double)(lsb - b[5]), 1e-9);
    cr_assert_eq(same, ia == ib);
    free(a); free(b); free(p);
}

/* ---- the protocol on a make-model checkpoint ------------------------------------------------ */

/* 100 tokens, seqlen 32: 100 // 32 = 3 windows, 3 * 31 = 93 predictions (tokens 96..99 unused).
 * Expected ppl computed here from per-window logits of a separate runner with a long double
 * log-softmax: exp(mean over windows w, positions t = 0..30 of lse(l[w,t]) − l[w,t][tok[32w+t+1]]). */
Test(ppl, fp16_ppl_matches_direct_computation_and_kld_is_zero) {
    char dir[256];
    make_model(dir, sizeof dir, 128, 256, 2, 260);
    ae_model *m = load_sub(dir);
    int n = 100, T = 32, V = 260, tok[100];
    uint64_t s = 42;
    for (int i = 0; i < n; i++) tok[i] = (int)(tu_rand_u64(&s) % V);
    aq_mode modes[2];
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(aq_mode_parse("fp16", &modes[0], err), 0);
    cr_assert_eq(aq_mode_parse("w4a4-g64", &modes[1], err), 0);
    ae_ppl_opts o = {modes, 2, T, 0, AE_GEMM_FAKE, 0, 2, NULL, 0, AE_DEV_CPU};
    ae_ppl_result res;
    cr_assert_eq(ae_eval_ppl(m, tok, (size_t)n, &o, &res, err), 0, "%s", err);
    cr_assert_eq(res.windows, 3);
    cr_assert_eq(res.scored, 93);
    cr_assert_eq(res.modes[0].n, 93);
    /* direct computation */
    ae_run_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.mode = modes[0]; ro.max_seq = T; ro.nthreads = 1;
    ae_runner *r = NULL;
    cr_assert_eq(ae_runner_build(m, &ro, NULL, &r, err), 0, "%s", err);
    float *l = malloc((size_t)T * V * sizeof *l);
    long double sum = 0;
    for (int w = 0; w < 3; w++) {
        ae_runner_truncate(r, 0);
        cr_assert_eq(ae_forward(r, tok + w * T, T, 0, 0, l, err), 0, "%s", err);
        for (int t = 0; t < T - 1; t++) {
            long double mx = l[(size_t)t * V], z = 0;
            for (int v = 1; v < V; v++) if (l[(size_t)t * V + v] > mx) mx = l[(size_t)t * V + v];
            for (int v = 0; v < V; v++) z += expl(l[(size_t)t * V + v] - mx);
            sum += mx + logl(z) - l[(size_t)t * V + tok[w * T + t + 1]];
        }
    }
    double want = exp((double)(sum / 93));
    cr_assert_float_eq(res.modes[0].ppl, want, 1e-9 * want, "ppl %.12g vs %.12g", res.modes[0].ppl, want);
    cr_assert_float_eq(exp(res.ref_nll), want, 1e-9 * want);
    /* fp16 against itself: KL exactly 0, top-1 100 % */
    cr_assert_eq(res.modes[0].kld, 0.0);
    cr_assert_eq(res.modes[0].top1, 1.0);
    /* a quantized mode differs: KL > 0 (a KL divergence is >= 0 up to rounding) */
    cr_assert_gt(res.modes[1].kld, 0.0);
    cr_assert_leq(res.modes[1].top1, 1.0);
    /* --max-windows 2 */
    ae_ppl_result r2;
    o.max_windows = 2;
    cr_assert_eq(ae_eval_ppl(m, tok, (size_t)n, &o, &r2, err), 0, "%s", err);
    cr_assert_eq(r2.windows, 2);
    cr_assert_eq(r2.scored, 62);
    ae_ppl_result_free(&r2);
    /* too short a stream */
    o.max_windows = 0;
    cr_assert_neq(ae_eval_ppl(m, tok, 31, &o, &r2, err), 0);
    cr_assert(strstr(err, "fewer than one window"), "%s", err);
    cr_assert_null(r2.modes);
    ae_ppl_result_free(&res);
    free(l);
    ae_runner_free(r);
    ae_model_free(m);
    rm_tree(dir);
}

/* Every standard mode end to end (dim 256 so that Atom's 128 outliers fit), with calibration;
 * fp16 exactly 0 KL; 8-bit clearly closer to fp16 than 4-bit per-channel; kv4 and exact GEMM run. */
Test(ppl, every_standard_mode_runs_end_to_end) {
    char dir[256];
    make_model(dir, sizeof dir, 256, 384, 1, 260);
    ae_model *m = load_sub(dir);
    int n = 130, T = 64, V = 260, tok[130];
    uint64_t s = 7;
    for (int i = 0; i < n; i++) tok[i] = (int)(tu_rand_u64(&s) % V);
    char err[AX_ERR_LEN] = "";
    ae_calib *cal = NULL;
    cr_assert_eq(ae_calibrate(m, tok, 2, T, 2, &cal, err), 0, "%s", err);
    int nm = 0;
    while (aq_standard_modes[nm]) nm++;
    aq_mode *modes = calloc((size_t)nm, sizeof *modes);
    int i_fp16 = -1, i_w8 = -1, i_pc = -1;
    for (int i = 0; i < nm; i++) {
        cr_assert_eq(aq_mode_parse(aq_standard_modes[i], &modes[i], err), 0, "%s", err);
        if (!strcmp(modes[i].name, "fp16")) i_fp16 = i;
        if (!strcmp(modes[i].name, "w8a8")) i_w8 = i;
        if (!strcmp(modes[i].name, "w4a4-pc")) i_pc = i;
    }
    cr_assert(i_fp16 >= 0 && i_w8 >= 0 && i_pc >= 0);
    ae_ppl_opts o = {modes, nm, T, 0, AE_GEMM_FAKE, 0, 2, cal, 0, AE_DEV_CPU};
    ae_ppl_result res;
    cr_assert_eq(ae_eval_ppl(m, tok, (size_t)n, &o, &res, err), 0, "%s", err);
    for (int i = 0; i < nm; i++) {
        ae_ppl_mode_result *r = &res.modes[i];
        cr_assert(r->applicable, "%s: %s", r->mode.name, r->note);
        cr_assert(isfinite(r->ppl) && r->ppl > 1.0, "%s ppl %g", r->mode.name, r->ppl);
        cr_assert_eq(r->n, 126);
        if (i != i_fp16) cr_assert_gt(r->kld, 0.0, "%s", r->mode.name);
    }
    cr_assert_eq(res.modes[i_fp16].kld, 0.0);
    cr_assert_lt(res.modes[i_w8].kld, res.modes[i_pc].kld);
    ae_ppl_result_free(&res);
    /* kv4 (fp16 then gets its own runner) and the exact integer GEMM */
    aq_mode two[2] = {modes[i_fp16], modes[i_pc]};
    ae_ppl_opts o2 = {two, 2, T, 1, AE_GEMM_FAKE, 1, 2, cal, 0, AE_DEV_CPU};
    cr_assert_eq(ae_eval_ppl(m, tok, (size_t)n, &o2, &res, err), 0, "%s", err);
    cr_assert_gt(res.modes[0].kld, 0.0, "fp16 + kv4 must differ from fp16");
    double pc_fake = 0;
    ae_ppl_result_free(&res);
    o2.kv4 = 0;
    cr_assert_eq(ae_eval_ppl(m, tok, (size_t)n, &o2, &res, err), 0, "%s", err);
    pc_fake = res.modes[1].ppl;
    ae_ppl_result_free(&res);
    o2.gemm = AE_GEMM_EXACT;
    cr_assert_eq(ae_eval_ppl(m, tok, (size_t)n, &o2, &res, err), 0, "%s", err);
    /* within 1 %: the two GEMMs differ by fp16 output rounding, cascading through 4-bit rounding
     * boundaries (see test_forward.c exact_gemm_close_to_fake_quant); measured 0.35 % here */
    cr_assert_float_eq(res.modes[1].ppl, pc_fake, 1e-2 * pc_fake, "exact %g vs fake %g", res.modes[1].ppl, pc_fake);
    ae_ppl_result_free(&res);
    free(modes);
    ae_calib_free(cal);
    ae_model_free(m);
    rm_tree(dir);
}

/* A mode that does not fit (Atom o = 128 > K = 64) is reported, and the others still run. */
Test(ppl, inapplicable_mode_is_reported_not_fatal) {
    char dir[256];
    make_model(dir, sizeof dir, 64, 128, 1, 260);
    ae_model *m = load_sub(dir);
    int tok[64];
    uint64_t s = 3;
    for (int i = 0; i < 64; i++) tok[i] = (int)(tu_rand_u64(&s) % 260);
    aq_mode modes[2];
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(aq_mode_parse("atom-g128-o128", &modes[0], err), 0);
    cr_assert_eq(aq_mode_parse("w4a4-g32", &modes[1], err), 0);
    ae_ppl_opts o = {modes, 2, 32, 0, AE_GEMM_FAKE, 0, 1, NULL, 0, AE_DEV_CPU};
    ae_ppl_result res;
    cr_assert_eq(ae_eval_ppl(m, tok, 64, &o, &res, err), 0, "%s", err);
    cr_assert_eq(res.modes[0].applicable, 0);
    cr_assert(strstr(res.modes[0].note, "K = 64"), "%s", res.modes[0].note);
    cr_assert_eq(res.modes[1].applicable, 1);
    cr_assert_gt(res.modes[1].ppl, 1.0);
    ae_ppl_result_free(&res);
    ae_model_free(m);
    rm_tree(dir);
}

/* ---- WikiText-2 ------------------------------------------------------------------------------- */

/* Rows by hand: " \n = A = \n \n B\n x" -> rows "", " = A = \n", "", " B\n", " x" (whitespace-only
 * lines become "", the others keep their "\n" as HF rows do; the last line has none), joined with
 * "\n\n". */
Test(ppl, wikitext_join_by_hand) {
    const char *raw = " \n = A = \n \n B\n x";
    char *j;
    size_t n;
    long rows;
    cr_assert_eq(ad_wikitext_join(raw, strlen(raw), &j, &n, &rows), 0);
    const char *want = "\n\n = A = \n\n\n\n\n B\n\n\n x";
    cr_assert_str_eq(j, want);
    cr_assert_eq(n, strlen(want));
    cr_assert_eq(rows, 5);
    free(j);
}

/* The real test split: sha256 and 4358 lines from shared/data/MANIFEST.md; with the LLaMA-2
 * tokenizer the joined text gives 341,469 ids incl. BOS, first ids 1, 29871, 13, 13, 353, 4755
 * (MANIFEST.md, computed with HF tokenizers and SentencePiece): the joining is the HF one. */
Test(ppl, wikitext_test_split_matches_manifest) {
    char root[AX_PATH_LEN];
    if (tu_data_root(root, sizeof root)) cr_skip_test("skipped: no data root (set APEX4_DATA or ../shared)");
    ad_text t;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ad_wikitext_load("test", &t, err), 0, "%s", err);
    cr_assert_str_eq(t.sha256, "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08");
    cr_assert_eq(t.rows, 4358);
    const char *head = "\n\n = Robert Boulter = \n\n\n\n\n Robert Boulter is";
    cr_assert_eq(strncmp(t.text, head, strlen(head)), 0);
    char tp[AX_PATH_LEN + 64];
    snprintf(tp, sizeof tp, "%s/models/llama2-tokenizer/tokenizer.json", root);
    ae_tokenizer *tok = NULL;
    cr_assert_eq(ae_tokenizer_load(tp, &tok, err), 0, "%s", err);
    int *ids;
    size_t n;
    cr_assert_eq(ae_tokenize(tok, t.text, t.len, 1, &ids, &n, err), 0, "%s", err);
    cr_assert_eq(n, 341469);
    int first[6] = {1, 29871, 13, 13, 353, 4755};
    for (int i = 0; i < 6; i++) cr_assert_eq(ids[i], first[i], "id %d", i);
    free(ids);
    ae_tokenizer_free(tok);
    ad_text_free(&t);
    cr_assert_neq(ad_wikitext_load("nonsense", &t, err), 0);
    cr_assert(strstr(err, "unknown split"), "%s", err);
}

/* ---- the CLI ------------------------------------------------------------------------------------ */

static int run_cmd(const char *cmd, char *out, size_t len) {
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Missing dataset: exit 2, the message names the path looked for and how to get the file. */
Test(ppl, cli_missing_dataset_names_path_and_source) {
    const char *bin = getenv("APEX4_BIN");
    if (!bin) cr_skip_test("skipped: APEX4_BIN not set (run through make test)");
    char tmp[64], cmd[1024], out[8192];
    cr_assert_eq(tu_mkdtemp(tmp, sizeof tmp), 0);
    char sub[128];
    snprintf(sub, sizeof sub, "%s/models", tmp);
    cr_assert_eq(mkdir(sub, 0755), 0);
    snprintf(cmd, sizeof cmd, "APEX4_DATA='%s' '%s' eval ppl --model /nonexistent --modes fp16 2>&1", tmp, bin);
    cr_assert_eq(run_cmd(cmd, out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "apex4 eval ppl:"), "%s", out);
    cr_assert(strstr(out, "/data/wikitext-2-raw/wiki.test.raw"), "%s", out);
    cr_assert(strstr(out, "wikitext-2-raw-v1.zip"), "%s", out);
    snprintf(cmd, sizeof cmd, "'%s' eval ppl --model x --modes w4a4-bogus 2>&1", bin);
    cr_assert_eq(run_cmd(cmd, out, sizeof out), 2, "%s", out);
    snprintf(cmd, sizeof cmd, "'%s' eval ppl --model x --seqlen abc 2>&1", bin);
    cr_assert_eq(run_cmd(cmd, out, sizeof out), 2, "%s", out);
    rm_tree(tmp);
}

/* stories260K through the CLI: seqlen capped to 512 with a notice, two windows, JSON fields. */
Test(ppl, cli_stories260k_two_windows_json) {
    char root[AX_PATH_LEN];
    if (tu_data_root(root, sizeof root)) cr_skip_test("skipped: no data root (set APEX4_DATA or ../shared)");
    const char *bin = getenv("APEX4_BIN");
    if (!bin) cr_skip_test("skipped: APEX4_BIN not set (run through make test)");
    char tmp[64], cmd[AX_PATH_LEN * 2], out[16384], json[128];
    cr_assert_eq(tu_mkdtemp(tmp, sizeof tmp), 0);
    snprintf(json, sizeof json, "%s/r.json", tmp);
    snprintf(cmd, sizeof cmd, "'%s' eval ppl --model '%s/models/stories260K' --modes fp16,w4a4-g32,w8a8 "
             "--max-windows 2 --threads 2 --out '%s' 2>&1", bin, root, json);
    cr_assert_eq(run_cmd(cmd, out, sizeof out), 0, "%s", out);
    cr_assert(strstr(out, "capped to max_position_embeddings 512"), "%s", out);
    char *doc = NULL, err[AX_ERR_LEN];
    size_t dl;
    cr_assert_eq(ax_read_file(json, &doc, &dl, err), 0, "%s", err);
    cJSON *j = cJSON_Parse(doc);
    cr_assert_not_null(j);
    cr_assert_eq(cJSON_GetObjectItem(j, "seqlen")->valueint, 512);
    cr_assert_eq(cJSON_GetObjectItem(j, "windows")->valueint, 2);
    cr_assert_eq(cJSON_GetObjectItem(j, "tokens")->valueint, 2 * 511);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "dataset_sha256")->valuestring,
                     "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08");
    cr_assert_not_null(cJSON_GetObjectItem(j, "git_revision"));
    cJSON *modes = cJSON_GetObjectItem(j, "modes");
    cr_assert_eq(cJSON_GetArraySize(modes), 3);
    cJSON *m0 = cJSON_GetArrayItem(modes, 0);
    cr_assert_str_eq(cJSON_GetObjectItem(m0, "mode")->valuestring, "fp16");
    cr_assert_eq(cJSON_GetObjectItem(m0, "kld")->valuedouble, 0.0);
    double ppl = cJSON_GetObjectItem(m0, "ppl")->valuedouble;
    /* a TinyStories model on Wikipedia text: far worse than its own validation ppl e^1.2968 = 3.66
     * and far better than uniform over its 512 tokens */
    cr_assert(ppl > 3.66 && ppl < 512, "ppl %g", ppl);
    cJSON_Delete(j);
    free(doc);
    rm_tree(tmp);
}

/* ==== hostile input (issue: black-box mutation run against the ASan+UBSan build) ================= */

/* The check on its own, on logits by hand: (T = 4, V = 6) with a NaN at position 2, token 5 and an
 * inf in row 3 (= T-1, not scored: nothing predicts past the window). */
Test(ppl, check_logits_names_mode_window_position_and_token) {
    float l[4 * 6];
    for (int i = 0; i < 24; i++) l[i] = 0.25f * (float)i;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ae_ppl_check_logits(l, 4, 6, "w4a4-g32", 3, 7, "M", err), 0, "%s", err);
    l[3 * 6 + 0] = INFINITY;
    cr_assert_eq(ae_ppl_check_logits(l, 4, 6, "w4a4-g32", 3, 7, "M", err), 0, "row T-1 is not scored");
    l[2 * 6 + 5] = NAN;
    cr_assert_neq(ae_ppl_check_logits(l, 4, 6, "w4a4-g32", 3, 7, "M", err), 0);
    const char *want[] = {"mode w4a4-g32", "window 3 of 7", "position 2", "logits (lm_head output)",
                          "token id 5 is NaN", "model M"};
    for (int i = 0; i < 6; i++) cr_assert(strstr(err, want[i]), "'%s' should mention '%s'", err, want[i]);
    l[1 * 6 + 1] = -INFINITY;
    cr_assert_neq(ae_ppl_check_logits(l, 4, 6, "fp16", 0, 1, "M", err), 0);
    cr_assert(strstr(err, "position 1") && strstr(err, "token id 1 is inf"), "%s", err);
}

/* End to end: a checkpoint file whose embedding row for token X holds a NaN (written into the
 * F16 file at the offset its header gives). Weights are read lazily (model.h): loading succeeds,
 * and the evaluation fails when window 1 (stream index 32 = window 1 with T = 32) reads row X,
 * with an error naming the file, the tensor, NaN and the flat index X * dim + 5 (the NaN's place,
 * by hand). Without X in the stream the same loaded model evaluates: no other row is affected. */
Test(ppl, nan_in_a_checkpoint_is_named_when_read) {
    char dir[256], st[700], err[AX_ERR_LEN] = "";
    tu_make_model(dir, sizeof dir, 128, 256, 1, 260, 0, 99);
    const int X = 259, T = 32;
    snprintf(st, sizeof st, "%s/m/model.safetensors", dir);
    ae_st_file *f = NULL;
    cr_assert_eq(ae_st_open(st, &f, err), 0, "%s", err);
    const ae_st_tensor *t = ae_st_find(f, "model.embed_tokens.weight");
    cr_assert_not_null(t);
    cr_assert_eq(t->dtype, AE_DT_F16);
    long off = (long)(f->data_off + t->begin + 2 * ((size_t)X * 128 + 5));
    ae_st_close(f);
    FILE *fp = fopen(st, "r+b");
    cr_assert_not_null(fp);
    cr_assert_eq(fseek(fp, off, SEEK_SET), 0);
    const unsigned char nan16[2] = {0x00, 0x7E};   /* 0x7E00: fp16 quiet NaN, little-endian */
    cr_assert_eq(fwrite(nan16, 1, 2, fp), 2);
    fclose(fp);
    ae_model *m = load_sub(dir);
    int tok[64];
    uint64_t s = 5;
    for (int i = 0; i < 64; i++) tok[i] = (int)(tu_rand_u64(&s) % 259);   /* never X */
    tok[32] = X;
    aq_mode modes[1];
    cr_assert_eq(aq_mode_parse("w4a4-g32", &modes[0], err), 0);
    ae_ppl_opts o = {modes, 1, T, 0, AE_GEMM_FAKE, 0, 1, NULL, 0, AE_DEV_CPU};
    ae_ppl_result res;
    cr_assert_neq(ae_eval_ppl(m, tok, 64, &o, &res, err), 0);
    char idx[64];
    snprintf(idx, sizeof idx, "flat index %d", X * 128 + 5);
    const char *want[] = {st, "'model.embed_tokens.weight'", "NaN", idx};
    for (int i = 0; i < 4; i++) cr_assert(strstr(err, want[i]), "'%s' should mention '%s'", err, want[i]);
    cr_assert_null(res.modes);
    /* without X the same model evaluates */
    tok[32] = 3;
    cr_assert_eq(ae_eval_ppl(m, tok, 64, &o, &res, err), 0, "%s", err);
    ae_ppl_result_free(&res);
    ae_model_free(m);
    rm_tree(dir);
}

/* exit 2 and every needle in the combined output; `absent` must not appear */
static void expect_cli(const char *cmd, const char *n1, const char *n2, const char *absent) {
    char out[8192];
    cr_assert_eq(run_cmd(cmd, out, sizeof out), 2, "%s -> %s", cmd, out);
    cr_assert(strstr(out, n1), "%s: '%s' should mention '%s'", cmd, out, n1);
    if (n2) cr_assert(strstr(out, n2), "%s: '%s' should mention '%s'", cmd, out, n2);
    if (absent) cr_assert_null(strstr(out, absent), "%s: '%s' should not mention '%s'", cmd, out, absent);
}

/* --out is checked before any work: with an empty data root the dataset would fail first, so a
 * message about --out (and none about WikiText) shows the order. Numbers are range-checked. */
Test(ppl, cli_out_path_and_numbers_checked_before_any_work) {
    const char *bin = getenv("APEX4_BIN");
    if (!bin) cr_skip_test("skipped: APEX4_BIN not set (run through make test)");
    char tmp[64], cmd[1024];
    cr_assert_eq(tu_mkdtemp(tmp, sizeof tmp), 0);
    char sub[128];
    snprintf(sub, sizeof sub, "%s/models", tmp);
    cr_assert_eq(mkdir(sub, 0755), 0);
#define PPL "APEX4_DATA='%s' '%s' eval ppl --model '%s' --modes fp16 "
    snprintf(cmd, sizeof cmd, PPL "--out /nonexistent-dir/ppl.json 2>&1", tmp, bin, tmp);
    expect_cli(cmd, "--out '/nonexistent-dir/ppl.json'", "'/nonexistent-dir' does not exist", "wiki");
    snprintf(cmd, sizeof cmd, PPL "--out '' 2>&1", tmp, bin, tmp);
    expect_cli(cmd, "--out: empty path", NULL, "wiki");
    snprintf(cmd, sizeof cmd, PPL "--out '%s' 2>&1", tmp, bin, tmp, tmp);
    expect_cli(cmd, "--out", "is a directory", "wiki");
    snprintf(cmd, sizeof cmd, PPL "--tokenizer '' 2>&1", tmp, bin, tmp);
    expect_cli(cmd, "--tokenizer: empty path", NULL, "wiki");
    const char *nums[][2] = {
        {"--seqlen 1e20", "--seqlen: expected an integer in [2, 16777216], got '1e20'"},
        {"--seqlen 99999999999999999999", "--seqlen"},
        {"--seqlen 1", "--seqlen"},
        {"--max-windows 0", "--max-windows: expected an integer in [1, 16777216], got '0'"},
        {"--max-windows 2.5", "--max-windows"},
        {"--calib-windows -3", "--calib-windows"},
        {"--threads 5000", "--threads: expected an integer in [1, 1024], got '5000'"},
        {"--threads ''", "--threads"},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        snprintf(cmd, sizeof cmd, PPL "%s 2>&1", tmp, bin, tmp, nums[i][0]);
        expect_cli(cmd, nums[i][1], NULL, "wiki");
    }
#undef PPL
    rm_tree(tmp);
}

/* With the data root: an empty --model says so (not "/config.json"), and the LLaMA-2 tokenizer
 * (32,000 pieces, shared/models/MANIFEST.md) is refused for stories260K (vocab 512) through the
 * same check generate and zeroshot use. */
Test(ppl, empty_model_and_foreign_tokenizer_are_refused) {
    char root[AX_PATH_LEN];
    if (tu_data_root(root, sizeof root)) cr_skip_test("skipped: no data root (set APEX4_DATA or ../shared)");
    char model[AX_PATH_LEN + 64], tokp[AX_PATH_LEN + 64], err[AX_ERR_LEN] = "";
    snprintf(model, sizeof model, "%s/models/stories260K", root);
    snprintf(tokp, sizeof tokp, "%s/models/llama2-tokenizer/tokenizer.json", root);
    ae_ppl_job job;
    memset(&job, 0, sizeof job);
    job.model_dir = "";
    job.modes = "fp16";
    cr_assert_neq(ae_ppl_run_job(&job, NULL, NULL, err), 0);
    cr_assert(strstr(err, "--model: empty path"), "%s", err);
    cr_assert_null(strstr(err, "/config.json"), "%s", err);
    job.model_dir = model;
    job.tokenizer = tokp;
    cr_assert_neq(ae_ppl_run_job(&job, NULL, NULL, err), 0);
    cr_assert(strstr(err, tokp) && strstr(err, "32000 tokens, more than the vocab_size 512"), "%s", err);
    ae_model *m = NULL;
    ae_tokenizer *tok = NULL;
    cr_assert_eq(ae_model_load(model, &m, err), 0, "%s", err);
    cr_assert_eq(ae_tokenizer_load(tokp, &tok, err), 0, "%s", err);
    cr_assert_neq(ae_model_check_tokenizer(m, tok, tokp, err), 0);
    ae_tokenizer_free(tok);
    snprintf(tokp, sizeof tokp, "%s/models/stories260K/tokenizer.json", root);
    cr_assert_eq(ae_tokenizer_load(tokp, &tok, err), 0, "%s", err);
    cr_assert_eq(ae_model_check_tokenizer(m, tok, tokp, err), 0, "%s", err);
    ae_tokenizer_free(tok);
    ae_model_free(m);
}
