/* report.c — apex4 report: inputs, model fit, speeds, accuracy, Pareto fronts, JSON and table
 * (reports/report.h). The HTML page and its plots are in report_html.c. */
#include "report.h"
#include "report_internal.h"

#include <glob.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ax_util.h"

/* LLaMA-2 layer shapes of the speed figure: (N, K) and how often each occurs per block. */
const ar_layer ar_layers[AR_NLAYERS] = {
    {"llama2-7b", "q_proj/k_proj/v_proj/o_proj", 4096, 4096, 4},
    {"llama2-7b", "gate_proj/up_proj", 11008, 4096, 2},
    {"llama2-7b", "down_proj", 4096, 11008, 1},
    {"llama2-70b", "q_proj/o_proj", 8192, 8192, 2},
    {"llama2-70b", "k_proj/v_proj", 1024, 8192, 2},
    {"llama2-70b", "gate_proj/up_proj", 28672, 8192, 2},
    {"llama2-70b", "down_proj", 8192, 28672, 1},
};

/* The APEX4 paper's published points: W4A4-g128 vs FP16 in compute-bound shapes. */
const ar_paper_point ar_paper_points[AR_NPAPER] = {
    {"RTX-3090", "w4a4-g128", 2.0, 2.5},
    {"A100-SXM", "w4a4-g128", 0.43, 0.47},
};

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
static double jnum(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) ? v->valuedouble : NAN;
}

/* Expand comma-separated glob(3) patterns into sorted, de-duplicated paths. */
static int expand(const char *pats, const char *opt, char (*files)[AR_FILE_LEN], int *n, char *err) {
    *n = 0;
    char buf[4096];
    if (!pats || !*pats) { ax_seterr(err, "%s: expected a glob pattern", opt); return -1; }
    if (snprintf(buf, sizeof buf, "%s", pats) >= (int)sizeof buf) { ax_seterr(err, "%s: pattern too long", opt); return -1; }
    char *save = NULL;
    for (char *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        glob_t g;
        memset(&g, 0, sizeof g);
        int rc = glob(p, GLOB_ERR, NULL, &g);
        if (rc == GLOB_NOMATCH) { globfree(&g); ax_seterr(err, "%s '%s': matches no file", opt, p); return -1; }
        if (rc != 0) { globfree(&g); ax_seterr(err, "%s '%s': cannot be read (%s)", opt, p, rc == GLOB_ABORTED ? "a directory in it is missing or unreadable" : "out of memory"); return -1; }
        for (size_t i = 0; i < g.gl_pathc; i++) {
            int dup = 0;
            for (int j = 0; j < *n; j++) dup |= !strcmp(files[j], g.gl_pathv[i]);
            if (dup) continue;
            if (*n == AR_MAX_FILES || strlen(g.gl_pathv[i]) >= AR_FILE_LEN) {
                globfree(&g);
                ax_seterr(err, "%s '%s': more than %d files or a path too long", opt, p, AR_MAX_FILES);
                return -1;
            }
            snprintf(files[(*n)++], AR_FILE_LEN, "%s", g.gl_pathv[i]);
        }
        globfree(&g);
    }
    return 0;
}

static cJSON *load_json(const char *path, char *err) {
    cJSON *d = ax_json_read_file(path, err);
    if (d && !cJSON_IsObject(d)) { ax_seterr(err, "%s: expected a JSON object", path); cJSON_Delete(d); d = NULL; }
    return d;
}

/* apex4_version major.minor must equal this build's. */
static int version_ok(const cJSON *d) {
    const char *v = jstr(d, "apex4_version");
    if (!v) return 0;
    const char *a = strchr(APEX4_VERSION, '.');
    const char *b = a ? strchr(a + 1, '.') : NULL;
    size_t n = b ? (size_t)(b - APEX4_VERSION) : strlen(APEX4_VERSION);
    return !strncmp(v, APEX4_VERSION, n) && (v[n] == '.' || v[n] == 0);
}

static int mode_index(const ar_report *r, const char *m) {
    for (int i = 0; i < r->nmodes; i++) if (!strcmp(r->modes[i].mode, m)) return i;
    return -1;
}

static ar_acc *acc_slot(ar_report *r, const char *model, const char *mode, char *err) {
    int mi = -1;
    for (int i = 0; i < r->nmodels; i++) if (!strcmp(r->models[i], model)) mi = i;
    if (mi < 0) {
        if (r->nmodels == AR_MAX_MODELS) { ax_seterr(err, "results: more than %d models", AR_MAX_MODELS); return NULL; }
        mi = r->nmodels++;
        snprintf(r->models[mi], sizeof r->models[mi], "%s", model);
    }
    for (int i = 0; i < r->nacc; i++)
        if (r->acc[i].model == mi && !strcmp(r->acc[i].mode, mode)) return &r->acc[i];
    if (r->nacc == AR_MAX_ACC) { ax_seterr(err, "results: more than %d (model, mode) rows", AR_MAX_ACC); return NULL; }
    ar_acc *a = &r->acc[r->nacc++];
    memset(a, 0, sizeof *a);
    a->model = mi;
    snprintf(a->mode, sizeof a->mode, "%s", mode);
    a->ppl = a->dppl = a->kld = a->top1 = a->zs_avg = NAN;
    return a;
}

static int load_results(ar_report *r, const char *path, char *err) {
    cJSON *d = load_json(path, err);
    if (!d) return -1;
    int rc = -1;
    const char *cmd = jstr(d, "command"), *model = jstr(d, "model");
    const cJSON *modes = cJSON_GetObjectItemCaseSensitive(d, "modes"), *m;
    const int ppl = cmd && !strcmp(cmd, "eval ppl"), zs = cmd && !strcmp(cmd, "eval zeroshot");
    if (!ppl && !zs) {
        ax_seterr(err, "%s: not an apex4 results file: \"command\" is %s%s%s, expected \"eval ppl\" or \"eval zeroshot\"", path,
                  cmd ? "\"" : "", cmd ? cmd : "missing", cmd ? "\"" : "");
        goto out;
    }
    if (!version_ok(d)) {
        ax_seterr(err, "%s: results of apex4_version %s; this report reads version %s files (rerun apex4 eval)", path,
                  jstr(d, "apex4_version") ? jstr(d, "apex4_version") : "(missing)", APEX4_VERSION);
        goto out;
    }
    if (!model || !cJSON_IsArray(modes)) { ax_seterr(err, "%s: missing \"model\" or the \"modes\" array", path); goto out; }
    double ref = jnum(d, "reference_ppl");
    if (ppl)   /* FP16 reference: the fp16 row of the same file, else reference_ppl */
        cJSON_ArrayForEach(m, modes) {
            const char *mn = jstr(m, "mode");
            if (mn && !strcmp(mn, "fp16") && isfinite(jnum(m, "ppl"))) ref = jnum(m, "ppl");
        }
    cJSON_ArrayForEach(m, modes) {
        const char *mn = jstr(m, "mode");
        if (!mn || strlen(mn) >= 32) { ax_seterr(err, "%s: a \"modes\" entry without a valid \"mode\"", path); goto out; }
        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "applicable"))) continue;
        ar_acc *a = acc_slot(r, model, mn, err);
        if (!a) goto out;
        if (ppl && !isfinite(a->ppl) && isfinite(jnum(m, "ppl"))) {   /* first file in sorted order wins */
            a->ppl = jnum(m, "ppl");
            a->dppl = isfinite(ref) ? a->ppl - ref : NAN;
            a->kld = jnum(m, "kld");
            a->top1 = jnum(m, "top1_agreement");
            snprintf(a->ppl_src, sizeof a->ppl_src, "%s", path);
        }
        if (zs && !isfinite(a->zs_avg) && isfinite(jnum(m, "average"))) {
            a->zs_avg = jnum(m, "average");
            snprintf(a->zs_src, sizeof a->zs_src, "%s", path);
        }
    }
    rc = 0;
out:
    cJSON_Delete(d);
    return rc;
}

static int device_gpu(const ar_report *r, const cJSON *d, const char *path, char *name, char *err) {
    const cJSON *dev = cJSON_GetObjectItemCaseSensitive(d, "device");
    const char *dn = jstr(dev, "name");
    if (!dn) { ax_seterr(err, "%s: missing \"device\".\"name\"", path); return -1; }
    snprintf(name, 128, "%s", dn);
    const ar_gpu *g = ar_gpus_find(&r->gpus, dn);
    if (!g) { ax_seterr(err, "%s: device '%s' is not in the GPU table %s (add it or an alias)", path, dn, r->gpus_path); return -1; }
    return (int)(g - r->gpus.g);
}

static int load_bench(ar_report *r, const char *path, char *err) {
    cJSON *d = load_json(path, err);
    if (!d) return -1;
    int rc = -1;
    const char *cmd = jstr(d, "command");
    if (!cmd || (strcmp(cmd, "bench gemm") && strcmp(cmd, "bench rho"))) {
        ax_seterr(err, "%s: not an apex4 bench file: \"command\" is %s, expected \"bench gemm\" or \"bench rho\"", path,
                  cmd ? cmd : "missing");
        goto out;
    }
    if (!version_ok(d)) {
        ax_seterr(err, "%s: bench file of apex4_version %s; this report reads version %s files", path,
                  jstr(d, "apex4_version") ? jstr(d, "apex4_version") : "(missing)", APEX4_VERSION);
        goto out;
    }
    char dev[128];
    int gi = device_gpu(r, d, path, dev, err);
    if (gi < 0) goto out;
    if (!strcmp(cmd, "bench rho")) {
        if (r->emul.n) { ax_seterr(err, "%s: a second bench rho file (the first: %s)", path, r->emul.path); goto out; }
        const cJSON *pts = cJSON_GetObjectItemCaseSensitive(d, "rho"), *p;
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(d, "shape");
        r->emul.M = (int)jnum(sh, "M"); r->emul.N = (int)jnum(sh, "N"); r->emul.K = (int)jnum(sh, "K");
        if (!cJSON_IsArray(pts) || r->emul.M < 1 || r->emul.N < 1 || r->emul.K < 1) {
            ax_seterr(err, "%s: bench rho file without \"shape\" {M, N, K} or the \"rho\" array", path);
            goto out;
        }
        int n = cJSON_GetArraySize(pts);
        r->emul.p = calloc((size_t)(n > 0 ? n : 1), sizeof *r->emul.p);
        if (!r->emul.p) { ax_seterr(err, "out of memory"); goto out; }
        cJSON_ArrayForEach(p, pts) {
            const char *mn = jstr(p, "mode");
            double k = jnum(p, "k"), t = jnum(p, "ms_median"), t16 = jnum(p, "fp16_ms_median");
            if (!mn || strlen(mn) >= 32 || !(k >= 0) || !(t > 0) || !(t16 > 0)) {
                ax_seterr(err, "%s: \"rho\"[%d] needs mode, k >= 0, ms_median > 0, fp16_ms_median > 0", path, r->emul.n);
                goto out;
            }
            ar_emul_pt *e = &r->emul.p[r->emul.n++];
            snprintf(e->mode, sizeof e->mode, "%s", mn);
            e->k = k; e->t = t * 1e-3; e->t16 = t16 * 1e-3;
        }
        r->emul.gpu = gi;
        snprintf(r->emul.path, sizeof r->emul.path, "%s", path);
        snprintf(r->emul.device, sizeof r->emul.device, "%s", dev);
        rc = 0;
        goto out;
    }
    if (r->nbench == AR_MAX_FILES) { ax_seterr(err, "%s: more than %d bench files", path, AR_MAX_FILES); goto out; }
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(d, "gemm"), *q;
    if (!cJSON_IsArray(rows)) { ax_seterr(err, "%s: bench gemm file without the \"gemm\" array", path); goto out; }
    ar_bench *b = &r->bench[r->nbench];
    memset(b, 0, sizeof *b);
    b->pts = calloc((size_t)cJSON_GetArraySize(rows) + 1, sizeof *b->pts);
    if (!b->pts) { ax_seterr(err, "out of memory"); goto out; }
    r->nbench++;
    b->gpu = gi;
    snprintf(b->path, sizeof b->path, "%s", path);
    snprintf(b->device, sizeof b->device, "%s", dev);
    int i = 0;
    cJSON_ArrayForEach(q, rows) {
        const char *impl = jstr(q, "impl"), *mn = jstr(q, "mode");
        double M = jnum(q, "M"), N = jnum(q, "N"), K = jnum(q, "K"), t = jnum(q, "ms_median");
        if (!impl || !(M >= 1 && M <= 1e7) || !(N >= 1 && N <= 1e7) || !(K >= 1 && K <= 1e7) || !(t > 0)) {
            ax_seterr(err, "%s: \"gemm\"[%d] needs impl, M, N, K and ms_median > 0", path, i);
            goto out;
        }
        i++;
        const char *name = !strcmp(impl, "cublas-fp16") ? "fp16" : !strcmp(impl, "apex4") ? mn : NULL;
        if (!name) continue;   /* cuBLAS INT8 and other baselines: not modelled */
        if (strlen(name) >= 32) { ax_seterr(err, "%s: \"gemm\"[%d]: mode name too long", path, i - 1); goto out; }
        ar_point *p = &b->pts[b->n++];
        snprintf(p->mode, sizeof p->mode, "%s", name);
        p->M = (int)M; p->N = (int)N; p->K = (int)K; p->t = t * 1e-3;
        snprintf(p->model, sizeof p->model, "%s", jstr(q, "model") ? jstr(q, "model") : "");
        snprintf(p->layer, sizeof p->layer, "%s", jstr(q, "layer") ? jstr(q, "layer") : "");
    }
    /* every mode asked for, and the FP16 baseline, must be there */
    for (int m = -1; m < r->nmodes; m++) {
        const char *want = m < 0 ? "fp16" : r->modes[m].mode;
        int have = 0;
        for (int j = 0; j < b->n; j++) have |= !strcmp(b->pts[j].mode, want);
        if (!have) {
            ax_seterr(err, "%s: no %s rows for mode '%s' asked for (--modes); measure it with apex4 bench gemm --modes %s", path,
                      m < 0 ? "cuBLAS FP16 (impl cublas-fp16)" : "apex4", want, want);
            goto out;
        }
    }
    rc = 0;
out:
    cJSON_Delete(d);
    return rc;
}

/* Measured time of (mode, M, N, K) on GPU gi (first bench file that has it), or NAN. */
static double measured(const ar_report *r, int gi, const char *mode, int M, int N, int K) {
    for (int b = 0; b < r->nbench; b++) {
        if (r->bench[b].gpu != gi) continue;
        for (int j = 0; j < r->bench[b].n; j++) {
            const ar_point *p = &r->bench[b].pts[j];
            if (p->M == M && p->N == N && p->K == K && !strcmp(p->mode, mode)) return p->t;
        }
    }
    return NAN;
}

/* Speedup over FP16 of mode mi on selected GPU si at M, summed over the layers of `which` (0: 7B,
 * 1: 70B, 2: both): measured when every shape (and FP16's) is in a bench file, else predicted. */
static double speedup(const ar_report *r, int si, int mi, int M, int which, int *is_measured) {
    const int gi = r->sel[si];
    const ar_gpu *g = &r->gpus.g[gi];
    const ar_params *p = r->gpu_fitted[gi] ? &r->gpu_params[gi] : &r->params;
    double tm = 0, t16 = 0, pm = 0, p16 = 0;
    int meas = 1;
    ar_mode_cost f16;
    ar_mode_cost_of("fp16", &f16, NULL);
    for (int l = 0; l < AR_NLAYERS; l++) {
        if (which == 0 && strcmp(ar_layers[l].model, "llama2-7b")) continue;
        if (which == 1 && strcmp(ar_layers[l].model, "llama2-70b")) continue;
        const int N = ar_layers[l].N, K = ar_layers[l].K, c = ar_layers[l].count;
        const double a = measured(r, gi, r->modes[mi].mode, M, N, K), b = measured(r, gi, "fp16", M, N, K);
        if (!isfinite(a) || !isfinite(b)) meas = 0;
        tm += c * a; t16 += c * b;
        pm += c * ar_predict(p, g, &r->modes[mi], M, N, K, 0);
        p16 += c * ar_predict(p, g, &f16, M, N, K, 0);
    }
    if (is_measured) *is_measured = meas;
    return meas ? t16 / tm : p16 / pm;
}

static double acc_metric(const ar_report *r, const ar_acc *a) { return r->use_dppl ? a->dppl : a->kld; }

static const ar_acc *acc_of(const ar_report *r, const char *mode) {
    if (r->acc_model < 0) return NULL;
    for (int i = 0; i < r->nacc; i++)
        if (r->acc[i].model == r->acc_model && !strcmp(r->acc[i].mode, mode)) return &r->acc[i];
    return NULL;
}

static void compute_decisions(ar_report *r) {
    for (int s = 0; s < r->nsel; s++) {
        ar_gpu_result *gr = &r->res[s];
        for (int ph = 0; ph < 2; ph++) {
            const int M = ph ? r->decode_m : r->prefill_m;
            for (int m = 0; m < r->nmodes; m++) {
                for (int w = 0; w < 3; w++)
                    gr->sp[ph][m][w] = speedup(r, s, m, M, w, w == 2 ? &gr->meas[ph][m] : NULL);
            }
            /* Pareto front on (speedup over both models, accuracy metric): a mode is on the front when
             * no other mode (fp16 included: speedup 1, metric 0) is at least as fast and as accurate
             * and strictly better in one. Modes without the metric are off the front (missing). */
            int best = -1;
            double best_sp = 1.0;
            for (int m = 0; m < r->nmodes; m++) {
                const ar_acc *a = acc_of(r, r->modes[m].mode);
                const double am = a ? acc_metric(r, a) : NAN, sp = gr->sp[ph][m][2];
                gr->front[ph][m] = 0;
                if (!isfinite(am)) continue;
                int dominated = (1.0 >= sp && 0.0 <= am && (1.0 > sp || 0.0 < am));
                for (int o = 0; o < r->nmodes && !dominated; o++) {
                    const ar_acc *b = acc_of(r, r->modes[o].mode);
                    const double bm = b ? acc_metric(r, b) : NAN, so = gr->sp[ph][o][2];
                    if (o == m || !isfinite(bm)) continue;
                    dominated = so >= sp && bm <= am && (so > sp || bm < am);
                }
                gr->front[ph][m] = !dominated;
                if (am <= r->budget && sp > best_sp) { best = m; best_sp = sp; }
            }
            gr->rec[ph] = best;   /* -1: fp16 */
        }
    }
}

int ar_report_build(const ar_opts *o, ar_report **out, char *err) {
    *out = NULL;
    ar_report *r = calloc(1, sizeof *r);
    if (!r) { ax_seterr(err, "out of memory"); return -1; }
    char (*files)[AR_FILE_LEN] = calloc(AR_MAX_FILES, AR_FILE_LEN);
    if (!files) { free(r); ax_seterr(err, "out of memory"); return -1; }
    int nf = 0;
    r->prefill_m = o->prefill_m > 0 ? o->prefill_m : 2048;
    r->decode_m = o->decode_m > 0 ? o->decode_m : 16;
    r->acc_model = -1;
    if (isfinite(o->max_dppl) && isfinite(o->max_kld)) { ax_seterr(err, "--max-dppl and --max-kld: give one budget, not both"); goto fail; }
    r->use_dppl = isfinite(o->max_dppl);
    r->budget = r->use_dppl ? o->max_dppl : isfinite(o->max_kld) ? o->max_kld : AR_DEFAULT_KLD;
    r->budget_default = !isfinite(o->max_dppl) && !isfinite(o->max_kld);
    snprintf(r->gpus_path, sizeof r->gpus_path, "%s", o->gpus_path ? o->gpus_path : "reports/gpus.json");
    if (ar_gpus_load(r->gpus_path, &r->gpus, err)) goto fail;
    /* modes */
    {
        char buf[1024], *save = NULL;
        snprintf(buf, sizeof buf, "%s", o->modes ? o->modes : AR_DEFAULT_MODES);
        for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            if (r->nmodes == AR_MAX_MODES) { ax_seterr(err, "--modes: more than %d modes", AR_MAX_MODES); goto fail; }
            char e2[AX_ERR_LEN];
            if (!strcmp(t, "fp16") || ar_mode_cost_of(t, &r->modes[r->nmodes], e2)) {
                ax_seterr(err, "--modes: '%s': %s", t, !strcmp(t, "fp16") ? "fp16 is the baseline, always included" : e2);
                goto fail;
            }
            if (mode_index(r, r->modes[r->nmodes].mode) >= 0) { ax_seterr(err, "--modes: '%s' given twice", t); goto fail; }
            r->nmodes++;
        }
        if (!r->nmodes) { ax_seterr(err, "--modes: empty list"); goto fail; }
    }
    /* GPUs */
    if (!o->gpus || !strcasecmp(o->gpus, "all")) {
        for (int i = 0; i < r->gpus.n; i++) r->sel[r->nsel++] = i;
    } else {
        char buf[1024], *save = NULL;
        snprintf(buf, sizeof buf, "%s", o->gpus);
        for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            const ar_gpu *g = ar_gpus_find(&r->gpus, t);
            if (!g) {
                char names[1024] = "";
                for (int i = 0; i < r->gpus.n; i++) {
                    size_t l = strlen(names);
                    snprintf(names + l, sizeof names - l, "%s%s", i ? ", " : "", r->gpus.g[i].name);
                }
                ax_seterr(err, "--gpus: unknown GPU '%s' (table %s has: %s)", t, r->gpus_path, names);
                goto fail;
            }
            int dup = 0;
            for (int i = 0; i < r->nsel; i++) dup |= r->sel[i] == (int)(g - r->gpus.g);
            if (!dup) r->sel[r->nsel++] = (int)(g - r->gpus.g);
        }
        if (!r->nsel) { ax_seterr(err, "--gpus: empty list"); goto fail; }
    }
    /* results */
    if (expand(o->results_glob ? o->results_glob : "reports/results/*.json", "--results", files, &nf, err)) goto fail;
    for (int i = 0; i < nf; i++) {
        if (load_results(r, files[i], err)) goto fail;
        snprintf(r->results_files[r->nresults_files++], AR_FILE_LEN, "%s", files[i]);
    }
    /* accuracy model: --model, else the one with the most modes carrying the metric */
    if (o->model) {
        for (int i = 0; i < r->nmodels; i++) if (!strcmp(r->models[i], o->model)) r->acc_model = i;
        if (r->acc_model < 0) { ax_seterr(err, "--model '%s': no results for it in --results", o->model); goto fail; }
    } else {
        int bestn = 0;
        for (int mdl = 0; mdl < r->nmodels; mdl++) {
            int n = 0;
            for (int i = 0; i < r->nacc; i++)
                if (r->acc[i].model == mdl && mode_index(r, r->acc[i].mode) >= 0 && isfinite(acc_metric(r, &r->acc[i]))) n++;
            if (n > bestn) { bestn = n; r->acc_model = mdl; }
        }
    }
    /* bench files */
    if (expand(o->bench_glob ? o->bench_glob : "reports/bench/*.json", "--bench", files, &nf, err)) goto fail;
    for (int i = 0; i < nf; i++)
        if (load_bench(r, files[i], err)) goto fail;
    if (r->nbench == 0) { ax_seterr(err, "--bench: no \"bench gemm\" file among the matches: the model needs measured points"); goto fail; }
    /* fit: per measured GPU on all its points (the model used for that GPU), the first file's GPU as
     * the reference parameters for GPUs without measurements, and the held-out validation there */
    for (int b = 0; b < r->nbench; b++) {
        const int gi = r->bench[b].gpu;
        if (r->gpu_fitted[gi]) continue;
        int n = 0;
        for (int c = 0; c < r->nbench; c++) if (r->bench[c].gpu == gi) n += r->bench[c].n;
        ar_point *all = calloc((size_t)n + 1, sizeof *all);
        if (!all) { ax_seterr(err, "out of memory"); goto fail; }
        n = 0;
        for (int c = 0; c < r->nbench; c++)
            if (r->bench[c].gpu == gi)
                for (int j = 0; j < r->bench[c].n; j++) {
                    ar_mode_cost tmp;
                    if (ar_mode_cost_of(r->bench[c].pts[j].mode, &tmp, NULL)) continue;   /* modes without a kernel model */
                    all[n++] = r->bench[c].pts[j];
                }
        char e2[AX_ERR_LEN];
        int bad = ar_fit(all, n, &r->gpus.g[gi], &r->gpu_params[gi], &r->gpu_rms[gi], e2);
        if (!bad && b == 0)
            bad = ar_validate(all, n, &r->gpus.g[gi], &r->val_params, &r->val_median, &r->val_max, &r->val_nfit, &r->val_nheld, e2);
        free(all);
        if (bad) { ax_seterr(err, "%s: %s", r->bench[b].path, e2); goto fail; }
        r->gpu_fitted[gi] = 1;
        if (b == 0) { r->params = r->gpu_params[gi]; r->ref_gpu = gi; r->rms = r->gpu_rms[gi]; }
    }
    if (r->emul.n && !r->gpu_fitted[r->emul.gpu]) {
        ax_seterr(err, "%s: rho emulation of device '%s', which has no bench gemm file to fit the model on", r->emul.path, r->emul.device);
        goto fail;
    }
    compute_decisions(r);
    free(files);
    *out = r;
    return 0;
fail:
    free(files);
    ar_report_free(r);
    return -1;
}

void ar_report_free(ar_report *r) {
    if (!r) return;
    for (int b = 0; b < r->nbench; b++) free(r->bench[b].pts);
    free(r->emul.p);
    free(r);
}

double ar_report_heldout_err(const ar_report *r) { return r->val_median; }

/* Predicted speedup of mode c on GPU g (reference parameters) at the prefill shapes, xops extra ops. */
double ar_pred_speedup(const ar_report *r, const ar_gpu *g, const ar_mode_cost *c, int M, double xops) {
    ar_mode_cost f16;
    ar_mode_cost_of("fp16", &f16, NULL);
    /* a row of the table with its own fit uses it; other rows (and modified copies) the reference fit */
    const int in = g >= r->gpus.g && g < r->gpus.g + r->gpus.n;
    const ar_params *p = in && r->gpu_fitted[g - r->gpus.g] ? &r->gpu_params[g - r->gpus.g] : &r->params;
    double a = 0, b = 0;
    for (int l = 0; l < AR_NLAYERS; l++) {
        a += ar_layers[l].count * ar_predict(p, g, &f16, M, ar_layers[l].N, ar_layers[l].K, 0);
        b += ar_layers[l].count * ar_predict(p, g, c, M, ar_layers[l].N, ar_layers[l].K, xops);
    }
    return a / b;
}

/* Paper point prediction: the GPU row and the reference (measured GPU's) parameters. */
double ar_paper_pred(const ar_report *r, const ar_paper_point *pp) {
    const ar_gpu *g = ar_gpus_find(&r->gpus, pp->gpu);
    ar_mode_cost c;
    if (!g || ar_mode_cost_of(pp->mode, &c, NULL)) return NAN;
    return ar_pred_speedup(r, g, &c, r->prefill_m, 0);
}

static cJSON *fig(const ar_fig *f) {
    cJSON *o = cJSON_CreateObject();
    if (isfinite(f->v)) cJSON_AddNumberToObject(o, "value", f->v);
    else cJSON_AddNullToObject(o, "value");
    cJSON_AddStringToObject(o, "src", f->src);
    return o;
}
static void addnum(cJSON *o, const char *k, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

cJSON *ar_report_json(const ar_report *r) {
    cJSON *d = ax_envelope_new("report");
    cJSON_AddStringToObject(d, "gpu_table", r->gpus_path);
    cJSON *gs = cJSON_AddArrayToObject(d, "gpus");
    for (int s = 0; s < r->nsel; s++) {
        const ar_gpu *g = &r->gpus.g[r->sel[s]];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", g->name);
        cJSON_AddNumberToObject(o, "rho", g->rho);
        cJSON_AddStringToObject(o, "rho_from", g->rho_int4 ? "tc_int4_tops / fp32_tflops" : "tc_int8_tops / fp32_tflops (no INT4 tensor cores)");
        cJSON_AddStringToObject(o, "arch", g->arch);
        cJSON_AddItemToObject(o, "sms", fig(&g->sms));
        cJSON_AddItemToObject(o, "boost_mhz", fig(&g->boost_mhz));
        cJSON_AddItemToObject(o, "l2_mb", fig(&g->l2_mb));
        cJSON_AddItemToObject(o, "dram_gbs", fig(&g->dram_gbs));
        cJSON_AddItemToObject(o, "fp32_tflops", fig(&g->fp32_tflops));
        cJSON_AddItemToObject(o, "tc_fp16_tflops", fig(&g->tc_fp16_tflops));
        cJSON_AddItemToObject(o, "tc_int8_tops", fig(&g->tc_int8_tops));
        cJSON_AddItemToObject(o, "tc_int4_tops", fig(&g->tc_int4_tops));
        cJSON_AddItemToObject(o, "tc_fp8_tflops", fig(&g->tc_fp8_tflops));
        cJSON_AddItemToObject(o, "i2f_tops", fig(&g->i2f_tops));
        cJSON_AddBoolToObject(o, "measured", r->gpu_fitted[r->sel[s]]);
        cJSON_AddItemToArray(gs, o);
    }
    cJSON *m = cJSON_AddObjectToObject(d, "model");
    cJSON_AddStringToObject(m, "form", "t = t0 + max(T_tc + T_core, T_mem); fp16: t0_f16 + max(2MNK/(P_fp16 eta_f16), bytes/(BW eta_mem))");
    cJSON_AddStringToObject(m, "fitted_on", r->gpus.g[r->ref_gpu].name);
    cJSON *pp = cJSON_AddObjectToObject(m, "params");
    cJSON_AddNumberToObject(pp, "eta_tc", r->params.eta_tc);
    cJSON_AddNumberToObject(pp, "eta_core", r->params.eta_core);
    cJSON_AddNumberToObject(pp, "eta_mem", r->params.eta_mem);
    cJSON_AddNumberToObject(pp, "t0_s", r->params.t0);
    cJSON_AddNumberToObject(pp, "eta_f16", r->params.eta_f16);
    cJSON_AddNumberToObject(pp, "t0_f16_s", r->params.t0_f16);
    cJSON_AddNumberToObject(m, "fit_rms_log_error", r->rms);
    cJSON *bf = cJSON_AddArrayToObject(m, "bench_files");
    for (int b = 0; b < r->nbench; b++) cJSON_AddItemToArray(bf, cJSON_CreateString(r->bench[b].path));
    cJSON *v = cJSON_AddObjectToObject(d, "validation");
    cJSON_AddStringToObject(v, "gpu", r->gpus.g[r->ref_gpu].name);
    cJSON_AddStringToObject(v, "split", "(mode, shape) points sorted by mode, N, K, M: even positions fitted, odd held out");
    cJSON_AddNumberToObject(v, "heldout_median_abs_err", r->val_median);
    cJSON_AddNumberToObject(v, "heldout_max_abs_err", r->val_max);
    cJSON_AddNumberToObject(v, "n_fit", r->val_nfit);
    cJSON_AddNumberToObject(v, "n_heldout", r->val_nheld);
    cJSON *pa = cJSON_AddArrayToObject(v, "paper_points");
    for (int i = 0; i < AR_NPAPER; i++) {
        const ar_paper_point *q = &ar_paper_points[i];
        const double pr = ar_paper_pred(r, q);
        const ar_gpu *g = ar_gpus_find(&r->gpus, q->gpu);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "gpu", q->gpu);
        cJSON_AddStringToObject(o, "mode", q->mode);
        cJSON_AddNumberToObject(o, "measured_lo", q->lo);
        cJSON_AddNumberToObject(o, "measured_hi", q->hi);
        addnum(o, "predicted", pr);
        addnum(o, "rho", g ? g->rho : NAN);
        addnum(o, "predicted_over_paper_mid", pr / (0.5 * (q->lo + q->hi)));
        cJSON_AddStringToObject(o, "shapes", "LLaMA-2-7B and -70B layers at the prefill M, time-weighted");
        cJSON_AddItemToArray(pa, o);
    }
    cJSON *ac = cJSON_AddArrayToObject(d, "accuracy");
    for (int i = 0; i < r->nacc; i++) {
        const ar_acc *a = &r->acc[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", r->models[a->model]);
        cJSON_AddStringToObject(o, "mode", a->mode);
        addnum(o, "ppl", a->ppl);
        addnum(o, "dppl", a->dppl);
        addnum(o, "kld", a->kld);
        addnum(o, "top1", a->top1);
        addnum(o, "zeroshot_avg", a->zs_avg);
        cJSON_AddItemToArray(ac, o);
    }
    cJSON_AddStringToObject(d, "accuracy_model", r->acc_model >= 0 ? r->models[r->acc_model] : "");
    cJSON *bud = cJSON_AddObjectToObject(d, "budget");
    cJSON_AddStringToObject(bud, "metric", r->use_dppl ? "dppl" : "kld");
    cJSON_AddNumberToObject(bud, "max", r->budget);
    cJSON_AddBoolToObject(bud, "default", r->budget_default);
    cJSON *sp = cJSON_AddArrayToObject(d, "speed");
    cJSON *rec = cJSON_AddArrayToObject(d, "recommendations");
    static const char *const wn[3] = {"llama2_7b", "llama2_70b", "both"};
    for (int s = 0; s < r->nsel; s++) {
        const ar_gpu_result *gr = &r->res[s];
        const char *gname = r->gpus.g[r->sel[s]].name;
        for (int ph = 0; ph < 2; ph++)
            for (int mi = 0; mi < r->nmodes; mi++) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "gpu", gname);
                cJSON_AddStringToObject(o, "phase", ph ? "decode" : "prefill");
                cJSON_AddNumberToObject(o, "M", ph ? r->decode_m : r->prefill_m);
                cJSON_AddStringToObject(o, "mode", r->modes[mi].mode);
                for (int w = 0; w < 3; w++) addnum(o, wn[w], gr->sp[ph][mi][w]);
                cJSON_AddBoolToObject(o, "measured", gr->meas[ph][mi]);
                cJSON_AddBoolToObject(o, "pareto", gr->front[ph][mi]);
                cJSON_AddItemToArray(sp, o);
            }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "gpu", gname);
        const int m0 = gr->rec[0], m1 = gr->rec[1];
        cJSON_AddStringToObject(o, "mode", m0 >= 0 ? r->modes[m0].mode : "fp16");
        cJSON_AddNumberToObject(o, "speedup", m0 >= 0 ? gr->sp[0][m0][2] : 1.0);
        cJSON_AddBoolToObject(o, "measured", m0 >= 0 ? gr->meas[0][m0] : 1);
        cJSON_AddStringToObject(o, "phase", "prefill");
        cJSON_AddStringToObject(o, "decode_mode", m1 >= 0 ? r->modes[m1].mode : "fp16");
        cJSON_AddNumberToObject(o, "decode_speedup", m1 >= 0 ? gr->sp[1][m1][2] : 1.0);
        cJSON_AddItemToArray(rec, o);
    }
    cJSON *em = cJSON_AddObjectToObject(d, "emulation");
    if (!r->emul.n) cJSON_AddStringToObject(em, "status", "not measured (no bench rho file among --bench)");
    else {
        cJSON_AddStringToObject(em, "status", "measured");
        cJSON_AddStringToObject(em, "file", r->emul.path);
        cJSON_AddStringToObject(em, "device", r->emul.device);
        const ar_gpu *g = &r->gpus.g[r->emul.gpu];
        cJSON *pts = cJSON_AddArrayToObject(em, "points");
        for (int i = 0; i < r->emul.n; i++) {
            const ar_emul_pt *e = &r->emul.p[i];
            ar_mode_cost c;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "mode", e->mode);
            cJSON_AddNumberToObject(o, "k", e->k);
            cJSON_AddNumberToObject(o, "speedup", e->t16 / e->t);
            if (!ar_mode_cost_of(e->mode, &c, NULL)) {
                cJSON_AddNumberToObject(o, "rho_emulated", g->rho * (1 + e->k * ar_emul_c(g, &c)));
                const ar_params *p = &r->gpu_params[r->emul.gpu];
                ar_mode_cost f16;
                ar_mode_cost_of("fp16", &f16, NULL);
                cJSON_AddNumberToObject(o, "predicted", ar_predict(p, g, &f16, r->emul.M, r->emul.N, r->emul.K, 0) /
                                                            ar_predict(p, g, &c, r->emul.M, r->emul.N, r->emul.K, e->k));
            }
            cJSON_AddItemToArray(pts, o);
        }
    }
    return d;
}

void ar_report_print(const ar_report *r, FILE *f) {
    fprintf(f, "apex4 report: accuracy model %s, budget %s <= %g%s, prefill M=%d, decode M=%d (LLaMA-2-7B + 70B layers)\n",
            r->acc_model >= 0 ? r->models[r->acc_model] : "(none)", r->use_dppl ? "dppl" : "KLD", r->budget,
            r->budget_default ? " (default)" : "", r->prefill_m, r->decode_m);
    fprintf(f, "%-10s %6s  %-16s %8s %-9s %-16s %8s\n", "GPU", "rho", "prefill mode", "xFP16", "", "decode mode", "xFP16");
    for (int s = 0; s < r->nsel; s++) {
        const ar_gpu_result *gr = &r->res[s];
        const int m0 = gr->rec[0], m1 = gr->rec[1];
        fprintf(f, "%-10s %6.1f  %-16s %8.2f %-9s %-16s %8.2f\n", r->gpus.g[r->sel[s]].name, r->gpus.g[r->sel[s]].rho,
                m0 >= 0 ? r->modes[m0].mode : "fp16", m0 >= 0 ? gr->sp[0][m0][2] : 1.0,
                m0 >= 0 ? (gr->meas[0][m0] ? "measured" : "predicted") : "", m1 >= 0 ? r->modes[m1].mode : "fp16",
                m1 >= 0 ? gr->sp[1][m1][2] : 1.0);
    }
    fprintf(f, "speed model fitted on %s (%s): held-out median |error| %.1f%% (max %.1f%%, %d fitted, %d held out)\n",
            r->gpus.g[r->ref_gpu].name, r->bench[0].path, 100 * r->val_median, 100 * r->val_max, r->val_nfit, r->val_nheld);
    for (int i = 0; i < AR_NPAPER; i++) {
        const ar_paper_point *q = &ar_paper_points[i];
        fprintf(f, "paper point %-9s %-10s measured %.2f-%.2fx, predicted %.2fx\n", q->gpu, q->mode, q->lo, q->hi, ar_paper_pred(r, q));
    }
    fprintf(f, "rho emulation: %s\n", r->emul.n ? r->emul.path : "not measured");
}
