/* reports/cmd_report.c — apex4 report: argument parsing and output of the accuracy/speed Pareto
 * report (reports/report.h does the work). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "report.h"
#include "ax_util.h"

int cmd_report(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
            "usage: apex4 report [--results 'reports/results/*.json'] [--bench 'reports/bench/*.json']\n"
            "                    [--gpus all|A100-SXM,...] [--max-dppl X | --max-kld X] [--modes LIST] [--model NAME]\n"
            "                    [--gpu-table reports/gpus.json] [--prefill-m 2048] [--decode-m 16]\n"
            "                    [--out report.html] [--json report.json]\n"
            "  Which W4A4 granularity pays off on which GPU: reads results files (apex4 eval ppl | zeroshot), bench\n"
            "  files (apex4 bench gemm | bench rho) and the GPU table; fits the rho speed model on the measured points\n"
            "  (held-out validation), predicts the GPUs without measurements, and writes the Pareto fronts and the\n"
            "  recommended mode per GPU under the accuracy budget (default --max-kld %g) as one self-contained HTML page\n"
            "  (SVG plots), a JSON document and a table on stdout. Patterns are glob(3), comma-separated.\n"
            "  --modes default: %s\n",
            AR_DEFAULT_KLD, AR_DEFAULT_MODES);
}

int cmd_report(int argc, char **argv) {
    ar_opts o;
    memset(&o, 0, sizeof o);
    o.max_dppl = o.max_kld = NAN;
    const char *out = NULL, *json = NULL;
    char err[AX_ERR_LEN];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (!v) { fprintf(stderr, "apex4 report: unknown or incomplete option '%s'\n", a); usage(stderr); return 2; }
        i++;
        if (!strcmp(a, "--results")) o.results_glob = v;
        else if (!strcmp(a, "--bench")) o.bench_glob = v;
        else if (!strcmp(a, "--gpus")) o.gpus = v;
        else if (!strcmp(a, "--modes")) o.modes = v;
        else if (!strcmp(a, "--model")) o.model = v;
        else if (!strcmp(a, "--gpu-table")) o.gpus_path = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--json")) json = v;
        else if (!strcmp(a, "--max-dppl") || !strcmp(a, "--max-kld")) {
            double d;
            if (ax_parse_double(v, 0, 1e9, a, &d, err)) { fprintf(stderr, "apex4 report: %s\n", err); return 2; }
            if (!strcmp(a, "--max-dppl")) o.max_dppl = d; else o.max_kld = d;
        } else if (!strcmp(a, "--prefill-m") || !strcmp(a, "--decode-m")) {
            if (ax_parse_long(v, 1, 1000000, a, &x, err)) { fprintf(stderr, "apex4 report: %s\n", err); return 2; }
            if (!strcmp(a, "--prefill-m")) o.prefill_m = (int)x; else o.decode_m = (int)x;
        } else { fprintf(stderr, "apex4 report: unknown option '%s'\n", a); usage(stderr); return 2; }
    }
    if ((out && ax_check_out_path(out, "--out", err)) || (json && ax_check_out_path(json, "--json", err))) {
        fprintf(stderr, "apex4 report: %s\n", err);
        return 2;
    }
    ar_report *r = NULL;
    if (ar_report_build(&o, &r, err)) { fprintf(stderr, "apex4 report: %s\n", err); return 1; }
    int rc = 0;
    if (out && ar_report_write_html(r, out, err)) { fprintf(stderr, "apex4 report: %s\n", err); rc = 1; }
    if (!rc && json) {
        cJSON *d = ar_report_json(r);
        if (!d || ax_write_json(json, d, err)) { fprintf(stderr, "apex4 report: %s\n", d ? err : "out of memory"); rc = 1; }
        cJSON_Delete(d);
    }
    if (!rc) {
        ar_report_print(r, stdout);
        if (out) printf("# wrote %s\n", out);
        if (json) printf("# wrote %s\n", json);
    }
    ar_report_free(r);
    return rc;
}
