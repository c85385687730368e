/* test_job.c — the job policy of the evaluation commands (eval/job.h): the calibration cache folder
 * rule and window length, one calibration cache shared by eval ppl, eval zeroshot and generate (and
 * --calib-windows honoured by each), the results envelope's fields and types, errors that name the
 * model folder or tokenizer file, greedy decoding through the engine against forward.c's
 * ae_generate, and --device on every command's CLI. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "ak.h"
#include "ax_util.h"
#include "engine.h"
#include "job.h"
#include "ppl.h"
#include "testutil.h"
#include "zeroshot.h"

/* ---- helpers ----------------------------------------------------------------------------------- */
static void rm_rf(const char *dir) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* Run a shell command, stdout + stderr into out; the exit status. */
static int run_capture(const char *cmd, char *out, size_t len) {
    char full[8192];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, len - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Names of the files "calib-*.bin" in dir: their count, the first into first [len]. */
static int calib_files(const char *dir, char *first, size_t len) {
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "%s", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (!strncmp(e->d_name, "calib-", 6) && l > 4 && !strcmp(e->d_name + l - 4, ".bin")) {
            if (n++ == 0) snprintf(first, len, "%s/%s", dir, e->d_name);
        }
    }
    closedir(d);
    return n;
}

static const cJSON *key(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static cJSON *read_json(const char *path) {
    char *text, err[AX_ERR_LEN];
    size_t len;
    cr_assert_eq(ax_read_file(path, &text, &len, err), 0, "%s", err);
    cJSON *j = cJSON_Parse(text);
    free(text);
    cr_assert_not_null(j, "%s parses", path);
    return j;
}

/* max_position_embeddings of a checkpoint, read from its config.json here (not through ae_model) */
static int config_max_pos(const char *model) {
    char p[2 * AX_PATH_LEN];
    snprintf(p, sizeof p, "%.4150s/config.json", model);
    cJSON *c = read_json(p);
    int v = key(c, "max_position_embeddings")->valueint;
    cJSON_Delete(c);
    return v;
}

/* ---- the cache folder rule and the window length ------------------------------------------------ */
/* Expected folders written out by hand from the rule in job.h. */
Test(job_policy, calib_dir_rule) {
    char d[AX_PATH_LEN];
    ae_job_calib_dir("/a/b/results.json", NULL, d, sizeof d);
    cr_expect_str_eq(d, "/a/b");
    ae_job_calib_dir("runs/r.json", NULL, d, sizeof d);
    cr_expect_str_eq(d, "runs");
    ae_job_calib_dir("r.json", NULL, d, sizeof d);
    cr_expect_str_eq(d, ".");
    ae_job_calib_dir("/r.json", NULL, d, sizeof d);
    cr_expect_str_eq(d, "/");
    ae_job_calib_dir(NULL, NULL, d, sizeof d);
    cr_expect_str_eq(d, ".");
    ae_job_calib_dir("/a/b/results.json", "/cache", d, sizeof d);   /* --calib-dir wins */
    cr_expect_str_eq(d, "/cache");
    ae_job_calib_dir("/a/b/results.json", "", d, sizeof d);         /* empty: the rule */
    cr_expect_str_eq(d, "/a/b");
}

/* min(2048, max_position_embeddings): 128 for tu_make_model's config (max_position_embeddings 128,
 * tests/testutil.h). */
Test(job_policy, calib_seqlen_is_capped_by_the_model) {
    char dir[64], m[128], err[AX_ERR_LEN] = "";
    tu_make_model(dir, sizeof dir, 128, 256, 1, 300, 1, 5);
    snprintf(m, sizeof m, "%s/m", dir);
    ae_model *mod;
    cr_assert_eq(ae_model_load(m, &mod, err), 0, "%s", err);
    cr_expect_eq(ae_job_calib_seqlen(mod), 128);
    mod->cfg.max_pos = 4096;   /* a long-context model: Atom's 2048 */
    cr_expect_eq(ae_job_calib_seqlen(mod), 2048);
    mod->cfg.max_pos = 128;
    ae_model_free(mod);
    rm_rf(dir);
}

/* ---- one calibration for the three commands ----------------------------------------------------- */
/* eval ppl (with --seqlen 256, unlike the calibration's window), eval zeroshot and generate, given
 * the same model and the same folder (--out's for ppl and zeroshot, --calib-dir for generate, which
 * has no --out), use one cache file: ppl computes it, zeroshot and generate load it; the results
 * files record the same calibration (seqlen = min(2048, max_position_embeddings of config.json),
 * 128 windows). --calib-windows 3 on zeroshot and generate picks another file, with 3 windows. */
Test(job_policy, one_calibration_cache_for_ppl_zeroshot_generate, .timeout = 600) {
    char root[AX_PATH_LEN], model[AX_PATH_LEN + 64], tmp[64], out[AX_PATH_LEN], err[AX_ERR_LEN];
    if (tu_data_root(root, sizeof root)) { cr_skip_test("skipped: no data root (set APEX4_DATA)"); return; }
    const char *bin = getenv("APEX4_BIN");
    if (!bin) { cr_skip_test("skipped: APEX4_BIN not set (run through make test)"); return; }
    snprintf(model, sizeof model, "%s/models/stories260K", root);
    const int seqlen = config_max_pos(model) < 2048 ? config_max_pos(model) : 2048;
    cr_assert_eq(tu_mkdtemp(tmp, sizeof tmp), 0);

    /* eval ppl */
    char *plog = NULL;
    size_t plen = 0;
    FILE *lf = open_memstream(&plog, &plen);
    ae_ppl_job pj;
    memset(&pj, 0, sizeof pj);
    pj.model_dir = model;
    pj.modes = "fp16,atom-g32-o8";
    snprintf(out, sizeof out, "%s/ppl.json", tmp);
    pj.out = out;
    pj.seqlen = 256;
    pj.max_windows = 1;
    pj.nthreads = 2;
    pj.device = AE_DEV_CPU;
    cr_assert_eq(ae_ppl_run_job(&pj, NULL, lf, err), 0, "%s", err);
    fclose(lf);
    char cache[AX_PATH_LEN], line[AX_PATH_LEN + 64];
    cr_assert_eq(calib_files(tmp, cache, sizeof cache), 1, "one cache file after ppl");
    snprintf(line, sizeof line, "calibration: cached in %s", cache);
    cr_expect(strstr(plog, line), "ppl log: %s", plog);
    cJSON *pd = read_json(out);
    const cJSON *pc = key(pd, "calibration");
    cr_assert(cJSON_IsObject(pc));
    cr_expect_str_eq(key(pc, "cache")->valuestring, cache);
    cr_expect_eq(key(pc, "seqlen")->valueint, seqlen);
    cr_expect_eq(key(pc, "windows")->valueint, AE_JOB_CALIB_WINDOWS);
    cr_expect_eq(key(pc, "windows")->valueint, 128);   /* Atom's 128 samples */
    cr_expect_eq(key(pc, "tokens")->valuedouble, 128.0 * seqlen);
    cr_expect_eq(key(pd, "seqlen")->valueint, 256, "the evaluation's own --seqlen is kept");

    /* eval zeroshot */
    char *zlog = NULL;
    size_t zlen = 0;
    lf = open_memstream(&zlog, &zlen);
    const char *tasks[1] = {"piqa"}, *modes[1] = {"atom-g32-o8"};
    ae_zs_opts zo;
    memset(&zo, 0, sizeof zo);
    zo.model_dir = model;
    zo.tasks = tasks; zo.n_tasks = 1;
    zo.modes = modes; zo.n_modes = 1;
    zo.limit = 2;
    zo.nthreads = 2;
    snprintf(out, sizeof out, "%s/zs.json", tmp);
    zo.out = out;
    zo.log = lf;
    cJSON *zd = NULL;
    cr_assert_eq(ae_zs_run(&zo, &zd, err), 0, "%s", err);
    fclose(lf);
    snprintf(line, sizeof line, "calibration: loaded %s", cache);
    cr_expect(strstr(zlog, line), "zeroshot log: %s", zlog);
    const cJSON *zc = key(zd, "calibration");
    cr_assert(cJSON_IsObject(zc));
    cr_expect_str_eq(key(zc, "cache")->valuestring, cache);
    cr_expect_eq(key(zc, "seqlen")->valueint, seqlen);
    cr_expect_eq(key(zc, "windows")->valueint, 128);

    /* generate (CLI) */
    char cmd[3 * AX_PATH_LEN], gout[16384];
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --mode atom-g32-o8 -n 4 --threads 1 --calib-dir '%s'",
             bin, model, tmp);
    cr_assert_eq(run_capture(cmd, gout, sizeof gout), 0, "%s", gout);
    cr_expect(strstr(gout, line), "generate output: %s", gout);
    char other[AX_PATH_LEN];
    cr_expect_eq(calib_files(tmp, other, sizeof other), 1, "still one cache file");

    /* --calib-windows 3: another cache file, 3 windows, on zeroshot and then generate */
    char *z3log = NULL;
    size_t z3len = 0;
    lf = open_memstream(&z3log, &z3len);
    zo.log = lf;
    zo.calib_windows = 3;
    cJSON *z3 = NULL;
    cr_assert_eq(ae_zs_run(&zo, &z3, err), 0, "%s", err);
    fclose(lf);
    const cJSON *z3c = key(z3, "calibration");
    cr_expect_eq(key(z3c, "windows")->valueint, 3);
    cr_expect_eq(key(z3c, "tokens")->valuedouble, 3.0 * seqlen);
    cr_expect_str_neq(key(z3c, "cache")->valuestring, cache);
    cr_expect(strstr(z3log, "calibration: cached in"), "%s", z3log);
    cr_expect_eq(calib_files(tmp, other, sizeof other), 2);
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --mode atom-g32-o8 -n 2 --threads 1 --calib-dir '%s' "
             "--calib-windows 3", bin, model, tmp);
    cr_assert_eq(run_capture(cmd, gout, sizeof gout), 0, "%s", gout);
    snprintf(line, sizeof line, "calibration: loaded %s", key(z3c, "cache")->valuestring);
    cr_expect(strstr(gout, line), "generate --calib-windows 3: %s", gout);
    cr_expect_eq(calib_files(tmp, other, sizeof other), 2);

    cJSON_Delete(z3);
    cJSON_Delete(zd);
    cJSON_Delete(pd);
    free(plog); free(zlog); free(z3log);
    rm_rf(tmp);
}

/* ---- the envelope ------------------------------------------------------------------------------ */
static ae_job *open_stories(const char *root, int nthreads, ae_gemm_kind gemm, int kv4) {
    char model[AX_PATH_LEN + 64], err[AX_ERR_LEN] = "";
    snprintf(model, sizeof model, "%s/models/stories260K", root);
    ae_job_opts o;
    memset(&o, 0, sizeof o);
    o.model_dir = model;
    o.nthreads = nthreads;
    o.gemm = gemm;
    o.kv4 = kv4;
    o.device = AE_DEV_CPU;
    ae_job *j = NULL;
    cr_assert_eq(ae_job_open(&o, &j, err), 0, "%s", err);
    return j;
}

/* Fields and JSON types as job.h lists them; values from the options given here. */
Test(job_envelope, fields_and_types) {
    char root[AX_PATH_LEN], tokp[AX_PATH_LEN + 128], err[AX_ERR_LEN] = "";
    if (tu_data_root(root, sizeof root)) { cr_skip_test("skipped: no data root (set APEX4_DATA)"); return; }
    ae_job *j = open_stories(root, 3, AE_GEMM_EXACT, 1);
    /* before any engine: the cpu backend's description from the thread count */
    cJSON *d = ae_job_envelope(j, "eval test", NULL);
    cr_assert_not_null(d);
    cr_expect_str_eq(key(d, "command")->valuestring, "eval test");
    cr_expect_str_eq(key(d, "model")->valuestring, "stories260K");
    cr_expect(cJSON_IsString(key(d, "model_dir")) && strstr(key(d, "model_dir")->valuestring, "stories260K"));
    cr_expect(cJSON_IsString(key(d, "model_dtype")));
    snprintf(tokp, sizeof tokp, "%s/models/stories260K/tokenizer.json", root);
    cr_expect_str_eq(key(d, "tokenizer")->valuestring, tokp);
    cr_expect_str_eq(key(d, "device")->valuestring, "cpu");
    cr_expect_str_eq(key(d, "backend")->valuestring, "cpu (3 threads)");
    cr_expect_str_eq(key(d, "gemm")->valuestring, "exact");
    cr_expect(cJSON_IsTrue(key(d, "kv4")));
    cr_expect_null(key(d, "gpu"), "no gpu field on cpu");
    cr_expect_null(key(d, "calibration"), "no Atom mode: no calibration");
    cJSON_Delete(d);
    /* after an engine: its description; an explicit backend string wins */
    aq_mode fp;
    cr_assert_eq(aq_mode_parse("fp16", &fp, err), 0);
    ae_engine *e = NULL;
    cr_assert_eq(ae_job_engine_new(j, &fp, 16, &e, err), 0, "%s", err);
    char desc[160];
    ae_engine_describe(e, desc, sizeof desc);
    cr_expect_str_eq(j->backend, desc);
    d = ae_job_envelope(j, "eval test", NULL);
    cr_expect_str_eq(key(d, "backend")->valuestring, desc);
    cJSON_Delete(d);
    d = ae_job_envelope(j, "eval test", "cpu (7 threads)");
    cr_expect_str_eq(key(d, "backend")->valuestring, "cpu (7 threads)");
    cJSON_Delete(d);
    ae_engine_free(e);
    /* a cuda job records the GPU as backend and gpu (no engine needed to write the envelope) */
    j->o.device = AE_DEV_CUDA;
    d = ae_job_envelope(j, "eval test", "NVIDIA Test GPU");
    cr_expect_str_eq(key(d, "device")->valuestring, "cuda");
    cr_expect_str_eq(key(d, "gpu")->valuestring, "NVIDIA Test GPU");
    cr_expect_str_eq(key(d, "backend")->valuestring, "NVIDIA Test GPU");
    cJSON_Delete(d);
    ae_job_close(j);
}

/* Calibration with a few windows (explicit --calib-dir): the envelope's calibration object. */
Test(job_envelope, calibration_object, .timeout = 300) {
    char root[AX_PATH_LEN], model[AX_PATH_LEN + 64], tmp[64], err[AX_ERR_LEN] = "";
    if (tu_data_root(root, sizeof root)) { cr_skip_test("skipped: no data root (set APEX4_DATA)"); return; }
    snprintf(model, sizeof model, "%s/models/stories260K", root);
    cr_assert_eq(tu_mkdtemp(tmp, sizeof tmp), 0);
    ae_job_opts o;
    memset(&o, 0, sizeof o);
    o.model_dir = model;
    o.calib_dir = tmp;
    o.calib_windows = 2;
    o.nthreads = 2;
    ae_job *j = NULL;
    cr_assert_eq(ae_job_open(&o, &j, err), 0, "%s", err);
    aq_mode modes[2];
    cr_assert_eq(aq_mode_parse("fp16", &modes[0], err), 0);
    cr_assert_eq(aq_mode_parse("w4a4-g32", &modes[1], err), 0);
    cr_assert_eq(ae_job_calibrate(j, modes, 2, err), 0, "%s", err);
    cr_expect_null(j->calib, "no Atom mode listed: no calibration");
    cr_assert_eq(aq_mode_parse("atom-g128-o128", &modes[1], err), 0);   /* does not fit dim 64 */
    cr_assert_eq(ae_job_calibrate(j, modes, 2, err), 0, "%s", err);
    cr_expect_null(j->calib, "an Atom mode that does not apply: no calibration");
    cr_assert_eq(aq_mode_parse("atom-g32-o8", &modes[1], err), 0);
    cr_assert_eq(ae_job_calibrate(j, modes, 2, err), 0, "%s", err);
    cr_assert_not_null(j->calib);
    cJSON *d = ae_job_envelope(j, "eval test", NULL);
    const cJSON *c = key(d, "calibration");
    cr_assert(cJSON_IsObject(c));
    const int seqlen = config_max_pos(model) < 2048 ? config_max_pos(model) : 2048;
    cr_expect(cJSON_IsString(key(c, "data")) && strstr(key(c, "data")->valuestring, "WikiText-2 validation"));
    cr_expect(cJSON_IsNumber(key(c, "windows")) && key(c, "windows")->valueint == 2);
    cr_expect(cJSON_IsNumber(key(c, "seqlen")) && key(c, "seqlen")->valueint == seqlen);
    cr_expect(cJSON_IsNumber(key(c, "tokens")) && key(c, "tokens")->valuedouble == 2.0 * seqlen);
    char cache[AX_PATH_LEN];
    cr_assert_eq(calib_files(tmp, cache, sizeof cache), 1);
    cr_expect(cJSON_IsString(key(c, "cache")));
    cr_expect_str_eq(key(c, "cache")->valuestring, cache);
    /* computed on the job's device (cpu here): said in the object; a cpu cache file has no "cuda" */
    cr_expect(cJSON_IsString(key(c, "device")) && !strcmp(key(c, "device")->valuestring, "cpu"));
    cr_expect(strstr(cache, "cuda") == NULL, "%s", cache);
    cJSON_Delete(d);
    ae_job_close(j);
    rm_rf(tmp);
}

/* ---- errors ------------------------------------------------------------------------------------- */
Test(job_errors, missing_model_tokenizer_and_mismatch_name_the_file) {
    char dir[64], m[128], err[AX_ERR_LEN] = "", p[AX_PATH_LEN];
    tu_make_model(dir, sizeof dir, 128, 256, 1, 300, 1, 5);   /* a checkpoint without tokenizer.json */
    ae_job_opts o;
    memset(&o, 0, sizeof o);
    ae_job *j = NULL;
    cr_expect_neq(ae_job_open(&o, &j, err), 0);
    cr_expect(strstr(err, "--model"), "%s", err);
    o.model_dir = "";
    cr_expect_neq(ae_job_open(&o, &j, err), 0);
    cr_expect(strstr(err, "--model: empty path"), "%s", err);
    snprintf(p, sizeof p, "%s/none", dir);
    o.model_dir = p;
    cr_expect_neq(ae_job_open(&o, &j, err), 0);
    cr_expect(strstr(err, p), "names the missing folder: %s", err);
    snprintf(m, sizeof m, "%s/m", dir);
    o.model_dir = m;
    cr_expect_neq(ae_job_open(&o, &j, err), 0);
    snprintf(p, sizeof p, "%s/m/tokenizer.json", dir);
    cr_expect(strstr(err, p), "names the default tokenizer path: %s", err);
    o.tokenizer = "";
    cr_expect_neq(ae_job_open(&o, &j, err), 0);
    cr_expect(strstr(err, "--tokenizer: empty path"), "%s", err);
    o.calib_windows = -1;
    o.tokenizer = NULL;
    cr_expect_neq(ae_job_open(&o, &j, err), 0);
    cr_expect(strstr(err, "--calib-windows"), "%s", err);
    o.calib_windows = 0;
    snprintf(p, sizeof p, "%s/no-such-cache-dir", dir);
    o.calib_dir = p;
    cr_expect_neq(ae_job_open(&o, &j, err), 0);
    cr_expect(strstr(err, "--calib-dir") && strstr(err, p), "names the cache folder: %s", err);
    o.calib_dir = NULL;
    cr_expect_null(j);
    rm_rf(dir);
    /* the LLaMA-2 tokenizer (32,000 pieces) with stories260K's 512-token model */
    char root[AX_PATH_LEN], model[AX_PATH_LEN + 64], tok[AX_PATH_LEN + 64];
    if (tu_data_root(root, sizeof root)) { cr_skip_test("skipped: no data root"); return; }
    snprintf(model, sizeof model, "%s/models/stories260K", root);
    snprintf(tok, sizeof tok, "%s/models/llama2-tokenizer/tokenizer.json", root);
    memset(&o, 0, sizeof o);
    o.model_dir = model;
    o.tokenizer = tok;
    cr_expect_neq(ae_job_open(&o, &j, err), 0);
    cr_expect(strstr(err, tok) && strstr(err, "32000") && strstr(err, "512"), "%s", err);
    cr_expect_null(j);
}

/* ---- greedy decoding through the engine ---------------------------------------------------------- */
typedef struct { int calls, last_n; } cb_count;
static void count_cb(void *ctx, const int *seq, int n) {
    (void)seq;
    cb_count *c = ctx;
    c->calls++;
    c->last_n = n;
}

/* ae_job_generate on the cpu engine produces ae_generate's tokens (eval/forward.c, on a runner of
 * the same mode): free running, stopped by a stop token taken from the free run, and cut at the
 * engine's max_seq. */
Test(job_generate, engine_decoding_matches_ae_generate) {
    char dir[64], m[128], err[AX_ERR_LEN] = "";
    tu_make_model(dir, sizeof dir, 128, 256, 2, 300, 0, 11);
    snprintf(m, sizeof m, "%s/m", dir);
    ae_model *mod;
    cr_assert_eq(ae_model_load(m, &mod, err), 0, "%s", err);
    const char *modes[2] = {"fp16", "w4a4-g64"};
    const int prompt[3] = {1, 17, 42};
    for (int mi = 0; mi < 2; mi++) {
        for (int cse = 0; cse < 3; cse++) {
            int n_new = 20, max_seq = cse == 2 ? 3 + 7 : 3 + 20;
            ae_run_opts ro;
            memset(&ro, 0, sizeof ro);
            cr_assert_eq(aq_mode_parse(modes[mi], &ro.mode, err), 0);
            ro.nthreads = 1;
            ro.max_seq = max_seq;
            ae_runner *r;
            cr_assert_eq(ae_runner_build(mod, &ro, NULL, &r, err), 0, "%s", err);
            ae_engine_opts eo;
            memset(&eo, 0, sizeof eo);
            eo.device = AE_DEV_CPU;
            eo.mode = ro.mode;
            eo.nthreads = 1;
            eo.max_seq = max_seq;
            ae_engine *e;
            cr_assert_eq(ae_engine_new(mod, &eo, NULL, &e, err), 0, "%s", err);
            int ref[32], got[32], n_ref = 0, n_got = 0, stop[1], n_stop = 0;
            if (cse == 1) {   /* stop at the 6th token of the free run */
                int free_run[32], nf;
                cr_assert_eq(ae_generate(r, prompt, 3, n_new, NULL, 0, free_run, &nf, NULL, NULL, err), 0, "%s", err);
                cr_assert_eq(nf, n_new);
                stop[0] = free_run[5];
                n_stop = 1;
            }
            cr_assert_eq(ae_generate(r, prompt, 3, n_new, stop, n_stop, ref, &n_ref, NULL, NULL, err), 0, "%s", err);
            cb_count cc = {0, 0};
            cr_assert_eq(ae_job_generate(e, prompt, 3, n_new, stop, n_stop, got, &n_got, count_cb, &cc, err), 0, "%s", err);
            cr_expect_eq(n_got, n_ref, "%s case %d", modes[mi], cse);
            for (int i = 0; i < n_ref && i < n_got; i++) cr_expect_eq(got[i], ref[i], "%s case %d token %d", modes[mi], cse, i);
            cr_expect_eq(cc.calls, n_got);
            if (n_got) cr_expect_eq(cc.last_n, 3 + n_got);
            if (cse == 1) cr_expect_lt(n_ref, 6, "stopped before the stop token");
            if (cse == 2) cr_expect_eq(n_ref, 7, "cut at max_seq");
            ae_engine_free(e);
            ae_runner_free(r);
        }
    }
    /* errors: an empty prompt, a prompt longer than max_seq */
    ae_engine_opts eo;
    memset(&eo, 0, sizeof eo);
    cr_assert_eq(aq_mode_parse("fp16", &eo.mode, err), 0);
    eo.nthreads = 1;
    eo.max_seq = 2;
    ae_engine *e;
    cr_assert_eq(ae_engine_new(mod, &eo, NULL, &e, err), 0, "%s", err);
    int o[4], n;
    cr_expect_neq(ae_job_generate(e, prompt, 0, 4, NULL, 0, o, &n, NULL, NULL, err), 0);
    cr_expect(strstr(err, "empty prompt"), "%s", err);
    cr_expect_neq(ae_job_generate(e, prompt, 3, 4, NULL, 0, o, &n, NULL, NULL, err), 0);
    cr_expect(strstr(err, "exceeds max_seq 2"), "%s", err);
    ae_engine_free(e);
    ae_model_free(mod);
    rm_rf(dir);
}

/* ---- --device on every command ----------------------------------------------------------------- */
/* Checked before the model is read: a bad value lists the valid ones; cuda without a GPU names the
 * option (exit 2). */
Test(job_cli, device_option_on_every_command) {
    const char *bin = getenv("APEX4_BIN");
    if (!bin) { cr_skip_test("skipped: APEX4_BIN not set (run through make test)"); return; }
    const char *cmds[3] = {"eval ppl", "eval zeroshot", "generate"};
    char cmd[1024], out[8192];
    for (int i = 0; i < 3; i++) {
        snprintf(cmd, sizeof cmd, "'%s' %s --model /nonexistent-model --device tpu", bin, cmds[i]);
        cr_expect_eq(run_capture(cmd, out, sizeof out), 2, "%s: %s", cmds[i], out);
        cr_expect(strstr(out, "--device") && strstr(out, "cpu, cuda or auto"), "%s: %s", cmds[i], out);
        snprintf(cmd, sizeof cmd, "'%s' %s --model /nonexistent-model --gemm int4", bin, cmds[i]);
        cr_expect_eq(run_capture(cmd, out, sizeof out), 2, "%s: %s", cmds[i], out);
        cr_expect(strstr(out, "--gemm"), "%s: %s", cmds[i], out);
        if (ak_device_count() == 0) {
            snprintf(cmd, sizeof cmd, "'%s' %s --model /nonexistent-model --device cuda", bin, cmds[i]);
            cr_expect_eq(run_capture(cmd, out, sizeof out), 2, "%s: %s", cmds[i], out);
            cr_expect(strstr(out, "--device cuda") && strstr(out, "no usable CUDA device"), "%s: %s", cmds[i], out);
            cr_expect(strstr(out, "nonexistent-model") == NULL, "%s: nothing was loaded: %s", cmds[i], out);
        }
    }
}

/* A virtual checkpoint has no tokenizer.json next to it: the job says --tokenizer is needed (and names
 * the spec) instead of failing on "random:.../tokenizer.json: No such file". */
Test(job, virtual_model_needs_a_tokenizer) {
    ae_job_opts o;
    memset(&o, 0, sizeof o);
    o.model_dir = "random:tiny";
    ae_job *j = NULL;
    char err[AX_ERR_LEN] = "";
    cr_assert_neq(ae_job_open(&o, &j, err), 0);
    cr_assert(strstr(err, "--tokenizer") && strstr(err, "random:tiny"), "%s", err);
    cr_assert_null(j);
}

/* ---- calibration through the engine interface (eval/engine.h ae_engine_calib_sumsq) ------------ */

/* A calibration of model m's shapes with zero sums (the layout ae_calib_free releases). */
static ae_calib *zero_calib(const ae_model *m) {
    const ae_config *c = &m->cfg;
    ae_calib *k = calloc(1, sizeof *k);
    cr_assert_not_null(k);
    k->n_layers = c->n_layers;
    const int w[AE_NSITES] = {c->dim, c->n_heads * c->head_dim, c->dim, c->hidden_dim};
    memcpy(k->width, w, sizeof w);
    k->perm = calloc((size_t)c->n_layers * AE_NSITES, sizeof *k->perm);
    k->sumsq = calloc((size_t)c->n_layers * AE_NSITES, sizeof *k->sumsq);
    for (int i = 0; i < c->n_layers * AE_NSITES; i++) {
        k->perm[i] = calloc((size_t)w[i % AE_NSITES], sizeof(int32_t));
        k->sumsq[i] = calloc((size_t)w[i % AE_NSITES], sizeof(double));
    }
    return k;
}

/* The cpu backend of the new entry is the old calibration: the sums of ae_calibrate, of
 * ae_calibrate_on(cpu) and of ae_engine_calib_sumsq on a cpu FP16 engine equal, bit for bit, those
 * of the pre-engine path rebuilt here by hand (an FP16 ae_runner, its ae_runner_collect hook, every
 * window from position 0), on stories260K; every order is ascending in its sums with ties to the
 * lower channel (checked as a property, not against the sort). */
Test(job_calib, cpu_engine_entry_equals_the_runner_hook_bit_for_bit) {
    char root[AX_PATH_LEN], model[AX_PATH_LEN + 64], err[AX_ERR_LEN] = "";
    if (tu_data_root(root, sizeof root)) { cr_skip_test("skipped: no data root (set APEX4_DATA)"); return; }
    snprintf(model, sizeof model, "%s/models/stories260K", root);
    ae_model *m = NULL;
    cr_assert_eq(ae_model_load(model, &m, err), 0, "%s", err);
    enum { NW = 3, T = 64 };
    int tok[NW * T];
    uint64_t s = 31;
    for (int i = 0; i < NW * T; i++) tok[i] = 3 + (int)(tu_rand_u64(&s) % (uint64_t)(m->cfg.vocab_size - 3));
    /* the old path */
    ae_calib *ref = zero_calib(m);
    ae_run_opts ro;
    memset(&ro, 0, sizeof ro);
    cr_assert_eq(aq_mode_parse("fp16", &ro.mode, err), 0);
    ro.gemm = AE_GEMM_FAKE;
    ro.nthreads = 2;
    ro.max_seq = T;
    ae_runner *r = NULL;
    cr_assert_eq(ae_runner_build(m, &ro, NULL, &r, err), 0, "%s", err);
    ae_runner_collect(r, ref);
    for (int w = 0; w < NW; w++) {
        ae_runner_truncate(r, 0);
        cr_assert_eq(ae_forward(r, tok + w * T, T, 0, T, NULL, err), 0, "%s", err);
    }
    ae_runner_free(r);
    /* the new entries */
    ae_calib *a = NULL, *b = NULL, *c = zero_calib(m);
    cr_assert_eq(ae_calibrate(m, tok, NW, T, 2, &a, err), 0, "%s", err);
    ae_calib_where wh = {AE_DEV_CPU, 1, 0, 0, 0};   /* the thread count does not change the sums */
    char desc[200];
    cr_assert_eq(ae_calibrate_on(m, tok, NW, T, &wh, &b, desc, sizeof desc, err), 0, "%s", err);
    cr_expect_str_eq(desc, "cpu (1 threads)");
    ae_engine_opts eo;
    memset(&eo, 0, sizeof eo);
    eo.device = AE_DEV_CPU;
    eo.mode = ro.mode;
    eo.nthreads = 2;
    eo.max_seq = T;
    ae_engine *e = NULL;
    cr_assert_eq(ae_engine_new(m, &eo, NULL, &e, err), 0, "%s", err);
    cr_assert_eq(ae_engine_calib_sumsq(e, tok, NW, T, c, err), 0, "%s", err);
    cr_expect_eq(ae_engine_pos(e), 0);
    ae_engine_free(e);
    cr_expect_eq(a->tokens, NW * T);
    cr_expect_eq(b->tokens, NW * T);
    cr_expect_eq(c->tokens, NW * T);
    for (int i = 0; i < m->cfg.n_layers * AE_NSITES; i++) {
        const int n = ref->width[i % AE_NSITES];
        const size_t bytes = (size_t)n * sizeof(double);
        cr_assert_eq(memcmp(a->sumsq[i], ref->sumsq[i], bytes), 0, "ae_calibrate, layer %d site %d", i / 4, i % 4);
        cr_assert_eq(memcmp(b->sumsq[i], ref->sumsq[i], bytes), 0, "ae_calibrate_on, layer %d site %d", i / 4, i % 4);
        cr_assert_eq(memcmp(c->sumsq[i], ref->sumsq[i], bytes), 0, "ae_engine_calib_sumsq, layer %d site %d", i / 4,
                     i % 4);
        cr_assert_eq(memcmp(a->perm[i], b->perm[i], (size_t)n * sizeof(int32_t)), 0);
        int nonzero = 0;
        for (int k = 0; k < n; k++) nonzero += ref->sumsq[i][k] > 0;
        cr_assert_gt(nonzero, n / 2, "layer %d site %d: the hook saw the activations", i / 4, i % 4);
        char *seen = calloc((size_t)n, 1);
        for (int k = 0; k < n; k++) {
            const int ch = a->perm[i][k];
            cr_assert(ch >= 0 && ch < n && !seen[ch]);
            seen[ch] = 1;
            if (k) {
                const int pv = a->perm[i][k - 1];
                cr_assert(a->sumsq[i][pv] < a->sumsq[i][ch] || (a->sumsq[i][pv] == a->sumsq[i][ch] && pv < ch),
                          "layer %d site %d position %d", i / 4, i % 4, k);
            }
        }
        free(seen);
    }
    /* a second call adds to the sums: twice the first (doubling is exact in binary floating point) */
    cr_assert_eq(ae_engine_new(m, &eo, NULL, &e, err), 0, "%s", err);
    cr_assert_eq(ae_engine_calib_sumsq(e, tok, 1, T, c, err), 0, "%s", err);
    ae_engine_free(e);
    cr_expect_eq(c->tokens, (NW + 1) * T);
    ae_calib *one = zero_calib(m);
    cr_assert_eq(ae_engine_new(m, &eo, NULL, &e, err), 0, "%s", err);
    cr_assert_eq(ae_engine_calib_sumsq(e, tok, 1, T, one, err), 0, "%s", err);
    ae_engine_free(e);
    ae_calib *three = zero_calib(m);   /* window 0 then windows 0, 1, 2 from zero: as c got them */
    cr_assert_eq(ae_engine_new(m, &eo, NULL, &e, err), 0, "%s", err);
    cr_assert_eq(ae_engine_calib_sumsq(e, tok, NW, T, three, err), 0, "%s", err);
    cr_assert_eq(ae_engine_calib_sumsq(e, tok, 1, T, three, err), 0, "%s", err);
    ae_engine_free(e);
    for (int i = 0; i < m->cfg.n_layers * AE_NSITES; i++)
        cr_assert_eq(memcmp(three->sumsq[i], c->sumsq[i], (size_t)ref->width[i % AE_NSITES] * sizeof(double)), 0);
    ae_calib_free(one);
    ae_calib_free(three);
    ae_calib_free(ref); ae_calib_free(a); ae_calib_free(b); ae_calib_free(c);
    ae_model_free(m);
}

/* Errors of ae_engine_calib_sumsq name what is wrong: an engine that is not FP16 (mode named) or has
 * kv4, a calibration of another shape, a token outside the vocabulary (window and position), a
 * window longer than max_seq; a cuda calibration without a device fails at the engine, named. */
Test(job_calib, engine_entry_errors_are_named) {
    char dir[64], mdir[128], err[AX_ERR_LEN] = "";
    tu_make_model(dir, sizeof dir, 128, 256, 2, 300, 1, 11);
    snprintf(mdir, sizeof mdir, "%s/m", dir);
    ae_model *m = NULL, *m2 = NULL;
    cr_assert_eq(ae_model_load(mdir, &m, err), 0, "%s", err);
    int tok[32];
    for (int i = 0; i < 32; i++) tok[i] = 1 + i;
    ae_calib *c = zero_calib(m);
    ae_engine_opts eo;
    memset(&eo, 0, sizeof eo);
    eo.device = AE_DEV_CPU;
    eo.nthreads = 1;
    eo.max_seq = 16;
    ae_engine *e = NULL;
    cr_assert_eq(aq_mode_parse("w4a4-g32", &eo.mode, err), 0);
    cr_assert_eq(ae_engine_new(m, &eo, NULL, &e, err), 0, "%s", err);
    cr_assert_neq(ae_engine_calib_sumsq(e, tok, 1, 16, c, err), 0);
    cr_expect(strstr(err, "FP16") && strstr(err, "w4a4-g32"), "%s", err);
    ae_engine_free(e);
    cr_assert_eq(aq_mode_parse("fp16", &eo.mode, err), 0);
    eo.kv4 = 1;
    cr_assert_eq(ae_engine_new(m, &eo, NULL, &e, err), 0, "%s", err);
    cr_assert_neq(ae_engine_calib_sumsq(e, tok, 1, 16, c, err), 0);
    cr_expect(strstr(err, "kv4"), "%s", err);
    ae_engine_free(e);
    eo.kv4 = 0;
    cr_assert_eq(ae_engine_new(m, &eo, NULL, &e, err), 0, "%s", err);
    cr_assert_neq(ae_engine_calib_sumsq(e, tok, 1, 17, c, err), 0);   /* beyond max_seq 16 */
    cr_expect(strstr(err, "max_seq"), "%s", err);
    tok[20] = 300;                                                     /* window 1, position 4 */
    cr_assert_neq(ae_engine_calib_sumsq(e, tok, 2, 16, c, err), 0);
    cr_expect(strstr(err, "token 300 at window 1 position 4"), "%s", err);
    tok[20] = 21;
    char dir2[64], mdir2[128];
    tu_make_model(dir2, sizeof dir2, 128, 384, 2, 300, 1, 11);        /* another hidden width */
    snprintf(mdir2, sizeof mdir2, "%s/m", dir2);
    cr_assert_eq(ae_model_load(mdir2, &m2, err), 0, "%s", err);
    ae_calib *c2 = zero_calib(m2);
    cr_assert_neq(ae_engine_calib_sumsq(e, tok, 1, 16, c2, err), 0);
    cr_expect(strstr(err, "384") && strstr(err, "256"), "%s", err);
    for (int i = 0; i < m->cfg.n_layers * AE_NSITES; i++)   /* nothing was added by the refusals */
        for (int k = 0; k < c->width[i % AE_NSITES]; k++) cr_assert_eq(c->sumsq[i][k], 0.0);
    cr_expect_eq(c->tokens, 0);
    ae_engine_free(e);
    if (ak_device_count() == 0) {
        ae_calib_where wh = {AE_DEV_CUDA, 0, 0, 0, 0};
        ae_calib *g = NULL;
        cr_assert_neq(ae_calibrate_on(m, tok, 1, 16, &wh, &g, NULL, 0, err), 0);
        cr_assert_null(g);
        cr_expect(strstr(err, "CUDA") || strstr(err, "cuda"), "%s", err);
    }
    ae_calib_free(c);
    ae_calib_free(c2);
    ae_model_free(m);
    ae_model_free(m2);
    rm_rf(dir);
    rm_rf(dir2);
}

/* ae_calib_obtain (the cpu API of forward.h) and ae_calib_obtain_on with the cpu device: the same
 * cache file (the cpu key is unchanged, so earlier cache files stay valid), the log names the device. */
Test(job_calib, obtain_on_cpu_is_ae_calib_obtain) {
    char root[AX_PATH_LEN], model[AX_PATH_LEN + 64], tp[AX_PATH_LEN + 128], err[AX_ERR_LEN] = "";
    if (tu_data_root(root, sizeof root)) { cr_skip_test("skipped: no data root (set APEX4_DATA)"); return; }
    snprintf(model, sizeof model, "%s/models/stories260K", root);
    snprintf(tp, sizeof tp, "%s/tokenizer.json", model);
    ae_model *m = NULL;
    cr_assert_eq(ae_model_load(model, &m, err), 0, "%s", err);
    ae_tokenizer *tok = NULL;
    cr_assert_eq(ae_tokenizer_load(tp, &tok, err), 0, "%s", err);
    char tmp[64], p1[AX_PATH_LEN], p2[AX_PATH_LEN];
    cr_assert_eq(tu_mkdtemp(tmp, sizeof tmp), 0);
    char *log1 = NULL, *log2 = NULL;
    size_t l1, l2;
    FILE *f1 = open_memstream(&log1, &l1), *f2 = open_memstream(&log2, &l2);
    ae_calib *a = NULL, *b = NULL;
    ae_calib_where wh = {AE_DEV_CPU, 2, 0, 0, 0};
    cr_assert_eq(ae_calib_obtain_on(m, tok, 64, 2, tmp, &wh, f1, &a, p1, err), 0, "%s", err);
    cr_assert_eq(ae_calib_obtain(m, tok, 64, 2, tmp, 1, f2, &b, p2, err), 0, "%s", err);
    fclose(f1);
    fclose(f2);
    cr_expect_str_eq(p1, p2);
    cr_expect(strstr(p1, "cuda") == NULL, "%s", p1);
    cr_expect(strstr(log1, " on cpu (2 threads) in "), "%s", log1);
    cr_expect(strstr(log2, "loaded"), "%s", log2);
    for (int i = 0; i < m->cfg.n_layers * AE_NSITES; i++)
        cr_assert_eq(memcmp(a->sumsq[i], b->sumsq[i], (size_t)a->width[i % AE_NSITES] * sizeof(double)), 0);
    ae_calib_free(a);
    ae_calib_free(b);
    free(log1);
    free(log2);
    ae_tokenizer_free(tok);
    ae_model_free(m);
    rm_rf(tmp);
}
