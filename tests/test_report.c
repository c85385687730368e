/* test_report.c — apex4 report: GPU table (rho), speed model (fit, held-out validation), the page (XML),
 * the JSON's keys, bad inputs. Runs from the repository root (make test); the program is $APEX4_BIN. */
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include "testutil.h"
#include "report.h"
#include "speedmodel.h"

static const char *bin(void) {
    const char *b = getenv("APEX4_BIN");
    return b ? b : "build/apex4";
}

/* Run `apex4 <args>` with stdout/stderr into dir/out.txt, dir/err.txt; returns the exit status. */
static int run(const char *dir, const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s >%s/out.txt 2>%s/err.txt", bin(), args, dir, dir);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static char *slurp(const char *path) {
    char *t = NULL;
    size_t n = 0;
    char err[AX_ERR_LEN];
    if (ax_read_file(path, &t, &n, err)) return NULL;
    return t;
}

static int exists(const char *p) { struct stat st; return stat(p, &st) == 0; }

/* Files in dir whose name starts with prefix (to find leftover temporaries). */
static int count_prefix(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) n += !strncmp(e->d_name, prefix, strlen(prefix));
    if (d) closedir(d);
    return n;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

/* The paper's rho values by hand from the datasheet figures (dense INT4 tensor-core TOPS / FP32 TFLOPS):
 * RTX 3090 568 / 35.6 = 15.96, A40 598.7 / 37.4 = 16.01, A100 1248 / 19.5 = 64.0, L40S 733 / 91.6 = 8.00. */
Test(report, rho_of_the_paper_gpus) {
    ar_gpus t;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ar_gpus_load("reports/gpus.json", &t, err), 0, "%s", err);
    const struct { const char *name; double rho; } want[] = {{"RTX-3090", 16}, {"A40", 16}, {"A100-SXM", 64}, {"L40S", 8}};
    for (int i = 0; i < 4; i++) {
        const ar_gpu *g = ar_gpus_find(&t, want[i].name);
        cr_assert_not_null(g, "%s missing", want[i].name);
        cr_expect(fabs(g->rho - want[i].rho) < 0.1, "%s: rho %.3f, paper %.0f", want[i].name, g->rho, want[i].rho);
        cr_expect(g->rho_int4, "%s: rho from INT4", want[i].name);
    }
    /* Hopper has no INT4 tensor cores: INT8 1978.9 / 66.9 = 29.58 */
    const ar_gpu *h = ar_gpus_find(&t, "NVIDIA H200");
    cr_assert_not_null(h);
    cr_expect(!h->rho_int4 && fabs(h->rho - 1978.9 / 66.9) < 1e-9);
    cr_expect(t.n >= 10);
}

/* Synthetic points from parameters chosen here (the model's own forward pass produces the data; the
 * test checks that the fit inverts it: the parameters come back). */
Test(report, fit_recovers_known_parameters) {
    ar_gpus t;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ar_gpus_load("reports/gpus.json", &t, err), 0, "%s", err);
    const ar_gpu *g = ar_gpus_find(&t, "H200");
    const ar_params truth = {.eta_tc = 0.25, .eta_core = 0.18, .eta_mem = 0.8, .t0 = 12e-6, .eta_f16 = 0.75,
                             .t0_f16 = 7e-6, .eta_tc8 = 0.85, .t1 = 9e-6, .mid = 1.3, .overlap = 0.4};
    static const char *const modes[] = {"fp16", "w4a4-pc", "w4a4-g32", "w4a4-g128", "w4a4-mixed-g128", "w8a8", "atom-g128-o128"};
    static const int Ms[] = {1, 16, 128, 512, 2048, 4096}, NK[][2] = {{4096, 4096}, {11008, 4096}, {1024, 8192}, {8192, 28672}};
    ar_point pts[7 * 6 * 4];
    int n = 0;
    for (int m = 0; m < 7; m++)
        for (int i = 0; i < 6; i++)
            for (int s = 0; s < 4; s++) {
                ar_mode_cost c;
                cr_assert_eq(ar_mode_cost_of(modes[m], &c, err), 0, "%s", err);
                ar_point *p = &pts[n++];
                memset(p, 0, sizeof *p);
                snprintf(p->mode, sizeof p->mode, "%s", modes[m]);
                p->M = Ms[i]; p->N = NK[s][0]; p->K = NK[s][1];
                p->t = ar_predict(&truth, g, &c, p->M, p->N, p->K, 0);
            }
    ar_params fit;
    double rms;
    cr_assert_eq(ar_fit(pts, n, g, &fit, &rms, err), 0, "%s", err);
    cr_expect(rms < 1e-3, "rms log error %g on noise-free data", rms);
    const double *a = &truth.eta_tc, *b = &fit.eta_tc;
    static const char *const names[] = {"eta_tc", "eta_core", "eta_mem", "t0", "eta_f16", "t0_f16", "eta_tc8", "t1", "mid", "overlap"};
    for (int i = 0; i < AR_NPARAMS; i++)
        cr_expect(fabs(b[i] / a[i] - 1) < 0.05, "%s: fitted %g, true %g", names[i], b[i], a[i]);
}

/* The acceptance: held-out median |error| <= 10 % on the committed H200 bench file. */
Test(report, heldout_error_on_the_h200_bench_file) {
    ar_opts o;
    memset(&o, 0, sizeof o);
    o.max_dppl = o.max_kld = NAN;
    o.bench_glob = "reports/bench/nvidia-h200.json";
    ar_report *r = NULL;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ar_report_build(&o, &r, err), 0, "%s", err);
    const double e = ar_report_heldout_err(r);
    cr_expect(e > 0 && e <= 0.10, "held-out median abs error %.4f", e);
    ar_report_free(r);
}

/* The page and every embedded SVG parse as XML (Python's xml.dom.minidom, an independent parser), and
 * the JSON has the keys the issue names. */
Test(report, html_svg_xml_and_json_keys) {
    char dir[64], args[1024], path[256], cmd[1024];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(args, sizeof args, "report --out %s/r.html --json %s/r.json", dir, dir);
    cr_assert_eq(run(dir, args), 0, "apex4 report failed");
    snprintf(cmd, sizeof cmd,
             "python3 -c \"import sys,re,xml.dom.minidom as m; t=open(sys.argv[1]).read(); d=m.parseString(t); "
             "s=re.findall(r'<svg.*?</svg>', t, re.S); [m.parseString(x) for x in s]; "
             "sys.exit(0 if len(s) >= 3 and len(d.getElementsByTagName('svg')) == len(s) and 'http' not in "
             "''.join(re.findall(r'(?:src|href)=\\\"[^\\\"]*', t)) else 1)\" %s/r.html", dir);
    cr_expect_eq(system(cmd), 0, "page or SVG not well-formed XML, fewer than 3 plots, or a network reference");
    snprintf(path, sizeof path, "%s/r.json", dir);
    char *txt = slurp(path);
    cr_assert_not_null(txt);
    cJSON *d = cJSON_Parse(txt);
    free(txt);
    cr_assert_not_null(d);
    const cJSON *gpus = cJSON_GetObjectItem(d, "gpus"), *x;
    cr_expect(cJSON_IsArray(gpus) && cJSON_GetArraySize(gpus) >= 10);
    cJSON_ArrayForEach(x, gpus) cr_expect(cJSON_IsString(cJSON_GetObjectItem(x, "name")) && cJSON_IsNumber(cJSON_GetObjectItem(x, "rho")));
    const cJSON *v = cJSON_GetObjectItem(d, "validation");
    const cJSON *he = cJSON_GetObjectItem(v, "heldout_median_abs_err");
    cr_expect(cJSON_IsNumber(he) && he->valuedouble > 0 && he->valuedouble < 1);
    const cJSON *pp = cJSON_GetObjectItem(v, "paper_points");
    cr_expect(cJSON_IsArray(pp) && cJSON_GetArraySize(pp) == 2);
    cJSON_ArrayForEach(x, pp) {
        cr_expect(cJSON_IsString(cJSON_GetObjectItem(x, "gpu")) && cJSON_IsString(cJSON_GetObjectItem(x, "mode")));
        cr_expect(cJSON_IsNumber(cJSON_GetObjectItem(x, "measured_lo")) && cJSON_IsNumber(cJSON_GetObjectItem(x, "measured_hi")) &&
                  cJSON_IsNumber(cJSON_GetObjectItem(x, "predicted")));
    }
    const cJSON *rec = cJSON_GetObjectItem(d, "recommendations");
    cr_expect(cJSON_IsArray(rec) && cJSON_GetArraySize(rec) == cJSON_GetArraySize(gpus));
    cJSON_ArrayForEach(x, rec) cr_expect(cJSON_IsString(cJSON_GetObjectItem(x, "gpu")) && cJSON_IsString(cJSON_GetObjectItem(x, "mode")));
    cJSON_Delete(d);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}

/* A bench rho file is read (the emulation section is "measured"); without one it says "not measured". */
Test(report, emulation_file_read_or_not_measured) {
    char dir[64], args[1024], path[256], cmd[512];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    snprintf(path, sizeof path, "%s/rho.json", dir);
    write_file(path, "{\"apex4_version\":\"" APEX4_VERSION "\",\"command\":\"bench rho\",\"device\":{\"name\":\"NVIDIA H200\"},"
                     "\"shape\":{\"M\":2048,\"N\":4096,\"K\":4096},\"rho\":["
                     "{\"mode\":\"w4a4-g128\",\"k\":0,\"ms_median\":0.33,\"fp16_ms_median\":0.093},"
                     "{\"mode\":\"w4a4-g128\",\"k\":4,\"ms_median\":0.45,\"fp16_ms_median\":0.093}]}");
    for (int with = 0; with < 2; with++) {
        snprintf(args, sizeof args, "report --bench reports/bench/nvidia-h200.json%s%s --json %s/r.json", with ? "," : "",
                 with ? path : "", dir);
        cr_assert_eq(run(dir, args), 0);
        char jp[256];
        snprintf(jp, sizeof jp, "%s/r.json", dir);
        char *txt = slurp(jp);
        cr_assert_not_null(txt);
        cJSON *d = cJSON_Parse(txt);
        free(txt);
        const cJSON *em = cJSON_GetObjectItem(d, "emulation");
        const char *st = cJSON_GetStringValue(cJSON_GetObjectItem(em, "status"));
        cr_assert_not_null(st);
        if (with) {
            cr_expect_str_eq(st, "measured");
            cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(em, "points")), 2);
        } else
            cr_expect(strstr(st, "not measured") != NULL, "status '%s'", st);
        cJSON_Delete(d);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}

/* Bad inputs: non-zero exit, a message naming the file or option, no HTML (and no temporary) left. */
static void expect_refused(const char *dir, const char *opts, const char *msg1, const char *msg2) {
    char args[2048], html[256], errp[256];
    snprintf(html, sizeof html, "%s/r.html", dir);
    snprintf(args, sizeof args, "report %s --out %s", opts, html);
    const int rc = run(dir, args);
    cr_expect_neq(rc, 0, "accepted: %s", opts);
    snprintf(errp, sizeof errp, "%s/err.txt", dir);
    char *e = slurp(errp);
    cr_assert_not_null(e);
    cr_expect(strstr(e, msg1) && strstr(e, msg2), "for '%s' expected '%s' and '%s' in: %s", opts, msg1, msg2, e);
    free(e);
    cr_expect(!exists(html), "HTML written for %s", opts);
    cr_expect_eq(count_prefix(dir, "r.html"), 0, "temporary left for %s", opts);
}

Test(report, bad_inputs_refused) {
    char dir[64], p[256], o[1024], cmd[512];
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    /* a results file of another schema (a bench file's command) */
    snprintf(p, sizeof p, "%s/other.json", dir);
    write_file(p, "{\"apex4_version\":\"" APEX4_VERSION "\",\"command\":\"bench gemm\",\"modes\":[]}");
    snprintf(o, sizeof o, "--results %s", p);
    expect_refused(dir, o, p, "not an apex4 results file");
    /* a results file of another version */
    snprintf(p, sizeof p, "%s/old.json", dir);
    write_file(p, "{\"apex4_version\":\"9.3.0\",\"command\":\"eval ppl\",\"model\":\"x\",\"modes\":[]}");
    snprintf(o, sizeof o, "--results %s", p);
    expect_refused(dir, o, p, "apex4_version 9.3.0");
    /* a GPU name not in the table */
    expect_refused(dir, "--gpus A100-SXM,GTX-9999", "--gpus", "unknown GPU 'GTX-9999'");
    /* a bench file without the modes asked for (only the FP16 baseline) */
    snprintf(p, sizeof p, "%s/bench.json", dir);
    write_file(p, "{\"apex4_version\":\"" APEX4_VERSION "\",\"command\":\"bench gemm\",\"device\":{\"name\":\"NVIDIA H200\"},"
                  "\"gemm\":[{\"impl\":\"cublas-fp16\",\"M\":16,\"N\":4096,\"K\":4096,\"ms_median\":0.02}]}");
    snprintf(o, sizeof o, "--bench %s --modes w4a4-g128", p);
    expect_refused(dir, o, p, "mode 'w4a4-g128'");
    /* a glob that matches nothing, and one through a missing directory (unreadable) */
    snprintf(o, sizeof o, "--results '%s/*.nothing'", dir);
    expect_refused(dir, o, "--results", "matches no file");
    snprintf(o, sizeof o, "--bench '%s/missing/*.json'", dir);
    expect_refused(dir, o, "--bench", "cannot be read");
    /* both budgets */
    expect_refused(dir, "--max-dppl 1 --max-kld 0.1", "--max-dppl", "one budget");
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}
