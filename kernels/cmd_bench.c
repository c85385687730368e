/* kernels/cmd_bench.c — apex4 bench gemm: the apex4 GEMM kernels against cuBLAS FP16 (fp32
 * accumulate) and cuBLAS INT8 in the same run, per LLaMA-2 layer shape and M, plus the activation
 * quantizer against a measured device-to-device copy. Thin front end over ak_bench_* (kernels/ak.h):
 * argument parsing, ratios, JSON (reports/ax_util.h envelope) and a table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "aq.h"
#include "ak.h"
#include "ax_util.h"
#include "ak_emul.h"

int cmd_bench_gemm(int argc, char **argv);
int cmd_bench_rho(int argc, char **argv);

typedef struct { const char *model, *layer; int N, K; } lshape;

static const lshape all_shapes[] = {
    {"llama2-7b", "q_proj/k_proj/v_proj/o_proj", 4096, 4096},
    {"llama2-7b", "gate_proj/up_proj", 11008, 4096},
    {"llama2-7b", "down_proj", 4096, 11008},
    {"llama2-70b", "q_proj/o_proj", 8192, 8192},
    {"llama2-70b", "k_proj/v_proj", 1024, 8192},
    {"llama2-70b", "gate_proj/up_proj", 28672, 8192},
    {"llama2-70b", "down_proj", 8192, 28672},
};
#define NSHAPES (int)(sizeof all_shapes / sizeof all_shapes[0])

static void usage(FILE *f) {
    fprintf(f,
            "usage: apex4 bench gemm [--shapes llama2-7b,llama2-70b] [--m 1,16,128,512,2048,4096]\n"
            "                        [--modes LIST] [--paths int8[,int4,wgmma,wgmma-noepi]] [--runs 25]\n"
            "                        [--warmup 5]\n"
            "                        [--no-quant | --quant-only] [--out bench.json]\n"
            "  Times cuBLAS FP16, cuBLAS INT8 and the apex4 kernels per layer shape (N, K) and M: CUDA events,\n"
            "  warm-up, median of --runs (>= 20), inputs rotated past the L2, never zeros. TOPS = 2*M*N*K / t;\n"
            "  ratios are t(cuBLAS) / t(kernel). Also the activation quantizer in GB/s against a D2D copy, and\n"
            "  next to it the fused RMSNorm + quantizer of the engine (x += r written back, norm, quantize:\n"
            "  ak_rmsnorm_quantize_x_dev; bytes = x, r read + x written + w + codes + scales), M >= 512 only.\n"
            "  --quant-only: only the quantizer rows (no GEMMs).\n"
            "  --modes default: w4a4-pc,w4a4-g32,w4a4-g64,w4a4-g128,w4a4-g256,w4a4-mixed-g128,atom-g128-o128,w8a8\n"
            "  --paths wgmma / wgmma-noepi (Hopper): the wgmma kernel with its epilogue, and the same kernel with the\n"
            "          epilogue's conversion and scaling switched off (time difference = the epilogue the overlap\n"
            "          does not hide); a path that does not serve a mode prints a '#' line\n");
}

/* Split a comma list in place; -1 when it has more than max entries (never silently dropped). */
static int split_list(char *s, char **out, int max) {
    int n = 0;
    for (char *t = strtok(s, ","); t; t = strtok(NULL, ",")) {
        if (n == max) return -1;
        out[n++] = t;
    }
    return n;
}

/* --m: a comma list of at most `max` integers 1..1000000 (ax_parse_long each); count or -1 with err. */
static int parse_ints(char *s, int *out, int max, char *err) {
    char *t[16];
    int n = split_list(s, t, max < 16 ? max : 16);
    if (n < 0) { ax_seterr(err, "--m: more than %d values", max < 16 ? max : 16); return -1; }
    if (n == 0) { ax_seterr(err, "--m: expected a comma list of positive integers, got an empty list"); return -1; }
    for (int i = 0; i < n; i++) {
        long v;
        if (ax_parse_long(t[i], 1, 1000000, "--m", &v, err)) return -1;
        out[i] = (int)v;
    }
    return n;
}

static cJSON *row_json(const lshape *s, int M, const char *impl, const char *mode, const char *path, double med,
                       double mn, double mx, double t16, double t8) {
    cJSON *o = cJSON_CreateObject();
    double ops = 2.0 * M * (double)s->N * (double)s->K;
    cJSON_AddStringToObject(o, "model", s->model);
    cJSON_AddStringToObject(o, "layer", s->layer);
    cJSON_AddNumberToObject(o, "M", M);
    cJSON_AddNumberToObject(o, "N", s->N);
    cJSON_AddNumberToObject(o, "K", s->K);
    cJSON_AddStringToObject(o, "impl", impl);
    if (mode) cJSON_AddStringToObject(o, "mode", mode);
    if (path) cJSON_AddStringToObject(o, "path", path);
    cJSON_AddNumberToObject(o, "ms_median", med);
    cJSON_AddNumberToObject(o, "ms_min", mn);
    cJSON_AddNumberToObject(o, "ms_max", mx);
    cJSON_AddNumberToObject(o, "tops", ops / (med * 1e-3) / 1e12);
    if (t16 > 0) cJSON_AddNumberToObject(o, "vs_cublas_fp16", t16 / med);
    if (t8 > 0) cJSON_AddNumberToObject(o, "vs_cublas_int8", t8 / med);
    return o;
}

/* The results file's "device" object (full: also the memory facts bench gemm records) and its "method"
 * object with runs, warm-up and the timing rule; returns "method" for the caller's additions. */
static cJSON *add_device_method(cJSON *doc, const ak_devinfo *di, int full, int runs, int warmup) {
    cJSON *dev = cJSON_AddObjectToObject(doc, "device");
    cJSON_AddStringToObject(dev, "name", di->name);
    cJSON_AddNumberToObject(dev, "sms", di->sms);
    char cc[16];
    snprintf(cc, sizeof cc, "%d.%d", di->cc_major, di->cc_minor);
    cJSON_AddStringToObject(dev, "compute_capability", cc);
    cJSON_AddNumberToObject(dev, "sm_clock_mhz_max", di->sm_clock_mhz);
    if (full) {
        cJSON_AddNumberToObject(dev, "mem_clock_mhz", di->mem_clock_mhz);
        cJSON_AddNumberToObject(dev, "mem_bus_bits", di->mem_bus_bits);
        cJSON_AddNumberToObject(dev, "l2_bytes", (double)di->l2_bytes);
        cJSON_AddNumberToObject(dev, "mem_gib", di->mem_gib);
    }
    cJSON_AddNumberToObject(dev, "cuda_driver", di->driver);
    cJSON_AddNumberToObject(dev, "cuda_runtime", di->runtime);
    cJSON *meth = cJSON_AddObjectToObject(doc, "method");
    cJSON_AddNumberToObject(meth, "runs", runs);
    cJSON_AddNumberToObject(meth, "warmup", warmup);
    cJSON_AddStringToObject(meth, "timing", "CUDA events around each run, median; inputs rotated over copies totalling "
                                            ">= 3x L2; random non-zero codes/scales");
    return meth;
}

int cmd_bench_gemm(int argc, char **argv) {
    char shapes_buf[128] = "llama2-7b,llama2-70b", m_buf[128] = "1,16,128,512,2048,4096";
    char modes_buf[512] = "w4a4-pc,w4a4-g32,w4a4-g64,w4a4-g128,w4a4-g256,w4a4-mixed-g128,atom-g128-o128,w8a8";
    char paths_buf[64] = "int8";
    const char *out = NULL;
    int runs = 25, warmup = 5, do_quant = 1, do_gemm = 1;
    char err[AX_ERR_LEN];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *buf = NULL;
        size_t cap = 0;
        long x;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--no-quant")) do_quant = 0;
        else if (!strcmp(a, "--quant-only")) do_gemm = 0;
        else if (v && !strcmp(a, "--shapes")) { buf = shapes_buf; cap = sizeof shapes_buf; i++; }
        else if (v && !strcmp(a, "--m")) { buf = m_buf; cap = sizeof m_buf; i++; }
        else if (v && !strcmp(a, "--modes")) { buf = modes_buf; cap = sizeof modes_buf; i++; }
        else if (v && !strcmp(a, "--paths")) { buf = paths_buf; cap = sizeof paths_buf; i++; }
        else if (v && !strcmp(a, "--runs")) {
            if (ax_parse_long(v, 20, 10000, "--runs", &x, err)) { fprintf(stderr, "apex4 bench gemm: %s\n", err); return 2; }
            runs = (int)x;
            i++;
        } else if (v && !strcmp(a, "--warmup")) {
            if (ax_parse_long(v, 1, 1000, "--warmup", &x, err)) { fprintf(stderr, "apex4 bench gemm: %s\n", err); return 2; }
            warmup = (int)x;
            i++;
        } else if (v && !strcmp(a, "--out")) { out = v; i++; }
        else { fprintf(stderr, "apex4 bench gemm: unknown or incomplete option '%s'\n", a); usage(stderr); return 2; }
        if (buf && (size_t)snprintf(buf, cap, "%s", v) >= cap) {
            fprintf(stderr, "apex4 bench gemm: %s: list too long (at most %zu characters)\n", a, cap - 1);
            return 2;
        }
    }
    if (!do_quant && !do_gemm) {
        fprintf(stderr, "apex4 bench gemm: --no-quant and --quant-only together leave nothing to run\n");
        return 2;
    }
    int ms[16], nmv = parse_ints(m_buf, ms, 16, err);
    if (nmv < 0) { fprintf(stderr, "apex4 bench gemm: %s\n", err); return 2; }
    char *snames[8], *mnames[32], *pnames[4];
    int ns = split_list(shapes_buf, snames, 8), nm = split_list(modes_buf, mnames, 32), np = split_list(paths_buf, pnames, 4);
    if (ns < 0 || nm < 0 || np < 0) {
        fprintf(stderr, "apex4 bench gemm: too many entries in %s (at most %d)\n",
                ns < 0 ? "--shapes" : nm < 0 ? "--modes" : "--paths", ns < 0 ? 8 : nm < 0 ? 32 : 4);
        return 2;
    }
    int use_shape[NSHAPES] = {0};
    for (int i = 0; i < ns; i++) {
        int hit = 0;
        for (int s = 0; s < NSHAPES; s++)
            if (!strcmp(snames[i], all_shapes[s].model)) { use_shape[s] = 1; hit = 1; }
        if (!hit) { fprintf(stderr, "apex4 bench gemm: unknown shape set '%s' (llama2-7b, llama2-70b)\n", snames[i]); return 2; }
    }
    aq_mode modes[32];
    for (int i = 0; i < nm; i++)
        if (aq_mode_parse(mnames[i], &modes[i], err)) { fprintf(stderr, "apex4 bench gemm: --modes: %s\n", err); return 2; }
        else if (!aq_mode_is_integer(&modes[i])) {
            fprintf(stderr, "apex4 bench gemm: --modes: '%s' has no integer kernels\n", modes[i].name);
            return 2;
        }
    if (nm < 1) { fprintf(stderr, "apex4 bench gemm: --modes is empty\n"); return 2; }
    ak_path paths[4];
    if (np < 1) { fprintf(stderr, "apex4 bench gemm: --paths needs int8, int4, wgmma and/or wgmma-noepi\n"); return 2; }
    for (int i = 0; i < np; i++) {
        if (!strcmp(pnames[i], "int8")) paths[i] = AK_PATH_INT8;
        else if (!strcmp(pnames[i], "int4")) paths[i] = AK_PATH_INT4;
        else if (!strcmp(pnames[i], "wgmma")) paths[i] = AK_PATH_WGMMA;
        else if (!strcmp(pnames[i], "wgmma-noepi")) paths[i] = AK_PATH_WGMMA_NOEPI;
        else { fprintf(stderr, "apex4 bench gemm: unknown path '%s' (int8, int4, wgmma, wgmma-noepi)\n", pnames[i]); return 2; }
        for (int j = 0; j < i; j++)
            if (paths[j] == paths[i]) {
                fprintf(stderr, "apex4 bench gemm: --paths: '%s' given twice\n", pnames[i]);
                return 2;
            }
    }

    ak_devinfo di;
    ak_bench *b = NULL;
    if (ak_device_info(&di, err) || ak_bench_new(&b, err)) { fprintf(stderr, "apex4 bench gemm: %s\n", err); return 2; }
    double copy_gbs = 0;
    if (ak_bench_copy(b, (size_t)1 << 30, runs, &copy_gbs, err)) {
        fprintf(stderr, "apex4 bench gemm: %s\n", err);
        ak_bench_free(b);
        return 1;
    }
    printf("# %s: %d SMs, sm_%d%d, SM clock %d MHz, memory clock %d MHz, L2 %ld MiB, driver %d, runtime %d\n",
           di.name, di.sms, di.cc_major, di.cc_minor, di.sm_clock_mhz, di.mem_clock_mhz, di.l2_bytes >> 20, di.driver,
           di.runtime);
    printf("# device-to-device copy: %.0f GB/s (read + write)\n", copy_gbs);
    cJSON *doc = ax_envelope_new("bench gemm");
    cJSON *meth = add_device_method(doc, &di, 1, runs, warmup);
    cJSON_AddStringToObject(meth, "tops", "2*M*N*K / median time");
    cJSON_AddNumberToObject(doc, "copy_gbs", copy_gbs);
    cJSON *rows = cJSON_AddArrayToObject(doc, "gemm");
    int fails = 0;

    printf("%-10s %-28s %5s %6s %6s  %-22s %9s %8s %7s %7s\n", "model", "layer", "M", "N", "K", "impl", "ms", "TOPS",
           "xFP16", "xINT8");
    for (int s = 0; s < NSHAPES; s++) {
        if (!use_shape[s] || !do_gemm) continue;
        const lshape *L = &all_shapes[s];
        for (int mi = 0; mi < nmv; mi++) {
            int M = ms[mi];
            double t16 = 0, t8 = 0, med, mn, mx;
            double ops = 2.0 * M * (double)L->N * (double)L->K;
            if (!ak_bench_gemm(b, AK_IMPL_CUBLAS_FP16, NULL, AK_PATH_INT8, M, L->N, L->K, warmup, runs, &med, &mn, &mx, err)) {
                t16 = med;
                cJSON_AddItemToArray(rows, row_json(L, M, "cublas-fp16", NULL, NULL, med, mn, mx, t16, 0));
                printf("%-10s %-28s %5d %6d %6d  %-22s %9.4f %8.1f %7.2f %7s\n", L->model, L->layer, M, L->N, L->K,
                       "cublas-fp16", med, ops / med / 1e9, 1.0, "");
            } else { printf("# cublas-fp16 M=%d N=%d K=%d: %s\n", M, L->N, L->K, err); fails++; }
            if (!ak_bench_gemm(b, AK_IMPL_CUBLAS_INT8, NULL, AK_PATH_INT8, M, L->N, L->K, warmup, runs, &med, &mn, &mx, err)) {
                t8 = med;
                cJSON_AddItemToArray(rows, row_json(L, M, "cublas-int8", NULL, NULL, med, mn, mx, t16, t8));
                printf("%-10s %-28s %5d %6d %6d  %-22s %9.4f %8.1f %7.2f %7.2f\n", L->model, L->layer, M, L->N, L->K,
                       "cublas-int8", med, ops / med / 1e9, t16 > 0 ? t16 / med : 0, 1.0);
            } else printf("# cublas-int8 M=%d N=%d K=%d: %s\n", M, L->N, L->K, err);
            fflush(stdout);
            for (int k = 0; k < nm; k++)
                for (int p = 0; p < np; p++) {
                    const char *pn = ak_path_name(paths[p]);
                    if (ak_bench_gemm(b, AK_IMPL_APEX4, &modes[k], paths[p], M, L->N, L->K, warmup, runs, &med, &mn, &mx, err)) {
                        printf("# %s/%s M=%d N=%d K=%d: %s\n", modes[k].name, pn, M, L->N, L->K, err);
                        fails++;
                        continue;
                    }
                    char impl[80];
                    snprintf(impl, sizeof impl, "%.31s/%.11s", modes[k].name, pn);
                    cJSON *rj = row_json(L, M, "apex4", modes[k].name, pn, med, mn, mx, t16, t8);
                    cJSON_AddNumberToObject(rj, "k_splits", ak_gemm_splits(&modes[k], M, L->N, L->K));
                    cJSON_AddItemToArray(rows, rj);
                    printf("%-10s %-28s %5d %6d %6d  %-22s %9.4f %8.1f %7.2f %7.2f\n", L->model, L->layer, M, L->N, L->K,
                           impl, med, ops / med / 1e9, t16 > 0 ? t16 / med : 0, t8 > 0 ? t8 / med : 0);
                    fflush(stdout);
                }
        }
    }
    if (do_quant) {
        cJSON *qa = cJSON_AddArrayToObject(doc, "quant");
        static const int qK[] = {4096, 8192, 11008, 28672};
        printf("\n%-16s %5s %6s %9s %8s %8s   %9s %8s %8s\n", "quantize-x mode", "M", "K", "ms", "GB/s", "of copy",
               "fused ms", "GB/s", "of copy");
        for (int k = 0; k < nm; k++)
            for (int qi = 0; qi < 4; qi++)
                for (int mi = 0; mi < nmv; mi++) {
                    int M = ms[mi], K = qK[qi];
                    double med, bytes;
                    if (M < 512) continue;   /* launch-bound below: the bandwidth target is for large M */
                    if (ak_bench_quant(b, &modes[k], M, K, warmup, runs, &med, &bytes, err)) {
                        printf("# quantize %s M=%d K=%d: %s\n", modes[k].name, M, K, err);
                        continue;
                    }
                    double gbs = bytes / (med * 1e-3) / 1e9;
                    cJSON *o = cJSON_CreateObject();
                    cJSON_AddStringToObject(o, "mode", modes[k].name);
                    cJSON_AddNumberToObject(o, "M", M);
                    cJSON_AddNumberToObject(o, "K", K);
                    cJSON_AddNumberToObject(o, "ms_median", med);
                    cJSON_AddNumberToObject(o, "bytes", bytes);
                    cJSON_AddNumberToObject(o, "gbs", gbs);
                    cJSON_AddNumberToObject(o, "fraction_of_copy", gbs / copy_gbs);
                    cJSON_AddItemToArray(qa, o);
                    printf("%-16s %5d %6d %9.4f %8.0f %7.0f%%", modes[k].name, M, K, med, gbs, 100.0 * gbs / copy_gbs);
                    /* the fused RMSNorm (+ residual add) + quantizer on the same shape */
                    double fmed, fbytes;
                    if (ak_bench_rmsnorm_quant(b, &modes[k], M, K, 1, warmup, runs, &fmed, &fbytes, err)) {
                        printf("   # fused: %s\n", err);
                        fails++;
                        continue;
                    }
                    double fgbs = fbytes / (fmed * 1e-3) / 1e9;
                    cJSON *fo = cJSON_AddObjectToObject(o, "fused_rmsnorm_residual");
                    cJSON_AddNumberToObject(fo, "ms_median", fmed);
                    cJSON_AddNumberToObject(fo, "bytes", fbytes);
                    cJSON_AddNumberToObject(fo, "gbs", fgbs);
                    cJSON_AddNumberToObject(fo, "fraction_of_copy", fgbs / copy_gbs);
                    printf("   %9.4f %8.0f %7.0f%%\n", fmed, fgbs, 100.0 * fgbs / copy_gbs);
                    fflush(stdout);
                }
    }
    ak_bench_free(b);
    int rc = fails ? 1 : 0;
    if (out && ax_write_json(out, doc, err)) { fprintf(stderr, "apex4 bench gemm: %s\n", err); rc = 1; }
    else if (out) printf("# wrote %s\n", out);
    cJSON_Delete(doc);
    return rc;
}

/* ---- apex4 bench rho: the rho-emulation curve (benchmark only) -------------------------------- */

static void rho_usage(FILE *f) {
    fprintf(f,
            "usage: apex4 bench rho [--modes w4a4-g128,w4a4-g64,w4a4-pc,w4a4-mixed-g128] [--k 0,1,2,4,8,16]\n"
            "                       [--shape 2048,4096,4096] [--runs 25] [--warmup 5] [--out rho.json]\n"
            "  Emulates a GPU with weaker CUDA cores on this one: the integer GEMM with k extra dependent FP32\n"
            "  operations per group in its epilogue (acc = fma(acc, 1, -0): Y unchanged; benchmark only, never used\n"
            "  for results), timed against cuBLAS FP16 in the same run (CUDA events, warm-up, median of --runs,\n"
            "  inputs rotated past the L2). A mode whose epilogue costs e operations per group then sees\n"
            "  rho' = rho * (1 + k / e) (apex4 report draws the measured speedup against rho' next to its model).\n"
            "  k must be one of 0, 1, 2, 4, 8, 16 (the instantiated kernels); M > 16 (tile kernels); GROUP or\n"
            "  MIXED modes (no Atom). The default sweep (4 modes x 6 k + FP16) takes well under 2 minutes on an H200.\n"
            "  Commit the H200 file as reports/bench/rho-emulation-h200.json.\n");
}

int cmd_bench_rho(int argc, char **argv) {
    char modes_buf[256] = "w4a4-g128,w4a4-g64,w4a4-pc,w4a4-mixed-g128", k_buf[64] = "0,1,2,4,8,16", shape_buf[64] = "2048,4096,4096";
    const char *out = NULL;
    int runs = 25, warmup = 5;
    char err[AX_ERR_LEN];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *buf = NULL;
        size_t cap = 0;
        long x;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { rho_usage(stdout); return 0; }
        else if (v && !strcmp(a, "--modes")) { buf = modes_buf; cap = sizeof modes_buf; i++; }
        else if (v && !strcmp(a, "--k")) { buf = k_buf; cap = sizeof k_buf; i++; }
        else if (v && !strcmp(a, "--shape")) { buf = shape_buf; cap = sizeof shape_buf; i++; }
        else if (v && (!strcmp(a, "--runs") || !strcmp(a, "--warmup"))) {
            if (ax_parse_long(v, !strcmp(a, "--runs") ? 20 : 1, !strcmp(a, "--runs") ? 10000 : 1000, a, &x, err)) {
                fprintf(stderr, "apex4 bench rho: %s\n", err);
                return 2;
            }
            if (!strcmp(a, "--runs")) runs = (int)x; else warmup = (int)x;
            i++;
        } else if (v && !strcmp(a, "--out")) { out = v; i++; }
        else { fprintf(stderr, "apex4 bench rho: unknown or incomplete option '%s'\n", a); rho_usage(stderr); return 2; }
        if (buf && (size_t)snprintf(buf, cap, "%s", v) >= cap) {
            fprintf(stderr, "apex4 bench rho: %s: list too long (at most %zu characters)\n", a, cap - 1);
            return 2;
        }
    }
    char *mn[8], *kn[AK_EMUL_NXOPS + 1], *sn[4];
    int nm = split_list(modes_buf, mn, 8), nk = split_list(k_buf, kn, AK_EMUL_NXOPS), ns = split_list(shape_buf, sn, 3);
    if (nm < 1 || nk < 1 || ns != 3) {
        fprintf(stderr, "apex4 bench rho: %s\n", nm < 1 ? "--modes: expected 1 to 8 modes" : nk < 1 ? "--k: expected 1 to 6 values"
                                                                                                   : "--shape: expected M,N,K");
        return 2;
    }
    long shp[3];
    for (int i = 0; i < 3; i++)
        if (ax_parse_long(sn[i], i == 0 ? 17 : 32, 1000000, i == 0 ? "--shape M (> 16)" : i == 1 ? "--shape N" : "--shape K", &shp[i], err)) {
            fprintf(stderr, "apex4 bench rho: %s\n", err);
            return 2;
        }
    int ks[AK_EMUL_NXOPS];
    for (int i = 0; i < nk; i++) {
        long x;
        int ok = 0;
        if (ax_parse_long(kn[i], 0, 16, "--k", &x, err)) { fprintf(stderr, "apex4 bench rho: %s\n", err); return 2; }
        for (int j = 0; j < AK_EMUL_NXOPS; j++) ok |= ak_emul_xops[j] == x;
        if (!ok) { fprintf(stderr, "apex4 bench rho: --k: %ld is not built (0, 1, 2, 4, 8, 16)\n", x); return 2; }
        ks[i] = (int)x;
    }
    aq_mode modes[8];
    for (int i = 0; i < nm; i++) {
        if (aq_mode_parse(mn[i], &modes[i], err)) { fprintf(stderr, "apex4 bench rho: --modes: %s\n", err); return 2; }
        if (!aq_mode_is_integer(&modes[i]) || modes[i].permuted || modes[i].outliers > 0) {
            fprintf(stderr, "apex4 bench rho: --modes: '%s' is not a GROUP or MIXED integer mode (no emulation kernels)\n", mn[i]);
            return 2;
        }
    }
    if (out && ax_check_out_path(out, "--out", err)) { fprintf(stderr, "apex4 bench rho: %s\n", err); return 2; }
    const int M = (int)shp[0], N = (int)shp[1], K = (int)shp[2];
    ak_devinfo di;
    ak_bench *b = NULL;
    ak_emul *e = NULL;
    if (ak_device_info(&di, err) || ak_bench_new(&b, err) || ak_emul_new(&e, err)) {
        fprintf(stderr, "apex4 bench rho: %s\n", err);
        ak_bench_free(b);
        return 2;
    }
    double t16, mn16, mx16;
    if (ak_bench_gemm(b, AK_IMPL_CUBLAS_FP16, NULL, AK_PATH_INT8, M, N, K, warmup, runs, &t16, &mn16, &mx16, err)) {
        fprintf(stderr, "apex4 bench rho: cuBLAS FP16: %s\n", err);
        ak_emul_free(e);
        ak_bench_free(b);
        return 1;
    }
    printf("# %s: rho emulation at M=%d N=%d K=%d, cuBLAS FP16 %.4f ms\n", di.name, M, N, K, t16);
    printf("%-18s %3s %9s %8s\n", "mode", "k", "ms", "xFP16");
    cJSON *doc = ax_envelope_new("bench rho");
    cJSON *meth = add_device_method(doc, &di, 0, runs, warmup);
    cJSON_AddStringToObject(meth, "emulation", "k extra dependent fp32 FMAs (acc = fma(acc, 1, -0)) per group and output in the GEMM epilogue, INT8 path; benchmark only");
    cJSON *sh = cJSON_AddObjectToObject(doc, "shape");
    cJSON_AddNumberToObject(sh, "M", M);
    cJSON_AddNumberToObject(sh, "N", N);
    cJSON_AddNumberToObject(sh, "K", K);
    cJSON_AddNumberToObject(doc, "fp16_ms_median", t16);
    cJSON *rows = cJSON_AddArrayToObject(doc, "rho");
    int fails = 0;
    for (int m = 0; m < nm; m++)
        for (int k = 0; k < nk; k++) {
            double med, lo, hi;
            if (ak_emul_gemm(e, &modes[m], M, N, K, ks[k], warmup, runs, &med, &lo, &hi, err)) {
                printf("# %s k=%d: %s\n", modes[m].name, ks[k], err);
                fails++;
                continue;
            }
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "mode", modes[m].name);
            cJSON_AddNumberToObject(o, "k", ks[k]);
            cJSON_AddNumberToObject(o, "ms_median", med);
            cJSON_AddNumberToObject(o, "ms_min", lo);
            cJSON_AddNumberToObject(o, "ms_max", hi);
            cJSON_AddNumberToObject(o, "fp16_ms_median", t16);
            cJSON_AddNumberToObject(o, "speedup_vs_fp16", t16 / med);
            cJSON_AddItemToArray(rows, o);
            printf("%-18s %3d %9.4f %8.3f\n", modes[m].name, ks[k], med, t16 / med);
            fflush(stdout);
        }
    ak_emul_free(e);
    ak_bench_free(b);
    int rc = fails ? 1 : 0;
    if (out && !fails && ax_write_json(out, doc, err)) { fprintf(stderr, "apex4 bench rho: %s\n", err); rc = 1; }
    else if (out && !fails) printf("# wrote %s\n", out);
    else if (out) fprintf(stderr, "apex4 bench rho: %d measurement(s) failed; %s not written\n", fails, out);
    cJSON_Delete(doc);
    return rc;
}
